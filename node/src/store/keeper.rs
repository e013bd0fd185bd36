//! The store's keeper: a thread that watches the engine's journals and the writer's commits,
//! gets journals released when the engine stops releasing them, and reports write stalls.
//!
//! Why it exists (issue 19): fjall (2.11) halts every write, inside the committing thread —
//! our single writer — while its sealed journals exceed `max_journaling_size`, and it releases a
//! sealed journal only once every partition that had unflushed data in it has flushed. Two
//! things let that halt last forever after a node restarts from a crash:
//! - recovery replays each sealed journal into one flush task per partition, but wakes the
//!   flush worker once per *partition* (`FlushManager::queue_count`), and each wake flushes at
//!   most `flush_workers` (min(cpus, 4)) tasks: with more recovered tasks than that, the rest
//!   stay queued with nothing left to wake the worker;
//! - the engine's monitor never flushes a partition that has queued tasks, and it is exactly
//!   those partitions (never flushed since the restart) that it picks first.
//!
//! So the journals are never released, and once they pass the limit (each sealed journal counts
//! as its 32 MiB preallocated file, however little it holds) the node never writes again. The
//! churn soak reproduced it on a node restarted with ten sealed journals; the store test
//! `recovered_flush_tasks_are_drained` rebuilds it deterministically.
//!
//! The keeper wakes the flush worker the only way the engine offers: a memtable rotation, each
//! of which queues a task and grants one wake. When the sealed journals pass [`NUDGE_AT`] of
//! their limit, and once right after opening a store that recovered sealed journals, it rotates
//! every partition that holds unflushed data; if that was not enough a round later, it also
//! rotates the idle ones, through a tombstone of a key no read ever asks for ([`MARKER`]), so
//! that every partition flushes a segment newer than every sealed journal. At most every
//! [`NUDGE_EVERY`]; each round drains at least as many queued tasks as it adds.
//!
//! It also measures stalls: a commit that has not returned after [`STALL_AFTER`] is a stall;
//! it is logged once with its reason when it starts and once with its length when it ends, and
//! counted ([`StallReport`]), and the node's `/readyz` fails while one lasts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjall::AbstractTree as _;

use super::Parts;

/// A commit still running after this long is a write stall.
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// Sealed journals above this fraction of their limit: get them released (the engine's own
/// monitor starts at the same fraction, one partition per 250 ms).
pub const NUDGE_AT: f64 = 0.5;
/// How often the keeper looks.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two nudges (flushes take a moment to release the journals).
const NUDGE_EVERY: Duration = Duration::from_secs(2);
/// Bytes the engine preallocates for its active journal (fjall's `PRE_ALLOCATED_BYTES`): the
/// engine halts on the size of its *sealed* journals, which it does not report apart.
const ACTIVE_JOURNAL: u64 = 32 << 20;
/// The smallest journal limit the engine accepts.
pub const MIN_JOURNAL_LIMIT: u64 = 24 << 20;
/// The key whose tombstone moves a partition's persisted sequence number forward. 33 bytes of
/// 0xff: longer than every key the store writes of a blob ID, and after all of them in order.
pub const MARKER: [u8; 33] = [0xff; 33];

/// Sizes the engine works with (the defaults suit a node; tests make them small to reach the
/// journal limit quickly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineTuning {
    /// Sealed journals kept on disk before the engine halts writes (fjall
    /// `max_journaling_size`, at least [`MIN_JOURNAL_LIMIT`]).
    pub max_journal_bytes: u64,
    /// Memtables of all partitions together (fjall `max_write_buffer_size`).
    pub max_write_buffer_bytes: u64,
    /// One partition's memtable before it is flushed.
    pub max_memtable_bytes: u32,
    /// Whether the keeper gets journals released (switched off only to show the halt).
    pub release_pinned_journals: bool,
    /// Engine flush threads; 0 never flushes (tests: leaves sealed memtables for the next open
    /// to recover).
    pub flush_workers: usize,
    /// TEST ONLY: while this file exists the writer holds its commit, as the engine does when
    /// it halts writes (a halt cannot be produced on demand otherwise).
    pub stall_file: Option<std::path::PathBuf>,
}

