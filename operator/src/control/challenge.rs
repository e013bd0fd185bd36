//! Storage challenges (PROTOCOL.md §7): which symbols each member must prove it holds, and how
//! its answers are judged. Pure: the driver fetches lists and metadata and calls the member.
//!
//! The sample is derived from a seed drawn fresh at a random moment of the epoch, so no node can
//! know in advance what will be asked; the seed, the list of eligible blobs (by digest and count)
//! and the results are recorded, so anyone can re-derive every item.

use std::collections::BTreeMap;

use floe_node::codec::{Axis, BlobId, BlobMetadata, RecoverySymbol};
use floe_node::protocol::NodeId;
use serde::{Deserialize, Serialize};

const SAMPLE_DOMAIN: &[u8] = b"floe/challenge/v1";

/// Items per member so that a node missing a fraction `dropped` of its slivers fails with
/// probability at least `1 − miss`: each item hits a dropped sliver independently with
/// probability `dropped`, so the node escapes with `(1 − dropped)^k ≤ miss`.
/// 1 % dropped, 10⁻⁶ → 1375 items.
pub fn sample_size(dropped: f64, miss: f64) -> usize {
    assert!(dropped > 0.0 && dropped < 1.0 && miss > 0.0 && miss < 1.0);
    (miss.ln() / (1.0 - dropped).ln()).ceil() as usize
}

/// The default: detect a node that dropped 1 % of its slivers with probability ≥ 1 − 10⁻⁶.
pub fn default_sample_size() -> usize {
    sample_size(0.01, 1e-6)
}

/// One challenged symbol: `symbol` of the expanded `axis` sliver of `pair` of `blob`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    #[serde(with = "blob_text")]
    pub blob: BlobId,
    pub pair: u16,
    #[serde(with = "axis_name")]
    pub axis: Axis,
    pub symbol: u16,
}

/// The certified blobs a round draws from: sorted, with a digest recorded in the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligible {
    pub blobs: Vec<BlobId>,
}

impl Eligible {
    pub fn new(mut blobs: Vec<BlobId>) -> Self {
        blobs.sort();
        blobs.dedup();
        Self { blobs }
    }
    /// BLAKE3 over the sorted IDs: what a verifier compares before re-deriving the sample.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for b in &self.blobs {
            h.update(b.as_bytes());
        }
        *h.finalize().as_bytes()
    }
}

/// The `count` items of `member` (holding `shards` of `n`) for `seed`: item j is drawn from
/// BLAKE3(domain ‖ seed ‖ member ‖ j): a uniform blob, one of the member's shards (hence a
/// uniform sliver of what it stores), an axis and a systematic symbol position of that axis
/// (`< k_s` for a primary sliver, `< k_p` for a secondary one): exactly the symbols the node
/// stores, so it answers from one symbol and its stored proof path, not by re-expanding the
/// sliver (parity positions are functions of these and prove nothing more about what is held).
pub fn derive_items(
    seed: &[u8; 32],
    member: &NodeId,
    shards: &[u16],
    n: usize,
    eligible: &Eligible,
    count: usize,
) -> Vec<Item> {
    let Ok(params) = floe_node::codec::EncodingParams::new(n) else {
        return Vec::new();
    };
    if shards.is_empty() || eligible.blobs.is_empty() {
        return Vec::new();
    }
    (0..count as u32)
        .map(|j| {
            let mut h = blake3::Hasher::new();
            h.update(SAMPLE_DOMAIN)
                .update(seed)
                .update(&member.0)
                .update(&j.to_le_bytes());
            let d = h.finalize();
            let w = |k: usize| {
                u64::from_le_bytes(d.as_bytes()[8 * k..8 * k + 8].try_into().expect("8 bytes"))
            };
            let blob = eligible.blobs[(w(0) % eligible.blobs.len() as u64) as usize];
            let shard = shards[(w(1) % shards.len() as u64) as usize] as usize;
            let rot = blob.mod_n(n);
            // pair p is stored by shard (p + rot) mod n
            let pair = ((shard + n - rot) % n) as u16;
            let axis = if w(2) & 1 == 0 {
                Axis::Primary
            } else {
                Axis::Secondary
            };
            let systematic = match axis {
                Axis::Primary => params.k_secondary(),
                Axis::Secondary => params.k_primary(),
            };
            Item {
                blob,
                pair,
                axis,
                symbol: (w(3) % systematic as u64) as u16,
            }
        })
        .collect()
}

/// Why one answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemFailure {
    /// The node sent nothing for it (does not hold the sliver).
    Missing,
    /// The answer does not parse.
    Malformed(String),
    /// A valid symbol, but of another position than the one asked.
    WrongPosition,
    /// The proof does not verify against the blob's metadata.
    BadProof(String),
}

