//! BLAKE3 of many equal-length inputs at once, eight per SIMD lane group.
//!
//! The sliver hashes need n² leaf hashes of short symbols and about as many inner nodes; the
//! `blake3` crate hashes one input at a time and only goes wide *within* a long input. Here the
//! compression function runs on eight independent inputs side by side (one u32 lane each), which
//! LLVM turns into AVX2 when the CPU has it. Output is byte-identical to `blake3::hash`
//! (tested below); inputs of any length are supported because all inputs share one tree shape.

const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];
const MSG_PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const PARENT: u32 = 4;
const ROOT: u32 = 8;
const BLOCK: usize = 64;
const CHUNK: usize = 1024;

/// Lanes hashed together.
pub const LANES: usize = 8;
type V = [u32; LANES];
/// A chaining value per lane: word-major (`cv[word][lane]`).
type Cv = [V; 8];

#[inline(always)]
fn add(a: V, b: V) -> V {
    let mut r = [0; LANES];
    for i in 0..LANES {
        r[i] = a[i].wrapping_add(b[i]);
    }
    r
}
#[inline(always)]
fn xor(a: V, b: V) -> V {
    let mut r = [0; LANES];
    for i in 0..LANES {
        r[i] = a[i] ^ b[i];
    }
    r
}
#[inline(always)]
fn rotr(a: V, n: u32) -> V {
    let mut r = [0; LANES];
    for i in 0..LANES {
        r[i] = a[i].rotate_right(n);
    }
    r
}
#[inline(always)]
fn splat(x: u32) -> V {
    [x; LANES]
}

#[inline(always)]
fn g(st: &mut [V; 16], a: usize, b: usize, c: usize, d: usize, x: V, y: V) {
    st[a] = add(add(st[a], st[b]), x);
    st[d] = rotr(xor(st[d], st[a]), 16);
    st[c] = add(st[c], st[d]);
    st[b] = rotr(xor(st[b], st[c]), 12);
    st[a] = add(add(st[a], st[b]), y);
    st[d] = rotr(xor(st[d], st[a]), 8);
    st[c] = add(st[c], st[d]);
    st[b] = rotr(xor(st[b], st[c]), 7);
}

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

#[inline(always)]
fn round(st: &mut [V; 16], m: &[V; 16], sc: &[usize; 16]) {
    g(st, 0, 4, 8, 12, m[sc[0]], m[sc[1]]);
    g(st, 1, 5, 9, 13, m[sc[2]], m[sc[3]]);
    g(st, 2, 6, 10, 14, m[sc[4]], m[sc[5]]);
    g(st, 3, 7, 11, 15, m[sc[6]], m[sc[7]]);
    g(st, 0, 5, 10, 15, m[sc[8]], m[sc[9]]);
    g(st, 1, 6, 11, 12, m[sc[10]], m[sc[11]]);
    g(st, 2, 7, 8, 13, m[sc[12]], m[sc[13]]);
    g(st, 3, 4, 9, 14, m[sc[14]], m[sc[15]]);
}

