"""The cell's cache-hit path on the wire: a hit is sent from the stored object's
pre-rendered fields and body (mc_http_respond_raw), straight to the socket when it
takes the bytes at once, through the usual queued write otherwise. Checked byte by
byte against the miss: pipelined hits on one connection, HEAD, a large object to a
client that does not read at first (partial writes), and hits over TLS (HTTP/1.1
and HTTP/2), which take the field-by-field path."""

import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import free_port
from test_cache import CacheCluster, q


@pytest.fixture
def cc(procs, tmp_path, metrocell_bin):
    return CacheCluster(procs, tmp_path, metrocell_bin)


def read_response(sock, buf, head_req=False):
    """Reads one response from sock (buf: bytes already received). Returns
    (status, [(name, value)], body, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response head (%r)" % buf[:200]
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip()))
    lengths = [v for n, v in fields if n.lower() == "content-length"]
    assert len(lengths) <= 1, fields
    n = 0 if head_req or status in (204, 304) or not lengths else int(lengths[0])
    while len(buf) < n:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed inside a body"
        buf += chunk
    return status, fields, buf[:n], buf[n:]


def field(fields, name):
    vals = [v for n, v in fields if n.lower() == name]
    assert len(vals) <= 1, (name, fields)
    return vals[0] if vals else None


# Fields the cell adds per response; the rest come from the stored object.
PER_RESPONSE = {"x-metrocell-cell", "x-metrocell-outcome", "x-metrocell-route", "server-timing",
                "x-metrocell-cache", "age", "content-length", "connection"}


def stored_fields(fields):
    return sorted((n.lower(), v) for n, v in fields if n.lower() not in PER_RESPONSE)


def request(target, host, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, host, extra)).encode()


def test_hit_sends_the_stored_fields_once_and_the_same_body(cc):
    cc.start()
    t = "/c/wire" + q(bytes=3000, cc="max-age=300")
    with socket.create_connection(cc.cell_http.rsplit(":", 1), timeout=10) as s:
        s.sendall(request(t, "h.test"))
        st1, f1, b1, rest = read_response(s, b"")
        s.sendall(request(t, "h.test"))
        st2, f2, b2, rest = read_response(s, rest)
    assert st1 == st2 == 200
    assert field(f1, "x-metrocell-cache") == "miss; tier=origin"
    assert field(f2, "x-metrocell-cache") == "hit; tier=cell"
    assert field(f2, "x-metrocell-outcome") == "cache_hit"
    assert len(b1) == 3000 and b2 == b1
    assert field(f2, "content-length") == "3000"
    assert field(f2, "connection") == "keep-alive"
    assert field(f2, "age") is not None
    # the miss waited on the shield (a region segment), the hit did not
    assert "region;dur=" in field(f1, "server-timing")
    assert field(f2, "server-timing").startswith("edge;dur=")
    assert "region" not in field(f2, "server-timing")
    # the origin's fields, each once, exactly as the miss relayed them
    assert stored_fields(f2) == stored_fields(f1)
    assert {n for n, _ in stored_fields(f2)} >= {"content-type", "cache-control", "etag", "date"}
    assert rest == b""
    assert cc.origin_count(t) == 1


def test_pipelined_hits_and_head_on_one_connection(cc):
    cc.start()
    t = "/c/pipe" + q(bytes=700, cc="max-age=300")
    status, h, body = cc.get(t)
    assert status == 200 and h["x-metrocell-cache"] == "miss; tier=origin"
    n = 60
    reqs = b""
    for i in range(n):
        reqs += request(t, cc.cell_http)
        if i == n // 2:
            reqs += ("HEAD %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (t, cc.cell_http)).encode()
    reqs += request(t, cc.cell_http, "Connection: close\r\n")
    with socket.create_connection(cc.cell_http.rsplit(":", 1), timeout=10) as s:
        s.sendall(reqs)  # one write: the cell reads them together
        buf = b""
        answers = []
        for i in range(n + 2):
            head = i == n // 2 + 1
            st, f, b, buf = read_response(s, buf, head_req=head)
            answers.append((st, f, b, head))
        while True:  # then the cell closes
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    assert buf == b""
    for st, f, b, head in answers:
        assert st == 200
        assert field(f, "x-metrocell-cache") == "hit; tier=cell"
        assert field(f, "content-length") == str(len(body))
        assert b == (b"" if head else body)
    assert field(answers[-1][1], "connection") == "close"
    assert all(field(f, "connection") == "keep-alive" for _, f, _, _ in answers[:-1])
    assert cc.origin_count(t) == 1


def test_large_hit_to_clients_that_read_late(procs, tmp_path, metrocell_bin):
    """8 MiB hits, two pipelined per connection, to connections that do not read at
    first: the socket takes part of a response (more than loopback buffers hold),
    the rest is copied and written as it drains; the second request waits in the
    input buffer meanwhile and takes the queued path."""
    big = {"max_bytes": 64 << 20, "max_object_bytes": 16 << 20}
    cc = CacheCluster(procs, tmp_path, metrocell_bin, cell_cache=big, shield=big).start()
    t = "/c/large" + q(bytes=8 << 20, cc="max-age=300")
    status, h, body = cc.get(t)
    assert status == 200 and len(body) == 8 << 20
    socks = []
    try:
        for _ in range(2):
            s = socket.create_connection(cc.cell_http.rsplit(":", 1), timeout=10)
            s.sendall(request(t, cc.cell_http) + request(t, cc.cell_http))
            socks.append(s)
        time.sleep(0.3)  # the cell has answered into full socket buffers by now
        for s in socks:
            buf = b""
            for _ in range(2):
                st, f, b, buf = read_response(s, buf)
                assert st == 200
                assert field(f, "x-metrocell-cache") == "hit; tier=cell"
                assert b == body
            assert buf == b""
    finally:
        for s in socks:
            s.close()
    assert cc.origin_count(t) == 1


def make_cert(tmp_path):
    cert = os.path.join(str(tmp_path), "hit.crt")
    key = os.path.join(str(tmp_path), "hit.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-subj", "/CN=hit.test", "-days", "2"], check=True, capture_output=True,
                   timeout=30)
    return cert, key


def curl_heads(*args):
    r = subprocess.run(["curl", "-sS", "-k", "--max-time", "20", "-i"] + list(args),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = [(n.strip(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])]
    return lines[0], fields, body


@pytest.mark.skipif(not os.path.exists("/usr/bin/curl"), reason="curl is not installed")
def test_hits_over_tls_http1_and_http2(cc, tmp_path):
    cert, key = make_cert(tmp_path)
    tls = "127.0.0.1:%d" % free_port()
    with open(cc.cell_conf) as f:
        conf = json.load(f)
    conf["tls"] = {"listen": tls, "cert": cert, "key": key}
    with open(cc.cell_conf, "w") as f:
        json.dump(conf, f)
    cc.start()
    t = "/c/tls" + q(bytes=1500, cc="max-age=300")
    status, h, body = cc.get(t)
    assert status == 200 and h["x-metrocell-cache"] == "miss; tier=origin"
    _, plain, _ = read_once(cc.cell_http, t)
    for proto in ("--http1.1", "--http2"):
        line, f, b = curl_heads(proto, "-H", "Host: " + cc.cell_http, "https://%s%s" % (tls, t))
        assert re.match(r"HTTP/(1\.1|2) 200", line), line
        assert field([(n.lower(), v) for n, v in f], "x-metrocell-cache") == "hit; tier=cell"
        assert b == body
        # the same stored fields as over plain HTTP/1.1, split back into fields
        assert stored_fields(f) == stored_fields(plain), proto
    assert cc.origin_count(t) == 1


def read_once(addr, target):
    with socket.create_connection(addr.rsplit(":", 1), timeout=10) as s:
        s.sendall(request(target, addr))
        return read_response(s, b"")[:3]
