//! The supervisor process: its loop keeps the nodes alive (restarts, requests from the CLI,
//! releases), and the brain runs beside it in a task of its own, so a challenge round or a hung
//! member never delays a restart; the loop publishes the candidates, the task publishes its
//! state.

use std::fs;
use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use floe_node::protocol::NodeId;
use tokio::sync::{mpsc, watch};

use super::body::LocalBody;
use super::layout::{load_control, TestnetState, UpOptions};
use super::process::Nodes;
use crate::control::brain::{Brain, BrainState, Candidate};
use crate::control::driver::{ChallengeSettings, Driver, Members};
use crate::control::economy::Economy;
use crate::control::market::MarketLink;
use crate::control::metrics::ControlMetrics;
use crate::control::registry::MarketSettings;

/// How often the loop converges and the brain runs a round.
const TICK: Duration = Duration::from_millis(500);
/// Ticks between checks of the gateway's balance (a minute).
const TOP_UP_TICKS: u64 = 120;

/// The supervisor: nodes as processes, the brain driving them.
pub struct Supervisor {
    nodes: Nodes,
    /// The market this testnet sells storage through (its journal in the testnet directory).
    economy: Arc<Mutex<Economy>>,
    driver: Driver<LocalBody>,
    candidates: watch::Sender<Vec<Candidate>>,
    releases: mpsc::UnboundedReceiver<NodeId>,
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
            gateway: previous.as_ref().and_then(|p| p.gateway.clone()),
            gateway_pid: previous.as_ref().and_then(|p| p.gateway_pid),
            control_api: previous.as_ref().and_then(|p| p.control_api.clone()),
        };
        let force = Arc::new(AtomicBool::new(false));
        let mut body = Nodes {
            procs: (0..state.nodes.len()).map(|_| None).collect(),
            state,
            force: force.clone(),
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
        for (i, storage, write) in &opts.price_votes {
            if let Some(n) = body.state.nodes.get_mut(*i) {
                n.price_vote = Some((*storage, *write));
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
        let (candidates, candidates_rx) = watch::channel(body.candidates());
        let (releases_tx, releases) = mpsc::unbounded_channel();
        let economy = Economy::open(
            &dir,
            MarketSettings {
                max_epochs_ahead: opts.control.max_epochs_ahead,
                faucet_grant: opts.control.faucet_grant,
            },
        )?;
        let control_key = economy.registry().control_key();
        let economy = Arc::new(Mutex::new(economy));
        let local = LocalBody::new(dir, candidates_rx, force, releases_tx);
        let driver = Driver::new(brain, local, members, challenges, ControlMetrics::new())
            .with_market(
                MarketLink::Local(economy.clone()),
                control_key,
                opts.control.max_epochs_ahead,
            );
        Ok(Self {
            nodes: body,
            economy,
            driver,
            candidates,
            releases,
        })
    }

    async fn serve_metrics(&mut self) -> anyhow::Result<()> {
        let wanted = self.nodes.state.metrics.clone();
        let listener = match wanted.as_deref().map(tokio::net::TcpListener::bind) {
            Some(f) => match f.await {
                Ok(l) => l,
                Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            },
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        self.nodes.state.metrics = Some(listener.local_addr()?.to_string());
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

    /// Serve the control plane's client API on loopback (the port of the last run if free).
    async fn serve_control_api(&mut self) -> anyhow::Result<()> {
        let economy = self.economy.clone();
        let wanted = self.nodes.state.control_api.clone();
        let listener = match wanted.as_deref().map(tokio::net::TcpListener::bind) {
            Some(f) => match f.await {
                Ok(l) => l,
                Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            },
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        self.nodes.state.control_api = Some(listener.local_addr()?.to_string());
        let service = crate::control::api::ControlService {
            economy,
            faucet: true,
        };
        // serve_with_incoming ignores the builder's TCP_NODELAY: without it, a response written
        // in two segments waits for the client's delayed ACK (~40 ms per registration)
        let incoming = futures::stream::unfold(listener, |l| async move {
            let r = l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s
            });
            Some((r, l))
        });
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(floe_node::proto::control_server::ControlServer::new(
                    service,
                ))
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "the control API stopped");
            }
        });
        Ok(())
    }

    /// Create and fund the gateway's account (a testnet that sells storage only).
    fn fund_gateway(&self) {
        if let Err(e) = super::gateway::fund_account(&self.nodes.state.dir, &self.economy) {
            tracing::warn!("the gateway's account: {e:#}");
        }
    }

    /// Start everything, run the brain until every node holds the first committee, then keep
    /// supervising until SIGTERM/SIGINT.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let dir = self.nodes.state.dir.clone();
        fs::write(dir.join("supervisor.pid"), std::process::id().to_string())?;
        self.serve_metrics().await?;
        self.serve_control_api().await?;
        let wanted: Vec<usize> = (0..self.nodes.state.nodes.len())
            .filter(|&i| !self.nodes.state.nodes[i].wants_stopped())
            .collect();
        self.nodes.bring_up_all(&wanted).await?;
        self.fund_gateway();
        let mut gateway = super::gateway::find_gateway_bin(&self.nodes.state.node_bin)
            .map(super::gateway::Gateway::new);
        match &mut gateway {
            Some(g) => {
                if let Err(e) = g.start(&mut self.nodes.state) {
                    tracing::warn!("the HTTP gateway did not start: {e:#}");
                }
                self.nodes.dirty = true;
            }
            None => tracing::warn!("floe-gateway not found: this testnet has no HTTP gateway"),
        }
        self.nodes.save_state()?;
        self.candidates.send_replace(self.nodes.candidates());
        let (brain_tx, brain) = watch::channel(self.driver.brain.state.clone());
        let economy = self.economy.clone();
        let mut driver = self.driver;
        let brain_task = tokio::spawn(async move {
            loop {
                if let Err(e) = driver.round().await {
                    tracing::warn!(kind = ?e.kind, error = %e, "control-plane round failed");
                }
                brain_tx.send_replace(driver.brain.state.clone());
                tokio::time::sleep(TICK).await;
            }
        });
        let mut nodes = self.nodes;
        let mut releases = self.releases;
        let candidates = self.candidates;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut ticks = 0u64;
        loop {
            ticks += 1;
            if ticks.is_multiple_of(TOP_UP_TICKS) {
                if let Err(e) = super::gateway::fund_account(&nodes.state.dir, &economy) {
                    tracing::warn!("the gateway's account: {e:#}");
                }
            }
            if let Some(g) = &mut gateway {
                match g.keep_alive(&mut nodes.state) {
                    Ok(true) => nodes.dirty = true,
                    Ok(false) => {}
                    Err(e) => tracing::warn!("restarting the gateway: {e:#}"),
                }
            }
            if let Err(e) = supervise(&mut nodes, &mut releases, &candidates).await {
                tracing::warn!(error = %e, "supervision round failed");
            }
            if !nodes.state.ready {
                let state = brain.borrow().clone();
                if first_committee_everywhere(&state) {
                    nodes.state.ready = true;
                    nodes.dirty = true;
                    nodes.save_state()?;
                    tracing::info!(
                        nodes = nodes.state.nodes.len(),
                        shards = nodes.state.n_shards,
                        epoch = state.epoch,
                        "testnet up"
                    );
                }
            }
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        brain_task.abort();
        if let Some(g) = &mut gateway {
            g.stop(&mut nodes.state);
        }
        nodes.shutdown();
        Ok(())
    }
}

/// One pass of the loop: restart what crashed, apply the CLI's requests, stop what the brain
/// released, publish the candidates, write `testnet.json` if it changed.
async fn supervise(
    nodes: &mut Nodes,
    releases: &mut mpsc::UnboundedReceiver<NodeId>,
    candidates: &watch::Sender<Vec<Candidate>>,
) -> anyhow::Result<()> {
    nodes.converge().await?;
    nodes.apply_requests().await?;
    while let Ok(node) = releases.try_recv() {
        nodes.release(&node);
    }
    let now = nodes.candidates();
    candidates.send_if_modified(|c| {
        let changed = *c != now;
        *c = now;
        changed
    });
    nodes.save_state()
}

/// Every member of the brain's committee answered its last round holding at least the
/// committee's epoch (so `up` returns a usable network).
fn first_committee_everywhere(s: &BrainState) -> bool {
    let Some(c) = &s.committee else {
        return false;
    };
    c.members.iter().all(|m| {
        s.members.get(&m.node_id).is_some_and(|r| {
            r.unreachable_since_ms.is_none()
                && r.last_report
                    .as_ref()
                    .is_some_and(|rep| rep.epoch >= c.epoch)
        })
    })
}
