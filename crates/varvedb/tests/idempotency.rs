//! Durable idempotent appends: an append that carries event ids the store already has, for the
//! same events at the same place, returns the original answer and writes nothing, across
//! reopens, kills and racing retries; anything else with a known id is `DuplicateEventId`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use common::*;
use varvedb::{Append, AppendOptions, Error, EventId, ExpectedVersion, Reader, Writer};

fn id(n: u128) -> EventId {
    // A UUIDv7-like id: time-ordered high bits.
    EventId::from_u128(0x0190_f00d_0000_7000_8000_0000_0000_0000 | n)
}

fn with_id(n: u128) -> AppendOptions {
    AppendOptions::new().event_id(id(n))
}

fn events_in(storage: &varvedb::Storage) -> u64 {
    storage.stats().unwrap().events
}

#[test]
fn a_retried_single_append_returns_the_original_answer_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let a = writer
        .commit(Append::event(1, ExpectedVersion::NoStream, &deposit(5)).options(with_id(1)))
        .map(|v| v[0])
        .unwrap();
    writer
        .append(1, ExpectedVersion::Exact(1), &deposit(6))
        .unwrap();
    // Whatever the expected version says now.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(9),
        ExpectedVersion::Auto,
    ] {
        let again = writer
            .commit(Append::event(1, expected, &deposit(5)).options(with_id(1)))
            .map(|v| v[0])
            .unwrap();
        assert_eq!(again, a, "{expected:?}");
    }
    assert_eq!(events_in(&storage), 2);
    assert_eq!(storage.seq_of_event_id(id(1)).unwrap(), Some(a.seq));
    assert_eq!(storage.seq_of_event_id(id(2)).unwrap(), None);
}

#[test]
fn a_known_id_with_another_stream_or_payload_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let a = writer
        .commit(Append::event(1, ExpectedVersion::NoStream, &deposit(5)).options(with_id(1)))
        .map(|v| v[0])
        .unwrap();
    let other_stream = writer
        .commit(Append::event(2, ExpectedVersion::Auto, &deposit(5)).options(with_id(1)))
        .map(|v| v[0])
        .unwrap_err();
    assert!(
        matches!(&other_stream, Error::DuplicateEventId { seq, event_id, .. } if *seq == a.seq && *event_id == id(1)),
        "{other_stream:?}"
    );
    let other_payload = writer
        .commit(Append::event(1, ExpectedVersion::Auto, &deposit(6)).options(with_id(1)))
        .map(|v| v[0])
        .unwrap_err();
    assert!(
        matches!(&other_payload, Error::DuplicateEventId { reason, .. } if reason.contains("payload")),
        "{other_payload:?}"
    );
    // Metadata is not part of the comparison: a retry may carry other metadata.
    let again = writer
        .commit(
            Append::event(1, ExpectedVersion::Auto, &deposit(5))
                .options(with_id(1).metadata("attempt", "2")),
        )
        .map(|v| v[0])
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(events_in(&storage), 1);
}

#[test]
fn batches_are_idempotent_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let events: Vec<_> = (0..3).map(deposit).collect();
    let opts: Vec<_> = (10..13).map(with_id).collect();
    let first = writer
        .commit(Append::stream(1, ExpectedVersion::NoStream, &events).options(&opts))
        .unwrap();
    let again = writer
        .commit(Append::stream(1, ExpectedVersion::NoStream, &events).options(&opts))
        .unwrap();
    assert_eq!(again, first);

    // Partly known: refused, nothing written.
    let mixed = [with_id(12), with_id(13)];
    let err = writer
        .commit(Append::stream(1, ExpectedVersion::Auto, &events[..2]).options(&mixed))
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err:?}");
    assert_eq!(storage.seq_of_event_id(id(13)).unwrap(), None);
    // The same ids in another order are not the same batch.
    let swapped = [with_id(11), with_id(10)];
    let swapped_events = [deposit(1), deposit(0)];
    let err = writer
        .commit(Append::stream(1, ExpectedVersion::Auto, &swapped_events).options(&swapped))
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err:?}");
    // An id twice in one append.
    let twice = [with_id(20), with_id(20)];
    let err = writer
        .commit(Append::stream(1, ExpectedVersion::Auto, &events[..2]).options(&twice))
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err:?}");
    // Options must match the events.
    let err = writer
        .commit(Append::stream(1, ExpectedVersion::Auto, &events).options(&opts[..1]))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::OptionsMismatch {
            events: 3,
            options: 1
        }
    ));
    assert_eq!(events_in(&storage), 3);
}

