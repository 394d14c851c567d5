/* The multi-get of the KV API: POST {prefix without "/"}:mget with
 * {"keys": ["a", "b"]} answers every key by the same rules as GET (local records,
 * fresh replica copies, else the region; stale copies or 503 per key while the
 * region is unreachable), asking the region once for all the keys that need it.
 * Values are JSON strings when they are UTF-8, else base64 in "value_base64". */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/kv_int.h"

struct mitem {
	char *key;
	size_t klen;
	mc_state_class cls;
	const mc_class_rule_conf *rule;
	int status; /* 0 while the region is asked */
	int live;
	mc_record rec;
	mc_buf val;
	const char *replica; /* "fresh", "stale" or NULL */
	uint64_t age_ms;
	int have_copy; /* rec/val hold a copy within its bound, to fall back on */
	const char *error;
};

struct mget {
	struct mitem *items;
	size_t n;
	size_t asked; /* items waiting for the region */
	int read_through, regional;
	size_t copies; /* replica copies not yet committed: the answer waits for them */
};

static void mget_free(struct mget *mg)
{
	if (!mg)
		return;
	for (size_t i = 0; i < mg->n; i++) {
		free(mg->items[i].key);
		mc_buf_fini(&mg->items[i].val);
	}
	free(mg->items);
	free(mg);
}

static void finish(kv_req *kr)
{
	struct mget *mg = kr->mg;
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"results\":[");
	for (size_t i = 0; i < mg->n; i++) {
		struct mitem *it = &mg->items[i];
		mc_buf_append_str(&b, i ? ",{\"key\":" : "{\"key\":");
		mc_buf_append_json(&b, it->key, it->klen);
		mc_buf_printf(&b, ",\"status\":%d,\"class\":\"%s\"", it->status,
			      mc_state_class_name(it->cls));
		if (it->error)
			mc_buf_printf(&b, ",\"error\":\"%s\"", it->error);
		if (it->rec.version && it->status != 503)
			mc_buf_printf(&b, ",\"version\":\"%llu\"",
				      (unsigned long long)it->rec.version);
		if (it->rec.home[0] && it->status != 503) {
			mc_buf_append_str(&b, ",\"home\":");
			mc_buf_append_json(&b, it->rec.home, strlen(it->rec.home));
		}
		if (it->status == 200) {
			mc_buf_append_json_value(&b, it->val.data ? it->val.data : "", it->val.len);
			if (it->rec.expires_ms)
				mc_buf_printf(&b, ",\"expires_ms\":%llu",
					      (unsigned long long)it->rec.expires_ms);
		}
		if (it->replica)
			mc_buf_printf(&b, ",\"replica\":\"%s\",\"replica_age_ms\":%llu",
				      it->replica, (unsigned long long)it->age_ms);
		mc_buf_append_str(&b, "}");
	}
	mc_buf_append_str(&b, "]}\n");
	int regional = mg->read_through || mg->regional;
	mget_free(mg);
	kr->mg = NULL;
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	kv_finish(kr, 200, regional ? OUTCOME_REGIONAL : OUTCOME_LOCAL, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
}

static uint32_t bound_of(const struct mitem *it)
{
	if (it->cls == MC_CLASS_REPLICATED)
		return it->rule->replica_max_staleness_ms;
	if (it->cls == MC_CLASS_REGIONAL)
		return it->rule->cache_ttl_ms;
	return 0;
}

/* Answers an item from the store when this cell may; leaves status 0 otherwise. */
static void resolve_local(cell_kv *kv, struct mitem *it)
{
	int rc = mc_store_get(kv->c->store, it->key, it->klen, &it->rec, &it->val);
	if (rc < 0 && rc != MC_ENOTFOUND) {
		it->status = 500;
		it->error = "store_error";
		return;
	}
	it->live = rc == 0;
	if (it->cls == MC_CLASS_LOCAL || (it->cls == MC_CLASS_REPLICATED && it->rec.found &&
					  !it->rec.replica && !it->rec.invalid)) {
		it->status = it->live ? 200 : 404;
		return;
	}
	if (it->rec.found && it->rec.replica) {
		uint64_t now = mc_wall_ms(), up = kv_link_up_since(kv);
		it->age_ms = now > it->rec.synced_ms ? now - it->rec.synced_ms : 0;
		int within = it->age_ms < bound_of(it);
		if (within && (it->cls == MC_CLASS_REGIONAL || (up && it->rec.synced_ms >= up))) {
			it->status = it->live ? 200 : 404;
			it->replica = "fresh";
			return;
		}
		it->have_copy = within;
	}
	if (it->cls == MC_CLASS_REPLICATED && !kv->region) {
		it->status = 404;
		return;
	}
}

