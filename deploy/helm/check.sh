#!/usr/bin/env bash
# Checks the Helm chart offline, with the real tools (issue 28): `helm lint --strict` and
# `helm template` for every values file in examples/, then every rendered object:
# - Kubernetes objects decoded strictly into the k8s.io/api types (check/main.go): an unknown
#   field, a wrong type or an unknown kind fails;
# - KEDA's and prometheus-operator's resources validated by kubeconform (-strict) against JSON
#   schemas built from the CRDs those projects' Go modules ship (KEDA config/crd/bases,
#   prometheus-operator example/prometheus-operator-crd), with kubeconform's
#   openapi2jsonschema.py;
# - Strimzi's KafkaTopic and KafkaUser: Strimzi publishes its CRDs in no registry reachable
#   here (its Maven `api` jar holds the model classes, not the CRD YAML), so they are checked
#   by the chart's own assertions below (the KafkaTopics' names are exactly the topics the
#   rendered configuration uses, as `p2p admin check-config --topics` lists them; counts),
#   and the KafkaUser's ACLs by running
#   the pipeline under exactly them on the project's SASL_SSL test broker (acl-check.sh).
# - the alert rules: `promtool check rules` and `promtool test rules` (each alert fires on its
#   series and not on healthy ones), and every dashboard query parsed by promtool as a rule's
#   expression.
# And that each check can fail: a broken object of each kind must be refused.
# Tools build from the Go module proxy into $P2P_CACHE_DIR/bin (warm after the first run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${P2P_CACHE_DIR:-$HOME/.cache/p2p-pipeline}"
bin="$cache/bin"
mkdir -p "$bin"

HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
KEDA_VERSION=v2.18.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
PROMETHEUS_VERSION=v0.316.0

# Each tool built once per version (a stamp beside it: `go install` leaves the version out of
# some tools' --version).
tool() {
  local name="$1" module="$2" version="$3"
  if ! [ -x "$bin/$name" ] || ! [ -f "$bin/.$name-$version" ]; then
    echo "building $name $version"
    GOBIN="$bin" go install "$module@$version"
    rm -f "$bin/.$name-"* && touch "$bin/.$name-$version"
  fi
}
tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION"
tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION"
(cd "$here/check" && go build -o "$bin/p2p-chart-check" .)

module_dir() { (cd "$cache" && go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); }
schemas="$cache/crd-schemas/keda-$KEDA_VERSION-prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
if ! [ -f "$schemas/done" ]; then
  python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
  keda="$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")"
  promop="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
  kubeconform_dir="$(module_dir "github.com/yannh/kubeconform@$KUBECONFORM_VERSION")"
  rm -rf "$schemas" && mkdir -p "$schemas"
  (cd "$schemas" && FILENAME_FORMAT='{kind}-{fullgroup}-{version}' python3 "$kubeconform_dir/scripts/openapi2jsonschema.py" \
    "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" \
    "$keda/config/crd/bases/keda.sh_triggerauthentications.yaml" \
    "$promop/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
    "$promop/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" >/dev/null)
  touch "$schemas/done"
fi
kubeconform() {
  "$bin/kubeconform" -strict -summary \
    -schema-location "$schemas/{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json" \
    -skip ConfigMap,Secret,Service,StatefulSet,PodDisruptionBudget,KafkaTopic,KafkaUser "$@"
}

