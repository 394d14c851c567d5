/* Unit tests for streamed HTTP responses in src/http: the server's
 * start/write/end API on the wire (chunked, Content-Length, HTTP/1.0, HEAD,
 * abort), the client's streaming calls (head before body, pause/resume,
 * abort, per-call timeouts) and the exchange watch (drained, client gone). */
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

static void run_for(uv_loop_t *loop, unsigned ms)
{
	int never = 0;
	run_until(loop, &never, ms);
}

static void loop_finish(uv_loop_t *loop)
{
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- a streaming test server ---------------------------------------------------------
 * Paths: /chunks (unknown length: "one" now, "two" on step(), then end), /fixed
 * (Content-Length 6, "abc" + "def"), /big (BIG_BYTES in 16 KiB writes at once, unknown
 * length), /abort ("x" then cut), /hold (kept without an answer). */

#define BIG_BYTES (512u * 1024u)

typedef struct ssrv {
	mc_http_server *srv;
	mc_http_exchange *ex; /* the exchange being streamed or held */
	int calls;
	int closed_events, drained_events;
	int ended;
} ssrv;

static void on_watch(void *arg, int event)
{
	ssrv *s = arg;
	if (event == MC_HTTP_EX_CLOSED) {
		s->closed_events++;
		if (s->ex) {
			mc_http_exchange_end(s->ex, 1);
			s->ex = NULL;
			s->ended++;
		}
	} else if (event == MC_HTTP_EX_DRAINED) {
		s->drained_events++;
	}
}

static void stream_handler(void *ctx, mc_http_exchange *ex)
{
	ssrv *s = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	s->calls++;
	mc_http_header ct = {"Content-Type", 12, "text/plain", 10};
	mc_http_exchange_watch(ex, on_watch, s);
	if (strcmp(r->path, "/chunks") == 0) {
		assert_int_equal(mc_http_exchange_start_response(ex, 200, &ct, 1, -1), 0);
		assert_int_equal(mc_http_exchange_write_body(ex, "one", 3), 0);
		s->ex = ex; /* "two" and the end come from step() */
	} else if (strcmp(r->path, "/fixed") == 0) {
		assert_int_equal(mc_http_exchange_start_response(ex, 200, &ct, 1, 6), 0);
		assert_int_equal(mc_http_exchange_write_body(ex, "abc", 3), 0);
		assert_int_equal(mc_http_exchange_write_body(ex, "def", 3), 0);
		assert_int_equal(mc_http_exchange_end(ex, 0), 0);
	} else if (strcmp(r->path, "/big") == 0) {
		static char piece[16384];
		memset(piece, 'b', sizeof piece);
		assert_int_equal(mc_http_exchange_start_response(ex, 200, &ct, 1, -1), 0);
		for (size_t i = 0; i < BIG_BYTES / sizeof piece; i++)
			assert_int_equal(mc_http_exchange_write_body(ex, piece, sizeof piece), 0);
		assert_true(mc_http_exchange_pending(ex) > 0);
		assert_int_equal(mc_http_exchange_end(ex, 0), 0);
	} else if (strcmp(r->path, "/abort") == 0) {
		assert_int_equal(mc_http_exchange_start_response(ex, 200, &ct, 1, -1), 0);
		assert_int_equal(mc_http_exchange_write_body(ex, "x", 1), 0);
		s->ex = ex;
	} else {
		s->ex = ex; /* /hold */
	}
}

/* Writes "two" and ends the held /chunks stream (or aborts /abort). */
static void step(ssrv *s, int abort)
{
	assert_non_null(s->ex);
	if (!abort)
		assert_int_equal(mc_http_exchange_write_body(s->ex, "two", 3), 0);
	mc_http_exchange_end(s->ex, abort);
	s->ex = NULL;
	s->ended++;
}

static void ssrv_start(ssrv *s, uv_loop_t *loop)
{
	memset(s, 0, sizeof *s);
	assert_int_equal(mc_http_server_new(&s->srv, loop, "127.0.0.1:0", NULL, stream_handler, s),
			 0);
}

/* ---- raw client ------------------------------------------------------------------------ */

typedef struct raw {
	uv_tcp_t tcp;
	uv_connect_t cr;
	uv_write_t wr;
	mc_buf out, in;
	int eof, closed, err;
	char rbuf[4096];
} raw;

static void raw_on_close(uv_handle_t *h)
{
	((raw *)h->data)->closed = 1;
}

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	raw *r = h->data;
	(void)sz;
	*b = uv_buf_init(r->rbuf, sizeof r->rbuf);
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	raw *r = st->data;
	if (n > 0) {
		mc_buf_append(&r->in, b->base, (size_t)n);
	} else if (n < 0) {
		r->eof = 1;
		r->err = (int)n;
		uv_close((uv_handle_t *)&r->tcp, raw_on_close);
	}
}

