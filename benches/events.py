#!/usr/bin/env python3
"""Benchmark (not a test) of the data loop's way in: player events through POST /v1/events into the bus, on the
embedded log and on a Kafka-protocol broker (tansu), with a release `origin`.

For each bus: h2load posts batches of 50 events (HTTP/1.1, 8 connections) for a fixed time; the result is events
accepted per second and per CPU-second of the origin process (read from /proc), the broker's CPU beside it, and
the end-to-end lag to the QoE metrics: while the load runs, a probe batch with a fresh `seek` event is posted
every second and the origin's /metrics is polled until `qoe_events_total{kind="seek"}` counts it; then how long
the backlog takes to drain after the load, and the lag of a quiet pipeline. The load's
batches repeat one body (the same ids), so the QoE consumer counts them as duplicates and still reads every one.
Run through `scripts/bench-events.sh`, which builds the release binary first.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from benchkit import free_port

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {seconds} s")


def batch(n, kind, session):
    events = []
    for i in range(n):
        e = {"id": f"{session[:40]}-{i}", "kind": kind, "session": session, "title": "test-pattern",
             "ts": int(time.time() * 1000), "br": 3000, "bl": 12000, "edge": "127.0.0.1:8443"}
        if kind == "heartbeat":
            e.update(played_ms=10000 + i, position_ms=10000 + i)
        else:
            e.update(position_ms=60000)
        events.append(e)
    return json.dumps({"events": events}).encode()


def qoe_count(metrics_url, kind):
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("qoe_events_total{") and f'kind="{kind}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def probe(api, metrics_url, give_up_s):
    """Posts one fresh seek event and returns the ms until the QoE metrics count it (None past `give_up_s`)."""
    before = qoe_count(metrics_url, "seek")
    sent = time.monotonic()
    req = urllib.request.Request(f"{api}/v1/events", data=batch(1, "seek", str(uuid.uuid4())), method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    while qoe_count(metrics_url, "seek") <= before:
        if time.monotonic() - sent > give_up_s:
            return None
        time.sleep(0.01)
    return (time.monotonic() - sent) * 1000


def probe_lags(api, metrics_url, stop, lags):
    """Every second while the load runs, a probe; one still waiting when the load ends stops there (the drain
    after the load measures the backlog)."""
    while not stop.is_set():
        sent = time.monotonic()
        lag = probe(api, metrics_url, 10)
        lags.append(float("inf") if lag is None else lag)
        stop.wait(max(0.0, 1.0 - (time.monotonic() - sent)))


def run(bus_name, bin_dir, seconds, tansu):
    work = Path(tempfile.mkdtemp(prefix=f"bench-events-{bus_name}-"))
    broker = None
    try:
        bus_toml = ""
        if bus_name == "kafka":
            port = free_port()
            (work / "tansu").mkdir()
            broker = subprocess.Popen(
                [tansu, "broker", "--storage-engine", "sqlite://tansu.db",
                 "--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url", f"tcp://127.0.0.1:{port}"],
                cwd=work / "tansu", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(port)
            bus_toml = f'[bus]\nurl = "kafka://127.0.0.1:{port}"\npartitions = 4\n'
        api_port, admin_port, media_port = free_port(), free_port(), free_port()
        (work / "objects").mkdir()
        config = work / "origin.toml"
        config.write_text(
            f'data_dir = "{work}/data"\n[media]\nlisten = "127.0.0.1:{media_port}"\n'
            f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n[api]\nlisten = "127.0.0.1:{api_port}"\n'
            f'[store]\nurl = "file://{work}/objects"\n[log]\nlevel = "warn"\n{bus_toml}')
        origin = subprocess.Popen([str(bin_dir / "origin"), "serve", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(api_port)
            api, metrics_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{admin_port}/metrics"
            body = work / "batch.json"
            body.write_bytes(batch(50, "heartbeat", str(uuid.uuid4())))
            # Warm up: the first batch creates the consumer's state and the bus's writers.
            urllib.request.urlopen(urllib.request.Request(f"{api}/v1/events", data=body.read_bytes(), method="POST"),
                                   timeout=10).read()
            stop, lags = threading.Event(), []
            prober = threading.Thread(target=probe_lags, args=(api, metrics_url, stop, lags))
            cpu0 = cpu_seconds(origin.pid)
            bcpu0 = cpu_seconds(broker.pid) if broker else 0.0
            prober.start()
            started = time.monotonic()
            out = subprocess.run(
                ["h2load", "--h1", "-c", "8", "-D", str(seconds), "-d", str(body),
                 "-H", "content-type: application/json", f"{api}/v1/events"],
                capture_output=True, text=True, timeout=seconds + 120).stdout
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(origin.pid) - cpu0
            bcpu = (cpu_seconds(broker.pid) - bcpu0) if broker else 0.0
            stop.set()
            prober.join()
            # The backlog: how long after the load a probe takes to be counted; then the lag of a quiet loop.
            drain = probe(api, metrics_url, 300)
            idle = [probe(api, metrics_url, 30) for _ in range(10)]
            idle = sorted(x for x in idle if x is not None)
            ok = 0
            for line in out.splitlines():
                if line.strip().startswith("status codes:"):
                    ok = int(line.split(":")[1].split()[0])
            events = ok * 50
            finite = sorted(x for x in lags if x != float("inf"))
            return {
                "bus": bus_name, "seconds": round(elapsed, 1), "batches_2xx": ok, "events": events,
                "events_per_s": round(events / elapsed), "origin_cpu_s": round(cpu, 1),
                "events_per_origin_cpu_s": round(events / cpu) if cpu else None, "broker_cpu_s": round(bcpu, 1),
                "lag_ms_median": round(statistics.median(finite)) if finite else None,
                "lag_ms_max": round(finite[-1]) if finite else None, "probes": len(lags),
                "probes_lost": len(lags) - len(finite),
                "drain_s": round(drain / 1000, 1) if drain is not None else None,
                "idle_lag_ms_median": round(statistics.median(idle)) if idle else None,
            }
        finally:
            origin.terminate()
            origin.wait(timeout=30)
    finally:
        if broker:
            broker.terminate()
            broker.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions of each bus")
    ap.add_argument("--tansu", default=os.environ.get("TANSU", str(Path.home() / ".cache/tansu-0.6.0/bin/tansu")))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    buses = ["embedded"] + (["kafka"] if Path(args.tansu).exists() else [])
    if "kafka" not in buses:
        log(f"no tansu at {args.tansu}: the embedded bus only")
    results = []
    for rep in range(args.repeat):
        for bus in buses:
            log(f"{bus}, repetition {rep + 1} of {args.repeat}, {args.seconds} s")
            r = run(bus, args.bin_dir, args.seconds, args.tansu)
            log(json.dumps(r))
            results.append(r)
    print(f"\nevents through POST /v1/events, batches of 50, 8 HTTP/1.1 connections, {args.seconds} s per run, "
          f"medians of {args.repeat} (spread min-max)")
    print("lag under load: a probe event a second during the load, until the QoE metrics count it (behind: "
          "over 10 s); drain: a probe just after the load; idle: 10 probes with nothing else")
    print(f"{'bus':10} {'events/s':>18} {'events/origin CPU-s':>22} {'broker CPU-s':>13} {'lag p50 ms':>16} "
          f"{'behind':>7} {'drain s':>14} {'idle lag ms':>16}")
    for bus in buses:
        rs = [r for r in results if r["bus"] == bus]
        def col(key):
            xs = [r[key] for r in rs if r[key] is not None]
            if not xs:
                return "-"
            f = ",.0f" if max(xs) >= 100 else ",.1f"
            return f"{statistics.median(xs):{f}} ({min(xs):{f}}-{max(xs):{f}})"
        print(f"{bus:10} {col('events_per_s'):>18} {col('events_per_origin_cpu_s'):>22} "
              f"{statistics.median([r['broker_cpu_s'] for r in rs]):>13} {col('lag_ms_median'):>16} "
              f"{sum(r['probes_lost'] for r in rs):>7} {col('drain_s'):>14} {col('idle_lag_ms_median'):>16}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
