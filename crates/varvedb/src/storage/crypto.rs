//! Encryption at rest: per-stream AES-256-GCM keys wrapped by the master key, the sealing of
//! event payloads, and crypto-shredding. `docs/design.md`, "Encryption", draws the formats.
//!
//! ```text
//! keystore   u128 stream BE → [u8 1][12 nonce][AES-256-GCM(master, stream key) + 16 tag]
//!                              (AAD "varvedb stream key" ‖ stream BE), or [0xff]: shredded
//! meta       "key_check"    → [12 nonce][AES-256-GCM(master, check text) + 16 tag]
//!            check text: "varvedb master key check v2" ‖ store id (16 random bytes), or
//!            "varvedb master key check v1" (a check of before the store id, upgraded to v2
//!            by the first open with the key)
//! sealed     [12 nonce: version LE ‖ 8 random bytes][ciphertext][16 tag]
//!            AAD of a bound record (flag FLAG_BOUND), what every new record is:
//!              store id (16) ‖ stream LE (16) ‖ version LE (4) ‖ seq LE (8)
//!              ‖ timestamp LE (8) ‖ type key length LE (2) ‖ type key (`types`)
//!              ‖ the record's clear envelope section (event ids, tags; may be empty)
//!            AAD of an older record (no FLAG_BOUND):
//!              stream LE (16) ‖ version LE (4) ‖ seq LE (8) ‖ type id LE (4)
//! plaintext  [u32 pairs length L][u16 pairs N][u16 0][u64 0][pairs][zero pad to 16][payload]
//! meta       "keystore_generation" → u64 LE: bumped by every change to the keystore other
//!            than a new stream's key (a shred, a rotation, an import), in that change's own
//!            transaction
//! ```
//! The generation is how a shred or a rotation made by another process reaches this one: the
//! cache of unwrapped keys is valid for one generation, and it is checked against the snapshot
//! once per read snapshot and once per write transaction (see [`Crypto::stream_key`]).
//!
//! A nonce is never reused under one key: each stream has its own key, a committed version
//! of a stream exists once, and the 64 random bits separate the attempts at one version that
//! never committed (an aborted transaction, a crash before the commit) whose pages may still
//! have reached the disk.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, RwLock};

use heed::{RoTxn, RwTxn};
use ring::aead::{AES_256_GCM, Aad as RingAad, LessSafeKey, Nonce, Tag, UnboundKey};
use rkyv::util::AlignedVec;
use zeroize::{Zeroize, Zeroizing};

use super::lmdb::LmdbResultExt;
use super::record::{FLAG_BOUND, RecordHeader};
use super::types::TypeKey;
use super::{Dbs, lock};
use crate::error::{Error, Result};

/// A store's random id, carried by its key check: what a bound record is sealed to.
pub(crate) type StoreId = [u8; 16];
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
/// The plaintext's fixed prefix before the metadata pairs.
const PLAIN_FIXED: usize = 16;
const WRAP_VERSION: u8 = 1;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + 32 + TAG_LEN;
pub(crate) const TOMBSTONE: &[u8] = &[0xff];
const KEY_CHECK: &str = "key_check";
/// The meta key of the keystore generation (see the module docs).
const KEYSTORE_GENERATION: &str = "keystore_generation";
/// The key check's text before the store id (a check of it carries none).
const KEY_CHECK_TEXT_V1: &[u8] = b"varvedb master key check v1";
/// The key check's text, followed by the store id.
const KEY_CHECK_TEXT: &[u8] = b"varvedb master key check v2";
const KEY_CHECK_AAD: &[u8] = b"varvedb key check";
const STREAM_KEY_AAD: &[u8] = b"varvedb stream key";
/// The most unwrapped stream keys kept; past it the cache starts over (each dropped key is
/// zeroized). Sized so that a store's working set of some thousands of encrypted streams stays
/// cached, since a miss costs an unwrap and a key expansion; its memory and the reasons are in
/// docs/performance.md ("Encryption, round 3").
const KEY_CACHE_MAX: usize = 16_384;

/// A stream's encryption, as its keystore entry says.
#[derive(Clone)]
pub(crate) enum StreamKey {
    /// No entry: a plaintext stream.
    Plain,
    /// Its key, unwrapped.
    Key(EventKey),
    /// Shredded: the key is gone.
    Shredded,
}

/// A stream's key, with the store id its events are bound to.
#[derive(Clone)]
pub(crate) struct EventKey {
    pub(crate) cipher: Arc<Cipher>,
    /// The id the store's key check carries; `None` for a check older than store ids.
    pub(crate) store_id: Option<StoreId>,
}

/// What a bound record's seal covers besides its ciphertext (see the module docs): every
/// field a reader or a conditional append decides on. The type is bound by its name and
/// version, not its id, so that an import that numbers types anew keeps records readable,
/// and a swapped `types` entry makes the event fail to authenticate.
pub(crate) struct Binding<'a> {
    pub(crate) store_id: StoreId,
    pub(crate) stream_id: u128,
    pub(crate) version: u32,
    pub(crate) seq: u64,
    pub(crate) timestamp_ns: u64,
    /// The event's type, bound in its stored form (`TypeKey::encode`).
    pub(crate) event_type: TypeKey<'a>,
    /// The record's clear envelope section, as stored (empty when it has none).
    pub(crate) section: &'a [u8],
}

/// The associated data of an event, on the stack when it fits (an event without a large
/// envelope section), so that sealing or opening one allocates nothing for it.
pub(crate) enum Aad {
    Inline { bytes: [u8; AAD_INLINE], len: usize },
    Heap(Vec<u8>),
}

/// The most associated data kept on the stack: the fixed part, a type key of up to 40 bytes and
/// an envelope section with an event id and a few tags.
const AAD_INLINE: usize = 192;

