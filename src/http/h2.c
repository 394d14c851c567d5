/* HTTP/2 server sessions with nghttp2, over a TLS stream whose ALPN chose
 * "h2". Each request stream becomes the same mc_http_exchange an HTTP/1.1
 * request is, bounded by the same limits (head bytes and count, body bytes,
 * request and idle timeouts), so handlers do not know which protocol carried
 * it. nghttp2's own defences stay on: the RST_STREAM rate limit (rapid reset,
 * CVE-2023-44487) and the CONTINUATION count (CVE-2024-28182), set explicitly
 * below; on top, requests whose handler has not answered yet count against
 * max_concurrent_streams even after the client reset them. */
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "http/http_int.h"

/* Frames gathered into one TLS write at most. */
#define WRITE_CHUNK (64u * 1024u)
/* nghttp2's rapid-reset bucket and CONTINUATION bound, restated so a library
 * default can never silently turn them off (docs/architecture.md). */
#define RST_BURST 1000
#define RST_RATE 33
#define MAX_CONTINUATIONS 8
#define METHOD_MAX 24

typedef struct mc_http_h2_stream stream;

struct mc_http_h2_stream {
	mc_http_exchange ex; /* ex.h2 points back here */
	mc_http_h2 *h;
	int32_t id;
	mc_http_link link; /* in h->streams, in arrival order */
	mc_http_head head;
	mc_buf body;
	mc_buf cookie;	  /* cookie crumbs joined with "; " (RFC 9113 8.2.3) */
	mc_buf authority; /* :authority, becomes Host when the request has none */
	mc_buf out;	  /* response body not yet framed */
	size_t out_off;
	uint64_t start_ns;
	size_t body_limit; /* of this request: the route's, else max_body_bytes */
	int err_status; /* the server answers this itself (400, 413, 431, 501) */
	char err_code[40];
	char err_msg[96];
	char method[METHOD_MAX];
	uint8_t has_host, got_path, head_done, req_done, ready;
	uint8_t dispatched, ex_active, answered, ng_open, head_req, resp_eof;
	uint8_t drain_armed, closed_told; /* mc_http_exchange_watch() events */
	uint8_t inflight; /* holds one of the server's max_inflight slots */
};

struct mc_http_h2 {
	mc_http_h2_host host;
	nghttp2_session *ng;
	mc_http_link streams;
	size_t handlers; /* exchanges with the handler (reset streams included) */
	int refs;	 /* 1 while attached + 1 per stream alive + 1 per call in progress */
	uv_write_t wreq;
	mc_buf wbuf;
	uint64_t last_ns;	 /* last frame received or sent */
	uint64_t write_start_ns; /* the TLS write in flight began */
	uint8_t attached, writing, in_cb, draining, ending;
};

static void h2_flush(mc_http_h2 *h);
static void exchange_release(stream *st);
static int stream_gone(const stream *st);

/* ---- lifetime --------------------------------------------------------------------- */

static void h2_unref(mc_http_h2 *h)
{
	MC_ASSERT(h->refs > 0);
	if (--h->refs > 0)
		return;
	nghttp2_session_del(h->ng);
	mc_buf_fini(&h->wbuf);
	free(h);
}

static void stream_free(stream *st)
{
	mc_http_h2 *h = st->h;
	mc_http_list_remove(&st->link);
	mc_http_head_fini(&st->head);
	mc_buf_fini(&st->body);
	mc_buf_fini(&st->cookie);
	mc_buf_fini(&st->authority);
	mc_buf_fini(&st->out);
	free(st);
	h2_unref(h);
}

static stream *stream_of(mc_http_h2 *h, int32_t id)
{
	return h->ng ? nghttp2_session_get_stream_user_data(h->ng, id) : NULL;
}

/* Tells handlers that watch their exchange (mc_http_exchange_watch) what
 * happened since: the stream or connection is gone (MC_HTTP_EX_CLOSED, once),
 * or every streamed body byte was framed (MC_HTTP_EX_DRAINED). Called from loop
 * events only, with the session held, never from inside an exchange call. */
