//! Format 4 keeps the events of one append together in packs of up to 256 records. Every read
//! finds each event of a pack (scans from any sequence, point reads, stream reads both ways),
//! and damage inside a pack is reported for the records it touches while the others still read.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]
mod common;

use common::{Deposited, deposit};
use heed::types::Bytes;
use varvedb::{Append, Error, ExpectedVersion, Reader, Storage, Writer};

/// Edits the `events` database of a closed store with raw heed, as damage on disk would.
fn edit_events(
    dir: &tempfile::TempDir,
    f: impl FnOnce(&mut heed::RwTxn<'_>, heed::Database<'static, Bytes, Bytes>),
) {
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(16);
    // SAFETY: the store is closed; nothing else opens this path while the env is open.
    let env = unsafe { options.open(dir.path()) }.unwrap();
    let rtxn = env.read_txn().unwrap();
    let events = env
        .open_databases_and_commit(rtxn, |opener, rtxn| {
            opener
                .open_database::<Bytes, Bytes>(rtxn, Some("events"))
                .map(|db| heed::CommitOrAbort::<_, ()>::Commit(db.unwrap()))
        })
        .unwrap()
        .unwrap_commit();
    let mut wtxn = env.write_txn().unwrap();
    f(&mut wtxn, events);
    wtxn.commit().unwrap();
}

fn amounts(reader: &Reader<Deposited>, storage: &Storage, from: u64) -> Vec<(u64, u64)> {
    let txn = storage.read_txn().unwrap();
    reader
        .read_all(&txn, from)
        .map(|e| {
            let e = e.unwrap();
            (e.seq(), e.amount.to_native())
        })
        .collect()
}

#[test]
fn a_large_batch_is_cut_into_packs_that_read_back_in_every_way() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let reader = Reader::<Deposited>::new(storage.clone());
    // 600 events of one stream: packs of 256, 256 and 88.
    let batch: Vec<_> = (1..=600).map(deposit).collect();
    writer
        .append_batch(1, ExpectedVersion::NoStream, &batch)
        .unwrap();
    // Then 3 streams in one atomic append (300 events: packs of 256 and 44), then lone events.
    let per_stream: Vec<Vec<Deposited>> = (0..3u64)
        .map(|s| (1..=100).map(|i| deposit(1000 * (s + 2) + i)).collect())
        .collect();
    let multi = per_stream
        .iter()
        .enumerate()
        .fold(Append::new(), |a, (s, events)| {
            a.and(s as u128 + 2, ExpectedVersion::NoStream, events.as_slice())
        });
    writer.commit(multi).unwrap();
    for i in 601..=610 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
    }
    let stats = storage.stats().unwrap();
    assert_eq!(stats.events, 910);
    assert_eq!(stats.packs, 3 + 2 + 10);

    // Scans from the start and from inside a pack.
    let all = amounts(&reader, &storage, 1);
    assert_eq!(all.len(), 910);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == i as u64 + 1)
    );
    assert_eq!(
        all[..600].iter().map(|a| a.1).collect::<Vec<_>>(),
        (1..=600).collect::<Vec<_>>()
    );
    for from in [2, 256, 257, 300, 513, 600, 601, 856, 857, 900, 910] {
        let tail = amounts(&reader, &storage, from);
        assert_eq!(tail, all[from as usize - 1..], "from {from}");
    }
    assert!(amounts(&reader, &storage, 911).is_empty());

    let txn = storage.read_txn().unwrap();
    // Point reads of every event, and of sequences the log does not have.
    for (seq, amount) in &all {
        let e = reader.get(&txn, *seq).unwrap().unwrap();
        assert_eq!((e.seq(), e.amount.to_native()), (*seq, *amount));
    }
    assert!(reader.get(&txn, 0).unwrap().is_none());
    assert!(reader.get(&txn, 911).unwrap().is_none());

    // Stream reads, both ways, over packs that hold one stream or three.
    let stream = |id: u128, backwards: bool| -> Vec<u64> {
        let iter = if backwards {
            reader.read_stream_backwards(&txn, id, u32::MAX)
        } else {
            reader.read_stream(&txn, id, 1)
        };
        iter.map(|e| e.unwrap().amount.to_native()).collect()
    };
    let one: Vec<u64> = (1..=610).collect();
    assert_eq!(stream(1, false), one);
    assert_eq!(
        stream(1, true),
        one.iter().rev().copied().collect::<Vec<_>>()
    );
    for (s, events) in per_stream.iter().enumerate() {
        let expected: Vec<u64> = events.iter().map(|d| d.amount).collect();
        assert_eq!(stream(s as u128 + 2, false), expected);
        assert_eq!(
            stream(s as u128 + 2, true),
            expected.iter().rev().copied().collect::<Vec<_>>()
        );
    }
    for version in [1, 255, 256, 257, 512, 513, 600, 601, 610] {
        let e = reader.get_by_version(&txn, 1, version).unwrap().unwrap();
        assert_eq!(e.amount.to_native(), u64::from(version));
    }
    drop(txn);
    let report = storage.verify().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.events, 910);
}

