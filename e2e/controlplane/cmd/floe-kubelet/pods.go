package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

type podManager struct {
	a       *agent
	mu      sync.Mutex
	runners map[types.UID]*podRunner
	ips     map[string]*os.File // address → its held lock (podip.go)
	ctx     context.Context
}

func newPodManager(a *agent) *podManager {
	return &podManager{a: a, runners: map[types.UID]*podRunner{}, ips: map[string]*os.File{}}
}

func (m *podManager) run(ctx context.Context) {
	m.ctx = ctx
	f := informers.NewSharedInformerFactoryWithOptions(m.a.client, 30*time.Second,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", m.a.nodeName).String()
		}))
	inf := f.Core().V1().Pods().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o interface{}) { m.sync(o) },
		UpdateFunc: func(_, o interface{}) { m.sync(o) },
	})
	f.Start(ctx.Done())
}

func (m *podManager) allocIP() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 2; i < 255; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		if m.ips[ip] != nil {
			continue
		}
		if f := claimIP(ip); f != nil {
			m.ips[ip] = f
			return ip, nil
		}
	}
	return "", fmt.Errorf("no free loopback address for a pod")
}

func (m *podManager) releaseIP(ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.ips[ip]; f != nil {
		f.Close() // releases the flock
	}
	delete(m.ips, ip)
}

func (m *podManager) sync(obj interface{}) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	m.mu.Lock()
	r := m.runners[pod.UID]
	if r == nil && pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
		r = &podRunner{m: m, pod: pod.DeepCopy(), deleting: make(chan struct{}), changed: make(chan struct{}, 1)}
		m.runners[pod.UID] = r
		m.mu.Unlock()
		go r.run(m.ctx)
		return
	}
	m.mu.Unlock()
	switch {
	case r != nil && pod.DeletionTimestamp != nil:
		r.markDeleting(pod)
	case r == nil && pod.DeletionTimestamp != nil:
		// nothing runs for it (never started, or already stopped): finish the deletion
		m.forceDelete(pod)
	}
}

func (m *podManager) forceDelete(pod *corev1.Pod) {
	zero := int64(0)
	uid := pod.UID
	err := m.a.client.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name,
		metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Printf("deleting %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (m *podManager) stopAll(grace time.Duration) {
	m.mu.Lock()
	runners := make([]*podRunner, 0, len(m.runners))
	for _, r := range m.runners {
		runners = append(runners, r)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func(r *podRunner) { defer wg.Done(); r.killAll(grace) }(r)
	}
	wg.Wait()
}

// podRunner runs one pod's containers as processes.
type podRunner struct {
	m          *podManager
	mu         sync.Mutex
	pod        *corev1.Pod
	ip         string
	dir        string
	containers []*containerRun
	deleting   chan struct{}
	delOnce    sync.Once
	changed    chan struct{}
	failReason string
	failMsg    string
	startTime  metav1.Time
	// the pod's service-account kubeconfig and the token volume it belongs to (podKubeconfig)
	kubeconfig, tokenVolume string
}

type containerRun struct {
	spec      corev1.Container
	binary    string
	mu        sync.Mutex
	cmd       *exec.Cmd
	running   bool
	started   bool
	ready     bool
	restarts  int32
	startedAt metav1.Time
	lastTerm  *corev1.ContainerStateTerminated
	done      bool // exited and will not be restarted
	// why it is not running yet (ContainerCreating, CreateContainerConfigError), as the kubelet
	// reports it while it retries
	waitReason, waitMsg string
}

func (r *podRunner) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *podRunner) markDeleting(pod *corev1.Pod) {
	r.mu.Lock()
	r.pod = pod.DeepCopy()
	r.mu.Unlock()
	r.delOnce.Do(func() { close(r.deleting) })
}

func (r *podRunner) isDeleting() bool {
	select {
	case <-r.deleting:
		return true
	default:
		return false
	}
}

// floeBinary maps a container to a binary: the image repository's last path segment (a Floe
// image's starts with "floe"), or the basename of command[0] when a command is given.
func floeBinary(binDir string, c corev1.Container) (string, error) {
	repo := c.Image
	if i := strings.LastIndex(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	seg := path.Base(repo)
	if i := strings.Index(seg, ":"); i >= 0 {
		seg = seg[:i]
	}
	if !strings.HasPrefix(seg, "floe") {
		return "", fmt.Errorf("image %q is not a Floe image (its name must start with \"floe\"); this test agent runs only Floe binaries", c.Image)
	}
	name := seg
	if len(c.Command) > 0 {
		name = filepath.Base(c.Command[0])
	}
	bin := filepath.Join(binDir, name)
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("binary for image %q: %w", c.Image, err)
	}
	return bin, nil
}

