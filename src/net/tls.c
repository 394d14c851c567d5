/* TLS contexts and the memory-BIO engine on OpenSSL 3: certificate and key
 * loading, ALPN selection, session tickets under configured keys (so any
 * process holding the same keys resumes a session), and one connection driven
 * purely through buffers. docs/operations.md explains ticket-key rotation. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/common.h"
#include "net/tls.h"

/* TLS 1.2 suites (TLS 1.3 keeps OpenSSL's defaults): ECDHE with AEAD only, which
 * is also what RFC 9113 section 9.2.2 requires for HTTP/2. */
#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* Binds sessions to Metrocell: a ticket from another application sharing the
 * keys by accident is not resumed. */
#define SID_CTX "metrocell"
#define DEFAULT_SESSION_TIMEOUT_S 3600

struct mc_tls_ctx {
	_Atomic int refs;
	int server;
	SSL_CTX *ssl;
	mc_tls_ticket_key keys[MC_TLS_TICKET_KEYS_MAX];
	size_t nkeys;
	unsigned char alpn[MC_TLS_ALPN_MAX * 256]; /* wire format: len-prefixed names */
	size_t alpn_len;
	char desc[320];
	char sni[256]; /* client contexts: the server name sent */
};

struct mc_tls_conn {
	mc_tls_ctx *ctx;
	SSL *ssl;
	BIO *rbio; /* ciphertext from the peer (owned by ssl) */
	BIO *wbio; /* ciphertext to the peer (owned by ssl) */
	int done;
	int failed;
	char err[160];
};

/* ---- errors ------------------------------------------------------------------------ */

/* Moves OpenSSL's error queue of this thread into buf (the first reason, which
 * names the cause) and empties it. */
static void take_ssl_error(char *buf, size_t cap)
{
	unsigned long e = ERR_get_error();
	if (cap == 0)
		return;
	buf[0] = '\0';
	if (e) {
		const char *r = ERR_reason_error_string(e);
		if (r)
			snprintf(buf, cap, "%s", r);
		else
			ERR_error_string_n(e, buf, cap);
	}
	ERR_clear_error();
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t cap, const char *fmt,
							  ...)
{
	if (!err || cap == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

/* ---- ALPN ---------------------------------------------------------------------------- */

/* Builds the wire format of the protocol list; 0 or MC_EINVAL. */
static int alpn_encode(mc_tls_ctx *c, const char *const *alpn, size_t n, char *err, size_t cap)
{
	if (n > MC_TLS_ALPN_MAX) {
		set_err(err, cap, "at most %d ALPN protocols", MC_TLS_ALPN_MAX);
		return MC_EINVAL;
	}
	c->alpn_len = 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(alpn[i]);
		if (l == 0 || l > 255) {
			set_err(err, cap, "ALPN protocol name of %zu bytes (1..255)", l);
			return MC_EINVAL;
		}
		c->alpn[c->alpn_len++] = (unsigned char)l;
		memcpy(c->alpn + c->alpn_len, alpn[i], l);
		c->alpn_len += l;
	}
	return 0;
}

/* Server preference: the first of our protocols the client offers. */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	mc_tls_ctx *c = arg;
	unsigned char *sel = NULL;
	if (c->alpn_len == 0)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_select_next_proto(&sel, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK; /* no overlap: continue without ALPN (HTTP/1.1) */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* ---- session tickets ------------------------------------------------------------------ */

static int mac_init(EVP_MAC_CTX *hctx, const uint8_t *key)
{
	OSSL_PARAM params[2];
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	return EVP_MAC_init(hctx, key, MC_TLS_TICKET_SECRET_LEN, params);
}

/* OpenSSL's ticket key callback (TLS 1.2 tickets and TLS 1.3 stateless
 * tickets alike). enc: pick keys[0]; decrypt: find the key by name; 1 = use it,
 * 2 = use it and issue a fresh ticket under keys[0], 0 = unknown key (full
 * handshake), -1 = error. The renewal rules follow nginx's. */
static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
			 EVP_MAC_CTX *hctx, int enc)
{
	const mc_tls_ctx *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	if (!c || c->nkeys == 0)
		return -1;
	if (enc) {
		const mc_tls_ticket_key *k = &c->keys[0];
		memcpy(name, k->name, MC_TLS_TICKET_NAME_LEN);
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
			return -1;
		if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes_key, iv) != 1 ||
		    mac_init(hctx, k->hmac_key) != 1)
			return -1;
		return 1;
	}
	for (size_t i = 0; i < c->nkeys; i++) {
		const mc_tls_ticket_key *k = &c->keys[i];
		if (CRYPTO_memcmp(name, k->name, MC_TLS_TICKET_NAME_LEN) != 0)
			continue;
		if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes_key, iv) != 1 ||
		    mac_init(hctx, k->hmac_key) != 1)
			return -1;
		/* TLS 1.3 clients use a ticket once (RFC 8446 C.4): always hand out a
		 * fresh one, or every other connection would be a full handshake */
		if (SSL_version(ssl) == TLS1_3_VERSION)
			return 2;
		return i == 0 ? 1 : 2;
	}
	return 0;
}

