#!/usr/bin/env bash
# The comparison harness: one TLS redis-server (password user `app`), and in
# the same run, round after round and path after path (interleaved, so
# machine noise hits every path alike), redis-benchmark through
#   tls      straight to the TLS port (the reference: what a TLS client pays)
#   plain    straight to a plain port of the same server (the raw limit)
#   proxy    this proxy, password mode, warm pool off
#   pool     this proxy, password mode, --pool-size $POOL_SIZE (reuse on, its default)
#   haproxy  haproxy, mode tcp, `server ... ssl verify required`
#   stunnel  stunnel4 in client mode
# It prints one table: req/s, p50/p99 (medians over the rounds), the ratio
# to `tls`, and CPU µs per request of the server and of the path's proxy
# process (from /proc/<pid>/stat deltas; per connection for conn/conn1);
# then the memory of each proxy: idle, with $IDLE idle sessions open, and
# $SETTLE s after they close.
#
#   benches/compare.sh                              # 3 rounds, every workload
#   ROUNDS=1 SCALE=10 IDLE=500 benches/compare.sh   # a quick look (~1 min)
#   WORKLOADS="conn conn1" PATHS="tls proxy pool" benches/compare.sh
#
# Knobs: ROUNDS [3]  WORKLOADS ["p1 p16 lat conn conn1 warm"]
#        PATHS ["tls plain proxy pool haproxy stunnel"]
#        N_P1 [100000] N_P16 [500000] N_LAT [20000] N_CONN [4000]
#        N_CONN1 [1000] N_WARM [POOL_SIZE / 2] requests per case; SCALE [1]
#        divides them all but N_WARM
#        CLIENTS [50]  POOL_SIZE [64]
#        IDLE [2000] idle sessions for the memory rows (9000 fits the 20,000
#        fd limit: each proxied session holds two sockets); 0 skips them
#        SETTLE [10] seconds after the idle sessions close
#        PIN [1] (redis-server on the last CPU; client and proxies on CPU 0,
#        as a sidecar shares the app's CPU)  BASE_PORT [17100]
#        CASE_TIMEOUT [300] seconds per redis-benchmark run
# The workloads are the issue's: p1 `-c 50 -P 1 -t set,get`, p16 `-P 16`,
# lat `-c 1 -t get`, conn `-c 50 -k 0 -t get` (a new connection per GET:
# TCP, TLS or the proxy's accept, AUTH, GET), conn1 `-c 1 -k 0`; and warm,
# conn1 for fewer connections than the pool holds. Every case of the pool
# path starts with the pool at its target (full while its clients keep
# coming: the pool sizes itself to the busiest second of the last minute),
# so warm is the pool's best case and conn/conn1 show what sustained churn
# leaves of it.
# The direct paths, haproxy and stunnel send AUTH (redis-benchmark pipelines
# it with the first command); the proxy paths send none: the proxy
# authenticates upstream, as it does for an app that knows no password.
# Needs what `scripts/deps.sh --bench` installs, and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --bench

ROUNDS=${ROUNDS:-3}
WORKLOADS=${WORKLOADS:-"p1 p16 lat conn conn1 warm"}
PATHS=${PATHS:-"tls plain proxy pool haproxy stunnel"}
SCALE=${SCALE:-1}
N_P1=$((${N_P1:-100000} / SCALE))
N_P16=$((${N_P16:-500000} / SCALE))
N_LAT=$((${N_LAT:-20000} / SCALE))
N_CONN=$((${N_CONN:-4000} / SCALE))
N_CONN1=$((${N_CONN1:-1000} / SCALE))
CLIENTS=${CLIENTS:-50}
POOL_SIZE=${POOL_SIZE:-64}
N_WARM=${N_WARM:-$((POOL_SIZE / 2))}
IDLE=${IDLE:-2000}
SETTLE=${SETTLE:-10}
PIN=${PIN:-1}
BASE_PORT=${BASE_PORT:-17100}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}

. scripts/lib.sh

pin_cpus
release_proxy
mint_cert node extendedKeyUsage=serverAuth,clientAuth

declare -A port=(
  [tls]=$BASE_PORT [plain]=$((BASE_PORT + 1)) [proxy]=$((BASE_PORT + 2))
  [pool]=$((BASE_PORT + 3)) [haproxy]=$((BASE_PORT + 4)) [stunnel]=$((BASE_PORT + 5))
)
declare -A admin=([proxy]=$((BASE_PORT + 12)) [pool]=$((BASE_PORT + 13)))
declare -A pid_of=()

