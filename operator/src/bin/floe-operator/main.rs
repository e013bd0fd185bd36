//! `floe-operator`: the in-cluster controller of `StorageCluster`s (see docs/operator.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use floe_operator::crd::StorageCluster;
use floe_operator::kube::controller::{self, Context};
use floe_operator::kube::http::{self, HttpState, Metrics};
use kube::api::{Api, ListParams};
use kube::Client;

#[derive(Parser)]
#[command(
    name = "floe-operator",
    version,
    about = "Kubernetes operator for Floe StorageClusters"
)]
struct Args {
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, env = "FLOE_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Log format: text or json
    #[arg(long, env = "FLOE_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let ready = Arc::new(AtomicBool::new(false));

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let app = http::router(HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Wait for the CRD rather than crash-looping: /readyz says what is missing meanwhile.
    let api: Api<StorageCluster> = Api::all(client.clone());
    let mut warned = false;
    while let Err(e) = api.list(&ListParams::default().limit(1)).await {
        if !warned {
            tracing::warn!(error = %e, "cannot list StorageClusters; is the CRD installed? (kubectl apply -f crds/)");
            warned = true;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(addr = %args.http_addr, "floe-operator running");

    let instance = std::env::var("POD_NAME").ok();
    controller::run(Arc::new(Context::new(client, metrics, instance))).await;
    server.abort();
    tracing::info!("floe-operator stopped");
    Ok(())
}
