//! Pinned blob IDs of encoding type 2: a change here is a change of the on-disk and on-wire
//! format, and must be deliberate (a new encoding type, and PROTOCOL.md updated).

use floe_node::codec::{encode, EncodingParams};
use floe_node::testing::random_bytes;

fn id(blob: &[u8], n: usize) -> String {
    encode(blob, EncodingParams::new(n).unwrap())
        .unwrap()
        .blob_id()
        .to_string()
}

/// The test vectors of PROTOCOL.md §3.
#[test]
fn protocol_vectors() {
    assert_eq!(id(&[], 4), "JljCHB4pCTtTFvRaptKm-2GEASTUe4Bx_VWblSfHpHE");
    assert_eq!(id(&[], 1000), "HKNKJ3kRbJzpeMEU6tGkRv2AWsvkg77hjrVRoz7Cz0w");
    assert_eq!(
        id(&[0x2a], 10),
        "Omdc3qQpwUavaB5hxMYQ0_J_MMvr2s2-FGrwRs2Q-gE"
    );
    let ramp: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    assert_eq!(id(&ramp, 7), "9UbdVlzpcsRDHVTViLpB5_Kjy5twh6LTPfe6g_JqB5c");
    let mib: Vec<u8> = (0..1u32 << 20)
        .map(|i| ((i * 31 + 7) % 251) as u8)
        .collect();
    assert_eq!(
        id(&mib, 1000),
        "klORYToixP2GpRtlGJU61gwJEqfK84r1_b5OJKXFQus"
    );
}

