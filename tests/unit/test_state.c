/* Unit tests for src/state: codecs, put/get/delete, versions, the write log and its
 * trimming, persistence across reopen, region-side apply (idempotence and
 * last-writer-wins), group commit, TTL, limits, map-full and close semantics. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "state/state.h"
#include "state/state_int.h"
/* The store itself, to reach run_batch() (test_trim_survives_failed_batch). */
#include "state/store.c"

/* ---- helpers --------------------------------------------------------------------- */

typedef struct fixture {
	char dir[64];
	uv_loop_t loop;
	mc_store *s;
	int pending; /* callbacks still expected */
} fixture;

typedef struct wres {
	fixture *f;
	int done;
	int err;
	uint64_t version;
	uint64_t seq;
} wres;

static void on_write(void *arg, int err, uint64_t version, uint64_t seq)
{
	wres *w = arg;

	w->done++;
	w->err = err;
	w->version = version;
	w->seq = seq;
	w->f->pending--;
}

static void on_timeout(uv_timer_t *t)
{
	*(int *)t->data = 1;
}

/* Runs the loop until every expected callback fired; fails after 20 s. */
static void drain(fixture *f)
{
	uv_timer_t t;
	int expired = 0;

	uv_timer_init(&f->loop, &t);
	t.data = &expired;
	uv_timer_start(&t, on_timeout, 20000, 0);
	while (f->pending > 0 && !expired)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_false(expired);
	assert_int_equal(f->pending, 0);
}

static int store_open_opts(fixture *f, const char *home, size_t map_size)
{
	mc_store_opts o;

	mc_store_opts_default(&o);
	o.dir = f->dir;
	o.home = home;
	if (map_size)
		o.map_size = map_size;
	return mc_store_open(&f->s, &f->loop, &o);
}

static void store_open(fixture *f, const char *home)
{
	assert_int_equal(store_open_opts(f, home, 0), 0);
	assert_non_null(f->s);
}

static void store_close(fixture *f)
{
	mc_store_close(f->s);
	f->s = NULL;
	uv_run(&f->loop, UV_RUN_DEFAULT);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/mc_test_state_XXXXXX");
	if (!mkdtemp(f->dir) || uv_loop_init(&f->loop) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	DIR *d;
	struct dirent *de;
	char p[512];

	if (f->s)
		store_close(f);
	if (uv_loop_close(&f->loop) != 0)
		return -1;
	if ((d = opendir(f->dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				snprintf(p, sizeof p, "%s/%s", f->dir, de->d_name);
				unlink(p);
			}
		}
		closedir(d);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static void put(fixture *f, wres *w, const char *key, const char *val, uint64_t exp, int log)
{
	memset(w, 0, sizeof *w);
	w->f = f;
	assert_int_equal(mc_store_write(f->s, MC_OP_PUT, key, strlen(key), val, strlen(val), exp,
					log, on_write, w),
			 0);
	f->pending++;
}

static void del(fixture *f, wres *w, const char *key, int log)
{
	memset(w, 0, sizeof *w);
	w->f = f;
	assert_int_equal(
	    mc_store_write(f->s, MC_OP_DEL, key, strlen(key), NULL, 0, 0, log, on_write, w), 0);
	f->pending++;
}

/* Put and wait; returns the result. */
static wres put_sync(fixture *f, const char *key, const char *val, int log)
{
	wres w;

	put(f, &w, key, val, 0, log);
	drain(f);
	assert_int_equal(w.done, 1);
	return w;
}

static void apply_sync(fixture *f, const char *cell, const mc_log_entry *e, size_t n, wres *w)
{
	memset(w, 0, sizeof *w);
	w->f = f;
	assert_int_equal(mc_store_apply(f->s, cell, e, n, on_write, w), 0);
	f->pending++;
	drain(f);
	assert_int_equal(w->done, 1);
}

static void check_value(fixture *f, const char *key, const char *val)
{
	mc_record rec;
	mc_buf b;

	mc_buf_init(&b);
	assert_int_equal(mc_store_get(f->s, key, strlen(key), &rec, &b), 0);
	assert_int_equal(rec.value_len, strlen(val));
	assert_memory_equal(rec.value, val, rec.value_len);
	assert_ptr_equal(rec.value, b.data ? b.data : rec.value);
	mc_buf_fini(&b);
}

static void check_absent(fixture *f, const char *key)
{
	mc_record rec;
	mc_buf b;

	mc_buf_init(&b);
	assert_int_equal(mc_store_get(f->s, key, strlen(key), &rec, &b), MC_ENOTFOUND);
	mc_buf_fini(&b);
}

static mc_log_entry entry(uint64_t seq, uint64_t version, mc_op op, const char *key,
			  const char *val)
{
	mc_log_entry e = {.seq = seq,
			  .version = version,
			  .op = (uint8_t)op,
			  .key = key,
			  .klen = strlen(key),
			  .value = val,
			  .vlen = val ? strlen(val) : 0};
	return e;
}

/* Collects log entries (copies of key and value) for comparison. */
typedef struct collected {
	size_t n;
	mc_log_entry e[64];
	char kv[64][2][64];
	int stop_after;
} collected;

static int collect(void *arg, const mc_log_entry *e)
{
	collected *c = arg;

	assert_true(c->n < 64 && e->klen < 64 && e->vlen < 64);
	c->e[c->n] = *e;
	memcpy(c->kv[c->n][0], e->key, e->klen);
	c->kv[c->n][0][e->klen] = '\0';
	memcpy(c->kv[c->n][1], e->value, e->vlen);
	c->kv[c->n][1][e->vlen] = '\0';
	c->n++;
	return c->stop_after && (int)c->n >= c->stop_after;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_codec(void **state)
{
	uint8_t buf[128];
	mc_record r = {.version = 0x0102030405060708ull,
		       .expires_ms = 42,
		       .deleted = 1,
		       .value = "hello",
		       .value_len = 5},
		  out;
	mc_log_entry e = {.version = 7,
			  .expires_ms = 9,
			  .op = MC_OP_PUT,
			  .key = "k1",
			  .klen = 2,
			  .value = "vv",
			  .vlen = 2},
		     eo;
	size_t n;

	(void)state;
	strcpy(r.home, "lax");
	n = mc_state_record_size(3, 5);
	assert_int_equal(n, MC_STATE_REC_HDR + 8);
	mc_state_record_encode(buf, &r);
	assert_int_equal(mc_state_record_decode(buf, n, &out), 0);
	assert_true(out.version == r.version);
	assert_int_equal(out.expires_ms, 42);
	assert_int_equal(out.deleted, 1);
	assert_string_equal(out.home, "lax");
	assert_int_equal(out.value_len, 5);
	assert_memory_equal(out.value, "hello", 5);
	for (size_t i = 0; i < MC_STATE_REC_HDR + 3; i++)
		assert_int_equal(mc_state_record_decode(buf, i, &out), MC_EINVAL);
	buf[17] = MC_STATE_MAX_HOME + 1;
	assert_int_equal(mc_state_record_decode(buf, sizeof buf, &out), MC_EINVAL);

	n = mc_state_logent_size(2, 2);
	mc_state_logent_encode(buf, &e);
	assert_int_equal(mc_state_logent_decode(5, buf, n, &eo), 0);
	assert_int_equal(eo.seq, 5);
	assert_int_equal(eo.version, 7);
	assert_int_equal(eo.expires_ms, 9);
	assert_int_equal(eo.op, MC_OP_PUT);
	assert_int_equal(eo.klen, 2);
	assert_memory_equal(eo.key, "k1", 2);
	assert_int_equal(eo.vlen, 2);
	assert_memory_equal(eo.value, "vv", 2);
	for (size_t i = 0; i < MC_STATE_LOGENT_HDR + 2; i++)
		assert_int_equal(mc_state_logent_decode(5, buf, i, &eo), MC_EINVAL);
	buf[16] = 3;
	assert_int_equal(mc_state_logent_decode(5, buf, n, &eo), MC_EINVAL);
	buf[16] = MC_OP_DEL;
	mc_put_u16(buf + 17, 0);
	assert_int_equal(mc_state_logent_decode(5, buf, n, &eo), MC_EINVAL);
}

static void test_put_get_delete(void **state)
{
	fixture *f = *state;
	mc_record rec;
	mc_store_stats st;
	wres w;

	store_open(f, "lax");
	check_absent(f, "a");
	w = put_sync(f, "a", "hello", 1);
	assert_int_equal(w.err, 0);
	assert_true(w.version > 0);
	assert_int_equal(w.seq, 1);
	check_value(f, "a", "hello");
	assert_int_equal(mc_store_get(f->s, "a", 1, &rec, NULL), 0);
	assert_true(rec.version == w.version);
	assert_string_equal(rec.home, "lax");
	assert_int_equal(rec.deleted, 0);
	assert_int_equal(rec.expires_ms, 0);

	w = put_sync(f, "a", "", 0); /* empty value, not logged */
	assert_int_equal(w.err, 0);
	assert_int_equal(w.seq, 0);
	check_value(f, "a", "");

	del(f, &w, "a", 1);
	drain(f);
	assert_int_equal(w.err, 0);
	assert_int_equal(w.seq, 2);
	check_absent(f, "a");
	/* a tombstone keeps the version for last-writer-wins */
	assert_int_equal(mc_store_get(f->s, "a", 1, &rec, NULL), MC_ENOTFOUND);
	assert_int_equal(rec.deleted, 1);
	assert_true(rec.version == w.version);

	mc_store_stats_get(f->s, &st);
	assert_int_equal(st.writes, 3);
	assert_true(st.commits >= 1 && st.commits <= 3);
	assert_int_equal(st.queue_depth, 0);
}

static void test_versions_increase(void **state)
{
	fixture *f = *state;
	wres w[200];
	mc_record rec;
	char key[16];

	store_open(f, "lax");
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "k%d", i % 7);
		put(f, &w[i], key, "v", 0, 1);
	}
	drain(f);
	for (int i = 0; i < 200; i++) {
		assert_int_equal(w[i].err, 0);
		assert_int_equal(w[i].seq, (uint64_t)i + 1);
		if (i)
			assert_true(w[i].version > w[i - 1].version);
	}
	assert_int_equal(mc_store_get(f->s, "k3", 2, &rec, NULL), 0);
	assert_true(rec.version == w[199].version); /* 199 % 7 == 3 */
}

static void test_log_order_and_read(void **state)
{
	fixture *f = *state;
	wres w[10];
	collected *c = calloc(1, sizeof *c);
	char key[16], val[16];

	store_open(f, "lax");
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof key, "key%d", i);
		snprintf(val, sizeof val, "val%d", i);
		if (i == 5)
			del(f, &w[i], "key1", 1);
		else
			put(f, &w[i], key, val, i == 3 ? 1234 : 0, 1);
	}
	drain(f);
	assert_int_equal(mc_store_log_read(f->s, 1, 100, 1 << 20, collect, c), 10);
	for (size_t i = 0; i < 10; i++) {
		assert_int_equal(c->e[i].seq, i + 1);
		assert_true(c->e[i].version == w[i].version);
		if (i == 5) {
			assert_int_equal(c->e[i].op, MC_OP_DEL);
			assert_string_equal(c->kv[i][0], "key1");
			assert_int_equal(c->e[i].vlen, 0);
		} else {
			snprintf(key, sizeof key, "key%zu", i);
			snprintf(val, sizeof val, "val%zu", i);
			assert_int_equal(c->e[i].op, MC_OP_PUT);
			assert_string_equal(c->kv[i][0], key);
			assert_string_equal(c->kv[i][1], val);
			assert_int_equal(c->e[i].expires_ms, i == 3 ? 1234 : 0);
		}
	}
	/* from the middle, bounded by count */
	memset(c, 0, sizeof *c);
	assert_int_equal(mc_store_log_read(f->s, 7, 2, 1 << 20, collect, c), 2);
	assert_int_equal(c->e[0].seq, 7);
	assert_int_equal(c->e[1].seq, 8);
	/* bounded by bytes: each entry is 8 bytes of key+value; one is always delivered */
	memset(c, 0, sizeof *c);
	assert_int_equal(mc_store_log_read(f->s, 1, 100, 17, collect, c), 2);
	memset(c, 0, sizeof *c);
	assert_int_equal(mc_store_log_read(f->s, 1, 100, 1, collect, c), 1);
	/* callback stops early */
	memset(c, 0, sizeof *c);
	c->stop_after = 3;
	assert_int_equal(mc_store_log_read(f->s, 1, 100, 1 << 20, collect, c), 3);
	/* past the end */
	memset(c, 0, sizeof *c);
	assert_int_equal(mc_store_log_read(f->s, 11, 100, 1 << 20, collect, c), 0);
	free(c);
}

