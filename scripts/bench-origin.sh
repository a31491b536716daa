#!/usr/bin/env bash
# Benchmark (not a test): the origin against nginx serving the same folder of 1 MiB objects from the page cache,
# measured in the same run with interleaved repetitions (A B, B A, ...), HTTP/1.1 keep-alive load from wrk with
# random paths. Prints per-repetition figures, medians and the origin/nginx ratios for requests per second,
# Gb/s and requests per server CPU-second (the machine is shared: ratios and per-CPU figures are what count).
#
# Usage: scripts/bench-origin.sh [--quick]       env: REPS (3), DURATION (8 s), CONNS (32), OBJECTS (200)
# Needs: nginx, wrk (scripts/install-test-deps.sh installs both). Uses 127.0.0.1:19180-19182 and /tmp/cdn-bench.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}; DURATION=${DURATION:-8}; CONNS=${CONNS:-32}; OBJECTS=${OBJECTS:-200}
[ "${1:-}" = "--quick" ] && { REPS=1; DURATION=4; }
work=/tmp/cdn-bench
origin_port=19180; origin_admin=19181; nginx_port=19182
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v wrk >/dev/null && [ -x "$NGINX" ] || { echo "bench-origin: needs wrk and nginx (scripts/install-test-deps.sh)"; exit 1; }

echo "bench-origin: building the origin (release)..."
(cd "$root" && cargo build --release --workspace --bins --locked --quiet)
target_dir=${CARGO_TARGET_DIR:-$root/target}

mkdir -p "$work/objects/bench" "$work/nginx/logs"
if [ "$(find "$work/objects/bench" -name '*.ts' | wc -l)" -ne "$OBJECTS" ]; then
  rm -f "$work/objects/bench/"*.ts
  for i in $(seq 0 $((OBJECTS - 1))); do
    head -c 1048576 /dev/urandom > "$work/objects/bench/$(printf 'seg_%03d.ts' "$i")"
  done
fi

cat > "$work/origin.toml" <<TOML
data_dir = "$work"
[media]
listen = "127.0.0.1:$origin_port"
[admin]
listen = "127.0.0.1:$origin_admin"
[api]
listen = ""
[store]
url = "file://$work/objects"
TOML
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  types { video/mp2t ts; }
  access_log $work/nginx/logs/access.log;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/objects;
    add_header Cache-Control "public, max-age=31536000, immutable";
  }
}
CONF

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$target_dir/release/origin" serve --config "$work/origin.toml" > "$work/origin.log" 2>&1 &
pids+=($!); origin_pid=$!
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!); nginx_pid=$!
for _ in $(seq 1 100); do
  curl -fso /dev/null "http://127.0.0.1:$origin_port/bench/seg_000.ts" && curl -fso /dev/null "http://127.0.0.1:$nginx_port/bench/seg_000.ts" && break
  sleep 0.1
done
cmp <(curl -s "http://127.0.0.1:$origin_port/bench/seg_007.ts") "$work/objects/bench/seg_007.ts"
cmp <(curl -s "http://127.0.0.1:$nginx_port/bench/seg_007.ts") "$work/objects/bench/seg_007.ts"
cat "$work/objects/bench/"*.ts > /dev/null   # warm the page cache for both

# CPU ticks (user+system) of a process and its children threads/processes (nginx: master + workers).
cpu_ticks() {
  local total=0 p
  for p in $(pgrep -g "$(ps -o pgid= "$1" | tr -d ' ')" 2>/dev/null || echo "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A rps gbps per_cpu
run() { # name port pid rep
  local before after out r t
  before=$(cpu_ticks "$3")
  out=$(BENCH_OBJECTS=$OBJECTS wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$root/benches/randpath.lua" "http://127.0.0.1:$2/")
  after=$(cpu_ticks "$3")
  r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  t=$(awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
        m=(u=="GB")?8:(u=="MB")?8/1024:(u=="KB")?8/1048576:0; printf "%.2f", n*m}' <<<"$out")
  local cpu_s; cpu_s=$(awk -v a="$before" -v b="$after" -v hz="$hz" 'BEGIN {printf "%.2f", (b-a)/hz}')
  local per; per=$(awk -v r="$r" -v d="$DURATION" -v c="$cpu_s" 'BEGIN {printf "%.0f", (c>0)? r*d/c : 0}')
  rps[$1]+="$r "; gbps[$1]+="$t "; per_cpu[$1]+="$per "
  printf '  rep %d %-7s %10s req/s %7s Gb/s  server CPU %6ss  %7s req per CPU-second\n' "$4" "$1" "$r" "$t" "$cpu_s" "$per"
}

echo "bench-origin: $REPS repetitions x ${DURATION}s, wrk -t2 -c$CONNS, $OBJECTS random 1 MiB objects, HTTP/1.1"
for rep in $(seq 1 "$REPS"); do
  if [ $((rep % 2)) -eq 1 ]; then
    run origin $origin_port $origin_pid "$rep"; run nginx $nginx_port $nginx_pid "$rep"
  else
    run nginx $nginx_port $nginx_pid "$rep"; run origin $origin_port $origin_pid "$rep"
  fi
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
printf '%-8s %12s %10s %22s\n' target "req/s" "Gb/s" "req per CPU-second"
for t in origin nginx; do
  printf '%-8s %12s %10s %22s\n' "$t" "$(median <<<"${rps[$t]}")" "$(median <<<"${gbps[$t]}")" "$(median <<<"${per_cpu[$t]}")"
done
ratio() { awk -v a="$(median <<<"$1")" -v b="$(median <<<"$2")" 'BEGIN {printf "%.2f", (b>0)? a/b : 0}'; }
echo
echo "origin/nginx: req/s $(ratio "${rps[origin]}" "${rps[nginx]}")x, Gb/s $(ratio "${gbps[origin]}" "${gbps[nginx]}")x, req per CPU-second $(ratio "${per_cpu[origin]}" "${per_cpu[nginx]}")x"
