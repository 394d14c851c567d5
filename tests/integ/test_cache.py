"""The edge cache end to end: a sample origin, a region with its shield cache and
a cell with a cache route, as real processes on 127.0.0.1. Assertions are on the
wire (status, body, X-Metrocell-Outcome, X-Metrocell-Cache, Age), on the
origin's own request counters and on /metrics, never on timing alone."""

import json
import os
import re
import threading
import time
import urllib.parse

import pytest

from conftest import free_port, http_json, http_request, wait_until


class CacheCluster:
    """sample-origin <- region (shield) <- cell (cache route /c/)."""

    def __init__(self, procs, tmp_path, binary, cell_cache=None, shield=None, origin_args=()):
        self.procs = procs
        self.bin = binary
        self.origin = "127.0.0.1:%d" % free_port()
        self.region_http = "127.0.0.1:%d" % free_port()
        self.region_repl = "127.0.0.1:%d" % free_port()
        self.cell_http = "127.0.0.1:%d" % free_port()
        self.cell_admin = "127.0.0.1:%d" % free_port()
        self.origin_args = list(origin_args)
        self.region_conf = os.path.join(str(tmp_path), "region.json")
        self.cell_conf = os.path.join(str(tmp_path), "lax.json")
        shield_conf = {"origin": self.origin, "max_bytes": 4 << 20, "max_object_bytes": 256 << 10,
                       "timeout_ms": 5000, "connect_timeout_ms": 500}
        shield_conf.update(shield or {})
        cache_conf = {"max_bytes": 4 << 20, "max_object_bytes": 256 << 10, "timeout_ms": 5000,
                      "connect_timeout_ms": 500}
        cache_conf.update(cell_cache or {})
        self.cell_max_bytes = cache_conf["max_bytes"]
        self.shield_max_bytes = shield_conf["max_bytes"]
        with open(self.region_conf, "w") as f:
            json.dump({"region": "us-west",
                       "listen": {"http": self.region_http, "repl": self.region_repl},
                       "data_dir": os.path.join(str(tmp_path), "region-data"),
                       "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000},
                       "shield": shield_conf}, f, indent=2)
        with open(self.cell_conf, "w") as f:
            json.dump({"cell": "lax",
                       "listen": {"http": self.cell_http, "admin": self.cell_admin},
                       "data_dir": os.path.join(str(tmp_path), "lax-data"),
                       "region": {"repl": self.region_repl, "http": self.region_http},
                       "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000},
                       "cache": cache_conf,
                       "routes": [{"name": "static", "prefix": "/c/", "kind": "cache"},
                                  {"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}, f, indent=2)
        self.origin_proc = None
        self.region = None
        self.cell = None

    def start_origin(self):
        self.origin_proc = self.procs.start(
            [self.bin, "sample-origin", "--listen", self.origin] + self.origin_args,
            "origin", ready="listening")
        return self.origin_proc

    def start(self):
        self.start_origin()
        self.region = self.procs.start([self.bin, "region", "-c", self.region_conf], "region",
                                       ready="region us-west ready")
        self.cell = self.procs.start([self.bin, "cell", "-c", self.cell_conf], "lax",
                                     ready="cell lax ready")
        return self

    def get(self, target, headers=None):
        return http_request(self.cell_http, "GET", target, headers=headers)

    def origin_count(self, target=None):
        st = http_json(self.origin, "GET", "/_origin/stats")[2]
        return st["requests"] if target is None else st["targets"].get(target, 0)

    def metrics(self, addr=None):
        body = http_request(addr or self.cell_admin, "GET", "/metrics")[2].decode()
        out = {}
        for line in body.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        return out

    def cell_metric(self, name, **labels):
        return metric(self.metrics(), name, **labels)

    def region_metric(self, name, **labels):
        return metric(self.metrics(self.region_http), name, **labels)


def metric(m, name, **labels):
    """Sum of the series of family name whose labels include the given ones."""
    total = 0.0
    for key, v in m.items():
        fam, _, rest = key.partition("{")
        if fam != name:
            continue
        if all('%s="%s"' % (k, val) in rest for k, val in labels.items()):
            total += v
    return total


def q(**params):
    """A query string for the sample origin (spaces as %20: it does not read "+")."""
    return "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


@pytest.fixture
def cc(procs, tmp_path, metrocell_bin):
    return CacheCluster(procs, tmp_path, metrocell_bin)


def outcome(hdrs):
    return hdrs["x-metrocell-outcome"], hdrs.get("x-metrocell-cache")


def test_hit_after_miss_and_tiers(cc):
    cc.start()
    t = "/c/a" + q(cc="max-age=60")
    status, h, body = cc.get(t)
    assert status == 200, body
    assert outcome(h) == ("cache_miss", "miss; tier=origin")
    assert json.loads(body)["path"] == "/c/a"
    assert h["x-metrocell-route"] == "static"
    assert "cache-control" in h and "etag" in h and "date" in h
    time.sleep(1.1)
    status, h2, body2 = cc.get(t)
    assert status == 200 and body2 == body
    assert outcome(h2) == ("cache_hit", "hit; tier=cell")
    assert int(h2["age"]) >= 1
    assert h2["etag"] == h["etag"]
    assert cc.origin_count(t) == 1
    # the cell forgets it (purge by key on the cell's admin API): the shield answers
    st, _, doc = http_json(cc.cell_admin, "POST", "/v1/cache/purge", body=json.dumps({"key": t}))
    assert st == 200 and doc == {"purged": 1}
    status, h3, body3 = cc.get(t)
    assert body3 == body
    assert outcome(h3) == ("cache_miss", "miss; tier=shield")
    assert cc.origin_count(t) == 1
    # HEAD is answered from the stored GET, with the GET's length
    status, h4, body4 = http_request(cc.cell_http, "HEAD", t)
    assert status == 200 and body4 == b"" and int(h4["content-length"]) == len(body)
    assert outcome(h4)[0] == "cache_hit"
    # a client revalidation is answered here
    status, h5, body5 = cc.get(t, headers={"If-None-Match": h["etag"]})
    assert status == 304 and body5 == b"" and outcome(h5)[0] == "cache_hit"
    m = cc.metrics()
    assert metric(m, "metrocell_cache_requests_total", route="static", result="hit") == 3
    assert metric(m, "metrocell_cache_requests_total", route="static", result="miss") == 2
    assert metric(m, "metrocell_requests_total", route="static", outcome="cache_hit") == 3
    # body bytes of the GET hit (HEAD and 304 carry none)
    assert metric(m, "metrocell_cache_origin_bytes_avoided_total", route="static") == len(body)
    assert metric(cc.metrics(cc.region_http), "metrocell_cache_requests_total",
                  route="shield", result="hit") == 1


def test_max_age_expiry(cc):
    cc.start()
    # the cell's copy can look up to a second older than it is (Date has one-second
    # resolution): max-age 3 leaves room for a slow second request
    t = "/c/exp" + q(cc="max-age=3")
    assert outcome(cc.get(t)[1])[0] == "cache_miss"
    assert outcome(cc.get(t)[1])[0] == "cache_hit"
    time.sleep(3.3)  # stale in both tiers
    status, h, body = cc.get(t)
    assert status == 200
    assert outcome(h)[0] == "cache_miss"
    # both tiers revalidated with the ETag: the origin answered 304, not the body
    st = http_json(cc.origin, "GET", "/_origin/stats")[2]
    assert st["targets"][t] == 2
    assert st["not_modified"] == 1
    assert outcome(cc.get(t)[1])[0] == "cache_hit"
    assert cc.origin_count(t) == 2


def test_vary_separates_variants(cc):
    cc.start()
    t = "/c/v" + q(cc="max-age=60", vary="Accept-Language")
    bodies = {}
    for lang in ("fr", "en"):
        status, h, body = cc.get(t, headers={"Accept-Language": lang})
        assert status == 200 and outcome(h)[0] == "cache_miss"
        assert json.loads(body)["vary"] == lang
        bodies[lang] = body
    for lang in ("en", "fr", "en"):
        status, h, body = cc.get(t, headers={"Accept-Language": lang})
        assert outcome(h)[0] == "cache_hit", lang
        assert body == bodies[lang]
    status, h, body = cc.get(t)  # no Accept-Language: a third variant
    assert outcome(h)[0] == "cache_miss" and json.loads(body)["vary"] is None
    assert cc.origin_count(t) == 3
    assert cc.cell_metric("metrocell_cache_objects") == 3


def test_no_store_is_never_stored(cc):
    cc.start()
    t = "/c/ns" + q(cc="no-store")
    for _ in range(3):
        status, h, body = cc.get(t)
        assert status == 200
        assert outcome(h) == ("cache_miss", "pass; tier=origin")
    assert cc.origin_count(t) == 3
    m = cc.metrics()
    assert metric(m, "metrocell_cache_requests_total", result="pass") == 3
    # a HEAD passed through keeps the length a GET has
    status, h, b = http_request(cc.cell_http, "HEAD", t)
    assert status == 200 and b == b"" and int(h["content-length"]) == len(body)
    assert metric(m, "metrocell_cache_objects") == 0
    assert cc.region_metric("metrocell_cache_objects") == 0
    # private and Set-Cookie answers are not stored either
    for t2 in ("/c/p" + q(cc="private, max-age=60"), "/c/ck" + q(cc="max-age=60", cookie=1)):
        for _ in range(2):
            assert outcome(cc.get(t2)[1])[1].startswith("pass")
        assert cc.origin_count(t2) == 2


def test_100_concurrent_misses_make_one_origin_request(cc):
    cc.start()
    t = "/c/hot" + q(cc="max-age=60", delay=1500)
    results = [None] * 100
    barrier = threading.Barrier(100)

    def client(i):
        barrier.wait(timeout=30)
        results[i] = cc.get(t)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    bodies = set()
    outcomes = {}
    for r in results:
        assert r is not None
        status, h, body = r
        assert status == 200, body
        bodies.add(body)
        outcomes[outcome(h)[0]] = outcomes.get(outcome(h)[0], 0) + 1
    assert len(bodies) == 1
    assert cc.origin_count(t) == 1
    m = cc.metrics()
    # every request was either the one fill, a collapsed waiter or (arriving after
    # the fill under CPU contention) a hit
    collapsed = metric(m, "metrocell_cache_collapsed_total", route="static")
    hits = metric(m, "metrocell_cache_requests_total", route="static", result="hit")
    assert collapsed + hits == 99, (collapsed, hits, outcomes)
    assert collapsed > 0
    assert metric(m, "metrocell_cache_upstream_requests_total", route="static") == 1


def test_origin_down_serves_stale_if_error(cc):
    cc.start()
    t = "/c/sie" + q(cc="max-age=1, stale-if-error=300")
    status, h, good = cc.get(t)
    assert outcome(h)[0] == "cache_miss"
    cc.origin_proc.stop()
    time.sleep(2.2)
    status, h, body = cc.get(t)
    assert status == 200 and body == good
    # the shield served its stale copy (the origin refused the connection); the cell
    # passes it on as stale, never as a hit
    assert outcome(h) == ("cache_stale", "stale; tier=shield")
    assert int(h["age"]) >= 2
    m = cc.metrics()
    assert metric(m, "metrocell_cache_requests_total", route="static", result="stale") == 1
    assert metric(m, "metrocell_requests_total", route="static", outcome="cache_stale") == 1
    assert metric(m, "metrocell_cache_requests_total", route="static", result="hit") == 0
    rm = cc.metrics(cc.region_http)
    assert metric(rm, "metrocell_cache_stale_on_error_total", route="shield") == 1
    # and with the region down too, the cell's own copy: tier=cell
    cc.region.stop()
    status, h, body = cc.get(t)
    assert status == 200 and body == good
    assert outcome(h) == ("cache_stale", "stale; tier=cell")
    assert cc.cell_metric("metrocell_cache_stale_on_error_total", route="static") == 1
    # without stale-if-error the failure shows
    status, h, body = cc.get("/c/none" + q(cc="max-age=60"))
    assert status == 502 and json.loads(body)["error"] == "upstream_failed"


def test_origin_5xx_serves_stale_if_error(cc):
    cc.start()
    t = "/c/sie5" + q(cc="max-age=1, stale-if-error=300")
    _, _, good = cc.get(t)
    http_json(cc.origin, "POST", "/_origin/fail?on=1")
    time.sleep(2.2)
    status, h, body = cc.get(t)
    assert status == 200 and body == good
    assert outcome(h) == ("cache_stale", "stale; tier=shield")
    # no stale copy anywhere: the origin's 503 comes through
    status, h, body = cc.get("/c/fresh" + q(cc="max-age=60"))
    assert status == 503 and json.loads(body)["error"] == "origin_failing"
    assert outcome(h)[0] == "cache_miss"


def test_stale_while_revalidate_refreshes_exactly_once(cc):
    cc.start()
    # max-age 3: long enough that the refreshed copies stay fresh while we look; the
    # origin takes 2 s, so the shield's refresh is still running during the six requests
    t = "/c/swr" + q(cc="max-age=3, stale-while-revalidate=60", delay=2000)
    assert outcome(cc.get(t)[1])[0] == "cache_miss"
    assert cc.origin_count(t) == 1
    time.sleep(3.6)
    for _ in range(6):
        status, h, _ = cc.get(t)
        assert status == 200
        assert outcome(h) == ("cache_stale", "stale; tier=cell")
    wait_until(lambda: cc.origin_count(t) == 2, timeout=15, what="the background refresh")
    wait_until(lambda: outcome(cc.get(t)[1])[0] == "cache_hit", timeout=15,
               what="the refreshed object")
    time.sleep(0.5)
    assert cc.origin_count(t) == 2  # one refresh, whatever the number of stale answers
    m = cc.metrics()
    assert metric(m, "metrocell_cache_requests_total", route="static", result="stale") >= 6
    assert cc.region_metric("metrocell_cache_refreshes_total", route="shield") == 1


def test_purge_by_prefix_at_region_reaches_cell(cc):
    cc.start()
    wait_until(lambda: metric(cc.metrics(cc.region_http), "metrocell_region_cell_connected",
                              cell="lax") == 1, timeout=15, what="the cell's replication link")
    targets = ["/c/img/1.png", "/c/img/2.png", "/c/css/a.css"]
    for t in targets:
        assert outcome(cc.get(t)[1])[0] == "cache_miss"
        assert outcome(cc.get(t)[1])[0] == "cache_hit"
    st, _, doc = http_json(cc.region_http, "POST", "/v1/cache/purge",
                           body=json.dumps({"prefix": "/c/img/"}))
    assert st == 200 and doc == {"purged": 2, "cells": 1}
    wait_until(lambda: cc.cell_metric("metrocell_cache_purged_total") == 2, timeout=10,
               what="the PURGE frame to reach the cell")
    for t in targets[:2]:
        status, h, _ = cc.get(t)
        assert outcome(h) == ("cache_miss", "miss; tier=origin"), t
        assert cc.origin_count(t) == 2
    assert outcome(cc.get(targets[2])[1])[0] == "cache_hit"
    assert cc.origin_count(targets[2]) == 1
    assert cc.cell_metric("metrocell_cache_purge_frames_total") == 1
    # bad purges are refused with a JSON error
    for bad in ("{}", "[1]", '{"key": "/a", "prefix": "/b"}', '{"prefix": "img"}', "{",
                '{"key": "/a", "x": 1}'):
        st, _, doc = http_json(cc.region_http, "POST", "/v1/cache/purge", body=bad)
        assert st == 400 and doc["error"] == "bad_purge", bad
    st, h, doc = http_json(cc.cell_admin, "GET", "/v1/cache/purge")
    assert st == 405 and h["allow"] == "POST"


def test_byte_bound_never_exceeded(procs, tmp_path, metrocell_bin):
    cc = CacheCluster(procs, tmp_path, metrocell_bin,
                      cell_cache={"max_bytes": 262144, "max_object_bytes": 16384, "shards": 4},
                      shield={"max_bytes": 524288, "max_object_bytes": 16384})
    cc.start()
    samples = []
    done = threading.Event()

    def sampler():
        while not done.is_set():
            m = cc.metrics()
            samples.append((metric(m, "metrocell_cache_bytes"), metric(m, "metrocell_cache_max_bytes")))
            rm = cc.metrics(cc.region_http)
            samples.append((metric(rm, "metrocell_cache_bytes"), metric(rm, "metrocell_cache_max_bytes")))
            time.sleep(0.05)

    def load(k):
        for i in range(k, 400, 4):
            status, h, body = cc.get("/c/obj/%d" % i + q(cc="max-age=60", bytes=4000))
            assert status == 200 and len(body) == 4000

    th = threading.Thread(target=sampler)
    th.start()
    loaders = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in loaders:
        t.start()
    for t in loaders:
        t.join(timeout=120)
    done.set()
    th.join(timeout=10)
    m = cc.metrics()
    samples.append((metric(m, "metrocell_cache_bytes"), metric(m, "metrocell_cache_max_bytes")))
    assert len(samples) > 4
    for used, bound in samples:
        assert bound > 0 and used <= bound, (used, bound)
    assert metric(m, "metrocell_cache_max_bytes") == 262144
    assert metric(m, "metrocell_cache_evictions_total") > 0
    assert metric(m, "metrocell_cache_bytes") > 262144 // 2  # the budget is used, not wasted
    assert cc.region_metric("metrocell_cache_evictions_total") > 0
    # objects above max_object_bytes pass through uncached
    big = "/c/big" + q(cc="max-age=60", bytes=40000)
    for _ in range(2):
        status, h, body = cc.get(big)
        assert status == 200 and len(body) == 40000
        assert outcome(h)[1].startswith("pass")
    assert cc.origin_count(big) == 2


def test_config_errors(tmp_path, metrocell_bin):
    import subprocess
    base = {"cell": "lax", "listen": {"http": "127.0.0.1:0", "admin": "127.0.0.1:0"},
            "data_dir": str(tmp_path / "d"), "region": {"repl": "127.0.0.1:7100"},
            "routes": [{"name": "c", "prefix": "/c/", "kind": "cache"}]}
    cases = [
        (base, 'routes[0].kind: a "cache" route needs region.http'),
        (dict(base, region={"repl": "127.0.0.1:7100", "http": "127.0.0.1:7080"},
              cache={"max_bytes": 100000, "max_object_bytes": 200000}),
         "cache.max_object_bytes: expected an integer in 256..100000"),
        (dict(base, region={"repl": "127.0.0.1:7100", "http": "127.0.0.1:7080"},
              cache={"shards": 3}), "cache.shards: expected a power of two"),
        (dict(base, region={"repl": "127.0.0.1:7100", "http": "127.0.0.1:7080"},
              cache={"policy": "arc"}), 'cache.policy: expected "s3fifo" or "lru"'),
        (dict(base, region={"repl": "127.0.0.1:7100", "http": "127.0.0.1:7080"},
              routes=[{"name": "c", "prefix": "/c/", "kind": "cache", "pool": "x"}]),
         'routes[0].pool: a "cache" route takes no pool'),
    ]
    for doc, want in cases:
        p = tmp_path / "cell.json"
        p.write_text(json.dumps(doc))
        r = subprocess.run([metrocell_bin, "cell", "-c", str(p)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2, r.stderr
        assert want in r.stderr, r.stderr
    region = {"region": "r", "listen": {"http": "127.0.0.1:0", "repl": "127.0.0.1:0"},
              "data_dir": str(tmp_path / "r"), "shield": {"max_bytes": 1 << 20}}
    p = tmp_path / "region.json"
    p.write_text(json.dumps(region))
    r = subprocess.run([metrocell_bin, "region", "-c", str(p)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and 'shield: missing required key "origin"' in r.stderr, r.stderr
