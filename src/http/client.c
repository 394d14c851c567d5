/* HTTP/1.1 client: a keep-alive connection pool to one upstream on a libuv
 * loop. Requests wait in a bounded FIFO for an idle connection or a free slot;
 * responses are parsed with llhttp (Content-Length, chunked, or read until
 * close) and a connection is parked for reuse only when the whole response was
 * read and both sides allowed keep-alive. A response is either buffered whole
 * (mc_http_pool_request) or streamed to the caller as it arrives: head first,
 * then body pieces, with pause/resume for backpressure (mc_http_pool_call). */
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "http/http_int.h"
#include "net/net.h"

#define CLIENT_MAX_HEADERS 256
#define FREE_REQS_MAX 256

typedef struct creq creq;
typedef struct pconn pconn;

struct creq {
	mc_http_link link; /* in queue, deferred or the free list */
	mc_buf wire;	   /* the whole request: head + body */
	mc_http_response_cb cb;
	mc_http_call_cbs cbs; /* streaming calls (cb is NULL then) */
	void *arg;
	mc_http_pool *pool;
	pconn *conn; /* the connection carrying it, NULL while queued or deferred */
	uint32_t connect_ms, first_byte_ms, idle_ms; /* streaming: per-call timeouts */
	int err;				     /* for a deferred failure */
	uint8_t is_head, idempotent, retried, fresh, queued, streaming, paused;
};

enum { PC_CONNECTING, PC_BUSY, PC_IDLE, PC_CLOSING };

struct pconn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t connect;
	uv_write_t wreq;
	mc_http_pool *pool;
	mc_http_link link; /* in pool->idle or pool->active */
	llhttp_t parser;
	mc_http_head head;
	mc_buf body;
	creq *req;
	uint64_t connect_start, connect_ns;
	size_t resp_bytes;
	unsigned nsent; /* requests sent on this connection */
	int state;
	int open_handles;
	uint8_t writing, got_bytes, complete, keep, reused, too_big;
	uint8_t read_stopped; /* a streaming call paused reading */
	uint8_t due_set, armed; /* see pconn_arm */
	uint64_t due_ms, armed_ms;
	mc_http_rd rd; /* read with recv() once connected (rd.fd -1: libuv reads) */
};

struct mc_http_pool {
	uv_loop_t *loop;
	struct sockaddr_storage addr;
	char *host; /* Host header value */
	mc_http_pool_opts opts;
	mc_http_link idle;     /* idle connections, most recently used last */
	mc_http_link active;   /* connecting and busy connections */
	mc_http_link queue;    /* requests waiting for a connection */
	mc_http_link deferred; /* failures to report on the next loop turn */
	mc_http_link freereqs;
	size_t nconns, nidle, nqueue, outstanding, nfree;
	size_t handles; /* the idle handle + connections not fully closed */
	uv_idle_t idler;
	int closing;
	int in_cb; /* user callbacks running: dispatch waits until they return */
	int rd_fd_cap; /* see mc_http_rd_init */
	char slab[MC_HTTP_SLAB];
};

static void pool_dispatch(mc_http_pool *p);

/* ---- requests -------------------------------------------------------------------- */

static creq *req_alloc(mc_http_pool *p)
{
	if (!mc_http_list_empty(&p->freereqs)) {
		mc_http_link *l = p->freereqs.next;
		mc_http_list_remove(l);
		p->nfree--;
		creq *r = MC_HTTP_CONTAINER(l, creq, link);
		mc_buf_reset(&r->wire);
		return r;
	}
	creq *r = mc_calloc(1, sizeof *r);
	mc_http_list_init(&r->link);
	mc_buf_init(&r->wire);
	r->pool = p;
	return r;
}

static void req_release(mc_http_pool *p, creq *r)
{
	r->cb = NULL;
	memset(&r->cbs, 0, sizeof r->cbs);
	r->arg = NULL;
	r->conn = NULL;
	r->err = 0;
	r->connect_ms = r->first_byte_ms = r->idle_ms = 0;
	r->is_head = r->idempotent = r->retried = r->fresh = r->queued = 0;
	r->streaming = r->paused = 0;
	if (!p->closing && p->nfree < FREE_REQS_MAX && r->wire.cap <= MC_HTTP_KEEP_BUF) {
		mc_http_list_push_back(&p->freereqs, &r->link);
		p->nfree++;
		return;
	}
	mc_buf_fini(&r->wire);
	free(r);
}

