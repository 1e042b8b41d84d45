#!/usr/bin/env bash
# System tests against a standalone Kafka-protocol broker (Tansu): installs Tansu when it
# is missing, starts it on a free loopback port with sqlite storage, runs tests/system
# (lotbridge as a separate process; crashes, broker restart, vendor faults, hostile
# records, rebalancing, secrets; SASL_SSL through stunnel, installed when missing) and
# stops everything it started. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lotbridge/target}"

if ! command -v tansu >/dev/null; then
  echo "tansu is missing: building it (about 15 minutes on 2 cores)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
fi
tansu --version || true

# The secured-Kafka test (tests/system/secure.rs) puts stunnel's TLS in front of its own
# Tansu with SCRAM-SHA-512 authentication.
if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
  echo "stunnel4 is missing: installing it"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q stunnel4
fi

state=$(mktemp -d)
cleanup() {
  bash scripts/tansu.sh stop "$state" || true
  if [ "${KEEP_TANSU_STATE:-}" = "" ]; then rm -rf "$state"; else echo "broker state kept in $state"; fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bash scripts/tansu.sh start "$state" "$port"
printf '#!/usr/bin/env bash\nexec bash %q "$1" %q %q\n' "$PWD/scripts/tansu.sh" "$state" "$port" >"$state/ctl.sh"
export LOTBRIDGE_SYSTEM_BROKER="127.0.0.1:$port"
export LOTBRIDGE_SYSTEM_BROKER_CTL="$state/ctl.sh"
echo "tansu on $LOTBRIDGE_SYSTEM_BROKER (state in $state)"

# One test at a time: they share the broker and the machine's two cores. Release build:
# lotbridge and the simulators then run at the speed a deployment sees.
set +e
cargo test --release --test system -- --ignored --skip soak --test-threads=1 --nocapture "$@" 2>&1 | tee "$state/system-tests.log" |
  grep --line-buffered -E '^(test |SYSTEM |SKIPPED|running|test result|thread .* panicked|  left|  right|failures)'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "system tests failed; the last 80 lines of their output:" >&2
  tail -n 80 "$state/system-tests.log" >&2
fi
exit "$status"
