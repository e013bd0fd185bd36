package main

import (
	"context"
	"fmt"
	"regexp"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// This agent's pods are processes on the host: there is no cluster DNS and no kube-proxy. In
// their place, a Service's DNS name (`<service>.<namespace>.svc`, optionally
// `.cluster.local`) in a container's arguments is rewritten, each time the container starts,
// to the address of one ready endpoint of that Service — where CoreDNS and kube-proxy would
// take a connection on a real node (tier 4, e2e/nodes, runs the real ones). A pod's own DNS
// name (`<pod>.<service>.<namespace>.svc`) is left alone.
var serviceName = regexp.MustCompile(`(^|[^.a-z0-9-])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.svc(?:\.cluster\.local)?([^.a-z0-9-]|$)`)

// resolveServices rewrites every Service name in args; an error while a named Service has no
// ready endpoint yet (the container waits, as one on a real node would fail to connect).
func (r *podRunner) resolveServices(ctx context.Context, args []string) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		var failed error
		out[i] = serviceName.ReplaceAllStringFunc(a, func(m string) string {
			g := serviceName.FindStringSubmatch(m)
			ip, err := r.endpointIP(ctx, g[3], g[2])
			if err != nil {
				failed = err
				return m
			}
			return g[1] + ip + g[4]
		})
		if failed != nil {
			return nil, failed
		}
	}
	return out, nil
}

// endpointIP is the pod IP of a Ready pod the Service ns/name selects: what the
// EndpointSlice controller would publish, computed here because it refuses loopback addresses
// (every pod IP of this agent). The Service's port must equal its target port (Floe's do).
func (r *podRunner) endpointIP(ctx context.Context, ns, name string) (string, error) {
	svc, err := r.m.a.client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("service %s/%s: %w", ns, name, err)
	}
	if len(svc.Spec.Selector) == 0 {
		return "", fmt.Errorf("service %s/%s has no selector", ns, name)
	}
	pods, err := r.m.a.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String(),
	})
	if err != nil {
		return "", fmt.Errorf("pods of service %s/%s: %w", ns, name, err)
	}
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return p.Status.PodIP, nil
			}
		}
	}
	return "", fmt.Errorf("service %s/%s has no ready endpoint yet", ns, name)
}
