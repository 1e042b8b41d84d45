#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time.
#
# NOT run by CI: it needs the nightly toolchain and sanitizer builds, and its findings
# depend on how long it runs. Run it by hand (see fuzz/README.md). The checks themselves are
# lotbridge::fuzzing, and stable `cargo test` (tests/fuzz_seeds.rs) runs every target's
# seeds and the crashes this script kept (fuzz/regressions/<target>/, tests/corpus/fuzz-*.bin).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
#   FUZZ_TARGETS="decode_event isp_response"    run only these targets
#   FUZZ_JOBS=2                                 run this many targets at once (default 1)
#
# For each target: seeds from fuzz/seeds/<target>/ and the growing corpus fuzz/corpus/<target>/
# (gitignored) are the inputs. A crash is minimized with `cargo fuzz tmin` and copied to
# tests/corpus/fuzz-decode_event-<hash>.bin (the decoder's hostile corpus) or, for any other
# target (vendor replies, map_event, photo_recompress),
# fuzz/regressions/<target>/fuzz-<target>-<hash>.bin. Exits non-zero if any target crashed.
set -euo pipefail

secs="${1:-60}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
logs="$fuzz/artifacts/logs"
jobs="${FUZZ_JOBS:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: installing it" >&2
    cargo install cargo-fuzz --locked
fi
targets="${FUZZ_TARGETS:-$(cd "$fuzz" && cargo +nightly fuzz list)}"

# Debug assertions on: an arithmetic overflow is a crash, as it is in `cargo test`.
(cd "$fuzz" && cargo +nightly fuzz build -a)
mkdir -p "$logs"

run() {
    local target="$1" corpus="$fuzz/corpus/$1"
    mkdir -p "$corpus" "$fuzz/artifacts/$target"
    echo "fuzzing $target for ${secs}s (log: $logs/$target.log)"
    # -timeout: one input taking over 10 s is a hang worth a report. -len_control=0: long inputs
    # from the start, or a reason that grows with the reply (bounded at 600 chars) is never reached.
    # -malloc_limit_mb: one allocation over 1 GiB is a crash (photo decoding is bounded at
    # 192 MiB; tests/fuzz_seeds.rs refuses the same).
    (cd "$fuzz" && cargo +nightly fuzz run -a "$target" "$corpus" "$fuzz/seeds/$target" -- \
        -max_total_time="$secs" -max_len=8192 -len_control=0 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1) \
        >"$logs/$target.log" 2>&1 || true
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec)' "$logs/$target.log" |
        sed "s/^/  $target: /" || true
}

collect() {
    local target="$1" found=0 crash min hash dest
    for crash in "$fuzz/artifacts/$target"/crash-* "$fuzz/artifacts/$target"/oom-* "$fuzz/artifacts/$target"/timeout-*; do
        [ -e "$crash" ] || continue
        found=1
        min="$crash.min"
        (cd "$fuzz" && cargo +nightly fuzz tmin -a "$target" "$crash" -- -exact_artifact_path="$min") \
            >"$logs/$target.tmin.log" 2>&1 || true
        [ -s "$min" ] || min="$crash"
        hash="$(sha1sum "$min" | cut -c1-12)"
        if [ "$target" = decode_event ]; then
            dest="tests/corpus/fuzz-$target-$hash.bin"
        else
            dest="fuzz/regressions/$target/fuzz-$target-$hash.bin"
        fi
        mkdir -p "$(dirname "$root/$dest")"
        cp "$min" "$root/$dest"
        echo "CRASH $target: $dest (from $crash)" >&2
    done
    return "$found"
}

mkdir -p "$root/tests/corpus"
running=0
for t in $targets; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

status=0
for t in $targets; do collect "$t" || status=1; done
if [ "$status" -ne 0 ]; then
    echo "crashes found: fix them; tests/corpus.rs requires every fuzz-decode_event input to be rejected" \
        "(an input the fix makes valid belongs in fuzz/regressions/decode_event/ instead); cargo test" \
        "runs every fuzz/regressions/<target>/ input through its check, and each wants a unit test" \
        "next to the fixed code" >&2
fi
exit "$status"
