/* A TLS engine run over a connected uv_tcp_t: ciphertext read from the socket
 * feeds the engine, plaintext goes to the caller's libuv-style read callback,
 * and the caller's plaintext writes leave as ciphertext through uv_write. The
 * caller keeps its handle and callbacks; see tls.h for the handle->data rule. */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "net/tls.h"

#define READ_CHUNK (16u * 1024u) /* ciphertext per socket read without scratch */
#define PLAIN_CHUNK (64u * 1024u)

struct mc_tls_stream {
	mc_tls_conn *conn;
	uv_tcp_t *tcp;
	void *user; /* the caller's tcp->data */
	void (*on_handshake)(void *arg, int status);
	uv_alloc_cb alloc_cb;
	uv_read_cb read_cb;
	uv_idle_t idle; /* delivers input buffered while the caller was not reading */
	char *scratch;
	size_t scratch_len;
	size_t queued; /* ciphertext bytes handed to uv_write, not written yet */
	int refs;      /* owner + idle handle + writes in flight + callbacks running */
	int tcp_eof;   /* negative uv code once the socket read ended */
	uint8_t user_reading, tcp_reading, freed, reported, dead;
};

/* One uv_write of ciphertext, possibly completing a caller's write. */
typedef struct wop {
	uv_write_t req;
	mc_tls_stream *s;
	uv_write_t *user;
	uv_write_cb cb;
	size_t len;
	char data[];
} wop;

static void stream_unref(mc_tls_stream *s)
{
	MC_ASSERT(s->refs > 0);
	if (--s->refs > 0)
		return;
	mc_tls_conn_free(s->conn);
	free(s);
}

static void on_wop(uv_write_t *req, int status)
{
	wop *op = (wop *)(void *)req;
	mc_tls_stream *s = op->s;
	s->queued -= op->len;
	if (!s->freed && op->cb)
		op->cb(op->user, status);
	free(op);
	stream_unref(s);
}

/* Sends every pending ciphertext byte in one uv_write; with cb, the caller's
 * write completes with it (even with nothing to send). Returns 0 or a uv code. */
static int flush(mc_tls_stream *s, uv_write_t *user, uv_write_cb cb)
{
	size_t n = mc_tls_conn_out_pending(s->conn);
	if (n == 0 && !cb)
		return 0;
	wop *op = mc_alloc(sizeof *op + n);
	op->s = s;
	op->user = user;
	op->cb = cb;
	op->len = mc_tls_conn_out_take(s->conn, op->data, n);
	uv_buf_t b = uv_buf_init(op->data, (unsigned)op->len);
	int rc = uv_write(&op->req, (uv_stream_t *)s->tcp, &b, 1, on_wop);
	if (rc < 0) {
		free(op);
		return rc;
	}
	s->refs++;
	s->queued += op->len;
	return 0;
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	mc_tls_stream *s = h->data;
	(void)suggested;
	if (s->scratch) {
		*buf = uv_buf_init(s->scratch, (unsigned)s->scratch_len);
	} else {
		buf->base = malloc(READ_CHUNK);
		buf->len = buf->base ? READ_CHUNK : 0;
	}
}

static void on_tcp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void update_tcp_read(mc_tls_stream *s)
{
	if (s->freed)
		return;
	int want =
	    !s->dead && !s->tcp_eof && (!mc_tls_conn_handshake_done(s->conn) || s->user_reading);
	if (want && !s->tcp_reading) {
		int rc = uv_read_start((uv_stream_t *)s->tcp, on_tcp_alloc, on_tcp_read);
		if (rc < 0) {
			s->tcp_eof = rc; /* reported like a socket error */
			return;
		}
		s->tcp_reading = 1;
	} else if (!want && s->tcp_reading) {
		uv_read_stop((uv_stream_t *)s->tcp);
		s->tcp_reading = 0;
	}
}

/* Calls the caller's read callback with its own handle->data in place. */
static void user_read(mc_tls_stream *s, ssize_t n, const uv_buf_t *b)
{
	s->tcp->data = s->user;
	s->read_cb((uv_stream_t *)s->tcp, n, b);
	if (!s->freed)
		s->tcp->data = s;
}

/* Hands decrypted input to the caller while it reads. */
static void deliver(mc_tls_stream *s)
{
	while (!s->freed && !s->dead && s->user_reading) {
		int more = mc_tls_conn_has_input(s->conn);
		if (!more && !s->tcp_eof)
			return;
		uv_buf_t b = uv_buf_init(NULL, 0);
		s->tcp->data = s->user;
		s->alloc_cb((uv_handle_t *)s->tcp, PLAIN_CHUNK, &b);
		if (s->freed)
			return;
		s->tcp->data = s;
		ssize_t nread;
		if (!b.base || b.len == 0) {
			nread = UV_ENOBUFS;
		} else {
			size_t got = 0;
			int rc = more ? mc_tls_conn_read(s->conn, b.base, b.len, &got) : MC_EAGAIN;
			flush(s, NULL, NULL); /* alerts, key-update answers */
			if (rc == 0)
				nread = (ssize_t)got;
			else if (rc == MC_EAGAIN)
				nread = s->tcp_eof ? s->tcp_eof : 0;
			else if (rc == MC_ECLOSED)
				nread = UV_EOF;
			else
				nread = UV_EPROTO;
		}
		if (nread < 0)
			s->dead = 1;
		user_read(s, nread, &b);
		if (nread <= 0)
			return;
	}
}

