//! The `StorageCluster` custom resource (group `floe.dev`, version `v1alpha1`): its Rust types
//! (kube-derive + schemars, with CEL rules), the generated CRD YAML checked in at
//! `crds/storagecluster.yaml`, status conditions, and the checks only the controller can make.

pub mod duration;
pub mod spec;
pub mod status;
pub mod validate;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use spec::{StorageCluster, StorageClusterSpec};
pub use status::StorageClusterStatus;

/// Where the generated CRD is checked in, relative to the repository root.
pub const CRD_PATH: &str = "crds/storagecluster.yaml";

/// The command that regenerates [`CRD_PATH`].
pub const REGENERATE: &str =
    "cargo run -p floe-operator --bin floe -- crd > crds/storagecluster.yaml";

/// The CustomResourceDefinition of `StorageCluster`.
pub fn crd() -> CustomResourceDefinition {
    StorageCluster::crd()
}

/// Why the CRD could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("rendering the CRD as YAML: {0}")]
pub struct RenderError(#[from] serde_saphyr::SerializeError);

/// The CRD as the YAML checked in at [`CRD_PATH`], with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, RenderError> {
    let body = serde_saphyr::to_string(&crd())?;
    Ok(format!(
        "# Generated from operator/src/crd by `floe crd`; do not edit by hand.\n# Regenerate: {REGENERATE}\n---\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn schema() -> Value {
        let crd = serde_json::to_value(crd()).expect("CRD serializes");
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
            .cloned()
            .expect("schema present")
    }

    fn rules(v: &Value) -> Vec<(String, String)> {
        v.get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["rule"].as_str().unwrap_or_default().to_string(),
                            r["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The checked-in CRD must be exactly what the types generate: `kubectl apply -f crds/`
    /// installs that file, not the types.
    #[test]
    fn checked_in_crd_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/storagecluster.yaml");
        let generated = crd_yaml().expect("renders");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{CRD_PATH} is missing or differs from the StorageCluster types; regenerate it with\n    {REGENERATE}"
        );
    }

    #[test]
    fn the_yaml_reads_back_as_the_same_crd() {
        let yaml = crd_yaml().expect("renders");
        let back: CustomResourceDefinition = serde_saphyr::from_str(&yaml).expect("parses");
        assert_eq!(back, crd());
    }

    #[test]
    fn names_subresources_and_columns() {
        let crd = crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("storageclusters.floe.dev")
        );
        assert_eq!(crd.spec.group, "floe.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "StorageCluster");
        assert_eq!(crd.spec.names.short_names, Some(vec!["fsc".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        let sub = v.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.nodes");
        assert_eq!(scale.status_replicas_path, ".status.readyNodes");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            ["Nodes", "Ready", "Shards", "Epoch", "Phase", "Price", "Gateway", "Age"]
        );
    }

    #[test]
    fn cel_rules_sit_where_they_apply() {
        let s = schema();
        let root = rules(&s);
        assert!(
            root.iter()
                .any(|(r, _)| r.contains("metadata.name.size() <= 40")),
            "{root:?}"
        );
        let spec = &s["properties"]["spec"];
        assert!(rules(spec)
            .iter()
            .any(|(r, m)| r == "self.shards >= self.nodes" && m.contains("at least spec.nodes")));
        let shards = &spec["properties"]["shards"];
        assert_eq!(shards["minimum"], 4.0);
        assert_eq!(shards["maximum"], 1000.0);
        assert!(rules(shards)
            .iter()
            .any(|(r, m)| r == "self == oldSelf" && m.starts_with("spec.shards is immutable")));
        assert_eq!(spec["properties"]["nodes"]["minimum"], 1.0);
        assert!(rules(&spec["properties"]["epochDuration"])
            .iter()
            .any(|(r, _)| r == duration::CEL_RULE));
        assert!(!rules(&spec["properties"]["storage"]).is_empty());
        assert!(!rules(&spec["properties"]["storage"]["properties"]["size"]).is_empty());
        assert!(!rules(&spec["properties"]["challenges"]["properties"]["timeout"]).is_empty());
        assert!(!rules(&spec["properties"]["pod"]["properties"]["labels"]).is_empty());
        assert_eq!(
            spec["properties"]["stake"]["properties"]["overrides"]["x-kubernetes-list-type"],
            "map"
        );
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let s: StorageClusterSpec =
            serde_json::from_value(serde_json::json!({"nodes": 4, "shards": 10})).expect("parses");
        assert_eq!(s.epoch_duration, "10m");
        assert_eq!(s.image, spec::DEFAULT_IMAGE);
        assert_eq!(s.stake.for_ordinal(3), 100);
        assert_eq!(s.storage.size.0, "10Gi");
        assert_eq!(s.storage.retention.on_delete, spec::Retention::Retain);
        assert!(!s.paused);
        // the API server applies the same defaults from the schema
        let sch = schema();
        assert_eq!(
            sch["properties"]["spec"]["properties"]["epochDuration"]["default"],
            "10m"
        );
    }
}
