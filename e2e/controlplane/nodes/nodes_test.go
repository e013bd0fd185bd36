//go:build nodes

// Package nodes is tier 4 (DESIGN.md): Floe on real Kubernetes nodes — kubelets, containerd,
// runc, bridge CNI, kube-proxy, CoreDNS, kube-router's NetworkPolicy enforcement, local-path
// volumes and a local registry, brought up by e2e/bin/nodes-up.sh. e2e/run-node-tests.sh runs
// it (make test-nodes) after pushing the images built through images/Dockerfile; it needs
// KUBECONFIG, HELM, FLOE_REGISTRY, FLOE_IMAGE_TAG, FLOE_NODES_STATE and FLOE_CLI (the floe CLI
// copied out of the operator image) from that script.
package nodes

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run tier 4 through e2e/run-node-tests.sh (make test-nodes)", name)
	}
	return v
}

func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", "..", ".."}, parts...)...)
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run("kubectl", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(env(t, "HELM"), args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// eventually polls f until it returns true or the timeout passes; the last message explains.
func eventually(t *testing.T, what string, timeout time.Duration, f func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	msg := ""
	for time.Since(start) < timeout {
		var ok bool
		if ok, msg = f(); ok {
			return time.Since(start)
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("%s: not within %s: %s", what, timeout, msg)
	return 0
}

func jsonpath(ns, obj, path string) string {
	out, _ := run("kubectl", "-n", ns, "get", obj, "-o", "jsonpath="+path)
	return strings.TrimSpace(out)
}

func image(t *testing.T, name string) string {
	return env(t, "FLOE_REGISTRY") + "/" + name + ":" + env(t, "FLOE_IMAGE_TAG")
}

func TestWorkerNodesAreRealKubelets(t *testing.T) {
	var nodes struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				NodeInfo struct {
					KubeletVersion          string
					ContainerRuntimeVersion string
				}
				Addresses []struct{ Type, Address string }
			}
		}
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "nodes", "-o", "json")), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) < 2 {
		t.Fatalf("want several worker nodes, got %d", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		info := n.Status.NodeInfo
		if info.KubeletVersion != "v1.33.13" || !strings.HasPrefix(info.ContainerRuntimeVersion, "containerd://") {
			t.Errorf("%s: kubelet %s, runtime %s; want v1.33.13 on containerd", n.Metadata.Name, info.KubeletVersion, info.ContainerRuntimeVersion)
		}
		t.Logf("%s: kubelet %s, %s, %v", n.Metadata.Name, info.KubeletVersion, info.ContainerRuntimeVersion, n.Status.Addresses)
	}
}

// clientPod runs one pod to completion and returns its logs: initContainers then containers, in
// order, sharing an emptyDir at /data. Each step is [image, command...].
func clientPod(t *testing.T, ns, name string, labels map[string]string, steps ...[]string) string {
	return clientPodAvoiding(t, ns, name, labels, "", steps...)
}

// clientPodAvoiding is clientPod kept off the worker named avoid (a lost one: the scheduler may
// still place a pod there before the node is marked unreachable).
func clientPodAvoiding(t *testing.T, ns, name string, labels map[string]string, avoid string, steps ...[]string) string {
	t.Helper()
	type container struct {
		Name            string              `json:"name"`
		Image           string              `json:"image"`
		Command         []string            `json:"command"`
		VolumeMounts    []map[string]string `json:"volumeMounts"`
		SecurityContext map[string]any      `json:"securityContext"`
	}
	var cs []container
	for i, s := range steps {
		cs = append(cs, container{
			Name: fmt.Sprintf("step-%d", i), Image: s[0], Command: s[1:],
			VolumeMounts:    []map[string]string{{"name": "data", "mountPath": "/data"}},
			SecurityContext: map[string]any{"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
		})
	}
	if labels == nil {
		labels = map[string]string{}
	}
	labels["floe-tier4"] = "client"
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels},
		"spec": map[string]any{
			"restartPolicy":   "Never",
			"securityContext": map[string]any{"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
			"initContainers":  cs[:len(cs)-1],
			"containers":      cs[len(cs)-1:],
			"volumes":         []map[string]any{{"name": "data", "emptyDir": map[string]any{}}},
		},
	}
	if avoid != "" {
		pod["spec"].(map[string]any)["affinity"] = map[string]any{"nodeAffinity": map[string]any{
			"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{"nodeSelectorTerms": []any{
				map[string]any{"matchExpressions": []any{map[string]any{
					"key": "kubernetes.io/hostname", "operator": "NotIn", "values": []string{avoid}}}},
			}},
		}}
	}
	b, _ := json.Marshal(pod)
	cmd := exec.Command("kubectl", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(string(b))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client pod %s: %v\n%s", name, err, out)
	}
	defer run("kubectl", "-n", ns, "delete", "pod", name, "--wait=false")
	phase := ""
	eventually(t, "client pod "+name+" to finish", 8*time.Minute, func() (bool, string) {
		phase = jsonpath(ns, "pod/"+name, "{.status.phase}")
		return phase == "Succeeded" || phase == "Failed", "phase " + phase
	})
	var logs strings.Builder
	for i := range steps {
		out, _ := run("kubectl", "-n", ns, "logs", name, "-c", fmt.Sprintf("step-%d", i))
		logs.WriteString(out)
	}
	if phase != "Succeeded" {
		t.Fatalf("client pod %s failed:\n%s", name, logs.String())
	}
	return logs.String()
}

