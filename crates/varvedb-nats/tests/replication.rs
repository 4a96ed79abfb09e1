//! Replication to a real nats-server (Debian's 2.9.10 in CI), started on loopback by each
//! test and stopped when it ends: a whole store published and rebuilt byte for byte, a server
//! killed in the middle, a replicator killed between publish and cursor commit, a following
//! replica with shreds, and a stream that holds another store's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{KEY, NatsServer, assert_same_log, config, doc, fill, runtime, stream_state};
use varvedb::{ExpectedVersion, Reader, Storage, Writer};
use varvedb_nats::{Error, Replicator, ReplicatorConfig, RestoreConfig, RestoreReport, restore};

/// Restores `stream` into `dst` up to the stream's end (not following), within the tests'
/// time bound.
fn restore_once(
    rt: &tokio::runtime::Runtime,
    dst: &Storage,
    url: String,
    stream: &str,
) -> Result<RestoreReport, Error> {
    common::bounded(
        rt,
        restore(
            dst,
            &RestoreConfig::new(url, stream),
            std::future::pending(),
        ),
    )
}

/// Waits until the replicator's cursor reaches `at`, and checks that it has not finished.
fn wait_for_cursor(storage: &Storage, consumer: &str, at: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let position = storage.consumer_position(consumer).unwrap().unwrap_or(0);
        if position >= at {
            let last = storage.last_seq(&storage.read_txn().unwrap()).unwrap();
            assert!(position < last, "the replication finished before the fault");
            // The cursor moves when a chunk is acknowledged: a moment later the next chunk is
            // in flight, which the fault then interrupts (or the client buffers it across a
            // reconnection; either way nothing may be lost or doubled).
            std::thread::sleep(Duration::from_millis(30));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replication stalled at {position}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn replicates_100k_events_and_restores_them_byte_for_byte() {
    let server = NatsServer::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), None)).unwrap();
    fill(&src, 100_000);
    let rt = runtime();
    let replicator =
        Replicator::new(src.clone(), ReplicatorConfig::new(server.url(), "ORDERS")).unwrap();
    let report = common::bounded(&rt, replicator.run_once()).unwrap();
    assert_eq!(report.published, 100_000);
    assert_eq!((report.duplicates, report.adopted), (0, 0));
    assert_eq!(report.position, 100_000);
    assert_eq!(src.consumer_position("nats:ORDERS").unwrap(), Some(100_000));
    assert_eq!(replicator.lag().unwrap(), 0);
    assert_eq!(
        common::bounded(&rt, stream_state(&server.url(), "ORDERS")),
        (100_000, 100_000)
    );
    // The lag is the consumer's gauge.
    assert!(src.metrics_text().contains("consumer=\"nats:ORDERS\""));

    // Again: nothing to publish.
    let again = common::bounded(&rt, replicator.run_once()).unwrap();
    assert_eq!((again.published, again.duplicates), (0, 0));

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    let restored = restore_once(&rt, &dst, server.url(), "ORDERS").unwrap();
    assert_eq!(restored.applied, 100_000);
    assert_eq!(
        (restored.last_seq, restored.source_last_seq),
        (100_000, 100_000)
    );
    assert_same_log(&src, &dst);
    // A second restore into the same store has nothing to do.
    let noop = restore_once(&rt, &dst, server.url(), "ORDERS").unwrap();
    assert_eq!(noop.applied, 0);
    // The replica serves reads: the events are the source's.
    let reader = Reader::<common::Doc>::new(dst.clone());
    let txn = dst.read_txn().unwrap();
    assert_eq!(
        reader.read_all(&txn, 1).filter(|e| e.is_ok()).count(),
        100_000
    );
}

/// Replicates 60K events to `stream` through `url` with `run_once`, calling `fault` when the
/// cursor passes 10,000 and 30,000, then checks that the JetStream stream holds every event
/// once, in order (60,000 messages, last sequence 60,000), and that a store restored from
/// it (straight from the server at `server_url`) is the source, byte for byte.
fn replicate_through_faults(
    rt: &tokio::runtime::Runtime,
    url: String,
    server_url: String,
    stream: &str,
    mut fault: impl FnMut(),
) {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), None)).unwrap();
    fill(&src, 60_000);
    let replicator = Replicator::new(
        src.clone(),
        ReplicatorConfig::new(url, stream).ack_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let task = rt.spawn({
        let replicator = replicator.clone();
        async move { replicator.run_once().await }
    });
    // The faults follow the replicator's own cursor (a local read, checked every
    // millisecond), so they land while it is publishing, however fast the machine.
    for at in [10_000u64, 30_000] {
        wait_for_cursor(&src, &format!("nats:{stream}"), at);
        fault();
    }
    let report = common::bounded(rt, task).unwrap().unwrap();
    assert_eq!(report.position, 60_000);
    assert_eq!(
        common::bounded(rt, stream_state(&server_url, stream)),
        (60_000, 60_000)
    );
    // Every message is its event, once, in order: the restore checks each sequence.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    restore_once(rt, &dst, server_url, stream).unwrap();
    assert_same_log(&src, &dst);
}

