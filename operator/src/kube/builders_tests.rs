//! Field-by-field tests of the builders.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::api::networking::v1::NetworkPolicyIngressRule;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use super::builders::*;
use super::meta::{
    self, selector_labels, selector_string, ClusterMeta, MetaError, ADMIN_PORT, GRPC_PORT,
    HTTP_PORT,
};
use crate::crd::spec::{Addressing, Retention};
use crate::crd::validate::{validate, ValidSpec};
use crate::crd::{StorageCluster, StorageClusterSpec};

const UID: &str = "0b6a3f5e-1111-2222-3333-444455556666";

fn cluster(spec: serde_json::Value) -> StorageCluster {
    let spec: StorageClusterSpec = serde_json::from_value(spec).expect("spec parses");
    let mut sc = StorageCluster::new("alpha", spec);
    sc.metadata.namespace = Some("team-a".into());
    sc.metadata.uid = Some(UID.into());
    sc
}

fn testnet() -> StorageCluster {
    cluster(
        serde_json::json!({"nodes": 4, "shards": 10, "epochDuration": "30s",
        "challenges": {"timeout": "5s"}, "storage": {"size": "1Gi", "storageClassName": "floe-local"}}),
    )
}

const KEYS: crate::kube::market::MarketKeys = crate::kube::market::MarketKeys {
    control: [1; 32],
    gateway: [2; 32],
};

fn desired(sc: &StorageCluster, replicas: i32, pdb: i32) -> Desired {
    let valid: ValidSpec = validate(&sc.spec).expect("valid spec");
    build(&Inputs {
        cluster: sc,
        valid: &valid,
        admin_token: "s3cret",
        replicas,
        pdb_max_unavailable: pdb,
        operator: None,
        market_keys: &KEYS,
    })
    .expect("builds")
}

#[test]
fn network_policy_opens_grpc_and_http_and_keeps_admin_for_the_operator() {
    let sc = testnet();
    let valid: ValidSpec = validate(&sc.spec).expect("valid spec");
    let peer = OperatorPeer {
        namespace: "floe-system".into(),
        pod_labels: BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "floe-operator".to_string(),
        )]),
    };
    let without = desired(&sc, 4, 1);
    assert!(
        without.network_policy.is_none(),
        "only with --network-policy"
    );
    let with = build(&Inputs {
        cluster: &sc,
        valid: &valid,
        admin_token: "s3cret",
        replicas: 4,
        pdb_max_unavailable: 1,
        operator: Some(&peer),
        market_keys: &KEYS,
    })
    .expect("builds");
    let np = with.network_policy.expect("a policy");
    assert_eq!(np.metadata.name.as_deref(), Some("alpha-nodes"));
    assert!(
        np.metadata.owner_references.is_some(),
        "owned: deleted with the cluster"
    );
    let spec = np.spec.expect("spec");
    // it selects exactly the StatefulSet's pods
    let sts_selector = with
        .stateful_set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone());
    assert_eq!(spec.pod_selector.and_then(|s| s.match_labels), sts_selector);
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = spec.ingress.expect("ingress rules");
    let ports = |r: &NetworkPolicyIngressRule| -> Vec<i32> {
        r.ports
            .iter()
            .flatten()
            .map(|p| match &p.port {
                Some(IntOrString::Int(n)) => *n,
                other => panic!("numeric port expected, got {other:?}"),
            })
            .collect()
    };
    // every port the pods serve appears in exactly one rule
    let open: Vec<&NetworkPolicyIngressRule> = rules.iter().filter(|r| r.from.is_none()).collect();
    assert_eq!(open.len(), 1);
    assert_eq!(ports(open[0]), vec![GRPC_PORT, HTTP_PORT]);
    let admin: Vec<&NetworkPolicyIngressRule> = rules.iter().filter(|r| r.from.is_some()).collect();
    assert_eq!(admin.len(), 1);
    assert_eq!(ports(admin[0]), vec![ADMIN_PORT]);
    let from = &admin[0].from.as_ref().expect("from")[0];
    assert_eq!(
        from.namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get("kubernetes.io/metadata.name"))
            .map(String::as_str),
        Some("floe-system")
    );
    assert_eq!(
        from.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(peer.pod_labels.clone())
    );
    assert!(from.ip_block.is_none());
}

