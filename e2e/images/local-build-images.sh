#!/usr/bin/env bash
# Makes, from this machine's own files, the two images images/Dockerfile takes as build
# arguments where no public registry can be pulled from, and prints the `make images` arguments
# that use them (so that the Dockerfile's Rust builder stage really compiles Floe):
#   RUST_IMAGE  localhost/floe-rust:HASH   the rustup toolchain this machine builds with (cargo,
#               rustc, the std of x86_64-unknown-linux-gnu; no docs) on the Debian files gcc,
#               libc6-dev, dash and coreutils need (dpkg's lists of the installed packages and
#               their dependencies), the CA bundle for crates.io
#   BASE        localhost/floe-runtime-base:HASH   glibc's runtime libraries, the CA bundle,
#               /etc/passwd with nonroot (65532), /tmp: what distroless cc gives
# Each is made once per content (HASH), then reused. The cargo registry and target directory of
# the builder stage are podman build volumes under ${FLOE_CACHE:-~/.cache/floe}/image-cargo, so
# a warm build recompiles only what changed.
#
#   args="$(e2e/images/local-build-images.sh)" && make images DOCKER=podman IMAGE_BUILD_ARGS="$args"
set -euo pipefail

CACHE="${FLOE_CACHE:-$HOME/.cache/floe}"
TOOLCHAIN="${FLOE_RUST_TOOLCHAIN:-$(rustc --print sysroot)}"
log() { echo "local-build-images: $*" >&2; }
podman() { command podman --runtime runc --cgroup-manager cgroupfs "$@"; }
# raising nofile/nproc above the caller's hard limits is refused here
ULIMITS="--ulimit nofile=$(ulimit -Sn):$(ulimit -Hn) --ulimit nproc=4096:4096"
command -v podman >/dev/null || { log "podman is missing (apt-get install podman runc)"; exit 1; }
[[ -x "$TOOLCHAIN/bin/cargo" ]] || { log "no cargo in $TOOLCHAIN (set FLOE_RUST_TOOLCHAIN to a rustup toolchain directory)"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# files of the installed Debian packages NAMES... and of everything they depend on (installed)
deb_files() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" 2>/dev/null | grep -v '^ ' | grep -v '^<' | sort -u |
    while read -r p; do dpkg-query -W -f='${db:Status-Status} ${Package}\n' "$p" 2>/dev/null; done |
    awk '$1 == "installed" {print $2}' | sort -u |
    xargs dpkg -L 2>/dev/null | sort -u |
    while read -r f; do if [[ -f "$f" || -L "$f" ]]; then echo "$f"; fi; done
}

# ---- RUST_IMAGE ----
deb_files dash coreutils gcc-12 libc6-dev libgcc-12-dev binutils >"$work/rust-files"
rust_hash="$( (sha256sum "$TOOLCHAIN/bin/rustc" "$TOOLCHAIN/bin/cargo"; dpkg-query -W gcc-12 libc6-dev binutils; cat "$work/rust-files") | sha256sum | cut -c1-12)"
RUST_IMAGE="localhost/floe-rust:$rust_hash"
if ! podman image exists "$RUST_IMAGE"; then
  log "making $RUST_IMAGE from $TOOLCHAIN and $(wc -l <"$work/rust-files") Debian files"
  root="$work/rust"
  mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo" "$root/tmp" "$root/etc/ssl/certs" "$root/usr/bin"
  chmod 1777 "$root/tmp"
  # merged /usr: /bin, /lib, /lib64, /sbin are links into /usr on Debian 12
  for d in bin lib lib64 sbin; do
    mkdir -p "$root/usr/$d"
    if [[ -L "/$d" ]]; then ln -s "usr/$d" "$root/$d"; fi
  done
  tar -C / -c --files-from "$work/rust-files" 2>/dev/null | tar -C "$root" -x 2>/dev/null || true
  ln -sf gcc-12 "$root/usr/bin/gcc"
  ln -sf gcc-12 "$root/usr/bin/cc"
  [[ -e "$root/bin/sh" ]] || ln -s dash "$root/usr/bin/sh"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  tar -C "$TOOLCHAIN" -c bin lib | tar -C "$root/usr/local/rust" -x
  # only the host target's standard library
  find "$root/usr/local/rust/lib/rustlib" -mindepth 1 -maxdepth 1 ! -name x86_64-unknown-linux-gnu \
    ! -name '*.txt' ! -name components ! -name 'rust-installer-version' -exec rm -rf {} +
  tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV CARGO_NET_GIT_FETCH_WITH_CLI=false' \
    --change 'WORKDIR /' - "$RUST_IMAGE" >/dev/null
fi
# shellcheck disable=SC2086  # two options
podman run --rm $ULIMITS "$RUST_IMAGE" sh -c 'cargo --version && cc --version | head -n1' >&2 \
  || { log "$RUST_IMAGE cannot run cargo or cc"; exit 1; }

# ---- BASE ----
libs=(/lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/{libc.so.6,libm.so.6,libgcc_s.so.1,libdl.so.2,librt.so.1,libpthread.so.0})
base_hash="$( (for l in "${libs[@]}"; do sha256sum "$(readlink -f "$l")"; done) | sha256sum | cut -c1-12)"
BASE="localhost/floe-runtime-base:$base_hash"
if ! podman image exists "$BASE"; then
  log "making $BASE"
  root="$work/base"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  echo 'root:x:0:0:root:/root:/sbin/nologin' >"$root/etc/passwd"
  echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >>"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  for l in "${libs[@]}"; do
    mkdir -p "$root$(dirname "$l")"
    cp -L "$l" "$root$l"
  done
  tar -C "$root" -c . | podman import --change "USER 65532:65532" - "$BASE" >/dev/null
fi

mkdir -p "$CACHE/image-cargo/registry" "$CACHE/image-cargo/target"
echo "--build-arg RUST_IMAGE=$RUST_IMAGE --build-arg BASE=$BASE $ULIMITS" \
  "-v $CACHE/image-cargo/registry:/usr/local/cargo/registry -v $CACHE/image-cargo/target:/src/target"
