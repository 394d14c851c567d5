/* Unit tests for how src/http writes: responses go out with uv_try_write first
 * and only the rest is queued, so these check the cases around that: a
 * response larger than the socket takes at once (the remainder is copied and
 * queued in order, also with pipelined requests behind it), plain and streamed;
 * the handler's body buffer freed right after mc_http_respond(); clients that
 * close while their answer was written at once or half-written; and a client
 * request larger than the socket takes. ASan checks the buffer ownership. The
 * connection timers, moved lazily, are checked never to fire early. */
#include <setjmp.h>
#include <signal.h>
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

static void loop_finish(uv_loop_t *loop)
{
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

/* Byte i of every test body: no short period, so a misplaced or repeated piece
 * of a partly written body shows. */
static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 131u) ^ (i >> 9) ^ (i >> 17));
}

static char *pattern_new(size_t n)
{
	char *b = mc_alloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		b[i] = (char)pattern(i);
	return b;
}

/* ---- the server ---------------------------------------------------------------------
 * /big?n=N   N pattern bytes with mc_http_respond from a buffer freed right after
 * /small     "ok"
 * /sbig?n=N  N pattern bytes streamed (Content-Length N) in 64 KiB writes, ended at once
 * /slate     streamed "abc", then "def" and the end from a timer (a later loop turn)
 * /sum       the request body's length and byte sum */

typedef struct wsrv {
	uv_loop_t *loop;
	mc_http_server *srv;
	int calls;
	uv_timer_t late;
	mc_http_exchange *late_ex[64]; /* /slate answers waiting for their end */
	size_t nlate;
} wsrv;

static size_t query_n(const mc_http_request *r)
{
	const char *q = strstr(r->query, "n=");
	return q ? (size_t)strtoull(q + 2, NULL, 10) : 0;
}

static void on_late(uv_timer_t *t)
{
	wsrv *w = t->data;
	for (size_t i = 0; i < w->nlate; i++) {
		mc_http_exchange *ex = w->late_ex[i];
		mc_http_exchange_write_body(ex, "def", 3);
		mc_http_exchange_end(ex, 0);
	}
	w->nlate = 0;
}

static void write_handler(void *ctx, mc_http_exchange *ex)
{
	wsrv *w = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	w->calls++;
	if (strcmp(r->path, "/big") == 0) {
		size_t n = query_n(r);
		char *body = pattern_new(n);
		mc_http_respond(ex, 200, NULL, 0, body, n);
		memset(body, 'X', n); /* the server must not read it after the call */
		free(body);
	} else if (strcmp(r->path, "/sbig") == 0) {
		size_t n = query_n(r);
		char *body = pattern_new(n);
		if (mc_http_exchange_start_response(ex, 200, NULL, 0, (int64_t)n) == 0)
			for (size_t off = 0; off < n; off += 65536)
				if (mc_http_exchange_write_body(ex, body + off,
								MC_MIN((size_t)65536, n - off)) < 0)
					break;
		mc_http_exchange_end(ex, 0);
		memset(body, 'X', n);
		free(body);
	} else if (strcmp(r->path, "/slate") == 0) {
		mc_http_exchange_start_response(ex, 200, NULL, 0, 6);
		mc_http_exchange_write_body(ex, "abc", 3);
		assert_true(w->nlate < MC_ARRAY_LEN(w->late_ex));
		w->late_ex[w->nlate++] = ex;
		if (!uv_is_active((uv_handle_t *)&w->late))
			uv_timer_start(&w->late, on_late, 20, 0);
	} else if (strcmp(r->path, "/trusted") == 0) {
		/* the trusted list goes first and as it is; the other list is checked */
		mc_http_header own[] = {{"X-Own", 5, "a b", 3}, {"Server-Timing", 13, "edge;dur=1.5", 12}};
		mc_http_header other[] = {
		    {"X-Ok", 4, "1", 1},
		    {"X-Bad", 5, "a\r\nInjected: 1", 16},
		    {"Bad\nName", 8, "x", 1},
		    {"X:Colon", 7, "x", 1},
		    {"", 0, "x", 1},
		    {"content-LENGTH", 14, "99", 2},
		    {"Connection", 10, "close", 5},
		    {"Keep-Alive", 10, "x", 1},
		    {"Transfer-Encoding", 17, "chunked", 7},
		    {"X-Long-Name-Of-Many-Bytes", 25, "a value longer than sixteen bytes", 33},
		    {"X-Long-Nul-Inside-Of-Words", 26, "0123456789ab\0def", 17},
		    {"X-Empty", 7, NULL, 0},
		};
		mc_http_respond_trusted(ex, 201, own, 2, other, MC_ARRAY_LEN(other), NULL, 0, "body", 4);
	} else if (strcmp(r->path, "/sum") == 0) {
		unsigned long long sum = 0;
		for (size_t i = 0; i < r->body_len; i++)
			sum += (unsigned char)r->body[i];
		char out[64];
		int m = snprintf(out, sizeof out, "%zu %llu", r->body_len, sum);
		mc_http_respond(ex, 200, NULL, 0, out, (size_t)m);
	} else {
		mc_http_respond(ex, 200, NULL, 0, "ok", 2);
	}
}