static void fire_watch_events(mc_http_h2 *h)
{
	for (mc_http_link *l = h->streams.next; l != &h->streams;) {
		stream *st = MC_HTTP_CONTAINER(l, stream, link);
		l = l->next; /* the callback may end (and free) st, never another stream */
		if (!st->ex_active || !st->ex.watch)
			continue;
		if (stream_gone(st)) {
			if (!st->closed_told) {
				st->closed_told = 1;
				st->ex.watch(st->ex.watch_arg, MC_HTTP_EX_CLOSED);
			}
		} else if (st->drain_armed && st->out.len == st->out_off) {
			st->drain_armed = 0;
			st->ex.watch(st->ex.watch_arg, MC_HTTP_EX_DRAINED);
		}
	}
}

/* ---- responses ---------------------------------------------------------------------- */

static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
			    uint32_t *flags, nghttp2_data_source *src, void *user)
{
	(void)ng;
	(void)id;
	(void)user;
	stream *st = src->ptr;
	size_t avail = st->out.len - st->out_off;
	if (avail == 0 && !st->resp_eof)
		return NGHTTP2_ERR_DEFERRED;
	size_t n = MC_MIN(avail, length);
	if (n)
		memcpy(buf, st->out.data + st->out_off, n);
	st->out_off += n;
	if (st->out_off == st->out.len && st->resp_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		mc_buf_fini(&st->out);
		st->out_off = 0;
	}
	return (ssize_t)n;
}

static int reserved_header(const mc_http_header *hd)
{
	/* connection-specific fields are forbidden in HTTP/2 (RFC 9113 8.2.2);
	 * content-length is ours to set */
	static const char *const names[] = {
	    "connection",	"keep-alive", "transfer-encoding", "upgrade",
	    "proxy-connection", "te",	      "content-length"};
	for (size_t i = 0; i < MC_ARRAY_LEN(names); i++)
		if (mc_http_token_eq(hd->name, hd->name_len, names[i]))
			return 1;
	return 0;
}

/* Submits status, headers and (unless bodyless) the body held in st->out. */
static int submit_response(stream *st, int status, const mc_http_header *hd, size_t n,
			   uint64_t content_length, int with_length, int with_body)
{
	mc_http_h2 *h = st->h;
	char status_s[4], cl_s[24];
	snprintf(status_s, sizeof status_s, "%03d", status);
	snprintf(cl_s, sizeof cl_s, "%llu", (unsigned long long)content_length);
	nghttp2_nv *nv = mc_alloc((n + 2) * sizeof *nv);
	size_t names_len = 0;
	for (size_t i = 0; i < n; i++)
		names_len += hd[i].name_len;
	char *lower = mc_alloc(names_len + 1);
	size_t nn = 0, at = 0;
	nv[nn++] =
	    (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status_s, 7, 3, NGHTTP2_NV_FLAG_NONE};
	for (size_t i = 0; i < n; i++) {
		if (hd[i].name_len == 0 || reserved_header(&hd[i]) ||
		    !mc_http_token_valid(hd[i].name, hd[i].name_len) ||
		    !mc_http_field_safe(hd[i].value, hd[i].value_len)) {
			MC_DEBUG("http", "h2 response header dropped (reserved or unsafe)");
			continue;
		}
		/* HTTP/2 field names are lower case (RFC 9113 8.2.1) */
		for (size_t k = 0; k < hd[i].name_len; k++) {
			char ch = hd[i].name[k];
			lower[at + k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
		}
		nv[nn++] = (nghttp2_nv){(uint8_t *)lower + at, (uint8_t *)hd[i].value,
					hd[i].name_len, hd[i].value_len, NGHTTP2_NV_FLAG_NONE};
		at += hd[i].name_len;
	}
	if (with_length)
		nv[nn++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)cl_s, 14,
					strlen(cl_s), NGHTTP2_NV_FLAG_NONE};
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_body};
	st->resp_eof = 1;
	/* nghttp2 copies names and values: the buffers may go right after */
	int rv = nghttp2_submit_response(h->ng, st->id, nv, nn, with_body ? &prd : NULL);
	free(nv);
	free(lower);
	st->answered = 1;
	if (rv != 0) {
		MC_DEBUG("http", "h2 stream %d: response not submitted: %s", st->id,
			 nghttp2_strerror(rv));
		return MC_EPROTO;
	}
	return 0;
}

