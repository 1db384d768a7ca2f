#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs redis-server/redis-tools
# when missing, then runs every unit and integration test (real TLS
# redis-server, real proxy, real clients).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if ! redis-server --help 2>&1 | grep -q -- "--tls-port" && ! strings "$(command -v redis-server)" 2>/dev/null | grep -q tls-port; then
  echo "warning: this redis-server may lack TLS support; the tests need it" >&2
fi
cargo test --all-targets "$@"
