//! "Your committee is older than mine" as a typed answer across the gRPC boundary.
//!
//! A node that already holds a newer committee refuses an older one with `FAILED_PRECONDITION`
//! and both epochs in the response metadata, so a caller (the control plane drops such a
//! command as stale) tells it apart from every other refusal without reading the message.

/// Metadata key of the node's current epoch in a stale-committee refusal.
pub const NODE_EPOCH_KEY: &str = "floe-node-epoch";
/// Metadata key of the refused committee's epoch.
pub const REQUEST_EPOCH_KEY: &str = "floe-request-epoch";

/// A committee refused because the node is already past its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("committee epoch {request_epoch} is older than the current epoch {node_epoch}")]
pub struct StaleCommittee {
    pub request_epoch: u32,
    pub node_epoch: u32,
}

impl StaleCommittee {
    /// The refusal as the node sends it.
    pub fn to_status(self) -> tonic::Status {
        let mut status = tonic::Status::failed_precondition(self.to_string());
        let md = status.metadata_mut();
        md.insert(NODE_EPOCH_KEY, self.node_epoch.into());
        md.insert(REQUEST_EPOCH_KEY, self.request_epoch.into());
        status
    }

    /// The refusal as a caller reads it; `None` for any other status (including a
    /// `FAILED_PRECONDITION` without the epochs, e.g. from a node that predates the keys).
    pub fn from_status(status: &tonic::Status) -> Option<Self> {
        if status.code() != tonic::Code::FailedPrecondition {
            return None;
        }
        let epoch =
            |key: &str| -> Option<u32> { status.metadata().get(key)?.to_str().ok()?.parse().ok() };
        Some(StaleCommittee {
            request_epoch: epoch(REQUEST_EPOCH_KEY)?,
            node_epoch: epoch(NODE_EPOCH_KEY)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epochs_survive_the_status() {
        let s = StaleCommittee {
            request_epoch: 3,
            node_epoch: 7,
        };
        assert_eq!(StaleCommittee::from_status(&s.to_status()), Some(s));
    }

    #[test]
    fn other_refusals_are_not_stale() {
        let conflict = tonic::Status::failed_precondition("committee epoch 3 is older than 7");
        assert_eq!(StaleCommittee::from_status(&conflict), None, "text alone");
        let mut other = tonic::Status::invalid_argument("x");
        other.metadata_mut().insert(NODE_EPOCH_KEY, 7u32.into());
        other.metadata_mut().insert(REQUEST_EPOCH_KEY, 3u32.into());
        assert_eq!(StaleCommittee::from_status(&other), None, "another code");
    }
}
