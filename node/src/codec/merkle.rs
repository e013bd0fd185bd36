//! BLAKE3 Merkle trees of encoding type 2 (PROTOCOL.md §3).
//!
//! A tree commits to `m` symbols of `s` bytes. Symbols of at most 32 bytes are packed
//! `c = ⌊32/s⌋` to a 32-byte chunk and the chunk *is* the leaf (hashing a chunk would cost a
//! compression per leaf and buy nothing: a chunk is already 32 bytes). Larger symbols get one
//! keyed leaf hash. Every inner node is `keyed_hash(K_node, left ‖ right)`: exactly 64 bytes,
//! one BLAKE3 compression. The two keys keep leaves and inner nodes in separate domains, the job
//! type 1's prefix bytes did at the price of a second compression per node.

use rayon::prelude::*;

use super::hash_lanes;

/// A 32-byte BLAKE3 digest (or, for packed symbols, a 32-byte chunk).
pub type Hash = [u8; 32];

/// `blake3::derive_key("floe 2026-11 v2 merkle leaf", b"")`.
pub const K_LEAF: Hash = hex32("4c81353a12b87aa521b5804a49d4108d8192a4b30af33b66a13711c429c548a5");
/// `blake3::derive_key("floe 2026-11 v2 merkle node", b"")`.
pub const K_NODE: Hash = hex32("9dc0021f2abe18798961d2a83bfc34d06591e2d5fdd69f90428cf8bf577af8a0");
/// The key-derivation contexts of [`K_LEAF`] and [`K_NODE`] (checked by a test).
pub const LEAF_CONTEXT: &str = "floe 2026-11 v2 merkle leaf";
pub const NODE_CONTEXT: &str = "floe 2026-11 v2 merkle node";

/// The all-zero node that pads odd levels and pairs a single leaf.
pub const ZERO: Hash = [0u8; 32];

/// Bytes of a chunk of packed symbols.
pub const CHUNK: usize = 32;

const fn hex32(s: &str) -> Hash {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not a lower-case hex digit"),
    }
}

/// Leaf of one symbol of more than 32 bytes.
#[inline]
pub fn leaf_hash(symbol: &[u8]) -> Hash {
    *blake3::keyed_hash(&K_LEAF, symbol).as_bytes()
}

/// Inner node over two children: one compression.
#[inline]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(left);
    buf[32..].copy_from_slice(right);
    *blake3::keyed_hash(&K_NODE, &buf).as_bytes()
}

/// The shape of a tree over `m` symbols of `s` bytes: it follows from `(m, s)` alone, which is
/// what gives every proof a fixed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeShape {
    pub m: usize,
    pub s: usize,
}

impl TreeShape {
    pub fn new(m: usize, s: usize) -> Self {
        Self { m, s }
    }
    /// True when symbols are packed into chunks (`s ≤ 32`).
    pub fn packed(&self) -> bool {
        self.s <= CHUNK
    }
    /// Symbols per leaf: `⌊32/s⌋` when packed, else 1.
    pub fn per_leaf(&self) -> usize {
        if self.packed() {
            CHUNK / self.s.max(1)
        } else {
            1
        }
    }
    pub fn leaves(&self) -> usize {
        self.m.div_ceil(self.per_leaf())
    }
    /// Levels above the leaves: a single leaf is paired with the zero node, so at least one.
    pub fn depth(&self) -> usize {
        tree_depth(self.leaves())
    }
    /// Symbols held by leaf `t` (the last chunk may be partly filled).
    pub fn symbols_in_leaf(&self, t: usize) -> usize {
        let c = self.per_leaf();
        self.m.saturating_sub(t * c).min(c)
    }
}

/// Levels above `leaves` leaves (at least one: a single leaf is paired with the zero node).
pub fn tree_depth(leaves: usize) -> usize {
    let mut d = 1;
    let mut w = leaves.div_ceil(2);
    while w > 1 {
        w = w.div_ceil(2);
        d += 1;
    }
    d
}

