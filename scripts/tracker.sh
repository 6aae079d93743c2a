#!/usr/bin/env bash
# Installs the browser tracker's pinned build toolchain (terser, from
# dataplane/tracker/package-lock.json) so that the tests can check the committed
# dataplane/tracker/zori.js is what src/zori.js builds to. Idempotent.
# After editing src/zori.js: (cd dataplane/tracker && npm run build)
set -euo pipefail
cd "$(dirname "$0")/../dataplane/tracker"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> installing Node.js and npm from Debian"
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# npm keeps a copy of the lock it installed from; reinstall only when the lock changed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing the tracker build toolchain (npm ci)"
  npm ci --no-audit --no-fund --prefer-offline
fi
