//! Encryption at rest and crypto-shredding: per-stream keys under a master key, nothing in
//! plaintext on disk, authenticated ciphertexts, shredding, rotation and the compacting copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::path::Path;

use common::pattern;
use varvedb::{
    Append, AppendOptions, Error, EventId, ExpectedVersion, Reader, Storage, StorageConfig, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
struct Secret {
    n: u64,
    text: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
struct Doc {
    marker: String,
    body: Vec<u8>,
}

const KEY: [u8; 32] = [7u8; 32];

fn encrypted(dir: &Path) -> StorageConfig {
    StorageConfig {
        path: dir.into(),
        encryption_enabled: true,
        master_key: Some(KEY),
        ..Default::default()
    }
}

fn open(dir: &Path) -> Storage {
    Storage::open(encrypted(dir)).unwrap()
}

/// Every file of the store's directory, concatenated.
fn files(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
// The issue's own words: `[7u8; 32].into()` must compile.
#[allow(clippy::useless_conversion)]
fn the_issue_example_shreds_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        encryption_enabled: true,
        master_key: Some([7u8; 32].into()),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Secret>::new(storage.clone());
    writer
        .append(
            66,
            ExpectedVersion::Auto,
            &Secret {
                n: 1,
                text: "card 4111".into(),
            },
        )
        .unwrap();
    storage.shred_stream(66).unwrap();
    assert!(matches!(
        Reader::<Secret>::new(storage.clone()).get(&storage.read_txn().unwrap(), 1),
        Err(Error::Shredded { .. })
    ));
    // A shredded stream takes no more events.
    let refused = writer.append(
        66,
        ExpectedVersion::Auto,
        &Secret {
            n: 2,
            text: "again".into(),
        },
    );
    assert!(
        matches!(refused, Err(Error::StreamShredded { stream_id: 66 })),
        "{refused:?}"
    );
}

#[test]
fn events_round_trip_and_nothing_reaches_the_disk_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let writer = Writer::<Doc>::new(storage.clone());
    let small = Doc {
        marker: "INLINE-MARKER-4111".into(),
        body: pattern(100, 1),
    };
    let large = Doc {
        marker: "BLOB-MARKER-4222".into(),
        body: pattern(50_000, 2),
    };
    let opts = AppendOptions::new()
        .event_id(EventId::from_u128(5))
        .metadata("tenant", "METADATA-MARKER-77");
    writer
        .commit(Append::event(1, ExpectedVersion::NoStream, &small).options(opts))
        .map(|v| v[0])
        .unwrap();
    writer.append(1, ExpectedVersion::Exact(1), &large).unwrap();
    storage.flush().unwrap();

    let reader = Reader::<Doc>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let a = reader.get(&txn, 1).unwrap().unwrap();
    assert_eq!(a.marker, "INLINE-MARKER-4111");
    assert_eq!(a.metadata().get("tenant"), Some("METADATA-MARKER-77"));
    assert_eq!(a.event_id(), Some(EventId::from_u128(5)));
    assert!(a.is_encrypted() && !a.is_zero_copy());
    let b = reader.get(&txn, 2).unwrap().unwrap();
    assert_eq!(b.body.len(), 50_000);
    assert!(b.is_blob() && b.is_encrypted());
    let versions: Vec<u32> = reader
        .read_stream(&txn, 1, 1)
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(versions, [1, 2]);
    drop((a, b));
    drop(txn);

    let bytes = files(dir.path());
    for marker in [
        &b"INLINE-MARKER-4111"[..],
        b"BLOB-MARKER-4222",
        b"METADATA-MARKER-77",
        &pattern(100, 1)[20..60],
        &pattern(50_000, 2)[1000..1040],
    ] {
        assert!(!contains(&bytes, marker), "plaintext {marker:?} on disk");
    }
    // The type name and the event id stay visible (tools and idempotency work without keys).
    assert!(contains(&bytes, b"Doc"));
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn a_tampered_or_moved_ciphertext_does_not_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        let writer = Writer::<Secret>::new(storage.clone());
        for (stream, n) in [(1, 1), (2, 2)] {
            writer
                .append(
                    stream,
                    ExpectedVersion::NoStream,
                    &Secret {
                        n,
                        text: "same length text".into(),
                    },
                )
                .unwrap();
        }
    }
    // Swap the two records' sealed bodies (same length): each is now in the wrong stream and
    // sequence. The checksums are recomputed, as an attacker would (`tamper`).
    let body = |seq: u64| {
        // Each append is a pack of one record.
        let pack = common::raw_get(dir.path(), "events", &seq.to_be_bytes()).unwrap();
        let record = varvedb::__bench::pack_records(seq, &pack).unwrap()[0].clone();
        pack[record.start + 64..record.end].to_vec()
    };
    let (one, two) = (body(1), body(2));
    assert_eq!(one.len(), two.len());
    tamper(dir.path(), 1, |r| r[64..].copy_from_slice(&two));
    tamper(dir.path(), 2, |r| r[64..].copy_from_slice(&one));
    let storage = open(dir.path());
    let reader = Reader::<Secret>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for seq in [1, 2] {
        let err = reader.get(&txn, seq).unwrap_err();
        assert!(
            matches!(err, Error::AuthenticationFailed { seq: s } if s == seq),
            "{err:?}"
        );
    }
}

