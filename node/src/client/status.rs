//! Whether the network already holds a blob: asked before an upload so a publisher can answer
//! "already certified" without sending anything.

use futures::stream::{FuturesUnordered, StreamExt};

use super::blob::BlobClient;
use crate::codec::BlobId;
use crate::proto;

impl BlobClient {
    /// True when members holding at least f+1 shards (validity: one honest among them) report
    /// the blob certified. Unreachable members count as "no".
    pub async fn is_certified(&self, id: &BlobId) -> bool {
        let params = self.committee().params();
        let mut calls: FuturesUnordered<_> = self
            .members()
            .into_iter()
            .map(|(node, weight)| async move { (node.blob_status(id).await, weight) })
            .collect();
        let mut weight = 0usize;
        while let Some((r, w)) = calls.next().await {
            if r.is_ok_and(|s| s.state == proto::BlobState::Certified as i32) {
                weight += w;
                if params.is_validity(weight) {
                    return true;
                }
            }
        }
        false
    }
}
