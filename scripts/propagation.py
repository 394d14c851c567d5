#!/usr/bin/python3
"""Fleet config propagation time: a region and three cells (lax, sfo, sea) on
127.0.0.1, then N pushes of a changing document with `metrocell ctl push --wait`,
which reports the time from sending the push to the last cell's applied report
(validation at the region, durable store, the long polls' answers, each cell's
validation, snapshot swap and fsynced last-known-good write, the reports).

usage: scripts/propagation.py [--bin build/metrocell] [--pushes 100] [--json out.json]

Prints p50/p90/p99/max over the pushes. Not part of `make test` (about 30 s)."""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

CELLS = ["lax", "sfo", "sea"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(args, log, ready):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "wb"),
                         stdin=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stdout.readline().decode(errors="replace")
        if ready in line:
            return p
        if not line and p.poll() is not None:
            break
    p.kill()
    sys.exit("%s did not start; see %s" % (args[1], log))


def quantile(xs, q):
    xs = sorted(xs)
    i = max(0, min(len(xs) - 1, int(round(q * len(xs) + 0.5)) - 1))
    return xs[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                  "metrocell"))
    ap.add_argument("--pushes", type=int, default=100)
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mc-propagation-")
    region_http = "127.0.0.1:%d" % free_port()
    region_repl = "127.0.0.1:%d" % free_port()
    worker = "127.0.0.1:%d" % free_port()
    with open(os.path.join(tmp, "region.json"), "w") as f:
        json.dump({"region": "bench", "listen": {"http": region_http, "repl": region_repl},
                   "data_dir": os.path.join(tmp, "region"), "cells": CELLS}, f)
    procs = []
    try:
        procs.append(start([a.bin, "sample-worker", "--listen", worker],
                           os.path.join(tmp, "worker.log"), "listening"))
        procs.append(start([a.bin, "region", "-c", os.path.join(tmp, "region.json")],
                           os.path.join(tmp, "region.log"), "ready"))
        for c in CELLS:
            conf = os.path.join(tmp, c + ".json")
            with open(conf, "w") as f:
                json.dump({"cell": c,
                           "listen": {"http": "127.0.0.1:%d" % free_port(),
                                      "admin": "127.0.0.1:%d" % free_port()},
                           "data_dir": os.path.join(tmp, c),
                           "region": {"repl": region_repl, "http": region_http},
                           "pools": {"app": {"workers": [worker]}},
                           "routes": [{"name": "app", "prefix": "/", "kind": "proxy",
                                       "pool": "app"}]}, f)
            procs.append(start([a.bin, "cell", "-c", conf], os.path.join(tmp, c + ".log"),
                               "ready"))
        doc = os.path.join(tmp, "fleet.json")
        times = []
        for i in range(a.pushes):
            with open(doc, "w") as f:
                json.dump({"pools": {"app": {"workers": [worker]}},
                           "routes": [{"name": "app", "prefix": "/", "kind": "proxy",
                                       "pool": "app"},
                                      {"name": "flags", "prefix": "/flags", "kind": "flags"}],
                           "flags": {"push": i},
                           "cells": {c: {} for c in CELLS}}, f, indent=2)
            r = subprocess.run([a.bin, "ctl", "push", doc, "--region", region_http, "--wait",
                                "--timeout", "10s"], capture_output=True, text=True)
            m = re.search(r"applied by 3 cells .* in ([0-9.]+) ms", r.stdout)
            if r.returncode != 0 or not m:
                sys.exit("push %d failed: %s %s" % (i, r.stdout, r.stderr))
            times.append(float(m.group(1)))
        res = {"pushes": len(times), "cells": len(CELLS),
               "p50_ms": quantile(times, 0.50), "p90_ms": quantile(times, 0.90),
               "p99_ms": quantile(times, 0.99), "max_ms": max(times), "min_ms": min(times),
               "mean_ms": sum(times) / len(times)}
        print("propagation of a push to %d cells over %d pushes: p50 %.1f ms, p90 %.1f ms, "
              "p99 %.1f ms, max %.1f ms (min %.1f, mean %.1f)"
              % (len(CELLS), len(times), res["p50_ms"], res["p90_ms"], res["p99_ms"],
                 res["max_ms"], res["min_ms"], res["mean_ms"]))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(dict(res, samples_ms=times), f, indent=2)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
