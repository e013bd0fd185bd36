//! Encoding a blob into metadata, a blob ID and sliver pairs (PROTOCOL.md §2, §3).
//!
//! The expanded `n × n` matrix is four blocks:
//! ```text
//!            k_s columns        f columns
//!  k_p rows  D  (the blob)      Q = rows of D extended (secondary code)
//!  2f rows   P = columns of D   R = columns of Q extended (primary code)
//!              extended (primary code)
//! ```
//! Primary sliver i is row i of `[D; P]`, secondary sliver j is column j of `[D | Q]`.
//! `R` is only ever needed for the sliver hashes, so it is hashed batch by batch and never
//! kept. The two ways to get `R` agree because both codes are linear and systematic; this one is
//! the cheaper (it extends `f` columns instead of `2f` rows).

use rayon::prelude::*;

use super::merkle::{leaf_hashes, root_of_leaves, Hash};
use super::metadata::{BlobId, BlobMetadata, ENCODING_RS2};
use super::params::{EncodingParams, SymbolShape};
use super::rs;
use super::sliver::{Axis, Sliver, SliverPair};
use super::CodecError;

/// An encoded blob. Slivers are produced on demand from the compact form (D, P and Q), so the
/// encoder holds about 3.5× the blob instead of every sliver (≈ 4.5×) plus the blob.
pub struct EncodedBlob {
    shape: SymbolShape,
    metadata: BlobMetadata,
    blob_id: BlobId,
    /// D: `k_p × k_s` symbols, row-major (the zero-padded blob).
    data: Vec<u8>,
    /// P: `2f × k_s` symbols, row-major.
    parity_rows: Vec<u8>,
    /// Q: `k_p × f` symbols, row-major.
    parity_cols: Vec<u8>,
}

/// Encode `blob` for a cluster of `params.n()` shards.
pub fn encode(blob: &[u8], params: EncodingParams) -> Result<EncodedBlob, CodecError> {
    let Extended {
        shape,
        data,
        parity_rows,
        parity_cols,
    } = extend_source(blob, params)?;
    let (n, f, kp, ks, s) = (
        params.n(),
        params.f(),
        params.k_primary(),
        params.k_secondary(),
        shape.symbol_size,
    );

    // Leaf hashes of the whole expanded matrix, n × n, row-major.
    let mut leaves = vec![[0u8; 32]; n * n];
    leaves.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let (left, right) = row.split_at_mut(ks);
        if i < kp {
            left.copy_from_slice(&leaf_hashes(&data[i * ks * s..(i + 1) * ks * s], s));
            right.copy_from_slice(&leaf_hashes(&parity_cols[i * f * s..(i + 1) * f * s], s));
        } else {
            let r = i - kp;
            left.copy_from_slice(&leaf_hashes(&parity_rows[r * ks * s..(r + 1) * ks * s], s));
        }
    });
    let q_rows: Vec<&[u8]> = parity_cols.chunks(f * s).collect();
    let r_hashes =
        rs::map_column_parity(&q_rows, s, 2 * f, |c0, j, row| (c0, j, leaf_hashes(row, s)))?;
    for (c0, j, hashes) in r_hashes.into_iter().flatten() {
        let at = (kp + j) * n + ks + c0;
        leaves[at..at + hashes.len()].copy_from_slice(&hashes);
    }

    let primary: Vec<Hash> = leaves.par_chunks(n).map(root_of_leaves).collect();
    let secondary: Vec<Hash> = transpose(&leaves, n)
        .par_chunks(n)
        .map(root_of_leaves)
        .collect();
    let pair_hashes = (0..n).map(|p| (primary[p], secondary[n - 1 - p])).collect();
    let metadata = BlobMetadata {
        encoding_type: ENCODING_RS2,
        len: blob.len() as u64,
        pair_hashes,
    };
    let blob_id = metadata.blob_id();
    Ok(EncodedBlob {
        shape,
        metadata,
        blob_id,
        data,
        parity_rows,
        parity_cols,
    })
}

/// Transpose an `n × n` matrix of hashes in column strips, so that every read touches a few
/// contiguous cache lines instead of one line per page.
fn transpose(m: &[Hash], n: usize) -> Vec<Hash> {
    const STRIP: usize = 16;
    let mut t = vec![[0u8; 32]; n * n];
    t.par_chunks_mut(n * STRIP)
        .enumerate()
        .for_each(|(strip, out)| {
            let j0 = strip * STRIP;
            let width = out.len() / n;
            for i in 0..n {
                let row = &m[i * n + j0..i * n + j0 + width];
                for (dj, h) in row.iter().enumerate() {
                    out[dj * n + i] = *h;
                }
            }
        });
    t
}

