//! The `floe` CLI driving a testnet in a temporary directory, as a user would: shared by the
//! end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Testnet {
    pub dir: tempfile::TempDir,
}

fn floe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_floe"))
}

/// floe-node is a binary of another package: build it if this test run did not.
fn ensure_node_bin() {
    let beside = floe_bin().parent().unwrap().join("floe-node");
    if !beside.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "floe-node", "--bin", "floe-node"])
            .status()
            .unwrap();
        assert!(st.success(), "building floe-node failed");
    }
}

impl Testnet {
    pub fn up(args: &[&str]) -> Self {
        ensure_node_bin();
        let dir = tempfile::tempdir().unwrap();
        let t = Self { dir };
        let out = t.floe(&[&["testnet", "up"], args].concat());
        assert!(
            out.status.success(),
            "testnet up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }
    pub fn floe(&self, args: &[&str]) -> Output {
        Command::new(floe_bin())
            .arg("--testnet-dir")
            .arg(self.dir.path())
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.floe(args);
        assert!(
            out.status.success(),
            "floe {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(&[&["--json"], args].concat())).unwrap()
    }
    pub fn put(&self, path: &Path) -> String {
        self.json(&["put", path.to_str().unwrap()])["blob_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    pub fn get(&self, id: &str) -> Vec<u8> {
        let out = self.dir.path().join(format!("{id}.out"));
        self.ok(&["get", id, "-o", out.to_str().unwrap()]);
        std::fs::read(out).unwrap()
    }
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
    /// Every node's (stored, owned) pairs of a blob.
    pub fn pairs(&self, id: &str) -> Vec<(u64, u64)> {
        let v = self.json(&["status", id]);
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["pairs_stored"].as_u64().unwrap_or(0),
                    n["pairs_owned"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.floe(&["testnet", "down"]);
    }
}

/// Run `floe` against the testnet in `dir` (for threads that do not own the `Testnet`).
pub fn floe_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(floe_bin())
        .arg("--testnet-dir")
        .arg(dir)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

impl Testnet {
    /// The supervisor's control state (`DIR/control.json`).
    pub fn control(&self) -> serde_json::Value {
        let b = std::fs::read(self.dir.path().join("control.json")).expect("control.json");
        serde_json::from_slice(&b).unwrap()
    }
    /// The supervisor's testnet state (`DIR/testnet.json`).
    pub fn state(&self) -> serde_json::Value {
        let b = std::fs::read(self.dir.path().join("testnet.json")).expect("testnet.json");
        serde_json::from_slice(&b).unwrap()
    }
    /// Poll `check` (every 300 ms) until it returns Some, or fail after `secs` with `what`.
    pub fn wait<T>(&self, secs: u64, what: &str, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {}",
                String::from_utf8_lossy(&self.floe(&["--json", "testnet", "status"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    /// Wait until every node that owns pairs of `id` stores all of them.
    pub fn wait_all_stored(&self, id: &str, secs: u64) {
        self.wait(secs, &format!("every owner to store {id}"), |t| {
            let p = t.pairs(id);
            p.iter().all(|(s, o)| s == o).then_some(())
        });
    }
}

/// Wait until the gateway at `url` answers `/readyz` with 200 (60 s at most).
pub fn wait_gateway_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{url}/readyz"))
            .output()
            .expect("curl");
        if r.stdout == b"200" {
            return;
        }
        assert!(Instant::now() < deadline, "gateway {url} not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
}