#[test]
fn multi_stream_appends_are_idempotent_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let a = [deposit(1), deposit(2)];
    let b = [deposit(3)];
    let oa = [with_id(1), with_id(2)];
    let ob = [with_id(3)];
    let first = writer
        .commit(
            Append::stream(1, ExpectedVersion::NoStream, &a[..])
                .options(&oa[..])
                .and(2, ExpectedVersion::NoStream, &b[..])
                .options(&ob[..]),
        )
        .unwrap();
    let again = writer
        .commit(
            Append::stream(1, ExpectedVersion::NoStream, &a[..])
                .options(&oa[..])
                .and(2, ExpectedVersion::NoStream, &b[..])
                .options(&ob[..]),
        )
        .unwrap();
    assert_eq!(again, first);
    // The same ids with the streams swapped: refused.
    let err = writer
        .commit(
            Append::stream(2, ExpectedVersion::Auto, &a[..])
                .options(&oa[..])
                .and(1, ExpectedVersion::Auto, &b[..])
                .options(&ob[..]),
        )
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err:?}");
    assert_eq!(events_in(&storage), 3);
}

#[test]
fn ids_hold_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let writer = Writer::<Deposited>::new(open(&dir));
        writer
            .commit(Append::event(1, ExpectedVersion::NoStream, &deposit(1)).options(with_id(1)))
            .map(|v| v[0])
            .unwrap()
    };
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let again = writer
        .commit(Append::event(1, ExpectedVersion::NoStream, &deposit(1)).options(with_id(1)))
        .map(|v| v[0])
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(events_in(&storage), 1);
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn eight_threads_retrying_the_same_ids_write_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let threads = 8;
    let rounds = 20u128;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for r in 0..rounds {
                    barrier.wait();
                    let a = writer
                        .commit(
                            Append::event((r % 3) + 1, ExpectedVersion::Auto, &deposit(r as u64))
                                .options(with_id(100 + r)),
                        )
                        .map(|v| v[0])
                        .unwrap();
                    answers.push(a);
                }
                answers
            })
        })
        .collect();
    let answers: Vec<Vec<_>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for t in 1..threads {
        assert_eq!(answers[t], answers[0], "every retry got the one answer");
    }
    assert_eq!(
        events_in(&storage),
        rounds as u64,
        "exactly one write per id"
    );
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for (r, a) in answers[0].iter().enumerate() {
        let e = reader.get(&txn, a.seq).unwrap().unwrap();
        assert_eq!(e.event_id(), Some(id(100 + r as u128)));
    }
}

const CHILD_ENV: &str = "VARVEDB_IDEMPOTENCY_CHILD_DIR";

/// In the child: appends events with ids 0, 1, 2, … (retrying each until it is answered),
/// printing each acknowledged id and seq.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_appends_with_ids() {
    let Some(writer) = writer_for_child(CHILD_ENV) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let start: u128 = std::env::var("VARVEDB_IDEMPOTENCY_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for n in start.. {
        let a = writer
            .commit(
                Append::event(n % 5, ExpectedVersion::Auto, &deposit(n as u64)).options(with_id(n)),
            )
            .map(|v| v[0])
            .unwrap();
        writeln!(out, "{n} {}", a.seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn ids_hold_after_a_sigkill_and_a_retry_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(u128, u64)> = Vec::new();
    for round in 0..3u128 {
        // Each round restarts a little before where the last acknowledged, as a client that
        // lost its last answers would.
        let from = acked.last().map_or(0, |(n, _)| n.saturating_sub(3));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--ignored",
                "child_appends_with_ids",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("VARVEDB_IDEMPOTENCY_FROM", from.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut got = 0;
        while got < 40 + round * 10 {
            let line = lines.next().unwrap().unwrap();
            let parts: Vec<u128> = line.split(' ').filter_map(|p| p.parse().ok()).collect();
            if parts.len() == 2 {
                let (n, seq) = (parts[0], parts[1] as u64);
                if let Some((_, first)) = acked.iter().find(|(m, _)| *m == n) {
                    assert_eq!(*first, seq, "a retried id answered with another seq");
                } else {
                    acked.push((n, seq));
                }
                got += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let storage = open(&dir);
    assert!(storage.verify().unwrap().is_clean());
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for (n, seq) in &acked {
        assert_eq!(storage.seq_of_event_id(id(*n)).unwrap(), Some(*seq));
        let e = reader.get(&txn, *seq).unwrap().unwrap();
        assert_eq!(e.event_id(), Some(id(*n)));
        assert_eq!(e.amount, *n as u64);
    }
    // Every id in the store once: as many events as distinct ids written.
    let mut ids: Vec<_> = reader
        .read_all(&txn, 1)
        .map(|e| e.unwrap().event_id().unwrap())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "an id was written twice");
}
