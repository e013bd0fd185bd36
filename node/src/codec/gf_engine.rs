//! A `reed-solomon-simd` [`Engine`] on AVX-512 + GFNI, producing exactly that crate's bytes.
//!
//! The crate's fastest x86 engine (AVX2) multiplies a GF(2¹⁶) element by a constant with eight
//! nibble-table shuffles. Multiplying by a constant is linear over GF(2), so it is one 16×16 bit
//! matrix, i.e. four 8×8 blocks (low byte → low, high → low, low → high, high → high), and GFNI's
//! `vgf2p8affineqb` applies an 8×8 bit matrix to every byte of a register. The crate's shards
//! hold 32 elements per 64-byte chunk as 32 low bytes then 32 high bytes, so one 512-bit
//! register is one chunk: two affine transforms, one half swap and one XOR multiply it.
//!
//! The FFT schedule (which butterflies, which skew factors, the truncation) is the crate's AVX2
//! engine's, so every output byte is the same; the engine also fuses each two-layer step so the
//! four shards of a butterfly group are loaded and stored once instead of twice. [`EngineKind::current`]
//! is this engine when the CPU has AVX-512F/BW and GFNI and `FLOE_RS_ENGINE` is not `default`,
//! and the crate's own choice otherwise; tests compare both byte for byte on every run.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use reed_solomon_simd::engine::{
    tables, utils, DefaultEngine, Engine, GfElement, ShardsRefMut, GF_MODULUS, GF_ORDER,
};

/// Which engine the codec runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// [`Gfni`] (AVX-512 + GFNI).
    Gfni,
    /// reed-solomon-simd's own choice (AVX2, SSSE3, Neon or portable).
    Default,
}

/// 0: not decided yet, 1: Gfni, 2: Default.
static KIND: AtomicU8 = AtomicU8::new(0);

impl EngineKind {
    /// The fastest engine this CPU runs, unless `FLOE_RS_ENGINE=default` asks for the crate's
    /// (or [`EngineKind::set`] chose).
    pub fn current() -> Self {
        match KIND.load(Ordering::Relaxed) {
            1 => Self::Gfni,
            2 => Self::Default,
            _ => {
                let forced = match std::env::var("FLOE_RS_ENGINE").as_deref() {
                    Ok("default") => true,
                    Ok("gfni") | Err(_) => false,
                    Ok(other) => {
                        tracing::warn!(
                            value = other,
                            "FLOE_RS_ENGINE is neither `default` nor `gfni`: ignored"
                        );
                        false
                    }
                };
                let kind = if !forced && Gfni::new().is_some() {
                    Self::Gfni
                } else {
                    Self::Default
                };
                kind.set();
                kind
            }
        }
    }

    /// Run every later encode and decode of this process on this engine (benchmarks compare
    /// both in one run). [`EngineKind::Gfni`] on a CPU without it falls back to the default.
    pub fn set(self) {
        let kind = match self {
            Self::Gfni if Gfni::new().is_some() => Self::Gfni,
            _ => Self::Default,
        };
        KIND.store(if kind == Self::Gfni { 1 } else { 2 }, Ordering::Relaxed);
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gfni => "gfni",
            Self::Default => "reed-solomon-simd",
        }
    }
}

/// The engine the codec's encoders and decoders are built with.
pub enum RsEngine {
    Gfni(Gfni),
    Default(DefaultEngine),
}

impl RsEngine {
    pub fn of(kind: EngineKind) -> Self {
        match (kind, Gfni::new()) {
            (EngineKind::Gfni, Some(g)) => Self::Gfni(g),
            _ => Self::Default(DefaultEngine::new()),
        }
    }
}

impl Engine for RsEngine {
    fn fft(&self, data: &mut ShardsRefMut, pos: usize, size: usize, trunc: usize, skew: usize) {
        match self {
            Self::Gfni(e) => e.fft(data, pos, size, trunc, skew),
            Self::Default(e) => e.fft(data, pos, size, trunc, skew),
        }
    }
    fn ifft(&self, data: &mut ShardsRefMut, pos: usize, size: usize, trunc: usize, skew: usize) {
        match self {
            Self::Gfni(e) => e.ifft(data, pos, size, trunc, skew),
            Self::Default(e) => e.ifft(data, pos, size, trunc, skew),
        }
    }
    fn mul(&self, x: &mut [[u8; 64]], log_m: GfElement) {
        match self {
            Self::Gfni(e) => e.mul(x, log_m),
            Self::Default(e) => e.mul(x, log_m),
        }
    }
}

