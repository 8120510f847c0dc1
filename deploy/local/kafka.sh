#!/usr/bin/env bash
# A real Apache Kafka broker for development and tests: KRaft, one combined broker+controller
# node on 127.0.0.1, assembled from Maven Central (the runtime classpath of
# org.apache.kafka:kafka_2.13 plus a log4j2 binding). Transactions work on one node
# (replication factor and min ISR 1 for the transaction and offsets topics).
#
#   deploy/local/kafka.sh start    fetch jars (once, cached), format storage (once), start, wait
#   deploy/local/kafka.sh stop     stop the broker started by this script
#   deploy/local/kafka.sh status   exit 0 if a broker answers on the port
#   deploy/local/kafka.sh reset    stop and delete its data
#
# Environment: P2P_CACHE_DIR (default ~/.cache/p2p-pipeline), KAFKA_PORT (9092),
# KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP (512m), KAFKA_START_TIMEOUT (240 seconds).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
cache="${P2P_CACHE_DIR:-$HOME/.cache/p2p-pipeline}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka-pom.xml")"
libs="$cache/kafka-$version/libs"
data="$cache/kafka-data-${KAFKA_PORT:-9092}"
port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
bootstrap="127.0.0.1:$port"


fetch() {
  [ -f "$libs/.complete" ] && return 0
  need java "Java 17 or newer runs the broker"
  need mvn "Maven fetches the broker's jars from Maven Central"
  echo "kafka.sh: fetching Apache Kafka $version from Maven Central into $libs" >&2
  rm -rf "$libs"
  mvn -q -B -f "$here/kafka-pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >&2
  touch "$libs/.complete"
}

# ready SECONDS [PID]: wait until the broker answers (and, given PID, while that process lives).
ready() {
  java -cp "$libs/*" "$here/KafkaReady.java" "$bootstrap" "$@" >&2
}

# log.retention.ms=-1: the load generator stamps records with event times of 2026-01-01 on;
# time-based retention (7 days by default) would delete them under a running test, which then
# sees its committed offsets "out of range".
write_config() {
  mkdir -p "$data/logs"
  cat > "$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data/logs
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
log.retention.ms=-1
num.recovery.threads.per.data.dir=2
PROPS
}

start() {
  need java "Java 17 or newer runs the broker"
  if [ -f "$data/kafka.pid" ] && kill -0 "$(cat "$data/kafka.pid")" 2>/dev/null; then
    ready 60 && return 0
  fi
  fetch
  write_config
  if [ ! -f "$data/logs/meta.properties" ]; then
    cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)"
    java -cp "$libs/*" -Dlog4j2.configurationFile="$here/log4j2.yaml" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$data/server.properties" >&2
  fi
  echo "kafka.sh: starting Apache Kafka $version on $bootstrap (data in $data)" >&2
  # setsid: the broker outlives the shell (and the test process) that started it.
  setsid nohup java "-Xmx${KAFKA_HEAP:-512m}" -Xms128m -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$here/log4j2.yaml" \
    -cp "$libs/*" kafka.Kafka "$data/server.properties" \
    > "$data/kafka.out" 2>&1 < /dev/null &
  echo $! > "$data/kafka.pid"
  # Generous: a broker with many partitions on disk loads (and after a crash, recovers) each
  # of them before it answers, and CI machines are small. A broker that dies fails at once.
  if ! ready "${KAFKA_START_TIMEOUT:-240}" "$(cat "$data/kafka.pid")"; then
    echo "kafka.sh: broker did not come up; last lines of $data/kafka.out:" >&2
    tail -n 30 "$data/kafka.out" >&2 || true
    exit 1
  fi
}

stop() {
  stop_pid_file "$data/kafka.pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) fetch >/dev/null; ready 2 ;;
  reset) stop; rm -rf "$data" ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
