//! Export and import: a store rebuilt from its export holds the same events, byte for byte
//! (envelope, metadata, event ids, blobs, encrypted and shredded streams), passes `verify`,
//! and an interrupted import continues where it stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::path::Path;
use std::time::Duration;

use common::pattern;
use varvedb::{
    Append, AppendOptions, Error, EventHandler, EventId, EventRef, ExpectedVersion, ExportHeader,
    HandlerError, OnError, Processor, ProcessorOptions, Reader, Storage, StorageConfig,
    StoredEvent, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
struct Doc {
    n: u64,
    body: Vec<u8>,
}

const KEY: [u8; 32] = [9u8; 32];

fn config(dir: &Path, key: Option<[u8; 32]>) -> StorageConfig {
    StorageConfig {
        path: dir.into(),
        encryption_enabled: key.is_some(),
        master_key: key,
        ..Default::default()
    }
}

fn doc(n: u64, len: usize) -> Doc {
    Doc {
        n,
        body: pattern(len, n),
    }
}

/// A store with every kind of event: small and blob payloads (one of them deduplicated),
/// metadata, event ids, plaintext streams from before encryption was turned on, encrypted
/// streams (inline and blob), a shredded stream with a released blob, and a consumer with a
/// parked event.
fn source(dir: &Path) -> Storage {
    {
        let plain = Storage::open(config(dir, None)).unwrap();
        let w = Writer::<Doc>::new(plain.clone());
        for i in 0..20u64 {
            let options = AppendOptions::new()
                .event_id(EventId::from_u128(1000 + u128::from(i)))
                .correlation_id(EventId::from_u128(7))
                .metadata("user", format!("u{i}"))
                .metadata("attempt", "1");
            w.commit(
                Append::event(1 + u128::from(i % 3), ExpectedVersion::Auto, &doc(i, 40))
                    .options(options),
            )
            .map(|v| v[0])
            .unwrap();
        }
        // Two identical large payloads: one blob, two references.
        w.append(4, ExpectedVersion::Auto, &doc(99, 5000)).unwrap();
        w.append(5, ExpectedVersion::Auto, &doc(99, 5000)).unwrap();
        w.append_batch(
            6,
            ExpectedVersion::NoStream,
            &[doc(1, 3000), doc(2, 10), doc(3, 100_000)],
        )
        .unwrap();
        w.close().unwrap();
    }
    let storage = Storage::open(config(dir, Some(KEY))).unwrap();
    let w = Writer::<Doc>::new(storage.clone());
    for i in 0..6u64 {
        let options = AppendOptions::new()
            .event_id(EventId::from_u128(5000 + u128::from(i)))
            .metadata("secret-meta", "m");
        w.commit(
            Append::event(100 + u128::from(i % 2), ExpectedVersion::Auto, &doc(i, 30))
                .options(options),
        )
        .map(|v| v[0])
        .unwrap();
    }
    w.append(100, ExpectedVersion::Auto, &doc(50, 8000))
        .unwrap();
    w.append(102, ExpectedVersion::Auto, &doc(51, 9000))
        .unwrap();
    w.append(102, ExpectedVersion::Auto, &doc(52, 20)).unwrap();
    storage.shred_stream(102).unwrap();
    // More plaintext-stream events after the encrypted ones.
    w.append(1, ExpectedVersion::Auto, &doc(60, 20)).unwrap();

    // A consumer that parks event 2.
    struct FailsOnTwo;
    impl EventHandler<Doc> for FailsOnTwo {
        fn handle(&mut self, event: &EventRef<'_, Doc>) -> Result<(), HandlerError> {
            if event.seq() == 2 {
                return Err("two is refused".into());
            }
            Ok(())
        }
    }
    let head = storage.stats().unwrap().last_seq;
    let p = Processor::new(
        Reader::<Doc>::new(storage.clone()),
        FailsOnTwo,
        "auditor",
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        on_error: OnError::RetryThenPark {
            attempts: 1,
            backoff_ms: 1,
        },
        ..Default::default()
    });
    common::run_to(&common::runtime(), &storage, p, "auditor", head);
    assert_eq!(storage.parked_events("auditor").unwrap().len(), 1);
    storage
}

