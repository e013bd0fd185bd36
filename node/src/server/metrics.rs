//! The node's Prometheus metrics (all prefixed `floe_node_`).

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub stored_bytes: IntGauge,
    pub blobs: IntGauge,
    pub shard_slivers: GaugeVec,
    pub epoch: IntGauge,
    pub recovery_backlog: IntGauge,
    pub recovered: IntCounter,
    pub recovery_failures: IntCounter,
    pub corrupt_detected: IntCounter,
    pub challenges: IntCounterVec,
    /// Stored bytes read to answer challenges (symbols and index nodes, or whole slivers).
    pub challenge_bytes_read: IntCounter,
    /// Time spent verifying and persisting slivers (where a write's time goes on the node).
    pub sliver_stage: HistogramVec,
    pub sync_shards_pending: IntGauge,
    pub synced_blobs: IntCounter,
    /// Helper slivers expanded to answer `GetRecoverySymbols` (what helping peers costs).
    pub recovery_expansions: IntCounter,
    pub synced_slivers: IntCounter,
    pub sync_fallbacks: IntCounter,
    /// Sliver and symbol bytes received from peers, by purpose (sync, recovery): what an epoch
    /// change or a recovery costs the network.
    pub peer_bytes: IntCounterVec,
    /// Certificates from peers not stored, by reason (unverifiable, held_full, bad_page).
    pub certificates_refused: IntCounterVec,
    /// Certificates of unknown epochs held until their committee arrives.
    pub certificates_held: IntGauge,
    /// Requests and connections refused or cut, by reason (overloaded, timeout, too_large,
    /// connections).
    pub refused: IntCounterVec,
    /// Connections the node closed itself, by reason (no_request, idle_at_cap).
    pub evicted: IntCounterVec,
    /// Open client connections (gRPC public and admin listeners).
    pub connections: IntGauge,
    pub up: Gauge,
    /// Blobs never certified deleted after their grace period.
    pub gc_blobs: IntCounter,
    /// Slivers of shards no longer owned dropped after the one-epoch grace.
    pub gc_slivers: IntCounter,
    pub gc_bytes: IntCounterVec,
    /// Blobs collected because their lifetime ended, by reason (expired, deleted).
    pub gc_lifetimes: IntCounterVec,
    /// Lifetimes received, by outcome (applied, older, refused).
    pub lifetimes: IntCounterVec,
    pub uncertified_bytes: IntGauge,
    pub store: StoreMetrics,
}

/// The store's write health (refreshed from `BlobStore::stall_report` on scrape).
pub struct StoreMetrics {
    pub stalled: IntGauge,
    pub stall_seconds: Gauge,
    pub stalls: IntCounter,
    pub stall_seconds_total: prometheus::Counter,
    pub longest_stall: Gauge,
    pub journal_bytes: IntGauge,
    pub journals: IntGauge,
    pub journal_limit: IntGauge,
    pub journal_releases: IntCounter,
}

impl StoreMetrics {
    fn new() -> Self {
        let g = |n: &str, h: &str| Gauge::new(n, h).expect("metric");
        let i = |n: &str, h: &str| IntGauge::new(n, h).expect("metric");
        let c = |n: &str, h: &str| IntCounter::new(n, h).expect("metric");
        Self {
            stalled: i(
                "floe_node_store_write_stalled",
                "1 while a store commit has been running for over two seconds (writes halted)",
            ),
            stall_seconds: g(
                "floe_node_store_write_stall_seconds",
                "Length of the store write stall going on now (0 when none)",
            ),
            stalls: c(
                "floe_node_store_write_stalls_total",
                "Store write stalls since the node started",
            ),
            stall_seconds_total: prometheus::Counter::new(
                "floe_node_store_write_stall_seconds_total",
                "Time store writes spent stalled since the node started",
            )
            .expect("metric"),
            longest_stall: g(
                "floe_node_store_write_stall_longest_seconds",
                "Longest store write stall since the node started",
            ),
            journal_bytes: i(
                "floe_node_store_journal_bytes",
                "Bytes of the storage engine's journals on disk",
            ),
            journals: i(
                "floe_node_store_journals",
                "Journal files of the storage engine (the active one included)",
            ),
            journal_limit: i(
                "floe_node_store_journal_limit_bytes",
                "Journal bytes above which the storage engine halts writes",
            ),
            journal_releases: c(
                "floe_node_store_journal_releases_total",
                "Times the store flushed every partition to release journals near their limit",
            ),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.stalled.clone()),
            Box::new(self.stall_seconds.clone()),
            Box::new(self.stalls.clone()),
            Box::new(self.stall_seconds_total.clone()),
            Box::new(self.longest_stall.clone()),
            Box::new(self.journal_bytes.clone()),
            Box::new(self.journals.clone()),
            Box::new(self.journal_limit.clone()),
            Box::new(self.journal_releases.clone()),
        ]
    }

    /// Bring the metrics up to `r` (counters only ever move forward).
    pub fn set(&self, r: &crate::store::StallReport) {
        let current = r.current.as_ref().map_or(0.0, |(d, _)| d.as_secs_f64());
        self.stalled.set(i64::from(r.current.is_some()));
        self.stall_seconds.set(current);
        self.stalls
            .inc_by(r.stalls.saturating_sub(self.stalls.get()));
        let total = r.total.as_secs_f64();
        if total > self.stall_seconds_total.get() {
            self.stall_seconds_total
                .inc_by(total - self.stall_seconds_total.get());
        }
        self.longest_stall.set(r.longest.as_secs_f64());
        self.journal_bytes.set(r.journal_bytes as i64);
        self.journals.set(r.journals as i64);
        self.journal_limit.set(r.journal_limit as i64);
        self.journal_releases.inc_by(
            r.journal_releases
                .saturating_sub(self.journal_releases.get()),
        );
    }
}

