/* The cache engine of one tier: for each request, a lookup, then a fresh hit, a
 * stale answer with one background refresh (stale-while-revalidate), or a fill
 * through the upstream that concurrent misses of the same key wait on; 304s renew
 * stored objects; upstream failures are answered stale within stale-if-error.
 * It runs on one loop thread; the store it shares is thread-safe. The upstream is
 * a callback, so the cell (upstream: the region's shield) and the region
 * (upstream: the origin) run the same code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"

#define MAX_RESTARTS 2 /* a collapsed waiter that cannot share the result tries again */

const char *const mc_cache_result_names[MC_CACHE_RESULT_COUNT] = {"hit", "stale", "miss", "pass"};

struct mc_cache_engine {
	mc_cache *store;
	mc_cache_engine_opts o;
	mc_cache_engine_stats st;
	size_t inflight; /* fetches whose callback has not run */
};

/* One client request until it is answered. */
typedef struct ereq {
	mc_cache_engine *e;
	const mc_cache_request *req;
	mc_cache_answer_cb cb;
	void *arg;
	mc_buf pk;	     /* primary key */
	mc_cache_obj *stale; /* a stored object that was not fresh: validators, stale-if-error */
	int restarts;
	bool head, authorized;
	bool on_stack; /* a fresh hit answered at once: lives in mc_cache_engine_handle */
} ereq;

enum { F_FILL, F_REFRESH, F_PASS };

/* One upstream request. It copies what it needs from the client request, since
 * a background refresh outlives the request that started it. */
typedef struct fetch {
	mc_cache_engine *e;
	ereq *er; /* NULL for a background refresh */
	mc_cache_fill *fill;
	mc_cache_obj *stale;
	int kind;
	int64_t request_ms;
	uint64_t purge_gen; /* the store's purge generation when the fetch began */
	char *host, *target;
	size_t host_len;
	mc_cache_header *hdrs; /* copy of the client's headers (Vary values) */
	size_t nhdrs;
	char *arena;
	bool authorized;
	mc_buf pk;
} fetch;

static void lookup(ereq *er);
static void pass_start(ereq *er);

static int64_t now_ms(const mc_cache_engine *e)
{
	return e->o.clock_ms ? e->o.clock_ms(e->o.clock_arg) : (int64_t)mc_wall_ms();
}

int mc_cache_engine_new(mc_cache_engine **out, mc_cache *store, const mc_cache_engine_opts *o)
{
	*out = NULL;
	if (!store || !o || !o->fetch || !o->tier)
		return MC_EINVAL;
	mc_cache_engine *e = mc_calloc(1, sizeof *e);
	e->store = store;
	e->o = *o;
	*out = e;
	return 0;
}

void mc_cache_engine_free(mc_cache_engine *e)
{
	if (!e)
		return;
	MC_ASSERT(e->inflight == 0);
	free(e);
}

void mc_cache_engine_stats_get(const mc_cache_engine *e, mc_cache_engine_stats *out)
{
	*out = e->st;
}

/* ---- answers ------------------------------------------------------------------------------ */

static void ereq_free(ereq *er)
{
	mc_cache_obj_unref(er->stale);
	mc_buf_fini(&er->pk);
	if (!er->on_stack)
		free(er);
}

static void deliver(ereq *er, mc_cache_answer *a)
{
	mc_cache_engine *e = er->e;
	e->st.results[a->result]++;
	/* "RESULT; tier=TIER" (or "RESULT" on an error), on every answer: no printf */
	const char *rn = mc_cache_result_names[a->result];
	size_t rl = strlen(rn), tl = a->err == 0 ? strlen(a->tier) : 0;
	if (rl + 7 + tl >= sizeof a->cache_status)
		tl = 0;
	memcpy(a->cache_status, rn, rl);
	if (tl) {
		memcpy(a->cache_status + rl, "; tier=", 7);
		memcpy(a->cache_status + rl + 7, a->tier, tl);
		rl += 7 + tl;
	}
	a->cache_status[rl] = '\0';
	er->cb(er->arg, a);
	ereq_free(er);
}

/* Answers from a stored (or just filled) object. from_cache: the body did not
 * cross the upstream for this request (hit, stale, collapsed, revalidated). */
