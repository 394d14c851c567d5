/* TLS through OpenSSL 3 memory BIOs, for servers (and clients) on libuv.
 * Three layers: a context (certificate, ALPN, session-ticket keys; reference
 * counted, shared by the connections made from it), an engine that runs one TLS
 * connection over memory buffers without any I/O (ciphertext in/out, plaintext
 * in/out), and a stream that runs an engine over a connected uv_tcp_t with the
 * shape of libuv's read/write/shutdown calls. Only src/net/ includes OpenSSL;
 * nothing here exposes its types. A context may be shared between threads; an
 * engine or a stream belongs to one loop thread. No global state. */
#ifndef MC_NET_TLS_H
#define MC_NET_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- contexts ---------------------------------------------------------------------- */

#define MC_TLS_TICKET_NAME_LEN 16
#define MC_TLS_TICKET_SECRET_LEN 32
#define MC_TLS_TICKET_KEYS_MAX 16
#define MC_TLS_ALPN_MAX 8

/* One session-ticket key: tickets carry the name in clear, are encrypted with
 * AES-256-CBC under aes_key and authenticated with HMAC-SHA256 under hmac_key
 * (the layout nginx reads from an 80-byte ssl_session_ticket_key file is
 * name | hmac_key | aes_key). */
typedef struct mc_tls_ticket_key {
	uint8_t name[MC_TLS_TICKET_NAME_LEN];
	uint8_t aes_key[MC_TLS_TICKET_SECRET_LEN];
	uint8_t hmac_key[MC_TLS_TICKET_SECRET_LEN];
} mc_tls_ticket_key;

typedef struct mc_tls_server_opts {
	const char *cert_file; /* PEM: the certificate, then its chain */
	const char *key_file;  /* PEM private key matching it */
	/* keys[0] encrypts new tickets, every key decrypts (a ticket under a key
	 * other than keys[0] is accepted and renewed under keys[0]). With no key a
	 * random one is made for this context alone. At most MC_TLS_TICKET_KEYS_MAX. */
	const mc_tls_ticket_key *ticket_keys;
	size_t nticket_keys;
	/* Protocols offered through ALPN in server preference order ("h2",
	 * "http/1.1"); a client offering none of them gets no ALPN answer. */
	const char *const *alpn;
	size_t nalpn;
	int min_version;	    /* 12 (TLS 1.2, default when 0) or 13 */
	uint32_t session_timeout_s; /* lifetime of a session / ticket (default 3600) */
} mc_tls_server_opts;

typedef struct mc_tls_client_opts {
	/* PEM file of trusted roots; NULL turns certificate verification off (tests). */
	const char *ca_file;
	const char *server_name; /* SNI and, with ca_file, the name checked (may be NULL) */
	const char *const *alpn;
	size_t nalpn;
	int min_version; /* 12 or 13; 0 = 12 */
	int max_version; /* 12 or 13; 0 = 13 */
} mc_tls_client_opts;

typedef struct mc_tls_ctx mc_tls_ctx;

/* Builds a server context: loads and checks the certificate chain and key, sets
 * ALPN and the ticket keys, TLS 1.2 and 1.3 with stateless tickets only (no
 * server-side session cache, so any process holding the keys resumes a
 * session). Returns 0 and *out (one reference), or MC_EINVAL / MC_ECONFIG with
 * a one-line reason in err (NUL terminated, truncated to errcap). */
int mc_tls_ctx_server_new(mc_tls_ctx **out, const mc_tls_server_opts *o, char *err, size_t errcap);
/* Builds a client context (tests, upstream links). Same returns. */
int mc_tls_ctx_client_new(mc_tls_ctx **out, const mc_tls_client_opts *o, char *err, size_t errcap);
/* Takes one more reference (atomic: contexts may be shared across threads) and
 * returns ctx. */
mc_tls_ctx *mc_tls_ctx_ref(mc_tls_ctx *ctx);
/* Drops a reference; the last one frees the context. Accepts NULL. Engines hold
 * their own reference, so a context replaced on reload lives on until its last
 * connection ends. */
void mc_tls_ctx_unref(mc_tls_ctx *ctx);
/* One line about the server certificate for logs: subject, expiry and SHA-256
 * fingerprint. */
void mc_tls_ctx_describe(const mc_tls_ctx *ctx, char *buf, size_t cap);
/* Fills key with random bytes (for a process without configured keys). */
int mc_tls_ticket_key_random(mc_tls_ticket_key *key);

/* ---- engine: one TLS connection over memory buffers -------------------------------- */

typedef struct mc_tls_conn mc_tls_conn;

/* A server or client engine (after the context's kind) holding a reference to
 * ctx. A client engine has its ClientHello ready after the first
 * mc_tls_conn_handshake(). Returns 0 or MC_ENOMEM. */
int mc_tls_conn_new(mc_tls_conn **out, mc_tls_ctx *ctx);
void mc_tls_conn_free(mc_tls_conn *t); /* accepts NULL */
/* Queues n bytes received from the peer. */
void mc_tls_conn_feed(mc_tls_conn *t, const void *ct, size_t n);
/* Advances the handshake with what was fed. Returns 0 once complete (then and
 * always after), MC_EAGAIN while it needs more input, MC_EPROTO when it failed
 * (the reason is in mc_tls_conn_error()). Output to send may be pending in
 * every case. */
