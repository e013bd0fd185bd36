//! Garbage collection (crash-safe: every deletion is one store commit, and a sweep interrupted
//! by a crash simply starts again).
//!
//! - Blobs never certified: deleted (metadata and slivers) once older than
//!   `--uncertified-grace` (default 1 h), oldest first — a range scan of the store's age index.
//! - Slivers of shards this node no longer owns: PROTOCOL.md §6 keeps a lost shard one more
//!   epoch as a sync source, so at epoch e the slivers of pairs owned in neither e nor e − 1 are
//!   dropped, by one sweep over the certified index per epoch change, a page per round.
//! - Blobs whose lifetime is over (docs/economics.md): at epoch e every blob whose signed
//!   lifetime ended at or before e, or that its owner deleted, is deleted but for its lifetime
//!   (so reads keep saying why). A range scan of the expiry index, [`PAGE`] blobs per commit
//!   and at most [`LIFETIME_PAGES`] commits per round, so reads and writes go on meanwhile.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::state::NodeState;
use crate::codec::BlobId;

/// Blobs examined per round by each collector.
const PAGE: usize = 1000;
/// Commits of collected blobs per round (bounds one round's I/O; the rest waits a round).
const LIFETIME_PAGES: usize = 20;

pub async fn run(state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    // (epoch swept for, cursor): the unowned-shard sweep in progress
    let mut sweep: Option<(u32, Option<BlobId>)> = None;
    let mut swept_epoch = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.config.recovery_interval) => {}
            _ = state.gc_wakeup.notified() => {}
            _ = shutdown.changed() => return,
        }
        let st = state.clone();
        let s = sweep;
        let r = tokio::task::spawn_blocking(move || {
            expire_round(&st);
            lifetime_round(&st);
            unowned_round(&st, s)
        })
        .await;
        match r {
            Ok(Some((epoch, cursor))) => {
                sweep = cursor.map(|c| (epoch, Some(c)));
                if cursor.is_none() {
                    swept_epoch = epoch;
                }
            }
            Ok(None) => sweep = None,
            Err(e) => tracing::warn!(error = %e, "GC round failed"),
        }
        // start a sweep when the epoch moved past the last one swept
        if sweep.is_none() {
            if let Some(c) = state.committee() {
                if c.epoch > swept_epoch && c.epoch >= 2 {
                    sweep = Some((c.epoch, None));
                }
            }
        }
        state
            .metrics
            .uncertified_bytes
            .set(state.store.uncertified_bytes() as i64);
    }
}

/// Delete blobs never certified that are older than the grace period.
fn expire_round(state: &NodeState) {
    let grace = state.config.uncertified_grace.as_secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cutoff = now.saturating_sub(grace);
    loop {
        match state.store.expire_uncertified(cutoff, PAGE) {
            Ok((0, _)) => return,
            Ok((blobs, bytes)) => {
                state.metrics.gc_blobs.inc_by(blobs);
                state
                    .metrics
                    .gc_bytes
                    .with_label_values(&["uncertified"])
                    .inc_by(bytes);
                tracing::info!(
                    blobs,
                    bytes,
                    grace_s = grace,
                    "expired blobs never certified"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not expire uncertified blobs");
                return;
            }
        }
    }
}

/// Collect blobs whose lifetime ended by the current epoch, or that were deleted.
pub fn lifetime_round(state: &NodeState) {
    let Some(epoch) = state.committee().map(|c| c.epoch) else {
        return;
    };
    for _ in 0..LIFETIME_PAGES {
        let page = state.store.gone_page(epoch, PAGE);
        if page.is_empty() {
            return;
        }
        let deleted = page.iter().filter(|(e, _)| *e == 0).count() as u64;
        let expired = page.len() as u64 - deleted;
        let full = page.len() == PAGE;
        match state
            .store
            .collect(page.into_iter().map(|(_, id)| id).collect())
        {
            Ok((_, bytes)) => {
                let m = &state.metrics;
                m.gc_lifetimes
                    .with_label_values(&["expired"])
                    .inc_by(expired);
                m.gc_lifetimes
                    .with_label_values(&["deleted"])
                    .inc_by(deleted);
                let label = if expired >= deleted {
                    "expired"
                } else {
                    "deleted"
                };
                m.gc_bytes.with_label_values(&[label]).inc_by(bytes);
                tracing::info!(
                    epoch,
                    expired,
                    deleted,
                    bytes,
                    "collected blobs whose lifetime is over"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not collect expired blobs");
                return;
            }
        }
        if !full {
            return;
        }
    }
}

/// One page of the unowned-shard sweep for `sweep`'s epoch. Returns the epoch and the next
/// cursor (none: the sweep is done), or none if there is nothing to sweep.
fn unowned_round(
    state: &NodeState,
    sweep: Option<(u32, Option<BlobId>)>,
) -> Option<(u32, Option<BlobId>)> {
    let (epoch, cursor) = sweep?;
    let current = state.committee().filter(|c| c.epoch == epoch)?;
    let previous = state.committee_of(epoch - 1);
    let mine = |c: &crate::protocol::Committee| -> BTreeSet<u16> {
        c.member(&state.node_id)
            .map(|m| m.shards.iter().copied().collect())
            .unwrap_or_default()
    };
    let keep_now = mine(&current);
    let keep_prev = previous.as_deref().map(&mine).unwrap_or_default();
    let params = current.params();
    let n = params.n();
    let page = state.store.certified_page(cursor, PAGE);
    let mut dropped = 0u64;
    let before = state.store.used_bytes();
    for (id, _) in &page {
        let rot = id.mod_n(n);
        let keep: BTreeSet<u16> = keep_now
            .iter()
            .chain(keep_prev.iter())
            .map(|s| params.pair_for_shard(*s as usize, rot) as u16)
            .collect();
        match state.store.drop_pairs(id, |p| keep.contains(&p)) {
            Ok(d) => dropped += d,
            Err(e) => {
                tracing::warn!(blob = %id, error = %e, "could not drop unowned slivers");
                return Some((epoch, cursor));
            }
        }
    }
    if dropped > 0 {
        let freed = before.saturating_sub(state.store.used_bytes());
        state.metrics.gc_slivers.inc_by(dropped);
        state
            .metrics
            .gc_bytes
            .with_label_values(&["unowned"])
            .inc_by(freed);
        tracing::info!(
            epoch,
            dropped,
            freed,
            "dropped slivers of shards no longer owned"
        );
    }
    let next = if page.len() < PAGE {
        None
    } else {
        page.last().map(|(id, _)| *id)
    };
    Some((epoch, next))
}
