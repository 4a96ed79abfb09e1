//! The events log's one record model: a stored record opened once into a [`Stored`] view, and
//! one [`LogWriter`] that puts a record with all its indexes.
//!
//! Every reader is a view over [`Stored`]: the typed reader's `EventRef`, the untyped
//! `RawEvent` and the export's stored event. Each decides what a key state means for it (an
//! error, an empty payload, a released blob), and none decodes a record, finds a blob or builds
//! a seal's associated data on its own. The committer and the importer both write through
//! [`LogWriter`], so an index added to the log (deletion marks, retention, consumer groups) is
//! written in one place.

use heed::{RoTxn, RwTxn};
use rkyv::util::AlignedVec;

use super::blob::{self, BlobRef, HASH_LEN};
use super::crypto::{self, Crypto, EventKey, Opened, StreamKey, Txn};
use super::envelope::{self, Section};
use super::lmdb::LmdbResultExt;
use super::pack::PackWriter;
use super::record::{self, FLAG_BLOB, FLAG_ENCRYPTED, FLAG_ENVELOPE, RecordHeader};
use super::types::{self, TypeKey};
use super::{Dbs, keys, tags};
use crate::error::{Error, Result};

/// A record of the log, opened: its checked header, its envelope section, and the rest of its
/// body (the payload, sealed for an encrypted record, or a blob reference).
#[derive(Clone, Copy)]
pub(crate) struct Stored<'t> {
    pub(crate) seq: u64,
    pub(crate) header: RecordHeader,
    pub(crate) section: Section<'t>,
    rest: &'t [u8],
}

/// What a stored record's stream says of its payload.
pub(crate) enum Seal {
    /// A plaintext record: the payload is stored as it is.
    Plain,
    /// An encrypted record, and its stream's key.
    Key(EventKey),
    /// An encrypted record of a shredded stream: its payload is gone for good.
    Shredded,
}

impl<'t> Stored<'t> {
    /// Opens the record `value` at `seq`: its header and checksum (left to a matched pack
    /// checksum when `checked`), its envelope section, and the length of a blob reference.
    #[inline]
    pub(crate) fn open(seq: u64, value: &'t [u8], checked: bool) -> Result<Self> {
        let (header, section, rest) = record::open_with(seq, value, checked)?;
        Ok(Stored {
            seq,
            header,
            section,
            rest,
        })
    }

    #[inline]
    pub(crate) fn is_encrypted(&self) -> bool {
        self.header.flags & FLAG_ENCRYPTED != 0
    }

    #[inline]
    pub(crate) fn is_blob(&self) -> bool {
        self.header.flags & FLAG_BLOB != 0
    }

    /// The event's type, as the `types` table names it.
    #[inline]
    pub(crate) fn event_type(&self, dbs: &Dbs, txn: &'t RoTxn<'_>) -> Result<TypeKey<'t>> {
        types::resolve(dbs, txn, self.header.type_id)?.ok_or_else(|| {
            Error::corrupt(
                self.seq,
                format!(
                    "the record names event type {}, which the store does not have",
                    self.header.type_id
                ),
            )
        })
    }

    /// The blob reference of a blob record (`None` for an inline payload).
    #[inline]
    pub(crate) fn blob_ref(&self) -> Result<Option<BlobRef>> {
        if !self.is_blob() {
            return Ok(None);
        }
        BlobRef::decode(self.rest)
            .map(Some)
            .ok_or_else(|| Error::corrupt(self.seq, "malformed blob reference"))
    }

    /// The body after the envelope section, as the record holds it: the payload, or the
    /// blob reference of a blob record.
    #[inline]
    pub(crate) fn rest(&self) -> &'t [u8] {
        self.rest
    }

    /// The stored payload (sealed for an encrypted record), from the record or from the blob
    /// store, with the blob's hash (borrowed from the record's reference) for a blob record.
    #[inline]
    pub(crate) fn payload(
        &self,
        dbs: &Dbs,
        txn: &'t RoTxn<'_>,
    ) -> Result<(&'t [u8], Option<&'t [u8; HASH_LEN]>)> {
        if !self.is_blob() {
            return Ok((self.rest, None));
        }
        let reference = BlobRef::decode(self.rest)
            .ok_or_else(|| Error::corrupt(self.seq, "malformed blob reference"))?;
        // The reference starts with the hash.
        let hash = self.rest.first_chunk::<HASH_LEN>();
        Ok((blob::get(dbs, txn, self.seq, &reference)?, hash))
    }

    /// The key state of the record's stream in `txn` (a read snapshot or a write
    /// transaction). An encrypted record whose stream has no key entry is corrupt.
    #[inline]
    pub(crate) fn seal(
        &self,
        dbs: &Dbs,
        txn: &RoTxn<'_>,
        crypto: &Crypto,
        kind: Txn,
    ) -> Result<Seal> {
        if !self.is_encrypted() {
            return Ok(Seal::Plain);
        }
        match crypto.stream_key(dbs, txn, self.header.stream_id, kind)? {
            StreamKey::Key(key) => Ok(Seal::Key(key)),
            StreamKey::Shredded => Ok(Seal::Shredded),
            StreamKey::Plain => Err(Error::corrupt(
                self.seq,
                "the record is encrypted but its stream has no key",
            )),
        }
    }

    /// Decrypts the sealed payload `sealed` (see [`payload`](Self::payload)) into `buffer`,
    /// reading the record as `event_type`: a seal made for another type, store, envelope or
    /// place does not authenticate.
    #[inline]
    pub(crate) fn decrypt(
        &self,
        key: &EventKey,
        event_type: TypeKey<'_>,
        sealed: &[u8],
        buffer: AlignedVec,
    ) -> Result<Opened> {
        let aad = crypto::record_aad(
            key,
            self.seq,
            &self.header,
            event_type,
            self.section.bytes(),
        )?;
        crypto::open_event(&key.cipher, aad.as_slice(), sealed, self.seq, buffer)
    }
}