static void answer_obj_at(ereq *er, mc_cache_obj *o, mc_cache_result result, const char *tier,
			  bool from_cache, bool upstream, bool collapsed, int64_t now)
{
	mc_cache_engine *e = er->e;
	mc_cache_answer a;
	memset(&a, 0, sizeof a);
	a.result = result;
	a.status = o->status;
	a.headers = o->headers;
	a.nheaders = o->nheaders;
	a.head = o->head;
	a.head_len = o->head_len;
	a.body = o->body;
	a.body_len = o->body_len;
	a.age_s = mc_cache_obj_age_ms(o, now) / 1000;
	a.tier = tier;
	a.upstream = upstream;
	a.collapsed = collapsed;
	if (mc_cache_obj_not_modified(o, er->req->headers, er->req->nheaders)) {
		a.status = 304;
		a.body = NULL;
		a.body_len = 0;
	}
	if (from_cache && !er->head)
		e->st.bytes_avoided += a.body_len;
	if (collapsed)
		e->st.collapsed++;
	deliver(er, &a);
}

static void answer_obj(ereq *er, mc_cache_obj *o, mc_cache_result result, const char *tier,
		       bool from_cache, bool upstream, bool collapsed)
{
	answer_obj_at(er, o, result, tier, from_cache, upstream, collapsed, now_ms(er->e));
}

/* Tier named by an upstream's "X-Metrocell-Cache: RESULT; tier=NAME" (the
 * origin itself sends none); *stale when RESULT is "stale". */
static const char *upstream_tier(const mc_cache_response *res, bool *stale)
{
	*stale = false;
	size_t n;
	const char *v = mc_cache_header_find(res->headers, res->nheaders, "x-metrocell-cache", &n);
	if (!v)
		return "origin";
	*stale = n >= 5 && memcmp(v, "stale", 5) == 0;
	static const char *const tiers[] = {"cell", "shield", "origin"};
	for (size_t i = 0; i + 5 <= n; i++) {
		if (memcmp(v + i, "tier=", 5) != 0)
			continue;
		const char *t = v + i + 5;
		size_t tl = 0;
		while (i + 5 + tl < n && t[tl] != ';' && t[tl] != ',' && t[tl] != ' ')
			tl++;
		for (size_t k = 0; k < MC_ARRAY_LEN(tiers); k++)
			if (mc_cache_token_eq(t, tl, tiers[k]))
				return tiers[k];
	}
	return "origin";
}

/* Relays an upstream response that is not stored (pass, unshareable, 5xx). */
static void answer_response(ereq *er, const mc_cache_response *res, mc_cache_result result)
{
	bool st;
	mc_cache_header *h = mc_alloc((res->nheaders + 1) * sizeof *h);
	size_t n = 0;
	for (size_t i = 0; i < res->nheaders; i++) {
		/* a HEAD keeps the length a GET would have had (its body is empty) */
		bool head_len =
		    er->head && mc_cache_token_eq(res->headers[i].name, res->headers[i].name_len,
						  "content-length");
		if (head_len || mc_cache_header_relayable(res->headers, res->nheaders, i))
			h[n++] = res->headers[i];
	}
	mc_cache_answer a;
	memset(&a, 0, sizeof a);
	a.result = result;
	a.status = res->status;
	a.headers = h;
	a.nheaders = n;
	a.body = res->body;
	a.body_len = res->body_len;
	a.age_s = -1;
	a.tier = upstream_tier(res, &st);
	a.upstream = true;
	deliver(er, &a);
	free(h);
}

static void answer_err(ereq *er, int err)
{
	mc_cache_answer a;
	memset(&a, 0, sizeof a);
	a.result = MC_CACHE_MISS;
	a.err = err;
	a.age_s = -1;
	a.tier = "none";
	a.upstream = true;
	deliver(er, &a);
}

/* The failure policy of a cacheable request: stale within stale-if-error, else
 * the error. */
static void answer_failure(ereq *er, int err, const mc_cache_response *res)
{
	mc_cache_engine *e = er->e;
	if (er->stale && mc_cache_stale_if_error_ok(&er->stale->fresh,
						    mc_cache_obj_age_ms(er->stale, now_ms(e)))) {
		e->st.stale_on_error++;
		answer_obj(er, er->stale, MC_CACHE_STALE, e->o.tier, true, true, false);
	} else if (res) {
		answer_response(er, res, MC_CACHE_MISS);
	} else {
		answer_err(er, err);
	}
}

