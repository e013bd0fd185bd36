//go:build e2e

package harness

// A StorageCluster that sells storage (spec.market): the operator makes the market's keys, runs
// the control pod (`floe control serve` on its own volume) behind the `<cluster>-control`
// Service, and its brain publishes committees that carry the control key and the prices the
// node pods voted (per ordinal). Blobs are bought with the real `floe` CLI from a genesis
// balance; an unpaid write and an unfunded account are refused; a blob outlives its paid
// epochs only as "expired"; the control pod deleted comes back on its volume with every
// balance.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type marketStatus struct {
	Status struct {
		Phase        string `json:"phase"`
		Epoch        int    `json:"epoch"`
		EpochState   string `json:"epochState"`
		StoragePrice *int   `json:"storagePrice"`
		WritePrice   *int   `json:"writePrice"`
		ControlURL   string `json:"controlUrl"`
	} `json:"status"`
}

func marketView(t *testing.T, ns string) marketStatus {
	t.Helper()
	var s marketStatus
	if err := json.Unmarshal([]byte(kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// floeAs runs the floe CLI against the node pods with the control API at `control` and the
// account key `key` (no --control when empty).
func floeAs(t *testing.T, ns, control, key string, args ...string) ([]byte, error) {
	t.Helper()
	pre := []string{"--account-file", key}
	if control != "" {
		pre = append(pre, "--control", control)
	}
	return floe(t, ns, append(pre, args...)...)
}

func controlPodIP(t *testing.T, ns string) string {
	t.Helper()
	var ip string
	eventually(t, "the control pod Ready", 120*time.Second, func() (bool, string) {
		out, err := run(t, "kubectl", "get", "pod", "testnet-control-0", "-n", ns, "-o",
			`jsonpath={.status.podIP} {.status.conditions[?(@.type=="Ready")].status}`)
		f := strings.Fields(out)
		if err != nil || len(f) != 2 || f[1] != "True" {
			return false, out
		}
		ip = f[0]
		return true, ""
	})
	return ip
}

func balance(t *testing.T, ns, control, key string) int {
	t.Helper()
	out, err := floeAs(t, ns, control, key, "--json", "account", "balance")
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Balance int `json:"balance"`
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return b.Balance
}

func TestOperatorSellsStorageOnKubernetes(t *testing.T) {
	installOperator(t)
	ns := namespace(t, "market")
	dir := t.TempDir()
	rich, poor := filepath.Join(dir, "rich.key"), filepath.Join(dir, "poor.key")
	bin := filepath.Join(os.Getenv("FLOE_BIN_DIR"), "floe")
	var account string
	for _, k := range []string{rich, poor} {
		out, err := exec.Command(bin, "--account-file", k, "--json", "account", "new").Output()
		if err != nil {
			t.Fatalf("floe account new: %v", err)
		}
		var a struct {
			Account string `json:"account"`
		}
		if err := json.Unmarshal(out, &a); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if k == rich {
			account = a.Account
		}
	}
	// votes: pod 0 the spec's 100/20, pods 1-3 250/40; a quorum (7 of 10 shards) voted at or
	// below 250/40 whatever the shard split, and pod 0 alone holds at most 3
	spec := fmt.Sprintf(`apiVersion: floe.dev/v1alpha1
kind: StorageCluster
metadata:
  name: testnet
spec:
  nodes: 4
  shards: 10
  epochDuration: 1h
  storage: {size: 1Gi, storageClassName: floe-local, retention: {onScaleDown: Delete, onDelete: Delete}}
  challenges: {samples: 50, timeout: 5s}
  market:
    enabled: true
    maxEpochsAhead: 10
    genesisBalances: [{account: %q, units: 1000000000}]
    priceVotes:
      storage: 100
      write: 20
      overrides:
      - {ordinal: 1, storage: 250, write: 40}
      - {ordinal: 2, storage: 250, write: 40}
      - {ordinal: 3, storage: 250, write: 40}
`, account)
	f := filepath.Join(dir, "fsc.yaml")
	if err := os.WriteFile(f, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-n", ns, "-f", f)

	// the published prices are the quorum-below value of the pods' votes
	var v marketStatus
	eventually(t, "Available with the voted prices", 180*time.Second, func() (bool, string) {
		v = marketView(t, ns)
		return v.Status.Phase == "Available" && v.Status.StoragePrice != nil && *v.Status.StoragePrice == 250 &&
				v.Status.WritePrice != nil && *v.Status.WritePrice == 40,
			kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.status}")
	})
	if want := "testnet-control." + ns + ".svc:7100"; v.Status.ControlURL != want {
		t.Fatalf("controlUrl %q, want %q", v.Status.ControlURL, want)
	}
	if cols := kubectl(t, "get", "fsc", "-n", ns); !strings.Contains(cols, "PRICE") || !strings.Contains(cols, "250") {
		t.Fatalf("kubectl get fsc does not show the price:\n%s", cols)
	}
	out := kubectl(t, "get", "secret/testnet-control-keys", "statefulset/testnet-control", "service/testnet-control", "-n", ns,
		"-o", "jsonpath={range .items[*]}{.kind}:{.metadata.ownerReferences[0].name} {end}")
	if strings.Count(out, ":testnet") != 3 {
		t.Fatalf("the market's objects are not all owned by the cluster: %s", out)
	}
	// tier 3 has no cluster DNS: the CLI reaches the control pod by its IP
	control := controlPodIP(t, ns) + ":7100"
	before := balance(t, ns, control, rich)
	if before != 1_000_000_000 {
		t.Fatalf("genesis balance %d, want 1000000000", before)
	}

	// a blob bought for one epoch: readable, charged storage + write
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	file := filepath.Join(dir, "blob")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	put, err := floeAs(t, ns, control, rich, "--json", "put", "--epochs", "1", file)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		BlobID      string `json:"blob_id"`
		EncodedSize int    `json:"encoded_size"`
	}
	if err := json.Unmarshal(put, &p); err != nil {
		t.Fatalf("%v: %s", err, put)
	}
	units := (p.EncodedSize + (1 << 20) - 1) >> 20
	if got, want := before-balance(t, ns, control, rich), units*(250+40); got != want {
		t.Fatalf("charged %d, want %d (%d MiB encoded × (250 storage × 1 epoch + 40 write))", got, want, units)
	}
	readBack(t, ns, []blob{{p.BlobID, data}})

	// no registration, no storage: the nodes refuse the slivers of an unpaid blob, and an
	// account without funds is refused by the market (and charged nothing)
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("unpaid"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := floeAs(t, ns, "", rich, "put", other); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("an unregistered write was not refused by the nodes: %v %s", err, out)
	}
	if out, err := floeAs(t, ns, control, poor, "put", other); err == nil || !strings.Contains(err.Error(), "insufficient balance") {
		t.Fatalf("an unfunded account was not refused: %v %s", err, out)
	}
	if b := balance(t, ns, control, poor); b != 0 {
		t.Fatalf("the refused account holds %d", b)
	}

	// the control pod deleted: it comes back on its volume with every balance
	after := balance(t, ns, control, rich)
	kubectl(t, "delete", "pod", "testnet-control-0", "-n", ns, "--wait=true", "--timeout=60s")
	control = controlPodIP(t, ns) + ":7100"
	eventually(t, "the balance back after the control pod's restart", 60*time.Second, func() (bool, string) {
		out, err := floeAs(t, ns, control, rich, "--json", "account", "balance")
		return err == nil && strings.Contains(string(out), fmt.Sprintf(`"balance":%d`, after)), fmt.Sprint(string(out), err)
	})

	// two epochs on, the blob's paid epoch is over: reads are refused as expired
	e := marketView(t, ns).Status.Epoch
	e = nextEpoch(t, ns, e).Status.Epoch
	nextEpoch(t, ns, e)
	eventually(t, "the blob refused as expired", 90*time.Second, func() (bool, string) {
		out, err := floeAs(t, ns, control, rich, "get", p.BlobID, "-o", filepath.Join(dir, "out"))
		return err != nil && strings.Contains(err.Error(), "expired"), fmt.Sprint(string(out), err)
	})
}
