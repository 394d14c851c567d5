#!/usr/bin/python3
"""Peer benchmark for Metrocell (`make bench`): the cell against nginx, HAProxy and
redis-server on this machine, configured fairly, one server core each.

Each scenario starts Metrocell and its peers pinned to one core (BENCH_SERVER_CPU,
default 1), drives them from the other core (BENCH_LOAD_CPU, default 0) with wrk or
redis-benchmark, and measures per run: requests per second, p99 latency, the
server's CPU-seconds (utime + stime of every process of the server, from
/proc/PID/stat before and after the run), bytes per response (one raw request) and
the CPU the rest of the machine used meanwhile. Runs alternate between Metrocell and
its peers; each is repeated BENCH_REPEAT times and medians are reported with the
spread. Results go to build/bench/results.json (format in docs/benchmarks.md).

Adding a scenario is one entry in scenarios() below: a Scenario with a Side for
Metrocell and one per peer, each side a start function (build a config, start the
server) plus a driver (wrk_get, wrk_put, redis_set) and a probe for the response
size. The starters (start_cell, start_nginx, start_haproxy, start_redis,
start_varnish) take the config text that differs per scenario.

Every process is started by this script, pinned with taskset, given
PR_SET_PDEATHSIG so it cannot outlive the script, and stopped by its PID.
Standard library only; run with /usr/bin/python3.
"""

import argparse
import csv
import ctypes
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY_BYTES = 100

# ---------------------------------------------------------------------------------
# settings


class Settings:
    """Everything a run depends on, from the environment and the command line."""

    def __init__(self, args):
        env = os.environ
        self.quick = args.quick
        self.repeat = int(env.get("BENCH_REPEAT") or (1 if args.quick else 3))
        self.seconds = int(env.get("BENCH_SECONDS") or (2 if args.quick else 5))
        self.warmup = int(env.get("BENCH_WARMUP") or 1)
        self.conns = int(env.get("BENCH_CONNS") or 32)
        self.put_conns = int(env.get("BENCH_PUT_CONNS") or 50)
        # Paced runs: each connection waits this many ms between requests, for latency
        # at a moderate rate (wrk's p99 at saturation is queueing, not service time).
        self.paced_delay_ms = int(env.get("BENCH_PACED_DELAY_MS") or (0 if args.quick else 10))
        self.only = [s for s in re.split(r"[,\s]+", args.only or env.get("BENCH_ONLY") or "") if s]
        self.server_cpu = env.get("BENCH_SERVER_CPU") or "1"
        self.load_cpu = env.get("BENCH_LOAD_CPU") or "0"
        self.perf = args.perf or env.get("BENCH_PERF") == "1"
        # A run during which other processes used more than this share of a core (other
        # jobs on a shared machine) is repeated, at most BENCH_RETRIES times; the last
        # attempt is kept either way and flagged "disturbed".
        self.max_other = float(env.get("BENCH_MAX_OTHER") or 0.25)
        self.retries = int(env.get("BENCH_RETRIES") or (0 if args.quick else 2))
        self.bin = env.get("BENCH_BIN") or os.path.join(REPO, "build", "metrocell")
        # Another metrocell binary (e.g. a build of main) measured as one more peer,
        # "metrocell_base", with the same config: before/after in the same run.
        self.base_bin = env.get("BENCH_BASE_BIN") or None
        self.out_dir = os.path.abspath(args.out or os.path.join(REPO, "build", "bench"))
        try:
            self.cell_conf_extra = json.loads(env.get("BENCH_CELL_CONF") or "{}")
        except ValueError as e:
            raise SystemExit("bench: BENCH_CELL_CONF is not JSON: %s" % e)
        if self.repeat < 1 or self.seconds < 1:
            raise SystemExit("bench: BENCH_REPEAT and BENCH_SECONDS must be >= 1")


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------
# processes: start pinned, measure CPU from /proc, stop by PID

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup():
    # Dies with the harness even when it is SIGKILLed; taskset execs, so it carries over.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgid(0, 0)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu_ticks(pid):
    """utime + stime of a process (all its threads, live and exited), in ticks."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def proc_children(pid):
    """Direct children of every thread of pid."""
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


def proc_tree(pid):
    seen, todo = [], [pid]
    while todo and len(seen) < 256:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(proc_children(p))
    return seen


def core_busy_ticks(cpus):
    """Busy ticks (everything but idle and iowait) of the listed CPUs, from /proc/stat."""
    want = set("cpu%s" % c for c in cpus)
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in want:
                v = [int(x) for x in parts[1:]]
                total += sum(v[:8]) - v[3] - v[4]  # minus idle, iowait
    return total


def all_procs_ticks():
    """{pid: (comm, utime + stime ticks)} of every process on the machine."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                data = f.read()
        except OSError:
            continue
        i, j = data.find("("), data.rfind(")")
        fields = data[j + 2:].split()
        out[int(d)] = (data[i + 1:j], int(fields[11]) + int(fields[12]))
    return out


class Server:
    """A started server: the process we spawned (its whole process tree counts)."""

    def __init__(self, name, popen, port, log_path, extra=None):
        self.name = name
        self.popen = popen
        self.port = port
        self.log_path = log_path
        self.extra = extra or {}
        self.known = {popen.pid}

    @property
    def pid(self):
        return self.popen.pid

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def pids(self):
        tree = proc_tree(self.pid) if self.popen.poll() is None else []
        self.known.update(tree)
        return tree

    def cpu_ticks(self):
        """{pid: ticks} over the server's process tree (nginx master + worker, ...)."""
        out = {}
        for p in self.pids():
            t = proc_cpu_ticks(p)
            if t is not None:
                out[p] = t
        return out

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self):
        pids = [p for p in self.pids() if p != self.pid]
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        # Children that outlived their parent (an nginx worker after a SIGKILLed master).
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


