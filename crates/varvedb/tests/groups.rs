//! Consumer groups: members that share one name's work by partitions of the streams, each held
//! under a lease in the store. Members in one process share the events exactly once, in order
//! per stream; a graceful stop hands the partitions over at once; a member that stalls past its
//! lease is fenced; a projection's model stays exactly-once across members.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use varvedb::{
    EventHandler, EventRef, ExpectedVersion, HandlerError, Model, OwnedEvent, Processor,
    ProcessorOptions, Projection, ProjectionHandler, Reader, Storage, Writer,
};

/// One event handled: by whom, which, and when (a global order across members).
#[derive(Debug, Clone, Copy)]
struct Handled {
    member: usize,
    stream: u128,
    version: u32,
    seq: u64,
    order: u64,
}

#[derive(Clone)]
struct Log {
    handled: Arc<Mutex<Vec<Handled>>>,
    order: Arc<AtomicU64>,
}

impl Log {
    fn new() -> Self {
        Log {
            handled: Arc::default(),
            order: Arc::default(),
        }
    }

    fn count(&self) -> usize {
        self.handled.lock().unwrap().len()
    }
}

struct Member {
    index: usize,
    log: Log,
    /// Stalls once, for this long, on the first event of this stream.
    stall: Option<(u128, Duration, Arc<AtomicBool>)>,
}

impl EventHandler<Deposited> for Member {
    fn handle(&mut self, event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        if let Some((stream, pause, done)) = &self.stall
            && event.stream_id() == *stream
            && !done.swap(true, Ordering::SeqCst)
        {
            std::thread::sleep(*pause);
        }
        let order = self.log.order.fetch_add(1, Ordering::SeqCst);
        self.log.handled.lock().unwrap().push(Handled {
            member: self.index,
            stream: event.stream_id(),
            version: event.version(),
            seq: event.seq(),
            order,
        });
        Ok(())
    }
}

type Stop = tokio::sync::watch::Sender<bool>;

fn start_member(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    group: &str,
    index: usize,
    log: &Log,
    options: ProcessorOptions,
    stall: Option<(u128, Duration, Arc<AtomicBool>)>,
) -> (Stop, tokio::task::JoinHandle<varvedb::Result<Member>>) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Member {
            index,
            log: log.clone(),
            stall,
        },
        group,
        storage.subscribe(),
    )
    .with_options(options)
    .in_group(format!("member-{index}"));
    let task = rt.spawn(processor.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    (stop, task)
}

fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Appends `per_writer` events from each of `writers` threads, each to its own eight streams.
fn write(storage: &Storage, writers: u128, per_writer: u64) {
    std::thread::scope(|s| {
        for w in 0..writers {
            let storage = storage.clone();
            s.spawn(move || {
                let writer = Writer::<Deposited>::new(storage);
                for i in 0..per_writer {
                    let stream = 100 + w * 8 + u128::from(i % 8);
                    writer
                        .append(stream, ExpectedVersion::Auto, &deposit(i))
                        .unwrap();
                }
            });
        }
    });
}

/// Each event handled exactly once, and each stream's events in version order.
fn assert_once_in_order(log: &Log, events: u64) {
    let mut handled = log.handled.lock().unwrap().clone();
    handled.sort_by_key(|h| h.order);
    let mut seqs: Vec<u64> = handled.iter().map(|h| h.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=events).collect::<Vec<_>>(), "each event once");
    let mut last: std::collections::HashMap<u128, u32> = std::collections::HashMap::new();
    for h in &handled {
        let v = last.entry(h.stream).or_insert(0);
        assert_eq!(h.version, *v + 1, "stream {} out of order", h.stream);
        *v = h.version;
    }
}

fn group_options() -> ProcessorOptions {
    ProcessorOptions {
        group_lease_ms: 2_000,
        poll_interval_ms: 20,
        ..Default::default()
    }
}

