//! The testnet's directory: what each file holds, read and written atomically.
//!
//! Everything lives under one directory:
//! ```text
//! DIR/testnet.json        written by the supervisor (nodes, ports, pids, stakes, metrics address)
//! DIR/control.json        the brain's persisted state (epoch, committees, challenges, ledger)
//! DIR/requests/*.json     membership requests from the CLI, applied by the supervisor in order
//! DIR/supervisor.pid|log  the supervisor process
//! DIR/admin.token         admin bearer token shared by the nodes (0600)
//! DIR/nodeI/data          node I's data directory;  DIR/nodeI/node.key its identity
//! DIR/nodeI/log           its output;  DIR/nodeI/stopped  present = keep it down
//! ```
//! The CLI never talks to the supervisor directly: it reads the state files, drops requests and
//! `stopped` markers, and signals processes; the supervisor converges every 500 ms.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use floe_node::protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::control::brain::{BrainState, Settings};
use crate::control::challenge::default_sample_size;

pub const STATE_FILE: &str = "testnet.json";
pub const CONTROL_FILE: &str = "control.json";
pub(crate) const REQUESTS_DIR: &str = "requests";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub grpc: String,
    pub http: String,
    /// The node's admin API listener (`--admin-addr`); empty in testnets created before it
    /// existed (the admin API then shares the gRPC port).
    #[serde(default)]
    pub admin: String,
    /// Serves gRPC over TLS (`--tls`; off in testnets created before it existed).
    #[serde(default)]
    pub tls: bool,
    pub dir: PathBuf,
    pub node_id: Option<NodeId>,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Test-only fault switched on in this node (`floe-node --fault`).
    pub fault: Option<String>,
    /// This node's price votes (storage per epoch, write), when not the node's defaults.
    #[serde(default)]
    pub price_vote: Option<(u64, u64)>,
    #[serde(default = "one")]
    pub stake: u64,
    /// Asked to leave: it gets no shards from the next epoch on.
    #[serde(default)]
    pub leaving: bool,
    /// Left the committee and the change completed: its process is stopped for good.
    #[serde(default)]
    pub released: bool,
}

fn one() -> u64 {
    1
}

impl NodeEntry {
    /// The address members and clients use: `https://` when the node serves TLS.
    pub fn address(&self) -> String {
        if self.tls {
            format!("https://{}", self.grpc)
        } else {
            self.grpc.clone()
        }
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub(crate) fn stop_marker(&self) -> PathBuf {
        self.dir.join("stopped")
    }
    pub fn wants_stopped(&self) -> bool {
        self.released || self.stop_marker().exists()
    }
}

/// Settings of the testnet's control plane (`floe testnet up` options).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlOptions {
    pub epoch_seconds: u64,
    pub challenge_samples: usize,
    pub challenge_timeout_seconds: u64,
    pub reward_per_epoch: u64,
    /// A node unreachable this long loses its shards at the next epoch.
    pub unreachable_after_seconds: u64,
    /// An epoch change not complete after this long is reported stuck.
    #[serde(default)]
    pub stuck_after_seconds: Option<u64>,
    /// The furthest a blob's lifetime may end beyond the current epoch (docs/economics.md).
    #[serde(default = "default_max_epochs_ahead")]
    pub max_epochs_ahead: u32,
    /// Units `floe testnet faucet` grants (the CLI's default account is funded with it).
    #[serde(default = "default_faucet_grant")]
    pub faucet_grant: u64,
}

/// Walrus's limit: about two years of two-week epochs.
pub const DEFAULT_MAX_EPOCHS_AHEAD: u32 = 53;
/// Enough for ~10⁴ puts of a 32 MiB file at the default prices.
pub const DEFAULT_FAUCET_GRANT: u64 = 1_000_000_000;

fn default_max_epochs_ahead() -> u32 {
    DEFAULT_MAX_EPOCHS_AHEAD
}
fn default_faucet_grant() -> u64 {
    DEFAULT_FAUCET_GRANT
}

