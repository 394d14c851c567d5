/* Pure decisions of the region's control plane: whether a rollout stage
 * regressed (its cells' error rate and p95 after the bake against before), and
 * the edits of a fleet document that rotate a key (publish, activate, retire).
 * No I/O: src/region/fleetconf.c drives them; tests/unit/test_region_fleet.c checks
 * them. docs/operations.md "Staged rollout" and "Key rotation". */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "region/region_int.h"

mc_rollout_verdict mc_rollout_judge(const mc_rollout_conf *t, const mc_rollout_sample *before,
				    const mc_rollout_sample *after, char *why, size_t cap)
{
	double eb = before->requests ? (double)before->errors / (double)before->requests : 0.0;
	double ea = after->requests ? (double)after->errors / (double)after->requests : 0.0;
	if (after->requests < t->min_requests || after->requests == 0) {
		snprintf(why, cap,
			 "not judged: %llu request(s) after the bake, fewer than min_requests %u",
			 (unsigned long long)after->requests, t->min_requests);
		return MC_ROLLOUT_NOT_JUDGED;
	}
	/* both conditions: an absolute step (percentage points) and a relative one,
	 * so noise on a tiny rate and a steady high rate both pass */
	if (ea * 100.0 > eb * 100.0 + t->max_error_rate_increase_pct &&
	    ea > eb * t->max_error_rate_ratio) {
		snprintf(
		    why, cap,
		    "error rate regressed: %.2f %% (%llu of %llu) after, %.2f %% (%llu of %llu) "
		    "before; limit: more than %.2f points and %.2fx",
		    ea * 100.0, (unsigned long long)after->errors,
		    (unsigned long long)after->requests, eb * 100.0,
		    (unsigned long long)before->errors, (unsigned long long)before->requests,
		    t->max_error_rate_increase_pct, t->max_error_rate_ratio);
		return MC_ROLLOUT_REGRESSED;
	}
	/* p95 is compared only against a baseline with enough requests */
	double limit_us =
	    (double)before->p95_us * t->max_p95_ratio + (double)t->p95_slack_ms * 1000.0;
	if (before->requests >= t->min_requests && before->requests > 0 &&
	    (double)after->p95_us > limit_us) {
		snprintf(why, cap,
			 "p95 regressed: %.3f ms after, %.3f ms before; limit %.3f ms (%.2fx + %u "
			 "ms)",
			 (double)after->p95_us / 1000.0, (double)before->p95_us / 1000.0,
			 limit_us / 1000.0, t->max_p95_ratio, t->p95_slack_ms);
		return MC_ROLLOUT_REGRESSED;
	}
	snprintf(why, cap,
		 "passed: error rate %.2f %% after (%.2f %% before), p95 %.3f ms after (%.3f ms "
		 "before), %llu request(s)",
		 ea * 100.0, eb * 100.0, (double)after->p95_us / 1000.0,
		 (double)before->p95_us / 1000.0, (unsigned long long)after->requests);
	return MC_ROLLOUT_PASS;
}

/* ---- key rotation: document edits ------------------------------------------------------- */

static int load(const char *doc, size_t len, json_t **root, char *err, size_t cap)
{
	json_error_t e;
	*root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &e);
	if (!*root || !json_is_object(*root)) {
		snprintf(err, cap, "the current fleet document does not parse: %s", e.text);
		json_decref(*root);
		*root = NULL;
		return MC_EINVAL;
	}
	return 0;
}

static int dump(json_t *root, char **out, size_t *outlen)
{
	char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!s)
		return MC_ENOMEM;
	size_t n = strlen(s);
	*out = mc_alloc(n + 2);
	memcpy(*out, s, n);
	(*out)[n] = '\n';
	(*out)[n + 1] = '\0';
	*outlen = n + 1;
	free(s);
	return 0;
}

/* The 32 hex digits of a ticket key's name: from a 160-digit string (name
 * first) or an object's "name". "" when neither. */
