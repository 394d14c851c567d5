/* The region's KV API: GET | HEAD | PUT | DELETE /v1/kv/{key}, POST /v1/kv/{key}:incr
 * and POST /v1/kv:mget on the regional store. Cells read through it (replicated
 * keys they do not hold) and forward regional keys to it. Writes here are never
 * logged (the region ships nothing); every write, here or applied from a cell's
 * log, sends INVALIDATE to the other cells holding a copy of the key. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "region/region_int.h"

#define COMP "region"
#define KV_PREFIX "/v1/kv/"
#define MGET_PATH "/v1/kv:mget"
#define MGET_MAX_ANSWER ((size_t)16 << 20) /* values beyond are answered 413 per key */

struct mc_region_kv {
	uv_loop_t *loop;
	const mc_region_conf *cf;
	mc_metrics *metrics;
	mc_store *store;
	mc_repl_sink *sink;
	mc_holders *holders;
	uv_timer_t sweep;
	int sweeping;
	int closing;
	int timer_open;
};

enum { A_GET = 1, A_HEAD, A_PUT, A_DEL, A_INCR };

/* A write in flight. */
struct rw {
	mc_region_kv *kv;
	mc_http_exchange *ex;
	int action;
	char *key;
	size_t klen;
	char cell[MC_STATE_MAX_HOME + 1]; /* the cell that asked ("" none) */
	int64_t delta;
};

static mc_series *series(mc_region_kv *kv, const char *name, const char *help, mc_metric_type t,
			 const char *labels)
{
	return mc_metrics_series(kv->metrics, name, help, t, labels ? labels : "");
}

/* ---- invalidations --------------------------------------------------------------------------- */

static int send_invalidate(void *arg, const char *cell, const char *key, size_t klen,
			   uint64_t version)
{
	mc_region_kv *kv = arg;
	if (!kv->sink)
		return 0;
	return mc_repl_sink_invalidate_cell(kv->sink, cell, key, klen, version) == 1;
}

static void on_applied(void *arg, const char *cell, const mc_apply_note *n, size_t count)
{
	mc_region_kv *kv = arg;
	for (size_t i = 0; i < count; i++) {
		if (!n[i].key)
			continue; /* a replay, skipped */
		if (n[i].won)
			mc_holders_written(kv->holders, n[i].key, n[i].klen, cell, n[i].prev_home,
					   n[i].version);
		else
			/* The cell's write lost to a newer one: its record is stale. */
			mc_holders_invalidate(kv->holders, n[i].key, n[i].klen, cell,
					      n[i].prev_version);
	}
}

static void on_cell_ready(void *arg, const char *cell)
{
	mc_region_kv *kv = arg;
	mc_holders_flush(kv->holders, cell);
}

/* ---- sweeper ----------------------------------------------------------------------------------
 */

static void on_swept(void *arg, const mc_sweep_result *res)
{
	mc_region_kv *kv = arg;
	kv->sweeping = 0;
	if (res->err < 0)
		MC_WARN(COMP, "TTL sweep: %s", mc_strerror(res->err));
}

static void on_sweep_tick(uv_timer_t *t)
{
	mc_region_kv *kv = t->data;
	mc_sweep_opts o = {.tombstone_retention_ms = kv->cf->state.tombstone_retention_ms,
			   .copy_max_age_ms = 0,
			   .max_examine = 10000};
	if (kv->sweeping || kv->closing || !kv->store)
		return;
	if (mc_store_sweep(kv->store, &o, on_swept, kv) == 0)
		kv->sweeping = 1;
}

/* ---- helpers ------------------------------------------------------------------------------------
 */

static int cell_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > MC_STATE_MAX_HOME)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