/// The header and events of an export. Commit-group ends are left out: they follow each
/// store's own transactions (an import writes its own), not the events.
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

fn import(
    storage: &Storage,
    header: &ExportHeader,
    events: &[StoredEvent],
) -> varvedb::ImportReport {
    let mut importer = storage.importer();
    importer.begin(header).unwrap();
    for e in events {
        importer.push(e.clone()).unwrap();
    }
    importer.finish(header).unwrap()
}

#[test]
fn an_export_imported_gives_the_same_events_and_a_store_that_verifies() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source(src_dir.path());
    let (header, events) = export(&src);
    assert_eq!(header.last_seq, events.len() as u64);
    assert!(
        events
            .iter()
            .any(|e| e.blob && e.encrypted && e.payload.is_some())
    );
    assert!(
        events
            .iter()
            .any(|e| e.blob && e.payload.is_none() && e.blob_ref.is_some())
    );
    assert!(
        events
            .iter()
            .any(|e| !e.metadata.is_empty() && e.event_id.is_some())
    );
    assert_eq!(header.consumers.len(), 1);
    assert_eq!(header.consumers[0].parked.len(), 1);

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    let report = import(&dst, &header, &events);
    assert_eq!(report.imported, events.len() as u64);
    assert_eq!(report.already_present, 0);
    assert_eq!(report.consumers, 1);

    // The rebuilt store exports exactly what the source did, and verifies clean.
    let (header2, events2) = export(&dst);
    assert_eq!(header2, header);
    assert_eq!(events2, events);
    let verified = dst.verify().unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    let src_verified = src.verify().unwrap();
    assert_eq!(verified.blobs, src_verified.blobs);
    assert_eq!(verified.event_ids, src_verified.event_ids);
    assert_eq!(
        dst.stats().unwrap().blob_bytes,
        src.stats().unwrap().blob_bytes
    );
    drop(dst);

    // With the master key, the imported encrypted streams read; the shredded one stays so.
    let dst = Storage::open(config(dst_dir.path(), Some(KEY))).unwrap();
    let reader = Reader::<Doc>::new(dst.clone());
    let txn = dst.read_txn().unwrap();
    let secrets: Vec<u64> = reader
        .read_stream(&txn, 100, 1)
        .map(|e| e.unwrap().n.to_native())
        .collect();
    assert_eq!(secrets, [0, 2, 4, 50]);
    let first = reader.get_by_version(&txn, 100, 1).unwrap().unwrap();
    assert_eq!(first.metadata().get("secret-meta"), Some("m"));
    assert!(matches!(
        reader.get_by_version(&txn, 102, 1),
        Err(Error::Shredded { .. })
    ));
    // The idempotency index came along: a retry of an imported id is answered, not doubled.
    drop(txn);
    let w = Writer::<Doc>::new(dst.clone());
    let retry = w
        .commit(
            Append::event(1, ExpectedVersion::Auto, &doc(0, 40))
                .options(AppendOptions::new().event_id(EventId::from_u128(1000))),
        )
        .map(|v| v[0])
        .unwrap();
    assert_eq!(retry.seq, 1);
    assert_eq!(
        dst.consumer_position("auditor").unwrap(),
        Some(header.last_seq)
    );
    assert_eq!(dst.parked_events("auditor").unwrap()[0].seq, 2);
}

