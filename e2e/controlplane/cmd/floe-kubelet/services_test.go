package main

import "testing"

func TestServiceNamePattern(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string // service, namespace; nil when no Service name is found
	}{
		{"--nodes=https://testnet-client.floe.svc:7070", []string{"testnet-client", "floe"}},
		{"http://api.ns.svc.cluster.local:80/x", []string{"api", "ns"}},
		{"testnet-gateway.default.svc", []string{"testnet-gateway", "default"}},
		// a pod's own name under a headless Service is not a Service name
		{"--public=testnet-0.testnet.floe.svc:7070", nil},
		{"https://testnet-0.testnet.floe.svc.cluster.local:7070", nil},
		{"example.svc.com", nil},
		{"--listen=127.0.0.5:31415", nil},
	} {
		g := serviceName.FindStringSubmatch(c.in)
		switch {
		case c.want == nil && g != nil:
			t.Errorf("%q: matched %q", c.in, g[0])
		case c.want != nil && (g == nil || g[2] != c.want[0] || g[3] != c.want[1]):
			t.Errorf("%q: got %q, want %v", c.in, g, c.want)
		}
	}
}
