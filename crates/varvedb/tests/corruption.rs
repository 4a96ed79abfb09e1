//! A damaged record is reported as `Error::Corrupt` naming its sequence; iterators move past it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Error, ExpectedVersion, Reader, Writer};

fn marker(i: u64) -> String {
    format!("MARKER-{i:04}-payload")
}

/// Writes ten events, closes the store and flips one byte of event `victim`'s note on disk.
fn damaged_store(victim: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        let writer = Writer::<Deposited>::new(storage);
        for i in 1..=10u64 {
            let stream = if i % 2 == 0 { 2 } else { 1 };
            writer
                .append(
                    stream,
                    ExpectedVersion::Auto,
                    &Deposited {
                        account: i,
                        amount: i,
                        note: marker(i),
                    },
                )
                .unwrap();
        }
    }
    let path = dir.path().join("data.mdb");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = marker(victim).into_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the note is stored in plaintext");
    bytes[at + 3] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    dir
}

#[test]
fn get_reports_the_damaged_sequence() {
    let dir = damaged_store(5);
    let storage = open(&dir);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let err = reader.get(&txn, 5).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { seq: 5, reason } if reason.contains("checksum")),
        "{err}"
    );
    assert!(err.to_string().contains("sequence 5"));
    assert_eq!(
        reader.get(&txn, 4).unwrap().unwrap().note,
        marker(4).as_str()
    );
    assert!(matches!(
        reader.get_by_version(&txn, 1, 3),
        Err(Error::Corrupt { seq: 5, .. })
    ));
}

#[test]
fn iterators_report_once_and_move_on() {
    let dir = damaged_store(5);
    let storage = open(&dir);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let all: Vec<_> = reader.read_all(&txn, 1).collect();
    assert_eq!(all.len(), 10);
    for (i, r) in all.iter().enumerate() {
        let seq = i as u64 + 1;
        match r {
            Ok(e) => assert_eq!((e.seq(), e.note.as_str()), (seq, marker(seq).as_str())),
            Err(Error::Corrupt { seq: 5, .. }) => assert_eq!(seq, 5),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(all.iter().filter(|r| r.is_err()).count(), 1);
    let stream: Vec<_> = reader.read_stream(&txn, 1, 1).collect();
    assert_eq!(stream.len(), 5);
    assert!(matches!(stream[2], Err(Error::Corrupt { seq: 5, .. })));
    let back: Vec<_> = reader.read_stream_backwards(&txn, 1, u32::MAX).collect();
    assert!(matches!(back[2], Err(Error::Corrupt { seq: 5, .. })));
    assert_eq!(back.iter().filter(|r| r.is_ok()).count(), 4);
}
