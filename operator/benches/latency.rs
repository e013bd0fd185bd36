//! Small-blob latency and a node's verification cost: prints two tables (README, issue figures).
//!
//! `cargo bench -p floe-operator --bench latency`. First, what a node pays to verify one
//! received sliver pair (both slivers: expand, hash, compare with the metadata) at n = 1000;
//! then the end-to-end `put` of a 1 MiB blob on a local 7-node, 1000-shard testnet (real
//! `floe-node` processes on loopback, the client in this process): median and spread of
//! several puts, each of a fresh blob. `-- --puts 1000`: a thousand puts of 16 KiB blobs
//! instead (blobs per second).

use std::time::{Duration, Instant};

use floe_node::client::{BlobClient, ClientConfig};
use floe_node::codec::{encode, EncodingParams};
use floe_node::testing::random_bytes as random;

mod common;
use common::floe;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `--puts N`: N puts of 16 KiB blobs (16 at a time, or `--concurrency C`) from one client on a 7-node, 100-shard
/// testnet; blobs per second, and the testnet's files and bytes on disk per stored byte.
async fn many_small_puts(count: usize, concurrency: usize) {
    use futures::stream::StreamExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    floe(
        dir.path(),
        &[
            "testnet", "up", "--nodes", "7", "--shards", "100", "--epoch", "1d",
        ],
    );
    let _down = common::DownOnDrop(dir.path());
    let grpc = common::node_addresses(dir.path());
    let client = BlobClient::connect(&grpc, ClientConfig::default())
        .await
        .unwrap();
    let client = &client;
    let opts = &common::put_options(dir.path()).await;
    let t = Instant::now();
    let outcomes: Vec<_> = futures::stream::iter(0..count as u64)
        .map(|seed| async move {
            client
                .write_with(random(16 << 10, seed), opts, None)
                .await
                .unwrap()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = t.elapsed();
    let done = outcomes.len();
    use std::os::unix::fs::MetadataExt;
    let (mut files, mut bytes, mut allocated) = (0u64, 0u64, 0u64);
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if e.path().to_string_lossy().contains("/data/") {
                files += 1;
                bytes += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    println!("| puts of 16 KiB ({concurrency} at a time) | time | blobs/s | files under the nodes' data dirs | file bytes | disk allocated |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {done} | {:.1} s | **{:.0}** | {files} | {:.0} MiB | {:.0} MiB |",
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64,
        allocated as f64 / (1 << 20) as f64
    );
    // where a put's time goes: encoding, registration (before the upload), upload to the
    // quorum (and the grace for the rest), certificates (after it)
    let pct = |mut v: Vec<Duration>, q: f64| {
        v.sort();
        ms(v[((v.len() - 1) as f64 * q) as usize])
    };
    let phase = |f: &dyn Fn(&floe_node::client::WriteOutcome) -> Duration| {
        let v: Vec<Duration> = outcomes.iter().map(f).collect();
        format!("{:.1} / {:.1}", pct(v.clone(), 0.5), pct(v, 0.99))
    };
    println!();
    println!("| phase of a put (p50 / p99, ms) | encode | register | upload | certify | total |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {concurrency} at a time | {} | {} | {} | {} | {} |",
        phase(&|o| o.encode_time),
        phase(&|o| o.register_time),
        phase(&|o| o.upload_time),
        phase(&|o| o
            .total_time
            .saturating_sub(o.encode_time + o.register_time + o.upload_time)),
        phase(&|o| o.total_time),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args
        .iter()
        .position(|a| a == "--puts")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
    {
        common::ensure_node_bin();
        let concurrency = args
            .iter()
            .position(|a| a == "--concurrency")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        return many_small_puts(n, concurrency).await;
    }
    common::ensure_node_bin();
    let params = EncodingParams::new(1000).unwrap();
    println!("Verification of one received sliver pair at n = 1000 (one thread, best of 20)");
    println!("| blob | verify a pair |");
    println!("|---|---|");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for mib in [1usize, 16, 64, 256] {
        let data = random(mib << 20, mib as u64);
        let enc = encode(&data, params).unwrap();
        let pair = enc.pair(500);
        let md = enc.metadata().clone();
        drop(enc);
        let best = (0..20)
            .map(|_| {
                let t = Instant::now();
                one.install(|| {
                    pair.primary.verify(&md).unwrap();
                    pair.secondary.verify(&md).unwrap();
                });
                t.elapsed()
            })
            .min()
            .unwrap();
        println!("| {mib} MiB | {:.3} ms |", ms(best));
    }

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    floe(
        dir.path(),
        &["testnet", "up", "--nodes", "7", "--shards", "1000"],
    );
    let _down = common::DownOnDrop(dir.path());
    let grpc = common::node_addresses(dir.path());
    let client = BlobClient::connect(&grpc, ClientConfig::default())
        .await
        .unwrap();
    let opts = common::put_options(dir.path()).await;
    // one warm-up put (connections, page cache), then the measured ones
    client
        .write_with(random(1 << 20, 999), &opts, None)
        .await
        .unwrap();
    let mut puts: Vec<(Duration, Duration)> = Vec::new();
    for seed in 0..9u64 {
        let out = client
            .write_with(random(1 << 20, seed), &opts, None)
            .await
            .unwrap();
        puts.push((out.total_time, out.encode_time));
    }
    puts.sort();
    let (median, encode_median) = puts[puts.len() / 2];
    println!();
    println!(
        "Put of a 1 MiB blob at n = 1000 on a 7-node testnet ({} puts after one warm-up)",
        puts.len()
    );
    println!("| put median | min | max | encode (in the median put) |");
    println!("|---|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
        ms(median),
        ms(puts[0].0),
        ms(puts[puts.len() - 1].0),
        ms(encode_median)
    );
}
