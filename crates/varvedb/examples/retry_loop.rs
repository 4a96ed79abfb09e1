//! An optimistic-concurrency retry loop: read the stream, decide, append with `Exact(version)`,
//! and start over on a conflict. Four threads withdraw from one account without overdrawing it.

use std::error::Error as StdError;

use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

#[derive(Archive, Serialize, Deserialize, Debug, varvedb::Event)]
enum Account {
    Deposited(u64),
    Withdrawn(u64),
}

const ACCOUNT: u128 = 1;

/// Withdraws `amount` if the balance allows; returns whether it did.
fn withdraw(storage: &Storage, amount: u64) -> varvedb::Result<bool> {
    let reader = Reader::<Account>::new(storage.clone());
    let writer = Writer::<Account>::new(storage.clone());
    loop {
        let (balance, version) = {
            let txn = storage.read_txn()?;
            let mut balance = 0i128;
            for e in reader.read_stream(&txn, ACCOUNT, 1) {
                match &*e? {
                    ArchivedAccount::Deposited(n) => balance += i128::from(n.to_native()),
                    ArchivedAccount::Withdrawn(n) => balance -= i128::from(n.to_native()),
                }
            }
            (balance, reader.stream_version(&txn, ACCOUNT)?)
        };
        if balance < i128::from(amount) {
            return Ok(false);
        }
        match writer.append(
            ACCOUNT,
            ExpectedVersion::Exact(version),
            &Account::Withdrawn(amount),
        ) {
            Ok(_) => return Ok(true),
            Err(Error::ConcurrencyConflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn main() -> Result<(), Box<dyn StdError>> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })?;
    Writer::<Account>::new(storage.clone()).append(
        ACCOUNT,
        ExpectedVersion::NoStream,
        &Account::Deposited(100),
    )?;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let storage = storage.clone();
            std::thread::spawn(move || {
                (0..10)
                    .filter(|_| withdraw(&storage, 7).unwrap_or(false))
                    .count()
            })
        })
        .collect();
    let mut done = 0;
    for t in threads {
        done += t.join().map_err(|_| "a withdrawing thread panicked")?;
    }
    println!("{done} withdrawals of 7 from 100: {} left", 100 - 7 * done);
    assert_eq!(done, 14, "exactly 14 withdrawals fit, never more");
    Ok(())
}
