//go:build e2e

package harness

// The Helm charts (charts/floe-crds, charts/floe) on the real API server: lint, render and
// server-side dry-run, least-privilege RBAC equal to manifests/, and the life of a release with
// a testnet — install until the operator runs and the StorageCluster is built and has status,
// upgrade to more nodes in place, uninstall leaving only the CRD and the retained volumes.
// TestChartMetricsExist checks every metric the dashboard and the alerts use against the
// /metrics of a running floe-node, the control plane (floe testnet supervisor) and floe-operator.

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
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// every monitoring value switched on, so that every template renders
var allMonitoring = []string{
	"--set", "monitoring.serviceMonitor.enabled=true",
	"--set", "monitoring.podMonitor.enabled=true",
	"--set", "monitoring.prometheusRule.enabled=true",
	"--set", "monitoring.dashboard.enabled=true",
}

func helmRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, helm(t), args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// renderedObjects splits a multi-document YAML stream into JSON objects.
func renderedObjects(t *testing.T, stream string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(stream, -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

func kindOf(o map[string]any) string {
	k, _ := o["kind"].(string)
	return k
}

func nameOf(o map[string]any) string {
	m, _ := o["metadata"].(map[string]any)
	n, _ := m["name"].(string)
	return n
}

func TestHelmLintsTheProductChart(t *testing.T) {
	for _, args := range [][]string{
		{"lint", "--strict", repoPath("charts", "floe-crds")},
		{"lint", "--strict", repoPath("charts", "floe")},
		append([]string{"lint", "--strict", repoPath("charts", "floe"), "--set", "testnet.enabled=true", "--set", "replicas=2"}, allMonitoring...),
	} {
		helmRun(t, args...)
	}
	// values.schema.json refuses bad values with a message naming the field
	for _, c := range []struct{ set, msg string }{
		{"testnet.nodes=0", "/testnet/nodes"},
		{"testnet.epochDuration=5x", "/testnet/epochDuration"},
		{"image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"unknownKey=1", "additional properties 'unknownKey' not allowed"},
		{"replicas=3,leaderElection.enabled=false", "replicas=3 needs leaderElection.enabled=true"},
		{"testnet.enabled=true,testnet.nodes=20", "testnet.nodes (20) must not exceed testnet.shards (10)"},
	} {
		out, err := run(t, helm(t), "template", "floe", repoPath("charts", "floe"), "--set", c.set)
		if err == nil || !strings.Contains(out, c.msg) {
			t.Errorf("--set %s: want an error containing %q, got %v\n%s", c.set, c.msg, err, out)
		}
	}
}

// Everything the charts render is accepted by the real API server (server-side dry run: schema,
// defaults, admission), except the prometheus-operator kinds, whose CRDs the harness does not
// have: those are checked for shape.
func TestChartRendersValidObjects(t *testing.T) {
	installCRDs(t)
	ns := namespace(t, "chart-render")
	crds := helmRun(t, "template", "floe-crds", repoPath("charts", "floe-crds"))
	args := append([]string{"template", "floe", repoPath("charts", "floe"), "-n", ns, "--set", "testnet.enabled=true", "--set", "testnet.market.enabled=true"}, allMonitoring...)
	stream := crds + "\n---\n" + helmRun(t, args...)
	var apply []string
	kinds := map[string]int{}
	for _, o := range renderedObjects(t, stream) {
		kinds[kindOf(o)]++
		if strings.HasPrefix(o["apiVersion"].(string), "monitoring.coreos.com/") {
			spec, _ := o["spec"].(map[string]any)
			if len(spec) == 0 {
				t.Errorf("%s %s has no spec", kindOf(o), nameOf(o))
			}
			continue
		}
		b, _ := json.Marshal(o)
		apply = append(apply, string(b))
	}
	for _, k := range []string{"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "StorageCluster", "ConfigMap", "Job", "ServiceMonitor", "PodMonitor", "PrometheusRule"} {
		if kinds[k] == 0 {
			t.Errorf("nothing of kind %s rendered (kinds: %v)", k, kinds)
		}
	}
	f := filepath.Join(t.TempDir(), "rendered.json")
	if err := os.WriteFile(f, []byte(strings.Join(apply, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "kubectl", "apply", "--dry-run=server", "-n", ns, "-f", f); err != nil {
		t.Fatalf("the API server refuses what the charts render: %v\n%s", err, out)
	}
}

type rbacRule struct {
	APIGroups     []string `json:"apiGroups"`
	Resources     []string `json:"resources"`
	Verbs         []string `json:"verbs"`
	ResourceNames []string `json:"resourceNames,omitempty"`
}

func rulesOf(t *testing.T, o map[string]any) []string {
	b, _ := json.Marshal(o["rules"])
	var rules []rbacRule
	if err := json.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+":"+v)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// The chart grants the operator exactly what manifests/10-rbac.yaml grants (the Lease verbs in a
// namespaced Role instead of the ClusterRole), and no wildcards.
func TestChartRBACMirrorsTheManifests(t *testing.T) {
	manifest, err := os.ReadFile(repoPath("manifests", "10-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, o := range renderedObjects(t, string(manifest)) {
		if kindOf(o) == "ClusterRole" {
			want = rulesOf(t, o)
		}
	}
	var got []string
	for _, o := range renderedObjects(t, helmRun(t, "template", "floe", repoPath("charts", "floe"))) {
		if k := kindOf(o); k == "ClusterRole" || k == "Role" {
			got = append(got, rulesOf(t, o)...)
		}
	}
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("chart RBAC differs from manifests/10-rbac.yaml\nchart:\n%s\nmanifests:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range got {
		if strings.Contains(r, "*") {
			t.Errorf("wildcard in RBAC: %s", r)
		}
	}
}

// helm install → the operator runs under the chart's RBAC and builds the testnet; helm upgrade
// changes it in place; helm uninstall removes everything but the CRD and the retained volumes.
func TestHelmInstallUpgradeUninstallATestnet(t *testing.T) {
	ns := namespace(t, "helm")
	release := "floe-e2e" // not "floe": manifests/ (other tests) already own ClusterRole floe-operator
	// The cleanup hook runs kubectl; floe-kubelet runs $FLOE_BIN_DIR/<command[0]> for images
	// named floe*, so kubectl is linked there for the hook's pod.
	binDir := os.Getenv("FLOE_BIN_DIR")
	if binDir == "" {
		t.Fatal("FLOE_BIN_DIR is not set (run through e2e/run-k8s-tests.sh)")
	}
	kubectlPath, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(binDir, "kubectl")
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink(kubectlPath, link); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(link) })
	}

	// the CRD chart first; --take-ownership adopts a CRD applied earlier with kubectl
	helmRun(t, "upgrade", "--install", "floe-crds", repoPath("charts", "floe-crds"), "--take-ownership", "--wait")
	kubectl(t, "wait", "--for", "condition=Established", "crd/storageclusters.floe.dev", "--timeout=60s")
	if keep := kubectl(t, "get", "crd", "storageclusters.floe.dev", "-o", `jsonpath={.metadata.annotations.helm\.sh/resource-policy}`); keep != "keep" {
		t.Fatalf("CRD resource-policy %q", keep)
	}

	install := []string{"install", release, repoPath("charts", "floe"), "-n", ns,
		"--set", "testnet.enabled=true", "--set", "testnet.retention=Retain",
		"--set", "testnet.cleanup.image=floe-kubectl:e2e", "--set", "monitoring.dashboard.enabled=true",
		"--wait", "--timeout", "3m"}
	helmRun(t, install...)
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_, _ = run(t, helm(t), "uninstall", release, "-n", ns, "--wait", "--timeout", "2m")
		}
	})
	// --wait returned: the operator Deployment is available, so it listed StorageClusters as its
	// ServiceAccount; the StorageCluster was built with its six objects and status
	// (the testnet's node pods share the namespace and turn Ready once they hold a committee)
	op := 0
	for name := range readyPods(t, ns) {
		if strings.Contains(name, "floe-operator") {
			op++
		}
	}
	if op != 1 {
		t.Fatalf("operator pods Ready: %d of %v", op, readyPods(t, ns))
	}
	ownedObjects(t, ns)
	s := observed(t, ns, "testnet")
	if len(s.Metadata.Finalizers) != 1 || s.Metadata.Finalizers[0] != "floe.dev/cleanup" {
		t.Fatalf("finalizers %v", s.Metadata.Finalizers)
	}
	eventually(t, "four node pods Running", 90*time.Second, func() (bool, string) {
		n := 0
		for _, p := range pods(t, ns).Items {
			if nodePod.MatchString(p.Metadata.Name) && p.Status.Phase == "Running" {
				n++
			}
		}
		return n == 4, kubectl(t, "get", "pods", "-n", ns, "-o", "wide")
	})
	// the control plane inside the operator forms the committee; a blob round-trips through
	// the testnet's pods
	eventually(t, "StorageCluster Available", 3*time.Minute, func() (bool, string) {
		st, reason := getFSC(t, ns, "testnet").condition("Available")
		return st == "True", st + "/" + reason
	})
	blobs := []blob{putBlob(t, ns, 150_000)}
	readBack(t, ns, blobs)
	// the chart's testnet turns the gateway on: the operator's Deployment serves HTTP
	blobs = append(blobs, gatewayServes(t, ns))
	if n := kubectl(t, "get", "configmap", "-n", ns, "-l", "grafana_dashboard=1", "-o", "name"); !strings.Contains(n, "dashboard") {
		t.Fatalf("dashboard ConfigMap: %q", n)
	}
	uid := kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.metadata.uid}")

	// helm upgrade: more nodes, the same object
	helmRun(t, "upgrade", release, repoPath("charts", "floe"), "-n", ns, "--reuse-values", "--set", "testnet.nodes=6", "--wait", "--timeout", "3m")
	if again := kubectl(t, "get", "fsc", "testnet", "-n", ns, "-o", "jsonpath={.metadata.uid}"); again != uid {
		t.Fatalf("helm upgrade replaced the StorageCluster: %s -> %s", uid, again)
	}
	if n := fscField(t, ns, "testnet", ".spec.nodes"); n != "6" {
		t.Fatalf("spec.nodes after upgrade: %s", n)
	}
	observed(t, ns, "testnet")
	if got := stsField(t, ns, ".spec.replicas"); got != "6" {
		t.Fatalf("StatefulSet replicas after upgrade: %s", got)
	}
	// an epoch change gives the two new pods shards; the blob still reads back
	eventually(t, "an epoch change to six members", 3*time.Minute, func() (bool, string) {
		v := view(t, ns)
		return len(v.holders()) == 6 && v.cond("Available") == "True", fmt.Sprint(v.Status.Epoch, v.holders())
	})
	readBack(t, ns, blobs)

	// helm uninstall: the pre-delete hook deletes the StorageCluster while the operator still
	// runs (its finalizer completes), then the operator and its RBAC go
	claims := strings.Fields(kubectl(t, "get", "pvc", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}"))
	if len(claims) != 6 {
		t.Fatalf("claims before uninstall: %v", claims)
	}
	helmRun(t, "uninstall", release, "-n", ns, "--wait", "--timeout", "3m")
	uninstalled = true
	eventually(t, "everything of the release gone", 90*time.Second, func() (bool, string) {
		out, _ := run(t, "kubectl", "get", "fsc,statefulset,service,configmap,secret,poddisruptionbudget,deployment,job,serviceaccount,role,rolebinding",
			"-n", ns, "-o", "name")
		var left []string
		for _, l := range strings.Fields(out) {
			// the namespace's own defaults
			if l != "serviceaccount/default" && l != "configmap/kube-root-ca.crt" {
				left = append(left, l)
			}
		}
		podsLeft, _ := run(t, "kubectl", "get", "pods", "-n", ns, "-o", "name")
		left = append(left, strings.Fields(podsLeft)...)
		return len(left) == 0, strings.Join(left, " ")
	})
	for _, o := range []string{"clusterrole/" + release + "-floe-operator", "clusterrolebinding/" + release + "-floe-operator"} {
		if out, err := run(t, "kubectl", "get", o); err == nil {
			t.Fatalf("%s left after uninstall:\n%s", o, out)
		}
	}
	left := strings.Fields(kubectl(t, "get", "pvc", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}"))
	if strings.Join(left, " ") != strings.Join(claims, " ") {
		t.Fatalf("retained volumes: before %v, after %v", claims, left)
	}
	// uninstalling the CRD chart keeps the CRD (and so every StorageCluster anywhere)
	helmRun(t, "uninstall", "floe-crds", "--wait")
	kubectl(t, "get", "crd", "storageclusters.floe.dev")
}

// ---- metric names -------------------------------------------------------------------------

// Metrics the charts may use that Floe does not export: the kubelet's volume statistics.
var externalMetric = regexp.MustCompile(`^kubelet_volume_stats_(used|capacity|available)_bytes$`)

var promqlWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`sum min max avg count stddev stdvar topk bottomk quantile count_values group
		rate irate increase delta idelta deriv predict_linear histogram_quantile floor ceil round abs
		clamp clamp_min clamp_max changes resets absent absent_over_time time vector scalar label_replace label_join
		sort sort_desc timestamp avg_over_time min_over_time max_over_time sum_over_time count_over_time last_over_time
		and or unless by without on ignoring group_left group_right offset bool inf nan le`) {
		promqlWords[w] = true
	}
}

