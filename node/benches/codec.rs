//! Codec benchmark: prints one table (README "Benchmarks").
//!
//! `cargo bench -p floe-node --bench codec` runs the full matrix; `-- --quick` runs a small
//! smoke version; `-- --n 1000 --mib 64` picks one case.
//! Throughputs are input MiB per second (the unencoded blob size); "floor" is the bare
//! Reed–Solomon work on the same matrix, so `encode / floor` is a ratio measured in one run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use floe_node::testing::random_bytes;
use floe_node::codec::{decode, encode, reed_solomon_floor, ConsistencyCheck, EncodingParams, Sliver};

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
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
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
                    (0..e.n()).into_par_iter().map(|p| e.pair(p)).map(|p| p.primary.data.len() + p.secondary.data.len()).sum::<usize>()
                })
            };
            let t1 = best(reps, || full(&one));
            let tn = best(reps, || full(&all));
            let floor = best(reps, || one.install(|| reed_solomon_floor(&data, params).expect("floor")));
            let kp = params.k_primary();
            let sys: Vec<Sliver> = (0..kp).map(|i| enc.primary_sliver(i)).collect();
            let par: Vec<Sliver> = (n - kp..n).map(|i| enc.primary_sliver(i)).collect();
            let md = enc.metadata().clone();
            drop(enc);
            let dsys = best(reps, || one.install(|| decode(&md, &sys, ConsistencyCheck::Default).expect("decode")));
            let dpar = best(reps, || one.install(|| decode(&md, &par, ConsistencyCheck::Default).expect("decode")));
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
        }
    }
}
