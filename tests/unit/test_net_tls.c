/* Unit tests for src/net/tls.c and tls_stream.c: handshakes between a client
 * and a server engine through memory buffers in this process (ALPN, data both
 * ways, close_notify, garbage input), resumption across two server contexts that
 * share ticket keys (TLS 1.2 and 1.3) and not across different keys, context
 * errors, and the libuv stream over a loopback socket (echo, read stop/start,
 * write callbacks). Certificates come from the openssl command line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "common/common.h"
#include "net/net.h"
#include "net/tls.h"

static char g_dir[256];
static char g_cert[300], g_key[300], g_cert2[300], g_key2[300], g_bad[300];

static int make_cert(const char *cert, const char *key, const char *cn)
{
	char cmd[1200];
	snprintf(cmd, sizeof cmd,
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-keyout %s -out %s -subj /CN=%s -days 2 >/dev/null 2>&1",
		 key, cert, cn);
	return system(cmd);
}

static int setup_certs(void **state)
{
	(void)state;
	snprintf(g_dir, sizeof g_dir, "/tmp/mc-tls-test-XXXXXX");
	if (!mkdtemp(g_dir))
		return -1;
	snprintf(g_cert, sizeof g_cert, "%s/a.crt", g_dir);
	snprintf(g_key, sizeof g_key, "%s/a.key", g_dir);
	snprintf(g_cert2, sizeof g_cert2, "%s/b.crt", g_dir);
	snprintf(g_key2, sizeof g_key2, "%s/b.key", g_dir);
	snprintf(g_bad, sizeof g_bad, "%s/bad.pem", g_dir);
	if (make_cert(g_cert, g_key, "a.test") != 0 || make_cert(g_cert2, g_key2, "b.test") != 0)
		return -1;
	FILE *f = fopen(g_bad, "w");
	if (!f)
		return -1;
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	return 0;
}

static int teardown_certs(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void key_fill(mc_tls_ticket_key *k, uint8_t seed)
{
	for (size_t i = 0; i < sizeof *k; i++)
		((uint8_t *)k)[i] = (uint8_t)(seed + i * 7);
}

static mc_tls_ctx *server_ctx(const mc_tls_ticket_key *keys, size_t nkeys, const char *cert,
			      const char *key)
{
	static const char *const alpn[] = {"h2", "http/1.1"};
	mc_tls_server_opts o = {.cert_file = cert,
				.key_file = key,
				.ticket_keys = keys,
				.nticket_keys = nkeys,
				.alpn = alpn,
				.nalpn = 2};
	char err[256];
	mc_tls_ctx *c = NULL;
	int rc = mc_tls_ctx_server_new(&c, &o, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	return c;
}

static mc_tls_ctx *client_ctx(const char *const *alpn, size_t nalpn, int maxv)
{
	mc_tls_client_opts o = {.alpn = alpn, .nalpn = nalpn, .max_version = maxv};
	char err[256];
	mc_tls_ctx *c = NULL;
	assert_int_equal(mc_tls_ctx_client_new(&c, &o, err, sizeof err), 0);
	return c;
}

/* Moves every pending output byte of a into b. Returns how many. */
static size_t pump(mc_tls_conn *a, mc_tls_conn *b)
{
	char buf[4096];
	size_t total = 0, n;
	while ((n = mc_tls_conn_out_take(a, buf, sizeof buf)) > 0) {
		mc_tls_conn_feed(b, buf, n);
		total += n;
	}
	return total;
}

/* Runs the handshake between cl and sv through memory; 0 when both finished. */
static int handshake(mc_tls_conn *cl, mc_tls_conn *sv)
{
	for (int i = 0; i < 20; i++) {
		int rc_c = mc_tls_conn_handshake(cl);
		pump(cl, sv);
		int rc_s = mc_tls_conn_handshake(sv);
		pump(sv, cl);
		if (rc_c == MC_EPROTO || rc_s == MC_EPROTO)
			return MC_EPROTO;
		if (rc_c == 0 && rc_s == 0)
			return 0;
	}
	return MC_ETIMEDOUT;
}

