//! Two processes contending on one store: one event id retried from both at once, two
//! processors under one consumer name, and a consumer reset or deleted while its processor runs
//! in another process. (`Exact` conflicts across processes are checked for linearizability by
//! `varvedb-crash history`, which its test runs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use varvedb::{
    Append, AppendOptions, Error, EventHandler, EventId, EventRef, ExpectedVersion, HandlerError,
    Processor, ProcessorOptions, Reader, Storage, StorageConfig, Writer,
};

const DIR_ENV: &str = "VARVEDB_CONTENTION_DIR";
const ROLE_ENV: &str = "VARVEDB_CONTENTION_ROLE";
/// Ids the two id-retrying processes both append.
const IDS: u64 = 200;
const CONSUMER: &str = "reporting";

fn child(test: &str, dir: &std::path::Path, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            test,
            "--test-threads=1",
            "--nocapture",
        ])
        .env(DIR_ENV, dir)
        .env(ROLE_ENV, role)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What a child reported, after it ended: its lines that hold `@` (libtest may print the test's
/// name on the same line), from the `@` on, without it, those that start with `tag`.
fn lines(child: Child, tag: &str) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a child failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.find('@').map(|at| l[at + 1..].to_owned()))
        .filter(|l| l.starts_with(tag))
        .collect()
}

/// The child: waits for the `go` file, then appends ids 1..=IDS to stream 7, each once, and
/// prints the answer of each.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_appends_ids() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let storage = Storage::open(StorageConfig {
        path: dir.join("store"),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage);
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
    for id in 1..=IDS {
        let answer = writer
            .commit(
                Append::event(7, ExpectedVersion::Auto, &deposit(id))
                    .options(AppendOptions::new().event_id(EventId::from_u128(id.into()))),
            )
            .unwrap()[0];
        println!("@A {id} {} {}", answer.seq, answer.version);
    }
}

/// Two processes append the same 200 event ids to one stream at the same moment: each id is
/// in the store once, and both processes were answered with its one place.
#[test]
fn one_event_id_retried_from_two_processes_is_appended_once_and_answered_alike() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        ..Default::default()
    })
    .unwrap();
    let a = child("child_appends_ids", dir.path(), "a");
    let b = child("child_appends_ids", dir.path(), "b");
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let (a, b) = (lines(a, "A "), lines(b, "A "));
    assert_eq!((a.len(), b.len()), (IDS as usize, IDS as usize));
    assert_eq!(a, b, "the two processes were answered differently");
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.last_seq(&txn).unwrap(), IDS);
    assert_eq!(storage.stream_version(&txn, 7).unwrap(), IDS as u32);
    let reader = Reader::<Deposited>::new(storage.clone());
    let amounts: Vec<u64> = reader
        .read_stream(&txn, 7, 1)
        .map(|e| e.unwrap().amount.to_native())
        .collect();
    assert_eq!(amounts, (1..=IDS).collect::<Vec<_>>());
}

struct Slow;

impl EventHandler<Deposited> for Slow {
    fn handle(&mut self, _: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        std::thread::sleep(Duration::from_micros(500));
        Ok(())
    }
}

fn options() -> ProcessorOptions {
    ProcessorOptions {
        checkpoint_every_events: 20,
        checkpoint_every_ms: 10,
        poll_interval_ms: 5,
        ..Default::default()
    }
}

/// The child: runs a slow processor named `CONSUMER` on the store until it fails, and prints
/// how it ended.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_processes() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let storage = Storage::open(StorageConfig {
        path: std::path::Path::new(&dir).join("store"),
        ..Default::default()
    })
    .unwrap();
    let rt = runtime();
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Slow,
        CONSUMER,
        storage.subscribe(),
    )
    .with_options(options());
    // Never stopped from outside: it ends when its cursor is moved under it.
    let ended =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), processor.run()).await });
    match ended {
        Ok(Err(Error::ConsumerMoved {
            expected, found, ..
        })) => println!("@M {expected:?} {found:?}"),
        other => println!("@E {:?}", other.map(|r| r.map(drop))),
    }
}

