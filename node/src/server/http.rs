//! `/metrics`, `/healthz` (alive) and `/readyz` (committee known and store writes not stalled).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::state::NodeState;

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<NodeState>>) -> String {
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || st.refresh_gauges()).await;
    state.metrics.render()
}

async fn ready(State(state): State<Arc<NodeState>>) -> (StatusCode, String) {
    // a node whose store cannot write takes no new blobs: out of the Services until it can
    if let Some((d, why)) = state.store.stall_report().current {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: store writes stalled for {:.0} s: {why}\n",
                d.as_secs_f64()
            ),
        );
    }
    match state.committee() {
        Some(c) => (StatusCode::OK, format!("ready: epoch {}\n", c.epoch)),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no committee yet\n".to_string(),
        ),
    }
}
