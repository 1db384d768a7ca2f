# shellcheck shell=bash
# Sourced after scripts/lib.sh by the scripts that need a local IAM cache.

# A stand-in for an ElastiCache cache that requires IAM, serving TLS on
# 127.0.0.1:$1 for the cache "demo-cache" in us-east-1: a throwaway CA
# ($work/ca.pem) and a certificate for localhost, redis-server on loopback
# port $1+1000 with the users app-iam and app, and elasticache-iam-emulator
# (from target/release) in front of it. Sets demo_key_id and demo_secret, the
# AWS keys whose tokens the emulator accepts, and exports DEMO_PASSWORD, the
# password of user app. Returns once the emulator is up.
start_iam_cache() {
  local tls_port=$1 backend_port=$(($1 + 1000))
  # A throwaway CA and a server certificate for localhost.
  mint_cert server

  # The backend password and the demo AWS keys live only in this script's
  # processes. The emulator accepts tokens signed with the demo keys.
  export EMULATOR_BACKEND_PASSWORD DEMO_PASSWORD
  EMULATOR_BACKEND_PASSWORD=$(openssl rand -hex 16)
  DEMO_PASSWORD=$(openssl rand -hex 16)
  demo_key_id="AKIDDEMO$(openssl rand -hex 6 | tr a-f A-F)"
  demo_secret=$(openssl rand -base64 30)
  redis-server --port "$backend_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" \
    --user default off \
    --user app-iam on ">$EMULATOR_BACKEND_PASSWORD" '~*' '&*' '+@all' \
    --user app on ">$DEMO_PASSWORD" '~*' '&*' '+@all' &
  pids+=($!)

  cat > "$work/emulator.toml" <<TOML
listen = "127.0.0.1:$tls_port"
backend = "127.0.0.1:$backend_port"
backend-password-env = "EMULATOR_BACKEND_PASSWORD"
tls-cert = "$work/server.pem"
tls-key = "$work/server.key"
cache-name = "demo-cache"
region = "us-east-1"
iam-users = ["app-iam"]

[[credentials]]
access-key-id = "$demo_key_id"
secret-access-key = "$demo_secret"
TOML
  target/release/elasticache-iam-emulator --config "$work/emulator.toml" > "$work/emulator.out" &
  pids+=($!)
  for _ in $(seq 100); do grep -q '^stats ' "$work/emulator.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "the IAM emulator did not start; its output: $(cat "$work/emulator.out")" >&2
  return 1
}
