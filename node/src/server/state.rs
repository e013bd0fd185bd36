//! What a running node knows: identity, store, committees, metrics, switches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::config::NodeConfig;
use super::metrics::Metrics;
use crate::codec::BlobId;
use crate::proto::NodeStatus;
use crate::protocol::{Committee, NodeId};
use crate::store::file::{read_checked, write_atomic};
use crate::store::{BlobStore, StoreError};

const COMMITTEE_FILE: &str = "committee";

/// The committees a node keeps: the current one and the one before it (still a sync source and
/// still the committee that certified recent blobs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Committees {
    current: Option<Arc<Committee>>,
    previous: Option<Arc<Committee>>,
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
    pub recovery_backlog: AtomicU64,
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
        let store = BlobStore::open(&config.data_dir, config.max_storage)?;
        let committees: Committees = match read_checked(&config.data_dir.join(COMMITTEE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Undecodable(e.to_string()))?,
            Err(crate::store::file::FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Committees::default(),
            Err(e) => return Err(e.into()),
        };
        for c in [&committees.current, &committees.previous].into_iter().flatten() {
            c.validate().map_err(|e| StoreError::Undecodable(format!("stored committee {}: {e}", c.epoch)))?;
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
            recovery_backlog: AtomicU64::new(0),
        };
        state.metrics.epoch.set(state.committee().map_or(0, |c| c.epoch as i64));
        Ok(state)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Committees> {
        self.committees.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn committee(&self) -> Option<Arc<Committee>> {
        self.read().current.clone()
    }

    /// The committee of `epoch`, if this node still knows it.
    pub fn committee_of(&self, epoch: u32) -> Option<Arc<Committee>> {
        let c = self.read();
        [c.current.clone(), c.previous.clone()].into_iter().flatten().find(|c| c.epoch == epoch)
    }

    /// Install a (validated) committee and persist it before acknowledging.
    pub fn set_committee(&self, new: Committee) -> Result<(), CommitteeUpdateError> {
        let mut guard = self.committees.write().unwrap_or_else(|p| p.into_inner());
        if let Some(cur) = &guard.current {
            if new.epoch < cur.epoch {
                return Err(CommitteeUpdateError::Stale { got: new.epoch, current: cur.epoch });
            }
            if new.epoch == cur.epoch {
                return if **cur == new { Ok(()) } else { Err(CommitteeUpdateError::Conflict(new.epoch)) };
            }
            if cur.n_shards != new.n_shards {
                return Err(CommitteeUpdateError::ShardCount { got: new.n_shards, expected: cur.n_shards });
            }
        }
        let mut next = guard.clone();
        next.previous = next.current.take();
        next.current = Some(Arc::new(new));
        let bytes = serde_json::to_vec_pretty(&next).expect("committees serialise");
        write_atomic(&self.config.data_dir, COMMITTEE_FILE, &bytes).map_err(StoreError::from)?;
        *guard = next;
        drop(guard);
        self.metrics.epoch.set(self.committee().map_or(0, |c| c.epoch as i64));
        self.recovery_wakeup.notify_one();
        Ok(())
    }

    /// Shards this node holds in the current committee.
    pub fn my_shards(&self) -> Vec<u16> {
        self.committee().and_then(|c| c.member(&self.node_id).map(|m| m.shards.clone())).unwrap_or_default()
    }

    /// Sliver pairs of `blob` that this node's shards own in the current committee.
    pub fn owned_pairs(&self, blob: &BlobId) -> Vec<u16> {
        let Some(c) = self.committee() else { return Vec::new() };
        let Some(me) = c.member(&self.node_id) else { return Vec::new() };
        let p = c.params();
        let rot = blob.mod_n(p.n());
        me.shards.iter().map(|s| p.pair_for_shard(*s as usize, rot) as u16).collect()
    }

    pub fn status(&self) -> NodeStatus {
        match self.committee() {
            Some(c) if c.member(&self.node_id).is_some() => {
                if self.recovery_backlog.load(Ordering::Relaxed) > 0 {
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
        self.metrics.stored_bytes.set(self.store.used_bytes() as i64);
        self.metrics.blobs.set(self.store.blob_count() as i64);
        self.metrics.recovery_backlog.set(self.recovery_backlog.load(Ordering::Relaxed) as i64);
        if let Some(c) = self.committee() {
            let n = c.n_shards as usize;
            let mine = self.my_shards();
            let mut per_shard = std::collections::BTreeMap::new();
            for s in &mine {
                per_shard.insert(*s as usize, 0u64);
            }
            for (id, _) in self.store.certified() {
                if let Some(e) = self.store.entry(&id) {
                    let rot = id.mod_n(n);
                    for (pair, _) in &e.slivers {
                        let shard = (*pair as usize + rot) % n;
                        if let Some(v) = per_shard.get_mut(&shard) {
                            *v += 1;
                        }
                    }
                }
            }
            self.metrics.shard_slivers.reset();
            for (s, v) in per_shard {
                self.metrics.shard_slivers.with_label_values(&[&s.to_string()]).set(v as f64);
            }
        }
    }
}
