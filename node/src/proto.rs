//! Generated gRPC types and services (`node/proto/floe.proto`).
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("floe.v1");

// Conversions between wire messages and protocol types.
mod convert {
    use super::*;
    use crate::codec::{self, BlobId};
    use crate::protocol::{self, NodeId};

    impl From<&protocol::Committee> for Committee {
        fn from(c: &protocol::Committee) -> Self {
            Committee {
                epoch: c.epoch,
                n_shards: c.n_shards as u32,
                members: c
                    .members
                    .iter()
                    .map(|m| Member {
                        node_id: m.node_id.0.to_vec(),
                        address: m.address.clone(),
                        stake: m.stake,
                        shards: m.shards.iter().map(|s| *s as u32).collect(),
                    })
                    .collect(),
                control_key: c
                    .economics
                    .map(|e| e.control_key.to_vec())
                    .unwrap_or_default(),
                storage_price: c.economics.map_or(0, |e| e.storage_price),
                write_price: c.economics.map_or(0, |e| e.write_price),
                max_epochs_ahead: c.economics.map_or(0, |e| e.max_epochs_ahead),
            }
        }
    }

    impl TryFrom<Committee> for protocol::Committee {
        type Error = String;
        fn try_from(c: Committee) -> Result<Self, String> {
            let n_shards = u16::try_from(c.n_shards)
                .map_err(|_| format!("n_shards {} too large", c.n_shards))?;
            let members = c
                .members
                .into_iter()
                .map(|m| {
                    Ok(protocol::Member {
                        node_id: NodeId::try_from(m.node_id.as_slice())
                            .map_err(|e| e.to_string())?,
                        address: m.address,
                        stake: m.stake,
                        shards: m
                            .shards
                            .into_iter()
                            .map(|s| u16::try_from(s).map_err(|_| format!("shard {s} too large")))
                            .collect::<Result<_, String>>()?,
                    })
                })
                .collect::<Result<_, String>>()?;
            let economics = if c.control_key.is_empty() {
                None
            } else {
                Some(protocol::Economics {
                    control_key: c
                        .control_key
                        .as_slice()
                        .try_into()
                        .map_err(|_| "control_key: expected 32 bytes".to_string())?,
                    storage_price: c.storage_price,
                    write_price: c.write_price,
                    max_epochs_ahead: c.max_epochs_ahead,
                })
            };
            let c = protocol::Committee {
                epoch: c.epoch,
                n_shards,
                members,
                economics,
            };
            c.validate().map_err(|e| e.to_string())?;
            Ok(c)
        }
    }

    impl From<&protocol::Certificate> for Certificate {
        fn from(c: &protocol::Certificate) -> Self {
            Certificate {
                epoch: c.epoch,
                blob_id: c.blob_id.as_bytes().to_vec(),
                signers: c
                    .signers
                    .iter()
                    .map(|(id, sig)| Signer {
                        node_id: id.0.to_vec(),
                        signature: sig.to_vec(),
                    })
                    .collect(),
            }
        }
    }

    impl TryFrom<Certificate> for protocol::Certificate {
        type Error = String;
        fn try_from(c: Certificate) -> Result<Self, String> {
            let blob_id = BlobId::from_slice(&c.blob_id).map_err(|e| e.to_string())?;
            let signers = c
                .signers
                .into_iter()
                .map(|s| {
                    let id = NodeId::try_from(s.node_id.as_slice()).map_err(|e| e.to_string())?;
                    let sig: [u8; 64] = s
                        .signature
                        .as_slice()
                        .try_into()
                        .map_err(|_| "signature must be 64 bytes".to_string())?;
                    Ok((id, sig))
                })
                .collect::<Result<_, String>>()?;
            Ok(protocol::Certificate {
                epoch: c.epoch,
                blob_id,
                signers,
            })
        }
    }

    impl SyncShardRequest {
        pub fn new(r: &protocol::SyncRequest, limit: u32) -> Self {
            SyncShardRequest {
                epoch: r.epoch,
                shard: r.shard as u32,
                after: r.after.map(|a| a.as_bytes().to_vec()).unwrap_or_default(),
                limit,
                requester: r.requester.0.to_vec(),
                signature: r.signature.to_vec(),
            }
        }
    }

    impl TryFrom<&SyncShardRequest> for protocol::SyncRequest {
        type Error = String;
        fn try_from(r: &SyncShardRequest) -> Result<Self, String> {
            Ok(protocol::SyncRequest {
                epoch: r.epoch,
                shard: u16::try_from(r.shard)
                    .map_err(|_| format!("shard {} too large", r.shard))?,
                after: if r.after.is_empty() {
                    None
                } else {
                    Some(BlobId::from_slice(&r.after).map_err(|e| format!("after: {e}"))?)
                },
                requester: NodeId::try_from(r.requester.as_slice())
                    .map_err(|e| format!("requester: {e}"))?,
                signature: r
                    .signature
                    .as_slice()
                    .try_into()
                    .map_err(|_| "signature must be 64 bytes".to_string())?,
            })
        }
    }

    impl From<codec::Axis> for Axis {
        fn from(a: codec::Axis) -> Self {
            match a {
                codec::Axis::Primary => Axis::Primary,
                codec::Axis::Secondary => Axis::Secondary,
            }
        }
    }
    impl From<Axis> for codec::Axis {
        fn from(a: Axis) -> Self {
            match a {
                Axis::Primary => codec::Axis::Primary,
                Axis::Secondary => codec::Axis::Secondary,
            }
        }
    }
}
