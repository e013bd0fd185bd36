//! The attacks of issue 12, performed against real `floe-node` processes: each test is the
//! attack, and the node must hold.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use floe_node::codec::BlobId;
use floe_node::proto::{self, storage_server::Storage};
use floe_node::protocol::{Committee, Member, NodeId};
use tonic::{Request, Response, Status};

/// A committee member that lies: it lists the same made-up certificate three times per page
/// and always says there is more. Everything else is refused.
#[derive(Clone)]
struct Rogue {
    list_calls: Arc<AtomicUsize>,
    fake: proto::Certificate,
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Storage for Rogue {
    async fn get_info(&self, _: Request<proto::GetInfoRequest>) -> R<proto::NodeInfo> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get_committee(&self, _: Request<proto::GetCommitteeRequest>) -> R<proto::Committee> {
        Err(Status::unimplemented("rogue"))
    }
    async fn put_metadata(
        &self,
        _: Request<proto::PutMetadataRequest>,
    ) -> R<proto::PutMetadataResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get_metadata(&self, _: Request<proto::BlobRequest>) -> R<proto::MetadataResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn put_sliver(&self, _: Request<proto::PutSliverRequest>) -> R<proto::PutSliverResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn put_slivers(
        &self,
        _: Request<proto::PutSliversRequest>,
    ) -> R<proto::PutSliversResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get_sliver(&self, _: Request<proto::GetSliverRequest>) -> R<proto::SliverResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get_confirmation(&self, _: Request<proto::BlobRequest>) -> R<proto::Confirmation> {
        Err(Status::unimplemented("rogue"))
    }
    async fn put_certificate(
        &self,
        _: Request<proto::Certificate>,
    ) -> R<proto::PutCertificateResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get_recovery_symbols(
        &self,
        _: Request<proto::RecoverySymbolsRequest>,
    ) -> R<proto::RecoverySymbolsResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn get_blob_status(
        &self,
        _: Request<proto::BlobRequest>,
    ) -> R<proto::BlobStatusResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn list_certified(
        &self,
        _: Request<proto::ListCertifiedRequest>,
    ) -> R<proto::ListCertifiedResponse> {
        self.list_calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(proto::ListCertifiedResponse {
            certificates: vec![self.fake.clone(); 3],
            more: true,
        }))
    }
    async fn sync_shard(&self, _: Request<proto::SyncShardRequest>) -> R<proto::SyncShardResponse> {
        Err(Status::unimplemented("rogue"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_member_cannot_make_honest_nodes_accept_a_fake_certificate() {
    // the rogue: a real gRPC server in this process
    let fake_id = BlobId([0x5a; 32]);
    let rogue = Rogue {
        list_calls: Arc::new(AtomicUsize::new(0)),
        fake: proto::Certificate {
            epoch: 999,
            blob_id: fake_id.as_bytes().to_vec(),
            signers: vec![proto::Signer {
                node_id: vec![7; 32],
                signature: vec![9; 64],
            }],
        },
    };
    let calls = rogue.list_calls.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::storage_server::StorageServer::new(rogue))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // four honest nodes, the rogue with 2 shards of 10: 3 copies × 2 shards would have been a
    // validity threshold (4 of 10). Node 1 (1 shard) is wiped and must rebuild from the other
    // 7 honest shards.
    let shards: [&[u16]; 4] = [&[0, 1, 2], &[3], &[4, 5], &[6, 7]];
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<TestNode> = (0..4).map(|i| TestNode::new(root.path(), i, &[])).collect();
    let mut members = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.start();
        let info = n.client().info().await.unwrap();
        members.push(Member {
            node_id: NodeId::try_from(info.node_id.as_slice()).unwrap(),
            address: n.grpc.to_string(),
            stake: 1,
            shards: shards[i].to_vec(),
        });
    }
    members.push(Member {
        node_id: NodeId([0xee; 32]),
        address: rogue_addr.to_string(),
        stake: 1,
        shards: vec![8, 9],
    });
    let committee = Committee {
        epoch: 1,
        n_shards: 10,
        members,
    };
    let mut c = TestCluster {
        root,
        nodes,
        committee,
    };
    c.publish_committee().await;
    let started = Instant::now();

    // honest nodes keep recovering real blobs while the rogue lies to them
    let id = c
        .blob_client()
        .write(random_bytes(200_000, 1), None)
        .await
        .unwrap()
        .blob_id;
    c.nodes[1].kill9();
    c.nodes[1].wipe();
    c.nodes[1].start();
    c.nodes[1]
        .admin()
        .set_committee(&c.committee)
        .await
        .unwrap();
    let holds = |n: &TestNode| {
        let client = n.client();
        async move {
            client.blob_status(&id).await.is_ok_and(|s| {
                s.pairs_owned > 0
                    && s.pairs_stored == s.pairs_owned
                    && s.state == proto::BlobState::Certified as i32
            })
        }
    };
    assert!(
        wait_until_async(Duration::from_secs(15), || holds(&c.nodes[1])).await,
        "the wiped node did not recover the real blob; log:\n{}",
        c.nodes[1].log()
    );
    // every honest node has asked the rogue at least twice (two learning rounds)
    assert!(
        wait_until_async(Duration::from_secs(15), || async {
            calls.load(Ordering::Relaxed) >= 8
        })
        .await,
        "the rogue was asked {} times",
        calls.load(Ordering::Relaxed)
    );
    for n in &c.nodes {
        let certified = n
            .client()
            .blob_status(&fake_id)
            .await
            .is_ok_and(|s| s.certified_epoch != 0);
        assert!(
            !certified,
            "{} accepted the fake certificate",
            n.dir.display()
        );
        let st = n.admin().sync_status().await.unwrap();
        assert!(st.done, "{} is not done: {st:?}", n.dir.display());
    }
    // not hammered: a bounded number of calls per learning round, not thousands a second
    let rate = calls.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    assert!(rate < 20.0, "the rogue was called {rate:.0} times a second");
}

/// An HTTP/2 connection to `addr` with a driver task; returns the request sender.
async fn h2_conn(addr: std::net::SocketAddr) -> Option<h2::client::SendRequest<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (send, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(conn);
    send.ready().await.ok()
}

/// Open a PutSliver stream whose gRPC frame announces `announced` bytes, and send `send`
/// bytes of it; the stream is kept open (not ended).
async fn open_put(
    h2: &mut h2::client::SendRequest<bytes::Bytes>,
    announced: u32,
    send: usize,
) -> Option<h2::SendStream<bytes::Bytes>> {
    let req = http::Request::builder()
        .method("POST")
        .uri("http://node/floe.v1.Storage/PutSliver")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .ok()?;
    let (_resp, mut stream) = h2.send_request(req, false).ok()?;
    let mut body = vec![0u8; 5 + send.saturating_sub(5)];
    body[1..5].copy_from_slice(&announced.to_be_bytes());
    body.truncate(send.max(5));
    stream.send_data(bytes::Bytes::from(body), false).ok()?;
    Some(stream)
}

/// The limits this test gives the node, and the memory bound docs/node.md states for them:
/// base + connections × connection window + (storage + admin slots) × 3 × max message
/// + light slots × 2 × 1 MiB.
const MAX_CONNECTIONS: u64 = 48;
const WINDOW: u64 = 2 << 20;
const SLOTS: u64 = 4;
const MAX_MESSAGE: u64 = 8 << 20;
fn stated_bound() -> u64 {
    let base = 64 << 20;
    let admin_slots = floe_node::server::ADMIN_SLOTS as u64;
    let light =
        floe_node::server::LIGHT_SLOTS as u64 * 2 * floe_node::server::LIGHT_MAX_BODY as u64;
    base + MAX_CONNECTIONS * WINDOW + (SLOTS + admin_slots) * 3 * MAX_MESSAGE + light
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_floods_and_idle_connections_leave_the_node_answering_within_bounds() {
    let flags = vec![
        "--max-connections",
        "48",
        "--connection-window",
        "2MiB",
        "--max-concurrent-requests",
        "4",
        "--max-message",
        "8MiB",
        "--body-timeout",
        "4",
    ];
    let c = TestCluster::start(1, 4, move |_| flags.clone()).await;
    let node = &c.nodes[0];
    let info = node.client();
    info.info().await.unwrap(); // an existing client connection
    let admin = node.admin();
    admin.sync_status().await.unwrap();

    // 16 streams (2 connections) that announce 1 MB and send 10 bytes: they take every storage slot
    let mut held = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let mut conn = h2_conn(node.grpc).await.expect("connect");
        for _ in 0..8 {
            held.push(open_put(&mut conn, 1_000_000, 10).await.expect("stream"));
        }
        conns.push(conn);
    }
    // 24 connections each pushing two 7 MiB bodies that wait for a slot (parked in windows)
    let mut flood = Vec::new();
    for _ in 0..24 {
        if let Some(mut conn) = h2_conn(node.grpc).await {
            for _ in 0..2 {
                if let Some(s) = open_put(&mut conn, 7 << 20, 7 << 20).await {
                    flood.push(s);
                }
            }
            conns.push(conn);
        }
    }
    // and idle connections, more than the node accepts
    let mut idle = Vec::new();
    for _ in 0..40 {
        if let Ok(t) = tokio::net::TcpStream::connect(node.grpc).await {
            idle.push(t);
        }
    }

    // throughout: GetInfo within a second, the admin port answers, memory under the bound
    let bound = stated_bound();
    let mut max_rss = 0;
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(1), info.info()).await;
        assert!(
            matches!(r, Ok(Ok(_))),
            "GetInfo: {r:?} after {:?}",
            t.elapsed()
        );
        let r = tokio::time::timeout(Duration::from_secs(1), admin.sync_status()).await;
        assert!(matches!(r, Ok(Ok(_))), "admin GetSyncStatus: {r:?}");
        max_rss = max_rss.max(node.rss());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "max RSS under attack {} MiB, stated bound {} MiB",
        max_rss >> 20,
        bound >> 20
    );
    assert!(max_rss < bound, "RSS {max_rss} over the bound {bound}");
    // the stalled streams holding slots were cut by the body timeout, extra connections refused
    let timeouts = || node.metric("floe_node_refused_total{reason=\"timeout\"}");
    assert!(
        wait_until(Duration::from_secs(10), || timeouts() >= SLOTS as f64).is_some(),
        "stalled streams cut: {}",
        timeouts()
    );
    assert!(node.metric("floe_node_refused_total{reason=\"connections\"}") > 0.0);
    // once the attackers are gone, storage traffic flows again
    drop((held, flood, idle, conns));
    let data = random_bytes(100_000, 3);
    let out = c.blob_client().write(data.clone(), None).await.unwrap();
    assert_eq!(
        c.blob_client().read(&out.blob_id, None).await.unwrap(),
        data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_symbol_requests_are_bounded_before_the_work() {
    // one node holding all 30 shards of a 15 MiB blob: asking for every target would make it
    // expand 30 slivers and answer ~55 MB per request
    let c = TestCluster::start(1, 30, |_| vec![]).await;
    let node = &c.nodes[0];
    let id = c
        .blob_client()
        .write(random_bytes(15 << 20, 4), None)
        .await
        .unwrap()
        .blob_id;
    let base = node.rss();
    let all: Vec<u16> = (0..30).collect();
    let expansions = node.metric("floe_node_recovery_expansions_total");
    let attacks: Vec<_> = (0..16)
        .map(|_| {
            let client = node.client();
            let all = all.clone();
            tokio::spawn(async move {
                client
                    .recovery_symbols(&id, floe_node::codec::Axis::Primary, &all)
                    .await
            })
        })
        .collect();
    let mut max_rss = 0;
    for a in attacks {
        while !a.is_finished() {
            max_rss = max_rss.max(node.rss());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let e = a
            .await
            .unwrap()
            .map(|symbols| symbols.len())
            .expect_err("an answer of ~55 MB must be refused");
        assert_eq!(e.code(), Some(tonic::Code::ResourceExhausted), "{e}");
    }
    // refused before any helper sliver was expanded (no work, not just a fast answer)
    assert_eq!(
        node.metric("floe_node_recovery_expansions_total"),
        expansions
    );
    assert!(
        max_rss < base + (64 << 20),
        "RSS grew from {} to {} MiB",
        base >> 20,
        max_rss >> 20
    );
    assert!(node.metric("floe_node_refused_total{reason=\"too_large\"}") >= 16.0);
    // a request that fits is answered: one symbol per held helper sliver, each provable
    let md = node.client().get_metadata(&id).await.unwrap();
    let syms = node
        .client()
        .recovery_symbols(&id, floe_node::codec::Axis::Primary, &[3])
        .await
        .unwrap();
    assert_eq!(syms.len(), 30);
    syms[0].verify(&md).unwrap();
    assert_eq!(
        node.metric("floe_node_recovery_expansions_total"),
        expansions + 30.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_creating_keys_in_one_directory_at_once_each_get_their_own() {
    for round in 0..3 {
        let root = tempfile::tempdir().unwrap();
        let keys = root.path().join("keys");
        let mut procs = Vec::new();
        for i in 0..4 {
            let http = free_addr();
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_floe-node"))
                .args([
                    "--data-dir",
                    root.path().join(format!("d{i}")).to_str().unwrap(),
                ])
                .args([
                    "--key-file",
                    keys.join(format!("n{i}.key")).to_str().unwrap(),
                ])
                .args(["--grpc-addr", &free_addr().to_string()])
                .args(["--http-addr", &http.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            procs.push((child, http));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, (child, http)) in procs.iter_mut().enumerate() {
            let up = wait_until(Duration::from_secs(10), || {
                http_get(*http, "/healthz").is_some_and(|(c, _)| c == 200)
            });
            let status = child.try_wait().unwrap();
            assert!(
                up.is_some(),
                "round {round}: node {i} did not come up ({status:?})"
            );
            let seed: [u8; 32] = std::fs::read(keys.join(format!("n{i}.key")))
                .unwrap()
                .try_into()
                .expect("a 32-byte key");
            ids.insert(seed);
        }
        for (mut c, _) in procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(ids.len(), 4, "round {round}: keys shared between nodes");
        let tmp = std::fs::read_dir(&keys)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(tmp, 0, "temporary key files left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_nodes_prove_their_identity_and_plaintext_is_refused() {
    let mut c = TestCluster::start(4, 10, |_| vec!["--tls"]).await;
    // clients pinned to the committee's identities write and read
    let data = random_bytes(300_000, 8);
    let id = c
        .blob_client()
        .write(data.clone(), None)
        .await
        .unwrap()
        .blob_id;
    assert_eq!(c.blob_client().read(&id, None).await.unwrap(), data);
    // node to node over TLS: a wiped node rebuilds from its peers
    c.nodes[2].kill9();
    c.nodes[2].wipe();
    c.nodes[2].start();
    c.nodes[2]
        .admin()
        .set_committee(&c.committee)
        .await
        .unwrap();
    let holds = |n: &TestNode| {
        let client = n.client();
        async move {
            client.blob_status(&id).await.is_ok_and(|s| {
                s.pairs_owned > 0
                    && s.pairs_stored == s.pairs_owned
                    && s.state == proto::BlobState::Certified as i32
            })
        }
    };
    assert!(
        wait_until_async(Duration::from_secs(15), || holds(&c.nodes[2])).await,
        "no recovery over TLS; log:\n{}",
        c.nodes[2].log()
    );
    // a client expecting another node's identity is refused at the handshake
    let m0 = &c.committee.members[0];
    let m1 = &c.committee.members[1];
    let wrong = floe_node::client::NodeClient::for_node(&m0.address, m1.node_id, 1 << 20).unwrap();
    assert!(wrong.info().await.is_err(), "node 0 passed as node 1");
    let right = floe_node::client::NodeClient::for_node(&m0.address, m0.node_id, 1 << 20).unwrap();
    right.info().await.unwrap();
    // plaintext to a TLS port gets nowhere
    let plain = floe_node::client::NodeClient::new(&c.nodes[0].grpc.to_string(), 1 << 20).unwrap();
    assert!(plain.info().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_only_the_newest_committee_learns_past_ones_from_a_quorum() {
    let mut c = TestCluster::start(4, 10, |_| vec![]).await;
    let data = random_bytes(200_000, 11);
    let id = c.blob_client().write(data, None).await.unwrap().blob_id;
    // epochs 2 and 3 with the same members: the blob stays certified in epoch 1
    for e in [2, 3] {
        c.committee.epoch = e;
        c.publish_committee().await;
    }
    c.nodes[1].kill9();
    c.nodes[1].wipe();
    c.nodes[1].start();
    c.nodes[1]
        .admin()
        .set_committee(&c.committee)
        .await
        .unwrap();
    let holds = |n: &TestNode| {
        let client = n.client();
        async move {
            client.blob_status(&id).await.is_ok_and(|s| {
                s.pairs_owned > 0 && s.pairs_stored == s.pairs_owned && s.certified_epoch == 1
            })
        }
    };
    assert!(
        wait_until_async(Duration::from_secs(15), || holds(&c.nodes[1])).await,
        "the epoch-1 certificate was not verified and the blob not rebuilt; log:\n{}",
        c.nodes[1].log()
    );
    assert_eq!(c.nodes[1].client().committee_of(1).await.unwrap().epoch, 1);
}
