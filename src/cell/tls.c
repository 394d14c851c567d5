/* The cell's TLS ingress: builds the TLS context from the "tls" config section,
 * adds the TLS listener (HTTP/2 by ALPN, else HTTP/1.1) to the data-plane
 * server, reloads certificate and key on SIGHUP into a new context while open
 * connections keep theirs, and counts connections, handshakes and resumptions.
 * docs/operations.md describes reload, ticket-key rotation and resumption. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cell/cell_int.h"

#define COMP "cell"

static mc_series *series(cell *c, const char *name, const char *help, const char *extra)
{
	mc_buf labels;
	mc_buf_init(&labels);
	mc_buf_append_str(&labels, "cell=\"");
	mc_metrics_label_escape(&labels, c->conf->cell);
	mc_buf_append_str(&labels, "\"");
	if (extra) {
		mc_buf_append_str(&labels, ",");
		mc_buf_append_str(&labels, extra);
	}
	mc_series *s = mc_metrics_series(c->metrics, name, help, MC_METRIC_COUNTER, labels.data);
	mc_buf_fini(&labels);
	return s;
}

/* Creates every series at start, so they read 0 before the first event. */
static void metrics_init(cell *c)
{
	cell_tls *t = &c->tls;
	static const char conns_help[] = "Client connections accepted, by protocol and TLS.";
	t->conns[0] =
	    series(c, "metrocell_connections_total", conns_help, "proto=\"h1\",tls=\"false\"");
	if (!c->conf->tls.enabled)
		return;
	t->conns[1] =
	    series(c, "metrocell_connections_total", conns_help, "proto=\"h1\",tls=\"true\"");
	t->conns[2] =
	    series(c, "metrocell_connections_total", conns_help, "proto=\"h2\",tls=\"true\"");
	static const char hs_help[] =
	    "Completed TLS handshakes, by whether the session was resumed from a ticket.";
	t->handshakes[0] =
	    series(c, "metrocell_tls_handshakes_total", hs_help, "resumed=\"false\"");
	t->handshakes[1] = series(c, "metrocell_tls_handshakes_total", hs_help, "resumed=\"true\"");
	t->cold_full = series(c, "metrocell_cold_starts_total", "Cold starts by kind",
			      "kind=\"tls_full_handshake\"");
	t->failures =
	    series(c, "metrocell_tls_handshake_failures_total",
		   "TLS handshakes that failed (bad input, timeouts are not counted).", NULL);
	static const char rl_help[] = "Certificate reloads on SIGHUP, by result.";
	t->reloads[0] = series(c, "metrocell_tls_reloads_total", rl_help, "result=\"ok\"");
	t->reloads[1] = series(c, "metrocell_tls_reloads_total", rl_help, "result=\"error\"");
}

void mc_cell_tls_on_conn(void *ctx, const mc_http_conn_info *ci)
{
	cell *c = ctx;
	cell_tls *t = &c->tls;
	if (!ci->tls) {
		t->conns[0]->value += 1;
		return;
	}
	if (ci->failed) {
		t->failures->value += 1;
		return;
	}
	t->conns[ci->h2 ? 2 : 1]->value += 1;
	t->handshakes[ci->resumed ? 1 : 0]->value += 1;
	if (!ci->resumed)
		t->cold_full->value += 1;
}

/* A context from the current files; keys and ALPN from the config. */
static int build_ctx(cell *c, mc_tls_ctx **out, char *err, size_t cap)
{
	const mc_tls_conf *tc = &c->conf->tls;
	mc_tls_server_opts o = {.cert_file = tc->cert,
				.key_file = tc->key,
				.ticket_keys = c->tls.keys,
				.nticket_keys = c->tls.nkeys,
				.alpn = (const char *const *)tc->alpn,
				.nalpn = tc->nalpn,
				.min_version = tc->min_version,
				.session_timeout_s = tc->session_timeout_s};
	return mc_tls_ctx_server_new(out, &o, err, cap);
}

static void on_hup(uv_signal_t *h, int signum)
{
	(void)signum;
	cell *c = h->data;
	if (!c->conf->tls.enabled) {
		MC_INFO(COMP, "SIGHUP: no tls section in %s, nothing to reload", c->conf->path);
		return;
	}
	if (!c->http || c->stopping)
		return;
	char err[512], desc[400];
	mc_tls_ctx *n = NULL;
	int rc = build_ctx(c, &n, err, sizeof err);
	if (rc < 0) {
		c->tls.reloads[1]->value += 1;
		MC_ERROR(COMP, "SIGHUP: TLS reload failed, keeping the previous certificate: %s",
			 err);
		mc_cell_event(c, "tls_reload", "b:ok", 0, "s:error", err, NULL);
		return;
	}
	mc_http_server_tls_ctx_set(c->http, n);
	mc_cell_threads_tls_ctx(c, n);
	mc_tls_ctx_unref(c->tls.ctx);
	c->tls.ctx = n;
	c->tls.reloads[0]->value += 1;
	mc_tls_ctx_describe(n, desc, sizeof desc);
	MC_INFO(COMP,
		"SIGHUP: TLS certificate reloaded from %s (%s); open connections keep the "
		"previous one",
		c->conf->tls.cert, desc);
	mc_cell_event(c, "tls_reload", "b:ok", 1, "s:cert", c->conf->tls.cert, "s:certificate", desc,
		      NULL);
}

