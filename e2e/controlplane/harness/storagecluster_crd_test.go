//go:build e2e

package harness

// The StorageCluster CRD (crds/storagecluster.yaml, generated from operator/src/crd) against
// the real API server: installed with kubectl, the example manifests accepted, the invalid
// ones refused with the CEL rules' own messages, printer columns, defaults, and the status and
// scale subresources.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func repoPath(parts ...string) string {
	return filepath.Join(append([]string{"..", "..", ".."}, parts...)...)
}

// installCRDs applies crds/ as a user would and waits until the API serves the resource.
func installCRDs(t *testing.T) {
	t.Helper()
	kubectl(t, "apply", "-f", repoPath("crds"))
	kubectl(t, "wait", "--for", "condition=Established", "crd/storageclusters.floe.dev", "--timeout=60s")
}

// refused applies yaml (or runs kubectl args) expecting the API server to refuse it with every
// one of msgs in its answer.
func refused(t *testing.T, what string, out string, err error, msgs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: the API server accepted it:\n%s", what, out)
	}
	for _, m := range msgs {
		if !strings.Contains(out, m) {
			t.Fatalf("%s: refusal does not say %q:\n%s", what, m, out)
		}
	}
}

func applyYAML(t *testing.T, ns, yaml string) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "obj.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return run(t, "kubectl", "apply", "-n", ns, "-f", f)
}

func fscField(t *testing.T, ns, name, path string) string {
	t.Helper()
	return strings.TrimSpace(kubectl(t, "get", "fsc", name, "-n", ns, "-o", "jsonpath={"+path+"}"))
}

func TestStorageClusterCRDAcceptsTheExamples(t *testing.T) {
	installCRDs(t)
	ns := namespace(t, "fsc")
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet.yaml"))
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "production.yaml"))
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet-market.yaml"))

	// printer columns, in order
	lines := strings.Split(strings.TrimSpace(kubectl(t, "get", "fsc", "-n", ns)), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME NODES READY SHARDS EPOCH PHASE PRICE GATEWAY AGE" {
		t.Fatalf("kubectl get fsc columns: %q\n%s", got, strings.Join(lines, "\n"))
	}
	if len(lines) != 4 {
		t.Fatalf("three StorageClusters expected:\n%s", strings.Join(lines, "\n"))
	}

	// the schema's defaults are applied by the API server
	for path, want := range map[string]string{
		".spec.addressing":                 "PodIP",
		".spec.stake.default":              "100",
		".spec.imagePullPolicy":            "IfNotPresent",
		".spec.paused":                     "false",
		".spec.storage.retention.onDelete": "Delete",
	} {
		if got := fscField(t, ns, "testnet", path); got != want {
			t.Fatalf("testnet %s = %q, want %q", path, got, want)
		}
	}
	// a null size is dropped and defaulted, never stored (the operator could not read it back)
	if _, err := applyYAML(t, ns, "apiVersion: floe.dev/v1alpha1\nkind: StorageCluster\nmetadata: {name: nullsize}\nspec: {nodes: 4, shards: 4, storage: {size: null}}\n"); err != nil {
		t.Fatalf("null size: %v", err)
	}
	if got := fscField(t, ns, "nullsize", ".spec.storage.size"); got != "10Gi" {
		t.Fatalf("null size stored as %q", got)
	}
	kubectl(t, "delete", "fsc", "nullsize", "-n", ns)
	if got := fscField(t, ns, "mainnet", ".spec.addressing"); got != "DNS" {
		t.Fatalf("mainnet addressing %q", got)
	}

	// status subresource: written apart from the spec, shown in the columns, and the scale
	// subresource reads readyNodes and the selector from it
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--subresource", "status", "--type", "merge", "-p",
		`{"status":{"readyNodes":3,"epoch":7,"phase":"Available","selector":"app.kubernetes.io/instance=testnet"}}`)
	row := ""
	for _, l := range strings.Split(kubectl(t, "get", "fsc", "testnet", "-n", ns, "--no-headers"), "\n") {
		if strings.HasPrefix(l, "testnet") {
			row = strings.Join(strings.Fields(l), " ")
		}
	}
	if !strings.HasPrefix(row, "testnet 4 3 10 7 Available ") {
		t.Fatalf("row after status patch: %q", row)
	}
	var scale struct {
		Spec   struct{ Replicas int } `json:"spec"`
		Status struct {
			Replicas int    `json:"replicas"`
			Selector string `json:"selector"`
		} `json:"status"`
	}
	raw := kubectl(t, "get", "--raw", "/apis/floe.dev/v1alpha1/namespaces/"+ns+"/storageclusters/testnet/scale")
	if err := json.Unmarshal([]byte(raw), &scale); err != nil {
		t.Fatal(err)
	}
	if scale.Spec.Replicas != 4 || scale.Status.Replicas != 3 || scale.Status.Selector != "app.kubernetes.io/instance=testnet" {
		t.Fatalf("scale subresource: %s", raw)
	}

	// kubectl scale changes spec.nodes
	kubectl(t, "scale", "fsc/testnet", "-n", ns, "--replicas", "6")
	if got := fscField(t, ns, "testnet", ".spec.nodes"); got != "6" {
		t.Fatalf("after kubectl scale --replicas 6: spec.nodes = %s", got)
	}
	// ... but not beyond the shard count
	out, err := run(t, "kubectl", "scale", "fsc/testnet", "-n", ns, "--replicas", "11")
	refused(t, "scale to 11 nodes with 10 shards", out, err, "spec.shards must be at least spec.nodes")
	if got := fscField(t, ns, "testnet", ".spec.nodes"); got != "6" {
		t.Fatalf("a refused scale changed spec.nodes to %s", got)
	}
}

