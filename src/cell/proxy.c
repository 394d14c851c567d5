/* Proxy routes: forward a request to one of the pool's workers over keep-alive
 * connections, picking by power of two choices on outstanding requests, with one
 * retry on another worker for idempotent requests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cell/cell_int.h"

int mc_cell_pools_init(cell *c)
{
	c->npools = c->conf->npools;
	c->pools = mc_calloc(c->npools ? c->npools : 1, sizeof *c->pools);
	for (size_t i = 0; i < c->npools; i++) {
		cell_pool *p = &c->pools[i];
		p->conf = &c->conf->pools[i];
		p->nworkers = p->conf->nworkers;
		p->workers = mc_calloc(p->nworkers, sizeof *p->workers);
		mc_http_pool_opts o;
		mc_http_pool_opts_default(&o);
		o.connect_timeout_ms = p->conf->connect_timeout_ms;
		o.request_timeout_ms = p->conf->timeout_ms;
		o.max_conns = p->conf->max_conns;
		o.max_idle = p->conf->max_conns;
		for (size_t w = 0; w < p->nworkers; w++) {
			int rc = mc_http_pool_new(&p->workers[w], c->loop, p->conf->workers[w], &o);
			if (rc < 0) {
				fprintf(stderr, "metrocell cell: pool %s: worker %s: %s\n",
					p->conf->name, p->conf->workers[w], mc_strerror(rc));
				return rc;
			}
		}
	}
	return 0;
}

void mc_cell_pools_fini(cell *c)
{
	for (size_t i = 0; i < c->npools; i++) {
		cell_pool *p = &c->pools[i];
		for (size_t w = 0; w < p->nworkers; w++)
			mc_http_pool_free(p->workers[w]);
		free(p->workers);
	}
	free(c->pools);
	c->pools = NULL;
	c->npools = 0;
}

/* Power of two choices: two distinct workers (the second one rotating), the one
 * with fewer outstanding requests wins. avoid (or SIZE_MAX) is skipped when the
 * pool has another worker. */
static size_t pick_worker(cell_pool *p, size_t avoid)
{
	size_t n = p->nworkers;
	if (n == 1)
		return 0;
	uint64_t k = p->picks++;
	size_t a = (size_t)(k % n);
	size_t b = (size_t)((k / n + 1 + a) % n);
	if (a == b)
		b = (a + 1) % n;
	if (a == avoid)
		return b;
	if (b == avoid)
		return a;
	return mc_http_pool_outstanding(p->workers[b]) < mc_http_pool_outstanding(p->workers[a])
		       ? b
		       : a;
}

static int hop_by_hop(const char *name, size_t len)
{
	static const char *const hop[] = {"connection",	  "keep-alive", "proxy-connection",
					  "te",		  "trailer",    "transfer-encoding",
					  "upgrade",	  "content-length", "host"};
	for (size_t i = 0; i < MC_ARRAY_LEN(hop); i++)
		if (strlen(hop[i]) == len && strncasecmp(hop[i], name, len) == 0)
			return 1;
	return 0;
}

/* Request fields the cell sets itself for the worker: a client's own copy would
 * come first and be taken for the cell's by most frameworks, so it is dropped
 * (X-Forwarded-For is extended, not replaced). */
static int set_by_cell(const char *name, size_t len)
{
	static const char *const own[] = {"x-forwarded-for", "x-forwarded-host", "x-metrocell-cell"};
	for (size_t i = 0; i < MC_ARRAY_LEN(own); i++)
		if (strlen(own[i]) == len && strncasecmp(own[i], name, len) == 0)
			return 1;
	return 0;
}

/* 1 when name is one of the tokens of a Connection header in h[0..n): those
 * fields are hop-by-hop too (RFC 9110 section 7.6.1) and never forwarded. */
static int connection_listed(const mc_http_header *h, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		if (h[i].name_len != 10 || strncasecmp(h[i].name, "connection", 10) != 0)
			continue;
		const char *v = h[i].value, *end = v + h[i].value_len;
		while (v < end) {
			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			const char *tok = v;
			while (v < end && *v != ',')
				v++;
			const char *te = v;
			while (te > tok && (te[-1] == ' ' || te[-1] == '\t'))
				te--;
			if ((size_t)(te - tok) == len && strncasecmp(tok, name, len) == 0)
				return 1;
		}
	}
	return 0;
}

