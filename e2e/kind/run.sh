#!/usr/bin/env bash
# Tier 4 (DESIGN.md): Floe end to end on kind, written to run unchanged in a user's CI.
# Creates a kind cluster, builds the images (images/Dockerfile) and loads them into it, installs
# charts/floe-crds and charts/floe with a testnet, waits for Available, writes and reads a blob,
# deletes a node pod and checks recovery, scales up and down through epoch changes, checks the
# metrics endpoints, collects logs on failure, deletes the cluster.
#
#   e2e/kind/run.sh [--k8s-version v1.33.4] [--nodes 2] [--storage-nodes 4] [--shards 10] ...
#   e2e/kind/run.sh --render DIR [...]     # no Docker: write the kind config, the Helm values and
#                                          # the rendered manifests it would apply, then exit
#   e2e/kind/run.sh --kubeconfig FILE --registry HOST:PORT [...]
#                                          # the same scenario on an existing cluster (no kind):
#                                          # images pushed to and pulled from the registry
# Needs docker, kind, kubectl, helm (and curl) in PATH; --render needs only helm; --kubeconfig
# needs no kind (and no docker with --skip-build).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HELM="${HELM:-helm}"

usage() {
  cat <<USAGE
usage: e2e/kind/run.sh [options]
  --k8s-version VERSION   Kubernetes version of the kind node image kindest/node:VERSION (default v1.33.4)
  --nodes N               kind worker nodes, besides the control-plane node (default 2, 0-10)
  --storage-nodes N       storage nodes of the testnet (default 4)
  --shards N              shards of the testnet (default 10, 4-1000, >= storage nodes + 2 for the scale-up)
  --epoch DURATION        epoch duration of the testnet (default 30s)
  --cluster NAME          kind cluster name (default floe-e2e)
  --namespace NS          namespace of the release and the testnet (default floe-system)
  --tag TAG               tag of the images built and loaded (default kind)
  --skip-build            use images floe-node:TAG and floe-operator:TAG already in Docker (with
                          --registry: already in the registry)
  --kubeconfig FILE       run against the existing cluster of FILE instead of creating a kind
                          cluster (it is left running; only the release is removed)
  --registry HOST:PORT    images are REGISTRY/floe-node:TAG and REGISTRY/floe-operator:TAG, pushed
                          there after the build (\$DOCKER push, default docker; extra flags in
                          \$PUSH_FLAGS, e.g. --tls-verify=false for podman and a plain-HTTP registry)
                          and pulled by the nodes (pullPolicy IfNotPresent)
  --set KEY=VALUE         an extra Helm value for the floe chart (repeatable), e.g.
                          testnet.cleanup.image=REGISTRY/kubectl:v1.33.4 where no public registry is
                          reachable
  --keep                  keep the cluster at the end (it is always deleted otherwise)
  --artifacts DIR         where logs go on failure (default ./kind-artifacts)
  --render DIR            write the kind config, the Helm values and the rendered manifests to DIR
                          and exit (no Docker, no cluster)
  -h, --help              this text
USAGE
}

die() { echo "kind-e2e: $*" >&2; exit 2; }
log() { echo "kind-e2e: $(date -u +%H:%M:%S) $*" >&2; }