fn input() -> Vec<u8> {
    (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

/// Vectors of our own at the symbol sizes where the tree changes shape (n = 4: k_p·k_s = 6):
/// s = 2 (16 symbols to a chunk, one leaf), 30 (one symbol and 2 bytes of padding per chunk),
/// 32 (one symbol fills a chunk), 34 (the first hashed leaves), 64, and larger n and symbols.
#[test]
fn own_vectors_at_symbol_size_boundaries() {
    let cases: [(usize, usize, &str); 8] = [
        (4, 12, "X02OrcmuDktBZWh7J-41OWLcbKLSPLfT3nLPYkHgSLA"),
        (4, 180, "yRAnqrqq_RTGeCMNfOUQ6b9m5TKJBpFlHVsT-q5usm8"),
        (4, 192, "tkrKJLSQLL6XIG0GaEmFfaKO_8ZGjpPal44-ymJ8hsM"),
        (4, 193, "8Mvx1vsJH-4BfF-CgBRforxgae4a9-KRVi-yh7MQ-rU"),
        (4, 384, "IGZVZY5jZbNvgzZkYINV3Wnob1-taGBCjhkrczHiNkk"),
        (10, 100_000, "QDUanEyDkR3AP6P7XlbgixuHVgd3nxAN9lFafy5tDxk"),
        (1000, 100_000, "_sG7yQ3pT3geNTF9XGBszq7yDhceYfLlRrMi0Q5tWkE"),
        (13, 4097, "amlKfW9983P7md8cjIgSgtrcbAMQ-fk2krxpU7JxB0M"),
    ];
    for (n, len, want) in cases {
        let blob: Vec<u8> = input().into_iter().cycle().take(len).collect();
        assert_eq!(id(&blob, n), want, "n={n} len={len}");
        if n <= 13 {
            assert_eq!(
                reference_blob_id(&blob, n),
                want,
                "reference n={n} len={len}"
            );
        }
    }
}

/// A deliberately naive reading of PROTOCOL.md §2–§3: one Reed–Solomon call per codeword with
/// `shard_bytes = s`, the matrix expanded rows-first (the optimised encoder goes columns-first
/// and batches), the keys derived from their context strings here, every hash computed with
/// plain `blake3` calls, every tree built level by level as the text says.
fn reference_blob_id(blob: &[u8], n: usize) -> String {
    use reed_solomon_simd::ReedSolomonEncoder;
    let k_leaf = blake3::derive_key("floe 2026-11 v2 merkle leaf", b"");
    let k_node = blake3::derive_key("floe 2026-11 v2 merkle node", b"");
    let f = (n - 1) / 3;
    let (kp, ks) = (n - 2 * f, n - f);
    let s = {
        let x = blob.len().max(1).div_ceil(kp * ks);
        x + (x & 1)
    };
    let mut padded = blob.to_vec();
    padded.resize(kp * ks * s, 0);
    let sym = |r: usize, c: usize| padded[(r * ks + c) * s..(r * ks + c + 1) * s].to_vec();
    let extend = |src: Vec<Vec<u8>>, m: usize| -> Vec<Vec<u8>> {
        let mut e = ReedSolomonEncoder::new(src.len(), m, s).unwrap();
        for x in &src {
            e.add_original_shard(x).unwrap();
        }
        let parity: Vec<Vec<u8>> = e
            .encode()
            .unwrap()
            .recovery_iter()
            .map(|r| r.to_vec())
            .collect();
        src.into_iter().chain(parity).collect()
    };
    // rows first: every source row extended to n columns, then every column to n rows
    let rows: Vec<Vec<Vec<u8>>> = (0..kp)
        .map(|r| extend((0..ks).map(|c| sym(r, c)).collect(), f))
        .collect();
    let cols: Vec<Vec<Vec<u8>>> = (0..n)
        .map(|c| extend((0..kp).map(|r| rows[r][c].clone()).collect(), 2 * f))
        .collect();
    let node = |l: &[u8; 32], r: &[u8; 32]| -> [u8; 32] {
        *blake3::keyed_hash(&k_node, &[&l[..], &r[..]].concat()).as_bytes()
    };
    let root = |symbols: Vec<Vec<u8>>| -> [u8; 32] {
        let size = symbols[0].len();
        let mut level: Vec<[u8; 32]> = if size <= 32 {
            symbols
                .chunks(32 / size)
                .map(|group| {
                    let mut chunk = [0u8; 32];
                    let bytes = group.concat();
                    chunk[..bytes.len()].copy_from_slice(&bytes);
                    chunk
                })
                .collect()
        } else {
            symbols
                .iter()
                .map(|x| *blake3::keyed_hash(&k_leaf, x).as_bytes())
                .collect()
        };
        if level.len() == 1 {
            level.push([0; 32]);
        }
        while level.len() > 1 {
            if level.len() % 2 == 1 {
                level.push([0; 32]);
            }
            level = level.chunks(2).map(|p| node(&p[0], &p[1])).collect();
        }
        level[0]
    };
    let row_hash = |i: usize| root((0..n).map(|c| cols[c][i].clone()).collect());
    let col_hash = |j: usize| root(cols[j].clone());
    let entries = (0..n)
        .map(|p| [row_hash(p), col_hash(n - 1 - p)].concat())
        .collect();
    let blob_root = root(entries);
    let mut h = blake3::Hasher::new();
    h.update(&[2]);
    h.update(&(blob.len() as u64).to_le_bytes());
    h.update(&blob_root);
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize().as_bytes())
}

#[test]
fn reference_agrees_with_the_protocol_vectors() {
    assert_eq!(
        reference_blob_id(&[], 4),
        "JljCHB4pCTtTFvRaptKm-2GEASTUe4Bx_VWblSfHpHE"
    );
    assert_eq!(
        reference_blob_id(&[0x2a], 10),
        "Omdc3qQpwUavaB5hxMYQ0_J_MMvr2s2-FGrwRs2Q-gE"
    );
    let ramp: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    assert_eq!(
        reference_blob_id(&ramp, 7),
        "9UbdVlzpcsRDHVTViLpB5_Kjy5twh6LTPfe6g_JqB5c"
    );
}

#[test]
fn optimised_encoder_matches_naive_reference() {
    for (n, len) in [
        (4, 0),
        (4, 1),
        (7, 100),
        (10, 100_000),
        (13, 4097),
        (31, 12_345),
        (100, 300_000),
    ] {
        let data: Vec<u8> = input().into_iter().cycle().take(len).collect();
        assert_eq!(id(&data, n), reference_blob_id(&data, n), "n={n} len={len}");
    }
}

/// Random blobs whose symbol size is every even s from 2 to 34 (the smallest and the largest
/// length with that s), where the packing of chunks changes shape, and for several n so that
/// row and column trees end with partly filled chunks in different places.
#[test]
fn optimised_encoder_matches_reference_around_every_chunking_boundary() {
    for n in [4usize, 7, 10, 13, 40] {
        let f = (n - 1) / 3;
        let per = (n - 2 * f) * (n - f);
        for s in (2..=34).step_by(2) {
            for len in [(s - 2) * per + 1, s * per, s * per - per / 2] {
                let data = random_bytes(len, (n * 1000 + len) as u64);
                let shape = EncodingParams::new(n).unwrap().symbol_shape(len as u64);
                assert_eq!(shape.unwrap().symbol_size, s, "n={n} len={len}");
                assert_eq!(
                    id(&data, n),
                    reference_blob_id(&data, n),
                    "n={n} s={s} len={len}"
                );
            }
        }
    }
}