#[test]
fn an_interrupted_import_continues_and_a_foreign_store_is_refused() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source(src_dir.path());
    let (header, events) = export(&src);

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    // The first attempt stops half way (its importer dropped without `finish`, as a killed
    // import would); what it pushed past the last full batch is simply not there.
    {
        let mut importer = dst.importer();
        importer.begin(&header).unwrap();
        for e in &events[..events.len() / 2] {
            importer.push(e.clone()).unwrap();
        }
        importer
            .finish(&ExportHeader {
                last_seq: (events.len() / 2) as u64,
                consumers: Vec::new(),
                ..header.clone()
            })
            .unwrap();
    }
    let report = import(&dst, &header, &events);
    assert_eq!(report.already_present, (events.len() / 2) as u64);
    assert_eq!(report.imported, (events.len() - events.len() / 2) as u64);
    assert_eq!(export(&dst).1, events);
    assert!(dst.verify().unwrap().problems.is_empty());

    // A store holding other events refuses the import, and is left as it was.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Storage::open(config(other_dir.path(), None)).unwrap();
    Writer::<Doc>::new(other.clone())
        .append(1, ExpectedVersion::Auto, &doc(1, 1))
        .unwrap();
    // Named as another store's export at once, from the header's origin (its first event).
    let refused = other.importer().begin(&header);
    assert!(
        matches!(&refused, Err(Error::InvalidImport { seq: 0, reason }) if reason.contains("the export is of another store")),
        "{refused:?}"
    );
    // An export without an origin (older than it) is refused at its first event.
    let no_origin = ExportHeader {
        origin: None,
        ..header.clone()
    };
    let mut importer = other.importer();
    importer.begin(&no_origin).unwrap();
    let refused = events
        .iter()
        .try_for_each(|e| importer.push(e.clone()))
        .and_then(|()| importer.finish(&no_origin).map(drop));
    assert!(
        matches!(refused, Err(Error::InvalidImport { seq: 1, .. })),
        "{refused:?}"
    );
    assert_eq!(export(&other).1.len(), 1);
}

#[test]
fn malformed_imports_are_refused_with_the_event_named_and_nothing_of_its_batch_written() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source(src_dir.path());
    let (header, events) = export(&src);
    let refuse = |mutate: &dyn Fn(&mut Vec<StoredEvent>)| {
        let mut events = events.clone();
        mutate(&mut events);
        let dir = tempfile::tempdir().unwrap();
        let dst = Storage::open(config(dir.path(), None)).unwrap();
        let mut importer = dst.importer();
        importer.begin(&header).unwrap();
        let outcome = events
            .iter()
            .try_for_each(|e| importer.push(e.clone()))
            .and_then(|()| importer.finish(&header).map(drop));
        let err = outcome.expect_err("refused");
        assert!(matches!(err, Error::InvalidImport { .. }), "{err}");
        assert!(
            export(&dst).1.is_empty(),
            "nothing of the batch was written"
        );
        err.to_string()
    };
    let gap = refuse(&|e| {
        e.remove(3);
    });
    assert!(gap.contains("without gaps"), "{gap}");
    let version = refuse(&|e| e[5].version += 1);
    assert!(version.contains("version"), "{version}");
    let plaintext_in_encrypted = refuse(&|e| {
        let i = e.iter().position(|e| e.encrypted).unwrap();
        e[i].encrypted = false;
    });
    assert!(
        plaintext_in_encrypted.contains("encrypted"),
        "{plaintext_in_encrypted}"
    );
    let no_payload = refuse(&|e| e[0].payload = None);
    assert!(no_payload.contains("payload"), "{no_payload}");
    let duplicate_id = refuse(&|e| e[1].event_id = e[0].event_id);
    assert!(duplicate_id.contains("event id"), "{duplicate_id}");

    // A truncated export: what came is imported, and the import says it is incomplete.
    let dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dir.path(), None)).unwrap();
    let mut importer = dst.importer();
    importer.begin(&header).unwrap();
    for e in &events[..events.len() - 1] {
        importer.push(e.clone()).unwrap();
    }
    let err = importer.finish(&header).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(export(&dst).1.len(), events.len() - 1);
    assert_eq!(
        dst.consumer_position("auditor").unwrap(),
        None,
        "no consumer moved"
    );
}

const IMPORT_CHILD_SRC: &str = "VARVEDB_TEST_IMPORT_SRC";
const IMPORT_CHILD_DST: &str = "VARVEDB_TEST_IMPORT_DST";

/// In the child: imports the store at `IMPORT_CHILD_SRC` into `IMPORT_CHILD_DST` (until the
/// parent kills it).
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_imports() {
    let (Ok(src), Ok(dst)) = (
        std::env::var(IMPORT_CHILD_SRC),
        std::env::var(IMPORT_CHILD_DST),
    ) else {
        return;
    };
    let src = Storage::open(config(Path::new(&src), None)).unwrap();
    let dst = Storage::open(config(Path::new(&dst), None)).unwrap();
    let (header, events) = export(&src);
    import(&dst, &header, &events);
}

