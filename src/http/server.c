/* HTTP/1.1 server on one libuv loop: accepts connections, parses requests with
 * llhttp within the configured bounds, hands each complete request to the
 * handler one at a time per connection (pipelined requests wait in the input
 * buffer) and writes the answers in order, with keep-alive, timeouts and a
 * lingering close after the last response. */
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "http/http_int.h"
#include "net/net.h"

/* Unparsed input kept per connection while a request is being answered; reading
 * stops beyond this and resumes once it is parsed. */
#define IN_LIMIT (64u * 1024u)
/* How long a closing connection keeps draining the client's input so that our
 * last response is not destroyed by a reset (see nginx's lingering_close). */
#define LINGER_MS 2000u

typedef struct conn conn;

/* Streamed bytes are written once per loop iteration (a uv_idle handle runs
 * after the timers, and right after the I/O callbacks of the previous
 * iteration, never blocking in between), so a head and the body pieces that
 * arrive with it leave in one write. Allocated on the first streamed response. */
typedef struct flusher {
	uv_idle_t idle;
	mc_http_link q; /* connections with stream bytes waiting (conn.flink) */
} flusher;

struct mc_http_exchange {
	conn *c;
	mc_http_request req;
	void *userdata;
	void (*watch)(void *arg, int event); /* mc_http_exchange_watch() */
	void *watch_arg;
};

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq; /* the response */
	uv_write_t creq; /* "100 Continue" */
	uv_shutdown_t sreq;
	mc_http_server *srv; /* NULL once both handles closed */
	mc_http_link link;   /* in srv->conns while open and counted */
	mc_http_link flink;  /* in the flusher's queue while flush_queued */
	llhttp_t parser;
	mc_http_head head;
	mc_buf body; /* request body */
	mc_buf in;   /* input received but not parsed yet */
	mc_buf out;  /* response head */
	mc_buf outbody;
	mc_buf sq; /* streamed response bytes not yet handed to a write */
	mc_http_exchange ex;
	uint64_t start_ns;
	int refs;	  /* 1 for the handles + 1 while the exchange is out */
	int open_handles; /* handles not yet closed */
	int err_status;	  /* limit violated inside a parser callback */
	uint8_t counted;  /* linked in srv->conns, counted in nconns */
	uint8_t msg_active, ready, ex_active, writing, close_after, closing, lingering;
	uint8_t reading, keep_alive, head_req;
	/* a streamed response: started, chunked, no body allowed, ended by the handler */
	uint8_t streaming, stream_chunked, stream_nobody, stream_ended, flush_queued;
	char err_msg[96];
	char peer[64];
};

struct mc_http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	mc_http_server_opts opts;
	mc_http_handler handler;
	void *ctx;
	mc_http_link conns;
	size_t nconns;
	size_t handles; /* listener + every connection not yet fully closed */
	int closing;
	int draining; /* listener closed; connections close after their response */
	flusher *flusher;
	uint16_t port;
	char slab[MC_HTTP_SLAB]; /* shared read buffer: input is parsed or copied at once */
};

static const char CONTINUE_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* ---- lifetime ------------------------------------------------------------------- */

static void server_release(mc_http_server *s)
{
	MC_ASSERT(s->handles > 0);
	if (--s->handles == 0 && s->closing)
		free(s);
}

static void conn_unref(conn *c)
{
	MC_ASSERT(c->refs > 0);
	if (--c->refs > 0)
		return;
	mc_http_head_fini(&c->head);
	mc_buf_fini(&c->body);
	mc_buf_fini(&c->in);
	mc_buf_fini(&c->out);
	mc_buf_fini(&c->outbody);
	mc_buf_fini(&c->sq);
	free(c);
}

static void on_conn_close(uv_handle_t *h)
{
	conn *c = h->data;
	if (--c->open_handles > 0)
		return;
	mc_http_server *s = c->srv;
	c->srv = NULL;
	server_release(s);
	conn_unref(c);
}

/* Closes the connection now (with reset: an RST, so the client sees an error
 * rather than an end); a pending exchange stays valid until answered. */
