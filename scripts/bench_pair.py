#!/usr/bin/python3
"""Concurrent A/B of two proxies (docs/benchmarks.md, "Concurrent A/B"): A and B run
at the same time, both pinned to the server core (BENCH_SERVER_CPU, 1), each driven by
its own `wrk -t1 -cCONNS` on the load core (BENCH_LOAD_CPU, 0) with one shared
backend (`metrocell sample-worker --body-bytes 100`, the one of A, or of B when A is
nginx) there too. Per round it prints the server CPU time per request of each (utime
+ stime from /proc, all processes of the server) and A/B; at the end the median of
the per-round ratios. Whatever else the machine does hits both servers in the same
seconds, so the ratio is steady (within 1-3 % per round) where sequential runs of
one server after the other move by 10 %. Neither server saturates its core here (the
load core is the bottleneck with two wrk), so the absolute figures are not those of
`make bench`; compare ratios.

usage: scripts/bench_pair.py A B [ROUNDS [SECONDS [CONNS [PATH]]]]
       A, B: a metrocell binary, or "nginx" (proxy_pass as in scripts/bench.py)
       defaults: 10 rounds of 3 s, 32 connections each, path "/" (the proxy route);
       PATH /v1/kv/bench-100 measures KV GETs of a 100 B value (PUT first)."""
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "build", "bench-pair")
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "1")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "0")

NGINX_CONF = """daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  upstream backend {{
    server 127.0.0.1:{backend};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def port():
    """A free port below the kernel's ephemeral range (no outgoing connection
    takes it between this check and the server's bind)."""
    for _ in range(200):
        p = random.randint(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            pass
        finally:
            s.close()
    raise SystemExit("bench_pair: no free port")


def ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wait_port(p, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bench_pair: nothing listens on port %d" % p)


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    bins = {"A": sys.argv[1], "B": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    secs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    conns = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    path = sys.argv[6] if len(sys.argv) > 6 else "/"
    os.makedirs(OUT, exist_ok=True)
    procs = []

    def start(argv, cpu, log):
        p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdin=subprocess.DEVNULL,
                             stdout=open(os.path.join(OUT, log), "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        worker = next(b for b in bins.values() if b != "nginx")
        bp = port()
        start([os.path.abspath(worker), "sample-worker", "--listen", "127.0.0.1:%d" % bp,
               "--body-bytes", "100"], LOAD_CPU, "backend.log")
        wait_port(bp)
        servers = {}
        for name, b in bins.items():
            sp = port()
            d = os.path.join(OUT, name)
            subprocess.run(["rm", "-rf", d])
            os.makedirs(os.path.join(d, "tmp"))
            if b == "nginx":
                with open(os.path.join(d, "nginx.conf"), "w") as f:
                    f.write(NGINX_CONF.format(d=d, backend=bp, port=sp))
                p = start(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")], SERVER_CPU,
                          name + ".log")
            else:
                conf = {"cell": "bench",
                        "listen": {"http": "127.0.0.1:%d" % sp, "admin": "127.0.0.1:%d" % port()},
                        "data_dir": os.path.join(d, "data"),
                        "region": {"repl": "127.0.0.1:%d" % port()}, "log": {"level": "warn"},
                        "pools": {"backend": {"workers": ["127.0.0.1:%d" % bp]}},
                        "routes": [{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"},
                                   {"name": "proxy", "prefix": "/", "kind": "proxy",
                                    "pool": "backend"}]}
                with open(os.path.join(d, "cell.json"), "w") as f:
                    json.dump(conf, f)
                p = start([os.path.abspath(b), "cell", "-c", os.path.join(d, "cell.json")],
                          SERVER_CPU, name + ".log")
            wait_port(sp)
            servers[name] = (p, sp)
            if path != "/" and b != "nginx":
                subprocess.run(["curl", "-sf", "-o", "/dev/null", "-X", "PUT", "--data-binary",
                                "x" * 100, "http://127.0.0.1:%d%s" % (sp, path)], check=True)

        def pids(name):
            p = servers[name][0]
            return [p.pid] + children(p.pid)

        def wrk(name, s):
            return subprocess.Popen(["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c%d" % conns,
                                     "-d%ds" % s, "--latency",
                                     "http://127.0.0.1:%d%s" % (servers[name][1], path)],
                                    stdout=subprocess.PIPE, text=True)

        for name in servers:  # warm-up
            wrk(name, 1).communicate()
        hz = os.sysconf("SC_CLK_TCK")
        ratios, us = [], {"A": [], "B": []}
        for r in range(rounds):
            ps = {n: pids(n) for n in servers}
            t0 = {n: sum(ticks(x) for x in ps[n]) for n in servers}
            ws = {n: wrk(n, secs) for n in servers}
            outs = {n: ws[n].communicate()[0] for n in servers}
            t1 = {n: sum(ticks(x) for x in ps[n]) for n in servers}
            line = "round %d:" % r
            cur = {}
            for n in servers:
                reqs = int(re.search(r"(\d+) requests in", outs[n]).group(1))
                m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", outs[n])
                p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
                bad = re.search(r"Non-2xx or 3xx responses: (\d+)", outs[n])
                cur[n] = (t1[n] - t0[n]) / hz * 1e6 / reqs
                us[n].append(cur[n])
                line += "  %s %.2f us/req (%d req, p99 %.2f ms%s)" % (
                    n, cur[n], reqs, p99, ", %s non-2xx" % bad.group(1) if bad else "")
            ratios.append(cur["A"] / cur["B"])
            print(line + "  A/B %.3f" % ratios[-1], flush=True)
        print("median CPU us/req: A %.2f, B %.2f; A/B per round: median %.3f (min %.3f, max %.3f)"
              " = B's req/s per CPU-s relative to A's" % (
                  statistics.median(us["A"]), statistics.median(us["B"]),
                  statistics.median(ratios), min(ratios), max(ratios)))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
