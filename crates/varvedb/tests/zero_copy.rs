//! Reads hand out references into the memory map, aligned for any event type, even in a store
//! that mixes event types of different alignment and record sizes on both sides of LMDB's
//! overflow threshold.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{EventRef, ExpectedVersion, Reader, Storage, Writer};

/// Alignment 1, odd sizes: shifts everything after it if the layout is careless.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
struct Tiny {
    flag: u8,
    bytes: [u8; 3],
}

/// Alignment 16 in the archive.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
struct Wide {
    id: u128,
    amount: u64,
    tag: u32,
}

/// A vector of u128, with a variable length: a sweep over record sizes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
struct Blobby {
    ids: Vec<u128>,
    text: String,
}

/// The address ranges where this process maps the store's `data.mdb`, read from the kernel.
fn data_file_mappings(storage: &Storage) -> Vec<std::ops::Range<usize>> {
    let data = storage.path().join("data.mdb");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|line| line.ends_with(data.to_str().unwrap()))
        .map(|line| {
            let (range, _) = line.split_once(' ').unwrap();
            let (lo, hi) = range.split_once('-').unwrap();
            usize::from_str_radix(lo, 16).unwrap()..usize::from_str_radix(hi, 16).unwrap()
        })
        .collect()
}

fn assert_in_map<E: rkyv::Archive>(storage: &Storage, e: &EventRef<'_, E>) {
    let maps = data_file_mappings(storage);
    assert!(!maps.is_empty(), "data.mdb is not mapped");
    let map = maps
        .iter()
        .find(|m| m.contains(&(e.payload_bytes().as_ptr() as usize)))
        .cloned()
        .unwrap_or(0..0);
    let start = e.payload_bytes().as_ptr() as usize;
    let end = start + e.payload_bytes().len();
    assert!(
        map.contains(&start) && end <= map.end,
        "payload {start:#x}..{end:#x} outside the map {map:x?}"
    );
    let archived = e.archived() as *const E::Archived as usize;
    assert!(map.contains(&archived), "archived root outside the map");
    assert!(e.is_zero_copy());
    assert_eq!(
        start % 16,
        0,
        "payload of seq {} is not 16-byte aligned",
        e.seq()
    );
}

#[test]
fn get_returns_a_reference_into_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let writer = Writer::<Wide>::new(storage.clone());
    let ev = Wide {
        id: u128::MAX - 3,
        amount: u64::MAX,
        tag: 7,
    };
    let a = writer.append(1, ExpectedVersion::Auto, &ev).unwrap();
    let reader = Reader::<Wide>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let e = reader.get(&txn, a.seq).unwrap().unwrap();
    assert_in_map(&storage, &e);
    assert_eq!(e.id, u128::MAX - 3);
    assert_eq!(e.amount, u64::MAX);
    assert_eq!(e.deserialize().unwrap(), ev);
}

#[test]
fn mixed_alignment_events_read_back_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let tiny = Writer::<Tiny>::new(storage.clone());
    let wide = Writer::<Wide>::new(storage.clone());
    let blobby = Writer::<Blobby>::new(storage.clone());
    // Interleave the three types in one log so that they share leaf pages. The Blobby sizes
    // sweep across LMDB's overflow threshold (about 2 KiB on 4 KiB pages).
    for i in 0..300u32 {
        tiny.append(
            1,
            ExpectedVersion::Auto,
            &Tiny {
                flag: i as u8,
                bytes: [1, 2, (i % 7) as u8],
            },
        )
        .unwrap();
        wide.append(
            2,
            ExpectedVersion::Auto,
            &Wide {
                id: u128::from(i) << 100 | 5,
                amount: u64::from(i) * 3,
                tag: i,
            },
        )
        .unwrap();
        let n = (i as usize * 7) % 300;
        let b = Blobby {
            ids: (0..n as u128).collect(),
            text: "x".repeat(i as usize % 17),
        };
        blobby.append(3, ExpectedVersion::Auto, &b).unwrap();
    }
    let txn = storage.read_txn().unwrap();
    let tiny_reader = Reader::<Tiny>::new(storage.clone());
    for (i, e) in tiny_reader.read_stream(&txn, 1, 1).enumerate() {
        let e = e.unwrap();
        assert_in_map(&storage, &e);
        assert_eq!((e.flag, e.bytes), (i as u8, [1, 2, (i % 7) as u8]));
    }
    let wide_reader = Reader::<Wide>::new(storage.clone());
    for (i, e) in wide_reader.read_stream(&txn, 2, 1).enumerate() {
        let e = e.unwrap();
        assert_in_map(&storage, &e);
        assert_eq!(e.id, (i as u128) << 100 | 5);
        assert_eq!(e.amount, i as u64 * 3);
        assert_eq!(e.version(), i as u32 + 1);
    }
    let blobby_reader = Reader::<Blobby>::new(storage.clone());
    let mut sizes = Vec::new();
    for (i, e) in blobby_reader.read_stream(&txn, 3, 1).enumerate() {
        let e = e.unwrap();
        assert_in_map(&storage, &e);
        let n = (i * 7) % 300;
        assert_eq!(e.ids.len(), n);
        assert!(e.ids.iter().enumerate().all(|(k, v)| *v == k as u128));
        sizes.push(e.payload_bytes().len());
    }
    // The sweep really covered both inline and overflow records.
    assert!(sizes.iter().any(|&s| s < 1000) && sizes.iter().any(|&s| s > 3000));
}

#[test]
fn every_record_size_across_the_overflow_threshold_stays_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let writer = Writer::<Blobby>::new(storage.clone());
    let small = Writer::<Wide>::new(storage.clone());
    // Text lengths step by one byte around the threshold, with a small u128 event between each.
    for len in 1800..2300usize {
        writer
            .append(
                1,
                ExpectedVersion::Auto,
                &Blobby {
                    ids: vec![len as u128],
                    text: "y".repeat(len),
                },
            )
            .unwrap();
        small
            .append(
                2,
                ExpectedVersion::Auto,
                &Wide {
                    id: len as u128,
                    amount: 1,
                    tag: 2,
                },
            )
            .unwrap();
    }
    let txn = storage.read_txn().unwrap();
    let blobs = Reader::<Blobby>::new(storage.clone());
    for e in blobs.read_stream(&txn, 1, 1) {
        let e = e.unwrap();
        assert_in_map(&storage, &e);
        assert_eq!(e.text.len() as u128, e.ids[0].to_native());
    }
    let wides = Reader::<Wide>::new(storage.clone());
    for e in wides.read_stream(&txn, 2, 1) {
        assert_in_map(&storage, &e.unwrap());
    }
}
