/* Unit tests for src/region: the copy-holder table that decides which cells get
 * INVALIDATE (targets, pending delivery to disconnected cells, the LRU bound). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "region/region_int.h"

typedef struct sent {
	int n;
	char cell[16][32];
	char key[16][32];
	uint64_t version[16];
	const char *down; /* this cell is not connected */
} sent;

static int send_fn(void *arg, const char *cell, const char *key, size_t klen, uint64_t version)
{
	sent *s = arg;
	if (s->down && strcmp(s->down, cell) == 0)
		return 0;
	assert_true(s->n < 16);
	snprintf(s->cell[s->n], sizeof s->cell[0], "%s", cell);
	snprintf(s->key[s->n], sizeof s->key[0], "%.*s", (int)klen, key);
	s->version[s->n] = version;
	s->n++;
	return 1;
}

static void test_holders_targets(void **state)
{
	(void)state;
	sent s;
	memset(&s, 0, sizeof s);
	mc_holders *h = mc_holders_new(0, "us-west", send_fn, &s);
	mc_holders_stats st;

	mc_holders_add(h, "k", 1, "lax");
	mc_holders_add(h, "k", 1, "sfo");
	mc_holders_add(h, "k", 1, "lax"); /* once per cell */
	/* sfo writes k: lax is told, sfo (the writer) is not; k is forgotten */
	mc_holders_written(h, "k", 1, "sfo", "", 7);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.cell[0], "lax");
	assert_string_equal(s.key[0], "k");
	assert_true(s.version[0] == 7);
	mc_holders_stats_get(h, &st);
	assert_true(st.keys == 0 && st.sent == 1 && st.pending == 0);
	/* a write with no holders but a previous home in another cell tells that cell */
	mc_holders_written(h, "own", 3, "sfo", "lax", 9);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.cell[1], "lax");
	/* the region's own write, replacing its own record: nobody to tell */
	mc_holders_written(h, "reg", 3, NULL, "us-west", 10);
	mc_holders_written(h, "own", 3, "lax", "lax", 11);
	assert_int_equal(s.n, 2);
	/* a lost write: the writer is told the winner's version */
	mc_holders_invalidate(h, "j", 1, "lax", 12);
	assert_int_equal(s.n, 3);
	assert_true(s.version[2] == 12);
	mc_holders_free(h);
}

static void test_holders_pending(void **state)
{
	(void)state;
	sent s;
	memset(&s, 0, sizeof s);
	mc_holders *h = mc_holders_new(0, "us-west", send_fn, &s);
	mc_holders_stats st;

	mc_holders_add(h, "a", 1, "lax");
	mc_holders_add(h, "b", 1, "lax");
	mc_holders_add(h, "c", 1, "lax");
	s.down = "lax";
	mc_holders_written(h, "a", 1, "sfo", "", 5);
	mc_holders_written(h, "a", 1, "sfo", "", 6); /* the newer version is kept */
	mc_holders_written(h, "b", 1, NULL, "", 8);
	mc_holders_stats_get(h, &st);
	assert_true(st.pending == 2 && st.keys == 3 && s.n == 0);
	mc_holders_add(h, "b", 1, "lax"); /* a fresh read clears b's pending */
	mc_holders_stats_get(h, &st);
	assert_int_equal(st.pending, 1);
	mc_holders_flush(h, "lax"); /* still down: kept */
	assert_int_equal(s.n, 0);
	s.down = NULL;
	mc_holders_flush(h, "lax");
	assert_int_equal(s.n, 1);
	assert_string_equal(s.key[0], "a");
	assert_true(s.version[0] == 6);
	mc_holders_stats_get(h, &st);
	assert_true(st.pending == 0 && st.keys == 2); /* b and c still held */
	mc_holders_free(h);
}

static void test_holders_bound(void **state)
{
	(void)state;
	sent s;
	memset(&s, 0, sizeof s);
	mc_holders *h = mc_holders_new(4, "us-west", send_fn, &s);
	mc_holders_stats st;
	char k[16];

	for (int i = 0; i < 10; i++) {
		snprintf(k, sizeof k, "k%d", i);
		mc_holders_add(h, k, strlen(k), "lax");
		if (i >= 1)
			mc_holders_add(h, "k0", 2, "sfo"); /* keeps k0 recently used */
	}
	mc_holders_stats_get(h, &st);
	assert_true(st.keys == 4 && st.evicted == 6);
	mc_holders_written(h, "k1", 2, "sfo", "", 1); /* forgotten: nobody told */
	assert_int_equal(s.n, 0);
	mc_holders_written(h, "k0", 2, "sfo", "", 1);
	mc_holders_written(h, "k9", 2, "sfo", "", 1);
	assert_int_equal(s.n, 2);
	mc_holders_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_holders_targets),
	    cmocka_unit_test(test_holders_pending),
	    cmocka_unit_test(test_holders_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