int mc_tls_conn_handshake(mc_tls_conn *t);
int mc_tls_conn_handshake_done(const mc_tls_conn *t);
/* Decrypts into buf: 0 with *n > 0 bytes, MC_EAGAIN when no whole record is
 * buffered, MC_ECLOSED when the peer sent close_notify, MC_EPROTO on a
 * protocol error. Only after the handshake. */
int mc_tls_conn_read(mc_tls_conn *t, void *buf, size_t cap, size_t *n);
/* 1 while fed input may still yield plaintext without more feeding. */
int mc_tls_conn_has_input(const mc_tls_conn *t);
/* Encrypts all n bytes into the output. 0, or MC_EPROTO / MC_ECLOSED. Only
 * after the handshake. */
int mc_tls_conn_write(mc_tls_conn *t, const void *p, size_t n);
/* Queues close_notify. 0 or MC_EPROTO. */
int mc_tls_conn_close_notify(mc_tls_conn *t);
/* Bytes waiting to be sent, and moving up to cap of them into buf (returns
 * how many). */
size_t mc_tls_conn_out_pending(const mc_tls_conn *t);
size_t mc_tls_conn_out_take(mc_tls_conn *t, void *buf, size_t cap);
/* After the handshake: the protocol ALPN selected (not NUL terminated; *len 0
 * and NULL when none), whether the session was resumed, and the version name
 * ("TLSv1.3"). */
const char *mc_tls_conn_alpn(const mc_tls_conn *t, size_t *len);
int mc_tls_conn_resumed(const mc_tls_conn *t);
const char *mc_tls_conn_version(const mc_tls_conn *t);
/* The last OpenSSL error reason, or "" (for logs). */
const char *mc_tls_conn_error(const mc_tls_conn *t);
/* Client engines: serializes the current session (resumable only after the
 * handshake, and in TLS 1.3 only once a ticket was read) into buf. Returns 0 and
 * *len, MC_ENOTFOUND when there is no resumable session, MC_ETOOBIG. */
int mc_tls_conn_session_save(const mc_tls_conn *t, uint8_t *buf, size_t cap, size_t *len);
/* Client engines, before the handshake: offers the saved session. 0 or MC_EINVAL. */
int mc_tls_conn_session_load(mc_tls_conn *t, const uint8_t *buf, size_t len);
/* Forces the maximum version of this engine (12 or 13), before the handshake. */
int mc_tls_conn_max_version(mc_tls_conn *t, int version);

/* ---- stream: an engine over a connected uv_tcp_t ---------------------------------- */

typedef struct mc_tls_stream mc_tls_stream;

/* Runs a new engine from ctx over tcp, which the caller keeps owning. While the
 * stream lives it sets tcp->data to itself; the caller's value is restored by
 * mc_tls_stream_free() and is what the handle carries inside the caller's
 * alloc/read callbacks, so callbacks written for a plain uv_tcp_t work
 * unchanged. The handshake runs at once (the stream reads the socket itself
 * until it completes); on_handshake(arg, 0) is called when it completed, or
 * (arg, MC_EPROTO / negative uv code) when it failed, after which the caller
 * frees the stream and closes the socket. arg is the caller's tcp->data.
 * scratch (may be NULL) is a buffer of at least 16 KiB shared by the streams
 * of one loop for the ciphertext of a read; it is used only during the read
 * callback. Returns 0 or a negative code. */
int mc_tls_stream_new(mc_tls_stream **out, mc_tls_ctx *ctx, uv_tcp_t *tcp,
		      void (*on_handshake)(void *arg, int status), char *scratch,
		      size_t scratch_len);
/* Like uv_read_start / uv_read_stop with plaintext. read_cb is never called
 * from inside these calls, and not after read_stop. Errors: UV_EOF on
 * close_notify or TCP EOF, UV_EPROTO on a TLS error. */
int mc_tls_stream_read_start(mc_tls_stream *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
int mc_tls_stream_read_stop(mc_tls_stream *s);
/* Like uv_write with plaintext: the bytes are encrypted at once (bufs may be
 * reused after the call); cb(req, status) runs once the ciphertext was written,
 * or with a negative status. Only after the handshake (else UV_ENOTCONN).
 * cb may be NULL. */
int mc_tls_stream_write(mc_tls_stream *s, uv_write_t *req, const uv_buf_t bufs[], unsigned n,
			uv_write_cb cb);
/* Sends close_notify, then uv_shutdown(req, tcp, cb). */
int mc_tls_stream_shutdown(mc_tls_stream *s, uv_shutdown_t *req, uv_shutdown_cb cb);
/* The engine, for ALPN, resumption and version queries. */
mc_tls_conn *mc_tls_stream_conn(mc_tls_stream *s);
/* Ciphertext handed to libuv and not yet written (backpressure). */
size_t mc_tls_stream_write_queue(const mc_tls_stream *s);
/* Detaches from tcp (restores tcp->data, stops reading): no callback of this
 * stream runs afterwards, write callbacks included. Call it before
 * uv_close(tcp). Memory is released once the writes in flight are done.
 * Accepts NULL. */
void mc_tls_stream_free(mc_tls_stream *s);

#endif