static void test_trim_and_stats(void **state)
{
	fixture *f = *state;
	wres w;
	mc_log_stats ls;
	collected *c = calloc(1, sizeof *c);
	char key[16];

	store_open(f, "lax");
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.last_seq, 0);
	assert_int_equal(ls.entries, 0);
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof key, "k%d", i); /* 2 bytes + "abc" 3 bytes */
		put_sync(f, key, "abc", 1);
	}
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.last_seq, 10);
	assert_int_equal(ls.acked_seq, 0);
	assert_int_equal(ls.entries, 10);
	assert_int_equal(ls.bytes, 50);

	memset(&w, 0, sizeof w);
	w.f = f;
	assert_int_equal(mc_store_log_trim(f->s, 4, on_write, &w), 0);
	f->pending++;
	drain(f);
	assert_int_equal(w.err, 0);
	assert_int_equal(w.seq, 4);
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.last_seq, 10);
	assert_int_equal(ls.acked_seq, 4);
	assert_int_equal(ls.entries, 6);
	assert_int_equal(ls.bytes, 30);
	assert_int_equal(mc_store_log_read(f->s, 1, 100, 1 << 20, collect, c), 6);
	assert_int_equal(c->e[0].seq, 5);

	/* a trim beyond the last seq acknowledges only what exists; NULL cb is fine */
	assert_int_equal(mc_store_log_trim(f->s, 100, NULL, NULL), 0);
	put_sync(f, "z", "z", 0); /* a write behind it, to know it committed */
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.acked_seq, 10);
	assert_int_equal(ls.entries, 0);
	assert_int_equal(ls.bytes, 0);
	/* the records themselves are untouched */
	check_value(f, "k0", "abc");
	free(c);
}

static void test_reopen_restores(void **state)
{
	fixture *f = *state;
	wres w, w2;
	mc_log_stats ls;
	mc_record rec;
	uint64_t last_version, future;
	mc_log_entry e;

	store_open(f, "lax");
	for (int i = 0; i < 5; i++)
		w = put_sync(f, "k", "v", 1);
	last_version = w.version;
	/* A record from a cell whose clock is an hour ahead: a local write over it must
	 * still get a larger version, and that floor must survive the reopen. */
	future = mc_hlc_make(mc_wall_ms() + 3600 * 1000, 5);
	e = entry(1, future, MC_OP_PUT, "ahead", "x");
	apply_sync(f, "sfo", &e, 1, &w2);
	assert_int_equal(w2.err, 0);
	w2 = put_sync(f, "ahead", "y", 1);
	assert_int_equal(w2.err, 0);
	assert_true(w2.version > future);
	assert_int_equal(w2.seq, 6);
	memset(&w, 0, sizeof w);
	w.f = f;
	assert_int_equal(mc_store_log_trim(f->s, 2, on_write, &w), 0);
	f->pending++;
	drain(f);
	store_close(f);

	store_open(f, "lax");
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.last_seq, 6);
	assert_int_equal(ls.acked_seq, 2);
	assert_int_equal(ls.entries, 4);
	assert_int_equal(mc_store_applied_seq(f->s, "sfo"), 1);
	check_value(f, "k", "v");
	check_value(f, "ahead", "y");
	assert_int_equal(mc_store_get(f->s, "ahead", 5, &rec, NULL), 0);
	assert_string_equal(rec.home, "lax");
	w = put_sync(f, "other", "v", 1);
	assert_int_equal(w.seq, 7);
	assert_true(w.version > last_version);
	assert_true(w.version > w2.version); /* the HLC floor came back from meta */
}

