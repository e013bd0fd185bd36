//! `floe testnet` end to end: real `floe` and `floe-node` processes on loopback, driven through
//! the CLI exactly as a user would.

use floe_node::testing::random_bytes;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::Testnet;

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
    // the admin token is the owner's alone, and the admin API listens apart from storage
    use std::os::unix::fs::PermissionsExt;
    let token = std::fs::metadata(t.dir.path().join("admin.token")).unwrap();
    assert_eq!(token.permissions().mode() & 0o777, 0o600);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.dir.path().join("testnet.json")).unwrap()).unwrap();
    for n in state["nodes"].as_array().unwrap() {
        assert!(
            n["admin"]
                .as_str()
                .is_some_and(|a| !a.is_empty() && a != n["grpc"]),
            "{n}"
        );
    }

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
    // one blob ID in 64 begins with '-' (URL-safe base64): find such a blob, and use its ID as
    // pasted from `floe put`
    let params = floe_node::codec::EncodingParams::new(10).unwrap();
    let dashed = (0u64..10_000)
        .map(|seed| random_bytes(100, seed))
        .find(|d| {
            floe_node::codec::encode(d, params)
                .unwrap()
                .blob_id()
                .to_string()
                .starts_with('-')
        })
        .expect("an ID beginning with '-' within 10000 tries");
    let id = t.put(&t.file("dashed", &dashed));
    assert!(id.starts_with('-'), "{id}");
    assert_eq!(t.get(&id), dashed);
    let st = t.json(&["status", &id]);
    assert!(
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "certified"),
        "{st}"
    );
    // a second `up` in the same directory is refused while the first runs
    let out = t.floe(&["testnet", "up", "--nodes", "4", "--shards", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
}
