//! Group commit: concurrent appenders share commits, a conflict fails only its own append, and
//! async appenders never block their runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::{Arc, Barrier};

use common::*;
use varvedb::{Append, Error, ExpectedVersion, Reader, Writer};

const THREADS: usize = 64;
const PER_THREAD: u32 = 20;

#[test]
fn concurrent_durable_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let before = storage.stats().unwrap().commits;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..PER_THREAD {
                    let a = writer
                        .append(t as u128, ExpectedVersion::Exact(n), &deposit(u64::from(n)))
                        .unwrap();
                    assert_eq!(a.version, n + 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = storage.stats().unwrap();
    let appends = THREADS as u64 * u64::from(PER_THREAD);
    assert_eq!(stats.events, appends);
    let commits = stats.commits - before;
    // One commit per append would be 1,280 flushes; grouped, 64 waiting appenders share each.
    assert!(
        commits * 4 <= appends,
        "{commits} commits for {appends} concurrent appends: they were not grouped"
    );
    // Every stream is complete, gap-free, and in the order its thread appended.
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for t in 0..THREADS {
        let amounts: Vec<u64> = reader
            .read_stream(&txn, t as u128, 1)
            .map(|e| e.unwrap().amount.to_native())
            .collect();
        assert_eq!(amounts, (0..u64::from(PER_THREAD)).collect::<Vec<_>>());
    }
}

#[test]
fn a_conflict_fails_only_its_own_append() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    const ROUNDS: u32 = 30;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut contested_wins = 0;
                for n in 0..ROUNDS {
                    barrier.wait();
                    if t % 2 == 0 {
                        // Half the threads fight over one stream: one wins each round.
                        match writer.append(7_000, ExpectedVersion::Exact(n), &deposit(1)) {
                            Ok(_) => contested_wins += 1,
                            Err(Error::ConcurrencyConflict { actual, .. }) => {
                                assert_eq!(actual, n + 1)
                            }
                            Err(e) => panic!("unexpected {e}"),
                        }
                    } else {
                        // The other half append to their own streams in the same groups: a
                        // neighbour's conflict must never fail them.
                        writer
                            .append(t as u128, ExpectedVersion::Exact(n), &deposit(2))
                            .unwrap();
                    }
                    barrier.wait();
                    // Every append of the round has been answered: exactly one contested
                    // append committed, so the stream is at exactly `n + 1`. (No append of the
                    // next round starts before every thread passes its first barrier.)
                    let txn = writer.storage().read_txn().unwrap();
                    assert_eq!(writer.storage().stream_version(&txn, 7_000).unwrap(), n + 1);
                    drop(txn);
                }
                contested_wins
            })
        })
        .collect();
    let wins: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(wins, ROUNDS, "exactly one winner per contested version");
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 7_000).unwrap(), ROUNDS);
    for t in (1..THREADS).step_by(2) {
        assert_eq!(storage.stream_version(&txn, t as u128).unwrap(), ROUNDS);
    }
    assert_eq!(
        storage.stats().unwrap().events,
        u64::from(ROUNDS) * (1 + THREADS as u64 / 2)
    );
}

#[test]
fn a_batch_in_a_group_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &deposit(0))
        .unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                // Every thread tries a multi-stream append that needs stream 1 at version 1:
                // one wins; the losers must leave no trace on their own stream either.
                writer.commit(
                    Append::stream(
                        100 + u128::from(t),
                        ExpectedVersion::NoStream,
                        &[deposit(t)][..],
                    )
                    .and(
                        1,
                        ExpectedVersion::Exact(1),
                        &[deposit(t), deposit(t)][..],
                    ),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<usize> = (0..8).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1);
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 1).unwrap(), 3);
    for t in 0..8 {
        let expected = u32::from(winners.contains(&t));
        assert_eq!(
            storage.stream_version(&txn, 100 + t as u128).unwrap(),
            expected
        );
    }
    assert_eq!(storage.stats().unwrap().events, 4);
}

