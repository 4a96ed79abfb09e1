//! Payloads over `blob_threshold_bytes` live in the content-addressed blob store: stored once,
//! counted, read zero-copy through the same `EventRef`, and checked on every read.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::{pattern, raw_put};
use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{Append, Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

/// An event whose archived form is exactly `N` bytes (a byte array has alignment 1).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
struct Fixed<const N: usize> {
    bytes: [u8; N],
}

/// An event of any size: its archive is the bytes, padded to 4, then an 8-byte header.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
struct Doc {
    body: Vec<u8>,
}

/// The body whose `Doc` archives to exactly `total` bytes (a multiple of 4, at least 8).
fn doc_of_total(total: usize, seed: u64) -> Doc {
    assert!(total >= 8 && total.is_multiple_of(4));
    Doc {
        body: pattern(total - 8, seed),
    }
}

fn archived_len<E>(event: &E) -> usize
where
    E: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(event).unwrap().len()
}

fn open(dir: &tempfile::TempDir) -> Storage {
    common::open(dir)
}

fn fixed<const N: usize>(fill: u8) -> Fixed<N> {
    Fixed { bytes: [fill; N] }
}

#[test]
fn the_threshold_is_exact_at_1023_1024_and_1025_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    assert_eq!(storage.config().blob_threshold_bytes, 1024);
    assert_eq!(archived_len(&fixed::<1023>(1)), 1023);
    assert_eq!(archived_len(&fixed::<1024>(2)), 1024);
    assert_eq!(archived_len(&fixed::<1025>(3)), 1025);

    let a = Writer::<Fixed<1023>>::new(storage.clone())
        .append(1, ExpectedVersion::NoStream, &fixed(1))
        .unwrap();
    let b = Writer::<Fixed<1024>>::new(storage.clone())
        .append(1, ExpectedVersion::Exact(1), &fixed(2))
        .unwrap();
    let c = Writer::<Fixed<1025>>::new(storage.clone())
        .append(1, ExpectedVersion::Exact(2), &fixed(3))
        .unwrap();

    let txn = storage.read_txn().unwrap();
    let e = Reader::<Fixed<1023>>::new(storage.clone())
        .get(&txn, a.seq)
        .unwrap()
        .unwrap();
    assert!(!e.is_blob() && e.is_zero_copy());
    assert_eq!(e.bytes, [1u8; 1023]);
    let e = Reader::<Fixed<1024>>::new(storage.clone())
        .get(&txn, b.seq)
        .unwrap()
        .unwrap();
    assert!(!e.is_blob() && e.is_zero_copy());
    assert_eq!(e.bytes, [2u8; 1024]);
    let e = Reader::<Fixed<1025>>::new(storage.clone())
        .get(&txn, c.seq)
        .unwrap()
        .unwrap();
    assert!(e.is_blob(), "1025 bytes is over the 1 KiB threshold");
    assert!(e.is_zero_copy());
    assert_eq!(e.bytes, [3u8; 1025]);
    assert_eq!(
        e.blob_hash().unwrap(),
        blake3::hash(&[3u8; 1025]).as_bytes()
    );
    assert_eq!((e.version(), e.stream_id()), (3, 1));
    drop(txn);

    let stats = storage.stats().unwrap();
    assert_eq!((stats.blobs, stats.blob_references), (1, 1));
}

#[test]
fn sizes_from_an_empty_body_to_8_mib_read_back_zero_copy_by_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Doc>::new(storage.clone());
    // Around the threshold, across the leaf/overflow boundary of the blob store (values of
    // about 2 KB), and up to 8 MiB; interleaved on two streams.
    let mut totals: Vec<usize> = vec![8, 12, 1020, 1024, 1028, 1032];
    totals.extend((1036..2200).step_by(36));
    totals.extend([4096, 10 << 10, 100 << 10, 1 << 20, 8 << 20]);
    for (i, total) in totals.iter().enumerate() {
        let stream = 1 + (i % 2) as u128;
        writer
            .append(
                stream,
                ExpectedVersion::Auto,
                &doc_of_total(*total, i as u64),
            )
            .unwrap();
    }
    assert_eq!(archived_len(&doc_of_total(8 << 20, 0)), 8 << 20);

    let reader = Reader::<Doc>::new(storage.clone());
    let check = |seq: u64, e: &varvedb::EventRef<'_, Doc>| {
        let i = (seq - 1) as usize;
        let total = totals[i];
        assert_eq!(e.payload_bytes().len(), total, "seq {seq}");
        assert_eq!(e.body.as_slice(), pattern(total - 8, i as u64), "seq {seq}");
        assert_eq!(e.is_blob(), total > 1024, "seq {seq}, {total} bytes");
        assert!(e.is_zero_copy(), "seq {seq}, {total} bytes");
        assert!(
            (e.payload_bytes().as_ptr() as usize).is_multiple_of(16),
            "seq {seq}"
        );
    };
    let txn = storage.read_txn().unwrap();
    for seq in 1..=totals.len() as u64 {
        check(seq, &reader.get(&txn, seq).unwrap().unwrap());
    }
    let all: Vec<_> = reader.read_all(&txn, 1).map(Result::unwrap).collect();
    assert_eq!(all.len(), totals.len());
    for e in &all {
        check(e.seq(), e);
    }
    for stream in [1u128, 2] {
        let forward: Vec<u64> = reader
            .read_stream(&txn, stream, 1)
            .map(|e| {
                let e = e.unwrap();
                check(e.seq(), &e);
                e.seq()
            })
            .collect();
        let backward: Vec<u64> = reader
            .read_stream_backwards(&txn, stream, u32::MAX)
            .map(|e| e.unwrap().seq())
            .collect();
        let expected: Vec<u64> = (1..=totals.len() as u64)
            .filter(|s| (s - 1) % 2 == (stream - 1) as u64)
            .collect();
        assert_eq!(forward, expected);
        assert_eq!(backward, expected.iter().rev().copied().collect::<Vec<_>>());
        let v = expected.len() as u32;
        check(
            expected[v as usize - 1],
            &reader.get_by_version(&txn, stream, v).unwrap().unwrap(),
        );
    }
}

