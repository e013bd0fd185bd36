//! `floe`: run a local testnet, store and read blobs.

mod progress;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use floe_node::client::{BlobClient, ClientConfig, NodeClient};
use floe_node::codec::{encode_metadata, BlobId, EncodingParams};
use floe_node::proto;
use floe_operator::local::testnet::{self, TestnetState, UpOptions};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "floe",
    version,
    about = "Floe: a decentralized blob store — local testnet and client"
)]
struct Cli {
    /// Machine-readable output
    #[arg(long, global = true)]
    json: bool,
    /// Testnet directory used when no --connect addresses are given
    #[arg(
        long,
        global = true,
        env = "FLOE_TESTNET_DIR",
        default_value = ".floe-testnet"
    )]
    testnet_dir: PathBuf,
    /// Node gRPC addresses (host:port,…) to use instead of the local testnet
    #[arg(long, global = true, env = "FLOE_CONNECT", value_delimiter = ',')]
    connect: Vec<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a network of floe-node processes on this machine
    Testnet {
        #[command(subcommand)]
        command: TestnetCmd,
    },
    /// Store a file; prints its blob ID
    Put { file: PathBuf },
    /// Read a blob back
    Get {
        /// Blob ID (URL-safe base64: one in 64 starts with '-', taken as the ID, not a flag)
        #[arg(allow_hyphen_values = true)]
        blob_id: String,
        /// Write here instead of standard output
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Network status, or one blob's status on every node
    Status {
        #[arg(allow_hyphen_values = true)]
        blob_id: Option<String>,
    },
    /// Compute a file's blob ID offline
    BlobId {
        file: PathBuf,
        #[arg(long, default_value_t = 100)]
        shards: u16,
    },
}

#[derive(Subcommand)]
enum TestnetCmd {
    /// Start nodes, hand them the first committee, supervise them
    Up {
        #[arg(long, default_value_t = 7)]
        nodes: usize,
        #[arg(long, default_value_t = 100)]
        shards: u16,
        /// Testnet directory (default: --testnet-dir)
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Epoch duration, e.g. 60s or 5m (recorded; epoch rotation comes with the operator)
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        epoch: Duration,
        /// Stay in the foreground (Ctrl-C stops the testnet)
        #[arg(long)]
        foreground: bool,
        /// The floe-node binary [default: next to floe, $FLOE_NODE_BIN, or PATH]
        #[arg(long)]
        node_bin: Option<PathBuf>,
        /// TEST ONLY: INDEX=FAULT, e.g. 3=corrupt-slivers
        #[arg(long, hide = true)]
        fault: Vec<String>,
    },
    /// Show every node: status, epoch, shards, stored bytes, recovery backlog
    Status,
    /// SIGKILL a node (by index or name) and keep it down
    Kill { node: String },
    /// Start a stopped node again
    Restart {
        node: String,
        /// Start it with an empty data directory (it rebuilds its slivers from peers)
        #[arg(long)]
        wipe: bool,
    },
    /// Stop the testnet (data stays in the directory)
    Down,
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        nodes: usize,
        #[arg(long)]
        shards: u16,
        #[arg(long)]
        epoch_seconds: u64,
        #[arg(long)]
        node_bin: PathBuf,
        #[arg(long)]
        fault: Vec<String>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration unit in {s:?} (use s, m, h or d)")),
    }))
}

