//! Every YAML under `manifests/` parses into its k8s-openapi (or `StorageCluster`) type, and
//! nothing in it is silently dropped on the way: k8s-openapi and serde ignore unknown fields,
//! so a typo (`imagePullPolice`) would otherwise pass. Each document is parsed, serialised
//! again, and every field of the original must come back with the same value.

use std::path::{Path, PathBuf};

use floe_operator::crd::validate::validate;
use floe_operator::crd::StorageCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("manifests/ exists") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every key of `orig` is in `back` with an equal value (numbers compared as numbers).
fn assert_subset(orig: &Value, back: &Value, at: &str) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let path = format!("{at}.{k}");
                let bv = b
                    .get(k)
                    .unwrap_or_else(|| panic!("{path} is not a field of this type (typo?)"));
                assert_subset(v, bv, &path);
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            assert_eq!(o.len(), b.len(), "{at}: list length changed");
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                assert_subset(ov, bv, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(o), Value::Number(b)) => assert_eq!(o.as_f64(), b.as_f64(), "{at}"),
        (o, b) => assert_eq!(o, b, "{at}"),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value, file: &Path) -> T {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_subset(doc, &back, &file.display().to_string());
    typed
}

fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).expect("readable");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

#[test]
fn every_manifest_parses_into_its_type_without_losing_fields() {
    let files = yaml_files(&manifests_dir());
    assert!(files.len() >= 6, "manifests found: {files:?}");
    let mut kinds = Vec::new();
    for file in &files {
        for doc in documents(file) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Namespace" => drop(round_trip::<Namespace>(&doc, file)),
                "ServiceAccount" => drop(round_trip::<ServiceAccount>(&doc, file)),
                "ClusterRole" => drop(round_trip::<ClusterRole>(&doc, file)),
                "ClusterRoleBinding" => drop(round_trip::<ClusterRoleBinding>(&doc, file)),
                "Deployment" => drop(round_trip::<Deployment>(&doc, file)),
                "StorageCluster" => drop(round_trip::<StorageCluster>(&doc, file)),
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            }
            kinds.push(kind);
        }
    }
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ] {
        assert!(kinds.iter().any(|x| x == k), "manifests/ installs a {k}");
    }
}

fn example(name: &str) -> StorageCluster {
    let file = manifests_dir().join("examples").join(name);
    let docs = documents(&file);
    assert_eq!(docs.len(), 1, "{name}: one StorageCluster");
    round_trip(&docs[0], &file)
}

#[test]
fn valid_examples_pass_the_controller_checks_and_the_cel_rules() {
    for name in ["testnet.yaml", "production.yaml"] {
        let sc = example(name);
        validate(&sc.spec).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(sc.spec.shards >= sc.spec.nodes, "{name}: shards >= nodes");
        assert!((4..=1000).contains(&sc.spec.shards), "{name}");
    }
    let t = example("testnet.yaml");
    assert_eq!((t.spec.nodes, t.spec.epoch_duration.as_str()), (4, "30s"));
}

#[test]
fn the_invalid_example_breaks_the_rules_the_api_server_checks() {
    let sc = example("invalid.yaml");
    assert!(sc.spec.shards < sc.spec.nodes, "violates shards >= nodes");
    assert!(validate(&sc.spec).is_err(), "epochDuration is malformed");
}

/// The operator's RBAC grants what its reconcile needs and nothing cluster-admin-like.
#[test]
fn rbac_is_least_privilege() {
    let file = manifests_dir().join("10-rbac.yaml");
    let role: ClusterRole = documents(&file)
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .map(|d| serde_json::from_value(d).expect("ClusterRole"))
        .expect("a ClusterRole");
    let rules = role.rules.expect("rules");
    for r in &rules {
        for field in [&r.verbs, r.resources.as_ref().expect("resources")] {
            assert!(!field.iter().any(|v| v == "*"), "no wildcards: {r:?}");
        }
    }
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    assert!(allows("floe.dev", "storageclusters", "watch"));
    assert!(allows("floe.dev", "storageclusters/status", "patch"));
    assert!(allows("apps", "statefulsets", "patch"));
    assert!(allows("", "pods", "delete"));
    assert!(allows("policy", "poddisruptionbudgets", "create"));
    assert!(
        !allows("", "secrets", "update"),
        "secrets are written by apply (patch) only"
    );
    assert!(!allows("", "nodes", "get"));
}