/* Sends msg from a to b and checks it arrives whole. */
static void send_recv(mc_tls_conn *a, mc_tls_conn *b, const char *msg)
{
	assert_int_equal(mc_tls_conn_write(a, msg, strlen(msg)), 0);
	assert_true(pump(a, b) > strlen(msg)); /* encrypted and framed */
	char got[256];
	size_t n = 0, at = 0;
	while (mc_tls_conn_read(b, got + at, sizeof got - 1 - at, &n) == 0)
		at += n;
	pump(b, a);
	got[at] = '\0';
	assert_string_equal(got, msg);
}

static void test_engine_handshake_alpn_data(void **state)
{
	(void)state;
	mc_tls_ticket_key k;
	key_fill(&k, 1);
	mc_tls_ctx *sctx = server_ctx(&k, 1, g_cert, g_key);
	static const char *const offer[] = {"http/1.1", "h2"};
	mc_tls_ctx *cctx = client_ctx(offer, 2, 0);
	mc_tls_conn *sv, *cl;
	assert_int_equal(mc_tls_conn_new(&sv, sctx), 0);
	assert_int_equal(mc_tls_conn_new(&cl, cctx), 0);
	/* the contexts live on through the engines' references */
	mc_tls_ctx_unref(sctx);
	mc_tls_ctx_unref(cctx);
	assert_int_equal(mc_tls_conn_write(sv, "x", 1), MC_EAGAIN); /* not before the handshake */
	assert_int_equal(handshake(cl, sv), 0);
	size_t alen;
	const char *a = mc_tls_conn_alpn(sv, &alen);
	assert_non_null(a);
	assert_int_equal(alen, 2); /* server preference: h2 before http/1.1 */
	assert_memory_equal(a, "h2", 2);
	a = mc_tls_conn_alpn(cl, &alen);
	assert_int_equal(alen, 2);
	assert_string_equal(mc_tls_conn_version(sv), "TLSv1.3");
	assert_int_equal(mc_tls_conn_resumed(sv), 0);
	send_recv(cl, sv, "GET / HTTP/1.1\r\n\r\n");
	send_recv(sv, cl, "HTTP/1.1 200 OK\r\n\r\n");
	/* close_notify reaches the peer as MC_ECLOSED */
	assert_int_equal(mc_tls_conn_close_notify(cl), 0);
	pump(cl, sv);
	char buf[64];
	size_t n;
	assert_int_equal(mc_tls_conn_read(sv, buf, sizeof buf, &n), MC_ECLOSED);
	mc_tls_conn_free(sv);
	mc_tls_conn_free(cl);
}

static void test_engine_no_alpn_overlap(void **state)
{
	(void)state;
	mc_tls_ctx *sctx = server_ctx(NULL, 0, g_cert, g_key);
	static const char *const offer[] = {"h3"};
	mc_tls_ctx *cctx = client_ctx(offer, 1, 0);
	mc_tls_conn *sv, *cl;
	assert_int_equal(mc_tls_conn_new(&sv, sctx), 0);
	assert_int_equal(mc_tls_conn_new(&cl, cctx), 0);
	assert_int_equal(handshake(cl, sv), 0); /* no ALPN answer, no failure */
	size_t alen;
	assert_null(mc_tls_conn_alpn(sv, &alen));
	assert_int_equal(alen, 0);
	mc_tls_conn_free(sv);
	mc_tls_conn_free(cl);
	mc_tls_ctx_unref(sctx);
	mc_tls_ctx_unref(cctx);
}