impl Aad {
    fn from_parts(parts: &[&[u8]]) -> Aad {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len <= AAD_INLINE {
            let mut bytes = [0u8; AAD_INLINE];
            let mut at = 0;
            for part in parts {
                bytes[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            Aad::Inline { bytes, len }
        } else {
            Aad::Heap(parts.concat())
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Aad::Inline { bytes, len } => &bytes[..*len],
            Aad::Heap(v) => v,
        }
    }
}

impl Binding<'_> {
    /// The associated data (see the module docs for its layout).
    pub(crate) fn aad(&self) -> Aad {
        let t = &self.event_type;
        let type_len = self.event_type.encoded_len();
        let len = BOUND_FIXED + type_len + self.section.len();
        let mut heap = Vec::new();
        let mut inline = [0u8; AAD_INLINE];
        let out: &mut [u8] = if len <= AAD_INLINE {
            &mut inline[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        out[..16].copy_from_slice(&self.store_id);
        out[16..32].copy_from_slice(&self.stream_id.to_le_bytes());
        out[32..36].copy_from_slice(&self.version.to_le_bytes());
        out[36..44].copy_from_slice(&self.seq.to_le_bytes());
        out[44..52].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        // Each name is at most 255 bytes (checked before anything is written), so a type key
        // is at most 514 bytes and its length fits in u16.
        out[52..54].copy_from_slice(&(type_len as u16).to_le_bytes());
        let mut at = BOUND_FIXED;
        for part in [
            &[t.container.len() as u8][..],
            t.container.as_bytes(),
            &[t.name.len() as u8],
            t.name.as_bytes(),
            &t.version.to_le_bytes(),
            self.section,
        ] {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        if len <= AAD_INLINE {
            Aad::Inline { bytes: inline, len }
        } else {
            Aad::Heap(heap)
        }
    }
}

/// The fixed part of a bound record's associated data, before the type key.
const BOUND_FIXED: usize = 54;

/// The associated data of a stored encrypted event, bound ([`FLAG_BOUND`]) or of an older
/// record. `event_type` is the type the caller reads the record as: a `types` table that
/// says otherwise than the writer did makes the event fail to authenticate.
pub(crate) fn record_aad(
    key: &EventKey,
    seq: u64,
    header: &RecordHeader,
    event_type: TypeKey<'_>,
    section: &[u8],
) -> Result<Aad> {
    if header.flags & FLAG_BOUND == 0 {
        let older = event_aad(header.stream_id, header.version, seq, header.type_id);
        return Ok(Aad::from_parts(&[&older]));
    }
    Ok(Binding {
        store_id: bound_store_id(key, seq)?,
        stream_id: header.stream_id,
        version: header.version,
        seq,
        timestamp_ns: header.timestamp_ns,
        event_type,
        section,
    }
    .aad())
}

/// The store id of a record's seal: the key's, or an error for a key check that has none.
pub(crate) fn bound_store_id(key: &EventKey, seq: u64) -> Result<StoreId> {
    key.store_id.ok_or_else(|| Error::Crypto {
        reason: format!(
            "event {seq} is bound to a store id, and the store's key check carries none; \
             open the store with its master key once to upgrade the check"
        ),
    })
}

/// The master key and the cache of unwrapped stream keys of one store.
pub(crate) struct Crypto {
    /// The master key's cipher; `None` when the store was opened without a key.
    master: RwLock<Option<Arc<Cipher>>>,
    /// The master key itself, to compare a reopen's key with (zeroized on drop).
    raw: RwLock<Option<Zeroizing<[u8; 32]>>>,
    keys: Mutex<KeyCache>,
}

/// The unwrapped stream keys and what they are valid for: one keystore generation.
///
/// One lock for all of it closes the races between a reader of an older snapshot (which may
/// still see a key that a newer snapshot has shredded) and the cache: a key is only ever taken
/// into the cache from a snapshot of the cache's own generation.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<u128, Arc<Cipher>>,
    /// Streams shredded by this process while it was open (never cached again).
    shredded: std::collections::HashSet<u128>,
    /// The keystore generation the cache is valid for; `None` until the first look.
    generation: Option<u64>,
    /// The read snapshots (LMDB transaction ids, lowest and highest) found to be of
    /// `generation`: the generation only grows with the id, so every snapshot between them is
    /// of it too, and needs no look.
    checked_read: Option<(usize, usize)>,
    /// The write transaction found to be of `generation` (a write transaction's id is unique
    /// for the state it starts from, but a read snapshot may later carry the same id with
    /// another state, so the two are kept apart).
    checked_write: Option<usize>,
    /// The store's key-check value as of `generation` (`None`: the store is plaintext).
    key_check: Option<Vec<u8>>,
    /// The store id `key_check` carries (`None`: no check, an older check, or not opened).
    store_id: Option<StoreId>,
    /// The key check changed and this handle's master key does not open it: another process
    /// rotated the master key. This handle creates and unwraps no keys any more.
    retired: bool,
}

impl KeyCache {
    /// Whether the transaction `id` is known to be of the cache's generation.
    fn knows(&self, id: usize, kind: Txn) -> bool {
        match kind {
            Txn::Read => self
                .checked_read
                .is_some_and(|(lo, hi)| (lo..=hi).contains(&id)),
            Txn::Write => self.checked_write == Some(id),
        }
    }
}

/// Which kind of transaction a key is looked up in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Txn {
    /// A read snapshot.
    Read,
    /// The write transaction of a commit group or an import.
    Write,
}

/// What the keystore says of the store as a whole, as of one snapshot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoreKeys {
    /// The store has a key check: it is encrypted, and new streams must be.
    pub(crate) encrypted: bool,
    /// This handle's master key was retired by a rotation made elsewhere.
    pub(crate) retired: bool,
    /// The keystore generation of the cache when it served this transaction (`None`: it did
    /// not serve it).
    pub(crate) generation: Option<u64>,
    /// The store id the key check carries, opened with this handle's key.
    pub(crate) store_id: Option<StoreId>,
}

/// The keystore generation of a snapshot (0 for a store that never had one).
pub(crate) fn generation(
    meta: &heed::Database<'static, heed::types::Str, heed::types::Bytes>,
    txn: &RoTxn<'_>,
) -> Result<u64> {
    match meta.get(txn, KEYSTORE_GENERATION).lmdb()? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v)
            .map(u64::from_le_bytes)
            .map_err(|_| Error::Crypto {
                reason: format!("the keystore generation is {} bytes, expected 8", v.len()),
            }),
    }
}

