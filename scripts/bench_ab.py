#!/usr/bin/python3
"""A/B of two metrocell binaries in one run (docs/benchmarks.md, "Comparing two
builds"): one scenario of scripts/bench.py, both cells and the scenario's nginx
peer started side by side and measured in alternating order (after BENCH_WARMUP s
of warm-up each) in runs of SECONDS s; prints req/s per server CPU-second per run,
and the
median ratios new/base, base/nginx and new/nginx. Quicker and steadier than two
separate `make bench` runs for a change of a few per cent, since drift and other
jobs on the machine hit all three servers alike.

usage: scripts/bench_ab.py SCENARIO BASE_BIN NEW_BIN [ROUNDS [SECONDS]]
       (SCENARIO: proxy or kv_get; defaults 5 rounds of 4 s)"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    scen, base_bin, new_bin = sys.argv[1], sys.argv[2], sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    secs = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    args = bench.argparse.Namespace(quick=False, only=None, perf=False, out=None, list=False)
    s = bench.Settings(args)
    s.out_dir = os.path.join(bench.REPO, "build", "bench-ab")
    os.makedirs(s.out_dir, exist_ok=True)
    procs = bench.Procs(s)
    ctx = bench.Ctx(s, procs)
    matches = [x for x in bench.scenarios() if x.name == scen and "nginx" in x.peers]
    if not matches:
        raise SystemExit("bench_ab: no scenario %r with an nginx peer" % scen)
    sc = matches[0]
    try:
        if sc.backend:
            ctx.backend = sc.backend(ctx, "%s-backend" % sc.name)
        ctx.region = sc.region(ctx, "%s-region" % sc.name) if sc.region else None
        servers = {}
        for label, binary in (("base", base_bin), ("new", new_bin)):
            s.bin = os.path.abspath(binary)
            servers[label] = (sc.metrocell, sc.metrocell.start(ctx, "ab-" + label))
        side = sc.peers["nginx"]
        servers["nginx"] = (side, side.start(ctx, "ab-nginx"))
        for side, srv in servers.values():
            side.drive(ctx, srv, s.warmup, "warm", False)
        res = {k: [] for k in servers}
        for i in range(rounds):
            order = list(servers) if i % 2 == 0 else list(reversed(list(servers)))
            for k in order:
                side, srv = servers[k]
                r = bench.measure(ctx, side, srv, k, secs, i)
                res[k].append(r["rps_per_cpu"])
                print("%-6s %7.1fk req/s  %7.1fk req/CPU-s  p99 %6.2f ms  other %.2f CPU-s" %
                      (k, r["rps"] / 1e3, r["rps_per_cpu"] / 1e3, r["p99_ms"], r["other_cpu_s"]),
                      flush=True)
        med = {k: statistics.median(v) for k, v in res.items()}
        print("median req/CPU-s: " + ", ".join("%s %.1fk" % (k, v / 1e3) for k, v in med.items()))
        print("new/base %.3f  base/nginx %.3f  new/nginx %.3f" %
              (med["new"] / med["base"], med["base"] / med["nginx"], med["new"] / med["nginx"]))
    finally:
        procs.stop_all()


main()
