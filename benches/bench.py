#!/usr/bin/env python3
"""Side-by-side benchmark of the edge against the caches it must beat (nginx proxy_cache, Varnish with hitch for
TLS, Apache Traffic Server), all filling from one nginx origin on loopback, and over HTTP/3 against Caddy (quic-go)
serving the same files, measured in one run with interleaved repetitions (A B C ... then ... C B A).
`--base-bin DIR` adds another build of the edge as target `base` (an A/B of a change in the same run). Not a test: it prints a table of medians, ranges and ratios and writes
JSON. Run it through `scripts/bench.sh [--quick|--full]`, which builds the release binaries first.

Per repetition and target: hot hits of 1 MiB segments, 256 KiB segments and ~4 KB manifests over HTTP/1.1
(wrk), TLS HTTP/2 (h2load) and, for the edge, HTTP/3 (benches' h3load); then a herd of 200 clients on one cold
4 MiB object. Server CPU is read per process group from /proc, so requests per server CPU-second and CPU seconds
per GB are comparable across servers whatever else the machine is doing, and context switches per request come
from /proc too. After the runs: RSS of each server, a raw loopback TCP ceiling, and the kernel's floor: the CPU
per GB of one raw stream of 1 MiB sends, by write from memory and by sendfile.
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

from benchkit import edge_config
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benches" / "peers"
HZ = os.sysconf("SC_CLK_TCK")
PORTS = {
    "origin": 19400,
    "edge_h1": 19410, "edge_tls": 19411, "edge_admin": 19412,
    "base_h1": 19413, "base_tls": 19414, "base_admin": 19415,
    "nginx_h1": 19420, "nginx_h2": 19421,
    "varnish_h1": 19430, "varnish_proxy": 19431, "hitch": 19432,
    "ats_h1": 19440, "ats_h2": 19441,
    "raw": 19450,
    "caddy_h3": 19460,
}
TESTS = ["1m", "256k", "manifest"]
PEER_NAMES = ["nginx", "varnish", "ats", "caddy"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes, by process group


class Servers:
    """Every server this run started, each in its own session (process group), stopped at exit."""

    def __init__(self):
        self.groups = {}

    def start(self, name, cmd, logfile, env=None):
        out = open(logfile, "wb")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        self.groups[name] = proc
        return proc

    def pgid(self, name):
        return self.groups[name].pid

    def stop_all(self):
        for name, proc in reversed(list(self.groups.items())):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 10
            while time.time() < deadline and group_pids(proc.pid):
                time.sleep(0.1)
            if group_pids(proc.pid):
                log(f"{name} did not stop on SIGTERM within 10 s: SIGKILL")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.groups.clear()


def proc_stats():
    """(pid, pgid, state, utime+stime ticks) of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        out.append((int(entry), int(fields[2]), fields[0], int(fields[11]) + int(fields[12])))
    return out


def group_pids(pgid):
    return [pid for pid, pg, state, _ in proc_stats() if pg == pgid and state != "Z"]


def group_cpu_ticks(pgid):
    return sum(ticks for _, pg, _, ticks in proc_stats() if pg == pgid)


def group_context_switches(pgid):
    """Voluntary and involuntary context switches of every thread in the process group so far."""
    total = 0
    for pid in group_pids(pgid):
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total


def group_rss_mib(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def children_cpu_s():
    t = os.times()
    return t.children_user + t.children_system


def wait_http(url, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        r = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url],
                           capture_output=True, text=True)
        if r.stdout == "200":
            return True
        time.sleep(0.2)
    return False


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- content and configs


def make_content(data, counts):
    stamp = json.dumps(counts)
    marker = data / ".complete"
    if marker.exists() and marker.read_text() == stamp:
        return
    log(f"generating content in {data}")
    shutil.rmtree(data, ignore_errors=True)
    rng = random.Random(7)
    for kind, size, ext in (("1m", 1 << 20, "ts"), ("256k", 256 << 10, "m4s")):
        (data / "seg" / kind).mkdir(parents=True)
        for i in range(counts[kind]):
            (data / "seg" / kind / f"s{i:04d}.{ext}").write_bytes(rng.randbytes(size))
    (data / "herd.ts").write_bytes(rng.randbytes(4 << 20))
    (data / "live").mkdir()
    for i in range(counts["manifest"]):
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4", f"#EXT-X-MEDIA-SEQUENCE:{1000 + i}"]
        for s in range(90):
            lines += ["#EXTINF:4.000,", f"/seg/1m/s{(i * 7 + s) % counts['1m']:04d}.ts"]
        (data / "live" / f"ch{i:02d}.m3u8").write_text("\n".join(lines) + "\n")
    marker.write_text(stamp)


