#!/usr/bin/env bash
# Reproduces the figures in docs/benchmarks.md: release builds against the local services.
# Usage: scripts/bench.sh [ingest|consumer|reports ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo build --release --workspace --bins
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(ingest consumer reports)
for what in "${benches[@]}"; do
  echo "## $what"
  target/release/zori-bench "$what"
done
