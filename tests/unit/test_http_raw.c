/* Unit tests for mc_http_respond_raw (src/http/server.c): a pre-rendered header
 * block and a borrowed body on the wire, byte for byte, over plain HTTP/1.1:
 * keep-alive and pipelined answers, HEAD, 304 and 204 (no body, no length), an
 * answer given later from a timer while the next request waits in the input
 * buffer, a body the caller overwrites and frees right after the call, an
 * invalid status (500, like mc_http_respond) and an answer to a client that is
 * gone (MC_ECLOSED). */
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

static const char RAW[] = "Content-Type: text/plain\r\nETag: \"e1\"\r\n";

typedef struct tctx {
	uv_loop_t *loop;
	int calls;
	mc_http_exchange *held;
	int late_rc;
	uv_timer_t later;
} tctx;

static void answer(mc_http_exchange *ex, const char *path)
{
	mc_http_header dyn[] = {{"X-Dyn", 5, "d", 1}, {"Bad\r\nName", 9, "x", 1}};
	int status = 200;
	if (strcmp(path, "/304") == 0)
		status = 304;
	else if (strcmp(path, "/204") == 0)
		status = 204;
	else if (strcmp(path, "/bad-status") == 0)
		status = 42;
	/* the body lives on the heap and is overwritten and freed once the call
	 * returns: nothing may still point at it */
	char *body = mc_alloc(5);
	memcpy(body, "hello", 5);
	assert_int_equal(mc_http_respond_raw(ex, status, dyn, 2, RAW, sizeof RAW - 1, body, 5), 0);
	memset(body, 'X', 5);
	free(body);
}

static void on_later(uv_timer_t *t)
{
	tctx *c = t->data;
	answer(c->held, "/later");
	c->held = NULL;
}

static void handler(void *ctx, mc_http_exchange *ex)
{
	tctx *c = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	c->calls++;
	if (strcmp(r->path, "/hang") == 0) {
		c->held = ex;
		return;
	}
	if (strcmp(r->path, "/later") == 0) {
		c->held = ex;
		uv_timer_start(&c->later, on_later, 20, 0);
		return;
	}
	answer(ex, r->path);
}

/* ---- raw client: one write, everything until EOF ------------------------------------- */

typedef struct raw {
	uv_tcp_t tcp;
	uv_connect_t cr;
	uv_write_t wr;
	mc_buf out, in;
	int closed;
	char rbuf[4096];
} raw;

static void raw_on_close(uv_handle_t *h)
{
	((raw *)h->data)->closed = 1;
}

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	(void)sz;
	raw *r = h->data;
	*b = uv_buf_init(r->rbuf, sizeof r->rbuf);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	raw *r = s->data;
	if (n > 0)
		mc_buf_append(&r->in, b->base, (size_t)n);
	else if (n < 0)
		uv_close((uv_handle_t *)&r->tcp, raw_on_close);
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
	uv_buf_t b = uv_buf_init(r->out.data, (unsigned)r->out.len);
	assert_int_equal(uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, raw_written), 0);
}

static void on_guard(uv_timer_t *t)
{
	*(int *)t->data = 1;
}

/* Runs the loop until *flag is set or 5 s passed; returns *flag. */
static int run_until(uv_loop_t *loop, const int *flag)
{
	int expired = 0;
	uv_timer_t guard;
	uv_timer_init(loop, &guard);
	guard.data = &expired;
	uv_timer_start(&guard, on_guard, 5000, 0);
	while (!*flag && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return *flag;
}

/* Connects and sends req in one write; reading collects the answer. */
static void raw_start(uv_loop_t *loop, uint16_t port, const char *req, raw *r)
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

/* Sends req on a new connection and collects the answer until the server closes. */
static void roundtrip(uv_loop_t *loop, uint16_t port, const char *req, raw *r)
{
	raw_start(loop, port, req, r);
	assert_true(run_until(loop, &r->closed));
}

static void raw_fini(raw *r)
{
	mc_buf_fini(&r->in);
	mc_buf_fini(&r->out);
}

/* The bytes answer() sends: X-Dyn, then the raw block, then the framing. */
static void expect(mc_buf *w, int status, const char *reason, int with_body, int send_body,
		   int keep)
{
	mc_buf_printf(w, "HTTP/1.1 %d %s\r\nX-Dyn: d\r\n%s", status, reason, RAW);
	if (with_body)
		mc_buf_append_str(w, "Content-Length: 5\r\n");
	mc_buf_printf(w, "Connection: %s\r\n\r\n%s", keep ? "keep-alive" : "close",
		      send_body ? "hello" : "");
}

static void test_raw_answers_on_the_wire(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	tctx c = {.loop = &loop};
	uv_timer_init(&loop, &c.later);
	c.later.data = &c;
	mc_http_server *srv = NULL;
	assert_int_equal(mc_http_server_new(&srv, &loop, "127.0.0.1:0", NULL, handler, &c), 0);
	uint16_t port = mc_http_server_port(srv);

	raw r;
	roundtrip(&loop, port,
		  "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
		  "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"
		  "GET /304 HTTP/1.1\r\nHost: x\r\n\r\n"
		  "GET /later HTTP/1.1\r\nHost: x\r\n\r\n"
		  "GET /204 HTTP/1.1\r\nHost: x\r\n\r\n"
		  "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		  "GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
		  &r);
	mc_buf want;
	mc_buf_init(&want);
	expect(&want, 200, "OK", 1, 1, 1);
	expect(&want, 200, "OK", 1, 0, 1); /* HEAD: the length, no body */
	expect(&want, 304, "Not Modified", 0, 0, 1);
	expect(&want, 200, "OK", 1, 1, 1); /* answered from a timer */
	expect(&want, 204, "No Content", 0, 0, 1);
	expect(&want, 200, "OK", 1, 1, 0);
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	assert_int_equal(c.calls, 6);
	mc_buf_fini(&want);
	raw_fini(&r);

	/* a status out of range becomes a 500 with no body, fields kept */
	roundtrip(&loop, port, "GET /bad-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		  &r);
	mc_buf_init(&want);
	mc_buf_printf(&want,
		      "HTTP/1.1 500 Internal Server Error\r\nX-Dyn: d\r\n%s"
		      "Content-Length: 0\r\nConnection: close\r\n\r\n",
		      RAW);
	assert_int_equal(r.in.len, want.len);
	assert_memory_equal(r.in.data, want.data, want.len);
	mc_buf_fini(&want);
	raw_fini(&r);

	mc_http_server_free(srv);
	uv_close((uv_handle_t *)&c.later, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* The connection is gone before the answer (the server was freed): MC_ECLOSED,
 * the exchange still freed. */
static void test_raw_answer_to_a_closed_client(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	tctx c = {.loop = &loop};
	uv_timer_init(&loop, &c.later);
	mc_http_server *srv = NULL;
	assert_int_equal(mc_http_server_new(&srv, &loop, "127.0.0.1:0", NULL, handler, &c), 0);
	raw r;
	raw_start(&loop, mc_http_server_port(srv), "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_true(run_until(&loop, &c.calls));
	assert_non_null(c.held);
	mc_http_server_free(srv);
	assert_true(run_until(&loop, &r.closed));
	assert_int_equal(mc_http_respond_raw(c.held, 200, NULL, 0, RAW, sizeof RAW - 1, "x", 1),
			 MC_ECLOSED);
	assert_int_equal(r.in.len, 0);
	raw_fini(&r);
	uv_close((uv_handle_t *)&c.later, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_raw_answers_on_the_wire),
	    cmocka_unit_test(test_raw_answer_to_a_closed_client),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