#[test]
fn three_members_share_four_writers_events_once_each_in_order_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let log = Log::new();
    let members: Vec<_> = (0..3)
        .map(|i| start_member(&rt, &storage, "billing", i, &log, group_options(), None))
        .collect();
    // A fair share each: 16 partitions over three members, 6, 5 and 5.
    wait_until(
        "the members share the partitions",
        Duration::from_secs(10),
        || {
            let m = storage.group_members("billing").unwrap();
            let mut sizes: Vec<usize> = m.iter().map(|m| m.partitions.len()).collect();
            sizes.sort_unstable();
            m.len() == 3 && sizes == [5, 5, 6]
        },
    );
    write(&storage, 4, 500);
    wait_until("every event is handled", Duration::from_secs(30), || {
        log.count() >= 2_000
    });
    for (stop, _) in &members {
        stop.send(true).unwrap();
    }
    for (_, task) in members {
        rt.block_on(task).unwrap().unwrap();
    }
    assert_once_in_order(&log, 2_000);
    let by_member = |i: usize| {
        log.handled
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.member == i)
            .count()
    };
    for i in 0..3 {
        assert!(by_member(i) > 0, "member {i} handled nothing");
    }
    // All left: no member, no lease held, and every partition's cursor at the end.
    assert!(storage.group_members("billing").unwrap().is_empty());
    let groups = storage.consumer_groups().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].partitions, 16);
    for p in &groups[0].partition_states {
        assert_eq!(p.member, None);
        assert_eq!(p.position, 2_000, "partition {}", p.partition);
    }
    // Each stream's events are in its partition: one member at a time handled them.
    for h in log.handled.lock().unwrap().iter() {
        assert!(groups[0].partition_of(h.stream) < 16);
    }
}

#[test]
fn a_gracefully_stopped_member_hands_its_partitions_over_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let log = Log::new();
    let (stop_a, task_a) = start_member(&rt, &storage, "billing", 0, &log, group_options(), None);
    let (stop_b, task_b) = start_member(&rt, &storage, "billing", 1, &log, group_options(), None);
    wait_until(
        "the members share the partitions",
        Duration::from_secs(10),
        || {
            let m = storage.group_members("billing").unwrap();
            m.len() == 2 && m.iter().all(|m| m.partitions.len() == 8)
        },
    );
    write(&storage, 2, 300);
    wait_until("the events are handled", Duration::from_secs(30), || {
        log.count() >= 600
    });
    let stopped = Instant::now();
    stop_a.send(true).unwrap();
    rt.block_on(task_a).unwrap().unwrap();
    wait_until(
        "member 1 takes every partition",
        Duration::from_secs(1),
        || {
            let m = storage.group_members("billing").unwrap();
            m.len() == 1 && m[0].partitions.len() == 16
        },
    );
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    // What comes after is member 1's; nothing is lost or handled twice.
    write(&storage, 2, 300);
    wait_until("the rest is handled", Duration::from_secs(30), || {
        log.count() >= 1_200
    });
    stop_b.send(true).unwrap();
    rt.block_on(task_b).unwrap().unwrap();
    assert_once_in_order(&log, 1_200);
    let late: Vec<Handled> = log
        .handled
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.seq > 600)
        .copied()
        .collect();
    assert!(late.iter().all(|h| h.member == 1));
}

