/* The region's shield cache (tier "shield"): the same cache engine as the cells',
 * in front of the origin (shield.origin), answering the requests cells send to
 * region.http with "X-Metrocell-Shield: 1". Also the region's purge API, which
 * purges the shield and sends PURGE to every connected cell. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/cache.h"
#include "region/region_int.h"

#define COMP "shield"
#define PURGE_PATH "/v1/cache/purge"

struct region_shield {
	const mc_region_conf *cf;
	mc_cache *store;
	mc_http_pool *origin;
	mc_cache_engine *engine;
	uint64_t purges, purge_frames;
};

typedef struct sreq {
	mc_http_exchange *ex;
	mc_cache_request q;
	mc_cache_header *hdrs, *fwd;
	mc_buf xff;
} sreq;

typedef struct ofetch {
	mc_cache_fetch_done done;
	void *arg;
} ofetch;

/* ---- upstream: the origin -------------------------------------------------------------------- */

static void on_origin_response(void *arg, int err, const mc_http_response *res)
{
	ofetch *f = arg;
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

static int origin_fetch(void *ctx, const char *method, const char *target, const mc_cache_header *h,
			size_t n, const void *body, size_t body_len, mc_cache_fetch_done done,
			void *arg)
{
	region_shield *s = ctx;
	mc_http_header *hh = mc_alloc((n + 1) * sizeof *hh);
	for (size_t i = 0; i < n; i++)
		hh[i] = (mc_http_header){h[i].name, h[i].name_len, h[i].value, h[i].value_len};
	ofetch *f = mc_alloc(sizeof *f);
	f->done = done;
	f->arg = arg;
	int rc = mc_http_pool_request(s->origin, method, target, hh, n, body, body_len,
				      on_origin_response, f);
	free(hh);
	if (rc < 0)
		free(f);
	return rc;
}

/* ---- requests from cells --------------------------------------------------------------------- */

static void sreq_free(sreq *q)
{
	free(q->hdrs);
	free(q->fwd);
	mc_buf_fini(&q->xff);
	free(q);
}

static void on_answer(void *arg, const mc_cache_answer *a)
{
	sreq *q = arg;
	if (a->err < 0) {
		int timeout = a->err == MC_ETIMEDOUT, full = a->err == MC_EFULL;
		mc_http_respond_error(q->ex,
				      timeout ? 504
				      : full  ? 503
					      : 502,
				      NULL, 0,
				      timeout ? "origin_timeout"
				      : full  ? "overloaded"
					      : "origin_failed",
				      "shield origin: %s", mc_strerror(a->err));
		sreq_free(q);
		return;
	}
	mc_http_header *h = mc_alloc((a->nheaders + 2) * sizeof *h);
	size_t n = 0;
	for (size_t i = 0; i < a->nheaders; i++)
		h[n++] = (mc_http_header){a->headers[i].name, a->headers[i].name_len,
					  a->headers[i].value, a->headers[i].value_len};
	char age[24];
	if (a->age_s >= 0) {
		snprintf(age, sizeof age, "%lld", (long long)a->age_s);
		h[n++] = (mc_http_header){"Age", 3, age, strlen(age)};
	}
	h[n++] =
	    (mc_http_header){"X-Metrocell-Cache", 17, a->cache_status, strlen(a->cache_status)};
	mc_http_respond(q->ex, a->status, h, n, a->body, a->body_len);
	free(h);
	sreq_free(q);
}

int mc_region_shield_handle(region_shield *s, mc_http_exchange *ex)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	if (!mc_http_header_find(req->headers, req->nheaders, "x-metrocell-shield", NULL))
		return 0;
	if (!s) {
		mc_http_respond_error(ex, 404, NULL, 0, "no_shield",
				      "this region has no shield cache (shield.origin is not set)");
		return 1;
	}
	sreq *q = mc_calloc(1, sizeof *q);
	q->ex = ex;
	mc_buf_init(&q->xff);
	q->hdrs = mc_alloc((req->nheaders + 1) * sizeof *q->hdrs);
	for (size_t i = 0; i < req->nheaders; i++)
		q->hdrs[i] = (mc_cache_header){req->headers[i].name, req->headers[i].name_len,
					       req->headers[i].value, req->headers[i].value_len};
	size_t hl = 0;
	const char *host = mc_http_header_find(req->headers, req->nheaders, "host", &hl);
	q->fwd = mc_alloc((req->nheaders + 3) * sizeof *q->fwd);
	size_t n = 0;
	for (size_t i = 0; i < req->nheaders; i++) {
		const mc_cache_header *h = &q->hdrs[i];
		if (mc_cache_header_forwardable(q->hdrs, req->nheaders, i) &&
		    !(h->name_len == 15 && strncasecmp(h->name, "x-forwarded-for", 15) == 0))
			q->fwd[n++] = *h;
	}
	if (host)
		q->fwd[n++] = (mc_cache_header){"Host", 4, host, hl};
	/* the chain the cell sent, extended with the cell's address */
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
	q->q = (mc_cache_request){.method = req->method,
				  .target = req->target,
				  .host = host ? host : "",
				  .host_len = host ? hl : 0,
				  .headers = q->hdrs,
				  .nheaders = req->nheaders,
				  .fwd = q->fwd,
				  .nfwd = n,
				  .body = req->body,
				  .body_len = req->body_len};
	mc_cache_engine_handle(s->engine, &q->q, on_answer, q);
	return 1;
}