/// Bumps the keystore generation in `wtxn`: every process drops its cached keys at its next
/// snapshot of this transaction's state or later.
pub(crate) fn bump_generation(
    meta: &heed::Database<'static, heed::types::Str, heed::types::Bytes>,
    wtxn: &mut RwTxn<'_>,
) -> Result<()> {
    let next = generation(meta, wtxn)?.wrapping_add(1);
    meta.put(wtxn, KEYSTORE_GENERATION, &next.to_le_bytes())
        .lmdb()
}

/// Whether the stream `stream_id` was shredded, as `txn` has it.
pub(crate) fn is_shredded(dbs: &Dbs, txn: &RoTxn<'_>, stream_id: u128) -> Result<bool> {
    Ok(dbs
        .keystore
        .get(txn, &stream_id.to_be_bytes())
        .lmdb()?
        .is_some_and(is_tombstone))
}

/// Whether a keystore value is the shredded mark.
pub(crate) fn is_tombstone(value: &[u8]) -> bool {
    value == TOMBSTONE
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto { .. }")
    }
}

/// Nonce bits from the operating system, fetched 4 KiB at a time: one `getrandom` call per 512
/// event nonces instead of one per event (a wrapped stream key's nonce comes from here too). A buffer of OS randomness, consumed once, never reused.
struct NonceBits {
    bytes: [u8; 4096],
    at: usize,
}

static NONCE_BITS: Mutex<NonceBits> = Mutex::new(NonceBits {
    bytes: [0; 4096],
    at: 4096,
});

/// `N` random bytes for a nonce, from the pool (`N` at most 4,096).
fn nonce_bits<const N: usize>() -> Result<[u8; N]> {
    let mut pool = lock(&NONCE_BITS);
    if pool.at + N > pool.bytes.len() {
        getrandom::fill(&mut pool.bytes).map_err(|e| Error::Crypto {
            reason: format!("the operating system gave no random bytes: {e}"),
        })?;
        pool.at = 0;
    }
    let at = pool.at;
    let mut out = [0u8; N];
    out.copy_from_slice(&pool.bytes[at..at + N]);
    // Consumed: wiped, so that the same bits can never serve twice.
    pool.bytes[at..at + N].fill(0);
    pool.at += N;
    Ok(out)
}

/// `n` random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Error::Crypto {
        reason: format!("the operating system gave no random bytes: {e}"),
    })?;
    Ok(out)
}

/// An AES-256-GCM key, expanded for `ring` (the AES round keys and the GHASH key table), kept
/// on the heap and wiped when dropped.
///
/// `ring` does not wipe its keys: a `LessSafeKey` is plain data with no `Drop`. So the key
/// lives in a heap slot of its own that this type overwrites with zeros (volatile writes, which
/// the compiler may not elide) before the slot is freed. Never cloned: a stream's key is shared
/// as `Arc<Cipher>`, so there is one copy to wipe.
pub(crate) struct Cipher {
    /// Always initialized until `drop` wipes it.
    key: Box<MaybeUninit<LessSafeKey>>,
}

impl Cipher {
    #[allow(
        unsafe_code,
        reason = "the slot is initialized from `cipher` until `drop`"
    )]
    fn key(&self) -> &LessSafeKey {
        // SAFETY: `cipher` initializes the slot and only `drop` de-initializes it (by wiping).
        unsafe { self.key.assume_init_ref() }
    }

    /// Encrypts `buf` in place under `nonce`, bound to `aad`; the tag.
    fn seal_in_place(&self, nonce: [u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<Tag> {
        self.key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                RingAad::from(aad),
                buf,
            )
            .map_err(|_| Error::Crypto {
                reason: "AES-256-GCM refused to encrypt (a plaintext past its length bound)".into(),
            })
    }

    /// Decrypts `buf` in place; `None` (and `buf` is then not plaintext) if the ciphertext,
    /// `aad` or `tag` does not authenticate under this key.
    fn open_in_place(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Option<()> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let tag = Tag::try_from(tag).ok()?;
        self.key()
            .open_in_place_separate_tag(nonce, RingAad::from(aad), tag, buf, 0..)
            .ok()
            .map(|_| ())
    }
}

impl Drop for Cipher {
    #[allow(unsafe_code, reason = "drops the key in place before wiping its bytes")]
    fn drop(&mut self) {
        // SAFETY: the slot is initialized (see `key`); `LessSafeKey` owns nothing outside its
        // own bytes, so dropping it in place and then overwriting its bytes frees nothing twice
        // and leaves no key material behind. The slot is not read again.
        unsafe { self.key.assume_init_drop() };
        self.key.zeroize();
    }
}

/// The expanded AES-256-GCM key of `key` (a master key or a stream key).
pub(crate) fn cipher(key: &[u8; 32]) -> Result<Cipher> {
    let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::Crypto {
        reason: "AES-256-GCM refused a 32-byte key".into(),
    })?;
    Ok(Cipher {
        key: Box::new(MaybeUninit::new(LessSafeKey::new(unbound))),
    })
}