/* Answers a request the handler never saw (400/408/413/431/501). */
static void stream_error(stream *st, int status, const char *code, const char *msg)
{
	mc_http_h2 *h = st->h;
	const mc_http_server_opts *o = h->host.opts;
	if (st->answered || st->dispatched || !st->ng_open)
		return;
	mc_buf_reset(&st->out);
	st->out_off = 0;
	mc_http_error_body(&st->out, code, msg);
	mc_http_header *hd = mc_alloc((o->nerror_headers + 1) * sizeof *hd);
	if (o->nerror_headers)
		memcpy(hd, o->error_headers, o->nerror_headers * sizeof *hd);
	hd[o->nerror_headers] = (mc_http_header){"Content-Type", 12, "application/json", 16};
	submit_response(st, status, hd, o->nerror_headers + 1, st->out.len, 1, 1);
	free(hd);
	if (o->on_reject)
		o->on_reject(h->host.ctx, status);
	if (!h->in_cb)
		h2_flush(h);
}

/* Gives st's max_inflight slot back (while the connection is there to take it). */
static void inflight_drop(stream *st)
{
	if (!st->inflight)
		return;
	st->inflight = 0;
	if (st->h->attached && st->h->host.inflight_drop)
		st->h->host.inflight_drop(st->h->host.conn);
}

int mc_http_h2_respond(mc_http_exchange *ex, int status, const mc_http_header *headers,
		       size_t nheaders, const void *body, size_t body_len)
{
	stream *st = ex->h2;
	mc_http_h2 *h = st->h;
	MC_ASSERT(st->ex_active && !st->answered);
	if (stream_gone(st)) {
		exchange_release(st);
		return MC_ECLOSED;
	}
	st->ex_active = 0;
	ex->userdata = NULL;
	ex->watch = NULL;
	ex->watch_arg = NULL;
	h->handlers--;
	inflight_drop(st);
	if (status < 200 || status > 999) {
		MC_WARN("http", "handler answered with status %d; sending 500", status);
		status = 500;
		body_len = 0;
	}
	int bodyless = status == 204 || status == 304;
	mc_buf_reset(&st->out);
	st->out_off = 0;
	if (!bodyless && !st->head_req && body_len > 0)
		mc_buf_append(&st->out, body, body_len);
	/* as over HTTP/1.1: a HEAD answer announces the length a GET would have */
	uint64_t announced = body_len;
	size_t cl_len;
	const char *cl =
	    st->head_req ? mc_http_header_find(headers, nheaders, "content-length", &cl_len) : NULL;
	if (cl && mc_parse_u64(cl, cl_len, UINT64_MAX, &announced) != 0)
		announced = body_len;
	int rc =
	    submit_response(st, status, headers, nheaders, announced, !bodyless, st->out.len > 0);
	h->last_ns = mc_now_ns();
	if (!h->in_cb)
		h2_flush(h);
	return rc;
}

/* Ends the handler's hold on the exchange: the stream goes once nghttp2 is done. */
static void exchange_release(stream *st)
{
	mc_http_h2 *h = st->h;
	st->ex_active = 0;
	st->ex.userdata = NULL;
	st->ex.watch = NULL;
	st->ex.watch_arg = NULL;
	h->handlers--;
	inflight_drop(st);
	if (!st->ng_open)
		stream_free(st);
}

static int stream_gone(const stream *st)
{
	return !st->h->attached || !st->ng_open;
}

int mc_http_h2_start_response(mc_http_exchange *ex, int status, const mc_http_header *headers,
			      size_t nheaders)
{
	stream *st = ex->h2;
	mc_http_h2 *h = st->h;
	MC_ASSERT(st->ex_active && !st->answered);
	if (stream_gone(st)) {
		st->answered = 1;
		return MC_ECLOSED;
	}
	if (status < 200 || status > 999)
		status = 500;
	size_t cl_len;
	uint64_t cl_val = 0;
	const char *cl = mc_http_header_find(headers, nheaders, "content-length", &cl_len);
	int with_length = cl && mc_parse_u64(cl, cl_len, UINT64_MAX, &cl_val) == 0;
	int bodyless = st->head_req || status == 204 || status == 304;
	mc_buf_reset(&st->out);
	st->out_off = 0;
	int rc = submit_response(st, status, headers, nheaders, cl_val,
				 with_length && status != 204, !bodyless);
	st->resp_eof = bodyless; /* the body follows through write_body / end */
	h->last_ns = mc_now_ns();
	if (!h->in_cb)
		h2_flush(h);
	return rc;
}

