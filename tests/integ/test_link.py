"""`metrocell link`: the WAN link emulator. Real link processes relay to a small
in-test TCP server on 127.0.0.1; the tests assert on the bytes that come back, on
the delay lower bound, and on cut/restore as the peers see it."""

import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import http_json, http_request, wait_until

LINE_RE = re.compile(r"^link (\S+) listening on (\S+):(\d+) -> (\S+):(\d+) admin (\S+):(\d+)$")


class Server:
    """A threaded TCP server on 127.0.0.1:0. mode "echo" echoes and closes after
    the client's EOF; mode "hold" accepts and reads nothing until release()."""

    def __init__(self, mode="echo"):
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.active = 0
        self.accepted = 0
        self.conns = []
        self.released = threading.Event()
        self.received = bytearray()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.active += 1
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.mode == "hold":
                self.released.wait(30)
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    with self.lock:
                        self.received += d
                return
            while True:
                d = c.recv(65536)
                if not d:
                    c.shutdown(socket.SHUT_WR)
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            with self.lock:
                self.active -= 1
            try:
                c.close()
            except OSError:
                pass

    def release(self):
        self.released.set()

    def close(self):
        self.stopping = True
        self.released.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def echo():
    s = Server("echo")
    try:
        yield s
    finally:
        s.close()


def start_link(procs, binary, to, delay=50, extra=(), name="l1"):
    args = [binary, "link", "--listen", "127.0.0.1:0", "--to", to, "--delay", str(delay),
            "--admin", "127.0.0.1:0", "--name", name] + list(extra)
    p = procs.start(args, "link-" + name, ready="listening on")
    m = LINE_RE.match(p.line)
    assert m, "unexpected first line: %r" % p.line
    assert m.group(1) == name
    assert int(m.group(3)) != 0 and int(m.group(7)) != 0
    assert "%s:%s" % (m.group(4), m.group(5)) == to
    p.listen = ("127.0.0.1", int(m.group(3)))
    p.admin = "127.0.0.1:%s" % m.group(7)
    return p