#[test]
fn a_server_killed_mid_replication_loses_and_duplicates_nothing() {
    let mut server = NatsServer::start();
    let rt = runtime();
    let url = server.url();
    // SIGKILL twice while it is taking messages, and back each time.
    replicate_through_faults(&rt, url.clone(), url, "KILLED", || {
        server.kill();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
    });
}

#[test]
fn a_network_cut_twice_mid_replication_loses_and_duplicates_nothing() {
    let server = NatsServer::start();
    let rt = runtime();
    let proxy = common::Proxy::start(&rt, server.port);
    // The server stays up; the replicator loses its network for a second, twice.
    replicate_through_faults(&rt, proxy.url(), server.url(), "CUT", || {
        proxy.cut();
        std::thread::sleep(Duration::from_secs(1));
        proxy.heal();
    });
}

/// The child process of the next test: replicates its store until it is killed.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_replicator() {
    let (Ok(path), Ok(url)) = (
        std::env::var("VARVEDB_NATS_CHILD_STORE"),
        std::env::var("VARVEDB_NATS_CHILD_URL"),
    ) else {
        return;
    };
    let storage = Storage::open(config(path.as_ref(), None)).unwrap();
    let replicator = Replicator::new(
        storage,
        ReplicatorConfig::new(url, "CRASHED").max_in_flight(64),
    )
    .unwrap();
    // Killed by the test; if the test dies first, it stops on its own.
    runtime()
        .block_on(async {
            let deadline = tokio::time::sleep(Duration::from_secs(120));
            replicator.run_until(deadline).await
        })
        .unwrap();
}

#[test]
fn a_replicator_killed_between_publish_and_cursor_commit_publishes_nothing_twice() {
    let server = NatsServer::start();
    let src_dir = tempfile::tempdir().unwrap();
    {
        let src = Storage::open(config(src_dir.path(), None)).unwrap();
        fill(&src, 80_000);
    }
    let rt = runtime();
    let url = server.url();
    let mut ahead_of_cursor = 0;
    for at in [5_000u64, 25_000, 50_000] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "--ignored", "child_replicator", "--nocapture"])
            .env("VARVEDB_NATS_CHILD_STORE", src_dir.path())
            .env("VARVEDB_NATS_CHILD_URL", &url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = common::bounded(&rt, async {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                let js = async_nats::jetstream::new(client);
                let mut s = js.get_stream("CRASHED").await.ok()?;
                Some(s.info().await.ok()?.state.last_sequence)
            })
            .unwrap_or(0);
            if last >= at {
                break;
            }
            assert!(Instant::now() < deadline, "replication stalled at {last}");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let src = Storage::open(config(src_dir.path(), None)).unwrap();
        let cursor = src.consumer_position("nats:CRASHED").unwrap().unwrap_or(0);
        let (_, server_last) = common::bounded(&rt, stream_state(&url, "CRASHED"));
        assert!(cursor <= server_last);
        ahead_of_cursor += server_last - cursor;
    }
    // At least one kill left the server ahead of the cursor: published, not committed.
    assert!(ahead_of_cursor > 0);
    let src = Storage::open(config(src_dir.path(), None)).unwrap();
    let replicator =
        Replicator::new(src.clone(), ReplicatorConfig::new(url.clone(), "CRASHED")).unwrap();
    let report = common::bounded(&rt, replicator.run_once()).unwrap();
    assert_eq!(report.position, 80_000);
    assert_eq!(
        common::bounded(&rt, stream_state(&url, "CRASHED")),
        (80_000, 80_000)
    );

    // The cursor lost again (as if it had never been committed): the server's messages are
    // checked against the store and adopted, not published again.
    src.reset_consumer("nats:CRASHED", 70_000).unwrap();
    let report = common::bounded(&rt, replicator.run_once()).unwrap();
    assert_eq!(report.adopted, 10_000);
    assert_eq!((report.published, report.duplicates), (0, 0));
    assert_eq!(
        common::bounded(&rt, stream_state(&url, "CRASHED")),
        (80_000, 80_000)
    );

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    restore_once(&rt, &dst, url.clone(), "CRASHED").unwrap();
    assert_same_log(&src, &dst);
}

