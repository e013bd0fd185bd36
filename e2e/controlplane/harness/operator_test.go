//go:build e2e

package harness

// floe-operator run the way users run it: `kubectl apply -f crds/ -f manifests/`, so
// floe-kubelet starts the operator pod under its ServiceAccount and the ClusterRole of
// manifests/10-rbac.yaml is exercised for real. Then a StorageCluster: the operator builds and
// server-side-applies its objects, floe-kubelet runs the node pods it describes, status and
// conditions are written, the control plane forms a committee, paused clusters are left
// alone, scale-up is immediate, and deletion runs the finalizer and garbage-collects
// everything. Epochs on Kubernetes (scaling, failures, the operator's restart) are in
// epochs_test.go.

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type fscStatus struct {
	Metadata struct {
		Generation int64    `json:"generation"`
		Finalizers []string `json:"finalizers"`
	} `json:"metadata"`
	Status struct {
		ObservedGeneration int64  `json:"observedGeneration"`
		Phase              string `json:"phase"`
		Selector           string `json:"selector"`
		Conditions         []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Reason string `json:"reason"`
		} `json:"conditions"`
		Epoch      int            `json:"epoch"`
		EpochState string         `json:"epochState"`
		Committee  []committeeRow `json:"committee"`
	} `json:"status"`
}