static void wsrv_start(wsrv *w, uv_loop_t *loop)
{
	memset(w, 0, sizeof *w);
	w->loop = loop;
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.max_body_bytes = 32u << 20;
	assert_int_equal(mc_http_server_new(&w->srv, loop, "127.0.0.1:0", &o, write_handler, w),
			 0);
	uv_timer_init(loop, &w->late);
	w->late.data = w;
}

static void wsrv_stop(wsrv *w)
{
	mc_http_server_free(w->srv);
	uv_close((uv_handle_t *)&w->late, NULL);
}

/* ---- a raw client: sends bytes, reads (maybe after a delay), maybe cuts ------------- */

typedef struct rawc {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t cr;
	uv_write_t wr;
	mc_buf out, in;
	unsigned read_delay_ms; /* start reading this long after connecting */
	size_t reset_at;        /* reset the connection once this many bytes came (0: never) */
	int abandon;            /* close right after the request is written, reading nothing */
	int open;               /* handles not closed yet */
	int *done;              /* incremented once both handles closed */
	int eof;
	char rbuf[65536];
} rawc;

static void rawc_closed(uv_handle_t *h)
{
	rawc *c = h->data;
	if (--c->open == 0)
		(*c->done)++;
}

static void rawc_close(rawc *c, int reset)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	if (!reset || uv_tcp_close_reset(&c->tcp, rawc_closed) < 0)
		uv_close((uv_handle_t *)&c->tcp, rawc_closed);
	uv_close((uv_handle_t *)&c->timer, rawc_closed);
}

static void rawc_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	rawc *c = h->data;
	(void)sz;
	*b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void rawc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	rawc *c = s->data;
	if (n < 0) {
		c->eof = 1;
		rawc_close(c, 0);
		return;
	}
	mc_buf_append(&c->in, b->base, (size_t)n);
	if (c->reset_at && c->in.len >= c->reset_at)
		rawc_close(c, 1);
}

static void rawc_start_reading(uv_timer_t *t)
{
	rawc *c = t->data;
	uv_read_start((uv_stream_t *)&c->tcp, rawc_alloc, rawc_read);
}

static void rawc_written(uv_write_t *w, int status)
{
	rawc *c = w->data;
	(void)status;
	if (c->abandon)
		rawc_close(c, 0);
}

static void rawc_connected(uv_connect_t *cr, int status)
{
	rawc *c = cr->data;
	assert_int_equal(status, 0);
	uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	c->wr.data = c;
	assert_int_equal(uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, rawc_written), 0);
	if (c->abandon)
		return;
	uv_timer_start(&c->timer, rawc_start_reading, c->read_delay_ms, 0);
}