static int idempotent(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
	       strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
	       strcmp(method, "OPTIONS") == 0;
}

static void send_upstream(cell_req *r);

static void on_response(void *arg, int err, const mc_http_response *res)
{
	cell_req *r = arg;
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	cell_pool *p = r->route->pool;
	if (err < 0) {
		if (r->attempt == 0 && p->nworkers > 1 && idempotent(req->method) &&
		    err != MC_ECANCELED) {
			r->attempt = 1;
			send_upstream(r);
			return;
		}
		int timeout = err == MC_ETIMEDOUT;
		mc_cell_finish_error(r, timeout ? 504 : 502, OUTCOME_REFUSED,
				     timeout ? "upstream_timeout" : "upstream_failed",
				     "worker %s of pool %s: %s", p->conf->workers[r->worker],
				     p->conf->name, mc_strerror(err));
		return;
	}
	/* A HEAD answer keeps the worker's Content-Length: it is the length a GET
	 * would have had, not the (empty) body relayed here. */
	int head = strcmp(req->method, "HEAD") == 0;
	mc_http_header *h = mc_alloc((res->nheaders + 1) * sizeof *h);
	size_t n = 0;
	for (size_t i = 0; i < res->nheaders; i++) {
		const mc_http_header *rh = &res->headers[i];
		int keep_len = head && rh->name_len == 14 &&
			       strncasecmp(rh->name, "content-length", 14) == 0;
		if ((keep_len || !hop_by_hop(rh->name, rh->name_len)) &&
		    !connection_listed(res->headers, res->nheaders, rh->name, rh->name_len))
			h[n++] = *rh;
	}
	mc_cell_finish(r, res->status, OUTCOME_LOCAL, h, n, res->body, res->body_len);
	free(h);
}

static void send_upstream(cell_req *r)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	cell_pool *p = r->route->pool;
	r->worker = pick_worker(p, r->attempt ? r->worker : SIZE_MAX);
	r->seg_name = "upstream";
	if (!r->attempt) /* a retry's segment includes the failed first attempt */
		r->seg_start_ns = mc_now_ns();
	int rc = mc_http_pool_request(p->workers[r->worker], req->method, req->target, r->fwd,
				      r->nfwd, req->body, req->body_len, on_response, r);
	if (rc < 0)
		mc_cell_finish_error(r, 503, OUTCOME_REFUSED, "overloaded",
				     "worker %s of pool %s has too many queued requests",
				     p->conf->workers[r->worker], p->conf->name);
}

void mc_cell_proxy_handle(cell_req *r)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	r->fwd = mc_alloc((req->nheaders + 3) * sizeof *r->fwd);
	size_t n = 0;
	for (size_t i = 0; i < req->nheaders; i++) {
		const mc_http_header *h = &req->headers[i];
		if (!hop_by_hop(h->name, h->name_len) && !set_by_cell(h->name, h->name_len) &&
		    !connection_listed(req->headers, req->nheaders, h->name, h->name_len))
			r->fwd[n++] = *h;
	}
	size_t hl;
	const char *host = mc_http_header_find(req->headers, req->nheaders, "host", &hl);
	if (host)
		r->fwd[n++] = (mc_http_header){"X-Forwarded-Host", 16, host, hl};
	/* The client's address is appended to the chain it brought (peer is
	 * "ip:port"; the header wants the address alone). */
	const char *colon = strrchr(req->peer, ':');
	size_t iplen = colon ? (size_t)(colon - req->peer) : strlen(req->peer);
	size_t xl;
	const char *xff = mc_http_header_find(req->headers, req->nheaders, "x-forwarded-for", &xl);
	mc_buf_reset(&r->xff);
	if (xff) {
		mc_buf_append(&r->xff, xff, xl);
		mc_buf_append(&r->xff, ", ", 2);
	}
	mc_buf_append(&r->xff, req->peer, iplen);
	r->fwd[n++] = (mc_http_header){"X-Forwarded-For", 15, r->xff.data, r->xff.len};
	r->fwd[n++] = (mc_http_header){"X-Metrocell-Cell", 16, r->c->conf->cell,
				       strlen(r->c->conf->cell)};
	r->nfwd = n;
	send_upstream(r);
}
