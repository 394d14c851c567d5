"""Helpers shared by the edge tests (quotas, flags, locality, hardening): a
cluster with a patched cell config, raw socket exchanges, a worker that records
every byte it receives, and metric and /proc readers."""

import json
import os
import re
import socket
import threading
import time

from conftest import free_port, http_request
from test_cell import Cluster


def edge_cluster(procs, tmp_path, binary, mutate, nworkers=1, work_ms=0, workers=None):
    """A Cluster whose cell config went through mutate(conf) first. With workers
    (a list of "host:port"), the pool points there instead of sample workers."""
    c = Cluster(procs, tmp_path, binary, nworkers=nworkers, work_ms=work_ms)
    if workers is not None:
        c.workers = workers
    with open(c.cell_conf) as f:
        conf = json.load(f)
    conf["pools"]["app"]["workers"] = c.workers
    mutate(conf)
    with open(c.cell_conf, "w") as f:
        json.dump(conf, f, indent=2)
    return c


def start(c, sample_workers=True):
    c.start_region()
    if sample_workers:
        c.start_workers()
    c.start_cell()
    return c


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def raw_exchange(addr, data, timeout=5.0):
    """Sends data, reads until the server closes; returns the bytes received."""
    s = socket.create_connection(("127.0.0.1", port_of(addr)), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def split_response(raw):
    """(status line, {lower name: value}, body) of the first response in raw."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", len(body)))
    return lines[0], hdrs, body[:n]


def metrics(c):
    return http_request(c.cell_admin, "GET", "/metrics")[2].decode()


def metric(c, series, text=None):
    """The value of one exact series line (name{labels}), or None when absent."""
    text = text if text is not None else metrics(c)
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ", 1)[1])
    return None


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class RecordingWorker:
    """A tiny HTTP/1.1 worker on 127.0.0.1 that records the exact bytes of every
    request it receives (head + Content-Length body) and answers 200 "ok"."""

    def __init__(self):
        self.addr = "127.0.0.1:%d" % free_port()
        self.requests = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port_of(self.addr)))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(10)
        buf = b""
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                n = int(m.group(1)) if m else 0
                while len(rest) < n:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                with self.lock:
                    self.requests.append(head + b"\r\n\r\n" + rest[:n])
                buf = rest[n:]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            return
        finally:
            conn.close()

    def seen(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=5)


def slow_send(addr, chunks, interval, timeout=30.0):
    """Connects, sends each chunk interval seconds apart while the connection is
    open; returns (bytes received, seconds from the first byte to the close)."""
    s = socket.create_connection(("127.0.0.1", port_of(addr)), timeout=timeout)
    s.setblocking(False)
    out = b""
    t0 = time.monotonic()
    closed_at = None
    i = 0
    next_send = t0
    deadline = t0 + timeout
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if i < len(chunks) and now >= next_send:
                try:
                    s.send(chunks[i])
                except OSError:
                    pass
                i += 1
                next_send = now + interval
            try:
                chunk = s.recv(65536)
                if not chunk:
                    closed_at = time.monotonic()
                    break
                out += chunk
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                closed_at = time.monotonic()
                break
    finally:
        s.close()
    return out, (closed_at - t0) if closed_at else None
