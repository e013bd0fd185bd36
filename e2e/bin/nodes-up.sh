#!/usr/bin/env bash
# Tier 4 (DESIGN.md): a real multi-node Kubernetes cluster on this machine. The tier-3 control
# plane (controlplane-up.sh) listening on an address of a bridge this script makes, plus N worker
# nodes, each in its own network namespace with its own address: a real kubelet (v1.33.13, Go
# modules) with its own containerd + runc (Debian), bridge + host-local CNI (Debian
# containernetworking-plugins) with routes between the nodes, kube-proxy (iptables), kube-router's
# network-policy controller; CoreDNS for cluster DNS; rancher local-path-provisioner behind the
# default StorageClass; a distribution registry the nodes pull from. Every image is made here.
#
#   e2e/bin/nodes-up.sh && source /tmp/floe-nodes/env && kubectl get nodes -o wide
#   e2e/bin/nodes-down.sh
#
#   FLOE_NODES        worker nodes (default 3, 1-9)
#   FLOE_NODES_STATE  state directory (default /tmp/floe-nodes)
#   FLOE_NODES_NET    first three octets of the nodes' /24 (default 10.251.0: .1 is this host's
#                     end of the bridge, the API server and the registry; .11… the nodes)
#   FLOE_NODES_PODNET first two octets of the pods' /16 (default 10.252: node i has 10.252.i.0/24)
# Needs root. Installs Debian's containerd, runc, containernetworking-plugins, iptables, ipset,
# podman and busybox-static when missing.
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=e2e/nodes/common.sh
source "$E2E/nodes/common.sh"

log() { echo "nodes-up: $*" >&2; }
fail() { log "$*"; "$E2E/bin/nodes-down.sh" --keep >/dev/null 2>&1 || true; exit 1; }

[[ "$NODES" =~ ^[1-9]$ ]] || { log "FLOE_NODES must be 1-9, got '$NODES'"; exit 2; }
[[ $EUID -eq 0 ]] || { log "needs root (network namespaces, cgroups, mounts)"; exit 2; }

# ---- refuse to start over a previous run ----
leftovers="$(leftovers)"
if [[ -n "$leftovers" ]]; then
  log "a previous run is still (partly) up: $leftovers"
  log "clean it with: FLOE_NODES_STATE=$STATE e2e/bin/nodes-down.sh"
  exit 1
fi

# ---- tools ----
missing=()
for t in containerd runc iptables ipset podman nsenter unshare ip curl kubectl; do
  command -v "$t" >/dev/null || missing+=("$t")
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || missing+=(containernetworking-plugins)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || { log "missing: ${missing[*]} (install them; not a Debian-like system)"; exit 1; }
  log "installing Debian packages for: ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc \
      containernetworking-plugins iptables ipset conntrack podman busybox-static; } >/dev/null \
    || { log "apt-get install failed"; exit 1; }
fi
command -v kubectl >/dev/null || { log "kubectl is missing (not a Debian package: put it in PATH)"; exit 1; }

started=$SECONDS
BIN="$("$E2E/bin/build-controlplane.sh" --nodes)" || { log "build-controlplane.sh --nodes failed (its output is above)"; exit 1; }
log "binaries ready in $((SECONDS - started))s ($BIN)"

mkdir -p "$STATE/logs" "$STATE/pids"
trap 'fail "interrupted"' INT TERM

# ---- kernel settings the kubelet changes: recorded here, restored by nodes-down.sh ----
for k in "${KUBELET_SYSCTLS[@]}"; do
  echo "$k=$(sysctl -n "$k")"
done >"$STATE/sysctls.orig"

# ---- the mount points of the nodes' own directories: made if missing, removed by nodes-down.sh ----
for d in "${NODE_PATHS[@]}"; do
  if [[ ! -e "$d" ]]; then
    mkdir -p "$d"
    echo "$d" >>"$STATE/created-dirs"
  fi
done

