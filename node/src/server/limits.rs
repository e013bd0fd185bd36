//! Transport limits that bound what clients can make a node hold (docs/node.md, "Limits"):
//! accepted connections, requests per class (storage, light, admin) each with its own slots,
//! a deadline per request and an idle timeout between request-body frames.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::metrics::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests of one class in flight at once, and how they are timed.
#[derive(Clone)]
pub struct ClassLimit {
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
    pub metrics: Arc<MetricsHandle>,
}

/// The counters the limits report to (a handle, so that the layer stays `Clone`).
pub struct MetricsHandle {
    pub refused: prometheus::IntCounterVec,
    pub connections: prometheus::IntGauge,
}

impl MetricsHandle {
    pub fn of(m: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            refused: m.refused.clone(),
            connections: m.connections.clone(),
        })
    }
    fn refuse(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
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
];

impl Limits {
    fn class(&self, path: &str) -> &ClassLimit {
        if path.starts_with("/floe.v1.Admin/") {
            return &self.admin;
        }
        match path.strip_prefix("/floe.v1.Storage/") {
            Some(m) if HEAVY.contains(&m) => &self.storage,
            _ => &self.light,
        }
    }
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
            let class = limits.class(req.uri().path()).clone();
            let method = req.uri().path().to_string();
            let permit = match tokio::time::timeout(
                limits.queue_timeout,
                class.slots.clone().acquire_owned(),
            )
            .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    limits.metrics.refuse("overloaded");
                    tracing::debug!(%method, "refused: no free slot");
                    return Ok(tonic::Status::resource_exhausted(
                        "node overloaded: no free request slot, retry later",
                    )
                    .into_http());
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
                })
            });
            let r = tokio::time::timeout(class.request_timeout, inner.call(req)).await;
            drop(permit);
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

/// An accepted connection holding one of the listener's connection slots until it closes.
pub struct LimitedIo<IO> {
    io: IO,
    remote: TcpConnectInfo,
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl<IO> Drop for LimitedIo<IO> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl<IO> Connected for LimitedIo<IO> {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.remote.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for LimitedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for LimitedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// How an accepted TCP connection becomes the stream the server speaks on (plain TCP, or a
/// TLS handshake bounded by `handshake_timeout`).
pub type Upgrade<IO> = Arc<
    dyn Fn(tokio::net::TcpStream) -> Pin<Box<dyn Future<Output = std::io::Result<IO>> + Send>>
        + Send
        + Sync,
>;

/// Accept connections on `listener`, at most `max` open at once: one more is closed right
/// away (counted as refused). Upgrades (TLS handshakes) run concurrently, each bounded in time,
/// so a slow handshake does not hold up the accept loop.
pub fn incoming<IO>(
    listener: TcpListener,
    max: usize,
    handshake_timeout: Duration,
    upgrade: Upgrade<IO>,
    metrics: Arc<MetricsHandle>,
) -> tokio_stream::wrappers::ReceiverStream<Result<LimitedIo<IO>, std::io::Error>>
where
    IO: Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max.max(1)));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics.refuse("connections");
                tracing::debug!(%peer, "connection refused: limit of {max} reached");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let remote = TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: Some(peer),
            };
            if tx.is_closed() {
                return;
            }
            let tx = tx.clone();
            let upgrade = upgrade.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let io = match tokio::time::timeout(handshake_timeout, upgrade(tcp)).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.refuse("timeout");
                        tracing::debug!(%peer, "handshake timed out");
                        return;
                    }
                };
                metrics.connections.inc();
                let conn = LimitedIo {
                    io,
                    remote,
                    _permit: permit,
                    gauge: metrics.connections.clone(),
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A served connection: plain TCP or TLS over it.
pub enum MaybeTls {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Plain TCP, or TLS with `config` (`--tls`).
pub fn upgrade(config: Option<Arc<rustls::ServerConfig>>) -> Upgrade<MaybeTls> {
    match config {
        None => Arc::new(|tcp| Box::pin(async move { Ok(MaybeTls::Plain(tcp)) })),
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            Arc::new(move |tcp| {
                let a = acceptor.clone();
                Box::pin(async move { Ok(MaybeTls::Tls(Box::new(a.accept(tcp).await?))) })
            })
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}
