//! Blob lifetimes on the node (docs/economics.md): which blobs the node may store and serve.
//!
//! A network whose committee carries a control key sells storage: the node stores metadata and
//! slivers only of blobs with a live lifetime signed by that key, refuses reads of blobs that
//! expired or were deleted (with the reason, not "not found"), and the GC collects them. A
//! committee without a control key keeps the open behaviour (no lifetimes needed).

use tonic::Status;

use super::state::NodeState;
use crate::codec::BlobId;
use crate::protocol::{Gone, SignedLifetime};

/// The control plane's key, if this network signs lifetimes.
pub fn control_key(state: &NodeState) -> Option<[u8; 32]> {
    state
        .committee()
        .and_then(|c| c.economics.map(|e| e.control_key))
}

fn epoch(state: &NodeState) -> u32 {
    state.committee().map_or(0, |c| c.epoch)
}

/// Why `id` is no longer served, if it is not.
pub fn gone(state: &NodeState, id: &BlobId) -> Option<Gone> {
    state.store.lifetime(id)?.lifetime.gone_at(epoch(state))
}

/// Refuse a read of a blob that expired or was deleted.
pub fn check_readable(state: &NodeState, id: &BlobId) -> Result<(), Status> {
    match gone(state, id) {
        Some(g) => Err(g.to_status(id)),
        None => Ok(()),
    }
}

/// Before storing anything of `id`: on a network that signs lifetimes, a live one must be held.
pub fn check_writable(state: &NodeState, id: &BlobId) -> Result<(), Status> {
    check_writable_with(state, id, None)
}

/// [`check_writable`] counting `incoming` (verified, about to be stored in the same commit as
/// the blob) as held when it is newer than the held one.
pub fn check_writable_with(
    state: &NodeState,
    id: &BlobId,
    incoming: Option<&SignedLifetime>,
) -> Result<(), Status> {
    if control_key(state).is_none() {
        return Ok(());
    }
    let held = state.store.lifetime(id);
    let newest = match (held, incoming) {
        (Some(h), Some(i)) if i.lifetime.sequence > h.lifetime.sequence => Some(*i),
        (Some(h), _) => Some(h),
        (None, i) => i.copied(),
    };
    match newest {
        None => Err(Status::failed_precondition(format!(
            "blob {id} is not registered: register it with the control plane (floe put does) \
             and send its signed lifetime with the metadata"
        ))),
        Some(l) => match l.lifetime.gone_at(epoch(state)) {
            Some(g) => Err(g.to_status(id)),
            None => Ok(()),
        },
    }
}

/// Parse and verify a lifetime under this network's control key.
pub fn verify(state: &NodeState, bytes: &[u8]) -> Result<SignedLifetime, Status> {
    let key = control_key(state).ok_or_else(|| {
        Status::failed_precondition("this network does not sign lifetimes (no control key)")
    })?;
    let l =
        SignedLifetime::from_bytes(bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Err(e) = l.verify(&key) {
        state
            .metrics
            .lifetimes
            .with_label_values(&["refused"])
            .inc();
        return Err(Status::permission_denied(e.to_string()));
    }
    Ok(l)
}

/// A lifetime as sent, its signature verified only if the store does not already hold these
/// very bytes (verified when they were stored): each lifetime reaches a node twice, with the
/// upload and in the control plane's log, and a signature check costs more than a read.
/// Returns it and whether it is held already.
pub fn verify_unless_held(
    state: &NodeState,
    bytes: &[u8],
) -> Result<(SignedLifetime, bool), Status> {
    let l =
        SignedLifetime::from_bytes(bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if control_key(state).is_some()
        && state
            .store
            .lifetime(&l.lifetime.blob_id)
            .is_some_and(|h| h == l)
    {
        return Ok((l, true));
    }
    verify(state, bytes).map(|l| (l, false))
}

/// Store verified lifetimes; counts what was applied. Returns per item whether it was newer.
pub fn store(state: &NodeState, ls: &[SignedLifetime]) -> Result<Vec<bool>, Status> {
    store_at(state, ls, None)
}

/// [`store`], and the log position moved to `seq` in the same commit.
fn store_at(
    state: &NodeState,
    ls: &[SignedLifetime],
    seq: Option<u64>,
) -> Result<Vec<bool>, Status> {
    let out = state
        .store
        .put_lifetimes_at(ls, seq)
        .into_iter()
        .map(|r| r.map_err(super::storage::store_status))
        .collect::<Result<Vec<bool>, Status>>()?;
    count_stored(state, &out);
    Ok(out)
}

/// Count stored lifetimes (`true`: newer than the held one, applied) and wake the GC.
pub fn count_stored(state: &NodeState, applied: &[bool]) {
    for a in applied {
        state
            .metrics
            .lifetimes
            .with_label_values(&[if *a { "applied" } else { "older" }])
            .inc();
    }
    if applied.iter().any(|a| *a) {
        // a deletion or an expiry may now be collectable
        state.gc_wakeup.notify_one();
    }
}

/// Apply a page of the control plane's log starting at `first_seq`; the node's log position
/// advances only over a contiguous run from where it was. Returns the new position.
pub fn apply_log(state: &NodeState, first_seq: u64, items: &[Vec<u8>]) -> Result<u64, Status> {
    if first_seq == 0 {
        return Err(Status::invalid_argument("lifetime sequences start at 1"));
    }
    let at = state.store.lifetime_seq();
    if first_seq > at + 1 {
        // a gap: nothing applied, the sender starts again from our position
        return Ok(at);
    }
    let mut verified = Vec::with_capacity(items.len());
    for b in items {
        let (l, held) = verify_unless_held(state, b)?;
        if !held {
            verified.push(l);
        }
    }
    let last = first_seq + items.len() as u64 - u64::from(!items.is_empty());
    let new = if items.is_empty() { at } else { last.max(at) };
    // the lifetimes and the log position in one commit
    store_at(state, &verified, (new > at).then_some(new))?;
    Ok(new)
}
