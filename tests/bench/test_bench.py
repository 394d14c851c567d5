"""The peer-benchmark harness (scripts/bench.py): its output parsers on recorded
outputs, and one --quick run end to end that must write a valid results.json.
Nothing here asserts on speed: only that every figure was measured and is sane.
Run by `make bench-smoke` (not by `make test`: the quick run takes about 30 s)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "bench.py")


def load_bench():
    spec = importlib.util.spec_from_file_location("mc_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


WRK_OUT = """Running 2s test @ http://127.0.0.1:40033/bench/proxy
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   399.12us  300.01us  12.10ms   95.00%
    Req/Sec    81.10k     3.20k   85.00k    70.00%
  Latency Distribution
     50%  350.00us
     75%  410.00us
     90%  520.00us
     99%    2.83ms
  162421 requests in 2.00s, 53.20MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  81210.50
Transfer/sec:     26.60MB
"""

REDIS_CSV = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",'
             '"p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
             '"SET","37401.20","1.250","0.300","1.100","2.000","7.890","15.000"\n')


def test_parse_wrk():
    b = load_bench()
    r = b.parse_wrk(WRK_OUT)
    assert r["requests"] == 162421
    assert r["rps"] == 81210.50
    assert r["p50_ms"] == pytest.approx(0.35)
    assert r["p99_ms"] == pytest.approx(2.83)
    assert r["duration_s"] == pytest.approx(2.0)
    assert r["non2xx"] == 5
    assert r["socket_errors"] == 3


def test_parse_wrk_rejects_output_without_latency():
    b = load_bench()
    with pytest.raises(b.BenchError):
        b.parse_wrk(WRK_OUT.replace("     99%    2.83ms\n", ""))
    with pytest.raises(b.BenchError):
        b.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_parse_redis_benchmark_csv_and_quiet():
    b = load_bench()
    r = b.parse_redis_benchmark(REDIS_CSV)
    assert r["rps"] == pytest.approx(37401.2)
    assert r["p99_ms"] == pytest.approx(7.89)
    assert r["p50_ms"] == pytest.approx(1.1)
    # -q style, with the progress line's carriage returns around it
    q = b.parse_redis_benchmark("SET: rps=0.0 (overall: nan) avg_msec=nan\r"
                                "SET: 41000.00 requests per second, p50=1.031 msec\n")
    assert q == {"rps": 41000.0, "p50_ms": 1.031}
    with pytest.raises(b.BenchError):
        b.parse_redis_benchmark("Could not connect to Redis at 127.0.0.1:1\n")


def test_scenario_table_is_complete():
    b = load_bench()
    names = {(sc.name, peer) for sc in b.scenarios() for peer in sc.peers}
    assert names >= {("proxy", "nginx"), ("proxy", "haproxy"), ("kv_get", "nginx"),
                     ("kv_put_durable", "redis"), ("cache_hit", "nginx"), ("cache_hit", "varnish"),
                     ("cache_hit", "varnish_unpinned")}


def test_base_binary_starter_swaps_the_binary_and_the_cell_name():
    b = load_bench()

    class S:
        bin = "/new/metrocell"

    class C:
        s = S()
        cell_suffix = ""

    seen = []
    st = b.with_bin(lambda ctx, name: seen.append((ctx.s.bin, ctx.cell_suffix, name)) or "srv",
                    "/old/metrocell")
    ctx = C()
    assert st(ctx, "x") == "srv"
    assert seen == [("/old/metrocell", "-base", "x")]
    assert ctx.s.bin == "/new/metrocell" and ctx.cell_suffix == ""


REQUIRED = ("name", "peer", "metrocell_rps_per_cpu", "peer_rps_per_cpu", "ratio",
            "metrocell_p99_ms", "peer_p99_ms", "metrocell_rps", "peer_rps",
            "metrocell_bytes_per_response", "peer_bytes_per_response")


@pytest.mark.skipif(not (shutil.which("wrk") and shutil.which("nginx")),
                    reason="wrk and nginx are not installed (make bench-smoke installs them)")
def test_quick_run_writes_results(tmp_path):
    binary = os.environ.get("BENCH_BIN") or os.path.join(REPO, "build", "metrocell")
    if not os.access(binary, os.X_OK):
        pytest.fail("no release binary at %s (run make)" % binary)
    env = dict(os.environ, BENCH_BIN=binary)
    for k in ("BENCH_ONLY", "BENCH_REPEAT", "BENCH_SECONDS", "BENCH_PERF",
              "BENCH_CACHE_BODY_BYTES"):
        env.pop(k, None)
    p = subprocess.run([sys.executable, SCRIPT, "--quick", "--out", str(tmp_path)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    got = {(e["name"], e["peer"]) for e in res["scenarios"]}
    want = {("proxy", "nginx"), ("kv_get", "nginx")}
    if shutil.which("haproxy"):
        want.add(("proxy", "haproxy"))
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        want.add(("kv_put_durable", "redis"))
    want.add(("cache_hit", "nginx"))
    if shutil.which("varnishd"):
        want.update({("cache_hit", "varnish"), ("cache_hit", "varnish_unpinned")})
    assert got >= want, out
    for e in res["scenarios"]:
        if (e["name"], e["peer"]) not in want:
            continue
        for k in REQUIRED:
            assert e.get(k) is not None, (k, e)
        assert e["ratio"] == pytest.approx(e["metrocell_rps_per_cpu"] / e["peer_rps_per_cpu"],
                                           rel=1e-2)
        for k in ("metrocell_rps_per_cpu", "peer_rps_per_cpu", "metrocell_p99_ms",
                  "peer_p99_ms", "metrocell_rps", "peer_rps"):
            assert e[k] > 0, (k, e)
        # A cell answering a benchmark request with an error status is a bug, not a
        # slow run; socket timeouts under CPU contention are not checked.
        for r in e["metrocell"]["runs"]:
            assert r["non2xx"] == 0, r
            assert r["requests"] > 0 and r["server_cpu_s"] > 0, r
        # bytes per response: a whole HTTP response (status line, headers, 100 B body)
        if e["peer"] != "redis":
            assert e["peer_bytes_per_response"] > 100
        else:
            assert e["peer_bytes_per_response"] == len(b"+OK\r\n")
        assert e["metrocell_bytes_per_response"] > 100
        if e["name"] == "cache_hit":
            # every measured request was a hit: none reached the origin, and the
            # responses carry the 1 KiB object
            assert e["backend_requests_during_runs"] == 0, e
            assert e["metrocell_bytes_per_response"] > 1024
            assert e["peer_bytes_per_response"] > 1024
    assert "Metrocell / peer" in out
    # every process the harness started is gone
    for line in out.splitlines():
        if " pid " in line:
            pid = int(line.split(" pid ", 1)[1].split()[0])
            assert not os.path.exists("/proc/%d" % pid) or \
                open("/proc/%d/stat" % pid).read().split(") ")[1][0] == "Z", line
