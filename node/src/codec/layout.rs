//! The byte arrangement that lets one Reed–Solomon call extend many symbols at once.
//!
//! `reed-solomon-simd` works element-wise over GF(2^16). A shard of `B` bytes holds `B/2`
//! elements: each whole 64-byte chunk holds 32 elements (32 low bytes, then 32 high bytes);
//! a shorter tail of `T` bytes holds `T/2` elements (`T/2` low bytes, then `T/2` high bytes).
//! PROTOCOL.md defines parity per symbol (`shard_bytes = s`). Because the code is element-wise,
//! putting the elements of many symbols into one larger shard — each element keeping its own
//! low/high byte pair — gives byte-identical parity. These functions do that re-arrangement.

/// A run of elements that is contiguous in both the low-byte and the high-byte plane.
#[derive(Clone, Copy)]
struct Run {
    lo: usize,
    hi: usize,
    len: usize,
}

/// Where element `x` of a shard of `bytes` bytes lives, and how many elements follow it
/// contiguously.
#[inline]
fn run_at(bytes: usize, x: usize) -> Run {
    let whole = bytes / 64;
    if x < whole * 32 {
        let c = x / 32;
        let o = x % 32;
        Run {
            lo: c * 64 + o,
            hi: c * 64 + 32 + o,
            len: 32 - o,
        }
    } else {
        let t = (bytes % 64) / 2;
        let o = x - whole * 32;
        Run {
            lo: whole * 64 + o,
            hi: whole * 64 + t + o,
            len: t - o,
        }
    }
}

/// Copy `count` elements from element `sx` of `src` to element `dx` of `dst`.
fn copy_elements(src: &[u8], mut sx: usize, dst: &mut [u8], mut dx: usize, mut count: usize) {
    let (sb, db) = (src.len(), dst.len());
    while count > 0 {
        let s = run_at(sb, sx);
        let d = run_at(db, dx);
        let m = count.min(s.len).min(d.len);
        if m == 32 {
            // Whole chunk to whole chunk: fixed-size copies, no memmove call.
            copy32(dst, d.lo, src, s.lo);
            copy32(dst, d.hi, src, s.hi);
        } else {
            dst[d.lo..d.lo + m].copy_from_slice(&src[s.lo..s.lo + m]);
            dst[d.hi..d.hi + m].copy_from_slice(&src[s.hi..s.hi + m]);
        }
        sx += m;
        dx += m;
        count -= m;
    }
}

#[inline(always)]
fn copy32(dst: &mut [u8], d: usize, src: &[u8], s: usize) {
    let from: &[u8; 32] = src[s..s + 32].try_into().expect("32-byte run");
    let to: &mut [u8; 32] = (&mut dst[d..d + 32]).try_into().expect("32-byte run");
    *to = *from;
}

/// How the symbols of one batch (`w` symbols, one per codeword) sit in its shard.
///
/// - `s` a multiple of 64: symbols back to back (a symbol is whole chunks).
/// - `s < 64`: elements packed densely (`copy_elements`), as one call per symbol would see them.
/// - otherwise (`s = 64q + 2t`, `0 < t < 32`): a symbol's first `64q` bytes are already `q`
///   whole chunks in the crate's layout and move with plain 64-byte copies; its `t` tail
///   elements are packed densely. Symbols go in groups of 32: a group's `32q` chunks, then its
///   tails — `32t` elements, exactly `t` chunks — so a batch has no padding and the
///   Reed–Solomon call does no work beyond the symbols' own elements. A last group of `r < 32`
///   symbols has `r·q` chunks and `⌈r·t/32⌉` tail chunks (padding only there).
///
/// The code is element-wise, so any placement that puts element `x` of every codeword's
/// symbol at one position in all shards gives byte-identical parity (tested against one call
/// per symbol below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLayout {
    s: usize,
    w: usize,
}

/// Symbols per group of the split layout: 32 tails of `t` elements fill `t` chunks exactly.
const GROUP: usize = 32;

impl BatchLayout {
    /// The layout of a batch of `w` symbols of `s` bytes.
    pub(crate) fn new(s: usize, w: usize) -> Self {
        Self { s, w }
    }