/* Calls the request's final callback exactly once (a streaming call's on_end)
 * and recycles the request. */
static void req_finish(mc_http_pool *p, creq *r, int err, const mc_http_response *res)
{
	mc_http_response_cb cb = r->cb;
	void (*on_end)(void *, int) = r->cbs.on_end;
	void *arg = r->arg;
	MC_ASSERT(p->outstanding > 0);
	p->outstanding--;
	req_release(p, r);
	p->in_cb++;
	if (cb)
		cb(arg, err, res);
	else
		on_end(arg, err);
	p->in_cb--;
}

/* Detaches the request from its connection; returns it (or NULL). */
static creq *pconn_detach(pconn *c)
{
	creq *r = c->req;
	c->req = NULL;
	if (r)
		r->conn = NULL;
	return r;
}

static void queue_push(mc_http_pool *p, creq *r, int front)
{
	if (front)
		mc_http_list_push_front(&p->queue, &r->link);
	else
		mc_http_list_push_back(&p->queue, &r->link);
	r->queued = 1;
	p->nqueue++;
}

static void queue_remove(mc_http_pool *p, creq *r)
{
	mc_http_list_remove(&r->link);
	r->queued = 0;
	p->nqueue--;
}

static void on_idler(uv_idle_t *h)
{
	mc_http_pool *p = h->data;
	uv_idle_stop(h);
	while (!mc_http_list_empty(&p->deferred)) {
		mc_http_link *l = p->deferred.next;
		mc_http_list_remove(l);
		creq *r = MC_HTTP_CONTAINER(l, creq, link);
		req_finish(p, r, r->err, NULL);
	}
	pool_dispatch(p);
}

/* Reports a failure on the next loop turn (never from inside pool_request). */
static void req_fail_later(mc_http_pool *p, creq *r, int err)
{
	r->err = err;
	mc_http_list_push_back(&p->deferred, &r->link);
	uv_idle_start(&p->idler, on_idler);
}

/* ---- connections ------------------------------------------------------------------ */

static void pool_release(mc_http_pool *p)
{
	MC_ASSERT(p->handles > 0);
	if (--p->handles > 0)
		return;
	while (!mc_http_list_empty(&p->freereqs)) {
		mc_http_link *l = p->freereqs.next;
		mc_http_list_remove(l);
		creq *r = MC_HTTP_CONTAINER(l, creq, link);
		mc_buf_fini(&r->wire);
		free(r);
	}
	free(p->host);
	free(p);
}

static void on_pconn_close(uv_handle_t *h)
{
	pconn *c = h->data;
	if (--c->open_handles > 0)
		return;
	mc_http_pool *p = c->pool;
	mc_http_head_fini(&c->head);
	mc_buf_fini(&c->body);
	free(c);
	pool_release(p);
}

/* Closes the connection; its slot is free at once, its memory after libuv. */
static void pconn_close(pconn *c)
{
	mc_http_pool *p = c->pool;
	if (c->state == PC_CLOSING)
		return;
	if (c->state == PC_IDLE)
		p->nidle--;
	mc_http_list_remove(&c->link);
	c->state = PC_CLOSING;
	p->nconns--;
	mc_http_rd_close(&c->rd, on_pconn_close); /* first: see mc_http_rd_close */
	uv_close((uv_handle_t *)&c->tcp, on_pconn_close);
	uv_close((uv_handle_t *)&c->timer, on_pconn_close);
}

static int map_err(int err)
{
	if (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE || err == UV_ECONNABORTED)
		return MC_ECLOSED;
	return err;
}

/* The connection failed while carrying its request: close it, then either retry
 * the request once on a fresh connection (an idempotent request on a reused
 * connection that closed before any response byte: the stale keep-alive race) or
 * report err. A POST is never resent: the server may have acted on it before
 * closing. sync is set when called from inside pool_dispatch. */
static void pconn_fail(pconn *c, int err, int sync)
{
	mc_http_pool *p = c->pool;
	creq *r = c->req;
	int retry = r && r->idempotent && c->reused && !c->got_bytes && err != MC_ETIMEDOUT &&
		    err != MC_ETOOBIG && err != MC_EPROTO;
	pconn_detach(c);
	pconn_close(c);
	if (!r)
		return;
	if (retry && !r->retried && !p->closing) {
		r->retried = 1;
		r->fresh = 1;
		queue_push(p, r, 1);
		if (!sync)
			pool_dispatch(p);
		return;
	}
	if (sync) {
		req_fail_later(p, r, map_err(err));
		return;
	}
	req_finish(p, r, map_err(err), NULL);
	pool_dispatch(p);
}