static void rawc_start(rawc *c, uv_loop_t *loop, uint16_t port, const char *req, int *done)
{
	memset(c, 0, sizeof *c);
	mc_buf_init(&c->in);
	mc_buf_init(&c->out);
	mc_buf_append_str(&c->out, req);
	c->done = done;
	c->open = 2;
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", port, &sa);
	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c->timer.data = c->cr.data = c;
	assert_int_equal(uv_tcp_connect(&c->cr, &c->tcp, (struct sockaddr *)&sa, rawc_connected),
			 0);
}

static void rawc_fini(rawc *c)
{
	mc_buf_fini(&c->in);
	mc_buf_fini(&c->out);
}

/* Checks one response at *off of in: status 200, Content-Length n, keep-alive or
 * close, and a body of n pattern bytes (or exactly "ok" / want when given). */
static void expect_response(const mc_buf *in, size_t *off, size_t n, const char *want, int keep)
{
	const char *head = in->data + *off;
	const char *end = strstr(head, "\r\n\r\n");
	assert_non_null(end);
	char line[128];
	snprintf(line, sizeof line, "Content-Length: %zu\r\n", n);
	assert_int_equal(strncmp(head, "HTTP/1.1 200 OK\r\n", 17), 0);
	const char *cl = strstr(head, line);
	assert_true(cl && cl < end);
	const char *conn = strstr(head, keep ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
	assert_true(conn && conn < end);
	size_t body = (size_t)(end + 4 - in->data);
	assert_true(body + n <= in->len);
	if (want) {
		assert_memory_equal(in->data + body, want, n);
	} else {
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)in->data[body + i] != pattern(i))
				fail_msg("body byte %zu is %u, expected %u", i,
					 (unsigned char)in->data[body + i], pattern(i));
	}
	*off = body + n;
}

/* ---- tests ----------------------------------------------------------------------------- */

/* 8 MB is more than a loopback socket takes at once: the response is written in
 * part, the rest copied and queued; pipelined requests behind it wait for it
 * and are answered in order. The client starts reading late so the first
 * write cannot complete. */
