//! The fuzz targets' corpora as plain tests, on stable (`fuzz/`, `docs/reliability.md`): every
//! committed input of each target goes through the same function the target calls, and the
//! log values of real stores go through `read_pack` with every single-byte change. An error or
//! a value each time, never a panic.
//!
//! `VARVEDB_WRITE_FUZZ_SEEDS=1 cargo test -p varvedb --test fuzz_corpus` (re)writes the seed
//! corpora from real stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

#[path = "../../../fuzz/fuzz_targets/event.rs"]
mod event;
#[path = "../../../fuzz/fuzz_targets/ops_model.rs"]
mod ops_model;

use std::path::{Path, PathBuf};

use event::Fz;
use varvedb::{Append, AppendOptions, EventId, ExpectedVersion, Storage, StorageConfig, Writer};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn fz(i: u64) -> Fz {
    Fz {
        id: u128::from(i) << 70 | 5,
        name: format!("event {i} é"),
        values: (0..i as u32 % 5).collect(),
        note: i.is_multiple_of(2).then(|| "note".repeat(i as usize % 4)),
    }
}

/// The `(key, value)` entries of the events log of a store written by single appends, a batch
/// and a multi-stream append with metadata, plaintext or encrypted.
fn log_values(encrypted: bool) -> Vec<(u64, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(StorageConfig {
            path: dir.path().into(),
            encryption_enabled: encrypted,
            master_key: encrypted.then_some([9; 32]),
            ..Default::default()
        })
        .unwrap();
        let w = Writer::<Fz>::new(storage.clone());
        for i in 0..3 {
            w.append(1, ExpectedVersion::Auto, &fz(i)).unwrap();
        }
        let batch: Vec<Fz> = (3..9).map(fz).collect();
        w.append_batch(2, ExpectedVersion::Auto, &batch).unwrap();
        let opts: Vec<AppendOptions> = (0..2)
            .map(|i| {
                AppendOptions::new()
                    .event_id(EventId::from_u128(100 + i))
                    .metadata("k", "v")
            })
            .collect();
        let a = [fz(20), fz(21)];
        w.commit(
            Append::stream(3, ExpectedVersion::Auto, &a[..1])
                .options(&opts[..1])
                .and(4, ExpectedVersion::Auto, &a[1..])
                .options(&opts[1..]),
        )
        .unwrap();
    }
    // Packs are keyed by their last sequence: 1, 2, 3 (single appends), 9 (the batch), 11 (the
    // multi-stream append).
    let mut out = Vec::new();
    for seq in 1..=12u64 {
        if let Some(v) = common::raw_get(dir.path(), "events", &seq.to_be_bytes()) {
            out.push((seq, v));
        }
    }
    out
}

#[test]
fn seeds_and_every_single_byte_change_of_real_log_values_never_panic() {
    let mut values = log_values(false);
    values.extend(log_values(true));
    assert!(values.len() >= 6, "{} log values", values.len());
    let write = std::env::var_os("VARVEDB_WRITE_FUZZ_SEEDS").is_some();
    let mut passed = 0;
    for (i, (last, value)) in values.iter().enumerate() {
        passed += varvedb::__fuzz::read_pack::<Fz>(*last, value);
        for at in 0..value.len() {
            for delta in [1u8, 0x80] {
                let mut bad = value.clone();
                bad[at] = bad[at].wrapping_add(delta);
                varvedb::__fuzz::read_pack::<Fz>(*last, &bad);
            }
        }
        for cut in [0, 1, 15, 16, value.len() / 2, value.len().saturating_sub(1)] {
            varvedb::__fuzz::read_pack::<Fz>(*last, &value[..cut.min(value.len())]);
        }
        if write {
            let mut seed = (*last).to_le_bytes().to_vec();
            seed.extend_from_slice(value);
            std::fs::write(corpus("read_pack").join(format!("seed-{i}")), &seed).unwrap();
            if let Some(r) = varvedb::__bench::pack_records(*last, value) {
                let record = &value[r[0].clone()];
                std::fs::write(corpus("read_record").join(format!("seed-{i}")), record).unwrap();
                varvedb::__fuzz::read_record::<Fz>(record);
            }
        }
    }
    // The plaintext store's records validate as `Fz`: the checks are not refusing everything.
    assert!(passed >= 11, "{passed} records passed");
    if write {
        // A whole small store's data file, for `open_store`.
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(StorageConfig {
                path: dir.path().into(),
                map_bytes_initial: 1 << 20,
                ..Default::default()
            })
            .unwrap();
            let w = Writer::<Fz>::new(storage);
            let batch: Vec<Fz> = (0..6).map(fz).collect();
            w.append_batch(1, ExpectedVersion::Auto, &batch).unwrap();
            w.append(2, ExpectedVersion::Auto, &fz(9)).unwrap();
        }
        std::fs::create_dir_all(corpus("open_store")).unwrap();
        std::fs::copy(
            dir.path().join("data.mdb"),
            corpus("open_store").join("seed-0"),
        )
        .unwrap();
        // A decrypted plaintext: no metadata, then an archive.
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&fz(7)).unwrap());
        std::fs::write(corpus("open_sealed").join("seed-0"), &plain).unwrap();
    }
}

#[test]
fn the_committed_corpora_never_panic() {
    let mut ran = 0;
    for target in [
        "read_pack",
        "read_record",
        "open_sealed",
        "ops",
        "open_store",
    ] {
        let Ok(dir) = std::fs::read_dir(corpus(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match target {
                "read_pack" => {
                    if let Some((key, value)) = data.split_first_chunk::<8>() {
                        varvedb::__fuzz::read_pack::<Fz>(u64::from_le_bytes(*key) % 4096, value);
                    }
                }
                "read_record" => {
                    varvedb::__fuzz::read_record::<Fz>(&data);
                }
                "ops" => {
                    let dir = tempfile::tempdir().unwrap();
                    ops_model::run(&dir.path().join("store"), &data);
                }
                "open_store" if name.starts_with("crash-") => {
                    // An input that crashed LMDB before the page check (a regression seed):
                    // now a typed error naming the damaged page, and LMDB never maps it.
                    let dir = tempfile::tempdir().unwrap();
                    std::fs::write(dir.path().join("data.mdb"), &data).unwrap();
                    let refused = Storage::open_existing(StorageConfig {
                        path: dir.path().into(),
                        check_pages_on_open: true,
                        ..Default::default()
                    })
                    .unwrap_err();
                    assert!(
                        matches!(refused, varvedb::Error::DamagedPage { .. }),
                        "{name}: {refused}"
                    );
                }
                "open_store" => {
                    // The seed is a sound store: it passes the page check, opens, reads and
                    // verifies clean.
                    let dir = tempfile::tempdir().unwrap();
                    std::fs::write(dir.path().join("data.mdb"), &data).unwrap();
                    let storage = Storage::open_existing(StorageConfig {
                        path: dir.path().into(),
                        check_pages_on_open: true,
                        ..Default::default()
                    })
                    .unwrap();
                    assert!(storage.verify().unwrap().is_clean());
                }
                _ => {
                    varvedb::__fuzz::open_sealed::<Fz>(&data);
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 3, "the seed corpora are missing ({ran} inputs)");
}

/// The operation-sequence target on stable: pseudo-random operation sequences, each on a fresh
/// store, checked against the model.
#[test]
fn operation_sequences_match_the_model() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..40 {
        let data: Vec<u8> = (0..150)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        ops_model::run(&dir.path().join("store"), &data);
    }
}
