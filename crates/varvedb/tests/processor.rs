//! Processors: durable, named cursors; at-least-once delivery in sequence order, with no event
//! skipped or delivered twice while running; catch-up after a restart; handler-error policies.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use varvedb::{
    EventHandler, EventRef, ExpectedVersion, HandlerError, OnError, Processor, ProcessorOptions,
    Reader, Storage, Writer,
};

/// Sums amounts and records the seqs it saw.
#[derive(Default)]
struct Balance {
    total: u64,
    seqs: Vec<u64>,
}

impl EventHandler<Deposited> for Balance {
    fn handle(&mut self, event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        self.total += event.amount.to_native();
        self.seqs.push(event.seq());
        Ok(())
    }
}

#[test]
fn the_issue_example_runs_and_checkpoints_at_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let writer = Writer::<Deposited>::new(storage.clone());
    let rx = storage.subscribe();
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "consumer_group_1",
        rx,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(processor.run_until(async move {
        let _ = stop_rx.await;
    }));
    for i in 1..=50u64 {
        writer
            .append(u128::from(i % 3), ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    // The bus wakes the processor: it catches up and checkpoints at the head while it runs
    // (the stop's drain would hide a processor that never woke).
    assert!(
        wait_for(&rt, || storage
            .consumer_position("consumer_group_1")
            .unwrap()
            == Some(50)),
        "the running processor did not reach the head"
    );
    stop_tx.send(()).unwrap();
    let handler: Balance = rt.block_on(task).unwrap().unwrap();
    assert_eq!(handler.total, (1..=50).sum::<u64>());
    assert_eq!(handler.seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(
        storage.consumer_position("consumer_group_1").unwrap(),
        Some(storage.last_seq(&storage.read_txn().unwrap()).unwrap())
    );
}

#[test]
fn a_restarted_processor_catches_up_on_a_backlog_without_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let rt = runtime();
    for i in 1..=30u64 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "late",
        storage.subscribe(),
    );
    let first = run_to(&rt, &storage, p, "late", 30);
    assert_eq!(first.seqs.len(), 30);
    // A backlog appended while it is down, then no appends at all: it must still catch up.
    for i in 31..=60u64 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    drop((writer, storage));
    let storage = open(&dir);
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "late",
        storage.subscribe(),
    );
    let second = run_to(&rt, &storage, p, "late", 60);
    assert_eq!(second.seqs, (31..=60).collect::<Vec<_>>());
}