impl ControlOptions {
    pub fn new(epoch: Duration) -> Self {
        Self {
            epoch_seconds: epoch.as_secs().max(1),
            challenge_samples: default_sample_size(),
            challenge_timeout_seconds: 30,
            reward_per_epoch: 1_000_000,
            unreachable_after_seconds: (2 * epoch.as_secs()).max(10),
            stuck_after_seconds: None,
            max_epochs_ahead: DEFAULT_MAX_EPOCHS_AHEAD,
            faucet_grant: DEFAULT_FAUCET_GRANT,
        }
    }
    pub(crate) fn settings(&self, n_shards: u16, nodes: usize) -> Settings {
        let epoch_ms = self.epoch_seconds * 1000;
        Settings {
            n_shards,
            epoch_ms,
            unreachable_after_ms: self.unreachable_after_seconds * 1000,
            reward_per_epoch: self.reward_per_epoch,
            stuck_after_ms: self
                .stuck_after_seconds
                .map_or((epoch_ms / 4).clamp(5000, 300_000), |s| s * 1000),
            genesis_members: nodes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestnetState {
    pub dir: PathBuf,
    pub n_shards: u16,
    pub epoch_seconds: u64,
    pub supervisor_pid: u32,
    pub node_bin: PathBuf,
    pub nodes: Vec<NodeEntry>,
    /// Set once every node is up and holds the first committee.
    pub ready: bool,
    /// Where the supervisor serves the control plane's `/metrics`.
    #[serde(default)]
    pub metrics: Option<String>,
    #[serde(default)]
    pub control: Option<ControlOptions>,
    /// The HTTP gateway's URL (`http://127.0.0.1:PORT`), once it runs.
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub gateway_pid: Option<u32>,
    /// Where the supervisor serves the control plane's client API (`floe.v1.Control`:
    /// accounts, registrations; docs/economics.md).
    #[serde(default)]
    pub control_api: Option<String>,
}

pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

impl TestnetState {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "no testnet at {} (start one with `floe testnet up`)",
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        write_atomic(&self.dir, STATE_FILE, &serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
    /// Addresses of every node that is not gone for good.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !n.released)
            .map(NodeEntry::address)
            .collect()
    }
    pub fn admin_token(&self) -> anyhow::Result<String> {
        Ok(fs::read_to_string(self.dir.join("admin.token"))?
            .trim()
            .to_string())
    }
    /// Node by name (`node3`) or index (`3`).
    pub fn node(&self, which: &str) -> anyhow::Result<&NodeEntry> {
        let name = node_name(which);
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {which:?} in this testnet"))
    }
    /// The brain's state, if the supervisor has written one.
    pub fn control(&self) -> anyhow::Result<Option<BrainState>> {
        load_control(&self.dir)
    }
}

pub(crate) fn node_name(which: &str) -> String {
    if which.chars().all(|c| c.is_ascii_digit()) {
        format!("node{which}")
    } else {
        which.to_string()
    }
}

pub fn load_control(dir: &Path) -> anyhow::Result<Option<BrainState>> {
    match fs::read(dir.join(CONTROL_FILE)) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).context("reading the control state")?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A membership request from the CLI, applied by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    AddNode { stake: u64 },
    RemoveNode { node: String },
    SetStake { node: String, stake: u64 },
    NextEpoch,
}

/// Queue a request for the supervisor (atomically; applied in the order written).
pub fn send_request(dir: &Path, req: &Request) -> anyhow::Result<()> {
    let rdir = dir.join(REQUESTS_DIR);
    fs::create_dir_all(&rdir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    write_atomic(
        &rdir,
        &format!("{stamp:024}-{}.json", std::process::id()),
        &serde_json::to_vec(req)?,
    )?;
    Ok(())
}

/// Options of `floe testnet up`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub nodes: usize,
    pub shards: u16,
    pub node_bin: PathBuf,
    /// (node index, fault name)
    pub faults: Vec<(usize, String)>,
    /// (node index, storage price vote, write price vote)
    #[serde(default)]
    pub price_votes: Vec<(usize, u64, u64)>,
    pub control: ControlOptions,
}
