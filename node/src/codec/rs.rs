//! Batched Reed–Solomon over symbol matrices, on top of `reed-solomon-simd`.
//!
//! Every call here produces exactly the bytes of PROTOCOL.md's one-call-per-symbol definition
//! (see [`super::layout`]); batching and parallelism only change the speed.

use std::cell::RefCell;

use rayon::prelude::*;
use reed_solomon_simd::rate::{DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder};

use super::gf_engine::{EngineKind, RsEngine};
use super::layout::BatchLayout;
use super::CodecError;

type Encoder = DefaultRateEncoder<RsEngine>;
type Decoder = DefaultRateDecoder<RsEngine>;

/// Bytes per batched shard: the Reed–Solomon call's working set (about `code_len` shards) should
/// stay in one core's L2 cache (2 MiB here), between 1 KiB (call overhead) and 16 KiB.
/// Measured on the codec bench at n = 1000 (16 MiB blob): 2 KiB shards encode 1.12× faster
/// than 16 KiB ones. `FLOE_RS_BATCH_BYTES` fixes it, for tuning with the benchmark.
fn target_batch_bytes(code_len: usize) -> usize {
    static FIXED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    const L2_BUDGET: usize = 2 << 20;
    FIXED
        .get_or_init(|| {
            std::env::var("FLOE_RS_BATCH_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| (L2_BUDGET / code_len.next_power_of_two().max(1)).clamp(1024, 16 * 1024))
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BATCH_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static ENCODER: RefCell<Option<(EngineKind, Encoder)>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<(EngineKind, Decoder)>> = const { RefCell::new(None) };
}

/// Run `f` with a (reused, per-thread) encoder configured for `(k, m, bytes)`.
pub(crate) fn with_encoder<R>(
    k: usize,
    m: usize,
    bytes: usize,
    f: impl FnOnce(&mut Encoder) -> Result<R, CodecError>,
) -> Result<R, CodecError> {
    ENCODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let kind = EngineKind::current();
        match slot.as_mut() {
            Some((k0, e)) if *k0 == kind => e.reset(k, m, bytes)?,
            _ => *slot = Some((kind, Encoder::new(k, m, bytes, RsEngine::of(kind), None)?)),
        }
        f(&mut slot.as_mut().expect("encoder just set").1)
    })
}

/// Run `f` with a (reused, per-thread) decoder configured for `(k, m, bytes)`.
pub(crate) fn with_decoder<R>(
    k: usize,
    m: usize,
    bytes: usize,
    f: impl FnOnce(&mut Decoder) -> Result<R, CodecError>,
) -> Result<R, CodecError> {
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let kind = EngineKind::current();
        match slot.as_mut() {
            Some((k0, d)) if *k0 == kind => d.reset(k, m, bytes)?,
            _ => *slot = Some((kind, Decoder::new(k, m, bytes, RsEngine::of(kind), None)?)),
        }
        f(&mut slot.as_mut().expect("decoder just set").1)
    })
}

/// Run `f` with a per-thread scratch buffer of `bytes` bytes (contents unspecified).
fn with_scratch<R>(bytes: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| {
        // Taken out while in use so that nested calls get a buffer of their own.
        let mut buf = std::mem::take(&mut *cell.borrow_mut());
        if buf.len() < bytes {
            buf.resize(bytes, 0);
        }
        let r = f(&mut buf[..bytes]);
        *cell.borrow_mut() = buf;
        r
    })
}

/// How many codewords to batch into one call: big enough to amortise the call, small enough to
/// stay in cache and to leave work for every thread.
pub(crate) fn batch_size(symbol_size: usize, codewords: usize, code_len: usize) -> usize {
    let by_cache = (target_batch_bytes(code_len) / symbol_size).max(1);
    let by_threads = codewords.div_ceil(4 * rayon::current_num_threads()).max(1);
    by_cache.min(by_threads).min(codewords).max(1)
}

/// Encode one batch of columns `[c0, c0 + w)` of the `k` source rows; hands the `m` parity
/// shards (batch layout) to `f`.
fn encode_column_batch<R>(
    src: &[&[u8]],
    s: usize,
    m: usize,
    c0: usize,
    w: usize,
    f: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> R,
) -> Result<R, CodecError> {
    let layout = BatchLayout::new(s, w);
    let bytes = layout.shard_bytes();
    with_scratch(bytes, |shard| {
        with_encoder(src.len(), m, bytes, |enc| {
            for row in src {
                layout.put_many(shard, 0, &row[c0 * s..(c0 + w) * s]);
                enc.add_original_shard(&*shard)?;
            }
            let res = enc.encode()?;
            Ok(f(&mut res.recovery_iter()))
        })
    })
}