#[test]
fn three_processors_see_four_writers_events_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let names = ["a", "b", "c"];
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for name in names {
        let p = Processor::new(
            Reader::<Deposited>::new(storage.clone()),
            Balance::default(),
            name,
            storage.subscribe(),
        )
        .with_options(ProcessorOptions {
            batch_events_max: 500,
            ..Default::default()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(rt.spawn(p.run_until(async move {
            let _ = stopped.await;
        })));
    }
    // 4 writers × 25,000 events (batches of 5 and of 20 alternately): 100,000 events.
    let writers: Vec<_> = (0..4u128)
        .map(|w| {
            let writer = Writer::<Deposited>::new(storage.clone());
            std::thread::spawn(move || {
                let mut written = 0u64;
                let mut i = 0u64;
                while written < 25_000 {
                    let n = if i.is_multiple_of(2) { 5 } else { 20 };
                    let batch: Vec<_> = (0..n).map(|k| deposit(written + k)).collect();
                    writer
                        .append_batch(w, ExpectedVersion::Auto, &batch)
                        .unwrap();
                    written += n;
                    i += 1;
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let head = storage.last_seq(&storage.read_txn().unwrap()).unwrap();
    rt.block_on(async {
        for _ in 0..12_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let all = storage.consumers().unwrap();
            if all.len() == 3 && all.iter().all(|c| c.position == head) {
                break;
            }
        }
    });
    for stop in stops {
        stop.send(()).unwrap();
    }
    for task in tasks {
        let handler = rt.block_on(task).unwrap().unwrap();
        assert_eq!(
            handler.seqs,
            (1..=head).collect::<Vec<_>>(),
            "every event once, in order"
        );
    }
}

/// Fails on chosen seqs a given number of times.
struct Flaky {
    fail: Arc<Mutex<std::collections::HashMap<u64, u32>>>,
    seen: Vec<u64>,
}

impl EventHandler<Deposited> for Flaky {
    fn handle(&mut self, event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        let mut fail = self.fail.lock().unwrap();
        if let Some(n) = fail.get_mut(&event.seq())
            && *n > 0
        {
            *n -= 1;
            return Err(format!("flaky at {}", event.seq()).into());
        }
        self.seen.push(event.seq());
        Ok(())
    }
}

fn flaky(failures: &[(u64, u32)]) -> Flaky {
    Flaky {
        fail: Arc::new(Mutex::new(failures.iter().copied().collect())),
        seen: Vec::new(),
    }
}

fn filled(n: u64) -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    for i in 1..=n {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    (dir, storage)
}

#[test]
fn stop_checkpoints_before_the_failed_event_and_the_next_run_retries_it() {
    let (_dir, storage) = filled(10);
    let rt = runtime();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        flaky(&[(6, 1)]),
        "stopper",
        storage.subscribe(),
    );
    let err = rt.block_on(p.run()).err().unwrap();
    assert!(
        matches!(&err, varvedb::Error::HandlerFailed { seq: 6, consumer, .. } if consumer == "stopper"),
        "{err:?}"
    );
    assert_eq!(storage.consumer_position("stopper").unwrap(), Some(5));
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        flaky(&[]),
        "stopper",
        storage.subscribe(),
    );
    let h = run_to(&rt, &storage, p, "stopper", 10);
    assert_eq!(h.seen, (6..=10).collect::<Vec<_>>());
}

#[test]
fn retries_never_let_the_checkpoint_pass_the_retrying_event() {
    let (_dir, storage) = filled(10);
    let rt = runtime();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        flaky(&[(4, 3)]),
        "retrier",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: OnError::Retry {
            attempts: 5,
            backoff_ms: 40,
        },
        checkpoint_every_events: 1,
        ..Default::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.run_until(async move {
        let _ = stopped.await;
    }));
    // While event 4 is being retried (40 + 80 + 160 ms of backoff), the cursor stays at 3.
    let mut seen_during_retry = Vec::new();
    rt.block_on(async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen_during_retry.push(storage.consumer_position("retrier").unwrap());
        }
    });
    assert!(
        seen_during_retry.iter().all(|p| p.is_none_or(|p| p <= 3)),
        "{seen_during_retry:?}"
    );
    // The retry was seen with the events before it checkpointed (one checkpoint per event):
    // a run where nothing checkpointed would show only `None` and prove nothing.
    assert!(
        seen_during_retry.contains(&Some(3)),
        "the cursor was never seen at 3 during the retry: {seen_during_retry:?}"
    );
    assert!(
        wait_for(&rt, || storage.consumer_position("retrier").unwrap()
            == Some(10)),
        "the processor did not reach the head after the retries"
    );
    stop.send(()).unwrap();
    let h = rt.block_on(task).unwrap().unwrap();
    assert_eq!(
        h.seen,
        (1..=10).collect::<Vec<_>>(),
        "4 taken on its 4th call"
    );
}

#[test]
fn parked_events_are_listed_and_replayed_without_moving_the_cursor() {
    let (_dir, storage) = filled(10);
    let rt = runtime();
    let fail = Arc::new(Mutex::new(
        [(3u64, u32::MAX), (7, u32::MAX)].into_iter().collect(),
    ));
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Flaky {
            fail: Arc::clone(&fail),
            seen: Vec::new(),
        },
        "parker",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: OnError::RetryThenPark {
            attempts: 2,
            backoff_ms: 1,
        },
        ..Default::default()
    });
    let h = run_to(&rt, &storage, p, "parker", 10);
    assert_eq!(h.seen, [1, 2, 4, 5, 6, 8, 9, 10]);
    let parked = storage.parked_events("parker").unwrap();
    assert_eq!(parked.iter().map(|p| p.seq).collect::<Vec<_>>(), [3, 7]);
    assert!(parked[0].reason.contains("flaky at 3"));
    assert_eq!(storage.consumers().unwrap()[0].parked, 2);

    // The handler recovers; replaying the parked events leaves the cursor at 10.
    fail.lock().unwrap().clear();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Flaky {
            fail,
            seen: Vec::new(),
        },
        "parker",
        storage.subscribe(),
    );
    let (p, taken) = rt.block_on(p.replay_parked()).unwrap();
    assert_eq!(taken, 2);
    assert_eq!(p.handler().seen, [3, 7]);
    assert!(storage.parked_events("parker").unwrap().is_empty());
    assert_eq!(storage.consumer_position("parker").unwrap(), Some(10));
}

