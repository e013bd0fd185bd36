//! Codec benchmark: prints one table (README "Benchmarks").
//!
//! `cargo bench -p floe-node --bench codec` runs the full matrix; `-- --quick` runs a small
//! smoke version; `-- --n 1000 --mib 64` picks one case.
//! Throughputs are input MiB per second (the unencoded blob size); "floor" is the bare
//! Reed–Solomon work on the same matrix, so `encode / floor` is a ratio measured in one run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use floe_node::codec::{
    decode, encode, reed_solomon_floor, ConsistencyCheck, EncodingParams, Sliver,
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
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let one = pool(1);
    let all = pool(cores);
    println!("Floe codec benchmark: {cores} cores, input MiB/s, best of several runs");
    println!(
        "| n | blob | s | encode 1T | encode {cores}T | speedup | RS floor 1T | encode/floor | decode sys 1T | decode parity 1T | peak mem |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut bounds = Vec::new();
    for &n in &ns {
        let params = EncodingParams::new(n).expect("n");
        for &mib in &sizes {
            let len = (mib * MIB).min(params.max_blob_size() as usize);
            let data = random_bytes(len, 0x243F_6A88);
            let reps = if len <= 16 * MIB { 3 } else { 1 };
            let shape = params.symbol_shape(len as u64).expect("shape");
            // peak memory of one full encode producing every sliver pair, relative to the blob
            let base = CURRENT.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let enc = one.install(|| encode(&data, params)).expect("encode");
            let peak = PEAK.load(Ordering::Relaxed) - base + len;
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
            let t1 = best(reps, || full(&one));
            let tn = best(reps, || full(&all));
            let floor = best(reps, || {
                one.install(|| reed_solomon_floor(&data, params).expect("floor"))
            });
            let kp = params.k_primary();
            let sys: Vec<Sliver> = (0..kp).map(|i| enc.primary_sliver(i)).collect();
            let par: Vec<Sliver> = (n - kp..n).map(|i| enc.primary_sliver(i)).collect();
            let md = enc.metadata().clone();
            drop(enc);
            let dsys = best(reps, || {
                one.install(|| decode(&md, &sys, ConsistencyCheck::Default).expect("decode"))
            });
            let dpar = best(reps, || {
                one.install(|| decode(&md, &par, ConsistencyCheck::Default).expect("decode"))
            });
            println!(
                "| {n} | {:.0} MiB | {} | {:.0} | {:.0} | {:.2}× | {:.0} | {:.2} | {:.0} | {:.0} | {:.2}× |",
                len as f64 / MIB as f64,
                shape.symbol_size,
                mibps(len, t1),
                mibps(len, tn),
                t1.as_secs_f64() / tn.as_secs_f64(),
                mibps(len, floor),
                t1.as_secs_f64() / floor.as_secs_f64(),
                mibps(len, dsys),
                mibps(len, dpar),
                peak as f64 / len as f64,
            );
            bounds.push((n, len, shape.symbol_size, floor, t1));
        }
    }
    print_bounds(&one, &bounds);
}

/// BLAKE3 compressions of one input of `len` bytes: 16 per full 1 KiB chunk, one per 64-byte
/// block of the last chunk, one per parent node.
fn compressions(len: usize) -> usize {
    let chunks = len.div_ceil(1024).max(1);
    let last = len - (chunks - 1) * 1024;
    (chunks - 1) * 16 + last.div_ceil(64).max(1) + (chunks - 1)
}

/// Inner nodes of a Merkle tree over `leaves` leaves, odd levels padded.
fn inner_nodes(mut leaves: usize) -> usize {
    let mut count = 0;
    while leaves > 1 {
        leaves = leaves.div_ceil(2);
        count += leaves;
    }
    count
}

/// What PROTOCOL.md §3 makes every encoder hash, priced at the `blake3` crate's own peak rate on
/// this machine (one big input: all SIMD lanes busy, no per-input cost), plus the measured RS
/// floor: a bound no implementation of the protocol beats on one core of this machine.
fn print_bounds(one: &rayon::ThreadPool, cases: &[(usize, usize, usize, Duration, Duration)]) {
    let big = random_bytes(64 * MIB, 7);
    let t = best(3, || one.install(|| blake3::hash(&big)));
    let per_second = (big.len() / 64) as f64 / t.as_secs_f64();
    println!();
    println!(
        "Lower bound on one core: the protocol's BLAKE3 compressions at blake3's peak rate here ({:.0} M compressions/s, {:.0} MiB/s), plus the RS floor",
        per_second / 1e6,
        mibps(big.len(), t)
    );
    println!("| n | blob | compressions | hashing at peak | RS floor | bound | best possible | measured encode 1T | Walrus target |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(n, len, s, floor, t1) in cases {
        // n² leaves (each symbol hashed once, shared by its row and column tree), 2n sliver
        // trees of 65-byte inner nodes, the blob tree over n 65-byte leaves
        let count = n * n * compressions(1 + s)
            + 2 * n * inner_nodes(n) * compressions(65)
            + (n + inner_nodes(n)) * compressions(65);
        let hashing = count as f64 / per_second;
        let bound = hashing + floor.as_secs_f64();
        // the targets at n = 1000: 20× Walrus's 0.6 s at 1 MiB, 4× its 57 MiB/s at 64 MiB, 3× its 87 MiB/s at 256 MiB
        let target = match (n, len / MIB) {
            (1000, 1) => format!("{:.0} ms", 600.0 / 20.0),
            (1000, 64) => format!("{:.0} MiB/s", 57.0 * 4.0),
            (1000, 256) => format!("{:.0} MiB/s", 87.0 * 3.0),
            _ => "-".to_string(),
        };
        println!(
            "| {n} | {:.0} MiB | {:.1} M | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} MiB/s | {:.0} ms, {:.0} MiB/s | {target} |",
            len as f64 / MIB as f64,
            count as f64 / 1e6,
            hashing * 1e3,
            floor.as_secs_f64() * 1e3,
            bound * 1e3,
            len as f64 / MIB as f64 / bound,
            t1.as_secs_f64() * 1e3,
            mibps(len, t1),
        );
    }
}
