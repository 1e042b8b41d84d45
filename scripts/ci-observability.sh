#!/usr/bin/env bash
# Monitoring checks against a real Prometheus:
# - promtool check rules / check config / test rules on deploy/prometheus;
# - a short lotbridge scenario (examples/metrics_scenario.rs: mock Kafka cluster, vendor
#   simulators, the real engine and /metrics) scraped every second by a real Prometheus on
#   127.0.0.1, then EVERY PromQL expression of the Grafana dashboard and of the alert rules
#   evaluated through Prometheus' HTTP API: each must parse, and each dashboard query must
#   return data.
# Run from the repository root (bash scripts/ci-observability.sh); installs Debian's
# prometheus, jq and curl when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DASHBOARD=deploy/grafana/lotbridge.json
RULES=deploy/prometheus/alerts.yml
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WORK="$(mktemp -d)"
PIDS=()
FAILED=0

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  FAILED=1
}

need() {
  local missing=()
  command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
  command -v jq >/dev/null || missing+=(jq)
  command -v curl >/dev/null || missing+=(curl)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# Waits up to $2 seconds for the file $1 to contain the pattern $3.
wait_for_line() {
  local deadline=$((SECONDS + $2))
  until grep -q "$3" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# Evaluates a PromQL expression now; prints the API answer (JSON).
query() {
  curl -sS --max-time 10 "http://$PROM/api/v1/query" --data-urlencode "query=$1"
}

promtool_checks() {
  promtool check rules "$RULES" || fail "promtool check rules"
  promtool check config deploy/prometheus/prometheus.yml || fail "promtool check config"
  promtool test rules deploy/prometheus/alerts.test.yml || fail "promtool test rules"
}

start_scenario() {
  cargo build --example metrics_scenario
  LOTBRIDGE_METRICS_ADDR=127.0.0.1:0 LOTBRIDGE_SCENARIO_SECS=240 RUST_LOG=warn \
    "$TARGET_DIR/debug/examples/metrics_scenario" >"$WORK/scenario.out" 2>"$WORK/scenario.err" &
  PIDS+=($!)
  if ! wait_for_line "$WORK/scenario.out" 60 "metrics on"; then
    tail -20 "$WORK/scenario.err" >&2
    echo "FAIL: the metrics scenario did not start" >&2
    exit 1
  fi
  TARGET="$(sed -n 's#^metrics on http://\([^/]*\)/metrics#\1#p' "$WORK/scenario.out" | head -1)"
  echo "lotbridge scenario serving metrics on $TARGET"
  curl -fsS --max-time 5 "http://$TARGET/metrics" >"$WORK/first-metrics.txt" || fail "/metrics does not answer 200"
  curl -fsS --max-time 5 "http://$TARGET/healthz" >/dev/null || fail "/healthz does not answer 200"
  local ready
  ready="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$TARGET/readyz")"
  [[ "$ready" == 200 || "$ready" == 503 ]] || fail "/readyz answered $ready"
}

start_prometheus() {
  local port
  port="$(free_port)"
  cp "$RULES" "$WORK/alerts.yml"
  cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $WORK/alerts.yml
scrape_configs:
  - job_name: lotbridge
    static_configs:
      - targets: ["$TARGET"]
EOF
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
  PIDS+=($!)
  PROM="127.0.0.1:$port"
  local deadline=$((SECONDS + 60))
  until [ "$(query 'count(lotbridge_records_consumed_total)' 2>/dev/null | jq -r '.data.result | length' 2>/dev/null)" = 1 ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -20 "$WORK/prometheus.log" >&2
      echo "FAIL: Prometheus on $PROM has no lotbridge samples after 60 s" >&2
      exit 1
    fi
    sleep 1
  done
  echo "Prometheus on $PROM is scraping lotbridge"
}

# Every dashboard query, with the template variables a user would have selected.
dashboard_queries() {
  jq -r '.. | objects | select(has("expr")) | .expr' "$DASHBOARD" |
    sed -e 's/\$__rate_interval/1m/g' -e 's/\$sink/.*/g' -e 's/\$namespace/.*/g' -e 's/\$job/.*/g' -e 's/\$instance/.*/g'
}

# The dashboard's variables: namespace, job, instance and sink, each with "All". The sink
# list must come from a series lotbridge creates for every configured sink at startup,
# before any record is read: checked on the scenario's very first /metrics.
check_variables() {
  local v query metric sinks expr
  for v in namespace job instance sink; do
    jq -e --arg v "$v" '.templating.list[] | select(.name == $v and .includeAll == true)' "$DASHBOARD" >/dev/null ||
      fail "dashboard variable $v missing (or without All)"
  done
  query="$(jq -r '.templating.list[] | select(.name == "sink") | .query.query' "$DASHBOARD")"
  metric="$(sed -n 's/^label_values(\([a-z_]*\).*/\1/p' <<<"$query")"
  [ -n "$metric" ] || { fail "sink variable query not understood: $query"; return; }
  sinks="$(grep "^$metric{" "$WORK/first-metrics.txt" | grep -o 'sink="[^"]*"' | sort -u | tr '\n' ' ')"
  [ "$sinks" = 'sink="bzx" sink="coupons" sink="isp" ' ] ||
    fail "the sink variable's metric $metric does not list every sink at startup: $sinks"
  while IFS= read -r expr; do
    fail "dashboard query ignores the namespace/job/instance variables: $expr"
  done < <(jq -r '.. | objects | select(has("expr")) | .expr' "$DASHBOARD" | grep 'lotbridge_' | grep -v '\$namespace' || true)
}

# Every runbook_url of the alert rules points at an existing heading of docs/monitoring.md.
check_runbooks() {
  local anchor
  while IFS= read -r anchor; do
    grep -qi "^### $anchor\$" docs/monitoring.md || fail "runbook anchor #$anchor has no heading in docs/monitoring.md"
  done < <(sed -n 's/.*runbook_url: ".*docs\/monitoring.md#\([a-z]*\)".*/\1/p' "$RULES")
  [ "$(grep -c '^ *runbook_url:' "$RULES")" = "$(grep -c '^ *- alert:' "$RULES")" ] || fail "an alert without runbook_url"
}

# Retries each dashboard query until it returns data, up to a deadline: rates need a few
# scrapes, and some panels (photos, heartbeats, 429 pauses) need the scenario to get there.
check_dashboard() {
  local deadline=$((SECONDS + 120)) answer status n total=0 empty=()
  mapfile -t exprs < <(dashboard_queries)
  [ "${#exprs[@]}" -gt 0 ] || fail "no expr found in $DASHBOARD"
  jq -e '.templating.list[] | select(.name == "sink")' "$DASHBOARD" >/dev/null || fail "no sink variable in $DASHBOARD"
  jq -e '[.panels[].id] | length == (unique | length)' "$DASHBOARD" >/dev/null || fail "duplicate panel ids in $DASHBOARD"
  jq -e '[.panels[] | select(.type != "row") | (.targets | length) > 0] | all' "$DASHBOARD" >/dev/null ||
    fail "a panel without queries in $DASHBOARD"
  for expr in "${exprs[@]}"; do
    total=$((total + 1))
    while :; do
      answer="$(query "$expr")"
      status="$(jq -r '.status' <<<"$answer" 2>/dev/null || echo error)"
      n="$(jq -r '.data.result | length' <<<"$answer" 2>/dev/null || echo 0)"
      [ "$status" = success ] && [ "$n" -gt 0 ] && break
      if [ "$status" != success ] || [ "$SECONDS" -ge "$deadline" ]; then
        empty+=("$expr -> $(jq -c '{status, error, n: (.data.result | length)}' <<<"$answer" 2>/dev/null || echo "$answer")")
        break
      fi
      sleep 2
    done
  done
  for e in "${empty[@]}"; do fail "dashboard query without data: $e"; done
  echo "dashboard: $((total - ${#empty[@]})) of $total queries returned data"
}

# Every alert rule as Prometheus loaded it: healthy after evaluation, and evaluable.
check_rules() {
  local rules loaded bad expected
  sleep 3 # at least one evaluation round at 1 s
  rules="$(curl -sS --max-time 10 "http://$PROM/api/v1/rules")"
  loaded="$(jq '[.data.groups[].rules[]] | length' <<<"$rules")"
  expected="$(grep -c '^ *- alert:' "$RULES")"
  [ "$loaded" = "$expected" ] || fail "Prometheus loaded $loaded rules, $RULES has $expected"
  bad="$(jq -r '.data.groups[].rules[] | select(.health != "ok") | "\(.name): \(.health) \(.lastError)"' <<<"$rules")"
  [ -z "$bad" ] || fail "unhealthy rules: $bad"
  while IFS= read -r expr; do
    [ "$(query "$expr" | jq -r '.status')" = success ] || fail "rule expression does not evaluate: $expr"
  done < <(jq -r '.data.groups[].rules[].query' <<<"$rules")
  echo "alerts: $loaded rules loaded, healthy and evaluated"
}

need
promtool_checks
check_runbooks
start_scenario
check_variables
start_prometheus
check_dashboard
check_rules
if [ "$FAILED" -ne 0 ]; then
  echo "ci-observability: FAILED"
  exit 1
fi
echo "ci-observability: passed (promtool checks, dashboard and alert queries against a real Prometheus)"