def connect(p, timeout=5.0):
    s = socket.create_connection(p.listen, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        d = s.recv(min(1 << 20, n - len(out)))
        if not d:
            raise AssertionError("EOF after %d of %d bytes" % (len(out), n))
        out += d
    return bytes(out)


def round_trip(s, payload):
    t0 = time.monotonic()
    s.sendall(payload)
    got = recv_exact(s, len(payload))
    return time.monotonic() - t0, got


def sees_close(s, timeout=1.0):
    """Returns the seconds until the peer closed (EOF or reset); fails otherwise."""
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        pytest.fail("connection still open %.1f s after the cut" % timeout)
    return time.monotonic() - t0


def echo_big(s, payload):
    """Sends payload from a thread while reading the echo; returns the echo."""
    err = []

    def send():
        try:
            s.sendall(payload)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    got = recv_exact(s, len(payload))
    t.join(10)
    assert not err, err
    return got


def test_delay_and_byte_identity(procs, metrocell_bin, echo):
    link = start_link(procs, metrocell_bin, echo.addr, delay=50)
    s = connect(link)
    try:
        rtt, got = round_trip(s, b"ping\n")
        assert got == b"ping\n"
        # 50 ms each way: the link must hold the bytes at least 100 ms.
        assert 0.100 <= rtt < 1.0, rtt
        payload = os.urandom(1 << 20)
        got = echo_big(s, payload)
        assert got == payload
        code, _, st = http_json(link.admin, "GET", "/status")
        assert code == 200
        assert st["name"] == "l1" and st["to"] == echo.addr
        assert st["listen"] == "%s:%d" % link.listen
        assert st["delay_ms"] == 50 and st["jitter_ms"] == 0 and st["cut"] is False
        assert st["connections"] == 1
        assert st["bytes_up"] == len(payload) + 5
        assert st["bytes_down"] == len(payload) + 5
    finally:
        s.close()
    assert link.stop() == 0, link.log()


def test_jitter_keeps_order(procs, metrocell_bin, echo):
    link = start_link(procs, metrocell_bin, echo.addr, delay=5, extra=["--jitter", "40"])
    s = connect(link)
    try:
        # Many small writes, each its own chunk with its own random jitter.
        parts = [b"%06d," % i for i in range(400)]
        t = threading.Thread(target=lambda: [s.sendall(p) for p in parts], daemon=True)
        t.start()
        got = recv_exact(s, sum(len(p) for p in parts))
        t.join(10)
        assert got == b"".join(parts)
    finally:
        s.close()
    assert link.stop() == 0, link.log()


def test_half_close_delivers_data_before_eof(procs, metrocell_bin, echo):
    link = start_link(procs, metrocell_bin, echo.addr, delay=20)
    s = connect(link)
    try:
        payload = os.urandom(300000)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        got = bytearray()
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        assert bytes(got) == payload
    finally:
        s.close()
    wait_until(lambda: http_json(link.admin, "GET", "/status")[2]["connections"] == 0,
               what="link to drop the closed connection")
    assert link.stop() == 0, link.log()


def test_cut_and_restore(procs, metrocell_bin, echo):
    link = start_link(procs, metrocell_bin, echo.addr, delay=50)
    s = connect(link)
    try:
        assert round_trip(s, b"before")[1] == b"before"
        assert echo.active == 1
        code, _, body = http_json(link.admin, "POST", "/cut")
        assert code == 200 and body["cut"] is True and body["closed"] == 1
        assert sees_close(s, timeout=1.0) < 1.0
        # The server side of the relayed connection is closed too.
        wait_until(lambda: echo.active == 0, timeout=1.0, what="upstream side closed")
    finally:
        s.close()

    # While cut, new connections are accepted and dropped at once.
    accepted_before = echo.accepted
    for _ in range(3):
        try:
            s = connect(link)
        except ConnectionResetError:
            continue  # the reset beat connect() back: closed, as required
        try:
            try:
                s.sendall(b"hello")
            except OSError:
                pass
            assert sees_close(s, timeout=1.0) < 1.0
        finally:
            s.close()
    code, _, st = http_json(link.admin, "GET", "/status")
    assert st["cut"] is True and st["connections"] == 0 and st["refused"] == 3
    assert echo.accepted == accepted_before

    code, _, body = http_json(link.admin, "POST", "/restore")
    assert code == 200 and body["cut"] is False
    s = connect(link)
    try:
        rtt, got = round_trip(s, b"after")
        assert got == b"after" and rtt >= 0.100
    finally:
        s.close()
    assert link.stop() == 0, link.log()


def test_delay_change_at_runtime(procs, metrocell_bin, echo):
    link = start_link(procs, metrocell_bin, echo.addr, delay=10)
    code, _, st = http_json(link.admin, "POST", "/delay?ms=150&jitter=0")
    assert code == 200 and st["delay_ms"] == 150 and st["jitter_ms"] == 0
    s = connect(link)
    try:
        rtt, got = round_trip(s, b"x" * 100)
        assert got == b"x" * 100
        assert rtt >= 0.300, rtt
    finally:
        s.close()
    for bad in ("/delay", "/delay?ms=abc", "/delay?ms=70000", "/delay?speed=3", "/delay?ms"):
        code, _, body = http_json(link.admin, "POST", bad)
        assert code == 400 and body["error"] == "bad_request", bad
    code, _, st = http_json(link.admin, "GET", "/status")
    assert st["delay_ms"] == 150
    assert link.stop() == 0, link.log()


def test_admin_errors(procs, metrocell_bin, echo):
    link = start_link(procs, metrocell_bin, echo.addr, delay=1)
    code, hdrs, body = http_json(link.admin, "GET", "/nope")
    assert code == 404 and body["error"] == "not_found" and body["message"]
    assert hdrs["connection"] == "close"
    code, hdrs, body = http_json(link.admin, "GET", "/cut")
    assert code == 405 and hdrs["allow"] == "POST"
    code, _, body = http_json(link.admin, "POST", "/status", body=b"{}")
    assert code == 405
    host, port = link.admin.split(":")
    # Garbage request line.
    with socket.create_connection((host, int(port)), timeout=5) as c:
        c.sendall(b"HELLO THERE\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 400 ")
    # Head larger than 4 KiB: refused, not buffered.
    with socket.create_connection((host, int(port)), timeout=5) as c:
        try:
            c.sendall(b"GET /status HTTP/1.1\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n")
        except OSError:
            pass
        assert c.recv(100).startswith(b"HTTP/1.1 431 ")
    # The admin port still answers afterwards.
    assert http_json(link.admin, "GET", "/status")[0] == 200
    assert link.stop() == 0, link.log()


def test_connect_failure_closes_client(procs, metrocell_bin):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    to = "127.0.0.1:%d" % dead.getsockname()[1]
    dead.close()  # nothing listens there now
    link = start_link(procs, metrocell_bin, to, delay=10)
    s = connect(link)
    try:
        assert sees_close(s, timeout=1.0) < 1.0
    finally:
        s.close()
    assert link.stop() == 0, link.log()


def test_backpressure_bounds_memory(procs, metrocell_bin):
    server = Server("hold")
    try:
        link = start_link(procs, metrocell_bin, server.addr, delay=1)
        s = connect(link)
        try:
            s.setblocking(False)
            block = b"z" * 65536
            sent = 0
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and sent < (64 << 20):
                try:
                    sent += s.send(block)
                except BlockingIOError:
                    time.sleep(0.01)
            _, _, st = http_json(link.admin, "GET", "/status")
            # The server reads nothing: the link stops reading at 4 MiB queued.
            assert st["queued_bytes"] <= (4 << 20) + 65536, st
            assert sent < (64 << 20), "the sender was never pushed back"
            server.release()
            s.setblocking(True)
            s.shutdown(socket.SHUT_WR)
            wait_until(lambda: len(server.received) == sent, timeout=20,
                       what="all %d bytes delivered after the release" % sent)
            assert bytes(server.received) == b"z" * sent
        finally:
            s.close()
        assert link.stop() == 0, link.log()
    finally:
        server.close()


def test_bandwidth_limit(procs, metrocell_bin, echo):
    # 8000 kbit/s = 1 MB/s per direction: 256 KiB cannot cross in under 0.26 s.
    link = start_link(procs, metrocell_bin, echo.addr, delay=0,
                      extra=["--bandwidth-kbps", "8000"])
    s = connect(link)
    try:
        payload = os.urandom(256 << 10)
        t0 = time.monotonic()
        got = echo_big(s, payload)
        elapsed = time.monotonic() - t0
        assert got == payload
        assert elapsed >= 0.26, elapsed
    finally:
        s.close()
    assert link.stop() == 0, link.log()


@pytest.mark.parametrize("args,named", [
    ([], "--listen"),
    (["--listen", "127.0.0.1:0", "--delay", "5"], "--to"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"], "--delay"),
    (["--listen", "nohost", "--to", "127.0.0.1:9", "--delay", "5"], "--listen"),
    (["--listen", "127.0.0.1:99999", "--to", "127.0.0.1:9", "--delay", "5"], "--listen"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:0", "--delay", "5"], "--to"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay", "-3"], "--delay"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay", "5ms"], "--delay"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay", "5", "--jitter", "x"],
     "--jitter"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay", "5", "--admin", "1.2.3"],
     "--admin"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay", "5",
      "--bandwidth-kbps", "fast"], "--bandwidth-kbps"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay", "5", "--name", "a b"],
     "--name"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay", "5", "--frobnicate", "1"],
     "--frobnicate"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--delay"], "--delay"),
])
def test_bad_arguments_exit_2(metrocell_bin, args, named):
    p = subprocess.Popen([metrocell_bin, "link"] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 2, (out, err)
    assert named.encode() in err, err
    assert out == b""
