#!/usr/bin/env bash
# The soak run (NOT run by CI): starts a Tansu broker, then runs lotbridge as a separate
# process for MINUTES (default 60) at RATE events/s (default 200) across 50 lots with a
# vendor fault every 5 minutes (5xx storm, token expiry, 429, 30 s connection refused,
# 5 s answers), printing RSS, consumer lag, held records and outcome counts every minute,
# and checking at the end that every event reached both sinks.
#   scripts/soak.sh [MINUTES] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lotbridge/target}"
export LOTBRIDGE_SOAK_MINUTES=${1:-60}
export LOTBRIDGE_SOAK_RATE=${2:-200}

command -v tansu >/dev/null || cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
state=$(mktemp -d)
trap 'bash scripts/tansu.sh stop "$state"; rm -rf "$state"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bash scripts/tansu.sh start "$state" "$port"
export LOTBRIDGE_SYSTEM_BROKER="127.0.0.1:$port"
echo "soak: $LOTBRIDGE_SOAK_MINUTES minutes at $LOTBRIDGE_SOAK_RATE events/s against tansu on $LOTBRIDGE_SYSTEM_BROKER"
cargo test --release --test system -- --ignored --exact soak::soak --nocapture 2>&1 | grep -E '^(SOAK|SYSTEM|SKIPPED|test |thread|test result)'
exit "${PIPESTATUS[0]}"