static void on_pconn_timer(uv_timer_t *t);

/* The connection's timer moves lazily, as the server's does: due_ms is when the
 * current wait times out (due_set 0: none), and the libuv timer is restarted
 * only for an earlier due time; armed at most the pool's shorter timeout ahead,
 * it fires early now and then and re-arms for what is left. A kept-alive
 * connection then needs no timer-heap operation per request (it had four). */
static void pconn_timer_set(pconn *c, uint64_t now)
{
	const mc_http_pool_opts *o = &c->pool->opts;
	uint64_t at = MC_MIN(c->due_ms, now + MC_MIN(o->connect_timeout_ms, o->request_timeout_ms));
	c->armed_ms = at;
	c->armed = 1;
	uv_timer_start(&c->timer, on_pconn_timer, at - now, 0);
}

static void pconn_arm(pconn *c, uint32_t ms)
{
	uint64_t now = uv_now(c->pool->loop);
	c->due_ms = now + ms;
	c->due_set = 1;
	if (!c->armed || c->armed_ms > c->due_ms)
		pconn_timer_set(c, now);
}

static void pconn_disarm(pconn *c)
{
	c->due_set = 0;
}

static void on_pconn_timer(uv_timer_t *t)
{
	pconn *c = t->data;
	c->armed = 0;
	if (!c->due_set || c->state == PC_CLOSING)
		return;
	uint64_t now = uv_now(c->pool->loop);
	if (now < c->due_ms) {
		pconn_timer_set(c, now);
		return;
	}
	c->due_set = 0;
	if (c->state == PC_IDLE)
		pconn_close(c);
	else if (c->state != PC_CLOSING)
		pconn_fail(c, MC_ETIMEDOUT, 0);
}

static void on_pconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_pconn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static int pconn_read_start(pconn *c)
{
	if (c->rd.fd >= 0)
		return mc_http_rd_start(&c->rd, on_pconn_alloc, on_pconn_read);
	return uv_read_start((uv_stream_t *)&c->tcp, on_pconn_alloc, on_pconn_read);
}

static void pconn_read_stop(pconn *c)
{
	if (c->rd.fd >= 0)
		mc_http_rd_stop(&c->rd);
	else
		uv_read_stop((uv_stream_t *)&c->tcp);
}

/* Reading resumes on a connection a paused call had stopped (an idle
 * connection reads to notice the server closing it). Returns 0 or a uv error. */
static int pconn_read_resume(pconn *c)
{
	if (!c->read_stopped)
		return 0;
	c->read_stopped = 0;
	return pconn_read_start(c);
}

static void pconn_park(pconn *c)
{
	mc_http_pool *p = c->pool;
	if (p->closing || p->nidle >= p->opts.max_idle || pconn_read_resume(c) < 0) {
		pconn_close(c);
		return;
	}
	mc_http_list_remove(&c->link);
	mc_http_list_push_back(&p->idle, &c->link);
	p->nidle++;
	c->state = PC_IDLE;
	pconn_arm(c, p->opts.idle_timeout_ms);
}

/* A whole response arrived: hand it over, then park or close the connection. */
static void pconn_complete(pconn *c)
{
	mc_http_pool *p = c->pool;
	creq *r = pconn_detach(c);
	pconn_disarm(c);
	int reuse = c->keep && !c->writing;
	mc_http_response res;
	memset(&res, 0, sizeof res);
	if (!r->streaming) {
		res.status = llhttp_get_status_code(&c->parser);
		res.headers = c->head.hdrs;
		res.nheaders = c->head.nspans;
		res.body = c->body.len ? c->body.data : "";
		res.body_len = c->body.len;
		res.content_length = (int64_t)c->body.len;
		res.reused = c->reused;
		res.connect_ns = c->reused ? 0 : c->connect_ns;
	}
	if (!reuse)
		pconn_close(c); /* buffers stay valid until the close callbacks */
	req_finish(p, r, 0, &res);
	if (reuse && c->state != PC_CLOSING) {
		if (c->body.cap > MC_HTTP_KEEP_BUF)
			mc_buf_fini(&c->body);
		pconn_park(c);
	}
	pool_dispatch(p);
}

