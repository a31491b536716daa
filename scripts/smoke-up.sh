#!/usr/bin/env bash
# A smoke run of scripts/up.sh as a newcomer would use it: start it (with the large demo catalogue) on spare
# loopback ports with a fresh data folder, fetch every player URL it prints through the edge over HTTPS (twice: a
# miss, then a hit), check the catalog and a signed playback URL, then stop it with Ctrl-C (SIGINT) and check
# that both servers exit cleanly.
#
# With --edges N: the multi-edge demo instead (no large catalogue): every edge registers, each region's viewer is
# ranked onto its region's edges first, the steered playlist names every edge as a Content Steering pathway, its
# steering server answers, and a signed URL plays through every edge.
#
# With --scale N: N control-plane instances on PostgreSQL behind the edge (no large catalogue): the web front end
# and the API through the edge, a catalog answer served again from the edge's cache, a viewer signed in through
# the edge plays through it with the cookie alone, the edge counts every instance up, and Ctrl-C stops every
# server and PostgreSQL.
set -euo pipefail
edges=1
scale=0
if [ "${1:-}" = --edges ]; then edges=$2; fi
if [ "${1:-}" = --scale ]; then scale=$2; fi
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
chmod 755 "$work" # PostgreSQL (--scale) runs as its own user and keeps its data under it
up_pid=""
trap '[ -n "$up_pid" ] && kill -INT -- -$up_pid 2>/dev/null; rm -rf "$work"' EXIT
# Every listener's port, below the kernel's ephemeral range so that no outgoing connection takes one meanwhile,
# and chosen together (all held until all are chosen) so that no two blocks overlap: the edges' TLS ports (TCP and
# UDP for HTTP/3) and admin ports are blocks of 8 (--edges puts edge i at the first port + i - 1), the API's a block
# of 3 (--scale puts instances 2 and 3 there).
read -r edge_tls_port edge_admin_port api_port pg_port media_port origin_admin_port < <(python3 -c '
import random, socket
held = []
def free_block(n, udp=False):
    for _ in range(500):
        base = random.randrange(20000, 32000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                for kind in ([socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp else [socket.SOCK_STREAM]):
                    s = socket.socket(socket.AF_INET, kind); socks.append(s); s.bind(("127.0.0.1", p))
            held.extend(socks); return base
        except OSError:
            for s in socks: s.close()
    raise SystemExit("smoke-up: no free block of %d ports" % n)
print(free_block(8, udp=True), free_block(8), free_block(3), free_block(1), free_block(1), free_block(1))
')
edge_tls="127.0.0.1:$edge_tls_port"
edge_admin="127.0.0.1:$edge_admin_port"
api="127.0.0.1:$api_port"
pg="127.0.0.1:$pg_port"
if [ "$scale" != 0 ]; then mode="--scale $scale"; elif [ "$edges" = 1 ]; then mode=--large-catalog; else mode="--edges $edges"; fi

: >"$work/up.log"
CDN_DATA_DIR="$work/data" ORIGIN_MEDIA_LISTEN="127.0.0.1:$media_port" ORIGIN_ADMIN_LISTEN="127.0.0.1:$origin_admin_port" API_LISTEN="$api" \
  EDGE_TLS_LISTEN="$edge_tls" EDGE_ADMIN_LISTEN="$edge_admin" PG_LISTEN="$pg" CDN_PROFILE=dev \
  setsid "$root/scripts/up.sh" $mode >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do
  grep -q "Press Ctrl-C" "$work/up.log" && break
  kill -0 $up_pid 2>/dev/null || { cat "$work/up.log"; echo "smoke-up: up.sh exited early"; exit 1; }
  sleep 0.5
done
grep -q "Press Ctrl-C" "$work/up.log" || { cat "$work/up.log"; echo "smoke-up: up.sh did not come up"; exit 1; }

ca="$work/data/edge/tls/ca.pem"
urls=$(grep -Eo "https://localhost:${edge_tls##*:}/titles/[^ ]+" "$work/up.log" | sort -u)
[ "$(echo "$urls" | wc -l)" -ge 4 ] || { cat "$work/up.log"; echo "smoke-up: expected at least 4 player URLs"; exit 1; }
for url in $urls; do
  for want in "fwd=uri-miss" "hit"; do
    status=$(curl -sS --cacert "$ca" -o /dev/null -D - "$url" | tr -d '\r' | grep -i '^cache-status:' || true)
    echo "$status" | grep -q "$want" || { echo "smoke-up: $url: expected $want, got '$status'"; exit 1; }
  done
done

# The control plane: the catalog lists the sample titles, and a signed playback URL plays through the edge.
titles=$(curl -fsS "http://$api/v1/titles?genre=Test")
echo "$titles" | grep -q '"slug":"test-pattern"' || { echo "smoke-up: catalog: $titles"; exit 1; }
assets=$(curl -fsS "http://$api/v1/titles/test-pattern/assets")
echo "$assets" | grep -q '"key":"titles/test-pattern/hls/v0/seg_000.ts"' || { echo "smoke-up: assets: $assets"; exit 1; }
# The web front end and the demo viewer up.sh prints: sign in, play as its profile.
grep -q "demo account: demo@example.org / demo-password" "$work/up.log" || { cat "$work/up.log"; echo "smoke-up: no demo account"; exit 1; }
curl -fsS "http://$api/" | grep -qi '<html' || { echo "smoke-up: no web front end at http://$api/"; exit 1; }
session=$(curl -fsS -d '{"email": "demo@example.org", "password": "demo-password"}' "http://$api/v1/sessions")
token=$(echo "$session" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
profile=$(echo "$session" | python3 -c 'import json, sys; print(json.load(sys.stdin)["profiles"][0]["id"])')
code=$(curl -sS -o /dev/null -w '%{http_code}' -d '{"title": "test-pattern"}' "http://$api/v1/playback")
[ "$code" = 401 ] || { echo "smoke-up: playback without a session: $code"; exit 1; }
playback=$(curl -fsS -H "Authorization: Bearer $token" \
  -d "{\"title\": \"test-pattern\", \"protocol\": \"hls\", \"profile\": \"$profile\"}" "http://$api/v1/playback")
signed=$(echo "$playback" | grep -Eo 'https://localhost:[0-9]+/t/[^"]+/master.m3u8' | head -1)
[ -n "$signed" ] || { echo "smoke-up: playback: $playback"; exit 1; }
code=$(curl -sS --cacert "$ca" -o /dev/null -w '%{http_code}' "$signed")
[ "$code" = 200 ] || { echo "smoke-up: signed URL $signed: $code"; exit 1; }
stop_up() {
  kill -INT -- -$up_pid
  for _ in $(seq 1 150); do kill -0 $up_pid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $up_pid 2>/dev/null; then echo "smoke-up: up.sh did not stop on Ctrl-C"; exit 1; fi
  [ "$(grep -c "stopped" "$work/up.log")" -ge "$1" ] || { cat "$work/up.log"; echo "smoke-up: a server did not stop"; exit 1; }
  up_pid=""
}
if [ "$scale" != 0 ]; then
  edge="https://localhost:${edge_tls##*:}"
  curl -fsS --cacert "$ca" "$edge/" | grep -qi '<html' || { echo "smoke-up: no web front end at $edge/"; exit 1; }
  for want in "fwd=" "hit"; do
    status=$(curl -sS --cacert "$ca" -o /dev/null -D - "$edge/v1/titles/test-pattern" | tr -d '\r' | grep -i '^cache-status:' || true)
    echo "$status" | grep -q "$want" || { echo "smoke-up: $edge/v1/titles/test-pattern: expected $want, got '$status'"; exit 1; }
  done
  cookie=$(curl -sS --cacert "$ca" -o /dev/null -D - -d '{"email": "demo@example.org", "password": "demo-password"}' \
    "$edge/v1/sessions" | tr -d '\r' | grep -i '^set-cookie:' | sed -E 's/^[^:]+: *([^;]+).*/\1/')
  [ -n "$cookie" ] || { echo "smoke-up: no session cookie through the edge"; exit 1; }
  playback=$(curl -fsS --cacert "$ca" -H "Cookie: $cookie" \
    -d "{\"title\": \"test-pattern\", \"protocol\": \"hls\", \"profile\": \"$profile\"}" "$edge/v1/playback")
  signed=$(echo "$playback" | grep -Eo 'https://localhost:[0-9]+/t/[^"]+/master.m3u8' | head -1)
  code=$(curl -sS --cacert "$ca" -o /dev/null -w '%{http_code}' "$signed")
  [ "$code" = 200 ] || { echo "smoke-up: playback through the edge: $playback -> $code"; exit 1; }
  up=$(curl -fsS "http://$edge_admin/metrics" | grep '^edge_pool_member_up{' | grep -c ' 1$' || true)
  [ "$up" = "$scale" ] || { curl -fsS "http://$edge_admin/metrics" | grep edge_pool; echo "smoke-up: $up of $scale instances up"; exit 1; }
  stop_up $((scale + 1))
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  if "$pg_bin/pg_isready" -q -h "${pg%:*}" -p "${pg##*:}"; then echo "smoke-up: PostgreSQL still runs after Ctrl-C"; exit 1; fi
  echo "smoke-up: ok ($scale control-plane instances on PostgreSQL behind the edge: the front end, a cached catalog answer, sign-in and playback through the edge, every instance up; clean stop)"
  exit 0
fi
if [ "$edges" != 1 ]; then
  listed=$(curl -fsS "http://$api/v1/edges")
  [ "$(echo "$listed" | grep -o '"healthy":true' | wc -l)" = "$edges" ] || { echo "smoke-up: fleet: $listed"; exit 1; }
  for region in eu-west us-east; do
    grep -q "a viewer in $region: edges ranked" "$work/up.log" || { cat "$work/up.log"; echo "smoke-up: no $region ranking"; exit 1; }
  done
  steered=$(grep -Eo 'http://[^ ]+/v1/steered/[^ ]+' "$work/up.log" | head -1)
  playlist=$(curl -fsS "$steered")
  [ "$(echo "$playlist" | grep -c '^#EXT-X-STREAM-INF:.*PATHWAY-ID=')" -ge "$edges" ] \
    && echo "$playlist" | grep -q '^#EXT-X-CONTENT-STEERING:SERVER-URI=' \
    || { echo "smoke-up: steered playlist: $playlist"; exit 1; }
  server=$(echo "$playlist" | grep -Eo 'SERVER-URI="[^"]+"' | cut -d'"' -f2)
  curl -fsS "$server&_HLS_pathway=edge" | grep -q '"PATHWAY-PRIORITY":\["edge' || { echo "smoke-up: steering server $server"; exit 1; }
  # Every pathway's variant plays from its own edge.
  for variant in $(echo "$playlist" | grep -E '^https://localhost:[0-9]+/t/.*/v0/index.m3u8$'); do
    code=$(curl -sS --cacert "$ca" -o /dev/null -w '%{http_code}' "$variant")
    [ "$code" = 200 ] || { echo "smoke-up: $variant: $code"; exit 1; }
  done
  kill -INT -- -$up_pid
  for _ in $(seq 1 150); do kill -0 $up_pid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $up_pid 2>/dev/null; then echo "smoke-up: up.sh did not stop on Ctrl-C"; exit 1; fi
  [ "$(grep -c "stopped" "$work/up.log")" -ge $((edges + 1)) ] || { cat "$work/up.log"; echo "smoke-up: a server did not stop"; exit 1; }
  up_pid=""
  echo "smoke-up: ok ($edges edges registered in two regions, ranked per region, a steered playlist with a pathway per edge and its steering server; clean stop)"
  exit 0
fi
# The large catalogue: thousands of films to browse and search (with a typo), none of them playable.
count=$(python3 - "http://$api" <<'PY'
import json, sys, urllib.request
api, cursor, n = sys.argv[1], "", 0
while True:
    page = json.load(urllib.request.urlopen(f"{api}/v1/titles?limit=100{cursor and '&cursor=' + cursor}"))
    n += len(page["titles"])
    if not page["next_cursor"]:
        break
    cursor = page["next_cursor"]
print(n)
PY
)
[ "$count" -ge 3000 ] || { echo "smoke-up: the large catalogue lists $count titles"; exit 1; }
search=$(curl -fsS "http://$api/v1/search?q=godfathr+part")
echo "$search" | grep -q '"slug":"the-godfather-part-ii-1974"' || { echo "smoke-up: search: $search"; exit 1; }
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
  -d "{\"title\": \"the-godfather-1972\", \"profile\": \"$profile\"}" "http://$api/v1/playback")
[ "$code" = 404 ] || { echo "smoke-up: playback of a metadata-only title: $code"; exit 1; }

kill -INT -- -$up_pid
for _ in $(seq 1 150); do kill -0 $up_pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $up_pid 2>/dev/null; then echo "smoke-up: up.sh did not stop on Ctrl-C"; exit 1; fi
[ "$(grep -c "stopped" "$work/up.log")" -ge 2 ] || { cat "$work/up.log"; echo "smoke-up: a server did not drain and stop"; exit 1; }
up_pid=""
echo "smoke-up: ok ($(echo "$urls" | wc -l) player URLs through the edge, miss then hit; the catalog ($count titles), search and a signed playback URL; clean stop on Ctrl-C)"
