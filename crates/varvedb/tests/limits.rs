//! Bad input and limits: typed errors, never a panic, and nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Append, Error, ExpectedVersion, Storage, StorageConfig, Writer};

fn limited(dir: &tempfile::TempDir) -> Storage {
    Storage::open(StorageConfig {
        path: dir.path().into(),
        event_bytes_max: 256,
        batch_events_max: 3,
        ..Default::default()
    })
    .unwrap()
}

fn last_seq(storage: &Storage) -> u64 {
    storage.last_seq(&storage.read_txn().unwrap()).unwrap()
}

#[test]
fn oversized_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = limited(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let fat = Deposited {
        account: 1,
        amount: 1,
        note: "z".repeat(1000),
    };
    assert!(
        matches!(writer.append(1, ExpectedVersion::Auto, &fat), Err(Error::EventTooLarge { max: 256, size }) if size > 1000)
    );
    // One oversized event fails its whole batch.
    assert!(matches!(
        writer.append_batch(1, ExpectedVersion::Auto, &[deposit(1), fat]),
        Err(Error::EventTooLarge { .. })
    ));
    assert_eq!(last_seq(&storage), 0);
    writer
        .append(1, ExpectedVersion::Auto, &deposit(1))
        .unwrap();
}

#[test]
fn empty_and_oversized_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = limited(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    assert!(matches!(
        writer.append_batch(1, ExpectedVersion::Auto, &[]),
        Err(Error::EmptyBatch)
    ));
    assert!(matches!(
        writer.commit(Append::new()),
        Err(Error::EmptyBatch)
    ));
    let one = [deposit(1)];
    assert!(matches!(
        writer.commit(Append::stream(1, ExpectedVersion::Auto, &one[..]).and(
            2,
            ExpectedVersion::Auto,
            &[][..]
        )),
        Err(Error::EmptyBatch)
    ));
    let four: Vec<_> = (0..4).map(deposit).collect();
    assert!(matches!(
        writer.append_batch(1, ExpectedVersion::Auto, &four),
        Err(Error::BatchTooLarge { events: 4, max: 3 })
    ));
    assert!(matches!(
        writer.commit(Append::stream(1, ExpectedVersion::Auto, &four[..2]).and(
            2,
            ExpectedVersion::Auto,
            &four[2..]
        )),
        Err(Error::BatchTooLarge { events: 4, max: 3 })
    ));
    assert_eq!(last_seq(&storage), 0);
    assert_eq!(
        writer
            .append_batch(1, ExpectedVersion::Auto, &four[..3])
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn the_reserved_stream_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    assert!(matches!(
        writer.append(u128::MAX, ExpectedVersion::Auto, &deposit(1)),
        Err(Error::InvalidStreamId {
            stream_id: u128::MAX
        })
    ));
    assert_eq!(
        writer
            .append(u128::MAX - 1, ExpectedVersion::NoStream, &deposit(1))
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        writer
            .append(0, ExpectedVersion::NoStream, &deposit(1))
            .unwrap()
            .version,
        1
    );
}

#[test]
fn invalid_configuration_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let base = StorageConfig {
        path: dir.path().join("never"),
        ..Default::default()
    };
    let cases: Vec<(&str, StorageConfig)> = vec![
        (
            "path",
            StorageConfig {
                path: "".into(),
                ..base.clone()
            },
        ),
        (
            "map_bytes_initial",
            StorageConfig {
                map_bytes_initial: 10,
                ..base.clone()
            },
        ),
        (
            "map_bytes_max",
            StorageConfig {
                map_bytes_initial: 8 << 20,
                map_bytes_max: 4 << 20,
                ..base.clone()
            },
        ),
        (
            "map_bytes_max",
            StorageConfig {
                map_bytes_max: usize::MAX,
                ..base.clone()
            },
        ),
        (
            "event_bytes_max",
            StorageConfig {
                event_bytes_max: 0,
                ..base.clone()
            },
        ),
        (
            "event_bytes_max",
            StorageConfig {
                event_bytes_max: usize::MAX,
                ..base.clone()
            },
        ),
        (
            "batch_events_max",
            StorageConfig {
                batch_events_max: 0,
                ..base.clone()
            },
        ),
        (
            "readers_max",
            StorageConfig {
                readers_max: 0,
                ..base.clone()
            },
        ),
    ];
    for (expected, config) in cases {
        match Storage::open(config) {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, expected),
            other => panic!("{expected}: expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(!dir.path().join("never").exists());
}
