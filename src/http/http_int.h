/* Private declarations shared by the HTTP/1.1 server and client: an intrusive
 * list, the per-message head accumulator that llhttp callbacks fill, and small
 * formatting helpers. Not part of the public API. */
#ifndef MC_HTTP_INT_H
#define MC_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "http/http.h"

/* ---- intrusive doubly linked list (circular, with a sentinel head) -------------- */
typedef struct mc_http_link {
	struct mc_http_link *prev;
	struct mc_http_link *next;
} mc_http_link;

#define MC_HTTP_CONTAINER(ptr, type, member)                                                       \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void mc_http_list_init(mc_http_link *h)
{
	h->prev = h->next = h;
}
static inline int mc_http_list_empty(const mc_http_link *h)
{
	return h->next == h;
}
static inline void mc_http_list_insert_before(mc_http_link *pos, mc_http_link *l)
{
	l->next = pos;
	l->prev = pos->prev;
	pos->prev->next = l;
	pos->prev = l;
}
/* Appends l at the tail of list h. */
static inline void mc_http_list_push_back(mc_http_link *h, mc_http_link *l)
{
	mc_http_list_insert_before(h, l);
}
/* Inserts l at the head of list h. */
static inline void mc_http_list_push_front(mc_http_link *h, mc_http_link *l)
{
	mc_http_list_insert_before(h->next, l);
}
/* Unlinks l (which must be linked) and leaves it self-linked. */
static inline void mc_http_list_remove(mc_http_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = l;
}

/* ---- message head accumulator ---------------------------------------------------
 * Collects the target and the header fields of one message as llhttp hands them
 * over in pieces, into one arena reused from message to message. Offsets are kept
 * while the arena may still grow; mc_http_head_finish() turns them into the
 * pointer array once the head is complete. */
typedef struct mc_http_hspan {
	uint32_t name_off, name_len, value_off, value_len;
} mc_http_hspan;

enum { MC_HTTP_HEAD_OK = 0, MC_HTTP_HEAD_TOO_BIG = 1, MC_HTTP_HEAD_TOO_MANY = 2 };

typedef struct mc_http_head {
	mc_buf arena; /* target, names and values, each NUL terminated */
	mc_http_hspan *spans;
	size_t nspans, spans_cap;
	mc_http_header *hdrs; /* valid after mc_http_head_finish() */
	size_t hdrs_cap;
	size_t bytes; /* target + names + values seen, trailers included */
	size_t max_bytes, max_headers;
	uint32_t url_off, url_len; /* url_off is always 0 */
	uint32_t path_off, path_len;
	uint8_t field_open, value_open, url_open, done;
	int over; /* MC_HTTP_HEAD_* once a limit was passed */
} mc_http_head;

/* Sets limits; the arena starts empty. */
void mc_http_head_init(mc_http_head *h, size_t max_bytes, size_t max_headers);
/* Releases every buffer. Accepts a zeroed struct. */
void mc_http_head_fini(mc_http_head *h);
/* Forgets the previous message, keeping modest buffers for reuse. */
void mc_http_head_reset(mc_http_head *h);
/* Feed functions: return 0, or -1 once a limit is passed (h->over says which).
 * Pieces arriving after mc_http_head_finish() are trailers: counted, not kept. */
int mc_http_head_url(mc_http_head *h, const char *at, size_t n);
int mc_http_head_field(mc_http_head *h, const char *at, size_t n);
int mc_http_head_field_done(mc_http_head *h);
int mc_http_head_value(mc_http_head *h, const char *at, size_t n);
int mc_http_head_value_done(mc_http_head *h);
/* Terminates the target, adds the path copy when with_path, and builds hdrs.
 * After this the arena no longer moves until the next reset. */
void mc_http_head_finish(mc_http_head *h, int with_path);

/* Case-insensitive comparison of n bytes of a with the NUL-terminated b
 * (equal only when b has exactly n bytes). */
int mc_http_token_eq(const char *a, size_t n, const char *b);
/* Appends the decimal form of v. */
void mc_http_buf_u64(mc_buf *b, uint64_t v);
/* uv_try_write() for one buffer on a TCP handle, with send(MSG_NOSIGNAL):
 * cheaper in the kernel than write()/writev() (no file-position and VFS
 * layer), and a peer that is gone gives EPIPE, never SIGPIPE. Returns the bytes
 * written, UV_EAGAIN (nothing written: the socket is full, or libuv has writes
 * queued on t, which must go first) or a negative libuv error. */
int mc_http_try_send(uv_tcp_t *t, const char *p, size_t n);
/* 1 when s[0..n) is an RFC 9110 token (a valid field name or method). */
int mc_http_token_valid(const char *s, size_t n);
/* 1 when the n bytes contain no CR, LF or NUL (safe to put in a header line). */
int mc_http_field_safe(const char *s, size_t n);
/* The same, and no ':' either (safe as a header name). */
int mc_http_name_safe(const char *s, size_t n);

/* ---- exchanges and HTTP/2 (src/http/h2.c) ------------------------------------------
 * One request/response exchange whatever the transport: the current request of
 * an HTTP/1.1 connection (c) or one HTTP/2 stream (h2). */
struct conn;
struct mc_http_h2_stream;

struct mc_http_exchange {
	struct conn *c; /* HTTP/1.1; NULL for an HTTP/2 stream */
	mc_http_request req;
	void *userdata;
	struct mc_http_h2_stream *h2; /* HTTP/2; NULL for HTTP/1.1 */
	void (*watch)(void *arg, int event); /* mc_http_exchange_watch() */
	void *watch_arg;
};