static void test_engine_garbage(void **state)
{
	(void)state;
	mc_tls_ctx *sctx = server_ctx(NULL, 0, g_cert, g_key);
	mc_tls_conn *sv;
	assert_int_equal(mc_tls_conn_new(&sv, sctx), 0);
	const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	mc_tls_conn_feed(sv, junk, sizeof junk - 1);
	assert_int_equal(mc_tls_conn_handshake(sv), MC_EPROTO);
	assert_true(strlen(mc_tls_conn_error(sv)) > 0);
	assert_int_equal(mc_tls_conn_handshake(sv), MC_EPROTO); /* stays failed */
	char buf[16];
	size_t n;
	assert_int_equal(mc_tls_conn_read(sv, buf, sizeof buf, &n), MC_EPROTO);
	mc_tls_conn_free(sv);
	/* a partial ClientHello only waits */
	assert_int_equal(mc_tls_conn_new(&sv, sctx), 0);
	const unsigned char part[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
	mc_tls_conn_feed(sv, part, sizeof part);
	assert_int_equal(mc_tls_conn_handshake(sv), MC_EAGAIN);
	mc_tls_conn_free(sv);
	mc_tls_ctx_unref(sctx);
}

/* One full client connection to sctx; returns 1 when it resumed. The session
 * to offer is in *sess (len *slen, 0 for none) and is replaced by the new one. */
static int connect_once(mc_tls_ctx *sctx, int maxv, uint8_t *sess, size_t *slen)
{
	static const char *const offer[] = {"http/1.1"};
	mc_tls_ctx *cctx = client_ctx(offer, 1, maxv);
	mc_tls_conn *sv, *cl;
	assert_int_equal(mc_tls_conn_new(&sv, sctx), 0);
	assert_int_equal(mc_tls_conn_new(&cl, cctx), 0);
	if (*slen)
		assert_int_equal(mc_tls_conn_session_load(cl, sess, *slen), 0);
	assert_int_equal(handshake(cl, sv), 0);
	int resumed = mc_tls_conn_resumed(sv);
	assert_int_equal(mc_tls_conn_resumed(cl), resumed);
	/* TLS 1.3 tickets arrive after the handshake: read them */
	send_recv(sv, cl, "hello");
	send_recv(cl, sv, "hi");
	/* TLS 1.2 keeps the resumed session; TLS 1.3 gets a fresh ticket each time */
	assert_int_equal(mc_tls_conn_session_save(cl, sess, 4096, slen), 0);
	mc_tls_conn_free(sv);
	mc_tls_conn_free(cl);
	mc_tls_ctx_unref(cctx);
	return resumed;
}

static void test_resumption_across_contexts(void **state)
{
	(void)state;
	mc_tls_ticket_key k1, k2;
	key_fill(&k1, 1);
	key_fill(&k2, 99);
	mc_tls_ticket_key rotated[2] = {k2, k1}; /* new key first, old one still decrypts */
	mc_tls_ctx *a = server_ctx(&k1, 1, g_cert, g_key);
	mc_tls_ctx *b = server_ctx(&k1, 1, g_cert, g_key); /* another "process", same keys */
	mc_tls_ctx *other = server_ctx(&k2, 1, g_cert, g_key);
	mc_tls_ctx *rot = server_ctx(rotated, 2, g_cert, g_key);
	mc_tls_ctx *nokeys = server_ctx(NULL, 0, g_cert, g_key);
	uint8_t *sess = mc_alloc(4096);
	for (int v = 12; v <= 13; v++) {
		size_t slen = 0;
		assert_int_equal(connect_once(a, v, sess, &slen), 0);
		assert_true(slen > 0);
		uint8_t *saved = mc_alloc(slen);
		size_t saved_len = slen;
		memcpy(saved, sess, slen);
		assert_int_equal(connect_once(b, v, sess, &slen), 1);
		memcpy(sess, saved, saved_len);
		slen = saved_len;
		assert_int_equal(connect_once(other, v, sess, &slen), 0);
		memcpy(sess, saved, saved_len);
		slen = saved_len;
		assert_int_equal(connect_once(rot, v, sess, &slen), 1);
		/* renewed: the new ticket is under k2, so "other" (k2 only) resumes it */
		assert_true(slen > 0);
		assert_int_equal(connect_once(other, v, sess, &slen), 1);
		memcpy(sess, saved, saved_len);
		slen = saved_len;
		assert_int_equal(connect_once(nokeys, v, sess, &slen), 0);
		free(saved);
	}
	free(sess);
	mc_tls_ctx_unref(a);
	mc_tls_ctx_unref(b);
	mc_tls_ctx_unref(other);
	mc_tls_ctx_unref(rot);
	mc_tls_ctx_unref(nokeys);
}

static void test_ctx_errors(void **state)
{
	(void)state;
	char err[256];
	mc_tls_ctx *c = NULL;
	mc_tls_server_opts o = {.cert_file = g_bad, .key_file = g_key};
	assert_int_equal(mc_tls_ctx_server_new(&c, &o, err, sizeof err), MC_ECONFIG);
	assert_null(c);
	assert_non_null(strstr(err, "cannot load the certificate chain"));
	assert_non_null(strstr(err, g_bad));
	o.cert_file = "/nonexistent/cert.pem";
	assert_int_equal(mc_tls_ctx_server_new(&c, &o, err, sizeof err), MC_ECONFIG);
	assert_non_null(strstr(err, "/nonexistent/cert.pem: cannot load the certificate chain"));
	o.cert_file = g_cert;
	o.key_file = g_key2; /* another certificate's key */
	assert_int_equal(mc_tls_ctx_server_new(&c, &o, err, sizeof err), MC_ECONFIG);
	assert_non_null(strstr(err, "does not match the certificate"));
	o.key_file = g_key;
	assert_int_equal(mc_tls_ctx_server_new(&c, &o, err, sizeof err), 0);
	char desc[400];
	mc_tls_ctx_describe(c, desc, sizeof desc);
	assert_non_null(strstr(desc, "CN=a.test"));
	assert_non_null(strstr(desc, "sha256 "));
	mc_tls_ctx_unref(c);
}

/* ---- the stream over loopback --------------------------------------------------------- */

typedef struct side {
	uv_tcp_t tcp;
	mc_tls_stream *tls;
	int handshakes, hs_status;
	char got[8192];
	size_t got_len;
	int eof, writes_done, echo, closed;
	uv_write_t wreq;
	char slab[65536];
} side;

typedef struct bench {
	uv_loop_t loop;
	uv_tcp_t listener;
	mc_tls_ctx *sctx, *cctx;
	side sv, cl;
	uv_connect_t creq;
} bench;

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	side *s = h->data;
	(void)sz;
	*b = uv_buf_init(s->slab, sizeof s->slab);
}

