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

# pin_and_build: `server_pin` and `client_pin`, command prefixes that put
# the servers on the last CPU and the client and proxies on CPU 0 (with
# PIN=1 and more than one CPU; else empty), and `bin`, the release proxy.
# shellcheck disable=SC2034 # set for the script that sources this
pin_and_build() {
  local last_cpu=$(($(nproc) - 1))
  server_pin=()
  client_pin=()
  if [ "${PIN:-1}" = 1 ] && [ "$last_cpu" -gt 0 ] && command -v taskset >/dev/null; then
    server_pin=(taskset -c "$last_cpu")
    client_pin=(taskset -c 0)
  fi
  echo "building the proxy (release)..." >&2
  cargo build --release --quiet --bin elasticache-auth-proxy
  bin=$PWD/target/release/elasticache-auth-proxy
}

# mint_certs: a throwaway CA ($work/ca.pem) and one localhost certificate
# ($work/node.pem, key $work/node.key) for both server and client auth (a
# cluster's bus and replication present it as a client).
mint_certs() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench-ca" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$work/node.key" -out "$work/node.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' \
    > "$work/ext.cnf"
  openssl x509 -req -days 1 -in "$work/node.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -extfile "$work/ext.cnf" -out "$work/node.pem" 2>/dev/null
}

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

# median: of the numbers on stdin, separated by spaces or newlines.
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
