//! floe-gateway driven by HTTP clients nobody in this project wrote: Python `requests` (PyPI)
//! and Debian's Chromium, headless, through playwright-core (npm). `e2e/clients/install.sh`
//! installs them once into `~/.cache/floe/clients` (Chromium with apt-get). The clients' own
//! checks live in `e2e/clients/`; this test runs them against a real testnet and then compares
//! what they stored with what `floe get` and `floe get-quilt` read back from the nodes.
//!
//! The browser's screenshot is kept as an artifact: `$CARGO_TARGET_DIR/tmp/gateway-clients/
//! gateway-browser.png`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{wait_gateway_ready, Testnet};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/clients")
}

/// Install (or find) the clients; their paths by name: PYTHON, NODE_PATH, CHROMIUM.
fn install_clients() -> HashMap<String, String> {
    let out = Command::new("bash")
        .arg(clients_dir().join("install.sh"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "e2e/clients/install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Run a client; its last line of standard output is its JSON report.
fn run_client(cmd: &mut Command, what: &str) -> Value {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: report {last:?}: {e}"))
}

/// The value of one sample of the Prometheus text at `url` whose labels include all of `labels`.
fn metric(url: &str, name: &str, labels: &[&str]) -> f64 {
    let out = Command::new("curl")
        .args(["-sS", &format!("{url}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn python_requests_and_headless_chromium_use_the_gateway() {
    let env = install_clients();
    let t = Testnet::up(&["--nodes", "4", "--shards", "10", "--epoch", "600s"]);
    let dir = t.dir.path();
    let url = t.json(&["testnet", "status"])["gateway"]
        .as_str()
        .expect("testnet status carries the gateway URL")
        .to_string();
    wait_gateway_ready(&url);

    // Python requests: streamed upload, every Range form, HEAD, 304, quilts via its multipart
    let py_out = dir.join("python");
    std::fs::create_dir_all(&py_out).unwrap();
    let py = run_client(
        Command::new(&env["PYTHON"])
            .arg(clients_dir().join("requests_client.py"))
            .arg(&url)
            .arg(&py_out),
        "the requests client",
    );
    let blob = py["blob_id"].as_str().unwrap();
    let stored = std::fs::read(py_out.join("blob.bin")).unwrap();
    assert!(
        t.get(blob) == stored,
        "floe get returned other bytes than requests stored"
    );
    let quilt = py["quilt_id"].as_str().unwrap();
    let listed = t.ok(&["ls-quilt", quilt]);
    for (name, size) in py["files"].as_object().unwrap() {
        assert!(listed.contains(name.as_str()), "{name} not in:\n{listed}");
        let got = dir.join(format!("python-{name}"));
        t.ok(&["get-quilt", quilt, name, "-o", got.to_str().unwrap()]);
        assert_eq!(
            std::fs::metadata(&got).unwrap().len(),
            size.as_u64().unwrap(),
            "{name}"
        );
    }

    // Chromium: a page, an image and a video served by the aggregator, loaded as any site
    let ranged_before = metric(&url, "floe_gateway_requests_total", &["status=\"206\""]);
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gateway-clients");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("gateway-browser.png");
    let _ = std::fs::remove_file(&shot);
    let br = run_client(
        Command::new("node")
            .arg(clients_dir().join("browser.cjs"))
            .arg(&url)
            .arg(&artifacts)
            .env("NODE_PATH", &env["NODE_PATH"])
            .env("CHROMIUM", &env["CHROMIUM"]),
        "headless Chromium",
    );
    assert_eq!(br["page_status"], 200, "{br}");
    assert_eq!(br["page_type"], "text/html", "{br}");
    assert_eq!(br["image"]["ok"], true, "the image did not decode: {br}");
    assert_eq!(
        (
            br["image"]["width"].as_u64(),
            br["image"]["height"].as_u64()
        ),
        (Some(96), Some(64))
    );
    assert_eq!(br["video"]["ok"], true, "the video did not load: {br}");
    assert!(br["video"]["readyState"].as_u64() >= Some(2), "{br}");
    assert_eq!(br["video"]["width"], 160, "{br}");
    // the browser's media stack asked for a range of the video's blob and got one
    let video = br["video_id"].as_str().unwrap();
    let ranged: Vec<&Value> = br["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["url"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("/v1/blobs/{video}"))
        })
        .filter(|r| r["range"].is_string() && r["status"] == 206)
        .collect();
    assert!(
        !ranged.is_empty(),
        "no ranged video request answered 206: {br}"
    );
    assert!(
        metric(&url, "floe_gateway_requests_total", &["status=\"206\""])
            >= ranged_before + ranged.len() as f64,
        "the gateway did not count the browser's ranged answers"
    );
    // what the browser stored is what the nodes return
    let webm = std::fs::read(artifacts.join("video.webm")).unwrap();
    assert!(t.get(video) == webm, "floe get: other video bytes");
    let png = dir.join("image.png");
    t.ok(&[
        "get-quilt",
        br["quilt_id"].as_str().unwrap(),
        "image.png",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&png).unwrap() == std::fs::read(artifacts.join("image.png")).unwrap(),
        "floe get-quilt: other image bytes"
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 0)
            .unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
}
