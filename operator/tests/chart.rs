//! The Helm charts against the code: the CRD templated in charts/floe-crds must be
//! crds/storagecluster.yaml (generated from the Rust types) with only Helm's metadata added.
//! The rendered charts and their metric names are checked on the real API server
//! (e2e/controlplane/harness/chart_test.go); the dashboard's schema in e2e/dashboard.

use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The part of a CRD file from its top-level `spec:` on.
fn spec_part(text: &str) -> &str {
    let at = text
        .find("\nspec:\n")
        .expect("a top-level spec: in the CRD file");
    &text[at + 1..]
}

#[test]
fn templated_crd_is_the_generated_crd() {
    let generated = std::fs::read_to_string(repo("crds/storagecluster.yaml")).unwrap();
    let templated =
        std::fs::read_to_string(repo("charts/floe-crds/templates/storagecluster.yaml")).unwrap();
    assert!(
        spec_part(&templated) == spec_part(&generated),
        "charts/floe-crds/templates/storagecluster.yaml differs from crds/storagecluster.yaml; \
         regenerate it with charts/sync-crd.sh"
    );
    for line in [
        "apiVersion: apiextensions.k8s.io/v1\n",
        "kind: CustomResourceDefinition\n",
        "  name: storageclusters.floe.dev\n",
        "    helm.sh/resource-policy: keep\n",
    ] {
        assert!(
            templated.contains(line),
            "the templated CRD lacks {line:?}; regenerate it with charts/sync-crd.sh"
        );
    }
    assert!(
        !generated.contains("{{"),
        "crds/storagecluster.yaml contains '{{{{', which Helm would interpret"
    );
}

#[test]
fn crd_is_not_in_a_crds_folder_of_the_chart() {
    // Helm installs a chart's crds/ once and never upgrades it: the CRD must stay a template.
    for chart in ["charts/floe", "charts/floe-crds"] {
        assert!(
            !repo(chart).join("crds").exists(),
            "{chart}/crds/ would never be upgraded by helm upgrade; template the CRD instead"
        );
    }
}
