//! The UmaDB peer keeps its promises: optimistic concurrency through append conditions, every
//! concurrent append acknowledged and kept (through its writer thread), and reads that find
//! what was written, across a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use varvedb_bench::event::event;
use varvedb_bench::peers::UmaDb;
use varvedb_bench::{BenchError, BenchStore};

fn is_conflict(r: Result<(), BenchError>) -> bool {
    matches!(r, Err(BenchError::Failed(e)) if e.contains("conflict"))
}

#[test]
fn a_wrong_expected_version_is_a_conflict_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = UmaDb::open(dir.path()).unwrap();
    store.append(1, 0, &[event(0), event(1)]).unwrap();
    store.append(2, 0, &[event(2)]).unwrap();
    // Stream 1 is at version 2: claiming 0, 1 or 3 fails.
    for wrong in [0, 1, 3] {
        assert!(is_conflict(store.append(1, wrong, &[event(9)])), "{wrong}");
    }
    // A multi-stream append with one stale version fails whole.
    let stale = [(1, 2, event(3)), (2, 0, event(4))];
    assert!(is_conflict(store.append_multi(&stale)));
    // A new stream (version 0) with an event already in it.
    assert!(is_conflict(store.append_multi(&[(2, 0, event(5))])));
    assert_eq!(store.scan().unwrap().0, 3);
    // The right versions go through, and a stream may appear twice in one batch.
    store
        .append_multi(&[(1, 2, event(3)), (2, 1, event(4)), (1, 3, event(5))])
        .unwrap();
    store.append(1, 4, &[event(6)]).unwrap();
    let amounts = |ids: &[u64]| ids.iter().map(|&i| event(i).amount).sum::<i64>();
    assert_eq!(
        store.read_stream(1).unwrap(),
        (5, amounts(&[0, 1, 3, 5, 6]))
    );
    assert_eq!(store.read_stream(2).unwrap(), (2, amounts(&[2, 4])));
    assert_eq!(store.scan().unwrap(), (7, amounts(&[0, 1, 2, 3, 4, 5, 6])));
    // Point reads find each global position.
    assert_eq!(store.point_reads(&[1, 3, 7]).unwrap(), amounts(&[0, 2, 6]));
    assert!(store.point_reads(&[8]).is_err());
}

#[test]
fn concurrent_appends_are_all_kept() {
    const THREADS: u128 = 16;
    const EACH: u32 = 25;
    let dir = tempfile::tempdir().unwrap();
    let store = UmaDb::open(dir.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = &store;
            s.spawn(move || {
                for v in 0..EACH {
                    store
                        .append(t + 1, v, &[event(u64::from(v))])
                        .expect("append");
                }
            });
        }
    });
    let total = THREADS as u64 * u64::from(EACH);
    assert_eq!(store.scan().unwrap().0, total);
    for t in 0..THREADS {
        assert_eq!(store.read_stream(t + 1).unwrap().0, u64::from(EACH));
    }
    // The async path through the same writer thread.
    store.async_appends(50, 4).unwrap();
    assert_eq!(store.scan().unwrap().0, total + 200);
}

#[test]
fn a_reopened_store_keeps_its_events_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = UmaDb::open(dir.path()).unwrap();
        for v in 0..10 {
            store.append(7, v, &[event(u64::from(v))]).unwrap();
        }
    }
    // Dropping the store stops its writer thread; a new client knows nothing of the stream and
    // reads where it stands.
    let store = UmaDb::open(dir.path()).unwrap();
    assert_eq!(store.read_stream(7).unwrap().0, 10);
    assert!(is_conflict(store.append(7, 9, &[event(10)])));
    store.append(7, 10, &[event(10)]).unwrap();
    // A batch over streams it has not seen: it reads where they stand.
    assert!(is_conflict(
        store.append_multi(&[(7, 10, event(11)), (8, 0, event(12))])
    ));
    assert!(is_conflict(store.append_multi(&[(8, 1, event(12))])));
    store
        .append_multi(&[(7, 11, event(11)), (8, 0, event(12)), (8, 1, event(13))])
        .unwrap();
    assert_eq!(store.read_stream(7).unwrap().0, 12);
    assert_eq!(store.read_stream(8).unwrap().0, 2);
    assert_eq!(store.scan().unwrap().0, 14);
}
