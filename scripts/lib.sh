# shellcheck shell=bash
# Sourced by the scripts that start servers: a scratch directory `$work`, and
# the background processes they add to `pids`, both gone on exit; and the
# helpers the benches share (pinning and the release build, certificates,
# proxy readiness, medians).
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# pin_cpus: with PIN=1 (the default) and more than one CPU, the prefixes
# server_pin (the last CPU) and client_pin (CPU 0), so a benchmark's server
# and its clients do not share a core; both empty otherwise.
# shellcheck disable=SC2034 # set for the scripts that source this
pin_cpus() {
  server_pin=()
  client_pin=()
  local last_cpu=$(($(nproc) - 1))
  if [ "${PIN:-1}" = 1 ] && [ "$last_cpu" -gt 0 ] && command -v taskset >/dev/null; then
    server_pin=(taskset -c "$last_cpu")
    client_pin=(taskset -c 0)
  fi
}

# release_proxy: builds this tree's proxy (release) and sets bin to it.
# shellcheck disable=SC2034 # set for the scripts that source this
release_proxy() {
  echo "building the proxy (release)..." >&2
  cargo build --release --quiet --bin elasticache-auth-proxy
  bin=$PWD/target/release/elasticache-auth-proxy
}

# mint_cert NAME [EXTENSION...]: a throwaway CA, $work/ca.pem, and
# $work/NAME.pem and .key, a certificate it signs for localhost and
# 127.0.0.1 with these extra extension lines. Keys are RSA-2048.
mint_cert() {
  local name=$1
  shift
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=throwaway-ca" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' "$@" >"$work/$name.cnf"
  openssl x509 -req -days 1 -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -extfile "$work/$name.cnf" -out "$work/$name.pem" 2>/dev/null
}

# median: the median of the numbers on stdin (by space or line); empty for
# no numbers.
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# machine: the date and the machine, for under a benchmark table's title.
machine() { echo "($(date -u +%F), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"; }

# wait_started ADMIN_PORT: until the proxy's /startup says 200 (20 s), or fail.
wait_started() {
  local status=""
  for _ in $(seq 200); do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/startup" || true)
    [ "$status" = 200 ] && return 0
    sleep 0.1
  done
  echo "the proxy with admin port $1 did not start" >&2
  return 1
}

# haproxy_config LISTEN_PORT SERVER_PORT MAXCONN: writes $work/haproxy.cfg,
# haproxy as the baseline in shared/perf configures it: mode tcp, one
# thread, verifying the TLS server ($work/ca.pem, name localhost),
# resuming TLS sessions (its default).
haproxy_config() {
  cat >"$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $3
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
listen redis_tls
    bind 127.0.0.1:$1
    server r1 127.0.0.1:$2 ssl verify required ca-file $work/ca.pem sni str(localhost) verifyhost localhost
EOF
}
