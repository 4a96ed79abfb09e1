//! Tags and queries: the index behind Dynamic Consistency Boundaries (DCB).
//!
//! An event may carry tags (domain identifiers such as `account:42`, in its envelope section).
//! Each tag of each event has one entry in the `tags` database, written in the append's own
//! transaction:
//!
//! ```text
//! tags   [u8 tag length][tag][u32 BE type id][u64 BE seq]  →  (empty)
//! ```
//!
//! The type id sits between the tag and the sequence, so that "the first event after `s` with
//! tag `t` and type `T`" is one B-tree descent (a seek to `t ‖ T ‖ s+1`), and a query item with
//! several tags is a leapfrog join of such seeks: its cost is a few descents per tag and type,
//! never a scan of the tag's events. An item without tags has no index: it is answered by the
//! log from the position on (`docs/design.md`, "Tags and conditional appends").

use heed::RoTxn;
use heed::WithoutTls;

use super::lmdb::LmdbResultExt;
use super::pack::LogIter;
use super::{Dbs, record, types};
use crate::error::{Error, Result};

/// Which events a [`Query`] matches: an event matches an item when its type is one of the
/// item's types (any type, if the item names none) and it carries every one of the item's
/// tags; it matches the query when it matches any item.
///
/// ```
/// use varvedb::Query;
/// // Deposits to or withdrawals from account 42, or anything that names customer 7.
/// let q = Query::new()
///     .types(["Deposited", "Withdrawn"])
///     .tags(["account:42"])
///     .or()
///     .tags(["customer:7"]);
/// assert_eq!(q.items().len(), 2);
/// assert!(q.matches("Deposited", ["account:42", "branch:1"]));
/// assert!(!q.matches("Opened", ["account:42"]));
/// assert!(q.matches("Opened", ["customer:7"]));
/// ```
///
/// A query with no items ([`Query::all`]) matches every event, as does an item that names
/// neither types nor tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    items: Vec<QueryItem>,
}

/// One item of a [`Query`]: event types (OR) and tags (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryItem {
    types: Vec<String>,
    tags: Vec<String>,
}

impl QueryItem {
    /// An item that matches every event, until narrowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Narrows the item to events of these type names (any container, any schema version);
    /// adds to the types already given.
    pub fn types<S: AsRef<str>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        for t in types {
            let t = t.as_ref();
            if !self.types.iter().any(|have| have == t) {
                self.types.push(t.to_owned());
            }
        }
        self
    }

    /// Narrows the item to events that carry every one of these tags (and those given before).
    pub fn tags<S: AsRef<str>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        for t in tags {
            let t = t.as_ref();
            if !self.tags.iter().any(|have| have == t) {
                self.tags.push(t.to_owned());
            }
        }
        self
    }

    /// The type names (empty: any type).
    pub fn get_types(&self) -> &[String] {
        &self.types
    }

    /// The tags (empty: no tag needed).
    pub fn get_tags(&self) -> &[String] {
        &self.tags
    }

    fn matches(&self, event_type: &str, tags: &[&str]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|t| tags.contains(&t.as_str()))
    }
}

impl Default for Query {
    fn default() -> Self {
        Self::new()
    }
}

impl Query {
    /// A query of one item that matches every event, until narrowed by
    /// [`types`](Self::types) and [`tags`](Self::tags).
    pub fn new() -> Self {
        Query {
            items: vec![QueryItem::new()],
        }
    }

    /// The query that matches every event (no items).
    pub fn all() -> Self {
        Query { items: Vec::new() }
    }

    /// A query of these items (none: every event).
    pub fn from_items(items: impl IntoIterator<Item = QueryItem>) -> Self {
        Query {
            items: items.into_iter().collect(),
        }
    }

