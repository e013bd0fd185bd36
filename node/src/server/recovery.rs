//! Background recovery (PROTOCOL.md §5): for every certified blob, rebuild the slivers of this
//! node's shards that it lacks, from recovery symbols of its peers; also learn certificates it
//! missed (down, or started on an empty disk) and scrub stored slivers for corruption.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;

use super::state::NodeState;
use crate::client::NodeClient;
use crate::codec::{
    recovery_symbols, Axis, BlobId, BlobMetadata, RebuildError, RecoverySymbol, SliverRebuilder,
    SymbolShape,
};
use crate::protocol::{verify_certificate, Committee, NodeId};
use crate::store::AxisKey;

/// Peers asked for their certificate lists each round.
const LIST_PEERS: usize = 5;
/// Pages of a peer's certified list read per round, and blobs per page: a peer is called at
/// most `LIST_PAGES` times per learning round whatever it answers.
const LIST_PAGES: usize = 16;
const LIST_PAGE: u32 = 500;
/// Slivers checksummed per round by the scrubber.
const SCRUB_PER_ROUND: usize = 64;

pub async fn run(state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    let mut last_learn: Option<Instant> = None;
    let mut last_scrub: Option<Instant> = None;
    let mut scrub_cursor: Option<BlobId> = None;
    let mut clients: HashMap<String, NodeClient> = HashMap::new();
    loop {
        tokio::select! {
            _ = state.recovery_wakeup.notified() => {}
            _ = tokio::time::sleep(state.config.recovery_interval) => {}
            _ = shutdown.changed() => return,
        }
        let Some(committee) = state.committee() else {
            continue;
        };
        repend(&state, committee.epoch).await;
        if committee.member(&state.node_id).is_none() {
            // a node outside the committee owns no pair: nothing is missing
            state.recovery_backlog.store(0, Ordering::Relaxed);
            continue;
        }
        if state.config.fault == Some(super::config::Fault::NoRepair) {
            continue;
        }
        let peers = peer_clients(&state, &committee, &mut clients);
        if last_learn.is_none_or(|t| t.elapsed() > state.config.recovery_interval * 5) {
            learn_certified(&state, &committee, &peers).await;
            last_learn = Some(Instant::now());
        }
        // by the clock, not by wakeups: every stored certificate wakes recovery, and a
        // scrubber run per wakeup read ~3,000 slivers a second under a stream of small puts
        if last_scrub.is_none_or(|t| t.elapsed() >= state.config.recovery_interval) {
            scrub_cursor = scrub(&state, scrub_cursor).await;
            last_scrub = Some(Instant::now());
        }
        let st = state.clone();
        let found = tokio::task::spawn_blocking(move || {
            let found = st.missing_work();
            if let Err(e) = st.store.clear_pending(found.complete.clone()) {
                tracing::warn!(error = %e, "could not update the recovery list");
            }
            found
        })
        .await;
        let Ok(found) = found else {
            continue;
        };
        let backlog = found.slivers();
        let work = found.work;
        state
            .recovery_backlog
            .store(backlog as u64, Ordering::Relaxed);
        if backlog == 0 {
            continue;
        }
        tracing::info!(
            blobs = work.len(),
            slivers = backlog,
            "recovering missing slivers"
        );
        let started = Instant::now();
        futures::stream::iter(work)
            .for_each_concurrent(state.config.recovery_concurrency, |(id, missing)| {
                let state = state.clone();
                let committee = committee.clone();
                let peers = peers.clone();
                async move {
                    let count = missing.len() as u64;
                    match recover_blob(&state, &committee, &peers, id, missing).await {
                        Ok(done) => {
                            state.metrics.recovered.inc_by(done);
                            let left = state.recovery_backlog.fetch_sub(done.min(count), Ordering::Relaxed) - done.min(count);
                            tracing::info!(blob = %id, rebuilt = done, backlog = left, "recovered slivers");
                        }
                        Err(e) => {
                            state.metrics.recovery_failures.inc();
                            tracing::warn!(blob = %id, error = %e, "recovery attempt failed; will retry");
                        }
                    }
                }
            })
            .await;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovery round finished"
        );
    }
}

