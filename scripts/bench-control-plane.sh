#!/usr/bin/env bash
# Benchmark (not a test) of the control plane's API on a 3,201-title catalogue (vega-datasets' movies.json,
# fetched with npm): playback p99 at 2,000 req/s and search p99, with h2load. See benches/control_plane.py.
#   scripts/bench-control-plane.sh [--rate N] [--seconds N] [--out FILE]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in h2load npm curl; do command -v "$tool" >/dev/null || { echo "bench-control-plane: needs $tool" >&2; exit 1; }; done
echo "bench-control-plane: building the release origin..." >&2
(cd "$root" && cargo build --release --locked --quiet -p origin --bin origin)
exec python3 "$root/benches/control_plane.py" --bin-dir "${CARGO_TARGET_DIR:-$root/target}/release" "$@"
