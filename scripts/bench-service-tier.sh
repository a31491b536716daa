#!/usr/bin/env bash
# Benchmark (not a test) of the service tier scaled out (issue 18): catalog, search and playback requests through
# the edge's plain-HTTP listener over 1, 2 and 3 control-plane instances sharing one PostgreSQL, each instance
# held to an equal CPU share by a cgroup; 100,000 generated titles beside the 3,200 films of vega-datasets
# (npm, fetched once). Prints one table (throughput, p50/p99, the edge's hit ratio on the API route, database
# queries per second, CPU by part) and the issue's goals. See benches/service_tier.py (--help for every knob).
#   scripts/bench-service-tier.sh [--quick] [--rate N] [--seconds N] [--cpu-per-instance CORES] [--out FILE]
# Needs h2load, psql and Debian's PostgreSQL (scripts/install-test-deps.sh), and npm the first time; root (or
# a writable /sys/fs/cgroup/cpu) for the CPU caps, else it warns and runs uncapped.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in h2load psql python3; do command -v "$tool" >/dev/null || { echo "bench-service-tier: needs $tool" >&2; exit 1; }; done
[ -s "$HOME/.cache/video-cdn/movies.json" ] || command -v npm >/dev/null \
  || { echo "bench-service-tier: needs npm once (vega-datasets' movies.json)" >&2; exit 1; }
echo "bench-service-tier: building the release edge and origin..." >&2
(cd "$root" && cargo build --release --locked --quiet -p edge -p origin --bins)
exec python3 "$root/benches/service_tier.py" --bin-dir "${CARGO_TARGET_DIR:-$root/target}/release" "$@"