// metricNames returns the metric names a PromQL expression reads.
func metricNames(expr string) []string {
	s := regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).ReplaceAllString(expr, `""`) // strings
	s = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(s, " ")              // label matchers
	s = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(s, " ")             // ranges
	s = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`).ReplaceAllString(s, " ")
	var names []string
	for _, tok := range regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`).FindAllString(s, -1) {
		if !promqlWords[tok] && !strings.HasPrefix(tok, "$") {
			names = append(names, tok)
		}
	}
	return names
}

// chartQueries renders the dashboard and the alerts and returns every PromQL expression with
// where it comes from.
func chartQueries(t *testing.T) map[string]string {
	t.Helper()
	out := helmRun(t, append([]string{"template", "floe", repoPath("charts", "floe")}, allMonitoring...)...)
	queries := map[string]string{}
	for _, o := range renderedObjects(t, out) {
		switch kindOf(o) {
		case "ConfigMap":
			data, _ := o["data"].(map[string]any)
			for key, v := range data {
				var dash any
				if err := json.Unmarshal([]byte(v.(string)), &dash); err != nil {
					t.Fatalf("dashboard %s is not JSON: %v", key, err)
				}
				var walk func(path string, x any)
				walk = func(path string, x any) {
					switch x := x.(type) {
					case map[string]any:
						if e, ok := x["expr"].(string); ok {
							queries["dashboard "+path] = e
						}
						for k, v := range x {
							walk(path+"."+k, v)
						}
					case []any:
						for i, v := range x {
							walk(fmt.Sprintf("%s[%d]", path, i), v)
						}
					}
				}
				walk(key, dash)
			}
		case "PrometheusRule":
			spec, _ := o["spec"].(map[string]any)
			for _, g := range spec["groups"].([]any) {
				for _, r := range g.(map[string]any)["rules"].([]any) {
					rule := r.(map[string]any)
					queries["alert "+rule["alert"].(string)] = rule["expr"].(string)
				}
			}
		}
	}
	if len(queries) < 20 {
		t.Fatalf("only %d queries found in the dashboard and alerts", len(queries))
	}
	return queries
}