def paths_of(data, test):
    folder = {"1m": "seg/1m", "256k": "seg/256k", "manifest": "live"}[test]
    return sorted("/" + str(p.relative_to(data)) for p in (data / folder).iterdir())


def render(template, dest, values):
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)


# ---------------------------------------------------------------- targets


class Target:
    def __init__(self, name, server, proto, url):
        self.name, self.server, self.proto, self.url = name, server, proto, url


def start_edge(name, bin_dir, run, servers, args):
    """Starts an edge build from `bin_dir` as server `name` (ports `{name}_h1`, `{name}_tls`, `{name}_admin`)."""
    d = run / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "edge.toml").write_text(edge_config(
        name, d, tls_port=PORTS[name + "_tls"], http_port=PORTS[name + "_h1"], admin_port=PORTS[name + "_admin"],
        cert=run / "tls" / "cert.pem", key=run / "tls" / "key.pem", upstream=f"http://127.0.0.1:{PORTS['origin']}",
        cache={"memory_bytes": 1 << 30, "disk_bytes": 2 << 30}))
    servers.start(name, [str(bin_dir / "edge"), "serve", "--config", str(d / "edge.toml")], d / "stdout.log")
    if not wait_http(f"http://127.0.0.1:{PORTS[name + '_h1']}/live/ch00.m3u8", 30):
        raise SystemExit(f"the {name} edge did not come up: {(d / 'stdout.log').read_text()[-2000:]}")
    targets = [Target(f"{name}-h1", name, "h1", f"http://127.0.0.1:{PORTS[name + '_h1']}"),
               Target(f"{name}-h2", name, "h2", f"https://127.0.0.1:{PORTS[name + '_tls']}")]
    if not args.no_h3:
        targets.append(Target(f"{name}-h3", name, "h3", f"https://localhost:{PORTS[name + '_tls']}"))
    return targets


