//! [`Storage::verify`](super::Storage::verify): a full consistency check of a store, in one
//! snapshot.
//!
//! Four passes, one per database: the events log in sequence order (records, keys, the stream
//! chain, blob references), the stream heads against what the log says, the blobs (each one's
//! BLAKE3 hash, once per distinct blob), and the reference counts against the references the log
//! holds. Memory grows with the number of streams and distinct blobs, not with events.

use std::collections::HashMap;
use std::fmt;

use heed::types::Bytes;
use heed::{Database, RoTxn};

use super::blob::{self, BlobRef, HASH_LEN};
use super::pack::Pack;
use super::record::FLAG_BLOB;
use super::record::{self, Peek};
use super::{Dbs, chain, db_names, get_record, keys};
use crate::error::Result;
use crate::storage::lmdb::LmdbResultExt;

/// The most problems a report lists; past it they are only counted.
pub const VERIFY_PROBLEMS_MAX: usize = 10_000;
/// How many entries pass between two progress calls.
const PROGRESS_EVERY: u64 = 1 << 14;

/// The `database` of a [`Problem`] with LMDB's own structure (the data file, page counts).
pub(crate) const LMDB: &str = "lmdb";

/// One thing wrong with a store, as precisely as `verify` can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The LMDB database: `events`, `stream_heads`, `blobs` or `blob_refs`; or `lmdb` for
    /// LMDB's own structure (the key then names the file or the database).
    pub database: &'static str,
    /// The entry's key, readable: `seq 42`, `stream 0x…`, or a blob's hash in hex.
    pub key: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.database, self.key, self.what)
    }
}

/// The result of [`Storage::verify`](super::Storage::verify).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records in the events log.
    pub events: u64,
    /// Streams found in the log.
    pub streams: u64,
    /// Entries in the blob store.
    pub blobs: u64,
    /// Events whose payload is a blob.
    pub blob_references: u64,
    /// Events appended with an event id.
    pub event_ids: u64,
    /// Tags on events (each an entry of the tag index).
    pub tags: u64,
    /// Bytes of records and blobs read and checked.
    pub bytes_checked: u64,
    /// What is wrong, in the order found (at most [`VERIFY_PROBLEMS_MAX`]).
    pub problems: Vec<Problem>,
    /// Problems found beyond [`VERIFY_PROBLEMS_MAX`], counted only.
    pub problems_omitted: u64,
}

impl VerifyReport {
    /// The most problems a report lists (it counts them all).
    pub const PROBLEMS_MAX: usize = VERIFY_PROBLEMS_MAX;

    /// Whether the store is consistent: no problem found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }

    /// Every problem found, listed or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.problems_omitted
    }

    fn report(&mut self, database: &'static str, key: String, what: String) {
        if self.problems.len() < VERIFY_PROBLEMS_MAX {
            self.problems.push(Problem {
                database,
                key,
                what,
            });
        } else {
            self.problems_omitted += 1;
        }
    }
}

/// Which pass [`VerifyProgress`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyPhase {
    /// Records, keys, the stream chain and blob references.
    Events,
    /// Stream heads against the log.
    StreamHeads,
    /// Every blob's hash.
    Blobs,
    /// Reference counts.
    BlobRefs,
    /// The event-id index against the log.
    EventIds,
    /// The tag index against the log.
    Tags,
}

impl VerifyPhase {
    /// The name of the database the pass reads.
    pub fn database(&self) -> &'static str {
        match self {
            VerifyPhase::Events => db_names::EVENTS,
            VerifyPhase::StreamHeads => db_names::STREAM_HEADS,
            VerifyPhase::Blobs => db_names::BLOBS,
            VerifyPhase::BlobRefs => db_names::BLOB_REFS,
            VerifyPhase::EventIds => db_names::EVENT_IDS,
            VerifyPhase::Tags => db_names::TAGS,
        }
    }
}

