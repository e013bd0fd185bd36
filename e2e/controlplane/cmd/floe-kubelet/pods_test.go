package main

import "testing"

// The wildcard address becomes the pod's IP wherever it is a listen address's host; anything
// else is left alone.
func TestWildcardRewriter(t *testing.T) {
	rw := wildcardRewriter("127.0.0.7")
	for in, want := range map[string]string{
		"--grpc-addr=0.0.0.0:7070":         "--grpc-addr=127.0.0.7:7070",
		"0.0.0.0:8080":                     "127.0.0.7:8080",
		"--http-addr=[::]:7071":            "--http-addr=127.0.0.7:7071",
		"a=0.0.0.0:1,b=0.0.0.0:2":          "a=127.0.0.7:1,b=127.0.0.7:2",
		"--listen 0.0.0.0:9":               "--listen 127.0.0.7:9",
		"--grpc-addr=10.0.0.0:7070":        "--grpc-addr=10.0.0.0:7070",
		"--route=0.0.0.0/0":                "--route=0.0.0.0/0",
		"--data-dir=/var/lib/0.0.0.0:7070": "--data-dir=/var/lib/0.0.0.0:7070",
		"--grpc-addr=0.0.0.0":              "--grpc-addr=0.0.0.0",
	} {
		if got := rw(in); got != want {
			t.Errorf("%q → %q, want %q", in, got, want)
		}
	}
}
