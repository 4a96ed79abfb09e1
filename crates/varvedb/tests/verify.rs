//! `Storage::verify` finds every kind of damage and names it (database, key, what is wrong); the
//! read path refuses a damaged or missing blob with `Error::Corrupt` naming seq and hash.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]
mod common;

use std::collections::BTreeMap;

use heed::types::Bytes;
use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{Append, Error, ExpectedVersion, Reader, Storage, VerifyPhase, VerifyReport, Writer};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
#[rkyv(derive(Debug))]
struct Doc {
    tag: u64,
    body: Vec<u8>,
}

fn doc(tag: u64, len: usize) -> Doc {
    Doc {
        tag,
        body: common::pattern(len, tag),
    }
}

/// Twelve events on three streams: small ones inline, 3 KiB and 20 KiB ones as blobs, one
/// 20 KiB payload appended twice (one blob, two references).
fn fill(dir: &tempfile::TempDir) -> Storage {
    let storage = common::open(dir);
    let writer = Writer::<Doc>::new(storage.clone());
    let sizes = [
        10, 3000, 20_000, 50, 3000, 20_000, 70, 20_000, 90, 4000, 100, 20_000,
    ];
    for (i, len) in sizes.iter().enumerate() {
        // Seqs 3 and 12 carry the same payload (tag 3).
        let tag = if i == 11 { 3 } else { i as u64 + 1 };
        writer
            .append(1 + (i % 3) as u128, ExpectedVersion::Auto, &doc(tag, *len))
            .unwrap();
    }
    storage
}

type Raw = heed::Database<'static, Bytes, Bytes>;

/// Edits the closed store with raw heed, as damage on disk would.
fn raw_edit(dir: &tempfile::TempDir, f: impl FnOnce(&mut heed::RwTxn<'_>, &BTreeMap<&str, Raw>)) {
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(16);
    // SAFETY: the store is closed (its last handle is dropped); nothing else opens this path
    // while the env is open.
    let env = unsafe { options.open(dir.path()) }.unwrap();
    let open = |name: &'static str| {
        let rtxn = env.read_txn().unwrap();
        env.open_databases_and_commit(rtxn, |opener, rtxn| {
            opener
                .open_database::<Bytes, Bytes>(rtxn, Some(name))
                .map(|db| heed::CommitOrAbort::<_, ()>::Commit(db.unwrap()))
        })
        .unwrap()
        .unwrap_commit()
    };
    let dbs: BTreeMap<&str, Raw> = ["events", "stream_heads", "blobs", "blob_refs"]
        .into_iter()
        .map(|name| (name, open(name)))
        .collect();
    let mut wtxn = env.write_txn().unwrap();
    f(&mut wtxn, &dbs);
    wtxn.commit().unwrap();
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The blob keys of the store, with their values' lengths.
fn blob_keys(dir: &tempfile::TempDir) -> Vec<(Vec<u8>, usize)> {
    let mut keys = Vec::new();
    raw_edit(dir, |wtxn, dbs| {
        for entry in dbs["blobs"].iter(wtxn).unwrap() {
            let (k, v) = entry.unwrap();
            keys.push((k.to_vec(), v.len()));
        }
    });
    keys
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn verify(dir: &tempfile::TempDir) -> VerifyReport {
    common::open(dir).verify().unwrap()
}

fn assert_one_problem(report: &VerifyReport, database: &str, key: &str, what: &str) {
    let found = report
        .problems
        .iter()
        .any(|p| p.database == database && p.key == key && p.what.contains(what));
    assert!(
        found,
        "expected {database} [{key}]: …{what}…, got {:#?}",
        report.problems
    );
}

#[test]
fn a_sound_store_is_clean_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fill(&dir);
    let mut phases = Vec::new();
    let report = storage
        .verify_with_progress(|p| {
            if p.done == p.total {
                phases.push((p.phase, p.total));
            }
        })
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.events, 12);
    assert_eq!(report.streams, 3);
    assert_eq!(report.blob_references, 7);
    assert_eq!(report.blobs, 6, "seqs 3 and 12 share one blob");
    assert!(report.bytes_checked > 3 * 20_000 + 2 * 3000 + 4000);
    assert_eq!(
        phases,
        vec![
            (VerifyPhase::Events, 12),
            (VerifyPhase::StreamHeads, 3),
            (VerifyPhase::Blobs, 6),
            (VerifyPhase::BlobRefs, 6),
            (VerifyPhase::EventIds, 0),
            (VerifyPhase::Tags, 0),
        ]
    );
    drop(storage);
    let empty = tempfile::tempdir().unwrap();
    assert!(common::open(&empty).verify().unwrap().is_clean());
}