static int ccb_message_begin(llhttp_t *ps)
{
	pconn *c = ps->data;
	mc_http_head_reset(&c->head);
	mc_buf_reset(&c->body);
	return 0;
}

static int ccb_header_field(llhttp_t *ps, const char *at, size_t n)
{
	pconn *c = ps->data;
	if (mc_http_head_field(&c->head, at, n) < 0) {
		c->too_big = 1;
		return HPE_USER;
	}
	return 0;
}

static int ccb_header_field_complete(llhttp_t *ps)
{
	pconn *c = ps->data;
	return mc_http_head_field_done(&c->head);
}

static int ccb_header_value(llhttp_t *ps, const char *at, size_t n)
{
	pconn *c = ps->data;
	if (mc_http_head_value(&c->head, at, n) < 0) {
		c->too_big = 1;
		return HPE_USER;
	}
	return 0;
}

static int ccb_header_value_complete(llhttp_t *ps)
{
	pconn *c = ps->data;
	return mc_http_head_value_done(&c->head);
}

/* Hands a streaming call its response head. Returns 0, or -1 when the caller
 * aborted the call from the callback (the connection is closing then). */
static int stream_head(pconn *c, int status, int64_t content_length)
{
	mc_http_pool *p = c->pool;
	creq *r = c->req;
	mc_http_response res;
	memset(&res, 0, sizeof res);
	res.status = status;
	res.headers = c->head.hdrs;
	res.nheaders = c->head.nspans;
	res.body = "";
	res.content_length = content_length;
	res.reused = c->reused;
	res.connect_ns = c->reused ? 0 : c->connect_ns;
	p->in_cb++;
	r->cbs.on_head(r->arg, &res);
	p->in_cb--;
	return c->req ? 0 : -1;
}

static int ccb_headers_complete(llhttp_t *ps)
{
	pconn *c = ps->data;
	creq *r = c->req;
	int status = llhttp_get_status_code(ps);
	mc_http_head_finish(&c->head, 0);
	if (status == 101)
		return -1; /* we never ask to switch protocols */
	if (status < 200)
		return 1; /* interim response: no body, the final one follows */
	int bodyless = (r && r->is_head) || status == 204 || status == 304;
	if (r && r->streaming) {
		int64_t len = -1;
		if (bodyless)
			len = 0;
		else if ((ps->flags & F_CONTENT_LENGTH) && !(ps->flags & F_CHUNKED) &&
			 ps->content_length <= INT64_MAX)
			len = (int64_t)ps->content_length;
		if (stream_head(c, status, len) < 0)
			return -1;
		return bodyless ? 1 : 0;
	}
	if (bodyless)
		return 1;
	if ((ps->flags & F_CONTENT_LENGTH) &&
	    ps->content_length > c->pool->opts.max_response_bytes) {
		c->too_big = 1;
		return -1;
	}
	if ((ps->flags & F_CONTENT_LENGTH) && ps->content_length > 0)
		mc_buf_reserve(&c->body, (size_t)ps->content_length);
	return 0;
}

static int ccb_body(llhttp_t *ps, const char *at, size_t n)
{
	pconn *c = ps->data;
	creq *r = c->req;
	if (r && r->streaming) {
		mc_http_pool *p = c->pool;
		p->in_cb++;
		r->cbs.on_body(r->arg, at, n);
		p->in_cb--;
		return c->req ? 0 : HPE_USER; /* aborted from the callback */
	}
	mc_buf_append(&c->body, at, n); /* bounded: resp_bytes counts every byte read */
	return 0;
}

static int ccb_message_complete(llhttp_t *ps)
{
	pconn *c = ps->data;
	int status = llhttp_get_status_code(ps);
	if (status >= 100 && status < 200)
		return 0;
	c->complete = 1;
	c->keep = (uint8_t)llhttp_should_keep_alive(ps);
	return HPE_PAUSED;
}

static const llhttp_settings_t client_settings = {
    .on_message_begin = ccb_message_begin,
    .on_header_field = ccb_header_field,
    .on_header_value = ccb_header_value,
    .on_header_field_complete = ccb_header_field_complete,
    .on_header_value_complete = ccb_header_value_complete,
    .on_headers_complete = ccb_headers_complete,
    .on_body = ccb_body,
    .on_message_complete = ccb_message_complete,
};

static void on_pconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	pconn *c = h->data;
	(void)suggested;
	buf->base = c->pool->slab;
	buf->len = sizeof c->pool->slab;
}

