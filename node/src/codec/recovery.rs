//! Rebuilding one sliver from symbols of other shards' slivers (PROTOCOL.md §5).
//!
//! Symbol `M[r][c]` lies on expanded primary sliver r and expanded secondary sliver c. A helper
//! that holds secondary sliver j sends `M[t][j]`, proven against secondary_hash(j), to rebuild
//! primary sliver t (k_s = n−f of them needed); a helper with primary sliver i sends `M[i][u]`,
//! proven against primary_hash(i), to rebuild secondary sliver u (k_p = n−2f needed).

use std::collections::BTreeMap;

use super::merkle::{tree_depth, MerkleProof, TreeShape};
use super::metadata::BlobMetadata;
use super::params::{SymbolShape, MAX_SHARDS, MAX_SYMBOL_SIZE};
use super::rs;
use super::sliver::{Axis, Sliver};
use super::wire::{Kind, Reader, WireError, Writer};
use super::CodecError;

/// One symbol of a helper's expanded sliver, with its Merkle proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySymbol {
    /// Axis of the helper's sliver the proof is against.
    pub proven_axis: Axis,
    /// Index of the helper's sliver.
    pub sliver_index: u16,
    /// Position in the helper's expanded sliver, i.e. the index of the sliver being rebuilt.
    pub position: u16,
    pub data: Vec<u8>,
    pub proof: MerkleProof,
}

/// Recovery symbols from `helper` (already verified) for the target slivers at `positions`.
pub fn recovery_symbols(
    helper: &Sliver,
    shape: &SymbolShape,
    positions: &[u16],
) -> Result<Vec<RecoverySymbol>, CodecError> {
    let n = shape.params.n();
    let s = shape.symbol_size;
    let (full, tree) = helper.tree(shape)?;
    positions
        .iter()
        .map(|&pos| {
            let p = pos as usize;
            let proof = tree
                .proof(p)
                .ok_or(CodecError::IndexOutOfRange { index: p, n })?;
            Ok(RecoverySymbol {
                proven_axis: helper.axis,
                sliver_index: helper.index,
                position: pos,
                data: full[p * s..(p + 1) * s].to_vec(),
                proof,
            })
        })
        .collect()
}

impl RecoverySymbol {
    /// Check the symbol's proof against the metadata.
    pub fn verify(&self, metadata: &BlobMetadata) -> Result<(), CodecError> {
        let shape = metadata.shape()?;
        let n = metadata.n();
        if self.data.len() != shape.symbol_size {
            return Err(CodecError::BadSymbolSize {
                got: self.data.len(),
                expected: shape.symbol_size,
            });
        }
        let i = self.sliver_index as usize;
        let root = match self.proven_axis {
            Axis::Primary => metadata.primary_hash(i),
            Axis::Secondary => metadata.secondary_hash(i),
        }
        .ok_or(CodecError::IndexOutOfRange { index: i, n })?;
        let tree = TreeShape::new(n, shape.symbol_size);
        self.proof
            .verify(root, &self.data, self.position as usize, tree)?;
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(
            Kind::RecoverySymbol,
            17 + self.data.len() + 32 * (self.proof.siblings.len() + 1),
        );
        self.write_body(&mut w);
        w.finish()
    }
    fn write_body(&self, w: &mut Writer) {
        w.u8(self.proven_axis.as_u8())
            .u16(self.sliver_index)
            .u16(self.position)
            .bytes(&self.data);
        match &self.proof.chunk {
            Some(chunk) => w.u8(1).raw(chunk),
            None => w.u8(0),
        };
        w.hashes(&self.proof.siblings);
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, Kind::RecoverySymbol)?;
        let sym = Self::read_body(&mut r)?;
        r.finish()?;
        Ok(sym)
    }
    fn read_body(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let proven_axis = Axis::from_u8(r.u8()?)?;
        let sliver_index = r.u16()?;
        let position = r.u16()?;
        let data = r.bytes("symbol length", MAX_SYMBOL_SIZE)?.to_vec();
        let chunk = match r.u8()? {
            0 => None,
            1 => Some(r.hash()?),
            v => {
                return Err(WireError::Invalid {
                    field: "proof chunk flag",
                    value: v as u64,
                }
                .into())
            }
        };
        let siblings = r.hashes("proof length", tree_depth(MAX_SHARDS))?;
        Ok(Self {
            proven_axis,
            sliver_index,
            position,
            data,
            proof: MerkleProof { chunk, siblings },
        })
    }
}

