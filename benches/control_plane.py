#!/usr/bin/env python3
"""Benchmark (not a test) of the control plane on a realistic catalogue: the 3,200 films of the npm package
`vega-datasets` (movies.json, written by scripts/movie_catalogue.py as metadata-only titles) beside the playable
sample titles in a store folder, registered by a release `origin`; then h2load drives, at a fixed rate, POST
/v1/playback of a sample title as a server with a service credential (goal: p99 <= 5 ms at 2,000 req/s) and GET /v1/search with queries typed with
typos and prefixes (goal: p99 <= 10 ms). Latencies come from h2load's per-request log. Run it through
`scripts/bench-control-plane.sh`, which builds the release binary first.
"""

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import movie_catalogue  # noqa: E402


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def catalogue(work):
    """The sample titles (playable) plus the films of vega-datasets as metadata-only titles in `work/objects`."""
    objects = work / "objects"
    shutil.rmtree(objects, ignore_errors=True)
    shutil.copytree(ROOT / "origin" / "sample-content", objects)
    return movie_catalogue.write_catalogue(objects, movie_catalogue.fetch_movies(work))


def typo(word, rng):
    """The word with one typo (a deleted, doubled or swapped letter) when it is long enough to allow one."""
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["delete", "double", "swap"])
    if kind == "delete":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]


def queries(titles, rng, n):
    """Queries as users type them: one or two words, a typo here and there, the last word sometimes cut short."""
    out = []
    for _ in range(n):
        words = re.findall(r"[A-Za-z]+", rng.choice(titles))
        if not words:
            continue
        words = words[: rng.choice([1, 2, 2, 3])]
        words = [typo(w, rng) if rng.random() < 0.4 else w for w in words]
        if rng.random() < 0.4 and len(words[-1]) > 3:
            words[-1] = words[-1][: rng.randrange(3, len(words[-1]))]
        out.append(" ".join(words).lower())
    return out


def h2load(args, log_file):
    Path(log_file).unlink(missing_ok=True)  # h2load appends
    out = subprocess.run(["h2load", "--h1"] + args + [f"--log-file={log_file}"], capture_output=True, text=True,
                         timeout=300).stdout
    latencies, statuses = [], {}
    for line in Path(log_file).read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3:
            statuses[fields[1]] = statuses.get(fields[1], 0) + 1
            latencies.append(int(fields[2]) / 1000)
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else None
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    return {"requests": len(latencies), "req_per_s": float(m.group(3)) if m else None, "statuses": statuses,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": latencies[-1] if latencies else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/video-cdn-bench-cp"))
    parser.add_argument("--port", type=int, default=19500)
    parser.add_argument("--rate", type=int, default=2000, help="requests per second for playback")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    titles = catalogue(work)
    log(f"catalogue: {len(titles)} titles")
    (work / "catalog.db").unlink(missing_ok=True)
    (work / "origin.toml").write_text(f"""data_dir = "{work}"
[media]
listen = "127.0.0.1:{args.port + 1}"
[admin]
listen = "127.0.0.1:{args.port + 2}"
[api]
listen = "127.0.0.1:{args.port}"
[store]
url = "file://{work}/objects"
[catalog]
url = "sqlite://{work}/catalog.db"
[accounts]
service_tokens = ["control-plane-bench-service-token"]
[playback]
edges = ["https://edge-1.example:8443", "https://edge-2.example:8443"]
[[signing_key]]
id = "bench"
secret = "a benchmark signing secret of 32+ bytes"
[log]
level = "warn"
""")
    api = f"http://127.0.0.1:{args.port}"
    started = time.time()
    server = subprocess.Popen([str(args.bin_dir / "origin"), "serve", "--config", str(work / "origin.toml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{api}/v1/titles?limit=1"],
                               capture_output=True, text=True)
            if r.stdout == "200":
                break
            if server.poll() is not None:
                raise SystemExit(f"origin exited: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        log(f"origin up with the catalogue registered in {time.time() - started:.1f} s")
        rng = random.Random(7)
        # Playback: POST a playable title at a fixed rate (20 clients x rate/20 requests per second).
        body = work / "playback.json"
        results = {}
        body.write_text(json.dumps({"title": "test-pattern", "protocol": "hls"}))
        clients = 20
        total = args.rate * args.seconds
        results["playback"] = h2load(["-c", str(clients), "--rps", str(args.rate // clients), "-n", str(total),
                                      "-d", str(body), "-H", "Content-Type: application/json",
                                      "-H", "Authorization: Bearer control-plane-bench-service-token",
                                      f"{api}/v1/playback"], work / "playback.log")
        # Search: queries with typos and prefixes, as fast as 8 clients go, then at a fixed 500 req/s.
        uris = work / "search.uris"
        uris.write_text("".join(f"{api}/v1/search?q={urllib.parse.quote_plus(q)}\n"
                                for q in queries(titles, rng, 4000)))
        results["search_max_rate"] = h2load(["-c", "8", "-D", str(args.seconds), "-i", str(uris)],
                                            work / "search.log")
        results["search_500rps"] = h2load(["-c", "10", "--rps", "50", "-n", str(500 * args.seconds),
                                           "-i", str(uris)], work / "search500.log")
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(f"\ncontrol plane on {len(titles)} titles (vega-datasets movies.json), h2load over HTTP/1.1:")
    print(f"{'test':18} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  statuses")
    for name, r in results.items():
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        print(f"{name:18} {r['requests']:>9} {fmt(r['req_per_s']):>8} {fmt(r['p50_ms']):>7} {fmt(r['p99_ms']):>7} "
              f"{fmt(r['max_ms']):>7}  {r['statuses']}")
    print("goals: playback p99 <= 5 ms at 2,000 req/s; search p99 <= 10 ms")
    out = args.out or work / "result.json"
    out.write_text(json.dumps({"titles": len(titles), "results": results}, indent=1))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
