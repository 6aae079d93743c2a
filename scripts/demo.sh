#!/usr/bin/env bash
# Sets up and runs Zori locally with a demo tenant: installs and starts the backends, builds the
# binaries, starts zori-ingest (:1324), zori-api (:1323) and a demo shop (:8080), prints the URLs.
# Idempotent: a second run restarts the demo. `scripts/demo.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
run=.run
mkdir -p "$run"

stop() {
  for name in demo-shop zori-api zori-ingest; do
    if [ -f "$run/$name.pid" ]; then
      kill "$(cat "$run/$name.pid")" 2>/dev/null || true
      rm -f "$run/$name.pid"
    fi
  done
}
stop
if [ "${1:-}" = stop ]; then echo "demo stopped"; exit 0; fi

scripts/services.sh
echo "==> building zori-ingest and zori-api"
cargo build --bins -p zori-ingest -p zori-api

export ZORI_TENANT_ID=demo
export ZORI_PUBLISHABLE_KEY=zori_pt_demo_0123456789abcdef
export ZORI_API_TOKEN=zori_at_demo_0123456789abcdef0123
export ZORI_EMAIL_SALT=demo-salt-0123456789
export ZORI_STRIPE_WEBHOOK_SECRET=whsec_demo_0123456789abcdef
export ZORI_NATS_URL=nats://127.0.0.1:4222
export ZORI_REDIS_URL=redis://127.0.0.1:6379
export ZORI_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres
export ZORI_CLICKHOUSE_URL=http://127.0.0.1:8123

start() {
  local name=$1; shift
  nohup "$@" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

wait_ready() {
  for _ in $(seq 1 120); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "error: $2 did not become ready; see $run/$2.log" >&2
  tail -n 20 "$run/$2.log" >&2
  exit 1
}

start zori-ingest target/debug/zori-ingest --listen 127.0.0.1:1324 \
  --allowed-origins http://localhost:8080,http://127.0.0.1:8080 --create-stream
wait_ready http://127.0.0.1:1324/readyz zori-ingest
start zori-api target/debug/zori-api --listen 127.0.0.1:1323 \
  --stripe-webhook-secrets "$ZORI_STRIPE_WEBHOOK_SECRET" --create-schema --create-stream
wait_ready http://127.0.0.1:1323/readyz zori-api
ZORI_DEMO_PORT=8080 start demo-shop python3 examples/demo-shop/server.py
wait_ready http://127.0.0.1:8080/ demo-shop

cat <<INFO

Zori demo is running (logs in $run/):
  demo shop       http://localhost:8080/?utm_source=twitter&utm_medium=social&utm_campaign=launch
  tracker         http://localhost:1324/zori.js
  dashboard       http://localhost:1323/  (sign in with the API token $ZORI_API_TOKEN)
  reports API     curl -H "Authorization: Bearer $ZORI_API_TOKEN" "http://localhost:1323/api/v1/attribution?dimension=source"
  metrics         http://localhost:1324/metrics  http://localhost:1323/metrics

Open the shop, buy a plan, then see on the dashboard (or ask the reports API) which source
brought the money.
The same from a terminal, step by step: docs/site-owner-guide.md ("Try it on the demo shop"), with
  export SHOP=http://localhost:8080 ZORI_INGEST_URL=http://localhost:1324 ZORI_API_URL=http://localhost:1323
  export ZORI_PUBLISHABLE_KEY=$ZORI_PUBLISHABLE_KEY ZORI_API_TOKEN=$ZORI_API_TOKEN
Stop with: scripts/demo.sh stop
INFO