/* ---- upstream ------------------------------------------------------------------------------- */

static bool conditional_or_range(const mc_cache_header *h)
{
	static const char *const names[] = {"if-none-match",	   "if-modified-since", "if-match",
					    "if-unmodified-since", "if-range",		"range"};
	for (size_t i = 0; i < MC_ARRAY_LEN(names); i++)
		if (mc_cache_token_eq(h->name, h->name_len, names[i]))
			return true;
	return false;
}

static void fetch_free(fetch *f)
{
	f->e->inflight--;
	mc_cache_obj_unref(f->stale);
	mc_buf_fini(&f->pk);
	free(f->hdrs);
	free(f->arena);
	free(f);
}

static void on_fetched(void *arg, int err, const mc_cache_response *res);

/* Starts an upstream request of the given kind for req (er may be NULL). */
static void fetch_start(mc_cache_engine *e, ereq *er, const mc_cache_request *req, const char *pk,
			size_t pk_len, mc_cache_fill *fill, mc_cache_obj *stale, int kind)
{
	fetch *f = mc_calloc(1, sizeof *f);
	e->inflight++;
	f->e = e;
	f->er = er;
	f->fill = fill;
	f->stale = stale ? mc_cache_obj_ref(stale) : NULL;
	f->kind = kind;
	f->request_ms = now_ms(e);
	f->purge_gen = mc_cache_purge_generation(e->store);
	f->authorized = er ? er->authorized : false;
	mc_buf_init(&f->pk);
	mc_buf_append(&f->pk, pk, pk_len);
	/* copies of host, target and the client's fields, for the key of what comes back */
	size_t tl = strlen(req->target), bytes = req->host_len + tl + 2;
	for (size_t i = 0; i < req->nheaders; i++)
		bytes += req->headers[i].name_len + req->headers[i].value_len;
	f->arena = mc_alloc(bytes);
	f->hdrs = mc_alloc((req->nheaders + 1) * sizeof *f->hdrs);
	char *p = f->arena;
	memcpy(p, req->host, req->host_len);
	f->host = p;
	f->host_len = req->host_len;
	p += req->host_len;
	*p++ = '\0';
	memcpy(p, req->target, tl + 1);
	f->target = p;
	p += tl + 1;
	for (size_t i = 0; i < req->nheaders; i++) {
		const mc_cache_header *h = &req->headers[i];
		memcpy(p, h->name, h->name_len);
		f->hdrs[i].name = p;
		f->hdrs[i].name_len = h->name_len;
		p += h->name_len;
		if (h->value_len)
			memcpy(p, h->value, h->value_len);
		f->hdrs[i].value = p;
		f->hdrs[i].value_len = h->value_len;
		p += h->value_len;
	}
	f->nhdrs = req->nheaders;
	if (!f->authorized && kind == F_REFRESH)
		f->authorized = mc_cache_header_find(req->headers, req->nheaders, "authorization",
						     NULL) != NULL;

	/* What goes upstream: a pass as it came; a fill or refresh as a plain GET with
	 * our own validators in place of the client's conditionals. */
	if (req->fwd_prepare)
		req->fwd_prepare(req->fwd_arg);
	mc_cache_header *up = mc_alloc((req->nfwd + 2) * sizeof *up);
	size_t n = 0;
	for (size_t i = 0; i < req->nfwd; i++)
		if (kind == F_PASS || !conditional_or_range(&req->fwd[i]))
			up[n++] = req->fwd[i];
	if (kind != F_PASS && stale)
		n += mc_cache_obj_validators(stale, up + n);
	const char *method = kind == F_PASS ? req->method : "GET";
	e->st.fetches++;
	int rc = e->o.fetch(e->o.fetch_ctx, method, req->target, up, n,
			    kind == F_PASS ? req->body : NULL, kind == F_PASS ? req->body_len : 0,
			    on_fetched, f);
	free(up);
	if (rc < 0)
		on_fetched(f, rc, NULL);
}