#[test]
fn a_resend_within_the_window_is_deduplicated_by_message_id() {
    let server = NatsServer::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), None)).unwrap();
    fill(&src, 10);
    let rt = runtime();
    let replicator =
        Replicator::new(src.clone(), ReplicatorConfig::new(server.url(), "DEDUP")).unwrap();
    common::bounded(&rt, replicator.run_once()).unwrap();
    // The same message id again, expecting the sequence it had: a duplicate, not stored.
    common::bounded(&rt, async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let ack = js
            .send_publish(
                "varve.1",
                async_nats::jetstream::message::PublishMessage::build()
                    .payload("x".into())
                    .message_id(varvedb_nats::message_id(7))
                    .expected_last_sequence(6),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(ack.duplicate);
        assert_eq!(ack.sequence, 7);
        // A new message that expects an old last sequence is refused.
        let refused = js
            .send_publish(
                "varve.1",
                async_nats::jetstream::message::PublishMessage::build()
                    .payload("x".into())
                    .message_id("another")
                    .expected_last_sequence(6),
            )
            .await
            .unwrap()
            .await;
        assert!(refused.is_err());
    });
    assert_eq!(
        common::bounded(&rt, stream_state(&server.url(), "DEDUP")),
        (10, 10)
    );
}

#[test]
fn a_following_replica_keeps_up_applies_whole_groups_and_follows_shreds() {
    let server = NatsServer::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), Some(KEY))).unwrap();
    let w = Writer::<common::Doc>::new(src.clone());
    w.append(500, ExpectedVersion::NoStream, &doc(1, 5000))
        .unwrap();
    w.append(501, ExpectedVersion::NoStream, &doc(2, 10))
        .unwrap();
    fill(&src, 2_000);
    let rt = runtime();
    let url = server.url();
    let replicator =
        Replicator::new(src.clone(), ReplicatorConfig::new(url.clone(), "FOLLOW")).unwrap();
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
    // The replica opened with the master key, so that a processor reads it as it fills (a
    // keyless replica is restored in the tool's test).
    let dst = Storage::open(config(dst_dir.path(), Some(KEY))).unwrap();
    struct Count(u64);
    impl varvedb::EventHandler<common::Doc> for Count {
        fn handle(
            &mut self,
            _: &varvedb::EventRef<'_, common::Doc>,
        ) -> Result<(), varvedb::HandlerError> {
            self.0 += 1;
            Ok(())
        }
    }
    let processing = rt.spawn({
        let processor = varvedb::Processor::new(
            Reader::<common::Doc>::new(dst.clone()),
            Count(0),
            "replica-reader",
            dst.subscribe(),
        );
        let stop = stopped(stop_rx.clone());
        async move { processor.run_until(stop).await }
    });
    let restoring = rt.spawn({
        let dst = dst.clone();
        let url = url.clone();
        let stop = stopped(stop_rx.clone());
        async move { restore(&dst, &RestoreConfig::new(url, "FOLLOW").follow(true), stop).await }
    });
    // The replica's last sequence, sampled while the source takes batches of 600 (several
    // packs each): it is always the end of a commit group, never inside an append.
    let mut seen = HashSet::new();
    for round in 0..20u64 {
        fill(&src, 600 + round);
        seen.insert(dst.last_seq(&dst.read_txn().unwrap()).unwrap());
    }
    src.shred_stream(501).unwrap();
    let source_last = src.last_seq(&src.read_txn().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = dst.last_seq(&dst.read_txn().unwrap()).unwrap();
        seen.insert(last);
        let shredded = dst
            .is_shredded(&dst.read_txn().unwrap(), 501)
            .unwrap_or(false);
        if last == source_last && shredded {
            break;
        }
        if restoring.is_finished() {
            panic!("{:?}", common::bounded(&rt, restoring));
        }
        assert!(
            Instant::now() < deadline,
            "the replica is at {last} of {source_last}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    stop_tx.send(true).unwrap();
    let report = common::bounded(&rt, replicating).unwrap().unwrap();
    assert_eq!(report.position, source_last);
    let restored = common::bounded(&rt, restoring).unwrap().unwrap();
    assert_eq!(restored.shredded, 1);
    // The processor on the replica took every event as it arrived.
    let counted = common::bounded(&rt, processing).unwrap().unwrap();
    assert!(counted.0 > 0);
    assert_eq!(
        dst.consumer_position("replica-reader").unwrap(),
        Some(source_last)
    );
    let ends: HashSet<u64> = {
        let txn = src.read_txn().unwrap();
        src.export_events(&txn, 1)
            .map(|e| e.unwrap())
            .filter(|e| e.ends_group)
            .map(|e| e.seq)
            .collect()
    };
    for s in &seen {
        assert!(
            *s == 0 || ends.contains(s),
            "the replica showed {s}, inside a group"
        );
    }
    assert_same_log(&src, &dst);
    // The replica reads with the master key, and the shred holds there.
    let reader = Reader::<common::Doc>::new(dst.clone());
    let txn = dst.read_txn().unwrap();
    let first = reader.get_by_version(&txn, 500, 1).unwrap().unwrap();
    assert_eq!(first.body.len(), 5000);
    assert!(matches!(
        reader.get_by_version(&txn, 501, 1),
        Err(varvedb::Error::Shredded { .. })
    ));
    // The replicated key entry is empty: the wrapped key is gone from the server too.
    let entry = common::bounded(&rt, async {
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let kv = js
            .get_key_value(varvedb_nats::keys_bucket("FOLLOW"))
            .await
            .unwrap();
        kv.get(format!("key.{:032x}", 501u128)).await.unwrap()
    });
    assert_eq!(entry.map(|v| v.len()), Some(0));
}

#[test]
fn a_stream_that_holds_another_store_s_log_is_refused() {
    let server = NatsServer::start();
    let rt = runtime();
    let a_dir = tempfile::tempdir().unwrap();
    let a = Storage::open(config(a_dir.path(), None)).unwrap();
    fill(&a, 200);
    common::bounded(
        &rt,
        Replicator::new(a, ReplicatorConfig::new(server.url(), "SHARED"))
            .unwrap()
            .run_once(),
    )
    .unwrap();
    // Another store, with more events of other content, under another cursor name.
    let b_dir = tempfile::tempdir().unwrap();
    let b = Storage::open(config(b_dir.path(), None)).unwrap();
    let w = Writer::<common::Doc>::new(b.clone());
    for i in 0..300 {
        w.append(9, ExpectedVersion::Auto, &doc(i, 3)).unwrap();
    }
    let err = common::bounded(
        &rt,
        Replicator::new(b.clone(), ReplicatorConfig::new(server.url(), "SHARED"))
            .unwrap()
            .run_once(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Diverged { seq: 1, .. }), "{err}");
    assert_eq!(
        common::bounded(&rt, stream_state(&server.url(), "SHARED")),
        (200, 200)
    );
    // A restore into a store that is not a prefix of the stream is refused as well.
    let err = restore_once(&rt, &b, server.url(), "SHARED").unwrap_err();
    assert!(matches!(err, Error::Diverged { .. }), "{err}");
    // And bad names are typed errors, before any connection.
    assert!(matches!(
        Replicator::new(b, ReplicatorConfig::new(server.url(), "no.dots")),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn a_stream_whose_subjects_overlap_another_is_refused_not_retried() {
    let server = NatsServer::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), None)).unwrap();
    fill(&storage, 10);
    let run = |stream: &str| {
        common::bounded(
            &rt,
            Replicator::new(storage.clone(), ReplicatorConfig::new(server.url(), stream))
                .unwrap()
                .run_once(),
        )
    };
    run("FIRST").unwrap();
    // Same subjects (`varve.>`), another stream: the server says no, and that is the answer.
    let err = run("SECOND").unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
}

#[test]
fn a_replica_stopped_across_a_shred_and_a_rotation_adopts_both_when_it_reconnects() {
    let server = NatsServer::start();
    let rt = runtime();
    let url = server.url();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), Some(KEY))).unwrap();
    let w = Writer::<common::Doc>::new(src.clone());
    for stream in [600u128, 601, 602] {
        w.append(stream, ExpectedVersion::NoStream, &doc(stream as u64, 100))
            .unwrap();
    }
    let replicator =
        Replicator::new(src.clone(), ReplicatorConfig::new(url.clone(), "AWAY")).unwrap();
    common::bounded(&rt, replicator.run_once()).unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    {
        // A keyless replica: it copies wrapped keys and unwraps nothing.
        let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
        restore_once(&rt, &dst, url.clone(), "AWAY").unwrap();
        assert_same_log(&src, &dst);
    }

    // While the replica is stopped: a shred, a rotation, and more events.
    let new_key = [43u8; 32];
    src.shred_stream(601).unwrap();
    src.rotate_master_key(new_key).unwrap();
    w.append(602, ExpectedVersion::Exact(1), &doc(7, 100))
        .unwrap();
    w.append(603, ExpectedVersion::NoStream, &doc(8, 100))
        .unwrap();
    common::bounded(&rt, replicator.run_once()).unwrap();

    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    let report = restore_once(&rt, &dst, url.clone(), "AWAY").unwrap();
    assert_eq!(report.shredded, 1);
    assert_same_log(&src, &dst);
    // The replica's keystore is the source's: the shredded mark, every rewrapped key and the
    // key check, so that the old master key opens nothing in it.
    let header = |s: &Storage| {
        let txn = s.read_txn().unwrap();
        let h = s.export_header(&txn).unwrap();
        (h.keys, h.key_check)
    };
    assert_eq!(header(&src), header(&dst));
    assert!(dst.is_shredded(&dst.read_txn().unwrap(), 601).unwrap());
    drop(dst);
    assert!(matches!(
        Storage::open(config(dst_dir.path(), Some(KEY))),
        Err(varvedb::Error::WrongMasterKey)
    ));
    let dst = Storage::open(config(dst_dir.path(), Some(new_key))).unwrap();
    let reader = Reader::<common::Doc>::new(dst.clone());
    let txn = dst.read_txn().unwrap();
    for (stream, version) in [(600u128, 1), (602, 2), (603, 1)] {
        assert!(
            reader
                .get_by_version(&txn, stream, version)
                .unwrap()
                .is_some(),
            "stream {stream}"
        );
    }
    assert!(matches!(
        reader.get_by_version(&txn, 601, 1),
        Err(varvedb::Error::Shredded { .. })
    ));
}