/// Clients for the other members of `committee` and of the committee before it, reusing (and
/// filling) a cache by address.
pub(super) fn peer_clients(
    state: &NodeState,
    committee: &Committee,
    clients: &mut HashMap<String, NodeClient>,
) -> Vec<(NodeId, NodeClient)> {
    // members of the previous committee keep the shards they lost for one more epoch
    // (PROTOCOL.md §6): they help rebuild too, which matters when a change moved shards away
    // from members that were down and are back now
    let previous = committee
        .epoch
        .checked_sub(1)
        .and_then(|e| state.committee_of(e));
    let mut seen = std::collections::BTreeSet::new();
    let mut peers = Vec::new();
    for m in committee
        .members
        .iter()
        .chain(previous.iter().flat_map(|p| p.members.iter()))
    {
        if m.node_id == state.node_id || !seen.insert(m.node_id) {
            continue;
        }
        // cached per (identity, address): over TLS a client only accepts the node it expects
        let key = format!("{}@{}", hex::encode(m.node_id.0), m.address);
        if !clients.contains_key(&key) {
            if let Ok(c) = NodeClient::for_node(&m.address, m.node_id, state.config.max_message) {
                clients.insert(key.clone(), c);
            }
        }
        if let Some(c) = clients.get(&key) {
            peers.push((m.node_id, c.clone()));
        }
    }
    peers
}

/// Certified blobs whose slivers for this node's shards are missing: (blob, [(pair, axis)]).
/// Shards still being pulled from their previous owner are left to the sync.
///
/// Cost ∝ the store's `pending` list, not the store: a certified blob is put on it when its
/// certificate arrives, when one of its slivers is dropped (corrupt) and, once per epoch, all
/// of them (the owned pairs changed); blobs found complete here are taken off.
///
/// Blocking (store reads); the recovery loop runs it, after [`repend`], off the async workers.
/// Once per epoch, put every certified blob back on the pending list (the owned pairs changed):
/// one pass over the certified index, off the async workers.
pub(super) async fn repend(state: &Arc<NodeState>, epoch: u32) {
    if state.store.pending_epoch() >= epoch {
        return;
    }
    let st = state.clone();
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || st.store.repend_all(epoch)).await {
        Ok(Ok(true)) => tracing::info!(
            epoch,
            blobs = state.store.certified_count(),
            ms = started.elapsed().as_millis() as u64,
            "certified blobs queued for the epoch's recovery check"
        ),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not queue certified blobs for recovery"),
        Err(e) => tracing::warn!(error = %e, "recovery queueing task failed"),
    }
}

#[derive(Debug, thiserror::Error)]
enum RecoveryError {
    #[error("no peer returned valid metadata")]
    NoMetadata,
    #[error("only {have} of {need} recovery symbols for {axis:?} sliver {index}")]
    NotEnoughSymbols {
        axis: Axis,
        index: usize,
        have: usize,
        need: usize,
    },
    #[error("{0}")]
    Other(String),
}

async fn fetch_metadata(
    state: &NodeState,
    peers: &[(NodeId, NodeClient)],
    id: BlobId,
) -> Result<Arc<BlobMetadata>, RecoveryError> {
    if let Some(md) = state.store.metadata(&id) {
        return Ok(md);
    }
    for (_, p) in peers {
        if let Ok(md) = p.get_metadata(&id).await {
            let st_md = md.clone();
            state
                .store
                .put_metadata(id, &st_md)
                .map_err(|e| RecoveryError::Other(e.to_string()))?;
            return Ok(Arc::new(md));
        }
    }
    Err(RecoveryError::NoMetadata)
}