static void report_handshake(mc_tls_stream *s, int status)
{
	if (s->reported)
		return;
	s->reported = 1;
	if (status < 0)
		s->dead = 1;
	s->on_handshake(s->user, status);
}

/* Runs the engine over what was fed: handshake, then delivery. */
static void process(mc_tls_stream *s)
{
	s->refs++;
	if (!mc_tls_conn_handshake_done(s->conn)) {
		int rc = mc_tls_conn_handshake(s->conn);
		flush(s, NULL, NULL); /* our handshake messages, or the alert */
		if (rc == 0)
			report_handshake(s, 0);
		else if (rc != MC_EAGAIN)
			report_handshake(s, MC_EPROTO);
		else if (s->tcp_eof)
			report_handshake(s, s->tcp_eof);
	}
	if (!s->freed && mc_tls_conn_handshake_done(s->conn))
		deliver(s);
	update_tcp_read(s);
	stream_unref(s);
}

static void on_tcp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	mc_tls_stream *s = st->data;
	if (nread > 0)
		mc_tls_conn_feed(s->conn, buf->base, (size_t)nread);
	if (!s->scratch)
		free(buf->base);
	if (nread == 0)
		return;
	if (nread < 0)
		s->tcp_eof = (int)nread;
	process(s);
}

static void on_idle(uv_idle_t *h)
{
	mc_tls_stream *s = h->data;
	uv_idle_stop(h);
	s->refs++;
	deliver(s);
	update_tcp_read(s);
	stream_unref(s);
}

static void on_idle_close(uv_handle_t *h)
{
	stream_unref(h->data);
}

int mc_tls_stream_new(mc_tls_stream **out, mc_tls_ctx *ctx, uv_tcp_t *tcp,
		      void (*on_handshake)(void *arg, int status), char *scratch,
		      size_t scratch_len)
{
	*out = NULL;
	mc_tls_stream *s = mc_calloc(1, sizeof *s);
	int rc = mc_tls_conn_new(&s->conn, ctx);
	if (rc < 0) {
		free(s);
		return rc;
	}
	s->tcp = tcp;
	s->user = tcp->data;
	s->on_handshake = on_handshake;
	if (scratch && scratch_len >= READ_CHUNK) {
		s->scratch = scratch;
		s->scratch_len = scratch_len;
	}
	s->refs = 2; /* owner + idle handle */
	uv_idle_init(uv_handle_get_loop((uv_handle_t *)tcp), &s->idle);
	s->idle.data = s;
	tcp->data = s;
	/* a client engine writes its ClientHello now; a server one waits */
	rc = mc_tls_conn_handshake(s->conn);
	if (rc == MC_EAGAIN || rc == 0)
		rc = flush(s, NULL, NULL);
	else
		rc = UV_EPROTO;
	if (rc == 0)
		update_tcp_read(s);
	if (rc < 0 || s->tcp_eof < 0) {
		rc = rc < 0 ? rc : s->tcp_eof;
		mc_tls_stream_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int mc_tls_stream_read_start(mc_tls_stream *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
	if (s->freed || !alloc_cb || !read_cb)
		return UV_EINVAL;
	s->alloc_cb = alloc_cb;
	s->read_cb = read_cb;
	s->user_reading = 1;
	if (mc_tls_conn_handshake_done(s->conn) && !s->dead &&
	    (mc_tls_conn_has_input(s->conn) || s->tcp_eof))
		uv_idle_start(&s->idle, on_idle);
	update_tcp_read(s);
	return 0;
}

int mc_tls_stream_read_stop(mc_tls_stream *s)
{
	s->user_reading = 0;
	uv_idle_stop(&s->idle);
	update_tcp_read(s);
	return 0;
}

int mc_tls_stream_write(mc_tls_stream *s, uv_write_t *req, const uv_buf_t bufs[], unsigned n,
			uv_write_cb cb)
{
	if (s->freed)
		return UV_EINVAL;
	if (!mc_tls_conn_handshake_done(s->conn))
		return UV_ENOTCONN;
	for (unsigned i = 0; i < n; i++)
		if (bufs[i].len > 0 && mc_tls_conn_write(s->conn, bufs[i].base, bufs[i].len) < 0)
			return UV_EPROTO;
	if (!cb) /* still completes through a write of its own */
		return flush(s, NULL, NULL);
	return flush(s, req, cb);
}

int mc_tls_stream_shutdown(mc_tls_stream *s, uv_shutdown_t *req, uv_shutdown_cb cb)
{
	if (s->freed)
		return UV_EINVAL;
	if (mc_tls_conn_handshake_done(s->conn) && mc_tls_conn_close_notify(s->conn) == 0)
		flush(s, NULL, NULL);
	return uv_shutdown(req, (uv_stream_t *)s->tcp, cb);
}

mc_tls_conn *mc_tls_stream_conn(mc_tls_stream *s)
{
	return s->conn;
}

size_t mc_tls_stream_write_queue(const mc_tls_stream *s)
{
	return s->queued;
}

void mc_tls_stream_free(mc_tls_stream *s)
{
	if (!s || s->freed)
		return;
	if (s->tcp_reading)
		uv_read_stop((uv_stream_t *)s->tcp);
	s->tcp_reading = 0;
	s->freed = 1;
	s->tcp->data = s->user;
	uv_close((uv_handle_t *)&s->idle, on_idle_close);
	stream_unref(s);
}
