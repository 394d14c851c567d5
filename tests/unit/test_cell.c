/* Unit tests for src/cell helpers that the integration tests reach only
 * indirectly: longest-prefix route matching, the power-of-two worker choice on
 * outstanding requests and the outlier-ejection rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/cell/cell.c"
#include "../../src/cell/pool.c"
#include "../../src/cell/proxy.c"

static void test_route_match_longest_prefix(void **state)
{
	(void)state;
	mc_route_conf rc[3] = {
		{.name = "root", .prefix = "/", .kind = MC_ROUTE_PROXY},
		{.name = "kv", .prefix = "/v1/kv/", .kind = MC_ROUTE_KV},
		{.name = "v1", .prefix = "/v1/", .kind = MC_ROUTE_PROXY},
	};
	cell_route routes[3];
	memset(routes, 0, sizeof routes);
	for (int i = 0; i < 3; i++) {
		routes[i].conf = &rc[i];
		routes[i].prefix_len = strlen(rc[i].prefix);
	}
	cell_snapshot c; /* routes live in the config snapshot */
	memset(&c, 0, sizeof c);
	c.routes = routes;
	c.nroutes = 3;
	const char *p = "/v1/kv/abc";
	assert_ptr_equal(mc_cell_route_match(&c, p, strlen(p)), &routes[1]);
	p = "/v1/kv";
	assert_ptr_equal(mc_cell_route_match(&c, p, strlen(p)), &routes[2]);
	p = "/other";
	assert_ptr_equal(mc_cell_route_match(&c, p, strlen(p)), &routes[0]);
	c.nroutes = 2; /* without "/v1/" */
	p = "/v1/x";
	assert_ptr_equal(mc_cell_route_match(&c, p, strlen(p)), &routes[0]);
	routes[0].prefix_len = 5;
	rc[0].prefix = "/app/";
	p = "/ap";
	assert_null(mc_cell_route_match(&c, p, strlen(p)));
}

/* A pool of n workers on loop with the given outlier settings (no probes). */
typedef struct tpool {
	uv_loop_t loop;
	mc_cell_conf cc;
	mc_pool_conf pc;
	char *addrs[8];
	cell c;
	cell_pool p;
} tpool;

static void tpool_start(tpool *t, size_t n)
{
	memset(t, 0, sizeof *t);
	uv_loop_init(&t->loop);
	t->cc.cell = "lax";
	t->pc.name = "app";
	t->pc.nworkers = n;
	t->pc.workers = t->addrs;
	t->pc.connect_timeout_ms = 1000;
	t->pc.timeout_ms = 1000;
	t->pc.max_conns = 4;
	t->pc.max_queue = 4;
	t->pc.outlier = (mc_outlier_conf){.consecutive_failures = 3,
					  .failure_percent = 0,
					  .window_ms = 1000,
					  .min_requests = 10,
					  .base_ejection_ms = 100,
					  .max_ejection_ms = 250,
					  .max_ejection_percent = 50};
	for (size_t i = 0; i < n; i++) {
		t->addrs[i] = mc_alloc(32);
		snprintf(t->addrs[i], 32, "127.0.0.1:%zu", 1 + i);
	}
	t->c.loop = &t->loop;
	t->c.conf = &t->cc;
	t->c.metrics = mc_metrics_new();
	assert_int_equal(mc_cell_pool_init(&t->c, &t->p, &t->pc), 0);
}

static void tpool_stop(tpool *t)
{
	mc_cell_pool_fini(&t->p);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	mc_metrics_free(t->c.metrics);
	for (size_t i = 0; i < t->pc.nworkers; i++)
		free(t->addrs[i]);
}

