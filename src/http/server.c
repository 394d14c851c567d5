/* HTTP/1.1 server on one libuv loop: accepts connections, parses requests with
 * llhttp within the configured bounds, hands each complete request to the
 * handler one at a time per connection (pipelined requests wait in the input
 * buffer) and writes the answers in order, with keep-alive, timeouts and a
 * lingering close after the last response. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "http/http_int.h"
#include "net/net.h"

/* Unparsed input kept per connection while a request is being answered; reading
 * stops beyond this and resumes once it is parsed. */
#define IN_LIMIT (64u * 1024u)
/* How long a closing connection keeps draining the client's input so that our
 * last response is not destroyed by a reset (see nginx's lingering_close). */
#define LINGER_MS 2000u
/* Connections refused over max_connections that get their 503 and a short
 * lingering close; beyond this many at once they are closed without an answer. */
#define REJECT_LINGER_MAX 64u
#define REJECT_LINGER_MS 1000u
/* A response body up to this size is copied behind its head and both go with
 * one send(); a larger one goes from the caller's memory with writev(). */
#define SEND_JOIN_MAX 4096u

typedef struct conn conn;

/* Streamed bytes are written once per loop iteration (a uv_idle handle runs
 * after the timers, and right after the I/O callbacks of the previous
 * iteration, never blocking in between), so a head and the body pieces that
 * arrive with it leave in one write. Allocated on the first streamed response. */
typedef struct flusher {
	uv_idle_t idle;
	mc_http_link q; /* connections with stream bytes waiting (conn.flink) */
} flusher;

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
	uint8_t in_body;   /* head complete, body still arriving */
	uint8_t inflight;  /* counted in srv->inflight */
	uint8_t prev_byte; /* last byte llhttp consumed before the current execute */
	uint8_t target_root; /* absolute-form target without a path: "/" */
	uint32_t target_off; /* origin-form part of the target within the url */
	const char *pbase;   /* data of the current llhttp_execute() */
	uint64_t due_ms;      /* loop time the current phase times out (timer_arm) */
	uint64_t armed_ms;    /* loop time the libuv timer fires, while armed */
	uint8_t due_set, armed;
	uint64_t deadline_ns; /* the whole request must have arrived by then */
	size_t body_limit;    /* of the request being received */
	size_t win_bytes;     /* body bytes received when the current window began */
	/* a streamed response: started, chunked, no body allowed, ended by the handler */
	uint8_t streaming, stream_chunked, stream_nobody, stream_ended, flush_queued;
	char err_msg[96];
	char peer[64];
	mc_tls_stream *tls; /* accepted on the TLS listener */
	mc_http_h2 *h2;	    /* ALPN chose h2: the session owns the protocol */
	mc_http_rd rd;	    /* plain TCP: read with recv() (rd.fd -1: libuv reads) */
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
	size_t inflight;     /* requests between first byte and response written */
	mc_http_link rejects; /* connections refused over max_connections, lingering */
	size_t nrejects;
	mc_buf busy;         /* the 503 those get */
	uv_tcp_t tls_listener;
	mc_tls_ctx *tls_ctx; /* for new connections; open ones hold their own */
	mc_http_tls_opts tls_opts;
	int has_tls;
	uint16_t tls_port;
	int rd_fd_cap; /* see mc_http_rd_init */
	struct srv_clock *clock; /* see srv_now_ns */
	char slab[MC_HTTP_SLAB]; /* shared read buffer: input is parsed or copied at once */
};

/* The loop iteration's clock (mc_http_exchange_now_ns): a prepare handle, run
 * just before the loop polls, forgets the time; the first event handler after
 * the poll that asks reads it. Allocated apart from the server so that it can
 * close on its own. */
struct srv_clock {
	uv_prepare_t h;
	uint64_t ns; /* 0: not read in this iteration */
};

static void on_clock_tick(uv_prepare_t *h)
{
	((struct srv_clock *)h)->ns = 0;
}

static void on_clock_closed(uv_handle_t *h)
{
	free(h);
}

static uint64_t srv_now_ns(mc_http_server *s)
{
	struct srv_clock *k = s->clock;
	if (!k) /* the server is being freed */
		return mc_now_ns();
	if (!k->ns)
		k->ns = mc_now_ns();
	return k->ns;
}

/* Transport hooks: plain TCP, or the connection's TLS stream (same shapes). */
static int conn_io_read_start(conn *c, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
	if (c->tls)
		return mc_tls_stream_read_start(c->tls, alloc_cb, read_cb);
	if (c->rd.fd >= 0)
		return mc_http_rd_start(&c->rd, alloc_cb, read_cb);
	return uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}
static int conn_io_read_stop(conn *c)
{
	if (c->tls)
		return mc_tls_stream_read_stop(c->tls);
	if (c->rd.fd >= 0) {
		mc_http_rd_stop(&c->rd);
		return 0;
	}
	return uv_read_stop((uv_stream_t *)&c->tcp);
}
static int conn_io_write(conn *c, uv_write_t *req, const uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
	return c->tls ? mc_tls_stream_write(c->tls, req, bufs, n, cb)
		      : uv_write(req, (uv_stream_t *)&c->tcp, bufs, n, cb);
}
static int conn_io_shutdown(conn *c, uv_shutdown_t *req, uv_shutdown_cb cb)
{
	return c->tls ? mc_tls_stream_shutdown(c->tls, req, cb)
		      : uv_shutdown(req, (uv_stream_t *)&c->tcp, cb);
}
static void server_destroy(mc_http_server *s);

static const char CONTINUE_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* ---- lifetime ------------------------------------------------------------------- */

