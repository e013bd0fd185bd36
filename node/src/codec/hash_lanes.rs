//! Keyed BLAKE3 of many equal-length inputs at once, 16 (AVX-512) or 8 (AVX2, portable) lanes.
//!
//! The sliver trees need up to n² leaf hashes of equal-length symbols and about 2n² inner nodes
//! of exactly 64 bytes; the `blake3` crate hashes one input at a time and only goes wide
//! *within* a long input. Here the compression function runs on independent inputs side by side
//! (one u32 lane each). The engine is picked at run time: AVX-512 (16 lanes) when the CPU has
//! it, AVX2 (8 lanes) otherwise, and a portable version that LLVM vectorises as it can. Every
//! engine is tested against `blake3::keyed_hash` on every machine that can run it.
//! `FLOE_HASH_ENGINE=portable|avx2|avx512` forces one (for benchmarks).

use std::sync::OnceLock;

/// A BLAKE3 output (the same type as `merkle::Hash`; defined here so that `merkle` depends on
/// this module and not the other way round).
type Hash = [u8; 32];

const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];
const MSG_PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const PARENT: u32 = 4;
const ROOT: u32 = 8;
const KEYED_HASH: u32 = 16;
const BLOCK: usize = 64;
const CHUNK: usize = 1024;

/// Chaining values of W lanes, word-major (`cv[word][lane]`).
type Cv<const W: usize> = [[u32; W]; 8];
/// One 64-byte message block per lane, as its two 32-byte halves (a node's two children need
/// not be adjacent in memory).
type Msg<'a, const W: usize> = [[&'a [u8; 32]; 2]; W];
/// Compress one block per lane into the lanes' chaining values, in place.
type CompressFn<const W: usize> = unsafe fn(&mut Cv<W>, &Msg<'_, W>, u64, u32, u32);

/// Message word order of each of the seven rounds (the permutation applied r times).
const SCHEDULE: [[usize; 16]; 7] = {
    let mut s = [[0usize; 16]; 7];
    let mut i = 0;
    while i < 16 {
        s[0][i] = i;
        i += 1;
    }
    let mut r = 1;
    while r < 7 {
        let mut i = 0;
        while i < 16 {
            s[r][i] = s[r - 1][MSG_PERMUTATION[i]];
            i += 1;
        }
        r += 1;
    }
    s
};

/// Which compression engine runs the lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Portable,
    Avx2,
    Avx512,
}

impl Engine {
    /// The fastest engine this CPU runs (or the one `FLOE_HASH_ENGINE` names, if it runs).
    pub fn best() -> Self {
        static BEST: OnceLock<Engine> = OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("FLOE_HASH_ENGINE")
                .ok()
                .and_then(|v| Self::available().into_iter().find(|e| e.name() == v.trim()));
            forced.unwrap_or_else(|| *Self::available().last().expect("portable"))
        })
    }
    /// Every engine this CPU runs, slowest first.
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut v = vec![Engine::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Engine::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                v.push(Engine::Avx512);
            }
        }
        v
    }
    pub fn name(self) -> &'static str {
        match self {
            Engine::Portable => "portable",
            Engine::Avx2 => "avx2",
            Engine::Avx512 => "avx512",
        }
    }
}

/// `out[i] = keyed_hash(key, bodies[i·len .. (i+1)·len])` for every i.
pub fn keyed_hash_many(key: &Hash, bodies: &[u8], len: usize, out: &mut [Hash]) {
    keyed_hash_many_with(Engine::best(), key, bodies, len, out)
}

/// `out[i] = keyed_hash(key, level[2i] ‖ level[2i+1])`: the parents of a tree level.
pub fn node_pairs(key: &Hash, level: &[Hash], out: &mut [Hash]) {
    node_pairs_with(Engine::best(), key, level, out)
}

/// `out[i] = keyed_hash(key, left[i] ‖ right[i])`: parents of two rows of a matrix of nodes
/// whose columns are trees.
pub fn node_rows(key: &Hash, left: &[Hash], right: &[Hash], out: &mut [Hash]) {
    node_rows_with(Engine::best(), key, left, right, out)
}

pub(crate) fn keyed_hash_many_with(
    e: Engine,
    key: &Hash,
    bodies: &[u8],
    len: usize,
    out: &mut [Hash],
) {
    assert_eq!(bodies.len(), out.len() * len, "bodies of equal length");
    match e {
        #[cfg(target_arch = "x86_64")]
        Engine::Avx512 => {
            let kw = key_words(key);
            let count = out.len();
            for (g, outs) in out.chunks_mut(16).enumerate() {
                let inputs: [&[u8]; 16] = std::array::from_fn(|l| {
                    let i = (g * 16 + l).min(count - 1);
                    &bodies[i * len..(i + 1) * len]
                });
                // SAFETY: `Engine::Avx512` is only chosen when the CPU has AVX-512F and BW.
                unsafe { avx512::many_entry(&kw, &inputs, outs) };
            }
        }
        #[cfg(target_arch = "x86_64")]
        Engine::Avx2 => many::<8>(avx2::compress_entry, key, bodies, len, out),
        _ => many::<8>(portable_compress::<8>, key, bodies, len, out),
    }
}

