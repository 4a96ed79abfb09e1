//! Upcasting: an event's schema changed, and the log holds both versions. A reader looks at
//! each event's stored version and reads its payload as the type of that version, then
//! converts the old one.
//!
//! ```sh
//! cargo run -p varvedb --example upcasting
//! ```
//!
//! The pattern: give each layout its own type with the same name and its own
//! `#[event(version = N)]`; write with the newest; read through the untyped view
//! (`RawEvent::event_version`, then `RawEvent::archived::<TypeOfThatVersion>()`, zero-copy).
//! A typed `Reader` of the newest version refuses an old event with `Error::TypeMismatch`
//! rather than misreading it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use varvedb::{ExpectedVersion, RawEvent, Result, Storage, StorageConfig, Writer};

/// Version 1: the price in whole euros.
#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
#[event(name = "PriceSet", version = 1)]
struct PriceSetV1 {
    euros: u32,
}

/// Version 2: cents, and a currency.
#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
#[event(name = "PriceSet", version = 2)]
struct PriceSet {
    cents: u64,
    currency: String,
}

/// The current shape of the event, whatever version it was stored as.
#[derive(Debug, PartialEq)]
struct Price {
    cents: u64,
    currency: String,
}

fn upcast(event: &RawEvent<'_>) -> Result<Price> {
    Ok(match event.event_version() {
        1 => {
            let old = event.archived::<PriceSetV1>()?;
            Price {
                cents: u64::from(old.euros.to_native()) * 100,
                currency: "EUR".into(),
            }
        }
        _ => {
            let new = event.archived::<PriceSet>()?;
            Price {
                cents: new.cents.to_native(),
                currency: new.currency.to_string(),
            }
        }
    })
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })?;
    // Written long ago, by the old code.
    Writer::<PriceSetV1>::new(storage.clone()).append(
        7,
        ExpectedVersion::NoStream,
        &PriceSetV1 { euros: 12 },
    )?;
    // Written today.
    Writer::<PriceSet>::new(storage.clone()).append(
        7,
        ExpectedVersion::Exact(1),
        &PriceSet {
            cents: 1299,
            currency: "EUR".into(),
        },
    )?;

    let txn = storage.read_txn()?;
    let prices: Vec<Price> = storage
        .raw_reader()
        .read_stream(&txn, 7, 1)
        .map(|e| upcast(&e?))
        .collect::<Result<_>>()?;
    for p in &prices {
        println!("{} {}", p.cents, p.currency);
    }
    assert_eq!(prices[0].cents, 1200);
    assert_eq!(prices[1].cents, 1299);
    Ok(())
}
