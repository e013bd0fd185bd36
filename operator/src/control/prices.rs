//! Prices voted by the nodes (docs/economics.md): each member votes a storage and a write
//! price; the committee publishes, for each, the lowest value at or below which members
//! holding a quorum of shards (2f+1) voted — Walrus's `quorum_below` over shard weight
//! (`contracts/walrus/sources/staking/staking_inner.move`). Members holding up to f shards
//! cannot push the price beyond what the quorum accepts, in either direction.

/// The quorum-below value of `votes` (price, shards) for a committee of `n` shards whose
/// quorum is `quorum` shards; `None` without votes. If the votes cover fewer than `quorum`
/// shards (members that did not vote), the highest vote is taken.
pub fn quorum_below(votes: &[(u64, usize)], quorum: usize) -> Option<u64> {
    let mut v: Vec<(u64, usize)> = votes.iter().copied().filter(|(_, w)| *w > 0).collect();
    v.sort_unstable();
    let mut acc = 0usize;
    for (price, w) in &v {
        acc += w;
        if acc >= quorum {
            return Some(*price);
        }
    }
    v.last().map(|(p, _)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_price_is_where_a_quorum_of_shards_voted_at_or_below() {
        // n = 10: quorum 7. Shard weights 3, 3, 2, 2.
        let votes = [(100, 3), (50, 3), (200, 2), (10, 2)];
        // ascending: 10 (2), 50 (5), 100 (8 ≥ 7) → 100
        assert_eq!(quorum_below(&votes, 7), Some(100));
        // a heavy outlier vote cannot move it
        let votes = [(100, 3), (50, 3), (1_000_000, 2), (10, 2)];
        assert_eq!(quorum_below(&votes, 7), Some(100));
        let votes = [(100, 3), (50, 3), (200, 2), (0, 2)];
        assert_eq!(quorum_below(&votes, 7), Some(100));
        assert_eq!(quorum_below(&[], 7), None);
        // votes short of a quorum (members without a vote): the highest
        assert_eq!(quorum_below(&[(5, 1), (9, 2)], 7), Some(9));
        // equal weights, n = 4 (quorum 3): the third-lowest
        assert_eq!(quorum_below(&[(4, 1), (1, 1), (3, 1), (2, 1)], 3), Some(3));
    }
}
