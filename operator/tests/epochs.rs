//! Epochs on a real testnet (PROTOCOL.md §6–§7): membership changes, shard migration, stuck
//! changes, challenges and rewards, and the supervisor's own crash. Real `floe` and `floe-node`
//! processes on loopback, driven through the CLI.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Testnet;
use floe_node::testing::random_bytes;
use serde_json::Value;

/// Owner (node ID) of every shard in a committee JSON.
fn owners(committee: &Value) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    for mem in committee["members"].as_array().unwrap() {
        for s in mem["shards"].as_array().unwrap() {
            m.insert(
                s.as_u64().unwrap(),
                mem["node_id"].as_str().unwrap().to_string(),
            );
        }
    }
    m
}

fn counts(committee: &Value) -> BTreeMap<String, usize> {
    committee["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["node_id"].as_str().unwrap().to_string(),
                m["shards"].as_array().unwrap().len(),
            )
        })
        .collect()
}

/// Check the change the testnet just made: only the minimum moved (the shards whose member
/// grew), and return the moved shards with their (from, to).
fn check_minimal_movement(t: &Testnet) -> BTreeMap<u64, (String, String)> {
    let c = t.control();
    let (before, after) = (&c["previous"], &c["committee"]);
    let (ob, oa) = (owners(before), owners(after));
    let moved: BTreeMap<u64, (String, String)> = oa
        .iter()
        .filter(|(s, id)| ob.get(s) != Some(id))
        .map(|(s, id)| (*s, (ob[s].clone(), id.clone())))
        .collect();
    let (cb, ca) = (counts(before), counts(after));
    let minimum: usize = ca
        .iter()
        .map(|(id, n)| n.saturating_sub(*cb.get(id).unwrap_or(&0)))
        .sum();
    assert_eq!(
        moved.len(),
        minimum,
        "moved more shards than needed: {moved:?}"
    );
    moved
}

/// Field `want` of the testnet node whose field `key` is `value` (name ↔ node ID).
fn node_field(t: &Testnet, key: &str, value: &str, want: &str) -> String {
    t.state()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n[key] == value)
        .and_then(|n| n[want].as_str())
        .unwrap_or_else(|| panic!("no node with {key} = {value}"))
        .to_string()
}

fn node_id_of(t: &Testnet, name: &str) -> String {
    node_field(t, "name", name, "node_id")
}

fn name_of(t: &Testnet, node_id: &str) -> String {
    node_field(t, "node_id", node_id, "name")
}

/// Every blob reads back byte-identical and every owner of its pairs stores them (asked
/// through the nodes' API).
fn check_blobs(t: &Testnet, blobs: &[(String, Vec<u8>)]) {
    for (id, data) in blobs {
        t.wait_all_stored(id, 120);
        assert_eq!(&t.get(id), data, "blob {id} differs after the change");
    }
}

fn next_epoch(t: &Testnet) -> u64 {
    let v = t.json(&["testnet", "next-epoch", "--timeout", "180s"]);
    v["epoch"].as_u64().unwrap()
}

