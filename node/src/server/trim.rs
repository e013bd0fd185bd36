//! Give freed heap memory back to the system after bursts.
//!
//! glibc's malloc keeps what a burst freed in its arenas (a node that parked 250 connections ×
//! 32 request bodies stayed at ~1.07 GiB RSS after every connection closed): the memory was
//! reused, not leaked, but the node looked as large as its worst minute. `malloc_trim(0)`
//! returns the free pages of every arena. It runs shortly after the open connections fell by
//! [`BURST`] from their peak, and every [`EVERY`] in any case (large slivers freed on few
//! connections). Other allocators (musl) return memory themselves; there it does nothing.

use std::time::Duration;

use tokio::sync::watch;

/// A fall in open connections that counts as the end of a burst.
const BURST: i64 = 8;
/// How often the connection count is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Trim at least this often.
const EVERY: Duration = Duration::from_secs(10);

pub async fn run(connections: prometheus::IntGauge, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = connections.get();
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = connections.get();
        peak = peak.max(now);
        if peak - now >= BURST || last.elapsed() >= EVERY {
            let started = std::time::Instant::now();
            // the trim walks the arenas: keep it off the async workers
            let _ = tokio::task::spawn_blocking(trim).await;
            tracing::debug!(took = ?started.elapsed(), connections = now, peak, "heap trimmed");
            peak = now;
            last = tokio::time::Instant::now();
        }
    }
}

/// Return free heap pages to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only touches the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
