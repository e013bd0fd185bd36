//! The storage-node daemon: gRPC (public + admin), HTTP (metrics, health), background recovery,
//! graceful shutdown.

pub mod admin;
pub mod challenge;
pub mod config;
pub mod conns;
pub mod gc;
pub mod http;
pub mod identity;
pub mod lifetimes;
pub mod limits;
pub mod metrics;
pub mod recovery;
pub mod sources;
pub mod state;
pub mod storage;
pub mod sync;
pub mod trim;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proto::{admin_server::AdminServer, storage_server::StorageServer};
use config::NodeConfig;
use state::NodeState;

/// Run a node until SIGTERM/SIGINT: then refuse new writes, finish in-flight requests, exit.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let key = identity::load_or_create(&config.key_file).context("loading the node key")?;
    let state = Arc::new(NodeState::open(config.clone(), key).context("opening the store")?);
    tracing::info!(node_id = %state.node_id, data_dir = %config.data_dir.display(), "node starting");

    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let admin = match config.admin_addr {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the admin API on {a}"))?,
        ),
        None => None,
    };
    if let Some(a) = &admin {
        state
            .admin_port
            .store(a.local_addr()?.port() as u32, Ordering::Relaxed);
    }
    tracing::info!(
        grpc = %grpc.local_addr()?,
        tls = config.tls,
        http = %http.local_addr()?,
        admin = ?admin.as_ref().and_then(|a| a.local_addr().ok()),
        "listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<StorageServer<storage::StorageService>>()
        .await;

    let storage = StorageServer::new(storage::StorageService {
        state: state.clone(),
    })
    .max_decoding_message_size(config.max_message)
    .max_encoding_message_size(config.max_message);
    let admin_svc = AdminServer::new(admin::AdminService {
        state: state.clone(),
    })
    .max_decoding_message_size(config.max_message)
    .max_encoding_message_size(config.max_message);
    let admin_svc = tonic::service::interceptor::InterceptedService::new(
        admin_svc,
        admin::AdminAuth::new(config.admin_token.clone()),
    );

    let metrics = limits::MetricsHandle::of(&state.metrics);
    let tls = if config.tls {
        Some(crate::tls::server_config(&state.key).context("setting up TLS")?)
    } else {
        None
    };
    // the admin listener completes TLS handshakes only with the admin client certificate
    let admin_tls = if config.tls {
        let admin_key = config
            .admin_token
            .as_deref()
            .map(|t| crate::tls::admin_client_key(t).verifying_key());
        Some(
            crate::tls::admin_server_config(&state.key, admin_key)
                .context("setting up the admin listener's TLS")?,
        )
    } else {
        None
    };
    let lim = transport_limits(&config, metrics.clone());
    let mut grpc_stop = stop_rx.clone();
    let (admin_here, admin_apart) = match admin {
        Some(l) => (None, Some((l, admin_svc))),
        None => (Some(admin_svc), None),
    };
    let grpc_server = server_builder(&config)
        .layer(lim.clone())
        .add_service(health_service.clone())
        .add_service(storage)
        .add_optional_service(admin_here)
        .serve_with_incoming_shutdown(
            conns::incoming(
                grpc,
                conns::ConnLimits {
                    max: config.max_connections,
                    per_source: config.max_connections_per_source,
                    first_request: config.first_request_timeout,
                },
                conns::upgrade(tls),
                metrics.clone(),
            ),
            async move {
                let _ = grpc_stop.changed().await;
            },
        );
    let admin_server = {
        let mut stop = stop_rx.clone();
        let metrics = metrics.clone();
        let mut builder = server_builder(&config).layer(lim);
        let first_request_timeout = config.first_request_timeout;
        async move {
            let Some((listener, svc)) = admin_apart else {
                return Ok(());
            };
            builder
                .add_service(health_service)
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    conns::incoming(
                        listener,
                        conns::ConnLimits {
                            max: ADMIN_CONNECTIONS,
                            per_source: ADMIN_CONNECTIONS_PER_SOURCE,
                            first_request: first_request_timeout,
                        },
                        conns::upgrade(admin_tls),
                        metrics,
                    ),
                    async move {
                        let _ = stop.changed().await;
                    },
                )
                .await
        }
    };
    let mut http_stop = stop_rx.clone();
    let http_server =
        axum::serve(http, http::router(state.clone())).with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        });
    let recovery = tokio::spawn(recovery::run(state.clone(), stop_rx.clone()));
    let sync = tokio::spawn(sync::run(state.clone(), stop_rx.clone()));
    let gc = tokio::spawn(gc::run(state.clone(), stop_rx.clone()));
    let trim = tokio::spawn(trim::run(
        state.metrics.connections.clone(),
        stop_rx.clone(),
    ));

    let signals = {
        let state = state.clone();
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down: refusing new writes, finishing in-flight requests");
            state.accepting_writes.store(false, Ordering::Relaxed);
            let _ = stop_tx.send(true);
            Ok::<_, std::io::Error>(())
        }
    };
    // once stopping, in-flight requests get SHUTDOWN_GRACE to finish: a request stuck on a
    // stalled disk must not keep the process alive past its orchestrator's patience
    let servers = async { tokio::join!(grpc_server, admin_server, http_server) };
    let deadline = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    let (finished, s) = tokio::join!(
        async {
            tokio::select! {
                r = servers => Some(r),
                _ = deadline => None,
            }
        },
        signals
    );
    s.context("signal handler")?;
    match finished {
        Some((g, a, h)) => {
            g.context("gRPC server")?;
            a.context("admin server")?;
            h.context("HTTP server")?;
        }
        None => {
            let stall = state.store.stall_report();
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                store_stall = ?stall.current,
                "in-flight requests did not finish in time; stopping without them"
            );
        }
    }
    recovery.abort();
    sync.abort();
    gc.abort();
    trim.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Light requests (info, committee, status, confirmations, certificates, health) in flight at
