//! The envelope section of a record: the event id, correlation and causation ids, and
//! metadata pairs, stored before the payload when a record has any (record flag `FLAG_ENVELOPE`).
//!
//! ```text
//! 0   u32   section length E (LE): a multiple of 16, this field and the padding included
//! 4   u8    fields: 0x01 event id, 0x02 correlation id, 0x04 causation id
//! 5   u8    tags T
//! 6   u16   metadata pairs N (LE)
//! 8   u64   reserved, zero
//! 16  u128  event id (LE), if 0x01; then the correlation id, if 0x02; then the causation id
//! ..        T tags: [u8 length][tag], UTF-8, 1 to 255 bytes, distinct
//! ..        N pairs: [u16 key length][u16 value length][key][value], UTF-8
//! ..        zero padding to E
//! ```
//! Because E is a multiple of 16, the payload after it stays 16-aligned (zero-copy reads). A
//! record without the flag has no section: an event without ids, tags or metadata costs
//! nothing. Ids and tags stay in the clear in an encrypted record (they are index keys); the
//! metadata pairs are sealed with the payload.

use crate::error::{Error, Result};

/// The largest envelope section, in bytes: metadata past it is refused.
pub(crate) const ENVELOPE_BYTES_MAX: usize = 64 << 10;

const HAS_EVENT_ID: u8 = 0x01;
const HAS_CORRELATION: u8 = 0x02;
const HAS_CAUSATION: u8 = 0x04;
const FIXED_LEN: usize = 16;
/// The longest tag, in bytes.
pub(crate) const TAG_BYTES_MAX: usize = 255;
/// The most tags one event carries.
pub(crate) const TAGS_MAX: usize = 255;

/// What an envelope section holds, to encode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) event_id: Option<u128>,
    pub(crate) correlation_id: Option<u128>,
    pub(crate) causation_id: Option<u128>,
    /// Distinct, each 1 to [`TAG_BYTES_MAX`] bytes, at most [`TAGS_MAX`] (checked by
    /// [`check_tags`] before encoding).
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Vec<(String, String)>,
}

/// Checks an event's tags: each 1 to [`TAG_BYTES_MAX`] bytes, at most [`TAGS_MAX`] of them.
pub(crate) fn check_tags(tags: &[String]) -> Result<()> {
    let bad = |tag: &str, reason: String| {
        Err(Error::InvalidTag {
            tag: tag.to_owned(),
            reason,
        })
    };
    if tags.len() > TAGS_MAX {
        return bad(
            &tags[TAGS_MAX],
            format!("an event carries at most {TAGS_MAX} tags"),
        );
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > TAG_BYTES_MAX {
            return bad(tag, format!("a tag is 1 to {TAG_BYTES_MAX} bytes long"));
        }
        if tags[..i].contains(tag) {
            return bad(tag, "the event carries this tag twice".into());
        }
    }
    Ok(())
}

impl Fields {
    pub(crate) fn is_empty(&self) -> bool {
        self.event_id.is_none()
            && self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.tags.is_empty()
            && self.metadata.is_empty()
    }

    /// The encoded section (empty when there is nothing to store), or `MetadataTooLarge`.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        check_tags(&self.tags)?;
        let ids = [self.event_id, self.correlation_id, self.causation_id];
        let mut len = FIXED_LEN + 16 * ids.iter().flatten().count();
        for tag in &self.tags {
            len += 1 + tag.len();
        }
        for (k, v) in &self.metadata {
            len = len.saturating_add(4 + k.len() + v.len());
        }
        let padded = len.next_multiple_of(16);
        let too_large = || Error::MetadataTooLarge {
            size: padded,
            max: ENVELOPE_BYTES_MAX,
        };
        if padded > ENVELOPE_BYTES_MAX {
            return Err(too_large());
        }
        let pairs = u16::try_from(self.metadata.len()).map_err(|_| too_large())?;
        let mut out = Vec::with_capacity(padded);
        out.extend_from_slice(&(padded as u32).to_le_bytes());
        let mut fields = 0;
        for (bit, id) in [HAS_EVENT_ID, HAS_CORRELATION, HAS_CAUSATION]
            .into_iter()
            .zip(ids)
        {
            if id.is_some() {
                fields |= bit;
            }
        }
        out.push(fields);
        // At most TAGS_MAX (checked above).
        out.push(self.tags.len() as u8);
        out.extend_from_slice(&pairs.to_le_bytes());
        out.extend_from_slice(&[0u8; 8]);
        for id in ids.into_iter().flatten() {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for tag in &self.tags {
            out.push(tag.len() as u8);
            out.extend_from_slice(tag.as_bytes());
        }
        for (k, v) in &self.metadata {
            // Each fits in u16: the whole section is at most 64 KiB.
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out.resize(padded, 0);
        Ok(out)
    }
}

/// A checked envelope section, borrowing the record: one slice (empty when the record has
/// none), so that the events a reader hands out stay small; fields are read from it on demand.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Section<'t>(&'t [u8]);

impl<'t> Section<'t> {
    /// The section as stored (empty when the record has none): what a bound seal covers.
    pub(crate) fn bytes(&self) -> &'t [u8] {
        self.0
    }