/// How far [`Storage::verify_with_progress`](super::Storage::verify_with_progress) has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// The pass running.
    pub phase: VerifyPhase,
    /// Entries of this pass checked so far (in the events pass: packs).
    pub done: u64,
    /// Entries this pass will check.
    pub total: u64,
    /// Problems found so far, over all passes.
    pub problems: u64,
}

/// What the log says of one blob.
struct Referenced {
    references: u64,
    len: u64,
    digest: u64,
    first_seq: u64,
    stored: bool,
    counted: bool,
}

fn seq_key_name(seq: u64) -> String {
    format!("seq {seq}")
}

fn stream_name(stream_id: u128) -> String {
    format!("stream {stream_id:#x}")
}

struct Run<'a> {
    dbs: &'a Dbs,
    txn: &'a RoTxn<'a>,
    inline_max: usize,
    report: VerifyReport,
    progress: &'a mut dyn FnMut(&VerifyProgress),
    /// Stream → (last version, its seq), as the log has it.
    streams: HashMap<u128, (u32, u64)>,
    blobs: HashMap<[u8; HASH_LEN], Referenced>,
    /// Event type ids found in `types`.
    types: std::collections::HashSet<u32>,
    /// Streams known shredded (true) or not.
    shredded: HashMap<u128, bool>,
    /// Each stream's first kept version (see `removal`), read once.
    first_kept: HashMap<u128, u32>,
}

/// What `verify` knows of the environment around the snapshot.
pub(crate) struct Layout {
    /// The longest record kept in its leaf page.
    pub(crate) inline_max: usize,
    pub(crate) page_size: usize,
    /// The last page the newest commit uses.
    pub(crate) last_page: u64,
    /// The data file's length.
    pub(crate) file_bytes: u64,
    /// When the file ends before the last page: what the page check found (`Ok`: every page in
    /// use is inside the file, and only freed pages lie past its end).
    pub(crate) short_file: Option<std::result::Result<(), String>>,
}

