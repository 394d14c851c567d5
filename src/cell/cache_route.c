/* Cache routes: the cell's edge cache (tier "cell") in front of the region's
 * shield cache. The upstream is region.http, asked with the client's request and
 * "X-Metrocell-Shield: 1" (docs/architecture.md, "Edge cache"); answers carry
 * X-Metrocell-Cache ("hit; tier=cell", "miss; tier=shield", ...) and Age, and
 * the outcome cache_hit, cache_stale or cache_miss. Also the cell's purge API and
 * the purges the region sends over the replication link. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/cache.h"
#include "cell/cell_int.h"

#define COMP "cache"
#define PURGE_PATH "/v1/cache/purge"

/* An engine per cache route name, kept for the life of the process: a config
 * swap reuses it (its collapsed fills and background refreshes continue). */
typedef struct named_engine {
	char *route;
	mc_cache_engine *engine;
} named_engine;

struct cell_cache {
	cell *c;
	mc_cache *store;
	mc_http_pool *shield;	   /* keep-alive pool to region.http */
	named_engine *engines;
	size_t nroutes; /* engines held */
	uint64_t purge_frames; /* PURGE frames received from the region */
	struct creq *spare;    /* freed requests kept for reuse (CREQ_SPARE_MAX) */
	size_t nspare;
	int64_t clock_wall_ms;	/* the engines' clock: wall time at clock_loop_ms */
	uint64_t clock_loop_ms; /* loop time of the last resync; 0 before the first */
};

/* Requests with room for this many client fields are reused, up to
 * CREQ_SPARE_MAX of them: a hit then allocates nothing here. */
#define CREQ_HDRS 16
#define CREQ_SPARE_MAX 64

/* One request of a cache route, alive until the engine answers. One allocation
 * with the client's fields in the cache's layout; what goes upstream is built
 * only when the engine needs it (creq_fwd_prepare): a hit never does. */
typedef struct creq {
	cell_req *r;
	cell_cache *cc;
	size_t cap;	   /* room in hdrs */
	struct creq *next; /* in cc->spare */
	mc_cache_request q;
	mc_cache_header *fwd; /* NULL until the first upstream request */
	mc_buf xff;
	bool *answered; /* set when the answer comes during mc_cache_engine_handle */
	mc_cache_header hdrs[];
} creq;

/* One request to the shield. */
typedef struct sfetch {
	mc_cache_fetch_done done;
	void *arg;
} sfetch;

/* ---- upstream: the region's shield -------------------------------------------------------- */

static void on_shield_response(void *arg, int err, const mc_http_response *res)
{
	sfetch *f = arg;
	if (err < 0) {
		f->done(f->arg, err, NULL);
		free(f);
		return;
	}
	mc_cache_header *h = mc_alloc((res->nheaders + 1) * sizeof *h);
	for (size_t i = 0; i < res->nheaders; i++)
		h[i] = (mc_cache_header){res->headers[i].name, res->headers[i].name_len,
					 res->headers[i].value, res->headers[i].value_len};
	mc_cache_response cr = {res->status, h, res->nheaders, res->body, res->body_len};
	f->done(f->arg, 0, &cr);
	free(h);
	free(f);
}

static int shield_fetch(void *ctx, const char *method, const char *target, const mc_cache_header *h,
			size_t n, const void *body, size_t body_len, mc_cache_fetch_done done,
			void *arg)
{
	cell_cache *cc = ctx;
	mc_http_header *hh = mc_alloc((n + 1) * sizeof *hh);
	for (size_t i = 0; i < n; i++)
		hh[i] = (mc_http_header){h[i].name, h[i].name_len, h[i].value, h[i].value_len};
	hh[n] = (mc_http_header){"X-Metrocell-Shield", 18, "1", 1};
	sfetch *f = mc_alloc(sizeof *f);
	f->done = done;
	f->arg = arg;
	int rc = mc_http_pool_request(cc->shield, method, target, hh, n + 1, body, body_len,
				      on_shield_response, f);
	free(hh);
	if (rc < 0)
		free(f);
	return rc;
}