func (r *podRunner) run(ctx context.Context) {
	pod := r.pod
	r.dir = filepath.Join(r.m.a.stateDir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)[:8])
	r.startTime = metav1.Now()
	go r.statusLoop(ctx)
	r.start(ctx)
	// whatever became of the pod (running, failed, still waiting for a volume), it is finished
	// only by its deletion
	select {
	case <-r.deleting:
	case <-ctx.Done():
		return
	}
	grace := 30 * time.Second
	if p := r.currentPod(); p.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
	}
	r.killAll(grace)
	r.mu.Lock()
	ip := r.ip
	r.mu.Unlock()
	if ip != "" {
		r.m.releaseIP(ip)
	}
	r.m.mu.Lock()
	delete(r.m.runners, pod.UID)
	r.m.mu.Unlock()
	r.m.forceDelete(pod)
	log.Printf("pod %s/%s stopped and deleted", pod.Namespace, pod.Name)
}

// start prepares the pod and starts its containers. A pod the agent can never run (a non-Floe
// image, no free address) is marked Failed; volumes whose sources are missing or unbound are
// retried with the pod Pending, as the kubelet does.
func (r *podRunner) start(ctx context.Context) {
	pod := r.pod
	var containers []*containerRun
	for _, c := range pod.Spec.Containers {
		bin, err := floeBinary(r.m.a.binDir, c)
		if err != nil {
			r.fail("UnsupportedImage", err.Error())
			return
		}
		containers = append(containers, &containerRun{spec: c, binary: bin})
	}
	r.mu.Lock()
	r.containers = containers
	r.mu.Unlock()
	ip, err := r.m.allocIP()
	if err != nil {
		r.fail("NoAddress", err.Error())
		return
	}
	r.mu.Lock()
	r.ip = ip
	r.mu.Unlock()
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		r.fail("StateDir", err.Error())
		return
	}
	var vols map[string]string
	for backoff := time.Second; ; backoff = min(2*backoff, 10*time.Second) {
		vols, err = r.m.a.volumeDirs(ctx, pod, r.dir)
		if err == nil {
			break
		}
		r.waiting("ContainerCreating", "volumes: "+err.Error())
		select {
		case <-time.After(backoff):
		case <-r.deleting:
			return
		case <-ctx.Done():
			return
		}
	}
	kc, tokenVol, err := r.m.a.podKubeconfig(pod, r.dir)
	if err != nil {
		r.fail("KubeconfigError", err.Error())
		return
	}
	r.mu.Lock()
	r.kubeconfig, r.tokenVolume = kc, tokenVol
	r.mu.Unlock()
	r.notify()
	go r.m.a.refreshVolumes(ctx, pod, r.dir, r.deleting)
	for _, c := range containers {
		go r.supervise(ctx, c, vols)
		go r.probeLoop(ctx, c, c.spec.ReadinessProbe, true)
		go r.probeLoop(ctx, c, c.spec.LivenessProbe, false)
	}
}

// waiting records why the pod's containers have not started yet.
func (r *podRunner) waiting(reason, msg string) {
	for _, c := range r.containerList() {
		c.mu.Lock()
		changed := c.waitMsg != msg
		c.waitReason, c.waitMsg = reason, msg
		c.mu.Unlock()
		if changed {
			log.Printf("pod %s/%s: %s: %s: %s", r.pod.Namespace, r.pod.Name, c.spec.Name, reason, msg)
		}
	}
	r.notify()
}

func (r *podRunner) containerList() []*containerRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.containers
}

func (r *podRunner) currentPod() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pod
}

func (r *podRunner) fail(reason, msg string) {
	log.Printf("pod %s/%s: %s: %s", r.pod.Namespace, r.pod.Name, reason, msg)
	r.mu.Lock()
	r.failReason, r.failMsg = reason, msg
	r.mu.Unlock()
	r.notify()
}