export BENCH_PASSWORD
BENCH_PASSWORD=$(openssl rand -hex 16)
"${server_pin[@]}" redis-server --port "${port[plain]}" --tls-port "${port[tls]}" \
  --bind 127.0.0.1 --tls-cert-file "$work/node.pem" --tls-key-file "$work/node.key" \
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no --maxclients $((IDLE + 1000)) \
  --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" \
  --user default off --user app on ">$BENCH_PASSWORD" '~*' '&*' '+@all' &
pid_of[server]=$!
pids+=($!)
cli() { redis-cli -p "${port[plain]}" --user app --pass "$BENCH_PASSWORD" --no-auth-warning "$@"; }
for _ in $(seq 100); do cli PING >/dev/null 2>&1 && break; sleep 0.1; done

# The proxy, twice: the pool off and on. Each gets a tokio worker per CPU it
# may run on, so pinned it has one, like haproxy's nbthread 1 below.
for path in proxy pool; do
  pool_args=(--pool-size 0)
  [ "$path" = pool ] && pool_args=(--pool-size "$POOL_SIZE")
  "${client_pin[@]}" "$bin" --upstream "127.0.0.1:${port[tls]}" --tls-ca-file "$work/ca.pem" \
    --password-user app --password-env BENCH_PASSWORD "${pool_args[@]}" \
    --listen "127.0.0.1:${port[$path]}" --admin-listen "127.0.0.1:${admin[$path]}" \
    --log-level warn 2>>"$work/$path.log" &
  pid_of[$path]=$!
  pids+=($!)
  wait_started "${admin[$path]}"
done

# haproxy wants two fds a connection under its maxconn.
haproxy_maxconn=$((IDLE + 1000))
fd_limit=$(ulimit -n)
[[ $fd_limit =~ ^[0-9]+$ ]] && ((fd_limit / 2 - 64 < haproxy_maxconn)) && haproxy_maxconn=$((fd_limit / 2 - 64))
# haproxy and stunnel as the baseline in shared/perf configures them: one
# thread, verify the server, resume TLS sessions (their defaults).
haproxy_config "${port[haproxy]}" "${port[tls]}" "$haproxy_maxconn"
"${client_pin[@]}" haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pid_of[haproxy]=$!
pids+=($!)
# syslog = no: without a syslog daemon glibc logs to /dev/console, 1-2 ms a
# line, which caps stunnel near 150 connections/s.
cat >"$work/stunnel.conf" <<EOF
foreground = quiet
syslog = no
output = $work/stunnel.log
debug = warning
[redis]
client = yes
accept = 127.0.0.1:${port[stunnel]}
connect = 127.0.0.1:${port[tls]}
CAfile = $work/ca.pem
verifyChain = yes
checkHost = localhost
sni = localhost
EOF
"${client_pin[@]}" stunnel4 "$work/stunnel.conf" >"$work/stunnel.out" 2>&1 &
pid_of[stunnel]=$!
pids+=($!)

target() { # PATH -> redis-benchmark/redis-cli arguments
  case $1 in
    tls) echo "-p ${port[tls]} --tls --cacert $work/ca.pem --user app -a $BENCH_PASSWORD" ;;
    proxy | pool) echo "-p ${port[$1]}" ;;
    *) echo "-p ${port[$1]} --user app -a $BENCH_PASSWORD" ;;
  esac
}

# Every path must reach this very server: a value written on the plain port
# is read back through each (a fast path to somewhere else would be no result).
nonce=$(openssl rand -hex 8)
cli SET bench:nonce "$nonce" >/dev/null
for path in $PATHS; do
  got=""
  for _ in $(seq 50); do
    # shellcheck disable=SC2046 # target() is a word list on purpose
    got=$(timeout 5 redis-cli -h 127.0.0.1 $(target "$path") --no-auth-warning GET bench:nonce 2>/dev/null || true)
    [ "$got" = "$nonce" ] && break
    sleep 0.2
  done
  [ "$got" = "$nonce" ] || { echo "path $path does not reach the server (got '$got')" >&2; exit 1; }
done

clk=$(getconf CLK_TCK)
ticks() { # utime + stime of a live process, all threads
  awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat"
}
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
pool_counter() { # NAME: a counter from the pool proxy's /metrics
  curl -s "http://127.0.0.1:${admin[pool]}/metrics" |
    awk -v n="elasticache_auth_proxy_pool_$1" '$1 == n { print $2 + 0 }'
}

