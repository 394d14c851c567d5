/* The RFC 9111 subset of a shared cache as pure functions: Cache-Control and
 * HTTP-date parsing, freshness lifetime and age, whether a response may be stored,
 * which fields are relayed, and the cache key with its Vary part. No I/O, no
 * clock: callers pass the times. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/cache_int.h"

static bool ows(char c)
{
	return c == ' ' || c == '\t';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

bool mc_cache_token_eq(const char *a, size_t n, const char *b)
{
	return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

const char *mc_cache_header_find(const mc_cache_header *h, size_t n, const char *name, size_t *len)
{
	for (size_t i = 0; i < n; i++) {
		if (mc_cache_token_eq(h[i].name, h[i].name_len, name)) {
			if (len)
				*len = h[i].value_len;
			return h[i].value;
		}
	}
	return NULL;
}

static uint64_t load64(const char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

uint64_t mc_cache_hash(const char *s, size_t n)
{
	/* 8 bytes per step (a key is hashed on every request, twice on a miss), each
	 * word mixed in by a multiply; the final avalanche spreads the low bits into
	 * the high ones (shard selection). */
	uint64_t h = 1469598103934665603ull ^ (n * 0x9e3779b97f4a7c15ull);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		h ^= load64(s + i) * 0xbf58476d1ce4e5b9ull;
		h = (h << 31 | h >> 33) * 0x94d049bb133111ebull;
	}
	uint64_t t = 0;
	for (size_t k = 0; i + k < n; k++)
		t |= (uint64_t)(unsigned char)s[i + k] << (8 * k);
	h ^= t * 0xbf58476d1ce4e5b9ull;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return h;
}

/* ---- Cache-Control --------------------------------------------------------------------- */

void mc_cache_cc_init(mc_cache_cc *cc)
{
	memset(cc, 0, sizeof *cc);
	cc->max_age = cc->s_maxage = cc->swr = cc->sie = -1;
}

/* delta-seconds: digits only; invalid or empty is 0 (stale), too large is capped. */
static int64_t delta_seconds(const char *v, size_t n)
{
	if (n == 0)
		return 0;
	int64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return 0;
		if (x < MC_CACHE_DELTA_MAX)
			x = x * 10 + (v[i] - '0');
	}
	return x > MC_CACHE_DELTA_MAX ? MC_CACHE_DELTA_MAX : x;
}

static void set_delta(int64_t *slot, const char *v, size_t n, bool has_value)
{
	if (*slot >= 0)
		return; /* the first occurrence wins */
	*slot = has_value ? delta_seconds(v, n) : 0;
}

static void cc_apply(mc_cache_cc *cc, const char *name, size_t nl, const char *v, size_t vl,
		     bool has_value)
{
	if (mc_cache_token_eq(name, nl, "max-age"))
		set_delta(&cc->max_age, v, vl, has_value);
	else if (mc_cache_token_eq(name, nl, "s-maxage"))
		set_delta(&cc->s_maxage, v, vl, has_value);
	else if (mc_cache_token_eq(name, nl, "stale-while-revalidate"))
		set_delta(&cc->swr, v, vl, has_value);
	else if (mc_cache_token_eq(name, nl, "stale-if-error"))
		set_delta(&cc->sie, v, vl, has_value);
	else if (mc_cache_token_eq(name, nl, "no-store"))
		cc->no_store = true;
	else if (mc_cache_token_eq(name, nl, "no-cache"))
		cc->no_cache = true;
	else if (mc_cache_token_eq(name, nl, "private"))
		cc->is_private = true;
	else if (mc_cache_token_eq(name, nl, "public"))
		cc->is_public = true;
	else if (mc_cache_token_eq(name, nl, "must-revalidate"))
		cc->must_revalidate = true;
	else if (mc_cache_token_eq(name, nl, "proxy-revalidate"))
		cc->proxy_revalidate = true;
	/* unknown directives are ignored (RFC 9111 section 5.2.3) */
}

