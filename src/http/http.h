/* HTTP/1.1 server and client on libuv. The only module that includes llhttp; the
 * rest of Metrocell sees the request/response types below. Request bodies are
 * buffered whole, bounded by the limits in the options; responses are either
 * buffered (bounded) or streamed in both directions (server: start/write/end,
 * client: mc_http_pool_call). */
#ifndef MC_HTTP_H
#define MC_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/common.h"
#include "net/net.h"
#include "net/tls.h"
#include "obs/obs.h"

typedef struct mc_http_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
} mc_http_header;

/* Returns the value of the first header named name (case-insensitive) or NULL;
 * *len receives its length. */
const char *mc_http_header_find(const mc_http_header *h, size_t n, const char *name, size_t *len);

/* ---- server -------------------------------------------------------------------- */

/* A parsed request. Every pointer stays valid until the exchange is answered. */
typedef struct mc_http_request {
	const char *method; /* "GET", "PUT", ... NUL terminated */
	const char *target; /* request target in origin form ("/p?q"; an absolute-form
			     * target naming the Host is reduced to it), NUL terminated */
	const char *path;   /* target up to '?', NUL terminated, not decoded */
	size_t path_len;
	const char *query; /* after '?' (NUL terminated, "" when absent) */
	const mc_http_header *headers;
	size_t nheaders;
	const char *body; /* NULL when empty */
	size_t body_len;
	int keep_alive;     /* client wants the connection kept */
	int secure;         /* it came over TLS (HTTP/1.1 on the TLS listener, or HTTP/2) */
	uint64_t start_ns;  /* mc_now_ns() when the first byte of the request arrived */
	char peer[64];      /* "ip:port" of the client */
} mc_http_request;

typedef struct mc_http_exchange mc_http_exchange;

/* Called on the server's loop thread for each complete request. The handler
 * must answer it exactly once with mc_http_respond(), now or later from the same
 * loop thread, even when the client has gone away meanwhile (then the answer is
 * dropped and the exchange freed). Requests on one connection are answered in
 * order (pipelining is honoured). */
typedef void (*mc_http_handler)(void *ctx, mc_http_exchange *ex);

const mc_http_request *mc_http_exchange_request(const mc_http_exchange *ex);
/* The clock of the loop iteration that runs now: mc_now_ns() read the first
 * time it is asked for after the loop's poll returned, then the same value for
 * the rest of the iteration (an HTTP/2 exchange reads the clock). For the time
 * an event arrived, such as a response from an upstream: it was there when the
 * poll returned, and one clock read serves every event of the iteration. */
uint64_t mc_http_exchange_now_ns(const mc_http_exchange *ex);
/* Per-exchange slot the handler may use; NULL initially. */
void **mc_http_exchange_userdata(mc_http_exchange *ex);

/* Sends the whole response at once (or see the streamed responses below):
 * status line, the given headers, Content-Length, Date-less,
 * Connection: keep-alive/close as negotiated, then body (copied). Frees the
 * exchange. Returns 0, or MC_ECLOSED when the client was gone (still freed).
 * Content-Length is always body_len, except on the answer to a HEAD, where a
 * numeric Content-Length among headers (the length a GET would have) wins. */
int mc_http_respond(mc_http_exchange *ex, int status, const mc_http_header *headers,
		    size_t nheaders, const void *body, size_t body_len);

/* mc_http_respond() for a response whose stored header fields are already
 * rendered: raw[0..raw_len) is a block of complete field lines ("Name: value\r\n"
 * each) that the caller checked once when it built them (names RFC 9110 tokens
 * other than Content-Length, Connection, Transfer-Encoding and Keep-Alive; values
 * without CR, LF or NUL); it is sent as is, after headers[0..nheaders), which
 * are checked as usual. body is borrowed for the call only, like raw: on a plain
 * HTTP/1.1 connection the head and the body leave in one write straight from the
 * caller's memory when the socket takes them at once, and only what it does not
 * take is copied. Same answer semantics and return values as mc_http_respond
 * (HTTP/2 gets the block's fields one by one, checked there). */