#[inline(always)]
fn compress_generic(cv: &Cv, m: &[V; 16], counter: u64, block_len: u32, flags: u32) -> Cv {
    let mut st: [V; 16] = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        splat(IV[0]),
        splat(IV[1]),
        splat(IV[2]),
        splat(IV[3]),
        splat(counter as u32),
        splat((counter >> 32) as u32),
        splat(block_len),
        splat(flags),
    ];
    round(&mut st, m, &SCHEDULE[0]);
    round(&mut st, m, &SCHEDULE[1]);
    round(&mut st, m, &SCHEDULE[2]);
    round(&mut st, m, &SCHEDULE[3]);
    round(&mut st, m, &SCHEDULE[4]);
    round(&mut st, m, &SCHEDULE[5]);
    round(&mut st, m, &SCHEDULE[6]);
    let mut out = [[0; LANES]; 8];
    for i in 0..8 {
        out[i] = xor(st[i], st[i + 8]);
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The same compression with explicit AVX2 intrinsics: one 256-bit register per state word.
    use std::arch::x86_64::*;

    use super::{Cv, IV, LANES, SCHEDULE, V};

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

    #[inline]
    #[target_feature(enable = "avx2")]
    fn g(st: &mut [__m256i; 16], a: usize, b: usize, c: usize, d: usize, x: __m256i, y: __m256i) {
        st[a] = _mm256_add_epi32(_mm256_add_epi32(st[a], st[b]), x);
        st[d] = rot16(_mm256_xor_si256(st[d], st[a]));
        st[c] = _mm256_add_epi32(st[c], st[d]);
        st[b] = rot12(_mm256_xor_si256(st[b], st[c]));
        st[a] = _mm256_add_epi32(_mm256_add_epi32(st[a], st[b]), y);
        st[d] = rot8(_mm256_xor_si256(st[d], st[a]));
        st[c] = _mm256_add_epi32(st[c], st[d]);
        st[b] = rot7(_mm256_xor_si256(st[b], st[c]));
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn round(st: &mut [__m256i; 16], m: &[__m256i; 16], sc: &[usize; 16]) {
        g(st, 0, 4, 8, 12, m[sc[0]], m[sc[1]]);
        g(st, 1, 5, 9, 13, m[sc[2]], m[sc[3]]);
        g(st, 2, 6, 10, 14, m[sc[4]], m[sc[5]]);
        g(st, 3, 7, 11, 15, m[sc[6]], m[sc[7]]);
        g(st, 0, 5, 10, 15, m[sc[8]], m[sc[9]]);
        g(st, 1, 6, 11, 12, m[sc[10]], m[sc[11]]);
        g(st, 2, 7, 8, 13, m[sc[12]], m[sc[13]]);
        g(st, 3, 4, 9, 14, m[sc[14]], m[sc[15]]);
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(p: &[u8]) -> __m256i {
        assert!(p.len() >= 32);
        // SAFETY: at least 32 readable bytes (checked); loadu has no alignment requirement.
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

    /// Compress one 64-byte block per lane into the lanes' chaining values, in place.
    #[target_feature(enable = "avx2")]
    pub(super) fn compress(
        cv: &mut Cv,
        blocks: &[[u8; 64]; LANES],
        counter: u64,
        block_len: u32,
        flags: u32,
    ) {
        let lo = transpose(std::array::from_fn(|l| load(&blocks[l][..32])));
        let hi = transpose(std::array::from_fn(|l| load(&blocks[l][32..])));
        let mut mw = [_mm256_setzero_si256(); 16];
        mw[..8].copy_from_slice(&lo);
        mw[8..].copy_from_slice(&hi);
        let c: [__m256i; 8] = std::array::from_fn(|w| load(bytemuck_v(&cv[w])));
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
        for sc in &SCHEDULE {
            round(&mut st, &mw, sc);
        }
        for i in 0..8 {
            let v = _mm256_xor_si256(st[i], st[i + 8]);
            // SAFETY: cv[i] is 8 × u32 = 32 writable bytes; storeu has no alignment requirement.
            unsafe { _mm256_storeu_si256(cv[i].as_mut_ptr().cast(), v) };
        }
    }

    /// The bytes of eight u32 lanes.
    #[inline(always)]
    fn bytemuck_v(v: &V) -> &[u8] {
        // SAFETY: [u32; 8] is 32 initialised bytes with no padding; u8 has alignment 1.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), 32) }
    }
}

/// Compress one 64-byte block per lane into the lanes' chaining values, in place.
#[inline]
fn compress(cv: &mut Cv, blocks: &[[u8; BLOCK]; LANES], counter: u64, block_len: u32, flags: u32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { avx2::compress(cv, blocks, counter, block_len, flags) };
            return;
        }
    }
    let mut m: [V; 16] = [[0; LANES]; 16];
    for (l, b) in blocks.iter().enumerate() {
        for (w, word) in m.iter_mut().enumerate() {
            word[l] = u32::from_le_bytes([b[4 * w], b[4 * w + 1], b[4 * w + 2], b[4 * w + 3]]);
        }
    }
    *cv = compress_generic(cv, &m, counter, block_len, flags);
}

/// Reads byte ranges of the virtual input `prefix ‖ body`.
struct Input<'a> {
    prefix: &'a [u8],
    body: &'a [u8],
}

impl Input<'_> {
    fn len(&self) -> usize {
        self.prefix.len() + self.body.len()
    }
    /// Input bytes `[at, at + len)` as a zero-padded 64-byte block. Full blocks copy with a
    /// fixed size (inlined moves, no `memmove` call): this runs once per lane per block.
    #[inline(always)]
    fn block(&self, at: usize, len: usize, buf: &mut [u8; BLOCK]) {
        let p = self.prefix.len();
        if at >= p && len == BLOCK {
            buf.copy_from_slice(&self.body[at - p..at - p + BLOCK]);
            return;
        }
        if at == 0 && p == 1 && len == BLOCK {
            buf[0] = self.prefix[0];
            buf[1..].copy_from_slice(&self.body[..BLOCK - 1]);
            return;
        }
        *buf = [0; BLOCK];
        let mut i = 0;
        while i < len && at + i < p {
            buf[i] = self.prefix[at + i];
            i += 1;
        }
        let from = at + i - p;
        for (d, s) in buf[i..len].iter_mut().zip(&self.body[from..]) {
            *d = *s;
        }
    }
}