static void conn_close_how(conn *c, int reset)
{
	if (c->closing)
		return;
	c->closing = 1;
	c->msg_active = 0;
	if (c->flush_queued) {
		mc_http_list_remove(&c->flink);
		c->flush_queued = 0;
	}
	if (c->counted) {
		mc_http_list_remove(&c->link);
		c->srv->nconns--;
		c->counted = 0;
	}
	if (!reset || uv_tcp_close_reset(&c->tcp, on_conn_close) < 0)
		uv_close((uv_handle_t *)&c->tcp, on_conn_close);
	if (c->open_handles == 2)
		uv_close((uv_handle_t *)&c->timer, on_conn_close);
}

static void conn_close(conn *c)
{
	conn_close_how(c, 0);
}

/* The client went away or stopped reading: closes, and tells the handler of a
 * pending exchange that watches it (only from loop events, never from inside a
 * call the handler made). */
static void conn_lost(conn *c)
{
	int notify = !c->closing && c->ex_active && c->ex.watch;
	conn_close(c);
	if (notify)
		c->ex.watch(c->ex.watch_arg, MC_HTTP_EX_CLOSED);
}

/* ---- timers and reading --------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void timer_arm(conn *c, uint32_t ms)
{
	uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	conn *c = h->data;
	(void)suggested;
	buf->base = c->srv->slab;
	buf->len = sizeof c->srv->slab;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Reads while the input buffer has room (always while lingering). */
static void conn_update_read(conn *c)
{
	if (c->closing)
		return;
	int want = c->lingering || c->in.len < IN_LIMIT;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
			conn_close(c);
			return;
		}
		c->reading = 1;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
}

/* ---- writing -------------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
	conn *c = req->data;
	if (status < 0 && !c->closing)
		conn_close(c);
}

/* After the last response: half-close, then drain input until EOF or LINGER_MS. */
static void conn_linger(conn *c)
{
	c->lingering = 1;
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
		conn_close(c);
		return;
	}
	mc_buf_fini(&c->in);
	timer_arm(c, MC_MIN(LINGER_MS, c->srv->opts.idle_timeout_ms));
	conn_update_read(c);
}

static void conn_drain(conn *c);
static void stream_written(conn *c);

static void on_write(uv_write_t *req, int status)
{
	conn *c = req->data;
	c->writing = 0;
	if (c->closing)
		return;
	if (status < 0) {
		conn_lost(c);
		return;
	}
	if (c->streaming) {
		stream_written(c);
		return;
	}
	if (c->outbody.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&c->outbody);
	if (c->close_after) {
		conn_linger(c);
		return;
	}
	timer_arm(c, c->srv->opts.idle_timeout_ms);
	conn_drain(c);
	conn_update_read(c);
}

/* Writes c->out (+ c->outbody) with one uv_write. Returns 0 or MC_ECLOSED. */
static int conn_write(conn *c)
{
	uv_buf_t bufs[2];
	unsigned n = 1;
	bufs[0] = uv_buf_init(c->out.data, (unsigned)c->out.len);
	if (c->outbody.len > 0)
		bufs[n++] = uv_buf_init(c->outbody.data, (unsigned)c->outbody.len);
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, n, on_write) < 0) {
		conn_close(c);
		return MC_ECLOSED;
	}
	c->writing = 1;
	/* a client that stops reading is dropped after the idle timeout */
	timer_arm(c, c->srv->opts.idle_timeout_ms);
	return 0;
}

static int is_reserved_header(const mc_http_header *h)
{
	return mc_http_token_eq(h->name, h->name_len, "content-length") ||
	       mc_http_token_eq(h->name, h->name_len, "connection") ||
	       mc_http_token_eq(h->name, h->name_len, "transfer-encoding") ||
	       mc_http_token_eq(h->name, h->name_len, "keep-alive");
}

