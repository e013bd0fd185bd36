#!/usr/bin/env bash
# Tier 3 (DESIGN.md): tests against a real Kubernetes control plane on loopback. Builds or reuses
# the control plane, brings it up, runs the Go test suite in e2e/controlplane/harness, and always
# tears it down. On failure it prints the tail of every component's and pod's log and keeps the
# state directory with the full logs.
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E/.." && pwd)"
export FLOE_E2E_STATE="${FLOE_E2E_STATE:-/tmp/floe-e2e-$$}"
export FLOE_BIN_DIR="${FLOE_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/debug}"

for bin in floe-node floe-operator floe floe-gateway; do
  if [[ ! -x "$FLOE_BIN_DIR/$bin" ]]; then
    echo "run-k8s-tests: $FLOE_BIN_DIR/$bin is missing; build it first (cargo build -p floe-node -p floe-operator: floe-operator also builds the floe CLI) or set FLOE_BIN_DIR" >&2
    exit 1
  fi
done

status=0
# shellcheck disable=SC2317  # called from the EXIT trap
show_logs() {
  echo "run-k8s-tests: tests failed; last lines of every log:" >&2
  for f in "$FLOE_E2E_STATE"/logs/*.log "$FLOE_E2E_STATE"/pods/*/*.log; do
    [[ -f "$f" ]] || continue
    echo "===== $f" >&2
    tail -n 40 "$f" >&2
  done
}
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  if [[ $status -ne 0 ]]; then
    show_logs
    # stop everything but keep the state: every component's and pod's full log stays for
    # inspection
    "$E2E/bin/controlplane-down.sh" --keep
    echo "run-k8s-tests: full logs kept in $FLOE_E2E_STATE/logs and $FLOE_E2E_STATE/pods" >&2
  else
    "$E2E/bin/controlplane-down.sh"
  fi
}
trap cleanup EXIT

started=$SECONDS
"$E2E/bin/controlplane-up.sh" >/dev/null || { status=$?; exit $status; }
# shellcheck disable=SC1091
source "$FLOE_E2E_STATE/env"
echo "run-k8s-tests: control plane up in $((SECONDS - started))s" >&2
cd "$E2E/controlplane"
# the agent's own unit tests, then the suite
GOFLAGS=-mod=mod go test -count=1 ./cmd/floe-kubelet/ || status=$?
[[ $status -ne 0 ]] || GOFLAGS=-mod=mod go test -tags e2e -count=1 -v ./harness/ || status=$?
exit $status
