/* Unit tests for the worker-pool and failure-policy keys of src/config/:
 * pools.NAME.health / outlier / max_queue / max_outstanding, the proxy route's
 * on_failure, fail_on_5xx, retry and timeouts, and the region's fallback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

#define L1 "{\"cell\": \"lax\",\n"
#define L2 " \"listen\": {\"http\": \"127.0.0.1:8080\", \"admin\": \"127.0.0.1:9090\"},\n"
#define L3 " \"data_dir\": \"/tmp/lax\",\n"
#define L4 " \"region\": {\"repl\": \"127.0.0.1:7100\", \"http\": \"127.0.0.1:7080\"},\n"
#define L4_NO_HTTP " \"region\": {\"repl\": \"127.0.0.1:7100\"},\n"
#define POOLS " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]}},\n"
#define PROXY(extra)                                                                               \
	"{\"name\": \"app\", \"prefix\": \"/\", \"kind\": \"proxy\", \"pool\": \"app\"" extra "}"

static int mismatches; /* error messages that differ (all are printed, then asserted) */

static mc_cell_conf *cell_ok(const char *doc)
{
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	int rc = mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	return c;
}

static void cell_bad(const char *doc, const char *want)
{
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	int rc = mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, err, sizeof err);
	assert_int_equal(rc, MC_ECONFIG);
	assert_null(c);
	if (strcmp(err, want) != 0)
		print_message("got  %s\nwant %s\n", err, want);
	mismatches += strcmp(err, want) != 0;
}

static void region_bad(const char *doc, const char *want)
{
	char err[MC_CONFIG_ERR_MAX];
	mc_region_conf *c = NULL;
	int rc = mc_region_conf_parse("region.json", doc, strlen(doc), &c, err, sizeof err);
	assert_int_equal(rc, MC_ECONFIG);
	assert_null(c);
	if (strcmp(err, want) != 0)
		print_message("got  %s\nwant %s\n", err, want);
	mismatches += strcmp(err, want) != 0;
}

static void test_defaults(void **state)
{
	(void)state;
	mc_cell_conf *c = cell_ok(L1 L2 L3 L4 POOLS " \"routes\": [" PROXY("") "]}");
	const mc_pool_conf *p = &c->pools[0];
	assert_int_equal(p->max_queue, 256);
	assert_int_equal(p->max_outstanding, 0);
	assert_int_equal(p->health.enabled, 0);
	assert_null(p->health.path);
	assert_int_equal(p->outlier.consecutive_failures, 5);
	assert_int_equal(p->outlier.failure_percent, 50);
	assert_int_equal(p->outlier.window_ms, 10000);
	assert_int_equal(p->outlier.min_requests, 20);
	assert_int_equal(p->outlier.base_ejection_ms, 30000);
	assert_int_equal(p->outlier.max_ejection_ms, 300000);
	assert_int_equal(p->outlier.max_ejection_percent, 50);
	assert_int_equal(p->outlier.count_5xx, 0);
	const mc_route_conf *r = &c->routes[0];
	assert_int_equal(r->fail_open, 0);
	assert_int_equal(r->fail_on_5xx, 0);
	assert_int_equal(r->retry, 1);
	assert_int_equal(r->connect_timeout_ms, 1000);
	assert_int_equal(r->first_byte_timeout_ms, 10000);
	assert_int_equal(r->idle_timeout_ms, 10000);
	assert_int_equal(r->budget_ms, 11000);
	assert_int_equal(r->fallback_timeout_ms, 5000);
	mc_cell_conf_free(c);

	/* an empty health object turns probes on with their defaults; a larger
	 * base ejection time raises the default cap with it */
	c = cell_ok(L1 L2 L3 L4
		    " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"timeout_ms\": 300,"
		    " \"health\": {}, \"outlier\": {\"base_ejection_ms\": 400000}}},\n"
		    " \"routes\": [" PROXY(", \"connect_timeout_ms\": 50") "]}");
	p = &c->pools[0];
	assert_int_equal(p->health.enabled, 1);
	assert_string_equal(p->health.path, "/healthz");
	assert_int_equal(p->health.interval_ms, 2000);
	assert_int_equal(p->health.timeout_ms, 1000);
	assert_int_equal(p->health.rise, 2);
	assert_int_equal(p->health.fall, 3);
	assert_int_equal(p->outlier.max_ejection_ms, 400000);
	assert_int_equal(c->routes[0].first_byte_timeout_ms, 300);
	assert_int_equal(c->routes[0].budget_ms, 350);
	mc_cell_conf_free(c);
}