#[test]
fn a_damaged_blob_is_caught_by_the_read_path_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fill(&dir);
    let hash = {
        let txn = storage.read_txn().unwrap();
        let e = Reader::<Doc>::new(storage.clone())
            .get(&txn, 2)
            .unwrap()
            .unwrap();
        assert!(e.is_blob());
        *e.blob_hash().unwrap()
    };
    drop(storage);
    // Flip one byte of the blob on disk.
    let needle = doc(2, 3000).body[100..140].to_vec();
    let path = dir.path().join("data.mdb");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the blob is on disk");
    assert_eq!(
        bytes[at + 40..]
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count(),
        0,
        "stored once"
    );
    bytes[at + 7] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let storage = common::open(&dir);
    let reader = Reader::<Doc>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let err = reader.get(&txn, 2).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { seq: 2, reason } if reason.contains(&hex(&hash)) && reason.contains("damaged")),
        "{err}"
    );
    // Iterators report it once and go on.
    let all: Vec<_> = reader.read_all(&txn, 1).collect();
    assert_eq!(all.len(), 12);
    assert!(matches!(all[1], Err(Error::Corrupt { seq: 2, .. })));
    assert_eq!(all.iter().filter(|r| r.is_err()).count(), 1);
    let stream: Vec<_> = reader.read_stream(&txn, 2, 1).collect();
    assert_eq!(stream.len(), 4);
    assert!(matches!(stream[0], Err(Error::Corrupt { seq: 2, .. })));
    assert_eq!(stream[1].as_ref().unwrap().tag, 5);
    drop(txn);

    let report = storage.verify().unwrap();
    assert_eq!(report.problem_count(), 1, "{:#?}", report.problems);
    assert_one_problem(&report, "blobs", &hex(&hash), "damaged");
    assert!(report.problems[0].to_string().starts_with("blobs ["));
}

#[test]
fn a_missing_blob_is_a_corrupt_error_naming_seq_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fill(&dir);
    let hash = {
        let txn = storage.read_txn().unwrap();
        let reader = Reader::<Doc>::new(storage.clone());
        *reader.get(&txn, 3).unwrap().unwrap().blob_hash().unwrap()
    };
    drop(storage);
    let key = blob_keys(&dir)
        .into_iter()
        .find(|(k, _)| k[..32] == hash)
        .unwrap()
        .0;
    raw_edit(&dir, |wtxn, dbs| {
        assert!(dbs["blobs"].delete(wtxn, &key).unwrap());
    });
    let storage = common::open(&dir);
    let txn = storage.read_txn().unwrap();
    let reader = Reader::<Doc>::new(storage.clone());
    for seq in [3, 12] {
        let err = reader.get(&txn, seq).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { seq: s, reason } if *s == seq && reason.contains(&hex(&hash)) && reason.contains("missing")),
            "{err}"
        );
    }
    assert_eq!(reader.get(&txn, 4).unwrap().unwrap().tag, 4);
    drop(txn);
    let report = storage.verify().unwrap();
    assert_eq!(report.problem_count(), 1, "{:#?}", report.problems);
    assert_one_problem(
        &report,
        "blobs",
        &hex(&hash),
        "missing: referenced by seq 3 and 1 more",
    );
}

