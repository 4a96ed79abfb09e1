//! One event as one JetStream message: the headers carry the record's fields, the payload is
//! the stored bytes (`docs/design.md`, "Replication to NATS JetStream", has the table).

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use varvedb::{EventId, RetentionPolicy, StoredEvent, StreamRemoval};

use crate::Error;

pub(crate) const SEQ: HeaderName = HeaderName::from_static("Varve-Seq");
pub(crate) const STREAM: HeaderName = HeaderName::from_static("Varve-Stream");
pub(crate) const VERSION: HeaderName = HeaderName::from_static("Varve-Version");
pub(crate) const TIMESTAMP: HeaderName = HeaderName::from_static("Varve-Timestamp");
pub(crate) const TYPE: HeaderName = HeaderName::from_static("Varve-Type");
pub(crate) const TYPE_VERSION: HeaderName = HeaderName::from_static("Varve-Type-Version");
pub(crate) const TYPE_CONTAINER: HeaderName = HeaderName::from_static("Varve-Type-Container");
pub(crate) const TYPE_ID: HeaderName = HeaderName::from_static("Varve-Type-Id");
pub(crate) const ENCRYPTED: HeaderName = HeaderName::from_static("Varve-Encrypted");
pub(crate) const BLOB: HeaderName = HeaderName::from_static("Varve-Blob");
/// "1" when an encrypted event's seal binds the store id, the type and the envelope.
pub(crate) const BOUND: HeaderName = HeaderName::from_static("Varve-Bound");
pub(crate) const BLOB_REF: HeaderName = HeaderName::from_static("Varve-Blob-Ref");
pub(crate) const EVENT_ID: HeaderName = HeaderName::from_static("Varve-Event-Id");
pub(crate) const CORRELATION_ID: HeaderName = HeaderName::from_static("Varve-Correlation-Id");
pub(crate) const CAUSATION_ID: HeaderName = HeaderName::from_static("Varve-Causation-Id");
pub(crate) const METADATA: HeaderName = HeaderName::from_static("Varve-Metadata");
pub(crate) const TAGS: HeaderName = HeaderName::from_static("Varve-Tags");
pub(crate) const GROUP: HeaderName = HeaderName::from_static("Varve-Group");
/// The record's chain links, `prev.jump` (sequences): a replica needs them for a stream whose
/// first events were removed, where they point at records it never had.
pub(crate) const LINKS: HeaderName = HeaderName::from_static("Varve-Links");
/// "1" on the message that stands for an event removed before it was published: the
/// stream's sequence must still be the global sequence.
pub(crate) const REMOVED: HeaderName = HeaderName::from_static("Varve-Removed");
/// The most events a commit group on the wire may span (a group is at most
/// `batch_events_max` events past a request, 100,000 by default; this leaves room for any
/// configuration while keeping what a restorer queues bounded).
pub(crate) const GROUP_EVENTS_MAX: u64 = 1 << 24;
pub(crate) const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");

/// The `Nats-Msg-Id` of the event `seq`: derived from the global sequence alone, so that a
/// resend of the same event is the same message to the server's deduplication.
pub fn message_id(seq: u64) -> String {
    format!("varve-{seq}")
}

/// Percent-encodes everything but unreserved ASCII, so that any UTF-8 string (type names,
/// metadata) is a valid header value and `&`/`=` can separate pairs.
fn encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn id_text(id: EventId) -> String {
    format!("{:032x}", id.as_u128())
}

/// The subject of the messages that stand for removed events (a stream id is a number, so it
/// never names this token).
pub(crate) fn removed_subject(prefix: &str) -> String {
    format!("{prefix}.removed")
}

/// The headers of the message that stands for event `seq`, removed before it was published.
pub(crate) fn removed_headers(seq: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, message_id(seq));
    h.insert(SEQ, seq.to_string());
    h.insert(REMOVED, "1");
    h
}