static void test_every_key(void **state)
{
	(void)state;
	mc_cell_conf *c = cell_ok(
	    L1 L2 L3 L4
	    " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"max_queue\": 10,"
	    " \"max_outstanding\": 99,"
	    " \"health\": {\"path\": \"/ready?x=1\", \"interval_ms\": 200, \"timeout_ms\": 100,"
	    " \"rise\": 1, \"fall\": 4},"
	    " \"outlier\": {\"consecutive_failures\": 3, \"failure_percent\": 0, \"window_ms\": "
	    "500,"
	    " \"min_requests\": 7, \"base_ejection_ms\": 100, \"max_ejection_ms\": 900,"
	    " \"max_ejection_percent\": 100, \"count_5xx\": true}}},\n"
	    " \"routes\": [" PROXY(", \"on_failure\": \"fail_open\", \"fail_on_5xx\": true, "
				   "\"retry\": false, \"connect_timeout_ms\": 11, "
				   "\"first_byte_timeout_ms\": 22, \"idle_timeout_ms\": 33, "
				   "\"budget_ms\": 44, \"fallback_timeout_ms\": 55") "]}");
	const mc_pool_conf *p = &c->pools[0];
	assert_int_equal(p->max_queue, 10);
	assert_int_equal(p->max_outstanding, 99);
	assert_string_equal(p->health.path, "/ready?x=1");
	assert_int_equal(p->health.interval_ms, 200);
	assert_int_equal(p->health.timeout_ms, 100);
	assert_int_equal(p->health.rise, 1);
	assert_int_equal(p->health.fall, 4);
	assert_int_equal(p->outlier.consecutive_failures, 3);
	assert_int_equal(p->outlier.failure_percent, 0);
	assert_int_equal(p->outlier.window_ms, 500);
	assert_int_equal(p->outlier.min_requests, 7);
	assert_int_equal(p->outlier.base_ejection_ms, 100);
	assert_int_equal(p->outlier.max_ejection_ms, 900);
	assert_int_equal(p->outlier.max_ejection_percent, 100);
	assert_int_equal(p->outlier.count_5xx, 1);
	const mc_route_conf *r = &c->routes[0];
	assert_int_equal(r->fail_open, 1);
	assert_int_equal(r->fail_on_5xx, 1);
	assert_int_equal(r->retry, 0);
	assert_int_equal(r->connect_timeout_ms, 11);
	assert_int_equal(r->first_byte_timeout_ms, 22);
	assert_int_equal(r->idle_timeout_ms, 33);
	assert_int_equal(r->budget_ms, 44);
	assert_int_equal(r->fallback_timeout_ms, 55);
	mc_cell_conf_free(c);
}

