/* The hot-state KV API of a cell: GET | HEAD | PUT | DELETE {prefix}{key} and
 * POST {prefix}{key}:incr, with ?ttl=, If-Match / If-None-Match, by state class
 * (docs/operations.md, "Hot state"):
 *  - local keys live in this cell's store only and are never logged;
 *  - replicated keys are written here, logged and shipped; a key this cell does
 *    not hold is read through from the region and kept as a bounded replica copy;
 *    with the region unreachable a copy within its bound is served, marked stale,
 *    and anything else is 503 state_unavailable, never a false 404;
 *  - regional keys are forwarded to the region, with an optional read cache.
 * Writes are acknowledged after the local durable commit (ack: local) or after
 * the region's ACK covering them (ack: region). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/kv_int.h"

/* ---- answering ------------------------------------------------------------------------ */

static kv_req *kv_req_new(cell_req *r)
{
	kv_req *kr = mc_alloc(sizeof *kr); /* not calloc: see on_request in cell.c */
	memset(kr, 0, sizeof *kr);
	kr->r = r;
	kr->kv = r->c->kv;
	mc_buf_init(&kr->copy_val);
	return kr;
}

static void kv_req_free(kv_req *kr)
{
	mc_buf_fini(&kr->copy_val);
	free(kr);
}

void kv_finish(kv_req *kr, int status, cell_outcome outcome, const mc_http_header *h, size_t n,
	       const void *body, size_t len)
{
	mc_cell_finish(kr->r, status, outcome, h, n, body, len);
	kv_req_free(kr);
}

static void kv_failv(kv_req *kr, int status, cell_outcome outcome, const mc_http_header *h,
		     size_t n, const char *code, const char *fmt, va_list ap)
    __attribute__((format(printf, 7, 0)));

static void kv_failv(kv_req *kr, int status, cell_outcome outcome, const mc_http_header *h,
		     size_t n, const char *code, const char *fmt, va_list ap)
{
	mc_buf body;
	mc_http_header all[16];
	size_t m = 0;
	mc_buf_init(&body);
	mc_http_error_bodyv(&body, code, fmt, ap);
	for (size_t i = 0; i < n && m + 1 < MC_ARRAY_LEN(all); i++)
		all[m++] = h[i];
	all[m++] = (mc_http_header){"Content-Type", 12, "application/json", 16};
	kv_finish(kr, status, outcome, all, m, body.data, body.len);
	mc_buf_fini(&body);
}

void kv_fail(kv_req *kr, int status, cell_outcome outcome, const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kv_failv(kr, status, outcome, NULL, 0, code, fmt, ap);
	va_end(ap);
}

void kv_fail_h(kv_req *kr, int status, cell_outcome outcome, const mc_http_header *h, size_t n,
	       const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kv_failv(kr, status, outcome, h, n, code, fmt, ap);
	va_end(ap);
}

/* Writes v in decimal at out (room for 20 digits), returns the length: every answer
 * carries a version or two, and printf's machinery costs more than the rest of
 * building them. */