typedef struct mc_http_h2 mc_http_h2;

/* What the connection that owns an HTTP/2 session lends it. */
typedef struct mc_http_h2_host {
	void *conn;		/* passed back to the callbacks */
	mc_tls_stream *tls;	/* where the frames go */
	const mc_http_server_opts *opts; /* limits, error headers, on_reject */
	mc_http_h2_opts h2;
	mc_http_handler handler;
	void *ctx;
	const char *peer;
	/* (Re)arms the connection's timer to call mc_http_h2_timer() after ms;
	 * 0 stops it. */
	void (*arm)(void *conn, uint32_t ms);
	/* The session is over: graceful (close_notify, then close) or at once. */
	void (*close)(void *conn, int graceful);
	/* A request goes to the handler: takes one of the server's max_inflight
	 * slots (0), or -1 when none is free (the stream gets 503). Optional. */
	int (*inflight_take)(void *conn);
	/* Gives the slot back: the handler answered, or the connection is gone. */
	void (*inflight_drop)(void *conn);
} mc_http_h2_host;

/* Starts a server session (sends SETTINGS). Returns 0 or MC_ENOMEM. */
int mc_http_h2_new(mc_http_h2 **out, const mc_http_h2_host *host);
/* Feeds received plaintext; may call the handler and the host's callbacks. */
void mc_http_h2_recv(mc_http_h2 *h, const char *data, size_t n);
/* The host's timer fired. */
void mc_http_h2_timer(mc_http_h2 *h);
/* Graceful stop: GOAWAY, no new streams, close once the open ones finished. */
void mc_http_h2_drain(mc_http_h2 *h);
/* The connection is gone: no more I/O or host callbacks. Exchanges still with
 * the handler stay valid; answering them returns MC_ECLOSED. Releases the
 * session once none is left. */
void mc_http_h2_detach(mc_http_h2 *h);
/* Keeps h alive across a close of its connection (mc_http_h2_detach), after
 * which mc_http_h2_release_notify() tells the handlers that watch their exchange
 * that it is gone (MC_HTTP_EX_CLOSED) and drops the hold. For loop events only. */
mc_http_h2 *mc_http_h2_hold(mc_http_h2 *h);
void mc_http_h2_release_notify(mc_http_h2 *h);
/* mc_http_respond() for an exchange with ex->h2 set. */
int mc_http_h2_respond(mc_http_exchange *ex, int status, const mc_http_header *headers,
		       size_t nheaders, const void *body, size_t body_len);
/* A response whose body is produced piece by piece (the HTTP/2 side of a
 * streaming response API). start sends status and headers (a numeric
 * Content-Length among them is kept and must then be honoured); write_body
 * queues a copy of the bytes and frames them as the flow-control window
 * allows; end finishes the body (complete = 1) or, complete = 0, resets the
 * stream so the client sees the truncation, and releases the exchange. start
 * and write_body return 0 or MC_ECLOSED (the client went away; call end
 * anyway); end returns the same. */
int mc_http_h2_start_response(mc_http_exchange *ex, int status, const mc_http_header *headers,
			      size_t nheaders);
int mc_http_h2_write_body(mc_http_exchange *ex, const void *data, size_t len);
int mc_http_h2_end_response(mc_http_exchange *ex, int complete);
/* Response bytes queued on the stream and not yet framed (for backpressure). */
size_t mc_http_h2_pending(const mc_http_exchange *ex);

/* A plain TCP connection read without libuv's stream reader (sockread.c): a
 * second descriptor of the socket watched by a uv_poll handle, read with
 * recv() into the owner's alloc_cb buffer and delivered to its read_cb as
 * libuv would (bytes, UV_EOF or an error; never 0), registered edge-triggered
 * once drained. Writes, shutdown and close stay with the uv_tcp_t. fd is -1
 * when it is not in use (the connection then reads with uv_read_start). */
typedef struct mc_http_rd {
	uv_poll_t poll;
	uv_tcp_t *tcp; /* passed to the callbacks, as libuv's reader would */
	uv_alloc_cb alloc_cb;
	uv_read_cb read_cb;
	int fd;
	uint8_t active, et;
} mc_http_rd;

/* send(fd, p, n, MSG_NOSIGNAL) and recv(fd, p, n, 0) without glibc's
 * cancellation-point wrapper (util.c). */
ssize_t mc_http_sys_send(int fd, const void *p, size_t n);
ssize_t mc_http_sys_recv(int fd, void *p, size_t n);

/* The descriptor bound for mc_http_rd_init: half of RLIMIT_NOFILE. */
int mc_http_rd_fd_cap(void);
/* Sets rd up for tcp (connected or accepted; its data is the owner, and the
 * poll handle's data too); 0, or -1 when it cannot be used (no descriptor
 * below fd_cap; rd->fd stays -1). On 0 it is a handle to close. */
int mc_http_rd_init(mc_http_rd *rd, uv_loop_t *loop, uv_tcp_t *tcp, int fd_cap);
/* uv_read_start / uv_read_stop for rd; start returns 0 or a uv error. */
int mc_http_rd_start(mc_http_rd *rd, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
void mc_http_rd_stop(mc_http_rd *rd);
/* Closes the poll handle (cb as for uv_close) and the second descriptor; call
 * before closing tcp, so that its close (or reset) ends the socket. */
void mc_http_rd_close(mc_http_rd *rd, uv_close_cb cb);

/* Buffers larger than this are freed after a message instead of kept. */
#define MC_HTTP_KEEP_BUF (64u * 1024u)
/* Size of the shared read buffer per server or pool. */
#define MC_HTTP_SLAB (64u * 1024u)

#endif