/* The asking cell (X-Metrocell-Cell), and whether it keeps a copy. */
static int asking_cell(const mc_http_request *req, char *cell, size_t cap)
{
	size_t n, cn;
	const char *c = mc_http_header_find(req->headers, req->nheaders, "x-metrocell-cell", &n);
	cell[0] = '\0';
	if (!c || !cell_name_ok(c, n) || n >= cap)
		return 0;
	memcpy(cell, c, n);
	cell[n] = '\0';
	const char *copy =
	    mc_http_header_find(req->headers, req->nheaders, "x-metrocell-copy", &cn);
	return copy && cn == 1 && copy[0] == '1';
}

static int key_ok(const mc_region_kv *kv, const mc_buf *k)
{
	if (k->len == 0 || k->len > kv->cf->state.max_key_bytes)
		return 0;
	for (size_t i = 0; i < k->len; i++)
		if ((unsigned char)k->data[i] <= 0x20 || k->data[i] == 0x7f)
			return 0;
	return 1;
}

struct hdrs {
	mc_http_header h[8];
	size_t n;
	char version[24], etag[26], expires[24];
};

static void rec_headers(mc_region_kv *kv, struct hdrs *H, uint64_t version, const char *home,
			uint64_t expires_ms)
{
	H->n = 0;
	H->h[H->n++] =
	    (mc_http_header){"X-Metrocell-Region", 18, kv->cf->region, strlen(kv->cf->region)};
	if (version) {
		snprintf(H->version, sizeof H->version, "%llu", (unsigned long long)version);
		snprintf(H->etag, sizeof H->etag, "\"%llu\"", (unsigned long long)version);
		H->h[H->n++] =
		    (mc_http_header){"X-Metrocell-Version", 19, H->version, strlen(H->version)};
		H->h[H->n++] = (mc_http_header){"ETag", 4, H->etag, strlen(H->etag)};
	}
	if (home && home[0])
		H->h[H->n++] = (mc_http_header){"X-Metrocell-Home", 16, home, strlen(home)};
	if (expires_ms) {
		snprintf(H->expires, sizeof H->expires, "%llu", (unsigned long long)expires_ms);
		H->h[H->n++] =
		    (mc_http_header){"X-Metrocell-Expires-Ms", 22, H->expires, strlen(H->expires)};
	}
}

/* ---- reads --------------------------------------------------------------------------------------
 */

static void kv_read(mc_region_kv *kv, mc_http_exchange *ex, const mc_buf *key)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	char cell[MC_STATE_MAX_HOME + 1];
	int copy = asking_cell(req, cell, sizeof cell);
	mc_record rec;
	mc_buf val;
	mc_buf_init(&val);
	int rc = mc_store_get(kv->store, key->data, key->len, &rec, &val);
	struct hdrs H;
	if (rc == 0 || rc == MC_ENOTFOUND) {
		if (copy)
			mc_holders_add(kv->holders, key->data, key->len, cell);
		rec_headers(kv, &H, rec.version, rec.home, rc == 0 ? rec.expires_ms : 0);
	}
	if (rc == MC_ENOTFOUND) {
		mc_http_respond_error(ex, 404, H.h, H.n, "not_found", "no key \"%s\" in region %s",
				      key->data, kv->cf->region);
	} else if (rc < 0) {
		mc_http_respond_error(ex, rc == MC_ECLOSED ? 503 : 500, NULL, 0, "store_error",
				      "reading the store: %s", mc_strerror(rc));
	} else {
		H.h[H.n++] = (mc_http_header){"Content-Type", 12, "application/octet-stream", 24};
		mc_http_respond(ex, 200, H.h, H.n, rec.value, rec.value_len);
	}
	mc_buf_fini(&val);
}