static void test_pick_p2c_on_outstanding(void **state)
{
	(void)state;
	tpool t;
	tpool_start(&t, 3);
	cell_pool *p = &t.p;
	cell_worker **w = p->workers;
	uint64_t now = 1000000;
	int seen[3] = {0};
	for (int i = 0; i < 300; i++)
		seen[mc_cell_pool_pick(p, NULL, now)->idx]++;
	for (int i = 0; i < 3; i++)
		assert_true(seen[i] > 50); /* idle workers share the load */
	/* the busiest worker loses every comparison: two distinct workers are sampled */
	for (int i = 0; i < 5; i++)
		mc_cell_worker_begin(w[0]);
	assert_int_equal(mc_cell_pool_outstanding(p), 5);
	for (int i = 0; i < 200; i++)
		assert_ptr_not_equal(mc_cell_pool_pick(p, NULL, now), w[0]);
	/* between w1 (2 outstanding) and w2 (0), w2 always wins */
	mc_cell_worker_begin(w[1]);
	mc_cell_worker_begin(w[1]);
	for (int i = 0; i < 50; i++)
		assert_ptr_equal(mc_cell_pool_pick(p, w[0], now), w[2]);
	for (int i = 0; i < 100; i++)
		assert_ptr_not_equal(mc_cell_pool_pick(p, w[1], now), w[1]);
	/* only eligible workers: unhealthy and ejected ones are skipped */
	w[2]->sh->healthy = 0;
	for (int i = 0; i < 50; i++)
		assert_ptr_equal(mc_cell_pool_pick(p, w[0], now), w[1]);
	w[1]->sh->ejected_until_ms = now + 10;
	assert_null(mc_cell_pool_pick(p, w[0], now));
	assert_ptr_equal(mc_cell_pool_pick(p, NULL, now), w[0]);
	assert_ptr_equal(mc_cell_pool_pick(p, w[0], now + 10), w[1]); /* its ejection ended */
	w[0]->sh->healthy = 0;
	assert_null(mc_cell_pool_pick(p, w[1], now));
	for (int i = 0; i < 5; i++)
		mc_cell_worker_end(w[0]);
	mc_cell_worker_end(w[1]);
	mc_cell_worker_end(w[1]);
	assert_int_equal(mc_cell_pool_outstanding(p), 0);
	tpool_stop(&t);
}

static void test_outlier_consecutive_cap_and_growth(void **state)
{
	(void)state;
	tpool t;
	tpool_start(&t, 2);
	cell_worker **w = t.p.workers;
	uint64_t now = 5000000;
	/* a success resets the count */
	assert_int_equal(mc_cell_worker_observe(w[0], 1, now), 0);
	assert_int_equal(mc_cell_worker_observe(w[0], 1, now), 0);
	assert_int_equal(mc_cell_worker_observe(w[0], 0, now), 0);
	assert_int_equal(mc_cell_worker_observe(w[0], 1, now), 0);
	assert_int_equal(mc_cell_worker_observe(w[0], 1, now), 0);
	assert_int_equal(mc_cell_worker_observe(w[0], 1, now), 1);
	assert_false(mc_cell_worker_eligible(w[0], now));
	assert_int_equal(w[0]->sh->ejected_until_ms, now + 100);
	assert_int_equal(w[0]->m_ejections->value, 1);
	assert_int_equal(w[0]->m_ejected->value, 1);
	/* max_ejection_percent 50 of 2 workers: the second one stays in */
	for (int i = 0; i < 10; i++)
		assert_int_equal(mc_cell_worker_observe(w[1], 1, now), 0);
	assert_true(mc_cell_worker_eligible(w[1], now));
	assert_int_equal(mc_cell_pool_ejected(&t.p, now), 1);
	/* answers of requests sent before the ejection do not count */
	assert_int_equal(mc_cell_worker_observe(w[0], 1, now + 50), 0);
	/* back after 100 ms; ejected again, for twice as long, then capped at 250 */
	now += 100;
	assert_true(mc_cell_worker_eligible(w[0], now));
	assert_int_equal(mc_cell_pool_ejected(&t.p, now), 0);
	for (int i = 0; i < 3; i++)
		mc_cell_worker_observe(w[0], 1, now);
	assert_int_equal(w[0]->sh->ejected_until_ms, now + 200);
	assert_int_equal(w[0]->m_ejected->value, 1);
	now += 200;
	for (int i = 0; i < 3; i++)
		mc_cell_worker_observe(w[0], 1, now);
	assert_int_equal(w[0]->sh->ejected_until_ms, now + 250);
	assert_int_equal(w[0]->sh->times_ejected, 3);
	/* in for longer than the longest ejection: the multiplier starts over */
	now += 250;
	assert_int_equal(mc_cell_worker_observe(w[0], 0, now), 0);
	now += 300;
	for (int i = 0; i < 3; i++)
		mc_cell_worker_observe(w[0], 1, now);
	assert_int_equal(w[0]->sh->ejected_until_ms, now + 100);
	assert_int_equal(w[0]->sh->times_ejected, 1);
	assert_int_equal(w[0]->m_ejections->value, 4);
	tpool_stop(&t);
}

