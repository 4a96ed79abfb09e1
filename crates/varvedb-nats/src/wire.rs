//! One event as one JetStream message: the headers carry the record's fields, the payload is
//! the stored bytes (`docs/design.md`, "Replication to NATS JetStream", has the table).

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use varvedb::{EventId, StoredEvent};

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

/// The headers of `event`, whose commit group ends at `group_last`.
pub(crate) fn headers(event: &StoredEvent, type_id: u32, group_last: u64) -> HeaderMap {
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
    h
}

/// An event read back from a message: the stored event, its type id in the source store, and
/// the last sequence of its commit group.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) event: StoredEvent,
    pub(crate) type_id: u32,
    pub(crate) group_last: u64,
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
        // A store with removals is not replicated (yet): every link is rebuilt.
        links: None,
        ends_group: false,
    };
    event.ends_group = group_last == seq;
    Ok(Decoded {
        type_id: num(TYPE_ID, need(TYPE_ID)?, &bad)?,
        event,
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
        let h = headers(&event, 5, 44);
        for (_, values) in h.iter() {
            for v in values {
                assert!(v.as_str().bytes().all(|b| b.is_ascii_graphic()));
            }
        }
        let back = decode_event(42, Some(&h), b"ignored").unwrap();
        assert_eq!(back.event, event);
        assert_eq!((back.type_id, back.group_last), (5, 44));
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
            let h = headers(&event, 5, last);
            let err = decode_event(42, Some(&h), b"").unwrap_err();
            assert!(
                matches!(&err, Error::BadMessage { seq: 42, reason } if reason.contains("commit group")),
                "{err}"
            );
        }
        let h = headers(&event, 5, 42 + GROUP_EVENTS_MAX - 1);
        assert!(decode_event(42, Some(&h), b"").is_ok());
        assert_eq!(parse_key_entry(&key_entry(u128::MAX)), Some(u128::MAX));
    }

    proptest::proptest! {
        /// A message from the server is input: any header values give an event or
        /// `BadMessage`, never a panic.
        #[test]
        fn any_headers_decode_or_fail_cleanly(
            values in proptest::collection::vec("[ -~]{0,40}", 19),
            seq in 0u64..5,
        ) {
            let names = [
                SEQ, STREAM, VERSION, TIMESTAMP, TYPE, TYPE_VERSION, TYPE_CONTAINER, TYPE_ID,
                ENCRYPTED, BOUND, BLOB, BLOB_REF, EVENT_ID, CORRELATION_ID, CAUSATION_ID, METADATA,
                TAGS, GROUP, MSG_ID,
            ];
            let mut h = HeaderMap::new();
            for (name, value) in names.clone().into_iter().zip(&values) {
                h.insert(name, value.as_str());
            }
            if let Err(e) = decode_event(seq, Some(&h), b"payload") {
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
                let mut h = headers(&good, 1, good.seq);
                h.insert(name, values[i].as_str());
                let _ = decode_event(good.seq, Some(&h), b"p");
            }
        }
    }
}
