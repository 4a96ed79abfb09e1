//! Every refusal of an import, one row each: a damaged or foreign export, or a store that moved
//! under the import, is refused with `Error::InvalidImport` naming what is wrong, and nothing
//! of the refused part is written. (`export_import.rs` covers the refusals met on the way of a
//! whole export: gaps, versions, payloads, duplicate ids, truncation, key checks.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use varvedb::{
    Append, Error, ExpectedVersion, ExportConsumer, ExportGroup, ExportHeader, Storage,
    StorageConfig, StoredEvent, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
struct Doc {
    n: u64,
}

const KEY: [u8; 32] = [9u8; 32];
const OTHER_KEY: [u8; 32] = [10u8; 32];

fn config(dir: &Path, key: Option<[u8; 32]>) -> StorageConfig {
    StorageConfig {
        path: dir.into(),
        encryption_enabled: key.is_some(),
        master_key: key,
        ..Default::default()
    }
}

/// A store of `n` events over streams 1 and 2, encrypted under `key` if given.
fn source(dir: &Path, key: Option<[u8; 32]>, n: u64) -> Storage {
    let storage = Storage::open(config(dir, key)).unwrap();
    let writer = Writer::<Doc>::new(storage.clone());
    for i in 0..n {
        writer
            .commit(Append::event(
                1 + u128::from(i % 2),
                ExpectedVersion::Auto,
                &Doc { n: i },
            ))
            .unwrap();
    }
    storage
}

fn export(storage: &Storage) -> (ExportHeader, Vec<StoredEvent>) {
    let txn = storage.read_txn().unwrap();
    let header = storage.export_header(&txn).unwrap();
    let events = storage
        .export_events(&txn, 1)
        .map(|e| {
            e.map(|mut e| {
                e.ends_group = false;
                e
            })
        })
        .collect::<varvedb::Result<Vec<_>>>()
        .unwrap();
    (header, events)
}

fn last_seq(storage: &Storage) -> u64 {
    storage.last_seq(&storage.read_txn().unwrap()).unwrap()
}

/// One refusal: the export (changed by `damage`) imported into a fresh store opened with
/// `key`.
struct Row {
    name: &'static str,
    /// The source's master key.
    source_key: Option<[u8; 32]>,
    /// The destination's.
    key: Option<[u8; 32]>,
    damage: fn(&mut ExportHeader, &mut Vec<StoredEvent>),
    /// A phrase the refusal must carry.
    says: &'static str,
    /// The destination's last sequence afterwards: never an event of the refused part.
    left: u64,
}

