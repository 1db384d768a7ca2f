#!/usr/bin/env bash
# The proxy's main job on an embedded default, with no AWS account: the full
# IAM flow against a local stand-in for ElastiCache.
#   redis-server (plaintext, loopback)  <- the cache's data
#   elasticache-iam-emulator (TLS :6380) <- checks every SigV4 IAM token, like ElastiCache
#   elasticache-auth-proxy (:6379)       <- signs tokens with demo AWS credentials
# Any plain client works:
#   redis-cli -p 6379 ACL WHOAMI      # -> app-iam
# Runs until Ctrl-C; `scripts/demo.sh --once` checks the flow and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

port=${DEMO_PORT:-6379}
tls_port=${DEMO_UPSTREAM_PORT:-6380}
. scripts/lib.sh

echo "building the proxy (release)..." >&2
cargo build --release --quiet --bins
bin=target/release/elasticache-auth-proxy

. scripts/iam-cache.sh
start_iam_cache "$tls_port"

# The proxy finds the demo keys through the AWS SDK's default chain (here the
# environment, as on a laptop; on ECS/EKS it would be the task or pod role).
AWS_ACCESS_KEY_ID="$demo_key_id" AWS_SECRET_ACCESS_KEY="$demo_secret" AWS_EC2_METADATA_DISABLED=true \
"$bin" --listen "127.0.0.1:$port" --upstream "localhost:$tls_port" \
  --tls-ca-file "$work/ca.pem" --iam-user app-iam --cache-name demo-cache --region us-east-1 \
  --password-user app --password-env DEMO_PASSWORD &
pids+=($!)

for _ in $(seq 100); do
  redis-cli -p "$port" PING >/dev/null 2>&1 && break
  sleep 0.1
done

echo
echo "== cache:    elasticache-iam-emulator (TLS, IAM tokens checked) on localhost:$tls_port, cache 'demo-cache'"
echo "== proxy:    plain RESP on 127.0.0.1:$port, IAM user 'app-iam' (password user 'app' as fallback)"
echo "\$ redis-cli -p $port ACL WHOAMI"
whoami=$(redis-cli -p "$port" ACL WHOAMI)
echo "$whoami"
echo "\$ redis-cli -p $port SET greeting hello && redis-cli -p $port GET greeting"
redis-cli -p "$port" SET greeting hello
redis-cli -p "$port" GET greeting
echo "\$ elasticache-auth-proxy token --cache-name demo-cache --iam-user app-iam --region us-east-1   # what the proxy sends"
AWS_ACCESS_KEY_ID="$demo_key_id" AWS_SECRET_ACCESS_KEY="$demo_secret" AWS_EC2_METADATA_DISABLED=true \
  "$bin" token --cache-name demo-cache --iam-user app-iam --region us-east-1 | sed -E 's/(X-Amz-Signature=)[0-9a-f]+/\1<signature>/'
echo "== emulator counters:"
stats_addr=$(sed -n 's/^stats //p' "$work/emulator.out")
exec 3<>"/dev/tcp/${stats_addr%:*}/${stats_addr##*:}"; grep -E '^(iam_auth_(success|failure|throttled)_total|sessions_expired_total) ' <&3 || true; exec 3<&-
[ "$whoami" = "app-iam" ] || { echo "demo failed: expected ACL WHOAMI = app-iam" >&2; exit 1; }

if [ "${1:-}" = "--once" ]; then
  echo "demo ok"
  exit 0
fi
echo
echo "The proxy is running; point any Redis client at 127.0.0.1:$port. Ctrl-C stops it."
wait
