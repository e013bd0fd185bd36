//! Epoch-change benchmark (issue target): a 10-node, 100-shard testnet holding 1 GiB of blobs
//! gains one node. Prints the bytes moved over the network (sync + recovery, counted by the
//! receiving nodes' `floe_node_peer_bytes_received_total`) against the minimum — the slivers of
//! the shards that changed owner — and the wall time of the change.
//!
//! `cargo bench -p floe-operator --bench epoch_change [-- --gib 1 --nodes 10 --shards 100 --blob-mib 64]`

use std::path::Path;
use std::time::{Duration, Instant};

use floe_node::client::{BlobClient, ClientConfig};
use floe_node::codec::EncodingParams;
use floe_node::testing::random_bytes;
use serde_json::Value;

mod common;
use common::{ensure_node_bin, floe as run};

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&run(dir, &[&["--json"], args].concat())).unwrap()
}

/// A node's `floe_node_peer_bytes_received_total` (sync + recovery).
fn peer_bytes(http: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(http) else {
        return 0;
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut t = String::new();
    let _ = s.read_to_string(&mut t);
    t.lines()
        .filter(|l| l.starts_with("floe_node_peer_bytes_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn owners(c: &Value) -> std::collections::BTreeMap<u64, String> {
    let mut m = std::collections::BTreeMap::new();
    for mem in c["members"].as_array().unwrap() {
        for s in mem["shards"].as_array().unwrap() {
            m.insert(s.as_u64().unwrap(), mem["node_id"].as_str().unwrap().into());
        }
    }
    m
}

fn main() {
    let gib = arg("--gib", 1.0);
    let nodes = arg("--nodes", 10.0) as usize;
    let shards = arg("--shards", 100.0) as u16;
    let blob_mib = arg("--blob-mib", 64.0) as usize;
    ensure_node_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(
        d,
        &[
            "testnet",
            "up",
            "--nodes",
            &nodes.to_string(),
            "--shards",
            &shards.to_string(),
            "--epoch",
            "1d",
            "--challenge-samples",
            "10",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let grpc = common::node_addresses(d);
    let client = rt
        .block_on(BlobClient::connect(&grpc, ClientConfig::default()))
        .unwrap();
    let count = ((gib * 1024.0) as usize / blob_mib).max(1);
    let opts = rt.block_on(common::put_options(d));
    let params = EncodingParams::new(shards as usize).unwrap();
    let mut sliver_pair_bytes = 0u64; // per shard: one primary + one secondary sliver per blob
    let t0 = Instant::now();
    for i in 0..count {
        let data = random_bytes(blob_mib << 20, i as u64 + 1);
        let shape = params.symbol_shape(data.len() as u64).unwrap();
        sliver_pair_bytes += (shape.primary_sliver_len() + shape.secondary_sliver_len()) as u64;
        rt.block_on(client.write_with(data, &opts, None)).unwrap();
        eprintln!("stored blob {}/{count}", i + 1);
    }
    eprintln!("stored {count} × {blob_mib} MiB in {:.1?}", t0.elapsed());
    // let the nodes that missed slivers in the write's grace period catch up first, so the
    // change is measured alone
    loop {
        let s = json(d, &["testnet", "status"]);
        if s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["recovery_backlog"].as_u64() == Some(0))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let https = |d: &Path| -> Vec<String> {
        let st: Value =
            serde_json::from_slice(&std::fs::read(d.join("testnet.json")).unwrap()).unwrap();
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["http"].as_str().unwrap().to_string())
            .collect()
    };
    let before: u64 = https(d).iter().map(|h| peer_bytes(h)).sum();
    run(d, &["testnet", "add-node"]);
    let t = Instant::now();
    run(d, &["testnet", "next-epoch", "--timeout", "1800s"]);
    let change = t.elapsed();
    // the change completes at a quorum; wait for every member (the joiner too) to finish
    loop {
        let s = json(d, &["testnet", "status"]);
        let busy = s["nodes"].as_array().unwrap().iter().any(|n| {
            n["status"] != "active" && n["status"] != "released"
                || n["recovery_backlog"].as_u64().unwrap_or(0) > 0
        });
        if !busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let all_synced = t.elapsed();
    let after: u64 = https(d).iter().map(|h| peer_bytes(h)).sum();
    let control: Value =
        serde_json::from_slice(&std::fs::read(d.join("control.json")).unwrap()).unwrap();
    let (ob, oa) = (owners(&control["previous"]), owners(&control["committee"]));
    let moved = oa.iter().filter(|(s, id)| ob.get(s) != Some(id)).count() as u64;
    let minimum = moved * sliver_pair_bytes;
    let moved_bytes = after - before;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "| nodes | shards | blobs | stored | shards moved | minimum (their slivers) | bytes moved | ratio | change (quorum done) | all members done |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {nodes} → {} | {shards} | {count} × {blob_mib} MiB | {:.2} GiB | {moved} | {:.1} MiB | {:.1} MiB | **{:.3}** | {:.1} s | {:.1} s |",
        nodes + 1,
        (count * blob_mib) as f64 / 1024.0,
        mib(minimum),
        mib(moved_bytes),
        moved_bytes as f64 / minimum.max(1) as f64,
        change.as_secs_f64(),
        all_synced.as_secs_f64()
    );
    run(d, &["testnet", "down"]);
}
