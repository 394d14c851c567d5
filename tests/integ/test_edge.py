"""Edge features of a cell as real processes on 127.0.0.1: route quotas (429
with Retry-After after the burst, refill at the configured rate), feature flags
served by a `flags` route, locality accounting from the CIDR map and from a
trusted X-Client-Metro header, and the regional-dependency and cold-start
metric families. Assertions are on wire bytes and metric lines."""

import json
import time

from conftest import http_request
from edgeutil import edge_cluster, metric, metrics, raw_exchange, split_response, start

QUOTA = {"name": "api", "rate": 0.5, "burst": 3, "key": "header:X-User"}


def with_quota(conf):
    conf["routes"] = [
        {"name": "app", "prefix": "/app/", "kind": "proxy", "pool": "app", "quota": QUOTA},
        {"name": "kv", "prefix": "/v1/kv/", "kind": "kv",
         "quota": {"name": "writes", "rate": 0.2, "burst": 1, "key": "ip"}},
        {"name": "free", "prefix": "/free/", "kind": "proxy", "pool": "app"},
    ]


def user_get(c, user, path="/app/x"):
    return raw_exchange(c.cell_http, ("GET %s HTTP/1.1\r\nHost: t\r\nX-User: %s\r\n"
                                      "Connection: close\r\n\r\n" % (path, user)).encode())


def test_quota_429_after_burst_then_refills(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, with_quota))
    # the burst: three requests pass
    for i in range(3):
        status, hdrs, body = split_response(user_get(c, "alice"))
        assert status == "HTTP/1.1 200 OK", (i, status, body)
    # the fourth is refused before the worker, with the bucket's numbers
    raw = user_get(c, "alice")
    status, hdrs, body = split_response(raw)
    assert status == "HTTP/1.1 429 Too Many Requests"
    # 0.5 tokens/s, the bucket nearly empty: one token is 1..2 s away
    retry = int(hdrs["retry-after"])
    assert retry in (1, 2), raw
    assert hdrs["ratelimit-limit"] == "3"
    assert hdrs["ratelimit-remaining"] == "0"
    assert 5 <= int(hdrs["ratelimit-reset"]) <= 6  # 3 tokens at 0.5/s, rounded up
    assert hdrs["content-type"] == "application/json"
    assert hdrs["x-metrocell-outcome"] == "refused"
    assert hdrs["x-metrocell-route"] == "app"
    doc = json.loads(body)
    assert doc["error"] == "quota_exceeded"
    assert doc["quota"] == "api"
    assert doc["retry_after_s"] == retry
    assert b"\r\nX-Worker:" not in raw  # the worker never saw it
    # other keys have their own bucket; a route without quota is not limited
    assert split_response(user_get(c, "bob"))[0] == "HTTP/1.1 200 OK"
    for _ in range(5):
        assert split_response(user_get(c, "alice", "/free/x"))[0] == "HTTP/1.1 200 OK"
    # after Retry-After seconds the bucket has a token again: exactly one passes
    time.sleep(retry + 0.05)
    assert split_response(user_get(c, "alice"))[0] == "HTTP/1.1 200 OK"
    assert split_response(user_get(c, "alice"))[0] == "HTTP/1.1 429 Too Many Requests"
    text = metrics(c)
    assert metric(c, 'metrocell_quota_requests_total{cell="lax",quota="api",result="allowed"}',
                  text) == 5
    assert metric(c, 'metrocell_quota_requests_total{cell="lax",quota="api",result="limited"}',
                  text) == 2
    # bob's bucket refilled completely while alice waited: it may have been dropped
    held = metric(c, 'metrocell_quota_buckets{cell="lax",quota="api"}', text)
    idle = metric(c, 'metrocell_quota_evictions_total{cell="lax",quota="api",reason="idle"}',
                  text)
    assert held >= 1 and held + idle == 2
    assert metric(c, 'metrocell_quota_evictions_total{cell="lax",quota="api",reason="max_keys"}',
                  text) == 0
    assert 'metrocell_requests_total{cell="lax",route="app",outcome="refused"} 2' in text


def test_quota_applies_to_kv_routes_before_the_write(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, with_quota))
    status, _, _ = http_request(c.cell_http, "PUT", "/v1/kv/q1", body=b"first")
    assert status == 200
    status, hdrs, body = http_request(c.cell_http, "PUT", "/v1/kv/q1", body=b"second")
    assert status == 429
    assert 1 <= int(hdrs["retry-after"]) <= 5
    assert json.loads(body)["quota"] == "writes"
    # the refused write did not happen (reads share the ip bucket: wait for a token)
    time.sleep(int(hdrs["retry-after"]) + 0.05)
    status, _, body = http_request(c.cell_http, "GET", "/v1/kv/q1")
    assert (status, body) == (200, b"first")


def with_flags(conf):
    conf["flags"] = {"new-checkout": True, "max_items": 25, "banner": "hello \"you\"",
                     "ratio": 0.25, "rollout": {"percent": 10, "cohorts": ["a", "b"]},
                     "off": False}
    conf["routes"].append({"name": "flags", "prefix": "/v1/flags", "kind": "flags"})