int mc_http_respond_raw(mc_http_exchange *ex, int status, const mc_http_header *headers,
			size_t nheaders, const char *raw, size_t raw_len, const void *body,
			size_t body_len);

/* mc_http_respond() with the caller's own headers trusted[0..ntrusted) sent
 * first, as they are: the per-byte checks and the reserved-name filter that
 * headers[] gets are skipped for them. Only for fields the caller built itself
 * from known-safe parts (constant names; values it formatted, or checked when
 * they entered the process, like config names), never for a peer's. raw (may be
 * NULL with raw_len 0) is a pre-rendered block as for mc_http_respond_raw(),
 * sent after headers[]. */
int mc_http_respond_trusted(mc_http_exchange *ex, int status, const mc_http_header *trusted,
			    size_t ntrusted, const mc_http_header *headers, size_t nheaders,
			    const char *raw, size_t raw_len, const void *body, size_t body_len);

/* Writes the decimal form of v at p (at most 20 bytes, no NUL); returns the
 * byte after it. */
char *mc_http_put_u64(char *p, uint64_t v);

struct mc_http_conn_info;
/* ---- streamed responses ----
 * Instead of one mc_http_respond(), a handler may stream its answer: one
 * mc_http_exchange_start_response(), any number of mc_http_exchange_write_body(),
 * then exactly one mc_http_exchange_end(), which frees the exchange (also when a
 * call before it failed). The calls are transport-neutral: on HTTP/1.1 they map
 * to a head, then the body (chunked when the length is unknown), on HTTP/2 to
 * HEADERS and DATA frames. Once the head is sent the status is final: a failure
 * later can only cut the response short (mc_http_exchange_end(ex, 1)). */

/* Sends the status and headers (the same reserved-header rules as
 * mc_http_respond). content_length >= 0 is announced as Content-Length (on a
 * HEAD answer: the length a GET would have; no body is sent); -1 means unknown:
 * chunked to an HTTP/1.1 client, delimited by closing the connection for
 * HTTP/1.0. Returns 0, or MC_ECLOSED when the client is gone (still call end). */
int mc_http_exchange_start_response(mc_http_exchange *ex, int status,
				    const mc_http_header *headers, size_t nheaders,
				    int64_t content_length);
/* The same with trusted headers first, as for mc_http_respond_trusted(). */
int mc_http_exchange_start_trusted(mc_http_exchange *ex, int status,
				   const mc_http_header *trusted, size_t ntrusted,
				   const mc_http_header *headers, size_t nheaders,
				   int64_t content_length);
/* Queues len bytes (copied) of body. Bytes beyond an announced Content-Length
 * are the caller's bug. Returns 0, or MC_ECLOSED when the client is gone. */
int mc_http_exchange_write_body(mc_http_exchange *ex, const void *data, size_t len);
/* Body bytes queued and not yet accepted by the transport: a handler relaying a
 * stream stops reading its source above its own bound and resumes on
 * MC_HTTP_EX_DRAINED. */
size_t mc_http_exchange_pending(const mc_http_exchange *ex);
/* Ends the response and frees the exchange. abort != 0 cuts it short: the
 * connection is reset, so the client sees an error, never a shorter body as
 * if complete. Returns 0, or MC_ECLOSED when the client was gone. */
int mc_http_exchange_end(mc_http_exchange *ex, int abort);

enum {
	MC_HTTP_EX_DRAINED = 1, /* every queued body byte was written */
	MC_HTTP_EX_CLOSED = 2   /* the client went away or stopped reading */
};
/* Registers cb (NULL clears) to hear about the exchange until it is answered
 * or ended: MC_HTTP_EX_DRAINED while streaming, MC_HTTP_EX_CLOSED at any time
 * (the handler must still answer or end it; a streamed answer's calls then
 * return MC_ECLOSED). cb runs from loop events only, never from inside one of
 * the exchange calls above. */
