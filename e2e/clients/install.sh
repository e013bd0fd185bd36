#!/usr/bin/env bash
# The HTTP clients nobody here wrote, for the gateway's client tests (operator/tests/
# gateway_clients.rs): Python `requests` in a virtualenv, `playwright-core` from npm, and Debian's
# Chromium. Installed once into ~/.cache/floe/clients (Chromium through apt-get, as root) and
# reused; concurrent callers wait for each other. Prints the three paths, one per line:
#   PYTHON=<python of the venv>  NODE_PATH=<node_modules>  CHROMIUM=<browser>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${FLOE_CLIENTS_CACHE:-$HOME/.cache/floe/clients}"
mkdir -p "$cache"
log() { echo "clients/install: $*" >&2; }

exec 9>"$cache/.lock"
flock 9

venv="$cache/venv"
if ! "$venv/bin/python" -c 'import requests' 2>/dev/null; then
  log "creating $venv with $(tr '\n' ' ' < "$here/requirements.txt")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi

npm_dir="$cache/npm"
if [ ! -f "$npm_dir/node_modules/playwright-core/package.json" ] ||
   ! cmp -s "$here/package.json" "$npm_dir/package.json"; then
  log "installing playwright-core into $npm_dir"
  mkdir -p "$npm_dir"
  cp "$here/package.json" "$npm_dir/package.json"
  # playwright-core never downloads a browser; the tests drive Debian's Chromium
  (cd "$npm_dir" && npm install --no-audit --no-fund --silent >&2)
fi

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  command -v apt-get >/dev/null || { log "chromium is missing and this is not a Debian-like system"; exit 1; }
  [ "$(id -u)" = 0 ] || { log "chromium is missing: apt-get install chromium (as root), or set CHROMIUM"; exit 1; }
  log "installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "PYTHON=$venv/bin/python"
echo "NODE_PATH=$npm_dir/node_modules"
echo "CHROMIUM=$chromium"
