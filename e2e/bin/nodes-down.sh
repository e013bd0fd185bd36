#!/usr/bin/env bash
# Tear down what nodes-up.sh made, whatever state a run was left in (killed, half up): every
# process of the nodes (found by their cgroups), the add-ons, the registry, the control plane,
# the network namespaces (their iptables rules, ipsets and mounts go with them), this host's
# link and routes, the cgroups; restores the kernel settings the kubelet changed. Removes the
# state directory unless --keep / FLOE_NODES_KEEP=1 (to read the logs of a failed run).
set -uo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=e2e/nodes/common.sh
source "$E2E/nodes/common.sh"
KEEP="${FLOE_NODES_KEEP:-0}"
[[ "${1:-}" == "--keep" ]] && KEEP=1

# stop PIDFILE: TERM, up to 10 s, then KILL
stop() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 0
  if [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

# the add-ons and kubelets first (a kubelet stops no containers when it stops: the cgroups do)
for f in "$STATE"/pids/local-path-provisioner.pid "$STATE"/pids/kube-router-*.pid "$STATE"/pids/kube-proxy-*.pid \
  "$STATE"/pids/kubelet-*.pid; do
  [[ -f "$f" ]] && stop "$f"
done
# every process left in a node's cgroups: containerd, shims, containers
for round in 1 2 3 4 5 6 7 8 9 10; do
  # every depth: containers sit at <node>/kubepods/<qos>/pod<uid>/<container>
  pids="$(find /sys/fs/cgroup/pids/ -mindepth 2 -path "/sys/fs/cgroup/pids/$PREFIX-n*" -name cgroup.procs -print0 2>/dev/null |
    xargs -0 -r cat 2>/dev/null | sort -u)"
  [[ -z "$pids" ]] && break
  # shellcheck disable=SC2086  # a list of pids
  if ((round < 4)); then kill -TERM $pids 2>/dev/null; else kill -KILL $pids 2>/dev/null; fi
  sleep 1
done
# the cgroups, deepest first
# (runc also makes them in the cgroup2 hierarchy of this hybrid host)
for h in /sys/fs/cgroup/*/; do
  for cg in "$h$PREFIX"-n*; do
    [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
done
[[ -f "$STATE/pids/registry.pid" ]] && stop "$STATE/pids/registry.pid"
if [[ -d "$STATE/cp" ]]; then
  FLOE_E2E_STATE="$STATE/cp" "$E2E/bin/controlplane-down.sh" --keep
fi

# network: the namespaces (with their links, routes, iptables rules and ipsets), this host's end
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-"); do
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  ip netns del "$ns"
done
ip link del "$HOST_LINK" 2>/dev/null || true

if [[ -f "$STATE/sysctls.orig" ]]; then
  while IFS= read -r kv; do
    sysctl -qw "$kv" || echo "nodes-down: could not restore $kv" >&2
  done <"$STATE/sysctls.orig"
  rm -f "$STATE/sysctls.orig"
fi

if [[ -f "$STATE/created-dirs" ]]; then
  while IFS= read -r d; do rmdir "$d" 2>/dev/null || echo "nodes-down: $d (made by nodes-up.sh) is not empty; left alone" >&2; done <"$STATE/created-dirs"
  rm -f "$STATE/created-dirs"
fi

problems="$(leftovers | sed "s|state directory $STATE||")"
if [[ "$KEEP" != 1 ]]; then
  rm -rf "$STATE"
fi
if [[ -n "${problems// /}" ]]; then
  echo "nodes-down: still there: $problems" >&2
  exit 1
fi