/* Two threads' copies of one pool (two cells sharing the main cell's registry):
 * a verdict or a count on one is the other's too. */
static void test_pool_state_shared_by_threads(void **state)
{
	(void)state;
	tpool a;
	tpool_start(&a, 2); /* a unit test's cell is its own main thread: no registry */
	mc_cell_pool_fini(&a.p);
	a.c.main = &a.c;
	a.c.pool_reg = mc_cell_shared_reg_new();
	assert_int_equal(mc_cell_pool_init(&a.c, &a.p, &a.pc), 0);
	cell other;
	memset(&other, 0, sizeof other);
	other.loop = &a.loop;
	other.conf = &a.cc;
	other.metrics = mc_metrics_new();
	other.main = &a.c;
	other.idx = 1;
	cell_pool q;
	memset(&q, 0, sizeof q);
	assert_int_equal(mc_cell_pool_init(&other, &q, &a.pc), 0);
	cell_worker **wa = a.p.workers, **wb = q.workers;
	assert_ptr_equal(wa[0]->sh, wb[0]->sh);
	/* only the main thread's copy probes and has the gauges */
	assert_non_null(wa[0]->m_healthy);
	assert_null(wb[0]->m_healthy);
	uint64_t now = 9000000;
	/* failures seen by both threads add up to one ejection */
	assert_int_equal(mc_cell_worker_observe(wa[0], 1, now), 0);
	assert_int_equal(mc_cell_worker_observe(wb[0], 1, now), 0);
	assert_int_equal(mc_cell_worker_observe(wa[0], 1, now), 1);
	assert_false(mc_cell_worker_eligible(wb[0], now));
	assert_int_equal(mc_cell_pool_ejected(&q, now), 1);
	/* the cap counts the other thread's ejection */
	for (int i = 0; i < 5; i++)
		assert_int_equal(mc_cell_worker_observe(wb[1], 1, now), 0);
	/* outstanding requests of both threads steer both */
	mc_cell_worker_begin(wb[1]);
	mc_cell_worker_begin(wa[1]);
	assert_int_equal(mc_cell_pool_outstanding(&a.p), 2);
	assert_int_equal(mc_cell_pool_outstanding(&q), 2);
	mc_cell_worker_end(wb[1]);
	mc_cell_worker_end(wa[1]);
	mc_cell_pool_fini(&q);
	mc_metrics_free(other.metrics);
	tpool_stop(&a);
	mc_cell_shared_reg_free(a.c.pool_reg);
}

static void test_outlier_failure_percentage(void **state)
{
	(void)state;
	tpool t;
	tpool_start(&t, 4);
	t.pc.outlier.consecutive_failures = 0;
	t.pc.outlier.failure_percent = 50;
	cell_worker *w = t.p.workers[0];
	uint64_t now = 7000000;
	/* below min_requests nothing happens, however bad */
	for (int i = 0; i < 4; i++) {
		assert_int_equal(mc_cell_worker_observe(w, 1, now), 0);
		assert_int_equal(mc_cell_worker_observe(w, 0, now), 0);
	}
	assert_int_equal(mc_cell_worker_observe(w, 0, now), 0);
	/* the 10th request makes 5 of 10 failed: 50 % */
	assert_int_equal(mc_cell_worker_observe(w, 1, now), 1);
	assert_false(mc_cell_worker_eligible(w, now));
	/* old requests leave the window: 4 failures + 5 successes a window ago do
	 * not add up with 1 failure now */
	cell_worker *x = t.p.workers[1];
	for (int i = 0; i < 4; i++)
		mc_cell_worker_observe(x, 1, now);
	for (int i = 0; i < 5; i++)
		mc_cell_worker_observe(x, 0, now);
	assert_int_equal(mc_cell_worker_observe(x, 1, now + 1000), 0);
	assert_true(mc_cell_worker_eligible(x, now + 1000));
	tpool_stop(&t);
}

/* ---- quotas and the locality map ------------------------------------------------ */

#include "cell/edge.h"

#define SEC 1000000000ull