#[test]
fn membership_changes_over_several_epochs() {
    let t = Testnet::up(&["--nodes", "4", "--shards", "20", "--epoch", "600s"]);
    let mut blobs = Vec::new();
    for (i, len) in [0usize, 1000, 300_000, 2 << 20].into_iter().enumerate() {
        let data = random_bytes(len, 40 + i as u64);
        blobs.push((t.put(&t.file(&format!("b{i}"), &data)), data));
    }

    // two nodes join; a client keeps writing and reading while the change runs
    t.ok(&["testnet", "add-node"]);
    t.ok(&["testnet", "add-node"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let dir = t.dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 3 {
                let data = random_bytes(20_000 + rounds, 1000 + rounds as u64);
                let f = dir.join(format!("during-{rounds}"));
                std::fs::write(&f, &data).unwrap();
                let out = common::floe_in(&dir, &["--json", "put", f.to_str().unwrap()]);
                assert!(
                    out.status.success(),
                    "put during the change: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                let id = v["blob_id"].as_str().unwrap().to_string();
                let o = dir.join(format!("during-{rounds}.out"));
                let out = common::floe_in(&dir, &["get", &id, "-o", o.to_str().unwrap()]);
                assert!(
                    out.status.success(),
                    "get during the change: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(std::fs::read(&o).unwrap(), data);
                rounds += 1;
            }
            rounds
        })
    };
    assert_eq!(next_epoch(&t), 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        traffic
            .join()
            .expect("reads and writes work through the change")
            >= 3
    );
    let moved = check_minimal_movement(&t);
    let new: BTreeSet<String> = [node_id_of(&t, "node4"), node_id_of(&t, "node5")].into();
    assert!(!moved.is_empty());
    assert!(
        moved.values().all(|(_, to)| new.contains(to)),
        "only the joiners gain: {moved:?}"
    );
    check_blobs(&t, &blobs);
    // a blob written in the new epoch, to the new committee
    let data = random_bytes(500_000, 77);
    blobs.push((t.put(&t.file("e2", &data)), data));

    // one node leaves: drained at the change, its process stopped only after it completed
    t.ok(&["testnet", "remove-node", "node1"]);
    let leaving = node_id_of(&t, "node1");
    assert_eq!(next_epoch(&t), 3);
    let moved = check_minimal_movement(&t);
    assert!(
        moved.values().all(|(from, _)| *from == leaving),
        "only node1's shards move: {moved:?}"
    );
    assert!(!counts(&t.control()["committee"]).contains_key(&leaving));
    t.wait(30, "node1 to be released", |t| {
        let st = t.json(&["testnet", "status"]);
        let n = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "node1")
            .cloned();
        n.filter(|n| n["status"] == "released" && n["pid"].is_null())
            .map(|_| ())
    });
    check_blobs(&t, &blobs);

    // a stake change moves shards only to that member
    t.ok(&["testnet", "set-stake", "node0", "3"]);
    assert_eq!(next_epoch(&t), 4);
    let moved = check_minimal_movement(&t);
    let node0 = node_id_of(&t, "node0");
    assert!(!moved.is_empty());
    assert!(moved.values().all(|(_, to)| *to == node0), "{moved:?}");
    check_blobs(&t, &blobs);

    let st = t.json(&["testnet", "status"]);
    assert_eq!(st["epoch"], 4);
    assert_eq!(st["phase"], "stable");
    assert_eq!(st["ledger"]["balanced"], true);
}

#[test]
fn a_missing_previous_owner_falls_back_to_recovery_and_a_stuck_change_resumes() {
    let t = Testnet::up(&[
        "--nodes",
        "4",
        "--shards",
        "10",
        "--epoch",
        "600s",
        "--stuck-after",
        "5s",
    ]);
    let mut blobs = Vec::new();
    for i in 0..3u64 {
        let data = random_bytes(200_000 + i as usize * 1000, 90 + i);
        blobs.push((t.put(&t.file(&format!("b{i}"), &data)), data));
    }
    // node4 joins while a member whose shards move to it (one holding 3 of the 10 shards; five
    // members hold 2 each) is down: node4 cannot pull from it and rebuilds those shards by
    // recovery; the change completes
    let c = t.control();
    let big = c["committee"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["shards"].as_array().unwrap().len() == 3)
        .map(|m| m["node_id"].as_str().unwrap().to_string())
        .unwrap();
    let name = name_of(&t, &big);
    t.ok(&["testnet", "add-node"]);
    t.ok(&["testnet", "kill", &name]);
    assert_eq!(next_epoch(&t), 2);
    let moved = check_minimal_movement(&t);
    assert!(moved.values().any(|(from, _)| *from == big), "{moved:?}");
    t.ok(&["testnet", "restart", &name]);
    check_blobs(&t, &blobs);

    // more than f shards' owners down at the deadline: the change is reported stuck, not
    // hidden; once they are back it completes, and no blob is lost
    t.ok(&["testnet", "kill", "1"]);
    t.ok(&["testnet", "kill", "2"]);
    t.ok(&["testnet", "next-epoch", "--no-wait"]);
    let why = t.wait(60, "the change to be reported stuck", |t| {
        let st = t.json(&["testnet", "status"]);
        (st["phase"] == "stuck").then(|| st["phase_detail"].as_str().unwrap().to_string())
    });
    assert!(
        why.contains("quorum needs 7") && why.contains("unreachable"),
        "{why}"
    );
    assert_eq!(
        t.control()["epoch"],
        2,
        "the epoch does not move while stuck"
    );
    t.ok(&["testnet", "restart", "1"]);
    t.ok(&["testnet", "restart", "2"]);
    t.wait(120, "the change to complete", |t| {
        let c = t.control();
        (c["epoch"] == 3 && c["phase"]["phase"] == "stable").then_some(())
    });
    check_blobs(&t, &blobs);
}