/// Leaves over equal-sized symbols given as consecutive parts (each a whole number of symbols),
/// e.g. a sliver's source symbols and its parity, without joining them first.
pub fn leaves_of_parts(parts: &[&[u8]], s: usize) -> Vec<Hash> {
    let m: usize = parts.iter().map(|p| p.len() / s).sum();
    let shape = TreeShape::new(m, s);
    let mut out = vec![ZERO; shape.leaves()];
    if shape.packed() {
        pack_parts(parts, s, &mut out);
    } else {
        let mut at = 0;
        for p in parts {
            let k = p.len() / s;
            leaf_hashes_into(p, s, &mut out[at..at + k]);
            at += k;
        }
    }
    out
}

/// Leaves over `symbols` (a whole number of `s`-byte symbols).
pub fn leaves(symbols: &[u8], s: usize) -> Vec<Hash> {
    leaves_of_parts(&[symbols], s)
}

/// Keyed leaf hashes of symbols of more than 32 bytes, all lanes and all cores.
pub fn leaf_hashes_into(symbols: &[u8], s: usize, out: &mut [Hash]) {
    debug_assert!(s > CHUNK && symbols.len() == out.len() * s);
    /// Symbols per parallel task: enough lane groups to amortise the task.
    const PER_TASK: usize = 256;
    if out.len() <= PER_TASK {
        hash_lanes::keyed_hash_many(&K_LEAF, symbols, s, out);
    } else {
        out.par_chunks_mut(PER_TASK)
            .zip(symbols.par_chunks(PER_TASK * s))
            .for_each(|(o, d)| hash_lanes::keyed_hash_many(&K_LEAF, d, s, o));
    }
}

/// Pack the symbols of `parts` (in order) into 32-byte chunks; `out` is zeroed, one per chunk.
pub fn pack_parts(parts: &[&[u8]], s: usize, out: &mut [Hash]) {
    let c = CHUNK / s;
    let mut k = 0;
    for p in parts {
        // Whole chunks straight from one part when it is aligned to them (the common case).
        let mut syms = p.chunks_exact(s);
        while k % c != 0 {
            match syms.next() {
                Some(sym) => {
                    let o = (k % c) * s;
                    out[k / c][o..o + s].copy_from_slice(sym);
                    k += 1;
                }
                None => break,
            }
        }
        let rest = syms.remainder().len();
        let body = &p[p.len() - rest - syms.len() * s..p.len() - rest];
        let whole = body.len() / (c * s);
        // Fixed 32-byte loads masked down to the chunk's c·s bytes (no variable-length copy
        // per chunk), while 32 bytes remain readable.
        let mut mask = [0u8; CHUNK];
        mask[..c * s].fill(0xff);
        for (i, dst) in out[k / c..k / c + whole].iter_mut().enumerate() {
            let at = i * c * s;
            match body.get(at..at + CHUNK) {
                Some(src) => {
                    let src: &[u8; CHUNK] = src.try_into().expect("32 bytes");
                    for b in 0..CHUNK {
                        dst[b] = src[b] & mask[b];
                    }
                }
                None => dst[..c * s].copy_from_slice(&body[at..at + c * s]),
            }
        }
        k += whole * c;
        for sym in body[whole * c * s..].chunks_exact(s) {
            let o = (k % c) * s;
            out[k / c][o..o + s].copy_from_slice(sym);
            k += 1;
        }
    }
}

/// Nodes per parallel task when a level is wide enough to split.
const NODES_PER_TASK: usize = 2048;

/// The level above `level`: odd levels are padded with the zero node, and a single node is
/// paired with it (so the level above one leaf is its root).
pub fn parent_level(level: &[Hash]) -> Vec<Hash> {
    let mut out = vec![ZERO; level.len().div_ceil(2).max(1)];
    parent_level_into(level, &mut out);
    out
}

fn parent_level_into(level: &[Hash], out: &mut [Hash]) {
    let even = level.len() & !1;
    if even / 2 >= 4 * NODES_PER_TASK {
        out[..even / 2]
            .par_chunks_mut(NODES_PER_TASK)
            .zip(level[..even].par_chunks(2 * NODES_PER_TASK))
            .for_each(|(o, l)| hash_lanes::node_pairs(&K_NODE, l, o));
    } else {
        hash_lanes::node_pairs(&K_NODE, &level[..even], &mut out[..even / 2]);
    }
    if even < level.len() {
        out[even / 2] = node_hash(&level[even], &ZERO);
    }
}

