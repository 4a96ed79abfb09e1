//! Tags, queries and conditional appends (Dynamic Consistency Boundaries).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};

use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{
    Append, AppendOptions, Error, ExpectedVersion, Query, QueryItem, Reader, Storage,
    StorageConfig, Writer,
};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
#[rkyv(derive(Debug))]
enum Bank {
    Opened { owner: u64 },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

fn tagged(tags: &[&str]) -> AppendOptions {
    AppendOptions::new().tags(tags.iter().copied())
}

/// Appends one event with tags to `stream`; returns its sequence.
fn put(w: &Writer<Bank>, stream: u128, event: Bank, tags: &[&str]) -> u64 {
    w.commit(Append::event(stream, ExpectedVersion::Auto, &event).options(tagged(tags)))
        .map(|v| v[0])
        .unwrap()
        .seq
}

fn seqs(storage: &Storage, query: &Query, from: u64) -> Vec<u64> {
    let reader = Reader::<Bank>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    reader
        .read_query(&txn, query, from)
        .map(|e| e.unwrap().seq())
        .collect()
}

#[test]
fn tags_are_stored_read_back_and_queried_by_type_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let w = Writer::<Bank>::new(storage.clone());
    let s1 = put(
        &w,
        1,
        Bank::Opened { owner: 7 },
        &["account:1", "customer:7"],
    );
    let s2 = put(&w, 1, Bank::Deposited { cents: 5 }, &["account:1"]);
    let s3 = put(
        &w,
        2,
        Bank::Opened { owner: 7 },
        &["account:2", "customer:7"],
    );
    let s4 = put(&w, 2, Bank::Withdrawn { cents: 1 }, &["account:2"]);
    let s5 = put(&w, 1, Bank::Withdrawn { cents: 2 }, &["account:1"]);
    let s6 = put(&w, 3, Bank::Deposited { cents: 9 }, &[]);

    let reader = Reader::<Bank>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let e = reader.get(&txn, s1).unwrap().unwrap();
    assert_eq!(e.tags().collect::<Vec<_>>(), ["account:1", "customer:7"]);
    let raw = storage.raw_reader().get(&txn, s3).unwrap().unwrap();
    assert_eq!(raw.tags().collect::<Vec<_>>(), ["account:2", "customer:7"]);
    assert_eq!(reader.get(&txn, s6).unwrap().unwrap().tags().count(), 0);

    // The example: OR between items, AND within one (slices or arrays alike).
    let (names, tags): (&[&str], &[&str]) = (&["Deposited", "Withdrawn"], &["account:1"]);
    let money = Query::new().types(names).tags(tags);
    assert_eq!(
        money,
        Query::new()
            .types(["Deposited", "Withdrawn"])
            .tags(vec!["account:1".to_string()])
    );
    assert_eq!(seqs(&storage, &money, 0), [s2, s5]);
    // Every event of a tag, of any type, in global order.
    assert_eq!(
        seqs(&storage, &Query::new().tags(["account:2"]), 0),
        [s3, s4]
    );
    // Two tags: both needed.
    assert_eq!(
        seqs(&storage, &Query::new().tags(["customer:7", "account:2"]), 0),
        [s3]
    );
    // Two items: either; an event matching both comes once.
    let either = Query::new()
        .tags(["customer:7"])
        .or()
        .types(["Withdrawn"])
        .tags(["account:2"]);
    assert_eq!(seqs(&storage, &either, 0), [s1, s3, s4]);
    // From a position on.
    assert_eq!(seqs(&storage, &either, s3 + 1), [s4]);
    assert_eq!(seqs(&storage, &money, s5), [s5]);
    // Types only: read from the log.
    assert_eq!(
        seqs(&storage, &Query::new().types(["Deposited"]), 0),
        [s2, s6]
    );
    // Everything.
    assert_eq!(seqs(&storage, &Query::all(), 0).len(), 6);
    assert_eq!(seqs(&storage, &Query::new(), s6), [s6]);
    // A type the store never saw, an unknown tag: nothing.
    assert!(seqs(&storage, &Query::new().types(["Closed"]), 0).is_empty());
    assert!(seqs(&storage, &Query::new().tags(["account:9"]), 0).is_empty());
    assert!(
        seqs(
            &storage,
            &Query::new().types(["Closed"]).tags(["account:1"]),
            0
        )
        .is_empty()
    );

