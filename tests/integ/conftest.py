"""Shared helpers for Metrocell integration tests: free ports, starting real
processes on 127.0.0.1 and stopping every one of them by PID, even on failure,
and tiny HTTP helpers that return what came over the wire."""

import json
import os
import random
import select
import signal
import socket
import subprocess
import time
import http.client

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary():
    return os.environ.get("METROCELL_BIN", os.path.join(REPO, "build", "asan", "metrocell"))


@pytest.fixture
def metrocell_bin():
    b = binary()
    if not os.path.exists(b):
        pytest.fail("metrocell binary not found at %s (run make)" % b)
    return b


_PORTS_HANDED_OUT = set()


def free_port():
    """A port to listen on, below the kernel's ephemeral range: a port picked by
    binding port 0 comes from that range, and an outgoing connection (a cell to
    its region, a client) may take it before the test's process binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    hi = max(low, 10001)
    for _ in range(1000):
        port = random.randrange(10000, hi)
        if port in _PORTS_HANDED_OUT:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _PORTS_HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


class Proc:
    """A started process: its Popen, the first stdout line and its stderr log."""

    def __init__(self, popen, line, log_path):
        self.popen = popen
        self.line = line
        self.log_path = log_path

    @property
    def pid(self):
        return self.popen.pid

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.popen.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout=10):
        if self.alive():
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        return self.popen.returncode


class Procs:
    """Starts processes and stops every one of them by PID at teardown."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.started = []

    def start(self, args, name, ready=None, timeout=20.0, env=None):
        """Starts args, waits for a stdout line containing `ready` (any line when
        None) and returns a Proc. Fails the test with the stderr log otherwise."""
        log_path = os.path.join(str(self.tmp), "%s.log" % name)
        logf = open(log_path, "wb")
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        if env:
            e.update(env)
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL,
                             env=e)
        logf.close()
        proc = Proc(p, None, log_path)
        self.started.append(proc)
        deadline = time.time() + timeout
        buf = b""
        while time.time() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.1)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace")
                    if ready is None or ready in text:
                        proc.line = text
                        return proc
            elif p.poll() is not None:
                break
        pytest.fail("%s did not become ready (exit %s); log:\n%s" % (name, p.poll(), proc.log()))

    def stop_all(self):
        """Stops every process; returns the ones that did not exit cleanly (status 0
        after SIGTERM, or SIGKILL sent by the test itself), e.g. a sanitizer report."""
        bad = []
        for proc in reversed(self.started):
            try:
                rc = proc.stop(timeout=10)
            except Exception as e:  # noqa: BLE001 - reported below
                rc = repr(e)
            if proc.popen.stdout:
                proc.popen.stdout.close()
            if rc not in (0, -signal.SIGKILL):
                bad.append((proc, rc))
        return bad


@pytest.fixture
def procs(tmp_path):
    ps = Procs(tmp_path)
    bad = []
    try:
        yield ps
    finally:
        bad = ps.stop_all()
    if bad:
        pytest.fail("\n".join("process %s exited with %s; log tail:\n%s" %
                              (p.popen.args, rc, p.log()[-3000:]) for p, rc in bad))


def http_request(addr, method, path, body=None, headers=None, timeout=10.0):
    """Returns (status, headers dict with lower-case names, body bytes)."""
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def http_json(addr, method, path, body=None, headers=None, timeout=10.0):
    status, hdrs, data = http_request(addr, method, path, body, headers, timeout)
    return status, hdrs, json.loads(data) if data else None


def wait_until(fn, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(interval)
    pytest.fail("timed out waiting for %s (last: %r)" % (what, last))
