/* Unit tests for src/http/h2.c through the server's TLS listener, with an
 * nghttp2 client in the same loop: a stream becomes an exchange with the same
 * fields an HTTP/1.1 request has (:authority as Host, cookie crumbs joined),
 * responses lose connection-specific headers, HEAD, an exchange answered after
 * its stream was reset or after the server was freed (MC_ECLOSED, no leak),
 * graceful drain (GOAWAY, the answer still arrives), and streaming responses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "common/common.h"
#include "http/http.h"
#include "http/http_int.h"
#include "net/tls.h"

static char g_dir[256], g_cert[300], g_key[300];

static int setup(void **state)
{
	(void)state;
	snprintf(g_dir, sizeof g_dir, "/tmp/mc-h2-test-XXXXXX");
	if (!mkdtemp(g_dir))
		return -1;
	snprintf(g_cert, sizeof g_cert, "%s/c.pem", g_dir);
	snprintf(g_key, sizeof g_key, "%s/k.pem", g_dir);
	char cmd[1000];
	snprintf(cmd, sizeof cmd,
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s "
		 "-out %s -subj /CN=h2.test -days 2 >/dev/null 2>&1",
		 g_key, g_cert);
	return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- server side -------------------------------------------------------------------- */

typedef struct tctx {
	int calls;
	mc_http_exchange *held;
	mc_http_exchange *streamed;
	int conns, h2conns;
} tctx;

static void handler(void *ctx, mc_http_exchange *ex)
{
	tctx *t = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	t->calls++;
	if (strcmp(r->path, "/hold") == 0) {
		t->held = ex;
		return;
	}
	if (strcmp(r->path, "/stream") == 0) {
		t->streamed = ex;
		mc_http_header h = {"Content-Type", 12, "text/plain", 10};
		assert_int_equal(mc_http_h2_start_response(ex, 200, &h, 1), 0);
		assert_int_equal(mc_http_h2_write_body(ex, "first;", 6), 0);
		return;
	}
	if (strcmp(r->path, "/trusted") == 0) {
		/* trusted fields are joined with the others and checked by HTTP/2 */
		mc_http_header own[] = {{"X-Own", 5, "yes", 3}, {"Connection", 10, "close", 5}};
		mc_http_header other = {"X-Other", 7, "v", 1};
		assert_int_equal(mc_http_respond_trusted(ex, 200, own, 2, &other, 1, NULL, 0, "t", 1), 0);
		return;
	}
	if (strcmp(r->path, "/strusted") == 0) {
		mc_http_header own = {"X-Own", 5, "yes", 3};
		assert_int_equal(mc_http_exchange_start_trusted(ex, 200, &own, 1, NULL, 0, 2), 0);
		assert_int_equal(mc_http_exchange_write_body(ex, "st", 2), 0);
		assert_int_equal(mc_http_exchange_end(ex, 0), 0);
		return;
	}
	size_t hl = 0, cl = 0;
	const char *host = mc_http_header_find(r->headers, r->nheaders, "host", &hl);
	const char *cookie = mc_http_header_find(r->headers, r->nheaders, "cookie", &cl);
	mc_http_header h[] = {
	    {"X-Method", 8, r->method, strlen(r->method)},
	    {"X-Target", 8, r->target, strlen(r->target)},
	    {"X-Path", 6, r->path, r->path_len},
	    {"X-Query", 7, r->query, strlen(r->query)},
	    {"X-Host", 6, host ? host : "-", host ? hl : 1},
	    {"X-Cookie", 8, cookie ? cookie : "-", cookie ? cl : 1},
	    {"Connection", 10, "keep-alive", 10}, /* dropped: HTTP/2 forbids it */
	    {"X-Mixed-Case", 12, "v", 1},
	    {"Content-Length", 14, "999", 3}, /* ours to set (the body's length) */
	};
	assert_int_equal(mc_http_respond(ex, 200, h, MC_ARRAY_LEN(h), r->body, r->body_len), 0);
}

static void on_conn(void *ctx, const mc_http_conn_info *ci)
{
	tctx *t = ctx;
	t->conns++;
	t->h2conns += ci->h2;
	assert_true(ci->tls);
	assert_false(ci->failed);
}

/* ---- client side (nghttp2 over mc_tls_stream) ---------------------------------------- */

#define NRESP 16

typedef struct resp {
	int status;
	char hdrs[2048]; /* "name: value\n" each */
	size_t hdrs_len;
	char body[4096];
	size_t body_len;
	int ended;    /* END_STREAM received */
	int closed;   /* stream closed */
	uint32_t rst; /* error code when closed by RST_STREAM */
} resp;

typedef struct client {
	uv_loop_t *loop;
	uv_tcp_t tcp;
	uv_connect_t creq;
	mc_tls_stream *tls;
	nghttp2_session *ng;
	int ready, eof, goaway;
	uv_write_t wreq;
	char slab[65536];
	resp r[NRESP];
} client;