class Procs:
    """Every server the harness started, stopped by PID in reverse order."""

    def __init__(self, settings):
        self.s = settings
        self.started = []

    def start(self, name, argv, port, cpu, ready_timeout=20.0, env=None, extra=None):
        log_path = os.path.join(self.s.out_dir, "%s.log" % name)
        logf = open(log_path, "wb")
        e = dict(os.environ)
        if env:
            e.update(env)
        p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdin=subprocess.DEVNULL,
                             stdout=logf, stderr=subprocess.STDOUT, env=e,
                             preexec_fn=_child_setup, cwd=self.s.out_dir)
        logf.close()
        srv = Server(name, p, port, log_path, extra)
        self.started.append(srv)
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            if p.poll() is not None:
                raise BenchError("%s exited with %s before listening; log %s:\n%s" %
                                 (name, p.returncode, log_path, srv.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                srv.pids()
                return srv
            except OSError:
                time.sleep(0.05)
        raise BenchError("%s did not listen on port %d within %.0f s; log %s:\n%s" %
                         (name, port, ready_timeout, log_path, srv.log_tail()))

    def stop(self, srv):
        srv.stop()
        if srv in self.started:
            self.started.remove(srv)

    def stop_all(self):
        for srv in reversed(list(self.started)):
            try:
                self.stop(srv)
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print("bench: stopping %s (pid %d): %r" % (srv.name, srv.pid, e), file=sys.stderr)


def run_client(argv, cpu, timeout):
    """Runs a load generator pinned to cpu; returns (stdout, stderr, rc, cpu_s, wall_s)."""
    t0 = time.monotonic()
    p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_child_setup)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate()
        raise BenchError("%s ran longer than %.0f s" % (argv[0], timeout))
    except BaseException:
        # Interrupted: the client is in its own process group, so stop it here.
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        raise
    wall = time.monotonic() - t0
    # communicate() reaped it: its CPU is in our children's rusage.
    return out.decode(errors="replace"), err.decode(errors="replace"), p.returncode, wall


def children_cpu_s():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------
# load generators and their output parsers

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise BenchError("cannot read a wrk duration from %r" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    """Requests, req/s, latency percentiles (ms) and errors from `wrk --latency`."""
    r = {"non2xx": 0, "socket_errors": 0}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", out, re.M)
    if not m:
        raise BenchError("no request count in wrk output:\n" + out)
    r["requests"] = int(m.group(1))
    r["duration_s"] = _ms(m.group(2)) / 1e3
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    if not m:
        raise BenchError("no Requests/sec in wrk output:\n" + out)
    r["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, out, re.M)
        if m:
            r["p%s_ms" % pct] = _ms(m.group(1))
    if "p99_ms" not in r:
        raise BenchError("no latency distribution in wrk output (--latency):\n" + out)
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = sum(int(x) for x in m.groups())
    return r


def parse_redis_benchmark(out):
    """req/s and latency percentiles (ms) from `redis-benchmark --csv` (7.x:
    "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...). Falls back
    to the `-q` line ("SET: N requests per second, p50=X msec") for req/s and p50."""
    # Progress lines end in \r (when stdout is a terminal): treat them as lines.
    text = out.replace("\r", "\n")
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error:
        rows = []
    header = next((row for row in rows if "rps" in row), None)
    if header:
        for row in rows[rows.index(header) + 1:]:
            if len(row) == len(header) and row[0].upper().startswith("SET"):
                d = dict(zip(header, row))
                r = {"rps": float(d["rps"])}
                for k, v in d.items():
                    m = re.fullmatch(r"(p\d+|avg|min|max)_latency_ms", k)
                    if m:
                        r["%s_ms" % m.group(1)] = float(v)
                if "p99_ms" in r:
                    return r
    m = re.search(r"SET:\s*([0-9.]+) requests per second(?:, p50=([0-9.]+) msec)?", text)
    if m:
        r = {"rps": float(m.group(1))}
        if m.group(2):
            r["p50_ms"] = float(m.group(2))
        return r
    raise BenchError("cannot read redis-benchmark output:\n" + out)


LUA_PUT = r"""
-- PUT of a BODY_BYTES-byte value to a distinct key per request (keys PREFIX1, PREFIX2, ...).
local n = 0
local prefix = "k"
local body = string.rep("v", %d)
local headers = {["Content-Type"] = "application/octet-stream"}
function init(args)
  if args[1] then prefix = args[1] end
end
request = function()
  n = n + 1
  return wrk.format("PUT", "/v1/kv/" .. prefix .. n, headers, body)
end
""" % BODY_BYTES

LUA_PACED = r"""
-- Each connection waits this many ms after a response before its next request.
local d = 10
function init(args)
  if args[1] then d = tonumber(args[1]) end
end
function delay()
  return d
end
"""

LUA_PUT_PACED = LUA_PUT.replace("function init(args)\n  if args[1] then prefix = args[1] end\nend",
                                "local d = 10\nfunction init(args)\n  if args[1] then prefix = args[1] end\n"
                                "  if args[2] then d = tonumber(args[2]) end\nend\nfunction delay()\n"
                                "  return d\nend")


def _lua(ctx, name, text):
    path = os.path.join(ctx.s.out_dir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def wrk_get(path, conns=None):
    """Driver: wrk GETs of one path; conns defaults to BENCH_CONNS."""

    def drive(ctx, srv, seconds, run, paced):
        c = conns or ctx.s.conns
        argv = ["wrk", "-t1", "-c%d" % c, "-d%ds" % seconds, "--latency", "--timeout", "5s"]
        args = []
        if paced:
            argv += ["-s", _lua(ctx, "paced.lua", LUA_PACED)]
            args = ["--", str(ctx.s.paced_delay_ms)]
        return wrk_run(ctx, argv + ["http://%s%s" % (srv.addr, path)] + args, seconds)

    drive.kind = "wrk"
    drive.conns = conns
    return drive


def wrk_put(conns=None):
    """Driver: wrk PUTs of a BODY_BYTES value to a distinct key per request."""

    def drive(ctx, srv, seconds, run, paced):
        c = conns or ctx.s.put_conns
        prefix = "b%d-%s-" % (os.getpid(), run)
        argv = ["wrk", "-t1", "-c%d" % c, "-d%ds" % seconds, "--latency", "--timeout", "5s"]
        if paced:
            script = _lua(ctx, "put_paced.lua", LUA_PUT_PACED)
            args = ["--", prefix, str(ctx.s.paced_delay_ms)]
        else:
            script = _lua(ctx, "put.lua", LUA_PUT)
            args = ["--", prefix]
        return wrk_run(ctx, argv + ["-s", script, "http://%s/" % srv.addr] + args, seconds)

    drive.kind = "wrk"
    drive.conns = conns
    return drive


def wrk_run(ctx, argv, seconds):
    out, err, rc, wall = run_client(argv, ctx.s.load_cpu, seconds + 30)
    if rc != 0:
        raise BenchError("wrk exited %d: %s%s" % (rc, out, err))
    r = parse_wrk(out)
    r["client_wall_s"] = wall
    return r


def redis_set(conns=None, keyspace=100000):
    """Driver: redis-benchmark SETs of BODY_BYTES values over a random keyspace. It runs
    a request count, not a time: the count comes from the side's last measured rate."""

    def drive(ctx, srv, seconds, run, paced):
        if paced:
            return None  # redis-benchmark cannot pace its requests
        c = conns or ctx.s.put_conns
        rate = srv.extra.get("rate") or 2000.0
        n = max(1000, int(rate * seconds))
        argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(srv.port), "-t", "set",
                "-c", str(c), "-d", str(BODY_BYTES), "-r", str(keyspace), "-n", str(n),
                "--csv", "--precision", "3"]
        out, err, rc, wall = run_client(argv, ctx.s.load_cpu, seconds * 20 + 60)
        if rc != 0:
            raise BenchError("redis-benchmark exited %d: %s%s" % (rc, out, err))
        r = parse_redis_benchmark(out)
        r["requests"] = n
        r["duration_s"] = n / r["rps"] if r["rps"] else wall
        r["client_wall_s"] = wall
        r["non2xx"] = 0
        r["socket_errors"] = 0
        srv.extra["rate"] = r["rps"]
        return r

    drive.kind = "redis-benchmark"
    drive.conns = conns
    return drive


# ---------------------------------------------------------------------------------
# probes: bytes of one response on the wire


def _recv_http_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed before the response headers")
        data += chunk
        if len(data) > 1 << 20:
            raise BenchError("response headers over 1 MiB")
    head, rest = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if not m:
        raise BenchError("response without Content-Length: %r" % head[:200])
    want = int(m.group(1))
    while len(rest) < want:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed inside the body")
        rest += chunk
    status = int(head.split(b" ", 2)[1])
    return status, len(head) + 4 + want, rest[:want]


def http_probe(method="GET", path="/", body=None):
    """Probe: sends one request the way wrk does and returns the response's bytes."""

    def probe(ctx, srv):
        req = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, srv.addr)
        if body is not None:
            req += "Content-Length: %d\r\n" % len(body)
        raw = req.encode() + b"\r\n" + (body or b"")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(raw)
            status, nbytes, _ = _recv_http_response(s)
        if status >= 300:
            raise BenchError("%s %s on %s answered %d" % (method, path, srv.name, status))
        return nbytes

    return probe


def cache_probe(path, header, value):
    """Probe for cache scenarios: GETs path twice (the first may be the fill) and
    checks that the second answer is a hit (header starts with value, e.g.
    X-Cache-Status: HIT); returns the hit's bytes."""

    def probe(ctx, srv):
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, srv.addr)).encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            for _ in range(2):
                s.sendall(req)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise BenchError("%s closed the connection" % srv.name)
                    data += chunk
                head = data.split(b"\r\n\r\n", 1)[0]
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                want = len(head) + 4 + (int(m.group(1)) if m else 0)
                while len(data) < want:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise BenchError("%s closed the connection" % srv.name)
                    data += chunk
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"\r\n" + header.encode() + rb":\s*([^\r]*)", head, re.I)
        got = m.group(1).decode(errors="replace") if m else None
        if status != 200 or not got or not got.lower().startswith(value.lower()):
            raise BenchError("%s: GET %s is no cache hit (status %d, %s: %s)" %
                             (srv.name, path, status, header, got))
        return want

    return probe