/// For every `log_m`, the four 8×8 blocks `[A, B, C, D]` of the multiplication (A: low byte →
/// low, B: high → low, C: low → high, D: high → high) in `vgf2p8affineqb`'s layout (2 MiB).
/// Butterflies read `GF_MODULUS` (the crate's "no multiply") as [`ZERO`], so a butterfly with it
/// is the plain XOR the crate does; `mul` reads it as the crate's tables do.
type Matrices = [[u64; 4]; GF_ORDER];

fn matrices() -> &'static Matrices {
    static M: OnceLock<Box<Matrices>> = OnceLock::new();
    M.get_or_init(|| {
        let el = tables::get_exp_log();
        let mut out: Box<Matrices> = vec![[0u64; 4]; GF_ORDER]
            .into_boxed_slice()
            .try_into()
            .expect("GF_ORDER entries");
        for log_m in 0..=GF_MODULUS {
            // column j: the product of the j-th basis element
            let cols: [u16; 16] =
                std::array::from_fn(|j| tables::mul(1 << j, log_m, &el.exp, &el.log));
            // 8×8 block: output bits `out0..out0+8` from input bits `in0..in0+8`, in GFNI's
            // layout (the row for output bit i in byte 7 − i, input bit j at bit j)
            let block = |out0: usize, in0: usize| -> u64 {
                let mut q = 0u64;
                for i in 0..8 {
                    let mut row = 0u64;
                    for j in 0..8 {
                        row |= u64::from((cols[in0 + j] >> (out0 + i)) & 1) << j;
                    }
                    q |= row << (8 * (7 - i));
                }
                q
            };
            out[log_m as usize] = [block(0, 0), block(0, 8), block(8, 0), block(8, 8)];
        }
        out
    })
}

/// The AVX-512 + GFNI engine. Construct with [`Gfni::new`], which checks the CPU.
#[derive(Clone, Copy)]
pub struct Gfni {
    mats: &'static Matrices,
    skew: &'static tables::Skew,
}

impl Gfni {
    /// `None` when this CPU lacks AVX-512F, AVX-512BW or GFNI.
    pub fn new() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("gfni")
        {
            return Some(Self {
                mats: matrices(),
                skew: tables::get_skew(),
            });
        }
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    //! The per-chunk work. Every function here needs AVX-512F/BW and GFNI; [`super::Gfni`]
    //! exists only on CPUs that have them.
    use core::arch::x86_64::*;

