#!/usr/bin/env bash
# Runs the edge (release build) in the foreground as an extra target of a peer benchmark harness that exports
# ORIGIN_URL, PEERS_DIR, TLS_CERT and TLS_KEY (the team's side-by-side harness with nginx, Varnish and Traffic
# Server): plain HTTP/1.1 on 127.0.0.1:${EDGE_H1_PORT:-9090}, TLS (h2, http/1.1) on 127.0.0.1:${EDGE_H2_PORT:-9091}.
# A 1 GiB memory tier over a 2 GiB disk tier, like the peers' caches there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${PEERS_DIR:-/tmp/peers}/edge
rm -rf "$dir"; mkdir -p "$dir"
upstream=${ORIGIN_URL:?the harness sets ORIGIN_URL}
cat > "$dir/edge.toml" <<TOML
name = "edge"
data_dir = "$dir"
[tls]
listen = "127.0.0.1:${EDGE_H2_PORT:-9091}"
cert = "${TLS_CERT:?}"
key = "${TLS_KEY:?}"
[http]
listen = "127.0.0.1:${EDGE_H1_PORT:-9090}"
[admin]
listen = "127.0.0.1:${EDGE_ADMIN_PORT:-9092}"
[[site]]
hosts = ["localhost", "127.0.0.1"]
upstream = "$upstream"
[cache]
memory_bytes = 1073741824
disk_bytes = 2147483648
[log]
level = "warn"
TOML
exec "${CARGO_TARGET_DIR:-$root/target}/release/edge" serve --config "$dir/edge.toml"
