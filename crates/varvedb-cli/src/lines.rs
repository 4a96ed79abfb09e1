//! The export's line format: JSON lines, a header and then one line per event, with every
//! byte of the stored record (payloads in base64, never decrypted). `varvedb export` writes
//! it and `varvedb import` reads it; [`parse_header`] and [`parse_event`] are the whole of
//! the reading side, which the `import_lines` fuzz target drives.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use varvedb::{
    EventId, ExportBounds, ExportConsumer, ExportGroup, ExportHeader, ExportKey, ExportType,
    ParkedEvent, StoredEvent,
};

use crate::stream_id::parse as parse_stream;

/// What the header line says the file is.
pub const EXPORT_KIND: &str = "varvedb-export";
/// The version of this line format.
pub const EXPORT_VERSION: u32 = 1;

/// Reads the header line (the first of an export).
pub fn parse_header(line: &str) -> Result<ExportHeader, String> {
    let header: HeaderLine = serde_json::from_str(line)
        .map_err(|e| format!("line 1: not a varvedb export header: {e}"))?;
    header_of(1, header)
}

/// Reads the event on line `number` (counted from 1, the header's).
pub fn parse_event(number: usize, line: &str) -> Result<StoredEvent, String> {
    let event: EventLine =
        serde_json::from_str(line).map_err(|e| format!("line {number}: not an event: {e}"))?;
    event_of(number, event)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderLine {
    pub kind: String,
    pub export_version: u32,
    pub record_format: u32,
    pub last_seq: u64,
    /// The stored checksum of the store's first event (16 hex digits); absent in older exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub types: Vec<TypeLine>,
    pub keys: Vec<KeyLine>,
    pub key_check: Option<String>,
    pub consumers: Vec<ConsumerLine>,
    /// Events removed from the log: the event lines have gaps where they were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub removed_events: u64,
    /// The streams that lost events: first kept version, tombstone, head.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<BoundsLine>,
    /// The consumer groups: settings, each partition's cursor, parked events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupLine>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupLine {
    pub name: String,
    pub partitions: u32,
    pub lease_ms: u64,
    pub positions: Vec<u64>,
    pub parked: Vec<ParkedLine>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundsLine {
    pub stream: String,
    pub first_kept: u32,
    pub tombstoned: bool,
    pub version: u32,
    pub last_seq: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeLine {
    pub id: u32,
    pub container: String,
    pub name: String,
    pub version: u16,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLine {
    pub stream: String,
    /// The key wrapped by the master key, base64; null: shredded.
    pub wrapped: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerLine {
    pub name: String,
    pub position: u64,
    pub parked: Vec<ParkedLine>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkedLine {
    pub seq: u64,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    pub seq: u64,
    pub stream: String,
    pub version: u32,
    pub timestamp_ns: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    pub container: String,
    pub type_version: u16,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub causation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: Vec<(String, String)>,
    pub encrypted: bool,
    /// The seal binds the store id, the type and the envelope (absent in older exports).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bound: bool,
    pub blob: bool,
    /// The stored payload, base64 (null only for a released blob of a shredded stream).
    pub payload: Option<String>,
    /// The 48-byte blob reference of an event whose blob was released, base64.
    #[serde(default)]
    pub blob_ref: Option<String>,
    /// The record's checksum (16 hex digits): the import refuses an event that does not
    /// rebuild to it. Absent in exports of before checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// `[prev, jump]`: the chain links of an event whose links point into its stream's
    /// removed versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<[u64; 2]>,
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(line: usize, field: &str, text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text)
        .map_err(|e| format!("line {line}: {field} is not base64: {e}"))
}

/// An event id in its UUID form, back to its bits.
pub fn parse_event_id(line: usize, field: &str, text: &str) -> Result<EventId, String> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(format!("line {line}: {field} {text:?} is not a UUID"));
    }
    u128::from_str_radix(&hex, 16)
        .map(EventId::from_u128)
        .map_err(|_| format!("line {line}: {field} {text:?} is not a UUID"))
}

pub fn header_line(h: &ExportHeader) -> HeaderLine {
    HeaderLine {
        kind: EXPORT_KIND.into(),
        export_version: EXPORT_VERSION,
        record_format: h.format,
        last_seq: h.last_seq,
        origin: h.origin.map(|c| format!("{c:016x}")),
        types: h
            .types
            .iter()
            .map(|t| TypeLine {
                id: t.id,
                container: t.container.clone(),
                name: t.name.clone(),
                version: t.version,
            })
            .collect(),
        keys: h
            .keys
            .iter()
            .map(|k| KeyLine {
                stream: crate::stream_id::show(k.stream_id),
                wrapped: k.wrapped.as_deref().map(b64),
            })
            .collect(),
        key_check: h.key_check.as_deref().map(b64),
        consumers: h
            .consumers
            .iter()
            .map(|c| ConsumerLine {
                name: c.name.clone(),
                position: c.position,
                parked: c
                    .parked
                    .iter()
                    .map(|p| ParkedLine {
                        seq: p.seq,
                        reason: p.reason.clone(),
                    })
                    .collect(),
            })
            .collect(),
        removed_events: h.removed_events,
        bounds: h
            .bounds
            .iter()
            .map(|b| BoundsLine {
                stream: crate::stream_id::show(b.stream_id),
                first_kept: b.first_kept,
                tombstoned: b.tombstoned,
                version: b.head.0,
                last_seq: b.head.1,
            })
            .collect(),
        groups: h
            .groups
            .iter()
            .map(|g| GroupLine {
                name: g.name.clone(),
                partitions: g.partitions,
                lease_ms: g.lease_ms,
                positions: g.positions.clone(),
                parked: g
                    .parked
                    .iter()
                    .map(|p| ParkedLine {
                        seq: p.seq,
                        reason: p.reason.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn header_of(line: usize, h: HeaderLine) -> Result<ExportHeader, String> {
    if h.kind != EXPORT_KIND || h.export_version != EXPORT_VERSION {
        return Err(format!(
            "line {line}: not a varvedb export of version {EXPORT_VERSION} (kind {:?}, version {})",
            h.kind, h.export_version
        ));
    }
    let mut keys = Vec::with_capacity(h.keys.len());
    for k in h.keys {
        keys.push(ExportKey {
            stream_id: parse_stream(&k.stream).map_err(|e| format!("line {line}: {e}"))?,
            wrapped: k
                .wrapped
                .map(|w| unb64(line, "a wrapped key", &w))
                .transpose()?,
        });
    }
    Ok(ExportHeader {
        format: h.record_format,
        last_seq: h.last_seq,
        origin: h
            .origin
            .map(|c| {
                u64::from_str_radix(&c, 16)
                    .map_err(|_| format!("line {line}: origin {c:?} is not 16 hex digits"))
            })
            .transpose()?,
        types: h
            .types
            .into_iter()
            .map(|t| ExportType {
                id: t.id,
                container: t.container,
                name: t.name,
                version: t.version,
            })
            .collect(),
        keys,
        key_check: h
            .key_check
            .map(|c| unb64(line, "key_check", &c))
            .transpose()?,
        consumers: h
            .consumers
            .into_iter()
            .map(|c| ExportConsumer {
                name: c.name,
                position: c.position,
                parked: c
                    .parked
                    .into_iter()
                    .map(|p| ParkedEvent::new(p.seq, p.reason))
                    .collect(),
            })
            .collect(),
        removed_events: h.removed_events,
        bounds: h
            .bounds
            .into_iter()
            .map(|b| {
                Ok(ExportBounds {
                    stream_id: parse_stream(&b.stream).map_err(|e| format!("line {line}: {e}"))?,
                    first_kept: b.first_kept,
                    tombstoned: b.tombstoned,
                    head: (b.version, b.last_seq),
                })
            })
            .collect::<Result<_, String>>()?,
        groups: h
            .groups
            .into_iter()
            .map(|g| ExportGroup {
                name: g.name,
                partitions: g.partitions,
                lease_ms: g.lease_ms,
                positions: g.positions,
                parked: g
                    .parked
                    .into_iter()
                    .map(|p| ParkedEvent::new(p.seq, p.reason))
                    .collect(),
            })
            .collect(),
    })
}

pub fn event_line(e: &StoredEvent) -> EventLine {
    let id = |id: Option<EventId>| id.map(|i| i.to_string());
    EventLine {
        seq: e.seq,
        stream: crate::stream_id::show(e.stream_id),
        version: e.version,
        timestamp_ns: e.timestamp_ns,
        type_name: e.type_name.clone(),
        container: e.type_container.clone(),
        type_version: e.type_version,
        event_id: id(e.event_id),
        correlation_id: id(e.correlation_id),
        causation_id: id(e.causation_id),
        tags: e.tags.clone(),
        metadata: e.metadata.clone(),
        encrypted: e.encrypted,
        bound: e.bound,
        blob: e.blob,
        payload: e.payload.as_deref().map(b64),
        blob_ref: e.blob_ref.as_deref().map(b64),
        checksum: e.checksum.map(|c| format!("{c:016x}")),
        links: e.links.map(|(prev, jump)| [prev, jump]),
    }
}

pub fn event_of(line: usize, e: EventLine) -> Result<StoredEvent, String> {
    let id =
        |field: &str, v: Option<String>| v.map(|v| parse_event_id(line, field, &v)).transpose();
    Ok(StoredEvent {
        seq: e.seq,
        stream_id: parse_stream(&e.stream).map_err(|err| format!("line {line}: {err}"))?,
        version: e.version,
        timestamp_ns: e.timestamp_ns,
        type_container: e.container,
        type_name: e.type_name,
        type_version: e.type_version,
        event_id: id("event_id", e.event_id)?,
        correlation_id: id("correlation_id", e.correlation_id)?,
        causation_id: id("causation_id", e.causation_id)?,
        tags: e.tags,
        metadata: e.metadata,
        encrypted: e.encrypted,
        bound: e.bound,
        blob: e.blob,
        payload: e.payload.map(|p| unb64(line, "payload", &p)).transpose()?,
        blob_ref: e
            .blob_ref
            .map(|r| unb64(line, "blob_ref", &r))
            .transpose()?,
        checksum: e
            .checksum
            .map(|c| {
                u64::from_str_radix(&c, 16)
                    .map_err(|_| format!("line {line}: checksum {c:?} is not 16 hex digits"))
            })
            .transpose()?,
        links: e.links.map(|[prev, jump]| (prev, jump)),
        // A property of the store's transactions, not of the event: an import makes its own.
        ends_group: false,
    })
}