/* ---- requests -------------------------------------------------------------------------------- */

static void creq_free(creq *q)
{
	cell_cache *cc = q->cc;
	free(q->fwd);
	mc_buf_fini(&q->xff);
	if (q->cap == CREQ_HDRS && cc->nspare < CREQ_SPARE_MAX) {
		q->next = cc->spare;
		cc->spare = q;
		cc->nspare++;
		return;
	}
	free(q);
}

static creq *creq_new(cell_cache *cc, size_t nheaders)
{
	creq *q;
	if (nheaders <= CREQ_HDRS && cc->spare) {
		q = cc->spare;
		cc->spare = q->next;
		cc->nspare--;
	} else {
		size_t cap = MC_MAX(nheaders, (size_t)CREQ_HDRS);
		q = mc_alloc(sizeof *q + cap * sizeof q->hdrs[0]);
		q->cap = cap;
	}
	q->cc = cc;
	q->fwd = NULL;
	mc_buf_init(&q->xff);
	return q;
}

/* The engines' wall clock: the loop's cached time (no system call per hit) on a
 * wall-clock base read again once a second, so a step of the system clock
 * shows within a second. Ages and lifetimes are whole seconds on the wire. */
static int64_t cell_wall_ms(void *arg)
{
	cell_cache *cc = arg;
	uint64_t now = uv_now(cc->c->loop);
	if (cc->clock_loop_ms == 0 || now - cc->clock_loop_ms >= 1000) {
		cc->clock_wall_ms = (int64_t)mc_wall_ms();
		cc->clock_loop_ms = now ? now : 1;
	}
	return cc->clock_wall_ms + (int64_t)(now - cc->clock_loop_ms);
}

