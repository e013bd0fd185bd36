//go:build nodes

package nodes

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// One operator serves every StorageCluster of the cluster (it watches all namespaces), so the
// tests share the one the chart installs: release "floe" in operatorNS, with the chart's testnet.
const (
	operatorNS     = "floe-t4"
	operatorDeploy = "floe-operator"
	// the Deployment's pods only (a probe pod that copies the operator's labels lacks the hash)
	operatorPods = "app.kubernetes.io/name=floe-operator,app.kubernetes.io/instance=floe,pod-template-hash"
)

// TestFloeOnRealNodes installs both charts with a testnet, then runs what is independent side by
// side (the testnet through port-forward, scaling with Retain and a rolling upgrade; the DNS
// cluster; scaling with Delete), then what disturbs the whole cluster one at a time (the
// operator killed mid epoch change, a worker lost), and ends with helm uninstall.
func TestFloeOnRealNodes(t *testing.T) {
	installCharts(t)
	// namespaces belong to the whole test: later steps use what the parallel ones made
	namespace(t, "floe-t4-dns")
	namespace(t, "floe-t4-del")
	var dnsBlob, dnsSum string
	t.Run("side by side", func(t *testing.T) {
		t.Run("helm testnet", func(t *testing.T) {
			t.Parallel()
			helmTestnet(t)
		})
		t.Run("DNS cluster", func(t *testing.T) {
			t.Parallel()
			dnsBlob, dnsSum = dnsCluster(t, "floe-t4-dns")
		})
		t.Run("scale 4-6-4 with onScaleDown Delete", func(t *testing.T) {
			t.Parallel()
			scaleWithDelete(t, "floe-t4-del")
		})
	})
	t.Run("operator pod deleted mid epoch change", func(t *testing.T) {
		operatorKilledMidEpochChange(t, "floe-t4-del", "del")
	})
	t.Run("a worker node lost", func(t *testing.T) {
		if dnsBlob == "" {
			t.Skip("the DNS cluster stored no blob")
		}
		lostWorker(t, "floe-t4-dns", dnsBlob, dnsSum)
	})
	t.Run("operator RSS", func(t *testing.T) {
		body := portForwardGet(t, operatorNS, "deploy/"+operatorDeploy, 8080, "/metrics")
		m := regexp.MustCompile(`(?m)^process_resident_memory_bytes ([0-9.e+]+)`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no process_resident_memory_bytes in the operator's /metrics")
		}
		rss, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("FIGURE: operator RSS %.1f MiB (StorageClusters: the testnet, DNS 140 shards, del)", rss/(1<<20))
	})
	t.Run("helm uninstall leaves the CRD and the retained volumes", helmUninstall)
}

// installCharts: floe-crds (unless the kind scenario left it) and floe with a 4-node testnet
// whose volumes are retained (testnet.retention=Retain), from the local registry.
func installCharts(t *testing.T) {
	reg, tag := env(t, "FLOE_REGISTRY"), env(t, "FLOE_IMAGE_TAG")
	if _, err := run("kubectl", "get", "crd", "storageclusters.floe.dev"); err != nil {
		helm(t, "install", "floe-crds", repoPath("charts", "floe-crds"), "--wait")
	}
	start := time.Now()
	out := helm(t, "install", "floe", repoPath("charts", "floe"), "-n", operatorNS, "--create-namespace",
		"--set", "image.repository="+reg+"/floe-operator", "--set", "image.tag="+tag,
		"--set", "testnet.enabled=true", "--set", "testnet.image="+image(t, "floe-node"),
		"--set", "testnet.retention=Retain", "--set", "testnet.epochDuration=20s",
		"--set", "testnet.cleanup.image="+reg+"/kubectl:v1.33.4", "--wait", "--timeout", "5m")
	// the NOTES tell the user how to reach it: port-forward, no pod-IP-only listeners
	if !strings.Contains(out, "port-forward svc/testnet 7070:7070") || !strings.Contains(out, "port-forward deploy/floe-operator 8080:8080") {
		t.Errorf("the chart's NOTES lack the port-forward instructions:\n%s", out)
	}
	t.Cleanup(func() {
		if os.Getenv("HELM") != "" {
			run(os.Getenv("HELM"), "uninstall", "floe", "-n", operatorNS, "--wait", "--timeout", "3m")
		}
		run("kubectl", "delete", "namespace", operatorNS, "--wait=false")
	})
	waitAvailable(t, operatorNS, "testnet", 4, 6*time.Minute)
	t.Logf("FIGURE: helm install (operator + 4-node testnet) → Available in %s", time.Since(start).Round(time.Second))
}

