//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{Storage, StorageConfig};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
#[rkyv(derive(Debug))]
pub struct Deposited {
    pub account: u64,
    pub amount: u64,
    pub note: String,
}

pub fn deposit(amount: u64) -> Deposited {
    Deposited {
        account: 1,
        amount,
        note: format!("deposit {amount}"),
    }
}

/// `len` bytes that differ for every seed and position (so that no two payloads of different
/// seeds deduplicate, and a window of them is found once in a file).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(config(dir)).unwrap()
}

pub fn config(dir: &tempfile::TempDir) -> StorageConfig {
    StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    }
}

/// In a child process that a test started from its own binary: the writer of the store whose
/// directory is in `env_var`. `None` when the variable is unset, i.e. in a normal test run, where
/// the child "test" must do nothing.
pub fn writer_for_child(env_var: &str) -> Option<varvedb::Writer<Deposited>> {
    let dir = std::env::var(env_var).ok()?;
    let storage = Storage::open(StorageConfig {
        path: dir.into(),
        ..Default::default()
    })
    .unwrap();
    Some(varvedb::Writer::new(storage))
}

/// Puts `key → value` into the database `db` of a closed store, with raw heed: how the tests
/// damage a store the way a disk or a bug would.
pub fn raw_put(dir: &tempfile::TempDir, db: &str, key: &[u8], value: &[u8]) {
    raw_put_path(dir.path(), db, key, value);
}

/// [`raw_put`] by path.
#[allow(unsafe_code)]
pub fn raw_put_path(dir: &std::path::Path, db: &str, key: &[u8], value: &[u8]) {
    use heed::types::Bytes;
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(16);
    // SAFETY: the store is closed in this process and no other process opens it meanwhile.
    let env = unsafe { options.open(dir) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    let database = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database::<Bytes, Bytes>(wtxn, Some(db))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit();
    let mut wtxn = env.write_txn().unwrap();
    database.put(&mut wtxn, key, value).unwrap();
    wtxn.commit().unwrap();
}

/// The value of `key` in the database `db` of a closed store, with raw heed.
#[allow(unsafe_code)]
pub fn raw_get(dir: &std::path::Path, db: &str, key: &[u8]) -> Option<Vec<u8>> {
    use heed::types::Bytes;
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(16);
    // SAFETY: the store is closed in this process and no other process opens it meanwhile.
    let env = unsafe { options.open(dir) }.unwrap();
    let rtxn = env.read_txn().unwrap();
    let database = env
        .open_databases_and_commit(rtxn, |opener, rtxn| {
            opener
                .open_database::<Bytes, Bytes>(rtxn, Some(db))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()?;
    let rtxn = env.read_txn().unwrap();
    database.get(&rtxn, key).unwrap().map(<[u8]>::to_vec)
}

/// A two-worker tokio runtime for the tests that run processors.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `processor` until its consumer `name` has checkpointed `until` (polling, at most
/// 10 s), then stops it gracefully and hands its handler back.
pub fn run_to<E, H>(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    processor: varvedb::Processor<E, H>,
    name: &str,
    until: u64,
) -> H
where
    E: varvedb::ValidateEvent + varvedb::Event + Send + 'static,
    H: varvedb::EventHandler<E>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(processor.run_until(async move {
        let _ = stopped.await;
    }));
    let name = name.to_string();
    let storage = storage.clone();
    rt.block_on(async {
        // Wait until the processor's checkpoint... or the head: stop, and the stop checkpoints.
        for _ in 0..2000 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if storage.consumer_position(&name).unwrap() == Some(until) {
                break;
            }
        }
    });
    stop.send(()).unwrap();
    rt.block_on(task).unwrap().unwrap()
}
