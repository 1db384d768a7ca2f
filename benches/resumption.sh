#!/usr/bin/env bash
# TLS session resumption upstream: what a new proxy connection costs the
# server, side by side in one run. One TLS redis-server (RSA-2048
# certificate), and `redis-benchmark -k 0` (a new connection per GET) on
# each path, in interleaved rounds so noise hits every path alike:
#   direct  redis-benchmark --tls straight to the server: hiredis+OpenSSL
#           never resumes, so every handshake is a full one (the reference)
#   before  optional: BEFORE=<proxy binary> (e.g. one built from main), for a
#           before/after comparison
#   proxy   this tree's release proxy
# Per run: the server's CPU (INFO cpu, user + sys) per connection it
# accepted, the proxy's handshakes by kind (upstream_tls_handshakes_total;
# "-" where the binary has no such metric), and req/s. The table shows each
# path's median over the rounds.
#
#   benches/resumption.sh
#   BEFORE=/tmp/proxy-main ROUNDS=5 N=4000 CLIENTS="1 50" benches/resumption.sh
#
# Knobs: ROUNDS [3]  N [3000 connections per run]  CLIENTS ["1 50"]
#        BEFORE [unset]  PIN [1] (server on the last CPU; benchmark and
#        proxies on CPU 0)  BASE_PORT [17200]
# Needs what scripts/deps.sh installs (redis-server, redis-tools, openssl),
# and curl for the admin endpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

ROUNDS=${ROUNDS:-3}
N=${N:-3000}
CLIENTS=${CLIENTS:-"1 50"}
PIN=${PIN:-1}
BASE_PORT=${BASE_PORT:-17200}
BEFORE=${BEFORE:-}

. scripts/lib.sh

pin_cpus
release_proxy

mint_cert server

export BENCH_PASSWORD
BENCH_PASSWORD=$(openssl rand -hex 16)
port=$BASE_PORT
"${server_pin[@]}" redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 \
  --tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key" \
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no \
  --save "" --appendonly no --logfile "$work/redis.log" --maxclients 10000 \
  --user default off --user app on ">$BENCH_PASSWORD" '~*' '&*' '+@all' &
pids+=($!)
cli() {
  redis-cli --tls --cacert "$work/ca.pem" -p "$port" --user app --pass "$BENCH_PASSWORD" \
    --no-auth-warning "$@"
}
for _ in $(seq 100); do cli PING >/dev/null 2>&1 && break; sleep 0.1; done

# start_proxy BINARY PORT ADMIN_PORT: a proxy in front of the server, the
# warm pool off (with it, and its reuse, a new client opens no connection).
start_proxy() {
  "${client_pin[@]}" "$1" --upstream "localhost:$port" --tls-ca-file "$work/ca.pem" \
    --password-user app --password-env BENCH_PASSWORD --pool-size 0 \
    --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" --log-level warn &
  pids+=($!)
  local status=
  for _ in $(seq 200); do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$3/startup" || true)
    [ "$status" = 200 ] && return
    sleep 0.1
  done
  echo "the proxy $1 did not start" >&2
  exit 1
}
paths="direct proxy"
start_proxy "$bin" $((BASE_PORT + 1)) $((BASE_PORT + 2))
if [ -n "$BEFORE" ]; then
  paths="direct before proxy"
  start_proxy "$BEFORE" $((BASE_PORT + 3)) $((BASE_PORT + 4))
fi
declare -A proxy_port=([proxy]=$((BASE_PORT + 1)) [before]=$((BASE_PORT + 3)))
declare -A admin_port=([proxy]=$((BASE_PORT + 2)) [before]=$((BASE_PORT + 4)))

# "<cpu seconds> <connections received>" of the server.
server_counters() {
  cli INFO everything | tr -d '\r' | awk -F: '
    $1 == "used_cpu_sys" || $1 == "used_cpu_user" { cpu += $2 }
    $1 == "total_connections_received" { conns = $2 }
    END { printf "%.6f %d\n", cpu, conns }'
}
# handshakes PATH: "<full> <resumed>" upstream handshakes of its proxy so
# far; "0 0" for direct, or a proxy without the metric.
handshakes() {
  [ "$1" = direct ] && { echo 0 0; return; }
  curl -s "http://127.0.0.1:${admin_port[$1]}/metrics" | awk '
    /^elasticache_auth_proxy_upstream_tls_handshakes_total\{kind="full"\}/ { f = $2 }
    /^elasticache_auth_proxy_upstream_tls_handshakes_total\{kind="resumed"\}/ { r = $2 }
    END { print f + 0, r + 0 }'
}

# One run: "<req/s> <server µs per connection> <resumed %, or ->".
run() {
  local path=$1 clients=$2
  local target=(-p "${proxy_port[$path]:-}")
  [ "$path" = direct ] &&
    target=(--tls --cacert "$work/ca.pem" --user app -a "$BENCH_PASSWORD" -p "$port")
  read -r cpu0 conn0 < <(server_counters)
  read -r full0 res0 < <(handshakes "$path")
  local rps
  rps=$("${client_pin[@]}" redis-benchmark -h 127.0.0.1 "${target[@]}" -k 0 -t get \
    -n "$N" -c "$clients" --csv 2>>"$work/bench.err" | awk -F'"' '$2 == "GET" { print $4 }')
  read -r cpu1 conn1 < <(server_counters)
  read -r full1 res1 < <(handshakes "$path")
  # The INFO connection itself is one of the connections counted.
  awk -v rps="$rps" -v cpu0="$cpu0" -v cpu1="$cpu1" -v conns=$((conn1 - conn0 - 1)) \
    -v full=$((full1 - full0)) -v res=$((res1 - res0)) 'BEGIN {
      resumed = full + res > 0 ? sprintf("%.0f%%", 100 * res / (full + res)) : "-"
      printf "%s %.0f %s\n", rps, (cpu1 - cpu0) * 1e6 / conns, resumed }'
}

# Warm-up, not recorded: each proxy's first connection is a full handshake.
for path in $paths; do N=100 run "$path" 1 >/dev/null; done

declare -A results
for round in $(seq "$ROUNDS"); do
  for clients in $CLIENTS; do
    for path in $paths; do
      read -r rps us resumed < <(run "$path" "$clients")
      results[$clients,$path,rps]+="$rps "
      results[$clients,$path,us]+="$us "
      results[$clients,$path,res]+="$resumed "
    done
  done
  echo "round $round of $ROUNDS done" >&2
done

echo
echo "redis-benchmark -k 0 -t get -n $N (a new connection per GET), median of $ROUNDS interleaved rounds"
machine
echo
echo "| clients | path | resumed handshakes | server CPU per connection | req/s |"
echo "|---|---|---|---|---|"
for clients in $CLIENTS; do
  for path in $paths; do
    printf '| %s | %s | %s | %s µs | %s |\n' "$clients" "$path" \
      "$(echo "${results[$clients,$path,res]}" | median)" \
      "$(echo "${results[$clients,$path,us]}" | median)" \
      "$(echo "${results[$clients,$path,rps]}" | median)"
  done
done
# redis-benchmark warns about keepalive off on every run; anything else is an error.
if grep -v 'Keepalive disabled' "$work/bench.err" | grep -q .; then
  echo
  echo "redis-benchmark reported errors:" >&2
  grep -v 'Keepalive disabled' "$work/bench.err" | sort | uniq -c | head >&2
fi
