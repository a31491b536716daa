#!/usr/bin/env python3
"""Eviction by value against S3-FIFO at a real edge (issue 19): the same generated VOD viewing schedule is played
through a release edge twice, once with `cache.evict_by_value = true` and once with `false`, and the byte hit
ratio of the segments the players fetch is compared, with the bytes the origin sent.

The catalogue (generated, served from memory by an HTTP origin in this script): titles with an HLS master
playlist naming three video renditions (400 kb/s, 1.2 Mb/s, 3 Mb/s), each a VOD media playlist of `--segments`
segments of `--segment-secs` seconds (bitrate × duration bytes). Segments are short so that a few minutes of
wall clock hold many sessions; the edge reads their duration from `#EXTINF`, so its model of the viewers runs at
the playlists' pace. Viewers: `--viewers` players at once, one session after another, each a title drawn from a
Zipf law (alpha 0.9), a rendition (20/50/30 %) that sometimes steps to a neighbour, a watch of the whole title
(30 %) or of a geometric number of segments (mean 15), from the start (90 %) or a random point; each fetches
the master, its media playlist and then one segment per segment duration, with its CMCD session id. The edge has
a memory tier of `--percent` % of the schedule's unique segment bytes and no disk tier; prefetch is off unless
`--prefetch K`. A benchmark, not a test: figures vary with the machine's load; compare runs of one invocation.

    python3 benches/evict_replay.py --bin-dir target/release [--seconds 180] [--viewers 40] [--percent 10]
"""

import argparse
import bisect
import http.client
import http.server
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchkit import edge_config, free_port

BITRATES = [400_000, 1_200_000, 3_000_000]
RENDITION_SHARES = [0.2, 0.5, 0.3]


class Catalogue:
    def __init__(self, titles, segments, segment_secs):
        self.titles, self.segments, self.segment_secs = titles, segments, segment_secs

    def segment_bytes(self, title, rendition, index):
        # ±20 % variation, fixed per segment.
        rng = random.Random(title * 1_000_003 + rendition * 10_007 + index)
        nominal = BITRATES[rendition] * self.segment_secs / 8
        return int(nominal * (0.8 + 0.4 * rng.random()))

    def body(self, path):
        m = re.fullmatch(r"/titles/t(\d+)/master\.m3u8", path)
        if m:
            lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
            for r, bitrate in enumerate(BITRATES):
                lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={bitrate},CODECS=\"avc1.64001f,mp4a.40.2\"",
                          f"v{r}/index.m3u8"]
            return ("\n".join(lines) + "\n").encode(), "application/vnd.apple.mpegurl"
        m = re.fullmatch(r"/titles/t(\d+)/v(\d)/index\.m3u8", path)
        if m:
            d = self.segment_secs
            lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{max(1, round(d))}",
                     "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-MEDIA-SEQUENCE:0"]
            for i in range(self.segments):
                lines += [f"#EXTINF:{d:.3f},", f"seg_{i}.ts"]
            lines.append("#EXT-X-ENDLIST")
            return ("\n".join(lines) + "\n").encode(), "application/vnd.apple.mpegurl"
        m = re.fullmatch(r"/titles/t(\d+)/v(\d)/seg_(\d+)\.ts", path)
        if m:
            title, rendition, index = map(int, m.groups())
            if title < self.titles and rendition < len(BITRATES) and index < self.segments:
                return bytes(self.segment_bytes(title, rendition, index)), "video/mp2t"
        return None, None


