//! Shard sync at an epoch change (PROTOCOL.md §6), with real `floe-node` processes: a node that
//! gains shards pulls them from their previous owner, falls back to recovery when that owner is
//! gone, persists its progress, and sources serve only a shard's new owner.

mod common;

use std::time::Duration;

use common::*;
use floe_node::codec::BlobId;
use floe_node::proto::{self, storage_client::StorageClient};
use floe_node::protocol::{Committee, Member, NodeId, SyncRequest};

/// Every pair the node owns has both slivers stored and the blob is certified.
async fn node_holds_all(node: &TestNode, id: &BlobId) -> bool {
    match node.client().blob_status(id).await {
        Ok(s) => {
            s.pairs_owned > 0
                && s.pairs_stored == s.pairs_owned
                && s.state == proto::BlobState::Certified as i32
        }
        Err(_) => false,
    }
}

/// Epoch 2: a new node takes over every shard of member `leaving`. Like the control plane, the
/// test first tells the newcomer the outgoing committee, from which it learns its sources.
async fn hand_over(c: &TestCluster, newcomer: &TestNode, leaving: usize) -> Committee {
    newcomer
        .admin()
        .set_committee(&c.committee)
        .await
        .expect("outgoing committee");
    let info = newcomer.client().info().await.expect("info");
    let mut next = c.committee.clone();
    next.epoch = 2;
    let shards = next.members[leaving].shards.clone();
    next.members[leaving] = Member {
        node_id: NodeId::try_from(info.node_id.as_slice()).unwrap(),
        address: newcomer.grpc.to_string(),
        stake: 1,
        shards,
    };
    next
}

async fn write_blobs(c: &TestCluster, count: u64) -> Vec<(BlobId, Vec<u8>)> {
    let client = c.blob_client();
    let mut blobs = Vec::new();
    for seed in 0..count {
        let data = random_bytes(300_000 + seed as usize * 777, seed + 40);
        blobs.push((
            client
                .write(data.clone(), None)
                .await
                .expect("write")
                .blob_id,
            data,
        ));
    }
    blobs
}

async fn sync_done(node: &TestNode, epoch: u32) -> bool {
    node.admin()
        .sync_status()
        .await
        .is_ok_and(|s| s.done && s.target_epoch == epoch)
}

/// Hand `committee` to every node in `nodes`.
async fn publish<'a>(nodes: impl Iterator<Item = &'a TestNode>, committee: &Committee) {
    for n in nodes {
        n.admin()
            .set_committee(committee)
            .await
            .expect("set committee");
    }
}

