//! Shard sync at an epoch change (PROTOCOL.md §6): which shards a node gains and from whom it
//! pulls them, and the signed request with which it asks. The source serves a shard's slivers
//! only to the node that owns the shard in the requested epoch.

use ed25519_dalek::{Signer as _, SigningKey};

use super::certificate::verify_signature;
use super::committee::{Committee, NodeId};
use crate::codec::BlobId;

const SYNC_DOMAIN: &[u8] = b"floe/sync/v1";

/// Shards `node` holds in `next` that another member held in `previous`, with that member:
/// what the node must pull at the change `previous` → `next`. A node new to the committee gains
/// all its shards; a node absent from `next` gains nothing.
pub fn gained_shards(previous: &Committee, next: &Committee, node: &NodeId) -> Vec<(u16, NodeId)> {
    let Some(me) = next.member(node) else {
        return Vec::new();
    };
    me.shards
        .iter()
        .filter_map(|&s| {
            previous
                .owner_of(s as usize)
                .filter(|o| &o.node_id != node)
                .map(|o| (s, o.node_id))
        })
        .collect()
}

/// The bytes a node signs to ask for a page of a shard:
/// `"floe/sync/v1" ‖ epoch LE ‖ shard LE ‖ cursor` (cursor = last blob ID received, or empty).
pub fn sync_request_message(epoch: u32, shard: u16, after: Option<&BlobId>) -> Vec<u8> {
    let mut m = Vec::with_capacity(SYNC_DOMAIN.len() + 6 + 32);
    m.extend_from_slice(SYNC_DOMAIN);
    m.extend_from_slice(&epoch.to_le_bytes());
    m.extend_from_slice(&shard.to_le_bytes());
    if let Some(a) = after {
        m.extend_from_slice(a.as_bytes());
    }
    m
}

/// A request for one page of a shard's certified blobs, after `after` in blob-ID order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub epoch: u32,
    pub shard: u16,
    pub after: Option<BlobId>,
    pub requester: NodeId,
    pub signature: [u8; 64],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncAuthError {
    #[error("request is for epoch {got}, committee is epoch {expected}")]
    WrongEpoch { got: u32, expected: u32 },
    #[error("node {requester} does not hold shard {shard} in epoch {epoch}")]
    NotOwner {
        requester: String,
        shard: u16,
        epoch: u32,
    },
    #[error("bad signature from {0}")]
    BadSignature(String),
}

impl SyncRequest {
    pub fn sign(key: &SigningKey, epoch: u32, shard: u16, after: Option<BlobId>) -> Self {
        let signature = key
            .sign(&sync_request_message(epoch, shard, after.as_ref()))
            .to_bytes();
        Self {
            epoch,
            shard,
            after,
            requester: NodeId(key.verifying_key().to_bytes()),
            signature,
        }
    }

    /// The requester owns the shard in `committee` (the committee of the request's epoch) and
    /// signed this very request.
    pub fn authorize(&self, committee: &Committee) -> Result<(), SyncAuthError> {
        if committee.epoch != self.epoch {
            return Err(SyncAuthError::WrongEpoch {
                got: self.epoch,
                expected: committee.epoch,
            });
        }
        if committee
            .owner_of(self.shard as usize)
            .is_none_or(|o| o.node_id != self.requester)
        {
            return Err(SyncAuthError::NotOwner {
                requester: self.requester.short(),
                shard: self.shard,
                epoch: self.epoch,
            });
        }
        let msg = sync_request_message(self.epoch, self.shard, self.after.as_ref());
        if !verify_signature(&self.requester, &msg, &self.signature) {
            return Err(SyncAuthError::BadSignature(self.requester.short()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fixtures::{committee, id, key};

    #[test]
    fn gained_shards_are_those_another_member_held() {
        let prev = committee(1, &[(1, &[0, 1, 2]), (2, &[3, 4, 5])]);
        let next = committee(2, &[(1, &[0, 1]), (2, &[3, 4]), (3, &[2, 5])]);
        assert_eq!(
            gained_shards(&prev, &next, &id(3)),
            vec![(2, id(1)), (5, id(2))]
        );
        assert!(
            gained_shards(&prev, &next, &id(1)).is_empty(),
            "kept shards are not synced"
        );
        let next = committee(2, &[(1, &[0, 1, 2, 3]), (3, &[4, 5])]);
        assert_eq!(gained_shards(&prev, &next, &id(1)), vec![(3, id(2))]);
        assert!(
            gained_shards(&prev, &next, &id(2)).is_empty(),
            "a departed member gains nothing"
        );
    }

    #[test]
    fn only_the_new_owner_with_a_valid_signature_is_served() {
        let c = committee(2, &[(1, &[0, 1, 2]), (2, &[3, 4, 5])]);
        let after = Some(BlobId([7; 32]));
        let ok = SyncRequest::sign(&key(2), 2, 4, after);
        assert_eq!(ok.authorize(&c), Ok(()));
        assert!(matches!(
            SyncRequest::sign(&key(1), 2, 4, after).authorize(&c),
            Err(SyncAuthError::NotOwner { .. })
        ));
        assert!(matches!(
            SyncRequest::sign(&key(2), 1, 4, after).authorize(&c),
            Err(SyncAuthError::WrongEpoch { .. })
        ));
        for tamper in [
            |r: &mut SyncRequest| r.shard = 5,
            |r: &mut SyncRequest| r.after = None,
            |r: &mut SyncRequest| r.signature[0] ^= 1,
        ] {
            let mut r = ok.clone();
            tamper(&mut r);
            assert!(
                matches!(r.authorize(&c), Err(SyncAuthError::BadSignature(_))),
                "{r:?}"
            );
        }
    }
}