static bool unsafe_method(const char *m)
{
	return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "OPTIONS") != 0 &&
	       strcmp(m, "TRACE") != 0;
}

static void pass_done(fetch *f, int err, const mc_cache_response *res)
{
	ereq *er = f->er;
	if (err < 0) {
		f->e->st.upstream_errors++;
		answer_err(er, err);
		return;
	}
	/* RFC 9111 section 4.4: a successful unsafe request invalidates the target. */
	if (unsafe_method(er->req->method) && res->status < 400)
		mc_cache_remove(f->e->store, f->pk.data, f->pk.len);
	answer_response(er, res, MC_CACHE_PASS);
}

/* Builds the object a full upstream response makes (not stored yet). *why is
 * NULL when it may be stored. An unstorable response gets no object unless
 * error_share is set: then a 5xx that is not private is built to be shared with
 * the waiters of the fill (never stored). */
static mc_cache_obj *object_of(fetch *f, const mc_cache_response *res, int64_t now,
			       const char *tier, bool error_share, const char **why)
{
	mc_cache_meta m;
	mc_cache_meta_parse(res->headers, res->nheaders, &m);
	mc_cache_freshness fr;
	mc_cache_freshness_get(&m, res->status, now, &fr);
	*why = mc_cache_unstorable(res->status, &m, &fr, f->authorized);
	if (res->body_len > mc_cache_options(f->e->store)->max_object_bytes)
		*why = "too-big";
	bool private_error = m.cc.no_store || m.cc.is_private || m.set_cookie || m.vary_star;
	if (*why &&
	    !(error_share && res->status >= 500 && !private_error && strcmp(*why, "too-big") != 0))
		return NULL;
	mc_buf vary, key;
	mc_buf_init(&vary);
	mc_buf_init(&key);
	mc_cache_obj *o = NULL;
	if (mc_cache_vary_names(res->headers, res->nheaders, &vary) < 0) {
		*why = "vary-star";
		goto out;
	}
	size_t pl;
	mc_cache_key_build(&key, &pl, f->host, f->host_len, f->target, strlen(f->target), vary.data,
			   vary.len, f->hdrs, f->nhdrs);
	mc_cache_obj_spec s = {
	    .key = key.data,
	    .key_len = key.len,
	    .primary_len = pl,
	    .vary = vary.data,
	    .vary_len = vary.len,
	    .status = res->status,
	    .headers = res->headers,
	    .nheaders = res->nheaders,
	    .body = res->body,
	    .body_len = res->body_len,
	    .times = {.request_ms = f->request_ms, .response_ms = now},
	    .tier = tier,
	};
	if (mc_cache_obj_new(&s, &o) < 0) {
		o = NULL;
		*why = "invalid";
	}
out:
	mc_buf_fini(&vary);
	mc_buf_fini(&key);
	return o;
}

