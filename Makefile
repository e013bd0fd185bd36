# Floe: the two commands of the README.
#   make demo   the main job (today: the codec demo; the local testnet replaces it)
#   make test   the whole test suite (what .ci/run calls)
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test test-rust test-k8s bench fmt

demo:
	$(CARGO) bench -p floe-node --bench codec -- --quick

test: test-rust test-k8s

test-rust:
	$(CARGO) test --workspace --locked

# Tier 3: a real kube-apiserver/etcd/controller-manager/scheduler plus the test node agent.
test-k8s: test-rust
	e2e/run-k8s-tests.sh

bench:
	$(CARGO) bench -p floe-node --bench codec
