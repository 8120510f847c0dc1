#!/usr/bin/env bash
# Proves that the chart's KafkaUser grants enough (issue 28): renders the chart with the
# production example (under an application id of this run's own, so no grant of an earlier
# run counts), grants exactly the KafkaUser's ACLs to the SCRAM user of the project's SASL_SSL
# test broker (deploy/local/kafka.sh secure-start), and runs `p2p run` on the rendered
# pipeline.toml, pointed at that broker, until every runtime is ready (/readyz); then stops it
# (SIGTERM) and expects a clean exit and no authorisation error in its log. What Strimzi's
# User Operator would make of the KafkaUser is Kafka's own ACLs, as granted here.
# Usage: acl-check.sh HELM P2P_BINARY
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
helm="$1"
p2p="$2"
cache="${P2P_CACHE_DIR:-$HOME/.cache/p2p-pipeline}"
work="$(mktemp -d)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAILED: $*" >&2
  [ -f "$work/run.log" ] && tail -n 40 "$work/run.log" >&2
  exit 1
}

app="p2p-aclcheck-$(date +%s)-$RANDOM"
"$helm" template p2p "$here/p2p-pipeline" -f "$here/examples/production.yaml" \
  --set applicationId="$app" > "$work/rendered.yaml"
bash "$root/deploy/local/kafka.sh" secure-start
ca="$cache/kafka-data-secure/tls/ca.pem"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The rendered pipeline.toml, pointed at the test broker (bootstrap, CA, state, metrics; the
# schemas bundled); a setup copy through the broker's super-user listener to create the
# topics; and the KafkaUser's ACLs as `kafka.sh secure-grant` takes them.
python3 - "$work" "$ca" "$port" > "$work/acls" <<'PY'
import re, sys, yaml
work, ca, port = sys.argv[1], sys.argv[2], sys.argv[3]
toml = user = None
for doc in yaml.safe_load_all(open(f"{work}/rendered.yaml")):
    if not doc:
        continue
    if doc.get("kind") == "ConfigMap" and "pipeline.toml" in doc.get("data", {}):
        toml = doc["data"]["pipeline.toml"]
    if doc.get("kind") == "KafkaUser":
        user = doc
assert toml and user, "the production example renders a ConfigMap and a KafkaUser"
replace = {
    '"bootstrap.servers"': '"bootstrap.servers" = "127.0.0.1:9094"',
    '"ssl.ca.location"': f'"ssl.ca.location" = "{ca}"',
    "state_dir": f'state_dir = "{work}/state"',
    "metrics_addr": f'metrics_addr = "127.0.0.1:{port}"',
    "schema_registry_url": None,
}
run, setup = [], []
for line in toml.splitlines():
    key = line.split("=")[0].strip()
    if key in replace:
        if replace[key] is None:
            continue
        line = replace[key]
    run.append(line)
    # The setup copy: no security settings, no password, the super-user listener.
    if key.startswith('"security') or key.startswith('"sasl') or key.startswith('"ssl') or line.startswith("[kafka_env]"):
        continue
    setup.append('"bootstrap.servers" = "127.0.0.1:9095"' if key == '"bootstrap.servers"' else line)
open(f"{work}/pipeline.toml", "w").write("\n".join(run) + "\n")
open(f"{work}/setup.toml", "w").write("\n".join(setup) + "\n")
kinds = {"topic": "TOPIC", "group": "GROUP", "transactionalId": "TRANSACTIONAL_ID", "cluster": "CLUSTER"}
patterns = {"literal": "LITERAL", "prefix": "PREFIXED"}
# Strimzi's operations are Kafka's in camel case (DescribeConfigs: DESCRIBE_CONFIGS).
# The broker's SCRAM user is p2p: the ACLs go to it, whatever the KafkaUser is named.
for acl in user["spec"]["authorization"]["acls"]:
    resource = acl["resource"]
    for operation in acl["operations"]:
        print(f"User:p2p:{kinds[resource['type']]}:{patterns[resource.get('patternType', 'literal')]}:"
              f"{resource.get('name', 'kafka-cluster')}:{re.sub('(?<!^)(?=[A-Z])', '_', operation).upper()}")
PY

"$p2p" admin create-topics --config "$work/setup.toml" >/dev/null || fail "the topics could not be created"
# P2P_ACL_CHECK_DROP=<pattern>: leave out the ACLs matching it (check.sh proves the check
# fails so).
if [ -n "${P2P_ACL_CHECK_DROP:-}" ]; then
  grep -v -- "$P2P_ACL_CHECK_DROP" "$work/acls" > "$work/acls.kept" || true
  mv "$work/acls.kept" "$work/acls"
fi
mapfile -t acls < "$work/acls"
bash "$root/deploy/local/kafka.sh" secure-grant "${acls[@]}" >/dev/null
echo "granted the KafkaUser's ${#acls[@]} ACLs to User:p2p"

P2P_KAFKA_SASL_PASSWORD=p2p-secret HOSTNAME=p2p-0 RUST_LOG=info,rdkafka=warn RUST_BACKTRACE=0 \
  "$p2p" run --config "$work/pipeline.toml" > "$work/run.log" 2>&1 &
pid=$!
ready=false
for _ in $(seq 1 240); do
  kill -0 "$pid" 2>/dev/null || fail "p2p run under the KafkaUser's ACLs exited"
  if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
    ready=true
    break
  fi
  sleep 0.5
done
$ready || fail "p2p run under the KafkaUser's ACLs was not ready within 120 s"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" -eq 0 ] || fail "p2p run exited $status after SIGTERM"
! grep -qi "not authori" "$work/run.log" || fail "an authorisation error under the KafkaUser's ACLs"
echo "p2p run is ready under exactly the KafkaUser's ACLs, and stops cleanly"
