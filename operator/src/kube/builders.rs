//! Pure functions from a `StorageCluster` (plus the few facts the reconcile supplies) to the
//! Kubernetes objects it should own. No I/O: the reconcile server-side-applies what these
//! return, and tests check them field by field.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::meta::{
    self, selector_labels, ClusterMeta, MetaError, ADMIN_PORT, COMPONENT_CLIENT, COMPONENT_CONFIG,
    COMPONENT_NODE, GRPC_PORT, HTTP_PORT, LISTEN_ALL,
};
use crate::crd::spec::Addressing;
use crate::crd::validate::ValidSpec;
use crate::crd::StorageCluster;

/// Key of the admin token in its Secret (and file name in the pod).
pub const TOKEN_KEY: &str = "token";
/// Key of the node configuration in the ConfigMap.
pub const CONFIG_KEY: &str = "node.toml";

/// Paths inside the node container. Distinct mount points: floe-kubelet (tier 3) rewrites a
/// mount path that prefixes an argument, and the kubelet forbids nested read-only mounts.
pub const DATA_MOUNT: &str = "/var/lib/floe";
pub const CONFIG_MOUNT: &str = "/etc/floe/config";
pub const TOKEN_MOUNT: &str = "/etc/floe/admin";

/// UID/GID the node runs as (the distroless `nonroot` user); `fsGroup` makes volumes writable.
pub const NODE_UID: i64 = 65532;

/// Share of the volume the node may fill before it refuses writes (`max-storage`): the rest is
/// headroom for metadata, the store's temporary files and shards kept one more epoch as sync
/// sources.
pub const STORAGE_FILL_PERCENT: u64 = 90;

/// Startup probe: 5 s × 360 = 30 minutes for a node to open its store. Walrus operators saw
/// store opens of 12 minutes; a liveness kill during one restarts it from zero.
pub const STARTUP_PERIOD_SECONDS: i32 = 5;
pub const STARTUP_FAILURE_THRESHOLD: i32 = 360;

/// Group/version/kind of the Prometheus-operator ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// What the reconcile knows besides the resource itself.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub cluster: &'a StorageCluster,
    /// The spec's parsed values ([`crate::crd::validate::validate`]).
    pub valid: &'a ValidSpec,
    /// The admin token: the existing Secret's, or a new one ([`generate_admin_token`]) only
    /// when there is none, so nodes never see their token change under them.
    pub admin_token: &'a str,
    /// StatefulSet replicas. Not simply `spec.nodes`: on scale-down the pods stay until the
    /// control plane has moved their shards away.
    pub replicas: i32,
    /// From [`super::pdb::max_unavailable`].
    pub pdb_max_unavailable: i32,
    /// Where the operator runs, when it writes NetworkPolicies (`--network-policy`).
    pub operator: Option<&'a OperatorPeer>,
    /// The market's keys: the existing Secret's, or new ones only when there is none (a new
    /// control key would orphan every lifetime signed so far).
    pub market_keys: &'a super::market::MarketKeys,
}

/// The operator's pods, the only clients of the nodes' admin port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPeer {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

/// Every object the operator owns for one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub headless_service: Service,
    pub client_service: Service,
    pub config_map: ConfigMap,
    pub admin_secret: Secret,
    pub stateful_set: StatefulSet,
    pub pdb: PodDisruptionBudget,
    /// Only when `spec.serviceMonitor.enabled`.
    pub service_monitor: Option<DynamicObject>,
    /// Only when the operator runs with `--network-policy`.
    pub network_policy: Option<NetworkPolicy>,
    /// Only when `spec.gateway.enabled`.
    pub gateway: Option<super::gateway::GatewayObjects>,
    /// Only when `spec.market.enabled`.
    pub market: Option<super::market::MarketObjects>,
}

/// Build everything.
pub fn build(inputs: &Inputs<'_>) -> Result<Desired, MetaError> {
    let m = ClusterMeta::new(inputs.cluster)?;
    Ok(Desired {
        headless_service: headless_service(&m),
        client_service: client_service(&m),
        config_map: config_map(&m, inputs.cluster, inputs.valid),
        admin_secret: admin_secret(&m, inputs.admin_token),
        stateful_set: stateful_set(&m, inputs.cluster, inputs.replicas),
        pdb: pdb(&m, inputs.pdb_max_unavailable),
        service_monitor: service_monitor(&m, inputs.cluster),
        network_policy: inputs.operator.map(|op| network_policy(&m, op)),
        gateway: super::gateway::build(&m, inputs.cluster),
        market: super::market::build(&m, inputs.cluster, inputs.market_keys),
    })
}

/// A fresh admin token: 32 random bytes, hex.
pub fn generate_admin_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

