//! Answering storage challenges (PROTOCOL.md §7) by reading one symbol and its proof path, not
//! the whole sliver.
//!
//! A proof of symbol `t` of a sliver needs the sibling nodes of `t`'s path in the tree over the
//! *expanded* sliver, which only the whole sliver gives. So beside every large sliver file the
//! node keeps that tree's levels below the root ([`MerkleTree::index_bytes`], 64·n bytes; only
//! for slivers at least [`INDEX_MIN_RATIO`] times that, so it costs ≤ 1/8 more disk). The
//! control plane challenges systematic positions — the symbols the file holds — so an answer
//! reads `s` bytes at the symbol's offset plus `depth` nodes of the index.
//!
//! The index is a cache: it is checked by proving the answer against the metadata before it is
//! sent, and an index that is missing, of the wrong size or not proving falls back to reading
//! the whole sliver (which checks its checksum, so a corrupt sliver is still dropped and
//! recovered) and is written afresh from it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::{
    Axis, BlobMetadata, CodecError, MerkleProof, MerkleTree, RecoverySymbol, Sliver, SymbolShape,
    TreeIndex, TreeShape,
};

/// Slivers get an index only when they are at least this many times its size.
pub const INDEX_MIN_RATIO: usize = 8;

/// The index file beside a sliver file.
pub fn index_path(sliver_file: &Path) -> PathBuf {
    let mut p = sliver_file.as_os_str().to_owned();
    p.push(".tree");
    PathBuf::from(p)
}

fn tree_shape(shape: &SymbolShape) -> TreeShape {
    TreeShape::new(shape.params.n(), shape.symbol_size)
}

/// Whether a sliver of this shape and axis gets an index.
pub fn wants_index(shape: &SymbolShape, axis: Axis) -> bool {
    let sliver = axis.source_symbols(shape) * shape.symbol_size;
    sliver >= INDEX_MIN_RATIO * TreeIndex::new(tree_shape(shape)).len()
}

static TMP: AtomicU64 = AtomicU64::new(0);

/// Write the index of `sliver` beside `sliver_file` (temporary name, then rename; not fsynced:
/// a lost or torn index is only a slower answer, and is rewritten then).
pub fn write_index(sliver_file: &Path, sliver: &Sliver, shape: &SymbolShape) -> io::Result<()> {
    let (_, tree) = sliver
        .tree(shape)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    write_index_of(sliver_file, &tree)
}

/// Verify a received sliver; when it gets an index, keep the tree the check built (the store
/// writes its levels without hashing the sliver again).
pub fn verify_for_store(
    sliver: &Sliver,
    metadata: &BlobMetadata,
) -> Result<Option<MerkleTree>, CodecError> {
    let shape = metadata.shape()?;
    if wants_index(&shape, sliver.axis) {
        sliver.verify_tree(metadata).map(Some)
    } else {
        sliver.verify(metadata).map(|()| None)
    }
}

/// Write `tree`'s index beside `sliver_file` (as [`write_index`]).
pub fn write_index_of(sliver_file: &Path, tree: &MerkleTree) -> io::Result<()> {
    let path = index_path(sliver_file);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-tree-{}-{}",
        std::process::id(),
        TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let r = std::fs::write(&tmp, tree.index_bytes()).and_then(|()| std::fs::rename(&tmp, &path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Bytes before the first symbol in a sliver file: the store's object header and the sliver's
/// wire header.
fn data_offset(store_header: usize) -> u64 {
    let wire = Sliver {
        axis: Axis::Primary,
        index: 0,
        symbol_size: 0,
        data: Vec::new(),
    }
    .wire_header()
    .len();
    (store_header + wire) as u64
}

/// The answers for `positions` of one sliver from its file and index, and the bytes read; `None`
/// when that cannot be done (no index, a parity position, a short file, a proof that fails), and
/// the caller reads the whole sliver instead.
pub fn answer_from_index(
    sliver_file: &Path,
    store_header: usize,
    md: &BlobMetadata,
    axis: Axis,
    pair: u16,
    positions: &[u16],
) -> Option<(Vec<RecoverySymbol>, u64)> {
    let shape = md.shape().ok()?;
    let n = shape.params.n();
    let s = shape.symbol_size;
    let k = axis.source_symbols(&shape);
    if !wants_index(&shape, axis) || positions.iter().any(|p| *p as usize >= k) {
        return None;
    }
    if pair as usize >= n {
        return None;
    }
    let (sliver_index, root) = match axis {
        Axis::Primary => (pair, md.primary_hash(pair as usize)?),
        Axis::Secondary => {
            let j = n - 1 - pair as usize;
            (j as u16, md.secondary_hash(j)?)
        }
    };
    let tshape = tree_shape(&shape);
    let index = TreeIndex::new(tshape);
    let file = File::open(sliver_file).ok()?;
    let tree = File::open(index_path(sliver_file)).ok()?;
    let base = data_offset(store_header);
    if file.metadata().ok()?.len() != base + (k * s) as u64
        || tree.metadata().ok()?.len() != index.len() as u64
    {
        return None;
    }
    let node = |at: u64| -> Option<[u8; 32]> {
        let mut h = [0u8; 32];
        tree.read_exact_at(&mut h, at).ok()?;
        Some(h)
    };
    let mut read = 0u64;
    let mut out = Vec::with_capacity(positions.len());
    for &pos in positions {
        let t = pos as usize;
        let mut data = vec![0u8; s];
        file.read_exact_at(&mut data, base + (t * s) as u64).ok()?;
        let siblings = index
            .sibling_offsets(t)
            .into_iter()
            .map(|o| o.map_or(Some([0u8; 32]), node))
            .collect::<Option<Vec<_>>>()?;
        let chunk = match tshape.packed() {
            true => Some(node(index.leaf_offset(t))?),
            false => None,
        };
        read += (s + 32 * (siblings.len() + usize::from(chunk.is_some()))) as u64;
        let proof = MerkleProof { chunk, siblings };
        // the index is a cache: what it gives must prove, or the whole sliver is read instead
        proof.verify(root, &data, t, tshape).ok()?;
        out.push(RecoverySymbol {
            proven_axis: axis,
            sliver_index,
            position: pos,
            data,
            proof,
        });
    }
    Some((out, read))
}
