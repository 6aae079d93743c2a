#!/usr/bin/env bash
# Installs the Python tools the tests use (kubernetes-validate, helm-sdkpy and
# openapi-spec-validator, pinned in
# scripts/python-requirements.txt) into .venv at the repository root. Idempotent and quiet:
# prints nothing on success, and does nothing when .venv already has exactly these pins.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=scripts/python-requirements.txt
venv=.venv
stamp=$venv/.zori-requirements

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { python3 -m venv "$venv" &&
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
    --ignore-requires-python -r "$requirements"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: failed to install the Python tools into $venv (see above)" >&2
  exit 1
fi
cp "$requirements" "$stamp"