static void test_apply_idempotent(void **state)
{
	fixture *f = *state;
	mc_log_entry e[5];
	mc_store_stats st;
	mc_record rec;
	wres w;
	char keys[5][16];

	store_open(f, "");
	for (int i = 0; i < 5; i++) {
		snprintf(keys[i], sizeof keys[i], "r%d", i);
		e[i] = entry((uint64_t)i + 1, 1000 + (uint64_t)i, MC_OP_PUT, keys[i], "val");
	}
	assert_int_equal(mc_store_applied_seq(f->s, "sfo"), 0);
	apply_sync(f, "sfo", e, 5, &w);
	assert_int_equal(w.err, 0);
	assert_int_equal(w.seq, 5);
	assert_int_equal(mc_store_applied_seq(f->s, "sfo"), 5);
	mc_store_stats_get(f->s, &st);
	assert_int_equal(st.applied, 5);
	assert_int_equal(st.skipped, 0);
	check_value(f, "r3", "val");
	assert_int_equal(mc_store_get(f->s, "r3", 2, &rec, NULL), 0);
	assert_string_equal(rec.home, "sfo");
	assert_int_equal(rec.version, 1003);

	apply_sync(f, "sfo", e, 5, &w); /* replay */
	assert_int_equal(w.err, 0);
	assert_int_equal(w.seq, 5);
	mc_store_stats_get(f->s, &st);
	assert_int_equal(st.applied, 5);
	assert_int_equal(st.skipped, 5);
	assert_int_equal(mc_store_applied_seq(f->s, "sfo"), 5);

	/* an overlapping batch applies only the new tail; other cells are independent */
	e[0] = entry(5, 2000, MC_OP_PUT, "r4", "dup");
	e[1] = entry(6, 2001, MC_OP_DEL, "r0", NULL);
	apply_sync(f, "sfo", e, 2, &w);
	assert_int_equal(w.seq, 6);
	mc_store_stats_get(f->s, &st);
	assert_int_equal(st.applied, 6);
	assert_int_equal(st.skipped, 6);
	check_value(f, "r4", "val");
	check_absent(f, "r0");
	assert_int_equal(mc_store_applied_seq(f->s, "lax"), 0);
	/* an empty batch reports the current applied seq */
	apply_sync(f, "sfo", e, 0, &w);
	assert_int_equal(w.err, 0);
	assert_int_equal(w.seq, 6);
}

static void test_apply_lww(void **state)
{
	fixture *f = *state;
	mc_log_entry e;
	mc_record rec;
	wres w;

	store_open(f, "");
	e = entry(1, 100, MC_OP_PUT, "k", "from-lax");
	apply_sync(f, "lax", &e, 1, &w);
	e = entry(1, 50, MC_OP_PUT, "k", "older-sfo"); /* older version loses */
	apply_sync(f, "sfo", &e, 1, &w);
	assert_int_equal(w.err, 0);
	assert_int_equal(w.seq, 1); /* still consumed */
	check_value(f, "k", "from-lax");
	e = entry(2, 100, MC_OP_PUT, "k", "same-aaa"); /* same version, lower name loses */
	apply_sync(f, "aaa", &e, 1, &w);
	check_value(f, "k", "from-lax");
	e = entry(2, 100, MC_OP_PUT, "k", "same-sfo"); /* same version, higher name wins */
	apply_sync(f, "sfo", &e, 1, &w);
	check_value(f, "k", "same-sfo");
	assert_int_equal(mc_store_get(f->s, "k", 1, &rec, NULL), 0);
	assert_string_equal(rec.home, "sfo");
	assert_int_equal(rec.version, 100);
	e = entry(3, 90, MC_OP_DEL, "k", NULL); /* an older delete loses too */
	apply_sync(f, "zzz", &e, 1, &w);
	check_value(f, "k", "same-sfo");
	e = entry(2, 101, MC_OP_DEL, "k", NULL); /* a newer delete writes a tombstone */
	apply_sync(f, "lax", &e, 1, &w);
	check_absent(f, "k");
	e = entry(4, 100, MC_OP_PUT, "k", "stale"); /* ...which beats older puts */
	apply_sync(f, "zzz", &e, 1, &w);
	check_absent(f, "k");
	e = entry(3, 102, MC_OP_PUT, "k", "back");
	apply_sync(f, "lax", &e, 1, &w);
	check_value(f, "k", "back");
}

static void test_group_commit(void **state)
{
	fixture *f = *state;
	wres *w = calloc(1000, sizeof *w);
	mc_store_stats st;
	char key[16];

	store_open(f, "lax");
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof key, "g%d", i);
		put(f, &w[i], key, "value", 0, 1);
	}
	drain(f);
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(w[i].err, 0);
		assert_int_equal(w[i].seq, (uint64_t)i + 1);
	}
	mc_store_stats_get(f->s, &st);
	assert_int_equal(st.writes, 1000);
	assert_true(st.commits >= 1);
	assert_true(st.commits < 100);
	print_message("group commit: 1000 writes in %llu commits\n",
		      (unsigned long long)st.commits);
	free(w);
}

static void test_queue_bound(void **state)
{
	fixture *f = *state;
	mc_store_opts o;
	mc_store_opts_default(&o);
	o.dir = f->dir;
	o.home = "lax";
	o.max_queue_bytes = 10000;
	assert_int_equal(mc_store_open(&f->s, &f->loop, &o), 0);
	static char val[4000];
	memset(val, 'v', sizeof val);
	wres *w = calloc(200, sizeof *w);
	int accepted = 0, full = 0;
	char key[16];
	/* the writer fsyncs while this loop queues: the queue fills up */
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "q%d", i);
		w[i].f = f;
		int rc = mc_store_write(f->s, MC_OP_PUT, key, strlen(key), val, sizeof val, 0, 1,
					on_write, &w[i]);
		if (rc == 0) {
			f->pending++;
			accepted++;
		} else {
			assert_int_equal(rc, MC_EFULL);
			full++;
		}
	}
	drain(f);
	assert_true(accepted >= 2);
	assert_true(full > 0);
	for (int i = 0; i < 200; i++)
		if (w[i].done)
			assert_int_equal(w[i].err, 0);
	/* once drained, the queue takes writes again */
	wres after;
	put(f, &after, "after", "v", 0, 1);
	drain(f);
	assert_int_equal(after.err, 0);
	free(w);
}

static void test_expiry(void **state)
{
	fixture *f = *state;
	wres w;
	mc_record rec;

	store_open(f, "lax");
	put(f, &w, "old", "v", mc_wall_ms() - 1, 0);
	drain(f);
	assert_int_equal(w.err, 0);
	check_absent(f, "old");
	put(f, &w, "new", "v", mc_wall_ms() + 60000, 0);
	drain(f);
	check_value(f, "new", "v");
	assert_int_equal(mc_store_get(f->s, "new", 3, &rec, NULL), 0);
	assert_true(rec.expires_ms > mc_wall_ms());
}

