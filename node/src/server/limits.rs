//! Request limits that bound what clients can make a node hold (docs/node.md, "Limits"):
//! requests per class (storage, light, admin) each with its own slots, per source address
//! (`sources.rs`: streams in flight, a fair share of storage slots, backoff after a stall), a
//! deadline per request and an idle timeout between request-body frames. Connections are
//! bounded in `conns.rs`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Semaphore;
use tonic::body::Body;

use super::conns::{ConnInfo, Eviction};
use super::metrics::Metrics;
use super::sources::Sources;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests of one class in flight at once, and how they are timed.
#[derive(Clone)]
pub struct ClassLimit {
    /// Slots of the light and admin classes; storage slots are shared fairly by `Sources`.
    slots: Arc<Semaphore>,
    /// Whole-request deadline (body read, handling, answer).
    request_timeout: Duration,
    /// Largest request body of this class (a light request is small).
    max_body: Option<usize>,
}

impl ClassLimit {
    pub fn new(slots: usize, request_timeout: Duration, max_body: Option<usize>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            request_timeout,
            max_body,
        }
    }
}

/// The limits of one listener: which class a method belongs to is decided by its path.
#[derive(Clone)]
pub struct Limits {
    /// Storage traffic: bodies of MiBs, expensive answers.
    pub storage: ClassLimit,
    /// Small, cheap calls: info, committee, status, confirmations, certificates, health.
    pub light: ClassLimit,
    /// Admin service (served on its own listener when `--admin-addr` is set).
    pub admin: ClassLimit,
    /// How long a request may wait for a slot before it is refused (RESOURCE_EXHAUSTED).
    pub queue_timeout: Duration,
    /// Longest pause between two frames of a request body.
    pub body_timeout: Duration,
    /// Per source address: streams, storage slots, backoff.
    pub sources: Arc<Sources>,
    pub metrics: Arc<MetricsHandle>,
}

/// The counters the limits report to (a handle, so that the layer stays `Clone`).
pub struct MetricsHandle {
    pub refused: prometheus::IntCounterVec,
    pub evicted: prometheus::IntCounterVec,
    pub connections: prometheus::IntGauge,
}

impl MetricsHandle {
    pub fn of(m: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            refused: m.refused.clone(),
            evicted: m.evicted.clone(),
            connections: m.connections.clone(),
        })
    }
    pub fn refuse(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
    pub fn evict(&self, why: Eviction) {
        self.evicted.with_label_values(&[why.label()]).inc();
    }
}

/// Methods that move slivers or do real work; everything else of the storage service is light.
const HEAVY: &[&str] = &[
    "PutMetadata",
    "GetMetadata",
    "PutSliver",
    "GetSliver",
    "GetRecoverySymbols",
    "ListCertified",
    "SyncShard",
    "PutSlivers",
    "StoreBlob",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Storage,
    Light,
    Admin,
}

impl Limits {
    fn class(&self, path: &str) -> Class {
        if path.starts_with("/floe.v1.Admin/") {
            return Class::Admin;
        }
        match path.strip_prefix("/floe.v1.Storage/") {
            Some(m) if HEAVY.contains(&m) => Class::Storage,
            _ => Class::Light,
        }
    }
    fn limit(&self, class: Class) -> &ClassLimit {
        match class {
            Class::Storage => &self.storage,
            Class::Light => &self.light,
            Class::Admin => &self.admin,
        }
    }
}

/// A slot of one class, held until the request ends: storage slots come from the fair
/// per-source scheduler.
#[allow(dead_code)] // held for its Drop
enum Slot {
    Shared(tokio::sync::OwnedSemaphorePermit),
    Fair(super::sources::SlotPermit),
}

fn overloaded(limits: &Limits, method: &str) -> http::Response<Body> {
    limits.metrics.refuse("overloaded");
    tracing::debug!(%method, "refused: no free slot");
    tonic::Status::resource_exhausted("node overloaded: no free request slot, retry later")
        .into_http()
}

impl<S> tower::Layer<S> for Limits {
    type Service = LimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LimitService<S> {
    inner: S,
    limits: Limits,
}

impl<S> tower::Service<http::Request<Body>> for LimitService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // the routes are always ready; slots are taken per request in `call`
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        let limits = self.limits.clone();
        Box::pin(async move {
            let method = req.uri().path().to_string();
            let class_id = limits.class(&method);
            let class = limits.limit(class_id).clone();
            let info = req.extensions().get::<ConnInfo>().cloned();
            let source = info.as_ref().map_or(IpAddr::from([0, 0, 0, 0]), |i| {
                super::sources::source_of(i.remote.ip())
            });
            let _on_conn = info.as_ref().map(|i| i.conn.request_started());
            let _stream = match limits.sources.open_stream(source) {
                Ok(g) => g,
                Err(r) => {
                    limits.metrics.refuse(r.label());
                    tracing::debug!(%method, %source, "refused: {r}");
                    return Ok(tonic::Status::resource_exhausted(r.to_string()).into_http());
                }
            };
            let slot = if class_id == Class::Storage {
                match tokio::time::timeout(
                    limits.queue_timeout,
                    limits.sources.storage_slot(source),
                )
                .await
                {
                    Ok(Ok(p)) => Slot::Fair(p),
                    Ok(Err(r)) => {
                        limits.metrics.refuse(r.label());
                        tracing::debug!(%method, %source, "refused: {r}");
                        return Ok(tonic::Status::resource_exhausted(r.to_string()).into_http());
                    }
                    Err(_) => return Ok(overloaded(&limits, &method)),
                }
            } else {
                match tokio::time::timeout(
                    limits.queue_timeout,
                    class.slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => Slot::Shared(p),
                    _ => return Ok(overloaded(&limits, &method)),
                }
            };
            let req = req.map(|b| {
                Body::new(GuardedBody {
                    inner: b,
                    idle: limits.body_timeout,
                    timer: None,
                    read: 0,
                    max: class.max_body,
                    metrics: limits.metrics.clone(),
                    // only stalled storage streams pin something worth a backoff
                    on_stall: (class_id == Class::Storage)
                        .then(|| (limits.sources.clone(), source)),
                })
            });
            let r = tokio::time::timeout(class.request_timeout, inner.call(req)).await;
            drop(slot);
            match r {
                Ok(r) => r.map_err(Into::into),
                Err(_) => {
                    limits.metrics.refuse("timeout");
                    tracing::debug!(%method, "request cut: deadline exceeded");
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "request took longer than {:?}",
                        class.request_timeout
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// A request body that fails when it pauses longer than `idle` between frames, or grows past
/// `max` bytes.
struct GuardedBody {
    inner: Body,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    read: usize,
    max: Option<usize>,
    metrics: Arc<MetricsHandle>,
    /// Whom to charge a backoff when this body stalls.
    on_stall: Option<(Arc<Sources>, IpAddr)>,
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body stalled for more than {0:?}")]
    Stalled(Duration),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                this.timer = None;
                if let Some(Ok(frame)) = &f {
                    if let Some(d) = frame.data_ref() {
                        this.read += d.len();
                        if let Some(max) = this.max.filter(|m| this.read > *m) {
                            this.metrics.refuse("too_large");
                            return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(
                                BodyError::TooLarge(max).to_string(),
                            ))));
                        }
                    }
                }
                Poll::Ready(f)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.metrics.refuse("timeout");
                    if let Some((sources, ip)) = this.on_stall.take() {
                        let backoff = sources.strike(ip);
                        tracing::info!(source = %ip, ?backoff, "stalled request cut; source backs off");
                    }
                    return Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(
                        BodyError::Stalled(idle).to_string(),
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
