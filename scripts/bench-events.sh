#!/usr/bin/env bash
# Benchmark (not a test) of player events through POST /v1/events into the embedded log and into a Kafka-protocol
# broker (tansu, when installed at $TANSU or ~/.cache/tansu-0.6.0): events accepted per second and per origin
# CPU-second, and the lag to the QoE metrics. See benches/events.py.
#   scripts/bench-events.sh [--seconds 20] [--repeat 3] [--out FILE]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v h2load >/dev/null || { echo "bench-events: needs h2load (nghttp2-client)" >&2; exit 1; }
echo "bench-events: building the release origin..." >&2
(cd "$root" && cargo build --release --locked --quiet -p origin --bin origin)
exec python3 "$root/benches/events.py" --bin-dir "${CARGO_TARGET_DIR:-$root/target}/release" "$@"