/// A record ready for the log, and what its indexes need.
pub(crate) struct NewRecord<'a> {
    pub(crate) seq: u64,
    /// The whole record, sealed (header and checksum written).
    pub(crate) record: &'a [u8],
    /// Its blob: the reference and the stored (padded) bytes.
    pub(crate) blob: Option<(&'a BlobRef, &'a [u8])>,
    pub(crate) type_id: u32,
    pub(crate) event_id: Option<u128>,
}

/// Puts records into the log with all their indexes, in one write transaction: the blob, the
/// pack, the tags and the event id. Stream heads are written with [`put_head`] once a
/// transaction knows its last version of each stream.
pub(crate) struct LogWriter {
    packs: PackWriter,
    inline_max: usize,
    /// Records still to come in the transaction (sizes a new pack's offset table).
    left: usize,
}

impl LogWriter {
    /// A writer of `left` records (a hint: more or fewer may come) into packs whose records stay
    /// in their leaf page up to `inline_max` bytes.
    pub(crate) fn new(inline_max: usize, left: usize) -> Self {
        LogWriter {
            packs: PackWriter::default(),
            inline_max,
            left,
        }
    }

    /// Puts `new` and its indexes. Returns whether its blob was already stored (`Some(true)`:
    /// deduplicated), or `None` for a record without a blob.
    #[inline]
    pub(crate) fn put(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        new: &NewRecord<'_>,
    ) -> Result<Option<bool>> {
        let deduplicated = match new.blob {
            Some((reference, stored)) => Some(blob::put(dbs, wtxn, reference, stored)?),
            None => None,
        };
        let left = self.left.max(1);
        self.left = self.left.saturating_sub(1);
        self.packs
            .push(dbs, wtxn, self.inline_max, new.seq, new.record, left)?;
        let flags = new.record.get(1).copied().unwrap_or(0);
        let body = new.record.get(record::HEADER_LEN..).unwrap_or(&[]);
        let has_section = flags & FLAG_ENVELOPE != 0;
        if envelope::has_tags(has_section, body) {
            let (section, _) = envelope::split(new.seq, has_section, body)?;
            tags::put(dbs, wtxn, section.tags(), new.type_id, new.seq)?;
        }
        if let Some(id) = new.event_id {
            dbs.event_ids
                .put(wtxn, &id.to_be_bytes(), &new.seq.to_le_bytes())
                .lmdb()?;
        }
        Ok(deduplicated)
    }

    /// `records` that were expected and will not come.
    pub(crate) fn skip(&mut self, records: usize) {
        self.left = self.left.saturating_sub(records);
    }

    /// Writes the pack being built: at the end of the transaction, and before the transaction
    /// reads the log.
    pub(crate) fn flush(&mut self, dbs: &Dbs, wtxn: &mut RwTxn<'_>) -> Result<()> {
        self.packs.flush(dbs, wtxn, self.inline_max)
    }
}

/// Sets the head of `stream_id`: its last version and that version's sequence.
pub(crate) fn put_head(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    stream_id: u128,
    version: u32,
    seq: u64,
) -> Result<()> {
    dbs.heads
        .put(
            wtxn,
            &keys::head_key(stream_id),
            &keys::head_value(version, seq),
        )
        .lmdb()
}
