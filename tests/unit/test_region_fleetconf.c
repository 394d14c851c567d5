/* Unit tests for the region's pure control-plane decisions (src/region/rollout.c):
 * when a rollout stage counts as regressed, and the fleet-document edits of a
 * key rotation (publish pending, activate, retire) for auth and ticket keys. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "region/region_int.h"

static mc_rollout_conf thresholds(void)
{
	mc_rollout_conf t;
	memset(&t, 0, sizeof t);
	t.min_requests = 20;
	t.max_error_rate_increase_pct = 1.0;
	t.max_error_rate_ratio = 2.0;
	t.max_p95_ratio = 1.5;
	t.p95_slack_ms = 5;
	return t;
}

static mc_rollout_verdict judge(uint64_t rb, uint64_t eb, uint64_t pb_ms, uint64_t ra, uint64_t ea,
				uint64_t pa_ms, char *why, size_t cap)
{
	mc_rollout_conf t = thresholds();
	mc_rollout_sample before = {rb, eb, pb_ms * 1000}, after = {ra, ea, pa_ms * 1000};
	return mc_rollout_judge(&t, &before, &after, why, cap);
}

static void test_judge(void **state)
{
	(void)state;
	char why[400];
	/* healthy both ways */
	assert_int_equal(judge(1000, 0, 10, 1000, 0, 11, why, sizeof why), MC_ROLLOUT_PASS);
	assert_non_null(strstr(why, "passed"));
	/* from 0 % to 100 %: regressed */
	assert_int_equal(judge(1000, 0, 10, 100, 100, 3, why, sizeof why), MC_ROLLOUT_REGRESSED);
	assert_string_equal(why, "error rate regressed: 100.00 % (100 of 100) after, 0.00 % (0 of "
				 "1000) before; limit: more than 1.00 points and 2.00x");
	/* a 0.5-point step is below the absolute threshold */
	assert_int_equal(judge(1000, 0, 10, 1000, 5, 10, why, sizeof why), MC_ROLLOUT_PASS);
	/* 10 % -> 12 %: more than 1 point but not 2x: pass */
	assert_int_equal(judge(1000, 100, 10, 1000, 120, 10, why, sizeof why), MC_ROLLOUT_PASS);
	/* 10 % -> 25 %: both: regressed */
	assert_int_equal(judge(1000, 100, 10, 1000, 250, 10, why, sizeof why),
			 MC_ROLLOUT_REGRESSED);
	/* p95 10 ms -> 21 ms exceeds 1.5 x 10 + 5 = 20 ms */
	assert_int_equal(judge(1000, 0, 10, 1000, 0, 21, why, sizeof why), MC_ROLLOUT_REGRESSED);
	assert_string_equal(why,
			    "p95 regressed: 21.000 ms after, 10.000 ms before; limit 20.000 ms "
			    "(1.50x + 5 ms)");
	assert_int_equal(judge(1000, 0, 10, 1000, 0, 20, why, sizeof why), MC_ROLLOUT_PASS);
	/* too little traffic after the bake: not judged (the stage passes) */
	assert_int_equal(judge(1000, 0, 10, 19, 19, 100, why, sizeof why), MC_ROLLOUT_NOT_JUDGED);
	assert_non_null(strstr(why, "not judged: 19 request(s)"));
	/* no baseline traffic: errors still judged against 0 %, p95 not */
	assert_int_equal(judge(0, 0, 0, 100, 0, 500, why, sizeof why), MC_ROLLOUT_PASS);
	assert_int_equal(judge(0, 0, 0, 100, 50, 1, why, sizeof why), MC_ROLLOUT_REGRESSED);
}

static json_t *parse(const char *s, size_t n)
{
	json_t *j = json_loadb(s, n, 0, NULL);
	assert_non_null(j);
	return j;
}

static const char *status_of(json_t *doc, const char *kid)
{
	size_t i;
	json_t *k;
	json_array_foreach(json_object_get(doc, "auth_keys"), i, k)
	{
		if (strcmp(json_string_value(json_object_get(k, "kid")), kid) == 0)
			return json_string_value(json_object_get(k, "status"));
	}
	return NULL;
}

