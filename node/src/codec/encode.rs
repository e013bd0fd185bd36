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
//! `R` is only ever needed for the sliver hashes. The two ways to get `R` agree because both
//! codes are linear and systematic; this one is the cheaper (it extends `f` columns instead of
//! `2f` rows).
//!
//! Sliver hashes (type 2, PROTOCOL.md §3): with symbols of more than 32 bytes every symbol's
//! leaf hash is shared by its row tree and its column tree, so the `n × n` leaf matrix is hashed
//! once (`R` batch by batch, never kept) and reduced along rows and along columns. With symbols
//! of at most 32 bytes leaves are packed chunks, which differ between a row and a column, so
//! the encoder packs a row-leaf and a column-leaf matrix (small: such blobs are at most
//! `32·k_p·k_s` bytes) and reduces each.

use rayon::prelude::*;

use super::merkle::{
    column_roots, leaf_hashes_into, pack_parts, row_roots, Hash, CHUNK, K_LEAF, ZERO,
};
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
    let m = Matrices {
        params,
        s: shape.symbol_size,
        data: &data,
        parity_rows: &parity_rows,
        parity_cols: &parity_cols,
    };
    let (primary, secondary) = if shape.symbol_size <= CHUNK {
        m.packed_roots()?
    } else {
        m.hashed_roots()?
    };
    let metadata = metadata_from_roots(blob.len() as u64, &primary, &secondary);
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

/// The metadata of a blob of `len` bytes from its sliver roots.
pub(super) fn metadata_from_roots(len: u64, primary: &[Hash], secondary: &[Hash]) -> BlobMetadata {
    let n = primary.len();
    BlobMetadata {
        encoding_type: ENCODING_RS2,
        len,
        pair_hashes: (0..n).map(|p| (primary[p], secondary[n - 1 - p])).collect(),
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

/// The four blocks of the expanded matrix, as the encoder holds them.
struct Matrices<'a> {
    params: EncodingParams,
    s: usize,
    data: &'a [u8],
    parity_rows: &'a [u8],
    parity_cols: &'a [u8],
}

impl Matrices<'_> {
    /// Row `i` of `[D | Q]` or `[P | R]` as its left (`k_s` symbols) and right (`f`) parts.
    fn row<'b>(&'b self, i: usize, r_block: &'b [u8]) -> [&'b [u8]; 2] {
        let (kp, ks, f, s) = (
            self.params.k_primary(),
            self.params.k_secondary(),
            self.params.f(),
            self.s,
        );
        if i < kp {
            [
                &self.data[i * ks * s..(i + 1) * ks * s],
                &self.parity_cols[i * f * s..(i + 1) * f * s],
            ]
        } else {
            let r = i - kp;
            [
                &self.parity_rows[r * ks * s..(r + 1) * ks * s],
                &r_block[r * f * s..(r + 1) * f * s],
            ]
        }
    }

    /// Sliver hashes for `s > 32`: one keyed leaf hash per symbol of the expanded matrix,
    /// reduced along rows (primary) and columns (secondary).
    fn hashed_roots(&self) -> Result<(Vec<Hash>, Vec<Hash>), CodecError> {
        let (n, f, kp, ks, s) = (
            self.params.n(),
            self.params.f(),
            self.params.k_primary(),
            self.params.k_secondary(),
            self.s,
        );
        let mut leaves = leaf_matrix(n);
        hash_rows_into(&mut leaves, n, 0, 0, ks, self.data, s);
        hash_rows_into(&mut leaves, n, 0, ks, f, self.parity_cols, s);
        hash_rows_into(&mut leaves, n, kp, 0, ks, self.parity_rows, s);
        let roots = finish_hashed_roots(&mut leaves, self.parity_cols, n, kp, ks, f, s);
        // kept for the next encode: this path serves blobs below the streaming threshold,
        // where a 32 MB matrix is a large share of the work
        recycle_leaf_matrix(leaves);
        roots
    }

    /// Sliver hashes for `s ≤ 32`: chunks of a row's symbols are its tree's leaves, chunks of
    /// `c` vertically adjacent symbols are a column tree's leaves.
    fn packed_roots(&self) -> Result<(Vec<Hash>, Vec<Hash>), CodecError> {
        let (n, f, s) = (self.params.n(), self.params.f(), self.s);
        let c = CHUNK / s;
        let mut r_block = vec![0u8; 2 * f * f * s];
        let q_rows: Vec<&[u8]> = self.parity_cols.chunks(f * s).collect();
        rs::extend_columns(&q_rows, s, 2 * f, &mut r_block)?;
        // row trees 16 rows at a time: full lane groups, and the block stays in cache
        let width = n.div_ceil(c);
        let primary: Vec<Hash> = (0..n)
            .step_by(ROW_BLOCK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .flat_map_iter(|r0| {
                let r1 = (r0 + ROW_BLOCK).min(n);
                let mut block = vec![ZERO; (r1 - r0) * width];
                for (k, out) in block.chunks_mut(width).enumerate() {
                    pack_parts(&self.row(r0 + k, &r_block), s, out);
                }
                row_roots(&block, width)
            })
            .collect();
        // column leaves: chunk row T holds rows T·c … T·c+c−1 of every column
        let chunk_rows = n.div_ceil(c);
        let mut col_leaves = vec![ZERO; chunk_rows * n];
        let ks = self.params.k_secondary();
        col_leaves
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(t, out)| {
                for q in 0..c.min(n - t * c) {
                    let [left, right] = self.row(t * c + q, &r_block);
                    let (lo, hi) = out.split_at_mut(ks);
                    scatter(left, s, lo, q * s);
                    scatter(right, s, hi, q * s);
                }
            });
        let secondary = column_roots(&col_leaves, n);
        Ok((primary, secondary))
    }
}