#[test]
fn shredding_makes_a_stream_unreadable_and_reads_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let writer = Writer::<Doc>::new(storage.clone());
    for stream in [1u128, 2, 1, 2] {
        writer
            .append(
                stream,
                ExpectedVersion::Auto,
                &Doc {
                    marker: format!("s{stream}"),
                    body: pattern(5000, stream as u64),
                },
            )
            .unwrap();
    }
    let blobs_before = storage.stats().unwrap().blobs;
    assert_eq!(blobs_before, 4, "encrypted events never share a blob");
    let report = storage.shred_stream(1).unwrap();
    assert_eq!((report.events, report.blobs_released), (2, 2));
    assert!(storage.shred_stream(1).unwrap().already);
    assert_eq!(storage.stats().unwrap().blobs, 2);

    let reader = Reader::<Doc>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(storage.is_shredded(&txn, 1).unwrap());
    let all: Vec<_> = reader.read_all(&txn, 1).collect();
    assert_eq!(all.len(), 4, "the scan passes over shredded events");
    let readable: Vec<u64> = all
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|e| e.seq()))
        .collect();
    assert_eq!(readable, [2, 4]);
    assert!(matches!(
        all[0],
        Err(Error::Shredded {
            seq: 1,
            stream_id: 1
        })
    ));
    let stream: Vec<_> = reader.read_stream(&txn, 1, 1).collect();
    assert_eq!(stream.len(), 2);
    assert!(
        stream
            .iter()
            .all(|r| matches!(r, Err(Error::Shredded { .. })))
    );
    // The untyped view still shows the envelope.
    let raw = storage.raw_reader().get(&txn, 1).unwrap().unwrap();
    assert!(raw.is_shredded() && raw.is_encrypted());
    assert_eq!((raw.event_type(), raw.stream_id()), ("Doc", 1));
    assert!(raw.payload_bytes().is_empty());
    drop((raw, all, stream));
    drop(txn);

    let err = writer
        .append(
            1,
            ExpectedVersion::Auto,
            &Doc {
                marker: "again".into(),
                body: Vec::new(),
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::StreamShredded { stream_id: 1 }),
        "{err:?}"
    );
    assert!(storage.verify().unwrap().is_clean());
    // A plaintext stream cannot be shredded.
    let plain = tempfile::tempdir().unwrap();
    let storage = common::open(&plain);
    Writer::<Doc>::new(storage.clone())
        .append(
            9,
            ExpectedVersion::Auto,
            &Doc {
                marker: "p".into(),
                body: Vec::new(),
            },
        )
        .unwrap();
    assert!(matches!(
        storage.shred_stream(9),
        Err(Error::StreamNotEncrypted { stream_id: 9 })
    ));
}