// scrape returns the sample names of a /metrics page.
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			names[l[:i]] = true
		}
	}
	return names
}

// floeCLI runs the floe CLI and returns its standard output (notes such as the testnet
// faucet's go to standard error, shown only when it fails).
func floeCLI(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(os.Getenv("FLOE_BIN_DIR"), "floe"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("floe %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func TestChartMetricsExist(t *testing.T) {
	queries := chartQueries(t)

	// a running node and the control plane: a local testnet, with one blob written and read so
	// that the per-method and per-stage series exist
	dir := t.TempDir()
	floeCLI(t, "--testnet-dir", dir, "testnet", "up", "--nodes", "4", "--shards", "10", "--epoch", "10s", "--challenge-samples", "2")
	t.Cleanup(func() {
		_, _ = run(t, filepath.Join(os.Getenv("FLOE_BIN_DIR"), "floe"), "--testnet-dir", dir, "testnet", "down")
	})
	blob := filepath.Join(dir, "blob.bin")
	if err := os.WriteFile(blob, []byte(strings.Repeat("floe metrics check ", 5000)), 0o600); err != nil {
		t.Fatal(err)
	}
	var put struct {
		BlobID string `json:"blob_id"`
	}
	putOut := floeCLI(t, "--testnet-dir", dir, "--json", "put", blob)
	if err := json.Unmarshal([]byte(putOut), &put); err != nil || put.BlobID == "" {
		t.Fatalf("floe put --json: %v\n%s", err, putOut)
	}
	floeCLI(t, "--testnet-dir", dir, "get", put.BlobID, "-o", filepath.Join(dir, "back.bin"))
	var state struct {
		Metrics string `json:"metrics"`
		Gateway string `json:"gateway"`
		Nodes   []struct {
			HTTP string `json:"http"`
		} `json:"nodes"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "testnet.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &state); err != nil || state.Metrics == "" || state.Gateway == "" || len(state.Nodes) == 0 {
		t.Fatalf("testnet.json: %v\n%s", err, raw)
	}
	sources := map[string]map[string]bool{"floe-node": scrape(t, "http://"+state.Nodes[0].HTTP+"/metrics")}
	// the gateway's per-route series exist once it answered: the blob read through it
	resp, err := http.Get(state.Gateway + "/v1/blobs/" + put.BlobID)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET through the testnet's gateway: %d", resp.StatusCode)
	}
	sources["floe-gateway"] = scrape(t, state.Gateway+"/metrics")
	// per-member challenge results exist once the first challenge round ran (10-60 % of an epoch)
	eventually(t, "a challenge round on the testnet", 60*time.Second, func() (bool, string) {
		sources["control plane"] = scrape(t, "http://"+state.Metrics+"/metrics")
		return sources["control plane"]["floe_control_member_challenge_passed"], "no floe_control_member_challenge_passed yet"
	})

	// floe-operator, run as users run it, after one reconcile
	installOperator(t)
	ns := namespace(t, "metrics")
	kubectl(t, "apply", "-n", ns, "-f", repoPath("manifests", "examples", "testnet.yaml"))
	observed(t, ns, "testnet")
	t.Cleanup(func() { _, _ = run(t, "kubectl", "delete", "fsc", "testnet", "-n", ns, "--wait=true", "--timeout=60s") })
	var opIP string
	for _, p := range pods(t, "floe-system").Items {
		opIP = p.Status.PodIP
	}
	// an error series exists after a failed reconcile: a ServiceMonitor without the
	// prometheus-operator CRD (the harness has none) fails the reconcile
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"serviceMonitor":{"enabled":true}}}`)
	eventually(t, "a counted reconcile error", 60*time.Second, func() (bool, string) {
		sources["floe-operator"] = scrape(t, "http://"+opIP+":8080/metrics")
		return sources["floe-operator"]["floe_operator_reconcile_errors_total"], "no floe_operator_reconcile_errors_total yet"
	})
	kubectl(t, "patch", "fsc", "testnet", "-n", ns, "--type", "merge", "-p", `{"spec":{"serviceMonitor":{"enabled":false}}}`)

	for _, want := range []string{"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		for _, src := range []string{"floe-node", "floe-operator"} {
			if !sources[src][want] {
				t.Errorf("%s does not export %s", src, want)
			}
		}
	}
	checked := map[string]bool{}
	for where, expr := range queries {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			if externalMetric.MatchString(n) {
				continue
			}
			found := false
			for _, s := range sources {
				found = found || s[n]
			}
			if !found {
				t.Errorf("%s uses %s, which no Floe process exports (expr: %s)", where, n, expr)
			}
			checked[n] = true
		}
	}
	t.Logf("%d queries, %d metric names checked against floe-node, the control plane, floe-gateway and floe-operator", len(queries), len(checked))
}

