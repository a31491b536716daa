#!/usr/bin/env bash
# Starts the edge for an outside benchmark harness that measures caches side by side (the kind that exports
# ORIGIN_URL, TLS_CERT, TLS_KEY and PEERS_DIR to the command it starts, then stops that command's process group):
# plain HTTP/1.1 on EDGE_H1 (127.0.0.1:9090), TLS (HTTP/1.1, HTTP/2, HTTP/3) on EDGE_TLS (127.0.0.1:9091), admin
# on EDGE_ADMIN (127.0.0.1:9092), a 1 GiB memory tier and no disk tier, logs at warn. In the foreground.
#
#   EDGE_BIN=/path/to/release/edge EXTRA_START="exec $PWD/benches/peers/outside-harness-edge.sh" \
#   EXTRA_TARGETS="edge-h1=http://127.0.0.1:9090,edge-h2=https://127.0.0.1:9091" path/to/run.sh
set -euo pipefail
: "${ORIGIN_URL:?the harness sets ORIGIN_URL}" "${TLS_CERT:?the harness sets TLS_CERT}" "${TLS_KEY:?and TLS_KEY}"
bin=${EDGE_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/edge}
dir=${PEERS_DIR:-/tmp/peers}/edge
rm -rf "$dir"; mkdir -p "$dir"
cat > "$dir/edge.toml" <<TOML
name = "edge"
data_dir = "$dir"
[tls]
listen = "${EDGE_TLS:-127.0.0.1:9091}"
cert = "$TLS_CERT"
key = "$TLS_KEY"
[http]
listen = "${EDGE_H1:-127.0.0.1:9090}"
[admin]
listen = "${EDGE_ADMIN:-127.0.0.1:9092}"
[[site]]
hosts = ["localhost", "127.0.0.1"]
upstream = "$ORIGIN_URL"
[cache]
memory_bytes = 1073741824
disk_bytes = 0
[log]
level = "warn"
TOML
exec "$bin" serve --config "$dir/edge.toml"