static void test_quota_buckets(void **state)
{
	(void)state;
	mc_quota_conf qc = {.name = "q", .rate = 2.0, .burst = 3, .key = MC_QUOTA_KEY_IP,
			    .max_keys = 2};
	cell_quota *q = mc_cell_quota_new(NULL, &qc);
	quota_verdict v;
	uint64_t t0 = 1000 * SEC;
	for (int i = 0; i < 3; i++) {
		mc_cell_quota_take(q, "a", 1, t0, &v);
		assert_true(v.allowed);
	}
	mc_cell_quota_take(q, "a", 1, t0, &v);
	assert_false(v.allowed);
	assert_int_equal(v.retry_s, 1); /* 1 token at 2/s: 0.5 s, rounded up */
	assert_int_equal(v.reset_s, 2); /* 3 tokens: 1.5 s */
	mc_cell_quota_take(q, "a", 1, t0 + SEC / 4, &v);
	assert_false(v.allowed); /* 0.5 token */
	mc_cell_quota_take(q, "a", 1, t0 + SEC / 2, &v);
	assert_true(v.allowed); /* one token after 0.5 s (the 0.25 s of before count) */
	mc_cell_quota_take(q, "a", 1, t0 + 100 * SEC, &v);
	assert_true(v.allowed);
	assert_true(v.tokens == 2.0); /* refilled to burst, never beyond */
	/* a second key has its own bucket; a third evicts the least recently used */
	mc_cell_quota_take(q, "b", 1, t0 + 100 * SEC, &v);
	assert_true(v.allowed);
	assert_int_equal(mc_cell_quota_buckets(q), 2);
	mc_cell_quota_take(q, "c", 1, t0 + 100 * SEC, &v);
	assert_int_equal(mc_cell_quota_buckets(q), 2);
	/* "a" was evicted: it starts over with a full bucket */
	for (int i = 0; i < 3; i++) {
		mc_cell_quota_take(q, "a", 1, t0 + 100 * SEC, &v);
		assert_true(v.allowed);
	}
	mc_cell_quota_free(q);

	/* slow rates give long waits; buckets found full at the cold end are dropped */
	mc_quota_conf slow = {.name = "s", .rate = 0.1, .burst = 1, .max_keys = 1000};
	q = mc_cell_quota_new(NULL, &slow);
	mc_cell_quota_take(q, "x", 1, t0, &v);
	mc_cell_quota_take(q, "x", 1, t0, &v);
	assert_false(v.allowed);
	assert_int_equal(v.retry_s, 10);
	mc_cell_quota_take(q, "y", 1, t0 + 5 * SEC, &v);
	assert_int_equal(mc_cell_quota_buckets(q), 2); /* x still owes 5 s */
	mc_cell_quota_take(q, "z", 1, t0 + 11 * SEC, &v);
	assert_int_equal(mc_cell_quota_buckets(q), 2); /* x refilled: dropped; y, z stay */
	/* long keys: the same first 239 bytes do not make the same bucket */
	char k1[600], k2[600];
	memset(k1, 'k', sizeof k1);
	memcpy(k2, k1, sizeof k2);
	k2[599] = 'j';
	mc_cell_quota_take(q, k1, sizeof k1, t0 + 11 * SEC, &v);
	assert_true(v.allowed);
	mc_cell_quota_take(q, k2, sizeof k2, t0 + 11 * SEC, &v);
	assert_true(v.allowed);
	mc_cell_quota_take(q, k1, sizeof k1, t0 + 11 * SEC, &v);
	assert_false(v.allowed);
	/* many keys: the table grows and every bucket is found again */
	for (int i = 0; i < 500; i++) {
		char k[16];
		snprintf(k, sizeof k, "key%d", i);
		mc_cell_quota_take(q, k, strlen(k), t0 + 11 * SEC, &v);
		assert_true(v.allowed);
	}
	for (int i = 0; i < 500; i++) {
		char k[16];
		snprintf(k, sizeof k, "key%d", i);
		mc_cell_quota_take(q, k, strlen(k), t0 + 11 * SEC, &v);
		assert_false(v.allowed);
	}
	mc_cell_quota_free(q);
}

