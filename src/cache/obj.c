/* Cache objects: one allocation holding the key, the relayable response fields
 * and the body, immutable once built and reference counted, so a thread can send
 * a hit while another evicts it. Also the object-level RFC 9111 pieces:
 * validators, client conditionals, and the 304 update. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/cache_int.h"

static bool date_present(const mc_cache_header *h, size_t n)
{
	return mc_cache_header_find(h, n, "date", NULL) != NULL;
}

static bool tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* 1 when h may go into the pre-rendered head as "Name: value\r\n": a token name
 * that is not framing (the server sets those), a value without CR, LF or NUL.
 * The HTTP server drops the other fields (and so does the head). */
static bool line_safe(const mc_cache_header *h)
{
	if (h->name_len == 0)
		return false;
	for (size_t i = 0; i < h->name_len; i++)
		if (!tchar((unsigned char)h->name[i]))
			return false;
	for (size_t i = 0; i < h->value_len; i++)
		if (h->value[i] == '\r' || h->value[i] == '\n' || h->value[i] == '\0')
			return false;
	return !mc_cache_token_eq(h->name, h->name_len, "content-length") &&
	       !mc_cache_token_eq(h->name, h->name_len, "connection") &&
	       !mc_cache_token_eq(h->name, h->name_len, "transfer-encoding") &&
	       !mc_cache_token_eq(h->name, h->name_len, "keep-alive");
}

/* Copies h: as a head line at *line when it is safe (the field's name and value
 * then point into the line), else as bare name and value at *other. */
static void field_put(mc_cache_header *out, const mc_cache_header *h, char **line, char **other)
{
	bool safe = line_safe(h);
	char *p = safe ? *line : *other;
	memcpy(p, h->name, h->name_len);
	out->name = p;
	out->name_len = h->name_len;
	p += h->name_len;
	if (safe) {
		memcpy(p, ": ", 2);
		p += 2;
	}
	if (h->value_len)
		memcpy(p, h->value, h->value_len);
	out->value = p;
	out->value_len = h->value_len;
	p += h->value_len;
	if (safe) {
		memcpy(p, "\r\n", 2);
		*line = p + 2;
	} else {
		*other = p;
	}
}

