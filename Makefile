# Floe: the two commands of the README.
#   make demo   the main job: a local testnet, a put and a get
#   make test   the whole test suite (what .ci/run calls)
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test test-rust test-k8s bench

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
FLOE := $(TARGET_DIR)/release/floe
DEMO_DIR := .floe-testnet

# Build, start a 7-node 100-shard testnet, put a 32 MiB random file, get it back, compare; add a
# node, change the epoch, get it again.
demo:
	$(CARGO) build --release -p floe-node -p floe-operator
	$(FLOE) --testnet-dir $(DEMO_DIR) testnet down >/dev/null 2>&1 || true
	$(FLOE) --testnet-dir $(DEMO_DIR) testnet up
	head -c 33554432 /dev/urandom > $(DEMO_DIR)/demo.bin
	$(FLOE) --testnet-dir $(DEMO_DIR) put $(DEMO_DIR)/demo.bin | tee $(DEMO_DIR)/put.txt
	$(FLOE) --testnet-dir $(DEMO_DIR) get $$(awk '/blob ID/ {print $$3}' $(DEMO_DIR)/put.txt) -o $(DEMO_DIR)/demo.out
	cmp $(DEMO_DIR)/demo.bin $(DEMO_DIR)/demo.out && echo "demo: the blob came back identical"
	$(FLOE) --testnet-dir $(DEMO_DIR) testnet add-node
	$(FLOE) --testnet-dir $(DEMO_DIR) testnet next-epoch
	$(FLOE) --testnet-dir $(DEMO_DIR) get $$(awk '/blob ID/ {print $$3}' $(DEMO_DIR)/put.txt) -o $(DEMO_DIR)/demo.out2
	cmp $(DEMO_DIR)/demo.bin $(DEMO_DIR)/demo.out2 && echo "demo: identical again after a node joined and the epoch changed"
	$(FLOE) --testnet-dir $(DEMO_DIR) testnet status
	@echo "demo: the testnet keeps running; stop it with: $(FLOE) --testnet-dir $(DEMO_DIR) testnet down"

test: test-rust test-k8s

test-rust:
	$(CARGO) test --workspace --locked

# Tier 3: a real kube-apiserver/etcd/controller-manager/scheduler plus the test node agent.
test-k8s: test-rust
	e2e/run-k8s-tests.sh

bench:
	$(CARGO) bench -p floe-node --bench codec
