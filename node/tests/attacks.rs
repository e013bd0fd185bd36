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
    /// What it answers to StoreBlob, if anything.
    store_answer: Option<proto::StoreBlobResponse>,
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
    async fn put_lifetime(
        &self,
        _: Request<proto::PutLifetimeRequest>,
    ) -> R<proto::PutLifetimeResponse> {
        Err(Status::unimplemented("rogue"))
    }
    async fn store_blob(&self, _: Request<proto::StoreBlobRequest>) -> R<proto::StoreBlobResponse> {
        match &self.store_answer {
            Some(a) => Ok(Response::new(a.clone())),
            None => Err(Status::unimplemented("rogue")),
        }
    }
    async fn put_certificates(
        &self,
        _: Request<proto::PutCertificatesRequest>,
    ) -> R<proto::PutCertificatesResponse> {
        Err(Status::unimplemented("rogue"))
    }
}

/// A node of the previous version: a real node behind a proxy that does not know `StoreBlob`
/// and `PutCertificates` (answers `Unimplemented`, as tonic does for an unknown method) and
/// forwards every other call. Counts both.
#[derive(Clone)]
struct PreviousVersion {
    inner: proto::storage_client::StorageClient<tonic::transport::Channel>,
    unknown: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
}

impl PreviousVersion {
    fn inner(&self) -> proto::storage_client::StorageClient<tonic::transport::Channel> {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        self.inner.clone()
    }
}