var sha256Line = regexp.MustCompile(`(?m)^([0-9a-f]{64})\s`)
var blobIDLine = regexp.MustCompile(`"blob_id":\s*"([^"]+)"`)

// dnsCluster: one StorageCluster as a platform team would run it — the chart's operator, DNS
// addressing, a 512 Mi memory limit, volumes from the provisioner — then a 256 MiB blob through
// Service DNS names and NetworkPolicy enforcement. It returns the blob (ID, sha256) for the
// lost-worker test that runs later, alone.
func dnsCluster(t *testing.T, ns string) (blobID, sum string) {
	reg := env(t, "FLOE_REGISTRY")
	sc := fmt.Sprintf(`apiVersion: floe.dev/v1alpha1
kind: StorageCluster
metadata: {name: dns, namespace: %s}
spec:
  nodes: 4
  # 140 shards: the largest blob is k_primary·k_secondary·65534 B = 48·94·65534 B ≈ 282 MiB
  shards: 140
  epochDuration: 40s
  challenges: {samples: 2, timeout: 10s}
  image: %s
  imagePullPolicy: IfNotPresent
  addressing: DNS
  storage:
    size: 2Gi
    retention: {onScaleDown: Delete, onDelete: Delete}
  resources:
    requests: {cpu: 50m, memory: 128Mi}
    limits: {memory: 512Mi}
`, ns, image(t, "floe-node"))
	apply(t, sc)
	took := waitAvailable(t, ns, "dns", 4, 6*time.Minute)
	t.Logf("FIGURE: StorageCluster (4 nodes, DNS addressing) applied → Available in %s", took.Round(time.Second))

	t.Run("committee advertised by DNS names", func(t *testing.T) {
		out := kubectl(t, "-n", ns, "get", "storagecluster", "dns", "-o", "json")
		addrs := regexp.MustCompile(`"address":\s*"([^"]+)"`).FindAllStringSubmatch(out, -1)
		if len(addrs) == 0 {
			t.Fatalf("no member addresses in status:\n%s", out)
		}
		for _, a := range addrs {
			if !strings.Contains(a[1], ".dns-nodes."+ns+".svc:7070") {
				t.Errorf("member address %q is not the pod's DNS name", a[1])
			}
		}
	})

	t.Run("pods as written: non-root, read-only root, provisioned volumes, memory limit", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			pod := fmt.Sprintf("pod/dns-%d", i)
			if v := jsonpath(ns, pod, "{.spec.containers[0].securityContext.readOnlyRootFilesystem}"); v != "true" {
				t.Errorf("%s readOnlyRootFilesystem=%q", pod, v)
			}
			nonRoot := jsonpath(ns, pod, "{.spec.securityContext.runAsNonRoot}") + jsonpath(ns, pod, "{.spec.containers[0].securityContext.runAsNonRoot}")
			if !strings.Contains(nonRoot, "true") {
				t.Errorf("%s runAsNonRoot not set", pod)
			}
			if v := jsonpath(ns, pod, "{.spec.containers[0].resources.limits.memory}"); v != "512Mi" {
				t.Errorf("%s memory limit %q, want 512Mi", pod, v)
			}
		}
		vols := volumesByClaim(t, ns)
		for _, v := range vols {
			if v.Provisioner != "rancher.io/local-path" || !strings.HasPrefix(v.Path, "/var/lib/floe-local-path/") {
				t.Errorf("volume not from the local-path provisioner: %+v", v)
			}
		}
		if len(vols) < 4 {
			t.Errorf("want 4 provisioned volumes for %s, got %d: %+v", ns, len(vols), vols)
		}
		// the node writes its key into the volume: find it on the worker's own directory
		keys, _ := filepath.Glob(filepath.Join(env(t, "FLOE_NODES_STATE"), "n*", "fs_var_lib_floe-local-path", "*_"+ns+"_*", "node.key"))
		if len(keys) != 4 {
			t.Errorf("want the 4 node keys in the provisioned volumes' directories on the workers, found %v", keys)
		}
	})

	svc := "https://dns." + ns + ".svc:7070"
	floe := func(args ...string) []string {
		return append([]string{image(t, "floe-operator"), "/usr/local/bin/floe", "--json", "--connect", svc}, args...)
	}
	busybox := func(script string) []string {
		return []string{reg + "/busybox:floe", "/bin/sh", "-c", script}
	}

	t.Run("256 MiB blob through Service DNS names; nodes under 512Mi keep restartCount 0", func(t *testing.T) {
		start := time.Now()
		out := clientPod(t, ns, "put-256", nil,
			busybox("head -c 268435456 /dev/urandom >/data/blob && sha256sum /data/blob"),
			floe("put", "/data/blob"))
		m, id := sha256Line.FindStringSubmatch(out), blobIDLine.FindStringSubmatch(out)
		if m == nil || id == nil {
			t.Fatalf("no checksum or blob ID:\n%s", out)
		}
		sum, blobID = m[1], id[1]
		t.Logf("FIGURE: 256 MiB put through %s in %s (incl. pod start and generating the data)", svc, time.Since(start).Round(time.Second))
		out = clientPod(t, ns, "get-256", nil, floe("get", blobID, "-o", "/data/back"), busybox("sha256sum /data/back"))
		if m := sha256Line.FindStringSubmatch(out); m == nil || m[1] != sum {
			t.Fatalf("blob read back differs (want %s):\n%s", sum, out)
		}
		for i := 0; i < 4; i++ {
			if rc := jsonpath(ns, fmt.Sprintf("pod/dns-%d", i), "{.status.containerStatuses[0].restartCount}"); rc != "0" {
				t.Errorf("dns-%d restartCount %s under a 512Mi limit", i, rc)
			}
		}
	})

	t.Run("NetworkPolicy: admin port only from the operator", func(t *testing.T) {
		kubectl(t, "-n", ns, "get", "networkpolicy", "dns-nodes")
		ip := jsonpath(ns, "pod/dns-0", "{.status.podIP}")
		// an open port is tried for up to 30 s: kube-router admits a new pod's address a few
		// seconds after the pod appears (its ipsets follow pod events); a closed one once, after
		// the open ones answered
		open := func(port int) string {
			return fmt.Sprintf("r=closed; for i in $(seq 1 15); do if nc -w 2 %s %d </dev/null; then r=open; break; fi; sleep 2; done; echo port-%d-$r", ip, port, port)
		}
		closed := func(port int) string {
			return fmt.Sprintf("if nc -w 3 %s %d </dev/null; then echo port-%d-open; else echo port-%d-closed; fi", ip, port, port, port)
		}
		out := clientPod(t, ns, "np-other", nil, busybox(open(7070)+"; "+open(7071)+"; "+closed(7072)))
		for _, want := range []string{"port-7070-open", "port-7071-open", "port-7072-closed"} {
			if !strings.Contains(out, want) {
				t.Errorf("a pod that is not the operator: want %s, got:\n%s", want, out)
			}
		}
		// a pod with the operator's labels in the operator's namespace is let through: the
		// policy admits the operator's namespace only, so this probe runs there
		labels := map[string]string{}
		raw := jsonpath(operatorNS, "deploy/"+operatorDeploy, "{.spec.template.metadata.labels}")
		if err := json.Unmarshal([]byte(raw), &labels); err != nil {
			t.Fatalf("operator pod labels %q: %v", raw, err)
		}
		out = clientPod(t, operatorNS, "np-operator", labels, busybox(open(7072)))
		if !strings.Contains(out, "port-7072-open") {
			t.Errorf("a pod with the operator's labels: admin port closed:\n%s", out)
		}
		// the same labels in another namespace are not the operator
		out = clientPod(t, ns, "np-impostor", labels, busybox(closed(7072)))
		if !strings.Contains(out, "port-7072-closed") {
			t.Errorf("a pod with the operator's labels outside its namespace reached the admin port:\n%s", out)
		}
		// and the operator itself drives epochs through the admin port
		e0 := jsonpath(ns, "storagecluster/dns", "{.status.epoch}")
		eventually(t, "an epoch change by the operator", 2*time.Minute, func() (bool, string) {
			e := jsonpath(ns, "storagecluster/dns", "{.status.epoch}")
			return e != e0 && e != "", "epoch " + e
		})
	})
	return blobID, sum
}