impl Metrics {
    /// Count `bytes` received from peers for `purpose` (`sync`, `recovery`).
    pub fn received_from_peers(&self, purpose: &str, bytes: usize) {
        self.peer_bytes
            .with_label_values(&[purpose])
            .inc_by(bytes as u64);
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "floe_node_grpc_requests_total",
                "gRPC requests by method and status code",
            ),
            &["method", "code"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "floe_node_grpc_request_duration_seconds",
                "gRPC request latency by method",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.5, 14).expect("buckets")),
            &["method"],
        )
        .expect("metric");
        let stored_bytes =
            IntGauge::new("floe_node_stored_bytes", "Bytes stored on disk").expect("metric");
        let blobs = IntGauge::new("floe_node_blobs", "Blobs known to the store").expect("metric");
        let shard_slivers = GaugeVec::new(
            Opts::new("floe_node_shard_slivers", "Slivers stored per owned shard"),
            &["shard"],
        )
        .expect("metric");
        let epoch =
            IntGauge::new("floe_node_epoch", "Current committee epoch (0: none)").expect("metric");
        let recovery_backlog = IntGauge::new(
            "floe_node_recovery_backlog",
            "Slivers of certified blobs this node owns but lacks",
        )
        .expect("metric");
        let recovered = IntCounter::new(
            "floe_node_recovered_slivers_total",
            "Slivers rebuilt by recovery",
        )
        .expect("metric");
        let recovery_failures = IntCounter::new(
            "floe_node_recovery_failures_total",
            "Recovery attempts that failed",
        )
        .expect("metric");
        let corrupt_detected = IntCounter::new(
            "floe_node_corrupt_slivers_total",
            "Corrupt sliver files detected and dropped",
        )
        .expect("metric");
        let challenges = IntCounterVec::new(
            Opts::new(
                "floe_node_challenges_answered_total",
                "Challenge items answered, by result",
            ),
            &["result"],
        )
        .expect("metric");
        let challenge_bytes_read = IntCounter::new(
            "floe_node_challenge_read_bytes_total",
            "Stored bytes read to answer challenges: a symbol and its proof path per item of a large sliver with an index, the whole sliver otherwise",
        )
        .expect("metric");
        let sliver_stage = HistogramVec::new(
            HistogramOpts::new(
                "floe_node_sliver_stage_seconds",
                "Time per received sliver, by stage (verify, persist)",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.5, 14).expect("buckets")),
            &["stage"],
        )
        .expect("metric");
        let sync_shards_pending = IntGauge::new(
            "floe_node_sync_shards_pending",
            "Shards gained at the last epoch change still being pulled from their previous owners",
        )
        .expect("metric");
        let recovery_expansions = IntCounter::new(
            "floe_node_recovery_expansions_total",
            "Helper slivers expanded to answer GetRecoverySymbols",
        )
        .expect("metric");
        let synced_blobs = IntCounter::new(
            "floe_node_synced_blobs_total",
            "Blobs of gained shards pulled from previous owners",
        )
        .expect("metric");
        let synced_slivers = IntCounter::new(
            "floe_node_synced_slivers_total",
            "Slivers of gained shards pulled and verified",
        )
        .expect("metric");
        let sync_fallbacks = IntCounter::new(
            "floe_node_sync_fallbacks_total",
            "Gained shards handed to recovery because their previous owner was gone, stalled or lied",
        )
        .expect("metric");
        let peer_bytes = IntCounterVec::new(
            Opts::new(
                "floe_node_peer_bytes_received_total",
                "Sliver and recovery-symbol bytes received from peers, by purpose",
            ),
            &["purpose"],
        )
        .expect("metric");
        for p in ["sync", "recovery"] {
            peer_bytes.with_label_values(&[p]);
        }
        let gc_blobs = IntCounter::new(
            "floe_node_gc_expired_blobs_total",
            "Blobs never certified deleted after the grace period",
        )
        .expect("metric");
        let gc_slivers = IntCounter::new(
            "floe_node_gc_unowned_slivers_total",
            "Slivers of shards no longer owned dropped after the one-epoch grace",
        )
        .expect("metric");
        let gc_bytes = IntCounterVec::new(
            Opts::new(
                "floe_node_gc_freed_bytes_total",
                "Bytes freed by garbage collection, by reason (uncertified, unowned)",
            ),
            &["reason"],
        )
        .expect("metric");
        for r in ["uncertified", "unowned", "expired", "deleted"] {
            gc_bytes.with_label_values(&[r]);
        }
        let gc_lifetimes = IntCounterVec::new(
            Opts::new(
                "floe_node_gc_lifetime_blobs_total",
                "Blobs collected because their lifetime ended, by reason (expired, deleted)",
            ),
            &["reason"],
        )
        .expect("metric");
        for r in ["expired", "deleted"] {
            gc_lifetimes.with_label_values(&[r]);
        }
        let lifetimes = IntCounterVec::new(
            Opts::new(
                "floe_node_lifetimes_total",
                "Signed blob lifetimes received, by outcome (applied, older, refused)",
            ),
            &["outcome"],
        )
        .expect("metric");
        for r in ["applied", "older", "refused"] {
            lifetimes.with_label_values(&[r]);
        }
        let uncertified_bytes = IntGauge::new(
            "floe_node_uncertified_bytes",
            "Bytes held by blobs not (yet) certified (bounded by --uncertified-quota)",
        )
        .expect("metric");
        let certificates_refused = IntCounterVec::new(
            Opts::new(
                "floe_node_certificates_refused_total",
                "Certificates reported by peers and not stored, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        for r in ["unverifiable", "held_full", "bad_page"] {
            certificates_refused.with_label_values(&[r]);
        }
        let certificates_held = IntGauge::new(
            "floe_node_certificates_held",
            "Certificates of epochs whose committee this node was not given yet, held",
        )
        .expect("metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "floe_node_refused_total",
                "Requests refused or cut and connections refused, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        for r in [
            "overloaded",
            "timeout",
            "too_large",
            "connections",
            "source_connections",
            "source_streams",
            "backoff",
        ] {
            refused.with_label_values(&[r]);
        }
        let evicted = IntCounterVec::new(
            Opts::new(
                "floe_node_evicted_connections_total",
                "Connections closed by the node: no request within the first-request deadline \
                 (no_request) or the oldest idle one when the listener was full (idle_at_cap)",
            ),
            &["reason"],
        )
        .expect("metric");
        for r in ["no_request", "idle_at_cap"] {
            evicted.with_label_values(&[r]);
        }
        let connections = IntGauge::new(
            "floe_node_connections",
            "Open gRPC connections (public and admin listeners)",
        )
        .expect("metric");
        let up = Gauge::with_opts(
            Opts::new("floe_node_build_info", "Build information")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("metric");
        up.set(1.0);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(stored_bytes.clone()),
            Box::new(blobs.clone()),
            Box::new(shard_slivers.clone()),
            Box::new(epoch.clone()),
            Box::new(recovery_backlog.clone()),
            Box::new(recovered.clone()),
            Box::new(recovery_failures.clone()),
            Box::new(corrupt_detected.clone()),
            Box::new(challenges.clone()),
            Box::new(challenge_bytes_read.clone()),
            Box::new(sliver_stage.clone()),
            Box::new(sync_shards_pending.clone()),
            Box::new(synced_blobs.clone()),
            Box::new(recovery_expansions.clone()),
            Box::new(synced_slivers.clone()),
            Box::new(peer_bytes.clone()),
            Box::new(sync_fallbacks.clone()),
            Box::new(certificates_refused.clone()),
            Box::new(certificates_held.clone()),
            Box::new(refused.clone()),
            Box::new(evicted.clone()),
            Box::new(connections.clone()),
            Box::new(up.clone()),
            Box::new(gc_blobs.clone()),
            Box::new(gc_slivers.clone()),
            Box::new(gc_bytes.clone()),
            Box::new(gc_lifetimes.clone()),
            Box::new(lifetimes.clone()),
            Box::new(uncertified_bytes.clone()),
            // process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, …
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("unique metric");
        }
        let store = StoreMetrics::new();
        for c in store.collectors() {
            registry.register(c).expect("unique metric");
        }
        Self {
            registry,
            requests,
            latency,
            stored_bytes,
            blobs,
            shard_slivers,
            epoch,
            recovery_backlog,
            recovered,
            recovery_failures,
            corrupt_detected,
            challenges,
            challenge_bytes_read,
            sliver_stage,
            sync_shards_pending,
            synced_blobs,
            recovery_expansions,
            synced_slivers,
            peer_bytes,
            sync_fallbacks,
            certificates_refused,
            certificates_held,
            refused,
            evicted,
            connections,
            up,
            gc_blobs,
            gc_slivers,
            gc_bytes,
            gc_lifetimes,
            lifetimes,
            uncertified_bytes,
            store,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