static void test_partial_write_in_order(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	wsrv w;
	wsrv_start(&w, &loop);
	int done = 0;
	rawc c;
	rawc_start(&c, &loop, mc_http_server_port(w.srv),
		   "GET /big?n=8388608 HTTP/1.1\r\nHost: x\r\n\r\n"
		   "GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
		   "GET /sbig?n=5000000 HTTP/1.1\r\nHost: x\r\n\r\n"
		   "GET /slate HTTP/1.1\r\nHost: x\r\n\r\n"
		   "GET /big?n=3000001 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		   &done);
	c.read_delay_ms = 150;
	assert_true(run_until_n(&loop, &done, 1, 20000));
	assert_int_equal(w.calls, 5);
	size_t off = 0;
	expect_response(&c.in, &off, 8388608, NULL, 1);
	expect_response(&c.in, &off, 2, "ok", 1);
	expect_response(&c.in, &off, 5000000, NULL, 1);
	expect_response(&c.in, &off, 6, "abcdef", 1);
	expect_response(&c.in, &off, 3000001, NULL, 0);
	assert_int_equal(off, c.in.len);
	rawc_fini(&c);

	/* one at a time on fresh connections: the same, without pipelining */
	const char *reqs[] = {"GET /big?n=6000000 HTTP/1.1\r\nConnection: close\r\n\r\n",
			      "GET /sbig?n=6000000 HTTP/1.1\r\nConnection: close\r\n\r\n"};
	for (size_t i = 0; i < 2; i++) {
		done = 0;
		rawc_start(&c, &loop, mc_http_server_port(w.srv), reqs[i], &done);
		c.read_delay_ms = 100;
		assert_true(run_until_n(&loop, &done, 1, 20000));
		off = 0;
		expect_response(&c.in, &off, 6000000, NULL, 0);
		assert_int_equal(off, c.in.len);
		rawc_fini(&c);
	}
	assert_int_equal(mc_http_server_connections(w.srv), 0);
	wsrv_stop(&w);
	loop_finish(&loop);
}

/* Clients that go away: right after sending (their answer is usually written at
 * once, into the socket buffer, before the server sees the close), in the
 * middle of a half-written big answer (reset), and while a streamed answer waits
 * for its end. The server keeps serving, and closes everything cleanly. */
static void test_clients_leaving(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	wsrv w;
	wsrv_start(&w, &loop);
	uint16_t port = mc_http_server_port(w.srv);
	enum { N = 150 };
	rawc *cs = mc_calloc(N, sizeof *cs);
	int done = 0;
	for (int i = 0; i < N; i++) {
		const char *req = i % 3 == 0   ? "GET /small HTTP/1.1\r\n\r\nGET /small HTTP/1.1\r\n\r\n"
				  : i % 3 == 1 ? "GET /big?n=4000000 HTTP/1.1\r\n\r\n"
					       : "GET /sbig?n=4000000 HTTP/1.1\r\n\r\n";
		if (i % 10 == 9)
			req = "GET /slate HTTP/1.1\r\n\r\n";
		rawc_start(&cs[i], &loop, port, req, &done);
		if (i % 3 == 0 || i % 10 == 9)
			cs[i].abandon = 1;
		else
			cs[i].reset_at = 1000 + (size_t)i * 997;
	}
	assert_true(run_until_n(&loop, &done, N, 30000));
	for (int i = 0; i < N; i++)
		rawc_fini(&cs[i]);
	free(cs);

	/* still serving */
	done = 0;
	rawc c;
	rawc_start(&c, &loop, port, "GET /small HTTP/1.1\r\nConnection: close\r\n\r\n", &done);
	assert_true(run_until_n(&loop, &done, 1, 10000));
	size_t off = 0;
	expect_response(&c.in, &off, 2, "ok", 0);
	rawc_fini(&c);
	wsrv_stop(&w);
	loop_finish(&loop);
}

/* A keep-alive connection whose answers are all written at once: many requests
 * one after the other, each answered before the next is sent. */
static void on_chain_response(void *arg, int err, const mc_http_response *res);

typedef struct chain {
	mc_http_pool *pool;
	int left, done, bad;
	size_t big;
	char *body;
} chain;

static void chain_next(chain *ch)
{
	if (ch->left-- <= 0) {
		ch->done = 1;
		return;
	}
	assert_int_equal(mc_http_pool_request(ch->pool, "GET", "/small", NULL, 0, NULL, 0,
					      on_chain_response, ch),
			 0);
}

static void on_chain_response(void *arg, int err, const mc_http_response *res)
{
	chain *ch = arg;
	if (err || res->status != 200 || res->body_len != 2 || memcmp(res->body, "ok", 2) != 0)
		ch->bad++;
	chain_next(ch);
}

static void on_sum(void *arg, int err, const mc_http_response *res)
{
	chain *ch = arg;
	unsigned long long sum = 0;
	for (size_t i = 0; i < ch->big; i++)
		sum += (unsigned char)ch->body[i];
	char want[64];
	int m = snprintf(want, sizeof want, "%zu %llu", ch->big, sum);
	if (err || res->status != 200 || res->body_len != (size_t)m ||
	    memcmp(res->body, want, (size_t)m) != 0)
		ch->bad++;
	ch->done = 1;
}

/* The client's side: a request larger than the socket takes at once (written in
 * part, the rest queued; the request buffer stays with the call), then a chain
 * of small requests on the kept-alive connection, each written at once. */
static void test_client_writes(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	wsrv w;
	wsrv_start(&w, &loop);
	char hp[64];
	snprintf(hp, sizeof hp, "127.0.0.1:%u", mc_http_server_port(w.srv));
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_conns = 1;
	chain ch = {0};
	assert_int_equal(mc_http_pool_new(&ch.pool, &loop, hp, &po), 0);
	ch.big = 9000000;
	ch.body = pattern_new(ch.big);
	assert_int_equal(mc_http_pool_request(ch.pool, "PUT", "/sum", NULL, 0, ch.body, ch.big,
					      on_sum, &ch),
			 0);
	memset(ch.body, 0, ch.big); /* the request was copied */
	for (size_t i = 0; i < ch.big; i++)
		ch.body[i] = (char)pattern(i);
	assert_true(run_until_n(&loop, &ch.done, 1, 20000));
	assert_int_equal(ch.bad, 0);
	free(ch.body);

	ch.done = 0;
	ch.left = 300;
	chain_next(&ch);
	assert_true(run_until_n(&loop, &ch.done, 1, 20000));
	assert_int_equal(ch.bad, 0);
	assert_int_equal(w.calls, 301);
	mc_http_pool_free(ch.pool);
	wsrv_stop(&w);
	loop_finish(&loop);
}

/* The head built in one pass: trusted fields first as they are, the others
 * filtered (unsafe bytes, reserved names), Content-Length and Connection last. */
static void test_head_and_trusted_headers(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	wsrv w;
	wsrv_start(&w, &loop);
	int done = 0;
	rawc c;
	rawc_start(&c, &loop, mc_http_server_port(w.srv),
		   "GET /trusted HTTP/1.1\r\n\r\nHEAD /trusted HTTP/1.1\r\nConnection: close\r\n\r\n",
		   &done);
	assert_true(run_until_n(&loop, &done, 1, 10000));
	const char *head = "HTTP/1.1 201 Created\r\nX-Own: a b\r\nServer-Timing: edge;dur=1.5\r\n"
			   "X-Ok: 1\r\nX-Long-Name-Of-Many-Bytes: a value longer than sixteen bytes\r\n"
			   "X-Empty: \r\n";
	mc_buf want;
	mc_buf_init(&want);
	mc_buf_printf(&want, "%sContent-Length: 4\r\nConnection: keep-alive\r\n\r\nbody", head);
	/* a HEAD answer announces the handler's Content-Length (the dropped field) */
	mc_buf_printf(&want, "%sContent-Length: 99\r\nConnection: close\r\n\r\n", head);
	mc_buf_append(&c.in, "", 1);
	if (c.in.len != want.len + 1 || memcmp(c.in.data, want.data, want.len) != 0)
		fail_msg("got:\n%s\nwant:\n%s", c.in.data, want.data);
	mc_buf_fini(&want);
	rawc_fini(&c);
	wsrv_stop(&w);
	loop_finish(&loop);
}

/* ---- timers: moved lazily, never early ---------------------------------------------
 * The connection timer is armed at most min(header, request timeout) ahead and
 * re-armed when it fires before the phase's due time: an idle keep-alive
 * connection must still get its whole idle timeout, and a head that starts late
 * its whole header timeout. */

typedef struct tclient {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t cr;
	uv_write_t wr;
	mc_buf in;
	int second;          /* send a partial second head after the first answer */
	int answered, eof, open, *done;
	uint64_t t_answer;   /* when the first answer was complete */
	uint64_t t_partial;  /* when the partial head was sent */
	uint64_t t_eof;
	char rbuf[4096];
} tclient;

static void tclient_closed(uv_handle_t *h)
{
	tclient *c = h->data;
	if (--c->open == 0)
		(*c->done)++;
}

static void tclient_send_partial(uv_timer_t *t)
{
	tclient *c = t->data;
	static char partial[] = "GET /x HTTP/1.1\r\nHo";
	uv_buf_t b = uv_buf_init(partial, sizeof partial - 1);
	c->t_partial = uv_hrtime();
	assert_int_equal(uv_try_write((uv_stream_t *)&c->tcp, &b, 1), (int)b.len);
}

static void tclient_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	tclient *c = s->data;
	if (n < 0) {
		c->eof = 1;
		c->t_eof = uv_hrtime();
		uv_close((uv_handle_t *)&c->tcp, tclient_closed);
		uv_close((uv_handle_t *)&c->timer, tclient_closed);
		return;
	}
	mc_buf_append(&c->in, b->base, (size_t)n);
	if (!c->answered && c->in.len >= 4 && memcmp(c->in.data + c->in.len - 4, "\r\nok", 4) == 0) {
		c->answered = 1;
		c->t_answer = uv_hrtime();
		if (c->second)
			uv_timer_start(&c->timer, tclient_send_partial, 200, 0);
	}
}

