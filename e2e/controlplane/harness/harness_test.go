//go:build e2e

// Package harness proves the test control plane: a real kube-apiserver, etcd,
// kube-controller-manager and kube-scheduler, with floe-kubelet running Floe pods as processes.
// Run through e2e/run-k8s-tests.sh, which brings the control plane up and sets KUBECONFIG,
// FLOE_E2E_STATE and HELM.
package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, "kubectl", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func helm(t *testing.T) string {
	h := os.Getenv("HELM")
	if h == "" {
		t.Fatal("HELM is not set (run through e2e/run-k8s-tests.sh)")
	}
	return h
}

func namespace(t *testing.T, prefix string) string {
	ns := fmt.Sprintf("%s-%d", prefix, rand.Intn(1_000_000))
	kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() { _, _ = run(t, "kubectl", "delete", "namespace", ns, "--wait=false") })
	// pods are refused until the controller-manager has created the namespace's default
	// ServiceAccount
	eventually(t, "default ServiceAccount of "+ns, 30*time.Second, func() (bool, string) {
		out, err := run(t, "kubectl", "get", "serviceaccount", "default", "-n", ns)
		return err == nil, out
	})
	return ns
}

func eventually(t *testing.T, what string, timeout time.Duration, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, detail := f()
		if ok {
			return
		}
		last = detail
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
}

