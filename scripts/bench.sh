#!/usr/bin/env bash
# Reproduces the figures in docs/benchmarks.md: release builds against the local services.
# Usage: scripts/bench.sh [--size 1M|10M|<N>] [ingest|consumer|reports|soak ...]
#   (default: ingest consumer reports; the soak runs only when named: about 12 minutes,
#   ZORI_SOAK_SECONDS sets its length, 600 by default)
#   --size  events of the reports run (default 1M; visitors are a tenth, payments a hundredth).
# Each run's table is printed and recorded in target/bench/<benchmark>[-<size>].md.
set -euo pipefail
cd "$(dirname "$0")/.."

size=1M
benches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size)
      [ $# -ge 2 ] || { echo "error: --size needs a value such as 1M or 10M" >&2; exit 2; }
      size="$2"
      shift 2
      ;;
    --size=*)
      size="${1#--size=}"
      shift
      ;;
    ingest|consumer|reports|soak)
      benches+=("$1")
      shift
      ;;
    *)
      echo "error: unknown argument $1; usage: scripts/bench.sh [--size 1M|10M] [ingest|consumer|reports|soak ...]" >&2
      exit 2
      ;;
  esac
done
[ ${#benches[@]} -gt 0 ] || benches=(ingest consumer reports)

scripts/services.sh
cargo build --release --workspace --bins
for what in "${benches[@]}"; do
  echo "## $what"
  if [ "$what" = reports ]; then
    target/release/zori-bench reports --size "$size"
  else
    target/release/zori-bench "$what"
  fi
done