    /// The two matrix operands for one multiplier: `m1` maps a chunk `[lo | hi]` to
    /// `[A·lo | D·hi]`, `m2` to `[C·lo | B·hi]`.
    #[derive(Clone, Copy)]
    pub struct Mul {
        m1: __m512i,
        m2: __m512i,
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub fn load(m: &[u64; 4]) -> Mul {
        let halves = |lo: u64, hi: u64| {
            _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set1_epi64x(lo as i64)),
                _mm256_set1_epi64x(hi as i64),
            )
        };
        let [a, b, c, d] = *m;
        Mul {
            m1: halves(a, d),
            m2: halves(c, b),
        }
    }

    /// `v · m` for a chunk `[lo | hi]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub fn mul(v: __m512i, m: Mul) -> __m512i {
        let t1 = _mm512_gf2p8affine_epi64_epi8::<0>(v, m.m1);
        let t2 = _mm512_gf2p8affine_epi64_epi8::<0>(v, m.m2);
        _mm512_xor_si512(t1, _mm512_shuffle_i64x2::<0b01_00_11_10>(t2, t2))
    }

    /// FFT butterfly: `x ^= y·m; y ^= x`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub fn fftb(x: __m512i, y: __m512i, m: Mul) -> (__m512i, __m512i) {
        let x = _mm512_xor_si512(x, mul(y, m));
        (x, _mm512_xor_si512(y, x))
    }

    /// IFFT butterfly: `y ^= x; x ^= y·m`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub fn ifftb(x: __m512i, y: __m512i, m: Mul) -> (__m512i, __m512i) {
        let y = _mm512_xor_si512(y, x);
        (_mm512_xor_si512(x, mul(y, m)), y)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub unsafe fn ld(p: *const [u8; 64]) -> __m512i {
        unsafe { _mm512_loadu_si512(p.cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub unsafe fn st(p: *mut [u8; 64], v: __m512i) {
        unsafe { _mm512_storeu_si512(p.cast(), v) }
    }

    /// `x[] *= m`.
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub unsafe fn mul_all(x: &mut [[u8; 64]], m: &[u64; 4]) {
        unsafe {
            let m = load(m);
            for c in x.iter_mut() {
                st(c, mul(ld(c), m));
            }
        }
    }

    /// One butterfly layer between `x` and `y` (FFT if `fft`, else IFFT).
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub unsafe fn layer(x: &mut [[u8; 64]], y: &mut [[u8; 64]], m: &[u64; 4], fft: bool) {
        unsafe {
            let m = load(m);
            for (cx, cy) in x.iter_mut().zip(y.iter_mut()) {
                let (a, b) = if fft {
                    fftb(ld(cx), ld(cy), m)
                } else {
                    ifftb(ld(cx), ld(cy), m)
                };
                st(cx, a);
                st(cy, b);
            }
        }
    }

    /// Two layers over four shards, chunk by chunk (each chunk loaded and stored once). FFT
    /// order: (0,2),(1,3) with `m02`, then (0,1) with `m01` and (2,3) with `m23`; IFFT the
    /// reverse with inverse butterflies.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub unsafe fn two_layers(
        s0: &mut [[u8; 64]],
        s1: &mut [[u8; 64]],
        s2: &mut [[u8; 64]],
        s3: &mut [[u8; 64]],
        m01: &[u64; 4],
        m23: &[u64; 4],
        m02: &[u64; 4],
        fft: bool,
    ) {
        unsafe {
            let (m01, m23, m02) = (load(m01), load(m23), load(m02));
            let len = s0.len().min(s1.len()).min(s2.len()).min(s3.len());
            for i in 0..len {
                let (p0, p1, p2, p3) = (&mut s0[i], &mut s1[i], &mut s2[i], &mut s3[i]);
                let (mut a, mut b, mut c, mut d) = (ld(p0), ld(p1), ld(p2), ld(p3));
                if fft {
                    (a, c) = fftb(a, c, m02);
                    (b, d) = fftb(b, d, m02);
                    (a, b) = fftb(a, b, m01);
                    (c, d) = fftb(c, d, m23);
                } else {
                    (a, b) = ifftb(a, b, m01);
                    (c, d) = ifftb(c, d, m23);
                    (a, c) = ifftb(a, c, m02);
                    (b, d) = ifftb(b, d, m02);
                }
                st(p0, a);
                st(p1, b);
                st(p2, c);
                st(p3, d);
            }
        }
    }
}

/// The zero multiplier (a butterfly's "no multiply").
static ZERO: [u64; 4] = [0; 4];

#[cfg(target_arch = "x86_64")]
impl Gfni {
    fn m(&self, log_m: GfElement) -> &'static [u64; 4] {
        &self.mats[log_m as usize]
    }

    /// A butterfly's multiplier: none for `GF_MODULUS`, as in the crate's engines.
    fn bm(&self, log_m: GfElement) -> &'static [u64; 4] {
        if log_m == GF_MODULUS {
            &ZERO
        } else {
            self.m(log_m)
        }
    }

    fn layer(&self, x: &mut [[u8; 64]], y: &mut [[u8; 64]], log_m: GfElement, fft: bool) {
        // SAFETY: a `Gfni` exists only on a CPU with AVX-512F/BW and GFNI (`Gfni::new`).
        unsafe { kernels::layer(x, y, self.bm(log_m), fft) }
    }

    fn two_layers(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        dist: usize,
        m: [GfElement; 3],
        fft: bool,
    ) {
        let (s0, s1, s2, s3) = data.dist4_mut(pos, dist);
        let [m01, m23, m02] = m;
        // SAFETY: as in `layer`.
        unsafe {
            kernels::two_layers(
                s0,
                s1,
                s2,
                s3,
                self.bm(m01),
                self.bm(m23),
                self.bm(m02),
                fft,
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Gfni {
    /// Two FFT (or IFFT) layers at butterfly distance `dist` over the first `truncated` shards,
    /// in groups of `4·dist` with the crate's skew factors.
    fn two_layer_pass(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        dist: usize,
        truncated: usize,
        skew_delta: usize,
        fft: bool,
    ) {
        let mut r = 0;
        while r < truncated {
            let base = r + dist + skew_delta - 1;
            let m = [
                self.skew[base],
                self.skew[base + dist * 2],
                self.skew[base + dist],
            ];
            for i in r..r + dist {
                self.two_layers(data, pos + i, dist, m, fft);
            }
            r += 4 * dist;
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Engine for Gfni {
    // The schedule below is reed-solomon-simd's (`engine_avx2.rs`, `fft_private`).
    fn fft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated: usize,
        skew_delta: usize,
    ) {
        let mut dist4 = size;
        let mut dist = size >> 2;
        while dist != 0 {
            self.two_layer_pass(data, pos, dist, truncated, skew_delta, true);
            dist4 = dist;
            dist >>= 2;
        }
        if dist4 == 2 {
            let mut r = 0;
            while r < truncated {
                let log_m = self.skew[r + skew_delta];
                let (x, y) = data.dist2_mut(pos + r, 1);
                self.layer(x, y, log_m, true);
                r += 2;
            }
        }
    }

    // reed-solomon-simd's `ifft_private`.
    fn ifft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated: usize,
        skew_delta: usize,
    ) {
        let mut dist = 1;
        let mut dist4 = 4;
        while dist4 <= size {
            self.two_layer_pass(data, pos, dist, truncated, skew_delta, false);
            dist = dist4;
            dist4 <<= 2;
        }
        if dist < size {
            let log_m = self.skew[dist + skew_delta - 1];
            if log_m == GF_MODULUS {
                utils::xor_within(data, pos + dist, pos, dist);
            } else {
                let (mut a, mut b) = data.split_at_mut(pos + dist);
                for i in 0..dist {
                    self.layer(&mut a[pos + i], &mut b[i], log_m, false);
                }
            }
        }
    }

    fn mul(&self, x: &mut [[u8; 64]], log_m: GfElement) {
        // SAFETY: as in `layer`.
        unsafe { kernels::mul_all(x, self.m(log_m)) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Engine for Gfni {
    fn fft(&self, _: &mut ShardsRefMut, _: usize, _: usize, _: usize, _: usize) {
        unreachable!("Gfni::new returns None off x86-64")
    }
    fn ifft(&self, _: &mut ShardsRefMut, _: usize, _: usize, _: usize, _: usize) {
        unreachable!("Gfni::new returns None off x86-64")
    }
    fn mul(&self, _: &mut [[u8; 64]], _: GfElement) {
        unreachable!("Gfni::new returns None off x86-64")
    }
}

#[cfg(test)]
mod tests {
    //! The GFNI engine against the crate's portable engine, byte for byte, through the crate's
    //! own encoder and decoder (both rates, truncated FFT sizes, multi-chunk shards). Skipped,
    //! with a message, on a CPU without GFNI.
    use super::*;
    use proptest::prelude::*;
    use reed_solomon_simd::engine::NoSimd;
    use reed_solomon_simd::rate::{
        DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder,
    };

    fn encode_with<E: Engine>(e: E, k: usize, m: usize, shards: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut enc = DefaultRateEncoder::new(k, m, shards[0].len(), e, None).unwrap();
        for s in shards {
            enc.add_original_shard(s).unwrap();
        }
        let out = enc
            .encode()
            .unwrap()
            .recovery_iter()
            .map(<[u8]>::to_vec)
            .collect();
        out
    }

    /// Decode with originals `lost` missing, from the first recovery shards needed.
    fn decode_with<E: Engine>(
        e: E,
        k: usize,
        m: usize,
        shards: &[Vec<u8>],
        recovery: &[Vec<u8>],
        lost: &[usize],
    ) -> Vec<(usize, Vec<u8>)> {
        let mut dec = DefaultRateDecoder::new(k, m, shards[0].len(), e, None).unwrap();
        for (i, s) in shards.iter().enumerate().filter(|(i, _)| !lost.contains(i)) {
            dec.add_original_shard(i, s).unwrap();
        }
        for (i, r) in recovery.iter().enumerate().take(lost.len()) {
            dec.add_recovery_shard(i, r).unwrap();
        }
        let mut out: Vec<_> = dec
            .decode()
            .unwrap()
            .restored_original_iter()
            .map(|(i, s)| (i, s.to_vec()))
            .collect();
        out.sort();
        out
    }

    /// The GFNI engine, or `None` (the test is skipped) on a CPU without it. Where the
    /// environment says the CPU has it (`FLOE_EXPECT_GFNI=1`, which `.ci/run` sets from
    /// `/proc/cpuinfo`), an engine that cannot be used fails the test instead of skipping it.
    fn gfni_or_skip() -> Option<Gfni> {
        let g = Gfni::new();
        if g.is_none() {
            assert!(
                std::env::var("FLOE_EXPECT_GFNI").map_or(true, |v| v != "1"),
                "FLOE_EXPECT_GFNI=1 (the CPU reports AVX-512F, AVX-512BW and GFNI) but the GFNI \
                 engine cannot be used"
            );
            eprintln!("skipped: this CPU has no AVX-512 + GFNI");
        }
        g
    }

    #[test]
    fn gfni_is_used_where_the_environment_says_the_cpu_has_it() {
        // the skip itself, checked once with no property test around it
        let _ = gfni_or_skip();
    }

    fn shards(k: usize, bytes: usize, seed: u64) -> Vec<Vec<u8>> {
        let all = crate::testing::random_bytes(k * bytes, seed);
        all.chunks(bytes).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn gfni_matrices_multiply_like_the_tables() {
        let Some(g) = gfni_or_skip() else {
            return;
        };
        // every log_m on 32 elements of one chunk (incl. 0, 1 and 0xFFFF), against the crate's
        // scalar multiply
        let el = tables::get_exp_log();
        let xs: Vec<u16> = (0..32u16)
            .map(|i| i.wrapping_mul(0x9E37) ^ (i << 11))
            .chain([0, 1, 0xFFFF])
            .take(32)
            .collect();
        for log_m in 0..=GF_MODULUS {
            let mut chunk = [[0u8; 64]; 1];
            for (i, x) in xs.iter().enumerate() {
                chunk[0][i] = *x as u8;
                chunk[0][32 + i] = (*x >> 8) as u8;
            }
            g.mul(&mut chunk, log_m);
            for (i, x) in xs.iter().enumerate() {
                let got = u16::from(chunk[0][i]) | u16::from(chunk[0][32 + i]) << 8;
                assert_eq!(
                    got,
                    tables::mul(*x, log_m, &el.exp, &el.log),
                    "x={x:#x} log_m={log_m}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn gfni_encodes_and_decodes_like_the_portable_engine(
            k in 1usize..300,
            m in 1usize..300,
            chunks in 1usize..5,
            tail in 0usize..32,
            seed in any::<u64>(),
            lost_seed in any::<u64>(),
        ) {
            let Some(g) = gfni_or_skip() else {
                return Ok(());
            };
            // shard sizes that are not whole chunks too (the crate pads the last one)
            let bytes = (chunks - 1) * 64 + 2 * (tail + 1);
            let data = shards(k, bytes, seed);
            let want = encode_with(NoSimd::new(), k, m, &data);
            let got = encode_with(g, k, m, &data);
            prop_assert_eq!(&got, &want);
            // lose up to m originals, spread by the seed
            let lost: Vec<usize> = (0..k).filter(|i| (lost_seed >> (i % 64)) & 1 == 1).take(m).collect();
            if !lost.is_empty() {
                let want_back = decode_with(NoSimd::new(), k, m, &data, &want, &lost);
                let got_back = decode_with(g, k, m, &data, &want, &lost);
                prop_assert_eq!(&got_back, &want_back);
                for (i, s) in &got_back {
                    prop_assert_eq!(s, &data[*i]);
                }
            }
        }
    }

    #[test]
    fn codec_shapes_match_at_n_1000() {
        // the shapes the codec runs at n = 1000 (k = 334 or 667 originals, 16 KiB batches)
        let Some(g) = gfni_or_skip() else {
            return;
        };
        for (k, m, bytes) in [(334, 666, 16 * 1024), (667, 333, 4 * 1024), (667, 333, 2)] {
            let data = shards(k, bytes, k as u64);
            assert_eq!(
                encode_with(g, k, m, &data),
                encode_with(DefaultEngine::new(), k, m, &data),
                "k={k} m={m} bytes={bytes}"
            );
        }
    }
}