    fn fields(&self) -> u8 {
        self.0.get(4).copied().unwrap_or(0)
    }

    fn tag_count(&self) -> u8 {
        self.0.get(5).copied().unwrap_or(0)
    }

    /// The encoded tags: `[u8 length][tag]` each, checked by [`split`].
    fn encoded_tags(&self) -> &'t [u8] {
        let at = FIXED_LEN + 16 * self.fields().count_ones() as usize;
        let mut end = at;
        for _ in 0..self.tag_count() {
            let Some(&len) = self.0.get(end) else { break };
            end += 1 + usize::from(len);
        }
        self.0.get(at..end).unwrap_or(&[])
    }

    /// The event's tags, in the order they were given.
    pub(crate) fn tags(&self) -> Tags<'t> {
        Tags {
            rest: self.encoded_tags(),
        }
    }

    pub(crate) fn pair_count(&self) -> u16 {
        match self.0 {
            [_, _, _, _, _, _, lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
            _ => 0,
        }
    }

    fn id(&self, bit: u8) -> Option<u128> {
        let fields = self.fields();
        if fields & bit == 0 {
            return None;
        }
        // The ids before this one in field order.
        let at = FIXED_LEN + 16 * (fields & (bit - 1)).count_ones() as usize;
        let bytes = self.0.get(at..at + 16)?;
        let mut b = [0u8; 16];
        b.copy_from_slice(bytes);
        Some(u128::from_le_bytes(b))
    }

    pub(crate) fn event_id(&self) -> Option<u128> {
        self.id(HAS_EVENT_ID)
    }

    pub(crate) fn correlation_id(&self) -> Option<u128> {
        self.id(HAS_CORRELATION)
    }

    pub(crate) fn causation_id(&self) -> Option<u128> {
        self.id(HAS_CAUSATION)
    }

    /// The encoded metadata pairs and their count.
    pub(crate) fn encoded_pairs(&self) -> (&'t [u8], u16) {
        (self.pairs(), self.pair_count())
    }

    /// The encoded metadata pairs.
    fn pairs(&self) -> &'t [u8] {
        let at = FIXED_LEN + 16 * self.fields().count_ones() as usize + self.encoded_tags().len();
        self.0.get(at..).unwrap_or(&[])
    }
}

/// The tags of an event, in the order its append gave them (from [`RawEvent::tags`](crate::RawEvent::tags) or [`EventRef::tags`](crate::EventRef::tags)).
#[derive(Debug, Clone, Default)]
pub struct Tags<'t> {
    rest: &'t [u8],
}

impl<'t> Iterator for Tags<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        let (&len, rest) = self.rest.split_first()?;
        let (tag, rest) = rest.split_at_checked(usize::from(len))?;
        self.rest = rest;
        std::str::from_utf8(tag).ok()
    }
}

/// Whether a record body has an envelope section with tags (its tag count, without checking
/// the section).
#[inline]
pub(crate) fn has_tags(has_section: bool, body: &[u8]) -> bool {
    has_section && body.get(5).is_some_and(|&count| count != 0)
}

/// Splits a record body into its envelope section and the payload that follows. Every
/// malformation is `Corrupt` naming `seq`; the pairs are checked here (lengths and UTF-8), so
/// that reading them later cannot fail.
#[inline]
pub(crate) fn split(seq: u64, has_section: bool, body: &[u8]) -> Result<(Section<'_>, &[u8])> {
    if !has_section {
        return Ok((Section::default(), body));
    }
    split_section(seq, body)
}

/// [`split`] of a body that has a section.
fn split_section(seq: u64, body: &[u8]) -> Result<(Section<'_>, &[u8])> {
    let bad = |reason: &str| Error::corrupt(seq, format!("envelope section: {reason}"));
    if body.len() < FIXED_LEN {
        return Err(bad("shorter than its fixed part"));
    }
    let len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if len < FIXED_LEN || !len.is_multiple_of(16) || len > body.len() {
        return Err(bad(&format!("length {len} in a body of {}", body.len())));
    }
    let fields = body[4];
    if fields & !(HAS_EVENT_ID | HAS_CORRELATION | HAS_CAUSATION) != 0 {
        return Err(bad(&format!("unknown fields {fields:#04x}")));
    }
    let tag_count = body[5];
    let pair_count = u16::from_le_bytes([body[6], body[7]]);
    let (section, payload) = body.split_at(len);
    let id_bytes = 16 * fields.count_ones() as usize;
    let ids = section
        .get(FIXED_LEN..FIXED_LEN + id_bytes)
        .ok_or_else(|| bad("ids past its end"))?;
    let mut rest = &section[FIXED_LEN + id_bytes..];
    let mut tags: Vec<&[u8]> = Vec::with_capacity(usize::from(tag_count));
    for _ in 0..tag_count {
        let (&tag_len, tail) = rest
            .split_first()
            .ok_or_else(|| bad("a tag past its end"))?;
        let (tag, tail) = tail
            .split_at_checked(usize::from(tag_len))
            .ok_or_else(|| bad("a tag past its end"))?;
        if tag.is_empty() || std::str::from_utf8(tag).is_err() || tags.contains(&tag) {
            return Err(bad("an empty, repeated or non-UTF-8 tag"));
        }
        tags.push(tag);
        rest = tail;
    }
    check_pairs(seq, rest, pair_count)?;
    debug_assert_eq!(ids.len(), id_bytes);
    Ok((Section(section), payload))
}