static void test_locality_lookup(void **state)
{
	(void)state;
	const char *doc =
	    "{\"cell\": \"lax\", \"listen\": {\"http\": \"127.0.0.1:0\", \"admin\": "
	    "\"127.0.0.1:0\"}, \"data_dir\": \"/tmp/x\", \"region\": {\"repl\": \"127.0.0.1:1\"},"
	    " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/\", \"kind\": \"kv\"}],"
	    " \"locality\": {\"cidrs\": {\"lax\": [\"10.1.0.0/16\", \"2001:db8:1::/48\"],"
	    " \"sfo\": [\"10.2.0.0/16\", \"::/0\"], \"sea\": [\"10.1.2.0/24\", \"10.1.2.128/25\"],"
	    " \"any\": [\"0.0.0.0/0\"], \"one\": [\"10.1.2.200/32\"]}}}";
	char err[MC_CONFIG_ERR_MAX];
	cell c;
	memset(&c, 0, sizeof c);
	assert_int_equal(mc_cell_conf_parse("t", doc, strlen(doc), &c.conf, err, sizeof err), 0);
	c.metrics = mc_metrics_new();
	cell_locality *l = mc_cell_locality_new(&c);
	const char *const *m = (const char *const *)c.conf->locality.metros;
	struct {
		const char *peer, *metro;
	} cases[] = {
	    {"10.1.9.9:1000", "lax"},	   {"10.1.2.3:1", "sea"},	    {"10.1.2.130:1", "sea"},
	    {"10.1.2.200:1", "one"},	   {"10.2.255.255:1", "sfo"},	    {"192.168.1.1:80", "any"},
	    {"[2001:db8:1::7]:443", "lax"}, {"[2001:db8:2::7]:443", "sfo"},
	    {"[::ffff:10.1.2.3]:9", "sea"}, {"[::1]:9", "sfo"},
	};
	for (size_t i = 0; i < MC_ARRAY_LEN(cases); i++) {
		int idx = mc_cell_locality_lookup(l, cases[i].peer);
		assert_true(idx >= 0);
		if (strcmp(m[idx], cases[i].metro) != 0)
			fail_msg("%s: got %s, want %s", cases[i].peer, m[idx], cases[i].metro);
	}
	assert_int_equal(mc_cell_locality_lookup(l, "?"), -1);
	assert_int_equal(mc_cell_locality_lookup(l, "not-an-ip:1"), -1);
	mc_cell_locality_free(l);
	mc_metrics_free(c.metrics);
	mc_cell_conf_free(c.conf);
}

/* The KV route's multi-get path and the region targets the cell builds. */
#include "../../src/cell/kv_int.h"

static void test_kv_mget_route_and_targets(void **state)
{
	(void)state;
	mc_route_conf rc[2] = {
		{.name = "kv", .prefix = "/v1/kv/", .kind = MC_ROUTE_KV},
		{.name = "app", .prefix = "/v1/", .kind = MC_ROUTE_PROXY},
	};
	cell_route routes[2];
	memset(routes, 0, sizeof routes);
	for (int i = 0; i < 2; i++) {
		routes[i].conf = &rc[i];
		routes[i].prefix_len = strlen(rc[i].prefix);
	}
	cell_snapshot c; /* routes live in the config snapshot */
	memset(&c, 0, sizeof c);
	c.routes = routes;
	c.nroutes = 2;
	const char *p = "/v1/kv:mget";
	assert_ptr_equal(mc_cell_kv_mget_route(&c, p, strlen(p)), &routes[0]);
	p = "/v1/kv/:mget";
	assert_null(mc_cell_kv_mget_route(&c, p, strlen(p)));
	p = "/v1:mget"; /* a proxy route has no multi-get */
	assert_null(mc_cell_kv_mget_route(&c, p, strlen(p)));
	p = "/v1/kv:mgets";
	assert_null(mc_cell_kv_mget_route(&c, p, strlen(p)));

	mc_buf t;
	mc_buf_init(&t);
	kv_region_target(&t, "a b/c%:d\xc3\xa9", 10, ":incr");
	assert_string_equal(t.data, "/v1/kv/a%20b%2Fc%25:d%C3%A9:incr");
	mc_buf_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_route_match_longest_prefix),
		cmocka_unit_test(test_quota_buckets),
		cmocka_unit_test(test_locality_lookup),
		cmocka_unit_test(test_pick_p2c_on_outstanding),
		cmocka_unit_test(test_outlier_consecutive_cap_and_growth),
		cmocka_unit_test(test_outlier_failure_percentage),
		cmocka_unit_test(test_pool_state_shared_by_threads),
		cmocka_unit_test(test_kv_mget_route_and_targets),
	};
	return cmocka_run_group_tests_name("cell", tests, NULL, NULL);
}
