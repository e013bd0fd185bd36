//! What a storage challenge reads (issue target: at most 1 % of what a node stores). A 4-node,
//! 100-shard testnet stores blobs; the control plane runs its epoch-2 challenge round (1375
//! items per member, the default); each member reports the stored bytes it read to answer
//! (`bytes_read`: one symbol and its stored proof path per item of a large sliver, the whole
//! sliver for a small one) and its stored bytes. Prints one row per member.
//!
//! `cargo bench -p floe-operator --bench challenge_read [-- --blobs 100 --blob-mib 4]`

use std::path::Path;

use floe_node::client::{BlobClient, ClientConfig};
use floe_node::testing::random_bytes;
use serde_json::Value;

mod common;
use common::{ensure_node_bin, floe as run};

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&run(dir, &[&["--json"], args].concat())).unwrap()
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let blobs = arg("--blobs", 100.0) as usize;
    let blob_mib = arg("--blob-mib", 4.0);
    ensure_node_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(
        d,
        &[
            "testnet", "up", "--nodes", "4", "--shards", "100", "--epoch", "1d",
        ],
    );
    let grpc = common::node_addresses(d);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = BlobClient::connect(&grpc, ClientConfig::default())
            .await
            .unwrap();
        let opts = common::put_options(d).await;
        for i in 0..blobs {
            let data = random_bytes((blob_mib * (1 << 20) as f64) as usize, 1000 + i as u64);
            client.write_with(data, &opts, None).await.unwrap();
        }
    });
    // blobs certified in epoch 1 are challenged in epoch 2; its round runs before 2 → 3
    for _ in 0..2 {
        json(d, &["testnet", "next-epoch", "--timeout", "600s"]);
    }
    let st = json(d, &["testnet", "status"]);
    let round = &st["last_round"];
    println!(
        "Challenge round of epoch {} on a 4-node, 100-shard testnet holding {blobs} blobs of {blob_mib} MiB ({} eligible)",
        round["epoch"], round["eligible_blobs"]
    );
    println!("| member | items | result | stored | read to answer | read / stored |");
    println!("|---|---|---|---|---|---|");
    let mib = |b: f64| b / (1 << 20) as f64;
    for (id, r) in round["results"].as_object().unwrap() {
        let read = r["bytes_read"].as_f64().unwrap_or(0.0);
        let stored = r["stored_bytes"].as_f64().unwrap_or(0.0);
        println!(
            "| {}… | {} | {} | {:.1} MiB | {:.2} MiB | **{:.2} %** |",
            &id[..8.min(id.len())],
            r["outcome"]["items"],
            r["outcome"]["result"].as_str().unwrap_or("?"),
            mib(stored),
            mib(read),
            100.0 * read / stored.max(1.0),
        );
    }
    run(d, &["testnet", "down"]);
}