def start_origin(catalogue):
    """An HTTP/1.1 origin of the catalogue, counting the bytes it sends."""
    sent = {"bytes": 0, "segment_bytes": 0, "requests": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body, kind = catalogue.body(self.path.split("?")[0])
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "public, max-age=86400")
            self.send_header("ETag", f"\"{len(body)}\"")
            self.end_headers()
            self.wfile.write(body)
            with lock:
                sent["bytes"] += len(body)
                sent["requests"] += 1
                if self.path.endswith(".ts"):
                    sent["segment_bytes"] += len(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, sent


def zipf_cdf(n, alpha):
    weights = [1 / (k + 1) ** alpha for k in range(n)]
    total, acc, cdf = sum(weights), 0.0, []
    for w in weights:
        acc += w / total
        cdf.append(acc)
    return cdf


def schedule(args, catalogue):
    """Per viewer slot: its requests as (seconds from the start, path, session id)."""
    cdf = zipf_cdf(args.titles, 0.9)
    slots = []
    for slot in range(args.viewers):
        rng = random.Random(args.seed * 7919 + slot)
        t, n, requests = rng.uniform(0, 2 * args.segment_secs), 0, []
        while t < args.seconds:
            sid = f"s{slot}-{n}"
            n += 1
            title = min(bisect.bisect_left(cdf, rng.random()), args.titles - 1)
            rendition = rng.choices(range(len(BITRATES)), RENDITION_SHARES)[0]
            start = 0 if rng.random() < 0.9 else rng.randrange(args.segments)
            if rng.random() < 0.3:
                length = args.segments - start
            else:
                length = 1
                while rng.random() > 1 / 15:
                    length += 1
            base = f"/titles/t{title}"
            requests.append((t, f"{base}/master.m3u8", sid))
            requests.append((t, f"{base}/v{rendition}/index.m3u8", sid))
            for index in range(start, min(args.segments, start + length)):
                if rng.random() < 0.05:
                    step = rng.choice([-1, 1])
                    if 0 <= rendition + step < len(BITRATES):
                        rendition += step
                        requests.append((t, f"{base}/v{rendition}/index.m3u8", sid))
                requests.append((t, f"{base}/v{rendition}/seg_{index}.ts", sid))
                t += args.segment_secs
            t += rng.uniform(0.2, 1.0)
        slots.append([r for r in requests if r[0] < args.seconds])
    return slots


def unique_segment_bytes(slots, catalogue):
    seen = set()
    for requests in slots:
        for _, path, _ in requests:
            m = re.fullmatch(r"/titles/t(\d+)/v(\d)/seg_(\d+)\.ts", path)
            if m:
                seen.add(tuple(map(int, m.groups())))
    return sum(catalogue.segment_bytes(*key) for key in seen)


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_edge(args, catalogue, slots, memory_bytes, evict_by_value, run_dir):
    origin, sent = start_origin(catalogue)
    d = run_dir / ("value" if evict_by_value else "s3fifo")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    subprocess.run([str(args.bin_dir / "edge"), "cert", "--out", str(d / "tls"), "--force"], check=True,
                   capture_output=True)
    http_port, tls_port, admin_port = free_port(), free_port(), free_port()
    (d / "edge.toml").write_text(edge_config(
        "replay", d, tls_port=tls_port, http_port=http_port, admin_port=admin_port, cert=d / "tls" / "cert.pem",
        key=d / "tls" / "key.pem", upstream=f"http://127.0.0.1:{origin.server_address[1]}",
        cache={"memory_bytes": memory_bytes, "disk_bytes": 0, "evict_by_value": evict_by_value},
        more={"prefetch": {"segments": args.prefetch}}))
    log = open(d / "edge.log", "w")
    edge = subprocess.Popen([str(args.bin_dir / "edge"), "serve", "--config", str(d / "edge.toml")],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or edge.poll() is not None:
                raise SystemExit(f"the edge did not start: {(d / 'edge.log').read_text()[-2000:]}")
            time.sleep(0.1)
    tally = {"segments": 0, "segment_bytes": 0, "hit_bytes": 0, "hits": 0, "errors": 0, "late_s": 0.0}
    lock = threading.Lock()
    start = time.monotonic() + 0.5

    def play(requests):
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        mine = dict.fromkeys(tally, 0)
        mine["late_s"] = 0.0
        for at, path, sid in requests:
            wait = start + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                mine["late_s"] = max(mine["late_s"], -wait)
            try:
                conn.request("GET", path, headers={"Host": "localhost", "CMCD-Session": f"sid=\"{sid}\""})
                response = conn.getresponse()
                body = response.read()
                status = response.getheader("Cache-Status", "")
            except (OSError, http.client.HTTPException):
                mine["errors"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
                continue
            if response.status != 200:
                mine["errors"] += 1
                continue
            if path.endswith(".ts"):
                mine["segments"] += 1
                mine["segment_bytes"] += len(body)
                if "; hit" in status:
                    mine["hits"] += 1
                    mine["hit_bytes"] += len(body)
        with lock:
            for k, v in mine.items():
                tally[k] = max(tally[k], v) if k == "late_s" else tally[k] + v

    threads = [threading.Thread(target=play, args=(requests,)) for requests in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics = urllib_get(f"http://127.0.0.1:{admin_port}/metrics")
    edge.terminate()
    edge.wait(timeout=30)
    origin.shutdown()
    tally["origin_segment_bytes"] = sent["segment_bytes"]
    tally["origin_requests"] = sent["requests"]
    tally["value_evictions"] = metric(metrics, "edge_cache_value_evictions_total")
    tally["not_admitted"] = metric(metrics, "edge_cache_value_not_admitted_total")
    tally["viewer_sessions"] = metric(metrics, "edge_viewer_sessions")
    return tally


def urllib_get(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin-dir", type=Path, required=True, help="folder with the release edge")
    p.add_argument("--titles", type=int, default=80)
    p.add_argument("--segments", type=int, default=60, help="segments per rendition")
    p.add_argument("--segment-secs", type=float, default=0.5)
    p.add_argument("--viewers", type=int, default=40, help="players at once")
    p.add_argument("--seconds", type=float, default=180, help="length of each replay")
    p.add_argument("--percent", type=float, default=10, help="memory tier, %% of the unique segment bytes")
    p.add_argument("--prefetch", type=int, default=0, help="prefetch.segments (0: off)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    catalogue = Catalogue(args.titles, args.segments, args.segment_secs)
    slots = schedule(args, catalogue)
    unique = unique_segment_bytes(slots, catalogue)
    memory_bytes = max(1 << 20, int(unique * args.percent / 100))
    requests = sum(len(s) for s in slots)
    print(f"schedule: {requests} requests from {args.viewers} players over {args.seconds:.0f} s, "
          f"{args.titles} titles × 3 renditions × {args.segments} segments of {args.segment_secs} s; unique "
          f"segment bytes {unique / 2**20:.1f} MiB, memory tier {memory_bytes / 2**20:.1f} MiB "
          f"({args.percent} %), prefetch {args.prefetch}", flush=True)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="evict-replay-"))
    results = {}
    for evict_by_value in (True, False):
        name = "value" if evict_by_value else "s3fifo"
        results[name] = run_edge(args, catalogue, slots, memory_bytes, evict_by_value, run_dir)
        r = results[name]
        print(f"{name}: {json.dumps(r)}", flush=True)
    print()
    print("| policy | segment byte hit ratio | object hit ratio | origin segment MiB | value evictions (not "
          "admitted) | errors | most late |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        bhr = r["hit_bytes"] / max(1, r["segment_bytes"])
        ohr = r["hits"] / max(1, r["segments"])
        print(f"| {'eviction by value' if name == 'value' else 'S3-FIFO'} | {bhr:.2%} | {ohr:.2%} | "
              f"{r['origin_segment_bytes'] / 2**20:.1f} | {r['value_evictions']:.0f} ({r['not_admitted']:.0f}) | "
              f"{r['errors']} | "
              f"{r['late_s']:.2f} s |")
    v, s = results["value"], results["s3fifo"]
    ratio = (v["hit_bytes"] / max(1, v["segment_bytes"])) / max(1e-9, s["hit_bytes"] / max(1, s["segment_bytes"]))
    print(f"\nbyte hit ratio, eviction by value ÷ S3-FIFO: {ratio:.3f}; origin segment bytes "
          f"{v['origin_segment_bytes'] / max(1, s['origin_segment_bytes']):.3f}×")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "unique_segment_bytes": unique, "memory_bytes": memory_bytes,
                                         "results": results}, indent=2))
    if not args.run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    if v["errors"] or s["errors"]:
        sys.exit("errors during the replay")


if __name__ == "__main__":
    main()
