//! The event every peer stores: about 150 bytes once archived, like a typical domain event.

use rkyv::{Archive, Deserialize, Serialize};

/// A money movement on an account, with a correlation id and a short free-text note.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, varvedb::Event)]
pub struct BenchEvent {
    /// The account it belongs to.
    pub account: u64,
    /// Signed amount in cents; the field the scans read.
    pub amount: i64,
    /// When it happened, in unix nanoseconds.
    pub occurred_ns: u64,
    /// The request that caused it.
    pub correlation: [u8; 16],
    /// ISO currency code, zero-padded.
    pub currency: [u8; 4],
    /// Event kind (deposit, withdrawal, …).
    pub kind: u32,
    /// A human note, around 80 bytes.
    pub note: String,
}

/// The `i`-th event of a run: deterministic, so every peer stores the same bytes.
pub fn event(i: u64) -> BenchEvent {
    BenchEvent {
        account: i % 10_007,
        amount: (i % 1_000) as i64 - 500,
        occurred_ns: 1_700_000_000_000_000_000 + i * 1_000,
        correlation: (u128::from(i) * 0x9E37_79B9_7F4A_7C15).to_le_bytes(),
        currency: *b"EUR\0",
        kind: (i % 7) as u32,
        note: format!("transfer {i:>10} settled by the nightly batch, reference ACME-{i:08}"),
    }
}

/// The `i`-th event of a large-payload run: [`event`] with its note grown so that the event
/// archives to about `size` bytes (within the archive's alignment padding).
pub fn large_event(i: u64, size: usize) -> BenchEvent {
    let mut e = event(i);
    let grow = size.saturating_sub(archived_len());
    e.note.push_str(&"x".repeat(grow));
    e
}

/// The archived size of [`event`]'s events, for the report.
pub fn archived_len() -> usize {
    rkyv::to_bytes::<rkyv::rancor::Error>(&event(1)).map_or(0, |b| b.len())
}

/// Reads the one field a scan touches, validating the archive first.
pub fn amount_of(bytes: &[u8]) -> Option<i64> {
    rkyv::access::<ArchivedBenchEvent, rkyv::rancor::Error>(bytes)
        .ok()
        .map(|e| e.amount.to_native())
}

/// [`amount_of`] on bytes at any address: read in place when aligned for the archive, else
/// copied into `buf` first (what a user of a store without aligned values has to do).
pub fn amount_at(buf: &mut rkyv::util::AlignedVec, bytes: &[u8]) -> crate::BenchResult<i64> {
    let found = if bytes.as_ptr().align_offset(8) == 0 {
        amount_of(bytes)
    } else {
        buf.clear();
        buf.extend_from_slice(bytes);
        amount_of(buf)
    };
    found.ok_or_else(|| crate::BenchError::Failed("invalid archive".into()))
}

/// What a read of many events found: how many, and the sum of their amounts (every peer must
/// agree). Keeps one aligned buffer for the events that are not aligned in place.
#[derive(Default)]
pub struct Tally {
    buf: rkyv::util::AlignedVec,
    events: u64,
    sum: i64,
    invalid: bool,
}

impl Tally {
    /// Counts one event's archive; an invalid one is reported by [`Tally::finish`].
    pub fn add(&mut self, bytes: &[u8]) {
        match amount_at(&mut self.buf, bytes) {
            Ok(amount) => {
                self.events += 1;
                self.sum += amount;
            }
            Err(_) => self.invalid = true,
        }
    }

    /// (events, sum of amounts), or the error if any archive was invalid.
    pub fn finish(self) -> crate::BenchResult<(u64, i64)> {
        if self.invalid {
            return Err(crate::BenchError::Failed("invalid archive".into()));
        }
        Ok((self.events, self.sum))
    }
}