static resp *resp_of(client *c, int32_t id)
{
	size_t i = (size_t)(id - 1) / 2;
	assert_true(i < NRESP);
	return &c->r[i];
}

static void client_flush(client *c)
{
	const uint8_t *data;
	ssize_t n;
	while ((n = nghttp2_session_mem_send(c->ng, &data)) > 0) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
		assert_int_equal(mc_tls_stream_write(c->tls, &c->wreq, &b, 1, NULL), 0);
	}
	assert_true(n >= 0);
}

static int cl_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
			size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	(void)ng;
	(void)flags;
	resp *r = resp_of(user, f->hd.stream_id);
	if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
		r->status = atoi((const char *)value);
		return 0;
	}
	int m = snprintf(r->hdrs + r->hdrs_len, sizeof r->hdrs - r->hdrs_len, "%.*s: %.*s\n",
			 (int)nlen, name, (int)vlen, value);
	r->hdrs_len += (size_t)m;
	return 0;
}

static int cl_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
		      size_t len, void *user)
{
	(void)ng;
	(void)flags;
	resp *r = resp_of(user, id);
	assert_true(r->body_len + len <= sizeof r->body);
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	return 0;
}

static int cl_on_frame(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
	(void)ng;
	client *c = user;
	if (f->hd.type == NGHTTP2_GOAWAY)
		c->goaway = 1;
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		resp_of(c, f->hd.stream_id)->ended = 1;
	return 0;
}

static int cl_on_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user)
{
	(void)ng;
	resp *r = resp_of(user, id);
	r->closed = 1;
	r->rst = code;
	return 0;
}

static void cl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	client *c = h->data;
	(void)sz;
	*b = uv_buf_init(c->slab, sizeof c->slab);
}

static void cl_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	client *c = st->data;
	if (n < 0) {
		c->eof = 1;
		return;
	}
	if (n == 0)
		return;
	assert_true(nghttp2_session_mem_recv(c->ng, (const uint8_t *)b->base, (size_t)n) >= 0);
	client_flush(c);
}

static void cl_handshake(void *arg, int status)
{
	client *c = arg;
	assert_int_equal(status, 0);
	size_t alen;
	const char *a = mc_tls_conn_alpn(mc_tls_stream_conn(c->tls), &alen);
	assert_int_equal(alen, 2);
	assert_memory_equal(a, "h2", 2);
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, cl_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cl_on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cl_on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, cl_on_close);
	assert_int_equal(nghttp2_session_client_new(&c->ng, cb, c), 0);
	nghttp2_session_callbacks_del(cb);
	assert_int_equal(nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	client_flush(c);
	c->ready = 1;
}

static mc_tls_ctx *g_cctx;

static void cl_connected(uv_connect_t *req, int status)
{
	client *c = req->data;
	assert_int_equal(status, 0);
	assert_int_equal(mc_tls_stream_new(&c->tls, g_cctx, &c->tcp, cl_handshake, NULL, 0), 0);
	assert_int_equal(mc_tls_stream_read_start(c->tls, cl_alloc, cl_read), 0);
}

typedef struct body_src {
	const char *p;
	size_t len, off;
} body_src;

