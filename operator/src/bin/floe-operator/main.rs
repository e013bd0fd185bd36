//! `floe-operator`: the in-cluster controller of `StorageCluster`s (see docs/operator.md).

use std::collections::BTreeMap;
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
    /// Reconcile only while holding the Lease `floe-operator`, so replicas can run side by side
    #[arg(long, env = "FLOE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease (the operator's own)
    #[arg(long, env = "POD_NAMESPACE", default_value = "floe-system")]
    lease_namespace: String,
    /// This replica's name in the Lease and in Events [default: $POD_NAME, else a random name]
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Write a NetworkPolicy per StorageCluster: gRPC and HTTP open, the admin port only from
    /// this operator's pods (those in `--lease-namespace` with `--operator-pod-labels`)
    #[arg(long, env = "FLOE_NETWORK_POLICY", default_value_t = false, action = clap::ArgAction::Set)]
    network_policy: bool,
    /// The operator pods' labels, `key=value,…` (with `--network-policy`)
    #[arg(long, env = "FLOE_OPERATOR_POD_LABELS", value_parser = parse_labels, default_value = "app.kubernetes.io/name=floe-operator")]
    operator_pod_labels: BTreeMap<String, String>,
}

/// `key=value,key=value` → labels.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("`{kv}` is not key=value")),
        })
        .collect::<Result<BTreeMap<_, _>, _>>()
        .and_then(|m| {
            if m.is_empty() {
                Err("no labels: the admin port would be open to every pod of the namespace".into())
            } else {
                Ok(m)
            }
        })
}

/// Lease: taken over by a standby 15 s after the leader stops renewing (at once when the
/// leader releases it on shutdown); renewed 5 s before it expires.
const LEASE_NAME: &str = "floe-operator";
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

/// SIGTERM (the kubelet) or SIGINT.
async fn signalled() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// glibc keeps freed heap in its arenas; the operator's garbage is bursty (lists and watch
/// events parsed from the API server, TLS handshakes to members, status JSON), so it hands
/// freed memory back to the kernel every few seconds: RSS follows the live set, not the peak.
fn give_back_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim takes no pointers and is thread-safe in glibc; it only
            // returns free pages at the top of the heaps and free whole pages to the kernel.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
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

    give_back_freed_heap();
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

    let identity = args.identity.clone().unwrap_or_else(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        format!("floe-operator-{}", hex::encode(b))
    });
    let lease = if args.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await
            .context("setting up leader election")?;
        let (mut leader, task) = manager.watch().await;
        tracing::info!(%identity, namespace = %args.lease_namespace, lease = LEASE_NAME, "waiting to lead");
        let became_leader = async {
            while !*leader.borrow_and_update() {
                if leader.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::select! {
            led = became_leader => if !led { anyhow::bail!("leader election stopped") },
            _ = signalled() => {
                drop(leader);
                let _ = task.await;
                server.abort();
                return Ok(());
            }
        }
        tracing::info!(%identity, "leading");
        Some((leader, task))
    } else {
        None
    };

    // leadership lost → the controller stops gracefully, then the process exits non-zero
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lost = Arc::new(AtomicBool::new(false));
    let watch_lease = lease.as_ref().map(|(leader, _)| {
        let mut leader = leader.clone();
        let lost = lost.clone();
        tokio::spawn(async move {
            while leader.changed().await.is_ok() {
                if !*leader.borrow_and_update() {
                    break;
                }
            }
            lost.store(true, Ordering::Relaxed);
            let _ = stop_tx.send(());
        })
    });
    let mut ctx = Context::new(client, metrics, Some(identity));
    if args.network_policy {
        ctx = ctx.with_network_policy(floe_operator::kube::builders::OperatorPeer {
            namespace: args.lease_namespace.clone(),
            pod_labels: args.operator_pod_labels.clone(),
        });
    }
    let ctx = Arc::new(ctx);
    controller::run(ctx, async move {
        let _ = stop_rx.await;
    })
    .await;
    if let Some(w) = watch_lease {
        w.abort();
    }
    // release the Lease so a standby takes over at once
    if let Some((leader, task)) = lease {
        drop(leader);
        let _ = task.await;
    }
    server.abort();
    if lost.load(Ordering::Relaxed) {
        anyhow::bail!("lost the leader Lease; exiting so this replica restarts as a standby");
    }
    tracing::info!("floe-operator stopped");
    Ok(())
}