// helmTestnet: the chart's testnet from the host through kubectl port-forward (put and get with
// the floe CLI, the operator's and a node's HTTP), scaled 4 → 6 → 4 by helm upgrade with its
// volumes retained, then rolled onto a new image tag pushed to the registry.
func helmTestnet(t *testing.T) {
	ns := operatorNS
	var id string
	file := randomFile(t, 300_000)
	t.Run("kubectl port-forward from the host: put, get, metrics", func(t *testing.T) {
		port, stop := portForward(t, ns, "svc/testnet", 7070)
		defer stop()
		seed := fmt.Sprintf("https://127.0.0.1:%d", port)
		f := file
		start := time.Now()
		blob := hostPut(t, []string{seed}, f)
		t.Logf("FIGURE: 300 kB put from the host (seed through port-forward) in %s", time.Since(start).Round(time.Millisecond))
		if back := hostGet(t, []string{seed}, blob); !sameFile(t, f, back) {
			t.Fatalf("blob %s read back through the port-forward differs", blob)
		}
		id = blob
		if body := portForwardGet(t, ns, "deploy/"+operatorDeploy, 8080, "/healthz"); !strings.Contains(body, "ok") {
			t.Errorf("operator /healthz through port-forward: %q", body)
		}
		body := portForwardGet(t, ns, "pod/testnet-0", 7071, "/metrics")
		if !strings.Contains(body, "floe_node_build_info") {
			t.Errorf("testnet-0's /metrics through port-forward lacks floe_node_build_info")
		}
	})
	if id == "" {
		t.Fatal("no blob stored through the port-forward")
	}
	readBack := func(when string) {
		t.Helper()
		if out := hostGet(t, seeds(t, ns, "testnet"), id); !sameFile(t, file, out) {
			t.Fatalf("blob %s differs %s", id, when)
		}
	}

	t.Run("scale 4 → 6 → 4 by helm upgrade, onScaleDown Retain keeps the volumes", func(t *testing.T) {
		scaleTo(t, ns, "testnet", 6, func() {
			helm(t, "upgrade", "floe", repoPath("charts", "floe"), "-n", ns, "--reuse-values", "--set", "testnet.nodes=6", "--wait", "--timeout", "5m")
		})
		readBack("after scaling up")
		before := volumesByClaim(t, ns)
		scaleTo(t, ns, "testnet", 4, func() {
			helm(t, "upgrade", "floe", repoPath("charts", "floe"), "-n", ns, "--reuse-values", "--set", "testnet.nodes=4", "--wait", "--timeout", "5m")
		})
		after := volumesByClaim(t, ns)
		for _, c := range []string{"data-testnet-4", "data-testnet-5"} {
			v, ok := after[c]
			if !ok || v.Phase != "Bound" || v.PV != before[c].PV {
				t.Errorf("%s: want the claim kept, bound to %s; got %+v (before %+v)", c, before[c].PV, v, before[c])
			}
			if !dirOnWorker(t, before[c]) {
				t.Errorf("%s: the volume's directory %s is gone from %s", c, before[c].Path, before[c].Node)
			}
		}
		readBack("after scaling down")
	})

	t.Run("rolling upgrade to a new tag: highest ordinal first, blobs readable throughout", func(t *testing.T) {
		newRef := pushNewTag(t)
		var (
			mu        sync.Mutex
			reads     int
			readFails []string
		)
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // reads from the host while pods roll
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				out, err := hostGetErr(seedsOrNone(ns, "testnet"), id)
				mu.Lock()
				reads++
				if err != nil {
					readFails = append(readFails, err.Error())
				} else if !sameFile(t, file, out) {
					readFails = append(readFails, "differs")
				}
				mu.Unlock()
				os.Remove(out)
				time.Sleep(time.Second)
			}
		}()
		patched := time.Now().Add(-time.Second)
		helm(t, "upgrade", "floe", repoPath("charts", "floe"), "-n", ns, "--reuse-values", "--set", "testnet.image="+newRef, "--wait", "--timeout", "5m")
		var pods podList
		took := eventually(t, "every testnet pod on "+newRef+", Available", 8*time.Minute, func() (bool, string) {
			pods = getPods(t, ns, "app.kubernetes.io/instance=testnet")
			ok := len(pods.Items) == 4
			for _, p := range pods.Items {
				ok = ok && p.image() == newRef && p.ready()
			}
			return ok && fscOf(t, ns, "testnet").Status.Phase == "Available", pods.String()
		})
		close(done)
		wg.Wait()
		t.Logf("FIGURE: 4 pods rolled onto a new tag in %s; %d reads from the host meanwhile, %d failed", took.Round(time.Second), reads, len(readFails))
		created := map[string]time.Time{}
		for _, p := range pods.Items {
			if p.Metadata.CreationTimestamp.Before(patched) {
				t.Fatalf("%s was not recreated", p.Metadata.Name)
			}
			if len(p.Status.ContainerStatuses) == 0 || !strings.HasSuffix(p.Status.ContainerStatuses[0].Image, strings.TrimPrefix(newRef, env(t, "FLOE_REGISTRY"))) {
				t.Errorf("%s does not run %s: %+v", p.Metadata.Name, newRef, p.Status.ContainerStatuses)
			}
			created[p.Metadata.Name] = p.Metadata.CreationTimestamp
		}
		for i := 3; i > 0; i-- {
			a, b := created[fmt.Sprintf("testnet-%d", i)], created[fmt.Sprintf("testnet-%d", i-1)]
			if !a.Before(b) {
				t.Errorf("pods not rolled highest ordinal first, one at a time: %v", created)
			}
		}
		if reads < 3 || len(readFails) > 0 {
			t.Errorf("reads while rolling: %d, failed: %v", reads, readFails)
		}
		readBack("after the rolling upgrade")
	})
}

