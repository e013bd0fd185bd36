//! `floe testnet` end to end: real `floe` and `floe-node` processes on loopback, driven through
//! the CLI exactly as a user would.

use floe_node::testing::random_bytes;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Testnet {
    dir: tempfile::TempDir,
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
    fn up(args: &[&str]) -> Self {
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
    fn floe(&self, args: &[&str]) -> Output {
        Command::new(floe_bin())
            .arg("--testnet-dir")
            .arg(self.dir.path())
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.floe(args);
        assert!(
            out.status.success(),
            "floe {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(&[&["--json"], args].concat())).unwrap()
    }
    fn put(&self, path: &Path) -> String {
        self.json(&["put", path.to_str().unwrap()])["blob_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn get(&self, id: &str) -> Vec<u8> {
        let out = self.dir.path().join(format!("{id}.out"));
        self.ok(&["get", id, "-o", out.to_str().unwrap()]);
        std::fs::read(out).unwrap()
    }
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
    /// Every node's (stored, owned) pairs of a blob.
    fn pairs(&self, id: &str) -> Vec<(u64, u64)> {
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

#[test]
fn default_testnet_put_get_through_node_failures() {
    // node 6 serves corrupted slivers on purpose (a lying node)
    let t = Testnet::up(&[
        "--nodes",
        "7",
        "--shards",
        "100",
        "--fault",
        "6=corrupt-slivers",
    ]);
    let status = t.json(&["testnet", "status"]);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 7);

    let mut blobs = Vec::new();
    for (name, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("mib", 1 << 20),
        ("big", 64 << 20),
    ] {
        let data = random_bytes(len, len as u64 + 1);
        let id = t.put(&t.file(name, &data));
        assert_eq!(
            t.get(&id),
            data,
            "{name}: read back differs (with a lying node in the committee)"
        );
        // the offline blob ID agrees with the network's
        assert_eq!(
            t.ok(&["blob-id", t.dir.path().join(name).to_str().unwrap()])
                .trim(),
            id
        );
        blobs.push((id, data));
    }

    // f = 33 shards: two nodes (30 shards) down, writes and reads still work
    t.ok(&["testnet", "kill", "0"]);
    t.ok(&["testnet", "kill", "1"]);
    let data = random_bytes(300_000, 99);
    let id = t.put(&t.file("during-outage", &data));
    assert_eq!(t.get(&id), data);
    blobs.push((id, data));

    // 2f = 66 shards: four nodes (58 shards, the lying one among them) down, reads still work
    t.ok(&["testnet", "kill", "2"]);
    t.ok(&["testnet", "kill", "6"]);
    for (id, data) in &blobs {
        assert_eq!(&t.get(id), data);
    }

    // clear errors: an oversized file, an unknown blob ID, a malformed one
    let big = t.dir.path().join("too-big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(150_000_000)
        .unwrap();
    let out = t.floe(&["put", big.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("largest blob"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = t.floe(&["get", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown to every node"));
    let out = t.floe(&["get", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid blob ID"));

    for n in ["0", "1", "2", "6"] {
        t.ok(&["testnet", "restart", n]);
    }
    // kill -9 a node and bring it back with an empty disk: it rebuilds every sliver it owns
    t.ok(&["testnet", "kill", "3"]);
    t.ok(&["testnet", "restart", "3", "--wipe"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    for (id, _) in &blobs {
        loop {
            let pairs = t.pairs(id);
            if pairs.iter().all(|(s, o)| s == o) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slivers of {id} not rebuilt: {pairs:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let st = t.json(&["testnet", "status"]);
    let node3 = &st["nodes"][3];
    assert_eq!(node3["status"], "active", "{st}");
    assert!(node3["blobs"].as_u64().unwrap() >= blobs.len() as u64);
}

#[test]
fn crashed_node_is_restarted_by_the_supervisor() {
    let t = Testnet::up(&["--nodes", "4", "--shards", "10"]);
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.dir.path().join("testnet.json")).unwrap())
            .unwrap();
    let pid = st["nodes"][1]["pid"].as_u64().unwrap();
    // a crash (not `floe testnet kill`): the supervisor brings the node back
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = t.json(&["testnet", "status"]);
        let n = &st["nodes"][1];
        if n["restarts"].as_u64() == Some(1) && n["status"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "node not restarted: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let data = random_bytes(5000, 3);
    let id = t.put(&t.file("x", &data));
    assert_eq!(t.get(&id), data);
    // a second `up` in the same directory is refused while the first runs
    let out = t.floe(&["testnet", "up", "--nodes", "4", "--shards", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
}
