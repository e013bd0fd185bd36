#!/usr/bin/env bash
# The real-node tier's system images, made from local files (no public registry is reachable
# here) and pushed to the tier's registry:
#   pause:3.10        floe-pause (the pod sandbox), static
#   coredns:v1.12.0   CoreDNS, static, from its Go module
#   busybox:floe      Debian's busybox-static (the provisioner's helper pods: mkdir, rm)
#   kubectl:v1.33.4   the kubectl of PATH (the chart's cleanup hook runs kubectl)
# An image is rebuilt only when its files changed (the tag localhost/floe4/NAME:HASH).
#
#   system-images.sh BIN_DIR REGISTRY
set -euo pipefail

BIN=$1 REGISTRY=$2
podman() { command podman --runtime runc --cgroup-manager cgroupfs "$@"; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# image NAME:TAG ENTRYPOINT_JSON FILE=PATH_IN_IMAGE...
image() {
  local ref=$1 entry=$2; shift 2
  local hash root="$work/${ref%%:*}" spec
  hash="$( (echo "$ref $entry"; for spec in "$@"; do sha256sum "${spec%%=*}"; echo "${spec#*=}"; done) | sha256sum | cut -c1-12)"
  local local_ref="localhost/floe4/${ref%%:*}:$hash"
  if ! podman image exists "$local_ref"; then
    mkdir -p "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    echo 'root:x:0:0:root:/root:/sbin/nologin' >"$root/etc/passwd"
    echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >>"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    for spec in "$@"; do
      mkdir -p "$root$(dirname "${spec#*=}")"
      cp -L "${spec%%=*}" "$root${spec#*=}"
    done
    tar -C "$root" -c . | podman import --change "ENTRYPOINT $entry" - "$local_ref" >/dev/null
  fi
  podman push --tls-verify=false "$local_ref" "docker://$REGISTRY/$ref" >/dev/null
  echo "system-images: $REGISTRY/$ref ($local_ref)"
}

image pause:3.10 '["/pause"]' "$BIN/floe-pause=/pause"
image coredns:v1.12.0 '["/coredns"]' "$BIN/coredns=/coredns"
image busybox:floe '["/bin/sh"]' /bin/busybox=/bin/busybox /bin/busybox=/bin/sh /bin/busybox=/bin/mkdir /bin/busybox=/bin/rm /bin/busybox=/bin/chmod /bin/busybox=/bin/ls
kubectl_bin="$(command -v kubectl)"
if ldd "$kubectl_bin" >/dev/null 2>&1; then
  echo "system-images: $kubectl_bin is dynamically linked; the kubectl image needs a static one" >&2
  exit 1
fi
image kubectl:v1.33.4 '["/bin/kubectl"]' "$kubectl_bin=/bin/kubectl" /bin/busybox=/bin/sh