#[test]
fn a_member_stalled_past_its_lease_is_fenced_and_its_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let log = Log::new();
    let options = ProcessorOptions {
        group_lease_ms: 400,
        poll_interval_ms: 10,
        ..Default::default()
    };
    // Member 0 alone first: it holds every partition, then stalls on stream 100 for 1.5 s,
    // four leases, without renewing.
    let stalled = Arc::new(AtomicBool::new(false));
    let (stop_a, task_a) = start_member(
        &rt,
        &storage,
        "billing",
        0,
        &log,
        options.clone(),
        Some((100, Duration::from_millis(1_500), stalled.clone())),
    );
    wait_until("member 0 holds everything", Duration::from_secs(10), || {
        let m = storage.group_members("billing").unwrap();
        m.len() == 1 && m[0].partitions.len() == 16
    });
    let (stop_b, task_b) = start_member(&rt, &storage, "billing", 1, &log, options, None);
    write(&storage, 1, 80);
    wait_until("member 0 stalls", Duration::from_secs(10), || {
        stalled.load(Ordering::SeqCst)
    });
    // Member 1 takes member 0's partitions once its lease expired, and handles the events.
    wait_until(
        "member 1 handles everything",
        Duration::from_secs(10),
        || {
            let handled = log.handled.lock().unwrap();
            (1..=80u64).all(|seq| handled.iter().any(|h| h.seq == seq && h.member == 1))
        },
    );
    // Member 0 wakes with the stalled event handled: its checkpoint of the partitions it lost
    // is refused (fenced), and it counts them.
    wait_until("member 0 is fenced", Duration::from_secs(10), || {
        storage.metrics_text().lines().any(|l| {
            l.starts_with("varvedb_group_fenced_total{")
                && l.contains("member-0")
                && !l.ends_with(" 0")
        })
    });
    stop_a.send(true).unwrap();
    stop_b.send(true).unwrap();
    rt.block_on(task_a).unwrap().unwrap();
    rt.block_on(task_b).unwrap().unwrap();
    // No partition's cursor went back to member 0's stale position, and all are at the end.
    for p in &storage.consumer_groups().unwrap()[0].partition_states {
        assert_eq!(p.position, 80, "partition {}", p.partition);
    }
}

/// Counts each event in the model: `seq → times applied`.
struct Counted;

impl ProjectionHandler<Deposited> for Counted {
    fn apply(
        &mut self,
        event: &OwnedEvent<Deposited>,
        model: &mut Model<'_, '_>,
    ) -> Result<(), HandlerError> {
        let key = event.seq.to_be_bytes();
        let n = model
            .get(&key)?
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
        model.put(&key, &(n + 1).to_le_bytes())?;
        Ok(())
    }
}

#[test]
fn a_projection_group_keeps_its_model_exactly_once_across_members_joining_and_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let start = |member: &str| {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let projection =
            Projection::new(Reader::<Deposited>::new(storage.clone()), Counted, "totals")
                .in_group(member)
                .group_lease(Duration::from_millis(1_000))
                .batch_events_max(50);
        let task = rt.spawn(projection.run_until(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        (stop, task)
    };
    let a = start("a");
    write(&storage, 2, 200);
    let b = start("b");
    write(&storage, 2, 200);
    let c = start("c");
    write(&storage, 2, 200);
    // One leaves while events keep coming.
    a.0.send(true).unwrap();
    rt.block_on(a.1).unwrap().unwrap();
    write(&storage, 2, 200);
    let counted = |seq: u64| {
        let txn = storage.read_txn().unwrap();
        storage
            .projection_get(&txn, "totals", &seq.to_be_bytes())
            .unwrap()
            .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
    };
    wait_until(
        "every event is in the model",
        Duration::from_secs(30),
        || {
            counted(1_600).is_some()
                && storage.consumer_groups().unwrap()[0]
                    .partition_states
                    .iter()
                    .all(|p| p.position == 1_600)
        },
    );
    for (stop, task) in [b, c] {
        stop.send(true).unwrap();
        rt.block_on(task).unwrap().unwrap();
    }
    for seq in 1..=1_600u64 {
        assert_eq!(counted(seq), Some(1), "event {seq}");
    }
}

/// Fails on one event, every time.
struct FailsOn(u64, Log);

impl EventHandler<Deposited> for FailsOn {
    fn handle(&mut self, event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        if event.seq() == self.0 {
            return Err("the handler cannot take it".into());
        }
        let order = self.1.order.fetch_add(1, Ordering::SeqCst);
        self.1.handled.lock().unwrap().push(Handled {
            member: 0,
            stream: event.stream_id(),
            version: event.version(),
            seq: event.seq(),
            order,
        });
        Ok(())
    }
}

#[test]
fn a_group_member_parks_a_failing_event_under_the_group_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let log = Log::new();
    write(&storage, 1, 100);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        FailsOn(37, log.clone()),
        "billing",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: varvedb::OnError::RetryThenPark {
            attempts: 2,
            backoff_ms: 1,
        },
        ..group_options()
    })
    .in_group("solo");
    let task = rt.spawn(processor.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    wait_until("the rest is handled", Duration::from_secs(20), || {
        log.count() >= 99
    });
    // The group's metrics, labelled by group and member.
    let metrics = storage.metrics_text();
    assert!(
        metrics.contains("varvedb_group_partitions_held{group=\"billing\",member=\"solo\"} 16"),
        "{metrics}"
    );
    assert!(
        metrics.contains("varvedb_group_handler_errors_total{group=\"billing\",member=\"solo\"} 2"),
        "{metrics}"
    );
    stop.send(true).unwrap();
    rt.block_on(task).unwrap().unwrap();
    let parked = storage.parked_events("billing").unwrap();
    assert_eq!(parked.iter().map(|p| p.seq).collect::<Vec<_>>(), [37]);
    assert!(parked[0].reason.contains("cannot take it"));
    let mut seqs: Vec<u64> = log.handled.lock().unwrap().iter().map(|h| h.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).filter(|s| *s != 37).collect::<Vec<_>>());
}

