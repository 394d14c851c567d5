/* The cache store: shards selected by the primary key's hash, each with its own
 * lock, hash table, byte budget (max_bytes / shards) and eviction queues, so
 * lookups on different shards never contend and the total never exceeds
 * max_bytes. Eviction is S3-FIFO (a small FIFO for new objects, a main FIFO with
 * reinsertion, a ghost of recently evicted keys; Yang et al., SOSP 2023) or LRU.
 * The in-flight fills that collapse concurrent misses live in the same shards.
 * docs/architecture.md ("Edge cache") has the measurements behind the default. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"

#define SMALL_PERCENT 10 /* S3-FIFO: share of a shard's budget for the small queue */
#define FREQ_MAX 3	 /* S3-FIFO: saturating access counter */
#define PROMOTE_FREQ 1	 /* S3-FIFO: accesses in the small queue that earn main */
#define GHOST_PROBE 8	 /* ghost table: slots probed per key */
#define GHOST_MIN_WINDOW 16

typedef struct queue {
	mc_cache_obj *head, *tail; /* head = most recently inserted (or used, LRU) */
	size_t bytes, count;
} queue;

typedef struct ghost_slot {
	uint64_t hash;
	uint64_t seq; /* 0: empty */
} ghost_slot;

typedef struct waiter {
	mc_cache_fill_cb cb;
	void *arg;
} waiter;

typedef struct shard shard;

struct mc_cache_fill {
	mc_cache_fill *next;
	shard *s;
	uint64_t hash;
	char *key;
	size_t klen;
	waiter *w;
	size_t nw, capw;
};

struct shard {
	pthread_mutex_t mu;
	mc_cache_obj **buckets;
	size_t nbuckets, nobjs;
	queue small, main;
	size_t used, cap;
	ghost_slot *ghost;
	size_t ghost_mask;
	uint64_t ghost_seq;
	mc_cache_fill *fills;
	size_t nfills;
	uint64_t inserts, evictions, purged, rejected;
} __attribute__((aligned(64)));

struct mc_cache {
	mc_cache_opts o;
	unsigned nshards;
	shard *shards;
	atomic_uint_fast64_t purge_gen;
};

void mc_cache_opts_default(mc_cache_opts *o)
{
	memset(o, 0, sizeof *o);
	o->max_bytes = 64u << 20;
	o->max_object_bytes = 1u << 20;
	o->shards = 16;
	o->policy = MC_CACHE_S3FIFO;
	o->max_waiters = 1024;
	o->max_variants = 32;
}

static size_t pow2_at_least(size_t x)
{
	size_t p = 1;
	while (p < x)
		p <<= 1;
	return p;
}

int mc_cache_new(mc_cache **out, const mc_cache_opts *o)
{
	*out = NULL;
	mc_cache_opts d;
	mc_cache_opts_default(&d);
	if (!o)
		o = &d;
	if (o->max_bytes == 0 || o->max_object_bytes == 0 || o->max_object_bytes > o->max_bytes ||
	    o->shards == 0 || o->shards > 256 || (o->shards & (o->shards - 1)) != 0 ||
	    (o->policy != MC_CACHE_S3FIFO && o->policy != MC_CACHE_LRU) || o->max_waiters == 0 ||
	    o->max_variants == 0)
		return MC_EINVAL;
	mc_cache *c = mc_calloc(1, sizeof *c);
	c->o = *o;
	atomic_init(&c->purge_gen, 0);
	unsigned n = o->shards;
	while (n > 1 && o->max_bytes / n < 4 * o->max_object_bytes)
		n >>= 1;
	c->o.shards = n;
	c->nshards = n;
	if (posix_memalign((void **)&c->shards, 64, n * sizeof(shard)) != 0)
		mc_assert_fail("posix_memalign", __FILE__, __LINE__);
	memset(c->shards, 0, n * sizeof(shard));
	for (unsigned i = 0; i < n; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_init(&s->mu, NULL);
		s->cap = o->max_bytes / n;
		s->nbuckets = 64;
		s->buckets = mc_calloc(s->nbuckets, sizeof *s->buckets);
		if (o->policy == MC_CACHE_S3FIFO) {
			/* About one slot per KiB of budget: a fixed 1.6 % overhead beside the
			 * budget, enough for the ghost window of objects >= 512 bytes. */
			size_t slots = pow2_at_least(MC_MAX((size_t)64, s->cap / 1024));
			s->ghost = mc_calloc(slots, sizeof *s->ghost);
			s->ghost_mask = slots - 1;
		}
	}
	*out = c;
	return 0;
}