/// Seals `plain` under `cipher`: nonce ‖ ciphertext ‖ tag.
fn seal_with(cipher: &Cipher, nonce: [u8; NONCE_LEN], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    seal_laid_out(cipher, nonce, aad, out)
}

/// Seals `out` (the nonce, then the plaintext) where it lies, and appends the tag. A failed
/// seal wipes the plaintext before it returns.
fn seal_laid_out(
    cipher: &Cipher,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    mut out: Vec<u8>,
) -> Result<Vec<u8>> {
    match cipher.seal_in_place(nonce, aad, &mut out[NONCE_LEN..]) {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(out)
        }
        Err(e) => {
            out.zeroize();
            Err(e)
        }
    }
}

/// Decrypts `sealed` (nonce ‖ ciphertext ‖ tag); `None` if it does not authenticate.
fn open_with(cipher: &Cipher, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, rest) = sealed.split_at_checked(NONCE_LEN)?;
    let (ct, tag) = rest.split_at_checked(rest.len().checked_sub(TAG_LEN)?)?;
    let mut buf = Zeroizing::new(ct.to_vec());
    cipher.open_in_place(nonce, aad, &mut buf, tag)?;
    Some(buf)
}

/// The associated data of an event: what its ciphertext is bound to.
pub(crate) fn event_aad(stream_id: u128, version: u32, seq: u64, type_id: u32) -> [u8; 32] {
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(&stream_id.to_le_bytes());
    aad[16..20].copy_from_slice(&version.to_le_bytes());
    aad[20..28].copy_from_slice(&seq.to_le_bytes());
    aad[28..].copy_from_slice(&type_id.to_le_bytes());
    aad
}

/// Opens a key check under `master`: `None` if it is not of this master key, else the store
/// id it carries (`None` for a check of before store ids).
fn open_check(master: &Cipher, check: &[u8]) -> Option<Option<StoreId>> {
    let text = open_with(master, KEY_CHECK_AAD, check)?;
    if text.as_slice() == KEY_CHECK_TEXT_V1 {
        return Some(None);
    }
    let id = text.strip_prefix(KEY_CHECK_TEXT)?;
    Some(Some(id.try_into().ok()?))
}

/// A key check of `master` carrying `store_id`.
fn seal_check(master: &Cipher, store_id: &StoreId) -> Result<Vec<u8>> {
    let mut text = Zeroizing::new(KEY_CHECK_TEXT.to_vec());
    text.extend_from_slice(store_id);
    seal_with(master, random()?, KEY_CHECK_AAD, &text)
}

fn stream_key_aad(stream_id: u128) -> Vec<u8> {
    let mut aad = STREAM_KEY_AAD.to_vec();
    aad.extend_from_slice(&stream_id.to_be_bytes());
    aad
}

impl Crypto {
    /// The crypto state of a store opened with `master` (or without a key).
    pub(crate) fn new(master: Option<&[u8; 32]>) -> Result<Crypto> {
        Ok(Crypto {
            master: RwLock::new(master.map(cipher).transpose()?.map(Arc::new)),
            raw: RwLock::new(master.map(|k| Zeroizing::new(*k))),
            keys: Mutex::new(KeyCache::default()),
        })
    }

    /// Whether `key` is the master key this store was opened with (or both are absent).
    pub(crate) fn is_master(&self, key: Option<&[u8; 32]>) -> bool {
        let raw = self
            .raw
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (raw.as_deref(), key) {
            (None, None) => true,
            // Every byte is compared, whatever the first difference.
            (Some(a), Some(b)) => a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0,
            _ => false,
        }
    }