static size_t fmt_u64(char *out, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* Response headers describing a record. */
struct hdrs {
	mc_http_header h[12];
	size_t n;
	size_t home; /* index of X-Metrocell-Home in h, or n when absent */
	char version[24], etag[26], expires[24], age[24];
};

static void hdr_add(struct hdrs *H, const char *name, const char *value)
{
	MC_ASSERT(H->n < MC_ARRAY_LEN(H->h));
	H->h[H->n++] = (mc_http_header){name, strlen(name), value, strlen(value)};
}

static void rec_headers(struct hdrs *H, kv_req *kr, uint64_t version, const char *home,
			uint64_t expires_ms)
{
	H->n = 0;
	hdr_add(H, "X-Metrocell-Class", mc_state_class_name(kr->cls));
	if (version) {
		size_t n = fmt_u64(H->version, version);
		MC_ASSERT(H->n + 2 <= MC_ARRAY_LEN(H->h));
		H->etag[0] = '"';
		memcpy(H->etag + 1, H->version, n);
		H->etag[n + 1] = '"';
		H->h[H->n++] = (mc_http_header){"X-Metrocell-Version", 19, H->version, n};
		H->h[H->n++] = (mc_http_header){"ETag", 4, H->etag, n + 2};
	}
	H->home = MC_ARRAY_LEN(H->h);
	if (home && home[0]) {
		H->home = H->n;
		hdr_add(H, "X-Metrocell-Home", home);
	}
	if (expires_ms) {
		size_t el = (size_t)(mc_http_put_u64(H->expires, expires_ms) - H->expires);
		H->h[H->n++] = (mc_http_header){"X-Metrocell-Expires-Ms", 22, H->expires, el};
	}
}

static void replica_headers(struct hdrs *H, const char *state, uint64_t age_ms)
{
	size_t al = (size_t)(mc_http_put_u64(H->age, age_ms) - H->age);
	hdr_add(H, "X-Metrocell-Replica", state);
	H->h[H->n++] = (mc_http_header){"X-Metrocell-Replica-Age-Ms", 26, H->age, al};
}

/* Answers from a record: 200 with its value, or 404 for a tombstone, an expired
 * record or a negative copy. replica is NULL for the cell's own records. */
static void serve(kv_req *kr, int live, const mc_record *rec, cell_outcome o, const char *replica,
		  uint64_t age_ms)
{
	struct hdrs H;
	rec_headers(&H, kr, rec->version, rec->home, live ? rec->expires_ms : 0);
	if (replica)
		replica_headers(&H, replica, age_ms);
	if (!live) {
		const char *why = replica ? "the region's answer, kept as a replica copy"
				  : kr->cls == MC_CLASS_LOCAL ? "a local key"
				  : rec->found		      ? "deleted or expired"
					       : "not held, and no region.http to ask";
		kv_fail_h(kr, 404, o, H.h, H.n, "not_found", "no key \"%s\" in cell %s (%s)",
			  kr->r->key.data, kr->kv->c->conf->cell, why);
		return;
	}
	hdr_add(&H, "Content-Type", "application/octet-stream");
	/* The fields are constants and numbers formatted here, except the home
	 * cell's name, which a replica copy got from the region: only that one goes
	 * through the HTTP layer's checks. */
	mc_http_header own[MC_ARRAY_LEN(H.h)], home[1];
	size_t nown = 0, nhome = 0;
	for (size_t i = 0; i < H.n; i++) {
		if (i == H.home)
			home[nhome++] = H.h[i];
		else
			own[nown++] = H.h[i];
	}
	mc_cell_finish_own(kr->r, 200, o, own, nown, home, nhome, rec->value, rec->value_len);
	kv_req_free(kr);
}

/* ---- the region: read-through and regional keys ------------------------------------------- */

static void kv_submit_write(kv_req *kr);

static uint32_t copy_bound(kv_req *kr)
{
	if (kr->cls == MC_CLASS_REPLICATED)
		return kr->rule->replica_max_staleness_ms;
	if (kr->cls == MC_CLASS_REGIONAL)
		return kr->rule->cache_ttl_ms;
	return 0;
}

static int is_write(kv_req *kr)
{
	return kr->action == KV_PUT || kr->action == KV_DEL || kr->action == KV_INCR;
}

/* The region cannot be reached: a copy within its bound, or 503. Never 404. */
static void region_unavailable(kv_req *kr, const char *why)
{
	cell_kv *kv = kr->kv;
	uint64_t now = mc_wall_ms();
	if (kr->have_copy && !is_write(kr)) {
		uint64_t age = now > kr->copy.synced_ms ? now - kr->copy.synced_ms : 0;
		if (age < copy_bound(kr)) {
			kv_count(kv->stale_served);
			kr->copy.value = kr->copy_val.data ? kr->copy_val.data : "";
			int live = !kr->copy.deleted &&
				   !(kr->copy.expires_ms && kr->copy.expires_ms <= now);
			serve(kr, live, &kr->copy, OUTCOME_CACHE_STALE, "stale", age);
			return;
		}
	}
	kv_count(kv->unavailable);
	if (is_write(kr))
		kv_fail(
		    kr, 503, OUTCOME_REFUSED, "state_unavailable",
		    "%s key \"%s\": the write needs the region's current record (incr or a "
		    "condition on a key cell %s does not hold) and the region is unreachable: %s",
		    mc_state_class_name(kr->cls), kr->r->key.data, kv->c->conf->cell, why);
	else if (kr->cls == MC_CLASS_REGIONAL)
		kv_fail(kr, 503, OUTCOME_REFUSED, "state_unavailable",
			"regional key \"%s\" lives in the region, which is unreachable: %s",
			kr->r->key.data, why);
	else if (kr->have_copy)
		kv_fail(
		    kr, 503, OUTCOME_REFUSED, "state_unavailable",
		    "cell %s holds a replica copy of \"%s\" older than replica_max_staleness_ms "
		    "(%u ms) and the region is unreachable: %s",
		    kv->c->conf->cell, kr->r->key.data, kr->rule->replica_max_staleness_ms, why);
	else
		kv_fail(
		    kr, 503, OUTCOME_REFUSED, "state_unavailable",
		    "cell %s holds no copy of \"%s\" it can vouch for (never synced, or "
		    "invalidated) and the region is unreachable (%s); such a key is not answered "
		    "\"not found\"",
		    kv->c->conf->cell, kr->r->key.data, why);
}

static void on_copy_stored(void *arg, const mc_write_result *res)
{
	(void)arg;
	if (res->err < 0 && res->err != MC_ECLOSED)
		MC_WARN("cell", "keeping a replica copy: %s", mc_strerror(res->err));
}

/* Keeps the region's answer (200 or 404) as a replica copy; cb (NULL: none) runs
 * once it is committed. Returns 0 or the store's error (cb not called). */
static int keep_copy(kv_req *kr, const mc_http_response *res, mc_store_result_cb cb, void *arg)
{
	size_t hl;
	char home[MC_STATE_MAX_HOME + 1] = "";
	const char *h = mc_http_header_find(res->headers, res->nheaders, "x-metrocell-home", &hl);
	if (h && hl <= MC_STATE_MAX_HOME) {
		memcpy(home, h, hl);
		home[hl] = '\0';
	}
	mc_write w = {.kind = MC_W_COPY,
		      .key = kr->r->key.data,
		      .klen = kr->r->key.len,
		      .value = res->body,
		      .vlen = res->status == 200 ? res->body_len : 0,
		      .expires_ms = kv_hdr_u64(res, "x-metrocell-expires-ms"),
		      .version = kv_hdr_u64(res, "x-metrocell-version"),
		      .home = home,
		      .deleted = res->status != 200,
		      .synced_ms = mc_wall_ms()};
	int rc = mc_store_submit(kr->kv->c->store, &w, cb ? cb : on_copy_stored, arg);
	if (rc < 0 && rc != MC_ECLOSED)
		MC_WARN("cell", "keeping a replica copy: %s", mc_strerror(rc));
	return rc;
}

static void why_of(char *why, size_t cap, int err, const mc_http_response *res)
{
	if (err < 0)
		snprintf(why, cap, "%s", mc_strerror(err));
	else
		snprintf(why, cap, "the region answered %d", res->status);
}

/* The read-through answer is sent once its copy is committed, so a client that
 * got it reads the copy next. The answer was saved in kr->copy. */
static void on_fetched_kept(void *arg, const mc_write_result *res)
{
	kv_req *kr = arg;
	(void)res; /* a failed copy costs a read-through next time, nothing more */
	kr->copy.value = kr->copy_val.data ? kr->copy_val.data : "";
	struct hdrs H;
	if (kr->copy.deleted) {
		rec_headers(&H, kr, kr->copy.version, kr->copy.home, 0);
		kv_fail_h(kr, 404, OUTCOME_REGIONAL, H.h, H.n, "not_found",
			  "no key \"%s\" in the region", kr->r->key.data);
		return;
	}
	rec_headers(&H, kr, kr->copy.version, kr->copy.home, kr->copy.expires_ms);
	hdr_add(&H, "Content-Type", "application/octet-stream");
	kv_finish(kr, 200, OUTCOME_REGIONAL, H.h, H.n, kr->copy.value, kr->copy.value_len);
}

static void on_fetched(void *arg, int err, const mc_http_response *res)
{
	kv_req *kr = arg;
	cell_kv *kv = kr->kv;
	if (err < 0 || (res->status != 200 && res->status != 404)) {
		char why[160];
		why_of(why, sizeof why, err, res);
		region_unavailable(kr, why);
		return;
	}
	kv_count(kr->cls == MC_CLASS_REGIONAL ? kv->rr_regional_key : kv->rr_read_through);
	if (is_write(kr)) {
		/* The write's condition or counter sees the region's record: the copy
		 * is queued before it, so the writer applies them in that order. */
		keep_copy(kr, res, NULL, NULL);
		kr->prefetched = 1;
		kv_submit_write(kr);
		return;
	}
	if (copy_bound(kr) > 0 && !kv->closing) {
		size_t hl;
		const char *h =
		    mc_http_header_find(res->headers, res->nheaders, "x-metrocell-home", &hl);
		memset(&kr->copy, 0, sizeof kr->copy);
		if (h && hl <= MC_STATE_MAX_HOME) {
			memcpy(kr->copy.home, h, hl);
			kr->copy.home[hl] = '\0';
		}
		kr->copy.version = kv_hdr_u64(res, "x-metrocell-version");
		kr->copy.expires_ms = kv_hdr_u64(res, "x-metrocell-expires-ms");
		kr->copy.deleted = res->status != 200;
		kr->have_copy = 0; /* not a fallback: the region's own answer */
		mc_buf_reset(&kr->copy_val);
		if (res->status == 200)
			mc_buf_append(&kr->copy_val, res->body ? res->body : "", res->body_len);
		kr->copy.value_len = kr->copy_val.len;
		if (keep_copy(kr, res, on_fetched_kept, kr) == 0)
			return;
	}
	size_t hl;
	const char *home =
	    mc_http_header_find(res->headers, res->nheaders, "x-metrocell-home", &hl);
	char hbuf[MC_STATE_MAX_HOME + 1] = "";
	if (home && hl <= MC_STATE_MAX_HOME) {
		memcpy(hbuf, home, hl);
		hbuf[hl] = '\0';
	}
	struct hdrs H;
	uint64_t version = kv_hdr_u64(res, "x-metrocell-version");
	if (res->status == 404) {
		rec_headers(&H, kr, version, hbuf, 0);
		kv_fail_h(kr, 404, OUTCOME_REGIONAL, H.h, H.n, "not_found",
			  "no key \"%s\" in the region", kr->r->key.data);
		return;
	}
	rec_headers(&H, kr, version, hbuf, kv_hdr_u64(res, "x-metrocell-expires-ms"));
	hdr_add(&H, "Content-Type", "application/octet-stream");
	kv_finish(kr, 200, OUTCOME_REGIONAL, H.h, H.n, res->body, res->body_len);
}

/* Reads the key from the region (read-through, a regional read, or the record a
 * conditional write or an incr needs). */
static void fetch(kv_req *kr)
{
	cell_kv *kv = kr->kv;
	mc_buf target;
	mc_buf_init(&target);
	kv_region_target(&target, kr->r->key.data, kr->r->key.len, NULL);
	/* The region tracks who holds a copy only when we keep one. */
	mc_http_header h = {"X-Metrocell-Copy", 16, "1", 1};
	int keep = copy_bound(kr) > 0 || is_write(kr);
	kr->r->seg_name = "region";
	kr->r->seg_start_ns = mc_now_ns();
	int rc = kv_region_call(kv, "GET", &target, &h, keep ? 1 : 0, NULL, 0,
				kr->rule->region_timeout_ms, on_fetched, kr);
	mc_buf_fini(&target);
	if (rc < 0)
		region_unavailable(kr, rc == MC_EUNAVAIL ? kv->region_err : mc_strerror(rc));
}

static const char *const relay_names[5] = {"X-Metrocell-Version", "ETag", "X-Metrocell-Home",
					   "X-Metrocell-Expires-Ms", "Content-Type"};

/* Sends the region's answer saved by on_forwarded. */
static void relay(kv_req *kr)
{
	mc_http_header h[6];
	size_t n = 0;
	h[n++] = (mc_http_header){"X-Metrocell-Class", 17, "regional", 8};
	for (size_t i = 0; i < MC_ARRAY_LEN(relay_names); i++)
		if (kr->relay_len[i])
			h[n++] = (mc_http_header){relay_names[i], strlen(relay_names[i]),
						  kr->relay_hdr[i], kr->relay_len[i]};
	kv_finish(kr, kr->relay_status, OUTCOME_REGIONAL, h, n, kr->copy_val.data,
		  kr->copy_val.len);
}

static void on_dropped_copy(void *arg, const mc_write_result *res)
{
	(void)res; /* on failure the copy still ages out within cache_ttl_ms */
	relay(arg);
}

/* Answer of the region to a forwarded regional write: relayed, after this cell's
 * cached copy (older than the write) is marked invalid, so the client's next read
 * does not see its own write undone. */
static void on_forwarded(void *arg, int err, const mc_http_response *res)
{
	kv_req *kr = arg;
	cell_kv *kv = kr->kv;
	if (err < 0 || res->status == 502 || res->status == 503 || res->status == 504) {
		char why[160];
		why_of(why, sizeof why, err, res);
		region_unavailable(kr, why);
		return;
	}
	kv_count(kv->rr_regional_key);
	kr->relay_status = res->status;
	for (size_t i = 0; i < MC_ARRAY_LEN(relay_names); i++) {
		size_t len;
		const char *v =
		    mc_http_header_find(res->headers, res->nheaders, relay_names[i], &len);
		kr->relay_len[i] = v && len <= sizeof kr->relay_hdr[i] ? len : 0;
		if (kr->relay_len[i])
			memcpy(kr->relay_hdr[i], v, len);
	}
	mc_buf_reset(&kr->copy_val);
	mc_buf_append(&kr->copy_val, res->body ? res->body : "", res->body_len);
	uint64_t version = kv_hdr_u64(res, "x-metrocell-version");
	if (res->status < 300 && version && copy_bound(kr) > 0 && !kv->closing) {
		mc_write w = {.kind = MC_W_INVALIDATE,
			      .key = kr->r->key.data,
			      .klen = kr->r->key.len,
			      .version = version};
		if (mc_store_submit(kv->c->store, &w, on_dropped_copy, kr) == 0)
			return;
	}
	relay(kr);
}

static void forward(kv_req *kr)
{
	cell_kv *kv = kr->kv;
	const mc_http_request *req = mc_http_exchange_request(kr->r->ex);
	if (kr->action == KV_GET || kr->action == KV_HEAD) {
		fetch(kr);
		return;
	}
	mc_buf target;
	mc_buf_init(&target);
	kv_region_target(&target, kr->r->key.data, kr->r->key.len,
			 kr->action == KV_INCR ? ":incr" : NULL);
	if (req->query[0]) {
		mc_buf_append_str(&target, "?");
		mc_buf_append_str(&target, req->query);
	}
	mc_http_header h[2];
	size_t n = 0, len;
	const char *v;
	if ((v = mc_http_header_find(req->headers, req->nheaders, "if-match", &len)) != NULL)
		h[n++] = (mc_http_header){"If-Match", 8, v, len};
	if ((v = mc_http_header_find(req->headers, req->nheaders, "if-none-match", &len)) != NULL)
		h[n++] = (mc_http_header){"If-None-Match", 13, v, len};
	const char *method = kr->action == KV_PUT   ? "PUT"
			     : kr->action == KV_DEL ? "DELETE"
						    : "POST";
	kr->r->seg_name = "region";
	kr->r->seg_start_ns = mc_now_ns();
	int rc = kv_region_call(kv, method, &target, h, n, req->body, req->body_len,
				kr->rule->region_timeout_ms, on_forwarded, kr);
	mc_buf_fini(&target);
	if (rc < 0)
		region_unavailable(kr, rc == MC_EUNAVAIL ? kv->region_err : mc_strerror(rc));
}

/* ---- reads -------------------------------------------------------------------------------- */

static void kv_read(kv_req *kr)
{
	cell_kv *kv = kr->kv;
	mc_record rec;
	mc_buf val;
	mc_buf_init(&val);
	kr->r->seg_name = "state";
	kr->r->seg_start_ns = mc_now_ns();
	int rc = mc_store_get(kv->c->store, kr->r->key.data, kr->r->key.len, &rec, &val);
	if (rc < 0 && rc != MC_ENOTFOUND) {
		kv_fail(kr, 500, OUTCOME_LOCAL, "store_error", "reading the store: %s",
			mc_strerror(rc));
		goto out;
	}
	int live = rc == 0;
	if (kr->cls == MC_CLASS_LOCAL ||
	    (kr->cls == MC_CLASS_REPLICATED && rec.found && !rec.replica && !rec.invalid)) {
		/* Local keys, and replicated ones written here: this cell's answer. */
		serve(kr, live, &rec, OUTCOME_LOCAL, NULL, 0);
		goto out;
	}
	if (rec.found && rec.replica) {
		uint64_t now = mc_wall_ms();
		uint64_t age = now > rec.synced_ms ? now - rec.synced_ms : 0;
		uint64_t up = kv_link_up_since(kv);
		/* Fresh: within the bound and, for replicated keys, synced while the
		 * invalidation channel has been up (no INVALIDATE can have been missed). */
		int fresh = age < copy_bound(kr) &&
			    (kr->cls == MC_CLASS_REGIONAL || (up && rec.synced_ms >= up));
		if (fresh) {
			serve(kr, live, &rec, OUTCOME_LOCAL, "fresh", age);
			goto out;
		}
		if (age < copy_bound(kr)) {
			kr->have_copy = 1;
			kr->copy = rec;
			mc_buf_append(&kr->copy_val, val.data ? val.data : "", val.len);
		}
	}
	if (kr->cls == MC_CLASS_REPLICATED && !kv->region) {
		/* No region.http: this cell's own view is all there is. */
		serve(kr, 0, &rec, OUTCOME_LOCAL, NULL, 0);
		goto out;
	}
	fetch(kr);
out:
	mc_buf_fini(&val);
}

/* ---- writes ---------------------------------------------------------------------------------- */

void kv_answer_written(kv_req *kr, const mc_write_result *res, int acked)
{
	cell_kv *kv = kr->kv;
	const char *home = kv->c->conf->cell;
	char num[24];
	mc_buf b;
	mc_buf_init(&b);
	/* Sized for the usual answer at once (keys needing no escapes). */
	mc_buf_reserve(&b, 160 + kr->r->key.len + strlen(home));
	mc_buf_append(&b, "{\"key\":", 7);
	mc_buf_append_json(&b, kr->r->key.data, kr->r->key.len);
	mc_buf_append(&b, ",\"version\":\"", 12);
	mc_buf_append(&b, num, fmt_u64(num, res->version));
	mc_buf_append(&b, "\",\"seq\":", 8);
	mc_buf_append(&b, num, fmt_u64(num, res->seq));
	mc_buf_append(&b, ",\"home\":", 8);
	mc_buf_append_json(&b, home, strlen(home));
	mc_buf_append_str(&b, ",\"class\":\"");
	mc_buf_append_str(&b, mc_state_class_name(kr->cls));
	mc_buf_append_str(&b, acked ? "\",\"ack\":\"region\"" : "\",\"ack\":\"local\"");
	if (kr->action == KV_DEL)
		mc_buf_printf(&b, ",\"deleted\":true,\"existed\":%s",
			      res->prev_version && res->prev_home[0] ? "true" : "false");
	if (kr->action == KV_INCR)
		mc_buf_printf(&b, ",\"value\":%lld", (long long)res->counter);
	if (res->expires_ms && kr->action != KV_DEL)
		mc_buf_printf(&b, ",\"expires_ms\":%llu", (unsigned long long)res->expires_ms);
	mc_buf_append_str(&b, "}\n");
	struct hdrs H;
	rec_headers(&H, kr, res->version, home, kr->action == KV_DEL ? 0 : res->expires_ms);
	hdr_add(&H, "Content-Type", "application/json");
	kv_finish(kr, 200, OUTCOME_LOCAL, H.h, H.n, b.data, b.len);
	mc_buf_fini(&b);
}

static void on_written(void *arg, const mc_write_result *res)
{
	kv_req *kr = arg;
	struct hdrs H;
	switch (res->err) {
	case 0:
		break;
	case MC_ECONFLICT:
		rec_headers(&H, kr, res->version, NULL, 0);
		if (res->version)
			kv_fail_h(kr, 412, OUTCOME_LOCAL, H.h, H.n, "precondition_failed",
				  "\"%s\" is at version %llu: the condition (If-Match / "
				  "If-None-Match) does not hold",
				  kr->r->key.data, (unsigned long long)res->version);
		else
			kv_fail_h(kr, 412, OUTCOME_LOCAL, H.h, H.n, "precondition_failed",
				  "\"%s\" does not exist in cell %s: the condition (If-Match) does "
				  "not hold",
				  kr->r->key.data, kr->kv->c->conf->cell);
		return;
	case MC_ENOTFOUND:
		kv_fail(kr, 404, OUTCOME_LOCAL, "not_found", "no key \"%s\" in cell %s",
			kr->r->key.data, kr->kv->c->conf->cell);
		return;
	case MC_EINVAL:
		kv_fail(kr, 409, OUTCOME_LOCAL, "not_a_counter",
			"\"%s\" holds a value that is not a decimal 64-bit integer",
			kr->r->key.data);
		return;
	case MC_ETOOBIG:
		kv_fail(
		    kr, 409, OUTCOME_LOCAL, "counter_overflow",
		    "adding %lld to \"%s\" would overflow a signed 64-bit integer; the counter is "
		    "unchanged",
		    (long long)kr->delta, kr->r->key.data);
		return;
	case MC_EFULL:
		kv_fail(kr, 507, OUTCOME_LOCAL, "store_full",
			"the hot-state store is full (state.map_size_mb)");
		return;
	default:
		kv_fail(kr, 500, OUTCOME_LOCAL, "store_error", "write failed: %s",
			mc_strerror(res->err));
		return;
	}
	if (kr->cls == MC_CLASS_REPLICATED && kr->rule->ack_region)
		kv_ack_wait(kr, res);
	else
		kv_answer_written(kr, res, 0);
}

static void kv_submit_write(kv_req *kr)
{
	cell_kv *kv = kr->kv;
	const mc_http_request *req = mc_http_exchange_request(kr->r->ex);
	mc_write w = {.key = kr->r->key.data,
		      .klen = kr->r->key.len,
		      .flags = MC_W_LOG | kr->cond,
		      .if_version = kr->if_version,
		      .delta = kr->delta};
	if (kr->qp.has_ttl)
		w.expires_ms = mc_wall_ms() + kr->qp.ttl_ms;
	switch (kr->action) {
	case KV_PUT:
		w.kind = MC_W_PUT;
		w.value = req->body;
		w.vlen = req->body_len;
		break;
	case KV_DEL:
		w.kind = MC_W_DEL;
		/* A local key's absence is certain; a replicated one may exist in the
		 * region, so its delete always leaves a tombstone to ship. */
		if (kr->cls == MC_CLASS_LOCAL)
			w.flags |= MC_W_MUST_EXIST;
		break;
	default:
		w.kind = MC_W_INCR;
		break;
	}
	kr->r->seg_name = "state";
	kr->r->seg_start_ns = mc_now_ns();
	int rc = mc_store_submit(kv->c->store, &w, on_written, kr);
	if (rc == MC_ETOOBIG)
		kv_fail(kr, 413, OUTCOME_LOCAL, "value_too_large",
			"value of %zu bytes is over the store's limit", w.vlen);
	else if (rc == MC_EFULL)
		kv_fail(kr, 503, OUTCOME_LOCAL, "overloaded",
			"too many writes are waiting for the disk; retry later");
	else if (rc == MC_ECLOSED)
		kv_fail(kr, 503, OUTCOME_LOCAL, "shutting_down",
			"the cell is stopping; retry on another node");
	else if (rc < 0)
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_key", "key rejected by the store: %s",
			mc_strerror(rc));
}