/// Rows of the leaf matrix reduced together per [`ROW_BLOCK`] rows.
const ROW_BLOCK: usize = 16;

/// Roots of the rows of the `n`-wide leaf matrix, [`ROW_BLOCK`] rows at a time (a block's
/// levels stay in cache; whole-matrix levels would stream through memory).
/// The last leaves of a hashed (`s > 32`) leaf matrix — R, the columns of Q extended, hashed
/// batch by batch straight into the matrix, never held whole — then the row (primary) and
/// column (secondary) sliver roots. Shared by the full encoder and the metadata-only one.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish_hashed_roots(
    leaves: &mut [Hash],
    q: &[u8],
    n: usize,
    kp: usize,
    ks: usize,
    f: usize,
    s: usize,
) -> Result<(Vec<Hash>, Vec<Hash>), CodecError> {
    let q_rows: Vec<&[u8]> = q.chunks(f * s).collect();
    {
        // each batch's hashes go into a per-thread buffer (reused: no page faults per batch)
        // and straight into their columns of the matrix
        let shared = std::sync::Mutex::new(&mut *leaves);
        rs::map_column_parity_batches(&q_rows, s, 2 * f, |c0, w, rows| {
            HASHES.with(|cell| {
                let mut h = std::mem::take(&mut *cell.borrow_mut());
                h.resize(rows.len() / s, ZERO);
                leaf_hashes_into(rows, s, &mut h);
                let mut m = shared.lock().unwrap_or_else(|p| p.into_inner());
                place_leaves(&mut m, n, kp, ks + c0, w, &h);
                drop(m);
                *cell.borrow_mut() = h;
            })
        })?;
    }
    Ok((row_roots_blocked(leaves, n), column_roots(leaves, n)))
}

