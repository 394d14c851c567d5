/* The region's fallback path: a cell whose route fails open sends the original
 * request here with X-Metrocell-Fallback-From: <cell>; the region forwards it to
 * its own fallback upstream (workers or origin addresses, round robin, one
 * retry on the next address for an idempotent request) and streams the answer
 * back with X-Metrocell-Outcome: fallback. When the region cannot serve it, the
 * answer is a JSON error with X-Metrocell-Fallback-Error naming the cause, so
 * the cell can tell "the region failed too" from an answer of the origin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "region/region_int.h"

#define COMP "fallback"
#define HIGH_WATER (256u * 1024u)

struct mc_region_fallback {
	const mc_region_conf *conf;
	const mc_pool_conf *pc; /* NULL: no fallback configured */
	mc_http_pool **pools;	/* one per address */
	size_t npools;
	size_t next; /* round robin */
	mc_metrics *metrics;
	int closing;
};

typedef struct freq {
	mc_region_fallback *f;
	mc_http_exchange *ex;
	mc_http_call *call;
	mc_http_header *fwd;
	size_t nfwd;
	size_t idx; /* address of the current call */
	int attempt, streaming, paused;
	char cell[32];
} freq;

static const mc_http_call_cbs CBS;

static void count(mc_region_fallback *f, const char *cell, const char *result)
{
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, cell);
	mc_buf_printf(&l, "\",result=\"%s\"", result);
	mc_metrics_series(f->metrics, "metrocell_region_fallback_requests_total",
			  "Requests cells forwarded to the region's fallback path, by cell and "
			  "result (served, failed).",
			  MC_METRIC_COUNTER, l.data)
	    ->value += 1;
	mc_buf_fini(&l);
}

static void freq_free(freq *q)
{
	free(q->fwd);
	free(q);
}

