//! What a running node knows: identity, store, committees, metrics, switches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::config::NodeConfig;
use super::metrics::Metrics;
use crate::codec::{Axis, BlobId};
use crate::proto::NodeStatus;
use crate::protocol::{gained_shards, Certificate, Committee, NodeId};
use crate::store::file::{read_checked, write_atomic};
use crate::store::{BlobStore, StoreError, StoreLimits};

const COMMITTEE_FILE: &str = "committee";
/// Most pending blobs counted exactly by `recovery_backlog_exact`.
const EXACT_PENDING: usize = 4096;

/// The committees a node keeps: the current one and the one before it (still a sync source and
/// still the committee that certified recent blobs), and the shard sync of the current epoch.
/// One file, so that a committee and the sync it implies are persisted together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Committees {
    current: Option<Arc<Committee>>,
    previous: Option<Arc<Committee>>,
    #[serde(default)]
    sync: Option<SyncPlan>,
    /// Older committees given through the admin API (at most [`MAX_HISTORY`]): the only ones
    /// against which certificates of their epochs can be verified.
    #[serde(default)]
    history: BTreeMap<u32, Arc<Committee>>,
}

/// Committees older than the previous one kept for verifying old certificates.
pub const MAX_HISTORY: usize = 1024;
/// Certificates of epochs this node does not know (yet) kept per reporting peer until the
/// committee of their epoch arrives; beyond that, further ones from that peer are dropped.
pub const MAX_HELD_PER_PEER: usize = 1024;

/// Shards gained at the change to `epoch` and how far each has been pulled (PROTOCOL.md §6).
/// Persisted: a restart resumes from the cursors and never reports a sync it did not finish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPlan {
    pub epoch: u32,
    pub pending: BTreeMap<u16, ShardSync>,
    /// Blobs pulled from previous owners for this epoch, over all shards.
    pub blobs_done: u64,
    /// Shards whose source was gone or stalled, handed to recovery.
    pub fell_back: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSync {
    /// The previous owner and its address; none when this node does not know the outgoing
    /// committee (the shard then goes straight to recovery).
    pub source: Option<(NodeId, String)>,
    /// Last blob ID received (the source's page cursor).
    pub after: Option<[u8; 32]>,
    /// Certified blobs the source still has after the cursor, as of the last page.
    pub remaining: Option<u64>,
}

pub struct NodeState {
    pub config: NodeConfig,
    pub key: SigningKey,
    pub node_id: NodeId,
    pub store: BlobStore,
    pub metrics: Metrics,
    committees: RwLock<Committees>,
    /// Cleared on SIGTERM: writes are refused while in-flight ones finish.
    pub accepting_writes: AtomicBool,
    pub recovery_wakeup: tokio::sync::Notify,
    /// Wakes the GC early: a new epoch, or a deletion, may have made blobs collectable.
    pub gc_wakeup: tokio::sync::Notify,
    pub recovery_backlog: AtomicU64,
    pub sync_wakeup: tokio::sync::Notify,
    /// Slots for expensive answers (recovery symbols: sliver expansions).
    pub expensive: tokio::sync::Semaphore,
    /// Port of the admin listener (0: the admin API shares the gRPC port).
    pub admin_port: std::sync::atomic::AtomicU32,
    /// The last full count of the recovery backlog and what it was counted against.
    backlog_cache: std::sync::Mutex<Option<(BacklogKey, Backlog)>>,
    /// (store generation, epoch) of the last per-shard count: a scrape recounts only after a change.
    shard_gauges_at: std::sync::Mutex<Option<(u64, u32)>>,
    /// Certificates of unknown epochs, per reporting peer, held until their committee arrives.
    held_certs: std::sync::Mutex<BTreeMap<NodeId, BTreeMap<BlobId, Certificate>>>,
    /// Where this node stopped reading each peer's certified list (resumed next round).
    pub list_cursors: std::sync::Mutex<BTreeMap<NodeId, BlobId>>,
}