/* The timeout that applies while waiting for the next response byte: the
 * whole-response timeout for a buffered request; for a streaming call the
 * first-byte timeout until a byte came, then the idle timeout between reads. */
static uint32_t pconn_wait_ms(const pconn *c)
{
	const creq *r = c->req;
	uint32_t dflt = c->pool->opts.request_timeout_ms;
	if (!r || !r->streaming)
		return dflt;
	if (!c->got_bytes)
		return r->first_byte_ms ? r->first_byte_ms : dflt;
	return r->idle_ms ? r->idle_ms : dflt;
}

static void on_pconn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	pconn *c = st->data;
	if (nread == 0 || c->state == PC_CLOSING)
		return;
	if (c->state != PC_BUSY || !c->req) {
		pconn_close(c); /* closed by the server or unexpected bytes while idle */
		return;
	}
	if (nread < 0) {
		if (nread == UV_EOF && c->got_bytes) {
			llhttp_errno_t e = llhttp_finish(&c->parser);
			if ((e == HPE_OK || e == HPE_PAUSED) && c->complete) {
				c->keep = 0;
				pconn_complete(c);
				return;
			}
		}
		pconn_fail(c, (int)nread, 0);
		return;
	}
	size_t n = (size_t)nread;
	mc_http_pool *p = c->pool;
	int streaming = c->req->streaming;
	c->got_bytes = 1;
	c->resp_bytes += n;
	/* A streamed body is not held here: only a buffered response is bounded as
	 * a whole (a streamed head is bounded by the head accumulator). */
	if (!streaming && c->resp_bytes > p->opts.max_response_bytes) {
		pconn_fail(c, MC_ETOOBIG, 0);
		return;
	}
	if (streaming && !c->req->paused)
		pconn_arm(c, pconn_wait_ms(c));
	llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, n);
	if (c->state == PC_CLOSING || !c->req) {
		pool_dispatch(p); /* the call was aborted from one of its callbacks */
		return;
	}
	if (e == HPE_OK)
		return;
	if (e == HPE_PAUSED && c->complete) {
		size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - buf->base);
		if (used < n)
			c->keep = 0; /* bytes past the response: not a connection to reuse */
		pconn_complete(c);
		return;
	}
	MC_DEBUG("http", "bad response from upstream: %s", llhttp_get_error_reason(&c->parser));
	pconn_fail(c, c->too_big ? MC_ETOOBIG : MC_EPROTO, 0);
}

static void on_pconn_write(uv_write_t *w, int status)
{
	pconn *c = w->data;
	c->writing = 0;
	if (c->state == PC_CLOSING || status == 0)
		return;
	pconn_fail(c, status, 0);
}

/* Sends r on c (connected, not busy). */
static void pconn_send(pconn *c, creq *r, int sync)
{
	mc_http_pool *p = c->pool;
	if (c->state == PC_IDLE) {
		p->nidle--;
		mc_http_list_remove(&c->link);
		mc_http_list_push_back(&p->active, &c->link);
	}
	c->state = PC_BUSY;
	c->req = r;
	r->conn = c;
	c->reused = c->nsent > 0;
	c->nsent++;
	c->got_bytes = c->complete = c->keep = c->too_big = 0;
	c->resp_bytes = 0;
	llhttp_init(&c->parser, HTTP_RESPONSE, &client_settings);
	c->parser.data = c;
	mc_http_head_reset(&c->head);
	mc_buf_reset(&c->body);
	/* What the socket takes now goes without a write request (libuv 1.44
	 * re-registers the socket with epoll after every uv_write: a system call per
	 * request); only the rest is queued. r->wire outlives the write either way:
	 * r is released after its response, and a connection still writing then is
	 * closed, not reused. */
	uv_buf_t b = uv_buf_init(r->wire.data, (unsigned)r->wire.len);
	int rc = mc_http_try_send(&c->tcp, r->wire.data, r->wire.len);
	if (rc >= 0 && (size_t)rc < r->wire.len) {
		b.base += rc;
		b.len -= (size_t)rc;
		rc = UV_EAGAIN;
	}
	if (rc == UV_EAGAIN) {
		c->wreq.data = c;
		rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_pconn_write);
		if (rc == 0)
			c->writing = 1;
	}
	if (rc < 0) {
		pconn_fail(c, rc, sync);
		return;
	}
	if (r->paused) {
		/* paused before it was sent: nothing is read until resumed */
		pconn_read_stop(c);
		c->read_stopped = 1;
		return;
	}
	pconn_arm(c, pconn_wait_ms(c));
}

