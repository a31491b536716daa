#!/usr/bin/env bash
# The benchmark suite (not a test): the edge against nginx proxy_cache, Varnish (with hitch for TLS) and Apache
# Traffic Server, all in front of one nginx origin, and over HTTP/3 against Caddy serving the same files; on
# 127.0.0.1:19400-19460, measured in one interleaved run.
# Prints one table (medians, ranges, ratios edge ÷ each peer) and writes JSON (default
# /tmp/video-cdn-bench/result.json). See benches/bench.py for what is measured.
#
#   scripts/bench.sh --quick            1 repetition, short tests (under 3 minutes)
#   scripts/bench.sh --full             3 interleaved repetitions (under 15 minutes); the default
#   scripts/bench.sh --install-peers    first apt-get install the peers and load generators
#   other flags go to benches/bench.py (--peers nginx,varnish --tests 1m --no-herd --out FILE ...)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
args=()
for a in "$@"; do
  case $a in
    --install-peers)
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq nginx varnish hitch trafficserver caddy wrk nghttp2-client curl python3 >/dev/null ;;
    --full) ;;
    *) args+=("$a") ;;
  esac
done
echo "bench: building the release binaries (edge, h3load)..." >&2
(cd "$root" && cargo build --release --locked --quiet -p edge -p benches --bin edge --bin h3load)
exec python3 "$root/benches/bench.py" --bin-dir "${CARGO_TARGET_DIR:-$root/target}/release" "${args[@]}"