// scaleWithDelete: a cluster with onScaleDown: Delete scaled 4 → 6 → 4 by `kubectl scale`: the
// provisioner makes the two new volumes, and once the StatefulSet shrinks their claims, volumes
// and directories on the workers are gone. Its blob stays for the operator-kill test.
func scaleWithDelete(t *testing.T, ns string) {
	apply(t, fmt.Sprintf(`apiVersion: floe.dev/v1alpha1
kind: StorageCluster
metadata: {name: del, namespace: %s}
spec:
  nodes: 4
  shards: 12
  epochDuration: 20s
  challenges: {samples: 2, timeout: 5s}
  image: %s
  imagePullPolicy: IfNotPresent
  storage:
    size: 1Gi
    retention: {onScaleDown: Delete, onDelete: Delete}
  resources:
    requests: {cpu: 50m, memory: 64Mi}
`, ns, image(t, "floe-node")))
	waitAvailable(t, ns, "del", 4, 6*time.Minute)
	file := randomFile(t, 200_000)
	id := hostPut(t, seeds(t, ns, "del"), file)
	scaleTo(t, ns, "del", 6, func() { kubectl(t, "-n", ns, "scale", "fsc/del", "--replicas", "6") })
	before := volumesByClaim(t, ns)
	for _, c := range []string{"data-del-4", "data-del-5"} {
		if v := before[c]; v.Phase != "Bound" || v.Provisioner != "rancher.io/local-path" || !dirOnWorker(t, v) {
			t.Fatalf("%s: want a claim bound to a local-path volume with its directory on the worker, got %+v", c, v)
		}
	}
	scaleTo(t, ns, "del", 4, func() { kubectl(t, "-n", ns, "scale", "fsc/del", "--replicas", "4") })
	eventually(t, "claims, volumes and directories of del-4 and del-5 deleted", 3*time.Minute, func() (bool, string) {
		after := volumesByClaim(t, ns)
		pvs := kubectl(t, "get", "pv", "-o", "name")
		for _, c := range []string{"data-del-4", "data-del-5"} {
			if _, ok := after[c]; ok {
				return false, c + " still there"
			}
			if strings.Contains(pvs, before[c].PV) {
				return false, before[c].PV + " still there"
			}
			if dirOnWorker(t, before[c]) {
				return false, before[c].Path + " still on " + before[c].Node
			}
		}
		return true, ""
	})
	if out := hostGet(t, seeds(t, ns, "del"), id); !sameFile(t, file, out) {
		t.Fatalf("blob %s differs after 4 → 6 → 4", id)
	}
}

