//! Node processes: finding the binary, free ports, signals, and a process this supervisor
//! started or adopted from an earlier one.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use floe_node::client::NodeClient;
use floe_node::protocol::NodeId;

use super::layout::*;
use crate::control::brain::{Candidate, Intent};

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
pub(crate) enum Proc {
    Child(Child),
    Adopted(u32),
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted(p) => *p,
        }
    }
    pub(crate) fn exited(&mut self) -> bool {
        match self {
            Proc::Child(c) => c.try_wait().ok().flatten().is_some(),
            Proc::Adopted(p) => !alive(*p),
        }
    }
}

/// The testnet's node processes and their entries in `testnet.json`, owned by the supervisor's
/// loop.
pub struct Nodes {
    pub(crate) state: TestnetState,
    pub(crate) procs: Vec<Option<Proc>>,
    /// Set by a `next-epoch` request, taken by the brain's task.
    pub(crate) force: Arc<AtomicBool>,
    /// `testnet.json` needs writing.
    pub(crate) dirty: bool,
}

impl Nodes {
    /// The nodes the brain may use: every node that is not released and whose identity is
    /// known.
    pub(crate) fn candidates(&self) -> Vec<Candidate> {
        self.state
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
            .collect()
    }

    /// The brain released `node`: stop its process for good (its data is kept).
    pub(crate) fn release(&mut self, node: &NodeId) {
        let Some(i) = self
            .state
            .nodes
            .iter()
            .position(|n| n.node_id == Some(*node))
        else {
            return;
        };
        if self.state.nodes[i].released {
            return;
        }
        self.state.nodes[i].released = true;
        if let Some(p) = self.procs[i].take() {
            signal(p.pid(), "TERM");
        }
        self.state.nodes[i].pid = None;
        self.dirty = true;
        tracing::info!(node = %self.state.nodes[i].name, "released: process stopped, data kept");
    }

    /// Start (or adopt) every node in `idx` at once and learn their identities: the nodes
    /// start concurrently, so a large testnet comes up in about one node's start time. A node
    /// whose port was taken meanwhile is retried on fresh ports, one at a time.
    pub(crate) async fn bring_up_all(&mut self, idx: &[usize]) -> anyhow::Result<()> {
        for &i in idx {
            if !self.adopt(i) {
                self.spawn(i)?;
            }
        }
        for (i, r) in self.wait_all_healthy(idx, Duration::from_secs(30)).await {
            match r {
                Ok(id) => {
                    self.state.nodes[i].node_id = Some(id);
                    self.dirty = true;
                }
                Err(e) => {
                    if !self.reassign_ports_if_taken(i)? {
                        return Err(e);
                    }
                    tracing::warn!(node = %self.state.nodes[i].name, "a port was taken; retrying on fresh ports");
                    self.bring_up(i).await?;
                }
            }
        }
        Ok(())
    }

    /// Wait until every node in `idx` answers `GetInfo`, asking all of them each time.
    async fn wait_all_healthy(
        &mut self,
        idx: &[usize],
        timeout: Duration,
    ) -> Vec<(usize, anyhow::Result<NodeId>)> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for &i in idx {
            match NodeClient::new(&self.state.nodes[i].address(), 16 << 20) {
                Ok(c) => pending.push((i, c)),
                Err(e) => out.push((i, Err(e.into()))),
            }
        }
        while !pending.is_empty() {
            let answers = futures::future::join_all(
                pending
                    .iter()
                    .map(|(_, c)| tokio::time::timeout(Duration::from_secs(2), c.info())),
            )
            .await;
            let mut waiting = Vec::new();
            for ((i, c), answer) in pending.into_iter().zip(answers) {
                let why = match answer {
                    // an answer while our process is gone came from whoever holds its port
                    Ok(Ok(info)) if !self.procs[i].as_mut().is_some_and(|p| p.exited()) => {
                        let id = NodeId::try_from(info.node_id.as_slice()).map_err(Into::into);
                        out.push((i, id));
                        continue;
                    }
                    Ok(Ok(_)) => "another process answered on its port".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer".to_string(),
                };
                let exited = self.procs[i].as_mut().is_some_and(|p| p.exited());
                if exited || Instant::now() > deadline {
                    let n = &self.state.nodes[i];
                    out.push((
                        i,
                        Err(anyhow::anyhow!(
                            "{} did not come up: {why}; see {}",
                            n.name,
                            n.dir.join("log").display()
                        )),
                    ));
                } else {
                    waiting.push((i, c));
                }
            }
            pending = waiting;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        out
    }

