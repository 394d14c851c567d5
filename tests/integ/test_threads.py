"""A cell with several data-plane threads (config "threads"), as real processes on
127.0.0.1: every thread's SO_REUSEPORT listener gets connections, proxy requests
are served by the thread that accepted them, KV requests of every thread go
through the one store, quota buckets are shared, /metrics adds the threads up,
a second process cannot join the port, and SIGTERM drains every thread.
Assertions are on wire bytes, metric lines and exit codes."""

import json
import os
import signal
import socket
import threading
import time

from conftest import free_port, http_request
from edgeutil import edge_cluster, metric, metrics, raw_exchange, split_response, start

THREADS = 3


def threaded(n=THREADS, extra=None):
    def mutate(conf):
        conf["threads"] = n
        if extra:
            extra(conf)
    return mutate


def get_close(c, path, headers=""):
    """One request on its own connection (a new 4-tuple: any thread may get it)."""
    return split_response(raw_exchange(
        c.cell_http, ("GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                      % (path, headers)).encode()))


def per_thread(text, n=THREADS):
    return [metric(None, 'metrocell_thread_requests_total{cell="lax",thread="%d"}' % i, text)
            for i in range(n)]


def test_every_thread_serves_and_metrics_add_up(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, threaded()))
    assert "threads=%d" % THREADS in c.cellp.line
    assert c.status()["threads"] == THREADS
    n = 120
    for i in range(n):
        status, hdrs, body = get_close(c, "/app/t%d" % i)
        assert status == "HTTP/1.1 200 OK", (i, status, body)
        assert hdrs["x-metrocell-route"] == "app"
    text = metrics(c)
    counts = per_thread(text)
    # the kernel hashes each connection's 4-tuple onto one of the listeners:
    # 120 connections all landing on one of three is about 3^-119 unlikely
    assert all(x and x > 0 for x in counts), counts
    assert sum(counts) == n
    # one /metrics for the whole cell: the route counter is the sum of threads
    assert metric(c, 'metrocell_requests_total{cell="lax",route="app",outcome="local"}',
                  text) == n
    assert metric(c, 'metrocell_request_duration_seconds_count{cell="lax",route="app",'
                     'outcome="local"}', text) == n
    # the route's first request is one cold start, whichever thread saw it
    assert metric(c, 'metrocell_cold_starts_total{cell="lax",kind="first_request"}',
                  text) == 1


def test_kv_from_every_thread_goes_through_one_store(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, threaded()))
    n = 60
    for i in range(n):
        key = "user-%d" % (i % 7)
        raw = raw_exchange(c.cell_http, (
            "PUT /v1/kv/%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\nv%d" % (key, len("v%d" % i), i)).encode())
        status, hdrs, body = split_response(raw)
        assert status == "HTTP/1.1 200 OK", raw
        assert hdrs["x-metrocell-route"] == "kv"
        assert hdrs["x-metrocell-cell"] == "lax"
    # every thread reads the last write of each key, and versions never go back
    for k in range(7):
        last = max(i for i in range(n) if i % 7 == k)
        seen = set()
        for _ in range(6):
            status, hdrs, body = get_close(c, "/v1/kv/user-%d" % k)
            assert status == "HTTP/1.1 200 OK"
            assert body == b"v%d" % last
            seen.add(hdrs["x-metrocell-version"])
        assert len(seen) == 1
    text = metrics(c)
    assert all(x and x > 0 for x in per_thread(text)), per_thread(text)
    assert metric(c, 'metrocell_requests_total{cell="lax",route="kv",outcome="local"}',
                  text) == n + 7 * 6
    assert metric(c, 'metrocell_state_writes_total{cell="lax"}', text) == n
    # the region got every write
    from conftest import wait_until

    def region_has():
        st, _, b = http_request(c.region_http, "GET", "/v1/kv/user-6")
        return st == 200 and b == b"v%d" % max(i for i in range(n) if i % 7 == 6)
    wait_until(region_has, what="the region has the last write")


def test_quota_buckets_are_shared_by_threads(procs, tmp_path, metrocell_bin):
    def quota(conf):
        conf["routes"][0]["quota"] = {"name": "api", "rate": 0.01, "burst": 5,
                                      "key": "header:X-User"}
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, threaded(extra=quota)))
    statuses = [get_close(c, "/app/x", "X-User: alice\r\n")[0] for _ in range(30)]
    assert statuses.count("HTTP/1.1 200 OK") == 5, statuses
    assert statuses.count("HTTP/1.1 429 Too Many Requests") == 25, statuses
    text = metrics(c)
    assert all(x and x > 0 for x in per_thread(text)), per_thread(text)
    assert metric(c, 'metrocell_quota_requests_total{cell="lax",quota="api",result="allowed"}',
                  text) == 5
    assert metric(c, 'metrocell_quota_requests_total{cell="lax",quota="api",result="limited"}',
                  text) == 25
    assert metric(c, 'metrocell_quota_buckets{cell="lax",quota="api"}', text) == 1


