# Floe: the two commands of the README.
#   make demo   the main job: a local testnet, a put and a get
#   make test   the whole test suite (what .ci/run calls)
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test test-rust test-k8s test-chart test-images test-nodes bench images soak

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

test: test-rust test-chart test-k8s test-images

# The chart's dashboard against Grafana's dashboard schema; shellcheck over every shell script.
test-chart:
	cd e2e/dashboard && GOFLAGS=-mod=mod go test -count=1 ./...
	e2e/bin/shellcheck-all.sh

test-rust:
	$(CARGO) test --workspace --locked

# Tier 3: a real kube-apiserver/etcd/controller-manager/scheduler plus the test node agent.
test-k8s: test-rust
	e2e/run-k8s-tests.sh

# Tier 4: real kubelets, containerd, CNI, kube-proxy, CoreDNS, NetworkPolicy, volumes and a
# registry on this machine (root; e2e/bin/nodes-up.sh); the images built through the Dockerfile's
# builder stage; the kind scenario and e2e/controlplane/nodes against them. Not part of `make
# test`: warm it adds 10-20 minutes, cold over an hour (e2e/README.md, "Why not in make test").
test-nodes:
	e2e/run-node-tests.sh

bench:
	$(CARGO) bench -p floe-node --bench codec

# The churn soak (not in CI): a 7-node testnet under kills, wipes, joins, drains, stake changes,
# forced epochs and supervisor crashes for SOAK_SECS, then it must heal (operator/tests/soak.rs).
SOAK_SECS ?= 300
soak:
	FLOE_SOAK_SECS=$(SOAK_SECS) $(CARGO) test -p floe-operator --test soak -- --ignored --nocapture

# Container images (images/Dockerfile): floe-node and floe-operator, tagged $(IMAGE_TAG). The
# binaries are compiled in a Rust builder stage; BASE is the runtime base (a public distroless
# image by default). DOCKER=podman works too. e2e/images/test-images.sh builds them without a
# registry (local base, prebuilt binaries) and runs the node image read-only and non-root.
DOCKER ?= docker
IMAGE_REPO ?= ghcr.io/floe-dev
VERSION ?= $(shell awk -F'"' '/^version = / {print $$2; exit}' Cargo.toml)
IMAGE_TAG ?= $(VERSION)
IMAGE_BUILD_ARGS ?=
# where the binaries come from: build (the Rust builder stage) or prebuilt (images/prebuilt/).
# Passed explicitly: podman 4.3 (Debian 12) does not resolve `FROM ${BINARIES}` to a stage from
# the ARG's default alone ("short-name build did not resolve").
BINARIES ?= build
images:
	for t in floe-node floe-operator; do \
	  $(DOCKER) build -f images/Dockerfile --target $$t --build-arg VERSION=$(VERSION) \
	    --build-arg BINARIES=$(BINARIES) --build-arg REVISION=$$(git rev-parse --short HEAD) $(IMAGE_BUILD_ARGS) \
	    -t $(IMAGE_REPO)/$$t:$(IMAGE_TAG) . || exit 1; \
	done

# Builds both images with podman on a locally made base and runs the node image read-only and
# non-root (needs root for podman; installs podman and runc from Debian's packages if missing).
test-images: test-rust
	$(CARGO) build -p floe-node -p floe-operator
	FLOE_BIN_DIR=$(TARGET_DIR)/debug e2e/images/test-images.sh
