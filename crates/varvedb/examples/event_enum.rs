//! One enum for a whole log: each variant is its own event type (name and version), and a
//! reader of the enum reads every event written through it, zero-copy.
//!
//! ```sh
//! cargo run -p varvedb --example event_enum
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use varvedb::{Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

/// Every event of the shop. The enum's name ("Shop") is the container each event is stored
/// under; each variant is an event type of its own.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
enum Shop {
    CartOpened {
        customer: String,
    },
    ItemAdded {
        sku: String,
        cents: u64,
    },
    #[event(name = "CheckedOut", version = 2)]
    CheckedOut {
        total_cents: u64,
        coupon: Option<String>,
    },
}

/// An event of another part of the system, in the same log.
#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct AuditNote {
    text: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })?;
    let shop = Writer::<Shop>::new(storage.clone());
    let cart = 1;
    shop.append(
        cart,
        ExpectedVersion::NoStream,
        &Shop::CartOpened {
            customer: "ada".into(),
        },
    )?;
    shop.append_batch(
        cart,
        ExpectedVersion::Exact(1),
        &[
            Shop::ItemAdded {
                sku: "tea".into(),
                cents: 450,
            },
            Shop::ItemAdded {
                sku: "cup".into(),
                cents: 1200,
            },
        ],
    )?;
    Writer::<AuditNote>::new(storage.clone()).append(
        99,
        ExpectedVersion::Auto,
        &AuditNote {
            text: "cart 1 looked at".into(),
        },
    )?;
    shop.append(
        cart,
        ExpectedVersion::Exact(3),
        &Shop::CheckedOut {
            total_cents: 1650,
            coupon: None,
        },
    )?;

    // The whole log through the enum: its events are read, the audit note is reported as a
    // type mismatch and skipped.
    let reader = Reader::<Shop>::new(storage.clone());
    let txn = storage.read_txn()?;
    for event in reader.read_all(&txn, 1) {
        match event {
            Ok(e) => {
                let what = match &*e {
                    ArchivedShop::CartOpened { customer } => format!("cart for {customer}"),
                    ArchivedShop::ItemAdded { sku, cents } => format!("{sku} at {cents}"),
                    ArchivedShop::CheckedOut { total_cents, .. } => format!("paid {total_cents}"),
                };
                println!(
                    "seq {} {} v{}: {what}",
                    e.seq(),
                    e.event_type(),
                    e.event_version()
                );
            }
            Err(Error::TypeMismatch { seq, found, .. }) => {
                println!("seq {seq} is a {found}: not a shop event");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
