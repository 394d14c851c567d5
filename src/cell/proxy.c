/* Proxy routes: forward a request to a worker of the route's pool (pool.c
 * picks it), stream the worker's answer through as it arrives, retry an
 * idempotent request once on another worker, and when no worker answers
 * within the route's budget apply the route's failure policy (policy.c):
 * fail_closed answers 503, fail_open forwards the request to the region's
 * fallback path. The policy applies only before the first byte of the answer
 * was sent; after it a failure can only cut the response short. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cell/cell_int.h"

#define COMP_PROXY "proxy"
/* Stop reading a worker while this much of its answer waits for the client. */
#define STREAM_HIGH_WATER (256u * 1024u)

typedef cell_route_proxy proxy_route;

typedef struct proxy_req proxy_req;

struct cell_proxy {
	mc_http_pool *fallback; /* to region.http; NULL without it */
	mc_series *regional_fallback;
	proxy_req *free; /* finished requests kept with their timer for reuse */
	size_t nfree;
	int closing;	 /* pools_fini: requests ending now are freed */
};

/* Finished requests kept for reuse: a new one then needs no allocation and no
 * timer handle init/close. */
#define PX_FREE_MAX 256
/* Forwarded request headers held without an allocation. */
#define PX_FWD_INLINE 24

enum { PX_UPSTREAM, PX_FALLBACK, PX_STREAM };

struct proxy_req {
	/* Kept across reuse (px_new clears from r on). The timer moves lazily:
	 * due_ms is when the budget (or the fallback's bound) runs out, due_set 0
	 * when none runs; the libuv timer is restarted only for an earlier due
	 * time, and when it fires early it re-arms for what is left. */
	uv_timer_t timer;
	uint64_t due_ms, armed_ms; /* loop time */
	uint8_t due_set, armed;
	proxy_req *next_free;
	mc_buf xff;				/* the X-Forwarded-For value sent */
	mc_http_header fwd_inline[PX_FWD_INLINE]; /* fwd when it fits */
	char detail[256]; /* with cause: set by px_note before it is read */

	cell_req *r; /* NULL once answered */
	mc_http_header *fwd; /* forwarded request headers: fwd_inline or allocated */
	size_t nfwd;
	cell *c;
	cell_route *rt;
	const mc_route_conf *rc;
	proxy_route *pr;
	mc_http_call *call;  /* the call in progress */
	cell_worker *worker; /* the worker of the call (counted outstanding) */
	int phase;
	int attempt;
	int paused;
	int head; /* a HEAD request */
	uint64_t attempt_ns;
	cell_cause cause; /* why the workers could not answer */
};

/* ---- setup ---------------------------------------------------------------------------- */

static mc_series *route_series(cell *c, const mc_route_conf *rc, const char *name, const char *help,
			       mc_metric_type t)
{
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, c->conf->cell);
	mc_buf_append_str(&l, "\",route=\"");
	mc_metrics_label_escape(&l, rc->name);
	mc_buf_append_str(&l, "\"");
	mc_series *s = mc_metrics_series(c->metrics, name, help, t, l.data);
	mc_buf_fini(&l);
	return s;
}

static void on_px_closed(uv_handle_t *h);

void mc_cell_proxy_route_init(cell *c, cell_route *rt)
{
	const mc_route_conf *rc = rt->conf;
	proxy_route *pr = &rt->px;
	pr->ttfb = route_series(c, rc, "metrocell_upstream_ttfb_seconds",
				"Time from sending a request to a worker to the first "
				"byte of its answer, by route.",
				MC_METRIC_HIST);
	pr->retries = route_series(c, rc, "metrocell_upstream_retries_total",
				   "Idempotent requests retried on another worker.",
				   MC_METRIC_COUNTER);
	pr->aborts = route_series(c, rc, "metrocell_upstream_stream_aborts_total",
				  "Answers cut short because the upstream failed after "
				  "the response had started.",
				  MC_METRIC_COUNTER);
}

int mc_cell_pools_init(cell *c)
{
	struct cell_proxy *px = mc_calloc(1, sizeof *px);
	c->proxy = px;
	if (c->conf->region_http) {
		mc_http_pool_opts o;
		mc_http_pool_opts_default(&o);
		int rc = mc_http_pool_new(&px->fallback, c->loop, c->conf->region_http, &o);
		if (rc < 0) {
			fprintf(stderr, "metrocell cell: region.http %s: %s\n",
				c->conf->region_http, mc_strerror(rc));
			return rc;
		}
	}
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, c->conf->cell);
	mc_buf_append_str(&l, "\",cause=\"fallback\"");
	px->regional_fallback =
	    mc_metrics_series(c->metrics, "metrocell_regional_requests_total",
			      "Requests whose critical path crossed to the region, by cause",
			      MC_METRIC_COUNTER, l.data);
	mc_buf_fini(&l);
	return 0;
}

