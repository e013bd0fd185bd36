package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// StorageClassName is the default StorageClass the agent provisions: a directory per claim.
const StorageClassName = "floe-local"

func ensureStorageClass(ctx context.Context, c kubernetes.Interface) error {
	immediate := storagev1.VolumeBindingImmediate
	retain := corev1.PersistentVolumeReclaimRetain
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       "floe.dev/local-dir",
		VolumeBindingMode: &immediate,
		ReclaimPolicy:     &retain,
	}
	_, err := c.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// runProvisioner creates a directory-backed PersistentVolume, pre-bound through claimRef, for
// every pending claim of the floe-local class; the real PV controller then binds the pair.
// Directories outlive pods and claims (reclaim policy Retain).
func runProvisioner(ctx context.Context, c kubernetes.Interface, root string) {
	f := informers.NewSharedInformerFactory(c, 30*time.Second)
	inf := f.Core().V1().PersistentVolumeClaims().Informer()
	handle := func(obj interface{}) {
		pvc, ok := obj.(*corev1.PersistentVolumeClaim)
		if !ok || pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending {
			return
		}
		class := ""
		if pvc.Spec.StorageClassName != nil {
			class = *pvc.Spec.StorageClassName
		}
		if class != StorageClassName && class != "" {
			return
		}
		if err := provision(ctx, c, root, pvc); err != nil && ctx.Err() == nil {
			log.Printf("provisioning %s/%s: %v", pvc.Namespace, pvc.Name, err)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, n interface{}) { handle(n) },
	})
	f.Start(ctx.Done())
}

func provision(ctx context.Context, c kubernetes.Interface, root string, pvc *corev1.PersistentVolumeClaim) error {
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	hostType := corev1.HostPathDirectory
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "floe.dev/local-dir"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              StorageClassName,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostType}},
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
		},
	}
	_, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		log.Printf("provisioned %s for %s/%s at %s", name, pvc.Namespace, pvc.Name, dir)
	}
	return err
}

// volumeDirs materialises a pod's volumes as directories: name → directory.
func (a *agent) volumeDirs(ctx context.Context, pod *corev1.Pod, podDir string) (map[string]string, error) {
	dirs := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		d, err := a.volumeDir(ctx, pod, v, podDir)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		dirs[v.Name] = d
	}
	return dirs, nil
}

// volumeDir writes (or rewrites) one volume's files and returns its directory.
func (a *agent) volumeDir(ctx context.Context, pod *corev1.Pod, v corev1.Volume, podDir string) (string, error) {
	dir := filepath.Join(podDir, "volumes", v.Name)
	switch {
	case v.ConfigMap != nil:
		cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("configmap %s: %w", v.ConfigMap.Name, err)
		}
		data := map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		return writeFiles(dir, data, v.ConfigMap.Items)
	case v.Secret != nil:
		s, err := a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("secret %s: %w", v.Secret.SecretName, err)
		}
		return writeFiles(dir, s.Data, v.Secret.Items)
	case v.EmptyDir != nil:
		return dir, os.MkdirAll(dir, 0o755)
	case v.Projected != nil:
		return a.projected(ctx, pod, v.Projected, dir)
	case v.PersistentVolumeClaim != nil:
		return a.claimDir(ctx, pod.Namespace, v.PersistentVolumeClaim.ClaimName)
	}
	return "", fmt.Errorf("only configMap, secret, projected, emptyDir and persistentVolumeClaim volumes are supported")
}

// refreshVolumes keeps ConfigMap and Secret volumes up to date while the pod runs (the kubelet
// does so within about a minute; this agent within a few seconds), and renews projected
// service-account tokens every ten minutes.
func (a *agent) refreshVolumes(ctx context.Context, pod *corev1.Pod, podDir string, stop <-chan struct{}) {
	lastProjected := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-time.After(3 * time.Second):
		}
		renewTokens := time.Since(lastProjected) > 10*time.Minute
		if renewTokens {
			lastProjected = time.Now()
		}
		for _, v := range pod.Spec.Volumes {
			if v.ConfigMap == nil && v.Secret == nil && (v.Projected == nil || !renewTokens) {
				continue
			}
			if _, err := a.volumeDir(ctx, pod, v, podDir); err != nil && ctx.Err() == nil {
				log.Printf("pod %s/%s: refreshing volume %s: %v", pod.Namespace, pod.Name, v.Name, err)
			}
		}
	}
}

