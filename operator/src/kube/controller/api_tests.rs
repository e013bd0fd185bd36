//! The requests one reconcile makes, against a mocked API server (a `tower` service in place of
//! the HTTP client): every owned object applied, orphans deleted, status applied, and the
//! reconcile done while the cluster's control-plane task is still waiting on the API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;

use super::*;
use crate::crd::{StorageCluster, StorageClusterSpec};

/// (method, path and query) of every request the mock answered.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, String)>>>);

impl Log {
    fn requests(&self) -> Vec<(String, String)> {
        self.0.lock().expect("log").clone()
    }
    fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p.contains(path))
            .count()
    }
}

fn not_found() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "not found", "reason": "NotFound", "code": 404})
}

/// An API server with nothing in it: reads answer 404 (an empty list for pods), applies echo
/// the object (the StorageCluster itself for its status), deletes answer 404. Reads of the
/// control ConfigMap hang when `hang_control` (a slow API under the control-plane task).
fn mock(log: Log, sc: serde_json::Value, hang_control: bool) -> kube::Client {
    let svc = tower::service_fn(move |req: Request<Body>| {
        let (log, sc) = (log.clone(), sc.clone());
        async move {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            log.0
                .lock()
                .expect("log")
                .push((method.clone(), uri.clone()));
            let sent = req.into_body().collect_bytes().await.unwrap_or_default();
            if hang_control && method == "GET" && uri.contains("/configmaps/alpha-control") {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let (status, body) = match method.as_str() {
                "GET" if uri.contains("/pods?") => (
                    StatusCode::OK,
                    serde_json::json!({"apiVersion": "v1", "kind": "PodList",
                        "metadata": {}, "items": []})
                    .to_string()
                    .into_bytes(),
                ),
                "PATCH" if uri.contains("/storageclusters/") => {
                    (StatusCode::OK, sc.to_string().into_bytes())
                }
                "PATCH" | "POST" => (StatusCode::OK, sent.to_vec()),
                _ => (StatusCode::NOT_FOUND, not_found().to_string().into_bytes()),
            };
            let resp = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("response");
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    kube::Client::new(svc, "default")
}

fn cluster(spec: serde_json::Value) -> StorageCluster {
    let spec: StorageClusterSpec = serde_json::from_value(spec).expect("spec parses");
    let mut sc = StorageCluster::new("alpha", spec);
    sc.metadata.namespace = Some("team-a".into());
    sc.metadata.uid = Some("0b6a3f5e-1111-2222-3333-444455556666".into());
    sc.metadata.generation = Some(1);
    sc
}

fn testnet() -> StorageCluster {
    cluster(
        serde_json::json!({"nodes": 4, "shards": 10, "epochDuration": "30s",
        "challenges": {"timeout": "5s"}, "storage": {"size": "1Gi"}}),
    )
}

fn context(client: kube::Client) -> Context {
    let metrics = crate::kube::http::Metrics::new().expect("metrics");
    Context::new(client, metrics, Some("test".into()))
}

#[tokio::test]
async fn a_reconcile_applies_every_object_deletes_orphans_and_writes_status() {
    let sc = testnet();
    let log = Log::default();
    let ctx = context(mock(
        log.clone(),
        serde_json::to_value(&sc).expect("json"),
        false,
    ));
    let action = apply(&sc, &ctx).await.expect("reconcile");
    assert_ne!(
        action,
        Action::await_change(),
        "an active cluster is requeued"
    );
    for (method, path) in [
        ("GET", "/secrets/alpha-admin-token"),
        ("GET", "/statefulsets/alpha"),
        ("GET", "/pods?"),
        ("PATCH", "/configmaps/"),
        ("PATCH", "/secrets/alpha-admin-token"),
        ("PATCH", "/services/"),
        ("PATCH", "/statefulsets/alpha?"),
        ("PATCH", "/poddisruptionbudgets/alpha"),
        ("DELETE", "/networkpolicies/"),
        ("DELETE", "/servicemonitors/"),
        ("PATCH", "/storageclusters/alpha/status?"),
    ] {
        assert!(
            log.count(method, path) >= 1,
            "{method} {path} missing from {:#?}",
            log.requests()
        );
    }
    assert_eq!(log.count("PATCH", "/services/"), 2, "headless and client");
    assert!(
        log.requests()
            .iter()
            .filter(|(m, _)| m == "PATCH")
            .all(|(_, p)| p.contains("fieldManager=floe-operator")),
        "one field manager"
    );
    assert_eq!(log.count("DELETE", "/pods/"), 0, "nothing to roll");
}

#[tokio::test]
async fn a_paused_cluster_gets_its_status_and_nothing_else() {
    let mut sc = testnet();
    sc.spec.paused = true;
    let log = Log::default();
    let ctx = context(mock(
        log.clone(),
        serde_json::to_value(&sc).expect("json"),
        false,
    ));
    assert_eq!(
        apply(&sc, &ctx).await.expect("reconcile"),
        Action::await_change()
    );
    let writes: Vec<_> = log
        .requests()
        .into_iter()
        .filter(|(m, p)| m != "GET" && !p.contains("/events"))
        .collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert!(writes[0].1.contains("/storageclusters/alpha/status?"));
    assert!(
        ctx.planes.is_empty(),
        "no control plane for a paused cluster"
    );
}

#[tokio::test]
async fn a_reconcile_never_waits_for_the_control_plane() {
    let sc = testnet();
    let log = Log::default();
    // the control-plane task hangs on its first read of the stored state
    let ctx = context(mock(
        log.clone(),
        serde_json::to_value(&sc).expect("json"),
        true,
    ));
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), apply(&sc, &ctx))
            .await
            .expect("the reconcile finished while the control plane hangs")
            .expect("reconcile");
    }
    assert_eq!(ctx.planes.len(), 1, "one task for the cluster");
    assert!(log.count("GET", "/configmaps/alpha-control") >= 1);
    assert_eq!(
        log.count("PATCH", "/storageclusters/alpha/status?"),
        3,
        "each reconcile wrote the status"
    );
}

#[tokio::test]
async fn a_cluster_that_sells_storage_gets_its_keys_control_pod_and_service() {
    let mut sc = testnet();
    sc.spec.market.enabled = true;
    let log = Log::default();
    let ctx = context(mock(
        log.clone(),
        serde_json::to_value(&sc).expect("json"),
        false,
    ));
    apply(&sc, &ctx).await.expect("reconcile");
    for (method, path) in [
        ("GET", "/secrets/alpha-control-keys"),
        ("PATCH", "/secrets/alpha-control-keys"),
        ("PATCH", "/statefulsets/alpha-control?"),
        ("PATCH", "/services/alpha-control?"),
    ] {
        assert!(
            log.count(method, path) >= 1,
            "{method} {path} missing from {:#?}",
            log.requests()
        );
    }
    // the control pod is looked for by its own labels
    assert!(log
        .requests()
        .iter()
        .any(|(m, p)| m == "GET" && p.contains("/pods?") && p.contains("component%3Dcontrol")));
    // without the market, its StatefulSet and Service go (the Secret stays for its journal)
    let plain = testnet();
    let log = Log::default();
    let ctx = context(mock(
        log.clone(),
        serde_json::to_value(&plain).expect("json"),
        false,
    ));
    apply(&plain, &ctx).await.expect("reconcile");
    assert_eq!(log.count("DELETE", "/statefulsets/alpha-control"), 1);
    assert_eq!(log.count("DELETE", "/services/alpha-control"), 1);
    assert_eq!(log.count("DELETE", "/secrets/"), 0);
    assert_eq!(log.count("PATCH", "/secrets/alpha-control-keys"), 0);
}