int mc_tls_ticket_key_random(mc_tls_ticket_key *key)
{
	if (RAND_bytes((unsigned char *)key, sizeof *key) != 1)
		return MC_EPROTO;
	return 0;
}

/* ---- contexts ------------------------------------------------------------------------ */

static int version_of(int v, int dflt)
{
	if (v == 0)
		v = dflt;
	return v == 13 ? TLS1_3_VERSION : v == 12 ? TLS1_2_VERSION : -1;
}

static void describe_cert(mc_tls_ctx *c)
{
	X509 *x = SSL_CTX_get0_certificate(c->ssl);
	if (!x) {
		snprintf(c->desc, sizeof c->desc, "no certificate");
		return;
	}
	char subject[128] = "?", until[64] = "?", fp[2 * 32 + 1] = "";
	X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
	BIO *b = BIO_new(BIO_s_mem());
	if (b) {
		if (ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) {
			int n = BIO_read(b, until, sizeof until - 1);
			until[n > 0 ? n : 0] = '\0';
		}
		BIO_free(b);
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
		for (unsigned i = 0; i < mdlen && i < 32; i++)
			snprintf(fp + 2 * i, 3, "%02x", md[i]);
	snprintf(c->desc, sizeof c->desc, "subject %s, not after %s, sha256 %s", subject, until,
		 fp);
}

static mc_tls_ctx *ctx_alloc(int server)
{
	mc_tls_ctx *c = mc_calloc(1, sizeof *c);
	atomic_init(&c->refs, 1);
	c->server = server;
	return c;
}

int mc_tls_ctx_server_new(mc_tls_ctx **out, const mc_tls_server_opts *o, char *err, size_t errcap)
{
	char why[160];
	int rc = MC_ECONFIG;
	*out = NULL;
	ERR_clear_error();
	mc_tls_ctx *c = ctx_alloc(1);
	int minv = version_of(o->min_version, 12);
	if (minv < 0 || !o->cert_file || !o->key_file || o->nticket_keys > MC_TLS_TICKET_KEYS_MAX) {
		set_err(err, errcap, "invalid TLS options");
		rc = MC_EINVAL;
		goto out;
	}
	if (alpn_encode(c, o->alpn, o->nalpn, err, errcap) < 0) {
		rc = MC_EINVAL;
		goto out;
	}
	c->ssl = SSL_CTX_new(TLS_server_method());
	if (!c->ssl) {
		take_ssl_error(why, sizeof why);
		set_err(err, errcap, "cannot create a TLS context: %s", why);
		goto out;
	}
	SSL_CTX_set_app_data(c->ssl, c);
	SSL_CTX_set_min_proto_version(c->ssl, minv);
	SSL_CTX_set_max_proto_version(c->ssl, TLS1_3_VERSION);
	/* Renegotiation is a DoS lever and useless to HTTP/2 (RFC 9113 9.2.1). */
	SSL_CTX_set_options(c->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
					SSL_OP_NO_COMPRESSION);
	/* Tickets on; no server-side session cache: TLS 1.2 resumes through the
	 * ticket, TLS 1.3 issues stateless tickets, both sealed with our keys. */
	SSL_CTX_clear_options(c->ssl, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(c->ssl, 2);
	SSL_CTX_set_timeout(c->ssl, o->session_timeout_s ? o->session_timeout_s
							 : DEFAULT_SESSION_TIMEOUT_S);
	SSL_CTX_set_session_id_context(c->ssl, (const unsigned char *)SID_CTX, sizeof SID_CTX - 1);
	SSL_CTX_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(c->ssl, TLS12_CIPHERS) != 1) {
		take_ssl_error(why, sizeof why);
		set_err(err, errcap, "cannot set the TLS 1.2 cipher list: %s", why);
		goto out;
	}
	if (SSL_CTX_use_certificate_chain_file(c->ssl, o->cert_file) != 1) {
		take_ssl_error(why, sizeof why);
		set_err(err, errcap, "%s: cannot load the certificate chain: %s", o->cert_file,
			why);
		goto out;
	}
	if (SSL_CTX_use_PrivateKey_file(c->ssl, o->key_file, SSL_FILETYPE_PEM) != 1) {
		take_ssl_error(why, sizeof why);
		if (strstr(why, "mismatch"))
			set_err(err, errcap, "%s does not match the certificate in %s: %s",
				o->key_file, o->cert_file, why);
		else
			set_err(err, errcap, "%s: cannot load the private key: %s", o->key_file,
				why);
		goto out;
	}
	if (SSL_CTX_check_private_key(c->ssl) != 1) {
		take_ssl_error(why, sizeof why);
		set_err(err, errcap, "%s does not match the certificate in %s: %s", o->key_file,
			o->cert_file, why);
		goto out;
	}
	if (o->nticket_keys > 0) {
		memcpy(c->keys, o->ticket_keys, o->nticket_keys * sizeof *c->keys);
		c->nkeys = o->nticket_keys;
	} else {
		if (mc_tls_ticket_key_random(&c->keys[0]) < 0) {
			set_err(err, errcap, "no randomness for a session-ticket key");
			goto out;
		}
		c->nkeys = 1;
	}
	SSL_CTX_set_tlsext_ticket_key_evp_cb(c->ssl, on_ticket_key);
	if (c->alpn_len)
		SSL_CTX_set_alpn_select_cb(c->ssl, on_alpn_select, c);
	describe_cert(c);
	*out = c;
	c = NULL;
	rc = 0;
out:
	ERR_clear_error();
	mc_tls_ctx_unref(c);
	return rc;
}

int mc_tls_ctx_client_new(mc_tls_ctx **out, const mc_tls_client_opts *o, char *err, size_t errcap)
{
	char why[160];
	int rc = MC_ECONFIG;
	*out = NULL;
	ERR_clear_error();
	mc_tls_ctx *c = ctx_alloc(0);
	int minv = version_of(o->min_version, 12), maxv = version_of(o->max_version, 13);
	if (minv < 0 || maxv < 0) {
		set_err(err, errcap, "invalid TLS versions");
		rc = MC_EINVAL;
		goto out;
	}
	if (alpn_encode(c, o->alpn, o->nalpn, err, errcap) < 0) {
		rc = MC_EINVAL;
		goto out;
	}
	c->ssl = SSL_CTX_new(TLS_client_method());
	if (!c->ssl) {
		take_ssl_error(why, sizeof why);
		set_err(err, errcap, "cannot create a TLS context: %s", why);
		goto out;
	}
	SSL_CTX_set_app_data(c->ssl, c);
	SSL_CTX_set_min_proto_version(c->ssl, minv);
	SSL_CTX_set_max_proto_version(c->ssl, maxv);
	SSL_CTX_set_options(c->ssl, SSL_OP_NO_RENEGOTIATION);
	/* Sessions are taken out with mc_tls_conn_session_save, never cached here. */
	SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	if (o->ca_file) {
		if (SSL_CTX_load_verify_locations(c->ssl, o->ca_file, NULL) != 1) {
			take_ssl_error(why, sizeof why);
			set_err(err, errcap, "%s: cannot load trusted certificates: %s", o->ca_file,
				why);
			goto out;
		}
		SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
	}
	if (c->alpn_len && SSL_CTX_set_alpn_protos(c->ssl, c->alpn, (unsigned)c->alpn_len) != 0) {
		set_err(err, errcap, "cannot set the ALPN list");
		goto out;
	}
	if (o->server_name)
		snprintf(c->sni, sizeof c->sni, "%s", o->server_name);
	snprintf(c->desc, sizeof c->desc, "client%s%s", c->sni[0] ? " for " : "", c->sni);
	*out = c;
	c = NULL;
	rc = 0;
out:
	ERR_clear_error();
	mc_tls_ctx_unref(c);
	return rc;
}

mc_tls_ctx *mc_tls_ctx_ref(mc_tls_ctx *ctx)
{
	atomic_fetch_add(&ctx->refs, 1);
	return ctx;
}

void mc_tls_ctx_unref(mc_tls_ctx *ctx)
{
	if (!ctx || atomic_fetch_sub(&ctx->refs, 1) != 1)
		return;
	SSL_CTX_free(ctx->ssl);
	OPENSSL_cleanse(ctx->keys, sizeof ctx->keys);
	free(ctx);
}

void mc_tls_ctx_describe(const mc_tls_ctx *ctx, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s", ctx->desc);
}

/* ---- engine -------------------------------------------------------------------------- */

int mc_tls_conn_new(mc_tls_conn **out, mc_tls_ctx *ctx)
{
	*out = NULL;
	ERR_clear_error();
	mc_tls_conn *t = mc_calloc(1, sizeof *t);
	t->ssl = SSL_new(ctx->ssl);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		free(t);
		ERR_clear_error();
		return MC_ENOMEM;
	}
	/* an empty read BIO means "wait for more", not end of file */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	if (ctx->server) {
		SSL_set_accept_state(t->ssl);
	} else {
		SSL_set_connect_state(t->ssl);
		if (ctx->sni[0])
			SSL_set_tlsext_host_name(t->ssl, ctx->sni);
	}
	t->ctx = mc_tls_ctx_ref(ctx);
	*out = t;
	return 0;
}

