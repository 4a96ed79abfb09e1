//! The event types of a store, interned: each distinct `(container, name, version)` is kept once,
//! and a record carries its 32-bit id.
//!
//! ```text
//! types     u32 id BE        → type key
//! type_ids  type key         → u32 id LE
//! type key: [u8 container length][container][u8 name length][name][u16 version LE]
//! ```
//! Ids start at 1 and never change: a type, once committed, stays for the life of the store.

use heed::{RoTxn, RwTxn};

use super::Dbs;
use super::lmdb::LmdbResultExt;
use crate::error::{Error, Result};

/// An event type as a store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TypeKey<'a> {
    /// `""` for a struct, the enum's name for an enum of events.
    pub(crate) container: &'a str,
    pub(crate) name: &'a str,
    pub(crate) version: u16,
}

impl TypeKey<'_> {
    /// The stored form (see the module docs). Names are at most 255 bytes (checked by the
    /// writer before anything is queued).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut key);
        key
    }

    /// The length of [`encode`](Self::encode)'s bytes.
    pub(crate) fn encoded_len(&self) -> usize {
        4 + self.container.len() + self.name.len()
    }

    /// Appends the stored form to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.container.len() as u8);
        out.extend_from_slice(self.container.as_bytes());
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
    }
}

impl std::fmt::Display for TypeKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.container.is_empty() {
            write!(f, "{} v{}", self.name, self.version)
        } else {
            write!(f, "{}::{} v{}", self.container, self.name, self.version)
        }
    }
}

/// Decodes a stored type key; `None` if it is malformed.
pub(crate) fn decode(bytes: &[u8]) -> Option<TypeKey<'_>> {
    let (&clen, rest) = bytes.split_first()?;
    let (container, rest) = rest.split_at_checked(usize::from(clen))?;
    let (&nlen, rest) = rest.split_first()?;
    let (name, rest) = rest.split_at_checked(usize::from(nlen))?;
    let version = u16::from_le_bytes(rest.try_into().ok()?);
    Some(TypeKey {
        container: std::str::from_utf8(container).ok()?,
        name: std::str::from_utf8(name).ok()?,
        version,
    })
}

fn corrupt_type(id: u32, reason: impl Into<String>) -> Error {
    Error::CorruptType {
        id,
        reason: reason.into(),
    }
}

/// The type with id `id`, as stored; `None` if there is none.
pub(crate) fn resolve<'t>(dbs: &Dbs, txn: &'t RoTxn<'_>, id: u32) -> Result<Option<TypeKey<'t>>> {
    match dbs.types.get(txn, &id.to_be_bytes()).lmdb()? {
        None => Ok(None),
        Some(bytes) => decode(bytes)
            .map(Some)
            .ok_or_else(|| corrupt_type(id, "malformed type record")),
    }
}

/// The id of `key`, interning it if the store has not seen it. Returns whether it is new.
pub(crate) fn intern(dbs: &Dbs, wtxn: &mut RwTxn<'_>, key: &TypeKey<'_>) -> Result<(u32, bool)> {
    let encoded = key.encode();
    if let Some(id) = dbs.type_ids.get(wtxn, &encoded).lmdb()? {
        let id = <[u8; 4]>::try_from(id)
            .map(u32::from_le_bytes)
            .map_err(|_| corrupt_type(0, format!("the id of {key} is malformed")))?;
        return Ok((id, false));
    }
    let last = match dbs.types.last(wtxn).lmdb()? {
        None => 0,
        Some((k, _)) => <[u8; 4]>::try_from(k)
            .map(u32::from_be_bytes)
            .map_err(|_| corrupt_type(0, "the last type id is malformed"))?,
    };
    let id = last
        .checked_add(1)
        .ok_or_else(|| corrupt_type(last, "no type id is left"))?;
    dbs.types.put(wtxn, &id.to_be_bytes(), &encoded).lmdb()?;
    dbs.type_ids.put(wtxn, &encoded, &id.to_le_bytes()).lmdb()?;
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_garbage_is_refused() {
        let key = TypeKey {
            container: "Bank",
            name: "Überweisung",
            version: 7,
        };
        assert_eq!(decode(&key.encode()), Some(key));
        let plain = TypeKey {
            container: "",
            name: "X",
            version: 1,
        };
        assert_eq!(decode(&plain.encode()), Some(plain));
        for bad in [&[][..], &[5, b'a'], &[0, 1, b'x', 1], &[0, 1, 0xff, 1, 0]] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
