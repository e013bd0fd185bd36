//! The streaming encoder (the blob read from a source in pieces, `P` recomputed per pair
//! group) commits to and produces exactly what the in-memory encoder does.

use std::sync::Arc;

use floe_node::client::FileSource;
use floe_node::codec::{encode, BlobSource, CodecError, EncodingParams, StreamingEncoder};
use floe_node::testing::random_bytes as blob;
use proptest::prelude::*;

/// Check metadata, blob ID and every sliver of every group against `encode`.
fn check(data: &[u8], n: usize, source: Box<dyn BlobSource>, stripe: usize, groups: usize) {
    let p = EncodingParams::new(n).unwrap();
    let enc = encode(data, p).unwrap();
    let st = Arc::new(StreamingEncoder::with_stripe_bytes(source, p, groups, stripe).unwrap());
    assert_eq!(st.metadata(), enc.metadata(), "n={n} len={}", data.len());
    assert_eq!(st.blob_id(), enc.blob_id());
    let (md, id) = floe_node::codec::stream::metadata_only(&data.to_vec(), p).unwrap();
    assert_eq!((&md, id), (enc.metadata(), enc.blob_id()));
    let mut seen = vec![false; n];
    // at most one group per row of P
    let groups = groups.min(2 * p.f());
    assert_eq!(st.groups(), groups);
    // every group twice: the second time of group 0 is recomputed, not the kept rows
    for g in (0..groups).chain(0..groups) {
        let group = st.group(g).unwrap();
        assert_eq!(group.pairs(), st.group_pairs(g));
        for i in group.pairs() {
            seen[i] = true;
            assert_eq!(
                group.primary_sliver(i).unwrap(),
                enc.primary_sliver(i),
                "primary {i}"
            );
            let j = n - 1 - i;
            assert_eq!(
                group.secondary_sliver(j).unwrap(),
                enc.secondary_sliver(j),
                "secondary {j}"
            );
        }
        // a pair of another group is refused, not made up
        if let Some(other) = (0..n).find(|i| !group.pairs().contains(i)) {
            assert!(matches!(
                group.primary_sliver(other),
                Err(CodecError::IndexOutOfRange { .. })
            ));
        }
    }
    assert!(seen.iter().all(|s| *s), "every pair in some group");
    let sizes: usize = (0..groups).map(|g| st.group_pairs(g).len()).sum();
    assert_eq!(sizes, n, "no pair in two groups");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Any size (packed and hashed symbols, full and partial last rows), any stripe width
    /// (one column up to all of them) and any number of groups.
    #[test]
    fn streaming_equals_in_memory(
        n in prop::sample::select(vec![4usize, 7, 10, 13, 31]),
        len in 0usize..120_000,
        stripe in prop::sample::select(vec![1usize, 700, 5_000, 64 << 10, 16 << 20]),
        groups in 1usize..5,
        seed in any::<u64>(),
    ) {
        let data = blob(len, seed);
        check(&data, n, Box::new(data.clone()), stripe, groups);
    }
}

#[test]
fn from_a_file_at_n_100() {
    let dir = tempfile::tempdir().unwrap();
    for (len, stripe, groups) in [
        (3 << 20, 256 << 10, 3),
        (100_000, 16 << 20, 2),
        (5_000, 1, 1),
    ] {
        let data = blob(len, len as u64);
        let path = dir.path().join("blob");
        std::fs::write(&path, &data).unwrap();
        check(
            &data,
            100,
            Box::new(FileSource::open(&path).unwrap()),
            stripe,
            groups,
        );
    }
}

#[test]
fn a_file_that_shrinks_under_the_encoder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, blob(200_000, 1)).unwrap();
    let source = FileSource::open(&path).unwrap();
    std::fs::write(&path, blob(1_000, 1)).unwrap();
    let r = StreamingEncoder::new(Box::new(source), EncodingParams::new(10).unwrap(), 2);
    assert!(matches!(r, Err(CodecError::Source(_))), "{:?}", r.err());
}