    // Zero-copy: the payload points into the map.
    let first = reader.read_query(&txn, &money, 0).next().unwrap().unwrap();
    assert!(first.is_zero_copy());
    assert_eq!(first.deserialize().unwrap(), Bank::Deposited { cents: 5 });
    drop(txn);

    // The index survives a reopen and verifies.
    drop(reader);
    drop(w);
    storage.close().unwrap();
    let storage = common::open(&dir);
    assert_eq!(seqs(&storage, &money, 0), [s2, s5]);
    let report = storage.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.tags, 7);
}

#[test]
fn a_conditional_append_fails_when_a_matching_event_follows_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let w = Writer::<Bank>::new(storage.clone());
    let query = Query::new()
        .types(["Deposited", "Withdrawn"])
        .tags(["account:1"]);
    let opts = [tagged(&["account:1"])];
    let append = |after: Option<u64>, cents: u64| {
        w.commit(
            Append::stream(1, ExpectedVersion::Auto, &[Bank::Deposited { cents }])
                .options(&opts)
                .when(&query, after),
        )
    };
    // Nothing matches yet: appends.
    let a = append(None, 1).unwrap()[0].seq;
    // A decision that saw nothing is stale now.
    let err = append(None, 2).unwrap_err();
    assert!(
        matches!(err, Error::ConditionFailed { after: None, seq } if seq == a),
        "{err:?}"
    );
    assert_eq!(err.written(), varvedb::Written::No);
    // One that saw `a` appends.
    let b = append(Some(a), 3).unwrap()[0].seq;
    // Events that do not match the query do not fail it: another account, another type.
    put(&w, 2, Bank::Deposited { cents: 4 }, &["account:2"]);
    put(&w, 1, Bank::Opened { owner: 1 }, &["account:1"]);
    put(&w, 1, Bank::Deposited { cents: 4 }, &[]);
    let c = append(Some(b), 5).unwrap()[0].seq;
    assert!(matches!(
        append(Some(b), 6),
        Err(Error::ConditionFailed { seq, after: Some(_) }) if seq == c
    ));
    // Nothing of the failed appends was written.
    let txn = storage.read_txn().unwrap();
    let cents: Vec<u64> = Reader::<Bank>::new(storage.clone())
        .read_query(&txn, &query, 0)
        .map(|e| match e.unwrap().deserialize().unwrap() {
            Bank::Deposited { cents } => cents,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(cents, [1, 3, 5]);
    drop(txn);

    // A condition without tags reads the log.
    let any_withdrawal = Query::new().types(["Withdrawn"]);
    let last = storage.last_seq(&storage.read_txn().unwrap()).unwrap();
    let w1 = w
        .commit(
            Append::stream(5, ExpectedVersion::Auto, &[Bank::Withdrawn { cents: 1 }])
                .options(&[])
                .when(&any_withdrawal, Some(last)),
        )
        .unwrap()[0]
        .seq;
    assert!(matches!(
        w.commit(Append::stream(5, ExpectedVersion::Auto, &[Bank::Withdrawn { cents: 1 }]).options(&[]).when(&any_withdrawal, Some(last))),
        Err(Error::ConditionFailed { seq, .. }) if seq == w1
    ));
    // The stream's expectation still applies beside the condition.
    assert!(matches!(
        w.commit(
            Append::stream(
                1,
                ExpectedVersion::Exact(0),
                &[Bank::Deposited { cents: 1 }]
            )
            .options(&opts)
            .when(&query, Some(u64::MAX))
        ),
        Err(Error::ConcurrencyConflict { .. })
    ));
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn a_retried_conditional_append_gets_its_original_answer() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let w = Writer::<Bank>::new(storage.clone());
    let query = Query::new().tags(["order:1"]);
    let opts = [tagged(&["order:1"]).event_id(varvedb::EventId::from_u128(77))];
    let events = [Bank::Opened { owner: 1 }];
    let first = w
        .commit(
            Append::stream(9, ExpectedVersion::Auto, &events)
                .options(&opts)
                .when(&query, None),
        )
        .unwrap();
    // Its own event matches the query now; a retry with the same ids is still the same append.
    let again = w
        .commit(
            Append::stream(9, ExpectedVersion::Auto, &events)
                .options(&opts)
                .when(&query, None),
        )
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(storage.last_seq(&storage.read_txn().unwrap()).unwrap(), 1);
}

/// Eight threads enroll students in a course of ten seats, each deciding on what it read: the
/// DCB pattern. The condition is what keeps the course from overfilling; without the check in
/// the commit, racing decisions that all saw nine seats taken would all append.
#[test]
fn racing_decisions_never_overfill_a_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    const SEATS: usize = 10;
    const THREADS: usize = 8;
    let barrier = Arc::new(Barrier::new(THREADS));
    let conflicts: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let storage = storage.clone();
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    let w = Writer::<Bank>::new(storage.clone());
                    let reader = Reader::<Bank>::new(storage.clone());
                    let query = Query::new().types(["Opened"]).tags(["course:1"]);
                    barrier.wait();
                    let mut conflicts = 0;
                    for attempt in 0..40u64 {
                        let (taken, position) = {
                            let txn = storage.read_txn().unwrap();
                            let position = storage.last_seq(&txn).unwrap();
                            let taken = reader.read_query(&txn, &query, 0).count();
                            (taken, position)
                        };
                        if taken >= SEATS {
                            break;
                        }
                        let student = format!("student:{t}-{attempt}");
                        let opts = [tagged(&["course:1", &student])];
                        match w.commit(
                            Append::stream(
                                u128::from(t as u64 + 100),
                                ExpectedVersion::Auto,
                                &[Bank::Opened { owner: attempt }],
                            )
                            .options(&opts)
                            .when(&query, Some(position)),
                        ) {
                            Ok(_) => {}
                            Err(Error::ConditionFailed { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    conflicts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let query = Query::new().types(["Opened"]).tags(["course:1"]);
    assert_eq!(seqs(&storage, &query, 0).len(), SEATS);
    // With eight racing threads some decisions must have been stale (the test's premise).
    assert!(conflicts > 0);
}

#[test]
fn bad_tags_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let w = Writer::<Bank>::new(storage.clone());
    for opts in [
        AppendOptions::new().tag(""),
        AppendOptions::new().tag("x".repeat(256)),
        AppendOptions::new().tags((0..256).map(|i| i.to_string())),
    ] {
        let err = w
            .commit(
                Append::event(1, ExpectedVersion::Auto, &Bank::Opened { owner: 1 }).options(opts),
            )
            .map(|v| v[0])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidTag { .. }), "{err:?}");
    }
    // A tag given twice is kept once; 255 tags of 255 bytes fit.
    let opts = AppendOptions::new().tag("a").tag("a");
    assert_eq!(opts.get_tags(), ["a"]);
    let many: Vec<String> = (0..255).map(|i| format!("{i:0>255}")).collect();
    let seq = w
        .commit(
            Append::event(1, ExpectedVersion::Auto, &Bank::Opened { owner: 1 })
                .options(AppendOptions::new().tags(many.clone())),
        )
        .map(|v| v[0])
        .unwrap()
        .seq;
    assert_eq!(seq, 1);
    let q = Query::new().tags([&many[254], &many[0]]);
    assert_eq!(seqs(&storage, &q, 0), [1]);
    // A query tag longer than any stored one matches nothing, not the stored tag it begins with.
    let longer = format!("{}x", many[0]);
    assert!(seqs(&storage, &Query::new().tags([&longer]), 0).is_empty());
    let cond = w.commit(
        Append::stream(1, ExpectedVersion::Auto, &[Bank::Opened { owner: 2 }])
            .options(&[])
            .when(&Query::new().tags([&longer]), None),
    );
    assert_eq!(cond.unwrap()[0].seq, 2);
}

#[test]
fn an_encrypted_store_indexes_tags_and_shreds_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().into(),
        encryption_enabled: true,
        master_key: Some([9; 32]),
        ..Default::default()
    };
    let storage = Storage::open(config).unwrap();
    let w = Writer::<Bank>::new(storage.clone());
    let a = put(&w, 1, Bank::Deposited { cents: 1 }, &["account:1"]);
    let b = put(
        &w,
        2,
        Bank::Deposited { cents: 2 },
        &["account:1", "account:2"],
    );
    let q = Query::new().types(["Deposited"]).tags(["account:1"]);
    assert_eq!(seqs(&storage, &q, 0), [a, b]);
    let txn = storage.read_txn().unwrap();
    let e = Reader::<Bank>::new(storage.clone())
        .read_query(&txn, &Query::new().tags(["account:2"]), 0)
        .next()
        .unwrap()
        .unwrap();
    assert!(e.is_encrypted());
    assert_eq!(e.deserialize().unwrap(), Bank::Deposited { cents: 2 });
    drop(txn);
    storage.shred_stream(1).unwrap();
    let txn = storage.read_txn().unwrap();
    let raw: Vec<_> = storage
        .raw_reader()
        .read_query(&txn, &q, 0)
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(raw.len(), 2);
    assert!(raw[0].is_shredded());
    assert_eq!(raw[0].tags().collect::<Vec<_>>(), ["account:1"]);
    drop(txn);
    assert!(storage.verify().unwrap().is_clean());
}