/// Chaining values of chunk `c` of up to eight inputs of equal length.
fn chunk_cvs(inputs: &[Input<'_>], c: usize, root: bool) -> Cv {
    let len = inputs[0].len();
    let start = c * CHUNK;
    let end = (start + CHUNK).min(len);
    let blocks = (end - start).div_ceil(BLOCK).max(1);
    let mut cv = splat_iv();
    let mut bufs = [[0u8; BLOCK]; LANES];
    for b in 0..blocks {
        let at = start + b * BLOCK;
        let block_len = (end - at).min(BLOCK);
        for (input, buf) in inputs.iter().zip(bufs.iter_mut()) {
            input.block(at, block_len, buf);
        }
        let mut flags = 0;
        if b == 0 {
            flags |= CHUNK_START;
        }
        if b == blocks - 1 {
            flags |= CHUNK_END;
            if root {
                flags |= ROOT;
            }
        }
        compress(&mut cv, &bufs, c as u64, block_len as u32, flags);
    }
    cv
}

/// BLAKE3's tree over chunks `[lo, hi)`: the left subtree takes the largest power of two.
fn subtree(inputs: &[Input<'_>], lo: usize, hi: usize, root: bool) -> Cv {
    if hi - lo == 1 {
        return chunk_cvs(inputs, lo, root);
    }
    // the largest power of two not above (chunks − 1)
    let left_len = 1usize << (usize::BITS - 1 - (hi - lo - 1).leading_zeros());
    let l = subtree(inputs, lo, lo + left_len, false);
    let r = subtree(inputs, lo + left_len, hi, false);
    let mut bufs = [[0u8; BLOCK]; LANES];
    for (lane, buf) in bufs.iter_mut().enumerate() {
        for w in 0..8 {
            buf[4 * w..4 * w + 4].copy_from_slice(&l[w][lane].to_le_bytes());
            buf[32 + 4 * w..32 + 4 * w + 4].copy_from_slice(&r[w][lane].to_le_bytes());
        }
    }
    let mut cv = splat_iv();
    compress(
        &mut cv,
        &bufs,
        0,
        BLOCK as u32,
        PARENT | if root { ROOT } else { 0 },
    );
    cv
}

fn splat_iv() -> Cv {
    let mut cv: Cv = [[0; LANES]; 8];
    for (w, v) in cv.iter_mut().enumerate() {
        *v = splat(IV[w]);
    }
    cv
}

/// `out[i] = BLAKE3(prefix ‖ bodies[i·len .. (i+1)·len])` for every i.
pub fn hash_many(prefix: &[u8], bodies: &[u8], len: usize, out: &mut [[u8; 32]]) {
    let count = out.len();
    debug_assert_eq!(bodies.len(), count * len);
    let chunks = (prefix.len() + len).div_ceil(CHUNK).max(1);
    for (g, outs) in out.chunks_mut(LANES).enumerate() {
        let inputs: Vec<Input<'_>> = (0..outs.len())
            .map(|l| {
                let i = g * LANES + l;
                Input {
                    prefix,
                    body: &bodies[i * len..(i + 1) * len],
                }
            })
            .collect();
        let cv = subtree(&inputs, 0, chunks, true);
        for (l, o) in outs.iter_mut().enumerate() {
            for w in 0..8 {
                o[4 * w..4 * w + 4].copy_from_slice(&cv[w][l].to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_blake3_for_all_shapes() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in [
            0usize, 1, 2, 6, 31, 62, 63, 64, 65, 127, 128, 1022, 1023, 1024, 1025, 1206, 2047,
            2048, 2049, 3072, 4097, 5000,
        ] {
            for prefix in [&[][..], &[0u8][..], &[1u8][..]] {
                for count in [1usize, 3, 8, 9, 17] {
                    if count * len > data.len() {
                        continue;
                    }
                    let mut out = vec![[0u8; 32]; count];
                    hash_many(prefix, &data[..count * len], len, &mut out);
                    for (i, o) in out.iter().enumerate() {
                        let mut h = blake3::Hasher::new();
                        h.update(prefix);
                        h.update(&data[i * len..(i + 1) * len]);
                        assert_eq!(
                            o,
                            h.finalize().as_bytes(),
                            "len={len} prefix={prefix:?} i={i}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    /// `cargo test --release -p floe-node --lib hash_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn hash_speed() {
        let data = vec![7u8; 6 * 1_000_000];
        let mut out = vec![[0u8; 32]; 1_000_000];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            super::hash_many(&[0], &data, 6, &mut out);
            println!("1M leaves of 6 bytes: {:?}", t.elapsed());
        }
        let pairs = vec![9u8; 64 * 1_000_000];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            super::hash_many(&[1], &pairs, 64, &mut out);
            println!("1M parents: {:?}", t.elapsed());
        }
        let t = std::time::Instant::now();
        for i in 0..1_000_000 {
            out[i] = *blake3::hash(&pairs[i * 64..i * 64 + 64]).as_bytes();
        }
        println!("1M blake3::hash of 64 bytes: {:?}", t.elapsed());
    }
}
