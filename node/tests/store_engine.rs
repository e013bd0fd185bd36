//! The store engine under real node processes: concurrent identical writes, a flood of
//! metadata nobody certifies, kill -9 under many small writes, corruption of the engine's files,
//! GC under kill -9 and a restart with 10⁵ blobs stored.

mod common;

use std::sync::Arc;

use futures::StreamExt as _;
use std::time::{Duration, Instant};

use common::*;
use floe_node::codec::{encode, Axis, BlobId, EncodingParams, Sliver};
use floe_node::protocol::Certificate;

/// One node owning all 7 shards (n = 7): every pair of every blob is its own.
async fn one_node(extra: Vec<&'static str>) -> TestCluster {
    TestCluster::start(1, 7, move |_| extra.clone()).await
}

fn params() -> EncodingParams {
    EncodingParams::new(7).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_identical_concurrent_put_slivers_are_counted_once() {
    let c = one_node(vec![]).await;
    let node = c.nodes[0].client();
    let enc = encode(&random_bytes(200_000, 1), params()).unwrap();
    let id = enc.blob_id();
    node.put_metadata(&id, enc.metadata()).await.unwrap();
    let before = node.info().await.unwrap().stored_bytes;
    let sliver = enc.primary_sliver(3);
    let puts: Vec<_> = (0..16)
        .map(|_| {
            let node = node.clone();
            let s = sliver.clone();
            tokio::spawn(async move { node.put_sliver(&id, 3, &s).await })
        })
        .collect();
    let mut fresh = 0;
    for p in puts {
        if !p.await.unwrap().expect("put") {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one of the 16 writes stored the sliver");
    let delta = node.info().await.unwrap().stored_bytes - before;
    let len = sliver.to_bytes().len() as u64;
    assert!(
        delta >= len && delta < len + 1024,
        "stored bytes grew by {delta} for one sliver of {len} bytes"
    );
    // and the other 15 found it: the node still accepts a full blob
    let out = c
        .blob_client()
        .write(random_bytes(50_000, 2), None)
        .await
        .unwrap();
    assert!(out.confirmed_shards >= out.quorum);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_flood_is_bounded_expires_and_certified_data_stays() {
    let c = one_node(vec![
        "--max-storage",
        "8MiB",
        "--uncertified-quota",
        "512KiB",
        "--uncertified-grace",
        "3",
    ])
    .await;
    let node = c.nodes[0].client();
    // a certified blob before the flood
    let kept = random_bytes(40_000, 3);
    let kept_id = c
        .blob_client()
        .write(kept.clone(), None)
        .await
        .unwrap()
        .blob_id;
    // self-consistent fake metadata, as an anonymous caller can send, until the node refuses
    let mut accepted = 0u64;
    let mut refused = None;
    for seed in 0..20_000u64 {
        let enc = encode(&seed.to_le_bytes(), params()).unwrap();
        match node.put_metadata(&enc.blob_id(), enc.metadata()).await {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the flood was never refused");
    assert_eq!(e.code(), Some(tonic::Code::ResourceExhausted), "{e}");
    assert!(e.to_string().contains("uncertified"), "{e}");
    assert!(accepted > 100, "only {accepted} accepted");
    let info = node.info().await.unwrap();
    assert!(info.stored_bytes < 8 << 20, "{info:?}");
    // the certified blob is untouched and readable
    assert_eq!(c.blob_client().read(&kept_id, None).await.unwrap(), kept);
    // the flood expires after the grace period (GC runs every recovery interval: 1 s)
    let n = &c.nodes[0];
    wait_until(Duration::from_secs(30), || {
        n.metric("floe_node_gc_expired_blobs_total") >= accepted as f64
    })
    .unwrap_or_else(|| panic!("flood not expired:\n{}", n.metrics()));
    assert_eq!(n.metric("floe_node_uncertified_bytes"), 0.0);
    // new writes are accepted again, the certified blob is still there
    let out = c
        .blob_client()
        .write(random_bytes(40_000, 4), None)
        .await
        .expect("write after the flood expired");
    assert!(out.confirmed_shards >= out.quorum);
    assert_eq!(c.blob_client().read(&kept_id, None).await.unwrap(), kept);
    let info = node.info().await.unwrap();
    assert_eq!(info.blobs, 2, "{info:?}");
}

/// PutMetadata + PutSlivers + GetConfirmation of a tiny blob; the ID once confirmed.
async fn put_blob(node: &floe_node::client::NodeClient, seed: u64) -> Option<BlobId> {
    let enc = encode(&random_bytes(1000, seed), params()).ok()?;
    let id = enc.blob_id();
    node.put_metadata(&id, enc.metadata()).await.ok()?;
    let slivers: Vec<(u16, Sliver)> = (0..7u16)
        .flat_map(|p| {
            [
                (p, enc.primary_sliver(p as usize)),
                (p, enc.secondary_sliver(6 - p as usize)),
            ]
        })
        .collect();
    let items: Vec<(BlobId, u16, &Sliver)> = slivers.iter().map(|(p, s)| (id, *p, s)).collect();
    for r in node.put_slivers(&items).await.ok()? {
        r.ok()?;
    }
    node.get_confirmation(&id).await.ok()?;
    Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_concurrent_small_writes_keeps_every_confirmed_blob() {
    let mut c = one_node(vec![]).await;
    let node = c.nodes[0].client();
    let confirmed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let attempted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let writers: Vec<_> = (0..64u64)
        .map(|w| {
            let node = node.clone();
            let confirmed = confirmed.clone();
            let attempted = attempted.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let seed = w * 1_000_000 + i;
                    attempted.lock().unwrap().push(seed);
                    match put_blob(&node, seed).await {
                        Some(id) => confirmed.lock().unwrap().push(id),
                        None => return,
                    }
                }
            })
        })
        .collect();
    // kill while writes are in flight, once a good number were confirmed
    let ok = wait_until_async(Duration::from_secs(60), || {
        let n = confirmed.lock().unwrap().len();
        async move { n >= 300 }
    })
    .await;
    assert!(ok, "writes too slow");
    eprintln!(
        "{} confirmed in {:?}",
        confirmed.lock().unwrap().len(),
        started.elapsed()
    );
    c.nodes[0].kill9();
    for w in writers {
        let _ = w.await;
    }
    eprintln!("writers stopped at {:?}", started.elapsed());
    let confirmed = confirmed.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        attempted.len() > confirmed.len(),
        "the kill interrupted some writes"
    );
    c.nodes[0].start();
    eprintln!("restarted at {:?}", started.elapsed());
    let node = c.nodes[0].client();
    // Each check is one small RPC; run them concurrently (a sequential loop here pays a
    // client-side round trip of tens of milliseconds per call on this loopback setup).
    let check = |id: BlobId, md: Option<floe_node::codec::BlobMetadata>, must: bool| {
        let node = node.clone();
        async move {
            let md = match md {
                Some(md) => md,
                None => match node.get_metadata(&id).await {
                    Ok(md) => md,
                    Err(_) if !must => return,
                    Err(e) => panic!("metadata of confirmed blob {id}: {e}"),
                },
            };
            for p in 0..7u16 {
                for axis in [Axis::Primary, Axis::Secondary] {
                    match node.get_sliver(&id, p, axis).await {
                        Ok(s) => s.verify(&md).expect("a stored sliver verifies"),
                        Err(e) if must => panic!("confirmed blob {id} lost {p}/{axis:?}: {e}"),
                        Err(_) => {}
                    }
                }
            }
        }
    };
    let confirmed_set: std::collections::HashSet<BlobId> = confirmed.iter().copied().collect();
    let mut checks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    for id in &confirmed {
        checks.push(Box::pin(check(*id, None, true)));
    }
    // nothing partial: of the writes the kill interrupted, whatever the node has is whole
    let mut interrupted = 0;
    for seed in attempted {
        let enc = encode(&random_bytes(1000, seed), params()).unwrap();
        let id = enc.blob_id();
        if confirmed_set.contains(&id) {
            continue;
        }
        interrupted += 1;
        if let Ok(md) = node.get_metadata(&id).await {
            assert_eq!(&md, enc.metadata());
            checks.push(Box::pin(check(id, Some(md), false)));
        }
    }
    assert!(interrupted > 0);
    futures::stream::iter(checks)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    eprintln!("checked at {:?}", started.elapsed());
    let info = node.info().await.unwrap();
    assert!(info.blobs >= confirmed.len() as u64, "{info:?}");
}

/// Flip one byte of `needle` where it occurs in the files under `dir`. Returns whether found.
fn corrupt_where(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let mut bytes = std::fs::read(&p).unwrap();
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                bytes[at + needle.len() / 2] ^= 0x5a;
                std::fs::write(&p, bytes).unwrap();
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_of_the_engine_files_is_detected() {
    let mut c = one_node(vec![]).await;
    let data = random_bytes(20_000, 9);
    let id = c
        .blob_client()
        .write(data.clone(), None)
        .await
        .unwrap()
        .blob_id;
    c.nodes[0].terminate().expect("clean exit");
    let enc = encode(&data, params()).unwrap();
    let needle = enc.primary_sliver(2).data;
    assert!(
        corrupt_where(&c.nodes[0].data_dir().join("store"), &needle[..64]),
        "sliver bytes not found in the engine's files"
    );
    // either the engine refuses its files (journal checksum) and the node will not start, with
    // a clear message, or it starts and the value's own checksum catches the flipped byte
    c.nodes[0].extra.clear();
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.nodes[0].start()));
    if started.is_err() {
        let log = c.nodes[0].log();
        assert!(
            log.contains("cannot be opened") && log.contains("damaged"),
            "no clear message:\n{log}"
        );
        return;
    }
    let node = c.nodes[0].client();
    let r = node.get_sliver(&id, 2, Axis::Primary).await;
    match r {
        Err(e) => assert_eq!(e.code(), Some(tonic::Code::DataLoss), "{e}"),
        Ok(s) => panic!("corrupt sliver served: {} bytes", s.data.len()),
    }
    assert!(c.nodes[0].metric("floe_node_corrupt_slivers_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_under_kill9_leaves_a_consistent_store() {
    let mut c = one_node(vec!["--uncertified-grace", "2"]).await;
    let node = c.nodes[0].client();
    let certified = random_bytes(30_000, 5);
    let cid = c
        .blob_client()
        .write(certified.clone(), None)
        .await
        .unwrap()
        .blob_id;
    // 200 blobs never certified, with slivers
    let mut ids = Vec::new();
    for seed in 0..200u64 {
        if let Some(id) = put_blob(&node, 10_000 + seed).await {
            ids.push(id);
        }
    }
    let n = &mut c.nodes[0];
    // kill in the middle of expiry (or right after it started)
    wait_until(Duration::from_secs(30), || {
        n.metric("floe_node_gc_expired_blobs_total") > 0.0
    })
    .expect("GC never ran");
    n.kill9();
    n.start();
    wait_until(Duration::from_secs(30), || {
        http_get(n.http, "/metrics")
            .is_some_and(|(_, m)| m.contains("floe_node_uncertified_bytes 0"))
    })
    .unwrap_or_else(|| panic!("uncertified bytes never reached 0:\n{}", n.metrics()));
    let node = n.client();
    let info = node.info().await.unwrap();
    assert_eq!(info.blobs, 1, "only the certified blob is left: {info:?}");
    for id in ids.iter().take(50) {
        assert!(node.get_metadata(id).await.is_err(), "{id} not expired");
    }
    assert_eq!(c.blob_client().read(&cid, None).await.unwrap(), certified);
    // stored bytes are those of the certified blob alone (counted once, nothing leaked)
    let before = node.info().await.unwrap().stored_bytes;
    assert!(before > 30_000 && before < 200_000, "{before}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_100k_blobs_is_fast() {
    let root = tempfile::tempdir().unwrap();
    let mut node = TestNode::new(root.path(), 0, &[]);
    let blobs = 100_000u64;
    let built = Instant::now();
    {
        let store = Arc::new(floe_node::store::BlobStore::open(&node.data_dir(), None).unwrap());
        let enc = encode(&random_bytes(100, 1), params()).unwrap();
        let md = enc.metadata().clone();
        let s = enc.primary_sliver(0);
        std::thread::scope(|t| {
            for w in 0..32u64 {
                let store = store.clone();
                let md = md.clone();
                let s = s.clone();
                t.spawn(move || {
                    for i in (w..blobs).step_by(32) {
                        let mut b = [0u8; 32];
                        b[..8].copy_from_slice(&i.to_be_bytes());
                        let id = BlobId(b);
                        store.put_metadata(id, &md).unwrap();
                        let r = store.put_slivers(&[(id, 0, &s)]);
                        assert!(r[0].is_ok());
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
        assert_eq!(store.blob_count() as u64, blobs);
    }
    eprintln!("built {blobs} blobs in {:?}", built.elapsed());
    let t = Instant::now();
    node.start();
    let ready = t.elapsed();
    let info = node.client().info().await.unwrap();
    assert_eq!(info.blobs, blobs);
    let page = node.client().list_certified(None, 1000).await.unwrap();
    assert_eq!(page.0.len(), 1000);
    let rss = node.metric("process_resident_memory_bytes");
    eprintln!(
        "restart to healthy with {blobs} blobs: {ready:?}, RSS {:.0} MiB",
        rss / 1048576.0
    );
    assert!(ready < Duration::from_secs(5), "start-up took {ready:?}");
    assert!(rss < 200.0 * 1048576.0, "RSS {rss}");
}
