#!/usr/bin/env bash
# Cluster mode, side by side in one run: `redis-benchmark --cluster` straight
# to a TLS Redis Cluster (3 primaries, password user) against the same
# benchmark through the proxy's cluster listeners (plain RESP in, TLS and
# AUTH out). Rounds are interleaved so machine noise hits both paths alike;
# the table shows each path's median over the rounds and the ratio.
#
#   benches/cluster.sh                 # 3 rounds of p1 and p16, set and get
#   ROUNDS=5 N=200000 benches/cluster.sh
#
# Knobs: ROUNDS [3]  N [100000 requests per run]  CLIENTS [50]
#        WORKLOADS ["p1 p16"] (pipeline depth 1 and 16)
#        PIN [1] (servers on the last CPU; benchmark and proxy on CPU 0)
#        BASE_PORT [17000]
# Needs what scripts/deps.sh installs (redis-server, redis-tools, openssl),
# and curl for the admin endpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

ROUNDS=${ROUNDS:-3}
N=${N:-100000}
CLIENTS=${CLIENTS:-50}
WORKLOADS=${WORKLOADS:-"p1 p16"}
PIN=${PIN:-1}
BASE_PORT=${BASE_PORT:-17000}

. scripts/lib.sh

pin_cpus
release_proxy

# One CA; one node certificate for both server and client auth (the
# cluster bus and replication present it as a client).
mint_cert node extendedKeyUsage=serverAuth,clientAuth

export BENCH_PASSWORD
BENCH_PASSWORD=$(openssl rand -hex 16)
tls=(--tls --cacert "$work/ca.pem")
ports=()
for i in 0 1 2; do
  port=$((BASE_PORT + i))
  ports+=("$port")
  mkdir -p "$work/node$i"
  "${server_pin[@]}" redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 \
    --tls-cert-file "$work/node.pem" --tls-key-file "$work/node.key" \
    --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no \
    --tls-client-cert-file "$work/node.pem" --tls-client-key-file "$work/node.key" \
    --tls-cluster yes --tls-replication yes --cluster-enabled yes \
    --cluster-config-file "$work/node$i/nodes.conf" --dir "$work/node$i" \
    --save "" --appendonly no --logfile "$work/node$i/redis.log" \
    --user default off --user app on ">$BENCH_PASSWORD" '~*' '&*' '+@all' \
    --masteruser app --masterauth "$BENCH_PASSWORD" &
  pids+=($!)
done
cli() { redis-cli "${tls[@]}" --user app --pass "$BENCH_PASSWORD" --no-auth-warning "$@"; }
for port in "${ports[@]}"; do
  for _ in $(seq 100); do cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
done
cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
for _ in $(seq 300); do
  cli -p "${ports[0]}" CLUSTER INFO | grep -q cluster_state:ok && break
  sleep 0.1
done

proxy_port=$((BASE_PORT + 100))
admin_port=$((BASE_PORT + 101))
"${client_pin[@]}" "$bin" --cluster --upstream "127.0.0.1:${ports[0]}" \
  --tls-ca-file "$work/ca.pem" --password-user app --password-env BENCH_PASSWORD \
  --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
  --log-level warn &
pids+=($!)
wait_started "$admin_port"

# One run: prints "SET <rps>" and "GET <rps>".
run() {
  local path=$1 depth=$2
  local target=(-p "$proxy_port")
  [ "$path" = direct ] && target=("${tls[@]}" --user app -a "$BENCH_PASSWORD" -p "${ports[0]}")
  "${client_pin[@]}" redis-benchmark --cluster -h 127.0.0.1 "${target[@]}" -t set,get \
    -n "$N" -c "$CLIENTS" -P "$depth" -r 100000 --csv 2>>"$work/$path.err" |
    awk -F'"' '$2 == "SET" || $2 == "GET" { print $2, $4 }'
}
touch "$work/direct.err" "$work/proxy.err"

declare -A results
for round in $(seq "$ROUNDS"); do
  for w in $WORKLOADS; do
    depth=${w#p}
    for path in direct proxy; do
      while read -r cmd rps; do
        results[$w,$cmd,$path]+="$rps "
      done < <(run "$path" "$depth")
    done
  done
  echo "round $round of $ROUNDS done" >&2
done

echo
echo "redis-benchmark --cluster, 3 primaries over TLS, -c $CLIENTS -n $N, median of $ROUNDS interleaved rounds"
machine
echo
echo "| workload | command | direct TLS req/s | proxy req/s | proxy / direct |"
echo "|---|---|---|---|---|"
for w in $WORKLOADS; do
  for cmd in SET GET; do
    d=$(echo "${results[$w,$cmd,direct]:-}" | median)
    p=$(echo "${results[$w,$cmd,proxy]:-}" | median)
    ratio=$(awk -v d="$d" -v p="$p" 'BEGIN { if (d > 0) printf "%.2f", p / d; else print "-" }')
    echo "| $w (-P ${w#p}) | $cmd | $d | $p | $ratio |"
  done
done
errors=$(curl -s "http://127.0.0.1:$admin_port/metrics" |
  awk '/^elasticache_auth_proxy_upstream_errors_total/ { s += $2 } END { print s + 0 }')
echo
echo "proxy upstream errors during the run: $errors"
# redis-benchmark reports error replies (and MOVED/ASK it had to follow) on
# stderr; a fast run made of errors would not be a fast run.
for path in direct proxy; do
  echo "redis-benchmark error lines, $path: $(grep -ciE 'error|moved|ask' "$work/$path.err" || true)"
done
if grep -qiE 'error|moved|ask' "$work/proxy.err"; then
  echo "first proxy-side lines:"; grep -iE 'error|moved|ask' "$work/proxy.err" | head -5
fi