/// Root over a leaf level, without keeping the tree. Reuses one buffer for every level.
pub fn root_of_leaves(leaves: &[Hash]) -> Hash {
    if leaves.len() <= 1 {
        return node_hash(leaves.first().unwrap_or(&ZERO), &ZERO);
    }
    let mut level = parent_level(leaves);
    while level.len() > 1 {
        level = parent_level(&level);
    }
    level[0]
}

/// Roots of the trees over every row of a row-major matrix of leaves (`rows × width`),
/// computed level by level over the whole matrix: an odd width is padded with a zero column
/// (which is what padding every row's odd level with the zero node is), so no pair straddles two
/// rows and every level is one long run of 64-byte nodes. Per-row trees would leave most lanes
/// idle in their narrow top levels.
pub fn row_roots(leaves: &[Hash], width: usize) -> Vec<Hash> {
    let rows = leaves.len() / width.max(1);
    // one level up, padding an odd width with a zero column first
    let step = |level: &[Hash], w: usize| -> (Vec<Hash>, usize) {
        let mut next = vec![ZERO; rows * w.div_ceil(2)];
        if w % 2 == 1 {
            let mut padded = vec![ZERO; rows * (w + 1)];
            for (dst, src) in padded.chunks_mut(w + 1).zip(level.chunks(w)) {
                dst[..w].copy_from_slice(src);
            }
            parent_level_into(&padded, &mut next);
        } else {
            parent_level_into(level, &mut next);
        }
        (next, w.div_ceil(2))
    };
    let (mut level, mut w) = step(leaves, width);
    while w > 1 {
        (level, w) = step(&level, w);
    }
    level
}

/// Roots of the trees over every column of a row-major matrix of leaves (`rows × width`),
/// computed level by level over whole rows (row `2r` against row `2r+1`), so columns are hashed
/// 16 side by side from contiguous memory with no transpose. Columns go in strips to all cores.
pub fn column_roots(leaves: &[Hash], width: usize) -> Vec<Hash> {
    const STRIP: usize = 64;
    let rows = leaves.len() / width;
    let mut roots = vec![ZERO; width];
    roots
        .par_chunks_mut(STRIP)
        .enumerate()
        .for_each(|(k, out)| {
            let j0 = k * STRIP;
            let w = out.len();
            if rows <= 1 {
                for (dj, o) in out.iter_mut().enumerate() {
                    *o = node_hash(leaves.get(j0 + dj).unwrap_or(&ZERO), &ZERO);
                }
                return;
            }
            // level 1 straight from the leaf matrix
            let mut h = rows.div_ceil(2);
            let mut level = vec![ZERO; h * w];
            for r in 0..h {
                let left = &leaves[2 * r * width + j0..][..w];
                let dst = &mut level[r * w..(r + 1) * w];
                if 2 * r + 1 < rows {
                    let right = &leaves[(2 * r + 1) * width + j0..][..w];
                    hash_lanes::node_rows(&K_NODE, left, right, dst);
                } else {
                    hash_lanes::node_rows(&K_NODE, left, &[ZERO; STRIP][..w], dst);
                }
            }
            // upper levels in place: row r of the next level overwrites row r ≤ 2r
            while h > 1 {
                let next = h.div_ceil(2);
                for r in 0..next {
                    let mut row = [ZERO; STRIP];
                    {
                        let left = &level[2 * r * w..(2 * r + 1) * w];
                        if 2 * r + 1 < h {
                            let right = &level[(2 * r + 1) * w..(2 * r + 2) * w];
                            hash_lanes::node_rows(&K_NODE, left, right, &mut row[..w]);
                        } else {
                            hash_lanes::node_rows(
                                &K_NODE,
                                left,
                                &[ZERO; STRIP][..w],
                                &mut row[..w],
                            );
                        }
                    }
                    level[r * w..(r + 1) * w].copy_from_slice(&row[..w]);
                }
                h = next;
            }
            out.copy_from_slice(&level[..w]);
        });
    roots
}

