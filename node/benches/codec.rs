//! Codec benchmark: prints one table (README "Benchmarks").
//!
//! `cargo bench -p floe-node --bench codec` runs the full matrix; `-- --quick` runs a small
//! smoke version; `-- --n 1000 --mib 64` picks one case; `-- --n 1000 --mib 1
//! --profile-encode 100` only encodes (one thread), for `perf record`.
//! Throughputs are input MiB per second (the unencoded blob size); "floor" is the bare
//! Reed–Solomon work on the same matrix, so `encode / floor` is a ratio measured in one run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use floe_node::client::FileSource;
use floe_node::codec::gf_engine::EngineKind;
use floe_node::codec::{
    decode, encode, encode_metadata, merkle, reed_solomon_floor, ConsistencyCheck, EncodingParams,
    Sliver, StreamingEncoder,
};
use floe_node::testing::random_bytes;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: usize = 1 << 20;

/// Best of `reps` wall-clock runs.
fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mibps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let ns: Vec<usize> = match arg("--n") {
        Some(n) => vec![n.parse().expect("--n")],
        None => vec![100, 1000],
    };
    let sizes: Vec<usize> = match arg("--mib") {
        Some(m) => vec![m.parse().expect("--mib")],
        None if quick => vec![1, 4],
        None => vec![1, 16, 64, 256],
    };
    if let Some(times) = arg("--profile-encode") {
        // for `perf record`: only encodes of the first case, on one thread
        let params = EncodingParams::new(ns[0]).expect("n");
        let data = random_bytes(sizes[0] * MIB, 1);
        let times: usize = times.parse().expect("--profile-encode");
        pool(1).install(|| {
            for _ in 0..times {
                std::hint::black_box(encode(&data, params).expect("encode"));
            }
        });
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let one = pool(1);
    let all = pool(cores);
    let engine = EngineKind::current();
    println!(
        "Floe codec benchmark (encoding type 2): {cores} cores, hash engine {}, Reed–Solomon engine {}, input MiB/s, best of several runs",
        floe_node::codec::hash_engine(),
        engine.name()
    );
    println!("The RS floor is measured on reed-solomon-simd's own engine (the floor the targets name) and on the codec's; the encode runs on the codec's engine (and, for comparison, on reed-solomon-simd's)");
    println!("encode = metadata + blob ID + the compact form (D, P, Q); +pairs = also every sliver pair materialised, as the uploading client does; metadata-only = `encode_metadata` (P hashed batch by batch, never kept); peak mem counts the input blob");
    println!(
        "| n | blob | s | encode 1T | +pairs 1T | +pairs {cores}T | speedup | RS floor 1T: reed-solomon-simd / {e} | encode / rs-simd floor | encode / {e} floor | encode 1T on rs-simd | decode sys 1T | decode parity 1T | peak mem | metadata-only 1T | its peak mem | verify a pair 1T |",
        e = engine.name()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut bounds = Vec::new();
    for &n in &ns {
        let params = EncodingParams::new(n).expect("n");
        for &mib in &sizes {
            let len = (mib * MIB).min(params.max_blob_size() as usize);
            let data = random_bytes(len, 0x243F_6A88);
            let reps = if len <= 16 * MIB { 5 } else { 3 };
            let shape = params.symbol_shape(len as u64).expect("shape");
            // peak memory of one encode (compact form), relative to the blob
            floe_node::codec::release_spare_buffers();
            let base = CURRENT.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let enc = one.install(|| encode(&data, params)).expect("encode");
            let peak = PEAK.load(Ordering::Relaxed) - base + len;
            drop(enc);
            // peak memory and time of the metadata-only encoder (`floe blob-id`)
            floe_node::codec::release_spare_buffers();
            let base = CURRENT.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            one.install(|| encode_metadata(&data, params))
                .expect("metadata");
            let peak_md = PEAK.load(Ordering::Relaxed) - base + len;
            let t_md = best(reps, || {
                one.install(|| encode_metadata(&data, params).expect("md"))
            });
            let enc = one.install(|| encode(&data, params)).expect("encode");
            let full = |pool: &rayon::ThreadPool| {
                pool.install(|| {
                    use rayon::prelude::*;
                    let e = encode(&data, params).expect("encode");
                    // every sliver pair materialised, in parallel as the uploading client does
                    (0..e.n())
                        .into_par_iter()
                        .map(|p| e.pair(p))
                        .map(|p| p.primary.data.len() + p.secondary.data.len())
                        .sum::<usize>()
                })
            };
            // the RS floors and the encodes on both engines alternate, so that drift hits all
            // alike; "ref" = reed-solomon-simd's own engine, the floor
            let (mut t_enc, mut t_enc_ref) = (Duration::MAX, Duration::MAX);
            let (mut floor, mut floor_ref) = (Duration::MAX, Duration::MAX);
            for _ in 0..reps {
                for (kind, f, e) in [
                    (EngineKind::Default, &mut floor_ref, &mut t_enc_ref),
                    (engine, &mut floor, &mut t_enc),
                ] {
                    kind.set();
                    *f = (*f).min(best(1, || {
                        one.install(|| reed_solomon_floor(&data, params).expect("floor"))
                    }));
                    *e = (*e).min(best(1, || {
                        one.install(|| encode(&data, params).expect("encode"))
                    }));
                }
            }
            let t1 = best(reps, || full(&one));
            let tn = best(reps, || full(&all));
            let kp = params.k_primary();
            let sys: Vec<Sliver> = (0..kp).map(|i| enc.primary_sliver(i)).collect();
            let par: Vec<Sliver> = (n - kp..n).map(|i| enc.primary_sliver(i)).collect();
            let md = enc.metadata().clone();
            // what a node pays to check one received pair (both slivers: expand, hash, root)
            let pair = enc.pair(n / 2);
            let t_verify = best(reps, || {
                one.install(|| {
                    pair.primary.verify(&md).expect("verify");
                    pair.secondary.verify(&md).expect("verify");
                })
            });
            drop(enc);
            let dsys = best(reps, || {
                one.install(|| decode(&md, &sys, ConsistencyCheck::Default).expect("decode"))
            });
            let dpar = best(reps, || {
                one.install(|| decode(&md, &par, ConsistencyCheck::Default).expect("decode"))
            });
            println!(
                "| {n} | {:.0} MiB | {} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.0} / {:.0} | **{:.2}** | {:.2} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.0} | {:.2}× | {:.2} ms |",
                len as f64 / MIB as f64,
                shape.symbol_size,
                mibps(len, t_enc),
                mibps(len, t1),
                mibps(len, tn),
                t1.as_secs_f64() / tn.as_secs_f64(),
                mibps(len, floor_ref),
                mibps(len, floor),
                t_enc.as_secs_f64() / floor_ref.as_secs_f64(),
                t_enc.as_secs_f64() / floor.as_secs_f64(),
                mibps(len, t_enc_ref),
                mibps(len, dsys),
                mibps(len, dpar),
                peak as f64 / len as f64,
                mibps(len, t_md),
                peak_md as f64 / len as f64,
                t_verify.as_secs_f64() * 1e3,
            );
            bounds.push((n, len, shape.symbol_size, floor, t_enc));
        }
    }
    print_bounds(&one, &bounds);
    print_streaming(&one, &ns, &sizes);
    print_copy_bandwidth();
}

/// The streaming encoder (`codec::stream`, what the client uploads large blobs with) against
/// the in-memory one, both producing every sliver pair once (dropped at once, as an uploader
/// that has sent it does): time and peak heap relative to the blob. "From the file": the blob
/// is read with `pread` and never held; "in memory": the blob is held (counted).
fn print_streaming(one: &rayon::ThreadPool, ns: &[usize], sizes: &[usize]) {
    println!();
    println!("Streaming encoder: metadata, then every pair produced once, group by group (P recomputed per group); one thread; peak heap / blob");
    println!("| n | blob | in memory: encode + pairs | its peak | from the file, 2 groups | time vs in memory | its peak | blob in memory, 4 groups | time vs in memory | its peak |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let dir = std::env::temp_dir().join(format!("floe-codec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("blob");
    for &n in ns {
        let params = EncodingParams::new(n).expect("n");
        for &mib in sizes {
            let len = (mib * MIB).min(params.max_blob_size() as usize);
            if params.symbol_shape(len as u64).expect("shape").symbol_size <= 32 {
                continue; // small blobs: the streaming encoder is the in-memory one
            }
            let data = random_bytes(len, 0x243F_6A88);
            std::fs::write(&path, &data).expect("write blob");
            let measure = |f: &(dyn Fn() -> usize + Sync)| {
                floe_node::codec::release_spare_buffers();
                let base = CURRENT.load(Ordering::Relaxed);
                PEAK.store(base, Ordering::Relaxed);
                let t = Instant::now();
                std::hint::black_box(one.install(f));
                (t.elapsed(), PEAK.load(Ordering::Relaxed) - base)
            };
            let in_memory = || {
                let e = encode(&data, params).expect("encode");
                (0..e.n())
                    .map(|p| e.pair(p).primary.data.len())
                    .sum::<usize>()
            };
            let streamed = |source: Box<dyn floe_node::codec::BlobSource>, groups: usize| {
                let st = std::sync::Arc::new(
                    StreamingEncoder::new(source, params, groups).expect("stream"),
                );
                let mut total = 0;
                for g in 0..groups {
                    let group = st.group(g).expect("group");
                    for p in group.pairs() {
                        total += group.primary_sliver(p).expect("primary").data.len();
                        total += group
                            .secondary_sliver(n - 1 - p)
                            .expect("secondary")
                            .data
                            .len();
                    }
                }
                total
            };
            let (t_mem, peak_mem) = measure(&in_memory);
            let (t_file, peak_file) =
                measure(&|| streamed(Box::new(FileSource::open(&path).expect("open")), 2));
            let (t_held, peak_held) = measure(&|| streamed(Box::new(data.clone()), 4));
            println!(
                "| {n} | {:.0} MiB | {:.0} ms | {:.2}× | {:.0} ms | {:.2}× | {:.2}× | {:.0} ms | {:.2}× | {:.2}× |",
                len as f64 / MIB as f64,
                t_mem.as_secs_f64() * 1e3,
                (peak_mem + len) as f64 / len as f64,
                t_file.as_secs_f64() * 1e3,
                t_file.as_secs_f64() / t_mem.as_secs_f64(),
                peak_file as f64 / len as f64,
                t_held.as_secs_f64() * 1e3,
                t_held.as_secs_f64() / t_mem.as_secs_f64(),
                peak_held as f64 / len as f64,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Single-thread and all-core memory-copy bandwidth of this machine in this run: what bounds
/// the encoder's scaling once hashing and RS run from memory rather than cache.
fn print_copy_bandwidth() {
    let src = random_bytes(256 * MIB, 3);
    let mut dst = vec![0u8; src.len()];
    let t1 = best(3, || dst.copy_from_slice(&src));
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let tn = best(3, || {
        use rayon::prelude::*;
        pool(cores).install(|| {
            dst.par_chunks_mut(4 * MIB)
                .zip(src.par_chunks(4 * MIB))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
    println!();
    println!(
        "memcpy of 256 MiB: {:.1} GB/s on one core, {:.1} GB/s on {cores} (bytes copied per second; each byte is read once and written once)",
        src.len() as f64 / t1.as_secs_f64() / 1e9,
        src.len() as f64 / tn.as_secs_f64() / 1e9,
    );
}

/// BLAKE3 compressions of one input of `len` bytes: 16 per full 1 KiB chunk, one per 64-byte
/// block of the last chunk, one per parent node.
fn compressions(len: usize) -> usize {
    let chunks = len.div_ceil(1024).max(1);
    let last = len - (chunks - 1) * 1024;
    (chunks - 1) * 16 + last.div_ceil(64).max(1) + (chunks - 1)
}

/// Inner nodes of a type-2 tree over `leaves` leaves: a single leaf is paired with the zero
/// node (one node), odd levels are padded.
fn inner_nodes(leaves: usize) -> usize {
    let mut count = 0;
    let mut w = leaves;
    loop {
        w = w.div_ceil(2);
        count += w;
        if w <= 1 {
            return count;
        }
    }
}

/// The BLAKE3 compressions PROTOCOL.md §3 (type 2) makes every encoder of an `n`-shard blob
/// with `s`-byte symbols compute: leaves cost nothing when packed (`s ≤ 32`, `⌈n/c⌉` chunk
/// leaves per sliver tree), else one keyed hash per symbol of the n × n matrix, shared by its
/// row and column trees; one compression per inner node of the 2n sliver trees; the blob tree
/// (n leaves of 64 bytes: one compression each, plus its inner nodes) and the blob ID.
fn type2_compressions(n: usize, s: usize) -> usize {
    let sliver_trees = if s <= 32 {
        2 * n * inner_nodes(n.div_ceil(32 / s))
    } else {
        n * n * compressions(s) + 2 * n * inner_nodes(n)
    };
    sliver_trees + n * compressions(64) + inner_nodes(n) + compressions(1 + 8 + 32)
}

/// What the protocol makes every encoder hash, priced at the `blake3` crate's own peak rate on
/// this machine (one big input: all SIMD lanes busy, no per-input cost), plus the measured RS
/// floor on the fastest engine here (the codec's): a bound no implementation of the protocol
/// beats on one core of this machine.
fn print_bounds(one: &rayon::ThreadPool, cases: &[(usize, usize, usize, Duration, Duration)]) {
    let big = random_bytes(64 * MIB, 7);
    let t = best(3, || one.install(|| blake3::hash(&big)));
    let per_second = (big.len() / 64) as f64 / t.as_secs_f64();
    println!();
    println!(
        "Type-2 lower bound on one core: the protocol's BLAKE3 compressions at blake3's peak rate here ({:.0} M compressions/s, {:.0} MiB/s), plus the RS floor",
        per_second / 1e6,
        mibps(big.len(), t)
    );
    // this codec's own engine on the two shapes it hashes most: 64-byte inner nodes and leaves
    // (a level of 64 Ki nodes, hashed 16 times: in cache, as the encoder's strips are)
    let level: Vec<[u8; 32]> = big[..64 * 65_536]
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32"))
        .collect();
    let tn = best(3, || {
        one.install(|| {
            for _ in 0..16 {
                std::hint::black_box(merkle::parent_level(&level));
            }
        })
    }) / 16;
    let tn = tn.mul_f64(1e6 / 65_536.0);
    let mut leaves = vec![[0u8; 32]; 50_000];
    let tl = best(3, || {
        one.install(|| merkle::leaf_hashes_into(&big[..1206 * 50_000], 1206, &mut leaves))
    });
    println!(
        "This codec's engine ({}): inner nodes at {:.0} M compressions/s, 1206-byte leaves at {:.0} M compressions/s",
        floe_node::codec::hash_engine(),
        1e6 / tn.as_secs_f64() / 1e6,
        (50_000 * compressions(1206)) as f64 / tl.as_secs_f64() / 1e6
    );
    println!("| n | blob | s | compressions | hashing at peak | RS floor ({}) | bound | best possible | encode 1T | encode/bound | encode/floor |", EngineKind::current().name());
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &(n, len, s, floor, t1) in cases {
        let count = type2_compressions(n, s);
        let hashing = count as f64 / per_second;
        let bound = hashing + floor.as_secs_f64();
        println!(
            "| {n} | {:.0} MiB | {s} | {:.2} M | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} MiB/s | {:.1} ms, {:.0} MiB/s | {:.2} | {:.2} |",
            len as f64 / MIB as f64,
            count as f64 / 1e6,
            hashing * 1e3,
            floor.as_secs_f64() * 1e3,
            bound * 1e3,
            len as f64 / MIB as f64 / bound,
            t1.as_secs_f64() * 1e3,
            mibps(len, t1),
            t1.as_secs_f64() / bound,
            t1.as_secs_f64() / floor.as_secs_f64(),
        );
    }
}
