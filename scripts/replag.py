#!/usr/bin/python3
"""Replication lag under a paced write load (issue 6, item 6).

Starts a region and one cell (fresh data directories, free loopback ports), drives
PUT /v1/kv/<distinct key> at a paced rate through HTTP with wrk (many keep-alive
connections, each waiting a fixed delay after every answer), then reads the
replication lag the cell measured: commit-to-acknowledgement of every write
(/v1/status lag_p50_ms / lag_p99_ms, the metrocell_replication_lag_seconds
histogram), the region's commit-to-commit lag, and the per-second p99 the cell
reported in its telemetry summaries (/v1/fleet, polled during the run).

    /usr/bin/python3 scripts/replag.py                       # 10,000/s for 10 s, fsync and none
    /usr/bin/python3 scripts/replag.py --rate 5000 --seconds 5 --durability none

Needs wrk (Debian package `wrk`; `scripts/deps.sh --bench` installs it) and the
release binary (`make`). Prints a table and writes build/replag/results.json.
Every process it starts is stopped by PID. Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LUA = r"""
-- PUT of a distinct key per request; each connection waits DELAY ms after every
-- answer (wrk's delay()), which paces the total rate at about
-- connections * 1000 / (DELAY + latency) per second.
local counter = 0
local tid = 0
local body = string.rep("v", VALUE_BYTES)
function setup(thread)
   tid = tid + 1
   thread:set("tid", tid)
end
function init(args)
   wrk.method = "PUT"
   wrk.body = body
   wrk.headers["Content-Type"] = "application/octet-stream"
end
function request()
   counter = counter + 1
   return wrk.format(nil, "/v1/kv/replag:" .. tid .. ":" .. counter)
end
function delay()
   return DELAY
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get_json(addr, path, timeout=10):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=timeout) as r:
        return json.loads(r.read())