void mc_tls_conn_free(mc_tls_conn *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* frees both BIOs */
	mc_tls_ctx_unref(t->ctx);
	free(t);
}

void mc_tls_conn_feed(mc_tls_conn *t, const void *ct, size_t n)
{
	while (n > 0) {
		int chunk = n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
		int w = BIO_write(t->rbio, ct, chunk);
		MC_ASSERT(w == chunk); /* a memory BIO grows, or malloc failed */
		ct = (const char *)ct + w;
		n -= (size_t)w;
	}
}

/* Maps the outcome of an SSL call: 0 done, MC_EAGAIN, MC_ECLOSED, MC_EPROTO. */
static int ssl_result(mc_tls_conn *t, int ret)
{
	switch (SSL_get_error(t->ssl, ret)) {
	case SSL_ERROR_NONE:
		return 0;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		ERR_clear_error();
		return MC_EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		return MC_ECLOSED;
	default:
		take_ssl_error(t->err, sizeof t->err);
		if (!t->err[0])
			snprintf(t->err, sizeof t->err, "TLS protocol error");
		t->failed = 1;
		return MC_EPROTO;
	}
}

int mc_tls_conn_handshake(mc_tls_conn *t)
{
	if (t->done)
		return 0;
	if (t->failed)
		return MC_EPROTO;
	ERR_clear_error();
	int rc = ssl_result(t, SSL_do_handshake(t->ssl));
	if (rc == 0)
		t->done = 1;
	else if (rc == MC_ECLOSED)
		rc = MC_EPROTO; /* close_notify during the handshake */
	return rc;
}