// lostWorker cuts the link of a worker that holds a storage pod of the DNS cluster (not the
// operator's) while its blob is stored: reads go on, Degraded, back to Available.
func lostWorker(t *testing.T, ns, blobID, sum string) {
	reg := env(t, "FLOE_REGISTRY")
	svc := "https://dns." + ns + ".svc:7070"
	floe := func(args ...string) []string {
		return append([]string{image(t, "floe-operator"), "/usr/local/bin/floe", "--json", "--connect", svc}, args...)
	}
	busybox := func(script string) []string {
		return []string{reg + "/busybox:floe", "/bin/sh", "-c", script}
	}
	// a worker with a storage pod but not the operator (CoreDNS runs twice, on two workers)
	opNode := strings.TrimSpace(kubectl(t, "-n", operatorNS, "get", "pods", "-l", operatorPods,
		"-o", "jsonpath={.items[0].spec.nodeName}"))
	victim := ""
	for i := 3; i >= 0 && victim == ""; i-- {
		if n := jsonpath(ns, fmt.Sprintf("pod/dns-%d", i), "{.spec.nodeName}"); n != opNode {
			victim = n
		}
	}
	if victim == "" || opNode == "" {
		t.Fatalf("no worker without the operator (on %q) holds a storage pod", opNode)
	}
	idx := strings.TrimPrefix(victim, "floe-worker-")
	link := "floe4-v" + idx
	if out, err := run("ip", "-n", "floe4-hub", "link", "set", link, "down"); err != nil {
		t.Fatalf("cutting %s: %v %s", victim, err, out)
	}
	t.Cleanup(func() { run("ip", "-n", "floe4-hub", "link", "set", link, "up") })
	cut := time.Now()
	took := eventually(t, "Degraded after losing "+victim, 4*time.Minute, func() (bool, string) {
		s := jsonpath(ns, "storagecluster/dns", `{.status.conditions[?(@.type=="Degraded")].status}`)
		return s == "True", "Degraded=" + s
	})
	t.Logf("FIGURE: worker %s cut off → StorageCluster Degraded in %s", victim, took.Round(time.Second))
	// the client Service keeps the lost pods as endpoints until the node controller marks
	// the node NotReady (node-monitor-grace-period) and their pods not Ready: a client
	// that dials the Service meanwhile may time out, as on any cluster
	var lostIPs []string
	for i := 0; i < 4; i++ {
		pod := fmt.Sprintf("pod/dns-%d", i)
		if jsonpath(ns, pod, "{.spec.nodeName}") == victim {
			lostIPs = append(lostIPs, jsonpath(ns, pod, "{.status.podIP}"))
		}
	}
	eventually(t, victim+" NotReady and its pods out of the client Service", 3*time.Minute, func() (bool, string) {
		eps := jsonpath(ns, "endpoints/dns", "{.subsets[*].addresses[*].ip}")
		for _, ip := range lostIPs {
			if strings.Contains(" "+eps+" ", " "+ip+" ") {
				return false, "endpoints " + eps
			}
		}
		return true, ""
	})
	t.Logf("FIGURE: %s's pods left the client Service %s after the cut", victim, (time.Since(cut)).Round(time.Second))
	out := clientPodAvoiding(t, ns, "get-lost", nil, victim, floe("get", blobID, "-o", "/data/back"), busybox("sha256sum /data/back"))
	if m := sha256Line.FindStringSubmatch(out); m == nil || m[1] != sum {
		t.Fatalf("read with %s lost differs (want %s):\n%s", victim, sum, out)
	}
	nodeState := jsonpath("", "node/"+victim, `{.status.conditions[?(@.type=="Ready")].status}`)
	t.Logf("node %s Ready=%s %s after the cut; the operator leaves its pods alone (see e2e/README.md)", victim, nodeState, time.Since(cut).Round(time.Second))
	run("ip", "-n", "floe4-hub", "link", "set", link, "up")
	back := eventually(t, "Available after "+victim+" came back", 6*time.Minute, func() (bool, string) {
		s := jsonpath(ns, "storagecluster/dns", `{.status.conditions[?(@.type=="Available")].status}`)
		d := jsonpath(ns, "storagecluster/dns", `{.status.conditions[?(@.type=="Degraded")].status}`)
		return s == "True" && d != "True", "Available=" + s + " Degraded=" + d
	})
	t.Logf("FIGURE: %s back → Available in %s", victim, back.Round(time.Second))
	out = clientPod(t, ns, "get-back", nil, floe("get", blobID, "-o", "/data/back"), busybox("sha256sum /data/back"))
	if m := sha256Line.FindStringSubmatch(out); m == nil || m[1] != sum {
		t.Fatalf("read after %s came back differs:\n%s", victim, out)
	}
}