#[test]
fn every_import_refusal_is_typed_names_the_fault_and_writes_nothing() {
    let rows = [
        Row {
            name: "an export of another record format",
            source_key: None,
            key: None,
            damage: |h, _| h.format += 100,
            says: "record format",
            left: 0,
        },
        Row {
            name: "streams encrypted under another master key",
            source_key: Some(KEY),
            key: Some(OTHER_KEY),
            damage: |_, _| {},
            says: "master key",
            left: 0,
        },
        Row {
            name: "an empty wrapped key",
            source_key: Some(KEY),
            key: Some(KEY),
            damage: |h, _| h.keys[0].wrapped = Some(Vec::new()),
            says: "an empty key",
            left: 0,
        },
        Row {
            name: "a log that does not start at sequence 1",
            source_key: None,
            key: None,
            damage: |_, e| {
                e.remove(0);
            },
            says: "from sequence 1 without gaps",
            left: 0,
        },
        Row {
            name: "a consumer past the end",
            source_key: None,
            key: None,
            damage: |h, _| {
                h.consumers.push(ExportConsumer {
                    name: "reporting".into(),
                    position: h.last_seq + 5,
                    parked: Vec::new(),
                })
            },
            says: "past the last imported event",
            // The events went in (in their own transaction) before the header's consumers
            // were refused; the consumer did not.
            left: 6,
        },
        Row {
            name: "a consumer group's partition past the end",
            source_key: None,
            key: None,
            damage: |h, _| {
                h.groups.push(ExportGroup {
                    name: "billing".into(),
                    partitions: 2,
                    lease_ms: 10_000,
                    positions: vec![0, h.last_seq + 5],
                    parked: Vec::new(),
                })
            },
            says: "has a partition past the last imported event",
            left: 6,
        },
        Row {
            name: "the reserved stream",
            source_key: None,
            key: None,
            damage: |_, e| e[0].stream_id = u128::MAX,
            says: "reserved",
            left: 0,
        },
        Row {
            name: "an encrypted event of a stream with no key",
            source_key: Some(KEY),
            key: Some(KEY),
            damage: |h, e| {
                let s = e[0].stream_id;
                h.keys.retain(|k| k.stream_id != s);
            },
            says: "which has no key",
            left: 0,
        },
        Row {
            name: "a bound plaintext event",
            source_key: None,
            key: None,
            damage: |_, e| e[0].bound = true,
            says: "cannot be bound",
            left: 0,
        },
        Row {
            name: "an encrypted event with metadata in the clear",
            source_key: Some(KEY),
            key: Some(KEY),
            damage: |_, e| e[0].metadata = vec![("user".into(), "ada".into())],
            says: "not in the clear",
            left: 0,
        },
        Row {
            name: "an event with a payload and a blob reference",
            source_key: None,
            key: None,
            damage: |_, e| e[0].blob_ref = Some(vec![0; 48]),
            says: "both a payload and a blob reference",
            left: 0,
        },
    ];
    for row in &rows {
        let src_dir = tempfile::tempdir().unwrap();
        let src = source(src_dir.path(), row.source_key, 6);
        let (mut header, mut events) = export(&src);
        (row.damage)(&mut header, &mut events);
        let dir = tempfile::tempdir().unwrap();
        let dst = Storage::open(config(dir.path(), row.key)).unwrap();
        let mut importer = dst.importer();
        let outcome = importer
            .begin(&header)
            .and_then(|()| events.iter().try_for_each(|e| importer.push(e.clone())))
            .and_then(|()| importer.finish(&header).map(drop));
        let err = match outcome {
            Err(e) => e,
            Ok(()) => panic!("{}: the import was taken", row.name),
        };
        assert!(
            matches!(&err, Error::InvalidImport { reason, .. } if reason.contains(row.says)),
            "{}: refused as {err:?}, not as InvalidImport saying {:?}",
            row.name,
            row.says
        );
        assert_eq!(last_seq(&dst), row.left, "{}: what was left", row.name);
        assert!(
            dst.consumers().unwrap().is_empty(),
            "{}: a consumer came in",
            row.name
        );
        assert!(
            dst.consumer_groups().unwrap().is_empty(),
            "{}: a group came in",
            row.name
        );
        let verify = dst.verify().unwrap();
        assert!(verify.is_clean(), "{}: {:?}", row.name, verify.problems);
    }
}

/// An append to the destination while an import runs: the import's next commit is refused,
/// and what it committed before, and the append, stay.
#[test]
fn an_import_into_a_store_that_changed_under_it_is_refused() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source(src_dir.path(), None, 6);
    let (header, events) = export(&src);
    let dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dir.path(), None)).unwrap();
    let mut importer = dst.importer();
    importer.begin(&header).unwrap();
    for e in &events[..3] {
        importer.push(e.clone()).unwrap();
    }
    importer.commit().unwrap();
    assert_eq!(last_seq(&dst), 3);
    Writer::<Doc>::new(dst.clone())
        .append(9, ExpectedVersion::NoStream, &Doc { n: 99 })
        .unwrap();
    let err = events[3..]
        .iter()
        .try_for_each(|e| importer.push(e.clone()))
        .and_then(|()| importer.finish(&header).map(drop))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidImport { reason, .. } if reason.contains("the store changed during the import")),
        "{err:?}"
    );
    assert_eq!(
        last_seq(&dst),
        4,
        "the import's three events and the append"
    );
    let txn = dst.read_txn().unwrap();
    assert_eq!(dst.stream_version(&txn, 9).unwrap(), 1);
    drop(txn);
    assert!(dst.verify().unwrap().is_clean());
}

/// An import resumed over a store whose log differs from the export after a common start: the
/// first event that differs is refused, and the store keeps its own.
#[test]
fn an_import_over_other_events_is_refused_at_the_first_that_differs() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source(src_dir.path(), None, 4);
    let (header, events) = export(&src);
    // The destination holds the export's first two events (an import cut short)...
    let dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dir.path(), None)).unwrap();
    let mut importer = dst.importer();
    importer.begin(&header).unwrap();
    for e in &events[..2] {
        importer.push(e.clone()).unwrap();
    }
    importer.commit().unwrap();
    drop(importer);
    // ...and the export resumed into it says something else at sequence 2.
    let mut other = events.clone();
    other[1].payload.as_mut().unwrap()[0] ^= 1;
    other[1].checksum = None;
    let mut importer = dst.importer();
    let err = importer
        .begin(&header)
        .and_then(|()| other.iter().try_for_each(|e| importer.push(e.clone())))
        .and_then(|()| importer.finish(&header).map(drop))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidImport { seq: 2, reason } if reason.contains("already holds a different event")),
        "{err:?}"
    );
    assert_eq!(last_seq(&dst), 2);
    assert!(dst.verify().unwrap().is_clean());
}
