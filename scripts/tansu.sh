#!/usr/bin/env bash
# Starts, stops or restarts a Tansu broker (an Apache-Kafka-compatible broker) on loopback,
# keeping its data in DIR/tansu.db (sqlite storage: survives restarts, correct watermarks).
#   scripts/tansu.sh start DIR PORT | stop DIR | restart DIR PORT
# Used by scripts/ci-system-tests.sh and scripts/soak.sh; `tansu` must be on PATH.
set -euo pipefail
action=${1:?start, stop or restart}
dir=${2:?state directory}
port=${3:-$(cat "$dir/port" 2>/dev/null || true)}

wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "tansu did not listen on 127.0.0.1:$1 within 30 s; its log:" >&2
  tail -n 30 "$dir/tansu.log" >&2 || true
  return 1
}

start() {
  : "${port:?PORT is needed to start}"
  mkdir -p "$dir"
  echo "$port" >"$dir/port"
  # Tansu logs through tracing; keep it to warnings so the log stays small. Its sqlite
  # URL takes a path relative to the working directory, hence the cd.
  (cd "$dir" && RUST_LOG=${TANSU_LOG:-warn} exec nohup tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "sqlite://tansu.db" >>tansu.log 2>&1) &
  echo $! >"$dir/pid"
  wait_port "$port"
}

stop() {
  [ -f "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 start DIR PORT | stop DIR | restart DIR PORT" >&2; exit 2 ;;
esac
