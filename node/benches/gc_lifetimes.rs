//! GC of expired blobs (docs/economics.md): a store holding `FLOE_GC_BLOBS` (default 10⁵) small
//! blobs whose lifetime ended, collected the way the node's GC does it (a page of 1000 per
//! commit), while a reader keeps reading a live blob. Prints the time, the bytes written by
//! this process (`/proc/self/io`), the space freed, and the reader's latencies meanwhile.
//!
//! `cargo bench -p floe-node --bench gc_lifetimes` (`FLOE_BENCH_DIR` for the scratch directory)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use floe_node::codec::{encode, Axis, EncodingParams};
use floe_node::protocol::Lifetime;
use floe_node::store::BlobStore;
use floe_node::testing::{disk_usage as du, random_bytes};
use rayon::prelude::*;

fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let blobs: u64 = std::env::var("FLOE_GC_BLOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let base =
        std::env::var("FLOE_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = Arc::new(BlobStore::open(dir.path(), None).unwrap());
    let key = SigningKey::from_bytes(&[1; 32]);
    let params = EncodingParams::new(10).unwrap();
    let life = |id, size, end, seq| {
        Lifetime {
            blob_id: id,
            encoded_size: size,
            start_epoch: 1,
            end_epoch: end,
            deletable: false,
            deleted: false,
            owner: [2; 32],
            sequence: seq,
        }
        .sign(&key)
    };
    // one live blob the reader keeps reading
    let live = encode(&random_bytes(4096, u64::MAX), params).unwrap();
    let lid = live.blob_id();
    store.put_lifetime(&life(lid, 1, 100, u64::MAX)).unwrap();
    store.put_metadata(lid, live.metadata()).unwrap();
    store.put_sliver(lid, 0, &live.primary_sliver(0)).unwrap();

    let t = Instant::now();
    for chunk in (0..blobs).collect::<Vec<_>>().chunks(1000) {
        let encoded: Vec<_> = chunk
            .par_iter()
            .map(|i| encode(&random_bytes(1024, *i), params).unwrap())
            .collect();
        let lifetimes: Vec<_> = encoded
            .iter()
            .zip(chunk)
            .map(|(e, i)| life(e.blob_id(), 1, 2, *i + 1))
            .collect();
        for r in store.put_lifetimes(&lifetimes) {
            r.unwrap();
        }
        encoded.par_iter().for_each(|e| {
            store.put_metadata(e.blob_id(), e.metadata()).unwrap();
        });
        let slivers: Vec<_> = encoded
            .iter()
            .map(|e| (e.primary_sliver(0), e.secondary_sliver(9), e.blob_id()))
            .collect();
        let items: Vec<_> = slivers
            .iter()
            .flat_map(|(p, s, id)| [(*id, 0u16, p), (*id, 0u16, s)])
            .collect();
        for r in store.put_slivers(&items) {
            r.unwrap();
        }
    }
    store.flush().unwrap();
    let built = t.elapsed();
    let (used0, du0, count0) = (store.used_bytes(), du(dir.path()), store.blob_count());

    // the reader
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                assert!(store.get_sliver(&lid, 0, Axis::Primary).unwrap().is_some());
                assert!(store.metadata(&lid).is_some());
                lat.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(1));
            }
            lat
        })
    };
    let w0 = written_bytes();
    let t = Instant::now();
    let mut commits = Vec::new();
    loop {
        let page = store.gone_page(2, 1000);
        if page.is_empty() {
            break;
        }
        let c = Instant::now();
        store
            .collect(page.into_iter().map(|(_, id)| id).collect())
            .unwrap();
        commits.push(c.elapsed());
    }
    let gc = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = reader.join().unwrap();
    store.flush().unwrap();
    let written = written_bytes() - w0;
    let (used1, du1, count1) = (store.used_bytes(), du(dir.path()), store.blob_count());
    lat.sort();
    commits.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    println!("GC of {blobs} expired blobs (1 KiB at n = 10: metadata + one sliver pair each; built in {built:.1?})");
    println!("| blobs before → after | collect time | blobs/s | commits (p50 / max ms) | bytes written | store bytes before → after | disk before → after | live reads meanwhile (n, p50 / p99 / max ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {count0} → {count1} | {gc:.2?} | {:.0} | {} ({:.1} / {:.1}) | {:.1} MiB | {:.1} → {:.1} MiB | {:.1} → {:.1} MiB | {} ({:.3} / {:.3} / {:.3}) |",
        blobs as f64 / gc.as_secs_f64(),
        commits.len(),
        p(&commits, 0.5),
        p(&commits, 1.0),
        written as f64 / (1 << 20) as f64,
        used0 as f64 / (1 << 20) as f64,
        used1 as f64 / (1 << 20) as f64,
        du0 as f64 / (1 << 20) as f64,
        du1 as f64 / (1 << 20) as f64,
        lat.len(),
        p(&lat, 0.5),
        p(&lat, 0.99),
        p(&lat, 1.0),
    );
    assert_eq!(count1, 1, "only the live blob is left");
}