/* Formats the status line and headers into c->out. */
static void build_head(conn *c, int status, const mc_http_header *h, size_t n, size_t body_len,
		       int with_length, const char *extra)
{
	mc_buf *o = &c->out;
	mc_buf_reset(o);
	mc_buf_append(o, "HTTP/1.1 ", 9);
	mc_http_buf_u64(o, (uint64_t)status);
	mc_buf_append(o, " ", 1);
	mc_buf_append_str(o, mc_http_reason(status));
	mc_buf_append(o, "\r\n", 2);
	for (size_t i = 0; i < n; i++) {
		if (h[i].name_len == 0 || is_reserved_header(&h[i]) ||
		    !mc_http_field_safe(h[i].name, h[i].name_len) ||
		    memchr(h[i].name, ':', h[i].name_len) ||
		    !mc_http_field_safe(h[i].value, h[i].value_len)) {
			MC_DEBUG("http", "response header dropped (reserved or unsafe)");
			continue;
		}
		mc_buf_append(o, h[i].name, h[i].name_len);
		mc_buf_append(o, ": ", 2);
		mc_buf_append(o, h[i].value, h[i].value_len);
		mc_buf_append(o, "\r\n", 2);
	}
	if (extra)
		mc_buf_append_str(o, extra);
	if (with_length) {
		mc_buf_append(o, "Content-Length: ", 16);
		mc_http_buf_u64(o, body_len);
		mc_buf_append(o, "\r\n", 2);
	}
	if (c->close_after)
		mc_buf_append_str(o, "Connection: close\r\n\r\n");
	else
		mc_buf_append_str(o, "Connection: keep-alive\r\n\r\n");
}

/* Answers a request the handler never saw (400/408/413/431) and closes. */
static void conn_send_error(conn *c, int status, const char *code, const char *msg)
{
	c->msg_active = 0;
	c->close_after = 1;
	mc_buf *b = &c->outbody;
	mc_buf_reset(b);
	mc_http_error_body(b, code, msg);
	const mc_http_server_opts *o = &c->srv->opts;
	build_head(c, status, o->error_headers, o->nerror_headers, b->len, 1,
		   "Content-Type: application/json\r\n");
	if (o->on_reject)
		o->on_reject(c->srv->ctx, status);
	conn_write(c);
}

/* ---- parsing ---------------------------------------------------------------------- */

static int head_fail(conn *c)
{
	mc_http_server_opts *o = &c->srv->opts;
	c->err_status = 431;
	if (c->head.over == MC_HTTP_HEAD_TOO_MANY)
		snprintf(c->err_msg, sizeof c->err_msg, "more than %zu header fields",
			 o->max_headers);
	else
		snprintf(c->err_msg, sizeof c->err_msg, "request head exceeds %zu bytes",
			 o->max_header_bytes);
	return HPE_USER;
}

static int body_fail(conn *c)
{
	c->err_status = 413;
	snprintf(c->err_msg, sizeof c->err_msg, "request body exceeds %zu bytes",
		 c->srv->opts.max_body_bytes);
	return HPE_USER;
}

static int cb_message_begin(llhttp_t *p)
{
	conn *c = p->data;
	c->msg_active = 1;
	c->start_ns = mc_now_ns();
	mc_http_head_reset(&c->head);
	if (c->body.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&c->body);
	mc_buf_reset(&c->body);
	timer_arm(c, c->srv->opts.request_timeout_ms);
	return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t n)
{
	conn *c = p->data;
	return mc_http_head_url(&c->head, at, n) < 0 ? head_fail(c) : 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t n)
{
	conn *c = p->data;
	return mc_http_head_field(&c->head, at, n) < 0 ? head_fail(c) : 0;
}

static int cb_header_field_complete(llhttp_t *p)
{
	conn *c = p->data;
	mc_http_head *h = &c->head;
	mc_http_head_field_done(h);
	if (h->done || h->nspans == 0)
		return 0;
	/* llhttp 8 lets some non-token bytes (e.g. a space) into field names; such a
	 * request is refused here so it is never routed or forwarded. */
	const mc_http_hspan *sp = &h->spans[h->nspans - 1];
	if (!mc_http_token_valid(h->arena.data + sp->name_off, sp->name_len)) {
		c->err_status = 400;
		snprintf(c->err_msg, sizeof c->err_msg, "invalid character in a header field name");
		return HPE_USER;
	}
	return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t n)
{
	conn *c = p->data;
	return mc_http_head_value(&c->head, at, n) < 0 ? head_fail(c) : 0;
}

