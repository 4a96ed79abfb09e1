//! The page check (`varvedb::check_pages`, `StorageConfig::check_pages_on_open`): every damage
//! to a tree page that would make LMDB read outside its page or its file is found before LMDB
//! maps the file, as `Error::DamagedPage`, and a healthy store passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Error, ErrorKind, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

const PAGE: usize = 4096;

/// A closed store with small and large events (overflow pages for the blobs), over several
/// streams, so that its trees have branch pages.
fn healthy_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        let writer = Writer::<Deposited>::new(storage.clone());
        for batch in 0..40u64 {
            let events: Vec<Deposited> = (0..100)
                .map(|i| Deposited {
                    account: batch * 100 + i,
                    amount: i,
                    note: if i == 0 {
                        "x".repeat(20_000 + batch as usize)
                    } else {
                        format!("note {batch} {i}")
                    },
                })
                .collect();
            for (k, chunk) in events.chunks(10).enumerate() {
                writer
                    .append_batch(
                        u128::from(batch * 10 + k as u64 + 1),
                        ExpectedVersion::Auto,
                        chunk,
                    )
                    .unwrap();
            }
        }
        storage.flush().unwrap();
    }
    dir
}

fn checked(dir: &tempfile::TempDir) -> StorageConfig {
    StorageConfig {
        check_pages_on_open: true,
        ..config(dir)
    }
}

/// The tree pages of a data file: (page number, is a branch).
fn tree_pages(bytes: &[u8]) -> Vec<(usize, bool)> {
    (2..bytes.len() / PAGE)
        .filter_map(|n| {
            let page = &bytes[n * PAGE..(n + 1) * PAGE];
            let own = u64::from_le_bytes(page[..8].try_into().unwrap());
            let flags = u16::from_le_bytes([page[10], page[11]]);
            (own == n as u64 && (flags == 0x01 || flags == 0x02)).then_some((n, flags == 0x01))
        })
        .collect()
}

#[test]
fn a_healthy_store_passes_and_opens_with_the_check() {
    let dir = healthy_store();
    let check = varvedb::check_pages(dir.path()).unwrap();
    assert_eq!(check.page_size, PAGE);
    assert!(check.pages_read > 10, "{check:?}");
    assert!(check.pages_read <= check.file_pages);
    let storage = Storage::open(checked(&dir)).unwrap();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert_eq!(reader.read_all(&txn, 1).count(), 4_000);
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn the_store_has_branch_pages_and_overflow_runs_to_damage() {
    // What the damage tests below rely on: otherwise they would test nothing.
    let dir = healthy_store();
    let bytes = std::fs::read(dir.path().join("data.mdb")).unwrap();
    let pages = tree_pages(&bytes);
    assert!(pages.iter().any(|(_, branch)| *branch), "no branch page");
    assert!(pages.iter().filter(|(_, branch)| !branch).count() > 10);
    let overflow = (2..bytes.len() / PAGE)
        .filter(|n| u16::from_le_bytes([bytes[n * PAGE + 10], bytes[n * PAGE + 11]]) == 0x04)
        .count();
    assert!(overflow > 0, "no overflow page");
}

/// Applies `damage` to every tree page in turn (each time to a fresh copy of the file) and
/// asserts that the check reports each as `DamagedPage`, and that an open with the check
/// refuses the store without LMDB touching it.
fn every_page_damaged_is_found(damage: impl Fn(&mut [u8], usize, bool) -> bool) {
    let dir = healthy_store();
    let path = dir.path().join("data.mdb");
    let original = std::fs::read(&path).unwrap();
    let mut damaged = 0;
    for (n, branch) in tree_pages(&original) {
        let mut bytes = original.clone();
        if !damage(&mut bytes[n * PAGE..(n + 1) * PAGE], n, branch) {
            continue;
        }
        std::fs::write(&path, &bytes).unwrap();
        match varvedb::check_pages(dir.path()) {
            // A page of an older snapshot that no meta page reaches any more is not read.
            Ok(_) => continue,
            Err(Error::DamagedPage { page, reason, .. }) => {
                assert!(!reason.is_empty());
                assert!(page as usize <= original.len() / PAGE, "page {page}");
                damaged += 1;
            }
            Err(e) => panic!("page {n}: {e}"),
        }
        let refused = Storage::open(checked(&dir)).unwrap_err();
        assert!(matches!(refused, Error::DamagedPage { .. }), "{refused}");
        assert_eq!(refused.kind(), ErrorKind::Corruption);
    }
    std::fs::write(&path, &original).unwrap();
    assert!(damaged > 0, "no reachable page was damaged");
    varvedb::check_pages(dir.path()).unwrap();
}

#[test]
fn a_node_offset_past_its_page_is_found() {
    every_page_damaged_is_found(|page, _, _| {
        page[16..18].copy_from_slice(&(PAGE as u16 - 2).to_le_bytes());
        true
    });
}

#[test]
fn free_space_bounds_that_cross_are_found() {
    every_page_damaged_is_found(|page, _, _| {
        // lower past upper: LMDB would count nodes into the free space.
        let upper = u16::from_le_bytes([page[14], page[15]]);
        page[12..14].copy_from_slice(&(upper.saturating_add(2)).to_le_bytes());
        true
    });
}

#[test]
fn a_child_page_past_the_file_is_found() {
    every_page_damaged_is_found(|page, _, branch| {
        if !branch {
            return false;
        }
        let node = usize::from(u16::from_le_bytes([page[16], page[17]]));
        // mn_lo, mn_hi, mn_flags: the child's page number, low to high.
        page[node..node + 6].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0, 0]);
        true
    });
}

