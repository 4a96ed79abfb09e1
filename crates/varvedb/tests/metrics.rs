//! Prometheus metrics: `Storage::metrics_text` parses as a Prometheus exposition, every name is
//! in the `varvedb_` namespace, and the counters move with what the store did.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use varvedb::{
    Append, AppendOptions, Error, EventHandler, EventRef, ExpectedVersion, HandlerError, OnError,
    Processor, ProcessorOptions, Reader, Storage, StorageConfig, Writer,
};

/// `(name, consumer label or "")` → value, for counters, gauges and histogram counts.
fn scrape(storage: &Storage) -> HashMap<(String, String), f64> {
    let text = storage.metrics_text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(!parsed.samples.is_empty());
    let mut out = HashMap::new();
    for s in parsed.samples {
        assert!(s.metric.starts_with("varvedb_"), "{}", s.metric);
        let consumer = s.labels.get("consumer").unwrap_or("").to_owned();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert((s.metric, consumer), value);
    }
    out
}

fn get(m: &HashMap<(String, String), f64>, name: &str) -> f64 {
    *m.get(&(name.to_owned(), String::new()))
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

#[test]
fn counters_move_with_appends_conflicts_replays_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        blob_threshold_bytes: 256,
        ..config(&dir)
    })
    .unwrap();
    let before = scrape(&storage);
    assert_eq!(get(&before, "varvedb_append_events_total"), 0.0);
    assert_eq!(get(&before, "varvedb_events"), 0.0);
    assert!(get(&before, "varvedb_map_size_bytes") > 0.0);

    let writer = Writer::<Deposited>::new(storage.clone());
    for v in 0..10u32 {
        writer
            .append(7, ExpectedVersion::Exact(v), &deposit(u64::from(v)))
            .unwrap();
    }
    // A conflict.
    let conflict = writer.append(7, ExpectedVersion::Exact(3), &deposit(1));
    assert!(matches!(conflict, Err(Error::ConcurrencyConflict { .. })));
    // An idempotent retry.
    let options = || AppendOptions::default().event_id(42u128);
    writer
        .commit(Append::event(8, ExpectedVersion::Auto, &deposit(5)).options(options()))
        .map(|v| v[0])
        .unwrap();
    writer
        .commit(Append::event(8, ExpectedVersion::Auto, &deposit(5)).options(options()))
        .map(|v| v[0])
        .unwrap();
    // Two identical large payloads: one blob, one dedup hit.
    let big = Deposited {
        account: 9,
        amount: 9,
        note: "x".repeat(2000),
    };
    writer.append(9, ExpectedVersion::Auto, &big).unwrap();
    writer.append(10, ExpectedVersion::Auto, &big).unwrap();

    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let read = reader.read_all(&txn, 1).filter(|e| e.is_ok()).count();
    assert_eq!(read, 13);
    drop(txn);

    let after = scrape(&storage);
    assert_eq!(get(&after, "varvedb_append_events_total"), 13.0);
    assert_eq!(get(&after, "varvedb_append_conflicts_total"), 1.0);
    assert_eq!(get(&after, "varvedb_append_idempotent_hits_total"), 1.0);
    assert_eq!(get(&after, "varvedb_blob_writes_total"), 1.0);
    assert_eq!(get(&after, "varvedb_blob_dedup_hits_total"), 1.0);
    assert_eq!(get(&after, "varvedb_blobs"), 1.0);
    assert_eq!(get(&after, "varvedb_events"), 13.0);
    assert_eq!(get(&after, "varvedb_last_seq"), 13.0);
    assert_eq!(get(&after, "varvedb_read_events_total"), 13.0);
    assert!(get(&after, "varvedb_read_bytes_total") > 13.0 * 32.0);
    assert!(get(&after, "varvedb_append_bytes_total") > 13.0 * 32.0);
    assert!(get(&after, "varvedb_map_used_bytes") > 0.0);
    // One request per append: 15 observed (the conflict and the replay included).
    assert_eq!(get(&after, "varvedb_append_batch_events_count"), 15.0);
    let commits = get(&after, "varvedb_commit_duration_seconds_count");
    assert!((1.0..=13.0).contains(&commits), "{commits}");
}

/// Fails every event once, then takes it.
#[derive(Default)]
struct FailsOnce {
    failed: std::collections::HashSet<u64>,
}

impl EventHandler<Deposited> for FailsOnce {
    fn handle(&mut self, event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        if self.failed.insert(event.seq()) {
            return Err("not yet".into());
        }
        Ok(())
    }
}

#[test]
fn consumers_report_position_lag_errors_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    for _ in 0..5 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(1))
            .unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        FailsOnce::default(),
        "audit",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: OnError::Retry {
            attempts: 3,
            backoff_ms: 1,
        },
        ..Default::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(processor.run_until(async move {
        let _ = stopped.await;
    }));
    rt.block_on(async {
        for _ in 0..2000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if storage.consumer_position("audit").unwrap() == Some(5) {
                break;
            }
        }
    });
    stop.send(()).unwrap();
    rt.block_on(task).unwrap().unwrap();
    writer
        .append(1, ExpectedVersion::Auto, &deposit(1))
        .unwrap();

    let m = scrape(&storage);
    let consumer = |name: &str| {
        *m.get(&(name.to_owned(), "audit".to_owned()))
            .unwrap_or_else(|| panic!("no {name} for audit in {m:?}"))
    };
    assert_eq!(consumer("varvedb_consumer_position"), 5.0);
    assert_eq!(consumer("varvedb_consumer_lag_events"), 1.0);
    // The unhandled event was committed a moment ago.
    let lag_seconds = consumer("varvedb_consumer_lag_seconds");
    assert!(lag_seconds > 0.0 && lag_seconds < 60.0, "{lag_seconds}");
    assert_eq!(consumer("varvedb_consumer_parked_events"), 0.0);
    assert_eq!(consumer("varvedb_consumer_handler_errors_total"), 5.0);
    assert_eq!(consumer("varvedb_consumer_retries_total"), 5.0);

    // A deleted consumer leaves the cursor gauges.
    storage.delete_consumer("audit").unwrap();
    let m = scrape(&storage);
    assert!(!m.contains_key(&("varvedb_consumer_position".to_owned(), "audit".to_owned())));
}
