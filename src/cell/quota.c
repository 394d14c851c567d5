/* Route quotas: one token bucket per (quota, key) held in the cell's memory.
 * A bucket holds up to burst tokens and refills at rate per second; a request
 * takes one token or is answered 429 with Retry-After. The number of buckets is
 * bounded by the quota's max_keys: buckets that have refilled completely carry
 * no information and are dropped as they are met at the cold end of the LRU
 * list; when max_keys is reached, the least recently used bucket is evicted
 * even if not full (counted: such a key is forgiven its debt). See
 * docs/operations.md "Quotas". */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/edge.h"

/* Keys longer than this are kept as their first KEY_HEAD bytes plus a hash. */
#define KEY_MAX 256
#define KEY_HEAD 239
/* Buckets found full at the LRU tail and dropped per request, at most. */
#define IDLE_SWEEP 2

/* LRU list links, first in a bucket so a link is its bucket. */
typedef struct qlink {
	struct qlink *lprev, *lnext;
} qlink;

typedef struct bucket {
	qlink l;		/* LRU list, most recent after the sentinel */
	struct bucket *hnext;	/* hash chain */
	uint64_t hash;
	uint64_t last_ns;		/* tokens were computed at this time */
	double tokens;
	uint16_t klen;
	char key[];
} bucket;

/* The buckets of one quota definition, shared by every data-plane thread of
 * the cell (so a client's rate does not depend on the thread its connection
 * landed on) and by the snapshots that define the quota identically. */
typedef struct qstore {
	cell_shared link;          /* in the main thread's registry; refs: handles using it */
	const mc_quota_conf *conf; /* &own */
	mc_quota_conf own;         /* a copy: the buckets outlive the snapshot they came from */
	pthread_mutex_t lock;      /* the table, the LRU list and the counters below */
	bucket **table;
	size_t tcap; /* power of two */
	size_t n;
	qlink lru; /* sentinel */
	uint32_t evicted_idle, evicted_full; /* by the take in progress */
} qstore;

/* One thread's handle on a quota: its metrics, its reference on the buckets. */
struct cell_quota {
	const mc_quota_conf *conf; /* &st->own */
	int refs;                  /* this thread's snapshots sharing it */
	qstore *st;
	cell_shared_reg *reg;      /* NULL: st is this handle's alone */
	mc_series *allowed, *limited, *evict_idle, *evict_full, *gauge;
};

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void lru_unlink(bucket *b)
{
	b->l.lprev->lnext = b->l.lnext;
	b->l.lnext->lprev = b->l.lprev;
}

static void lru_push_front(qstore *q, bucket *b)
{
	b->l.lnext = q->lru.lnext;
	b->l.lprev = &q->lru;
	q->lru.lnext->lprev = &b->l;
	q->lru.lnext = &b->l;
}

/* The least recently used bucket, or NULL. */
static bucket *lru_tail(qstore *q)
{
	return q->lru.lprev == &q->lru ? NULL : (bucket *)(void *)q->lru.lprev;
}

static void table_grow(qstore *q)
{
	size_t ncap = q->tcap ? q->tcap * 2 : 64;
	bucket **nt = mc_calloc(ncap, sizeof *nt);
	for (size_t i = 0; i < q->tcap; i++) {
		bucket *b = q->table[i];
		while (b) {
			bucket *next = b->hnext;
			size_t at = (size_t)(b->hash & (ncap - 1));
			b->hnext = nt[at];
			nt[at] = b;
			b = next;
		}
	}
	free(q->table);
	q->table = nt;
	q->tcap = ncap;
}

static void bucket_remove(qstore *q, bucket *b)
{
	bucket **pp = &q->table[b->hash & (q->tcap - 1)];
	while (*pp != b)
		pp = &(*pp)->hnext;
	*pp = b->hnext;
	lru_unlink(b);
	free(b);
	q->n--;
}

/* Tokens of b at now, without changing it. */
static double tokens_at(const qstore *q, const bucket *b, uint64_t now)
{
	double t = b->tokens;
	if (now > b->last_ns)
		t += (double)(now - b->last_ns) / 1e9 * q->conf->rate;
	return t > (double)q->conf->burst ? (double)q->conf->burst : t;
}

static bool same_def(const mc_quota_conf *a, const mc_quota_conf *b)
{
	return strcmp(a->name, b->name) == 0 && a->rate == b->rate && a->burst == b->burst &&
	       a->key == b->key && a->max_keys == b->max_keys &&
	       ((!a->header && !b->header) || (a->header && b->header && strcmp(a->header, b->header) == 0));
}

static cell_shared *qstore_new(const void *key)
{
	const mc_quota_conf *conf = key;
	qstore *st = mc_calloc(1, sizeof *st);
	st->own = *conf;
	st->own.name = mc_strdup(conf->name);
	st->own.header = conf->header ? mc_strdup(conf->header) : NULL;
	st->conf = &st->own;
	pthread_mutex_init(&st->lock, NULL);
	st->lru.lnext = st->lru.lprev = &st->lru;
	table_grow(st);
	return &st->link;
}