# ---- network: a bridge in a namespace of its own, this host and every node on it ----
ip netns add "$HUB"
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
ip link add "$HOST_LINK" type veth peer name host0 netns "$HUB"
ip -n "$HUB" link set host0 master br0 up
ip addr add "$NET.1/24" dev "$HOST_LINK"
ip link set "$HOST_LINK" up
for i in $(seq 1 "$NODES"); do
  ns="$(node_ns "$i")"
  ip netns add "$ns"
  ip link add "$PREFIX-v$i" netns "$HUB" type veth peer name eth0 netns "$ns"
  ip -n "$HUB" link set "$PREFIX-v$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
  # the Service range: routed, so that a connection from the node itself reaches kube-proxy's DNAT
  ip -n "$ns" route add 10.96.0.0/16 via "$NET.1"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  # this host reaches the pods (port-forward goes through the kubelet; tests also dial pod IPs)
  ip route add "$(pod_cidr "$i")" via "$(node_ip "$i")" dev "$HOST_LINK"
done
for i in $(seq 1 "$NODES"); do
  for j in $(seq 1 "$NODES"); do
    [[ $i == "$j" ]] || ip -n "$(node_ns "$i")" route add "$(pod_cidr "$j")" via "$(node_ip "$j")"
  done
done

# ---- control plane on the bridge address ----
clients=()
for i in $(seq 1 "$NODES"); do clients+=("node-$i=system:node:$(node_name "$i")/system:nodes"); done
FLOE_E2E_STATE="$STATE/cp" FLOE_E2E_ADDRESS="$NET.1" FLOE_E2E_AGENT=0 \
  FLOE_E2E_PKI_CLIENTS="$(IFS=,; echo "${clients[*]}")" \
  "$E2E/bin/controlplane-up.sh" >/dev/null || fail "control plane: controlplane-up.sh failed; logs in $STATE/cp/logs"
KC="$STATE/cp/kubeconfig"
k() { kubectl --kubeconfig "$KC" "$@"; }

# start NAME CMD...: a component in the background, its log and pid file under $STATE
start() {
  local name=$1; shift
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}
# wait_until WHAT SECONDS LOG CMD...: poll CMD; fail naming WHAT and LOG at the deadline
wait_until() {
  local what=$1 secs=$2 logf=$3; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what not ready after ${secs}s; log: $logf"
    sleep 0.5
  done
}

# ---- the registry ----
mkdir -p "$STATE/registry"
cat >"$STATE/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry}
  delete: {enabled: true}
http:
  addr: $REGISTRY
YML
start registry "$BIN/registry" serve "$STATE/registry.yml"
wait_until registry 30 "$STATE/logs/registry.log" curl -fsS "http://$REGISTRY/v2/"

# ---- system images: made from local files, pushed to the registry ----
"$E2E/nodes/system-images.sh" "$BIN" "$REGISTRY" >"$STATE/logs/system-images.log" 2>&1 \
  || fail "system images: e2e/nodes/system-images.sh failed; log: $STATE/logs/system-images.log"

# ---- the nodes ----
for i in $(seq 1 "$NODES"); do
  nd="$STATE/n$i" name="$(node_name "$i")" cg="$PREFIX-n$i"
  mkdir -p "$nd/logs" "$nd/pids" "$nd/certs.d/$REGISTRY" "$nd/fs_etc_cni_net.d"
  # every v1 hierarchy holds the kubelet's cgroupRoot before it starts
  for h in /sys/fs/cgroup/*/; do
    [[ "$h" == */unified/ ]] && continue
    mkdir -p "$h$cg"
    if [[ -f "$h$cg/cpuset.cpus" ]]; then
      cat "${h}cpuset.cpus" >"$h$cg/cpuset.cpus"
      cat "${h}cpuset.mems" >"$h$cg/cpuset.mems"
    fi
  done
  cp "$STATE/cp/pki/kubeconfig-node-$i" "$nd/kubeconfig"
  cat >"$nd/certs.d/$REGISTRY/hosts.toml" <<TOML
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
  cat >"$nd/containerd.toml" <<TOML
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REGISTRY/pause:3.10"
  # root here lacks CAP_SYS_RESOURCE: oom_score_adj below the caller's is refused
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$nd/certs.d"
TOML
  cat >"$nd/fs_etc_cni_net.d/10-floe.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "floe", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$(pod_cidr "$i")"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