    fn split(&self) -> bool {
        self.s > 64 && !self.s.is_multiple_of(64)
    }

    /// Bytes of the batch shard.
    pub(crate) fn shard_bytes(&self) -> usize {
        if !self.split() {
            return self.w * self.s;
        }
        let (q, t) = (self.s / 64, (self.s % 64) / 2);
        let (groups, r) = (self.w / GROUP, self.w % GROUP);
        64 * (groups * (GROUP * q + t) + r * q + (r * t).div_ceil(32))
    }

    /// Split layout: (byte offset of symbol `b`'s first chunk, chunk index where its group's
    /// tails start, its element offset among them).
    #[inline]
    fn split_at(&self, b: usize) -> (usize, usize, usize) {
        let (q, t) = (self.s / 64, (self.s % 64) / 2);
        let (g, i) = (b / GROUP, b % GROUP);
        let members = if g < self.w / GROUP {
            GROUP
        } else {
            self.w % GROUP
        };
        let base = g * (GROUP * q + t);
        ((base + i * q) * 64, base + members * q, i * t)
    }

    /// Place symbol `b` into the batch shard.
    #[inline]
    pub(crate) fn put(&self, batch: &mut [u8], b: usize, symbol: &[u8]) {
        let s = self.s;
        if s.is_multiple_of(64) {
            batch[b * s..(b + 1) * s].copy_from_slice(symbol);
        } else if self.split() {
            let full = s / 64 * 64;
            let t = (s % 64) / 2;
            let (at, tails, e) = self.split_at(b);
            batch[at..at + full].copy_from_slice(&symbol[..full]);
            tail_runs(tails, e, t, |byte, from, len| {
                batch[byte..byte + len].copy_from_slice(&symbol[full + from..full + from + len]);
                batch[byte + 32..byte + 32 + len]
                    .copy_from_slice(&symbol[full + t + from..full + t + from + len]);
            });
        } else {
            copy_elements(symbol, 0, batch, b * s / 2, s / 2);
        }
    }

    /// Read symbol `b` of the batch shard back into per-symbol layout.
    #[inline]
    pub(crate) fn get(&self, batch: &[u8], b: usize, symbol: &mut [u8]) {
        let s = self.s;
        if s.is_multiple_of(64) {
            symbol.copy_from_slice(&batch[b * s..(b + 1) * s]);
        } else if self.split() {
            let full = s / 64 * 64;
            let t = (s % 64) / 2;
            let (at, tails, e) = self.split_at(b);
            symbol[..full].copy_from_slice(&batch[at..at + full]);
            tail_runs(tails, e, t, |byte, from, len| {
                symbol[full + from..full + from + len].copy_from_slice(&batch[byte..byte + len]);
                symbol[full + t + from..full + t + from + len]
                    .copy_from_slice(&batch[byte + 32..byte + 32 + len]);
            });
        } else {
            copy_elements(batch, b * s / 2, symbol, 0, s / 2);
        }
    }

    /// Place consecutive symbols (`symbols.len()` = count × s) starting at symbol `b`.
    pub(crate) fn put_many(&self, batch: &mut [u8], b: usize, symbols: &[u8]) {
        if self.s.is_multiple_of(64) {
            batch[b * self.s..b * self.s + symbols.len()].copy_from_slice(symbols);
        } else {
            for (i, sym) in symbols.chunks_exact(self.s).enumerate() {
                self.put(batch, b + i, sym);
            }
        }
    }

    /// Read consecutive symbols starting at symbol `b` into `symbols` (count × s bytes).
    pub(crate) fn get_many(&self, batch: &[u8], b: usize, symbols: &mut [u8]) {
        if self.s.is_multiple_of(64) {
            symbols.copy_from_slice(&batch[b * self.s..b * self.s + symbols.len()]);
        } else {
            for (i, sym) in symbols.chunks_exact_mut(self.s).enumerate() {
                self.get(batch, b + i, sym);
            }
        }
    }
}