static int cb_header_value_complete(llhttp_t *p)
{
	conn *c = p->data;
	return mc_http_head_value_done(&c->head);
}

static int cb_headers_complete(llhttp_t *p)
{
	conn *c = p->data;
	mc_http_head *h = &c->head;
	mc_http_head_finish(h, 1);
	int has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->opts.max_body_bytes) {
		body_fail(c);
		return -1;
	}
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0)
		mc_buf_reserve(&c->body, (size_t)p->content_length);
	size_t elen;
	const char *e = mc_http_header_find(h->hdrs, h->nspans, "expect", &elen);
	if (e && has_body && p->http_major == 1 && p->http_minor >= 1 &&
	    mc_http_token_eq(e, elen, "100-continue")) {
		uv_buf_t b = uv_buf_init((char *)CONTINUE_100, sizeof CONTINUE_100 - 1);
		c->creq.data = c;
		if (uv_write(&c->creq, (uv_stream_t *)&c->tcp, &b, 1, NULL) < 0)
			return -1;
	}
	return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t n)
{
	conn *c = p->data;
	if (n > c->srv->opts.max_body_bytes - c->body.len)
		return body_fail(c);
	mc_buf_append(&c->body, at, n);
	return 0;
}

static int cb_message_complete(llhttp_t *p)
{
	conn *c = p->data;
	c->msg_active = 0;
	c->ready = 1;
	c->keep_alive = llhttp_should_keep_alive(p) && !llhttp_get_upgrade(p);
	return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = cb_message_begin,
    .on_url = cb_url,
    .on_header_field = cb_header_field,
    .on_header_value = cb_header_value,
    .on_header_field_complete = cb_header_field_complete,
    .on_header_value_complete = cb_header_value_complete,
    .on_headers_complete = cb_headers_complete,
    .on_body = cb_body,
    .on_message_complete = cb_message_complete,
};

/* Fills the request from the parsed message and calls the handler. */
static void conn_dispatch(conn *c)
{
	mc_http_request *r = &c->ex.req;
	mc_http_head *h = &c->head;
	uint8_t method = llhttp_get_method(&c->parser);
	r->method = llhttp_method_name((llhttp_method_t)method);
	r->target = h->arena.data + h->url_off;
	r->path = h->arena.data + h->path_off;
	r->path_len = h->path_len;
	const char *q = memchr(r->target, '?', h->url_len);
	r->query = q ? q + 1 : "";
	r->headers = h->hdrs;
	r->nheaders = h->nspans;
	r->body = c->body.len ? c->body.data : NULL;
	r->body_len = c->body.len;
	r->keep_alive = c->keep_alive;
	r->start_ns = c->start_ns;
	memcpy(r->peer, c->peer, sizeof r->peer);
	c->head_req = method == HTTP_HEAD;
	c->ex.userdata = NULL;
	c->ex.watch = NULL;
	c->ex.watch_arg = NULL;
	c->ex.c = c;
	c->ex_active = 1;
	c->refs++;
	if (!c->keep_alive || c->srv->closing || c->srv->draining)
		c->close_after = 1;
	uv_timer_stop(&c->timer);
	c->srv->handler(c->srv->ctx, &c->ex);
}

static int conn_can_parse(const conn *c)
{
	return !c->closing && !c->ex_active && !c->writing && !c->close_after && !c->lingering &&
	       !c->streaming;
}

/* Runs llhttp over data until one request completes or the data ends; returns
 * the bytes consumed. A complete request is dispatched before returning. */
static size_t conn_parse(conn *c, const char *data, size_t len)
{
	llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
	if (e == HPE_OK)
		return len;
	if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
		size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
		if (e == HPE_PAUSED)
			llhttp_resume(&c->parser);
		else
			c->close_after = 1; /* no protocol switch offered: answer and close */
		if (c->ready) {
			c->ready = 0;
			conn_dispatch(c);
		}
		return used;
	}
	if (c->err_status == 413)
		conn_send_error(c, 413, "payload_too_large", c->err_msg);
	else if (c->err_status == 431)
		conn_send_error(c, 431, "request_header_fields_too_large", c->err_msg);
	else if (c->err_status == 400)
		conn_send_error(c, 400, "bad_request", c->err_msg);
	else
		conn_send_error(c, 400, "bad_request", llhttp_get_error_reason(&c->parser));
	return len;
}

