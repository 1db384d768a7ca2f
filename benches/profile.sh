#!/usr/bin/env bash
# The hot path's profile (issue 10, item 4): instructions the proxy executes
# per request, counted by valgrind's callgrind, which counts instructions,
# not seconds, so the figures repeat on a noisy machine. For each workload
# the release proxy (password mode, one TLS redis-server behind it) runs
# under callgrind twice, with n and with 3n requests over the same
# connections. The difference over 2n is its cost per request, without its
# start, the connections' handshakes and AUTH, and its stop; the same
# difference per function (callgrind_annotate, self cost) says where it
# goes, grouped into the proxy's own code, rustls, its crypto (aws-lc),
# tokio, the allocator and the rest. haproxy (mode tcp, one thread, as
# benches/compare.sh runs it) is counted the same way beside it, so the two
# figures compare on any machine. Syscalls per request come from strace -c
# on a plain run of the proxy.
#
#   benches/profile.sh
#   WORKLOADS=p16 N_P16=100000 TOP=40 benches/profile.sh
#
# Knobs: WORKLOADS ["p1 p16"]  N_P1 [20000]  N_P16 [100000] requests
#        CLIENTS [50]  TOP [25] functions listed  BASE_PORT [17300]
#        KEEP [unset]: a directory to keep the callgrind.out files in
#        BIN [unset] a proxy binary to profile instead of this tree's build
# The workloads are benches/compare.sh's: p1 `-c 50 -P 1 -t get`,
# p16 `-c 50 -P 16 -t get`. Needs what `scripts/deps.sh --bench` installs,
# valgrind (callgrind_annotate), and strace when present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --bench
command -v valgrind >/dev/null || {
  echo "valgrind is needed (apt-get install valgrind)" >&2
  exit 1
}

WORKLOADS=${WORKLOADS:-"p1 p16"}
N_P1=${N_P1:-20000}
N_P16=${N_P16:-100000}
CLIENTS=${CLIENTS:-50}
TOP=${TOP:-25}
BASE_PORT=${BASE_PORT:-17300}
KEEP=${KEEP:-}

. scripts/lib.sh

if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  release_proxy
fi
mint_cert server

export BENCH_PASSWORD
BENCH_PASSWORD=$(openssl rand -hex 16)
port=$BASE_PORT
redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 \
  --tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key" \
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no \
  --save "" --appendonly no --logfile "$work/redis.log" \
  --user default off --user app on ">$BENCH_PASSWORD" '~*' '&*' '+@all' &
pids+=($!)
for _ in $(seq 100); do
  redis-cli --tls --cacert "$work/ca.pem" -p "$port" --user app --pass "$BENCH_PASSWORD" \
    --no-auth-warning PING >/dev/null 2>&1 && break
  sleep 0.1
done
proxy_port=$((BASE_PORT + 1))
admin_port=$((BASE_PORT + 2))

haproxy_port=$((BASE_PORT + 3))
# haproxy as benches/compare.sh runs it: one thread, verifying the server.
haproxy_config "$haproxy_port" "$port" 1000

# under PATH WRAPPER... -- N PIPELINE: runs PATH (proxy or haproxy) under
# WRAPPER, sends N GETs through it on $CLIENTS connections, and stops it
# cleanly (the proxy by /quitquitquit, haproxy by its soft stop, SIGUSR1),
# so the wrapper writes its counts.
under() {
  local path=$1 wrapper=()
  shift
  while [ "$1" != -- ]; do
    wrapper+=("$1")
    shift
  done
  shift
  local n=$1 pipeline=$2 pid target
  if [ "$path" = proxy ]; then
    "${wrapper[@]}" "$bin" --upstream "127.0.0.1:$port" --tls-ca-file "$work/ca.pem" \
      --password-user app --password-env BENCH_PASSWORD \
      --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
      --log-level warn --drain-timeout 1s &
    pid=$!
    wait_started "$admin_port"
    # No AUTH: the proxy authenticates upstream.
    target=(-p "$proxy_port")
  else
    "${wrapper[@]}" haproxy -f "$work/haproxy.cfg" -db >>"$work/haproxy.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
      redis-cli -p "$haproxy_port" --user app --pass "$BENCH_PASSWORD" --no-auth-warning \
        PING 2>/dev/null | grep -q PONG && break
      sleep 0.1
    done
    target=(-p "$haproxy_port" --user app -a "$BENCH_PASSWORD")
  fi
  redis-benchmark -h 127.0.0.1 "${target[@]}" -t get -n "$n" -c "$CLIENTS" \
    -P "$pipeline" -q >/dev/null 2>&1
  if [ "$path" = proxy ]; then
    curl -s -X POST "http://127.0.0.1:$admin_port/quitquitquit" >/dev/null || true
  else
    kill -USR1 "$pid" 2>/dev/null || true
  fi
  wait "$pid" || true
}

