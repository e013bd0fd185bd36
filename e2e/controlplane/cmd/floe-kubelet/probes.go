package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func portOf(c corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no port named %q", p.StrVal)
}

// probe runs one check of a probe against the pod's address.
func probe(ctx context.Context, ip string, c corev1.Container, p *corev1.Probe) error {
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		port, err := portOf(c, p.HTTPGet.Port)
		if err != nil {
			return err
		}
		host := p.HTTPGet.Host
		if host == "" {
			host = ip
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), p.HTTPGet.Path), nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := portOf(c, p.TCPSocket.Port)
		if err != nil {
			return err
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(ip, strconv.Itoa(int(p.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		service := ""
		if p.GRPC.Service != nil {
			service = *p.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("gRPC health %v", resp.Status)
		}
		return nil
	case p.Exec != nil && len(p.Exec.Command) > 0:
		return exec.CommandContext(ctx, p.Exec.Command[0], p.Exec.Command[1:]...).Run()
	}
	return fmt.Errorf("unsupported probe")
}

// probeLoop runs a readiness (ready=true) or liveness probe for one container.
func (r *podRunner) probeLoop(ctx context.Context, c *containerRun, p *corev1.Probe, readiness bool) {
	if p == nil {
		return
	}
	period := time.Duration(p.PeriodSeconds) * time.Second
	if period <= 0 {
		period = 10 * time.Second
	}
	fails, oks := 0, 0
	failureThreshold, successThreshold := int(p.FailureThreshold), int(p.SuccessThreshold)
	if failureThreshold <= 0 {
		failureThreshold = 3
	}
	if successThreshold <= 0 {
		successThreshold = 1
	}
	var lastStart time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.deleting:
			return
		case <-time.After(period / 4):
		}
		c.mu.Lock()
		running, startedAt := c.running, c.startedAt.Time
		c.mu.Unlock()
		if !running {
			fails, oks = 0, 0
			continue
		}
		if startedAt != lastStart {
			lastStart = startedAt
			fails, oks = 0, 0
			if d := time.Duration(p.InitialDelaySeconds) * time.Second; d > 0 {
				time.Sleep(d)
			}
		}
		r.mu.Lock()
		ip := r.ip
		r.mu.Unlock()
		err := probe(ctx, ip, c.spec, p)
		if err == nil {
			oks, fails = oks+1, 0
		} else {
			fails, oks = fails+1, 0
		}
		if readiness {
			c.mu.Lock()
			was := c.ready
			if oks >= successThreshold {
				c.ready = true
			} else if fails >= failureThreshold {
				c.ready = false
			}
			changed := was != c.ready
			c.mu.Unlock()
			if changed {
				r.notify()
			}
		} else if fails >= failureThreshold {
			c.mu.Lock()
			cmd := c.cmd
			c.mu.Unlock()
			if cmd != nil && cmd.Process != nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the whole process group
			}
			fails = 0
		}
		time.Sleep(period - period/4)
	}
}
