//! A store written by the real varvedb 0.4.2 crate (100,000 events of two stream names, large
//! payloads among them) migrates into a 0.5 store: our typed reads of the same structs see every
//! event, in order, with their streams and versions; `verify` is clean; the old store is not
//! touched; a second run has nothing to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use varvedb::{Reader, Storage, StorageConfig};
use varvedb_migrate::{EventType, MigrateOptions, StreamIds, migrate_from_v04};

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
struct Order {
    id: u64,
    note: String,
    body: Vec<u8>,
}

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
struct Payment {
    order: u64,
    cents: i64,
}

/// 0.4.2's serializer scratch space (a const-generic array in its stream handle).
const BUF: usize = 16 << 10;

fn order(i: u64) -> Order {
    Order {
        id: i,
        note: format!("order {i}"),
        // Every 997th is a 10 KiB payload: a blob in 0.5 (its threshold is 1 KiB).
        body: vec![(i % 251) as u8; if i.is_multiple_of(997) { 10 << 10 } else { 24 }],
    }
}

/// Writes `n` orders over 100 ids of "orders" and one payment for every tenth, with 0.4.2.
fn write_old(path: &std::path::Path, n: u64) -> Vec<(String, u64, u64)> {
    let mut varve = varvedb04::Varve::with_config(
        path,
        varvedb04::VarveConfig {
            map_size: 4 << 30,
            ..Default::default()
        },
    )
    .unwrap();
    let mut orders = varve.stream::<Order, BUF>("orders").unwrap();
    let mut payments = varve.stream::<Payment, 256>("payments").unwrap();
    let mut log = Vec::new();
    let mut i = 0u64;
    while i < n {
        let id = i / 100 % 100;
        let batch: Vec<Order> = (i..(i + 100).min(n)).map(order).collect();
        orders
            .append_batch_alloc(varvedb04::StreamId(id), &batch)
            .unwrap();
        for o in &batch {
            log.push(("orders".to_string(), id, o.id));
        }
        i += batch.len() as u64;
        if i.is_multiple_of(1000) && i < n {
            let p = Payment {
                order: i,
                cents: -(i as i64),
            };
            payments.append_alloc(varvedb04::StreamId(7), &p).unwrap();
            log.push(("payments".to_string(), 7, i));
        }
    }
    log
}

fn types() -> MigrateOptions {
    MigrateOptions::by_stream_name(HashMap::from([
        ("orders".to_string(), EventType::named("Order")),
        ("payments".to_string(), EventType::named("Payment")),
    ]))
}

#[test]
fn a_real_v04_store_of_100k_events_migrates_and_reads_back_typed() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let log = write_old(&old, 100_000);
    let before = std::fs::read(old.join("data.mdb")).unwrap();

    let target = Storage::open(StorageConfig {
        path: dir.path().join("new"),
        ..Default::default()
    })
    .unwrap();
    let report = migrate_from_v04(&old, &target, types()).unwrap();
    eprintln!(
        "migrated {} events in {:.2?}: {:.0} events/s",
        report.events,
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64()
    );
    assert_eq!(report.events, log.len() as u64);
    assert_eq!(report.types, 2);
    assert_eq!(report.streams, 101);
    assert!(report.blobs >= 100, "{report:?}");
    assert_eq!(
        std::fs::read(old.join("data.mdb")).unwrap(),
        before,
        "the old store changed"
    );

    // Every event, in the old global order, under the stream and version it had there.
    let orders = Reader::<Order>::new(target.clone());
    let payments = Reader::<Payment>::new(target.clone());
    let txn = target.read_txn().unwrap();
    let mut versions: HashMap<u128, u32> = HashMap::new();
    for (g, (name, id, n)) in log.iter().enumerate() {
        let seq = g as u64 + 1;
        let stream = StreamIds::NameAndId.map(name, *id);
        let version = versions.entry(stream).or_insert(0);
        *version += 1;
        if name == "orders" {
            let e = orders.get(&txn, seq).unwrap().unwrap();
            assert_eq!(
                (e.stream_id(), e.version()),
                (stream, *version),
                "event {seq}"
            );
            let expected = order(*n);
            assert_eq!(e.id.to_native(), expected.id);
            assert_eq!(e.note.as_str(), expected.note);
            assert_eq!(e.body.as_slice(), expected.body.as_slice());
            assert_eq!(e.is_blob(), expected.body.len() > 1024);
        } else {
            let e = payments.get(&txn, seq).unwrap().unwrap();
            assert_eq!(
                (e.stream_id(), e.version()),
                (stream, *version),
                "event {seq}"
            );
            assert_eq!(e.order.to_native(), *n);
            assert_eq!(e.cents.to_native(), -(*n as i64));
        }
    }
    // Read by stream too: stream 42 of "orders" in version order.
    let s42 = StreamIds::NameAndId.map("orders", 42);
    let read: Vec<u32> = orders
        .read_stream(&txn, s42, 1)
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(read, (1..=versions[&s42]).collect::<Vec<_>>());
    drop(txn);
    assert!(target.verify().unwrap().is_clean());

    // Again: everything is there already.
    let again = migrate_from_v04(&old, &target, types()).unwrap();
    assert_eq!((again.events, again.already_present), (0, log.len() as u64));
}

