//! The JSON event type: events whose data is JSON text, for tools, scripts and frameworks
//! that serialize with serde (`varvedb append`, `varvedb-cqrs`). `docs/design.md`, "The
//! JSON event type", has the layout.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use rkyv::{Archive, Deserialize, Serialize};

use crate::event::EventType;
use crate::untyped::RawEvent;

/// The container name of JSON events.
pub const JSON_CONTAINER: &str = "varvedb.json";

/// An event whose data is JSON text, stored with the container [`JSON_CONTAINER`], its own
/// type name and schema version 1; the payload is the rkyv archive of the text. The text is
/// stored as given: writers put JSON in it (`varvedb append` validates and compacts it).
/// Read it back without a Rust type with [`JsonEvent::data_of`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JsonEvent {
    /// The type name (not in the payload: the record's type is).
    #[rkyv(with = rkyv::with::Skip)]
    name: &'static str,
    /// The event's data, JSON text.
    json: String,
}

/// Type names of JSON events, one copy each for the life of the process (the `Event` trait
/// names types with `&'static str`). They are few: one per kind of event an application has.
static NAMES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);

fn intern(name: &str) -> &'static str {
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl JsonEvent {
    /// The container name the JSON event type is stored under.
    pub const CONTAINER: &'static str = JSON_CONTAINER;

    /// An event of type `name` with the JSON text `json`.
    pub fn new(name: &str, json: impl Into<String>) -> Self {
        JsonEvent {
            name: intern(name),
            json: json.into(),
        }
    }

    /// Its type name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The JSON text of a stored event, if it is a JSON event whose payload can be read
    /// (`None` for other types, and for a payload that is sealed, shredded or not a valid
    /// archive).
    pub fn data_of(event: &RawEvent<'_>) -> Option<String> {
        if event.event_container() != JSON_CONTAINER || event.payload_bytes().is_empty() {
            return None;
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(event.payload_bytes());
        let archived = rkyv::access::<ArchivedJsonEvent, rkyv::rancor::Error>(&aligned).ok()?;
        Some(archived.json.as_str().to_owned())
    }
}

impl crate::Event for JsonEvent {
    const CONTAINER: &'static str = JSON_CONTAINER;
    // Read through the untyped view (`data_of`), so no list of types.
    const TYPES: &'static [EventType] = &[];
    fn event_type(&self) -> &'static str {
        self.name
    }
    fn event_version(&self) -> u16 {
        1
    }
}
