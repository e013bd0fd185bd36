//! BLAKE3 Merkle trees (PROTOCOL.md §3): leaf `H(0x00 ‖ x)`, inner `H(0x01 ‖ l ‖ r)`, odd levels
//! padded with the all-zero node, proofs as bottom-up sibling lists.

use rayon::prelude::*;

use super::hash_lanes::{hash_many, LANES};

/// A 32-byte BLAKE3 digest.
pub type Hash = [u8; 32];

const LEAF: u8 = 0x00;
const INNER: u8 = 0x01;
const EMPTY: Hash = [0u8; 32];

/// Hash of a leaf's bytes.
#[inline]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF]);
    h.update(data);
    *h.finalize().as_bytes()
}

/// Hash of an inner node.
#[inline]
pub fn inner_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = INNER;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    *blake3::hash(&buf).as_bytes()
}

/// Symbols hashed per parallel task: enough lane groups to amortise the task.
const PER_TASK: usize = 32 * LANES;

/// Leaf hashes of the equal-sized symbols in `data` (8 at a time per core, all cores).
pub fn leaf_hashes(data: &[u8], symbol_size: usize) -> Vec<Hash> {
    let s = symbol_size.max(1);
    let mut out = vec![EMPTY; data.len() / s];
    out.par_chunks_mut(PER_TASK)
        .zip(data.par_chunks(PER_TASK * s))
        .for_each(|(o, d)| hash_many(&[LEAF], d, s, o));
    out
}

/// The level above `level`, padding an odd level with the zero node.
fn parent_level(level: &[Hash]) -> Vec<Hash> {
    let mut out = vec![EMPTY; level.len().div_ceil(2)];
    let even = level.len() & !1;
    let flat = level[..even].as_flattened();
    if out.len() >= 4 * PER_TASK {
        out.par_chunks_mut(PER_TASK)
            .zip(flat.par_chunks(PER_TASK * 64))
            .for_each(|(o, d)| hash_many(&[INNER], d, 64, &mut o[..d.len() / 64]));
    } else {
        hash_many(&[INNER], flat, 64, &mut out[..even / 2]);
    }
    if even < level.len() {
        out[even / 2] = inner_hash(&level[even], &EMPTY);
    }
    out
}

/// Root over already-hashed leaves, without keeping the tree.
pub fn root_of_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY,
        1 => leaves[0],
        _ => {
            let mut level = parent_level(leaves);
            while level.len() > 1 {
                level = parent_level(&level);
            }
            level[0]
        }
    }
}

/// A whole Merkle tree, kept so that proofs for many leaves can be produced.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// levels[0] = leaf hashes, last = [root].
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().map_or(0, Vec::len) > 1 {
            let next = parent_level(levels.last().expect("non-empty"));
            levels.push(next);
        }
        Self { levels }
    }
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(EMPTY)
    }
    pub fn leaf_count(&self) -> usize {
        self.levels[0].len()
    }
    /// Proof for leaf `index`, or `None` when out of range.
    pub fn proof(&self, index: usize) -> Option<MerkleProof> {
        if index >= self.leaf_count() {
            return None;
        }
        let mut i = index;
        let mut siblings = Vec::with_capacity(self.levels.len());
        for level in &self.levels[..self.levels.len() - 1] {
            siblings.push(level.get(i ^ 1).copied().unwrap_or(EMPTY));
            i /= 2;
        }
        Some(MerkleProof { siblings })
    }
}

/// The sibling hashes from a leaf up to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleProof {
    pub siblings: Vec<Hash>,
}

impl MerkleProof {
    /// True when `leaf` is the leaf at `index` of a tree with `leaf_count` leaves and `root`.
    pub fn verify(&self, root: &Hash, leaf: &Hash, index: usize, leaf_count: usize) -> bool {
        if index >= leaf_count || self.siblings.len() != tree_depth(leaf_count) {
            return false;
        }
        let mut h = *leaf;
        let mut i = index;
        for sib in &self.siblings {
            h = if i.is_multiple_of(2) {
                inner_hash(&h, sib)
            } else {
                inner_hash(sib, &h)
            };
            i /= 2;
        }
        &h == root
    }
}

/// Number of levels above the leaves.
pub fn tree_depth(leaf_count: usize) -> usize {
    let mut d = 0;
    let mut w = leaf_count;
    while w > 1 {
        w = w.div_ceil(2);
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_and_reject() {
        for n in 1..40usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8; 3])).collect();
            let tree = MerkleTree::from_leaf_hashes(leaves.clone());
            assert_eq!(tree.root(), root_of_leaves(&leaves));
            for i in 0..n {
                let p = tree.proof(i).unwrap();
                assert!(p.verify(&tree.root(), &leaves[i], i, n));
                assert!(!p.verify(&tree.root(), &leaves[(i + 1) % n], i, n) || n == 1);
                if !p.siblings.is_empty() {
                    let mut bad = p.clone();
                    bad.siblings[0][5] ^= 1;
                    assert!(!bad.verify(&tree.root(), &leaves[i], i, n));
                }
            }
            assert!(tree.proof(n).is_none());
        }
    }

    #[test]
    fn odd_levels_pad_with_zero_node() {
        let l: Vec<Hash> = (0..3).map(|i| leaf_hash(&[i])).collect();
        let expect = inner_hash(&inner_hash(&l[0], &l[1]), &inner_hash(&l[2], &[0; 32]));
        assert_eq!(root_of_leaves(&l), expect);
    }
}
