//! Red Stuff 2D erasure coding, Merkle commitments and blob IDs (PROTOCOL.md §2, §3, §5).
//!
//! Pure logic: nothing here touches the disk or the network. The byte format produced here is
//! the one every other part of Floe (node, client, operator) carries.

mod error;
pub mod gf_engine;
mod hash_lanes;
mod layout;
pub mod merkle;
mod params;
mod rs;

pub mod decode;
pub mod encode;
pub mod metadata;
pub mod recovery;
pub mod sliver;
pub mod stream;
pub mod wire;

pub use decode::{decode, decode_verified, ConsistencyCheck};
pub use encode::{encode, reed_solomon_floor, release_spare_buffers, EncodedBlob};
pub use error::CodecError;
pub use merkle::{Hash, MerkleProof, MerkleTree, ProofError, TreeIndex, TreeShape};
pub use metadata::{BlobId, BlobMetadata, ENCODING_RS2};
pub use params::{EncodingParams, SymbolShape};
pub use recovery::{
    recovery_symbols, InconsistencyProof, RebuildError, RecoverySymbol, SliverRebuilder,
};
pub use sliver::{Axis, Sliver, SliverPair};
pub use stream::{encode_metadata, BlobSource, PairGroup, StreamingEncoder};

/// Name of the BLAKE3 lane engine this process hashes with (`avx512`, `avx2` or `portable`),
/// for benchmark reports.
#[doc(hidden)]
pub fn hash_engine() -> &'static str {
    hash_lanes::Engine::best().name()
}