static ssize_t cl_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
		       nghttp2_data_source *src, void *user)
{
	(void)ng;
	(void)id;
	(void)user;
	body_src *b = src->ptr;
	size_t n = MC_MIN(len, b->len - b->off);
	memcpy(buf, b->p + b->off, n);
	b->off += n;
	if (b->off == b->len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

/* Submits a request; returns its stream id. */
static int32_t client_request(client *c, const char *method, const char *path, body_src *body)
{
	nghttp2_nv nv[] = {NV(":method", method), NV(":scheme", "https"),
			   NV(":path", path),	  NV(":authority", "example.test:8443"),
			   NV("cookie", "a=1"),	  NV("cookie", "b=2"),
			   NV("x-any", "y")};
	nghttp2_data_provider prd = {.source.ptr = body, .read_callback = cl_body};
	int32_t id =
	    nghttp2_submit_request(c->ng, NULL, nv, MC_ARRAY_LEN(nv), body ? &prd : NULL, NULL);
	assert_true(id > 0);
	client_flush(c);
	return id;
}

/* ---- harness ------------------------------------------------------------------------ */

typedef struct env {
	uv_loop_t loop;
	mc_http_server *srv;
	tctx t;
	client c;
} env;

static void run_until(env *e, int *flag, unsigned ms)
{
	uint64_t end = mc_now_ns() + (uint64_t)ms * 1000000u;
	while (!*flag && mc_now_ns() < end) {
		uv_run(&e->loop, UV_RUN_NOWAIT);
		usleep(500);
	}
}

static env *env_start(void)
{
	env *e = mc_calloc(1, sizeof *e);
	uv_loop_init(&e->loop);
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.on_conn = on_conn;
	assert_int_equal(mc_http_server_new(&e->srv, &e->loop, "127.0.0.1:0", &o, handler, &e->t),
			 0);
	static const char *const alpn[] = {"h2", "http/1.1"};
	mc_tls_server_opts so = {.cert_file = g_cert, .key_file = g_key, .alpn = alpn, .nalpn = 2};
	char err[256];
	mc_tls_ctx *sctx;
	assert_int_equal(mc_tls_ctx_server_new(&sctx, &so, err, sizeof err), 0);
	mc_http_tls_opts to = {.h2 = {.max_concurrent_streams = 8}};
	assert_int_equal(mc_http_server_listen_tls(e->srv, "127.0.0.1:0", sctx, &to), 0);
	mc_tls_ctx_unref(sctx); /* the server holds its own reference */
	static const char *const offer[] = {"h2"};
	mc_tls_client_opts co = {.alpn = offer, .nalpn = 1};
	assert_int_equal(mc_tls_ctx_client_new(&g_cctx, &co, err, sizeof err), 0);
	client *c = &e->c;
	c->loop = &e->loop;
	uv_tcp_init(&e->loop, &c->tcp);
	c->tcp.data = c;
	c->creq.data = c;
	struct sockaddr_storage ss;
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%u", mc_http_server_tls_port(e->srv));
	mc_net_addr_parse(addr, &ss);
	assert_int_equal(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&ss, cl_connected),
			 0);
	run_until(e, &c->ready, 10000);
	assert_true(c->ready);
	return e;
}

static void env_finish(env *e)
{
	client *c = &e->c;
	mc_tls_stream_free(c->tls);
	uv_close((uv_handle_t *)&c->tcp, NULL);
	mc_http_server_free(e->srv);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&e->loop), 0);
	nghttp2_session_del(c->ng);
	mc_tls_ctx_unref(g_cctx);
	g_cctx = NULL;
	free(e);
}