impl EncodedBlob {
    pub fn shape(&self) -> &SymbolShape {
        &self.shape
    }
    pub fn metadata(&self) -> &BlobMetadata {
        &self.metadata
    }
    pub fn blob_id(&self) -> BlobId {
        self.blob_id
    }
    pub fn n(&self) -> usize {
        self.shape.params.n()
    }
    /// Primary sliver `i` (row i), as a borrowed slice of the encoder's matrices.
    pub fn primary_data(&self, i: usize) -> &[u8] {
        let p = &self.shape.params;
        let row = p.k_secondary() * self.shape.symbol_size;
        if i < p.k_primary() {
            &self.data[i * row..(i + 1) * row]
        } else {
            let r = i - p.k_primary();
            &self.parity_rows[r * row..(r + 1) * row]
        }
    }
    pub fn primary_sliver(&self, i: usize) -> Sliver {
        self.sliver(Axis::Primary, i, self.primary_data(i).to_vec())
    }
    /// Secondary sliver `j` (column j of `[D | Q]`), gathered.
    pub fn secondary_sliver(&self, j: usize) -> Sliver {
        let p = &self.shape.params;
        let s = self.shape.symbol_size;
        let (src, width, col) = if j < p.k_secondary() {
            (&self.data, p.k_secondary(), j)
        } else {
            (&self.parity_cols, p.f(), j - p.k_secondary())
        };
        let mut out = Vec::with_capacity(p.k_primary() * s);
        for r in 0..p.k_primary() {
            let at = (r * width + col) * s;
            out.extend_from_slice(&src[at..at + s]);
        }
        self.sliver(Axis::Secondary, j, out)
    }
    fn sliver(&self, axis: Axis, index: usize, data: Vec<u8>) -> Sliver {
        Sliver {
            axis,
            index: index as u16,
            symbol_size: self.shape.symbol_size as u16,
            data,
        }
    }
    /// Sliver pair `p`: primary p and secondary n−1−p.
    pub fn pair(&self, p: usize) -> SliverPair {
        SliverPair {
            index: p as u16,
            primary: self.primary_sliver(p),
            secondary: self.secondary_sliver(self.n() - 1 - p),
        }
    }
    /// The shard that stores pair `p` of this blob.
    pub fn shard_of_pair(&self, p: usize) -> usize {
        self.shape
            .params
            .shard_for_pair(p, self.blob_id.mod_n(self.n()))
    }
    /// All pairs, in pair order.
    pub fn pairs(&self) -> impl Iterator<Item = SliverPair> + '_ {
        (0..self.n()).map(|p| self.pair(p))
    }
}

/// D (the padded blob), P (its columns extended) and Q (its rows extended).
struct Extended {
    shape: SymbolShape,
    data: Vec<u8>,
    parity_rows: Vec<u8>,
    parity_cols: Vec<u8>,
}

fn extend_source(blob: &[u8], params: EncodingParams) -> Result<Extended, CodecError> {
    let shape = params.symbol_shape(blob.len() as u64)?;
    let (f, kp, ks, s) = (
        params.f(),
        params.k_primary(),
        params.k_secondary(),
        shape.symbol_size,
    );
    let mut data = vec![0u8; shape.padded_len()];
    data[..blob.len()].copy_from_slice(blob);
    let d_rows: Vec<&[u8]> = data.chunks(ks * s).collect();
    let mut parity_rows = vec![0u8; 2 * f * ks * s];
    rs::extend_columns(&d_rows, s, 2 * f, &mut parity_rows)?;
    let mut parity_cols = vec![0u8; kp * f * s];
    rs::extend_rows(&data, ks, s, f, &mut parity_cols)?;
    Ok(Extended {
        shape,
        data,
        parity_rows,
        parity_cols,
    })
}

/// The bare Reed–Solomon work of [`encode`] on the same matrix (no hashing, no slivers): the
/// floor that the benchmark compares the full encode against.
#[doc(hidden)]
pub fn reed_solomon_floor(blob: &[u8], params: EncodingParams) -> Result<usize, CodecError> {
    let Extended {
        shape,
        parity_rows,
        parity_cols,
        ..
    } = extend_source(blob, params)?;
    let (f, s) = (params.f(), shape.symbol_size);
    let q_rows: Vec<&[u8]> = parity_cols.chunks(f * s).collect();
    let r = rs::map_column_parity(&q_rows, s, 2 * f, |_, _, row| row[0] as usize)?;
    Ok(r.into_iter().flatten().sum::<usize>() + parity_rows[0] as usize)
}