/// Judge one answer: the symbol at exactly the challenged position, proven against the
/// metadata (itself verified against the blob ID by the caller).
pub fn judge(item: &Item, answer: &[u8], metadata: &BlobMetadata) -> Result<(), ItemFailure> {
    if answer.is_empty() {
        return Err(ItemFailure::Missing);
    }
    let sym =
        RecoverySymbol::from_bytes(answer).map_err(|e| ItemFailure::Malformed(e.to_string()))?;
    let n = metadata.n();
    let sliver_index = match item.axis {
        Axis::Primary => item.pair as usize,
        Axis::Secondary => n - 1 - item.pair as usize,
    };
    if sym.proven_axis != item.axis
        || sym.sliver_index as usize != sliver_index
        || sym.position != item.symbol
    {
        return Err(ItemFailure::WrongPosition);
    }
    sym.verify(metadata)
        .map_err(|e| ItemFailure::BadProof(e.to_string()))
}

/// A member's result for one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Passed {
        items: usize,
    },
    Failed {
        items: usize,
        failed: usize,
        /// Up to ten failed items with the reason, for the status and the logs.
        examples: Vec<(Item, ItemFailure)>,
    },
    /// No answer within the deadline (or the node was unreachable).
    TimedOut {
        items: usize,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed { .. })
    }
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed { .. } => "passed",
            Outcome::Failed { .. } => "failed",
            Outcome::TimedOut { .. } => "timed_out",
        }
    }
}

/// Judge a member's answers (one per item, in order; a short list counts the rest missing).
pub fn judge_all(
    items: &[Item],
    answers: &[Vec<u8>],
    metadata: &BTreeMap<BlobId, BlobMetadata>,
) -> Outcome {
    let mut failed = 0;
    let mut examples = Vec::new();
    let mut judged = 0;
    for (i, item) in items.iter().enumerate() {
        // items whose metadata nobody else could supply are not held against the member
        let Some(md) = metadata.get(&item.blob) else {
            continue;
        };
        judged += 1;
        let answer = answers.get(i).map(Vec::as_slice).unwrap_or_default();
        if let Err(e) = judge(item, answer, md) {
            failed += 1;
            if examples.len() < 10 {
                examples.push((*item, e));
            }
        }
    }
    if failed == 0 {
        Outcome::Passed { items: judged }
    } else {
        Outcome::Failed {
            items: judged,
            failed,
            examples,
        }
    }
}

/// What one epoch's challenge round recorded (persisted, shown in the status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub epoch: u32,
    /// Unix milliseconds at which the seed was drawn.
    pub drawn_at_ms: u64,
    #[serde(with = "hex_bytes")]
    pub seed: [u8; 32],
    /// Blobs eligible (certified before the epoch began), and the digest of their sorted IDs.
    pub eligible_blobs: usize,
    #[serde(with = "hex_bytes")]
    pub eligible_digest: [u8; 32],
    pub samples: usize,
    pub results: BTreeMap<NodeId, MemberResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberResult {
    pub outcome: Outcome,
    /// Bytes of stored data the member read to answer, as it reports them (one symbol and its
    /// stored proof path per item of a large sliver, the sliver for a small one), and the
    /// bytes of symbols and proofs it sent.
    pub bytes_read: u64,
    pub bytes_answered: u64,
    pub stored_bytes: u64,
}

mod blob_text {
    use floe_node::codec::BlobId;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &BlobId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BlobId, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(|e| serde::de::Error::custom(format!("{e:?}")))
    }
}