#[test]
fn wrong_reference_counts_and_orphans_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(&dir));
    let keys = blob_keys(&dir);
    let orphan_hash = [0xabu8; 32];
    let mut counted = Vec::new();
    raw_edit(&dir, |wtxn, dbs| {
        let refs = dbs["blob_refs"];
        // Every count one too high, but one removed.
        let entries: Vec<(Vec<u8>, Vec<u8>)> = refs
            .iter(wtxn)
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        for (k, v) in &entries[..entries.len() - 1] {
            let mut v = v.clone();
            let n = u64::from_le_bytes(v[..8].try_into().unwrap());
            v[..8].copy_from_slice(&(n + 1).to_le_bytes());
            refs.put(wtxn, k, &v).unwrap();
            counted.push((hex(k), n));
        }
        let (last, _) = entries.last().unwrap();
        refs.delete(wtxn, last).unwrap();
        counted.push((hex(last), 0));
        // A blob (with a count) that no event references.
        dbs["blobs"].put(wtxn, &orphan_hash, &[7u8; 4096]).unwrap();
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&1u64.to_le_bytes());
        v[8..].copy_from_slice(&4096u64.to_le_bytes());
        refs.put(wtxn, &orphan_hash, &v).unwrap();
    });
    assert_eq!(keys.len(), 6);
    let report = verify(&dir);
    for (hash, n) in &counted {
        if *n == 0 {
            assert_one_problem(&report, "blob_refs", hash, "but it has no reference count");
        } else {
            assert_one_problem(
                &report,
                "blob_refs",
                hash,
                &format!("counts {} references, but {n} events", n + 1),
            );
        }
    }
    assert_one_problem(&report, "blobs", &hex(&orphan_hash), "orphan");
    assert_one_problem(&report, "blob_refs", &hex(&orphan_hash), "orphan");
    assert_eq!(report.problem_count(), 8, "{:#?}", report.problems);
}

#[test]
fn a_damaged_record_a_gap_and_a_wrong_head_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(&dir));
    raw_edit(&dir, |wtxn, dbs| {
        let events = dbs["events"];
        // Seq 4 (stream 1, version 2, inline, a pack of its own): one flipped payload byte.
        let mut pack = events.get(wtxn, &seq_key(4)).unwrap().unwrap().to_vec();
        let record = varvedb::__bench::pack_records(4, &pack).unwrap()[0].clone();
        pack[record.start + 70] ^= 0x10;
        events.put(wtxn, &seq_key(4), &pack).unwrap();
        // Seq 9 (stream 3, version 3) disappears.
        events.delete(wtxn, &seq_key(9)).unwrap();
        // Stream 2's head claims a version the log does not have.
        let heads = dbs["stream_heads"];
        let key = 2u128.to_be_bytes();
        let mut head = heads.get(wtxn, &key).unwrap().unwrap().to_vec();
        head[..4].copy_from_slice(&9u32.to_le_bytes());
        heads.put(wtxn, &key, &head).unwrap();
    });
    let report = verify(&dir);
    assert_one_problem(&report, "events", "seq 4", "checksum mismatch");
    assert_one_problem(&report, "events", "seq 10", "skips sequences 9..=9");
    // Seq 7 (stream 1, version 3) links to seq 4, which failed its checksum: the chain check
    // names the version it expected after the last sound one.
    assert_one_problem(
        &report,
        "events",
        "seq 7",
        "previous event in the log is version 1",
    );
    // Seq 12 (stream 3, version 4) follows the missing version 3.
    assert_one_problem(
        &report,
        "events",
        "seq 12",
        "version 4 with its prev link at seq 9",
    );
    assert_one_problem(
        &report,
        "stream_heads",
        "stream 0x2",
        "the head says version 9 at seq 11, but the stream's last event in the log is version 4 at seq 11",
    );
    assert_eq!(report.problem_count(), 5, "{:#?}", report.problems);
}

#[test]
fn verify_checks_the_event_id_index_against_the_log() {
    use varvedb::{AppendOptions, EventId};
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = varvedb::Writer::<Doc>::new(common::open(&dir));
        for n in 1..=3u128 {
            writer
                .commit(
                    Append::event(1, varvedb::ExpectedVersion::Auto, &doc(n as u64, 10))
                        .options(AppendOptions::new().event_id(EventId::from_u128(n))),
                )
                .map(|v| v[0])
                .unwrap();
        }
        let report = writer.storage().verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.problems);
        assert_eq!(report.event_ids, 3);
    }
    // Point id 2 at seq 3, and index an id no record has.
    common::raw_put(&dir, "event_ids", &2u128.to_be_bytes(), &3u64.to_le_bytes());
    common::raw_put(&dir, "event_ids", &9u128.to_be_bytes(), &1u64.to_le_bytes());
    let report = common::open(&dir).verify().unwrap();
    let two = EventId::from_u128(2).to_string();
    let nine = EventId::from_u128(9).to_string();
    assert_one_problem(&report, "events", "seq 2", "indexed at sequence 3");
    assert_one_problem(&report, "event_ids", &two, "has another id");
    assert_one_problem(&report, "event_ids", &nine, "has another id");
}
