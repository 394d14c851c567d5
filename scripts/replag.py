#!/usr/bin/python3
"""Replication lag under a paced write load (issue 6, item 6).

Starts a region and one cell (fresh data directories, free loopback ports), drives
PUT /v1/kv/<distinct key> at a fixed rate through HTTP (an open-loop sender: request
i is due at start + i / rate, whatever the answers do, over several pipelined
keep-alive connections), then reads the replication lag the cell measured:
commit-to-acknowledgement of every write (/v1/status lag_p50_ms / lag_p99_ms, the
metrocell_replication_lag_seconds histogram), the region's commit-to-commit lag, and
the per-second p99 the cell reported in its telemetry summaries (/v1/fleet, polled
during the run).

    /usr/bin/python3 scripts/replag.py                      # 10,000/s for 10 s, fsync and none
    /usr/bin/python3 scripts/replag.py --rate 5000 --seconds 5 --durability none

Needs the release binary (`make`). Prints one line per run and writes
build/replag/results.json. Every process it starts is stopped by PID. Standard
library only.
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



class Loader:
    """Open-loop paced PUT load: request i is due at start + i / rate whatever the
    answers do (no coordinated omission), spread round-robin over keep-alive
    connections and pipelined on each. Answers are parsed (status line,
    Content-Length) and timed from their request's due time."""

    def __init__(self, addr, rate, seconds, conns, value_bytes):
        self.addr = addr
        self.rate = rate
        self.seconds = seconds
        self.conns = conns
        self.body = b"v" * value_bytes
        self.lat_ms = []
        self.status = {}
        self.errors = 0
        self.sent = 0
        self.late_ms = 0.0  # worst lag of the sender behind its schedule
        self.in_window = 0  # answers received before the sending window ended
        self.start = self.end = self.last_answer = 0.0

    def run(self):
        import selectors
        host, port = self.addr.rsplit(":", 1)
        sel = selectors.DefaultSelector()
        conns = []
        for i in range(self.conns):
            s = socket.create_connection((host, int(port)))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            c = {"s": s, "out": bytearray(), "in": bytearray(), "due": [], "i": i}
            conns.append(c)
            sel.register(s, selectors.EVENT_READ, c)
        head = ("PUT /v1/kv/replag:%%d HTTP/1.1\r\nHost: %s\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                % (self.addr, len(self.body)))
        start = time.monotonic()
        end = start + self.seconds
        self.start, self.end = start, end
        rr = 0
        while True:
            now = time.monotonic()
            if now < end:
                due_n = int((now - start) * self.rate)
                if due_n > self.sent:
                    self.late_ms = max(self.late_ms,
                                       (now - (start + self.sent / self.rate)) * 1000.0)
                while self.sent < due_n:
                    c = conns[rr % len(conns)]
                    rr += 1
                    c["out"] += (head % self.sent).encode() + self.body
                    c["due"].append(start + self.sent / self.rate)
                    self.sent += 1
            elif not any(c["due"] for c in conns) or now > end + 30:
                break
            for c in conns:
                if c["out"]:
                    try:
                        n = c["s"].send(c["out"])
                        del c["out"][:n]
                    except BlockingIOError:
                        pass
            nxt = start + (self.sent + 1) / self.rate
            timeout = max(0.0, min(nxt - time.monotonic(), 0.001)) if now < end else 0.05
            for key, _ in sel.select(timeout):
                c = key.data
                try:
                    data = c["s"].recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    self.errors += len(c["due"])
                    c["due"].clear()
                    sel.unregister(c["s"])
                    continue
                c["in"] += data
                self._parse(c, time.monotonic())
        for c in conns:
            c["s"].close()

    def _parse(self, c, now):
        buf = c["in"]
        while True:
            h = buf.find(b"\r\n\r\n")
            if h < 0:
                return
            head = bytes(buf[:h]).decode("latin-1")
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            n = int(m.group(1)) if m else 0
            if len(buf) < h + 4 + n:
                return
            st = int(head[9:12])
            self.status[st] = self.status.get(st, 0) + 1
            due = c["due"].pop(0)
            self.lat_ms.append((now - due) * 1000.0)
            self.last_answer = now
            if now <= self.end:
                self.in_window += 1
            del buf[:h + 4 + n]


def quantile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


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


def run_one(args, durability, outdir, seconds=None):
    seconds = seconds or args.seconds
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
        conns = args.connections

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
        ld = Loader(cell_http, args.rate, seconds, conns, args.value_bytes)
        ld.run()
        wall = time.time() - t0
        cpu1 = {"cell": cpu_seconds(cell.pid), "region": cpu_seconds(region.pid)}
        requests = sum(ld.status.values())
        non2xx = sum(v for k, v in ld.status.items() if not 200 <= k < 300)
        client = {"p50_ms": quantile(ld.lat_ms, 0.5), "p99_ms": quantile(ld.lat_ms, 0.99)}
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
            "seconds": seconds,
            "sent": ld.sent,
            "answered": requests,
            "non2xx": non2xx,
            "no_answer": ld.errors + (ld.sent - requests - ld.errors),
            # answers per second from the start to the last answer: below the target
            # when the cell could not keep up (its answers queued)
            "achieved_rate": round(requests / max(ld.last_answer - ld.start, seconds), 1),
            "answered_in_window": ld.in_window,
            "last_answer_after_s": round(ld.last_answer - ld.start, 2),
            "sender_late_ms_max": round(ld.late_ms, 2),
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
    ap.add_argument("--connections", type=int, default=64,
                    help="keep-alive connections (each holds one request in the cell at a time)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per durability mode")
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--settle-s", type=float, default=1.2)
    ap.add_argument("--server-cpus", default="", help="taskset CPU list for region and cell")
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "metrocell"))
    ap.add_argument("--out", default=os.path.join(REPO, "build", "replag"))
    ap.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit("replag: %s not found (run make)" % args.bin)
    os.makedirs(args.out, exist_ok=True)
    modes = ("fsync", "none") if args.durability == "both" else (args.durability,)
    results = []
    for mode in modes * args.repeat:
        r = run_one(args, mode, args.out)
        results.append(r)
        print("%-6s target %d/s: sustained %.0f/s (%d answered, %d in the window, last "
              "after %.1f s, %d non-2xx, %d logged) | lag p50 %.2f p95 %.2f p99 %.2f max %.0f ms"
              " | region p99 %.2f ms | per-second p99 median %s max %s ms | client p50 %.2f "
              "p99 %.1f ms | cpu cell %.1f s region %.1f s | load %.1f"
              % (mode, r["target_rate"], r["achieved_rate"], r["answered"],
                 r["answered_in_window"], r["last_answer_after_s"], r["non2xx"],
                 r["writes_logged"], r["lag_p50_ms"], r["lag_p95_ms"], r["lag_p99_ms"],
                 r["lag_max_ms"], r["region_lag_p99_ms"], r["telemetry_ack_p99_ms_median"],
                 r["telemetry_ack_p99_ms_max"], r["client_p50_ms"], r["client_p99_ms"],
                 r["cell_cpu_s"], r["region_cpu_s"], r["loadavg"]), flush=True)
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("results: %s" % path)


if __name__ == "__main__":
    main()