pub(crate) fn run(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    layout: Layout,
    progress: &mut dyn FnMut(&VerifyProgress),
) -> Result<VerifyReport> {
    let mut run = Run {
        dbs,
        txn,
        inline_max: layout.inline_max,
        report: VerifyReport::default(),
        progress,
        streams: HashMap::new(),
        blobs: HashMap::new(),
        types: std::collections::HashSet::new(),
        shredded: HashMap::new(),
        first_kept: HashMap::new(),
    };
    if !run.structure(&layout)? {
        // Reading a page past the end of the file would raise SIGBUS: stop here.
        return Ok(run.report);
    }
    let passes = [
        db_names::EVENTS,
        db_names::STREAM_HEADS,
        db_names::BLOBS,
        db_names::BLOB_REFS,
        db_names::EVENT_IDS,
        db_names::TAGS,
    ];
    for database in passes {
        let passed = match database {
            db_names::EVENTS => run.events(),
            db_names::STREAM_HEADS => run.heads(),
            db_names::BLOBS => run.blob_store(),
            db_names::BLOB_REFS => run.reference_counts(),
            db_names::EVENT_IDS => run.event_id_index(),
            _ => run.tag_index(),
        };
        match passed {
            Ok(()) => {}
            // LMDB's own pages are damaged: a problem found, not a failure to check. LMDB
            // refuses every later read of this snapshot, so the check stops here.
            // (`MDB_BAD_TXN` after a problem: LMDB's damage, reported, spoiled the snapshot.)
            Err(crate::Error::Lmdb(e))
                if e.is_damage() || (e.is_bad_txn() && !run.report.is_clean()) =>
            {
                run.report.report(
                    LMDB,
                    database.into(),
                    if e.is_damage() {
                        format!(
                            "{e}; the check stopped here, as LMDB refuses the rest of this read"
                        )
                    } else {
                        "LMDB refuses the rest of this read after the damage above; the check \
                         stopped here"
                            .into()
                    },
                );
                return Ok(run.report);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(run.report)
}

impl<'a> Run<'a> {
    /// What can be checked of LMDB's own structure without walking its pages: that the data
    /// file holds every page the last commit uses (a truncated file would raise SIGBUS on the
    /// first read past its end), and that the databases do not claim more pages than there are.
    /// LMDB's B-tree pages themselves are trusted; see docs/design.md, "What is checked".
    /// Returns whether the pages can be read (the file is not truncated).
    fn structure(&mut self, layout: &Layout) -> Result<bool> {
        let used_bytes = (layout.last_page + 1).saturating_mul(layout.page_size as u64);
        let whole = layout.file_bytes >= used_bytes || matches!(layout.short_file, Some(Ok(())));
        if !whole {
            let found = match &layout.short_file {
                Some(Err(e)) => format!(", and a page in use is missing ({e})"),
                _ => String::new(),
            };
            self.report.report(
                LMDB,
                "data.mdb".into(),
                format!(
                    "the data file is {} bytes, but the last commit uses {} pages ({used_bytes} bytes){found}: the file is truncated",
                    layout.file_bytes,
                    layout.last_page + 1
                ),
            );
        }
        let d = self.dbs;
        let stats = [
            (db_names::EVENTS, d.events.stat(self.txn)),
            (db_names::STREAM_HEADS, d.heads.stat(self.txn)),
            (db_names::BLOBS, d.blobs.stat(self.txn)),
            (db_names::BLOB_REFS, d.blob_refs.stat(self.txn)),
            (db_names::CONSUMER_CURSORS, d.cursors.stat(self.txn)),
            (db_names::KEYSTORE, d.keystore.stat(self.txn)),
            (db_names::META, d.meta.stat(self.txn)),
        ];
        // Two meta pages, then the pages of every database (the main and free-list databases
        // are not counted, so this is a lower bound).
        let mut pages: u64 = 2;
        for (name, stat) in stats {
            let stat = stat.lmdb()?;
            let own = [stat.branch_pages, stat.leaf_pages, stat.overflow_pages]
                .iter()
                .try_fold(0u64, |sum, &n| sum.checked_add(n as u64));
            match own {
                Some(own) => pages = pages.saturating_add(own),
                None => self
                    .report
                    .report(LMDB, name.into(), "its page counts overflow".into()),
            }
            if stat.depth == 0 && stat.entries > 0 {
                self.report.report(
                    LMDB,
                    name.into(),
                    format!("{} entries in a tree of depth 0", stat.entries),
                );
            }
        }
        if pages > layout.last_page + 1 {
            self.report.report(
                LMDB,
                "data.mdb".into(),
                format!(
                    "the databases claim {pages} pages, but the last commit uses only {}",
                    layout.last_page + 1
                ),
            );
        }
        Ok(whole)
    }

    /// Walks `db` in key order, with progress, handing each entry to `check`.
    fn pass<C: heed::Comparator + 'static>(
        &mut self,
        phase: VerifyPhase,
        db: &Database<'static, Bytes, Bytes, C>,
        mut check: impl FnMut(&mut Self, &'a [u8], &'a [u8]) -> Result<()>,
    ) -> Result<()> {
        let txn = self.txn;
        let total = db.len(txn).lmdb()?;
        self.tick(phase, 0, total);
        let mut done = 0;
        for entry in db.iter(txn).lmdb()? {
            let (key, value) = entry.lmdb()?;
            done += 1;
            self.tick(phase, done, total);
            check(self, key, value)?;
        }
        if done != total {
            self.report.report(
                LMDB,
                phase.database().into(),
                format!("LMDB counts {total} entries, but a walk of the tree found {done}"),
            );
        }
        Ok(())
    }

    /// `(first seq, hash, references)` of the blobs the log references that a pass did not find
    /// (`found` false), in log order.
    fn referenced_but_not(
        &self,
        found: fn(&Referenced) -> bool,
    ) -> Vec<(u64, [u8; HASH_LEN], u64)> {
        let mut unseen: Vec<_> = self
            .blobs
            .iter()
            .filter(|(_, seen)| !found(seen))
            .map(|(hash, seen)| (seen.first_seq, *hash, seen.references))
            .collect();
        unseen.sort_unstable();
        unseen
    }

    fn malformed_key(&mut self, database: &'static str, key: &[u8]) {
        self.report
            .report(database, format!("{key:02x?}"), "malformed key".into());
    }

    fn tick(&mut self, phase: VerifyPhase, done: u64, total: u64) {
        if done.is_multiple_of(PROGRESS_EVERY) || done == total {
            (self.progress)(&VerifyProgress {
                phase,
                done,
                total,
                problems: self.report.problem_count(),
            });
        }
    }

    fn events(&mut self) -> Result<()> {
        let dbs = self.dbs;
        let mut next_seq = 1u64;
        // Sequences of packs too damaged to count (reported as such): up to their key.
        let mut unreadable = 0u64;
        // With no removal ever, the log is gap-free and a gap is named where it is; after
        // removals, the sequences missing are checked against the count removed.
        let removed = super::removal::meta_u64(dbs, self.txn, super::removal::META_REMOVED)?;
        self.pass(VerifyPhase::Events, &dbs.events, |run, key, value| {
            run.report.bytes_checked += value.len() as u64;
            let Some(last) = keys::decode_seq_key(key) else {
                run.malformed_key(db_names::EVENTS, key);
                return Ok(());
            };
            let pack = match Pack::parse(last, value) {
                Ok(pack) => pack,
                Err(e) => {
                    run.report
                        .report(db_names::EVENTS, seq_key_name(last), reason(e));
                    unreadable += last.saturating_add(1).saturating_sub(next_seq);
                    next_seq = last.saturating_add(1);
                    return Ok(());
                }
            };
            let first = pack.first();
            if first < next_seq {
                run.report.report(
                    db_names::EVENTS,
                    seq_key_name(first),
                    format!("out of order: expected sequence {next_seq} or later"),
                );
            } else if first > next_seq && removed == 0 {
                run.report.report(
                    db_names::EVENTS,
                    seq_key_name(first),
                    format!(
                        "the log skips sequences {next_seq}..={}: nothing was ever removed, so \
                         it must be gap-free",
                        first - 1
                    ),
                );
            }
            next_seq = last.saturating_add(1);
            let long_key = key.len() == keys::SEQ_KEY_LONG_LEN;
            if long_key != (value.len() > run.inline_max) {
                run.report.report(
                    db_names::EVENTS,
                    seq_key_name(last),
                    format!(
                        "a {}-byte pack under a {}-byte key: its records are not 16-byte \
                         aligned in the map",
                        value.len(),
                        key.len()
                    ),
                );
            }
            let mut damaged_records = false;
            for seq in first..=last {
                run.report.events += 1;
                let decoded = pack.record(seq).and_then(|r| record::open(seq, r));
                let (header, section, body) = match decoded {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        damaged_records = true;
                        run.report
                            .report(db_names::EVENTS, seq_key_name(seq), reason(e));
                        continue;
                    }
                };
                run.chain(seq, header.stream_id, header.version, header.links)?;
                run.event_type(seq, header.type_id)?;
                if let Some(id) = section.event_id() {
                    run.event_id(seq, id)?;
                }
                for tag in section.tags() {
                    run.tag(seq, tag, header.type_id)?;
                }
                // A shredded stream's blobs were released with its key: its records keep their
                // references, to nothing.
                if header.flags & FLAG_BLOB != 0
                    && !(header.flags & super::record::FLAG_ENCRYPTED != 0
                        && run.shredded(header.stream_id)?)
                {
                    run.reference(seq, body);
                }
            }
            // Damage the records' own checks found is reported there; the pack's checksum
            // also covers its header, its offset table and the padding between records.
            if !damaged_records && let Err(what) = pack.check_checksum() {
                run.report
                    .report(db_names::EVENTS, seq_key_name(last), what);
            }
            Ok(())
        })?;
        // Every sequence up to the log's end was given once: kept, or counted as removed
        // (sequences skipped are the removed events: truncations, deletions, retention).
        let end = super::last_seq(dbs, self.txn)?;
        let counted = self.report.events.saturating_add(removed);
        if removed > 0 && (counted.saturating_add(unreadable) < end || counted > end) {
            self.report.report(
                db_names::EVENTS,
                "log".into(),
                format!(
                    "the log ends at sequence {end} and holds {} events, and {removed} were \
                     removed: {} sequences are unaccounted for",
                    self.report.events,
                    i128::from(end) - i128::from(self.report.events) - i128::from(removed)
                ),
            );
        }
        Ok(())
    }

    /// Checks a record's place in its stream: the next version, linked to the previous one and
    /// to its jump target.
    fn chain(
        &mut self,
        seq: u64,
        stream_id: u128,
        version: u32,
        links: record::Links,
    ) -> Result<()> {
        let seen = self.streams.insert(stream_id, (version, seq));
        // A stream's first record in the log is its first kept version: the ones before were
        // removed, and its prev link to the last of them names nothing.
        let first_kept = match self.first_kept.get(&stream_id) {
            Some(&first) => first,
            None => {
                let first = super::removal::bounds(self.dbs, self.txn, stream_id)?.first_kept;
                self.first_kept.insert(stream_id, first);
                first
            }
        };
        let (last_version, last_seq, links_prev) = match seen {
            Some((v, s)) => (v, s, links.prev),
            None if first_kept > 1 => (first_kept - 1, 0, 0),
            None => (0, 0, links.prev),
        };
        if version != last_version.wrapping_add(1) || links_prev != last_seq {
            self.report.report(
                db_names::EVENTS,
                seq_key_name(seq),
                format!(
                    "{} version {version} with its prev link at seq {}, but the stream's \
                     previous event in the log is version {last_version} at seq {last_seq}",
                    stream_name(stream_id),
                    links.prev
                ),
            );
        }
        let jump_version = chain::jump_version(version);
        let removed_target = jump_version > 0 && jump_version < first_kept;
        let what = if removed_target {
            // A link to a removed version: no walk follows it.
            None
        } else if jump_version == 0 {
            (links.jump != 0).then(|| format!("version 1 with a jump link to seq {}", links.jump))
        } else if links.jump >= seq {
            Some(format!(
                "jump link to seq {}, not an earlier event",
                links.jump
            ))
        } else {
            match get_record(self.dbs, self.txn, links.jump)?.and_then(record::peek) {
                Some(Peek {
                    stream_id: s,
                    version: v,
                    ..
                }) if s == stream_id && v == jump_version => None,
                Some(p) => Some(format!(
                    "jump link to seq {}, which is {} version {}, expected version \
                     {jump_version} of {}",
                    links.jump,
                    stream_name(p.stream_id),
                    p.version,
                    stream_name(stream_id)
                )),
                None => Some(format!(
                    "jump link to seq {}, which is not a record",
                    links.jump
                )),
            }
        };
        if let Some(what) = what {
            self.report
                .report(db_names::EVENTS, seq_key_name(seq), what);
        }
        Ok(())
    }

    /// Whether a stream was shredded (its keystore entry is the mark), remembered per stream.
    fn shredded(&mut self, stream_id: u128) -> Result<bool> {
        if let Some(&known) = self.shredded.get(&stream_id) {
            return Ok(known);
        }
        let is = self
            .dbs
            .keystore
            .get(self.txn, &stream_id.to_be_bytes())
            .lmdb()?
            .is_some_and(super::crypto::is_tombstone);
        self.shredded.insert(stream_id, is);
        Ok(is)
    }

    /// A record with an event id must be where the index says that id is.
    fn event_id(&mut self, seq: u64, id: u128) -> Result<()> {
        self.report.event_ids += 1;
        let what = match super::event_id_seq(self.dbs, self.txn, id) {
            Ok(Some(at)) if at == seq => return Ok(()),
            Ok(Some(at)) => format!(
                "its event id {} is indexed at sequence {at}",
                crate::EventId::from_u128(id)
            ),
            Ok(None) => format!(
                "its event id {} is missing from the event-id index",
                crate::EventId::from_u128(id)
            ),
            Err(e) => e.to_string(),
        };
        self.report
            .report(db_names::EVENTS, seq_key_name(seq), what);
        Ok(())
    }

    /// Each entry of the event-id index must point at a record with that id.
    fn event_id_index(&mut self) -> Result<()> {
        let dbs = self.dbs;
        self.pass(VerifyPhase::EventIds, &dbs.event_ids, |run, key, value| {
            let (Ok(id), Ok(seq)) = (<[u8; 16]>::try_from(key), <[u8; 8]>::try_from(value)) else {
                run.malformed_key(db_names::EVENT_IDS, key);
                return Ok(());
            };
            let (id, seq) = (u128::from_be_bytes(id), u64::from_le_bytes(seq));
            let name = crate::EventId::from_u128(id).to_string();
            let stored = match super::get_record(run.dbs, run.txn, seq)? {
                None => None,
                Some(value) => record::open(seq, value)
                    .ok()
                    .map(|(_, section, _)| section.event_id()),
            };
            match stored {
                Some(Some(found)) if found == id => {}
                None => run.report.report(
                    db_names::EVENT_IDS,
                    name,
                    format!("points at sequence {seq}, which does not exist or is damaged"),
                ),
                Some(_) => run.report.report(
                    db_names::EVENT_IDS,
                    name,
                    format!("points at sequence {seq}, which has another id"),
                ),
            }
            Ok(())
        })
    }

    /// Each tag of a record must be in the tag index.
    fn tag(&mut self, seq: u64, tag: &str, type_id: u32) -> Result<()> {
        self.report.tags += 1;
        let key = super::tags::index_key(tag.as_bytes(), type_id, seq);
        if self.dbs.tags.get(self.txn, &key).lmdb()?.is_none() {
            self.report.report(
                db_names::EVENTS,
                seq_key_name(seq),
                format!("its tag {tag:?} is missing from the tag index"),
            );
        }
        Ok(())
    }

    /// Each entry of the tag index must point at a record of its type with its tag.
    fn tag_index(&mut self) -> Result<()> {
        let dbs = self.dbs;
        self.pass(VerifyPhase::Tags, &dbs.tags, |run, key, _| {
            let Some((tag, type_id, seq)) = super::tags::decode_key(key) else {
                run.malformed_key(db_names::TAGS, key);
                return Ok(());
            };
            let name = format!("{} @ {seq}", String::from_utf8_lossy(tag));
            let found = match super::get_record(run.dbs, run.txn, seq)? {
                None => None,
                Some(value) => record::open(seq, value).ok().map(|(header, section, _)| {
                    header.type_id == type_id && section.tags().any(|t| t.as_bytes() == tag)
                }),
            };
            match found {
                Some(true) => {}
                None => run.report.report(
                    db_names::TAGS,
                    name,
                    format!("points at sequence {seq}, which does not exist or is damaged"),
                ),
                Some(false) => run.report.report(
                    db_names::TAGS,
                    name,
                    format!("sequence {seq} is not of type {type_id} with this tag"),
                ),
            }
            Ok(())
        })
    }

    /// Each record's type must be in the `types` table.
    fn event_type(&mut self, seq: u64, type_id: u32) -> Result<()> {
        if self.types.contains(&type_id) {
            return Ok(());
        }
        match super::types::resolve(self.dbs, self.txn, type_id) {
            Ok(Some(_)) => {
                self.types.insert(type_id);
            }
            Ok(None) => self.report.report(
                db_names::EVENTS,
                seq_key_name(seq),
                format!("names event type {type_id}, which the store does not have"),
            ),
            Err(e) => self
                .report
                .report(db_names::TYPES, format!("type {type_id}"), e.to_string()),
        }
        Ok(())
    }

    fn reference(&mut self, seq: u64, body: &[u8]) {
        let Some(r) = BlobRef::decode(body) else {
            self.report.report(
                db_names::EVENTS,
                seq_key_name(seq),
                "malformed blob reference".into(),
            );
            return;
        };
        self.report.blob_references += 1;
        let seen = self.blobs.entry(r.hash).or_insert(Referenced {
            references: 0,
            len: r.len,
            digest: r.digest,
            first_seq: seq,
            stored: false,
            counted: false,
        });
        seen.references += 1;
        if (seen.len, seen.digest) != (r.len, r.digest) {
            let first = seen.first_seq;
            self.report.report(
                db_names::EVENTS,
                seq_key_name(seq),
                format!(
                    "references blob {} as {} bytes with digest {:#018x}; seq {first} \
                     references it with another length or digest",
                    r.hex(),
                    r.len,
                    r.digest
                ),
            );
        }
    }

    fn heads(&mut self) -> Result<()> {
        let dbs = self.dbs;
        self.report.streams = self.streams.len() as u64;
        self.pass(VerifyPhase::StreamHeads, &dbs.heads, |run, key, value| {
            let Ok(key) = <[u8; 16]>::try_from(key) else {
                run.malformed_key(db_names::STREAM_HEADS, key);
                return Ok(());
            };
            let stream_id = u128::from_be_bytes(key);
            let in_log = run.streams.remove(&stream_id);
            let Some((version, seq)) = keys::decode_head_value(value) else {
                run.report.report(
                    db_names::STREAM_HEADS,
                    stream_name(stream_id),
                    format!(
                        "a head of {} bytes, expected {}",
                        value.len(),
                        keys::HEAD_VALUE_LEN
                    ),
                );
                return Ok(());
            };
            let first_kept = super::removal::bounds(run.dbs, run.txn, stream_id)?.first_kept;
            match in_log {
                Some(last) if last == (version, seq) => {}
                // Every event of the stream was removed: the head keeps its version.
                None if first_kept == version.saturating_add(1) => {}
                Some((log_version, log_seq)) => run.report.report(
                    db_names::STREAM_HEADS,
                    stream_name(stream_id),
                    format!(
                        "the head says version {version} at seq {seq}, but the stream's last \
                         event in the log is version {log_version} at seq {log_seq}"
                    ),
                ),
                None => run.report.report(
                    db_names::STREAM_HEADS,
                    stream_name(stream_id),
                    format!(
                        "the head says version {version} at seq {seq}, but the log has no event \
                         of this stream"
                    ),
                ),
            }
            Ok(())
        })?;
        let mut missing: Vec<_> = self.streams.drain().collect();
        missing.sort_unstable();
        for (stream_id, (version, seq)) in missing {
            self.report.report(
                db_names::STREAM_HEADS,
                stream_name(stream_id),
                format!(
                    "missing: the log has versions 1..={version} of this stream, the last at \
                     seq {seq}"
                ),
            );
        }
        Ok(())
    }

    fn blob_store(&mut self) -> Result<()> {
        let dbs = self.dbs;
        self.pass(VerifyPhase::Blobs, &dbs.blobs, |run, key, value| {
            run.report.blobs += 1;
            run.report.bytes_checked += value.len() as u64;
            let Some(hash) = blob::decode_key(key) else {
                run.malformed_key(db_names::BLOBS, key);
                return Ok(());
            };
            let name = blob::hex(&hash);
            let what = match run.blobs.get_mut(&hash) {
                None => Some(format!(
                    "orphan: no event references this blob ({} bytes stored)",
                    value.len()
                )),
                Some(seen) if seen.stored => Some("stored twice, under both key lengths".into()),
                Some(seen) => {
                    seen.stored = true;
                    check_blob(seen, key.len(), &hash, value, dbs.page_size)
                }
            };
            if let Some(what) = what {
                run.report.report(db_names::BLOBS, name, what);
            }
            Ok(())
        })?;
        for (first_seq, hash, references) in self.referenced_but_not(|seen| seen.stored) {
            self.report.report(
                db_names::BLOBS,
                blob::hex(&hash),
                format!(
                    "missing: referenced by seq {first_seq}{}",
                    match references {
                        1 => String::new(),
                        n => format!(" and {} more events", n - 1),
                    }
                ),
            );
        }
        Ok(())
    }

    fn reference_counts(&mut self) -> Result<()> {
        let dbs = self.dbs;
        self.pass(VerifyPhase::BlobRefs, &dbs.blob_refs, |run, key, value| {
            let Ok(hash) = <[u8; HASH_LEN]>::try_from(key) else {
                run.malformed_key(db_names::BLOB_REFS, key);
                return Ok(());
            };
            let name = blob::hex(&hash);
            let Some((references, len)) = blob::decode_refs(value) else {
                run.report.report(
                    db_names::BLOB_REFS,
                    name,
                    format!(
                        "a count of {} bytes, expected {}",
                        value.len(),
                        blob::REFS_VALUE_LEN
                    ),
                );
                return Ok(());
            };
            let what = match run.blobs.get_mut(&hash) {
                None => Some(format!(
                    "orphan: counts {references} references, but no event references this blob"
                )),
                Some(seen) => {
                    seen.counted = true;
                    if references != seen.references {
                        Some(format!(
                            "counts {references} references, but {} events reference this blob",
                            seen.references
                        ))
                    } else if len != seen.len {
                        Some(format!(
                            "records a {len}-byte payload, but the events reference {} bytes",
                            seen.len
                        ))
                    } else {
                        None
                    }
                }
            };
            if let Some(what) = what {
                run.report.report(db_names::BLOB_REFS, name, what);
            }
            Ok(())
        })?;
        for (first_seq, hash, references) in self.referenced_but_not(|seen| seen.counted) {
            self.report.report(
                db_names::BLOB_REFS,
                blob::hex(&hash),
                format!(
                    "missing: {references} events reference this blob (the first at seq \
                     {first_seq}), but it has no reference count"
                ),
            );
        }
        Ok(())
    }
}

/// What is wrong with a stored blob the log references, if anything.
fn check_blob(
    seen: &Referenced,
    key_len: usize,
    hash: &[u8; HASH_LEN],
    value: &[u8],
    page_size: usize,
) -> Option<String> {
    let Some(padded) = blob::padded_len(seen.len).filter(|p| *p == value.len()) else {
        return Some(format!(
            "stored as {} bytes, but the events reference a {}-byte payload",
            value.len(),
            seen.len
        ));
    };
    // `padded` is `len` rounded up, so `len` fits and is at most the value's length.
    let payload = &value[..value.len() - (padded - seen.len as usize)];
    let actual = blake3::hash(payload);
    if actual.as_bytes() != hash {
        return Some(format!(
            "damaged: the content hashes to {}, not to its key",
            actual.to_hex()
        ));
    }
    if blob::key_len(padded, page_size) != key_len {
        return Some(format!(
            "a {}-byte blob under a {key_len}-byte key: it is not 16-byte aligned in the map",
            value.len()
        ));
    }
    if record::payload_digest(payload) != seen.digest {
        return Some(format!(
            "its content does not match the digest {:#018x} its references carry",
            seen.digest
        ));
    }
    None
}

/// The words of a corruption error, without the error's own prefix.
fn reason(e: crate::Error) -> String {
    match e {
        crate::Error::Corrupt { reason, .. } => reason,
        other => other.to_string(),
    }
}
