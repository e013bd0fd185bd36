//! Property tests of the Red Stuff codec (PROTOCOL.md §2, §3, §5).

use floe_node::codec::{
    decode, decode_verified, encode, encode_metadata, recovery_symbols, Axis, BlobMetadata,
    CodecError, ConsistencyCheck, EncodingParams, ProofError, RebuildError, RecoverySymbol, Sliver,
    SliverRebuilder,
};
use floe_node::testing::random_bytes as blob;
use proptest::prelude::*;
use proptest::sample::subsequence;

const NS: [usize; 6] = [4, 7, 10, 13, 31, 100];

/// Lengths around the symbol-size boundaries of n, plus random ones.
fn length_for(n: usize) -> impl Strategy<Value = usize> {
    let p = EncodingParams::new(n).unwrap();
    let per = p.source_symbols();
    prop_oneof![
        Just(0usize),
        Just(1usize),
        (1usize..6).prop_map(move |m| 2 * m * per),
        (1usize..6).prop_map(move |m| 2 * m * per + 1),
        (1usize..6).prop_map(move |m| 2 * m * per - 1),
        0usize..200_000,
    ]
}

fn n_and_len() -> impl Strategy<Value = (usize, usize)> {
    prop::sample::select(NS.to_vec()).prop_flat_map(|n| (Just(n), length_for(n)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_from_any_kp_subset((n, len) in n_and_len(), seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let params = EncodingParams::new(n).unwrap();
        let data = blob(len, seed);
        let enc = encode(&data, params).unwrap();
        prop_assert!(enc.metadata().verify(&enc.blob_id()).is_ok());
        let kp = params.k_primary();
        // a pseudo-random k_p-subset of the n primary slivers
        let mut idx: Vec<usize> = (0..n).collect();
        let mut r = pick.index(usize::MAX / 2) as u64 | 1;
        for i in (1..n).rev() {
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            idx.swap(i, (r % (i as u64 + 1)) as usize);
        }
        let slivers: Vec<Sliver> = idx[..kp].iter().map(|&i| enc.primary_sliver(i)).collect();
        let back = decode(enc.metadata(), &slivers, ConsistencyCheck::Default).unwrap();
        prop_assert_eq!(&back, &data);
        let strict = decode_verified(enc.metadata(), &slivers, ConsistencyCheck::Strict).unwrap();
        prop_assert_eq!(strict, data);
    }

    #[test]
    fn every_sliver_verifies_and_pairs_rotate((n, len) in n_and_len(), seed in any::<u64>()) {
        let params = EncodingParams::new(n).unwrap();
        let enc = encode(&blob(len, seed), params).unwrap();
        let mut shards = vec![false; n];
        for p in 0..n {
            let pair = enc.pair(p);
            prop_assert!(pair.primary.verify(enc.metadata()).is_ok());
            prop_assert!(pair.secondary.verify(enc.metadata()).is_ok());
            prop_assert_eq!(pair.secondary.index as usize, n - 1 - p);
            shards[enc.shard_of_pair(p)] = true;
        }
        prop_assert!(shards.iter().all(|s| *s));
    }

    /// The tree a verification keeps (what the node stores as a sliver's challenge index) is
    /// the sliver's own tree, and a sliver that does not verify yields none.
    #[test]
    fn verification_keeps_the_slivers_tree((n, len) in n_and_len(), seed in any::<u64>(), at in any::<prop::sample::Index>()) {
        let params = EncodingParams::new(n).unwrap();
        let enc = encode(&blob(len, seed), params).unwrap();
        let shape = enc.shape();
        for sliver in [enc.primary_sliver(at.index(n)), enc.secondary_sliver(at.index(n))] {
            let kept = sliver.verify_tree(enc.metadata()).unwrap();
            let (_, tree) = sliver.tree(shape).unwrap();
            prop_assert_eq!(kept.index_bytes(), tree.index_bytes());
            prop_assert_eq!(kept.root(), tree.root());
            let mut bad = sliver.clone();
            let i = at.index(bad.data.len());
            bad.data[i] ^= 1;
            prop_assert!(matches!(bad.verify_tree(enc.metadata()), Err(CodecError::HashMismatch(_))));
        }
    }

    #[test]
    fn any_sliver_rebuilds_from_random_helpers(
        (n, len) in n_and_len(), seed in any::<u64>(), target in any::<prop::sample::Index>(),
        primary in any::<bool>(), helpers in any::<prop::sample::Index>())
    {
        let params = EncodingParams::new(n).unwrap();
        let enc = encode(&blob(len, seed), params).unwrap();
        let shape = *enc.shape();
        let t = target.index(n);
        let axis = if primary { Axis::Primary } else { Axis::Secondary };
        let mut rb = SliverRebuilder::new(enc.metadata(), axis, t).unwrap();
        // helpers: a random rotation of the helper slivers on the other axis
        let start = helpers.index(n);
        for h in (0..n).map(|i| (start + i) % n) {
            if rb.is_ready() { break; }
            let helper = if primary { enc.secondary_sliver(h) } else { enc.primary_sliver(h) };
            let sym = recovery_symbols(&helper, &shape, &[t as u16]).unwrap().remove(0);
            let bytes = sym.to_bytes();
            rb.add(RecoverySymbol::from_bytes(&bytes).unwrap()).unwrap();
        }
        prop_assert_eq!(rb.have(), if primary { params.k_secondary() } else { params.k_primary() });
        let rebuilt = rb.rebuild().unwrap();
        let expected = if primary { enc.primary_sliver(t) } else { enc.secondary_sliver(t) };
        prop_assert_eq!(rebuilt, expected);
    }

    #[test]
    fn flipped_bits_are_rejected((n, len) in n_and_len(), seed in any::<u64>(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let params = EncodingParams::new(n).unwrap();
        let enc = encode(&blob(len, seed), params).unwrap();
        let shape = *enc.shape();
        let id = enc.blob_id();
        // sliver data
        let mut sl = enc.secondary_sliver(at.index(n));
        let i = at.index(sl.data.len());
        sl.data[i] ^= 1 << bit;
        prop_assert!(sl.verify(enc.metadata()).is_err());
        // metadata hashes and length
        let mut md = enc.metadata().clone();
        md.pair_hashes[at.index(n)].1[at.index(32)] ^= 1 << bit;
        prop_assert!(md.verify(&id).is_err());
        let mut md = enc.metadata().clone();
        md.len ^= 1 << bit;
        prop_assert!(md.verify(&id).is_err());
        // recovery symbol data and proof
        let helper = enc.primary_sliver(at.index(n));
        let sym = recovery_symbols(&helper, &shape, &[0]).unwrap().remove(0);
        let mut bad = sym.clone();
        let i = at.index(bad.data.len());
        bad.data[i] ^= 1 << bit;
        prop_assert!(bad.verify(enc.metadata()).is_err());
        let mut bad = sym.clone();
        let d = at.index(bad.proof.siblings.len());
        let b = at.index(32);
        bad.proof.siblings[d][b] ^= 1 << bit;
        prop_assert!(bad.verify(enc.metadata()).is_err());
        prop_assert!(sym.verify(enc.metadata()).is_ok());
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = BlobMetadata::from_bytes(&bytes);
        let _ = Sliver::from_bytes(&bytes);
        let _ = RecoverySymbol::from_bytes(&bytes);
        let _ = floe_node::codec::InconsistencyProof::from_bytes(&bytes);
        let _ = std::str::from_utf8(&bytes).map(|s| s.parse::<floe_node::codec::BlobId>());
    }

    #[test]
    fn parsers_survive_mutated_valid_objects(seed in any::<u64>(), cuts in subsequence((0usize..64).collect::<Vec<_>>(), 0..4), flip in any::<prop::sample::Index>()) {
        let params = EncodingParams::new(7).unwrap();
        let enc = encode(&blob(300, seed), params).unwrap();
        let shape = *enc.shape();
        let sym = recovery_symbols(&enc.primary_sliver(1), &shape, &[2]).unwrap().remove(0);
        for valid in [enc.metadata().to_bytes(), enc.primary_sliver(3).to_bytes(), sym.to_bytes()] {
            let mut b = valid.clone();
            let i = flip.index(b.len());
            b[i] ^= 0x5a;
            for c in &cuts { if *c < b.len() { b.truncate(b.len() - c); } }
            let _ = BlobMetadata::from_bytes(&b);
            let _ = Sliver::from_bytes(&b).map(|s| s.verify(enc.metadata()));
            let _ = RecoverySymbol::from_bytes(&b).map(|s| s.verify(enc.metadata()));
        }
    }
}

#[test]
fn wire_round_trips() {
    let params = EncodingParams::new(10).unwrap();
    let enc = encode(&blob(5000, 3), params).unwrap();
    let md = enc.metadata();
    assert_eq!(&BlobMetadata::from_bytes(&md.to_bytes()).unwrap(), md);
    let sl = enc.secondary_sliver(8);
    assert_eq!(Sliver::from_bytes(&sl.to_bytes()).unwrap(), sl);
    assert_eq!([sl.wire_header(), sl.data.clone()].concat(), sl.to_bytes());
    let mut trailing = sl.to_bytes();
    trailing.push(0);
    assert!(matches!(
        Sliver::from_bytes(&trailing),
        Err(CodecError::Malformed(_))
    ));
    let mut wrong_version = md.to_bytes();
    wrong_version[0] = 9;
    assert!(matches!(
        BlobMetadata::from_bytes(&wrong_version),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn errors_are_typed() {
    let params = EncodingParams::new(4).unwrap();
    let enc = encode(b"hello", params).unwrap();
    // not enough slivers
    let one = vec![enc.primary_sliver(0)];
    assert!(matches!(
        decode(enc.metadata(), &one, ConsistencyCheck::Default),
        Err(CodecError::NotEnough {
            have: 1,
            need: 2,
            ..
        })
    ));
    // wrong sliver shape
    let mut short = enc.primary_sliver(1);
    short.data.pop();
    short.data.pop();
    assert!(matches!(
        short.verify(enc.metadata()),
        Err(CodecError::BadLength { .. })
    ));
    let mut odd = enc.primary_sliver(1);
    odd.symbol_size = 4;
    assert!(matches!(
        odd.verify(enc.metadata()),
        Err(CodecError::BadSymbolSize { .. })
    ));
    // too large
    let max = params.max_blob_size();
    assert!(matches!(
        params.symbol_shape(max + 1),
        Err(CodecError::BlobTooLarge { .. })
    ));
}

/// A writer that encodes one column inconsistently is caught: rebuilding a sliver whose symbols
/// come from the tampered parity yields an inconsistency proof that others can check.
#[test]
fn inconsistent_encoding_is_detected_with_evidence() {
    let n = 7;
    let params = EncodingParams::new(n).unwrap();
    let enc = encode(&blob(2000, 11), params).unwrap();
    let shape = *enc.shape();
    // Tamper primary sliver 6 (a parity row) and recommit to it as a malicious writer would.
    let mut bad = enc.primary_sliver(6);
    bad.data[0] ^= 0xff;
    let mut md = enc.metadata().clone();
    md.pair_hashes[6].0 = bad.hash(&shape).unwrap();
    // Honest-looking secondary sliver 0 rebuilt from primary helpers including the bad row.
    let mut rb = SliverRebuilder::new(&md, Axis::Secondary, 0).unwrap();
    let helpers = [6usize, 5, 4];
    for &h in helpers.iter().take(params.k_primary()) {
        let helper = if h == 6 {
            bad.clone()
        } else {
            enc.primary_sliver(h)
        };
        rb.add(recovery_symbols(&helper, &shape, &[0]).unwrap().remove(0))
            .unwrap();
    }
    match rb.rebuild() {
        Err(RebuildError::Inconsistent(proof)) => {
            let parsed =
                floe_node::codec::InconsistencyProof::from_bytes(&proof.to_bytes()).unwrap();
            assert!(parsed.verify(&md).is_ok());
            // the same proof against the honest metadata is refused
            assert!(parsed.verify(enc.metadata()).is_err());
        }
        other => panic!("expected an inconsistency, got {other:?}"),
    }
    // A reader that decodes from the tampered parity row also notices.
    let slivers = vec![bad.clone(), enc.primary_sliver(1), enc.primary_sliver(2)];
    assert!(matches!(
        decode(&md, &slivers, ConsistencyCheck::Default),
        Err(CodecError::InconsistentEncoding)
    ));
}

/// The largest production shape round-trips.
#[test]
fn n_1000_round_trip_and_recovery() {
    let params = EncodingParams::new(1000).unwrap();
    let data = blob(3_000_000, 42);
    let enc = encode(&data, params).unwrap();
    let shape = *enc.shape();
    let slivers: Vec<Sliver> = (1000 - params.k_primary()..1000)
        .map(|i| enc.primary_sliver(i))
        .collect();
    assert_eq!(
        decode(enc.metadata(), &slivers, ConsistencyCheck::Default).unwrap(),
        data
    );
    let mut rb = SliverRebuilder::new(enc.metadata(), Axis::Secondary, 17).unwrap();
    for i in (0..1000).rev().take(params.k_primary()) {
        rb.add(
            recovery_symbols(&enc.primary_sliver(i), &shape, &[17])
                .unwrap()
                .remove(0),
        )
        .unwrap();
    }
    assert_eq!(rb.rebuild().unwrap(), enc.secondary_sliver(17));
}

/// A blob of `n` shards whose symbols are exactly `s` bytes.
fn blob_with_symbol_size(n: usize, s: usize, seed: u64) -> Vec<u8> {
    let p = EncodingParams::new(n).unwrap();
    let len = s * p.source_symbols() - 1;
    assert_eq!(p.symbol_shape(len as u64).unwrap().symbol_size, s);
    blob(len, seed)
}

/// Every symbol of an expanded sliver is provable, on both axes: for packed symbols that is
/// every position within a chunk and every symbol of the last, partly filled chunk (n is not a
/// multiple of c for most of these shapes).
#[test]
fn proofs_for_every_position_of_every_chunk() {
    for n in [4usize, 7, 10, 13, 31] {
        for s in [2usize, 4, 6, 10, 14, 16, 22, 30, 32, 34, 64] {
            let enc = encode(
                &blob_with_symbol_size(n, s, s as u64),
                EncodingParams::new(n).unwrap(),
            )
            .unwrap();
            let shape = *enc.shape();
            let all: Vec<u16> = (0..n as u16).collect();
            for helper in [enc.primary_sliver(n - 1), enc.secondary_sliver(0)] {
                let syms = recovery_symbols(&helper, &shape, &all).unwrap();
                let full = helper.expand(&shape).unwrap();
                for (t, sym) in syms.iter().enumerate() {
                    assert_eq!(sym.data, full[t * s..(t + 1) * s]);
                    assert_eq!(sym.proof.chunk.is_some(), s <= 32, "n={n} s={s}");
                    let back = RecoverySymbol::from_bytes(&sym.to_bytes()).unwrap();
                    assert_eq!(back.verify(enc.metadata()), Ok(()), "n={n} s={s} t={t}");
                    // the same proof does not prove a neighbour's position
                    let mut moved = back.clone();
                    moved.position = ((t + 1) % n) as u16;
                    assert!(moved.verify(enc.metadata()).is_err(), "n={n} s={s} t={t}");
                }
            }
        }
    }
}

/// A chunk whose padding is not zero is refused, even when everything else is consistent.
#[test]
fn proof_with_non_zero_chunk_padding_is_refused() {
    // s = 6: c = 5 symbols per chunk, so every chunk ends in 2 bytes of padding; at n = 7 the
    // last chunk holds only symbols 5 and 6 (20 bytes of padding).
    for (n, t) in [(10usize, 3usize), (7, 6), (7, 0)] {
        let enc = encode(
            &blob_with_symbol_size(n, 6, 1),
            EncodingParams::new(n).unwrap(),
        )
        .unwrap();
        let shape = *enc.shape();
        let sym = recovery_symbols(&enc.primary_sliver(0), &shape, &[t as u16])
            .unwrap()
            .remove(0);
        assert_eq!(sym.verify(enc.metadata()), Ok(()));
        let mut bad = sym.clone();
        let chunk = bad.proof.chunk.as_mut().unwrap();
        chunk[31] = 1;
        assert_eq!(
            bad.verify(enc.metadata()),
            Err(CodecError::BadProof(ProofError::NonZeroPadding)),
            "n={n} t={t}"
        );
    }
}

/// Proofs must have exactly the length the tree's shape gives, and carry a chunk exactly when
/// symbols are packed.
#[test]
fn proofs_of_the_wrong_length_or_form_are_refused() {
    for s in [6usize, 32, 34, 100] {
        let n = 13;
        let enc = encode(
            &blob_with_symbol_size(n, s, 2),
            EncodingParams::new(n).unwrap(),
        )
        .unwrap();
        let shape = *enc.shape();
        let sym = recovery_symbols(&enc.secondary_sliver(4), &shape, &[5])
            .unwrap()
            .remove(0);
        assert_eq!(sym.verify(enc.metadata()), Ok(()));
        let mut long = sym.clone();
        long.proof.siblings.push([0; 32]);
        assert!(matches!(
            long.verify(enc.metadata()),
            Err(CodecError::BadProof(ProofError::Length { .. }))
        ));
        let mut short = sym.clone();
        short.proof.siblings.pop();
        assert!(matches!(
            short.verify(enc.metadata()),
            Err(CodecError::BadProof(ProofError::Length { .. }))
        ));
        let mut flipped = sym.clone();
        flipped.proof.chunk = match flipped.proof.chunk {
            Some(_) => None,
            None => Some([0; 32]),
        };
        assert!(matches!(
            flipped.verify(enc.metadata()),
            Err(CodecError::BadProof(ProofError::ChunkPresence { .. }))
        ));
        // and through the wire: a truncated proof does not parse into a valid one
        let bytes = sym.to_bytes();
        for cut in 1..40 {
            if let Ok(parsed) = RecoverySymbol::from_bytes(&bytes[..bytes.len() - cut]) {
                assert!(parsed.verify(enc.metadata()).is_err());
            }
        }
    }
}

/// A packed symbol that differs from its place in the chunk is refused.
#[test]
fn packed_symbol_must_match_its_chunk() {
    let n = 10;
    let enc = encode(
        &blob_with_symbol_size(n, 4, 9),
        EncodingParams::new(n).unwrap(),
    )
    .unwrap();
    let shape = *enc.shape();
    let mut sym = recovery_symbols(&enc.primary_sliver(2), &shape, &[3])
        .unwrap()
        .remove(0);
    sym.data[0] ^= 1;
    assert_eq!(
        sym.verify(enc.metadata()),
        Err(CodecError::BadProof(ProofError::SymbolNotInChunk))
    );
}

/// The metadata-only encoder (P hashed batch by batch, the blob read in place) commits to
/// exactly what the full encoder does, whether the blob fills its last row or not.
#[test]
fn metadata_only_encoder_matches_full_encoder() {
    for n in [4usize, 7, 10, 13, 31, 100] {
        let p = EncodingParams::new(n).unwrap();
        let per = p.source_symbols();
        let row = p.k_secondary();
        for len in [
            0,
            1,
            40 * per,
            40 * per - 1,
            34 * per + 1,
            100 * per - 3 * row,
            64 * per + 7 * row,
        ] {
            let data = blob(len, (n + len) as u64);
            let enc = encode(&data, p).unwrap();
            let (md, id) = encode_metadata(&data, p).unwrap();
            assert_eq!(&md, enc.metadata(), "n={n} len={len}");
            assert_eq!(id, enc.blob_id());
        }
    }
}