static void test_limits(void **state)
{
	fixture *f = *state;
	char big[MC_STATE_MAX_KEY + 1];
	mc_record rec;
	mc_log_entry e;

	store_open(f, "lax");
	memset(big, 'k', sizeof big);
	assert_int_equal(mc_store_write(f->s, MC_OP_PUT, "", 0, "v", 1, 0, 0, NULL, NULL),
			 MC_EINVAL);
	assert_int_equal(mc_store_write(f->s, MC_OP_PUT, NULL, 3, "v", 1, 0, 0, NULL, NULL),
			 MC_EINVAL);
	assert_int_equal(mc_store_write(f->s, MC_OP_PUT, big, sizeof big, "v", 1, 0, 0, NULL, NULL),
			 MC_EINVAL);
	assert_int_equal(mc_store_write(f->s, (mc_op)7, "k", 1, "v", 1, 0, 0, NULL, NULL),
			 MC_EINVAL);
	assert_int_equal(
	    mc_store_write(f->s, MC_OP_PUT, "k", 1, "v", MC_STATE_MAX_VALUE + 1, 0, 0, NULL, NULL),
	    MC_ETOOBIG);
	assert_int_equal(mc_store_get(f->s, "", 0, &rec, NULL), MC_EINVAL);
	assert_int_equal(mc_store_get(f->s, big, sizeof big, &rec, NULL), MC_EINVAL);
	e = entry(1, 1, MC_OP_PUT, "k", "v");
	assert_int_equal(mc_store_apply(f->s, "", &e, 1, NULL, NULL), MC_EINVAL);
	assert_int_equal(
	    mc_store_apply(f->s, "this-cell-name-is-much-too-long-x", &e, 1, NULL, NULL),
	    MC_EINVAL);
	e.klen = 0;
	assert_int_equal(mc_store_apply(f->s, "sfo", &e, 1, NULL, NULL), MC_EINVAL);
	e = entry(1, 1, MC_OP_PUT, "k", "v");
	e.vlen = MC_STATE_MAX_VALUE + 1;
	assert_int_equal(mc_store_apply(f->s, "sfo", &e, 1, NULL, NULL), MC_ETOOBIG);

	/* the largest key and value are accepted */
	{
		wres w;
		char *v = malloc(MC_STATE_MAX_VALUE);
		mc_buf b;

		memset(v, 'v', MC_STATE_MAX_VALUE);
		memset(&w, 0, sizeof w);
		w.f = f;
		assert_int_equal(mc_store_write(f->s, MC_OP_PUT, big, MC_STATE_MAX_KEY, v,
						MC_STATE_MAX_VALUE, 0, 1, on_write, &w),
				 0);
		f->pending++;
		drain(f);
		assert_int_equal(w.err, 0);
		mc_buf_init(&b);
		assert_int_equal(mc_store_get(f->s, big, MC_STATE_MAX_KEY, &rec, &b), 0);
		assert_int_equal(rec.value_len, MC_STATE_MAX_VALUE);
		assert_memory_equal(rec.value, v, MC_STATE_MAX_VALUE);
		mc_buf_fini(&b);
		free(v);
	}
}

static void test_map_full(void **state)
{
	fixture *f = *state;
	enum { N = 8 };
	wres w[N], ok;
	char *v = malloc(256 * 1024);
	char key[16];
	int full = 0;

	memset(v, 'x', 256 * 1024);
	assert_int_equal(store_open_opts(f, "lax", 1 << 20), 0); /* 1 MiB map */
	ok = put_sync(f, "small", "s", 1);
	assert_int_equal(ok.err, 0);
	for (int i = 0; i < N; i++) {
		memset(&w[i], 0, sizeof w[i]);
		w[i].f = f;
		snprintf(key, sizeof key, "big%d", i);
		assert_int_equal(mc_store_write(f->s, MC_OP_PUT, key, strlen(key), v, 256 * 1024, 0,
						1, on_write, &w[i]),
				 0);
		f->pending++;
	}
	drain(f);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof key, "big%d", i);
		if (w[i].err) {
			assert_int_equal(w[i].err, MC_EFULL);
			check_absent(f, key); /* nothing of a failed batch is visible */
			full++;
		} else {
			mc_record rec;

			assert_int_equal(mc_store_get(f->s, key, strlen(key), &rec, NULL), 0);
		}
	}
	assert_true(full > 0);
	/* the store keeps working, and seqs stay contiguous */
	ok = put_sync(f, "after", "a", 1);
	assert_int_equal(ok.err, 0);
	{
		mc_log_stats ls;

		mc_store_log_stats(f->s, &ls);
		assert_int_equal(ok.seq, ls.last_seq);
		assert_int_equal(ls.entries, ls.last_seq);
	}
	free(v);
}

/* Writes logged value v (vlen bytes) under key and waits; returns the error. */
static int put_big_sync(fixture *f, const char *key, const char *v, size_t vlen)
{
	wres w;

	memset(&w, 0, sizeof w);
	w.f = f;
	assert_int_equal(mc_store_write(f->s, MC_OP_PUT, key, strlen(key), v, vlen, 0, 1, on_write,
					&w),
			 0);
	f->pending++;
	drain(f);
	return w.err;
}

/* A full map: writes fail with MC_EFULL, and a trim (which is what frees the space
 * once the region has acknowledged) lands in the same group commit as such a write.
 * The whole transaction fails; the trim must still happen, on its own, because the
 * shipper never asks twice for the same seq and no new ACK comes while writes fail.
 * The batch is run here directly (the writer thread is idle meanwhile) so that the
 * two requests share one transaction deterministically. */
static void test_trim_survives_failed_batch(void **state)
{
	fixture *f = *state;
	enum { VLEN = 64 * 1024 };
	char *v = malloc(VLEN);
	char key[32];
	int i;
	mc_log_stats ls;

	memset(v, 'y', VLEN);
	assert_int_equal(store_open_opts(f, "lax", 1 << 20), 0); /* 1 MiB map */
	for (i = 0; i < 64; i++) {
		snprintf(key, sizeof key, "k%d", i);
		if (put_big_sync(f, key, v, VLEN) != 0)
			break;
	}
	assert_true(i > 0 && i < 64); /* the map filled up */
	mc_store_log_stats(f->s, &ls);
	assert_true(ls.entries > 0);
	uint64_t last = ls.last_seq;

	struct req *w, *t = mc_calloc(1, sizeof *t);
	mc_write mw = {.kind = MC_W_PUT,
		       .flags = MC_W_LOG,
		       .key = "one-more",
		       .klen = 8,
		       .value = v,
		       .vlen = VLEN};
	memset(v, 'z', VLEN);
	assert_int_equal(write_req(&mw, &w), 0);
	w->next = t;
	t->kind = REQ_TRIM;
	t->upto = last;
	assert_int_equal(run_batch(f->s, w), 0);
	assert_int_equal(w->err, MC_EFULL);
	assert_int_equal(t->err, MC_EFULL);
	req_free(w);
	req_free(t);

	/* Wake the writer: the trim runs alone and empties the log. */
	pthread_mutex_lock(&f->s->mu);
	pthread_cond_signal(&f->s->cv);
	pthread_mutex_unlock(&f->s->mu);
	for (i = 0; i < 2000; i++) {
		mc_store_log_stats(f->s, &ls);
		if (ls.entries == 0)
			break;
		usleep(1000);
	}
	assert_int_equal(ls.entries, 0);
	assert_int_equal(ls.acked_seq, last);
	free(v);
}

static uint64_t hook_seq;
static int hook_calls;

static void on_commit(void *arg, uint64_t last_seq)
{
	(void)arg;
	hook_seq = last_seq;
	hook_calls++;
}

static void test_commit_hook(void **state)
{
	fixture *f = *state;

	store_open(f, "lax");
	hook_seq = 0;
	hook_calls = 0;
	mc_store_set_commit_hook(f->s, on_commit, NULL);
	put_sync(f, "a", "1", 1);
	assert_int_equal(hook_calls, 1);
	assert_int_equal(hook_seq, 1);
	put_sync(f, "b", "1", 0); /* not logged: no hook */
	assert_int_equal(hook_calls, 1);
	put_sync(f, "c", "1", 1);
	assert_int_equal(hook_calls, 2);
	assert_int_equal(hook_seq, 2);
}