int mc_http_h2_write_body(mc_http_exchange *ex, const void *data, size_t len)
{
	stream *st = ex->h2;
	mc_http_h2 *h = st->h;
	MC_ASSERT(st->ex_active && st->answered);
	if (stream_gone(st))
		return MC_ECLOSED;
	if (len == 0 || st->resp_eof)
		return 0;
	if (st->out_off > 0 && st->out_off == st->out.len) {
		mc_buf_reset(&st->out);
		st->out_off = 0;
	} else if (st->out_off > MC_HTTP_KEEP_BUF) {
		mc_buf_consume(&st->out, st->out_off); /* framed already */
		st->out_off = 0;
	}
	mc_buf_append(&st->out, data, len);
	st->drain_armed = 1;
	nghttp2_session_resume_data(h->ng, st->id);
	if (!h->in_cb)
		h2_flush(h);
	return 0;
}

int mc_http_h2_end_response(mc_http_exchange *ex, int complete)
{
	stream *st = ex->h2;
	mc_http_h2 *h = st->h;
	MC_ASSERT(st->ex_active);
	int rc = 0;
	if (stream_gone(st)) {
		rc = MC_ECLOSED;
	} else if (!complete || !st->answered) { /* ended without a start: nothing was sent */
		nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
	} else if (!st->resp_eof) {
		st->resp_eof = 1;
		nghttp2_session_resume_data(h->ng, st->id);
	}
	int flush = !stream_gone(st) && !h->in_cb;
	h->refs++;
	exchange_release(st);
	if (flush)
		h2_flush(h);
	h2_unref(h);
	return rc;
}

size_t mc_http_h2_pending(const mc_http_exchange *ex)
{
	const stream *st = ex->h2;
	return st->out.len - st->out_off;
}

/* ---- requests ------------------------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
	mc_http_h2 *h = user;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/* A reset stream leaves nghttp2's count at once, but its handler may still
	 * be working: bound those too, or a client could reset streams as fast as
	 * it opens them and pile up work (rapid reset). */
	if (h->handlers >= h->host.h2.max_concurrent_streams || h->draining) {
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
					  NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	const mc_http_server_opts *o = h->host.opts;
	stream *st = mc_calloc(1, sizeof *st);
	st->h = h;
	st->id = frame->hd.stream_id;
	st->ex.h2 = st;
	st->ng_open = 1;
	st->start_ns = mc_now_ns();
	mc_http_head_init(&st->head, o->max_header_bytes, o->max_headers);
	mc_buf_init(&st->body);
	mc_buf_init(&st->cookie);
	mc_buf_init(&st->authority);
	mc_buf_init(&st->out);
	mc_http_list_push_back(&h->streams, &st->link);
	h->refs++;
	nghttp2_session_set_stream_user_data(ng, st->id, st);
	return 0;
}

static void limit_exceeded(stream *st)
{
	if (st->err_status)
		return;
	const mc_http_server_opts *o = st->h->host.opts;
	st->err_status = 431;
	snprintf(st->err_code, sizeof st->err_code, "request_header_fields_too_large");
	if (st->head.over == MC_HTTP_HEAD_TOO_MANY)
		snprintf(st->err_msg, sizeof st->err_msg, "more than %zu header fields",
			 o->max_headers);
	else
		snprintf(st->err_msg, sizeof st->err_msg, "request head exceeds %zu bytes",
			 o->max_header_bytes);
}