void mc_http_exchange_watch(mc_http_exchange *ex, void (*cb)(void *arg, int event), void *arg);

typedef struct mc_http_server_opts {
	size_t max_header_bytes;   /* total request head size; 431 beyond (default 16 KiB) */
	size_t max_headers;        /* header count; 431 beyond (default 64) */
	size_t max_body_bytes;     /* 413 beyond (default 1 MiB) */
	uint32_t idle_timeout_ms;  /* keep-alive idle close (default 60000) */
	uint32_t request_timeout_ms; /* whole request must arrive within (default 30000) */
	size_t max_connections;    /* further accepts get 503 and are closed (default 10000) */
	int reuseport;             /* SO_REUSEPORT on the listeners: 0, MC_NET_REUSEPORT_JOIN or
				    * _FIRST (see mc_net_listen) */
	uint32_t header_timeout_ms; /* a request head must arrive within (default 10000) */
	uint32_t body_timeout_ms;  /* a body must progress in every window this long (default
				    * 10000): at least max(1, body_min_rate * window) bytes */
	uint32_t body_min_rate;    /* bytes per second, see body_timeout_ms (default 0) */
	size_t max_inflight;       /* requests in flight, from their first byte until the
				    * response is written; 503 beyond (default 1024) */
	/* Called (may be NULL) once a request head is complete, with its method and
	 * path (NUL terminated): returns that request's body limit (413 beyond) in
	 * place of max_body_bytes. ctx is the handler's. */
	size_t (*body_limit)(void *ctx, const char *method, const char *path, size_t path_len);
	/* Headers added to the responses the server answers itself (400, 408, 413,
	 * 431); the array must outlive the server. */
	const mc_http_header *error_headers;
	size_t nerror_headers;
	/* Called (may be NULL) with the status of each such response. */
	void (*on_reject)(void *ctx, int status);
	/* Called (may be NULL) once per connection: when it can carry requests
	 * (at accept, or after the TLS handshake), or when its TLS handshake
	 * failed. The info is valid during the call only. */
	void (*on_conn)(void *ctx, const struct mc_http_conn_info *info);
	/* Counters shared by several servers (one per thread on one port, may be
	 * NULL): max_connections and max_inflight then bound their sum. */
	struct mc_http_shared_limits *shared;
} mc_http_server_opts;

/* The connection and in-flight counts of a group of servers (see
 * mc_http_server_opts.shared); zero-initialise, outlives every server. */
typedef struct mc_http_shared_limits {
	_Atomic size_t conns;
	_Atomic size_t inflight;
	_Atomic size_t rejects; /* refused connections lingering with their 503 */
} mc_http_shared_limits;

/* Fills the defaults above. mc_http_server_new() also treats a zero field as its
 * default. */
void mc_http_server_opts_default(mc_http_server_opts *o);

/* What mc_http_server_opts.on_conn reports about a connection. */
typedef struct mc_http_conn_info {
	int tls;	     /* accepted on the TLS listener */
	int h2;		     /* ALPN chose h2: requests arrive as HTTP/2 streams */
	int resumed;	     /* the TLS session was resumed (no full handshake) */
	int failed;	     /* the TLS handshake failed; the connection is closed */
	const char *version; /* "TLSv1.3" (NULL without TLS) */
	const char *error;   /* why the handshake failed (failed only) */
	const char *peer;    /* "ip:port" */
} mc_http_conn_info;

/* HTTP/2 limits of a TLS listener (src/http/h2.c). Zero fields get defaults. */
typedef struct mc_http_h2_opts {
	uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS (default 100);
					  * also bounds requests whose handler has not
					  * answered, reset streams included */
	uint32_t initial_window_size;	 /* SETTINGS_INITIAL_WINDOW_SIZE (default 65535) */
	uint32_t connection_window_size; /* receive window of the connection (default 1 MiB) */
} mc_http_h2_opts;