fn parse_faults(f: &[String]) -> anyhow::Result<Vec<(usize, String)>> {
    f.iter()
        .map(|s| {
            let (i, f) = s.split_once('=').context("--fault wants INDEX=FAULT")?;
            Ok((i.parse()?, f.to_string()))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn client(cli: &Cli) -> anyhow::Result<BlobClient> {
    let addresses = if cli.connect.is_empty() {
        TestnetState::load(&cli.testnet_dir)?.addresses()
    } else {
        cli.connect.clone()
    };
    BlobClient::connect(&addresses, ClientConfig::default())
        .await
        .context("learning the committee from the nodes")
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Cmd::Testnet { command } => testnet_cmd(&cli, command).await,
        Cmd::Put { file } => {
            let data =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let c = client(&cli).await?;
            let max = c.committee().params().max_blob_size();
            if data.len() as u64 > max {
                bail!(
                    "{} is {} bytes; the largest blob this {}-shard network stores is {max} bytes ({:.1} MiB)",
                    file.display(),
                    data.len(),
                    c.committee().n_shards,
                    mib(max)
                );
            }
            let out = c.write(data, progress::reporter("put", cli.json)).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({"blob_id": out.blob_id.to_string(), "size": out.size, "encoded_size": out.encoded_size,
                        "epoch": out.epoch, "confirmed_shards": out.confirmed_shards, "quorum": out.quorum,
                        "certified_nodes": out.certified_nodes, "encode_ms": out.encode_time.as_millis() as u64,
                        "upload_ms": out.upload_time.as_millis() as u64, "total_ms": out.total_time.as_millis() as u64})
                );
            } else {
                println!("blob ID:       {}", out.blob_id);
                println!(
                    "size:          {} bytes, encoded {:.1} MiB",
                    out.size,
                    mib(out.encoded_size)
                );
                println!(
                    "confirmations: {} of {} shards (quorum {}), certificate on {} nodes",
                    out.confirmed_shards,
                    c.committee().n_shards,
                    out.quorum,
                    out.certified_nodes
                );
                println!(
                    "time:          {:.2?} (encode {:.2?}, upload {:.2?}) = {:.1} MiB/s",
                    out.total_time,
                    out.encode_time,
                    out.upload_time,
                    mib(out.size) / out.total_time.as_secs_f64()
                );
            }
            Ok(())
        }
        Cmd::Get { blob_id, output } => {
            let id: BlobId = blob_id.parse()?;
            let c = client(&cli).await?;
            let start = Instant::now();
            match output {
                Some(p) => {
                    let size = c
                        .read_to_file(&id, p, progress::reporter("get", cli.json))
                        .await?;
                    if cli.json {
                        println!(
                            "{}",
                            json!({"blob_id": blob_id, "size": size, "ms": start.elapsed().as_millis() as u64})
                        );
                    } else {
                        eprintln!("{size} bytes in {:.2?} → {}", start.elapsed(), p.display());
                    }
                }
                None => {
                    use std::io::Write;
                    let data = c.read(&id, progress::reporter("get", true)).await?;
                    std::io::stdout().write_all(&data)?;
                }
            }
            Ok(())
        }
        Cmd::Status { blob_id } => status(&cli, blob_id.as_deref()).await,
        Cmd::BlobId { file, shards } => {
            let data =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            // metadata only: the expansion is hashed batch by batch, never held
            let (_, id) = encode_metadata(&data, EncodingParams::new(*shards as usize)?)?;
            if cli.json {
                println!(
                    "{}",
                    json!({"blob_id": id.to_string(), "size": data.len(), "shards": shards})
                );
            } else {
                println!("{id}");
            }
            Ok(())
        }
    }
}