#[test]
fn consumers_are_independent_survive_a_reopen_and_can_be_reset_or_deleted() {
    let (dir, storage) = filled(20);
    let rt = runtime();
    for (name, until) in [("one", 20u64), ("two", 20)] {
        let p = Processor::new(
            Reader::<Deposited>::new(storage.clone()),
            Balance::default(),
            name,
            storage.subscribe(),
        );
        run_to(&rt, &storage, p, name, until);
    }
    storage.reset_consumer("two", 15).unwrap();
    drop(storage);
    let storage = open(&dir);
    let consumers = storage.consumers().unwrap();
    let names: Vec<(&str, u64, u64)> = consumers
        .iter()
        .map(|c| (c.name.as_str(), c.position, c.lag_events))
        .collect();
    assert_eq!(names, [("one", 20, 0), ("two", 15, 5)]);
    // Caught up: no wait. Five behind: the oldest has waited since this test appended it.
    assert_eq!(consumers[0].lag_seconds, 0.0);
    assert!(
        consumers[1].lag_seconds > 0.0 && consumers[1].lag_seconds < 60.0,
        "{}",
        consumers[1].lag_seconds
    );
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "two",
        storage.subscribe(),
    );
    let h = run_to(&rt, &storage, p, "two", 20);
    assert_eq!(h.seqs, (16..=20).collect::<Vec<_>>());
    assert!(storage.delete_consumer("one").unwrap());
    assert_eq!(storage.consumer_position("one").unwrap(), None);
    assert!(!storage.delete_consumer("one").unwrap());
}

#[test]
fn other_event_types_in_the_log_are_passed_over() {
    #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
    struct Other {
        x: u64,
    }
    let (_dir, storage) = filled(3);
    Writer::<Other>::new(storage.clone())
        .append(9, ExpectedVersion::Auto, &Other { x: 1 })
        .unwrap();
    Writer::<Deposited>::new(storage.clone())
        .append(1, ExpectedVersion::Auto, &deposit(4))
        .unwrap();
    let rt = runtime();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "typed",
        storage.subscribe(),
    );
    let h = run_to(&rt, &storage, p, "typed", 5);
    assert_eq!(h.seqs, [1, 2, 3, 5]);
}

const CHILD_ENV: &str = "VARVEDB_PROCESSOR_CHILD_DIR";

/// Prints each seq it handles, slowly, so that the parent can kill it in the middle.
struct Printer;

impl EventHandler<Deposited> for Printer {
    fn handle(&mut self, event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "handled {}", event.seq())?;
        out.flush()?;
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    }
}

/// The child: runs a processor over the store until it is killed.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_processor() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let storage = Storage::open(varvedb::StorageConfig {
        path: dir.into(),
        ..Default::default()
    })
    .unwrap();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Printer,
        "killed",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        checkpoint_every_events: 10,
        ..Default::default()
    });
    runtime().block_on(p.run()).unwrap();
}