static int listen_tls(cell *c, const char *hostport, mc_tls_ctx *ctx)
{
	const mc_tls_conf *tc = &c->conf->tls;
	mc_http_tls_opts o = {.handshake_timeout_ms = tc->handshake_timeout_ms,
			      .h2 = {.max_concurrent_streams = tc->h2.max_concurrent_streams,
				     .initial_window_size = tc->h2.initial_window_size,
				     .connection_window_size = tc->h2.connection_window_size}};
	return mc_http_server_listen_tls(c->http, hostport, ctx, &o);
}

int mc_cell_tls_start_thread(cell *c, const char *hostport)
{
	metrics_init(c);
	if (!c->conf->tls.enabled)
		return 0;
	/* the main thread waits for this thread to start: its context is stable */
	return listen_tls(c, hostport, c->main->tls.ctx); /* the caller says why it failed */
}

int mc_cell_tls_start(cell *c)
{
	const mc_tls_conf *tc = &c->conf->tls;
	cell_tls *t = &c->tls;
	metrics_init(c);
	uv_signal_init(c->loop, &t->hup);
	t->hup.data = c;
	uv_signal_start(&t->hup, on_hup, SIGHUP);
	t->hup_started = 1;
	if (!tc->enabled)
		return 0;
	if (tc->ticket_keys.n > 0) {
		for (size_t i = 0; i < tc->ticket_keys.n; i++) {
			const mc_ticket_key_conf *k = &tc->ticket_keys.keys[i];
			memcpy(t->keys[i].name, k->name, sizeof t->keys[i].name);
			memcpy(t->keys[i].aes_key, k->aes_key, sizeof t->keys[i].aes_key);
			memcpy(t->keys[i].hmac_key, k->hmac_key, sizeof t->keys[i].hmac_key);
		}
		t->nkeys = tc->ticket_keys.n;
	} else {
		/* one random key for the process: resumption survives reloads, not
		 * restarts, and no other cell can read its tickets */
		if (mc_tls_ticket_key_random(&t->keys[0]) < 0) {
			fprintf(stderr, "metrocell cell: no randomness for a session-ticket key\n");
			return MC_EPROTO;
		}
		t->nkeys = 1;
	}
	char err[512];
	int rc = build_ctx(c, &t->ctx, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: %s: tls: %s\n", c->conf->path, err);
		return rc;
	}
	rc = listen_tls(c, tc->listen, t->ctx);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: cannot listen on %s (tls.listen): %s\n",
			tc->listen, mc_strerror(rc));
		return rc;
	}
	char host[64], desc[400];
	uint16_t port;
	mc_parse_hostport(tc->listen, host, sizeof host, &port);
	printf("cell %s tls=%s:%u\n", c->conf->cell, host, mc_http_server_tls_port(c->http));
	fflush(stdout);
	mc_tls_ctx_describe(t->ctx, desc, sizeof desc);
	MC_INFO(COMP, "cell %s serving TLS on %s (ALPN %s%s%s, %zu ticket key%s), certificate %s",
		c->conf->cell, tc->listen, tc->alpn[0], tc->nalpn > 1 ? ", " : "",
		tc->nalpn > 1 ? tc->alpn[1] : "", t->nkeys, t->nkeys == 1 ? "" : "s", desc);
	return 0;
}

void mc_cell_tls_stop(cell *c)
{
	cell_tls *t = &c->tls;
	if (t->hup_started) {
		uv_close((uv_handle_t *)&t->hup, NULL);
		t->hup_started = 0;
	}
	mc_tls_ctx_unref(t->ctx);
	t->ctx = NULL;
	explicit_bzero(t->keys, sizeof t->keys);
}

int mc_cell_tls_set_ticket_keys(cell *c, const mc_ticket_keys_conf *keys, char *err, size_t cap)
{
	cell_tls *t = &c->tls;
	if (!c->conf->tls.enabled || !t->ctx || keys->n == 0)
		return 0;
	if (t->nkeys == keys->n) {
		size_t same = 0;
		for (size_t i = 0; i < keys->n; i++)
			same +=
			    memcmp(t->keys[i].name, keys->keys[i].name, MC_TICKET_NAME_LEN) == 0 &&
			    memcmp(t->keys[i].aes_key, keys->keys[i].aes_key,
				   MC_TICKET_SECRET_LEN) == 0 &&
			    memcmp(t->keys[i].hmac_key, keys->keys[i].hmac_key,
				   MC_TICKET_SECRET_LEN) == 0;
		if (same == keys->n)
			return 0;
	}
	mc_tls_ticket_key saved[MC_TLS_TICKET_KEYS_MAX];
	size_t nsaved = t->nkeys;
	memcpy(saved, t->keys, sizeof saved);
	for (size_t i = 0; i < keys->n; i++) {
		memcpy(t->keys[i].name, keys->keys[i].name, sizeof t->keys[i].name);
		memcpy(t->keys[i].aes_key, keys->keys[i].aes_key, sizeof t->keys[i].aes_key);
		memcpy(t->keys[i].hmac_key, keys->keys[i].hmac_key, sizeof t->keys[i].hmac_key);
	}
	t->nkeys = keys->n;
	mc_tls_ctx *n = NULL;
	int rc = build_ctx(c, &n, err, cap);
	if (rc < 0) {
		memcpy(t->keys, saved, sizeof saved);
		t->nkeys = nsaved;
	} else {
		mc_http_server_tls_ctx_set(c->http, n);
		mc_cell_threads_tls_ctx(c, n);
		mc_tls_ctx_unref(t->ctx);
		t->ctx = n;
		MC_INFO(COMP,
			"cell %s: %zu session-ticket key(s) from the fleet config; open "
			"connections keep the previous context",
			c->conf->cell, t->nkeys);
	}
	explicit_bzero(saved, sizeof saved);
	return rc;
}