static void kv_write(kv_req *kr)
{
	cell_kv *kv = kr->kv;
	if (kr->cls == MC_CLASS_REGIONAL) {
		forward(kr);
		return;
	}
	if (kr->cls == MC_CLASS_REPLICATED) {
		char why[200];
		if (kv_backlog_full(kv, why, sizeof why)) {
			kv_count(kv->backlog_refused);
			kv_fail(kr, 503, OUTCOME_REFUSED, "backlog_full",
				"replicated writes are refused until the region catches up: %s; "
				"nothing was written (local-class keys are still accepted)",
				why);
			return;
		}
		/* incr and conditions need the current record: when this cell has none,
		 * it is read from the region first. */
		int needs = kr->action == KV_INCR || kr->if_version || kr->cond;
		if (needs && kv->region && !kr->prefetched) {
			mc_record rec;
			int rc =
			    mc_store_get(kv->c->store, kr->r->key.data, kr->r->key.len, &rec, NULL);
			if ((rc == 0 || rc == MC_ENOTFOUND) && (!rec.found || rec.invalid)) {
				fetch(kr);
				return;
			}
		}
	}
	kv_submit_write(kr);
}

/* ---- request parsing ----------------------------------------------------------------------- */

static int valid_key(const mc_buf *k)
{
	for (size_t i = 0; i < k->len; i++) {
		unsigned char ch = (unsigned char)k->data[i];
		if (ch <= 0x20 || ch == 0x7f)
			return 0;
	}
	return 1;
}