pub(crate) fn node_pairs_with(e: Engine, key: &Hash, level: &[Hash], out: &mut [Hash]) {
    assert_eq!(level.len(), 2 * out.len(), "two children per parent");
    let get = |i: usize| [&level[2 * i], &level[2 * i + 1]];
    nodes_with(e, key, get, out)
}

pub(crate) fn node_rows_with(
    e: Engine,
    key: &Hash,
    left: &[Hash],
    right: &[Hash],
    out: &mut [Hash],
) {
    assert!(left.len() == out.len() && right.len() == out.len());
    let get = |i: usize| [&left[i], &right[i]];
    nodes_with(e, key, get, out)
}

fn nodes_with<'a>(e: Engine, key: &Hash, get: impl Fn(usize) -> [&'a Hash; 2], out: &mut [Hash]) {
    match e {
        #[cfg(target_arch = "x86_64")]
        Engine::Avx512 => {
            let kw = key_words(key);
            let count = out.len();
            for (g, outs) in out.chunks_mut(16).enumerate() {
                let msg: Msg<'a, 16> = std::array::from_fn(|l| get((g * 16 + l).min(count - 1)));
                // SAFETY: `Engine::Avx512` is only chosen when the CPU has AVX-512F.
                unsafe { avx512::nodes_entry(&kw, &msg, outs) };
            }
        }
        #[cfg(target_arch = "x86_64")]
        Engine::Avx2 => nodes::<8>(avx2::compress_entry, key, get, out),
        _ => nodes::<8>(portable_compress::<8>, key, get, out),
    }
}

fn key_words(key: &Hash) -> [u32; 8] {
    std::array::from_fn(|w| u32::from_le_bytes(key[4 * w..4 * w + 4].try_into().expect("4")))
}

fn splat_cv<const W: usize>(words: &[u32; 8]) -> Cv<W> {
    std::array::from_fn(|w| [words[w]; W])
}

fn write_out<const W: usize>(cv: &Cv<W>, out: &mut [Hash]) {
    for (l, o) in out.iter_mut().enumerate() {
        for w in 0..8 {
            o[4 * w..4 * w + 4].copy_from_slice(&cv[w][l].to_le_bytes());
        }
    }
}

/// Single-block keyed hashes of 64-byte inputs, W at a time.
fn nodes<'a, const W: usize>(
    compress: CompressFn<W>,
    key: &Hash,
    get: impl Fn(usize) -> [&'a Hash; 2],
    out: &mut [Hash],
) {
    let kw = key_words(key);
    let count = out.len();
    for (g, outs) in out.chunks_mut(W).enumerate() {
        let last = count - 1;
        let msg: Msg<'a, W> = std::array::from_fn(|l| get((g * W + l).min(last)));
        let mut cv = splat_cv::<W>(&kw);
        // SAFETY: `compress` is an engine this CPU supports (see `Engine::available`).
        unsafe {
            compress(
                &mut cv,
                &msg,
                0,
                BLOCK as u32,
                CHUNK_START | CHUNK_END | ROOT | KEYED_HASH,
            )
        };
        write_out(&cv, outs);
    }
}

/// Keyed hashes of equal-length inputs of any length, W at a time.
fn many<const W: usize>(
    compress: CompressFn<W>,
    key: &Hash,
    bodies: &[u8],
    len: usize,
    out: &mut [Hash],
) {
    let kw = key_words(key);
    let chunks = len.div_ceil(CHUNK).max(1);
    let count = out.len();
    for (g, outs) in out.chunks_mut(W).enumerate() {
        // short last group: repeat the last input in the idle lanes
        let inputs: [&[u8]; W] = std::array::from_fn(|l| {
            let i = (g * W + l).min(count - 1);
            &bodies[i * len..(i + 1) * len]
        });
        let cv = subtree::<W>(compress, &kw, &inputs, 0, chunks, true);
        write_out(&cv, outs);
    }
}

fn halves(b: &[u8]) -> [&[u8; 32]; 2] {
    [
        b[..32].try_into().expect("32 bytes"),
        b[32..64].try_into().expect("32 bytes"),
    ]
}