// operatorKilledMidEpochChange: two members frozen (SIGSTOP of their floe-node processes, found
// by the pods' cgroups on this host: a hung member is the only way to hold an epoch change open
// for long enough), an epoch change forced, the operator pod deleted while it runs; the new
// operator pod resumes it from the control ConfigMap and completes exactly that change.
func operatorKilledMidEpochChange(t *testing.T, ns, name string) {
	before := fscOf(t, ns, name)
	if before.Status.Phase != "Available" {
		t.Fatalf("%s is %s, want Available first", name, before.Status.Phase)
	}
	frozen := []int{nodeProcess(t, ns, name+"-0"), nodeProcess(t, ns, name+"-3")}
	for _, p := range frozen {
		if err := syscall.Kill(p, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %d: %v", p, err)
		}
	}
	thawed := false
	thaw := func() {
		if !thawed {
			for _, p := range frozen {
				_ = syscall.Kill(p, syscall.SIGCONT)
			}
			thawed = true
		}
	}
	defer thaw()
	kubectl(t, "annotate", "fsc", name, "-n", ns, "--overwrite", "floe.dev/next-epoch=kill-"+strconv.FormatInt(time.Now().UnixNano(), 10))
	var v fscStatus
	eventually(t, "the change under way", 90*time.Second, func() (bool, string) {
		v = fscOf(t, ns, name)
		return v.Status.EpochState == "Changing", v.Status.EpochState
	})
	if v.Status.Epoch != before.Status.Epoch {
		t.Fatalf("the epoch moved from %d to %d before the change was seen", before.Status.Epoch, v.Status.Epoch)
	}
	old := strings.Fields(kubectl(t, "-n", operatorNS, "get", "pods", "-l", operatorPods, "-o", "jsonpath={.items[*].metadata.name}"))
	if len(old) != 1 {
		t.Fatalf("want one operator pod, got %v", old)
	}
	killed := time.Now()
	kubectl(t, "-n", operatorNS, "delete", "pod", old[0], "--wait=true", "--timeout=90s")
	if v = fscOf(t, ns, name); v.Status.Epoch != before.Status.Epoch || v.Status.EpochState != "Changing" {
		t.Fatalf("the change finished before the operator was killed: epoch %d %s", v.Status.Epoch, v.Status.EpochState)
	}
	thaw()
	eventually(t, "a new operator pod completes the change", 4*time.Minute, func() (bool, string) {
		v = fscOf(t, ns, name)
		pods := strings.Fields(jsonpath(operatorNS, "pods", "{.items[*].metadata.name}"))
		oldThere := false
		for _, p := range pods {
			oldThere = oldThere || p == old[0]
		}
		return !oldThere && v.Status.Epoch == before.Status.Epoch+1 && v.Status.EpochState == "Stable" && v.Status.Phase == "Available",
			fmt.Sprintf("epoch %d %s %s, pods %v", v.Status.Epoch, v.Status.EpochState, v.Status.Phase, pods)
	})
	t.Logf("FIGURE: operator pod deleted mid epoch change → the new pod completed epoch %d %s after the delete", v.Status.Epoch, time.Since(killed).Round(time.Second))
	// and the cluster takes writes and serves reads under the new operator
	file := randomFile(t, 100_000)
	id := hostPut(t, seeds(t, ns, name), file)
	if out := hostGet(t, seeds(t, ns, name), id); !sameFile(t, file, out) {
		t.Fatalf("blob %s differs after the operator's restart", id)
	}
}