def test_flags_endpoints(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, with_flags))
    all_body = (b'{"flags":{"new-checkout":true,"max_items":25,"banner":"hello \\"you\\"",'
                b'"ratio":0.25,"rollout":{"percent":10,"cohorts":["a","b"]},"off":false}}\n')
    for path in ("/v1/flags", "/v1/flags/"):
        raw = raw_exchange(c.cell_http, b"GET " + path.encode() +
                           b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, hdrs, body = split_response(raw)
        assert status == "HTTP/1.1 200 OK"
        assert hdrs["content-type"] == "application/json"
        assert hdrs["x-metrocell-route"] == "flags"
        assert body == all_body
    status, hdrs, body = http_request(c.cell_http, "GET", "/v1/flags/max_items")
    assert (status, body) == (200, b'{"name":"max_items","value":25}\n')
    status, _, body = http_request(c.cell_http, "GET", "/v1/flags/rollout")
    assert body == b'{"name":"rollout","value":{"percent":10,"cohorts":["a","b"]}}\n'
    status, _, body = http_request(c.cell_http, "GET", "/v1/flags/off")
    assert (status, body) == (200, b'{"name":"off","value":false}\n')
    status, hdrs, body = http_request(c.cell_http, "GET", "/v1/flags/nope")
    assert status == 404
    assert hdrs["content-type"] == "application/json"
    assert json.loads(body) == {"error": "unknown_flag",
                                "message": 'no flag named "nope" (6 flags are configured)'}
    status, hdrs, body = http_request(c.cell_http, "PUT", "/v1/flags/off", body=b"true")
    assert status == 405 and hdrs["allow"] == "GET, HEAD"
    assert json.loads(body)["error"] == "method_not_allowed"
    status, hdrs, body = http_request(c.cell_http, "HEAD", "/v1/flags")
    assert (status, body, hdrs["content-length"]) == (200, b"", str(len(all_body)))


def with_locality(trust, cidrs):
    def mutate(conf):
        conf["locality"] = {"trust_client_metro_header": trust, "cidrs": cidrs}
    return mutate


def get(c, headers=None, path="/app/x"):
    status, _, _ = http_request(c.cell_http, "GET", path, headers=headers or {})
    return status


def test_locality_from_cidr_map_longest_prefix(procs, tmp_path, metrocell_bin):
    # 127.0.0.1 is in sfo's /8 but the /32 of sea is longer: the client is in sea
    cidrs = {"lax": ["10.1.0.0/16", "2001:db8:1::/48"], "sfo": ["127.0.0.0/8"],
             "sea": ["127.0.0.1/32"]}
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, with_locality(False, cidrs)))
    for _ in range(4):
        assert get(c) == 200
    # an untrusted X-Client-Metro is ignored (counted), the CIDR map decides
    assert get(c, {"X-Client-Metro": "lax"}) == 200
    text = metrics(c)
    assert metric(c, 'metrocell_requests_by_client_metro_total{cell="lax",client_metro="sea"}',
                  text) == 5
    for m in ("lax", "sfo", "unknown", "other"):
        assert metric(c, 'metrocell_requests_by_client_metro_total{cell="lax",client_metro="%s"}'
                      % m, text) == 0, m
    assert metric(c, 'metrocell_locality_violations_total{cell="lax"}', text) == 5
    assert metric(c, 'metrocell_client_metro_header_ignored_total{cell="lax",reason="untrusted"}',
                  text) == 1


def test_locality_from_trusted_header(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin,
                           with_locality(True, {"lax": ["127.0.0.0/8"]})))
    assert get(c) == 200                                   # CIDR: lax, local
    assert get(c, {"X-Client-Metro": "lax"}) == 200        # header: lax, local
    assert get(c, {"X-Client-Metro": "sfo"}) == 200        # another metro: violation
    assert get(c, {"X-Client-Metro": "sfo", "X-Metrocell-Failover": "1"}) == 200  # marked
    assert get(c, {"X-Client-Metro": "LAX!"}) == 200       # invalid: ignored, CIDR says lax
    assert get(c, {"X-Client-Metro": "a" * 32}) == 200     # too long: ignored
    text = metrics(c)
    assert metric(c, 'metrocell_requests_by_client_metro_total{cell="lax",client_metro="lax"}',
                  text) == 4
    assert metric(c, 'metrocell_requests_by_client_metro_total{cell="lax",client_metro="sfo"}',
                  text) == 2
    assert metric(c, 'metrocell_locality_violations_total{cell="lax"}', text) == 1
    assert metric(c, 'metrocell_locality_failover_requests_total{cell="lax"}', text) == 1
    assert metric(c, 'metrocell_client_metro_header_ignored_total{cell="lax",reason="invalid"}',
                  text) == 2


def test_regional_and_cold_start_families_always_render(procs, tmp_path, metrocell_bin):
    c = start(edge_cluster(procs, tmp_path, metrocell_bin, lambda conf: None))
    text = metrics(c)
    assert ("# HELP metrocell_regional_requests_total Requests whose critical path crossed "
            "to the region, by cause\n# TYPE metrocell_regional_requests_total counter\n") in text
    for cause in ("fallback", "regional_route", "read_through", "regional_key"):
        assert metric(c, 'metrocell_regional_requests_total{cell="lax",cause="%s"}' % cause,
                      text) == 0
    assert "# TYPE metrocell_cold_starts_total counter\n" in text
    for kind in ("upstream_connect", "tls_full_handshake", "first_request"):
        assert metric(c, 'metrocell_cold_starts_total{cell="lax",kind="%s"}' % kind, text) == 0
    assert metric(c, 'metrocell_locality_violations_total{cell="lax"}', text) == 0
    # first request after start, per route: two routes used, each counted once
    for _ in range(3):
        assert get(c) == 200
        assert http_request(c.cell_http, "GET", "/v1/kv/nothing")[0] == 404
    text = metrics(c)
    assert metric(c, 'metrocell_cold_starts_total{cell="lax",kind="first_request"}', text) == 2
    # no CIDR map, no header: the client metro is unknown, never a violation
    assert metric(c, 'metrocell_requests_by_client_metro_total{cell="lax",client_metro="unknown"}',
                  text) == 6
    assert metric(c, 'metrocell_locality_violations_total{cell="lax"}', text) == 0