/// Extend every column of a `k × cols` matrix (`src` = its k rows) with `m` parity symbols,
/// written row-major into `out` (`m × cols` symbols).
pub(crate) fn extend_columns(
    src: &[&[u8]],
    s: usize,
    m: usize,
    out: &mut [u8],
) -> Result<(), CodecError> {
    let row_bytes = src[0].len();
    let cols = row_bytes / s;
    let b = batch_size(s, cols, src.len() + m);
    let blocks = cols.div_ceil(b);
    // Hand each batch its own column range of every output row.
    let mut per_batch: Vec<Vec<&mut [u8]>> = (0..blocks).map(|_| Vec::with_capacity(m)).collect();
    for row in out.chunks_mut(row_bytes) {
        for (bi, seg) in row.chunks_mut(b * s).enumerate() {
            per_batch[bi].push(seg);
        }
    }
    per_batch
        .into_par_iter()
        .enumerate()
        .try_for_each(|(bi, mut segs)| {
            let c0 = bi * b;
            let w = b.min(cols - c0);
            let layout = BatchLayout::new(s, w);
            encode_column_batch(src, s, m, c0, w, |rec| {
                for (seg, r) in segs.iter_mut().zip(rec) {
                    layout.get_many(r, 0, seg);
                }
            })
        })
}