static void test_close_drains(void **state)
{
	fixture *f = *state;
	wres w[50];
	char key[16];

	store_open(f, "lax");
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof key, "c%d", i);
		put(f, &w[i], key, "v", 0, 1);
	}
	mc_store_close(f->s); /* without running the loop first */
	assert_int_equal(mc_store_write(f->s, MC_OP_PUT, "x", 1, "v", 1, 0, 0, NULL, NULL),
			 MC_ECLOSED);
	f->s = NULL;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->pending, 0);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(w[i].done, 1);
		assert_int_equal(w[i].err, 0);
	}
	mc_store_close(NULL);

	store_open(f, "lax");
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof key, "c%d", i);
		check_value(f, key, "v");
	}
	{
		mc_log_stats ls;

		mc_store_log_stats(f->s, &ls);
		assert_int_equal(ls.last_seq, 50);
		assert_int_equal(ls.entries, 50);
	}
}

/* ---- classes, conditions, counters, copies, sweep, durability ------------------------------ */

/* LMDB syncs data pages with fdatasync(); counting the calls shows whether a commit
 * was synced. This definition interposes the one liblmdb calls. */
static _Atomic int sync_calls;

int fdatasync(int fd)
{
	atomic_fetch_add(&sync_calls, 1);
	return (int)syscall(SYS_fdatasync, fd);
}

typedef struct rres {
	fixture *f;
	int done;
	mc_write_result r;
} rres;

static void on_result(void *arg, const mc_write_result *res)
{
	rres *x = arg;

	x->done++;
	x->r = *res;
	x->f->pending--;
}

static void submit_async(fixture *f, rres *x, const mc_write *w)
{
	memset(x, 0, sizeof *x);
	x->f = f;
	assert_int_equal(mc_store_submit(f->s, w, on_result, x), 0);
	f->pending++;
}

static mc_write_result submit_sync(fixture *f, const mc_write *w)
{
	rres x;

	submit_async(f, &x, w);
	drain(f);
	assert_int_equal(x.done, 1);
	return x.r;
}

static mc_write wput(const char *key, const char *val)
{
	mc_write w = {.kind = MC_W_PUT,
		      .flags = MC_W_LOG,
		      .key = key,
		      .klen = strlen(key),
		      .value = val,
		      .vlen = strlen(val)};
	return w;
}

static int open_classes(fixture *f, int durable)
{
	static const mc_state_prefix rules[] = {
	    {"pii:", 4, MC_CLASS_LOCAL}, {"ledger:", 7, MC_CLASS_REGIONAL}, {"pii:shared:", 11, MC_CLASS_REPLICATED}};
	mc_store_opts o;

	mc_store_opts_default(&o);
	o.dir = f->dir;
	o.home = "lax";
	o.classes = rules;
	o.nclasses = MC_ARRAY_LEN(rules);
	o.durable = durable;
	o.apply_notes = 1;
	return mc_store_open(&f->s, &f->loop, &o);
}

static void test_codec_replica(void **state)
{
	uint8_t buf[128];
	mc_record r = {.version = 9, .replica = 1, .synced_ms = 0x1122334455667788ull,
		       .value = "abc", .value_len = 3},
		  out;

	(void)state;
	strcpy(r.home, "sfo");
	size_t n = mc_state_record_size_of(&r);
	assert_int_equal(n, MC_STATE_REC_HDR + 3 + 8 + 3);
	mc_state_record_encode(buf, &r);
	assert_int_equal(mc_state_record_decode(buf, n, &out), 0);
	assert_int_equal(out.replica, 1);
	assert_int_equal(out.invalid, 0);
	assert_true(out.synced_ms == r.synced_ms);
	assert_int_equal(out.value_len, 3);
	assert_memory_equal(out.value, "abc", 3);
	/* a replica record too short for synced_ms is refused */
	assert_int_equal(mc_state_record_decode(buf, MC_STATE_REC_HDR + 3 + 7, &out), MC_EINVAL);
	r.replica = 0;
	r.invalid = 1;
	r.value_len = 0;
	n = mc_state_record_size_of(&r);
	mc_state_record_encode(buf, &r);
	assert_int_equal(mc_state_record_decode(buf, n, &out), 0);
	assert_int_equal(out.invalid, 1);
	assert_int_equal(out.replica, 0);
}

static void test_prefix_match(void **state)
{
	static const mc_state_prefix t[] = {{"", 0, MC_CLASS_REPLICATED},
					    {"pii:", 4, MC_CLASS_LOCAL},
					    {"pii:shared:", 11, MC_CLASS_REPLICATED},
					    {"p", 1, MC_CLASS_REGIONAL}};

	(void)state;
	assert_int_equal(mc_state_prefix_match(t, 4, "pii:x", 5), 1);
	assert_int_equal(mc_state_prefix_match(t, 4, "pii:shared:x", 12), 2);
	assert_int_equal(mc_state_prefix_match(t, 4, "pix", 3), 3);
	assert_int_equal(mc_state_prefix_match(t, 4, "zzz", 3), 0);
	assert_int_equal(mc_state_prefix_match(t + 1, 3, "zzz", 3), -1);
	assert_int_equal(mc_state_prefix_match(t, 4, "pii:", 4), 1); /* prefix == key */
}

static void test_classes_never_logged(void **state)
{
	fixture *f = *state;
	mc_log_stats ls;
	mc_store_stats st;
	collected c;

	assert_int_equal(open_classes(f, 1), 0);
	assert_int_equal(mc_store_key_class(f->s, "pii:a", 5), MC_CLASS_LOCAL);
	assert_int_equal(mc_store_key_class(f->s, "ledger:a", 8), MC_CLASS_REGIONAL);
	assert_int_equal(mc_store_key_class(f->s, "pii:shared:a", 12), MC_CLASS_REPLICATED);
	assert_int_equal(mc_store_key_class(f->s, "x", 1), MC_CLASS_REPLICATED);
	/* every write asks to be logged; only replicated keys are */
	const char *keys[] = {"pii:a", "ledger:b", "pii:shared:c", "d", "pii:e"};
	for (size_t i = 0; i < MC_ARRAY_LEN(keys); i++) {
		mc_write w = wput(keys[i], "v");
		mc_write_result r = submit_sync(f, &w);
		int replicated = mc_store_key_class(f->s, keys[i], strlen(keys[i])) ==
				 MC_CLASS_REPLICATED;
		assert_int_equal(r.err, 0);
		assert_true(replicated ? r.seq > 0 : r.seq == 0);
		check_value(f, keys[i], "v");
	}
	mc_write w = {.kind = MC_W_DEL, .flags = MC_W_LOG, .key = "pii:a", .klen = 5};
	assert_int_equal(submit_sync(f, &w).seq, 0);
	w = (mc_write){.kind = MC_W_INCR, .flags = MC_W_LOG, .key = "pii:n", .klen = 5, .delta = 3};
	assert_int_equal(submit_sync(f, &w).seq, 0);
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.last_seq, 2);
	memset(&c, 0, sizeof c);
	assert_int_equal(mc_store_log_read(f->s, 1, 64, SIZE_MAX, collect, &c), 2);
	assert_string_equal(c.kv[0][0], "pii:shared:c");
	assert_string_equal(c.kv[1][0], "d");
	mc_store_stats_get(f->s, &st);
	assert_int_equal(st.residency_violations, 0);
}

