//! A testnet of real `floe-node` processes on 127.0.0.1, kept alive by a supervisor process.
//!
//! Everything lives under one directory:
//! ```text
//! DIR/testnet.json        state written by the supervisor (nodes, ports, pids, committee)
//! DIR/supervisor.pid|log  the supervisor process
//! DIR/admin.token         admin bearer token shared by the nodes
//! DIR/nodeI/data          node I's data directory;  DIR/nodeI/node.key its identity
//! DIR/nodeI/log           its output;  DIR/nodeI/stopped  present = keep it down
//! ```
//! The CLI never talks to the supervisor directly: it reads `testnet.json`, drops or removes
//! `stopped` markers and signals processes; the supervisor converges every 500 ms.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use floe_node::client::NodeClient;
use floe_node::protocol::{Committee, NodeId};
use serde::{Deserialize, Serialize};

use crate::control::committee::{initial_committee, Candidate};

pub const STATE_FILE: &str = "testnet.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub grpc: String,
    pub http: String,
    pub dir: PathBuf,
    pub node_id: Option<NodeId>,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Test-only fault switched on in this node (`floe-node --fault`).
    pub fault: Option<String>,
}

impl NodeEntry {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn stop_marker(&self) -> PathBuf {
        self.dir.join("stopped")
    }
    pub fn wants_stopped(&self) -> bool {
        self.stop_marker().exists()
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
    pub committee: Option<Committee>,
    /// Set once every node is up and holds the committee.
    pub ready: bool,
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
        let tmp = self.dir.join(".testnet.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        Ok(())
    }
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.grpc.clone()).collect()
    }
    pub fn admin_token(&self) -> anyhow::Result<String> {
        Ok(fs::read_to_string(self.dir.join("admin.token"))?
            .trim()
            .to_string())
    }
    /// Node by name (`node3`) or index (`3`).
    pub fn node(&self, which: &str) -> anyhow::Result<&NodeEntry> {
        let name = if which.chars().all(|c| c.is_ascii_digit()) {
            format!("node{which}")
        } else {
            which.to_string()
        };
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {which:?} in this testnet"))
    }
}

/// Options of `floe testnet up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub nodes: usize,
    pub shards: u16,
    pub epoch: Duration,
    pub node_bin: PathBuf,
    /// (node index, fault name)
    pub faults: Vec<(usize, String)>,
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

/// The supervisor: start the nodes, hand out the first committee, keep them running.
pub struct Supervisor {
    state: TestnetState,
    children: Vec<Option<Child>>,
}