/* Parses what accumulated in c->in while the previous request was answered. */
static void conn_drain(conn *c)
{
	size_t off = 0;
	while (off < c->in.len && conn_can_parse(c))
		off += conn_parse(c, c->in.data + off, c->in.len - off);
	if (c->closing)
		return;
	if (c->close_after)
		off = c->in.len; /* nothing after a final request is read */
	if (off > 0)
		mc_buf_consume(&c->in, off);
	if (c->in.len == 0 && c->in.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&c->in);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	conn *c = st->data;
	if (nread == 0 || c->closing)
		return;
	if (nread < 0) {
		/* EOF or error: the client is gone (a pending exchange gets MC_ECLOSED) */
		conn_lost(c);
		return;
	}
	if (c->lingering || c->close_after)
		return; /* discarded */
	size_t n = (size_t)nread;
	if (c->in.len == 0) {
		size_t off = 0;
		while (off < n && conn_can_parse(c))
			off += conn_parse(c, buf->base + off, n - off);
		if (off < n && !c->closing && !c->close_after)
			mc_buf_append(&c->in, buf->base + off, n - off);
	} else {
		mc_buf_append(&c->in, buf->base, n);
		conn_drain(c);
	}
	conn_update_read(c);
}

static void stream_done(conn *c);

static void on_timer(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->closing)
		return;
	if (c->streaming && c->stream_ended && !c->writing && c->sq.len == 0) {
		stream_done(c); /* scheduled by mc_http_exchange_end() */
		return;
	}
	if (c->msg_active && !c->writing && !c->ex_active && !c->close_after) {
		char msg[96];
		snprintf(msg, sizeof msg, "request not received within %u ms",
			 (unsigned)c->srv->opts.request_timeout_ms);
		conn_send_error(c, 408, "request_timeout", msg);
		return;
	}
	conn_lost(c); /* idle, send or linger timeout */
}

/* ---- exchanges ------------------------------------------------------------------ */

const mc_http_request *mc_http_exchange_request(const mc_http_exchange *ex)
{
	return &ex->req;
}

void **mc_http_exchange_userdata(mc_http_exchange *ex)
{
	return &ex->userdata;
}

int mc_http_respond(mc_http_exchange *ex, int status, const mc_http_header *headers,
		    size_t nheaders, const void *body, size_t body_len)
{
	conn *c = ex->c;
	int rc = 0;
	MC_ASSERT(c->ex_active && !c->streaming);
	c->ex_active = 0;
	ex->userdata = NULL;
	ex->watch = NULL;
	if (c->closing) {
		rc = MC_ECLOSED;
		goto out;
	}
	if (status < 200 || status > 999) {
		MC_WARN("http", "handler answered with status %d; sending 500", status);
		status = 500;
		body_len = 0;
	}
	int bodyless = status == 204 || status == 304;
	mc_buf_reset(&c->outbody);
	if (!bodyless && !c->head_req && body_len > 0)
		mc_buf_append(&c->outbody, body, body_len);
	/* A HEAD answer announces the length a GET would have; a handler that knows
	 * it (a proxy relaying a HEAD) passes it as Content-Length. */
	uint64_t announced = body_len;
	size_t cl_len;
	const char *cl =
	    c->head_req ? mc_http_header_find(headers, nheaders, "content-length", &cl_len) : NULL;
	if (cl && mc_parse_u64(cl, cl_len, UINT64_MAX, &announced) != 0)
		announced = body_len;
	build_head(c, status, headers, nheaders, (size_t)announced, !bodyless, NULL);
	rc = conn_write(c);
out:
	conn_unref(c);
	return rc;
}

/* ---- streamed responses ----------------------------------------------------------- */

/* Hands the queued stream bytes to one write (one write in flight at a time;
 * what arrives meanwhile waits in sq). */
