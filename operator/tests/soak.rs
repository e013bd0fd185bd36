//! The churn soak (issue 19): a 7-node, 100-shard testnet with 20 s epochs driven for a given
//! time with puts of 16 KiB–1 MiB and reads, while nodes are killed -9 and restarted (a third
//! of the restarts with their disk wiped, as long as the members still rebuilding hold fewer
//! than f shards with the victim: more lost at once is beyond the fault model), nodes join and
//! drain, stakes change, epochs are forced and the supervisor itself is killed -9 and resumed.
//! Then the churn stops and the network must heal.
//!
//! Not in CI (minutes long): `make soak` (default 5 minutes) or
//! `FLOE_SOAK_SECS=900 make soak`. It asserts:
//! - no store write stall longer than 10 s on any node (their own metrics, sampled every 5 s);
//! - every confirmed blob reads back, byte for byte, once the churn stopped (within
//!   [`HEAL_SECS`]), the epoch change in flight completes and every running member's recovery
//!   backlog drains (the total must reach a new low at least every [`DRAIN_STUCK_SECS`] and
//!   zero within [`DRAIN_SECS`]; on a failure the testnet directory, logs included, is kept);
//! - a put only fails while members holding f or more shards are down.
//!
//! It prints a report (puts, reads, failures, longest stall, journal bytes over time per node)
//! and writes the journal samples to `$FLOE_SOAK_OUT` (default `target/soak-journals.csv`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{floe_in, Testnet};
use floe_node::testing::random_bytes;
use serde_json::Value;

/// Time the network has, after the churn stopped, to make every blob readable again.
const HEAL_SECS: u64 = 600;
/// Recovery backlogs must keep shrinking once the churn stopped: a total that has not fallen for
/// this long is stuck (a slow machine only makes it slower), and it must be gone within
/// [`DRAIN_SECS`] of the churn's end in any case.
const DRAIN_STUCK_SECS: u64 = 180;
const DRAIN_SECS: u64 = 1800;
/// Epochs every blob is bought for: more than the churn and the heal last (20 s epochs).
const SOAK_EPOCHS: u32 = 400;
/// Longest store write stall allowed on any node.
const MAX_STALL: f64 = 10.0;