int mc_tls_conn_handshake_done(const mc_tls_conn *t)
{
	return t->done;
}

int mc_tls_conn_read(mc_tls_conn *t, void *buf, size_t cap, size_t *n)
{
	*n = 0;
	if (t->failed)
		return MC_EPROTO;
	ERR_clear_error();
	int rc = ssl_result(t, SSL_read_ex(t->ssl, buf, cap, n));
	if (rc == 0 && *n == 0)
		rc = MC_EAGAIN;
	return rc;
}

int mc_tls_conn_has_input(const mc_tls_conn *t)
{
	return SSL_has_pending(t->ssl) || BIO_ctrl_pending(t->rbio) > 0;
}

int mc_tls_conn_write(mc_tls_conn *t, const void *p, size_t n)
{
	if (t->failed)
		return MC_EPROTO;
	if (!t->done)
		return MC_EAGAIN;
	while (n > 0) {
		size_t w = 0;
		ERR_clear_error();
		int rc = ssl_result(t, SSL_write_ex(t->ssl, p, n, &w));
		if (rc == MC_EAGAIN) /* a memory BIO never blocks: treat as a failure */
			rc = MC_EPROTO;
		if (rc < 0)
			return rc;
		p = (const char *)p + w;
		n -= w;
	}
	return 0;
}