/* Adds one field to the head; the name is lower case already (nghttp2 checks). */
static void head_add(stream *st, const char *name, size_t nlen, const char *value, size_t vlen)
{
	mc_http_head *hd = &st->head;
	if (mc_http_head_field(hd, name, nlen) < 0 || mc_http_head_field_done(hd) < 0 ||
	    mc_http_head_value(hd, value, vlen) < 0 || mc_http_head_value_done(hd) < 0)
		limit_exceeded(st);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
		     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	(void)flags;
	(void)user;
	stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (!st || st->err_status)
		return 0;
	const char *n = (const char *)name, *v = (const char *)value;
	if (st->head_done) { /* trailers: counted against the head limit, not kept */
		if (mc_http_head_field(&st->head, n, nlen) < 0 ||
		    mc_http_head_value(&st->head, v, vlen) < 0)
			limit_exceeded(st);
		return 0;
	}
	if (nlen > 0 && n[0] == ':') {
		if (mc_http_token_eq(n, nlen, ":method")) {
			if (vlen >= METHOD_MAX) {
				st->err_status = 501;
				snprintf(st->err_code, sizeof st->err_code, "not_implemented");
				snprintf(st->err_msg, sizeof st->err_msg, "unknown method");
				return 0;
			}
			memcpy(st->method, v, vlen);
			st->method[vlen] = '\0';
		} else if (mc_http_token_eq(n, nlen, ":path")) {
			/* pseudo-headers come first (nghttp2 enforces it): the target is
			 * the first thing in the head's arena, as llhttp's would be */
			if (mc_http_head_url(&st->head, v, vlen) < 0)
				limit_exceeded(st);
			st->got_path = 1;
		} else if (mc_http_token_eq(n, nlen, ":authority")) {
			st->head.bytes += vlen;
			if (st->head.bytes > st->head.max_bytes) {
				st->head.over = MC_HTTP_HEAD_TOO_BIG;
				limit_exceeded(st);
				return 0;
			}
			mc_buf_reset(&st->authority);
			mc_buf_append(&st->authority, v, vlen);
		}
		return 0; /* :scheme needs no mapping */
	}
	if (mc_http_token_eq(n, nlen, "cookie")) {
		st->head.bytes += vlen + 2;
		if (st->head.bytes > st->head.max_bytes) {
			st->head.over = MC_HTTP_HEAD_TOO_BIG;
			limit_exceeded(st);
			return 0;
		}
		if (st->cookie.len)
			mc_buf_append(&st->cookie, "; ", 2);
		mc_buf_append(&st->cookie, v, vlen);
		return 0;
	}
	if (mc_http_token_eq(n, nlen, "host"))
		st->has_host = 1;
	head_add(st, n, nlen, v, vlen);
	return 0;
}

/* The request head is complete: finish it the way the HTTP/1.1 parser does. */
static void finish_head(stream *st)
{
	const mc_http_server_opts *o = st->h->host.opts;
	st->head_done = 1;
	if (st->err_status)
		return;
	if (!st->got_path) { /* CONNECT (RFC 9113 8.5): no tunnels here */
		st->err_status = 501;
		snprintf(st->err_code, sizeof st->err_code, "not_implemented");
		snprintf(st->err_msg, sizeof st->err_msg, "method %s is not supported", st->method);
		return;
	}
	if (!st->has_host && st->authority.len)
		head_add(st, "host", 4, st->authority.data, st->authority.len);
	if (st->cookie.len)
		head_add(st, "cookie", 6, st->cookie.data, st->cookie.len);
	if (st->err_status)
		return;
	mc_http_head_finish(&st->head, 1);
	st->body_limit = o->max_body_bytes;
	if (o->body_limit)
		st->body_limit = o->body_limit(st->h->host.ctx, st->method,
					       st->head.arena.data + st->head.path_off,
					       st->head.path_len);
	size_t cl_len;
	const char *cl =
	    mc_http_header_find(st->head.hdrs, st->head.nspans, "content-length", &cl_len);
	uint64_t declared;
	if (cl && mc_parse_u64(cl, cl_len, UINT64_MAX, &declared) == 0) {
		if (declared > st->body_limit) {
			st->err_status = 413;
			snprintf(st->err_code, sizeof st->err_code, "payload_too_large");
			snprintf(st->err_msg, sizeof st->err_msg, "request body exceeds %zu bytes",
				 st->body_limit);
			return;
		}
		mc_buf_reserve(&st->body, (size_t)declared);
	}
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *user)
{
	(void)flags;
	mc_http_h2 *h = user;
	stream *st = nghttp2_session_get_stream_user_data(ng, id);
	if (!st || st->err_status || st->answered)
		return 0; /* discarded; nghttp2 still returns the flow-control credit */
	(void)h;
	if (len > st->body_limit - st->body.len) {
		st->err_status = 413;
		snprintf(st->err_code, sizeof st->err_code, "payload_too_large");
		snprintf(st->err_msg, sizeof st->err_msg, "request body exceeds %zu bytes",
			 st->body_limit);
		stream_error(st, st->err_status, st->err_code, st->err_msg);
		return 0;
	}
	mc_buf_append(&st->body, data, len);
	return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
	mc_http_h2 *h = user;
	h->last_ns = mc_now_ns();
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (!st)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
		finish_head(st);
	if (st->err_status) {
		stream_error(st, st->err_status, st->err_code, st->err_msg);
		return 0;
	}
	if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->answered) {
		st->req_done = 1;
		st->ready = 1; /* dispatched once nghttp2 returned (see mc_http_h2_recv) */
	}
	return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
	mc_http_h2 *h = user;
	h->last_ns = mc_now_ns();
	if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	/* A response sent before its request ended (413, 431, ...): tell the client
	 * to stop sending the rest (RFC 9113 8.1). */
	stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (st && !st->req_done && st->ng_open)
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user)
{
	(void)ng;
	(void)error_code;
	mc_http_h2 *h = user;
	stream *st = stream_of(h, id);
	if (!st)
		return 0;
	nghttp2_session_set_stream_user_data(h->ng, id, NULL);
	st->ng_open = 0;
	st->ready = 0;
	if (!st->ex_active)
		stream_free(st);
	return 0;
}

