#!/usr/bin/env bash
# Builds both images of images/Dockerfile with podman (runc, cgroupfs) and runs the node image
# the way Kubernetes runs it: non-root, read-only root filesystem, data on a volume; checks that
# /healthz answers and that the images carry their OCI labels and no HEALTHCHECK; then a put and
# a get through a testnet of four node containers (floe testnet up --node-bin: a wrapper that
# runs each node as a non-root, read-only container).
#
# No registry is reachable here, so the base image is made locally: a minimal root filesystem
# with exactly the shared libraries the binaries need (ldd), /etc/passwd with the nonroot user
# 65532, /tmp, and the CA bundle, imported with `podman import` (users' CI passes a public BASE,
# e.g. gcr.io/distroless/cc-debian12:nonroot). The binaries are copied prebuilt
# (BINARIES=prebuilt): there is no Rust image to pull here either.
#
#   FLOE_BIN_DIR=target/debug e2e/images/test-images.sh
# Installs podman and runc from Debian's packages when missing (apt-get; root).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="${FLOE_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/release}"
TAG="${IMAGE_TAG:-e2e}"
VERSION="$(awk -F'"' '/^version = / {print $2; exit}' "$REPO/Cargo.toml")"

log() { echo "test-images: $*" >&2; }
die() { log "$*"; exit 1; }

