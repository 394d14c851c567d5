"""A region and any number of cells with state-class rules, as real processes on
127.0.0.1, for the hot-state tests (test_state.py, crashloop.py)."""

import json
import os

from conftest import free_port, http_json, http_request, wait_until

CLASSES = [
    {"prefix": "pii:", "class": "local"},
    {"prefix": "ledger:", "class": "regional"},
    {"prefix": "cache:", "class": "regional", "cache_ttl_ms": 60000},
    {"prefix": "s:", "class": "replicated", "replica_max_staleness_ms": 5000},
    {"prefix": "pay:", "class": "replicated", "ack": "region", "ack_timeout_ms": 1500},
    {"prefix": "payslow:", "class": "replicated", "ack": "region", "ack_timeout_ms": 20000},
]


class Fleet:
    def __init__(self, procs, tmp_path, binary, cells=("lax",), classes=None, link=(),
                 repl=None, state=None):
        self.procs = procs
        self.tmp = str(tmp_path)
        self.bin = binary
        self.region_http = "127.0.0.1:%d" % free_port()
        self.region_repl = "127.0.0.1:%d" % free_port()
        self.region_dir = os.path.join(self.tmp, "region-data")
        self.region_conf = os.path.join(self.tmp, "region.json")
        self.region = None
        self.cells = {}
        with open(self.region_conf, "w") as f:
            json.dump({"region": "us-west",
                       "listen": {"http": self.region_http, "repl": self.region_repl},
                       "data_dir": self.region_dir,
                       "state": {"sweep_interval_ms": 100},
                       "replication": {"heartbeat_ms": 200, "dead_after_ms": 1000}}, f)
        for name in cells:
            c = {"name": name, "http": "127.0.0.1:%d" % free_port(),
                 "admin": "127.0.0.1:%d" % free_port(),
                 "dir": os.path.join(self.tmp, "%s-data" % name),
                 "conf": os.path.join(self.tmp, "%s.json" % name), "proc": None, "link": None}
            repl_addr = self.region_repl
            if name in link:
                c["link_listen"] = "127.0.0.1:%d" % free_port()
                c["link_admin"] = "127.0.0.1:%d" % free_port()
                repl_addr = c["link_listen"]
            st = {"sweep_interval_ms": 100, "max_value_bytes": 65536}
            st.update(state or {})
            rp = {"heartbeat_ms": 200, "dead_after_ms": 1000}
            rp.update(repl or {})
            with open(c["conf"], "w") as f:
                json.dump({"cell": name,
                           "listen": {"http": c["http"], "admin": c["admin"]},
                           "data_dir": c["dir"],
                           "region": {"repl": repl_addr, "http": self.region_http},
                           "state": st,
                           "replication": rp,
                           "state_classes": CLASSES if classes is None else classes,
                           "routes": [{"name": "kv", "prefix": "/v1/kv/", "kind": "kv"}]}, f,
                          indent=1)
            self.cells[name] = c

    def start_region(self):
        self.region = self.procs.start([self.bin, "region", "-c", self.region_conf], "region",
                                       ready="region us-west ready")
        return self.region

    def start_cell(self, name):
        c = self.cells[name]
        if "link_listen" in c and c["link"] is None:
            c["link"] = self.procs.start(
                [self.bin, "link", "--listen", c["link_listen"], "--to", self.region_repl,
                 "--delay", "0", "--admin", c["link_admin"], "--name", "%s-region" % name],
                "link-%s" % name, ready="listening")
        c["proc"] = self.procs.start([self.bin, "cell", "-c", c["conf"]], name,
                                     ready="cell %s ready" % name)
        return c["proc"]

    def start_all(self):
        self.start_region()
        for name in self.cells:
            self.start_cell(name)
        return self

    # -- cell API --
    def addr(self, cell):
        return self.cells[cell]["http"]

    def req(self, cell, method, key, body=None, headers=None, query="", timeout=10.0):
        return http_request(self.addr(cell), method, "/v1/kv/" + key + query, body=body,
                            headers=headers, timeout=timeout)

    def put(self, cell, key, value, headers=None, query=""):
        status, hdrs, body = self.req(cell, "PUT", key, value, headers, query)
        assert status == 200, (key, status, body)
        doc = json.loads(body)
        assert doc["version"] == hdrs["x-metrocell-version"]
        return doc

    def get(self, cell, key):
        return self.req(cell, "GET", key)

    def incr(self, cell, key, by=None, body=None):
        q = "" if by is None else "?by=%d" % by
        return http_request(self.addr(cell), "POST", "/v1/kv/%s:incr%s" % (key, q), body=body)

    def mget(self, cell, keys):
        status, _, body = http_request(self.addr(cell), "POST", "/v1/kv:mget",
                                       body=json.dumps({"keys": keys}).encode(),
                                       headers={"Content-Type": "application/json"})
        assert status == 200, body
        return json.loads(body)["results"]

    def status(self, cell):
        return http_json(self.cells[cell]["admin"], "GET", "/v1/status")[2]

    def metrics(self, cell):
        return http_request(self.cells[cell]["admin"], "GET", "/metrics")[2].decode()

    def metric(self, cell, name_and_labels):
        """Value of one series (0 when absent)."""
        for line in self.metrics(cell).splitlines():
            if line.startswith(name_and_labels + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def region_metric(self, name_and_labels):
        text = http_request(self.region_http, "GET", "/metrics")[2].decode()
        for line in text.splitlines():
            if line.startswith(name_and_labels + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def region_req(self, method, key, body=None, headers=None, query=""):
        return http_request(self.region_http, method, "/v1/kv/" + key + query, body=body,
                            headers=headers)

    def wait_replicated(self, cell, timeout=15.0):
        def caught_up():
            st = self.status(cell)["replication"]
            return st["connected"] and st["acked_seq"] == st["last_seq"] and st
        return wait_until(caught_up, timeout=timeout, what="%s to catch up" % cell)

    def link(self, cell, action):
        status, _, _ = http_request(self.cells[cell]["link_admin"], "POST", "/" + action)
        assert status == 200