impl Supervisor {
    pub fn create(opts: &UpOptions) -> anyhow::Result<Self> {
        if opts.nodes == 0 || opts.nodes > opts.shards as usize {
            bail!("--nodes must be between 1 and --shards ({})", opts.shards);
        }
        floe_node::codec::EncodingParams::new(opts.shards as usize)?;
        fs::create_dir_all(&opts.dir)?;
        let dir = fs::canonicalize(&opts.dir)?;
        let token_file = dir.join("admin.token");
        if !token_file.exists() {
            let mut t = [0u8; 24];
            getrandom::fill(&mut t).map_err(|e| anyhow::anyhow!("random token: {e}"))?;
            fs::write(&token_file, hex::encode(t))?;
        }
        // Reuse ports and identities of an earlier run in the same directory.
        let previous = TestnetState::load(&dir).ok();
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let name = format!("node{i}");
            let prev = previous
                .as_ref()
                .and_then(|p| p.nodes.iter().find(|n| n.name == name));
            let node_dir = dir.join(&name);
            fs::create_dir_all(&node_dir)?;
            let _ = fs::remove_file(node_dir.join("stopped"));
            nodes.push(NodeEntry {
                name,
                grpc: prev.map_or(
                    Ok::<_, anyhow::Error>(format!("127.0.0.1:{}", free_port()?)),
                    |p| Ok(p.grpc.clone()),
                )?,
                http: prev.map_or(
                    Ok::<_, anyhow::Error>(format!("127.0.0.1:{}", free_port()?)),
                    |p| Ok(p.http.clone()),
                )?,
                dir: node_dir,
                node_id: None,
                pid: None,
                restarts: 0,
                fault: opts
                    .faults
                    .iter()
                    .find(|(n, _)| *n == i)
                    .map(|(_, f)| f.clone()),
            });
        }
        let state = TestnetState {
            dir,
            n_shards: opts.shards,
            epoch_seconds: opts.epoch.as_secs(),
            supervisor_pid: std::process::id(),
            node_bin: opts.node_bin.clone(),
            nodes,
            committee: previous
                .and_then(|p| p.committee)
                .filter(|c| c.n_shards == opts.shards),
            ready: false,
        };
        let children = (0..state.nodes.len()).map(|_| None).collect();
        Ok(Self { state, children })
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
        self.children[i] = Some(child);
        Ok(())
    }

    async fn wait_healthy(&self, i: usize, timeout: Duration) -> anyhow::Result<NodeId> {
        let n = &self.state.nodes[i];
        let client = NodeClient::new(&n.grpc, 16 << 20)?;
        let deadline = Instant::now() + timeout;
        loop {
            match client.info().await {
                Ok(info) => return Ok(NodeId::try_from(info.node_id.as_slice())?),
                Err(e) if Instant::now() > deadline => bail!(
                    "{} did not come up: {e}; see {}",
                    n.name,
                    n.dir.join("log").display()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn publish(&self, i: usize) -> anyhow::Result<()> {
        let Some(c) = &self.state.committee else {
            return Ok(());
        };
        let n = &self.state.nodes[i];
        let client =
            NodeClient::new(&n.grpc, 16 << 20)?.with_admin_token(&self.state.admin_token()?);
        client
            .set_committee(c)
            .await
            .with_context(|| format!("handing the committee to {}", n.name))
    }

    /// Start everything, publish the first committee, then supervise until SIGTERM/SIGINT.
    pub async fn run(mut self) -> anyhow::Result<()> {
        fs::write(
            self.state.dir.join("supervisor.pid"),
            std::process::id().to_string(),
        )?;
        for i in 0..self.state.nodes.len() {
            self.spawn(i)?;
        }
        let mut candidates = Vec::new();
        for i in 0..self.state.nodes.len() {
            let id = self.wait_healthy(i, Duration::from_secs(30)).await?;
            self.state.nodes[i].node_id = Some(id);
            candidates.push(Candidate {
                node_id: id,
                address: self.state.nodes[i].grpc.clone(),
                stake: 1,
            });
        }
        let same_members = self.state.committee.as_ref().is_some_and(|c| {
            c.members.len() == candidates.len()
                && candidates
                    .iter()
                    .all(|k| c.member(&k.node_id).is_some_and(|m| m.address == k.address))
        });
        if !same_members {
            self.state.committee = Some(initial_committee(1, self.state.n_shards, candidates)?);
        }
        for i in 0..self.state.nodes.len() {
            self.publish(i).await?;
        }
        self.state.ready = true;
        self.state.save()?;
        tracing::info!(
            nodes = self.state.nodes.len(),
            shards = self.state.n_shards,
            "testnet up"
        );

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if let Err(e) = self.converge().await {
                tracing::warn!(error = %e, "supervision round failed");
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Restart crashed nodes (unless marked stopped) and re-hand the committee to any node that
    /// lost it (a wiped disk).
    async fn converge(&mut self) -> anyhow::Result<()> {
        let mut changed = false;
        for i in 0..self.state.nodes.len() {
            let exited = match self.children[i].as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            let stopped = self.state.nodes[i].wants_stopped();
            if exited && !stopped {
                if self.children[i].is_some() {
                    tracing::warn!(node = %self.state.nodes[i].name, "node exited; restarting it");
                    self.state.nodes[i].restarts += 1;
                }
                self.spawn(i)?;
                self.wait_healthy(i, Duration::from_secs(30)).await?;
                changed = true;
            } else if exited {
                if self.children[i].take().is_some() || self.state.nodes[i].pid.is_some() {
                    self.state.nodes[i].pid = None;
                    changed = true;
                }
                continue;
            }
            if let Some(c) = &self.state.committee {
                let client = NodeClient::new(&self.state.nodes[i].grpc, 16 << 20)?;
                if client.info().await.is_ok_and(|info| info.epoch < c.epoch) {
                    self.publish(i).await?;
                }
            }
        }
        if changed {
            self.state.save()?;
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        tracing::info!("stopping nodes");
        for c in self.children.iter().flatten() {
            signal(c.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in self.children.iter_mut().flatten() {
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &mut self.state.nodes {
            n.pid = None;
        }
        self.state.ready = false;
        let _ = self.state.save();
        let _ = fs::remove_file(self.state.dir.join("supervisor.pid"));
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
            bail!(
                "the testnet supervisor exited:\n{}",
                log.lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
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

/// Stop the supervisor (which stops the nodes) and wait for it.
pub fn down(dir: &Path, timeout: Duration) -> anyhow::Result<bool> {
    let Ok(pid) = fs::read_to_string(dir.join("supervisor.pid")) else {
        return Ok(false);
    };
    let pid: u32 = pid.trim().parse()?;
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