/* Hands every complete request to the handler, in arrival order. */
static void dispatch_ready(mc_http_h2 *h)
{
	mc_http_link *l = h->streams.next;
	while (h->attached && l != &h->streams) {
		stream *st = MC_HTTP_CONTAINER(l, stream, link);
		if (!st->ready) {
			l = l->next;
			continue;
		}
		st->ready = 0;
		/* streams count against limits.max_inflight like HTTP/1.1 requests */
		if (h->host.inflight_take) {
			if (h->host.inflight_take(h->host.conn) < 0) {
				char msg[96];
				snprintf(msg, sizeof msg, "more than %zu requests in flight",
					 h->host.opts->max_inflight);
				stream_error(st, 503, "overloaded", msg);
				l = l->next;
				continue;
			}
			st->inflight = 1;
		}
		st->dispatched = 1;
		mc_http_request *r = &st->ex.req;
		mc_http_head *hd = &st->head;
		r->method = st->method;
		r->target = hd->arena.data + hd->url_off;
		r->path = hd->arena.data + hd->path_off;
		r->path_len = hd->path_len;
		const char *q = memchr(r->target, '?', hd->url_len);
		r->query = q ? q + 1 : "";
		r->headers = hd->hdrs;
		r->nheaders = hd->nspans;
		r->body = st->body.len ? st->body.data : NULL;
		r->body_len = st->body.len;
		r->keep_alive = !h->draining;
		r->secure = 1; /* HTTP/2 only over TLS here (ALPN h2) */
		r->start_ns = st->start_ns;
		snprintf(r->peer, sizeof r->peer, "%s", h->host.peer);
		st->head_req = strcmp(st->method, "HEAD") == 0;
		st->ex.userdata = NULL;
		st->ex.c = NULL;
		st->ex_active = 1;
		h->handlers++;
		/* the handler may answer at once, or even free the server (then the
		 * session is detached and the walk stops): step past it first */
		l = l->next;
		h->host.handler(h->host.ctx, &st->ex);
	}
}

/* ---- output and timers ------------------------------------------------------------- */

static void h2_schedule(mc_http_h2 *h)
{
	if (!h->attached)
		return;
	const mc_http_server_opts *o = h->host.opts;
	uint64_t now = mc_now_ns(), due = UINT64_MAX;
	int busy = 0;
	for (mc_http_link *l = h->streams.next; l != &h->streams; l = l->next) {
		stream *st = MC_HTTP_CONTAINER(l, stream, link);
		busy = 1;
		if (!st->req_done && !st->answered && !st->dispatched)
			due =
			    MC_MIN(due, st->start_ns + (uint64_t)o->request_timeout_ms * 1000000u);
	}
	if (!busy && h->handlers == 0)
		due = MC_MIN(due, h->last_ns + (uint64_t)o->idle_timeout_ms * 1000000u);
	if (h->writing)
		due = MC_MIN(due, h->write_start_ns + (uint64_t)o->idle_timeout_ms * 1000000u);
	if (due == UINT64_MAX) {
		h->host.arm(h->host.conn, 0);
		return;
	}
	uint64_t ms = due > now ? (due - now + 999999u) / 1000000u : 1;
	h->host.arm(h->host.conn, (uint32_t)MC_MIN(ms, (uint64_t)UINT32_MAX));
}