static void on_written(uv_write_t *req, int status)
{
	side *s = req->data;
	assert_int_equal(status, 0);
	s->writes_done++;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	side *s = st->data; /* the caller's data, not the stream's */
	assert_ptr_equal(&s->tcp, (uv_tcp_t *)st);
	if (n < 0) {
		s->eof = (int)n;
		return;
	}
	if (n == 0)
		return;
	assert_true(s->got_len + (size_t)n <= sizeof s->got);
	memcpy(s->got + s->got_len, b->base, (size_t)n);
	s->got_len += (size_t)n;
	if (s->echo) {
		uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
		s->wreq.data = s;
		assert_int_equal(mc_tls_stream_write(s->tls, &s->wreq, &out, 1, on_written), 0);
	}
}

static void on_hs(void *arg, int status)
{
	side *s = arg;
	s->handshakes++;
	s->hs_status = status;
}

static void on_accept(uv_stream_t *l, int status)
{
	bench *b = l->data;
	assert_int_equal(status, 0);
	uv_tcp_init(&b->loop, &b->sv.tcp);
	b->sv.tcp.data = &b->sv;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&b->sv.tcp), 0);
	assert_int_equal(mc_tls_stream_new(&b->sv.tls, b->sctx, &b->sv.tcp, on_hs, b->sv.slab,
					   sizeof b->sv.slab),
			 0);
	assert_ptr_equal(b->sv.tcp.data, (void *)b->sv.tls);
	assert_int_equal(mc_tls_stream_read_start(b->sv.tls, on_alloc, on_read), 0);
}