static bool qstore_same(const cell_shared *e, const void *key)
{
	return same_def(((const qstore *)(const void *)e)->conf, key);
}

static void qstore_free(qstore *st)
{
	free(st->own.name);
	free(st->own.header);
	qlink *l = st->lru.lnext;
	while (l != &st->lru) {
		qlink *next = l->lnext;
		free(l);
		l = next;
	}
	free(st->table);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

cell_quota *mc_cell_quota_new(cell *c, const mc_quota_conf *conf)
{
	cell_quota *q = mc_calloc(1, sizeof *q);
	q->reg = c && c->main ? c->main->quotas : NULL;
	q->st = (qstore *)(void *)mc_cell_shared_get(q->reg, conf, qstore_same, qstore_new);
	q->conf = q->st->conf;
	q->refs = 1;
	conf = q->conf;
	if (c) {
		q->allowed = mc_cell_series(c, "metrocell_quota_requests_total",
					    "Requests checked against a quota, by result.",
					    MC_METRIC_COUNTER, "quota", conf->name, "result",
					    "allowed");
		q->limited = mc_cell_series(c, "metrocell_quota_requests_total",
					    "Requests checked against a quota, by result.",
					    MC_METRIC_COUNTER, "quota", conf->name, "result",
					    "limited");
		q->evict_idle = mc_cell_series(
		    c, "metrocell_quota_evictions_total",
		    "Token buckets dropped: idle (refilled, nothing lost) or full (max_keys "
		    "reached, the key's debt forgiven).",
		    MC_METRIC_COUNTER, "quota", conf->name, "reason", "idle");
		q->evict_full = mc_cell_series(
		    c, "metrocell_quota_evictions_total",
		    "Token buckets dropped: idle (refilled, nothing lost) or full (max_keys "
		    "reached, the key's debt forgiven).",
		    MC_METRIC_COUNTER, "quota", conf->name, "reason", "max_keys");
		/* one gauge per cell, read from the shared buckets when /metrics is
		 * rendered (mc_cell_quotas_gauges): another thread's copy would keep
		 * a count from its last request */
		if (!c->main || c->main == c)
			q->gauge = mc_cell_series(c, "metrocell_quota_buckets",
						  "Token buckets held in memory.", MC_METRIC_GAUGE,
						  "quota", conf->name, NULL, NULL);
	}
	return q;
}

cell_quota *mc_cell_quota_ref(cell_quota *q)
{
	q->refs++;
	return q;
}

void mc_cell_quota_free(cell_quota *q)
{
	if (!q || --q->refs > 0)
		return;
	if (mc_cell_shared_put(q->reg, &q->st->link))
		qstore_free(q->st);
	free(q);
}

void mc_cell_quotas_gauges(cell *c)
{
	cell_snapshot *s = c->snap;
	for (size_t i = 0; s && i < s->nquotas; i++)
		if (s->quotas[i]->gauge)
			s->quotas[i]->gauge->value = (double)mc_cell_quota_buckets(s->quotas[i]);
}

const mc_quota_conf *mc_cell_quota_conf(const cell_quota *q)
{
	return q->conf;
}

size_t mc_cell_quota_buckets(const cell_quota *q)
{
	pthread_mutex_lock(&q->st->lock);
	size_t n = q->st->n;
	pthread_mutex_unlock(&q->st->lock);
	return n;
}

/* Drops full buckets at the cold end (they would be recreated identical), and
 * when room is still needed for a new one, the least recently used bucket. */
static void make_room(qstore *q, uint64_t now, int need)
{
	for (int i = 0; i < IDLE_SWEEP && lru_tail(q); i++) {
		bucket *t = lru_tail(q);
		if (tokens_at(q, t, now) < (double)q->conf->burst)
			break;
		bucket_remove(q, t);
		q->evicted_idle++;
	}
	if (need && q->n >= q->conf->max_keys && lru_tail(q)) {
		bucket_remove(q, lru_tail(q));
		q->evicted_full++;
	}
}

static void take(qstore *q, const char *key, size_t klen, uint64_t now, quota_verdict *out);

void mc_cell_quota_take(cell_quota *cq, const char *key, size_t klen, uint64_t now,
			quota_verdict *out)
{
	qstore *st = cq->st;
	pthread_mutex_lock(&st->lock);
	st->evicted_idle = st->evicted_full = 0;
	take(st, key, klen, now, out);
	uint32_t idle = st->evicted_idle, full = st->evicted_full;
	size_t n = st->n;
	pthread_mutex_unlock(&st->lock);
	if (cq->evict_idle)
		cq->evict_idle->value += idle;
	if (cq->evict_full)
		cq->evict_full->value += full;
	if (cq->gauge)
		cq->gauge->value = (double)n;
}

static void take(qstore *q, const char *key, size_t klen, uint64_t now, quota_verdict *out)
{
	char shortened[KEY_MAX + 1];
	uint64_t h = fnv1a(key, klen);
	if (klen > KEY_MAX) {
		memcpy(shortened, key, KEY_HEAD);
		snprintf(shortened + KEY_HEAD, sizeof shortened - KEY_HEAD, "#%016llx",
			 (unsigned long long)h);
		key = shortened;
		klen = KEY_HEAD + 17;
		h = fnv1a(key, klen);
	}
	bucket *b = q->table[h & (q->tcap - 1)];
	while (b && !(b->hash == h && b->klen == klen && memcmp(b->key, key, klen) == 0))
		b = b->hnext;
	if (b) {
		lru_unlink(b);
		make_room(q, now, 0);
	} else {
		make_room(q, now, 1);
		if (q->n >= q->tcap - q->tcap / 4)
			table_grow(q);
		b = mc_alloc(sizeof *b + klen);
		b->hash = h;
		b->klen = (uint16_t)klen;
		memcpy(b->key, key, klen);
		b->tokens = (double)q->conf->burst;
		b->last_ns = now;
		size_t at = (size_t)(h & (q->tcap - 1));
		b->hnext = q->table[at];
		q->table[at] = b;
		q->n++;
	}
	lru_push_front(q, b);
	b->tokens = tokens_at(q, b, now);
	if (now > b->last_ns)
		b->last_ns = now;
	double rate = q->conf->rate;
	out->allowed = b->tokens >= 1.0;
	if (out->allowed)
		b->tokens -= 1.0;
	out->tokens = b->tokens;
	out->retry_s = out->allowed ? 0 : (uint64_t)ceil((1.0 - b->tokens) / rate);
	if (!out->allowed && out->retry_s < 1)
		out->retry_s = 1;
	out->reset_s = (uint64_t)ceil(((double)q->conf->burst - b->tokens) / rate);
}

/* The bucket key of a request: the client address (without the port) or a
 * header's value; requests without that header share the bucket "". */
static void request_key(const mc_quota_conf *qc, const mc_http_request *req, const char **key,
			size_t *klen)
{
	if (qc->key == MC_QUOTA_KEY_HEADER) {
		*key = mc_http_header_find(req->headers, req->nheaders, qc->header, klen);
		if (!*key) {
			*key = "";
			*klen = 0;
		}
		return;
	}
	const char *p = req->peer;
	const char *colon = strrchr(p, ':');
	size_t n = colon ? (size_t)(colon - p) : strlen(p);
	if (n >= 2 && p[0] == '[' && p[n - 1] == ']') {
		p++;
		n -= 2;
	}
	*key = p;
	*klen = n;
}

int mc_cell_quota_admit(cell_req *r)
{
	cell_quota *q = r->route->quota;
	const mc_quota_conf *qc = q->conf;
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	const char *key;
	size_t klen;
	request_key(qc, req, &key, &klen);
	quota_verdict v;
	mc_cell_quota_take(q, key, klen, mc_now_ns(), &v);
	if (v.allowed) {
		if (q->allowed)
			q->allowed->value += 1;
		return 0;
	}
	if (q->limited)
		q->limited->value += 1;
	char retry[24], limit[24], reset[24];
	snprintf(retry, sizeof retry, "%llu", (unsigned long long)v.retry_s);
	snprintf(limit, sizeof limit, "%u", (unsigned)qc->burst);
	snprintf(reset, sizeof reset, "%llu", (unsigned long long)v.reset_s);
	mc_http_header h[] = {
		{"Content-Type", 12, "application/json", 16},
		{"Retry-After", 11, retry, strlen(retry)},
		{"RateLimit-Limit", 15, limit, strlen(limit)},
		{"RateLimit-Remaining", 19, "0", 1},
		{"RateLimit-Reset", 15, reset, strlen(reset)},
	};
	mc_buf body;
	mc_buf_init(&body);
	mc_buf_append_str(&body, "{\"error\":\"quota_exceeded\",\"message\":");
	char msg[200];
	snprintf(msg, sizeof msg, "quota %s allows %g requests per second with a burst of %u; "
		 "retry in %llu s", qc->name, qc->rate, (unsigned)qc->burst,
		 (unsigned long long)v.retry_s);
	mc_buf_append_json(&body, msg, strlen(msg));
	mc_buf_append_str(&body, ",\"quota\":");
	mc_buf_append_json(&body, qc->name, strlen(qc->name));
	mc_buf_printf(&body, ",\"retry_after_s\":%llu}\n", (unsigned long long)v.retry_s);
	mc_cell_finish(r, 429, OUTCOME_REFUSED, h, MC_ARRAY_LEN(h), body.data, body.len);
	mc_buf_fini(&body);
	return 1;
}
