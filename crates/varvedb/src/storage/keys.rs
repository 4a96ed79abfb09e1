//! Key and small-value encodings. Keys are big-endian so that LMDB's byte order is numeric order.

/// Length of an events-log key for a record stored inline in its leaf page.
pub(crate) const SEQ_KEY_LEN: usize = 8;
/// Length of an events-log key for a record stored on overflow pages: the sequence followed by
/// eight zero bytes. The longer key keeps the leaf node 32 bytes long (see `docs/design.md`,
/// "Alignment"), so that every value in the log stays 16-byte aligned.
pub(crate) const SEQ_KEY_LONG_LEN: usize = 16;
/// `[u32 version][u32 reserved][u64 last seq]`, little-endian.
pub(crate) const HEAD_VALUE_LEN: usize = 16;

pub(crate) fn seq_key(seq: u64) -> [u8; SEQ_KEY_LEN] {
    seq.to_be_bytes()
}

pub(crate) fn seq_key_long(seq: u64) -> [u8; SEQ_KEY_LONG_LEN] {
    let mut key = [0u8; SEQ_KEY_LONG_LEN];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Decodes an events-log key of either length; `None` if it is neither.
pub(crate) fn decode_seq_key(key: &[u8]) -> Option<u64> {
    match key.len() {
        SEQ_KEY_LEN => Some(u64::from_be_bytes(key.try_into().ok()?)),
        SEQ_KEY_LONG_LEN if key[8..] == [0u8; 8] => {
            Some(u64::from_be_bytes(key[..8].try_into().ok()?))
        }
        _ => None,
    }
}

pub(crate) fn head_key(stream_id: u128) -> [u8; 16] {
    stream_id.to_be_bytes()
}

pub(crate) fn head_value(version: u32, last_seq: u64) -> [u8; HEAD_VALUE_LEN] {
    let mut value = [0u8; HEAD_VALUE_LEN];
    value[..4].copy_from_slice(&version.to_le_bytes());
    value[8..].copy_from_slice(&last_seq.to_le_bytes());
    value
}

/// Decodes a stream head into `(version, last_seq)`.
pub(crate) fn decode_head_value(value: &[u8]) -> Option<(u32, u64)> {
    if value.len() != HEAD_VALUE_LEN {
        return None;
    }
    let version = u32::from_le_bytes(value[..4].try_into().ok()?);
    let last_seq = u64::from_le_bytes(value[8..].try_into().ok()?);
    Some((version, last_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically() {
        assert!(seq_key(255) < seq_key(256));
        assert!(seq_key(1)[..] < seq_key_long(2)[..]);
        assert!(seq_key_long(2)[..] < seq_key(3)[..]);
        assert!(head_key(1) < head_key(256));
    }

    #[test]
    fn round_trips() {
        assert_eq!(decode_seq_key(&seq_key(42)), Some(42));
        assert_eq!(decode_seq_key(&seq_key_long(42)), Some(42));
        assert_eq!(decode_seq_key(&[1, 2, 3]), None);
        let mut bad = seq_key_long(1);
        bad[15] = 1;
        assert_eq!(decode_seq_key(&bad), None);
        assert_eq!(decode_head_value(&head_value(9, 1234)), Some((9, 1234)));
        assert_eq!(decode_head_value(&[0; 3]), None);
    }
}

/// The events log's key order, compared without a call to `memcmp`: the first eight bytes as
/// a big-endian `u64`, then the rest of the key and its length. That is exactly LMDB's default
/// order (bytes, then length), so a store written with either comparator reads with the
/// other, and tools that know no comparator (`mdb_dump`, `mdb_stat`) still read the log.
pub(crate) enum SeqOrder {}

impl heed::Comparator for SeqOrder {
    #[inline]
    fn compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        match (a.split_first_chunk::<8>(), b.split_first_chunk::<8>()) {
            (Some((x, a_rest)), Some((y, b_rest))) => u64::from_be_bytes(*x)
                .cmp(&u64::from_be_bytes(*y))
                .then_with(|| a_rest.cmp(b_rest)),
            _ => a.cmp(b),
        }
    }
}

#[cfg(test)]
mod order_tests {
    use heed::Comparator;

    use super::*;

    /// The comparator orders keys exactly as LMDB's default does (bytewise, then by length).
    #[test]
    fn seq_order_is_lmdbs_default_order() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for seq in [0u64, 1, 2, 255, 256, 1 << 32, u64::MAX - 1, u64::MAX] {
            keys.push(seq_key(seq).to_vec());
            keys.push(seq_key_long(seq).to_vec());
        }
        keys.push(Vec::new());
        keys.push(vec![0]);
        keys.push(vec![0, 0, 0, 0, 0, 0, 0, 1, 5]);
        keys.push(vec![0xff; 9]);
        for a in &keys {
            for b in &keys {
                assert_eq!(SeqOrder::compare(a, b), a.as_slice().cmp(b), "{a:?} {b:?}");
            }
        }
    }
}
