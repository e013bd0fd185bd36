//go:build e2e

package harness

// e2e/kind/run.sh needs Docker and kind, which this machine lacks; what it decides without them
// is checked here: argument parsing (refusals with exit status 2 and a message naming the
// argument) and what it applies (--render: the kind config, the Helm values, the rendered charts),
// accepted by the real API server in a server-side dry run.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func kindScript(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(repoPath("e2e", "kind", "run.sh"), args...)
	cmd.Env = append(os.Environ(), "HELM="+helm(t))
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func TestKindScriptArguments(t *testing.T) {
	if out, code := kindScript(t, "--help"); code != 0 || !strings.Contains(out, "--k8s-version") {
		t.Fatalf("--help: exit %d\n%s", code, out)
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--nodes", "11"}, "--nodes must be a number of worker nodes 0-10, got '11'"},
		{[]string{"--nodes", "two"}, "--nodes must be a number of worker nodes 0-10, got 'two'"},
		{[]string{"--k8s-version", "1.33"}, "--k8s-version must look like v1.33.4, got '1.33'"},
		{[]string{"--storage-nodes", "9"}, "--shards (10) must be at least --storage-nodes + 2 (11)"},
		{[]string{"--shards", "2000"}, "--shards must be 4-1000, got '2000'"},
		{[]string{"--epoch", "5x"}, "--epoch must be a duration like 30s or 2m, got '5x'"},
		{[]string{"--cluster", "Bad_Name"}, "--cluster must be a DNS label"},
		{[]string{"--tag"}, "--tag needs a value"},
		{[]string{"--frobnicate"}, "unknown argument: --frobnicate"},
	} {
		out, code := kindScript(t, c.args...)
		if code != 2 || !strings.Contains(out, c.msg) {
			t.Errorf("%v: exit %d, want 2 with %q\n%s", c.args, code, c.msg, out)
		}
	}
}

func TestKindScriptRendersWhatTheAPIServerAccepts(t *testing.T) {
	installCRDs(t)
	ns := namespace(t, "kind-render")
	dir := t.TempDir()
	out, code := kindScript(t, "--render", dir, "--k8s-version", "v1.32.8", "--nodes", "3",
		"--storage-nodes", "5", "--shards", "20", "--namespace", ns, "--tag", "ci-123")
	if code != 0 {
		t.Fatalf("--render: exit %d\n%s", code, out)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "kind-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		Kind  string `json:"kind"`
		Nodes []struct {
			Role  string `json:"role"`
			Image string `json:"image"`
		} `json:"nodes"`
	}
	objs := renderedObjects(t, string(cfg))
	if len(objs) != 1 {
		t.Fatalf("kind config: %d documents", len(objs))
	}
	reparse(t, objs[0], &kc)
	workers := 0
	for _, n := range kc.Nodes {
		if n.Image != "kindest/node:v1.32.8" {
			t.Errorf("kind node image %q", n.Image)
		}
		if n.Role == "worker" {
			workers++
		}
	}
	if kc.Kind != "Cluster" || len(kc.Nodes) != 4 || workers != 3 {
		t.Fatalf("kind config: %s", cfg)
	}
	var sawTestnet, sawOperator bool
	for _, f := range []string{"floe-crds.yaml", "floe.yaml"} {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range renderedObjects(t, string(raw)) {
			switch kindOf(o) {
			case "StorageCluster":
				var sc struct {
					Spec struct {
						Nodes, Shards   int
						Image           string
						ImagePullPolicy string `json:"imagePullPolicy"`
					}
				}
				reparse(t, o, &sc)
				sawTestnet = sc.Spec.Nodes == 5 && sc.Spec.Shards == 20 && sc.Spec.Image == "floe-node:ci-123" && sc.Spec.ImagePullPolicy == "Never"
			case "Deployment":
				var d struct {
					Spec struct {
						Template struct {
							Spec struct {
								Containers []struct{ Image, ImagePullPolicy string }
							}
						}
					}
				}
				reparse(t, o, &d)
				c := d.Spec.Template.Spec.Containers[0]
				sawOperator = c.Image == "floe-operator:ci-123" && c.ImagePullPolicy == "Never"
			}
		}
		if out, err := run(t, "kubectl", "apply", "--dry-run=server", "-n", ns, "-f", filepath.Join(dir, f)); err != nil {
			t.Fatalf("the API server refuses %s: %v\n%s", f, err, out)
		}
	}
	if !sawTestnet || !sawOperator {
		t.Fatalf("rendered testnet as asked: %v, operator image as asked: %v", sawTestnet, sawOperator)
	}
}

func reparse(t *testing.T, from any, to any) {
	t.Helper()
	b, err := yaml.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, to); err != nil {
		t.Fatal(err)
	}
}