/// Random logs and random queries: the index's answers equal a filter over every event, for
/// reads and for the condition.
#[test]
fn queries_agree_with_a_filter_over_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let w = Writer::<Bank>::new(storage.clone());
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let tags = ["a", "b", "c", "d", "e"];
    let names = ["Opened", "Deposited", "Withdrawn"];
    let mut log: Vec<(u64, &str, Vec<&str>)> = Vec::new();
    // In batches, so that groups span packs and requests.
    for _ in 0..120 {
        let n = 1 + next(6) as usize;
        let mut events = Vec::new();
        let mut opts = Vec::new();
        let mut meta = Vec::new();
        for _ in 0..n {
            let event = match next(3) {
                0 => Bank::Opened { owner: 1 },
                1 => Bank::Deposited { cents: 1 },
                _ => Bank::Withdrawn { cents: 1 },
            };
            let name = match event {
                Bank::Opened { .. } => names[0],
                Bank::Deposited { .. } => names[1],
                Bank::Withdrawn { .. } => names[2],
            };
            let mine: Vec<&str> = tags.iter().copied().filter(|_| next(3) == 0).collect();
            opts.push(tagged(&mine));
            events.push(event);
            meta.push((name, mine));
        }
        let done = w
            .commit(
                Append::stream(next(4) as u128 + 1, ExpectedVersion::Auto, &events).options(&opts),
            )
            .unwrap();
        for (a, (name, mine)) in done.iter().zip(meta) {
            log.push((a.seq, name, mine));
        }
    }
    let last = log.last().unwrap().0;
    for _ in 0..300 {
        let mut query = Query::from_items([]);
        for _ in 0..1 + next(3) {
            let mut item = QueryItem::new();
            for name in names {
                if next(3) == 0 {
                    item = item.types([name]);
                }
            }
            for tag in tags {
                if next(4) == 0 {
                    item = item.tags([tag]);
                }
            }
            query = query.item(item);
        }
        let from = next(last + 2);
        let expected: Vec<u64> = log
            .iter()
            .filter(|(seq, name, mine)| *seq >= from && query.matches(name, mine.iter().copied()))
            .map(|(seq, _, _)| *seq)
            .collect();
        assert_eq!(
            seqs(&storage, &query, from),
            expected,
            "{query:?} from {from}"
        );
        // The condition: fails naming the first match after the position, else appends.
        let after = from.checked_sub(1);
        let got = w.commit(
            Append::stream(99, ExpectedVersion::Auto, &[Bank::Opened { owner: 0 }])
                .options(&[tagged(&["z"])])
                .when(&query, after),
        );
        match (got, expected.first()) {
            (Err(Error::ConditionFailed { seq, .. }), Some(first)) => assert_eq!(seq, *first),
            (Ok(done), None) => log.push((done[0].seq, "Opened", vec!["z"])),
            (other, first) => panic!("{query:?} after {after:?}: {other:?}, expected {first:?}"),
        }
    }
    assert!(storage.verify().unwrap().is_clean());
}
