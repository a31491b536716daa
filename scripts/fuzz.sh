#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, its own cargo workspace, with cargo-afl) and runs one, several or all of them,
# one after another, each for a fixed time or a fixed number of executions; prints each target's executions,
# speed, crashes and hangs from AFL++'s fuzzer_stats, and fails when any target crashed or hung.
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   scripts/fuzz.sh --time 600 range path  # two targets, 10 minutes each
#   scripts/fuzz.sh --execs 10000000       # every target, 10 million executions each
#   scripts/fuzz.sh --execs 10000000 --time 900 range   # whichever comes first
#   scripts/fuzz.sh --list                 # the targets
#
# Needs cargo-afl (`cargo install cargo-afl --locked`, then `cargo afl config --build` once for its AFL++
# runtime). Builds in $CARGO_TARGET_DIR (default /tmp/fuzz-target); each target's findings go to
# $FUZZ_OUT/<target> (default /tmp/fuzz-out), replaced on every run: crashes are in
# $FUZZ_OUT/<target>/default/crashes/. Runs under `nice -n 10`, one fuzzer at a time.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/fuzz-target}"
out_root="${FUZZ_OUT:-/tmp/fuzz-out}"

targets_all() {
    find "$fuzz/src/bin" -name '*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort
}

time_budget=""
execs_budget=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --time)
        time_budget="$2"
        shift 2
        ;;
    --execs)
        execs_budget="$2"
        shift 2
        ;;
    --list)
        targets_all
        exit 0
        ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    all) shift ;;
    -*)
        echo "unknown option $1 (try --help)" >&2
        exit 2
        ;;
    *)
        targets+=("$1")
        shift
        ;;
    esac
done
budget=()
budget_text=""
if [ -n "$execs_budget" ]; then
    budget+=(-E "$execs_budget")
    budget_text="$execs_budget executions"
fi
if [ -n "$time_budget" ] || [ -z "$execs_budget" ]; then
    budget+=(-V "${time_budget:-60}")
    budget_text="${budget_text:+$budget_text or }${time_budget:-60} s"
fi
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(targets_all)
fi
for target in "${targets[@]}"; do
    if [ ! -f "$fuzz/src/bin/$target.rs" ]; then
        echo "no fuzz target \`$target\`; the targets are: $(targets_all | tr '\n' ' ')" >&2
        exit 2
    fi
done

if ! cargo afl --version >/dev/null 2>&1; then
    echo "cargo-afl is missing: cargo install cargo-afl --locked && cargo afl config --build" >&2
    exit 1
fi

echo "building the fuzz targets in $CARGO_TARGET_DIR"
(cd "$fuzz" && nice -n 10 cargo afl build --release --locked)

# AFL++ checks the machine's settings; a shared machine or container cannot change them, and need not.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1

stat_of() { sed -n "s/^$2 *: *//p" "$1" | head -n 1; }

failed=0
summary=()
for target in "${targets[@]}"; do
    out="$out_root/$target"
    rm -rf "$out"
    mkdir -p "$out"
    echo "fuzzing $target for $budget_text (findings in $out)"
    # The binary's own output and AFL++'s status lines go to a log; the summary is printed below.
    if ! nice -n 10 cargo afl fuzz -i "$fuzz/corpus/$target" -o "$out" "${budget[@]}" \
        -- "$CARGO_TARGET_DIR/release/$target" >"$out/afl.log" 2>&1; then
        echo "afl-fuzz failed for $target; the end of its log:" >&2
        tail -n 20 "$out/afl.log" >&2
        failed=1
        continue
    fi
    stats="$out/default/fuzzer_stats"
    execs=$(stat_of "$stats" execs_done)
    speed=$(stat_of "$stats" execs_per_sec)
    crashes=$(stat_of "$stats" saved_crashes)
    hangs=$(stat_of "$stats" saved_hangs)
    secs=$(($(stat_of "$stats" last_update) - $(stat_of "$stats" start_time)))
    line=$(printf '%-14s execs_done %12s  %9s execs/s  %5s s  crashes %s  hangs %s' \
        "$target" "$execs" "$speed" "$secs" "$crashes" "$hangs")
    echo "$line"
    summary+=("$line")
    if [ "${crashes:-0}" != 0 ] || [ "${hangs:-0}" != 0 ]; then
        failed=1
        echo "  findings: $out/default/crashes/ and $out/default/hangs/"
    fi
done

echo
echo "summary ($budget_text per target):"
printf '%s\n' "${summary[@]}"
exit $failed