/// The runs of `t` tail elements starting at element `e` of a tail area that starts at chunk
/// `tails`: `f(byte offset of the run's low bytes, first element of the run within the tail,
/// run length)`; the high bytes sit 32 bytes further. A tail crosses at most one chunk boundary.
#[inline]
fn tail_runs(tails: usize, e: usize, t: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (c, o) = (e / 32, e % 32);
    let first = t.min(32 - o);
    f((tails + c) * 64 + o, 0, first);
    if first < t {
        f((tails + c + 1) * 64, first, t - first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reed_solomon_simd::ReedSolomonEncoder;

    fn per_symbol_parity(k: usize, m: usize, cols: &[Vec<Vec<u8>>]) -> Vec<Vec<Vec<u8>>> {
        // cols[c][i] = symbol i of column c; returns parity[c][j]
        cols.iter()
            .map(|col| {
                let s = col[0].len();
                let mut e = ReedSolomonEncoder::new(k, m, s).unwrap();
                for sym in col {
                    e.add_original_shard(sym).unwrap();
                }
                let out: Vec<Vec<u8>> = e
                    .encode()
                    .unwrap()
                    .recovery_iter()
                    .map(|r| r.to_vec())
                    .collect();
                out
            })
            .collect()
    }

    #[test]
    fn batched_parity_equals_per_symbol_parity() {
        let (k, m) = (5, 4);
        for s in [
            2usize, 6, 30, 62, 64, 66, 76, 94, 126, 128, 130, 190, 302, 1206, 1250,
        ] {
            for batch in [1usize, 2, 3, 7, 11, 31, 32, 33, 70] {
                let cols: Vec<Vec<Vec<u8>>> = (0..batch)
                    .map(|c| {
                        (0..k)
                            .map(|i| {
                                (0..s)
                                    .map(|b| (b * 31 + i * 7 + c * 13 + 1) as u8)
                                    .collect()
                            })
                            .collect()
                    })
                    .collect();
                let expected = per_symbol_parity(k, m, &cols);
                let layout = BatchLayout::new(s, batch);
                let bytes = layout.shard_bytes();
                let mut enc = ReedSolomonEncoder::new(k, m, bytes).unwrap();
                for i in 0..k {
                    // garbage in the padding must not matter
                    let mut shard = vec![0xa5u8; bytes];
                    for (c, col) in cols.iter().enumerate() {
                        layout.put(&mut shard, c, &col[i]);
                    }
                    enc.add_original_shard(&shard).unwrap();
                }
                let res = enc.encode().unwrap();
                for j in 0..m {
                    let shard = res.recovery(j).unwrap();
                    for (c, exp) in expected.iter().enumerate() {
                        let mut sym = vec![0u8; s];
                        layout.get(shard, c, &mut sym);
                        assert_eq!(sym, exp[j], "s={s} batch={batch} col={c} parity={j}");
                    }
                }
            }
        }
    }

    #[test]
    fn put_get_round_trip() {
        for s in [2usize, 10, 64, 76, 98, 302, 1206, 4094] {
            for w in [10usize, 32, 45, 64, 100] {
                let layout = BatchLayout::new(s, w);
                let syms: Vec<u8> = (0..s * (w - 1)).map(|i| (i * 17 % 251) as u8).collect();
                let mut batch = vec![0u8; layout.shard_bytes()];
                layout.put_many(&mut batch, 1, &syms);
                let mut back = vec![0u8; s * (w - 1)];
                layout.get_many(&batch, 1, &mut back);
                assert_eq!(back, syms, "s={s} w={w}");
            }
        }
        // whole groups of the split layout need no padding at all
        assert_eq!(BatchLayout::new(1206, 64).shard_bytes(), 64 * 1206);
        assert_eq!(BatchLayout::new(302, 32).shard_bytes(), 32 * 302);
        assert_eq!(BatchLayout::new(76, 33).shard_bytes(), 32 * 76 + 64 + 64);
        assert_eq!(BatchLayout::new(100, 3).shard_bytes(), 3 * 64 + 2 * 64);
        assert_eq!(BatchLayout::new(62, 3).shard_bytes(), 3 * 62);
    }
}