func getFSC(t *testing.T, ns, name string) fscStatus {
	t.Helper()
	var s fscStatus
	if err := json.Unmarshal([]byte(kubectl(t, "get", "fsc", name, "-n", ns, "-o", "json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s fscStatus) condition(typ string) (status, reason string) {
	for _, c := range s.Status.Conditions {
		if c.Type == typ {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

// observed waits until the operator has written status for the object's current generation.
func observed(t *testing.T, ns, name string) fscStatus {
	t.Helper()
	var s fscStatus
	eventually(t, "status of generation", 60*time.Second, func() (bool, string) {
		s = getFSC(t, ns, name)
		return s.Status.ObservedGeneration == s.Metadata.Generation, kubectl(t, "get", "fsc", name, "-n", ns, "-o", "jsonpath={.status}")
	})
	return s
}

func stsField(t *testing.T, ns, path string) string {
	out, _ := run(t, "kubectl", "get", "statefulset", "testnet", "-n", ns, "-o", "jsonpath={"+path+"}")
	return strings.TrimSpace(out)
}

// installOperator installs the operator as users do and waits until it is Ready; the
// Deployment is removed when the test ends.
func installOperator(t *testing.T) {
	t.Helper()
	installCRDs(t)
	kubectl(t, "apply", "-f", repoPath("manifests"))
	t.Cleanup(func() {
		_, _ = run(t, "kubectl", "delete", "deployment", "floe-operator", "-n", "floe-system", "--wait=true", "--timeout=30s")
	})
	// Ready means it listed StorageClusters as system:serviceaccount:floe-system:floe-operator
	eventually(t, "operator pod Ready", 90*time.Second, func() (bool, string) {
		return len(readyPods(t, "floe-system")) == 1, kubectl(t, "get", "pods", "-n", "floe-system", "-o", "wide")
	})
}

// ownedObjects waits until all seven objects of StorageCluster testnet exist in ns, each with
// its owner reference (the NetworkPolicy: both the manifests and the chart run the operator
// with --network-policy).
func ownedObjects(t *testing.T, ns string) {
	t.Helper()
	eventually(t, "owned objects in "+ns, 60*time.Second, func() (bool, string) {
		out, err := run(t, "kubectl", "get", "statefulset/testnet", "service/testnet", "service/testnet-nodes",
			"configmap/testnet-config", "secret/testnet-admin-token", "poddisruptionbudget/testnet",
			"networkpolicy/testnet-nodes", "-n", ns,
			"-o", "jsonpath={range .items[*]}{.kind}:{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {end}")
		return err == nil && strings.Count(out, ":StorageCluster/testnet") == 7, out
	})
}

// adminPortPolicy is the NetworkPolicy's admin rule: its port and who may reach it.
func adminPortPolicy(t *testing.T, ns string) string {
	t.Helper()
	return strings.TrimSpace(kubectl(t, "get", "networkpolicy", "testnet-nodes", "-n", ns, "-o",
		`jsonpath={range .spec.ingress[?(@.from)]}{.ports[*].port} from {.from[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name}/{.from[0].podSelector.matchLabels.app\.kubernetes\.io/name}{end}`))
}

func runningPods(t *testing.T, ns string) int {
	n := 0
	for _, p := range pods(t, ns).Items {
		if p.Status.Phase == "Running" && p.Status.PodIP != "" {
			n++
		}
	}
	return n
}

func TestOperatorRunsAsAPodAndBuildsTheCluster(t *testing.T) {
	installOperator(t)
	ns := namespace(t, "op")
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet.yaml"))
	ownedObjects(t, ns)
	if got := stsField(t, ns, ".spec.replicas"); got != "4" {
		t.Fatalf("StatefulSet replicas %s", got)
	}
	if got := stsField(t, ns, ".spec.updateStrategy.type") + "/" + stsField(t, ns, ".spec.podManagementPolicy"); got != "OnDelete/Parallel" {
		t.Fatalf("StatefulSet strategy %s", got)
	}
	if got := strings.TrimSpace(kubectl(t, "get", "service", "testnet-nodes", "-n", ns, "-o", "jsonpath={.spec.publishNotReadyAddresses}")); got != "true" {
		t.Fatalf("headless Service publishNotReadyAddresses = %q", got)
	}
	// the API server accepted the policy as built: the admin port only from the operator's pods
	if got := adminPortPolicy(t, ns); got != "7072 from floe-system/floe-operator" {
		t.Fatalf("NetworkPolicy admin rule = %q", got)
	}

	// status and finalizer
	s := observed(t, ns, "testnet")
	if len(s.Metadata.Finalizers) != 1 || s.Metadata.Finalizers[0] != "floe.dev/cleanup" {
		t.Fatalf("finalizers %v", s.Metadata.Finalizers)
	}
	if st, _ := s.condition("Invalid"); st != "False" {
		t.Fatalf("Invalid condition %q", st)
	}
	// the control plane forms the first committee once all four pods answer
	eventually(t, "the cluster Available with a committee", 90*time.Second, func() (bool, string) {
		s := getFSC(t, ns, "testnet")
		st, reason := s.condition("Available")
		return st == "True" && reason == "CommitteeServing", kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.status}")
	})
	if !strings.Contains(s.Status.Selector, "app.kubernetes.io/instance=testnet") {
		t.Fatalf("selector %q", s.Status.Selector)
	}

	// floe-kubelet runs the four node processes the operator's StatefulSet describes
	eventually(t, "four node pods Running", 90*time.Second, func() (bool, string) {
		return runningPods(t, ns) == 4, kubectl(t, "get", "pods", "-n", ns, "-o", "wide")
	})

	// the admin token survives reconciles of a changed spec
	token := kubectl(t, "get", "secret", "testnet-admin-token", "-n", ns, "-o", "jsonpath={.data.token}")
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"epochDuration":"1m"}}`)
	observed(t, ns, "testnet")
	if again := kubectl(t, "get", "secret", "testnet-admin-token", "-n", ns, "-o", "jsonpath={.data.token}"); again != token || token == "" {
		t.Fatalf("admin token changed or empty: %q -> %q", token, again)
	}

	// paused: a spec change is observed but not applied
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p",
		`{"spec":{"paused":true,"image":"ghcr.io/floe-dev/floe-node:0.1.1"}}`)
	s = observed(t, ns, "testnet")
	if st, _ := s.condition("Paused"); st != "True" || s.Status.Phase != "Paused" {
		t.Fatalf("paused cluster: Paused=%s phase %s", st, s.Status.Phase)
	}
	if img := stsField(t, ns, ".spec.template.spec.containers[0].image"); img != "ghcr.io/floe-dev/floe-node:0.1.0" {
		t.Fatalf("a paused cluster's StatefulSet was changed: image %s", img)
	}
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"paused":false}}`)
	observed(t, ns, "testnet")
	if img := stsField(t, ns, ".spec.template.spec.containers[0].image"); img != "ghcr.io/floe-dev/floe-node:0.1.1" {
		t.Fatalf("after unpausing, image %s", img)
	}

	// scale up is immediate; scale down keeps the pods until the control plane drained them
	// (the whole epoch flow of scaling is in epochs_test.go)
	kubectl(t, "scale", "fsc/testnet", "-n", ns, "--replicas", "6")
	observed(t, ns, "testnet")
	if got := stsField(t, ns, ".spec.replicas"); got != "6" {
		t.Fatalf("after scaling to 6: StatefulSet replicas %s", got)
	}

	// deletion: finalizer runs, owned objects are garbage-collected, node processes stop
	kubectl(t, "delete", "fsc", "testnet", "-n", ns, "--wait=true", "--timeout=60s")
	eventually(t, "owned objects garbage-collected", 90*time.Second, func() (bool, string) {
		out, _ := run(t, "kubectl", "get", "statefulset,service,configmap,secret,poddisruptionbudget,networkpolicy,pods", "-n", ns,
			"-l", "app.kubernetes.io/instance=testnet", "-o", "name")
		return strings.TrimSpace(out) == "", out
	})
}

// What the API server cannot judge (an epoch shorter than the operator's minimum) becomes the
// Invalid condition; the cluster is left alone until its spec is fixed.
func TestOperatorLeavesAnInvalidClusterAlone(t *testing.T) {
	installOperator(t)
	ns := namespace(t, "op-invalid")
	if out, err := applyYAML(t, ns, "apiVersion: floe.dev/v1alpha1\nkind: StorageCluster\nmetadata: {name: testnet}\nspec: {nodes: 4, shards: 10, epochDuration: 5s, challenges: {timeout: 2s}}\n"); err != nil {
		t.Fatalf("the API server refused a spec only the operator can judge: %v\n%s", err, out)
	}
	s := observed(t, ns, "testnet")
	if st, reason := s.condition("Invalid"); st != "True" || reason != "InvalidSpec" || s.Status.Phase != "Invalid" {
		t.Fatalf("Invalid=%s/%s phase %s", st, reason, s.Status.Phase)
	}
	msg := kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", `jsonpath={.status.conditions[?(@.type=="Invalid")].message}`)
	if !strings.Contains(msg, "spec.epochDuration \"5s\" is shorter than the minimum of 10s") {
		t.Fatalf("Invalid message: %q", msg)
	}
	eventually(t, "Warning Event InvalidSpec", 30*time.Second, func() (bool, string) {
		out := kubectl(t, "get", "events", "-n", ns, "-o", "jsonpath={range .items[*]}{.type}/{.reason}/{.involvedObject.kind} {end}")
		return strings.Contains(out, "Warning/InvalidSpec/StorageCluster"), out
	})
	if out := strings.TrimSpace(kubectl(t, "get", "statefulset,service,configmap,secret", "-n", ns, "-l", "app.kubernetes.io/instance=testnet", "-o", "name")); out != "" {
		t.Fatalf("objects built for an invalid cluster:\n%s", out)
	}
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"epochDuration":"30s"}}`)
	s = observed(t, ns, "testnet")
	if st, _ := s.condition("Invalid"); st != "False" {
		t.Fatalf("Invalid=%s after the fix", st)
	}
	ownedObjects(t, ns)
}

// Two clusters in two namespaces; deleting one leaves the other untouched.
func TestOperatorKeepsClustersApart(t *testing.T) {
	installOperator(t)
	a, b := namespace(t, "op-a"), namespace(t, "op-b")
	for _, ns := range []string{a, b} {
		kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet.yaml"))
	}
	for _, ns := range []string{a, b} {
		ownedObjects(t, ns)
		observed(t, ns, "testnet")
		eventually(t, "four node pods Running in "+ns, 90*time.Second, func() (bool, string) {
			return runningPods(t, ns) == 4, kubectl(t, "get", "pods", "-n", ns, "-o", "wide")
		})
	}
	uid := kubectl(t, "get", "statefulset", "testnet", "-n", b, "-o", "jsonpath={.metadata.uid}")
	kubectl(t, "delete", "fsc", "testnet", "-n", a, "--wait=true", "--timeout=60s")
	eventually(t, "cluster a garbage-collected", 90*time.Second, func() (bool, string) {
		out, _ := run(t, "kubectl", "get", "statefulset,service,configmap,secret,poddisruptionbudget,pods", "-n", a,
			"-l", "app.kubernetes.io/instance=testnet", "-o", "name")
		return strings.TrimSpace(out) == "", out
	})
	// b: same StatefulSet, its pods still running, still reconciled
	if again := kubectl(t, "get", "statefulset", "testnet", "-n", b, "-o", "jsonpath={.metadata.uid}"); again != uid {
		t.Fatalf("cluster b's StatefulSet was replaced: %s -> %s", uid, again)
	}
	if n := runningPods(t, b); n != 4 {
		t.Fatalf("cluster b has %d running pods", n)
	}
	kubectl(t, "patch", "fsc", "testnet", "-n", b, "--type", "merge", "-p", `{"spec":{"epochDuration":"1m"}}`)
	observed(t, b, "testnet")
}

// Two replicas: one holds the Lease and reconciles; when its pod is deleted the other takes
// over and reconciles the next change.
func TestOperatorReplicasElectOneLeader(t *testing.T) {
	installOperator(t)
	kubectl(t, "scale", "deployment", "floe-operator", "-n", "floe-system", "--replicas", "2")
	eventually(t, "two operator pods Ready", 90*time.Second, func() (bool, string) {
		return len(readyPods(t, "floe-system")) == 2, kubectl(t, "get", "pods", "-n", "floe-system", "-o", "wide")
	})
	holder := func() string {
		out, _ := run(t, "kubectl", "get", "lease", "floe-operator", "-n", "floe-system", "-o", "jsonpath={.spec.holderIdentity}")
		return strings.TrimSpace(out)
	}
	var leader string
	eventually(t, "a leader among the replicas", 60*time.Second, func() (bool, string) {
		leader = holder()
		_, ok := readyPods(t, "floe-system")[leader]
		return ok, leader
	})

	ns := namespace(t, "op-lease")
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet.yaml"))
	ownedObjects(t, ns)
	observed(t, ns, "testnet")

	kubectl(t, "delete", "pod", leader, "-n", "floe-system", "--wait=true", "--timeout=60s")
	eventually(t, "another replica takes the Lease", 60*time.Second, func() (bool, string) {
		h := holder()
		return h != "" && h != leader, h
	})
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"epochDuration":"1m"}}`)
	observed(t, ns, "testnet")
}