/// A store of 4,000 events and a child processing them slowly under `CONSUMER`, with its
/// cursor past 100.
fn running_processor(dir: &tempfile::TempDir) -> (Storage, Child) {
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let batch: Vec<Deposited> = (0..4_000).map(deposit).collect();
    writer
        .append_batch(1, ExpectedVersion::Auto, &batch)
        .unwrap();
    let child = child("child_processes", dir.path(), "processor");
    let deadline = Instant::now() + Duration::from_secs(60);
    while storage.consumer_position(CONSUMER).unwrap().unwrap_or(0) < 100 {
        assert!(
            Instant::now() < deadline,
            "the child's processor did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (storage, child)
}

/// The first line of the child's stdout that starts with `tag`, and the child ended.
fn ended_with(child: Child, tag: &str) -> String {
    let mut lines = lines(child, "");
    lines.retain(|l| l.starts_with(tag) || l.starts_with("E "));
    lines.pop().unwrap_or_default()
}

#[test]
fn a_consumer_reset_while_its_processor_runs_in_another_process_stops_it_and_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, child) = running_processor(&dir);
    storage.reset_consumer(CONSUMER, 0).unwrap();
    let ended = ended_with(child, "M ");
    assert!(
        ended.starts_with("M Some(") && ended.ends_with(" Some(0)"),
        "{ended}"
    );
    // Its stop wrote nothing over the reset.
    assert_eq!(storage.consumer_position(CONSUMER).unwrap(), Some(0));
    // Started again, it handles from the start.
    struct Count(u64);
    impl EventHandler<Deposited> for Count {
        fn handle(&mut self, _: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
            self.0 += 1;
            Ok(())
        }
    }
    let rt = runtime();
    let count = rt
        .block_on(
            Processor::new(
                Reader::<Deposited>::new(storage.clone()),
                Count(0),
                CONSUMER,
                storage.subscribe(),
            )
            .run_until(async {}),
        )
        .unwrap();
    assert_eq!(count.0, 4_000);
    assert_eq!(storage.consumer_position(CONSUMER).unwrap(), Some(4_000));
}

#[test]
fn a_consumer_deleted_while_its_processor_runs_in_another_process_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, child) = running_processor(&dir);
    assert!(storage.delete_consumer(CONSUMER).unwrap());
    let ended = ended_with(child, "M ");
    assert!(
        ended.starts_with("M Some(") && ended.ends_with(" None"),
        "{ended}"
    );
    assert_eq!(storage.consumer_position(CONSUMER).unwrap(), None);
    assert!(storage.consumers().unwrap().is_empty());
}

/// Two processors under one name, in two processes: whichever checkpoints after the other
/// wrote is stopped with `ConsumerMoved`; they never both run on.
#[test]
fn two_processors_under_one_name_in_two_processes_do_not_both_run() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, child) = running_processor(&dir);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<String>();
    std::thread::spawn(move || {
        let _ = done_tx.send(ended_with(child, "M "));
    });
    let rt = runtime();
    enum First {
        Here(varvedb::Result<Slow>),
        Child(String),
    }
    let first = rt.block_on(async {
        let run = Processor::new(
            Reader::<Deposited>::new(storage.clone()),
            Slow,
            CONSUMER,
            storage.subscribe(),
        )
        .with_options(options())
        .run();
        tokio::pin!(run);
        tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                r = &mut run => First::Here(r),
                line = &mut done_rx => First::Child(line.unwrap()),
            }
        })
        .await
        .expect("both processors ran for a minute under one name")
    });
    match first {
        First::Here(Err(Error::ConsumerMoved { .. })) => {
            // This one was stopped; the child runs on: stop it by moving the cursor under it.
            storage.reset_consumer(CONSUMER, 4_000).unwrap();
            let line = rt.block_on(done_rx).unwrap();
            assert!(line.starts_with("M "), "{line}");
        }
        First::Here(other) => panic!("the second processor ended with {:?}", other.map(drop)),
        First::Child(line) => assert!(line.starts_with("M "), "the child ended with {line}"),
    }
}