def start_everything(args, run, servers, values, bin_dir):
    targets = []
    d = run / "origin"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    render(PEERS / "origin-nginx.conf", d / "nginx.conf", values)
    (d / "access.log").write_text("")
    servers.start("origin", ["nginx", "-p", f"{d}/", "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                  d / "stdout.log")
    if not wait_http(f"http://127.0.0.1:{PORTS['origin']}/live/ch00.m3u8", 20):
        raise SystemExit("the origin did not come up")

    # The edge: 1 GiB memory tier over a 2 GiB disk tier, like the peers' caches.
    targets += start_edge("edge", bin_dir, run, servers, args)
    if args.base_bin:
        # A/B: another build of the edge, the same settings, measured as one more target of the same run.
        targets += start_edge("base", args.base_bin, run, servers, args)

    if "nginx" in args.peers:
        d = run / "nginx"
        shutil.rmtree(d, ignore_errors=True)
        (d / "tmp").mkdir(parents=True)
        (d / "cache").mkdir()
        render(PEERS / "nginx-proxy.conf", d / "nginx.conf", values)
        servers.start("nginx", ["nginx", "-p", f"{d}/", "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                      d / "stdout.log")
        if wait_http(f"http://127.0.0.1:{PORTS['nginx_h1']}/live/ch00.m3u8", 20):
            targets += [Target("nginx-h1", "nginx", "h1", f"http://127.0.0.1:{PORTS['nginx_h1']}"),
                        Target("nginx-h2", "nginx", "h2", f"https://127.0.0.1:{PORTS['nginx_h2']}")]
        else:
            log("nginx proxy did not start; skipped")
    if "varnish" in args.peers:
        d = run / "varnish"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        render(PEERS / "varnish.vcl", d / "default.vcl", values)
        render(PEERS / "hitch.conf", d / "hitch.conf", values)
        # varnishd and hitch in one process group: one server, measured together.
        script = (f'varnishd -F -j none -n "{d}/work" -f "{d}/default.vcl" -a "h1=127.0.0.1:{PORTS["varnish_h1"]}" '
                  f'-a "tls=127.0.0.1:{PORTS["varnish_proxy"]},PROXY" -T none -s malloc,2g -p feature=+http2 '
                  f'-p thread_pools=2 > "{d}/varnishd.log" 2>&1 & hitch --config="{d}/hitch.conf" > "{d}/hitch.log" 2>&1 & wait')
        servers.start("varnish", ["bash", "-c", script], d / "stdout.log")
        if wait_http(f"http://127.0.0.1:{PORTS['varnish_h1']}/live/ch00.m3u8", 30):
            targets.append(Target("varnish-h1", "varnish", "h1", f"http://127.0.0.1:{PORTS['varnish_h1']}"))
            if wait_http(f"https://127.0.0.1:{PORTS['hitch']}/live/ch00.m3u8", 20):
                targets.append(Target("varnish-h2", "varnish", "h2", f"https://127.0.0.1:{PORTS['hitch']}"))
        else:
            log("varnish did not start; skipped")
    if "ats" in args.peers:
        d = run / "ats"
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("etc", "var", "run", "log", "cache", "data"):
            (d / sub).mkdir(parents=True)
        for f in ("records.config", "remap.config", "storage.config", "ssl_multicert.config", "ip_allow.yaml",
                  "logging.yaml"):
            render(PEERS / "ats" / f, d / "etc" / f, values)
        for f in ("plugin.config", "cache.config", "hosting.config", "parent.config", "volume.config",
                  "socks.config", "splitdns.config"):
            (d / "etc" / f).write_text("")
        (d / "etc" / "sni.yaml").write_text("sni: []\n")
        (d / "etc" / "strategies.yaml").write_text("strategies: []\n")
        if Path("/etc/trafficserver/body_factory").exists():
            shutil.copytree("/etc/trafficserver/body_factory", d / "etc" / "body_factory")
        render(PEERS / "ats" / "runroot.yaml", d / "runroot.yaml", values)
        env = dict(os.environ, TS_RUNROOT=str(d / "runroot.yaml"))
        servers.start("ats", ["traffic_server"], d / "stdout.log", env=env)
        if wait_http(f"http://127.0.0.1:{PORTS['ats_h1']}/live/ch00.m3u8", 60):
            targets.append(Target("ats-h1", "ats", "h1", f"http://127.0.0.1:{PORTS['ats_h1']}"))
            if wait_http(f"https://127.0.0.1:{PORTS['ats_h2']}/live/ch00.m3u8", 10):
                targets.append(Target("ats-h2", "ats", "h2", f"https://127.0.0.1:{PORTS['ats_h2']}"))
        else:
            log("Traffic Server did not start; skipped")
    if "caddy" in args.peers and not args.no_h3:
        # The HTTP/3 peer: Caddy (quic-go) serving the origin's files itself over TLS with HTTP/3 (no cache to
        # fill: its hits are file reads from the page cache), measured with the same h3load as the edge.
        d = run / "caddy"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        port = PORTS["caddy_h3"]
        (d / "Caddyfile").write_text(f"""{{
	admin off
	auto_https off
	servers {{
		protocols h1 h2 h3
	}}
}}
https://localhost:{port}, https://127.0.0.1:{port} {{
	tls {run}/tls/cert.pem {run}/tls/key.pem
	root * {values['DATA']}
	file_server
	log {{
		output discard
	}}
}}
""")
        env = dict(os.environ, XDG_DATA_HOME=str(d / "data"), XDG_CONFIG_HOME=str(d / "config"))
        servers.start("caddy", ["caddy", "run", "--config", str(d / "Caddyfile"), "--adapter", "caddyfile"],
                      d / "stdout.log", env=env)
        if wait_http(f"https://127.0.0.1:{port}/live/ch00.m3u8", 20):
            targets.append(Target("caddy-h3", "caddy", "h3", f"https://localhost:{port}"))
        else:
            log("Caddy did not start; skipped")
    return targets


# ---------------------------------------------------------------- measurements


def origin_requests(run):
    with open(run / "origin" / "access.log", "rb") as f:
        return sum(1 for _ in f)


def curl_flag(proto):
    return {"h1": "--http1.1", "h2": "--http2", "h3": "--http2"}[proto]


def warm(target, run, data, lists):
    """Fetches every object through the target until a pass makes no origin request for segments (max 3), then
    checks a few bodies against the origin's files."""
    if target.proto == "h3":
        return []  # the edge's cache is shared by its listeners: warmed through h1/h2
    config = run / "lists" / f"warm.{target.name}.curl"
    with open(config, "w") as f:
        for test in TESTS:
            for p in lists[test]:
                f.write(f'url = "{target.url}{p}"\noutput = "/dev/null"\n')
    notes = []
    for attempt in range(1, 4):
        before = origin_requests(run)
        subprocess.run(["curl", "-sk", curl_flag(target.proto), "--parallel", "--parallel-max", "8",
                        "--max-time", "30", "-K", str(config)], capture_output=True, timeout=300)
        lines = (run / "origin" / "access.log").read_text().splitlines()[before:]
        segment_fetches = sum(1 for line in lines if '"GET /seg/' in line)
        notes.append(f"pass {attempt}: {len(lines)} origin requests ({segment_fetches} segments)")
        if segment_fetches == 0:
            break
    bad = 0
    for p in (lists["1m"][7], lists["256k"][11], lists["manifest"][3]):
        body = subprocess.run(["curl", "-sk", curl_flag(target.proto), "--max-time", "20", target.url + p],
                              capture_output=True).stdout
        if hashlib.md5(body).digest() != hashlib.md5((data / p.lstrip("/")).read_bytes()).digest():
            bad += 1
            log(f"  INTEGRITY: {target.name} {p} differs from the origin's file")
    notes.append(f"integrity mismatches: {bad}")
    return notes


def run_load(target, test, duration, run, args, lists, bin_dir):
    """One load run; returns (requests, bytes, seconds, p50_ms, p99_ms, errors)."""
    raw = run / "raw" / f"{target.name}.{test}.{time.time_ns()}"
    if target.proto == "h1":
        out = subprocess.run(["wrk", f"-t{args.wrk_threads}", f"-c{args.conns}", f"-d{duration}s", "--timeout", "10s",
                              "-s", str(ROOT / "benches" / "wrk-paths.lua"), target.url, "--",
                              str(run / "lists" / f"{test}.txt")],
                             capture_output=True, text=True, timeout=duration + 60).stdout
        raw.write_text(out)
        line = next((l for l in out.splitlines() if l.startswith("JSON ")), None)
        if not line:
            return 0, 0, duration, 0, 0, 1
        j = json.loads(line[5:])
        errors = j["err_connect"] + j["err_read"] + j["err_write"] + j["err_status"] + j["err_timeout"]
        return j["requests"], j["bytes"], j["duration_us"] / 1e6, j["p50_us"] / 1e3, j["p99_us"] / 1e3, errors
    if target.proto == "h2":
        uris = run / "lists" / f"{target.name}.{test}.uris"
        if not uris.exists():
            rng = random.Random(zlib.crc32((target.name + test).encode()))
            uris.write_text("".join(target.url + rng.choice(lists[test]) + "\n" for _ in range(4000)))
        reqlog = raw.with_suffix(".reqlog")
        out = subprocess.run(["h2load", f"-t{args.h2_threads}", f"-c{args.conns}", f"-m{args.streams}", "-D",
                              str(duration), "-i", str(uris), f"--log-file={reqlog}"],
                             capture_output=True, text=True, timeout=duration + 60).stdout
        raw.write_text(out)
        m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        r = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                      r"(\d+) timeout", out)
        t = re.search(r"traffic: [\d.]+\w+ \((\d+)\) total", out)
        if not (m and r and t):
            return 0, 0, duration, 0, 0, 1
        ok, rps = int(r.group(1)), float(m.group(1))
        latencies = []
        if reqlog.exists():
            for line in reqlog.read_text().splitlines():
                fields = line.split("\t")
                if len(fields) >= 3:
                    latencies.append(int(fields[2]) / 1e3)
            reqlog.unlink()
        latencies.sort()
        pct = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0
        errors = int(r.group(2)) + int(r.group(3)) + int(r.group(4))
        return ok, int(t.group(1)), (ok / rps if rps else duration), pct(0.5), pct(0.99), errors
    # h3: the edge's own load generator
    rng = random.Random(zlib.crc32((target.name + test).encode()))
    urls = [target.url + rng.choice(lists[test]) for _ in range(400)]
    out = subprocess.run([str(bin_dir / "h3load"), "--ca", str(run / "tls" / "ca.pem"), "-c", str(args.h3_conns),
                          "-m", str(args.streams), "-D", str(duration)] + urls,
                         capture_output=True, text=True, timeout=duration + 60)
    raw.write_text(out.stdout + out.stderr)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return 0, 0, duration, 0, 0, 1
    j = json.loads(lines[-1])
    return (j["requests"], int(j["gbit_per_s"] * j["seconds"] * 1e9 / 8), j["seconds"], j["ttfb_p50_ms"],
            j["ttfb_p99_ms"], j["errors"])


def measure(target, test, rep, run, args, lists, servers, bin_dir):
    duration = args.d_big if test == "1m" else args.d_small
    pgid = servers.pgid(target.server)
    profiler = None
    if args.perf and target.server == "edge":
        # A call-graph profile of the edge during the load (perf's own cost lands in the edge's CPU figures).
        profile = run / "perf" / f"{target.name}.{test}.r{rep}.data"
        profile.parent.mkdir(exist_ok=True)
        pids = ",".join(str(p) for p in group_pids(pgid))
        profiler = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", pids,
                                     "-o", str(profile), "--", "sleep", str(duration)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    o0, s0, c0, w0 = origin_requests(run), group_cpu_ticks(pgid), children_cpu_s(), time.time()
    x0 = group_context_switches(pgid)
    requests, nbytes, seconds, p50, p99, errors = run_load(target, test, duration, run, args, lists, bin_dir)
    wall = time.time() - w0
    switches = group_context_switches(pgid) - x0
    if profiler:
        profiler.wait(timeout=120)
        log(f"  profile: perf report -i {profile} --no-children --percent-limit 0.5")
    srv = (group_cpu_ticks(pgid) - s0) / HZ
    sample = {
        "type": "hit", "target": target.name, "server": target.server, "proto": target.proto, "test": test,
        "rep": rep, "requests": requests, "bytes": nbytes, "seconds": seconds,
        "rps": requests / seconds if seconds else 0, "gbps": nbytes * 8 / seconds / 1e9 if seconds else 0,
        "p50_ms": p50, "p99_ms": p99, "errors": errors, "origin_requests": origin_requests(run) - o0,
        "server_cpu_s": srv, "server_cpu_pct": srv / wall * 100, "loadgen_cpu_s": children_cpu_s() - c0,
        "rps_per_core": requests / srv if srv > 0 else None,
        "cpu_s_per_gb": srv / (nbytes / 1e9) if nbytes else None,
        "context_switches_per_request": switches / requests if requests else None,
    }
    log(f"  {target.name:11} {test:8} r{rep}: {sample['rps']:8.0f} req/s {sample['gbps']:6.2f} Gb/s "
        f"p99 {p99:6.1f} ms  server CPU {sample['server_cpu_pct']:4.0f}%  "
        f"{(sample['rps_per_core'] or 0):8.0f} req/s per core  {(sample['context_switches_per_request'] or 0):5.2f} cs/req  "
        f"err {errors}  origin {sample['origin_requests']}")
    return sample


def herd(target, rep, run, args, origin_ttfb_ms):
    """HERD_N clients at once on one cold 4 MiB object; origin fetches counted from the origin's log."""
    name = f"h{os.getpid()}-{target.name}-r{rep}-{time.time_ns()}"
    flag = [] if target.proto == "h2" else ["--h1"]

    def ms(v):
        return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000

    def crowd():
        """(ok, ttfb mean ms, ttfb max ms, total ms) of HERD_N clients at once on the object."""
        out = subprocess.run(["h2load"] + flag + ["-t1", f"-c{args.herd_n}", "-m1", f"-n{args.herd_n}",
                                                   f"{target.url}/herd/{name}.ts"],
                             capture_output=True, text=True, timeout=120).stdout
        r = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
        t = re.search(r"time to 1st byte:\s+(\S+)\s+(\S+)\s+(\S+)", out)
        fin = re.search(r"finished in (\S+),", out)
        return (int(r.group(1)) if r else 0, ms(t.group(3)) if t else None, ms(t.group(2)) if t else None,
                ms(fin.group(1)) if fin else None)

    ok, mean, worst, total = crowd()
    time.sleep(0.7)  # late origin fetches, if any, reach the log
    fetches = (run / "origin" / "access.log").read_text().count(f"/herd/{name}.ts ")
    # The same crowd on the object now cached: the first-byte time the load itself costs on this machine, which
    # the cold herd cannot beat; the difference is what waiting for the origin and coalescing cost.
    _, hot_mean, _, _ = crowd()
    sample = {
        "type": "herd", "target": target.name, "server": target.server, "proto": target.proto, "rep": rep,
        "clients": args.herd_n, "ok": ok, "origin_fetches": fetches, "ttfb_mean_ms": mean, "ttfb_max_ms": worst,
        "total_ms": total, "origin_ttfb_ms": origin_ttfb_ms, "hot_ttfb_mean_ms": hot_mean,
    }
    log(f"  {target.name:11} herd r{rep}: {fetches} origin fetch(es), {ok}/{args.herd_n} ok, first byte "
        f"mean {mean} ms max {worst} ms; cached: mean {hot_mean} ms (origin alone {origin_ttfb_ms:.1f} ms)")
    return sample


def origin_ttfb_ms():
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_starttransfer}",
                          f"http://127.0.0.1:{PORTS['origin']}/herd/probe-{time.time_ns()}.ts"],
                         capture_output=True, text=True).stdout
    return float(out or 0) * 1000