static void stream_write(conn *c)
{
	if (c->closing || c->writing || c->sq.len == 0)
		return;
	mc_buf t = c->outbody;
	c->outbody = c->sq;
	c->sq = t;
	mc_buf_reset(&c->sq);
	uv_buf_t b = uv_buf_init(c->outbody.data, (unsigned)c->outbody.len);
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
		conn_lost(c);
		return;
	}
	c->writing = 1;
	/* a client that stops reading is dropped after the idle timeout */
	timer_arm(c, c->srv->opts.idle_timeout_ms);
}

static void on_flush(uv_idle_t *h)
{
	flusher *f = h->data;
	while (!mc_http_list_empty(&f->q)) {
		conn *c = MC_HTTP_CONTAINER(f->q.next, conn, flink);
		mc_http_list_remove(&c->flink);
		c->flush_queued = 0;
		stream_write(c);
	}
	uv_idle_stop(h);
}

static void on_flusher_close(uv_handle_t *h)
{
	free(h->data);
}

/* Schedules a write of the queued stream bytes for the end of this loop
 * iteration. Returns 0 or MC_ECLOSED. */
static int stream_flush(conn *c)
{
	if (c->closing)
		return MC_ECLOSED;
	if (c->writing || c->sq.len == 0 || c->flush_queued)
		return 0; /* a write in flight takes sq next, in on_write */
	mc_http_server *s = c->srv;
	if (!s->flusher) {
		s->flusher = mc_calloc(1, sizeof *s->flusher);
		mc_http_list_init(&s->flusher->q);
		uv_idle_init(s->loop, &s->flusher->idle);
		s->flusher->idle.data = s->flusher;
	}
	mc_http_list_push_back(&s->flusher->q, &c->flink);
	c->flush_queued = 1;
	uv_idle_start(&s->flusher->idle, on_flush);
	return 0;
}

/* The whole streamed response is written: like the end of a plain response. */
static void stream_done(conn *c)
{
	c->streaming = c->stream_chunked = c->stream_nobody = c->stream_ended = 0;
	if (c->outbody.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&c->outbody);
	if (c->sq.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&c->sq);
	if (c->close_after) {
		conn_linger(c);
		return;
	}
	timer_arm(c, c->srv->opts.idle_timeout_ms);
	conn_drain(c);
	conn_update_read(c);
}

static void stream_written(conn *c)
{
	mc_buf_reset(&c->outbody);
	if (c->sq.len > 0) {
		stream_write(c);
		return;
	}
	if (c->stream_ended) {
		stream_done(c);
		return;
	}
	uv_timer_stop(&c->timer); /* now waiting for the handler, not the client */
	if (c->ex_active && c->ex.watch)
		c->ex.watch(c->ex.watch_arg, MC_HTTP_EX_DRAINED);
}

int mc_http_exchange_start_response(mc_http_exchange *ex, int status, const mc_http_header *headers,
				    size_t nheaders, int64_t content_length)
{
	conn *c = ex->c;
	MC_ASSERT(c->ex_active && !c->streaming);
	c->streaming = 1;
	if (c->closing)
		return MC_ECLOSED;
	if (status < 200 || status > 999) {
		MC_WARN("http", "handler answered with status %d; sending 500", status);
		status = 500;
		content_length = 0;
	}
	int bodyless = status == 204 || status == 304;
	c->stream_nobody = bodyless || c->head_req;
	int with_length = 0;
	const char *extra = NULL;
	if (bodyless) {
		/* no length, no body */
	} else if (content_length >= 0) {
		with_length = 1; /* on a HEAD answer: the length a GET would have */
	} else if (c->head_req) {
		/* unknown: a HEAD answer announces nothing */
	} else if (c->parser.http_major == 1 && c->parser.http_minor == 0) {
		c->close_after = 1; /* HTTP/1.0 has no chunks: the close ends the body */
	} else {
		c->stream_chunked = 1;
		extra = "Transfer-Encoding: chunked\r\n";
	}
	build_head(c, status, headers, nheaders, with_length ? (size_t)content_length : 0,
		   with_length, extra);
	mc_buf_append(&c->sq, c->out.data, c->out.len);
	return stream_flush(c);
}

