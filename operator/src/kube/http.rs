//! The operator's own HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (the StorageCluster CRD is installed and the controller runs; 503 before,
//! so a missing CRD shows as an unready pod, not a crash loop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Reconcile metrics, labelled by cluster (`namespace/name`).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Each cluster's control-plane metrics (`floe_control_*{cluster=…}`), merged on render.
    clusters: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Registry>>>,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "floe_operator_reconciles_total",
                "Reconciles per StorageCluster",
            ),
            &["cluster"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "floe_operator_reconcile_errors_total",
                "Failed reconciles per StorageCluster and error category",
            ),
            &["cluster", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "floe_operator_reconcile_duration_seconds",
                "Reconcile latency per StorageCluster",
            )
            .buckets(vec![
                0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["cluster"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        // process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, …
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            clusters: Default::default(),
            reconciles,
            errors,
            duration,
        })
    }

    pub fn observe_reconcile(&self, cluster: &str, took: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[cluster]).inc();
        self.duration
            .with_label_values(&[cluster])
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors.with_label_values(&[cluster, e]).inc();
        }
    }

    /// Serve a cluster's control-plane metrics (replacing any earlier registry of it).
    pub fn add_cluster(&self, cluster: &str, registry: Registry) {
        if let Ok(mut c) = self.clusters.lock() {
            c.insert(cluster.to_string(), registry);
        }
    }

    pub fn remove_cluster(&self, cluster: &str) {
        if let Ok(mut c) = self.clusters.lock() {
            c.remove(cluster);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // one family per name: the clusters' series are merged into the families they share
        let mut families: std::collections::BTreeMap<String, prometheus::proto::MetricFamily> =
            std::collections::BTreeMap::new();
        let regs: Vec<Registry> = self
            .clusters
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for fam in std::iter::once(self.registry.gather())
            .chain(regs.iter().map(Registry::gather))
            .flatten()
        {
            match families.get_mut(fam.name()) {
                Some(f) => {
                    let mut fam = fam;
                    f.mut_metric().extend(fam.take_metric());
                }
                None => {
                    families.insert(fam.name().to_string(), fam);
                }
            }
        }
        let families: Vec<_> = families.into_values().collect();
        // encoding into a Vec cannot fail on I/O; a metric family error would be a bug here
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn ready(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the StorageCluster CRD (kubectl apply -f crds/)\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_labelled_by_cluster_and_error() {
        let m = Metrics::new().expect("metrics");
        m.observe_reconcile("ns/a", Duration::from_millis(20), None);
        m.observe_reconcile("ns/a", Duration::from_millis(20), Some("kube"));
        let text = m.render();
        assert!(
            text.contains("floe_operator_reconciles_total{cluster=\"ns/a\"} 2"),
            "{text}"
        );
        assert!(text
            .contains("floe_operator_reconcile_errors_total{cluster=\"ns/a\",error=\"kube\"} 1"));
        assert!(text.contains("floe_operator_reconcile_duration_seconds_count{cluster=\"ns/a\"} 2"));
    }
}