def redis_probe(ctx, srv):
    """Bytes of the reply to one SET of a BODY_BYTES value ("+OK\\r\\n")."""
    val = b"v" * BODY_BYTES
    cmd = b"*3\r\n$3\r\nSET\r\n$11\r\nbench-probe\r\n$%d\r\n%s\r\n" % (len(val), val)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(cmd)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"+OK"):
        raise BenchError("redis SET answered %r" % data[:80])
    return len(data)


# ---------------------------------------------------------------------------------
# servers: config generation under build/bench and the pinned start


class Ctx:
    """What starters and drivers share: settings, processes, the scenario's backend."""

    def __init__(self, settings, procs):
        self.s = settings
        self.procs = procs
        self.backend = None  # Server of the scenario's backend, if any
        self.region = None  # Server of the scenario's region, if any (extra["repl"])
        self.cell_suffix = ""  # appended to the cell's name (the base binary's cell)

    def path(self, *parts):
        return os.path.join(self.s.out_dir, *parts)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)


def start_sample_worker(ctx, name="backend", cpu=None, body_bytes=BODY_BYTES):
    """The backend: `metrocell sample-worker` with a fixed 100 B body. During the runs
    it is pinned to the load core with wrk (the server core belongs to the server under
    test); cpu overrides that for the backend-alone measurement."""
    port = free_port()
    return ctx.procs.start(name, [ctx.s.bin, "sample-worker", "--listen", "127.0.0.1:%d" % port,
                                  "--body-bytes", str(body_bytes)], port, cpu or ctx.s.load_cpu)


CACHE_BODY_BYTES = int(os.environ.get("BENCH_CACHE_BODY_BYTES") or 1024)
CACHE_PATH = "/static/obj.bin"
# Fresh for the whole benchmark: every measured request is a hit.
CACHE_CONTROL = "public, max-age=86400"


def start_origin(ctx, name="origin", cpu=None):
    """The origin of the cache scenarios: `metrocell sample-origin` answering every
    path with a CACHE_BODY_BYTES JSON body, an ETag and Cache-Control CACHE_CONTROL.
    Only warm-up misses reach it; it runs on the load core."""
    port = free_port()
    return ctx.procs.start(name, [ctx.s.bin, "sample-origin", "--listen", "127.0.0.1:%d" % port,
                                  "--body-bytes", str(CACHE_BODY_BYTES),
                                  "--cache-control", CACHE_CONTROL], port,
                           cpu or ctx.s.load_cpu)


def origin_requests(ctx):
    """Requests the scenario's origin has answered (its /_origin/stats)."""
    with socket.create_connection(("127.0.0.1", ctx.backend.port), timeout=10) as s:
        s.sendall(b"GET /_origin/stats HTTP/1.1\r\nHost: origin\r\n\r\n")
        status, _, body = _recv_http_response(s)
    if status != 200:
        raise BenchError("origin stats answered %d" % status)
    return int(json.loads(body)["requests"])


def _deep_merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def start_cell(routes=None, pools=None, setup=None, conf=None):
    """Starter for a cell. routes/pools: functions of ctx giving the cell's routes and
    pools; the default is a `proxy` route to the backend plus a `kv` route. setup(ctx,
    srv) runs once the cell listens (e.g. to store the value kv_get reads). conf(ctx)
    gives extra keys merged into the generated config (before BENCH_CELL_CONF)."""

    def start(ctx, name):
        port, admin, repl = free_port(), free_port(), free_port()
        data_dir = ctx.path("%s-data" % name)
        shutil.rmtree(data_dir, ignore_errors=True)
        p = pools(ctx) if pools else ({"backend": {"workers": [ctx.backend.addr]}}
                                      if ctx.backend else {})
        r = routes(ctx) if routes else ([{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}] +
                                        ([{"name": "proxy", "prefix": "/", "kind": "proxy",
                                           "pool": "backend"}] if ctx.backend else []))
        doc = {
            "cell": "bench" + ctx.cell_suffix,
            "listen": {"http": "127.0.0.1:%d" % port, "admin": "127.0.0.1:%d" % admin},
            "data_dir": data_dir,
            # Without a region in the scenario, writes stay in the local write log, as
            # during a region outage (redis-server, the write peer, does not replicate).
            "region": ({"repl": ctx.region.extra["repl"], "http": ctx.region.addr}
                       if ctx.region else {"repl": "127.0.0.1:%d" % repl}),
            "log": {"level": "warn"},
            # one event-loop thread, as the peers get one worker each (the default,
            # the CPUs the process may use, is 1 under taskset too)
            "threads": 1,
            "pools": p,
            "routes": r,
        }
        if conf:
            _deep_merge(doc, conf(ctx))
        _deep_merge(doc, ctx.s.cell_conf_extra)
        path = ctx.write("%s.json" % name, json.dumps(doc, indent=2) + "\n")
        srv = ctx.procs.start(name, [ctx.s.bin, "cell", "-c", path], port, ctx.s.server_cpu)
        if setup:
            setup(ctx, srv)
        return srv

    return start


