#!/usr/bin/env bash
# Runs shellcheck over every shell script of the repository (tracked *.sh files and tracked files
# with a sh/bash shebang). Installs Debian's shellcheck package when it is missing.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
if ! command -v shellcheck >/dev/null; then
  command -v apt-get >/dev/null || { echo "shellcheck-all: shellcheck is missing (install it)" >&2; exit 1; }
  echo "shellcheck-all: installing shellcheck (Debian package)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi
scripts=()
while IFS= read -r -d '' f; do
  if [[ "$f" == *.sh ]] || head -n1 "$f" | grep -qE '^#!.*\b(ba)?sh\b'; then
    scripts+=("$f")
  fi
done < <(git ls-files -z --cached --others --exclude-standard)
if [[ ${#scripts[@]} -eq 0 ]]; then
  echo "shellcheck-all: no shell scripts found" >&2
  exit 1
fi
shellcheck --severity=style --external-sources "${scripts[@]}"
echo "shellcheck-all: ${#scripts[@]} scripts clean: ${scripts[*]}" >&2