#[test]
fn an_event_without_a_type_a_stream_clash_and_a_missing_store_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    write_old(&old, 2_000);
    let target = Storage::open(StorageConfig {
        path: dir.path().join("new"),
        ..Default::default()
    })
    .unwrap();
    // Only "orders" has a type: the first payment (event 1000) stops the migration there.
    let only_orders = MigrateOptions::by_stream_name(HashMap::from([(
        "orders".to_string(),
        EventType::named("Order"),
    )]));
    let err = migrate_from_v04(&old, &target, only_orders).unwrap_err();
    assert!(
        matches!(&err, varvedb_migrate::Error::Event { global_seq: 1000, reason } if reason.contains("payments")),
        "{err}"
    );
    // What came before is in; with both types the migration continues after it.
    assert_eq!(target.last_seq(&target.read_txn().unwrap()).unwrap(), 1000);
    let done = migrate_from_v04(&old, &target, types()).unwrap();
    assert_eq!(done.already_present, 1000);
    assert!(target.verify().unwrap().is_clean());

    // Two names with one id, kept as the id alone: their versions collide, refused by name.
    let clash = Storage::open(StorageConfig {
        path: dir.path().join("clash"),
        ..Default::default()
    })
    .unwrap();
    let err = migrate_from_v04(&old, &clash, types().stream_ids(StreamIds::IdOnly)).unwrap_err();
    assert!(matches!(err, varvedb_migrate::Error::Event { .. }), "{err}");

    // Not a 0.4.2 store.
    let err = migrate_from_v04(&dir.path().join("nothing"), &target, types()).unwrap_err();
    assert!(
        matches!(err, varvedb_migrate::Error::NotAStore { .. }),
        "{err}"
    );
    assert!(!dir.path().join("nothing").exists());
}

#[test]
fn a_real_v04_store_of_100k_events_migrates_into_an_encrypted_store_sealed_under_ours() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let log = write_old(&old, 100_000);
    let key = [7u8; 32];
    let config = |key: Option<[u8; 32]>| StorageConfig {
        path: dir.path().join("enc"),
        encryption_enabled: key.is_some(),
        master_key: key,
        ..Default::default()
    };
    {
        let target = Storage::open(config(Some(key))).unwrap();
        let report = migrate_from_v04(&old, &target, types()).unwrap();
        assert_eq!(report.events, log.len() as u64);
        // Read back with the key: every event, typed.
        let orders = Reader::<Order>::new(target.clone());
        let payments = Reader::<Payment>::new(target.clone());
        let txn = target.read_txn().unwrap();
        for (g, (name, _, n)) in log.iter().enumerate() {
            let seq = g as u64 + 1;
            if name == "orders" {
                let e = orders.get(&txn, seq).unwrap().unwrap();
                assert_eq!(e.id.to_native(), *n);
                assert_eq!(e.body.as_slice(), order(*n).body.as_slice());
            } else {
                let e = payments.get(&txn, seq).unwrap().unwrap();
                assert_eq!(e.order.to_native(), *n);
            }
        }
        drop(txn);
        assert!(target.verify().unwrap().is_clean());
        // A shred makes a migrated stream unreadable, as for any encrypted stream.
        let s42 = StreamIds::NameAndId.map("orders", 42);
        target.shred_stream(s42).unwrap();
        let txn = target.read_txn().unwrap();
        let first = orders.read_stream(&txn, s42, 1).next().unwrap();
        assert!(
            matches!(first, Err(varvedb::Error::Shredded { .. })),
            "{:?}",
            first.map(|e| e.seq())
        );
    }
    // Nothing of the payloads is in the file in the clear (the plaintext one has them).
    let bytes = std::fs::read(dir.path().join("enc/data.mdb")).unwrap();
    assert!(!bytes.windows(10).any(|w| w == b"order 1234"));
    let plain = std::fs::read(old.join("data.mdb")).unwrap();
    assert!(plain.windows(10).any(|w| w == b"order 1234"));
    // Without the key, the events are there but sealed.
    let keyless = Storage::open(config(None)).unwrap();
    let txn = keyless.read_txn().unwrap();
    assert!(matches!(
        Reader::<Order>::new(keyless.clone()).get(&txn, 1),
        Err(varvedb::Error::MasterKeyRequired { .. })
    ));
}