def start_region(conf=None, cpu=None):
    """Starter for a region (for scenarios whose cell needs one, e.g. the shield of a
    cache route). conf(ctx) gives extra keys merged into the generated region config.
    It runs on the load core by default: it is not the server under test."""

    def start(ctx, name):
        port, repl = free_port(), free_port()
        data_dir = ctx.path("%s-data" % name)
        shutil.rmtree(data_dir, ignore_errors=True)
        c = {"region": "bench", "listen": {"http": "127.0.0.1:%d" % port,
                                           "repl": "127.0.0.1:%d" % repl},
             "data_dir": data_dir, "log": {"level": "warn"}}
        if conf:
            _deep_merge(c, conf(ctx))
        path = ctx.write("%s.json" % name, json.dumps(c, indent=2) + "\n")
        return ctx.procs.start(name, [ctx.s.bin, "region", "-c", path], port,
                               cpu or ctx.s.load_cpu, extra={"repl": "127.0.0.1:%d" % repl})

    return start


def start_nginx(server_conf, http_conf=""):
    """Starter for nginx: one worker, access log off, keep-alive requests raised towards
    clients (upstream blocks set their own). server_conf(ctx) gives the body of the
    server block, http_conf(ctx) extra http-level text (upstreams, caches)."""

    def start(ctx, name):
        port = free_port()
        prefix = ctx.path(name)
        os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""
        tmp = os.path.join(prefix, "tmp")
        conf = """# generated by scripts/bench.py
{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  default_type application/octet-stream;
{http_conf}
  server {{
    listen 127.0.0.1:{port};
{server_conf}
  }}
}}
""".format(user=user, prefix=prefix, tmp=tmp, port=port,
           http_conf=http_conf(ctx) if callable(http_conf) else http_conf,
           server_conf=server_conf(ctx))
        path = ctx.write("%s.conf" % name, conf)
        return ctx.procs.start(name, ["nginx", "-e", os.path.join(prefix, "error.log"), "-p",
                                      prefix, "-c", path], port, ctx.s.server_cpu)

    return start


def nginx_upstream(ctx):
    return """  upstream backend {
    server %s;
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }""" % ctx.backend.addr


NGINX_PROXY_LOCATION = """    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }"""


def start_haproxy(ctx, name):
    """HAProxy in front of the backend: one thread, keep-alive both sides, http-reuse
    always."""
    port = free_port()
    conf = """# generated by scripts/bench.py
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server s1 %s maxconn 64
""" % (port, ctx.backend.addr)
    path = ctx.write("%s.cfg" % name, conf)
    return ctx.procs.start(name, ["haproxy", "-db", "-f", path], port, ctx.s.server_cpu)