    /// Narrows the last item to these event types (see [`QueryItem::types`]).
    pub fn types<S: AsRef<str>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        let item = self.items.pop().unwrap_or_default();
        self.items.push(item.types(types));
        self
    }

    /// Narrows the last item to events carrying all these tags (see [`QueryItem::tags`]).
    pub fn tags<S: AsRef<str>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        let item = self.items.pop().unwrap_or_default();
        self.items.push(item.tags(tags));
        self
    }

    /// Starts another item: the query then matches what either item matches.
    pub fn or(mut self) -> Self {
        self.items.push(QueryItem::new());
        self
    }

    /// Adds an item.
    pub fn item(mut self, item: QueryItem) -> Self {
        self.items.push(item);
        self
    }

    /// The items.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches<'a>(&self, event_type: &str, tags: impl IntoIterator<Item = &'a str>) -> bool {
        let tags: Vec<&str> = tags.into_iter().collect();
        self.items.is_empty() || self.items.iter().any(|i| i.matches(event_type, &tags))
    }

    /// The query with its type names resolved to the store's type ids, in `txn`.
    pub(crate) fn resolve(&self, dbs: &Dbs, txn: &RoTxn<'_, WithoutTls>) -> Result<Resolved> {
        if self.items.is_empty()
            || self
                .items
                .iter()
                .any(|i| i.types.is_empty() && i.tags.is_empty())
        {
            return Ok(Resolved {
                items: Vec::new(),
                all: true,
            });
        }
        let named: Vec<&str> = self
            .items
            .iter()
            .flat_map(|i| i.types.iter().map(String::as_str))
            .collect();
        // Every id of every named type (all containers and versions): the types table is small.
        let mut ids: Vec<(String, u32)> = Vec::new();
        if !named.is_empty() {
            for entry in dbs.types.iter(txn).lmdb()? {
                let (key, value) = entry.lmdb()?;
                let id = <[u8; 4]>::try_from(key)
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::CorruptType {
                        id: 0,
                        reason: "a malformed type id".into(),
                    })?;
                let decoded = types::decode(value).ok_or_else(|| Error::CorruptType {
                    id,
                    reason: "malformed type record".into(),
                })?;
                if named.contains(&decoded.name) {
                    ids.push((decoded.name.to_owned(), id));
                }
            }
        }
        let mut items = Vec::with_capacity(self.items.len());
        for item in &self.items {
            let type_ids = if item.types.is_empty() {
                None
            } else {
                let mut of_item: Vec<u32> = ids
                    .iter()
                    .filter(|(name, _)| item.types.contains(name))
                    .map(|(_, id)| *id)
                    .collect();
                if of_item.is_empty() {
                    // None of its types was ever stored: the item matches nothing.
                    continue;
                }
                of_item.sort_unstable();
                Some(of_item)
            };
            items.push(ResolvedItem {
                type_ids,
                tags: item.tags.iter().map(|t| t.as_bytes().to_vec()).collect(),
            });
        }
        Ok(Resolved { items, all: false })
    }
}

/// A query with its types as ids.
#[derive(Debug)]
pub(crate) struct Resolved {
    items: Vec<ResolvedItem>,
    /// It matches every event.
    all: bool,
}

#[derive(Debug)]
struct ResolvedItem {
    /// `None`: any type.
    type_ids: Option<Vec<u32>>,
    /// Every one of them (AND); empty: answered by the log, not the index.
    tags: Vec<Vec<u8>>,
}

impl ResolvedItem {
    fn matches(&self, type_id: u32, tags: &[&str]) -> bool {
        self.type_ids
            .as_ref()
            .is_none_or(|ids| ids.binary_search(&type_id).is_ok())
            && self
                .tags
                .iter()
                .all(|t| tags.iter().any(|have| have.as_bytes() == t.as_slice()))
    }
}

impl Resolved {
    /// Whether answering it reads the log (an item without tags).
    pub(crate) fn reads_log(&self) -> bool {
        !self.indexed()
    }

    /// Whether the index answers it alone: every item has a tag.
    fn indexed(&self) -> bool {
        !self.all && self.items.iter().all(|i| !i.tags.is_empty())
    }

    fn matches(&self, type_id: u32, tags: &[&str]) -> bool {
        self.all || self.items.iter().any(|i| i.matches(type_id, tags))
    }

