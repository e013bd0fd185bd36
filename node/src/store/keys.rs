//! Key and value layouts of the store's partitions. Keys are big-endian so that the engine's
//! byte order is the order the node pages in (blob ID, then pair, then axis; age for the GC).

use crate::codec::BlobId;

use super::AxisKey;

pub const SLIVER_KEY_LEN: usize = 32 + 2 + 1;

/// `blob id ‖ pair (u16 BE) ‖ axis (0 primary, 1 secondary)`.
pub fn sliver_key(id: &BlobId, pair: u16, axis: AxisKey) -> [u8; SLIVER_KEY_LEN] {
    let mut k = [0u8; SLIVER_KEY_LEN];
    k[..32].copy_from_slice(id.as_bytes());
    k[32..34].copy_from_slice(&pair.to_be_bytes());
    k[34] = match axis {
        AxisKey::Primary => 0,
        AxisKey::Secondary => 1,
    };
    k
}

pub fn parse_sliver_key(k: &[u8]) -> Option<(BlobId, u16, AxisKey)> {
    if k.len() != SLIVER_KEY_LEN {
        return None;
    }
    let id = BlobId(k[..32].try_into().ok()?);
    let pair = u16::from_be_bytes(k[32..34].try_into().ok()?);
    let axis = match k[34] {
        0 => AxisKey::Primary,
        1 => AxisKey::Secondary,
        _ => return None,
    };
    Some((id, pair, axis))
}

pub fn blob_id(k: &[u8]) -> Option<BlobId> {
    Some(BlobId(k.get(..32)?.try_into().ok()?))
}

/// `first seen (unix seconds, u64 BE) ‖ blob id`: the never-certified blobs, oldest first.
pub fn age_key(first_seen: u64, id: &BlobId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&first_seen.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

pub fn parse_age_key(k: &[u8]) -> Option<(u64, BlobId)> {
    if k.len() != 40 {
        return None;
    }
    Some((
        u64::from_be_bytes(k[..8].try_into().ok()?),
        BlobId(k[8..].try_into().ok()?),
    ))
}

/// `end epoch (u32 BE) ‖ blob id`: blobs by the epoch their lifetime ends (deleted ones under
/// 0), so that the GC collects every blob gone by epoch e with one range scan.
pub fn expiry_key(end: u32, id: &BlobId) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..4].copy_from_slice(&end.to_be_bytes());
    k[4..].copy_from_slice(id.as_bytes());
    k
}

pub fn parse_expiry_key(k: &[u8]) -> Option<(u32, BlobId)> {
    if k.len() != 36 {
        return None;
    }
    Some((
        u32::from_be_bytes(k[..4].try_into().ok()?),
        BlobId(k[4..].try_into().ok()?),
    ))
}

/// Per-blob record: what the store holds of a blob and what it is charged for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    pub has_metadata: bool,
    pub invalid: bool,
    pub certified_epoch: Option<u32>,
    /// When this node first heard of the blob (unix seconds): the GC's clock for blobs never
    /// certified.
    pub first_seen: u64,
    /// Bytes charged against the capacity for this blob (all its objects).
    pub charged: u64,
    /// Shard count of the blob's metadata (0 = unknown yet).
    pub n: u16,
}

const RECORD_LEN: usize = 1 + 1 + 4 + 8 + 8 + 2;

impl Record {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0] = 1;
        b[1] = u8::from(self.has_metadata)
            | (u8::from(self.invalid) << 1)
            | (u8::from(self.certified_epoch.is_some()) << 2);
        b[2..6].copy_from_slice(&self.certified_epoch.unwrap_or(0).to_be_bytes());
        b[6..14].copy_from_slice(&self.first_seen.to_be_bytes());
        b[14..22].copy_from_slice(&self.charged.to_be_bytes());
        b[22..24].copy_from_slice(&self.n.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != RECORD_LEN || b[0] != 1 {
            return None;
        }
        let flags = b[1];
        Some(Self {
            has_metadata: flags & 1 != 0,
            invalid: flags & 2 != 0,
            certified_epoch: (flags & 4 != 0)
                .then(|| u32::from_be_bytes(b[2..6].try_into().expect("4 bytes"))),
            first_seen: u64::from_be_bytes(b[6..14].try_into().expect("8 bytes")),
            charged: u64::from_be_bytes(b[14..22].try_into().expect("8 bytes")),
            n: u16::from_be_bytes(b[22..24].try_into().expect("2 bytes")),
        })
    }
}

/// An inline value: `BLAKE3(body) ‖ body`, checked on every read.
pub fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let mut v = Vec::with_capacity(32 + len);
    v.extend_from_slice(h.finalize().as_bytes());
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

/// The body of a framed value, or `None` when its checksum does not match.
pub fn unframe(v: &[u8]) -> Option<&[u8]> {
    let (sum, body) = (v.get(..32)?, v.get(32..)?);
    (blake3::hash(body).as_bytes() == sum).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip_and_order() {
        let id = BlobId([7; 32]);
        let k = sliver_key(&id, 258, AxisKey::Secondary);
        assert_eq!(parse_sliver_key(&k), Some((id, 258, AxisKey::Secondary)));
        assert!(sliver_key(&id, 2, AxisKey::Secondary) < sliver_key(&id, 3, AxisKey::Primary));
        assert!(age_key(1, &BlobId([9; 32])) < age_key(2, &BlobId([0; 32])));
        assert!(expiry_key(1, &BlobId([9; 32])) < expiry_key(2, &BlobId([0; 32])));
        assert_eq!(parse_expiry_key(&expiry_key(7, &id)), Some((7, id)));
        let r = Record {
            has_metadata: true,
            invalid: false,
            certified_epoch: Some(0),
            first_seen: 5,
            charged: 99,
            n: 1000,
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let f = frame(&[b"ab", b"c"]);
        assert_eq!(unframe(&f), Some(&b"abc"[..]));
        let mut bad = f.clone();
        bad[33] ^= 1;
        assert_eq!(unframe(&bad), None);
    }
}