    fn master(&self) -> Option<Arc<Cipher>> {
        self.master
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn has_master_key(&self) -> bool {
        self.master().is_some()
    }

    /// At open: checks the master key against the store's key-check value, or records one
    /// for a store that has none. `Ok(false)` when the store has a check value but this open
    /// has no key (tools may read envelopes without it).
    pub(crate) fn check_master_key(
        &self,
        meta: &heed::Database<'static, heed::types::Str, heed::types::Bytes>,
        wtxn: &mut RwTxn<'_>,
    ) -> Result<()> {
        let stored = meta.get(wtxn, KEY_CHECK).lmdb()?.map(<[u8]>::to_vec);
        let Some(master) = self.master() else {
            return Ok(());
        };
        match stored.as_deref().map(|check| open_check(&master, check)) {
            Some(None) => Err(Error::WrongMasterKey),
            Some(Some(Some(_))) => Ok(()),
            // The store becomes encrypted, or its check (of before store ids) gets a store id:
            // every process learns it at its next generation.
            Some(Some(None)) | None => {
                let sealed = seal_check(&master, &random()?)?;
                meta.put(wtxn, KEY_CHECK, &sealed).lmdb()?;
                bump_generation(meta, wtxn)
            }
        }
    }

    /// The key-check value stored in `meta`, if the store has one.
    pub(crate) fn key_check(
        meta: &heed::Database<'static, heed::types::Str, heed::types::Bytes>,
        txn: &RoTxn<'_>,
    ) -> Result<Option<Vec<u8>>> {
        Ok(meta.get(txn, KEY_CHECK).lmdb()?.map(<[u8]>::to_vec))
    }

    /// Records `check` as the store's key-check value (an import into a store that has none).
    pub(crate) fn put_key_check(
        meta: &heed::Database<'static, heed::types::Str, heed::types::Bytes>,
        wtxn: &mut RwTxn<'_>,
        check: &[u8],
    ) -> Result<()> {
        meta.put(wtxn, KEY_CHECK, check).lmdb()?;
        bump_generation(meta, wtxn)
    }

    /// Whether `check` is a key-check value sealed under this store's master key (false
    /// without one).
    pub(crate) fn accepts_check(&self, check: &[u8]) -> bool {
        self.master()
            .is_some_and(|master| open_check(&master, check).is_some())
    }

    /// The store id a key check carries, opened with this handle's master key (`None`: no
    /// key, not of this key, or a check of before store ids).
    pub(crate) fn store_id_in(&self, check: &[u8]) -> Option<StoreId> {
        open_check(self.master()?.as_ref(), check).flatten()
    }

    /// Brings the cache to the keystore generation of `txn`'s snapshot, and says whether the
    /// cache serves that snapshot (not one older than the cache: it reads the keystore itself).
    ///
    /// The generation is read once per read snapshot (a range of snapshot ids known to be of
    /// the cache's generation: the generation only grows with the id) and once per write
    /// transaction. A newer generation keeps the cached keys whose streams still have them,
    /// and reads the key check again: another process may have rotated the master key.
    fn sync<'c>(
        &'c self,
        dbs: &Dbs,
        txn: &RoTxn<'_>,
        kind: Txn,
    ) -> Result<(std::sync::MutexGuard<'c, KeyCache>, bool)> {
        let id = txn.id();
        {
            let cache = lock(&self.keys);
            if cache.knows(id, kind) {
                return Ok((cache, true));
            }
        }
        let found = generation(&dbs.meta, txn)?;
        let mut cache = lock(&self.keys);
        match cache.generation {
            Some(current) if found < current => return Ok((cache, false)),
            Some(current) if found == current => {}
            _ => {
                let check = Self::key_check(&dbs.meta, txn)?;
                let mut kept = HashMap::with_capacity(cache.keys.len());
                for (stream_id, key) in cache.keys.drain() {
                    match dbs.keystore.get(txn, &stream_id.to_be_bytes()).lmdb()? {
                        Some(v) if !is_tombstone(v) => {
                            kept.insert(stream_id, key);
                        }
                        _ => {}
                    }
                }
                cache.keys = kept;
                let known = cache.key_check.is_some() && cache.key_check == check && !cache.retired;
                if !known {
                    let opened = match (&check, self.master()) {
                        (Some(check), Some(master)) => Some(open_check(&master, check)),
                        _ => None,
                    };
                    // A check this key does not open: another process rotated the key.
                    cache.retired = matches!(opened, Some(None));
                    cache.store_id = opened.flatten().flatten();
                }
                cache.key_check = check;
                cache.generation = Some(found);
                cache.checked_read = None;
                cache.checked_write = None;
            }
        }
        match kind {
            Txn::Read => {
                cache.checked_read = Some(match cache.checked_read {
                    Some((lo, hi)) => (lo.min(id), hi.max(id)),
                    None => (id, id),
                });
            }
            Txn::Write => cache.checked_write = Some(id),
        }
        Ok((cache, true))
    }

    /// What the keystore says of the whole store in `txn` (a write transaction): whether it is
    /// encrypted, and whether this handle's master key was retired by a rotation elsewhere.
    pub(crate) fn store_keys(&self, dbs: &Dbs, wtxn: &RoTxn<'_>) -> Result<StoreKeys> {
        let (cache, current) = self.sync(dbs, wtxn, Txn::Write)?;
        if current {
            return Ok(StoreKeys {
                encrypted: cache.key_check.is_some(),
                retired: cache.retired,
                generation: cache.generation,
                store_id: cache.store_id,
            });
        }
        drop(cache);
        let check = Self::key_check(&dbs.meta, wtxn)?;
        let opened = match (&check, self.master()) {
            (Some(check), Some(master)) => Some(open_check(&master, check)),
            _ => None,
        };
        Ok(StoreKeys {
            retired: matches!(opened, Some(None)),
            encrypted: check.is_some(),
            generation: None,
            store_id: opened.flatten().flatten(),
        })
    }

    /// The key of `stream_id` as `txn`'s snapshot has it, from the cache or the keystore.
    ///
    /// A shred or a rotation committed by any process is seen by the first snapshot that
    /// includes it: the cache is checked against the snapshot's keystore generation.
    pub(crate) fn stream_key(
        &self,
        dbs: &Dbs,
        txn: &RoTxn<'_>,
        stream_id: u128,
        kind: Txn,
    ) -> Result<StreamKey> {
        let (cache, current) = self.sync(dbs, txn, kind)?;
        if current && let Some(key) = cache.keys.get(&stream_id) {
            return Ok(StreamKey::Key(EventKey {
                cipher: Arc::clone(key),
                store_id: cache.store_id,
            }));
        }
        let (generation, retired, store_id) = (cache.generation, cache.retired, cache.store_id);
        drop(cache);
        let store_id = if current {
            store_id
        } else {
            // A snapshot older than the cache: its own check says.
            self.store_id_of(dbs, txn)?
        };
        let Some(stored) = dbs.keystore.get(txn, &stream_id.to_be_bytes()).lmdb()? else {
            return Ok(StreamKey::Plain);
        };
        if stored == TOMBSTONE {
            return Ok(StreamKey::Shredded);
        }
        let key = self.unwrap_key(stream_id, stored).map_err(|e| match e {
            Error::Crypto { .. } if retired => Error::MasterKeyRotated,
            e => e,
        })?;
        if current {
            let mut cache = lock(&self.keys);
            // Only into the cache of the snapshot's own generation, and never a key this
            // process shredded.
            if cache.generation == generation && !cache.shredded.contains(&stream_id) {
                if cache.keys.len() >= KEY_CACHE_MAX {
                    cache.keys.clear();
                }
                cache.keys.insert(stream_id, Arc::clone(&key));
            }
        }
        Ok(StreamKey::Key(EventKey {
            cipher: key,
            store_id,
        }))
    }