thread_local! {
    static HASHES: std::cell::RefCell<Vec<Hash>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn row_roots_blocked(leaves: &[Hash], n: usize) -> Vec<Hash> {
    leaves
        .par_chunks(ROW_BLOCK * n)
        .flat_map_iter(|block| row_roots(block, n))
        .collect()
}

/// Keyed leaf hashes of every symbol of a block, in one run: lane groups stay full however
/// narrow the block's rows are.
pub(super) fn hash_block(symbols: &[u8], s: usize) -> Vec<Hash> {
    let mut h = vec![ZERO; symbols.len() / s];
    leaf_hashes_into(symbols, s, &mut h);
    h
}

/// The largest leaf matrix kept for the next encode: n = 1000's (32 MB).
const SPARE_MAX: usize = 1000 * 1000;

/// One leaf matrix kept between encodes of this process (see [`leaf_matrix`]).
static SPARE: std::sync::Mutex<Vec<Hash>> = std::sync::Mutex::new(Vec::new());

/// An `n × n` leaf matrix. Every entry is written before it is read (`D`, `Q`, `P` and `R`
/// cover the matrix), so its contents are unspecified. The matrix of the previous encode is
/// reused when it is large enough: a fresh one costs its page faults and the kernel's zeroing,
/// ~10 % of a 16 MiB encode at n = 1000 (`perf`), which a client uploading many blobs then
/// pays once. A fresh one is put on transparent huge pages where the kernel allows (Linux, THP
/// `always` or `madvise`): 32 MB in 2 MiB pages is 16 faults where 4 KiB pages take 8,192.
pub(super) fn leaf_matrix(n: usize) -> Vec<Hash> {
    let len = n * n;
    let spare = std::mem::take(&mut *SPARE.lock().unwrap_or_else(|p| p.into_inner()));
    if spare.len() >= len {
        let mut v = spare;
        v.truncate(len);
        return v;
    }
    drop(spare);
    let mut v: Vec<Hash> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_mut_ptr() as usize;
        let end = start + len * std::mem::size_of::<Hash>();
        let (a, b) = (start.div_ceil(HUGE) * HUGE, end / HUGE * HUGE);
        if b > a {
            // SAFETY: [a, b) lies inside this vector's allocation, untouched so far; advice
            // changes no contents, and a refusal (e.g. THP off) only leaves normal pages.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    v.resize(len, ZERO);
    v
}

/// Drop the leaf matrix kept for the next encode (≤ 32 MB): for a process that is done
/// encoding, and for measurements of an encode's peak memory (which must count the matrix).
pub fn release_spare_buffers() {
    drop(std::mem::take(
        &mut *SPARE.lock().unwrap_or_else(|p| p.into_inner()),
    ));
}

/// Hand a leaf matrix back for the next encode (kept if it is the largest so far, up to n = 1000).
fn recycle_leaf_matrix(v: Vec<Hash>) {
    if v.capacity() <= SPARE_MAX {
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        if v.capacity() > spare.capacity() {
            let len = v.capacity();
            let mut v = v;
            // filled to its capacity, so the next `len` check sees all of it
            v.resize(len, ZERO);
            *spare = v;
        }
    }
}

/// Keyed leaf hashes of a row-major block of symbols, `width` wide, written into the n-wide
/// leaf matrix at (row0, col0). Row by row straight into the matrix (no temporary, no copy)
/// when a row's last lane group wastes little (n = 1000: 667 and 333 wide, < 1 % idle lanes);
/// narrow rows (n = 100: 67 and 33 wide, 19 % and 45 % idle) are hashed as one run into a
/// temporary block and placed.
pub(super) fn hash_rows_into(
    leaves: &mut [Hash],
    n: usize,
    row0: usize,
    col0: usize,
    width: usize,
    symbols: &[u8],
    s: usize,
) {
    if width == 0 {
        return;
    }
    /// Lanes of the widest hash engine (AVX-512).
    const LANES: usize = 16;
    if (width.div_ceil(LANES) * LANES - width) * 50 > width {
        place_leaves(leaves, n, row0, col0, width, &hash_block(symbols, s));
        return;
    }
    let rows = symbols.len() / (width * s);
    leaves[row0 * n..(row0 + rows) * n]
        .par_chunks_mut(n)
        .zip(symbols.par_chunks(width * s))
        .for_each(|(out, row)| {
            super::hash_lanes::keyed_hash_many(&K_LEAF, row, s, &mut out[col0..col0 + width])
        });
}

/// Copy a row-major block of hashes, `width` wide, into the n-wide leaf matrix at (row0, col0).
pub(super) fn place_leaves(
    leaves: &mut [Hash],
    n: usize,
    row0: usize,
    col0: usize,
    width: usize,
    block: &[Hash],
) {
    if width == 0 {
        return;
    }
    for (r, src) in block.chunks(width).enumerate() {
        let at = (row0 + r) * n + col0;
        leaves[at..at + width].copy_from_slice(src);
    }
}

/// `dst[j][off..off + s] = symbol j of src`: one row of symbols into a row of chunks. Sized
/// copies per symbol size, so each is a couple of moves rather than a `memcpy` call.
fn scatter(src: &[u8], s: usize, dst: &mut [Hash], off: usize) {
    fn go<const S: usize>(src: &[u8], dst: &mut [Hash], off: usize) {
        for (sym, d) in src.chunks_exact(S).zip(dst) {
            let sym: &[u8; S] = sym.try_into().expect("S bytes");
            let to: &mut [u8; S] = (&mut d[off..off + S]).try_into().expect("S bytes");
            *to = *sym;
        }
    }
    match s {
        2 => go::<2>(src, dst, off),
        4 => go::<4>(src, dst, off),
        6 => go::<6>(src, dst, off),
        8 => go::<8>(src, dst, off),
        10 => go::<10>(src, dst, off),
        12 => go::<12>(src, dst, off),
        14 => go::<14>(src, dst, off),
        16 => go::<16>(src, dst, off),
        _ => {
            for (sym, d) in src.chunks_exact(s).zip(dst) {
                d[off..off + s].copy_from_slice(sym);
            }
        }
    }
}
