//! Catch-up subscriptions: from a position, through the backlog, `CaughtUp` once, then live;
//! nothing skipped or repeated; filters by stream and by type; one stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::Duration;

use common::*;
use varvedb::{ExpectedVersion, Reader, Subscription, SubscriptionItem, Writer};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Other {
    x: u64,
}

#[test]
fn a_subscription_catches_up_then_follows_live_appends_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    // More than a batch of backlog.
    let backlog = varvedb::SUBSCRIPTION_BATCH_EVENTS as u64 * 2 + 7;
    for chunk in 0..backlog / 7 {
        let batch: Vec<_> = (0..7).map(|k| deposit(chunk * 7 + k + 1)).collect();
        writer
            .append_batch(chunk as u128 % 5, ExpectedVersion::Auto, &batch)
            .unwrap();
    }
    let backlog = storage.last_seq(&storage.read_txn().unwrap()).unwrap();
    let rt = runtime();
    let mut sub = Subscription::all(Reader::<Deposited>::new(storage.clone()), 1);
    let live = {
        let writer = writer.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            for i in 0..100 {
                writer
                    .append(9, ExpectedVersion::Auto, &deposit(10_000 + i))
                    .unwrap();
            }
        })
    };
    let (seqs, caught_up_at) = rt.block_on(async {
        let mut seqs = Vec::new();
        let mut caught_up_at = None;
        while seqs.len() < backlog as usize + 100 {
            match tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .expect("the subscription stalled")
                .unwrap()
            {
                SubscriptionItem::Event(e) => seqs.push(e.seq),
                SubscriptionItem::CaughtUp => {
                    assert!(caught_up_at.is_none(), "CaughtUp is yielded once");
                    caught_up_at = Some(seqs.len());
                }
            }
        }
        (seqs, caught_up_at)
    });
    live.join().unwrap();
    assert_eq!(
        seqs,
        (1..=backlog + 100).collect::<Vec<_>>(),
        "nothing skipped or repeated"
    );
    let at = caught_up_at.unwrap() as u64;
    assert!(
        at >= backlog,
        "caught up only after the backlog ({at} < {backlog})"
    );
}

#[test]
fn filters_by_stream_and_type_and_one_stream_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let other = Writer::<Other>::new(storage.clone());
    for i in 1..=30u64 {
        writer
            .append(u128::from(i % 3), ExpectedVersion::Auto, &deposit(i))
            .unwrap();
        other
            .append(7, ExpectedVersion::Auto, &Other { x: i })
            .unwrap();
    }
    let rt = runtime();
    let collect = |mut sub: Subscription<Deposited>| -> Vec<(u128, u64)> {
        rt.block_on(async {
            let mut out = Vec::new();
            loop {
                match sub.next().await.unwrap() {
                    SubscriptionItem::Event(e) => out.push((e.stream_id, e.amount.to_native())),
                    SubscriptionItem::CaughtUp => return out,
                }
            }
        })
    };
    let reader = Reader::<Deposited>::new(storage.clone());
    let filtered = collect(Subscription::all(reader.clone(), 1).streams([1, 2]));
    assert_eq!(filtered.len(), 20);
    assert!(filtered.iter().all(|(s, _)| *s != 0));
    // The Other events are another type: a Deposited subscription passes over them.
    let all = collect(Subscription::all(reader.clone(), 1));
    assert_eq!(all.len(), 30);
    let typed = collect(Subscription::all(reader.clone(), 1).event_types(["Nope"]));
    assert!(typed.is_empty());
    let typed = collect(Subscription::all(reader.clone(), 1).event_types(["Deposited"]));
    assert_eq!(typed.len(), 30);
    let one = collect(Subscription::stream(reader.clone(), 2, 4));
    assert_eq!(
        one.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        [11, 14, 17, 20, 23, 26, 29]
    );
    let from = collect(Subscription::all(reader, 50));
    assert_eq!(from.len(), 5, "seqs 50..=60 hold five deposits");
}

/// `next()` dropped mid-read (as the losing branch of a `select!`, which is how processors
/// use it) must neither restart the subscription nor skip: every event exactly once, in order.
#[test]
fn a_cancelled_next_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let total = varvedb::SUBSCRIPTION_BATCH_EVENTS as u64 * 3 + 11;
    let batch: Vec<_> = (1..=total).map(deposit).collect();
    writer
        .append_batch(4, ExpectedVersion::NoStream, &batch)
        .unwrap();
    let rt = runtime();
    let mut sub = Subscription::all(Reader::<Deposited>::new(storage.clone()), 1);
    let (seqs, cancelled) = rt.block_on(async {
        let (mut seqs, mut cancelled) = (Vec::new(), 0u32);
        let mut round = 0u32;
        while (seqs.len() as u64) < total {
            round += 1;
            assert!(
                round < 100_000,
                "the subscription stalled at {} events",
                seqs.len()
            );
            // Each call is first polled once and dropped: a call that has to read is dropped
            // during its read. Then the same call is let finish.
            let item = match tokio::select! {
                biased;
                item = sub.next() => Some(item),
                () = std::future::ready(()) => None,
            } {
                Some(item) => Some(item),
                None => {
                    cancelled += 1;
                    Some(
                        tokio::time::timeout(Duration::from_secs(20), sub.next())
                            .await
                            .expect("the subscription stalled"),
                    )
                }
            };
            match item.map(Result::unwrap) {
                Some(SubscriptionItem::Event(e)) => seqs.push(e.seq),
                Some(SubscriptionItem::CaughtUp) | None => {}
            }
        }
        (seqs, cancelled)
    });
    assert!(
        cancelled > 0,
        "no call was cancelled: the test tested nothing"
    );
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
}