// helmUninstall: the other StorageClusters deleted first (their finalizers need the operator),
// then `helm uninstall floe` (its hook deletes the testnet) and `helm uninstall floe-crds`: the
// CRD stays (resource-policy keep), and so do the testnet's claims and volumes (Retain) with
// the nodes' keys in their directories.
func helmUninstall(t *testing.T) {
	for _, c := range [][2]string{{"floe-t4-dns", "dns"}, {"floe-t4-del", "del"}} {
		run("kubectl", "-n", c[0], "delete", "fsc", c[1], "--wait=true", "--timeout=3m")
	}
	before := volumesByClaim(t, operatorNS)
	if len(before) < 4 {
		t.Fatalf("want the testnet's claims before uninstalling, got %+v", before)
	}
	helm(t, "uninstall", "floe", "-n", operatorNS, "--wait", "--timeout", "5m")
	if out, err := run("kubectl", "-n", operatorNS, "get", "fsc", "testnet"); err == nil {
		t.Errorf("helm uninstall left StorageCluster testnet:\n%s", out)
	}
	if out, _ := run("kubectl", "-n", operatorNS, "get", "deploy", "-o", "name"); strings.Contains(out, operatorDeploy) {
		t.Errorf("helm uninstall left the operator: %s", out)
	}
	helm(t, "uninstall", "floe-crds")
	if out, err := run("kubectl", "get", "crd", "storageclusters.floe.dev"); err != nil {
		t.Errorf("helm uninstall floe-crds removed the CRD: %s", out)
	}
	after := volumesByClaim(t, operatorNS)
	for c, v := range before {
		a, ok := after[c]
		if !ok || a.PV != v.PV || a.Phase != "Bound" {
			t.Errorf("%s: want the claim kept, bound to %s; got %+v", c, v.PV, a)
			continue
		}
		if !dirOnWorker(t, v) {
			t.Errorf("%s: the volume's directory %s is gone from %s", c, v.Path, v.Node)
		}
		if _, err := os.Stat(filepath.Join(hostDir(t, v), "node.key")); err != nil {
			t.Errorf("%s: no node key in the retained volume: %v", c, err)
		}
	}
	t.Logf("kept after uninstall: the CRD and %d claims with their volumes", len(after))
}

// ---- helpers ----

func namespace(t *testing.T, ns string) {
	t.Helper()
	kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() { run("kubectl", "delete", "namespace", ns, "--wait=false") })
}

func apply(t *testing.T, yaml string) {
	t.Helper()
	cmd := exec.Command("kubectl", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(yaml)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, yaml)
	}
}

