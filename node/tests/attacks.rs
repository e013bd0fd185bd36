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
    async fn get_blob_status(&self, _: Request<proto::BlobRequest>) -> R<proto::BlobStatusResponse> {
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
    c.nodes[1].admin().set_committee(&c.committee).await.unwrap();
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
        assert!(!certified, "{} accepted the fake certificate", n.dir.display());
        let st = n.admin().sync_status().await.unwrap();
        assert!(st.done, "{} is not done: {st:?}", n.dir.display());
    }
    // not hammered: a bounded number of calls per learning round, not thousands a second
    let rate = calls.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    assert!(rate < 20.0, "the rogue was called {rate:.0} times a second");
}
