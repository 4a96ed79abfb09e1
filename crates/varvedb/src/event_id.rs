//! [`EventId`]: a 128-bit, UUID-compatible event id. At the bottom of the layers, beside
//! `error` (which names it), so that every layer can use it.

/// A 128-bit event id, UUID-compatible: what makes an append idempotent, and what correlation
/// and causation ids are made of.
///
/// Time-ordered ids (UUIDv7) keep the id index compact; random ones (UUIDv4) scatter it (see
/// `docs/performance.md`). With the `uuid` feature, `EventId: From<uuid::Uuid>` and back.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(u128);

impl EventId {
    /// The id with these 128 bits (a UUID's bits, big-endian as `Uuid::as_u128` gives them).
    pub const fn from_u128(bits: u128) -> Self {
        EventId(bits)
    }

    /// The id's 128 bits.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl std::fmt::Display for EventId {
    /// The UUID form: `0190f00d-0000-7000-8000-000000000001`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (b >> 96) as u32,
            (b >> 80) as u16,
            (b >> 64) as u16,
            (b >> 48) as u16,
            b & 0xffff_ffff_ffff
        )
    }
}

impl std::fmt::Debug for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl From<u128> for EventId {
    fn from(bits: u128) -> Self {
        EventId(bits)
    }
}

#[cfg(feature = "uuid")]
impl From<uuid::Uuid> for EventId {
    fn from(id: uuid::Uuid) -> Self {
        EventId(id.as_u128())
    }
}

#[cfg(feature = "uuid")]
impl From<EventId> for uuid::Uuid {
    fn from(id: EventId) -> Self {
        uuid::Uuid::from_u128(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::EventId;

    #[test]
    fn displays_as_a_uuid() {
        let id = EventId::from_u128(0x0190_f00d_0000_7000_8000_0000_0000_0001);
        assert_eq!(id.to_string(), "0190f00d-0000-7000-8000-000000000001");
        assert_eq!(EventId::from(id.as_u128()), id);
    }

    #[cfg(feature = "uuid")]
    #[test]
    fn converts_to_and_from_uuid() {
        let uuid = uuid::Uuid::from_u128(0x0190_f00d_0000_7000_8000_0000_0000_0001);
        let id = EventId::from(uuid);
        assert_eq!(id.to_string(), uuid.to_string());
        assert_eq!(uuid::Uuid::from(id), uuid);
    }
}
