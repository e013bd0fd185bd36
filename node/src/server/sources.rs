//! What one source address may hold of a listener's request capacity (docs/node.md, "Limits"):
//! streams in flight, a fair share of the storage slots, and a backoff after a stream of it was
//! cut for stalling.
//!
//! Storage slots are handed out fairly: a source takes a free slot at once while it holds fewer
//! than its share, or while more than `reserve` slots would stay free (so one client alone can
//! still use most of the pool). When a slot frees, it goes to the waiting source that holds the
//! fewest, not to the oldest waiter: 500 queued requests of one source do not delay another
//! source's first one. A stream cut for stalling puts its source in backoff (the body timeout,
//! doubling per strike up to [`BACKOFF_MAX`]): its storage requests are refused at once and its
//! waiting ones released, so re-opening a stalled stream at once gains nothing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Longest backoff of a source whose streams keep stalling.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A source without a strike for this long starts again from the first backoff.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Sources remembered at most; past it, those that hold nothing and are not backing off are
/// forgotten.
const MAX_REMEMBERED: usize = 4096;

/// The address per-source limits count under: IPv4 as it is, IPv6 by its /64 (one host
/// usually holds a whole /64), an IPv4-mapped IPv6 address as the IPv4 one.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The per-source bounds.
#[derive(Debug, Clone, Copy)]
pub struct SourcePolicy {
    /// Requests in flight (or waiting for a slot) from one source, all classes.
    pub streams: usize,
    /// Storage slots in all.
    pub slots: usize,
    /// Storage slots a source may always take when free.
    pub share: usize,
    /// Slots kept free for sources below their share.
    pub reserve: usize,
    /// First backoff after a stalled stream (doubles per strike).
    pub backoff: Duration,
}

impl SourcePolicy {
    /// Share ¼ of the slots, keep ⅛ in reserve (at least one each).
    pub fn new(streams: usize, slots: usize, backoff: Duration) -> Self {
        let slots = slots.max(1);
        Self {
            streams: streams.max(1),
            slots,
            share: slots.div_ceil(4),
            reserve: (slots / 8).max(1).min(slots - 1),
            backoff,
        }
    }
}

/// Why a request of a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many requests in flight from this address")]
    Streams,
    #[error("backing off for {0:?}: a request from this address stalled")]
    Backoff(Duration),
}

impl Refusal {
    /// Label of `floe_node_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Streams => "source_streams",
            Refusal::Backoff(_) => "backoff",
        }
    }
}

#[derive(Default)]
struct Source {
    streams: usize,
    held: usize,
    /// Requests waiting for a storage slot: (arrival, grant (true) or refusal (false)).
    waiters: VecDeque<(u64, oneshot::Sender<bool>)>,
    strikes: u32,
    last_strike: Option<Instant>,
    until: Option<Instant>,
}

impl Source {
    fn backoff_left(&self, now: Instant) -> Option<Duration> {
        self.until.filter(|u| *u > now).map(|u| u - now)
    }
    /// Holds nothing and no longer backs off (its strikes may be forgotten early).
    fn unused_or_expired(&self, now: Instant) -> bool {
        self.streams == 0
            && self.held == 0
            && self.waiters.is_empty()
            && self.backoff_left(now).is_none()
    }
    fn unused(&self, now: Instant) -> bool {
        self.streams == 0
            && self.held == 0
            && self.waiters.is_empty()
            && self
                .last_strike
                .is_none_or(|t| now.duration_since(t) > FORGET_AFTER)
    }
}

struct State {
    free: usize,
    arrivals: u64,
    sources: HashMap<IpAddr, Source>,
}

/// The per-source table of one node (shared by its listeners).
pub struct Sources {
    policy: SourcePolicy,
    state: Mutex<State>,
}