#[test]
fn the_empty_payload_and_the_configured_maximum_work_and_one_byte_more_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let max = 3 << 20;
    let storage = Storage::open(StorageConfig {
        event_bytes_max: max,
        ..common::config(&dir)
    })
    .unwrap();
    #[derive(Archive, Serialize, Deserialize, varvedb::Event)]
    struct Nothing;
    assert_eq!(archived_len(&Nothing), 0);
    let at = Writer::<Nothing>::new(storage.clone())
        .append(1, ExpectedVersion::Auto, &Nothing)
        .unwrap();
    let writer = Writer::<Doc>::new(storage.clone());
    let biggest = writer
        .append(1, ExpectedVersion::Auto, &doc_of_total(max, 1))
        .unwrap();
    let err = writer
        .append(1, ExpectedVersion::Auto, &doc_of_total(max + 4, 2))
        .unwrap_err();
    assert!(
        matches!(err, Error::EventTooLarge { size, max: m } if size == max + 4 && m == max),
        "{err}"
    );
    let txn = storage.read_txn().unwrap();
    let nothing = Reader::<Nothing>::new(storage.clone())
        .get(&txn, at.seq)
        .unwrap()
        .unwrap();
    assert!(nothing.payload_bytes().is_empty() && !nothing.is_blob());
    let e = Reader::<Doc>::new(storage.clone())
        .get(&txn, biggest.seq)
        .unwrap()
        .unwrap();
    assert!(e.is_blob());
    assert_eq!(e.body.as_slice(), pattern(max - 8, 1));
    assert_eq!(
        storage.last_seq(&txn).unwrap(),
        2,
        "the refused event wrote nothing"
    );
}

#[test]
fn the_default_maximum_is_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    assert_eq!(storage.config().event_bytes_max, 64 << 20);
    let err = Writer::<Doc>::new(storage.clone())
        .append(1, ExpectedVersion::Auto, &doc_of_total((64 << 20) + 4, 0))
        .unwrap_err();
    assert!(
        matches!(err, Error::EventTooLarge { max, .. } if max == 64 << 20),
        "{err}"
    );
    assert_eq!(storage.stats().unwrap().events, 0);
}

#[test]
fn identical_payloads_are_stored_once_and_counted() {
    let dir_same = tempfile::tempdir().unwrap();
    let dir_distinct = tempfile::tempdir().unwrap();
    let same = open(&dir_same);
    let distinct = open(&dir_distinct);
    let payload = 10 << 10;
    for i in 0..200u64 {
        let stream = u128::from(i % 7) + 1;
        Writer::<Doc>::new(same.clone())
            .append(stream, ExpectedVersion::Auto, &doc_of_total(payload, 42))
            .unwrap();
        Writer::<Doc>::new(distinct.clone())
            .append(stream, ExpectedVersion::Auto, &doc_of_total(payload, i))
            .unwrap();
    }
    let s = same.stats().unwrap();
    let d = distinct.stats().unwrap();
    assert_eq!((s.events, s.blobs, s.blob_references), (200, 1, 200));
    assert_eq!((d.events, d.blobs, d.blob_references), (200, 200, 200));
    // One 10 KiB blob takes three overflow pages (plus a leaf page of each database); 200
    // distinct ones take at least their 2 MB.
    assert!(s.blob_bytes <= 8 * 4096, "{} bytes", s.blob_bytes);
    assert!(
        d.blob_bytes >= 200 * payload as u64,
        "{} bytes",
        d.blob_bytes
    );
    // The log holds references only: small either way.
    assert!(s.log_bytes < 200 * 1024, "{}", s.log_bytes);

    // Each event reads its own copy of the one payload.
    let txn = same.read_txn().unwrap();
    let reader = Reader::<Doc>::new(same.clone());
    let mut hashes = std::collections::BTreeSet::new();
    for e in reader.read_all(&txn, 1) {
        let e = e.unwrap();
        assert_eq!(e.body.as_slice(), pattern(payload - 8, 42));
        hashes.insert(*e.blob_hash().unwrap());
    }
    assert_eq!(hashes.len(), 1);
}

