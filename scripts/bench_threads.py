#!/usr/bin/python3
"""Threads of one cell (docs/benchmarks.md, "Data-plane threads"): the same cell
config with `threads: 1` and `threads: N`, unpinned, driven by `wrk -t2` over 64
connections, in alternating order for ROUNDS rounds; prints req/s and the cell's
CPU-seconds per 1,000 requests for a proxy route (to `metrocell sample-worker`)
and for KV GETs (which threads other than the main one hand over to it), and the
medians. On a machine with few cores wrk and the worker compete with the cell, so
the req/s figures say how much a second loop helps here, not how far it scales.

usage: scripts/bench_threads.py [N [ROUNDS [SECONDS]]]   (defaults 2, 3, 4)"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN") or os.path.join(REPO, "build", "metrocell")
OUT = os.path.join(REPO, "build", "bench-threads")


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(p, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bench_threads: nothing listens on %d" % p)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % seconds, url], capture_output=True,
                         text=True, timeout=seconds + 30).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1]), out
    raise SystemExit("bench_threads: no result from wrk:\n" + out)


def start_cell(threads, worker):
    http, admin = port(), port()
    d = os.path.join(OUT, "cell-%d" % threads)
    shutil.rmtree(d, ignore_errors=True)
    conf = {"cell": "bench", "threads": threads,
            "listen": {"http": "127.0.0.1:%d" % http, "admin": "127.0.0.1:%d" % admin},
            "data_dir": d, "region": {"repl": "127.0.0.1:%d" % port()},
            "log": {"level": "warn"},
            "pools": {"app": {"workers": [worker]}},
            "routes": [{"name": "app", "prefix": "/app/", "kind": "proxy", "pool": "app"},
                       {"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}
    path = os.path.join(OUT, "cell-%d.json" % threads)
    with open(path, "w") as f:
        json.dump(conf, f)
    p = subprocess.Popen([BIN, "cell", "-c", path], stdout=subprocess.DEVNULL,
                         stderr=open(path + ".log", "w"))
    wait_port(http)
    subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "PUT", "--data-binary", "x" * 100,
                    "http://127.0.0.1:%d/v1/kv/bench-100" % http], check=True, timeout=10)
    return p, http


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    secs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    os.makedirs(OUT, exist_ok=True)
    wp = port()
    worker = subprocess.Popen([BIN, "sample-worker", "--listen", "127.0.0.1:%d" % wp,
                               "--body-bytes", "100"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    cells = {}
    try:
        wait_port(wp)
        for t in (1, n):
            cells[t] = start_cell(t, "127.0.0.1:%d" % wp)
        res = {(t, what): [] for t in cells for what in ("proxy", "kv_get")}
        for r in range(rounds):
            order = list(cells) if r % 2 == 0 else list(reversed(list(cells)))
            for t in order:
                p, http = cells[t]
                for what, path in (("proxy", "/app/x"), ("kv_get", "/v1/kv/bench-100")):
                    c0 = cpu_s(p.pid)
                    rps, _ = wrk("http://127.0.0.1:%d%s" % (http, path), secs)
                    c1 = cpu_s(p.pid)
                    per_k = (c1 - c0) / (rps * secs) * 1000
                    res[(t, what)].append((rps, per_k))
                    print("threads=%d %-6s %8.0f req/s  %.4f cell CPU-s per 1000 req" %
                          (t, what, rps, per_k), flush=True)
        print("medians:")
        for what in ("proxy", "kv_get"):
            base = statistics.median(x[0] for x in res[(1, what)])
            for t in cells:
                rps = statistics.median(x[0] for x in res[(t, what)])
                cpu = statistics.median(x[1] for x in res[(t, what)])
                print("  %-6s threads=%d %8.0f req/s (%.2f x threads=1)  %.4f CPU-s/1000" %
                      (what, t, rps, rps / base, cpu))
    finally:
        for p, _ in cells.values():
            p.terminate()
            p.wait(timeout=15)
        worker.terminate()
        worker.wait(timeout=15)


if __name__ == "__main__":
    main()
