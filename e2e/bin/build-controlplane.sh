#!/usr/bin/env bash
# Build, once, the pinned Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler), etcd, helm and the test node agent floe-kubelet into the cache, and print the
# directory that holds them. Warm runs rebuild nothing: each binary carries a stamp of the
# inputs it was built from.
#
#   build-controlplane.sh           the tier-3 set
#   build-controlplane.sh --nodes   also the real-node tier's (tier 4): kubelet, kube-proxy, the
#                                   pod sandbox floe-pause, CoreDNS, the distribution registry,
#                                   rancher local-path-provisioner, kube-router (network policy)
set -euo pipefail
NODES=false
[[ "${1:-}" == "--nodes" ]] && NODES=true

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_VERSION=v1.33.13
CACHE="${FLOE_CACHE:-$HOME/.cache/floe}"
BIN="$CACHE/k8s-$K8S_VERSION/bin"
mkdir -p "$BIN"

log() { echo "build-controlplane: $*" >&2; }

# stamp MODULE_DIR EXTRA...: hash of the module's go.mod/go.sum (and any extra inputs)
stamp() {
  local dir=$1; shift
  cat "$dir/go.mod" "$dir/go.sum" "$@" 2>/dev/null | sha256sum | cut -c1-16
}

# build NAME MODULE_DIR PACKAGE STAMP [LDFLAGS]  (CGO_ENABLED from $CGO, default 1)
build() {
  local name=$1 dir=$2 pkg=$3 want=$4 ldflags=${5:-}
  if [[ -x "$BIN/$name" && -f "$BIN/.$name.stamp" && "$(cat "$BIN/.$name.stamp")" == "$want" ]]; then
    return 0
  fi
  log "building $name (cold builds take a while on 2 cores; later runs reuse it)"
  local t0=$SECONDS
  (cd "$dir" && CGO_ENABLED="${CGO:-1}" GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "$want" >"$BIN/.$name.stamp"
  log "built $name in $((SECONDS - t0))s"
}

VERSION_PKG=k8s.io/component-base/version
CLIENT_VERSION_PKG=k8s.io/client-go/pkg/version
LDFLAGS=""
for pkg in "$VERSION_PKG" "$CLIENT_VERSION_PKG"; do
  LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=33"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
LDFLAGS="-s -w$LDFLAGS"

CP="$E2E/controlplane"
CP_STAMP=$(stamp "$CP")
build kube-apiserver "$CP" k8s.io/kubernetes/cmd/kube-apiserver "$CP_STAMP" "$LDFLAGS"
build kube-controller-manager "$CP" k8s.io/kubernetes/cmd/kube-controller-manager "$CP_STAMP" "$LDFLAGS"
build kube-scheduler "$CP" k8s.io/kubernetes/cmd/kube-scheduler "$CP_STAMP" "$LDFLAGS"
build etcd "$E2E/etcd" go.etcd.io/etcd/server/v3 "$(stamp "$E2E/etcd")" "-s -w"
build helm "$E2E/helm" helm.sh/helm/v3/cmd/helm "$(stamp "$E2E/helm")" "-s -w -X helm.sh/helm/v3/internal/version.version=v3.18.6"
# The test harness's own tools: rebuilt whenever their sources change (seconds, cached).
build floe-kubelet "$CP" ./cmd/floe-kubelet "$(stamp "$CP" "$CP"/cmd/floe-kubelet/*.go)" "-s -w"
build floe-pki "$CP" ./cmd/floe-pki "$(stamp "$CP" "$CP"/cmd/floe-pki/*.go)" "-s -w"
if [[ "$NODES" == true ]]; then
  build kubelet "$CP" k8s.io/kubernetes/cmd/kubelet "$CP_STAMP" "$LDFLAGS"
  build kube-proxy "$CP" k8s.io/kubernetes/cmd/kube-proxy "$CP_STAMP" "$LDFLAGS"
  # static: it is the only file of the pause image
  CGO=0 build floe-pause "$CP" ./cmd/floe-pause "$(stamp "$CP" "$CP"/cmd/floe-pause/*.go)" "-s -w"
  A="$E2E/addons"
  CGO=0 build coredns "$A/coredns" github.com/coredns/coredns "$(stamp "$A/coredns")" "-s -w"
  build registry "$A/registry" github.com/distribution/distribution/v3/cmd/registry "$(stamp "$A/registry")" "-s -w"
  build local-path-provisioner "$A/local-path" github.com/rancher/local-path-provisioner "$(stamp "$A/local-path")" "-s -w"
  build kube-router "$A/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router "$(stamp "$A/kube-router")" "-s -w"
fi
echo "$BIN"
