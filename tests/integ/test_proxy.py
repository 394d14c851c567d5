"""Worker pools and the failure policy, end to end: real `metrocell cell`,
`metrocell region` (with its fallback upstream) and `metrocell sample-worker`
processes on 127.0.0.1. Health probes and outlier ejection, streaming through
the cell, per-route timeouts and budgets, fail_open to the region's fallback
path and fail_closed 503s."""

import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import free_port, http_json, http_request, wait_until


class Px:
    """A region with a fallback worker, a cell with one pool "app" and the
    routes given, and the pool's sample workers (started on demand)."""

    def __init__(self, procs, tmp_path, binary, nworkers=2, pool=None, routes=None,
                 region_fallback=True):
        self.procs = procs
        self.bin = binary
        self.tmp = str(tmp_path)
        self.region_http = "127.0.0.1:%d" % free_port()
        self.region_repl = "127.0.0.1:%d" % free_port()
        self.cell_http = "127.0.0.1:%d" % free_port()
        self.cell_admin = "127.0.0.1:%d" % free_port()
        self.fallback = "127.0.0.1:%d" % free_port()
        self.workers = ["127.0.0.1:%d" % free_port() for _ in range(nworkers)]
        self.worker_procs = [None] * nworkers
        region = {"region": "us-west",
                  "listen": {"http": self.region_http, "repl": self.region_repl},
                  "data_dir": os.path.join(self.tmp, "region-data"),
                  "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000}}
        if region_fallback:
            region["fallback"] = {"workers": [self.fallback], "timeout_ms": 5000}
        self.region_conf = os.path.join(self.tmp, "region.json")
        with open(self.region_conf, "w") as f:
            json.dump(region, f, indent=2)
        p = {"workers": self.workers}
        p.update(pool or {})
        cell = {"cell": "lax",
                "listen": {"http": self.cell_http, "admin": self.cell_admin},
                "data_dir": os.path.join(self.tmp, "lax-data"),
                "region": {"repl": self.region_repl, "http": self.region_http},
                "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000},
                "pools": {"app": p},
                "routes": routes or [{"name": "app", "prefix": "/app/", "kind": "proxy",
                                      "pool": "app"}]}
        self.cell_conf = os.path.join(self.tmp, "lax.json")
        with open(self.cell_conf, "w") as f:
            json.dump(cell, f, indent=2)
        self.region = self.cellp = self.fallback_proc = None

    def start_region(self):
        self.region = self.procs.start([self.bin, "region", "-c", self.region_conf], "region",
                                       ready="region us-west ready")

    def start_fallback_worker(self):
        self.fallback_proc = self.procs.start(
            [self.bin, "sample-worker", "--listen", self.fallback, "--name", "region-fb"],
            "fallback-worker", ready="listening")

    def start_worker(self, i, *extra):
        self.worker_procs[i] = self.procs.start(
            [self.bin, "sample-worker", "--listen", self.workers[i], "--name", "w%d" % i]
            + list(extra), "worker%d-%d" % (i, time.time_ns()), ready="listening")
        return self.worker_procs[i]

    def start_cell(self):
        self.cellp = self.procs.start([self.bin, "cell", "-c", self.cell_conf], "cell",
                                      ready="cell lax ready")

    def metrics(self, admin=None):
        status, _, body = http_request(admin or self.cell_admin, "GET", "/metrics")
        assert status == 200
        return body.decode()

    def metric(self, name, must=(), text=None, admin=None):
        """Sum of the series of family `name` whose labels contain every string
        of `must` (0 when none)."""
        total = 0.0
        for line in (text or self.metrics(admin)).splitlines():
            m = re.match(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), line)
            if m and all(s in m.group(1) for s in must):
                total += float(m.group(2))
        return total


def route(name, prefix, **kw):
    r = {"name": name, "prefix": prefix, "kind": "proxy", "pool": "app"}
    r.update(kw)
    return r