    /// The store id of `txn`'s key check, opened with this handle's master key (`None`
    /// without a key, a check, or a store id).
    fn store_id_of(&self, dbs: &Dbs, txn: &RoTxn<'_>) -> Result<Option<StoreId>> {
        Ok(match (Self::key_check(&dbs.meta, txn)?, self.master()) {
            (Some(check), Some(master)) => open_check(&master, &check).flatten(),
            _ => None,
        })
    }

    /// Whether `wrapped` opens under this handle's master key (true without one: nothing to
    /// check it against).
    pub(crate) fn opens_wrapped(&self, stream_id: u128, wrapped: &[u8]) -> bool {
        !self.has_master_key() || self.unwrap_key(stream_id, wrapped).is_ok()
    }

    fn unwrap_key(&self, stream_id: u128, stored: &[u8]) -> Result<Arc<Cipher>> {
        let master = self
            .master()
            .ok_or(Error::MasterKeyRequired { stream_id })?;
        if stored.len() != WRAPPED_LEN || stored[0] != WRAP_VERSION {
            return Err(Error::Crypto {
                reason: format!("the wrapped key of stream {stream_id} is malformed"),
            });
        }
        let plain =
            open_with(&master, &stream_key_aad(stream_id), &stored[1..]).ok_or_else(|| {
                Error::Crypto {
                    reason: format!("the wrapped key of stream {stream_id} does not authenticate"),
                }
            })?;
        let key: Zeroizing<[u8; 32]> =
            Zeroizing::new(plain.as_slice().try_into().map_err(|_| Error::Crypto {
                reason: format!("the key of stream {stream_id} is not 32 bytes"),
            })?);
        Ok(Arc::new(cipher(&key)?))
    }

    fn wrap_key(&self, stream_id: u128, key: &[u8; 32]) -> Result<Vec<u8>> {
        let master = self
            .master()
            .ok_or(Error::MasterKeyRequired { stream_id })?;
        let sealed = seal_with(&master, nonce_bits()?, &stream_key_aad(stream_id), key)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Creates a stream's key in `wtxn`. The caller adds it to the cache only once the
    /// transaction has committed ([`adopt`](Self::adopt)).
    pub(crate) fn create_key(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        stream_id: u128,
    ) -> Result<EventKey> {
        let store = self.store_keys(dbs, wtxn)?;
        if store.retired {
            return Err(Error::MasterKeyRotated);
        }
        let key = Zeroizing::new(random::<32>()?);
        let wrapped = self.wrap_key(stream_id, &key)?;
        dbs.keystore
            .put(wtxn, &stream_id.to_be_bytes(), &wrapped)
            .lmdb()?;
        Ok(EventKey {
            cipher: Arc::new(cipher(&key)?),
            store_id: store.store_id,
        })
    }

    /// Takes the keys a committed transaction created into the cache, if the cache is still
    /// of the generation `generation` the transaction was checked against (a shred committed
    /// since, by any process, may have taken one of them).
    pub(crate) fn adopt(&self, mut created: Vec<(u128, Arc<Cipher>)>, generation: Option<u64>) {
        if created.is_empty() {
            return;
        }
        let mut cache = lock(&self.keys);
        if cache.generation != generation {
            return;
        }
        created.retain(|(s, _)| !cache.shredded.contains(s));
        if cache.keys.len() + created.len() > KEY_CACHE_MAX {
            cache.keys.clear();
        }
        cache.keys.extend(created);
    }

    /// Replaces the stream's key with the shredded mark in `wtxn`, and forgets it. The wrapped
    /// key's bytes are first overwritten with zeros in place (LMDB writes a value of the same
    /// length over the old one in the transaction's copy of the page), so that the page this
    /// transaction writes keeps no copy of them in its vacated space. The page the key was
    /// read from stays on LMDB's free list until it is reused: see `docs/design.md`,
    /// "Making a shred final".
    pub(crate) fn shred(&self, dbs: &Dbs, wtxn: &mut RwTxn<'_>, stream_id: u128) -> Result<()> {
        let key = stream_id.to_be_bytes();
        if let Some(len) = dbs.keystore.get(wtxn, &key).lmdb()?.map(<[u8]>::len) {
            dbs.keystore.put(wtxn, &key, &vec![0u8; len]).lmdb()?;
        }
        dbs.keystore.put(wtxn, &key, TOMBSTONE).lmdb()?;
        bump_generation(&dbs.meta, wtxn)?;
        lock(&self.keys).keys.remove(&stream_id);
        Ok(())
    }

    /// Forgets a stream's key for good in this process (after a shred).
    pub(crate) fn forget(&self, stream_id: u128) {
        let mut cache = lock(&self.keys);
        cache.shredded.insert(stream_id);
        cache.keys.remove(&stream_id);
    }

    /// Rewraps every stream key under `new` in `wtxn`, and the key check. The caller installs
    /// the new master key ([`set_master`](Self::set_master)) once the transaction has committed.
    pub(crate) fn rewrap_all(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        new_cipher: &Cipher,
    ) -> Result<u64> {
        if self.store_keys(dbs, wtxn)?.retired {
            return Err(Error::MasterKeyRotated);
        }
        let mut entries = Vec::new();
        for entry in dbs.keystore.iter(wtxn).lmdb()? {
            let (k, v) = entry.lmdb()?;
            if v == TOMBSTONE {
                continue;
            }
            let stream_id = u128::from_be_bytes(k.try_into().map_err(|_| Error::Crypto {
                reason: "a keystore key is not a stream id".into(),
            })?);
            entries.push((stream_id, v.to_vec()));
        }
        let mut count = 0;
        for (stream_id, wrapped) in entries {
            let old = self
                .master()
                .ok_or(Error::MasterKeyRequired { stream_id })?;
            let plain =
                open_with(&old, &stream_key_aad(stream_id), &wrapped[1..]).ok_or_else(|| {
                    Error::Crypto {
                        reason: format!(
                            "the wrapped key of stream {stream_id} does not authenticate"
                        ),
                    }
                })?;
            let sealed = seal_with(new_cipher, random()?, &stream_key_aad(stream_id), &plain)?;
            let mut out = Vec::with_capacity(WRAPPED_LEN);
            out.push(WRAP_VERSION);
            out.extend_from_slice(&sealed);
            dbs.keystore
                .put(wtxn, &stream_id.to_be_bytes(), &out)
                .lmdb()?;
            count += 1;
        }
        // The store id stays what it was: the records are bound to it.
        let store_id = match self.store_id_of(dbs, wtxn)? {
            Some(id) => id,
            None => random()?,
        };
        let check = seal_check(new_cipher, &store_id)?;
        dbs.meta.put(wtxn, KEY_CHECK, &check).lmdb()?;
        bump_generation(&dbs.meta, wtxn)?;
        Ok(count)
    }

    /// Installs the master key `new`, expanded as `new_cipher` (built before the rotation's
    /// transaction, so that nothing after its commit can fail).
    pub(crate) fn set_master(&self, new: &[u8; 32], new_cipher: Arc<Cipher>) {
        *self
            .master
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(new_cipher);
        *self
            .raw
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Zeroizing::new(*new));
    }
}