#[test]
fn an_export_carries_a_groups_cursors_and_parked_events_into_an_import() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let log = Log::new();
    write(&storage, 2, 100);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        FailsOn(7, log.clone()),
        "billing",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: varvedb::OnError::Park,
        group_partitions: 8,
        ..group_options()
    })
    .in_group("solo");
    let task = rt.spawn(processor.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    wait_until("everything is handled", Duration::from_secs(20), || {
        log.count() >= 199
    });
    stop.send(true).unwrap();
    rt.block_on(task).unwrap().unwrap();
    let (header, events) = {
        let txn = storage.read_txn().unwrap();
        let header = storage.export_header(&txn).unwrap();
        let events: Vec<varvedb::StoredEvent> =
            storage.export_events(&txn, 1).map(|e| e.unwrap()).collect();
        (header, events)
    };
    assert_eq!(header.groups.len(), 1);
    assert_eq!(header.groups[0].positions, vec![200; 8]);
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = open(&copy_dir);
    let mut importer = copy.importer();
    importer.begin(&header).unwrap();
    for e in events {
        importer.push(e).unwrap();
    }
    let report = importer.finish(&header).unwrap();
    assert_eq!(report.consumers, 1);
    let groups = copy.consumer_groups().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].partitions, 8);
    assert!(groups[0].partition_states.iter().all(|p| p.position == 200));
    assert_eq!(
        copy.parked_events("billing")
            .unwrap()
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>(),
        [7]
    );
    // A second import of the same export moves nothing back and writes nothing more.
    copy.reset_consumer("billing", 150).unwrap();
    let header_again = header.clone();
    let mut importer = copy.importer();
    importer.resume().unwrap();
    let report = importer.finish(&header_again).unwrap();
    assert_eq!(report.consumers, 1, "forward from 150 to 200");
    assert!(
        copy.consumer_groups().unwrap()[0]
            .partition_states
            .iter()
            .all(|p| p.position == 200)
    );
}

#[test]
fn two_processors_started_under_one_member_name_never_share_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let rt = runtime();
    let log = Log::new();
    let start = |index: usize| {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let processor = Processor::new(
            Reader::<Deposited>::new(storage.clone()),
            Member {
                index,
                log: log.clone(),
                stall: None,
            },
            "billing",
            storage.subscribe(),
        )
        .with_options(group_options())
        .in_group("twin");
        let task = rt.spawn(processor.run_until(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        (stop, task)
    };
    let first = start(0);
    wait_until(
        "the first takes everything",
        Duration::from_secs(10),
        || {
            storage
                .group_members("billing")
                .unwrap()
                .first()
                .is_some_and(|m| m.partitions.len() == 16)
        },
    );
    let second = start(1);
    write(&storage, 2, 250);
    wait_until("every event is handled", Duration::from_secs(20), || {
        log.count() >= 500
    });
    // A while longer: a second holder would handle the events again.
    std::thread::sleep(Duration::from_millis(300));
    for (stop, task) in [first, second] {
        stop.send(true).unwrap();
        rt.block_on(task).unwrap().unwrap();
    }
    assert_once_in_order(&log, 500);
}
