"""Hostile HTTP/1.1 clients against a running cell (ASan build): random mixes of
valid, malformed, smuggling-shaped, oversized and truncated requests, split at
random byte boundaries, pipelined, and abandoned mid-way. The cell must keep
answering well-formed requests and exit cleanly afterwards (the procs fixture fails the test on a sanitizer
report or a leak)."""

import json
import random
import socket
import threading

from conftest import http_json, http_request
from test_cell import Cluster

REQUESTS = [
    b"GET /app/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /v1/kv/chaos HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /v1/kv/chaos HTTP/1.1\r\n\r\n",
    b"PUT /v1/kv/c2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET /app/d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /app/e HTTP/1.1\r\n\r\n",
    b"POST /app/f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"BAD\r\n\r\n",
    b"POST /app/smuggle HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /app/smuggle2 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GET /app/" + b"x" * 20000 + b" HTTP/1.1\r\n\r\n",
    b"PUT /v1/kv/big HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nabc",
    b"DELETE /v1/kv/chaos HTTP/1.1\r\n\r\n",
    b"GET /v1/kv/%zz HTTP/1.1\r\n\r\n",
]


def hostile_client(port, seed):
    rnd = random.Random(seed)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        data = b"".join(rnd.choice(REQUESTS) for _ in range(rnd.randint(1, 6)))
        if rnd.random() < 0.3:
            data = data[:rnd.randint(1, len(data))]
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, 64)
            s.sendall(data[pos:pos + n])
            pos += n
        if rnd.random() < 0.4:
            s.close()  # abandoned before reading
            return
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()
    except OSError:
        pass


def test_hostile_clients_do_not_hurt_the_cell(procs, tmp_path, metrocell_bin):
    c = Cluster(procs, tmp_path, metrocell_bin).start_all()
    port = int(c.cell_http.rsplit(":", 1)[1])
    for round_ in range(3):
        threads = [threading.Thread(target=hostile_client, args=(port, round_ * 1000 + i))
                   for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        # still healthy: a proxy request and a KV round trip
        status, hdrs, body = http_request(c.cell_http, "GET", "/app/after-%d" % round_)
        assert status == 200 and json.loads(body)["path"] == "/app/after-%d" % round_
        status, _, _ = http_request(c.cell_http, "PUT", "/v1/kv/ok%d" % round_, body=b"v")
        assert status == 200
    # malformed and smuggling-shaped requests were refused by the HTTP layer
    text = http_request(c.cell_admin, "GET", "/metrics")[2].decode()
    assert 'metrocell_http_rejected_total{cell="lax",status="400"}' in text
    st = http_json(c.cell_admin, "GET", "/v1/status")[2]
    assert st["cell"] == "lax"


def raw_exchange(port, data, timeout=3.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    s.close()
    return out


def test_smuggling_vectors_are_refused_and_never_forwarded(procs, tmp_path, metrocell_bin):
    c = Cluster(procs, tmp_path, metrocell_bin, nworkers=1).start_all()
    port = int(c.cell_http.rsplit(":", 1)[1])

    def worker_count():
        status, _, body = http_request(c.cell_http, "GET", "/app/count")
        assert status == 200
        return json.loads(body)["n"]

    before = worker_count()
    vectors = [
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"GET /app/x HTTP/1.1\nHost: a\n\n",
        b"GET /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET /app/x HTTP/1.1\r\nHo st: a\r\n\r\n",
    ]
    for v in vectors:
        out = raw_exchange(port, v)
        assert out.startswith(b"HTTP/1.1 400 "), (v, out[:200])
        assert b"X-Metrocell-Outcome: refused" in out
        assert out.count(b"HTTP/1.1 ") == 1, "nothing after the refused request is answered"
    # the worker saw exactly the two counting requests, nothing smuggled in between
    assert worker_count() == before + 1