void mc_cache_cc_parse(mc_cache_cc *cc, const char *v, size_t n)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (ows(v[i]) || v[i] == ','))
			i++;
		size_t ns = i;
		while (i < n && v[i] != '=' && v[i] != ',' && !ows(v[i]))
			i++;
		size_t nl = i - ns;
		while (i < n && ows(v[i]))
			i++;
		const char *val = NULL;
		size_t vl = 0;
		bool has_value = false;
		if (i < n && v[i] == '=') {
			has_value = true;
			i++;
			while (i < n && ows(v[i]))
				i++;
			if (i < n && v[i] == '"') { /* quoted-string; a backslash quotes a byte */
				i++;
				val = v + i;
				size_t vs = i;
				while (i < n && v[i] != '"')
					i += (v[i] == '\\' && i + 1 < n) ? 2 : 1;
				vl = (i < n ? i : n) - vs;
				if (i < n)
					i++;
			} else {
				val = v + i;
				size_t vs = i;
				while (i < n && v[i] != ',' && !ows(v[i]))
					i++;
				vl = i - vs;
			}
		}
		if (nl > 0)
			cc_apply(cc, v + ns, nl, val, vl, has_value);
		while (i < n && v[i] != ',') /* garbage after a directive */
			i++;
	}
}

/* ---- HTTP-date -------------------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static const char MONTHS[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
				   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char WDAYS[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"}; /* 1970-01-01 */

static int month_of(const char *s)
{
	for (int i = 0; i < 12; i++)
		if (memcmp(s, MONTHS[i], 3) == 0)
			return i + 1;
	return 0;
}

/* Reads exactly w digits at s. */
static bool digits(const char *s, int w, int *out)
{
	int x = 0;
	for (int i = 0; i < w; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		x = x * 10 + (s[i] - '0');
	}
	*out = x;
	return true;
}

static bool hms(const char *s, int *h, int *mi, int *se)
{
	return digits(s, 2, h) && s[2] == ':' && digits(s + 3, 2, mi) && s[5] == ':' &&
	       digits(s + 6, 2, se) && *h < 24 && *mi < 60 && *se < 61;
}

int mc_cache_date_parse(const char *s, size_t n, int64_t *out)
{
	while (n && ows(*s)) {
		s++;
		n--;
	}
	while (n && ows(s[n - 1]))
		n--;
	int y, mo, d, h, mi, se;
	if (n == 29 && s[3] == ',' && s[4] == ' ' && s[7] == ' ' && s[11] == ' ' && s[16] == ' ' &&
	    memcmp(s + 25, " GMT", 4) == 0) {
		/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
		if (!digits(s + 5, 2, &d) || !(mo = month_of(s + 8)) || !digits(s + 12, 4, &y) ||
		    !hms(s + 17, &h, &mi, &se))
			return MC_EINVAL;
	} else if (n == 24 && s[3] == ' ' && s[7] == ' ' && s[10] == ' ' && s[19] == ' ') {
		/* asctime: Sun Nov  6 08:49:37 1994 */
		char dd[2] = {s[8] == ' ' ? '0' : s[8], s[9]};
		if (!(mo = month_of(s + 4)) || !digits(dd, 2, &d) || !hms(s + 11, &h, &mi, &se) ||
		    !digits(s + 20, 4, &y))
			return MC_EINVAL;
	} else {
		/* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
		const char *c = memchr(s, ',', n);
		if (!c || (size_t)(s + n - c) != 24 || c[1] != ' ' || c[4] != '-' || c[8] != '-' ||
		    c[11] != ' ' || memcmp(c + 20, " GMT", 4) != 0)
			return MC_EINVAL;
		if (!digits(c + 2, 2, &d) || !(mo = month_of(c + 5)) || !digits(c + 9, 2, &y) ||
		    !hms(c + 12, &h, &mi, &se))
			return MC_EINVAL;
		y += y < 70 ? 2000 : 1900; /* RFC 9110 section 5.6.7: within 50 years */
	}
	if (d < 1 || d > 31)
		return MC_EINVAL;
	*out = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
	return 0;
}

void mc_cache_date_format(int64_t t, char out[30])
{
	int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
	int64_t secs = t - days * 86400;
	/* civil_from_days */
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t y = (int64_t)yoe + era * 400;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	unsigned d = doy - (153 * mp + 2) / 5 + 1;
	unsigned m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	int wd = (int)(((days % 7) + 7) % 7);
	char tmp[96]; /* years past 9999 would not fit the 29 bytes: clamp */
	snprintf(tmp, sizeof tmp, "%s, %02u %s %04d %02d:%02d:%02d GMT", WDAYS[wd], d,
		 MONTHS[m - 1], (int)MC_MAX(0, MC_MIN(y, 9999)), (int)(secs / 3600),
		 (int)(secs / 60 % 60), (int)(secs % 60));
	memcpy(out, tmp, 29);
	out[29] = '\0';
}

