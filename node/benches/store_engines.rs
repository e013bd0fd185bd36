//! fjall vs redb (vs today's file per object) on the node store's workload, to choose an engine
//! (docs/node.md, "Storage"). Every engine gets the same group-commit writer: one thread takes all
//! queued writes, commits them in one durable transaction (fsync) and answers every writer.
//!
//! Run: `cargo bench -p floe-node --bench store_engines` (env `FLOE_BENCH_SCALE=0.2` for a quick
//! run). Prints one table.

use floe_node::testing::disk_usage as du;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Item = (Vec<u8>, Vec<u8>);

trait Engine: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn commit(&self, items: &[Item]);
    /// Keys (and value lengths) under `prefix`, in order.
    fn scan(&self, prefix: &[u8]) -> (usize, u64);
    fn get(&self, key: &[u8]) -> Option<usize>;
}

struct Fjall {
    ks: fjall::Keyspace,
    part: fjall::PartitionHandle,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let ks = fjall::Config::new(dir).open().expect("open fjall");
        let part = ks
            .open_partition(
                "objects",
                fjall::PartitionCreateOptions::default()
                    .with_kv_separation(fjall::KvSeparationOptions::default()),
            )
            .expect("partition");
        Self { ks, part }
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 2.11"
    }
    fn commit(&self, items: &[Item]) {
        let mut b = self
            .ks
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for (k, v) in items {
            b.insert(&self.part, k.as_slice(), v.as_slice());
        }
        b.commit().expect("commit");
    }
    fn scan(&self, prefix: &[u8]) -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for kv in self.part.prefix(prefix) {
            let (_, v) = kv.expect("scan");
            n += 1;
            bytes += v.len() as u64;
        }
        (n, bytes)
    }
    fn get(&self, key: &[u8]) -> Option<usize> {
        self.part.get(key).expect("get").map(|v| v.len())
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("objects");

struct Redb {
    db: redb::Database,
}

impl Redb {
    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let db = redb::Database::create(dir.join("store.redb")).expect("open redb");
        Self { db }
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 4.1"
    }
    fn commit(&self, items: &[Item]) {
        let mut tx = self.db.begin_write().expect("tx");
        tx.set_durability(redb::Durability::Immediate)
            .expect("durability");
        // keeps the allocator state in each commit so that a crash needs no full repair scan
        tx.set_quick_repair(true);
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for (k, v) in items {
                t.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    fn scan(&self, prefix: &[u8]) -> (usize, u64) {
        use redb::ReadableDatabase as _;
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(TABLE).expect("table");
        let mut end = prefix.to_vec();
        *end.last_mut().expect("prefix") += 1;
        let mut n = 0;
        let mut bytes = 0;
        for kv in t.range(prefix..end.as_slice()).expect("range") {
            let (_, v) = kv.expect("scan");
            n += 1;
            bytes += v.value().len() as u64;
        }
        (n, bytes)
    }
    fn get(&self, key: &[u8]) -> Option<usize> {
        use redb::ReadableDatabase as _;
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(TABLE).expect("table");
        t.get(key).expect("get").map(|v| v.value().len())
    }
}

/// Today's store: one file per object, written atomically (tmp + fsync + rename + dir fsync).
struct Files {
    dir: PathBuf,
}

impl Engine for Files {
    fn name(&self) -> &'static str {
        "file per object"
    }
    fn commit(&self, items: &[Item]) {
        for (k, v) in items {
            let d = self.dir.join(hex::encode(&k[..2]));
            std::fs::create_dir_all(&d).expect("dir");
            floe_node::store::file::write_atomic(&d, &hex::encode(&k[2..]), v).expect("write");
        }
    }
    fn scan(&self, prefix: &[u8]) -> (usize, u64) {
        let d = self.dir.join(hex::encode(&prefix[..2]));
        let mut n = 0;
        let mut bytes = 0;
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for p in names {
            n += 1;
            bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        (n, bytes)
    }
    fn get(&self, key: &[u8]) -> Option<usize> {
        let p = self
            .dir
            .join(hex::encode(&key[..2]))
            .join(hex::encode(&key[2..]));
        floe_node::store::file::read_checked(&p)
            .ok()
            .map(|v| v.len())
    }
}

/// The group-commit writer: writers queue (items, reply) and block on the reply.
struct GroupWriter {
    tx: mpsc::Sender<(Vec<Item>, mpsc::SyncSender<()>)>,
}

impl GroupWriter {
    fn start(
        engine: Arc<dyn Engine>,
        max_batch_bytes: usize,
    ) -> (Self, std::thread::JoinHandle<u64>) {
        let (tx, rx) = mpsc::channel::<(Vec<Item>, mpsc::SyncSender<()>)>();
        let h = std::thread::spawn(move || {
            let mut commits = 0u64;
            while let Ok(first) = rx.recv() {
                let mut bytes: usize = first.0.iter().map(|(k, v)| k.len() + v.len()).sum();
                let mut group = vec![first];
                while bytes < max_batch_bytes {
                    match rx.try_recv() {
                        Ok(next) => {
                            bytes += next.0.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                            group.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let items: Vec<Item> = group.iter_mut().flat_map(|(i, _)| i.drain(..)).collect();
                engine.commit(&items);
                commits += 1;
                for (_, reply) in group {
                    let _ = reply.send(());
                }
            }
            commits
        });
        (Self { tx }, h)
    }
    fn write(&self, items: Vec<Item>) {
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx.send((items, rtx)).expect("writer alive");
        rrx.recv().expect("reply");
    }
}

fn key(shard: u16, i: u64) -> Vec<u8> {
    // [shard u16 BE][pseudo-random blob id 32][pair u16, axis u8]: writes land all over the key space
    let mut k = shard.to_be_bytes().to_vec();
    k.extend_from_slice(blake3::hash(&i.to_le_bytes()).as_bytes());
    k.extend_from_slice(&[0, 1, 0]);
    k
}

/// `count` values of `size` bytes from `writers` concurrent writers; returns (items/s, MiB/s,
/// commits).
fn run_writes(
    engine: Arc<dyn Engine>,
    writers: usize,
    count: u64,
    size: usize,
    base: u64,
) -> (f64, f64, u64) {
    // today's file store writes concurrently, each write with its own fsyncs
    let direct = engine.name() == "file per object";
    let (w, h) = GroupWriter::start(engine.clone(), 64 << 20);
    let w = Arc::new(w);
    // incompressible, like sliver symbols
    let mut v = vec![0u8; size];
    blake3::Hasher::new()
        .update(&base.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    let value: Arc<Vec<u8>> = Arc::new(v);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..writers as u64 {
            let w = w.clone();
            let value = value.clone();
            let engine = engine.clone();
            s.spawn(move || {
                let mut i = t;
                while i < count {
                    let id = base + i;
                    let item = vec![(key((id % 64) as u16, id), value.to_vec())];
                    if direct {
                        engine.commit(&item);
                    } else {
                        w.write(item);
                    }
                    i += writers as u64;
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    drop(w);
    let commits = h.join().expect("writer");
    (
        count as f64 / secs,
        (count as f64 * size as f64) / secs / (1 << 20) as f64,
        commits,
    )
}

fn main() {
    let scale: f64 = std::env::var("FLOE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: f64| ((x * scale) as u64).max(64);
    let root = tempfile::tempdir_in(std::env::var("FLOE_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    println!(
        "| engine | 1 KiB ×64 writers /s | 16 KiB ×64 /s (MiB/s) | 1 MiB ×8 MiB/s | disk / stored (1+16 KiB) | prefix scan (keys, ms) | reopen ms | get µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for which in ["fjall", "redb", "files"] {
        let dir = root.path().join(which);
        std::fs::create_dir_all(&dir).expect("dir");
        let open = |dir: &Path| -> Arc<dyn Engine> {
            match which {
                "fjall" => Arc::new(Fjall::open(dir)),
                "redb" => Arc::new(Redb::open(dir)),
                _ => Arc::new(Files {
                    dir: dir.to_path_buf(),
                }),
            }
        };
        let e = open(&dir);
        let name = e.name();
        let small = n(40_000.0);
        let (s1, _, c1) = run_writes(e.clone(), 64, small, 1024, 0);
        let mid = n(8_000.0);
        let (s16, m16, _) = run_writes(e.clone(), 64, mid, 16 << 10, 1 << 40);
        let stored = small * (1024 + 37) + mid * ((16 << 10) + 37);
        // let background flushes settle before measuring disk use
        std::thread::sleep(Duration::from_millis(500));
        let disk = du(&dir);
        let t = Instant::now();
        let (keys, _) = e.scan(&7u16.to_be_bytes());
        let scan_ms = t.elapsed().as_secs_f64() * 1e3;
        let big = n(256.0).min(256);
        let (_, m1m, _) = run_writes(e.clone(), 8, big, 1 << 20, 1 << 50);
        drop(e);
        let t = Instant::now();
        let e = open(&dir);
        let reopen_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let probes = 2000u64;
        for i in 0..probes {
            let id = (i * 13) % small;
            assert!(
                e.get(&key((id % 64) as u16, id)).is_some(),
                "{name}: key lost"
            );
        }
        let get_us = t.elapsed().as_secs_f64() * 1e6 / probes as f64;
        println!(
            "| {name} | {s1:.0} ({c1} commits for {small}) | {s16:.0} ({m16:.0}) | {m1m:.0} | {:.2}× ({} MiB / {} MiB) | {keys}, {scan_ms:.1} | {reopen_ms:.1} | {get_us:.1} |",
            disk as f64 / stored as f64,
            disk >> 20,
            stored >> 20
        );
        drop(e);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
