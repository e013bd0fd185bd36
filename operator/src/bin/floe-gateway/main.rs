//! `floe-gateway`: Walrus's HTTP publisher and aggregator API for a Floe network
//! (docs/gateway.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ed25519_dalek::SigningKey;
use floe_node::client::control::ControlClient;
use floe_node::client::{BlobClient, ClientConfig};
use floe_node::protocol::AccountId;
use floe_operator::gateway::publisher::{self, Publisher};
use floe_operator::gateway::{self, auth::Auth, Limits};

#[derive(Parser)]
#[command(
    name = "floe-gateway",
    version,
    about = "HTTP publisher and aggregator (Walrus's API) for a Floe network"
)]
struct Args {
    /// Address to serve HTTP on
    #[arg(long, env = "FLOE_GATEWAY_ADDR", default_value = "0.0.0.0:31415")]
    listen: SocketAddr,
    /// Storage node gRPC addresses to learn the committee from (comma-separated; a Service
    /// name is enough in Kubernetes)
    #[arg(
        long,
        env = "FLOE_GATEWAY_NODES",
        value_delimiter = ',',
        required = true
    )]
    nodes: Vec<String>,
    /// Largest request body in bytes (413 above)
    #[arg(long, env = "FLOE_GATEWAY_MAX_BODY", default_value_t = 1 << 30)]
    max_body: u64,
    /// Bodies up to this many bytes are held in memory; larger ones are spooled to --spool-dir
    #[arg(long, env = "FLOE_GATEWAY_IN_MEMORY", default_value_t = 16 << 20)]
    in_memory: u64,
    /// Where uploads larger than --in-memory are spooled [default: the system temp dir]
    #[arg(long, env = "FLOE_GATEWAY_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Requests served at once (429 above)
    #[arg(long, env = "FLOE_GATEWAY_MAX_CONCURRENT", default_value_t = 256)]
    max_concurrent: usize,
    /// Seconds to produce a response head (504 after)
    #[arg(long, env = "FLOE_GATEWAY_REQUEST_TIMEOUT", default_value_t = 300)]
    request_timeout: u64,
    /// Seconds an upload may pause between body bytes (408 after)
    #[arg(long, env = "FLOE_GATEWAY_BODY_IDLE_TIMEOUT", default_value_t = 30)]
    body_idle_timeout: u64,
    /// File holding the HS256 secret that publisher JWTs are signed with; without it (and
    /// without FLOE_GATEWAY_JWT_SECRET) anyone who reaches the gateway may write
    #[arg(long, env = "FLOE_GATEWAY_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// The control plane's API (HOST:PORT, as `floe --control`): on a network that sells
    /// storage every PUT is registered there and paid from --account-key's account
    #[arg(long, env = "FLOE_GATEWAY_CONTROL", requires = "account_key")]
    control: Option<String>,
    /// File holding the publisher account's Ed25519 key (32 bytes, as `floe account new`
    /// writes it); the account pays for what the gateway stores
    #[arg(long, env = "FLOE_GATEWAY_ACCOUNT_KEY", requires = "control")]
    account_key: Option<PathBuf>,
    /// Origins allowed by CORS, comma-separated [default: any]
    #[arg(long, env = "FLOE_GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Log format: text or json
    #[arg(long, env = "FLOE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// The publisher's account: its key from `key_file`, registrations sent to `control`. The
/// balance is logged once (a gateway that cannot pay says so at start, not at the first PUT).
async fn publisher(
    control: &str,
    key_file: &Path,
    metrics: gateway::metrics::Metrics,
) -> anyhow::Result<Arc<Publisher>> {
    let bytes = std::fs::read(key_file)
        .with_context(|| format!("reading the account key {}", key_file.display()))?;
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{} is not an account key (expected 32 bytes, found {}); create one with `floe account new`",
            key_file.display(),
            bytes.len()
        )
    })?;
    let key = SigningKey::from_bytes(&key);
    let client = ControlClient::new(control).context("--control")?;
    let account = AccountId::of(&key);
    match client.account(&account).await {
        Ok(a) => {
            metrics
                .balance
                .set(i64::try_from(a.balance).unwrap_or(i64::MAX));
            tracing::info!(%account, balance = a.balance, control, "publisher account")
        }
        Err(e) => tracing::warn!(%account, control, "cannot read the publisher's balance yet: {e}"),
    }
    Ok(publisher::start(client, key, metrics))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let secret = match (
        &args.jwt_secret_file,
        std::env::var("FLOE_GATEWAY_JWT_SECRET"),
    ) {
        (Some(f), _) => Some(
            std::fs::read(f)
                .with_context(|| format!("reading the JWT secret {}", f.display()))?
                .trim_ascii()
                .to_vec(),
        ),
        (None, Ok(s)) if !s.is_empty() => Some(s.into_bytes()),
        _ => None,
    };
    if secret.as_ref().is_some_and(|s| s.len() < 16) {
        anyhow::bail!("the JWT secret is shorter than 16 bytes; use a long random one");
    }
    let limits = Limits {
        max_body: args.max_body,
        in_memory: args.in_memory.min(args.max_body),
        max_concurrent: args.max_concurrent,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        body_idle: Duration::from_secs(args.body_idle_timeout.max(1)),
        ..Limits::default()
    };
    let metrics = gateway::metrics::Metrics::new()?;
    let publisher = match (&args.control, &args.account_key) {
        (Some(control), Some(key)) => Some(publisher(control, key, metrics.clone()).await?),
        _ => None,
    };
    let spool = args.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&spool).with_context(|| format!("creating {}", spool.display()))?;
    let gw = gateway::Gateway::new(
        limits,
        spool,
        secret
            .map(|s| Auth::hs256(&s))
            .transpose()
            .context("the JWT secret")?,
        args.cors_origin.clone(),
        publisher,
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, auth = gw.auth.is_some(), "gateway serving");

    // learn the committee in the background, retrying: /healthz answers meanwhile and /readyz
    // says not ready, so a gateway started before its nodes comes up on its own
    let connect = {
        let gw = gw.clone();
        let nodes = args.nodes.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match BlobClient::connect(&nodes, ClientConfig::default()).await {
                    Ok(c) => {
                        tracing::info!(epoch = c.committee().epoch, "committee learned");
                        let c = Arc::new(c);
                        let _ = gw.client.set(c.clone());
                        // follow epochs even when no request fails
                        loop {
                            tokio::time::sleep(Duration::from_secs(10)).await;
                            if let Err(e) = c.refresh().await {
                                tracing::debug!("committee refresh: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("cannot reach the storage nodes yet: {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    };
    let app = gateway::router(gw);
    // small responses and streamed bodies go out at once, not after the client's delayed ACK
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await?;
    connect.abort();
    Ok(())
}