impl Sources {
    pub fn new(policy: SourcePolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            state: Mutex::new(State {
                free: policy.slots,
                arrivals: 0,
                sources: HashMap::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // every mutation below is complete before anything can panic
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request from `ip` starts: refused when the source has too many in flight.
    pub fn open_stream(self: &Arc<Self>, ip: IpAddr) -> Result<StreamGuard, Refusal> {
        let mut st = self.state();
        let s = st.sources.entry(ip).or_default();
        if s.streams >= self.policy.streams {
            return Err(Refusal::Streams);
        }
        s.streams += 1;
        Ok(StreamGuard {
            sources: self.clone(),
            ip,
        })
    }

    fn close_stream(&self, ip: IpAddr) {
        let mut guard = self.state();
        let st = &mut *guard;
        let now = Instant::now();
        if let Some(s) = st.sources.get_mut(&ip) {
            s.streams = s.streams.saturating_sub(1);
            if s.unused(now) {
                st.sources.remove(&ip);
            }
        }
    }

    /// A storage slot for `ip`: at once if the fairness rule allows, else when one frees and
    /// this source is the neediest waiter. Refused while the source backs off.
    pub async fn storage_slot(self: &Arc<Self>, ip: IpAddr) -> Result<SlotPermit, Refusal> {
        let rx = {
            let mut guard = self.state();
            let st = &mut *guard;
            let free = st.free;
            st.arrivals += 1;
            let arrival = st.arrivals;
            let now = Instant::now();
            let s = st.sources.entry(ip).or_default();
            if let Some(left) = s.backoff_left(now) {
                return Err(Refusal::Backoff(left));
            }
            if free > 0 && (s.held < self.policy.share || free > self.policy.reserve) {
                s.held += 1;
                st.free -= 1;
                return Ok(SlotPermit {
                    sources: self.clone(),
                    ip,
                });
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push_back((arrival, tx));
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            sources: self.clone(),
            ip,
        };
        let granted = match waiting.rx.as_mut() {
            Some(rx) => rx.await.unwrap_or(false),
            None => false,
        };
        waiting.rx = None;
        if granted {
            Ok(SlotPermit {
                sources: self.clone(),
                ip,
            })
        } else {
            let left = self
                .state()
                .sources
                .get(&ip)
                .and_then(|s| s.backoff_left(Instant::now()));
            Err(Refusal::Backoff(left.unwrap_or_default()))
        }
    }

    fn release_slot(&self, ip: IpAddr) {
        let mut guard = self.state();
        let st = &mut *guard;
        st.free += 1;
        if let Some(s) = st.sources.get_mut(&ip) {
            s.held = s.held.saturating_sub(1);
        }
        self.dispatch(st);
    }

    /// Give free slots to waiting sources, the one holding fewest first (then the earliest).
    fn dispatch(&self, st: &mut State) {
        while st.free > 0 {
            let free = st.free;
            let pick = st
                .sources
                .iter()
                .filter(|(_, s)| {
                    s.until.is_none_or(|u| u <= Instant::now())
                        && (s.held < self.policy.share || free > self.policy.reserve)
                })
                .filter_map(|(ip, s)| s.waiters.front().map(|(a, _)| ((s.held, *a), *ip)))
                .min();
            let Some((_, ip)) = pick else { return };
            let Some(s) = st.sources.get_mut(&ip) else {
                return;
            };
            let Some((_, tx)) = s.waiters.pop_front() else {
                return;
            };
            // a waiter that gave up (timed out) is skipped
            if tx.send(true).is_ok() {
                s.held += 1;
                st.free -= 1;
            }
        }
    }

    /// A storage stream of `ip` was cut for stalling: back off, and refuse its waiters.
    /// Returns the backoff.
    pub fn strike(&self, ip: IpAddr) -> Duration {
        let mut st = self.state();
        let now = Instant::now();
        if st.sources.len() > MAX_REMEMBERED {
            st.sources.retain(|_, s| !s.unused_or_expired(now));
        }
        let s = st.sources.entry(ip).or_default();
        if s.last_strike
            .is_some_and(|t| now.duration_since(t) > FORGET_AFTER)
        {
            s.strikes = 0;
        }
        s.strikes = s.strikes.saturating_add(1);
        s.last_strike = Some(now);
        let backoff = self
            .policy
            .backoff
            .saturating_mul(1 << (s.strikes - 1).min(16))
            .min(BACKOFF_MAX);
        s.until = Some(now + backoff);
        for (_, tx) in s.waiters.drain(..) {
            let _ = tx.send(false);
        }
        backoff
    }

    /// Storage slots free now (for tests).
    pub fn free_slots(&self) -> usize {
        self.state().free
    }
}

/// A request in flight from a source.
pub struct StreamGuard {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.sources.close_stream(self.ip);
    }
}

/// A storage slot held by a source.
pub struct SlotPermit {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.sources.release_slot(self.ip);
    }
}

/// A request waiting for a slot; if it gives up after the slot was granted, the slot goes
/// back.
struct Waiting {
    rx: Option<oneshot::Receiver<bool>>,
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(true) = rx.try_recv() {
                self.sources.release_slot(self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test]
    async fn one_source_cannot_take_the_reserve_nor_jump_the_queue() {
        // 16 slots: share 4, reserve 2
        let s = Sources::new(SourcePolicy::new(1000, 16, Duration::from_secs(1)));
        let attacker = ip(2);
        let mut held = Vec::new();
        for _ in 0..14 {
            held.push(s.storage_slot(attacker).await.unwrap());
        }
        assert_eq!(s.free_slots(), 2);
        // the attacker's next requests wait
        let queued: Vec<_> = (0..50)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.storage_slot(attacker).await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        // another source gets a reserved slot at once, twice
        let a = s.storage_slot(ip(1)).await.unwrap();
        let b = s.storage_slot(ip(1)).await.unwrap();
        assert_eq!(s.free_slots(), 0);
        // a third request of that source waits, and gets the next freed slot before the
        // attacker's 50 earlier waiters
        let honest = {
            let s = s.clone();
            tokio::spawn(async move { s.storage_slot(ip(1)).await })
        };
        while s
            .state()
            .sources
            .get(&ip(1))
            .is_none_or(|x| x.waiters.is_empty())
        {
            tokio::task::yield_now().await;
        }
        drop(held.pop());
        let c = honest.await.unwrap().unwrap();
        drop((a, b, c));
        // a stall: the attacker's waiters are refused and it backs off
        assert_eq!(s.strike(attacker), Duration::from_secs(1));
        for q in queued {
            let r = q.await.unwrap();
            assert!(matches!(r, Ok(()) | Err(Refusal::Backoff(_))), "{r:?}");
        }
        assert!(matches!(
            s.storage_slot(attacker).await,
            Err(Refusal::Backoff(_))
        ));
        assert_eq!(s.strike(attacker), Duration::from_secs(2), "doubles");
        drop(held);
        assert_eq!(s.free_slots(), 16, "every slot came back");
    }

    #[test]
    fn ipv6_sources_count_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_of(mapped), IpAddr::from([10, 1, 2, 3]));
        assert_eq!(source_of(ip(7)), ip(7));
    }

    #[tokio::test]
    async fn streams_per_source_are_capped_and_sources_forgotten_when_done() {
        let s = Sources::new(SourcePolicy::new(2, 4, Duration::from_secs(1)));
        let a = s.open_stream(ip(2)).unwrap();
        let _b = s.open_stream(ip(2)).unwrap();
        assert_eq!(s.open_stream(ip(2)).err(), Some(Refusal::Streams));
        let _c = s.open_stream(ip(3)).unwrap();
        drop(a);
        let _d = s.open_stream(ip(2)).unwrap();
        drop((_b, _c, _d));
        assert!(s.state().sources.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_after_its_grant_returns_the_slot() {
        let s = Sources::new(SourcePolicy::new(100, 2, Duration::from_secs(1)));
        let first = s.storage_slot(ip(2)).await.unwrap();
        let second = s.storage_slot(ip(3)).await.unwrap();
        let w = tokio::time::timeout(Duration::from_millis(20), s.storage_slot(ip(4))).await;
        assert!(w.is_err(), "no free slot");
        drop((first, second));
        assert_eq!(s.free_slots(), 2);
    }
}
