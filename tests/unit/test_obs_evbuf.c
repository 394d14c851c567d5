/* Unit tests for the event buffer (src/obs/evbuf.c): line format, the size cap
 * on the directory (checked on disk after every event), segment rotation,
 * acknowledgement, resuming after a restart, a crash's partial line, and the
 * region-side append. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
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

#include "obs/evbuf.h"

typedef struct fx {
	char dir[64];
} fx;

static int setup(void **state)
{
	fx *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/mc-evbuf-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	*state = f;
	return 0;
}

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	char p[512];
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static int teardown(void **state)
{
	fx *f = *state;
	rm_dir(f->dir);
	free(f);
	return 0;
}

/* Bytes of every file in dir, and how many segment files. */
static uint64_t dir_bytes(const char *dir, size_t *nsegs)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	uint64_t total = 0;
	size_t n = 0;
	struct dirent *de;
	char p[512];
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		struct stat st;
		assert_int_equal(stat(p, &st), 0);
		total += (uint64_t)st.st_size;
		n += strstr(de->d_name, ".jsonl") != NULL;
	}
	closedir(d);
	if (nsegs)
		*nsegs = n;
	return total;
}

static mc_evbuf *open_buf(const char *dir, uint64_t max)
{
	mc_evbuf_opts o = {.dir = dir, .max_bytes = max, .source = "lax"};
	mc_evbuf *eb = NULL;
	char err[256];
	assert_int_equal(mc_evbuf_open(&eb, &o, err, sizeof err), 0);
	return eb;
}

typedef struct collected {
	uint64_t seqs[4096];
	size_t n;
	char last[8192];
} collected;

static int collect(void *arg, uint64_t seq, const char *line, size_t len)
{
	collected *c = arg;
	assert_true(c->n < 4096);
	c->seqs[c->n++] = seq;
	assert_true(len < sizeof c->last);
	memcpy(c->last, line, len);
	c->last[len] = '\0';
	return 0;
}

static void test_emit_format(void **state)
{
	fx *f = *state;
	mc_evbuf *eb = open_buf(f->dir, 1 << 20);
	assert_int_equal(mc_evbuf_emit(eb, "worker_ejected", "s:pool", "api", "s:worker",
				       "127.0.0.1:9", "u:ejection_ms", (uint64_t)30000, "b:probe",
				       0, "s:reason", "a \"quoted\"\nline", "s:none",
				       (const char *)NULL, "i:delta", (int64_t)-3, "f:ratio", 0.25,
				       NULL),
			 1);
	assert_int_equal(mc_evbuf_emit(eb, "cell_start", NULL), 2);
	collected *c = calloc(1, sizeof *c);
	assert_int_equal(mc_evbuf_read(eb, 0, 10, 1 << 20, collect, c), 2);
	assert_int_equal(c->seqs[0], 1);
	assert_int_equal(c->seqs[1], 2);
	assert_non_null(strstr(c->last, "{\"seq\":2,\"ts_ms\":"));
	assert_non_null(strstr(c->last, ",\"cell\":\"lax\",\"type\":\"cell_start\"}"));
	c->n = 0;
	assert_int_equal(mc_evbuf_read(eb, 0, 1, 1 << 20, collect, c), 1);
	const char *want = ",\"cell\":\"lax\",\"type\":\"worker_ejected\",\"pool\":\"api\","
			   "\"worker\":\"127.0.0.1:9\",\"ejection_ms\":30000,\"probe\":false,"
			   "\"reason\":\"a \\\"quoted\\\"\\nline\",\"none\":null,\"delta\":-3,"
			   "\"ratio\":0.25}";
	assert_non_null(strstr(c->last, want));
	assert_int_equal(strncmp(c->last, "{\"seq\":1,\"ts_ms\":", 17), 0);

	/* An oversize member is left out and the line says so. */
	char *big = malloc(5000);
	memset(big, 'x', 4999);
	big[4999] = '\0';
	uint64_t s3 = mc_evbuf_emit(eb, "big", "s:small", "kept", "s:huge", big, NULL);
	assert_int_equal(s3, 3);
	c->n = 0;
	assert_int_equal(mc_evbuf_read(eb, 2, 10, 1 << 20, collect, c), 1);
	assert_non_null(strstr(c->last, "\"small\":\"kept\",\"truncated\":true}"));
	assert_true(strlen(c->last) <= MC_EVBUF_LINE_MAX);
	free(big);

	mc_evbuf_stats st;
	mc_evbuf_stats_get(eb, &st);
	assert_int_equal(st.last_seq, 3);
	assert_int_equal(st.first_seq, 1);
	assert_int_equal(st.pending, 3);
	assert_int_equal(st.emitted, 3);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.bytes, dir_bytes(f->dir, NULL));
	assert_true(st.stream != 0);
	free(c);
	mc_evbuf_close(eb);
}

/* The cap holds on disk after every event, the oldest go first, drops are
 * counted exactly (nothing acknowledged: every deleted event is a drop), and
 * what is left reads back in order without holes. */
