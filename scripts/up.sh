#!/usr/bin/env bash
# Starts the whole stack in the foreground with embedded defaults and prints the URLs a player uses; Ctrl-C
# stops it cleanly. The stack: the media origin over a local object-store folder holding the sample titles
# (ingested on first run), and one edge (HTTPS, HTTP/1.1 + HTTP/2) in front of it with its cache under the data
# folder and a local certificate authority made on first run; and the control plane's API (catalog in SQLite
# under the data folder, playback URLs signed with a key the origin and the edge share, made on first run) with
# the web front end (sign in, browse, search, play) and a demo account.
#
# Options:
#   --large-catalog       also list the 3,200 films of the npm package vega-datasets as metadata-only titles
#                         (browse and search them; the samples stay the playable ones). Needs npm the first time.
#   --edges N             N edges (1 to 8) in two regions, eu-west and us-east (alternately), each registering
#                         with the control plane and reporting its load; playback answers rank the viewer's
#                         region first and give Content Steering manifests that move players between edges.
#                         Edge i listens on the TLS and admin ports of the first edge plus i-1.
#   --scale N             N control-plane instances (1 to 8) behind the edge instead of one on its own port:
#                         they share a PostgreSQL catalog (Debian's PostgreSQL, started here on PG_LISTEN with
#                         its data under the data folder), the object-store folder and the embedded bus; the
#                         edge serves the API and the web front end (https://localhost:8443/) from a path route
#                         over them, with health checks, balancing and retries. Instance i's API listens on the
#                         API port plus i-1; its media and admin listeners on free ports (its log names them).
#
# Environment (all optional):
#   CDN_DATA_DIR          data folder (default: ./data in the repository)
#   ORIGIN_MEDIA_LISTEN   origin media listener (default 127.0.0.1:8080)
#   ORIGIN_ADMIN_LISTEN   origin admin listener (default 127.0.0.1:9900)
#   API_LISTEN            control-plane API (default 127.0.0.1:8000)
#   EDGE_TLS_LISTEN       edge HTTPS listener (default 127.0.0.1:8443)
#   EDGE_ADMIN_LISTEN     edge admin listener (default 127.0.0.1:9901)
#   PG_LISTEN             PostgreSQL for --scale (default 127.0.0.1:5433)
#   CDN_PROFILE           cargo profile to build and run: release (default) or dev
set -euo pipefail
large_catalog=no
edges=1
scale=0
while [ $# -gt 0 ]; do
  case "$1" in
    --large-catalog) large_catalog=yes ;;
    --edges) edges=${2:-}; shift ;;
    --edges=*) edges=${1#--edges=} ;;
    --scale) scale=${2:-}; shift ;;
    --scale=*) scale=${1#--scale=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$edges" in
  [1-8]) ;;
  *) echo "up.sh: --edges takes a number from 1 to 8" >&2; exit 2 ;;
esac
case "$scale" in
  0|[1-8]) ;;
  *) echo "up.sh: --scale takes a number from 1 to 8" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