void mc_cell_pools_fini(cell *c)
{
	mc_cell_snapshots_close(c);
	if (c->proxy) {
		struct cell_proxy *cp = c->proxy;
		cp->closing = 1;
		mc_http_pool_free(cp->fallback);
		while (cp->free) {
			proxy_req *px = cp->free;
			cp->free = px->next_free;
			uv_close((uv_handle_t *)&px->timer, on_px_closed);
		}
		free(cp);
		c->proxy = NULL;
	}
}

/* ---- headers ------------------------------------------------------------------------------ */

typedef struct name_lit {
	const char *s;
	size_t n;
} name_lit;
#define NAME_LIT(x) {x, sizeof(x) - 1}

/* Per header of every proxied request and response: the length is compared
 * before the bytes. */
static int name_in(const char *name, size_t len, const name_lit *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (list[i].n == len && strncasecmp(list[i].s, name, len) == 0)
			return 1;
	return 0;
}

/* Request fields the cell sets itself for the worker: a client's own copy would
 * come first and be taken for the cell's by most frameworks, so it is dropped
 * (X-Forwarded-For is extended, not replaced). */
static int set_by_cell(const char *name, size_t len)
{
	static const name_lit own[] = {NAME_LIT("x-forwarded-for"),
				       NAME_LIT("x-forwarded-host"),
				       NAME_LIT("x-forwarded-proto"),
				       NAME_LIT("x-metrocell-cell"),
				       NAME_LIT("x-metrocell-fallback-from"),
				       NAME_LIT("x-metrocell-fallback-cause")};
	return name_in(name, len, own, MC_ARRAY_LEN(own));
}

/* Response fields the cell sets on every answer: an upstream's copy is dropped. */
static int answered_by_cell(const char *name, size_t len)
{
	static const name_lit own[] = {
	    NAME_LIT("x-metrocell-cell"), NAME_LIT("x-metrocell-outcome"),
	    NAME_LIT("x-metrocell-route"), NAME_LIT("x-metrocell-failure-cause")};
	return name_in(name, len, own, MC_ARRAY_LEN(own));
}

static int idempotent(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
	       strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
	       strcmp(method, "OPTIONS") == 0;
}

/* ---- the request's end ------------------------------------------------------------------ */

static void on_px_closed(uv_handle_t *h)
{
	proxy_req *px = h->data;
	mc_buf_fini(&px->xff);
	free(px);
}

/* Detaches px from its request (which the caller answers next) and frees it
 * once its timer closed. Returns the request. */
static cell_req *px_detach(proxy_req *px)
{
	cell_req *r = px->r;
	struct cell_proxy *cp = px->c->proxy;
	MC_ASSERT(r && !px->call && !px->worker);
	px->r = NULL;
	r->px = NULL;
	px->due_set = 0;
	if (px->fwd != px->fwd_inline)
		free(px->fwd);
	px->fwd = NULL;
	if (px->xff.cap > 4096)
		mc_buf_fini(&px->xff);
	if (cp && !cp->closing && cp->nfree < PX_FREE_MAX) {
		px->next_free = cp->free;
		cp->free = px;
		cp->nfree++;
	} else {
		uv_close((uv_handle_t *)&px->timer, on_px_closed);
	}
	return r;
}

static void on_px_timer(uv_timer_t *t);

static void px_timer_set(proxy_req *px, uint64_t now)
{
	px->armed_ms = px->due_ms;
	px->armed = 1;
	uv_timer_start(&px->timer, on_px_timer, px->due_ms - now, 0);
}

/* Starts the budget (or the fallback's bound): ms from now. */
static void px_timer_arm(proxy_req *px, uint32_t ms)
{
	uint64_t now = uv_now(px->c->loop);
	px->due_ms = now + ms;
	px->due_set = 1;
	if (!px->armed || px->armed_ms > px->due_ms)
		px_timer_set(px, now);
}

static void px_timer_stop(proxy_req *px)
{
	px->due_set = 0;
}