/// Chaining values of chunk `c` of W inputs of equal length.
fn chunk_cvs<const W: usize>(
    compress: CompressFn<W>,
    kw: &[u32; 8],
    inputs: &[&[u8]; W],
    c: usize,
    root: bool,
) -> Cv<W> {
    let len = inputs[0].len();
    let start = c * CHUNK;
    let end = (start + CHUNK).min(len);
    let blocks = (end - start).div_ceil(BLOCK).max(1);
    let mut cv = splat_cv::<W>(kw);
    let mut bufs = [[0u8; BLOCK]; W];
    for b in 0..blocks {
        let at = start + b * BLOCK;
        let block_len = (end - at).min(BLOCK);
        let mut flags = KEYED_HASH;
        if b == 0 {
            flags |= CHUNK_START;
        }
        if b == blocks - 1 {
            flags |= CHUNK_END;
            if root {
                flags |= ROOT;
            }
        }
        if block_len == BLOCK {
            let msg: Msg<'_, W> = std::array::from_fn(|l| halves(&inputs[l][at..at + BLOCK]));
            // SAFETY: `compress` is an engine this CPU supports.
            unsafe { compress(&mut cv, &msg, c as u64, BLOCK as u32, flags) };
        } else {
            for (buf, input) in bufs.iter_mut().zip(inputs) {
                *buf = [0; BLOCK];
                buf[..block_len].copy_from_slice(&input[at..at + block_len]);
            }
            let msg: Msg<'_, W> = std::array::from_fn(|l| halves(&bufs[l]));
            // SAFETY: as above.
            unsafe { compress(&mut cv, &msg, c as u64, block_len as u32, flags) };
        }
    }
    cv
}