static void server_release(mc_http_server *s)
{
	MC_ASSERT(s->handles > 0);
	if (--s->handles == 0 && s->closing)
		server_destroy(s);
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

/* The request of c no longer counts as in flight. */
static void inflight_end(conn *c)
{
	if (c->inflight) {
		c->inflight = 0;
		c->srv->inflight--;
		if (c->srv->opts.shared)
			atomic_fetch_sub_explicit(&c->srv->opts.shared->inflight, 1,
						  memory_order_relaxed);
	}
}

/* Closes the connection now (with reset: an RST, so the client sees an error
 * rather than an end); a pending exchange stays valid until answered. */
static void conn_close_how(conn *c, int reset)
{
	if (c->closing)
		return;
	inflight_end(c);
	c->closing = 1;
	c->msg_active = 0;
	if (c->flush_queued) {
		mc_http_list_remove(&c->flink);
		c->flush_queued = 0;
	}
	if (c->counted) {
		mc_http_list_remove(&c->link);
		c->srv->nconns--;
		if (c->srv->opts.shared)
			atomic_fetch_sub_explicit(&c->srv->opts.shared->conns, 1,
						  memory_order_relaxed);
		c->counted = 0;
	}
	mc_http_h2_detach(c->h2);
	c->h2 = NULL;
	mc_tls_stream_free(c->tls); /* gives tcp->data back before the close */
	c->tls = NULL;
	int has_timer = c->open_handles - (c->rd.fd >= 0) == 2;
	mc_http_rd_close(&c->rd, on_conn_close); /* first: see mc_http_rd_close */
	if (!reset || uv_tcp_close_reset(&c->tcp, on_conn_close) < 0)
		uv_close((uv_handle_t *)&c->tcp, on_conn_close);
	if (has_timer)
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
	mc_http_h2 *h2 = c->h2 && !c->closing ? mc_http_h2_hold(c->h2) : NULL;
	conn_close(c);
	if (notify)
		c->ex.watch(c->ex.watch_arg, MC_HTTP_EX_CLOSED);
	if (h2)
		mc_http_h2_release_notify(h2);
}

/* ---- timers and reading --------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* The connection's timer is moved lazily: c->due_ms is when the current phase
 * times out (due_set 0: nothing times out now, e.g. while the handler works),
 * and the libuv timer is only restarted when the new due time is earlier than
 * the time it is armed for. A timer that fires early re-arms for what is left.
 * It is armed at most timer_wake() ahead, so the next request's head timeout
 * never needs a restart: a busy keep-alive connection touches the timer heap
 * about once per header timeout instead of 3-4 times per request. */
static uint32_t timer_wake(const conn *c)
{
	const mc_http_server_opts *o = &c->srv->opts;
	return MC_MIN(o->header_timeout_ms, o->request_timeout_ms);
}

static void timer_set(conn *c, uint64_t now)
{
	uint64_t at = MC_MIN(c->due_ms, now + timer_wake(c));
	c->armed_ms = at;
	c->armed = 1;
	uv_timer_start(&c->timer, on_timer, at - now, 0);
}

static void timer_arm(conn *c, uint32_t ms)
{
	uint64_t now = uv_now(c->srv->loop);
	c->due_ms = now + ms;
	c->due_set = 1;
	if (!c->armed || c->armed_ms > c->due_ms)
		timer_set(c, now);
}

/* No timeout applies now (the timer may still fire: it then finds nothing due). */
static void timer_stop(conn *c)
{
	c->due_set = 0;
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
		if (conn_io_read_start(c, on_alloc, on_read) < 0) {
			conn_close(c);
			return;
		}
		c->reading = 1;
	} else if (!want && c->reading) {
		conn_io_read_stop(c);
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
	if (conn_io_shutdown(c, &c->sreq, on_shutdown) < 0) {
		conn_close(c);
		return;
	}
	mc_buf_fini(&c->in);
	timer_arm(c, MC_MIN(LINGER_MS, c->srv->opts.idle_timeout_ms));
	conn_update_read(c);
}

static void conn_drain(conn *c);
static void stream_written(conn *c);

/* A response write finished (status < 0: failed): from on_write, or inline
 * after a write that completed at once in a loop event (stream_write). */
static void write_done(conn *c, int status)
{
	c->writing = 0;
	if (c->closing)
		return;
	inflight_end(c);
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

static void on_write(uv_write_t *req, int status)
{
	write_done(req->data, status);
}

/* Sends c->out, then body[0..len): on plain TCP with try set, what the socket
 * takes now goes out with one send() (a small body copied behind the head) or
 * one writev(), and no write request (libuv 1.44 re-registers the socket with
 * epoll after every uv_write: one more system call per response). The rest is
 * queued with one uv_write whose on_write runs later; the part of body not yet
 * written is copied into c->outbody first unless body is c->outbody (body need
 * not outlive the call). Returns 1 when everything was written (no callback
 * will run), 0 when a write is in flight, or a negative code (nothing queued). */
static int conn_send(conn *c, int try, const char *body, size_t len)
{
	uv_buf_t bufs[2];
	unsigned n = 0;
	size_t hl = c->out.len, done = 0;
	if (try && !c->tls) {
		/* A small body joins the head: one buffer goes with send(), which is
		 * cheaper in the kernel than writev() */
		if (hl > 0 && len > 0 && len <= SEND_JOIN_MAX && body != c->outbody.data) {
			mc_buf_append(&c->out, body, len);
			hl = c->out.len;
			len = 0;
		}
		int w;
		if (hl == 0 || len == 0) {
			w = mc_http_try_send(&c->tcp, hl ? c->out.data : body, hl ? hl : len);
		} else {
			bufs[n++] = uv_buf_init(c->out.data, (unsigned)hl);
			bufs[n++] = uv_buf_init((char *)body, (unsigned)len);
			w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
		}
		if (w < 0 && w != UV_EAGAIN)
			return w;
		if (w > 0)
			done = (size_t)w;
		if (done == hl + len)
			return 1;
	}
	size_t boff = done > hl ? done - hl : 0;
	if (len > boff && body != c->outbody.data) {
		mc_buf_reset(&c->outbody);
		mc_buf_append(&c->outbody, body + boff, len - boff);
		body = c->outbody.data;
		len = c->outbody.len;
		boff = 0;
	}
	n = 0;
	if (done < hl)
		bufs[n++] = uv_buf_init(c->out.data + done, (unsigned)(hl - done));
	if (len > boff)
		bufs[n++] = uv_buf_init((char *)body + boff, (unsigned)(len - boff));
	c->wreq.data = c;
	int rc = conn_io_write(c, &c->wreq, bufs, n, on_write);
	if (rc < 0)
		return rc;
	c->writing = 1;
	/* a client that stops reading is dropped after the idle timeout */
	timer_arm(c, c->srv->opts.idle_timeout_ms);
	return 0;
}

/* A response written at once by conn_send(): what on_write does, minus parsing
 * input (there is none: conn_write only lets such a write complete inline, so
 * the handler is never called again from inside its own mc_http_respond). */
static void conn_written_inline(conn *c)
{
	inflight_end(c);
	if (c->outbody.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&c->outbody);
	timer_arm(c, c->srv->opts.idle_timeout_ms);
	conn_update_read(c);
}

/* Writes c->out and body[0..len) (see conn_send). Returns 0 or MC_ECLOSED. */
static int conn_write(conn *c, const char *body, size_t len)
{
	/* Only a keep-alive response with no pipelined input waiting may complete
	 * inline: a last response lingers and pipelined input is parsed from the
	 * write callback, as both must not run inside the handler's call. */
	int try = !c->close_after && c->in.len == 0;
	int rc = conn_send(c, try, body, len);
	if (rc < 0) {
		conn_close(c);
		return MC_ECLOSED;
	}
	if (rc == 1)
		conn_written_inline(c);
	return 0;
}

/* Fields the server sets itself: a handler's copy is dropped. */
static int is_reserved_header(const mc_http_header *h)
{
	switch (h->name_len) {
	case 10:
		return mc_http_token_eq(h->name, 10, "connection") ||
		       mc_http_token_eq(h->name, 10, "keep-alive");
	case 14:
		return mc_http_token_eq(h->name, 14, "content-length");
	case 17:
		return mc_http_token_eq(h->name, 17, "transfer-encoding");
	default:
		return 0;
	}
}

/* 1 when a handler's header may go on the wire: a name without CR, LF, NUL or
 * ':', a value without CR, LF or NUL, and not one the server sets. */
static int header_sendable(const mc_http_header *h)
{
	return h->name_len > 0 && mc_http_name_safe(h->name, h->name_len) &&
	       mc_http_field_safe(h->value, h->value_len) && !is_reserved_header(h);
}

static char *put_line(char *p, const mc_http_header *h)
{
	memcpy(p, h->name, h->name_len);
	p += h->name_len;
	*p++ = ':';
	*p++ = ' ';
	if (h->value_len) {
		memcpy(p, h->value, h->value_len);
		p += h->value_len;
	}
	*p++ = '\r';
	*p++ = '\n';
	return p;
}

/* Appends the status line and the headers to o in one pass: the trusted ones
 * (built by the caller from known-safe parts, see mc_http_respond_trusted) as
 * they are, the others when header_sendable(), then extra[0..xlen) (complete
 * lines: the server's own, or a caller's pre-rendered block), Content-Length
 * when with_length, and Connection. */
static void build_head(conn *c, mc_buf *o, int status, const mc_http_header *t, size_t nt,
		       const mc_http_header *h, size_t n, uint64_t body_len, int with_length,
		       const char *extra, size_t xlen)
{
	const char *reason = mc_http_reason(status);
	size_t rlen = strlen(reason);
	/* status line, Content-Length (20 digits), Connection and the blank line */
	size_t need = 9 + 4 + rlen + 2 + xlen + 16 + 20 + 2 + 26;
	for (size_t i = 0; i < nt; i++)
		need += t[i].name_len + t[i].value_len + 4;
	for (size_t i = 0; i < n; i++)
		need += h[i].name_len + h[i].value_len + 4;
	mc_buf_reserve(o, need);
	char *p = o->data + o->len;
	memcpy(p, "HTTP/1.1 ", 9);
	p += 9;
	p = mc_http_put_u64(p, (uint64_t)status);
	*p++ = ' ';
	memcpy(p, reason, rlen);
	p += rlen;
	*p++ = '\r';
	*p++ = '\n';
	for (size_t i = 0; i < nt; i++)
		p = put_line(p, &t[i]);
	for (size_t i = 0; i < n; i++) {
		if (!header_sendable(&h[i])) {
			MC_DEBUG("http", "response header dropped (reserved or unsafe)");
			continue;
		}
		p = put_line(p, &h[i]);
	}
	if (xlen) {
		memcpy(p, extra, xlen);
		p += xlen;
	}
	if (with_length) {
		memcpy(p, "Content-Length: ", 16);
		p = mc_http_put_u64(p + 16, body_len);
		*p++ = '\r';
		*p++ = '\n';
	}
	if (c->close_after) {
		memcpy(p, "Connection: close\r\n\r\n", 21);
		p += 21;
	} else {
		memcpy(p, "Connection: keep-alive\r\n\r\n", 26);
		p += 26;
	}
	o->len = (size_t)(p - o->data);
	o->data[o->len] = '\0';
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
	mc_buf_reset(&c->out);
	static const char ctype[] = "Content-Type: application/json\r\n";
	build_head(c, &c->out, status, NULL, 0, o->error_headers, o->nerror_headers, b->len, 1,
		   ctype, sizeof ctype - 1);
	if (o->on_reject)
		o->on_reject(c->srv->ctx, status);
	conn_write(c, b->data, b->len);
}

/* ---- hardening: request checks, timeouts, overload --------------------------------- */

static int req_fail(conn *c, int status, const char *msg)
{
	c->err_status = status;
	snprintf(c->err_msg, sizeof c->err_msg, "%s", msg);
	return -1;
}

static int overload_fail(conn *c)
{
	c->err_status = 503;
	snprintf(c->err_msg, sizeof c->err_msg, "more than %zu requests in flight",
		 c->srv->opts.max_inflight);
	return HPE_USER;
}

/* Origin-form, "*" for OPTIONS, or an absolute URI naming the Host header's host
 * (the handler then sees its origin-form part). Anything else is refused: the
 * cell is no forward proxy, and a second host name is a routing ambiguity. */
static int target_check(conn *c, const llhttp_t *p, const mc_http_header *host)
{
	const mc_http_head *h = &c->head;
	const char *t = h->arena.data + h->url_off;
	size_t n = h->url_len;
	if (n > 0 && t[0] == '/')
		return 0;
	if (n == 1 && t[0] == '*' && p->method == HTTP_OPTIONS)
		return 0;
	size_t a = 0;
	if (n > 7 && strncasecmp(t, "http://", 7) == 0)
		a = 7;
	else if (n > 8 && strncasecmp(t, "https://", 8) == 0)
		a = 8;
	if (!a)
		return req_fail(c, 400, "the request target must be a path or an absolute URI");
	size_t e = a;
	while (e < n && t[e] != '/' && t[e] != '?' && t[e] != '#')
		e++;
	if (e == a || memchr(t + a, '@', e - a))
		return req_fail(c, 400, "absolute URI without a host, or with user information");
	if (e < n && t[e] != '/')
		return req_fail(c, 400, "absolute URI whose path does not start with \"/\"");
	if (host && !(host->value_len == e - a && strncasecmp(host->value, t + a, e - a) == 0))
		return req_fail(c, 400, "absolute URI names another host than the Host header");
	if (e == n)
		c->target_root = 1;
	else
		c->target_off = (uint32_t)e;
	return 0;
}

/* Framing and routing checks llhttp 8 leaves to us, run once the head is
 * complete and before anything is dispatched (docs/operations.md lists them). */
static int request_check(conn *c, const llhttp_t *p)
{
	const mc_http_head *h = &c->head;
	c->target_off = 0;
	c->target_root = 0;
	if (p->http_major != 1)
		return req_fail(c, 505, "only HTTP versions 1.0 and 1.1 are served here");
	size_t nhost = 0, nte = 0;
	const mc_http_header *host = NULL, *te = NULL;
	for (size_t i = 0; i < h->nspans; i++) {
		const mc_http_header *f = &h->hdrs[i];
		if (mc_http_token_eq(f->name, f->name_len, "host")) {
			nhost++;
			host = f;
		} else if (mc_http_token_eq(f->name, f->name_len, "transfer-encoding")) {
			nte++;
			te = f;
		}
	}
	if (nhost > 1)
		return req_fail(c, 400, "more than one Host header field");
	if (nte > 0 && p->http_minor == 0)
		return req_fail(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
	if (nte > 1 || (te && !mc_http_token_eq(te->value, te->value_len, "chunked")))
		return req_fail(c, 400, "a transfer coding other than a single \"chunked\"");
	return target_check(c, p, host);
}

/* Arms the timer for the next body window, cut at the request deadline. */
static void body_window_arm(conn *c)
{
	uint64_t now = mc_now_ns();
	uint64_t left = c->deadline_ns > now ? (c->deadline_ns - now + 999999u) / 1000000u : 1;
	timer_arm(c, (uint32_t)MC_MIN((uint64_t)c->srv->opts.body_timeout_ms, left));
}

/* The timer of a request still arriving: past the whole-request deadline, a
 * head not complete in time, or a body window that brought too few bytes is
 * answered 408 and closed; a body that progressed gets its next window. */
static void request_timer_fired(conn *c)
{
	const mc_http_server_opts *o = &c->srv->opts;
	char msg[128];
	if (mc_now_ns() + 1000000u >= c->deadline_ns) {
		snprintf(msg, sizeof msg, "request not received within %u ms",
			 (unsigned)o->request_timeout_ms);
	} else if (c->in_body) {
		size_t got = c->body.len - c->win_bytes;
		uint64_t need = (uint64_t)o->body_min_rate * o->body_timeout_ms / 1000u;
		if (need < 1)
			need = 1;
		if (got >= need) {
			c->win_bytes = c->body.len;
			body_window_arm(c);
			return;
		}
		snprintf(msg, sizeof msg,
			 "request body too slow: %zu bytes in %u ms, at least %llu required", got,
			 (unsigned)o->body_timeout_ms, (unsigned long long)need);
	} else {
		snprintf(msg, sizeof msg, "request head not received within %u ms",
			 (unsigned)o->header_timeout_ms);
	}
	conn_send_error(c, 408, "request_timeout", msg);
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
	snprintf(c->err_msg, sizeof c->err_msg, "request body exceeds %zu bytes", c->body_limit);
	return HPE_USER;
}

static int cb_message_begin(llhttp_t *p)
{
	conn *c = p->data;
	mc_http_server *s = c->srv;
	c->msg_active = 1;
	c->in_body = 0;
	/* the first byte arrived by the time the loop's poll returned */
	c->start_ns = srv_now_ns(s);
	mc_http_head_reset(&c->head);
	if (c->body.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&c->body);
	mc_buf_reset(&c->body);
	c->body_limit = s->opts.max_body_bytes;
	if (!c->inflight) {
		if (s->opts.shared) {
			/* the bound is on every thread's requests together */
			size_t n = atomic_fetch_add_explicit(&s->opts.shared->inflight, 1,
							     memory_order_relaxed);
			if (n >= s->opts.max_inflight) {
				atomic_fetch_sub_explicit(&s->opts.shared->inflight, 1,
							  memory_order_relaxed);
				return overload_fail(c);
			}
		} else if (s->inflight >= s->opts.max_inflight) {
			return overload_fail(c);
		}
		c->inflight = 1;
		s->inflight++;
	}
	c->deadline_ns = c->start_ns + (uint64_t)s->opts.request_timeout_ms * 1000000u;
	timer_arm(c, MC_MIN(s->opts.header_timeout_ms, s->opts.request_timeout_ms));
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
	/* A value piece that starts a line is an obs-fold continuation, which llhttp
	 * 8 joins to the previous value; RFC 9112 section 5.2 lets a server reject it,
	 * and a proxy behind or in front of us may read it differently. */
	uint8_t before = at > c->pbase ? (uint8_t)at[-1] : c->prev_byte;
	if (before == '\n') {
		c->err_status = 400;
		snprintf(c->err_msg, sizeof c->err_msg,
			 "obsolete line folding in a header field value");
		return HPE_USER;
	}
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
	if (request_check(c, p) < 0)
		return -1;
	const mc_http_server_opts *o = &c->srv->opts;
	if (o->body_limit)
		c->body_limit =
		    o->body_limit(c->srv->ctx, llhttp_method_name((llhttp_method_t)p->method),
				  h->arena.data + h->path_off, h->path_len);
	int has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->body_limit) {
		body_fail(c);
		return -1;
	}
	if (has_body) {
		/* from here the body must keep progressing (on_timer checks it) */
		c->in_body = 1;
		c->win_bytes = 0;
		body_window_arm(c);
	}
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0)
		mc_buf_reserve(&c->body, (size_t)p->content_length);
	size_t elen;
	const char *e = mc_http_header_find(h->hdrs, h->nspans, "expect", &elen);
	if (e && has_body && p->http_major == 1 && p->http_minor >= 1 &&
	    mc_http_token_eq(e, elen, "100-continue")) {
		uv_buf_t b = uv_buf_init((char *)CONTINUE_100, sizeof CONTINUE_100 - 1);
		c->creq.data = c;
		if (conn_io_write(c, &c->creq, &b, 1, NULL) < 0)
			return -1;
	}
	return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t n)
{
	conn *c = p->data;
	if (n > c->body_limit - c->body.len)
		return body_fail(c);
	mc_buf_append(&c->body, at, n);
	return 0;
}

static int cb_message_complete(llhttp_t *p)
{
	conn *c = p->data;
	c->msg_active = 0;
	c->in_body = 0;
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
	/* an absolute-form target reaches the handler in origin form */
	r->target = c->target_root ? "/" : h->arena.data + h->url_off + c->target_off;
	r->path = h->arena.data + h->path_off;
	r->path_len = h->path_len;
	const char *q = strchr(r->target, '?');
	r->query = q ? q + 1 : "";
	r->headers = h->hdrs;
	r->nheaders = h->nspans;
	r->body = c->body.len ? c->body.data : NULL;
	r->body_len = c->body.len;
	r->keep_alive = c->keep_alive;
	r->secure = c->tls != NULL;
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
	timer_stop(c);
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
	c->pbase = data;
	llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
	if (e == HPE_OK) {
		if (len > 0)
			c->prev_byte = (uint8_t)data[len - 1];
		return len;
	}
	if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
		size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
		if (used > 0)
			c->prev_byte = (uint8_t)data[used - 1];
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
	else if (c->err_status == 503)
		conn_send_error(c, 503, "overloaded", c->err_msg);
	else if (c->err_status == 505)
		conn_send_error(c, 505, "http_version_not_supported", c->err_msg);
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
	if (c->h2) {
		mc_http_h2_recv(c->h2, buf->base, (size_t)nread);
		return;
	}
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
	c->armed = 0;
	if (c->closing || !c->due_set)
		return;
	uint64_t now = uv_now(c->srv->loop);
	if (now < c->due_ms) {
		timer_set(c, now); /* armed early (see timer_arm): not due yet */
		return;
	}
	c->due_set = 0;
	if (c->h2 && !c->lingering) {
		mc_http_h2_timer(c->h2);
		return;
	}
	if (c->streaming && c->stream_ended && !c->writing && c->sq.len == 0) {
		stream_done(c); /* scheduled by mc_http_exchange_end() */
		return;
	}
	if (c->msg_active && !c->writing && !c->ex_active && !c->close_after) {
		request_timer_fired(c);
		return;
	}
	conn_lost(c); /* idle, send or linger timeout */
}

/* ---- exchanges ------------------------------------------------------------------ */

const mc_http_request *mc_http_exchange_request(const mc_http_exchange *ex)
{
	return &ex->req;
}

uint64_t mc_http_exchange_now_ns(const mc_http_exchange *ex)
{
	return ex->c && ex->c->srv ? srv_now_ns(ex->c->srv) : mc_now_ns();
}

void **mc_http_exchange_userdata(mc_http_exchange *ex)
{
	return &ex->userdata;
}

/* The trusted and the other headers in one array for HTTP/2, which checks
 * them all: in stack when they fit (n <= cap), else allocated (the caller frees
 * what is not stack). */
static mc_http_header *h2_join(const mc_http_header *t, size_t nt, const mc_http_header *h,
			       size_t n, mc_http_header *stack, size_t cap)
{
	mc_http_header *all = nt + n <= cap ? stack : mc_alloc((nt + n + 1) * sizeof *all);
	if (nt)
		memcpy(all, t, nt * sizeof *all);
	if (n)
		memcpy(all + nt, h, n * sizeof *all);
	return all;
}

static int respond_split(mc_http_exchange *ex, int status, const mc_http_header *t, size_t nt,
			 const mc_http_header *headers, size_t nheaders, const char *raw,
			 size_t raw_len, const void *body, size_t body_len);

/* mc_http_respond with the caller's own headers t[0..nt) sent first and its
 * pre-rendered block raw[0..raw_len) after the checked ones, both unchecked. */
static int respond(mc_http_exchange *ex, int status, const mc_http_header *t, size_t nt,
		   const mc_http_header *headers, size_t nheaders, const char *raw,
		   size_t raw_len, const void *body, size_t body_len)
{
	MC_ASSERT(raw_len == 0 || (raw_len >= 2 && raw[raw_len - 1] == '\n'));
	if (ex->h2 && raw_len)
		return respond_split(ex, status, t, nt, headers, nheaders, raw, raw_len, body,
				     body_len);
	if (ex->h2) {
		if (nt == 0)
			return mc_http_h2_respond(ex, status, headers, nheaders, body, body_len);
		mc_http_header stack[32];
		mc_http_header *all = h2_join(t, nt, headers, nheaders, stack, 32);
		int rc = mc_http_h2_respond(ex, status, all, nt + nheaders, body, body_len);
		if (all != stack)
			free(all);
		return rc;
	}
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
	size_t send_len = !bodyless && !c->head_req ? body_len : 0;
	/* A HEAD answer announces the length a GET would have; a handler that knows
	 * it (a proxy relaying a HEAD) passes it as Content-Length. */
	uint64_t announced = body_len;
	size_t cl_len = 0;
	const char *cl = NULL;
	if (c->head_req) {
		cl = mc_http_header_find(t, nt, "content-length", &cl_len);
		if (!cl)
			cl = mc_http_header_find(headers, nheaders, "content-length", &cl_len);
	}
	if (cl && mc_parse_u64(cl, cl_len, UINT64_MAX, &announced) != 0)
		announced = body_len;
	mc_buf_reset(&c->out);
	build_head(c, &c->out, status, t, nt, headers, nheaders, announced, !bodyless, raw,
		   raw_len);
	/* the body goes from the caller's memory; only what the socket does not take
	 * at once is copied */
	rc = conn_write(c, body, send_len);
out:
	conn_unref(c);
	return rc;
}

int mc_http_respond(mc_http_exchange *ex, int status, const mc_http_header *headers,
		    size_t nheaders, const void *body, size_t body_len)
{
	return respond(ex, status, NULL, 0, headers, nheaders, NULL, 0, body, body_len);
}

int mc_http_respond_trusted(mc_http_exchange *ex, int status, const mc_http_header *trusted,
			    size_t ntrusted, const mc_http_header *headers, size_t nheaders,
			    const char *raw, size_t raw_len, const void *body, size_t body_len)
{
	return respond(ex, status, trusted, ntrusted, headers, nheaders, raw, raw_len, body,
		       body_len);
}

int mc_http_respond_raw(mc_http_exchange *ex, int status, const mc_http_header *headers,
			size_t nheaders, const char *raw, size_t raw_len, const void *body,
			size_t body_len)
{
	return respond(ex, status, NULL, 0, headers, nheaders, raw, raw_len, body, body_len);
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
	mc_buf_reset(&c->out);
	int rc = conn_send(c, 1, c->outbody.data, c->outbody.len);
	if (rc < 0) {
		conn_lost(c);
		return;
	}
	/* written at once: finish as the write callback would (this runs from loop
	 * events only, never from inside a handler's call) */
	if (rc == 1)
		write_done(c, 0);
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
	timer_stop(c); /* now waiting for the handler, not the client */
	if (c->ex_active && c->ex.watch)
		c->ex.watch(c->ex.watch_arg, MC_HTTP_EX_DRAINED);
}

/* HTTP/2 halves of the streamed-response calls: the length travels as a
 * content-length field (a handler's own one is replaced). */
static int h2_start_response(mc_http_exchange *ex, int status, const mc_http_header *headers,
			     size_t nheaders, int64_t content_length)
{
	mc_http_header *h = mc_alloc((nheaders + 1) * sizeof *h);
	size_t n = 0;
	for (size_t i = 0; i < nheaders; i++)
		if (!(headers[i].name_len == 14 &&
		      strncasecmp(headers[i].name, "content-length", 14) == 0))
			h[n++] = headers[i];
	char len[24];
	if (content_length >= 0) {
		int m = snprintf(len, sizeof len, "%lld", (long long)content_length);
		h[n++] = (mc_http_header){"Content-Length", 14, len, (size_t)m};
	}
	int rc = mc_http_h2_start_response(ex, status, h, n);
	free(h);
	return rc;
}

static int h2_end(mc_http_exchange *ex, int abort)
{
	return mc_http_h2_end_response(ex, !abort);
}

static int start_response(mc_http_exchange *ex, int status, const mc_http_header *t, size_t nt,
			  const mc_http_header *headers, size_t nheaders, int64_t content_length)
{
	if (ex->h2) {
		if (nt == 0)
			return h2_start_response(ex, status, headers, nheaders, content_length);
		mc_http_header stack[32];
		mc_http_header *all = h2_join(t, nt, headers, nheaders, stack, 32);
		int rc = h2_start_response(ex, status, all, nt + nheaders, content_length);
		if (all != stack)
			free(all);
		return rc;
	}
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
	static const char chunked[] = "Transfer-Encoding: chunked\r\n";
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
		extra = chunked;
	}
	build_head(c, &c->sq, status, t, nt, headers, nheaders,
		   with_length ? (uint64_t)content_length : 0, with_length, extra,
		   extra ? sizeof chunked - 1 : 0);
	return stream_flush(c);
}