static void test_auth_rotation_edits(void **state)
{
	(void)state;
	const char *doc = "{\"routes\": [], \"auth_keys\": [{\"kid\": \"old\", \"alg\": \"HS256\", "
			  "\"key\": \"aa\", \"status\": \"active\"}]}";
	char *d1 = NULL, *d2 = NULL, *d3 = NULL, old[80], err[256];
	size_t l1, l2, l3;
	assert_int_equal(mc_fleet_doc_key_publish(doc, strlen(doc), MC_KEYS_AUTH, "new", "bb", &d1,
						  &l1, old, sizeof old, err, sizeof err),
			 0);
	assert_string_equal(old, "old");
	json_t *j = parse(d1, l1);
	assert_string_equal(status_of(j, "old"), "active");
	assert_string_equal(status_of(j, "new"), "pending");
	json_decref(j);
	/* a second rotation while a key is pending is refused */
	assert_int_equal(mc_fleet_doc_key_publish(d1, l1, MC_KEYS_AUTH, "x", "cc", &d2, &l2, old,
						  sizeof old, err, sizeof err),
			 MC_ECONFLICT);
	assert_null(d2);
	assert_int_equal(mc_fleet_doc_key_activate(d1, l1, MC_KEYS_AUTH, "new", "old", &d2, &l2,
						   err, sizeof err),
			 0);
	j = parse(d2, l2);
	assert_string_equal(status_of(j, "old"), "retiring");
	assert_string_equal(status_of(j, "new"), "active");
	json_decref(j);
	assert_int_equal(
	    mc_fleet_doc_key_remove(d2, l2, MC_KEYS_AUTH, "old", &d3, &l3, err, sizeof err), 0);
	j = parse(d3, l3);
	assert_int_equal(json_array_size(json_object_get(j, "auth_keys")), 1);
	assert_string_equal(status_of(j, "new"), "active");
	assert_non_null(json_object_get(j, "routes")); /* the rest of the document stays */
	json_decref(j);
	free(d3);
	/* a key removed by a later push cannot be activated */
	assert_int_equal(mc_fleet_doc_key_activate(doc, strlen(doc), MC_KEYS_AUTH, "new", "old",
						   &d3, &l3, err, sizeof err),
			 MC_ENOTFOUND);
	assert_non_null(strstr(err, "no longer in the fleet config"));
	free(d1);
	free(d2);
}

static void test_ticket_rotation_edits(void **state)
{
	(void)state;
	char a[161], b[161];
	memset(a, 'a', 160);
	memset(b, 'b', 160);
	a[160] = b[160] = '\0';
	char doc[400];
	snprintf(doc, sizeof doc, "{\"routes\": [], \"tls_ticket_keys\": \"%s\"}", a);
	char *d1 = NULL, *d2 = NULL, *d3 = NULL, old[80], err[256];
	size_t l1, l2, l3;
	assert_int_equal(mc_fleet_doc_key_publish(doc, strlen(doc), MC_KEYS_TICKET, "bbbb", b, &d1,
						  &l1, old, sizeof old, err, sizeof err),
			 0);
	assert_string_equal(old, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	json_t *j = parse(d1, l1);
	json_t *keys = json_object_get(j, "tls_ticket_keys");
	assert_int_equal(json_array_size(keys), 2); /* appended: decrypt-only first */
	assert_string_equal(json_string_value(json_array_get(keys, 1)), b);
	json_decref(j);
	char bname[33];
	memset(bname, 'b', 32);
	bname[32] = '\0';
	assert_int_equal(mc_fleet_doc_key_activate(d1, l1, MC_KEYS_TICKET, bname, old, &d2, &l2,
						   err, sizeof err),
			 0);
	j = parse(d2, l2);
	keys = json_object_get(j, "tls_ticket_keys");
	assert_string_equal(json_string_value(json_array_get(keys, 0)), b); /* now encrypts */
	json_decref(j);
	assert_int_equal(
	    mc_fleet_doc_key_remove(d2, l2, MC_KEYS_TICKET, old, &d3, &l3, err, sizeof err), 0);
	j = parse(d3, l3);
	keys = json_object_get(j, "tls_ticket_keys");
	assert_int_equal(json_array_size(keys), 1);
	assert_string_equal(json_string_value(json_array_get(keys, 0)), b);
	json_decref(j);
	free(d1);
	free(d2);
	free(d3);
	/* without a ticket-key set there is nothing to rotate next to */
	assert_int_equal(mc_fleet_doc_key_publish("{\"routes\": []}", 14, MC_KEYS_TICKET, "x", b,
						  &d1, &l1, old, sizeof old, err, sizeof err),
			 MC_ENOTFOUND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_judge),
	    cmocka_unit_test(test_auth_rotation_edits),
	    cmocka_unit_test(test_ticket_rotation_edits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