static void ticket_name(const json_t *k, char *out)
{
	const char *s = NULL;
	if (json_is_string(k))
		s = json_string_value(k);
	else if (json_is_object(k) && json_is_string(json_object_get(k, "name")))
		s = json_string_value(json_object_get(k, "name"));
	out[0] = '\0';
	if (s && strlen(s) >= 2 * MC_TICKET_NAME_LEN) {
		for (size_t i = 0; i < 2 * MC_TICKET_NAME_LEN; i++)
			out[i] = (char)((s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 'a' : s[i]);
		out[2 * MC_TICKET_NAME_LEN] = '\0';
	}
}

/* The array at key of root as an array (a single ticket-key string becomes a
 * one-element array). NULL when absent. */
static json_t *key_array(json_t *root, const char *key)
{
	json_t *a = json_object_get(root, key);
	if (a && json_is_string(a)) {
		json_t *arr = json_array();
		json_array_append(arr, a);
		json_object_set_new(root, key, arr);
		a = arr;
	}
	return json_is_array(a) ? a : NULL;
}

static int index_of(json_t *a, int kind, const char *id)
{
	size_t i;
	json_t *k;
	json_array_foreach(a, i, k)
	{
		if (kind == MC_KEYS_AUTH) {
			json_t *kid = json_object_get(k, "kid");
			if (json_is_string(kid) && strcmp(json_string_value(kid), id) == 0)
				return (int)i;
		} else {
			char name[2 * MC_TICKET_NAME_LEN + 1];
			ticket_name(k, name);
			if (strcmp(name, id) == 0)
				return (int)i;
		}
	}
	return -1;
}

int mc_fleet_doc_key_publish(const char *doc, size_t len, int kind, const char *id,
			     const char *material, char **out, size_t *outlen, char *old_id,
			     size_t old_cap, char *err, size_t cap)
{
	json_t *root;
	int rc = load(doc, len, &root, err, cap);
	if (rc < 0)
		return rc;
	old_id[0] = '\0';
	if (kind == MC_KEYS_AUTH) {
		json_t *a = key_array(root, "auth_keys");
		if (!a) {
			a = json_array();
			json_object_set_new(root, "auth_keys", a);
		}
		size_t i;
		json_t *k;
		json_array_foreach(a, i, k)
		{
			json_t *st = json_object_get(k, "status");
			json_t *kid = json_object_get(k, "kid");
			if (json_is_string(st) && strcmp(json_string_value(st), "active") == 0 &&
			    json_is_string(kid))
				snprintf(old_id, old_cap, "%s", json_string_value(kid));
			if (json_is_string(st) && strcmp(json_string_value(st), "pending") == 0) {
				snprintf(
				    err, cap,
				    "auth key %s is still pending: finish or push that rotation "
				    "first",
				    json_is_string(kid) ? json_string_value(kid) : "?");
				json_decref(root);
				return MC_ECONFLICT;
			}
		}
		if (json_array_size(a) >= MC_AUTH_KEYS_MAX) {
			snprintf(err, cap, "auth_keys already holds %d keys", MC_AUTH_KEYS_MAX);
			json_decref(root);
			return MC_EFULL;
		}
		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s}", "kid", id, "alg",
						   "HS256", "key", material, "status", "pending"));
	} else {
		json_t *a = key_array(root, "tls_ticket_keys");
		if (!a || json_array_size(a) == 0) {
			snprintf(err, cap,
				 "the fleet config has no tls_ticket_keys: push an initial "
				 "set first (a rotation adds a key next to the one in use)");
			json_decref(root);
			return MC_ENOTFOUND;
		}
		if (json_array_size(a) >= MC_TICKET_KEYS_MAX) {
			snprintf(err, cap, "tls_ticket_keys already holds %d keys",
				 MC_TICKET_KEYS_MAX);
			json_decref(root);
			return MC_EFULL;
		}
		ticket_name(json_array_get(a, 0), old_id);
		/* appended: every cell decrypts with it before any encrypts with it */
		json_array_append_new(a, json_string(material));
	}
	return dump(root, out, outlen);
}

int mc_fleet_doc_key_activate(const char *doc, size_t len, int kind, const char *id,
			      const char *old_id, char **out, size_t *outlen, char *err, size_t cap)
{
	json_t *root;
	int rc = load(doc, len, &root, err, cap);
	if (rc < 0)
		return rc;
	json_t *a = key_array(root, kind == MC_KEYS_AUTH ? "auth_keys" : "tls_ticket_keys");
	int at = a ? index_of(a, kind, id) : -1;
	if (at < 0) {
		snprintf(err, cap,
			 "the new key %s is no longer in the fleet config (a later push "
			 "removed it)",
			 id);
		json_decref(root);
		return MC_ENOTFOUND;
	}
	if (kind == MC_KEYS_AUTH) {
		size_t i;
		json_t *k;
		json_array_foreach(a, i, k)
		{
			json_t *st = json_object_get(k, "status");
			if ((int)i == at)
				json_object_set_new(k, "status", json_string("active"));
			else if (json_is_string(st) && strcmp(json_string_value(st), "active") == 0)
				json_object_set_new(k, "status", json_string("retiring"));
		}
	} else {
		json_t *k = json_incref(json_array_get(a, (size_t)at));
		json_array_remove(a, (size_t)at);
		json_array_insert_new(a, 0, k); /* keys[0] encrypts new tickets */
	}
	(void)old_id;
	return dump(root, out, outlen);
}

int mc_fleet_doc_key_remove(const char *doc, size_t len, int kind, const char *old_id, char **out,
			    size_t *outlen, char *err, size_t cap)
{
	json_t *root;
	int rc = load(doc, len, &root, err, cap);
	if (rc < 0)
		return rc;
	json_t *a = key_array(root, kind == MC_KEYS_AUTH ? "auth_keys" : "tls_ticket_keys");
	int at = a && old_id[0] ? index_of(a, kind, old_id) : -1;
	if (at < 0) {
		snprintf(err, cap, "the old key %s is not in the fleet config (nothing to retire)",
			 old_id[0] ? old_id : "(none)");
		json_decref(root);
		return MC_ENOTFOUND;
	}
	if (kind == MC_KEYS_TICKET && json_array_size(a) == 1) {
		snprintf(err, cap, "the old ticket key is the only one left");
		json_decref(root);
		return MC_EINVAL;
	}
	json_array_remove(a, (size_t)at);
	return dump(root, out, outlen);
}
