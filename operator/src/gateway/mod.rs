//! `floe-gateway`: Walrus's HTTP publisher and aggregator API over the Floe client library
//! (docs/gateway.md).
//!
//! [`range`] decides `Range` headers and [`api`] holds the JSON shapes and the OpenAPI document,
//! both free of I/O; [`body`] receives uploads with bounded memory; [`blobs`], [`quilts`] and
//! [`ops`] are the handlers; [`auth`], [`metrics`] and [`error`] are what every handler shares.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod body;
pub mod error;
pub mod metrics;
pub mod ops;
pub mod publisher;
pub mod quilts;
pub mod range;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use floe_node::client::BlobClient;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::error::ApiError;
use self::metrics::Metrics;

/// What the gateway is allowed to do and how much.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 above it).
    pub max_body: u64,
    /// Bodies up to this size are held in memory; larger ones are spooled to `spool_dir`.
    pub in_memory: u64,
    /// Requests served at once (429 above it).
    pub max_concurrent: usize,
    /// Time to produce a response head (504 after it).
    pub request_timeout: Duration,
    /// Longest pause between body bytes of an upload (408 after it).
    pub body_idle: Duration,
    /// Rows of a blob fetched ahead of the one being sent.
    pub read_window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1 << 30,
            in_memory: 16 << 20,
            max_concurrent: 256,
            request_timeout: Duration::from_secs(300),
            body_idle: Duration::from_secs(30),
            read_window: 8,
        }
    }
}

/// Everything the handlers share.
pub struct Gateway {
    /// Set once the committee was learned (the gateway serves `/healthz` before).
    pub client: OnceLock<Arc<BlobClient>>,
    pub limits: Limits,
    pub spool_dir: PathBuf,
    /// `None`: the publisher is open to anyone who can reach it.
    pub auth: Option<auth::Auth>,
    /// Origins allowed by CORS; empty: any.
    pub cors_origins: Vec<String>,
    /// The account that pays for storage; `None`: the gateway writes only to networks that
    /// sell none.
    pub publisher: Option<Arc<publisher::Publisher>>,
    pub metrics: Metrics,
    slots: Arc<Semaphore>,
}

pub type Shared = Arc<Gateway>;

impl Gateway {
    pub fn new(
        limits: Limits,
        spool_dir: PathBuf,
        auth: Option<auth::Auth>,
        cors_origins: Vec<String>,
        publisher: Option<Arc<publisher::Publisher>>,
        metrics: Metrics,
    ) -> Shared {
        Arc::new(Self {
            client: OnceLock::new(),
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            limits,
            spool_dir,
            auth,
            cors_origins,
            publisher,
            metrics,
        })
    }

    /// The client, or 503 while the committee is not known yet.
    pub fn client(&self) -> Result<Arc<BlobClient>, ApiError> {
        self.client.get().cloned().ok_or_else(|| {
            ApiError::unavailable("the gateway has not reached the storage nodes yet")
        })
    }
}

/// Every route, with CORS, limits and metrics around them.
pub fn router(gw: Shared) -> Router {
    let api = Router::new()
        .route("/v1/blobs", put(blobs::put_blob))
        .route(
            "/v1/blobs/{blob_id}",
            get(blobs::get_blob).head(blobs::head_blob),
        )
        .route("/v1/blobs/{blob_id}/byte-range", get(blobs::get_byte_range))
        .route("/v1/quilts", put(quilts::put_quilt))
        .route("/v1/quilts/{quilt_id}/patches", get(quilts::list_patches))
        .route(
            "/v1/blobs/by-quilt-id/{quilt_id}/{identifier}",
            get(quilts::get_by_identifier).head(quilts::get_by_identifier),
        )
        .route(
            "/v1/blobs/by-quilt-patch-id/{patch_id}",
            get(quilts::get_by_patch_id).head(quilts::get_by_patch_id),
        )
        .route("/v1/api", get(ops::api_doc))
        .route("/status", get(ops::status))
        .layer(axum::extract::DefaultBodyLimit::max(
            usize::try_from(gw.limits.max_body).unwrap_or(usize::MAX),
        ))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), limit))
        .layer(cors(&gw.cors_origins));
    Router::new()
        .merge(api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), observe))
        .with_state(gw)
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.is_empty() || origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::HEAD, Method::PUT, Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([
            axum::http::header::CONTENT_RANGE,
            axum::http::header::CONTENT_LENGTH,
            axum::http::header::ACCEPT_RANGES,
            axum::http::header::ETAG,
            axum::http::HeaderName::from_static("x-quilt-patch-identifier"),
        ])
        .max_age(Duration::from_secs(86400))
}

/// Concurrency (429 when every slot is taken) and the head timeout (504).
async fn limit(State(gw): State<Shared>, req: Request, next: Next) -> Response {
    let Ok(_slot) = gw.slots.clone().try_acquire_owned() else {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            format!(
                "the gateway is serving its maximum of {} requests; retry shortly",
                gw.limits.max_concurrent
            ),
        )
        .into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        return r;
    };
    match tokio::time::timeout(gw.limits.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "TIMEOUT",
            format!(
                "the request took longer than {:?}",
                gw.limits.request_timeout
            ),
        )
        .into_response(),
    }
}

/// Count every request by route, method and status, and time it to its response head.
async fn observe(State(gw): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    gw.metrics.in_flight.inc();
    let r = next.run(req).await;
    gw.metrics.in_flight.dec();
    gw.metrics
        .latency
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(start.elapsed().as_secs_f64());
    gw.metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), r.status().as_str()])
        .inc();
    r
}