// env builds a container's environment like the kubelet (values, downward API, config maps
// and secrets), with mount paths rewritten to real directories.
func (r *podRunner) env(ctx context.Context, c corev1.Container, rewrite func(string) string) ([]string, map[string]string, error) {
	pod := r.currentPod()
	vars := map[string]string{"HOSTNAME": pod.Name}
	order := []string{"HOSTNAME"}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	r.mu.Lock()
	kubeconfig, tokenVolume := r.kubeconfig, r.tokenVolume
	r.mu.Unlock()
	for _, vm := range c.VolumeMounts {
		if kubeconfig != "" && vm.Name == tokenVolume {
			set("KUBECONFIG", kubeconfig) // the container's own env may override it
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			cm, err := r.m.a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, err
			}
			for k, v := range cm.Data {
				set(ef.Prefix+k, v)
			}
		}
		if ef.SecretRef != nil {
			s, err := r.m.a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ef.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, err
			}
			for k, v := range s.Data {
				set(ef.Prefix+k, string(v))
			}
		}
	}
	for _, e := range c.Env {
		val := e.Value
		if e.Value != "" {
			val = expansion.Expand(e.Value, expansion.MappingFuncFor(vars))
		}
		if vf := e.ValueFrom; vf != nil {
			switch {
			case vf.FieldRef != nil:
				switch vf.FieldRef.FieldPath {
				case "metadata.name":
					val = pod.Name
				case "metadata.namespace":
					val = pod.Namespace
				case "metadata.uid":
					val = string(pod.UID)
				case "status.podIP":
					val = r.ip
				case "status.hostIP":
					val = "127.0.0.1"
				case "spec.nodeName":
					val = r.m.a.nodeName
				case "spec.serviceAccountName":
					val = pod.Spec.ServiceAccountName
				default:
					return nil, nil, fmt.Errorf("env %s: fieldRef %s is not supported", e.Name, vf.FieldRef.FieldPath)
				}
			case vf.ConfigMapKeyRef != nil:
				cm, err := r.m.a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, vf.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, nil, err
				}
				val = cm.Data[vf.ConfigMapKeyRef.Key]
			case vf.SecretKeyRef != nil:
				s, err := r.m.a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, vf.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, nil, err
				}
				val = string(s.Data[vf.SecretKeyRef.Key])
			default:
				return nil, nil, fmt.Errorf("env %s: unsupported valueFrom", e.Name)
			}
		}
		set(e.Name, rewrite(val))
	}
	out := make([]string, 0, len(order)+1)
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	out = append(out, "PATH="+os.Getenv("PATH"))
	return out, vars, nil
}

// mountRewriter replaces each volumeMount's mountPath, where it appears as a path prefix in an
// argument or env value, with the directory that stands in for the volume.
func mountRewriter(c corev1.Container, vols map[string]string) func(string) string {
	type m struct {
		re  *regexp.Regexp
		dir string
	}
	var ms []m
	mounts := append([]corev1.VolumeMount(nil), c.VolumeMounts...)
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].MountPath) > len(mounts[j].MountPath) })
	for _, vm := range mounts {
		dir, ok := vols[vm.Name]
		if !ok {
			continue
		}
		if vm.SubPath != "" {
			dir = filepath.Join(dir, vm.SubPath)
			_ = os.MkdirAll(dir, 0o755)
		}
		mp := strings.TrimRight(vm.MountPath, "/")
		ms = append(ms, m{regexp.MustCompile(`(^|[=:,\s])` + regexp.QuoteMeta(mp) + `(/|$|[\s:,])`), dir})
	}
	return func(s string) string {
		for _, x := range ms {
			s = x.re.ReplaceAllString(s, "${1}"+x.dir+"${2}")
		}
		return s
	}
}

// wildcardAddr is 0.0.0.0 or [::] as the host of a listen address (`0.0.0.0:7070`,
// `--http-addr=[::]:8080`), at the start of a value or after '=', ',' or a space.
var wildcardAddr = regexp.MustCompile(`(^|[=,\s])(0\.0\.0\.0|\[::\]):([0-9]+)`)

// wildcardRewriter maps the wildcard address onto the pod's IP: in a pod's own network
// namespace 0.0.0.0 is that pod's addresses only, but here every pod is a process on one host,
// so 0.0.0.0:7070 would take the port on every address and collide with the next pod.
func wildcardRewriter(podIP string) func(string) string {
	return func(s string) string {
		return wildcardAddr.ReplaceAllString(s, "${1}"+podIP+":${3}")
	}
}

