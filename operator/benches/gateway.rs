//! The HTTP gateway against the client library, on a local 7-node testnet (real `floe-node`
//! processes, the testnet's own `floe-gateway`, `curl` and `floe` as separate processes):
//!
//! 1. GET of a large blob through the gateway vs `floe get` (MiB/s, best of 3);
//! 2. small files stored as quilts of 1,000 (files/s), and reading one quilt file vs one
//!    10 KiB blob through the gateway (median latency of 20);
//! 3. peak RSS of the gateway during a large PUT vs `floe put` of the same file.
//!
//! `cargo bench -p floe-operator --bench gateway -- [--get-mib 256] [--files 10000]
//! [--put-mib 1024] [--shards 300]`

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_node::client::{BlobClient, ClientConfig};
use floe_node::quilt::{self, Item};
use floe_node::testing::random_bytes as random;
use futures::StreamExt;

mod common;

fn floe(dir: &Path, args: &[&str]) -> (String, Duration) {
    let t = Instant::now();
    let out = Command::new(common::floe_bin())
        .arg("--testnet-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "floe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), t.elapsed())
}

fn curl(args: &[&str]) -> (String, Duration) {
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        t.elapsed(),
    )
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Peak RSS (VmHWM) of a running process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak RSS of the largest child waited for so far (getrusage), in MiB.
fn children_peak_rss_mib() -> f64 {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the valid, zeroed struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) };
    r.ru_maxrss as f64 / 1024.0
}

fn main() {
    common::ensure_node_bin();
    let get_mib = arg("--get-mib", 256);
    let files = arg("--files", 10_000) as usize;
    let put_mib = arg("--put-mib", 1024);
    let shards = arg("--shards", 300).to_string();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = work.path().join("testnet");
    floe(
        &dir,
        &[
            "testnet", "up", "--nodes", "7", "--shards", &shards, "--epoch", "1d",
        ],
    );
    let _down = common::DownOnDrop(&dir);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("testnet.json")).unwrap()).unwrap();
    let url = state["gateway"].as_str().expect("gateway URL").to_string();
    let gw_pid = state["gateway_pid"].as_u64().unwrap() as u32;
    let nodes = common::node_addresses(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Arc::new(
        rt.block_on(BlobClient::connect(&nodes, ClientConfig::default()))
            .unwrap(),
    );
    // the library's writes buy their lifetimes from the testnet's control plane, as floe put's
    let opts = Arc::new(rt.block_on(common::put_options(&dir)));

    // 3 (first, so no earlier child's peak hides floe put's): memory of a large PUT
    let put = work.path().join("put.bin");
    std::fs::write(&put, random((put_mib << 20) as usize, 2)).unwrap();
    let before = peak_rss_mib(gw_pid);
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "PUT",
        "-T",
        put.to_str().unwrap(),
        &format!("{url}/v1/blobs?force=true"),
    ]);
    let gw_peak = peak_rss_mib(gw_pid);
    let before_children = children_peak_rss_mib();
    // other bytes of the same size: the gateway's account owns the first blob
    std::fs::write(&put, random((put_mib << 20) as usize, 3)).unwrap();
    let _ = floe(&dir, &["put", put.to_str().unwrap()]);
    let cli_peak = children_peak_rss_mib();
    std::fs::remove_file(&put).unwrap();
    println!("\nPeak RSS during a {put_mib} MiB PUT");
    println!("| process | MiB |\n|---|---|");
    println!("| floe-gateway (before: {before:.0}) | {gw_peak:.0} |");
    println!(
        "| floe put (client library; children peak before: {before_children:.0}) | {cli_peak:.0} |"
    );
    println!(
        "| ratio gateway / floe put | {:.2} |",
        gw_peak / cli_peak.max(1.0)
    );
    // 1. GET through the gateway vs floe get
    let big = work.path().join("big.bin");
    std::fs::write(&big, random((get_mib << 20) as usize, 1)).unwrap();
    let (out, _) = floe(&dir, &["--json", "put", big.to_str().unwrap()]);
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["blob_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(&big).unwrap();
    let out_file = work.path().join("out.bin");
    let mut cli = Vec::new();
    let mut http = Vec::new();
    for _ in 0..3 {
        cli.push(floe(&dir, &["get", &id, "-o", out_file.to_str().unwrap()]).1);
        std::fs::remove_file(&out_file).unwrap();
        http.push(curl(&["-o", "/dev/null", &format!("{url}/v1/blobs/{id}")]).1);
    }
    let rate = |d: Duration| get_mib as f64 / d.as_secs_f64();
    let (c, h) = (
        rate(*cli.iter().min().unwrap()),
        rate(*http.iter().min().unwrap()),
    );
    println!("\nGET of a {get_mib} MiB blob, 7 nodes, {shards} shards (best of 3)");
    println!("| path | MiB/s |\n|---|---|");
    println!("| floe get -o FILE | {c:.1} |");
    println!("| curl via gateway | {h:.1} |");
    println!("| ratio gateway / floe get | {:.2} |", h / c);

    // 2. quilts of 1,000 files of 10 KiB, four stored at once
    let per_quilt = 1000.min(files.max(1));
    let quilts = files.div_ceil(per_quilt);
    let t = Instant::now();
    let ids: Vec<String> = rt.block_on(async {
        futures::stream::iter(0..quilts)
            .map(|q| {
                let (client, opts) = (client.clone(), opts.clone());
                async move {
                    let items: Vec<Item> = (0..per_quilt)
                        .map(|i| Item {
                            identifier: format!("file-{i:05}"),
                            tags: Default::default(),
                            data: random(10 << 10, (q * per_quilt + i) as u64),
                        })
                        .collect();
                    let bytes = quilt::encode(&items).unwrap();
                    client
                        .write_with(bytes, &opts, None)
                        .await
                        .unwrap()
                        .blob_id
                        .to_string()
                }
            })
            .buffer_unordered(4)
            .collect()
            .await
    });
    let took = t.elapsed();
    println!(
        "\n{} files of 10 KiB as {quilts} quilts of {per_quilt}: {:.2?} = {:.0} files/s",
        quilts * per_quilt,
        took,
        (quilts * per_quilt) as f64 / took.as_secs_f64()
    );
    let small_id = rt
        .block_on(client.write_with(random(10 << 10, 99), &opts, None))
        .unwrap()
        .blob_id
        .to_string();
    let (mut q_lat, mut b_lat) = (Vec::new(), Vec::new());
    for i in 0..20 {
        q_lat.push(
            curl(&[
                "-o",
                "/dev/null",
                &format!(
                    "{url}/v1/blobs/by-quilt-id/{}/file-{:05}",
                    ids[0],
                    i * 37 % per_quilt
                ),
            ])
            .1,
        );
        b_lat.push(curl(&["-o", "/dev/null", &format!("{url}/v1/blobs/{small_id}")]).1);
    }
    let (q, b) = (median(q_lat), median(b_lat));
    println!("| read through the gateway (median of 20) | ms |\n|---|---|");
    println!(
        "| one 10 KiB file of a quilt | {:.1} |",
        q.as_secs_f64() * 1e3
    );
    println!("| one 10 KiB blob | {:.1} |", b.as_secs_f64() * 1e3);
    println!(
        "| ratio quilt file / blob | {:.2} |",
        q.as_secs_f64() / b.as_secs_f64()
    );
}