/// Appends one batch of ten events (one pack) to a fresh store and closes it.
fn one_pack(dir: &tempfile::TempDir) {
    let storage = common::open(dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let batch: Vec<_> = (1..=10).map(deposit).collect();
    writer
        .append_batch(1, ExpectedVersion::NoStream, &batch)
        .unwrap();
    assert_eq!(storage.stats().unwrap().packs, 1);
}

/// Each sequence's read: its amount, or the sequence a `Corrupt` error names.
fn outcomes(storage: &Storage) -> Vec<Result<u64, u64>> {
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    reader
        .read_all(&txn, 1)
        .map(|e| match e {
            Ok(e) => Ok(e.amount.to_native()),
            Err(Error::Corrupt { seq, .. }) => Err(seq),
            Err(other) => panic!("unexpected error {other:?}"),
        })
        .collect()
}

#[test]
fn a_damaged_record_in_a_pack_is_reported_and_its_neighbours_still_read() {
    let dir = tempfile::tempdir().unwrap();
    one_pack(&dir);
    edit_events(&dir, |wtxn, events| {
        let key = 10u64.to_be_bytes();
        let mut pack = events.get(wtxn, &key).unwrap().unwrap().to_vec();
        let records = varvedb::__bench::pack_records(10, &pack).unwrap();
        assert_eq!(records.len(), 10);
        // The amount of seq 5 (the payload's first bytes): still a valid archive, wrong value.
        pack[records[4].start + varvedb::__bench::HEADER_LEN] ^= 0x01;
        events.put(wtxn, &key, &pack).unwrap();
    });
    let storage = common::open(&dir);
    let mut expected: Vec<Result<u64, u64>> = (1..=10).map(Ok).collect();
    expected[4] = Err(5);
    assert_eq!(outcomes(&storage), expected);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        reader.get(&txn, 5),
        Err(Error::Corrupt { seq: 5, .. })
    ));
    assert_eq!(reader.get(&txn, 6).unwrap().unwrap().amount, 6);
    drop(txn);
    // Verify names the damaged record, then the chain step that had to skip it.
    let report = storage.verify().unwrap();
    assert_eq!(report.problem_count(), 2, "{report:#?}");
    assert_eq!(report.problems[0].key, "seq 5");
    assert!(report.problems[0].what.contains("checksum mismatch"));
    assert_eq!(report.problems[1].key, "seq 6");
}

#[test]
fn a_damaged_offset_table_or_pack_header_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    one_pack(&dir);
    // Record 3's offset (pack bytes 24..28) made odd: records 2 and 3 lose their bounds.
    edit_events(&dir, |wtxn, events| {
        let key = 10u64.to_be_bytes();
        let mut pack = events.get(wtxn, &key).unwrap().unwrap().to_vec();
        pack[24] ^= 0x01;
        events.put(wtxn, &key, &pack).unwrap();
    });
    {
        let storage = common::open(&dir);
        let got = outcomes(&storage);
        assert_eq!(got.len(), 10);
        for (i, outcome) in got.iter().enumerate() {
            let seq = i as u64 + 1;
            match seq {
                2 | 3 => assert_eq!(*outcome, Err(seq)),
                _ => assert_eq!(*outcome, Ok(seq)),
            }
        }
        // Seqs 2 and 3, then seq 4's chain step over them.
        let report = storage.verify().unwrap();
        assert_eq!(report.problem_count(), 3, "{report:#?}");
        let keys: Vec<&str> = report.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["seq 2", "seq 3", "seq 4"]);
    }
    // The pack's format byte: the whole pack is refused, once, by every read.
    edit_events(&dir, |wtxn, events| {
        let key = 10u64.to_be_bytes();
        let mut pack = events.get(wtxn, &key).unwrap().unwrap().to_vec();
        pack[8] = 9;
        events.put(wtxn, &key, &pack).unwrap();
    });
    let storage = common::open(&dir);
    assert_eq!(outcomes(&storage), vec![Err(10)]);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for seq in 1..=10 {
        assert!(matches!(reader.get(&txn, seq), Err(Error::Corrupt { .. })));
    }
    let err = reader.read_stream(&txn, 1, 1).next().unwrap().unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    drop(txn);
    // The pack, then the stream head that points into it.
    let report = storage.verify().unwrap();
    assert_eq!(report.problem_count(), 2, "{report:#?}");
    assert_eq!(report.problems[0].key, "seq 10");
    assert!(report.problems[0].what.contains("unknown pack format 9"));
    assert_eq!(report.problems[1].database, "stream_heads");
}