    /// The first event at or after `from` that matches, in `txn`: for a conditional append.
    /// An indexed query costs a few descents per item, tag and type; an item without tags reads
    /// the log from `from` on.
    pub(crate) fn first_match(
        &self,
        dbs: &Dbs,
        txn: &RoTxn<'_, WithoutTls>,
        from: u64,
    ) -> Result<Option<u64>> {
        if self.all {
            return Ok(LogIter::open(Ok(()), dbs, txn, from, false)
                .next()
                .transpose()?
                .map(|e| e.seq));
        }
        if self.indexed() {
            let mut best: Option<u64> = None;
            for item in &self.items {
                for source in Source::of_item(dbs, txn, item, from)? {
                    if let Some(seq) = source.next {
                        best = Some(best.map_or(seq, |b| b.min(seq)));
                    }
                }
            }
            return Ok(best);
        }
        for entry in LogIter::open(Ok(()), dbs, txn, from, false) {
            let entry = entry?;
            if self.record_matches(entry.seq, entry.record)? {
                return Ok(Some(entry.seq));
            }
        }
        Ok(None)
    }

    fn record_matches(&self, seq: u64, record: &[u8]) -> Result<bool> {
        let (header, section, _) = record::open(seq, record)?;
        let tags: Vec<&str> = section.tags().collect();
        Ok(self.matches(header.type_id, &tags))
    }
}

/// The longest index key: a tag of 255 bytes, its length, the type id and the sequence.
const KEY_MAX: usize = 1 + 255 + 4 + 8;

/// An index key, on the stack: the committer writes one per tag of every event.
pub(crate) struct IndexKey {
    bytes: [u8; KEY_MAX],
    len: usize,
}

impl std::ops::Deref for IndexKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The index key of `tag` on the event at `seq` of type `type_id`. A stored tag is at most
/// 255 bytes; a longer one (only ever from a query) is cut, and then matches no stored key,
/// as no event carries it.
pub(crate) fn index_key(tag: &[u8], type_id: u32, seq: u64) -> IndexKey {
    let tag = &tag[..tag.len().min(255)];
    let mut bytes = [0u8; KEY_MAX];
    bytes[0] = tag.len() as u8;
    bytes[1..1 + tag.len()].copy_from_slice(tag);
    let at = 1 + tag.len();
    bytes[at..at + 4].copy_from_slice(&type_id.to_be_bytes());
    bytes[at + 4..at + 12].copy_from_slice(&seq.to_be_bytes());
    IndexKey {
        bytes,
        len: at + 12,
    }
}

/// Decodes an index key: `(tag, type id, seq)`.
pub(crate) fn decode_key(key: &[u8]) -> Option<(&[u8], u32, u64)> {
    let (&len, rest) = key.split_first()?;
    let (tag, rest) = rest.split_at_checked(usize::from(len))?;
    let (type_id, seq) = rest.split_at_checked(4)?;
    Some((
        tag,
        u32::from_be_bytes(type_id.try_into().ok()?),
        u64::from_be_bytes(seq.try_into().ok()?),
    ))
}

/// Writes the index entries of one event's tags (the committer's and the importer's).
pub(crate) fn put<'a>(
    dbs: &Dbs,
    wtxn: &mut heed::RwTxn<'_>,
    tags: impl IntoIterator<Item = &'a str>,
    type_id: u32,
    seq: u64,
) -> Result<()> {
    for tag in tags {
        dbs.tags
            .put(wtxn, &index_key(tag.as_bytes(), type_id, seq), &[])
            .lmdb()?;
    }
    Ok(())
}

fn bad_key(key: &[u8]) -> Error {
    Error::CorruptIndex {
        stream_id: 0,
        version: 0,
        reason: format!("a malformed entry in the tag index ({} bytes)", key.len()),
    }
}

