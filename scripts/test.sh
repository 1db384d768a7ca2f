#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs redis-server/redis-tools
# when missing, then runs every unit and integration test (real TLS
# redis-server, real proxy, real clients).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# Debian's build links OpenSSL; a build without TLS does not.
if ! ldd "$(command -v redis-server)" 2>/dev/null | grep libssl >/dev/null; then
  echo "warning: this redis-server may lack TLS support; the tests need it" >&2
fi
cargo test --all-targets "$@"