static void on_pconn_connect(uv_connect_t *req, int status)
{
	pconn *c = req->data;
	mc_http_pool *p = c->pool;
	if (c->state == PC_CLOSING)
		return;
	pconn_disarm(c);
	if (status == 0 && mc_http_rd_init(&c->rd, p->loop, &c->tcp, p->rd_fd_cap) == 0)
		c->open_handles++;
	if (status == 0)
		status = pconn_read_start(c);
	if (status < 0) {
		creq *r = pconn_detach(c);
		pconn_close(c);
		req_finish(p, r, status, NULL);
		pool_dispatch(p);
		return;
	}
	c->connect_ns = mc_now_ns() - c->connect_start;
	uv_tcp_nodelay(&c->tcp, 1);
	if (p->opts.on_connect) {
		p->in_cb++;
		p->opts.on_connect(p->opts.on_connect_ctx);
		p->in_cb--;
	}
	pconn_send(c, c->req, 0);
}

/* Opens a new connection that will carry r once connected. */
static void pconn_open(mc_http_pool *p, creq *r)
{
	pconn *c = mc_calloc(1, sizeof *c);
	c->pool = p;
	c->rd.fd = -1;
	int rc = uv_tcp_init(p->loop, &c->tcp);
	if (rc < 0) {
		free(c);
		req_fail_later(p, r, rc);
		return;
	}
	uv_timer_init(p->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->connect.data = c;
	c->open_handles = 2;
	p->handles++;
	p->nconns++;
	c->state = PC_CONNECTING;
	mc_http_list_push_back(&p->active, &c->link);
	mc_http_head_init(&c->head, p->opts.max_response_bytes, CLIENT_MAX_HEADERS);
	mc_buf_init(&c->body);
	c->req = r;
	r->conn = c;
	c->connect_start = mc_now_ns();
	rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&p->addr,
			    on_pconn_connect);
	if (rc < 0) {
		pconn_detach(c);
		pconn_close(c);
		req_fail_later(p, r, rc);
		return;
	}
	pconn_arm(c, r->connect_ms ? r->connect_ms : p->opts.connect_timeout_ms);
}

/* Moves waiting requests onto idle connections or new ones, within max_conns. */
static void pool_dispatch(mc_http_pool *p)
{
	if (p->closing || p->in_cb > 0)
		return;
	while (!mc_http_list_empty(&p->queue)) {
		creq *r = MC_HTTP_CONTAINER(p->queue.next, creq, link);
		if (!r->fresh && p->nidle > 0) {
			pconn *c = MC_HTTP_CONTAINER(p->idle.prev, pconn, link);
			queue_remove(p, r);
			pconn_send(c, r, 1);
		} else if (p->nconns < p->opts.max_conns) {
			queue_remove(p, r);
			pconn_open(p, r);
		} else if (p->nidle > 0) {
			/* a retry wants a fresh connection: make room */
			pconn_close(MC_HTTP_CONTAINER(p->idle.next, pconn, link));
		} else {
			break;
		}
	}
}

/* ---- public API ---------------------------------------------------------------------- */

void mc_http_pool_opts_default(mc_http_pool_opts *o)
{
	memset(o, 0, sizeof *o);
	o->max_conns = 64;
	o->max_idle = 32;
	o->connect_timeout_ms = 1000;
	o->request_timeout_ms = 10000;
	o->idle_timeout_ms = 30000;
	o->max_response_bytes = 8u * 1024u * 1024u;
	o->max_queue = 4096;
}

