//! The event envelope: what a record says about its event besides the payload. This file holds
//! the [`Event`] trait (a type name and schema version, derived with `#[derive(Event)]`).
//!
//! A store keeps each distinct `(container, name, version)` once, in its `types` table, and a
//! record carries its 32-bit id (see `docs/design.md`, "Event types"). A reader checks that id
//! against its own type before it validates a payload, so a `Reader<Other>` never reads someone
//! else's event as garbage: it gets [`Error::TypeMismatch`](crate::Error::TypeMismatch).

/// One type an event may be stored as: a name and a schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The event's type name (`"OrderPlaced"`): what frameworks call the event type.
    pub name: &'static str,
    /// The schema version of that name, from 1: a new version for each change of the payload's
    /// layout, so that a reader can upcast the older ones.
    pub version: u16,
}

impl EventType {
    /// The longest type name (and enum name), in bytes.
    pub const NAME_BYTES_MAX: usize = EVENT_NAME_BYTES_MAX;

    /// An event type; `#[derive(Event)]` writes these.
    pub const fn new(name: &'static str, version: u16) -> Self {
        EventType { name, version }
    }
}

/// An event type VarveDB can store: its type name and schema version.
///
/// Derive it: `#[derive(varvedb::Event)]`, with an optional `#[event(name = "..", version = N)]`
/// (the default name is the type's ident, the default version 1).
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
/// #[event(name = "OrderPlaced", version = 2)]
/// struct OrderPlaced { order: u64, total_cents: u64 }
///
/// use varvedb::Event;
/// let e = OrderPlaced { order: 1, total_cents: 990 };
/// assert_eq!((e.event_type(), e.event_version()), ("OrderPlaced", 2));
/// ```
///
/// **An enum of events** is one type for a whole log (a reader of the enum reads every event
/// written as that enum), and each variant is its own event type: its ident, or its own
/// `#[event(name, version)]`. An enum's events are archived as the enum, so they are read back
/// through the enum; a `Reader` of one variant's payload struct gets
/// [`Error::TypeMismatch`](crate::Error::TypeMismatch) for them. The enum's own name (its ident
/// or `#[event(name)]` on the enum) is its container.
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
/// enum Account {
///     Opened { owner: String },
///     #[event(name = "Deposited", version = 2)]
///     Deposited { cents: u64 },
/// }
///
/// use varvedb::Event;
/// assert_eq!(Account::CONTAINER, "Account");
/// assert_eq!(Account::Deposited { cents: 5 }.event_type(), "Deposited");
/// assert_eq!(Account::TYPES.len(), 2);
/// ```
pub trait Event {
    /// `""` for a struct; for an enum of events, the enum's name. Events of an enum are
    /// archived as the enum, so a record knows which one it was written as.
    const CONTAINER: &'static str;
    /// Every type a value may be stored as (one for a struct, one per variant for an enum): what
    /// a reader of this type accepts.
    const TYPES: &'static [EventType];
    /// The type name this value is stored as.
    fn event_type(&self) -> &'static str;
    /// The schema version this value is stored as.
    fn event_version(&self) -> u16;
}

pub use crate::event_id::EventId;

/// The longest event type name or container name, in bytes.
pub const EVENT_NAME_BYTES_MAX: usize = 255;

/// The most bytes an event's ids and metadata take in its record (64 KiB); past it an append is
/// [`Error::MetadataTooLarge`](crate::Error::MetadataTooLarge).
pub const ENVELOPE_BYTES_MAX: usize = crate::storage::ENVELOPE_BYTES_MAX;

/// What an append stores beside an event: an event id (for idempotency), a correlation and a
/// causation id, and metadata as string pairs. All optional; an event without any stores
/// nothing extra.
///
/// ```
/// use varvedb::{AppendOptions, EventId};
/// let id = EventId::from_u128(7);
/// let opts = AppendOptions::new().event_id(id).metadata("tenant", "acme").correlation_id(id);
/// assert_eq!(opts.get_event_id(), Some(id));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    pub(crate) fields: crate::storage::Fields,
}

impl AppendOptions {
    /// The largest envelope (ids, tags and metadata) an event may carry, in bytes.
    pub const ENVELOPE_BYTES_MAX: usize = ENVELOPE_BYTES_MAX;

