#!/usr/bin/env bash
# Stop the test control plane started by controlplane-up.sh and remove its state
# (kept with --keep or FLOE_E2E_KEEP=1, e.g. to read the logs of a failed run).
set -uo pipefail

STATE="${FLOE_E2E_STATE:-/tmp/floe-e2e}"
KEEP="${FLOE_E2E_KEEP:-0}"
[[ "${1:-}" == "--keep" ]] && KEEP=1
[[ -d "$STATE/pids" ]] || exit 0

# the agent first, so that it stops its pods' processes; etcd last
for name in floe-kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
  pidfile="$STATE/pids/$name.pid"
  [[ -f "$pidfile" ]] || continue
  pid=$(cat "$pidfile")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
done
if [[ "$KEEP" != 1 ]]; then
  rm -rf "$STATE"
fi
