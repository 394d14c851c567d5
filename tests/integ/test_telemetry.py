"""Fleet telemetry and the cell's observability buffer, end to end: real region,
cells, sample workers and `metrocell link` relays on 127.0.0.1. The assertions are
on exact counts, sequence numbers and bytes on disk, never on speed."""

import json
import os
import re
import subprocess
import time

from conftest import free_port, http_json, http_request, wait_until


class Fleet:
    """A region and any number of cells, each optionally behind a link relay."""

    def __init__(self, procs, tmp_path, binary, cells=("lax",)):
        self.procs = procs
        self.tmp = str(tmp_path)
        self.bin = binary
        self.region_http = "127.0.0.1:%d" % free_port()
        self.region_repl = "127.0.0.1:%d" % free_port()
        self.region_dir = os.path.join(self.tmp, "region-data")
        self.region_conf = os.path.join(self.tmp, "region.json")
        self.cells = {}
        with open(self.region_conf, "w") as f:
            json.dump({"region": "us-west",
                       "listen": {"http": self.region_http, "repl": self.region_repl},
                       "data_dir": self.region_dir,
                       "cells": list(cells),
                       "replication": {"heartbeat_ms": 200, "dead_after_ms": 1500},
                       "telemetry": {"stale_after_ms": 3000}}, f, indent=2)
        self.region = None

    def add_cell(self, name, link=False, workers=0, events_max_bytes=None, region_repl=None,
                 health=None):
        c = {"name": name,
             "http": "127.0.0.1:%d" % free_port(),
             "admin": "127.0.0.1:%d" % free_port(),
             "dir": os.path.join(self.tmp, "%s-data" % name),
             "conf": os.path.join(self.tmp, "%s.json" % name),
             "workers": ["127.0.0.1:%d" % free_port() for _ in range(workers)],
             "worker_procs": [],
             "link_listen": "127.0.0.1:%d" % free_port(),
             "link_admin": "127.0.0.1:%d" % free_port(),
             "link": link, "proc": None}
        repl = region_repl or (c["link_listen"] if link else self.region_repl)
        telemetry = {"interval_ms": 1000, "stale_after_ms": 3000}
        if events_max_bytes:
            telemetry["events_max_bytes"] = events_max_bytes
        conf = {"cell": name,
                "listen": {"http": c["http"], "admin": c["admin"]},
                "data_dir": c["dir"],
                "region": {"repl": repl, "http": self.region_http},
                "replication": {"heartbeat_ms": 200, "dead_after_ms": 1500},
                "telemetry": telemetry,
                "routes": [{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}
        if workers:
            pool = {"workers": c["workers"], "timeout_ms": 2000}
            if health:
                pool["health"] = health
            conf["pools"] = {"app": pool}
            conf["routes"].append({"name": "app", "prefix": "/app/", "kind": "proxy",
                                   "pool": "app"})
        with open(c["conf"], "w") as f:
            json.dump(conf, f, indent=2)
        self.cells[name] = c
        return c

    def start_region(self):
        self.region = self.procs.start([self.bin, "region", "-c", self.region_conf], "region",
                                       ready="region us-west ready")

    def start_cell(self, name):
        c = self.cells[name]
        for i, w in enumerate(c["workers"]):
            if len(c["worker_procs"]) <= i:
                c["worker_procs"].append(self.procs.start(
                    [self.bin, "sample-worker", "--listen", w, "--name", "%s-w%d" % (name, i)],
                    "%s-worker%d" % (name, i), ready="listening"))
        if c["link"] and "link_proc" not in c:
            c["link_proc"] = self.procs.start(
                [self.bin, "link", "--listen", c["link_listen"], "--to", self.region_repl,
                 "--delay", "1", "--admin", c["link_admin"], "--name", "%s-region" % name],
                "%s-link" % name, ready="listening")
        c["proc"] = self.procs.start([self.bin, "cell", "-c", c["conf"]], name,
                                     ready="cell %s ready" % name)
        return c

    def fleet(self):
        status, _, doc = http_json(self.region_http, "GET", "/v1/fleet")
        assert status == 200
        return doc

    def fleet_cell(self, name):
        for c in self.fleet()["cells"]:
            if c["cell"] == name:
                return c
        return None

    def region_events(self, name, after=0):
        out = []
        while True:
            status, _, doc = http_json(self.region_http, "GET",
                                       "/v1/events?cell=%s&after=%d&limit=1000" % (name, after))
            assert status == 200, doc
            out.extend(doc["events"])
            if not doc["events"]:
                return out
            after = doc["next_after"]

    def cell_events(self, name, after=0):
        out = []
        while True:
            status, _, doc = http_json(self.cells[name]["admin"], "GET",
                                       "/v1/events?after=%d&limit=1000" % after)
            assert status == 200, doc
            out.extend(doc["events"])
            if not doc["events"]:
                return out, doc
            after = doc["events"][-1]["seq"]


def metric(text, name, labels):
    """Value of the series name{labels...} in a Prometheus text body, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r'^([a-z_]+)(\{[^}]*\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def metrics(addr):
    status, _, body = http_request(addr, "GET", "/metrics")
    assert status == 200
    return body.decode()


def annotate(admin, message):
    status, _, doc = http_json(admin, "POST", "/v1/events",
                               body=json.dumps({"message": message, "source": "test"}))
    assert status == 201, doc
    return doc["seq"]


def link_post(admin, path):
    status, _, doc = http_json(admin, "POST", path)
    assert status == 200, doc
    return doc


def test_telemetry_reaches_region(procs, tmp_path, metrocell_bin):
    fl = Fleet(procs, tmp_path, metrocell_bin, cells=("lax",))
    fl.add_cell("lax")
    fl.start_region()
    fl.start_cell("lax")
    c = fl.cells["lax"]
    n_put, n_refused = 37, 5
    for i in range(n_put):
        status, hdrs, _ = http_request(c["http"], "PUT", "/v1/kv/t%d" % i, body=b"v%d" % i)
        assert status in (200, 201) and hdrs["x-metrocell-outcome"] == "local"
    for i in range(n_refused):
        status, hdrs, _ = http_request(c["http"], "GET", "/none/%d" % i)
        assert status == 404 and hdrs["x-metrocell-outcome"] == "refused"

    # Every summary the region holds while we poll: seq -> outcomes.
    seen = {}

    def caught_up():
        fc = fl.fleet_cell("lax")
        if not fc or not fc["heard"]:
            return None
        seen[fc["seq"]] = fc["outcomes"]
        o = fc["outcomes"]
        if o.get("local", {}).get("total") == n_put and o.get("refused", {}).get("total") == n_refused:
            return fc
        return None

    fc = wait_until(caught_up, timeout=20, interval=0.1, what="the region's view of lax's requests")
    assert fc["state"] == "up" and fc["up"] and fc["connected"]
    assert fc["requests_total"] == n_put + n_refused
    assert fc["health"] == "ok" and fc["config_version"] == 0
    assert fc["interval_ms"] >= 900
    # The interval counts add up: for consecutive summaries the interval count is
    # exactly the growth of the total, per outcome.
    seqs = sorted(seen)
    pairs = 0
    for a, b in zip(seqs, seqs[1:]):
        if b != a + 1:
            continue
        for name, ob in seen[b].items():
            before = seen[a].get(name, {"total": 0})["total"]
            assert ob["count"] == ob["total"] - before, (a, b, name, seen[a], seen[b])
            if ob["count"]:
                assert 0 < ob["p50_ms"] <= ob["p95_ms"] <= ob["p99_ms"]
        pairs += 1
    # At most the summaries that were sent before the first request was answered
    # are missing: the totals above came from the counts of later intervals.
    counted = sum(o["count"] for s in seqs for o in seen[s].values())
    assert counted <= n_put + n_refused

    # Wait for a quiet summary after the load, then the counts in /metrics.
    text = wait_until(lambda: (lambda t: t if metric(
        t, "metrocell_fleet_requests_total", {"cell": "lax", "outcome": "local"}) == n_put
        else None)(metrics(fl.region_http)), timeout=10, what="fleet series")
    assert metric(text, "metrocell_fleet_requests_total",
                  {"cell": "lax", "outcome": "refused"}) == n_refused
    assert metric(text, "metrocell_fleet_cell_up", {"cell": "lax"}) == 1
    assert metric(text, "metrocell_fleet_blind_seconds", {"cell": "lax"}) < 3
    assert metric(text, "metrocell_fleet_regional_dependency_ratio", {"cell": "lax"}) == 0
    assert metric(text, "metrocell_fleet_replication_lag_seconds", {"cell": "lax"}) is not None
    assert metric(text, "metrocell_fleet_locality_violations_total", {"cell": "lax"}) == 0
    assert metric(text, "metrocell_fleet_cache_hit_ratio", {"cell": "lax"}) == 0
    assert metric(text, "metrocell_fleet_latency_seconds",
                  {"cell": "lax", "outcome": "local", "quantile": "0.99"}) is not None
    # The cell's own request counter agrees with what the region shows.
    ctext = metrics(c["admin"])
    assert metric(ctext, "metrocell_requests_total",
                  {"cell": "lax", "route": "kv", "outcome": "local"}) == n_put
    assert metric(ctext, "metrocell_telemetry_acked_total", {"cell": "lax"}) >= 1

    # The events the cell emitted so far are at the region, in order.
    evs = wait_until(lambda: (lambda e: e if len(e) >= 2 else None)(fl.region_events("lax")),
                     timeout=10, what="lax's first events at the region")
    assert [e["type"] for e in evs[:2]] == ["cell_start", "replication_connected"]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))


def test_ctl_status_two_cells(procs, tmp_path, metrocell_bin):
    fl = Fleet(procs, tmp_path, metrocell_bin, cells=("lax", "sfo"))
    fl.add_cell("lax")
    fl.add_cell("sfo")
    fl.start_region()
    fl.start_cell("lax")
    fl.start_cell("sfo")
    for i in range(10):
        http_request(fl.cells["lax"]["http"], "PUT", "/v1/kv/a%d" % i, body=b"x")
    for i in range(4):
        http_request(fl.cells["sfo"]["http"], "PUT", "/v1/kv/b%d" % i, body=b"x")

    def ctl(*args):
        return subprocess.run([metrocell_bin, "ctl", "status", "--region", fl.region_http] +
                              list(args), capture_output=True, text=True, timeout=30)

    def both_up():
        r = ctl("--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        cells = {c["cell"]: c for c in doc["cells"]}
        ok = (cells.get("lax", {}).get("requests_total") == 10 and
              cells.get("sfo", {}).get("requests_total") == 4 and
              cells["lax"]["state"] == "up" and cells["sfo"]["state"] == "up")
        return doc if ok else None

    doc = wait_until(both_up, timeout=20, interval=0.2, what="both cells up in ctl status --json")
    assert doc["region"] == "us-west" and len(doc["cells"]) == 2

    r = ctl()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("region us-west: 2 cells")
    header = lines[1].split()
    assert header[:5] == ["CELL", "STATE", "HEALTH", "CONFIG", "RPS"]
    for col in ("P50_MS", "P95_MS", "P99_MS", "REGIONAL", "REPL_LAG", "LOCALITY", "CACHE_HIT",
                "BLIND_S"):
        assert col in header
    rows = {l.split()[0]: l.split() for l in lines[2:]}
    assert set(rows) == {"lax", "sfo"}
    for name in ("lax", "sfo"):
        row = rows[name]
        assert len(row) == len(header)
        assert row[1] == "up" and row[2] == "ok" and row[3] == "0"
        assert float(row[header.index("BLIND_S")]) < 3.5

    # A cell that stops is down once the region has not heard it for stale_after_ms.
    fl.cells["sfo"]["proc"].stop()

    def sfo_down():
        r2 = ctl()
        rows2 = {l.split()[0]: l.split() for l in r2.stdout.splitlines()[2:]}
        return rows2 if rows2.get("sfo", [None, None])[1] == "down" else None

    rows = wait_until(sfo_down, timeout=15, interval=0.3, what="sfo shown down")
    assert rows["lax"][1] == "up"
    assert float(rows["sfo"][header.index("BLIND_S")]) >= 3.0

    # Usage and connection errors are clear and exit non-zero.
    bad = subprocess.run([metrocell_bin, "ctl", "status", "--region", "nohost"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--region" in bad.stderr
    down = subprocess.run([metrocell_bin, "ctl", "status", "--region",
                           "127.0.0.1:%d" % free_port()], capture_output=True, text=True,
                          timeout=30)
    assert down.returncode == 1 and "/v1/fleet" in down.stderr


def test_partition_events_drain_and_blind_time(procs, tmp_path, metrocell_bin):
    fl = Fleet(procs, tmp_path, metrocell_bin, cells=("lax",))
    c = fl.add_cell("lax", link=True, workers=1,
                    health={"interval_ms": 100, "timeout_ms": 300, "rise": 1, "fall": 1})
    fl.start_region()
    fl.start_cell("lax")
    wait_until(lambda: (lambda f: f and f["state"] == "up")(fl.fleet_cell("lax")), timeout=20,
               what="lax up at the region")
    before = annotate(c["admin"], "before the cut")
    wait_until(lambda: any(e.get("message") == "before the cut" for e in fl.region_events("lax")),
               timeout=10, what="the first annotation at the region")

    # Partition: the link resets the connection and refuses new ones.
    t_cut = time.time()
    link_post(c["link_admin"], "/cut")
    wait_until(lambda: metric(metrics(c["admin"]), "metrocell_replication_connected",
                              {"cell": "lax"}) == 0, timeout=10, what="lax disconnected")
    during = [annotate(c["admin"], "during the cut %d" % i) for i in range(3)]
    # The only worker dies: the probes mark it unhealthy (an event) during the cut.
    c["worker_procs"][0].stop()
    wait_until(lambda: any(e["type"] == "worker_unhealthy" for e in fl.cell_events("lax")[0]),
               timeout=10, what="worker_unhealthy in the cell's buffer")
    # Nothing of this reached the region yet.
    assert not any(e.get("message", "").startswith("during") for e in fl.region_events("lax"))
    while time.time() - t_cut < 3.0:
        time.sleep(0.05)
    link_post(c["link_admin"], "/restore")
    t_restore = time.time()
    cut_s = t_restore - t_cut

    def drained():
        evs = fl.region_events("lax")
        types = [e["type"] for e in evs]
        return evs if "region_unreachable" in types else None

    evs = wait_until(drained, timeout=30, interval=0.2, what="the buffered events at the region")
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(set(seqs)), "duplicates or disorder at the region"
    by_seq = {e["seq"]: e for e in evs}
    for s in [before] + during:
        assert s in by_seq
    assert [by_seq[s]["message"] for s in during] == ["during the cut %d" % i for i in range(3)]
    order = [e["type"] for e in evs if e["type"] in (
        "replication_disconnected", "worker_unhealthy", "replication_connected",
        "region_unreachable")]
    first = {t: order.index(t) for t in set(order)}
    assert first["replication_disconnected"] < first["worker_unhealthy"]
    # the reconnect after the cut (the first replication_connected is the start's)
    last_conn = len(order) - 1 - order[::-1].index("replication_connected")
    assert first["worker_unhealthy"] < last_conn < order.index("region_unreachable")
    unreach = [e for e in evs if e["type"] == "region_unreachable"][-1]
    assert unreach["blind_s"] >= cut_s - 0.05
    assert unreach["start_ms"] <= t_cut * 1000 + 50 and unreach["end_ms"] >= t_restore * 1000 - 50
    # The cell's buffer and the region's log hold the same lines for what was acknowledged.
    cell_evs, meta = fl.cell_events("lax")
    acked = meta["acked_seq"]
    assert acked >= unreach["seq"]
    assert [e for e in cell_evs if e["seq"] <= acked] == [e for e in evs if e["seq"] <= acked]
    # On disk at the region: the same lines, each once.
    lines = []
    d = os.path.join(fl.region_dir, "events", "lax")
    for name in sorted(os.listdir(d)):
        if name.endswith(".jsonl"):
            with open(os.path.join(d, name)) as f:
                lines.extend(json.loads(l) for l in f if l.strip())
    assert [e["seq"] for e in lines] == seqs[:len(lines)] and len(lines) >= len(evs)

    # Blind time covers the partition: the region's view and the cell's.
    fc = wait_until(lambda: (lambda f: f if f["blind"]["windows"] >= 1 else None)(
        fl.fleet_cell("lax")), timeout=10, what="the region's blind window")
    assert fc["blind"]["last_window"]["seconds"] >= cut_s - 0.05
    assert fc["blind"]["total_s"] >= cut_s - 0.05
    assert fc["state"] == "up"
    ctext = metrics(c["admin"])
    assert metric(ctext, "metrocell_blind_last_window_seconds", {"cell": "lax"}) >= cut_s - 0.05
    assert metric(ctext, "metrocell_blind_windows_total", {"cell": "lax"}) == 1
    assert metric(ctext, "metrocell_blind_seconds", {"cell": "lax"}) < 3
    # the worker is down: the cell reports itself degraded
    fc = wait_until(lambda: (lambda f: f if f.get("health") == "degraded" else None)(
        fl.fleet_cell("lax")), timeout=10, what="lax degraded")
    assert fc["health_flags"] & 1


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))


def test_event_buffer_cap_and_restart(procs, tmp_path, metrocell_bin):
    """With the region unreachable, events fill the buffer: its files never exceed
    the cap, the oldest are dropped and counted; what is left survives a restart
    and drains, in order, once the region is there."""
    fl = Fleet(procs, tmp_path, metrocell_bin, cells=("lax",))
    cap = 65536
    c = fl.add_cell("lax", events_max_bytes=cap)
    fl.start_cell("lax")  # no region yet
    evdir = os.path.join(c["dir"], "events")
    for body in (b"not json", b"[]", b'{"message": ""}', b'{"message": 5}',
                 b'{"message": "%s"}' % (b"x" * 1001), b'{"message": "m", "extra": 1}',
                 b'{"message": "m", "source": 7}'):
        status, _, doc = http_json(c["admin"], "POST", "/v1/events", body=body)
        assert status == 400 and doc["error"] == "bad_event", (body, doc)
    status, hdrs, _ = http_request(c["admin"], "DELETE", "/v1/events")
    assert status == 405 and "POST" in hdrs["allow"]
    status, _, doc = http_json(c["admin"], "GET", "/v1/events?limit=5000")
    assert status == 400 and doc["error"] == "bad_query"
    msg = "x" * 200
    total = 600
    for i in range(total):
        annotate(c["admin"], "%s %d" % (msg, i))
        if i % 25 == 0:
            assert dir_bytes(evdir) <= cap
    assert dir_bytes(evdir) <= cap
    text = metrics(c["admin"])
    emitted = metric(text, "metrocell_events_emitted_total", {"cell": "lax"})
    dropped = metric(text, "metrocell_events_dropped_total", {"cell": "lax"})
    pending = metric(text, "metrocell_events_pending", {"cell": "lax"})
    assert emitted == total + 1  # + cell_start
    assert dropped > 0
    assert pending + dropped == emitted
    assert metric(text, "metrocell_events_bytes", {"cell": "lax"}) <= cap
    evs, meta = fl.cell_events("lax")
    assert meta["dropped"] == dropped and meta["acked_seq"] == 0
    assert [e["seq"] for e in evs] == list(range(meta["first_seq"], meta["last_seq"] + 1))
    assert evs[-1]["message"] == "%s %d" % (msg, total - 1)
    assert metric(text, "metrocell_blind_seconds", {"cell": "lax"}) > 0

    # A restart keeps the unacknowledged events and continues the numbering.
    last = meta["last_seq"]
    c["proc"].stop()
    fl.start_cell("lax")
    t_restart = time.time()
    evs2, meta2 = fl.cell_events("lax")
    assert meta2["stream"] == meta["stream"]
    assert meta2["first_seq"] >= meta["first_seq"]
    types = [e["type"] for e in evs2 if e["seq"] > last]
    assert types[:2] == ["cell_stop", "cell_start"]
    assert dir_bytes(evdir) <= cap

    # The region appears (more than stale_after_ms after the restart, so the
    # cell records a blind window): everything held drains, in order, each once.
    while time.time() - t_restart < 3.3:
        time.sleep(0.05)
    fl.start_region()

    def drained():
        _, m = fl.cell_events("lax")
        return m if m["acked_seq"] == m["last_seq"] and m["pending"] == 0 else None

    m = wait_until(drained, timeout=60, interval=0.3, what="the buffer drained to the region")
    region_evs = fl.region_events("lax")
    cell_now, _ = fl.cell_events("lax")
    assert region_evs == cell_now
    assert region_evs[-1]["seq"] == m["last_seq"]
    fc = fl.fleet_cell("lax")
    assert fc["events"]["refused"] == 0
    # the region's view: lax is up, the cell's own blind record covers its wait
    wait_until(lambda: (lambda f: f if f["heard"] and f["blind"]["cell_last_window_s"] > 3.3
                        else None)(fl.fleet_cell("lax")), timeout=10,
               what="the cell's blind window reported")
    unreach = [e for e in fl.region_events("lax") if e["type"] == "region_unreachable"]
    assert len(unreach) == 1 and unreach[0]["blind_s"] > 3.3


def test_region_rejects_bad_queries(procs, tmp_path, metrocell_bin):
    fl = Fleet(procs, tmp_path, metrocell_bin, cells=("lax",))
    fl.start_region()
    status, _, doc = http_json(fl.region_http, "GET", "/v1/events")
    assert status == 400 and doc["error"] == "bad_query"
    status, _, doc = http_json(fl.region_http, "GET", "/v1/events?cell=lax&limit=0")
    assert status == 400 and doc["error"] == "bad_query"
    status, _, doc = http_json(fl.region_http, "GET", "/v1/events?cell=nope")
    assert status == 404 and doc["error"] == "unknown_cell"
    status, _, doc = http_json(fl.region_http, "GET", "/v1/events?cell=lax")
    assert status == 200 and doc["events"] == []
    status, _, doc = http_json(fl.region_http, "POST", "/v1/fleet", body=b"{}")
    assert status == 405
    doc = fl.fleet()
    assert [c["cell"] for c in doc["cells"]] == ["lax"]
    assert doc["cells"][0]["state"] == "down" and not doc["cells"][0]["heard"]