impl Default for EngineTuning {
    fn default() -> Self {
        Self {
            max_journal_bytes: 256 << 20,
            max_write_buffer_bytes: 64 << 20,
            max_memtable_bytes: 16 << 20,
            release_pinned_journals: true,
            flush_workers: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            stall_file: None,
        }
    }
}

/// What the writer tells the keeper: when the commit in flight began.
#[derive(Debug, Default)]
pub(super) struct CommitClock {
    /// Milliseconds since `origin` + 1 when a commit began; 0 while none runs.
    started: AtomicU64,
    origin: OnceInstant,
}

#[derive(Debug)]
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl CommitClock {
    pub fn begin(&self) {
        let ms = self.origin.0.elapsed().as_millis() as u64 + 1;
        self.started.store(ms, Ordering::Release);
    }
    pub fn end(&self) {
        self.started.store(0, Ordering::Release);
    }
    /// How long the commit in flight has been running.
    fn running_for(&self) -> Option<Duration> {
        let s = self.started.load(Ordering::Acquire);
        (s != 0).then(|| {
            let now = self.origin.0.elapsed().as_millis() as u64 + 1;
            Duration::from_millis(now.saturating_sub(s))
        })
    }
}

/// The store's write health, for metrics, `/readyz` and logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StallReport {
    /// The stall going on now: how long, and why.
    pub current: Option<(Duration, String)>,
    /// Stalls that began since the store opened.
    pub stalls: u64,
    /// Their total and longest length (a running stall included).
    pub total: Duration,
    pub longest: Duration,
    /// Times the keeper flushed every partition to release journals.
    pub journal_releases: u64,
    /// Bytes of the engine's sealed journals now (the active one's 32 MiB preallocation not
    /// counted), their files (the active one included) and the limit.
    pub journal_bytes: u64,
    pub journals: usize,
    pub journal_limit: u64,
}

#[derive(Debug, Default)]
struct Tally {
    current: Option<(Instant, String)>,
    stalls: u64,
    total: Duration,
    longest: Duration,
    releases: u64,
}

pub(super) struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    tally: Arc<Mutex<Tally>>,
    parts: Arc<Parts>,
    tuning: EngineTuning,
}

