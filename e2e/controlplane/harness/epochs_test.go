//go:build e2e

package harness

// Epochs on Kubernetes: floe-operator (installed from manifests/, running as a pod under its
// ServiceAccount) drives the control plane's brain over a StorageCluster's node pods. Blobs are
// written and read with the real `floe` CLI against the pods; the cluster is scaled up and
// down through the scale subresource (each step an epoch change, the removed pods going only
// after their shards moved), a pod is deleted and a volume wiped (Degraded/Recovering, then
// Available again), and the operator pod is killed in the middle of an epoch change.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type committeeRow struct {
	Pod    string `json:"pod"`
	NodeID string `json:"nodeId"`
	Shards int    `json:"shards"`
	State  string `json:"state"`
}

// view is StorageCluster testnet's status in ns.
func view(t *testing.T, ns string) fscStatus {
	t.Helper()
	return getFSC(t, ns, "testnet")
}

// cond is the status of one condition.
func (v fscStatus) cond(typ string) string {
	st, _ := v.condition(typ)
	return st
}

// members with shards in the current committee, by pod name
func (v fscStatus) holders() map[string]int {
	m := map[string]int{}
	for _, r := range v.Status.Committee {
		if r.Shards > 0 {
			m[r.Pod] = r.Shards
		}
	}
	return m
}

// floe runs the floe CLI against the cluster's node pods.
// nodePod matches the testnet's node pods (its StatefulSet's, testnet-<ordinal>), not its
// gateway Deployment's (testnet-gateway-…).
var nodePod = regexp.MustCompile(`^testnet-[0-9]+$`)