    pub(crate) fn new_entry(&self, i: usize, stake: u64) -> anyhow::Result<NodeEntry> {
        let name = format!("node{i}");
        let dir = self.state.dir.join(&name);
        fs::create_dir_all(&dir)?;
        let _ = fs::remove_file(dir.join("stopped"));
        let ports = self.fresh_ports(3)?;
        Ok(NodeEntry {
            name,
            grpc: format!("127.0.0.1:{}", ports[0]),
            http: format!("127.0.0.1:{}", ports[1]),
            admin: format!("127.0.0.1:{}", ports[2]),
            tls: true,
            dir,
            node_id: None,
            pid: None,
            restarts: 0,
            fault: None,
            price_vote: None,
            stake,
            leaving: false,
            released: false,
        })
    }

    pub(crate) fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
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
        if let Some((storage, write)) = n.price_vote {
            cmd.args([
                "--storage-price",
                &storage.to_string(),
                "--write-price",
                &write.to_string(),
            ]);
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
    pub(crate) fn adopt(&mut self, i: usize) -> bool {
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

    pub(crate) async fn wait_healthy(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<NodeId> {
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

    /// `k` free loopback ports, none of them given to a node of this testnet already: a port
    /// picked by binding port 0 is released at once, so two picks can return the same port,
    /// and two nodes started together would then fight over it.
    fn fresh_ports(&self, k: usize) -> anyhow::Result<Vec<u16>> {
        let mut taken: std::collections::BTreeSet<u16> = self
            .state
            .nodes
            .iter()
            .flat_map(|n| [&n.grpc, &n.http, &n.admin])
            .filter_map(|a| a.rsplit(':').next()?.parse().ok())
            .collect();
        let mut out = Vec::with_capacity(k);
        for _ in 0..100 * k {
            if out.len() == k {
                break;
            }
            let p = free_port()?;
            if taken.insert(p) {
                out.push(p);
            }
        }
        if out.len() < k {
            bail!("no free loopback port left for a node");
        }
        Ok(out)
    }

    /// A node that never came up and found one of its ports taken (free ports are picked
    /// before the node binds them; a parallel process can take one first) gets fresh ports.
    pub(crate) fn reassign_ports_if_taken(&mut self, i: usize) -> anyhow::Result<bool> {
        let n = &self.state.nodes[i];
        let log = fs::read_to_string(n.dir.join("log")).unwrap_or_default();
        if n.node_id.is_some() || !log.contains("Address already in use") {
            return Ok(false);
        }
        let _ = fs::write(n.dir.join("log"), "");
        let ports = self.fresh_ports(3)?;
        let n = &mut self.state.nodes[i];
        n.grpc = format!("127.0.0.1:{}", ports[0]);
        n.http = format!("127.0.0.1:{}", ports[1]);
        if !n.admin.is_empty() {
            n.admin = format!("127.0.0.1:{}", ports[2]);
        }
        self.dirty = true;
        Ok(true)
    }

    /// Start (or adopt) node `i` and learn its identity.
    pub(crate) async fn bring_up(&mut self, i: usize) -> anyhow::Result<()> {
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
    pub(crate) async fn converge(&mut self) -> anyhow::Result<()> {
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
    pub(crate) async fn apply_requests(&mut self) -> anyhow::Result<()> {
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

    pub(crate) async fn apply(&mut self, r: &Request) -> anyhow::Result<()> {
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
            Request::NextEpoch => self.force.store(true, Ordering::SeqCst),
        }
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn index(&self, which: &str) -> anyhow::Result<usize> {
        let name = node_name(which);
        self.state
            .nodes
            .iter()
            .position(|n| n.name == name && !n.released)
            .with_context(|| format!("no node {which:?} in this testnet"))
    }

    pub(crate) fn save_state(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            self.state.save()?;
            self.dirty = false;
        }
        Ok(())
    }

    pub(crate) fn shutdown(&mut self) {
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
