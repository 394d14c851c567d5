"""The fleet config end to end: a real `metrocell region`, three `metrocell cell`
processes (lax, sfo, sea) and sample workers on 127.0.0.1. Pushes reach every
cell, invalid pushes change nothing and fail no request, a cell restarted while
the region is down serves its last-known-good config, a staged rollout halts and
rolls back when the canary's error rate regresses, and a key rotation activates
the new key only once every cell has it."""

import json
import os
import re
import subprocess
import threading
import time

import pytest

from conftest import free_port, http_json, http_request, wait_until
from test_tls import KEY_A, KEY_B, make_cert

CELLS = ["lax", "sfo", "sea"]
SECRET1 = "11" * 32


class Fleet:
    """A region, the cells of CELLS and named sample workers."""

    def __init__(self, procs, tmp_path, binary):
        self.procs = procs
        self.bin = binary
        self.tmp = str(tmp_path)
        self.region_http = "127.0.0.1:%d" % free_port()
        self.region_repl = "127.0.0.1:%d" % free_port()
        self.workers = {}
        self.worker_procs = {}
        self.cells = {}
        self.cell_procs = {}
        self.region = None
        self.cell_extra = {}
        region = {"region": "us-west",
                  "listen": {"http": self.region_http, "repl": self.region_repl},
                  "data_dir": os.path.join(self.tmp, "region-data"),
                  "cells": CELLS,
                  "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000}}
        self.region_conf = os.path.join(self.tmp, "region.json")
        with open(self.region_conf, "w") as f:
            json.dump(region, f, indent=2)
        for name in CELLS:
            self.cells[name] = {"http": "127.0.0.1:%d" % free_port(),
                                "admin": "127.0.0.1:%d" % free_port()}

    def worker(self, name, *extra):
        addr = "127.0.0.1:%d" % free_port()
        self.workers[name] = addr
        self.worker_procs[name] = self.procs.start(
            [self.bin, "sample-worker", "--listen", addr, "--name", name] + list(extra),
            "worker-" + name, ready="listening")
        return addr

    def start_region(self):
        self.region = self.procs.start([self.bin, "region", "-c", self.region_conf],
                                       "region-%d" % time.time_ns(), ready="region us-west ready")

    def cell_conf(self, name, boot_worker):
        c = self.cells[name]
        conf = {"cell": name,
                "listen": {"http": c["http"], "admin": c["admin"]},
                "data_dir": os.path.join(self.tmp, name + "-data"),
                "region": {"repl": self.region_repl, "http": self.region_http},
                "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000},
                "pools": {"boot": {"workers": [boot_worker]}},
                "routes": [{"name": "boot", "prefix": "/", "kind": "proxy", "pool": "boot"}]}
        conf.update(self.cell_extra.get(name, {}))
        path = os.path.join(self.tmp, name + ".json")
        with open(path, "w") as f:
            json.dump(conf, f, indent=2)
        return path

    def start_cell(self, name):
        self.cell_procs[name] = self.procs.start(
            [self.bin, "cell", "-c", self.cell_conf(name, self.workers["boot"])],
            "cell-%s-%d" % (name, time.time_ns()), ready="cell %s ready" % name)
        return self.cell_procs[name]

    def start_all(self):
        self.worker("boot")
        self.start_region()
        for name in CELLS:
            self.start_cell(name)

    def doc(self, worker, flags=None, **extra):
        d = {"pools": {"app": {"workers": [self.workers[worker]]}},
             "routes": [{"name": "app", "prefix": "/", "kind": "proxy", "pool": "app"},
                        {"name": "flags", "prefix": "/flags", "kind": "flags"}],
             "flags": flags or {"color": "blue"},
             "cells": {name: {} for name in CELLS}}
        d.update(extra)
        return d

    def write(self, name, doc):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            if isinstance(doc, str):
                f.write(doc)
            else:
                json.dump(doc, f, indent=2)
        return path

    def ctl(self, *args, timeout=90):
        r = subprocess.run([self.bin, "ctl"] + list(args) + ["--region", self.region_http],
                           capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def push(self, doc, name="fleet.json", wait=True):
        args = ["push", self.write(name, doc)]
        if wait:
            args += ["--wait", "--timeout", "30s"]
        rc, out, err = self.ctl(*args)
        assert rc == 0, "ctl push failed (%d): %s %s" % (rc, out, err)
        m = re.search(r"^version (\d+) sha256 ([0-9a-f]{64})", out, re.M)
        assert m, out
        return int(m.group(1)), m.group(2), out

    def status(self, name):
        status, _, body = http_json(self.cells[name]["admin"], "GET", "/v1/status")
        assert status == 200
        return body["config"]

    def region_status(self):
        status, _, body = http_json(self.region_http, "GET", "/v1/status")
        assert status == 200
        return body["fleet_config"]

    def get(self, name, path="/x"):
        status, hdrs, body = http_request(self.cells[name]["http"], "GET", path)
        return status, hdrs, body


@pytest.fixture
def fleet(procs, tmp_path, metrocell_bin):
    return Fleet(procs, tmp_path, metrocell_bin)


def served_by(f, cell):
    status, _, body = f.get(cell)
    assert status == 200, body
    return json.loads(body)["worker"]


class Load:
    """A bounded request loop against every cell, counting answers and errors."""

    def __init__(self, f, cells=CELLS, max_requests=20000, pause=0.005):
        self.f = f
        self.cells = cells
        self.max = max_requests
        self.pause = pause
        self.ok = 0
        self.errors = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        n = 0
        while not self.stop.is_set() and n < self.max:
            for c in self.cells:
                n += 1
                try:
                    status, _, body = self.f.get(c, "/load")
                    if status == 200:
                        self.ok += 1
                    else:
                        self.errors.append((c, status, body[:200]))
                except Exception as e:  # noqa: BLE001 - counted as a failed request
                    self.errors.append((c, "exception", repr(e)))
            time.sleep(self.pause)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(timeout=30)


def test_push_reaches_every_cell(fleet):
    f = fleet
    f.worker("b")
    f.start_all()
    for c in CELLS:
        assert served_by(f, c) == "boot"
        assert f.status(c)["source"] == "bootstrap"
    doc = f.doc("b", cells={"lax": {}, "sfo": {"flags": {"color": "red"}}, "sea": {}})
    version, sha, out = f.push(doc)
    assert version == 1
    assert re.search(r"^applied by 3 cells \(.*\) in [0-9.]+ ms$", out, re.M), out
    with open(os.path.join(f.tmp, "fleet.json"), "rb") as fh:
        raw = fh.read()
    import hashlib
    assert sha == hashlib.sha256(raw).hexdigest()
    for c in CELLS:
        st = f.status(c)
        assert (st["version"], st["sha256"], st["source"]) == (1, sha, "region")
        assert st["routes"] == ["app", "flags"]
        assert served_by(f, c) == "b"
        # the last-known-good file is the document as pushed, with its checksum beside it
        cdir = os.path.join(f.tmp, c + "-data", "config")
        with open(os.path.join(cdir, "lkg.json"), "rb") as fh:
            assert fh.read() == raw
        with open(os.path.join(cdir, "lkg.json.sha256")) as fh:
            assert fh.readline().startswith("sha256=%s version=1 " % sha)
    # the per-cell override
    _, _, body = f.get("sfo", "/flags/color")
    assert json.loads(body)["value"] == "red"
    _, _, body = f.get("lax", "/flags/color")
    assert json.loads(body)["value"] == "blue"
    rs = f.region_status()
    assert rs["latest_version"] == 1 and rs["latest_sha256"] == sha
    assert sorted((c["cell"], c["applied_version"], c["applied_sha256"]) for c in rs["cells"]) == \
        sorted((c, 1, sha) for c in CELLS)
    _, _, metrics = http_request(f.region_http, "GET", "/metrics")
    for c in CELLS:
        assert ('metrocell_fleet_config_applied_version{cell="%s"} 1' % c).encode() in metrics
    _, _, metrics = http_request(f.cells["lax"]["admin"], "GET", "/metrics")
    assert b'metrocell_config_version{cell="lax"} 1' in metrics
    age = re.search(rb'metrocell_config_age_seconds\{cell="lax"\} ([0-9.e+-]+)', metrics)
    assert age and 0 <= float(age.group(1)) < 120
    # a second version replaces the first everywhere; the document itself is served back
    version, sha2, _ = f.push(f.doc("b", flags={"color": "green"}), name="fleet2.json")
    assert version == 2
    for c in CELLS:
        assert f.status(c)["version"] == 2
        _, _, body = f.get(c, "/flags/color")
        assert json.loads(body)["value"] == "green"
    status, hdrs, body = http_request(f.region_http, "GET", "/v1/config")
    assert status == 200 and hdrs["x-metrocell-config-version"] == "2"
    assert hdrs["x-metrocell-config-sha256"] == sha2
    # pushing the same document again makes no new version
    version, _, out = f.push(f.doc("b", flags={"color": "green"}), name="fleet2.json")
    assert version == 2 and "(unchanged)" in out


def test_invalid_pushes_are_rejected_and_change_nothing(fleet):
    f = fleet
    f.worker("b")
    f.start_all()
    version, sha, _ = f.push(f.doc("b"))
    assert version == 1
    bad_schema = f.doc("b")
    bad_schema["routes"][0]["kind"] = "proxyy"
    missing_pool = f.doc("b")
    missing_pool["routes"][0]["pool"] = "nope"
    big = '{"routes": [], "pad": "' + "x" * (10 << 20) + '"}'
    with Load(f) as load:
        wait_until(lambda: load.ok >= 30, timeout=30, what="requests before the pushes")
        rc, out, err = f.ctl("push", f.write("bad-schema.json", bad_schema))
        assert rc == 1 and out == ""
        assert re.search(r'bad-schema\.json:\d+:\d+: routes\[0\]\.kind: expected one of "proxy", '
                         r'"kv", "flags", "cache", got "proxyy"', err), err
        rc, out, err = f.ctl("push", f.write("missing-pool.json", missing_pool))
        assert rc == 1
        assert re.search(r'missing-pool\.json:\d+:\d+: routes\[0\]\.pool: unknown pool "nope" '
                         r'\(pools: app\)', err), err
        rc, out, err = f.ctl("push", f.write("big.json", big))
        assert rc == 1
        assert "big.json: file is larger than 4194304 bytes" in err, err
        # the region refuses them the same way when they reach it directly
        status, _, body = http_json(f.region_http, "POST", "/v1/config",
                                    body=json.dumps(missing_pool, indent=2))
        assert status == 400 and body["error"] == "invalid_config"
        assert re.match(r'fleet\.json:\d+:\d+: routes\[0\]\.pool: unknown pool "nope"',
                        body["message"]), body
        status, _, body = http_json(f.region_http, "POST", "/v1/config",
                                    body=json.dumps(bad_schema))
        assert status == 400 and "routes[0].kind" in body["message"]
        status, _, body = http_json(f.region_http, "POST", "/v1/config", body=big)
        assert status == 413 and body["message"] == "request body exceeds 4194304 bytes"
        n = load.ok
        wait_until(lambda: load.ok >= n + 30, timeout=30, what="requests after the pushes")
    assert load.errors == [], load.errors[:5]
    assert load.ok >= 60
    status, _, body = http_json(f.region_http, "GET", "/v1/config/versions")
    assert [v["version"] for v in body["versions"]] == [1]
    for c in CELLS:
        st = f.status(c)
        assert (st["version"], st["sha256"], st["last_error"]) == (1, sha, None)
        assert served_by(f, c) == "b"


def test_region_down_cell_restarts_from_last_known_good(fleet):
    f = fleet
    f.worker("b")
    f.start_all()
    version, sha, _ = f.push(f.doc("b", flags={"color": "teal"}))
    f.region.stop()
    f.cell_procs["lax"].stop()
    f.start_cell("lax")
    # routes of the pushed config, not the bootstrap's "boot" worker
    assert served_by(f, "lax") == "b"
    _, _, body = f.get("lax", "/flags/color")
    assert json.loads(body)["value"] == "teal"
    st = f.status("lax")
    assert (st["version"], st["sha256"], st["source"]) == (version, sha, "lkg")
    _, _, metrics = http_request(f.cells["lax"]["admin"], "GET", "/metrics")
    assert ('metrocell_config_version{cell="lax"} %d' % version).encode() in metrics
    # a damaged last-known-good file is not trusted: the bootstrap routes serve
    f.cell_procs["sfo"].stop()
    lkg = os.path.join(f.tmp, "sfo-data", "config", "lkg.json")
    with open(lkg, "r+b") as fh:
        data = fh.read()
        fh.seek(0)
        fh.write(data.replace(b"teal", b"pink"))
    f.start_cell("sfo")
    assert served_by(f, "sfo") == "boot"
    assert f.status("sfo")["source"] == "bootstrap"
    assert "checksum mismatch" in f.cell_procs["sfo"].log()
    # the region returns: the cells converge on its version again
    f.start_region()
    wait_until(lambda: f.status("sfo")["version"] == version, timeout=30,
               what="sfo back on the region's version")
    assert served_by(f, "sfo") == "b"
    assert f.status("lax")["version"] == version


def test_rollout_halts_and_rolls_back_a_regressing_canary(fleet):
    f = fleet
    f.worker("b")
    f.worker("bad", "--fail-status", "500")
    f.start_all()
    good, _, _ = f.push(f.doc("b", rollout={"min_requests": 10}))
    bad = f.doc("bad", flags={"color": "red"}, rollout={"min_requests": 10})
    with Load(f, pause=0.01) as load:
        wait_until(lambda: load.ok >= 60, timeout=30, what="baseline traffic")
        time.sleep(1.5)  # a few one-second reports of the healthy baseline
        rc, out, err = f.ctl("rollout", f.write("bad.json", bad), "--stages", "lax,sfo+sea",
                             "--bake", "3s")
        assert rc == 0, err
        assert re.search(r"^version %d sha256 [0-9a-f]{64}$" % (good + 1), out, re.M), out

        def halted():
            rc, out, _ = f.ctl("rollout", "status", "--json")
            r = json.loads(out) if rc == 0 else {}
            return r if r.get("state") == "halted" else None
        r = wait_until(halted, timeout=60, interval=0.5, what="the rollout to halt")
        # the canary went back to the good version; the later stage never left it
        wait_until(lambda: f.status("lax")["version"] == good, timeout=30,
                   what="lax rolled back")
    assert r["stage"] == 0 and r["results"][0]["verdict"] == "regressed"
    assert "error rate regressed" in r["why"]
    assert r["results"][0]["after"]["errors"] > 0
    assert r["results"][0]["before"]["errors"] == 0
    for c in ("sfo", "sea"):
        assert f.status(c)["version"] == good
        assert served_by(f, c) == "b"
    assert served_by(f, "lax") == "b"
    # the canary's 500s came from the new version only while it was applied
    assert all(e[0] == "lax" and e[1] == 500 for e in load.errors), load.errors[:5]
    rc, out, _ = f.ctl("rollout", "status")
    assert rc == 0 and "halted" in out and "error rate regressed" in out
    assert re.search(r"^  stage 1 lax\s+regressed$", out, re.M), out
    assert re.search(r"^  stage 2 sfo\+sea\s+pending$", out, re.M), out
    # a healthy version then rolls out stage by stage to every cell
    # (p95 thresholds wide open: this machine's latency under load is not the subject)
    fixed = f.doc("b", flags={"color": "green"},
                  rollout={"min_requests": 0, "max_p95_ratio": 1000, "p95_slack_ms": 600000})
    with Load(f, pause=0.01):
        rc, out, err = f.ctl("rollout", f.write("fixed.json", fixed), "--stages", "lax,sfo+sea",
                             "--bake", "1s")
        assert rc == 0, err
        wait_until(lambda: json.loads(f.ctl("rollout", "status", "--json")[1])["state"] == "done",
                   timeout=60, interval=0.5, what="the second rollout to finish")
    for c in CELLS:
        assert f.status(c)["version"] == good + 2


def test_key_rotation_activates_only_once_every_cell_has_the_key(fleet):
    f = fleet
    f.worker("b")
    f.start_all()
    keys = [{"kid": "k1", "alg": "HS256", "key": SECRET1, "status": "active"}]
    ticket = "ab" * 16 + "cd" * 64
    v1, _, _ = f.push(f.doc("b", auth_keys=keys, tls_ticket_keys=[ticket]))
    f.cell_procs["sea"].stop()  # sea will not get the new key for now
    rc, out, err = f.ctl("rotate-key", "--kind", "auth", "--overlap", "2s")
    assert rc == 0, err
    m = re.search(r"new key (\S+), old key k1", out)
    assert m, out
    kid = m.group(1)

    def kids(cell):
        return {k["kid"]: k["status"] for k in f.status(cell)["auth_keys"]}
    for c in ("lax", "sfo"):
        wait_until(lambda: kids(c).get(kid) == "pending", timeout=30, what="key published")
    time.sleep(2.5)  # longer than a tick or the overlap: nothing may advance without sea
    rot = http_json(f.region_http, "GET", "/v1/keys/rotation")[2]
    assert rot["phase"] == "publishing" and rot["activated_version"] == 0
    for c in ("lax", "sfo"):
        assert kids(c) == {"k1": "active", kid: "pending"}
    _, hdrs, body = http_request(f.region_http, "GET", "/v1/config")
    assert int(hdrs["x-metrocell-config-version"]) == v1 + 1
    assert {k["kid"]: k["status"] for k in json.loads(body)["auth_keys"]} == \
        {"k1": "active", kid: "pending"}
    # sea comes back: it applies the key, then the key becomes active everywhere,
    # and after the overlap the old key is gone
    f.start_cell("sea")
    for c in CELLS:
        wait_until(lambda: kids(c) == {kid: "active"}, timeout=40, interval=0.2,
                   what="%s: the new key alone, active" % c)
    rot = http_json(f.region_http, "GET", "/v1/keys/rotation")[2]
    assert rot["phase"] == "done"
    assert rot["published_version"] < rot["activated_version"] < rot["retired_version"]
    # ticket keys: the new key is appended, then moved first (the encrypting one)
    rc, out, err = f.ctl("rotate-key", "--kind", "ticket", "--overlap", "1s")
    assert rc == 0, err
    name = re.search(r"new key ([0-9a-f]{32}), old key (ab){16}", out)
    assert name, out
    for c in CELLS:
        wait_until(lambda: f.status(c)["ticket_key_names"] == [name.group(1)], timeout=40,
                   interval=0.2, what="%s: the new ticket key alone" % c)


def s_client(addr, version, sess_out=None, sess_in=None):
    """One openssl s_client connection with a request; returns New or Reused."""
    args = ["openssl", "s_client", "-connect", addr, "-ign_eof", "-" + version]
    if sess_out:
        args += ["-sess_out", sess_out]
    if sess_in:
        args += ["-sess_in", sess_in]
    r = subprocess.run(args, input=b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    m = re.search(r"^(New|Reused), (TLSv1\.[23])", out, re.M)
    assert m, out + r.stderr.decode(errors="replace")
    assert "HTTP/1.1 200" in out  # answered over the session
    return m.group(1)


def test_ticket_keys_from_the_fleet_config_resume_across_cells(fleet, tmp_path):
    f = fleet
    cert, key = make_cert(tmp_path, "fleet-cert")
    tls = {}
    certs = {}
    for c in ("lax", "sfo"):
        tls[c] = "127.0.0.1:%d" % free_port()
        certs[c] = os.path.join(str(tmp_path), "%s.crt" % c)
        with open(cert, "rb") as src, open(certs[c], "wb") as dst:
            dst.write(src.read())
        # no ticket keys in the bootstrap file: each cell makes a random one
        f.cell_extra[c] = {"tls": {"listen": tls[c], "cert": certs[c], "key": key}}
    f.worker("b")
    f.start_all()
    sess = os.path.join(str(tmp_path), "before.sess")
    assert s_client(tls["lax"], "tls1_3", sess_out=sess) == "New"
    assert s_client(tls["sfo"], "tls1_3", sess_in=sess) == "New"
    # one ticket-key set for the fleet: each cell's TLS context is rebuilt with it
    f.push(f.doc("b", tls_ticket_keys=[KEY_A]))
    for c in ("lax", "sfo"):
        assert f.status(c)["ticket_key_names"] == [KEY_A[:32]]
        assert "session-ticket key(s) from the fleet config" in f.cell_procs[c].log()
    for version in ("tls1_2", "tls1_3"):
        sess = os.path.join(str(tmp_path), "%s.sess" % version)
        assert s_client(tls["lax"], version, sess_out=sess) == "New"
        assert s_client(tls["sfo"], version, sess_in=sess) == "Reused"
    # a version a cell cannot apply changes nothing there and is reported: lax's
    # certificate file is now broken, so it cannot build a context with new keys
    with open(os.path.join(str(tmp_path), "broken.pem"), "w") as fh:
        fh.write("not a certificate\n")
    os.replace(os.path.join(str(tmp_path), "broken.pem"), certs["lax"])
    before = f.status("lax")
    rc, out, err = f.ctl("push", f.write("keys2.json", f.doc("b", tls_ticket_keys=[KEY_B])),
                         "--wait", "--timeout", "20s")
    assert rc == 1, out + err
    assert re.search(r"lax: rejected: tls_ticket_keys: ", err), err
    st = f.status("lax")
    assert (st["version"], st["sha256"]) == (before["version"], before["sha256"])
    assert st["last_error"]["version"] == before["version"] + 1
    assert st["ticket_key_names"] == [KEY_A[:32]]
    assert f.status("sfo")["version"] == before["version"] + 1
    cells = {c["cell"]: c for c in f.region_status()["cells"]}
    assert cells["lax"]["applied_version"] == before["version"]
    assert cells["lax"]["error"]["version"] == before["version"] + 1
    assert "tls_ticket_keys" in cells["lax"]["error"]["message"]
    assert served_by(f, "lax") == "b"
