//! Encoding a blob the encoder never holds whole, nor its expansion: the uploader's path for
//! large blobs (`docs/codec.md`, "Memory").
//!
//! The metadata needs every symbol of the expanded matrix before any sliver may be sent, and a
//! primary sliver of `P` (the columns of `D` extended) is a whole row, which only comes out of
//! extending every column. So the work is split in two:
//!
//! 1. [`StreamingEncoder::new`] reads `D` from a [`BlobSource`] row batch by row batch (hashing
//!    it and extending it to `Q`, which is kept: half the blob at n = 1000) and then column
//!    stripe by column stripe (extending each to its part of `P`, hashed and dropped); `R` is
//!    hashed from `Q`'s columns. Peak: `Q`, the n² leaf matrix (32 MB at n = 1000) and one
//!    stripe.
//! 2. [`StreamingEncoder::group`] produces the pairs of one of `G` groups. Group 0's `2f/G`
//!    rows of `P` were kept by the first pass; any other group recomputes `P` stripe by stripe
//!    and keeps only its rows. Primary slivers of `D` and all secondary
//!    slivers (columns of `D | Q`) are read from the source and `Q` on demand.
//!
//! Memory is `Q` + `2/G` of the blob + a stripe (plus the source, if it is in memory), for
//! `G − 1` extra passes of `P`'s Reed–Solomon work. Blobs with symbols of at most 32 bytes are
//! at most `32·k_p·k_s` bytes (7 MiB at n = 1000) and go through [`encode`] unchanged.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::encode::{
    encode, finish_hashed_roots, hash_block, hash_rows_into, leaf_matrix, metadata_from_roots,
    place_leaves, EncodedBlob,
};
use super::merkle::CHUNK;
use super::metadata::{BlobId, BlobMetadata};
use super::params::{EncodingParams, SymbolShape};
use super::rs;
use super::sliver::{Axis, Sliver};
use super::CodecError;