/// Seals an event: its metadata pairs and payload, under `key`, bound to `aad`.
pub(crate) fn seal_event(
    key: &Cipher,
    version: u32,
    aad: &[u8],
    pairs: &[u8],
    pair_count: u16,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let padded = pairs.len().next_multiple_of(16);
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..4].copy_from_slice(&version.to_le_bytes());
    nonce[4..].copy_from_slice(&nonce_bits::<8>()?);
    // The plaintext is laid out after the nonce and encrypted where it lies: one buffer, and
    // no plaintext copy left behind (a failed seal wipes it).
    let mut out = Vec::with_capacity(NONCE_LEN + PLAIN_FIXED + padded + payload.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    out.extend_from_slice(&pair_count.to_le_bytes());
    out.extend_from_slice(&[0u8; 10]);
    out.extend_from_slice(pairs);
    out.resize(NONCE_LEN + PLAIN_FIXED + padded, 0);
    out.extend_from_slice(payload);
    seal_laid_out(key, nonce, aad, out)
}

/// Where an event being sealed goes: what its seal is bound to besides its type and its
/// visible section.
pub(crate) struct Place {
    pub(crate) stream_id: u128,
    pub(crate) version: u32,
    pub(crate) seq: u64,
    pub(crate) timestamp_ns: u64,
}

/// Seals an event's metadata `pairs` and `payload` under `key`, bound ([`Binding`]) to the
/// store id, its place, its type and its `visible` section: what an append to an encrypted
/// store stores, and what an import that seals plaintext stores (one step for both).
pub(crate) fn seal_bound(
    key: &EventKey,
    place: &Place,
    event_type: TypeKey<'_>,
    visible: &[u8],
    (pairs, pair_count): (&[u8], u16),
    payload: &[u8],
) -> Result<Vec<u8>> {
    let aad = Binding {
        store_id: bound_store_id(key, place.seq)?,
        stream_id: place.stream_id,
        version: place.version,
        seq: place.seq,
        timestamp_ns: place.timestamp_ns,
        event_type,
        section: visible,
    }
    .aad();
    seal_event(
        &key.cipher,
        place.version,
        aad.as_slice(),
        pairs,
        pair_count,
        payload,
    )
}

/// A decrypted event: the plaintext in an aligned buffer, and where its parts are.
pub(crate) struct Opened {
    pub(crate) buffer: AlignedVec,
    pub(crate) pairs: std::ops::Range<usize>,
    pub(crate) pair_count: u16,
    pub(crate) payload: std::ops::Range<usize>,
}

#[cfg(feature = "__internals")]
/// Seals `plain` as it stands (no layout of ours around it) with a fixed nonce: for the fuzz
/// target that feeds arbitrary plaintexts to [`open_event`]'s parser.
pub(crate) fn seal_raw(key: &Cipher, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce = [0u8; NONCE_LEN];
    // Only a plaintext past AES-GCM's bound (64 GiB) fails: the sealed bytes are then the
    // nonce alone, and opening them fails authentication.
    seal_with(key, nonce, aad, plain).unwrap_or_else(|_| nonce.to_vec())
}

