//! The one place that names the objects of a cluster and stamps their labels and owner
//! reference, so every builder (and the reconcile's clean-up by label) agrees.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::StorageCluster;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// Value of `app.kubernetes.io/name` on everything the operator creates for a cluster.
pub const APP_NAME: &str = "floe";
/// Value of `app.kubernetes.io/managed-by`; also the server-side-apply field manager.
pub const MANAGER: &str = "floe-operator";

/// Component label of the storage-node pods, their headless Service, volumes and PDB.
pub const COMPONENT_NODE: &str = "storage-node";
/// Component label of the client Service.
pub const COMPONENT_CLIENT: &str = "client";
/// Component label of the ConfigMap and the admin-token Secret.
pub const COMPONENT_CONFIG: &str = "config";
/// The HTTP gateway's pods and Service.
pub const COMPONENT_GATEWAY: &str = "gateway";
/// The market's control pod (`spec.market`).
pub const COMPONENT_CONTROL: &str = "control";
/// Port of the control API (`floe.v1.Control` and `floe.v1.MarketAdmin`).
pub const CONTROL_PORT: i32 = 7100;
/// Port of the gateway's HTTP API (and its Service).
pub const GATEWAY_PORT: i32 = 31415;

/// Ports of `floe-node` (node/src/server/config.rs defaults).
pub const GRPC_PORT: i32 = 7070;
pub const HTTP_PORT: i32 = 7071;
/// The admin API's own listener: only the operator calls it; no Service exposes it, so a
/// NetworkPolicy can admit the operator alone.
pub const ADMIN_PORT: i32 = 7072;
/// The address node pods listen on: every address of the pod, so that `kubectl port-forward`
/// (which dials localhost inside the pod) reaches them as well as peers on the pod IP. IPv4:
/// pods of IPv6-only clusters would need `[::]`.
pub const LISTEN_ALL: &str = "0.0.0.0";

/// Why objects cannot be built for a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error(
        "the StorageCluster has no metadata.{0} (objects built from it need an owner reference)"
    )]
    Missing(&'static str),
}

/// Object names of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
}

impl Names {
    pub fn new(cluster: &str) -> Self {
        Names {
            cluster: cluster.to_string(),
        }
    }
    /// StatefulSet; pods are `<cluster>-<ordinal>`.
    pub fn stateful_set(&self) -> String {
        self.cluster.clone()
    }
    /// Pod of `ordinal`.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }
    /// Ordinal of one of this cluster's pods (`<cluster>-<ordinal>`): stake overrides and
    /// scale-down (ordinals ≥ `spec.nodes` are leaving) are keyed by it.
    pub fn ordinal(&self, pod: &str) -> Option<u32> {
        let digits = pod.strip_prefix(&self.cluster)?.strip_prefix('-')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        digits.parse().ok()
    }
    /// Headless Service (the StatefulSet's `serviceName`, per-pod DNS names).
    pub fn headless_service(&self) -> String {
        format!("{}-nodes", self.cluster)
    }
    /// ClusterIP Service for clients.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }
    pub fn admin_secret(&self) -> String {
        format!("{}-admin-token", self.cluster)
    }
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }
    pub fn service_monitor(&self) -> String {
        self.cluster.clone()
    }
    pub fn network_policy(&self) -> String {
        format!("{}-nodes", self.cluster)
    }
    /// Deployment, Service and Ingress of the HTTP gateway.
    pub fn gateway(&self) -> String {
        format!("{}-gateway", self.cluster)
    }
    /// StatefulSet and Service of the market's control pod (`<cluster>-control-0`).
    pub fn control(&self) -> String {
        format!("{}-control", self.cluster)
    }
    /// The market's Secret (control key, gateway account key).
    pub fn control_keys(&self) -> String {
        format!("{}-control-keys", self.cluster)
    }
}

/// Labels that select a cluster's storage-node pods (immutable in the StatefulSet, so never
/// change them).
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    component_selector(cluster, COMPONENT_NODE)
}

/// Labels that select the pods of one `component` of `cluster` (nodes, gateway, control pod).
pub fn component_selector(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), cluster.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

/// [`selector_labels`] as a label-selector string (`status.selector`, for the scale subresource).
pub fn selector_string(cluster: &str) -> String {
    label_selector(&selector_labels(cluster))
}

/// Labels as a label-selector string (`k=v,k=v`).
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// All labels of an object of `component` in `cluster`.
pub fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), cluster.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_PART_OF.to_string(), APP_NAME.to_string()),
    ])
}

/// What every object built for one cluster shares: namespace, names and owner.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMeta {
    pub names: Names,
    pub namespace: String,
    /// Controller owner reference to the StorageCluster: deleting it garbage-collects every
    /// object built here, and kube-runtime's `owns` maps their events back to it.
    pub owner: OwnerReference,
}

impl ClusterMeta {
    pub fn new(sc: &StorageCluster) -> Result<Self, MetaError> {
        let name = sc
            .metadata
            .name
            .as_deref()
            .ok_or(MetaError::Missing("name"))?;
        let namespace = sc
            .metadata
            .namespace
            .clone()
            .ok_or(MetaError::Missing("namespace"))?;
        if sc.metadata.uid.is_none() {
            return Err(MetaError::Missing("uid"));
        }
        let owner = sc
            .controller_owner_ref(&())
            .ok_or(MetaError::Missing("uid"))?;
        Ok(ClusterMeta {
            names: Names::new(name),
            namespace,
            owner,
        })
    }

    /// Metadata of an object called `name` of `component`.
    pub fn object(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.names.cluster, component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_of_this_clusters_pods_only() {
        let n = Names::new("alpha");
        assert_eq!(n.ordinal(&n.pod(0)), Some(0));
        assert_eq!(n.ordinal(&n.pod(12)), Some(12));
        for other in [
            "alpha",
            "alpha-",
            "alpha-x",
            "alpha-01",
            "alpha-beta-1",
            "alphabet-1",
            "beta-1",
        ] {
            assert_eq!(n.ordinal(other), None, "{other}");
        }
        // a cluster whose name extends another's
        assert_eq!(Names::new("alpha-beta").ordinal("alpha-beta-3"), Some(3));
    }
}