static void on_fetched(void *arg, int err, const mc_cache_response *res)
{
	fetch *f = arg;
	mc_cache_engine *e = f->e;
	ereq *er = f->er;
	if (f->kind == F_PASS) {
		pass_done(f, err, res);
		fetch_free(f);
		return;
	}
	int64_t now = now_ms(e);
	bool up_stale = false;
	const char *tier = res ? upstream_tier(res, &up_stale) : "none";

	if (err < 0 || res->status >= 500) {
		/* A 5xx may be shared with the waiters unless it is private; each of them
		 * (and this request) prefers its own stale copy within stale-if-error. */
		e->st.upstream_errors++;
		mc_cache_obj *shared = NULL;
		const char *why = NULL;
		if (err == 0)
			shared = object_of(f, res, now, tier, true, &why);
		if (f->fill)
			mc_cache_fill_end(e->store, f->fill,
					  err < 0  ? err
					  : shared ? 0
						   : MC_EAGAIN,
					  shared);
		if (er)
			answer_failure(er, err, err < 0 ? NULL : res);
		mc_cache_obj_unref(shared);
		fetch_free(f);
		return;
	}

	if (res->status == 304 && f->stale) {
		mc_cache_times t = {.request_ms = f->request_ms, .response_ms = now};
		mc_cache_obj *o = NULL;
		if (mc_cache_obj_revalidated(f->stale, res->headers, res->nheaders, &t, &o) == 0) {
			mc_cache_obj_set_upstream_stale(o, up_stale);
			if (mc_cache_purge_generation(e->store) == f->purge_gen)
				mc_cache_insert(e->store, o); /* a rejection still answers once */
			e->st.revalidated++;
		}
		if (f->fill)
			mc_cache_fill_end(e->store, f->fill, o ? 0 : MC_EAGAIN, o);
		if (er && o)
			answer_obj(er, o, up_stale ? MC_CACHE_STALE : MC_CACHE_MISS, tier, true,
				   true, false);
		else if (er)
			answer_response(er, res, MC_CACHE_PASS);
		mc_cache_obj_unref(o);
		fetch_free(f);
		return;
	}

	const char *why = NULL;
	mc_cache_obj *o = res->status == 304 ? NULL : object_of(f, res, now, tier, false, &why);
	if (o && !why) {
		mc_cache_obj_set_upstream_stale(o, up_stale);
		/* purged while in flight: answered and shared, not stored */
		if (mc_cache_purge_generation(e->store) == f->purge_gen &&
		    mc_cache_insert(e->store, o) < 0)
			why = "too-big";
	}
	if (o && !why) {
		if (f->fill)
			mc_cache_fill_end(e->store, f->fill, 0, o);
		if (er)
			answer_obj(er, o, up_stale ? MC_CACHE_STALE : MC_CACHE_MISS, tier, false,
				   true, false);
	} else {
		if (f->fill)
			mc_cache_fill_end(e->store, f->fill, MC_EAGAIN, NULL);
		if (er)
			answer_response(er, res, MC_CACHE_PASS);
	}
	mc_cache_obj_unref(o);
	fetch_free(f);
}

/* ---- request flow ---------------------------------------------------------------------------- */

/* A collapsed request learns the outcome of the fill it waited on. */
static void on_waiter(void *arg, int err, mc_cache_obj *o)
{
	ereq *er = arg;
	mc_cache_engine *e = er->e;
	bool shareable = err == 0 && o &&
			 mc_cache_obj_vary_match(o, er->req->headers, er->req->nheaders) &&
			 (!er->authorized || o->auth_ok);
	if (err == MC_EAGAIN || (err == 0 && !shareable)) {
		if (++er->restarts > MAX_RESTARTS) {
			pass_start(er);
			return;
		}
		mc_cache_obj_unref(er->stale);
		er->stale = NULL;
		lookup(er);
		return;
	}
	if (err < 0) {
		answer_failure(er, err, NULL);
		return;
	}
	if (o->status >= 500) {
		if (er->stale &&
		    mc_cache_stale_if_error_ok(&er->stale->fresh,
					       mc_cache_obj_age_ms(er->stale, now_ms(e)))) {
			e->st.stale_on_error++;
			answer_obj(er, er->stale, MC_CACHE_STALE, e->o.tier, true, true, false);
		} else {
			answer_obj(er, o, MC_CACHE_MISS, o->tier, true, true, true);
		}
		return;
	}
	answer_obj(er, o, o->upstream_stale ? MC_CACHE_STALE : MC_CACHE_MISS, o->tier, true, true,
		   true);
}

static void pass_start(ereq *er)
{
	const mc_cache_request *q = er->req;
	if (er->pk.len == 0) {
		size_t pl;
		mc_cache_key_build(&er->pk, &pl, q->host, q->host_len, q->target, strlen(q->target),
				   NULL, 0, NULL, 0);
	}
	fetch_start(er->e, er, q, er->pk.data, er->pk.len, NULL, NULL, F_PASS);
}

static void start_refresh(mc_cache_engine *e, const mc_cache_request *req, const char *pk,
			  size_t pk_len, mc_cache_obj *stale)
{
	mc_cache_fill *fill;
	if (mc_cache_fill_begin(e->store, pk, pk_len, NULL, NULL, &fill) != MC_CACHE_FILL_LEADER)
		return; /* a fill or refresh of this key is already running */
	e->st.refreshes++;
	fetch_start(e, NULL, req, pk, pk_len, fill, stale, F_REFRESH);
}

/* Serves what the lookup of er's primary key (in er->pk) found at now: o (a
 * reference, taken over), or NULL. */
