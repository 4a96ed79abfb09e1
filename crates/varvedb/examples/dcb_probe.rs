//! The cost of a conditional append (DCB) against a plain one, and of a query read against a
//! stream read, in the same run.
//!
//! `cargo run --release -p varvedb --example dcb_probe -- [EVENTS] [THREADS] [RUNS]`
//!
//! Every event carries one tag, `account:<n>` of 1,000 accounts, on both sides, so that the
//! index write is in both and the difference is the check. A conditional append's query is
//! `types(["Deposited"]).tags([its account])`, after the position of its thread's previous
//! append. The appends run with `Durability::NoSync` (the check, not the flush, is measured)
//! and then with the default `Sync`. Prints one line per measurement and run, and the medians.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use varvedb::{
    Append, AppendOptions, Durability, ExpectedVersion, Query, Reader, Storage, StorageConfig,
    Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Deposited {
    account: u64,
    cents: u64,
    note: [u8; 64],
}

const ACCOUNTS: u64 = 1_000;

fn open(durability: Durability) -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        durability,
        ..Default::default()
    })
    .expect("the store opens");
    (dir, storage)
}

/// Events per second appending `events` from `threads` threads, conditional or not.
fn appends(durability: Durability, events: u64, threads: u64, conditional: bool) -> f64 {
    let (_dir, storage) = open(durability);
    let per_thread = events / threads;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let writer = Writer::<Deposited>::new(storage.clone());
            scope.spawn(move || {
                let mut position = None;
                for i in 0..per_thread {
                    // Each thread has its own accounts, so every condition passes.
                    let share = (ACCOUNTS / threads).max(1);
                    let account = t * share + i % share;
                    let tag = format!("account:{account}");
                    let event = [Deposited {
                        account,
                        cents: i,
                        note: [7; 64],
                    }];
                    let options = [AppendOptions::new().tag(&tag)];
                    let entry =
                        Append::stream(u128::from(account) + 1, ExpectedVersion::Auto, &event[..])
                            .options(&options[..]);
                    let done = if conditional {
                        let query = Query::new().types(["Deposited"]).tags([&tag]);
                        // Nothing of this thread's accounts came after its own last append.
                        writer
                            .commit(entry.when(&query, position))
                            .expect("conditional append")
                    } else {
                        writer.commit(entry).expect("append")
                    };
                    position = done.last().map(|a| a.seq);
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let written = storage
        .last_seq(&storage.read_txn().expect("txn"))
        .expect("last seq");
    written as f64 / elapsed
}

/// Events per second reading one account's events by query and by stream, in a store of
/// `events` events.
fn reads(events: u64) -> (f64, f64) {
    let (_dir, storage) = open(Durability::NoSync);
    let writer = Writer::<Deposited>::new(storage.clone());
    let batch: Vec<Deposited> = (0..1000)
        .map(|i| Deposited {
            account: i,
            cents: i,
            note: [7; 64],
        })
        .collect();
    for chunk in 0..events / 1000 {
        let entries: Vec<_> = batch
            .iter()
            .map(|e| {
                let options = [AppendOptions::new().tag(format!("account:{}", e.account))];
                (e.account, options)
            })
            .collect();
        let append =
            entries
                .iter()
                .zip(&batch)
                .fold(Append::new(), |a, ((account, options), event)| {
                    a.and(
                        u128::from(*account) + 1,
                        ExpectedVersion::Auto,
                        std::slice::from_ref(event),
                    )
                    .options(&options[..])
                });
        writer.commit(append).expect("append");
        let _ = chunk;
    }
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().expect("txn");
    let accounts = 200u64;
    let started = Instant::now();
    let mut n = 0u64;
    for account in 0..accounts {
        let query = Query::new()
            .types(["Deposited"])
            .tags([format!("account:{account}")]);
        for e in reader.read_query(&txn, &query, 0) {
            n += e.expect("event").cents & 1;
            n += 1;
        }
    }
    let query_rate = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut m = 0u64;
    for account in 0..accounts {
        for e in reader.read_stream(&txn, u128::from(account) + 1, 1) {
            m += e.expect("event").cents & 1;
            m += 1;
        }
    }
    let stream_rate = m as f64 / started.elapsed().as_secs_f64();
    assert_eq!(n, m);
    (query_rate, stream_rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let events = args.next().unwrap_or(100_000);
    let threads = args.next().unwrap_or(16);
    let runs = args.next().unwrap_or(3);
    for (durability, label, scale) in [
        (Durability::NoSync, "NoSync", 1),
        (Durability::Sync, "Sync", 10),
    ] {
        for t in [1, threads] {
            let n = events / scale;
            let mut plain = Vec::new();
            let mut conditional = Vec::new();
            for run in 0..runs {
                let p = appends(durability, n, t, false);
                let c = appends(durability, n, t, true);
                println!(
                    "{label} {t} thread(s) run {run}: plain {p:.0} ev/s, append_if {c:.0} ev/s, ratio {:.2}",
                    c / p
                );
                plain.push(p);
                conditional.push(c);
            }
            let ratios: Vec<f64> = plain.iter().zip(&conditional).map(|(p, c)| c / p).collect();
            println!(
                "MEDIAN {label} {t} thread(s), {n} events: plain {:.0} ev/s, append_if {:.0} ev/s, append_if/plain {:.2}",
                median(plain),
                median(conditional),
                median(ratios)
            );
        }
    }
    let mut q = Vec::new();
    let mut s = Vec::new();
    for _ in 0..runs {
        let (query, stream) = reads(events);
        println!("read run: query {query:.0} ev/s, stream {stream:.0} ev/s");
        q.push(query);
        s.push(stream);
    }
    println!(
        "MEDIAN reads of 200 accounts in {events} events: read_query {:.0} ev/s, read_stream {:.0} ev/s",
        median(q),
        median(s)
    );
}
