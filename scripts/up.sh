#!/usr/bin/env bash
# Starts the whole stack in the foreground with embedded defaults and prints the URLs a player uses; Ctrl-C
# stops it cleanly. Today the stack is the media origin over a local object-store folder holding the sample
# titles; later issues add the edge and the control plane to this same command.
#
# Environment (all optional):
#   CDN_DATA_DIR          data folder (default: ./data in the repository); objects live in $CDN_DATA_DIR/objects
#   ORIGIN_MEDIA_LISTEN   media listener (default 127.0.0.1:8080)
#   ORIGIN_ADMIN_LISTEN   admin listener (default 127.0.0.1:9900)
#   CDN_PROFILE           cargo profile to build and run: release (default) or dev
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${CDN_DATA_DIR:-$root/data}
media=${ORIGIN_MEDIA_LISTEN:-127.0.0.1:8080}
admin=${ORIGIN_ADMIN_LISTEN:-127.0.0.1:9900}
profile=${CDN_PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"

command -v cargo >/dev/null || { echo "up.sh: cargo is needed (https://rustup.rs)" >&2; exit 1; }
echo "up.sh: building ($profile; the first build takes several minutes)..."
(cd "$root" && cargo build --workspace --bins --profile "$profile" --locked --quiet)

mkdir -p "$data/objects"
if [ ! -d "$data/objects/titles" ]; then
  echo "up.sh: copying the sample titles into $data/objects"
  cp -R "$root/origin/sample-content/." "$data/objects/"
fi
cat > "$data/origin.toml" <<TOML
# Written by scripts/up.sh; see configs/origin.toml for every field.
data_dir = "$data"
[media]
listen = "$media"
[admin]
listen = "$admin"
[log]
format = "text"
TOML
"$bin_dir/origin" check "$data/origin.toml" >/dev/null

"$bin_dir/origin" serve --config "$data/origin.toml" &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null; exit 0' INT TERM
for _ in $(seq 1 100); do
  curl -fsS "http://$admin/healthz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "up.sh: the origin did not start" >&2; exit 1; }
  sleep 0.1
done

echo
echo "The stack is up. Play these with ffplay, VLC, or ffmpeg (ffplay URL):"
(cd "$data/objects" && find titles -name 'master.m3u8' -o -name 'manifest.mpd' | sort) | while read -r key; do
  echo "  http://$media/$key"
done
echo "Origin metrics: http://$admin/metrics    health: http://$admin/healthz"
echo "Press Ctrl-C to stop."
wait $pid