#[test]
fn a_branch_that_points_back_at_itself_is_found() {
    every_page_damaged_is_found(|page, n, branch| {
        if !branch {
            return false;
        }
        let node = usize::from(u16::from_le_bytes([page[16], page[17]]));
        let n = n as u64;
        page[node..node + 2].copy_from_slice(&((n & 0xffff) as u16).to_le_bytes());
        page[node + 2..node + 4].copy_from_slice(&(((n >> 16) & 0xffff) as u16).to_le_bytes());
        page[node + 4..node + 6].copy_from_slice(&((n >> 32) as u16).to_le_bytes());
        true
    });
}

#[test]
fn a_key_length_past_its_page_is_found() {
    every_page_damaged_is_found(|page, _, _| {
        let node = usize::from(u16::from_le_bytes([page[16], page[17]]));
        page[node + 6..node + 8].copy_from_slice(&500u16.to_le_bytes());
        // Moved to the page's end, so that the key cannot fit.
        let at = (PAGE - 16) as u16;
        page[16..18].copy_from_slice(&at.to_le_bytes());
        true
    });
}

#[test]
fn an_overflow_run_past_the_file_is_found() {
    let dir = healthy_store();
    let path = dir.path().join("data.mdb");
    let mut bytes = std::fs::read(&path).unwrap();
    let pages = bytes.len() / PAGE;
    let mut hit = 0;
    for n in 2..pages {
        let page = &mut bytes[n * PAGE..(n + 1) * PAGE];
        if u16::from_le_bytes([page[10], page[11]]) == 0x04 {
            page[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            hit += 1;
        }
    }
    assert!(hit > 0);
    std::fs::write(&path, &bytes).unwrap();
    let err = varvedb::check_pages(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::DamagedPage { reason, .. } if reason.contains("overflow")),
        "{err}"
    );
}

#[test]
fn a_file_cut_short_and_a_file_of_another_kind_are_refused() {
    let dir = healthy_store();
    let path = dir.path().join("data.mdb");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = varvedb::check_pages(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidStore { .. } | Error::DamagedPage { .. }),
        "{err}"
    );
    std::fs::write(&path, vec![7u8; 3 * PAGE]).unwrap();
    let err = varvedb::check_pages(dir.path()).unwrap_err();
    assert!(matches!(err, Error::InvalidStore { .. }), "{err}");
}
