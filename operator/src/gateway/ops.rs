//! What operators and tools ask of the gateway: `/status`, `/healthz`, `/readyz`, `/metrics`
//! and the OpenAPI document at `/v1/api`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::OpenApi;

use super::api::{ApiDoc, GatewayStatus};
use super::Shared;

/// The gateway and the committee it serves.
#[utoipa::path(get, path = "/status", responses((status = 200, body = GatewayStatus)))]
pub async fn status(State(gw): State<Shared>) -> Json<GatewayStatus> {
    let c = gw.client.get().map(|c| c.committee());
    Json(GatewayStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        connected: c.is_some(),
        epoch: c.as_ref().map(|c| c.epoch),
        n_shards: c.as_ref().map(|c| c.n_shards),
        members: c.as_ref().map(|c| c.members.len()),
        max_blob_size: c.as_ref().map(|c| c.params().max_blob_size()),
        max_body_size: gw.limits.max_body,
        publisher_auth: gw.auth.is_some(),
        publisher_account: gw.publisher.as_ref().map(|p| p.account().to_string()),
        control: gw
            .publisher
            .as_ref()
            .map(|p| p.control_address().to_string()),
        sells_storage: c.as_ref().map(|c| c.economics.is_some()),
    })
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the committee is known, so reads and writes can be served.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "the storage nodes were not reached yet"),
))]
pub async fn readyz(State(gw): State<Shared>) -> Response {
    match gw.client.get() {
        Some(_) => "ready".into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the storage nodes were not reached yet",
        )
            .into_response(),
    }
}

/// Prometheus metrics (`floe_gateway_*`).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "text exposition format")))]
pub async fn metrics(State(gw): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

/// This API as an OpenAPI 3.1 document, generated from the handlers.
#[utoipa::path(get, path = "/v1/api", responses((status = 200, description = "OpenAPI document")))]
pub async fn api_doc() -> Response {
    match ApiDoc::openapi().to_pretty_json() {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => super::error::ApiError::internal(e.to_string()).into_response(),
    }
}