fn pod_spec(d: &Desired) -> &PodSpec {
    d.stateful_set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn container(d: &Desired) -> &Container {
    &pod_spec(d).containers[0]
}

#[test]
fn every_object_is_owned_labelled_and_namespaced() {
    let sc = testnet();
    let d = desired(&sc, 4, 1);
    let metas = [
        &d.headless_service.metadata,
        &d.client_service.metadata,
        &d.config_map.metadata,
        &d.admin_secret.metadata,
        &d.stateful_set.metadata,
        &d.pdb.metadata,
    ];
    for m in metas {
        assert_eq!(m.namespace.as_deref(), Some("team-a"));
        let owners = m.owner_references.as_ref().expect("owner references");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, UID);
        assert_eq!(owners[0].kind, "StorageCluster");
        assert_eq!(owners[0].api_version, "floe.dev/v1alpha1");
        assert_eq!(owners[0].controller, Some(true));
        let labels = m.labels.as_ref().expect("labels");
        assert_eq!(labels[meta::LABEL_INSTANCE], "alpha");
        assert_eq!(labels[meta::LABEL_MANAGED_BY], "floe-operator");
    }
    let names: Vec<_> = metas
        .iter()
        .map(|m| m.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "alpha-nodes",
            "alpha",
            "alpha-config",
            "alpha-admin-token",
            "alpha",
            "alpha"
        ]
    );
}

#[test]
fn a_cluster_without_uid_is_an_error_not_a_panic() {
    let mut sc = testnet();
    sc.metadata.uid = None;
    assert_eq!(ClusterMeta::new(&sc), Err(MetaError::Missing("uid")));
    sc.metadata.namespace = None;
    assert_eq!(ClusterMeta::new(&sc), Err(MetaError::Missing("namespace")));
}

#[test]
fn headless_service_publishes_not_ready_pods() {
    let d = desired(&testnet(), 4, 1);
    let s = d.headless_service.spec.expect("spec");
    assert_eq!(s.cluster_ip.as_deref(), Some("None"));
    assert_eq!(s.publish_not_ready_addresses, Some(true));
    assert_eq!(s.selector, Some(selector_labels("alpha")));
    let ports: Vec<_> = s
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(
        ports,
        [(Some("grpc".into()), 7070), (Some("http".into()), 7071)]
    );
}

#[test]
fn client_service_reaches_only_ready_nodes_on_grpc() {
    let d = desired(&testnet(), 4, 1);
    let s = d.client_service.spec.expect("spec");
    assert_eq!(s.publish_not_ready_addresses, None);
    assert_eq!(s.cluster_ip, None);
    assert_eq!(s.selector, Some(selector_labels("alpha")));
    let ports = s.ports.expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 7070);
}

#[test]
fn config_is_a_file_floe_node_accepts() {
    let d = desired(&testnet(), 4, 1);
    let text = &d.config_map.data.as_ref().expect("data")[CONFIG_KEY];
    // 90 % of 1 GiB
    assert!(
        text.contains(&format!("max-storage = {}\n", (1u64 << 30) / 100 * 90)),
        "{text}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(CONFIG_KEY);
    std::fs::write(&path, text).expect("write");
    let args = floe_node::server::config::Args {
        config: Some(path),
        ..Default::default()
    };
    let cfg = args
        .resolve()
        .expect("floe-node reads the operator's config");
    assert_eq!(cfg.max_storage, Some((1u64 << 30) / 100 * 90));
}

#[test]
fn price_votes_reach_each_node_through_its_pod_name() {
    use crate::crd::spec::{MarketSpec, PriceVoteOverride, PriceVotesSpec};
    let mut sc = testnet();
    sc.spec.market = MarketSpec {
        enabled: true,
        price_votes: PriceVotesSpec {
            storage: 120,
            write: 25,
            overrides: vec![PriceVoteOverride {
                ordinal: 2,
                storage: 400,
                write: 80,
            }],
        },
        ..MarketSpec::default()
    };
    let d = desired(&sc, 4, 1);
    let text = &d.config_map.data.as_ref().expect("data")[CONFIG_KEY];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(CONFIG_KEY);
    std::fs::write(&path, text).expect("write");
    // the env the pod gets names the node by its pod name
    let env = container(&d).env.clone().expect("env");
    assert!(env.iter().any(|e| e.name == "FLOE_VOTE_AS"
        && e.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str())
            == Some("metadata.name")));
    let votes = |pod: &str| {
        let cfg = floe_node::server::config::Args {
            config: Some(path.clone()),
            vote_as: Some(pod.into()),
            ..Default::default()
        }
        .resolve()
        .expect("floe-node reads the operator's config");
        (cfg.storage_price, cfg.write_price)
    };
    assert_eq!(votes("alpha-0"), (120, 25), "{text}");
    assert_eq!(votes("alpha-2"), (400, 80), "{text}");
    // without the market the file carries no votes (the node's defaults)
    let plain = desired(&testnet(), 4, 1);
    assert!(!plain.config_map.data.as_ref().expect("data")[CONFIG_KEY].contains("price"));
}