/// A whole Merkle tree, kept so that proofs for many symbols can be produced.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    shape: TreeShape,
    /// levels[0] = the leaves, last = [root].
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// The tree over `symbols` (`m` symbols of `s` bytes).
    pub fn new(symbols: &[u8], s: usize) -> Self {
        Self::from_leaves(TreeShape::new(symbols.len() / s, s), leaves(symbols, s))
    }
    /// The tree over an already computed leaf level of a tree of `shape`.
    pub fn from_leaves(shape: TreeShape, leaves: Vec<Hash>) -> Self {
        debug_assert_eq!(leaves.len(), shape.leaves());
        let mut levels = vec![leaves];
        loop {
            let next = parent_level(levels.last().expect("non-empty"));
            let done = next.len() == 1;
            levels.push(next);
            if done {
                break;
            }
        }
        Self { shape, levels }
    }
    pub fn shape(&self) -> TreeShape {
        self.shape
    }
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(ZERO)
    }
    /// Proof for symbol `t`, or `None` when out of range.
    pub fn proof(&self, t: usize) -> Option<MerkleProof> {
        if t >= self.shape.m {
            return None;
        }
        let mut i = t / self.shape.per_leaf();
        let chunk = self.shape.packed().then(|| self.levels[0][i]);
        let mut siblings = Vec::with_capacity(self.levels.len() - 1);
        for level in &self.levels[..self.levels.len() - 1] {
            siblings.push(level.get(i ^ 1).copied().unwrap_or(ZERO));
            i /= 2;
        }
        Some(MerkleProof { chunk, siblings })
    }
}

impl MerkleTree {
    /// Every level below the root, leaves first, 32 bytes per node: what a node stores beside a
    /// large sliver so that proving one symbol reads `depth` nodes of it (see
    /// [`TreeIndex::sibling_offsets`]) instead of the whole sliver.
    pub fn index_bytes(&self) -> Vec<u8> {
        self.levels[..self.levels.len() - 1]
            .iter()
            .flat_map(|l| l.iter().flatten().copied())
            .collect()
    }
}

/// Where the nodes of a tree of a given shape sit in its [`MerkleTree::index_bytes`].
#[derive(Debug, Clone, Copy)]
pub struct TreeIndex {
    shape: TreeShape,
}

impl TreeIndex {
    pub fn new(shape: TreeShape) -> Self {
        Self { shape }
    }

    /// Node counts of the stored levels, leaves first.
    fn level_sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.shape.leaves()];
        while sizes.len() < self.shape.depth() {
            let last = *sizes.last().expect("non-empty");
            sizes.push(last.div_ceil(2));
        }
        sizes
    }

    /// Bytes of the whole index.
    pub fn len(&self) -> usize {
        32 * self.level_sizes().iter().sum::<usize>()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Byte offset of the leaf holding symbol `t` (its chunk when packed).
    pub fn leaf_offset(&self, t: usize) -> u64 {
        32 * (t / self.shape.per_leaf()) as u64
    }

    /// Byte offsets of the siblings of symbol `t`'s path, bottom-up; `None` where the sibling
    /// is the zero node (past the end of an odd level).
    pub fn sibling_offsets(&self, t: usize) -> Vec<Option<u64>> {
        let mut i = t / self.shape.per_leaf();
        let mut base = 0usize;
        self.level_sizes()
            .into_iter()
            .map(|size| {
                let sib = i ^ 1;
                let at = (sib < size).then_some(32 * (base + sib) as u64);
                base += size;
                i /= 2;
                at
            })
            .collect()
    }
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("symbol index {index} out of range for {m} symbols")]
    IndexOutOfRange { index: usize, m: usize },
    #[error("symbol of {got} bytes, expected {expected}")]
    SymbolSize { got: usize, expected: usize },
    #[error("proof has {got} siblings, a tree of this shape needs {expected}")]
    Length { got: usize, expected: usize },
    #[error("a proof of a symbol of {s} bytes must {} a chunk", if *.expected { "carry" } else { "not carry" })]
    ChunkPresence { s: usize, expected: bool },
    #[error("the symbol is not where the chunk holds it")]
    SymbolNotInChunk,
    #[error("the padding of the chunk is not zero")]
    NonZeroPadding,
    #[error("the proof does not lead to the root")]
    RootMismatch,
}