/// A tiny deterministic generator (the run is repeatable from its seed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn state(dir: &Path) -> Value {
    std::fs::read(dir.join("testnet.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn control(dir: &Path) -> Value {
    std::fs::read(dir.join("control.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Shards held by each node ID: during an epoch change, the most of the current committee and
/// the one it changes to (clients write to the newest committee they know, so a node taken down
/// blocks as many shards as it holds in either).
fn shards_by_node(dir: &Path) -> BTreeMap<String, usize> {
    let c = control(dir);
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for committee in [&c["committee"], &c["phase"]["to"]] {
        for m in committee["members"].as_array().into_iter().flatten() {
            let id = m["node_id"].as_str().unwrap_or_default().to_string();
            let held = m["shards"].as_array().map_or(0, Vec::len);
            let e = out.entry(id).or_default();
            *e = (*e).max(held);
        }
    }
    out
}

/// What the churn driver has taken down right now (node names), to judge failed puts.
#[derive(Default)]
struct Down {
    nodes: BTreeSet<String>,
    supervisor: bool,
    /// Supervisor kills so far: a put that overlapped one could not register its blob (the
    /// control plane that sells storage was down), which is the right answer, not a failure.
    supervisor_kills: u64,
}

/// Shards of the committee held by nodes that are down now.
fn down_shards(dir: &Path, down: &Mutex<Down>) -> usize {
    let names = down.lock().unwrap().nodes.clone();
    let st = state(dir);
    let by_id = shards_by_node(dir);
    st["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter(|n| names.contains(n["name"].as_str().unwrap_or_default()))
                .filter_map(|n| n["node_id"].as_str().and_then(|id| by_id.get(id)).copied())
                .sum()
        })
        .unwrap_or(0)
}

/// Shards held by members that still rebuild slivers (recovery backlog or shard sync), plus
/// those of `also`.
fn rebuilding_shards(t: &Testnet, also: &str) -> usize {
    let out = t.floe(&["--json", "testnet", "status"]);
    let Ok(st) = serde_json::from_slice::<Value>(&out.stdout) else {
        return usize::MAX;
    };
    st["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter(|n| {
                    n["name"] == also
                        || n["recovery_backlog"].as_u64().is_none_or(|b| b > 0)
                        || n["shards_pending"].as_u64().is_some_and(|p| p > 0)
                })
                .map(|n| n["shards"].as_u64().unwrap_or(0) as usize)
                .sum()
        })
        .unwrap_or(usize::MAX)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A confirmed blob: its ID, the put's number and its bytes.
type Confirmed = (String, u64, Vec<u8>);

/// One sample of a node's store health.
#[derive(Clone, Copy, Default)]
struct StoreSample {
    journal_bytes: f64,
    journals: f64,
    longest_stall: f64,
    recovery_backlog: f64,
}

struct Outcome {
    puts_ok: usize,
    puts_failed: usize,
    puts_failed_with_quorum: Vec<String>,
    reads_ok: usize,
    reads_failed: Vec<String>,
}

#[test]
#[ignore = "a soak of several minutes: make soak"]
fn churn_soak() {
    let secs: u64 = std::env::var("FLOE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("FLOE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    let out_csv = std::env::var("FLOE_SOAK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/soak-journals.csv")
        });
    // blobs must outlive the churn and the heal (20 s epochs: ~135 of them at most), so they
    // are bought for SOAK_EPOCHS, which the testnet must allow
    let mut t = Testnet::up(&[
        "--nodes",
        "7",
        "--shards",
        "100",
        "--epoch",
        "20s",
        "--max-epochs-ahead",
        &SOAK_EPOCHS.to_string(),
    ]);
    let dir = t.dir.path().to_path_buf();
    let f = (100 - 1) / 3;
    let started = Instant::now();
    let churning = Arc::new(AtomicBool::new(true));
    let down = Arc::new(Mutex::new(Down::default()));
    let blobs: Arc<Mutex<Vec<Confirmed>>> = Arc::new(Mutex::new(Vec::new()));
    println!(
        "soak: {secs} s of churn, seed {seed}, testnet in {}",
        dir.display()
    );

    // store health of every node, every 5 s, as long as the test runs
    let samples: Arc<Mutex<Vec<(f64, String, StoreSample)>>> = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (dir, samples, sampling) = (dir.clone(), samples.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let at = started.elapsed().as_secs_f64();
                for n in state(&dir)["nodes"].as_array().cloned().unwrap_or_default() {
                    let (Some(name), Some(http)) = (n["name"].as_str(), n["http"].as_str()) else {
                        continue;
                    };
                    let Some(text) = http_get(http, "/metrics") else {
                        continue;
                    };
                    let s = StoreSample {
                        journal_bytes: metric(&text, "floe_node_store_journal_bytes")
                            .unwrap_or(0.0),
                        journals: metric(&text, "floe_node_store_journals").unwrap_or(0.0),
                        longest_stall: metric(&text, "floe_node_store_write_stall_longest_seconds")
                            .unwrap_or(0.0)
                            .max(
                                metric(&text, "floe_node_store_write_stall_seconds").unwrap_or(0.0),
                            ),
                        recovery_backlog: metric(&text, "floe_node_recovery_backlog")
                            .unwrap_or(0.0),
                    };
                    samples.lock().unwrap().push((at, name.to_string(), s));
                }
                let until = Instant::now() + Duration::from_secs(5);
                while Instant::now() < until && sampling.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    // writers and readers: one blob at a time, each put checked against what was down
    let traffic = {
        let (dir, churning, down, blobs) =
            (dir.clone(), churning.clone(), down.clone(), blobs.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0x5eed);
            let mut o = Outcome {
                puts_ok: 0,
                puts_failed: 0,
                puts_failed_with_quorum: Vec::new(),
                reads_ok: 0,
                reads_failed: Vec::new(),
            };
            let mut i = 0u64;
            while churning.load(Ordering::Relaxed) {
                i += 1;
                let len = (16 << 10) + rng.below((1 << 20) - (16 << 10)) as usize;
                let data = random_bytes(len, seed * 1_000_000 + i);
                let file = dir.join(format!("soak-{i}"));
                std::fs::write(&file, &data).unwrap();
                let down_before = down_shards(&dir, &down);
                let (sup_before, kills_before) = {
                    let d = down.lock().unwrap();
                    (d.supervisor, d.supervisor_kills)
                };
                let out = floe_in(
                    &dir,
                    &[
                        "--json",
                        "put",
                        "--epochs",
                        &SOAK_EPOCHS.to_string(),
                        file.to_str().unwrap(),
                    ],
                );
                let down_after = down_shards(&dir, &down);
                let control_down = {
                    let d = down.lock().unwrap();
                    sup_before || d.supervisor || d.supervisor_kills != kills_before
                };
                let _ = std::fs::remove_file(&file);
                if out.status.success() {
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                    let id = v["blob_id"].as_str().unwrap().to_string();
                    o.puts_ok += 1;
                    blobs.lock().unwrap().push((id, i, data));
                } else {
                    o.puts_failed += 1;
                    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    println!(
                        "soak: put {i} failed at {:.0} s ({down_before}/{down_after} shards down): {why}",
                        started.elapsed().as_secs_f64()
                    );
                    if down_before.max(down_after) < f && !control_down {
                        o.puts_failed_with_quorum.push(format!("put {i}: {why}"));
                    }
                }
                // read one earlier blob back
                let pick = {
                    let b = blobs.lock().unwrap();
                    (!b.is_empty()).then(|| b[rng.below(b.len() as u64) as usize].clone())
                };
                if let Some((id, _, want)) = pick {
                    let dest = dir.join("soak-read");
                    let out = floe_in(&dir, &["get", &id, "-o", dest.to_str().unwrap()]);
                    if out.status.success()
                        && std::fs::read(&dest).ok().as_deref() == Some(&want[..])
                    {
                        o.reads_ok += 1;
                    } else {
                        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                        println!("soak: read of {id} failed during the churn: {why}");
                        o.reads_failed.push(format!("{id}: {why}"));
                    }
                }
            }
            o
        })
    };

    // the churn itself, one action every few seconds; at most one node down at a time
    let mut rng = Rng(seed);
    let mut added = 0;
    let mut drained = 0;
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    let live_nodes = |dir: &Path| -> Vec<String> {
        state(dir)["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|n| n["leaving"] != true && n["released"] != true)
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect()
    };
    let run = |args: &[&str]| {
        let out = floe_in(&dir, args);
        if !out.status.success() {
            println!(
                "soak: floe {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        out.status.success()
    };
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(2000 + rng.below(4000)));
        let nodes = live_nodes(&dir);
        match rng.below(100) {
            0..=39 => {
                // kill -9 one node, restart it 3–10 s later; a third of the restarts wipe it
                let victim = nodes[rng.below(nodes.len() as u64) as usize].clone();
                if run(&["testnet", "kill", &victim]) {
                    down.lock().unwrap().nodes.insert(victim.clone());
                    std::thread::sleep(Duration::from_millis(3000 + rng.below(7000)));
                    // a wiped node loses all its shards' slivers: wipe only while the shards of
                    // members still rebuilding theirs, with the victim's, stay under f (the
                    // fault model: more lost at once is data loss by definition)
                    let wipe = rng.below(3) == 0 && rebuilding_shards(&t, &victim) < f;
                    let args: Vec<&str> = if wipe {
                        vec!["testnet", "restart", &victim, "--wipe"]
                    } else {
                        vec!["testnet", "restart", &victim]
                    };
                    run(&args);
                    down.lock().unwrap().nodes.remove(&victim);
                    *actions
                        .entry(if wipe { "kill+wipe" } else { "kill" })
                        .or_default() += 1;
                }
            }
            40..=54 if run(&["testnet", "next-epoch", "--no-wait"]) => {
                *actions.entry("next-epoch").or_default() += 1;
            }
            55..=66 => {
                let who = nodes[rng.below(nodes.len() as u64) as usize].clone();
                let stake = 1 + rng.below(5);
                if run(&["testnet", "set-stake", &who, &stake.to_string()]) {
                    *actions.entry("set-stake").or_default() += 1;
                }
            }
            67..=76
                if added < 3
                    && run(&[
                        "testnet",
                        "add-node",
                        "--stake",
                        &(1 + rng.below(3)).to_string(),
                    ]) =>
            {
                added += 1;
                *actions.entry("add-node").or_default() += 1;
            }
            77..=84 if drained < 2 && nodes.len() > 6 => {
                let who = nodes[rng.below(nodes.len() as u64) as usize].clone();
                if run(&["testnet", "remove-node", &who]) {
                    drained += 1;
                    *actions.entry("remove-node").or_default() += 1;
                }
            }
            85..=99 => {
                // the supervisor killed -9, then resumed in the same directory
                let pid = std::fs::read_to_string(dir.join("supervisor.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                if let Some(pid) = pid {
                    {
                        let mut d = down.lock().unwrap();
                        d.supervisor = true;
                        d.supervisor_kills += 1;
                    }
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                    let gone = Instant::now() + Duration::from_secs(10);
                    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    std::thread::sleep(Duration::from_millis(rng.below(3000)));
                    let ok = run(&[
                        "testnet",
                        "up",
                        "--nodes",
                        "7",
                        "--shards",
                        "100",
                        "--epoch",
                        "20s",
                        "--max-epochs-ahead",
                        &SOAK_EPOCHS.to_string(),
                    ]);
                    down.lock().unwrap().supervisor = false;
                    assert!(ok, "the supervisor could not be resumed");
                    *actions.entry("supervisor kill -9").or_default() += 1;
                }
            }
            _ => {}
        }
    }
    churning.store(false, Ordering::Relaxed);
    let o = traffic.join().unwrap();
    let churn_secs = started.elapsed().as_secs_f64();
    println!("soak: churn stopped after {churn_secs:.0} s; actions: {actions:?}");

    // healing: the epoch change in flight completes, and every blob reads back
    let heal_started = Instant::now();
    let heal_deadline = heal_started + Duration::from_secs(HEAL_SECS);
    loop {
        let c = control(&dir);
        if c["phase"]["phase"] == "stable" {
            break;
        }
        assert!(
            Instant::now() < heal_deadline,
            "the epoch change did not complete {HEAL_SECS} s after the churn stopped: {}",
            String::from_utf8_lossy(&t.floe(&["testnet", "status"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let settled = heal_started.elapsed().as_secs_f64();
    let all = blobs.lock().unwrap().clone();
    let mut unreadable = Vec::new();
    let mut slowest = 0f64;
    for (id, _, want) in &all {
        let t0 = Instant::now();
        loop {
            let dest = dir.join("soak-final");
            let out = floe_in(&dir, &["get", id, "-o", dest.to_str().unwrap()]);
            if out.status.success() && std::fs::read(&dest).ok().as_deref() == Some(&want[..]) {
                break;
            }
            if Instant::now() > heal_deadline {
                unreadable.push(format!(
                    "{id}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        slowest = slowest.max(t0.elapsed().as_secs_f64());
    }
    let read_back = heal_started.elapsed().as_secs_f64();
    // recovery catches up: no running member still misses slivers
    let backlogs = |t: &Testnet| -> Vec<(String, u64)> {
        let st = t.json(&["testnet", "status"]);
        st["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|n| !n["pid"].is_null())
            .map(|n| {
                (
                    n["name"].as_str().unwrap_or_default().to_string(),
                    n["recovery_backlog"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };
    // drained, or at least still shrinking: stuck = no new low for DRAIN_STUCK_SECS
    let drain_deadline = started + Duration::from_secs(secs + DRAIN_SECS);
    let mut lowest = (u64::MAX, Instant::now());
    let backlog_drained = loop {
        let b = backlogs(&t);
        let total = b.iter().map(|(_, n)| *n).fold(0u64, u64::saturating_add);
        if total == 0 {
            break Ok(heal_started.elapsed().as_secs_f64());
        }
        if total < lowest.0 {
            lowest = (total, Instant::now());
        }
        if Instant::now() > drain_deadline
            || lowest.1.elapsed() > Duration::from_secs(DRAIN_STUCK_SECS)
        {
            break Err(b);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();

    // the report
    let samples = samples.lock().unwrap().clone();
    let mut per_node: BTreeMap<String, (f64, f64, f64, usize)> = BTreeMap::new();
    for (_, name, s) in &samples {
        let e = per_node.entry(name.clone()).or_default();
        e.0 = e.0.max(s.journal_bytes);
        e.1 = e.1.max(s.journals);
        e.2 = e.2.max(s.longest_stall);
        e.3 += 1;
    }
    let mut csv = String::from(
        "seconds,node,journal_bytes,journals,longest_stall_seconds,recovery_backlog\n",
    );
    for (at, name, s) in &samples {
        csv.push_str(&format!(
            "{at:.1},{name},{},{},{:.3},{}\n",
            s.journal_bytes, s.journals, s.longest_stall, s.recovery_backlog
        ));
    }
    if let Some(p) = out_csv.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let _ = std::fs::write(&out_csv, csv);
    println!("\n## Soak report ({churn_secs:.0} s of churn, seed {seed})");
    println!(
        "puts: {} ok, {} failed ({} while fewer than f = {f} shards were down and the control plane was up)",
        o.puts_ok,
        o.puts_failed,
        o.puts_failed_with_quorum.len()
    );
    println!(
        "reads during the churn: {} ok, {} failed",
        o.reads_ok,
        o.reads_failed.len()
    );
    println!(
        "after the churn: epoch change settled in {settled:.0} s; {} blobs read back in {read_back:.0} s (slowest {slowest:.1} s), {} unreadable",
        all.len(),
        unreadable.len()
    );
    match &backlog_drained {
        Ok(s) => println!("recovery backlogs drained {s:.0} s after the churn stopped"),
        Err(b) => println!("recovery backlogs NOT drained: {b:?}"),
    }
    println!("| node | samples | max journal MiB | max journals | longest write stall (s) |");
    println!("|---|---|---|---|---|");
    for (name, (jb, jn, st, n)) in &per_node {
        println!(
            "| {name} | {n} | {:.1} | {jn} | {st:.2} |",
            jb / (1 << 20) as f64
        );
    }
    println!("journal and backlog samples: {}", out_csv.display());
    let longest = per_node.values().map(|v| v.2).fold(0f64, f64::max);
    let failed = !unreadable.is_empty()
        || backlog_drained.is_err()
        || longest > MAX_STALL
        || !o.puts_failed_with_quorum.is_empty();
    if failed {
        // the nodes' logs and stores are the evidence: kept, not cleaned up
        t.dir.disable_cleanup(true);
        println!(
            "soak failed: the testnet directory is kept: {}",
            dir.display()
        );
    }

    assert!(
        unreadable.is_empty(),
        "blobs not readable after the churn: {unreadable:#?}"
    );
    assert!(
        backlog_drained.is_ok(),
        "recovery backlogs not drained: {backlog_drained:?}"
    );
    assert!(
        longest <= MAX_STALL,
        "a store write stall lasted {longest:.1} s"
    );
    assert!(
        o.puts_failed_with_quorum.is_empty(),
        "puts failed while fewer than f shards were down and the control plane was up: {:#?}",
        o.puts_failed_with_quorum
    );
}
