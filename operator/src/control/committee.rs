//! The first committee: shards split as evenly as possible, handed out in node-ID order
//! (PROTOCOL.md §6; stake-weighted D'Hondt with minimal movement comes with epochs).

use floe_node::protocol::{Committee, Member, NodeId};

/// A node that wants to join: its identity and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: NodeId,
    pub address: String,
    pub stake: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitteeBuildError {
    #[error("no nodes to build a committee from")]
    NoNodes,
    #[error("{nodes} nodes cannot share {shards} shards: every node needs at least one")]
    TooManyNodes { nodes: usize, shards: usize },
    #[error("invalid committee: {0}")]
    Invalid(String),
}

/// Split `n_shards` evenly: sorted by node ID, node i takes a contiguous run of ⌊n/N⌋ or
/// ⌈n/N⌉ shards (the first `n mod N` nodes take one more).
pub fn initial_committee(
    epoch: u32,
    n_shards: u16,
    mut nodes: Vec<Candidate>,
) -> Result<Committee, CommitteeBuildError> {
    if nodes.is_empty() {
        return Err(CommitteeBuildError::NoNodes);
    }
    let n = n_shards as usize;
    if nodes.len() > n {
        return Err(CommitteeBuildError::TooManyNodes {
            nodes: nodes.len(),
            shards: n,
        });
    }
    nodes.sort_by_key(|c| c.node_id);
    let (base, extra) = (n / nodes.len(), n % nodes.len());
    let mut next = 0u16;
    let members = nodes
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let take = (base + usize::from(i < extra)) as u16;
            let shards = (next..next + take).collect();
            next += take;
            Member {
                node_id: c.node_id,
                address: c.address,
                stake: c.stake,
                shards,
            }
        })
        .collect();
    let c = Committee {
        epoch,
        n_shards,
        members,
    };
    c.validate()
        .map_err(|e| CommitteeBuildError::Invalid(e.to_string()))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(b: u8) -> Candidate {
        Candidate {
            node_id: NodeId([b; 32]),
            address: format!("127.0.0.1:{b}"),
            stake: 1,
        }
    }

    proptest! {
        #[test]
        fn every_shard_has_one_owner_and_loads_differ_by_at_most_one(
            nodes in prop::collection::btree_set(any::<u8>(), 1..40), n in 40u16..=1000)
        {
            let c = initial_committee(1, n, nodes.iter().map(|b| cand(*b)).collect()).unwrap();
            prop_assert!(c.validate().is_ok());
            let loads: Vec<usize> = c.members.iter().map(|m| m.shards.len()).collect();
            prop_assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1);
            prop_assert_eq!(loads.iter().sum::<usize>(), n as usize);
            // node-ID order: shard runs ascend with the node ID
            let ids: Vec<NodeId> = c.members.iter().map(|m| m.node_id).collect();
            let mut sorted = ids.clone();
            sorted.sort();
            prop_assert_eq!(ids, sorted);
        }
    }

    #[test]
    fn rejects_empty_and_oversized() {
        assert_eq!(
            initial_committee(1, 10, vec![]),
            Err(CommitteeBuildError::NoNodes)
        );
        let many: Vec<Candidate> = (0..11).map(cand).collect();
        assert_eq!(
            initial_committee(1, 10, many),
            Err(CommitteeBuildError::TooManyNodes {
                nodes: 11,
                shards: 10
            })
        );
    }

    #[test]
    fn seven_nodes_hundred_shards() {
        let c = initial_committee(1, 100, (1..=7).map(cand).collect()).unwrap();
        let loads: Vec<usize> = c.members.iter().map(|m| m.shards.len()).collect();
        assert_eq!(loads, vec![15, 15, 14, 14, 14, 14, 14]);
        assert_eq!(c.members[0].shards[0], 0);
    }
}