/// A backlog count stays valid while the store, the committee and the syncing shards are the
/// same.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BacklogKey {
    generation: u64,
    epoch: u32,
    syncing: Vec<u16>,
    fell_back: Vec<u16>,
}

/// Slivers recovery still owes (see [`NodeState::recovery_backlog_exact`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Every owned sliver of a certified blob this node lacks.
    pub slivers: u64,
    /// Of those, the slivers of shards gained at this epoch whose sync fell back to recovery:
    /// the epoch's sync is done only when these are rebuilt. The rest (a wiped disk, blobs
    /// missed while down) is ordinary recovery and does not hold the epoch change: a node
    /// rebuilding its own shards must not stop the network from rotating its committee.
    pub gained: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitteeUpdateError {
    #[error("committee epoch {got} is older than the current epoch {current}")]
    Stale { got: u32, current: u32 },
    #[error("a different committee for epoch {0} is already set")]
    Conflict(u32),
    #[error("committee has {got} shards but this node stores data for {expected}")]
    ShardCount { got: u16, expected: u16 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NodeState {
    pub fn open(config: NodeConfig, key: SigningKey) -> Result<Self, StoreError> {
        let store = BlobStore::open_tuned(
            &config.data_dir,
            StoreLimits {
                capacity: config.max_storage,
                uncertified_quota: Some(config.uncertified_quota),
            },
            config.store_engine.clone(),
        )?;
        let committees: Committees = match read_checked(&config.data_dir.join(COMMITTEE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Undecodable(e.to_string()))?,
            Err(crate::store::file::FileError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                Committees::default()
            }
            Err(e) => return Err(e.into()),
        };
        for c in [&committees.current, &committees.previous]
            .into_iter()
            .flatten()
            .chain(committees.history.values())
        {
            c.validate().map_err(|e| {
                StoreError::Undecodable(format!("stored committee {}: {e}", c.epoch))
            })?;
        }
        let node_id = NodeId(key.verifying_key().to_bytes());
        let state = Self {
            config,
            key,
            node_id,
            store,
            metrics: Metrics::new(),
            committees: RwLock::new(committees),
            accepting_writes: AtomicBool::new(true),
            recovery_wakeup: tokio::sync::Notify::new(),
            gc_wakeup: tokio::sync::Notify::new(),
            recovery_backlog: AtomicU64::new(0),
            sync_wakeup: tokio::sync::Notify::new(),
            admin_port: std::sync::atomic::AtomicU32::new(0),
            expensive: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            ),
            backlog_cache: std::sync::Mutex::new(None),
            shard_gauges_at: std::sync::Mutex::new(None),
            held_certs: std::sync::Mutex::new(BTreeMap::new()),
            list_cursors: std::sync::Mutex::new(BTreeMap::new()),
        };
        state
            .metrics
            .epoch
            .set(state.committee().map_or(0, |c| c.epoch as i64));
        state
            .metrics
            .sync_shards_pending
            .set(state.syncing_shards().len() as i64);
        Ok(state)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Committees> {
        self.committees.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn committee(&self) -> Option<Arc<Committee>> {
        self.read().current.clone()
    }

    /// The committee of `epoch`, if this node was given it through the admin API (and still
    /// keeps it).
    pub fn committee_of(&self, epoch: u32) -> Option<Arc<Committee>> {
        let c = self.read();
        [c.current.clone(), c.previous.clone()]
            .into_iter()
            .flatten()
            .find(|c| c.epoch == epoch)
            .or_else(|| c.history.get(&epoch).cloned())
    }

    /// Hold a certificate of an epoch this node does not know, reported by `peer`, until the
    /// committee of that epoch arrives. Bounded per peer, so a lying peer can only fill its own
    /// share. Returns whether it was kept.
    pub fn hold_certificate(&self, peer: NodeId, cert: Certificate) -> bool {
        let mut held = self.held_certs.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.entry(peer).or_default();
        if mine.len() >= MAX_HELD_PER_PEER && !mine.contains_key(&cert.blob_id) {
            self.metrics
                .certificates_refused
                .with_label_values(&["held_full"])
                .inc();
            return false;
        }
        mine.insert(cert.blob_id, cert);
        let total: usize = held.values().map(|m| m.len()).sum();
        self.metrics.certificates_held.set(total as i64);
        true
    }

    /// Past epochs of held certificates whose committee this node does not know (at most `max`).
    pub fn held_unknown_epochs(&self, max: usize) -> Vec<u32> {
        let current = self.committee().map_or(0, |c| c.epoch);
        let held = self.held_certs.lock().unwrap_or_else(|p| p.into_inner());
        let mut epochs: Vec<u32> = held
            .values()
            .flat_map(|m| m.values().map(|c| c.epoch))
            .filter(|e| *e < current && self.committee_of(*e).is_none())
            .collect();
        epochs.sort_unstable();
        epochs.dedup();
        epochs.truncate(max);
        epochs
    }

    /// Take the held certificates whose epoch's committee is now known (to be verified).
    pub fn take_verifiable_held(&self) -> Vec<(Certificate, Arc<Committee>)> {
        let mut held = self.held_certs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for certs in held.values_mut() {
            certs.retain(|_, cert| match self.committee_of(cert.epoch) {
                Some(c) => {
                    out.push((cert.clone(), c));
                    false
                }
                None => true,
            });
        }
        held.retain(|_, m| !m.is_empty());
        let total: usize = held.values().map(|m| m.len()).sum();
        self.metrics.certificates_held.set(total as i64);
        out
    }

    /// Install a (validated) committee and persist it before acknowledging.
    pub fn set_committee(&self, new: Committee) -> Result<(), CommitteeUpdateError> {
        let mut guard = self.committees.write().unwrap_or_else(|p| p.into_inner());
        if let Some(cur) = &guard.current {
            if new.epoch < cur.epoch {
                // a past committee: kept for verifying certificates of its epoch (a node new
                // to the network is given them), never made current
                let known = guard
                    .previous
                    .iter()
                    .find(|p| p.epoch == new.epoch)
                    .or_else(|| guard.history.get(&new.epoch));
                if let Some(k) = known {
                    return if **k == new || same_but_addresses(k, &new) {
                        Ok(())
                    } else {
                        Err(CommitteeUpdateError::Conflict(new.epoch))
                    };
                }
                if cur.n_shards != new.n_shards {
                    return Err(CommitteeUpdateError::ShardCount {
                        got: new.n_shards,
                        expected: cur.n_shards,
                    });
                }
                if guard.history.len() >= MAX_HISTORY
                    && guard.history.keys().next().is_some_and(|e| *e > new.epoch)
                {
                    return Err(CommitteeUpdateError::Stale {
                        got: new.epoch,
                        current: cur.epoch,
                    });
                }
                let mut next = guard.clone();
                next.history.insert(new.epoch, Arc::new(new));
                trim_history(&mut next.history);
                self.persist(&next)?;
                *guard = next;
                drop(guard);
                self.recovery_wakeup.notify_one();
                return Ok(());
            }
            if new.epoch == cur.epoch {
                if **cur == new {
                    return Ok(());
                }
                // a member restarted on a new address (a pod's new IP): the same committee with
                // other addresses is accepted; any other difference is a conflict
                if !same_but_addresses(cur, &new) {
                    return Err(CommitteeUpdateError::Conflict(new.epoch));
                }
                let mut next = guard.clone();
                next.current = Some(Arc::new(new));
                self.persist(&next)?;
                *guard = next;
                return Ok(());
            }
            if cur.n_shards != new.n_shards {
                return Err(CommitteeUpdateError::ShardCount {
                    got: new.n_shards,
                    expected: cur.n_shards,
                });
            }
        }
        let mut next = guard.clone();
        next.sync = next_sync_plan(&guard, &new, &self.node_id);
        if let Some(p) = next.previous.take() {
            next.history.insert(p.epoch, p);
            trim_history(&mut next.history);
        }
        next.previous = next.current.take();
        next.current = Some(Arc::new(new));
        self.persist(&next)?;
        *guard = next;
        drop(guard);
        self.metrics
            .epoch
            .set(self.committee().map_or(0, |c| c.epoch as i64));
        self.recovery_wakeup.notify_one();
        self.sync_wakeup.notify_one();
        Ok(())
    }

    fn persist(&self, c: &Committees) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(c).expect("committees serialise");
        write_atomic(&self.config.data_dir, COMMITTEE_FILE, &bytes).map_err(StoreError::from)?;
        Ok(())
    }

    /// Change the sync plan (if it is still the one for `epoch`) and persist it.
    fn update_sync(&self, epoch: u32, f: impl FnOnce(&mut SyncPlan)) -> Result<(), StoreError> {
        let mut guard = self.committees.write().unwrap_or_else(|p| p.into_inner());
        let Some(plan) = guard.sync.as_ref().filter(|p| p.epoch == epoch) else {
            return Ok(());
        };
        let mut plan = plan.clone();
        f(&mut plan);
        let mut next = guard.clone();
        next.sync = Some(plan);
        self.persist(&next)?;
        *guard = next;
        self.metrics
            .sync_shards_pending
            .set(guard.sync.as_ref().map_or(0, |p| p.pending.len() as i64));
        Ok(())
    }

    /// The shard sync of the current epoch, if any.
    pub fn sync_plan(&self) -> Option<SyncPlan> {
        self.read().sync.clone()
    }

    /// Shards still being pulled from their previous owners (recovery leaves them alone).
    pub fn syncing_shards(&self) -> std::collections::BTreeSet<u16> {
        self.read()
            .sync
            .as_ref()
            .map(|p| p.pending.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A page of `shard` is stored: move its cursor.
    pub fn advance_sync(
        &self,
        epoch: u32,
        shard: u16,
        after: Option<BlobId>,
        blobs: u64,
        remaining: u64,
    ) -> Result<(), StoreError> {
        self.update_sync(epoch, |p| {
            if let Some(s) = p.pending.get_mut(&shard) {
                s.after = after.map(|a| a.0).or(s.after);
                s.remaining = Some(remaining);
                p.blobs_done += blobs;
            }
        })
    }

    /// `shard` is done: pulled completely, or (`fell_back`) handed to recovery.
    pub fn finish_shard_sync(
        &self,
        epoch: u32,
        shard: u16,
        fell_back: bool,
    ) -> Result<(), StoreError> {
        self.update_sync(epoch, |p| {
            if p.pending.remove(&shard).is_some() && fell_back {
                p.fell_back.push(shard);
            }
        })
    }

    /// Shards this node holds in the current committee.
    pub fn my_shards(&self) -> Vec<u16> {
        self.committee()
            .and_then(|c| c.member(&self.node_id).map(|m| m.shards.clone()))
            .unwrap_or_default()
    }

    /// Sliver pairs of `blob` that this node's shards own in the current committee.
    pub fn owned_pairs(&self, blob: &BlobId) -> Vec<u16> {
        self.owned_pairs_excluding(blob, &Default::default())
    }

    /// Like [`Self::owned_pairs`], leaving out the pairs of the shards in `except`.
    pub fn owned_pairs_excluding(
        &self,
        blob: &BlobId,
        except: &std::collections::BTreeSet<u16>,
    ) -> Vec<u16> {
        let Some(c) = self.committee() else {
            return Vec::new();
        };
        let Some(me) = c.member(&self.node_id) else {
            return Vec::new();
        };
        let p = c.params();
        let rot = blob.mod_n(p.n());
        me.shards
            .iter()
            .filter(|s| !except.contains(s))
            .map(|s| p.pair_for_shard(*s as usize, rot) as u16)
            .collect()
    }

    /// Slivers of certified blobs this node owns but lacks (what recovery still has to do),
    /// counted exactly. Cost: O(1) while nothing changed since the last count (the control plane
    /// polls this every round); after a change, one pass over the in-memory index (certified
    /// blobs × owned pairs, no disk access).
    ///
    /// Until the recovery loop has queued this epoch's re-check, or while more than
    /// [`EXACT_PENDING`] blobs wait for it, the answer is an upper bound (never 0), so that
    /// "done" is never reported early and the call stays cheap.
    pub fn recovery_backlog_exact(&self) -> Backlog {
        let upper_bound = |n: u64| Backlog {
            slivers: n,
            gained: if self.sync_plan().is_some_and(|p| !p.fell_back.is_empty()) {
                n
            } else {
                0
            },
        };
        if let Some(c) = self.committee() {
            if self.store.pending_epoch() < c.epoch {
                return upper_bound(self.store.certified_count().max(1));
            }
        }
        if self.store.pending_page(None, EXACT_PENDING + 1).len() > EXACT_PENDING {
            return upper_bound(
                (self.store.pending_count_estimate() as u64).max(EXACT_PENDING as u64 + 1),
            );
        }
        let key = |s: &Self| BacklogKey {
            generation: s.store.generation(),
            epoch: s.committee().map_or(0, |c| c.epoch),
            syncing: s.syncing_shards().into_iter().collect(),
            fell_back: s.sync_plan().map(|p| p.fell_back).unwrap_or_default(),
        };
        let before = key(self);
        let mut cache = self.backlog_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, v)) = cache.as_ref() {
            if *k == before {
                return *v;
            }
        }
        let work = self.missing_work();
        let fell_back: std::collections::BTreeSet<u16> = before.fell_back.iter().copied().collect();
        let gained = if fell_back.is_empty() {
            0
        } else {
            let everything_else: std::collections::BTreeSet<u16> = self
                .committee()
                .and_then(|c| c.member(&self.node_id).map(|m| m.shards.clone()))
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !fell_back.contains(s))
                .collect();
            work.work
                .iter()
                .map(|(id, missing)| {
                    let gained_pairs = self.owned_pairs_excluding(id, &everything_else);
                    missing
                        .iter()
                        .filter(|(p, _)| gained_pairs.contains(p))
                        .count() as u64
                })
                .sum()
        };
        let count = Backlog {
            slivers: work.slivers() as u64,
            gained,
        };
        // cached only if nothing changed while counting (else the next call counts again)
        if key(self) == before {
            *cache = Some((before, count));
        }
        count
    }

    pub fn status(&self) -> NodeStatus {
        match self.committee() {
            Some(c) if c.member(&self.node_id).is_some() => {
                if !self.syncing_shards().is_empty() {
                    NodeStatus::Syncing
                } else if self.recovery_backlog.load(Ordering::Relaxed) > 0 {
                    NodeStatus::Recovering
                } else {
                    NodeStatus::Active
                }
            }
            _ => NodeStatus::Standby,
        }
    }

    /// Refresh gauges derived from the store (called on scrape).
    pub fn refresh_gauges(&self) {
        self.metrics.store.set(&self.store.stall_report());
        self.metrics
            .stored_bytes
            .set(self.store.used_bytes() as i64);
        self.metrics.blobs.set(self.store.blob_count() as i64);
        self.metrics
            .uncertified_bytes
            .set(self.store.uncertified_bytes() as i64);
        self.metrics
            .recovery_backlog
            .set(self.recovery_backlog.load(Ordering::Relaxed) as i64);
        if let Some(c) = self.committee() {
            let at = Some((self.store.generation(), c.epoch));
            let mut last = self
                .shard_gauges_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if *last == at {
                return;
            }
            *last = at;
            // maintained per-shard counters of the store (slivers held, certified or not)
            let counts = self.store.shard_counts();
            let per_shard: std::collections::BTreeMap<usize, u64> = self
                .my_shards()
                .into_iter()
                .map(|s| (s as usize, counts.get(&s).copied().unwrap_or(0)))
                .collect();
            self.metrics.shard_slivers.reset();
            for (s, v) in per_shard {
                self.metrics
                    .shard_slivers
                    .with_label_values(&[&s.to_string()])
                    .set(v as f64);
            }
        }
    }
}

/// Equal committees up to the members' addresses.
fn trim_history(h: &mut BTreeMap<u32, Arc<Committee>>) {
    while h.len() > MAX_HISTORY {
        h.pop_first();
    }
}

fn same_but_addresses(a: &Committee, b: &Committee) -> bool {
    a.epoch == b.epoch
        && a.n_shards == b.n_shards
        && a.members.len() == b.members.len()
        && a.members
            .iter()
            .zip(&b.members)
            .all(|(x, y)| x.node_id == y.node_id && x.stake == y.stake && x.shards == y.shards)
}

/// The sync implied by installing `new` over `old`: shards this node gains from another member of
/// the outgoing committee, plus shards of an unfinished older sync that it still holds (their
/// source keeps them for one more epoch, PROTOCOL.md §6). A member that does not know the
/// outgoing committee (it joined or lost its disk) has no source: all its shards are to be
/// rebuilt. The first committee (epoch 1) has nothing to sync.
fn next_sync_plan(old: &Committees, new: &Committee, me: &NodeId) -> Option<SyncPlan> {
    let mine: BTreeMap<u16, ShardSync> = new
        .member(me)?
        .shards
        .iter()
        .map(|&s| {
            (
                s,
                ShardSync {
                    source: None,
                    after: None,
                    remaining: None,
                },
            )
        })
        .collect();
    let pending = match old.current.as_deref() {
        None if new.epoch <= 1 => return None,
        None => mine,
        Some(outgoing) => {
            let mut pending: BTreeMap<u16, ShardSync> = old
                .sync
                .iter()
                .flat_map(|p| p.pending.clone())
                .filter(|(s, _)| mine.contains_key(s))
                .collect();
            for (shard, source) in gained_shards(outgoing, new, me) {
                let address = outgoing
                    .member(&source)
                    .map(|m| m.address.clone())
                    .unwrap_or_default();
                pending.insert(
                    shard,
                    ShardSync {
                        source: Some((source, address)),
                        after: None,
                        remaining: None,
                    },
                );
            }
            pending
        }
    };
    Some(SyncPlan {
        epoch: new.epoch,
        pending,
        blobs_done: 0,
        fell_back: Vec::new(),
    })
}

/// What recovery has to do, found by reading the store only (status calls count it too, so it
/// never writes: a stalled store must not hold a status answer).
#[derive(Debug, Default)]
pub(super) struct MissingWork {
    /// Certified blobs with slivers this node owns and lacks.
    pub work: Vec<(BlobId, Vec<(u16, Axis)>)>,
    /// Pending blobs found complete (or no longer owed): only the recovery loop clears them.
    pub complete: Vec<BlobId>,
}

impl MissingWork {
    pub fn slivers(&self) -> usize {
        self.work.iter().map(|(_, w)| w.len()).sum()
    }
}

impl NodeState {
    /// What recovery has to do (see [`MissingWork`]).
    /// True when the node holds every sliver it owns of `id` and no shard is being synced:
    /// what a certificate arriving after the slivers finds in the common write.
    pub(super) fn holds_all_owned(&self, id: &BlobId) -> bool {
        let syncing = self.syncing_shards();
        if !syncing.is_empty() {
            return false;
        }
        let Some(entry) = self.store.entry_without_metadata(id) else {
            return false;
        };
        !entry.invalid && missing_of(&entry, self.owned_pairs_excluding(id, &syncing)).is_empty()
    }

    pub(super) fn missing_work(&self) -> MissingWork {
        let state = self;
        let mut work = Vec::new();
        let syncing = state.syncing_shards();
        let mut complete = Vec::new();
        let mut after = None;
        loop {
            let page = state.store.pending_page(after, 4096);
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            for id in page {
                let owned = state.owned_pairs_excluding(&id, &syncing);
                let Some(entry) = state.store.entry_without_metadata(&id) else {
                    complete.push(id);
                    continue;
                };
                if entry.invalid || entry.certified_epoch.is_none() {
                    complete.push(id);
                    continue;
                }
                let missing = missing_of(&entry, owned);
                if missing.is_empty() {
                    // shards being synced are not checked here: keep the blob until they are done
                    if syncing.is_empty() {
                        complete.push(id);
                    }
                } else {
                    work.push((id, missing));
                }
            }
        }
        MissingWork { work, complete }
    }
}

/// The slivers of `owned` pairs (both axes) that `entry` lacks.
fn missing_of(
    entry: &crate::store::BlobEntry,
    owned: impl IntoIterator<Item = u16>,
) -> Vec<(u16, Axis)> {
    let mut missing = Vec::new();
    for p in owned {
        for (axis, key) in [
            (Axis::Primary, crate::store::AxisKey::Primary),
            (Axis::Secondary, crate::store::AxisKey::Secondary),
        ] {
            if !entry.slivers.contains(&(p, key)) {
                missing.push((p, axis));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fixtures::{committee, id, key};
    use clap::Parser as _;

    fn pending(plan: &SyncPlan) -> Vec<(u16, Option<NodeId>)> {
        plan.pending
            .iter()
            .map(|(s, j)| (*s, j.source.as_ref().map(|(n, _)| *n)))
            .collect()
    }

    #[test]
    fn sync_plans_follow_the_committees() {
        let c1 = committee(1, &[(1, &[0, 1]), (2, &[2, 3])]);
        let c2 = committee(2, &[(1, &[0]), (2, &[2, 3]), (3, &[1])]);
        let c3 = committee(3, &[(2, &[2, 3]), (3, &[0, 1])]);
        let none = Committees::default();
        assert_eq!(
            next_sync_plan(&none, &c1, &id(1)),
            None,
            "the first committee syncs nothing"
        );
        let at1 = Committees {
            current: Some(Arc::new(c1.clone())),
            ..Default::default()
        };
        let p = next_sync_plan(&at1, &c2, &id(3)).unwrap();
        assert_eq!((p.epoch, pending(&p)), (2, vec![(1, Some(id(1)))]));
        assert!(
            next_sync_plan(&at1, &c2, &id(1))
                .unwrap()
                .pending
                .is_empty(),
            "losing a shard syncs nothing"
        );
        assert_eq!(next_sync_plan(&at1, &c2, &id(9)), None, "not a member");
        // epoch 3 while shard 1 is still being pulled from node 1: it is kept, shard 0 is added
        let at2 = Committees {
            current: Some(Arc::new(c2.clone())),
            previous: at1.current.clone(),
            sync: Some(p),
            ..Default::default()
        };
        assert_eq!(
            pending(&next_sync_plan(&at2, &c3, &id(3)).unwrap()),
            vec![(0, Some(id(1))), (1, Some(id(1)))]
        );
        // a member that does not know the outgoing committee rebuilds all its shards
        assert_eq!(
            pending(&next_sync_plan(&none, &c3, &id(3)).unwrap()),
            vec![(0, None), (1, None)]
        );
    }

    /// A node's configuration with its data in `dir`, everything else default.
    fn config_in(dir: &std::path::Path) -> NodeConfig {
        super::super::config::Args::try_parse_from([
            "floe-node",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .unwrap()
        .resolve()
        .unwrap()
    }

    #[test]
    fn past_committees_are_kept_and_release_held_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let state = NodeState::open(config.clone(), key(1)).unwrap();
        state
            .set_committee(committee(3, &[(1, &[0, 1]), (2, &[2, 3])]))
            .unwrap();
        let cert = |epoch, b: u8| Certificate {
            epoch,
            blob_id: BlobId([b; 32]),
            signers: vec![],
        };
        assert!(state.hold_certificate(id(2), cert(1, 1)));
        assert!(
            state.take_verifiable_held().is_empty(),
            "epoch 1 unknown yet"
        );
        // a past committee is kept for its certificates; the current one does not change
        let c1 = committee(1, &[(1, &[0, 1, 2, 3])]);
        state.set_committee(c1.clone()).unwrap();
        assert_eq!(state.committee().unwrap().epoch, 3);
        assert_eq!(state.committee_of(1).as_deref(), Some(&c1));
        assert!(matches!(
            state.set_committee(committee(1, &[(2, &[0, 1, 2, 3])])),
            Err(CommitteeUpdateError::Conflict(1))
        ));
        let released = state.take_verifiable_held();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].1.epoch, 1);
        // one peer fills only its own share
        for i in 0..(MAX_HELD_PER_PEER as u16 + 100) {
            let mut c = cert(100, 0);
            c.blob_id.0[..2].copy_from_slice(&i.to_le_bytes());
            state.hold_certificate(id(2), c);
        }
        assert!(
            !state.hold_certificate(id(2), cert(100, 9)),
            "its share is full"
        );
        assert!(
            state.hold_certificate(id(3), cert(100, 9)),
            "another peer still has room"
        );
        let held: usize = state
            .held_certs
            .lock()
            .unwrap()
            .values()
            .map(|m| m.len())
            .sum();
        assert_eq!(held, MAX_HELD_PER_PEER + 1);
        drop(state);
        let state = NodeState::open(config, key(1)).unwrap();
        assert_eq!(state.committee_of(1).as_deref(), Some(&c1), "persisted");
    }

    #[test]
    fn a_same_epoch_update_may_change_addresses_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let state = NodeState::open(config.clone(), key(3)).unwrap();
        let c1 = committee(1, &[(1, &[0, 1]), (3, &[2, 3])]);
        state.set_committee(c1.clone()).unwrap();
        let mut moved = c1.clone();
        moved.members[0].address = "10.0.0.9:7070".into();
        state.set_committee(moved.clone()).unwrap();
        let mut reshuffled = moved.clone();
        reshuffled.members[0].shards = vec![0];
        reshuffled.members[1].shards = vec![1, 2, 3];
        assert!(matches!(
            state.set_committee(reshuffled),
            Err(CommitteeUpdateError::Conflict(1))
        ));
        drop(state);
        let state = NodeState::open(config, key(3)).unwrap();
        assert_eq!(*state.committee().unwrap(), moved, "persisted");
        assert!(state.sync_plan().is_none());
    }

    #[test]
    fn sync_progress_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let state = NodeState::open(config.clone(), key(3)).unwrap();
        state
            .set_committee(committee(1, &[(1, &[0, 1]), (2, &[2, 3])]))
            .unwrap();
        state
            .set_committee(committee(2, &[(1, &[0]), (2, &[2]), (3, &[1, 3])]))
            .unwrap();
        assert_eq!(
            state.syncing_shards().into_iter().collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(state.status(), NodeStatus::Syncing);
        state
            .advance_sync(2, 1, Some(BlobId([5; 32])), 7, 3)
            .unwrap();
        state.finish_shard_sync(2, 3, true).unwrap();
        state
            .advance_sync(1, 1, Some(BlobId([6; 32])), 1, 0)
            .unwrap(); // stale epoch: ignored
        drop(state);
        let state = NodeState::open(config, key(3)).unwrap();
        let plan = state.sync_plan().unwrap();
        assert_eq!(plan.epoch, 2);
        assert_eq!(plan.pending.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            (plan.pending[&1].after, plan.pending[&1].remaining),
            (Some([5; 32]), Some(3))
        );
        assert_eq!((plan.blobs_done, plan.fell_back.clone()), (7, vec![3]));
        assert_eq!(state.status(), NodeStatus::Syncing);
    }
}