/// The headers of `event`, whose record links are `links` and whose commit group ends at
/// `group_last`.
pub(crate) fn headers(
    event: &StoredEvent,
    type_id: u32,
    links: (u64, u64),
    group_last: u64,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, message_id(event.seq));
    h.insert(SEQ, event.seq.to_string());
    h.insert(STREAM, event.stream_id.to_string());
    h.insert(VERSION, event.version.to_string());
    h.insert(TIMESTAMP, event.timestamp_ns.to_string());
    let mut text = String::new();
    encode(&event.type_name, &mut text);
    h.insert(TYPE, text);
    h.insert(TYPE_VERSION, event.type_version.to_string());
    h.insert(TYPE_ID, type_id.to_string());
    if !event.type_container.is_empty() {
        let mut text = String::new();
        encode(&event.type_container, &mut text);
        h.insert(TYPE_CONTAINER, text);
    }
    h.insert(ENCRYPTED, if event.encrypted { "1" } else { "0" });
    if event.bound {
        h.insert(BOUND, "1");
    }
    if event.blob {
        h.insert(BLOB, "1");
    }
    if let Some(reference) = &event.blob_ref {
        h.insert(BLOB_REF, hex(reference));
    }
    for (name, id) in [
        (EVENT_ID, event.event_id),
        (CORRELATION_ID, event.correlation_id),
        (CAUSATION_ID, event.causation_id),
    ] {
        if let Some(id) = id {
            h.insert(name, id_text(id));
        }
    }
    if !event.metadata.is_empty() {
        let mut text = String::new();
        for (i, (k, v)) in event.metadata.iter().enumerate() {
            if i > 0 {
                text.push('&');
            }
            encode(k, &mut text);
            text.push('=');
            encode(v, &mut text);
        }
        h.insert(METADATA, text);
    }
    if !event.tags.is_empty() {
        let mut text = String::new();
        for (i, tag) in event.tags.iter().enumerate() {
            if i > 0 {
                text.push('&');
            }
            encode(tag, &mut text);
        }
        h.insert(TAGS, text);
    }
    h.insert(GROUP, group_last.to_string());
    h.insert(LINKS, format!("{}.{}", links.0, links.1));
    h
}

/// An event read back from a message: the stored event, its type id in the source store, its
/// record's links (absent in messages of before removals), and the last sequence of its
/// commit group.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) event: StoredEvent,
    pub(crate) type_id: u32,
    pub(crate) links: Option<(u64, u64)>,
    pub(crate) group_last: u64,
}

/// A message of the stream: an event, or the place of one removed before it was published.
#[derive(Debug)]
pub(crate) enum Message {
    Event(Box<Decoded>),
    Removed,
}