// The extractor finds metric names and nothing else (a misspelt metric must not slip through).
func TestMetricNamesParser(t *testing.T) {
	for expr, want := range map[string]string{
		`histogram_quantile(0.99, sum by (le, method) (rate(floe_node_x_bucket{namespace=~"$namespace",method=~"A|B"}[5m])))`: "floe_node_x_bucket",
		`sum without (node) (a * (1 - b)) > floor((sum without (node) (a) - 1) / 3) / 2`:                                      "a b a",
		`x > 0 and deriv(y[15m]) > 0`:                     "x y",
		`increase(z{result=~"failed|timed_out"}[1h]) > 0`: "z",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// gatewayServes writes a blob through the testnet's gateway pod (the operator's Deployment),
// reads it back through the gateway and through the nodes, and returns it. The pod reaches the
// nodes by the client Service's DNS name, which floe-kubelet resolves to a ready endpoint.
func gatewayServes(t *testing.T, ns string) blob {
	t.Helper()
	if u := fscField(t, ns, "testnet", ".status.gatewayUrl"); u != "http://testnet-gateway."+ns+".svc:31415" {
		t.Fatalf("status.gatewayUrl %q", u)
	}
	var base string
	eventually(t, "the gateway pod Ready", 2*time.Minute, func() (bool, string) {
		for _, p := range pods(t, ns).Items {
			if !strings.HasPrefix(p.Metadata.Name, "testnet-gateway-") || p.Status.PodIP == "" {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == "Ready" && c.Status == "True" {
					base = "http://" + p.Status.PodIP + ":31415"
					return true, ""
				}
			}
		}
		return false, kubectl(t, "get", "pods", "-n", ns, "-o", "wide")
	})
	data := make([]byte, 70_000)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, base+"/v1/blobs?epochs=3", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT through the gateway: %d %s", resp.StatusCode, body)
	}
	var put struct {
		NewlyCreated struct {
			BlobObject struct {
				BlobID string `json:"blobId"`
				Size   int    `json:"size"`
			} `json:"blobObject"`
		} `json:"newlyCreated"`
	}
	if err := json.Unmarshal(body, &put); err != nil || put.NewlyCreated.BlobObject.BlobID == "" {
		t.Fatalf("PUT answer %s: %v", body, err)
	}
	if put.NewlyCreated.BlobObject.Size != len(data) {
		t.Fatalf("PUT answer size %d", put.NewlyCreated.BlobObject.Size)
	}
	id := put.NewlyCreated.BlobObject.BlobID
	resp, err = client.Get(base + "/v1/blobs/" + id)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET through the gateway: %d, %d bytes (want %d)", resp.StatusCode, len(got), len(data))
	}
	b := blob{id, data}
	readBack(t, ns, []blob{b})
	return b
}