/// once, their deadline and largest body: they stay answerable whatever storage traffic does.
pub const LIGHT_SLOTS: usize = 64;
pub const LIGHT_TIMEOUT: Duration = Duration::from_secs(10);
pub const LIGHT_MAX_BODY: usize = 1 << 20;
/// Admin requests in flight at once, connections the admin listener accepts, and from one
/// source address (over TLS only the admin certificate's holders get past the handshake).
pub const ADMIN_SLOTS: usize = 4;
pub const ADMIN_CONNECTIONS: usize = 16;
pub const ADMIN_CONNECTIONS_PER_SOURCE: usize = 8;
/// Time in-flight requests get to finish after SIGTERM (Kubernetes waits 30 s by default
/// before it kills a pod).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn transport_limits(config: &NodeConfig, metrics: Arc<limits::MetricsHandle>) -> limits::Limits {
    limits::Limits {
        storage: limits::ClassLimit::new(
            config.max_concurrent_requests,
            config.request_timeout,
            None,
        ),
        light: limits::ClassLimit::new(LIGHT_SLOTS, LIGHT_TIMEOUT, Some(LIGHT_MAX_BODY)),
        admin: limits::ClassLimit::new(ADMIN_SLOTS, config.request_timeout, None),
        // a request waiting for a slot holds no more than its stream's window
        queue_timeout: config.request_timeout,
        body_timeout: config.body_timeout,
        sources: sources::Sources::new(sources::SourcePolicy::new(
            config.max_streams_per_source,
            config.max_concurrent_requests,
            config.body_timeout,
        )),
        metrics,
    }
}

/// HTTP/2 settings shared by the listeners. Unread request bodies are bounded by the
/// connection window per connection (the stream window is half of it, so one stalled stream
/// cannot take a whole connection's window).
fn server_builder(config: &NodeConfig) -> tonic::transport::Server {
    let conn = config.connection_window;
    tonic::transport::Server::builder()
        .initial_connection_window_size(Some(conn))
        .initial_stream_window_size(Some((conn / 2).max(64 << 10)))
        .max_frame_size(Some((conn / 4).clamp(16 << 10, 1 << 20)))
        .max_concurrent_streams(Some(config.max_streams_per_connection))
        .http2_max_header_list_size(Some(64 << 10))
        .http2_max_pending_accept_reset_streams(Some(32))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}