static void raw_connected(uv_connect_t *c, int status)
{
	raw *r = c->data;
	assert_int_equal(status, 0);
	uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
	uv_buf_t b = uv_buf_init(r->out.data, (unsigned)r->out.len);
	assert_int_equal(uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, NULL), 0);
}

static void raw_start(raw *r, uv_loop_t *loop, uint16_t port, const char *req)
{
	memset(r, 0, sizeof *r);
	mc_buf_init(&r->in);
	mc_buf_init(&r->out);
	mc_buf_append_str(&r->out, req);
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", port, &sa);
	uv_tcp_init(loop, &r->tcp);
	r->tcp.data = r;
	r->cr.data = r;
	assert_int_equal(uv_tcp_connect(&r->cr, &r->tcp, (struct sockaddr *)&sa, raw_connected), 0);
}

static void raw_close(raw *r)
{
	if (!r->closed && !uv_is_closing((uv_handle_t *)&r->tcp))
		uv_close((uv_handle_t *)&r->tcp, raw_on_close);
}

static void raw_fini(raw *r)
{
	mc_buf_fini(&r->in);
	mc_buf_fini(&r->out);
}

static int raw_has(const raw *r, const char *s)
{
	return r->in.len && memmem(r->in.data, r->in.len, s, strlen(s)) != NULL;
}

/* ---- server wire tests ------------------------------------------------------------------ */

static void test_server_stream_wire(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	ssrv s;
	ssrv_start(&s, &loop);
	uint16_t port = mc_http_server_port(s.srv);

	/* unknown length: chunked, the first piece on the wire before the end */
	raw a;
	raw_start(&a, &loop, port,
		  "GET /chunks HTTP/1.1\r\n\r\nGET /fixed HTTP/1.1\r\nConnection: close\r\n\r\n");
	for (int i = 0; i < 100 && !raw_has(&a, "3\r\none\r\n"); i++)
		run_for(&loop, 10);
	assert_true(raw_has(
	    &a, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
		"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3\r\none\r\n"));
	assert_false(raw_has(&a, "0\r\n\r\n"));
	assert_true(s.drained_events >= 1); /* "one" was written: nothing left queued */
	assert_int_equal(s.calls, 1);	    /* the pipelined request waits for the stream's end */
	step(&s, 0);
	assert_true(run_until(&loop, &a.closed, 5000));
	const char *want =
	    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
	    "Connection: keep-alive\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
	    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
	    "Connection: close\r\n\r\nabcdef";
	assert_int_equal(a.in.len, strlen(want));
	assert_memory_equal(a.in.data, want, strlen(want));
	assert_int_equal(s.calls, 2);
	raw_fini(&a);

	/* HTTP/1.0: no chunks, the close delimits the body */
	raw b;
	raw_start(&b, &loop, port, "GET /chunks HTTP/1.0\r\n\r\n");
	for (int i = 0; i < 100 && !raw_has(&b, "one"); i++)
		run_for(&loop, 10);
	step(&s, 0);
	assert_true(run_until(&loop, &b.closed, 5000));
	want = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nonetwo";
	assert_int_equal(b.in.len, strlen(want));
	assert_memory_equal(b.in.data, want, strlen(want));
	raw_fini(&b);

	/* HEAD: the announced length, no body */
	raw c;
	raw_start(&c, &loop, port, "HEAD /fixed HTTP/1.1\r\nConnection: close\r\n\r\n");
	assert_true(run_until(&loop, &c.closed, 5000));
	want = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
	       "Connection: close\r\n\r\n";
	assert_int_equal(c.in.len, strlen(want));
	assert_memory_equal(c.in.data, want, strlen(want));
	raw_fini(&c);

	/* abort: the client sees a reset, never a clean end */
	raw d;
	raw_start(&d, &loop, port, "GET /abort HTTP/1.1\r\n\r\n");
	for (int i = 0; i < 100 && !raw_has(&d, "1\r\nx\r\n"); i++)
		run_for(&loop, 10);
	step(&s, 1);
	assert_true(run_until(&loop, &d.closed, 5000));
	assert_false(raw_has(&d, "0\r\n\r\n"));
	assert_int_equal(d.err, UV_ECONNRESET);
	raw_fini(&d);

	mc_http_server_free(s.srv);
	loop_finish(&loop);
}

