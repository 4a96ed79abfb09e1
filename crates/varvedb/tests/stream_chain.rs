//! Reads by version through the stream chain: long streams interleaved with others, every
//! version, every starting point around the read chunk, and a damaged link.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Append, Error, ExpectedVersion, Reader, Storage, Writer};

const LONG: u128 = 0xA11CE;
const VERSIONS: u32 = 3_000;

/// Appends `VERSIONS` events to `LONG` in batches of varying size, interleaved with events of
/// other streams (some in the same atomic appends).
fn fill(storage: &Storage) {
    let writer = Writer::<Deposited>::new(storage.clone());
    let mut version = 0u32;
    let mut round = 0u64;
    while version < VERSIONS {
        round += 1;
        let n = ((round * 7) % 5 + 1).min(u64::from(VERSIONS - version)) as u32;
        let batch: Vec<Deposited> = (1..=n).map(|k| deposit(u64::from(version + k))).collect();
        let other = [deposit(round)];
        writer
            .commit(
                Append::stream(u128::from(round % 13), ExpectedVersion::Auto, &other[..]).and(
                    LONG,
                    ExpectedVersion::Exact(version),
                    &batch[..],
                ),
            )
            .unwrap();
        version += n;
        writer
            .append(
                u128::from(round % 7) + 100,
                ExpectedVersion::Auto,
                &deposit(0),
            )
            .unwrap();
    }
}

#[test]
fn every_version_of_a_long_stream_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    fill(&storage);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert_eq!(reader.stream_version(&txn, LONG).unwrap(), VERSIONS);
    for v in 1..=VERSIONS {
        let e = reader.get_by_version(&txn, LONG, v).unwrap().unwrap();
        assert_eq!((e.stream_id(), e.version()), (LONG, v));
        assert_eq!(e.amount.to_native(), u64::from(v));
    }
    assert!(reader.get_by_version(&txn, LONG, 0).unwrap().is_none());
    assert!(
        reader
            .get_by_version(&txn, LONG, VERSIONS + 1)
            .unwrap()
            .is_none()
    );
}

#[test]
fn stream_reads_start_anywhere_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    fill(&storage);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for from in [
        0, 1, 2, 127, 128, 129, 255, 256, 257, 1_000, 2_999, 3_000, 3_001,
    ] {
        let forward: Vec<u32> = reader
            .read_stream(&txn, LONG, from)
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.amount.to_native(), u64::from(e.version()));
                e.version()
            })
            .collect();
        let first = from.max(1);
        assert_eq!(
            forward,
            (first..=VERSIONS).collect::<Vec<_>>(),
            "from {from}"
        );
        let backward: Vec<u32> = reader
            .read_stream_backwards(&txn, LONG, from)
            .map(|e| e.unwrap().version())
            .collect();
        let top = from.min(VERSIONS);
        assert_eq!(
            backward,
            (1..=top).rev().collect::<Vec<_>>(),
            "back from {from}"
        );
    }
    let all: Vec<u32> = reader
        .read_stream_backwards(&txn, LONG, u32::MAX)
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(all.len(), VERSIONS as usize);
}

#[test]
fn a_snapshot_reads_the_stream_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let reader = Reader::<Deposited>::new(storage.clone());
    for v in 0..300 {
        writer
            .append(LONG, ExpectedVersion::Exact(v), &deposit(u64::from(v) + 1))
            .unwrap();
    }
    let old = storage.read_txn().unwrap();
    for v in 300..700 {
        writer
            .append(LONG, ExpectedVersion::Exact(v), &deposit(u64::from(v) + 1))
            .unwrap();
    }
    assert_eq!(reader.read_stream(&old, LONG, 1).count(), 300);
    assert!(reader.get_by_version(&old, LONG, 301).unwrap().is_none());
    assert_eq!(
        reader
            .get_by_version(&old, LONG, 300)
            .unwrap()
            .unwrap()
            .version(),
        300
    );
}

#[test]
fn a_damaged_link_is_an_error_never_a_wrong_event() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        let writer = Writer::<Deposited>::new(storage);
        for v in 0..400u32 {
            writer
                .append(LONG, ExpectedVersion::Exact(v), &deposit(u64::from(v) + 1))
                .unwrap();
            writer
                .append(7, ExpectedVersion::Auto, &deposit(0))
                .unwrap();
        }
    }
    // Version 200's header: stream id and version, then the prev link 32 bytes further on.
    let path = dir.path().join("data.mdb");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut needle = LONG.to_le_bytes().to_vec();
    needle.extend_from_slice(&200u32.to_le_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the header is on disk");
    bytes[at + 32] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();

    let storage = open(&dir);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let mut errors = 0;
    for e in reader.read_stream(&txn, LONG, 1) {
        match e {
            Ok(e) => {
                assert_eq!(e.stream_id(), LONG);
                assert_eq!(e.amount.to_native(), u64::from(e.version()));
            }
            Err(Error::Corrupt { .. } | Error::CorruptIndex { .. }) => errors += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(errors > 0, "the damaged record went unreported");
    for v in 1..=400 {
        match reader.get_by_version(&txn, LONG, v) {
            Ok(Some(e)) => assert_eq!((e.version(), e.amount.to_native()), (v, u64::from(v))),
            Ok(None) => panic!("version {v} vanished"),
            Err(Error::Corrupt { .. } | Error::CorruptIndex { .. }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(matches!(
        reader.get_by_version(&txn, LONG, 200),
        Err(Error::Corrupt { .. })
    ));
}

/// The untyped view reads a stream as the typed reader does: every version in order, from any
/// version, whether the stream's events are neighbours in the log or scattered among others.
#[test]
fn the_raw_reader_reads_streams_like_the_typed_reader() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    // Stream 1: runs of 300 neighbours; streams 2 and 3: interleaved one by one.
    for round in 0..5u64 {
        let batch: Vec<_> = (0..300).map(|i| deposit(round * 300 + i)).collect();
        writer
            .append_batch(1, ExpectedVersion::Auto, &batch)
            .unwrap();
        for i in 0..200 {
            writer
                .append(2 + u128::from(i % 2), ExpectedVersion::Auto, &deposit(i))
                .unwrap();
        }
    }
    let raw = storage.raw_reader();
    let typed = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for stream in 1..=3u128 {
        for from in [1u32, 2, 299, 300, 301, 1_000, 1_500] {
            let expected: Vec<(u64, u32)> = typed
                .read_stream(&txn, stream, from)
                .map(|e| {
                    let e = e.unwrap();
                    (e.seq(), e.version())
                })
                .collect();
            let found: Vec<(u64, u32)> = raw
                .read_stream(&txn, stream, from)
                .map(|e| {
                    let e = e.unwrap();
                    (e.seq(), e.version())
                })
                .collect();
            assert_eq!(found, expected, "stream {stream} from version {from}");
        }
    }
    assert_eq!(raw.read_stream(&txn, 1, 1).count(), 1_500);
    assert_eq!(raw.read_stream(&txn, 99, 1).count(), 0);
}