int mc_http_exchange_write_body(mc_http_exchange *ex, const void *data, size_t len)
{
	conn *c = ex->c;
	MC_ASSERT(c->ex_active && c->streaming && !c->stream_ended);
	if (c->closing)
		return MC_ECLOSED;
	if (len == 0 || c->stream_nobody)
		return 0;
	if (c->stream_chunked) {
		char sz[24];
		int m = snprintf(sz, sizeof sz, "%zx\r\n", len);
		mc_buf_append(&c->sq, sz, (size_t)m);
		mc_buf_append(&c->sq, data, len);
		mc_buf_append(&c->sq, "\r\n", 2);
	} else {
		mc_buf_append(&c->sq, data, len);
	}
	return stream_flush(c);
}

size_t mc_http_exchange_pending(const mc_http_exchange *ex)
{
	const conn *c = ex->c;
	if (!c->streaming)
		return 0;
	return c->sq.len + (c->writing ? c->outbody.len : 0);
}

void mc_http_exchange_watch(mc_http_exchange *ex, void (*cb)(void *arg, int event), void *arg)
{
	ex->watch = cb;
	ex->watch_arg = cb ? arg : NULL;
}

int mc_http_exchange_end(mc_http_exchange *ex, int abort)
{
	conn *c = ex->c;
	int rc = 0;
	MC_ASSERT(c->ex_active);
	if (!c->streaming) /* ended without a start: nothing was sent */
		abort = 1;
	c->ex_active = 0;
	ex->userdata = NULL;
	ex->watch = NULL;
	if (c->closing) {
		rc = MC_ECLOSED;
	} else if (abort) {
		conn_close_how(c, 1);
	} else {
		if (c->stream_chunked)
			mc_buf_append(&c->sq, "0\r\n\r\n", 5);
		c->stream_ended = 1;
		if (!c->writing && c->sq.len == 0)
			timer_arm(c, 0); /* completes on the next loop turn: stream_done() */
		else
			rc = stream_flush(c);
	}
	conn_unref(c);
	return rc;
}

/* ---- server ----------------------------------------------------------------------- */

void mc_http_server_opts_default(mc_http_server_opts *o)
{
	memset(o, 0, sizeof *o);
	o->max_header_bytes = 16 * 1024;
	o->max_headers = 64;
	o->max_body_bytes = 1024 * 1024;
	o->idle_timeout_ms = 60000;
	o->request_timeout_ms = 30000;
	o->max_connections = 10000;
	o->reuseport = 0;
}

static void on_reject_close(uv_handle_t *h)
{
	mc_http_server *s = h->data;
	free(h);
	server_release(s);
}

/* Accepts and closes at once: the connection limit is reached. */
static void server_reject(mc_http_server *s)
{
	uv_tcp_t *t = mc_alloc(sizeof *t);
	if (uv_tcp_init(s->loop, t) < 0) {
		free(t);
		return;
	}
	t->data = s;
	s->handles++;
	uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t);
	uv_close((uv_handle_t *)t, on_reject_close);
}

static void on_connection(uv_stream_t *l, int status)
{
	mc_http_server *s = l->data;
	if (status < 0) {
		MC_WARN("http", "accept failed: %s", uv_strerror(status));
		return;
	}
	if (s->closing)
		return;
	if (s->nconns >= s->opts.max_connections) {
		server_reject(s);
		return;
	}
	conn *c = mc_calloc(1, sizeof *c);
	c->srv = s;
	c->refs = 1;
	if (uv_tcp_init(s->loop, &c->tcp) < 0) {
		free(c);
		return;
	}
	c->tcp.data = c;
	c->timer.data = c;
	c->open_handles = 1;
	s->handles++;
	uv_timer_init(s->loop, &c->timer); /* cannot fail on Unix */
	c->open_handles = 2;
	mc_http_list_push_back(&s->conns, &c->link);
	s->nconns++;
	c->counted = 1;
	mc_http_head_init(&c->head, s->opts.max_header_bytes, s->opts.max_headers);
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
		conn_close(c);
		return;
	}
	struct sockaddr_storage ss;
	int len = sizeof ss;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		mc_net_addr_format((struct sockaddr *)&ss, c->peer, sizeof c->peer);
	else
		strcpy(c->peer, "?");
	uv_tcp_nodelay(&c->tcp, 1);
	timer_arm(c, MC_MIN(s->opts.idle_timeout_ms, s->opts.request_timeout_ms));
	conn_update_read(c);
}

