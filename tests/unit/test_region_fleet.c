/* Unit tests for the region's fleet view (src/region/fleet.c, included to reach
 * its state): summaries kept or refused, blind windows, and the event log's
 * deduplication by sequence number, refusals, gaps and a new stream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "region/fleet.c"

typedef struct fx {
	char dir[64];
	mc_region_conf *conf;
	region_fleet *f;
} fx;

static int setup(void **state)
{
	fx *x = calloc(1, sizeof *x);
	snprintf(x->dir, sizeof x->dir, "/tmp/mc-fleet-XXXXXX");
	if (!mkdtemp(x->dir))
		return -1;
	char text[512], err[MC_CONFIG_ERR_MAX];
	snprintf(text, sizeof text,
		 "{\"region\":\"us-west\",\"listen\":{\"http\":\"127.0.0.1:0\",\"repl\":"
		 "\"127.0.0.1:0\"},\"data_dir\":\"%s\",\"cells\":[\"lax\",\"sfo\"],"
		 "\"telemetry\":{\"stale_after_ms\":200,\"events_max_bytes\":65536}}",
		 x->dir);
	if (mc_region_conf_parse("region.json", text, strlen(text), &x->conf, err, sizeof err)) {
		print_message("%s\n", err);
		return -1;
	}
	mc_region_fleet_new(&x->f, x->conf);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	fx *x = *state;
	mc_region_fleet_free(x->f);
	mc_region_conf_free(x->conf);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", x->dir);
	if (system(cmd) != 0)
		return -1;
	free(x);
	return 0;
}

static double fleet_metric(region_fleet *f, const char *name, const char *labels)
{
	mc_metrics *m = mc_metrics_new();
	mc_region_fleet_metrics(f, m);
	double v = mc_metrics_sum(m, name, labels);
	mc_metrics_free(m);
	return v;
}

static void summary(mc_repl_telemetry *t, uint64_t seq)
{
	memset(t, 0, sizeof *t);
	t->seq = seq;
	t->interval_ms = 1000;
	t->n_outcomes = 1;
	t->outcomes[0] = (mc_repl_telem_outcome){
	    .id = 0, .total = 10 * seq, .count = 10, .p50_us = 100, .p95_us = 200, .p99_us = 300};
	t->regional = 5;
	t->regional_total = 5;
}

static void test_summaries(void **state)
{
	fx *x = *state;
	fleet_cell *lax = cell_find(x->f, "lax");
	assert_non_null(lax);
	assert_non_null(cell_find(x->f, "sfo"));
	assert_int_equal(x->f->ncells, 2);
	mc_repl_telemetry t;
	summary(&t, 1);
	mc_region_fleet_on_telemetry(x->f, "lax", &t);
	assert_int_equal(lax->summaries, 1);
	assert_true(fleet_metric(x->f, "metrocell_fleet_cell_up", "cell=\"lax\"") == 1);
	assert_true(fleet_metric(x->f, "metrocell_fleet_cell_up", "cell=\"sfo\"") == 0);
	assert_true(fleet_metric(x->f, "metrocell_fleet_requests_total", "cell=\"lax\"") == 10);
	assert_true(fleet_metric(x->f, "metrocell_fleet_requests_per_second", "cell=\"lax\"") ==
		    10);
	assert_true(
	    fleet_metric(x->f, "metrocell_fleet_regional_dependency_ratio", "cell=\"lax\"") == 0.5);
	/* an inconsistent summary is refused and does not replace the last one */
	summary(&t, 2);
	t.outcomes[0].p50_us = 1000;
	mc_region_fleet_on_telemetry(x->f, "lax", &t);
	assert_int_equal(lax->rejected, 1);
	assert_int_equal(lax->last.seq, 1);
	assert_non_null(strstr(lax->last_reject, "out of order"));
	/* a summary after more than stale_after_ms closes a blind window */
	usleep(300 * 1000);
	assert_true(fleet_metric(x->f, "metrocell_fleet_cell_up", "cell=\"lax\"") == 0);
	summary(&t, 3);
	mc_region_fleet_on_telemetry(x->f, "lax", &t);
	assert_int_equal(lax->windows, 1);
	assert_true(lax->blind_total_ms >= 300);
	assert_true(lax->last_end_ms - lax->last_start_ms >= 300);
	assert_true(fleet_metric(x->f, "metrocell_fleet_blind_windows_total", "cell=\"lax\"") == 1);
	/* cells outside the table's bound are not added */
	char name[16];
	for (int i = 0; i < FLEET_MAX_CELLS + 10; i++) {
		snprintf(name, sizeof name, "c%d", i);
		cell_get(x->f, name);
	}
	assert_int_equal(x->f->ncells, FLEET_MAX_CELLS);
}

