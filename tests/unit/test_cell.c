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
	cell c;
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
		cmocka_unit_test(test_pick_worker_spreads_and_avoids),
		cmocka_unit_test(test_kv_mget_route_and_targets),
	};
	return cmocka_run_group_tests_name("cell", tests, NULL, NULL);
}
