#!/usr/bin/env bash
# The full load soak (issue 12): tests/soak.rs at full size, release build.
# 9,000 concurrent sessions through the real proxy binary for 120 s, every
# one re-authenticated every 2 s against the emulator's 4 s session age,
# with the upstream (the emulator) killed and restarted at 40% of the run:
# SET/GET pipelines with values unique to their session, WATCH/MULTI/EXEC
# loops, BLPOP consumers with LPUSH producers, and RESP2 SUBSCRIBE and
# SSUBSCRIBE subscribers to a numbered stream each. It prints the counts
# (replies checked, messages published, owed and received, queue items,
# re-authentications, cuts) and fails on any error.
#
#   scripts/soak.sh
#   SOAK_SESSIONS=3000 SOAK_SECONDS=60 scripts/soak.sh
#
# Knobs: SOAK_SESSIONS [9000]  SOAK_SECONDS [120]
#        SOAK_STEADY_PERIOD_MS [2000] (between one SET/GET session's pipelines)
#        SOAK_MAX_AGE_S [4] (the emulator's max-session-age; the proxy re-authenticates after 2 s)
# The suite runs the same test small (600 sessions, 20 s) in debug.
# Each session holds a socket here and two in the proxy and the emulator
# (client side and upstream), so the descriptor limit must be at least
# 2 x sessions + 1,000 (20,000 on the machine this was written on).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

export SOAK_SESSIONS=${SOAK_SESSIONS:-9000}
export SOAK_SECONDS=${SOAK_SECONDS:-120}
need=$((2 * SOAK_SESSIONS + 1000))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  echo "the descriptor limit is $(ulimit -n); $SOAK_SESSIONS sessions need $need (ulimit -n)" >&2
  exit 1
fi
cargo test --release --test soak -- --nocapture