// writeFiles makes dir hold exactly data's files (or items' selection of them). Files are
// replaced atomically and only when their content changed, so a reader never sees half a file.
func writeFiles(dir string, data map[string][]byte, items []corev1.KeyToPath) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if len(items) > 0 {
		picked := map[string][]byte{}
		for _, it := range items {
			if b, ok := data[it.Key]; ok {
				picked[it.Path] = b
			}
		}
		data = picked
	}
	keep := map[string]bool{}
	for k, b := range data {
		p := filepath.Join(dir, k)
		keep[strings.SplitN(k, "/", 2)[0]] = true
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, p); err != nil {
			return "", err
		}
	}
	// keys removed from the source disappear, as with the kubelet
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !keep[e.Name()] {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return dir, nil
}

// projected writes a projected volume (what the ServiceAccount admission plugin adds to every
// pod): service-account tokens through the TokenRequest API, config maps, secrets, downward API.
func (a *agent) projected(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource, dir string) (string, error) {
	data := map[string][]byte{}
	for _, src := range p.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			exp := int64(3600)
			if src.ServiceAccountToken.ExpirationSeconds != nil {
				exp = *src.ServiceAccountToken.ExpirationSeconds
			}
			var aud []string
			if src.ServiceAccountToken.Audience != "" {
				aud = []string{src.ServiceAccountToken.Audience}
			}
			tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
				Audiences: aud, ExpirationSeconds: &exp,
				BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
			}}
			sa := pod.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			tok, err := a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
			if err != nil {
				return "", fmt.Errorf("service account token: %w", err)
			}
			data[src.ServiceAccountToken.Path] = []byte(tok.Status.Token)
		case src.ConfigMap != nil:
			cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			for _, it := range src.ConfigMap.Items {
				data[it.Path] = []byte(cm.Data[it.Key])
			}
			if len(src.ConfigMap.Items) == 0 {
				for k, v := range cm.Data {
					data[k] = []byte(v)
				}
			}
		case src.Secret != nil:
			s, err := a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, src.Secret.Name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			for _, it := range src.Secret.Items {
				data[it.Path] = s.Data[it.Key]
			}
			if len(src.Secret.Items) == 0 {
				for k, v := range s.Data {
					data[k] = v
				}
			}
		case src.DownwardAPI != nil:
			for _, it := range src.DownwardAPI.Items {
				if it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.namespace" {
					data[it.Path] = []byte(pod.Namespace)
				} else if it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.name" {
					data[it.Path] = []byte(pod.Name)
				}
			}
		}
	}
	return writeFiles(dir, data, nil)
}

// claimDir is the host directory of the PV bound to a claim (waits for the binding).
func (a *agent) claimDir(ctx context.Context, ns, claim string) (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		pvc, err := a.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		if err == nil && pvc.Spec.VolumeName != "" && pvc.Status.Phase == corev1.ClaimBound {
			pv, err := a.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			if pv.Spec.HostPath == nil {
				return "", fmt.Errorf("PV %s is not a directory volume", pv.Name)
			}
			return pv.Spec.HostPath.Path, os.MkdirAll(pv.Spec.HostPath.Path, 0o755)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("claim %s/%s not bound after 60s", ns, claim)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// podKubeconfig writes, for a pod with a service-account token volume, a kubeconfig that
// authenticates as the pod's ServiceAccount (the token file the agent keeps fresh) against the
// API server, and returns its path and the volume's name ("" when the pod has no token
// volume). The agent sets KUBECONFIG to it in containers that mount the token volume, because a
// process cannot read the in-cluster paths (/var/run/secrets/kubernetes.io/serviceaccount) a
// container would: client-go and kube-rs (Client::try_default) both prefer KUBECONFIG.
func (a *agent) podKubeconfig(pod *corev1.Pod, podDir string) (path, volume string, err error) {
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken == nil {
				continue
			}
			ca := filepath.Join(podDir, "kube-ca.crt")
			if err := os.WriteFile(ca, a.caData, 0o644); err != nil {
				return "", "", err
			}
			token := filepath.Join(podDir, "volumes", v.Name, src.ServiceAccountToken.Path)
			kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: floe-e2e
  cluster: {server: %q, certificate-authority: %q}
users:
- name: service-account
  user: {tokenFile: %q}
contexts:
- name: floe-e2e
  context: {cluster: floe-e2e, user: service-account, namespace: %q}
current-context: floe-e2e
`, a.apiHost, ca, token, pod.Namespace)
			path := filepath.Join(podDir, "kubeconfig")
			return path, v.Name, os.WriteFile(path, []byte(kc), 0o600)
		}
	}
	return "", "", nil
}