/* Closes the connection once nghttp2 has nothing left to read or write. */
static void h2_check_end(mc_http_h2 *h)
{
	if (!h->attached || h->writing || h->ending)
		return;
	if (nghttp2_session_want_read(h->ng) || nghttp2_session_want_write(h->ng))
		return;
	h->ending = 1;
	h->host.close(h->host.conn, 1);
}

static void on_write_done(uv_write_t *req, int status)
{
	mc_http_h2 *h = req->data;
	h->writing = 0;
	if (!h->attached)
		return;
	h->refs++;
	if (status < 0)
		h->host.close(h->host.conn, 0);
	else
		h2_flush(h);
	fire_watch_events(h);
	h2_unref(h);
}

/* Sends what nghttp2 has queued, one TLS write in flight at a time. */
static void h2_flush(mc_http_h2 *h)
{
	if (!h->attached || h->in_cb)
		return;
	if (!h->writing) {
		mc_buf_reset(&h->wbuf);
		while (h->wbuf.len < WRITE_CHUNK) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(h->ng, &data);
			if (n < 0) {
				MC_DEBUG("http", "h2 %s: send failed: %s", h->host.peer,
					 nghttp2_strerror((int)n));
				h->host.close(h->host.conn, 0);
				return;
			}
			if (n == 0)
				break;
			mc_buf_append(&h->wbuf, data, (size_t)n);
		}
		if (h->wbuf.len > 0) {
			uv_buf_t b = uv_buf_init(h->wbuf.data, (unsigned)h->wbuf.len);
			h->wreq.data = h;
			if (mc_tls_stream_write(h->host.tls, &h->wreq, &b, 1, on_write_done) < 0) {
				h->host.close(h->host.conn, 0);
				return;
			}
			h->writing = 1;
			h->write_start_ns = mc_now_ns();
			if (h->wbuf.cap > MC_HTTP_KEEP_BUF)
				mc_buf_fini(&h->wbuf); /* encrypted already */
		}
	}
	h2_check_end(h);
	h2_schedule(h);
}

void mc_http_h2_recv(mc_http_h2 *h, const char *data, size_t n)
{
	if (!h->attached || h->ending)
		return;
	h->refs++;
	h->in_cb = 1;
	ssize_t r = nghttp2_session_mem_recv(h->ng, (const uint8_t *)data, n);
	if (r < 0) {
		/* protocol errors are answered with GOAWAY inside nghttp2; what comes
		 * out here is fatal (bad preface, flooding, out of memory) */
		MC_DEBUG("http", "h2 %s: %s", h->host.peer, nghttp2_strerror((int)r));
		h->in_cb = 0;
		h->host.close(h->host.conn, 0);
		h2_unref(h);
		return;
	}
	/* the handler may answer at once: frames go out after the whole batch */
	dispatch_ready(h);
	h->in_cb = 0;
	h2_flush(h);
	fire_watch_events(h); /* streams the client reset, output drained */
	h2_unref(h);
}

mc_http_h2 *mc_http_h2_hold(mc_http_h2 *h)
{
	h->refs++;
	return h;
}

void mc_http_h2_release_notify(mc_http_h2 *h)
{
	fire_watch_events(h);
	h2_unref(h);
}

