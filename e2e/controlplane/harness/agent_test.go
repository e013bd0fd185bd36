//go:build e2e

package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// apply writes a manifest to a file and applies it into ns.
func apply(t *testing.T, ns, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-n", ns, "-f", f)
}

type containerStatus struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	ContainerID  string `json:"containerID"`
	State        struct {
		Running    *struct{} `json:"running"`
		Terminated *struct {
			ExitCode int    `json:"exitCode"`
			Reason   string `json:"reason"`
		} `json:"terminated"`
	} `json:"state"`
}

type podStatus struct {
	Metadata struct {
		UID string `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Phase             string            `json:"phase"`
		PodIP             string            `json:"podIP"`
		HostIP            string            `json:"hostIP"`
		ContainerStatuses []containerStatus `json:"containerStatuses"`
		Conditions        []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func getPod(t *testing.T, ns, name string) podStatus {
	t.Helper()
	var p podStatus
	if err := json.Unmarshal([]byte(kubectl(t, "get", "pod", name, "-n", ns, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p podStatus) container(name string) containerStatus {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			return c
		}
	}
	return containerStatus{}
}

// pidOf reads the process id floe-kubelet reports as containerID floe-process://<pid>.
func pidOf(t *testing.T, c containerStatus) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimPrefix(c.ContainerID, "floe-process://"))
	if err != nil {
		t.Fatalf("container %s: containerID %q is not floe-process://<pid>", c.Name, c.ContainerID)
	}
	return pid
}

func procStrings(t *testing.T, pid int, file string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// TestAgentRunsPodsLikeTheKubelet covers what the fixture chart does not: command → binary
// mapping, the downward API, ConfigMap/Secret env and volumes, emptyDir, the mountPath rewrite
// in args and env, exec/tcpSocket/grpc probes, liveness restarts, restartPolicy Never, and
// claims without a storage class getting the default floe-local class.
func TestAgentRunsPodsLikeTheKubelet(t *testing.T) {
	state := os.Getenv("FLOE_E2E_STATE")
	if state == "" {
		t.Fatal("FLOE_E2E_STATE is not set (run through e2e/run-k8s-tests.sh)")
	}
	ns := namespace(t, "agent")
	apply(t, ns, `
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello, node.toml: "log-format = \"text\"\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {token: sekret}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: plain}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: features}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: registry.example/team/floe-node:dev
    command: ["/usr/local/bin/floe-node"]
    args: ["--config", "/etc/cfg/node.toml", "--data-dir", "/scratch/data",
           "--grpc-addr", "$(POD_IP):7070", "--http-addr", "$(POD_IP):7071"]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: sec, key: token}}}
    - {name: COMBO, value: "$(POD_NAME)-$(GREETING)"}
    - {name: DATA_FILE, value: /scratch/data/x}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: plain, mountPath: /plain}
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: 7071}, periodSeconds: 1, failureThreshold: 5}
  - name: flaky
    image: floe-node:dev
    args: ["--data-dir", "/scratch/flaky", "--grpc-addr", "$(POD_IP):7080", "--http-addr", "$(POD_IP):7081"]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    readinessProbe: {grpc: {port: 7080}, periodSeconds: 1}
    livenessProbe: {httpGet: {path: /healthz, port: 7999}, periodSeconds: 1, failureThreshold: 1}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: cfg, configMap: {name: cfg}}
  - {name: sec, secret: {secretName: sec}}
  - {name: plain, persistentVolumeClaim: {claimName: plain}}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - name: bad
    image: floe-node:dev
    args: ["--no-such-flag"]