type fscStatus struct {
	Status struct {
		Phase      string `json:"phase"`
		Epoch      int    `json:"epoch"`
		EpochState string `json:"epochState"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		Committee []struct {
			Pod     string `json:"pod"`
			Address string `json:"address"`
			Shards  int    `json:"shards"`
		} `json:"committee"`
	} `json:"status"`
}

func (s fscStatus) cond(typ string) string {
	for _, c := range s.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// holders: pods with shards in the committee serving now.
func (s fscStatus) holders() map[string]int {
	m := map[string]int{}
	for _, r := range s.Status.Committee {
		if r.Shards > 0 {
			m[r.Pod] = r.Shards
		}
	}
	return m
}

func fscOf(t *testing.T, ns, name string) fscStatus {
	t.Helper()
	var s fscStatus
	out, err := run("kubectl", "-n", ns, "get", "fsc", name, "-o", "json")
	if err != nil {
		t.Fatalf("kubectl get fsc %s: %v\n%s", name, err, out)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("fsc %s: %v", name, err)
	}
	return s
}

// waitAvailable: Available and every one of `nodes` pods Ready.
func waitAvailable(t *testing.T, ns, name string, nodes int, timeout time.Duration) time.Duration {
	t.Helper()
	return eventually(t, name+" Available with "+strconv.Itoa(nodes)+" pods Ready", timeout, func() (bool, string) {
		s := jsonpath(ns, "storagecluster/"+name, `{.status.conditions[?(@.type=="Available")].status}`)
		ready := jsonpath(ns, "statefulset/"+name, "{.status.readyReplicas}")
		return s == "True" && ready == strconv.Itoa(nodes), "Available=" + s + ", ready pods " + ready
	})
}

// scaleTo runs change, then waits for an epoch change that leaves exactly `nodes` members with
// shards, the StatefulSet at `nodes` Ready pods and the cluster Available.
func scaleTo(t *testing.T, ns, name string, nodes int, change func()) {
	t.Helper()
	e := fscOf(t, ns, name).Status.Epoch
	start := time.Now()
	change()
	eventually(t, fmt.Sprintf("%s at %d members with shards", name, nodes), 8*time.Minute, func() (bool, string) {
		s := fscOf(t, ns, name)
		spec := jsonpath(ns, "statefulset/"+name, "{.spec.replicas}")
		ready := jsonpath(ns, "statefulset/"+name, "{.status.readyReplicas}")
		h := s.holders()
		ok := s.Status.Epoch > e && len(h) == nodes && spec == strconv.Itoa(nodes) && ready == spec &&
			s.Status.Phase == "Available" && s.Status.EpochState == "Stable"
		return ok, fmt.Sprintf("epoch %d (from %d) %s, holders %v, replicas %s ready %s", s.Status.Epoch, e, s.Status.Phase, h, spec, ready)
	})
	t.Logf("FIGURE: %s scaled to %d (epoch change, volumes, drain) in %s", name, nodes, time.Since(start).Round(time.Second))
	for i := 0; i < nodes; i++ {
		if fscOf(t, ns, name).holders()[fmt.Sprintf("%s-%d", name, i)] == 0 {
			t.Fatalf("%s-%d holds no shards after scaling to %d", name, i, nodes)
		}
	}
}

// seeds: the members' advertised addresses (pod IPs here; this host routes to the pods).
func seeds(t *testing.T, ns, name string) []string {
	t.Helper()
	s := seedsOrNone(ns, name)
	if len(s) == 0 {
		t.Fatalf("%s/%s advertises no member addresses", ns, name)
	}
	return s
}

// seedsOrNone is seeds for a goroutine that is not the test's: nothing on an error.
func seedsOrNone(ns, name string) []string {
	var s fscStatus
	out, err := run("kubectl", "-n", ns, "get", "fsc", name, "-o", "json")
	if err != nil || json.Unmarshal([]byte(out), &s) != nil {
		return nil
	}
	var addrs []string
	for _, r := range s.Status.Committee {
		if r.Address != "" {
			addrs = append(addrs, r.Address)
		}
	}
	return addrs
}

type volume struct {
	Claim, Phase, PV, Provisioner, Path, Node string
}

// volumesByClaim: the namespace's claims, their volumes and where they are on the workers.
func volumesByClaim(t *testing.T, ns string) map[string]volume {
	t.Helper()
	var pvcs struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				VolumeName string `json:"volumeName"`
			} `json:"spec"`
			Status struct{ Phase string } `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "-n", ns, "get", "pvc", "-o", "json")), &pvcs); err != nil {
		t.Fatal(err)
	}
	var pvs struct {
		Items []struct {
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				HostPath     *struct{ Path string } `json:"hostPath"`
				Local        *struct{ Path string } `json:"local"`
				NodeAffinity struct {
					Required struct {
						NodeSelectorTerms []struct {
							MatchExpressions []struct {
								Key    string   `json:"key"`
								Values []string `json:"values"`
							} `json:"matchExpressions"`
						} `json:"nodeSelectorTerms"`
					} `json:"required"`
				} `json:"nodeAffinity"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "pv", "-o", "json")), &pvs); err != nil {
		t.Fatal(err)
	}
	m := map[string]volume{}
	for _, c := range pvcs.Items {
		v := volume{Claim: c.Metadata.Name, Phase: c.Status.Phase, PV: c.Spec.VolumeName}
		for _, p := range pvs.Items {
			if p.Metadata.Name != v.PV || v.PV == "" {
				continue
			}
			v.Provisioner = p.Metadata.Annotations["pv.kubernetes.io/provisioned-by"]
			if p.Spec.HostPath != nil {
				v.Path = p.Spec.HostPath.Path
			} else if p.Spec.Local != nil {
				v.Path = p.Spec.Local.Path
			}
			// local-path pins its volume to the node that holds the directory
			for _, term := range p.Spec.NodeAffinity.Required.NodeSelectorTerms {
				for _, e := range term.MatchExpressions {
					if len(e.Values) == 1 {
						v.Node = e.Values[0]
					}
				}
			}
		}
		m[v.Claim] = v
	}
	return m
}

// hostDir: where a local-path volume of worker floe-worker-I lives on this host (each worker's
// /var/lib/floe-local-path is $FLOE_NODES_STATE/nI/fs_var_lib_floe-local-path).
func hostDir(t *testing.T, v volume) string {
	idx := strings.TrimPrefix(v.Node, "floe-worker-")
	rel := strings.TrimPrefix(v.Path, "/var/lib/floe-local-path/")
	if v.Node == "" || idx == v.Node || rel == v.Path {
		t.Fatalf("volume %+v is not a local-path volume of a worker", v)
	}
	return filepath.Join(env(t, "FLOE_NODES_STATE"), "n"+idx, "fs_var_lib_floe-local-path", rel)
}

func dirOnWorker(t *testing.T, v volume) bool {
	_, err := os.Stat(hostDir(t, v))
	return err == nil
}

type podItem struct {
	Metadata struct {
		Name              string    `json:"name"`
		UID               string    `json:"uid"`
		CreationTimestamp time.Time `json:"creationTimestamp"`
	} `json:"metadata"`
	Spec struct {
		Containers []struct{ Image string } `json:"containers"`
	} `json:"spec"`
	Status struct {
		Conditions []struct {
			Type, Status string
		} `json:"conditions"`
		ContainerStatuses []struct {
			Image   string `json:"image"`
			ImageID string `json:"imageID"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func (p podItem) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (p podItem) image() string {
	if len(p.Spec.Containers) == 0 {
		return ""
	}
	return p.Spec.Containers[0].Image
}

type podList struct {
	Items []podItem `json:"items"`
}

func (l podList) String() string {
	var b strings.Builder
	for _, p := range l.Items {
		fmt.Fprintf(&b, "%s(%s ready=%v) ", p.Metadata.Name, p.image(), p.ready())
	}
	return b.String()
}

func getPods(t *testing.T, ns, selector string) podList {
	t.Helper()
	var l podList
	if err := json.Unmarshal([]byte(kubectl(t, "-n", ns, "get", "pods", "-l", selector, "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Metadata.Name < l.Items[j].Metadata.Name })
	return l
}

// nodeProcess: the host PID of floe-node in a pod, found by the pod's UID in the process's
// cgroup path (cgroupfs driver: …/kubepods/<qos>/pod<uid>/<container>).
func nodeProcess(t *testing.T, ns, pod string) int {
	t.Helper()
	uid := jsonpath(ns, "pod/"+pod, "{.metadata.uid}")
	if uid == "" {
		t.Fatalf("pod %s has no UID", pod)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		comm, err := os.ReadFile(p + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "floe-node" {
			continue
		}
		cg, err := os.ReadFile(p + "/cgroup")
		if err != nil || !(bytes.Contains(cg, []byte("pod"+uid)) || bytes.Contains(cg, []byte("pod"+strings.ReplaceAll(uid, "-", "_")))) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(p))
		if err == nil {
			return pid
		}
	}
	t.Fatalf("no floe-node process in pod %s (uid %s) on this host", pod, uid)
	return 0
}

// portForward runs `kubectl port-forward TARGET :PORT` and returns the local port kubectl chose.
func portForward(t *testing.T, ns, target string, port int) (int, func()) {
	t.Helper()
	cmd := exec.Command("kubectl", "-n", ns, "port-forward", target, fmt.Sprintf(":%d", port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:([0-9]+) ->`)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				stop()
				t.Fatalf("kubectl port-forward %s ended: %s", target, stderr.String())
			}
			if m := re.FindStringSubmatch(l); m != nil {
				p, _ := strconv.Atoi(m[1])
				go func() {
					for range lines {
					}
				}()
				return p, stop
			}
		case <-deadline:
			stop()
			t.Fatalf("kubectl port-forward %s: no port within 30 s: %s", target, stderr.String())
		}
	}
}

// portForwardGet: one HTTP GET through a port-forward (retried for up to a minute).
func portForwardGet(t *testing.T, ns, target string, port int, path string) string {
	t.Helper()
	local, stop := portForward(t, ns, target, port)
	defer stop()
	var body string
	eventually(t, fmt.Sprintf("GET %s of %s through port-forward", path, target), time.Minute, func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", local, path))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200, resp.Status + " " + body
	})
	return body
}

func randomFile(t *testing.T, size int) string {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func sameFile(t *testing.T, a, b string) bool {
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// hostPut / hostGet: the floe CLI of the operator image (FLOE_CLI, copied out of it by
// run-node-tests.sh) on this host.
func hostPut(t *testing.T, seeds []string, file string) string {
	t.Helper()
	out, err := run(env(t, "FLOE_CLI"), "--json", "--connect", strings.Join(seeds, ","), "put", file)
	id := blobIDLine.FindStringSubmatch(out)
	if err != nil || id == nil {
		t.Fatalf("floe put via %v: %v\n%s", seeds, err, out)
	}
	return id[1]
}

func hostGetErr(seeds []string, id string) (string, error) {
	f, err := os.CreateTemp("", "floe-t4-get-")
	if err != nil {
		return "", err
	}
	f.Close()
	out, err := run(os.Getenv("FLOE_CLI"), "--json", "--connect", strings.Join(seeds, ","), "get", id, "-o", f.Name())
	if err != nil {
		return f.Name(), fmt.Errorf("floe get %s via %v: %v: %s", id, seeds, err, strings.TrimSpace(out))
	}
	return f.Name(), nil
}

func hostGet(t *testing.T, seeds []string, id string) string {
	t.Helper()
	out, err := hostGetErr(seeds, id)
	t.Cleanup(func() { os.Remove(out) })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pushNewTag makes a new node image (the tested one plus a label, so a new digest) under a new
// tag and pushes it to the cluster's registry, as a release would be.
func pushNewTag(t *testing.T) string {
	t.Helper()
	old := image(t, "floe-node")
	ref := old + "-next"
	podman := []string{"--runtime", "runc", "--cgroup-manager", "cgroupfs"}
	build := exec.Command("podman", append(podman, "build", "-t", ref, "-f", "-", t.TempDir())...)
	build.Stdin = strings.NewReader(fmt.Sprintf("FROM %s\nLABEL dev.floe.test/upgrade=%d\n", old, time.Now().Unix()))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("podman build %s: %v\n%s", ref, err, out)
	}
	if out, err := run("podman", append(podman, "push", "--tls-verify=false", ref)...); err != nil {
		t.Fatalf("podman push %s: %v\n%s", ref, err, out)
	}
	return ref
}