#[test]
fn node_arguments_parse_as_floe_node_flags() {
    use clap::Parser as _;
    let d = desired(&testnet(), 4, 1);
    let args: Vec<String> = container(&d)
        .args
        .clone()
        .expect("args")
        .into_iter()
        .collect();
    let parsed = floe_node::server::config::Args::try_parse_from(
        std::iter::once("floe-node".to_string()).chain(args),
    )
    .expect("flags exist");
    // every listener on all of the pod's addresses: port-forward dials localhost in the pod
    assert_eq!(
        parsed.admin_addr,
        Some("0.0.0.0:7072".parse().expect("addr"))
    );
    assert_eq!(
        parsed.grpc_addr,
        Some("0.0.0.0:7070".parse().expect("addr"))
    );
    assert_eq!(
        parsed.http_addr,
        Some("0.0.0.0:7071".parse().expect("addr"))
    );
    assert_eq!(
        parsed.admin_token_file.as_deref(),
        Some(std::path::Path::new("/etc/floe/admin/token"))
    );
    assert_eq!(
        parsed.data_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/floe/data"))
    );
}

#[test]
fn admin_secret_holds_the_given_token() {
    let d = desired(&testnet(), 4, 1);
    assert_eq!(
        existing_admin_token(&d.admin_secret).as_deref(),
        Some("s3cret")
    );
    let t1 = generate_admin_token().expect("random");
    let t2 = generate_admin_token().expect("random");
    assert_eq!(t1.len(), 64);
    assert_ne!(t1, t2);
    let mut empty = d.admin_secret.clone();
    empty.data = Some(BTreeMap::from([(
        TOKEN_KEY.into(),
        k8s_openapi::ByteString(b" \n".to_vec()),
    )]));
    assert_eq!(existing_admin_token(&empty), None);
}

#[test]
fn stateful_set_shape() {
    let d = desired(&testnet(), 3, 1);
    let s = d.stateful_set.spec.as_ref().expect("spec");
    assert_eq!(
        s.replicas,
        Some(3),
        "replicas come from the reconcile, not spec.nodes"
    );
    assert_eq!(s.service_name.as_deref(), Some("alpha-nodes"));
    assert_eq!(s.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        s.update_strategy.as_ref().and_then(|u| u.type_.as_deref()),
        Some("OnDelete")
    );
    assert_eq!(s.selector.match_labels, Some(selector_labels("alpha")));
    let tl = s
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("template labels");
    for (k, v) in selector_labels("alpha") {
        assert_eq!(tl.get(&k), Some(&v), "template carries selector label {k}");
    }
    let r = s
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("retention");
    assert_eq!(r.when_deleted.as_deref(), Some("Retain"));
    assert_eq!(r.when_scaled.as_deref(), Some("Retain"));
    let vct = &s.volume_claim_templates.as_ref().expect("claims")[0];
    assert_eq!(vct.metadata.name.as_deref(), Some("data"));
    let vs = vct.spec.as_ref().expect("claim spec");
    assert_eq!(vs.storage_class_name.as_deref(), Some("floe-local"));
    assert_eq!(vs.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    assert_eq!(
        vs.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.as_str()),
        Some("1Gi")
    );
}