static bool named(const mc_cache_header *h, const char *name)
{
	return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

/* The cell sets these itself (X-Forwarded-For is extended, not replaced). */
static bool set_by_cell(const mc_cache_header *h)
{
	return named(h, "x-forwarded-for") || named(h, "x-forwarded-host");
}

/* Decimal digits of v at the end of buf[0..24); returns the first one. */
static char *u64_digits(char buf[24], uint64_t v, size_t *len)
{
	char *p = buf + 24;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	*len = (size_t)(buf + 24 - p);
	return p;
}

static void on_answer(void *arg, const mc_cache_answer *a)
{
	creq *q = arg;
	cell_req *r = q->r;
	const cell *c = r->c;
	if (q->answered)
		*q->answered = true;
	if (a->err < 0) {
		int timeout = a->err == MC_ETIMEDOUT, full = a->err == MC_EFULL;
		mc_cell_finish_error(r,
				     timeout ? 504
				     : full  ? 503
					     : 502,
				     OUTCOME_REFUSED,
				     timeout ? "upstream_timeout"
				     : full  ? "overloaded"
					     : "upstream_failed",
				     "region shield %s: %s", c->conf->region_http,
				     mc_strerror(a->err));
		creq_free(q);
		return;
	}
	cell_outcome outcome = a->result == MC_CACHE_HIT     ? OUTCOME_CACHE_HIT
			       : a->result == MC_CACHE_STALE ? OUTCOME_CACHE_STALE
							     : OUTCOME_CACHE_MISS;
	if (!a->upstream) { /* answered here: the timing has no region segment */
		r->seg_name = NULL;
		r->seg_start_ns = 0;
	}
	/* Age and X-Metrocell-Cache, after the stored fields (pre-rendered when the
	 * answer comes from a stored object) */
	mc_http_header stack[34];
	size_t nh = a->head ? 0 : a->nheaders;
	mc_http_header *h = nh + 2 <= MC_ARRAY_LEN(stack) ? stack : mc_alloc((nh + 2) * sizeof *h);
	size_t n = 0;
	for (size_t i = 0; i < nh; i++)
		h[n++] = (mc_http_header){a->headers[i].name, a->headers[i].name_len,
					  a->headers[i].value, a->headers[i].value_len};
	char age[24];
	if (a->age_s >= 0) {
		size_t al;
		const char *d = u64_digits(age, (uint64_t)a->age_s, &al);
		h[n++] = (mc_http_header){"Age", 3, d, al};
	}
	h[n++] =
	    (mc_http_header){"X-Metrocell-Cache", 17, a->cache_status, strlen(a->cache_status)};
	if (a->head)
		mc_cell_finish_raw(r, a->status, outcome, h, n, a->head, a->head_len, a->body,
				   a->body_len);
	else
		mc_cell_finish(r, a->status, outcome, h, n, a->body, a->body_len);
	if (h != stack)
		free(h);
	creq_free(q);
}

/* Builds what goes upstream, once (mc_cache_request.fwd_prepare): the client's
 * end-to-end fields, the same Host (the shield's key is the cell's key), the
 * forwarding chain and the cell's name. */
static void creq_fwd_prepare(void *arg)
{
	creq *q = arg;
	if (q->fwd)
		return;
	cell_req *r = q->r;
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	size_t nreq = q->q.nheaders;
	q->fwd = mc_alloc((nreq + 4) * sizeof *q->fwd);
	size_t n = 0;
	for (size_t i = 0; i < nreq; i++)
		if (mc_cache_header_forwardable(q->hdrs, nreq, i) && !set_by_cell(&q->hdrs[i]))
			q->fwd[n++] = q->hdrs[i];
	if (q->q.host_len) {
		q->fwd[n++] = (mc_cache_header){"Host", 4, q->q.host, q->q.host_len};
		q->fwd[n++] = (mc_cache_header){"X-Forwarded-Host", 16, q->q.host, q->q.host_len};
	}
	const char *colon = strrchr(req->peer, ':');
	size_t iplen = colon ? (size_t)(colon - req->peer) : strlen(req->peer);
	size_t xl;
	const char *xff = mc_http_header_find(req->headers, req->nheaders, "x-forwarded-for", &xl);
	if (xff) {
		mc_buf_append(&q->xff, xff, xl);
		mc_buf_append(&q->xff, ", ", 2);
	}
	mc_buf_append(&q->xff, req->peer, iplen);
	q->fwd[n++] = (mc_cache_header){"X-Forwarded-For", 15, q->xff.data, q->xff.len};
	q->fwd[n++] =
	    (mc_cache_header){"X-Metrocell-Cell", 16, r->c->conf->cell, strlen(r->c->conf->cell)};
	q->q.fwd = q->fwd;
	q->q.nfwd = n;
}

void mc_cell_cache_handle(cell_req *r)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	MC_ASSERT(r->c->cache && r->route->engine);
	creq *q = creq_new(r->c->cache, req->nheaders);
	q->r = r;
	bool answered = false;
	q->answered = &answered;
	const char *host = NULL;
	size_t hl = 0;
	for (size_t i = 0; i < req->nheaders; i++) {
		const mc_http_header *f = &req->headers[i];
		q->hdrs[i] = (mc_cache_header){f->name, f->name_len, f->value, f->value_len};
		if (!host && f->name_len == 4 && strncasecmp(f->name, "host", 4) == 0) {
			host = f->value;
			hl = f->value_len;
		}
	}
	q->q = (mc_cache_request){.method = req->method,
				  .target = req->target,
				  .host = host ? host : "",
				  .host_len = host ? hl : 0,
				  .headers = q->hdrs,
				  .nheaders = req->nheaders,
				  .fwd_prepare = creq_fwd_prepare,
				  .fwd_arg = q,
				  .body = req->body,
				  .body_len = req->body_len};
	mc_cache_engine_handle(r->route->engine, &q->q, on_answer, q);
	/* Not answered yet (q and r are still ours): it waits on the shield, and the
	 * region segment of Server-Timing starts now. A hit has none, and reads no
	 * clock for it. */
	if (!answered) {
		q->answered = NULL;
		r->seg_name = "region";
		r->seg_start_ns = mc_now_ns();
	}
}