#[test]
fn a_killed_processor_resumes_within_one_checkpoint_interval_and_skips_nothing() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let (dir, storage) = filled(300);
    drop(storage);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_processor",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = 0u64;
    while last < 137 {
        let line = lines.next().unwrap().unwrap();
        // The first line follows libtest's "test child_processor ... ".
        if let Some(seq) = line.split("handled ").nth(1) {
            let seq: u64 = seq.parse().unwrap();
            assert_eq!(seq, last + 1, "in order, nothing skipped");
            last = seq;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let storage = open(&dir);
    let checkpoint = storage.consumer_position("killed").unwrap().unwrap_or(0);
    assert!(
        checkpoint <= last,
        "the cursor never passes what was handled"
    );
    assert!(
        last - checkpoint <= 2 * 10,
        "replay bounded by the checkpoint interval: handled {last}, checkpoint {checkpoint}"
    );
    let rt = runtime();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "killed",
        storage.subscribe(),
    );
    let h = run_to(&rt, &storage, p, "killed", 300);
    assert_eq!(h.seqs, (checkpoint + 1..=300).collect::<Vec<_>>());
}

/// An async handler that awaits between events, as one that calls out would.
struct Remote {
    seqs: Vec<u64>,
    fail_once: Option<u64>,
}

impl varvedb::AsyncEventHandler<Deposited> for Remote {
    async fn handle(&mut self, event: &varvedb::OwnedEvent<Deposited>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_micros(100)).await;
        if self.fail_once == Some(event.seq) {
            self.fail_once = None;
            return Err("the remote was down".into());
        }
        assert_eq!(
            event.archived().amount.to_native(),
            event.amount.to_native()
        );
        self.seqs.push(event.seq);
        Ok(())
    }
}

#[test]
fn an_async_processor_resumes_from_its_cursor_and_retries() {
    let (_dir, storage) = filled(40);
    let rt = runtime();
    let run = |until: u64, fail_once: Option<u64>| -> Remote {
        let p = varvedb::AsyncProcessor::new(
            Reader::<Deposited>::new(storage.clone()),
            Remote {
                seqs: Vec::new(),
                fail_once,
            },
            "remote",
        )
        .with_options(ProcessorOptions {
            checkpoint_every_ms: 20,
            on_error: OnError::Retry {
                attempts: 3,
                backoff_ms: 5,
            },
            ..Default::default()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(p.run_until(async move {
            let _ = stopped.await;
        }));
        rt.block_on(async {
            for _ in 0..2000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if storage.consumer_position("remote").unwrap() == Some(until) {
                    break;
                }
            }
        });
        stop.send(()).unwrap();
        rt.block_on(task).unwrap().unwrap()
    };
    let first = run(40, Some(17));
    assert_eq!(first.seqs, (1..=40).collect::<Vec<_>>());
    let writer = Writer::<Deposited>::new(storage.clone());
    for i in 41..=50u64 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    let second = run(50, None);
    assert_eq!(second.seqs, (41..=50).collect::<Vec<_>>());
}

/// Takes its time over every event, until told to hurry (so that the stop, which first
/// handles what was committed, does not take minutes).
struct Slow(u64, Arc<std::sync::atomic::AtomicBool>);

impl EventHandler<Deposited> for Slow {
    fn handle(&mut self, _event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        if !self.1.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.0 += 1;
        Ok(())
    }
}

#[test]
fn a_slow_handler_holds_no_snapshot_long_enough_to_block_map_growth() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(varvedb::StorageConfig {
        path: dir.path().into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 1 << 30,
        // Waiting this long for the processor's snapshot would fail the test below.
        resize_wait_ms_max: 60_000,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    // A backlog that takes the slow handler 20 s: one snapshot over it would block growth.
    let backlog: Vec<Deposited> = (1..=1000u64).map(deposit).collect();
    writer
        .append_batch(1, ExpectedVersion::NoStream, &backlog)
        .unwrap();
    let rt = runtime();
    let hurry = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Slow(0, Arc::clone(&hurry)),
        "slow",
        storage.subscribe(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.run_until(async move {
        let _ = stopped.await;
    }));
    std::thread::sleep(Duration::from_millis(100));
    // About 3 MB: the 1 MiB map must grow while the processor is mid-backlog.
    let started = std::time::Instant::now();
    let note = "g".repeat(900);
    for b in 0..15u128 {
        let batch: Vec<Deposited> = (0..200)
            .map(|i| Deposited {
                account: i,
                amount: i,
                note: note.clone(),
            })
            .collect();
        writer
            .append_batch(100 + b, ExpectedVersion::NoStream, &batch)
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the appends waited {:?} for the slow processor's snapshot",
        started.elapsed()
    );
    assert!(storage.stats().unwrap().map_bytes > 1 << 20);
    hurry.store(true, std::sync::atomic::Ordering::Relaxed);
    stop.send(()).unwrap();
    let slow = rt.block_on(task).unwrap().unwrap();
    assert!(slow.0 > 0);
}

#[test]
fn a_stop_right_after_appends_handles_them_first() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let writer = Writer::<Deposited>::new(storage.clone());
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "eager",
        storage.subscribe(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.run_until(async move {
        let _ = stopped.await;
    }));
    for i in 1..=500u64 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    stop.send(()).unwrap();
    let h = rt.block_on(task).unwrap().unwrap();
    assert_eq!(h.seqs.len(), 500);
    assert_eq!(storage.consumer_position("eager").unwrap(), Some(500));

    // The same for an async processor.
    let p = varvedb::AsyncProcessor::new(
        Reader::<Deposited>::new(storage.clone()),
        Remote {
            seqs: Vec::new(),
            fail_once: None,
        },
        "eager-async",
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.run_until(async move {
        let _ = stopped.await;
    }));
    for i in 501..=600u64 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    stop.send(()).unwrap();
    let h = rt.block_on(task).unwrap().unwrap();
    assert_eq!(h.seqs, (1..=600).collect::<Vec<_>>());
    assert_eq!(storage.consumer_position("eager-async").unwrap(), Some(600));
}

#[test]
fn park_alone_parks_at_once_and_goes_on() {
    let (_dir, storage) = filled(6);
    let rt = runtime();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        flaky(&[(2, 1)]),
        "parks",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: OnError::Park,
        ..Default::default()
    });
    let h = run_to(&rt, &storage, p, "parks", 6);
    assert_eq!(h.seen, [1, 3, 4, 5, 6], "one failure parks: no retry");
    assert_eq!(
        storage
            .parked_events("parks")
            .unwrap()
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>(),
        [2]
    );
}

