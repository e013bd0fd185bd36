//! The local body of the control plane, as the brain's task sees the testnet: the candidates
//! the supervisor's loop last published, the control file, and releases sent back to that loop
//! (which owns the processes). The brain's task never waits on the loop, nor the loop on it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use floe_node::protocol::NodeId;
use tokio::sync::{mpsc, watch};

use super::layout::{load_control, write_atomic, CONTROL_FILE};
use crate::control::brain::{BrainState, Candidate};
use crate::control::driver::{Body, BodyError, BodyErrorKind};

/// The body of the local testnet.
pub struct LocalBody {
    dir: PathBuf,
    candidates: watch::Receiver<Vec<Candidate>>,
    force: Arc<AtomicBool>,
    releases: mpsc::UnboundedSender<NodeId>,
    /// Released by the brain: not a candidate again, even before the loop has stopped it.
    released: BTreeSet<NodeId>,
}

impl LocalBody {
    pub fn new(
        dir: PathBuf,
        candidates: watch::Receiver<Vec<Candidate>>,
        force: Arc<AtomicBool>,
        releases: mpsc::UnboundedSender<NodeId>,
    ) -> Self {
        LocalBody {
            dir,
            candidates,
            force,
            releases,
            released: BTreeSet::new(),
        }
    }
}

impl Body for LocalBody {
    async fn candidates(&mut self) -> Result<Vec<Candidate>, BodyError> {
        Ok(self
            .candidates
            .borrow()
            .iter()
            .filter(|c| !self.released.contains(&c.node_id))
            .cloned()
            .collect())
    }

    async fn save(&mut self, state: &BrainState) -> Result<(), BodyError> {
        let stored = load_control(&self.dir)
            .map_err(|e| BodyError::new(BodyErrorKind::Load, e.to_string()))?;
        crate::control::brain::check_monotonic(stored.as_ref(), state)
            .map_err(BodyError::regression)?;
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| BodyError::new(BodyErrorKind::Save, e.to_string()))?;
        write_atomic(&self.dir, CONTROL_FILE, &bytes).map_err(|e| {
            BodyError::new(
                BodyErrorKind::Save,
                format!("writing the control state: {e}"),
            )
        })
    }

    async fn release(&mut self, node: &NodeId, name: &str) -> Result<(), BodyError> {
        self.released.insert(*node);
        tracing::info!(node = name, "member drained; the supervisor stops it");
        self.releases
            .send(*node)
            .map_err(|_| BodyError::new(BodyErrorKind::Nodes, "the supervisor's loop has stopped"))
    }

    fn take_force_change(&mut self) -> bool {
        self.force.swap(false, Ordering::SeqCst)
    }
}