static void on_connected(uv_connect_t *req, int status)
{
	bench *b = req->data;
	assert_int_equal(status, 0);
	assert_int_equal(mc_tls_stream_new(&b->cl.tls, b->cctx, &b->cl.tcp, on_hs, NULL, 0), 0);
	assert_int_equal(mc_tls_stream_read_start(b->cl.tls, on_alloc, on_read), 0);
}

static void run_until(uv_loop_t *loop, int (*done)(bench *), bench *b, unsigned ms)
{
	uint64_t end = mc_now_ns() + (uint64_t)ms * 1000000u;
	while (!done(b) && mc_now_ns() < end)
		uv_run(loop, UV_RUN_NOWAIT), usleep(1000);
}

static int both_handshaken(bench *b)
{
	return b->sv.handshakes && b->cl.handshakes;
}

static int echoed_all(bench *b)
{
	return b->cl.got_len >= 6000;
}

static int server_saw_eof(bench *b)
{
	return b->sv.eof != 0;
}

static void on_closed(uv_handle_t *h)
{
	((side *)h->data)->closed = 1;
}

static void test_stream_echo(void **state)
{
	(void)state;
	bench *b = mc_calloc(1, sizeof *b);
	uv_loop_init(&b->loop);
	b->sctx = server_ctx(NULL, 0, g_cert, g_key);
	static const char *const offer[] = {"h2"};
	b->cctx = client_ctx(offer, 1, 0);
	b->listener.data = b;
	assert_int_equal(mc_net_listen(&b->loop, &b->listener, "127.0.0.1:0", 0, 16, on_accept), 0);
	struct sockaddr_storage ss;
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%u", mc_net_local_port(&b->listener));
	mc_net_addr_parse(addr, &ss);
	uv_tcp_init(&b->loop, &b->cl.tcp);
	b->cl.tcp.data = &b->cl;
	b->creq.data = b;
	assert_int_equal(uv_tcp_connect(&b->creq, &b->cl.tcp, (struct sockaddr *)&ss, on_connected),
			 0);
	run_until(&b->loop, both_handshaken, b, 10000);
	assert_int_equal(b->sv.hs_status, 0);
	assert_int_equal(b->cl.hs_status, 0);
	size_t alen;
	assert_memory_equal(mc_tls_conn_alpn(mc_tls_stream_conn(b->sv.tls), &alen), "h2", 2);
	/* several writes echoed back in order, with write callbacks */
	b->sv.echo = 1;
	char msg[6000];
	for (size_t i = 0; i < sizeof msg; i++)
		msg[i] = (char)('a' + i % 26);
	uv_write_t reqs[3];
	for (int i = 0; i < 3; i++) {
		uv_buf_t part = uv_buf_init(msg + i * 2000, 2000);
		reqs[i].data = &b->cl;
		assert_int_equal(mc_tls_stream_write(b->cl.tls, &reqs[i], &part, 1, on_written), 0);
	}
	run_until(&b->loop, echoed_all, b, 10000);
	assert_int_equal(b->cl.got_len, sizeof msg);
	assert_memory_equal(b->cl.got, msg, sizeof msg);
	assert_int_equal(b->cl.writes_done, 3);
	/* reading stopped: nothing is delivered; started again: the buffered input is */
	b->sv.echo = 0;
	mc_tls_stream_read_stop(b->sv.tls);
	size_t before = b->sv.got_len;
	uv_buf_t more = uv_buf_init((char *)"later", 5);
	uv_write_t r4;
	r4.data = &b->cl;
	assert_int_equal(mc_tls_stream_write(b->cl.tls, &r4, &more, 1, on_written), 0);
	for (int i = 0; i < 50; i++)
		uv_run(&b->loop, UV_RUN_NOWAIT), usleep(1000);
	assert_int_equal(b->sv.got_len, before);
	mc_tls_stream_read_start(b->sv.tls, on_alloc, on_read);
	assert_int_equal(b->sv.got_len, before); /* never from inside read_start */
	for (int i = 0; i < 200 && b->sv.got_len < before + 5; i++)
		uv_run(&b->loop, UV_RUN_NOWAIT), usleep(1000);
	assert_int_equal(b->sv.got_len, before + 5);
	assert_memory_equal(b->sv.got + before, "later", 5);
	/* the client's close_notify + FIN is an EOF for the server */
	uv_shutdown_t sreq;
	assert_int_equal(mc_tls_stream_shutdown(b->cl.tls, &sreq, NULL), 0);
	run_until(&b->loop, server_saw_eof, b, 10000);
	assert_int_equal(b->sv.eof, UV_EOF);
	mc_tls_stream_free(b->sv.tls);
	mc_tls_stream_free(b->cl.tls);
	assert_ptr_equal(b->sv.tcp.data, &b->sv);
	uv_close((uv_handle_t *)&b->sv.tcp, on_closed);
	uv_close((uv_handle_t *)&b->cl.tcp, on_closed);
	uv_close((uv_handle_t *)&b->listener, NULL);
	uv_run(&b->loop, UV_RUN_DEFAULT);
	assert_true(b->sv.closed && b->cl.closed);
	assert_int_equal(uv_loop_close(&b->loop), 0);
	mc_tls_ctx_unref(b->sctx);
	mc_tls_ctx_unref(b->cctx);
	free(b);
}

