/* Helpers for relaying messages between a client and an upstream (the cell's
 * proxy routes and the region's fallback path): which header fields are
 * end-to-end and travel on, and which belong to one connection. */
#include <string.h>
#include <strings.h>

#include "http/http_int.h"

/* ASCII case-insensitive equality of s[0..n) and the lower-case literal lit
 * (same length). */
static int eq_lower(const char *s, const char *lit, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)lit[i])
			return 0;
	}
	return 1;
}

/* Fields that describe one connection or the message's framing (RFC 9110
 * section 7.6.1; Content-Length and Host are set again by whoever sends).
 * Checked for every relayed field: the length picks the candidates. */
static int hop_by_hop(const char *name, size_t len)
{
	switch (len) {
	case 2:
		return eq_lower(name, "te", 2);
	case 4:
		return eq_lower(name, "host", 4);
	case 7:
		return eq_lower(name, "trailer", 7) || eq_lower(name, "upgrade", 7);
	case 10:
		return eq_lower(name, "connection", 10) || eq_lower(name, "keep-alive", 10);
	case 14:
		return eq_lower(name, "content-length", 14);
	case 16:
		return eq_lower(name, "proxy-connection", 16);
	case 17:
		return eq_lower(name, "transfer-encoding", 17);
	default:
		return 0;
	}
}

static int is_connection(const mc_http_header *h)
{
	return h->name_len == 10 && eq_lower(h->name, "connection", 10);
}

/* The next token of a comma-separated field value at *v (before end), without
 * the blanks around it (may be empty); advances *v. 0 when the value is done. */
static int next_token(const char **v, const char *end, const char **tok, size_t *len)
{
	const char *p = *v;
	while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
		p++;
	if (p >= end)
		return 0;
	const char *t = p;
	while (p < end && *p != ',')
		p++;
	const char *te = p;
	while (te > t && (te[-1] == ' ' || te[-1] == '\t'))
		te--;
	*v = p;
	*tok = t;
	*len = (size_t)(te - t);
	return 1;
}

/* 1 when name is one of the tokens of a Connection field in h[0..n). */
static int connection_listed(const mc_http_header *h, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		if (!is_connection(&h[i]))
			continue;
		const char *v = h[i].value, *end = v + h[i].value_len, *tok;
		size_t tl;
		while (next_token(&v, end, &tok, &tl))
			if (tl == len && strncasecmp(tok, name, len) == 0)
				return 1;
	}
	return 0;
}

int mc_http_header_end_to_end(const mc_http_header *all, size_t n, const mc_http_header *h)
{
	return !hop_by_hop(h->name, h->name_len) &&
	       !connection_listed(all, n, h->name, h->name_len);
}

/* The tokens of the Connection fields, collected once per message: up to
 * RELAY_TOKENS, else has_more (then each field is checked the slow way). */
#define RELAY_TOKENS 8
typedef struct conn_tokens {
	const char *s[RELAY_TOKENS];
	size_t n[RELAY_TOKENS];
	size_t count;
	int has_more;
} conn_tokens;

static void tokens_collect(const mc_http_header *h, size_t n, conn_tokens *t)
{
	t->count = 0;
	t->has_more = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_connection(&h[i]))
			continue;
		const char *v = h[i].value, *end = v + h[i].value_len, *tok;
		size_t tl;
		while (next_token(&v, end, &tok, &tl)) {
			if (tl == 0)
				continue;
			if (t->count == RELAY_TOKENS) {
				t->has_more = 1;
				return;
			}
			t->s[t->count] = tok;
			t->n[t->count++] = tl;
		}
	}
}

static int tokens_list(const conn_tokens *t, const char *name, size_t len)
{
	for (size_t i = 0; i < t->count; i++)
		if (t->n[i] == len && strncasecmp(t->s[i], name, len) == 0)
			return 1;
	return 0;
}

size_t mc_http_relay_headers(const mc_http_header *in, size_t n, mc_http_header *out,
			     int (*skip)(const char *name, size_t len))
{
	/* the Connection fields are parsed once, not once per field (an upstream's
	 * "Connection: keep-alive" is common) */
	conn_tokens t;
	tokens_collect(in, n, &t);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		const mc_http_header *h = &in[i];
		if (hop_by_hop(h->name, h->name_len) ||
		    (t.has_more ? connection_listed(in, n, h->name, h->name_len)
				: tokens_list(&t, h->name, h->name_len)) ||
		    (skip && skip(h->name, h->name_len)))
			continue;
		out[k++] = *h;
	}
	return k;
}