/// The token held by an existing admin Secret, if it holds a usable one.
pub fn existing_admin_token(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let t = std::str::from_utf8(&raw.0).ok()?.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Address of a member in the committee, per `spec.addressing`.
pub fn member_address(cluster: &StorageCluster, pod: &str, pod_ip: &str) -> Option<String> {
    match cluster.spec.addressing {
        // nodes serve TLS bound to their identity (`--tls`): members and clients connect with
        // `https://` and check the certificate against the committee's node ID
        Addressing::PodIp => Some(format!("https://{pod_ip}:{GRPC_PORT}")),
        Addressing::Dns => {
            let ns = cluster.metadata.namespace.as_deref()?;
            let svc = meta::Names::new(cluster.metadata.name.as_deref()?).headless_service();
            Some(format!("https://{pod}.{svc}.{ns}.svc:{GRPC_PORT}"))
        }
    }
}

fn ports() -> Vec<ServicePort> {
    vec![
        ServicePort {
            name: Some("grpc".into()),
            port: GRPC_PORT,
            target_port: Some(IntOrString::String("grpc".into())),
            // gRPC over TLS (the node's own certificate), not h2c
            app_protocol: None,
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("http".into()),
            port: HTTP_PORT,
            target_port: Some(IntOrString::String("http".into())),
            ..ServicePort::default()
        },
    ]
}

/// Headless Service: the StatefulSet's `serviceName` (stable per-pod DNS names) and the
/// ServiceMonitor's target. It publishes not-ready addresses because a node's `/readyz` is 503
/// until it has a committee, and members must reach each other before that.
pub fn headless_service(m: &ClusterMeta) -> Service {
    Service {
        metadata: m.object(m.names.headless_service(), COMPONENT_NODE),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&m.names.cluster)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// ClusterIP Service for clients: only Ready nodes (those that know the committee).
pub fn client_service(m: &ClusterMeta) -> Service {
    Service {
        metadata: m.object(m.names.client_service(), COMPONENT_CLIENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&m.names.cluster)),
            ports: Some(ports().into_iter().take(1).collect()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Node configuration file (keys of `floe-node --config`). Paths stay in the arguments, where
/// the kubelet-side tooling can see them.
/// With a market, the nodes' price votes: everyone's, then one table per pod with an
/// override, which the node picks by its pod name (`FLOE_VOTE_AS`).
pub fn node_config(m: &ClusterMeta, sc: &StorageCluster, valid: &ValidSpec) -> String {
    let max_storage = valid.volume_bytes / 100 * STORAGE_FILL_PERCENT;
    let mut c = format!(
        "# Written by floe-operator; edits are overwritten.\nlog-format = \"json\"\nmax-storage = {max_storage}\n"
    );
    let market = &sc.spec.market;
    if market.enabled {
        let v = &market.price_votes;
        c.push_str(&format!(
            "storage-price = {}\nwrite-price = {}\n",
            v.storage, v.write
        ));
        let mut overrides = v.overrides.clone();
        overrides.sort_by_key(|o| o.ordinal);
        for o in overrides {
            c.push_str(&format!(
                "\n[price-votes.\"{}\"]\nstorage-price = {}\nwrite-price = {}\n",
                m.names.pod(o.ordinal),
                o.storage,
                o.write
            ));
        }
    }
    c
}

pub fn config_map(m: &ClusterMeta, sc: &StorageCluster, valid: &ValidSpec) -> ConfigMap {
    ConfigMap {
        metadata: m.object(m.names.config_map(), COMPONENT_CONFIG),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            node_config(m, sc, valid),
        )])),
        ..ConfigMap::default()
    }
}

