/* Unit tests for src/http: a server and a client pool on one libuv loop on
 * 127.0.0.1, raw sockets for wire-level checks (pipelining, limits, errors) and
 * a scripted raw server for client-side parsing (chunked, read-until-close,
 * stale keep-alive retry). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "common/common.h"
#include "http/http.h"
#include "net/net.h"

/* ---- loop helpers ------------------------------------------------------------------- */

static void on_guard(uv_timer_t *t)
{
	*(int *)t->data = 1;
}

/* Runs the loop until *flag becomes non-zero or ms elapse; returns *flag. */
static int run_until(uv_loop_t *loop, const int *flag, unsigned ms)
{
	int expired = 0;
	uv_timer_t guard;
	uv_timer_init(loop, &guard);
	guard.data = &expired;
	uv_timer_start(&guard, on_guard, ms, 0);
	while (!*flag && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return *flag;
}

/* Runs the loop until *count reaches n or ms elapse; returns 1 when it did. */
static int run_until_n(uv_loop_t *loop, const int *count, int n, unsigned ms)
{
	int expired = 0;
	uv_timer_t guard;
	uv_timer_init(loop, &guard);
	guard.data = &expired;
	uv_timer_start(&guard, on_guard, ms, 0);
	while (*count < n && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return *count >= n;
}

/* Runs the loop for ms milliseconds. */
static void run_for(uv_loop_t *loop, unsigned ms)
{
	int never = 0;
	run_until(loop, &never, ms);
}

/* Closes everything: the loop must end with no handle left open. */
static void loop_finish(uv_loop_t *loop)
{
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- test server handler --------------------------------------------------------------- */

typedef struct srvctx {
	int calls;
	mc_http_exchange *held; /* a "/hang" request kept unanswered */
	char peer[64];
	char query[64];
	size_t nheaders;
	char xfoo[32];
} srvctx;

static void echo_handler(void *ctx, mc_http_exchange *ex)
{
	srvctx *s = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	s->calls++;
	snprintf(s->peer, sizeof s->peer, "%s", r->peer);
	snprintf(s->query, sizeof s->query, "%s", r->query);
	s->nheaders = r->nheaders;
	size_t n;
	const char *v = mc_http_header_find(r->headers, r->nheaders, "x-foo", &n);
	snprintf(s->xfoo, sizeof s->xfoo, "%.*s", v ? (int)n : 0, v ? v : "");
	if (strcmp(r->path, "/hang") == 0) {
		s->held = ex;
		return;
	}
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_printf(&b, "%s %s body=", r->method, r->path);
	if (r->body_len)
		mc_buf_append(&b, r->body, r->body_len);
	mc_http_header h[] = {{"X-Echo", 6, "yes", 3}, {"Content-Type", 12, "text/plain", 10}};
	assert_int_equal(mc_http_respond(ex, 200, h, 2, b.data, b.len), 0);
	mc_buf_fini(&b);
}

/* The exact bytes echo_handler sends for a body-less request. */
static void expected_echo(mc_buf *out, const char *method, const char *path, int keep)
{
	mc_buf_printf(out,
		      "HTTP/1.1 200 OK\r\nX-Echo: yes\r\nContent-Type: text/plain\r\n"
		      "Content-Length: %zu\r\nConnection: %s\r\n\r\n%s %s body=",
		      strlen(method) + strlen(path) + 7, keep ? "keep-alive" : "close", method,
		      path);
}

static mc_http_server *start_server(uv_loop_t *loop, srvctx *ctx, const mc_http_server_opts *o)
{
	mc_http_server *s = NULL;
	assert_int_equal(mc_http_server_new(&s, loop, "127.0.0.1:0", o, echo_handler, ctx), 0);
	assert_non_null(s);
	assert_true(mc_http_server_port(s) > 0);
	return s;
}

static mc_http_pool *start_pool(uv_loop_t *loop, uint16_t port, const mc_http_pool_opts *o)
{
	char hp[64];
	snprintf(hp, sizeof hp, "127.0.0.1:%u", port);
	mc_http_pool *p = NULL;
	assert_int_equal(mc_http_pool_new(&p, loop, hp, o), 0);
	assert_non_null(p);
	return p;
}

/* ---- response collector ------------------------------------------------------------- */

typedef struct result {
	int done;
	int err;
	int status;
	char body[512];
	size_t body_len;
	int reused;
	uint64_t connect_ns;
	char xecho[16];
	char ctype[32];
} result;

static void on_response(void *arg, int err, const mc_http_response *res)
{
	result *r = arg;
	r->done++;
	r->err = err;
	if (err) {
		assert_null(res);
		return;
	}
	r->status = res->status;
	r->body_len = res->body_len;
	assert_true(res->body_len < sizeof r->body);
	memcpy(r->body, res->body, res->body_len);
	r->body[res->body_len] = '\0';
	r->reused = res->reused;
	r->connect_ns = res->connect_ns;
	size_t n;
	const char *v = mc_http_header_find(res->headers, res->nheaders, "x-echo", &n);
	snprintf(r->xecho, sizeof r->xecho, "%.*s", v ? (int)n : 0, v ? v : "");
	v = mc_http_header_find(res->headers, res->nheaders, "content-type", &n);
	snprintf(r->ctype, sizeof r->ctype, "%.*s", v ? (int)n : 0, v ? v : "");
}

/* ---- raw client: connect, write bytes, collect everything until EOF ----------------- */

typedef struct raw {
	uv_tcp_t tcp;
	uv_connect_t cr;
	uv_write_t wr;
	mc_buf out;
	mc_buf in;
	int eof;
	int closed;
	char rbuf[4096];
} raw;

static void raw_on_close(uv_handle_t *h)
{
	raw *r = h->data;
	r->closed = 1;
}

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	raw *r = h->data;
	(void)sz;
	*b = uv_buf_init(r->rbuf, sizeof r->rbuf);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	raw *r = s->data;
	if (n > 0)
		mc_buf_append(&r->in, b->base, (size_t)n);
	else if (n < 0) {
		r->eof = 1;
		uv_close((uv_handle_t *)&r->tcp, raw_on_close);
	}
}

static void raw_written(uv_write_t *w, int status)
{
	(void)w;
	(void)status;
}

static void raw_connected(uv_connect_t *c, int status)
{
	raw *r = c->data;
	assert_int_equal(status, 0);
	uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
	if (r->out.len) {
		uv_buf_t b = uv_buf_init(r->out.data, (unsigned)r->out.len);
		assert_int_equal(uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, raw_written), 0);
	}
}

/* Starts a raw exchange: the bytes go out in one write. */
static void raw_start(raw *r, uv_loop_t *loop, uint16_t port, const void *bytes, size_t n)
{
	memset(r, 0, sizeof *r);
	mc_buf_init(&r->in);
	mc_buf_init(&r->out);
	mc_buf_append(&r->out, bytes, n);
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", port, &sa);
	uv_tcp_init(loop, &r->tcp);
	r->tcp.data = r;
	r->cr.data = r;
	assert_int_equal(uv_tcp_connect(&r->cr, &r->tcp, (struct sockaddr *)&sa, raw_connected), 0);
}

static void raw_fini(raw *r)
{
	mc_buf_fini(&r->in);
	mc_buf_fini(&r->out);
}

/* Runs a raw exchange to completion (server closes) and returns the bytes. */
static void raw_roundtrip(raw *r, uv_loop_t *loop, uint16_t port, const char *req)
{
	raw_start(r, loop, port, req, strlen(req));
	assert_true(run_until(loop, &r->closed, 5000));
}

/* ---- scripted raw server for client tests ---------------------------------------------- */

typedef struct canned {
	uv_tcp_t listener;
	const char *script[4]; /* answer to the i-th request on a connection; NULL: close */
	int close_after;       /* close the connection after each answer */
	unsigned close_mask;   /* bit i: close after answering the i-th request */
	int nconns, nreqs;
	uint16_t port;
} canned;

typedef struct canned_conn {
	uv_tcp_t tcp;
	uv_write_t w;
	canned *srv;
	mc_buf in;
	int idx;
	int closing;
	char rbuf[4096];
} canned_conn;

static void canned_conn_closed(uv_handle_t *h)
{
	canned_conn *c = h->data;
	mc_buf_fini(&c->in);
	free(c);
}

static void canned_close(canned_conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	uv_close((uv_handle_t *)&c->tcp, canned_conn_closed);
}

static void canned_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	canned_conn *c = h->data;
	(void)sz;
	*b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void canned_written(uv_write_t *w, int status)
{
	canned_conn *c = w->data;
	(void)status;
	if (c->srv->close_after || (c->idx <= 4 && (c->srv->close_mask >> (c->idx - 1)) & 1))
		canned_close(c);
}

static void canned_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	canned_conn *c = s->data;
	if (c->closing)
		return;
	if (n < 0) {
		canned_close(c);
		return;
	}
	mc_buf_append(&c->in, b->base, (size_t)n);
	char *end;
	while (!c->closing && c->in.len && (end = strstr(c->in.data, "\r\n\r\n"))) {
		mc_buf_consume(&c->in, (size_t)(end + 4 - c->in.data));
		c->srv->nreqs++;
		const char *ans = c->idx < 4 ? c->srv->script[c->idx] : NULL;
		c->idx++;
		if (!ans) {
			canned_close(c);
			return;
		}
		uv_buf_t buf = uv_buf_init((char *)ans, (unsigned)strlen(ans));
		c->w.data = c;
		uv_write(&c->w, s, &buf, 1, canned_written);
	}
}

