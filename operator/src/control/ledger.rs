//! The reward ledger (PROTOCOL.md §7): each epoch's reward is split among the members that
//! passed their challenge, in proportion to their shards.
//!
//! Integer units, largest-remainder rounding: every passing member gets ⌊R·w/W⌋, and the units
//! left over go one each to the largest remainders (ties: smaller node ID). The split always sums
//! to exactly R. An epoch in which nobody passed issues nothing; the units are recorded as
//! withheld, never created.

use std::collections::BTreeMap;

use floe_node::protocol::NodeId;
use serde::{Deserialize, Serialize};

/// Split `reward` among `(member, shards)` in proportion to shards.
pub fn split(reward: u64, weights: &[(NodeId, usize)]) -> BTreeMap<NodeId, u64> {
    let total: u128 = weights.iter().map(|(_, w)| *w as u128).sum();
    let mut out: BTreeMap<NodeId, u64> = BTreeMap::new();
    if total == 0 || reward == 0 {
        return out;
    }
    let mut rems = Vec::with_capacity(weights.len());
    let mut given: u64 = 0;
    for (id, w) in weights {
        let exact = reward as u128 * *w as u128;
        let share = (exact / total) as u64;
        *out.entry(*id).or_default() += share;
        given += share;
        rems.push((exact % total, *id));
    }
    // largest remainder first; ties to the smaller node ID
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, id) in rems.into_iter().take((reward - given) as usize) {
        *out.entry(id).or_default() += 1;
    }
    out
}

/// Totals kept with the control state (persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Units paid to each node, over all epochs.
    pub totals: BTreeMap<NodeId, u64>,
    pub issued: u64,
    /// Rewards of epochs in which no member passed.
    pub withheld: u64,
    /// The last epoch paid (an epoch is paid once, however often a restart replays it).
    pub last_paid_epoch: u32,
    /// With a market (docs/economics.md): storage fees paid out, and the parts of members that
    /// failed their challenge, carried into the next epoch's pool.
    #[serde(default)]
    pub fees: u64,
    #[serde(default)]
    pub rolled_over: u64,
}

impl Ledger {
    /// Pay epoch `epoch`'s reward to the passing members; returns each member's payment.
    /// Idempotent per epoch.
    pub fn pay(
        &mut self,
        epoch: u32,
        reward: u64,
        passed: &[(NodeId, usize)],
    ) -> BTreeMap<NodeId, u64> {
        if epoch <= self.last_paid_epoch {
            return BTreeMap::new();
        }
        self.last_paid_epoch = epoch;
        let paid = split(reward, passed);
        if paid.is_empty() {
            self.withheld += reward;
        }
        for (id, v) in &paid {
            *self.totals.entry(*id).or_default() += v;
            self.issued += v;
        }
        paid
    }

    /// Record a settlement the market computed (`registry::Registry`): the status and the
    /// metrics read the ledger either way.
    pub fn record(&mut self, s: &super::registry::Settlement) {
        for (id, v) in &s.paid {
            *self.totals.entry(*id).or_default() += v;
            self.issued += v;
        }
        self.fees += s.fees;
        self.rolled_over = s.rolled_over;
        self.last_paid_epoch = self.last_paid_epoch.max(s.epoch);
    }

    /// Σ totals == issued (what the tests and the status check).
    pub fn balanced(&self) -> bool {
        self.totals.values().sum::<u64>() == self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn split_is_proportional_and_exact() {
        let s = split(100, &[(id(1), 15), (id(2), 15), (id(3), 14)]);
        assert_eq!(s.values().sum::<u64>(), 100);
        // 100·15/44 = 34.09 → 34, 14/44 → 31.8 → 31; one unit left: largest remainder is node 3
        assert_eq!(s[&id(1)], 34);
        assert_eq!(s[&id(3)], 32);
        assert!(split(100, &[]).is_empty());
    }

    #[test]
    fn paying_twice_pays_once_and_nobody_passing_withholds() {
        let mut l = Ledger::default();
        l.pay(1, 1000, &[(id(1), 3), (id(2), 1)]);
        l.pay(1, 1000, &[(id(1), 3), (id(2), 1)]);
        assert_eq!(
            (l.issued, l.totals[&id(1)], l.totals[&id(2)]),
            (1000, 750, 250)
        );
        l.pay(2, 1000, &[]);
        assert_eq!((l.issued, l.withheld), (1000, 1000));
        assert!(l.balanced());
    }

    proptest! {
        #[test]
        fn no_unit_lost_or_created(reward in 0u64..u64::MAX / 2,
            w in prop::collection::btree_map(any::<u8>(), 0usize..1000, 0..40)) {
            let weights: Vec<(NodeId, usize)> = w.iter().map(|(b, x)| (id(*b), *x)).collect();
            let s = split(reward, &weights);
            let total: usize = weights.iter().map(|(_, x)| x).sum();
            if total > 0 {
                prop_assert_eq!(s.values().sum::<u64>(), reward);
                // everybody gets its exact share rounded down, or one unit more
                for (i, x) in &weights {
                    let floor = (reward as u128 * *x as u128 / total as u128) as u64;
                    let got = *s.get(i).unwrap_or(&0);
                    prop_assert!(got == floor || got == floor + 1, "{} vs {}", got, floor);
                }
            } else {
                prop_assert!(s.is_empty());
            }
        }
    }
}