static void kv_mget(mc_region_kv *kv, mc_http_exchange *ex)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	char cell[MC_STATE_MAX_HOME + 1];
	int copy = asking_cell(req, cell, sizeof cell);
	json_t *doc = req->body ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
	json_t *keys = json_object_get(doc, "keys");
	size_t n = json_is_array(keys) ? json_array_size(keys) : 0;
	if (!json_is_array(keys) || n == 0 || n > kv->cf->state.max_mget_keys) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "expected {\"keys\": [...]} with 1..%u keys",
				      (unsigned)kv->cf->state.max_mget_keys);
		json_decref(doc);
		return;
	}
	mc_buf b, val, key;
	mc_buf_init(&b);
	mc_buf_init(&val);
	mc_buf_init(&key);
	mc_buf_append_str(&b, "{\"results\":[");
	for (size_t i = 0; i < n; i++) {
		json_t *k = json_array_get(keys, i);
		mc_buf_reset(&key);
		if (json_is_string(k))
			mc_buf_append(&key, json_string_value(k), json_string_length(k));
		mc_buf_append_str(&b, i ? ",{\"key\":" : "{\"key\":");
		mc_buf_append_json(&b, key.data ? key.data : "", key.len);
		if (!json_is_string(k) || !key_ok(kv, &key)) {
			mc_buf_append_str(&b, ",\"status\":400,\"error\":\"bad_key\"}");
			continue;
		}
		mc_record rec;
		int rc = mc_store_get(kv->store, key.data, key.len, &rec, &val);
		if (rc < 0 && rc != MC_ENOTFOUND) {
			mc_buf_append_str(&b, ",\"status\":503,\"error\":\"store_error\"}");
			continue;
		}
		if (copy)
			mc_holders_add(kv->holders, key.data, key.len, cell);
		if (rc == 0 && b.len + val.len > MGET_MAX_ANSWER) {
			mc_buf_append_str(&b, ",\"status\":413,\"error\":\"answer_too_large\"}");
			continue;
		}
		mc_buf_printf(&b, ",\"status\":%d", rc == 0 ? 200 : 404);
		if (rec.version)
			mc_buf_printf(&b, ",\"version\":\"%llu\"", (unsigned long long)rec.version);
		if (rec.home[0]) {
			mc_buf_append_str(&b, ",\"home\":");
			mc_buf_append_json(&b, rec.home, strlen(rec.home));
		}
		if (rc == 0) {
			mc_buf_append_json_value(&b, val.data ? val.data : "", val.len);
			if (rec.expires_ms)
				mc_buf_printf(&b, ",\"expires_ms\":%llu",
					      (unsigned long long)rec.expires_ms);
		}
		mc_buf_append_str(&b, "}");
	}
	mc_buf_append_str(&b, "]}\n");
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
	mc_buf_fini(&val);
	mc_buf_fini(&key);
	json_decref(doc);
}

/* ---- writes -------------------------------------------------------------------------------------
 */

static void rw_free(struct rw *w)
{
	free(w->key);
	free(w);
}

