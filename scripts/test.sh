#!/usr/bin/env bash
# Runs every Zori test against real services, installing and starting what they need first.
# Usage: scripts/test.sh [extra nextest/cargo-test filter arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
scripts/browsers.sh
scripts/tracker.sh
if [ -x scripts/python-tools.sh ]; then scripts/python-tools.sh; fi

echo "==> building the binaries the end-to-end tests start"
cargo build --workspace --bins

echo "==> running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