/* A request's state, reused when one is free. */
static proxy_req *px_new(cell *c)
{
	struct cell_proxy *cp = c->proxy;
	proxy_req *px = cp->free;
	if (px) {
		cp->free = px->next_free;
		cp->nfree--;
	} else {
		px = mc_alloc(sizeof *px);
		memset(px, 0, sizeof *px);
		uv_timer_init(c->loop, &px->timer);
		px->timer.data = px;
		mc_buf_init(&px->xff);
	}
	memset(&px->r, 0, sizeof *px - offsetof(proxy_req, r));
	px->detail[0] = '\0';
	return px;
}

/* Gives up the call in progress (no callback after this) and its worker. */
static void px_drop_call(proxy_req *px)
{
	if (px->call) {
		mc_http_call_abort(px->call);
		px->call = NULL;
	}
	if (px->worker) {
		mc_cell_worker_end(px->worker);
		px->worker = NULL;
	}
}

static void px_note(proxy_req *px, cell_cause cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why the workers could not answer (the first reason wins the detail
 * once the policy runs: a retry's failure replaces the first one). */
static void px_note(proxy_req *px, cell_cause cause, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(px->detail, sizeof px->detail, fmt, ap);
	va_end(ap);
	px->cause = cause;
}

/* ---- calls ------------------------------------------------------------------------------------
 */

static void on_call_head(void *arg, const mc_http_response *res);
static void on_call_body(void *arg, const char *data, size_t len);
static void on_call_end(void *arg, int err);
static const mc_http_call_cbs CALL_CBS = {on_call_head, on_call_body, on_call_end};

static void apply_policy(proxy_req *px);

/* Starts an attempt on a worker other than avoid at now_ns (mc_now_ns()).
 * Returns 0, or -1 with the cause noted (unless retry: then the first
 * attempt's cause stays). */
static int try_worker(proxy_req *px, const cell_worker *avoid, int retry, uint64_t now_ns)
{
	cell_req *r = px->r;
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	cell_pool *p = px->rt->pool;
	const mc_pool_conf *pc = p->conf;
	uint64_t now = now_ns / 1000000u; /* mc_cell_now_ms()'s clock */
	size_t outstanding = mc_cell_pool_outstanding(p);
	if (pc->max_outstanding && outstanding >= pc->max_outstanding) {
		if (!retry)
			px_note(px, CAUSE_OVERLOADED,
				"pool %s has %zu requests outstanding (max_outstanding %u)",
				pc->name, outstanding, pc->max_outstanding);
		return -1;
	}
	cell_worker *w = mc_cell_pool_pick(p, avoid, now);
	if (!w) {
		if (!retry) {
			size_t ejected = mc_cell_pool_ejected(p, now), unhealthy = 0;
			for (size_t i = 0; i < p->nworkers; i++)
				unhealthy += !atomic_load(&p->workers[i]->sh->healthy);
			px_note(px, CAUSE_NO_HEALTHY_WORKER,
				"no healthy worker in pool %s (%zu workers: %zu failing health "
				"probes, %zu ejected)",
				pc->name, p->nworkers, unhealthy, ejected);
		}
		return -1;
	}
	mc_http_call_opts o = {.connect_timeout_ms = px->rc->connect_timeout_ms,
			       .first_byte_timeout_ms = px->rc->first_byte_timeout_ms,
			       .idle_timeout_ms = px->rc->idle_timeout_ms};
	int rc = mc_http_pool_call(w->http, req->method, req->target, px->fwd, px->nfwd, req->body,
				   req->body_len, &o, &CALL_CBS, px, &px->call);
	if (rc < 0) {
		px->call = NULL;
		if (!retry) {
			if (rc == MC_EFULL)
				px_note(px, CAUSE_OVERLOADED,
					"worker %s of pool %s has %u requests queued (max_queue)",
					w->addr, pc->name, pc->max_queue);
			else
				px_note(px, CAUSE_UPSTREAM_ERROR, "worker %s of pool %s: %s",
					w->addr, pc->name, mc_strerror(rc));
		}
		return -1;
	}
	px->worker = w;
	mc_cell_worker_begin(w);
	px->attempt_ns = now_ns;
	return 0;
}

/* The current attempt failed (cause noted): one retry on another worker for an
 * idempotent request while the budget lasts, else the policy. */
static void attempt_failed(proxy_req *px)
{
	const mc_http_request *req = mc_http_exchange_request(px->r->ex);
	const cell_worker *failed = px->worker;
	if (px->worker) {
		mc_cell_worker_end(px->worker);
		px->worker = NULL;
	}
	if (px->rc->retry && px->attempt == 0 && idempotent(req->method) &&
	    px->due_set) {
		px->attempt = 1;
		if (try_worker(px, failed, 1, mc_now_ns()) == 0) {
			px->pr->retries->value += 1;
			return;
		}
	}
	apply_policy(px);
}

static void start_fallback(proxy_req *px);

static void apply_policy(proxy_req *px)
{
	int open = px->rc->fail_open && px->c->proxy->fallback;
	mc_cell_policy_count(px->c, px->rt, px->cause, open);
	MC_DEBUG(COMP_PROXY, "route %s: %s: %s -> %s", px->rt->conf->name,
		 mc_cell_cause_names[px->cause], px->detail, open ? "fail_open" : "fail_closed");
	if (!open) {
		px_timer_stop(px);
		mc_cell_policy_fail_closed(px_detach(px), px->cause, px->detail);
		return;
	}
	start_fallback(px);
}

static void fallback_failed(proxy_req *px, cell_cause fcause, int answered, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fallback_failed(proxy_req *px, cell_cause fcause, int answered, const char *fmt, ...)
{
	char fdetail[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fdetail, sizeof fdetail, fmt, ap);
	va_end(ap);
	px_timer_stop(px);
	MC_WARN(COMP_PROXY, "route %s: fallback failed: %s (local: %s: %s)", px->rt->conf->name,
		fdetail, mc_cell_cause_names[px->cause], px->detail);
	mc_cell_policy_fallback_failed(px_detach(px), px->cause, px->detail, fcause, fdetail,
				       answered);
}

/* fail_open: the original request goes to the region's fallback path, which
 * gets its own bound (fallback_timeout_ms) rather than what is left of the
 * budget, since the budget is usually spent by then. */
static void start_fallback(proxy_req *px)
{
	cell_req *r = px->r;
	cell *c = px->c;
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	px->phase = PX_FALLBACK;
	uint64_t now = mc_now_ns();
	r->upstream_ns = r->seg_start_ns ? now - r->seg_start_ns : 0;
	r->seg_name = "region";
	r->seg_start_ns = now;
	c->proxy->regional_fallback->value += 1;
	mc_http_header *h = mc_alloc((px->nfwd + 2) * sizeof *h);
	memcpy(h, px->fwd, px->nfwd * sizeof *h);
	const char *cn = mc_cell_cause_names[px->cause];
	h[px->nfwd] =
	    (mc_http_header){"X-Metrocell-Fallback-From", 25, c->conf->cell, strlen(c->conf->cell)};
	h[px->nfwd + 1] = (mc_http_header){"X-Metrocell-Fallback-Cause", 26, cn, strlen(cn)};
	uint32_t bound = px->rc->fallback_timeout_ms;
	mc_http_call_opts o = {.connect_timeout_ms = MC_MIN(px->rc->connect_timeout_ms, bound),
			       .first_byte_timeout_ms = bound,
			       .idle_timeout_ms = px->rc->idle_timeout_ms};
	px_timer_arm(px, bound);
	int rc = mc_http_pool_call(c->proxy->fallback, req->method, req->target, h, px->nfwd + 2,
				   req->body, req->body_len, &o, &CALL_CBS, px, &px->call);
	free(h);
	if (rc < 0) {
		px->call = NULL;
		fallback_failed(px, mc_cell_cause_of(rc), 0, "region %s: %s", c->conf->region_http,
				mc_strerror(rc));
	}
}

/* The response starts: the worker's (or the region's) status and headers go to
 * the client now (now_ns: mc_now_ns()); the body follows as it arrives. */
static void commit(proxy_req *px, const mc_http_response *res, cell_outcome outcome,
		   uint64_t now_ns)
{
	cell_req *r = px->r;
	px_timer_stop(px);
	px->phase = PX_STREAM;
	mc_http_header stack[32];
	mc_http_header *h = res->nheaders <= 32 ? stack : mc_alloc(res->nheaders * sizeof *h);
	size_t n = mc_http_relay_headers(res->headers, res->nheaders, h, answered_by_cell);
	int64_t len = res->content_length;
	if (px->head) {
		/* a HEAD answer announces the length a GET would have had */
		size_t cl_len;
		const char *cl =
		    mc_http_header_find(res->headers, res->nheaders, "content-length", &cl_len);
		uint64_t v;
		len = cl && mc_parse_u64(cl, cl_len, INT64_MAX, &v) == 0 ? (int64_t)v : -1;
	}
	int rc = mc_cell_stream_start_at(r, res->status, outcome, h, n, len, now_ns);
	if (h != stack)
		free(h);
	if (rc < 0) { /* the client left */
		px_drop_call(px);
		mc_cell_stream_end(px_detach(px), 1);
	}
}

static void on_call_head(void *arg, const mc_http_response *res)
{
	proxy_req *px = arg;
	if (px->phase == PX_FALLBACK) {
		size_t el;
		const char *e = mc_http_header_find(res->headers, res->nheaders,
						    "x-metrocell-fallback-error", &el);
		if (e) {
			px_drop_call(px);
			fallback_failed(px, CAUSE_UPSTREAM_ERROR, 1, "region answered %d (%.*s)",
					res->status, (int)MC_MIN(el, (size_t)100), e);
			return;
		}
		commit(px, res, OUTCOME_FALLBACK, mc_now_ns());
		return;
	}
	cell_worker *w = px->worker;
	const mc_pool_conf *pc = px->rt->pool->conf;
	/* the answer arrived by the time the loop's poll returned */
	uint64_t now = mc_http_exchange_now_ns(px->r->ex);
	if (now < px->attempt_ns) /* cannot happen: the attempt began in an earlier iteration */
		now = mc_now_ns();
	mc_hist_record(px->pr->ttfb->hist, (now - px->attempt_ns) / 1000);
	int is5xx = res->status >= 500 && res->status <= 599;
	mc_cell_worker_observe(w, is5xx && pc->outlier.count_5xx, now / 1000000u);
	if (is5xx && px->rc->fail_on_5xx) {
		mc_http_call_abort(px->call);
		px->call = NULL;
		px_note(px, CAUSE_UPSTREAM_5XX, "worker %s of pool %s answered %d", w->addr,
			pc->name, res->status);
		attempt_failed(px);
		return;
	}
	/* the first byte's time is the response's: the same clock reading */
	commit(px, res, OUTCOME_LOCAL, now);
}

static void on_call_body(void *arg, const char *data, size_t len)
{
	proxy_req *px = arg;
	MC_ASSERT(px->phase == PX_STREAM);
	if (mc_http_exchange_write_body(px->r->ex, data, len) < 0) {
		px_drop_call(px); /* the client left */
		mc_cell_stream_end(px_detach(px), 1);
		return;
	}
	if (!px->paused && mc_http_exchange_pending(px->r->ex) > STREAM_HIGH_WATER) {
		px->paused = 1;
		mc_http_call_pause(px->call, 1);
	}
}

static void on_call_end(void *arg, int err)
{
	proxy_req *px = arg;
	px->call = NULL;
	if (px->phase == PX_STREAM) {
		if (px->worker) {
			mc_cell_worker_end(px->worker);
			px->worker = NULL;
		}
		if (err) {
			px->pr->aborts->value += 1;
			MC_INFO(COMP_PROXY,
				"route %s: upstream failed after the response started (%s): "
				"cutting the response",
				px->rt->conf->name, mc_strerror(err));
		}
		mc_cell_stream_end(px_detach(px), err != 0);
		return;
	}
	if (err == MC_ECANCELED) { /* the cell is stopping */
		px_drop_call(px);
		px_timer_stop(px);
		mc_cell_finish_error(px_detach(px), 503, OUTCOME_REFUSED, "shutting_down",
				     "cell %s is stopping", px->c->conf->cell);
		return;
	}
	if (px->phase == PX_FALLBACK) {
		fallback_failed(px, mc_cell_cause_of(err), 0, "region %s: %s",
				px->c->conf->region_http, mc_strerror(err));
		return;
	}
	cell_worker *w = px->worker;
	mc_cell_worker_observe(w, 1, mc_cell_now_ms());
	px_note(px, mc_cell_cause_of(err), "worker %s of pool %s: %s", w->addr,
		px->rt->pool->conf->name, mc_strerror(err));
	attempt_failed(px);
}

/* The route's budget (or the fallback's bound) ran out before a response
 * started. */
static void on_px_timer(uv_timer_t *t)
{
	proxy_req *px = t->data;
	px->armed = 0;
	if (!px->r || !px->due_set)
		return;
	uint64_t now = uv_now(px->c->loop);
	if (now < px->due_ms) {
		px_timer_set(px, now); /* armed for an earlier request: not due yet */
		return;
	}
	px->due_set = 0;
	if (px->phase == PX_FALLBACK) {
		px_drop_call(px);
		fallback_failed(px, CAUSE_TIMEOUT, 0, "no response from region %s within %u ms",
				px->c->conf->region_http, px->rc->fallback_timeout_ms);
		return;
	}
	if (px->phase != PX_UPSTREAM)
		return;
	if (px->worker) {
		mc_cell_worker_observe(px->worker, 1, mc_cell_now_ms());
		px_note(px, CAUSE_TIMEOUT,
			"no response from worker %s of pool %s within the budget "
			"of %u ms",
			px->worker->addr, px->rt->pool->conf->name, px->rc->budget_ms);
	} else {
		px_note(px, CAUSE_TIMEOUT,
			"no worker of pool %s answered within the budget of %u ms",
			px->rt->pool->conf->name, px->rc->budget_ms);
	}
	px_drop_call(px);
	apply_policy(px);
}

/* The client went away, or drained what the worker sent. */
static void on_client_event(void *arg, int event)
{
	proxy_req *px = arg;
	if (!px->r)
		return;
	if (event == MC_HTTP_EX_DRAINED) {
		if (px->paused && px->call) {
			px->paused = 0;
			mc_http_call_pause(px->call, 0);
		}
		return;
	}
	px_drop_call(px);
	px_timer_stop(px);
	if (px->phase == PX_STREAM) {
		mc_cell_stream_end(px_detach(px), 1);
		return;
	}
	/* nobody will read it: answered only to release the exchange */
	mc_cell_finish_error(px_detach(px), 499, OUTCOME_REFUSED, "client_closed",
			     "the client closed the connection");
}

/* ---- entry ------------------------------------------------------------------------------------
 */

void mc_cell_proxy_handle(cell_req *r)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	cell *c = r->c;
	proxy_req *px = px_new(c);
	size_t cap = req->nheaders + 4;
	px->fwd = cap <= PX_FWD_INLINE ? px->fwd_inline : mc_alloc(cap * sizeof *px->fwd);
	mc_http_header *fwd = px->fwd;
	size_t n = mc_http_relay_headers(req->headers, req->nheaders, fwd, set_by_cell);
	size_t hl;
	const char *host = mc_http_header_find(req->headers, req->nheaders, "host", &hl);
	if (host)
		fwd[n++] = (mc_http_header){"X-Forwarded-Host", 16, host, hl};
	/* The client's address is appended to the chain it brought (peer is
	 * "ip:port"; the header wants the address alone). */
	const char *colon = strrchr(req->peer, ':');
	size_t iplen = colon ? (size_t)(colon - req->peer) : strlen(req->peer);
	size_t xl;
	const char *xff = mc_http_header_find(req->headers, req->nheaders, "x-forwarded-for", &xl);
	mc_buf_reset(&px->xff);
	if (xff) {
		mc_buf_append(&px->xff, xff, xl);
		mc_buf_append(&px->xff, ", ", 2);
	}
	mc_buf_append(&px->xff, req->peer, iplen);
	fwd[n++] = (mc_http_header){"X-Forwarded-For", 15, px->xff.data, px->xff.len};
	fwd[n++] = req->secure ? (mc_http_header){"X-Forwarded-Proto", 17, "https", 5}
			       : (mc_http_header){"X-Forwarded-Proto", 17, "http", 4};
	fwd[n++] = (mc_http_header){"X-Metrocell-Cell", 16, c->conf->cell, strlen(c->conf->cell)};
	px->nfwd = n;

	px->r = r;
	px->c = c;
	px->rt = r->route;
	px->rc = r->route->conf;
	px->pr = &r->route->px;
	px->head = strcmp(req->method, "HEAD") == 0;
	px->phase = PX_UPSTREAM;
	r->px = px;
	/* the budget runs from here: how long the client waited to send the
	 * request is not the workers' doing */
	px_timer_arm(px, px->rc->budget_ms);
	mc_http_exchange_watch(r->ex, on_client_event, px);
	r->seg_name = "upstream";
	r->seg_start_ns = mc_now_ns(); /* a retry's segment includes the failed first attempt */
	if (try_worker(px, NULL, 0, r->seg_start_ns) < 0)
		apply_policy(px);
}
