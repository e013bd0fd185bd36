//! How many storage-node pods a PodDisruptionBudget may let go at once.
//!
//! Everything in Floe counts in shards (PROTOCOL.md §1): the network tolerates `f = ⌊(n−1)/3⌋`
//! faulty shards. A voluntary disruption (node drain, eviction) must never take down pods that
//! together hold more than `f` shards, or reads and writes lose their quorum. The PDB counts
//! pods, not shards, so `maxUnavailable = k` is safe only when *any* `k` pods hold at most `f`
//! shards, i.e. the `k` largest members do. On top of that the operator's policy is one pod at
//! a time while healthy, and none while the network is changing epoch or recovering (a pod
//! down then could hold the only synced copy of a shard in flight).

/// The network's state as it bears on voluntary disruptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisruptionState {
    /// Committee serving, no epoch change, sync or recovery running.
    Healthy,
    /// Epoch change, shard sync or recovery running, or members already down.
    Busy,
}

/// Largest `k` such that the `k` members with the most shards hold at most `f` shards together.
pub fn pods_within_fault_bound(total_shards: u32, member_shards: &[u32]) -> u32 {
    let f = total_shards.saturating_sub(1) / 3;
    let mut sorted = member_shards.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut sum = 0u64;
    let mut k = 0u32;
    for s in sorted {
        sum += u64::from(s);
        if sum > u64::from(f) {
            break;
        }
        k += 1;
    }
    k
}

/// Shards per member of the first committee, before one exists: `total_shards` split as evenly
/// as possible over `nodes` (what equal stakes give). Used so a cluster that has not formed yet
/// is still protected as it will be.
pub fn even_split(total_shards: u32, nodes: u32) -> Vec<u32> {
    if nodes == 0 {
        return Vec::new();
    }
    let base = total_shards / nodes;
    let extra = total_shards % nodes;
    (0..nodes).map(|i| base + u32::from(i < extra)).collect()
}

/// `maxUnavailable` of the storage-node PDB.
///
/// `member_shards` is the current committee's shard count per member (`None` before the first
/// committee: the even split over `nodes` is assumed). The result is 1 while healthy if any
/// single member's shards fit within `f`, else 0; always 0 while [`DisruptionState::Busy`].
pub fn max_unavailable(
    total_shards: u32,
    member_shards: Option<&[u32]>,
    nodes: u32,
    state: DisruptionState,
) -> i32 {
    if state == DisruptionState::Busy {
        return 0;
    }
    let assumed;
    let shards = match member_shards {
        Some(s) => s,
        None => {
            assumed = even_split(total_shards, nodes);
            &assumed
        }
    };
    i32::from(pods_within_fault_bound(total_shards, shards) >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DisruptionState::*;

    #[test]
    fn fault_bound_in_shards() {
        // n = 10: f = 3
        assert_eq!(pods_within_fault_bound(10, &[3, 3, 2, 2]), 1);
        assert_eq!(pods_within_fault_bound(10, &[1, 1, 1, 7]), 0);
        assert_eq!(pods_within_fault_bound(10, &[1; 10]), 3);
        // n = 1000: f = 333; 10 members of 100 shards: three may go
        assert_eq!(pods_within_fault_bound(1000, &[100; 10]), 3);
        assert_eq!(pods_within_fault_bound(4, &[]), 0);
    }

    #[test]
    fn even_split_sums_to_the_shards() {
        assert_eq!(even_split(10, 4), [3, 3, 2, 2]);
        assert_eq!(even_split(4, 4), [1, 1, 1, 1]);
        assert_eq!(even_split(1000, 7).iter().sum::<u32>(), 1000);
        assert!(even_split(5, 0).is_empty());
    }

    #[test]
    fn one_when_healthy_zero_when_busy_or_unsafe() {
        assert_eq!(max_unavailable(10, Some(&[3, 3, 2, 2]), 4, Healthy), 1);
        assert_eq!(max_unavailable(10, Some(&[3, 3, 2, 2]), 4, Busy), 0);
        // one member holds more than f = 3 shards: no voluntary disruption is safe
        assert_eq!(max_unavailable(10, Some(&[4, 2, 2, 2]), 4, Healthy), 0);
        // never more than one pod at a time, however many would fit
        assert_eq!(max_unavailable(1000, Some(&[100; 10]), 10, Healthy), 1);
        // before the first committee: the even split decides (7 shards over 2 nodes: 4 > f = 2)
        assert_eq!(max_unavailable(10, None, 4, Healthy), 1);
        assert_eq!(max_unavailable(7, None, 2, Healthy), 0);
    }
}