/// Restores 60K events from `stream` through `url` (which `fault` interrupts when the replica
/// passes 10,000 and 30,000 events), following it if `follow`, while the source appends 5,000
/// more in follow mode; the replica must end as the source, byte for byte.
fn restore_through_faults(
    rt: &tokio::runtime::Runtime,
    url: String,
    server_url: String,
    stream: &str,
    follow: bool,
    mut fault: impl FnMut(),
) {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), None)).unwrap();
    fill(&src, 60_000);
    let replicator = Replicator::new(
        src.clone(),
        ReplicatorConfig::new(server_url.clone(), stream),
    )
    .unwrap();
    common::bounded(rt, replicator.run_once()).unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let restoring = rt.spawn({
        let dst = dst.clone();
        let config = RestoreConfig::new(url, stream)
            .follow(follow)
            .connect_timeout(Duration::from_secs(2));
        async move {
            restore(&dst, &config, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
        }
    });
    // The faults follow the replica's own log, so that they land while it is restoring.
    for at in [10_000u64, 30_000] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = dst.last_seq(&dst.read_txn().unwrap()).unwrap();
            if last >= at {
                assert!(last < 60_000, "the restore finished before the fault");
                break;
            }
            assert!(Instant::now() < deadline, "the restore stalled at {last}");
            std::thread::sleep(Duration::from_millis(1));
        }
        fault();
    }
    if follow {
        // New events while the follower recovers: it must catch up with them too.
        fill(&src, 5_000);
        common::bounded(rt, replicator.run_once()).unwrap();
        let source_last = src.last_seq(&src.read_txn().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while dst.last_seq(&dst.read_txn().unwrap()).unwrap() < source_last {
            assert!(Instant::now() < deadline, "the follower did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop_tx.send(true).unwrap();
    }
    let report = common::bounded(rt, restoring).unwrap().unwrap();
    assert_eq!(
        report.last_seq,
        src.last_seq(&src.read_txn().unwrap()).unwrap()
    );
    assert_same_log(&src, &dst);
    assert!(dst.verify().unwrap().is_clean());
}

#[test]
fn a_restore_through_a_cut_network_resumes_and_loses_and_duplicates_nothing() {
    let server = NatsServer::start();
    let rt = runtime();
    let proxy = common::Proxy::start(&rt, server.port);
    restore_through_faults(&rt, proxy.url(), server.url(), "RCUT", false, || {
        proxy.cut();
        std::thread::sleep(Duration::from_secs(1));
        proxy.heal();
    });
}

#[test]
fn a_follower_whose_server_is_killed_twice_catches_up_byte_for_byte() {
    let mut server = NatsServer::start();
    let rt = runtime();
    let url = server.url();
    restore_through_faults(&rt, url.clone(), url, "RKILL", true, || {
        server.kill();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
    });
}

#[test]
fn a_follower_cut_from_the_network_catches_up_byte_for_byte() {
    let server = NatsServer::start();
    let rt = runtime();
    let proxy = common::Proxy::start(&rt, server.port);
    restore_through_faults(&rt, proxy.url(), server.url(), "FCUT", true, || {
        proxy.cut();
        std::thread::sleep(Duration::from_secs(1));
        proxy.heal();
    });
}
