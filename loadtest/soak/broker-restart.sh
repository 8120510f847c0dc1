#!/usr/bin/env bash
# Soak of the broker-restart crash test: runs it RUNS times in a row (default 50), each with
# its own P2P_CRASH_KEEP directory under OUT (default target/soak-broker-restart), deleted when
# the run passes. Stops at the first failure and names the directory holding its pipeline's
# logs, configuration, state and broker data; exits 0 only if every run passed.
#
#   loadtest/soak/broker-restart.sh [RUNS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-50}"
out="${2:-target/soak-broker-restart}"
mkdir -p "$out"
cargo test --test crash --no-run >/dev/null 2>&1
for i in $(seq 1 "$runs"); do
  keep="$out/run-$i"
  rm -rf "$keep"
  mkdir -p "$keep"
  started=$(date +%s)
  # A run that hangs (it once did: a runtime deaf to its shutdown) fails after 10 minutes.
  if P2P_CRASH_KEEP="$keep" timeout 600 cargo test --test crash -- --exact \
      a_broker_restart_mid_run_loses_nothing_and_does_nothing_twice --nocapture \
      >"$keep/test.log" 2>&1; then
    echo "run $i/$runs passed in $(( $(date +%s) - started )) s"
    rm -rf "$keep"
  else
    echo "run $i/$runs FAILED after $(( $(date +%s) - started )) s; logs in $keep (test.log, the pipeline's logs)" >&2
    grep -E "seed|panicked|stalled" "$keep/test.log" | head -5 >&2 || true
    # The test's own broker is kept for the post-mortem; stop it.
    KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 deploy/local/kafka.sh stop || true
    exit 1
  fi
done
echo "$runs runs passed"