/// BLAKE3's tree over chunks `[lo, hi)`: the left subtree takes the largest power of two.
fn subtree<const W: usize>(
    compress: CompressFn<W>,
    kw: &[u32; 8],
    inputs: &[&[u8]; W],
    lo: usize,
    hi: usize,
    root: bool,
) -> Cv<W> {
    if hi - lo == 1 {
        return chunk_cvs(compress, kw, inputs, lo, root);
    }
    let left_len = 1usize << (usize::BITS - 1 - (hi - lo - 1).leading_zeros());
    let l = subtree(compress, kw, inputs, lo, lo + left_len, false);
    let r = subtree(compress, kw, inputs, lo + left_len, hi, false);
    let mut bufs = [[0u8; BLOCK]; W];
    for (lane, buf) in bufs.iter_mut().enumerate() {
        for w in 0..8 {
            buf[4 * w..4 * w + 4].copy_from_slice(&l[w][lane].to_le_bytes());
            buf[32 + 4 * w..32 + 4 * w + 4].copy_from_slice(&r[w][lane].to_le_bytes());
        }
    }
    let msg: Msg<'_, W> = std::array::from_fn(|l| halves(&bufs[l]));
    let mut cv = splat_cv::<W>(kw);
    let flags = KEYED_HASH | PARENT | if root { ROOT } else { 0 };
    // SAFETY: `compress` is an engine this CPU supports.
    unsafe { compress(&mut cv, &msg, 0, BLOCK as u32, flags) };
    cv
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn g<const W: usize>(
    st: &mut [[u32; W]; 16],
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    x: &[u32; W],
    y: &[u32; W],
) {
    for l in 0..W {
        st[a][l] = st[a][l].wrapping_add(st[b][l]).wrapping_add(x[l]);
        st[d][l] = (st[d][l] ^ st[a][l]).rotate_right(16);
        st[c][l] = st[c][l].wrapping_add(st[d][l]);
        st[b][l] = (st[b][l] ^ st[c][l]).rotate_right(12);
        st[a][l] = st[a][l].wrapping_add(st[b][l]).wrapping_add(y[l]);
        st[d][l] = (st[d][l] ^ st[a][l]).rotate_right(8);
        st[c][l] = st[c][l].wrapping_add(st[d][l]);
        st[b][l] = (st[b][l] ^ st[c][l]).rotate_right(7);
    }
}

/// The compression on plain arrays: correct everywhere, vectorised as LLVM sees fit.
///
/// # Safety
/// None needed (it is `unsafe` only to share the engines' function type).
unsafe fn portable_compress<const W: usize>(
    cv: &mut Cv<W>,
    msg: &Msg<'_, W>,
    counter: u64,
    block_len: u32,
    flags: u32,
) {
    let mut m = [[0u32; W]; 16];
    for (l, halves) in msg.iter().enumerate() {
        for (w, word) in m.iter_mut().enumerate() {
            let h = halves[w / 8];
            let o = 4 * (w % 8);
            word[l] = u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        }
    }
    let mut st: [[u32; W]; 16] = [[0; W]; 16];
    st[..8].copy_from_slice(cv);
    for i in 0..4 {
        st[8 + i] = [IV[i]; W];
    }
    st[12] = [counter as u32; W];
    st[13] = [(counter >> 32) as u32; W];
    st[14] = [block_len; W];
    st[15] = [flags; W];
    for sc in &SCHEDULE {
        g(&mut st, 0, 4, 8, 12, &m[sc[0]], &m[sc[1]]);
        g(&mut st, 1, 5, 9, 13, &m[sc[2]], &m[sc[3]]);
        g(&mut st, 2, 6, 10, 14, &m[sc[4]], &m[sc[5]]);
        g(&mut st, 3, 7, 11, 15, &m[sc[6]], &m[sc[7]]);
        g(&mut st, 0, 5, 10, 15, &m[sc[8]], &m[sc[9]]);
        g(&mut st, 1, 6, 11, 12, &m[sc[10]], &m[sc[11]]);
        g(&mut st, 2, 7, 8, 13, &m[sc[12]], &m[sc[13]]);
        g(&mut st, 3, 4, 9, 14, &m[sc[14]], &m[sc[15]]);
    }
    for i in 0..8 {
        for l in 0..W {
            cv[i][l] = st[i][l] ^ st[i + 8][l];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The compression with AVX2 intrinsics: one 256-bit register per state word, 8 lanes.
    use std::arch::x86_64::*;

    use super::{Cv, Msg, IV, SCHEDULE};

    const W: usize = 8;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot16(x: __m256i) -> __m256i {
        let m = _mm256_setr_epi8(
            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11,
            8, 9, 14, 15, 12, 13,
        );
        _mm256_shuffle_epi8(x, m)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot8(x: __m256i) -> __m256i {
        let m = _mm256_setr_epi8(
            1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10,
            11, 8, 13, 14, 15, 12,
        );
        _mm256_shuffle_epi8(x, m)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot12(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot7(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25))
    }

    /// One quarter-round (a macro: expanded inside the `avx2` function, see the AVX-512
    /// engine).
    macro_rules! g {
        ($st:ident, $a:expr, $b:expr, $c:expr, $d:expr, $x:expr, $y:expr) => {
            $st[$a] = _mm256_add_epi32(_mm256_add_epi32($st[$a], $st[$b]), $x);
            $st[$d] = rot16(_mm256_xor_si256($st[$d], $st[$a]));
            $st[$c] = _mm256_add_epi32($st[$c], $st[$d]);
            $st[$b] = rot12(_mm256_xor_si256($st[$b], $st[$c]));
            $st[$a] = _mm256_add_epi32(_mm256_add_epi32($st[$a], $st[$b]), $y);
            $st[$d] = rot8(_mm256_xor_si256($st[$d], $st[$a]));
            $st[$c] = _mm256_add_epi32($st[$c], $st[$d]);
            $st[$b] = rot7(_mm256_xor_si256($st[$b], $st[$c]));
        };
    }

    /// One round with constant message indices (no bounds checks, see the AVX-512 engine).
    macro_rules! round {
        ($st:ident, $m:ident, $r:literal) => {
            g!($st, 0, 4, 8, 12, $m[SCHEDULE[$r][0]], $m[SCHEDULE[$r][1]]);
            g!($st, 1, 5, 9, 13, $m[SCHEDULE[$r][2]], $m[SCHEDULE[$r][3]]);
            g!($st, 2, 6, 10, 14, $m[SCHEDULE[$r][4]], $m[SCHEDULE[$r][5]]);
            g!($st, 3, 7, 11, 15, $m[SCHEDULE[$r][6]], $m[SCHEDULE[$r][7]]);
            g!($st, 0, 5, 10, 15, $m[SCHEDULE[$r][8]], $m[SCHEDULE[$r][9]]);
            g!(
                $st,
                1,
                6,
                11,
                12,
                $m[SCHEDULE[$r][10]],
                $m[SCHEDULE[$r][11]]
            );
            g!($st, 2, 7, 8, 13, $m[SCHEDULE[$r][12]], $m[SCHEDULE[$r][13]]);
            g!($st, 3, 4, 9, 14, $m[SCHEDULE[$r][14]], $m[SCHEDULE[$r][15]]);
        };
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(p: &[u8; 32]) -> __m256i {
        // SAFETY: 32 readable bytes; loadu has no alignment requirement.
        unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
    }

    /// Rows r[l] = eight u32 of lane l  →  columns out[w] = word w of every lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256(u0, u4, 0x20),
            _mm256_permute2x128_si256(u1, u5, 0x20),
            _mm256_permute2x128_si256(u2, u6, 0x20),
            _mm256_permute2x128_si256(u3, u7, 0x20),
            _mm256_permute2x128_si256(u0, u4, 0x31),
            _mm256_permute2x128_si256(u1, u5, 0x31),
            _mm256_permute2x128_si256(u2, u6, 0x31),
            _mm256_permute2x128_si256(u3, u7, 0x31),
        ]
    }

    #[target_feature(enable = "avx2")]
    fn compress(cv: &mut Cv<W>, msg: &Msg<'_, W>, counter: u64, block_len: u32, flags: u32) {
        let lo = transpose(std::array::from_fn(|l| load(msg[l][0])));
        let hi = transpose(std::array::from_fn(|l| load(msg[l][1])));
        let mut mw = [_mm256_setzero_si256(); 16];
        mw[..8].copy_from_slice(&lo);
        mw[8..].copy_from_slice(&hi);
        // SAFETY: cv[w] is 8 × u32 = 32 readable bytes.
        let c: [__m256i; 8] =
            std::array::from_fn(|w| unsafe { _mm256_loadu_si256(cv[w].as_ptr().cast()) });
        let mut st: [__m256i; 16] = [
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            c[7],
            _mm256_set1_epi32(IV[0] as i32),
            _mm256_set1_epi32(IV[1] as i32),
            _mm256_set1_epi32(IV[2] as i32),
            _mm256_set1_epi32(IV[3] as i32),
            _mm256_set1_epi32(counter as u32 as i32),
            _mm256_set1_epi32((counter >> 32) as u32 as i32),
            _mm256_set1_epi32(block_len as i32),
            _mm256_set1_epi32(flags as i32),
        ];
        round!(st, mw, 0);
        round!(st, mw, 1);
        round!(st, mw, 2);
        round!(st, mw, 3);
        round!(st, mw, 4);
        round!(st, mw, 5);
        round!(st, mw, 6);
        for i in 0..8 {
            let v = _mm256_xor_si256(st[i], st[i + 8]);
            // SAFETY: cv[i] is 32 writable bytes; storeu has no alignment requirement.
            unsafe { _mm256_storeu_si256(cv[i].as_mut_ptr().cast(), v) };
        }
    }

    /// # Safety
    /// The CPU must support AVX2.
    pub(super) unsafe fn compress_entry(
        cv: &mut Cv<W>,
        msg: &Msg<'_, W>,
        counter: u64,
        block_len: u32,
        flags: u32,
    ) {
        // SAFETY: the caller checked AVX2.
        unsafe { compress(cv, msg, counter, block_len, flags) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The compression with AVX-512F intrinsics: one 512-bit register per state word, 16
    //! lanes, native 32-bit rotations.
    use std::arch::x86_64::*;

    use super::{Msg, CHUNK_END, CHUNK_START, IV, KEYED_HASH, PARENT, ROOT, SCHEDULE};

    const W: usize = 16;

    /// One quarter-round on four state words (a macro, so that it is always expanded inside
    /// an `avx512f` function: a helper function without the feature would turn every
    /// intrinsic into a call).
    macro_rules! g {
        ($st:ident, $a:expr, $b:expr, $c:expr, $d:expr, $x:expr, $y:expr) => {
            $st[$a] = _mm512_add_epi32(_mm512_add_epi32($st[$a], $st[$b]), $x);
            $st[$d] = _mm512_ror_epi32::<16>(_mm512_xor_si512($st[$d], $st[$a]));
            $st[$c] = _mm512_add_epi32($st[$c], $st[$d]);
            $st[$b] = _mm512_ror_epi32::<12>(_mm512_xor_si512($st[$b], $st[$c]));
            $st[$a] = _mm512_add_epi32(_mm512_add_epi32($st[$a], $st[$b]), $y);
            $st[$d] = _mm512_ror_epi32::<8>(_mm512_xor_si512($st[$d], $st[$a]));
            $st[$c] = _mm512_add_epi32($st[$c], $st[$d]);
            $st[$b] = _mm512_ror_epi32::<7>(_mm512_xor_si512($st[$b], $st[$c]));
        };
    }

    /// One round; `$r` is a literal, so every message index is a constant (an index read from
    /// the schedule at run time would need a bounds check, and the possible panic forces the
    /// state out to memory after every step).
    macro_rules! round {
        ($st:ident, $m:ident, $r:literal) => {
            g!($st, 0, 4, 8, 12, $m[SCHEDULE[$r][0]], $m[SCHEDULE[$r][1]]);
            g!($st, 1, 5, 9, 13, $m[SCHEDULE[$r][2]], $m[SCHEDULE[$r][3]]);
            g!($st, 2, 6, 10, 14, $m[SCHEDULE[$r][4]], $m[SCHEDULE[$r][5]]);
            g!($st, 3, 7, 11, 15, $m[SCHEDULE[$r][6]], $m[SCHEDULE[$r][7]]);
            g!($st, 0, 5, 10, 15, $m[SCHEDULE[$r][8]], $m[SCHEDULE[$r][9]]);
            g!(
                $st,
                1,
                6,
                11,
                12,
                $m[SCHEDULE[$r][10]],
                $m[SCHEDULE[$r][11]]
            );
            g!($st, 2, 7, 8, 13, $m[SCHEDULE[$r][12]], $m[SCHEDULE[$r][13]]);
            g!($st, 3, 4, 9, 14, $m[SCHEDULE[$r][14]], $m[SCHEDULE[$r][15]]);
        };
    }

    /// The seven rounds, on a local copy of the state (kept in registers).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rounds(state: &mut [__m512i; 16], m: &[__m512i; 16]) {
        let mut st = *state;
        let m = *m;
        round!(st, m, 0);
        round!(st, m, 1);
        round!(st, m, 2);
        round!(st, m, 3);
        round!(st, m, 4);
        round!(st, m, 5);
        round!(st, m, 6);
        *state = st;
    }

    /// One lane's 64-byte block from its two halves.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_block(h: &[&[u8; 32]; 2]) -> __m512i {
        // SAFETY: each half is 32 readable bytes; loadu has no alignment requirement.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_si256(h[0].as_ptr().cast()),
                _mm256_loadu_si256(h[1].as_ptr().cast()),
            )
        };
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// The message words of 16 lanes: lane rows loaded, then transposed to word columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_msg(msg: &Msg<'_, W>) -> [__m512i; 16] {
        let mut rows = [_mm512_setzero_si512(); 16];
        for (r, m) in rows.iter_mut().zip(msg) {
            *r = load_block(m);
        }
        transpose(&rows)
    }

    /// 16 rows (e.g. lane l's 16 message words) → 16 columns (word w of every lane).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose(r: &[__m512i; 16]) -> [__m512i; 16] {
        // within 128-bit blocks: pairs of lanes interleaved
        let mut t = [_mm512_setzero_si512(); 16];
        let mut i = 0;
        while i < 16 {
            t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
            i += 2;
        }
        // v[4g + j]: block q holds word 4q+j of lanes 4g..4g+3
        let mut v = [_mm512_setzero_si512(); 16];
        let mut g = 0;
        while g < 4 {
            let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            v[4 * g] = _mm512_unpacklo_epi64(t0, t2);
            v[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
            v[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
            v[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
            g += 1;
        }
        let mut out = [_mm512_setzero_si512(); 16];
        let mut j = 0;
        while j < 4 {
            let x0 = _mm512_shuffle_i32x4::<0x44>(v[j], v[4 + j]);
            let x1 = _mm512_shuffle_i32x4::<0xEE>(v[j], v[4 + j]);
            let x2 = _mm512_shuffle_i32x4::<0x44>(v[8 + j], v[12 + j]);
            let x3 = _mm512_shuffle_i32x4::<0xEE>(v[8 + j], v[12 + j]);
            out[j] = _mm512_shuffle_i32x4::<0x88>(x0, x2);
            out[4 + j] = _mm512_shuffle_i32x4::<0xDD>(x0, x2);
            out[8 + j] = _mm512_shuffle_i32x4::<0x88>(x1, x3);
            out[12 + j] = _mm512_shuffle_i32x4::<0xDD>(x1, x3);
            j += 1;
        }
        out
    }

    /// Keyed hashes of 16 single-block (64-byte) inputs, written straight to `out` (up to 16
    /// hashes): the inner-node case, kept in registers from the loads to the stores.
    #[target_feature(enable = "avx512f")]
    fn nodes(kw: &[u32; 8], msg: &Msg<'_, W>, out: &mut [[u8; 32]]) {
        let mw = load_msg(msg);
        let mut st: [__m512i; 16] = [
            _mm512_set1_epi32(kw[0] as i32),
            _mm512_set1_epi32(kw[1] as i32),
            _mm512_set1_epi32(kw[2] as i32),
            _mm512_set1_epi32(kw[3] as i32),
            _mm512_set1_epi32(kw[4] as i32),
            _mm512_set1_epi32(kw[5] as i32),
            _mm512_set1_epi32(kw[6] as i32),
            _mm512_set1_epi32(kw[7] as i32),
            _mm512_set1_epi32(IV[0] as i32),
            _mm512_set1_epi32(IV[1] as i32),
            _mm512_set1_epi32(IV[2] as i32),
            _mm512_set1_epi32(IV[3] as i32),
            _mm512_setzero_si512(),
            _mm512_setzero_si512(),
            _mm512_set1_epi32(64),
            _mm512_set1_epi32((CHUNK_START | CHUNK_END | ROOT | KEYED_HASH) as i32),
        ];
        rounds(&mut st, &mw);
        // words → lanes: the same 16×16 transpose, with the upper eight rows empty
        let mut h = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            h[i] = _mm512_xor_si512(st[i], st[i + 8]);
        }
        let lanes = transpose(&h);
        for (o, v) in out.iter_mut().zip(lanes) {
            // SAFETY: `o` is 32 writable bytes; storeu has no alignment requirement.
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm512_castsi512_si256(v)) };
        }
    }

    /// Keyed hashes of 16 inputs of one length, the whole BLAKE3 tree in registers: full
    /// blocks are loaded straight from the inputs, a last partial block with a masked load
    /// (no copy into a padded buffer), chunk chaining values are merged on a stack of
    /// word-major vectors (a parent's message needs no transpose), and the 16 hashes are
    /// transposed out in registers.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn many(kw: &[u32; 8], inputs: &[&[u8]; W], out: &mut [[u8; 32]]) {
        const CHUNK: usize = 1024;
        let len = inputs[0].len();
        let chunks = len.div_ceil(CHUNK).max(1);
        let key: [__m512i; 8] = std::array::from_fn(|w| _mm512_set1_epi32(kw[w] as i32));
        // chaining values of completed subtrees (at most log2(64 chunks) + 1 deep)
        let mut stack = [[_mm512_setzero_si512(); 8]; 8];
        let mut depth = 0;
        let mut cv = key;
        for c in 0..chunks {
            let start = c * CHUNK;
            let end = (start + CHUNK).min(len);
            let blocks = (end - start).div_ceil(64).max(1);
            cv = key;
            for b in 0..blocks {
                let at = start + b * 64;
                let block_len = (end - at).min(64);
                let mut rows = [_mm512_setzero_si512(); 16];
                if block_len == 64 {
                    for (r, input) in rows.iter_mut().zip(inputs) {
                        // SAFETY: at + 64 <= len: 64 readable bytes.
                        *r = unsafe { _mm512_loadu_si512(input.as_ptr().add(at).cast()) };
                    }
                } else {
                    let mask: u64 = (1u64 << block_len) - 1;
                    for (r, input) in rows.iter_mut().zip(inputs) {
                        // SAFETY: at <= len, and the mask reads only the block_len bytes that
                        // remain (masked-out bytes are never accessed).
                        *r =
                            unsafe { _mm512_maskz_loadu_epi8(mask, input.as_ptr().add(at).cast()) };
                    }
                }
                let m = transpose(&rows);
                let mut flags = KEYED_HASH;
                if b == 0 {
                    flags |= CHUNK_START;
                }
                if b == blocks - 1 {
                    flags |= CHUNK_END;
                    if chunks == 1 {
                        flags |= ROOT;
                    }
                }
                cv = compress_words(&cv, &m, c as u64, block_len as u32, flags);
            }
            if c + 1 < chunks {
                // more chunks follow: merge every subtree this chunk completes
                let mut total = c + 1;
                while total % 2 == 0 {
                    depth -= 1;
                    cv = parent(&stack[depth], &cv, kw, false);
                    total /= 2;
                }
                stack[depth] = cv;
                depth += 1;
            }
        }
        while depth > 0 {
            depth -= 1;
            cv = parent(&stack[depth], &cv, kw, depth == 0);
        }
        let mut h = [_mm512_setzero_si512(); 16];
        h[..8].copy_from_slice(&cv);
        let lanes = transpose(&h);
        for (o, v) in out.iter_mut().zip(lanes) {
            // SAFETY: `o` is 32 writable bytes; storeu has no alignment requirement.
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm512_castsi512_si256(v)) };
        }
    }

    /// One compression of word-major message `m` into chaining value `cv`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn compress_words(
        cv: &[__m512i; 8],
        m: &[__m512i; 16],
        counter: u64,
        block_len: u32,
        flags: u32,
    ) -> [__m512i; 8] {
        let mut st: [__m512i; 16] = [
            cv[0],
            cv[1],
            cv[2],
            cv[3],
            cv[4],
            cv[5],
            cv[6],
            cv[7],
            _mm512_set1_epi32(IV[0] as i32),
            _mm512_set1_epi32(IV[1] as i32),
            _mm512_set1_epi32(IV[2] as i32),
            _mm512_set1_epi32(IV[3] as i32),
            _mm512_set1_epi32(counter as u32 as i32),
            _mm512_set1_epi32((counter >> 32) as u32 as i32),
            _mm512_set1_epi32(block_len as i32),
            _mm512_set1_epi32(flags as i32),
        ];
        rounds(&mut st, m);
        std::array::from_fn(|i| _mm512_xor_si512(st[i], st[i + 8]))
    }

    /// A parent node: its message is the two children's chaining values, already word-major.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn parent(
        left: &[__m512i; 8],
        right: &[__m512i; 8],
        kw: &[u32; 8],
        root: bool,
    ) -> [__m512i; 8] {
        let mut m = [_mm512_setzero_si512(); 16];
        m[..8].copy_from_slice(left);
        m[8..].copy_from_slice(right);
        let key: [__m512i; 8] = std::array::from_fn(|w| _mm512_set1_epi32(kw[w] as i32));
        let flags = KEYED_HASH | PARENT | if root { ROOT } else { 0 };
        compress_words(&key, &m, 0, 64, flags)
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW; the inputs have one length; `out` holds at
    /// most 16 hashes.
    pub(super) unsafe fn many_entry(kw: &[u32; 8], inputs: &[&[u8]; W], out: &mut [[u8; 32]]) {
        debug_assert!(out.len() <= W && inputs.iter().all(|i| i.len() == inputs[0].len()));
        // SAFETY: the caller checked AVX-512F and BW.
        unsafe { many(kw, inputs, out) }
    }

    /// # Safety
    /// The CPU must support AVX-512F; `out` holds at most 16 hashes.
    pub(super) unsafe fn nodes_entry(kw: &[u32; 8], msg: &Msg<'_, W>, out: &mut [[u8; 32]]) {
        debug_assert!(out.len() <= W);
        // SAFETY: the caller checked AVX-512F.
        unsafe { nodes(kw, msg, out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Inputs of up to 64 chunks (the largest symbol) merge subtrees several levels deep.
    #[test]
    fn every_engine_matches_blake3_for_long_inputs() {
        let d = data(3 * 65_534);
        let key = [5u8; 32];
        for e in Engine::available() {
            for len in [8192usize, 9 * 1024 + 7, 31 * 1024, 65_534] {
                for count in [1usize, 3] {
                    let mut out = vec![[0u8; 32]; count];
                    keyed_hash_many_with(e, &key, &d[..count * len], len, &mut out);
                    for (i, o) in out.iter().enumerate() {
                        let want = blake3::keyed_hash(&key, &d[i * len..(i + 1) * len]);
                        assert_eq!(o, want.as_bytes(), "{e:?} len={len} i={i}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_engine_matches_blake3_for_all_lengths() {
        let d = data(80_000);
        let key = *blake3::hash(b"test key").as_bytes();
        for e in Engine::available() {
            for len in [
                0usize, 1, 2, 6, 31, 32, 33, 62, 63, 64, 65, 127, 128, 1022, 1023, 1024, 1025,
                1206, 2047, 2048, 2049, 3072, 4097, 5000,
            ] {
                for count in [1usize, 3, 8, 9, 15, 16, 17, 33] {
                    if count * len > d.len() {
                        continue;
                    }
                    let mut out = vec![[0u8; 32]; count];
                    keyed_hash_many_with(e, &key, &d[..count * len], len, &mut out);
                    for (i, o) in out.iter().enumerate() {
                        let want = blake3::keyed_hash(&key, &d[i * len..(i + 1) * len]);
                        assert_eq!(o, want.as_bytes(), "{e:?} len={len} i={i}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_engine_matches_blake3_for_nodes() {
        let key = *blake3::hash(b"node key").as_bytes();
        let level: Vec<Hash> = (0..66u32)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let join = |a: &Hash, b: &Hash| {
            let mut x = [0u8; 64];
            x[..32].copy_from_slice(a);
            x[32..].copy_from_slice(b);
            *blake3::keyed_hash(&key, &x).as_bytes()
        };
        for e in Engine::available() {
            for count in [1usize, 5, 16, 17, 33] {
                let mut out = vec![[0u8; 32]; count];
                node_pairs_with(e, &key, &level[..2 * count], &mut out);
                for (i, o) in out.iter().enumerate() {
                    assert_eq!(
                        *o,
                        join(&level[2 * i], &level[2 * i + 1]),
                        "{e:?} pairs {i}"
                    );
                }
                let (l, r) = (&level[..count], &level[33..33 + count]);
                node_rows_with(e, &key, l, r, &mut out);
                for (i, o) in out.iter().enumerate() {
                    assert_eq!(*o, join(&l[i], &r[i]), "{e:?} rows {i}");
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p floe-node --lib hash_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn hash_speed() {
        let key = [3u8; 32];
        let pairs = vec![9u8; 64 * 1_000_000];
        let mut out = vec![[0u8; 32]; 1_000_000];
        let level: Vec<Hash> = pairs
            .chunks(32)
            .map(|c| c.try_into().expect("32"))
            .collect();
        for e in Engine::available() {
            let t = std::time::Instant::now();
            node_pairs_with(e, &key, &level, &mut out);
            println!("{e:?}: 1M nodes {:?}", t.elapsed());
            let t = std::time::Instant::now();
            keyed_hash_many_with(e, &key, &pairs[..1206 * 50_000], 1206, &mut out[..50_000]);
            println!("{e:?}: 50k leaves of 1206 bytes {:?}", t.elapsed());
        }
        let t = std::time::Instant::now();
        for (i, o) in out.iter_mut().enumerate() {
            *o = *blake3::keyed_hash(&key, &pairs[i * 64..i * 64 + 64]).as_bytes();
        }
        println!("1M blake3::keyed_hash of 64 bytes: {:?}", t.elapsed());
    }
}