int mc_http_exchange_start_response(mc_http_exchange *ex, int status, const mc_http_header *headers,
				    size_t nheaders, int64_t content_length)
{
	return start_response(ex, status, NULL, 0, headers, nheaders, content_length);
}

int mc_http_exchange_start_trusted(mc_http_exchange *ex, int status,
				   const mc_http_header *trusted, size_t ntrusted,
				   const mc_http_header *headers, size_t nheaders,
				   int64_t content_length)
{
	return start_response(ex, status, trusted, ntrusted, headers, nheaders, content_length);
}

int mc_http_exchange_write_body(mc_http_exchange *ex, const void *data, size_t len)
{
	if (ex->h2)
		return mc_http_h2_write_body(ex, data, len);
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
	if (ex->h2)
		return mc_http_h2_pending(ex);
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

/* The end of a streamed response while no write is in flight: what is queued
 * goes out now rather than at the end of the loop iteration and, once all of it
 * is written, the response completes inline. Only called when no input waits to
 * be parsed and the connection stays open, so nothing here calls a handler.
 * Returns 0 or MC_ECLOSED. */
static int stream_end_now(conn *c)
{
	if (c->flush_queued) {
		flusher *f = c->srv->flusher;
		mc_http_list_remove(&c->flink);
		c->flush_queued = 0;
		if (mc_http_list_empty(&f->q))
			uv_idle_stop(&f->idle);
	}
	if (c->sq.len > 0) {
		mc_buf t = c->outbody;
		c->outbody = c->sq;
		c->sq = t;
		mc_buf_reset(&c->sq);
		mc_buf_reset(&c->out);
		int rc = conn_send(c, 1, c->outbody.data, c->outbody.len);
		if (rc < 0) {
			conn_close(c);
			return MC_ECLOSED;
		}
		if (rc == 0)
			return 0; /* on_write -> stream_written -> stream_done */
		inflight_end(c);
		mc_buf_reset(&c->outbody);
	}
	stream_done(c);
	return 0;
}

int mc_http_exchange_end(mc_http_exchange *ex, int abort)
{
	if (ex->h2)
		return h2_end(ex, abort);
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
		if (c->writing)
			rc = stream_flush(c); /* on_write takes sq next */
		else if (c->in.len == 0 && !c->close_after)
			rc = stream_end_now(c);
		else if (c->sq.len == 0)
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
	o->header_timeout_ms = 10000;
	o->body_timeout_ms = 10000;
	o->body_min_rate = 0;
	o->max_inflight = 1024;
}

static void on_reject_close(uv_handle_t *h)
{
	mc_http_server *s = h->data;
	free(h);
	server_release(s);
}

/* A connection over max_connections: it gets the prebuilt 503, a half-close and
 * up to REJECT_LINGER_MS of discarded input (so the answer is not destroyed by a
 * reset), then it is closed. */
typedef struct reject {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t sreq;
	mc_http_server *s;
	mc_http_link link; /* in s->rejects */
	int open;	   /* handles not closed yet */
	int closing;
} reject;

static void on_reject_handle_close(uv_handle_t *h)
{
	reject *r = h->data;
	if (--r->open > 0)
		return;
	mc_http_server *s = r->s;
	free(r);
	server_release(s);
}

static void reject_close(reject *r)
{
	if (r->closing)
		return;
	r->closing = 1;
	mc_http_list_remove(&r->link);
	r->s->nrejects--;
	if (r->s->opts.shared)
		atomic_fetch_sub_explicit(&r->s->opts.shared->rejects, 1, memory_order_relaxed);
	uv_close((uv_handle_t *)&r->tcp, on_reject_handle_close);
	uv_close((uv_handle_t *)&r->timer, on_reject_handle_close);
}

static void on_reject_timer(uv_timer_t *t)
{
	reject_close(t->data);
}

static void on_reject_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	reject *r = h->data;
	(void)suggested;
	buf->base = r->s->slab;
	buf->len = sizeof r->s->slab;
}

