//! The golden stores: stores written by each format's release (`tests/fixtures/format<N>/`,
//! made by `examples/golden_stores.rs` from `tests/fixtures/golden.rs`) must open with every
//! later build (a store of an older format is upgraded as it opens), every event readable with
//! its envelope, and `verify` clean. A format change keeps this test green through an upgrade;
//! this test may never be changed to accept less, and a format's stores are never removed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "fixtures/golden.rs"]
mod golden;

use std::path::Path;

use golden::{GoldenDoc, STORES, golden};
use varvedb::{Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

/// The formats with golden stores, and the stores each has: format 4 (0.5.0) has the four
/// without removals and groups, which it did not know; every later format has all.
const FORMATS: [(u32, &[&str]); 2] = [
    (4, &["plaintext", "encrypted", "blobs", "envelope"]),
    (5, &STORES),
];

/// A copy of the fixture `name` of format `format` in a scratch directory (the committed bytes
/// stay as they are).
fn copy(format: u32, name: &str) -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("format{format}"))
        .join(name)
        .join("data.mdb");
    assert!(
        fixture.exists(),
        "the golden store {name} is missing: `cargo run -p varvedb --example golden_stores`"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("data.mdb")).unwrap();
    dir
}

fn open(dir: &Path, name: &str) -> Storage {
    let key = (name == "encrypted").then_some(golden::KEY);
    Storage::open(StorageConfig {
        path: dir.into(),
        encryption_enabled: key.is_some(),
        master_key: key,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("the golden store {name} does not open: {e}"))
}

fn check(format: u32, name: &str) {
    let dir = copy(format, name);
    let storage = open(dir.path(), name);
    // An older format was upgraded as the store opened.
    assert_eq!(
        storage.stats().unwrap().format,
        Storage::FORMAT_VERSION,
        "{name} of format {format}"
    );
    let g = golden(name);
    let reader = Reader::<GoldenDoc>::new(storage.clone());
    {
        let txn = storage.read_txn().unwrap();
        assert_eq!(
            storage.last_seq(&txn).unwrap(),
            g.last_seq,
            "{name}: last sequence"
        );
        let mut expected = g.events.iter().peekable();
        for seq in 1..=g.last_seq {
            let Some(e) = expected.next_if(|e| e.seq == seq) else {
                assert!(
                    reader.get(&txn, seq).unwrap().is_none(),
                    "{name}: event {seq} was removed"
                );
                continue;
            };
            let Some(doc) = &e.doc else {
                assert!(
                    matches!(reader.get(&txn, seq), Err(Error::Shredded { .. })),
                    "{name}: event {seq} is shredded"
                );
                continue;
            };
            let event = reader
                .get(&txn, seq)
                .unwrap_or_else(|err| panic!("{name}: event {seq}: {err}"))
                .unwrap_or_else(|| panic!("{name}: event {seq} is missing"));
            assert_eq!(
                (event.stream_id(), event.version()),
                (e.stream, e.version),
                "{name}: event {seq}"
            );
            assert_eq!(event.n, doc.n, "{name}: event {seq}");
            assert_eq!(event.note.as_str(), doc.note, "{name}: event {seq}");
            assert_eq!(
                event.body.as_slice(),
                doc.body.as_slice(),
                "{name}: event {seq}"
            );
            assert_eq!(event.event_id(), e.event_id, "{name}: event {seq}");
            assert_eq!(
                event.correlation_id(),
                e.correlation_id,
                "{name}: event {seq}"
            );
            assert_eq!(event.causation_id(), e.causation_id, "{name}: event {seq}");
            let tags: Vec<&str> = event.tags().collect();
            assert_eq!(tags, e.tags, "{name}: event {seq}");
            let metadata: Vec<(String, String)> = event
                .metadata()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(metadata, e.metadata, "{name}: event {seq}");
            // By version too.
            let again = reader
                .get_by_version(&txn, e.stream, e.version)
                .unwrap()
                .unwrap();
            assert_eq!(again.seq(), seq);
        }
        // The log read in order holds the kept events, and only them.
        let read: Vec<u64> = reader
            .read_all(&txn, 1)
            .filter_map(|e| e.ok().map(|e| e.seq()))
            .collect();
        let kept: Vec<u64> = g
            .events
            .iter()
            .filter(|e| e.doc.is_some())
            .map(|e| e.seq)
            .collect();
        assert_eq!(read, kept, "{name}: the log read in order");
        for &(stream, version) in &g.versions {
            assert_eq!(
                storage.stream_version(&txn, stream).unwrap(),
                version,
                "{name}: stream {stream}"
            );
        }
        for &stream in &g.shredded {
            assert!(
                storage.is_shredded(&txn, stream).unwrap(),
                "{name}: {stream}"
            );
        }
        for (projection, key, value) in &g.model {
            assert_eq!(
                storage.projection_get(&txn, projection, key).unwrap(),
                Some(value.as_slice()),
                "{name}: model of {projection}"
            );
        }
    }
    for (consumer, position) in &g.consumers {
        assert_eq!(
            storage.consumer_position(consumer).unwrap(),
            Some(*position),
            "{name}: consumer {consumer}"
        );
    }
    for (consumer, seq) in &g.parked {
        let parked = storage.parked_events(consumer).unwrap();
        assert!(
            parked.iter().any(|p| p.seq == *seq),
            "{name}: {consumer} parked {seq}"
        );
    }
    for (group, partitions, position) in &g.groups {
        let groups = storage.consumer_groups().unwrap();
        let found = groups
            .iter()
            .find(|x| x.name == *group)
            .unwrap_or_else(|| panic!("{name}: group {group}"));
        assert_eq!(found.partitions, *partitions);
        assert!(
            found
                .partition_states
                .iter()
                .all(|p| p.position == *position)
        );
    }
    for (stream, policy) in &g.policies {
        match stream {
            Some(s) => assert_eq!(storage.stream_retention(*s).unwrap(), Some(*policy)),
            None => assert_eq!(storage.default_retention().unwrap(), Some(*policy)),
        }
    }
    let report = storage.verify().unwrap();
    assert!(report.is_clean(), "{name}: {:?}", report.problems);
    // The store takes appends as a store of this build: the next version of a stream, a
    // tombstone still refusing.
    let writer = Writer::<GoldenDoc>::new(storage.clone());
    for &stream in &g.tombstoned {
        assert!(matches!(
            writer.append(stream, ExpectedVersion::Auto, &golden::doc(9, 1)),
            Err(Error::StreamDeleted { .. })
        ));
    }
    let (stream, version) = g.versions[0];
    if !g.tombstoned.contains(&stream) && !g.shredded.contains(&stream) {
        let a = writer
            .append(stream, ExpectedVersion::Exact(version), &golden::doc(9, 1))
            .unwrap();
        assert_eq!((a.seq, a.version), (g.last_seq + 1, version + 1));
    }
    assert!(
        storage.verify().unwrap().is_clean(),
        "{name}: after an append"
    );
}

#[test]
fn every_golden_store_of_every_format_opens_reads_and_verifies() {
    assert_eq!(
        FORMATS.last().map(|f| f.0),
        Some(Storage::FORMAT_VERSION),
        "the format this build writes has no golden stores: run `cargo run -p varvedb --example golden_stores`"
    );
    for (format, stores) in FORMATS {
        for name in stores {
            check(format, name);
        }
    }
}

#[test]
fn the_encrypted_golden_store_keeps_its_secrets_without_the_key() {
    let dir = copy(Storage::FORMAT_VERSION, "encrypted");
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    let txn = storage.read_txn().unwrap();
    let reader = Reader::<GoldenDoc>::new(storage.clone());
    assert!(matches!(
        reader.get(&txn, 1),
        Err(Error::MasterKeyRequired { .. })
    ));
    // No document's text in the file (the plaintext store has it: the scan can see it).
    let has_text = |store: &str| {
        let bytes =
            std::fs::read(copy(Storage::FORMAT_VERSION, store).path().join("data.mdb")).unwrap();
        bytes.windows(7).any(|w| w == b"golden ")
    };
    assert!(has_text("plaintext"));
    assert!(!has_text("encrypted"));
}