def raw_ceiling(data, seconds=2.0, how="sendfile"):
    """Raw loopback TCP, one stream, a 1 MiB file sent in a loop to one receiver, by sendfile from the page
    cache or by write from memory (what a server sending from a memory cache does). Returns (Gb/s, the
    sender's CPU seconds per GB): the kernel's floor under a 1 MiB hit over HTTP/1.1."""
    path = data / "seg" / "1m" / "s0000.ts"
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", PORTS["raw"]))
    server.listen(1)
    stop = time.time() + seconds
    sender_cpu = []

    def send():
        conn, _ = server.accept()
        cpu0 = time.thread_time()
        with open(path, "rb") as f, conn:
            size = os.fstat(f.fileno()).st_size
            body = f.read()
            while time.time() < stop:
                if how == "write":
                    conn.sendall(body)
                    continue
                offset = 0
                while offset < size:
                    offset += os.sendfile(conn.fileno(), f.fileno(), offset, size - offset)
            sender_cpu.append(time.thread_time() - cpu0)

    sender = threading.Thread(target=send)
    sender.start()
    client = socket.create_connection(("127.0.0.1", PORTS["raw"]))
    buf = bytearray(4 << 20)
    total, t0 = 0, time.time()
    while True:
        n = client.recv_into(buf)
        if not n:
            break
        total += n
    elapsed = time.time() - t0
    client.close()
    sender.join()
    server.close()
    return total * 8 / elapsed / 1e9, sender_cpu[0] / (total / 1e9)