K8S_VERSION=v1.33.4
NODES=2
STORAGE_NODES=4
SHARDS=10
EPOCH=30s
CLUSTER=floe-e2e
NAMESPACE=floe-system
TAG=kind
SKIP_BUILD=false
KEEP=false
ARTIFACTS=./kind-artifacts
RENDER=""
KUBECONFIG_FILE=""
REGISTRY=""
HELM_SETS=()
DOCKER="${DOCKER:-docker}"

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --k8s-version) need_value "$@"; K8S_VERSION="$2"; shift 2 ;;
    --nodes) need_value "$@"; NODES="$2"; shift 2 ;;
    --storage-nodes) need_value "$@"; STORAGE_NODES="$2"; shift 2 ;;
    --shards) need_value "$@"; SHARDS="$2"; shift 2 ;;
    --epoch) need_value "$@"; EPOCH="$2"; shift 2 ;;
    --cluster) need_value "$@"; CLUSTER="$2"; shift 2 ;;
    --namespace) need_value "$@"; NAMESPACE="$2"; shift 2 ;;
    --tag) need_value "$@"; TAG="$2"; shift 2 ;;
    --artifacts) need_value "$@"; ARTIFACTS="$2"; shift 2 ;;
    --render) need_value "$@"; RENDER="$2"; shift 2 ;;
    --kubeconfig) need_value "$@"; KUBECONFIG_FILE="$2"; shift 2 ;;
    --registry) need_value "$@"; REGISTRY="$2"; shift 2 ;;
    --set) need_value "$@"; HELM_SETS+=(--set "$2"); shift 2 ;;
    --skip-build) SKIP_BUILD=true; shift ;;
    --keep) KEEP=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ "$K8S_VERSION" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "--k8s-version must look like v1.33.4, got '$K8S_VERSION'"
