//! The event envelope: type names and versions, an enum of events over a mixed log, upcasting,
//! metadata and ids, and the untyped view.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{
    Append, AppendOptions, ENVELOPE_BYTES_MAX, Error, Event, EventId, ExpectedVersion, Reader,
    Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
#[event(name = "OrderPlaced", version = 1)]
struct OrderPlacedV1 {
    order: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
#[event(name = "OrderPlaced", version = 2)]
struct OrderPlaced {
    order: u64,
    total_cents: u64,
}

/// One type for a whole log: each variant its own event type.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
enum Bank {
    Opened {
        owner: String,
    },
    #[event(name = "MoneyDeposited", version = 3)]
    Deposited {
        cents: u64,
    },
    Closed,
}

#[test]
fn the_derive_names_types_and_versions() {
    assert_eq!(
        OrderPlaced::TYPES,
        &[varvedb::EventType::new("OrderPlaced", 2)]
    );
    assert_eq!(OrderPlaced::CONTAINER, "");
    let b = Bank::Deposited { cents: 1 };
    assert_eq!((b.event_type(), b.event_version()), ("MoneyDeposited", 3));
    assert_eq!(Bank::Closed.event_type(), "Closed");
    assert_eq!(Bank::CONTAINER, "Bank");
    assert_eq!(Deposited::TYPES[0].name, "Deposited");
}

#[test]
fn an_enum_reads_a_mixed_log_and_each_event_keeps_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let bank = Writer::<Bank>::new(storage.clone());
    bank.append(
        1,
        ExpectedVersion::NoStream,
        &Bank::Opened {
            owner: "ada".into(),
        },
    )
    .unwrap();
    bank.append(
        1,
        ExpectedVersion::Exact(1),
        &Bank::Deposited { cents: 500 },
    )
    .unwrap();
    // Another type in the same log, in another stream.
    Writer::<Deposited>::new(storage.clone())
        .append(2, ExpectedVersion::NoStream, &deposit(9))
        .unwrap();
    bank.append(1, ExpectedVersion::Exact(2), &Bank::Closed)
        .unwrap();

    let reader = Reader::<Bank>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let mut seen = Vec::new();
    for e in reader.read_all(&txn, 1) {
        match e {
            Ok(e) => {
                let what = match &*e {
                    ArchivedBank::Opened { owner } => format!("opened {owner}"),
                    ArchivedBank::Deposited { cents } => format!("deposited {cents}"),
                    ArchivedBank::Closed => "closed".to_string(),
                };
                seen.push(format!("{} v{}: {what}", e.event_type(), e.event_version()));
            }
            Err(Error::TypeMismatch { seq, found, .. }) => {
                seen.push(format!("seq {seq} is a {found}"));
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "Opened v1: opened ada",
            "MoneyDeposited v3: deposited 500",
            "seq 3 is a Deposited v1",
            "Closed v1: closed",
        ]
    );
    // The variant's payload struct is not the enum: an enum's events are read through it.
    #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
    #[event(name = "MoneyDeposited", version = 3)]
    struct MoneyDeposited {
        cents: u64,
    }
    let err = Reader::<MoneyDeposited>::new(storage.clone())
        .get(&txn, 2)
        .unwrap_err();
    assert!(
        matches!(&err, Error::TypeMismatch { found, .. } if found == "Bank::MoneyDeposited v3"),
        "{err:?}"
    );
}

/// The upcasting pattern: look at the stored version, read the payload as that version's type,
/// and convert.
fn total_cents(raw: &varvedb::RawEvent<'_>) -> varvedb::Result<u64> {
    match raw.event_version() {
        1 => Ok(raw.archived::<OrderPlacedV1>()?.order.to_native() * 100),
        _ => Ok(raw.archived::<OrderPlaced>()?.total_cents.to_native()),
    }
}

#[test]
fn a_reader_upcasts_version_1_to_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    Writer::<OrderPlacedV1>::new(storage.clone())
        .append(1, ExpectedVersion::NoStream, &OrderPlacedV1 { order: 7 })
        .unwrap();
    Writer::<OrderPlaced>::new(storage.clone())
        .append(
            1,
            ExpectedVersion::Exact(1),
            &OrderPlaced {
                order: 8,
                total_cents: 990,
            },
        )
        .unwrap();
    let txn = storage.read_txn().unwrap();
    // The v2 reader refuses the v1 event rather than misreading it.
    let v2 = Reader::<OrderPlaced>::new(storage.clone());
    assert!(matches!(
        v2.get(&txn, 1),
        Err(Error::TypeMismatch { seq: 1, .. })
    ));
    let totals: Vec<u64> = storage
        .raw_reader()
        .read_stream(&txn, 1, 1)
        .map(|e| total_cents(&e.unwrap()).unwrap())
        .collect();
    assert_eq!(totals, [700, 990]);
}