#[test]
fn a_compacting_copy_after_a_shred_carries_no_trace_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    Writer::<Secret>::new(storage.clone())
        .append(
            3,
            ExpectedVersion::NoStream,
            &Secret {
                n: 1,
                text: "x".into(),
            },
        )
        .unwrap();
    Writer::<Secret>::new(storage.clone())
        .append(
            4,
            ExpectedVersion::NoStream,
            &Secret {
                n: 2,
                text: "kept".into(),
            },
        )
        .unwrap();
    let wrapped = varvedb::__bench::keystore_entry(&storage, 3).unwrap();
    assert_eq!(wrapped.len(), 61);
    storage.shred_stream(3).unwrap();
    let copy = tempfile::tempdir().unwrap();
    let dest = copy.path().join("backup");
    storage.compact_to(&dest).unwrap();
    let bytes = files(&dest);
    assert!(
        !contains(&bytes, &wrapped),
        "the wrapped key survived in the copy"
    );
    drop(storage);
    let copied = open(&dest);
    let reader = Reader::<Secret>::new(copied.clone());
    let txn = copied.read_txn().unwrap();
    assert!(matches!(reader.get(&txn, 1), Err(Error::Shredded { .. })));
    assert_eq!(reader.get(&txn, 2).unwrap().unwrap().text, "kept");
}

#[test]
fn the_wrong_master_key_is_refused_at_open_and_no_key_cannot_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let err = Storage::open(StorageConfig {
        master_key: Some([8u8; 32]),
        ..encrypted(dir.path())
    })
    .unwrap_err();
    assert!(matches!(err, Error::WrongMasterKey), "{err:?}");
    let err = Storage::open(StorageConfig {
        master_key: None,
        ..encrypted(dir.path())
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "master_key",
                ..
            }
        ),
        "{err:?}"
    );
    // Debug never shows the key.
    let shown = format!("{:?}", encrypted(dir.path()));
    assert!(
        shown.contains("<redacted>") && !shown.contains("7, 7"),
        "{shown}"
    );
}

#[test]
fn without_the_key_envelopes_read_and_payloads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        Writer::<Secret>::new(storage)
            .append(
                1,
                ExpectedVersion::NoStream,
                &Secret {
                    n: 1,
                    text: "s".into(),
                },
            )
            .unwrap();
    }
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    let txn = storage.read_txn().unwrap();
    let raw = storage.raw_reader().get(&txn, 1).unwrap().unwrap();
    assert_eq!(raw.event_type(), "Secret");
    assert!(raw.is_encrypted() && raw.payload_bytes().is_empty());
    assert!(matches!(
        Reader::<Secret>::new(storage.clone()).get(&txn, 1),
        Err(Error::MasterKeyRequired { stream_id: 1 })
    ));
    drop(raw);
    drop(txn);
    assert!(matches!(
        Writer::<Secret>::new(storage.clone()).append(
            1,
            ExpectedVersion::Auto,
            &Secret {
                n: 2,
                text: "t".into()
            }
        ),
        Err(Error::MasterKeyRequired { stream_id: 1 })
    ));
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn rotation_rewraps_every_key_and_keeps_every_event_readable() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let writer = Writer::<Secret>::new(storage.clone());
    for stream in 1..=5u128 {
        writer
            .append(
                stream,
                ExpectedVersion::NoStream,
                &Secret {
                    n: stream as u64,
                    text: "r".into(),
                },
            )
            .unwrap();
    }
    storage.shred_stream(5).unwrap();
    assert_eq!(storage.rotate_master_key([9u8; 32]).unwrap(), 4);
    writer
        .append(
            6,
            ExpectedVersion::NoStream,
            &Secret {
                n: 6,
                text: "after".into(),
            },
        )
        .unwrap();
    drop((writer, storage));
    assert!(matches!(
        Storage::open(encrypted(dir.path())),
        Err(Error::WrongMasterKey)
    ));
    let storage = Storage::open(StorageConfig {
        master_key: Some([9u8; 32]),
        ..encrypted(dir.path())
    })
    .unwrap();
    let reader = Reader::<Secret>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let ok: Vec<u64> = reader
        .read_all(&txn, 1)
        .filter_map(|e| e.ok().map(|e| e.n.to_native()))
        .collect();
    assert_eq!(ok, [1, 2, 3, 4, 6]);
}