# total FILE: the instructions (Ir) a callgrind.out file counted.
total() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

# functions FILE: "<self Ir> <function>" per function, largest first.
functions() {
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$1" 2>/dev/null | awk '
    /^ *[0-9,]+ / && !/PROGRAM TOTALS/ && !/=>/ {
      ir = $1; gsub(",", "", ir); $1 = ""; sub(/^ *(\( *[0-9.]+%\))? */, ""); print ir, $0 }'
}

for workload in $WORKLOADS; do
  case $workload in
    p1) n=$N_P1 pipeline=1 ;;
    p16) n=$N_P16 pipeline=16 ;;
    *) echo "unknown workload $workload" >&2; exit 64 ;;
  esac
  # Two runs, n and 3n requests over the same connections: the difference
  # is 2n requests' worth, without the start, the connections' TLS
  # handshakes and AUTH, and the stop.
  echo
  echo "## $workload: redis-benchmark -c $CLIENTS -P $pipeline -t get"
  echo
  for path in haproxy proxy; do
    echo "profiling $workload on $path ($n and $((3 * n)) GETs under callgrind)..." >&2
    for k in 1 3; do
      under "$path" valgrind --tool=callgrind --callgrind-out-file="$work/$path-$workload-$k.out" \
        -- $((k * n)) "$pipeline" 2>/dev/null
    done
    one=$(total "$work/$path-$workload-1.out")
    three=$(total "$work/$path-$workload-3.out")
    printf '%-8s instructions per request: %s (%s requests %s, %s requests %s)\n' "$path" \
      $(((three - one) / (2 * n))) $((3 * n)) "$three" "$n" "$one"
  done
  mv "$work/proxy-$workload-1.out" "$work/$workload-1.out"
  mv "$work/proxy-$workload-3.out" "$work/$workload-3.out"
  if strace -f -c -o /dev/null true 2>/dev/null; then
    under proxy strace -f -c -o "$work/$workload.strace" -- "$n" "$pipeline"
    echo "syscalls per request (strace -c, $n requests, including the start):"
    awk -v n="$n" '$NF ~ /^(read|write|readv|writev|recvfrom|sendto|epoll_wait|futex|sched_yield)$/ {
        printf "  %-12s %6.2f\n", $NF, $4 / n }' "$work/$workload.strace"
  fi
  # Per function, the 3n run less the n run: what the extra requests cost.
  functions "$work/$workload-1.out" >"$work/$workload-1.fn"
  functions "$work/$workload-3.out" >"$work/$workload-3.fn"
  awk -v requests=$((2 * n)) '
    NR == FNR { base[substr($0, index($0, " ") + 1)] = $1; next }
    { name = substr($0, index($0, " ") + 1); d = $1 - base[name]; if (d > 0) print d / requests, name }
  ' "$work/$workload-1.fn" "$work/$workload-3.fn" | sort -rg >"$work/$workload.delta"
  echo
  echo "where a request's instructions go in the proxy (by group):"
  awk '{
      ir = $1; name = $0
      g = "other"
      if (name ~ /elasticache_auth_proxy/) g = "proxy (relay, scanners, ledger)"
      else if (name ~ /aws_lc|ring::|sha2|aes|gcm|chacha|poly1305/) g = "TLS crypto (aws-lc)"
      else if (name ~ /rustls/) g = "rustls (records, state)"
      else if (name ~ /tokio|mio::/) g = "tokio (runtime, io, timers)"
      else if (name ~ /malloc|free|realloc|_int_|alloc::|memcpy|memmove|memset/) g = "allocation and copies"
      else if (name ~ /bytes::/) g = "bytes"
      sum[g] += ir; all += ir
    }
    END { for (g in sum) printf "  %8.0f  %5.1f%%  %s\n", sum[g], 100 * sum[g] / all, g }' \
    "$work/$workload.delta" | sort -rn
  echo
  echo "the proxy's top $TOP functions (instructions per request, self):"
  head -n "$TOP" "$work/$workload.delta" | awk '{ printf "  %8.0f  %s\n", $1, substr($0, index($0, " ") + 1) }' | cut -c1-170
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    cp "$work/"*"$workload"-*.out "$KEEP/"
  fi
done
echo
machine
