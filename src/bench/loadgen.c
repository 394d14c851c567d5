/* The demo's load generator: per cell, a fixed number of requests with a fixed
 * number in flight on the project's HTTP client pool, mixed 50 % proxy GET, 25 %
 * kv PUT of distinct keys and 25 % kv GET of keys the cell acknowledged; latency
 * is measured client-side from send to complete response and kept per (cell,
 * route, method, outcome). Also the read-back of every acknowledged write from
 * the region and a small synchronous request helper for orchestration. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench/bench_int.h"

#define ROUTE_PROXY "app"
#define ROUTE_KV "kv"

const char *mc_bench_op_name(mc_bench_op op)
{
	switch (op) {
	case MC_BENCH_OP_PROXY:
		return "proxy";
	case MC_BENCH_OP_PUT:
		return "kv_write";
	case MC_BENCH_OP_GET:
		return "kv_read";
	default:
		return "?";
	}
}

/* Copies header name of res into buf (NUL terminated, truncated); "" when absent. */
static void header_copy(const mc_http_response *res, const char *name, char *buf, size_t cap)
{
	size_t len = 0;
	const char *v = mc_http_header_find(res->headers, res->nheaders, name, &len);
	if (!v)
		len = 0;
	if (len >= cap)
		len = cap - 1;
	if (len)
		memcpy(buf, v, len);
	buf[len] = 0;
}

static int parse_version(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	return n == 0 ? MC_EINVAL : mc_parse_u64(s, n, UINT64_MAX, out);
}

/* Runs loop iterations without blocking so close callbacks (and the memory
 * released by them) complete. */