def cpu_seconds(pid):
    """utime + stime of a process (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Procs:
    def __init__(self, logdir):
        self.logdir = logdir
        self.started = []

    def start(self, args, name, ready, timeout=20):
        log = open(os.path.join(self.logdir, name + ".log"), "wb")
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.started.append(p)
        deadline = time.time() + timeout
        buf = b""
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            buf += line
            if ready.encode() in line:
                return p
        raise RuntimeError("%s did not start (exit %s); see %s/%s.log" %
                           (name, p.poll(), self.logdir, name))

    def stop_all(self):
        for p in reversed(self.started):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()
        self.started = []


def run_one(args, durability, outdir):
    work = tempfile.mkdtemp(prefix="replag-%s-" % durability, dir=outdir)
    procs = Procs(work)
    region_http = "127.0.0.1:%d" % free_port()
    region_repl = "127.0.0.1:%d" % free_port()
    cell_http = "127.0.0.1:%d" % free_port()
    cell_admin = "127.0.0.1:%d" % free_port()
    region_conf = {"region": "replag", "listen": {"http": region_http, "repl": region_repl},
                   "data_dir": os.path.join(work, "region"), "cells": ["lax"],
                   "log": {"level": "warn"},
                   "state": {"durability": durability, "map_size_mb": 2048}}
    cell_conf = {"cell": "lax", "listen": {"http": cell_http, "admin": cell_admin},
                 "data_dir": os.path.join(work, "lax"),
                 "region": {"repl": region_repl, "http": region_http},
                 "log": {"level": "warn"},
                 "state": {"durability": durability, "map_size_mb": 2048},
                 "limits": {"max_inflight": 100000},
                 "routes": [{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}
    for name, conf in (("region.json", region_conf), ("lax.json", cell_conf)):
        with open(os.path.join(work, name), "w") as f:
            json.dump(conf, f, indent=2)
    pin_srv = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
    pin_load = ["taskset", "-c", args.load_cpus] if args.load_cpus else []
    samples = []
    stop = threading.Event()
    try:
        region = procs.start(pin_srv + [args.bin, "region", "-c", os.path.join(work, "region.json")],
                             "region", "region replag ready")
        cell = procs.start(pin_srv + [args.bin, "cell", "-c", os.path.join(work, "lax.json")],
                           "lax", "cell lax ready")
        # wait for the link (the first summary at the region)
        deadline = time.time() + 20
        while time.time() < deadline:
            cells = get_json(region_http, "/v1/fleet")["cells"]
            if cells and cells[0].get("state") == "up":
                break
            time.sleep(0.2)
        lua = os.path.join(work, "put.lua")
        with open(lua, "w") as f:
            f.write(LUA.replace("VALUE_BYTES", str(args.value_bytes))
                    .replace("DELAY", str(args.delay_ms)))
        conns = args.connections or max(
            1, int(round(args.rate * (args.delay_ms + args.latency_guess_ms) / 1000.0)))

        def poll():
            seen = set()
            while not stop.is_set():
                try:
                    for c in get_json(region_http, "/v1/fleet", timeout=5)["cells"]:
                        if c.get("heard") and c["seq"] not in seen:
                            seen.add(c["seq"])
                            samples.append({"seq": c["seq"], "rps": c["rps"],
                                            "ack_p50_ms": c["replication"]["ack_p50_ms"],
                                            "ack_p99_ms": c["replication"]["ack_p99_ms"],
                                            "oldest_unacked_ms":
                                                c["replication"]["oldest_unacked_ms"],
                                            "lag_entries": c["replication"]["lag_entries"]})
                except OSError:
                    pass
                stop.wait(0.3)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        cpu0 = {"cell": cpu_seconds(cell.pid), "region": cpu_seconds(region.pid)}
        t0 = time.time()
        wrk = subprocess.run(pin_load + ["wrk", "-t%d" % args.threads, "-c%d" % conns,
                                         "-d%ds" % args.seconds, "--latency", "-s", lua,
                                         "http://%s" % cell_http],
                             capture_output=True, text=True, timeout=args.seconds + 60)
        wall = time.time() - t0
        cpu1 = {"cell": cpu_seconds(cell.pid), "region": cpu_seconds(region.pid)}
        out = wrk.stdout
        with open(os.path.join(work, "wrk.txt"), "w") as f:
            f.write(out + wrk.stderr)
        m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
        requests = int(m.group(1)) if m else 0
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        non2xx = int(non2xx.group(1)) if non2xx else 0
        errs = re.search(r"Socket errors: (.*)", out)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        client = {}
        for q in ("50", "99"):
            mq = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % q, out, re.M)
            if mq:
                v = float(mq.group(1))
                client["p%s_ms" % q] = v / 1000 if mq.group(2) == "us" else (
                    v * 1000 if mq.group(2) == "s" else v)
        # every acknowledged write reaches the region: wait for lag 0
        deadline = time.time() + 60
        st = None
        while time.time() < deadline:
            st = get_json(cell_admin, "/v1/status")["replication"]
            if st["lag_entries"] == 0:
                break
            time.sleep(0.2)
        time.sleep(args.settle_s)  # one more summary after the load
        stop.set()
        poller.join(timeout=10)
        rst = get_json(region_http, "/v1/status")
        rcell = [c for c in rst["cells"] if c["cell"] == "lax"][0]
        written = st["last_seq"]
        under_load = [s for s in samples if s["rps"] > 0.5 * args.rate]
        res = {
            "durability": durability,
            "target_rate": args.rate,
            "connections": conns,
            "delay_ms": args.delay_ms,
            "seconds": args.seconds,
            "requests": requests,
            "non2xx": non2xx,
            "socket_errors": errs.group(1).strip() if errs else "",
            "achieved_rate": float(rps.group(1)) if rps else 0.0,
            "writes_logged": written,
            "client_p50_ms": client.get("p50_ms"),
            "client_p99_ms": client.get("p99_ms"),
            "lag_count": st["lag_count"],
            "lag_p50_ms": st["lag_p50_ms"],
            "lag_p95_ms": st["lag_p95_ms"],
            "lag_p99_ms": st["lag_p99_ms"],
            "lag_max_ms": st["lag_max_ms"],
            "region_lag_p50_ms": rcell["lag_p50_ms"],
            "region_lag_p99_ms": rcell["lag_p99_ms"],
            "region_applied": rcell["applied_seq"],
            "telemetry_intervals": len(under_load),
            "telemetry_ack_p99_ms_max": max((s["ack_p99_ms"] for s in under_load), default=None),
            "telemetry_ack_p99_ms_median": sorted(s["ack_p99_ms"] for s in under_load)[
                len(under_load) // 2] if under_load else None,
            "telemetry_oldest_unacked_ms_max": max(
                (s["oldest_unacked_ms"] for s in under_load), default=None),
            "cell_cpu_s": round(cpu1["cell"] - cpu0["cell"], 2),
            "region_cpu_s": round(cpu1["region"] - cpu0["region"], 2),
            "wall_s": round(wall, 2),
            "loadavg": os.getloadavg()[0],
            "samples": samples,
            "workdir": work,
        }
        return res
    finally:
        stop.set()
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=10000, help="target writes per second")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--durability", choices=("fsync", "none", "both"), default="both")
    ap.add_argument("--delay-ms", type=int, default=20,
                    help="each connection's pause after an answer (wrk delay())")
    ap.add_argument("--latency-guess-ms", type=float, default=0.5,
                    help="expected answer time, to size the connection count")
    ap.add_argument("--connections", type=int, default=0,
                    help="override the connection count (default: rate x (delay + latency))")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--settle-s", type=float, default=1.2)
    ap.add_argument("--server-cpus", default="", help="taskset CPU list for region and cell")
    ap.add_argument("--load-cpus", default="", help="taskset CPU list for wrk")
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "metrocell"))
    ap.add_argument("--out", default=os.path.join(REPO, "build", "replag"))
    ap.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("replag: wrk not found (apt-get install wrk, or scripts/deps.sh --bench)")
    if not os.path.exists(args.bin):
        sys.exit("replag: %s not found (run make)" % args.bin)
    os.makedirs(args.out, exist_ok=True)
    modes = ("fsync", "none") if args.durability == "both" else (args.durability,)
    results = []
    for mode in modes:
        r = run_one(args, mode, args.out)
        results.append(r)
        print("%-6s target %6d/s achieved %8.0f/s (%d requests, %d non-2xx, %d logged) "
              "lag p50 %.2f ms p99 %.2f ms max %.2f ms | region p99 %.2f ms | "
              "per-second p99 median %s max %s ms | client p99 %s ms | cpu cell %.1fs region %.1fs"
              % (mode, r["target_rate"], r["achieved_rate"], r["requests"], r["non2xx"],
                 r["writes_logged"], r["lag_p50_ms"], r["lag_p99_ms"], r["lag_max_ms"],
                 r["region_lag_p99_ms"], r["telemetry_ack_p99_ms_median"],
                 r["telemetry_ack_p99_ms_max"], r["client_p99_ms"], r["cell_cpu_s"],
                 r["region_cpu_s"]), flush=True)
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("results: %s" % path)


if __name__ == "__main__":
    main()