static void on_raw_connected(uv_connect_t *req, int status)
{
	bench *b = req->data;
	assert_int_equal(status, 0);
	static char junk[] = "\x16\x03\x01\x00\x05hello garbage that is no ClientHello";
	uv_buf_t buf = uv_buf_init(junk, sizeof junk - 1);
	uv_try_write((uv_stream_t *)&b->cl.tcp, &buf, 1);
}

static int server_handshake_reported(bench *b)
{
	return b->sv.handshakes > 0;
}

static void test_stream_garbage(void **state)
{
	(void)state;
	bench *b = mc_calloc(1, sizeof *b);
	uv_loop_init(&b->loop);
	b->sctx = server_ctx(NULL, 0, g_cert, g_key);
	b->listener.data = b;
	assert_int_equal(mc_net_listen(&b->loop, &b->listener, "127.0.0.1:0", 0, 16, on_accept), 0);
	struct sockaddr_storage ss;
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%u", mc_net_local_port(&b->listener));
	mc_net_addr_parse(addr, &ss);
	uv_tcp_init(&b->loop, &b->cl.tcp);
	b->cl.tcp.data = &b->cl;
	b->creq.data = b;
	assert_int_equal(
	    uv_tcp_connect(&b->creq, &b->cl.tcp, (struct sockaddr *)&ss, on_raw_connected), 0);
	run_until(&b->loop, server_handshake_reported, b, 10000);
	assert_int_equal(b->sv.handshakes, 1);
	assert_int_equal(b->sv.hs_status, MC_EPROTO);
	assert_int_equal(b->sv.got_len, 0);
	mc_tls_stream_free(b->sv.tls);
	uv_close((uv_handle_t *)&b->sv.tcp, on_closed);
	uv_close((uv_handle_t *)&b->cl.tcp, on_closed);
	uv_close((uv_handle_t *)&b->listener, NULL);
	uv_run(&b->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&b->loop), 0);
	mc_tls_ctx_unref(b->sctx);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_engine_handshake_alpn_data),
	    cmocka_unit_test(test_engine_no_alpn_overlap),
	    cmocka_unit_test(test_engine_garbage),
	    cmocka_unit_test(test_resumption_across_contexts),
	    cmocka_unit_test(test_ctx_errors),
	    cmocka_unit_test(test_stream_echo),
	    cmocka_unit_test(test_stream_garbage),
	};
	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