static void test_cap_and_rotation(void **state)
{
	fx *f = *state;
	const uint64_t cap = 64 << 10;
	mc_evbuf *eb = open_buf(f->dir, cap);
	size_t max_segs = 0;
	for (int i = 1; i <= 3000; i++) {
		char reason[64];
		snprintf(reason, sizeof reason, "event number %d of the fill", i);
		assert_int_equal(
		    mc_evbuf_emit(eb, "fill", "s:reason", reason, "u:i", (uint64_t)i, NULL),
		    (uint64_t)i);
		size_t nsegs;
		uint64_t b = dir_bytes(f->dir, &nsegs);
		assert_true(b <= cap);
		if (nsegs > max_segs)
			max_segs = nsegs;
	}
	assert_true(max_segs >= 4); /* rotated into several segments */
	mc_evbuf_stats st;
	mc_evbuf_stats_get(eb, &st);
	assert_int_equal(st.last_seq, 3000);
	assert_true(st.dropped > 0);
	assert_int_equal(st.pending + st.dropped, 3000);
	assert_true(st.first_seq > 1);
	assert_true(st.bytes <= cap);
	assert_true(st.bytes > cap / 2); /* the cap is used, not just respected */
	collected *c = calloc(1, sizeof *c);
	int n = mc_evbuf_read(eb, 0, 4096, SIZE_MAX, collect, c);
	assert_int_equal((uint64_t)n, st.pending);
	for (int i = 0; i < n; i++)
		assert_int_equal(c->seqs[i], st.first_seq + (uint64_t)i);
	/* byte-bounded read: at least one event, never past the bound otherwise */
	c->n = 0;
	assert_int_equal(mc_evbuf_read(eb, 0, 4096, 1, collect, c), 1);
	free(c);
	mc_evbuf_close(eb);
}

/* Acknowledged events leave without counting as drops; unacknowledged ones are
 * counted one by one. */
static void test_ack_then_fill(void **state)
{
	fx *f = *state;
	mc_evbuf *eb = open_buf(f->dir, 64 << 10);
	for (int i = 0; i < 100; i++)
		mc_evbuf_emit(eb, "a", "u:i", (uint64_t)i, NULL);
	assert_int_equal(mc_evbuf_ack(eb, 60), 0);
	assert_int_equal(mc_evbuf_ack(eb, 10), 0); /* never goes back */
	mc_evbuf_stats st;
	mc_evbuf_stats_get(eb, &st);
	assert_int_equal(st.acked_seq, 60);
	assert_int_equal(st.pending, 40);
	assert_int_equal(mc_evbuf_ack(eb, 1000), 0); /* clamped to the newest */
	mc_evbuf_stats_get(eb, &st);
	assert_int_equal(st.acked_seq, 100);
	assert_int_equal(st.pending, 0);
	/* fill until two more segments exist, acknowledge everything */
	size_t nsegs = 0;
	while (nsegs < 3) {
		mc_evbuf_emit(eb, "b", "u:i", (uint64_t)0, NULL);
		dir_bytes(f->dir, &nsegs);
	}
	mc_evbuf_stats_get(eb, &st);
	uint64_t acked = st.last_seq;
	mc_evbuf_ack(eb, acked);
	/* until the first segment goes: it held acknowledged events only */
	for (int i = 0; i < 100000 && st.first_seq == 1; i++) {
		mc_evbuf_emit(eb, "c", "u:i", (uint64_t)i, NULL);
		mc_evbuf_stats_get(eb, &st);
	}
	assert_true(st.first_seq > 1);
	assert_int_equal(st.dropped, 0);
	/* until unacknowledged events go: each one counts */
	for (int i = 0; i < 100000 && st.dropped == 0; i++) {
		mc_evbuf_emit(eb, "d", "u:i", (uint64_t)i, NULL);
		mc_evbuf_stats_get(eb, &st);
	}
	assert_true(st.first_seq > acked + 1);
	assert_int_equal(st.dropped, st.first_seq - (acked + 1));
	assert_int_equal(st.pending, st.last_seq - st.first_seq + 1);
	assert_true(dir_bytes(f->dir, NULL) <= 64 << 10);
	mc_evbuf_close(eb);
}

/* What was not acknowledged survives a restart; numbering and the stream id
 * continue. */
