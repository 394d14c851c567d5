"""Hostile HTTP/1.1 clients against a running cell (ASan build): random mixes of
valid, malformed, smuggling-shaped, oversized and truncated requests, split at
random byte boundaries, pipelined, and abandoned mid-way. The cell must keep
answering well-formed requests and exit cleanly afterwards (the procs fixture fails the test on a sanitizer
report or a leak)."""

import json
import random
import socket
import struct
import threading
import time

from conftest import free_port, http_json, http_request
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


BIG = 2 * 1024 * 1024


def _answer_ok(body, path):
    """The worker's JSON answer for path, padded with 'x' (a misplaced piece of a
    partly written answer breaks it)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return doc.get("path") == path and set(doc.get("pad", "x")) <= {"x"}


def _read_answers(s, n, path=b"/big"):
    """Reads n whole answers (head + Content-Length body); returns their body sizes,
    or -1 for a body that is not the worker's answer for path."""
    buf, sizes = b"", []
    while len(sizes) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return sizes
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
                     .split(b":")[1])
        while len(buf) < length:
            chunk = s.recv(65536)
            if not chunk:
                return sizes
            buf += chunk
        sizes.append(length if _answer_ok(buf[:length], path.decode()) else -1)
        buf = buf[length:]
    return sizes


def leaving_client(port, seed, results):
    """Pipelined GETs of a 2 MB answer (more than the socket takes at once, so the
    server writes part and queues the rest), then: read them all, read part and
    close or reset, or close at once."""
    rnd = random.Random(seed)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        n = rnd.randint(1, 3)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: w\r\n\r\n" * n)
        mode = rnd.choice(["all", "part", "reset", "gone"])
        if mode == "gone":
            s.close()
            return
        time.sleep(rnd.random() * 0.05)  # the server's first write cannot complete
        if mode == "all":
            results.append(_read_answers(s, n) == [len_of_big()] * n)
            s.close()
            return
        got = 0
        want = rnd.randint(1, BIG)
        while got < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        if mode == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError:
        pass


_BIG_LEN = []


def len_of_big():
    return _BIG_LEN[0]


def test_clients_leaving_mid_write_do_not_hurt_a_worker(procs, metrocell_bin):
    """300 clients against a sample-worker (ASan build) whose answers are larger than a
    socket takes at once: answers half-written when their client resets or goes away,
    pipelined answers queued behind them. Clients that read everything get every byte
    of every answer; the worker keeps serving and exits cleanly (the procs fixture
    fails the test on a sanitizer report or a leak)."""
    port = free_port()
    procs.start([metrocell_bin, "sample-worker", "--listen", "127.0.0.1:%d" % port,
                 "--body-bytes", str(BIG)], "worker", ready="listening")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: w\r\n\r\n")
        _BIG_LEN[:] = _read_answers(s, 1)
    assert _BIG_LEN and _BIG_LEN[0] >= BIG
    results = []
    for round_ in range(3):
        threads = [threading.Thread(target=leaving_client, args=(port, round_ * 1000 + i, results))
                   for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    assert results and all(results), "%d of %d full reads wrong" % (results.count(False),
                                                                    len(results))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /after HTTP/1.1\r\nHost: w\r\n\r\n" * 2)
        assert _read_answers(s, 2, b"/after") == [_BIG_LEN[0]] * 2