#[test]
fn metadata_and_ids_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let many: Vec<(String, String)> = (0..200)
        .map(|i| (format!("key-{i}"), format!("value {i}")))
        .collect();
    let mut opts = AppendOptions::new()
        .event_id(EventId::from_u128(1))
        .correlation_id(EventId::from_u128(2))
        .causation_id(EventId::from_u128(3))
        .metadata("", "")
        .metadata("straße", "日本語 ✓");
    for (k, v) in &many {
        opts = opts.metadata(k.as_str(), v.as_str());
    }
    let a = writer
        .commit(Append::event(1, ExpectedVersion::NoStream, &deposit(1)).options(opts))
        .map(|v| v[0])
        .unwrap();
    let plain = writer
        .append(1, ExpectedVersion::Exact(1), &deposit(2))
        .unwrap();
    let only_meta = writer
        .commit(
            Append::event(1, ExpectedVersion::Exact(2), &deposit(3))
                .options(AppendOptions::new().metadata("k", "v")),
        )
        .map(|v| v[0])
        .unwrap();

    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let e = reader.get(&txn, a.seq).unwrap().unwrap();
    assert_eq!(e.amount, 1);
    assert_eq!(e.event_id(), Some(EventId::from_u128(1)));
    assert_eq!(e.correlation_id(), Some(EventId::from_u128(2)));
    assert_eq!(e.causation_id(), Some(EventId::from_u128(3)));
    let md = e.metadata();
    assert_eq!(md.len(), 202);
    assert_eq!(md.get(""), Some(""));
    assert_eq!(md.get("straße"), Some("日本語 ✓"));
    assert_eq!(md.get("key-199"), Some("value 199"));
    assert_eq!(md.get("nope"), None);
    let pairs: Vec<_> = md
        .iter()
        .skip(2)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs, many);
    assert!(
        e.is_zero_copy(),
        "the payload after the envelope stays aligned"
    );

    let p = reader.get(&txn, plain.seq).unwrap().unwrap();
    assert!(p.metadata().is_empty());
    assert_eq!(p.event_id(), None);
    let m = reader.get(&txn, only_meta.seq).unwrap().unwrap();
    assert_eq!(m.metadata().get("k"), Some("v"));
    assert_eq!(m.event_id(), None);
    assert_eq!(m.amount, 3);
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn metadata_past_the_limit_is_a_typed_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let err = writer
        .commit(
            Append::event(1, ExpectedVersion::NoStream, &deposit(1))
                .options(AppendOptions::new().metadata("big", "x".repeat(ENVELOPE_BYTES_MAX))),
        )
        .map(|v| v[0])
        .unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { .. }), "{err:?}");
    assert_eq!(storage.stats().unwrap().events, 0);
}

#[test]
fn blob_events_carry_their_envelope_too() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let big = Deposited {
        account: 1,
        amount: 2,
        note: "b".repeat(5000),
    };
    let opts = AppendOptions::new()
        .event_id(EventId::from_u128(77))
        .metadata("kind", "large");
    let a = writer
        .commit(Append::event(1, ExpectedVersion::NoStream, &big).options(opts.clone()))
        .map(|v| v[0])
        .unwrap();
    assert_eq!(
        writer
            .commit(Append::event(1, ExpectedVersion::NoStream, &big).options(opts))
            .map(|v| v[0])
            .unwrap(),
        a
    );
    let txn = storage.read_txn().unwrap();
    let e = Reader::<Deposited>::new(storage.clone())
        .get(&txn, a.seq)
        .unwrap()
        .unwrap();
    assert!(e.is_blob() && e.is_zero_copy());
    assert_eq!(e.note.len(), 5000);
    assert_eq!(e.metadata().get("kind"), Some("large"));
    assert_eq!(e.event_id(), Some(EventId::from_u128(77)));
    let raw = storage.raw_reader().get(&txn, a.seq).unwrap().unwrap();
    assert!(raw.is_blob());
    assert_eq!(raw.metadata().get("kind"), Some("large"));
    drop(txn);
    assert!(storage.verify().unwrap().is_clean());
}

#[test]
fn the_raw_view_reads_every_record_without_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    Writer::<Deposited>::new(storage.clone())
        .commit(
            Append::event(5, ExpectedVersion::NoStream, &deposit(1))
                .options(AppendOptions::new().metadata("tenant", "acme")),
        )
        .map(|v| v[0])
        .unwrap();
    Writer::<Bank>::new(storage.clone())
        .append(6, ExpectedVersion::NoStream, &Bank::Closed)
        .unwrap();
    let txn = storage.read_txn().unwrap();
    let raw = storage.raw_reader();
    let all: Vec<_> = raw.read_all(&txn, 1).map(Result::unwrap).collect();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].seq(), all[0].stream_id(), all[0].version()),
        (1, 5, 1)
    );
    assert_eq!(
        (all[0].event_type(), all[0].event_version()),
        ("Deposited", 1)
    );
    assert_eq!(all[0].event_container(), "");
    assert_eq!(all[0].metadata().get("tenant"), Some("acme"));
    assert!(all[0].timestamp_ns() > 0);
    assert!(!all[0].payload_bytes().is_empty());
    assert_eq!(all[0].archived::<Deposited>().unwrap().amount, 1);
    assert!(matches!(
        all[0].archived::<Bank>(),
        Err(Error::TypeMismatch { .. })
    ));
    assert_eq!(
        (all[1].event_type(), all[1].event_container()),
        ("Closed", "Bank")
    );
    let stream: Vec<_> = raw.read_stream(&txn, 6, 1).map(Result::unwrap).collect();
    assert_eq!(stream.len(), 1);
    assert!(raw.get(&txn, 3).unwrap().is_none());
    assert!(format!("{:?}", all[0]).contains("Deposited"));
}