/// Wait until `node` reports the sync of `epoch` done.
async fn wait_for_sync(node: &TestNode, epoch: u32, seconds: u64) {
    assert!(
        wait_until_async(Duration::from_secs(seconds), || sync_done(node, epoch)).await,
        "sync not done: {:?}\n{}",
        node.admin().sync_status().await,
        node.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gained_shards_are_pulled_from_their_previous_owner() {
    let c = TestCluster::start(4, 8, |_| vec![]).await;
    let blobs = write_blobs(&c, 3).await;
    let mut newcomer = TestNode::new(c.root.path(), 4, &[]);
    newcomer.start();
    let next = hand_over(&c, &newcomer, 3).await;
    publish(c.nodes.iter().chain([&newcomer]), &next).await;
    wait_for_sync(&newcomer, 2, 60).await;
    let status = newcomer.admin().sync_status().await.unwrap();
    assert_eq!(
        (
            status.blobs_done,
            status.blobs_total,
            status.recovery_backlog
        ),
        (6, 6, 0),
        "{status:?}"
    ); // 3 blobs × 2 shards
    for (id, _) in &blobs {
        assert!(node_holds_all(&newcomer, id).await, "newcomer lacks {id}");
    }
    // everything came from the previous owner, nothing from recovery
    assert_eq!(newcomer.metric("floe_node_synced_slivers_total"), 12.0);
    assert_eq!(newcomer.metric("floe_node_recovered_slivers_total"), 0.0);
    assert_eq!(newcomer.metric("floe_node_sync_fallbacks_total"), 0.0);
    assert!(c.nodes[3]
        .metrics()
        .contains("floe_node_grpc_requests_total{code=\"Ok\",method=\"SyncShard\"}"));

    // the previous owner leaves: reads through the new committee are served by the newcomer
    let mut c = c;
    c.nodes[3].kill9();
    c.committee = next.clone();
    let client = c.blob_client();
    for (id, data) in &blobs {
        assert_eq!(&client.read(id, None).await.expect("read in epoch 2"), data);
    }
    // progress is persisted: a restart still reports the sync of epoch 2 as done, and redoes nothing
    newcomer.kill9();
    newcomer.start();
    assert!(
        sync_done(&newcomer, 2).await,
        "{:?}",
        newcomer.admin().sync_status().await
    );
    assert_eq!(newcomer.metric("floe_node_synced_slivers_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_falls_back_to_recovery_when_the_previous_owner_is_gone() {
    let mut c = TestCluster::start(4, 8, |_| vec![]).await;
    let blobs = write_blobs(&c, 2).await;
    let mut newcomer = TestNode::new(c.root.path(), 4, &[]);
    newcomer.start();
    let next = hand_over(&c, &newcomer, 3).await;
    c.nodes[3].kill9();
    publish(c.nodes.iter().take(3).chain([&newcomer]), &next).await;
    let early = newcomer.admin().sync_status().await.unwrap();
    assert!(
        !early.done && early.target_epoch == 2,
        "done before anything was pulled: {early:?}"
    );
    wait_for_sync(&newcomer, 2, 90).await;
    for (id, _) in &blobs {
        assert!(node_holds_all(&newcomer, id).await, "newcomer lacks {id}");
    }
    assert_eq!(
        newcomer.metric("floe_node_sync_fallbacks_total"),
        2.0,
        "both gained shards handed to recovery"
    );
    assert_eq!(
        newcomer.metric("floe_node_recovered_slivers_total"),
        8.0,
        "2 blobs × 2 shards × 2 slivers rebuilt"
    );
    c.committee = next;
    let client = c.blob_client();
    for (id, data) in &blobs {
        assert_eq!(&client.read(id, None).await.expect("read in epoch 2"), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_source_is_given_up_and_nothing_it_sent_is_kept() {
    // node 3 stores honestly but corrupts every sliver it hands out
    let c = TestCluster::start(4, 8, |i| {
        if i == 3 {
            vec!["--fault", "corrupt-slivers"]
        } else {
            vec![]
        }
    })
    .await;
    let blobs = write_blobs(&c, 2).await;
    let mut newcomer = TestNode::new(c.root.path(), 4, &[]);
    newcomer.start();
    let next = hand_over(&c, &newcomer, 3).await;
    publish(c.nodes.iter().chain([&newcomer]), &next).await;
    wait_for_sync(&newcomer, 2, 90).await;
    assert_eq!(
        newcomer.metric("floe_node_synced_slivers_total"),
        0.0,
        "slivers that do not verify are never stored"
    );
    assert_eq!(newcomer.metric("floe_node_sync_fallbacks_total"), 2.0);
    assert!(
        newcomer.log().contains("does not verify"),
        "{}",
        newcomer.log()
    );
    for (id, _) in &blobs {
        assert!(node_holds_all(&newcomer, id).await, "newcomer lacks {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_serve_only_the_new_owner_of_a_shard() {
    let c = TestCluster::start(4, 8, |_| vec![]).await;
    write_blobs(&c, 1).await;
    let addr = format!("http://{}", c.nodes[0].grpc);
    let mut raw = StorageClient::connect(addr).await.unwrap();
    let code = |r: Result<tonic::Response<proto::SyncShardResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err().code()
    };

    // a stranger's key, asking for shard 0 in the current epoch
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let req = proto::SyncShardRequest::new(&SyncRequest::sign(&stranger, 1, 0, None), 10);
    assert_eq!(
        code(raw.sync_shard(req).await),
        tonic::Code::PermissionDenied
    );
    // an epoch the source does not know
    let req = proto::SyncShardRequest::new(&SyncRequest::sign(&stranger, 7, 0, None), 10);
    assert_eq!(code(raw.sync_shard(req).await), tonic::Code::Unavailable);
    // malformed: short signature, shard beyond u16, bad cursor
    let good = proto::SyncShardRequest::new(&SyncRequest::sign(&stranger, 1, 0, None), 10);
    for bad in [
        proto::SyncShardRequest {
            signature: vec![1, 2, 3],
            ..good.clone()
        },
        proto::SyncShardRequest {
            shard: 70_000,
            ..good.clone()
        },
        proto::SyncShardRequest {
            after: vec![0; 5],
            ..good.clone()
        },
    ] {
        assert_eq!(
            code(raw.sync_shard(bad).await),
            tonic::Code::InvalidArgument
        );
    }
    // the source is still up and serving
    assert!(c.nodes[0].client().info().await.is_ok());
}
