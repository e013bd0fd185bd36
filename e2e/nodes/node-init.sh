#!/usr/bin/env bash
# Runs inside one worker node's network namespace and a fresh private mount namespace (nodes-up.sh
# starts it with nsenter --net + unshare --mount): moves itself into the node's cgroup, binds the
# node's own directories over the paths every kubelet and containerd share whatever their flags
# say, starts containerd, then becomes the kubelet. Both live in this one mount namespace, so
# the kubelet's volume mounts are what runc sees; all of them vanish with the namespace.
#
#   node-init.sh NODE_DIR CGROUP BIN_DIR NODE_NAME NODE_IP
set -euo pipefail

NODE_DIR=$1 CGROUP=$2 BIN=$3 NAME=$4 IP=$5
# shellcheck source=e2e/nodes/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# every process of this node (containerd, its shims, the containers, the kubelet) under CGROUP,
# so that tear-down finds them all
for h in /sys/fs/cgroup/*/; do
  [[ "$h" == */unified/ ]] && continue
  mkdir -p "$h$CGROUP/system"
  if [[ -f "$h$CGROUP/system/cpuset.cpus" ]]; then
    cat "$h$CGROUP/cpuset.cpus" >"$h$CGROUP/system/cpuset.cpus"
    cat "$h$CGROUP/cpuset.mems" >"$h$CGROUP/system/cpuset.mems"
  fi
  echo $$ >"$h$CGROUP/system/cgroup.procs"
done

mount --make-rprivate /
# (nodes-up.sh made the mount points that were missing, and nodes-down.sh removes those)
for d in "${NODE_PATHS[@]}"; do
  src="$NODE_DIR/fs${d//\//_}"
  mkdir -p "$src"
  mount --bind "$src" "$d"
done
# the kubelet's mounts propagate to the containers that ask for it, within this namespace only
mount --make-rshared /

containerd --config "$NODE_DIR/containerd.toml" >"$NODE_DIR/logs/containerd.log" 2>&1 &
echo $! >"$NODE_DIR/pids/containerd.pid"
for _ in $(seq 1 150); do
  [[ -S /run/containerd/containerd.sock ]] && break
  kill -0 "$(cat "$NODE_DIR/pids/containerd.pid")" 2>/dev/null || { echo "node-init: containerd exited; log: $NODE_DIR/logs/containerd.log" >&2; exit 1; }
  sleep 0.2
done

exec "$BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" --kubeconfig "$NODE_DIR/kubeconfig" \
  --hostname-override "$NAME" --node-ip "$IP" --v=1