/* ---- purge ----------------------------------------------------------------------------------- */

int mc_region_cache_admin(region_shield *s, mc_repl_sink *sink, mc_http_exchange *ex)
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
	/* The shield first, so a cell that refills right after its own purge cannot get
	 * the old object back from here. */
	size_t n = s ? mc_cache_purge(s->store, sp->host, sp->host_len, sp->pattern,
				      sp->pattern_len, sp->prefix)
		     : 0;
	int cells = mc_repl_sink_purge(sink, sp->prefix, sp->host, sp->host_len, sp->pattern,
				       sp->pattern_len);
	if (s) {
		s->purges++;
		s->purge_frames += cells > 0 ? (uint64_t)cells : 0;
	}
	MC_INFO(COMP, "purge %s %.*s%s%.*s: %zu object(s) here, sent to %d cell(s)",
		sp->prefix ? "prefix" : "key", (int)sp->host_len, sp->host, sp->host_len ? " " : "",
		(int)sp->pattern_len, sp->pattern, n, cells);
	char body[96];
	int bl = snprintf(body, sizeof body, "{\"purged\":%zu,\"cells\":%d}\n", n,
			  cells > 0 ? cells : 0);
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, body, (size_t)bl);
	free(sp);
	return 1;
}

/* ---- lifecycle and metrics ------------------------------------------------------------------- */

int mc_region_shield_new(region_shield **out, uv_loop_t *loop, const mc_region_conf *cf)
{
	*out = NULL;
	if (!cf->shield_origin)
		return 0;
	const mc_cache_conf *cc = &cf->shield;
	region_shield *s = mc_calloc(1, sizeof *s);
	s->cf = cf;
	mc_cache_opts o;
	mc_cache_opts_default(&o);
	o.max_bytes = (size_t)cc->max_bytes;
	o.max_object_bytes = (size_t)cc->max_object_bytes;
	o.shards = cc->shards;
	o.policy = cc->policy == 1 ? MC_CACHE_LRU : MC_CACHE_S3FIFO;
	o.max_waiters = cc->max_waiters;
	int rc = mc_cache_new(&s->store, &o);
	if (rc < 0) {
		fprintf(stderr, "metrocell region: cannot create the shield cache: %s\n",
			mc_strerror(rc));
		free(s);
		return rc;
	}
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.connect_timeout_ms = cc->connect_timeout_ms;
	po.request_timeout_ms = cc->timeout_ms;
	po.max_conns = cc->max_conns;
	po.max_idle = cc->max_conns;
	po.max_response_bytes = MC_MAX(po.max_response_bytes, o.max_object_bytes + (64u << 10));
	rc = mc_http_pool_new(&s->origin, loop, cf->shield_origin, &po);
	mc_cache_engine_opts eo = {.tier = "shield", .fetch = origin_fetch, .fetch_ctx = s};
	if (rc == 0)
		rc = mc_cache_engine_new(&s->engine, s->store, &eo);
	if (rc < 0) {
		fprintf(stderr, "metrocell region: shield.origin %s: %s\n", cf->shield_origin,
			mc_strerror(rc));
		mc_region_shield_free(s);
		return rc;
	}
	MC_INFO(COMP, "region %s: shield cache of %llu bytes in %u shard(s) for origin %s",
		cf->region, (unsigned long long)o.max_bytes, mc_cache_options(s->store)->shards,
		cf->shield_origin);
	*out = s;
	return 0;
}

void mc_region_shield_free(region_shield *s)
{
	if (!s)
		return;
	mc_http_pool_free(s->origin); /* completes what is in flight (MC_ECANCELED) */
	mc_cache_engine_free(s->engine);
	mc_cache_free(s->store);
	free(s);
}

void mc_region_shield_metrics(region_shield *s, mc_metrics *m)
{
	if (!s)
		return;
	mc_cache_store_metrics(s->store, m, "");
	mc_cache_engine_metrics(s->engine, m, "route=\"shield\"");
	mc_metrics_series(m, "metrocell_cache_purges_total",
			  "Purge requests answered by the region's purge API.", MC_METRIC_COUNTER,
			  "")
	    ->value = (double)s->purges;
	mc_metrics_series(m, "metrocell_cache_purge_frames_sent_total",
			  "PURGE frames sent to cells.", MC_METRIC_COUNTER, "")
	    ->value = (double)s->purge_frames;
}