workload_args() { # WORKLOAD -> redis-benchmark arguments; sets n and tests
  case $1 in
    p1) n=$N_P1 tests=2 && echo "-c $CLIENTS -P 1 -t set,get -n $n" ;;
    p16) n=$N_P16 tests=2 && echo "-c $CLIENTS -P 16 -t set,get -n $n" ;;
    lat) n=$N_LAT tests=1 && echo "-c 1 -t get -n $n" ;;
    conn) n=$N_CONN tests=1 && echo "-c $CLIENTS -k 0 -t get -n $n" ;;
    conn1) n=$N_CONN1 tests=1 && echo "-c 1 -k 0 -t get -n $n" ;;
    warm) n=$N_WARM tests=1 && echo "-c 1 -k 0 -t get -n $n" ;;
    *) echo "unknown workload $1" >&2 && exit 2 ;;
  esac
}

# One case: appends "workload path test rps p50 p99 srv_us prx_us" lines to
# $work/results, and counts its error lines.
declare -A errors=() hits=() misses=() reuses=()
run_case() {
  local wl=$1 path=$2 args out=$work/case.csv err=$work/case.err s0 s1 x0="" x1="" rc=0 h0 m0 r0
  if [ "$path" = pool ]; then
    # At its target: full in the first minute, then what the last
    # minute's busiest second asked for (at most POOL_SIZE).
    for _ in $(seq 200); do
      [ "$(pool_counter connections)" -ge "$(pool_counter target)" ] && break
      sleep 0.1
    done
    h0=$(pool_counter hits_total)
    m0=$(pool_counter misses_total)
    r0=$(pool_counter reuses_total)
  fi
  workload_args "$wl" >/dev/null
  args=$(workload_args "$wl")
  local prx=${pid_of[$path]:-}
  s0=$(ticks "${pid_of[server]}")
  [ -n "$prx" ] && x0=$(ticks "$prx")
  # shellcheck disable=SC2046,SC2086
  "${client_pin[@]}" timeout "$CASE_TIMEOUT" redis-benchmark -h 127.0.0.1 $(target "$path") \
    $args -r 100000 --csv >"$out" 2>"$err" || rc=$?
  s1=$(ticks "${pid_of[server]}")
  [ -n "$prx" ] && x1=$(ticks "$prx")
  local bad
  bad=$(tr '\r' '\n' <"$err" | grep -ciE 'error|refused|reset|timeout' || true)
  [ "$rc" = 0 ] || bad=$((bad + 1))
  errors[$path]=$((${errors[$path]:-0} + bad))
  if [ "$path" = pool ]; then
    hits[$wl]=$((${hits[$wl]:-0} + $(pool_counter hits_total) - h0))
    misses[$wl]=$((${misses[$wl]:-0} + $(pool_counter misses_total) - m0))
    reuses[$wl]=$((${reuses[$wl]:-0} + $(pool_counter reuses_total) - r0))
  fi
  awk -F'"' -v wl="$wl" -v path="$path" -v hz="$clk" -v req=$((n * tests)) \
    -v s0="$s0" -v s1="$s1" -v x0="$x0" -v x1="$x1" '
    # Two decimals under 10 µs: p16 runs 1M requests in ~80 ticks, so the
    # second decimal is within the tick (one alone cannot tell 0.75 from 0.84).
    function us(a, b,  v) {
      if (a == "") return "-"
      v = (b - a) / hz * 1e6 / req
      return sprintf(v < 10 ? "%.2f" : "%.1f", v)
    }
    $2 == "SET" || $2 == "GET" { print wl, path, $2, $4, $10, $14, us(s0, s1), us(x0, x1) }
  ' "$out" >>"$work/results"
}

: >"$work/results"
for round in $(seq "$ROUNDS"); do
  for wl in $WORKLOADS; do
    for path in $PATHS; do
      run_case "$wl" "$path"
    done
  done
  echo "round $round of $ROUNDS done" >&2
done

# Memory: RSS idle, with $IDLE sessions open through the path, and $SETTLE s
# after they close. Each session sends one PING (with AUTH where the path
# needs it) and then idles: the proxy connects upstream on a session's first
# command, so a session that never spoke would hold no upstream connection.
cat >"$work/hold.py" <<'EOF_PY'
import socket, sys, time
port, count, password, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
hello = b"PING\r\n"
if password:
    hello = b"AUTH app " + password.encode() + b"\r\n" + hello
sessions = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(hello)
    sessions.append(s)
for s in sessions:
    got = b""
    while not got.endswith(b"+PONG\r\n"):
        chunk = s.recv(256)
        if not chunk:
            sys.exit("closed before PONG: " + got.decode(errors="replace"))
        got += chunk
