//! A committee: the members of one epoch and the shards each of them holds.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::EncodingParams;

/// A node's identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// Short form for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = CommitteeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = hex::decode(s).map_err(|_| CommitteeError::BadNodeId(s.to_string()))?;
        Self::try_from(b.as_slice()).map_err(|_| CommitteeError::BadNodeId(s.to_string()))
    }
}

impl TryFrom<&[u8]> for NodeId {
    type Error = CommitteeError;
    fn try_from(b: &[u8]) -> Result<Self, Self::Error> {
        Ok(Self(
            b.try_into()
                .map_err(|_| CommitteeError::BadNodeId(hex::encode(b)))?,
        ))
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitteeError {
    #[error("invalid node ID {0:?}: expected 32 bytes")]
    BadNodeId(String),
    #[error("invalid shard count: {0}")]
    Shards(String),
    #[error("shard {0} is assigned {1} times; every shard needs exactly one owner")]
    ShardOwners(usize, usize),
    #[error("node {0} appears twice")]
    DuplicateMember(String),
}

/// One member of a committee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: NodeId,
    /// `host:port` of the member's public gRPC service.
    pub address: String,
    pub stake: u64,
    pub shards: Vec<u16>,
}

/// The committee of one epoch. Valid committees assign every shard to exactly one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    pub epoch: u32,
    pub n_shards: u16,
    pub members: Vec<Member>,
    /// Prices and the control plane's key (docs/economics.md); none on a network whose
    /// control plane does not sell storage (nodes then require no registration).
    #[serde(default)]
    pub economics: Option<super::lifetime::Economics>,
}

impl Committee {
    /// Check that every shard has exactly one owner and members are distinct.
    pub fn validate(&self) -> Result<(), CommitteeError> {
        EncodingParams::new(self.n_shards as usize)
            .map_err(|e| CommitteeError::Shards(e.to_string()))?;
        let mut owners = vec![0usize; self.n_shards as usize];
        let mut seen = BTreeMap::new();
        for m in &self.members {
            if seen.insert(m.node_id, ()).is_some() {
                return Err(CommitteeError::DuplicateMember(m.node_id.to_string()));
            }
            for &s in &m.shards {
                let c = owners
                    .get_mut(s as usize)
                    .ok_or_else(|| CommitteeError::Shards(format!("shard {s} >= n")))?;
                *c += 1;
            }
        }
        if let Some((s, c)) = owners.iter().enumerate().find(|(_, c)| **c != 1) {
            return Err(CommitteeError::ShardOwners(s, *c));
        }
        Ok(())
    }
    pub fn params(&self) -> EncodingParams {
        EncodingParams::new(self.n_shards as usize).expect("validated committee")
    }
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.node_id == id)
    }
    /// The member holding `shard`.
    pub fn owner_of(&self, shard: usize) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.shards.iter().any(|s| *s as usize == shard))
    }
    /// Shard weight of a node (0 if not a member).
    pub fn weight(&self, id: &NodeId) -> usize {
        self.member(id).map_or(0, |m| m.shards.len())
    }
    /// Owner of every shard, indexed by shard.
    pub fn shard_owners(&self) -> Vec<Option<usize>> {
        let mut v = vec![None; self.n_shards as usize];
        for (i, m) in self.members.iter().enumerate() {
            for &s in &m.shards {
                if let Some(slot) = v.get_mut(s as usize) {
                    *slot = Some(i);
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: u8, shards: &[u16]) -> Member {
        Member {
            node_id: NodeId([b; 32]),
            address: format!("127.0.0.1:{b}"),
            stake: 1,
            shards: shards.to_vec(),
        }
    }

    #[test]
    fn validates_shard_partition() {
        let ok = Committee {
            epoch: 1,
            n_shards: 4,
            members: vec![member(1, &[0, 1]), member(2, &[2, 3])],
            economics: None,
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.weight(&NodeId([2; 32])), 2);
        assert_eq!(ok.owner_of(3).unwrap().node_id, NodeId([2; 32]));
        let gap = Committee {
            members: vec![member(1, &[0, 1]), member(2, &[2])],
            ..ok.clone()
        };
        assert_eq!(gap.validate(), Err(CommitteeError::ShardOwners(3, 0)));
        let dup = Committee {
            members: vec![member(1, &[0, 1, 2]), member(2, &[2, 3])],
            ..ok.clone()
        };
        assert_eq!(dup.validate(), Err(CommitteeError::ShardOwners(2, 2)));
        let twice = Committee {
            members: vec![member(1, &[0, 1]), member(1, &[2, 3])],
            ..ok
        };
        assert!(matches!(
            twice.validate(),
            Err(CommitteeError::DuplicateMember(_))
        ));
    }

    #[test]
    fn node_id_text_round_trip() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("zz".parse::<NodeId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
    }
}

/// Deterministic keys and small committees for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Committee, Member, NodeId};
    use ed25519_dalek::SigningKey;

    pub fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }
    pub fn id(i: u8) -> NodeId {
        NodeId(key(i).verifying_key().to_bytes())
    }
    /// A committee of members `(key index, shards)`; n = the highest shard + 1.
    pub fn committee(epoch: u32, owners: &[(u8, &[u16])]) -> Committee {
        let n_shards = owners
            .iter()
            .flat_map(|(_, s)| s.iter())
            .max()
            .map_or(0, |m| m + 1);
        let members = owners
            .iter()
            .map(|(k, shards)| Member {
                node_id: id(*k),
                address: format!("127.0.0.{k}:7070"),
                stake: 1,
                shards: shards.to_vec(),
            })
            .collect();
        Committee {
            epoch,
            n_shards,
            members,
            economics: None,
        }
    }
}