int mc_http_pool_new(mc_http_pool **out, uv_loop_t *loop, const char *hostport,
		     const mc_http_pool_opts *opts)
{
	int rc = 0;
	mc_http_pool *p = NULL;
	struct sockaddr_storage addr;
	if (!out || !loop || !hostport || mc_net_addr_parse(hostport, &addr) < 0) {
		rc = MC_EINVAL;
		goto out;
	}
	p = mc_calloc(1, sizeof *p);
	p->loop = loop;
	p->addr = addr;
	p->host = mc_strdup(hostport);
	mc_http_pool_opts d;
	mc_http_pool_opts_default(&d);
	p->opts = opts ? *opts : d;
	if (!p->opts.max_conns)
		p->opts.max_conns = d.max_conns;
	if (!p->opts.connect_timeout_ms)
		p->opts.connect_timeout_ms = d.connect_timeout_ms;
	if (!p->opts.request_timeout_ms)
		p->opts.request_timeout_ms = d.request_timeout_ms;
	if (!p->opts.idle_timeout_ms)
		p->opts.idle_timeout_ms = d.idle_timeout_ms;
	if (!p->opts.max_response_bytes)
		p->opts.max_response_bytes = d.max_response_bytes;
	if (!p->opts.max_queue)
		p->opts.max_queue = d.max_queue;
	mc_http_list_init(&p->idle);
	mc_http_list_init(&p->active);
	mc_http_list_init(&p->queue);
	mc_http_list_init(&p->deferred);
	mc_http_list_init(&p->freereqs);
	uv_idle_init(loop, &p->idler);
	p->idler.data = p;
	p->rd_fd_cap = mc_http_rd_fd_cap();
	p->handles = 1;
	*out = p;
out:
	return rc;
}

static int target_ok(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch <= 0x20 || ch == 0x7f)
			return 0;
	}
	return 1;
}

static char *put(char *p, const void *s, size_t n)
{
	if (n)
		memcpy(p, s, n);
	return p + n;
}

/* Checks a request and formats it into a new creq (not queued yet), sizing the
 * wire once. Returns 0 and *out, or MC_EINVAL / MC_ECANCELED / MC_EFULL. */
static int req_build(mc_http_pool *p, const char *method, const char *target,
		     const mc_http_header *headers, size_t nheaders, const void *body,
		     size_t body_len, creq **out)
{
	if (!p || !method || !target || (nheaders && !headers) || (body_len && !body))
		return MC_EINVAL;
	size_t mlen = strlen(method), tlen = strlen(target);
	if (!mc_http_token_valid(method, mlen) || !target_ok(target, tlen))
		return MC_EINVAL;
	if (p->closing)
		return MC_ECANCELED;
	if (p->nqueue >= p->opts.max_queue)
		return MC_EFULL;
	int has_host = 0;
	size_t hlen = strlen(p->host);
	/* request line, Host, Content-Length (20 digits) and the blank line */
	size_t need = mlen + 1 + tlen + 11 + 6 + hlen + 2 + 16 + 20 + 2 + 2 + body_len;
	for (size_t i = 0; i < nheaders; i++) {
		const mc_http_header *h = &headers[i];
		if (h->name_len == 0 || !mc_http_name_safe(h->name, h->name_len) ||
		    !mc_http_field_safe(h->value, h->value_len))
			return MC_EINVAL;
		if (h->name_len == 4 && mc_http_token_eq(h->name, 4, "host"))
			has_host = 1;
		need += h->name_len + h->value_len + 4;
	}
	creq *r = req_alloc(p);
	mc_buf *w = &r->wire;
	mc_buf_reserve(w, need);
	char *o = w->data + w->len;
	o = put(o, method, mlen);
	*o++ = ' ';
	o = put(o, target, tlen);
	o = put(o, " HTTP/1.1\r\n", 11);
	if (!has_host) {
		o = put(o, "Host: ", 6);
		o = put(o, p->host, hlen);
		o = put(o, "\r\n", 2);
	}
	for (size_t i = 0; i < nheaders; i++) {
		const mc_http_header *h = &headers[i];
		if ((h->name_len == 14 && mc_http_token_eq(h->name, 14, "content-length")) ||
		    (h->name_len == 17 && mc_http_token_eq(h->name, 17, "transfer-encoding")))
			continue;
		o = put(o, h->name, h->name_len);
		o = put(o, ": ", 2);
		o = put(o, h->value, h->value_len);
		o = put(o, "\r\n", 2);
	}
	if (body_len > 0 || !strcmp(method, "POST") || !strcmp(method, "PUT") ||
	    !strcmp(method, "PATCH")) {
		o = put(o, "Content-Length: ", 16);
		o = mc_http_put_u64(o, body_len);
		o = put(o, "\r\n", 2);
	}
	o = put(o, "\r\n", 2);
	o = put(o, body, body_len);
	w->len = (size_t)(o - w->data);
	w->data[w->len] = '\0';
	r->is_head = !strcmp(method, "HEAD");
	r->idempotent = r->is_head || !strcmp(method, "GET") || !strcmp(method, "PUT") ||
			!strcmp(method, "DELETE") || !strcmp(method, "OPTIONS") ||
			!strcmp(method, "TRACE");
	*out = r;
	return 0;
}