/* Decodes and checks the key of kr (raw, rawlen) into r->key; answers 400 itself. */
static int parse_key(kv_req *kr)
{
	cell_req *r = kr->r;
	const mc_state_conf *sc = &r->c->conf->state;
	if (kr->rawlen == 0) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_key", "missing key: use %s{key}",
			r->route->conf->prefix);
		return -1;
	}
	if (mc_http_percent_decode(kr->raw, kr->rawlen, &r->key) < 0) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_key", "malformed percent-encoding in the key");
		return -1;
	}
	if (r->key.len > sc->max_key_bytes) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_key",
			"key of %zu bytes is over the limit of %u bytes", r->key.len,
			(unsigned)sc->max_key_bytes);
		return -1;
	}
	if (!valid_key(&r->key)) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_key",
			"keys may not contain spaces or control characters");
		return -1;
	}
	return 0; /* mc_buf keeps a NUL after the key, for messages */
}

/* Query and conditional headers; answers 400 itself. */
static int parse_params(kv_req *kr, const mc_http_request *req)
{
	char err[160];
	if (mc_kv_query_parse(req->query, &kr->qp, err, sizeof err) < 0) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_request", "%s", err);
		return -1;
	}
	if (kr->qp.has_ttl && kr->action != KV_PUT && kr->action != KV_INCR) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_request", "ttl applies to PUT and incr only");
		return -1;
	}
	if (kr->qp.has_by && kr->action != KV_INCR) {
		kv_fail(kr, 400, OUTCOME_LOCAL, "bad_request", "by applies to incr only");
		return -1;
	}
	if (!is_write(kr))
		return 0;
	size_t len;
	const char *v = mc_http_header_find(req->headers, req->nheaders, "if-match", &len);
	if (v) {
		int star;
		if (mc_kv_version_parse(v, len, &kr->if_version, &star) < 0) {
			kv_fail(kr, 400, OUTCOME_LOCAL, "bad_request",
				"If-Match must be * or one version (as in X-Metrocell-Version or "
				"ETag)");
			return -1;
		}
		if (star)
			kr->cond |= MC_W_IF_PRESENT;
	}
	v = mc_http_header_find(req->headers, req->nheaders, "if-none-match", &len);
	if (v) {
		uint64_t ver;
		int star = 0;
		if (mc_kv_version_parse(v, len, &ver, &star) < 0 || !star) {
			kv_fail(kr, 400, OUTCOME_LOCAL, "bad_request",
				"If-None-Match on a write must be * (create only)");
			return -1;
		}
		kr->cond |= MC_W_IF_ABSENT;
	}
	if (kr->action == KV_INCR) {
		kr->delta = 1;
		if (kr->qp.has_by)
			kr->delta = kr->qp.by;
		if (req->body_len) {
			if (kr->qp.has_by ||
			    mc_kv_i64_parse(req->body, req->body_len, &kr->delta) < 0) {
				kv_fail(kr, 400, OUTCOME_LOCAL, "bad_delta",
					"the delta is one signed 64-bit integer, in the body or in "
					"?by=, not both");
				return -1;
			}
		}
	}
	return 0;
}

