#!/usr/bin/env bash
# Benchmark (not a test): 1 MiB hot hits from the edge over HTTP/3 (benches' h3load) against the same edge over
# TLS HTTP/2 (h2load), interleaved repetitions in one run, with the edge's own CPU time measured for each, and
# the ratio of requests per server CPU-second (the issue's goal: HTTP/3 >= 0.8x HTTP/2).
#
# Usage: scripts/bench-h3.sh [--quick]     env: REPS (3), DURATION (8 s), CONNS (8), STREAMS (4), OBJECTS (100)
# Needs h2load (nghttp2-client). Uses 127.0.0.1:19280-19284 and /tmp/cdn-bench-h3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}; DURATION=${DURATION:-8}; CONNS=${CONNS:-8}; STREAMS=${STREAMS:-4}; OBJECTS=${OBJECTS:-100}
[ "${1:-}" = "--quick" ] && { REPS=1; DURATION=4; }
work=/tmp/cdn-bench-h3
command -v h2load >/dev/null || { echo "bench-h3: needs h2load (scripts/install-test-deps.sh)"; exit 1; }
echo "bench-h3: building (release)..."
(cd "$root" && cargo build --release --workspace --bins --locked --quiet)
bin=${CARGO_TARGET_DIR:-$root/target}/release

rm -rf "$work/edge"; mkdir -p "$work/objects/bench" "$work/edge"
if [ "$(find "$work/objects/bench" -name '*.ts' | wc -l)" -ne "$OBJECTS" ]; then
  rm -f "$work/objects/bench/"*.ts
  for i in $(seq 0 $((OBJECTS - 1))); do head -c 1048576 /dev/urandom > "$work/objects/bench/$(printf 'seg_%03d.ts' "$i")"; done
fi
"$bin/edge" cert --out "$work/tls" >/dev/null
cat > "$work/origin.toml" <<TOML
data_dir = "$work"
[media]
listen = "127.0.0.1:19280"
[admin]
listen = "127.0.0.1:19281"
[api]
listen = ""
[store]
url = "file://$work/objects"
[log]
level = "warn"
TOML
cat > "$work/edge.toml" <<TOML
data_dir = "$work/edge"
[tls]
listen = "127.0.0.1:19282"
cert = "$work/tls/cert.pem"
key = "$work/tls/key.pem"
[admin]
listen = "127.0.0.1:19284"
[[site]]
hosts = ["localhost", "127.0.0.1"]
upstream = "http://127.0.0.1:19280"
[cache]
memory_bytes = 536870912
[log]
level = "warn"
TOML
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
"$bin/origin" serve --config "$work/origin.toml" & pids+=($!)
"$bin/edge" serve --config "$work/edge.toml" & pids+=($!); edge_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:19284/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
urls="$work/urls.txt"; : > "$urls"
for i in $(seq 0 $((OBJECTS - 1))); do echo "https://localhost:19282/bench/$(printf 'seg_%03d.ts' "$i")" >> "$urls"; done
while read -r url; do curl -s --cacert "$work/tls/ca.pem" -o /dev/null "$url"; done < "$urls"   # warm: all cached
cpu() { awk '{print $14 + $15}' "/proc/$edge_pid/stat"; }
hz=$(getconf CLK_TCK)

declare -A per_core rps gbps
run() { # proto rep
  local before after out r t n
  before=$(cpu)
  if [ "$1" = h2 ]; then
    out=$(h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$DURATION" -i "$urls" 2>&1)
    r=$(awk '/^finished in/ {print $4}' <<<"$out" | tr -d ',')
    n=$(awk '/^requests:/ {print $8}' <<<"$out")
    t=$(awk -v r="$r" 'BEGIN {printf "%.2f", r * 1048576 * 8 / 1e9}')
  else
    out=$("$bin/h3load" --ca "$work/tls/ca.pem" -c "$CONNS" -m "$STREAMS" -D "$DURATION" $(cat "$urls") | tail -1)
    r=$(python3 -c 'import json,sys; print("%.2f" % json.loads(sys.argv[1])["req_per_s"])' "$out")
    n=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["requests"])' "$out")
    t=$(python3 -c 'import json,sys; print("%.2f" % json.loads(sys.argv[1])["gbit_per_s"])' "$out")
  fi
  after=$(cpu)
  local secs; secs=$(awk -v a="$before" -v b="$after" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}')
  local per; per=$(awk -v n="$n" -v c="$secs" 'BEGIN {printf "%.0f", (c > 0) ? n / c : 0}')
  rps[$1]+="$r "; gbps[$1]+="$t "; per_core[$1]+="$per "
  printf '  rep %d %-3s %9s req/s %6s Gb/s  edge CPU %6ss  %6s req per edge CPU-second\n' "$2" "$1" "$r" "$t" "$secs" "$per"
}
echo "bench-h3: $REPS x ${DURATION}s, $CONNS connections x $STREAMS streams, $OBJECTS hot 1 MiB objects"
for rep in $(seq 1 "$REPS"); do
  if [ $((rep % 2)) -eq 1 ]; then run h2 "$rep"; run h3 "$rep"; else run h3 "$rep"; run h2 "$rep"; fi
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf '\n%-5s %10s %8s %24s\n' proto "req/s" "Gb/s" "req per edge CPU-second"
for p in h2 h3; do printf '%-5s %10s %8s %24s\n' "$p" "$(median <<<"${rps[$p]}")" "$(median <<<"${gbps[$p]}")" "$(median <<<"${per_core[$p]}")"; done
ratio() { awk -v a="$(median <<<"$1")" -v b="$(median <<<"$2")" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }
echo
echo "h3/h2: req/s $(ratio "${rps[h3]}" "${rps[h2]}")x, req per edge CPU-second $(ratio "${per_core[h3]}" "${per_core[h2]}")x (goal >= 0.8)"