`)

	// a claim without a storage class gets the default class floe-local and is bound
	eventually(t, "claim without a class bound", 60*time.Second, func() (bool, string) {
		out, _ := run(t, "kubectl", "get", "pvc", "plain", "-n", ns, "-o", "jsonpath={.status.phase}/{.spec.storageClassName}")
		return out == "Bound/floe-local", out
	})

	// restartPolicy Never: the exited process leaves the pod Failed with its exit code
	eventually(t, "pod once Failed", 60*time.Second, func() (bool, string) {
		p := getPod(t, ns, "once")
		c := p.container("bad")
		ok := p.Status.Phase == "Failed" && c.State.Terminated != nil && c.State.Terminated.ExitCode != 0 && c.RestartCount == 0
		return ok, fmt.Sprintf("%+v", p.Status)
	})

	// the main container is ready (exec probe) and stays alive (tcpSocket probe); the flaky
	// container's liveness probe fails, so the agent restarts it
	var p podStatus
	eventually(t, "main ready and flaky restarted", 90*time.Second, func() (bool, string) {
		p = getPod(t, ns, "features")
		return p.Status.Phase == "Running" && p.container("main").Ready && p.container("flaky").RestartCount >= 2,
			fmt.Sprintf("%+v", p.Status)
	})
	if c := p.container("main"); c.RestartCount != 0 {
		t.Errorf("main restarted %d times; its tcpSocket liveness probe should pass", c.RestartCount)
	}
	if p.Status.HostIP != "127.0.0.1" {
		t.Errorf("hostIP %q, want 127.0.0.1", p.Status.HostIP)
	}
	if err := grpcServing(p.Status.PodIP); err != nil {
		t.Errorf("main's gRPC health at %s: %v", p.Status.PodIP, err)
	}

	pid := pidOf(t, p.container("main"))
	cmdline := procStrings(t, pid, "cmdline")
	if filepath.Base(cmdline[0]) != "floe-node" {
		t.Errorf("command[0] /usr/local/bin/floe-node should run $FLOE_BIN_DIR/floe-node; runs %s", cmdline[0])
	}
	env := map[string]string{}
	for _, kv := range procStrings(t, pid, "environ") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	want := map[string]string{
		"POD_IP": p.Status.PodIP, "POD_NAME": "features", "POD_NS": ns, "POD_UID": p.Metadata.UID,
		"NODE": "floe-agent-0", "HOST_IP": "127.0.0.1", "GREETING": "hello", "TOKEN": "sekret",
		"COMBO": "features-hello",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}

	// mountPath rewrite: /scratch in an env value and in args points at the emptyDir directory,
	// /etc/cfg at the ConfigMap's files
	podDirs, _ := filepath.Glob(filepath.Join(state, "pods", ns+"_features_*"))
	if len(podDirs) != 1 {
		t.Fatalf("pod directories of features: %v", podDirs)
	}
	scratch := filepath.Join(podDirs[0], "volumes", "scratch")
	if env["DATA_FILE"] != filepath.Join(scratch, "data", "x") {
		t.Errorf("DATA_FILE = %q, want it rewritten to %s/data/x", env["DATA_FILE"], scratch)
	}
	args := strings.Join(cmdline[1:], " ")
	if !strings.Contains(args, "--data-dir "+filepath.Join(scratch, "data")) {
		t.Errorf("--data-dir not rewritten into the emptyDir: %s", args)
	}
	if !strings.Contains(args, "--config "+filepath.Join(podDirs[0], "volumes", "cfg", "node.toml")) {
		t.Errorf("--config not rewritten into the ConfigMap volume: %s", args)
	}
	if strings.Contains(args, "$(") {
		t.Errorf("unexpanded variable in args: %s", args)
	}
	for file, content := range map[string]string{"cfg/greeting": "hello", "sec/token": "sekret"} {
		b, err := os.ReadFile(filepath.Join(podDirs[0], "volumes", file))
		if err != nil || string(b) != content {
			t.Errorf("volume file %s: %q, %v; want %q", file, b, err, content)
		}
	}
	if _, err := os.Stat(filepath.Join(scratch, "data", "node.key")); err != nil {
		t.Errorf("the node did not write its key into the emptyDir: %v", err)
	}
	logs, err := os.ReadFile(filepath.Join(podDirs[0], "main.log"))
	if err != nil || len(logs) == 0 {
		t.Errorf("container log %s/main.log empty or missing: %v", podDirs[0], err)
	}

	// deletion: the processes get SIGTERM and the pod object goes away
	kubectl(t, "delete", "pod", "features", "-n", ns, "--wait=true", "--timeout=60s")
	eventually(t, "process of the deleted pod gone", 15*time.Second, func() (bool, string) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		gone := err != nil || strings.Contains(string(st), ") Z ")
		return gone, string(st)
	})
}

// TestAgentWaitsForAndRefreshesConfigMaps: a pod whose ConfigMap does not exist yet waits
// (Pending, ContainerCreating) instead of failing, starts once it exists, and sees later edits
// in its volume files, as with the kubelet. It also gets a kubeconfig of its ServiceAccount.
func TestAgentWaitsForAndRefreshesConfigMaps(t *testing.T) {
	state := os.Getenv("FLOE_E2E_STATE")
	ns := namespace(t, "cmwait")
	apply(t, ns, `
apiVersion: v1
kind: Pod
metadata: {name: waiter}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: node
    image: floe-node:dev
    args: ["--data-dir", "/data", "--grpc-addr", "$(POD_IP):7070", "--http-addr", "$(POD_IP):7071"]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: late, mountPath: /etc/late}
    readinessProbe: {httpGet: {path: /healthz, port: 7071}, periodSeconds: 1}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: late, configMap: {name: late}}
`)
	eventually(t, "waiter Pending for its ConfigMap", 30*time.Second, func() (bool, string) {
		out, _ := run(t, "kubectl", "get", "pod", "waiter", "-n", ns, "-o",
			"jsonpath={.status.phase}/{.status.containerStatuses[0].state.waiting.reason}")
		return out == "Pending/ContainerCreating", out
	})
	apply(t, ns, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {setting: one}\n")
	var p podStatus
	eventually(t, "waiter Ready once its ConfigMap exists", 60*time.Second, func() (bool, string) {
		p = getPod(t, ns, "waiter")
		return p.Status.Phase == "Running" && p.container("node").Ready, fmt.Sprintf("%+v", p.Status)
	})
	podDirs, _ := filepath.Glob(filepath.Join(state, "pods", ns+"_waiter_*"))
	if len(podDirs) != 1 {
		t.Fatalf("pod directories of waiter: %v", podDirs)
	}
	setting := filepath.Join(podDirs[0], "volumes", "late", "setting")
	apply(t, ns, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {setting: two}\n")
	eventually(t, "ConfigMap edit visible in the volume", 30*time.Second, func() (bool, string) {
		b, err := os.ReadFile(setting)
		return err == nil && string(b) == "two", fmt.Sprintf("%q %v", b, err)
	})

	// KUBECONFIG authenticates as the pod's ServiceAccount
	env := map[string]string{}
	for _, kv := range procStrings(t, pidOf(t, p.container("node")), "environ") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if env["KUBECONFIG"] == "" {
		t.Fatal("the pod's process has no KUBECONFIG")
	}
	who := kubectl(t, "--kubeconfig", env["KUBECONFIG"], "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if want := "system:serviceaccount:" + ns + ":default"; who != want {
		t.Errorf("the pod's kubeconfig authenticates as %q, want %q", who, want)
	}
}
