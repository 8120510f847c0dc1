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
# A second, secured broker for the tests of authentication and authorisation faults:
#   deploy/local/kafka.sh secure-start   a broker with a SASL_SSL listener (SCRAM-SHA-512, a
#                                        certificate signed by a CA made here, its PEM in
#                                        <data>/tls/ca.pem) on 127.0.0.1:9094, ACLs enforced
#                                        (StandardAuthorizer, nothing allowed unless granted),
#                                        and a PLAINTEXT listener on 127.0.0.1:9095 whose
#                                        anonymous principal is a super user, for setting up;
#                                        SCRAM user p2p, password p2p-secret
#   deploy/local/kafka.sh secure-grant ACL...   grants ACLs on it (see KafkaAcls.java)
#   deploy/local/kafka.sh secure-stop | secure-reset
#
# Environment: P2P_CACHE_DIR (default ~/.cache/p2p-pipeline), KAFKA_PORT (9092),
# KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP (512m), KAFKA_START_TIMEOUT (240 seconds).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
cache="${P2P_CACHE_DIR:-$HOME/.cache/p2p-pipeline}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka-pom.xml")"
libs="$cache/kafka-$version/libs"
secure=false
case "${1:-}" in secure-*) secure=true ;; esac
if $secure; then
  data="$cache/kafka-data-secure"
  port=9095
  controller_port=9096
  sasl_port=9094
else
  data="$cache/kafka-data-${KAFKA_PORT:-9092}"
  port="${KAFKA_PORT:-9092}"
  controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
fi
bootstrap="127.0.0.1:$port"
tls_password="p2p-test-tls"


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
  if $secure; then
    cat >> "$data/server.properties" <<PROPS
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,SASL_SSL://127.0.0.1:$sasl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.location=$data/tls/broker.p12
ssl.keystore.type=PKCS12
ssl.keystore.password=$tls_password
ssl.key.password=$tls_password
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
PROPS
  fi
}

# A CA of our own and the broker's certificate signed by it (for 127.0.0.1 and localhost);
# clients trust <data>/tls/ca.pem.
make_tls() {
  [ -f "$data/tls/broker.p12" ] && return 0
  need keytool "keytool (part of Java) makes the test CA and the broker's certificate"
  local dir="$data/tls" pass="$tls_password"
  rm -rf "$dir"
  mkdir -p "$dir"
  keytool -genkeypair -alias ca -dname CN=p2p-test-ca -keystore "$dir/ca.p12" -storetype PKCS12 \
    -storepass "$pass" -keyalg RSA -keysize 2048 -ext bc:c -validity 3650 >&2 2>/dev/null
  keytool -exportcert -alias ca -keystore "$dir/ca.p12" -storepass "$pass" -rfc \
    -file "$dir/ca.pem" >&2 2>/dev/null
  keytool -genkeypair -alias broker -dname CN=localhost -keystore "$dir/broker.p12" \
    -storetype PKCS12 -storepass "$pass" -keyalg RSA -keysize 2048 -validity 3650 >&2 2>/dev/null
  keytool -certreq -alias broker -keystore "$dir/broker.p12" -storepass "$pass" \
    -file "$dir/broker.csr" >&2 2>/dev/null
  keytool -gencert -alias ca -keystore "$dir/ca.p12" -storepass "$pass" -infile "$dir/broker.csr" \
    -outfile "$dir/broker.pem" -rfc -ext SAN=IP:127.0.0.1,DNS:localhost -validity 3650 >&2 2>/dev/null
  keytool -importcert -alias ca -keystore "$dir/broker.p12" -storepass "$pass" \
    -file "$dir/ca.pem" -noprompt >&2 2>/dev/null
  keytool -importcert -alias broker -keystore "$dir/broker.p12" -storepass "$pass" \
    -file "$dir/broker.pem" >&2 2>/dev/null
}

start() {
  need java "Java 17 or newer runs the broker"
  if [ -f "$data/kafka.pid" ] && kill -0 "$(cat "$data/kafka.pid")" 2>/dev/null; then
    ready 60 && return 0
  fi
  fetch
  write_config
  scram=()
  if $secure; then
    make_tls
    scram=(--add-scram 'SCRAM-SHA-512=[name=p2p,password=p2p-secret]')
  fi
  if [ ! -f "$data/logs/meta.properties" ]; then
    cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)"
    java -cp "$libs/*" -Dlog4j2.configurationFile="$here/log4j2.yaml" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$data/server.properties" ${scram[@]+"${scram[@]}"} >&2
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
  start | secure-start) start ;;
  stop | secure-stop) stop ;;
  status) fetch >/dev/null; ready 2 ;;
  reset | secure-reset) stop; rm -rf "$data" ;;
  secure-grant) shift; fetch; java -cp "$libs/*" "$here/KafkaAcls.java" "$bootstrap" "$@" ;;
  *) echo "usage: $0 start|stop|status|reset|secure-start|secure-grant ACL...|secure-stop|secure-reset" >&2; exit 2 ;;
esac