    /// No id, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The event's id. An append whose ids the store already has, for the same events at the
    /// same place, returns the original answer and writes nothing (see
    /// [`Append::options`](crate::Append::options)).
    pub fn event_id(mut self, id: impl Into<EventId>) -> Self {
        self.fields.event_id = Some(id.into().as_u128());
        self
    }

    /// The id of the event or request this event belongs with (its conversation).
    pub fn correlation_id(mut self, id: impl Into<EventId>) -> Self {
        self.fields.correlation_id = Some(id.into().as_u128());
        self
    }

    /// The id of the event or command that caused this one.
    pub fn causation_id(mut self, id: impl Into<EventId>) -> Self {
        self.fields.causation_id = Some(id.into().as_u128());
        self
    }

    /// Adds a tag: a domain identifier such as `account:42` (1 to 255 bytes of UTF-8, at most
    /// 255 per event; a tag given twice is kept once). Tags are indexed in the append's
    /// transaction, so that a [`Query`](crate::Query) finds the events that carry them in a few
    /// B-tree descents, and a conditional append
    /// ([`Append::when`](crate::Append::when)) checks them. Like the ids they stay in
    /// the clear in an encrypted store, and a shred leaves them: do not put secrets in tags.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        if !self.fields.tags.contains(&tag) {
            self.fields.tags.push(tag);
        }
        self
    }

    /// Adds several tags (see [`tag`](Self::tag)).
    pub fn tags<T: Into<String>>(self, tags: impl IntoIterator<Item = T>) -> Self {
        tags.into_iter().fold(self, |o, t| o.tag(t))
    }

    /// The tags set, in order.
    pub fn get_tags(&self) -> &[String] {
        &self.fields.tags
    }

    /// Adds a metadata pair. Pairs keep their order; a key may repeat (`get` finds the first).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.metadata.push((key.into(), value.into()));
        self
    }

    /// The event id set, if any.
    pub fn get_event_id(&self) -> Option<EventId> {
        self.fields.event_id.map(EventId::from_u128)
    }
}

/// An event's metadata pairs, read from its record without touching the payload.
#[derive(Clone, Copy, Default)]
pub struct Metadata<'t> {
    /// The encoded pairs, checked when the event was read.
    pub(crate) pairs: &'t [u8],
    pub(crate) count: u16,
}

impl<'t> Metadata<'t> {
    /// The value of the first pair with `key`.
    pub fn get(&self, key: &str) -> Option<&'t str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every pair, in the order they were given.
    pub fn iter(&self) -> impl Iterator<Item = (&'t str, &'t str)> + 't {
        crate::storage::pairs(self.pairs, self.count)
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl std::fmt::Debug for Metadata<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The envelope accessors of a stored event, written once for every view of one
/// ([`EventRef`](crate::EventRef), [`RawEvent`](crate::RawEvent)). The view has a field
/// `envelope` (its record's envelope section) and a method `opened_pairs` (the metadata pairs
/// its payload was decrypted with, `Some` for an encrypted event read with its key, and
/// `Some` of nothing for one that could not be).
macro_rules! envelope_accessors {
    ($t:lifetime) => {
        /// The event id its append gave, if any.
        pub fn event_id(&self) -> Option<$crate::EventId> {
            self.envelope.event_id().map($crate::EventId::from_u128)
        }

        /// The correlation id its append gave, if any.
        pub fn correlation_id(&self) -> Option<$crate::EventId> {
            self.envelope
                .correlation_id()
                .map($crate::EventId::from_u128)
        }

        /// The causation id its append gave, if any.
        pub fn causation_id(&self) -> Option<$crate::EventId> {
            self.envelope.causation_id().map($crate::EventId::from_u128)
        }

        /// Its tags, in the order its append gave them (in the clear, even for an encrypted or
        /// shredded event).
        pub fn tags(&self) -> $crate::Tags<$t> {
            self.envelope.tags()
        }

        /// Its metadata pairs, in the order its append gave them (for an encrypted event,
        /// decrypted; none if it could not be).
        pub fn metadata(&self) -> $crate::Metadata<'_> {
            let (pairs, count) = self
                .opened_pairs()
                .unwrap_or_else(|| self.envelope.encoded_pairs());
            $crate::Metadata { pairs, count }
        }
    };
}
pub(crate) use envelope_accessors;
