/* Unit tests for src/obs: series identity, label escaping and the exact
 * Prometheus text of counters, gauges and histograms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "obs/obs.h"

static void test_series_identity(void **state)
{
	(void)state;
	mc_metrics *m = mc_metrics_new();
	mc_series *a = mc_metrics_series(m, "x_total", "help", MC_METRIC_COUNTER, "k=\"1\"");
	mc_series *b = mc_metrics_series(m, "x_total", "help", MC_METRIC_COUNTER, "k=\"2\"");
	assert_ptr_not_equal(a, b);
	assert_ptr_equal(a, mc_metrics_series(m, "x_total", "help", MC_METRIC_COUNTER, "k=\"1\""));
	/* pointers stay valid while the registry grows */
	for (int i = 0; i < 100; i++) {
		char l[32];
		snprintf(l, sizeof l, "k=\"n%d\"", i);
		mc_metrics_series(m, "x_total", "help", MC_METRIC_COUNTER, l)->value = i;
		snprintf(l, sizeof l, "fam_%d", i);
		mc_metrics_series(m, l, "help", MC_METRIC_GAUGE, "");
	}
	a->value = 7;
	assert_ptr_equal(a, mc_metrics_series(m, "x_total", "help", MC_METRIC_COUNTER, "k=\"1\""));
	assert_true(a->value == 7);
	mc_metrics_free(m);
	mc_metrics_free(NULL);
}

static void test_render_exact(void **state)
{
	(void)state;
	mc_metrics *m = mc_metrics_new();
	mc_buf lab;
	mc_buf_init(&lab);
	mc_buf_append_str(&lab, "route=\"");
	mc_metrics_label_escape(&lab, "a\"b\\c\nd");
	mc_buf_append_str(&lab, "\"");
	assert_string_equal(lab.data, "route=\"a\\\"b\\\\c\\nd\"");
	mc_metrics_series(m, "req_total", "Requests.", MC_METRIC_COUNTER, lab.data)->value = 3;
	mc_metrics_series(m, "temp", "A gauge.", MC_METRIC_GAUGE, "")->value = 0.5;
	mc_series *h = mc_metrics_series(m, "lat_seconds", "Latency.", MC_METRIC_HIST, "r=\"x\"");
	mc_hist_record(h->hist, 40);     /* 40 us: in le=5e-05 */
	mc_hist_record(h->hist, 700);    /* in le=0.001 */
	mc_hist_record(h->hist, 20000000); /* 20 s: only +Inf */
	mc_buf out;
	mc_buf_init(&out);
	mc_metrics_render(m, &out);
	const char *want_head = "# HELP req_total Requests.\n# TYPE req_total counter\n"
				"req_total{route=\"a\\\"b\\\\c\\nd\"} 3\n"
				"# HELP temp A gauge.\n# TYPE temp gauge\ntemp 0.5\n"
				"# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
				"lat_seconds_bucket{r=\"x\",le=\"5e-05\"} 1\n"
				"lat_seconds_bucket{r=\"x\",le=\"0.0001\"} 1\n";
	assert_int_equal(strncmp(out.data, want_head, strlen(want_head)), 0);
	assert_non_null(strstr(out.data, "lat_seconds_bucket{r=\"x\",le=\"0.0005\"} 1\n"));
	assert_non_null(strstr(out.data, "lat_seconds_bucket{r=\"x\",le=\"0.001\"} 2\n"));
	assert_non_null(strstr(out.data, "lat_seconds_bucket{r=\"x\",le=\"10\"} 2\n"));
	assert_non_null(strstr(out.data, "lat_seconds_bucket{r=\"x\",le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(out.data, "lat_seconds_sum{r=\"x\"} 20.000740\n"));
	assert_non_null(strstr(out.data, "lat_seconds_count{r=\"x\"} 3\n"));
	mc_buf_fini(&out);
	mc_buf_fini(&lab);
	mc_metrics_free(m);
}

/* Per-thread registries rendered as one: counters and histograms add up, a
 * gauge keeps the largest value, families only one side has are kept. */
static void test_merge(void **state)
{
	(void)state;
	mc_metrics *a = mc_metrics_new(), *b = mc_metrics_new(), *m = mc_metrics_new();
	mc_metrics_series(a, "req_total", "h", MC_METRIC_COUNTER, "t=\"x\"")->value = 3;
	mc_metrics_series(b, "req_total", "h", MC_METRIC_COUNTER, "t=\"x\"")->value = 4;
	mc_metrics_series(b, "req_total", "h", MC_METRIC_COUNTER, "t=\"y\"")->value = 1;
	mc_metrics_series(a, "up", "h", MC_METRIC_GAUGE, "")->value = 1;
	mc_metrics_series(b, "up", "h", MC_METRIC_GAUGE, "")->value = 0;
	mc_hist_record(mc_metrics_series(a, "lat", "h", MC_METRIC_HIST, "")->hist, 100);
	mc_hist_record(mc_metrics_series(b, "lat", "h", MC_METRIC_HIST, "")->hist, 200);
	mc_metrics_series(b, "only_b", "h", MC_METRIC_GAUGE, "")->value = 5;
	mc_metrics_merge(m, a);
	mc_metrics_merge(m, b);
	assert_true(mc_metrics_sum(m, "req_total", "t=\"x\"") == 7);
	assert_true(mc_metrics_sum(m, "req_total", NULL) == 8);
	assert_true(mc_metrics_sum(m, "up", NULL) == 1);
	assert_true(mc_metrics_sum(m, "lat", NULL) == 2);
	assert_true(mc_metrics_sum(m, "only_b", NULL) == 5);
	/* the sources are unchanged */
	assert_true(mc_metrics_sum(a, "req_total", NULL) == 3);
	mc_metrics_free(a);
	mc_metrics_free(b);
	mc_metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_series_identity),
		cmocka_unit_test(test_render_exact),
		cmocka_unit_test(test_merge),
	};
	return cmocka_run_group_tests_name("obs", tests, NULL, NULL);
}