void mc_http_h2_timer(mc_http_h2 *h)
{
	if (!h->attached)
		return;
	const mc_http_server_opts *o = h->host.opts;
	uint64_t now = mc_now_ns();
	h->refs++;
	if (h->writing && now >= h->write_start_ns + (uint64_t)o->idle_timeout_ms * 1000000u) {
		h->host.close(h->host.conn, 0); /* the client stopped reading */
		h2_unref(h);
		return;
	}
	int busy = 0;
	h->in_cb = 1; /* no frame leaves (and no stream closes) during the walk */
	for (mc_http_link *l = h->streams.next; l != &h->streams;) {
		stream *st = MC_HTTP_CONTAINER(l, stream, link);
		l = l->next;
		busy = 1;
		if (!st->req_done && !st->answered && !st->dispatched &&
		    now >= st->start_ns + (uint64_t)o->request_timeout_ms * 1000000u) {
			char msg[96];
			snprintf(msg, sizeof msg, "request not received within %u ms",
				 (unsigned)o->request_timeout_ms);
			stream_error(st, 408, "request_timeout", msg);
		}
	}
	h->in_cb = 0;
	if (!busy && h->handlers == 0 &&
	    now >= h->last_ns + (uint64_t)o->idle_timeout_ms * 1000000u)
		nghttp2_session_terminate_session(h->ng, NGHTTP2_NO_ERROR); /* idle: GOAWAY */
	h2_flush(h);
	h2_unref(h);
}

void mc_http_h2_drain(mc_http_h2 *h)
{
	if (!h->attached || h->draining)
		return;
	h->draining = 1;
	/* after a GOAWAY nghttp2 stops wanting to read once the open streams ended;
	 * h2_check_end closes the connection then */
	nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(h->ng), NGHTTP2_NO_ERROR,
			      NULL, 0);
	h2_flush(h);
}

void mc_http_h2_detach(mc_http_h2 *h)
{
	if (!h || !h->attached)
		return;
	/* the connection's slots go with it, as an HTTP/1.1 connection's */
	for (mc_http_link *l = h->streams.next; l != &h->streams; l = l->next)
		inflight_drop(MC_HTTP_CONTAINER(l, stream, link));
	h->attached = 0;
	/* streams nobody waits for go now; the others when their handler answers */
	for (mc_http_link *l = h->streams.next; l != &h->streams;) {
		stream *st = MC_HTTP_CONTAINER(l, stream, link);
		l = l->next;
		st->ng_open = 0;
		st->ready = 0;
		if (!st->ex_active)
			stream_free(st);
	}
	h2_unref(h);
}

/* ---- setup ----------------------------------------------------------------------------- */

int mc_http_h2_new(mc_http_h2 **out, const mc_http_h2_host *host)
{
	*out = NULL;
	mc_http_h2 *h = mc_calloc(1, sizeof *h);
	h->host = *host;
	if (!h->host.h2.max_concurrent_streams)
		h->host.h2.max_concurrent_streams = 100;
	if (!h->host.h2.initial_window_size)
		h->host.h2.initial_window_size = NGHTTP2_INITIAL_WINDOW_SIZE;
	if (!h->host.h2.connection_window_size)
		h->host.h2.connection_window_size = 1u << 20;
	mc_http_list_init(&h->streams);
	mc_buf_init(&h->wbuf);
	h->refs = 1;
	h->attached = 1;
	h->last_ns = mc_now_ns();

	nghttp2_session_callbacks *cb = NULL;
	nghttp2_option *opt = NULL;
	int rc = MC_ENOMEM;
	if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
		goto out;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_option_set_stream_reset_rate_limit(opt, RST_BURST, RST_RATE);
	nghttp2_option_set_max_continuations(opt, MAX_CONTINUATIONS);
	nghttp2_option_set_no_closed_streams(opt, 1);
	if (nghttp2_session_server_new2(&h->ng, cb, h, opt) != 0)
		goto out;
	const mc_http_server_opts *o = host->opts;
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h->host.h2.max_concurrent_streams},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, h->host.h2.initial_window_size},
	    /* advisory; the head limits are enforced as for HTTP/1.1 (431) */
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
	     (uint32_t)MC_MIN((uint64_t)o->max_header_bytes + 32u * o->max_headers,
			      (uint64_t)UINT32_MAX)},
	    {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
	};
	if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, MC_ARRAY_LEN(iv)) != 0 ||
	    nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0,
						  (int32_t)h->host.h2.connection_window_size) != 0)
		goto out;
	rc = 0;
out:
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	if (rc < 0) {
		nghttp2_session_del(h->ng);
		free(h);
		return rc;
	}
	*out = h;
	h2_flush(h);
	return 0;
}