#[test]
fn a_plaintext_store_keeps_its_streams_plain_when_encryption_is_enabled_later() {
    let dir = tempfile::tempdir().unwrap();
    let plain_config = StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    };
    {
        let storage = Storage::open(plain_config.clone()).unwrap();
        Writer::<Secret>::new(storage)
            .append(
                1,
                ExpectedVersion::NoStream,
                &Secret {
                    n: 1,
                    text: "PLAIN-STREAM-MARKER".into(),
                },
            )
            .unwrap();
    }
    let storage = open(dir.path());
    let writer = Writer::<Secret>::new(storage.clone());
    // The old stream stays plaintext; a new one is encrypted.
    writer
        .append(
            1,
            ExpectedVersion::Exact(1),
            &Secret {
                n: 2,
                text: "PLAIN-STREAM-MARKER".into(),
            },
        )
        .unwrap();
    writer
        .append(
            2,
            ExpectedVersion::NoStream,
            &Secret {
                n: 3,
                text: "NEW-STREAM-MARKER".into(),
            },
        )
        .unwrap();
    let reader = Reader::<Secret>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let flags: Vec<bool> = reader
        .read_all(&txn, 1)
        .map(|e| e.unwrap().is_encrypted())
        .collect();
    assert_eq!(flags, [false, false, true]);
    drop(txn);
    storage.flush().unwrap();
    let bytes = files(dir.path());
    assert!(contains(&bytes, b"PLAIN-STREAM-MARKER"));
    assert!(!contains(&bytes, b"NEW-STREAM-MARKER"));
}

#[test]
fn idempotent_retries_work_on_encrypted_streams() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let writer = Writer::<Secret>::new(storage.clone());
    let event = Secret {
        n: 1,
        text: "once".into(),
    };
    let opts = AppendOptions::new().event_id(EventId::from_u128(42));
    let a = writer
        .commit(Append::event(1, ExpectedVersion::NoStream, &event).options(opts.clone()))
        .map(|v| v[0])
        .unwrap();
    assert_eq!(
        writer
            .commit(Append::event(1, ExpectedVersion::NoStream, &event).options(opts.clone()))
            .map(|v| v[0])
            .unwrap(),
        a
    );
    let other = Secret {
        n: 2,
        text: "once".into(),
    };
    assert!(matches!(
        writer
            .commit(Append::event(1, ExpectedVersion::Auto, &other).options(opts))
            .map(|v| v[0]),
        Err(Error::DuplicateEventId { .. })
    ));
    assert_eq!(storage.stats().unwrap().events, 1);
}