async fn status(cli: &Cli, blob: Option<&str>) -> anyhow::Result<()> {
    let c = client(cli).await?;
    let committee = c.committee().clone();
    let mut rows = Vec::new();
    for m in &committee.members {
        let node = NodeClient::new(&m.address, 16 << 20)?;
        let row = match blob {
            None => match node.info().await {
                Ok(i) => {
                    json!({"node": m.node_id.short(), "address": m.address, "status": status_name(i.status),
                    "epoch": i.epoch, "shards": i.shards.len(), "stored_bytes": i.stored_bytes, "blobs": i.blobs,
                    "recovery_backlog": i.recovery_backlog})
                }
                Err(e) => {
                    json!({"node": m.node_id.short(), "address": m.address, "status": "unreachable", "error": e.to_string()})
                }
            },
            Some(b) => {
                let id: BlobId = b.parse()?;
                match node.blob_status(&id).await {
                    Ok(s) => json!({"node": m.node_id.short(), "address": m.address,
                        "state": format!("{:?}", proto::BlobState::try_from(s.state).unwrap_or(proto::BlobState::Unknown)).to_lowercase(),
                        "pairs_stored": s.pairs_stored, "pairs_owned": s.pairs_owned, "size": s.size}),
                    Err(e) => {
                        json!({"node": m.node_id.short(), "address": m.address, "state": "unreachable", "error": e.to_string()})
                    }
                }
            }
        };
        rows.push(row);
    }
    if cli.json {
        println!(
            "{}",
            json!({"epoch": committee.epoch, "n_shards": committee.n_shards, "nodes": rows})
        );
        return Ok(());
    }
    println!(
        "epoch {} · {} shards · {} nodes",
        committee.epoch,
        committee.n_shards,
        committee.members.len()
    );
    match blob {
        None => {
            println!(
                "{:<10} {:<22} {:<11} {:>5} {:>6} {:>12} {:>6} {:>8}",
                "NODE", "ADDRESS", "STATUS", "EPOCH", "SHARDS", "STORED", "BLOBS", "BACKLOG"
            );
            for r in rows {
                println!(
                    "{:<10} {:<22} {:<11} {:>5} {:>6} {:>12} {:>6} {:>8}",
                    s(&r["node"]),
                    s(&r["address"]),
                    s(&r["status"]),
                    s(&r["epoch"]),
                    s(&r["shards"]),
                    s(&r["stored_bytes"]),
                    s(&r["blobs"]),
                    s(&r["recovery_backlog"])
                );
            }
        }
        Some(_) => {
            println!(
                "{:<10} {:<22} {:<11} {:>13}",
                "NODE", "ADDRESS", "STATE", "PAIRS"
            );
            for r in rows {
                println!(
                    "{:<10} {:<22} {:<11} {:>6}/{:<6}",
                    s(&r["node"]),
                    s(&r["address"]),
                    s(&r["state"]),
                    s(&r["pairs_stored"]),
                    s(&r["pairs_owned"])
                );
            }
        }
    }
    Ok(())
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(x) => x.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn status_name(s: i32) -> &'static str {
    match proto::NodeStatus::try_from(s) {
        Ok(proto::NodeStatus::Active) => "active",
        Ok(proto::NodeStatus::Recovering) => "recovering",
        Ok(proto::NodeStatus::Syncing) => "syncing",
        _ => "standby",
    }
}

