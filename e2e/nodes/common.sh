#!/usr/bin/env bash
# Names and addresses shared by nodes-up.sh and nodes-down.sh (sourced).
# shellcheck disable=SC2034  # used by the scripts that source this file
STATE="${FLOE_NODES_STATE:-/tmp/floe-nodes}"
NODES="${FLOE_NODES:-3}"
NET="${FLOE_NODES_NET:-10.251.0}"
PODNET="${FLOE_NODES_PODNET:-10.252}"
# network namespaces, links and cgroups of this tier all start with this
PREFIX=floe4
HUB="$PREFIX-hub"
HOST_LINK="$PREFIX-host"
REGISTRY="$NET.1:5000"
# what the kubelet sets on start (setupKernelTunables), restored at tear-down
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# paths every kubelet and containerd on a machine share whatever their flags say: each node binds
# a directory of its own over them in its mount namespace (node-init.sh)
NODE_PATHS=(/var/lib/kubelet /var/lib/containerd /run/containerd /var/log/pods /var/log/containers
  /var/lib/cni /etc/cni/net.d /run/netns /var/lib/floe-local-path)

node_ns() { echo "$PREFIX-n$1"; }
node_name() { echo "floe-worker-$1"; }
node_ip() { echo "$NET.$((10 + $1))"; }
pod_cidr() { echo "$PODNET.$1.0/24"; }

# leftovers: what a previous run left behind (empty when clean)
leftovers() {
  local found=()
  [[ -e "$STATE" ]] && found+=("state directory $STATE")
  ip netns list 2>/dev/null | grep -q "^$PREFIX-" && found+=("network namespaces $PREFIX-*")
  ip link show "$HOST_LINK" >/dev/null 2>&1 && found+=("link $HOST_LINK")
  compgen -G "/sys/fs/cgroup/*/$PREFIX-n*" >/dev/null && found+=("cgroups /sys/fs/cgroup/*/$PREFIX-n*")
  echo "${found[*]}"
}
