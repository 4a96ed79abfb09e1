//! Exactly-once projections: the read model and the cursor commit together, so a killed
//! projection resumes without applying any event twice or losing one.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::Duration;

use common::*;
use varvedb::{
    ExpectedVersion, HandlerError, Model, OwnedEvent, Projection, ProjectionHandler, Reader,
    Storage, Writer,
};

/// Per-stream totals and event counts, kept in the model only.
struct Totals {
    fail_at: Option<u64>,
}

fn key(stream: u128) -> [u8; 16] {
    stream.to_be_bytes()
}

impl ProjectionHandler<Deposited> for Totals {
    fn apply(
        &mut self,
        event: &OwnedEvent<Deposited>,
        model: &mut Model<'_, '_>,
    ) -> Result<(), HandlerError> {
        if self.fail_at == Some(event.seq) {
            return Err("refused".into());
        }
        let (mut sum, mut count) = match model.get(&key(event.stream_id))? {
            Some(v) => (
                u64::from_le_bytes(v[..8].try_into()?),
                u64::from_le_bytes(v[8..].try_into()?),
            ),
            None => (0, 0),
        };
        sum += event.amount.to_native();
        count += 1;
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&sum.to_le_bytes());
        value[8..].copy_from_slice(&count.to_le_bytes());
        model.put(&key(event.stream_id), &value)?;
        Ok(())
    }
}

/// What the model holds for each of streams 0..5: (sum, count).
fn model(storage: &Storage) -> Vec<(u64, u64)> {
    let txn = storage.read_txn().unwrap();
    (0..5u128)
        .map(|s| {
            storage
                .projection_get(&txn, "totals", &key(s))
                .unwrap()
                .map_or((0, 0), |v| {
                    (
                        u64::from_le_bytes(v[..8].try_into().unwrap()),
                        u64::from_le_bytes(v[8..].try_into().unwrap()),
                    )
                })
        })
        .collect()
}

/// The same, recounted from the log.
fn recount(storage: &Storage) -> Vec<(u64, u64)> {
    let mut out = vec![(0, 0); 5];
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for e in reader.read_all(&txn, 1) {
        let e = e.unwrap();
        let slot = &mut out[e.stream_id() as usize];
        slot.0 += e.amount.to_native();
        slot.1 += 1;
    }
    out
}

fn run_until_head(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    fail_at: Option<u64>,
) -> varvedb::Result<Totals> {
    let head = storage.last_seq(&storage.read_txn().unwrap()).unwrap();
    let p = Projection::new(
        Reader::<Deposited>::new(storage.clone()),
        Totals { fail_at },
        "totals",
    )
    .batch_events_max(64);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.run_until(async move {
        let _ = stopped.await;
    }));
    rt.block_on(async {
        for _ in 0..2000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if storage.consumer_position("totals").unwrap() == Some(head) || task.is_finished() {
                break;
            }
        }
    });
    let _ = stop.send(());
    rt.block_on(task).unwrap()
}

#[test]
fn a_projection_keeps_its_model_with_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    for i in 1..=500u64 {
        writer
            .append(u128::from(i % 5), ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    let rt = runtime();
    run_until_head(&rt, &storage, None).unwrap();
    assert_eq!(model(&storage), recount(&storage));

    // A failing apply aborts its batch: the model and the cursor stay where they were.
    for i in 501..=600u64 {
        writer
            .append(u128::from(i % 5), ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    let before = model(&storage);
    let err = run_until_head(&rt, &storage, Some(550)).err().unwrap();
    assert!(
        matches!(err, varvedb::Error::HandlerFailed { seq: 550, .. }),
        "{err:?}"
    );
    let position = storage.consumer_position("totals").unwrap().unwrap();
    assert!(position < 550);
    // The model matches the log up to the cursor, exactly.
    let txn = storage.read_txn().unwrap();
    let reader = Reader::<Deposited>::new(storage.clone());
    let mut upto = vec![(0u64, 0u64); 5];
    for e in reader.read_all(&txn, 1).take(position as usize) {
        let e = e.unwrap();
        upto[e.stream_id() as usize].0 += e.amount.to_native();
        upto[e.stream_id() as usize].1 += 1;
    }
    drop(txn);
    assert_eq!(model(&storage), upto);
    assert!(model(&storage).iter().zip(&before).all(|(a, b)| a.1 >= b.1));
    run_until_head(&rt, &storage, None).unwrap();
    assert_eq!(model(&storage), recount(&storage));
}

const CHILD_ENV: &str = "VARVEDB_PROJECTION_CHILD_DIR";

/// The child: runs the projection until it is killed.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_projection() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let storage = Storage::open(varvedb::StorageConfig {
        path: dir.into(),
        ..Default::default()
    })
    .unwrap();
    let p = Projection::new(
        Reader::<Deposited>::new(storage.clone()),
        Totals { fail_at: None },
        "totals",
    )
    .batch_events_max(16);
    runtime()
        .block_on(p.run_until(std::future::pending()))
        .unwrap();
}

#[test]
fn a_killed_projection_matches_a_full_recount() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        let writer = Writer::<Deposited>::new(storage);
        for i in 1..=3000u64 {
            writer
                .append(u128::from(i % 5), ExpectedVersion::Auto, &deposit(i))
                .unwrap();
        }
    }
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--ignored",
                "child_projection",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed once its cursor has passed this round's mark, read from the store by this
        // process: the kill lands while it is projecting, between two checkpoints or in one.
        let mark = 500 * (round + 1);
        let watcher = open(&dir);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while watcher.consumer_position("totals").unwrap().unwrap_or(0) < mark {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the projection did not reach {mark}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(watcher);
        child.kill().unwrap();
        child.wait().unwrap();
        let storage = open(&dir);
        let position = storage.consumer_position("totals").unwrap().unwrap_or(0);
        assert!(
            mark <= position && position < 3000,
            "round {round}: killed at {position}, not in the middle of the log"
        );
        let counted: u64 = model(&storage).iter().map(|(_, n)| n).sum();
        assert_eq!(
            counted, position,
            "round {round}: the model holds exactly the cursor's events"
        );
    }
    let storage = open(&dir);
    let rt = runtime();
    run_until_head(&rt, &storage, None).unwrap();
    assert_eq!(model(&storage), recount(&storage));
}
