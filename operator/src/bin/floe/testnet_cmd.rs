//! `floe testnet …`: start, inspect and change a local network of node processes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use floe_node::client::NodeClient;
use floe_operator::control::brain::{BrainState, Phase};
use floe_operator::control::driver::now_ms;
use floe_operator::local::{self as testnet, ControlOptions, Request, TestnetState, UpOptions};
use serde_json::json;

use crate::blob_cmd::status_name;
use crate::table::{self, Col};
use crate::{Cli, TestnetCmd, UpArgs};

fn parse_faults(f: &[String]) -> anyhow::Result<Vec<(usize, String)>> {
    f.iter()
        .map(|s| {
            let (i, f) = s.split_once('=').context("--fault wants INDEX=FAULT")?;
            Ok((i.parse()?, f.to_string()))
        })
        .collect()
}

fn parse_votes(v: &[String]) -> anyhow::Result<Vec<(usize, u64, u64)>> {
    v.iter()
        .map(|s| {
            let (i, p) = s
                .split_once('=')
                .context("--price-vote wants INDEX=STORAGE,WRITE")?;
            let (st, w) = p
                .split_once(',')
                .context("--price-vote wants INDEX=STORAGE,WRITE")?;
            Ok((i.parse()?, st.trim().parse()?, w.trim().parse()?))
        })
        .collect()
}

/// The control plane's settings from the flags.
fn control_options(args: &UpArgs) -> ControlOptions {
    let mut control = ControlOptions::new(args.epoch);
    if let Some(s) = args.challenge_samples {
        control.challenge_samples = s;
    }
    control.challenge_timeout_seconds = args.challenge_timeout.as_secs().max(1);
    control.reward_per_epoch = args.reward_per_epoch;
    control.stuck_after_seconds = args.stuck_after.map(|d| d.as_secs());
    control.max_epochs_ahead = args.max_epochs_ahead;
    if let Some(u) = args.unreachable_after {
        control.unreachable_after_seconds = u.as_secs();
    }
    control
}

