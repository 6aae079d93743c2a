#!/usr/bin/env bash
# Installs what Zori's demo and tests need on a Debian machine and starts every backend that is
# not already answering: PostgreSQL, Redis, NATS with JetStream, ClickHouse (Debian package).
# Idempotent: run it as often as you like.
set -euo pipefail

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 120); do
    port_open "$port" && return 0
    sleep 0.5
  done
  echo "error: $name did not start listening on 127.0.0.1:$port; see its log" >&2
  exit 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install clickhouse-server clickhouse-client postgresql redis-server nats-server curl
# ZooKeeper (and its Java runtime) for the test-owned ClickHouse cluster of
# tests/tests/clickhouse_cluster.rs (started by the test on its own ports; no service here).
apt_install zookeeper

if ! port_open 5432; then
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  wait_port 5432 PostgreSQL
fi

if ! port_open 6379; then
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 Redis
fi

if ! port_open 4222; then
  log "starting NATS with JetStream"
  as_root mkdir -p /var/lib/nats-server
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 NATS
fi

if ! port_open 8123; then
  log "starting ClickHouse"
  as_root mkdir -p /var/lib/clickhouse /var/log/clickhouse-server
  as_root chown -R clickhouse:clickhouse /var/lib/clickhouse /var/log/clickhouse-server
  as_root su -s /bin/sh clickhouse -c \
    "clickhouse-server --daemon --config-file=/etc/clickhouse-server/config.xml --pid-file=/tmp/zori-clickhouse.pid"
  wait_port 8123 ClickHouse
fi
for _ in $(seq 1 60); do
  [ "$(curl -fsS 'http://127.0.0.1:8123/?query=SELECT%201' 2>/dev/null)" = 1 ] && break
  sleep 0.5
done

log "PostgreSQL :5432, Redis :6379, NATS :4222, ClickHouse :8123 are up"