static void test_server_watch_closed(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	ssrv s;
	ssrv_start(&s, &loop);
	raw a;
	raw_start(&a, &loop, mc_http_server_port(s.srv), "GET /hold HTTP/1.1\r\n\r\n");
	assert_true(run_until(&loop, &s.calls, 5000));
	assert_non_null(s.ex);
	raw_close(&a);
	/* the handler hears that its client left and ends the exchange from there */
	assert_true(run_until(&loop, &s.closed_events, 5000));
	assert_int_equal(s.ended, 1);
	assert_null(s.ex);
	raw_fini(&a);
	mc_http_server_free(s.srv);
	loop_finish(&loop);
}

/* ---- client streaming calls ------------------------------------------------------------ */

typedef struct scall {
	mc_http_call *call;
	int heads, ends, err, status;
	int64_t content_length;
	mc_buf body;
	size_t body_at_head; /* body bytes when the head arrived (must be 0) */
	int pause_at_first_body;
	int abort_at_head;
	size_t bodies;
} scall;

static void sc_head(void *arg, const mc_http_response *res)
{
	scall *c = arg;
	c->heads++;
	c->status = res->status;
	c->content_length = res->content_length;
	c->body_at_head = c->body.len;
	if (c->abort_at_head)
		mc_http_call_abort(c->call);
}

static void sc_body(void *arg, const char *data, size_t len)
{
	scall *c = arg;
	c->bodies++;
	mc_buf_append(&c->body, data, len);
	if (c->pause_at_first_body && c->bodies == 1)
		mc_http_call_pause(c->call, 1);
}

static void sc_end(void *arg, int err)
{
	scall *c = arg;
	c->ends++;
	c->err = err;
}

static const mc_http_call_cbs SC_CBS = {sc_head, sc_body, sc_end};

static mc_http_pool *pool_to(uv_loop_t *loop, uint16_t port)
{
	char hp[32];
	snprintf(hp, sizeof hp, "127.0.0.1:%u", port);
	mc_http_pool *p = NULL;
	assert_int_equal(mc_http_pool_new(&p, loop, hp, NULL), 0);
	return p;
}

static void test_client_call_streams(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	ssrv s;
	ssrv_start(&s, &loop);
	mc_http_pool *pool = pool_to(&loop, mc_http_server_port(s.srv));

	/* head and first piece arrive while the server still holds the stream */
	scall a = {0};
	mc_buf_init(&a.body);
	assert_int_equal(
	    mc_http_pool_call(pool, "GET", "/chunks", NULL, 0, NULL, 0, NULL, &SC_CBS, &a, &a.call),
	    0);
	for (int i = 0; i < 200 && a.body.len < 3; i++)
		run_for(&loop, 10);
	assert_int_equal(a.heads, 1);
	assert_int_equal(a.status, 200);
	assert_int_equal(a.content_length, -1);
	assert_int_equal(a.body_at_head, 0);
	assert_int_equal(a.body.len, 3);
	assert_int_equal(a.ends, 0);
	assert_int_equal(mc_http_pool_outstanding(pool), 1);
	step(&s, 0);
	assert_true(run_until(&loop, &a.ends, 5000));
	assert_int_equal(a.err, 0);
	assert_int_equal(a.body.len, 6);
	assert_memory_equal(a.body.data, "onetwo", 6);
	assert_int_equal(mc_http_pool_outstanding(pool), 0);

	/* a known length is reported */
	scall b = {0};
	mc_buf_init(&b.body);
	assert_int_equal(
	    mc_http_pool_call(pool, "GET", "/fixed", NULL, 0, NULL, 0, NULL, &SC_CBS, &b, &b.call),
	    0);
	assert_true(run_until(&loop, &b.ends, 5000));
	assert_int_equal(b.content_length, 6);
	assert_int_equal(b.err, 0);
	assert_memory_equal(b.body.data, "abcdef", 6);

	/* a cut stream ends with an error after the head */
	scall c = {0};
	mc_buf_init(&c.body);
	assert_int_equal(
	    mc_http_pool_call(pool, "GET", "/abort", NULL, 0, NULL, 0, NULL, &SC_CBS, &c, &c.call),
	    0);
	for (int i = 0; i < 200 && c.body.len < 1; i++)
		run_for(&loop, 10);
	step(&s, 1);
	assert_true(run_until(&loop, &c.ends, 5000));
	assert_int_equal(c.heads, 1);
	assert_true(c.err < 0);

	mc_buf_fini(&a.body);
	mc_buf_fini(&b.body);
	mc_buf_fini(&c.body);
	mc_http_pool_free(pool);
	mc_http_server_free(s.srv);
	loop_finish(&loop);
}