const mc_cache_opts *mc_cache_options(const mc_cache *c)
{
	return &c->o;
}

static shard *shard_of(mc_cache *c, uint64_t h)
{
	return &c->shards[(h >> 48) & (c->nshards - 1)];
}

/* ---- queues and table (shard lock held) ---------------------------------------------------- */

static void q_push_head(queue *q, mc_cache_obj *o)
{
	o->qprev = NULL;
	o->qnext = q->head;
	if (q->head)
		q->head->qprev = o;
	else
		q->tail = o;
	q->head = o;
	q->bytes += o->charge;
	q->count++;
}

static void q_remove(queue *q, mc_cache_obj *o)
{
	if (o->qprev)
		o->qprev->qnext = o->qnext;
	else
		q->head = o->qnext;
	if (o->qnext)
		o->qnext->qprev = o->qprev;
	else
		q->tail = o->qprev;
	o->qprev = o->qnext = NULL;
	q->bytes -= o->charge;
	q->count--;
}

static queue *q_of(shard *s, mc_cache_obj *o)
{
	return o->queue == Q_SMALL ? &s->small : &s->main;
}

static void table_grow(shard *s)
{
	size_t nb = s->nbuckets * 2;
	mc_cache_obj **b = mc_calloc(nb, sizeof *b);
	for (size_t i = 0; i < s->nbuckets; i++) {
		mc_cache_obj *o = s->buckets[i];
		while (o) {
			mc_cache_obj *next = o->hnext;
			size_t k = o->hash & (nb - 1);
			o->hnext = b[k];
			b[k] = o;
			o = next;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = nb;
}

static void table_add(shard *s, mc_cache_obj *o)
{
	if (s->nobjs >= s->nbuckets)
		table_grow(s);
	size_t k = o->hash & (s->nbuckets - 1);
	o->hnext = s->buckets[k];
	s->buckets[k] = o;
	s->nobjs++;
}

static void table_del(shard *s, mc_cache_obj *o)
{
	mc_cache_obj **pp = &s->buckets[o->hash & (s->nbuckets - 1)];
	while (*pp != o)
		pp = &(*pp)->hnext;
	*pp = o->hnext;
	o->hnext = NULL;
	s->nobjs--;
}

/* Unlinks o from the shard; its table reference goes onto *grave (released by the
 * caller after unlocking, so no free() runs under the lock). */
static void obj_drop(shard *s, mc_cache_obj *o, mc_cache_obj **grave)
{
	table_del(s, o);
	q_remove(q_of(s, o), o);
	o->queue = Q_NONE;
	s->used -= o->charge;
	o->hnext = *grave;
	*grave = o;
}

static void grave_release(mc_cache_obj *grave)
{
	while (grave) {
		mc_cache_obj *next = grave->hnext;
		grave->hnext = NULL;
		mc_cache_obj_unref(grave);
		grave = next;
	}
}

static bool same_primary(const mc_cache_obj *o, uint64_t h, const char *pk, size_t pl)
{
	return o->hash == h && o->primary_len == pl && memcmp(o->key, pk, pl) == 0;
}

/* ---- S3-FIFO ghost --------------------------------------------------------------------------- */

static void ghost_add(shard *s, uint64_t kh)
{
	uint64_t seq = ++s->ghost_seq;
	uint64_t window = MC_MAX(s->main.count, (size_t)GHOST_MIN_WINDOW);
	ghost_slot *victim = NULL;
	for (size_t i = 0; i < GHOST_PROBE; i++) {
		ghost_slot *g = &s->ghost[(kh + i) & s->ghost_mask];
		if (g->seq == 0 || g->hash == kh || g->seq + window <= seq) {
			victim = g;
			break;
		}
		if (!victim || g->seq < victim->seq)
			victim = g;
	}
	victim->hash = kh;
	victim->seq = seq;
}

/* 1 when kh was evicted from the small queue recently (within the last window
 * ghost insertions, the window being main's object count); forgets it. */
static bool ghost_take(shard *s, uint64_t kh)
{
	uint64_t window = MC_MAX(s->main.count, (size_t)GHOST_MIN_WINDOW);
	for (size_t i = 0; i < GHOST_PROBE; i++) {
		ghost_slot *g = &s->ghost[(kh + i) & s->ghost_mask];
		if (g->seq && g->hash == kh && g->seq + window > s->ghost_seq) {
			g->seq = 0;
			return true;
		}
	}
	return false;
}

/* One eviction step: frees an object, or (S3-FIFO) moves one toward freeing. */
static void evict_step(mc_cache *c, shard *s, mc_cache_obj **grave)
{
	if (c->o.policy == MC_CACHE_LRU) {
		obj_drop(s, s->main.tail, grave);
		s->evictions++;
		return;
	}
	bool from_small =
	    s->small.tail && (s->small.bytes * 100 >= s->cap * SMALL_PERCENT || !s->main.tail);
	if (from_small) {
		mc_cache_obj *t = s->small.tail;
		if (atomic_load_explicit(&t->freq, memory_order_relaxed) >= PROMOTE_FREQ) {
			q_remove(&s->small, t);
			atomic_store_explicit(&t->freq, 0, memory_order_relaxed);
			t->queue = Q_MAIN;
			q_push_head(&s->main, t);
			return;
		}
		ghost_add(s, t->khash);
		obj_drop(s, t, grave);
		s->evictions++;
		return;
	}
	mc_cache_obj *t = s->main.tail;
	unsigned f = atomic_load_explicit(&t->freq, memory_order_relaxed);
	if (f > 0) {
		atomic_store_explicit(&t->freq, (unsigned char)(f - 1), memory_order_relaxed);
		q_remove(&s->main, t);
		q_push_head(&s->main, t);
		return;
	}
	obj_drop(s, t, grave);
	s->evictions++;
}

/* ---- public operations ----------------------------------------------------------------------- */

int mc_cache_lookup(mc_cache *c, const char *pk, size_t pk_len, const mc_cache_header *req,
		    size_t nreq, mc_cache_obj **out)
{
	*out = NULL;
	uint64_t h = mc_cache_hash(pk, pk_len);
	shard *s = shard_of(c, h);
	pthread_mutex_lock(&s->mu);
	for (mc_cache_obj *o = s->buckets[h & (s->nbuckets - 1)]; o; o = o->hnext) {
		if (!same_primary(o, h, pk, pk_len) || !mc_cache_obj_vary_match(o, req, nreq))
			continue;
		if (c->o.policy == MC_CACHE_LRU) {
			q_remove(&s->main, o);
			q_push_head(&s->main, o);
		} else {
			unsigned f = atomic_load_explicit(&o->freq, memory_order_relaxed);
			if (f < FREQ_MAX)
				atomic_store_explicit(&o->freq, (unsigned char)(f + 1),
						      memory_order_relaxed);
		}
		*out = mc_cache_obj_ref(o);
		break;
	}
	pthread_mutex_unlock(&s->mu);
	return *out ? 0 : MC_ENOTFOUND;
}

int mc_cache_insert(mc_cache *c, mc_cache_obj *o)
{
	shard *s = shard_of(c, o->hash);
	if (o->charge > c->o.max_object_bytes || o->charge > s->cap || o->queue != Q_NONE) {
		pthread_mutex_lock(&s->mu);
		s->rejected++;
		pthread_mutex_unlock(&s->mu);
		return MC_ETOOBIG;
	}
	mc_cache_obj *grave = NULL;
	pthread_mutex_lock(&s->mu);
	/* Variants: the same key is replaced; variants stored under other Vary names
	 * are dropped (the origin changed what it varies on); beyond max_variants the
	 * oldest goes. */
	size_t nvar = 0;
	mc_cache_obj *oldest = NULL;
	for (mc_cache_obj *v = s->buckets[o->hash & (s->nbuckets - 1)], *next; v; v = next) {
		next = v->hnext;
		if (!same_primary(v, o->hash, o->key, o->primary_len))
			continue;
		bool same_key = v->key_len == o->key_len && memcmp(v->key, o->key, o->key_len) == 0;
		bool other_vary =
		    v->vary_len != o->vary_len || memcmp(v->vary, o->vary, o->vary_len) != 0;
		if (same_key || other_vary) {
			obj_drop(s, v, &grave);
			continue;
		}
		nvar++;
		if (!oldest || v->times.response_ms < oldest->times.response_ms)
			oldest = v;
	}
	if (nvar >= c->o.max_variants && oldest) {
		obj_drop(s, oldest, &grave);
		s->evictions++;
	}
	while (s->used + o->charge > s->cap) {
		MC_ASSERT(s->small.tail || s->main.tail);
		evict_step(c, s, &grave);
	}
	bool ghost = c->o.policy == MC_CACHE_S3FIFO && ghost_take(s, o->khash);
	mc_cache_obj_ref(o);
	atomic_store_explicit(&o->freq, 0, memory_order_relaxed);
	o->queue = (c->o.policy == MC_CACHE_LRU || ghost) ? Q_MAIN : Q_SMALL;
	table_add(s, o);
	q_push_head(q_of(s, o), o);
	s->used += o->charge;
	s->inserts++;
	pthread_mutex_unlock(&s->mu);
	grave_release(grave);
	return 0;
}

size_t mc_cache_remove(mc_cache *c, const char *pk, size_t pk_len)
{
	uint64_t h = mc_cache_hash(pk, pk_len);
	shard *s = shard_of(c, h);
	mc_cache_obj *grave = NULL;
	size_t n = 0;
	pthread_mutex_lock(&s->mu);
	for (mc_cache_obj *v = s->buckets[h & (s->nbuckets - 1)], *next; v; v = next) {
		next = v->hnext;
		if (same_primary(v, h, pk, pk_len)) {
			obj_drop(s, v, &grave);
			n++;
		}
	}
	s->purged += n;
	pthread_mutex_unlock(&s->mu);
	grave_release(grave);
	return n;
}

uint64_t mc_cache_purge_generation(const mc_cache *c)
{
	return atomic_load_explicit(&c->purge_gen, memory_order_acquire);
}

size_t mc_cache_purge(mc_cache *c, const char *host, size_t host_len, const char *pattern,
		      size_t pattern_len, bool prefix)
{
	size_t total = 0;
	/* before the removal: a fill completing meanwhile sees the new generation */
	atomic_fetch_add_explicit(&c->purge_gen, 1, memory_order_acq_rel);
	for (unsigned i = 0; i < c->nshards; i++) {
		shard *s = &c->shards[i];
		mc_cache_obj *grave = NULL;
		size_t n = 0;
		pthread_mutex_lock(&s->mu);
		for (size_t b = 0; b < s->nbuckets; b++) {
			for (mc_cache_obj *v = s->buckets[b], *next; v; v = next) {
				next = v->hnext;
				if (host_len && (v->host_len != host_len ||
						 strncasecmp(v->host, host, host_len) != 0))
					continue;
				bool hit = prefix
					       ? v->target_len >= pattern_len &&
						     memcmp(v->target, pattern, pattern_len) == 0
					       : v->target_len == pattern_len &&
						     memcmp(v->target, pattern, pattern_len) == 0;
				if (hit) {
					obj_drop(s, v, &grave);
					n++;
				}
			}
		}
		s->purged += n;
		pthread_mutex_unlock(&s->mu);
		grave_release(grave);
		total += n;
	}
	return total;
}

void mc_cache_stats_get(mc_cache *c, mc_cache_stats *out)
{
	memset(out, 0, sizeof *out);
	out->max_bytes = c->o.max_bytes;
	for (unsigned i = 0; i < c->nshards; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_lock(&s->mu);
		out->bytes += s->used;
		out->objects += s->nobjs;
		out->inserts += s->inserts;
		out->evictions += s->evictions;
		out->purged += s->purged;
		out->rejected += s->rejected;
		out->fills_inflight += s->nfills;
		pthread_mutex_unlock(&s->mu);
	}
}

int mc_cache_check(mc_cache *c)
{
	int rc = 0;
	size_t total = 0;
	for (unsigned i = 0; i < c->nshards && rc == 0; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_lock(&s->mu);
		size_t sum = 0, n = 0;
		for (size_t b = 0; b < s->nbuckets; b++)
			for (mc_cache_obj *o = s->buckets[b]; o; o = o->hnext) {
				sum += o->charge;
				n++;
				if (o->queue == Q_NONE || shard_of(c, o->hash) != s)
					rc = MC_EPROTO;
			}
		size_t qn = 0, qb = 0;
		for (int k = 0; k < 2; k++) {
			queue *q = k ? &s->main : &s->small;
			size_t cn = 0, cb = 0;
			for (mc_cache_obj *o = q->head; o; o = o->qnext) {
				cn++;
				cb += o->charge;
				if (o->queue != (k ? Q_MAIN : Q_SMALL))
					rc = MC_EPROTO;
			}
			if (cn != q->count || cb != q->bytes)
				rc = MC_EPROTO;
			qn += cn;
			qb += cb;
		}
		if (sum != s->used || n != s->nobjs || qn != n || qb != sum || s->used > s->cap)
			rc = MC_EPROTO;
		total += s->used;
		pthread_mutex_unlock(&s->mu);
	}
	if (total > c->o.max_bytes)
		rc = MC_EPROTO;
	return rc;
}

void mc_cache_free(mc_cache *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->nshards; i++) {
		shard *s = &c->shards[i];
		MC_ASSERT(s->fills == NULL);
		mc_cache_obj *grave = NULL;
		for (size_t b = 0; b < s->nbuckets; b++)
			while (s->buckets[b])
				obj_drop(s, s->buckets[b], &grave);
		grave_release(grave);
		free(s->buckets);
		free(s->ghost);
		pthread_mutex_destroy(&s->mu);
	}
	free(c->shards);
	free(c);
}

/* ---- request collapsing ---------------------------------------------------------------------- */

int mc_cache_fill_begin(mc_cache *c, const char *pk, size_t pk_len, mc_cache_fill_cb cb, void *arg,
			mc_cache_fill **fill)
{
	uint64_t h = mc_cache_hash(pk, pk_len);
	shard *s = shard_of(c, h);
	int rc;
	pthread_mutex_lock(&s->mu);
	mc_cache_fill *f = s->fills;
	while (f && !(f->hash == h && f->klen == pk_len && memcmp(f->key, pk, pk_len) == 0))
		f = f->next;
	if (!f) {
		f = mc_calloc(1, sizeof *f);
		f->s = s;
		f->hash = h;
		f->key = mc_strndup(pk, pk_len);
		f->klen = pk_len;
		f->next = s->fills;
		s->fills = f;
		s->nfills++;
		*fill = f;
		rc = MC_CACHE_FILL_LEADER;
	} else if (!cb) {
		rc = MC_CACHE_FILL_BUSY;
	} else if (f->nw >= c->o.max_waiters) {
		rc = MC_EFULL;
	} else {
		if (f->nw == f->capw) {
			f->capw = f->capw ? f->capw * 2 : 8;
			f->w = mc_realloc(f->w, f->capw * sizeof *f->w);
		}
		f->w[f->nw++] = (waiter){cb, arg};
		rc = MC_CACHE_FILL_JOINED;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

size_t mc_cache_fill_end(mc_cache *c, mc_cache_fill *f, int err, mc_cache_obj *o)
{
	(void)c;
	shard *s = f->s;
	pthread_mutex_lock(&s->mu);
	mc_cache_fill **pp = &s->fills;
	while (*pp != f)
		pp = &(*pp)->next;
	*pp = f->next;
	s->nfills--;
	pthread_mutex_unlock(&s->mu);
	/* Waiters run without the lock: they may start the next fill of this key. */
	size_t n = f->nw;
	for (size_t i = 0; i < n; i++)
		f->w[i].cb(f->w[i].arg, err, o);
	free(f->w);
	free(f->key);
	free(f);
	return n;
}
