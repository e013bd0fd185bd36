//! Pinned blob IDs: a change here is a change of the on-disk and on-wire format, and must be
//! deliberate (bump the wire version or the encoding type, and update PROTOCOL docs).

use floe_node::codec::{encode, EncodingParams};

fn input() -> Vec<u8> {
    (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

#[test]
fn pinned_blob_id_n10() {
    let enc = encode(&input(), EncodingParams::new(10).unwrap()).unwrap();
    assert_eq!(
        enc.blob_id().to_string(),
        "M6AuJ6YAVy7wEKGn_s44ZbRujHztamLK7o8QTSSAIFg"
    );
}

#[test]
fn pinned_blob_id_n1000() {
    let enc = encode(&input(), EncodingParams::new(1000).unwrap()).unwrap();
    assert_eq!(
        enc.blob_id().to_string(),
        "-K3syzRTcu67OHGK8Jl7oBSt94vkMIcTk3ggwQK5FmY"
    );
}

#[test]
fn pinned_empty_blob_n4() {
    let enc = encode(&[], EncodingParams::new(4).unwrap()).unwrap();
    assert_eq!(
        enc.blob_id().to_string(),
        "MXKQTZCdD8iC_Uhhlnk-tDRengfP19yfZ_MVRBLQb-g"
    );
}

/// A deliberately naive reading of PROTOCOL.md §2–§3: one Reed–Solomon call per codeword with
/// `shard_bytes = s`, the matrix expanded rows-first (the optimised encoder goes columns-first
/// and batches), every hash computed with plain `blake3::hash`.
fn reference_blob_id(blob: &[u8], n: usize) -> String {
    use reed_solomon_simd::ReedSolomonEncoder;
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
    let h = |parts: &[&[u8]]| -> [u8; 32] { *blake3::hash(&parts.concat()).as_bytes() };
    let root = |leaves: Vec<[u8; 32]>| -> [u8; 32] {
        let mut level = leaves;
        while level.len() > 1 {
            if level.len() % 2 == 1 {
                level.push([0; 32]);
            }
            level = level.chunks(2).map(|p| h(&[&[1], &p[0], &p[1]])).collect();
        }
        level[0]
    };
    let row_hash = |i: usize| root((0..n).map(|c| h(&[&[0], &cols[c][i]])).collect());
    let col_hash = |j: usize| root((0..n).map(|r| h(&[&[0], &cols[j][r]])).collect());
    let leaves = (0..n)
        .map(|p| h(&[&[0], &row_hash(p), &col_hash(n - 1 - p)]))
        .collect();
    let id = h(&[&[1], &(blob.len() as u64).to_le_bytes(), &root(leaves)]);
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
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
        let enc = encode(&data, EncodingParams::new(n).unwrap()).unwrap();
        assert_eq!(
            enc.blob_id().to_string(),
            reference_blob_id(&data, n),
            "n={n} len={len}"
        );
    }
}