static void test_conditions(void **state)
{
	fixture *f = *state;
	mc_write w = wput("k", "one");
	mc_write_result r1, r;

	store_open(f, "lax");
	r1 = submit_sync(f, &w);
	assert_int_equal(r1.err, 0);
	assert_true(r1.seq == 1 && r1.prev_version == 0 && r1.prev_home[0] == '\0');
	/* CAS with a wrong version: refused, current version reported, nothing logged */
	w = wput("k", "two");
	w.if_version = r1.version + 1;
	r = submit_sync(f, &w);
	assert_int_equal(r.err, MC_ECONFLICT);
	assert_true(r.version == r1.version && r.seq == 0);
	check_value(f, "k", "one");
	w.if_version = r1.version;
	r = submit_sync(f, &w);
	assert_int_equal(r.err, 0);
	assert_true(r.version > r1.version && r.prev_version == r1.version);
	assert_string_equal(r.prev_home, "lax");
	check_value(f, "k", "two");
	/* create only / must exist */
	w = wput("k", "x");
	w.flags |= MC_W_IF_ABSENT;
	assert_int_equal(submit_sync(f, &w).err, MC_ECONFLICT);
	w = wput("new", "x");
	w.flags |= MC_W_IF_ABSENT;
	assert_int_equal(submit_sync(f, &w).err, 0);
	w = wput("none", "x");
	w.flags |= MC_W_IF_PRESENT;
	assert_int_equal(submit_sync(f, &w).err, MC_ECONFLICT);
	w = wput("none", "x");
	w.if_version = 5;
	r = submit_sync(f, &w);
	assert_true(r.err == MC_ECONFLICT && r.version == 0);
	w = (mc_write){.kind = MC_W_DEL, .flags = MC_W_LOG | MC_W_MUST_EXIST, .key = "none", .klen = 4};
	assert_int_equal(submit_sync(f, &w).err, MC_ENOTFOUND);
	/* a tombstone is not live: CAS on it fails, create-only succeeds */
	w = (mc_write){.kind = MC_W_DEL, .flags = MC_W_LOG, .key = "k", .klen = 1};
	assert_int_equal(submit_sync(f, &w).err, 0);
	w = wput("k", "again");
	w.flags |= MC_W_IF_ABSENT;
	assert_int_equal(submit_sync(f, &w).err, 0);
	/* conditions failing inside a batch do not fail the others in it */
	rres a, b, c;
	mc_write w1 = wput("b1", "1"), w2 = wput("b2", "2"), w3 = wput("b3", "3");
	w2.if_version = 77;
	submit_async(f, &a, &w1);
	submit_async(f, &b, &w2);
	submit_async(f, &c, &w3);
	drain(f);
	assert_int_equal(a.r.err, 0);
	assert_int_equal(b.r.err, MC_ECONFLICT);
	assert_int_equal(c.r.err, 0);
	assert_true(c.r.seq == a.r.seq + 1);
}

static void test_incr(void **state)
{
	fixture *f = *state;
	enum { N = 200 };
	rres *x = calloc(N, sizeof *x);
	mc_write w = {.kind = MC_W_INCR, .flags = MC_W_LOG, .key = "n", .klen = 1, .delta = 1};
	mc_write_result r;
	collected c;

	store_open(f, "lax");
	/* all queued at once: each add sees the previous one */
	for (int i = 0; i < N; i++)
		submit_async(f, &x[i], &w);
	drain(f);
	for (int i = 0; i < N; i++)
		assert_int_equal(x[i].r.err, 0);
	check_value(f, "n", "200");
	int64_t max = 0;
	for (int i = 0; i < N; i++)
		max = MC_MAX(max, x[i].r.counter);
	assert_int_equal(max, N);
	free(x);
	w.delta = -250;
	r = submit_sync(f, &w);
	assert_int_equal(r.counter, -50);
	check_value(f, "n", "-50");
	/* overflow and non-integers leave the value alone */
	mc_write p = wput("big", "9223372036854775807");
	submit_sync(f, &p);
	w.key = "big";
	w.klen = 3;
	w.delta = 1;
	assert_int_equal(submit_sync(f, &w).err, MC_ETOOBIG);
	w.delta = -1;
	assert_int_equal(submit_sync(f, &w).counter, INT64_MAX - 1);
	p = wput("min", "-9223372036854775808");
	submit_sync(f, &p);
	w.key = "min";
	assert_int_equal(submit_sync(f, &w).err, MC_ETOOBIG);
	check_value(f, "min", "-9223372036854775808");
	p = wput("word", "12a");
	submit_sync(f, &p);
	w.key = "word";
	w.klen = 4;
	assert_int_equal(submit_sync(f, &w).err, MC_EINVAL);
	/* the expiry given at creation is kept by later adds */
	uint64_t exp = mc_wall_ms() + 60000;
	w = (mc_write){.kind = MC_W_INCR, .flags = MC_W_LOG, .key = "t", .klen = 1, .delta = 2,
		       .expires_ms = exp};
	assert_true(submit_sync(f, &w).expires_ms == exp);
	w.expires_ms = 0;
	r = submit_sync(f, &w);
	assert_true(r.expires_ms == exp && r.counter == 4);
	/* the log carries the resulting values as puts */
	memset(&c, 0, sizeof c);
	c.stop_after = 0;
	mc_log_stats ls;
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(mc_store_log_read(f->s, ls.last_seq, 1, SIZE_MAX, collect, &c), 1);
	assert_int_equal(c.e[0].op, MC_OP_PUT);
	assert_string_equal(c.kv[0][1], "4");
	assert_true(c.e[0].expires_ms == exp);
}

static void test_copy_and_invalidate(void **state)
{
	fixture *f = *state;
	mc_record rec;
	mc_buf b;
	mc_log_stats ls;

	mc_buf_init(&b);
	store_open(f, "lax");
	mc_write c = {.kind = MC_W_COPY, .key = "k", .klen = 1, .value = "v100", .vlen = 4,
		      .version = 100, .home = "sfo", .synced_ms = 1234};
	mc_write_result r = submit_sync(f, &c);
	assert_true(r.err == 0 && r.applied == 1 && r.seq == 0);
	assert_int_equal(mc_store_get(f->s, "k", 1, &rec, &b), 0);
	assert_true(rec.found && rec.replica && !rec.invalid && rec.version == 100);
	assert_true(rec.synced_ms == 1234);
	assert_string_equal(rec.home, "sfo");
	/* an older copy does not replace a newer one; the same version refreshes it */
	c.version = 90;
	assert_int_equal(submit_sync(f, &c).applied, 0);
	c.version = 100;
	c.synced_ms = 5678;
	assert_int_equal(submit_sync(f, &c).applied, 1);
	assert_int_equal(mc_store_get(f->s, "k", 1, &rec, &b), 0);
	assert_true(rec.synced_ms == 5678);
	/* invalidation: older is ignored, newer leaves a marker with that version */
	mc_write inv = {.kind = MC_W_INVALIDATE, .key = "k", .klen = 1, .version = 100};
	assert_int_equal(submit_sync(f, &inv).applied, 0);
	inv.version = 200;
	assert_int_equal(submit_sync(f, &inv).applied, 1);
	assert_int_equal(mc_store_get(f->s, "k", 1, &rec, &b), MC_ENOTFOUND);
	assert_true(rec.found && rec.invalid && rec.version == 200);
	/* a copy fetched before that write cannot land after it */
	c.version = 150;
	assert_int_equal(submit_sync(f, &c).applied, 0);
	c.version = 200;
	c.value = "v200";
	assert_int_equal(submit_sync(f, &c).applied, 1);
	check_value(f, "k", "v200");
	/* negative copies */
	mc_write neg = {.kind = MC_W_COPY, .key = "gone", .klen = 4, .deleted = 1, .synced_ms = 1};
	assert_int_equal(submit_sync(f, &neg).applied, 1);
	assert_int_equal(mc_store_get(f->s, "gone", 4, &rec, &b), MC_ENOTFOUND);
	assert_true(rec.found && rec.replica && rec.deleted);
	/* an own write over a copy is newer and logged; copies never are */
	mc_write p = wput("k", "mine");
	r = submit_sync(f, &p);
	assert_true(r.version > 200 && r.seq == 1);
	assert_int_equal(mc_store_get(f->s, "k", 1, &rec, &b), 0);
	assert_true(!rec.replica && !rec.invalid);
	assert_string_equal(rec.home, "lax");
	/* an own record beats an older copy, and is invalidated by a newer write */
	c.version = 300;
	assert_int_equal(submit_sync(f, &c).applied, 0);
	inv.version = r.version + 10;
	assert_int_equal(submit_sync(f, &inv).applied, 1);
	p = wput("k", "after");
	assert_true(submit_sync(f, &p).version > inv.version);
	/* a marker for a key never held */
	inv.key = "other";
	inv.klen = 5;
	assert_int_equal(submit_sync(f, &inv).applied, 1);
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.last_seq, 2);
	mc_buf_fini(&b);
}