/// Checks `count` encoded pairs (lengths, UTF-8, nothing but zero padding after them), so that
/// reading them later cannot fail.
pub(crate) fn check_pairs(seq: u64, pairs: &[u8], count: u16) -> Result<()> {
    let bad = |reason: &str| Error::corrupt(seq, format!("envelope section: {reason}"));
    let mut rest = pairs;
    for _ in 0..count {
        let (k, v, tail) = next_pair(rest).ok_or_else(|| bad("a metadata pair past its end"))?;
        if std::str::from_utf8(k).is_err() || std::str::from_utf8(v).is_err() {
            return Err(bad("metadata that is not UTF-8"));
        }
        rest = tail;
    }
    if rest.iter().any(|&b| b != 0) {
        return Err(bad("bytes after the last metadata pair"));
    }
    Ok(())
}

/// The next encoded pair: `(key, value, rest)`.
fn next_pair(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let klen = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]) as usize;
    let vlen = u16::from_le_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize;
    let rest = bytes.get(4..)?;
    let (k, rest) = rest.split_at_checked(klen)?;
    let (v, rest) = rest.split_at_checked(vlen)?;
    Some((k, v, rest))
}

/// The metadata pairs of a section that [`split`] checked.
pub(crate) fn pairs(bytes: &[u8], count: u16) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = bytes;
    (0..count).map_while(move |_| {
        let (k, v, tail) = next_pair(rest)?;
        rest = tail;
        Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip() {
        let fields = Fields {
            event_id: Some(7),
            correlation_id: None,
            causation_id: Some(u128::MAX),
            tags: vec!["account:42".into(), "ü".into()],
            metadata: vec![
                ("tenant".into(), "acme".into()),
                ("".into(), "".into()),
                ("straße".into(), "日本".into()),
            ],
        };
        let mut body = fields.encode().unwrap();
        assert_eq!(body.len() % 16, 0);
        body.extend_from_slice(b"payload!");
        let (section, payload) = split(1, true, &body).unwrap();
        assert_eq!(payload, b"payload!");
        assert_eq!(section.event_id(), Some(7));
        assert_eq!(section.correlation_id(), None);
        assert_eq!(section.causation_id(), Some(u128::MAX));
        let (p, n) = section.encoded_pairs();
        let got: Vec<_> = pairs(p, n).collect();
        assert_eq!(got, [("tenant", "acme"), ("", ""), ("straße", "日本")]);
        assert_eq!(section.tags().collect::<Vec<_>>(), ["account:42", "ü"]);
        let tags_only = Fields {
            tags: vec!["t".into()],
            ..Default::default()
        };
        let body = tags_only.encode().unwrap();
        let (section, _) = split(1, true, &body).unwrap();
        assert_eq!(section.tags().collect::<Vec<_>>(), ["t"]);
        assert_eq!(section.encoded_pairs().1, 0);
        assert_eq!(section.event_id(), None);
        assert!(Fields::default().encode().unwrap().is_empty());
    }

    #[test]
    fn damaged_sections_are_corrupt_never_a_panic() {
        let fields = Fields {
            event_id: Some(1),
            tags: vec!["tag".into()],
            metadata: vec![("k".into(), "v".into())],
            ..Default::default()
        };
        let body = fields.encode().unwrap();
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut b = body.clone();
                b[i] ^= 1 << bit;
                // Either it still decodes (a flipped id bit) or it is Corrupt; never a panic.
                if let Err(e) = split(9, true, &b) {
                    assert!(matches!(e, Error::Corrupt { seq: 9, .. }), "{e:?}");
                }
            }
        }
        assert!(split(9, true, &body[..8]).is_err());
    }

    #[test]
    fn too_much_metadata_is_refused() {
        let fields = Fields {
            metadata: vec![("k".into(), "v".repeat(ENVELOPE_BYTES_MAX))],
            ..Default::default()
        };
        assert!(matches!(
            fields.encode(),
            Err(Error::MetadataTooLarge { .. })
        ));
        for tags in [vec![String::new()], vec!["x".repeat(256)], Vec::new()] {
            let fields = Fields {
                tags: tags.clone(),
                event_id: Some(1),
                ..Default::default()
            };
            assert_eq!(fields.encode().is_err(), !tags.is_empty(), "{tags:?}");
        }
        let many: Vec<String> = (0..256).map(|i| i.to_string()).collect();
        assert!(matches!(check_tags(&many), Err(Error::InvalidTag { .. })));
    }
}