static void on_written(void *arg, const mc_write_result *res)
{
	struct rw *w = arg;
	mc_region_kv *kv = w->kv;
	struct hdrs H;
	switch (res->err) {
	case 0:
		break;
	case MC_ECONFLICT:
		rec_headers(kv, &H, res->version, NULL, 0);
		mc_http_respond_error(w->ex, 412, H.h, H.n, "precondition_failed",
				      "\"%.*s\" is at version %llu in region %s: the condition "
				      "(If-Match / If-None-Match) does not hold",
				      (int)w->klen, w->key, (unsigned long long)res->version,
				      kv->cf->region);
		goto out;
	case MC_ENOTFOUND:
		mc_http_respond_error(w->ex, 404, NULL, 0, "not_found",
				      "no key \"%.*s\" in region %s", (int)w->klen, w->key,
				      kv->cf->region);
		goto out;
	case MC_EINVAL:
		mc_http_respond_error(w->ex, 409, NULL, 0, "not_a_counter",
				      "\"%.*s\" holds a value that is not a decimal 64-bit integer",
				      (int)w->klen, w->key);
		goto out;
	case MC_ETOOBIG:
		mc_http_respond_error(w->ex, 409, NULL, 0, "counter_overflow",
				      "adding %lld to \"%.*s\" would overflow a signed 64-bit "
				      "integer; the counter is unchanged",
				      (long long)w->delta, (int)w->klen, w->key);
		goto out;
	case MC_EFULL:
		mc_http_respond_error(w->ex, 507, NULL, 0, "store_full",
				      "the regional store is full (state.map_size_mb)");
		goto out;
	default:
		mc_http_respond_error(w->ex, 500, NULL, 0, "store_error", "write failed: %s",
				      mc_strerror(res->err));
		goto out;
	}
	if (kv->holders)
		mc_holders_written(kv->holders, w->key, w->klen, w->cell[0] ? w->cell : NULL,
				   res->prev_home, res->version);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"key\":");
	mc_buf_append_json(&b, w->key, w->klen);
	mc_buf_printf(
	    &b, ",\"version\":\"%llu\",\"seq\":0,\"home\":", (unsigned long long)res->version);
	mc_buf_append_json(&b, kv->cf->region, strlen(kv->cf->region));
	if (w->action == A_DEL)
		mc_buf_append_str(&b, ",\"deleted\":true");
	if (w->action == A_INCR)
		mc_buf_printf(&b, ",\"value\":%lld", (long long)res->counter);
	if (res->expires_ms && w->action != A_DEL)
		mc_buf_printf(&b, ",\"expires_ms\":%llu", (unsigned long long)res->expires_ms);
	mc_buf_append_str(&b, "}\n");
	rec_headers(kv, &H, res->version, kv->cf->region, w->action == A_DEL ? 0 : res->expires_ms);
	H.h[H.n++] = (mc_http_header){"Content-Type", 12, "application/json", 16};
	mc_http_respond(w->ex, 200, H.h, H.n, b.data, b.len);
	mc_buf_fini(&b);
out:
	rw_free(w);
}

static void kv_write(mc_region_kv *kv, mc_http_exchange *ex, const mc_buf *key, int action)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	mc_kv_params qp;
	char err[160];
	mc_write wr = {.key = key->data, .klen = key->len};
	if (mc_kv_query_parse(req->query, &qp, err, sizeof err) < 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request", "%s", err);
		return;
	}
	if ((qp.has_ttl && action == A_DEL) || (qp.has_by && action != A_INCR)) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "ttl applies to PUT and incr, by to incr only");
		return;
	}
	size_t len;
	const char *v = mc_http_header_find(req->headers, req->nheaders, "if-match", &len);
	int star = 0;
	if (v && mc_kv_version_parse(v, len, &wr.if_version, &star) < 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "If-Match must be * or one version");
		return;
	}
	if (star)
		wr.flags |= MC_W_IF_PRESENT;
	v = mc_http_header_find(req->headers, req->nheaders, "if-none-match", &len);
	if (v) {
		uint64_t ver;
		if (mc_kv_version_parse(v, len, &ver, &star) < 0 || !star) {
			mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
					      "If-None-Match on a write must be *");
			return;
		}
		wr.flags |= MC_W_IF_ABSENT;
	}
	if (qp.has_ttl)
		wr.expires_ms = mc_wall_ms() + qp.ttl_ms;
	struct rw *w = mc_calloc(1, sizeof *w);
	w->kv = kv;
	w->ex = ex;
	w->action = action;
	asking_cell(req, w->cell, sizeof w->cell);
	if (action == A_PUT) {
		if (req->body_len > kv->cf->state.max_value_bytes) {
			mc_http_respond_error(ex, 413, NULL, 0, "value_too_large",
					      "value of %zu bytes is over the limit of %u bytes",
					      req->body_len,
					      (unsigned)kv->cf->state.max_value_bytes);
			rw_free(w);
			return;
		}
		wr.kind = MC_W_PUT;
		wr.value = req->body;
		wr.vlen = req->body_len;
	} else if (action == A_DEL) {
		wr.kind = MC_W_DEL;
		wr.flags |= MC_W_MUST_EXIST;
	} else {
		wr.kind = MC_W_INCR;
		wr.delta = qp.has_by ? qp.by : 1;
		if (req->body_len &&
		    (qp.has_by || mc_kv_i64_parse(req->body, req->body_len, &wr.delta) < 0)) {
			mc_http_respond_error(
			    ex, 400, NULL, 0, "bad_delta",
			    "the delta is one signed 64-bit integer, in the body or "
			    "in ?by=, not both");
			rw_free(w);
			return;
		}
	}
	w->delta = wr.delta;
	w->key = mc_strndup(key->data, key->len);
	w->klen = key->len;
	int rc = mc_store_submit(kv->store, &wr, on_written, w);
	if (rc < 0) {
		mc_http_respond_error(ex, rc == MC_ETOOBIG ? 413 : 503, NULL, 0,
				      rc == MC_ETOOBIG ? "value_too_large" : "overloaded",
				      "write refused: %s", mc_strerror(rc));
		rw_free(w);
	}
}

