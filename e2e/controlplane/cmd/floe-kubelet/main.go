// Command floe-kubelet is a TEST-ONLY stand-in for the kubelet: it registers one Node and runs
// every pod scheduled to it whose image is a Floe image as a local process of the matching
// binary. It replaces only the kubelet, and only in tests: the API server, etcd, scheduler and
// controller-manager it talks to are the real ones. See e2e/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

const kubeletVersion = "v1.33.13-floe"

type agent struct {
	client   kubernetes.Interface
	nodeName string
	stateDir string
	binDir   string
	pods     *podManager
	// where pods reach the API server (for the kubeconfig each pod gets, see podKubeconfig)
	apiHost string
	caData  []byte
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the API server")
	nodeName := flag.String("node-name", "floe-agent-0", "name of the Node to register")
	stateDir := flag.String("state-dir", "/tmp/floe-e2e", "directory for pod and volume state")
	binDir := flag.String("bin-dir", os.Getenv("FLOE_BIN_DIR"), "directory holding the Floe binaries that images map to")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if *binDir == "" {
		log.Fatal("--bin-dir (or FLOE_BIN_DIR) is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatalf("client: %v", err)
	}
	abs, _ := filepath.Abs(*stateDir)
	caData := cfg.CAData
	if len(caData) == 0 && cfg.CAFile != "" {
		if caData, err = os.ReadFile(cfg.CAFile); err != nil {
			log.Fatalf("CA: %v", err)
		}
	}
	a := &agent{client: client, nodeName: *nodeName, stateDir: abs, binDir: *binDir, apiHost: cfg.Host, caData: caData}
	a.pods = newPodManager(a)

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if err := a.registerNode(ctx); err != nil {
		log.Fatalf("registering node: %v", err)
	}
	if err := ensureStorageClass(ctx, client); err != nil {
		log.Fatalf("storage class: %v", err)
	}
	go a.heartbeat(ctx)
	go runProvisioner(ctx, client, filepath.Join(abs, "pv"))
	a.pods.run(ctx)
	<-ctx.Done()
	log.Printf("stopping: terminating all pod processes")
	a.pods.stopAll(10 * time.Second)
}

func (a *agent) nodeStatus() corev1.NodeStatus {
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("2"),
		corev1.ResourceMemory:           resource.MustParse("24Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("50Gi"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    res,
		Allocatable: res,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "floe-kubelet (test stand-in) is posting ready status"),
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: a.nodeName},
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: kubeletVersion, OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "floe-process://1", OSImage: "local processes",
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 0}},
	}
}

func (a *agent) registerNode(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.nodeName, Labels: map[string]string{
			"kubernetes.io/hostname": a.nodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"floe.dev/test-agent": "true",
		}},
	}
	if _, err := nodes.Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// the node-lifecycle controller updates a new Node at once (taints, CIDR): write the status
	// on the latest version, retrying on conflicts
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur, err := nodes.Get(ctx, a.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = a.nodeStatus()
		_, err = nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	log.Printf("registered node %s", a.nodeName)
	return nil
}

// heartbeat keeps the Node Ready and its Lease fresh so the node-lifecycle controller never
// taints it.
func (a *agent) heartbeat(ctx context.Context) {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		now := metav1.NewMicroTime(time.Now())
		dur := int32(40)
		lease, err := leases.Get(ctx, a.nodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: a.nodeName},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &a.nodeName, LeaseDurationSeconds: &dur, RenewTime: &now},
			}, metav1.CreateOptions{})
		} else if err == nil {
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			log.Printf("lease: %v", err)
		}
		if n, err := a.client.CoreV1().Nodes().Get(ctx, a.nodeName, metav1.GetOptions{}); err == nil {
			n.Status = a.nodeStatus()
			if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
				log.Printf("node status: %v", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