static void req_enqueue(mc_http_pool *p, creq *r)
{
	queue_push(p, r, 0);
	p->outstanding++;
	pool_dispatch(p);
}

int mc_http_pool_request(mc_http_pool *p, const char *method, const char *target,
			 const mc_http_header *headers, size_t nheaders, const void *body,
			 size_t body_len, mc_http_response_cb cb, void *arg)
{
	creq *r;
	if (!cb)
		return MC_EINVAL;
	int rc = req_build(p, method, target, headers, nheaders, body, body_len, &r);
	if (rc < 0)
		return rc;
	r->cb = cb;
	r->arg = arg;
	req_enqueue(p, r);
	return 0;
}

int mc_http_pool_call(mc_http_pool *p, const char *method, const char *target,
		      const mc_http_header *headers, size_t nheaders, const void *body,
		      size_t body_len, const mc_http_call_opts *opts, const mc_http_call_cbs *cbs,
		      void *arg, mc_http_call **out)
{
	creq *r;
	if (!cbs || !cbs->on_head || !cbs->on_body || !cbs->on_end || !out)
		return MC_EINVAL;
	int rc = req_build(p, method, target, headers, nheaders, body, body_len, &r);
	if (rc < 0)
		return rc;
	r->cbs = *cbs;
	r->arg = arg;
	r->streaming = 1;
	if (opts) {
		r->connect_ms = opts->connect_timeout_ms;
		r->first_byte_ms = opts->first_byte_timeout_ms;
		r->idle_ms = opts->idle_timeout_ms;
	}
	*out = (mc_http_call *)r;
	req_enqueue(p, r);
	return 0;
}

void mc_http_call_pause(mc_http_call *call, int pause)
{
	creq *r = (creq *)call;
	if (!r || r->paused == (pause != 0))
		return;
	r->paused = pause != 0;
	pconn *c = r->conn;
	if (!c || c->state != PC_BUSY)
		return; /* applied when it is sent */
	if (pause) {
		if (!c->read_stopped) {
			pconn_read_stop(c);
			c->read_stopped = 1;
		}
		pconn_disarm(c);
		return;
	}
	if (pconn_read_resume(c) < 0) {
		pconn_fail(c, MC_ECLOSED, 1); /* reported on the next loop turn */
		return;
	}
	pconn_arm(c, pconn_wait_ms(c));
}

void mc_http_call_abort(mc_http_call *call)
{
	creq *r = (creq *)call;
	if (!r)
		return;
	mc_http_pool *p = r->pool;
	if (r->conn) {
		pconn *c = r->conn;
		pconn_detach(c);
		pconn_close(c); /* a half-read response leaves the connection unusable */
	} else if (r->queued) {
		queue_remove(p, r);
	} else {
		mc_http_list_remove(&r->link); /* a deferred failure */
	}
	MC_ASSERT(p->outstanding > 0);
	p->outstanding--;
	req_release(p, r);
	pool_dispatch(p);
}

size_t mc_http_pool_outstanding(const mc_http_pool *p)
{
	return p ? p->outstanding : 0;
}

static void on_idler_close(uv_handle_t *h)
{
	pool_release(h->data);
}

void mc_http_pool_free(mc_http_pool *p)
{
	if (!p || p->closing)
		return;
	p->closing = 1;
	while (!mc_http_list_empty(&p->queue)) {
		creq *r = MC_HTTP_CONTAINER(p->queue.next, creq, link);
		queue_remove(p, r);
		req_finish(p, r, MC_ECANCELED, NULL);
	}
	while (!mc_http_list_empty(&p->deferred)) {
		creq *r = MC_HTTP_CONTAINER(p->deferred.next, creq, link);
		mc_http_list_remove(&r->link);
		req_finish(p, r, MC_ECANCELED, NULL);
	}
	while (!mc_http_list_empty(&p->active)) {
		pconn *c = MC_HTTP_CONTAINER(p->active.next, pconn, link);
		creq *r = pconn_detach(c);
		pconn_close(c);
		if (r)
			req_finish(p, r, MC_ECANCELED, NULL);
	}
	while (!mc_http_list_empty(&p->idle))
		pconn_close(MC_HTTP_CONTAINER(p->idle.next, pconn, link));
	uv_close((uv_handle_t *)&p->idler, on_idler_close);
}