func floe(t *testing.T, ns string, args ...string) ([]byte, error) {
	t.Helper()
	var addrs []string
	for _, p := range pods(t, ns).Items {
		if p.Status.PodIP != "" && nodePod.MatchString(p.Metadata.Name) {
			addrs = append(addrs, "https://"+p.Status.PodIP+":7070")
		}
	}
	cmd := exec.Command(filepath.Join(os.Getenv("FLOE_BIN_DIR"), "floe"), append([]string{"--connect", strings.Join(addrs, ",")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("floe %v: %v: %s", args, err, stderr.String())
	}
	return out, nil
}

type blob struct {
	id   string
	data []byte
}

func putBlob(t *testing.T, ns string, size int) blob {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := floe(t, ns, "--json", "put", f)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		BlobID string `json:"blob_id"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return blob{r.BlobID, data}
}

// readBack checks that every blob reads back byte-identical (retrying while the network
// settles, e.g. right after a member came back).
func readBack(t *testing.T, ns string, blobs []blob) {
	t.Helper()
	for _, b := range blobs {
		out := filepath.Join(t.TempDir(), "out")
		eventually(t, "blob "+b.id+" reads back", 90*time.Second, func() (bool, string) {
			if _, err := floe(t, ns, "get", b.id, "-o", out); err != nil {
				return false, err.Error()
			}
			got, err := os.ReadFile(out)
			return err == nil && bytes.Equal(got, b.data), "content differs"
		})
	}
}

// nextEpoch asks the operator for the next epoch now (annotation) and waits until the cluster
// is Stable in a later epoch than `after`.
func nextEpoch(t *testing.T, ns string, after int) fscStatus {
	t.Helper()
	kubectl(t, "annotate", "fsc", "testnet", "-n", ns, "--overwrite", "floe.dev/next-epoch="+strconv.FormatInt(time.Now().UnixNano(), 10))
	var v fscStatus
	eventually(t, fmt.Sprintf("an epoch after %d, stable", after), 120*time.Second, func() (bool, string) {
		v = view(t, ns)
		return v.Status.Epoch > after && v.Status.EpochState == "Stable", kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.status}")
	})
	return v
}

// nodeProcess is the pid of the floe-node process of pod `pod` (its data lives on the pod's volume).
func nodeProcess(t *testing.T, ns, pod string) int {
	t.Helper()
	dir := pvDir(t, ns, "data-"+pod)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), "floe-node") && strings.Contains(string(cmdline), dir+"/") {
			return pid
		}
	}
	t.Fatalf("no floe-node process for %s (%s)", pod, dir)
	return 0
}

func TestOperatorRunsEpochsOnKubernetes(t *testing.T) {
	installOperator(t)
	ns := namespace(t, "epochs")
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet.yaml"))
	eventually(t, "Available with a committee of four", 120*time.Second, func() (bool, string) {
		v := view(t, ns)
		return v.Status.Phase == "Available" && len(v.holders()) == 4, kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.status}")
	})
	columns := kubectl(t, "get", "fsc", "-n", ns)
	for _, c := range []string{"NODES", "READY", "SHARDS", "EPOCH", "PHASE", "AGE", "Available"} {
		if !strings.Contains(columns, c) {
			t.Fatalf("kubectl get fsc lacks %q:\n%s", c, columns)
		}
	}
	blobs := []blob{putBlob(t, ns, 200_000), putBlob(t, ns, 1)}
	readBack(t, ns, blobs)

	// scale 4 → 6: the new pods join at the next epoch and take shards
	kubectl(t, "scale", "fsc/testnet", "-n", ns, "--replicas", "6")
	eventually(t, "six pods running", 90*time.Second, func() (bool, string) {
		return runningPods(t, ns) == 6, kubectl(t, "get", "pods", "-n", ns)
	})
	e := view(t, ns).Status.Epoch
	var v fscStatus
	eventually(t, "six members with shards", 180*time.Second, func() (bool, string) {
		v = nextEpoch(t, ns, e)
		e = v.Status.Epoch
		return len(v.holders()) == 6, fmt.Sprint(v.holders())
	})
	if v.holders()["testnet-4"] == 0 || v.holders()["testnet-5"] == 0 {
		t.Fatalf("the new pods hold no shards: %v", v.holders())
	}
	readBack(t, ns, blobs)
	blobs = append(blobs, putBlob(t, ns, 70_000))

	// scale 6 → 4: pods 4 and 5 leave the committee at an epoch boundary, and the StatefulSet
	// shrinks only after their shards moved
	kubectl(t, "scale", "fsc/testnet", "-n", ns, "--replicas", "4")
	if got := stsField(t, ns, ".spec.replicas"); got != "6" {
		t.Fatalf("the StatefulSet shrank to %s before the drain", got)
	}
	eventually(t, "the StatefulSet shrunk to 4 after the drain", 180*time.Second, func() (bool, string) {
		v = view(t, ns)
		if stsField(t, ns, ".spec.replicas") != "4" {
			return false, fmt.Sprint(v.holders())
		}
		// by then pods 4 and 5 hold nothing in the committee that is serving
		h := v.holders()
		return h["testnet-4"] == 0 && h["testnet-5"] == 0 && len(h) == 4, fmt.Sprint(h)
	})
	eventually(t, "pods 4 and 5 gone, their volumes deleted (onScaleDown: Delete)", 90*time.Second, func() (bool, string) {
		out, _ := run(t, "kubectl", "get", "pods,pvc", "-n", ns, "-o", "name")
		return !strings.Contains(out, "testnet-4") && !strings.Contains(out, "testnet-5"), out
	})
	readBack(t, ns, blobs)

	// a deleted node pod comes back on its volume; the cluster is Available again
	kubectl(t, "delete", "pod", "testnet-1", "-n", ns, "--wait=true", "--timeout=60s")
	eventually(t, "Available with four members up after the pod came back", 120*time.Second, func() (bool, string) {
		v = view(t, ns)
		return v.cond("Available") == "True" && v.cond("Degraded") == "False" && runningPods(t, ns) == 4, kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.status.conditions}")
	})
	readBack(t, ns, blobs)

	// a wiped volume: the node comes back empty, gets the committee again and rebuilds its
	// slivers by recovery (Recovering, then back to Available)
	dir := pvDir(t, ns, "data-testnet-2")
	pid := nodeProcess(t, ns, "testnet-2")
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	eventually(t, "the wiped member back and every blob stored again", 180*time.Second, func() (bool, string) {
		v = view(t, ns)
		if v.cond("Available") != "True" || v.cond("Recovering") != "False" || v.cond("Degraded") != "False" {
			return false, kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.status.conditions}")
		}
		out, err := floe(t, ns, "--json", "status", blobs[0].id)
		return err == nil && !strings.Contains(string(out), `"state":"unknown"`), string(out)
	})
	readBack(t, ns, blobs)

	// the operator pod killed in the middle of an epoch change: two members are frozen
	// (SIGSTOP) so the change cannot complete, the operator pod is deleted, the members thaw,
	// and the new operator pod resumes the change from its persisted state and completes it
	before := view(t, ns).Status.Epoch
	frozen := []int{nodeProcess(t, ns, "testnet-0"), nodeProcess(t, ns, "testnet-3")}
	for _, p := range frozen {
		_ = syscall.Kill(p, syscall.SIGSTOP)
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
	kubectl(t, "annotate", "fsc", "testnet", "-n", ns, "--overwrite", "floe.dev/next-epoch=kill-"+strconv.FormatInt(time.Now().UnixNano(), 10))
	eventually(t, "the change under way", 90*time.Second, func() (bool, string) {
		v = view(t, ns)
		return v.Status.EpochState == "Changing", v.Status.EpochState
	})
	var opPod string
	for name := range readyPods(t, "floe-system") {
		opPod = name
	}
	kubectl(t, "delete", "pod", opPod, "-n", "floe-system", "--wait=true", "--timeout=60s")
	if v = view(t, ns); v.Status.Epoch != before || v.Status.EpochState != "Changing" {
		t.Fatalf("the change finished before the operator was killed: epoch %d %s", v.Status.Epoch, v.Status.EpochState)
	}
	thaw()
	eventually(t, "a new operator pod completes the change", 180*time.Second, func() (bool, string) {
		v = view(t, ns)
		pods := readyPods(t, "floe-system")
		_, old := pods[opPod]
		return !old && len(pods) == 1 && v.Status.Epoch == before+1 && v.Status.EpochState == "Stable", kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.status}")
	})
	readBack(t, ns, blobs)

	// an upgrade (new image): the StatefulSet is OnDelete, the operator rolls the pods itself,
	// highest ordinal first, one at a time, each only once the previous one is back and the
	// cluster idle
	patched := time.Now().Add(-time.Second)
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"image":"ghcr.io/floe-dev/floe-node:0.1.1"}}`)
	type podMeta struct {
		Items []struct {
			Metadata struct {
				Name              string            `json:"name"`
				CreationTimestamp time.Time         `json:"creationTimestamp"`
				Labels            map[string]string `json:"labels"`
			} `json:"metadata"`
		} `json:"items"`
	}
	var pm podMeta
	eventually(t, "every pod rolled onto the new revision, the cluster Available", 300*time.Second, func() (bool, string) {
		rev := stsField(t, ns, ".status.updateRevision")
		if err := json.Unmarshal([]byte(kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=testnet", "-o", "json")), &pm); err != nil {
			return false, err.Error()
		}
		done := len(pm.Items) == 4
		for _, p := range pm.Items {
			done = done && p.Metadata.Labels["controller-revision-hash"] == rev
		}
		v = view(t, ns)
		return done && v.Status.Phase == "Available", fmt.Sprintf("revision %s, phase %s", rev, v.Status.Phase)
	})
	created := map[string]time.Time{}
	for _, p := range pm.Items {
		if p.Metadata.CreationTimestamp.Before(patched) {
			t.Fatalf("%s was not recreated", p.Metadata.Name)
		}
		created[p.Metadata.Name] = p.Metadata.CreationTimestamp
	}
	for i := 3; i > 0; i-- {
		a, b := created[fmt.Sprintf("testnet-%d", i)], created[fmt.Sprintf("testnet-%d", i-1)]
		if !a.Before(b) {
			t.Fatalf("pods not rolled highest first, one at a time: %v", created)
		}
	}
	readBack(t, ns, blobs)
}