/* ---- dispatch
 * ------------------------------------------------------------------------------------- */

int mc_region_kv_owns(const char *path, size_t len)
{
	return (len >= strlen(KV_PREFIX) && memcmp(path, KV_PREFIX, strlen(KV_PREFIX)) == 0) ||
	       (len == strlen(MGET_PATH) && memcmp(path, MGET_PATH, len) == 0);
}

void mc_region_kv_handle(mc_region_kv *kv, mc_http_exchange *ex)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	if (kv->closing || !kv->store) {
		mc_http_respond_error(ex, 503, NULL, 0, "shutting_down", "the region is stopping");
		return;
	}
	if (req->path_len == strlen(MGET_PATH) &&
	    memcmp(req->path, MGET_PATH, req->path_len) == 0) {
		if (strcmp(req->method, "POST") != 0) {
			mc_http_header allow = {"Allow", 5, "POST", 4};
			mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed",
					      "the multi-get takes POST with {\"keys\": [...]}");
			return;
		}
		kv_mget(kv, ex);
		return;
	}
	const char *raw = req->path + strlen(KV_PREFIX);
	size_t rawlen = req->path_len - strlen(KV_PREFIX);
	int action;
	if (strcmp(req->method, "GET") == 0) {
		action = A_GET;
	} else if (strcmp(req->method, "HEAD") == 0) {
		action = A_HEAD;
	} else if (strcmp(req->method, "PUT") == 0) {
		action = A_PUT;
	} else if (strcmp(req->method, "DELETE") == 0) {
		action = A_DEL;
	} else if (strcmp(req->method, "POST") == 0 && rawlen > 5 &&
		   memcmp(raw + rawlen - 5, ":incr", 5) == 0) {
		action = A_INCR;
		rawlen -= 5;
	} else {
		mc_http_header allow = {"Allow", 5, "GET, HEAD, PUT, DELETE, POST", 28};
		mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed",
				      "%.16s is not allowed on the KV API (POST only as "
				      "/v1/kv/{key}:incr)",
				      req->method);
		return;
	}
	mc_buf key;
	mc_buf_init(&key);
	if (rawlen == 0 || mc_http_percent_decode(raw, rawlen, &key) < 0 || !key_ok(kv, &key)) {
		mc_http_respond_error(
		    ex, 400, NULL, 0, "bad_key",
		    "missing, malformed or too long key (1..%u bytes, no spaces or "
		    "control characters)",
		    (unsigned)kv->cf->state.max_key_bytes);
	} else if (action == A_GET || action == A_HEAD) {
		kv_read(kv, ex, &key);
	} else {
		kv_write(kv, ex, &key, action);
	}
	mc_buf_fini(&key);
}

/* ---- life cycle
 * -------------------------------------------------------------------------------------- */

