//! Removals (truncations, soft deletes, tombstones, retention) replicated to a real
//! nats-server: they reach the JetStream stream (removed events are purged, or never published
//! but as a place holder), the key-value bucket (bounds and policies), a following replica, and
//! a restore from scratch, which never brings a removed event back.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::{Duration, Instant};

use common::{NatsServer, assert_same_log, config, doc, fill, runtime};
use varvedb::{ExpectedVersion, Reader, RetentionPolicy, Storage, Writer};
use varvedb_nats::{Replicator, ReplicatorConfig, RestoreConfig, restore};

/// Appends `n` lone events to `stream`.
fn append(storage: &Storage, stream: u128, n: u64) {
    let w = Writer::<common::Doc>::new(storage.clone());
    for i in 0..n {
        w.append(stream, ExpectedVersion::Auto, &doc(i, 20))
            .unwrap();
    }
}

/// What a replica must share with its source besides the records: the log's end, the removed
/// count, each stream's bounds (with the last removed version) and version, and the policies.
type RemovalState = (
    u64,
    u64,
    Vec<varvedb::StreamRemoval>,
    Vec<(Option<u128>, RetentionPolicy)>,
);

fn removal_state(storage: &Storage) -> RemovalState {
    let txn = storage.read_txn().unwrap();
    (
        storage.last_seq(&txn).unwrap(),
        storage.removed_events(&txn).unwrap(),
        storage.stream_removals(&txn).unwrap(),
        storage.retention_policies().unwrap(),
    )
}

/// The sequences of `stream`'s events in `storage`, in version order (from their stored form:
/// a keyless replica of an encrypted store has them too).
fn seqs_of(storage: &Storage, stream: u128) -> Vec<u64> {
    let txn = storage.read_txn().unwrap();
    storage
        .export_events(&txn, 1)
        .map(|e| e.unwrap())
        .filter(|e| e.stream_id == stream)
        .map(|e| e.seq)
        .collect()
}

/// The JetStream stream's message at `seq`: `None` when there is none (purged), else whether
/// it stands for a removed event.
async fn message_at(url: &str, stream: &str, seq: u64) -> Option<bool> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.unwrap();
    match stream.get_raw_message(seq).await {
        Ok(m) => Some(m.headers.get("Varve-Removed").map(|v| v.as_str()) == Some("1")),
        Err(e) => {
            assert!(
                matches!(
                    e.kind(),
                    async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ),
                "{e}"
            );
            None
        }
    }
}

