//! Slivers: rows (primary) and columns (secondary) of the expanded matrix, and their checks.

use super::merkle::{leaves_of_parts, root_of_leaves, Hash, MerkleTree, TreeShape};
use super::metadata::BlobMetadata;
use super::params::{SymbolShape, MAX_SHARDS, MAX_SYMBOL_SIZE};
use super::rs;
use super::wire::{Kind, Reader, WireError, Writer};
use super::CodecError;

/// Which axis of the matrix a sliver runs along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Axis {
    /// A row: `k_s` source symbols, extended with the secondary code to `n`.
    Primary,
    /// A column: `k_p` source symbols, extended with the primary code to `n`.
    Secondary,
}

impl Axis {
    pub fn as_u8(self) -> u8 {
        match self {
            Axis::Primary => 0,
            Axis::Secondary => 1,
        }
    }
    pub fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Axis::Primary),
            1 => Ok(Axis::Secondary),
            _ => Err(WireError::Invalid {
                field: "axis",
                value: v as u64,
            }),
        }
    }
    /// Number of source symbols of a sliver on this axis.
    pub fn source_symbols(self, shape: &SymbolShape) -> usize {
        match self {
            Axis::Primary => shape.params.k_secondary(),
            Axis::Secondary => shape.params.k_primary(),
        }
    }
    pub fn other(self) -> Self {
        match self {
            Axis::Primary => Axis::Secondary,
            Axis::Secondary => Axis::Primary,
        }
    }
}

/// One sliver: its axis, its index (row or column) and its source symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sliver {
    pub axis: Axis,
    pub index: u16,
    pub symbol_size: u16,
    pub data: Vec<u8>,
}

impl Sliver {
    /// Check the sliver's shape against `shape`.
    pub fn check_shape(&self, shape: &SymbolShape) -> Result<(), CodecError> {
        let n = shape.params.n();
        if self.index as usize >= n {
            return Err(CodecError::IndexOutOfRange {
                index: self.index as usize,
                n,
            });
        }
        if self.symbol_size as usize != shape.symbol_size {
            return Err(CodecError::BadSymbolSize {
                got: self.symbol_size as usize,
                expected: shape.symbol_size,
            });
        }
        let expected = self.axis.source_symbols(shape) * shape.symbol_size;
        if self.data.len() != expected {
            return Err(CodecError::BadLength {
                what: "sliver",
                got: self.data.len(),
                expected,
            });
        }
        Ok(())
    }

    /// All `n` symbols of the expanded sliver (source symbols, then parity).
    pub fn expand(&self, shape: &SymbolShape) -> Result<Vec<u8>, CodecError> {
        self.check_shape(shape)?;
        let n = shape.params.n();
        let k = self.axis.source_symbols(shape);
        let parity = rs::encode_one(&self.data, shape.symbol_size, n - k)?;
        let mut full = Vec::with_capacity(n * shape.symbol_size);
        full.extend_from_slice(&self.data);
        full.extend_from_slice(&parity);
        Ok(full)
    }

    /// Merkle tree over the expanded sliver's symbols; its root is the sliver hash.
    pub fn tree(&self, shape: &SymbolShape) -> Result<(Vec<u8>, MerkleTree), CodecError> {
        let full = self.expand(shape)?;
        let tree = MerkleTree::new(&full, shape.symbol_size);
        Ok((full, tree))
    }

    /// The sliver hash committed to in the metadata. Takes the source symbols in place and
    /// the computed parity separately (no copy of the expanded sliver).
    pub fn hash(&self, shape: &SymbolShape) -> Result<Hash, CodecError> {
        Ok(root_of_leaves(&self.leaves(shape)?))
    }

    /// The leaf level of the sliver's tree (source symbols in place, parity computed).
    fn leaves(&self, shape: &SymbolShape) -> Result<Vec<Hash>, CodecError> {
        self.check_shape(shape)?;
        let k = self.axis.source_symbols(shape);
        let parity = rs::encode_one(&self.data, shape.symbol_size, shape.params.n() - k)?;
        Ok(leaves_of_parts(&[&self.data, &parity], shape.symbol_size))
    }

    /// The wire encoding's header: everything of [`Sliver::to_bytes`] before the data.
    pub fn wire_header(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::Sliver, 9);
        w.u8(self.axis.as_u8())
            .u16(self.index)
            .u16(self.symbol_size)
            .u32(self.data.len() as u32);
        w.finish()
    }

    /// Check this sliver against verified metadata.
    pub fn verify(&self, metadata: &BlobMetadata) -> Result<(), CodecError> {
        let shape = metadata.shape()?;
        let expected = self.committed_hash(metadata)?;
        if self.hash(&shape)? != expected {
            return Err(CodecError::HashMismatch(
                "sliver does not match the metadata",
            ));
        }
        Ok(())
    }

    /// [`Sliver::verify`], keeping the tree the check built: a node stores its levels beside a
    /// large sliver for challenges, and this spares a second pass over the sliver's symbols.
    pub fn verify_tree(&self, metadata: &BlobMetadata) -> Result<MerkleTree, CodecError> {
        let shape = metadata.shape()?;
        let expected = self.committed_hash(metadata)?;
        let n = shape.params.n();
        let tree =
            MerkleTree::from_leaves(TreeShape::new(n, shape.symbol_size), self.leaves(&shape)?);
        if tree.root() != expected {
            return Err(CodecError::HashMismatch(
                "sliver does not match the metadata",
            ));
        }
        Ok(tree)
    }

    /// The hash the metadata commits to for this sliver's index and axis.
    fn committed_hash(&self, metadata: &BlobMetadata) -> Result<Hash, CodecError> {
        let i = self.index as usize;
        match self.axis {
            Axis::Primary => metadata.primary_hash(i),
            Axis::Secondary => metadata.secondary_hash(i),
        }
        .copied()
        .ok_or(CodecError::IndexOutOfRange {
            index: i,
            n: metadata.n(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::Sliver, 9 + self.data.len());
        w.u8(self.axis.as_u8())
            .u16(self.index)
            .u16(self.symbol_size)
            .bytes(&self.data);
        w.finish()
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, Kind::Sliver)?;
        let axis = Axis::from_u8(r.u8()?)?;
        let index = r.u16()?;
        let symbol_size = r.u16()?;
        if symbol_size == 0 || symbol_size as usize > MAX_SYMBOL_SIZE || symbol_size % 2 == 1 {
            return Err(WireError::Invalid {
                field: "symbol size",
                value: symbol_size as u64,
            }
            .into());
        }
        let data = r
            .bytes("sliver length", MAX_SHARDS * MAX_SYMBOL_SIZE)?
            .to_vec();
        r.finish()?;
        if data.len() % symbol_size as usize != 0 {
            return Err(WireError::Invalid {
                field: "sliver length",
                value: data.len() as u64,
            }
            .into());
        }
        Ok(Self {
            axis,
            index,
            symbol_size,
            data,
        })
    }
}

/// The two slivers a shard stores for a blob: primary p and secondary n−1−p.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliverPair {
    pub index: u16,
    pub primary: Sliver,
    pub secondary: Sliver,
}
