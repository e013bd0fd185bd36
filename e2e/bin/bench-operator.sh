#!/usr/bin/env bash
# Operator benchmark on the tier-3 control plane (DESIGN.md "Performance targets", issue 10
# "Targets"): floe-operator installed from manifests/ as a pod, then
#   - the time from `kubectl apply` of an active 7-node cluster to `Available` (committee formed);
#   - its RSS with 1, 10 and 50 StorageClusters (the active 7-node cluster, the rest paused),
#     each measured once every cluster's status records its current generation;
#   - reconcile latency of the settled active cluster (p50/p99 over N reconciles triggered by
#     annotating it), and again over N/4 reconciles during a challenge round with one member
#     SIGSTOPped (challenge timeout 30 s), from the operator's own histogram
#     floe_operator_reconcile_duration_seconds (interpolated within buckets, as Prometheus'
#     histogram_quantile does).
# Needs a running control plane: e2e/bin/controlplane-up.sh && source $FLOE_E2E_STATE/env.
# Usage: e2e/bin/bench-operator.sh [reconciles, default 200]
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$(cd "$E2E/.." && pwd)"
N_RECONCILES="${1:-200}"
NS=floe-bench

log() { echo "bench-operator: $*" >&2; }

# wait_until DESC TIMEOUT_S CMD...: poll CMD until it succeeds
wait_until() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      log "timed out waiting for $what"
      exit 1
    fi
    sleep 0.3
  done
}