/// Waits (polling) until `done` holds, at most 10 s.
fn wait_for(rt: &tokio::runtime::Runtime, done: impl Fn() -> bool) -> bool {
    rt.block_on(async {
        for _ in 0..2000 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done()
    })
}

#[test]
fn a_replay_request_reaches_a_running_processor_and_takes_its_parked_events() {
    let (_dir, storage) = filled(10);
    let rt = runtime();
    let fail = Arc::new(Mutex::new([(4u64, u32::MAX)].into_iter().collect()));
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Flaky {
            fail: Arc::clone(&fail),
            seen: Vec::new(),
        },
        "requested",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: OnError::Park,
        poll_interval_ms: 10,
        ..Default::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.run_until(async move {
        let _ = stopped.await;
    }));
    assert!(wait_for(&rt, || storage
        .parked_events("requested")
        .unwrap()
        .len()
        == 1));
    assert!(wait_for(&rt, || storage
        .consumer_position("requested")
        .unwrap()
        == Some(10)));

    // Still failing: the replay leaves it parked, and the request is withdrawn. The handler's
    // failure count for event 4 shows the replay ran: one more call failed.
    let calls_left = || fail.lock().unwrap()[&4];
    let before = calls_left();
    assert_eq!(storage.request_parked_replay("requested").unwrap(), 1);
    assert!(
        wait_for(&rt, || calls_left() < before),
        "the replay never ran"
    );
    assert_eq!(storage.parked_events("requested").unwrap().len(), 1);
    // Fixed: the next request takes it, while the processor idles; the cursor stays.
    fail.lock().unwrap().clear();
    assert_eq!(storage.request_parked_replay("requested").unwrap(), 1);
    assert!(wait_for(&rt, || storage
        .parked_events("requested")
        .unwrap()
        .is_empty()));
    assert_eq!(storage.request_parked_replay("requested").unwrap(), 0);
    stop.send(()).unwrap();
    let h = rt.block_on(task).unwrap().unwrap();
    assert_eq!(h.seen, [1, 2, 3, 5, 6, 7, 8, 9, 10, 4]);
    assert_eq!(storage.consumer_position("requested").unwrap(), Some(10));
}