#[tonic::async_trait]
impl Storage for PreviousVersion {
    async fn get_info(&self, r: Request<proto::GetInfoRequest>) -> R<proto::NodeInfo> {
        self.inner().get_info(r.into_inner()).await
    }
    async fn get_committee(&self, r: Request<proto::GetCommitteeRequest>) -> R<proto::Committee> {
        self.inner().get_committee(r.into_inner()).await
    }
    async fn put_metadata(
        &self,
        r: Request<proto::PutMetadataRequest>,
    ) -> R<proto::PutMetadataResponse> {
        self.inner().put_metadata(r.into_inner()).await
    }
    async fn get_metadata(&self, r: Request<proto::BlobRequest>) -> R<proto::MetadataResponse> {
        self.inner().get_metadata(r.into_inner()).await
    }
    async fn put_sliver(&self, r: Request<proto::PutSliverRequest>) -> R<proto::PutSliverResponse> {
        self.inner().put_sliver(r.into_inner()).await
    }
    async fn put_slivers(
        &self,
        r: Request<proto::PutSliversRequest>,
    ) -> R<proto::PutSliversResponse> {
        self.inner().put_slivers(r.into_inner()).await
    }
    async fn get_sliver(&self, r: Request<proto::GetSliverRequest>) -> R<proto::SliverResponse> {
        self.inner().get_sliver(r.into_inner()).await
    }
    async fn get_confirmation(&self, r: Request<proto::BlobRequest>) -> R<proto::Confirmation> {
        self.inner().get_confirmation(r.into_inner()).await
    }
    async fn put_certificate(
        &self,
        r: Request<proto::Certificate>,
    ) -> R<proto::PutCertificateResponse> {
        self.inner().put_certificate(r.into_inner()).await
    }
    async fn get_recovery_symbols(
        &self,
        r: Request<proto::RecoverySymbolsRequest>,
    ) -> R<proto::RecoverySymbolsResponse> {
        self.inner().get_recovery_symbols(r.into_inner()).await
    }
    async fn get_blob_status(
        &self,
        r: Request<proto::BlobRequest>,
    ) -> R<proto::BlobStatusResponse> {
        self.inner().get_blob_status(r.into_inner()).await
    }
    async fn list_certified(
        &self,
        r: Request<proto::ListCertifiedRequest>,
    ) -> R<proto::ListCertifiedResponse> {
        self.inner().list_certified(r.into_inner()).await
    }
    async fn sync_shard(&self, r: Request<proto::SyncShardRequest>) -> R<proto::SyncShardResponse> {
        self.inner().sync_shard(r.into_inner()).await
    }
    async fn put_lifetime(
        &self,
        r: Request<proto::PutLifetimeRequest>,
    ) -> R<proto::PutLifetimeResponse> {
        self.inner().put_lifetime(r.into_inner()).await
    }
    async fn store_blob(&self, _: Request<proto::StoreBlobRequest>) -> R<proto::StoreBlobResponse> {
        self.unknown.fetch_add(1, Ordering::Relaxed);
        Err(Status::unimplemented("unknown method StoreBlob"))
    }
    async fn put_certificates(
        &self,
        _: Request<proto::PutCertificatesRequest>,
    ) -> R<proto::PutCertificatesResponse> {
        self.unknown.fetch_add(1, Ordering::Relaxed);
        Err(Status::unimplemented("unknown method PutCertificates"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_go_in_one_call_and_a_previous_version_gets_the_separate_calls() {
    let shards: [&[u16]; 4] = [&[0, 1, 2], &[3, 4], &[5, 6], &[7, 8, 9]];
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<TestNode> = (0..4).map(|i| TestNode::new(root.path(), i, &[])).collect();
    let mut members = Vec::new();
    let mut proxy = None;
    for (i, n) in nodes.iter_mut().enumerate() {
        n.start();
        let info = n.client().info().await.unwrap();
        let mut address = n.grpc.to_string();
        if i == 3 {
            // node 3 is reached through the previous-version proxy
            let p = PreviousVersion {
                inner: proto::storage_client::StorageClient::connect(format!("http://{}", n.grpc))
                    .await
                    .unwrap(),
                unknown: Arc::new(AtomicUsize::new(0)),
                forwarded: Arc::new(AtomicUsize::new(0)),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            address = listener.local_addr().unwrap().to_string();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(proto::storage_server::StorageServer::new(p.clone()))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            proxy = Some(p);
        }
        members.push(Member {
            node_id: NodeId::try_from(info.node_id.as_slice()).unwrap(),
            address,
            stake: 1,
            shards: shards[i].to_vec(),
        });
    }
    let proxy = proxy.unwrap();
    let c = TestCluster {
        root,
        nodes,
        committee: Committee {
            epoch: 1,
            n_shards: 10,
            members,
            economics: None,
        },
    };
    c.publish_committee().await;

    // several small blobs at once: the new nodes take each in one call and the certificates
    // in batches; the previous version gets the separate calls and is certified all the same
    let client = c.blob_client();
    // eight small blobs and one whose share per node (~1.7 MB) is above a light request's
    // 1 MiB body cap: StoreBlob is a storage-class request
    let mut data: Vec<Vec<u8>> = (0..8).map(|i| random_bytes(10_000, 40 + i)).collect();
    data.push(random_bytes(1_500_000, 48));
    let outs = futures::future::join_all(data.iter().map(|d| client.write(d.clone(), None))).await;
    let mut ids = Vec::new();
    for (o, d) in outs.into_iter().zip(&data) {
        let o = o.expect("written");
        assert_eq!(
            o.certified_nodes, 4,
            "every node certified, the old one too"
        );
        assert_eq!(&client.read(&o.blob_id, None).await.unwrap()[..], &d[..]);
        ids.push(o.blob_id);
    }
    assert!(
        proxy.unknown.load(Ordering::Relaxed) >= 2,
        "the new calls were tried on the previous version"
    );
    assert!(
        proxy.forwarded.load(Ordering::Relaxed) >= 9 * 4,
        "metadata, slivers, confirmation and certificate went separately: {} calls",
        proxy.forwarded.load(Ordering::Relaxed)
    );
    // the new nodes were written with one StoreBlob per blob and no separate calls
    let calls = |n: &TestNode, method: &str| -> f64 {
        n.metrics()
            .lines()
            .filter(|l| {
                l.starts_with("floe_node_grpc_requests_total{")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains("code=\"Ok\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for n in &c.nodes[..3] {
        assert_eq!(calls(n, "StoreBlob"), 9.0, "{}", n.dir.display());
        assert_eq!(calls(n, "PutMetadata") + calls(n, "GetConfirmation"), 0.0);
        assert!(calls(n, "PutCertificates") >= 1.0);
        assert_eq!(calls(n, "PutCertificate"), 0.0);
    }
    assert_eq!(
        calls(&c.nodes[3], "PutMetadata"),
        9.0,
        "the previous version"
    );
    for n in &c.nodes {
        for id in &ids {
            let s = n.client().blob_status(id).await.unwrap();
            assert_eq!(s.pairs_stored, s.pairs_owned);
            assert_ne!(
                s.certified_epoch,
                0,
                "{} holds {id} uncertified",
                n.dir.display()
            );
        }
    }

    // PutCertificates checks each certificate as PutCertificate does: a real one (already
    // there), a forged one and one of an unknown epoch answer per item; too many are refused
    let node = c.nodes[0].client();
    let (certs, _) = node.list_certified(None, 1).await.unwrap();
    let real = certs[0].clone();
    let mut forged = real.clone();
    forged.blob_id = BlobId([0x77; 32]);
    let mut unknown_epoch = real.clone();
    unknown_epoch.epoch = 99;
    let r = node
        .put_certificates(&[real.clone(), forged, unknown_epoch])
        .await
        .unwrap();
    assert!(matches!(r[0], Ok(true)), "{:?}", r[0]);
    assert_eq!(
        r[1].as_ref().unwrap_err().code(),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        r[2].as_ref().unwrap_err().code(),
        Some(tonic::Code::FailedPrecondition)
    );
    let too_many = vec![real; 1025];
    let e = node.put_certificates(&too_many).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
}

/// A member that answers an upload with another member's confirmation (genuine, for the very
/// blob) is refused by the client: counted with the liar's weight, it would put that signer in
/// the certificate twice, and every node would refuse the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_replaying_another_members_confirmation_is_refused() {
    use floe_node::codec::{encode, EncodingParams};
    use floe_node::protocol::Confirmation;
    let enc = encode(&[4u8; 5_000], EncodingParams::new(10).unwrap()).unwrap();
    let id = enc.blob_id();
    let (liar, other) = (
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
    );
    let answer = |key: &ed25519_dalek::SigningKey| {
        let c = Confirmation::sign(key, 1, id);
        proto::StoreBlobResponse {
            results: Vec::new(),
            confirmation: Some(proto::Confirmation {
                epoch: c.epoch,
                blob_id: id.as_bytes().to_vec(),
                node_id: c.node_id.0.to_vec(),
                signature: c.signature.to_vec(),
            }),
        }
    };
    let mut outcomes = Vec::new();
    for signer in [&other, &liar] {
        let rogue = Rogue {
            list_calls: Arc::new(AtomicUsize::new(0)),
            fake: proto::Certificate::default(),
            store_answer: Some(answer(signer)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(proto::storage_server::StorageServer::new(rogue))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let node = floe_node::client::NodeClient::for_node(
            &addr.to_string(),
            NodeId(liar.verifying_key().to_bytes()),
            4 << 20,
        )
        .unwrap();
        outcomes.push(node.store_blob(&id, enc.metadata(), None, &[], true).await);
    }
    let err = outcomes[0].as_ref().unwrap_err();
    assert!(err.to_string().contains("not by the node asked"), "{err}");
    // the positive control: its own confirmation is taken
    let (_, conf) = outcomes[1].as_ref().unwrap();
    assert_eq!(
        conf.as_ref().map(|c| c.node_id),
        Some(NodeId(liar.verifying_key().to_bytes()))
    );
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
        store_answer: None,
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
        economics: None,
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

    // from another address (127.0.0.2): 16 streams (2 connections) that announce 1 MB and
    // send 10 bytes, to take every storage slot the fair share lets one source have
    let mut held = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let mut conn = h2_conn_from(2, node.grpc).await.expect("connect");
        for _ in 0..8 {
            held.push(open_put(&mut conn, 1_000_000, 10).await.expect("stream"));
        }
        conns.push(conn);
    }
    // 24 connections each pushing two 7 MiB bodies that wait for a slot (parked in windows)
    let mut flood = Vec::new();
    for _ in 0..24 {
        if let Some(mut conn) = h2_conn_from(2, node.grpc).await {
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
        if let Ok(t) = tcp_from(2, node.grpc).await {
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
    // the stalled streams holding slots were cut by the body timeout and their source backs
    // off; connections past the listener's cap were refused or evicted
    let refused = |r: &str| node.metric(&format!("floe_node_refused_total{{reason=\"{r}\"}}"));
    assert!(
        wait_until(Duration::from_secs(10), || refused("timeout") >= 1.0
            && refused("backoff") >= 1.0)
        .is_some(),
        "stalled streams cut: {}, refused in backoff: {}",
        refused("timeout"),
        refused("backoff")
    );
    let evicted = node.metric("floe_node_evicted_connections_total{reason=\"idle_at_cap\"}")
        + node.metric("floe_node_evicted_connections_total{reason=\"no_request\"}");
    assert!(refused("connections") + refused("source_connections") + evicted > 0.0);
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

// ---- issue 22: availability under connection attacks -------------------------------------
//
// One test process plays the attacker from other loopback addresses (127.0.0.2 and up) and the
// honest client from 127.0.0.1, so that per-source limits apply as they would between hosts.

/// The heavy attacks run one at a time: on a 2-core machine two of them at once would measure
/// the machine, not the node.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A TCP connection to `addr` from the loopback address `127.0.0.{from}`.
async fn tcp_from(from: u8, addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(std::net::SocketAddr::from(([127, 0, 0, from], 0)))?;
    s.connect(addr).await
}

/// A TLS connection (handshake done, nothing sent after it) from `127.0.0.{from}`.
async fn tls_from(
    from: u8,
    addr: std::net::SocketAddr,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tcp_from(from, addr).await.ok()?;
    let cfg = floe_node::tls::client_config(None, None).ok()?;
    let name = rustls::pki_types::ServerName::try_from("floe-node").ok()?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .ok()
}

/// An attacker's connection slot: open a connection with `open`, hold it without sending
/// anything until the node closes it, then open the next one, until `until`. Returns how many
/// connections it opened.
async fn hold_reopening<S, F, Fut>(until: Instant, pause: Duration, open: F) -> usize
where
    S: tokio::io::AsyncRead + Unpin,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<S>>,
{
    use tokio::io::AsyncReadExt;
    let mut opened = 0;
    while Instant::now() < until {
        if let Some(mut s) = open().await {
            opened += 1;
            let mut buf = [0u8; 256];
            // read until the node closes it (EOF or error) or the attack ends
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    _ => break,
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    opened
}

/// Latencies of `probe` run every `every` until `until`; a failed or timed-out probe counts as
/// `None`. The honest client runs on a thread and runtime of its own, as another process
/// would: the attacker's hundreds of tasks in this process do not delay its scheduling.
async fn probe_until<F, Fut>(until: Instant, every: Duration, probe: F) -> Vec<Option<Duration>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let out = rt.block_on(async move {
            let mut out = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                let ok = tokio::time::timeout(Duration::from_secs(3), probe())
                    .await
                    .unwrap_or(false);
                out.push(ok.then(|| t.elapsed()));
                tokio::time::sleep(every.saturating_sub(t.elapsed())).await;
            }
            out
        });
        let _ = tx.send(out);
    });
    rx.await.expect("the prober finished")
}

/// (successes, count, p99 with failures counted as infinitely slow).
fn summary(lat: &[Option<Duration>]) -> (usize, usize, Duration) {
    let mut v: Vec<Duration> = lat.iter().map(|l| l.unwrap_or(Duration::MAX)).collect();
    v.sort();
    let ok = lat.iter().filter(|l| l.is_some()).count();
    let p99 = v
        .get((v.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(Duration::MAX);
    (ok, lat.len(), p99)
}

fn report(what: &str, lat: &[Option<Duration>]) -> Duration {
    let (ok, n, p99) = summary(lat);
    let mut v: Vec<Duration> = lat.iter().flatten().copied().collect();
    v.sort();
    let p50 = v.get(v.len() / 2).copied().unwrap_or_default();
    eprintln!("| {what} | {ok}/{n} | p50 {p50:.1?} | p99 {p99:.1?} |");
    p99
}

/// Attackers against `addr` until `until`, each connection re-opened 100 ms after the node closed
/// or refused it: `(count, first source, sources)` TLS connections (handshake done, then silent)
/// and bare TCP ones (no handshake), spread over the sources `127.0.0.{first}…`. Each task
/// answers how many connections it opened.
fn flood(
    addr: std::net::SocketAddr,
    until: Instant,
    tls: (u32, u8, u8),
    tcp: (u32, u8, u8),
) -> Vec<tokio::task::JoinHandle<usize>> {
    let pause = Duration::from_millis(100);
    let source = |(_, first, sources): (u32, u8, u8), i: u32| first + (i % sources as u32) as u8;
    let tls_tasks = (0..tls.0).map(|i| {
        let from = source(tls, i);
        tokio::spawn(hold_reopening(until, pause, move || tls_from(from, addr)))
    });
    let tcp_tasks = (0..tcp.0).map(|i| {
        let from = source(tcp, i);
        tokio::spawn(hold_reopening(until, pause, move || async move {
            tcp_from(from, addr).await.ok()
        }))
    });
    tls_tasks.chain(tcp_tasks).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_connections_and_a_bare_tcp_flood_leave_new_connections_answered() {
    let _one = HEAVY.lock().await;
    let c = TestCluster::start(1, 4, |_| vec!["--tls"]).await;
    let node = &c.nodes[0];
    let addr = node.grpc;
    let until = Instant::now() + Duration::from_secs(20);
    // 300 TLS connections from 10 addresses (30 each: under the per-source cap, over the
    // listener's 256 in all), each re-opened 100 ms after the node closed or refused it (at
    // once, the attacker in this process takes the 2 cores the node runs on and overflows the
    // kernel's accept queue, whose dropped SYNs cost an honest client a 1 s retransmit: that
    // measures the machine and the kernel, not the node; docs/node.md says so)
    // and 128 bare TCP connections from 4 more, re-opened the same way
    let attackers = flood(addr, until, (300, 2, 10), (128, 12, 4));
    // wait until the attack fills the listener (the node holds 200 or starts evicting)
    let full = wait_until_async(Duration::from_secs(30), || async {
        node.metric("floe_node_connections") >= 200.0
            || node.metric("floe_node_evicted_connections_total{reason=\"idle_at_cap\"}") >= 1.0
    })
    .await;
    assert!(full, "the attack never filled the listener");
    // an honest client: a new connection and GetInfo, every 100 ms
    let address = node.address();
    let lat = probe_until(until, Duration::from_millis(100), move || {
        let address = address.clone();
        async move {
            let fresh = floe_node::client::NodeClient::new(&address, 1 << 20).unwrap();
            fresh.info().await.is_ok()
        }
    })
    .await;
    let mut opened = 0;
    for a in attackers {
        opened += a.await.unwrap();
    }
    let evicted = |r: &str| {
        node.metric(&format!(
            "floe_node_evicted_connections_total{{reason=\"{r}\"}}"
        ))
    };
    eprintln!(
        "attacker connections opened {opened}; evicted: no request {}, idle at cap {}",
        evicted("no_request"),
        evicted("idle_at_cap")
    );
    let p99 = report(
        "new connection + GetInfo under 300 idle TLS + bare TCP flood",
        &lat,
    );
    assert!(lat.len() >= 50, "only {} probes", lat.len());
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    assert!(evicted("no_request") > 0.0 && evicted("idle_at_cap") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_admin_port_do_not_lock_the_control_plane_out() {
    let _one = HEAVY.lock().await;
    let c = TestCluster::start(1, 4, |_| vec!["--tls"]).await;
    let node = &c.nodes[0];
    let admin_addr = node.admin;
    let until = Instant::now() + Duration::from_secs(15);
    // 50 TLS connections without the admin certificate from 5 addresses, re-opened when closed,
    // and 20 bare TCP connections that never start a handshake
    let attackers = flood(admin_addr, until, (50, 2, 5), (20, 7, 2));
    // the control plane's calls, each on a new connection (as after a restart of the operator)
    let (address, port) = (node.address(), node.admin.port() as u32);
    let lat = probe_until(until, Duration::from_millis(100), move || {
        let address = address.clone();
        async move {
            let admin = floe_node::client::NodeClient::new(&address, 1 << 20)
                .and_then(|c| {
                    c.with_admin_address(&floe_node::client::NodeClient::admin_address_of(
                        &address, port,
                    ))
                })
                .map(|c| c.with_admin_token(TOKEN));
            match admin {
                Ok(a) => a.sync_status().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    for a in attackers {
        a.await.unwrap();
    }
    node.admin().set_committee(&c.committee).await.unwrap();
    let p99 = report(
        "admin GetSyncStatus on a new connection under 50 idle TLS + 20 TCP",
        &lat,
    );
    assert!(lat.len() >= 50, "only {} probes", lat.len());
    let (ok, n, _) = summary(&lat);
    assert_eq!(ok, n, "admin calls failed during the attack");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // a client with the wrong token does not get past the handshake, a right one does
    let wrong = node
        .client()
        .with_admin_address(&floe_node::client::NodeClient::admin_address_of(
            &node.address(),
            node.admin.port() as u32,
        ))
        .unwrap()
        .with_admin_token("not-the-token");
    let e = wrong.sync_status().await.unwrap_err();
    assert_ne!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");
}

/// A gRPC PutSliver stream from `conn` that announces 1 MB and sends 10 bytes, then stalls;
/// resolves when the node ends it (cut or refused).
async fn stalled_put(conn: &mut h2::client::SendRequest<bytes::Bytes>) -> bool {
    let Ok(mut ready) = conn.clone().ready().await else {
        return false;
    };
    let req = http::Request::builder()
        .method("POST")
        .uri("http://node/floe.v1.Storage/PutSliver")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let Ok((resp, mut stream)) = ready.send_request(req, false) else {
        return false;
    };
    let mut body = vec![0u8; 10];
    body[1..5].copy_from_slice(&1_000_000u32.to_be_bytes());
    if stream.send_data(bytes::Bytes::from(body), false).is_err() {
        return false;
    }
    let _ = resp.await;
    drop(stream);
    true
}

/// `per_conn` stalled streams on each of 16 connections from 127.0.0.2, each re-opened at
/// once when the node cuts it (after a refusal that came at once, 100 ms later); meanwhile an
/// honest client reads metadata and slivers.
async fn reopened_stalled_streams(per_conn: usize) {
    let _one = HEAVY.lock().await;
    let c = TestCluster::start(1, 4, |_| vec!["--body-timeout", "3"]).await;
    let node = &c.nodes[0];
    let id = c
        .blob_client()
        .write(random_bytes(300_000, 22), None)
        .await
        .unwrap()
        .blob_id;
    let until = Instant::now() + Duration::from_secs(15);
    let mut attackers = Vec::new();
    for _ in 0..16 {
        let conn = h2_conn_from(2, node.grpc).await.expect("connect");
        for _ in 0..per_conn {
            let mut conn = conn.clone();
            attackers.push(tokio::spawn(async move {
                let mut opened = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    if !stalled_put(&mut conn).await {
                        break;
                    }
                    opened += 1;
                    if t.elapsed() < Duration::from_secs(1) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                opened
            }));
        }
    }
    // the storage slots are contended before the first probe
    let cut = wait_until_async(Duration::from_secs(20), || async {
        node.metric("floe_node_refused_total{reason=\"timeout\"}") >= 1.0
    })
    .await;
    assert!(cut, "no stalled stream was cut");
    let client = node.client();
    let probes = Arc::new(AtomicUsize::new(0));
    let lat = probe_until(until, Duration::from_millis(50), move || {
        let (client, probes) = (client.clone(), probes.clone());
        async move {
            let i = probes.fetch_add(1, Ordering::Relaxed);
            if i % 2 == 0 {
                client.get_metadata(&id).await.is_ok()
            } else {
                client
                    .get_sliver(&id, (i % 4) as u16, floe_node::codec::Axis::Primary)
                    .await
                    .is_ok()
            }
        }
    })
    .await;
    let mut opened = 0;
    for a in attackers {
        opened += a.await.unwrap_or(0);
    }
    let refused = |r: &str| node.metric(&format!("floe_node_refused_total{{reason=\"{r}\"}}"));
    eprintln!(
        "stalled streams opened {opened}; cut {}, refused for backoff {}, per-source streams {}",
        refused("timeout"),
        refused("backoff"),
        refused("source_streams")
    );
    let p99 = report(
        &format!(
            "GetMetadata/GetSliver under {} re-opened stalled streams",
            16 * per_conn
        ),
        &lat,
    );
    assert!(lat.len() >= 50, "only {} probes", lat.len());
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // the stalling source paid: after its first cut it was refused instead of served
    assert!(refused("backoff") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_reopened_stalled_streams_leave_storage_reads_answered() {
    reopened_stalled_streams(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_twelve_reopened_stalled_streams_leave_storage_reads_answered() {
    reopened_stalled_streams(32).await;
}

/// An HTTP/2 connection to `addr` from `127.0.0.{from}` with a driver task; returns the
/// request sender.
async fn h2_conn_from(
    from: u8,
    addr: std::net::SocketAddr,
) -> Option<h2::client::SendRequest<bytes::Bytes>> {
    let tcp = tcp_from(from, addr).await.ok()?;
    let (send, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(conn);
    send.ready().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_parked_by_a_burst_of_bodies_is_given_back() {
    let _one = HEAVY.lock().await;
    // one storage slot, held by a stalled stream, so that every other body waits parked in
    // its connection's window; the per-source caps are lifted so that one address can burst
    let flags = vec![
        "--max-concurrent-requests",
        "1",
        "--body-timeout",
        "60",
        "--max-connections-per-source",
        "1000",
        "--max-streams-per-source",
        "100000",
        "--max-streams-per-connection",
        "32",
    ];
    let c = TestCluster::start(1, 4, move |_| flags.clone()).await;
    let node = &c.nodes[0];
    node.client().info().await.unwrap();
    let before = node.rss();
    let mut holder = h2_conn_from(2, node.grpc).await.expect("connect");
    let _slot = open_put(&mut holder, 1_000_000, 10).await.expect("stream");
    // 250 connections × 32 bodies of 128 KiB: 4 MiB per connection, the connection window
    let mut conns = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..250 {
        let Some(mut conn) = h2_conn_from(3, node.grpc).await else {
            continue;
        };
        for _ in 0..32 {
            if let Some(s) = open_put(&mut conn, 128 << 10, 128 << 10).await {
                streams.push(s);
            }
        }
        conns.push(conn);
    }
    assert_eq!(conns.len(), 250, "connections refused");
    // the bodies arrive: RSS grows towards 1 GiB
    let mut peak = 0;
    wait_until(Duration::from_secs(30), || {
        peak = peak.max(node.rss());
        peak > before + (512 << 20)
    });
    wait_until(Duration::from_secs(5), || {
        let r = node.rss();
        let grew = r > peak + (16 << 20);
        peak = peak.max(r);
        !grew
    });
    drop((streams, conns, _slot, holder));
    // every connection closed: the node gives the memory back
    let back = wait_until(Duration::from_secs(30), || {
        node.metric("floe_node_connections") == 0.0 && node.rss() < 2 * before
    });
    let after = node.rss();
    eprintln!(
        "| RSS, 250 connections × 32 parked 128 KiB bodies | before {} MiB | peak {} MiB | after {} MiB |",
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(peak > before + (512 << 20), "the burst did not happen");
    assert!(
        back.is_some(),
        "RSS {} MiB after the burst, {} MiB before",
        after >> 20,
        before >> 20
    );
}
