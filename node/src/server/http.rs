//! `/metrics`, `/healthz` (alive) and `/readyz` (store open and committee known).

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
    match state.committee() {
        Some(c) => (StatusCode::OK, format!("ready: epoch {}\n", c.epoch)),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no committee yet\n".to_string(),
        ),
    }
}
