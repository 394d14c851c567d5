/* JSON position index: a small tokenizer over the same text jansson parsed that
 * finds where a value or key starts, so config errors can say file:line:col.
 * Pure functions, no allocation; tolerant of invalid input (the search stops). */
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "config/config_int.h"

#define SCAN_MAX_DEPTH 64

mc_jpos mc_config_jpos_at(const char *text, size_t len, size_t off)
{
	mc_jpos p = {1, 1};
	if (off > len)
		off = len;
	for (size_t i = 0; i < off; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c == '\n') {
			p.line++;
			p.col = 1;
		} else if ((c & 0xC0) != 0x80) {
			p.col++;
		}
	}
	return p;
}

static size_t skip_ws(const char *t, size_t len, size_t p)
{
	while (p < len && (t[p] == ' ' || t[p] == '\t' || t[p] == '\n' || t[p] == '\r'))
		p++;
	return p;
}

/* p is at '"'; on success *end is just past the closing quote. */
static bool skip_string(const char *t, size_t len, size_t p, size_t *end)
{
	for (p++; p < len; p++) {
		if (t[p] == '\\')
			p++;
		else if (t[p] == '"') {
			*end = p + 1;
			return true;
		}
	}
	return false;
}

/* Skips one value of any kind starting at p. */
static bool skip_value(const char *t, size_t len, size_t p, size_t *end)
{
	if (p >= len)
		return false;
	if (t[p] == '"')
		return skip_string(t, len, p, end);
	if (t[p] == '{' || t[p] == '[') {
		size_t depth = 0;
		while (p < len) {
			char c = t[p];
			if (c == '"') {
				if (!skip_string(t, len, p, &p))
					return false;
				continue;
			}
			if (c == '{' || c == '[')
				depth++;
			else if (c == '}' || c == ']') {
				if (--depth == 0) {
					*end = p + 1;
					return true;
				}
			}
			p++;
		}
		return false;
	}
	size_t s = p;
	while (p < len && !strchr(",}] \t\r\n", t[p]))
		p++;
	if (p == s)
		return false;
	*end = p;
	return true;
}

static bool hex4(const char *s, size_t n, unsigned *out)
{
	if (n < 4)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < 4; i++) {
		int h = mc_hexval(s[i]);
		if (h < 0)
			return false;
		v = (v << 4) | (unsigned)h;
	}
	*out = v;
	return true;
}

/* Decodes the next character of a raw JSON string body into UTF-8 bytes.
 * Returns the number of bytes written to u (0 on a malformed escape) and
 * advances *i. */