chart="$here/p2p-pipeline"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== alert rules and dashboard queries (promtool)"
"$bin/promtool" check rules "$chart/files/alerts.yaml"
(cd "$chart/files" && "$bin/promtool" test rules alerts_test.yaml)
python3 - "$chart/files/dashboard.json" "$out/dashboard-rules.yaml" <<'PY'
import json, sys, yaml
dashboard = json.load(open(sys.argv[1]))
rules = [
    {"record": "p2p:dashboard:panel_%d_%s" % (panel["id"], target["refId"]), "expr": target["expr"]}
    for panel in dashboard["panels"] for target in panel.get("targets", [])
]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print("dashboard: %d queries" % len(rules))
PY
"$bin/promtool" check rules "$out/dashboard-rules.yaml"
for values in "$here"/examples/*.yaml; do
  name="$(basename "$values" .yaml)"
  echo "== $name"
  "$bin/helm" lint --strict "$chart" -f "$values"
  "$bin/helm" template p2p "$chart" -f "$values" > "$out/$name.yaml"
  "$bin/p2p-chart-check" "$out/$name.yaml" | sed 's/^/  /'
  kubeconform "$out/$name.yaml"
done

echo "== the chart's own assertions"
fail() { echo "FAILED: $*" >&2; exit 1; }
prod="$out/production.yaml"
# Every topic of `p2p admin create-topics`: 17 topics and a DLQ for each of the 12 read.
topics=$(grep -c '^kind: KafkaTopic' "$prod")
[ "$topics" -eq 29 ] || fail "29 KafkaTopics expected, $topics rendered"
grep -q 'topicName: invoice-events.dlq' "$prod" || fail "invoice-events.dlq has no KafkaTopic"
# KEDA never asks for more instances than partitions (24 asked, 12 partitions).
grep -q 'maxReplicaCount: 12' "$prod" || fail "maxReplicaCount is not capped at the partition count"
# The alerts and the dashboard are rendered, all of them.
alerts=$(grep -c '^    - alert: P2P' "$prod")
[ "$alerts" -eq "$(grep -c '^      - alert: P2P' "$chart/files/alerts.yaml")" ] || fail "$alerts alerts in the PrometheusRule"
grep -q '"uid": "p2p-pipeline"' "$prod" || fail "the dashboard ConfigMap is not rendered"
# The password is never in the ConfigMap; the pod reads it from the Secret.
grep -q '"sasl.password" = "P2P_KAFKA_SASL_PASSWORD"' "$prod" || fail "no [kafka_env] for the password"
! grep -q 'sasl.password" = "[^P]' "$prod" || fail "a password is in the ConfigMap"
# A static replica count is capped too.
"$bin/helm" template p2p "$chart" -f "$here/examples/minimal.yaml" --set replicas=9 > "$out/capped.yaml"
grep -q '^  replicas: 4$' "$out/capped.yaml" || fail "replicas 9 over 4 partitions were not capped at 4"
# The rendered configuration is one the pipeline accepts (when the binary is built).
p2p="${CARGO_TARGET_DIR:-$cache/target}/debug/p2p"
if [ -x "$p2p" ]; then
  python3 - "$prod" "$out/pipeline.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap" and "pipeline.toml" in doc.get("data", {}):
        open(sys.argv[2], "w").write(doc["data"]["pipeline.toml"])
PY
  P2P_KAFKA_SASL_PASSWORD=x "$p2p" admin check-config --config "$out/pipeline.toml" \
    || fail "the rendered pipeline.toml is refused"
  # The KafkaTopics are the topics that configuration uses, by name, none more, none less.
  P2P_KAFKA_SASL_PASSWORD=x "$p2p" admin check-config --config "$out/pipeline.toml" --topics \
    | sort > "$out/topics.used"
  grep '^  topicName: ' "$prod" | awk '{print $2}' | sort > "$out/topics.rendered"
  diff "$out/topics.used" "$out/topics.rendered" \
    || fail "the chart's KafkaTopics (right) are not the topics the pipeline uses (left)"
  echo "== the KafkaUser's ACLs run the pipeline (SASL_SSL test broker, acl-check.sh)"
  "$here/acl-check.sh" "$bin/helm" "$p2p"
fi

echo "== each check can fail"
if "$bin/p2p-chart-check" "$here/check/testdata/bad-statefulset.yaml" 2>/dev/null; then
  fail "a StatefulSet with an unknown field passed the strict decoding"
fi
if kubeconform "$here/check/testdata/bad-scaledobject.yaml" >/dev/null 2>&1; then
  fail "a ScaledObject with a wrong type and an unknown field passed kubeconform"
fi
if [ -x "$p2p" ] && P2P_ACL_CHECK_DROP=TRANSACTIONAL_ID "$here/acl-check.sh" "$bin/helm" "$p2p" >/dev/null 2>&1; then
  fail "the pipeline ran without the KafkaUser's transactional-id ACLs"
fi
echo "chart checked: $(ls "$here"/examples/*.yaml | wc -l) values files"