# in_range VALUE LO HI: VALUE is a whole number in [LO, HI]
in_range() { [[ "$1" =~ ^[0-9]+$ ]] && (("$1" >= $2 && "$1" <= $3)); }
in_range "$NODES" 0 10 || die "--nodes must be a number of worker nodes 0-10, got '$NODES'"
in_range "$STORAGE_NODES" 1 998 || die "--storage-nodes must be 1-998, got '$STORAGE_NODES'"
in_range "$SHARDS" 4 1000 || die "--shards must be 4-1000, got '$SHARDS'"
((STORAGE_NODES + 2 <= SHARDS)) || die "--shards ($SHARDS) must be at least --storage-nodes + 2 ($((STORAGE_NODES + 2))): the suite scales up by two nodes"
[[ "$EPOCH" =~ ^([0-9]+[smhd])+$ ]] || die "--epoch must be a duration like 30s or 2m, got '$EPOCH'"
[[ "$CLUSTER" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--cluster must be a DNS label, got '$CLUSTER'"
[[ "$NAMESPACE" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--namespace must be a DNS label, got '$NAMESPACE'"
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag must be an image tag, got '$TAG'"

[[ -z "$KUBECONFIG_FILE" || -r "$KUBECONFIG_FILE" ]] || die "--kubeconfig: cannot read '$KUBECONFIG_FILE'"
[[ -z "$REGISTRY" || "$REGISTRY" =~ ^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$ ]] || die "--registry must look like host:port, got '$REGISTRY'"

IMAGE_PREFIX="${REGISTRY:+$REGISTRY/}"
NODE_IMAGE="${IMAGE_PREFIX}floe-node:$TAG"
OPERATOR_IMAGE="${IMAGE_PREFIX}floe-operator:$TAG"
PULL_POLICY=Never
[[ -n "$REGISTRY" ]] && PULL_POLICY=IfNotPresent
if [[ -n "$KUBECONFIG_FILE" ]]; then
  KUBECTL=(kubectl --kubeconfig "$KUBECONFIG_FILE")
  HELM_CTX=(--kubeconfig "$KUBECONFIG_FILE")
else
  KUBECTL=(kubectl --context "kind-$CLUSTER")
  HELM_CTX=(--kube-context "kind-$CLUSTER")
fi

# ---- what the suite applies (also written by --render) ----
kind_config() {
  echo "kind: Cluster"
  echo "apiVersion: kind.x-k8s.io/v1alpha4"
  echo "nodes:"
  echo "  - role: control-plane"
  echo "    image: kindest/node:$K8S_VERSION"
  for _ in $(seq 1 "$NODES"); do
    echo "  - role: worker"
    echo "    image: kindest/node:$K8S_VERSION"
  done
}

values() {
  cat <<VALUES
image:
  repository: ${IMAGE_PREFIX}floe-operator
  tag: "$TAG"
  pullPolicy: $PULL_POLICY
testnet:
  enabled: true
  name: testnet
  nodes: $STORAGE_NODES
  shards: $SHARDS
  epochDuration: "$EPOCH"
  image: "$NODE_IMAGE"
  imagePullPolicy: $PULL_POLICY
  retention: Delete
monitoring:
  dashboard:
    enabled: true
VALUES
}

render() {
  local dir="$1"
  mkdir -p "$dir"
  kind_config >"$dir/kind-config.yaml"
  values >"$dir/values.yaml"
  "$HELM" template floe-crds "$REPO/charts/floe-crds" >"$dir/floe-crds.yaml"
  "$HELM" template floe "$REPO/charts/floe" -n "$NAMESPACE" -f "$dir/values.yaml" "${HELM_SETS[@]}" >"$dir/floe.yaml"
}

if [[ -n "$RENDER" ]]; then
  render "$RENDER"
  log "rendered into $RENDER: kind-config.yaml values.yaml floe-crds.yaml floe.yaml"
  exit 0
fi

tools=(kubectl "$HELM" curl)
[[ -z "$KUBECONFIG_FILE" ]] && tools+=(docker kind)
[[ -n "$KUBECONFIG_FILE" && "$SKIP_BUILD" != true ]] && tools+=("${DOCKER%% *}")
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is not in PATH"
done

# ---- cluster lifetime, logs on failure ----
WORK="$(mktemp -d)"
# shellcheck disable=SC2317  # called from the EXIT trap
collect_logs() {
  mkdir -p "$ARTIFACTS"
  log "collecting logs into $ARTIFACTS"
  "${KUBECTL[@]}" get all,fsc,pvc,events -A -o wide >"$ARTIFACTS/objects.txt" 2>&1 || true
  "${KUBECTL[@]}" get fsc -A -o yaml >"$ARTIFACTS/storageclusters.yaml" 2>&1 || true
  for pod in $("${KUBECTL[@]}" get pods -n "$NAMESPACE" -o name 2>/dev/null); do
    "${KUBECTL[@]}" logs -n "$NAMESPACE" "$pod" --all-containers --prefix >"$ARTIFACTS/$(basename "$pod").log" 2>&1 || true
    "${KUBECTL[@]}" logs -n "$NAMESPACE" "$pod" --all-containers --previous >"$ARTIFACTS/$(basename "$pod").previous.log" 2>/dev/null || true
  done
  if [[ -z "$KUBECONFIG_FILE" ]]; then
    kind export logs "$ARTIFACTS/kind" --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
# shellcheck disable=SC2317  # called from the EXIT trap
finish() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    log "FAILED (exit $status)"
    collect_logs
  fi
  if [[ -n "$KUBECONFIG_FILE" ]]; then
    # an existing cluster stays; what the scenario installed goes (unless --keep)
    if [[ "$KEEP" != true ]]; then
      "$HELM" "${HELM_CTX[@]}" uninstall floe -n "$NAMESPACE" --wait --timeout 5m >/dev/null 2>&1 || true
      "${KUBECTL[@]}" delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
    fi
  elif [[ "$KEEP" == true ]]; then
    log "keeping cluster kind-$CLUSTER (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  exit $status
}
trap finish EXIT

render "$WORK"
if [[ -z "$KUBECONFIG_FILE" ]]; then
  log "creating kind cluster $CLUSTER (Kubernetes $K8S_VERSION, $NODES workers)"
  kind create cluster --name "$CLUSTER" --config "$WORK/kind-config.yaml" --wait 5m
else
  log "using the cluster of $KUBECONFIG_FILE: $("${KUBECTL[@]}" get nodes --no-headers | wc -l) nodes"
fi

if [[ "$SKIP_BUILD" != true ]]; then
  log "building images $NODE_IMAGE and $OPERATOR_IMAGE"
  if [[ -n "$REGISTRY" ]]; then
    make -C "$REPO" images DOCKER="$DOCKER" IMAGE_REPO="$REGISTRY" IMAGE_TAG="$TAG" >&2
    # shellcheck disable=SC2086  # PUSH_FLAGS: zero or more flags
    for image in "$NODE_IMAGE" "$OPERATOR_IMAGE"; do $DOCKER push ${PUSH_FLAGS:-} "$image" >&2; done
  else
    make -C "$REPO" images IMAGE_REPO=localhost IMAGE_TAG="$TAG" >&2
    docker tag "localhost/floe-node:$TAG" "$NODE_IMAGE"
    docker tag "localhost/floe-operator:$TAG" "$OPERATOR_IMAGE"
  fi
fi
if [[ -z "$KUBECONFIG_FILE" ]]; then
  kind load docker-image --name "$CLUSTER" "$NODE_IMAGE" "$OPERATOR_IMAGE"
fi

# ---- install ----
log "helm install floe-crds, then floe with a $STORAGE_NODES-node testnet"
# upgrade --install: an existing cluster may have the CRD release already (it stays after the run)
"$HELM" "${HELM_CTX[@]}" upgrade --install floe-crds "$REPO/charts/floe-crds" --wait
"$HELM" "${HELM_CTX[@]}" install floe "$REPO/charts/floe" -n "$NAMESPACE" --create-namespace \
  -f "$WORK/values.yaml" "${HELM_SETS[@]}" --wait --timeout 5m
fsc() { "${KUBECTL[@]}" -n "$NAMESPACE" get fsc testnet -o "jsonpath={$1}"; }
wait_available() {
  "${KUBECTL[@]}" -n "$NAMESPACE" wait fsc/testnet --for=condition=Available --timeout="${1:-10m}"
}
wait_available
# Available can come before the pods are Ready (the committee forms over the headless Service,
# which publishes not-ready pods); the client Service routes only to Ready pods
"${KUBECTL[@]}" -n "$NAMESPACE" wait statefulset/testnet --for=jsonpath='{.status.readyReplicas}'="$STORAGE_NODES" --timeout=5m >&2
"${KUBECTL[@]}" -n "$NAMESPACE" get fsc testnet >&2

# ---- a blob in, a blob out ----
# The client runs in the cluster: with PodIP addressing (the default) the committee lists pod IPs,
# which a port-forward to one Service cannot reach; the operator image carries the floe CLI.
client() {
  local name="client-$RANDOM"
  "${KUBECTL[@]}" -n "$NAMESPACE" apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata: {name: $name, labels: {app.kubernetes.io/name: floe-e2e-client}}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532}
  containers:
    - name: floe
      image: $OPERATOR_IMAGE
      imagePullPolicy: $PULL_POLICY
      command: ["/usr/local/bin/floe", "--json", "--connect", "https://testnet.$NAMESPACE.svc:7070"]
      args: [$(printf '"%s",' "$@" | sed 's/,$//')]
      volumeMounts: [{name: tmp, mountPath: /tmp}]
      securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
  volumes: [{name: tmp, emptyDir: {}}]
POD
  "${KUBECTL[@]}" -n "$NAMESPACE" wait "pod/$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout=3m >/dev/null \
    || { "${KUBECTL[@]}" -n "$NAMESPACE" logs "$name" >&2; return 1; }
  "${KUBECTL[@]}" -n "$NAMESPACE" logs "$name"
  "${KUBECTL[@]}" -n "$NAMESPACE" delete pod "$name" --wait=false >/dev/null
}
# the blob: the CA bundle of the image (a few hundred KiB; distroless and the locally made base
# both carry it). The floe binary itself is too large for a 10-shard network (1.7 MiB at most).
blob_id="$(client put /etc/ssl/certs/ca-certificates.crt | sed -n 's/.*"blob_id": *"\([^"]*\)".*/\1/p')"
[[ -n "$blob_id" ]] || die "floe put printed no blob ID"
log "stored blob $blob_id"
read_back() { client get "$blob_id" -o /tmp/blob | grep -q "\"blob_id\": *\"$blob_id\"" || die "floe get $blob_id failed ($1)"; }
read_back "after the put"

# ---- a node pod dies; the cluster recovers ----
log "deleting pod testnet-1"
"${KUBECTL[@]}" -n "$NAMESPACE" delete pod testnet-1 --wait=true
"${KUBECTL[@]}" -n "$NAMESPACE" wait pod/testnet-1 --for=condition=Ready --timeout=5m
"${KUBECTL[@]}" -n "$NAMESPACE" wait fsc/testnet --for=jsonpath='{.status.conditions[?(@.type=="Recovering")].status}'=False --timeout=10m
wait_available
read_back "after a node pod was deleted"

# ---- scale up and down through epoch changes ----
scale() {
  local nodes="$1" epoch
  epoch="$(fsc .status.epoch)"
  log "scaling to $nodes storage nodes (epoch $epoch)"
  "$HELM" "${HELM_CTX[@]}" upgrade floe "$REPO/charts/floe" -n "$NAMESPACE" --reuse-values \
    --set "testnet.nodes=$nodes" --wait --timeout 5m
  for _ in $(seq 1 120); do
    if [[ "$(fsc .status.epoch)" -gt "$epoch" && "$("${KUBECTL[@]}" -n "$NAMESPACE" get statefulset testnet -o jsonpath='{.status.readyReplicas}')" == "$nodes" \
      && "$("${KUBECTL[@]}" -n "$NAMESPACE" get statefulset testnet -o jsonpath='{.spec.replicas}')" == "$nodes" ]]; then
      wait_available 5m
      log "epoch $(fsc .status.epoch) with $nodes nodes"
      return 0
    fi
    sleep 5
  done
  die "no epoch change to $nodes nodes within 10 minutes (epoch $(fsc .status.epoch))"
}
scale $((STORAGE_NODES + 2))
read_back "after scaling up"
scale "$STORAGE_NODES"
read_back "after scaling down"

# ---- metrics endpoints ----
# Through the API server's pod proxy: the operator and the nodes listen on their pod IP only
# (--http-addr=$(POD_IP):…), which kubectl port-forward (it dials localhost inside the pod)
# cannot reach.
pod_metrics() {
  "${KUBECTL[@]}" get --raw "/api/v1/namespaces/$NAMESPACE/pods/$1:$2/proxy/metrics"
}
op_pod="$("${KUBECTL[@]}" -n "$NAMESPACE" get pods -l app.kubernetes.io/name=floe-operator -o jsonpath='{.items[0].metadata.name}')"
pod_metrics "$op_pod" 8080 >"$WORK/operator.prom" || die "the operator's /metrics did not answer"
pod_metrics testnet-0 7071 >"$WORK/node.prom" || die "testnet-0's /metrics did not answer"
for m in floe_operator_reconciles_total process_resident_memory_bytes floe_control_epoch; do
  grep -q "^$m" "$WORK/operator.prom" || die "the operator's /metrics lacks $m"
done
for m in floe_node_build_info floe_node_stored_bytes floe_node_grpc_requests_total process_open_fds; do
  grep -q "^$m" "$WORK/node.prom" || die "testnet-0's /metrics lacks $m"
done
log "metrics endpoints ok"

# ---- uninstall ----
"$HELM" "${HELM_CTX[@]}" uninstall floe -n "$NAMESPACE" --wait --timeout 5m
if "${KUBECTL[@]}" -n "$NAMESPACE" get fsc testnet >/dev/null 2>&1; then
  die "helm uninstall left StorageCluster testnet"
fi
if [[ -n "$KUBECONFIG_FILE" ]]; then
  log "ok: the cluster of $KUBECONFIG_FILE, $STORAGE_NODES storage nodes"
else
  log "ok: Kubernetes $K8S_VERSION, $NODES workers, $STORAGE_NODES storage nodes"
fi
