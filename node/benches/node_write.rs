//! Storage-node write benchmark: prints one table (README "Benchmarks").
//!
//! `cargo bench -p floe-node --bench node_write`. One real `floe-node` process on loopback owns
//! all 1000 shards. It measures verified-and-persisted MiB/s for primary slivers of ~1 MiB and
//! ~32 MiB sent over gRPC, against raw sequential writes (write + fsync + rename, as the store
//! does) of the same bytes into the same directory in the same run, and the node's peak RSS while
//! it stores every sliver of a 64 MiB and of a 256 MiB blob.

use floe_node::testing::{free_port, random_bytes as rand_bytes};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floe_node::client::{BlobClient, ClientConfig, NodeClient};
use floe_node::codec::{encode, Axis, BlobMetadata, EncodingParams, Sliver, ENCODING_RS2};
use floe_node::protocol::{Committee, Member, NodeId};

const MIB: f64 = (1 << 20) as f64;
/// Alternating node/raw rounds per case.
const ROUNDS: usize = 5;

struct Round {
    node_time: f64,
    raw_time: f64,
    verify: f64,
    persist: f64,
}

struct Node {
    child: Child,
    addr: String,
    tls: bool,
}

impl Node {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        std::fs::write(dir.join("token"), "bench").unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_floe-node"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--grpc-addr",
                &addr,
                "--http-addr",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .arg("--admin-token-file")
            .arg(dir.join("token"))
            .args(extra)
            .env("FLOE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("floe-node");
        Self {
            child,
            addr,
            tls: extra.contains(&"--tls"),
        }
    }
    /// The address clients use (`https://` with `--tls`).
    fn address(&self) -> String {
        if self.tls {
            format!("https://{}", self.addr)
        } else {
            self.addr.clone()
        }
    }
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready(addr: &str) -> (NodeClient, NodeId) {
    let c = NodeClient::new(addr, 96 << 20).unwrap();
    for _ in 0..100 {
        if let Ok(i) = c.info().await {
            return (c, NodeId::try_from(i.node_id.as_slice()).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node did not start");
}

async fn one_node_committee(node: &Node) -> (NodeClient, Committee) {
    let (c, id) = ready(&node.address()).await;
    let committee = Committee {
        epoch: 1,
        n_shards: 1000,
        members: vec![Member {
            node_id: id,
            address: node.address(),
            stake: 1,
            shards: (0..1000).collect(),
        }],
        economics: None,
    };
    c.clone()
        .with_admin_token("bench")
        .set_committee(&committee)
        .await
        .unwrap();
    (c, committee)
}

/// Raw sequential writes of `slivers` into `dir`: create, write, fsync, rename, fsync dir.
fn raw_write(dir: &Path, slivers: &[Sliver]) -> Duration {
    std::fs::create_dir_all(dir).unwrap();
    let t = Instant::now();
    for (i, s) in slivers.iter().enumerate() {
        use std::io::Write;
        let tmp = dir.join(format!(".tmp{i}"));
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(&s.to_bytes()).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, dir.join(format!("{i}"))).unwrap();
        std::fs::File::open(dir).unwrap().sync_all().unwrap();
    }
    t.elapsed()
}

#[tokio::main]
async fn main() {
    let root = tempfile::tempdir_in(
        std::env::var_os("FLOE_BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into()),
    )
    .unwrap();
    println!(
        "Floe node write benchmark (one floe-node process on loopback; directory {})",
        root.path().display()
    );
    let params = EncodingParams::new(1000).unwrap();
    let ks = params.k_secondary();
    // FLOE_BENCH_ONLY=tls: only the TLS table; =table: only the main table
    let only = std::env::var("FLOE_BENCH_ONLY").unwrap_or_default();
    if only != "table" {
        tls_cost(root.path(), &params).await;
    }
    if only == "tls" {
        return;
    }
    println!("| sliver | slivers | in flight | node verified+persisted | raw write+fsync, same dir | ratio: median (all rounds) | node verify share | node persist share |");
    println!("|---|---|---|---|---|---|---|---|");
    for (target_mib, count, in_flight) in [
        (1usize, 96usize, 1usize),
        (1, 96, 4),
        (1, 96, 8),
        (32, 6, 1),
        (32, 6, 2),
    ] {
        let node_dir = root.path().join(format!("node-{target_mib}-{in_flight}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let node = Node::start(&node_dir, &[]);
        let (client, _) = one_node_committee(&node).await;
        // A symbol size giving primary slivers of ~target: metadata with real hashes for the
        // slivers we send and filler for the others (the node checks only what it receives).
        let s = ((target_mib << 20) / ks) & !1;
        let len = (params.source_symbols() * s) as u64;
        let shape = params.symbol_shape(len).unwrap();
        let slivers: Vec<Sliver> = (0..count)
            .map(|p| Sliver {
                axis: Axis::Primary,
                index: p as u16,
                symbol_size: s as u16,
                data: rand_bytes(ks * s, p as u64 + 7),
            })
            .collect();
        let hashes: Vec<[u8; 32]> = slivers.iter().map(|sl| sl.hash(&shape).unwrap()).collect();
        let bytes = (count * ks * s) as f64;
        // The disk's speed drifts a lot on a shared machine: alternate node and raw rounds and
        // report the round with the median ratio.
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            // Filler hashes differ per round, so every round is a new blob ID for the same slivers.
            let mut pair_hashes: Vec<([u8; 32], [u8; 32])> = (0..1000)
                .map(|i| ([i as u8; 32], [(i >> 8) as u8 ^ round as u8; 32]))
                .collect();
            for (sl, h) in slivers.iter().zip(&hashes) {
                pair_hashes[sl.index as usize].0 = *h;
            }
            let md = BlobMetadata {
                encoding_type: ENCODING_RS2,
                len,
                pair_hashes,
            };
            let before = stage_sums(&node);
            let node_time = store_round(&client, &md, &slivers, in_flight).await;
            let after = stage_sums(&node);
            let raw_time = raw_write(
                &root
                    .path()
                    .join(format!("raw-{target_mib}-{in_flight}-{round}")),
                &slivers,
            )
            .as_secs_f64();
            rounds.push(Round {
                node_time,
                raw_time,
                verify: (after.0 - before.0) / node_time,
                persist: (after.1 - before.1) / node_time,
            });
        }
        rounds.sort_by(|a, b| (a.raw_time / a.node_time).total_cmp(&(b.raw_time / b.node_time)));
        let ratios: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.2}", r.raw_time / r.node_time))
            .collect();
        let m = &rounds[rounds.len() / 2];
        println!(
            "| {:.1} MiB | {count} | {in_flight} | {:.0} MiB/s | {:.0} MiB/s | **{:.2}** ({}) | {:.0} % | {:.0} % |",
            (ks * s) as f64 / MIB,
            bytes / MIB / m.node_time,
            bytes / MIB / m.raw_time,
            m.raw_time / m.node_time,
            ratios.join(", "),
            100.0 * m.verify,
            100.0 * m.persist,
        );
    }
    println!();
    println!(
        "| blob (n = 1000, one node holds every sliver) | sliver bytes stored | node peak RSS |"
    );
    println!("|---|---|---|");
    for mib in [64usize, 256] {
        let node_dir = root.path().join(format!("rss-{mib}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let node = Node::start(&node_dir, &["--max-concurrent-requests", "8"]);
        let (_, committee) = one_node_committee(&node).await;
        let data = rand_bytes(mib << 20, 3);
        let enc_bytes = {
            let e = encode(&data, params).unwrap();
            (e.shape().primary_sliver_len() + e.shape().secondary_sliver_len()) * 1000
        };
        let client = BlobClient::new(
            committee,
            ClientConfig {
                max_in_flight_bytes: 64 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        client.write(data, None).await.unwrap();
        println!(
            "| {mib} MiB | {:.0} MiB | {:.0} MiB |",
            enc_bytes as f64 / MIB,
            node.peak_rss_mib()
        );
    }
}

/// GET /metrics without an HTTP client dependency: the node's HTTP port is the one after
/// --http-addr in its command line.
fn reqwest_free_metrics(node: &Node) -> String {
    use std::io::{Read, Write};
    let cmdline =
        std::fs::read_to_string(format!("/proc/{}/cmdline", node.child.id())).unwrap_or_default();
    let args: Vec<&str> = cmdline.split('\0').collect();
    let http = args
        .iter()
        .position(|a| *a == "--http-addr")
        .map(|i| args[i + 1])
        .unwrap_or_default();
    let Ok(mut s) = std::net::TcpStream::connect(http) else {
        return String::new();
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Seconds the node has spent verifying and persisting slivers so far.
fn stage_sums(node: &Node) -> (f64, f64) {
    let m = reqwest_free_metrics(node);
    (
        metric_sum(&m, "floe_node_sliver_stage_seconds_sum{stage=\"verify\"}"),
        metric_sum(&m, "floe_node_sliver_stage_seconds_sum{stage=\"persist\"}"),
    )
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Primary slivers of ~`target_mib` for a blob of `params`, and metadata that commits to them
/// (`round` makes a new blob ID for the same slivers).
fn sliver_set(params: &EncodingParams, target_mib: usize, count: usize) -> (Vec<Sliver>, u64) {
    let ks = params.k_secondary();
    let s = ((target_mib << 20) / ks) & !1;
    let len = (params.source_symbols() * s) as u64;
    let slivers = (0..count)
        .map(|p| Sliver {
            axis: Axis::Primary,
            index: p as u16,
            symbol_size: s as u16,
            data: rand_bytes(ks * s, p as u64 + 7),
        })
        .collect();
    (slivers, len)
}

fn metadata_for(
    params: &EncodingParams,
    slivers: &[Sliver],
    len: u64,
    round: usize,
) -> BlobMetadata {
    let shape = params.symbol_shape(len).unwrap();
    let mut pair_hashes: Vec<([u8; 32], [u8; 32])> = (0..1000)
        .map(|i| ([i as u8; 32], [(i >> 8) as u8 ^ round as u8; 32]))
        .collect();
    for sl in slivers {
        pair_hashes[sl.index as usize].0 = sl.hash(&shape).unwrap();
    }
    BlobMetadata {
        encoding_type: ENCODING_RS2,
        len,
        pair_hashes,
    }
}

/// Seconds to store `slivers` of a new blob on the node behind `client`.
async fn store_round(
    client: &NodeClient,
    md: &BlobMetadata,
    slivers: &[Sliver],
    in_flight: usize,
) -> f64 {
    use futures::stream::StreamExt;
    let id = md.blob_id();
    client.put_metadata(&id, md).await.unwrap();
    let t = Instant::now();
    futures::stream::iter(slivers)
        .map(|sl| {
            let client = client.clone();
            async move {
                assert!(
                    !client.put_sliver(&id, sl.index, sl).await.unwrap(),
                    "stored twice"
                );
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await;
    t.elapsed().as_secs_f64()
}

/// What TLS costs on the write path: the same slivers stored on a plain and on a `--tls` node,
/// rounds alternating between them; the median ratio of times (TLS / plain).
async fn tls_cost(root: &Path, params: &EncodingParams) {
    println!("| sliver | slivers | in flight | plain | TLS | time ratio TLS/plain: median (all rounds) |");
    println!("|---|---|---|---|---|---|");
    for (target_mib, count, in_flight) in [(1usize, 96usize, 8usize), (32, 6, 2)] {
        let (slivers, len) = sliver_set(params, target_mib, count);
        let bytes = slivers.iter().map(|s| s.data.len()).sum::<usize>() as f64;
        let mut nodes = Vec::new();
        for tls in [false, true] {
            let dir = root.join(format!("tls-{tls}-{target_mib}"));
            std::fs::create_dir_all(&dir).unwrap();
            let node = Node::start(&dir, if tls { &["--tls"] } else { &[] });
            let (client, _) = one_node_committee(&node).await;
            nodes.push((node, client));
        }
        let mut ratios = Vec::new();
        let mut times = Vec::new();
        for round in 0..ROUNDS {
            let md = metadata_for(params, &slivers, len, round);
            let plain = store_round(&nodes[0].1, &md, &slivers, in_flight).await;
            let tls = store_round(&nodes[1].1, &md, &slivers, in_flight).await;
            ratios.push(tls / plain);
            times.push((plain, tls));
        }
        let mut sorted: Vec<usize> = (0..ratios.len()).collect();
        sorted.sort_by(|a, b| ratios[*a].total_cmp(&ratios[*b]));
        let m = sorted[sorted.len() / 2];
        println!(
            "| {:.1} MiB | {count} | {in_flight} | {:.0} MiB/s | {:.0} MiB/s | **{:.2}** ({}) |",
            slivers[0].data.len() as f64 / MIB,
            bytes / MIB / times[m].0,
            bytes / MIB / times[m].1,
            ratios[m],
            sorted
                .iter()
                .map(|i| format!("{:.2}", ratios[*i]))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    println!();
}
