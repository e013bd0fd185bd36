//! The storage-node daemon: gRPC (public + admin), HTTP (metrics, health), background recovery,
//! graceful shutdown.

pub mod admin;
pub mod challenge;
pub mod config;
pub mod gc;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod recovery;
pub mod state;
pub mod storage;
pub mod sync;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

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
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, "listening");

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

    let mut grpc_stop = stop_rx.clone();
    // One limit for all connections: a request waits (unread, under HTTP/2 flow control) until
    // a slot is free, so memory is bounded by this limit times the message size.
    // Sliver messages are MiBs: HTTP/2's default 64 KiB windows would stall every request on
    // window updates, so give streams and connections room for a few slivers in flight.
    let grpc_server = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .max_frame_size(Some(1 << 20))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests,
        ))
        .add_service(health_service)
        .add_service(storage)
        .add_service(admin_svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
            let _ = grpc_stop.changed().await;
        });
    let mut http_stop = stop_rx.clone();
    let http_server =
        axum::serve(http, http::router(state.clone())).with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        });
    let recovery = tokio::spawn(recovery::run(state.clone(), stop_rx.clone()));
    let sync = tokio::spawn(sync::run(state.clone(), stop_rx.clone()));
    let gc = tokio::spawn(gc::run(state.clone(), stop_rx.clone()));

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
    let (g, h, s) = tokio::join!(grpc_server, http_server, signals);
    g.context("gRPC server")?;
    h.context("HTTP server")?;
    s.context("signal handler")?;
    recovery.abort();
    sync.abort();
    gc.abort();
    tracing::info!("stopped");
    Ok(())
}