kubectl apply -f "$REPO/crds/" >/dev/null
kubectl wait --for condition=Established crd/storageclusters.floe.dev --timeout=60s >/dev/null
kubectl apply -f "$REPO/manifests/" >/dev/null
wait_until "the operator pod" 90 kubectl wait pod -n floe-system -l app.kubernetes.io/name=floe-operator --for condition=Ready --timeout=1s
OP_IP=$(kubectl get pod -n floe-system -l app.kubernetes.io/name=floe-operator -o jsonpath='{.items[0].status.podIP}')
OP_PID=$(pgrep -f -- "floe-operator --http-addr=$OP_IP:8080" | head -n1)
[[ -n "$OP_PID" ]] || { log "no floe-operator process for $OP_IP"; exit 1; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$OP_PID/status"; }
# the heap and the mapped binary apart: a debug binary's code pages are most of its RSS
rss_split() { awk '/^Anonymous:/ {a = $2} /^Rss:/ {r = $2} END {printf "anonymous %d KiB, file-backed %d KiB", a, r - a}' "/proc/$OP_PID/smaps_rollup"; }
metrics() { curl -sf "http://$OP_IP:8080/metrics"; }

kubectl create namespace "$NS" >/dev/null 2>&1 || true
trap 'kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true' EXIT

# every StorageCluster in $NS has status.observedGeneration == metadata.generation
all_observed() {
  local want=$1
  kubectl get fsc -n "$NS" -o jsonpath='{range .items[*]}{.metadata.generation} {.status.observedGeneration}{"\n"}{end}' |
    awk -v want="$want" '$1 == $2 {ok++} END {exit !(ok == want)}'
}

paused_cluster() {
  printf 'apiVersion: floe.dev/v1alpha1\nkind: StorageCluster\nmetadata: {name: %s}\nspec: {nodes: 4, shards: 10, paused: true}\n' "$1"
}

log "RSS at start (no StorageCluster): $(rss_kib) KiB ($(rss_split))"
# the active cluster: 7 nodes, long epochs (settled while measured)
started=$(date +%s.%N)
sed -e 's/^  nodes: 4/  nodes: 7/' -e 's/^  epochDuration: 30s/  epochDuration: 1h/' "$REPO/manifests/examples/testnet.yaml" |
  kubectl apply -n "$NS" -f - >/dev/null
available() { [[ $(kubectl get fsc testnet -n "$NS" -o jsonpath='{.status.phase}') == Available ]]; }
wait_until "the 7-node cluster Available" 180 available
to_available=$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN {printf "%.1f", a - b}')
log "apply → Available: ${to_available} s"
have=1
declare -A RSS
for n in 1 10 50; do
  while ((have < n)); do
    paused_cluster "paused-$have" | kubectl apply -n "$NS" -f - >/dev/null
    have=$((have + 1))
  done
  wait_until "$n clusters observed" 120 all_observed "$n"
  RSS[$n]=$(rss_kib)
  log "$n StorageClusters: RSS ${RSS[$n]} KiB ($(rss_split))"
done

# reconcile latency of the active cluster
count() { metrics | awk -v m="floe_operator_reconcile_duration_seconds_count{cluster=\"$NS/testnet\"}" '$1 == m {print $2}'; }
buckets() { metrics | awk -v p="floe_operator_reconcile_duration_seconds_bucket{cluster=\"$NS/testnet\",le=" 'index($1, p) == 1 {le = substr($1, length(p) + 2); sub(/"}$/, "", le); print le, $2}'; }
# measure_reconciles TAG N: N reconciles of the active cluster, each triggered by an annotation
# and counted before the next; sets P50 and P99 (ms) from the histogram's change
measure_reconciles() {
  local n=$2 before_count want i
  before_count=$(count)
  buckets >/tmp/bench-operator-before.$$
  for i in $(seq 1 "$n"); do
    kubectl annotate fsc testnet -n "$NS" --overwrite "bench.floe.dev/touch=$1-$i" >/dev/null
    # one reconcile per annotation: wait for it before the next
    want=$((before_count + i))
    wait_until "reconcile $i" 30 bash -c "[[ \$(curl -sf http://$OP_IP:8080/metrics | awk '\$1 == \"floe_operator_reconcile_duration_seconds_count{cluster=\\\"$NS/testnet\\\"}\" {print \$2}') -ge $want ]]"
  done
  buckets >/tmp/bench-operator-after.$$
  read -r P50 P99 < <(paste /tmp/bench-operator-before.$$ /tmp/bench-operator-after.$$ | awk '
    { le[NR] = $1; c[NR] = $4 - $2 } END {
      total = c[NR]
      for (q = 1; q <= 2; q++) {
        target = (q == 1 ? 0.5 : 0.99) * total; prev_le = 0; prev_c = 0
        for (i = 1; i <= NR; i++) {
          if (c[i] >= target) {
            if (le[i] == "+Inf") { v = prev_le } else { v = prev_le + (le[i] - prev_le) * (target - prev_c) / (c[i] - prev_c) }
            out = out sprintf("%.1f ", v * 1000); break
          }
          prev_le = le[i]; prev_c = c[i]
        }
      }
      print out
    }')
  rm -f /tmp/bench-operator-before.$$ /tmp/bench-operator-after.$$
}
measure_reconciles settled "$N_RECONCILES"
p50=$P50 p99=$P99

# the same during a challenge round with one member stopped (SIGSTOP: it accepts connections and
# never answers, the worst case for the round): challenges time out after 30 s, the forced epoch
# change runs the round first; reconciles must not wait for it
kubectl patch fsc testnet -n "$NS" --type merge -p '{"spec":{"challenges":{"timeout":"30s"}}}' >/dev/null
pv=$(kubectl get pvc data-testnet-6 -n "$NS" -o jsonpath='{.spec.volumeName}')
pv_dir=$(kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
STOPPED=$(pgrep -f -- "floe-node.*$pv_dir/" | head -n1)
[[ -n "$STOPPED" ]] || { log "no floe-node process for testnet-6 ($pv_dir)"; exit 1; }
trap 'kill -CONT "$STOPPED" 2>/dev/null || true; kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true' EXIT
kill -STOP "$STOPPED"
kubectl annotate fsc testnet -n "$NS" --overwrite "floe.dev/next-epoch=bench-$(date +%s)" >/dev/null
sleep 4 # the member's observation times out (3 s) and the round starts
started_round=$SECONDS
measure_reconciles stalled $((N_RECONCILES / 4))
stalled_secs=$((SECONDS - started_round))
kill -CONT "$STOPPED"
sp50=$P50 sp99=$P99

echo "| StorageClusters (1 active, rest paused) | operator RSS |"
echo "|---|---|"
for n in 1 10 50; do echo "| $n | $((RSS[$n] / 1024)) MiB (${RSS[$n]} KiB) |"; done
echo
echo "| settled 7-node cluster, $N_RECONCILES reconciles | p50 | p99 |"
echo "|---|---|---|"
echo "| reconcile, settled (objects, status; the brain runs in the cluster's own task) | ${p50} ms | ${p99} ms |"
echo "| reconcile during a challenge round with testnet-6 SIGSTOPped ($((N_RECONCILES / 4)) reconciles in ${stalled_secs} s) | ${sp50} ms | ${sp99} ms |"
echo
echo "kubectl apply of a 7-node cluster → Available: ${to_available} s"
