//! The stores measured side by side.

mod heed_raw;
mod sqlite;
mod umadb;
mod varvedb;
mod varvedb04;

use std::path::Path;

use crate::store::{BenchResult, BenchStore};

pub use heed_raw::HeedRaw;
pub use sqlite::Sqlite;
pub use umadb::UmaDb;
pub use varvedb::VarveDb;
pub use varvedb04::VarveDb04;

/// Every peer's name, in table order.
pub const ALL: [&str; 6] = [
    VarveDb::NAME,
    VarveDb::NAME_ENCRYPTED,
    Sqlite::NAME,
    VarveDb04::NAME,
    HeedRaw::NAME,
    UmaDb::NAME,
];

/// Opens the peer called `name` on a fresh store in `dir`.
pub fn open(name: &str, dir: &Path) -> BenchResult<Box<dyn BenchStore>> {
    Ok(match name {
        VarveDb::NAME => Box::new(VarveDb::open(dir)?),
        VarveDb::NAME_ENCRYPTED => Box::new(VarveDb::open_encrypted(dir)?),
        Sqlite::NAME => Box::new(Sqlite::open(dir)?),
        VarveDb04::NAME => Box::new(VarveDb04::open(dir)?),
        HeedRaw::NAME => Box::new(HeedRaw::open(dir)?),
        UmaDb::NAME => Box::new(UmaDb::open(dir)?),
        other => {
            return Err(crate::store::BenchError::Failed(format!(
                "unknown peer {other:?} (known: {})",
                ALL.join(", ")
            )));
        }
    })
}