#[test]
fn the_store_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private");
    let storage = open(&path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let data = std::fs::metadata(path.join("data.mdb"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(data & 0o077, 0, "data.mdb is {data:o}");
    assert!(storage.warnings().is_empty(), "{:?}", storage.warnings());
    drop(storage);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let storage = open(&path);
    assert!(
        storage.warnings().iter().any(|w| w.contains("755")),
        "{:?}",
        storage.warnings()
    );
}

#[test]
fn no_snapshot_taken_after_a_shred_reads_the_stream_while_readers_race_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let writer = Writer::<Secret>::new(storage.clone());
    for stream in 1..=20u128 {
        writer
            .append(
                stream,
                ExpectedVersion::NoStream,
                &Secret {
                    n: stream as u64,
                    text: "race".into(),
                },
            )
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let passes: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..3)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    // Readers keep reading every stream (and so keep putting keys into the cache). Each read
    // is the event as written or `Shredded`, and a stream once seen shredded never reads again.
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (storage, stop, passes) = (storage.clone(), Arc::clone(&stop), Arc::clone(&passes));
            std::thread::spawn(move || {
                let reader = Reader::<Secret>::new(storage.clone());
                let mut shredded = std::collections::HashSet::new();
                let mut read = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let txn = storage.read_txn().unwrap();
                    for seq in 1..=20u64 {
                        match reader.get(&txn, seq) {
                            Ok(Some(e)) => {
                                assert_eq!(e.n, seq, "seq {seq} read as another event");
                                assert!(
                                    !shredded.contains(&seq),
                                    "seq {seq} read again after it read as shredded"
                                );
                                read += 1;
                            }
                            Err(Error::Shredded { .. }) => {
                                shredded.insert(seq);
                            }
                            other => panic!("seq {seq}: {:?}", other.map(|e| e.map(|e| e.seq()))),
                        }
                    }
                    passes[r].fetch_add(1, Ordering::SeqCst);
                }
                (read, shredded.len())
            })
        })
        .collect();
    let reader = Reader::<Secret>::new(storage.clone());
    for stream in 1..=20u128 {
        storage.shred_stream(stream).unwrap();
        let txn = storage.read_txn().unwrap();
        let got = reader.get(&txn, stream as u64);
        assert!(
            matches!(got, Err(Error::Shredded { .. })),
            "stream {stream} read after its shred"
        );
    }
    // Two more passes of every reader, so that each read every stream after the last shred.
    let seen: Vec<u64> = passes.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    while passes
        .iter()
        .zip(&seen)
        .any(|(p, s)| p.load(Ordering::SeqCst) < s + 2)
    {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let (_, shredded) = r.join().unwrap();
        // Every stream read as shredded in the last pass.
        assert_eq!(shredded, 20);
    }
}

#[test]
fn encrypted_events_of_every_size_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let writer = Writer::<Doc>::new(storage.clone());
    let sizes = [
        0usize,
        100,
        1_000,
        10_000,
        100_000,
        300_000,
        1 << 20,
        3 << 20,
    ];
    for (i, size) in sizes.iter().enumerate() {
        writer
            .append(
                500 + i as u128,
                ExpectedVersion::NoStream,
                &Doc {
                    marker: format!("size-{size}"),
                    body: pattern(*size, i as u64),
                },
            )
            .unwrap();
    }
    let reader = Reader::<Doc>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for (i, size) in sizes.iter().enumerate() {
        let event = reader
            .get_by_version(&txn, 500 + i as u128, 1)
            .unwrap_or_else(|e| panic!("{size} bytes: {e}"))
            .unwrap();
        assert_eq!(event.marker.as_str(), format!("size-{size}"));
        assert_eq!(event.body.as_slice(), pattern(*size, i as u64).as_slice());
    }
    let all: Vec<_> = reader.read_all(&txn, 1).collect();
    assert_eq!(all.len(), sizes.len());
    for e in all {
        e.unwrap();
    }
    drop(txn);

    // Several large events in one atomic batch.
    let docs: Vec<Doc> = (0..6u64)
        .map(|i| Doc {
            marker: format!("batch-{i}"),
            body: pattern(1 << 20, 100 + i),
        })
        .collect();
    writer
        .append_batch(600, ExpectedVersion::NoStream, &docs)
        .unwrap();
    let txn = storage.read_txn().unwrap();
    for (i, e) in reader.read_stream(&txn, 600, 1).enumerate() {
        let e = e.unwrap_or_else(|err| panic!("batch event {i}: {err}"));
        assert_eq!(e.marker.as_str(), format!("batch-{i}"));
        assert_eq!(
            e.body.as_slice(),
            pattern(1 << 20, 100 + i as u64).as_slice()
        );
    }
}