void mc_cell_kv_handle(cell_req *r)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	const mc_state_conf *sc = &r->c->conf->state;
	kv_req *kr = kv_req_new(r);
	kr->raw = req->path + r->route->prefix_len;
	kr->rawlen = req->path_len - r->route->prefix_len;
	if (strcmp(req->method, "GET") == 0) {
		kr->action = KV_GET;
	} else if (strcmp(req->method, "HEAD") == 0) {
		kr->action = KV_HEAD; /* the HTTP layer sends no body for HEAD */
	} else if (strcmp(req->method, "PUT") == 0) {
		kr->action = KV_PUT;
	} else if (strcmp(req->method, "DELETE") == 0) {
		kr->action = KV_DEL;
	} else if (strcmp(req->method, "POST") == 0 && kr->rawlen > 5 &&
		   memcmp(kr->raw + kr->rawlen - 5, ":incr", 5) == 0) {
		kr->action = KV_INCR;
		kr->rawlen -= 5;
	} else {
		mc_http_header allow = {"Allow", 5, "GET, HEAD, PUT, DELETE, POST", 28};
		kv_fail_h(kr, 405, OUTCOME_LOCAL, &allow, 1, "method_not_allowed",
			  "%.16s is not allowed on the KV API (POST only as %s{key}:incr)",
			  req->method, r->route->conf->prefix);
		return;
	}
	if (parse_key(kr) < 0 || parse_params(kr, req) < 0)
		return;
	kr->cls = kv_class_of(kr->kv, r->key.data, r->key.len, &kr->rule);
	if (kr->action == KV_PUT && req->body_len > sc->max_value_bytes) {
		kv_fail(kr, 413, OUTCOME_LOCAL, "value_too_large",
			"value of %zu bytes is over the limit of %u bytes", req->body_len,
			(unsigned)sc->max_value_bytes);
		return;
	}
	if (kr->action == KV_GET || kr->action == KV_HEAD)
		kv_read(kr);
	else
		kv_write(kr);
}

/* ---- multi-get route ------------------------------------------------------------------------ */

cell_route *mc_cell_kv_mget_route(cell_snapshot *s, const char *path, size_t len)
{
	if (len < 7 || memcmp(path + len - 5, ":mget", 5) != 0)
		return NULL;
	for (size_t i = 0; i < s->nroutes; i++) {
		cell_route *rt = &s->routes[i];
		size_t pl = rt->prefix_len;
		if (rt->conf->kind != MC_ROUTE_KV || pl < 2 || rt->conf->prefix[pl - 1] != '/')
			continue;
		if (len == pl - 1 + 5 && memcmp(path, rt->conf->prefix, pl - 1) == 0)
			return rt;
	}
	return NULL;
}

void mc_cell_kv_mget(cell_req *r)
{
	kv_req *kr = kv_req_new(r);
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	kr->action = KV_MGET;
	if (strcmp(req->method, "POST") != 0) {
		mc_http_header allow = {"Allow", 5, "POST", 4};
		kv_fail_h(kr, 405, OUTCOME_LOCAL, &allow, 1, "method_not_allowed",
			  "the multi-get takes POST with {\"keys\": [...]}");
		return;
	}
	kv_mget_handle(kr);
}