static void spin(uv_loop_t *loop, int n)
{
	for (int i = 0; i < n; i++)
		uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- synchronous helper --------------------------------------------------------------- */

typedef struct sync_call {
	int done;
	mc_bench_reply *out;
} sync_call;

static void on_sync_reply(void *arg, int err, const mc_http_response *res)
{
	sync_call *sc = arg;
	mc_bench_reply *out = sc->out;
	sc->done = 1;
	out->err = err;
	if (err)
		return;
	out->status = res->status;
	out->body = mc_alloc(res->body_len + 1);
	if (res->body_len)
		memcpy(out->body, res->body, res->body_len);
	out->body[res->body_len] = 0;
	out->body_len = res->body_len;
	header_copy(res, "X-Metrocell-Version", out->version, sizeof out->version);
	header_copy(res, "X-Metrocell-Home", out->home, sizeof out->home);
	header_copy(res, "X-Metrocell-Outcome", out->outcome, sizeof out->outcome);
}

int mc_bench_http_call(uv_loop_t *loop, mc_http_pool *pool, const char *method, const char *target,
		       const char *body, size_t body_len, mc_bench_reply *out)
{
	memset(out, 0, sizeof *out);
	sync_call sc = {.done = 0, .out = out};
	mc_http_header h = {"Content-Type", 12, "application/json", 16};
	int rc = mc_http_pool_request(pool, method, target, body ? &h : NULL, body ? 1 : 0, body,
				      body_len, on_sync_reply, &sc);
	if (rc) {
		out->err = rc;
		return 0;
	}
	while (!sc.done)
		uv_run(loop, UV_RUN_ONCE);
	return 0;
}

void mc_bench_reply_fini(mc_bench_reply *r)
{
	if (!r)
		return;
	free(r->body);
	r->body = NULL;
}

/* ---- load --------------------------------------------------------------------------- */

typedef struct req {
	mc_bench_load *l;
	size_t cell;
	mc_bench_op op;
	uint64_t key_idx;
	uint64_t expect_version; /* kv GET: the version the cell acknowledged */
	uint64_t start_ns;
} req;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
	/* xorshift64*: deterministic, so two runs send the same mix. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

int mc_bench_load_new(mc_bench_load **out, uv_loop_t *loop, const mc_bench_load_opts *opts,
		      const char *const *cells, const char *const *hostports, size_t ncells)
{
	if (ncells == 0 || opts->concurrency == 0 || opts->requests_per_cell == 0)
		return MC_EINVAL;
	mc_bench_load *l = mc_calloc(1, sizeof *l);
	l->loop = loop;
	l->opts = *opts;
	l->cells = mc_calloc(ncells, sizeof *l->cells);
	l->ncells = ncells;
	int rc = 0;
	for (size_t i = 0; i < ncells; i++) {
		mc_bench_cell_load *c = &l->cells[i];
		snprintf(c->cell, sizeof c->cell, "%s", cells[i]);
		snprintf(c->hostport, sizeof c->hostport, "%s", hostports[i]);
		mc_http_pool_opts po;
		mc_http_pool_opts_default(&po);
		po.max_conns = opts->concurrency;
		po.max_idle = opts->concurrency;
		po.request_timeout_ms = opts->timeout_ms;
		po.connect_timeout_ms = MC_MIN(opts->timeout_ms, 2000u);
		rc = mc_http_pool_new(&c->pool, loop, c->hostport, &po);
		if (rc)
			break;
	}
	if (rc) {
		mc_bench_load_free(l);
		return rc;
	}
	*out = l;
	return 0;
}

static mc_bench_row *row_get(mc_bench_load *l, size_t cell, const char *route, const char *method,
			     const char *outcome)
{
	for (size_t i = 0; i < l->nrows; i++) {
		mc_bench_row *r = &l->rows[i];
		if (r->cell == cell && !strcmp(r->route, route) && !strcmp(r->method, method) &&
		    !strcmp(r->outcome, outcome))
			return r;
	}
	if (l->nrows == l->caprows) {
		l->caprows = l->caprows ? l->caprows * 2 : 16;
		l->rows = mc_realloc(l->rows, l->caprows * sizeof *l->rows);
	}
	mc_bench_row *r = &l->rows[l->nrows++];
	memset(r, 0, sizeof *r);
	r->cell = cell;
	snprintf(r->route, sizeof r->route, "%s", route[0] ? route : "none");
	snprintf(r->method, sizeof r->method, "%s", method);
	snprintf(r->outcome, sizeof r->outcome, "%s", outcome[0] ? outcome : "none");
	mc_hist_init(&r->hist);
	return r;
}

static int load_finished(const mc_bench_load *l)
{
	for (size_t i = 0; i < l->ncells; i++)
		if (l->cells[i].done < l->opts.requests_per_cell)
			return 0;
	return 1;
}

static void write_add(mc_bench_cell_load *c, uint64_t idx, uint64_t version, uint64_t seq)
{
	if (c->nwrites == c->capwrites) {
		c->capwrites = c->capwrites ? c->capwrites * 2 : 256;
		c->writes = mc_realloc(c->writes, c->capwrites * sizeof *c->writes);
	}
	c->writes[c->nwrites++] = (mc_bench_write){.idx = idx, .version = version, .seq = seq};
	if (seq > c->last_ack_seq)
		c->last_ack_seq = seq;
}

static void refill(mc_bench_load *l, size_t cell);

static void on_load_reply(void *arg, int err, const mc_http_response *res)
{
	req *q = arg;
	mc_bench_load *l = q->l;
	mc_bench_cell_load *c = &l->cells[q->cell];
	uint64_t now = mc_now_ns();
	c->inflight--;
	if (err == MC_ECANCELED && l->stopped) {
		free(q);
		return;
	}
	c->done++;
	c->last_ns = now;
	uint64_t lat_us = (now - q->start_ns) / 1000u;
	const char *method = q->op == MC_BENCH_OP_PUT ? "PUT" : "GET";
	if (err) {
		mc_bench_row *r =
		    row_get(l, q->cell, q->op == MC_BENCH_OP_PROXY ? ROUTE_PROXY : ROUTE_KV, method,
			    "client_error");
		r->count++;
		r->nerr++;
		mc_hist_record(&r->hist, lat_us);
		c->errors++;
		if (!c->first_error[0])
			snprintf(c->first_error, sizeof c->first_error,
				 "%s request %" PRIu64 ": %s", mc_bench_op_name(q->op), q->key_idx,
				 mc_strerror(err));
	} else {
		char route[32], outcome[32], version[32];
		header_copy(res, "X-Metrocell-Route", route, sizeof route);
		header_copy(res, "X-Metrocell-Outcome", outcome, sizeof outcome);
		header_copy(res, "X-Metrocell-Version", version, sizeof version);
		mc_bench_row *r = row_get(l, q->cell, route, method, outcome);
		r->count++;
		int st = res->status;
		if (st >= 200 && st < 300)
			r->n2xx++;
		else if (st >= 300 && st < 400)
			r->n3xx++;
		else if (st >= 400 && st < 500)
			r->n4xx++;
		else
			r->n5xx++;
		if (!res->reused)
			r->new_conns++;
		mc_hist_record(&r->hist, lat_us);
		if (st < 200 || st >= 300) {
			c->non2xx++;
			if (!c->first_error[0])
				snprintf(c->first_error, sizeof c->first_error,
					 "%s request %" PRIu64 ": HTTP %d outcome %s: %.*s",
					 mc_bench_op_name(q->op), q->key_idx, st,
					 outcome[0] ? outcome : "-",
					 (int)MC_MIN(res->body_len, 80u),
					 res->body ? res->body : "");
		}
		uint64_t v = 0;
		if (q->op == MC_BENCH_OP_PUT && st >= 200 && st < 300) {
			uint64_t seq = 0;
			json_t *doc =
			    res->body_len ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
			json_t *js = doc ? json_object_get(doc, "seq") : NULL;
			if (json_is_integer(js) && json_integer_value(js) > 0)
				seq = (uint64_t)json_integer_value(js);
			if (parse_version(version, &v) != 0) {
				json_t *jv = doc ? json_object_get(doc, "version") : NULL;
				if (!json_is_string(jv) ||
				    parse_version(json_string_value(jv), &v) != 0)
					v = 0;
			}
			json_decref(doc);
			if (v)
				write_add(c, q->key_idx, v, seq);
			else
				c->put_no_version++;
		} else if (q->op == MC_BENCH_OP_GET) {
			if (st == 200 && parse_version(version, &v) == 0 && v >= q->expect_version)
				c->reads_ok++;
			else if (st == 200)
				c->reads_stale++;
			else if (st == 404)
				c->reads_missing++;
		}
	}
	size_t cell = q->cell;
	free(q);
	if (!l->stopped)
		refill(l, cell);
}

/* Issues the next request of cell; returns 0, or the pool's error (then the
 * request counts as failed and no callback will come). */
static int issue(mc_bench_load *l, size_t cell)
{
	mc_bench_cell_load *c = &l->cells[cell];
	uint64_t idx = c->next++;
	req *q = mc_calloc(1, sizeof *q);
	q->l = l;
	q->cell = cell;
	q->key_idx = idx;
	/* 50 % proxy, 25 % write, 25 % read of an acknowledged write. */
	switch (idx % 4) {
	case 0:
	case 2:
		q->op = MC_BENCH_OP_PROXY;
		break;
	case 1:
		q->op = MC_BENCH_OP_PUT;
		break;
	default:
		q->op = c->nwrites ? MC_BENCH_OP_GET : MC_BENCH_OP_PUT;
		break;
	}
	char target[160];
	char body[1024];
	size_t body_len = 0;
	mc_http_header hdr = {"Content-Type", 12, "application/json", 16};
	const char *method = "GET";
	if (q->op == MC_BENCH_OP_PROXY) {
		snprintf(target, sizeof target, "/app/items/%" PRIu64, idx);
	} else if (q->op == MC_BENCH_OP_PUT) {
		method = "PUT";
		snprintf(target, sizeof target, "/v1/kv/demo:%s:%" PRIu64, c->cell, idx);
		int n = snprintf(body, sizeof body,
				 "{\"cell\":\"%s\",\"i\":%" PRIu64 ",\"written_at_ms\":%" PRIu64
				 ",\"pad\":\"",
				 c->cell, idx, mc_wall_ms());
		size_t len = (size_t)n;
		size_t want = MC_MIN(l->opts.value_bytes, sizeof body - 3);
		for (; len < want; len++)
			body[len] = (char)('a' + (len % 26));
		memcpy(body + len, "\"}", 3);
		body_len = len + 2;
	} else {
		const mc_bench_write *w = &c->writes[rng_next() % c->nwrites];
		q->key_idx = w->idx;
		q->expect_version = w->version;
		snprintf(target, sizeof target, "/v1/kv/demo:%s:%" PRIu64, c->cell, w->idx);
	}
	c->ops[q->op]++;
	q->start_ns = mc_now_ns();
	if (!c->first_ns)
		c->first_ns = q->start_ns;
	c->inflight++;
	int rc =
	    mc_http_pool_request(c->pool, method, target, body_len ? &hdr : NULL, body_len ? 1 : 0,
				 body_len ? body : NULL, body_len, on_load_reply, q);
	if (rc) {
		c->inflight--;
		c->done++;
		c->errors++;
		mc_bench_row *r =
		    row_get(l, cell, q->op == MC_BENCH_OP_PROXY ? ROUTE_PROXY : ROUTE_KV, method,
			    "client_error");
		r->count++;
		r->nerr++;
		mc_hist_record(&r->hist, 0);
		if (!c->first_error[0])
			snprintf(c->first_error, sizeof c->first_error, "queueing request: %s",
				 mc_strerror(rc));
		free(q);
	}
	return rc;
}

static void refill(mc_bench_load *l, size_t cell)
{
	mc_bench_cell_load *c = &l->cells[cell];
	while (!l->stopped && c->inflight < l->opts.concurrency &&
	       c->next < l->opts.requests_per_cell)
		issue(l, cell);
}

static void on_tick(uv_timer_t *t)
{
	mc_bench_load *l = t->data;
	if (l->tick && l->tick(l->tick_arg, l))
		l->stopped = 1;
}

static void on_timer_closed(uv_handle_t *h)
{
	*(int *)h->data = 1;
}

int mc_bench_load_run(mc_bench_load *l, mc_bench_tick_cb tick, void *arg)
{
	l->tick = tick;
	l->tick_arg = arg;
	l->start_ns = mc_now_ns();
	uv_timer_t timer;
	uv_timer_init(l->loop, &timer);
	timer.data = l;
	uint32_t period = l->opts.progress_ms ? l->opts.progress_ms : 500;
	uv_timer_start(&timer, on_tick, period, period);
	for (size_t i = 0; i < l->ncells; i++)
		refill(l, i);
	while (!l->stopped && !load_finished(l))
		uv_run(l->loop, UV_RUN_ONCE);
	l->end_ns = mc_now_ns();
	int closed = 0;
	timer.data = &closed;
	uv_close((uv_handle_t *)&timer, on_timer_closed);
	while (!closed)
		uv_run(l->loop, UV_RUN_NOWAIT);
	if (l->tick)
		l->tick(l->tick_arg, l); /* final progress line */
	return l->stopped ? MC_ECANCELED : 0;
}

void mc_bench_load_progress(const mc_bench_load *l, uint64_t *done, uint64_t *total,
			    uint64_t *errors)
{
	uint64_t d = 0, e = 0;
	for (size_t i = 0; i < l->ncells; i++) {
		d += l->cells[i].done;
		e += l->cells[i].errors + l->cells[i].non2xx;
	}
	*done = d;
	*total = l->opts.requests_per_cell * l->ncells;
	*errors = e;
}

void mc_bench_load_disconnect(mc_bench_load *l)
{
	if (!l)
		return;
	l->stopped = 1;
	for (size_t i = 0; i < l->ncells; i++) {
		mc_http_pool_free(l->cells[i].pool);
		l->cells[i].pool = NULL;
	}
	spin(l->loop, 16);
}

void mc_bench_load_free(mc_bench_load *l)
{
	if (!l)
		return;
	mc_bench_load_disconnect(l);
	for (size_t i = 0; i < l->ncells; i++)
		free(l->cells[i].writes);
	free(l->cells);
	free(l->rows);
	free(l);
}

/* ---- read-back from the region -------------------------------------------------------- */

typedef struct verify_run {
	mc_bench_load *l;
	mc_http_pool *pool;
	uint32_t concurrency;
	size_t cell, pos; /* cursor over every cell's writes */
	uint64_t inflight, total, done;
	uint64_t deadline_ns;
	int gave_up;
	mc_bench_verify *all, *per_cell;
} verify_run;

typedef struct verify_req {
	verify_run *v;
	size_t cell;
	const mc_bench_write *w;
} verify_req;

static void verify_refill(verify_run *v);

static void problem(mc_bench_verify *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(mc_bench_verify *r, const char *fmt, ...)
{
	if (r->first_problem[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->first_problem, sizeof r->first_problem, fmt, ap);
	va_end(ap);
}

static void on_verify_reply(void *arg, int err, const mc_http_response *res)
{
	verify_req *q = arg;
	verify_run *v = q->v;
	const char *cell = v->l->cells[q->cell].cell;
	mc_bench_verify *outs[2] = {v->all, v->per_cell ? &v->per_cell[q->cell] : NULL};
	char version[32] = "", home[32] = "";
	uint64_t got = 0;
	int kind; /* 0 match, 1 missing, 2 mismatch, 3 error */
	if (err) {
		kind = 3;
	} else {
		header_copy(res, "X-Metrocell-Version", version, sizeof version);
		header_copy(res, "X-Metrocell-Home", home, sizeof home);
		if (res->status == 200 && parse_version(version, &got) == 0 && got == q->w->version)
			kind = 0;
		else if (res->status == 404)
			kind = 1;
		else if (res->status == 200)
			kind = 2;
		else
			kind = 3;
	}
	for (size_t i = 0; i < 2; i++) {
		mc_bench_verify *r = outs[i];
		if (!r)
			continue;
		r->checked++;
		switch (kind) {
		case 0:
			r->matched++;
			if (strcmp(home, cell) != 0) {
				r->home_mismatch++;
				problem(r, "demo:%s:%" PRIu64 ": region says home \"%s\"", cell,
					q->w->idx, home);
			}
			break;
		case 1:
			r->missing++;
			problem(r,
				"demo:%s:%" PRIu64 " (version %" PRIu64 ", seq %" PRIu64
				") is not in the region (404)",
				cell, q->w->idx, q->w->version, q->w->seq);
			break;
		case 2:
			r->version_mismatch++;
			problem(r,
				"demo:%s:%" PRIu64 ": cell acknowledged version %" PRIu64
				", region has %s",
				cell, q->w->idx, q->w->version, version[0] ? version : "none");
			break;
		default:
			r->errors++;
			if (err)
				problem(r, "demo:%s:%" PRIu64 ": %s", cell, q->w->idx,
					mc_strerror(err));
			else
				problem(r, "demo:%s:%" PRIu64 ": region answered HTTP %d", cell,
					q->w->idx, res->status);
			break;
		}
	}
	free(q);
	v->inflight--;
	v->done++;
	verify_refill(v);
}

static void verify_refill(verify_run *v)
{
	if (mc_bench_proc_signalled() || mc_now_ns() > v->deadline_ns) {
		/* Stop issuing; what was not read back counts as an error. */
		if (!v->gave_up) {
			v->gave_up = 1;
			uint64_t left = v->total - v->done - v->inflight;
			v->all->checked += left;
			v->all->errors += left;
			/* the same writes, cell by cell: the rest of the current cell's
			 * list and every later cell's */
			for (size_t i = v->cell; v->per_cell && i < v->l->ncells; i++) {
				uint64_t n = v->l->cells[i].nwrites - (i == v->cell ? v->pos : 0);
				v->per_cell[i].checked += n;
				v->per_cell[i].errors += n;
			}
			problem(v->all, "%" PRIu64 " writes not read back: %s", left,
				mc_bench_proc_signalled() ? "interrupted"
							  : "read-back deadline passed");
			v->done += left;
		}
		return;
	}
	while (v->inflight < v->concurrency && v->cell < v->l->ncells) {
		mc_bench_cell_load *c = &v->l->cells[v->cell];
		if (v->pos >= c->nwrites) {
			v->cell++;
			v->pos = 0;
			continue;
		}
		verify_req *q = mc_calloc(1, sizeof *q);
		q->v = v;
		q->cell = v->cell;
		q->w = &c->writes[v->pos++];
		char target[160];
		snprintf(target, sizeof target, "/v1/kv/demo:%s:%" PRIu64, c->cell, q->w->idx);
		v->inflight++;
		int rc = mc_http_pool_request(v->pool, "GET", target, NULL, 0, NULL, 0,
					      on_verify_reply, q);
		if (rc) {
			v->inflight--;
			v->done++;
			v->all->checked++;
			v->all->errors++;
			problem(v->all, "queueing read-back: %s", mc_strerror(rc));
			if (v->per_cell) {
				v->per_cell[q->cell].checked++;
				v->per_cell[q->cell].errors++;
			}
			free(q);
		}
	}
}

int mc_bench_load_verify(mc_bench_load *l, const char *region_hostport, uint32_t concurrency,
			 uint32_t deadline_ms, mc_bench_verify *out, mc_bench_verify *per_cell)
{
	memset(out, 0, sizeof *out);
	if (per_cell)
		memset(per_cell, 0, l->ncells * sizeof *per_cell);
	verify_run v = {
	    .l = l, .concurrency = concurrency ? concurrency : 1, .all = out, .per_cell = per_cell};
	for (size_t i = 0; i < l->ncells; i++)
		v.total += l->cells[i].nwrites;
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_conns = v.concurrency;
	po.max_idle = v.concurrency;
	po.request_timeout_ms = 5000;
	int rc = mc_http_pool_new(&v.pool, l->loop, region_hostport, &po);
	if (rc)
		return rc;
	uint64_t t0 = mc_now_ns();
	v.deadline_ns = t0 + (uint64_t)deadline_ms * 1000000u;
	verify_refill(&v);
	while (v.done < v.total)
		uv_run(l->loop, UV_RUN_ONCE);
	out->duration_us = (mc_now_ns() - t0) / 1000u;
	mc_http_pool_free(v.pool);
	spin(l->loop, 16);
	return 0;
}