static void test_resume_after_restart(void **state)
{
	fx *f = *state;
	mc_evbuf *eb = open_buf(f->dir, 64 << 10);
	for (int i = 0; i < 100; i++)
		mc_evbuf_emit(eb, "before", "u:i", (uint64_t)i, NULL);
	mc_evbuf_ack(eb, 40);
	mc_evbuf_stats st0;
	mc_evbuf_stats_get(eb, &st0);
	mc_evbuf_close(eb);

	eb = open_buf(f->dir, 64 << 10);
	mc_evbuf_stats st;
	mc_evbuf_stats_get(eb, &st);
	assert_int_equal(st.stream, st0.stream);
	assert_int_equal(st.last_seq, 100);
	assert_int_equal(st.acked_seq, 40);
	assert_int_equal(st.pending, 60);
	assert_int_equal(mc_evbuf_emit(eb, "after", NULL), 101);
	collected *c = calloc(1, sizeof *c);
	assert_int_equal(mc_evbuf_read(eb, 40, 4096, SIZE_MAX, collect, c), 61);
	for (size_t i = 0; i < c->n; i++)
		assert_int_equal(c->seqs[i], 41 + i);
	assert_non_null(strstr(c->last, "\"type\":\"after\""));
	free(c);
	mc_evbuf_close(eb);
}

/* A crash in the middle of a write leaves a partial line: it is cut on open and
 * its seq is reused. */
static void test_partial_line(void **state)
{
	fx *f = *state;
	mc_evbuf *eb = open_buf(f->dir, 64 << 10);
	for (int i = 0; i < 5; i++)
		mc_evbuf_emit(eb, "x", NULL);
	mc_evbuf_close(eb);
	char p[256];
	snprintf(p, sizeof p, "%s/%020d.jsonl", f->dir, 1);
	int fd = open(p, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\"seq\":6,\"ts_m", 14), 14);
	close(fd);
	eb = open_buf(f->dir, 64 << 10);
	assert_int_equal(mc_evbuf_emit(eb, "y", NULL), 6);
	collected *c = calloc(1, sizeof *c);
	assert_int_equal(mc_evbuf_read(eb, 0, 100, SIZE_MAX, collect, c), 6);
	assert_int_equal(c->seqs[5], 6);
	assert_non_null(strstr(c->last, "\"type\":\"y\"}"));
	free(c);
	mc_evbuf_close(eb);
}

/* The region's side: lines from a cell, strictly increasing seq, gaps allowed. */
static void test_append(void **state)
{
	fx *f = *state;
	mc_evbuf *eb = open_buf(f->dir, 64 << 10);
	const char *l5 = "{\"seq\":5,\"type\":\"a\"}";
	const char *l9 = "{\"seq\":9,\"type\":\"b\"}";
	assert_int_equal(mc_evbuf_append(eb, 5, l5, strlen(l5)), 0);
	assert_int_equal(mc_evbuf_append(eb, 5, l5, strlen(l5)), MC_EINVAL); /* duplicate */
	assert_int_equal(mc_evbuf_append(eb, 9, l5, strlen(l5)), MC_EINVAL); /* seq mismatch */
	assert_int_equal(mc_evbuf_append(eb, 10, "{\"seq\":10}x", 11), MC_EINVAL);
	assert_int_equal(mc_evbuf_append(eb, 10, "{\"seq\":10,\n}", 12), MC_EINVAL);
	assert_int_equal(mc_evbuf_append(eb, 9, l9, strlen(l9)), 0);
	collected *c = calloc(1, sizeof *c);
	assert_int_equal(mc_evbuf_read(eb, 5, 100, SIZE_MAX, collect, c), 1);
	assert_int_equal(c->seqs[0], 9);
	assert_string_equal(c->last, l9);
	free(c);
	/* the stream id is adopted only while empty */
	assert_int_equal(mc_evbuf_set_stream(eb, 1234), MC_EINVAL);
	mc_evbuf_close(eb);

	uint64_t seq;
	assert_int_equal(mc_evbuf_line_seq("{\"seq\":42}", 10, &seq), 0);
	assert_int_equal(seq, 42);
	assert_int_equal(mc_evbuf_line_seq("{\"seq\":0,", 9, &seq), MC_EINVAL);
	assert_int_equal(mc_evbuf_line_seq("{\"seq\":x,", 9, &seq), MC_EINVAL);
	assert_int_equal(mc_evbuf_line_seq("{\"seq\":99999999999999999999,", 29, &seq), MC_EINVAL);
	assert_int_equal(mc_evbuf_line_seq("{\"type\":1}", 10, &seq), MC_EINVAL);
}

static void test_bad_options(void **state)
{
	fx *f = *state;
	mc_evbuf *eb = NULL;
	char err[256];
	mc_evbuf_opts o = {.dir = f->dir, .max_bytes = 1000};
	assert_int_equal(mc_evbuf_open(&eb, &o, err, sizeof err), MC_EINVAL);
	assert_null(eb);
	assert_non_null(strstr(err, "max_bytes"));
	o.max_bytes = 1 << 20;
	o.dir = "/proc/no/such/dir";
	assert_true(mc_evbuf_open(&eb, &o, err, sizeof err) < 0);
	assert_null(eb);
	assert_non_null(strstr(err, "/proc/no/such/dir"));
	mc_evbuf_close(NULL);
	assert_int_equal(mc_evbuf_emit(NULL, "x", NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_emit_format, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cap_and_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ack_then_fill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resume_after_restart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_partial_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_append, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