#[test]
fn retention_follows_the_spec() {
    let sc = cluster(serde_json::json!({"nodes": 4, "shards": 10,
        "storage": {"retention": {"onScaleDown": "Delete", "onDelete": "Delete"}}}));
    assert_eq!(sc.spec.storage.retention.on_delete, Retention::Delete);
    let d = desired(&sc, 4, 1);
    let r = d
        .stateful_set
        .spec
        .and_then(|s| s.persistent_volume_claim_retention_policy)
        .expect("retention");
    assert_eq!(r.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(r.when_scaled.as_deref(), Some("Delete"));
}

#[test]
fn node_pods_are_locked_down() {
    let d = desired(&testnet(), 4, 1);
    let p = pod_spec(&d);
    assert_eq!(p.automount_service_account_token, Some(false));
    let psc = p.security_context.as_ref().expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.fs_group, Some(NODE_UID));
    let c = container(&d);
    let sc = c
        .security_context
        .as_ref()
        .expect("container security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    // the only writable path is the data volume (floe-node writes nothing elsewhere)
    let mounts: Vec<_> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.as_str(), m.read_only.unwrap_or(false)))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/var/lib/floe", false),
            ("/etc/floe/config", true),
            ("/etc/floe/admin", true),
        ]
    );
}

#[test]
fn probes_requests_env_and_volumes() {
    let d = desired(&testnet(), 4, 1);
    let c = container(&d);
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| (h.path.clone().unwrap_or_default(), h.port.clone()))
    };
    let http = IntOrString::String("http".into());
    assert_eq!(
        path(&c.startup_probe),
        Some(("/healthz".into(), http.clone()))
    );
    assert_eq!(
        path(&c.liveness_probe),
        Some(("/healthz".into(), http.clone()))
    );
    assert_eq!(path(&c.readiness_probe), Some(("/readyz".into(), http)));
    let startup = c.startup_probe.as_ref().expect("startup probe");
    let budget = startup.period_seconds.unwrap_or(10) * startup.failure_threshold.unwrap_or(3);
    assert!(
        budget >= 20 * 60,
        "a slow store open gets at least 20 minutes, got {budget}s"
    );
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    assert!(
        c.args.iter().flatten().all(|a| !a.contains("$(POD_IP)")),
        "no listener bound to the pod IP alone (port-forward dials localhost)"
    );
    assert!(
        c.args
            .iter()
            .flatten()
            .any(|a| a == "--admin-addr=0.0.0.0:7072"),
        "the admin API listens apart"
    );
    assert!(
        c.args.iter().flatten().any(|a| a == "--tls"),
        "gRPC over TLS by default"
    );
    let vols = pod_spec(&d).volumes.as_ref().expect("volumes");
    let cm = vols
        .iter()
        .find_map(|v| v.config_map.as_ref())
        .expect("config volume");
    assert_eq!(cm.name, "alpha-config");
    let sec = vols
        .iter()
        .find_map(|v| v.secret.as_ref())
        .expect("secret volume");
    assert_eq!(sec.secret_name.as_deref(), Some("alpha-admin-token"));
}

#[test]
fn spread_across_kubernetes_nodes_by_default_and_overridable() {
    let d = desired(&testnet(), 4, 1);
    let tsc = pod_spec(&d)
        .topology_spread_constraints
        .as_ref()
        .expect("default spread");
    assert_eq!(tsc[0].topology_key, "kubernetes.io/hostname");
    assert_eq!(tsc[0].max_skew, 1);
    assert_eq!(
        tsc[0]
            .label_selector
            .as_ref()
            .and_then(|l| l.match_labels.clone()),
        Some(selector_labels("alpha"))
    );
    let off = cluster(
        serde_json::json!({"nodes": 4, "shards": 10, "pod": {"topologySpreadConstraints": []}}),
    );
    assert_eq!(
        pod_spec(&desired(&off, 4, 1)).topology_spread_constraints,
        None
    );
    let zones = cluster(
        serde_json::json!({"nodes": 4, "shards": 10, "pod": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]}}),
    );
    let d = desired(&zones, 4, 1);
    let t = pod_spec(&d)
        .topology_spread_constraints
        .as_ref()
        .expect("user spread");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].topology_key, "topology.kubernetes.io/zone");
}