static void on_reject_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	if (nread < 0)
		reject_close(st->data);
}

static void on_reject_shutdown(uv_shutdown_t *req, int status)
{
	(void)req; /* the close that follows does the rest */
	(void)status;
}

/* Answers 503 on a new connection; 0, or -1 when it could not (it is closed). */
static int server_reject_busy(mc_http_server *s)
{
	reject *r = mc_calloc(1, sizeof *r);
	if (uv_tcp_init(s->loop, &r->tcp) < 0) {
		if (s->opts.shared)
			atomic_fetch_sub_explicit(&s->opts.shared->rejects, 1, memory_order_relaxed);
		free(r);
		return -1;
	}
	r->s = s;
	r->tcp.data = r;
	r->timer.data = r;
	uv_timer_init(s->loop, &r->timer);
	r->open = 2;
	s->handles++;
	mc_http_list_push_back(&s->rejects, &r->link);
	s->nrejects++; /* the shared count was taken by server_reject() */
	if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&r->tcp) < 0) {
		reject_close(r);
		return -1;
	}
	if (s->opts.on_reject)
		s->opts.on_reject(s->ctx, 503);
	uv_buf_t b = uv_buf_init(s->busy.data, (unsigned)s->busy.len);
	r->sreq.data = r;
	if (uv_try_write((uv_stream_t *)&r->tcp, &b, 1) != (int)s->busy.len ||
	    uv_shutdown(&r->sreq, (uv_stream_t *)&r->tcp, on_reject_shutdown) < 0 ||
	    uv_read_start((uv_stream_t *)&r->tcp, on_reject_alloc, on_reject_read) < 0) {
		reject_close(r);
		return 0;
	}
	uv_timer_start(&r->timer, on_reject_timer, REJECT_LINGER_MS, 0);
	return 0;
}