#[test]
fn concurrent_appends_of_one_payload_count_every_reference() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let threads: Vec<_> = (0..8u128)
        .map(|t| {
            let writer = Writer::<Doc>::new(storage.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    writer
                        .append(t + 1, ExpectedVersion::Auto, &doc_of_total(4096, 7))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = storage.stats().unwrap();
    assert_eq!(
        (stats.events, stats.blobs, stats.blob_references),
        (200, 1, 200)
    );
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn a_refused_append_stores_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Doc>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &doc_of_total(2048, 1))
        .unwrap();
    // A conflict, alone and as part of an atomic multi-stream append.
    let err = writer
        .append(1, ExpectedVersion::NoStream, &doc_of_total(2048, 2))
        .unwrap_err();
    assert!(matches!(err, Error::ConcurrencyConflict { .. }));
    let big = [doc_of_total(5000, 3)];
    let conflicting = [doc_of_total(2048, 4)];
    let err = writer
        .commit(Append::stream(2, ExpectedVersion::NoStream, &big[..]).and(
            1,
            ExpectedVersion::Exact(7),
            &conflicting[..],
        ))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::ConcurrencyConflict { stream_id: 1, .. }
    ));
    let stats = storage.stats().unwrap();
    assert_eq!(
        (stats.events, stats.blobs, stats.blob_references),
        (1, 1, 1)
    );
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn blobs_survive_reopen_and_dedup_continues_across_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        Writer::<Doc>::new(storage)
            .append(1, ExpectedVersion::Auto, &doc_of_total(50_000, 9))
            .unwrap();
    }
    let storage = open(&dir);
    let writer = Writer::<Doc>::new(storage.clone());
    writer
        .append(2, ExpectedVersion::Auto, &doc_of_total(50_000, 9))
        .unwrap();
    writer
        .append(2, ExpectedVersion::Auto, &doc_of_total(700, 9))
        .unwrap();
    let stats = storage.stats().unwrap();
    assert_eq!(
        (stats.events, stats.blobs, stats.blob_references),
        (3, 1, 2)
    );
    let txn = storage.read_txn().unwrap();
    let reader = Reader::<Doc>::new(storage.clone());
    let kinds: Vec<(u64, bool)> = reader
        .read_all(&txn, 1)
        .map(|e| {
            let e = e.unwrap();
            (e.seq(), e.is_blob())
        })
        .collect();
    assert_eq!(kinds, vec![(1, true), (2, true), (3, false)]);
    assert_eq!(
        reader.get(&txn, 1).unwrap().unwrap().body.as_slice(),
        pattern(50_000 - 8, 9)
    );
}

#[test]
fn the_threshold_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        blob_threshold_bytes: usize::MAX,
        ..common::config(&dir)
    })
    .unwrap();
    Writer::<Doc>::new(storage.clone())
        .append(1, ExpectedVersion::Auto, &doc_of_total(100_000, 1))
        .unwrap();
    let txn = storage.read_txn().unwrap();
    let e = Reader::<Doc>::new(storage.clone())
        .get(&txn, 1)
        .unwrap()
        .unwrap();
    assert!(!e.is_blob() && e.is_zero_copy());
    drop(txn);
    assert_eq!(storage.stats().unwrap().blobs, 0);

    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        blob_threshold_bytes: 64,
        ..common::config(&dir)
    })
    .unwrap();
    Writer::<Doc>::new(storage.clone())
        .append(1, ExpectedVersion::Auto, &doc_of_total(68, 1))
        .unwrap();
    let txn = storage.read_txn().unwrap();
    let e = Reader::<Doc>::new(storage.clone())
        .get(&txn, 1)
        .unwrap()
        .unwrap();
    assert!(e.is_blob() && e.is_zero_copy());
    assert_eq!(e.body.as_slice(), pattern(60, 1));
}

#[test]
fn stats_refuses_reference_counts_that_overflow_their_sum() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let mut refs = [0u8; 16];
    refs[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    refs[8..].copy_from_slice(&4096u64.to_le_bytes());
    raw_put(&dir, "blob_refs", &[1u8; 32], &refs);
    raw_put(&dir, "blob_refs", &[2u8; 32], &refs);
    let err = open(&dir).stats().unwrap_err();
    assert!(
        matches!(&err, varvedb::Error::CorruptBlob { reason, .. } if reason.contains("overflow")),
        "{err:?}"
    );
}