typedef struct sres {
	fixture *f;
	int done;
	mc_sweep_result r;
} sres;

static void on_swept(void *arg, const mc_sweep_result *res)
{
	sres *x = arg;

	x->done++;
	x->r = *res;
	x->f->pending--;
}

static mc_sweep_result sweep_sync(fixture *f, uint64_t retention, uint64_t copy_age, size_t max)
{
	mc_sweep_opts o = {.tombstone_retention_ms = retention, .copy_max_age_ms = copy_age,
			   .max_examine = max};
	sres x = {.f = f};

	assert_int_equal(mc_store_sweep(f->s, &o, on_swept, &x), 0);
	f->pending++;
	drain(f);
	assert_int_equal(x.done, 1);
	return x.r;
}

static void test_sweep(void **state)
{
	fixture *f = *state;
	mc_store_stats st;
	char key[16];

	store_open(f, "lax");
	for (int i = 0; i < 30; i++) {
		snprintf(key, sizeof key, "live%d", i);
		put_sync(f, key, "x", 1);
	}
	mc_write w = wput("exp", "x");
	w.expires_ms = mc_wall_ms() + 30;
	submit_sync(f, &w);
	w = (mc_write){.kind = MC_W_DEL, .flags = MC_W_LOG, .key = "live0", .klen = 5};
	submit_sync(f, &w);
	w = (mc_write){.kind = MC_W_COPY, .key = "copy", .klen = 4, .value = "c", .vlen = 1,
		       .version = 5, .home = "sfo", .synced_ms = mc_wall_ms()};
	submit_sync(f, &w);
	w = (mc_write){.kind = MC_W_INVALIDATE, .key = "mark", .klen = 4,
		       .version = mc_hlc_make(mc_wall_ms() - 100000, 0)};
	submit_sync(f, &w);
	assert_int_equal(mc_store_record_count(f->s), 33);
	/* nothing is due yet (long retention, copies young, not expired) */
	mc_sweep_result r = sweep_sync(f, 3600000, 60000, 0);
	assert_true(r.wrapped && r.examined == 33 && r.expired + r.tombstones + r.copies + r.markers == 0);
	usleep(60000);
	/* in passes of 10: resumes where it stopped and wraps */
	uint64_t examined = 0, passes = 0, expired = 0, tomb = 0, copies = 0, markers = 0;
	do {
		r = sweep_sync(f, 50000, 0, 10);
		examined += r.examined;
		expired += r.expired;
		tomb += r.tombstones;
		copies += r.copies;
		markers += r.markers;
		passes++;
	} while (!r.wrapped && passes < 10);
	assert_true(r.wrapped);
	assert_int_equal(passes, 4);
	assert_int_equal(examined, 33);
	assert_int_equal(expired, 1);
	assert_int_equal(tomb, 0); /* the tombstone is younger than 50 s */
	assert_int_equal(copies, 1);
	assert_int_equal(markers, 1); /* its version is 100 s old */
	assert_int_equal(mc_store_record_count(f->s), 30);
	check_absent(f, "exp");
	r = sweep_sync(f, 1, 0, 0);
	assert_int_equal(r.tombstones, 1);
	assert_int_equal(mc_store_record_count(f->s), 29);
	mc_store_stats_get(f->s, &st);
	assert_true(st.swept_expired == 1 && st.swept_tombstones == 1 && st.swept_copies == 1 &&
		    st.swept_markers == 1);
	/* the log is untouched by the sweep */
	mc_log_stats ls;
	mc_store_log_stats(f->s, &ls);
	assert_int_equal(ls.last_seq, 32);
}

static void test_durability_syncs(void **state)
{
	fixture *f = *state;
	int before;

	assert_int_equal(store_open_opts(f, "lax", 0), 0);
	assert_int_equal(mc_store_is_durable(f->s), 1);
	before = atomic_load(&sync_calls);
	put_sync(f, "a", "1", 1);
	put_sync(f, "b", "2", 1);
	assert_true(atomic_load(&sync_calls) >= before + 2); /* one per commit at least */
	store_close(f);

	assert_int_equal(open_classes(f, 0), 0);
	assert_int_equal(mc_store_is_durable(f->s), 0);
	before = atomic_load(&sync_calls);
	for (int i = 0; i < 5; i++)
		put_sync(f, "c", "3", 1);
	assert_int_equal(atomic_load(&sync_calls), before); /* durability none: no fsync */
	store_close(f);
	assert_true(atomic_load(&sync_calls) > before); /* but a clean close syncs */
	store_open(f, "lax");
	check_value(f, "c", "3");
}

/* ---- group-commit linger and preallocation ------------------------------------------------ */

/* A closed loop of K clients: each sends its next write from the callback of the
 * previous one, until it has written R values. */
enum { LOOP_K = 20, LOOP_R = 10 };

typedef struct loop_client {
	fixture *f;
	int id, sent, err;
} loop_client;

static void loop_send(loop_client *c);

static void on_loop_write(void *arg, int err, uint64_t version, uint64_t seq)
{
	loop_client *c = arg;

	(void)version;
	(void)seq;
	c->f->pending--;
	if (err && !c->err)
		c->err = err;
	if (c->sent < LOOP_R)
		loop_send(c);
}

static void loop_send(loop_client *c)
{
	char key[32];

	snprintf(key, sizeof key, "c%d-%d", c->id, c->sent++);
	assert_int_equal(mc_store_write(c->f->s, MC_OP_PUT, key, strlen(key), "value", 5, 0, 1,
					on_loop_write, c),
			 0);
	c->f->pending++;
}

static int open_linger(fixture *f, uint32_t linger_us)
{
	mc_store_opts o;

	mc_store_opts_default(&o);
	o.dir = f->dir;
	o.home = "lax";
	o.linger_us = linger_us;
	return mc_store_open(&f->s, &f->loop, &o);
}

/* Clients that send again as soon as they are answered all land in one commit per
 * round: the writer waits for the answers to go out and for the clients to come
 * back instead of committing the first of them alone. A linger of 10 s cannot end
 * by time here; every round is complete once the loop has run the callbacks. */
static void test_linger_gathers(void **state)
{
	fixture *f = *state;
	loop_client c[LOOP_K];
	mc_store_stats st;

	assert_int_equal(open_linger(f, 10 * 1000 * 1000), 0);
	for (int i = 0; i < LOOP_K; i++) {
		c[i] = (loop_client){.f = f, .id = i};
		loop_send(&c[i]);
	}
	drain(f);
	for (int i = 0; i < LOOP_K; i++)
		assert_int_equal(c[i].err, 0);
	mc_store_stats_get(f->s, &st);
	assert_int_equal(st.writes, LOOP_K * LOOP_R);
	/* The first round may split (the writer wakes on the first write; the rest
	 * arrive during that commit); from then on one commit per round. */
	print_message("linger: %d writes of %d clients in %llu commits\n", LOOP_K * LOOP_R, LOOP_K,
		      (unsigned long long)st.commits);
	assert_true(st.commits <= LOOP_R + 3);
	{
		mc_log_stats ls;

		mc_store_log_stats(f->s, &ls);
		assert_int_equal(ls.last_seq, LOOP_K * LOOP_R);
	}
}

/* Clients that do not come back (the answers went out and nothing follows) cost a
 * commit one look of LINGER_GAP_NS, not the configured linger: with 10 s configured,
 * a lone write after a burst completes at once. */
static void test_linger_bounded(void **state)
{
	fixture *f = *state;
	wres w[LOOP_K], last;
	char key[16];
	uint64_t t0;

	assert_int_equal(open_linger(f, 10 * 1000 * 1000), 0);
	for (int i = 0; i < LOOP_K; i++) {
		snprintf(key, sizeof key, "b%d", i);
		put(f, &w[i], key, "v", 0, 1);
	}
	drain(f);
	for (int round = 0; round < 3; round++) {
		t0 = mc_now_ns();
		put(f, &last, "lone", "v", 0, 1);
		drain(f);
		assert_int_equal(last.err, 0);
		assert_true(mc_now_ns() - t0 < 5000000000ull);
	}
	check_value(f, "lone", "v");
}