data=${CDN_DATA_DIR:-$root/data}
media=${ORIGIN_MEDIA_LISTEN:-127.0.0.1:8080}
origin_admin=${ORIGIN_ADMIN_LISTEN:-127.0.0.1:9900}
api=${API_LISTEN:-127.0.0.1:8000}
edge_tls=${EDGE_TLS_LISTEN:-127.0.0.1:8443}
edge_admin=${EDGE_ADMIN_LISTEN:-127.0.0.1:9901}
pg_listen=${PG_LISTEN:-127.0.0.1:5433}
profile=${CDN_PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"

command -v cargo >/dev/null || { echo "up.sh: cargo is needed (https://rustup.rs)" >&2; exit 1; }
echo "up.sh: building ($profile; the first build takes several minutes)..."
(cd "$root" && cargo build --workspace --bins --profile "$profile" --locked --quiet)

mkdir -p "$data/objects" "$data/edge"
# A local CA and certificate, remade when a week old (browsers accept pinned certificates up to 14 days).
if [ -z "$(find "$data/edge/tls/cert.pem" -mtime -7 2>/dev/null)" ]; then
  "$bin_dir/edge" cert --out "$data/edge/tls" --force >/dev/null
fi
# The URL-signing key the control plane signs with and the edge verifies with, made on first run.
if [ ! -s "$data/signing.secret" ]; then
  (umask 077; head -c 36 /dev/urandom | base64 | tr -d '\n/+=' > "$data/signing.secret")
fi
secret=$(cat "$data/signing.secret")
# The service credential servers (and this script) ask for playback with, made on first run.
if [ ! -s "$data/service.token" ]; then
  (umask 077; head -c 36 /dev/urandom | base64 | tr -d '\n/+=' > "$data/service.token")
fi
service_token=$(cat "$data/service.token")
# The web front end's players (hls.js, dash.js) from npm, installed into origin/web on first run.
if [ ! -d "$root/origin/web/node_modules/hls.js" ]; then
  if command -v npm >/dev/null; then
    echo "up.sh: installing the web front end's players (npm ci in origin/web)"
    (cd "$root/origin/web" && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "up.sh: npm is not installed: the web front end will load without its players" >&2
  fi
fi
# Several edges register with the control plane (a secret made on first run) instead of being listed.
if [ "$edges" -gt 1 ]; then
  if [ ! -s "$data/fleet.secret" ]; then
    (umask 077; head -c 36 /dev/urandom | base64 | tr -d '\n/+=' > "$data/fleet.secret")
  fi
  fleet_secret=$(cat "$data/fleet.secret")
  edges_toml="[fleet]
registration_secret = \"$fleet_secret\"
heartbeat_timeout_secs = 6
[steering]
ttl_secs = 5
[steering.distances.eu-west]
us-east = 80"
else
  edges_toml="[playback]
edges = [\"https://localhost:${edge_tls##*:}\"]"
fi
# With --scale: PostgreSQL holds the catalog every instance shares (Debian's, run by this script as the
# `postgres` user when it runs as root; trust authentication on loopback only).
scale_toml=""
api_toml=""
if [ "$scale" -gt 0 ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$pg_bin/initdb" ] || { echo "up.sh: --scale needs PostgreSQL (apt-get install postgresql)" >&2; exit 1; }
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  if [ ! -s "$data/postgres/data/PG_VERSION" ]; then
    mkdir -p "$data/postgres"
    [ "$(id -u)" = 0 ] && chown postgres "$data/postgres"
    as_pg test -w "$data/postgres" || {
      echo "up.sh: the postgres user cannot reach $data/postgres: let it through the folders above (chmod o+x) or set CDN_DATA_DIR" >&2
      exit 1
    }
    as_pg "$pg_bin/initdb" -D "$data/postgres/data" -U cdn --auth=trust -E UTF8 >/dev/null
  fi
  if ! as_pg "$pg_bin/pg_ctl" -D "$data/postgres/data" status >/dev/null 2>&1; then
    as_pg "$pg_bin/pg_ctl" -D "$data/postgres/data" -l "$data/postgres/log" -w \
      -o "-p ${pg_listen##*:} -c listen_addresses=${pg_listen%:*} -k $data/postgres" start >/dev/null \
      || { echo "up.sh: PostgreSQL did not start (see $data/postgres/log)" >&2; exit 1; }
  fi
  trap 'as_pg "$pg_bin/pg_ctl" -D "$data/postgres/data" -m fast -w stop >/dev/null 2>&1 || true' EXIT
  scale_toml="[catalog]
url = \"postgres://cdn@$pg_listen/postgres\""
  # Behind the edge, the viewer's address is the one the edge appends to X-Forwarded-For.
  api_toml="trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]"
fi
cat > "$data/origin.toml" <<TOML
# Written by scripts/up.sh; see configs/origin.toml for every field.
data_dir = "$data"
[media]
listen = "$media"
[admin]
listen = "$origin_admin"
[api]
listen = "$api"
$api_toml
[accounts]
service_tokens = ["$service_token"]
[web]
dir = "$root/origin/web"
$edges_toml
$scale_toml
[[signing_key]]
id = "local"
secret = "$secret"
[log]
format = "text"
TOML
# Instances 2..N of --scale: the first's config on their own listeners, instance i's API on the API port plus i-1.
api_port=${api##*:}
instance_api() { echo "${api%:*}:$((api_port + $1 - 1))"; }
instance_configs=()
for i in $(seq 2 "$scale"); do
  sed -e "/^\[media\]/,/^listen/ s|^listen = .*|listen = \"127.0.0.1:0\"|" \
      -e "/^\[admin\]/,/^listen/ s|^listen = .*|listen = \"127.0.0.1:0\"|" \
      -e "/^\[api\]/,/^listen/ s|^listen = .*|listen = \"$(instance_api "$i")\"|" \
      "$data/origin.toml" > "$data/origin-$i.toml"
  instance_configs+=("$data/origin-$i.toml")
done
# With --scale: the edges' path route over every instance.
route_toml=""
if [ "$scale" -gt 0 ]; then
  upstreams=""
  for i in $(seq 1 "$scale"); do upstreams="$upstreams\"http://$(instance_api "$i")\", "; done
  route_toml="[[site.route]]
name = \"api\"
prefixes = [\"/v1/\", \"/web/\"]
paths = [\"/\"]
upstreams = [${upstreams%, }]
forward_credentials = true
[site.route.health_check]
path = \"/healthz\"
interval_ms = 1000
healthy_threshold = 2
unhealthy_threshold = 2"
fi
# Edge i (1-based): its name, folder, listeners and region; the first is the single edge of the default stack.
edge_name() { [ "$1" = 1 ] && echo edge || echo "edge-$1"; }
edge_port() { echo $(( ${2##*:} + $1 - 1 )); }
edge_configs=()
for i in $(seq 1 "$edges"); do
  name=$(edge_name "$i")
  mkdir -p "$data/$name"
  tls_port=$(edge_port "$i" "$edge_tls")
  region=$([ $((i % 2)) = 1 ] && echo eu-west || echo us-east)
  control=""
  if [ "$edges" -gt 1 ]; then
    control="[control]
url = \"http://$api\"
registration_secret = \"$fleet_secret\"
region = \"$region\"
public_urls = [\"https://localhost:$tls_port\"]
heartbeat_secs = 2"
  fi
  cat > "$data/$name.toml" <<TOML
# Written by scripts/up.sh; see configs/edge.toml for every field.
name = "$name"
data_dir = "$data/$name"
[tls]
listen = "${edge_tls%:*}:$tls_port"
cert = "$data/edge/tls/cert.pem"
key = "$data/edge/tls/key.pem"
[admin]
listen = "${edge_admin%:*}:$(edge_port "$i" "$edge_admin")"
[[site]]
hosts = ["localhost", "127.0.0.1", "[::1]"]
upstream = "http://$media"
$route_toml
[[signing_key]]
id = "local"
secret = "$secret"
$control
[log]
format = "text"
TOML
  edge_configs+=("$data/$name.toml")
done
"$bin_dir/origin" check "$data/origin.toml" >/dev/null
for config in "${edge_configs[@]}"; do "$bin_dir/edge" check "$config" >/dev/null; done
# The sample titles go in the way an operator's would: `origin ingest` (checked, uploaded, registered).
for dir in "$root"/origin/sample-content/titles/*/; do
  slug=$(basename "$dir")
  if [ ! -d "$data/objects/titles/$slug" ]; then
    echo "up.sh: ingesting the sample title $slug"
    "$bin_dir/origin" ingest "$dir" --title "$slug" --config "$data/origin.toml" --quiet
  fi
done
if [ "$large_catalog" = yes ]; then
  command -v npm >/dev/null || [ -s "$data/movies/movies.json" ] \
    || { echo "up.sh: --large-catalog fetches vega-datasets with npm, which is not installed" >&2; exit 1; }
  python3 "$root/scripts/movie_catalogue.py" "$data/objects" --cache "$data/movies"
fi

pids=()
stop() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  exit 0
}
trap stop INT TERM
"$bin_dir/origin" serve --config "$data/origin.toml" &
pids+=($!)
admins=("$origin_admin")
for config in "${instance_configs[@]}"; do
  "$bin_dir/origin" serve --config "$config" &
  pids+=($!)
done
for i in $(seq 2 "$scale"); do admins+=("$(instance_api "$i")"); done
for i in $(seq 1 "$edges"); do
  "$bin_dir/edge" serve --config "${edge_configs[$((i - 1))]}" &
  pids+=($!)
  admins+=("${edge_admin%:*}:$(edge_port "$i" "$edge_admin")")
done
for admin in "${admins[@]}"; do
  for _ in $(seq 1 100); do
    curl -fsS "http://$admin/healthz" >/dev/null 2>&1 && break
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "up.sh: a server did not start" >&2; stop; }; done
    sleep 0.1
  done
done

echo
echo "The stack is up. Players fetch from the edge over HTTPS (certificate authority: $data/edge/tls/ca.pem):"
port=${edge_tls##*:}
(cd "$data/objects" && find titles -name 'master.m3u8' -o -name 'manifest.mpd' | sort) | while read -r key; do
  echo "  https://localhost:$port/$key"
done
echo "Try: ffplay https://localhost:$port/titles/test-pattern/hls/master.m3u8"
echo "     curl --cacert $data/edge/tls/ca.pem -I https://localhost:$port/titles/test-pattern/hls/master.m3u8"
# A demo viewer (created once; 409 when it exists).
curl -fsS -o /dev/null -d '{"email": "demo@example.org", "password": "demo-password"}' "http://$api/v1/accounts" 2>/dev/null || true
if [ "$scale" -gt 0 ]; then
  echo "Web front end and API through the edge, over $scale control-plane instances (PostgreSQL at $pg_listen):"
  echo "  https://localhost:$port/    demo account: demo@example.org / demo-password"
  echo "  curl --cacert $data/edge/tls/ca.pem https://localhost:$port/v1/titles    (instances: $(for i in $(seq 1 "$scale"); do printf 'http://%s ' "$(instance_api "$i")"; done))"
else
  echo "Web front end: http://localhost:${api##*:}/    demo account: demo@example.org / demo-password"
fi
echo "Catalog: curl http://$api/v1/titles    signed playback URLs (as a server, with the service credential):"
echo "  curl -H 'Authorization: Bearer $service_token' -d '{\"title\": \"test-pattern\"}' http://$api/v1/playback"
echo "Origin (the edge's upstream): http://$media    metrics: http://$origin_admin/metrics  http://$edge_admin/metrics"
if [ "$edges" -gt 1 ]; then
  # Every edge registered (its first report), then one steered playback per region.
  for _ in $(seq 1 100); do
    healthy=$(curl -fsS "http://$api/v1/edges" 2>/dev/null | grep -o '"healthy":true' | wc -l || true)
    [ "$healthy" -ge "$edges" ] && break
    sleep 0.1
  done
  echo
  echo "$edges edges in two regions: curl http://$api/v1/edges    (Prometheus service discovery: /v1/edges/prometheus-sd)"
  for region in eu-west us-east; do
    answer=$(curl -fsS -H "Authorization: Bearer $service_token" \
      -d "{\"title\": \"test-pattern\", \"region\": \"$region\"}" "http://$api/v1/playback")
    steered=$(echo "$answer" | grep -Eo "http://[^\"]+/v1/steered/[^\"]+/master.m3u8[^\"]*" | head -1)
    ranked=$(echo "$answer" | grep -Eo '"name":"[^"]+"' | cut -d'"' -f4 | tr '\n' ' ')
    echo "  a viewer in $region: edges ranked $ranked"
    echo "    steered HLS (Content Steering, for hls.js): $steered"
  done
fi
echo "Press Ctrl-C to stop."
wait
