"""`metrocell demo --quick` end to end: the demo starts a region, two cells, four
sample workers and six links, drives its load, and must exit 0 with a report.json
whose numbers show proxy, kv read and kv write traffic served locally, every
acknowledged write present in the region, and every process it started gone."""

import json
import os
import subprocess
import time

import pytest

from conftest import binary


def pid_alive(pid):
    """True while /proc/<pid> exists and is not a zombie (a zombie has exited;
    only its parent's wait is missing)."""
    try:
        with open("/proc/%d/stat" % pid, "r") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def rows(report, cell, route, method=None, outcome=None):
    return [o for o in report["outcomes"]
            if o["cell"] == cell and o["route"] == route
            and (method is None or o.get("method") == method)
            and (outcome is None or o["outcome"] == outcome)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    b = binary()
    if not os.path.exists(b):
        pytest.fail("metrocell binary not found at %s (run make)" % b)
    out = tmp_path_factory.mktemp("demo")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    t0 = time.monotonic()
    p = subprocess.run([b, "demo", "--quick", "--out", str(out)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
    elapsed = time.monotonic() - t0
    stdout = p.stdout.decode(errors="replace")
    stderr = p.stderr.decode(errors="replace")
    report_path = os.path.join(str(out), "report.json")
    report = None
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
    return {"rc": p.returncode, "stdout": stdout, "stderr": stderr, "out": str(out),
            "report": report, "elapsed": elapsed}


def explain(run):
    return "exit %s\n--- stdout\n%s\n--- stderr\n%s" % (run["rc"], run["stdout"][-6000:],
                                                        run["stderr"][-6000:])


def test_demo_quick_exits_zero_with_report(demo_run):
    assert demo_run["rc"] == 0, explain(demo_run)
    rep = demo_run["report"]
    assert rep is not None, "no report.json in %s\n%s" % (demo_run["out"], explain(demo_run))
    assert rep["version"] == 1
    assert rep["ok"] is True and rep["failures"] == []
    assert "report.json" in demo_run["stdout"]
    for key in ("replication_lag_p99_ms", "writes_acked", "writes_in_region"):
        assert key in rep["metrics"], key
    for o in rep["outcomes"]:
        for key in ("cell", "route", "outcome", "count", "p50_ms", "p95_ms", "p99_ms"):
            assert key in o, (key, o)
        assert o["p50_ms"] <= o["p95_ms"] <= o["p99_ms"], o


def test_demo_serves_every_traffic_class_in_both_cells(demo_run):
    rep = demo_run["report"]
    assert rep is not None, explain(demo_run)
    for cell in ("lax", "sfo"):
        proxy = rows(rep, cell, "app", "GET", "local")
        assert sum(o["count"] for o in proxy) > 0, (cell, rep["outcomes"])
        assert all(o["p50_ms"] > 0 for o in proxy), proxy
        puts = rows(rep, cell, "kv", "PUT")
        assert sum(o["status_2xx"] for o in puts) > 0, (cell, rep["outcomes"])
        gets = rows(rep, cell, "kv", "GET")
        assert sum(o["status_2xx"] for o in gets) > 0, (cell, rep["outcomes"])
        # Every planned request was answered and counted exactly once.
        total = sum(o["count"] for o in rep["outcomes"] if o["cell"] == cell)
        assert total == rep["run"]["requests_per_cell"], (cell, total)
    # The client->cell link adds 2 ms each way: nothing can be faster than that.
    for o in rep["outcomes"]:
        if o["outcome"] != "client_error":
            assert o["min_ms"] >= 4.0, o


def test_demo_every_acknowledged_write_is_in_the_region(demo_run):
    rep = demo_run["report"]
    assert rep is not None, explain(demo_run)
    m = rep["metrics"]
    assert m["writes_acked"] > 0
    assert m["writes_in_region"] == m["writes_acked"], m
    acked_by_cells = sum(c["writes_acked"] for c in rep["cells"])
    assert acked_by_cells == m["writes_acked"]
    puts_2xx = sum(o["status_2xx"] for o in rep["outcomes"]
                   if o["route"] == "kv" and o.get("method") == "PUT")
    assert puts_2xx == m["writes_acked"]
    for c in rep["cells"]:
        r = c["replication"]
        assert r["acked_seq"] == r["last_seq"], c
    assert m["replication_lag_p99_ms"] > 0, m


def test_demo_leaves_no_process_behind(demo_run):
    rep = demo_run["report"]
    assert rep is not None, explain(demo_run)
    procs = rep["processes"]
    names = sorted(p["name"] for p in procs)
    # region, 2 cells, 4 workers, 2 x (repl link, region http link, client link)
    assert len(procs) == 13, names
    assert {"region", "lax", "sfo"} <= set(names)
    alive = [p for p in procs if pid_alive(p["pid"])]
    assert alive == [], alive
    for p in procs:
        assert p["exit"] != "running", p
        assert os.path.exists(p["log"]), p


def test_demo_rejects_bad_arguments():
    b = binary()
    if not os.path.exists(b):
        pytest.fail("metrocell binary not found at %s (run make)" % b)
    p = subprocess.run([b, "demo", "--requests", "zero"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 2
    assert b"--requests" in p.stderr
