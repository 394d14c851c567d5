/* Unit tests for the "telemetry" section of cell.json and region.json: the
 * documented examples, the defaults, and the precise errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

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
	int rc = mc_cell_conf_load(example("cell-telemetry.json", path, sizeof path), &c, err,
				   sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(c->telemetry.interval_ms, 1000);
	assert_int_equal(c->telemetry.stale_after_ms, 3000);
	assert_int_equal(c->telemetry.events_max_bytes, 4194304);
	mc_cell_conf_free(c);
	mc_region_conf *r = NULL;
	rc = mc_region_conf_load(example("region-telemetry.json", path, sizeof path), &r, err,
				 sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(r->telemetry.stale_after_ms, 3000);
	assert_int_equal(r->telemetry.events_max_bytes, 16777216);
	mc_region_conf_free(r);
}

#define CELL_HEAD                                                                                  \
	"{\"cell\":\"lax\",\"listen\":{\"http\":\"127.0.0.1:1\",\"admin\":\"127.0.0.1:2\"},"       \
	"\"data_dir\":\"/tmp/x\",\"region\":{\"repl\":\"127.0.0.1:3\"},"                           \
	"\"routes\":[{\"name\":\"kv\",\"prefix\":\"/v1/kv/\",\"kind\":\"kv\"}]"
#define REGION_HEAD                                                                                \
	"{\"region\":\"us-west\",\"listen\":{\"http\":\"127.0.0.1:1\",\"repl\":\"127.0.0.1:2\"},"  \
	"\"data_dir\":\"/tmp/x\""

static void test_defaults(void **state)
{
	(void)state;
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	const char *text = CELL_HEAD "}";
	assert_int_equal(mc_cell_conf_parse("cell.json", text, strlen(text), &c, err, sizeof err),
			 0);
	assert_int_equal(c->telemetry.interval_ms, 1000);
	assert_int_equal(c->telemetry.stale_after_ms, 3000);
	assert_int_equal(c->telemetry.events_max_bytes, 4194304);
	mc_cell_conf_free(c);
	mc_region_conf *r = NULL;
	text = REGION_HEAD "}";
	assert_int_equal(
	    mc_region_conf_parse("region.json", text, strlen(text), &r, err, sizeof err), 0);
	assert_int_equal(r->telemetry.stale_after_ms, 3000);
	assert_int_equal(r->telemetry.events_max_bytes, 16777216);
	mc_region_conf_free(r);
}

static void expect(int cell, const char *tail, const char *want)
{
	char text[1024], err[MC_CONFIG_ERR_MAX];
	snprintf(text, sizeof text, "%s,%s}", cell ? CELL_HEAD : REGION_HEAD, tail);
	int rc;
	if (cell) {
		mc_cell_conf *c = NULL;
		rc = mc_cell_conf_parse("cell.json", text, strlen(text), &c, err, sizeof err);
		assert_null(c);
	} else {
		mc_region_conf *r = NULL;
		rc = mc_region_conf_parse("region.json", text, strlen(text), &r, err, sizeof err);
		assert_null(r);
	}
	assert_int_equal(rc, MC_ECONFIG);
	if (!strstr(err, want))
		print_message("got: %s\nwant: %s\n", err, want);
	assert_non_null(strstr(err, want));
}

static void test_errors(void **state)
{
	(void)state;
	expect(1, "\"telemetry\":{\"interval_ms\":50}",
	       "telemetry.interval_ms: expected an integer in 100..60000, got 50");
	expect(1, "\"telemetry\":{\"interval_ms\":5000}",
	       "telemetry.interval_ms: stale_after_ms (3000) must be more than interval_ms (5000)");
	expect(
	    1, "\"telemetry\":{\"interval_ms\":1000,\"stale_after_ms\":1000}",
	    "telemetry.stale_after_ms: stale_after_ms (1000) must be more than interval_ms (1000)");
	expect(1, "\"telemetry\":{\"events_max_bytes\":1000}",
	       "telemetry.events_max_bytes: expected an integer in 65536..1099511627776, got 1000");
	expect(1, "\"telemetry\":{\"interval_m\":1000}",
	       "telemetry: unknown key \"interval_m\" (did you mean \"interval_ms\"?)");
	expect(1, "\"telemetry\":[]", "telemetry: expected an object");
	/* the region has no interval: summaries are the cells' */
	expect(0, "\"telemetry\":{\"interval_ms\":1000}", "telemetry: unknown key \"interval_ms\"");
	expect(0, "\"telemetry\":{\"stale_after_ms\":100}",
	       "telemetry.stale_after_ms: expected an integer in 200..600000, got 100");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_examples),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
