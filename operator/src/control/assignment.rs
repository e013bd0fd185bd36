//! Shard assignment (PROTOCOL.md §6): how many shards each member holds (D'Hondt apportionment
//! by stake, capped per node) and which ones (minimal movement from the previous map).
//!
//! Both steps are pure and deterministic: the same members and stakes give the same map, in
//! whatever order they are listed. Ties between equal quotients go to the smaller node ID.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use floe_node::protocol::NodeId;

/// One member eligible for shards in the next epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stake {
    pub node_id: NodeId,
    pub stake: u64,
}

/// Shards per member: node ID → ascending shard numbers. Members with no shards are absent.
pub type ShardMap = BTreeMap<NodeId, Vec<u16>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AssignmentError {
    #[error("no member with stake: {n_shards} shards need at least one member with stake > 0")]
    NoStake { n_shards: u16 },
    #[error(
        "{members} members with stake can hold at most {capacity} of the {n_shards} shards at \
         {cap} shards each (the per-node cap); add members"
    )]
    OverCap {
        members: usize,
        cap: usize,
        capacity: usize,
        n_shards: u16,
    },
}

/// The per-node cap of PROTOCOL.md §6: n/10 with at least 20 members, else ⌈2n/members⌉.
pub fn shard_cap(n_shards: u16, members: usize) -> usize {
    let n = n_shards as usize;
    if members == 0 {
        0
    } else if members >= 20 {
        n / 10
    } else {
        (2 * n).div_ceil(members)
    }
}

