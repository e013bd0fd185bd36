#!/usr/bin/env bash
# Tier 4 (DESIGN.md), `make test-nodes`: Floe on real Kubernetes nodes. Brings up the real-node
# cluster (e2e/bin/nodes-up.sh), builds the images through images/Dockerfile's Rust builder stage
# (make images with podman, on the local RUST_IMAGE and BASE of e2e/images/local-build-images.sh),
# pushes them to the cluster's registry, runs the kind scenario against the cluster
# (e2e/kind/run.sh --kubeconfig), then the tier-4 Go tests (e2e/controlplane/nodes), and always
# tears everything down. On failure it prints the tail of every component's log and keeps the
# state directory.
#
#   FLOE_NODES=3 FLOE_NODES_STATE=/tmp/floe-nodes e2e/run-node-tests.sh
#   The state directory must be on a disk, not a tmpfs: tmpfs pages a pod writes count against
#   its memory limit, so the node pods under 512 Mi are OOM-killed storing the 256 MiB blob.
#   FLOE_SKIP_KIND=1   skip the kind scenario;  FLOE_SKIP_GO=1   skip the Go tests
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E/.." && pwd)"
export FLOE_NODES_STATE="${FLOE_NODES_STATE:-/tmp/floe-nodes}"
export FLOE_IMAGE_TAG="${FLOE_IMAGE_TAG:-t4-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo dev)}"
log() { echo "run-node-tests: $(date -u +%H:%M:%S) $*" >&2; }

# what the run may touch on this host, outside the namespaces it makes: compared before and after
# (mounts, links, routes, namespaces, iptables rules, processes that name this tier's state)
host_state() {
  {
    ip -o link show | awk -F': ' '{print "link", $2}' | sed 's/@.*//'
    ip -o route show | sed 's/^/route /'
    ip netns list 2>/dev/null | sed 's/^/netns /'
    awk '{print "mount", $2}' /proc/mounts
    iptables-save 2>/dev/null | grep -v '^[#:]' | sed 's/^/iptables /'
    # shellcheck disable=SC2009  # ps with its arguments is what is compared
    ps -eo args= | grep -F -e "$FLOE_NODES_STATE" -e floe4 | grep -v -e grep -e run-node-tests | sed 's/^/process /'
  } | { grep -E "floe4|10\.25[12]\.|$FLOE_NODES_STATE|KUBE-|cni0|/var/lib/kubelet|/run/containerd|local-path" || true; } | sort
}
host_state >"${TMPDIR:-/tmp}/floe-t4-host-before.$$" || true

status=0
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  status=${status:-$?}
  set +e
  if [[ $status -ne 0 ]]; then
    log "FAILED; last lines of every log:"
    for f in "$FLOE_NODES_STATE"/logs/*.log "$FLOE_NODES_STATE"/cp/logs/*.log "$FLOE_NODES_STATE"/n*/logs/*.log; do
      [[ -f "$f" ]] || continue
      echo "===== $f" >&2
      tail -n 25 "$f" >&2
    done
    "$E2E/bin/nodes-down.sh" --keep
    log "logs kept in $FLOE_NODES_STATE (remove with: FLOE_NODES_STATE=$FLOE_NODES_STATE e2e/bin/nodes-down.sh)"
  else
    "$E2E/bin/nodes-down.sh" || status=1
  fi
  # the run's images (the registry that held them is gone with the state)
  if [[ -n "${FLOE_REGISTRY:-}" ]]; then
    for image in floe-node:$FLOE_IMAGE_TAG floe-operator:$FLOE_IMAGE_TAG floe-node:$FLOE_IMAGE_TAG-next; do
      podman rmi "$FLOE_REGISTRY/$image" >/dev/null 2>&1
    done
  fi
  # nothing of the run may stay on this host
  local before="${TMPDIR:-/tmp}/floe-t4-host-before.$$" left
  left="$(host_state | comm -13 "$before" -)"
  rm -f "$before"
  if [[ -n "$left" ]]; then
    log "tear-down left this behind (not there before the run):"
    echo "$left" >&2
    status=1
  else
    log "tear-down left nothing behind (links, routes, namespaces, mounts, iptables rules, processes)"
  fi
  log "tier 4 took $((SECONDS - t0))s in all"
  exit "$status"
}
t0=$SECONDS
trap 'status=$?; cleanup' EXIT

"$E2E/bin/nodes-up.sh" >/dev/null
# shellcheck disable=SC1091
source "$FLOE_NODES_STATE/env"
log "cluster up in $((SECONDS - t0))s (nodes-up.sh printed kubectl get nodes -o wide above)"

t1=$SECONDS
args="$("$E2E/images/local-build-images.sh")"
podman images -a -q --no-trunc | sort -u >"$FLOE_NODES_STATE/images-before"
make -C "$REPO" images DOCKER="podman --runtime runc --cgroup-manager cgroupfs" IMAGE_REPO="$FLOE_REGISTRY" \
  IMAGE_TAG="$FLOE_IMAGE_TAG" IMAGE_BUILD_ARGS="$args" >"$FLOE_NODES_STATE/logs/images.log" 2>&1 \
  || { log "make images failed; log: $FLOE_NODES_STATE/logs/images.log"; tail -n 30 "$FLOE_NODES_STATE/logs/images.log" >&2; exit 1; }
# the untagged intermediate images this build made (each builder stage ~360 MB of source and
# binaries; the cargo cache volumes are what makes the next build fast). Not --layers=false:
# podman 4.3 then fails the second target ("identifier is not an image")
podman images -a -q --no-trunc --filter dangling=true | sort -u | comm -13 "$FLOE_NODES_STATE/images-before" - |
  xargs -r podman rmi >/dev/null 2>&1 || true
for image in floe-node floe-operator; do
  podman push --tls-verify=false "$FLOE_REGISTRY/$image:$FLOE_IMAGE_TAG" >>"$FLOE_NODES_STATE/logs/images.log" 2>&1 \
    || { log "podman push $image failed; log: $FLOE_NODES_STATE/logs/images.log"; exit 1; }
done
log "images built through images/Dockerfile and pushed in $((SECONDS - t1))s"
# the floe CLI of the operator image, for the tests that use it from this host (port-forward)
cid="$(podman --runtime runc --cgroup-manager cgroupfs create "$FLOE_REGISTRY/floe-operator:$FLOE_IMAGE_TAG")" \
  || { log "podman create of the operator image failed"; exit 1; }
podman cp "$cid:/usr/local/bin/floe" "$FLOE_NODES_STATE/floe" >/dev/null \
  || { log "could not copy floe out of the operator image"; podman rm "$cid" >/dev/null; exit 1; }
podman rm "$cid" >/dev/null
export FLOE_CLI="$FLOE_NODES_STATE/floe"

if [[ "${FLOE_SKIP_KIND:-0}" != 1 ]]; then
  t1=$SECONDS
  "$E2E/kind/run.sh" --kubeconfig "$KUBECONFIG" --registry "$FLOE_REGISTRY" --tag "$FLOE_IMAGE_TAG" --skip-build \
    --set "testnet.cleanup.image=$FLOE_REGISTRY/kubectl:v1.33.4" --artifacts "$FLOE_NODES_STATE/kind-artifacts"
  log "kind scenario passed on the real nodes in $((SECONDS - t1))s"
fi

if [[ "${FLOE_SKIP_GO:-0}" != 1 ]]; then
  cd "$E2E/controlplane"
  GOFLAGS=-mod=mod go test -tags nodes -count=1 -timeout 40m -v ./nodes/
fi
