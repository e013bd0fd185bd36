#!/usr/bin/env bash
# Bring up a real Kubernetes control plane on loopback for tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, plus floe-kubelet (the test-only kubelet stand-in that
# runs Floe pods as local processes). Writes $STATE/kubeconfig and prints how to use it.
#
#   FLOE_E2E_STATE  state directory (default /tmp/floe-e2e; wiped first)
#   FLOE_BIN_DIR    where floe-node & co. live (default: <repo>/target/debug)
#   FLOE_E2E_ADDRESS the address the API server listens on and advertises (default 127.0.0.1;
#                   tier 4 gives an address of its own bridge so that nodes and pods reach it)
#   FLOE_E2E_AGENT  0: no floe-kubelet (tier 4 runs real kubelets instead)
#   FLOE_E2E_PKI_CLIENTS extra client certificates and kubeconfigs (floe-pki --clients)
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$(cd "$E2E/.." && pwd)"
STATE="${FLOE_E2E_STATE:-/tmp/floe-e2e}"
FLOE_BIN_DIR="${FLOE_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/debug}"
ADDRESS="${FLOE_E2E_ADDRESS:-127.0.0.1}"
AGENT="${FLOE_E2E_AGENT:-1}"

log() { echo "controlplane-up: $*" >&2; }
die() { log "$*"; "$E2E/bin/controlplane-down.sh" --keep >&2 || true; exit 1; }

BIN="$("$E2E/bin/build-controlplane.sh")"
"$E2E/bin/controlplane-down.sh" >/dev/null 2>&1 || true
mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/pki" "$STATE/etcd"
KC="$STATE/kubeconfig"
PKI="$STATE/pki"

mapfile -t PORTS < <("$BIN/floe-pki" --free-ports 5)
ETCD_PORT=${PORTS[0]} ETCD_PEER=${PORTS[1]} API_PORT=${PORTS[2]} KCM_PORT=${PORTS[3]} SCHED_PORT=${PORTS[4]}
# the API server's client certificate for kubelets (logs, exec, port-forward) comes with every run
"$BIN/floe-pki" --dir "$PKI" --server "https://$ADDRESS:$API_PORT" --ips "$ADDRESS" \
  --clients "apiserver-kubelet=kube-apiserver-kubelet-client/system:masters${FLOE_E2E_PKI_CLIENTS:+,$FLOE_E2E_PKI_CLIENTS}"
cp "$PKI/kubeconfig" "$KC"

# start NAME ARGS...: run a component in the background with its log and pid file
start() {
  local name=$1; shift
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

# wait_for WHAT SECONDS COMMAND...: poll until COMMAND succeeds; fail at the deadline, or at once
# when a component started so far has exited (its log says why)
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs)) pidfile
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    for pidfile in "$STATE"/pids/*.pid; do
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "$(basename "$pidfile" .pid) exited while waiting for $what; logs in $STATE/logs"
      fi
    done
    sleep 0.2
  done
  die "$what not healthy after ${secs}s; logs in $STATE/logs"
}

start etcd "$BIN/etcd" --name floe --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "floe=http://127.0.0.1:$ETCD_PEER" --unsafe-no-fsync --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address "$ADDRESS" --advertise-address "$ADDRESS" --secure-port "$API_PORT" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet.crt" --kubelet-client-key "$PKI/apiserver-kubelet.key" \
  --kubelet-preferred-address-types InternalIP \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 --authorization-mode Node,RBAC \
  --allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver 90 kubectl --kubeconfig "$KC" get --raw /readyz

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$KC" --authentication-kubeconfig "$KC" --authorization-kubeconfig "$KC" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --controllers '*' --use-service-account-credentials=false \
  --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" --v=1
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$KC" --authentication-kubeconfig "$KC" --authorization-kubeconfig "$KC" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --v=1
wait_for kube-controller-manager 60 curl -kfsS "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 curl -kfsS "https://127.0.0.1:$SCHED_PORT/healthz"

if [[ "$AGENT" != 0 ]]; then
  start floe-kubelet "$BIN/floe-kubelet" --kubeconfig "$KC" --state-dir "$STATE" --bin-dir "$FLOE_BIN_DIR" --node-name floe-agent-0
  wait_for "the test node" 60 kubectl --kubeconfig "$KC" wait node/floe-agent-0 --for=condition=Ready --timeout=1s
fi
# the default namespace's service account appears once the controller-manager runs
wait_for "service accounts" 60 kubectl --kubeconfig "$KC" get serviceaccount default -n default

cat >"$STATE/env" <<ENV
export KUBECONFIG=$KC
export FLOE_E2E_STATE=$STATE
export FLOE_BIN_DIR=$FLOE_BIN_DIR
export HELM=$BIN/helm
ENV
log "control plane up: $(kubectl --kubeconfig "$KC" get --raw /version | grep gitVersion | tr -d ' ,"')"
echo "export KUBECONFIG=$KC"