/* The prebuilt answer for connections over max_connections. */
static void busy_build(mc_http_server *s)
{
	mc_buf body;
	mc_buf_init(&body);
	char msg[96];
	snprintf(msg, sizeof msg, "more than %zu connections are open", s->opts.max_connections);
	mc_http_error_body(&body, "overloaded", msg);
	mc_buf *o = &s->busy;
	mc_buf_init(o);
	mc_buf_append_str(o, "HTTP/1.1 503 Service Unavailable\r\n");
	for (size_t i = 0; i < s->opts.nerror_headers; i++) {
		const mc_http_header *h = &s->opts.error_headers[i];
		if (!header_sendable(h))
			continue;
		mc_buf_append(o, h->name, h->name_len);
		mc_buf_append(o, ": ", 2);
		mc_buf_append(o, h->value, h->value_len);
		mc_buf_append(o, "\r\n", 2);
	}
	mc_buf_append_str(o, "Content-Type: application/json\r\nContent-Length: ");
	mc_http_buf_u64(o, body.len);
	mc_buf_append_str(o, "\r\nConnection: close\r\n\r\n");
	mc_buf_append(o, body.data, body.len);
	mc_buf_fini(&body);
}

/* Accepts and closes at once: the connection limit is reached. */
static void server_reject(mc_http_server *s, uv_stream_t *l)
{
	if (s->busy.len > 0) {
		/* the linger bound is the cell's, whatever the thread */
		if (s->opts.shared) {
			size_t n = atomic_fetch_add_explicit(&s->opts.shared->rejects, 1,
							     memory_order_relaxed);
			if (n < REJECT_LINGER_MAX) {
				server_reject_busy(s);
				return;
			}
			atomic_fetch_sub_explicit(&s->opts.shared->rejects, 1, memory_order_relaxed);
		} else if (s->nrejects < REJECT_LINGER_MAX) {
			server_reject_busy(s);
			return;
		}
	}
	uv_tcp_t *t = mc_alloc(sizeof *t);
	if (uv_tcp_init(s->loop, t) < 0) {
		free(t);
		return;
	}
	t->data = s;
	s->handles++;
	uv_accept(l, (uv_stream_t *)t);
	uv_close((uv_handle_t *)t, on_reject_close);
}