int mc_tls_conn_close_notify(mc_tls_conn *t)
{
	if (t->failed || !t->done)
		return MC_EPROTO;
	ERR_clear_error();
	int r = SSL_shutdown(t->ssl);
	if (r < 0) {
		take_ssl_error(t->err, sizeof t->err);
		return MC_EPROTO;
	}
	return 0;
}

size_t mc_tls_conn_out_pending(const mc_tls_conn *t)
{
	return BIO_ctrl_pending(t->wbio);
}

size_t mc_tls_conn_out_take(mc_tls_conn *t, void *buf, size_t cap)
{
	size_t got = 0;
	if (cap == 0 || BIO_read_ex(t->wbio, buf, cap, &got) != 1)
		return 0;
	return got;
}

const char *mc_tls_conn_alpn(const mc_tls_conn *t, size_t *len)
{
	const unsigned char *p = NULL;
	unsigned l = 0;
	SSL_get0_alpn_selected(t->ssl, &p, &l);
	*len = l;
	return l ? (const char *)p : NULL;
}

int mc_tls_conn_resumed(const mc_tls_conn *t)
{
	return SSL_session_reused(t->ssl) == 1;
}

const char *mc_tls_conn_version(const mc_tls_conn *t)
{
	return SSL_get_version(t->ssl);
}

const char *mc_tls_conn_error(const mc_tls_conn *t)
{
	return t->err;
}

int mc_tls_conn_session_save(const mc_tls_conn *t, uint8_t *buf, size_t cap, size_t *len)
{
	SSL_SESSION *s = SSL_get1_session(t->ssl);
	int rc = 0;
	if (!s || !SSL_SESSION_is_resumable(s)) {
		rc = MC_ENOTFOUND;
		goto out;
	}
	int n = i2d_SSL_SESSION(s, NULL);
	if (n <= 0) {
		rc = MC_ENOTFOUND;
		goto out;
	}
	if ((size_t)n > cap) {
		rc = MC_ETOOBIG;
		goto out;
	}
	unsigned char *p = buf;
	*len = (size_t)i2d_SSL_SESSION(s, &p);
out:
	SSL_SESSION_free(s);
	ERR_clear_error();
	return rc;
}

int mc_tls_conn_session_load(mc_tls_conn *t, const uint8_t *buf, size_t len)
{
	const unsigned char *p = buf;
	SSL_SESSION *s = d2i_SSL_SESSION(NULL, &p, (long)len);
	int rc = s && SSL_set_session(t->ssl, s) == 1 ? 0 : MC_EINVAL;
	SSL_SESSION_free(s);
	ERR_clear_error();
	return rc;
}

int mc_tls_conn_max_version(mc_tls_conn *t, int version)
{
	int v = version_of(version, 13);
	if (v < 0 || SSL_set_max_proto_version(t->ssl, v) != 1)
		return MC_EINVAL;
	return 0;
}