typedef struct mc_http_tls_opts {
	uint32_t handshake_timeout_ms; /* a handshake not done by then is closed (default 10000) */
	mc_http_h2_opts h2;
} mc_http_tls_opts;

typedef struct mc_http_server mc_http_server;

/* Starts listening on hostport on loop. Returns 0 and *out, or a negative code
 * (bind errors as -errno). Bad requests are answered by the server itself with
 * 400/408/413/431/505, overload with 503, and the connection closed; the handler
 * never sees them (docs/operations.md "HTTP hardening" lists the checks). */
int mc_http_server_new(mc_http_server **out, uv_loop_t *loop, const char *hostport,
		       const mc_http_server_opts *opts, mc_http_handler handler, void *ctx);
/* Graceful stop, step one: closes the listener at once, closes idle keep-alive
 * connections, and lets every request in flight (or still arriving) be answered
 * with Connection: close. Watch mc_http_server_connections() reach 0, then call
 * mc_http_server_free(). Accepts NULL. */
void mc_http_server_drain(mc_http_server *s);
/* Connections open now (lingering ones included). */
size_t mc_http_server_connections(const mc_http_server *s);
/* Drains s and calls done(arg, left) on the loop once no connection is left or
 * timeout_ms passed (left = connections still open then); the caller then frees
 * the server. done runs once, never from inside this call, unless the drain is
 * canceled first. The handle is valid until done runs or it is canceled. */
typedef struct mc_http_drain mc_http_drain;
mc_http_drain *mc_http_drain_start(uv_loop_t *loop, mc_http_server *s, uint32_t timeout_ms,
				   void (*done)(void *arg, size_t left), void *arg);
/* Stops watching without calling done (e.g. the owner stops at once). Accepts NULL. */
void mc_http_drain_cancel(mc_http_drain *d);

/* A server process's graceful stop: the first SIGTERM/SIGINT drains srv for at
 * most timeout_ms and then calls stop(arg); a second signal calls stop(arg) at
 * once. The owner's stop() must call mc_http_graceful_close(). The struct is
 * caller-owned and must stay valid until the loop has run after that close. */
typedef struct mc_http_graceful {
	mc_net_stop_signals signals;
	uv_loop_t *loop;
	mc_http_server *srv;
	uint32_t timeout_ms;
	mc_http_drain *drain;
	int draining;
	void (*stop)(void *arg);
	void *arg;
	const char *name; /* for the log lines */
} mc_http_graceful;

void mc_http_graceful_start(mc_http_graceful *g, uv_loop_t *loop, mc_http_server *srv,
			    uint32_t timeout_ms, const char *name, void (*stop)(void *arg),
			    void *arg);
/* Cancels a drain in progress and closes the signal handles; safe to call twice
 * or when never started. */
void mc_http_graceful_close(mc_http_graceful *g);
/* Bound port (useful with port 0). */
uint16_t mc_http_server_port(const mc_http_server *s);

/* Adds a TLS listener on hostport to s: the same handler, limits, connection
 * count and drain as the plain listener. ALPN "h2" turns a connection into
 * HTTP/2 (each stream becomes an exchange like an HTTP/1.1 request); anything
 * else is HTTP/1.1 over TLS. Takes its own reference on ctx. Returns 0 or a
 * negative code (-errno from bind, MC_EINVAL when s already has one). */
int mc_http_server_listen_tls(mc_http_server *s, const char *hostport, mc_tls_ctx *ctx,
			      const mc_http_tls_opts *o);
/* Uses ctx for connections accepted from now on (certificate reload); the
 * connections already open keep the context they started with. */
void mc_http_server_tls_ctx_set(mc_http_server *s, mc_tls_ctx *ctx);
/* Bound port of the TLS listener (0 without one). */
uint16_t mc_http_server_tls_port(const mc_http_server *s);
/* Stops accepting and closes every connection; pending exchanges are still freed
 * by their mc_http_respond(). The server memory is released once all handles
 * closed (run the loop). Accepts NULL. */
void mc_http_server_free(mc_http_server *s);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *mc_http_reason(int status);