# ---------------------------------------------------------------- report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(samples):
    rows = {}
    for s in samples:
        if s["type"] == "hit":
            rows.setdefault((s["test"], s["proto"], s["target"]), []).append(s)
    summary = []
    def order(item):
        (test, proto, target), _ = item
        return (TESTS.index(test), ["h1", "h2", "h3"].index(proto), not target.startswith("edge"), target)

    for (test, proto, target), group in sorted(rows.items(), key=order):
        rps = [s["rps"] for s in group]
        summary.append({
            "test": test, "proto": proto, "target": target, "server": group[0]["server"], "reps": len(group),
            "rps": med(rps), "rps_min": min(rps), "rps_max": max(rps),
            "gbps": med([s["gbps"] for s in group]), "p99_ms": med([s["p99_ms"] for s in group]),
            "rps_per_core": med([s["rps_per_core"] for s in group]),
            "cpu_s_per_gb": med([s["cpu_s_per_gb"] for s in group]),
            "errors": sum(s["errors"] for s in group), "origin_requests": sum(s["origin_requests"] for s in group),
        })
    # Paired per-repetition ratios of the edge against every peer, same test; the edge's h3 against its h2.
    by_rep = {(s["test"], s["target"], s["rep"]): s for s in samples if s["type"] == "hit"}
    for row in summary:
        if row["server"] != "edge":
            continue
        ratios = {}
        for other in summary:
            if other["test"] != row["test"] or other["target"] == row["target"]:
                continue
            same_proto = other["proto"] == row["proto"]
            own_h2 = row["proto"] == "h3" and other["target"] == "edge-h2"
            if not (same_proto or own_h2):
                continue
            pairs = []
            for rep in range(1, 100):
                a, b = by_rep.get((row["test"], row["target"], rep)), by_rep.get((row["test"], other["target"], rep))
                if not (a and b):
                    continue
                if a["rps_per_core"] and b["rps_per_core"]:
                    pairs.append((a["rps"] / b["rps"] if b["rps"] else None, a["rps_per_core"] / b["rps_per_core"]))
            if pairs:
                per_core = [p[1] for p in pairs]
                ratios[other["target"]] = {"rps": med([p[0] for p in pairs]), "per_core": med(per_core),
                                           "per_core_min": min(per_core), "per_core_max": max(per_core)}
        row["vs"] = ratios
    return summary


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def spread(ratio):
    """A paired ratio per server core: its median, and its range over the repetitions when there are several."""
    if not ratio:
        return ""
    text = f"{ratio['per_core']:.2f}x"
    if ratio["per_core_min"] != ratio["per_core_max"]:
        text += f" [{ratio['per_core_min']:.2f}-{ratio['per_core_max']:.2f}]"
    return text