/* ---- meta, freshness, storability ----------------------------------------------------------- */

static bool list_has(const char *v, size_t n, const char *tok)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (ows(v[i]) || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && ows(v[e - 1]))
			e--;
		if (e > s && mc_cache_token_eq(v + s, e - s, tok))
			return true;
	}
	return false;
}

void mc_cache_meta_parse(const mc_cache_header *h, size_t n, mc_cache_meta *m)
{
	memset(m, 0, sizeof *m);
	mc_cache_cc_init(&m->cc);
	m->date = m->last_modified = -1;
	bool have_date = false, have_age = false, have_lm = false;
	for (size_t i = 0; i < n; i++) {
		const char *name = h[i].name, *v = h[i].value;
		size_t nl = h[i].name_len, vl = h[i].value_len;
		int64_t t;
		if (mc_cache_token_eq(name, nl, "cache-control")) {
			mc_cache_cc_parse(&m->cc, v, vl);
		} else if (mc_cache_token_eq(name, nl, "date")) {
			if (!have_date && mc_cache_date_parse(v, vl, &t) == 0)
				m->date = t;
			have_date = true;
		} else if (mc_cache_token_eq(name, nl, "expires")) {
			if (!m->has_expires)
				m->expires = mc_cache_date_parse(v, vl, &t) == 0 ? t : 0;
			m->has_expires = true;
		} else if (mc_cache_token_eq(name, nl, "age")) {
			uint64_t a;
			size_t s = 0, e = vl;
			while (s < e && ows(v[s]))
				s++;
			while (e > s && ows(v[e - 1]))
				e--;
			if (!have_age && mc_parse_u64(v + s, e - s, UINT64_MAX, &a) == 0)
				m->age = a > (uint64_t)MC_CACHE_DELTA_MAX ? MC_CACHE_DELTA_MAX
									  : (int64_t)a;
			have_age = true;
		} else if (mc_cache_token_eq(name, nl, "last-modified")) {
			if (!have_lm && mc_cache_date_parse(v, vl, &t) == 0)
				m->last_modified = t;
			have_lm = true;
		} else if (mc_cache_token_eq(name, nl, "etag")) {
			if (!m->etag) {
				m->etag = v;
				m->etag_len = vl;
			}
		} else if (mc_cache_token_eq(name, nl, "vary")) {
			m->has_vary = true;
			if (list_has(v, vl, "*"))
				m->vary_star = true;
		} else if (mc_cache_token_eq(name, nl, "set-cookie")) {
			m->set_cookie = true;
		}
	}
}

/* RFC 9110 section 15.1: statuses a cache may store with heuristic freshness. */
static bool heuristic_status(int s)
{
	static const int ok[] = {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501};
	for (size_t i = 0; i < MC_ARRAY_LEN(ok); i++)
		if (ok[i] == s)
			return true;
	return false;
}

void mc_cache_freshness_get(const mc_cache_meta *m, int status, int64_t response_ms,
			    mc_cache_freshness *out)
{
	const mc_cache_cc *cc = &m->cc;
	int64_t base = m->date >= 0 ? m->date : response_ms / 1000;
	int64_t life;
	if (cc->s_maxage >= 0)
		life = cc->s_maxage * 1000;
	else if (cc->max_age >= 0)
		life = cc->max_age * 1000;
	else if (m->has_expires)
		life = m->expires > base ? (m->expires - base) * 1000 : 0;
	else if (m->last_modified >= 0 && heuristic_status(status) && base > m->last_modified)
		life = MC_MIN((base - m->last_modified) * 100,
			      (int64_t)MC_CACHE_HEURISTIC_MAX_S * 1000);
	else
		life = 0;
	out->lifetime_ms = life;
	out->swr_ms = cc->swr >= 0 ? cc->swr * 1000 : -1;
	out->sie_ms = cc->sie >= 0 ? cc->sie * 1000 : -1;
	out->no_stale =
	    cc->must_revalidate || cc->proxy_revalidate || cc->s_maxage >= 0 || cc->no_cache;
	out->revalidate = cc->no_cache;
}

