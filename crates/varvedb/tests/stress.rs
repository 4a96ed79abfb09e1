//! A concurrency stress test: writers (single events, batches, multi-stream appends, event ids
//! with retries), readers checking every snapshot, a subscription, an exactly-once projection
//! and, in an encrypted store, a shredder, all at once for a bounded time. At the end every
//! acknowledged event is there, the log and the streams are gap-free, `verify` is clean, the
//! subscription saw every event once and in order, and the projection's model equals a recount.
//!
//! `VARVEDB_STRESS_SECS` sets the time (2 s by default; the long run of `docs/reliability.md`
//! uses 300).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use varvedb::{
    Append, AppendOptions, Error, EventId, ExpectedVersion, HandlerError, Model, OwnedEvent,
    Projection, ProjectionHandler, Reader, Storage, StorageConfig, Subscription, SubscriptionItem,
    Writer,
};

fn seconds() -> Duration {
    Duration::from_secs_f64(
        std::env::var("VARVEDB_STRESS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    )
}

struct Counts;

impl ProjectionHandler<Deposited> for Counts {
    fn apply(
        &mut self,
        event: &OwnedEvent<Deposited>,
        model: &mut Model<'_, '_>,
    ) -> Result<(), HandlerError> {
        let key = event.stream_id.to_be_bytes();
        let n = match model.get(&key)? {
            Some(v) => u64::from_le_bytes(v.try_into()?),
            None => 0,
        };
        model.put(&key, &(n + event.amount.to_native()).to_le_bytes())?;
        Ok(())
    }
}

/// Checks one snapshot: the log is gap-free up to its end, and each stream read back has
/// versions 1..=head.
/// Checks one snapshot: the log gap-free to its last sequence, and `stream` in version order up
/// to its head. Returns the events of `stream` read.
fn check_snapshot(storage: &Storage, reader: &Reader<Deposited>, stream: u128) -> u32 {
    let txn = storage.read_txn().unwrap();
    let last = storage.last_seq(&txn).unwrap();
    let raw = storage.raw_reader();
    let mut expect = 1;
    for e in raw.read_all(&txn, 1) {
        assert_eq!(e.unwrap().seq(), expect);
        expect += 1;
    }
    assert_eq!(
        expect,
        last + 1,
        "snapshot log ends at {}, last_seq {last}",
        expect - 1
    );
    let head = storage.stream_version(&txn, stream).unwrap();
    let mut v = 0;
    for e in reader.read_stream(&txn, stream, 1) {
        match e {
            Ok(e) => {
                v += 1;
                assert_eq!(e.version(), v);
            }
            Err(Error::Shredded { .. }) => return v,
            Err(e) => panic!("stream {stream}: {e}"),
        }
    }
    assert_eq!(v, head, "stream {stream}");
    v
}

fn run(encrypted: bool) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([3; 32]),
        ..Default::default()
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + seconds();
    // Acknowledged events: seq -> (stream, version, amount).
    let acked = Arc::new(std::sync::Mutex::new(
        HashMap::<u64, (u128, u32, u64)>::new(),
    ));
    let shredded = Arc::new(std::sync::Mutex::new(HashSet::<u128>::new()));
    let rt = runtime();

    // The projection (plaintext: a shredded event would stop it) and a subscription.
    let projection = (!encrypted).then(|| {
        let p = Projection::new(Reader::<Deposited>::new(storage.clone()), Counts, "stress")
            .batch_events_max(50);
        let stop = Arc::clone(&stop);
        rt.spawn(p.run_until(async move {
            while !stop.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }))
    });
    // Set once every writer has returned: the subscription then reads to the end.
    let done = Arc::new(AtomicBool::new(false));
    let subscription = {
        let mut sub = Subscription::all(Reader::<Deposited>::new(storage.clone()), 1);
        let stop = Arc::clone(&done);
        let storage = storage.clone();
        rt.spawn(async move {
            let mut seen = Vec::new();
            loop {
                let head = storage.last_seq(&storage.read_txn().unwrap()).unwrap();
                if stop.load(Ordering::Acquire) && seen.last().copied().unwrap_or(0) >= head {
                    return seen;
                }
                match tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
                    Ok(Ok(SubscriptionItem::Event(e))) => seen.push(e.seq),
                    Ok(Ok(SubscriptionItem::CaughtUp)) | Err(_) => {}
                    // A shredded event cannot be delivered: it is reported, and skipped.
                    Ok(Err(Error::Shredded { seq, .. })) => seen.push(seq),
                    Ok(Err(e)) => panic!("subscription: {e}"),
                }
            }
        })
    };

    // Each writer's current `i`, so that the readers read the streams being written now.
    let current: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    // Events the readers read back: of the writers' current streams, and of shared stream 7.
    let read_back = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    std::thread::scope(|s| {
        // Writers: each its own streams (so that its expectations are exact), plus a shared one.
        for w in 0..4u128 {
            let storage = storage.clone();
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            let current = Arc::clone(&current);
            s.spawn(move || {
                let writer = Writer::<Deposited>::new(storage);
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    i += 1;
                    current[w as usize].store(i, Ordering::Release);
                    // Streams rotate every 20 appends, so that old ones can be shredded.
                    // Each writer's streams in a range of their own, however long the run.
                    let own = ((w + 1) << 40) | u128::from(i / 20);
                    let answers = match i % 4 {
                        0 => writer
                            .append_batch(own, ExpectedVersion::Auto, &[deposit(i), deposit(i + 1)])
                            .map(|a| a.into_iter().zip([i, i + 1]).collect::<Vec<_>>()),
                        1 => {
                            writer
                                .commit(
                                    Append::stream(own, ExpectedVersion::Auto, &[deposit(i)][..])
                                        .and(7, ExpectedVersion::Auto, &[deposit(i + 2)][..]),
                                )
                                .map(|a| vec![(a[0], i), (a[1], i + 2)])
                        }
                        2 => {
                            // An append with an id, sent twice: one event, the same answer.
                            let id = EventId::from_u128((w << 64 | u128::from(i)) + 1);
                            let send = || {
                                writer
                                    .commit(
                                        Append::event(own, ExpectedVersion::Auto, &deposit(i))
                                            .options(AppendOptions::new().event_id(id)),
                                    )
                                    .map(|v| v[0])
                            };
                            let first = send().unwrap();
                            assert_eq!(send().unwrap(), first, "the retry's answer");
                            Ok(vec![(first, i)])
                        }
                        _ => writer
                            .append(own, ExpectedVersion::Auto, &deposit(i))
                            .map(|a| vec![(a, i)]),
                    };
                    let streams = match i % 4 {
                        1 => vec![own, 7],
                        0 => vec![own, own],
                        _ => vec![own],
                    };
                    let mut acked = acked.lock().unwrap();
                    for ((a, amount), stream) in answers.unwrap().into_iter().zip(streams) {
                        assert!(acked.insert(a.seq, (stream, a.version, amount)).is_none());
                    }
                }
            });
        }
        // Readers: every snapshot is consistent.
        for r in 0..2u128 {
            let storage = storage.clone();
            let stop = Arc::clone(&stop);
            let (current, read_back) = (Arc::clone(&current), Arc::clone(&read_back));
            s.spawn(move || {
                let reader = Reader::<Deposited>::new(storage.clone());
                let mut k = 0u128;
                while !stop.load(Ordering::Acquire) {
                    k += 1;
                    // Every other check: the stream a writer appends to now (it changes every
                    // 20 appends), else the stream every writer shares.
                    let (stream, kind) = if k.is_multiple_of(2) {
                        let w = (k / 2 + r) % 4;
                        let i = current[w as usize].load(Ordering::Acquire);
                        (((w + 1) << 40) | u128::from(i / 20), 0)
                    } else {
                        (7, 1)
                    };
                    let n = check_snapshot(&storage, &reader, stream);
                    read_back[kind].fetch_add(u64::from(n), Ordering::Relaxed);
                }
            });
        }
        // The shredder: in the encrypted store, streams the writers have moved past.
        if encrypted {
            let storage = storage.clone();
            let stop = Arc::clone(&stop);
            let shredded = Arc::clone(&shredded);
            s.spawn(move || {
                // Per writer, the next of its streams to shred.
                let mut next = [0u128; 4];
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                    for (w, next) in next.iter_mut().enumerate() {
                        let base = (w as u128 + 1) << 40;
                        let txn = storage.read_txn().unwrap();
                        let newest = (0..)
                            .take_while(|r| storage.stream_version(&txn, base + r).unwrap() > 0)
                            .last()
                            .unwrap_or(0);
                        drop(txn);
                        // A stream two rotations back is never appended to again.
                        if *next + 2 <= newest {
                            let candidate = base + *next;
                            match storage.shred_stream(candidate) {
                                Ok(_) => {
                                    shredded.lock().unwrap().insert(candidate);
                                }
                                Err(
                                    Error::StreamNotFound { .. } | Error::StreamNotEncrypted { .. },
                                ) => {}
                                Err(e) => panic!("shred {candidate}: {e}"),
                            }
                            *next += 1;
                        }
                    }
                }
            });
        }
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Release);
    });
    done.store(true, Ordering::Release);

    let seen = rt.block_on(subscription).unwrap();
    if let Some(p) = projection {
        rt.block_on(p).unwrap().unwrap();
    }
    let acked = acked.lock().unwrap();
    let shredded = shredded.lock().unwrap();
    assert!(
        acked.len() > 100,
        "only {} events acknowledged",
        acked.len()
    );
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let last = storage.last_seq(&txn).unwrap();
    assert_eq!(
        acked.len() as u64,
        last,
        "every event appended was acknowledged once"
    );
    // Every acknowledged event, as appended.
    for (&seq, &(stream, version, amount)) in acked.iter() {
        match reader.get(&txn, seq) {
            Ok(Some(e)) => {
                assert_eq!((e.stream_id(), e.version()), (stream, version), "seq {seq}");
                assert_eq!(e.amount, amount, "seq {seq}");
            }
            Err(Error::Shredded { .. }) if shredded.contains(&stream) => {}
            other => panic!("seq {seq}: {:?}", other.map(|e| e.map(|e| e.seq()))),
        }
    }
    // The subscription saw the whole log, once and in order.
    let in_order = seen.iter().zip(1..).all(|(s, n)| *s == n);
    assert!(
        in_order && seen.len() as u64 == last,
        "the subscription saw {} events for a log of {last} (in order: {in_order})",
        seen.len()
    );
    // The projection's model equals a recount of the log up to its cursor.
    assert!(
        read_back[0].load(Ordering::Relaxed) > 0 && read_back[1].load(Ordering::Relaxed) > 0,
        "the readers read back no event of the streams being written"
    );
    if !encrypted {
        let position = storage.consumer_position("stress").unwrap().unwrap_or(0);
        assert!(
            position > 0,
            "the projection never checkpointed: nothing to recount"
        );
        let mut sums: HashMap<u128, u64> = HashMap::new();
        for e in reader.read_all(&txn, 1).take(position as usize) {
            let e = e.unwrap();
            *sums.entry(e.stream_id()).or_default() += e.amount.to_native();
        }
        for (stream, sum) in &sums {
            let model = storage
                .projection_get(&txn, "stress", &stream.to_be_bytes())
                .unwrap()
                .map(|v| u64::from_le_bytes(v.try_into().unwrap()));
            assert_eq!(model, Some(*sum), "stream {stream}");
        }
    }
    drop(txn);
    let report = storage.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    if encrypted {
        assert!(!shredded.is_empty(), "the shredder never shredded");
    }
    // The figures of a long run (`--nocapture`).
    println!(
        "stress ({}): {} events acknowledged and found, {} delivered to the subscription in order, {} streams shredded, verify clean",
        if encrypted { "encrypted" } else { "plaintext" },
        acked.len(),
        seen.len(),
        shredded.len()
    );
}

#[test]
fn writers_readers_a_subscription_and_a_projection_at_once() {
    run(false);
}

#[test]
fn writers_readers_a_subscription_and_a_shredder_in_an_encrypted_store() {
    run(true);
}
