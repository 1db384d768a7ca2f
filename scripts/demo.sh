#!/usr/bin/env bash
# The proxy's main job on an embedded default: a local redis-server that
# requires TLS and a password user (the `default` user is off), and the proxy
# in front of it on 127.0.0.1:${DEMO_PORT:-6379}. Any plain client works:
#   redis-cli -p 6379 ACL WHOAMI      # -> app
# Runs until Ctrl-C; `scripts/demo.sh --once` checks the flow and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

port=${DEMO_PORT:-6379}
tls_port=${DEMO_UPSTREAM_PORT:-6380}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "building the proxy (release)..." >&2
cargo build --release --quiet
bin=target/release/elasticache-auth-proxy

# A throwaway CA and a server certificate for localhost.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=demo-ca" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$work/san.cnf"
openssl x509 -req -days 1 -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -extfile "$work/san.cnf" -out "$work/server.pem" 2>/dev/null

# The password lives only in this process's environment and redis's ACL.
export DEMO_REDIS_PASSWORD
DEMO_REDIS_PASSWORD=$(openssl rand -hex 16)
redis-server --port 0 --tls-port "$tls_port" --bind 127.0.0.1 \
  --tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key" \
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no \
  --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" \
  --user default off --user app on ">$DEMO_REDIS_PASSWORD" '~*' '&*' '+@all' &
pids+=($!)

"$bin" --listen "127.0.0.1:$port" --upstream "localhost:$tls_port" \
  --tls-ca-file "$work/ca.pem" --password-user app --password-env DEMO_REDIS_PASSWORD &
pids+=($!)

for _ in $(seq 100); do
  redis-cli -p "$port" PING >/dev/null 2>&1 && break
  sleep 0.1
done

echo
echo "== upstream: redis-server with TLS on localhost:$tls_port, user 'app', default user off"
echo "== proxy:    plain RESP on 127.0.0.1:$port"
echo "\$ redis-cli -p $port ACL WHOAMI"
whoami=$(redis-cli -p "$port" ACL WHOAMI)
echo "$whoami"
echo "\$ redis-cli -p $port SET greeting hello && redis-cli -p $port GET greeting"
redis-cli -p "$port" SET greeting hello
redis-cli -p "$port" GET greeting
[ "$whoami" = "app" ] || { echo "demo failed: expected ACL WHOAMI = app" >&2; exit 1; }

if [ "${1:-}" = "--once" ]; then
  echo "demo ok"
  exit 0
fi
echo
echo "The proxy is running; point any Redis client at 127.0.0.1:$port. Ctrl-C stops it."
wait
