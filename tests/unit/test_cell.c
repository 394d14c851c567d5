/* Unit tests for src/cell helpers that the integration tests reach only
 * indirectly: longest-prefix route matching and the power-of-two worker choice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/cell/cell.c"
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
	cell c;
	memset(&c, 0, sizeof c);
	c.routes = routes;
	c.nroutes = 3;
	const char *p = "/v1/kv/abc";
	assert_ptr_equal(route_match(&c, p, strlen(p)), &routes[1]);
	p = "/v1/kv";
	assert_ptr_equal(route_match(&c, p, strlen(p)), &routes[2]);
	p = "/other";
	assert_ptr_equal(route_match(&c, p, strlen(p)), &routes[0]);
	c.nroutes = 2; /* without "/v1/" */
	p = "/v1/x";
	assert_ptr_equal(route_match(&c, p, strlen(p)), &routes[0]);
	routes[0].prefix_len = 5;
	rc[0].prefix = "/app/";
	p = "/ap";
	assert_null(route_match(&c, p, strlen(p)));
}

static void test_pick_worker_spreads_and_avoids(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	mc_pool_conf pc = {.name = "app", .nworkers = 3};
	cell_pool p = {.conf = &pc, .nworkers = 3};
	mc_http_pool *w[3];
	for (int i = 0; i < 3; i++) {
		char addr[32];
		snprintf(addr, sizeof addr, "127.0.0.1:%d", 1 + i);
		assert_int_equal(mc_http_pool_new(&w[i], &loop, addr, NULL), 0);
	}
	p.workers = w;
	int seen[3] = {0};
	for (int i = 0; i < 300; i++)
		seen[pick_worker(&p, SIZE_MAX)]++;
	for (int i = 0; i < 3; i++)
		assert_true(seen[i] > 50); /* idle workers share the load */
	for (int i = 0; i < 100; i++)
		assert_int_not_equal(pick_worker(&p, 1), 1);
	p.nworkers = 1;
	assert_int_equal(pick_worker(&p, 0), 0); /* a single worker is always used */
	for (int i = 0; i < 3; i++)
		mc_http_pool_free(w[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_route_match_longest_prefix),
		cmocka_unit_test(test_pick_worker_spreads_and_avoids),
		cmocka_unit_test(test_quota_buckets),
		cmocka_unit_test(test_locality_lookup),
	};
	return cmocka_run_group_tests_name("cell", tests, NULL, NULL);
}
