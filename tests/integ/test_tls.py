"""TLS and HTTP/2 ingress of a cell, end to end: curl over HTTP/2 and HTTP/1.1
with ALPN, session resumption across two cell processes that share ticket keys
(openssl s_client -sess_out / -sess_in), certificate reload on SIGHUP while a
connection stays open, and hostile input on the TLS port (garbage, stalled
handshakes, an HTTP/2 rapid-reset flood). Certificates are made with the
openssl command line into the test's directory."""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

from conftest import free_port, http_request, wait_until

KEY_A = "6c61782d6b65792d61000000000000000" + "1" * 31 + "2" * 32 + "3" * 32 + "4" * 32
KEY_B = "6c61782d6b65792d62000000000000000" + "5" * 31 + "6" * 32 + "7" * 32 + "8" * 32
assert len(KEY_A) == 160 and len(KEY_B) == 160


def make_cert(tmp_path, name):
    cert = os.path.join(str(tmp_path), name + ".crt")
    key = os.path.join(str(tmp_path), name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-subj", "/CN=" + name, "-days", "2"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def fingerprint_of_file(cert):
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return out.strip().split("=", 1)[1]


@pytest.fixture
def certs(tmp_path):
    return {"a": make_cert(tmp_path, "cert-a"), "b": make_cert(tmp_path, "cert-b")}


class TlsCell:
    """One cell with a TLS listener (and optionally a sample worker behind a
    proxy route); no region is needed for these tests."""

    def __init__(self, procs, tmp_path, binary, name, cert, key, ticket_keys=None,
                 worker=False, tls_extra=None, limits=None, worker_args=None):
        self.procs = procs
        self.bin = binary
        self.name = name
        self.http = "127.0.0.1:%d" % free_port()
        self.admin = "127.0.0.1:%d" % free_port()
        self.tls_port = free_port()
        self.tls = "127.0.0.1:%d" % self.tls_port
        # the cell reads the files at start and on SIGHUP: give it its own copies
        self.cert = os.path.join(str(tmp_path), "%s.crt" % name)
        self.key = os.path.join(str(tmp_path), "%s.key" % name)
        self.install(cert, key)
        self.worker = "127.0.0.1:%d" % free_port() if worker else None
        self.worker_args = worker_args or []
        tls = {"listen": self.tls, "cert": self.cert, "key": self.key,
               "handshake_timeout_ms": 1000}
        if ticket_keys is not None:
            tls["ticket_keys"] = ticket_keys
        tls.update(tls_extra or {})
        conf = {"cell": name,
                "listen": {"http": self.http, "admin": self.admin},
                "data_dir": os.path.join(str(tmp_path), "%s-data" % name),
                "region": {"repl": "127.0.0.1:%d" % free_port()},
                "state": {"durability": "none", "map_size_mb": 64},
                "tls": tls,
                "routes": [{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}
        if limits:
            conf["limits"] = limits
        if worker:
            conf["pools"] = {"app": {"workers": [self.worker]}}
            conf["routes"].append({"name": "app", "prefix": "/app/", "kind": "proxy",
                                   "pool": "app"})
        self.conf = os.path.join(str(tmp_path), "%s.json" % name)
        with open(self.conf, "w") as f:
            json.dump(conf, f, indent=2)
        self.proc = None

    def install(self, cert, key):
        for src, dst in ((cert, self.cert), (key, self.key)):
            with open(src, "rb") as f:
                data = f.read()
            with open(dst + ".tmp", "wb") as f:
                f.write(data)
            os.replace(dst + ".tmp", dst)

    def start(self):
        if self.worker:
            self.procs.start([self.bin, "sample-worker", "--listen", self.worker, "--name",
                              "w0"] + self.worker_args, self.name + "-worker",
                             ready="listening")
        self.proc = self.procs.start([self.bin, "cell", "-c", self.conf], self.name,
                                     ready="cell %s ready" % self.name)
        return self

    def metrics(self):
        status, _, body = http_request(self.admin, "GET", "/metrics")
        assert status == 200
        return body.decode()

    def metric(self, name, labels):
        want = "%s{cell=\"%s\",%s} " % (name, self.name, labels)
        for line in self.metrics().splitlines():
            if line.startswith(want):
                return float(line.split()[-1])
        return None


def curl(*args, timeout=30):
    r = subprocess.run(["curl", "-sS", "-k", "--max-time", "20"] + list(args),
                       capture_output=True, timeout=timeout)
    return r


def parse_heads(raw):
    """Splits curl -i output into (status line, headers dict, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs, body


def test_http2_over_tls_with_curl(procs, tmp_path, metrocell_bin, certs):
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"], worker=True).start()
    base = "https://%s" % c.tls
    # a KV write and read back over HTTP/2
    r = curl("--http2", "-i", "-X", "PUT", "--data-binary", "over-h2", base + "/v1/kv/h2key")
    assert r.returncode == 0, r.stderr
    status, hdrs, body = parse_heads(r.stdout)
    assert status.startswith("HTTP/2 200"), status
    assert hdrs["x-metrocell-cell"] == "lax"
    assert hdrs["x-metrocell-outcome"] == "local"
    assert hdrs["x-metrocell-route"] == "kv"
    assert "edge;dur=" in hdrs["server-timing"]
    assert json.loads(body)["key"] == "h2key"
    version = hdrs["x-metrocell-version"]
    r = curl("--http2", "-i", base + "/v1/kv/h2key")
    status, hdrs, body = parse_heads(r.stdout)
    assert status.startswith("HTTP/2 200"), status
    assert body == b"over-h2"
    assert hdrs["x-metrocell-version"] == version
    assert hdrs["content-length"] == "7"
    # the value is the same over the plaintext HTTP/1.1 listener
    status, _, data = http_request(c.http, "GET", "/v1/kv/h2key")
    assert (status, data) == (200, b"over-h2")
    # a proxy route: the worker sees an ordinary request, its headers come back
    r = curl("--http2", "-i", "-H", "Cookie: a=1", "-H", "Cookie: b=2",
             base + "/app/items/7?q=1")
    status, hdrs, body = parse_heads(r.stdout)
    assert status.startswith("HTTP/2 200"), (status, body)
    assert hdrs["x-metrocell-outcome"] == "local"
    assert hdrs["x-metrocell-route"] == "app"
    assert hdrs["x-worker"] == "w0"
    doc = json.loads(body)
    assert doc["path"].startswith("/app/items/7")
    # HEAD announces the length a GET would have, with no body
    r = curl("--http2", "-I", base + "/v1/kv/h2key")
    status, hdrs, body = parse_heads(r.stdout)
    assert status.startswith("HTTP/2 200") and hdrs["content-length"] == "7" and body == b""
    # errors keep the JSON body and the cell's headers
    r = curl("--http2", "-i", base + "/nowhere")
    status, hdrs, body = parse_heads(r.stdout)
    assert status.startswith("HTTP/2 404")
    assert json.loads(body)["error"] == "no_route"
    assert c.metric("metrocell_connections_total", 'proto="h2",tls="true"') == 5
    assert c.metric("metrocell_tls_handshakes_total", 'resumed="false"') == 5


def test_http2_limits_answer_like_http1(procs, tmp_path, metrocell_bin, certs):
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"],
                limits={"max_header_bytes": 4096, "max_body_bytes": 1000}).start()
    base = "https://%s" % c.tls
    r = curl("--http2", "-i", "-H", "X-Big: " + "y" * 5000, base + "/v1/kv/k")
    status, hdrs, body = parse_heads(r.stdout)
    assert status.startswith("HTTP/2 431"), (status, r.stderr)
    assert json.loads(body)["error"] == "request_header_fields_too_large"
    assert hdrs["x-metrocell-outcome"] == "refused"
    # bodies over limits.max_body_bytes, announced or not: 413, then RST_STREAM
    # NO_ERROR so the client stops sending (raw frames: curl 7.88 may report its
    # own upload race as an error here)
    h = RawH2(c.tls_port)
    try:
        h.request(1, "/v1/kv/k", method="PUT", extra=[("content-length", "5000")],
                  end_stream=False)
        h.request(3, "/v1/kv/k", method="PUT", end_stream=False)
        for _ in range(3):
            h.s.sendall(h2_frame(0x0, 0, 3, b"z" * 600))
        got = {1: {}, 3: {}}
        for ftype, flags, sid, payload in h.frames(timeout=10):
            if sid in got:
                st = got[sid]
                if ftype == 0x1:
                    st["status"] = payload[:5]
                elif ftype == 0x0:
                    st["body"] = st.get("body", b"") + payload
                elif ftype == 0x3:
                    st["rst"] = struct.unpack(">I", payload)[0]
            if all("rst" in st for st in got.values()):
                break
        # :status 413 as a literal with the indexed name :status (HPACK 8); the
        # second answer refers to it in the dynamic table
        assert got[1].get("status") == b"\x48\x03413", got
        for sid, st in got.items():
            assert json.loads(st["body"])["error"] == "payload_too_large"
            assert st["rst"] == 0  # NO_ERROR
    finally:
        h.close()
    # the limits held: nothing was stored
    r = curl("--http2", "-i", base + "/v1/kv/k")
    status, _, body = parse_heads(r.stdout)
    assert status.split()[1] in ("404", "503") and b"zzz" not in body, status
    assert c.metric("metrocell_http_rejected_total", 'status="431"') == 1
    assert c.metric("metrocell_http_rejected_total", 'status="413"') == 2


def test_http2_honours_the_routes_body_limit(procs, tmp_path, metrocell_bin, certs):
    """routes[i].max_body_bytes applies to HTTP/2 streams as to HTTP/1.1."""
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"])
    with open(c.conf) as f:
        conf = json.load(f)
    conf["routes"][0]["max_body_bytes"] = 100
    with open(c.conf, "w") as f:
        json.dump(conf, f)
    c.start()
    base = "https://%s" % c.tls
    r = curl("--http2", "-i", "-X", "PUT", "--data-binary", "x" * 50, base + "/v1/kv/small")
    status, _, _ = parse_heads(r.stdout)
    assert status.split()[1] in ("200", "201", "204"), (status, r.stderr)
    h = RawH2(c.tls_port)
    try:
        h.request(1, "/v1/kv/big", method="PUT", extra=[("content-length", "500")],
                  end_stream=False)
        got = {}
        for ftype, flags, sid, payload in h.frames(timeout=10):
            if sid == 1 and ftype == 0x1:
                got["status"] = payload[:5]
            elif sid == 1 and ftype == 0x0:
                got["body"] = got.get("body", b"") + payload
            elif sid == 1 and ftype == 0x3:
                break
        assert got.get("status") == b"\x48\x03413", got
        assert json.loads(got["body"])["error"] == "payload_too_large"
        assert b"100 bytes" in got["body"]
    finally:
        h.close()
    assert c.metric("metrocell_http_rejected_total", 'status="413"') == 1


def test_concurrent_streams_share_one_connection(procs, tmp_path, metrocell_bin, certs):
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"]).start()
    base = "https://%s" % c.tls
    n = 12
    cfg = os.path.join(os.path.dirname(c.conf), "parallel.curl")
    with open(cfg, "w") as f:
        # one operation per transfer ("next"), each with its own options
        f.write("\nnext\n".join(
            'url = "%s/v1/kv/p%d"\nrequest = "PUT"\ndata = "value-%d"\n'
            'output = "/dev/null"\nhttp2\ninsecure\nsilent\nshow-error\n'
            'write-out = "%%{http_version} %%{response_code} %%{num_connects}\\n"'
            % (base, i, i) for i in range(n)) + "\n")
    r = curl("--parallel", "--parallel-max", str(n), "-K", cfg)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.decode().splitlines() if line.strip()]
    assert len(rows) == n
    assert all(row[0] == "2" and row[1] == "200" for row in rows), rows
    assert sum(int(row[2]) for row in rows) == 1  # every stream on one connection
    assert c.metric("metrocell_connections_total", 'proto="h2",tls="true"') == 1
    for i in range(n):
        status, _, data = http_request(c.http, "GET", "/v1/kv/p%d" % i)
        assert (status, data) == (200, b"value-%d" % i)


def test_http2_streams_count_against_max_inflight(procs, tmp_path, metrocell_bin, certs):
    """Streams of one HTTP/2 connection take limits.max_inflight slots like HTTP/1.1
    requests: with 3 slots and 8 slow streams at once, 3 reach the worker and 5 get
    the server's own 503; once answered, the slots are free again."""
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"], worker=True,
                limits={"max_inflight": 3}, worker_args=["--work-ms", "1500"]).start()
    base = "https://%s" % c.tls
    n = 8
    cfg = os.path.join(os.path.dirname(c.conf), "slow.curl")
    with open(cfg, "w") as f:
        f.write("\nnext\n".join(
            'url = "%s/app/s%d"\noutput = "/dev/null"\nhttp2\ninsecure\nsilent\n'
            'write-out = "%%{response_code} %%{num_connects}\\n"' % (base, i)
            for i in range(n)) + "\n")
    r = curl("--parallel", "--parallel-max", str(n), "-K", cfg)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.decode().splitlines() if line.strip()]
    assert len(rows) == n
    assert sum(int(row[1]) for row in rows) == 1  # one connection
    codes = sorted(row[0] for row in rows)
    assert codes == ["200"] * 3 + ["503"] * 5, codes
    assert c.metric("metrocell_http_rejected_total", 'status="503"') == 5
    # the slots came back once the streams were answered
    for i in range(3):
        res = curl("--http2", "-o", "/dev/null", "-w", "%{response_code}", base + "/app/again")
        assert res.stdout == b"200", res.stdout


def test_http1_over_tls(procs, tmp_path, metrocell_bin, certs):
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"]).start()
    base = "https://%s" % c.tls
    r = curl("--http1.1", "-i", "-X", "PUT", "--data-binary", "tls1", base + "/v1/kv/t1")
    status, hdrs, _ = parse_heads(r.stdout)
    assert status.startswith("HTTP/1.1 200"), status
    assert hdrs["x-metrocell-cell"] == "lax"
    # keep-alive over TLS: two requests on one connection, from Python's ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", c.tls_port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            assert s.selected_alpn_protocol() == "http/1.1"
            for _ in range(2):
                s.sendall(b"GET /v1/kv/t1 HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"tls1"):
                    chunk = s.recv(4096)
                    assert chunk, data
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    # a client without ALPN gets HTTP/1.1 as well
    ctx.set_alpn_protocols([])
    with socket.create_connection(("127.0.0.1", c.tls_port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            assert s.selected_alpn_protocol() is None
            s.sendall(b"GET /v1/kv/t1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"tls1")
    assert c.metric("metrocell_connections_total", 'proto="h1",tls="true"') == 3
    assert c.metric("metrocell_connections_total", 'proto="h2",tls="true"') == 0


def s_client(addr, version, sess_out=None, sess_in=None):
    """One openssl s_client connection with an HTTP/1.1 request (so TLS 1.3
    tickets are read before it exits). Returns (New|Reused, output)."""
    args = ["openssl", "s_client", "-connect", addr, "-ign_eof", "-" + version]
    # /nowhere: the cell's own 404, whatever the KV semantics
    if sess_out:
        args += ["-sess_out", sess_out]
    if sess_in:
        args += ["-sess_in", sess_in]
    r = subprocess.run(args, input=b"GET /nowhere HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n",
                       capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    m = re.search(r"^(New|Reused), (TLSv1\.[23])", out, re.M)
    assert m, out + r.stderr.decode(errors="replace")
    assert m.group(2) == {"tls1_2": "TLSv1.2", "tls1_3": "TLSv1.3"}[version]
    assert "HTTP/1.1 404" in out  # the request was answered over the session
    return m.group(1), out


def test_resumption_across_cells_sharing_ticket_keys(procs, tmp_path, metrocell_bin, certs):
    # the first key encrypts, all decrypt: B holds A's key second (rotation overlap)
    a = TlsCell(procs, tmp_path, metrocell_bin, "a", *certs["a"], ticket_keys=[KEY_A]).start()
    b = TlsCell(procs, tmp_path, metrocell_bin, "b", *certs["a"],
                ticket_keys=[KEY_B, KEY_A]).start()
    other = TlsCell(procs, tmp_path, metrocell_bin, "c", *certs["a"],
                    ticket_keys=[KEY_B]).start()
    for version in ("tls1_2", "tls1_3"):
        sess = os.path.join(str(tmp_path), "%s.sess" % version)
        assert s_client(a.tls, version, sess_out=sess)[0] == "New"
        assert os.path.getsize(sess) > 0
        assert s_client(b.tls, version, sess_in=sess)[0] == "Reused"
        assert s_client(a.tls, version, sess_in=sess)[0] == "Reused"
        # different keys: a full handshake
        assert s_client(other.tls, version, sess_in=sess)[0] == "New"
    assert b.metric("metrocell_tls_handshakes_total", 'resumed="true"') == 2
    assert b.metric("metrocell_tls_handshakes_total", 'resumed="false"') == 0
    assert b.metric("metrocell_cold_starts_total", 'kind="tls_full_handshake"') == 0
    assert other.metric("metrocell_tls_handshakes_total", 'resumed="true"') == 0
    assert other.metric("metrocell_cold_starts_total", 'kind="tls_full_handshake"') == 2
    assert a.metric("metrocell_tls_handshakes_total", 'resumed="true"') == 2


def test_no_configured_keys_do_not_resume_elsewhere(procs, tmp_path, metrocell_bin, certs):
    a = TlsCell(procs, tmp_path, metrocell_bin, "a", *certs["a"]).start()
    b = TlsCell(procs, tmp_path, metrocell_bin, "b", *certs["a"]).start()
    sess = os.path.join(str(tmp_path), "s.sess")
    assert s_client(a.tls, "tls1_2", sess_out=sess)[0] == "New"
    assert s_client(a.tls, "tls1_2", sess_in=sess)[0] == "Reused"  # its own random key
    assert s_client(b.tls, "tls1_2", sess_in=sess)[0] == "New"


def peer_fingerprint(addr):
    r = subprocess.run(["openssl", "s_client", "-connect", addr], input=b"",
                       capture_output=True, timeout=30)
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                         input=r.stdout, capture_output=True, timeout=30)
    assert out.returncode == 0, r.stdout + r.stderr
    return out.stdout.decode().strip().split("=", 1)[1]


def der_fingerprint(der):
    h = hashlib.sha256(der).hexdigest().upper()
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def keepalive_get(s, path):
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length:
        chunk = s.recv(4096)
        assert chunk
        body += chunk
    return head.split(b"\r\n")[0], body


def test_sighup_reloads_certificate_without_dropping_connections(procs, tmp_path, metrocell_bin,
                                                                  certs):
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"]).start()
    fp_a, fp_b = fingerprint_of_file(certs["a"][0]), fingerprint_of_file(certs["b"][0])
    assert peer_fingerprint(c.tls) == fp_a
    status, _, _ = http_request(c.http, "PUT", "/v1/kv/r", body=b"reload")
    assert status == 200
    # a connection opened before the reload
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", c.tls_port), timeout=10)
    old = ctx.wrap_socket(raw)
    try:
        assert der_fingerprint(old.getpeercert(binary_form=True)) == fp_a
        assert keepalive_get(old, "/v1/kv/r") == (b"HTTP/1.1 200 OK", b"reload")
        c.install(*certs["b"])
        os.kill(c.proc.pid, signal.SIGHUP)
        wait_until(lambda: "TLS certificate reloaded" in c.proc.log(), timeout=20,
                   what="the reload log line")
        # new connections see the new certificate, the old one keeps working
        assert peer_fingerprint(c.tls) == fp_b
        assert keepalive_get(old, "/v1/kv/r") == (b"HTTP/1.1 200 OK", b"reload")
        # a broken certificate file keeps the current certificate
        with open(c.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        os.kill(c.proc.pid, signal.SIGHUP)
        wait_until(lambda: "TLS reload failed" in c.proc.log(), timeout=20,
                   what="the reload error")
        log = c.proc.log()
        assert "keeping the previous certificate: %s: cannot load the certificate chain" \
            % c.cert in log
        assert peer_fingerprint(c.tls) == fp_b
        assert keepalive_get(old, "/v1/kv/r") == (b"HTTP/1.1 200 OK", b"reload")
        # a key that does not match the certificate is refused the same way
        c.install(certs["a"][0], certs["b"][1])
        os.kill(c.proc.pid, signal.SIGHUP)
        wait_until(lambda: c.proc.log().count("TLS reload failed") == 2, timeout=20,
                   what="the second reload error")
        assert "does not match the certificate" in c.proc.log()
        assert peer_fingerprint(c.tls) == fp_b
    finally:
        old.close()
    assert c.metric("metrocell_tls_reloads_total", 'result="ok"') == 1
    assert c.metric("metrocell_tls_reloads_total", 'result="error"') == 2
    assert c.proc.alive()


def closed_within(sock, seconds):
    """Reads until the peer closes; True when it did within seconds."""
    sock.settimeout(seconds)
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def h2_frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def test_bad_tls_input_is_closed(procs, tmp_path, metrocell_bin, certs):
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"]).start()
    port = c.tls_port
    # garbage instead of a ClientHello
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(os.urandom(64) + b"\x16\x03\x01\x00\x10" + b"\x00" * 16)
        assert closed_within(s, 10)
    # plaintext HTTP on the TLS port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_within(s, 10)
    # a client that stalls mid-handshake (half a ClientHello) is closed after
    # tls.handshake_timeout_ms (1 s here)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert closed_within(s, 10)
    # a silent client likewise
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert closed_within(s, 10)
    # HTTP/2 garbage after a good handshake: the session ends
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            assert s.selected_alpn_protocol() == "h2"
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 100)
            assert closed_within(s, 10)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"not the HTTP/2 preface at all\r\n\r\n")
            assert closed_within(s, 10)
    fails = [line for line in c.metrics().splitlines()
             if line.startswith("metrocell_tls_handshake_failures_total{")]
    assert fails and float(fails[0].split()[-1]) >= 2
    # still serving, and a clean exit under ASan afterwards (procs checks)
    r = curl("--http2", "-i", "https://%s/nowhere" % c.tls)
    assert parse_heads(r.stdout)[0].startswith("HTTP/2 404")


def test_http2_rapid_reset_flood_is_cut_off(procs, tmp_path, metrocell_bin, certs):
    """CVE-2023-44487: HEADERS immediately followed by RST_STREAM, over and over.
    nghttp2's reset rate limit (kept on) answers with GOAWAY and the cell closes
    the connection; the cell keeps serving others."""
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"]).start()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    # HPACK: :method GET (static 2), :scheme https (7), :path / (4), :authority "x"
    block = b"\x82\x87\x84\x01\x01x"
    flood = bytearray()
    for i in range(3000):
        sid = 1 + 2 * i
        flood += h2_frame(0x1, 0x4, sid, block)  # HEADERS, END_HEADERS (request open)
        flood += h2_frame(0x3, 0x0, sid, struct.pack(">I", 0x8))  # RST_STREAM CANCEL
    goaway = False
    with socket.create_connection(("127.0.0.1", c.tls_port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(0x4, 0, 0))
            try:
                s.sendall(bytes(flood))
            except OSError:
                pass  # the cell may already have closed
            data = b""
            s.settimeout(10)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (OSError, socket.timeout):
                pass
            pos = 0
            while pos + 9 <= len(data):
                length = int.from_bytes(data[pos:pos + 3], "big")
                if data[pos + 3] == 0x7:
                    last, code = struct.unpack(">II", data[pos + 9:pos + 17])
                    goaway = (last & 0x7fffffff, code)
                pos += 9 + length
    print("GOAWAY", goaway)
    # nghttp2's reset limiter answers INTERNAL_ERROR after its burst of 1000,
    # long before the 3000th stream
    assert goaway and goaway[1] == 0x2 and goaway[0] < 2 * 3000, goaway
    r = curl("--http2", "-i", "https://%s/nowhere" % c.tls)
    assert parse_heads(r.stdout)[0].startswith("HTTP/2 404")
    assert c.proc.alive()


class RawH2:
    """A minimal HTTP/2 client over TLS for frame-level tests (no h2 library):
    requests with literal HPACK fields, RST_STREAM, PING, and a frame reader."""

    def __init__(self, port):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s = ctx.wrap_socket(raw)
        assert self.s.selected_alpn_protocol() == "h2"
        self.buf = b""
        self.closed = False
        self.s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(0x4, 0, 0))

    def request(self, sid, path, method="GET", extra=(), end_stream=True):
        p = path.encode()
        assert len(p) < 127
        # :method (GET is static 2, others a literal with the indexed name 2),
        # :scheme https (static 7), :path and :authority literals, then
        # literal fields with new names
        if method == "GET":
            block = b"\x82"
        else:
            block = b"\x02" + bytes([len(method)]) + method.encode()
        block += b"\x87\x04" + bytes([len(p)]) + p + b"\x01\x01x"
        for name, value in extra:
            block += b"\x00" + bytes([len(name)]) + name.encode() + \
                bytes([len(value)]) + value.encode()
        flags = 0x4 | (0x1 if end_stream else 0)  # END_HEADERS (| END_STREAM)
        self.s.sendall(h2_frame(0x1, flags, sid, block))

    def rst(self, sid, code=0x8):
        self.s.sendall(h2_frame(0x3, 0, sid, struct.pack(">I", code)))

    def frames(self, timeout=10):
        """Yields (type, flags, stream, payload) until the peer closes or timeout."""
        deadline = time.time() + timeout
        while True:
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7fffffff
                payload = self.buf[9:9 + length]
                self.buf = self.buf[9 + length:]
                if ftype == 0x4 and not flags & 0x1:
                    self.s.sendall(h2_frame(0x4, 0x1, 0))  # ACK their SETTINGS
                yield ftype, flags, sid, payload
            left = deadline - time.time()
            if self.closed or left <= 0:
                return
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except (socket.timeout, ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
            self.buf += chunk

    def ping(self, opaque=b"12345678", timeout=10):
        """Sends a PING and returns the frames seen before its ACK: frames are
        handled in order, so everything sent before was processed."""
        self.s.sendall(h2_frame(0x6, 0, 0, opaque))
        seen = []
        for f in self.frames(timeout):
            if f[0] == 0x6 and f[1] & 0x1 and f[3] == opaque:
                return seen
            seen.append(f)
        raise AssertionError("no PING ACK; frames: %r" % seen)

    def close(self):
        self.s.close()


def test_sigterm_drains_http2_streams_in_flight(procs, tmp_path, metrocell_bin, certs):
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"], worker=True,
                worker_args=["--work-ms", "800"]).start()
    h = RawH2(c.tls_port)
    try:
        h.request(1, "/app/slow")
        h.ping()  # the request reached the cell and went to the worker
        os.kill(c.proc.pid, signal.SIGTERM)
        goaway = headers = None
        body = b""
        for ftype, flags, sid, payload in h.frames(timeout=20):
            if ftype == 0x7:
                goaway = struct.unpack(">II", payload[:8])
            elif ftype == 0x1 and sid == 1:
                headers = payload
            elif ftype == 0x0 and sid == 1:
                body += payload
        # GOAWAY(last stream 1, NO_ERROR) first, the answer still complete, then EOF
        assert goaway == (1, 0)
        assert headers is not None and headers[:1] == b"\x88"  # :status 200 (HPACK static 8)
        assert json.loads(body)["worker"] == "w0"
        assert h.closed
    finally:
        h.close()
    assert c.proc.popen.wait(timeout=20) == 0


def test_reset_streams_release_watching_handlers(procs, tmp_path, metrocell_bin, certs):
    """Rapid reset against slow upstreams: the proxy watches its exchange, so a
    stream the client reset is released at once (its worker call cancelled)
    instead of holding one of the max_concurrent_streams slots for 1.5 s."""
    c = TlsCell(procs, tmp_path, metrocell_bin, "lax", *certs["a"], worker=True,
                worker_args=["--work-ms", "1500"],
                tls_extra={"h2": {"max_concurrent_streams": 4}}).start()
    h = RawH2(c.tls_port)
    try:
        for sid in (1, 3, 5, 7):
            h.request(sid, "/app/slow")
            h.rst(sid)
        seen = h.ping()  # the resets were processed: their handlers were told
        assert not any(f[2] in (1, 3, 5, 7) and f[0] == 0x1 for f in seen), seen
        h.request(9, "/nowhere")
        status = None
        for ftype, flags, sid, payload in h.frames(timeout=5):
            if sid == 9 and ftype in (0x1, 0x3):
                status = payload[:1] if ftype == 0x1 else "refused"
                break
        assert status == b"\x8d", status  # :status 404 (HPACK static 13), not REFUSED_STREAM
    finally:
        h.close()


def test_start_fails_clearly_on_bad_tls_files(tmp_path, metrocell_bin, certs):
    def run(cert, key, listen=None):
        conf = {"cell": "lax",
                "listen": {"http": "127.0.0.1:0", "admin": "127.0.0.1:0"},
                "data_dir": os.path.join(str(tmp_path), "data"),
                "region": {"repl": "127.0.0.1:%d" % free_port()},
                "state": {"durability": "none", "map_size_mb": 64},
                "tls": {"listen": listen or "127.0.0.1:0", "cert": cert, "key": key},
                "routes": [{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}
        path = os.path.join(str(tmp_path), "cell.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
        r = subprocess.run([metrocell_bin, "cell", "-c", path], capture_output=True,
                           timeout=30, env=env)
        err = r.stderr.decode(errors="replace")
        assert "Sanitizer" not in err, err  # a failed start frees what it made
        return r.returncode, err

    missing = os.path.join(str(tmp_path), "missing.crt")
    rc, err = run(missing, certs["a"][1])
    assert rc == 1, err
    assert "tls: %s: cannot load the certificate chain" % missing in err
    rc, err = run(certs["a"][0], certs["b"][1])
    assert rc == 1, err
    assert "does not match the certificate in %s" % certs["a"][0] in err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        addr = "127.0.0.1:%d" % busy.getsockname()[1]
        rc, err = run(*certs["a"], listen=addr)
        assert rc == 1, err
        assert "cannot listen on %s (tls.listen)" % addr in err
    finally:
        busy.close()