static void tclient_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	tclient *c = h->data;
	(void)sz;
	*b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void tclient_connected(uv_connect_t *cr, int status)
{
	tclient *c = cr->data;
	assert_int_equal(status, 0);
	static char req[] = "GET /small HTTP/1.1\r\n\r\n";
	uv_buf_t b = uv_buf_init(req, sizeof req - 1);
	assert_int_equal(uv_try_write((uv_stream_t *)&c->tcp, &b, 1), (int)b.len);
	uv_read_start((uv_stream_t *)&c->tcp, tclient_alloc, tclient_read);
}

static void tclient_start(tclient *c, uv_loop_t *loop, uint16_t port, int second, int *done)
{
	memset(c, 0, sizeof *c);
	mc_buf_init(&c->in);
	c->second = second;
	c->done = done;
	c->open = 2;
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", port, &sa);
	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c->timer.data = c->cr.data = c;
	assert_int_equal(
	    uv_tcp_connect(&c->cr, &c->tcp, (struct sockaddr *)&sa, tclient_connected), 0);
}

static void test_timeouts_never_early(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.header_timeout_ms = 300;
	o.request_timeout_ms = 5000;
	o.idle_timeout_ms = 700;
	wsrv w;
	memset(&w, 0, sizeof w);
	assert_int_equal(mc_http_server_new(&w.srv, &loop, "127.0.0.1:0", &o, write_handler, &w),
			 0);
	uv_timer_init(&loop, &w.late);
	int done = 0;
	tclient idle, late;
	tclient_start(&idle, &loop, mc_http_server_port(w.srv), 0, &done);
	tclient_start(&late, &loop, mc_http_server_port(w.srv), 1, &done);
	assert_true(run_until_n(&loop, &done, 2, 10000));

	/* idle after an answer: closed after the idle timeout, not at the timer's
	 * earlier wake-up (the header timeout) */
	assert_true(idle.answered && idle.eof);
	uint64_t idle_ms = (idle.t_eof - idle.t_answer) / 1000000u;
	if (idle_ms < 680)
		fail_msg("idle connection closed after %llu ms (idle timeout 700)",
			 (unsigned long long)idle_ms);
	/* a head begun 200 ms into the idle time gets all its 300 ms: 408 */
	assert_true(late.answered && late.eof && late.t_partial);
	uint64_t head_ms = (late.t_eof - late.t_partial) / 1000000u;
	if (head_ms < 280)
		fail_msg("partial head refused after %llu ms (header timeout 300)",
			 (unsigned long long)head_ms);
	mc_buf_append(&late.in, "", 1);
	assert_non_null(strstr(late.in.data, "HTTP/1.1 408 "));
	mc_buf_fini(&idle.in);
	mc_buf_fini(&late.in);
	wsrv_stop(&w);
	loop_finish(&loop);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* as every metrocell command does: writes to gone clients */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_partial_write_in_order),
	    cmocka_unit_test(test_clients_leaving),
	    cmocka_unit_test(test_client_writes),
	    cmocka_unit_test(test_head_and_trusted_headers),
	    cmocka_unit_test(test_timeouts_never_early),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