/// Drop every sliver from a (stopped) node's store, through the store library: the node comes
/// back with its metadata and certificates but none of its slivers.
fn drop_all_slivers(data_dir: &std::path::Path) -> u64 {
    let store = floe_node::store::BlobStore::open(data_dir, None).unwrap();
    let mut n = 0;
    for (id, _) in store.certified() {
        n += store.drop_pairs(&id, |_| false).unwrap();
    }
    n
}

#[test]
fn a_node_that_lost_its_slivers_fails_its_challenge_and_earns_nothing() {
    // node2 never repairs itself (a lazy node), so what is deleted under it stays lost
    let t = Testnet::up(&[
        "--nodes",
        "4",
        "--shards",
        "10",
        "--epoch",
        "600s",
        "--reward-per-epoch",
        "1000",
        "--challenge-samples",
        "200",
        "--fault",
        "2=no-repair",
    ]);
    let mut blobs = Vec::new();
    for i in 0..4u64 {
        let data = random_bytes(50_000, 7 + i);
        blobs.push((t.put(&t.file(&format!("b{i}"), &data)), data));
    }
    // blobs certified in epoch 1 are challenged from epoch 2 on
    assert_eq!(next_epoch(&t), 2);
    let dir = std::path::PathBuf::from(t.state()["nodes"][2]["dir"].as_str().unwrap());
    t.ok(&["testnet", "kill", "2"]);
    assert!(drop_all_slivers(&dir.join("data")) > 0);
    t.ok(&["testnet", "restart", "2"]);
    assert_eq!(next_epoch(&t), 3);
    let st = t.json(&["testnet", "status"]);
    let round = &st["last_round"];
    assert_eq!(round["epoch"], 2);
    assert_eq!(round["eligible_blobs"], 4);
    let id2 = node_id_of(&t, "node2");
    for (id, r) in round["results"].as_object().unwrap() {
        let want = if *id == id2 { "failed" } else { "passed" };
        assert_eq!(r["outcome"]["result"], want, "{id}: {r}");
        assert_eq!(r["outcome"]["items"], 200);
    }
    let failed = &round["results"][&id2]["outcome"];
    assert_eq!(
        failed["failed"], 200,
        "every item of a node with no slivers fails: {failed}"
    );
    // the ledger (docs/economics.md): each put bought 5 epochs of 1 unit at the default prices
    // (storage 100 per epoch, write 20), so epoch 1 held 4 × 120 in fees and epoch 2 4 × 100.
    // Epoch 1: everybody passed (nothing eligible), its pool of 1000 + 480 was paid out.
    // Epoch 2: node2 failed, so its part of 1000 + 400, by shards, rolled over.
    let c = t.control();
    let shards2 = c["previous"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == id2.as_str())
        .unwrap()["shards"]
        .as_array()
        .unwrap()
        .len() as u64;
    let rolled = c["ledger"]["rolled_over"].as_u64().unwrap();
    let exact = 1400 * shards2 / 10;
    assert!(
        rolled == exact || rolled == exact + 1,
        "node2's part ({shards2} of 10 shards) of 1400 rolls over: {rolled}"
    );
    assert_eq!(c["ledger"]["fees"], 880);
    assert_eq!(c["ledger"]["issued"], 1480 + 1400 - rolled);
    assert_eq!(c["last_paid"][&id2], serde_json::json!([2, 0]));
    let total: u64 = c["ledger"]["totals"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        total,
        1480 + 1400 - rolled,
        "the ledger sums to the rewards issued"
    );
    let paid_e2: u64 = c["last_paid"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v[1].as_u64().unwrap())
        .sum();
    assert_eq!(paid_e2, 1400 - rolled);
    // the reads still work (the other nodes hold enough)
    for (id, data) in &blobs {
        assert_eq!(&t.get(id), data);
    }
    // the control plane's metrics show it
    let metrics = std::fs::read_to_string(t.dir.path().join("testnet.json")).unwrap();
    let addr = serde_json::from_str::<Value>(&metrics).unwrap()["metrics"]
        .as_str()
        .unwrap()
        .to_string();
    let body = http_get(&addr, "/metrics");
    assert!(
        body.contains("floe_control_challenges_total{result=\"failed\"} 1"),
        "{body}"
    );
    assert!(body.contains("floe_control_epoch 3"), "{body}");
    // the market's identity: Σ paid in = Σ rewarded + rolled over + held for future epochs
    let q = |k: &str| -> u64 {
        let line = format!("floe_control_economy{{quantity=\"{k}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{k} missing: {body}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(q("fees_paid"), 4 * (5 * 100 + 20));
    assert_eq!(q("subsidies"), 2000);
    assert_eq!(q("rewarded"), 1480 + 1400 - rolled);
    assert_eq!(q("rolled_over"), rolled);
    assert_eq!(q("held"), 4 * (5 * 100 + 20) - 880);
    assert_eq!(
        q("fees_paid") + q("subsidies"),
        q("rewarded") + q("rolled_over") + q("held")
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_supervisor_killed_mid_change_resumes_and_completes_it() {
    let t = Testnet::up(&["--nodes", "4", "--shards", "10", "--epoch", "600s"]);
    let data = random_bytes(100_000, 5);
    let id = t.put(&t.file("b", &data));
    // hold the change open: two members (6 of 10 shards) down
    t.ok(&["testnet", "kill", "1"]);
    t.ok(&["testnet", "kill", "2"]);
    t.ok(&["testnet", "next-epoch", "--no-wait"]);
    t.wait(60, "the change to start", |t| {
        (t.control()["phase"]["phase"] == "changing").then_some(())
    });
    let sup: u32 = std::fs::read_to_string(t.dir.path().join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &sup.to_string()])
        .status()
        .unwrap();
    t.wait(10, "the supervisor to die", |_| {
        (!std::path::Path::new(&format!("/proc/{sup}")).exists()).then_some(())
    });
    assert_eq!(t.control()["epoch"], 1);
    // started again in the same directory: it adopts the running nodes, restarts the stopped
    // ones and finishes the change it had started
    t.ok(&[
        "testnet", "up", "--nodes", "4", "--shards", "10", "--epoch", "600s",
    ]);
    t.wait(120, "the change to complete", |t| {
        let c = t.control();
        (c["epoch"] == 2 && c["phase"]["phase"] == "stable").then_some(())
    });
    let h = t.control()["history"].as_array().unwrap().clone();
    assert_eq!(h.last().unwrap()["epoch"], 2);
    assert_eq!(t.get(&id), data);
    // another shard count in the same directory is refused with the reason
    t.ok(&["testnet", "down"]);
    let out = t.floe(&["testnet", "up", "--nodes", "4", "--shards", "12"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards are fixed"));
}
