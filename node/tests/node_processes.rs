//! The storage node as a real process: several `floe-node` binaries on loopback, driven through
//! the real gRPC API (PROTOCOL.md §4–§5). Faults are real: SIGKILL, wiped and corrupted data
//! directories, a capacity-limited store, malformed requests.

mod common;

use std::time::Duration;

use common::*;
use floe_node::client::{BlobClient, ClientConfig};
use floe_node::codec::{Axis, BlobId, BlobMetadata};
use floe_node::proto::{self, admin_client::AdminClient, storage_client::StorageClient};

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    r.map(|_| ()).unwrap_err().code()
}

fn pairs_of(c: &TestCluster, node: usize, id: &BlobId) -> Vec<u16> {
    let p = c.committee.params();
    let rot = id.mod_n(p.n());
    c.committee.members[node]
        .shards
        .iter()
        .map(|s| p.pair_for_shard(*s as usize, rot) as u16)
        .collect()
}

/// Every pair the node owns has both slivers stored.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_read_back_with_status_and_metrics() {
    let c = TestCluster::start(4, 100, |_| vec![]).await;
    let client = c.blob_client();
    for (len, seed) in [(0usize, 1u64), (1, 2), (100_000, 3), (3_000_000, 4)] {
        let data = random_bytes(len, seed);
        let out = client.write(data.clone(), None).await.expect("write");
        assert!(out.confirmed_shards >= out.quorum, "{out:?}");
        assert_eq!(out.certified_nodes, 4);
        assert_eq!(
            client.read(&out.blob_id, None).await.expect("read"),
            data,
            "len {len}"
        );
        for n in &c.nodes {
            assert!(node_holds_all(n, &out.blob_id).await);
        }
    }
    // streaming read into a file: whole and identical; a failed read leaves no file behind
    let data = random_bytes(2_000_000, 8);
    let id = client.write(data.clone(), None).await.unwrap().blob_id;
    let out = c.root.path().join("blob.out");
    assert_eq!(
        client.read_to_file(&id, &out, None).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let missing = c.root.path().join("missing.out");
    assert!(client
        .read_to_file(&BlobId([3; 32]), &missing, None)
        .await
        .is_err());
    assert!(!missing.exists());
    assert!(std::fs::read_dir(c.root.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with("floe-partial")));
    let m = c.nodes[0].metrics();
    // these blobs are small: each node took each in one StoreBlob call
    assert!(
        m.contains("floe_node_grpc_requests_total{code=\"Ok\",method=\"StoreBlob\"}"),
        "{m}"
    );
    assert!(c.nodes[0].metric("floe_node_stored_bytes") > 0.0);
    assert_eq!(c.nodes[0].metric("floe_node_epoch"), 1.0);
    assert_eq!(http_get(c.nodes[0].http, "/readyz").unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_large_write_leaves_nothing_partial() {
    let mut c = TestCluster::start(4, 100, |_| vec![]).await;
    let client = c.blob_client();
    let data = random_bytes(40 << 20, 9);
    // pull the plug on node 0 once a quarter of the slivers are stored (a progress event)
    let (tx, rx) = tokio::sync::oneshot::channel::<(u64, u64)>();
    let tx = std::sync::Mutex::new(Some(tx));
    let progress: floe_node::client::ProgressFn =
        std::sync::Arc::new(move |p: floe_node::client::Progress| {
            if let floe_node::client::Progress::Bytes { done, total } = p {
                if done * 4 >= total {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send((done, total));
                    }
                }
            }
        });
    let write = tokio::spawn(async move { client.write(data, Some(progress)).await });
    let (done_at_kill, total) = rx.await.expect("the upload reports progress");
    c.nodes[0].kill9();
    assert!(
        !write.is_finished() && done_at_kill < total,
        "the kill must land mid-upload ({done_at_kill} of {total} bytes)"
    );
    let outcome = write.await.unwrap();
    c.nodes[0].start();
    let node = &c.nodes[0];
    // interrupted large-sliver files (written beside the engine) are cleared at start; whatever
    // the node kept is whole: every stored sliver verifies against the metadata (below)
    let tmp: Vec<_> = std::fs::read_dir(node.data_dir().join("large").join(".tmp"))
        .unwrap()
        .collect();
    assert!(
        tmp.is_empty(),
        "temporary files left after restart: {tmp:?}"
    );
    {
        // 3 of 4 nodes hold 75 of 100 shards: the write reaches quorum without node 0
        let out = outcome.expect("write reaches quorum without the killed node");
        assert_eq!(
            out.confirmed_shards, 75,
            "node 0 (25 shards) was killed before it could confirm"
        );
        let id = out.blob_id;
        let md: BlobMetadata = c.nodes[1].client().get_metadata(&id).await.unwrap();
        for pair in pairs_of(&c, 0, &id) {
            for axis in [Axis::Primary, Axis::Secondary] {
                match node.client().get_sliver(&id, pair, axis).await {
                    Ok(s) => s.verify(&md).expect("a stored sliver is whole"),
                    Err(e) => assert_eq!(e.code(), Some(tonic::Code::NotFound), "{e}"),
                }
            }
        }
        // and background recovery completes the node
        assert!(
            wait_until_async(Duration::from_secs(60), || node_holds_all(node, &id)).await,
            "{}",
            node.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rebuilds_every_sliver_from_peers() {
    let mut c = TestCluster::start(4, 10, |_| vec![]).await;
    let client = c.blob_client();
    let mut ids = Vec::new();
    for seed in 0..3 {
        ids.push(
            client
                .write(random_bytes(500_000 + seed as usize * 1000, seed), None)
                .await
                .unwrap()
                .blob_id,
        );
    }
    c.nodes[1].kill9();
    c.nodes[1].wipe();
    c.nodes[1].start();
    // the control plane notices the empty node and hands it the committee again
    c.nodes[1]
        .admin()
        .set_committee(&c.committee)
        .await
        .unwrap();
    for id in &ids {
        assert!(
            wait_until_async(Duration::from_secs(60), || node_holds_all(&c.nodes[1], id)).await,
            "node 1 did not rebuild {id}; log:\n{}",
            c.nodes[1].log()
        );
    }
    assert!(c.nodes[1].metric("floe_node_recovered_slivers_total") >= 3.0 * 2.0 * 2.0);
    // what it rebuilt is served and correct
    for id in &ids {
        let md = c.nodes[0].client().get_metadata(id).await.unwrap();
        for pair in pairs_of(&c, 1, id) {
            c.nodes[1]
                .client()
                .get_sliver(id, pair, Axis::Secondary)
                .await
                .unwrap()
                .verify(&md)
                .unwrap();
        }
    }
}

/// Red Stuff's second phase, with a peer down as well: the wiped node's reachable peers hold
/// fewer secondary slivers than rebuilding a primary needs, and its own secondaries, rebuilt a
/// moment before, make up the difference. Its recovery backlog does not hold the epoch's sync:
/// it gained no shard, so the epoch change does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rebuilds_primaries_from_its_own_secondaries_while_a_peer_is_down() {
    // 4 nodes × 2 of 8 shards: f = 2, a secondary needs 4 symbols, a primary 6
    let mut c = TestCluster::start(4, 8, |_| vec![]).await;
    let client = c.blob_client();
    let mut ids = Vec::new();
    for seed in 0..2 {
        let data = random_bytes(400_000 + seed as usize * 999, seed + 90);
        ids.push(client.write(data, None).await.unwrap().blob_id);
    }
    c.nodes[1].kill9();
    c.nodes[1].wipe();
    c.nodes[1].start();
    c.nodes[2].kill9();
    c.nodes[1]
        .admin()
        .set_committee(&c.committee)
        .await
        .unwrap();
    let st = c.nodes[1].admin().sync_status().await.unwrap();
    assert!(
        st.done && st.target_epoch == 1,
        "a wiped node that gained no shard holds no epoch change: {st:?}"
    );
    // peers 0 and 3 hold 4 secondaries: a primary needs 6, the node's own 2 make it
    for id in &ids {
        assert!(
            wait_until_async(Duration::from_secs(90), || node_holds_all(&c.nodes[1], id)).await,
            "node 1 did not rebuild {id}; log:\n{}",
            c.nodes[1].log()
        );
        let md = c.nodes[0].client().get_metadata(id).await.unwrap();
        for pair in pairs_of(&c, 1, id) {
            c.nodes[1]
                .client()
                .get_sliver(id, pair, Axis::Primary)
                .await
                .unwrap()
                .verify(&md)
                .unwrap();
        }
    }
    let st = c.nodes[1].admin().sync_status().await.unwrap();
    assert_eq!(st.recovery_backlog, 0, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_sliver_file_is_detected_and_rebuilt() {
    let c = TestCluster::start(4, 10, |_| vec![]).await;
    let client = c.blob_client();
    let data = random_bytes(800_000, 77);
    let id = client.write(data.clone(), None).await.unwrap().blob_id;
    let node = &c.nodes[2];
    let pair = pairs_of(&c, 2, &id)[0];
    let file = node
        .data_dir()
        .join("large")
        .join(hex::encode(id.as_bytes()))
        .join(format!("{pair}.primary"));
    let mut raw = std::fs::read(&file).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0xff;
    std::fs::write(&file, &raw).unwrap();
    // the scrubber (or the next read) finds it, drops it and recovery rebuilds it
    assert!(
        wait_until_async(Duration::from_secs(60), || async {
            node.metric("floe_node_corrupt_slivers_total") >= 1.0 && node_holds_all(node, &id).await
        })
        .await,
        "{}",
        node.log()
    );
    let md = c.nodes[0].client().get_metadata(&id).await.unwrap();
    node.client()
        .get_sliver(&id, pair, Axis::Primary)
        .await
        .unwrap()
        .verify(&md)
        .unwrap();
    assert_eq!(client.read(&id, None).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_wrong_tokens_are_refused_and_the_node_stays_up() {
    let c = TestCluster::start(4, 7, |_| vec![]).await;
    let addr = format!("http://{}", c.nodes[0].grpc);
    let mut raw = StorageClient::connect(addr.clone()).await.unwrap();
    // a blob ID of the wrong length
    assert_eq!(
        code(
            raw.get_metadata(proto::BlobRequest {
                blob_id: vec![1, 2, 3]
            })
            .await
        ),
        tonic::Code::InvalidArgument
    );
    // garbage metadata
    let bad = proto::PutMetadataRequest {
        blob_id: vec![0; 32],
        metadata: vec![1, 1, 9, 9, 9],
        lifetime: Vec::new(),
    };
    assert_eq!(
        code(raw.put_metadata(bad).await),
        tonic::Code::InvalidArgument
    );
    // valid metadata under the wrong blob ID
    let enc = floe_node::codec::encode(b"hello", c.committee.params()).unwrap();
    let wrong = proto::PutMetadataRequest {
        blob_id: vec![7; 32],
        metadata: enc.metadata().to_bytes(),
        lifetime: Vec::new(),
    };
    assert_eq!(
        code(raw.put_metadata(wrong).await),
        tonic::Code::InvalidArgument
    );
    // metadata of the retired encoding type 1, under its own (type-1-computed) ID: refused
    // with a message that names the type
    let mut old = enc.metadata().clone();
    old.encoding_type = 1;
    let old_req = proto::PutMetadataRequest {
        blob_id: old.blob_id().as_bytes().to_vec(),
        metadata: old.to_bytes(),
        lifetime: Vec::new(),
    };
    let status = raw.put_metadata(old_req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("unsupported encoding type 1"),
        "{}",
        status.message()
    );
    // a sliver that does not match its metadata
    let id = enc.blob_id();
    raw.put_metadata(proto::PutMetadataRequest {
        blob_id: id.as_bytes().to_vec(),
        metadata: enc.metadata().to_bytes(),
        lifetime: Vec::new(),
    })
    .await
    .unwrap();
    let pair = pairs_of(&c, 0, &id)[0];
    let mut sliver = enc.primary_sliver(pair as usize);
    sliver.data[0] ^= 1;
    let req = proto::PutSliverRequest {
        blob_id: id.as_bytes().to_vec(),
        pair_index: pair as u32,
        sliver: sliver.to_bytes(),
    };
    assert_eq!(
        code(raw.put_sliver(req).await),
        tonic::Code::InvalidArgument
    );
    let garbage = proto::PutSliverRequest {
        blob_id: id.as_bytes().to_vec(),
        pair_index: pair as u32,
        sliver: vec![0xde, 0xad],
    };
    assert_eq!(
        code(raw.put_sliver(garbage).await),
        tonic::Code::InvalidArgument
    );
    // nothing was stored for the rejected sliver
    let st = c.nodes[0].client().blob_status(&id).await.unwrap();
    assert_eq!(st.pairs_stored, 0);
    // a message over the size limit
    let huge = proto::PutSliverRequest {
        blob_id: id.as_bytes().to_vec(),
        pair_index: 0,
        sliver: vec![0; 100 << 20],
    };
    let mut big = StorageClient::connect(addr.clone())
        .await
        .unwrap()
        .max_encoding_message_size(200 << 20);
    assert!(big.put_sliver(huge).await.is_err());
    // the admin API is not served on the storage port (it has its own listener)
    let committee = proto::Committee::from(&c.committee);
    let mut on_storage_port = AdminClient::connect(addr.clone()).await.unwrap();
    assert_eq!(
        code(on_storage_port.set_committee(committee.clone()).await),
        tonic::Code::Unimplemented
    );
    // admin without a token, with a wrong one
    let mut admin = AdminClient::connect(format!("http://{}", c.nodes[0].admin))
        .await
        .unwrap();
    assert_eq!(
        code(admin.set_committee(committee.clone()).await),
        tonic::Code::Unauthenticated
    );
    let wrong_token = c.nodes[0]
        .client()
        .with_admin_address(&c.nodes[0].admin.to_string())
        .unwrap()
        .with_admin_token("not-the-token");
    let e = wrong_token.set_committee(&c.committee).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated));
    // and the node still works
    let info = c.nodes[0].client().info().await.unwrap();
    assert_eq!(info.epoch, 1);
    let data = random_bytes(10_000, 5);
    let out = c.blob_client().write(data.clone(), None).await.unwrap();
    assert_eq!(
        c.blob_client().read(&out.blob_id, None).await.unwrap(),
        data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_store_refuses_writes_with_resource_exhausted_and_keeps_serving_reads() {
    // node 0 may store at most 400 KiB
    let c = TestCluster::start(4, 100, |i| {
        if i == 0 {
            vec!["--max-storage", "400KiB"]
        } else {
            vec![]
        }
    })
    .await;
    let client = c.blob_client();
    let small = random_bytes(50_000, 1);
    let small_id = client.write(small.clone(), None).await.unwrap().blob_id;
    // a 4 MiB blob does not fit on node 0; the write still reaches quorum without it
    let big = client
        .write(random_bytes(4 << 20, 2), None)
        .await
        .expect("quorum without the full node");
    let st = c.nodes[0].client().blob_status(&big.blob_id).await.unwrap();
    assert!(st.pairs_stored < st.pairs_owned);
    let enc = floe_node::codec::encode(&random_bytes(4 << 20, 2), c.committee.params()).unwrap();
    let mut missing = None;
    for p in pairs_of(&c, 0, &big.blob_id) {
        if c.nodes[0]
            .client()
            .get_sliver(&big.blob_id, p, Axis::Primary)
            .await
            .is_err()
        {
            missing = Some(p);
            break;
        }
    }
    let pair = missing.expect("the full node lacks some primary sliver");
    let e = c.nodes[0]
        .client()
        .put_sliver(&big.blob_id, pair, &enc.primary_sliver(pair as usize))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::ResourceExhausted), "{e}");
    assert!(e.to_string().contains("storage full"), "{e}");
    // reads keep working, from the full node too
    let md = c.nodes[0].client().get_metadata(&small_id).await.unwrap();
    let p0 = pairs_of(&c, 0, &small_id)[0];
    c.nodes[0]
        .client()
        .get_sliver(&small_id, p0, Axis::Primary)
        .await
        .unwrap()
        .verify(&md)
        .unwrap();
    assert_eq!(client.read(&small_id, None).await.unwrap(), small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_restart_keeps_data() {
    let mut c = TestCluster::start(4, 7, |_| vec![]).await;
    let data = random_bytes(200_000, 3);
    let id = c
        .blob_client()
        .write(data.clone(), None)
        .await
        .unwrap()
        .blob_id;
    let st = c.nodes[3].terminate().expect("exited");
    assert!(st.success(), "exit status {st:?}");
    assert!(c.nodes[3].log().contains("shutting down"));
    c.nodes[3].start();
    // committee and data survived the restart
    assert_eq!(c.nodes[3].client().info().await.unwrap().epoch, 1);
    assert!(node_holds_all(&c.nodes[3], &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_are_answered_with_provable_symbols() {
    use floe_node::codec::RecoverySymbol;
    let c = TestCluster::start(4, 10, |_| vec![]).await;
    let data = random_bytes(300_000, 21);
    let id = c.blob_client().write(data, None).await.unwrap().blob_id;
    let md = c.nodes[1].client().get_metadata(&id).await.unwrap();
    let mine = pairs_of(&c, 1, &id);
    let theirs = pairs_of(&c, 2, &id)[0];
    let item = |pair: u16, axis: proto::Axis, symbol: u32| proto::ChallengeItem {
        blob_id: id.as_bytes().to_vec(),
        pair_index: pair as u32,
        axis: axis as i32,
        symbol_index: symbol,
    };
    let req = proto::ChallengeRequest {
        epoch: 1,
        items: vec![
            item(mine[0], proto::Axis::Primary, 9), // a parity symbol of the expanded sliver
            item(mine[1], proto::Axis::Secondary, 0),
            item(theirs, proto::Axis::Primary, 3), // not this node's pair
        ],
    };
    let answers = c.nodes[1]
        .admin()
        .answer_challenge(req.clone())
        .await
        .unwrap()
        .symbols;
    assert_eq!(answers.len(), 3);
    let n = md.n() as u16;
    // exactly the challenged positions: primary sliver of pair mine[0] at 9, secondary sliver
    // of pair mine[1] (index n − 1 − pair) at 0
    let wanted = [
        (Axis::Primary, mine[0], 9u16),
        (Axis::Secondary, n - 1 - mine[1], 0u16),
    ];
    for (a, (axis, sliver, pos)) in answers[..2].iter().zip(wanted) {
        let sym = RecoverySymbol::from_bytes(a).unwrap();
        sym.verify(&md)
            .expect("challenge answer proves against the metadata");
        assert_eq!(
            (sym.proven_axis, sym.sliver_index, sym.position),
            (axis, sliver, pos),
            "the answer is the challenged symbol"
        );
    }
    assert!(
        answers[2].is_empty(),
        "a node cannot answer for a pair it does not hold"
    );
    assert!(c.nodes[1]
        .metrics()
        .contains("floe_node_challenges_answered_total{result=\"missing\"} 1"));
    // the admin API needs the token
    let e = c.nodes[1]
        .client()
        .with_admin_address(&c.nodes[1].admin.to_string())
        .unwrap()
        .answer_challenge(req)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated));
    // sync status: nothing to pull at the first epoch, nothing missing
    let st = c.nodes[1].admin().sync_status().await.unwrap();
    assert!(st.done && st.epoch == 1 && st.target_epoch == 1, "{st:?}");
    assert_eq!(
        (st.blobs_total, st.recovery_backlog, st.shards_pending.len()),
        (0, 0, 0),
        "{st:?}"
    );
}

/// Writes through the streaming encoder (blob in memory: four pair groups; a file read in
/// pieces: two) store exactly what the in-memory encoder would, on every node, and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_writes_from_memory_and_from_a_file_round_trip() {
    let c = TestCluster::start(4, 100, |_| vec![]).await;
    let client = BlobClient::new(
        c.committee.clone(),
        ClientConfig {
            grace: Duration::from_millis(300),
            stream_from_bytes: 0, // every write streams
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let params = c.committee.params();
    for (len, seed) in [(3_000_000usize, 21u64), (50_000, 22)] {
        let data = random_bytes(len, seed);
        let expected = floe_node::codec::encode(&data, params).unwrap().blob_id();
        let out = client.write(data.clone(), None).await.expect("write");
        assert_eq!(out.blob_id, expected, "len {len}");
        let path = c.root.path().join(format!("blob-{seed}"));
        std::fs::write(&path, &data).unwrap();
        let from_file = client.write_file(&path, None).await.expect("write_file");
        assert_eq!(from_file.blob_id, expected);
        assert_eq!(out.certified_nodes, 4);
        for n in &c.nodes {
            assert!(node_holds_all(n, &expected).await, "len {len}");
        }
        assert_eq!(client.read(&expected, None).await.expect("read"), data);
    }
    // a file that does not exist is a clear error, not a panic
    let err = client
        .write_file(&c.root.path().join("missing"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reading the blob"), "{err}");
}

/// Every `*.tree` file (challenge index) under a node's data directory.
fn index_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".tree") {
                out.push(p);
            }
        }
    }
    out
}

/// Large slivers are challenged by reading one symbol and its stored proof path, not the
/// sliver; a missing or corrupt index falls back to the whole sliver (answers still prove) and
/// is written afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_of_large_slivers_read_a_symbol_and_its_path() {
    use floe_node::codec::RecoverySymbol;
    let c = TestCluster::start(4, 100, |_| vec![]).await;
    let data = random_bytes(6_000_000, 31);
    let id = c.blob_client().write(data, None).await.unwrap().blob_id;
    let md = c.nodes[1].client().get_metadata(&id).await.unwrap();
    let shape = md.shape().unwrap();
    let p = shape.params;
    let mine = pairs_of(&c, 1, &id);
    let items: Vec<proto::ChallengeItem> = mine
        .iter()
        .enumerate()
        .flat_map(|(i, pair)| {
            [
                (proto::Axis::Primary, (i * 7) % p.k_secondary()),
                (proto::Axis::Secondary, (i * 5) % p.k_primary()),
            ]
            .map(|(axis, symbol)| proto::ChallengeItem {
                blob_id: id.as_bytes().to_vec(),
                pair_index: *pair as u32,
                axis: axis as i32,
                symbol_index: symbol as u32,
            })
        })
        .collect();
    let req = proto::ChallengeRequest { epoch: 1, items };
    let sliver_bytes: u64 =
        mine.len() as u64 * (shape.primary_sliver_len() + shape.secondary_sliver_len()) as u64;
    let ask = || async {
        let r = c.nodes[1]
            .admin()
            .answer_challenge(req.clone())
            .await
            .unwrap();
        for a in &r.symbols {
            RecoverySymbol::from_bytes(a)
                .unwrap()
                .verify(&md)
                .expect("every answer proves");
        }
        assert_eq!(r.symbols.len(), req.items.len());
        r.bytes_read
    };
    let indexes = index_files(&c.nodes[1].dir);
    assert_eq!(
        indexes.len(),
        2 * mine.len(),
        "an index beside every large sliver"
    );
    // a symbol and its path per item: far less than the slivers
    let small = ask().await;
    let depth = floe_node::codec::TreeShape::new(p.n(), shape.symbol_size).depth();
    let per_item = (shape.symbol_size + 32 * depth) as u64;
    assert_eq!(small, per_item * req.items.len() as u64);
    assert!(
        small * 20 < sliver_bytes,
        "{small} read for {sliver_bytes} of slivers"
    );
    assert_eq!(
        c.nodes[1].metric("floe_node_challenge_read_bytes_total"),
        small as f64
    );
    // without the indexes: whole slivers read, answers still prove, indexes written afresh
    for f in &indexes {
        std::fs::remove_file(f).unwrap();
    }
    assert_eq!(ask().await, sliver_bytes);
    assert_eq!(index_files(&c.nodes[1].dir).len(), indexes.len());
    assert_eq!(ask().await, small);
    // a corrupt index does not make a wrong answer: it falls back, and is repaired
    for f in &indexes {
        let mut b = std::fs::read(f).unwrap();
        b[0] ^= 1;
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(f, b).unwrap();
    }
    let after_corruption = ask().await;
    assert!(after_corruption > small, "fell back to reading slivers");
    assert_eq!(ask().await, small, "and the indexes were written afresh");
}
