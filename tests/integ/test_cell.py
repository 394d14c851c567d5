"""End-to-end tests of the walking skeleton: a region, a cell and sample workers
as real processes on 127.0.0.1, asserting on what comes over the wire and on
disk."""

import json
import os
import threading

import pytest

from conftest import free_port, http_json, http_request, wait_until


class Cluster:
    """Writes configs and starts a region, workers and one cell on free ports."""

    def __init__(self, procs, tmp_path, binary, cell="lax", nworkers=2, link_delay_ms=None,
                 work_ms=0):
        self.work_ms = work_ms
        self.procs = procs
        self.tmp = tmp_path
        self.bin = binary
        self.cell = cell
        self.region_http = "127.0.0.1:%d" % free_port()
        self.region_repl = "127.0.0.1:%d" % free_port()
        self.cell_http = "127.0.0.1:%d" % free_port()
        self.cell_admin = "127.0.0.1:%d" % free_port()
        self.workers = ["127.0.0.1:%d" % free_port() for _ in range(nworkers)]
        self.region_dir = os.path.join(str(tmp_path), "region-data")
        self.cell_dir = os.path.join(str(tmp_path), "%s-data" % cell)
        self.region_conf = os.path.join(str(tmp_path), "region.json")
        self.cell_conf = os.path.join(str(tmp_path), "%s.json" % cell)
        # Optionally the cell reaches the region through a `metrocell link` relay.
        self.link_delay_ms = link_delay_ms
        self.link_listen = "127.0.0.1:%d" % free_port()
        self.link_admin = "127.0.0.1:%d" % free_port()
        cell_repl = self.link_listen if link_delay_ms is not None else self.region_repl
        with open(self.region_conf, "w") as f:
            json.dump({"region": "us-west",
                       "listen": {"http": self.region_http, "repl": self.region_repl},
                       "data_dir": self.region_dir,
                       "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000}}, f, indent=2)
        with open(self.cell_conf, "w") as f:
            json.dump({"cell": cell,
                       "listen": {"http": self.cell_http, "admin": self.cell_admin},
                       "data_dir": self.cell_dir,
                       "region": {"repl": cell_repl, "http": self.region_http},
                       "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000},
                       "pools": {"app": {"workers": self.workers, "timeout_ms": 5000}},
                       "routes": [{"name": "app", "prefix": "/app/", "kind": "proxy", "pool": "app"},
                                  {"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}, f, indent=2)
        self.region = None
        self.cellp = None
        self.worker_procs = []

    def start_region(self):
        self.region = self.procs.start([self.bin, "region", "-c", self.region_conf], "region",
                                       ready="region us-west ready")
        return self.region

    def start_workers(self):
        for i, w in enumerate(self.workers):
            self.worker_procs.append(self.procs.start(
                [self.bin, "sample-worker", "--listen", w, "--name", "w%d" % i,
                 "--work-ms", str(self.work_ms)],
                "worker%d" % i, ready="listening"))

    def start_cell(self):
        self.cellp = self.procs.start([self.bin, "cell", "-c", self.cell_conf], self.cell,
                                      ready="cell %s ready" % self.cell)
        return self.cellp

    def start_link(self):
        return self.procs.start([self.bin, "link", "--listen", self.link_listen, "--to",
                                 self.region_repl, "--delay", str(self.link_delay_ms),
                                 "--admin", self.link_admin, "--name", "lax-region"],
                                "link", ready="link lax-region listening")

    def start_all(self):
        self.start_region()
        if self.link_delay_ms is not None:
            self.start_link()
        self.start_workers()
        self.start_cell()
        return self

    def status(self):
        return http_json(self.cell_admin, "GET", "/v1/status")[2]

    def put(self, key, value):
        status, hdrs, body = http_request(self.cell_http, "PUT", "/v1/kv/" + key, body=value)
        assert status == 200, (status, body)
        doc = json.loads(body)
        assert doc["version"] == hdrs["x-metrocell-version"]
        return doc

    def region_get(self, key):
        return http_request(self.region_http, "GET", "/v1/kv/" + key)

    def wait_replicated(self, timeout=10.0):
        def caught_up():
            st = self.status()["replication"]
            return st["connected"] and st["acked_seq"] == st["last_seq"] and st
        return wait_until(caught_up, timeout=timeout, what="replication to catch up")


@pytest.fixture
def cluster(procs, tmp_path, metrocell_bin):
    return Cluster(procs, tmp_path, metrocell_bin)


def test_proxy_returns_worker_body_and_cell_headers(cluster):
    cluster.start_all()
    seen = set()
    for i in range(20):
        status, hdrs, body = http_request(cluster.cell_http, "GET", "/app/items/%d?x=1" % i)
        assert status == 200
        doc = json.loads(body)
        assert doc["path"].startswith("/app/items/%d" % i)
        assert hdrs["x-worker"] == doc["worker"]
        seen.add(doc["worker"])
        assert hdrs["x-metrocell-cell"] == "lax"
        assert hdrs["x-metrocell-outcome"] == "local"
        assert hdrs["x-metrocell-route"] == "app"
        assert hdrs["server-timing"].startswith("edge;dur=")
        assert "upstream;dur=" in hdrs["server-timing"]
    assert seen == {"w0", "w1"}, "requests must be spread over both workers"
    # no route: refused with a JSON error and the same headers
    status, hdrs, body = http_request(cluster.cell_http, "GET", "/nowhere")
    assert status == 404
    assert json.loads(body)["error"] == "no_route"
    assert hdrs["x-metrocell-outcome"] == "refused"
    # the admin listener counts them by route and outcome
    status, _, metrics = http_request(cluster.cell_admin, "GET", "/metrics")
    text = metrics.decode()
    assert 'metrocell_requests_total{cell="lax",route="app",outcome="local"} 20' in text
    assert 'metrocell_requests_total{cell="lax",route="-",outcome="refused"} 1' in text
    assert 'metrocell_request_duration_seconds_count{cell="lax",route="app",outcome="local"} 20' in text
    assert 'metrocell_request_duration_seconds_bucket{cell="lax",route="app",outcome="local",le="+Inf"} 20' in text


def test_worker_killed_idempotent_requests_retry_on_the_other(cluster):
    cluster.start_all()
    for i in range(10):  # warm both keep-alive pools
        assert http_request(cluster.cell_http, "GET", "/app/warm%d" % i)[0] == 200
    cluster.worker_procs[0].kill9()
    workers = set()
    for i in range(40):
        status, hdrs, body = http_request(cluster.cell_http, "GET", "/app/after%d" % i)
        assert status == 200, body
        workers.add(json.loads(body)["worker"])
    assert workers == {"w1"}
    # a non-idempotent request is not retried: either it reached w1 or it failed
    # (the route fails closed by default) with a JSON 503 naming the dead worker,
    # never a silent duplicate
    for i in range(10):
        status, hdrs, body = http_request(cluster.cell_http, "POST", "/app/p%d" % i, body=b"x")
        if status != 200:
            doc = json.loads(body)
            assert status == 503 and doc["error"] == "upstream_unavailable", body
            assert cluster.workers[0] in doc["message"]
            assert hdrs["x-metrocell-outcome"] == "refused"
            assert hdrs["x-metrocell-failure-cause"] in ("connect_failed", "upstream_error")
    cluster.worker_procs[1].kill9()
    status, hdrs, body = http_request(cluster.cell_http, "GET", "/app/none")
    assert status == 503 and hdrs["x-metrocell-outcome"] == "refused"
    doc = json.loads(body)
    assert doc["error"] == "upstream_unavailable"
    cause = hdrs["x-metrocell-failure-cause"]
    assert cause in ("connect_failed", "upstream_error", "no_healthy_worker")
    assert doc["message"].startswith(cause + ": ")


def test_sigterm_drains_requests_in_flight(procs, tmp_path, metrocell_bin):
    import signal
    import socket
    import time
    c = Cluster(procs, tmp_path, metrocell_bin, work_ms=1500).start_all()
    result = {}

    def slow():
        result["resp"] = http_request(c.cell_http, "GET", "/app/slow", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.4)  # the request is at the worker now
    idle = socket.create_connection(("127.0.0.1", int(c.cell_http.rsplit(":", 1)[1])))
    time.sleep(0.1)
    os.kill(c.cellp.pid, signal.SIGTERM)
    time.sleep(0.3)
    # not accepting any more, and an idle keep-alive connection is closed at once
    try:
        socket.create_connection(("127.0.0.1", int(c.cell_http.rsplit(":", 1)[1])), timeout=1).close()
        refused = False
    except OSError:
        refused = True
    assert refused, "the listener must close on SIGTERM"
    idle.settimeout(2)
    assert idle.recv(10) == b""
    idle.close()
    assert c.cellp.alive(), "the cell waits for the request in flight"
    t.join(timeout=10)
    status, hdrs, body = result["resp"]
    assert status == 200 and json.loads(body)["path"] == "/app/slow"
    assert hdrs["connection"] == "close"
    c.cellp.popen.wait(timeout=10)
    assert c.cellp.popen.returncode == 0


def test_kv_roundtrip_and_errors(cluster):
    cluster.start_all()
    doc = cluster.put("session:abc", b"hello world")
    assert doc["home"] == "lax" and doc["seq"] == 1
    status, hdrs, body = http_request(cluster.cell_http, "GET", "/v1/kv/session:abc")
    assert status == 200 and body == b"hello world"
    assert hdrs["x-metrocell-version"] == doc["version"]
    assert hdrs["x-metrocell-home"] == "lax"
    assert hdrs["x-metrocell-outcome"] == "local"
    assert "state;dur=" in hdrs["server-timing"]
    status, hdrs, body = http_request(cluster.cell_http, "HEAD", "/v1/kv/session:abc")
    assert status == 200 and body == b"" and hdrs["content-length"] == "11"
    assert hdrs["x-metrocell-version"] == doc["version"]
    doc2 = cluster.put("session:abc", b"v2")
    assert int(doc2["version"]) > int(doc["version"])
    status, _, body = http_request(cluster.cell_http, "DELETE", "/v1/kv/session:abc")
    assert status == 200 and json.loads(body)["deleted"] is True
    status, _, body = http_request(cluster.cell_http, "GET", "/v1/kv/session:abc")
    assert status == 404 and json.loads(body)["error"] == "not_found"
    status, _, body = http_request(cluster.cell_http, "GET", "/v1/kv/" + "k" * 300)
    assert status == 400 and json.loads(body)["error"] == "bad_key"
    status, _, body = http_request(cluster.cell_http, "GET", "/v1/kv/bad%zz")
    assert status == 400
    status, hdrs, body = http_request(cluster.cell_http, "POST", "/v1/kv/x", body=b"1")
    assert status == 405 and "PUT" in hdrs["allow"]
    # a body over limits.max_body_bytes is refused by the HTTP layer, with the cell's headers
    status, hdrs, body = http_request(cluster.cell_http, "PUT", "/v1/kv/big", body=b"x" * (1 << 21))
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"
    assert hdrs["x-metrocell-cell"] == "lax" and hdrs["x-metrocell-outcome"] == "refused"
    assert "server-timing" in hdrs
    text = http_request(cluster.cell_admin, "GET", "/metrics")[2].decode()
    assert 'metrocell_http_rejected_total{cell="lax",status="413"} 1' in text


def test_put_reaches_region_with_version_and_home(cluster):
    cluster.start_all()
    doc = cluster.put("user:42", b'{"plan":"pro"}')

    def in_region():
        status, hdrs, body = cluster.region_get("user:42")
        return status == 200 and (hdrs, body)
    hdrs, body = wait_until(in_region, timeout=2.0, what="the write in the region")
    assert body == b'{"plan":"pro"}'
    assert hdrs["x-metrocell-version"] == doc["version"]
    assert hdrs["x-metrocell-home"] == "lax"
    status, _, body = cluster.region_get("user:unknown")
    assert status == 404


def test_region_down_cell_serves_and_catches_up_in_order(cluster):
    cluster.start_all()
    cluster.put("warm", b"1")
    cluster.wait_replicated()
    cluster.region.stop()
    acked = {}
    for i in range(200):
        key = "k%d" % (i % 50)  # 4 writes per key: the region must end with the last
        acked[key] = (cluster.put(key, ("v%d" % i).encode()), "v%d" % i)
        if i % 20 == 0:
            status, _, _ = http_request(cluster.cell_http, "GET", "/app/x")
            assert status == 200
    for key, (doc, val) in acked.items():
        status, _, body = http_request(cluster.cell_http, "GET", "/v1/kv/" + key)
        assert status == 200 and body.decode() == val
    st = cluster.status()["replication"]
    assert st["connected"] is False
    assert st["lag_entries"] >= 200
    cluster.start_region()
    st = cluster.wait_replicated(timeout=15.0)
    assert st["lag_entries"] == 0
    for key, (doc, val) in acked.items():
        status, hdrs, body = cluster.region_get(key)
        assert status == 200 and body.decode() == val
        assert hdrs["x-metrocell-version"] == doc["version"]
    rs = http_json(cluster.region_http, "GET", "/v1/status")[2]
    lax = [c for c in rs["cells"] if c["cell"] == "lax"][0]
    assert lax["applied_seq"] == st["last_seq"] == 201


def test_partition_through_link_then_catch_up(procs, tmp_path, metrocell_bin):
    c = Cluster(procs, tmp_path, metrocell_bin, link_delay_ms=20).start_all()
    first = c.put("p:first", b"0")
    c.wait_replicated()
    status, hdrs, _ = c.region_get("p:first")
    assert status == 200 and hdrs["x-metrocell-version"] == first["version"]
    lag = c.status()["replication"]
    assert lag["lag_count"] >= 1 and lag["lag_p50_ms"] >= 40.0  # two 20 ms hops at least
    status, _, _ = http_request(c.link_admin, "POST", "/cut")
    assert status == 200
    wait_until(lambda: not c.status()["replication"]["connected"], timeout=5.0,
               what="the cell to notice the cut")
    acked = [c.put("p:%d" % i, b"during-partition-%d" % i) for i in range(100)]
    status, _, body = http_request(c.cell_http, "GET", "/app/during")
    assert status == 200 and json.loads(body)["path"] == "/app/during"
    status, _, _ = c.region_get("p:0")
    assert status == 404, "nothing crosses a cut link"
    st = c.status()["replication"]
    assert st["lag_entries"] == 100 and st["oldest_unacked_ms"] > 0
    status, _, _ = http_request(c.link_admin, "POST", "/restore")
    assert status == 200
    st = c.wait_replicated(timeout=15.0)
    assert st["reconnects"] >= 1
    for i, doc in enumerate(acked):
        status, hdrs, body = c.region_get("p:%d" % i)
        assert status == 200 and body == b"during-partition-%d" % i
        assert hdrs["x-metrocell-version"] == doc["version"]


def test_sigkill_after_acked_writes_loses_nothing(cluster):
    cluster.start_all()
    n_threads, per_thread = 8, 150  # 1,200 acknowledged writes
    acked = {}
    lock = threading.Lock()
    errors = []

    def writer(t):
        try:
            for i in range(per_thread):
                key = "crash:%d:%d" % (t, i)
                doc = cluster.put(key, ("value-%d-%d" % (t, i)).encode())
                with lock:
                    acked[key] = doc["version"]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(acked) >= 1000
    cluster.cellp.kill9()
    cluster.start_cell()
    for key, version in acked.items():
        t, i = key.split(":")[1:]
        status, hdrs, body = http_request(cluster.cell_http, "GET", "/v1/kv/" + key)
        assert status == 200, key
        assert body.decode() == "value-%s-%s" % (t, i)
        assert hdrs["x-metrocell-version"] == version
    cluster.wait_replicated(timeout=20.0)
    for key, version in acked.items():
        status, hdrs, _ = cluster.region_get(key)
        assert status == 200 and hdrs["x-metrocell-version"] == version, key


def test_bad_config_exits_with_precise_message_and_writes_nothing(procs, tmp_path, metrocell_bin):
    import subprocess
    data_dir = os.path.join(str(tmp_path), "data")
    conf = os.path.join(str(tmp_path), "cell.json")
    with open(conf, "w") as f:
        f.write('{\n  "cell": "lax",\n  "listen": {"http": 42, "admin": "127.0.0.1:0"},\n'
                '  "data_dir": "%s",\n  "region": {"repl": "127.0.0.1:1"},\n'
                '  "routes": [{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]\n}\n' % data_dir)
    r = subprocess.run([metrocell_bin, "cell", "-c", conf], capture_output=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.decode().strip() == \
        'metrocell cell: %s:3:22: listen.http: expected "host:port", got 42' % conf
    assert not os.path.exists(data_dir)
    # an unknown key in the region config
    rconf = os.path.join(str(tmp_path), "region.json")
    with open(rconf, "w") as f:
        f.write('{"region": "r", "listen": {"http": "127.0.0.1:0", "repl": "127.0.0.1:0"},\n'
                ' "data_dir": "%s", "replicaton": {}}\n' % data_dir)
    r = subprocess.run([metrocell_bin, "region", "-c", rconf], capture_output=True, timeout=30)
    assert r.returncode == 2
    msg = r.stderr.decode().strip()
    assert msg.startswith("metrocell region: %s:2:" % rconf), msg
    assert msg.endswith('(root): unknown key "replicaton" (did you mean "replication"?)'), msg
    assert not os.path.exists(data_dir)
    r = subprocess.run([metrocell_bin, "cell"], capture_output=True, timeout=30)
    assert r.returncode == 2 and b"missing -c FILE" in r.stderr


def test_cli_help_and_version(metrocell_bin):
    import subprocess
    r = subprocess.run([metrocell_bin, "--version"], capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.decode().startswith("metrocell ")
    r = subprocess.run([metrocell_bin, "--help"], capture_output=True, timeout=30)
    out = r.stdout.decode()
    for sub in ("region", "cell", "link", "sample-worker", "sample-origin", "demo"):
        assert "\n  %s " % sub in out
    r = subprocess.run([metrocell_bin, "help", "cell"], capture_output=True, timeout=30)
    assert r.returncode == 0 and b"-c, --config FILE" in r.stdout
    r = subprocess.run([metrocell_bin, "nope"], capture_output=True, timeout=30)
    assert r.returncode == 2 and b'unknown subcommand "nope"' in r.stderr


def test_proxy_forwarding_headers(procs, tmp_path, metrocell_bin):
    """What crosses the proxy: hop-by-hop headers dropped, X-Forwarded-* added
    (the client's chain extended), every response header of the worker passed
    back, however many."""
    import http.server
    import socketserver

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_response(200)
            for i in range(50):
                self.send_header("X-Many-%d" % i, str(i))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    srv.daemon_threads = True
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        c = Cluster(procs, tmp_path, metrocell_bin, nworkers=1)
        c.workers[0] = "127.0.0.1:%d" % srv.server_address[1]
        with open(c.cell_conf) as f:
            conf = json.load(f)
        conf["pools"]["app"]["workers"] = c.workers
        with open(c.cell_conf, "w") as f:
            json.dump(conf, f)
        c.start_region()
        c.start_cell()
        status, hdrs, body = http_request(c.cell_http, "GET", "/app/h", headers={
            "X-Forwarded-For": "203.0.113.7", "Keep-Alive": "timeout=5", "X-App": "a",
            "X-Forwarded-Proto": "https"})
        assert status == 200
        seen = json.loads(body)
        assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"  # the client's own claim is replaced
        assert seen["x-forwarded-host"] == c.cell_http
        assert seen["x-metrocell-cell"] == "lax"
        assert seen["x-app"] == "a"
        assert "keep-alive" not in seen
        for i in range(50):
            assert hdrs["x-many-%d" % i] == str(i)
        assert hdrs["x-metrocell-outcome"] == "local"
        # more request fields than the proxy holds without an allocation, then
        # few again (its per-request state is reused)
        many = {"X-Req-%d" % i: "v%d" % i for i in range(40)}
        for fields in (many, {"X-App": "b"}, many):
            status, _, body = http_request(c.cell_http, "GET", "/app/h", headers=fields)
            assert status == 200
            seen = json.loads(body)
            for k, v in fields.items():
                assert seen[k.lower()] == v
            assert seen["x-forwarded-for"] == "127.0.0.1"
            assert len([k for k in seen if k.startswith("x-req-")]) == \
                (40 if fields is many else 0)
    finally:
        srv.shutdown()
        srv.server_close()


def test_region_sigkill_mid_stream_loses_nothing(cluster):
    """The region acknowledges only what it committed: killed while entries are in
    flight, it restarts, the cell resends what was not acknowledged, replays are
    skipped, and every acknowledged write ends up in the region."""
    cluster.start_all()
    acked = {}
    lock = threading.Lock()

    def writer(t):
        for i in range(150):
            key = "rk:%d:%d" % (t, i)
            doc = cluster.put(key, b"v-%d-%d" % (t, i))
            with lock:
                acked[key] = doc["version"]

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    wait_until(lambda: len(acked) >= 200, timeout=20, what="writes to flow")
    cluster.region.kill9()
    for th in threads:
        th.join()
    assert len(acked) == 600
    cluster.start_region()
    cluster.wait_replicated(timeout=20.0)
    for key, version in acked.items():
        status, hdrs, _ = cluster.region_get(key)
        assert status == 200 and hdrs["x-metrocell-version"] == version, key
    rs = http_json(cluster.region_http, "GET", "/v1/status")[2]
    lax = [x for x in rs["cells"] if x["cell"] == "lax"][0]
    assert lax["applied_seq"] == cluster.status()["replication"]["last_seq"] == 600


def _echo_worker(handler_cls):
    import socketserver
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler_cls)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _cell_with_workers(procs, tmp_path, metrocell_bin, addrs):
    c = Cluster(procs, tmp_path, metrocell_bin, nworkers=len(addrs))
    c.workers = list(addrs)
    with open(c.cell_conf) as f:
        conf = json.load(f)
    conf["pools"]["app"]["workers"] = c.workers
    with open(c.cell_conf, "w") as f:
        json.dump(conf, f)
    return c


def test_proxy_connection_tokens_and_head_length(procs, tmp_path, metrocell_bin):
    """Fields named in Connection are hop-by-hop in both directions (RFC 9110
    7.6.1), and a relayed HEAD keeps the worker's Content-Length instead of
    announcing the empty body it relays."""
    import http.server
    import socket

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, with_body):
            body = json.dumps({k.lower(): ", ".join(self.headers.get_all(k))
                               for k in self.headers.keys()}).encode()
            if self.path == "/app/fixed":
                body = b"f" * 1234
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "X-Hop, keep-alive")
            self.send_header("X-Hop", "worker-side hop-by-hop")
            self.send_header("X-End", "end-to-end")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

        def log_message(self, *args):
            pass

    srv = _echo_worker(Echo)
    try:
        c = _cell_with_workers(procs, tmp_path, metrocell_bin,
                               ["127.0.0.1:%d" % srv.server_address[1]])
        c.start_region()
        c.start_cell()
        status, hdrs, body = http_request(c.cell_http, "GET", "/app/c", headers={
            "Connection": "X-Secret", "X-Secret": "client-side hop-by-hop", "X-App": "a",
            "X-Metrocell-Cell": "spoofed", "X-Forwarded-Host": "spoofed.example"})
        assert status == 200
        seen = json.loads(body)
        assert "x-secret" not in seen and seen["x-app"] == "a"
        # fields the cell sets are the cell's alone (the echo joins every copy)
        assert seen["x-metrocell-cell"] == "lax" and seen["x-forwarded-host"] == c.cell_http
        assert "x-hop" not in hdrs and hdrs["x-end"] == "end-to-end"
        assert int(hdrs["content-length"]) == len(body)

        host, port = c.cell_http.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"HEAD /app/fixed HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /app/fixed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, rest = data.split(b"\r\n\r\n", 1)
        head_hdrs = {ln.split(b":", 1)[0].strip().lower(): ln.split(b":", 1)[1].strip()
                     for ln in head.split(b"\r\n")[1:]}
        assert head.startswith(b"HTTP/1.1 200")
        assert head_hdrs[b"content-length"] == b"1234"
        assert b"x-hop" not in head_hdrs
        # no body after the HEAD answer: the next bytes are the GET's status line
        assert rest.startswith(b"HTTP/1.1 200")
        assert rest.endswith(b"\r\n\r\n" + b"f" * 1234)
    finally:
        srv.shutdown()
        srv.server_close()


def test_proxy_retry_time_counts_as_upstream(procs, tmp_path, metrocell_bin):
    """When the first worker fails after a while and the request is retried on
    the other, Server-Timing puts the whole upstream time (both attempts) in the
    upstream segment, not in the cell's own edge time."""
    import socket
    import time

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    stop = []

    def bad_worker():
        lst.settimeout(0.2)
        while not stop:
            try:
                conn, _ = lst.accept()
            except OSError:
                continue
            conn.recv(65536)
            time.sleep(0.4)
            conn.close()

    th = threading.Thread(target=bad_worker, daemon=True)
    th.start()
    try:
        good = "127.0.0.1:%d" % free_port()
        c = _cell_with_workers(procs, tmp_path, metrocell_bin,
                               ["127.0.0.1:%d" % lst.getsockname()[1], good])
        procs.start([metrocell_bin, "sample-worker", "--listen", good, "--name", "good"],
                    "good", ready="listening")
        c.start_region()
        c.start_cell()
        retried = 0
        for i in range(4):
            t0 = time.time()
            status, hdrs, body = http_request(c.cell_http, "GET", "/app/r%d" % i)
            took_ms = (time.time() - t0) * 1000
            assert status == 200 and json.loads(body)["worker"] == "good"
            seg = dict(p.strip().split(";dur=") for p in hdrs["server-timing"].split(","))
            if took_ms >= 380:
                retried += 1
                assert float(seg["upstream"]) >= 380, hdrs["server-timing"]
                assert float(seg["edge"]) < 100, hdrs["server-timing"]
        assert retried >= 1, "no request went to the failing worker first"
    finally:
        stop.append(1)
        th.join(timeout=5)
        lst.close()
