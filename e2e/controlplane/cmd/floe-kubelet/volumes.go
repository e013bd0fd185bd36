package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
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
		switch {
		case v.ConfigMap != nil:
			cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("configmap %s: %w", v.ConfigMap.Name, err)
			}
			data := map[string][]byte{}
			for k, s := range cm.Data {
				data[k] = []byte(s)
			}
			for k, b := range cm.BinaryData {
				data[k] = b
			}
			d, err := writeFiles(filepath.Join(podDir, "volumes", v.Name), data, v.ConfigMap.Items)
			if err != nil {
				return nil, err
			}
			dirs[v.Name] = d
		case v.Secret != nil:
			s, err := a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("secret %s: %w", v.Secret.SecretName, err)
			}
			d, err := writeFiles(filepath.Join(podDir, "volumes", v.Name), s.Data, v.Secret.Items)
			if err != nil {
				return nil, err
			}
			dirs[v.Name] = d
		case v.EmptyDir != nil:
			d := filepath.Join(podDir, "volumes", v.Name)
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
			dirs[v.Name] = d
		case v.Projected != nil:
			d, err := a.projected(ctx, pod, v.Projected, filepath.Join(podDir, "volumes", v.Name))
			if err != nil {
				return nil, err
			}
			dirs[v.Name] = d
		case v.PersistentVolumeClaim != nil:
			d, err := a.claimDir(ctx, pod.Namespace, v.PersistentVolumeClaim.ClaimName)
			if err != nil {
				return nil, err
			}
			dirs[v.Name] = d
		default:
			return nil, fmt.Errorf("volume %s: only configMap, secret, emptyDir and persistentVolumeClaim are supported", v.Name)
		}
	}
	return dirs, nil
}

func writeFiles(dir string, data map[string][]byte, items []corev1.KeyToPath) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if len(items) > 0 {
		picked := map[string][]byte{}
		for _, it := range items {
			picked[it.Path] = data[it.Key]
		}
		data = picked
	}
	for k, b := range data {
		p := filepath.Join(dir, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return "", err
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
