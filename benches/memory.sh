#!/usr/bin/env bash
# Memory per session: the proxy's RSS (VmRSS from /proc/<pid>/status) idle,
# with N idle proxied sessions open, and 1 s, 5 s and 10 s after they all
# close. One TLS redis-server (password user `app`), the release proxy in
# password mode in front of it, and one Python process holding the sessions.
# Each session sends one PING and reads the PONG before it idles: the proxy
# connects upstream on a session's first command, so a session that never
# spoke would hold no upstream connection, no TLS state and no buffers.
#
#   benches/memory.sh                    # 9000 sessions, 2 rounds
#   N=500 ROUNDS=1 benches/memory.sh     # a quick look
#   BIN=/tmp/proxy-main benches/memory.sh   # another build of the proxy
#
# Knobs: N [9000] sessions (each proxied session holds two sockets; 9000 fit
#        the 20,000 fd limit)  ROUNDS [2] (the same proxy process, rounds one
#        after another: the second shows what reuse of freed memory leaves)
#        VALUE [0] bytes: with VALUE > 0 every session also GETs a value this
#        large before it idles (the buffers a big reply grew)
#        PROXY_ARGS [""] extra proxy flags  PIN [1] (redis-server on the last
#        CPU; the proxy and the holder on CPU 0)  BASE_PORT [17300]
#        BIN [unset] a proxy binary to measure instead of this tree's build
# Needs what `scripts/deps.sh --bench` installs (redis-server, redis-tools,
# openssl), python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --bench

N=${N:-9000}
ROUNDS=${ROUNDS:-2}
VALUE=${VALUE:-0}
PROXY_ARGS=${PROXY_ARGS:-}
PIN=${PIN:-1}
BASE_PORT=${BASE_PORT:-17300}

. scripts/lib.sh

pin_cpus
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  release_proxy
fi
mint_cert node

tls_port=$BASE_PORT
proxy_port=$((BASE_PORT + 1))
admin_port=$((BASE_PORT + 2))
export BENCH_PASSWORD
BENCH_PASSWORD=$(openssl rand -hex 16)
"${server_pin[@]}" redis-server --port 0 --tls-port "$tls_port" --bind 127.0.0.1 \
  --tls-cert-file "$work/node.pem" --tls-key-file "$work/node.key" \
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no --maxclients $((N + 1000)) \
  --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" \
  --user default off --user app on ">$BENCH_PASSWORD" '~*' '&*' '+@all' &
pids+=($!)
cli() {
  redis-cli --tls --cacert "$work/ca.pem" -p "$tls_port" --user app --pass "$BENCH_PASSWORD" \
    --no-auth-warning "$@"
}
for _ in $(seq 100); do cli PING >/dev/null 2>&1 && break; sleep 0.1; done
if [ "$VALUE" -gt 0 ]; then
  head -c "$VALUE" /dev/zero | tr '\0' x | cli -x SET bench:value >/dev/null
fi

# shellcheck disable=SC2086 # PROXY_ARGS is a word list on purpose
"${client_pin[@]}" "$bin" --upstream "127.0.0.1:$tls_port" --tls-ca-file "$work/ca.pem" \
  --password-user app --password-env BENCH_PASSWORD --max-connections $((N + 100)) \
  --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
  --log-level warn $PROXY_ARGS 2>>"$work/proxy.log" &
proxy=$!
pids+=($!)
wait_started "$admin_port"

# The holder: opens COUNT sessions, sends each PING (and GET bench:value),
# reads every reply, touches READY, then holds them until killed.
cat >"$work/hold.py" <<'EOF_PY'
import resource, socket, sys, time
port, count, value, ready = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
hello, want = b"PING\r\n", b"+PONG\r\n"
if value:
    hello += b"GET bench:value\r\n"
    want += b"$%d\r\n" % value + b"x" * value + b"\r\n"
sessions = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(hello)
    sessions.append(s)
for s in sessions:
    got = b""
    while len(got) < len(want):
        chunk = s.recv(1 << 20)
        if not chunk:
            sys.exit("closed early: " + got[:200].decode(errors="replace"))
        got += chunk
    if got != want:
        sys.exit("unexpected reply: " + got[:200].decode(errors="replace"))
open(ready, "w").close()
time.sleep(3600)
EOF_PY

rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
active() { # sessions the proxy counts as open upstream
  curl -s "http://127.0.0.1:$admin_port/metrics" |
    awk '/^elasticache_auth_proxy_upstream_connections_active/ { n += $2 } END { print n + 0 }'
}

rows=()
for round in $(seq "$ROUNDS"); do
  sleep 1
  idle_kb=$(rss_kb "$proxy")
  rm -f "$work/ready"
  "${client_pin[@]}" python3 "$work/hold.py" "$proxy_port" "$N" "$VALUE" "$work/ready" \
    2>"$work/hold.err" &
  holder=$!
  pids+=("$holder")
  for _ in $(seq 1800); do
    [ -e "$work/ready" ] || ! kill -0 "$holder" 2>/dev/null && break
    sleep 0.1
  done
  if [ ! -e "$work/ready" ]; then
    echo "the holder did not open $N sessions: $(tail -1 "$work/hold.err")" >&2
    exit 1
  fi
  open_n=$(active)
  sleep 1
  open_kb=$(rss_kb "$proxy")
  kill "$holder"
  wait "$holder" 2>/dev/null || true
  after=()
  t=0
  for at in 1 5 10; do
    sleep $((at - t))
    t=$at
    after+=("$(rss_kb "$proxy")")
  done
  left_n=$(active)
  per=$(awk -v a="$idle_kb" -v b="$open_kb" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / n }')
  rows+=("| $round | $(mib "$idle_kb") | $(mib "$open_kb") ($open_n open upstream) | $per |"\
" $(mib "${after[0]}") | $(mib "${after[1]}") | $(mib "${after[2]}") ($left_n open) |")
  echo "round $round of $ROUNDS done" >&2
done

echo
echo "benches/memory.sh: proxy RSS, $N idle sessions (PING$([ "$VALUE" -gt 0 ] && echo " + GET of $VALUE bytes") each), password mode"
machine
echo "$("$bin" --version 2>/dev/null || echo "$bin")${PROXY_ARGS:+, flags: $PROXY_ARGS}"
echo
echo "| round | idle MiB | with $N sessions MiB | per session KiB | 1 s after close MiB | 5 s after | 10 s after |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
