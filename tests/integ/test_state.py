"""Hot state in depth: state classes enforced at the write log, read-through with
bounded replica copies and INVALIDATE, ack modes, backlog bounds, TTL, CAS,
counters and the multi-get, with real processes on 127.0.0.1. Assertions are on
wire bytes, metrics, and the region's files."""

import base64
import json
import os
import threading
import time

import pytest

from conftest import http_request, wait_until
from statefleet import Fleet


@pytest.fixture
def fleet_factory(procs, tmp_path, metrocell_bin):
    def make(**kw):
        return Fleet(procs, tmp_path, metrocell_bin, **kw)
    return make


def region_files_contain(fleet, needle):
    data = b""
    for root, _, files in os.walk(fleet.region_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                data += fh.read()
    return needle in data


def cell_files_contain(fleet, cell, needle):
    data = b""
    for root, _, files in os.walk(fleet.cells[cell]["dir"]):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                data += fh.read()
    return needle in data


def test_local_key_never_reaches_region_and_regional_lives_there(fleet_factory):
    f = fleet_factory().start_all()
    marker = b"LOCAL-ONLY-%d" % os.getpid()
    for i in range(20):
        doc = f.put("lax", "pii:user%d" % i, marker + b"-%d" % i)
        assert doc["seq"] == 0 and doc["class"] == "local"
    rep = f.put("lax", "session:1", b"REPLICATED-VALUE")
    assert rep["seq"] == 1 and rep["class"] == "replicated"
    f.wait_replicated("lax")
    st = f.status("lax")["replication"]
    assert st["last_seq"] == 1, "local writes must not enter the write log"
    status, hdrs, body = f.get("lax", "pii:user3")
    assert status == 200 and body == marker + b"-3"
    assert hdrs["x-metrocell-class"] == "local" and hdrs["x-metrocell-outcome"] == "local"
    # the region's API and its files know nothing of them
    for i in range(20):
        assert f.region_req("GET", "pii:user%d" % i)[0] == 404
    assert f.region_req("GET", "session:1")[0] == 200
    assert region_files_contain(f, b"REPLICATED-VALUE"), "the file check must be able to see data"
    assert not region_files_contain(f, marker)
    assert f.metric("lax", 'metrocell_residency_violations_total{cell="lax"}') == 0
    assert 'metrocell_residency_violations_total{cell="lax"} 0' in f.metrics("lax")
    # deleting a local key that does not exist is a certain 404; an existing one goes
    status, _, body = f.req("lax", "DELETE", "pii:nobody")
    assert status == 404 and json.loads(body)["error"] == "not_found"
    assert f.req("lax", "DELETE", "pii:user0")[0] == 200
    assert f.get("lax", "pii:user0")[0] == 404

    # a regional key: written and read through the cell, held by the region only
    rmark = b"REGIONAL-%d" % os.getpid()
    status, hdrs, body = f.req("lax", "PUT", "ledger:acct1", rmark)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["home"] == "us-west" and hdrs["x-metrocell-class"] == "regional"
    assert hdrs["x-metrocell-outcome"] == "regional"
    status, hdrs, body = f.get("lax", "ledger:acct1")
    assert status == 200 and body == rmark
    assert hdrs["x-metrocell-outcome"] == "regional" and hdrs["x-metrocell-home"] == "us-west"
    assert hdrs["x-metrocell-version"] == doc["version"]
    status, _, body = f.region_req("GET", "ledger:acct1")
    assert status == 200 and body == rmark
    assert f.metric("lax", 'metrocell_regional_requests_total{cause="regional_key"}') == 2
    status, _, body = f.incr("lax", "ledger:counter", by=5)
    assert status == 200 and json.loads(body)["value"] == 5
    assert f.region_req("GET", "ledger:counter")[2] == b"5"
    assert f.status("lax")["replication"]["last_seq"] == 1
    assert not cell_files_contain(f, "lax", rmark), "the cell must hold no regional value"
    # the region is the only place: down means 503, never a 404
    f.region.stop()
    status, hdrs, body = f.get("lax", "ledger:acct1")
    assert status == 503 and json.loads(body)["error"] == "state_unavailable"
    assert hdrs["x-metrocell-outcome"] == "refused"
    status, _, body = f.req("lax", "PUT", "ledger:acct2", b"x")
    assert status == 503 and json.loads(body)["error"] == "state_unavailable"
    assert f.get("lax", "pii:user5")[0] == 200, "local keys do not need the region"


def test_cas_conflict_ttl_expiry_and_limits(fleet_factory):
    f = fleet_factory().start_all()
    v1 = f.put("lax", "doc:1", b"one")
    status, hdrs, _ = f.get("lax", "doc:1")
    assert hdrs["etag"] == '"%s"' % v1["version"]
    v2 = f.put("lax", "doc:1", b"two", headers={"If-Match": v1["version"]})
    status, hdrs, body = f.req("lax", "PUT", "doc:1", b"three", headers={"If-Match": v1["version"]})
    assert status == 412
    err = json.loads(body)
    assert err["error"] == "precondition_failed" and v2["version"] in err["message"]
    assert hdrs["x-metrocell-version"] == v2["version"]
    assert f.get("lax", "doc:1")[2] == b"two"
    # the ETag form works too, and If-None-Match: * creates only
    f.put("lax", "doc:1", b"three", headers={"If-Match": '"%s"' % v2["version"]})
    assert f.req("lax", "PUT", "doc:1", b"x", headers={"If-None-Match": "*"})[0] == 412
    f.put("lax", "doc:new", b"fresh", headers={"If-None-Match": "*"})
    assert f.req("lax", "PUT", "doc:none", b"x", headers={"If-Match": "*"})[0] == 412
    assert f.req("lax", "PUT", "doc:1", b"x", headers={"If-Match": "abc"})[0] == 400
    # CAS on a local key and on a regional key (checked in the region)
    lv = f.put("lax", "pii:c", b"a")
    assert f.req("lax", "PUT", "pii:c", b"b", headers={"If-Match": "1"})[0] == 412
    f.put("lax", "pii:c", b"b", headers={"If-Match": lv["version"]})
    status, _, body = f.req("lax", "PUT", "ledger:c", b"a", headers={"If-None-Match": "*"})
    assert status == 200
    status, _, body = f.req("lax", "PUT", "ledger:c", b"b", headers={"If-None-Match": "*"})
    assert status == 412 and json.loads(body)["error"] == "precondition_failed"

    # TTL: served until it expires, 404 after, then swept from the store
    before = f.metric("lax", 'metrocell_state_swept_total{cell="lax",kind="expired"}')
    doc = f.put("lax", "tmp:1", b"soon gone", query="?ttl_ms=1500")
    f.put("lax", "pii:tmp", b"local ttl", query="?ttl=2")
    status, hdrs, body = f.get("lax", "tmp:1")
    assert status == 200 and int(hdrs["x-metrocell-expires-ms"]) == doc["expires_ms"]
    assert f.get("lax", "pii:tmp")[0] == 200
    time.sleep(2.1)
    status, _, body = f.get("lax", "tmp:1")
    assert status == 404 and json.loads(body)["error"] == "not_found"
    assert f.get("lax", "pii:tmp")[0] == 404
    wait_until(lambda: f.metric("lax", 'metrocell_state_swept_total{cell="lax",kind="expired"}')
               >= before + 2, timeout=10, what="the sweeper to delete the expired records")
    # the region enforces the same expiry on the shipped copy
    f.wait_replicated("lax")
    assert f.region_req("GET", "tmp:1")[0] == 404
    wait_until(lambda: f.region_metric('metrocell_region_state_swept_total{kind="expired"}') >= 1,
               timeout=10, what="the region's sweeper")
    # bad parameters and limits
    assert f.req("lax", "PUT", "x", b"v", query="?ttl=0")[0] == 400
    assert f.req("lax", "PUT", "x", b"v", query="?ttl=1&ttl_ms=5")[0] == 400
    status, _, body = f.req("lax", "PUT", "x", b"v", query="?color=red")
    assert status == 400 and "color" in json.loads(body)["message"]
    assert f.req("lax", "GET", "k" * 257)[0] == 400
    status, _, body = f.req("lax", "PUT", "big", b"x" * 70000)
    assert status == 413 and json.loads(body)["error"] == "value_too_large"
    status, hdrs, body = http_request(f.addr("lax"), "POST", "/v1/kv/x", body=b"1")
    assert status == 405 and "POST" in hdrs["allow"]


def test_incr_from_8_concurrent_clients_sums_exactly(fleet_factory):
    f = fleet_factory().start_all()
    per = 40
    errors = []

    def client(key):
        try:
            for _ in range(per):
                status, _, body = f.incr("lax", key)
                assert status == 200, body
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for key in ("hits", "pii:hits"):
        threads = [threading.Thread(target=client, args=(key,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        status, hdrs, body = f.get("lax", key)
        assert status == 200 and body == b"%d" % (8 * per), body
    # the replicated counter reached the region as its value
    f.wait_replicated("lax")
    assert f.region_req("GET", "hits")[2] == b"%d" % (8 * per)
    # deltas, bounds and errors
    status, _, body = f.incr("lax", "hits", by=-20)
    assert status == 200 and json.loads(body)["value"] == 8 * per - 20
    assert json.loads(f.incr("lax", "hits", body=b"7")[2])["value"] == 8 * per - 13
    assert f.incr("lax", "hits", by=1, body=b"2")[0] == 400
    assert f.incr("lax", "hits", body=b"seven")[0] == 400
    f.put("lax", "max", b"9223372036854775807")
    status, _, body = f.incr("lax", "max")
    assert status == 409 and json.loads(body)["error"] == "counter_overflow"
    assert f.get("lax", "max")[2] == b"9223372036854775807"
    f.put("lax", "word", b"hello")
    status, _, body = f.incr("lax", "word")
    assert status == 409 and json.loads(body)["error"] == "not_a_counter"
    # incr keeps the TTL it was created with
    status, _, body = f.incr("lax", "win", body=b"1")
    doc = json.loads(f.incr("lax", "rl", by=1)[2])
    assert "expires_ms" not in doc
    status, _, body = http_request(f.addr("lax"), "POST", "/v1/kv/rl2:incr?ttl=30")
    exp = json.loads(body)["expires_ms"]
    assert json.loads(f.incr("lax", "rl2")[2])["expires_ms"] == exp


def test_multi_get(fleet_factory):
    f = fleet_factory().start_all()
    f.put("lax", "a", b"alpha")
    f.put("lax", "pii:b", b"\x00\xffbinary")
    f.req("lax", "PUT", "ledger:c", b"gamma")
    res = f.mget("lax", ["a", "pii:b", "ledger:c", "nope", "pii:nope"])
    assert [r["status"] for r in res] == [200, 200, 200, 404, 404]
    assert res[0]["value"] == "alpha" and res[0]["class"] == "replicated"
    assert res[0]["home"] == "lax" and res[0]["version"]
    assert base64.b64decode(res[1]["value_base64"]) == b"\x00\xffbinary"
    assert res[1]["class"] == "local"
    assert res[2]["value"] == "gamma" and res[2]["class"] == "regional"
    status, _, body = http_request(f.addr("lax"), "POST", "/v1/kv:mget",
                                   body=json.dumps({"keys": ["k%d" % i for i in range(101)]}))
    assert status == 400 and json.loads(body)["error"] == "bad_request"
    status, _, body = http_request(f.addr("lax"), "POST", "/v1/kv:mget", body=b"[1,2]")
    assert status == 400
    assert http_request(f.addr("lax"), "GET", "/v1/kv:mget")[0] == 405


def test_read_through_invalidate_and_new_value(fleet_factory):
    f = fleet_factory(cells=("lax", "sfo")).start_all()
    f.put("sfo", "shared:k", b"v1")
    f.wait_replicated("sfo")
    status, hdrs, body = f.get("lax", "shared:k")
    assert status == 200 and body == b"v1"
    assert hdrs["x-metrocell-outcome"] == "regional" and hdrs["x-metrocell-home"] == "sfo"
    assert f.metric("lax", 'metrocell_regional_requests_total{cause="read_through"}') == 1
    # now a local copy, within its bound
    status, hdrs, body = f.get("lax", "shared:k")
    assert status == 200 and body == b"v1" and hdrs["x-metrocell-outcome"] == "local"
    assert hdrs["x-metrocell-replica"] == "fresh"
    assert f.metric("lax", 'metrocell_regional_requests_total{cause="read_through"}') == 1
    # a write in sfo: the region invalidates lax's copy, lax reads the new value
    before = f.metric("lax", 'metrocell_state_invalidations_total{cell="lax"}')
    v2 = f.put("sfo", "shared:k", b"v2")
    wait_until(lambda: f.metric("lax", 'metrocell_state_invalidations_total{cell="lax"}') > before,
               timeout=10, what="INVALIDATE to reach lax")
    status, hdrs, body = f.get("lax", "shared:k")
    assert status == 200 and body == b"v2", body
    assert hdrs["x-metrocell-version"] == v2["version"]
    assert f.region_metric("metrocell_region_invalidations_sent_total") >= 1
    # a key lax wrote itself and sfo overwrote: lax's own record is invalidated too
    f.put("lax", "own:k", b"from-lax")
    f.wait_replicated("lax")
    before = f.metric("lax", 'metrocell_state_invalidations_total{cell="lax"}')
    f.put("sfo", "own:k", b"from-sfo")
    wait_until(lambda: f.metric("lax", 'metrocell_state_invalidations_total{cell="lax"}') > before,
               timeout=10, what="INVALIDATE of lax's own record")
    assert f.get("lax", "own:k")[2] == b"from-sfo"
    # a negative answer is cached too, and a write elsewhere replaces it
    assert f.get("lax", "shared:new")[0] == 404
    assert f.get("lax", "shared:new")[1]["x-metrocell-replica"] == "fresh"
    f.put("sfo", "shared:new", b"exists")
    wait_until(lambda: f.get("lax", "shared:new")[0] == 200, timeout=10,
               what="the negative copy to be invalidated")
    # incr on a key this cell does not hold starts from the region's value
    f.put("sfo", "ctr", b"41")
    f.wait_replicated("sfo")
    status, _, body = f.incr("lax", "ctr")
    assert status == 200 and json.loads(body)["value"] == 42
    # a regional key with a read cache: local within cache_ttl_ms, invalidated when
    # another cell writes it through the region
    assert f.req("sfo", "PUT", "cache:r", b"r1")[0] == 200
    status, hdrs, body = f.get("lax", "cache:r")
    assert status == 200 and body == b"r1" and hdrs["x-metrocell-outcome"] == "regional"
    status, hdrs, body = f.get("lax", "cache:r")
    assert status == 200 and body == b"r1" and hdrs["x-metrocell-outcome"] == "local"
    assert hdrs["x-metrocell-replica"] == "fresh" and hdrs["x-metrocell-class"] == "regional"
    before = f.metric("lax", 'metrocell_state_invalidations_total{cell="lax"}')
    assert f.req("sfo", "PUT", "cache:r", b"r2")[0] == 200
    wait_until(lambda: f.metric("lax", 'metrocell_state_invalidations_total{cell="lax"}') > before,
               timeout=10, what="INVALIDATE of the cached regional key")
    status, hdrs, body = f.get("lax", "cache:r")
    assert body == b"r2" and hdrs["x-metrocell-outcome"] == "regional"
    # lax's own write drops its cached copy at once
    assert f.req("lax", "PUT", "cache:r", b"r3")[0] == 200
    assert f.get("lax", "cache:r")[2] == b"r3"


def test_region_down_copy_within_bound_served_never_synced_503(fleet_factory):
    f = fleet_factory().start_all()
    # the keys exist in the region only (written through its own API)
    assert f.region_req("PUT", "s:held", b"held-value")[0] == 200
    assert f.get("lax", "s:held")[2] == b"held-value"
    assert f.get("lax", "s:absent")[0] == 404  # a negative copy
    synced = time.time()
    f.region.stop()
    wait_until(lambda: not f.status("lax")["replication"]["connected"], timeout=10,
               what="lax to see the region gone")
    status, hdrs, body = f.get("lax", "s:held")
    assert status == 200 and body == b"held-value"
    assert hdrs["x-metrocell-replica"] == "stale"
    assert int(hdrs["x-metrocell-replica-age-ms"]) < 5000
    assert hdrs["x-metrocell-outcome"] == "cache_stale"
    status, hdrs, _ = f.get("lax", "s:absent")
    assert status == 404 and hdrs["x-metrocell-replica"] == "stale"
    status, hdrs, body = f.get("lax", "s:never")
    assert status == 503, body
    err = json.loads(body)
    assert err["error"] == "state_unavailable" and "never synced" in err["message"]
    assert f.get("lax", "other:never")[0] == 503
    res = f.mget("lax", ["s:held", "s:never"])
    assert res[0]["status"] == 200 and res[0]["replica"] == "stale"
    assert res[1]["status"] == 503 and res[1]["error"] == "state_unavailable"
    # beyond the bound: 503 as well, never the stale value and never 404
    time.sleep(max(0.0, synced + 5.2 - time.time()))
    status, _, body = f.get("lax", "s:held")
    assert status == 503 and json.loads(body)["error"] == "state_unavailable"
    assert f.get("lax", "s:absent")[0] == 503
    assert f.metric("lax", 'metrocell_state_stale_served_total{cell="lax"}') >= 3
    # back: read-through again
    f.start_region()
    wait_until(lambda: f.get("lax", "s:held")[0] == 200, timeout=10, what="the region back")


def test_ack_region_waits_for_the_region(fleet_factory):
    f = fleet_factory(link=("lax",)).start_all()
    status, _, body = f.req("lax", "PUT", "pay:1", b"first")
    assert status == 200 and json.loads(body)["ack"] == "region"
    # acknowledged only once the region had it: it is there right away
    status, hdrs, body = f.region_req("GET", "pay:1")
    assert status == 200 and body == b"first" and hdrs["x-metrocell-home"] == "lax"
    f.link("lax", "cut")
    wait_until(lambda: not f.status("lax")["replication"]["connected"], timeout=10,
               what="the cut")
    t0 = time.time()
    status, hdrs, body = f.req("lax", "PUT", "pay:2", b"second")
    took = time.time() - t0
    assert status == 504, body
    err = json.loads(body)
    assert err["error"] == "region_ack_timeout" and "committed" in err["message"]
    assert "will still be shipped" in err["message"]
    assert took >= 1.4
    version2 = hdrs["x-metrocell-version"]
    # the write is committed locally, and ack:local keys are not held up
    assert f.get("lax", "pay:2")[2] == b"second"
    assert f.req("lax", "PUT", "fast:1", b"x")[0] == 200
    assert f.region_req("GET", "pay:2")[0] == 404
    # a write with a longer timeout blocks until the link comes back
    result = {}

    def slow():
        result["r"] = f.req("lax", "PUT", "payslow:3", b"third", timeout=30)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.8)
    assert "r" not in result, "an ack:region write must not return while the region cannot ack"
    f.link("lax", "restore")
    th.join(timeout=30)
    status, _, body = result["r"]
    assert status == 200 and json.loads(body)["ack"] == "region"
    status, hdrs, body = f.region_req("GET", "payslow:3")
    assert status == 200 and body == b"third"
    status, hdrs, body = f.region_req("GET", "pay:2")
    assert status == 200 and body == b"second" and hdrs["x-metrocell-version"] == version2
    assert f.req("lax", "PUT", "pay:4", b"fourth")[0] == 200
    assert f.region_req("GET", "pay:4")[2] == b"fourth"
    assert f.metric("lax", 'metrocell_ack_region_timeouts_total{cell="lax"}') == 1


def test_backlog_full_refuses_replicated_keeps_local_loses_nothing(fleet_factory):
    f = fleet_factory(repl={"backlog_max_bytes": 4096}).start_all()
    f.put("lax", "warm", b"w")
    f.wait_replicated("lax")
    f.region.stop()
    wait_until(lambda: not f.status("lax")["replication"]["connected"], timeout=10,
               what="lax to see the region gone")
    acked = {}
    refused = 0
    for i in range(100):
        key = "bk:%d" % i
        status, hdrs, body = f.req("lax", "PUT", key, b"v" * 200)
        if status == 200:
            acked[key] = json.loads(body)["version"]
            continue
        assert status == 503, body
        err = json.loads(body)
        assert err["error"] == "backlog_full" and "backlog_max_bytes" in err["message"]
        refused += 1
        assert f.get("lax", key)[0] in (404, 503), "a refused write must not be stored"
    assert 10 <= len(acked) <= 25 and refused == 100 - len(acked)
    assert f.metric("lax", 'metrocell_replication_backlog_full{cell="lax"}') == 1
    assert f.metric("lax", 'metrocell_replication_backlog_refused_total{cell="lax"}') == refused
    # local keys go on; a replicated delete is refused like a put
    for i in range(20):
        assert f.req("lax", "PUT", "pii:during%d" % i, b"x" * 200)[0] == 200
    assert f.incr("lax", "pii:count")[0] == 200
    assert f.req("lax", "DELETE", "bk:0")[0] == 503
    f.start_region()
    f.wait_replicated("lax", timeout=20)
    for key, version in acked.items():
        status, hdrs, _ = f.region_req("GET", key)
        assert status == 200 and hdrs["x-metrocell-version"] == version, key
    assert f.req("lax", "PUT", "bk:after", b"ok")[0] == 200
    assert f.metric("lax", 'metrocell_replication_backlog_full{cell="lax"}') == 0


def test_backlog_age_bound(fleet_factory):
    f = fleet_factory(repl={"backlog_max_age_ms": 700}).start_all()
    f.region.stop()
    wait_until(lambda: not f.status("lax")["replication"]["connected"], timeout=10,
               what="lax to see the region gone")
    first = f.put("lax", "age:1", b"x")
    time.sleep(1.0)
    status, _, body = f.req("lax", "PUT", "age:2", b"x")
    assert status == 503 and "backlog_max_age_ms" in json.loads(body)["message"]
    assert f.req("lax", "PUT", "pii:ok", b"x")[0] == 200
    f.start_region()
    f.wait_replicated("lax", timeout=20)
    assert f.region_req("GET", "age:1")[1]["x-metrocell-version"] == first["version"]
    assert f.req("lax", "PUT", "age:2", b"x")[0] == 200


def test_durability_setting_is_visible(fleet_factory):
    f = fleet_factory(state={"durability": "none"}).start_all()
    assert f.metric("lax", 'metrocell_state_durable{cell="lax"}') == 0
    f.put("lax", "x", b"1")
    # a clean stop syncs what "none" left in the page cache
    f.cells["lax"]["proc"].stop()
    f.start_cell("lax")
    assert f.get("lax", "x")[2] == b"1"