/// The admin bearer token shared by the operator (which sends committees and epoch commands)
/// and the nodes (which refuse admin calls without it).
pub fn admin_secret(m: &ClusterMeta, token: &str) -> Secret {
    Secret {
        metadata: m.object(m.names.admin_secret(), COMPONENT_CONFIG),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Default resource requests when `spec.resources` is unset: small enough for a laptop
/// cluster, present so the scheduler accounts for the nodes.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("250m".into())),
            ("memory".to_string(), Quantity("512Mi".into())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Default spread: at most one pod more on any Kubernetes node than on another, as a
/// preference (`ScheduleAnyway`), so small clusters and single-node test clusters still
/// schedule. Production should ask for `DoNotSchedule` across zones (see the example).
pub fn default_topology_spread(cluster: &str) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(cluster)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]
}

pub fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The storage-node container.
pub fn node_container(sc: &StorageCluster) -> Container {
    Container {
        name: "node".into(),
        image: Some(sc.spec.image.clone()),
        image_pull_policy: Some(sc.spec.image_pull_policy.as_str().into()),
        // Listen on every address of the pod (0.0.0.0), not only the pod IP: `kubectl
        // port-forward` dials localhost inside the pod. Members are advertised by the pod IP or
        // DNS name (`member_address`), never by what they bind. (floe-kubelet, the tier-3 test
        // agent, maps 0.0.0.0 onto the pod's own loopback address.)
        args: Some(vec![
            format!("--config={CONFIG_MOUNT}/{CONFIG_KEY}"),
            format!("--data-dir={DATA_MOUNT}/data"),
            // The key lives on the volume: the identity follows the data. A pod that loses its
            // volume comes back as a new member and rebuilds by recovery.
            format!("--key-file={DATA_MOUNT}/node.key"),
            format!("--admin-token-file={TOKEN_MOUNT}/{TOKEN_KEY}"),
            format!("--grpc-addr={LISTEN_ALL}:{GRPC_PORT}"),
            format!("--http-addr={LISTEN_ALL}:{HTTP_PORT}"),
            format!("--admin-addr={LISTEN_ALL}:{ADMIN_PORT}"),
            "--tls".to_string(),
        ]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            // the node's price votes are the config file's entry for its pod, if any
            field_env("FLOE_VOTE_AS", "metadata.name"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: ADMIN_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        startup_probe: Some(http_probe(
            "/healthz",
            STARTUP_PERIOD_SECONDS,
            STARTUP_FAILURE_THRESHOLD,
        )),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        // Ready = store open and committee known; clients reach only Ready nodes.
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        resources: Some(sc.spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("data", DATA_MOUNT, false),
            mount("config", CONFIG_MOUNT, true),
            mount("admin-token", TOKEN_MOUNT, true),
        ]),
        ..Container::default()
    }
}

/// Pod template: the user's labels and annotations first, the operator's labels over them.
pub fn pod_template(m: &ClusterMeta, sc: &StorageCluster) -> PodTemplateSpec {
    let o = &sc.spec.pod;
    let mut labels = o.labels.clone();
    labels.extend(meta::labels(&m.names.cluster, COMPONENT_NODE));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!o.annotations.is_empty()).then(|| o.annotations.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![node_container(sc)],
            // nodes never call the Kubernetes API
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(60),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NODE_UID),
                run_as_group: Some(NODE_UID),
                fs_group: Some(NODE_UID),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            node_selector: (!o.node_selector.is_empty()).then(|| o.node_selector.clone()),
            tolerations: (!o.tolerations.is_empty()).then(|| o.tolerations.clone()),
            affinity: o.affinity.clone(),
            topology_spread_constraints: match &o.topology_spread_constraints {
                None => Some(default_topology_spread(&m.names.cluster)),
                Some(v) if v.is_empty() => None,
                Some(v) => Some(v.clone()),
            },
            volumes: Some(vec![
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: m.names.config_map(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "admin-token".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(m.names.admin_secret()),
                        default_mode: Some(0o440),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
    }
}

/// The StatefulSet of storage nodes.
///
/// `Parallel` pod management: members start together (a committee needs them all, and one
/// stuck pod must not block the others). `OnDelete` updates: the operator rolls pods itself,
/// one at a time and only between epoch changes. Volumes follow `spec.storage.retention`.
pub fn stateful_set(m: &ClusterMeta, sc: &StorageCluster, replicas: i32) -> StatefulSet {
    let storage = &sc.spec.storage;
    StatefulSet {
        metadata: m.object(m.names.stateful_set(), COMPONENT_NODE),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(m.names.headless_service()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&m.names.cluster)),
                ..LabelSelector::default()
            },
            template: pod_template(m, sc),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(storage.retention.on_delete.as_str().into()),
                    when_scaled: Some(storage.retention.on_scale_down.as_str().into()),
                },
            ),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(selector_labels(&m.names.cluster)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            storage.size.clone(),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            }]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// PodDisruptionBudget of the storage nodes; `max_unavailable` from
/// [`super::pdb::max_unavailable`].
pub fn pdb(m: &ClusterMeta, max_unavailable: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: m.object(m.names.pdb(), COMPONENT_NODE),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&m.names.cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// Ingress to a cluster's node pods: gRPC and HTTP from anywhere (clients, peers, Prometheus,
/// kubelet probes), the admin port only from the operator's pods — the admin token is then no
/// longer the only thing between a pod in the cluster and `SetCommittee`. Like Strimzi's
/// generated policies it only allows: once a policy selects the pods, anything it does not list
/// is dropped, by a CNI that enforces NetworkPolicy (others ignore it).
pub fn network_policy(m: &ClusterMeta, operator: &OperatorPeer) -> NetworkPolicy {
    let tcp = |port: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    NetworkPolicy {
        metadata: m.object(m.names.network_policy(), COMPONENT_NODE),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&m.names.cluster)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![tcp(GRPC_PORT), tcp(HTTP_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                "kubernetes.io/metadata.name".to_string(),
                                operator.namespace.clone(),
                            )])),
                            ..LabelSelector::default()
                        }),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(operator.pod_labels.clone()),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![tcp(ADMIN_PORT)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// ServiceMonitor scraping every node's `/metrics` through the headless Service.
pub fn service_monitor(m: &ClusterMeta, sc: &StorageCluster) -> Option<DynamicObject> {
    let sm = &sc.spec.service_monitor;
    if !sm.enabled {
        return None;
    }
    let mut metadata = m.object(m.names.service_monitor(), COMPONENT_NODE);
    let mut labels = sm.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    let mut obj = DynamicObject::new(&m.names.service_monitor(), &service_monitor_resource());
    obj.metadata = metadata;
    obj.data = serde_json::json!({
        "spec": {
            "selector": {"matchLabels": meta::labels(&m.names.cluster, COMPONENT_NODE)},
            "namespaceSelector": {"matchNames": [m.namespace]},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        }
    });
    Some(obj)
}