/* Answers a fallback request the region could not serve. */
static void fail(freq *q, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(freq *q, int status, const char *code, const char *fmt, ...)
{
	mc_region_fallback *f = q->f;
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	mc_buf body;
	mc_buf_init(&body);
	mc_http_error_body(&body, code, msg);
	const char *region = f->conf->region;
	mc_http_header h[] = {{"Content-Type", 12, "application/json", 16},
			      {"X-Metrocell-Fallback-Error", 26, code, strlen(code)},
			      {"X-Metrocell-Region", 18, region, strlen(region)},
			      {"X-Metrocell-Outcome", 19, "refused", 7}};
	mc_http_respond(q->ex, status, h, MC_ARRAY_LEN(h), body.data, body.len);
	mc_buf_fini(&body);
	count(f, q->cell, "failed");
	MC_WARN(COMP, "fallback for cell %s failed: %s", q->cell, msg);
	freq_free(q);
}

static int idempotent(const char *m)
{
	return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") ||
	       !strcmp(m, "DELETE") || !strcmp(m, "OPTIONS");
}

/* Starts the call on the next address. Returns 0 or the pool's error. */
static int send_next(freq *q)
{
	mc_region_fallback *f = q->f;
	const mc_http_request *req = mc_http_exchange_request(q->ex);
	q->idx = f->next++ % f->npools;
	mc_http_call_opts o = {.connect_timeout_ms = f->pc->connect_timeout_ms,
			       .first_byte_timeout_ms = f->pc->timeout_ms,
			       .idle_timeout_ms = f->pc->timeout_ms};
	int rc = mc_http_pool_call(f->pools[q->idx], req->method, req->target, q->fwd, q->nfwd,
				   req->body, req->body_len, &o, &CBS, q, &q->call);
	if (rc < 0)
		q->call = NULL;
	return rc;
}

static int named(const mc_http_header *h, const char *name)
{
	return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

static void on_head(void *arg, const mc_http_response *res)
{
	freq *q = arg;
	mc_region_fallback *f = q->f;
	mc_http_header *h = mc_alloc((res->nheaders + 2) * sizeof *h);
	size_t n = 0;
	const char *region = f->conf->region;
	h[n++] = (mc_http_header){"X-Metrocell-Outcome", 19, "fallback", 8};
	h[n++] = (mc_http_header){"X-Metrocell-Region", 18, region, strlen(region)};
	for (size_t i = 0; i < res->nheaders; i++) {
		const mc_http_header *rh = &res->headers[i];
		if (mc_http_header_end_to_end(res->headers, res->nheaders, rh) &&
		    !named(rh, "x-metrocell-outcome") && !named(rh, "x-metrocell-fallback-error"))
			h[n++] = *rh;
	}
	int64_t len = res->content_length;
	if (strcmp(mc_http_exchange_request(q->ex)->method, "HEAD") == 0) {
		size_t cl_len;
		const char *cl =
		    mc_http_header_find(res->headers, res->nheaders, "content-length", &cl_len);
		uint64_t v;
		len = cl && mc_parse_u64(cl, cl_len, INT64_MAX, &v) == 0 ? (int64_t)v : -1;
	}
	q->streaming = 1;
	count(f, q->cell, "served");
	int rc = mc_http_exchange_start_response(q->ex, res->status, h, n, len);
	free(h);
	if (rc < 0) {
		mc_http_call_abort(q->call);
		q->call = NULL;
		mc_http_exchange_end(q->ex, 1);
		freq_free(q);
	}
}

static void on_body(void *arg, const char *data, size_t len)
{
	freq *q = arg;
	if (mc_http_exchange_write_body(q->ex, data, len) < 0) {
		mc_http_call_abort(q->call);
		q->call = NULL;
		mc_http_exchange_end(q->ex, 1);
		freq_free(q);
		return;
	}
	if (!q->paused && mc_http_exchange_pending(q->ex) > HIGH_WATER) {
		q->paused = 1;
		mc_http_call_pause(q->call, 1);
	}
}

static void on_end(void *arg, int err)
{
	freq *q = arg;
	mc_region_fallback *f = q->f;
	q->call = NULL;
	if (q->streaming) {
		mc_http_exchange_end(q->ex, err != 0);
		freq_free(q);
		return;
	}
	const mc_http_request *req = mc_http_exchange_request(q->ex);
	if (err != MC_ECANCELED && q->attempt == 0 && f->npools > 1 && idempotent(req->method)) {
		q->attempt = 1;
		if (send_next(q) == 0)
			return;
	}
	const char *code = err == MC_ETIMEDOUT	    ? "timeout"
			   : err == UV_ECONNREFUSED ? "connect_failed"
						    : "upstream_error";
	fail(q, err == MC_ETIMEDOUT ? 504 : 502, code, "fallback upstream %s: %s",
	     f->pc->workers[q->idx], mc_strerror(err));
}

static const mc_http_call_cbs CBS = {on_head, on_body, on_end};

static void on_client(void *arg, int event)
{
	freq *q = arg;
	if (event == MC_HTTP_EX_DRAINED) {
		if (q->paused && q->call) {
			q->paused = 0;
			mc_http_call_pause(q->call, 0);
		}
		return;
	}
	mc_http_call_abort(q->call);
	q->call = NULL;
	if (q->streaming)
		mc_http_exchange_end(q->ex, 1);
	else
		mc_http_respond(q->ex, 503, NULL, 0, NULL, 0); /* dropped: the client left */
	freq_free(q);
}

/* A cell the region accepts: any well-formed name, or one of `cells` when the
 * region lists them. */
static int cell_allowed(const mc_region_conf *conf, const char *cell)
{
	if (conf->ncells == 0)
		return 1;
	for (size_t i = 0; i < conf->ncells; i++)
		if (strcmp(conf->cells[i], cell) == 0)
			return 1;
	return 0;
}

int mc_region_fallback_handle(mc_region_fallback *f, mc_http_exchange *ex)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	size_t cl;
	const char *cell =
	    mc_http_header_find(req->headers, req->nheaders, "x-metrocell-fallback-from", &cl);
	if (!cell)
		return 0;
	freq *q = mc_calloc(1, sizeof *q);
	q->f = f;
	q->ex = ex;
	/* the cell's name labels metrics: only a well-formed name is kept as it is */
	int ok = cl >= 1 && cl < sizeof q->cell;
	for (size_t i = 0; ok && i < cl; i++)
		ok = (cell[i] >= 'a' && cell[i] <= 'z') || (cell[i] >= '0' && cell[i] <= '9') ||
		     cell[i] == '-';
	snprintf(q->cell, sizeof q->cell, "%.*s", ok ? (int)cl : 7, ok ? cell : "invalid");
	if (!ok || !cell_allowed(f->conf, q->cell)) {
		if (ok)
			snprintf(q->cell, sizeof q->cell, "unknown");
		fail(q, 403, "unknown_cell",
		     "X-Metrocell-Fallback-From does not name a cell of region %s (see cells)",
		     f->conf->region);
		return 1;
	}
	if (!f->pc) {
		fail(q, 503, "no_fallback", "region %s has no fallback configured",
		     f->conf->region);
		return 1;
	}
	if (f->closing) {
		fail(q, 503, "shutting_down", "region %s is stopping", f->conf->region);
		return 1;
	}
	q->fwd = mc_alloc((req->nheaders + 1) * sizeof *q->fwd);
	for (size_t i = 0; i < req->nheaders; i++)
		if (mc_http_header_end_to_end(req->headers, req->nheaders, &req->headers[i]))
			q->fwd[q->nfwd++] = req->headers[i];
	mc_http_exchange_watch(ex, on_client, q);
	int rc = send_next(q);
	if (rc < 0)
		fail(q, 503, rc == MC_EFULL ? "overloaded" : "upstream_error",
		     "fallback upstream %s: %s", f->pc->workers[q->idx], mc_strerror(rc));
	return 1;
}

int mc_region_fallback_new(mc_region_fallback **out, uv_loop_t *loop, const mc_region_conf *conf,
			   mc_metrics *metrics)
{
	mc_region_fallback *f = mc_calloc(1, sizeof *f);
	f->conf = conf;
	f->pc = conf->fallback;
	f->metrics = metrics;
	*out = f;
	if (!f->pc)
		return 0;
	mc_http_pool_opts o;
	mc_http_pool_opts_default(&o);
	o.connect_timeout_ms = f->pc->connect_timeout_ms;
	o.request_timeout_ms = f->pc->timeout_ms;
	o.max_conns = f->pc->max_conns;
	o.max_idle = f->pc->max_conns;
	o.max_queue = f->pc->max_queue;
	f->npools = f->pc->nworkers;
	f->pools = mc_calloc(f->npools, sizeof *f->pools);
	for (size_t i = 0; i < f->npools; i++) {
		int rc = mc_http_pool_new(&f->pools[i], loop, f->pc->workers[i], &o);
		if (rc < 0) {
			fprintf(stderr, "metrocell region: fallback.workers[%zu] %s: %s\n", i,
				f->pc->workers[i], mc_strerror(rc));
			return rc;
		}
	}
	return 0;
}

void mc_region_fallback_free(mc_region_fallback *f)
{
	if (!f)
		return;
	f->closing = 1;
	for (size_t i = 0; i < f->npools; i++)
		mc_http_pool_free(f->pools[i]); /* requests in flight end with MC_ECANCELED */
	free(f->pools);
	free(f);
}