def start_redis(ctx, name):
    """redis-server with every write fsync'd before its reply (appendfsync always)."""
    port = free_port()
    d = ctx.path("%s-data" % name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    conf = """# generated by scripts/bench.py
bind 127.0.0.1
port %d
protected-mode no
daemonize no
dir %s
save ""
appendonly yes
appendfsync always
io-threads 1
logfile ""
loglevel warning
""" % (port, d)
    path = ctx.write("%s.conf" % name, conf)
    return ctx.procs.start(name, ["redis-server", path], port, ctx.s.server_cpu)


def start_varnish(vcl, storage="malloc,256m", cpu=None):
    """Starter for Varnish (for cache scenarios): one thread pool, the VCL text from
    vcl(ctx) with the backend already in ctx.backend. Note BENCHMARKING.md: Varnish's
    tail is erratic when pinned to one core; report its unpinned figure beside it
    (a second peer with cpu="0,1")."""

    def start(ctx, name):
        port = free_port()
        workdir = ctx.path("%s-work" % name)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        path = ctx.write("%s.vcl" % name, vcl(ctx))
        argv = ["varnishd", "-F", "-n", workdir, "-a", "127.0.0.1:%d" % port, "-f", path,
                "-s", storage, "-p", "thread_pools=1", "-T", "none"]
        if os.geteuid() == 0:
            argv += ["-j", "none"]
        return ctx.procs.start(name, argv, port, cpu or ctx.s.server_cpu, ready_timeout=60.0)

    return start


# ---------------------------------------------------------------------------------
# scenarios


class Side:
    """One server in a scenario: how to start it, drive it and probe its response size.
    needs: programs that must be installed (the side is skipped, with a note, if not)."""

    def __init__(self, start, drive, probe, needs=()):
        self.start = start
        self.drive = drive
        self.probe = probe
        self.needs = tuple(needs)


class Scenario:
    """name: the results' scenario name. what: one line for the table and the docs.
    backend: starter of a backend shared by every side (or None); region: starter of a
    region for the cell (start_region(), or None). goal: the ratio the issues ask for
    (req/s per CPU-second, Metrocell/peer), for the report only. backend_alone: measure
    the backend alone first (proxy scenarios). backend_requests(ctx): the requests the
    backend has answered, read before and after the measured runs (a cache scenario's
    origin: 0 during the runs means every measured request was a hit)."""

    def __init__(self, name, what, metrocell, peers, backend=None, goal=None,
                 p99_goal=None, region=None, backend_alone=True, backend_requests=None):
        self.name = name
        self.what = what
        self.metrocell = metrocell
        self.peers = peers  # {peer name: Side}
        self.backend = backend
        self.region = region
        self.goal = goal or {}
        self.p99_goal = p99_goal or {}
        self.backend_alone = backend_alone
        self.backend_requests = backend_requests


KV_GET_KEY = "bench-100"
KV_GET_VALUE = b"v" * BODY_BYTES


def put_kv_get_value(ctx, srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"PUT /v1/kv/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" %
                  (KV_GET_KEY.encode(), len(KV_GET_VALUE), KV_GET_VALUE))
        status, _, _ = _recv_http_response(s)
    if status != 200:
        raise BenchError("storing the kv_get value answered %d" % status)


def nginx_cache_http(ctx):
    """nginx proxy_cache of the origin: the cache directory in build/bench (hits are
    served from the page cache; open_file_cache keeps the file open), keep-alive to
    the origin, the key of the cell's (host and target)."""
    d = ctx.path("nginx-cache")
    shutil.rmtree(d, ignore_errors=True)
    return """  sendfile %s;
  tcp_nopush %s;
  open_file_cache max=1000 inactive=60s;
  proxy_cache_path %s levels=1:2 keys_zone=edge:16m max_size=256m inactive=1h
                   use_temp_path=off;
  upstream origin {
    server %s;
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }""" % (os.environ.get("BENCH_NGINX_SENDFILE", "off"), os.environ.get("BENCH_NGINX_NOPUSH", "off"),
         d, ctx.backend.addr)


NGINX_CACHE_LOCATION = """    location /static/ {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
      proxy_cache_key $host$request_uri;
      proxy_cache_lock on;
      proxy_cache_revalidate on;
      add_header X-Cache-Status $upstream_cache_status;
    }"""


def varnish_cache_vcl(ctx):
    """Varnish in front of the origin: malloc storage (start_varnish), grace off so a
    hit is a fresh hit, X-Cache: HIT on hits."""
    host, port = ctx.backend.addr.rsplit(":", 1)
    return """vcl 4.1;

backend origin {
    .host = "%s";
    .port = "%s";
}

sub vcl_backend_response {
    set beresp.grace = 0s;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
""" % (host, port)


def cell_cache_conf(ctx):
    return {"state": {"durability": "none"},
            "cache": {"max_bytes": 268435456, "max_object_bytes": 1048576}}


def region_shield_conf(ctx):
    return {"state": {"durability": "none"},
            "shield": {"origin": ctx.backend.addr, "max_bytes": 268435456}}


def scenarios():
    """The scenario table. To add one, append a Scenario (see the docstrings above)."""
    proxy_path = "/bench/proxy"
    return [
        Scenario(
            "proxy", "GET through the server to a keep-alive backend (sample-worker, 100 B body)",
            backend=start_sample_worker,
            metrocell=Side(start_cell(), wrk_get(proxy_path), http_probe("GET", proxy_path)),
            peers={
                "nginx": Side(start_nginx(lambda ctx: NGINX_PROXY_LOCATION, nginx_upstream),
                              wrk_get(proxy_path), http_probe("GET", proxy_path), needs=["nginx"]),
                "haproxy": Side(start_haproxy, wrk_get(proxy_path),
                                http_probe("GET", proxy_path), needs=["haproxy"]),
            },
            goal={"nginx": 1.1}, p99_goal={"nginx": 1.0}),
        Scenario(
            "kv_get", "GET /v1/kv/KEY of a 100 B value vs nginx returning the same 100 B body",
            metrocell=Side(start_cell(setup=put_kv_get_value), wrk_get("/v1/kv/" + KV_GET_KEY),
                           http_probe("GET", "/v1/kv/" + KV_GET_KEY)),
            peers={
                "nginx": Side(start_nginx(lambda ctx: "    location = /v1/kv/%s {\n"
                                          "      return 200 \"%s\";\n    }"
                                          % (KV_GET_KEY, KV_GET_VALUE.decode())),
                              wrk_get("/v1/kv/" + KV_GET_KEY),
                              http_probe("GET", "/v1/kv/" + KV_GET_KEY), needs=["nginx"]),
            },
            goal={"nginx": 0.9}),
        Scenario(
            "kv_put_durable", "durable write of a 100 B value to a distinct key, 50 clients: "
            "HTTP PUT (fsync'd group commit) vs redis SET with appendfsync always",
            metrocell=Side(start_cell(), wrk_put(),
                           http_probe("PUT", "/v1/kv/bench-probe", b"v" * BODY_BYTES)),
            peers={
                "redis": Side(start_redis, redis_set(), redis_probe,
                              needs=["redis-server", "redis-benchmark"]),
            },
            goal={"redis": 1.0}),
        Scenario(
            "cache_hit", "GET of one cached %d B object, always a fresh hit: a cell `cache` route "
            "(region shield behind it) vs nginx proxy_cache and Varnish" % CACHE_BODY_BYTES,
            backend=start_origin, backend_alone=False, backend_requests=origin_requests,
            region=start_region(region_shield_conf),
            metrocell=Side(start_cell(routes=lambda ctx: [{"name": "static", "prefix": "/static/",
                                                          "kind": "cache"}],
                                      pools=lambda ctx: {}, conf=cell_cache_conf),
                           wrk_get(CACHE_PATH),
                           cache_probe(CACHE_PATH, "X-Metrocell-Cache", "hit; tier=cell")),
            peers={
                "nginx": Side(start_nginx(lambda ctx: NGINX_CACHE_LOCATION, nginx_cache_http),
                              wrk_get(CACHE_PATH), cache_probe(CACHE_PATH, "X-Cache-Status", "HIT"),
                              needs=["nginx"]),
                "varnish": Side(start_varnish(varnish_cache_vcl), wrk_get(CACHE_PATH),
                                cache_probe(CACHE_PATH, "X-Cache", "HIT"), needs=["varnishd"]),
                # BENCHMARKING.md: Varnish's tail is erratic on one core; its unpinned
                # figure (both cores, shared with wrk) beside the pinned one.
                "varnish_unpinned": Side(start_varnish(varnish_cache_vcl, cpu="0,1"),
                                         wrk_get(CACHE_PATH),
                                         cache_probe(CACHE_PATH, "X-Cache", "HIT"),
                                         needs=["varnishd"]),
            },
            goal={"nginx": 1.5}, p99_goal={"nginx": 1.0}),
    ]


# ---------------------------------------------------------------------------------
# measurement


def measure(ctx, side, srv, label, seconds, run, paced=False):
    """One run: the driver's figures plus server CPU, machine CPU and client CPU."""
    before = srv.cpu_ticks()
    busy0 = core_busy_ticks([ctx.s.server_cpu, ctx.s.load_cpu])
    bk0 = ctx.backend.cpu_ticks() if ctx.backend else {}
    cl0 = children_cpu_s()
    all0 = all_procs_ticks()
    r = side.drive(ctx, srv, seconds, "%s%s" % (run, "p" if paced else ""), paced)
    if r is None:
        return None
    cl1 = children_cpu_s()
    all1 = all_procs_ticks()
    after = srv.cpu_ticks()
    bk1 = ctx.backend.cpu_ticks() if ctx.backend else {}
    busy1 = core_busy_ticks([ctx.s.server_cpu, ctx.s.load_cpu])
    if srv.popen.poll() is not None:
        raise BenchError("%s exited during the run; log:\n%s" % (srv.name, srv.log_tail()))
    cpu = sum(after[p] - before.get(p, 0) for p in after) / CLK_TCK
    backend_cpu = sum(bk1[p] - bk0.get(p, 0) for p in bk1) / CLK_TCK
    client_cpu = cl1 - cl0
    wall = r.get("duration_s") or r["client_wall_s"]
    machine = (busy1 - busy0) / CLK_TCK
    r.update({
        "server": label,
        "paced": paced,
        "server_cpu_s": round(cpu, 3),
        "server_core_util": round(cpu / wall, 3) if wall else None,
        "rps_per_cpu": round(r["requests"] / cpu, 1) if cpu > 0 else None,
        "load_core_util": round((client_cpu + backend_cpu) / wall, 3) if wall else None,
        "backend_cpu_s": round(backend_cpu, 3),
        "client_cpu_s": round(client_cpu, 3),
        # CPU time on the two cores charged to nobody above: other processes on the
        # machine (other jobs), interrupts. Large values mean a disturbed run.
        "other_cpu_s": round(max(0.0, machine - cpu - backend_cpu - client_cpu), 3),
        # The busiest of those other processes (only ones alive before and after the run).
        "other_top": other_top(all0, all1, set(after) | set(bk1) | {os.getpid()}),
    })
    return r


def measure_settled(ctx, side, srv, label, seconds, run, paced=False):
    """measure(), repeated while other processes disturbed the run (see max_other)."""
    for attempt in range(ctx.s.retries + 1):
        r = measure(ctx, side, srv, label, seconds, run, paced)
        if r is None:
            return None
        wall = r.get("duration_s") or r["client_wall_s"]
        r["attempt"] = attempt + 1
        r["disturbed"] = r["other_cpu_s"] > ctx.s.max_other * wall
        if not r["disturbed"]:
            break
        if attempt < ctx.s.retries:
            print("   (%s %s %s disturbed: other processes used %.2f CPU-s%s; again)" %
                  (label, "paced run" if paced else "run", run + 1, r["other_cpu_s"],
                   " (%s)" % ", ".join("%s %.2f" % x for x in r["other_top"])
                   if r["other_top"] else ""), flush=True)
    return r


def other_top(all0, all1, ours, n=4):
    used = []
    for pid, (comm, t1) in all1.items():
        if pid in ours or pid not in all0 or all0[pid][0] != comm:
            continue
        d = (t1 - all0[pid][1]) / CLK_TCK
        if d >= 0.05:
            used.append(("%s[%d]" % (comm, pid), round(d, 2)))
    used.sort(key=lambda x: -x[1])
    return used[:n]


def summarize(runs, key):
    vals = [r[key] for r in runs if r and r.get(key) is not None]
    if not vals:
        return None
    med = statistics.median(vals)
    return {"median": round(med, 4), "min": round(min(vals), 4), "max": round(max(vals), 4),
            "spread_pct": round(100.0 * (max(vals) - min(vals)) / med, 1) if med else None,
            "n": len(vals)}


PERF_SYSCALLS = ("read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg",
                 "sendfile64", "epoll_wait", "epoll_pwait", "epoll_ctl", "accept", "accept4",
                 "close", "setsockopt", "futex", "pwrite64", "fsync", "fdatasync", "msync",
                 "ioctl", "clock_gettime", "getpid")


def _perf_events():
    ev = ["raw_syscalls:sys_enter", "context-switches"]
    base = next((d for d in ("/sys/kernel/tracing/events/syscalls",
                             "/sys/kernel/debug/tracing/events/syscalls") if os.path.isdir(d)), None)
    for name in PERF_SYSCALLS:
        if base and os.path.isdir(os.path.join(base, "sys_enter_" + name)):
            ev.append("syscalls:sys_enter_" + name)
    return ev


def _spawn_perf(ctx, argv):
    return subprocess.Popen(["taskset", "-c", ctx.s.load_cpu, "perf"] + argv,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_child_setup)


def _stop_perf(p):
    if p.poll() is None:
        os.kill(p.pid, signal.SIGINT)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        _, err = p.communicate()
    return err.decode(errors="replace")


def _perf_report(data, sort):
    p = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
                        "--percent-limit", "0.3", "-F", "overhead," + sort],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
    return p.stdout.decode(errors="replace")