static uint64_t file_size(const char *dir, const char *name)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof p, "%s/%s", dir, name);
	assert_int_equal(stat(p, &st), 0);
	return (uint64_t)st.st_size;
}

/* A durable store keeps data.mdb written ahead of LMDB's last page (so that commits
 * overwrite allocated blocks and their fdatasync does not write the inode); the
 * zeros beyond the last page are ignored on reopen and overwritten as it grows. */
static void test_preallocate(void **state)
{
	fixture *f = *state;
	enum { N = 3000 };
	wres *w = calloc(N, sizeof *w);
	char key[32], val[200];
	MDB_envinfo info;
	uint64_t used, size;

	memset(val, 'p', sizeof val - 1);
	val[sizeof val - 1] = '\0';
	store_open(f, "lax"); /* written ahead at open */
	assert_int_equal(mdb_env_info(f->s->env, &info), 0);
	used = ((uint64_t)info.me_last_pgno + 1) * f->s->psize;
	size = file_size(f->dir, "data.mdb");
	assert_true(size >= used + PREALLOC_LOW);
	assert_true(size <= used + PREALLOC_STEP);
	put_sync(f, "first", "1", 1);
	/* grow well past the first step, in batches */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			snprintf(key, sizeof key, "p%d-%d", round, i);
			put(f, &w[i], key, val, 0, 1);
		}
		drain(f);
		for (int i = 0; i < N; i++)
			assert_int_equal(w[i].err, 0);
	}
	/* after a commit the writer writes ahead again before its next batch, which
	 * then lands in the zeros */
	put_sync(f, "step", "s", 1);
	put_sync(f, "step", "t", 1);
	assert_int_equal(mdb_env_info(f->s->env, &info), 0);
	used = ((uint64_t)info.me_last_pgno + 1) * f->s->psize;
	size = file_size(f->dir, "data.mdb");
	assert_true(used > PREALLOC_STEP);
	assert_true(size >= used + PREALLOC_LOW / 2);
	store_close(f);
	/* reopened: everything is there, and the store keeps growing into the zeros */
	store_open(f, "lax");
	check_value(f, "first", "1");
	for (int round = 0; round < 3; round++) {
		snprintf(key, sizeof key, "p%d-%d", round, N - 1);
		check_value(f, key, val);
	}
	put_sync(f, "after", "a", 1);
	check_value(f, "after", "a");
	store_close(f);

	/* durability none: LMDB grows the file itself, nothing written ahead */
	assert_int_equal(open_classes(f, 0), 0);
	put_sync(f, "nosync", "n", 1);
	assert_int_equal(f->s->prealloc_fd, -1);
	check_value(f, "p0-0", val);
	free(w);
}

typedef struct notes_seen {
	size_t n;
	char cell[8];
	mc_apply_note note[8];
	char keys[8][16];
} notes_seen;

static void on_notes(void *arg, const char *cell, const mc_apply_note *n, size_t count)
{
	notes_seen *s = arg;

	snprintf(s->cell, sizeof s->cell, "%s", cell);
	s->n = count;
	for (size_t i = 0; i < count && i < 8; i++) {
		s->note[i] = n[i];
		s->keys[i][0] = '\0';
		if (n[i].key)
			snprintf(s->keys[i], sizeof s->keys[i], "%.*s", (int)n[i].klen, n[i].key);
	}
}

static void test_apply_notes(void **state)
{
	fixture *f = *state;
	notes_seen seen;
	wres w;

	assert_int_equal(open_classes(f, 1), 0);
	mc_store_set_apply_hook(f->s, on_notes, &seen);
	mc_log_entry e1[] = {entry(1, 100, MC_OP_PUT, "k", "a"), entry(2, 100, MC_OP_PUT, "j", "b")};
	memset(&seen, 0, sizeof seen);
	apply_sync(f, "lax", e1, 2, &w);
	assert_int_equal(seen.n, 2);
	assert_string_equal(seen.cell, "lax");
	assert_string_equal(seen.keys[0], "k");
	assert_true(seen.note[0].won && seen.note[0].prev_home[0] == '\0');
	/* sfo writes k newer (wins over lax's) and j older (loses) */
	mc_log_entry e2[] = {entry(1, 200, MC_OP_PUT, "k", "c"), entry(2, 50, MC_OP_PUT, "j", "d")};
	memset(&seen, 0, sizeof seen);
	apply_sync(f, "sfo", e2, 2, &w);
	assert_true(seen.note[0].won);
	assert_string_equal(seen.note[0].prev_home, "lax");
	assert_true(seen.note[0].prev_version == 100);
	assert_false(seen.note[1].won);
	assert_true(seen.note[1].prev_version == 100);
	/* a replay is skipped: its note has no key */
	memset(&seen, 0, sizeof seen);
	apply_sync(f, "sfo", e2, 2, &w);
	assert_true(seen.n == 2 && seen.note[0].key == NULL && seen.note[1].key == NULL);
}

static void test_kv_params(void **state)
{
	mc_kv_params p;
	char err[160];
	uint64_t v;
	int star;
	int64_t d;

	(void)state;
	assert_int_equal(mc_kv_query_parse("", &p, err, sizeof err), 0);
	assert_false(p.has_ttl || p.has_by);
	assert_int_equal(mc_kv_query_parse("ttl=30&by=-4", &p, err, sizeof err), 0);
	assert_true(p.has_ttl && p.ttl_ms == 30000 && p.has_by && p.by == -4);
	assert_int_equal(mc_kv_query_parse("ttl_ms=250", &p, err, sizeof err), 0);
	assert_true(p.ttl_ms == 250);
	assert_int_equal(mc_kv_query_parse("ttl=0", &p, err, sizeof err), MC_EINVAL);
	assert_int_equal(mc_kv_query_parse("ttl=1&ttl_ms=1", &p, err, sizeof err), MC_EINVAL);
	assert_int_equal(mc_kv_query_parse("ttl=315360001", &p, err, sizeof err), MC_EINVAL);
	assert_int_equal(mc_kv_query_parse("by=9223372036854775808", &p, err, sizeof err),
			 MC_EINVAL);
	assert_int_equal(mc_kv_query_parse("x\x01y=1", &p, err, sizeof err), MC_EINVAL);
	assert_non_null(strstr(err, "\"x?y\""));
	assert_int_equal(mc_kv_version_parse(" \"123\" ", 7, &v, &star), 0);
	assert_true(v == 123 && !star);
	assert_int_equal(mc_kv_version_parse("*", 1, &v, &star), 0);
	assert_true(star);
	assert_int_equal(mc_kv_version_parse("0", 1, &v, &star), MC_EINVAL);
	assert_int_equal(mc_kv_version_parse("1,2", 3, &v, &star), MC_EINVAL);
	assert_int_equal(mc_kv_i64_parse(" -9223372036854775808 ", 22, &d), 0);
	assert_true(d == INT64_MIN);
	assert_int_equal(mc_kv_i64_parse("+5", 2, &d), 0);
	assert_int_equal(d, 5);
	assert_int_equal(mc_kv_i64_parse("-", 1, &d), MC_EINVAL);
	assert_int_equal(mc_kv_i64_parse("12345678901234567890", 20, &d), MC_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec),
	    cmocka_unit_test_setup_teardown(test_put_get_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_versions_increase, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_log_order_and_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trim_and_stats, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_restores, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_idempotent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_lww, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queue_bound, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trim_survives_failed_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_hook, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_linger_gathers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_linger_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_preallocate, setup, teardown),
	    cmocka_unit_test(test_codec_replica),
	    cmocka_unit_test(test_prefix_match),
	    cmocka_unit_test(test_kv_params),
	    cmocka_unit_test_setup_teardown(test_classes_never_logged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_conditions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_incr, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_copy_and_invalidate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_durability_syncs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_notes, setup, teardown),
	};

	mc_log_setup(MC_LOG_WARN, false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
