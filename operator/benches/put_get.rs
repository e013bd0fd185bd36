//! End-to-end write/read benchmark on a local 7-node testnet: prints one table (README).
//!
//! `cargo bench -p floe-operator --bench put_get` (`-- --memory`: the client's peak RSS per
//! encoder mode instead). Real `floe` and `floe-node` processes on
//! loopback; the client runs in this process. For each case it measures, in the same run, the
//! encode alone, the full write (encode → upload → verify and persist on the nodes → confirm →
//! certify) and the read, and reads the nodes' own verify/persist timings from their metrics,
//! and the CPU time the client and the nodes spent on the put (from /proc): that CPU work spread
//! over every core is a floor on the put's wall time when everything shares one machine.

use floe_node::testing::random_bytes as rand_bytes;
use std::process::Command;
use std::time::Instant;

use floe_node::client::{BlobClient, ClientConfig};
use floe_node::codec::{encode, EncodingParams};

const MIB: f64 = (1 << 20) as f64;

mod common;
use common::{ensure_node_bin, floe as testnet};

/// Sum of a metric over every node's /metrics.
fn node_metric_sum(http: &[String], name: &str) -> f64 {
    use std::io::{Read, Write};
    http.iter()
        .filter_map(|a| {
            let mut s = std::net::TcpStream::connect(a).ok()?;
            write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
            let mut t = String::new();
            s.read_to_string(&mut t).ok()?;
            t.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}

/// CPU seconds (user + system, all threads) a process has used so far.
fn cpu_seconds(pid: &str, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) / ticks_per_second)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// This process's resident set now and at its peak since the last [`reset_peak_rss`], in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Reset the kernel's peak-RSS mark of this process (`clear_refs` 5).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

/// `--memory`: the client's peak RSS during a put of 256 MiB at n = 1000, per encoder mode,
/// relative to the blob (the blob counted when the client holds it).
async fn memory_table() {
    let mib = 256usize;
    let len = (mib << 20) as u64;
    println!("Client peak RSS during a put of {mib} MiB at n = 1000 (7-node testnet; RSS above the client's resident set before the blob existed, / blob)");
    println!("| mode | put total | encode | upload | client peak RSS / blob |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    testnet(
        dir.path(),
        &["testnet", "up", "--nodes", "7", "--shards", "1000"],
    );
    let grpc = common::node_addresses(dir.path());
    let opts = common::put_options(dir.path()).await;
    let path = dir.path().join("blob");
    std::fs::write(&path, rand_bytes(len as usize, 7)).unwrap();
    for (mode, stream_from, from_file) in [
        ("in memory, compact encoder (before)", u64::MAX, false),
        ("in memory, streaming encoder (4 pair groups)", 0, false),
        ("from the file, streaming encoder (2 pair groups)", 0, true),
    ] {
        let client = BlobClient::connect(
            &grpc,
            ClientConfig {
                stream_from_bytes: stream_from,
                ..ClientConfig::default()
            },
        )
        .await
        .unwrap();
        // the codec keeps a leaf matrix between encodes: count it in this put's peak
        floe_node::codec::release_spare_buffers();
        let (base, _) = rss();
        reset_peak_rss();
        let out = if from_file {
            client.write_file_with(&path, &opts, None).await.unwrap()
        } else {
            let data = std::fs::read(&path).unwrap();
            client.write_with(data, &opts, None).await.unwrap()
        };
        let (_, peak) = rss();
        println!(
            "| {mode} | {:.2} s | {:.2} s | {:.2} s | **{:.2}×** |",
            out.total_time.as_secs_f64(),
            out.encode_time.as_secs_f64(),
            out.upload_time.as_secs_f64(),
            peak.saturating_sub(base) as f64 / len as f64,
        );
        let back = client.read(&out.blob_id, None).await.unwrap();
        assert!(back == std::fs::read(&path).unwrap(), "read back differs");
    }
    testnet(dir.path(), &["testnet", "down"]);
}

#[tokio::main]
async fn main() {
    ensure_node_bin();
    if std::env::args().any(|a| a == "--memory") {
        return memory_table().await;
    }
    println!("Floe end-to-end put/get on a 7-node local testnet (all processes share this machine's cores)");
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let tck = clock_ticks();
    println!("| shards | blob | encode alone | put total | put MiB/s | put / encode | upload (after encode) | node verify (sum) | node persist (sum) | CPU: client + nodes | CPU bound on put / encode | get | get MiB/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (shards, sizes) in [(100u16, vec![64usize]), (1000, vec![64, 256])] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        testnet(
            dir.path(),
            &[
                "testnet",
                "up",
                "--nodes",
                "7",
                "--shards",
                &shards.to_string(),
            ],
        );
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("testnet.json")).unwrap(),
        )
        .unwrap();
        let grpc = common::node_addresses(dir.path());
        let opts = common::put_options(dir.path()).await;
        let http: Vec<String> = state["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["http"].as_str().unwrap().to_string())
            .collect();
        let pids: Vec<String> = state["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["pid"].as_u64())
            .map(|p| p.to_string())
            .collect();
        let nodes_cpu = || pids.iter().map(|p| cpu_seconds(p, tck)).sum::<f64>();
        let client = BlobClient::connect(&grpc, ClientConfig::default())
            .await
            .unwrap();
        let params = EncodingParams::new(shards as usize).unwrap();
        for mib in sizes {
            let data = rand_bytes(mib << 20, mib as u64);
            let t = Instant::now();
            drop(encode(&data, params).unwrap());
            let encode_alone = t.elapsed();
            let v0 = node_metric_sum(
                &http,
                "floe_node_sliver_stage_seconds_sum{stage=\"verify\"}",
            );
            let p0 = node_metric_sum(
                &http,
                "floe_node_sliver_stage_seconds_sum{stage=\"persist\"}",
            );
            let (c0, n0) = (cpu_seconds("self", tck), nodes_cpu());
            let out = client.write_with(data.clone(), &opts, None).await.unwrap();
            let (client_cpu, node_cpu) = (cpu_seconds("self", tck) - c0, nodes_cpu() - n0);
            let verify = node_metric_sum(
                &http,
                "floe_node_sliver_stage_seconds_sum{stage=\"verify\"}",
            ) - v0;
            let persist = node_metric_sum(
                &http,
                "floe_node_sliver_stage_seconds_sum{stage=\"persist\"}",
            ) - p0;
            let t = Instant::now();
            let back = client.read(&out.blob_id, None).await.unwrap();
            let get = t.elapsed();
            assert!(back == data, "read back differs");
            println!(
                "| {shards} | {mib} MiB | {:.2} s | {:.2} s | {:.0} | {:.2}× | {:.2} s | {:.2} s | {:.2} s | {:.2} s + {:.2} s | ≥ {:.2}× | {:.2} s | {:.0} |",
                encode_alone.as_secs_f64(),
                out.total_time.as_secs_f64(),
                mib as f64 / out.total_time.as_secs_f64(),
                out.total_time.as_secs_f64() / encode_alone.as_secs_f64(),
                out.upload_time.as_secs_f64(),
                verify,
                persist,
                client_cpu,
                node_cpu,
                // the put cannot take less wall time than its CPU work spread over every core
                (client_cpu + node_cpu) / cores / encode_alone.as_secs_f64(),
                get.as_secs_f64(),
                (mib as f64 * MIB) / MIB / get.as_secs_f64(),
            );
        }
        testnet(dir.path(), &["testnet", "down"]);
    }
}