#[test]
fn async_appends_do_not_block_the_runtime_and_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let before = storage.stats().unwrap().commits;
    const TASKS: u64 = 200;
    // One runtime thread: if `append_async` blocked it, the tasks would run one after the other,
    // one commit each.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut seqs = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .append_async(t.into(), ExpectedVersion::NoStream, &deposit(t))
                        .await
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            let appended = task.await.unwrap().unwrap();
            assert_eq!(appended.version, 1);
            seqs.push(appended.seq);
        }
        seqs
    });
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=TASKS).collect::<Vec<_>>());
    let commits = storage.stats().unwrap().commits - before;
    assert!(
        commits * 4 <= TASKS,
        "{commits} commits for {TASKS} async appends on one runtime thread"
    );
    // Conflicts arrive as errors, not panics, on the async path too.
    let err = rt
        .block_on(writer.append_async(5, ExpectedVersion::NoStream, &deposit(0)))
        .unwrap_err();
    assert!(matches!(err, Error::ConcurrencyConflict { actual: 1, .. }));
    let batch = rt
        .block_on(writer.commit_async(Append::stream(
            5,
            ExpectedVersion::Exact(1),
            &[deposit(1), deposit(2)],
        )))
        .unwrap();
    assert_eq!(batch.iter().map(|a| a.version).collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn the_store_closes_cleanly_with_its_committer() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5u32 {
        let storage = open(&dir);
        let writer = Writer::<Deposited>::new(storage.clone());
        writer
            .append(1, ExpectedVersion::Exact(round), &deposit(round.into()))
            .unwrap();
        drop(writer);
        drop(storage);
        // The environment (and its committer) is gone: the next open starts a fresh one.
    }
    let storage = open(&dir);
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 1).unwrap(), 5);
}

#[test]
fn an_append_is_acknowledged_only_after_its_commit_is_flushed() {
    // Durability::Sync runs LMDB with MDB_NOMETASYNC: a commit's meta page is flushed by the
    // next flush of the file. A lone writer has no next commit, so every acknowledgement must
    // wait for an explicit flush.
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let before = storage.stats().unwrap();
    for n in 0..10 {
        writer
            .append(1, ExpectedVersion::Exact(n), &deposit(n.into()))
            .unwrap();
        let now = storage.stats().unwrap();
        assert_eq!(now.commits - before.commits, u64::from(n) + 1);
        assert_eq!(
            now.flushes - before.flushes,
            u64::from(n) + 1,
            "append {n} was acknowledged before a flush made it durable"
        );
    }
    // With NoSync nothing is flushed, by design.
    let dir = tempfile::tempdir().unwrap();
    let storage = varvedb::Storage::open(varvedb::StorageConfig {
        durability: varvedb::Durability::NoSync,
        ..config(&dir)
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::Auto, &deposit(1))
        .unwrap();
    assert_eq!(storage.stats().unwrap().flushes, 0);
}

#[test]
fn a_group_that_writes_nothing_is_not_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    let before = storage.stats().unwrap();
    for _ in 0..5 {
        let err = writer
            .append(1, ExpectedVersion::NoStream, &deposit(2))
            .unwrap_err();
        assert!(matches!(err, Error::ConcurrencyConflict { .. }));
    }
    let after = storage.stats().unwrap();
    assert_eq!(after.commits, before.commits, "conflicts committed nothing");
    assert_eq!(after.flushes, before.flushes);
}

#[test]
fn append_multi_async_is_atomic_like_append_multi() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let a = [deposit(1), deposit(2)];
    let b = [deposit(3)];
    let landed = rt
        .block_on(
            writer.commit_async(Append::stream(1, ExpectedVersion::NoStream, &a[..]).and(
                2,
                ExpectedVersion::NoStream,
                &b[..],
            )),
        )
        .unwrap();
    assert_eq!(
        landed
            .iter()
            .map(|x| (x.seq, x.version))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2), (3, 1)]
    );
    // One conflict fails the whole append.
    let err = rt
        .block_on(
            writer.commit_async(Append::stream(3, ExpectedVersion::NoStream, &a[..]).and(
                2,
                ExpectedVersion::NoStream,
                &b[..],
            )),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        Error::ConcurrencyConflict { stream_id: 2, .. }
    ));
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 3).unwrap(), 0);
    assert_eq!(storage.last_seq(&txn).unwrap(), 3);
}

#[test]
fn close_answers_and_flushes_what_a_dropped_future_committed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Queue an append and drop its future before the answer: it still commits.
    let event = deposit(1);
    rt.block_on(async {
        // Its first poll queues it (preparation does not wait); the timeout then drops it.
        let fut = writer.append_async(1, ExpectedVersion::NoStream, &event);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), fut).await;
    });
    writer.flush().unwrap();
    let txn = storage.read_txn().unwrap();
    let version = storage.stream_version(&txn, 1).unwrap();
    assert_eq!(version, 1, "the dropped future's append was committed");
    drop(txn);
    writer.close().unwrap();
    storage.close().unwrap();
    let storage = open(&dir);
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 1).unwrap(), version);
}