/// A proof of one symbol: its chunk when symbols are packed, and the siblings bottom-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleProof {
    /// The whole 32-byte leaf holding the symbol (present exactly when `s ≤ 32`).
    pub chunk: Option<Hash>,
    pub siblings: Vec<Hash>,
}

impl MerkleProof {
    /// Bytes of a proof for a tree of `shape` on the wire (chunk and siblings; counts aside).
    pub fn len_for(shape: TreeShape) -> usize {
        32 * (shape.depth() + usize::from(shape.packed()))
    }

    /// Check that `symbol` is symbol `t` of the tree of `shape` with `root`.
    pub fn verify(
        &self,
        root: &Hash,
        symbol: &[u8],
        t: usize,
        shape: TreeShape,
    ) -> Result<(), ProofError> {
        if t >= shape.m {
            return Err(ProofError::IndexOutOfRange {
                index: t,
                m: shape.m,
            });
        }
        if symbol.len() != shape.s {
            return Err(ProofError::SymbolSize {
                got: symbol.len(),
                expected: shape.s,
            });
        }
        if self.siblings.len() != shape.depth() {
            return Err(ProofError::Length {
                got: self.siblings.len(),
                expected: shape.depth(),
            });
        }
        let c = shape.per_leaf();
        let leaf = match (&self.chunk, shape.packed()) {
            (Some(chunk), true) => {
                let s = shape.s;
                let at = (t % c) * s;
                if &chunk[at..at + s] != symbol {
                    return Err(ProofError::SymbolNotInChunk);
                }
                let used = shape.symbols_in_leaf(t / c) * s;
                if chunk[used..].iter().any(|b| *b != 0) {
                    return Err(ProofError::NonZeroPadding);
                }
                *chunk
            }
            (None, false) => leaf_hash(symbol),
            (_, expected) => {
                return Err(ProofError::ChunkPresence {
                    s: shape.s,
                    expected,
                })
            }
        };
        let mut h = leaf;
        let mut i = t / c;
        for sib in &self.siblings {
            h = if i.is_multiple_of(2) {
                node_hash(&h, sib)
            } else {
                node_hash(sib, &h)
            };
            i /= 2;
        }
        if &h == root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_derived_from_their_contexts() {
        assert_eq!(blake3::derive_key(LEAF_CONTEXT, b""), K_LEAF);
        assert_eq!(blake3::derive_key(NODE_CONTEXT, b""), K_NODE);
    }

    /// The tree as PROTOCOL.md §3 words it, one hash at a time.
    fn naive_root(symbols: &[u8], s: usize) -> Hash {
        let mut level: Vec<Hash> = if s <= 32 {
            let c = 32 / s;
            symbols
                .chunks(c * s)
                .map(|ch| {
                    let mut l = [0u8; 32];
                    l[..ch.len()].copy_from_slice(ch);
                    l
                })
                .collect()
        } else {
            symbols.chunks(s).map(leaf_hash).collect()
        };
        if level.len() == 1 {
            level.push(ZERO);
        }
        while level.len() > 1 {
            if level.len() % 2 == 1 {
                level.push(ZERO);
            }
            level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        level[0]
    }

    #[test]
    fn roots_and_proofs_for_every_shape() {
        for s in (2..=70).step_by(2) {
            for m in [1usize, 2, 3, 4, 5, 7, 15, 16, 17, 33, 100] {
                let data: Vec<u8> = (0..m * s).map(|i| (i * 7 + s) as u8 | 1).collect();
                let tree = MerkleTree::new(&data, s);
                let shape = TreeShape::new(m, s);
                assert_eq!(tree.root(), naive_root(&data, s), "s={s} m={m}");
                assert_eq!(root_of_leaves(&leaves(&data, s)), tree.root());
                for t in 0..m {
                    let p = tree.proof(t).unwrap();
                    assert_eq!(p.siblings.len(), shape.depth());
                    let sym = &data[t * s..(t + 1) * s];
                    assert_eq!(p.verify(&tree.root(), sym, t, shape), Ok(()));
                    let mut bad = p.clone();
                    bad.siblings[0][5] ^= 1;
                    assert!(bad.verify(&tree.root(), sym, t, shape).is_err());
                }
                assert!(tree.proof(m).is_none());
            }
        }
    }

    #[test]
    fn leaves_of_parts_equal_leaves_of_the_whole() {
        for s in [2usize, 4, 6, 10, 14, 30, 32, 34, 64] {
            let data: Vec<u8> = (0..40 * s).map(|i| (i * 13) as u8).collect();
            for split in [0usize, 1, 3, 5, 16, 39, 40] {
                let (a, b) = data.split_at(split * s);
                assert_eq!(leaves_of_parts(&[a, b], s), leaves(&data, s), "s={s}");
            }
        }
    }

    #[test]
    fn row_roots_equal_roots_of_rows() {
        for (rows, width) in [
            (1usize, 1usize),
            (3, 1),
            (2, 5),
            (7, 70),
            (13, 130),
            (9, 200),
        ] {
            let m: Vec<Hash> = (0..rows * width)
                .map(|i| blake3::hash(&i.to_le_bytes()).into())
                .collect();
            let roots = row_roots(&m, width);
            for r in 0..rows {
                let row = &m[r * width..(r + 1) * width];
                assert_eq!(roots[r], root_of_leaves(row), "rows={rows} r={r}");
            }
        }
    }

    #[test]
    fn column_roots_equal_roots_of_columns() {
        for (rows, width) in [(1usize, 3usize), (2, 5), (7, 70), (13, 130), (200, 9)] {
            let m: Vec<Hash> = (0..rows * width)
                .map(|i| blake3::hash(&i.to_le_bytes()).into())
                .collect();
            let roots = column_roots(&m, width);
            for j in 0..width {
                let col: Vec<Hash> = (0..rows).map(|r| m[r * width + j]).collect();
                assert_eq!(roots[j], root_of_leaves(&col), "rows={rows} j={j}");
            }
        }
    }

    /// Proofs assembled from the stored index equal the tree's own, for every symbol of trees
    /// of every shape (packed and hashed, odd levels, a single leaf).
    #[test]
    fn proofs_read_from_the_index_equal_the_trees() {
        for s in [2usize, 6, 32, 33, 100] {
            for m in [1usize, 2, 3, 5, 16, 17, 31, 100, 333] {
                let symbols: Vec<u8> = (0..m * s).map(|i| (i * 7 + s) as u8).collect();
                let tree = MerkleTree::new(&symbols, s);
                let bytes = tree.index_bytes();
                let index = TreeIndex::new(tree.shape());
                assert_eq!(bytes.len(), index.len(), "s={s} m={m}");
                let node =
                    |at: u64| -> Hash { bytes[at as usize..at as usize + 32].try_into().unwrap() };
                for t in 0..m {
                    let siblings = index
                        .sibling_offsets(t)
                        .into_iter()
                        .map(|o| o.map_or(ZERO, node))
                        .collect();
                    let chunk = tree.shape().packed().then(|| node(index.leaf_offset(t)));
                    let proof = MerkleProof { chunk, siblings };
                    assert_eq!(Some(&proof), tree.proof(t).as_ref(), "s={s} m={m} t={t}");
                    proof
                        .verify(&tree.root(), &symbols[t * s..(t + 1) * s], t, tree.shape())
                        .unwrap();
                }
            }
        }
    }

    #[test]
    fn single_leaf_is_paired_with_the_zero_node() {
        let data = [1u8, 2, 3, 4];
        let mut chunk = ZERO;
        chunk[..4].copy_from_slice(&data);
        assert_eq!(MerkleTree::new(&data, 2).root(), node_hash(&chunk, &ZERO));
        assert_eq!(TreeShape::new(2, 2).depth(), 1);
    }
}
