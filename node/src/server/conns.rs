//! Accepted connections of one listener (docs/node.md, "Limits"): a cap in all and per source
//! address, a deadline from accept to the first request (TLS handshake, HTTP/2 preface and one
//! request header), and eviction of the oldest idle connection when the cap is reached, so that
//! held connections never stop the listener from taking a new one.
//!
//! Every connection is registered from the moment it is accepted (before its TLS handshake)
//! until it closes. The registry can close any of them: the connection's I/O then fails on its
//! next read or write, which makes hyper drop it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

use super::limits::MetricsHandle;

/// How many connections a listener keeps and for how long one may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections in all (handshaking ones included).
    pub max: usize,
    /// Open connections from one source address.
    pub per_source: usize,
    /// From accept to the first request header: TLS handshake, HTTP/2 preface, one request.
    pub first_request: Duration,
}

/// One accepted connection as the registry and the request layer see it.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    pub source: IpAddr,
    opened: Instant,
    /// Requests started on it so far.
    requests: AtomicU64,
    /// Requests in flight now.
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` of the last request start or end.
    last_active_ms: AtomicU64,
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Conn {
    fn new(id: u64, source: IpAddr) -> Self {
        Self {
            id,
            source,
            opened: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_active_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A request started on this connection; the guard marks its end.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RequestGuard(self.clone())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ready once the registry closed this connection (registers the task's waker).
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_closed() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.is_closed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Marks the end of a request on its connection.
pub struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Why a connection was closed by the node, for `floe_node_evicted_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// No request within the first-request deadline (idle TLS, bare TCP, slow handshakes).
    NoRequest,
    /// The listener was full and this was its oldest idle connection.
    IdleAtCap,
}

impl Eviction {
    pub fn label(self) -> &'static str {
        match self {
            Eviction::NoRequest => "no_request",
            Eviction::IdleAtCap => "idle_at_cap",
        }
    }
}

/// What the accept loop does with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Take it (after closing `evict`, if any).
    Accept { evict: Option<u64> },
    /// Its source already holds its share of connections.
    RefuseSource,
    /// Full, and every open connection has a request in flight.
    RefuseFull,
}

/// The connection table of one listener.
pub struct Registry {
    limits: ConnLimits,
    metrics: Arc<MetricsHandle>,
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: BTreeMap<u64, Arc<Conn>>,
    per_source: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let c = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&c.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&c.source);
            }
        }
        Some(c)
    }
}

/// The decision of [`Registry::admit`], pure so that it can be tested alone: which connection
/// (if any) to evict for a new one from `source`. `open` lists every connection with the
/// number its source holds. The victim is an idle connection (none in flight) of the source
/// holding the most — so that sources with many connections pay for a full listener, not a
/// client with one — and among those a connection that never started a request before one that
/// did (oldest first), then the one idle longest. A newcomer evicts only when that makes the
/// table fairer (its source holds at least two fewer than the victim's), or when it is its
/// source's first and the victim never sent a request: sources that already hold their part
/// are refused, so attackers re-opening the connections they lost cannot evict each other in
/// an endless loop of handshakes.
pub fn admission<'a>(
    limits: &ConnLimits,
    open: impl Iterator<Item = (&'a Conn, usize)>,
    count: usize,
    from_source: usize,
) -> Admission {
    if from_source >= limits.per_source {
        return Admission::RefuseSource;
    }
    if count < limits.max {
        return Admission::Accept { evict: None };
    }
    let victim = open
        .filter(|(c, _)| !c.is_closed() && c.in_flight.load(Ordering::Relaxed) == 0)
        .min_by_key(|(c, held)| {
            let silent = c.requests.load(Ordering::Relaxed) == 0;
            let last = c.opened + Duration::from_millis(c.last_active_ms.load(Ordering::Relaxed));
            (std::cmp::Reverse(*held), !silent, last)
        });
    match victim {
        Some((c, held))
            if from_source + 1 < held
                || (from_source == 0 && c.requests.load(Ordering::Relaxed) == 0) =>
        {
            Admission::Accept { evict: Some(c.id) }
        }
        _ => Admission::RefuseFull,
    }
}