for b in floe-node floe-operator floe; do
  [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b is missing: cargo build -p floe-node -p floe-operator (set FLOE_BIN_DIR to its directory)"
done

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  log "installing podman and runc (Debian packages)"
  command -v apt-get >/dev/null || die "podman and runc are missing and this is not a Debian-like system"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
fi
# crun refuses this host's hybrid cgroups; runc with cgroupfs works. Raising nofile/nproc above
# the caller's hard limits is refused, so ask for what the caller has.
podman() { command podman --runtime runc --cgroup-manager cgroupfs "$@"; }
ULIMITS=(--ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")

# ---- the local base image, cached by the libraries it holds ----
work="$(mktemp -d)"
cid=""
cleanup() {
  [[ -n "$cid" ]] && podman rm -f "$cid" >/dev/null 2>&1
  # the build's intermediate stages, so that repeated runs do not fill the disk
  podman image prune -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

libs="$(for b in floe-node floe-operator floe; do ldd "$BIN_DIR/$b"; done | grep -o '/[^ ]*' | sort -u)"
base_id="$( (echo "$libs"; for l in $libs; do sha256sum "$(readlink -f "$l")"; done) | sha256sum | cut -c1-12)"
BASE="localhost/floe-base:$base_id"
if ! podman image exists "$BASE"; then
  log "making base image $BASE"
  root="$work/rootfs"
  mkdir -p "$root/etc" "$root/tmp" "$root/home/nonroot" "$root/etc/ssl/certs"
  chmod 1777 "$root/tmp"
  echo 'root:x:0:0:root:/root:/sbin/nologin' >"$root/etc/passwd"
  echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >>"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  for l in $libs; do
    mkdir -p "$root$(dirname "$l")"
    cp -L "$l" "$root$l"
  done
  tar -C "$root" -c . | podman import --change "USER 65532:65532" - "$BASE" >/dev/null 2>&1
fi

# ---- build both targets ----
rm -rf "$REPO/images/prebuilt"
mkdir -p "$REPO/images/prebuilt"
cp "$BIN_DIR/floe-node" "$BIN_DIR/floe-operator" "$BIN_DIR/floe" "$BIN_DIR/floe-gateway" "$REPO/images/prebuilt/"
# debug builds carry hundreds of MB of debug info; the images do not need it
if command -v strip >/dev/null; then
  strip --strip-debug "$REPO/images/prebuilt/"*
fi
for target in floe-node floe-operator; do
  log "building $target:$TAG on $BASE"
  podman build "${ULIMITS[@]}" -f "$REPO/images/Dockerfile" --target "$target" \
    --build-arg BINARIES=prebuilt --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -t "localhost/$target:$TAG" "$REPO" >"$work/build-$target.log" 2>&1 \
    || { cat "$work/build-$target.log" >&2; die "podman build $target failed"; }
  user="$(podman image inspect --format '{{.Config.User}}' "localhost/$target:$TAG")"
  [[ "$user" == "65532:65532" ]] || die "$target runs as '$user', not 65532:65532"
  version="$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "localhost/$target:$TAG")"
  [[ "$version" == "$VERSION" ]] || die "$target: label org.opencontainers.image.version '$version', want $VERSION"
  source="$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.source"}}' "localhost/$target:$TAG")"
  [[ -n "$source" ]] || die "$target has no org.opencontainers.image.source label"
  hc="$(podman image inspect --format '{{.Config.Healthcheck}}' "localhost/$target:$TAG")"
  [[ "$hc" == "<nil>" || -z "$hc" ]] || die "$target has a HEALTHCHECK: $hc"
done
rm -rf "$REPO/images/prebuilt"

# ---- run the node image as Kubernetes does: non-root, read-only root, data on a volume ----
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port="$(free_port)"
http_port="$(free_port)"
mkdir -p "$work/data"
chown 65532:65532 "$work/data"
cid="$(podman run -d "${ULIMITS[@]}" --read-only --user 65532:65532 --network host \
  --cap-drop ALL --security-opt no-new-privileges -v "$work/data:/var/lib/floe" "localhost/floe-node:$TAG" \
  --data-dir=/var/lib/floe/data --key-file=/var/lib/floe/node.key \
  --grpc-addr="127.0.0.1:$grpc_port" --http-addr="127.0.0.1:$http_port")"
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then
    break
  fi
  [[ "$(podman inspect --format '{{.State.Running}}' "$cid")" == "true" ]] || { podman logs "$cid" >&2; die "the node container exited"; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null || { podman logs "$cid" >&2; die "/healthz did not answer within 20 s"; }
curl -fsS "http://127.0.0.1:$http_port/metrics" | grep -q '^floe_node_build_info' || die "/metrics lacks floe_node_build_info"
[[ -f "$work/data/node.key" ]] || die "the node wrote no key into its volume"
log "floe-node:$TAG runs non-root with a read-only root filesystem; /healthz answers"
podman rm -f "$cid" >/dev/null
cid=""

# ---- a put and a get against four containers of the node image ----
# `floe testnet up --node-bin` runs this wrapper in place of floe-node: each node is a container
# (non-root, read-only root, its node directory and the admin token mounted at the same paths).
tn="$work/testnet"
mkdir -p "$tn"
wrapper="$work/floe-node-container"
cat >"$wrapper" <<WRAPPER
#!/usr/bin/env bash
set -euo pipefail
data=""
prev=""
for a in "\$@"; do
  [[ "\$prev" == --data-dir ]] && data="\$a"
  prev="\$a"
done
node_dir="\$(dirname "\$data")"
mkdir -p "\$data"
chown -R 65532:65532 "\$node_dir"
chmod 0644 "$tn/admin.token" 2>/dev/null || true
exec podman --runtime runc --cgroup-manager cgroupfs run --rm --read-only --user 65532:65532 --network host \\
  --cap-drop ALL --security-opt no-new-privileges ${ULIMITS[*]} \\
  -v "\$node_dir:\$node_dir" -v "$tn/admin.token:$tn/admin.token:ro" "localhost/floe-node:$TAG" "\$@"
WRAPPER
chmod +x "$wrapper"
stop_testnet() { "$BIN_DIR/floe" --testnet-dir "$tn" testnet down >/dev/null 2>&1 || true; }
trap 'stop_testnet; cleanup' EXIT
"$BIN_DIR/floe" --testnet-dir "$tn" testnet up --nodes 4 --shards 10 --node-bin "$wrapper" >&2 \
  || { cat "$tn/supervisor.log" >&2 || true; die "floe testnet up with node containers failed"; }
head -c 1000000 /dev/urandom >"$work/blob"
blob_id="$("$BIN_DIR/floe" --testnet-dir "$tn" --json put "$work/blob" | sed -n 's/.*"blob_id": *"\([^"]*\)".*/\1/p')"
[[ -n "$blob_id" ]] || die "floe put against the node containers printed no blob ID"
"$BIN_DIR/floe" --testnet-dir "$tn" get "$blob_id" -o "$work/back" >/dev/null
cmp "$work/blob" "$work/back" || die "the blob read back from the node containers differs"
log "put and get of a 1 MB blob through four floe-node:$TAG containers"
stop_testnet
podman run --rm "${ULIMITS[@]}" --read-only --network host "localhost/floe-operator:$TAG" --version
podman run --rm "${ULIMITS[@]}" --read-only --network host --entrypoint /usr/local/bin/floe "localhost/floe-operator:$TAG" --version
log "ok: localhost/floe-node:$TAG and localhost/floe-operator:$TAG"