static int conn_tls_begin(conn *c);
static void conn_report(conn *c, const mc_http_conn_info *ci);

static void on_connection(uv_stream_t *l, int status)
{
	mc_http_server *s = l->data;
	if (status < 0) {
		MC_WARN("http", "accept failed: %s", uv_strerror(status));
		return;
	}
	if (s->closing)
		return;
	if (s->opts.shared) {
		size_t n = atomic_fetch_add_explicit(&s->opts.shared->conns, 1, memory_order_relaxed);
		if (n >= s->opts.max_connections) {
			atomic_fetch_sub_explicit(&s->opts.shared->conns, 1, memory_order_relaxed);
			server_reject(s, l);
			return;
		}
	} else if (s->nconns >= s->opts.max_connections) {
		server_reject(s, l);
		return;
	}
	conn *c = mc_calloc(1, sizeof *c);
	c->srv = s;
	c->refs = 1;
	c->rd.fd = -1;
	if (uv_tcp_init(s->loop, &c->tcp) < 0) {
		if (s->opts.shared)
			atomic_fetch_sub_explicit(&s->opts.shared->conns, 1, memory_order_relaxed);
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
	if ((uv_tcp_t *)l == &s->tls_listener) {
		if (conn_tls_begin(c) < 0)
			return;
	} else {
		if (mc_http_rd_init(&c->rd, s->loop, &c->tcp, s->rd_fd_cap) == 0)
			c->open_handles++;
		conn_report(c, NULL);
		timer_arm(c, MC_MIN(MC_MIN(s->opts.idle_timeout_ms, s->opts.request_timeout_ms),
				    s->opts.header_timeout_ms));
	}
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
		if (!s->opts.header_timeout_ms)
			s->opts.header_timeout_ms = d.header_timeout_ms;
		if (!s->opts.body_timeout_ms)
			s->opts.body_timeout_ms = d.body_timeout_ms;
		if (!s->opts.max_inflight)
			s->opts.max_inflight = d.max_inflight;
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
	s->rd_fd_cap = mc_http_rd_fd_cap();
	mc_http_list_init(&s->conns);
	mc_http_list_init(&s->rejects);
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
	s->clock = mc_calloc(1, sizeof *s->clock);
	uv_prepare_init(loop, &s->clock->h);
	uv_prepare_start(&s->clock->h, on_clock_tick);
	uv_unref((uv_handle_t *)&s->clock->h); /* does not keep the loop running */
	busy_build(s);
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
	if (s->has_tls)
		uv_close((uv_handle_t *)&s->tls_listener, on_listener_close);
	mc_http_link *l = s->conns.next;
	while (l != &s->conns) {
		conn *c = MC_HTTP_CONTAINER(l, conn, link);
		l = l->next; /* conn_close unlinks c */
		if (c->lingering)
			continue;
		if (c->h2) {
			mc_http_h2_drain(c->h2); /* GOAWAY; closes once its streams ended */
			continue;
		}
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
	uv_close((uv_handle_t *)&s->clock->h, on_clock_closed);
	s->clock = NULL;
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
		if (s->has_tls)
			uv_close((uv_handle_t *)&s->tls_listener, on_listener_close);
	} else if (s->handles == 0) {
		server_destroy(s); /* drained: listener and connections are all closed */
		return;
	}
	while (!mc_http_list_empty(&s->conns))
		conn_close(MC_HTTP_CONTAINER(s->conns.next, conn, link));
	while (!mc_http_list_empty(&s->rejects))
		reject_close(MC_HTTP_CONTAINER(s->rejects.next, reject, link));
}

/* ---- TLS listener and HTTP/2 ------------------------------------------------------- */

static void server_destroy(mc_http_server *s)
{
	mc_tls_ctx_unref(s->tls_ctx);
	mc_buf_fini(&s->busy);
	free(s);
}

static void conn_report(conn *c, const mc_http_conn_info *ci)
{
	mc_http_conn_info plain = {.peer = c->peer};
	if (c->srv->opts.on_conn)
		c->srv->opts.on_conn(c->srv->ctx, ci ? ci : &plain);
}

static void conn_h2_arm(void *conn_, uint32_t ms)
{
	conn *c = conn_;
	if (ms)
		timer_arm(c, ms);
	else
		timer_stop(c);
}

/* The max_inflight slot of an HTTP/2 stream (h2.c takes it when the request
 * goes to the handler and gives it back when it is answered). */
static int conn_h2_inflight_take(void *conn_)
{
	conn *c = conn_;
	mc_http_server *s = c->srv;
	if (s->opts.shared) {
		size_t n =
		    atomic_fetch_add_explicit(&s->opts.shared->inflight, 1, memory_order_relaxed);
		if (n >= s->opts.max_inflight) {
			atomic_fetch_sub_explicit(&s->opts.shared->inflight, 1, memory_order_relaxed);
			return -1;
		}
	} else if (s->inflight >= s->opts.max_inflight) {
		return -1;
	}
	s->inflight++;
	return 0;
}

static void conn_h2_inflight_drop(void *conn_)
{
	conn *c = conn_;
	mc_http_server *s = c->srv;
	s->inflight--;
	if (s->opts.shared)
		atomic_fetch_sub_explicit(&s->opts.shared->inflight, 1, memory_order_relaxed);
}

static void conn_h2_close(void *conn_, int graceful)
{
	conn *c = conn_;
	if (c->closing || c->lingering)
		return;
	if (graceful)
		conn_linger(c); /* close_notify, then drain the input until EOF */
	else
		conn_close(c);
}

static void conn_on_handshake(void *arg, int status)
{
	conn *c = arg;
	if (c->closing)
		return;
	mc_tls_conn *t = mc_tls_stream_conn(c->tls);
	mc_http_conn_info ci = {.tls = 1, .peer = c->peer, .version = mc_tls_conn_version(t)};
	if (status < 0) {
		ci.failed = 1;
		ci.error = mc_tls_conn_error(t)[0] ? mc_tls_conn_error(t)
			   : status == MC_EPROTO   ? "TLS protocol error"
						   : uv_strerror(status);
		MC_DEBUG("http", "TLS handshake with %s failed: %s", c->peer, ci.error);
		conn_report(c, &ci);
		conn_close(c);
		return;
	}
	ci.resumed = mc_tls_conn_resumed(t);
	size_t alen;
	const char *alpn = mc_tls_conn_alpn(t, &alen);
	if (alpn && alen == 2 && memcmp(alpn, "h2", 2) == 0) {
		mc_http_server *s = c->srv;
		mc_http_h2_host host = {.conn = c,
					.tls = c->tls,
					.opts = &s->opts,
					.h2 = s->tls_opts.h2,
					.handler = s->handler,
					.ctx = s->ctx,
					.peer = c->peer,
					.arm = conn_h2_arm,
					.close = conn_h2_close,
					.inflight_take = conn_h2_inflight_take,
					.inflight_drop = conn_h2_inflight_drop};
		if (mc_http_h2_new(&c->h2, &host) < 0) {
			conn_close(c);
			return;
		}
		ci.h2 = 1;
		if (s->draining)
			mc_http_h2_drain(c->h2);
	} else {
		timer_arm(c, MC_MIN(MC_MIN(c->srv->opts.idle_timeout_ms,
					   c->srv->opts.request_timeout_ms),
				    c->srv->opts.header_timeout_ms));
	}
	conn_report(c, &ci);
}

/* Wraps an accepted connection of the TLS listener; 0, or negative after
 * closing it. */
static int conn_tls_begin(conn *c)
{
	mc_http_server *s = c->srv;
	int rc = mc_tls_stream_new(&c->tls, s->tls_ctx, &c->tcp, conn_on_handshake, s->slab,
				   sizeof s->slab);
	if (rc < 0) {
		c->tls = NULL;
		conn_close(c);
		return rc;
	}
	timer_arm(c, s->tls_opts.handshake_timeout_ms);
	return 0;
}

int mc_http_server_listen_tls(mc_http_server *s, const char *hostport, mc_tls_ctx *ctx,
			      const mc_http_tls_opts *o)
{
	if (!s || !ctx || !hostport || s->has_tls || s->closing || s->draining)
		return MC_EINVAL;
	s->tls_opts = o ? *o : (mc_http_tls_opts){0};
	if (!s->tls_opts.handshake_timeout_ms)
		s->tls_opts.handshake_timeout_ms = 10000;
	s->tls_listener.data = s;
	int rc = mc_net_listen(s->loop, &s->tls_listener, hostport, s->opts.reuseport, 1024,
			       on_connection);
	if (rc < 0) {
		if (uv_is_closing((uv_handle_t *)&s->tls_listener)) {
			/* closing without a callback: count it until libuv is done */
			s->handles++;
			s->tls_listener.close_cb = on_listener_close;
		}
		return rc;
	}
	s->tls_listener.data = s;
	s->handles++;
	s->has_tls = 1;
	s->tls_port = mc_net_local_port(&s->tls_listener);
	s->tls_ctx = mc_tls_ctx_ref(ctx);
	return 0;
}

void mc_http_server_tls_ctx_set(mc_http_server *s, mc_tls_ctx *ctx)
{
	if (!s || !ctx)
		return;
	mc_tls_ctx *old = s->tls_ctx;
	s->tls_ctx = mc_tls_ctx_ref(ctx);
	mc_tls_ctx_unref(old);
}

uint16_t mc_http_server_tls_port(const mc_http_server *s)
{
	return s && s->has_tls ? s->tls_port : 0;
}

/* ---- responses with a pre-rendered header block (mc_http_respond_raw) ------------------ */

/* The fields of a raw block as headers (for the transports that need them one by
 * one). Returns how many were added to out (room for at most cap). */
static size_t raw_split(const char *raw, size_t len, mc_http_header *out, size_t cap)
{
	size_t n = 0, i = 0;
	while (i < len && n < cap) {
		const char *line = raw + i;
		const char *end = memchr(line, '\r', len - i);
		if (!end || (size_t)(end - raw) + 1 >= len || end[1] != '\n')
			break; /* not a complete line: dropped */
		const char *colon = memchr(line, ':', (size_t)(end - line));
		i = (size_t)(end - raw) + 2;
		if (!colon)
			continue;
		const char *v = colon + 1;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		out[n++] = (mc_http_header){line, (size_t)(colon - line), v, (size_t)(end - v)};
	}
	return n;
}

/* HTTP/2 takes fields one by one: the raw block is split and joined to the
 * others (all checked by the HTTP/2 side). */
static int respond_split(mc_http_exchange *ex, int status, const mc_http_header *t, size_t nt,
			 const mc_http_header *headers, size_t nheaders, const char *raw,
			 size_t raw_len, const void *body, size_t body_len)
{
	size_t cap = nt + nheaders;
	for (size_t i = 0; i + 1 < raw_len; i++)
		cap += raw[i] == '\r' && raw[i + 1] == '\n';
	mc_http_header *all = mc_alloc((cap + 1) * sizeof *all);
	if (nt)
		memcpy(all, t, nt * sizeof *all);
	if (nheaders)
		memcpy(all + nt, headers, nheaders * sizeof *all);
	size_t n = nt + nheaders + raw_split(raw, raw_len, all + nt + nheaders, cap - nt - nheaders);
	int rc = mc_http_h2_respond(ex, status, all, n, body, body_len);
	free(all);
	return rc;
}