def perf_profile(ctx, side, srv, name, seconds, record):
    """An extra run, not in the figures: `perf stat` counts the server's system calls and
    context switches per request; with record, `perf record -g` samples where it spends
    its time (top symbols by self time, and by shared object). Full reports are written
    next to results.json as perf-NAME.txt."""
    pids = ",".join(str(p) for p in srv.pids())
    stat_out = ctx.path("perf-%s.stat" % name)
    procs = [_spawn_perf(ctx, ["stat", "-x", ",", "-o", stat_out, "-e", ",".join(_perf_events()),
                               "-p", pids])]
    data = ctx.path("perf-%s.data" % name)
    if record:
        procs.append(_spawn_perf(ctx, ["record", "-g", "-F", "2999", "-o", data, "-p", pids]))
    errs = []
    try:
        time.sleep(0.5)
        r = side.drive(ctx, srv, seconds, "perf", False)
    finally:
        for p in procs:
            errs.append(_stop_perf(p))
    out = {"requests": r["requests"], "rps_under_perf": r["rps"]}
    calls = {}
    try:
        with open(stat_out) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) > 2 and parts[0].isdigit():
                    calls[parts[2]] = int(parts[0])
    except OSError:
        pass
    if not calls:
        raise BenchError("perf stat counted nothing: %s" % " ".join(errs))
    n = max(1, r["requests"])
    out["syscalls_per_request"] = round(calls.get("raw_syscalls:sys_enter", 0) / n, 2)
    out["context_switches_per_request"] = round(calls.get("context-switches", 0) / n, 3)
    out["by_syscall_per_request"] = {k.split("sys_enter_", 1)[1]: round(v / n, 3)
                                     for k, v in sorted(calls.items(), key=lambda x: -x[1])
                                     if "sys_enter_" in k and v}
    if not record:
        return out
    if not os.path.exists(data):
        raise BenchError("perf record wrote nothing: %s" % " ".join(errs))
    text = _perf_report(data, "dso,sym")
    dso_text = _perf_report(data, "dso")
    comm_text = _perf_report(data, "pid")  # "pid" sorts by thread: TID:COMM
    with open(ctx.path("perf-%s.txt" % name), "w") as f:
        f.write("# syscalls per request: %s\n" % json.dumps(out) + text +
                "\n# by DSO\n" + dso_text + "\n# by thread\n" + comm_text)
    top = []
    for line in text.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
        if m:
            top.append({"self_pct": float(m.group(1)), "dso": m.group(2), "symbol": m.group(4)})
    out["top"] = top[:30]
    out["by_dso"] = [{"self_pct": float(m.group(1)), "dso": m.group(2)} for m in
                     (re.match(r"\s*([0-9.]+)%\s+(\S+)\s*$", x) for x in dso_text.splitlines())
                     if m]
    # Inclusive time under each system call's kernel entry point (callers included).
    inc = subprocess.run(["perf", "report", "-i", data, "--children", "--stdio", "-g", "none",
                          "--sort", "sym"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         timeout=300).stdout.decode(errors="replace")
    out["kernel_by_syscall"] = []
    for line in inc.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+[0-9.]+%\s+\[k\]\s+(__x64_sys_\w+|ksys_\w+|do_writev|do_fsync|"
                     r"do_futex|do_epoll_wait)\s*$", line)
        if m and float(m.group(1)) >= 0.5:
            out["kernel_by_syscall"].append({"incl_pct": float(m.group(1)), "entry": m.group(2)})
    out["by_thread"] = [{"self_pct": float(m.group(1)), "tid": m.group(2)} for m in
                        (re.match(r"\s*([0-9.]+)%\s+(\S+)\s*$", x) for x in comm_text.splitlines())
                        if m]
    return out


def fmt_k(v):
    if v is None:
        return "-"
    return "%.1fk" % (v / 1e3) if v >= 1e4 else "%.0f" % v


def fmt_ms(v):
    return "-" if v is None else "%.2f" % v


def with_bin(start, path):
    """A starter that runs start() with another metrocell binary."""

    def st(ctx, name):
        saved = ctx.s.bin
        ctx.s.bin = path
        ctx.cell_suffix = "-base"  # its own name towards a shared region
        try:
            return start(ctx, name)
        finally:
            ctx.s.bin = saved
            ctx.cell_suffix = ""

    return st


def run_scenario(ctx, sc, results, table):
    s = ctx.s
    sides = [("metrocell", sc.metrocell)]
    if s.base_bin:
        m = sc.metrocell
        sides.append(("metrocell_base", Side(with_bin(m.start, s.base_bin), m.drive, m.probe)))
    skipped = {}
    for peer, side in sc.peers.items():
        missing = [n for n in side.needs if not shutil.which(n)]
        if missing:
            skipped[peer] = "not installed: " + ", ".join(missing)
            print("bench: %s: skipping peer %s (%s)" % (sc.name, peer, skipped[peer]))
        else:
            sides.append((peer, side))
    if s.only:
        sel = [o.split(":", 1)[1] for o in s.only if ":" in o and o.split(":", 1)[0] == sc.name]
        if sel:
            sides = [x for x in sides if x[0] == "metrocell" or x[0] in sel]
    print("\n== %s: %s" % (sc.name, sc.what), flush=True)
    ctx.backend = None
    backend_during = None
    if sc.backend and not sc.backend_alone:
        ctx.backend = sc.backend(ctx, "%s-backend" % sc.name)
    elif sc.backend:
        # The backend alone, on the server core, must be far faster than any server in
        # front of it; during the runs it shares the load core with wrk.
        alone = sc.backend(ctx, "%s-backend-alone" % sc.name, cpu=s.server_cpu)
        try:
            r = measure(ctx, Side(None, wrk_get("/bench/backend-alone"), None), alone,
                        "backend", s.warmup if s.quick else 2, "alone")
        finally:
            ctx.procs.stop(alone)
        print("   backend alone (its own core): %s req/s, p99 %s ms, %s req/CPU-s, server core "
              "%.0f%%, other %.2f CPU-s" % (fmt_k(r["rps"]), fmt_ms(r["p99_ms"]),
                                          fmt_k(r["rps_per_cpu"]), 100 * r["server_core_util"],
                                          r["other_cpu_s"]), flush=True)
        results.setdefault("backend_alone", {})[sc.name] = r
        ctx.backend = sc.backend(ctx, "%s-backend" % sc.name)
    ctx.region = sc.region(ctx, "%s-region" % sc.name) if sc.region else None
    servers = {}
    figures = {}
    try:
        for label, side in sides:
            servers[label] = side.start(ctx, "%s-%s" % (sc.name, label))
            figures[label] = {"runs": [], "paced": [], "bytes": side.probe(ctx, servers[label])}
            side.drive(ctx, servers[label], s.warmup, "warm", False)  # warm-up, not recorded
            srv = servers[label]
            print("   %-16s pid %-7d %s (%d B per response)" %
                  (label, srv.pid, srv.addr, figures[label]["bytes"]), flush=True)
        backend_before = sc.backend_requests(ctx) if sc.backend_requests else None
        for i in range(s.repeat):
            order = sides if i % 2 == 0 else list(reversed(sides))
            for label, side in order:
                r = measure_settled(ctx, side, servers[label], label, s.seconds, i)
                figures[label]["runs"].append(r)
                print("   run %d %-16s %9s req/s  p99 %6s ms  %8s req/CPU-s  server core %3.0f%%  "
                      "load core %3.0f%%  other %.2f CPU-s%s" %
                      (i + 1, label, fmt_k(r["rps"]), fmt_ms(r.get("p99_ms")),
                       fmt_k(r["rps_per_cpu"]), 100 * (r["server_core_util"] or 0),
                       100 * (r["load_core_util"] or 0), r["other_cpu_s"],
                       (" (%s)" % ", ".join("%s %.2f" % x for x in r["other_top"])
                        if r["other_cpu_s"] >= 0.2 and r["other_top"] else "") +
                       ("  ERRORS non2xx=%d socket=%d" % (r["non2xx"], r["socket_errors"])
                        if r["non2xx"] or r["socket_errors"] else "") +
                       ("  DISTURBED" if r["disturbed"] else "")), flush=True)
            if s.paced_delay_ms:
                for label, side in order:
                    r = measure_settled(ctx, side, servers[label], label, s.seconds, i, paced=True)
                    if r:
                        figures[label]["paced"].append(r)
                        print("   paced %d %-14s %9s req/s  p50 %6s ms  p99 %6s ms" %
                              (i + 1, label, fmt_k(r["rps"]), fmt_ms(r.get("p50_ms")),
                               fmt_ms(r.get("p99_ms"))), flush=True)
        if backend_before is not None:
            backend_during = sc.backend_requests(ctx) - backend_before
            print("   backend requests during the measured runs: %d" % backend_during, flush=True)
        if s.perf and shutil.which("perf"):
            # Extra runs, not in the figures: system calls per request of every side, and
            # where Metrocell spends its time.
            for label, side in sides:
                prof = perf_profile(ctx, side, servers[label], "%s-%s" % (sc.name, label),
                                    s.seconds, record=True)
                figures[label]["perf"] = prof
                print("   perf %-16s %.2f syscalls/req (%s), %.3f context switches/req" %
                      (label, prof["syscalls_per_request"],
                       ", ".join("%s %.2f" % kv for kv in
                                 list(prof["by_syscall_per_request"].items())[:6]),
                       prof["context_switches_per_request"]), flush=True)
                for t in prof.get("top", [])[:12] if label == "metrocell" else []:
                    print("      %5.2f%%  %-18s %s" % (t["self_pct"], t["dso"][:18], t["symbol"]))
                if prof.get("by_dso"):
                    print("      by object: " + ", ".join("%s %.1f%%" % (d["dso"], d["self_pct"])
                                                          for d in prof["by_dso"][:5]))
                if prof.get("kernel_by_syscall"):
                    print("      kernel, by system call (inclusive): " +
                          ", ".join("%s %.1f%%" % (d["entry"], d["incl_pct"])
                                    for d in prof["kernel_by_syscall"][:8]))
                if prof.get("by_thread"):
                    print("      by thread: " + ", ".join("%s %.1f%%" % (d["tid"], d["self_pct"])
                                                          for d in prof["by_thread"][:5]))
    finally:
        for srv in servers.values():
            ctx.procs.stop(srv)
        for other in (ctx.region, ctx.backend):
            if other:
                ctx.procs.stop(other)
        ctx.region = ctx.backend = None

    def side_summary(label):
        f = figures[label]
        return {
            "rps_per_cpu": summarize(f["runs"], "rps_per_cpu"),
            "rps": summarize(f["runs"], "rps"),
            "p99_ms": summarize(f["runs"], "p99_ms"),
            "p50_ms": summarize(f["runs"], "p50_ms"),
            "server_core_util": summarize(f["runs"], "server_core_util"),
            "load_core_util": summarize(f["runs"], "load_core_util"),
            "other_cpu_s": summarize(f["runs"], "other_cpu_s"),
            "paced_rps": summarize(f["paced"], "rps"),
            "paced_p50_ms": summarize(f["paced"], "p50_ms"),
            "paced_p99_ms": summarize(f["paced"], "p99_ms"),
            "bytes_per_response": f["bytes"],
            "perf": f.get("perf"),
            "errors": sum(r["non2xx"] + r["socket_errors"] for r in f["runs"] + f["paced"]),
            "disturbed_runs": sum(1 for r in f["runs"] + f["paced"] if r.get("disturbed")),
            "runs": f["runs"],
            "paced_runs": f["paced"],
        }

    def med(summary):
        return summary["median"] if summary else None

    m = side_summary("metrocell")
    table.append((sc.name, "metrocell", m))
    if not [x for x in sides if x[0] != "metrocell"]:
        results["scenarios"].append({"name": sc.name, "peer": None, "what": sc.what,
                                     "skipped_peers": skipped, "metrocell": m,
                                     "metrocell_rps_per_cpu": med(m["rps_per_cpu"]),
                                     "metrocell_p99_ms": med(m["p99_ms"])})
    for label, _ in sides[1:]:
        p = side_summary(label)
        table.append((sc.name, label, p))
        mr, pr = med(m["rps_per_cpu"]), med(p["rps_per_cpu"])
        mp, pp = med(m["p99_ms"]), med(p["p99_ms"])
        entry = {
            "name": sc.name,
            "peer": label,
            "what": sc.what,
            "metrocell_rps_per_cpu": mr,
            "peer_rps_per_cpu": pr,
            "ratio": round(mr / pr, 3) if mr and pr else None,
            "metrocell_p99_ms": mp,
            "peer_p99_ms": pp,
            "p99_ratio": round(mp / pp, 3) if mp and pp else None,
            "metrocell_rps": med(m["rps"]),
            "peer_rps": med(p["rps"]),
            "rps_ratio": round(med(m["rps"]) / med(p["rps"]), 3) if med(p["rps"]) else None,
            "metrocell_bytes_per_response": m["bytes_per_response"],
            "peer_bytes_per_response": p["bytes_per_response"],
            "metrocell_rps_per_cpu_spread_pct": (m["rps_per_cpu"] or {}).get("spread_pct"),
            "peer_rps_per_cpu_spread_pct": (p["rps_per_cpu"] or {}).get("spread_pct"),
            "metrocell_paced_p99_ms": med(m["paced_p99_ms"]),
            "peer_paced_p99_ms": med(p["paced_p99_ms"]),
            "goal_ratio": sc.goal.get(label),
            "goal_p99_ratio": sc.p99_goal.get(label),
            "metrocell_errors": m["errors"],
            "peer_errors": p["errors"],
            "backend_requests_during_runs": backend_during,
            "metrocell": m,
            "peer_detail": p,
        }
        results["scenarios"].append(entry)
    if skipped:
        results.setdefault("skipped", {})[sc.name] = skipped


def print_table(table, results, s):
    print("\nMedians of %d run(s) of %d s; spread = (max-min)/median of req/s per CPU-second."
          % (s.repeat, s.seconds))
    hdr = ("scenario", "server", "req/s", "req/CPU-s", "spread", "p99 ms", "paced p99",
           "B/resp", "srv core", "errors", "disturbed")
    fmt = "%-15s %-16s %9s %10s %7s %7s %9s %7s %8s %6s %9s"
    print(fmt % hdr)
    print("-" * 112)
    for name, label, d in table:
        rpc = d["rps_per_cpu"] or {}
        print(fmt % (name, label, fmt_k((d["rps"] or {}).get("median")), fmt_k(rpc.get("median")),
                     "%.0f%%" % rpc["spread_pct"] if rpc.get("spread_pct") is not None else "-",
                     fmt_ms((d["p99_ms"] or {}).get("median")),
                     fmt_ms((d["paced_p99_ms"] or {}).get("median")),
                     d["bytes_per_response"],
                     "%.0f%%" % (100 * d["server_core_util"]["median"])
                     if d["server_core_util"] else "-", d["errors"], d["disturbed_runs"]))
    print("\nMetrocell / peer (req/s per server CPU-second: higher is better; p99: lower is better)")
    for e in results["scenarios"]:
        if not e.get("peer"):
            continue
        goal = ""
        if e.get("goal_ratio"):
            goal = "  (goal >= %.2f: %s)" % (e["goal_ratio"], "met" if (e["ratio"] or 0) >=
                                             e["goal_ratio"] else "NOT met")
        print("  %-15s vs %-16s req/CPU-s x%s   p99 x%s   raw req/s x%s%s" %
              (e["name"], e["peer"], "%.2f" % e["ratio"] if e["ratio"] else "-",
               "%.2f" % e["p99_ratio"] if e["p99_ratio"] else "-",
               "%.2f" % e["rps_ratio"] if e["rps_ratio"] else "-", goal))


def versions():
    out = {}
    for name, argv in (("nginx", ["nginx", "-v"]), ("haproxy", ["haproxy", "-v"]),
                       ("redis", ["redis-server", "--version"]), ("wrk", ["wrk", "-v"]),
                       ("varnish", ["varnishd", "-V"])):
        if shutil.which(argv[0]):
            try:
                p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=10)
                out[name] = p.stdout.decode(errors="replace").strip().splitlines()[0]
            except (OSError, subprocess.TimeoutExpired, IndexError):
                pass
    try:
        out["metrocell_commit"] = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, timeout=10).stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    out["kernel"] = os.uname().release
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Metrocell peer benchmark (docs/benchmarks.md)")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 2 s, no paced runs")
    ap.add_argument("--only", help="scenarios (or scenario:peer), comma separated; "
                    "default BENCH_ONLY or all")
    ap.add_argument("--perf", action="store_true",
                    help="one extra perf-recorded Metrocell run per scenario")
    ap.add_argument("--out", help="output directory (default build/bench)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    if args.list:
        for sc in scenarios():
            print("%-15s vs %-18s %s" % (sc.name, ",".join(sc.peers), sc.what))
        return 0
    s = Settings(args)
    all_sc = scenarios()
    names = {sc.name for sc in all_sc}
    for o in s.only:
        if o.split(":", 1)[0] not in names:
            raise SystemExit("bench: unknown scenario %r (have: %s)" % (o, ", ".join(sorted(names))))
    chosen = [sc for sc in all_sc if not s.only or sc.name in {o.split(":", 1)[0] for o in s.only}]
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit("bench: %s is not installed (make bench installs it)" % tool)
    if not os.access(s.bin, os.X_OK):
        raise SystemExit("bench: no metrocell binary at %s (run make)" % s.bin)
    if s.base_bin and not os.access(s.base_bin, os.X_OK):
        raise SystemExit("bench: no metrocell binary at BENCH_BASE_BIN=%s" % s.base_bin)
    os.makedirs(s.out_dir, exist_ok=True)
    procs = Procs(s)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # Explicitly, also for SIGINT: a shell starting us in the background ignores it.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    results = {
        "settings": {"repeat": s.repeat, "seconds": s.seconds, "warmup_s": s.warmup,
                     "conns": s.conns, "put_conns": s.put_conns,
                     "paced_delay_ms": s.paced_delay_ms, "server_cpu": s.server_cpu,
                     "max_other_core_share": s.max_other, "retries": s.retries,
                     "load_cpu": s.load_cpu, "quick": s.quick, "body_bytes": BODY_BYTES,
                     "base_bin": s.base_bin,
                     "cell_conf_extra": s.cell_conf_extra},
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scenarios": [],
    }
    table = []
    ctx = Ctx(s, procs)
    rc = 0
    try:
        for sc in chosen:
            run_scenario(ctx, sc, results, table)
    except BenchError as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        rc = 130
    finally:
        procs.stop_all()
    if rc:
        return rc
    out = os.path.join(s.out_dir, "results.json")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    os.replace(tmp, out)
    print_table(table, results, s)
    print("\nwrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