/// Like [`extend_columns`], but instead of storing the parity, hands each batch of it to
/// `f(c0, j, symbols)` (parity row j restricted to the batch's columns, per-symbol layout) and
/// returns the results, batch by batch in column order.
pub(crate) fn map_column_parity<T: Send>(
    src: &[&[u8]],
    s: usize,
    m: usize,
    f: impl Fn(usize, usize, &[u8]) -> T + Sync,
) -> Result<Vec<Vec<T>>, CodecError> {
    let cols = src[0].len() / s;
    let b = batch_size(s, cols, src.len() + m);
    (0..cols)
        .step_by(b)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|c0| {
            let w = b.min(cols - c0);
            let layout = BatchLayout::new(s, w);
            encode_column_batch(src, s, m, c0, w, |rec| {
                let mut out = vec![0u8; w * s];
                rec.enumerate()
                    .map(|(j, r)| {
                        layout.get_many(r, 0, &mut out);
                        f(c0, j, &out)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect()
}

/// Like [`map_column_parity`], but hands each batch whole to `f(c0, w, rows)`: all `m` parity
/// rows restricted to the batch's `w` columns, row-major, per-symbol layout. Lets the caller
/// hash a batch's `m·w` symbols in one run (full SIMD lane groups even when `w` is 1).
pub(crate) fn map_column_parity_batches<T: Send>(
    src: &[&[u8]],
    s: usize,
    m: usize,
    f: impl Fn(usize, usize, &[u8]) -> T + Sync,
) -> Result<Vec<T>, CodecError> {
    let cols = src[0].len() / s;
    let b = batch_size(s, cols, src.len() + m);
    (0..cols)
        .step_by(b)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|c0| {
            let w = b.min(cols - c0);
            let layout = BatchLayout::new(s, w);
            // a per-thread block, reused: fresh megabyte blocks per batch cost page faults
            let mut out = BATCH_OUT.with(|c| std::mem::take(&mut *c.borrow_mut()));
            out.resize(m * w * s, 0);
            encode_column_batch(src, s, m, c0, w, |rec| {
                for (seg, r) in out.chunks_mut(w * s).zip(rec) {
                    layout.get_many(r, 0, seg);
                }
            })?;
            // outside the per-thread encoder's borrow: `f` may run parallel work (hashing),
            // and a stolen task on this thread must be able to borrow the encoder itself (it
            // then finds no block here and makes its own)
            let r = f(c0, w, &out);
            BATCH_OUT.with(|c| *c.borrow_mut() = out);
            Ok(r)
        })
        .collect()
}

/// Extend every row of a row-major matrix (`rows × k` symbols in `src`) with `m` parity
/// symbols, writing them row-major into `out` (`rows × m` symbols).
pub(crate) fn extend_rows(
    src: &[u8],
    k: usize,
    s: usize,
    m: usize,
    out: &mut [u8],
) -> Result<(), CodecError> {
    let row_bytes = k * s;
    let rows = src.len() / row_bytes;
    let b = batch_size(s, rows, k + m);
    out.par_chunks_mut(b * m * s)
        .zip(src.par_chunks(b * row_bytes))
        .try_for_each(|(out_blk, src_blk)| {
            let w = src_blk.len() / row_bytes;
            let layout = BatchLayout::new(s, w);
            let bytes = layout.shard_bytes();
            with_scratch(bytes, |shard| {
                with_encoder(k, m, bytes, |enc| {
                    for c in 0..k {
                        for r in 0..w {
                            let at = r * row_bytes + c * s;
                            layout.put(shard, r, &src_blk[at..at + s]);
                        }
                        enc.add_original_shard(&*shard)?;
                    }
                    let res = enc.encode()?;
                    for (j, rec) in res.recovery_iter().enumerate() {
                        for r in 0..w {
                            let at = (r * m + j) * s;
                            layout.get(rec, r, &mut out_blk[at..at + s]);
                        }
                    }
                    Ok(())
                })
            })
        })
}

/// Encode a single codeword (symbols of `s` bytes) and return its `m` parity symbols.
pub(crate) fn encode_one(src: &[u8], s: usize, m: usize) -> Result<Vec<u8>, CodecError> {
    let k = src.len() / s;
    let mut out = vec![0u8; m * s];
    extend_rows(src, k, s, m, &mut out)?;
    Ok(out)
}

/// Decode one codeword of `k` source symbols from any `k` of its `k + m` positions.
/// `known` holds `(position, symbol)` pairs; positions ≥ k are parity. Returns the k source
/// symbols, concatenated.
pub(crate) fn decode_one(
    k: usize,
    m: usize,
    s: usize,
    known: &[(usize, &[u8])],
) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0u8; k * s];
    let mut have = vec![false; k];
    for &(pos, sym) in known {
        if pos < k && !have[pos] {
            out[pos * s..(pos + 1) * s].copy_from_slice(sym);
            have[pos] = true;
        }
    }
    if have.iter().all(|h| *h) {
        return Ok(out);
    }
    with_decoder(k, m, s, |dec| {
        let mut seen = vec![false; k + m];
        for &(pos, sym) in known {
            if std::mem::replace(&mut seen[pos], true) {
                continue;
            }
            if pos < k {
                dec.add_original_shard(pos, sym)?;
            } else {
                dec.add_recovery_shard(pos - k, sym)?;
            }
        }
        let res = dec.decode()?;
        for (i, sym) in res.restored_original_iter() {
            out[i * s..(i + 1) * s].copy_from_slice(sym);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Decode the `k` source rows of a `(k + m) × cols` matrix, column by column, from any `k`
/// of its rows. `rows` holds `(row index, row bytes)`; the result is the k source rows,
/// row-major and concatenated.
pub(crate) fn decode_columns(
    k: usize,
    m: usize,
    s: usize,
    rows: &[(usize, &[u8])],
) -> Result<Vec<u8>, CodecError> {
    let row_bytes = rows[0].1.len();
    let cols = row_bytes / s;
    let mut out = vec![0u8; k * row_bytes];
    let mut have = vec![false; k];
    for &(i, row) in rows {
        if i < k && !have[i] {
            out[i * row_bytes..(i + 1) * row_bytes].copy_from_slice(row);
            have[i] = true;
        }
    }
    let missing: Vec<usize> = (0..k).filter(|i| !have[*i]).collect();
    if missing.is_empty() {
        return Ok(out);
    }
    let b = batch_size(s, cols, k + m);
    // Decode per batch of columns; each batch yields the missing rows restricted to it.
    let pieces: Vec<(usize, Vec<Vec<u8>>)> = (0..cols)
        .step_by(b)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|c0| {
            let w = b.min(cols - c0);
            let layout = BatchLayout::new(s, w);
            let bytes = layout.shard_bytes();
            let mut shard = vec![0u8; bytes];
            let restored = with_decoder(k, m, bytes, |dec| {
                for &(i, row) in rows {
                    layout.put_many(&mut shard, 0, &row[c0 * s..(c0 + w) * s]);
                    if i < k {
                        dec.add_original_shard(i, &shard)?;
                    } else {
                        dec.add_recovery_shard(i - k, &shard)?;
                    }
                }
                let res = dec.decode()?;
                let mut got = vec![Vec::new(); k];
                for (i, r) in res.restored_original_iter() {
                    let mut seg = vec![0u8; w * s];
                    layout.get_many(r, 0, &mut seg);
                    got[i] = seg;
                }
                Ok(missing
                    .iter()
                    .map(|&i| std::mem::take(&mut got[i]))
                    .collect::<Vec<_>>())
            })?;
            Ok::<_, CodecError>((c0, restored))
        })
        .collect::<Result<_, _>>()?;
    for (c0, segs) in pieces {
        for (&i, seg) in missing.iter().zip(segs) {
            let at = i * row_bytes + c0 * s;
            out[at..at + seg.len()].copy_from_slice(&seg);
        }
    }
    Ok(out)
}