/// A killed import leaves a durable, verifiable prefix of the export; importing again checks
/// that prefix and finishes, byte for byte.
#[test]
fn a_killed_import_leaves_a_clean_prefix_and_importing_again_finishes_it() {
    let src_dir = tempfile::tempdir().unwrap();
    {
        let src = Storage::open(config(src_dir.path(), None)).unwrap();
        let w = Writer::<Doc>::new(src.clone());
        for b in 0..60u64 {
            let batch: Vec<Doc> = (0..1_000).map(|i| doc(b * 1_000 + i, 24)).collect();
            w.append_batch(1 + u128::from(b % 7), ExpectedVersion::Auto, &batch)
                .unwrap();
        }
        w.append(99, ExpectedVersion::Auto, &doc(1, 5_000)).unwrap();
        w.close().unwrap();
    }
    let dst_dir = tempfile::tempdir().unwrap();
    let mut killed_with = Vec::new();
    for _ in 0..2 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--ignored",
                "child_imports",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(IMPORT_CHILD_SRC, src_dir.path())
            .env(IMPORT_CHILD_DST, dst_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it once it has committed at least one more batch than before.
        let before = killed_with.last().copied().unwrap_or(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let last = Storage::open_existing(config(dst_dir.path(), None))
                .ok()
                .and_then(|s| s.stats().ok())
                .map_or(0, |s| s.last_seq);
            if last > before || std::time::Instant::now() > deadline {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
        assert!(
            dst.verify().unwrap().is_clean(),
            "the killed import left damage"
        );
        let prefix = export(&dst).1;
        killed_with.push(prefix.len() as u64);
        drop(dst);
    }
    let src = Storage::open(config(src_dir.path(), None)).unwrap();
    let (header, events) = export(&src);
    assert!(
        killed_with[0] > 0 && killed_with[0] < events.len() as u64,
        "the first kill landed mid-import: {killed_with:?}"
    );
    let dst = Storage::open(config(dst_dir.path(), None)).unwrap();
    let prefix = export(&dst).1;
    assert_eq!(
        prefix[..],
        events[..prefix.len()],
        "what is there is the export's prefix"
    );
    let report = import(&dst, &header, &events);
    assert_eq!(report.already_present, prefix.len() as u64);
    assert_eq!(export(&dst).1, events);
    assert!(dst.verify().unwrap().is_clean());
}

/// An import is no way around the store's limits or its keys: an event past
/// `event_bytes_max` is refused, as its append would be; wrapped keys with no key check are
/// refused (nothing would say which master key wraps them, and a later rotation would fail for
/// the whole store); and a key that does not open under the store's master key is refused.
#[test]
fn imports_keep_the_event_limit_and_refuse_keys_they_cannot_vouch_for() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Storage::open(config(src_dir.path(), Some(KEY))).unwrap();
    Writer::<Doc>::new(src.clone())
        .append(1, ExpectedVersion::NoStream, &doc(1, 3000))
        .unwrap();
    let (header, events) = export(&src);
    assert!(header.key_check.is_some() && header.keys.len() == 1);

    // The event is over a small limit.
    let dir = tempfile::tempdir().unwrap();
    let small = Storage::open(StorageConfig {
        event_bytes_max: 1024,
        blob_threshold_bytes: usize::MAX,
        ..config(dir.path(), Some(KEY))
    })
    .unwrap();
    let mut importer = small.importer();
    importer.begin(&header).unwrap();
    let err = importer.push(events[0].clone()).unwrap_err();
    assert!(
        matches!(err, Error::EventTooLarge { max: 1024, .. }),
        "{err}"
    );
    assert!(matches!(
        importer.push_group(events.clone()),
        Err(Error::EventTooLarge { .. })
    ));
    drop((importer, small));

    // No key check beside a wrapped key.
    let dir = tempfile::tempdir().unwrap();
    let keyless = Storage::open(config(dir.path(), None)).unwrap();
    let mut no_check = header.clone();
    no_check.key_check = None;
    let err = keyless.importer().begin(&no_check).unwrap_err();
    assert!(err.to_string().contains("no key check"), "{err}");
    // And nothing of that header was written: the store is still plaintext and empty.
    assert!(!keyless.is_encrypted());
    drop(keyless);

    // A wrapped key that does not open under this store's master key (a key check that does).
    let dir = tempfile::tempdir().unwrap();
    let other = Storage::open(config(dir.path(), Some(KEY))).unwrap();
    let mut forged = header.clone();
    let wrapped = forged.keys[0].wrapped.as_mut().unwrap();
    let last = wrapped.len() - 1;
    wrapped[last] ^= 1;
    let err = other.importer().begin(&forged).unwrap_err();
    assert!(err.to_string().contains("does not open"), "{err}");
    // The genuine header goes in, and the store takes the export's store id (its key check):
    // the imported event is bound to it, and reads.
    let report = import(&other, &header, &events);
    assert_eq!(report.imported, 1);
    let txn = other.read_txn().unwrap();
    let read = Reader::<Doc>::new(other.clone())
        .get(&txn, 1)
        .unwrap()
        .unwrap();
    assert_eq!(read.n, 1);
    drop(txn);

    // A store with encrypted streams of its own is bound to its own store id: the export's
    // encrypted events, bound to another, are refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let own = Storage::open(config(dir.path(), Some(KEY))).unwrap();
    Writer::<Doc>::new(own.clone())
        .append(9, ExpectedVersion::NoStream, &doc(9, 10))
        .unwrap();
    let err = own.importer().begin(&header).unwrap_err();
    assert!(
        err.to_string().contains("the export is of another store"),
        "{err}"
    );
    let no_origin = ExportHeader {
        origin: None,
        ..header.clone()
    };
    let err = own.importer().begin(&no_origin).unwrap_err();
    assert!(err.to_string().contains("bound to another store"), "{err}");
    let txn = own.read_txn().unwrap();
    assert!(
        Reader::<Doc>::new(own.clone())
            .get(&txn, 1)
            .unwrap()
            .is_some()
    );
    assert_eq!(own.raw_reader().read_all(&txn, 1).count(), 1);
}

/// An export carries each record's checksum, which covers its payload, its envelope and (for a
/// blob event, through the blob's reference) its blob: one flipped byte anywhere is refused,
/// naming the event, and nothing of its batch is written.
#[test]
fn a_flipped_byte_in_an_exported_event_is_refused_naming_its_sequence() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source(src_dir.path());
    let (header, events) = export(&src);
    assert!(events.iter().all(|e| e.checksum.is_some()));
    let inline = events
        .iter()
        .position(|e| !e.blob && !e.encrypted && e.payload.is_some())
        .unwrap();
    let blob = events
        .iter()
        .position(|e| e.blob && e.payload.is_some())
        .unwrap();
    for (which, at) in [("inline", inline), ("blob", blob)] {
        let mut damaged = events.clone();
        let payload = damaged[at].payload.as_mut().unwrap();
        let middle = payload.len() / 2;
        payload[middle] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        let dst = Storage::open(config(dir.path(), Some(KEY))).unwrap();
        let mut importer = dst.importer();
        importer.begin(&header).unwrap();
        let seq = damaged[at].seq;
        let result = damaged
            .into_iter()
            .try_for_each(|e| importer.push(e))
            .and_then(|()| importer.finish(&header).map(drop));
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidImport { seq: s, reason } if *s == seq && reason.contains("checksum")),
            "{which}: {err}"
        );
        // Nothing at or after the damaged event was written.
        let txn = dst.read_txn().unwrap();
        assert!(dst.last_seq(&txn).unwrap() < seq, "{which}");
    }
    // A metadata change is caught the same way.
    let with_meta = events.iter().position(|e| !e.metadata.is_empty()).unwrap();
    let mut damaged = events.clone();
    damaged[with_meta].metadata[0].1.push('!');
    let dir = tempfile::tempdir().unwrap();
    let dst = Storage::open(config(dir.path(), Some(KEY))).unwrap();
    let mut importer = dst.importer();
    importer.begin(&header).unwrap();
    let err = damaged
        .into_iter()
        .try_for_each(|e| importer.push(e))
        .and_then(|()| importer.finish(&header).map(drop))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidImport { .. }), "{err}");
}