#[test]
fn a_stopped_processor_replays_on_its_next_start_and_an_async_one_while_idle() {
    let (_dir, storage) = filled(6);
    let rt = runtime();
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        flaky(&[(2, u32::MAX)]),
        "later",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: OnError::Park,
        ..Default::default()
    });
    run_to(&rt, &storage, p, "later", 6);
    assert_eq!(storage.request_parked_replay("later").unwrap(), 1);
    let p = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        flaky(&[]),
        "later",
        storage.subscribe(),
    );
    let h = run_to(&rt, &storage, p, "later", 6);
    assert!(storage.parked_events("later").unwrap().is_empty());
    assert_eq!(
        h.seen,
        [2],
        "only the parked event, the cursor was at the head"
    );

    // The async processor.
    struct Picky {
        refuse: Arc<Mutex<Option<u64>>>,
        seqs: Vec<u64>,
    }
    impl varvedb::AsyncEventHandler<Deposited> for Picky {
        async fn handle(
            &mut self,
            event: &varvedb::OwnedEvent<Deposited>,
        ) -> Result<(), HandlerError> {
            if *self.refuse.lock().unwrap() == Some(event.seq) {
                return Err("refused".into());
            }
            self.seqs.push(event.seq);
            Ok(())
        }
    }
    let refuse = Arc::new(Mutex::new(Some(5)));
    let p = varvedb::AsyncProcessor::new(
        Reader::<Deposited>::new(storage.clone()),
        Picky {
            refuse: Arc::clone(&refuse),
            seqs: Vec::new(),
        },
        "async-picky",
    )
    .with_options(ProcessorOptions {
        on_error: OnError::Park,
        poll_interval_ms: 10,
        ..Default::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.run_until(async move {
        let _ = stopped.await;
    }));
    assert!(wait_for(&rt, || storage
        .parked_events("async-picky")
        .unwrap()
        .len()
        == 1));
    *refuse.lock().unwrap() = None;
    assert_eq!(storage.request_parked_replay("async-picky").unwrap(), 1);
    assert!(wait_for(&rt, || storage
        .parked_events("async-picky")
        .unwrap()
        .is_empty()));
    stop.send(()).unwrap();
    let h = rt.block_on(task).unwrap().unwrap();
    assert_eq!(h.seqs, [1, 2, 3, 4, 6, 5]);
}

/// A processor whose cursor falls inside a removed range goes on at the next kept event, with
/// no error and no gap in what is kept; its lag counts only kept events.
#[test]
fn a_processor_whose_position_was_removed_continues_at_the_next_kept_event() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let writer = Writer::<Deposited>::new(storage.clone());
    for i in 1..=30u64 {
        writer
            .append(u128::from(i % 3), ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    // The processor had handled up to seq 4; then streams 0 and 1 lose their first 6 events
    // (seqs 1..=17 of theirs), and stream 2 its first 3.
    storage.reset_consumer("billing", 4).unwrap();
    storage.truncate_stream(0, 7).unwrap();
    storage.truncate_stream(1, 7).unwrap();
    storage.truncate_stream(2, 4).unwrap();
    let kept: Vec<u64> = {
        let txn = storage.read_txn().unwrap();
        Reader::<Deposited>::new(storage.clone())
            .read_all(&txn, 5)
            .map(|e| e.unwrap().seq())
            .collect()
    };
    assert_eq!(kept.len(), 30 - 6 - 6 - 3, "{kept:?}");
    let lag = storage.consumers().unwrap()[0].lag_events;
    assert_eq!(lag, kept.len() as u64);
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Balance::default(),
        "billing",
        storage.subscribe(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(processor.run_until(async move {
        let _ = stop_rx.await;
    }));
    rt.block_on(async {
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if storage.consumer_position("billing").unwrap() == Some(30) {
                break;
            }
        }
    });
    stop_tx.send(()).unwrap();
    let handler: Balance = rt.block_on(task).unwrap().unwrap();
    assert_eq!(handler.seqs, kept);
    assert_eq!(storage.consumers().unwrap()[0].lag_events, 0);
}