impl Keeper {
    pub fn start(
        parts: Arc<Parts>,
        clock: Arc<CommitClock>,
        tuning: EngineTuning,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let thread = {
            let (stop, tally, parts) = (stop.clone(), tally.clone(), parts.clone());
            let tuning = tuning.clone();
            std::thread::Builder::new()
                .name("floe-store-keeper".into())
                .spawn(move || {
                    let mut last_nudge: Option<Instant> = None;
                    let mut over_since: Option<Instant> = None;
                    // sealed journals recovered at open: their flush tasks may wait for a wake
                    // that never comes
                    let mut recovery_rounds = if parts.keyspace.journal_count() > 1 {
                        RECOVERY_ROUNDS
                    } else {
                        0
                    };
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        let journal = sealed_journal_bytes(&parts);
                        let over = journal as f64 > tuning.max_journal_bytes as f64 * NUDGE_AT;
                        if !over && recovery_rounds == 0 {
                            over_since = None;
                        }
                        if (over || recovery_rounds > 0)
                            && tuning.release_pinned_journals
                            && last_nudge.is_none_or(|t| t.elapsed() >= NUDGE_EVERY)
                        {
                            recovery_rounds = if parts.keyspace.journal_count() > 1 {
                                recovery_rounds.saturating_sub(1)
                            } else {
                                0
                            };
                            // a flush of every partition holding data releases what the engine
                            // would release partition by partition; still over a round later,
                            // something idle pins them: mark the idle partitions too
                            let since = *over_since.get_or_insert_with(Instant::now);
                            let pinned = since.elapsed() >= NUDGE_EVERY;
                            release_journals(&parts, journal, tuning.max_journal_bytes, pinned);
                            last_nudge = Some(Instant::now());
                            lock(&tally).releases += 1;
                        }
                        watch_commit(&parts, &clock, &tally, &tuning);
                    }
                })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            tally,
            parts,
            tuning,
        })
    }

    pub fn report(&self) -> StallReport {
        let t = lock(&self.tally);
        let running = t
            .current
            .as_ref()
            .map(|(s, why)| (s.elapsed(), why.clone()));
        let run = running.as_ref().map_or(Duration::ZERO, |(d, _)| *d);
        StallReport {
            stalls: t.stalls,
            total: t.total + run,
            longest: t.longest.max(run),
            current: running,
            journal_releases: t.releases,
            journal_bytes: sealed_journal_bytes(&self.parts),
            journals: self.parts.keyspace.journal_count(),
            journal_limit: self.tuning.max_journal_bytes,
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Flush every partition holding unflushed data at once (the engine flushes one per 250 ms,
/// and every flush seals another journal it counts at 32 MiB); with `pinned`, also every idle
/// partition, through a tombstone of [`MARKER`] (see the module's doc).
fn release_journals(parts: &Parts, journal: u64, limit: u64, pinned: bool) {
    tracing::debug!(
        journal_bytes = journal,
        limit,
        pinned,
        "journals near their limit: flushing the partitions that hold them"
    );
    for p in parts.all() {
        if p.tree.active_memtable_size() == 0 {
            if !pinned {
                continue;
            }
            if let Err(e) = p.remove(MARKER) {
                tracing::warn!(partition = %p.name, error = %e, "could not mark a partition for flushing");
                continue;
            }
        }
        if let Err(e) = p.rotate_memtable() {
            tracing::warn!(partition = %p.name, error = %e, "could not flush a partition");
        }
    }
}

/// Rounds of rotations after an open that recovered sealed journals.
const RECOVERY_ROUNDS: u32 = 10;

/// Start, follow and end the record of a stall of the commit in flight.
fn watch_commit(parts: &Parts, clock: &CommitClock, tally: &Mutex<Tally>, tuning: &EngineTuning) {
    let running = clock.running_for().filter(|d| *d >= STALL_AFTER);
    let mut t = lock(tally);
    match (running, t.current.is_some()) {
        (Some(d), false) => {
            let why = stall_reason(parts, tuning, d);
            tracing::warn!(reason = %why, partitions = %partition_states(parts), "store writes stalled");
            t.current = Some((Instant::now() - d, why));
            t.stalls += 1;
        }
        (None, true) => {
            if let Some((since, why)) = t.current.take() {
                let d = since.elapsed();
                t.total += d;
                t.longest = t.longest.max(d);
                tracing::warn!(
                    seconds = d.as_secs_f64(),
                    reason = %why,
                    "store writes resumed after a stall"
                );
            }
        }
        _ => {}
    }
}

/// Each partition's memtable and flushed sequence numbers: which one holds a journal back.
fn partition_states(parts: &Parts) -> String {
    parts
        .all()
        .iter()
        .map(|p| {
            format!(
                "{}: memtable {} B, memtable seqno {:?}, flushed seqno {:?}, {} segments",
                p.name,
                p.tree.active_memtable_size(),
                p.tree.get_highest_memtable_seqno(),
                p.tree.get_highest_persisted_seqno(),
                p.segment_count()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Bytes of sealed journals (what the engine's halt looks at), estimated from the total: the
/// active journal counts as its preallocation, so a grown active journal makes this larger.
fn sealed_journal_bytes(parts: &Parts) -> u64 {
    parts
        .keyspace
        .journal_disk_space()
        .saturating_sub(ACTIVE_JOURNAL)
}

fn stall_reason(parts: &Parts, tuning: &EngineTuning, running: Duration) -> String {
    let journal = sealed_journal_bytes(parts);
    if journal > tuning.max_journal_bytes {
        return format!(
            "the engine halts writes: its {} journals hold {} MiB, over the {} MiB limit, \
             until older ones are flushed",
            parts.keyspace.journal_count(),
            journal >> 20,
            tuning.max_journal_bytes >> 20
        );
    }
    let buffer = parts.keyspace.write_buffer_size();
    if buffer >= tuning.max_write_buffer_bytes {
        return format!(
            "the engine halts writes: memtables hold {} MiB, the {} MiB write buffer is full",
            buffer >> 20,
            tuning.max_write_buffer_bytes >> 20
        );
    }
    format!(
        "a commit (journal fsync) has taken {:.1} s: the disk is slow or failing",
        running.as_secs_f64()
    )
}