def print_report(summary, herds, memory, ceiling, meta):
    print()
    print(f"bench: {meta['mode']} mode, {meta['reps']} rep(s), {meta['d_big']} s (1 MiB) / {meta['d_small']} s tests, "
          f"{meta['conns']} connections; {meta['ncpu']} CPUs; medians [min-max] over repetitions")
    print(f"{'test':8} {'proto':5} {'target':11} {'req/s':>24} {'Gb/s':>6} {'p99 ms':>7} {'req/s/core':>10} "
          f"{'CPU s/GB':>8}  edge ÷ target (req/s per core, median [range] of paired repetitions)")
    for row in summary:
        rng = f"{fmt(row['rps'])} [{fmt(row['rps_min'])}-{fmt(row['rps_max'])}]"
        vs = ""
        if row["server"] != "edge":
            edge = next((r for r in summary if r["server"] == "edge" and r["test"] == row["test"]
                         and r["proto"] == row["proto"]), None)
            ratio = edge and edge.get("vs", {}).get(row["target"])
            vs = spread(ratio)
        elif row["proto"] == "h3":
            vs = "h3/h2 " + spread(row.get("vs", {}).get("edge-h2"))
        flags = (" err" if row["errors"] else "") + (" miss" if row["origin_requests"] and row["test"] != "manifest" else "")
        print(f"{row['test']:8} {row['proto']:5} {row['target']:11} {rng:>24} {fmt(row['gbps'], 2):>6} "
              f"{fmt(row['p99_ms'], 1):>7} {fmt(row['rps_per_core']):>10} {fmt(row['cpu_s_per_gb'], 3):>8}  {vs}{flags}")
    if herds:
        print()
        print("herd: 200 clients on one cold 4 MiB object (origin sends it at the configured rate)")
        groups = {}
        for h in herds:
            groups.setdefault(h["target"], []).append(h)
        for target, hs in groups.items():
            print(f"  {target:11} origin fetches {med([h['origin_fetches'] for h in hs])}, ok {med([h['ok'] for h in hs])}, "
                  f"first byte mean {fmt(med([h['ttfb_mean_ms'] for h in hs]), 1)} ms max "
                  f"{fmt(med([h['ttfb_max_ms'] for h in hs]), 1)} ms; all done {fmt(med([h['total_ms'] for h in hs]))} ms; "
                  f"the same crowd once cached: first byte mean {fmt(med([h['hot_ttfb_mean_ms'] for h in hs]), 1)} ms; "
                  f"origin alone {fmt(med([h['origin_ttfb_ms'] for h in hs]), 1)} ms")
    print()
    print("RSS after the runs (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    if ceiling:
        print(f"raw loopback TCP ceiling, 1 stream: {ceiling:.1f} Gb/s")
    floor = meta.get("raw_loopback")
    if floor:
        print(f"the kernel's floor, one raw stream of 1 MiB sends (sender CPU s/GB): write from memory "
              f"{floor['write_cpu_s_per_gb']:.3f} ({floor['write_gbps']:.1f} Gb/s), sendfile from the page cache "
              f"{floor['sendfile_cpu_s_per_gb']:.3f} ({floor['sendfile_gbps']:.1f} Gb/s)")


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, short tests (under 3 minutes)")
    parser.add_argument("--bin-dir", type=Path, required=True, help="folder with the release edge and h3load")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/video-cdn-bench"))
    parser.add_argument("--out", type=Path, help="JSON results (default RUN_DIR/result.json)")
    parser.add_argument("--peers", default="nginx,varnish,ats,caddy",
                        help="peers to run, comma-separated (caddy: the HTTP/3 peer)")
    parser.add_argument("--tests", default=",".join(TESTS))
    parser.add_argument("--reps", type=int)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--h3-conns", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--h2-threads", type=int, default=1)
    parser.add_argument("--herd-n", type=int, default=200)
    parser.add_argument("--herd-rate", default="8m", help="origin's rate for the herd object (nginx limit_rate)")
    parser.add_argument("--no-herd", action="store_true")
    parser.add_argument("--no-h3", action="store_true")
    parser.add_argument("--base-bin", type=Path,
                        help="A/B: a folder with another build of the edge, run beside it as target 'base'")
    parser.add_argument("--perf", action="store_true",
                        help="record a perf call-graph profile of the edge during each of its runs (RUN_DIR/perf)")
    args = parser.parse_args()
    args.peers = [p for p in args.peers.split(",") if p]
    tests = [t for t in args.tests.split(",") if t]
    quick = args.quick
    args.reps = args.reps or (1 if quick else 3)
    args.d_big, args.d_small = (4, 2) if quick else (6, 3)
    counts = {"1m": 100 if quick else 200, "256k": 200, "manifest": 20}

    for tool in ["nginx", "wrk", "h2load", "curl"] + (["varnishd", "hitch"] if "varnish" in args.peers else []) + (
            ["traffic_server"] if "ats" in args.peers else []) + (["caddy"] if "caddy" in args.peers else []):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"bench: missing {tool} (scripts/bench.sh --install-peers installs the peers)")
    for name, port in PORTS.items():
        if port_busy(port):
            raise SystemExit(f"bench: port {port} ({name}) is in use")

    run = args.run_dir
    run.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run / "raw", ignore_errors=True)
    (run / "raw").mkdir()
    (run / "lists").mkdir(exist_ok=True)
    for f in (run / "lists").iterdir():
        f.unlink()
    data = run / "origin-data" / ("quick" if quick else "full")
    make_content(data, counts)
    lists = {t: paths_of(data, t) for t in TESTS}
    for t in TESTS:
        (run / "lists" / f"{t}.txt").write_text("\n".join(lists[t]) + "\n")
    subprocess.run([str(args.bin_dir / "edge"), "cert", "--out", str(run / "tls"), "--force"], check=True,
                   capture_output=True)
    tls = run / "tls"
    (tls / "combined.pem").write_bytes((tls / "cert.pem").read_bytes() + (tls / "key.pem").read_bytes())
    for f in ("key.pem", "combined.pem"):
        os.chmod(tls / f, 0o600)
    root_user = os.getuid() == 0
    values = {
        "RUN": run, "DATA": data, "HERD_RATE": args.herd_rate, "ORIGIN_PORT": PORTS["origin"],
        "NGX_H1_PORT": PORTS["nginx_h1"], "NGX_H2_PORT": PORTS["nginx_h2"],
        "VARNISH_PROXY_PORT": PORTS["varnish_proxy"], "HITCH_PORT": PORTS["hitch"],
        "ATS_H1_PORT": PORTS["ats_h1"], "ATS_H2_PORT": PORTS["ats_h2"],
        "NGX_USER": "user root;" if root_user else "",
        # hitch will not run its workers as root; it reads the certificate before dropping privileges.
        "HITCH_USER": 'user = "nobody"' if root_user else "",
    }

    servers = Servers()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    samples, herds, warm_notes = [], [], {}
    try:
        ceiling_start, _ = raw_ceiling(data)
        log(f"raw loopback TCP ceiling: {ceiling_start:.1f} Gb/s")
        targets = start_everything(args, run, servers, values, args.bin_dir)
        log("targets: " + " ".join(t.name for t in targets))
        for t in targets:
            warm_notes[t.name] = warm(t, run, data, lists)
            if warm_notes[t.name]:
                log(f"  warm {t.name}: " + "; ".join(warm_notes[t.name]))
        for rep in range(1, args.reps + 1):
            order = targets if rep % 2 else list(reversed(targets))
            for test in tests:
                log(f"rep {rep}/{args.reps} test {test}")
                for t in order:
                    samples.append(measure(t, test, rep, run, args, lists, servers, args.bin_dir))
            if not args.no_herd:
                log(f"rep {rep}/{args.reps} herd")
                base = origin_ttfb_ms()
                for t in order:
                    if t.proto in ("h1", "h2"):
                        herds.append(herd(t, rep, run, args, base))
        memory = {name: group_rss_mib(servers.pgid(name)) for name in servers.groups if name != "origin"}
    finally:
        servers.stop_all()
    ceiling_end, sendfile_cpu = raw_ceiling(data)
    write_gbps, write_cpu = raw_ceiling(data, how="write")
    floor = {"sendfile_gbps": ceiling_end, "sendfile_cpu_s_per_gb": sendfile_cpu,
             "write_gbps": write_gbps, "write_cpu_s_per_gb": write_cpu}
    summary = summarise(samples)
    meta = {"mode": "quick" if quick else "full", "reps": args.reps, "d_big": args.d_big, "d_small": args.d_small,
            "conns": args.conns, "streams": args.streams, "ncpu": os.cpu_count(), "seconds": time.time() - started,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "loadavg": os.getloadavg(), "warm": warm_notes,
            "raw_loopback_gbps": [ceiling_start, ceiling_end], "raw_loopback": floor}
    print_report(summary, herds, memory, med([ceiling_start, ceiling_end]), meta)
    out = args.out or run / "result.json"
    out.write_text(json.dumps({"meta": meta, "summary": summary, "herd": herds, "memory_mib": memory,
                               "samples": samples}, indent=1))
    print(f"JSON: {out}  (raw tool outputs in {run / 'raw'}); {time.time() - started:.0f} s in all")


if __name__ == "__main__":
    main()
