//! A testnet of real `floe-node` processes on 127.0.0.1, kept alive by a supervisor process
//! that runs the control plane's brain (epochs, committees, challenges, rewards) against them.
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
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use floe_node::client::NodeClient;
use floe_node::protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::control::brain::{Brain, BrainState, Candidate, Intent, Settings};
use crate::control::challenge::default_sample_size;
use crate::control::driver::{Body, BodyError, ChallengeSettings, Driver, Members};
use crate::control::metrics::ControlMetrics;

pub const STATE_FILE: &str = "testnet.json";
pub const CONTROL_FILE: &str = "control.json";
const REQUESTS_DIR: &str = "requests";

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
    fn stop_marker(&self) -> PathBuf {
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
        }
    }
    fn settings(&self, n_shards: u16, nodes: usize) -> Settings {
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
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
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
    fn save(&self) -> anyhow::Result<()> {
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

fn node_name(which: &str) -> String {
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
    pub control: ControlOptions,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True while a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Find `floe-node`: explicit path, `$FLOE_NODE_BIN`, next to this executable, or on PATH.
pub fn find_node_bin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("FLOE_NODE_BIN").map(PathBuf::from)) {
        return Ok(p);
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("floe-node")))
    {
        if beside.exists() {
            return Ok(beside);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("floe-node").exists() {
            return Ok(dir.join("floe-node"));
        }
    }
    bail!("floe-node not found: build it (cargo build --release -p floe-node) or pass --node-bin")
}

/// A node process: started by this supervisor, or found running from an earlier one (a
/// supervisor killed with -9 leaves its nodes running; the next one adopts them).
enum Proc {
    Child(Child),
    Adopted(u32),
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted(p) => *p,
        }
    }
    fn exited(&mut self) -> bool {
        match self {
            Proc::Child(c) => c.try_wait().ok().flatten().is_some(),
            Proc::Adopted(p) => !alive(*p),
        }
    }
}

/// The body of the local testnet: its processes, its files.
pub struct LocalBody {
    state: TestnetState,
    procs: Vec<Option<Proc>>,
    force_change: bool,
    dirty: bool,
}

impl Body for LocalBody {
    async fn candidates(&mut self) -> Result<Vec<Candidate>, BodyError> {
        Ok(self
            .state
            .nodes
            .iter()
            .filter(|n| !n.released)
            .filter_map(|n| {
                n.node_id.map(|id| Candidate {
                    node_id: id,
                    name: n.name.clone(),
                    address: n.address(),
                    stake: n.stake,
                    intent: if n.leaving {
                        Intent::Leaving
                    } else {
                        Intent::Active
                    },
                })
            })
            .collect())
    }

    async fn save(&mut self, state: &BrainState) -> Result<(), BodyError> {
        let stored = load_control(&self.state.dir).map_err(|e| BodyError(e.to_string()))?;
        crate::control::brain::check_monotonic(stored.as_ref(), state)
            .map_err(|e| BodyError(e.to_string()))?;
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| BodyError(e.to_string()))?;
        write_atomic(&self.state.dir, CONTROL_FILE, &bytes)
            .map_err(|e| BodyError(format!("writing the control state: {e}")))
    }

    async fn release(&mut self, node: &NodeId, name: &str) -> Result<(), BodyError> {
        let Some(i) = self
            .state
            .nodes
            .iter()
            .position(|n| n.node_id == Some(*node))
        else {
            return Ok(());
        };
        self.state.nodes[i].released = true;
        if let Some(p) = self.procs[i].take() {
            signal(p.pid(), "TERM");
        }
        self.state.nodes[i].pid = None;
        self.dirty = true;
        tracing::info!(node = name, "released: process stopped, data kept");
        Ok(())
    }

    fn take_force_change(&mut self) -> bool {
        std::mem::take(&mut self.force_change)
    }
}