JSON
  : >"$nd/resolv.conf"
  cat >"$nd/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/cp/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# hybrid cgroups v1, no systemd as PID 1
cgroupDriver: cgroupfs
cgroupRoot: /$cg
failCgroupV1: false
failSwapOn: false
# the hard limit of open files here
maxOpenFiles: 20000
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
resolvConf: $nd/resolv.conf
serializeImagePulls: false
# absolute disk thresholds and no image garbage collection: the workers share this machine's
# disk with everything else on it, so a share of it (2 % of 252 GB is 5 GB) evicted every pod,
# the operator too, while gigabytes were free, and image GC removed the image under test
evictionHard: {memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusReportFrequency: 10s
YAML
  start "kubelet-$i" nsenter --net="/run/netns/$(node_ns "$i")" -- unshare --mount --propagation private -- \
    "$E2E/nodes/node-init.sh" "$nd" "$cg" "$BIN" "$name" "$(node_ip "$i")"
done
for i in $(seq 1 "$NODES"); do
  wait_until "node $(node_name "$i") (kubelet)" 120 "$STATE/logs/kubelet-$i.log" k get node "$(node_name "$i")"
  k patch node "$(node_name "$i")" --type merge \
    -p "{\"spec\":{\"podCIDR\":\"$(pod_cidr "$i")\",\"podCIDRs\":[\"$(pod_cidr "$i")\"]}}" >/dev/null
  start "kube-proxy-$i" nsenter --net="/run/netns/$(node_ns "$i")" -- "$BIN/kube-proxy" --kubeconfig "$KC" \
    --hostname-override "$(node_name "$i")" --proxy-mode iptables --cluster-cidr "$PODNET.0.0/16" \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address "$(node_ip "$i"):10256" --v=1
  start "kube-router-$i" nsenter --net="/run/netns/$(node_ns "$i")" -- "$BIN/kube-router" --kubeconfig "$KC" \
    --hostname-override "$(node_name "$i")" --run-firewall=true --run-router=false --run-service-proxy=false \
    --enable-cni=false --enable-ipv4=true --enable-ipv6=false --service-cluster-ip-range 10.96.0.0/16 \
    --health-port 20244 --metrics-port 0 -v 1
done
for i in $(seq 1 "$NODES"); do
  wait_until "node $(node_name "$i") Ready" 120 "$STATE/logs/kubelet-$i.log" \
    k wait node "$(node_name "$i")" --for=condition=Ready --timeout=1s
done
log "$NODES nodes Ready in $((SECONDS - started))s"

# ---- cluster add-ons: CoreDNS, the provisioner ----
sed -e "s|@REGISTRY@|$REGISTRY|g" "$E2E/nodes/coredns.yaml" | k apply -f - >/dev/null
sed -e "s|@REGISTRY@|$REGISTRY|g" "$E2E/nodes/local-path.yaml" | k apply -f - >/dev/null
start local-path-provisioner "$BIN/local-path-provisioner" --debug start --kubeconfig "$KC" \
  --namespace local-path-storage --configmap-name local-path-config --provisioner-name rancher.io/local-path \
  --service-account-name local-path-provisioner --helper-image "$REGISTRY/busybox:floe"
wait_until "CoreDNS" 180 "kubectl -n kube-system logs deploy/coredns" \
  k -n kube-system wait deploy/coredns --for=condition=Available --timeout=1s

cat >"$STATE/env" <<ENV
export KUBECONFIG=$KC
export FLOE_NODES_STATE=$STATE
export FLOE_REGISTRY=$REGISTRY
export HELM=$BIN/helm
ENV
log "cluster up in $((SECONDS - started))s: $NODES nodes, registry $REGISTRY; source $STATE/env"
k get nodes -o wide >&2
echo "export KUBECONFIG=$KC"
