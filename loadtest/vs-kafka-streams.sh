#!/usr/bin/env bash
# The pipeline against the Kafka Streams peer of its match topology, side by side on one broker
# and one pre-loaded input (issue 24, item 6): `../shared/bench/run.sh` (README there) with the
# issue's settings: 2,000 orgs, 4 partitions, exactly once, alternating runs of the peer
# (exactly_once_v2, default commit interval), `p2p run` (three topologies) and the match
# topology alone, then the ratios (records/s, CPU per record) and the pass-through baseline.
#
#   deploy/local/kafka.sh start && deploy/local/registry.sh start
#   loadtest/vs-kafka-streams.sh              # about 15 minutes on 2 cores
#   ORGS=400 ROUNDS=1 loadtest/vs-kafka-streams.sh
#
# Every setting of run.sh passes through (ORGS, ROUNDS, VARIANTS, WORK, SKIP_PRODUCE, ...).
# Results: $WORK/summary.txt and results.tsv. Not part of the tests: a benchmark, run on demand.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bench="${BENCH_DIR:-$here/../shared/bench}"
[ -x "$bench/run.sh" ] || { echo "vs-kafka-streams.sh: no $bench/run.sh (set BENCH_DIR)" >&2; exit 2; }
export PRODUCT="$here"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2p-pipeline/target}"
export ORGS="${ORGS:-2000}" POS_PER_ORG="${POS_PER_ORG:-100}" PARTITIONS="${PARTITIONS:-4}"
export ROUNDS="${ROUNDS:-3}"
export VARIANTS="${VARIANTS:-peer-eos-100ms product-run match-only}"
export RUN_BENCH="${RUN_BENCH:-1}"
if [ -z "${BROKER_PID:-}" ] && [ -f "$HOME/.cache/p2p-pipeline/kafka-data-9092/kafka.pid" ]; then
  BROKER_PID="$(cat "$HOME/.cache/p2p-pipeline/kafka-data-9092/kafka.pid")"
fi
export BROKER_PID="${BROKER_PID:-}"
exec "$bench/run.sh"