static void unavailable(cell_kv *kv, struct mitem *it)
{
	if (it->have_copy) {
		kv_count(kv->stale_served);
		it->status = it->live ? 200 : 404;
		it->replica = "stale";
		return;
	}
	kv_count(kv->unavailable);
	it->status = 503;
	it->error = "state_unavailable";
}

static void finish(kv_req *kr);

static void on_copy(void *arg, const mc_write_result *res)
{
	kv_req *kr = arg;
	(void)res; /* a failed copy costs a read-through next time, nothing more */
	if (--kr->mg->copies == 0)
		finish(kr);
}

/* Applies the region's answer for one item (a member of its "results"). */
static void take_answer(kv_req *kr, struct mitem *it, json_t *a)
{
	cell_kv *kv = kr->kv;
	json_t *st = json_object_get(a, "status");
	int status = json_is_integer(st) ? (int)json_integer_value(st) : 0;
	if (status != 200 && status != 404) {
		unavailable(kv, it);
		return;
	}
	uint64_t version = 0;
	const char *vs = json_string_value(json_object_get(a, "version"));
	if (vs && mc_parse_u64(vs, strlen(vs), UINT64_MAX, &version) != 0)
		version = 0;
	const char *home = json_string_value(json_object_get(a, "home"));
	json_t *ex = json_object_get(a, "expires_ms");
	mc_buf_reset(&it->val);
	if (status == 200) {
		json_t *v = json_object_get(a, "value");
		const char *b64 = json_string_value(json_object_get(a, "value_base64"));
		if (json_is_string(v)) {
			mc_buf_append(&it->val, json_string_value(v), json_string_length(v));
		} else if (!b64 || mc_base64_decode(&it->val, b64, strlen(b64)) < 0) {
			unavailable(kv, it);
			return;
		}
	}
	memset(&it->rec, 0, sizeof it->rec);
	it->rec.version = version;
	it->rec.expires_ms = json_is_integer(ex) ? (uint64_t)json_integer_value(ex) : 0;
	if (home && strlen(home) <= MC_STATE_MAX_HOME)
		snprintf(it->rec.home, sizeof it->rec.home, "%s", home);
	it->status = status;
	it->live = status == 200;
	it->replica = NULL;
	if (bound_of(it) > 0 && !kv->closing) {
		mc_write w = {.kind = MC_W_COPY,
			      .key = it->key,
			      .klen = it->klen,
			      .value = it->val.data,
			      .vlen = status == 200 ? it->val.len : 0,
			      .expires_ms = it->rec.expires_ms,
			      .version = version,
			      .home = it->rec.home,
			      .deleted = status != 200,
			      .synced_ms = mc_wall_ms()};
		if (mc_store_submit(kv->c->store, &w, on_copy, kr) == 0)
			kr->mg->copies++;
	}
}

static void on_region(void *arg, int err, const mc_http_response *res)
{
	kv_req *kr = arg;
	cell_kv *kv = kr->kv;
	struct mget *mg = kr->mg;
	json_t *doc = NULL, *results = NULL;
	if (err == 0 && res->status == 200) {
		doc = json_loadb(res->body, res->body_len, 0, NULL);
		results = json_object_get(doc, "results");
		if (!json_is_array(results) || json_array_size(results) != mg->asked)
			results = NULL;
	}
	if (results) {
		if (mg->read_through)
			kv_count(kv->rr_read_through);
		if (mg->regional)
			kv_count(kv->rr_regional_key);
	}
	size_t k = 0;
	for (size_t i = 0; i < mg->n; i++) {
		struct mitem *it = &mg->items[i];
		if (it->status)
			continue;
		if (results)
			take_answer(kr, it, json_array_get(results, k++));
		else
			unavailable(kv, it);
	}
	json_decref(doc);
	if (mg->copies == 0)
		finish(kr);
}