/* ---- lifecycle, metrics, purge --------------------------------------------------------------- */

/* Creates the store and the shield pool (the first cache route needs them). */
static int cache_create(cell *c, char *err, size_t errcap)
{
	const mc_cell_conf *cf = c->conf;
	cell_cache *cc = mc_calloc(1, sizeof *cc);
	c->cache = cc;
	cc->c = c;
	mc_cache_opts o;
	mc_cache_opts_default(&o);
	o.max_bytes = (size_t)cf->cache.max_bytes;
	o.max_object_bytes = (size_t)cf->cache.max_object_bytes;
	o.shards = cf->cache.shards;
	o.policy = cf->cache.policy == 1 ? MC_CACHE_LRU : MC_CACHE_S3FIFO;
	o.max_waiters = cf->cache.max_waiters;
	int rc = mc_cache_new(&cc->store, &o);
	if (rc < 0) {
		snprintf(err, errcap, "cannot create the cache: %s", mc_strerror(rc));
		return rc;
	}
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.connect_timeout_ms = cf->cache.connect_timeout_ms;
	po.request_timeout_ms = cf->cache.timeout_ms;
	po.max_conns = cf->cache.max_conns;
	po.max_idle = cf->cache.max_conns;
	po.max_response_bytes = MC_MAX(po.max_response_bytes, o.max_object_bytes + (64u << 10));
	if (!cf->region_http) {
		snprintf(err, errcap, "a cache route needs region.http (the region's shield)");
		return MC_ECONFIG;
	}
	rc = mc_http_pool_new(&cc->shield, c->loop, cf->region_http, &po);
	if (rc < 0) {
		snprintf(err, errcap, "region.http %s: %s", cf->region_http, mc_strerror(rc));
		return rc;
	}
	MC_INFO(COMP, "cell %s: edge cache of %llu bytes in %u shard(s), shield at %s", cf->cell,
		(unsigned long long)o.max_bytes, mc_cache_options(cc->store)->shards,
		cf->region_http);
	return 0;
}

int mc_cell_cache_init(cell *c)
{
	(void)c; /* the cache is created with its first route (mc_cell_cache_route_init) */
	return 0;
}

int mc_cell_cache_route_init(cell *c, cell_route *rt, char *err, size_t errcap)
{
	int rc;
	if (!c->cache && (rc = cache_create(c, err, errcap)) < 0)
		return rc;
	cell_cache *cc = c->cache;
	for (size_t i = 0; i < cc->nroutes; i++) {
		if (strcmp(cc->engines[i].route, rt->conf->name) == 0) {
			rt->engine = cc->engines[i].engine;
			return 0;
		}
	}
	mc_cache_engine_opts eo = {.tier = "cell",
				   .fetch = shield_fetch,
				   .fetch_ctx = cc,
				   .clock_ms = cell_wall_ms,
				   .clock_arg = cc};
	mc_cache_engine *e = NULL;
	if ((rc = mc_cache_engine_new(&e, cc->store, &eo)) < 0) {
		snprintf(err, errcap, "route %s: cannot create its cache engine: %s",
			 rt->conf->name, mc_strerror(rc));
		return rc;
	}
	cc->engines = mc_realloc(cc->engines, (cc->nroutes + 1) * sizeof *cc->engines);
	cc->engines[cc->nroutes++] = (named_engine){mc_strdup(rt->conf->name), e};
	rt->engine = e;
	return 0;
}

