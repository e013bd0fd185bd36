//! `StorageCluster` spec: what a platform team asks for. Everything the schema alone cannot say
//! is a CEL rule (`x-kubernetes-validations`) with a message written for the person running
//! `kubectl apply`; what only the controller can judge is in [`super::validate`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration;
use super::status::StorageClusterStatus;

/// Default node image. floe-kubelet (tier 3) maps any image whose last path segment starts with
/// `floe` to the binary of that name, so the same default runs in the harness and in a cluster.
pub const DEFAULT_IMAGE: &str = "ghcr.io/floe-dev/floe-node:0.1.0";

/// What a platform team asks for: `nodes` storage-node pods sharing `shards` shards.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "floe.dev",
    version = "v1alpha1",
    kind = "StorageCluster",
    plural = "storageclusters",
    shortname = "fsc",
    category = "floe",
    namespaced,
    status = "StorageClusterStatus",
    derive = "PartialEq",
    doc = "A Floe storage network: storage-node pods whose epochs, committees, shard moves and storage challenges the floe-operator drives.",
    scale(
        spec_replicas_path = ".spec.nodes",
        status_replicas_path = ".status.readyNodes",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".spec.nodes", description = "Storage nodes asked for"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyNodes", description = "Storage-node pods Ready"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards", description = "Shards (fixed at creation)"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch", description = "Current epoch"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Summary of the conditions"),
    printcolumn(name = "Price", type_ = "integer", json_path = ".status.storagePrice", description = "Storage price voted by the nodes (units per MiB of encoded size per epoch; spec.market)"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".status.gatewayUrl", description = "URL of the HTTP gateway (spec.gateway)"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must start with a lowercase letter and hold only lowercase letters, digits and '-': it names the cluster's Services and pods"),
    validation = Rule::new("self.metadata.name.size() <= 40")
        .message("metadata.name must be at most 40 characters: pod, volume and label names are built from it and Kubernetes limits those to 63"),
)]
#[x_kube(
    validation = Rule::new("self.shards >= self.nodes")
        .message("spec.shards must be at least spec.nodes: every storage node needs at least one shard (shards cannot be changed later, so scale nodes down or create a new cluster with more shards)")
        .field_path(".nodes"),
)]
#[serde(rename_all = "camelCase")]
pub struct StorageClusterSpec {
    /// Storage-node pods. Scaling down drains the highest-numbered pods first: they leave the
    /// committee at an epoch boundary and go only after their shards have moved.
    #[schemars(range(min = 1, max = 1000))]
    pub nodes: i32,

    /// Shards of the network (4–1000, at least `nodes`). Fixed at creation: every blob is
    /// encoded for this count.
    #[schemars(range(min = 4, max = 1000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.shards is immutable: every stored blob is encoded for the shard count the cluster was created with; create a new StorageCluster to change it"))]
    pub shards: i32,

    /// Length of an epoch, e.g. `30s`, `10m`, `2h`, `1d` or `1h30m`. Committee changes,
    /// challenges and rewards happen once per epoch.
    #[serde(default = "default_epoch_duration")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message("spec.epochDuration must be a duration such as 30s, 10m, 2h or 1d (whole numbers with a unit s, m, h or d; 1h30m also works)"))]
    pub epoch_duration: String,

    /// Storage-node container image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// When the kubelet pulls `image`.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// How members address each other and how clients reach them.
    #[serde(default)]
    pub addressing: Addressing,

    /// Stake per node: shards are apportioned by stake (D'Hondt, capped per node).
    #[serde(default)]
    pub stake: StakeSpec,

    /// Each node's persistent volume and what happens to it.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory of the storage-node container. Default: requests of 250m CPU and 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Placement and metadata of the storage-node pods.
    #[serde(default)]
    pub pod: PodOverrides,

    /// Storage challenges issued every epoch.
    #[serde(default)]
    pub challenges: ChallengeSpec,

    /// Reward units shared every epoch among the members that passed their challenges, in
    /// proportion to their shards.
    #[serde(default = "default_reward")]
    pub reward_per_epoch: u64,

    /// Stop reconciling: the operator touches nothing (no objects, no epochs) and reports the
    /// `Paused` condition. Pods keep running.
    #[serde(default)]
    pub paused: bool,

    /// A Prometheus-operator ServiceMonitor for the node pods' `/metrics`.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,

    /// The HTTP gateway (Walrus's publisher and aggregator API): a Deployment and a Service.
    #[serde(default)]
    pub gateway: GatewaySpec,

    /// Storage that is paid for (docs/economics.md): blob lifetimes bought from the cluster's
    /// control pod, prices voted by the nodes, fees paid out as rewards. Off by default.
    #[serde(default)]
    pub market: MarketSpec,
}