mod axis_name {
    use floe_node::codec::Axis;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(a: &Axis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match a {
            Axis::Primary => "primary",
            Axis::Secondary => "secondary",
        })
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Axis, D::Error> {
        match String::deserialize(d)?.as_str() {
            "primary" => Ok(Axis::Primary),
            "secondary" => Ok(Axis::Secondary),
            other => Err(serde::de::Error::custom(format!("unknown axis {other:?}"))),
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(&s)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("expected 32 hex bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_node::codec::{encode, recovery_symbols, EncodingParams};

    #[test]
    fn sample_size_for_the_target() {
        assert_eq!(default_sample_size(), 1375);
        let k = default_sample_size() as f64;
        assert!(0.99f64.powf(k) <= 1e-6 && 0.99f64.powf(k - 1.0) > 1e-6);
    }

    #[test]
    fn items_are_reproducible_and_on_the_member_s_shards() {
        let params = EncodingParams::new(10).unwrap();
        let blobs: Vec<BlobId> = (0..5u8).map(|i| BlobId([i; 32])).collect();
        let e = Eligible::new(blobs.clone());
        let me = NodeId([7; 32]);
        let a = derive_items(&[1; 32], &me, &[2, 5], 10, &e, 200);
        assert_eq!(a, derive_items(&[1; 32], &me, &[2, 5], 10, &e, 200));
        assert_ne!(a, derive_items(&[2; 32], &me, &[2, 5], 10, &e, 200));
        for it in &a {
            let shard = params.shard_for_pair(it.pair as usize, it.blob.mod_n(10));
            assert!(shard == 2 || shard == 5);
            // systematic positions only: k_s = 7 on a row, k_p = 4 on a column at n = 10
            let k = match it.axis {
                Axis::Primary => params.k_secondary(),
                Axis::Secondary => params.k_primary(),
            };
            assert!((it.symbol as usize) < k, "{it:?}");
        }
        assert!(
            a.iter().any(|i| i.axis == Axis::Primary)
                && a.iter().any(|i| i.axis == Axis::Secondary)
        );
        assert!(derive_items(&[1; 32], &me, &[], 10, &e, 5).is_empty());
    }

    #[test]
    fn judging_answers() {
        let params = EncodingParams::new(7).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let enc = encode(&data, params).unwrap();
        let md = enc.metadata().clone();
        let id = enc.blob_id();
        let shape = md.shape().unwrap();
        let item = Item {
            blob: id,
            pair: 2,
            axis: Axis::Secondary,
            symbol: 5,
        };
        let sliver = enc.secondary_sliver(7 - 1 - 2);
        let good = recovery_symbols(&sliver, &shape, &[5])
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(judge(&item, &good.to_bytes(), &md), Ok(()));
        // a provable symbol of another position is not an answer
        let other = recovery_symbols(&sliver, &shape, &[4])
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(
            judge(&item, &other.to_bytes(), &md),
            Err(ItemFailure::WrongPosition)
        );
        let mut bad = good.clone();
        bad.data[0] ^= 1;
        assert!(matches!(
            judge(&item, &bad.to_bytes(), &md),
            Err(ItemFailure::BadProof(_))
        ));
        assert_eq!(judge(&item, &[], &md), Err(ItemFailure::Missing));
        assert!(matches!(
            judge(&item, &[1, 2, 3], &md),
            Err(ItemFailure::Malformed(_))
        ));
        let mds = BTreeMap::from([(id, md.clone())]);
        let out = judge_all(&[item, item], &[good.to_bytes()], &mds);
        assert!(matches!(
            out,
            Outcome::Failed {
                items: 2,
                failed: 1,
                ..
            }
        ));
        assert_eq!(
            judge_all(&[item], &[good.to_bytes()], &mds),
            Outcome::Passed { items: 1 }
        );
    }

    /// The detection target, counted: a node that dropped 1 % of its slivers, challenged over
    /// 1000 simulated epochs with fresh seeds. Each epoch's sample is derived exactly as in a
    /// real round; "dropped" is a fixed random 1 % of the node's (blob, shard, axis) slivers.
    #[test]
    fn a_node_missing_one_percent_is_caught_every_epoch() {
        let n = 100;
        let shards: Vec<u16> = (0..14).collect();
        let blobs: Vec<BlobId> = (0..500u32)
            .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let eligible = Eligible::new(blobs.clone());
        let me = NodeId([3; 32]);
        // every sliver the node stores, and a deterministic 1 % of them dropped
        let mut slivers = Vec::new();
        for b in &eligible.blobs {
            for s in &shards {
                let pair = ((*s as usize + n - b.mod_n(n)) % n) as u16;
                slivers.push((*b, pair, Axis::Primary));
                slivers.push((*b, pair, Axis::Secondary));
            }
        }
        let dropped: std::collections::BTreeSet<(BlobId, u16, u8)> = slivers
            .iter()
            .filter(|(b, p, a)| {
                blake3::hash(&[&b.0[..], &p.to_le_bytes(), &[a.as_u8()]].concat()).as_bytes()[0] < 3
            })
            .map(|(b, p, a)| (*b, *p, a.as_u8()))
            .collect();
        let frac = dropped.len() as f64 / slivers.len() as f64;
        assert!((0.008..0.016).contains(&frac), "dropped {frac}");
        let k = default_sample_size();
        let mut caught = 0;
        let epochs = 1000;
        for e in 0..epochs {
            let seed = *blake3::hash(format!("epoch {e}").as_bytes()).as_bytes();
            let items = derive_items(&seed, &me, &shards, n, &eligible, k);
            if items
                .iter()
                .any(|i| dropped.contains(&(i.blob, i.pair, i.axis.as_u8())))
            {
                caught += 1;
            }
        }
        assert_eq!(caught, epochs, "every epoch's challenge catches the node");
    }
}