static void test_errors(void **state)
{
	(void)state;
	cell_bad(L1 L2 L3 L4 POOLS " \"routes\": [" PROXY(", \"on_failure\": \"open\"") "]}",
		 "cell.json:6:90: routes[0].on_failure: expected \"fail_closed\" or \"fail_open\", "
		 "got \"open\"");
	cell_bad(L1 L2 L3 L4_NO_HTTP POOLS
		 " \"routes\": [" PROXY(", \"on_failure\": \"fail_open\"") "]}",
		 "cell.json:6:90: routes[0].on_failure: \"fail_open\" forwards to the region's "
		 "fallback path and needs region.http");
	cell_bad(L1 L2 L3 L4 POOLS
		 " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/kv/\", \"kind\": \"kv\", "
		 "\"budget_ms\": 5}]}",
		 "cell.json:6:60: routes[0]: a \"kv\" route takes no \"budget_ms\"");
	cell_bad(L1 L2 L3 L4 POOLS " \"routes\": [" PROXY(", \"fail_on_5xx\": 1") "]}",
		 "cell.json:6:91: routes[0].fail_on_5xx: expected true or false, got 1");
	cell_bad(L1 L2 L3 L4 POOLS " \"routes\": [" PROXY(", \"budget_ms\": 0") "]}",
		 "cell.json:6:89: routes[0].budget_ms: expected an integer in 1..3600000, got 0");
	cell_bad(L1 L2 L3 L4
		 " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"outlier\": "
		 "{\"base_ejection_ms\": 500, \"max_ejection_ms\": 100}}},\n"
		 " \"routes\": [" PROXY("") "]}",
		 "cell.json:5:107: pools.app.outlier.max_ejection_ms: expected an integer in "
		 "500..86400000, got 100");
	cell_bad(L1 L2 L3 L4
		 " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"health\": "
		 "{\"path\": \"healthz\"}}},\n"
		 " \"routes\": [" PROXY("") "]}",
		 "cell.json:5:70: pools.app.health.path: expected a path starting with \"/\", got "
		 "\"healthz\"");
	cell_bad(L1 L2 L3 L4
		 " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"health\": "
		 "{\"rise\": 0}}},\n"
		 " \"routes\": [" PROXY("") "]}",
		 "cell.json:5:70: pools.app.health.rise: expected an integer in 1..100, got 0");
	cell_bad(L1 L2 L3 L4
		 " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"outlier\": "
		 "{\"count5xx\": true}}},\n"
		 " \"routes\": [" PROXY("") "]}",
		 "cell.json:5:63: pools.app.outlier: unknown key \"count5xx\" (did you mean "
		 "\"count_5xx\"?)");
	cell_bad(L1 L2 L3 L4
		 " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"max_queue\": 0}},\n"
		 " \"routes\": [" PROXY("") "]}",
		 "cell.json:5:64: pools.app.max_queue: expected an integer in 1..100000, got 0");

	const char *rhead = "{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", "
			    "\"repl\": \"127.0.0.1:0\"},\n \"data_dir\": \"/r\",\n";
	char doc[512];
	snprintf(doc, sizeof doc, "%s \"fallback\": {\"workers\": []}}", rhead);
	region_bad(doc, "region.json:4:26: fallback.workers: expected 1..64 workers, got 0");
	snprintf(doc, sizeof doc,
		 "%s \"fallback\": {\"workers\": [\"127.0.0.1:1\"], \"health\": {}}}", rhead);
	region_bad(doc, "region.json:4:43: fallback: unknown key \"health\"");
	snprintf(doc, sizeof doc, "%s \"fallback\": {}}", rhead);
	region_bad(doc, "region.json:4:14: fallback: missing required key \"workers\"");
	assert_int_equal(mismatches, 0);
}

static void test_region_fallback(void **state)
{
	(void)state;
	const char *doc = "{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", "
			  "\"repl\": \"127.0.0.1:0\"},\n \"data_dir\": \"/r\",\n"
			  " \"fallback\": {\"workers\": [\"127.0.0.1:9101\", \"127.0.0.1:9102\"], "
			  "\"timeout_ms\": 2500}}";
	char err[MC_CONFIG_ERR_MAX];
	mc_region_conf *c = NULL;
	int rc = mc_region_conf_parse("region.json", doc, strlen(doc), &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(c->fallback);
	assert_string_equal(c->fallback->name, "fallback");
	assert_int_equal(c->fallback->nworkers, 2);
	assert_string_equal(c->fallback->workers[1], "127.0.0.1:9102");
	assert_int_equal(c->fallback->timeout_ms, 2500);
	assert_int_equal(c->fallback->connect_timeout_ms, 1000);
	mc_region_conf_free(c);
}

/* docs/examples/<name>, from the repository root (make unit) or next to this file. */
static const char *example(const char *name, char *buf, size_t cap)
{
	snprintf(buf, cap, "docs/examples/%s", name);
	if (access(buf, R_OK) == 0)
		return buf;
	const char *slash = strrchr(__FILE__, '/');
	int dir = slash ? (int)(slash - __FILE__) : 0;
	snprintf(buf, cap, "%.*s/../../docs/examples/%s", dir, __FILE__, name);
	return buf;
}

static void test_examples(void **state)
{
	(void)state;
	char path[512], err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	int rc =
	    mc_cell_conf_load(example("cell-lax.json", path, sizeof path), &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(c->pools[0].health.enabled, 1);
	assert_string_equal(c->pools[0].health.path, "/healthz");
	assert_int_equal(c->pools[0].outlier.consecutive_failures, 5);
	const mc_route_conf *app = &c->routes[1];
	assert_int_equal(app->fail_open, 1);
	assert_int_equal(app->budget_ms, 3000);
	mc_cell_conf_free(c);
	mc_region_conf *g = NULL;
	rc = mc_region_conf_load(example("region.json", path, sizeof path), &g, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(g->fallback);
	assert_int_equal(g->fallback->nworkers, 1);
	mc_region_conf_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults), cmocka_unit_test(test_every_key),
	    cmocka_unit_test(test_errors),   cmocka_unit_test(test_region_fallback),
	    cmocka_unit_test(test_examples),
	};
	return cmocka_run_group_tests_name("config_proxy", tests, NULL, NULL);
}
