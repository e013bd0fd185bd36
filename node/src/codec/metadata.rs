//! Blob metadata and blob IDs (PROTOCOL.md §3).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::merkle::{leaves, root_of_leaves, Hash};
use super::params::{EncodingParams, SymbolShape, MAX_SHARDS};
use super::wire::{Kind, Reader, WireError, Writer};
use super::CodecError;

/// Encoding type byte of Floe's Red Stuff with Reed–Solomon on both axes and the type-2
/// commitments of PROTOCOL.md §3 (packed chunk leaves, keyed one-compression inner nodes).
/// Type 1 is retired; every other value is refused.
pub const ENCODING_RS2: u8 = 2;

/// A blob's identity: `H(type ‖ L as u64 LE ‖ root)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub Hash);

impl BlobId {
    /// The blob ID read as a big-endian 256-bit integer, reduced mod `n`.
    pub fn mod_n(&self, n: usize) -> usize {
        let n = n as u64;
        self.0
            .iter()
            .fold(0u64, |acc, b| (acc * 256 + *b as u64) % n) as usize
    }
    pub fn as_bytes(&self) -> &Hash {
        &self.0
    }
    pub fn from_slice(b: &[u8]) -> Result<Self, CodecError> {
        let h: Hash = b.try_into().map_err(|_| CodecError::BadLength {
            what: "blob id",
            got: b.len(),
            expected: 32,
        })?;
        Ok(Self(h))
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// Error for a blob ID given as text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid blob ID {0:?}: expected 43 characters of URL-safe base64")]
pub struct ParseBlobIdError(pub String);

impl FromStr for BlobId {
    type Err = ParseBlobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseBlobIdError(s.to_string());
        let bytes = URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| err())?;
        Ok(Self(bytes.try_into().map_err(|_| err())?))
    }
}

/// What every shard keeps about a blob: enough to verify any sliver and recompute the ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMetadata {
    pub encoding_type: u8,
    pub len: u64,
    /// `(primary_hash, secondary_hash)` of each sliver pair p: the hash of primary sliver p and
    /// of secondary sliver n−1−p (the pair's two slivers).
    pub pair_hashes: Vec<(Hash, Hash)>,
}

impl BlobMetadata {
    pub fn n(&self) -> usize {
        self.pair_hashes.len()
    }
    pub fn params(&self) -> Result<EncodingParams, CodecError> {
        EncodingParams::new(self.n())
    }
    pub fn shape(&self) -> Result<SymbolShape, CodecError> {
        self.params()?.symbol_shape(self.len)
    }
    /// Merkle root over the n entries `primary_hash ‖ secondary_hash` (symbols of 64 bytes).
    pub fn root(&self) -> Hash {
        let entries: Vec<u8> = self
            .pair_hashes
            .iter()
            .flat_map(|(p, s)| p.iter().chain(s.iter()).copied())
            .collect();
        root_of_leaves(&leaves(&entries, 64))
    }
    pub fn blob_id(&self) -> BlobId {
        let mut h = blake3::Hasher::new();
        h.update(&[self.encoding_type]);
        h.update(&self.len.to_le_bytes());
        h.update(&self.root());
        BlobId(*h.finalize().as_bytes())
    }
    /// Check that this metadata belongs to `id` and describes an encodable blob.
    pub fn verify(&self, id: &BlobId) -> Result<(), CodecError> {
        check_encoding_type(self.encoding_type)?;
        self.shape()?;
        if &self.blob_id() != id {
            return Err(CodecError::HashMismatch(
                "metadata does not match the blob ID",
            ));
        }
        Ok(())
    }
    /// Hash of primary sliver `i`.
    pub fn primary_hash(&self, i: usize) -> Option<&Hash> {
        self.pair_hashes.get(i).map(|(p, _)| p)
    }
    /// Hash of secondary sliver `j` (kept in pair n−1−j).
    pub fn secondary_hash(&self, j: usize) -> Option<&Hash> {
        let n = self.n();
        (j < n).then(|| &self.pair_hashes[n - 1 - j].1)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::Metadata, 11 + 64 * self.n());
        w.u8(self.encoding_type).u64(self.len).u16(self.n() as u16);
        for (p, s) in &self.pair_hashes {
            w.raw(p).raw(s);
        }
        w.finish()
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, Kind::Metadata)?;
        let encoding_type = r.u8()?;
        check_encoding_type(encoding_type)?;
        let len = r.u64()?;
        let n = r.u16()? as usize;
        if n > MAX_SHARDS {
            return Err(CodecError::InvalidShardCount(n));
        }
        let pair_hashes = (0..n)
            .map(|_| Ok((r.hash()?, r.hash()?)))
            .collect::<Result<_, WireError>>()?;
        r.finish()?;
        let m = Self {
            encoding_type,
            len,
            pair_hashes,
        };
        m.shape()?;
        Ok(m)
    }
}

/// Refuse every encoding type but [`ENCODING_RS2`], before anything else is read or hashed.
fn check_encoding_type(t: u8) -> Result<(), CodecError> {
    if t == ENCODING_RS2 {
        Ok(())
    } else {
        Err(CodecError::UnsupportedEncoding {
            found: t,
            supported: ENCODING_RS2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_text_round_trip_and_errors() {
        let id = BlobId([7u8; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 43);
        assert_eq!(s.parse::<BlobId>().unwrap(), id);
        assert!("not-an-id".parse::<BlobId>().is_err());
        assert!("".parse::<BlobId>().is_err());
    }

    #[test]
    fn mod_n_reads_big_endian() {
        let mut h = [0u8; 32];
        h[31] = 5;
        h[30] = 1; // 256 + 5 = 261
        assert_eq!(BlobId(h).mod_n(100), 61);
        assert_eq!(BlobId([0xff; 32]).mod_n(1000), {
            // (2^256 - 1) mod 1000 computed by hand: 2^256 mod 1000 = 936
            935
        });
    }
}

#[cfg(test)]
mod type_tests {
    use super::*;

    #[test]
    fn other_encoding_types_are_refused_with_a_clear_error() {
        let md = BlobMetadata {
            encoding_type: ENCODING_RS2,
            len: 5,
            pair_hashes: vec![([1; 32], [2; 32]); 4],
        };
        assert_eq!(BlobMetadata::from_bytes(&md.to_bytes()).unwrap(), md);
        for t in [0u8, 1, 3, 255] {
            let old = BlobMetadata {
                encoding_type: t,
                ..md.clone()
            };
            let err = BlobMetadata::from_bytes(&old.to_bytes()).unwrap_err();
            assert_eq!(
                err,
                CodecError::UnsupportedEncoding {
                    found: t,
                    supported: 2
                }
            );
            assert!(err.to_string().contains(&format!("encoding type {t}")));
            assert_eq!(old.verify(&old.blob_id()), Err(err));
        }
    }
}