/// Decrypts a sealed event into `buffer` (cleared first, reused). A ciphertext that does not
/// authenticate (tampered, moved to another stream, version or sequence, replayed) is
/// `Error::AuthenticationFailed` naming `seq`.
pub(crate) fn open_event(
    key: &Cipher,
    aad: &[u8],
    sealed: &[u8],
    seq: u64,
    mut buffer: AlignedVec,
) -> Result<Opened> {
    let failed = Error::AuthenticationFailed { seq };
    let (nonce, rest) = sealed
        .split_at_checked(NONCE_LEN)
        .ok_or(Error::AuthenticationFailed { seq })?;
    let (ct, tag) = rest
        .split_at_checked(rest.len().saturating_sub(TAG_LEN))
        .filter(|(_, tag)| tag.len() == TAG_LEN)
        .ok_or(Error::AuthenticationFailed { seq })?;
    // Decrypted in place, in the reader's buffer: no allocation, one copy.
    buffer.clear();
    buffer.extend_from_slice(ct);
    if key
        .open_in_place(nonce, aad, buffer.as_mut_slice(), tag)
        .is_none()
    {
        // What was decrypted before the tag failed is not plaintext to keep.
        buffer.as_mut_slice().zeroize();
        return Err(failed);
    }
    let bad = |reason: &str| Error::corrupt(seq, format!("decrypted event: {reason}"));
    if buffer.len() < PLAIN_FIXED {
        return Err(bad("shorter than its fixed part"));
    }
    let pairs_len = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    let pair_count = u16::from_le_bytes([buffer[4], buffer[5]]);
    let payload_at = PLAIN_FIXED
        .checked_add(pairs_len.next_multiple_of(16))
        .filter(|&at| at <= buffer.len())
        .ok_or_else(|| bad("metadata past its end"))?;
    let pairs = PLAIN_FIXED..PLAIN_FIXED + pairs_len;
    super::envelope::check_pairs(seq, &buffer[pairs.clone()], pair_count)?;
    Ok(Opened {
        payload: payload_at..buffer.len(),
        buffer,
        pairs,
        pair_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::FLAG_ENCRYPTED;

    #[test]
    fn sealed_events_authenticate_only_where_they_were_sealed() {
        let key = cipher(&[3u8; 32]).unwrap();
        let aad = event_aad(7, 1, 10, 2);
        let sealed = seal_event(&key, 1, &aad, b"", 0, b"hello payload").unwrap();
        let opened = open_event(&key, &aad, &sealed, 10, AlignedVec::new()).unwrap();
        assert_eq!(&opened.buffer[opened.payload.clone()], b"hello payload");
        // Another stream, version, seq or type: refused.
        for other in [
            event_aad(8, 1, 10, 2),
            event_aad(7, 2, 10, 2),
            event_aad(7, 1, 11, 2),
            event_aad(7, 1, 10, 3),
        ] {
            assert!(matches!(
                open_event(&key, &other, &sealed, 10, AlignedVec::new()),
                Err(Error::AuthenticationFailed { seq: 10 })
            ));
        }
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN + 2] ^= 1;
        assert!(open_event(&key, &aad, &tampered, 10, AlignedVec::new()).is_err());
        // The nonce starts with the version, then random bytes: two seals differ.
        let again = seal_event(&key, 1, &aad, b"", 0, b"hello payload").unwrap();
        assert_eq!(sealed[..4], 1u32.to_le_bytes());
        assert_ne!(sealed, again);
    }

    #[test]
    fn a_bound_seal_covers_every_field_it_names() {
        let key = EventKey {
            cipher: Arc::new(cipher(&[3u8; 32]).unwrap()),
            store_id: Some([9u8; 16]),
        };
        let ty = TypeKey {
            container: "",
            name: "Deposited",
            version: 1,
        };
        let base = Binding {
            store_id: [9u8; 16],
            stream_id: 7,
            version: 1,
            seq: 10,
            timestamp_ns: 5,
            event_type: ty,
            section: b"section bytes",
        };
        let aad = base.aad();
        let sealed = seal_event(&key.cipher, 1, aad.as_slice(), b"", 0, b"payload").unwrap();
        let header = RecordHeader {
            flags: FLAG_ENCRYPTED | FLAG_BOUND,
            stream_id: 7,
            version: 1,
            type_id: 1,
            timestamp_ns: 5,
            links: Default::default(),
        };
        // What a reader computes from the record is what the writer sealed.
        assert_eq!(
            record_aad(&key, 10, &header, ty, b"section bytes")
                .unwrap()
                .as_slice(),
            aad.as_slice()
        );
        let other_type = TypeKey {
            name: "Withdrawn",
            ..ty
        };
        let newer = TypeKey { version: 2, ..ty };
        for other in [
            Binding {
                store_id: [8u8; 16],
                ..base
            },
            Binding {
                timestamp_ns: 6,
                ..base
            },
            Binding {
                event_type: other_type,
                ..base
            },
            Binding {
                event_type: newer,
                ..base
            },
            Binding {
                section: b"section bytez",
                ..base
            },
        ] {
            assert!(matches!(
                open_event(
                    &key.cipher,
                    other.aad().as_slice(),
                    &sealed,
                    10,
                    AlignedVec::new()
                ),
                Err(Error::AuthenticationFailed { seq: 10 })
            ));
        }
        // A large envelope section goes to the heap, with the same layout.
        let big = [7u8; 300];
        let heap = Binding {
            section: &big,
            ..base
        }
        .aad();
        assert!(matches!(heap, Aad::Heap(_)) && matches!(aad, Aad::Inline { .. }));
        assert_eq!(heap.as_slice()[..67], aad.as_slice()[..67]);
        assert_eq!(heap.as_slice()[67..], big[..]);
        // A record of before store ids keeps its own associated data.
        let older = RecordHeader {
            flags: FLAG_ENCRYPTED,
            ..header
        };
        assert_eq!(
            record_aad(&key, 10, &older, ty, b"ignored")
                .unwrap()
                .as_slice(),
            event_aad(7, 1, 10, 1)
        );
        // A bound record with a key check that carries no store id: a typed error.
        let no_id = EventKey {
            store_id: None,
            ..key
        };
        assert!(matches!(
            record_aad(&no_id, 10, &header, ty, b""),
            Err(Error::Crypto { .. })
        ));
    }

    #[test]
    fn key_checks_carry_the_store_id_and_older_ones_open_without_one() {
        let master = cipher(&[1u8; 32]).unwrap();
        let check = seal_check(&master, &[4u8; 16]).unwrap();
        assert_eq!(open_check(&master, &check), Some(Some([4u8; 16])));
        let older = seal_with(&master, [0u8; NONCE_LEN], KEY_CHECK_AAD, KEY_CHECK_TEXT_V1).unwrap();
        assert_eq!(open_check(&master, &older), Some(None));
        assert_eq!(open_check(&cipher(&[2u8; 32]).unwrap(), &check), None);
        let short = seal_with(&master, [0u8; NONCE_LEN], KEY_CHECK_AAD, KEY_CHECK_TEXT).unwrap();
        assert_eq!(open_check(&master, &short), None);
    }
}