static void canned_on_conn(uv_stream_t *l, int status)
{
	canned *srv = l->data;
	assert_int_equal(status, 0);
	canned_conn *c = mc_calloc(1, sizeof *c);
	c->srv = srv;
	mc_buf_init(&c->in);
	uv_tcp_init(l->loop, &c->tcp);
	c->tcp.data = c;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
	srv->nconns++;
	uv_read_start((uv_stream_t *)&c->tcp, canned_alloc, canned_read);
}

static void canned_start(canned *srv, uv_loop_t *loop)
{
	assert_int_equal(mc_net_listen(loop, &srv->listener, "127.0.0.1:0", 0, 16, canned_on_conn),
			 0);
	srv->listener.data = srv;
	srv->port = mc_net_local_port(&srv->listener);
}

static void canned_stop(canned *srv)
{
	uv_close((uv_handle_t *)&srv->listener, NULL);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_get_put_and_reuse(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server *srv = start_server(&loop, &sc, NULL);
	mc_http_pool *pool = start_pool(&loop, mc_http_server_port(srv), NULL);

	result r1 = {0}, r2 = {0}, r3 = {0};
	mc_http_header h[] = {{"X-Foo", 5, "bar baz", 7}};
	assert_int_equal(
	    mc_http_pool_request(pool, "GET", "/a/b?x=1&y=2", h, 1, NULL, 0, on_response, &r1), 0);
	assert_int_equal(r1.done, 0); /* never synchronous */
	assert_int_equal(mc_http_pool_outstanding(pool), 1);
	assert_true(run_until(&loop, &r1.done, 5000));
	assert_int_equal(r1.err, 0);
	assert_int_equal(r1.status, 200);
	assert_string_equal(r1.body, "GET /a/b body=");
	assert_string_equal(r1.xecho, "yes");
	assert_string_equal(r1.ctype, "text/plain");
	assert_int_equal(r1.reused, 0);
	assert_true(r1.connect_ns > 0);
	assert_string_equal(sc.query, "x=1&y=2");
	assert_string_equal(sc.xfoo, "bar baz");
	assert_int_equal(strncmp(sc.peer, "127.0.0.1:", 10), 0);
	assert_int_equal(mc_http_pool_outstanding(pool), 0);

	const char put[] = "hello, body";
	assert_int_equal(mc_http_pool_request(pool, "PUT", "/kv/k1", NULL, 0, put, strlen(put),
					      on_response, &r2),
			 0);
	assert_true(run_until(&loop, &r2.done, 5000));
	assert_int_equal(r2.err, 0);
	assert_int_equal(r2.status, 200);
	assert_string_equal(r2.body, "PUT /kv/k1 body=hello, body");
	assert_int_equal(r2.reused, 1);
	assert_int_equal(r2.connect_ns, 0);

	/* HEAD: Content-Length announced, no body on the wire, connection still reusable */
	assert_int_equal(
	    mc_http_pool_request(pool, "HEAD", "/h", NULL, 0, NULL, 0, on_response, &r3), 0);
	assert_true(run_until(&loop, &r3.done, 5000));
	assert_int_equal(r3.err, 0);
	assert_int_equal(r3.status, 200);
	assert_int_equal(r3.body_len, 0);
	assert_int_equal(r3.reused, 1);
	assert_int_equal(sc.calls, 3);

	mc_http_pool_free(pool);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

static void test_pipelining(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server *srv = start_server(&loop, &sc, NULL);
	raw r;
	raw_roundtrip(&r, &loop, mc_http_server_port(srv),
		      "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
		      "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
		      "GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		      "GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
	mc_buf want;
	mc_buf_init(&want);
	expected_echo(&want, "GET", "/first", 1);
	mc_buf_printf(&want,
		      "HTTP/1.1 200 OK\r\nX-Echo: yes\r\nContent-Type: text/plain\r\n"
		      "Content-Length: %zu\r\nConnection: keep-alive\r\n\r\n%s",
		      strlen("POST /second body=abc"), "POST /second body=abc");
	expected_echo(&want, "GET", "/third", 0);
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	assert_int_equal(sc.calls, 3); /* nothing after Connection: close is served */
	mc_buf_fini(&want);
	raw_fini(&r);

	/* HTTP/1.0 without keep-alive: answered then closed */
	raw_roundtrip(&r, &loop, mc_http_server_port(srv), "GET /old HTTP/1.0\r\n\r\n");
	mc_buf_init(&want);
	expected_echo(&want, "GET", "/old", 0);
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	mc_buf_fini(&want);
	raw_fini(&r);

	mc_http_server_free(srv);
	loop_finish(&loop);
}

/* Targets of every length up to past the arena's growth steps, pipelined on one
 * connection: each path and query reaches the handler intact, in order. */
static void test_target_lengths(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server *srv = start_server(&loop, &sc, NULL);
	mc_buf req, want;
	mc_buf_init(&req);
	mc_buf_init(&want);
	char path[300];
	for (int n = 1; n <= 260; n++) {
		path[0] = '/';
		for (int i = 1; i < n; i++)
			path[i] = (char)('a' + i % 26);
		path[n] = '\0';
		int last = n == 260;
		mc_buf_printf(&req, "GET %s?q=%d HTTP/1.1\r\n%s\r\n", path, n,
			      last ? "Connection: close\r\n" : "");
		expected_echo(&want, "GET", path, !last);
	}
	/* absolute-form target: the path is taken after the authority */
	raw r;
	raw_roundtrip(&r, &loop, mc_http_server_port(srv), req.data);
	assert_int_equal(sc.calls, 260);
	assert_string_equal(sc.query, "q=260");
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	raw_fini(&r);

	mc_buf_reset(&want);
	raw_roundtrip(&r, &loop, mc_http_server_port(srv),
		      "GET http://example.com/abs/p?z=9 HTTP/1.1\r\nConnection: close\r\n\r\n");
	expected_echo(&want, "GET", "/abs/p", 0);
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	assert_string_equal(sc.query, "z=9");
	raw_fini(&r);
	mc_buf_fini(&req);
	mc_buf_fini(&want);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

/* Sends req raw and checks the status line, the JSON error code and the close. */
static void expect_error(uv_loop_t *loop, uint16_t port, const char *req, const char *status_line,
			 const char *code)
{
	raw r;
	raw_roundtrip(&r, loop, port, req);
	assert_true(r.in.len > 0);
	assert_int_equal(strncmp(r.in.data, status_line, strlen(status_line)), 0);
	assert_non_null(strstr(r.in.data, "Connection: close\r\n"));
	assert_non_null(strstr(r.in.data, "Content-Type: application/json\r\n"));
	char want[96];
	snprintf(want, sizeof want, "\r\n\r\n{\"error\":\"%s\",\"message\":\"", code);
	assert_non_null(strstr(r.in.data, want));
	/* exactly one response */
	assert_null(strstr(r.in.data + 1, "HTTP/1.1"));
	raw_fini(&r);
}

static void test_limits_and_bad_requests(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.max_headers = 8;
	o.max_header_bytes = 1024;
	o.max_body_bytes = 100;
	mc_http_server *srv = start_server(&loop, &sc, &o);
	uint16_t port = mc_http_server_port(srv);

	mc_buf req;
	mc_buf_init(&req);
	mc_buf_append_str(&req, "GET / HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; i < 8; i++)
		mc_buf_printf(&req, "X-H%d: v\r\n", i);
	mc_buf_append_str(&req, "\r\n");
	expect_error(&loop, port, req.data, "HTTP/1.1 431 ", "request_header_fields_too_large");

	mc_buf_reset(&req);
	mc_buf_append_str(&req, "GET / HTTP/1.1\r\nX-Big: ");
	for (int i = 0; i < 1100; i++)
		mc_buf_append(&req, "a", 1);
	mc_buf_append_str(&req, "\r\n\r\n");
	expect_error(&loop, port, req.data, "HTTP/1.1 431 ", "request_header_fields_too_large");

	/* declared too big: refused before the body is read */
	mc_buf_reset(&req);
	mc_buf_append_str(&req, "POST /x HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
	for (int i = 0; i < 101; i++)
		mc_buf_append(&req, "b", 1);
	expect_error(&loop, port, req.data, "HTTP/1.1 413 ", "payload_too_large");

	/* chunked body growing past the limit */
	mc_buf_reset(&req);
	mc_buf_append_str(&req, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 3; i++) {
		mc_buf_append_str(&req, "40\r\n");
		for (int j = 0; j < 64; j++)
			mc_buf_append(&req, "c", 1);
		mc_buf_append_str(&req, "\r\n");
	}
	mc_buf_append_str(&req, "0\r\n\r\n");
	expect_error(&loop, port, req.data, "HTTP/1.1 413 ", "payload_too_large");

	expect_error(&loop, port,
		     "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
		     "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		     "HTTP/1.1 400 ", "bad_request");
	expect_error(&loop, port, "GARBAGE\r\n\r\n", "HTTP/1.1 400 ", "bad_request");
	/* field names must be tokens (llhttp 8 alone lets a space through) */
	expect_error(&loop, port, "GET /x HTTP/1.1\r\nHo st: a\r\n\r\n", "HTTP/1.1 400 ",
		     "bad_request");
	expect_error(&loop, port, "GET /x HTTP/1.1\r\nX-A(b): 1\r\n\r\n", "HTTP/1.1 400 ",
		     "bad_request");
	assert_int_equal(sc.calls, 0); /* the handler never saw any of them */

	/* a chunked body within limits reaches the handler decoded */
	raw r;
	raw_roundtrip(&r, &loop, port,
		      "PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
		      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
	assert_non_null(strstr(r.in.data, "\r\n\r\nPUT /c body=abcde"));
	assert_int_equal(sc.calls, 1);
	raw_fini(&r);

	mc_buf_fini(&req);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

static void test_server_timeouts(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.request_timeout_ms = 100;
	o.idle_timeout_ms = 100;
	mc_http_server *srv = start_server(&loop, &sc, &o);
	uint16_t port = mc_http_server_port(srv);

	/* half a request: 408 then close */
	expect_error(&loop, port, "GET /slow HTTP/1.1\r\nHost:", "HTTP/1.1 408 ",
		     "request_timeout");

	/* one request then silence: answered, then closed by the idle timer */
	raw r;
	raw_roundtrip(&r, &loop, port, "GET /i HTTP/1.1\r\n\r\n");
	mc_buf want;
	mc_buf_init(&want);
	expected_echo(&want, "GET", "/i", 1);
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	mc_buf_fini(&want);
	raw_fini(&r);

	mc_http_server_free(srv);
	loop_finish(&loop);
}

/* Sends req raw and checks the status line and the exact JSON error message. */
static void expect_message(uv_loop_t *loop, uint16_t port, const char *req, const char *status_line,
			   const char *code, const char *message)
{
	expect_error(loop, port, req, status_line, code);
	raw r;
	raw_roundtrip(&r, loop, port, req);
	char want[256];
	snprintf(want, sizeof want, "{\"error\":\"%s\",\"message\":\"%s\"}\n", code, message);
	mc_buf_append(&r.in, "", 1);
	if (!strstr(r.in.data, want))
		fail_msg("want %s in %s", want, r.in.data);
	raw_fini(&r);
}

static void test_server_hardening(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.header_timeout_ms = 200;
	o.body_timeout_ms = 200;
	o.request_timeout_ms = 5000;
	o.max_inflight = 1;
	mc_http_server *srv = start_server(&loop, &sc, &o);
	uint16_t port = mc_http_server_port(srv);

	expect_message(&loop, port, "GET /x HTTP/1.1\r\nHost:", "HTTP/1.1 408 ", "request_timeout",
		       "request head not received within 200 ms");
	/* the bytes that came with the head fill the first window, the second is empty */
	expect_message(&loop, port, "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
		       "HTTP/1.1 408 ", "request_timeout",
		       "request body too slow: 0 bytes in 200 ms, at least 1 required");
	expect_message(&loop, port, "GET /x HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n", "HTTP/1.1 400 ",
		       "bad_request", "obsolete line folding in a header field value");
	expect_message(&loop, port, "GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "HTTP/1.1 400 ",
		       "bad_request", "more than one Host header field");
	expect_message(&loop, port,
		       "PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		       "HTTP/1.1 400 ", "bad_request",
		       "a transfer coding other than a single \\\"chunked\\\"");
	expect_message(&loop, port, "GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n", "HTTP/1.1 400 ",
		       "bad_request", "absolute URI names another host than the Host header");
	assert_int_equal(sc.calls, 0);

	/* one request in flight: the next one is shed at its first byte */
	raw a;
	raw_start(&a, &loop, port, "GET /hang HTTP/1.1\r\n\r\n", 22);
	run_until(&loop, &sc.calls, 5000);
	assert_non_null(sc.held);
	expect_message(&loop, port, "GET /x HTTP/1.1\r\n\r\n", "HTTP/1.1 503 ", "overloaded",
		       "more than 1 requests in flight");
	assert_int_equal(mc_http_respond(sc.held, 200, NULL, 0, "done", 4), 0);
	/* answered: the next request is served */
	raw r;
	raw_roundtrip(&r, &loop, port, "GET /after HTTP/1.1\r\nConnection: close\r\n\r\n");
	mc_buf want;
	mc_buf_init(&want);
	expected_echo(&want, "GET", "/after", 0);
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	mc_buf_fini(&want);
	raw_fini(&r);
	uv_close((uv_handle_t *)&a.tcp, raw_on_close);
	run_for(&loop, 20);
	raw_fini(&a);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

static void test_max_connections(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.max_connections = 1;
	mc_http_server *srv = start_server(&loop, &sc, &o);
	uint16_t port = mc_http_server_port(srv);
	raw a, b;
	raw_start(&a, &loop, port, "GET /hang HTTP/1.1\r\n\r\n", 22);
	run_until(&loop, &sc.calls, 5000);
	assert_non_null(sc.held);
	raw_start(&b, &loop, port, "GET /x HTTP/1.1\r\n\r\n", 19);
	assert_true(run_until(&loop, &b.closed, 5000));
	/* over the limit: a 503 from the server itself, then the close */
	static const char busy_body[] =
	    "{\"error\":\"overloaded\",\"message\":\"more than 1 connections are open\"}\n";
	mc_buf want;
	mc_buf_init(&want);
	mc_buf_printf(&want,
		      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
		      sizeof busy_body - 1, busy_body);
	assert_int_equal(b.in.len, want.len);
	assert_memory_equal(b.in.data, want.data, want.len);
	mc_buf_fini(&want);
	assert_int_equal(sc.calls, 1);
	uv_close((uv_handle_t *)&a.tcp, raw_on_close);
	run_for(&loop, 50);
	/* the client left: the late answer is dropped */
	assert_int_equal(mc_http_respond(sc.held, 200, NULL, 0, "late", 4), MC_ECLOSED);
	raw_fini(&a);
	raw_fini(&b);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

static void test_client_chunked_and_eof_bodies(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	canned cs = {0};
	cs.script[0] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Echo: c\r\n\r\n"
		       "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
	cs.script[1] = "HTTP/1.1 100 Continue\r\n\r\n"
		       "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
	cs.script[2] = "HTTP/1.0 200 OK\r\n\r\nuntil close";
	cs.script[3] = NULL;
	cs.close_mask = 1u << 2;
	canned_start(&cs, &loop);
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_conns = 1;
	mc_http_pool *pool = start_pool(&loop, cs.port, &po);

	result r1 = {0}, r2 = {0}, r3 = {0};
	assert_int_equal(mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r1),
			 0);
	/* queued behind r1 (max_conns 1), then sent on the same connection */
	assert_int_equal(mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r2),
			 0);
	assert_int_equal(mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r3),
			 0);
	assert_int_equal(mc_http_pool_outstanding(pool), 3);
	assert_true(run_until(&loop, &r3.done, 5000));
	assert_int_equal(r1.err, 0);
	assert_int_equal(r1.status, 200);
	assert_string_equal(r1.body, "hello, world");
	assert_string_equal(r1.xecho, "c");
	assert_int_equal(r2.err, 0);
	assert_int_equal(r2.status, 204);
	assert_int_equal(r2.body_len, 0);
	assert_int_equal(r2.reused, 1);
	assert_int_equal(r3.err, 0);
	assert_int_equal(r3.status, 200);
	assert_string_equal(r3.body, "until close");
	assert_int_equal(r3.reused, 1);
	assert_int_equal(cs.nconns, 1);
	assert_int_equal(cs.nreqs, 3);

	/* the read-until-close response ended the connection: next one is fresh */
	result r4 = {0};
	assert_int_equal(mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r4),
			 0);
	assert_true(run_until(&loop, &r4.done, 5000));
	assert_int_equal(r4.err, 0);
	assert_int_equal(r4.reused, 0);
	assert_string_equal(r4.body, "hello, world");
	assert_int_equal(cs.nconns, 2);

	mc_http_pool_free(pool);
	canned_stop(&cs);
	loop_finish(&loop);
}

static void test_client_stale_retry(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	canned cs = {0};
	cs.script[0] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	cs.script[1] = NULL; /* the second request on a connection finds it closed */
	canned_start(&cs, &loop);
	mc_http_pool *pool = start_pool(&loop, cs.port, NULL);

	result r1 = {0}, r2 = {0};
	mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r1);
	assert_true(run_until(&loop, &r1.done, 5000));
	assert_int_equal(r1.err, 0);
	mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r2);
	assert_true(run_until(&loop, &r2.done, 5000));
	assert_int_equal(r2.done, 1);
	assert_int_equal(r2.err, 0);
	assert_string_equal(r2.body, "ok");
	assert_int_equal(r2.reused, 0); /* retried on a fresh connection */
	assert_int_equal(cs.nconns, 2);
	assert_int_equal(cs.nreqs, 3);

	/* a POST on a connection that closes under it is never resent: the server
	 * may have acted on it */
	result r3 = {0};
	mc_http_pool_request(pool, "POST", "/", NULL, 0, "x", 1, on_response, &r3);
	assert_true(run_until(&loop, &r3.done, 5000));
	assert_int_equal(r3.err, MC_ECLOSED);
	assert_int_equal(cs.nconns, 2);
	assert_int_equal(cs.nreqs, 4);

	mc_http_pool_free(pool);
	canned_stop(&cs);
	loop_finish(&loop);
}

static void test_client_bad_and_big_responses(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	canned cs = {0};
	cs.script[0] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
	cs.close_after = 1;
	canned_start(&cs, &loop);
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_response_bytes = 60;
	mc_http_pool *pool = start_pool(&loop, cs.port, &po);
	result r1 = {0};
	mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r1);
	assert_true(run_until(&loop, &r1.done, 5000));
	assert_int_equal(r1.err, MC_ETOOBIG);
	mc_http_pool_free(pool);

	/* truncated body then close: an error, not a short success */
	po.max_response_bytes = 0;
	pool = start_pool(&loop, cs.port, &po);
	result r2 = {0};
	mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r2);
	assert_true(run_until(&loop, &r2.done, 5000));
	assert_int_equal(r2.err, MC_ECLOSED);
	mc_http_pool_free(pool);

	cs.script[0] = "HTTP/1.1 2OO Bad\r\n\r\n";
	pool = start_pool(&loop, cs.port, NULL);
	result r3 = {0};
	mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r3);
	assert_true(run_until(&loop, &r3.done, 5000));
	assert_int_equal(r3.err, MC_EPROTO);
	mc_http_pool_free(pool);

	canned_stop(&cs);
	loop_finish(&loop);
}

static void test_client_refused(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	/* a port nobody listens on: bind one, read it, close it */
	uv_tcp_t t;
	assert_int_equal(mc_net_listen(&loop, &t, "127.0.0.1:0", 0, 1, NULL), 0);
	uint16_t port = mc_net_local_port(&t);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	mc_http_pool *pool = start_pool(&loop, port, NULL);
	result r = {0};
	assert_int_equal(mc_http_pool_request(pool, "GET", "/", NULL, 0, NULL, 0, on_response, &r),
			 0);
	assert_int_equal(r.done, 0);
	assert_true(run_until(&loop, &r.done, 5000));
	assert_int_equal(r.err, -ECONNREFUSED);
	assert_int_equal(mc_http_pool_outstanding(pool), 0);
	assert_int_equal(
	    mc_http_pool_request(pool, "BAD METHOD", "/", NULL, 0, NULL, 0, on_response, &r),
	    MC_EINVAL);
	assert_int_equal(
	    mc_http_pool_request(pool, "GET", "/a b", NULL, 0, NULL, 0, on_response, &r),
	    MC_EINVAL);
	mc_http_pool_free(pool);
	assert_int_equal(r.done, 1);
	loop_finish(&loop);
}

static void test_client_timeout_and_late_answer(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server *srv = start_server(&loop, &sc, NULL);
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.request_timeout_ms = 100;
	mc_http_pool *pool = start_pool(&loop, mc_http_server_port(srv), &po);
	result r = {0};
	mc_http_pool_request(pool, "GET", "/hang", NULL, 0, NULL, 0, on_response, &r);
	assert_true(run_until(&loop, &r.done, 5000));
	assert_int_equal(r.err, MC_ETIMEDOUT);
	assert_non_null(sc.held);
	run_for(&loop, 50); /* the server sees the client close */
	assert_int_equal(mc_http_respond(sc.held, 200, NULL, 0, "late", 4), MC_ECLOSED);

	/* the pool still works after the timed-out connection was dropped */
	result r2 = {0};
	mc_http_pool_request(pool, "GET", "/ok", NULL, 0, NULL, 0, on_response, &r2);
	assert_true(run_until(&loop, &r2.done, 5000));
	assert_int_equal(r2.err, 0);
	assert_string_equal(r2.body, "GET /ok body=");
	assert_int_equal(r2.reused, 0);

	mc_http_pool_free(pool);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

typedef struct many {
	mc_http_pool *pool;
	int done, ok, reused, chain_left, in_order;
	int next_expected;
	char peers[8][64];
	int npeers;
} many;

static void on_many(void *arg, int err, const mc_http_response *res)
{
	many *m = arg;
	m->done++;
	if (err == 0 && res->status == 200)
		m->ok++;
	if (err == 0 && res->reused)
		m->reused++;
}

static void on_chain(void *arg, int err, const mc_http_response *res)
{
	many *m = arg;
	m->done++;
	if (err == 0 && res->status == 200)
		m->ok++;
	if (err == 0 && res->reused)
		m->reused++;
	/* issuing the next request from inside the callback reuses this connection */
	if (--m->chain_left > 0)
		assert_int_equal(
		    mc_http_pool_request(m->pool, "GET", "/c", NULL, 0, NULL, 0, on_chain, m), 0);
}

static void peer_handler(void *ctx, mc_http_exchange *ex)
{
	many *m = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	int i;
	for (i = 0; i < m->npeers; i++)
		if (strcmp(m->peers[i], r->peer) == 0)
			break;
	if (i == m->npeers && m->npeers < 8)
		snprintf(m->peers[m->npeers++], sizeof m->peers[0], "%s", r->peer);
	/* FIFO: requests are numbered in the order they were issued */
	int n = atoi(r->query);
	if (n != m->next_expected)
		m->in_order = 0;
	m->next_expected = n + 1;
	mc_http_respond(ex, 200, NULL, 0, "k", 1);
}

static void test_pool_queue_and_chain(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	many m;
	memset(&m, 0, sizeof m);
	m.in_order = 1;
	mc_http_server *srv = NULL;
	assert_int_equal(mc_http_server_new(&srv, &loop, "127.0.0.1:0", NULL, peer_handler, &m), 0);
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_conns = 1;
	m.pool = start_pool(&loop, mc_http_server_port(srv), &po);
	for (int i = 0; i < 300; i++) {
		char t[32];
		snprintf(t, sizeof t, "/q?%d", i);
		assert_int_equal(
		    mc_http_pool_request(m.pool, "GET", t, NULL, 0, NULL, 0, on_many, &m), 0);
	}
	assert_int_equal(mc_http_pool_outstanding(m.pool), 300);
	assert_true(run_until_n(&loop, &m.done, 300, 10000));
	assert_int_equal(m.done, 300);
	assert_int_equal(m.ok, 300);
	assert_int_equal(m.reused, 299);
	assert_int_equal(m.npeers, 1);
	assert_int_equal(m.in_order, 1);
	mc_http_pool_free(m.pool);

	/* a chain of requests, each issued from the previous callback */
	po.max_conns = 8;
	m.pool = start_pool(&loop, mc_http_server_port(srv), &po);
	m.done = m.ok = m.reused = m.npeers = 0;
	m.chain_left = 50;
	m.next_expected = 0;
	assert_int_equal(mc_http_pool_request(m.pool, "GET", "/c", NULL, 0, NULL, 0, on_chain, &m),
			 0);
	assert_true(run_until_n(&loop, &m.done, 50, 10000));
	assert_int_equal(m.ok, 50);
	assert_int_equal(m.reused, 49);
	assert_int_equal(m.npeers, 1);
	mc_http_pool_free(m.pool);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

static void test_pool_free_cancels(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server *srv = start_server(&loop, &sc, NULL);
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_conns = 1;
	po.max_queue = 1;
	mc_http_pool *pool = start_pool(&loop, mc_http_server_port(srv), &po);
	result r1 = {0}, r2 = {0}, r3 = {0};
	assert_int_equal(
	    mc_http_pool_request(pool, "GET", "/hang", NULL, 0, NULL, 0, on_response, &r1), 0);
	run_until(&loop, &sc.calls, 5000);
	assert_non_null(sc.held);
	assert_int_equal(
	    mc_http_pool_request(pool, "GET", "/q", NULL, 0, NULL, 0, on_response, &r2), 0);
	/* the queue holds one */
	assert_int_equal(
	    mc_http_pool_request(pool, "GET", "/q", NULL, 0, NULL, 0, on_response, &r3), MC_EFULL);
	assert_int_equal(mc_http_pool_outstanding(pool), 2);
	mc_http_pool_free(pool);
	assert_int_equal(r1.done, 1);
	assert_int_equal(r1.err, MC_ECANCELED);
	assert_int_equal(r2.done, 1);
	assert_int_equal(r2.err, MC_ECANCELED);
	assert_int_equal(r3.done, 0);
	run_for(&loop, 50);
	assert_int_equal(mc_http_respond(sc.held, 200, NULL, 0, NULL, 0), MC_ECLOSED);
	mc_http_server_free(srv);
	loop_finish(&loop);
}

/* Server freed while a handler still holds an exchange: answering later is safe. */
static void test_server_free_with_pending(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	srvctx sc = {0};
	mc_http_server *srv = start_server(&loop, &sc, NULL);
	raw a;
	raw_start(&a, &loop, mc_http_server_port(srv), "GET /hang HTTP/1.1\r\n\r\n", 22);
	run_until(&loop, &sc.calls, 5000);
	assert_non_null(sc.held);
	mc_http_server_free(srv);
	assert_true(run_until(&loop, &a.closed, 5000));
	assert_int_equal(mc_http_respond(sc.held, 200, NULL, 0, NULL, 0), MC_ECLOSED);
	raw_fini(&a);
	loop_finish(&loop);
}

static int skip_x_own(const char *name, size_t len)
{
	return len == 5 && strncasecmp(name, "x-own", 5) == 0;
}

/* mc_http_relay_headers keeps what mc_http_header_end_to_end keeps, minus skip. */
static void test_relay_headers(void **state)
{
	(void)state;
	mc_http_header h[] = {{"Content-Type", 12, "a/b", 3},
			      {"CONNECTION", 10, "keep-alive, X-Drop ,close", 25},
			      {"X-Drop", 6, "1", 1},
			      {"Keep-Alive", 10, "t=5", 3},
			      {"X-Own", 5, "o", 1},
			      {"Host", 4, "h", 1},
			      {"TE", 2, "trailers", 8},
			      {"x-keep", 6, "k", 1},
			      {"Transfer-Encoding", 17, "chunked", 7},
			      {"Content-Length", 14, "3", 1}};
	size_t n = MC_ARRAY_LEN(h);
	mc_http_header out[16];
	size_t k = mc_http_relay_headers(h, n, out, skip_x_own);
	assert_int_equal(k, 2);
	assert_string_equal(out[0].name, "Content-Type");
	assert_string_equal(out[1].name, "x-keep");
	size_t e2e = 0;
	for (size_t i = 0; i < n; i++)
		e2e += mc_http_header_end_to_end(h, n, &h[i]);
	assert_int_equal(mc_http_relay_headers(h, n, out, NULL), e2e);
	assert_int_equal(e2e, 3);
	/* more Connection tokens than are collected at once */
	mc_http_header m[] = {{"Connection", 10, "a,b,c,d,e,f,g,h,i,x-late", 24},
			      {"X-Late", 6, "1", 1},
			      {"X-Other", 7, "2", 1}};
	k = mc_http_relay_headers(m, 3, out, NULL);
	assert_int_equal(k, 1);
	assert_string_equal(out[0].name, "X-Other");
}

static void test_header_find_and_reason(void **state)
{
	(void)state;
	mc_http_header h[] = {{"Content-Type", 12, "a/b", 3}, {"X-K", 3, "v", 1}};
	size_t n = 99;
	assert_string_equal(mc_http_header_find(h, 2, "content-type", &n), "a/b");
	assert_int_equal(n, 3);
	assert_null(mc_http_header_find(h, 2, "content", &n));
	assert_int_equal(n, 0);
	assert_string_equal(mc_http_reason(404), "Not Found");
	assert_string_equal(mc_http_reason(431), "Request Header Fields Too Large");
	assert_string_equal(mc_http_reason(599), "Server Error");
}

static void test_percent_decode_and_put_u64(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	assert_int_equal(mc_http_percent_decode("a%20b%2Fc", 9, &b), 0);
	assert_int_equal(b.len, 5);
	assert_string_equal(b.data, "a b/c");
	assert_int_equal(mc_http_percent_decode("plain-key", 9, &b), 0);
	assert_string_equal(b.data, "plain-key");
	assert_int_equal(mc_http_percent_decode("%41%62", 6, &b), 0);
	assert_string_equal(b.data, "Ab");
	const char *bad[] = {"%zz", "%00", "abc%4", "abc%", "%", "a%g1"};
	for (size_t i = 0; i < MC_ARRAY_LEN(bad); i++)
		assert_int_equal(mc_http_percent_decode(bad[i], strlen(bad[i]), &b), MC_EINVAL);
	assert_int_equal(mc_http_percent_decode("", 0, &b), 0);
	assert_int_equal(b.len, 0);
	mc_buf_fini(&b);

	char out[24];
	const uint64_t v[] = {0, 7, 10, 99, 1000, 18446744073709551615ull};
	const char *want[] = {"0", "7", "10", "99", "1000", "18446744073709551615"};
	for (size_t i = 0; i < MC_ARRAY_LEN(v); i++) {
		char *e = mc_http_put_u64(out, v[i]);
		assert_int_equal((size_t)(e - out), strlen(want[i]));
		assert_memory_equal(out, want[i], strlen(want[i]));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_find_and_reason),
	    cmocka_unit_test(test_relay_headers),
	    cmocka_unit_test(test_percent_decode_and_put_u64),
	    cmocka_unit_test(test_get_put_and_reuse),
	    cmocka_unit_test(test_pipelining),
	    cmocka_unit_test(test_target_lengths),
	    cmocka_unit_test(test_limits_and_bad_requests),
	    cmocka_unit_test(test_server_timeouts),
	    cmocka_unit_test(test_max_connections),
	    cmocka_unit_test(test_server_hardening),
	    cmocka_unit_test(test_client_chunked_and_eof_bodies),
	    cmocka_unit_test(test_client_stale_retry),
	    cmocka_unit_test(test_client_bad_and_big_responses),
	    cmocka_unit_test(test_client_refused),
	    cmocka_unit_test(test_client_timeout_and_late_answer),
	    cmocka_unit_test(test_pool_queue_and_chain),
	    cmocka_unit_test(test_pool_free_cancels),
	    cmocka_unit_test(test_server_free_with_pending),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