/// Reads a message: an event, or a removed one's place. `at` is its stream sequence.
pub(crate) fn decode_message(
    at: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Message, Error> {
    if let Some(h) = headers
        && h.get(REMOVED).map(|v| v.as_str()) == Some("1")
    {
        let seq = h.get(SEQ).map(|v| v.as_str());
        if seq != Some(at.to_string().as_str()) {
            return Err(Error::BadMessage {
                seq: at,
                reason: format!(
                    "a removed event's place carries {SEQ} {seq:?} at stream sequence {at}"
                ),
            });
        }
        return Ok(Message::Removed);
    }
    decode_event(at, headers, payload).map(|d| Message::Event(Box::new(d)))
}

/// Reads an event back from a message's headers and payload. `at` is the message's stream
/// sequence, which must be the event's.
pub(crate) fn decode_event(
    at: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Decoded, Error> {
    let bad = |reason: String| Error::BadMessage { seq: at, reason };
    let headers = headers.ok_or_else(|| bad("a message without headers".into()))?;
    let text = |name: HeaderName| headers.get(name).map(|v| v.as_str());
    let need =
        |name: HeaderName| text(name.clone()).ok_or_else(|| bad(format!("no {name} header")));
    fn num<T: std::str::FromStr>(
        name: HeaderName,
        value: &str,
        bad: &dyn Fn(String) -> Error,
    ) -> Result<T, Error> {
        value
            .parse()
            .map_err(|_| bad(format!("{name} {value:?} is not a number")))
    }
    let seq: u64 = num(SEQ, need(SEQ)?, &bad)?;
    if seq != at {
        return Err(bad(format!(
            "it carries event {seq} at stream sequence {at}: the JetStream stream's sequence \
             must be the store's global sequence"
        )));
    }
    let flag = |name: HeaderName| text(name) == Some("1");
    let id = |name: HeaderName| -> Result<Option<EventId>, Error> {
        text(name.clone())
            .map(|v| {
                u128::from_str_radix(v, 16)
                    .map(EventId::from_u128)
                    .map_err(|_| bad(format!("{name} {v:?} is not an id")))
            })
            .transpose()
    };
    let type_name = decode(need(TYPE)?).ok_or_else(|| bad(format!("a malformed {TYPE}")))?;
    let type_container = match text(TYPE_CONTAINER) {
        None => String::new(),
        Some(v) => decode(v).ok_or_else(|| bad(format!("a malformed {TYPE_CONTAINER}")))?,
    };
    let mut metadata = Vec::new();
    if let Some(v) = text(METADATA) {
        for pair in v.split('&') {
            let (k, v) = pair
                .split_once('=')
                .and_then(|(k, v)| Some((decode(k)?, decode(v)?)))
                .ok_or_else(|| bad(format!("a malformed {METADATA} pair {pair:?}")))?;
            metadata.push((k, v));
        }
    }
    let mut tags = Vec::new();
    if let Some(v) = text(TAGS) {
        for tag in v.split('&') {
            tags.push(decode(tag).ok_or_else(|| bad(format!("a malformed {TAGS} tag {tag:?}")))?);
        }
    }
    let blob_ref = text(BLOB_REF)
        .map(|v| unhex(v).ok_or_else(|| bad(format!("a malformed {BLOB_REF}"))))
        .transpose()?;
    let payload = if blob_ref.is_some() {
        None
    } else {
        Some(payload.to_vec())
    };
    let group_last: u64 = num(GROUP, need(GROUP)?, &bad)?;
    let links = match text(LINKS) {
        None => None,
        Some(v) => Some(
            v.split_once('.')
                .and_then(|(p, j)| Some((p.parse().ok()?, j.parse().ok()?)))
                .filter(|&(p, j): &(u64, u64)| p < seq && j <= p)
                .ok_or_else(|| bad(format!("a malformed {LINKS} {v:?}")))?,
        ),
    };
    if group_last < seq {
        return Err(bad(format!(
            "its commit group ends at {group_last}, before the event"
        )));
    }
    // A restorer holds a group in memory until it is whole: a group that claims to go on
    // without bound would be queued forever.
    if group_last - seq >= GROUP_EVENTS_MAX {
        return Err(bad(format!(
            "its commit group ends at {group_last}, {} events on; a commit group has fewer \
             than {GROUP_EVENTS_MAX}",
            group_last - seq
        )));
    }
    let mut event = StoredEvent {
        seq,
        stream_id: num(STREAM, need(STREAM)?, &bad)?,
        version: num(VERSION, need(VERSION)?, &bad)?,
        timestamp_ns: num(TIMESTAMP, need(TIMESTAMP)?, &bad)?,
        type_container,
        type_name,
        type_version: num(TYPE_VERSION, need(TYPE_VERSION)?, &bad)?,
        event_id: id(EVENT_ID)?,
        correlation_id: id(CORRELATION_ID)?,
        causation_id: id(CAUSATION_ID)?,
        tags,
        metadata,
        encrypted: flag(ENCRYPTED),
        bound: flag(BOUND),
        blob: flag(BLOB),
        payload,
        blob_ref,
        // The stream's own sequence and the message ids keep the order; the record is
        // rebuilt and checked by the replica's `verify`.
        checksum: None,
        // The restorer gives the links to the importer for streams with removals only;
        // elsewhere it rebuilds them.
        links: None,
        ends_group: false,
    };
    event.ends_group = group_last == seq;
    Ok(Decoded {
        type_id: num(TYPE_ID, need(TYPE_ID)?, &bad)?,
        event,
        links,
        group_last,
    })
}

/// The key-value entry of an encrypted stream's key.
pub(crate) fn key_entry(stream_id: u128) -> String {
    format!("key.{stream_id:032x}")
}

pub(crate) fn parse_key_entry(key: &str) -> Option<u128> {
    u128::from_str_radix(key.strip_prefix("key.")?, 16).ok()
}

/// The key-value entry of a stream's removal (its bounds).
pub(crate) fn bounds_entry(stream_id: u128) -> String {
    format!("bounds.{stream_id:032x}")
}

pub(crate) fn parse_bounds_entry(key: &str) -> Option<u128> {
    u128::from_str_radix(key.strip_prefix("bounds.")?, 16).ok()
}

/// A removal as a bounds entry's value: `first_kept tombstoned last_removed_version
/// last_removed_seq`, in decimal.
pub(crate) fn encode_removal(r: &StreamRemoval) -> Vec<u8> {
    format!(
        "{} {} {} {}",
        r.first_kept,
        u8::from(r.tombstoned),
        r.last_removed.0,
        r.last_removed.1
    )
    .into_bytes()
}

pub(crate) fn decode_removal(stream_id: u128, value: &[u8]) -> Option<StreamRemoval> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(' ');
    let first_kept: u32 = parts.next()?.parse().ok()?;
    let tombstoned = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let version: u32 = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || first_kept == 0 {
        return None;
    }
    Some(StreamRemoval {
        stream_id,
        first_kept,
        tombstoned,
        last_removed: (version, seq),
    })
}

/// The key-value entry of a retention policy: the store's default, or a stream's.
pub(crate) fn policy_entry(stream: Option<u128>) -> String {
    match stream {
        None => "retention.default".into(),
        Some(id) => format!("retention.{id:032x}"),
    }
}

/// `Some(None)`: the default's entry; `Some(Some(id))`: a stream's.
pub(crate) fn parse_policy_entry(key: &str) -> Option<Option<u128>> {
    match key.strip_prefix("retention.")? {
        "default" => Some(None),
        id => u128::from_str_radix(id, 16).ok().map(Some),
    }
}

/// A policy as its entry's value: `max_count max_age_ms`, each a number or `-`; empty when
/// it keeps everything (a policy dropped).
pub(crate) fn encode_policy(p: &RetentionPolicy) -> Vec<u8> {
    if p.keeps_all() {
        return Vec::new();
    }
    let count = p.max_count.map_or("-".into(), |c| c.to_string());
    let age = p.max_age.map_or("-".into(), |a| a.as_millis().to_string());
    format!("{count} {age}").into_bytes()
}

pub(crate) fn decode_policy(value: &[u8]) -> Option<RetentionPolicy> {
    if value.is_empty() {
        return Some(RetentionPolicy::default());
    }
    let text = std::str::from_utf8(value).ok()?;
    let (count, age) = text.split_once(' ')?;
    let max_count = match count {
        "-" => None,
        c => Some(c.parse().ok()?),
    };
    let max_age = match age {
        "-" => None,
        a => Some(std::time::Duration::from_millis(a.parse().ok()?)),
    };
    Some(RetentionPolicy { max_count, max_age })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_event_survives_its_headers() {
        let event = StoredEvent {
            seq: 42,
            stream_id: u128::MAX - 1,
            version: 7,
            timestamp_ns: 1_700_000_000_123_456_789,
            type_container: "Bank événements".into(),
            type_name: "Deposited & more=1%".into(),
            type_version: 3,
            event_id: Some(EventId::from_u128(
                0x0190_f00d_0000_7000_8000_0000_0000_0001,
            )),
            correlation_id: None,
            causation_id: Some(EventId::from_u128(9)),
            tags: vec!["account:42".into(), "a&b ü".into()],
            metadata: vec![
                ("tenant".into(), "a&b=c".into()),
                ("".into(), "ünïcode\r\n".into()),
            ],
            encrypted: false,
            bound: false,
            blob: true,
            payload: None,
            blob_ref: Some(vec![1, 2, 254, 255]),
            checksum: None,
            links: None,
            ends_group: false,
        };
        let h = headers(&event, 5, (40, 30), 44);
        for (_, values) in h.iter() {
            for v in values {
                assert!(v.as_str().bytes().all(|b| b.is_ascii_graphic()));
            }
        }
        let back = decode_event(42, Some(&h), b"ignored").unwrap();
        assert_eq!(back.event, event);
        assert_eq!(
            (back.type_id, back.links, back.group_last),
            (5, Some((40, 30)), 44)
        );
        // Links that do not point back are refused.
        for links in ["42.1", "40.41", "x.1", "40"] {
            let mut bad = h.clone();
            bad.insert(LINKS, links);
            assert!(matches!(
                decode_event(42, Some(&bad), b""),
                Err(Error::BadMessage { seq: 42, .. })
            ));
        }
        // A removed event's place.
        assert!(matches!(
            decode_message(7, Some(&removed_headers(7)), b""),
            Ok(Message::Removed)
        ));
        assert!(matches!(
            decode_message(8, Some(&removed_headers(7)), b""),
            Err(Error::BadMessage { seq: 8, .. })
        ));
        assert!(matches!(
            decode_message(42, Some(&h), b""),
            Ok(Message::Event(_))
        ));
        assert!(matches!(
            decode_event(43, Some(&h), b""),
            Err(Error::BadMessage { seq: 43, .. })
        ));
        assert!(matches!(
            decode_event(1, None, b""),
            Err(Error::BadMessage { .. })
        ));
        // A group that claims to end at the last sequence there is: refused, not queued.
        for last in [u64::MAX, 42 + GROUP_EVENTS_MAX] {
            let h = headers(&event, 5, (0, 0), last);
            let err = decode_event(42, Some(&h), b"").unwrap_err();
            assert!(
                matches!(&err, Error::BadMessage { seq: 42, reason } if reason.contains("commit group")),
                "{err}"
            );
        }
        let h = headers(&event, 5, (0, 0), 42 + GROUP_EVENTS_MAX - 1);
        assert!(decode_event(42, Some(&h), b"").is_ok());
        assert_eq!(parse_key_entry(&key_entry(u128::MAX)), Some(u128::MAX));
        let r = StreamRemoval {
            stream_id: 7,
            first_kept: 6,
            tombstoned: true,
            last_removed: (5, 123),
        };
        assert_eq!(parse_bounds_entry(&bounds_entry(7)), Some(7));
        assert_eq!(decode_removal(7, &encode_removal(&r)), Some(r));
        for bad in ["", "6 2 5 1", "0 0 0 0", "6 0 5", "6 0 5 1 1", "x 0 5 1"] {
            assert_eq!(decode_removal(7, bad.as_bytes()), None, "{bad}");
        }
        for p in [
            RetentionPolicy::default(),
            RetentionPolicy {
                max_count: Some(10),
                max_age: None,
            },
            RetentionPolicy {
                max_count: None,
                max_age: Some(std::time::Duration::from_secs(86_400)),
            },
        ] {
            assert_eq!(decode_policy(&encode_policy(&p)), Some(p));
        }
        assert_eq!(parse_policy_entry(&policy_entry(None)), Some(None));
        assert_eq!(parse_policy_entry(&policy_entry(Some(9))), Some(Some(9)));
        assert_eq!(parse_policy_entry("key.09"), None);
    }

    proptest::proptest! {
        /// A message from the server is input: any header values give an event or
        /// `BadMessage`, never a panic.
        #[test]
        fn any_headers_decode_or_fail_cleanly(
            values in proptest::collection::vec("[ -~]{0,40}", 21),
            seq in 0u64..5,
        ) {
            let names = [
                SEQ, STREAM, VERSION, TIMESTAMP, TYPE, TYPE_VERSION, TYPE_CONTAINER, TYPE_ID,
                ENCRYPTED, BOUND, BLOB, BLOB_REF, EVENT_ID, CORRELATION_ID, CAUSATION_ID, METADATA,
                TAGS, GROUP, MSG_ID, LINKS, REMOVED,
            ];
            let mut h = HeaderMap::new();
            for (name, value) in names.clone().into_iter().zip(&values) {
                h.insert(name, value.as_str());
            }
            if let Err(e) = decode_message(seq, Some(&h), b"payload") {
                let bad_message = matches!(e, Error::BadMessage { .. });
                proptest::prop_assert!(bad_message, "{}", e);
            }
            // The same with the numbers right and one field left as generated.
            let good = StoredEvent {
                seq: seq.max(1),
                stream_id: 9,
                version: 1,
                timestamp_ns: 5,
                type_container: String::new(),
                type_name: "T".into(),
                type_version: 1,
                event_id: None,
                correlation_id: None,
                causation_id: None,
                tags: Vec::new(),
                metadata: Vec::new(),
                encrypted: false,
                bound: false,
                blob: false,
                payload: Some(b"p".to_vec()),
                blob_ref: None,
                checksum: None,
                links: None,
                ends_group: true,
            };
            for (i, name) in names.into_iter().enumerate() {
                let mut h = headers(&good, 1, (0, 0), good.seq);
                h.insert(name, values[i].as_str());
                let _ = decode_message(good.seq, Some(&h), b"p");
            }
        }
    }
}
