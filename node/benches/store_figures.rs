//! Store figures of issue 14 against a real `floe-node` process (docs/node.md, "Storage"):
//!
//! 1. 1 KiB slivers verified and persisted per second with 64 requests in flight (single
//!    `PutSliver` and batched `PutSlivers`);
//! 2. disk used against stored bytes for 16 KiB blobs at n = 100;
//! 3. a store of `FLOE_FIGURES_BLOBS` blobs (default 10⁶, built through the library): restart to
//!    ready, RSS, a `SyncShard` page, `GetSyncStatus` and a `ListCertified` page.
//!
//! `cargo bench -p floe-node --bench store_figures` (env `FLOE_FIGURES_BLOBS=100000` for a
//! quicker run, `FLOE_BENCH_DIR` for the scratch directory).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use floe_node::client::NodeClient;
use floe_node::codec::{encode, BlobId, EncodingParams, Sliver};
use floe_node::protocol::{Certificate, Committee, Member, NodeId, SyncRequest};
use floe_node::store::BlobStore;
use floe_node::testing::{disk_usage as du, free_port, random_bytes};
use futures::StreamExt as _;

const BLOBS_16K: u64 = 1000;

struct Node {
    child: Child,
    addr: String,
    http: String,
}

impl Node {
    fn start(dir: &Path) -> Self {
        std::fs::write(dir.join("token"), "bench").unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_floe-node"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--grpc-addr", &addr, "--http-addr", &http])
            .arg("--admin-token-file")
            .arg(dir.join("token"))
            .env("FLOE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, addr, http }
    }
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&self.http) else {
            return String::new();
        };
        let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
    fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
    /// Mean server-side latency of `method` (seconds) from the node's histogram.
    fn server_latency(&self, method: &str) -> f64 {
        let m = self.metrics();
        let get = |suffix: &str| -> f64 {
            m.lines()
                .find(|l| {
                    l.starts_with(&format!("floe_node_grpc_request_duration_seconds_{suffix}"))
                        && l.contains(&format!("method=\"{method}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        get("sum") / get("count").max(1.0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready(addr: &str) -> (NodeClient, NodeId, Duration) {
    let t = Instant::now();
    let c = NodeClient::new(addr, 96 << 20).unwrap();
    for _ in 0..2000 {
        if let Ok(i) = c.info().await {
            return (
                c,
                NodeId::try_from(i.node_id.as_slice()).unwrap(),
                t.elapsed(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("node did not start");
}

async fn committee_of(c: &NodeClient, me: NodeId, addr: &str, n: u16, extra: Option<Member>) {
    let mut members = vec![Member {
        node_id: me,
        address: addr.to_string(),
        stake: 1,
        shards: (0..n).filter(|s| extra.is_none() || *s == 1).collect(),
    }];
    members.extend(extra);
    members.sort_by_key(|m| m.node_id);
    let committee = Committee {
        epoch: 1,
        n_shards: n,
        members,
        economics: None,
    };
    c.clone()
        .with_admin_token("bench")
        .set_committee(&committee)
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let scratch = std::env::var("FLOE_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let blobs: u64 = std::env::var("FLOE_FIGURES_BLOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    println!("| figure | value | target |");
    println!("|---|---|---|");

    let only_store = std::env::var("FLOE_FIGURES_ONLY_STORE").is_ok();
    // 1. 1 KiB slivers, 64 in flight
    if !only_store {
        let dir = tempfile::tempdir_in(&scratch).unwrap();
        let node = Node::start(dir.path());
        let (c, me, _) = ready(&node.addr).await;
        committee_of(&c, me, &node.addr, 7, None).await;
        let p = EncodingParams::new(7).unwrap();
        // a 3 KiB blob at n = 7: primary slivers of ~1 KiB
        let encs: Vec<_> = (0..1500u64)
            .map(|i| Arc::new(encode(&random_bytes(3 << 10, i), p).unwrap()))
            .collect();
        let sliver_len = encs[0].primary_sliver(0).to_bytes().len();
        for e in &encs {
            c.put_metadata(&e.blob_id(), e.metadata()).await.unwrap();
        }
        let jobs: Vec<(BlobId, u16, Sliver)> = encs[..750]
            .iter()
            .flat_map(|e| (0..7u16).map(move |q| (e.blob_id(), q, e.primary_sliver(q as usize))))
            .collect();
        let count = jobs.len();
        let t = Instant::now();
        futures::stream::iter(jobs)
            .map(|(id, q, s)| {
                let c = c.clone();
                async move { c.put_sliver(&id, q, &s).await.unwrap() }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let single = count as f64 / t.elapsed().as_secs_f64();
        println!(
            "| {sliver_len}-byte slivers verified+persisted, PutSliver, 64 in flight | {single:.0}/s | ≥ 20,000/s |"
        );
        // batched: all 14 slivers of a blob per request, 64 requests in flight
        let batches: Vec<(BlobId, Vec<(u16, Sliver)>)> = encs[750..]
            .iter()
            .map(|e| {
                let v = (0..7u16)
                    .flat_map(|q| {
                        [
                            (q, e.primary_sliver(q as usize)),
                            (q, e.secondary_sliver(6 - q as usize)),
                        ]
                    })
                    .collect();
                (e.blob_id(), v)
            })
            .collect();
        let count: usize = batches.iter().map(|(_, v)| v.len()).sum();
        let t = Instant::now();
        futures::stream::iter(batches)
            .map(|(id, v)| {
                let c = c.clone();
                async move {
                    let items: Vec<(BlobId, u16, &Sliver)> =
                        v.iter().map(|(q, s)| (id, *q, s)).collect();
                    for r in c.put_slivers(&items).await.unwrap() {
                        r.unwrap();
                    }
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let batched = count as f64 / t.elapsed().as_secs_f64();
        println!(
            "| ~1 KiB slivers verified+persisted, PutSlivers of 14, 64 in flight | {batched:.0}/s | ≥ 20,000/s |"
        );
    }

    // 2. disk used vs stored bytes, 16 KiB blobs at n = 100 (every sliver on one node)
    if !only_store {
        let dir = tempfile::tempdir_in(&scratch).unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let p = EncodingParams::new(100).unwrap();
        let mut stored = 0u64;
        for i in 0..BLOBS_16K {
            let e = encode(&random_bytes(16 << 10, i), p).unwrap();
            let id = e.blob_id();
            store.put_metadata(id, e.metadata()).unwrap();
            stored += e.metadata().to_bytes().len() as u64;
            let slivers: Vec<(u16, Sliver)> = (0..100u16)
                .flat_map(|q| {
                    [
                        (q, e.primary_sliver(q as usize)),
                        (q, e.secondary_sliver(99 - q as usize)),
                    ]
                })
                .collect();
            stored += slivers
                .iter()
                .map(|(_, s)| s.to_bytes().len() as u64)
                .sum::<u64>();
            let items: Vec<(BlobId, u16, &Sliver)> =
                slivers.iter().map(|(q, s)| (id, *q, s)).collect();
            for r in store.put_slivers(&items) {
                r.unwrap();
            }
        }
        let before_flush = du(dir.path());
        let journal_before = store.disk_space().1;
        store.flush().unwrap();
        // the journal the flush released is deleted in the background: wait for that
        let t = Instant::now();
        while store.disk_space().1 >= journal_before && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (tables, journal) = store.disk_space();
        if journal >= journal_before {
            println!("(the flush released no journal within 10 s: {journal} bytes remain)");
        }
        let all = du(dir.path());
        println!(
            "| disk / stored bytes, {BLOBS_16K} blobs of 16 KiB at n = 100 ({} MiB stored) | tables {:.2}× (+ journal {} MiB, bounded at 128 MiB); whole directory {:.2}× after flush, {:.2}× before | ≤ 1.3× |",
            stored >> 20,
            tables as f64 / stored as f64,
            journal >> 20,
            all as f64 / stored as f64,
            before_flush as f64 / stored as f64,
        );
    }

    // 3. a big store: restart, RSS, pages
    {
        let dir = tempfile::tempdir_in(&scratch).unwrap();
        let data = dir.path().join("data");
        let t = Instant::now();
        {
            let store = Arc::new(BlobStore::open(&data, None).unwrap());
            // small slivers (a 300-byte blob at n = 7): the store's per-blob cost, not bulk bytes
            let e = encode(&random_bytes(300, 1), EncodingParams::new(7).unwrap()).unwrap();
            let md = e.metadata().clone();
            let (s, s2) = (e.primary_sliver(0), e.secondary_sliver(0));
            let params = EncodingParams::new(7).unwrap();
            std::thread::scope(|sc| {
                for w in 0..64u64 {
                    let store = store.clone();
                    let md = md.clone();
                    let (s, s2) = (s.clone(), s2.clone());
                    sc.spawn(move || {
                        for i in (w..blobs).step_by(64) {
                            let mut b = [0u8; 32];
                            b[..8].copy_from_slice(&blake3::hash(&i.to_le_bytes()).as_bytes()[..8]);
                            b[8..16].copy_from_slice(&i.to_be_bytes());
                            let id = BlobId(b);
                            store.put_metadata(id, &md).unwrap();
                            // the pair of shard 1, the node's shard below (bodies are not checked
                            // by the store; nothing verifies them in this run)
                            let pair = params.pair_for_shard(1, id.mod_n(7)) as u16;
                            for r in store.put_slivers(&[(id, pair, &s), (id, pair, &s2)]) {
                                r.unwrap();
                            }
                            store
                                .put_certificate(&Certificate {
                                    epoch: 1,
                                    blob_id: id,
                                    signers: vec![],
                                })
                                .unwrap();
                        }
                    });
                }
            });
        }
        eprintln!("built {blobs} blobs in {:?}", t.elapsed());
        let node = Node::start(dir.path());
        let (c, me, up) = ready(&node.addr).await;
        let rss = node.metric("process_resident_memory_bytes") / (1 << 20) as f64;
        println!(
            "| restart to ready (GetInfo answers), {blobs} blobs | {:.0} ms | < 1 s |",
            up.as_secs_f64() * 1e3
        );
        println!("| RSS after start, {blobs} blobs | {rss:.0} MiB | < 200 MiB |");
        // a second member holding shard 0, so that it may ask for a sync page of it
        let other = SigningKey::from_bytes(&[7; 32]);
        let other_id = NodeId(other.verifying_key().to_bytes());
        committee_of(
            &c,
            me,
            &node.addr,
            7,
            Some(Member {
                node_id: other_id,
                address: "127.0.0.1:1".into(),
                stake: 1,
                shards: vec![0, 2, 3, 4, 5, 6],
            }),
        )
        .await;
        let admin = c.clone().with_admin_token("bench");
        // the first status after the epoch is set walks every certified blob once (recovery's
        // per-epoch re-check of owned pairs); later ones cost ∝ the backlog
        let t = Instant::now();
        let st = admin.sync_status().await.unwrap();
        println!(
            "| first GetSyncStatus after the committee is set (one pass over {blobs} blobs) | {:.1} s (backlog {}) | |",
            t.elapsed().as_secs_f64(),
            st.recovery_backlog
        );
        let mut after = None;
        let t = Instant::now();
        let pages = 20;
        for _ in 0..pages {
            let req = SyncRequest::sign(&other, 1, 0, after);
            let page = c.sync_shard(&req, 256, 64 << 20).await.unwrap();
            assert_eq!(page.items.len(), 256);
            after = Some(BlobId::from_slice(&page.next).unwrap());
        }
        let client_sync = t.elapsed().as_secs_f64() / pages as f64;
        let t = Instant::now();
        for _ in 0..pages {
            admin.sync_status().await.unwrap();
        }
        let client_status = t.elapsed().as_secs_f64() / pages as f64;
        let t = Instant::now();
        for _ in 0..pages {
            c.list_certified(None, 1000).await.unwrap();
        }
        let client_list = t.elapsed().as_secs_f64() / pages as f64;
        println!(
            "| SyncShard page of 256 blobs, {blobs} blobs | {:.2} ms on the node ({:.1} ms at the client) | < 10 ms |",
            node.server_latency("SyncShard") * 1e3,
            client_sync * 1e3
        );
        println!(
            "| GetSyncStatus, {blobs} blobs | {:.2} ms on the node ({:.1} ms at the client) | < 10 ms |",
            node.server_latency("GetSyncStatus") * 1e3,
            client_status * 1e3
        );
        println!(
            "| ListCertified page of 1000, {blobs} blobs | {:.2} ms on the node ({:.1} ms at the client) | |",
            node.server_latency("ListCertified") * 1e3,
            client_list * 1e3
        );
        println!(
            "| disk used, {blobs} blobs (metadata at n = 7, one sliver, certificate) | {} MiB | |",
            du(&data) >> 20
        );
    }
}