static size_t next_char(const char *raw, size_t n, size_t *i, unsigned char u[4])
{
	if (raw[*i] != '\\') {
		u[0] = (unsigned char)raw[(*i)++];
		return 1;
	}
	if (*i + 1 >= n)
		return 0;
	char e = raw[*i + 1];
	*i += 2;
	switch (e) {
	case '"':
		u[0] = '"';
		return 1;
	case '\\':
		u[0] = '\\';
		return 1;
	case '/':
		u[0] = '/';
		return 1;
	case 'b':
		u[0] = '\b';
		return 1;
	case 'f':
		u[0] = '\f';
		return 1;
	case 'n':
		u[0] = '\n';
		return 1;
	case 'r':
		u[0] = '\r';
		return 1;
	case 't':
		u[0] = '\t';
		return 1;
	case 'u':
		break;
	default:
		return 0;
	}
	unsigned cp;
	if (!hex4(raw + *i, n - *i, &cp))
		return 0;
	*i += 4;
	if (cp >= 0xD800 && cp <= 0xDBFF) {
		unsigned lo;
		if (*i + 6 > n || raw[*i] != '\\' || raw[*i + 1] != 'u' ||
		    !hex4(raw + *i + 2, n - *i - 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
			return 0;
		*i += 6;
		cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
	}
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		u[0] = (unsigned char)(0xC0 | (cp >> 6));
		u[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		u[0] = (unsigned char)(0xE0 | (cp >> 12));
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	u[0] = (unsigned char)(0xF0 | (cp >> 18));
	u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	u[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Compares a raw (escaped) JSON string body with a decoded key. */
static bool key_equals(const char *raw, size_t n, const char *key)
{
	size_t i = 0, k = 0, klen = strlen(key);
	while (i < n) {
		unsigned char u[4];
		size_t m = next_char(raw, n, &i, u);
		if (m == 0 || k + m > klen || memcmp(key + k, u, m) != 0)
			return false;
		k += m;
	}
	return k == klen;
}

int mc_config_jpos_locate(const char *t, size_t len, const mc_jseg *path, size_t n, bool want_key,
			  mc_jpos *out)
{
	size_t p = skip_ws(t, len, 0);
	for (size_t i = 0; i < n; i++) {
		if (p >= len)
			return MC_ENOTFOUND;
		if (path[i].key) {
			if (t[p] != '{')
				return MC_ENOTFOUND;
			p = skip_ws(t, len, p + 1);
			for (;;) {
				size_t ks = p, ke;
				if (p >= len || t[p] != '"' || !skip_string(t, len, p, &ke))
					return MC_ENOTFOUND;
				bool match = key_equals(t + ks + 1, ke - ks - 2, path[i].key);
				p = skip_ws(t, len, ke);
				if (p >= len || t[p] != ':')
					return MC_ENOTFOUND;
				p = skip_ws(t, len, p + 1);
				if (match) {
					if (want_key && i == n - 1) {
						*out = mc_config_jpos_at(t, len, ks);
						return 0;
					}
					break;
				}
				if (!skip_value(t, len, p, &p))
					return MC_ENOTFOUND;
				p = skip_ws(t, len, p);
				if (p >= len || t[p] != ',')
					return MC_ENOTFOUND;
				p = skip_ws(t, len, p + 1);
			}
		} else {
			if (t[p] != '[')
				return MC_ENOTFOUND;
			p = skip_ws(t, len, p + 1);
			for (size_t k = 0; k < path[i].index; k++) {
				if (p >= len || t[p] == ']' || !skip_value(t, len, p, &p))
					return MC_ENOTFOUND;
				p = skip_ws(t, len, p);
				if (p >= len || t[p] != ',')
					return MC_ENOTFOUND;
				p = skip_ws(t, len, p + 1);
			}
			if (p >= len || t[p] == ']')
				return MC_ENOTFOUND;
		}
	}
	if (p >= len)
		return MC_ENOTFOUND;
	*out = mc_config_jpos_at(t, len, p);
	return 0;
}

/* ---- duplicate-key search ---------------------------------------------------- */

typedef struct dscan {
	const char *t;
	size_t len;
	size_t off; /* the key we look for ends here */
	struct {
		size_t ks, ke; /* raw key span including quotes, or ke == 0 for an index */
		size_t index;
	} st[SCAN_MAX_DEPTH];
	size_t depth;
	size_t found_ks, found_ke, found_depth;
	bool found;
} dscan;

/* Walks the value at *pp; returns false to stop (found, malformed, or past off). */
static bool dscan_value(dscan *s, size_t *pp)
{
	const char *t = s->t;
	size_t len = s->len;
	size_t p = skip_ws(t, len, *pp);
	if (p >= len || p >= s->off)
		return false;
	if (t[p] != '{' && t[p] != '[') {
		if (!skip_value(t, len, p, pp))
			return false;
		return *pp < s->off;
	}
	if (s->depth == SCAN_MAX_DEPTH)
		return false;
	bool obj = t[p] == '{';
	char close = obj ? '}' : ']';
	p = skip_ws(t, len, p + 1);
	if (p < len && t[p] == close) {
		*pp = p + 1;
		return true;
	}
	for (size_t idx = 0;; idx++) {
		if (obj) {
			size_t ks = p, ke;
			if (p >= len || t[p] != '"' || !skip_string(t, len, p, &ke))
				return false;
			if (ke >= s->off) {
				if (ke == s->off) {
					s->found = true;
					s->found_ks = ks;
					s->found_ke = ke;
					s->found_depth = s->depth;
				}
				return false;
			}
			p = skip_ws(t, len, ke);
			if (p >= len || t[p] != ':')
				return false;
			p++;
			s->st[s->depth].ks = ks;
			s->st[s->depth].ke = ke;
		} else {
			s->st[s->depth].ke = 0;
			s->st[s->depth].index = idx;
		}
		s->depth++;
		bool go = dscan_value(s, &p);
		s->depth--;
		if (!go)
			return false;
		p = skip_ws(t, len, p);
		if (p < len && t[p] == ',') {
			p = skip_ws(t, len, p + 1);
			continue;
		}
		if (p < len && t[p] == close) {
			*pp = p + 1;
			return true;
		}
		return false;
	}
}

static void copy_trunc(char *dst, size_t cap, size_t *at, const char *src, size_t n)
{
	if (cap == 0)
		return;
	size_t room = cap - 1 - *at;
	if (n > room)
		n = room;
	memcpy(dst + *at, src, n);
	*at += n;
	dst[*at] = '\0';
}

/* Appends the decoded form of a raw JSON string body. */
static void copy_decoded(char *dst, size_t cap, size_t *at, const char *raw, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char u[4];
		size_t start = i;
		size_t m = next_char(raw, n, &i, u);
		if (m == 0) { /* malformed escape: show the rest as written */
			copy_trunc(dst, cap, at, raw + start, n - start);
			return;
		}
		copy_trunc(dst, cap, at, (const char *)u, m);
	}
}

int mc_config_jpos_key_ending_at(const char *text, size_t len, size_t off, mc_jpos *pos, char *path,
				 size_t pathcap, char *key, size_t keycap)
{
	dscan s;
	memset(&s, 0, sizeof s);
	s.t = text;
	s.len = len;
	s.off = off;
	size_t p = 0;
	(void)dscan_value(&s, &p);
	if (!s.found)
		return MC_ENOTFOUND;
	*pos = mc_config_jpos_at(text, len, s.found_ks);
	size_t at = 0;
	if (pathcap)
		path[0] = '\0';
	if (s.found_depth == 0)
		copy_trunc(path, pathcap, &at, "(root)", 6);
	for (size_t i = 0; i < s.found_depth; i++) {
		if (s.st[i].ke) {
			if (i > 0)
				copy_trunc(path, pathcap, &at, ".", 1);
			copy_decoded(path, pathcap, &at, text + s.st[i].ks + 1,
				     s.st[i].ke - s.st[i].ks - 2);
		} else {
			char b[32];
			int m = snprintf(b, sizeof b, "[%zu]", s.st[i].index);
			copy_trunc(path, pathcap, &at, b, (size_t)m);
		}
	}
	at = 0;
	if (keycap)
		key[0] = '\0';
	copy_decoded(key, keycap, &at, text + s.found_ks + 1, s.found_ke - s.found_ks - 2);
	return 0;
}