static int has_header(const resp *r, const char *line)
{
	return strstr(r->hdrs, line) != NULL;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_request_maps_to_exchange(void **state)
{
	(void)state;
	env *e = env_start();
	body_src b = {"hello", 5, 0};
	int32_t id = client_request(&e->c, "POST", "/echo?x=1&y=2", &b);
	resp *r = resp_of(&e->c, id);
	run_until(e, &r->closed, 10000);
	assert_int_equal(r->status, 200);
	assert_true(r->ended);
	assert_int_equal(r->body_len, 5);
	assert_memory_equal(r->body, "hello", 5);
	assert_true(has_header(r, "x-method: POST\n"));
	assert_true(has_header(r, "x-target: /echo?x=1&y=2\n"));
	assert_true(has_header(r, "x-path: /echo\n"));
	assert_true(has_header(r, "x-query: x=1&y=2\n"));
	assert_true(has_header(r, "x-host: example.test:8443\n")); /* from :authority */
	assert_true(has_header(r, "x-cookie: a=1; b=2\n"));	   /* crumbs joined */
	assert_true(has_header(r, "x-mixed-case: v\n"));	   /* lower-cased */
	assert_true(has_header(r, "content-length: 5\n"));
	assert_false(has_header(r, "connection"));
	assert_false(has_header(r, "999"));
	/* HEAD: the length a GET would have, no DATA */
	id = client_request(&e->c, "HEAD", "/echo", NULL);
	r = resp_of(&e->c, id);
	run_until(e, &r->closed, 10000);
	assert_int_equal(r->status, 200);
	assert_int_equal(r->body_len, 0);
	assert_int_equal(e->t.calls, 2);
	assert_int_equal(e->t.h2conns, 1);
	env_finish(e);
}

/* mc_http_respond_trusted / mc_http_exchange_start_trusted over HTTP/2: the
 * trusted fields come first, and HTTP/2's own rules still apply to them. */
static void test_trusted_headers(void **state)
{
	(void)state;
	env *e = env_start();
	int32_t id = client_request(&e->c, "GET", "/trusted", NULL);
	resp *r = resp_of(&e->c, id);
	run_until(e, &r->closed, 10000);
	assert_int_equal(r->status, 200);
	assert_int_equal(r->body_len, 1);
	const char *own = strstr(r->hdrs, "x-own: yes\n"), *other = strstr(r->hdrs, "x-other: v\n");
	assert_true(own && other && own < other);
	assert_false(has_header(r, "connection"));
	id = client_request(&e->c, "GET", "/strusted", NULL);
	r = resp_of(&e->c, id);
	run_until(e, &r->closed, 10000);
	assert_int_equal(r->status, 200);
	assert_true(has_header(r, "x-own: yes\n"));
	assert_true(has_header(r, "content-length: 2\n"));
	assert_int_equal(r->body_len, 2);
	assert_memory_equal(r->body, "st", 2);
	env_finish(e);
}

static void test_answer_after_reset(void **state)
{
	(void)state;
	env *e = env_start();
	int32_t id = client_request(&e->c, "GET", "/hold", NULL);
	run_until(e, (int *)&e->t.held, 10000);
	assert_non_null(e->t.held);
	assert_int_equal(nghttp2_submit_rst_stream(e->c.ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL),
			 0);
	client_flush(&e->c);
	/* the connection goes on; the reset request still holds its exchange */
	int32_t id2 = client_request(&e->c, "GET", "/echo", NULL);
	resp *r2 = resp_of(&e->c, id2);
	run_until(e, &r2->closed, 10000);
	assert_int_equal(r2->status, 200);
	assert_int_equal(mc_http_respond(e->t.held, 200, NULL, 0, "late", 4), MC_ECLOSED);
	e->t.held = NULL;
	env_finish(e);
}

static void test_answer_after_server_free(void **state)
{
	(void)state;
	env *e = env_start();
	client_request(&e->c, "GET", "/hold", NULL);
	run_until(e, (int *)&e->t.held, 10000);
	assert_non_null(e->t.held);
	mc_http_server_free(e->srv);
	e->srv = NULL;
	run_until(e, &e->c.eof, 10000);
	assert_true(e->c.eof);
	/* the exchange outlived its connection and session */
	assert_int_equal(mc_http_respond(e->t.held, 200, NULL, 0, "late", 4), MC_ECLOSED);
	env_finish(e);
}

static void test_drain_sends_goaway_and_finishes(void **state)
{
	(void)state;
	env *e = env_start();
	int32_t id = client_request(&e->c, "GET", "/hold", NULL);
	run_until(e, (int *)&e->t.held, 10000);
	mc_http_server_drain(e->srv);
	run_until(e, &e->c.goaway, 10000);
	assert_true(e->c.goaway);
	assert_int_equal(mc_http_server_connections(e->srv), 1); /* the stream is in flight */
	assert_int_equal(mc_http_respond(e->t.held, 200, NULL, 0, "done", 4), 0);
	resp *r = resp_of(&e->c, id);
	run_until(e, &r->closed, 10000);
	assert_int_equal(r->status, 200);
	assert_memory_equal(r->body, "done", 4);
	/* the client answers close_notify with its own close */
	uv_shutdown_t sreq;
	assert_int_equal(mc_tls_stream_shutdown(e->c.tls, &sreq, NULL), 0);
	for (int i = 0; i < 2000 && mc_http_server_connections(e->srv) > 0; i++)
		uv_run(&e->loop, UV_RUN_NOWAIT), usleep(1000);
	assert_int_equal(mc_http_server_connections(e->srv), 0);
	env_finish(e);
}

static void test_streaming_response(void **state)
{
	(void)state;
	env *e = env_start();
	int32_t id = client_request(&e->c, "GET", "/stream", NULL);
	resp *r = resp_of(&e->c, id);
	for (int i = 0; i < 10000 && r->body_len < 6; i++)
		uv_run(&e->loop, UV_RUN_NOWAIT), usleep(500);
	/* the first piece arrived before the response ended */
	assert_int_equal(r->status, 200);
	assert_int_equal(r->body_len, 6);
	assert_false(r->ended);
	assert_true(has_header(r, "content-type: text/plain\n"));
	assert_int_equal(mc_http_h2_pending(e->t.streamed), 0);
	assert_int_equal(mc_http_h2_write_body(e->t.streamed, "second", 6), 0);
	assert_int_equal(mc_http_h2_end_response(e->t.streamed, 1), 0);
	run_until(e, &r->closed, 10000);
	assert_true(r->ended);
	assert_int_equal(r->rst, 0);
	assert_int_equal(r->body_len, 12);
	assert_memory_equal(r->body, "first;second", 12);
	/* a truncated body resets the stream */
	e->t.streamed = NULL;
	id = client_request(&e->c, "GET", "/stream", NULL);
	r = resp_of(&e->c, id);
	run_until(e, (int *)&e->t.streamed, 10000);
	assert_int_equal(mc_http_h2_end_response(e->t.streamed, 0), 0);
	run_until(e, &r->closed, 10000);
	assert_false(r->ended);
	assert_int_equal(r->rst, NGHTTP2_INTERNAL_ERROR);
	env_finish(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_maps_to_exchange),
	    cmocka_unit_test(test_trusted_headers),
	    cmocka_unit_test(test_answer_after_reset),
	    cmocka_unit_test(test_answer_after_server_free),
	    cmocka_unit_test(test_drain_sends_goaway_and_finishes),
	    cmocka_unit_test(test_streaming_response),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