impl Registry {
    pub fn new(limits: ConnLimits, metrics: Arc<MetricsHandle>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            metrics,
            inner: Mutex::new(Table::default()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // a panic while holding the lock leaves a consistent table: every mutation is one step
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connection from `source`, evicting the oldest idle one if the listener is
    /// full; `None` when it must be refused.
    fn admit(&self, source: IpAddr) -> Option<Arc<Conn>> {
        let mut t = self.table();
        let from_source = t.per_source.get(&source).copied().unwrap_or(0);
        let open = t.conns.values().map(|c| {
            let held = t.per_source.get(&c.source).copied().unwrap_or(0);
            (&**c, held)
        });
        match admission(&self.limits, open, t.conns.len(), from_source) {
            Admission::RefuseSource => {
                self.metrics.refuse("source_connections");
                None
            }
            Admission::RefuseFull => {
                self.metrics.refuse("connections");
                None
            }
            Admission::Accept { evict } => {
                if let Some(victim) = evict.and_then(|id| t.remove(id)) {
                    victim.close();
                    self.metrics.evict(Eviction::IdleAtCap);
                    tracing::debug!(source = %victim.source, "evicted the oldest idle connection");
                }
                t.next_id += 1;
                let conn = Arc::new(Conn::new(t.next_id, source));
                t.conns.insert(conn.id, conn.clone());
                *t.per_source.entry(source).or_default() += 1;
                Some(conn)
            }
        }
    }

    fn release(&self, id: u64) {
        self.table().remove(id);
    }

    /// Close connections that started no request within the deadline.
    fn reap(&self) {
        let mut t = self.table();
        let late: Vec<u64> = t
            .conns
            .values()
            .filter(|c| {
                c.requests.load(Ordering::Relaxed) == 0
                    && c.opened.elapsed() > self.limits.first_request
            })
            .map(|c| c.id)
            .collect();
        for id in late {
            if let Some(c) = t.remove(id) {
                c.close();
                self.metrics.evict(Eviction::NoRequest);
                tracing::debug!(source = %c.source, "closed: no request within the deadline");
            }
        }
    }

    /// Open connections (for tests and metrics).
    pub fn len(&self) -> usize {
        self.table().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the request layer finds in a request's extensions: the connection it came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub conn: Arc<Conn>,
    pub remote: std::net::SocketAddr,
}

/// An accepted connection: its I/O fails once the registry closes it, and it leaves the
/// registry when dropped.
pub struct TrackedIo<IO> {
    io: IO,
    info: ConnInfo,
    registry: Arc<Registry>,
    gauge: prometheus::IntGauge,
}

impl<IO> Drop for TrackedIo<IO> {
    fn drop(&mut self) {
        self.registry.release(self.info.conn.id);
        self.gauge.dec();
    }
}

impl<IO> Connected for TrackedIo<IO> {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by the node",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for TrackedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.info.conn.poll_closed(cx).is_ready() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for TrackedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.info.conn.poll_closed(cx).is_ready() {
            return Poll::Ready(Err(closed_error()));
        }
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
        if self.info.conn.poll_closed(cx).is_ready() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// How an accepted TCP connection becomes the stream the server speaks on (plain TCP, or a
/// TLS handshake).
pub type Upgrade<IO> = Arc<
    dyn Fn(tokio::net::TcpStream) -> Pin<Box<dyn Future<Output = std::io::Result<IO>> + Send>>
        + Send
        + Sync,
>;

/// How often the registry looks for connections past their first-request deadline.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// Accept connections on `listener` under `limits`. The loop only registers a connection (or
/// refuses it) and never waits for one: upgrades (TLS handshakes) run in tasks of their own,
/// and a handshake still running when its connection is evicted or past its deadline ends.
pub fn incoming<IO>(
    listener: TcpListener,
    limits: ConnLimits,
    upgrade: Upgrade<IO>,
    metrics: Arc<MetricsHandle>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TrackedIo<IO>, std::io::Error>>
where
    IO: Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let registry = Registry::new(limits, metrics.clone());
    {
        let registry = Arc::downgrade(&registry);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match registry.upgrade() {
                    Some(r) => r.reap(),
                    None => return,
                }
            }
        });
    }
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
            if tx.is_closed() {
                return;
            }
            let Some(conn) = registry.admit(super::sources::source_of(peer.ip())) else {
                tracing::debug!(%peer, "connection refused");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            let upgrade = upgrade.clone();
            let registry = registry.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let closed = std::future::poll_fn(|cx| conn.poll_closed(cx));
                let io = tokio::select! {
                    r = upgrade(tcp) => match r {
                        Ok(io) => io,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "handshake failed");
                            registry.release(conn.id);
                            return;
                        }
                    },
                    _ = closed => {
                        tracing::debug!(%peer, "closed during the handshake");
                        return;
                    }
                };
                metrics.connections.inc();
                let tracked = TrackedIo {
                    io,
                    info: ConnInfo { conn, remote: peer },
                    registry,
                    gauge: metrics.connections.clone(),
                };
                let _ = tx.send(Ok(tracked)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }
    const LIMITS: ConnLimits = ConnLimits {
        max: 3,
        per_source: 2,
        first_request: Duration::from_secs(5),
    };

    #[test]
    fn a_full_listener_evicts_silent_connections_first_then_the_longest_idle() {
        let used_long_ago = Conn::new(1, ip(2));
        used_long_ago.requests.store(1, Ordering::Relaxed);
        let silent_newer = Conn::new(2, ip(3));
        let busy = Conn::new(3, ip(4));
        busy.in_flight.store(1, Ordering::Relaxed);
        busy.requests.store(1, Ordering::Relaxed);
        let open = || [(&used_long_ago, 1), (&silent_newer, 1), (&busy, 1)].into_iter();
        // below the cap: nothing evicted
        assert_eq!(
            admission(&LIMITS, open(), 2, 0),
            Admission::Accept { evict: None }
        );
        // at the cap: the silent one goes although it is newer
        assert_eq!(
            admission(&LIMITS, open(), 3, 0),
            Admission::Accept { evict: Some(2) }
        );
        // without it, the idle one (of a source with more); one with a request in flight never
        assert_eq!(
            admission(&LIMITS, [(&used_long_ago, 2), (&busy, 1)].into_iter(), 3, 0),
            Admission::Accept { evict: Some(1) }
        );
        // a used connection of a source with one is not evicted for another source's
        assert_eq!(
            admission(&LIMITS, [(&used_long_ago, 1), (&busy, 1)].into_iter(), 3, 0),
            Admission::RefuseFull
        );
        // a source that already holds its part does not evict another's silent connection
        assert_eq!(
            admission(&LIMITS, [(&silent_newer, 2)].into_iter(), 3, 1),
            Admission::RefuseFull
        );
        assert_eq!(
            admission(&LIMITS, [(&busy, 1)].into_iter(), 3, 0),
            Admission::RefuseFull
        );
        // a source holding more connections pays first, even with a used one
        let by_source = [(&used_long_ago, 2), (&silent_newer, 1), (&busy, 2)];
        assert_eq!(
            admission(&LIMITS, by_source.into_iter(), 3, 0),
            Admission::Accept { evict: Some(1) }
        );
        // a source at its share is refused whatever the room
        assert_eq!(admission(&LIMITS, open(), 0, 2), Admission::RefuseSource);
    }

    #[tokio::test]
    async fn silent_connections_are_reaped_and_closing_wakes_their_io() {
        let metrics = MetricsHandle::of(&super::super::metrics::Metrics::new());
        let limits = ConnLimits {
            first_request: Duration::from_millis(50),
            ..LIMITS
        };
        let r = Registry::new(limits, metrics);
        let silent = r.admit(ip(2)).unwrap();
        let used = r.admit(ip(2)).unwrap();
        assert!(r.admit(ip(2)).is_none(), "per-source cap");
        drop(used.request_started());
        let waiter = {
            let silent = silent.clone();
            tokio::spawn(async move { std::future::poll_fn(|cx| silent.poll_closed(cx)).await })
        };
        tokio::time::sleep(Duration::from_millis(80)).await;
        r.reap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the closed connection's task was woken")
            .unwrap();
        assert!(silent.is_closed() && !used.is_closed());
        assert_eq!(r.len(), 1);
    }
}