type podList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"metadata"`
		Status struct {
			PodIP      string `json:"podIP"`
			Phase      string `json:"phase"`
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	} `json:"items"`
}

func pods(t *testing.T, ns string) podList {
	var l podList
	if err := json.Unmarshal([]byte(kubectl(t, "get", "pods", "-n", ns, "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func readyPods(t *testing.T, ns string) map[string]string {
	ready := map[string]string{}
	for _, p := range pods(t, ns).Items {
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				ready[p.Metadata.Name] = p.Status.PodIP
			}
		}
	}
	return ready
}

// pvDir is the host directory behind a claim.
func pvDir(t *testing.T, ns, claim string) string {
	pv := strings.TrimSpace(kubectl(t, "get", "pvc", claim, "-n", ns, "-o", "jsonpath={.spec.volumeName}"))
	return strings.TrimSpace(kubectl(t, "get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}"))
}

// processesUsing counts running floe-node processes whose command line mentions one of dirs.
func processesUsing(dirs []string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "floe-node") {
			continue
		}
		for _, d := range dirs {
			if strings.Contains(string(cmdline), d+"/") {
				n++
				break
			}
		}
	}
	return n
}

func grpcServing(ip string) error {
	// the pods these tests write themselves run floe-node without --tls (the operator's pods
	// serve TLS; their tests go through the operator and its status)
	conn, err := grpc.NewClient(ip+":7070", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if r.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %v", r.Status)
	}
	return nil
}

func metrics(ip string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + ip + ":7071/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestStatefulSetOfFloeNodesRunsAsProcesses(t *testing.T) {
	ns := namespace(t, "sts")
	chart := filepath.Join("..", "..", "fixtures", "floe-statefulset")
	if out, err := run(t, helm(t), "lint", chart); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	rendered, err := run(t, helm(t), "template", "fs", chart, "--namespace", ns)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, rendered)
	}
	for _, kind := range []string{"kind: ConfigMap", "kind: Service", "kind: StatefulSet"} {
		if !strings.Contains(rendered, kind) {
			t.Fatalf("rendered chart lacks %q:\n%s", kind, rendered)
		}
	}
	manifest := filepath.Join(t.TempDir(), "fs.yaml")
	if err := os.WriteFile(manifest, []byte(rendered), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-n", ns, "-f", manifest)

	eventually(t, "4 Ready pods", 120*time.Second, func() (bool, string) {
		r := readyPods(t, ns)
		return len(r) == 4, fmt.Sprint(r)
	})
	var dirs []string
	for i := 0; i < 4; i++ {
		dirs = append(dirs, pvDir(t, ns, fmt.Sprintf("data-fs-%d", i)))
	}
	if n := processesUsing(dirs); n != 4 {
		t.Fatalf("%d floe-node processes run for this StatefulSet, want 4", n)
	}
	for name, ip := range readyPods(t, ns) {
		if !strings.HasPrefix(ip, "127.0.0.") {
			t.Fatalf("pod %s has IP %q, want a loopback address", name, ip)
		}
		if err := grpcServing(ip); err != nil {
			t.Fatalf("pod %s gRPC health at %s: %v", name, ip, err)
		}
		m, err := metrics(ip)
		if err != nil || !strings.Contains(m, "floe_node_build_info") {
			t.Fatalf("pod %s /metrics at %s: %v\n%.300s", name, ip, err, m)
		}
	}

	// a deleted pod comes back, on the same volume directory, with the same identity
	keyBefore, err := os.ReadFile(filepath.Join(dirs[3], "node.key"))
	if err != nil {
		t.Fatalf("fs-3 wrote no key into its volume: %v", err)
	}
	oldUID := strings.TrimSpace(kubectl(t, "get", "pod", "fs-3", "-n", ns, "-o", "jsonpath={.metadata.uid}"))
	kubectl(t, "delete", "pod", "fs-3", "-n", ns, "--wait=false")
	eventually(t, "fs-3 recreated and Ready", 90*time.Second, func() (bool, string) {
		uid, _ := run(t, "kubectl", "get", "pod", "fs-3", "-n", ns, "-o", "jsonpath={.metadata.uid}")
		_, ready := readyPods(t, ns)["fs-3"]
		return strings.TrimSpace(uid) != oldUID && ready, uid
	})
	if d := pvDir(t, ns, "data-fs-3"); d != dirs[3] {
		t.Fatalf("fs-3 came back on %s, want its old volume %s", d, dirs[3])
	}
	keyAfter, _ := os.ReadFile(filepath.Join(dirs[3], "node.key"))
	if string(keyAfter) != string(keyBefore) {
		t.Fatal("fs-3's node key changed: the volume did not outlive the pod")
	}
	if n := processesUsing(dirs[3:]); n != 1 {
		t.Fatalf("%d processes on fs-3's volume, want 1", n)
	}

	// scaling down stops processes
	kubectl(t, "scale", "statefulset", "fs", "-n", ns, "--replicas", "2")
	eventually(t, "2 processes after scaling to 2", 60*time.Second, func() (bool, string) {
		n := processesUsing(dirs)
		return n == 2 && len(pods(t, ns).Items) == 2, fmt.Sprintf("%d processes", n)
	})

	// deleting the StatefulSet garbage-collects its pods (kube-controller-manager) and the
	// agent stops their processes
	kubectl(t, "delete", "statefulset", "fs", "-n", ns, "--cascade=background")
	eventually(t, "pods garbage-collected", 60*time.Second, func() (bool, string) {
		n := processesUsing(dirs)
		return len(pods(t, ns).Items) == 0 && n == 0, fmt.Sprintf("%d pods, %d processes", len(pods(t, ns).Items), n)
	})
	// volumes outlive everything (reclaim policy Retain)
	if _, err := os.Stat(filepath.Join(dirs[0], "node.key")); err != nil {
		t.Fatalf("volume of fs-0 gone: %v", err)
	}
}

func TestAPIServerRefusesInvalidResources(t *testing.T) {
	ns := namespace(t, "invalid")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name!\ndata:\n  a: b\n"), 0o600)
	out, err := run(t, "kubectl", "apply", "-n", ns, "-f", bad)
	if err == nil {
		t.Fatalf("the API server accepted an invalid name:\n%s", out)
	}
	if !strings.Contains(out, "Invalid") && !strings.Contains(out, "invalid") {
		t.Fatalf("unexpected refusal: %s", out)
	}
	// a StatefulSet with a negative replica count is refused by validation too
	sts := filepath.Join(t.TempDir(), "sts.yaml")
	_ = os.WriteFile(sts, []byte(`apiVersion: apps/v1
kind: StatefulSet
metadata: {name: neg}
spec:
  replicas: -1
  serviceName: x
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: c, image: floe-node:dev}]}
`), 0o600)
	out, err = run(t, "kubectl", "apply", "-n", ns, "-f", sts)
	if err == nil || !strings.Contains(out, "replicas") {
		t.Fatalf("negative replicas accepted or unexpected error: %v\n%s", err, out)
	}
}

func TestNonFloeImagesAreRefusedByTheAgent(t *testing.T) {
	ns := namespace(t, "foreign")
	kubectl(t, "run", "nginx", "-n", ns, "--image", "nginx:1.27", "--restart", "Never")
	eventually(t, "pod marked Failed", 60*time.Second, func() (bool, string) {
		phase, _ := run(t, "kubectl", "get", "pod", "nginx", "-n", ns, "-o", "jsonpath={.status.phase}/{.status.reason}")
		return phase == "Failed/UnsupportedImage", phase
	})
	// a pod the agent refused is still finished by its deletion
	kubectl(t, "delete", "pod", "nginx", "-n", ns, "--wait=true", "--timeout=30s")
}