/// The commit's transaction runs again after the map grows. Sealing must start from the
/// plaintext again: sealing the first attempt's ciphertext stored events that authenticated
/// but decrypted to ciphertext.
#[test]
fn an_encrypted_batch_that_grows_the_map_mid_commit_is_sealed_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        map_bytes_initial: 4 << 20,
        ..encrypted(dir.path())
    })
    .unwrap();
    let writer = Writer::<Doc>::new(storage.clone());
    let before = storage.stats().unwrap().map_bytes;
    let docs: Vec<Doc> = (0..8u64)
        .map(|i| Doc {
            marker: format!("grown-{i}"),
            body: pattern(1 << 20, 700 + i),
        })
        .collect();
    writer
        .append_batch(700, ExpectedVersion::NoStream, &docs)
        .unwrap();
    assert!(
        storage.stats().unwrap().map_bytes > before,
        "the batch grew the map during its commit"
    );
    let reader = Reader::<Doc>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let read: Vec<String> = reader
        .read_stream(&txn, 700, 1)
        .map(|e| e.unwrap().marker.to_string())
        .collect();
    assert_eq!(
        read,
        (0..8).map(|i| format!("grown-{i}")).collect::<Vec<_>>()
    );
}

/// A shred is durable when it returns: its commit is flushed before the answer, so a power cut
/// cannot bring the key back (the power-cut simulation found the unflushed meta page).
#[test]
fn a_shred_is_flushed_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let writer = Writer::<Secret>::new(storage.clone());
    writer
        .append(
            5,
            ExpectedVersion::NoStream,
            &Secret {
                n: 1,
                text: "to be forgotten".into(),
            },
        )
        .unwrap();
    let before = storage.stats().unwrap();
    storage.shred_stream(5).unwrap();
    let after = storage.stats().unwrap();
    assert!(after.commits > before.commits);
    assert!(
        after.flushes > before.flushes,
        "the shred's commit was not flushed ({} flushes before, {} after)",
        before.flushes,
        after.flushes
    );
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
struct Deposited {
    amount: u64,
}

/// The same layout as `Deposited`: only the `types` table tells them apart.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
struct Withdrawn {
    amount: u64,
}

/// A type key as the `types` table stores it (`[len][container][len][name][u16 version]`).
fn type_key(name: &str) -> Vec<u8> {
    let mut key = vec![0u8, name.len() as u8];
    key.extend_from_slice(name.as_bytes());
    key.extend_from_slice(&1u16.to_le_bytes());
    key
}

#[test]
fn a_swapped_types_entry_makes_an_encrypted_event_fail_to_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        Writer::<Deposited>::new(storage.clone())
            .append(1, ExpectedVersion::NoStream, &Deposited { amount: 100 })
            .unwrap();
        Writer::<Withdrawn>::new(storage)
            .append(2, ExpectedVersion::NoStream, &Withdrawn { amount: 7 })
            .unwrap();
    }
    // Type 1 is Deposited and type 2 Withdrawn; swap them in both tables, as an attacker with
    // write access to the file (but not the key) would: every record's type id now names the
    // other type, of the same layout.
    let (d, w) = (type_key("Deposited"), type_key("Withdrawn"));
    assert_eq!(
        common::raw_get(dir.path(), "types", &1u32.to_be_bytes()),
        Some(d.clone())
    );
    common::raw_put_path(dir.path(), "types", &1u32.to_be_bytes(), &w);
    common::raw_put_path(dir.path(), "types", &2u32.to_be_bytes(), &d);
    common::raw_put_path(dir.path(), "type_ids", &w, &1u32.to_le_bytes());
    common::raw_put_path(dir.path(), "type_ids", &d, &2u32.to_le_bytes());

    let storage = open(dir.path());
    let txn = storage.read_txn().unwrap();
    // The deposit of 100 must not read as a withdrawal of 100, nor the other way round.
    let err = Reader::<Withdrawn>::new(storage.clone())
        .get(&txn, 1)
        .unwrap_err();
    assert!(
        matches!(err, Error::AuthenticationFailed { seq: 1 }),
        "{err:?}"
    );
    let err = Reader::<Deposited>::new(storage.clone())
        .get(&txn, 2)
        .unwrap_err();
    assert!(
        matches!(err, Error::AuthenticationFailed { seq: 2 }),
        "{err:?}"
    );
    // The untyped reader (export, the tool) is bound the same way.
    let err = storage.raw_reader().get(&txn, 1).err().unwrap();
    assert!(
        matches!(err, Error::AuthenticationFailed { seq: 1 }),
        "{err:?}"
    );
}