mc_region_kv *mc_region_kv_new(uv_loop_t *loop, const mc_region_conf *cf, mc_metrics *metrics)
{
	mc_region_kv *kv = mc_calloc(1, sizeof *kv);
	kv->loop = loop;
	kv->cf = cf;
	kv->metrics = metrics;
	kv->holders = mc_holders_new(0, cf->region, send_invalidate, kv);
	uv_timer_init(loop, &kv->sweep);
	kv->sweep.data = kv;
	kv->timer_open = 1;
	return kv;
}

void mc_region_kv_store_opts(mc_region_kv *kv, mc_store_opts *so)
{
	(void)kv;
	so->apply_notes = 1;
}

void mc_region_kv_sink_opts(mc_region_kv *kv, mc_repl_sink_opts *ko)
{
	ko->on_cell_ready = on_cell_ready;
	ko->cb_arg = kv;
}

void mc_region_kv_start(mc_region_kv *kv, mc_store *store, mc_repl_sink *sink)
{
	kv->store = store;
	kv->sink = sink;
	mc_store_set_apply_hook(store, on_applied, kv);
	uint32_t every = kv->cf->state.sweep_interval_ms;
	uv_timer_start(&kv->sweep, on_sweep_tick, every, every);
}

void mc_region_kv_metrics(mc_region_kv *kv)
{
	if (!kv)
		return;
	mc_holders_stats hs;
	mc_holders_stats_get(kv->holders, &hs);
	series(kv, "metrocell_region_copy_tracked_keys",
	       "Keys for which the region tracks which cells hold a copy.", MC_METRIC_GAUGE, NULL)
	    ->value = (double)hs.keys;
	series(kv, "metrocell_region_invalidations_sent_total",
	       "INVALIDATE frames sent to cells holding a copy of a key written elsewhere.",
	       MC_METRIC_COUNTER, NULL)
	    ->value = (double)hs.sent;
	series(kv, "metrocell_region_invalidations_pending",
	       "Invalidations waiting for their cell to reconnect.", MC_METRIC_GAUGE, NULL)
	    ->value = (double)hs.pending;
	series(kv, "metrocell_region_copy_tracking_evicted_total",
	       "Tracked keys forgotten at the table's bound (copies then bounded by their "
	       "staleness bound only).",
	       MC_METRIC_COUNTER, NULL)
	    ->value = (double)hs.evicted;
	if (!kv->store)
		return;
	mc_store_stats ss;
	mc_store_stats_get(kv->store, &ss);
	static const char *const kinds[] = {"expired", "tombstone"};
	uint64_t swept[] = {ss.swept_expired, ss.swept_tombstones};
	for (size_t i = 0; i < MC_ARRAY_LEN(kinds); i++) {
		char l[32];
		snprintf(l, sizeof l, "kind=\"%s\"", kinds[i]);
		series(kv, "metrocell_region_state_swept_total",
		       "Records deleted by the region's background sweeper, by kind.",
		       MC_METRIC_COUNTER, l)
		    ->value = (double)swept[i];
	}
	series(kv, "metrocell_region_state_records",
	       "Records in the regional store (tombstones included).", MC_METRIC_GAUGE, NULL)
	    ->value = (double)mc_store_record_count(kv->store);
}

static void on_timer_closed(uv_handle_t *h)
{
	mc_region_kv *kv = h->data;
	kv->timer_open = 0;
}

void mc_region_kv_fini(mc_region_kv *kv)
{
	if (!kv || kv->closing)
		return;
	kv->closing = 1;
	kv->sink = NULL;
	uv_timer_stop(&kv->sweep);
	uv_close((uv_handle_t *)&kv->sweep, on_timer_closed);
}

void mc_region_kv_free(mc_region_kv *kv)
{
	if (!kv)
		return;
	MC_ASSERT(!kv->timer_open);
	mc_holders_free(kv->holders);
	free(kv);
}