int64_t mc_cache_age_ms(const mc_cache_times *t, int64_t now_ms)
{
	int64_t apparent = t->date_s >= 0 ? MC_MAX(0, t->response_ms - t->date_s * 1000) : 0;
	int64_t delay = MC_MAX(0, t->response_ms - t->request_ms);
	int64_t corrected = t->age_s * 1000 + delay;
	int64_t initial = MC_MAX(apparent, corrected);
	return initial + MC_MAX(0, now_ms - t->response_ms);
}

bool mc_cache_is_fresh(const mc_cache_freshness *f, int64_t age_ms)
{
	return !f->revalidate && age_ms < f->lifetime_ms;
}

bool mc_cache_stale_while_revalidate_ok(const mc_cache_freshness *f, int64_t age_ms)
{
	return !f->no_stale && f->swr_ms >= 0 && age_ms < f->lifetime_ms + f->swr_ms;
}

bool mc_cache_stale_if_error_ok(const mc_cache_freshness *f, int64_t age_ms)
{
	return !f->no_stale && f->sie_ms >= 0 && age_ms < f->lifetime_ms + f->sie_ms;
}

const char *mc_cache_unstorable(int status, const mc_cache_meta *m, const mc_cache_freshness *f,
				bool authorized)
{
	const mc_cache_cc *cc = &m->cc;
	if (status < 200 || status == 206 || status == 304 || status >= 500)
		return "status";
	if (cc->no_store)
		return "no-store";
	if (cc->is_private)
		return "private";
	if (m->set_cookie)
		return "set-cookie";
	if (m->vary_star)
		return "vary-star";
	if (authorized && !(cc->is_public || cc->s_maxage >= 0 || cc->must_revalidate))
		return "authorization";
	bool explicit_fresh = cc->s_maxage >= 0 || cc->max_age >= 0 || m->has_expires;
	if (!explicit_fresh && !cc->is_public && !heuristic_status(status))
		return "no-freshness";
	bool never_fresh = f->revalidate || f->lifetime_ms == 0;
	bool validator = m->etag || m->last_modified >= 0;
	bool stale_use = !f->no_stale && (f->swr_ms > 0 || f->sie_ms > 0);
	if (never_fresh && !validator && !stale_use)
		return "no-freshness";
	return NULL;
}

/* ---- relayed fields ------------------------------------------------------------------------ */

static bool listed_in_connection(const mc_cache_header *h, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		if (!mc_cache_token_eq(h[i].name, h[i].name_len, "connection"))
			continue;
		const char *v = h[i].value;
		size_t vl = h[i].value_len, k = 0;
		while (k < vl) {
			while (k < vl && (ows(v[k]) || v[k] == ','))
				k++;
			size_t s = k;
			while (k < vl && v[k] != ',')
				k++;
			size_t e = k;
			while (e > s && ows(v[e - 1]))
				e--;
			if (e - s == len && strncasecmp(v + s, name, len) == 0)
				return true;
		}
	}
	return false;
}

static bool in_set(const char *name, size_t len, const char *const *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (mc_cache_token_eq(name, len, set[i]))
			return true;
	return false;
}

static const char *const HOP[] = {"connection", "keep-alive",	 "proxy-connection",
				  "te",		"trailer",	 "transfer-encoding",
				  "upgrade",	"content-length"};

static bool metrocell_field(const char *name, size_t len)
{
	return len >= 12 && strncasecmp(name, "x-metrocell-", 12) == 0;
}

bool mc_cache_header_relayable(const mc_cache_header *h, size_t n, size_t i)
{
	const char *name = h[i].name;
	size_t len = h[i].name_len;
	if (in_set(name, len, HOP, MC_ARRAY_LEN(HOP)) || mc_cache_token_eq(name, len, "age") ||
	    mc_cache_token_eq(name, len, "proxy-authenticate") || metrocell_field(name, len))
		return false;
	return !listed_in_connection(h, n, name, len);
}

bool mc_cache_header_forwardable(const mc_cache_header *h, size_t n, size_t i)
{
	const char *name = h[i].name;
	size_t len = h[i].name_len;
	if (in_set(name, len, HOP, MC_ARRAY_LEN(HOP)) || mc_cache_token_eq(name, len, "host") ||
	    mc_cache_token_eq(name, len, "proxy-authorization") || metrocell_field(name, len))
		return false;
	return !listed_in_connection(h, n, name, len);
}