def test_second_process_cannot_join_the_port(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, threaded()))
    with open(c.cell_conf) as f:
        conf = json.load(f)
    conf["cell"] = "sfo"
    conf["listen"]["admin"] = "127.0.0.1:%d" % free_port()
    conf["data_dir"] = os.path.join(str(tmp_path), "sfo-data")
    path = os.path.join(str(tmp_path), "sfo.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    import subprocess
    p = subprocess.run([metrocell_bin, "cell", "-c", path], capture_output=True, timeout=30)
    assert p.returncode == 1
    assert b"cannot listen on %s (listen.http): Address already in use" % c.cell_http.encode() \
        in p.stderr, p.stderr
    # the running cell still owns every connection
    for i in range(20):
        status, hdrs, _ = get_close(c, "/app/y%d" % i)
        assert hdrs["x-metrocell-cell"] == "lax"


def test_sigterm_drains_requests_on_every_thread(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, threaded(), work_ms=600))
    results = {}

    def slow(i):
        results[i] = raw_exchange(c.cell_http, (
            "GET /app/slow%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % i).encode(),
            timeout=10)

    clients = [threading.Thread(target=slow, args=(i,)) for i in range(12)]
    for t in clients:
        t.start()
    time.sleep(0.3)  # all twelve are with the worker now
    os.kill(c.cellp.pid, signal.SIGTERM)
    for t in clients:
        t.join(15)
    assert c.cellp.popen.wait(timeout=15) == 0
    for i in range(12):
        status, hdrs, body = split_response(results[i])
        assert status == "HTTP/1.1 200 OK", (i, results[i])
        assert hdrs["connection"] == "close"
    # nothing listens any more on the shared port
    s = socket.socket()
    try:
        assert s.connect_ex(("127.0.0.1", int(c.cell_http.rsplit(":", 1)[1]))) != 0
    finally:
        s.close()


def test_config_pushes_under_load_reach_every_thread(procs, tmp_path, metrocell_bin):
    """Six fleet config versions pushed while clients keep every thread busy: no
    request fails, and each version is served by every thread (fresh connections
    land on all of them). Run under TSan by `make tsan` too."""
    from test_fleet import CELLS, Fleet

    f = Fleet(procs, tmp_path, metrocell_bin)
    for name in CELLS:
        f.cell_extra[name] = {"threads": THREADS}
    f.worker("a")
    f.worker("b")
    f.start_all()
    lax = f.cells["lax"]["http"]
    errors, done = [], threading.Event()

    def client(k):
        n = 0
        while not done.is_set() and n < 3000:
            n += 1
            try:
                raw = raw_exchange(lax, ("GET /load%d HTTP/1.1\r\nHost: t\r\n"
                                         "Connection: close\r\n\r\n" % k).encode())
                status, _, body = split_response(raw)
                if status != "HTTP/1.1 200 OK":
                    errors.append((status, body[:200]))
            except OSError as e:
                errors.append(("exception", repr(e)))

    clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in clients:
        t.start()
    try:
        for v in range(6):
            worker = "ab"[v % 2]
            color = "c%d" % v
            f.push(f.doc(worker, flags={"color": color}), name="fleet%d.json" % v)

            def every_thread_serves():
                seen = set()
                for _ in range(8 * THREADS):
                    status, _, body = split_response(raw_exchange(
                        lax, b"GET /flags/color HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
                    seen.add((status, body))
                return seen == {("HTTP/1.1 200 OK", b'{"name":"color","value":"%s"}\n'
                                 % color.encode())} or None
            from conftest import wait_until
            wait_until(every_thread_serves, timeout=5, what="version %d on every thread" % v)
    finally:
        done.set()
        for t in clients:
            t.join(30)
    assert not errors, errors[:5]
    text = metrics(type("C", (), {"cell_admin": f.cells["lax"]["admin"]})())
    assert all(x and x > 0 for x in per_thread(text)), per_thread(text)
    assert metric(None, 'metrocell_config_version{cell="lax"}', text) == 6
    # /v1/status: the version each thread serves
    assert f.status("lax")["thread_versions"] == [6] * THREADS
