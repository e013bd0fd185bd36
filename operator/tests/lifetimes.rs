//! Blob lifetimes, deletion and payment on a real testnet (docs/economics.md): real `floe` and
//! `floe-node` processes on loopback, driven through the CLI and the client library.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Testnet;
use ed25519_dalek::SigningKey;
use floe_node::client::{BlobClient, ClientConfig, NodeClient};
use floe_node::codec::{encode, EncodingParams};
use floe_node::protocol::{encoded_size, Lifetime};
use floe_node::testing::random_bytes;
use serde_json::Value;

/// `floe` as the account whose key lives in `cfg`.
fn floe_as(t: &Testnet, cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("--testnet-dir")
        .arg(t.dir.path())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("FLOE_CONFIG_DIR", cfg)
        .output()
        .unwrap()
}

fn ok_as(t: &Testnet, cfg: &Path, args: &[&str]) -> Value {
    let out = floe_as(t, cfg, &[&["--json"], args].concat());
    assert!(
        out.status.success(),
        "floe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused_as(t: &Testnet, cfg: &Path, args: &[&str]) -> String {
    let out = floe_as(t, cfg, args);
    assert!(!out.status.success(), "floe {args:?} should be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn next_epoch(t: &Testnet) -> u64 {
    t.ok(&["testnet", "next-epoch"]);
    t.control()["epoch"].as_u64().unwrap()
}

fn stored_bytes(t: &Testnet) -> Vec<u64> {
    t.json(&["testnet", "status"])["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["stored_bytes"].as_u64().unwrap_or(0))
        .collect()
}

/// The blob's state on every node (`floe status ID`).
fn states(t: &Testnet, id: &str) -> Vec<String> {
    t.json(&["status", id])["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn blobs_expire_extend_and_delete_and_the_nodes_collect_them() {
    let t = Testnet::up(&["--nodes", "4", "--shards", "10", "--epoch", "600s"]);
    let me = t.dir.path().join("me");
    let other = t.dir.path().join("other");
    let put = |name: &str, seed: u64, extra: &[&str]| -> (String, Vec<u8>) {
        let data = random_bytes(200_000, seed);
        let f = t.file(name, &data);
        let v = ok_as(&t, &me, &[&["put", f.to_str().unwrap()], extra].concat());
        (v["blob_id"].as_str().unwrap().to_string(), data)
    };
    // the first put on a fresh testnet creates and funds the account, and says so once
    let first = floe_as(
        &t,
        &me,
        &[
            "put",
            t.file("a", &random_bytes(200_000, 1)).to_str().unwrap(),
            "--epochs",
            "2",
        ],
    );
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{said}");
    assert!(
        said.contains("created account") && said.contains("funded by the testnet faucet"),
        "{said}"
    );
    let a = String::from_utf8_lossy(&first.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("blob ID:").map(|s| s.trim().to_string()))
        .unwrap();
    let second = floe_as(&t, &me, &["put", t.file("a2", b"x").to_str().unwrap()]);
    assert!(
        !String::from_utf8_lossy(&second.stderr).contains("funded"),
        "said once"
    );
    let balance0 = ok_as(&t, &me, &["account", "balance"])["balance"]
        .as_u64()
        .unwrap();

    let (b, b_data) = put("b", 2, &["--epochs", "1"]);
    let (c, _) = put("c", 3, &["--deletable"]);
    let (d, _) = put("d", 4, &["--permanent"]);
    // 200 kB encodes to < 1 MiB at n = 10: one unit; storage 100 per epoch, write 20
    let balance1 = ok_as(&t, &me, &["account", "balance"])["balance"]
        .as_u64()
        .unwrap();
    assert_eq!(balance0 - balance1, 120 + (5 * 100 + 20) * 2);

    // extend b by 2 epochs before it expires: it ends at 4 instead of 2
    let e = ok_as(&t, &me, &["extend", &b, "--epochs", "2"]);
    assert_eq!(
        (e["end_epoch"].as_u64(), e["cost"].as_u64()),
        (Some(4), Some(200))
    );

    // deleting a permanent blob, or another account's, is refused; nothing changes
    let why = refused_as(&t, &me, &["delete", &d]);
    assert!(why.contains("permanent"), "{why}");
    ok_as(&t, &other, &["testnet", "faucet"]);
    let why = refused_as(&t, &other, &["delete", &c]);
    assert!(why.contains("another account"), "{why}");
    // the owner deletes c: every node refuses it as deleted and collects it
    ok_as(&t, &me, &["delete", &c]);
    t.wait(30, "every node to collect the deleted blob", |t| {
        let p = t.pairs(&c);
        (states(t, &c).iter().all(|s| s == "deleted") && p.iter().all(|(s, _)| *s == 0))
            .then_some(())
    });
    let why = String::from_utf8_lossy(&t.floe(&["get", &c]).stderr).into_owned();
    assert!(why.contains("deleted"), "{why}");

    // a (2 epochs from epoch 1) is read in epochs 1 and 2, and refused as expired in 3
    assert_eq!(t.get(&a).len(), 200_000);
    assert_eq!(next_epoch(&t), 2);
    assert_eq!(t.get(&a).len(), 200_000);
    let before = stored_bytes(&t);
    assert_eq!(next_epoch(&t), 3);
    let out = t.floe(&["get", &a]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(why.contains("expired"), "{why}");
    // the nodes collect it: their disk usage drops
    t.wait(30, "the nodes to collect the expired blob", |t| {
        let after = stored_bytes(t);
        (states(t, &a).iter().all(|s| s == "expired")
            && after.iter().zip(&before).all(|(x, y)| x < y))
        .then_some(())
    });
    // b was extended: still there; d is permanent for 5 epochs: still there
    assert_eq!(t.get(&b), b_data);
    assert_eq!(t.get(&d).len(), 200_000);
    // registering an expired blob again makes it writable again (a new lifetime)
    let again = ok_as(
        &t,
        &me,
        &[
            "put",
            t.dir.path().join("a").to_str().unwrap(),
            "--epochs",
            "1",
        ],
    );
    assert_eq!(again["blob_id"].as_str(), Some(a.as_str()));
    assert_eq!(t.get(&a).len(), 200_000);
}

#[test]
fn nodes_refuse_unregistered_and_forged_blobs() {
    let t = Testnet::up(&["--nodes", "4", "--shards", "10", "--epoch", "600s"]);
    let addresses: Vec<String> = t.state()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("https://{}", n["grpc"].as_str().unwrap()))
        .collect();
    let key_file = std::fs::read(t.dir.path().join("control.key")).unwrap();
    let control = SigningKey::from_bytes(&key_file.try_into().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = BlobClient::connect(&addresses, ClientConfig::default())
            .await
            .unwrap();
        let committee = client.committee();
        assert!(
            committee.economics.is_some(),
            "the committee carries the control key"
        );
        // a plain write (no lifetime) is refused by every node
        let err = client
            .write(random_bytes(10_000, 9), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not registered"), "{err}");

        let data = random_bytes(10_000, 10);
        let enc = encode(&data, EncodingParams::new(10).unwrap()).unwrap();
        let id = enc.blob_id();
        let md = enc.metadata().clone();
        let size = encoded_size(enc.shape());
        let m = &committee.members[0];
        let node = NodeClient::for_node(&m.address, m.node_id, 16 << 20).unwrap();
        let epoch = committee.epoch;
        let lifetime = Lifetime {
            blob_id: id,
            encoded_size: size,
            start_epoch: epoch,
            end_epoch: epoch + 2,
            deletable: false,
            deleted: false,
            owner: [1; 32],
            sequence: 1_000_000,
        };
        let refused = |r: Result<bool, floe_node::client::ClientError>| {
            let e = r.unwrap_err();
            e.code().unwrap()
        };
        // signed by a key that is not the control plane's
        let wrong = lifetime.sign(&SigningKey::from_bytes(&[9; 32]));
        assert_eq!(
            refused(node.put_metadata_with(&id, &md, Some(&wrong)).await),
            tonic::Code::PermissionDenied
        );
        // the right key, then the end epoch tampered with
        let mut tampered = lifetime.sign(&control);
        tampered.lifetime.end_epoch += 50;
        assert_eq!(
            refused(node.put_metadata_with(&id, &md, Some(&tampered)).await),
            tonic::Code::PermissionDenied
        );
        // a lifetime that bills fewer bytes than the blob encodes to
        let small = Lifetime {
            encoded_size: 1,
            ..lifetime
        }
        .sign(&control);
        assert_eq!(
            refused(node.put_metadata_with(&id, &md, Some(&small)).await),
            tonic::Code::PermissionDenied
        );
        // nothing of the blob was stored, and its slivers are refused
        assert_eq!(
            refused(node.put_metadata(&id, &md).await),
            tonic::Code::FailedPrecondition
        );
        // the genuine lifetime is accepted (the positive control)
        let good = lifetime.sign(&control);
        node.put_metadata_with(&id, &md, Some(&good)).await.unwrap();

        // StoreBlob (lifetime, metadata and slivers in one commit) checks the same way
        let data = random_bytes(10_000, 11);
        let enc = encode(&data, EncodingParams::new(10).unwrap()).unwrap();
        let id = enc.blob_id();
        let md = enc.metadata().clone();
        let lifetime = Lifetime {
            blob_id: id,
            encoded_size: encoded_size(enc.shape()),
            sequence: 1_000_001,
            ..lifetime
        };
        let rot = id.mod_n(10);
        let pairs: Vec<u16> = m
            .shards
            .iter()
            .map(|s| committee.params().pair_for_shard(*s as usize, rot) as u16)
            .collect();
        assert!(pairs.len() >= 2, "node 0 owns {pairs:?}");
        let slivers_of = |pairs: &[u16]| -> Vec<(u16, floe_node::codec::Sliver)> {
            pairs
                .iter()
                .flat_map(|p| {
                    let pair = enc.pair(*p as usize);
                    [(*p, pair.primary), (*p, pair.secondary)]
                })
                .collect()
        };
        let store = |l: Option<floe_node::protocol::SignedLifetime>, pairs: Vec<u16>| {
            let (md, node, slivers) = (md.clone(), node.clone(), slivers_of(&pairs));
            async move {
                let refs: Vec<(u16, &floe_node::codec::Sliver)> =
                    slivers.iter().map(|(p, s)| (*p, s)).collect();
                node.store_blob(&id, &md, l.as_ref(), &refs, true).await
            }
        };
        let code = |r: Result<_, floe_node::client::ClientError>| r.unwrap_err().code().unwrap();
        let forged = lifetime.sign(&SigningKey::from_bytes(&[9; 32]));
        assert_eq!(
            code(store(Some(forged), pairs.clone()).await),
            tonic::Code::PermissionDenied
        );
        let mut tampered = lifetime.sign(&control);
        tampered.lifetime.end_epoch += 50;
        assert_eq!(
            code(store(Some(tampered), pairs.clone()).await),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(store(None, pairs.clone()).await),
            tonic::Code::FailedPrecondition,
            "no lifetime: not registered"
        );
        // one pair of the node's: stored, but the node does not confirm a blob it lacks
        let good = lifetime.sign(&control);
        let err = store(Some(good), pairs[..1].to_vec()).await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        // the rest, with the lifetime the node now holds: confirmed, and the signature is real
        let (results, confirmation) = store(Some(good), pairs.clone()).await.unwrap();
        assert_eq!(results.len(), 2 * pairs.len());
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(
            results.iter().filter(|r| matches!(r, Ok(true))).count(),
            2,
            "the first pair was already stored"
        );
        let c = confirmation.expect("a confirmation");
        assert!(c.verify() && c.node_id == m.node_id && c.blob_id == id);
        // the held lifetime's bytes with a flipped signature bit are not taken as held
        let mut flipped = good;
        flipped.signature[5] ^= 1;
        assert_eq!(
            code(store(Some(flipped), pairs.clone()).await),
            tonic::Code::PermissionDenied
        );
        // the held lifetime still bills this blob's size only: another blob is refused
        let other = encode(&random_bytes(30_000, 12), EncodingParams::new(10).unwrap()).unwrap();
        let err = node
            .store_blob(&other.blob_id(), other.metadata(), Some(&good), &[], true)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    });
}

#[test]
fn the_published_prices_are_the_quorum_below_votes_of_the_nodes() {
    let t = Testnet::up(&[
        "--nodes",
        "4",
        "--shards",
        "10",
        "--epoch",
        "600s",
        "--price-vote",
        "0=50,5",
        "--price-vote",
        "1=100,10",
        "--price-vote",
        "2=300,30",
        "--price-vote",
        "3=1000,100",
    ]);
    // the votes by node ID, weighted by the shards each holds in the committee
    let votes: std::collections::BTreeMap<String, (u64, u64)> = [
        ("node0", (50, 5)),
        ("node1", (100, 10)),
        ("node2", (300, 30)),
        ("node3", (1000, 100)),
    ]
    .into_iter()
    .map(|(name, v)| {
        let n = t.state()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()["node_id"]
            .as_str()
            .unwrap()
            .to_string();
        (n, v)
    })
    .collect();
    let c = t.control();
    let mut weighted: Vec<(u64, u64, usize)> = c["committee"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let (s, w) = votes[m["node_id"].as_str().unwrap()];
            (s, w, m["shards"].as_array().unwrap().len())
        })
        .collect();
    weighted.sort();
    // n = 10: a quorum is 7 shards; the lowest vote at or below which 7 shards voted
    let mut acc = 0;
    let expect = weighted
        .iter()
        .find(|(_, _, w)| {
            acc += w;
            acc >= 7
        })
        .unwrap();
    let st = t.json(&["testnet", "status"]);
    assert_eq!(st["storage_price"].as_u64(), Some(expect.0), "{weighted:?}");
    assert_eq!(st["write_price"].as_u64(), Some(expect.1), "{weighted:?}");
    assert!(
        expect.0 < 1000,
        "the highest voter alone does not set the price"
    );
    // what a put costs follows the published prices: 1 unit for 5 epochs, written once
    let me = t.dir.path().join("me");
    ok_as(&t, &me, &["put", t.file("x", b"x").to_str().unwrap()]);
    let left = ok_as(&t, &me, &["account", "balance"])["balance"]
        .as_u64()
        .unwrap();
    assert_eq!(1_000_000_000 - left, 5 * expect.0 + expect.1);
}

#[test]
fn a_control_plane_killed_during_registrations_loses_nothing_confirmed_and_charges_nothing_unregistered(
) {
    let t = Testnet::up(&["--nodes", "4", "--shards", "10", "--epoch", "600s"]);
    let me = t.dir.path().join("me");
    ok_as(
        &t,
        &me,
        &["put", t.file("first", b"first").to_str().unwrap()],
    );
    let files: Vec<_> = (0..40u64)
        .map(|i| t.file(&format!("f{i}"), &random_bytes(20_000, 100 + i)))
        .collect();
    let dir = t.dir.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let me2 = me.clone();
    let writer = std::thread::spawn(move || {
        let mut confirmed = Vec::new();
        for f in files {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let out = Command::new(env!("CARGO_BIN_EXE_floe"))
                .arg("--testnet-dir")
                .arg(&dir)
                .args(["--json", "put", f.to_str().unwrap()])
                .env("FLOE_CONFIG_DIR", &me2)
                .output()
                .unwrap();
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                confirmed.push((v["blob_id"].as_str().unwrap().to_string(), f));
            }
        }
        confirmed
    });
    // kill -9 the supervisor (the control plane) while the puts run
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let sup: u32 = std::fs::read_to_string(t.dir.path().join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Command::new("kill")
        .args(["-9", &sup.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let confirmed = writer.join().unwrap();
    assert!(
        !confirmed.is_empty(),
        "some puts were confirmed before the kill"
    );
    t.ok(&[
        "testnet", "up", "--nodes", "4", "--shards", "10", "--epoch", "600s",
    ]);
    // every confirmed blob is still registered and readable
    for (id, f) in &confirmed {
        assert_eq!(t.get(id), std::fs::read(f).unwrap(), "{id}");
    }
    // the account paid for exactly the registrations the control plane holds (each 20 kB
    // put: 1 unit for 5 epochs at 100, written once at 20), and those include every
    // confirmed one
    let metrics = t.state()["metrics"].as_str().unwrap().to_string();
    let registrations = t.wait(30, "the market's metrics", |_| {
        let body = http_get(&metrics, "/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix("floe_control_economy{quantity=\"registrations\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    assert!(registrations > confirmed.len() as u64, "{registrations}");
    let left = ok_as(&t, &me, &["account", "balance"])["balance"]
        .as_u64()
        .unwrap();
    assert_eq!(1_000_000_000 - left, 520 * registrations);
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn concurrent_puts_of_one_account_all_register() {
    // one account, 16 writes at once through two registrars holding the same key (as two
    // processes sharing an account would): each batches its own writes, and their signed
    // requests reach the control plane out of order; a request refused for its nonce is signed
    // again until it is taken
    let t = Testnet::up(&["--nodes", "4", "--shards", "10", "--epoch", "600s"]);
    let addresses: Vec<String> = t.state()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("https://{}", n["grpc"].as_str().unwrap()))
        .collect();
    let control = t.state()["control_api"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use floe_node::client::control::{AccountRegistrar, ControlClient};
        use futures::StreamExt as _;
        let client = BlobClient::connect(&addresses, ClientConfig::default())
            .await
            .unwrap();
        let control = ControlClient::new(&control).unwrap();
        let key = SigningKey::from_bytes(&[42; 32]);
        control
            .faucet(&floe_node::protocol::AccountId::of(&key), 0)
            .await
            .unwrap();
        let opts =
            |r: std::sync::Arc<dyn floe_node::client::Registrar>| floe_node::client::PutOptions {
                epochs: Some(2),
                deletable: true,
                registrar: Some(r),
            };
        let two = [
            opts(AccountRegistrar::start(control.clone(), key.clone())),
            opts(AccountRegistrar::start(control, key)),
        ];
        let (client, two) = (&client, &two);
        let done: Vec<_> = futures::stream::iter(0..32u64)
            .map(|i| async move {
                client
                    .write_with(random_bytes(4096, 500 + i), &two[i as usize % 2], None)
                    .await
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in &done {
            assert!(r.is_ok(), "{r:?}");
        }
    });
}