/* ---- keys ------------------------------------------------------------------------------------ */

#define VARY_NAMES_MAX 32

typedef struct span {
	const char *p;
	size_t n;
} span;

static int span_cmp(const void *a, const void *b)
{
	const span *x = a, *y = b;
	size_t m = MC_MIN(x->n, y->n);
	int d = strncasecmp(x->p, y->p, m);
	if (d)
		return d;
	return x->n < y->n ? -1 : x->n > y->n;
}

int mc_cache_vary_names(const mc_cache_header *resp, size_t n, mc_buf *out)
{
	span names[VARY_NAMES_MAX];
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!mc_cache_token_eq(resp[i].name, resp[i].name_len, "vary"))
			continue;
		const char *v = resp[i].value;
		size_t vl = resp[i].value_len, j = 0;
		while (j < vl) {
			while (j < vl && (ows(v[j]) || v[j] == ','))
				j++;
			size_t s = j;
			while (j < vl && v[j] != ',')
				j++;
			size_t e = j;
			while (e > s && ows(v[e - 1]))
				e--;
			if (e == s)
				continue;
			if (e - s == 1 && v[s] == '*')
				return MC_EINVAL;
			for (size_t c = s; c < e; c++) /* a field name is a token */
				if ((unsigned char)v[c] <= 0x20 || v[c] == ':' || v[c] == '!' ||
				    (unsigned char)v[c] >= 0x7f)
					return MC_EINVAL;
			if (k == VARY_NAMES_MAX)
				return MC_EINVAL; /* not a variant space worth caching */
			names[k++] = (span){v + s, e - s};
		}
	}
	qsort(names, k, sizeof names[0], span_cmp);
	for (size_t i = 0; i < k; i++) {
		if (i > 0 && span_cmp(&names[i], &names[i - 1]) == 0)
			continue;
		if (i > 0)
			mc_buf_append(out, ",", 1);
		for (size_t c = 0; c < names[i].n; c++) {
			char ch = lower(names[i].p[c]);
			mc_buf_append(out, &ch, 1);
		}
	}
	return 0;
}

void mc_cache_key_vary_append(mc_buf *out, const char *vary, size_t vary_len,
			      const mc_cache_header *req, size_t nreq)
{
	size_t i = 0;
	while (i < vary_len) {
		size_t s = i;
		while (i < vary_len && vary[i] != ',')
			i++;
		const char *name = vary + s;
		size_t nl = i - s;
		i++;
		mc_buf_append(out, "\n", 1);
		mc_buf_append(out, name, nl);
		bool any = false;
		for (size_t k = 0; k < nreq; k++) {
			if (req[k].name_len != nl || strncasecmp(req[k].name, name, nl) != 0)
				continue;
			const char *v = req[k].value;
			size_t vs = 0, ve = req[k].value_len;
			while (vs < ve && ows(v[vs]))
				vs++;
			while (ve > vs && ows(v[ve - 1]))
				ve--;
			mc_buf_append(out, any ? ", " : ":", any ? 2 : 1);
			mc_buf_append(out, v + vs, ve - vs);
			any = true;
		}
		if (!any)
			mc_buf_append(out, "!", 1);
	}
}

size_t mc_cache_key_primary_write(char *out, const char *host, size_t host_len, const char *target,
				  size_t target_len)
{
	char *p = out;
	memcpy(p, "GET ", 4);
	p += 4;
	for (size_t i = 0; i < host_len; i++)
		*p++ = lower(host[i]);
	*p++ = ' ';
	memcpy(p, target, target_len);
	return (size_t)(p + target_len - out);
}

void mc_cache_key_build(mc_buf *out, size_t *primary_len, const char *host, size_t host_len,
			const char *target, size_t target_len, const char *vary, size_t vary_len,
			const mc_cache_header *req, size_t nreq)
{
	mc_buf_reset(out);
	mc_buf_reserve(out, 6 + host_len + target_len);
	out->len = mc_cache_key_primary_write(out->data, host, host_len, target, target_len);
	out->data[out->len] = '\0';
	*primary_len = out->len;
	if (vary_len)
		mc_cache_key_vary_append(out, vary, vary_len, req, nreq);
}