/// The first indexed event at or after `from` with `tag` and `type_id`.
fn seek(
    dbs: &Dbs,
    txn: &RoTxn<'_, WithoutTls>,
    tag: &[u8],
    type_id: u32,
    from: u64,
) -> Result<Option<u64>> {
    let key = index_key(tag, type_id, from);
    match dbs.tags.get_greater_than_or_equal_to(txn, &key).lmdb()? {
        None => Ok(None),
        Some((found, _)) => {
            let (t, ty, seq) = decode_key(found).ok_or_else(|| bad_key(found))?;
            Ok((t == tag && ty == type_id).then_some(seq))
        }
    }
}

/// The first indexed type id at or after `type_id` under `tag`.
fn next_type(
    dbs: &Dbs,
    txn: &RoTxn<'_, WithoutTls>,
    tag: &[u8],
    type_id: u32,
) -> Result<Option<u32>> {
    let key = index_key(tag, type_id, 0);
    match dbs.tags.get_greater_than_or_equal_to(txn, &key).lmdb()? {
        None => Ok(None),
        Some((found, _)) => {
            let (t, ty, _) = decode_key(found).ok_or_else(|| bad_key(found))?;
            Ok((t == tag).then_some(ty))
        }
    }
}

/// The events of one item and one type, in order: a leapfrog join of the item's tags.
struct Source<'q> {
    tags: &'q [Vec<u8>],
    type_id: u32,
    /// The next match, or `None` when there are no more.
    next: Option<u64>,
}

impl<'q> Source<'q> {
    /// One source per type of `item` (its types, or every type its first tag is indexed
    /// with), positioned at the first match at or after `from`.
    fn of_item(
        dbs: &Dbs,
        txn: &RoTxn<'_, WithoutTls>,
        item: &'q ResolvedItem,
        from: u64,
    ) -> Result<Vec<Source<'q>>> {
        let Some(first) = item.tags.first() else {
            return Ok(Vec::new());
        };
        let type_ids = match &item.type_ids {
            Some(ids) => ids.clone(),
            None => {
                let mut ids = Vec::new();
                let mut at = 0u32;
                while let Some(ty) = next_type(dbs, txn, first, at)? {
                    ids.push(ty);
                    match ty.checked_add(1) {
                        Some(n) => at = n,
                        None => break,
                    }
                }
                ids
            }
        };
        let mut sources = Vec::with_capacity(type_ids.len());
        for type_id in type_ids {
            let mut source = Source {
                tags: &item.tags,
                type_id,
                next: None,
            };
            source.next = source.first_from(dbs, txn, from)?;
            sources.push(source);
        }
        Ok(sources)
    }

    /// The first event at or after `from` with every tag: seek each tag in turn to the
    /// largest position seen, until all of them agree.
    fn first_from(&self, dbs: &Dbs, txn: &RoTxn<'_, WithoutTls>, from: u64) -> Result<Option<u64>> {
        let n = self.tags.len();
        let mut at = from;
        let mut agreed = 0;
        let mut i = 0;
        while agreed < n {
            match seek(dbs, txn, &self.tags[i], self.type_id, at)? {
                None => return Ok(None),
                Some(seq) if seq == at => agreed += 1,
                Some(seq) => {
                    at = seq;
                    agreed = 1;
                }
            }
            i = (i + 1) % n;
        }
        Ok(Some(at))
    }
}

/// The matches of a query from a position on, in global order, as `(seq, record)`.
pub(crate) struct QueryIter<'t> {
    dbs: Dbs,
    txn: &'t RoTxn<'static, WithoutTls>,
    inner: Inner<'t>,
}

enum Inner<'t> {
    /// Every item has a tag: merged index sources (the resolved query is owned here, so the
    /// sources index into it).
    Indexed {
        resolved: Box<Resolved>,
        /// `(item, type id, next)`.
        sources: Vec<(usize, u32, Option<u64>)>,
        failed: Option<Error>,
    },
    /// The log, filtered.
    Scan {
        resolved: Resolved,
        log: LogIter<'t>,
    },
    Failed(Option<Error>),
}