func TestStorageClusterCRDRefusesInvalidResources(t *testing.T) {
	installCRDs(t)
	ns := namespace(t, "fsc-invalid")

	out, err := run(t, "kubectl", "apply", "-n", ns, "-f", repoPath("manifests", "examples", "invalid.yaml"))
	refused(t, "manifests/examples/invalid.yaml", out, err,
		"spec.shards must be at least spec.nodes: every storage node needs at least one shard",
		"spec.epochDuration must be a duration such as 30s, 10m, 2h or 1d")

	// shards are immutable, and so is the volume size
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet.yaml"))
	out, err = run(t, "kubectl", "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"shards":12}}`)
	refused(t, "changing spec.shards", out, err, "spec.shards is immutable")
	out, err = run(t, "kubectl", "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"storage":{"size":"2Gi"}}}`)
	refused(t, "changing spec.storage.size", out, err, "spec.storage.size cannot be changed after creation")
	out, err = run(t, "kubectl", "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"storage":{"storageClassName":"other"}}}`)
	refused(t, "setting spec.storage.storageClassName later", out, err, "spec.storage.storageClassName cannot be changed after creation")
	if got := fscField(t, ns, "testnet", ".spec.shards"); got != "10" {
		t.Fatalf("refused patches changed spec.shards to %s", got)
	}
	// other fields stay editable
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"epochDuration":"1m","paused":true}}`)

	cases := []struct{ name, yaml, msg string }{
		{"shards below 4", "spec: {nodes: 1, shards: 2}", "greater than or equal to 4"},
		{"no nodes", "spec: {nodes: 0, shards: 4}", "greater than or equal to 1"},
		{"bad challenge timeout", "spec: {nodes: 4, shards: 4, challenges: {timeout: soon}}", "spec.challenges.timeout must be a duration"},
		{"bad size", "spec: {nodes: 4, shards: 4, storage: {size: lots}}", "spec.storage.size must be a positive quantity"},
		{"numeric size", "spec: {nodes: 4, shards: 4, storage: {size: 10}}", "spec.storage.size must be a positive quantity"},
		{"selector label", "spec: {nodes: 4, shards: 4, pod: {labels: {app.kubernetes.io/instance: x}}}", "spec.pod.labels may not set app.kubernetes.io/* labels"},
		{"bad retention", "spec: {nodes: 4, shards: 4, storage: {retention: {onDelete: Shred}}}", "supported values: \"Retain\", \"Delete\""},
		{"typo", "spec: {nodes: 4, shards: 4, epochDurationn: 1m}", "unknown field \"spec.epochDurationn\""},
		{"genesis account not hex", "spec: {nodes: 4, shards: 4, market: {enabled: true, genesisBalances: [{account: alice, units: 5}]}}", "spec.market.genesisBalances[0].account"},
	}
	for _, c := range cases {
		out, err := applyYAML(t, ns, "apiVersion: floe.dev/v1alpha1\nkind: StorageCluster\nmetadata: {name: bad}\n"+c.yaml+"\n")
		refused(t, c.name, out, err, c.msg)
	}
	long := "a" + strings.Repeat("b", 40)
	out, err = applyYAML(t, ns, "apiVersion: floe.dev/v1alpha1\nkind: StorageCluster\nmetadata: {name: "+long+"}\nspec: {nodes: 4, shards: 4}\n")
	refused(t, "a 41-character name", out, err, "metadata.name must be at most 40 characters")
	out, err = applyYAML(t, ns, "apiVersion: floe.dev/v1alpha1\nkind: StorageCluster\nmetadata: {name: 1st}\nspec: {nodes: 4, shards: 4}\n")
	refused(t, "a name starting with a digit", out, err, "metadata.name must start with a lowercase letter")
}