/* Parses {"keys": [...]} into items; answers 400 itself. */
static int parse(kv_req *kr, struct mget *mg)
{
	const mc_http_request *req = mc_http_exchange_request(kr->r->ex);
	const mc_state_conf *sc = &kr->kv->c->conf->state;
	json_error_t e;
	json_t *doc = req->body ? json_loadb(req->body, req->body_len, 0, &e) : NULL;
	json_t *keys = json_object_get(doc, "keys");
	int rc = -1;
	if (!json_is_array(keys)) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_request",
			"expected a JSON body {\"keys\": [\"key\", ...]}");
		goto out;
	}
	size_t n = json_array_size(keys);
	if (n == 0 || n > sc->max_mget_keys) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_request", "expected 1..%u keys, got %zu",
			(unsigned)sc->max_mget_keys, n);
		goto out;
	}
	mg->items = mc_calloc(n, sizeof *mg->items);
	mg->n = n;
	for (size_t i = 0; i < n; i++) {
		json_t *k = json_array_get(keys, i);
		struct mitem *it = &mg->items[i];
		mc_buf_init(&it->val);
		if (!json_is_string(k) || json_string_length(k) == 0 ||
		    json_string_length(k) > sc->max_key_bytes) {
			kv_fail(kr, 400, OUTCOME_LOCAL, "bad_key",
				"keys[%zu]: expected a key of 1..%u bytes", i,
				(unsigned)sc->max_key_bytes);
			goto out;
		}
		const unsigned char *p = (const unsigned char *)json_string_value(k);
		for (size_t j = 0; j < json_string_length(k); j++) {
			if (p[j] <= 0x20 || p[j] == 0x7f) {
				kv_fail(
				    kr, 400, OUTCOME_LOCAL, "bad_key",
				    "keys[%zu]: keys may not contain spaces or control characters",
				    i);
				goto out;
			}
		}
		it->klen = json_string_length(k);
		it->key = mc_strndup(json_string_value(k), it->klen);
		it->cls = kv_class_of(kr->kv, it->key, it->klen, &it->rule);
	}
	rc = 0;
out:
	json_decref(doc);
	return rc;
}

void kv_mget_handle(kv_req *kr)
{
	cell_kv *kv = kr->kv;
	struct mget *mg = mc_calloc(1, sizeof *mg);
	kr->mg = mg;
	kr->r->seg_name = "state";
	kr->r->seg_start_ns = mc_now_ns();
	if (parse(kr, mg) < 0) {
		mget_free(mg); /* kr is answered and freed */
		return;
	}
	uint32_t timeout = 0;
	int keep = 0;
	for (size_t i = 0; i < mg->n; i++) {
		struct mitem *it = &mg->items[i];
		resolve_local(kv, it);
		if (it->status)
			continue;
		mg->asked++;
		if (it->cls == MC_CLASS_REGIONAL)
			mg->regional = 1;
		else
			mg->read_through = 1;
		keep |= bound_of(it) > 0;
		timeout = MC_MAX(timeout, it->rule->region_timeout_ms);
	}
	if (!mg->asked) {
		finish(kr);
		return;
	}
	/* One call for every key that needs the region. */
	mc_buf body, target;
	mc_buf_init(&body);
	mc_buf_init(&target);
	mc_buf_append_str(&target, "/v1/kv:mget");
	mc_buf_append_str(&body, "{\"keys\":[");
	size_t k = 0;
	for (size_t i = 0; i < mg->n; i++) {
		if (mg->items[i].status)
			continue;
		if (k++)
			mc_buf_append_str(&body, ",");
		mc_buf_append_json(&body, mg->items[i].key, mg->items[i].klen);
	}
	mc_buf_append_str(&body, "]}");
	mc_http_header h[2] = {{"Content-Type", 12, "application/json", 16},
			       {"X-Metrocell-Copy", 16, "1", 1}};
	kr->r->seg_name = "region";
	kr->r->seg_start_ns = mc_now_ns();
	int rc = kv_region_call(kv, "POST", &target, h, keep ? 2 : 1, body.data, body.len, timeout,
				on_region, kr);
	mc_buf_fini(&body);
	mc_buf_fini(&target);
	if (rc < 0) {
		for (size_t i = 0; i < mg->n; i++)
			if (!mg->items[i].status)
				unavailable(kv, &mg->items[i]);
		finish(kr);
	}
}