/* ---- client (keep-alive connection pool to one upstream) ---------------------------- */

typedef struct mc_http_response {
	int status;
	const mc_http_header *headers;
	size_t nheaders;
	const char *body;
	size_t body_len;
	int reused;          /* 1 when sent on a kept-alive connection */
	uint64_t connect_ns; /* time spent connecting (0 when reused) */
	/* Body length the upstream announced: Content-Length, 0 for a response
	 * without a body (HEAD, 204, 304), -1 when unknown (chunked or read until
	 * close). A buffered response has body_len here. */
	int64_t content_length;
} mc_http_response;

/* err is 0 with res set, or a negative code (MC_ETIMEDOUT, MC_ECLOSED, -ECONNREFUSED,
 * MC_EPROTO, MC_ETOOBIG, MC_ECANCELED when the pool is freed) with res NULL.
 * res and everything it points to are valid only during the callback. */
typedef void (*mc_http_response_cb)(void *arg, int err, const mc_http_response *res);

typedef struct mc_http_pool_opts {
	size_t max_conns;          /* connections open at once, idle + busy (default 64) */
	size_t max_idle;           /* idle connections kept (default 32) */
	uint32_t connect_timeout_ms; /* default 1000 */
	uint32_t request_timeout_ms; /* from send to complete response (default 10000) */
	uint32_t idle_timeout_ms;  /* close idle connections after (default 30000) */
	size_t max_response_bytes; /* head + body of a buffered response; the head of a
				    * streamed one (default 8 MiB) */
	size_t max_queue;          /* requests waiting for a connection (default 4096) */
	/* Called (may be NULL) each time a new TCP connection to the upstream is
	 * established, e.g. to count cold starts. Must not call into the pool. */
	void (*on_connect)(void *ctx);
	void *on_connect_ctx;
} mc_http_pool_opts;

/* Fills the defaults above. mc_http_pool_new() also treats a zero field as its
 * default, except max_idle (0 keeps no idle connection: no reuse). */
void mc_http_pool_opts_default(mc_http_pool_opts *o);

typedef struct mc_http_pool mc_http_pool;

/* Creates a pool to hostport ("127.0.0.1:9000"). Returns 0 or MC_EINVAL. */
int mc_http_pool_new(mc_http_pool **out, uv_loop_t *loop, const char *hostport,
		     const mc_http_pool_opts *opts);
/* Sends one request (copied; Host and Content-Length are added) and calls cb
 * exactly once on the loop thread, never synchronously from this call.
 * Returns 0, or MC_EFULL when the wait queue is full (cb not called).
 * Also (cb not called): MC_EINVAL for a method that is not a token, a target with
 * spaces or control bytes, or a header with CR/LF/NUL; MC_ECANCELED once
 * mc_http_pool_free() has started. A caller's Host header replaces the pool's;
 * caller Content-Length / Transfer-Encoding headers are dropped (the body is
 * always sent with Content-Length). A request that finds its reused keep-alive
 * connection closed before any response byte is retried once on a new one. */
int mc_http_pool_request(mc_http_pool *p, const char *method, const char *target,
			 const mc_http_header *headers, size_t nheaders, const void *body,
			 size_t body_len, mc_http_response_cb cb, void *arg);
/* ---- streaming calls ----
 * A call hands the caller the response as it arrives: the head (status and
 * headers) first, then body pieces, then the end, so a long or endless body
 * (chunked, server-sent events) is never held whole. */
typedef struct mc_http_call mc_http_call;

typedef struct mc_http_call_cbs {
	/* The final response head: res->body is empty and res->content_length says
	 * how the body is delimited. Valid only during the callback. */
	void (*on_head)(void *arg, const mc_http_response *res);
	/* A piece of the body (dechunked), valid only during the callback. */
	void (*on_body)(void *arg, const char *data, size_t len);
	/* Exactly once, last: err 0 after the whole response, else why the call
	 * failed (before the head: as for mc_http_response_cb; after it: the body was
	 * cut, e.g. MC_ETIMEDOUT, MC_ECLOSED, MC_EPROTO). Not called after
	 * mc_http_call_abort(). */
	void (*on_end)(void *arg, int err);
} mc_http_call_cbs;

