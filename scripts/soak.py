#!/usr/bin/env python3
"""The soak (issue 14), driven by scripts/soak.sh: mixed load on a real edge in front of a real origin for N
minutes, one line of figures per minute, and a verdict. Standard library only.

  soak.py run --bin-dir DIR [--minutes 30] [--clients 16] [--keep] [--no-h3] [--run-dir DIR] [--seed N]
  soak.py load --spec FILE        (the load generator; started by `run` under nice, not by hand)

`run` makes a run folder (objects, certificate, configs, logs), starts the origin on a fixed loopback port and
the edge on port 0 (addresses read from its `listening` log line), starts `load` in its own process group under
`nice -n 10`, kills and restarts the origin every few minutes on the same port, samples the edge every minute
and judges at the end. See scripts/soak.sh for the pass/fail rules.
"""
import argparse
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1024, 1024 * 1024
GAP_GRACE_S = 3.0  # after the origin is back (listening), its gap still covers this long
OUTCOMES = ("ok", "exp4xx", "bad", "xport", "5xx")


def log(msg):
    print(f"soak: {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------------------------

def make_objects(objdir, rng):
    """Writes the object folder and returns the catalogue: titles t00..t23 with a master and a media playlist
    (2-8 KB, VOD) and 16 segments each (200 KB - 2 MB), and four single-file renditions of 16-64 MB for ranges.
    About 570 MB in all, every body random (so a mixed-up body cannot pass the comparison)."""
    objects = []

    def put(key, data_or_size, kind):
        path = os.path.join(objdir, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            if isinstance(data_or_size, bytes):
                f.write(data_or_size)
                size = len(data_or_size)
            else:
                size, left = data_or_size, data_or_size
                while left:
                    n = min(left, 4 * MiB)
                    f.write(os.urandom(n))
                    left -= n
        objects.append({"key": key, "size": size, "kind": kind})

    for t in range(24):
        title = f"titles/t{t:02d}"
        segs = [f"seg_{i:03d}.ts" for i in range(16)]
        for s in segs:
            put(f"{title}/{s}", rng.randint(200 * KiB, 2 * MiB), "segment")
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4", "#EXT-X-PLAYLIST-TYPE:VOD"]
        for s in segs:
            lines += ["#EXTINF:4.000,", s]
        target = rng.randint(4 * KiB, 8 * KiB)
        while sum(len(x) + 1 for x in lines) < target - 40:
            lines.append(f"# soak padding {secrets.token_hex(24)}")
        lines.append("#EXT-X-ENDLIST")
        put(f"{title}/video.m3u8", ("\n".join(lines) + "\n").encode(), "manifest")
        master = ["#EXTM3U", "#EXT-X-VERSION:3"]
        target = rng.randint(2 * KiB, 4 * KiB)
        while sum(len(x) + 1 for x in master) < target - 80:
            master.append(f"# soak padding {secrets.token_hex(24)}")
        master += ['#EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"',
                   "video.m3u8"]
        put(f"{title}/master.m3u8", ("\n".join(master) + "\n").encode(), "manifest")
    for i, mib in enumerate((16, 24, 40, 64)):
        put(f"titles/big/rendition_{i}.mp4", mib * MiB + rng.randint(0, MiB), "large")
    return objects


# ---------------------------------------------------------------------------------------------------------------
# The load generator (a process of its own, under nice)
# ---------------------------------------------------------------------------------------------------------------

class Mix:
    """Picks requests. Each is a dict: kind, path, range (the Range value without `bytes=`, or None) and the
    expected answer: ("full", size) for 200 with the whole object, ("range", first, last, size) for 206,
    ("status", code) for a refusal the client asked for (416, 404)."""

    KINDS = ("hot", "tail", "bust", "range", "suffix", "open", "segrange", "past_end", "notfound")

    def __init__(self, objects, rng, only=None):
        self.rng = rng
        self.only = set(only or ())
        self.by_key = {o["key"]: o for o in objects}
        self.segments = [o for o in objects if o["kind"] == "segment"]
        self.manifests = [o for o in objects if o["kind"] == "manifest"]
        self.large = [o for o in objects if o["kind"] == "large"]
        hot_titles = {f"titles/t{t:02d}/" for t in range(4)}
        # Hot: the four first titles' playlists and first six segments (about 25 MB: fits the memory tier).
        self.hot = [o for o in self.manifests if o["key"][:11] in hot_titles] + [
            o for o in self.segments if o["key"][:11] in hot_titles and int(o["key"][-6:-3]) < 6]
        self.small = self.manifests + [o for o in self.segments if o["size"] < 600 * KiB]
        self.bust = 0
        self.lock = threading.Lock()

    def _zipf(self, items):
        # Rank r chosen with weight 1/(r+1): a few objects get most requests.
        n = len(items)
        while True:
            r = int(n ** self.rng.random()) - 1
            if 0 <= r < n:
                return items[r]

    def pick(self, big_bodies=True):
        while True:  # --only: the mix limited to some kinds (to find which part of the load a change follows)
            req = self._pick(big_bodies)
            if not self.only or req["kind"] in self.only:
                return req

    def _pick(self, big_bodies):
        rng = self.rng
        with self.lock:
            x = rng.random()
            if x < 0.45:
                o = self._zipf(self.hot)
                return {"kind": "hot", "path": "/" + o["key"], "range": None, "expect": ("full", o["size"])}
            if x < 0.63:
                o = rng.choice(self.segments)
                return {"kind": "tail", "path": "/" + o["key"], "range": None, "expect": ("full", o["size"])}
            if x < 0.71:
                o = rng.choice(self.small)
                self.bust += 1
                return {"kind": "bust", "path": f"/{o['key']}?cb={os.getpid()}-{self.bust}-{rng.randrange(1 << 30)}",
                        "range": None, "expect": ("full", o["size"])}
            if x < 0.80:  # a single range inside a large object, often across a slice boundary
                o = rng.choice(self.large)
                n = rng.randint(1, 3 * MiB if big_bodies else 512 * KiB)
                a = rng.randrange(0, o["size"] - n)
                if rng.random() < 0.5:
                    a = max(0, (a // (2 * MiB)) * 2 * MiB + 2 * MiB - n // 2)
                    a = min(a, o["size"] - n)
                return {"kind": "range", "path": "/" + o["key"], "range": f"{a}-{a + n - 1}",
                        "expect": ("range", a, a + n - 1, o["size"])}
            if x < 0.84:  # a suffix range
                o = rng.choice(self.large)
                n = rng.randint(1, 2 * MiB)
                return {"kind": "suffix", "path": "/" + o["key"], "range": f"-{n}",
                        "expect": ("range", o["size"] - n, o["size"] - 1, o["size"])}
            if x < 0.87:  # open-ended, near the end
                o = rng.choice(self.large)
                a = o["size"] - rng.randint(1, 2 * MiB)
                return {"kind": "open", "path": "/" + o["key"], "range": f"{a}-",
                        "expect": ("range", a, o["size"] - 1, o["size"])}
            if x < 0.91:  # a range inside a segment
                o = rng.choice(self.segments)
                a = rng.randrange(0, o["size"] - 1)
                b = min(o["size"] - 1, a + rng.randint(0, 256 * KiB))
                return {"kind": "segrange", "path": "/" + o["key"], "range": f"{a}-{b}",
                        "expect": ("range", a, b, o["size"])}
            if x < 0.95:  # past the end: 416
                o = rng.choice(self.large + self.segments + self.manifests)
                s = o["size"]
                r = rng.choice([f"{s}-", f"{s + 1000}-{s + 2000}", f"{s + rng.randrange(1 << 20)}-"])
                return {"kind": "past_end", "path": "/" + o["key"], "range": r, "expect": ("status", 416, s)}
            if x < 0.97:  # an object that is not there: 404
                t = rng.randrange(24)
                return {"kind": "notfound", "path": f"/titles/t{t:02d}/missing_{rng.randrange(50):03d}.ts",
                        "range": None, "expect": ("status", 404, None)}
            o = rng.choice(self.manifests)
            return {"kind": "hot", "path": "/" + o["key"], "range": None, "expect": ("full", o["size"])}


def file_bytes(objdir, path, first, last):
    key = path.split("?", 1)[0].lstrip("/")
    with open(os.path.join(objdir, key), "rb") as f:
        f.seek(first)
        return f.read(last - first + 1)


def judge(req, objdir, status, content_range, body):
    """The outcome of one answer: ok, exp4xx (the refusal asked for), 5xx, or bad (wrong status or bytes)."""
    exp = req["expect"]
    if status >= 500:
        return "5xx", f"{status}"
    if exp[0] == "status":
        if status != exp[1]:
            return "bad", f"status {status}, expected {exp[1]}"
        if exp[1] == 416 and content_range != f"bytes */{exp[2]}":
            return "bad", f"416 with Content-Range {content_range!r}"
        return "exp4xx", ""
    if exp[0] == "full":
        if status != 200:
            return "bad", f"status {status}, expected 200"
        first, last = 0, exp[1] - 1
    else:
        if status != 206:
            return "bad", f"status {status}, expected 206"
        first, last = exp[1], exp[2]
        want = f"bytes {first}-{last}/{exp[3]}"
        if content_range != want:
            return "bad", f"Content-Range {content_range!r}, expected {want!r}"
    if len(body) != last - first + 1:
        return "bad", f"body {len(body)} bytes, expected {last - first + 1}"
    if body != file_bytes(objdir, req["path"], first, last):
        return "bad", "body differs from the object's bytes"
    return "ok", ""


class Records:
    """Appends one JSON line per request to the records file; flushed every second by the caller."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1 << 16)
        self.lock = threading.Lock()
        self.count = 0

    def add(self, t0, t1, proto, req, status, outcome, cache_status, detail=""):
        line = json.dumps([round(t0, 3), round(t1, 3), proto, req["kind"], status, outcome, cache_status or "",
                           req["path"], req.get("range") or "", detail[:300]])
        with self.lock:
            self.f.write(line + "\n")
            self.count += 1

    def flush(self):
        with self.lock:
            self.f.flush()


def h1_worker(spec, mix, records, deadline, stop, wid):
    rng = random.Random(spec["seed"] * 1000 + wid)
    ctx = ssl.create_default_context(cafile=spec["ca"])
    host, port = "127.0.0.1", spec["tls_port"]
    conn, used, limit = None, 0, rng.randint(20, 80)
    n = 0
    while not stop.is_set() and time.time() < deadline and n < spec["max_requests_per_worker"]:
        n += 1
        req = mix.pick()
        headers = {"User-Agent": f"soak-h1/{wid}"}
        if req["range"]:
            headers["Range"] = "bytes=" + req["range"]
        t0 = time.time()
        for attempt in (0, 1):
            reused = conn is not None and used > 0
            if conn is None:
                conn, used = http.client.HTTPSConnection(host, port, context=ctx, timeout=30), 0
            try:
                conn.request("GET", req["path"], headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                conn = None
                if reused and attempt == 0:  # a keep-alive connection closed under us: send again once
                    continue
                records.add(t0, time.time(), "h1", req, 0, "xport", "", f"{type(e).__name__}: {e}")
                break
            except Exception as e:  # noqa: BLE001 - every failure is counted
                conn.close()
                conn = None
                records.add(t0, time.time(), "h1", req, 0, "xport", "", f"{type(e).__name__}: {e}")
                break
            try:
                body = resp.read()
                if resp.length not in (None, 0):
                    raise http.client.IncompleteRead(body)
            except Exception as e:  # noqa: BLE001
                conn.close()
                conn = None
                records.add(t0, time.time(), "h1", req, resp.status, "xport", resp.getheader("cache-status"),
                            f"body: {type(e).__name__}: {str(e)[:120]}")
                break
            used += 1
            outcome, detail = judge(req, spec["objdir"], resp.status, resp.getheader("content-range"), body)
            if outcome == "5xx":
                detail = f"{resp.status} {body[:200].decode(errors='replace').strip()}"
            records.add(t0, time.time(), "h1", req, resp.status, outcome, resp.getheader("cache-status"), detail)
            if resp.will_close or used >= limit:
                conn.close()
                conn, limit = None, rng.randint(20, 80)
            break
        stop.wait(rng.uniform(0, spec["think_s"]))
    if conn is not None:
        conn.close()


WRITE_OUT = ("%{urlnum}\\t%{http_code}\\t%{size_download}\\t%{exitcode}\\t%{http_version}\\t"
             "%header{cache-status}\\t%header{content-range}\\t%{errormsg}\\n")


def h2_worker(spec, mix, records, deadline, stop, wid):
    """Batches of requests, each batch one curl run: one HTTP/2 connection, up to 4 streams at once."""
    rng = random.Random(spec["seed"] * 1000 + 500 + wid)
    wdir = os.path.join(spec["run_dir"], "h2", str(wid))
    os.makedirs(wdir, exist_ok=True)
    base = f"https://127.0.0.1:{spec['tls_port']}"
    n = 0
    while not stop.is_set() and time.time() < deadline and n < spec["max_requests_per_worker"]:
        batch = [mix.pick() for _ in range(rng.randint(4, 10))]
        n += len(batch)
        cfg = ["parallel", "parallel-max = 4"]
        for i, req in enumerate(batch):
            if i:
                cfg.append("next")
            cfg += [f'url = "{base}{req["path"]}"', f'output = "{wdir}/{i}"', f'cacert = "{spec["ca"]}"',
                    "http2", "silent", "max-time = 60", "connect-timeout = 10",
                    f'user-agent = "soak-h2/{wid}"', f'write-out = "{WRITE_OUT}"']
            if req["range"]:
                cfg.append(f'range = "{req["range"]}"')
        cfg_path = os.path.join(wdir, "curl.cfg")
        with open(cfg_path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        t0 = time.time()
        try:
            out = subprocess.run(["curl", "-K", cfg_path], capture_output=True, timeout=90, text=True).stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        t1 = time.time()
        seen = set()
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) < 8 or not parts[0].isdigit():
                continue
            i, code, size, exitcode, version, cstatus, crange, err = parts[:8]
            i, code, exitcode = int(i), int(code or 0), int(exitcode or 0)
            if i >= len(batch) or i in seen:
                continue
            seen.add(i)
            req = batch[i]
            path = f"{wdir}/{i}"
            body = b""
            if os.path.exists(path):
                with open(path, "rb") as f:
                    body = f.read()
                os.unlink(path)
            if exitcode != 0 or code == 0:
                records.add(t0, t1, "h2", req, code, "xport", cstatus, f"curl exit {exitcode}: {err}")
                continue
            if version != "2":
                records.add(t0, t1, "h2", req, code, "bad", cstatus, f"negotiated HTTP/{version}, not h2")
                continue
            outcome, detail = judge(req, spec["objdir"], code, crange or None, body)
            if outcome == "5xx":
                detail = f"{code} {body[:200].decode(errors='replace').strip()}"
            records.add(t0, t1, "h2", req, code, outcome, cstatus, detail)
        for i, req in enumerate(batch):
            if i not in seen:
                records.add(t0, t1, "h2", req, 0, "xport", "", "curl gave no result (killed at its time limit)")
        stop.wait(rng.uniform(0, spec["think_s"] * 3))


def h3_worker(spec, mix, records, deadline, stop):
    """HTTP/3 through the repo's aioquic client, one process per request (a new QUIC connection each), slowly."""
    rng = random.Random(spec["seed"] * 1000 + 999)
    out = os.path.join(spec["run_dir"], "h3.body")
    url = f"https://127.0.0.1:{spec['tls_port']}"
    n = 0
    while not stop.is_set() and time.time() < deadline and n < spec["max_requests_per_worker"]:
        n += 1
        req = mix.pick(big_bodies=False)
        if req["kind"] in ("tail", "bust") and req["expect"][0] == "full" and req["expect"][1] > 1 * MiB:
            continue
        cmd = [spec["h3_python"], spec["h3_client"], "--client", "aioquic", "--ca", spec["ca"], "--out", out,
               "--timeout", "30", url + req["path"]]
        if req["range"]:
            cmd[-1:-1] = ["--range", req["range"]]
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=45)
            res = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {"error": p.stderr[-200:]}
        except (subprocess.TimeoutExpired, ValueError) as e:
            res = {"error": f"{type(e).__name__}: {e}"}
        t1 = time.time()
        if "error" in res:
            records.add(t0, t1, "h3", req, 0, "xport", "", str(res["error"]))
        else:
            with open(out, "rb") as f:
                body = f.read()
            h = res.get("headers", {})
            outcome, detail = judge(req, spec["objdir"], res["status"], h.get("content-range"), body)
            if outcome == "5xx":
                detail = f"{res['status']} {body[:200].decode(errors='replace').strip()}"
            records.add(t0, t1, "h3", req, res["status"], outcome, h.get("cache-status"), detail)
        stop.wait(rng.uniform(1.0, 3.0))


def purger(spec, mix, records, deadline, stop):
    """Purges through the admin API every 10-25 s: a hard URL purge, a soft one, or a title's prefix."""
    rng = random.Random(spec["seed"] * 1000 + 777)
    admin = f"http://127.0.0.1:{spec['admin_port']}/purge"
    site = f"https://127.0.0.1:{spec['tls_port']}"
    n = 0
    while not stop.wait(rng.uniform(10, 25)) and time.time() < deadline and n < 1000:
        n += 1
        x = rng.random()
        if x < 0.45:
            o = rng.choice(mix.hot)
            body, kind = {"url": f"{site}/{o['key']}"}, "purge_url"
        elif x < 0.8:
            o = rng.choice(mix.hot + mix.segments)
            body, kind = {"url": f"{site}/{o['key']}", "soft": True}, "purge_soft"
        else:
            t = rng.randrange(24)
            body, kind = {"prefix": f"{site}/titles/t{t:02d}/"}, "purge_prefix"
        req = {"kind": kind, "path": body.get("url") or body.get("prefix"), "range": None}
        t0 = time.time()
        r = urllib.request.Request(admin, data=json.dumps(body).encode(), method="POST", headers={
            "Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(r, timeout=10) as resp:
                status, text = resp.status, resp.read(300).decode(errors="replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read(300).decode(errors="replace")
        except Exception as e:  # noqa: BLE001
            records.add(t0, time.time(), "admin", req, 0, "xport", "", f"{type(e).__name__}: {e}")
            continue
        outcome = "ok" if status == 200 else ("5xx" if status >= 500 else "bad")
        records.add(t0, time.time(), "admin", req, status, outcome, "", "" if outcome == "ok" else f"{status} {text}")


def load_main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    with open(spec["catalogue"]) as f:
        objects = json.load(f)
    mix = Mix(objects, random.Random(spec["seed"]), spec.get("only"))
    records = Records(spec["records"])
    deadline = spec["deadline"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=h1_worker, args=(spec, mix, records, deadline, stop, i), daemon=True)
               for i in range(spec["h1_clients"])]
    threads += [threading.Thread(target=h2_worker, args=(spec, mix, records, deadline, stop, i), daemon=True)
                for i in range(spec["h2_clients"])]
    if spec.get("h3_python"):
        threads.append(threading.Thread(target=h3_worker, args=(spec, mix, records, deadline, stop), daemon=True))
    if spec.get("purges", True):
        threads.append(threading.Thread(target=purger, args=(spec, mix, records, deadline, stop), daemon=True))
    for i, t in enumerate(threads):
        t.start()
        time.sleep(0.05)
    hard_end = deadline + 100  # every request has its own timeout well under this
    while any(t.is_alive() for t in threads) and time.time() < hard_end:
        records.flush()
        time.sleep(1)
    records.flush()
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The run: servers, the sampler, origin restarts, the verdict
# ---------------------------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server binary started with `serve --config FILE`, its JSON log appended to a file; ready when the log
    says `listening` (the line's *_addr fields are its addresses)."""

    def __init__(self, name, binary, config_path, log_path):
        self.name, self.binary, self.config_path, self.log_path = name, binary, config_path, log_path
        self.proc, self.addrs = None, {}

    def start(self, timeout=60):
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})
        logf.close()
        end = time.time() + timeout
        while time.time() < end:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                for line in f:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if ev.get("message") == "listening" or ev.get("fields", {}).get("message") == "listening":
                        flat = dict(ev, **ev.get("fields", {}))
                        self.addrs = {k: v for k, v in flat.items() if k.endswith("_addr") and v}
                        return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, wait=20):
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def read_status_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def count_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def tcp_of(pid, tls_port, origin_port):
    """The edge's own TCP sockets (its fds' inodes looked up in /proc/PID/net/tcp*): connections from clients
    to the TLS port, to the origin, and how many of all are in CLOSE_WAIT."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return {}
    out = {"clients": 0, "upstream": 0, "close_wait": 0, "other": 0}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[9] not in inodes:
                        continue
                    local, remote, state = int(p[1].split(":")[1], 16), int(p[2].split(":")[1], 16), p[3]
                    if state == "0A":  # listening
                        continue
                    if state == "08":
                        out["close_wait"] += 1
                    if local == tls_port:
                        out["clients"] += 1
                    elif remote == origin_port:
                        out["upstream"] += 1
                    else:
                        out["other"] += 1
        except OSError:
            pass
    return out


METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def scrape(admin_port, token):
    r = urllib.request.Request(f"http://127.0.0.1:{admin_port}/metrics",
                               headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            text = resp.read().decode()
    except Exception:  # noqa: BLE001
        return None
    out = {}
    for line in text.splitlines():
        m = METRIC_RE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def msum(metrics, name, **want):
    return sum(v for labels, v in (metrics or {}).get(name, []) if all(labels.get(k) == w for k, w in want.items()))


def parse_ts(s):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", s or "")
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = m.group(3) or "Z"
    return datetime.fromisoformat(m.group(1) + frac + ("+00:00" if tz == "Z" else tz)).timestamp()


class Run:
    def __init__(self, a):
        self.a = a
        self.minutes = a.minutes
        self.rng = random.Random(a.seed)
        self.dir = a.run_dir or tempfile.mkdtemp(prefix="soak-", dir="/tmp")
        os.makedirs(self.dir, exist_ok=True)
        self.objdir = os.path.join(self.dir, "objects")
        self.gaps = []  # [t_down, t_up or None]
        self.restarts = 0
        self.origin = self.edge = self.loader = None
        self.stop_event = threading.Event()
        self.records_path = os.path.join(self.dir, "records.jsonl")
        self.records_offset = 0
        self.rows = []
        self.totals = {"ok": 0, "exp4xx": 0, "bad": 0, "bad_gap": 0, "xport": 0, "xport_gap": 0,
                       "5xx_edge": 0, "5xx_gap": 0, "reqs": 0}
        self.proto_counts = {}
        self.edge_5xx, self.bad_examples, self.xport_examples = [], [], []

    # -- setup --
    def setup(self):
        a = self.a
        bin_dir = a.bin_dir
        log(f"run folder {self.dir}")
        t = time.time()
        objects = make_objects(self.objdir, self.rng)
        total = sum(o["size"] for o in objects)
        log(f"{len(objects)} objects, {total / MiB:.0f} MiB ({time.time() - t:.1f} s); memory tier "
            f"{a.memory_mib} MiB, disk tier {a.disk_mib} MiB: the working set does not fit")
        self.catalogue = os.path.join(self.dir, "objects.json")
        with open(self.catalogue, "w") as f:
            json.dump(objects, f)
        tls = os.path.join(self.dir, "tls")
        subprocess.run([os.path.join(bin_dir, "edge"), "cert", "--out", tls], check=True, stdout=subprocess.DEVNULL)
        self.ca = os.path.join(tls, "ca.pem")
        self.token = secrets.token_hex(20)
        self.origin_port = free_port()
        origin_cfg = os.path.join(self.dir, "origin.toml")
        with open(origin_cfg, "w") as f:
            f.write(f'data_dir = "{self.dir}/origin-data"\n[media]\nlisten = "127.0.0.1:{self.origin_port}"\n'
                    f'[admin]\nlisten = "127.0.0.1:0"\n[api]\nlisten = ""\n'
                    f'[store]\nurl = "file://{self.objdir}"\n[log]\nformat = "json"\nlevel = "info"\n')
        edge_cfg = os.path.join(self.dir, "edge.toml")
        os.makedirs(os.path.join(self.dir, "edge", "cache"), exist_ok=True)
        with open(edge_cfg, "w") as f:
            f.write(f'name = "soak-edge"\ndata_dir = "{self.dir}/edge"\n'
                    f'[tls]\nlisten = "127.0.0.1:0"\ncert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
                    f'[h3]\nenabled = {"true" if a.h3 else "false"}\n'
                    f'[admin]\nlisten = "127.0.0.1:0"\nbearer_token = "{self.token}"\n'
                    f'[[site]]\nname = "soak"\nhosts = ["localhost", "127.0.0.1"]\n'
                    f'upstream = "http://127.0.0.1:{self.origin_port}"\n'
                    f'[cache]\nmemory_bytes = {a.memory_mib * MiB}\ndisk_dir = "{self.dir}/edge/cache"\n'
                    f'disk_bytes = {a.disk_mib * MiB}\n[limits]\nmax_connections = 4096\n[log]\nformat = "json"\nlevel = "info"\n')
        for binary, cfg in (("origin", origin_cfg), ("edge", edge_cfg)):
            subprocess.run([os.path.join(bin_dir, binary), "check", cfg], check=True, stdout=subprocess.DEVNULL)
        self.origin = Server("origin", os.path.join(bin_dir, "origin"), origin_cfg,
                             os.path.join(self.dir, "origin.log"))
        self.edge = Server("edge", os.path.join(bin_dir, "edge"), edge_cfg, os.path.join(self.dir, "edge.log"))
        if not self.origin.start():
            raise SystemExit("soak: the origin did not start; see " + self.origin.log_path)
        if not self.edge.start():
            raise SystemExit("soak: the edge did not start; see " + self.edge.log_path)
        self.tls_port = int(self.edge.addrs["tls_addr"].rsplit(":", 1)[1])
        self.admin_port = int(self.edge.addrs["admin_addr"].rsplit(":", 1)[1])
        log(f"origin pid {self.origin.proc.pid} on 127.0.0.1:{self.origin_port}; edge pid {self.edge.proc.pid}: "
            f"{self.edge.addrs}")
        # One check before the load: a manifest through the edge, a miss then a hit.
        ctx = ssl.create_default_context(cafile=self.ca)
        for want in ("fwd=uri-miss", "hit"):
            c = http.client.HTTPSConnection("127.0.0.1", self.tls_port, context=ctx, timeout=10)
            c.request("GET", "/titles/t00/master.m3u8")
            r = c.getresponse()
            r.read()
            cs = r.getheader("cache-status") or ""
            c.close()
            if r.status != 200 or want not in cs:
                raise SystemExit(f"soak: first requests: {r.status} {cs!r}, expected 200 and {want}")
        self.idle = {"rss": read_status_kib(self.edge.proc.pid), "fds": count_fds(self.edge.proc.pid)}
        h3_python = os.path.join(ROOT, ".venv", "bin", "python")
        h3 = a.h3 and os.path.exists(h3_python) and subprocess.run(
            [h3_python, "-c", "import aioquic"], capture_output=True).returncode == 0
        if a.h3 and not h3:
            log("HTTP/3 load skipped: no .venv with aioquic (scripts/install-test-deps.sh makes it)")
        self.load_start = time.time()
        self.deadline = self.load_start + self.minutes * 60
        h1 = a.clients if a.h1_only else 0 if a.h2_only else max(1, a.clients // 2)
        h3 = h3 and not (a.h1_only or a.h2_only)
        spec = {"seed": a.seed, "ca": self.ca, "tls_port": self.tls_port, "admin_port": self.admin_port,
                "token": self.token, "objdir": self.objdir, "catalogue": self.catalogue, "run_dir": self.dir,
                "records": self.records_path, "deadline": self.deadline, "h1_clients": h1,
                "h2_clients": a.clients - h1, "think_s": a.think_ms / 1000,
                "only": a.only.split(",") if a.only else None, "purges": a.purges,
                "max_requests_per_worker": int(self.minutes * 60 * 50),
                "h3_python": h3_python if h3 else None,
                "h3_client": os.path.join(ROOT, "edge", "tests", "clients", "h3client.py")}
        spec_path = os.path.join(self.dir, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        self.loader = subprocess.Popen(["nice", "-n", "10", sys.executable, os.path.abspath(__file__), "load",
                                        "--spec", spec_path], start_new_session=True,
                                       stdout=open(os.path.join(self.dir, "load.out"), "ab"),
                                       stderr=subprocess.STDOUT)
        log(f"load: {h1} HTTP/1.1 clients, {spec['h2_clients']} HTTP/2 clients (curl, up to 4 streams each), "
            f"{'1 HTTP/3 client (aioquic), ' if h3 else ''}{'purges every 10-25 s, ' if a.purges else ''}"
            f"{'origin restarts, ' if a.restarts else ''}{'kinds ' + a.only + ', ' if a.only else ''}for {self.minutes} min; "
            f"warm-up {self.warmup} min (RSS: {self.rss_warmup} min)")

    @property
    def warmup(self):
        """Minutes before the live heap and descriptors are judged."""
        return min(5, max(1, self.minutes // 3))

    @property
    def rss_warmup(self):
        """Minutes before RSS is judged: until every origin gap length has happened once (one cycle of the
        restart schedule), when at least 8 minutes remain to judge; else the heap's warm-up.

        RSS, unlike the live heap, keeps high-water marks: the pages of long-lived buffers (foyer's 16 MiB flush
        buffer pool and submit queue, connection buffers) are first touched by the deepest burst so far, and the
        deepest bursts follow the longest origin gaps (misses queue up, then refill together). jemalloc's own
        `resident` figure, which counts those pages before they are touched, is flat from the first minute while
        RSS climbs to meet it. Growth after every part of the load has run once is growth under repetition."""
        if not self.a.restarts:
            return self.warmup
        first, every, gaps = self.restart_schedule()
        cycle_end = first + (len(gaps) - 1) * every + max(gaps)
        minutes = -(-cycle_end // 60) + 1
        return minutes if self.minutes - minutes >= 8 else self.warmup

    def restart_schedule(self):
        """(seconds to the first origin stop, seconds between stops, the gap lengths in turn)."""
        every = 240 if self.minutes >= 12 else max(60, self.minutes * 60 // 3)
        first = 150 if self.minutes >= 12 else every // 2
        return first, every, [5, 20, 10, 30]

    # -- origin restarts --
    def restarter(self):
        first, every, gaps = self.restart_schedule()
        k = 0
        at = self.load_start + first
        while at + gaps[k % len(gaps)] < self.deadline - (90 if self.minutes >= 12 else 20):
            if self.stop_event.wait(max(0, at - time.time())):
                return
            sig = signal.SIGKILL if k % 2 == 0 else signal.SIGTERM
            gap = gaps[k % len(gaps)]
            t_down = time.time()
            self.gaps.append([t_down, None])
            code = self.origin.stop(sig, wait=20)
            log(f"origin {'killed (SIGKILL)' if sig == signal.SIGKILL else 'stopped (SIGTERM)'} at "
                f"+{(t_down - self.load_start) / 60:.2f} min (exit {code}); back in {gap} s")
            if self.stop_event.wait(gap):
                self.gaps[-1][1] = time.time()
                return
            for _ in range(5):
                if self.origin.start(timeout=30):
                    break
                time.sleep(1)
            else:
                log("the origin did not start again; see " + self.origin.log_path)
            self.gaps[-1][1] = time.time()
            self.restarts += 1
            log(f"origin up again at +{(self.gaps[-1][1] - self.load_start) / 60:.2f} min "
                f"(pid {self.origin.proc.pid}, down {self.gaps[-1][1] - t_down:.1f} s)")
            k += 1
            at += every

    def in_gap(self, t0, t1):
        for down, up in self.gaps:
            end = (up if up is not None else float("inf")) + GAP_GRACE_S
            if t0 <= end and t1 >= down:
                return True
        return False

    # -- accounting --
    def read_records(self):
        counts = {k: 0 for k in ("reqs", "ok", "exp4xx", "bad", "bad_gap", "xport", "xport_gap", "5xx_edge",
                                 "5xx_gap", "purges")}
        protos = {}
        if not os.path.exists(self.records_path):
            return counts, protos
        with open(self.records_path) as f:
            f.seek(self.records_offset)
            data = f.read()
        cut = data.rfind("\n") + 1
        self.records_offset += len(data[:cut].encode())
        for line in data[:cut].splitlines():
            try:
                t0, t1, proto, kind, status, outcome, cs, path, rng, detail = json.loads(line)
            except ValueError:
                continue
            if proto == "admin":
                counts["purges"] += 1
            else:
                counts["reqs"] += 1
                protos[proto] = protos.get(proto, 0) + 1
            gap = self.in_gap(t0, t1)
            ex = {"t0": t0, "t1": t1, "proto": proto, "kind": kind, "status": status, "cache_status": cs,
                  "path": path, "range": rng, "detail": detail}
            if outcome == "5xx":
                # The origin being down explains a 502/503/504 that overlaps its gap; nothing explains a 500.
                if gap and status in (502, 503, 504):
                    counts["5xx_gap"] += 1
                else:
                    counts["5xx_edge"] += 1
                    if len(self.edge_5xx) < 200:
                        self.edge_5xx.append(ex)
            elif outcome in ("bad", "xport"):
                key = outcome + ("_gap" if gap else "")
                counts[key] += 1
                examples = self.bad_examples if outcome == "bad" else self.xport_examples
                if not gap and len(examples) < 50:
                    examples.append(ex)
            else:
                counts[outcome] += 1
        return counts, protos

    def sample(self, minute, prev_metrics):
        pid = self.edge.proc.pid
        counts, protos = self.read_records()
        for k, v in counts.items():
            self.totals[k] = self.totals.get(k, 0) + v
        for k, v in protos.items():
            self.proto_counts[k] = self.proto_counts.get(k, 0) + v
        metrics = scrape(self.admin_port, self.token)
        tcp = tcp_of(pid, self.tls_port, self.origin_port)
        hit_ratio = None
        if metrics is not None:
            total = msum(metrics, "edge_http_requests_total") - msum(prev_metrics, "edge_http_requests_total")
            hits = (msum(metrics, "edge_http_requests_total", cache_status="hit")
                    - msum(prev_metrics, "edge_http_requests_total", cache_status="hit"))
            hit_ratio = 100.0 * hits / total if total else None
        row = {"minute": minute, "t": time.time(), "rss_kib": read_status_kib(pid), "fds": count_fds(pid),
               "tcp": tcp, "conns_metric": msum(metrics, "edge_http_connections_open") if metrics else None,
               "quic_open": msum(metrics, "edge_quic_connections_open") if metrics else None,
               "hit_pct": hit_ratio, "counts": counts, "origin_up": self.origin.alive(),
               "restarts": self.restarts,
               "mem_tier_mib": msum(metrics, "edge_cache_memory_bytes") / MiB if metrics else None,
               # jemalloc's view: live bytes (a leak grows these) and resident pages (fragmentation grows these).
               "alloc_mib": msum(metrics, "edge_allocator_bytes", state="allocated") / MiB if metrics else None,
               "resident_mib": msum(metrics, "edge_allocator_bytes", state="resident") / MiB if metrics else None,
               "marks": msum(metrics, "edge_cache_marks") if metrics else None}
        self.rows.append(row)
        return row, metrics if metrics is not None else prev_metrics

    HEADER = (" min  rss_MiB   fds  tcp:cli/up/cw  conns quic   reqs  h1/h2/h3          4xx_ok  bad(gap)  "
              "xport(gap)  5xx_edge  5xx_gap  hit%  memtier  alloc/resid  marks  purges  origin")

    def print_row(self, row, protos):
        c, tcp = row["counts"], row["tcp"] or {}
        hit = "  -  " if row["hit_pct"] is None else f"{row['hit_pct']:5.1f}"
        mem = "-" if row["mem_tier_mib"] is None else f"{row['mem_tier_mib']:.0f}M"
        alloc = ("-" if not row["alloc_mib"] else
                 f"{row['alloc_mib']:.0f}/{row['resident_mib']:.0f}M")
        print(f"{row['minute']:4d}  {row['rss_kib'] / 1024 if row['rss_kib'] else 0:7.1f}  {row['fds'] or 0:4d}  "
              f"{tcp.get('clients', 0):5d}/{tcp.get('upstream', 0):3d}/{tcp.get('close_wait', 0):<3d}  "
              f"{int(row['conns_metric'] or 0):5d} {int(row['quic_open'] or 0):4d}  {c['reqs']:6d}  "
              f"{protos.get('h1', 0):5d}/{protos.get('h2', 0):5d}/{protos.get('h3', 0):<3d}  {c['exp4xx']:6d}  "
              f"{c['bad']:3d}({c['bad_gap']:3d})  {c['xport']:4d}({c['xport_gap']:4d})  {c['5xx_edge']:8d}  "
              f"{c['5xx_gap']:7d}  {hit}  {mem:>7}  {alloc:>11}  {int(row['marks'] or 0):5d}  {c['purges']:6d}  "
              f"{'up' if row['origin_up'] else 'DOWN'} r{row['restarts']}", flush=True)

    # -- main loop --
    def run(self):
        self.setup()
        if self.a.restarts:
            threading.Thread(target=self.restarter, daemon=True).start()
        print(self.HEADER, flush=True)
        metrics = scrape(self.admin_port, self.token)
        minute = 0
        edge_died = False
        while minute < self.minutes:
            minute += 1
            end = self.load_start + minute * 60
            while time.time() < end:
                time.sleep(min(1.0, max(0.0, end - time.time())))
                if not self.edge.alive():
                    break
            if not self.edge.alive():
                edge_died = True
                log(f"THE EDGE DIED in minute {minute} (exit {self.edge.proc.returncode}); see {self.edge.log_path}")
                if self.loader.poll() is None:
                    os.killpg(self.loader.pid, signal.SIGTERM)  # its clients stop after their current request
                break
            before = dict(self.proto_counts)
            row, metrics = self.sample(minute, metrics)
            protos = {k: self.proto_counts.get(k, 0) - before.get(k, 0) for k in self.proto_counts}
            self.print_row(row, protos)
        self.stop_event.set()
        # Load stops (its deadline has passed; every request has a bounded timeout), then a quiet spell.
        if self.loader.poll() is None:
            try:
                self.loader.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.loader.pid, signal.SIGTERM)
                self.loader.wait(20)
        if self.origin.alive() is False and self.gaps and self.gaps[-1][1] is None:
            self.origin.start(timeout=30)
            self.gaps[-1][1] = time.time()
        counts, protos = self.read_records()  # the requests that ended after the last minute's line
        for k, v in counts.items():
            self.totals[k] = self.totals.get(k, 0) + v
        for k, v in protos.items():
            self.proto_counts[k] = self.proto_counts.get(k, 0) + v
        return self.verdict(edge_died, counts)

    def quiet_fds(self, limit):
        """fds once the load has stopped: after 10 s of quiet, then (up to 70 s more) until at or under `limit`
        (idle upstream connections and closing client connections are given their idle timeouts)."""
        pid = self.edge.proc.pid
        time.sleep(10)
        samples = [(10, count_fds(pid), tcp_of(pid, self.tls_port, self.origin_port))]
        t = 10
        while samples[-1][1] is not None and samples[-1][1] > limit and t < 80:
            time.sleep(5)
            t += 5
            samples.append((t, count_fds(pid), tcp_of(pid, self.tls_port, self.origin_port)))
        return samples

    def verdict(self, edge_died, late):
        failures = []
        rows = self.rows
        w = self.rss_warmup
        base_rows = [r for r in rows if max(1, w - 2) <= r["minute"] <= w and r["rss_kib"]]
        after = [r for r in rows if r["minute"] > w and r["rss_kib"]]
        heap_w = self.warmup
        heap_base_rows = [r for r in rows if max(1, heap_w - 2) <= r["minute"] <= heap_w and r["rss_kib"]]
        heap_after = [r for r in rows if r["minute"] > heap_w and r["rss_kib"]]
        print()
        log(f"late records (ended after the last minute's line): {late['reqs']} requests, "
            f"{late['5xx_edge']} edge 5xx, {late['5xx_gap']} gap 5xx, {late['xport']} transport errors")
        rss_growth = None
        if base_rows and after:
            base = statistics.median(r["rss_kib"] for r in base_rows)
            peak = max(after, key=lambda r: r["rss_kib"])
            # Growth is judged on 3-minute medians: a single minute's RSS swings by several MiB (thread stacks,
            # connection buffers in flight) without anything being kept.
            rolling = [(after[i + 2]["minute"], statistics.median(r["rss_kib"] for r in after[i:i + 3]))
                       for i in range(len(after) - 2)] or [(peak["minute"], peak["rss_kib"])]
            rolled_minute, rolled = max(rolling, key=lambda m: m[1])
            rss_growth = 100.0 * (rolled - base) / base
            last3 = statistics.median(r["rss_kib"] for r in after[-3:])
            log(f"RSS: idle before load {self.idle['rss'] / 1024:.1f} MiB; warm-up baseline (median of minutes "
                f"{max(1, w - 2)}-{w}) {base / 1024:.1f} MiB; largest 3-minute median after warm-up "
                f"{rolled / 1024:.1f} MiB (minutes {rolled_minute - 2}-{rolled_minute}): {rss_growth:+.1f} %; "
                f"largest single minute {peak['rss_kib'] / 1024:.1f} MiB (minute {peak['minute']}, "
                f"{100.0 * (peak['rss_kib'] - base) / base:+.1f} %); median of the last 3 minutes "
                f"{last3 / 1024:.1f} MiB ({100.0 * (last3 - base) / base:+.1f} %)")
            # The leak test proper: jemalloc's live bytes outside the memory tier (the tier's contents swing by
            # several MiB as it fills and evicts, a few % of the heap, and are bounded by its budget), the median
            # of the last five minutes against the warm-up's. A leak grows steadily and shows there; one busy
            # minute (fills in flight) does not.
            def outside(r):
                return r["alloc_mib"] - (r.get("mem_tier_mib") or 0.0)
            alloc_base = [outside(r) for r in heap_base_rows if r.get("alloc_mib")]
            alloc_after = [r for r in heap_after if r.get("alloc_mib")]
            if alloc_base and len(alloc_after) >= 5:
                a0 = statistics.median(alloc_base)
                a_last = statistics.median(outside(r) for r in alloc_after[-5:])
                a_peak = max(alloc_after, key=outside)
                alloc_growth = 100.0 * (a_last - a0) / a0
                log(f"jemalloc: allocated outside the memory tier {a0:.1f} MiB at the baseline (median of minutes "
                    f"{max(1, heap_w - 2)}-{heap_w}), {a_last:.1f} MiB over the last 5 minutes ({alloc_growth:+.1f} %), "
                    f"largest single minute {outside(a_peak):.1f} MiB (minute {a_peak['minute']}); allocated in all "
                    f"{statistics.median(r['alloc_mib'] for r in heap_base_rows if r.get('alloc_mib')):.1f} -> "
                    f"{statistics.median(r['alloc_mib'] for r in alloc_after[-5:]):.1f} MiB; resident "
                    f"{statistics.median(r['resident_mib'] for r in heap_base_rows if r.get('resident_mib')):.1f} -> "
                    f"{statistics.median(r['resident_mib'] for r in alloc_after[-5:]):.1f} MiB")
                if alloc_growth > 5.0:
                    failures.append(f"the heap outside the memory tier grew {alloc_growth:+.1f} % after warm-up "
                                    f"(limit 5 %, last 5 minutes' median): {a0:.1f} -> {a_last:.1f} MiB")
            if rss_growth > 5.0:
                failures.append(f"RSS grew {rss_growth:+.1f} % after warm-up (limit 5 %, 3-minute medians): "
                                f"{base / 1024:.1f} -> {rolled / 1024:.1f} MiB at minutes "
                                f"{rolled_minute - 2}-{rolled_minute}")
        elif not edge_died:
            log("RSS: the run is too short for a warm-up baseline and a later minute; RSS not judged")
        fd_rows = [r for r in rows if max(1, heap_w - 2) <= r["minute"] <= heap_w and r["fds"]]
        if self.edge.alive() and fd_rows:
            fd_base = int(statistics.median(r["fds"] for r in fd_rows))
            limit = fd_base + self.a.fd_slack
            samples = self.quiet_fds(limit)
            t, fds, tcp = samples[-1]
            rss_quiet = read_status_kib(self.edge.proc.pid)
            if rss_quiet:
                log(f"RSS after the load stopped (at the last fd sample): {rss_quiet / 1024:.1f} MiB")
            log(f"fds: idle before load {self.idle['fds']}; warm-up level (median of minutes {max(1, heap_w - 2)}-{heap_w}) "
                f"{fd_base}; after the load, {' '.join(f'{s}s:{n}' for s, n, _ in samples)} "
                f"(last: {tcp.get('clients', 0)} client, {tcp.get('upstream', 0)} upstream, "
                f"{tcp.get('close_wait', 0)} CLOSE_WAIT TCP sockets); limit {limit}")
            if fds is not None and fds > limit:
                failures.append(f"descriptors leak: {fds} open {t} s after the load stopped, warm-up level "
                                f"{fd_base} + slack {self.a.fd_slack}")
            m = scrape(self.admin_port, self.token)
            if m is not None:
                log(f"after the load: edge_http_connections_open {msum(m, 'edge_http_connections_open'):.0f}, "
                    f"edge_quic_connections_open {msum(m, 'edge_quic_connections_open'):.0f}, fills in flight "
                    f"{msum(m, 'edge_cache_fills_in_flight'):.0f}, memory tier "
                    f"{msum(m, 'edge_cache_memory_bytes') / MiB:.0f} MiB")
                ups = {l.get('kind'): v for l, v in m.get('edge_upstream_errors_total', [])}
                log(f"edge metrics over the run: requests by cache status "
                    f"{ {l: int(msum(m, 'edge_http_requests_total', cache_status=l)) for l in ('hit', 'miss', 'coalesced', 'stale', 'revalidated', 'pass', 'error', 'local') } }, "
                    f"by status class { {c: int(msum(m, 'edge_http_requests_total', status_class=c)) for c in ('2xx', '4xx', '5xx')} }, "
                    f"upstream errors {ups}, disk tier up {msum(m, 'edge_cache_disk_tier_up'):.0f}")
                self.final_metrics_text = m
        if edge_died or not self.edge.alive():
            failures.append(f"the edge process died (exit {self.edge.proc.returncode})")
        tot = self.totals
        log(f"requests: {tot['reqs']} ({', '.join(f'{k} {v}' for k, v in sorted(self.proto_counts.items()))}); "
            f"ok {tot['ok']}, expected 4xx {tot['exp4xx']}, wrong answers {tot['bad']} (+{tot['bad_gap']} in origin "
            f"gaps), transport errors {tot['xport']} (+{tot['xport_gap']} in origin gaps), 5xx caused by the edge "
            f"{tot['5xx_edge']}, 5xx during origin gaps {tot['5xx_gap']}; purges {tot.get('purges', 0)}; "
            f"origin restarts {self.restarts}")
        for down, up in self.gaps:
            log(f"origin gap: +{(down - self.load_start) / 60:.2f} .. "
                f"+{((up or time.time()) - self.load_start) / 60:.2f} min ({(up or time.time()) - down:.1f} s)")
        if tot["5xx_edge"]:
            failures.append(f"{tot['5xx_edge']} 5xx answers the edge caused (not explained by an origin gap)")
            self.explain_5xx()
        if tot["bad"]:
            failures.append(f"{tot['bad']} wrong answers (status, Content-Range or bytes) outside origin gaps")
        for title, examples in (("wrong answers", self.bad_examples), ("transport errors", self.xport_examples)):
            if examples:
                log(f"{title} outside origin gaps (first {min(10, len(examples))}):")
                for e in examples[:10]:
                    print(f"    +{(e['t0'] - self.load_start) / 60:.2f} min {e['proto']} {e['kind']} {e['path']} "
                          f"range={e['range'] or '-'} status={e['status']} cache-status={e['cache_status']!r}: "
                          f"{e['detail']}")
        # Stop the edge cleanly: a drained shutdown is part of a healthy run.
        if self.edge.alive():
            code = self.edge.stop(signal.SIGTERM, wait=30)
            log(f"edge stopped with SIGTERM: exit {code}")
            if code != 0:
                failures.append(f"the edge did not exit cleanly on SIGTERM (exit {code})")
        self.origin.stop(signal.SIGTERM, wait=20)
        warn = self.edge_log_warnings()
        if warn:
            log("edge log lines at WARN/ERROR, by message: " + "; ".join(f"{n} x {m}" for m, n in warn[:12]))
        with open(os.path.join(self.dir, "minutes.json"), "w") as f:
            json.dump([{k: r[k] for k in ("minute", "rss_kib", "fds", "tcp", "conns_metric", "quic_open", "hit_pct",
                                          "mem_tier_mib", "alloc_mib", "resident_mib", "counts", "origin_up",
                                          "restarts")} for r in rows], f)
        print()
        if failures:
            print("SOAK FAILED:")
            for f in failures:
                print("  - " + f)
            return 1
        print(f"SOAK PASSED: {self.minutes} min, {tot['reqs']} requests, RSS "
              f"{'%+.1f %%' % rss_growth if rss_growth is not None else 'not judged'} after warm-up, no descriptor "
              f"leak, no 5xx caused by the edge")
        return 0

    def edge_log_warnings(self):
        counts = {}
        try:
            with open(self.edge.log_path, errors="replace") as f:
                for line in f:
                    if '"WARN"' not in line and '"ERROR"' not in line:
                        continue
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    msg = ev.get("fields", {}).get("message") or ev.get("message") or "?"
                    key = f"{ev.get('level')} {msg[:100]}"
                    counts[key] = counts.get(key, 0) + 1
        except OSError:
            pass
        return sorted(counts.items(), key=lambda kv: -kv[1])

    def explain_5xx(self):
        """Each edge-caused 5xx beside the edge's access lines for the same path and status near its time, and
        the edge's other log lines around it."""
        log(f"5xx caused by the edge (first {min(20, len(self.edge_5xx))} of {len(self.edge_5xx)} kept):")
        lines = []
        with open(self.edge.log_path, errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                t = parse_ts(ev.get("timestamp"))
                if t is None:
                    continue
                lines.append((t, ev, line.rstrip()))
        for e in self.edge_5xx[:20]:
            print(f"  +{(e['t0'] - self.load_start) / 60:.2f} min ({datetime.fromtimestamp(e['t0']).isoformat()}) "
                  f"{e['proto']} {e['kind']} GET {e['path']} range={e['range'] or '-'} -> {e['status']} "
                  f"cache-status={e['cache_status']!r}: {e['detail']}")
            path = e["path"].split("?", 1)[0]
            shown = 0
            for t, ev, raw in lines:
                if not (e["t0"] - 2 <= t <= e["t1"] + 2):
                    continue
                f = ev.get("fields", {})
                if ev.get("target") == "access" and (f.get("status") != e["status"] or path not in str(f.get("path"))):
                    continue
                print("      edge log: " + raw[:600])
                shown += 1
                if shown >= 6:
                    break


def run_main(a):
    run = Run(a)

    def cleanup(*_):
        for s in (run.edge, run.origin):
            if s is not None and s.alive():
                s.stop(signal.SIGTERM, wait=15)
        if run.loader is not None and run.loader.poll() is None:
            try:
                os.killpg(run.loader.pid, signal.SIGKILL)
            except OSError:
                pass
    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(143)))
    signal.signal(signal.SIGINT, lambda *_: (cleanup(), sys.exit(130)))
    try:
        code = run.run()
    finally:
        cleanup()
        if not a.keep:
            for d in ("objects", "edge/cache", "h2"):
                shutil.rmtree(os.path.join(run.dir, d), ignore_errors=True)
        log(f"logs: {run.dir}/edge.log, {run.dir}/origin.log, {run.dir}/records.jsonl"
            + ("" if a.keep else " (objects and the disk cache removed; --keep keeps them)"))
    return code


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin-dir", required=True, help="folder with the release edge and origin binaries")
    r.add_argument("--minutes", type=int, default=int(os.environ.get("SOAK_MINUTES", "30")))
    r.add_argument("--clients", type=int, default=16, help="concurrent clients: half HTTP/1.1, half HTTP/2")
    r.add_argument("--think-ms", type=int, default=100, help="pause up to this long between a client's requests")
    r.add_argument("--memory-mib", type=int, default=64)
    r.add_argument("--disk-mib", type=int, default=256)
    r.add_argument("--fd-slack", type=int, default=16)
    r.add_argument("--no-h3", dest="h3", action="store_false")
    r.add_argument("--run-dir")
    r.add_argument("--seed", type=int, default=14)
    r.add_argument("--only", help="comma-separated request kinds to send: " + ",".join(Mix.KINDS))
    r.add_argument("--no-purges", dest="purges", action="store_false")
    r.add_argument("--no-restarts", dest="restarts", action="store_false", help="never stop the origin")
    r.add_argument("--h1-only", action="store_true", help="all clients HTTP/1.1 (no HTTP/2, no HTTP/3)")
    r.add_argument("--h2-only", action="store_true", help="all clients HTTP/2 (no HTTP/1.1, no HTTP/3)")
    r.add_argument("--keep", action="store_true", help="keep the objects and the disk cache")
    ld = sub.add_parser("load")
    ld.add_argument("--spec", required=True)
    a = p.parse_args()
    if a.cmd == "load":
        return load_main(a.spec)
    if a.minutes < 1:
        p.error("--minutes must be at least 1")
    return run_main(a)


if __name__ == "__main__":
    sys.exit(main())