static void lookup_found(ereq *er, mc_cache_obj *o, int64_t now)
{
	mc_cache_engine *e = er->e;
	const mc_cache_request *q = er->req;
	if (o && er->authorized && !o->auth_ok) {
		mc_cache_obj_unref(o);
		o = NULL;
	}
	if (o) {
		int64_t age = mc_cache_obj_age_ms(o, now);
		if (mc_cache_is_fresh(&o->fresh, age)) {
			answer_obj_at(er, o, MC_CACHE_HIT, e->o.tier, true, false, false, now);
			mc_cache_obj_unref(o);
			return;
		}
		if (mc_cache_stale_while_revalidate_ok(&o->fresh, age)) {
			/* The refresh copies the request before the answer frees it. */
			start_refresh(e, q, er->pk.data, er->pk.len, o);
			answer_obj_at(er, o, MC_CACHE_STALE, e->o.tier, true, false, false, now);
			mc_cache_obj_unref(o);
			return;
		}
		er->stale = o;
	}
	mc_cache_fill *fill = NULL;
	int rc = mc_cache_fill_begin(e->store, er->pk.data, er->pk.len, on_waiter, er, &fill);
	if (rc == MC_CACHE_FILL_LEADER)
		fetch_start(e, er, q, er->pk.data, er->pk.len, fill, er->stale, F_FILL);
	else if (rc < 0)
		answer_failure(er, rc, NULL); /* too many waiters: stale or 503 */
}

static void lookup(ereq *er)
{
	mc_cache_engine *e = er->e;
	const mc_cache_request *q = er->req;
	size_t pl;
	mc_cache_key_build(&er->pk, &pl, q->host, q->host_len, q->target, strlen(q->target), NULL,
			   0, NULL, 0);
	mc_cache_obj *o = NULL;
	mc_cache_lookup(e->store, er->pk.data, er->pk.len, q->headers, q->nheaders, &o);
	lookup_found(er, o, now_ms(e));
}

static bool host_ok(const char *h, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)h[i] <= 0x20 || (unsigned char)h[i] >= 0x7f)
			return false;
	return true;
}

/* Primary keys up to this long are built on the stack. */
#define KEY_STACK 512

static ereq *ereq_keep(const ereq *tmp)
{
	ereq *er = mc_alloc(sizeof *er);
	*er = *tmp;
	er->on_stack = false;
	return er;
}

void mc_cache_engine_handle(mc_cache_engine *e, const mc_cache_request *req, mc_cache_answer_cb cb,
			    void *arg)
{
	/* The request lives on the stack until it is known not to be a fresh hit (the
	 * common case, answered at once); then it moves to the heap. */
	ereq tmp = {.e = e, .req = req, .cb = cb, .arg = arg, .on_stack = true};
	mc_buf_init(&tmp.pk);
	tmp.head = strcmp(req->method, "HEAD") == 0;
	tmp.authorized =
	    mc_cache_header_find(req->headers, req->nheaders, "authorization", NULL) != NULL;
	bool cacheable = (tmp.head || strcmp(req->method, "GET") == 0) &&
			 !mc_cache_header_find(req->headers, req->nheaders, "range", NULL) &&
			 host_ok(req->host, req->host_len);
	if (!cacheable) {
		pass_start(ereq_keep(&tmp));
		return;
	}
	size_t tl = strlen(req->target);
	if (5 + req->host_len + tl > KEY_STACK) {
		lookup(ereq_keep(&tmp));
		return;
	}
	char key[KEY_STACK];
	size_t kl = mc_cache_key_primary_write(key, req->host, req->host_len, req->target, tl);
	mc_cache_obj *o = NULL;
	mc_cache_lookup(e->store, key, kl, req->headers, req->nheaders, &o);
	int64_t now = now_ms(e);
	if (o && (!tmp.authorized || o->auth_ok) &&
	    mc_cache_is_fresh(&o->fresh, mc_cache_obj_age_ms(o, now))) {
		answer_obj_at(&tmp, o, MC_CACHE_HIT, e->o.tier, true, false, false, now);
		mc_cache_obj_unref(o);
		return;
	}
	ereq *er = ereq_keep(&tmp);
	mc_buf_append(&er->pk, key, kl);
	lookup_found(er, o, now);
}