async fn recover_blob(
    state: &Arc<NodeState>,
    committee: &Committee,
    peers: &[(NodeId, NodeClient)],
    id: BlobId,
    missing: Vec<(u16, Axis)>,
) -> Result<u64, RecoveryError> {
    let md = fetch_metadata(state, peers, id).await?;
    let n = md.n();
    if n != committee.n_shards as usize {
        return Err(RecoveryError::Other(format!(
            "metadata has {n} shards, committee {}",
            committee.n_shards
        )));
    }
    let mut done = 0;
    let mut first_error = None;
    // Secondary slivers first: they need only k_p = n−2f symbols, and once rebuilt they are
    // sources for primary slivers, which need k_s = n−f (Red Stuff's two-phase recovery).
    for axis in [Axis::Secondary, Axis::Primary] {
        match recover_axis(state, peers, &md, id, axis, &missing).await {
            Ok(AxisOutcome::Rebuilt(k)) => done += k,
            Ok(AxisOutcome::Invalid) => return Ok(done),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if done == 0 => Err(e),
        Some(e) => {
            tracing::info!(blob = %id, rebuilt = done, error = %e, "partial recovery; the rest is retried");
            Ok(done)
        }
        None => Ok(done),
    }
}

enum AxisOutcome {
    Rebuilt(u64),
    /// The blob was proven inconsistent and marked invalid.
    Invalid,
}

async fn recover_axis(
    state: &Arc<NodeState>,
    peers: &[(NodeId, NodeClient)],
    md: &BlobMetadata,
    id: BlobId,
    axis: Axis,
    missing: &[(u16, Axis)],
) -> Result<AxisOutcome, RecoveryError> {
    let n = md.n();
    let mut done = 0;
    {
        // target sliver index → pair
        let targets: BTreeMap<u16, u16> = missing
            .iter()
            .filter(|(_, a)| *a == axis)
            .map(|(p, _)| {
                (
                    if axis == Axis::Primary {
                        *p
                    } else {
                        (n - 1 - *p as usize) as u16
                    },
                    *p,
                )
            })
            .collect();
        if targets.is_empty() {
            return Ok(AxisOutcome::Rebuilt(0));
        }
        let indices: Vec<u16> = targets.keys().copied().collect();
        let mut builders: BTreeMap<u16, SliverRebuilder<'_>> = indices
            .iter()
            .map(|t| {
                Ok((
                    *t,
                    SliverRebuilder::new(md, axis, *t as usize)
                        .map_err(|e| RecoveryError::Other(e.to_string()))?,
                ))
            })
            .collect::<Result<_, RecoveryError>>()?;
        // ask in chunks whose answers stay under the peers' answer limit (a peer holds at most
        // the most shards of any member, twice around an epoch change)
        let shape = md
            .shape()
            .map_err(|e| RecoveryError::Other(e.to_string()))?;
        let most_shards = state
            .committee()
            .and_then(|c| c.members.iter().map(|m| m.shards.len()).max())
            .unwrap_or(1)
            .max(1);
        let per_target = super::storage::recovery_answer_bytes(&shape, 2 * most_shards, 1).max(1);
        let chunk =
            (super::storage::recovery_answer_cap(state.config.max_message) / per_target).max(1);
        let chunks: Vec<&[u16]> = indices.chunks(chunk).collect();
        // this node's own slivers of the other axis help too (Red Stuff's second phase: the
        // secondaries rebuilt a moment ago are sources for the primaries); without them a node
        // whose reachable peers hold fewer than the needed shards could never rebuild its
        // primaries, though the symbols it lacks are on its own disk
        for sym in own_symbols(state, id, axis.other(), shape, &indices).await {
            if let Some(b) = builders.get_mut(&sym.position) {
                if !b.is_ready() {
                    let _ = b.add(sym);
                }
            }
        }
        let mut calls: FuturesUnordered<_> = peers
            .iter()
            .map(|(_, p)| {
                let chunks = &chunks;
                async move {
                    let mut all = Vec::new();
                    for c in chunks {
                        match p.recovery_symbols(&id, axis, c).await {
                            Ok(s) => all.extend(s),
                            Err(e) if all.is_empty() => return Err(e),
                            Err(_) => break,
                        }
                    }
                    Ok(all)
                }
            })
            .collect();
        if builders.values().all(|b| b.is_ready()) {
            calls.clear();
        }
        while let Some(answer) = calls.next().await {
            let Ok(symbols) = answer else { continue };
            let bytes: usize = symbols
                .iter()
                .map(|s| {
                    s.data.len()
                        + 32 * s.proof.siblings.len()
                        + 32 * s.proof.chunk.is_some() as usize
                })
                .sum();
            state.metrics.received_from_peers("recovery", bytes);
            for sym in symbols {
                if let Some(b) = builders.get_mut(&sym.position) {
                    if !b.is_ready() {
                        // a bad symbol (lying peer) is refused here and simply not counted
                        let _ = b.add(sym);
                    }
                }
            }
            if builders.values().all(|b| b.is_ready()) {
                break;
            }
        }
        drop(calls);
        let mut short = None;
        for (index, b) in builders {
            if !b.is_ready() {
                short.get_or_insert(RecoveryError::NotEnoughSymbols {
                    axis,
                    index: index as usize,
                    have: b.have(),
                    need: b.needed(),
                });
                continue;
            }
            let pair = targets[&index];
            match b.rebuild() {
                Ok(sliver) => {
                    let st = state.clone();
                    tokio::task::spawn_blocking(move || st.store.put_sliver(id, pair, &sliver))
                        .await
                        .map_err(|e| RecoveryError::Other(e.to_string()))?
                        .map_err(|e| RecoveryError::Other(e.to_string()))?;
                    done += 1;
                }
                Err(RebuildError::Inconsistent(proof)) => {
                    tracing::warn!(blob = %id, "blob is inconsistently encoded; marking it invalid");
                    state
                        .store
                        .mark_invalid(id, &proof.to_bytes())
                        .map_err(|e| RecoveryError::Other(e.to_string()))?;
                    return Ok(AxisOutcome::Invalid);
                }
                Err(RebuildError::Codec(e)) => return Err(RecoveryError::Other(e.to_string())),
            }
        }
        if let Some(e) = short {
            if done == 0 {
                return Err(e);
            }
        }
    }
    Ok(AxisOutcome::Rebuilt(done))
}

/// Recovery symbols for `targets` from the slivers of `helper_axis` this node holds.
async fn own_symbols(
    state: &Arc<NodeState>,
    id: BlobId,
    helper_axis: Axis,
    shape: SymbolShape,
    targets: &[u16],
) -> Vec<RecoverySymbol> {
    let st = state.clone();
    let targets = targets.to_vec();
    let key = match helper_axis {
        Axis::Primary => AxisKey::Primary,
        Axis::Secondary => AxisKey::Secondary,
    };
    tokio::task::spawn_blocking(move || {
        let Some(entry) = st.store.entry_without_metadata(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (pair, _) in entry.slivers.iter().filter(|(_, a)| *a == key) {
            let Ok(Some(helper)) = st.store.get_sliver(&id, *pair, helper_axis) else {
                continue;
            };
            st.metrics.recovery_expansions.inc();
            if let Ok(syms) = recovery_symbols(&helper, &shape, &targets) {
                out.extend(syms);
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// Ask a few peers which blobs are certified and keep the certificates that verify against a
/// committee this node was given through its admin API. Peers' reports are never counted as
/// votes: a certificate of an epoch this node does not know is held (bounded per peer) until
/// that committee arrives. Each peer is read at most [`LIST_PAGES`] pages per round, resuming
/// from where the last round stopped; a page whose cursor does not advance ends that peer's
/// turn, so a peer answering `more = true` forever costs a bounded number of calls.
pub(super) async fn learn_certified(
    state: &Arc<NodeState>,
    _committee: &Committee,
    peers: &[(NodeId, NodeClient)],
) {
    let mut learned = 0usize;
    // verified certificates are stored off the async workers, a page at a time
    let mut verified: Vec<crate::protocol::Certificate> = Vec::new();
    let accept = |verified: &mut Vec<_>, cert: &crate::protocol::Certificate, c: &Committee| {
        if verify_certificate(c, cert).is_ok() {
            verified.push(cert.clone());
        } else {
            state
                .metrics
                .certificates_refused
                .with_label_values(&["unverifiable"])
                .inc();
        }
    };
    for (peer_id, peer) in peers.iter().take(LIST_PEERS) {
        let mut after = state
            .list_cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer_id)
            .copied();
        let mut finished = false;
        for _ in 0..LIST_PAGES {
            let Ok((certs, more)) = peer.list_certified(after, LIST_PAGE).await else {
                break;
            };
            // the page must be in strictly increasing blob-ID order after the cursor
            let ordered = certs
                .iter()
                .try_fold(after, |prev, c| {
                    prev.is_none_or(|p| c.blob_id > p)
                        .then_some(Some(c.blob_id))
                })
                .is_some();
            if !ordered || (more && certs.is_empty()) {
                tracing::warn!(peer = %peer_id.short(), "peer listed certificates out of order or without progress; ignoring it this round");
                state
                    .metrics
                    .certificates_refused
                    .with_label_values(&["bad_page"])
                    .inc();
                after = None;
                break;
            }
            after = certs.last().map(|c| c.blob_id).or(after);
            for cert in certs {
                if is_certified(state, &cert.blob_id) {
                    continue;
                }
                match state.committee_of(cert.epoch) {
                    Some(c) => accept(&mut verified, &cert, &c),
                    None => {
                        state.hold_certificate(*peer_id, cert);
                    }
                }
            }
            learned += store_certificates(state, std::mem::take(&mut verified)).await;
            if !more {
                finished = true;
                break;
            }
        }
        let mut cursors = state.list_cursors.lock().unwrap_or_else(|p| p.into_inner());
        match after.filter(|_| !finished) {
            Some(a) => cursors.insert(*peer_id, a),
            None => cursors.remove(peer_id),
        };
    }
    // past committees of held certificates, when members holding a quorum of the current
    // committee's shards report the very same one (never on fewer: a lying minority cannot
    // make one up), then the held certificates whose committee has arrived
    learn_past_committees(state, peers).await;
    for (cert, c) in state.take_verifiable_held() {
        if !is_certified(state, &cert.blob_id) {
            accept(&mut verified, &cert, &c);
        }
    }
    learned += store_certificates(state, verified).await;
    if learned > 0 {
        tracing::info!(learned, "learned certified blobs from peers");
    }
}

/// Store verified certificates (blocking work, off the async workers); returns how many were
/// stored.
async fn store_certificates(
    state: &Arc<NodeState>,
    certs: Vec<crate::protocol::Certificate>,
) -> usize {
    if certs.is_empty() {
        return 0;
    }
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        certs
            .iter()
            .filter(|c| st.store.put_certificate(c).is_ok())
            .count()
    })
    .await
    .unwrap_or(0)
}

/// Past epochs looked up per learning round.
const PAST_EPOCHS_PER_ROUND: usize = 4;

async fn learn_past_committees(state: &NodeState, peers: &[(NodeId, NodeClient)]) {
    let Some(current) = state.committee() else {
        return;
    };
    let params = current.params();
    for epoch in state.held_unknown_epochs(PAST_EPOCHS_PER_ROUND) {
        let answers = futures::future::join_all(peers.iter().map(|(id, p)| async move {
            let c = tokio::time::timeout(std::time::Duration::from_secs(5), p.committee_of(epoch))
                .await
                .ok()
                .and_then(Result::ok);
            (*id, c)
        }))
        .await;
        // weight of the current committee behind each distinct answer
        let mut votes: Vec<(Committee, usize)> = Vec::new();
        for (id, c) in answers {
            let Some(c) = c.filter(|c| c.epoch == epoch && c.n_shards == current.n_shards) else {
                continue;
            };
            let w = current.weight(&id);
            match votes.iter_mut().find(|(k, _)| *k == c) {
                Some(v) => v.1 += w,
                None => votes.push((c, w)),
            }
        }
        if let Some((c, w)) = votes.into_iter().max_by_key(|(_, w)| *w) {
            if params.is_quorum(w) && c.validate().is_ok() {
                tracing::info!(
                    epoch,
                    weight = w,
                    "learned a past committee from a quorum of members"
                );
                if let Err(e) = state.set_committee(c) {
                    tracing::warn!(epoch, error = %e, "could not keep the past committee");
                }
            }
        }
    }
}

fn is_certified(state: &NodeState, id: &BlobId) -> bool {
    state.store.is_certified(id)
}

/// Read a bounded number of stored slivers per round so that disk corruption is found even
/// when nobody asks for the data; corrupt files are dropped and rebuilt by recovery.
async fn scrub(state: &Arc<NodeState>, cursor: Option<BlobId>) -> Option<BlobId> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        // a page of the certified index from the cursor, wrapping around at the end
        let mut page = st.store.certified_page(cursor, SCRUB_PER_ROUND);
        if page.is_empty() && cursor.is_some() {
            page = st.store.certified_page(None, SCRUB_PER_ROUND);
        }
        let mut checked = 0;
        let mut last = None;
        for (id, _) in &page {
            let Some(e) = st.store.entry(id) else { continue };
            for (pair, key) in &e.slivers {
                if let Err(err) = st.store.get_sliver(id, *pair, Axis::from(*key)) {
                    st.metrics.corrupt_detected.inc();
                    tracing::warn!(blob = %id, pair, error = %err, "scrubber dropped a corrupt sliver");
                }
                checked += 1;
            }
            last = Some(*id);
            if checked >= SCRUB_PER_ROUND {
                break;
            }
        }
        last
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fixtures::{committee, id, key};
    use clap::Parser as _;

    #[tokio::test]
    async fn members_of_the_previous_committee_help_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let config = super::super::config::Args::try_parse_from([
            "floe-node",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .unwrap()
        .resolve()
        .unwrap();
        let state = NodeState::open(config, key(3)).unwrap();
        // epoch 1: nodes 1, 2, 3; epoch 2: node 1 lost its shards (it keeps them one more epoch)
        state
            .set_committee(committee(1, &[(1, &[0, 1]), (2, &[2]), (3, &[3])]))
            .unwrap();
        let c2 = committee(2, &[(2, &[0, 2]), (3, &[1, 3])]);
        state.set_committee(c2.clone()).unwrap();
        let mut clients = HashMap::new();
        let peers: Vec<NodeId> = peer_clients(&state, &c2, &mut clients)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            peers,
            vec![id(2), id(1)],
            "current members first, then the previous ones, never itself"
        );
    }
}
