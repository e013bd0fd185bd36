//! A node whose store cannot write (issue 19) as a real process: the stall is reported (a log
//! line, metrics, `/readyz`), reads and status keep answering, and SIGTERM still stops it.
//!
//! The engine's own halt cannot be produced on demand in a process (the store-level tests
//! `recovered_flush_tasks_are_drained` and its `without_the_keeper_…` twin rebuild it), so the
//! node runs with the test-only fault `stall-writes`: its writer holds every commit while
//! `<data-dir>/stall-writes` exists, exactly where the engine's halt holds it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use floe_node::codec::Axis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_is_reported_keeps_serving_reads_and_stops_on_sigterm() {
    let mut c = TestCluster::start(4, 8, |i| {
        if i == 0 {
            vec!["--fault", "stall-writes"]
        } else {
            vec![]
        }
    })
    .await;
    let client = c.blob_client();
    let stored = client
        .write(random_bytes(300_000, 1), None)
        .await
        .unwrap()
        .blob_id;
    let pairs: Vec<u16> = (0..8u16)
        .filter(|p| {
            let shard = ((*p as usize + stored.mod_n(8)) % 8) as u16;
            c.committee.members[0].shards.contains(&shard)
        })
        .collect();
    assert!(!pairs.is_empty());
    let (http, data_dir) = (c.nodes[0].http, c.nodes[0].data_dir());
    assert_eq!(http_get(http, "/readyz").map(|(s, _)| s), Some(200));

    // the store stops writing; a write keeps node 0's writer busy (the other three members
    // hold a quorum of shards, so the put itself succeeds)
    std::fs::write(data_dir.join("stall-writes"), b"").unwrap();
    let writer = {
        let client = c.blob_client();
        tokio::spawn(async move { client.write(random_bytes(200_000, 2), None).await })
    };
    let stalled = wait_until_async(Duration::from_secs(30), || async {
        http_get(http, "/readyz").is_some_and(|(s, body)| s == 503 && body.contains("stalled"))
    })
    .await;
    assert!(
        stalled,
        "/readyz did not report the stall; log:\n{}",
        c.nodes[0].log()
    );
    assert_eq!(c.nodes[0].metric("floe_node_store_write_stalled"), 1.0);
    assert!(c.nodes[0].metric("floe_node_store_write_stall_seconds") >= 1.0);
    assert_eq!(
        c.nodes[0].log().matches("store writes stalled").count(),
        1,
        "the stall is logged once"
    );
    assert!(writer.await.unwrap().is_ok(), "the put needs only a quorum");

    // reads and status answer while the store cannot write
    let node = c.nodes[0].client();
    let admin = c.nodes[0].admin();
    for _ in 0..3 {
        let t = Instant::now();
        let info = tokio::time::timeout(Duration::from_secs(5), node.info()).await;
        assert!(matches!(info, Ok(Ok(_))), "GetInfo: {info:?}");
        let md = tokio::time::timeout(Duration::from_secs(5), node.get_metadata(&stored))
            .await
            .expect("GetMetadata answers")
            .unwrap();
        for p in &pairs {
            tokio::time::timeout(
                Duration::from_secs(5),
                node.get_sliver(&stored, *p, Axis::Primary),
            )
            .await
            .expect("GetSliver answers")
            .unwrap()
            .verify(&md)
            .unwrap();
        }
        let sync = tokio::time::timeout(Duration::from_secs(5), admin.sync_status()).await;
        assert!(matches!(sync, Ok(Ok(_))), "GetSyncStatus: {sync:?}");
        assert!(t.elapsed() < Duration::from_secs(15));
    }
    assert_eq!(c.nodes[0].metric("floe_node_store_write_stalled"), 1.0);

    // SIGTERM stops it although a write is stuck in its store
    let status = c.nodes[0].terminate_within(Duration::from_secs(40));
    assert!(
        status.is_some(),
        "the node ignored SIGTERM with a stalled store; log:\n{}",
        c.nodes[0].log()
    );
    // started again without the stall, it is ready and holds what it had
    std::fs::remove_file(data_dir.join("stall-writes")).unwrap();
    c.nodes[0].start();
    let ready = wait_until_async(Duration::from_secs(30), || async {
        http_get(http, "/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert!(
        ready,
        "not ready after the restart; log:\n{}",
        c.nodes[0].log()
    );
    let md = c.nodes[0].client().get_metadata(&stored).await.unwrap();
    c.nodes[0]
        .client()
        .get_sliver(&stored, pairs[0], Axis::Primary)
        .await
        .unwrap()
        .verify(&md)
        .unwrap();
}