/// Evidence that a blob was encoded inconsistently: verified symbols that decode to a sliver
/// whose hash is not the one in the metadata. Anyone with the metadata can check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InconsistencyProof {
    pub target_axis: Axis,
    pub target_index: u16,
    pub symbols: Vec<RecoverySymbol>,
}

impl InconsistencyProof {
    /// Ok when the proof shows an inconsistency; an error when it does not.
    pub fn verify(&self, metadata: &BlobMetadata) -> Result<(), CodecError> {
        let mut r = SliverRebuilder::new(metadata, self.target_axis, self.target_index as usize)?;
        for s in &self.symbols {
            r.add(s.clone())?;
        }
        match r.rebuild() {
            Err(RebuildError::Inconsistent(_)) => Ok(()),
            Err(RebuildError::Codec(e)) => Err(e),
            Ok(_) => Err(CodecError::HashMismatch(
                "inconsistency proof decodes to a valid sliver",
            )),
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::InconsistencyProof, 8);
        w.u8(self.target_axis.as_u8())
            .u16(self.target_index)
            .u16(self.symbols.len() as u16);
        for s in &self.symbols {
            s.write_body(&mut w);
        }
        w.finish()
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, Kind::InconsistencyProof)?;
        let target_axis = Axis::from_u8(r.u8()?)?;
        let target_index = r.u16()?;
        let count = r.u16()? as usize;
        if count > MAX_SHARDS {
            return Err(WireError::Invalid {
                field: "symbol count",
                value: count as u64,
            }
            .into());
        }
        let symbols = (0..count)
            .map(|_| RecoverySymbol::read_body(&mut r))
            .collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self {
            target_axis,
            target_index,
            symbols,
        })
    }
}

/// Why a rebuild did not produce a sliver.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("verified symbols decode to a sliver that does not match the metadata")]
    Inconsistent(Box<InconsistencyProof>),
}

/// Collects verified recovery symbols for one target sliver and decodes it.
pub struct SliverRebuilder<'m> {
    metadata: &'m BlobMetadata,
    shape: SymbolShape,
    axis: Axis,
    index: usize,
    /// Keyed by position in the target's codeword (the helper's sliver index).
    symbols: BTreeMap<u16, RecoverySymbol>,
}

impl<'m> SliverRebuilder<'m> {
    pub fn new(metadata: &'m BlobMetadata, axis: Axis, index: usize) -> Result<Self, CodecError> {
        let shape = metadata.shape()?;
        if index >= metadata.n() {
            return Err(CodecError::IndexOutOfRange {
                index,
                n: metadata.n(),
            });
        }
        Ok(Self {
            metadata,
            shape,
            axis,
            index,
            symbols: BTreeMap::new(),
        })
    }
    /// Symbols needed to decode.
    pub fn needed(&self) -> usize {
        self.axis.source_symbols(&self.shape)
    }
    pub fn have(&self) -> usize {
        self.symbols.len()
    }
    pub fn is_ready(&self) -> bool {
        self.have() >= self.needed()
    }
    /// Verify and keep a symbol; a symbol for another target or with a bad proof is an error.
    pub fn add(&mut self, sym: RecoverySymbol) -> Result<(), CodecError> {
        if sym.proven_axis != self.axis.other() || sym.position as usize != self.index {
            return Err(CodecError::HashMismatch(
                "recovery symbol is for another sliver",
            ));
        }
        sym.verify(self.metadata)?;
        self.symbols.insert(sym.sliver_index, sym);
        Ok(())
    }
    /// Decode the target sliver and check it against the metadata.
    pub fn rebuild(self) -> Result<Sliver, RebuildError> {
        let (k, n, s) = (self.needed(), self.shape.params.n(), self.shape.symbol_size);
        if !self.is_ready() {
            return Err(CodecError::NotEnough {
                what: "recovery symbols",
                have: self.have(),
                need: k,
            }
            .into());
        }
        let used: Vec<&RecoverySymbol> = self.symbols.values().take(k).collect();
        let known: Vec<(usize, &[u8])> = used
            .iter()
            .map(|s| (s.sliver_index as usize, s.data.as_slice()))
            .collect();
        let data = rs::decode_one(k, n - k, s, &known)?;
        let sliver = Sliver {
            axis: self.axis,
            index: self.index as u16,
            symbol_size: s as u16,
            data,
        };
        match sliver.verify(self.metadata) {
            Ok(()) => Ok(sliver),
            Err(CodecError::HashMismatch(_)) => {
                Err(RebuildError::Inconsistent(Box::new(InconsistencyProof {
                    target_axis: self.axis,
                    target_index: self.index as u16,
                    symbols: used.into_iter().cloned().collect(),
                })))
            }
            Err(e) => Err(e.into()),
        }
    }
}