impl<'t> QueryIter<'t> {
    pub(crate) fn open(
        check: Result<()>,
        dbs: &Dbs,
        txn: &'t RoTxn<'static, WithoutTls>,
        query: &Query,
        from: u64,
    ) -> Self {
        let inner = match check.and_then(|()| query.resolve(dbs, txn)) {
            Err(e) => Inner::Failed(Some(e)),
            Ok(resolved) if resolved.indexed() => {
                let mut sources = Vec::new();
                let mut failed = None;
                for (i, item) in resolved.items.iter().enumerate() {
                    match Source::of_item(dbs, txn, item, from) {
                        Ok(found) => {
                            sources.extend(found.into_iter().map(|s| (i, s.type_id, s.next)));
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                Inner::Indexed {
                    resolved: Box::new(resolved),
                    sources,
                    failed,
                }
            }
            Ok(resolved) => Inner::Scan {
                resolved,
                log: LogIter::open(Ok(()), dbs, txn, from, false),
            },
        };
        QueryIter {
            dbs: *dbs,
            txn,
            inner,
        }
    }
}

impl<'t> Iterator for QueryIter<'t> {
    type Item = Result<(u64, &'t [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let (dbs, txn) = (&self.dbs, self.txn);
        match &mut self.inner {
            Inner::Failed(e) => e.take().map(Err),
            Inner::Scan { resolved, log } => loop {
                let entry = match log.next()? {
                    Ok(entry) => entry,
                    Err(e) => return Some(Err(e)),
                };
                match resolved.record_matches(entry.seq, entry.record) {
                    Ok(false) => continue,
                    // A damaged record is the reader's to report.
                    Ok(true) | Err(_) => return Some(Ok((entry.seq, entry.record))),
                }
            },
            Inner::Indexed {
                resolved,
                sources,
                failed,
            } => {
                if let Some(e) = failed.take() {
                    sources.clear();
                    return Some(Err(e));
                }
                let seq = sources.iter().filter_map(|s| s.2).min()?;
                // Every source at this event moves past it.
                for (item, type_id, next) in sources.iter_mut() {
                    if *next != Some(seq) {
                        continue;
                    }
                    let source = Source {
                        tags: &resolved.items[*item].tags,
                        type_id: *type_id,
                        next: None,
                    };
                    match seq
                        .checked_add(1)
                        .map(|from| source.first_from(dbs, txn, from))
                    {
                        None => *next = None,
                        Some(Ok(found)) => *next = found,
                        Some(Err(e)) => *failed = Some(e),
                    }
                }
                match super::get_record(dbs, txn, seq) {
                    Ok(Some(record)) => Some(Ok((seq, record))),
                    Ok(None) => Some(Err(Error::CorruptIndex {
                        stream_id: 0,
                        version: 0,
                        reason: format!(
                            "the tag index names sequence {seq}, which is not in the log"
                        ),
                    })),
                    Err(e) => Some(Err(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_order_by_tag_type_seq() {
        let a = index_key(b"account:42", 3, 9);
        assert_eq!(decode_key(&a), Some((&b"account:42"[..], 3, 9)));
        assert!(*index_key(b"t", 1, u64::MAX) < *index_key(b"t", 2, 0));
        assert!(*index_key(b"t", 2, 1) < *index_key(b"t", 2, 2));
        let long = index_key(&[b'x'; 300], 1, 1);
        assert_eq!(long.len(), KEY_MAX);
        assert_eq!(decode_key(&long), Some((&[b'x'; 255][..], 1, 1)));
        assert_eq!(decode_key(&[5, b'a']), None);
    }

    #[test]
    fn items_or_and_within() {
        let q = Query::new().types(["A", "B"]).tags(["x", "y"]);
        assert!(q.matches("A", ["y", "x", "z"]));
        assert!(!q.matches("A", ["x"]));
        assert!(!q.matches("C", ["x", "y"]));
        assert!(Query::all().matches("Z", []));
        assert!(Query::new().matches("Z", []));
        let q = Query::from_items([QueryItem::new().tags(["x"]), QueryItem::new().types(["C"])]);
        assert!(q.matches("C", []));
        assert!(q.matches("D", ["x"]));
        assert!(!q.matches("D", ["y"]));
    }
}
