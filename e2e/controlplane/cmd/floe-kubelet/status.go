package main

import (
	"context"
	"fmt"
	"log"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// statusLoop writes the pod's status whenever something changed (coalesced), and every 10s.
func (r *podRunner) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.changed:
		case <-time.After(10 * time.Second):
		}
		if r.isDeleting() {
			// the deletion path finishes the pod; keep reporting only that containers stop
			continue
		}
		if err := r.pushStatus(ctx); err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
			log.Printf("pod %s/%s status: %v", r.pod.Namespace, r.pod.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *podRunner) pushStatus(ctx context.Context) error {
	pods := r.m.a.client.CoreV1().Pods(r.pod.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := pods.Get(ctx, r.pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != r.pod.UID {
			return nil
		}
		cur.Status = r.computeStatus(cur.Status)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return nil
}

func condition(t corev1.PodConditionType, ok bool, old []corev1.PodCondition) corev1.PodCondition {
	s := corev1.ConditionFalse
	if ok {
		s = corev1.ConditionTrue
	}
	c := corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
	for _, o := range old {
		if o.Type == t && o.Status == s {
			c.LastTransitionTime = o.LastTransitionTime // stable while the status holds
		}
	}
	return c
}

func (r *podRunner) computeStatus(old corev1.PodStatus) corev1.PodStatus {
	r.mu.Lock()
	ip, failReason, failMsg := r.ip, r.failReason, r.failMsg
	r.mu.Unlock()
	st := corev1.PodStatus{HostIP: "127.0.0.1", HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}}, StartTime: &r.startTime, QOSClass: old.QOSClass}
	if ip != "" {
		st.PodIP = ip
		st.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	if failReason != "" {
		st.Phase = corev1.PodFailed
		st.Reason, st.Message = failReason, failMsg
		st.Conditions = []corev1.PodCondition{condition(corev1.PodScheduled, true, old.Conditions), condition(corev1.PodReady, false, old.Conditions)}
		return st
	}
	containers := r.containerList()
	allReady, anyRunning, allDone, anyFailed := len(containers) > 0, false, len(containers) > 0, false
	for _, c := range containers {
		c.mu.Lock()
		cs := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: "floe-process://" + c.binary,
			Ready: c.ready, RestartCount: c.restarts, Started: &c.started,
		}
		if c.cmd != nil && c.cmd.Process != nil {
			cs.ContainerID = "floe-process://" + itoa(c.cmd.Process.Pid)
		}
		switch {
		case c.running:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: c.startedAt}
			anyRunning = true
		case c.lastTerm != nil && c.done:
			cs.State.Terminated = c.lastTerm
			if c.lastTerm.ExitCode != 0 {
				anyFailed = true
			}
		case c.lastTerm != nil:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
		case c.waitReason != "":
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waitReason, Message: c.waitMsg}
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		if c.lastTerm != nil && !c.done {
			cs.LastTerminationState.Terminated = c.lastTerm
		}
		allReady = allReady && c.ready
		allDone = allDone && c.done
		c.mu.Unlock()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	switch {
	case allDone && anyFailed:
		st.Phase = corev1.PodFailed
	case allDone:
		st.Phase = corev1.PodSucceeded
	case anyRunning || len(st.ContainerStatuses) > 0 && ip != "":
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	if !anyRunning && !allDone {
		st.Phase = corev1.PodPending
		for _, cs := range st.ContainerStatuses {
			if cs.RestartCount > 0 {
				st.Phase = corev1.PodRunning
			}
		}
	}
	st.Conditions = []corev1.PodCondition{
		condition(corev1.PodScheduled, true, old.Conditions),
		condition(corev1.PodInitialized, true, old.Conditions),
		condition(corev1.ContainersReady, allReady && anyRunning, old.Conditions),
		condition(corev1.PodReady, allReady && anyRunning, old.Conditions),
	}
	return st
}

func itoa(i int) string {
	return fmt.Sprint(i)
}