int mc_cache_obj_new(const mc_cache_obj_spec *s, mc_cache_obj **out)
{
	*out = NULL;
	if (!s->key || s->key_len < s->primary_len || s->primary_len < 6 ||
	    memcmp(s->key, "GET ", 4) != 0 || (s->body_len && !s->body) ||
	    (s->nheaders && !s->headers) || (s->vary_len && !s->vary))
		return MC_EINVAL;
	const char *sp = memchr(s->key + 4, ' ', s->primary_len - 4);
	if (!sp)
		return MC_EINVAL;

	mc_cache_meta m;
	mc_cache_meta_parse(s->headers, s->nheaders, &m);
	bool add_date = !date_present(s->headers, s->nheaders);
	/* Field strings live in the pre-rendered head ("Name: value\r\n" lines, then
	 * a NUL), unsafe ones bare after it. */
	size_t nkeep = 0, linebytes = 0, otherbytes = 0;
	for (size_t i = 0; i < s->nheaders; i++) {
		if (!mc_cache_header_relayable(s->headers, s->nheaders, i))
			continue;
		nkeep++;
		if (line_safe(&s->headers[i]))
			linebytes += s->headers[i].name_len + s->headers[i].value_len + 4;
		else
			otherbytes += s->headers[i].name_len + s->headers[i].value_len;
	}
	if (add_date) {
		nkeep++;
		linebytes += 4 + 29 + 4;
	}
	size_t size = sizeof(mc_cache_obj) + nkeep * sizeof(mc_cache_header) + s->key_len +
		      s->vary_len + linebytes + 1 + otherbytes + s->body_len;
	mc_cache_obj *o = mc_alloc(size);
	memset(o, 0, sizeof *o);
	atomic_init(&o->refs, 1);
	atomic_init(&o->freq, 0);
	o->headers = (mc_cache_header *)(void *)(o + 1);
	char *p = (char *)(o->headers + nkeep);

	memcpy(p, s->key, s->key_len);
	o->key = p;
	o->key_len = s->key_len;
	o->primary_len = s->primary_len;
	o->host = p + 4;
	o->host_len = (size_t)(sp - (s->key + 4));
	o->target = o->host + o->host_len + 1;
	o->target_len = s->primary_len - 5 - o->host_len;
	p += s->key_len;
	if (s->vary_len)
		memcpy(p, s->vary, s->vary_len);
	o->vary = p;
	o->vary_len = s->vary_len;
	p += s->vary_len;

	size_t k = 0;
	char *line = p, *other = p + linebytes + 1;
	for (size_t i = 0; i < s->nheaders; i++) {
		if (mc_cache_header_relayable(s->headers, s->nheaders, i))
			field_put(&o->headers[k++], &s->headers[i], &line, &other);
	}
	if (add_date) {
		char d[30];
		mc_cache_date_format(s->times.response_ms / 1000, d);
		field_put(&o->headers[k++], &(mc_cache_header){"Date", 4, d, 29}, &line, &other);
	}
	MC_ASSERT(line == p + linebytes && other == p + linebytes + 1 + otherbytes);
	*line = '\0';
	o->head = p;
	o->head_len = linebytes;
	p = other;
	o->nheaders = k;
	if (s->body_len)
		memcpy(p, s->body, s->body_len);
	o->body = p;
	o->body_len = s->body_len;

	o->status = s->status;
	o->times = s->times;
	o->times.date_s = m.date;
	o->times.age_s = m.age;
	mc_cache_freshness_get(&m, s->status, s->times.response_ms, &o->fresh);
	o->etag = mc_cache_header_find(o->headers, o->nheaders, "etag", &o->etag_len);
	o->last_modified =
	    mc_cache_header_find(o->headers, o->nheaders, "last-modified", &o->lm_len);
	o->auth_ok = m.cc.is_public || m.cc.s_maxage >= 0 || m.cc.must_revalidate;
	o->tier = s->tier ? s->tier : "origin";
	o->hash = mc_cache_hash(o->key, o->primary_len);
	o->khash = mc_cache_hash(o->key, o->key_len);
	o->charge = size + MC_CACHE_OBJ_OVERHEAD;
	*out = o;
	return 0;
}

int mc_cache_obj_revalidated(const mc_cache_obj *old, const mc_cache_header *h304, size_t n,
			     const mc_cache_times *t, mc_cache_obj **out)
{
	mc_cache_header *merged = mc_alloc((old->nheaders + n + 1) * sizeof *merged);
	bool new_date = date_present(h304, n);
	size_t k = 0;
	for (size_t i = 0; i < old->nheaders; i++) {
		const mc_cache_header *h = &old->headers[i];
		bool replaced = false;
		for (size_t j = 0; j < n && !replaced; j++)
			replaced = h304[j].name_len == h->name_len &&
				   strncasecmp(h304[j].name, h->name, h->name_len) == 0 &&
				   mc_cache_header_relayable(h304, n, j);
		/* Without a Date in the 304 the old one is wrong now: a new one is added. */
		if (!replaced && !(mc_cache_token_eq(h->name, h->name_len, "date") && !new_date))
			merged[k++] = *h;
	}
	for (size_t j = 0; j < n; j++)
		merged[k++] = h304[j];
	mc_cache_obj_spec s = {
	    .key = old->key,
	    .key_len = old->key_len,
	    .primary_len = old->primary_len,
	    .vary = old->vary,
	    .vary_len = old->vary_len,
	    .status = old->status,
	    .headers = merged,
	    .nheaders = k,
	    .body = old->body,
	    .body_len = old->body_len,
	    .times = *t,
	    .tier = old->tier,
	};
	int rc = mc_cache_obj_new(&s, out);
	if (rc == 0)
		(*out)->upstream_stale = old->upstream_stale;
	free(merged);
	return rc;
}

mc_cache_obj *mc_cache_obj_ref(mc_cache_obj *o)
{
	atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
	return o;
}