def test_worker_killed_under_load_is_ejected_and_probes_bring_it_back(procs, tmp_path,
                                                                      metrocell_bin):
    failures = 3
    px = Px(procs, tmp_path, metrocell_bin,
            pool={"health": {"interval_ms": 300, "timeout_ms": 300, "rise": 2, "fall": 3},
                  "outlier": {"consecutive_failures": failures, "base_ejection_ms": 1000,
                              "max_ejection_percent": 50}})
    px.start_region()
    px.start_worker(0)
    px.start_worker(1)
    px.start_cell()
    w0 = 'worker="%s"' % px.workers[0]

    errors, served = [], {"w0": 0, "w1": 0}
    lock = threading.Lock()

    def load(t):
        host, port = px.cell_http.rsplit(":", 1)
        import http.client
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for i in range(150):
            try:
                conn.request("GET", "/app/load/%d/%d" % (t, i))
                r = conn.getresponse()
                body = r.read()
                with lock:
                    if r.status == 200:
                        served[json.loads(body)["worker"]] += 1
                    else:
                        errors.append((r.status, body))
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(("exception", repr(e)))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.close()

    threads = [threading.Thread(target=load, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    wait_until(lambda: served["w0"] >= 20 and served["w1"] >= 20, timeout=20,
               what="both workers to serve")
    px.worker_procs[0].kill9()
    killed_at = sum(served.values())
    for th in threads:
        th.join(timeout=60)
    assert sum(served.values()) + len(errors) == 600
    # idempotent GETs are retried on the other worker: no client error beyond
    # the failure count that ejects the worker
    assert len(errors) <= failures, errors
    assert sum(served.values()) > killed_at
    text = px.metrics()
    assert px.metric("metrocell_upstream_ejections_total", [w0], text) >= 1, text
    # the probes take it out too (it is dead), and the route keeps serving
    wait_until(lambda: px.metric("metrocell_upstream_worker_healthy", [w0]) == 0, timeout=20,
               what="probes to mark the dead worker unhealthy")
    for i in range(10):
        status, hdrs, body = http_request(px.cell_http, "GET", "/app/after/%d" % i)
        assert status == 200 and json.loads(body)["worker"] == "w1"
    # restarted: the probes bring it back, and it gets requests again
    px.start_worker(0)
    wait_until(lambda: px.metric("metrocell_upstream_worker_healthy", [w0]) == 1 and
               px.metric("metrocell_upstream_worker_ejected", [w0]) == 0, timeout=20,
               what="probes to bring the restarted worker back")
    seen = set()
    for i in range(40):
        status, _, body = http_request(px.cell_http, "GET", "/app/back/%d" % i)
        assert status == 200
        seen.add(json.loads(body)["worker"])
    assert seen == {"w0", "w1"}
    assert "worker 127.0.0.1:%s healthy" % px.workers[0].rsplit(":", 1)[1] in px.cellp.log()


def test_all_workers_down_fail_open_goes_to_region_fail_closed_answers_503(procs, tmp_path,
                                                                          metrocell_bin):
    px = Px(procs, tmp_path, metrocell_bin,
            routes=[route("open", "/open/", on_failure="fail_open"),
                    route("closed", "/closed/")])
    px.start_region()
    px.start_fallback_worker()
    px.start_cell()  # no worker of the pool is running

    status, hdrs, body = http_request(px.cell_http, "GET", "/open/items/7?q=1")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["worker"] == "region-fb" and doc["path"] == "/open/items/7"
    assert hdrs["x-metrocell-outcome"] == "fallback"
    assert hdrs["x-metrocell-cell"] == "lax" and hdrs["x-metrocell-route"] == "open"
    assert hdrs["x-metrocell-region"] == "us-west"
    assert hdrs["x-worker"] == "region-fb"
    timing = hdrs["server-timing"]
    assert "region;dur=" in timing and "upstream;dur=" in timing, timing
    # a POST fails open too (nothing reached a worker)
    status, hdrs, body = http_request(px.cell_http, "POST", "/open/orders", body=b"{}")
    assert status == 200 and hdrs["x-metrocell-outcome"] == "fallback"

    status, hdrs, body = http_request(px.cell_http, "GET", "/closed/items/7")
    assert status == 503
    doc = json.loads(body)
    assert doc["error"] == "upstream_unavailable"
    cause = hdrs["x-metrocell-failure-cause"]
    assert cause in ("connect_failed", "no_healthy_worker")
    assert doc["message"].startswith(cause + ": ")
    assert hdrs["x-metrocell-outcome"] == "refused"
    assert hdrs["content-type"] == "application/json"

    text = px.metrics()
    assert px.metric("metrocell_regional_requests_total", ['cause="fallback"'], text) == 2
    assert px.metric("metrocell_failure_policy_total",
                     ['route="open"', 'action="fail_open"'], text) == 2
    assert px.metric("metrocell_failure_policy_total",
                     ['route="closed"', 'cause="%s"' % cause, 'action="fail_closed"'], text) == 1
    assert px.metric("metrocell_requests_total", ['route="open"', 'outcome="fallback"'],
                     text) == 2
    assert px.metric("metrocell_region_fallback_requests_total",
                     ['cell="lax"', 'result="served"'], admin=px.region_http) == 2

    # the region's fallback upstream is down too: an error naming both failures
    px.fallback_proc.kill9()
    status, hdrs, body = http_request(px.cell_http, "GET", "/open/items/8")
    assert status == 502, body
    doc = json.loads(body)
    assert doc["error"] == "fallback_failed"
    assert re.match(r"^(connect_failed|no_healthy_worker): .*; region fallback: upstream_error: "
                    r"region answered 502 \(connect_failed\)$", doc["message"]), doc["message"]
    # and the region itself is gone: still one JSON answer naming both
    px.region.kill9()
    status, hdrs, body = http_request(px.cell_http, "GET", "/open/items/9")
    assert status == 503, body
    doc = json.loads(body)
    assert doc["error"] == "fallback_failed"
    assert "; region fallback: connect_failed: region %s" % px.region_http in doc["message"]
    assert hdrs["x-metrocell-outcome"] == "refused"


def _read_until(sock, data, pred, deadline):
    while not pred(data):
        if time.time() > deadline:
            pytest.fail("timed out; received so far: %r" % data[-400:])
        sock.settimeout(max(0.1, deadline - time.time()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_server_sent_events_stream_through_as_they_arrive(procs, tmp_path, metrocell_bin):
    px = Px(procs, tmp_path, metrocell_bin, nworkers=1)
    px.start_region()
    px.start_worker(0)
    px.start_cell()
    host, port = px.cell_http.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    # the worker sends an event, waits 1.2 s, sends the next, 3 in all
    s.sendall(b"GET /app/events?sse=3&gap_ms=1200 HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.time() + 20
    data = _read_until(s, b"", lambda d: b'"event":1}' in d, deadline)
    # the first event is here while the worker has not finished the response:
    # neither the next event nor the end of the chunked body came with it
    assert b'"event":2}' not in data and b"\r\n0\r\n\r\n" not in data, data
    head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 200")
    assert "transfer-encoding: chunked" in head and "content-length" not in head
    assert "content-type: text/event-stream" in head
    assert "x-metrocell-outcome: local" in head
    assert px.metric("metrocell_upstream_outstanding") == 1  # the stream is in flight
    data = _read_until(s, data, lambda d: b'"event":2}' in d, deadline)
    assert b"\r\n0\r\n\r\n" not in data
    data = _read_until(s, data, lambda d: d.endswith(b"\r\n0\r\n\r\n"), deadline)
    events = re.findall(rb'"event":(\d+)}', data)
    assert events == [b"1", b"2", b"3"]
    # the connection stays usable: a body of known length keeps its Content-Length
    s.sendall(b"GET /app/plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rest = _read_until(s, b"", lambda d: False, deadline)
    s.close()
    head, body = rest.split(b"\r\n\r\n", 1)
    assert b"Content-Length: %d\r\n" % len(body) in head and b"chunked" not in head
    assert json.loads(body)["path"] == "/app/plain"
    wait_until(lambda: px.metric("metrocell_upstream_outstanding") == 0, timeout=10,
               what="the stream to end")

    # a client that leaves mid-stream releases the worker's stream
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"GET /app/events?sse=1000&gap_ms=200 HTTP/1.1\r\nHost: x\r\n\r\n")
    _read_until(s, b"", lambda d: b'"event":1}' in d, time.time() + 20)
    s.close()
    wait_until(lambda: px.metric("metrocell_upstream_outstanding") == 0, timeout=10,
               what="the abandoned stream to be released")


def test_large_body_streams_with_backpressure(procs, tmp_path, metrocell_bin):
    """A 32 MiB answer to a client that reads slowly arrives whole, and the cell
    holds back from the worker instead of buffering it (its peak memory stays far
    below the body size)."""
    size = 32 << 20
    px = Px(procs, tmp_path, metrocell_bin, nworkers=1)
    px.start_region()
    px.start_worker(0, "--body-bytes", str(size))
    px.start_cell()

    def hwm_kb():
        with open("/proc/%d/status" % px.cellp.pid) as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))

    # warm up (allocator, connections) on a small request
    assert http_request(px.cell_http, "GET", "/app/warm?x=1")[0] == 200
    before = hwm_kb()
    host, port = px.cell_http.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect((host, int(port)))
    s.sendall(b"GET /app/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(1.0)  # the worker has sent everything it can; we read nothing yet
    got = 0
    head = b""
    while True:
        chunk = s.recv(256 * 1024)
        if not chunk:
            break
        if not head:
            head, chunk = (chunk.split(b"\r\n\r\n", 1) + [b""])[:2]
        got += len(chunk)
    s.close()
    assert b"Content-Length: %d" % size in head
    assert got == size
    grew_mb = (hwm_kb() - before) / 1024
    assert grew_mb < 12, "cell peak memory grew by %.1f MiB for a %d MiB body" % (
        grew_mb, size >> 20)


def test_slow_worker_beyond_first_byte_timeout_triggers_policy_within_budget(procs, tmp_path,
                                                                           metrocell_bin):
    px = Px(procs, tmp_path, metrocell_bin, nworkers=1,
            routes=[route("closed", "/closed/", first_byte_timeout_ms=300, budget_ms=800),
                    route("open", "/open/", first_byte_timeout_ms=300, budget_ms=800,
                          on_failure="fail_open"),
                    route("budget", "/budget/", first_byte_timeout_ms=5000, budget_ms=700)])
    px.start_region()
    px.start_fallback_worker()
    px.start_worker(0, "--work-ms", "4000")
    px.start_cell()
    slack = 1.5

    t0 = time.time()
    status, hdrs, body = http_request(px.cell_http, "GET", "/closed/slow")
    took = time.time() - t0
    assert status == 503 and hdrs["x-metrocell-failure-cause"] == "timeout", body
    assert json.loads(body)["message"].startswith("timeout: ")
    assert 0.3 <= took < 0.8 + slack, took

    t0 = time.time()
    status, hdrs, body = http_request(px.cell_http, "GET", "/open/slow")
    took = time.time() - t0
    assert status == 200 and hdrs["x-metrocell-outcome"] == "fallback", body
    assert json.loads(body)["worker"] == "region-fb"
    assert took < 0.8 + slack, took

    # the budget cuts a first-byte timeout longer than itself
    t0 = time.time()
    status, hdrs, body = http_request(px.cell_http, "GET", "/budget/slow")
    took = time.time() - t0
    assert status == 503 and hdrs["x-metrocell-failure-cause"] == "timeout"
    assert "within the budget of 700 ms" in json.loads(body)["message"]
    assert 0.7 <= took < 0.7 + slack, took
    text = px.metrics()
    assert px.metric("metrocell_failure_policy_total",
                     ['route="budget"', 'cause="timeout"', 'action="fail_closed"'], text) == 1
    assert px.metric("metrocell_failure_policy_total",
                     ['route="open"', 'cause="timeout"', 'action="fail_open"'], text) == 1


def test_outlier_ejection_cap_keeps_half_the_pool(procs, tmp_path, metrocell_bin):
    px = Px(procs, tmp_path, metrocell_bin,
            pool={"outlier": {"consecutive_failures": 2, "count_5xx": True,
                              "base_ejection_ms": 60000, "max_ejection_percent": 50}})
    px.start_region()
    px.start_worker(0, "--fail-status", "500")
    px.start_worker(1, "--fail-status", "500")
    px.start_cell()
    for i in range(30):
        status, hdrs, body = http_request(px.cell_http, "GET", "/app/f%d" % i)
        # the route does not fail on 5xx: the workers' answers pass through
        assert status == 500 and hdrs["x-metrocell-outcome"] == "local"
    text = px.metrics()
    ejected = [px.metric("metrocell_upstream_worker_ejected", ['worker="%s"' % w], text)
               for w in px.workers]
    assert sorted(ejected) == [0, 1], text
    assert px.metric("metrocell_upstream_ejections_total", [], text) == 1
    # the one left in serves everything
    kept = "w%d" % ejected.index(0)
    for i in range(10):
        status, hdrs, body = http_request(px.cell_http, "GET", "/app/g%d" % i)
        assert hdrs["x-worker"] == kept


def test_upstream_5xx_and_overload_follow_the_same_policy(procs, tmp_path, metrocell_bin):
    px = Px(procs, tmp_path, metrocell_bin,
            pool={"max_outstanding": 1, "outlier": {"consecutive_failures": 0,
                                                    "failure_percent": 0}},
            routes=[route("strict", "/strict/", fail_on_5xx=True),
                    route("open5", "/open5/", fail_on_5xx=True, on_failure="fail_open"),
                    route("app", "/app/")])
    px.start_region()
    px.start_fallback_worker()
    px.start_worker(0)
    px.start_worker(1)
    px.start_cell()
    # both workers answer 503: retried once, then the policy with upstream_5xx
    status, hdrs, body = http_request(px.cell_http, "GET", "/strict/x?status=503")
    assert status == 503 and hdrs["x-metrocell-failure-cause"] == "upstream_5xx", body
    assert re.match(r"^upstream_5xx: worker 127\.0\.0\.1:\d+ of pool app answered 503",
                    json.loads(body)["message"])
    # failing open: the region's fallback upstream answers (the same query asks
    # it for a 502 too, which is its answer to give: relayed as it is)
    status, hdrs, body = http_request(px.cell_http, "GET", "/open5/x?status=502")
    assert status == 502 and hdrs["x-metrocell-outcome"] == "fallback"
    assert json.loads(body)["worker"] == "region-fb"
    assert px.metric("metrocell_upstream_retries_total", ['route="strict"']) == 1
    # without fail_on_5xx the worker's 503 is the answer
    status, hdrs, body = http_request(px.cell_http, "GET", "/app/x?status=503")
    assert status == 503 and "x-metrocell-failure-cause" not in hdrs
    assert hdrs["x-metrocell-outcome"] == "local"

    # overload: the pool takes one request at a time (max_outstanding 1)
    res = {}

    def slow():
        res["slow"] = http_request(px.cell_http, "GET", "/app/slow?delay_ms=1500")

    th = threading.Thread(target=slow)
    th.start()
    wait_until(lambda: px.metric("metrocell_upstream_outstanding") == 1, timeout=10,
               what="the slow request to be in flight")
    status, hdrs, body = http_request(px.cell_http, "GET", "/strict/y")
    assert status == 503 and hdrs["x-metrocell-failure-cause"] == "overloaded", body
    assert "max_outstanding 1" in json.loads(body)["message"]
    status, hdrs, body = http_request(px.cell_http, "GET", "/open5/y")
    assert status == 200 and hdrs["x-metrocell-outcome"] == "fallback"
    th.join(timeout=10)
    assert res["slow"][0] == 200
    text = px.metrics()
    assert px.metric("metrocell_failure_policy_total",
                     ['cause="overloaded"', 'action="fail_closed"'], text) == 1
    assert px.metric("metrocell_failure_policy_total",
                     ['cause="overloaded"', 'action="fail_open"'], text) == 1


def test_region_without_fallback_answers_fallback_requests_with_an_error(procs, tmp_path,
                                                                         metrocell_bin):
    px = Px(procs, tmp_path, metrocell_bin, nworkers=1, region_fallback=False,
            routes=[route("open", "/open/", on_failure="fail_open")])
    px.start_region()
    status, hdrs, body = http_request(px.region_http, "GET", "/anything",
                                      headers={"X-Metrocell-Fallback-From": "lax"})
    assert status == 503 and hdrs["x-metrocell-fallback-error"] == "no_fallback"
    assert json.loads(body)["error"] == "no_fallback"
    status, hdrs, body = http_request(px.region_http, "GET", "/anything",
                                      headers={"X-Metrocell-Fallback-From": "Not A Cell"})
    assert status == 403 and hdrs["x-metrocell-fallback-error"] == "unknown_cell"
    text = px.metrics(px.region_http)
    assert px.metric("metrocell_region_fallback_requests_total",
                     ['cell="invalid"', 'result="failed"'], text) == 1
    px.start_cell()
    status, hdrs, body = http_request(px.cell_http, "GET", "/open/x")
    assert status == 502
    doc = json.loads(body)
    assert doc["error"] == "fallback_failed"
    assert doc["message"].endswith("region fallback: upstream_error: region answered 503 "
                                   "(no_fallback)"), doc["message"]