typedef struct mc_http_call_opts {
	uint32_t connect_timeout_ms;    /* a new connection must be up within (0: pool's) */
	uint32_t first_byte_timeout_ms; /* from sending to the first response byte (0: the
					 * pool's request_timeout_ms) */
	uint32_t idle_timeout_ms;       /* between reads once a byte came, not counting time
					 * paused (0: the pool's request_timeout_ms) */
} mc_http_call_opts;

/* Sends one request like mc_http_pool_request() (same checks, same return codes,
 * the same one retry of an idempotent request on a stale keep-alive connection)
 * but streams the response into cbs (copied), called on the loop thread, never
 * synchronously from this call. *out is the call's handle, valid until on_end
 * ran or mc_http_call_abort() returned. opts may be NULL. */
int mc_http_pool_call(mc_http_pool *p, const char *method, const char *target,
		      const mc_http_header *headers, size_t nheaders, const void *body,
		      size_t body_len, const mc_http_call_opts *opts, const mc_http_call_cbs *cbs,
		      void *arg, mc_http_call **out);
/* Backpressure: pause != 0 stops reading the response (its idle timeout is
 * suspended); 0 resumes. A pause takes effect at the next read: the rest of the
 * current read buffer (at most 64 KiB) may still be delivered. */
void mc_http_call_pause(mc_http_call *call, int pause);
/* Gives the call up: no callback runs after this; a connection carrying it is
 * closed (never reused half-read). May be called from the call's own callbacks.
 * Accepts NULL. */
void mc_http_call_abort(mc_http_call *call);

/* Requests currently in flight or queued (streaming calls until their end). */
size_t mc_http_pool_outstanding(const mc_http_pool *p);
/* Fails every pending request with MC_ECANCELED (callbacks run from here),
 * closes connections; memory is released once handles closed. Accepts NULL. */
void mc_http_pool_free(mc_http_pool *p);

/* ---- relaying (src/http/forward.c) ----------------------------------------------------- */

/* 1 when field h of a message whose fields are all[0..n) is end-to-end and is
 * relayed: not hop-by-hop (Connection, Keep-Alive, Proxy-Connection, TE,
 * Trailer, Transfer-Encoding, Upgrade), not named by a Connection field, and not
 * Content-Length or Host, which the sender sets again. */
int mc_http_header_end_to_end(const mc_http_header *all, size_t n, const mc_http_header *h);
/* Copies the fields of in[0..n) that mc_http_header_end_to_end() relays and
 * skip (may be NULL) does not reject into out (room for n), in order; returns
 * how many. */
size_t mc_http_relay_headers(const mc_http_header *in, size_t n, mc_http_header *out,
			     int (*skip)(const char *name, size_t len));

/* ---- response helpers (src/http/reply.c) --------------------------------------------- */

/* Answers with a JSON error body {"error": code, "message": formatted text} and
 * Content-Type: application/json, after the given headers. Same contract as
 * mc_http_respond. */
int mc_http_respond_error(mc_http_exchange *ex, int status, const mc_http_header *headers,
			  size_t nheaders, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

/* Answers 200 with the registry in Prometheus text format. */
int mc_http_respond_metrics(mc_http_exchange *ex, const mc_metrics *m);

/* Appends the JSON error body {"error": code, "message": message} and a newline. */
void mc_http_error_body(mc_buf *out, const char *code, const char *message);
/* The same with the message formatted from fmt and ap (at most 1 KiB). */
void mc_http_error_bodyv(mc_buf *out, const char *code, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* Percent-decodes s[0..n) into out (reset first). Returns 0, or MC_EINVAL for a
 * malformed escape or a decoded NUL byte. */
int mc_http_percent_decode(const char *s, size_t n, mc_buf *out);

#endif