open(ready, "w").close()
time.sleep(3600)
EOF_PY
declare -A mem=()
if [ "$IDLE" -gt 0 ]; then
  for path in proxy pool haproxy stunnel; do
    [[ " $PATHS " == *" $path "* ]] || continue
    p=${pid_of[$path]}
    idle_kb=$(rss_kb "$p")
    password=$BENCH_PASSWORD
    [ "$path" = proxy ] || [ "$path" = pool ] && password=""
    rm -f "$work/ready"
    "${client_pin[@]}" python3 "$work/hold.py" "${port[$path]}" "$IDLE" "$password" "$work/ready" \
      2>"$work/hold-$path.err" &
    holder=$!
    pids+=("$holder")
    for _ in $(seq 1200); do
      [ -e "$work/ready" ] || ! kill -0 "$holder" 2>/dev/null && break
      sleep 0.1
    done
    if [ ! -e "$work/ready" ]; then
      # A path that cannot hold them all gets a row that says so.
      mem[$path]="failed: $(tail -1 "$work/hold-$path.err")"
      kill "$holder" 2>/dev/null || true
      wait "$holder" 2>/dev/null || true
      sleep "$SETTLE"
      continue
    fi
    sleep 1
    open_kb=$(rss_kb "$p")
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    sleep "$SETTLE"
    mem[$path]="$idle_kb $open_kb $(rss_kb "$p")"
  done
fi

# ------------------------------------------------------------------ report
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
med_of() { # WORKLOAD PATH TEST COLUMN
  awk -v w="$1" -v p="$2" -v t="$3" -v c="$4" '$1 == w && $2 == p && $3 == t { print $c }' \
    "$work/results" | median
}
echo
echo "benches/compare.sh: redis-benchmark against one TLS redis-server, median of $ROUNDS interleaved rounds"
echo "($(date -u +%F), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
  "$(redis-server --version | awk '{ print $1, $3 }'), $(haproxy -v | awk 'NR == 1 { print $1, $3 }')," \
  "$(stunnel4 -version 2>&1 | awk '/^stunnel/ { print $1, $2; exit }'); pin=$PIN, pool=$POOL_SIZE)"
echo "requests per case: p1 $N_P1, p16 $N_P16, lat $N_LAT, conn $N_CONN, conn1 $N_CONN1, warm $N_WARM (-c $CLIENTS)"
echo
echo "| workload | test | path | req/s | p50 ms | p99 ms | vs tls | server µs/req | proxy µs/req |"
echo "|---|---|---|---|---|---|---|---|---|"
for wl in $WORKLOADS; do
  tests="GET"
  [ "$wl" = p1 ] || [ "$wl" = p16 ] && tests="SET GET"
  for t in $tests; do
    ref=$(med_of "$wl" tls "$t" 4)
    for path in $PATHS; do
      rps=$(med_of "$wl" "$path" "$t" 4)
      [ -n "$rps" ] || { echo "| $wl | $t | $path | failed | | | | | |"; continue; }
      ratio=$(awk -v a="$rps" -v b="${ref:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
      prx=$(med_of "$wl" "$path" "$t" 8)
      echo "| $wl | $t | $path | $(printf '%.0f' "$rps") | $(med_of "$wl" "$path" "$t" 5)" \
        "| $(med_of "$wl" "$path" "$t" 6) | $ratio | $(med_of "$wl" "$path" "$t" 7) | ${prx:--} |"
    done
  done
done
echo
echo "CPU µs are per request for the whole case (SET and GET together for p1/p16),"
echo "per connection for conn/conn1; \"proxy\" is the path's proxy process."
if [ "$IDLE" -gt 0 ]; then
  echo
  echo "| proxy | RSS idle MiB | RSS with $IDLE idle sessions MiB | per session KiB | RSS ${SETTLE} s after close MiB |"
  echo "|---|---|---|---|---|"
  for path in proxy pool haproxy stunnel; do
    [ -n "${mem[$path]:-}" ] || continue
    if [[ ${mem[$path]} == failed* ]]; then
      echo "| $path | ${mem[$path]} | | | |"
      continue
    fi
    read -r idle_kb open_kb after_kb <<<"${mem[$path]}"
    per=$(awk -v a="$idle_kb" -v b="$open_kb" -v n="$IDLE" 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "| $path | $(mib "$idle_kb") | $(mib "$open_kb") | $per | $(mib "$after_kb") |"
  done
fi
echo
if [[ " $PATHS " == *" pool "* ]]; then
  echo "warm pool, hits / misses / reuses over the rounds (a miss connects on the client's path;"
  echo "a reuse is a connection whose client left, back in the pool after RESET + AUTH):"
  for wl in $WORKLOADS; do echo "  $wl: ${hits[$wl]:-0} / ${misses[$wl]:-0} / ${reuses[$wl]:-0}"; done
fi
for path in $PATHS; do
  echo "error lines from redis-benchmark, $path: ${errors[$path]:-0}"
done