fn default_epoch_duration() -> String {
    "10m".into()
}
fn default_image() -> String {
    DEFAULT_IMAGE.into()
}
fn default_reward() -> u64 {
    1000
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// How a member's address is written into the committee.
///
/// `PodIP` (default) works everywhere, including clusters without cluster DNS (the tier-3
/// harness); the operator rewrites a member's address within a reconcile when its pod comes
/// back with a new IP. `DNS` uses the headless Service's stable names
/// (`<pod>.<cluster>-nodes.<namespace>.svc`), which survive pod restarts but need cluster DNS
/// wherever clients run.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    #[default]
    #[serde(rename = "PodIP")]
    PodIp,
    #[serde(rename = "DNS")]
    Dns,
}

/// Stake: shards are apportioned by it.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StakeSpec {
    /// Stake of every node without an override.
    #[serde(default = "default_stake")]
    #[schemars(range(min = 1))]
    pub default: u64,
    /// Per-node stake by pod ordinal (`<cluster>-<ordinal>`). Overrides for ordinals beyond
    /// `nodes` are kept and ignored, so scaling down and up again restores them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["ordinal"]))]
    pub overrides: Vec<StakeOverride>,
}

impl Default for StakeSpec {
    fn default() -> Self {
        StakeSpec {
            default: default_stake(),
            overrides: Vec::new(),
        }
    }
}

impl StakeSpec {
    /// Stake of the pod with this ordinal.
    pub fn for_ordinal(&self, ordinal: u32) -> u64 {
        self.overrides
            .iter()
            .find(|o| o.ordinal == ordinal)
            .map_or(self.default, |o| o.stake)
    }
}

fn default_stake() -> u64 {
    100
}

/// Stake of one node.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StakeOverride {
    /// Pod ordinal: 0 for `<cluster>-0`.
    #[schemars(range(max = 999))]
    pub ordinal: u32,
    #[schemars(range(min = 1))]
    pub stake: u64,
}

/// Per-node volume.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("spec.storage.storageClassName cannot be changed after creation (the volumes already exist in their class)"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's PersistentVolumeClaim. Fixed at creation (StatefulSet volume claim
    /// templates cannot change; volume growth is not supported yet). The node stops accepting
    /// writes at 90 % of it.
    #[serde(default = "default_size")]
    // k8s-openapi's Quantity schema is nullable; a stored null would not deserialize here and
    // would break the operator's watch of every StorageCluster, so the API must refuse it.
    #[schemars(extend("nullable" = false))]
    #[x_kube(
        validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.storage.size must be a positive quantity such as 10Gi or 500G"),
        validation = Rule::new("self == oldSelf").message("spec.storage.size cannot be changed after creation (volume growth is not supported yet)")
    )]
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster's default class when unset. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to volumes of removed pods and of a deleted cluster.
    #[serde(default)]
    pub retention: RetentionSpec,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_size(),
            storage_class_name: None,
            retention: RetentionSpec::default(),
        }
    }
}

fn default_size() -> Quantity {
    Quantity("10Gi".into())
}

/// Volume retention. `Retain` keeps data a person may still want; `Delete` frees the space.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Volumes of pods removed by a scale-down (after their shards moved away).
    #[serde(default)]
    pub on_scale_down: Retention,
    /// Volumes when the StorageCluster is deleted.
    #[serde(default)]
    pub on_delete: Retention,
}

/// Keep or delete a volume.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    #[default]
    Retain,
    Delete,
}

impl Retention {
    pub fn as_str(self) -> &'static str {
        match self {
            Retention::Retain => "Retain",
            Retention::Delete => "Delete",
        }
    }
}

/// Placement and metadata of the storage-node pods.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replaces the default spread (at most one pod more per Kubernetes node than on any
    /// other, `ScheduleAnyway`). An empty list switches spreading off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra pod labels. The operator's own `app.kubernetes.io/*` labels select the pods and
    /// cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('app.kubernetes.io/'))").message("spec.pod.labels may not set app.kubernetes.io/* labels: the operator selects its pods by them"))]
    pub labels: BTreeMap<String, String>,
}

/// Storage challenges.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeSpec {
    /// Symbols each member must prove per epoch. The default, 1375, catches a node that
    /// dropped 1 % of its slivers with probability ≥ 1 − 10⁻⁶ (docs/control.md).
    #[serde(default = "default_samples")]
    #[schemars(range(max = 10000))]
    pub samples: u32,
    /// How long a member has to answer, e.g. `30s`.
    #[serde(default = "default_challenge_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message("spec.challenges.timeout must be a duration such as 30s, 2m or 1h"))]
    pub timeout: String,
}

impl Default for ChallengeSpec {
    fn default() -> Self {
        ChallengeSpec {
            samples: default_samples(),
            timeout: default_challenge_timeout(),
        }
    }
}

fn default_samples() -> u32 {
    1375
}
fn default_challenge_timeout() -> String {
    "30s".into()
}