/// A source with every kind of removal: a truncated stream, a soft-deleted one that goes on,
/// a tombstoned one, a policy that removes, and a log whose last events are removed.
fn source_with_removals(storage: &Storage) -> Vec<u64> {
    fill(storage, 3_000);
    append(storage, 900, 20);
    append(storage, 901, 10);
    append(storage, 902, 5);
    append(storage, 904, 12);
    fill(storage, 500);
    let mut removed = seqs_of(storage, 900)[..5].to_vec();
    removed.extend(seqs_of(storage, 901));
    removed.extend(seqs_of(storage, 902));
    removed.extend(&seqs_of(storage, 904)[..9]);
    storage.truncate_stream(900, 6).unwrap();
    storage.delete_stream(901).unwrap();
    append(storage, 901, 3);
    storage.tombstone_stream(902).unwrap();
    storage
        .set_stream_retention(
            904,
            RetentionPolicy {
                max_count: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    storage
        .set_default_retention(RetentionPolicy {
            max_age: Some(Duration::from_secs(86_400 * 365)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(storage.enforce_retention().unwrap().events_removed, 9);
    // The log's last events, removed: their sequences stay taken.
    append(storage, 905, 4);
    removed.extend(seqs_of(storage, 905));
    storage.delete_stream(905).unwrap();
    removed
}

/// Checks what a replica of `src` must hold: the same records, removals and policies; no
/// removed event readable; the versions kept; the tombstone enforced.
fn assert_same_removals(src: &Storage, dst: &Storage, removed: &[u64]) {
    assert_same_log(src, dst);
    assert_eq!(removal_state(dst), removal_state(src));
    let txn = dst.read_txn().unwrap();
    for &seq in removed {
        let record = dst.record_links(&txn, seq).unwrap();
        assert!(record.is_none(), "event {seq} is back");
    }
    if !dst.is_encrypted() {
        let reader = Reader::<common::Doc>::new(dst.clone());
        for &seq in removed {
            assert!(
                reader.get(&txn, seq).unwrap().is_none(),
                "event {seq} is back"
            );
        }
    }
    for stream in [900u128, 901, 902, 904, 905] {
        assert_eq!(
            dst.stream_version(&txn, stream).unwrap(),
            src.stream_version(&src.read_txn().unwrap(), stream)
                .unwrap(),
            "stream {stream}"
        );
    }
    assert_eq!(seqs_of(dst, 900).len(), 15);
    assert!(matches!(
        Writer::<common::Doc>::new(dst.clone()).append(902, ExpectedVersion::Auto, &doc(1, 1)),
        Err(varvedb::Error::StreamDeleted { .. })
    ));
}

#[test]
fn removals_made_before_replication_reach_the_stream_and_a_restore() {
    removals_before_replication(None);
}

#[test]
fn removals_of_an_encrypted_store_reach_a_keyless_restore() {
    removals_before_replication(Some(common::KEY));
}

fn removals_before_replication(key: Option<[u8; 32]>) {
    let server = NatsServer::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), key)).unwrap();
    let removed = source_with_removals(&src);
    let last = src.last_seq(&src.read_txn().unwrap()).unwrap();
    let rt = runtime();
    let replicator =
        Replicator::new(src.clone(), ReplicatorConfig::new(server.url(), "GONE")).unwrap();
    let report = common::bounded(&rt, replicator.run_once()).unwrap();
    assert_eq!(report.position, last);
    // Every sequence has its message: an event, or the place of a removed one.
    assert_eq!(
        report.published, last,
        "events and places of removed ones, one message each"
    );
    for &seq in &removed {
        let at = common::bounded(&rt, message_at(&server.url(), "GONE", seq));
        assert_eq!(at, Some(true), "message {seq}");
    }

    // A replicator that lost its cursor (killed before it committed it) finds every message
    // already there, removed events' places included, and publishes nothing again.
    src.reset_consumer("nats:GONE", 1_000).unwrap();
    let again = common::bounded(&rt, replicator.run_once()).unwrap();
    assert_eq!((again.published, again.adopted), (0, last - 1_000));

    // The replica is restored without the master key: it copies sealed events and wrapped
    // keys, and its records are the source's.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    let restored = common::bounded(
        &rt,
        restore(
            &dst,
            &RestoreConfig::new(server.url(), "GONE"),
            std::future::pending(),
        ),
    )
    .unwrap();
    assert_eq!(restored.applied, last - removed.len() as u64);
    assert_eq!(restored.removed, removed.len() as u64);
    assert_eq!(restored.last_seq, last);
    assert_same_removals(&src, &dst, &removed);
}

#[test]
fn removals_after_replication_purge_the_stream_and_reach_a_follower_and_a_new_restore() {
    let server = NatsServer::start();
    let url = server.url();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), None)).unwrap();
    fill(&src, 2_000);
    append(&src, 900, 20);
    append(&src, 901, 10);
    append(&src, 902, 5);
    append(&src, 904, 12);
    let rt = runtime();
    let replicator = Replicator::new(
        src.clone(),
        ReplicatorConfig::new(url.clone(), "LATER").key_sync_interval(Duration::from_millis(50)),
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let replicating = rt.spawn({
        let replicator = replicator.clone();
        let stop = stopped(stop_rx.clone());
        async move { replicator.run_until(stop).await }
    });
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    let restoring = rt.spawn({
        let dst = dst.clone();
        let url = url.clone();
        let stop = stopped(stop_rx.clone());
        async move { restore(&dst, &RestoreConfig::new(url, "LATER").follow(true), stop).await }
    });
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let caught_up = || {
        src.last_seq(&src.read_txn().unwrap()).unwrap()
            == dst.last_seq(&dst.read_txn().unwrap()).unwrap()
    };
    wait_until("the replica catches up", &caught_up);

    // Removals of events the stream and the replica hold, with appends around them.
    let mut removed = seqs_of(&src, 900)[..5].to_vec();
    removed.extend(seqs_of(&src, 901));
    removed.extend(seqs_of(&src, 902));
    removed.extend(&seqs_of(&src, 904)[..9]);
    src.truncate_stream(900, 6).unwrap();
    fill(&src, 300);
    src.delete_stream(901).unwrap();
    append(&src, 901, 3);
    src.tombstone_stream(902).unwrap();
    src.set_stream_retention(
        904,
        RetentionPolicy {
            max_count: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    src.enforce_retention().unwrap();
    // The log's last events, removed perhaps before the replicator published them.
    let published_before = removed.clone();
    append(&src, 905, 4);
    removed.extend(seqs_of(&src, 905));
    src.delete_stream(905).unwrap();
    wait_until("the replica takes the removals", &|| {
        removal_state(&src) == removal_state(&dst)
    });
    // The stream's removed messages are gone from the server: purged, not only marked. Those
    // never published stand as removed events' places.
    let purged = || {
        removed.iter().all(|&seq| {
            let at = common::bounded(&rt, message_at(&url, "LATER", seq));
            at.is_none() || (at == Some(true) && !published_before.contains(&seq))
        })
    };
    wait_until("the removed messages leave the stream", &purged);
    stop_tx.send(true).unwrap();
    common::bounded(&rt, replicating).unwrap().unwrap();
    let followed = common::bounded(&rt, restoring).unwrap().unwrap();
    assert_eq!(followed.removed, removed.len() as u64);
    assert_same_removals(&src, &dst, &removed);
    // The replica goes on where the source does: the soft-deleted stream at its next version.
    assert_eq!(seqs_of(&dst, 901).len(), 3);

    // A restore from scratch, from a stream whose removed messages were purged and whose
    // last sequences have no message at all.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Storage::open(config(fresh_dir.path(), None)).unwrap();
    let restored = common::bounded(
        &rt,
        restore(
            &fresh,
            &RestoreConfig::new(url.clone(), "LATER"),
            std::future::pending(),
        ),
    )
    .unwrap();
    assert_eq!(
        restored.last_seq,
        src.last_seq(&src.read_txn().unwrap()).unwrap()
    );
    assert_same_removals(&src, &fresh, &removed);
    // Run again: nothing to do.
    let again = common::bounded(
        &rt,
        restore(
            &fresh,
            &RestoreConfig::new(url, "LATER"),
            std::future::pending(),
        ),
    )
    .unwrap();
    assert_eq!((again.applied, again.removed), (0, 0));
}
