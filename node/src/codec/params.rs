//! Shard counts, fault thresholds and symbol sizes (PROTOCOL.md §1, §2).

use super::CodecError;

/// Smallest and largest supported shard counts.
pub const MIN_SHARDS: usize = 4;
pub const MAX_SHARDS: usize = 1000;
/// Symbols are at most this many bytes (even, below 2^16).
pub const MAX_SYMBOL_SIZE: usize = 65534;

/// The encoding parameters of a cluster with `n` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncodingParams {
    n: usize,
}

impl EncodingParams {
    pub fn new(n: usize) -> Result<Self, CodecError> {
        if !(MIN_SHARDS..=MAX_SHARDS).contains(&n) {
            return Err(CodecError::InvalidShardCount(n));
        }
        Ok(Self { n })
    }
    /// Number of shards.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Faulty shards tolerated: ⌊(n−1)/3⌋.
    pub fn f(&self) -> usize {
        (self.n - 1) / 3
    }
    /// Primary source symbols per column (rows of the source matrix): n − 2f.
    pub fn k_primary(&self) -> usize {
        self.n - 2 * self.f()
    }
    /// Secondary source symbols per row (columns of the source matrix): n − f.
    pub fn k_secondary(&self) -> usize {
        self.n - self.f()
    }
    /// Source symbols in the whole matrix.
    pub fn source_symbols(&self) -> usize {
        self.k_primary() * self.k_secondary()
    }
    /// Largest blob this cluster can store.
    pub fn max_blob_size(&self) -> u64 {
        (self.source_symbols() * MAX_SYMBOL_SIZE) as u64
    }
    /// True when shard weight `w` is a quorum: 3w ≥ 2n+1.
    pub fn is_quorum(&self, w: usize) -> bool {
        3 * w > 2 * self.n
    }
    /// True when shard weight `w` is a validity threshold (at least one honest shard): 3w ≥ n+1.
    pub fn is_validity(&self, w: usize) -> bool {
        3 * w > self.n
    }
    /// Smallest quorum weight.
    pub fn quorum_weight(&self) -> usize {
        (2 * self.n) / 3 + 1
    }
    /// Smallest validity weight.
    pub fn validity_weight(&self) -> usize {
        self.n / 3 + 1
    }

    /// Symbol size for a blob of `len` bytes: ⌈max(L,1)/(k_p·k_s)⌉ rounded up to even.
    pub fn symbol_shape(&self, len: u64) -> Result<SymbolShape, CodecError> {
        let max = self.max_blob_size();
        if len > max {
            return Err(CodecError::BlobTooLarge {
                len,
                max,
                n: self.n,
            });
        }
        let per = self.source_symbols() as u64;
        let s = len.max(1).div_ceil(per);
        let s = (s + (s & 1)) as usize;
        Ok(SymbolShape {
            params: *self,
            symbol_size: s,
            len,
        })
    }

    /// Shard that stores sliver pair `pair` of the blob with the given ID.
    pub fn shard_for_pair(&self, pair: usize, id_mod_n: usize) -> usize {
        (pair + id_mod_n) % self.n
    }
    /// Sliver pair stored by `shard` for the blob with the given ID.
    pub fn pair_for_shard(&self, shard: usize, id_mod_n: usize) -> usize {
        (shard + self.n - id_mod_n) % self.n
    }
    /// Index of the secondary sliver in pair `pair`.
    pub fn secondary_index_of_pair(&self, pair: usize) -> usize {
        self.n - 1 - pair
    }
}

/// Parameters plus the blob-specific symbol size: everything needed to lay a blob out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolShape {
    pub params: EncodingParams,
    pub symbol_size: usize,
    pub len: u64,
}

impl SymbolShape {
    pub fn primary_sliver_len(&self) -> usize {
        self.params.k_secondary() * self.symbol_size
    }
    pub fn secondary_sliver_len(&self) -> usize {
        self.params.k_primary() * self.symbol_size
    }
    /// Bytes of the zero-padded source matrix.
    pub fn padded_len(&self) -> usize {
        self.params.source_symbols() * self.symbol_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_at_3f_plus_1() {
        let p = EncodingParams::new(1000).unwrap();
        assert_eq!((p.f(), p.k_primary(), p.k_secondary()), (333, 334, 667));
        assert_eq!(p.quorum_weight(), 667);
        assert_eq!(p.validity_weight(), 334);
        assert!(p.is_quorum(667) && !p.is_quorum(666));
        assert!(p.is_validity(334) && !p.is_validity(333));
        let p = EncodingParams::new(4).unwrap();
        assert_eq!(
            (p.f(), p.k_primary(), p.k_secondary(), p.quorum_weight()),
            (1, 2, 3, 3)
        );
        let p = EncodingParams::new(10).unwrap();
        assert_eq!(
            (p.f(), p.k_primary(), p.k_secondary(), p.quorum_weight()),
            (3, 4, 7, 7)
        );
    }

    #[test]
    fn rejects_bad_n_and_large_blobs() {
        assert_eq!(
            EncodingParams::new(3),
            Err(CodecError::InvalidShardCount(3))
        );
        assert_eq!(
            EncodingParams::new(1001),
            Err(CodecError::InvalidShardCount(1001))
        );
        let p = EncodingParams::new(100).unwrap();
        let max = p.max_blob_size();
        assert_eq!(max, 34 * 67 * 65534);
        assert_eq!(p.symbol_shape(max).unwrap().symbol_size, 65534);
        assert!(matches!(
            p.symbol_shape(max + 1),
            Err(CodecError::BlobTooLarge { .. })
        ));
    }

    #[test]
    fn symbol_size_is_even_and_covers_blob() {
        let p = EncodingParams::new(7).unwrap(); // k_p=3, k_s=5 → 15 symbols
        assert_eq!(p.symbol_shape(0).unwrap().symbol_size, 2);
        assert_eq!(p.symbol_shape(30).unwrap().symbol_size, 2);
        assert_eq!(p.symbol_shape(31).unwrap().symbol_size, 4);
        assert_eq!(p.symbol_shape(46).unwrap().symbol_size, 4);
    }

    #[test]
    fn pair_shard_rotation_is_a_bijection() {
        let p = EncodingParams::new(13).unwrap();
        for id in 0..13 {
            for pair in 0..13 {
                assert_eq!(p.pair_for_shard(p.shard_for_pair(pair, id), id), pair);
            }
        }
    }
}
