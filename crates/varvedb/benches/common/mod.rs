//! The event the criterion benchmarks share.

use rkyv::{Archive, Deserialize, Serialize};

/// A realistic event of about 150 bytes archived.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, varvedb::Event)]
pub struct Deposited {
    pub account: u64,
    pub amount: u64,
    pub currency: [u8; 3],
    pub at_ns: u64,
    pub reference: u128,
    pub note: String,
}

pub fn event(i: u64) -> Deposited {
    Deposited {
        account: i % 10_000,
        amount: i * 7,
        currency: *b"EUR",
        at_ns: 1_700_000_000_000_000_000 + i,
        reference: u128::from(i) << 64 | 0xfeed,
        note: format!(
            "salary payment for invoice {i:010}, thank you; reference code ABCDEFGHIJ-{}",
            i % 97
        ),
    }
}
