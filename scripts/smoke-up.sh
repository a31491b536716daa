#!/usr/bin/env bash
# A smoke run of scripts/up.sh as a newcomer would use it: start it on spare loopback ports with a fresh data
# folder, fetch the URLs it prints, then stop it with Ctrl-C (SIGINT) and check that it exits cleanly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill -INT $up_pid 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
media="127.0.0.1:$(port)"
admin="127.0.0.1:$(port)"

CDN_DATA_DIR="$work/data" ORIGIN_MEDIA_LISTEN="$media" ORIGIN_ADMIN_LISTEN="$admin" CDN_PROFILE=dev \
  setsid "$root/scripts/up.sh" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do
  grep -q "Press Ctrl-C" "$work/up.log" && break
  kill -0 $up_pid 2>/dev/null || { cat "$work/up.log"; echo "smoke-up: up.sh exited early"; exit 1; }
  sleep 0.5
done
grep -q "Press Ctrl-C" "$work/up.log" || { cat "$work/up.log"; echo "smoke-up: up.sh did not come up"; exit 1; }

urls=$(grep -Eo "http://$media/[^ ]+" "$work/up.log")
[ "$(echo "$urls" | wc -l)" -ge 4 ] || { cat "$work/up.log"; echo "smoke-up: expected at least 4 player URLs"; exit 1; }
for url in $urls; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$url")
  [ "$code" = 200 ] || { echo "smoke-up: $url -> $code"; exit 1; }
done
curl -fsS "http://$admin/metrics" | grep -q 'origin_http_requests_total{method="GET",status_class="2xx"}'

kill -INT -- -$up_pid
for _ in $(seq 1 100); do kill -0 $up_pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $up_pid 2>/dev/null; then echo "smoke-up: up.sh did not stop on Ctrl-C"; exit 1; fi
grep -q "stopped" "$work/up.log" || { cat "$work/up.log"; echo "smoke-up: the origin did not drain and stop"; exit 1; }
echo "smoke-up: ok ($(echo "$urls" | wc -l) player URLs served, clean stop on Ctrl-C)"