/* Builds an EVENTS frame of lines (seq first..) and hands it to the fleet. */
static void deliver(fx *x, const char *cell, uint64_t stream, uint64_t first,
		    const char *const *lines, size_t n)
{
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_events_writer w;
	mc_repl_events_begin(&w, &b, stream, first);
	for (size_t i = 0; i < n; i++)
		mc_repl_events_add(&w, lines[i], strlen(lines[i]));
	mc_repl_events_end(&w);
	mc_repl_frame f;
	assert_int_equal(mc_repl_frame_decode((uint8_t *)b.data, b.len, MC_REPL_MAX_FRAME, &f),
			 (int)b.len);
	mc_region_fleet_on_events(x->f, cell, &f);
	mc_buf_fini(&b);
}

typedef struct seen {
	uint64_t seqs[64];
	size_t n;
} seen;

static int collect(void *arg, uint64_t seq, const char *line, size_t len)
{
	(void)line;
	(void)len;
	seen *s = arg;
	s->seqs[s->n++] = seq;
	return 0;
}

static void test_events_dedup(void **state)
{
	fx *x = *state;
	const char *a[] = {"{\"seq\":1,\"ts_ms\":1,\"cell\":\"lax\",\"type\":\"cell_start\"}",
			   "{\"seq\":2,\"ts_ms\":2,\"type\":\"x\"}",
			   "{\"seq\":3,\"ts_ms\":3,\"type\":\"y\"}"};
	deliver(x, "lax", 77, 1, a, 3);
	fleet_cell *lax = cell_find(x->f, "lax");
	assert_int_equal(lax->ev_received, 3);
	assert_int_equal(lax->handled_seq, 3);
	/* resent after a reconnect, with one more: only seq 4 is new */
	const char *b[] = {a[1], a[2], "{\"seq\":4,\"ts_ms\":4,\"type\":\"z\"}"};
	deliver(x, "lax", 77, 2, b, 3);
	assert_int_equal(lax->ev_received, 4);
	assert_int_equal(lax->ev_duplicates, 2);
	/* refused: seq not its place, another cell's name, no type, not JSON */
	const char *c[] = {"{\"seq\":9,\"ts_ms\":5,\"type\":\"bad\"}",
			   "{\"seq\":6,\"ts_ms\":5,\"cell\":\"sfo\",\"type\":\"bad\"}",
			   "{\"seq\":7,\"ts_ms\":5}", "{\"seq\":8,\"ts_ms\":5,\"type\":\"x\",}",
			   "{\"seq\":9,\"ts_ms\":9,\"type\":\"ok\"}"};
	deliver(x, "lax", 77, 5, c, 5);
	assert_int_equal(lax->ev_refused, 4);
	assert_int_equal(lax->ev_received, 5);
	assert_int_equal(lax->handled_seq, 9);
	assert_int_equal(lax->ev_lost, 0); /* 5..8 were refused, not lost */
	/* a gap: the cell dropped 10..11 */
	const char *d[] = {"{\"seq\":12,\"ts_ms\":12,\"type\":\"after_gap\"}"};
	deliver(x, "lax", 77, 12, d, 1);
	assert_int_equal(lax->ev_lost, 2);
	seen s = {0};
	assert_int_equal(mc_evbuf_read(lax->events, 0, 64, SIZE_MAX, collect, &s), 6);
	uint64_t want[] = {1, 2, 3, 4, 9, 12};
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(s.seqs[i], want[i]);
	assert_true(fleet_metric(x->f, "metrocell_fleet_events_duplicates_total", "cell=\"lax\"") ==
		    2);

	/* a new stream (the cell lost its buffer): the old log moves to lax.prev */
	const char *e[] = {"{\"seq\":1,\"ts_ms\":20,\"cell\":\"lax\",\"type\":\"cell_start\"}"};
	deliver(x, "lax", 78, 1, e, 1);
	assert_int_equal(lax->handled_seq, 1);
	mc_evbuf_stats st;
	mc_evbuf_stats_get(lax->events, &st);
	assert_true(st.stream == 78);
	assert_int_equal(st.last_seq, 1);
	char prev[128];
	snprintf(prev, sizeof prev, "%s/events/lax.prev/meta", x->dir);
	assert_int_equal(access(prev, R_OK), 0);

	/* a region restart finds the log and keeps deduplicating */
	mc_region_fleet_free(x->f);
	mc_region_fleet_new(&x->f, x->conf);
	lax = cell_find(x->f, "lax");
	assert_non_null(lax->events);
	assert_int_equal(lax->handled_seq, 1);
	deliver(x, "lax", 78, 1, e, 1);
	assert_int_equal(lax->ev_duplicates, 1);
	assert_int_equal(lax->ev_received, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_summaries, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_events_dedup, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