void mc_cell_cache_fini(cell *c)
{
	cell_cache *cc = c->cache;
	if (!cc)
		return;
	/* Freeing the pool completes its requests (MC_ECANCELED), so the engines have
	 * nothing in flight when they go. */
	mc_http_pool_free(cc->shield);
	for (size_t i = 0; i < cc->nroutes; i++) {
		mc_cache_engine_free(cc->engines[i].engine);
		free(cc->engines[i].route);
	}
	free(cc->engines);
	while (cc->spare) {
		creq *q = cc->spare;
		cc->spare = q->next;
		free(q);
	}
	mc_cache_free(cc->store);
	free(cc);
	c->cache = NULL;
}

void mc_cell_cache_metrics(cell *c)
{
	cell_cache *cc = c->cache;
	if (!cc)
		return;
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, c->conf->cell);
	mc_buf_append_str(&l, "\"");
	mc_cache_store_metrics(cc->store, c->metrics, l.data);
	mc_metrics_series(c->metrics, "metrocell_cache_purge_frames_total",
			  "Purges received from the region over the replication link.",
			  MC_METRIC_COUNTER, l.data)
	    ->value = (double)cc->purge_frames;
	size_t base = l.len;
	for (size_t i = 0; i < cc->nroutes; i++) {
		l.len = base;
		l.data[base] = '\0';
		mc_buf_append_str(&l, ",route=\"");
		mc_metrics_label_escape(&l, cc->engines[i].route);
		mc_buf_append_str(&l, "\"");
		mc_cache_engine_metrics(cc->engines[i].engine, c->metrics, l.data);
	}
	mc_buf_fini(&l);
}

void mc_cell_cache_on_purge(void *arg, bool prefix, const char *host, size_t host_len,
			    const char *pattern, size_t pattern_len)
{
	cell *c = arg;
	if (!c->cache)
		return;
	c->cache->purge_frames++;
	size_t n = mc_cache_purge(c->cache->store, host, host_len, pattern, pattern_len, prefix);
	MC_INFO(COMP, "cell %s: region purge %s %.*s%s%.*s: %zu object(s)", c->conf->cell,
		prefix ? "prefix" : "key", (int)host_len, host, host_len ? " " : "",
		(int)pattern_len, pattern, n);
	char h[256], pat[1001];
	snprintf(h, sizeof h, "%.*s", (int)MC_MIN(host_len, sizeof h - 1), host_len ? host : "");
	snprintf(pat, sizeof pat, "%.*s", (int)MC_MIN(pattern_len, sizeof pat - 1), pattern);
	mc_cell_event(c, "cache_purge", "s:source", "region", "s:mode", prefix ? "prefix" : "exact",
		      "s:host", host_len ? h : NULL, "s:pattern", pat, "u:purged", (uint64_t)n, NULL);
}

int mc_cell_cache_admin(cell *c, mc_http_exchange *ex)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	if (strcmp(req->path, PURGE_PATH) != 0)
		return 0;
	if (strcmp(req->method, "POST") != 0) {
		mc_http_header allow = {"Allow", 5, "POST", 4};
		mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed",
				      "%s answers POST only", PURGE_PATH);
		return 1;
	}
	mc_cache_purge_spec *sp = mc_alloc(sizeof *sp);
	char err[256];
	if (mc_cache_purge_parse(req->body, req->body_len, sp, err, sizeof err) < 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_purge", "%s", err);
		free(sp);
		return 1;
	}
	size_t n = c->cache ? mc_cache_purge(c->cache->store, sp->host, sp->host_len, sp->pattern,
					     sp->pattern_len, sp->prefix)
			    : 0;
	char h[256];
	snprintf(h, sizeof h, "%.*s", (int)MC_MIN(sp->host_len, sizeof h - 1),
		 sp->host_len ? sp->host : "");
	mc_cell_event(c, "cache_purge", "s:source", "admin", "s:mode", sp->prefix ? "prefix" : "exact",
		      "s:host", sp->host_len ? h : NULL, "s:pattern", sp->pattern, "u:purged",
		      (uint64_t)n, NULL);
	char body[64];
	int bl = snprintf(body, sizeof body, "{\"purged\":%zu}\n", n);
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, body, (size_t)bl);
	free(sp);
	return 1;
}