/// The export marks the last event of each commit group, and a group never ends inside an
/// atomic append: a batch of 600 events (three packs) is one group, a lone append is one,
/// and the appends that share a commit under concurrent writers end in whole appends only.
#[test]
fn commit_groups_end_only_between_whole_appends() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let batch: Vec<_> = (1..=600).map(deposit).collect();
    writer
        .append_batch(1, ExpectedVersion::NoStream, &batch)
        .unwrap();
    writer
        .append(2, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    // Eight threads appending batches of 100 at once: groups of several appends each.
    let mut appends = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u128)
            .map(|t| {
                let writer = writer.clone();
                s.spawn(move || {
                    let batch: Vec<_> = (1..=100).map(deposit).collect();
                    (0..10)
                        .map(|_| {
                            let a = writer
                                .append_batch(10 + t, ExpectedVersion::Auto, &batch)
                                .unwrap();
                            (a[0].seq, a[99].seq)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            appends.extend(h.join().unwrap());
        }
    });
    let txn = storage.read_txn().unwrap();
    let ends: Vec<u64> = storage
        .export_events(&txn, 1)
        .map(|e| e.unwrap())
        .filter(|e| e.ends_group)
        .map(|e| e.seq)
        .collect();
    assert_eq!(&ends[..2], &[600, 601]);
    assert_eq!(ends.last(), Some(&(601 + 8000)));
    for (first, last) in appends {
        assert!(
            !ends.iter().any(|e| (first..last).contains(e)),
            "a group ends inside the append {first}..={last}: {ends:?}"
        );
    }
    // The export from inside a group still marks its end.
    let from_inside: Vec<u64> = storage
        .export_events(&txn, 300)
        .map(|e| e.unwrap())
        .take_while(|e| e.seq <= 601)
        .filter(|e| e.ends_group)
        .map(|e| e.seq)
        .collect();
    assert_eq!(from_inside, [600, 601]);
}

/// An importer refuses a group with a gap before queuing any of it, and takes the right
/// group afterwards.
#[test]
fn a_group_with_a_gap_is_refused_whole() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = common::open(&src_dir);
    let batch: Vec<_> = (1..=5).map(deposit).collect();
    Writer::<Deposited>::new(src.clone())
        .append_batch(1, ExpectedVersion::NoStream, &batch)
        .unwrap();
    let txn = src.read_txn().unwrap();
    let header = src.export_header(&txn).unwrap();
    let events: Vec<_> = src.export_events(&txn, 1).map(|e| e.unwrap()).collect();
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = common::open(&dst_dir);
    let mut importer = dst.importer();
    importer.begin(&header).unwrap();
    let mut gapped = events.clone();
    gapped.remove(2);
    assert!(matches!(
        importer.push_group(gapped),
        Err(Error::InvalidImport { seq: 4, .. })
    ));
    assert_eq!(importer.next_seq(), 1);
    // Five events are no full batch: queued, written by the commit.
    assert!(!importer.push_group(events).unwrap());
    assert_eq!(dst.last_seq(&dst.read_txn().unwrap()).unwrap(), 0);
    importer.commit().unwrap();
    assert_eq!(dst.last_seq(&dst.read_txn().unwrap()).unwrap(), 5);
    assert!(dst.verify().unwrap().problems.is_empty());
}