static void on_listener_close(uv_handle_t *h)
{
	server_release(h->data);
}

static void on_failed_listener_close(uv_handle_t *h)
{
	free(h->data);
}

int mc_http_server_new(mc_http_server **out, uv_loop_t *loop, const char *hostport,
		       const mc_http_server_opts *opts, mc_http_handler handler, void *ctx)
{
	int rc;
	mc_http_server *s = mc_calloc(1, sizeof *s);
	mc_http_server_opts d;
	mc_http_server_opts_default(&d);
	if (opts) {
		s->opts = *opts;
		if (!s->opts.max_header_bytes)
			s->opts.max_header_bytes = d.max_header_bytes;
		if (!s->opts.max_headers)
			s->opts.max_headers = d.max_headers;
		if (!s->opts.max_body_bytes)
			s->opts.max_body_bytes = d.max_body_bytes;
		if (!s->opts.idle_timeout_ms)
			s->opts.idle_timeout_ms = d.idle_timeout_ms;
		if (!s->opts.request_timeout_ms)
			s->opts.request_timeout_ms = d.request_timeout_ms;
		if (!s->opts.max_connections)
			s->opts.max_connections = d.max_connections;
	} else {
		s->opts = d;
	}
	if (!handler || !loop || !hostport) {
		rc = MC_EINVAL;
		goto out;
	}
	s->loop = loop;
	s->handler = handler;
	s->ctx = ctx;
	mc_http_list_init(&s->conns);
	s->listener.data = s;
	rc = mc_net_listen(loop, &s->listener, hostport, s->opts.reuseport, 1024, on_connection);
	if (rc < 0) {
		if (uv_is_closing((uv_handle_t *)&s->listener)) {
			/* mc_net_listen closed the handle without a callback after a late
			 * failure: free the memory only once libuv is done with it */
			s->listener.data = s;
			s->listener.close_cb = on_failed_listener_close;
			s = NULL;
		}
		goto out;
	}
	s->listener.data = s;
	s->handles = 1;
	s->port = mc_net_local_port(&s->listener);
	*out = s;
	s = NULL;
out:
	free(s);
	return rc;
}

uint16_t mc_http_server_port(const mc_http_server *s)
{
	return s->port;
}

void mc_http_server_drain(mc_http_server *s)
{
	if (!s || s->closing || s->draining)
		return;
	s->draining = 1;
	uv_close((uv_handle_t *)&s->listener, on_listener_close);
	mc_http_link *l = s->conns.next;
	while (l != &s->conns) {
		conn *c = MC_HTTP_CONTAINER(l, conn, link);
		l = l->next; /* conn_close unlinks c */
		if (c->lingering)
			continue;
		if (c->ex_active || c->writing)
			c->close_after = 1; /* the response in progress is the last */
		else if (!c->msg_active)
			conn_close(c); /* idle keep-alive: nothing is lost */
		/* a request still arriving is answered with Connection: close */
	}
}

size_t mc_http_server_connections(const mc_http_server *s)
{
	return s ? s->nconns : 0;
}

void mc_http_server_free(mc_http_server *s)
{
	if (!s || s->closing)
		return;
	s->closing = 1;
	if (s->flusher) {
		while (!mc_http_list_empty(&s->flusher->q)) {
			conn *c = MC_HTTP_CONTAINER(s->flusher->q.next, conn, flink);
			mc_http_list_remove(&c->flink);
			c->flush_queued = 0;
		}
		uv_close((uv_handle_t *)&s->flusher->idle, on_flusher_close);
		s->flusher = NULL;
	}
	if (!s->draining) {
		uv_close((uv_handle_t *)&s->listener, on_listener_close);
	} else if (s->handles == 0) {
		free(s); /* drained: listener and connections are all closed */
		return;
	}
	while (!mc_http_list_empty(&s->conns))
		conn_close(MC_HTTP_CONTAINER(s->conns.next, conn, link));
}
