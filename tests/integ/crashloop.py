"""Crash loop for the cell's hot state: many iterations of (a write storm from
several client threads, SIGKILL of the cell at a random moment, restart, verify).

The checker holds, per key, every value a client sent and the last one the cell
acknowledged. After each restart every key is read back and must satisfy:
  - an acknowledged write is present: the key's version is at least the acknowledged
    one, and with that very version it carries that very value;
  - nothing appears that was never written: any value read is one a client sent for
    that key (acknowledged, or in flight when the cell died);
  - versions are monotone per key across all iterations;
  - a counter (POST :incr) is at least its acknowledged count and at most that plus
    the increments in flight.
At the end, the region holds every replicated key at the cell's version.

pytest runs 50 iterations (test_crashloop_50 below; METROCELL_CRASHLOOP_ITERATIONS
overrides). By hand:
    python3 tests/integ/crashloop.py [--long | --iterations N] [--seed S] [--bin PATH]
--long runs 1,000 iterations.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import Procs, binary, wait_until  # noqa: E402
from statefleet import Fleet  # noqa: E402

THREADS = 4
KEYS_PER_THREAD = 20  # 4 x (20 + 1 counter) = 84 keys: one multi-get reads them all


class Checker:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}       # key -> set of values ever sent
        self.acked = {}      # key -> (version, value) last acknowledged
        self.inflight = {}   # key -> values sent without an answer since the last check
        self.seen = {}       # key -> highest version read back
        self.count_acked = {}   # counter key -> acknowledged increments
        self.count_flying = {}  # counter key -> increments without an answer
        self.counter_seen = {}  # counter key -> last value read back
        self.acked_writes = 0

    def verify(self, results, it):
        problems = []
        for r in results:
            key = r["key"]
            if key in self.count_acked:
                self._verify_counter(r, it, problems)
                continue
            status = r["status"]
            acked = self.acked.get(key)
            sent = self.sent.get(key, set())
            if status == 404:
                if acked:
                    problems.append("iter %d: %s lost: acknowledged %s=%r, now 404" %
                                    (it, key, acked[0], acked[1]))
                continue
            if status != 200:
                problems.append("iter %d: %s answered %s" % (it, key, status))
                continue
            version, value = int(r["version"]), r["value"]
            if value not in sent:
                problems.append("iter %d: %s holds %r, which was never written" % (it, key, value))
            if not acked and value not in self.inflight.get(key, ()):
                problems.append("iter %d: %s holds %r, never acknowledged nor in flight" %
                                (it, key, value))
            if acked:
                if version < acked[0]:
                    problems.append("iter %d: %s went back from acknowledged version %d to %d" %
                                    (it, key, acked[0], version))
                elif version == acked[0] and value != acked[1]:
                    problems.append("iter %d: %s version %d holds %r, acknowledged %r" %
                                    (it, key, version, value, acked[1]))
                elif version > acked[0] and value not in self.inflight.get(key, ()):
                    problems.append("iter %d: %s version %d holds %r, neither acknowledged "
                                    "nor in flight" % (it, key, version, value))
            if version < self.seen.get(key, 0):
                problems.append("iter %d: %s version went back from %d to %d" %
                                (it, key, self.seen[key], version))
            self.seen[key] = version
            # what survived is now the baseline
            self.acked[key] = (version, value)
        self.inflight.clear()
        return problems

    def _verify_counter(self, r, it, problems):
        key = r["key"]
        lo = self.count_acked[key]
        hi = lo + self.count_flying.get(key, 0)
        got = int(r["value"]) if r["status"] == 200 else 0
        if not lo <= got <= hi:
            problems.append("iter %d: counter %s is %d, expected %d..%d" % (it, key, got, lo, hi))
        if got < self.counter_seen.get(key, 0):
            problems.append("iter %d: counter %s went back to %d" % (it, key, got))
        self.counter_seen[key] = got
        self.count_acked[key] = got
        self.count_flying[key] = 0


def writer(fleet, checker, t, it, stop, rng):
    host, port = fleet.addr("lax").rsplit(":", 1)
    conn = None
    seq = 0
    prefix = "pii:" if t % 2 else "rk:"  # half local, half replicated keys
    counter = "ctr:%d" % t
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=5)
            if rng.random() < 0.15:
                with checker.lock:
                    checker.count_flying[counter] = checker.count_flying.get(counter, 0) + 1
                conn.request("POST", "/v1/kv/%s:incr" % counter)
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    with checker.lock:
                        checker.count_flying[counter] -= 1
                        checker.count_acked[counter] += 1
                continue
            key = "%s%d:%d" % (prefix, t, rng.randrange(KEYS_PER_THREAD))
            seq += 1
            value = "v-%d-%d-%d" % (t, it, seq)
            with checker.lock:
                checker.sent.setdefault(key, set()).add(value)
                checker.inflight.setdefault(key, set()).add(value)
            conn.request("PUT", "/v1/kv/" + key, body=value.encode())
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                doc = json.loads(body)
                with checker.lock:
                    checker.acked[key] = (int(doc["version"]), value)
                    checker.inflight[key].discard(value)
                    checker.acked_writes += 1
        except (OSError, http.client.HTTPException):
            # the cell died under us: whatever was in flight stays "maybe"
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.01)
    if conn is not None:
        conn.close()


def all_keys():
    keys = []
    for t in range(THREADS):
        prefix = "pii:" if t % 2 else "rk:"
        keys += ["%s%d:%d" % (prefix, t, j) for j in range(KEYS_PER_THREAD)]
        keys.append("ctr:%d" % t)
    return keys


def run(procs, tmp_path, binary_path, iterations, seed=None, progress=None):
    """Returns (acknowledged writes, problems)."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    fleet = Fleet(procs, tmp_path, binary_path, classes=[{"prefix": "pii:", "class": "local"}])
    fleet.start_region()
    fleet.start_cell("lax")
    checker = Checker()
    for t in range(THREADS):
        checker.count_acked["ctr:%d" % t] = 0
    problems = []
    keys = all_keys()
    for it in range(iterations):
        stop = threading.Event()
        threads = [threading.Thread(target=writer,
                                    args=(fleet, checker, t, it, stop, random.Random(rng.random())))
                   for t in range(THREADS)]
        for th in threads:
            th.start()
        time.sleep(rng.uniform(0.02, 0.3))
        cell = fleet.cells["lax"]["proc"]
        cell.kill9()
        cell.popen.stdout.close()
        stop.set()
        for th in threads:
            th.join(timeout=30)
        fleet.start_cell("lax")
        problems += checker.verify(fleet.mget("lax", keys), it)
        if problems:
            break
        if progress and (it + 1) % 50 == 0:
            progress("%d/%d iterations, %d acknowledged writes, seed %d" %
                     (it + 1, iterations, checker.acked_writes, seed))
    if not problems:
        # every replicated key reached the region at the cell's version
        fleet.wait_replicated("lax", timeout=30)
        for r in fleet.mget("lax", keys):
            if r["class"] != "replicated" or r["status"] != 200:
                continue
            status, hdrs, _ = fleet.region_req("GET", r["key"])
            if status != 200 or hdrs["x-metrocell-version"] != r["version"]:
                problems.append("region has %s at %s, the cell at %s" %
                                (r["key"], hdrs.get("x-metrocell-version"), r["version"]))
    if problems:
        problems.insert(0, "seed %d" % seed)
    return checker.acked_writes, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--long", action="store_true", help="1,000 iterations")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--bin", default=binary())
    args = ap.parse_args()
    n = 1000 if args.long else args.iterations
    tmp = tempfile.mkdtemp(prefix="mc_crashloop_")
    procs = Procs(tmp)
    t0 = time.time()
    try:
        acked, problems = run(procs, tmp, args.bin, n, args.seed, progress=print)
    finally:
        bad = procs.stop_all()
    for p in problems:
        print("PROBLEM:", p)
    for p, rc in bad:
        print("process %s exited with %s" % (p.popen.args, rc))
    failed = bool(problems or bad)
    print("%d iterations, %d acknowledged writes, %d problems, %.1f s%s" %
          (n, acked, len(problems), time.time() - t0, " (data kept in %s)" % tmp if failed else ""))
    if not failed:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