// supervise starts the container's process and restarts it per the pod's restart policy.
func (r *podRunner) supervise(ctx context.Context, c *containerRun, vols map[string]string) {
	backoff := time.Second
	mounts, wildcard := mountRewriter(c.spec, vols), wildcardRewriter(r.ip)
	rewrite := func(s string) string { return wildcard(mounts(s)) }
	logPath := filepath.Join(r.dir, c.spec.Name+".log")
	for {
		if r.isDeleting() || ctx.Err() != nil {
			return
		}
		env, vars, err := r.env(ctx, c.spec, rewrite)
		var args []string
		if err == nil {
			mapping := expansion.MappingFuncFor(vars)
			if len(c.spec.Command) > 1 {
				args = append(args, c.spec.Command[1:]...)
			}
			args = append(args, c.spec.Args...)
			for i := range args {
				args[i] = rewrite(expansion.Expand(args[i], mapping))
			}
			args, err = r.resolveServices(ctx, args)
		}
		if err != nil {
			// e.g. a ConfigMap or Secret that does not exist yet, or a Service named in the
			// arguments without a ready endpoint: retried, like the kubelet
			c.mu.Lock()
			c.waitReason, c.waitMsg = "CreateContainerConfigError", err.Error()
			c.mu.Unlock()
			r.notify()
			select {
			case <-time.After(2 * time.Second):
				continue
			case <-r.deleting:
				return
			case <-ctx.Done():
				return
			}
		}
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			r.fail("LogFile", err.Error())
			return
		}
		cmd := exec.Command(c.binary, args...)
		cmd.Env = env
		cmd.Dir = r.dir
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			r.fail("StartError", err.Error())
			return
		}
		c.mu.Lock()
		c.cmd, c.running, c.started, c.ready, c.startedAt = cmd, true, true, c.spec.ReadinessProbe == nil, metav1.Now()
		c.waitReason, c.waitMsg = "", ""
		c.mu.Unlock()
		if r.isDeleting() || ctx.Err() != nil {
			// the pod was deleted while this process started: killAll may have missed it
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		}
		log.Printf("pod %s/%s: started %s (pid %d): %s %s", r.pod.Namespace, r.pod.Name, c.spec.Name, cmd.Process.Pid, c.binary, strings.Join(args, " "))
		r.notify()
		err = cmd.Wait()
		logf.Close()
		code := int32(0)
		if ee, ok := err.(*exec.ExitError); ok {
			code = int32(ee.ExitCode())
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int32(ws.Signal())
			}
		}
		c.mu.Lock()
		c.running, c.ready = false, false
		c.lastTerm = &corev1.ContainerStateTerminated{ExitCode: code, StartedAt: c.startedAt, FinishedAt: metav1.Now(), Reason: reasonFor(code)}
		c.mu.Unlock()
		if r.isDeleting() || ctx.Err() != nil {
			r.notify()
			return
		}
		policy := r.pod.Spec.RestartPolicy
		if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && code == 0) {
			c.mu.Lock()
			c.done = true
			c.mu.Unlock()
			r.notify()
			return
		}
		c.mu.Lock()
		c.restarts++
		ranFor := time.Since(c.startedAt.Time)
		c.mu.Unlock()
		if ranFor > 10*time.Minute {
			backoff = time.Second // the kubelet forgets the backoff after 10 minutes of running
		}
		log.Printf("pod %s/%s: %s exited with %d; restarting in %v", r.pod.Namespace, r.pod.Name, c.spec.Name, code, backoff)
		r.notify()
		select {
		case <-time.After(backoff):
		case <-r.deleting:
			return
		}
		if backoff < 30*time.Second {
			backoff *= 2
		}
	}
}

func reasonFor(code int32) string {
	if code == 0 {
		return "Completed"
	}
	return "Error"
}

// killAll stops every process of the pod: SIGTERM to each container's process group, SIGKILL
// to the groups after the grace period (also reaching children whose leader already exited).
func (r *podRunner) killAll(grace time.Duration) {
	signal := func(sig syscall.Signal, onlyRunning bool) {
		for _, c := range r.containerList() {
			c.mu.Lock()
			if c.cmd != nil && c.cmd.Process != nil && (c.running || !onlyRunning) {
				_ = syscall.Kill(-c.cmd.Process.Pid, sig)
			}
			c.mu.Unlock()
		}
	}
	anyRunning := func() bool {
		for _, c := range r.containerList() {
			c.mu.Lock()
			running := c.running
			c.mu.Unlock()
			if running {
				return true
			}
		}
		return false
	}
	signal(syscall.SIGTERM, true)
	for deadline := time.Now().Add(grace); anyRunning() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	signal(syscall.SIGKILL, false)
	// the address is released after this returns: wait until the processes are reaped
	for deadline := time.Now().Add(5 * time.Second); anyRunning() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}