static void test_client_call_pause_and_abort(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	ssrv s;
	ssrv_start(&s, &loop);
	mc_http_pool *pool = pool_to(&loop, mc_http_server_port(s.srv));

	/* paused at the first piece: nothing more arrives until resumed */
	scall a = {0};
	mc_buf_init(&a.body);
	a.pause_at_first_body = 1;
	assert_int_equal(
	    mc_http_pool_call(pool, "GET", "/big", NULL, 0, NULL, 0, NULL, &SC_CBS, &a, &a.call),
	    0);
	for (int i = 0; i < 200 && a.bodies == 0; i++)
		run_for(&loop, 10);
	run_for(&loop, 100);
	size_t held = a.body.len;
	assert_true(held > 0 && held < BIG_BYTES);
	run_for(&loop, 100);
	assert_int_equal(a.body.len, held);
	assert_int_equal(a.ends, 0);
	mc_http_call_pause(a.call, 0);
	assert_true(run_until(&loop, &a.ends, 5000));
	assert_int_equal(a.err, 0);
	assert_int_equal(a.body.len, BIG_BYTES);

	/* aborted from its head callback: no end callback, the pool goes on */
	scall b = {0};
	mc_buf_init(&b.body);
	b.abort_at_head = 1;
	assert_int_equal(
	    mc_http_pool_call(pool, "GET", "/fixed", NULL, 0, NULL, 0, NULL, &SC_CBS, &b, &b.call),
	    0);
	assert_true(run_until(&loop, &b.heads, 5000));
	run_for(&loop, 50);
	assert_int_equal(b.ends, 0);
	assert_int_equal(b.body.len, 0);
	assert_int_equal(mc_http_pool_outstanding(pool), 0);

	/* aborted while waiting for the head; the server's exchange hears the close */
	scall c = {0};
	mc_buf_init(&c.body);
	int calls = s.calls;
	assert_int_equal(
	    mc_http_pool_call(pool, "GET", "/hold", NULL, 0, NULL, 0, NULL, &SC_CBS, &c, &c.call),
	    0);
	for (int i = 0; i < 200 && s.calls == calls; i++)
		run_for(&loop, 10);
	mc_http_call_abort(c.call);
	assert_true(run_until(&loop, &s.closed_events, 5000));
	assert_int_equal(c.ends, 0);

	/* a first-byte timeout per call */
	scall d = {0};
	mc_buf_init(&d.body);
	mc_http_call_opts o = {.first_byte_timeout_ms = 100};
	uint64_t t0 = mc_now_ns();
	assert_int_equal(
	    mc_http_pool_call(pool, "GET", "/hold", NULL, 0, NULL, 0, &o, &SC_CBS, &d, &d.call), 0);
	assert_true(run_until(&loop, &d.ends, 5000));
	assert_int_equal(d.err, MC_ETIMEDOUT);
	assert_int_equal(d.heads, 0);
	assert_true(mc_now_ns() - t0 < 3000000000ull);
	if (s.ex) {
		mc_http_exchange_end(s.ex, 1);
		s.ex = NULL;
	}

	mc_buf_fini(&a.body);
	mc_buf_fini(&b.body);
	mc_buf_fini(&c.body);
	mc_buf_fini(&d.body);
	mc_http_pool_free(pool);
	mc_http_server_free(s.srv);
	loop_finish(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_server_stream_wire),
	    cmocka_unit_test(test_server_watch_closed),
	    cmocka_unit_test(test_client_call_streams),
	    cmocka_unit_test(test_client_call_pause_and_abort),
	};
	return cmocka_run_group_tests_name("http_stream", tests, NULL, NULL);
}