/// Rewrites the record of `seq` (a pack of one record) with `change` applied to its bytes,
/// and its checksums recomputed, as an attacker would.
fn tamper(dir: &Path, seq: u64, change: impl FnOnce(&mut [u8])) {
    let key = seq.to_be_bytes();
    let mut pack = common::raw_get(dir, "events", &key).unwrap();
    let record = varvedb::__bench::pack_records(seq, &pack).unwrap()[0].clone();
    change(&mut pack[record.clone()]);
    let sum = varvedb::__bench::reseal_checksum(&pack[record.clone()]);
    pack[record.start + 56..record.start + 64].copy_from_slice(&sum.to_le_bytes());
    varvedb::__bench::reseal_pack(seq, &mut pack);
    common::raw_put_path(dir, "events", &key, &pack);
}

#[test]
fn the_envelope_and_the_timestamp_are_bound_to_the_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        let writer = Writer::<Secret>::new(storage);
        for stream in 1..=3u128 {
            let options = AppendOptions::new()
                .event_id(EventId::from_u128(0xabc0 + stream))
                .tag("account:1")
                .tag("region:eu");
            writer
                .commit(
                    Append::event(
                        stream,
                        ExpectedVersion::NoStream,
                        &Secret {
                            n: 1,
                            text: "bound".into(),
                        },
                    )
                    .options(options),
                )
                .map(|v| v[0])
                .unwrap();
        }
    }
    let find = |bytes: &[u8], needle: &[u8]| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    // A tag that a conditional append decides on, changed to another of the same length.
    tamper(dir.path(), 1, |r| {
        let at = find(r, b"region:eu");
        r[at..at + 9].copy_from_slice(b"region:us");
    });
    // The event id that idempotency decides on.
    tamper(dir.path(), 2, |r| {
        let at = find(r, &(0xabc0u128 + 2).to_le_bytes());
        r[at] ^= 1;
    });
    // The commit time.
    tamper(dir.path(), 3, |r| r[32] ^= 1);

    let storage = open(dir.path());
    let txn = storage.read_txn().unwrap();
    let reader = Reader::<Secret>::new(storage.clone());
    for seq in 1..=3 {
        let err = reader.get(&txn, seq).unwrap_err();
        assert!(
            matches!(err, Error::AuthenticationFailed { seq: s } if s == seq),
            "{seq}: {err:?}"
        );
    }
}

#[test]
fn records_moved_between_stores_that_share_a_master_key_fail_to_authenticate() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, text) in [(&a, "store a's secret"), (&b, "store b's secret")] {
        let storage = open(dir.path());
        Writer::<Secret>::new(storage)
            .append(
                1,
                ExpectedVersion::NoStream,
                &Secret {
                    n: 1,
                    text: text.into(),
                },
            )
            .unwrap();
    }
    // Store a's record and its stream's wrapped key, planted in store b at the same place:
    // both are sealed under the one master key the two stores share.
    let stream = 1u128.to_be_bytes();
    let wrapped = common::raw_get(a.path(), "keystore", &stream).unwrap();
    let pack = common::raw_get(a.path(), "events", &1u64.to_be_bytes()).unwrap();
    common::raw_put(&b, "keystore", &stream, &wrapped);
    common::raw_put(&b, "events", &1u64.to_be_bytes(), &pack);

    let storage = open(b.path());
    let txn = storage.read_txn().unwrap();
    let err = Reader::<Secret>::new(storage.clone())
        .get(&txn, 1)
        .unwrap_err();
    assert!(
        matches!(err, Error::AuthenticationFailed { seq: 1 }),
        "{err:?}"
    );
    // In its own store, the record reads.
    let storage = open(a.path());
    let txn = storage.read_txn().unwrap();
    let event = Reader::<Secret>::new(storage.clone())
        .get(&txn, 1)
        .unwrap()
        .unwrap();
    assert_eq!(event.text.as_str(), "store a's secret");
}