#[test]
fn pod_overrides_are_applied_but_cannot_steal_the_selector() {
    let sc = cluster(serde_json::json!({"nodes": 4, "shards": 10,
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
        "pod": {
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "storage", "operator": "Exists", "effect": "NoSchedule"}],
            "annotations": {"example.com/a": "1"},
            "labels": {"team": "storage", "app.kubernetes.io/instance": "mallory"}}}));
    let d = desired(&sc, 4, 1);
    let p = pod_spec(&d);
    assert_eq!(
        p.node_selector.as_ref().map(|n| n["disk"].as_str()),
        Some("ssd")
    );
    assert_eq!(p.tolerations.as_ref().map(Vec::len), Some(1));
    let tm = d
        .stateful_set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .expect("template metadata");
    assert_eq!(
        tm.annotations.as_ref().map(|a| a["example.com/a"].as_str()),
        Some("1")
    );
    let labels = tm.labels.as_ref().expect("labels");
    assert_eq!(labels["team"], "storage");
    assert_eq!(labels[meta::LABEL_INSTANCE], "alpha");
    let req = container(&d)
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(req["memory"].0, "4Gi");
}

#[test]
fn pdb_takes_the_computed_budget() {
    for n in [0, 1] {
        let d = desired(&testnet(), 4, n);
        let s = d.pdb.spec.expect("spec");
        assert_eq!(s.max_unavailable, Some(IntOrString::Int(n)));
        assert_eq!(
            s.selector.and_then(|l| l.match_labels),
            Some(selector_labels("alpha"))
        );
    }
}

#[test]
fn service_monitor_only_when_enabled_and_selects_the_headless_service() {
    assert!(desired(&testnet(), 4, 1).service_monitor.is_none());
    let sc = cluster(serde_json::json!({"nodes": 4, "shards": 10,
        "serviceMonitor": {"enabled": true, "labels": {"release": "prom"}}}));
    let d = desired(&sc, 4, 1);
    let sm = d.service_monitor.expect("service monitor");
    assert_eq!(
        sm.types.as_ref().map(|t| t.api_version.as_str()),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(
        sm.types.as_ref().map(|t| t.kind.as_str()),
        Some("ServiceMonitor")
    );
    let labels = sm.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels["release"], "prom");
    assert_eq!(sm.metadata.owner_references.as_ref().map(Vec::len), Some(1));
    let want: BTreeMap<String, String> =
        serde_json::from_value(sm.data["spec"]["selector"]["matchLabels"].clone()).expect("map");
    let headless = d.headless_service.metadata.labels.expect("labels");
    let client = d.client_service.metadata.labels.expect("labels");
    assert!(want.iter().all(|(k, v)| headless.get(k) == Some(v)));
    assert!(!want.iter().all(|(k, v)| client.get(k) == Some(v)));
    assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(
        sm.data["spec"]["namespaceSelector"]["matchNames"][0],
        "team-a"
    );
}

#[test]
fn member_addresses_follow_the_addressing_choice() {
    let mut sc = testnet();
    assert_eq!(sc.spec.addressing, Addressing::PodIp);
    assert_eq!(
        member_address(&sc, "alpha-2", "10.1.2.3").as_deref(),
        Some("https://10.1.2.3:7070")
    );
    sc.spec.addressing = Addressing::Dns;
    assert_eq!(
        member_address(&sc, "alpha-2", "10.1.2.3").as_deref(),
        Some("https://alpha-2.alpha-nodes.team-a.svc:7070")
    );
}

#[test]
fn selector_string_matches_the_selector_labels() {
    assert_eq!(
        selector_string("alpha"),
        "app.kubernetes.io/component=storage-node,app.kubernetes.io/instance=alpha,app.kubernetes.io/name=floe"
    );
    // and the owner reference points at this resource kind
    let sc = testnet();
    assert_eq!(StorageCluster::kind(&()), "StorageCluster");
    assert!(sc.controller_owner_ref(&()).is_some());
}