async fn testnet_cmd(cli: &Cli, cmd: &TestnetCmd) -> anyhow::Result<()> {
    let dir = &cli.testnet_dir;
    match cmd {
        TestnetCmd::Up {
            nodes,
            shards,
            dir: d,
            epoch,
            foreground,
            node_bin,
            fault,
        } => {
            let dir = d.clone().unwrap_or_else(|| dir.clone());
            let node_bin = testnet::find_node_bin(node_bin.clone())?;
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
                nodes: *nodes,
                shards: *shards,
                epoch: *epoch,
                node_bin: node_bin.clone(),
                faults: parse_faults(fault)?,
            };
            if *foreground {
                let sup = testnet::Supervisor::create(&opts)?;
                eprintln!("testnet starting in the foreground (Ctrl-C stops it)");
                return sup.run().await;
            }
            std::fs::create_dir_all(&dir)?;
            let log = std::fs::File::create(dir.join("supervisor.log"))?;
            let mut cmd = std::process::Command::new(std::env::current_exe()?);
            cmd.args(["testnet", "supervise", "--dir"])
                .arg(&dir)
                .args([
                    "--nodes",
                    &nodes.to_string(),
                    "--shards",
                    &shards.to_string(),
                    "--epoch-seconds",
                    &epoch.as_secs().to_string(),
                ])
                .arg("--node-bin")
                .arg(&node_bin)
                .env(
                    "FLOE_LOG",
                    std::env::var("FLOE_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::from(log.try_clone()?))
                .stderr(std::process::Stdio::from(log));
            for f in fault {
                cmd.args(["--fault", f]);
            }
            use std::os::unix::process::CommandExt;
            cmd.process_group(0); // detached: survives this shell's Ctrl-C
            let child = cmd.spawn().context("starting the testnet supervisor")?;
            let state = testnet::wait_ready(&dir, child.id(), Duration::from_secs(90))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                println!(
                    "testnet up: {} nodes, {} shards, data in {}",
                    state.nodes.len(),
                    state.n_shards,
                    state.dir.display()
                );
                for n in &state.nodes {
                    println!(
                        "  {:<7} grpc {:<21} metrics http://{}/metrics",
                        n.name, n.grpc, n.http
                    );
                }
                println!("try:  floe put FILE   ·   floe testnet status   ·   floe testnet down");
            }
            Ok(())
        }
        TestnetCmd::Supervise {
            dir,
            nodes,
            shards,
            epoch_seconds,
            node_bin,
            fault,
        } => {
            let opts = UpOptions {
                dir: dir.clone(),
                nodes: *nodes,
                shards: *shards,
                epoch: Duration::from_secs(*epoch_seconds),
                node_bin: node_bin.clone(),
                faults: parse_faults(fault)?,
            };
            testnet::Supervisor::create(&opts)?.run().await
        }
        TestnetCmd::Status => {
            let state = TestnetState::load(dir)?;
            let mut rows = Vec::new();
            for n in &state.nodes {
                let info = NodeClient::new(&n.grpc, 16 << 20)?.info().await.ok();
                rows.push(json!({
                    "name": n.name, "pid": n.pid, "grpc": n.grpc, "restarts": n.restarts,
                    "status": info.as_ref().map_or(if n.wants_stopped() { "stopped" } else { "down" }, |i| status_name(i.status)),
                    "epoch": info.as_ref().map(|i| i.epoch), "shards": info.as_ref().map(|i| i.shards.len()),
                    "stored_bytes": info.as_ref().map(|i| i.stored_bytes), "blobs": info.as_ref().map(|i| i.blobs),
                    "recovery_backlog": info.as_ref().map(|i| i.recovery_backlog),
                }));
            }
            if cli.json {
                println!(
                    "{}",
                    json!({"dir": state.dir, "n_shards": state.n_shards, "epoch_seconds": state.epoch_seconds, "nodes": rows})
                );
            } else {
                println!(
                    "testnet {} · {} shards · epoch {}s",
                    state.dir.display(),
                    state.n_shards,
                    state.epoch_seconds
                );
                println!(
                    "{:<7} {:>7} {:<21} {:<11} {:>5} {:>6} {:>12} {:>6} {:>8} {:>8}",
                    "NODE",
                    "PID",
                    "GRPC",
                    "STATUS",
                    "EPOCH",
                    "SHARDS",
                    "STORED",
                    "BLOBS",
                    "BACKLOG",
                    "RESTARTS"
                );
                for r in rows {
                    println!(
                        "{:<7} {:>7} {:<21} {:<11} {:>5} {:>6} {:>12} {:>6} {:>8} {:>8}",
                        s(&r["name"]),
                        s(&r["pid"]),
                        s(&r["grpc"]),
                        s(&r["status"]),
                        s(&r["epoch"]),
                        s(&r["shards"]),
                        s(&r["stored_bytes"]),
                        s(&r["blobs"]),
                        s(&r["recovery_backlog"]),
                        s(&r["restarts"])
                    );
                }
            }
            Ok(())
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
            let client = NodeClient::new(&n.grpc, 16 << 20)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while client.info().await.map(|i| i.epoch).unwrap_or(0) == 0 {
                if Instant::now() > deadline {
                    bail!(
                        "{node} did not come back; see {}",
                        n.dir.join("log").display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprintln!(
                "{node} is back{}",
                if *wipe {
                    " with an empty disk; it rebuilds its slivers from peers"
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
    }
}