impl LocalBody {
    fn new_entry(&self, i: usize, stake: u64) -> anyhow::Result<NodeEntry> {
        let name = format!("node{i}");
        let dir = self.state.dir.join(&name);
        fs::create_dir_all(&dir)?;
        let _ = fs::remove_file(dir.join("stopped"));
        Ok(NodeEntry {
            name,
            grpc: format!("127.0.0.1:{}", free_port()?),
            http: format!("127.0.0.1:{}", free_port()?),
            admin: format!("127.0.0.1:{}", free_port()?),
            tls: true,
            dir,
            node_id: None,
            pid: None,
            restarts: 0,
            fault: None,
            stake,
            leaving: false,
            released: false,
        })
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.state.nodes[i];
        fs::create_dir_all(n.data_dir())?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("log"))?;
        let mut cmd = Command::new(&self.state.node_bin);
        cmd.arg("--data-dir")
            .arg(n.data_dir())
            .arg("--key-file")
            .arg(n.dir.join("node.key"))
            .args(["--grpc-addr", &n.grpc, "--http-addr", &n.http])
            .args(if n.admin.is_empty() {
                vec![]
            } else {
                vec!["--admin-addr", n.admin.as_str()]
            })
            .args(if n.tls { &["--tls"][..] } else { &[][..] })
            .arg("--admin-token-file")
            .arg(self.state.dir.join("admin.token"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if let Some(f) = &n.fault {
            cmd.args(["--fault", f]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.state.node_bin.display()))?;
        self.state.nodes[i].pid = Some(child.id());
        self.procs[i] = Some(Proc::Child(child));
        self.dirty = true;
        Ok(())
    }

    /// A node process of an earlier supervisor still running with this node's data directory.
    fn adopt(&mut self, i: usize) -> bool {
        let n = &self.state.nodes[i];
        let Some(pid) = n.pid.filter(|p| alive(*p)) else {
            return false;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let data = n.data_dir();
        let ours = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| Path::new(a) == data);
        if ours {
            self.procs[i] = Some(Proc::Adopted(pid));
        }
        ours
    }

    async fn wait_healthy(&mut self, i: usize, timeout: Duration) -> anyhow::Result<NodeId> {
        let n = self.state.nodes[i].clone();
        let client = NodeClient::new(&n.address(), 16 << 20)?;
        let deadline = Instant::now() + timeout;
        loop {
            match client.info().await {
                Ok(info) => return Ok(NodeId::try_from(info.node_id.as_slice())?),
                Err(e)
                    if Instant::now() > deadline
                        || self.procs[i].as_mut().is_some_and(|p| p.exited()) =>
                {
                    bail!(
                        "{} did not come up: {e}; see {}",
                        n.name,
                        n.dir.join("log").display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A node that never came up and found one of its ports taken (free ports are picked
    /// before the node binds them; a parallel process can take one first) gets fresh ports.
    fn reassign_ports_if_taken(&mut self, i: usize) -> anyhow::Result<bool> {
        let n = &self.state.nodes[i];
        let log = fs::read_to_string(n.dir.join("log")).unwrap_or_default();
        if n.node_id.is_some() || !log.contains("Address already in use") {
            return Ok(false);
        }
        let _ = fs::write(n.dir.join("log"), "");
        let n = &mut self.state.nodes[i];
        n.grpc = format!("127.0.0.1:{}", free_port()?);
        n.http = format!("127.0.0.1:{}", free_port()?);
        if !n.admin.is_empty() {
            n.admin = format!("127.0.0.1:{}", free_port()?);
        }
        self.dirty = true;
        Ok(true)
    }

    /// Start (or adopt) node `i` and learn its identity.
    async fn bring_up(&mut self, i: usize) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            if !self.adopt(i) {
                self.spawn(i)?;
            }
            match self.wait_healthy(i, Duration::from_secs(30)).await {
                Ok(id) => {
                    self.state.nodes[i].node_id = Some(id);
                    self.dirty = true;
                    return Ok(());
                }
                Err(e) => {
                    attempt += 1;
                    if attempt >= 3 || !self.reassign_ports_if_taken(i)? {
                        return Err(e);
                    }
                    tracing::warn!(node = %self.state.nodes[i].name, "a port was taken; retrying on fresh ports");
                }
            }
        }
    }

    /// Restart crashed nodes (unless marked stopped), forget stopped ones.
    async fn converge(&mut self) -> anyhow::Result<()> {
        for i in 0..self.state.nodes.len() {
            let exited = self.procs[i].as_mut().is_none_or(|p| p.exited());
            let stopped = self.state.nodes[i].wants_stopped();
            if exited && !stopped {
                if self.procs[i].is_some() {
                    tracing::warn!(node = %self.state.nodes[i].name, "node exited; restarting it");
                    self.state.nodes[i].restarts += 1;
                }
                self.spawn(i)?;
                let id = self.wait_healthy(i, Duration::from_secs(30)).await?;
                self.state.nodes[i].node_id = Some(id);
            } else if exited
                && (self.procs[i].take().is_some() || self.state.nodes[i].pid.is_some())
            {
                self.state.nodes[i].pid = None;
                self.dirty = true;
            }
        }
        Ok(())
    }

    /// Apply the CLI's queued requests, oldest first.
    async fn apply_requests(&mut self) -> anyhow::Result<()> {
        let rdir = self.state.dir.join(REQUESTS_DIR);
        let Ok(rd) = fs::read_dir(&rdir) else {
            return Ok(());
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let req: Result<Request, _> = fs::read(&f)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice(&b).map_err(Into::into));
            match req {
                Ok(r) => {
                    if let Err(e) = self.apply(&r).await {
                        tracing::warn!(request = ?r, error = %e, "request refused");
                    } else {
                        tracing::info!(request = ?r, "request applied");
                    }
                }
                Err(e) => tracing::warn!(file = %f.display(), error = %e, "unreadable request"),
            }
            let _ = fs::remove_file(&f);
        }
        Ok(())
    }

    async fn apply(&mut self, r: &Request) -> anyhow::Result<()> {
        match r {
            Request::AddNode { stake } => {
                let next = self
                    .state
                    .nodes
                    .iter()
                    .filter_map(|n| n.name.strip_prefix("node")?.parse::<usize>().ok())
                    .max()
                    .map_or(0, |m| m + 1);
                let entry = self.new_entry(next, *stake)?;
                self.state.nodes.push(entry);
                self.procs.push(None);
                let i = self.state.nodes.len() - 1;
                self.bring_up(i).await?;
            }
            Request::RemoveNode { node } => {
                let i = self.index(node)?;
                self.state.nodes[i].leaving = true;
            }
            Request::SetStake { node, stake } => {
                let i = self.index(node)?;
                self.state.nodes[i].stake = *stake;
            }
            Request::NextEpoch => self.force_change = true,
        }
        self.dirty = true;
        Ok(())
    }

    fn index(&self, which: &str) -> anyhow::Result<usize> {
        let name = node_name(which);
        self.state
            .nodes
            .iter()
            .position(|n| n.name == name && !n.released)
            .with_context(|| format!("no node {which:?} in this testnet"))
    }

    fn save_state(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            self.state.save()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        tracing::info!("stopping nodes");
        for p in self.procs.iter().flatten() {
            signal(p.pid(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in self.procs.iter_mut().flatten() {
            while Instant::now() < deadline && !p.exited() {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !p.exited() {
                signal(p.pid(), "KILL");
            }
            if let Proc::Child(c) = p {
                let _ = c.wait();
            }
        }
        for n in &mut self.state.nodes {
            n.pid = None;
        }
        self.state.ready = false;
        let _ = self.state.save();
        let _ = fs::remove_file(self.state.dir.join("supervisor.pid"));
    }
}

/// The supervisor: nodes as processes, the brain driving them.
pub struct Supervisor {
    driver: Driver<LocalBody>,
}

impl Supervisor {
    /// Set up the directory, or resume the testnet already in it. A different shard count is
    /// refused (shards are fixed at creation); a different node count becomes a membership change
    /// at the next epoch (more: new nodes join; fewer: the highest-numbered nodes leave, drained).
    pub fn create(opts: &UpOptions) -> anyhow::Result<Self> {
        if opts.nodes == 0 || opts.nodes > opts.shards as usize {
            bail!("--nodes must be between 1 and --shards ({})", opts.shards);
        }
        floe_node::codec::EncodingParams::new(opts.shards as usize)?;
        fs::create_dir_all(&opts.dir)?;
        let dir = fs::canonicalize(&opts.dir)?;
        let token_file = dir.join("admin.token");
        if token_file.exists() {
            // a token written by an older version may be readable by others
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600))?;
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            let mut t = [0u8; 24];
            getrandom::fill(&mut t).map_err(|e| anyhow::anyhow!("random token: {e}"))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&token_file)?;
            f.write_all(hex::encode(t).as_bytes())?;
        }
        let previous = TestnetState::load(&dir).ok();
        if let Some(p) = &previous {
            if p.n_shards != opts.shards {
                bail!(
                    "the testnet in {} has {} shards; shards are fixed when a network is created. \
                     Use --shards {} (or another --dir for a new network)",
                    dir.display(),
                    p.n_shards,
                    p.n_shards
                );
            }
        }
        let state = TestnetState {
            dir: dir.clone(),
            n_shards: opts.shards,
            epoch_seconds: opts.control.epoch_seconds,
            supervisor_pid: std::process::id(),
            node_bin: opts.node_bin.clone(),
            nodes: previous
                .as_ref()
                .map(|p| p.nodes.clone())
                .unwrap_or_default(),
            ready: false,
            metrics: previous.as_ref().and_then(|p| p.metrics.clone()),
            control: Some(opts.control.clone()),
        };
        let mut body = LocalBody {
            procs: (0..state.nodes.len()).map(|_| None).collect(),
            state,
            force_change: false,
            dirty: true,
        };
        // `up` brings every node of the network back, also those a user stopped
        for n in body.state.nodes.iter().filter(|n| !n.released) {
            let _ = fs::remove_file(n.stop_marker());
        }
        // the requested node count: add nodes, or mark the highest-numbered ones leaving
        let active: Vec<usize> = (0..body.state.nodes.len())
            .filter(|&i| !body.state.nodes[i].released && !body.state.nodes[i].leaving)
            .collect();
        if active.len() < opts.nodes {
            let start = body.state.nodes.len();
            for i in start..start + (opts.nodes - active.len()) {
                let e = body.new_entry(i, 1)?;
                body.state.nodes.push(e);
                body.procs.push(None);
            }
        } else {
            for &i in active.iter().skip(opts.nodes) {
                body.state.nodes[i].leaving = true;
            }
        }
        for (i, f) in &opts.faults {
            if let Some(n) = body.state.nodes.get_mut(*i) {
                n.fault = Some(f.clone());
            }
        }
        let stored = load_control(&dir)?;
        let brain_state = stored.unwrap_or_else(|| BrainState::new(opts.shards));
        let brain = Brain::new(brain_state, opts.control.settings(opts.shards, opts.nodes))?;
        let members = Members::new(&body.state.admin_token()?);
        let challenges = ChallengeSettings {
            samples: opts.control.challenge_samples,
            timeout: Duration::from_secs(opts.control.challenge_timeout_seconds),
        };
        Ok(Self {
            driver: Driver::new(brain, body, members, challenges, ControlMetrics::new()),
        })
    }

    async fn serve_metrics(&mut self) -> anyhow::Result<()> {
        let wanted = self.driver.body.state.metrics.clone();
        let listener = match wanted.as_deref().map(tokio::net::TcpListener::bind) {
            Some(f) => match f.await {
                Ok(l) => l,
                Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            },
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        self.driver.body.state.metrics = Some(listener.local_addr()?.to_string());
        let metrics = self.driver.metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(())
    }

    /// Start everything, run the brain until every node holds the first committee, then keep
    /// supervising until SIGTERM/SIGINT.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let dir = self.driver.body.state.dir.clone();
        fs::write(dir.join("supervisor.pid"), std::process::id().to_string())?;
        self.serve_metrics().await?;
        for i in 0..self.driver.body.state.nodes.len() {
            if !self.driver.body.state.nodes[i].wants_stopped() {
                self.driver.body.bring_up(i).await?;
            }
        }
        self.driver.body.save_state()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "supervision round failed");
            }
            if !self.driver.body.state.ready && self.first_committee_everywhere().await {
                self.driver.body.state.ready = true;
                self.driver.body.dirty = true;
                self.driver.body.save_state()?;
                tracing::info!(
                    nodes = self.driver.body.state.nodes.len(),
                    shards = self.driver.body.state.n_shards,
                    epoch = self.driver.brain.state.epoch,
                    "testnet up"
                );
            }
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        self.driver.body.shutdown();
        Ok(())
    }

    async fn round(&mut self) -> anyhow::Result<()> {
        self.driver.body.converge().await?;
        self.driver.body.apply_requests().await?;
        self.driver.round().await?;
        self.driver.body.save_state()?;
        Ok(())
    }

    /// Every running member holds at least the brain's epoch (so `up` returns a usable network).
    async fn first_committee_everywhere(&self) -> bool {
        let s = &self.driver.brain.state;
        let Some(c) = &s.committee else {
            return false;
        };
        for m in &c.members {
            let Some(r) = s.members.get(&m.node_id) else {
                return false;
            };
            let Ok(client) = NodeClient::new(&r.address, 16 << 20) else {
                return false;
            };
            if !client.info().await.is_ok_and(|i| i.epoch >= c.epoch) {
                return false;
            }
        }
        true
    }
}

/// Wait until the supervisor in `dir` reports the testnet ready.
pub fn wait_ready(
    dir: &Path,
    supervisor_pid: u32,
    timeout: Duration,
) -> anyhow::Result<TestnetState> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = TestnetState::load(dir) {
            if s.ready && s.supervisor_pid == supervisor_pid {
                return Ok(s);
            }
        }
        if !alive(supervisor_pid) {
            let log = fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "the testnet supervisor exited:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "testnet not ready after {timeout:?}; see {}",
                dir.join("supervisor.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop node `which` with SIGKILL and keep it down.
pub fn kill_node(state: &TestnetState, which: &str) -> anyhow::Result<()> {
    let n = state.node(which)?;
    fs::write(n.stop_marker(), b"")?;
    // the supervisor may restart it between reads: read the current pid from the state file
    if let Some(pid) = TestnetState::load(&state.dir)?.node(which)?.pid {
        signal(pid, "KILL");
    }
    Ok(())
}

/// Let the supervisor start node `which` again (optionally with an empty data directory).
pub fn restart_node(state: &TestnetState, which: &str, wipe: bool) -> anyhow::Result<()> {
    let n = state.node(which)?;
    if n.released {
        bail!("{which} left the network; add a new node with `floe testnet add-node`");
    }
    fs::write(n.stop_marker(), b"")?;
    if let Some(pid) = TestnetState::load(&state.dir)?.node(which)?.pid {
        signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if wipe {
        let d = n.data_dir();
        if d.exists() {
            fs::remove_dir_all(&d).with_context(|| format!("wiping {}", d.display()))?;
        }
    }
    fs::remove_file(n.stop_marker())?;
    Ok(())
}

/// Stop the supervisor (which stops the nodes) and wait for it. Nodes left running by a
/// supervisor that was killed are stopped too.
pub fn down(dir: &Path, timeout: Duration) -> anyhow::Result<bool> {
    let Ok(pid) = fs::read_to_string(dir.join("supervisor.pid")) else {
        return Ok(false);
    };
    let pid: u32 = pid.trim().parse()?;
    if !alive(pid) {
        let mut stopped = false;
        if let Ok(s) = TestnetState::load(dir) {
            for n in s.nodes.iter().filter(|n| !n.released) {
                if let Some(p) = n.pid.filter(|p| alive(*p)) {
                    signal(p, "TERM");
                    stopped = true;
                }
            }
        }
        let _ = fs::remove_file(dir.join("supervisor.pid"));
        return Ok(stopped);
    }
    signal(pid, "TERM");
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            signal(pid, "KILL");
            bail!("supervisor {pid} did not stop in {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(true)
}
