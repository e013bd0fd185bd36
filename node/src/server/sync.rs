//! Shard sync at an epoch change (PROTOCOL.md §6): pull every shard this node gained from its
//! previous owner, page by page, verifying each blob's metadata, certificate and slivers before
//! storing them. A source that is gone, stalls or sends data that does not verify is given up
//! after a few attempts and the shard is handed to recovery (§5), which rebuilds the same slivers
//! from everyone's recovery symbols. The plan and its cursors are persisted with the committee
//! (`state.rs`), so a restart resumes where it stopped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::recovery::{learn_certified, peer_clients};
use super::state::{NodeState, ShardSync};
use crate::client::NodeClient;
use crate::codec::{Axis, BlobId, BlobMetadata, MerkleTree, Sliver};
use crate::proto;
use crate::protocol::{verify_certificate, Certificate, NodeId, SyncRequest};

/// Blobs asked for per page.
const PAGE_BLOBS: u32 = 64;
/// Failed pages in a row after which a shard's source is given up.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("source {0}")]
    Source(#[from] crate::client::ClientError),
    #[error("source sent {0}")]
    Lying(String),
    #[error("storing: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Task(String),
}

pub async fn run(state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    let mut clients: HashMap<String, NodeClient> = HashMap::new();
    let mut failures: HashMap<(u32, u16), u32> = HashMap::new();
    loop {
        let Some(plan) = state.sync_plan().filter(|p| !p.pending.is_empty()) else {
            tokio::select! {
                _ = state.sync_wakeup.notified() => continue,
                _ = shutdown.changed() => return,
            }
        };
        for (shard, job) in plan.pending {
            if *shutdown.borrow() {
                return;
            }
            let Some((source, address)) = job.source.clone() else {
                fall_back(&state, plan.epoch, shard, &mut clients).await;
                continue;
            };
            let key = format!("{}@{address}", hex::encode(source.0));
            let client = match clients.get(&key) {
                Some(c) => c.clone(),
                None => match NodeClient::for_node(&address, source, state.config.max_message) {
                    Ok(c) => clients.entry(key).or_insert(c).clone(),
                    Err(e) => {
                        tracing::warn!(shard, source = %source.short(), error = %e, "shard sync source has no usable address");
                        fall_back(&state, plan.epoch, shard, &mut clients).await;
                        continue;
                    }
                },
            };
            let cursor = job.after;
            match sync_shard(&state, plan.epoch, shard, job, &client).await {
                Ok(()) => {
                    if let Err(e) = state.finish_shard_sync(plan.epoch, shard, false) {
                        tracing::warn!(shard, error = %e, "could not record finished shard sync");
                    }
                }
                Err(e) => {
                    let tries = failures.entry((plan.epoch, shard)).or_default();
                    // count failures in a row: pages stored before this one reset the count
                    let moved = state
                        .sync_plan()
                        .and_then(|p| p.pending.get(&shard).map(|j| j.after))
                        != Some(cursor);
                    *tries = if moved { 1 } else { *tries + 1 };
                    tracing::warn!(shard, attempt = *tries, error = %e, "shard sync page failed");
                    if *tries >= ATTEMPTS {
                        fall_back(&state, plan.epoch, shard, &mut clients).await;
                    }
                }
            }
        }
        if state.syncing_shards().is_empty() {
            tracing::info!(epoch = plan.epoch, "shard sync finished");
            state.recovery_wakeup.notify_one();
        } else {
            // back off before retrying sources that failed
            tokio::select! {
                _ = tokio::time::sleep(state.config.recovery_interval.max(Duration::from_millis(200))) => {}
                _ = state.sync_wakeup.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Pull `shard` page by page from the cursor in `job` until the source has nothing left.
async fn sync_shard(
    state: &Arc<NodeState>,
    epoch: u32,
    shard: u16,
    job: ShardSync,
    source: &NodeClient,
) -> Result<(), SyncError> {
    let mut after = job.after.map(BlobId);
    let source_id = job
        .source
        .as_ref()
        .map(|(id, _)| *id)
        .unwrap_or(NodeId([0; 32]));
    if after.is_none() {
        tracing::info!(shard, source = ?job.source, "pulling gained shard from its previous owner");
    }
    loop {
        let req = SyncRequest::sign(&state.key, epoch, shard, after);
        let page = source
            .sync_shard(&req, PAGE_BLOBS, state.config.max_message)
            .await?;
        let next = if page.next.is_empty() {
            None
        } else {
            Some(
                BlobId::from_slice(&page.next)
                    .map_err(|e| SyncError::Lying(format!("a bad cursor: {e}")))?,
            )
        };
        if next.is_some() && next <= after {
            return Err(SyncError::Lying("a cursor that does not advance".into()));
        }
        let blobs = page.items.len() as u64;
        let bytes: usize = page
            .items
            .iter()
            .map(|i| i.metadata.len() + i.primary.len() + i.secondary.len())
            .sum();
        state.metrics.received_from_peers("sync", bytes);
        let st = state.clone();
        let slivers =
            tokio::task::spawn_blocking(move || store_page(&st, source_id, shard, page.items))
                .await
                .map_err(|e| SyncError::Task(e.to_string()))??;
        state.metrics.synced_blobs.inc_by(blobs);
        state.metrics.synced_slivers.inc_by(slivers);
        state.advance_sync(epoch, shard, next, blobs, page.remaining)?;
        tracing::info!(
            shard,
            blobs,
            slivers,
            remaining = page.remaining,
            "shard sync progress"
        );
        if page.remaining == 0 || next.is_none() {
            return Ok(());
        }
        after = next;
    }
}

/// Verify and store one page; returns the number of slivers stored. Anything that does not
/// verify fails the page (the source is lying or broken): nothing of that blob is stored, and
/// the cursor does not move, so the page counts as a failed attempt.
fn store_page(
    state: &NodeState,
    source: NodeId,
    shard: u16,
    items: Vec<proto::SyncShardItem>,
) -> Result<u64, SyncError> {
    let mut stored = 0;
    for item in items {
        let id = BlobId::from_slice(&item.blob_id)
            .map_err(|e| SyncError::Lying(format!("a bad blob ID: {e}")))?;
        let md = BlobMetadata::from_bytes(&item.metadata)
            .map_err(|e| SyncError::Lying(format!("bad metadata of {id}: {e}")))?;
        if md.blob_id() != id {
            return Err(SyncError::Lying(format!(
                "metadata that does not hash to {id}"
            )));
        }
        let n = md.n();
        let committee = state
            .committee()
            .ok_or_else(|| SyncError::Task("no committee".into()))?;
        if n != committee.n_shards as usize {
            return Err(SyncError::Lying(format!("metadata of {id} for {n} shards")));
        }
        let pair = committee
            .params()
            .pair_for_shard(shard as usize, id.mod_n(n)) as u16;
        if item.pair_index != pair as u32 {
            return Err(SyncError::Lying(format!(
                "pair {} of {id}, shard {shard} holds pair {pair}",
                item.pair_index
            )));
        }
        let cert = item
            .certificate
            .map(Certificate::try_from)
            .transpose()
            .map_err(|e| SyncError::Lying(format!("a bad certificate of {id}: {e}")))?
            .filter(|c| c.blob_id == id)
            .ok_or_else(|| SyncError::Lying(format!("no certificate for {id}")))?;
        // Slivers are checked against the metadata, which is checked against the ID: they are
        // stored whatever the certificate. The certificate is kept only if it verifies against a
        // committee this node was given; one of an unknown epoch is held until that committee comes.
        let sliver_checked = |bytes: &[u8],
                              axis: Axis,
                              index: usize|
         -> Result<Option<(Sliver, Option<MerkleTree>)>, SyncError> {
            if bytes.is_empty() {
                return Ok(None);
            }
            let s = Sliver::from_bytes(bytes)
                .map_err(|e| SyncError::Lying(format!("a bad sliver of {id}: {e}")))?;
            if s.axis != axis || s.index as usize != index {
                return Err(SyncError::Lying(format!(
                    "{:?} sliver {} of {id} for pair {pair}",
                    s.axis, s.index
                )));
            }
            let tree = super::challenge::verify_for_store(&s, &md).map_err(|e| {
                SyncError::Lying(format!("a sliver of {id} that does not verify: {e}"))
            })?;
            Ok(Some((s, tree)))
        };
        let primary = sliver_checked(&item.primary, Axis::Primary, pair as usize)?;
        let secondary = sliver_checked(&item.secondary, Axis::Secondary, n - 1 - pair as usize)?;
        state.store.put_metadata(id, &md)?;
        for (s, tree) in [primary, secondary].into_iter().flatten() {
            if !state
                .store
                .put_sliver_with_tree(id, pair, &s, tree.as_ref())?
            {
                stored += 1;
            }
        }
        match state.committee_of(cert.epoch) {
            Some(c) => {
                if verify_certificate(&c, &cert).is_ok() {
                    state.store.put_certificate(&cert)?;
                }
            }
            // held until the admin API gives this node that epoch's committee
            None => {
                state.hold_certificate(source, cert);
            }
        }
    }
    Ok(stored)
}

/// Give up on `shard`'s source: learn which blobs are certified from the other peers, count what
/// recovery must rebuild (so that "sync done" is not reported before it has), and hand it over.
async fn fall_back(
    state: &Arc<NodeState>,
    epoch: u32,
    shard: u16,
    clients: &mut HashMap<String, NodeClient>,
) {
    tracing::warn!(shard, "no usable shard sync source (unknown, gone, stalled or lying); rebuilding the shard by recovery");
    if let Some(committee) = state.committee() {
        let peers = peer_clients(state, &committee, clients);
        learn_certified(state, &committee, &peers).await;
    }
    if let Err(e) = state.finish_shard_sync(epoch, shard, true) {
        tracing::warn!(shard, error = %e, "could not record the fallback; retrying later");
        return;
    }
    super::recovery::repend(state, epoch).await;
    let st = state.clone();
    let backlog: usize = tokio::task::spawn_blocking(move || st.missing_work().slivers())
        .await
        .unwrap_or(0);
    state
        .recovery_backlog
        .store(backlog as u64, Ordering::Relaxed);
    state.metrics.sync_fallbacks.inc();
    state.recovery_wakeup.notify_one();
}