/// Prometheus-operator ServiceMonitor.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create a ServiceMonitor (needs the monitoring.coreos.com CRDs).
    #[serde(default)]
    pub enabled: bool,
    /// Labels the Prometheus instance selects ServiceMonitors by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The HTTP gateway (`floe-gateway`, docs/gateway.md), run from the node image.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Run the gateway.
    #[serde(default)]
    pub enabled: bool,
    /// Gateway pods (stateless; any number).
    #[serde(default = "one_replica")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Type of the gateway's Service: ClusterIP, NodePort or LoadBalancer.
    #[serde(default = "cluster_ip")]
    #[schemars(extend("enum" = ["ClusterIP", "NodePort", "LoadBalancer"]))]
    pub service_type: String,
    /// Secret whose key `jwt-secret` holds the HS256 secret publisher tokens are signed with;
    /// without it anyone who reaches the gateway may write (reads never need a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,
    /// Compute resources of the gateway container [default: 100m CPU, 128Mi memory requested,
    /// 1Gi memory limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Largest upload in bytes (413 above) [default: 1 GiB].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// An Ingress in front of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<GatewayIngress>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            enabled: false,
            replicas: 1,
            service_type: cluster_ip(),
            auth_secret: None,
            resources: None,
            max_body_bytes: None,
            ingress: None,
        }
    }
}

fn one_replica() -> i32 {
    1
}
fn cluster_ip() -> String {
    "ClusterIP".into()
}

/// An Ingress routing a host to the gateway.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayIngress {
    /// Host name the Ingress answers for.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret with the TLS certificate for `host`; plain HTTP without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The market (docs/economics.md, "On Kubernetes"): a control pod (`<cluster>-control`, one
/// replica, its journal on its own volume) sells blob lifetimes through the `floe.v1.Control`
/// API at `<cluster>-control.<namespace>.svc:7100`; committees carry its key, so nodes accept
/// slivers of registered blobs only and collect expired and deleted ones.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MarketSpec {
    /// Sell storage.
    #[serde(default)]
    pub enabled: bool,
    /// The furthest a blob's lifetime may end beyond the first epoch it pays for.
    #[serde(default = "default_max_epochs_ahead")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_epochs_ahead: u32,
    /// Units the faucet grants per request; 0 closes it (a production network funds accounts
    /// through `genesisBalances`).
    #[serde(default)]
    pub faucet_grant: u64,
    /// Balances credited once, when the market first sees the account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["account"]))]
    pub genesis_balances: Vec<GenesisBalance>,
    /// The nodes' price votes: every node's, and per pod ordinal.
    #[serde(default)]
    pub price_votes: PriceVotesSpec,
    /// The gateway's own account (its key in the `<cluster>-control-keys` Secret) is topped up
    /// to this many units whenever it falls below a tenth of it.
    #[serde(default = "default_gateway_funds")]
    pub gateway_funds: u64,
    /// Size of the control pod's volume (the journal). Fixed at creation.
    #[serde(default = "default_market_volume")]
    #[schemars(extend("nullable" = false))]
    #[x_kube(
        validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.market.volumeSize must be a positive quantity such as 1Gi"),
        validation = Rule::new("self == oldSelf").message("spec.market.volumeSize cannot be changed after creation")
    )]
    pub volume_size: Quantity,
    /// CPU and memory of the control container [default: 50m CPU and 64Mi requested].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for MarketSpec {
    fn default() -> Self {
        MarketSpec {
            enabled: false,
            max_epochs_ahead: default_max_epochs_ahead(),
            faucet_grant: 0,
            genesis_balances: Vec::new(),
            price_votes: PriceVotesSpec::default(),
            gateway_funds: default_gateway_funds(),
            volume_size: default_market_volume(),
            resources: None,
        }
    }
}

fn default_max_epochs_ahead() -> u32 {
    53
}
fn default_gateway_funds() -> u64 {
    1_000_000_000_000
}
fn default_market_volume() -> Quantity {
    Quantity("1Gi".into())
}

/// An account's starting balance.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GenesisBalance {
    /// Account ID: the Ed25519 public key in hex (`floe account show`).
    #[schemars(length(min = 64, max = 64), extend("pattern" = "^[0-9a-f]{64}$"))]
    pub account: String,
    #[schemars(range(min = 1))]
    pub units: u64,
}

/// Price votes (units per MiB of encoded size: `storage` per epoch, `write` once).
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PriceVotesSpec {
    #[serde(default = "default_storage_vote")]
    pub storage: u64,
    #[serde(default = "default_write_vote")]
    pub write: u64,
    /// Votes of single nodes by pod ordinal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["ordinal"]))]
    pub overrides: Vec<PriceVoteOverride>,
}

impl Default for PriceVotesSpec {
    fn default() -> Self {
        PriceVotesSpec {
            storage: default_storage_vote(),
            write: default_write_vote(),
            overrides: Vec::new(),
        }
    }
}

impl PriceVotesSpec {
    /// (storage, write) of the pod with this ordinal.
    pub fn for_ordinal(&self, ordinal: u32) -> (u64, u64) {
        self.overrides
            .iter()
            .find(|o| o.ordinal == ordinal)
            .map_or((self.storage, self.write), |o| (o.storage, o.write))
    }
}

fn default_storage_vote() -> u64 {
    100
}
fn default_write_vote() -> u64 {
    20
}

/// One node's price votes.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PriceVoteOverride {
    /// Pod ordinal: 0 for `<cluster>-0`.
    #[schemars(range(max = 999))]
    pub ordinal: u32,
    pub storage: u64,
    pub write: u64,
}