/// D'Hondt: give the `n` seats one at a time to the member with the highest quotient
/// `stake / (seats + 1)` among those below the cap. Members with zero stake get nothing.
pub fn apportion(
    n_shards: u16,
    stakes: &[Stake],
) -> Result<BTreeMap<NodeId, usize>, AssignmentError> {
    let mut eligible: Vec<Stake> = stakes.iter().copied().filter(|s| s.stake > 0).collect();
    eligible.sort_by_key(|s| s.node_id);
    eligible.dedup_by_key(|s| s.node_id);
    if eligible.is_empty() {
        return Err(AssignmentError::NoStake { n_shards });
    }
    let cap = shard_cap(n_shards, eligible.len());
    let capacity = cap * eligible.len();
    if capacity < n_shards as usize {
        return Err(AssignmentError::OverCap {
            members: eligible.len(),
            cap,
            capacity,
            n_shards,
        });
    }
    let mut seats = vec![0usize; eligible.len()];
    for _ in 0..n_shards {
        // the best quotient; exact comparison of a/(x+1) vs b/(y+1) by cross-multiplying
        let mut best: Option<usize> = None;
        for (i, s) in eligible.iter().enumerate() {
            if seats[i] >= cap {
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) => {
                    let lhs = s.stake as u128 * (seats[b] as u128 + 1);
                    let rhs = eligible[b].stake as u128 * (seats[i] as u128 + 1);
                    // strictly greater wins; on a tie the earlier (smaller node ID) keeps it
                    if lhs.cmp(&rhs) == Ordering::Greater {
                        Some(i)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        let b = best.expect("capacity >= n leaves a member below the cap");
        seats[b] += 1;
    }
    Ok(eligible
        .iter()
        .zip(seats)
        .map(|(s, k)| (s.node_id, k))
        .collect())
}

/// The shard map for the next epoch: D'Hondt counts, then minimal movement from `previous`.
///
/// Every member keeps as many of its previous shards as its new count allows (the lowest
/// numbered ones); the shards released by members that shrank, left or lost their stake are
/// handed, lowest first, to the members that grew, in node-ID order. No other shard moves, so
/// the number of moved shards is exactly the sum of the growths, the least any map with these
/// counts can move. Without a previous map (the first committee) the shards are dealt in runs
/// in node-ID order.
pub fn assign(
    n_shards: u16,
    stakes: &[Stake],
    previous: Option<&ShardMap>,
) -> Result<ShardMap, AssignmentError> {
    let counts = apportion(n_shards, stakes)?;
    let empty = ShardMap::new();
    let previous = previous.unwrap_or(&empty);
    let mut map = ShardMap::new();
    let mut taken = BTreeSet::new();
    for (id, &count) in &counts {
        let kept: Vec<u16> = previous
            .get(id)
            .map(|old| {
                let mut old: Vec<u16> = old.iter().copied().filter(|s| *s < n_shards).collect();
                old.sort_unstable();
                old.dedup();
                old.truncate(count);
                old
            })
            .unwrap_or_default();
        taken.extend(kept.iter().copied());
        map.insert(*id, kept);
    }
    let mut free = (0..n_shards).filter(|s| !taken.contains(s));
    for (id, &count) in &counts {
        let shards = map.get_mut(id).expect("inserted above");
        while shards.len() < count {
            shards.push(free.next().expect("counts sum to n"));
        }
        shards.sort_unstable();
    }
    map.retain(|_, s| !s.is_empty());
    Ok(map)
}

/// Shards whose owner differs between two maps.
pub fn moved_shards(before: &ShardMap, after: &ShardMap) -> BTreeSet<u16> {
    let owner = |m: &ShardMap| -> BTreeMap<u16, NodeId> {
        m.iter()
            .flat_map(|(id, s)| s.iter().map(move |x| (*x, *id)))
            .collect()
    };
    let (a, b) = (owner(before), owner(after));
    b.iter()
        .filter(|(s, id)| a.get(s) != Some(id))
        .map(|(s, _)| *s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }
    fn stakes(v: &[(u8, u64)]) -> Vec<Stake> {
        v.iter()
            .map(|(b, s)| Stake {
                node_id: id(*b),
                stake: *s,
            })
            .collect()
    }
    fn counts(m: &ShardMap) -> BTreeMap<NodeId, usize> {
        m.iter().map(|(k, v)| (*k, v.len())).collect()
    }
    fn check_partition(m: &ShardMap, n: u16) -> Result<(), TestCaseError> {
        let all: Vec<u16> = m.values().flatten().copied().collect();
        let set: BTreeSet<u16> = all.iter().copied().collect();
        prop_assert_eq!(all.len(), n as usize, "sums to n");
        prop_assert_eq!(set.len(), n as usize, "no shard twice");
        prop_assert!(set.iter().all(|s| *s < n));
        Ok(())
    }

    #[test]
    fn dhondt_by_stake() {
        // 100 shards, stakes 5:3:2 → 50/30/20 (cap ⌈200/3⌉ = 67 does not bind)
        let m = assign(100, &stakes(&[(1, 5), (2, 3), (3, 2)]), None).unwrap();
        assert_eq!(
            counts(&m).values().copied().collect::<Vec<_>>(),
            vec![50, 30, 20]
        );
        // first committee: runs in node-ID order
        assert_eq!(m[&id(1)], (0..50).collect::<Vec<_>>());
        assert_eq!(m[&id(3)], (80..100).collect::<Vec<_>>());
    }

    #[test]
    fn cap_binds() {
        // one whale: cap ⌈2·10/4⌉ = 5
        let m = assign(10, &stakes(&[(1, 1000), (2, 1), (3, 1), (4, 1)]), None).unwrap();
        assert_eq!(m[&id(1)].len(), 5);
        assert_eq!(shard_cap(1000, 25), 100);
        assert_eq!(shard_cap(100, 7), 29);
    }

    #[test]
    fn errors_are_explicit() {
        assert_eq!(
            assign(10, &stakes(&[(1, 0)]), None),
            Err(AssignmentError::NoStake { n_shards: 10 })
        );
        // 20 members at cap 1 (n/10) cannot hold 19 shards? they can: 20 ≥ 19. 22 shards: 2 each.
        assert!(assign(
            22,
            &stakes(&(1..=20).map(|b| (b, 1)).collect::<Vec<_>>()),
            None
        )
        .is_ok());
        // 20 members with stake among 25 entries, 9 shards: n/10 = 0 per node
        let many: Vec<(u8, u64)> = (1..=20).map(|b| (b, 1)).collect();
        assert!(matches!(
            assign(9, &stakes(&many), None),
            Err(AssignmentError::OverCap { .. })
        ));
    }

    #[test]
    fn a_departed_member_s_shards_move_and_nothing_else() {
        let before = assign(12, &stakes(&[(1, 1), (2, 1), (3, 1)]), None).unwrap();
        let after = assign(12, &stakes(&[(1, 1), (2, 1)]), Some(&before)).unwrap();
        assert_eq!(
            moved_shards(&before, &after),
            before[&id(3)].iter().copied().collect()
        );
        assert!(before[&id(1)].iter().all(|s| after[&id(1)].contains(s)));
    }

    fn arb_stakes() -> impl Strategy<Value = Vec<(u8, u64)>> {
        prop::collection::btree_map(any::<u8>(), 0u64..1000, 1..30)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn partition_cap_zero_stake_and_order(st in arb_stakes(), n in 4u16..=1000, seed in any::<u64>()) {
            let s = stakes(&st);
            let Ok(m) = assign(n, &s, None) else { return Ok(()); };
            check_partition(&m, n)?;
            let live = st.iter().filter(|(_, k)| *k > 0).count();
            let cap = shard_cap(n, live);
            prop_assert!(m.values().all(|v| v.len() <= cap), "cap respected");
            for (b, k) in &st {
                if *k == 0 { prop_assert!(!m.contains_key(&id(*b)), "zero stake gets nothing"); }
            }
            // input order does not matter
            let mut shuffled = s.clone();
            let len = shuffled.len();
            for i in 0..len { shuffled.swap(i, (seed as usize).wrapping_mul(i + 7) % len); }
            prop_assert_eq!(assign(n, &shuffled, None).unwrap(), m);
        }

        #[test]
        fn moves_exactly_the_minimum(a in arb_stakes(), b in arb_stakes(), n in 4u16..=400) {
            let Ok(before) = assign(n, &stakes(&a), None) else { return Ok(()); };
            let Ok(after) = assign(n, &stakes(&b), Some(&before)) else { return Ok(()); };
            check_partition(&after, n)?;
            // a map with these counts must move at least Σ max(0, new − old) shards
            let (cb, ca) = (counts(&before), counts(&after));
            let minimum: usize = ca.iter().map(|(k, c)| c.saturating_sub(*cb.get(k).unwrap_or(&0))).sum();
            prop_assert_eq!(moved_shards(&before, &after).len(), minimum);
            // same input again: nothing moves
            prop_assert_eq!(assign(n, &stakes(&b), Some(&after)).unwrap(), after);
        }

        #[test]
        fn a_stake_change_moves_shards_only_from_or_to_that_member(
            st in arb_stakes(), which in any::<prop::sample::Index>(), new_stake in 1u64..2000, n in 4u16..=400)
        {
            // a change between two non-zero stakes: the number of members with stake, and so the
            // cap, stays the same (dropping to zero stake is leaving, and changes the cap)
            let s = stakes(&st);
            let i = which.index(s.len());
            if s[i].stake == 0 { return Ok(()); }
            let Ok(before) = assign(n, &s, None) else { return Ok(()); };
            let mut changed = s.clone();
            changed[i].stake = new_stake;
            let who = changed[i].node_id;
            let Ok(after) = assign(n, &changed, Some(&before)) else { return Ok(()); };
            let owner = |m: &ShardMap, shard: u16| m.iter().find(|(_, v)| v.contains(&shard)).map(|(k, _)| *k);
            for shard in moved_shards(&before, &after) {
                let (from, to) = (owner(&before, shard), owner(&after, shard));
                prop_assert!(from == Some(who) || to == Some(who),
                    "shard {} moved {:?} → {:?}, not involving {:?}", shard, from, to, who);
            }
        }
    }
}
