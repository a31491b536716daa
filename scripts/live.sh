#!/usr/bin/env bash
# A synthetic live stream (testsrc + a 440 Hz tone), packaged continuously into a folder of the origin's object
# store (issue 19): LL-HLS with 2 s segments and 1/3 s parts (OUT/hls/live.m3u8, parts cut by
# scripts/live_packager.py from ffmpeg's fragmented MP4), and DASH with a dynamic MPD from ffmpeg's dash muxer
# (OUT/dash/live.mpd). Runs until killed, or for SECONDS.
#
#   scripts/live.sh OUT_DIR [SECONDS]        e.g. scripts/live.sh /var/lib/cdn/objects/live/demo
#
# The origin classifies the playlists as live (no EXT-X-ENDLIST, type="dynamic") and gives them a max-age of
# half a target duration; segments and parts are immutable. Needs ffmpeg (libx264, aac) and python3.
set -euo pipefail
out=${1:?usage: live.sh OUT_DIR [SECONDS]}
seconds=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/hls" "$out/dash"
limit=()
if [[ -n $seconds ]]; then limit=(-t "$seconds"); fi
encode=(-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -pix_fmt yuv420p -b:v 300k
        -g 60 -keyint_min 60 -sc_threshold 0 -c:a aac -b:a 64k -ar 48000)
# One ffmpeg: testsrc at 30 fps, a keyframe every 2 s (60 frames), one fragment per 1/3 s (10 frames). Its
# fragmented MP4 goes through a fifo to the packager; both end when this script is stopped (TERM, INT).
fifo=$(mktemp -u /tmp/live-fifo.XXXXXX)
mkfifo "$fifo"
python3 "$here/live_packager.py" "$out/hls" <"$fifo" &
packager=$!
ffmpeg -nostdin -hide_banner -loglevel error -re \
  "${limit[@]}" -f lavfi -i "testsrc=size=320x180:rate=30" "${limit[@]}" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
  -map 0:v -map 1:a "${encode[@]}" \
    -f mp4 -movflags empty_moov+default_base_moof+frag_keyframe -frag_duration 333333 pipe:1 \
  -map 0:v -map 1:a "${encode[@]}" \
    -f dash -seg_duration 2 -frag_type duration -frag_duration 0.3334 -window_size 6 -extra_window_size 4 \
    -use_template 1 -use_timeline 1 -streaming 1 -ldash 1 -target_latency 1.5 -remove_at_exit 0 \
    -adaptation_sets "id=0,streams=v id=1,streams=a" "$out/dash/live.mpd" >"$fifo" &
encoder=$!
trap 'kill "$encoder" "$packager" 2>/dev/null || true; rm -f "$fifo"' EXIT
trap 'exit 143' TERM INT
wait "$encoder"
wait "$packager"