void mc_cache_obj_unref(mc_cache_obj *o)
{
	if (!o)
		return;
	if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
		free(o);
}

void mc_cache_obj_set_upstream_stale(mc_cache_obj *o, bool v)
{
	o->upstream_stale = v;
}

int mc_cache_obj_status(const mc_cache_obj *o)
{
	return o->status;
}

const mc_cache_header *mc_cache_obj_headers(const mc_cache_obj *o, size_t *n)
{
	*n = o->nheaders;
	return o->headers;
}

const char *mc_cache_obj_head(const mc_cache_obj *o, size_t *len)
{
	*len = o->head_len;
	return o->head;
}

const char *mc_cache_obj_body(const mc_cache_obj *o, size_t *len)
{
	*len = o->body_len;
	return o->body;
}

const char *mc_cache_obj_key(const mc_cache_obj *o, size_t *len, size_t *primary_len)
{
	if (len)
		*len = o->key_len;
	if (primary_len)
		*primary_len = o->primary_len;
	return o->key;
}

const char *mc_cache_obj_tier(const mc_cache_obj *o)
{
	return o->tier;
}

const mc_cache_freshness *mc_cache_obj_freshness(const mc_cache_obj *o)
{
	return &o->fresh;
}

int64_t mc_cache_obj_age_ms(const mc_cache_obj *o, int64_t now_ms)
{
	return mc_cache_age_ms(&o->times, now_ms);
}

size_t mc_cache_obj_charge(const mc_cache_obj *o)
{
	return o->charge;
}

size_t mc_cache_obj_validators(const mc_cache_obj *o, mc_cache_header out[2])
{
	size_t n = 0;
	if (o->etag)
		out[n++] = (mc_cache_header){"If-None-Match", 13, o->etag, o->etag_len};
	if (o->last_modified)
		out[n++] = (mc_cache_header){"If-Modified-Since", 17, o->last_modified, o->lm_len};
	return n;
}

/* Weak comparison (RFC 9110 section 8.8.3.2): the opaque tags match, W/ aside. */
static bool etag_weak_eq(const char *a, size_t al, const char *b, size_t bl)
{
	if (al >= 2 && a[0] == 'W' && a[1] == '/') {
		a += 2;
		al -= 2;
	}
	if (bl >= 2 && b[0] == 'W' && b[1] == '/') {
		b += 2;
		bl -= 2;
	}
	return al == bl && al >= 2 && memcmp(a, b, al) == 0;
}

bool mc_cache_obj_not_modified(const mc_cache_obj *o, const mc_cache_header *req, size_t n)
{
	if (o->status != 200)
		return false;
	size_t vl;
	const char *v = mc_cache_header_find(req, n, "if-none-match", &vl);
	if (v) { /* If-None-Match present: If-Modified-Since is ignored */
		size_t i = 0;
		while (i < vl) {
			while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
				i++;
			size_t s = i;
			while (i < vl && v[i] != ',')
				i++;
			size_t e = i;
			while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
				e--;
			if (e - s == 1 && v[s] == '*')
				return true;
			if (o->etag && etag_weak_eq(v + s, e - s, o->etag, o->etag_len))
				return true;
		}
		return false;
	}
	v = mc_cache_header_find(req, n, "if-modified-since", &vl);
	int64_t ims, lm;
	if (!v || !o->last_modified || mc_cache_date_parse(v, vl, &ims) < 0 ||
	    mc_cache_date_parse(o->last_modified, o->lm_len, &lm) < 0)
		return false;
	return lm <= ims;
}

bool mc_cache_obj_vary_match(const mc_cache_obj *o, const mc_cache_header *req, size_t nreq)
{
	if (o->vary_len == 0)
		return o->key_len == o->primary_len;
	mc_buf b;
	mc_buf_init(&b);
	mc_cache_key_vary_append(&b, o->vary, o->vary_len, req, nreq);
	bool eq = b.len == o->key_len - o->primary_len &&
		  memcmp(b.data, o->key + o->primary_len, b.len) == 0;
	mc_buf_fini(&b);
	return eq;
}