/// Where the blob's bytes come from: memory or a file, read in pieces.
pub trait BlobSource: Send + Sync {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` with the blob's bytes from `offset` on; bytes past the end are zero (the
    /// padding of PROTOCOL.md §2).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// Split `buf` at the blob's end: the part to read and the zero padding.
pub(crate) fn within(len: u64, offset: u64, buf: &mut [u8]) -> &mut [u8] {
    let have = len.saturating_sub(offset).min(buf.len() as u64) as usize;
    let (read, pad) = buf.split_at_mut(have);
    pad.fill(0);
    read
}

impl BlobSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        SliceSource(self).read_at(offset, buf)
    }
}

/// A blob borrowed in memory.
pub struct SliceSource<'a>(pub &'a [u8]);

impl BlobSource for SliceSource<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let read = within(self.0.len() as u64, offset, buf);
        if !read.is_empty() {
            let at = offset as usize;
            read.copy_from_slice(&self.0[at..at + read.len()]);
        }
        Ok(())
    }
}

/// The metadata and blob ID of `blob`, without keeping its expansion: the streaming encoder's
/// metadata pass over the blob in place: only `Q` (half the blob at n = 1000), the n² leaf
/// matrix and one 16 MiB stripe are held besides the blob.
pub fn encode_metadata(
    blob: &[u8],
    params: EncodingParams,
) -> Result<(BlobMetadata, BlobId), CodecError> {
    metadata_only(&SliceSource(blob), params)
}

/// Bytes of `D` read and extended at once (a row batch or a column stripe).
const STRIPE_BYTES: usize = 16 << 20;

/// The metadata of a blob read from a [`BlobSource`], and the parts of its expansion its pair
/// groups share.
pub struct StreamingEncoder {
    source: Box<dyn BlobSource>,
    shape: SymbolShape,
    metadata: BlobMetadata,
    blob_id: BlobId,
    groups: usize,
    inner: Inner,
    stripe_bytes: usize,
}

enum Inner {
    /// Symbols of at most 32 bytes: a small blob, encoded whole.
    Compact(EncodedBlob),
    Streaming {
        /// Q: `k_p × f` symbols, row-major.
        q: Vec<u8>,
        /// Group 0's rows of `P`, kept from the metadata pass (taken by the first
        /// `group(0)`; a second one recomputes them).
        first: Mutex<Option<Vec<u8>>>,
    },
}

fn io_error(e: io::Error) -> CodecError {
    CodecError::Source(e.to_string())
}

impl StreamingEncoder {
    /// Read the blob and compute its metadata and blob ID, keeping what group 0 of `groups`
    /// needs (so the first group costs no extra pass).
    pub fn new(
        source: Box<dyn BlobSource>,
        params: EncodingParams,
        groups: usize,
    ) -> Result<Self, CodecError> {
        Self::with_stripe_bytes(source, params, groups, STRIPE_BYTES)
    }

    /// [`Self::new`] with another stripe size (tests use small ones to get many stripes).
    #[doc(hidden)]
    pub fn with_stripe_bytes(
        source: Box<dyn BlobSource>,
        params: EncodingParams,
        groups: usize,
        stripe_bytes: usize,
    ) -> Result<Self, CodecError> {
        let groups = groups.clamp(1, 2 * params.f());
        let shape = params.symbol_shape(source.len())?;
        let s = shape.symbol_size;
        if s <= CHUNK {
            let mut blob = vec![0u8; source.len() as usize];
            source.read_at(0, &mut blob).map_err(io_error)?;
            let e = encode(&blob, params)?;
            return Ok(Self {
                shape,
                metadata: e.metadata().clone(),
                blob_id: e.blob_id(),
                groups,
                inner: Inner::Compact(e),
                source,
                stripe_bytes,
            });
        }
        let keep = p_rows(2 * params.f(), 0, groups);
        let pass = metadata_pass(&*source, &shape, stripe_bytes, keep)?;
        Ok(Self {
            source,
            shape,
            blob_id: pass.metadata.blob_id(),
            metadata: pass.metadata,
            groups,
            inner: Inner::Streaming {
                q: pass.q,
                first: Mutex::new(Some(pass.kept)),
            },
            stripe_bytes,
        })
    }

    pub fn metadata(&self) -> &BlobMetadata {
        &self.metadata
    }
    pub fn blob_id(&self) -> BlobId {
        self.blob_id
    }
    pub fn shape(&self) -> &SymbolShape {
        &self.shape
    }
    pub fn n(&self) -> usize {
        self.shape.params.n()
    }
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The pairs of group `g`: it owns the primary slivers of `P`'s rows
    /// `[2f·g/G, 2f·(g+1)/G)`; group 0 also owns the pairs whose primary sliver is a row of `D`.
    pub fn group_pairs(&self, g: usize) -> Range<usize> {
        let kp = self.shape.params.k_primary();
        let rows = p_rows(2 * self.shape.params.f(), g, self.groups);
        let start = if g == 0 { 0 } else { kp + rows.start };
        start..kp + rows.end
    }

    /// The slivers of group `g`: group 0's were kept by the metadata pass, any other costs one
    /// more pass of `P`'s Reed–Solomon work.
    pub fn group(self: &Arc<Self>, g: usize) -> Result<PairGroup, CodecError> {
        let pairs = self.group_pairs(g);
        let (ks, f, s) = (
            self.shape.params.k_secondary(),
            self.shape.params.f(),
            self.shape.symbol_size,
        );
        let rows = p_rows(2 * f, g, self.groups);
        let p = match &self.inner {
            Inner::Compact(_) => Vec::new(),
            Inner::Streaming { first, .. } => {
                let kept = match g {
                    0 => first.lock().unwrap_or_else(|p| p.into_inner()).take(),
                    _ => None,
                };
                match kept {
                    Some(p) => p,
                    None => {
                        let row = ks * s;
                        let mut out = vec![0u8; rows.len() * row];
                        for_each_p_stripe(
                            &*self.source,
                            &self.shape,
                            self.stripe_bytes,
                            |c0, w, block| {
                                (c0, w, block[rows.start * w * s..rows.end * w * s].to_vec())
                            },
                            |(c0, w, kept)| place_rows(&mut out, row, c0 * s, w * s, &kept),
                        )?;
                        out
                    }
                }
            }
        };
        Ok(PairGroup {
            enc: self.clone(),
            pairs,
            rows,
            p,
        })
    }
}

/// The metadata and blob ID only (`floe blob-id`, [`super::encode_metadata`]): nothing of `P` is
/// kept, so the peak is `Q`, the leaf matrix and one stripe.
pub fn metadata_only(
    source: &dyn BlobSource,
    params: EncodingParams,
) -> Result<(BlobMetadata, BlobId), CodecError> {
    let shape = params.symbol_shape(source.len())?;
    let metadata = if shape.symbol_size <= CHUNK {
        let mut blob = vec![0u8; source.len() as usize];
        source.read_at(0, &mut blob).map_err(io_error)?;
        encode(&blob, params)?.metadata().clone()
    } else {
        metadata_pass(source, &shape, STRIPE_BYTES, 0..0)?.metadata
    };
    let id = metadata.blob_id();
    Ok((metadata, id))
}

/// What one read of the blob gives (symbols of more than 32 bytes).
struct Pass {
    metadata: BlobMetadata,
    /// Q: `k_p × f` symbols, row-major.
    q: Vec<u8>,
    /// Rows `keep` of `P`.
    kept: Vec<u8>,
}

/// `D` row batch by row batch (hashed, extended to `Q`), then `P` column stripe by column
/// stripe (hashed; rows `keep` kept, the rest dropped), `R` from `Q`'s columns: the metadata.
fn metadata_pass(
    source: &dyn BlobSource,
    shape: &SymbolShape,
    stripe_bytes: usize,
    keep: Range<usize>,
) -> Result<Pass, CodecError> {
    let params = shape.params;
    let s = shape.symbol_size;
    let (n, f, kp, ks) = (
        params.n(),
        params.f(),
        params.k_primary(),
        params.k_secondary(),
    );
    let row = ks * s;
    let mut leaves = leaf_matrix(n);
    let mut q = vec![0u8; kp * f * s];
    let rows_per = (stripe_bytes / row).clamp(1, kp);
    let mut buf = vec![0u8; rows_per * row];
    for r0 in (0..kp).step_by(rows_per) {
        let r1 = (r0 + rows_per).min(kp);
        let rows = &mut buf[..(r1 - r0) * row];
        source.read_at((r0 * row) as u64, rows).map_err(io_error)?;
        rs::extend_rows(rows, ks, s, f, &mut q[r0 * f * s..r1 * f * s])?;
        hash_rows_into(&mut leaves, n, r0, 0, ks, rows, s);
    }
    drop(buf);
    hash_rows_into(&mut leaves, n, 0, ks, f, &q, s);
    let mut kept = vec![0u8; keep.len() * row];
    for_each_p_stripe(
        source,
        shape,
        stripe_bytes,
        |c0, w, block| {
            let rows = block[keep.start * w * s..keep.end * w * s].to_vec();
            (c0, w, hash_block(block, s), rows)
        },
        |(c0, w, h, rows)| {
            place_leaves(&mut leaves, n, kp, c0, w, &h);
            place_rows(&mut kept, row, c0 * s, w * s, &rows);
        },
    )?;
    // not kept for a next encode: this path is for blobs whose memory matters, and the matrix
    // would stay resident through the upload
    let (primary, secondary) = finish_hashed_roots(&mut leaves, &q, n, kp, ks, f, s)?;
    drop(leaves);
    Ok(Pass {
        metadata: metadata_from_roots(source.len(), &primary, &secondary),
        q,
        kept,
    })
}

/// Rows `[m·g/G, m·(g+1)/G)` of `m`.
fn p_rows(m: usize, g: usize, groups: usize) -> Range<usize> {
    (m * g / groups).min(m)..(m * (g + 1) / groups).min(m)
}

/// Copy the rows of `block` (each `width` bytes) into the rows of `out` (each `row` bytes) at
/// byte offset `at`.
fn place_rows(out: &mut [u8], row: usize, at: usize, width: usize, block: &[u8]) {
    if width == 0 {
        return;
    }
    for (k, seg) in block.chunks(width).enumerate() {
        out[k * row + at..k * row + at + width].copy_from_slice(seg);
    }
}

/// `P`, stripe by stripe: `f(c0, w, block)` gets the `2f × w` parity block of columns
/// `c0 .. c0 + w` (row-major), one column batch at a time and in parallel; `sink` then takes
/// the stripe's results in order, on this thread.
fn for_each_p_stripe<T: Send>(
    source: &dyn BlobSource,
    shape: &SymbolShape,
    stripe_bytes: usize,
    f: impl Fn(usize, usize, &[u8]) -> T + Sync,
    mut sink: impl FnMut(T),
) -> Result<(), CodecError> {
    let p = &shape.params;
    let (kp, ks, s) = (p.k_primary(), p.k_secondary(), shape.symbol_size);
    let row = ks * s;
    let width = (stripe_bytes / (kp * s)).clamp(1, ks);
    let mut stripe = vec![0u8; kp * width * s];
    for c0 in (0..ks).step_by(width) {
        let w = width.min(ks - c0);
        let block = &mut stripe[..kp * w * s];
        for (r, seg) in block.chunks_mut(w * s).enumerate() {
            source
                .read_at((r * row + c0 * s) as u64, seg)
                .map_err(io_error)?;
        }
        let rows: Vec<&[u8]> = block.chunks(w * s).collect();
        for t in
            rs::map_column_parity_batches(&rows, s, 2 * p.f(), |b0, bw, out| f(c0 + b0, bw, out))?
        {
            sink(t);
        }
    }
    Ok(())
}

/// The slivers of one group of pairs ([`StreamingEncoder::group`]).
pub struct PairGroup {
    enc: Arc<StreamingEncoder>,
    pairs: Range<usize>,
    /// The rows of `P` held.
    rows: Range<usize>,
    p: Vec<u8>,
}

impl PairGroup {
    /// The encoder this group belongs to (metadata, blob ID).
    pub fn encoder(&self) -> &StreamingEncoder {
        &self.enc
    }

    /// The pairs this group produces.
    pub fn pairs(&self) -> Range<usize> {
        self.pairs.clone()
    }

    /// Primary sliver `i` (row `i`), if it belongs to this group.
    pub fn primary_sliver(&self, i: usize) -> Result<Sliver, CodecError> {
        let n = self.enc.n();
        if !self.pairs.contains(&i) {
            return Err(CodecError::IndexOutOfRange { index: i, n });
        }
        let shape = &self.enc.shape;
        let (kp, ks, s) = (
            shape.params.k_primary(),
            shape.params.k_secondary(),
            shape.symbol_size,
        );
        if let Inner::Compact(e) = &self.enc.inner {
            return Ok(e.primary_sliver(i));
        }
        let row = ks * s;
        let data = if i < kp {
            let mut d = vec![0u8; row];
            self.enc
                .source
                .read_at((i * row) as u64, &mut d)
                .map_err(io_error)?;
            d
        } else {
            let k = i - kp - self.rows.start;
            self.p[k * row..(k + 1) * row].to_vec()
        };
        Ok(sliver(shape, Axis::Primary, i, data))
    }

    /// Secondary sliver `j` (column `j` of `D | Q`); any group can produce any of them.
    pub fn secondary_sliver(&self, j: usize) -> Result<Sliver, CodecError> {
        let shape = &self.enc.shape;
        let (n, kp, ks, f, s) = (
            shape.params.n(),
            shape.params.k_primary(),
            shape.params.k_secondary(),
            shape.params.f(),
            shape.symbol_size,
        );
        if j >= n {
            return Err(CodecError::IndexOutOfRange { index: j, n });
        }
        let q = match &self.enc.inner {
            Inner::Compact(e) => return Ok(e.secondary_sliver(j)),
            Inner::Streaming { q, .. } => q,
        };
        let mut data = vec![0u8; kp * s];
        for (r, sym) in data.chunks_mut(s).enumerate() {
            if j < ks {
                self.enc
                    .source
                    .read_at(((r * ks + j) * s) as u64, sym)
                    .map_err(io_error)?;
            } else {
                let at = (r * f + j - ks) * s;
                sym.copy_from_slice(&q[at..at + s]);
            }
        }
        Ok(sliver(shape, Axis::Secondary, j, data))
    }
}

fn sliver(shape: &SymbolShape, axis: Axis, index: usize, data: Vec<u8>) -> Sliver {
    Sliver {
        axis,
        index: index as u16,
        symbol_size: shape.symbol_size as u16,
        data,
    }
}