pub async fn run(cli: &Cli, cmd: &TestnetCmd) -> anyhow::Result<()> {
    let dir = &cli.testnet_dir;
    match cmd {
        TestnetCmd::Up(args) => {
            let dir = args.dir.clone().unwrap_or_else(|| dir.clone());
            let node_bin = testnet::find_node_bin(args.node_bin.clone())?;
            if let Ok(pid) = std::fs::read_to_string(dir.join("supervisor.pid")) {
                if pid.trim().parse().is_ok_and(testnet::alive) {
                    bail!(
                        "a testnet is already running in {} (floe testnet down first)",
                        dir.display()
                    );
                }
            }
            let opts = UpOptions {
                dir: dir.clone(),
                nodes: args.nodes,
                shards: args.shards,
                node_bin,
                faults: parse_faults(&args.fault)?,
                price_votes: parse_votes(&args.price_vote)?,
                control: control_options(args),
            };
            // refuse a bad directory or shard count here, before detaching
            drop(testnet::Supervisor::create(&opts)?);
            if args.foreground {
                eprintln!("testnet starting in the foreground (Ctrl-C stops it)");
                return testnet::Supervisor::create(&opts)?.run().await;
            }
            let log = std::fs::File::create(dir.join("supervisor.log"))?;
            let mut cmd = std::process::Command::new(std::env::current_exe()?);
            cmd.args(["testnet", "supervise", "--options"])
                .arg(serde_json::to_string(&opts)?)
                .env(
                    "FLOE_LOG",
                    std::env::var("FLOE_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::from(log.try_clone()?))
                .stderr(std::process::Stdio::from(log));
            use std::os::unix::process::CommandExt;
            cmd.process_group(0); // detached: survives this shell's Ctrl-C
            let child = cmd.spawn().context("starting the testnet supervisor")?;
            let state = testnet::wait_ready(&dir, child.id(), Duration::from_secs(90))?;
            if cli.json {
                outln!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                outln!(
                    "testnet up: {} nodes, {} shards, epochs of {}s, data in {}",
                    state.nodes.iter().filter(|n| !n.released).count(),
                    state.n_shards,
                    state.epoch_seconds,
                    state.dir.display()
                );
                for n in state.nodes.iter().filter(|n| !n.released) {
                    outln!(
                        "  {:<7} grpc {:<21} metrics http://{}/metrics",
                        n.name,
                        n.address(),
                        n.http
                    );
                }
                if let Some(m) = &state.metrics {
                    outln!("  control plane metrics http://{m}/metrics");
                }
                match &state.gateway {
                    Some(g) => outln!(
                        "  HTTP gateway {g}  (PUT {g}/v1/blobs · GET {g}/v1/blobs/ID · {g}/v1/api)"
                    ),
                    None => outln!("  no HTTP gateway (floe-gateway not found beside floe)"),
                }
                outln!("try:  floe put FILE   ·   floe testnet status   ·   floe testnet down");
            }
            Ok(())
        }
        TestnetCmd::Supervise { options } => {
            let opts: UpOptions = serde_json::from_str(options)?;
            testnet::Supervisor::create(&opts)?.run().await
        }
        TestnetCmd::Status => status(cli, dir).await,
        TestnetCmd::Faucet { account, amount } => {
            crate::account_cmd::faucet(cli, account.as_deref(), *amount).await
        }
        TestnetCmd::Kill { node } => {
            let state = TestnetState::load(dir)?;
            testnet::kill_node(&state, node)?;
            eprintln!("killed {node} (SIGKILL); `floe testnet restart {node}` brings it back");
            Ok(())
        }
        TestnetCmd::Restart { node, wipe } => {
            let state = TestnetState::load(dir)?;
            testnet::restart_node(&state, node, *wipe)?;
            let n = state.node(node)?;
            let client = NodeClient::new(&n.address(), 16 << 20)?;
            // back = its process answers; its committee comes from the control plane, which
            // may itself be down or mid-change: waited for a while, then only reported
            let deadline = Instant::now() + Duration::from_secs(60);
            let epoch = loop {
                match client.info().await {
                    Ok(i) => break i.epoch,
                    Err(_) if Instant::now() > deadline => bail!(
                        "{node} did not come back within 60 s; see {}",
                        n.dir.join("log").display()
                    ),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let committee_deadline = Instant::now() + Duration::from_secs(30);
            let mut epoch = epoch;
            while epoch == 0 && Instant::now() < committee_deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                epoch = client.info().await.map(|i| i.epoch).unwrap_or(0);
            }
            eprintln!(
                "{node} is back{}{}",
                if *wipe {
                    " with an empty disk; it rebuilds its slivers from peers"
                } else {
                    ""
                },
                if epoch == 0 {
                    " (no committee yet: the control plane gives it one when it next runs a round)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        TestnetCmd::Down => {
            if testnet::down(dir, Duration::from_secs(30))? {
                eprintln!("testnet stopped; its data stays in {}", dir.display());
            } else {
                eprintln!("no testnet running in {}", dir.display());
            }
            Ok(())
        }
        TestnetCmd::AddNode { stake } => {
            let before = TestnetState::load(dir)?.nodes.len();
            testnet::send_request(dir, &Request::AddNode { stake: *stake })?;
            let state = wait_for(
                dir,
                Duration::from_secs(60),
                "the new node to start",
                |s, _| {
                    s.nodes.len() > before && s.nodes.last().is_some_and(|n| n.node_id.is_some())
                },
            )?;
            let n = state.nodes.last().context("node list")?;
            if cli.json {
                outln!(
                    "{}",
                    json!({"name": n.name, "grpc": n.grpc, "node_id": n.node_id})
                );
            } else {
                outln!(
                    "{} started (grpc {}); it joins the committee at the next epoch",
                    n.name,
                    n.grpc
                );
            }
            Ok(())
        }
        TestnetCmd::RemoveNode { node } => {
            let state = TestnetState::load(dir)?;
            let n = state.node(node)?;
            if n.released {
                bail!("{node} already left the network");
            }
            testnet::send_request(
                dir,
                &Request::RemoveNode {
                    node: n.name.clone(),
                },
            )?;
            eprintln!(
                "{} leaves at the next epoch; its process stops once that change completed",
                n.name
            );
            Ok(())
        }
        TestnetCmd::SetStake { node, stake } => {
            let state = TestnetState::load(dir)?;
            let n = state.node(node)?;
            testnet::send_request(
                dir,
                &Request::SetStake {
                    node: n.name.clone(),
                    stake: *stake,
                },
            )?;
            eprintln!("{}: stake {stake} from the next epoch", n.name);
            Ok(())
        }
        TestnetCmd::NextEpoch { no_wait, timeout } => {
            let before = TestnetState::load(dir)?.control()?.map_or(0, |c| c.epoch);
            testnet::send_request(dir, &Request::NextEpoch)?;
            if *no_wait {
                eprintln!("requested the change to epoch {}", before + 1);
                return Ok(());
            }
            let r = wait_for(dir, *timeout, "the epoch change", |_, c| {
                c.is_some_and(|c| c.epoch > before && c.phase == Phase::Stable)
            });
            match r {
                Ok(s) => {
                    let c = s.control()?.context("control state")?;
                    let h = c.history.last();
                    if cli.json {
                        outln!(
                            "{}",
                            json!({"epoch": c.epoch, "change_ms": h.map(|h| h.change_ms), "moved_shards": h.map(|h| h.moved_shards)})
                        );
                    } else {
                        outln!(
                            "epoch {} ({} shards moved, change took {:.1}s)",
                            c.epoch,
                            h.map_or(0, |h| h.moved_shards),
                            h.map_or(0, |h| h.change_ms) as f64 / 1000.0
                        );
                    }
                    Ok(())
                }
                Err(e) => {
                    let why = TestnetState::load(dir)?
                        .control()?
                        .and_then(|c| match c.phase {
                            Phase::Changing { stuck, .. } => stuck,
                            _ => c.plan_error,
                        })
                        .unwrap_or_default();
                    bail!("{e}. {why}")
                }
            }
        }
    }
}

/// Poll the state files until `done` holds.
fn wait_for(
    dir: &Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&TestnetState, Option<&BrainState>) -> bool,
) -> anyhow::Result<TestnetState> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = TestnetState::load(dir)?;
        let c = s.control().ok().flatten();
        if done(&s, c.as_ref()) {
            return Ok(s);
        }
        if !std::fs::read_to_string(dir.join("supervisor.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .is_some_and(testnet::alive)
        {
            bail!(
                "no supervisor is running in {} (floe testnet up)",
                dir.display()
            );
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn phase_text(c: &BrainState) -> String {
    match &c.phase {
        Phase::Genesis => "genesis".into(),
        Phase::Stable => "stable".into(),
        Phase::Changing {
            to, stuck: None, ..
        } => format!("changing to {}", to.epoch),
        Phase::Changing {
            to,
            stuck: Some(why),
            ..
        } => format!("stuck changing to {}: {why}", to.epoch),
    }
}

/// `floe testnet status`: the control plane's view and every node's own.
async fn status(cli: &Cli, dir: &Path) -> anyhow::Result<()> {
    let state = TestnetState::load(dir)?;
    let control = state.control()?;
    let epoch_ms = state.epoch_seconds * 1000;
    let mut rows = Vec::new();
    for n in &state.nodes {
        let info = if n.released {
            None
        } else {
            NodeClient::new(&n.address(), 16 << 20)?.info().await.ok()
        };
        let rec = control
            .as_ref()
            .and_then(|c| n.node_id.and_then(|id| c.members.get(&id)));
        let shards = control.as_ref().and_then(|c| {
            let id = n.node_id?;
            c.committee.as_ref().map(|com| com.weight(&id))
        });
        let report = rec.and_then(|r| r.last_report.as_ref());
        let challenge = control.as_ref().and_then(|c| {
            let r = c.last_round.as_ref()?;
            let res = r.results.get(&n.node_id?)?;
            Some(format!("{} (e{})", res.outcome.label(), r.epoch))
        });
        let rewards = control
            .as_ref()
            .and_then(|c| n.node_id.map(|id| *c.ledger.totals.get(&id).unwrap_or(&0)));
        let status = if n.released {
            "released".to_string()
        } else {
            match &info {
                Some(i) => status_name(i.status).to_string(),
                None if n.wants_stopped() => "stopped".into(),
                None => "down".into(),
            }
        };
        rows.push(json!({
            "name": n.name, "node_id": n.node_id.map(|i| i.to_string()), "pid": n.pid, "grpc": n.grpc,
            "status": status, "leaving": n.leaving, "released": n.released,
            "epoch": info.as_ref().map(|i| i.epoch), "shards": shards, "stake": n.stake,
            "sync": report.map(|r| format!("{}/{}{}", r.blobs_synced, r.blobs_to_sync,
                if r.shards_pending > 0 { format!(" ({} pending)", r.shards_pending) } else { String::new() })),
            "shards_pending": report.map(|r| r.shards_pending),
            "stored_bytes": info.as_ref().map(|i| i.stored_bytes), "blobs": info.as_ref().map(|i| i.blobs),
            "recovery_backlog": info.as_ref().map(|i| i.recovery_backlog),
            "challenge": challenge, "rewards": rewards, "restarts": n.restarts,
        }));
    }
    let deadline = control.as_ref().map(|c| c.deadline_ms(epoch_ms));
    let economics = control
        .as_ref()
        .and_then(|c| c.committee.as_ref())
        .and_then(|c| c.economics);
    if cli.json {
        outln!(
            "{}",
            json!({
                "dir": state.dir, "n_shards": state.n_shards, "epoch_seconds": state.epoch_seconds,
                "metrics": state.metrics,
                "gateway": state.gateway,
                "epoch": control.as_ref().map(|c| c.epoch),
                "phase": control.as_ref().map(|c| c.phase_name()),
                "phase_detail": control.as_ref().map(phase_text),
                "next_deadline_ms": deadline,
                "plan_error": control.as_ref().and_then(|c| c.plan_error.clone()),
                "ledger": control.as_ref().map(|c| json!({"issued": c.ledger.issued, "withheld": c.ledger.withheld, "balanced": c.ledger.balanced(), "fees": c.ledger.fees, "rolled_over": c.ledger.rolled_over})),
                "storage_price": economics.map(|e| e.storage_price),
                "write_price": economics.map(|e| e.write_price),
                "max_epochs_ahead": economics.map(|e| e.max_epochs_ahead),
                "control_api": state.control_api,
                "last_round": control.as_ref().and_then(|c| c.last_round.clone()),
                "history": control.as_ref().map(|c| c.history.clone()),
                "nodes": rows,
            })
        );
        return Ok(());
    }
    outln!(
        "testnet {} · {} shards · epochs of {}s{}",
        state.dir.display(),
        state.n_shards,
        state.epoch_seconds,
        state
            .metrics
            .as_ref()
            .map_or(String::new(), |m| format!(" · metrics http://{m}/metrics"))
    );
    if let Some(g) = &state.gateway {
        println!("gateway {g}");
    }
    if let Some(e) = economics {
        println!(
            "prices (voted): storage {} and write {} per MiB of encoded size (storage per epoch) · lifetimes up to {} epochs ahead",
            e.storage_price, e.write_price, e.max_epochs_ahead
        );
    }
    if let Some(c) = &control {
        let left = deadline.unwrap_or(0).saturating_sub(now_ms()) / 1000;
        outln!(
            "epoch {} · {} · next epoch in {}s · rewards issued {}{}",
            c.epoch,
            phase_text(c),
            left,
            c.ledger.issued,
            c.plan_error
                .as_ref()
                .map_or(String::new(), |e| format!(" · cannot plan: {e}"))
        );
    }
    table::print(
        &[
            Col("NODE", "name"),
            Col("PID", "pid"),
            Col("GRPC", "grpc"),
            Col("STATUS", "status"),
            Col("EPOCH", "epoch"),
            Col("SHARDS", "shards"),
            Col("STAKE", "stake"),
            Col("SYNC", "sync"),
            Col("BACKLOG", "recovery_backlog"),
            Col("CHALLENGE", "challenge"),
            Col("REWARDS", "rewards"),
            Col("STORED", "stored_bytes"),
            Col("RESTARTS", "restarts"),
        ],
        &rows,
    );
    Ok(())
}
