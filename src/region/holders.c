/* Which cells hold a copy of which key, so a write in one cell (or through the
 * region's API) invalidates the others' copies. A bounded hash table with LRU
 * eviction; each key lists its holders, and an invalidation that cannot be
 * delivered (the cell is disconnected) stays pending until the cell is back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "region/region_int.h"

struct holder {
	uint16_t cell;
	uint8_t pending;
	uint64_t version; /* pending: the version to send */
};

struct entry {
	struct entry *hnext;	   /* hash chain */
	struct entry *prev, *next; /* LRU list, most recent at the tail */
	uint32_t hash;
	struct holder *hs;
	uint16_t nh, caph;
	size_t klen;
	char key[];
};

struct mc_holders {
	struct entry **buckets;
	size_t nbuckets;
	size_t count, max;
	struct entry *lru_head, *lru_tail;
	char **cells;
	size_t ncells;
	char self[MC_STATE_MAX_HOME + 1];
	mc_holders_send send;
	void *arg;
	mc_holders_stats st;
};

static uint32_t hash_of(const char *k, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)k[i];
		h *= 16777619u;
	}
	return h;
}

mc_holders *mc_holders_new(size_t max_keys, const char *self, mc_holders_send send, void *arg)
{
	mc_holders *h = mc_calloc(1, sizeof *h);
	h->max = max_keys ? max_keys : MC_HOLDERS_MAX_KEYS;
	h->nbuckets = 1;
	while (h->nbuckets < h->max)
		h->nbuckets <<= 1;
	h->buckets = mc_calloc(h->nbuckets, sizeof *h->buckets);
	h->cells = mc_calloc(MC_HOLDERS_MAX_CELLS, sizeof *h->cells);
	if (self)
		snprintf(h->self, sizeof h->self, "%s", self);
	h->send = send;
	h->arg = arg;
	return h;
}

static void entry_free(struct entry *e)
{
	free(e->hs);
	free(e);
}

void mc_holders_free(mc_holders *h)
{
	if (!h)
		return;
	for (struct entry *e = h->lru_head, *next; e; e = next) {
		next = e->next;
		entry_free(e);
	}
	for (size_t i = 0; i < h->ncells; i++)
		free(h->cells[i]);
	free(h->cells);
	free(h->buckets);
	free(h);
}

/* The id of a cell name, added when new; -1 when the name table is full. */
static int cell_id(mc_holders *h, const char *cell)
{
	for (size_t i = 0; i < h->ncells; i++)
		if (strcmp(h->cells[i], cell) == 0)
			return (int)i;
	if (h->ncells == MC_HOLDERS_MAX_CELLS)
		return -1;
	h->cells[h->ncells] = mc_strdup(cell);
	return (int)h->ncells++;
}

static struct entry *find(mc_holders *h, const char *key, size_t klen, uint32_t hash)
{
	for (struct entry *e = h->buckets[hash & (h->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == hash && e->klen == klen && memcmp(e->key, key, klen) == 0)
			return e;
	return NULL;
}

static void lru_unlink(mc_holders *h, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		h->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		h->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_append(mc_holders *h, struct entry *e)
{
	e->prev = h->lru_tail;
	if (h->lru_tail)
		h->lru_tail->next = e;
	else
		h->lru_head = e;
	h->lru_tail = e;
}

static void remove_entry(mc_holders *h, struct entry *e)
{
	struct entry **pp = &h->buckets[e->hash & (h->nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	lru_unlink(h, e);
	for (uint16_t i = 0; i < e->nh; i++)
		if (e->hs[i].pending)
			h->st.pending--;
	h->count--;
	entry_free(e);
}

static struct entry *get_or_add(mc_holders *h, const char *key, size_t klen)
{
	uint32_t hash = hash_of(key, klen);
	struct entry *e = find(h, key, klen, hash);
	if (e) {
		lru_unlink(h, e);
		lru_append(h, e);
		return e;
	}
	if (h->count >= h->max && h->lru_head) {
		remove_entry(h, h->lru_head);
		h->st.evicted++;
	}
	e = mc_calloc(1, sizeof *e + klen);
	e->hash = hash;
	e->klen = klen;
	memcpy(e->key, key, klen);
	e->hnext = h->buckets[hash & (h->nbuckets - 1)];
	h->buckets[hash & (h->nbuckets - 1)] = e;
	lru_append(h, e);
	h->count++;
	return e;
}

static struct holder *holder_of(struct entry *e, int id)
{
	for (uint16_t i = 0; i < e->nh; i++)
		if (e->hs[i].cell == id)
			return &e->hs[i];
	return NULL;
}

static struct holder *holder_add(struct entry *e, int id)
{
	struct holder *x = holder_of(e, id);
	if (x)
		return x;
	if (e->nh == e->caph) {
		e->caph = e->caph ? (uint16_t)(e->caph * 2) : 2;
		e->hs = mc_realloc(e->hs, e->caph * sizeof *e->hs);
	}
	x = &e->hs[e->nh++];
	memset(x, 0, sizeof *x);
	x->cell = (uint16_t)id;
	return x;
}

static void holder_remove(mc_holders *h, struct entry *e, struct holder *x)
{
	if (x->pending)
		h->st.pending--;
	*x = e->hs[--e->nh];
}

/* Sends to holder x of e; removes it when delivered, else marks it pending. */
static void deliver(mc_holders *h, struct entry *e, struct holder *x, uint64_t version)
{
	if (h->send(h->arg, h->cells[x->cell], e->key, e->klen, version) == 1) {
		h->st.sent++;
		holder_remove(h, e, x);
		return;
	}
	if (!x->pending)
		h->st.pending++;
	x->pending = 1;
	x->version = MC_MAX(x->version, version);
}

void mc_holders_add(mc_holders *h, const char *key, size_t klen, const char *cell)
{
	int id = cell_id(h, cell);
	if (id < 0)
		return;
	struct entry *e = get_or_add(h, key, klen);
	struct holder *x = holder_add(e, id);
	/* It has just read the current record: nothing older is pending for it. */
	if (x->pending) {
		x->pending = 0;
		h->st.pending--;
	}
	x->version = 0;
}

void mc_holders_written(mc_holders *h, const char *key, size_t klen, const char *writer,
			const char *prev_home, uint64_t version)
{
	int wid = writer ? cell_id(h, writer) : -1;
	int pid = -1;
	if (prev_home && prev_home[0] && strcmp(prev_home, h->self) != 0 &&
	    (!writer || strcmp(prev_home, writer) != 0))
		pid = cell_id(h, prev_home);
	struct entry *e = find(h, key, klen, hash_of(key, klen));
	if (!e && pid < 0)
		return;
	if (!e)
		e = get_or_add(h, key, klen);
	if (pid >= 0)
		holder_add(e, pid);
	/* Walk backwards: holder_remove moves the last holder into the gap. */
	for (int i = (int)e->nh - 1; i >= 0; i--) {
		struct holder *x = &e->hs[i];
		if (x->cell == wid)
			holder_remove(h, e, x); /* its own write is newer than its copy */
		else
			deliver(h, e, x, version);
	}
	if (e->nh == 0)
		remove_entry(h, e);
}

void mc_holders_invalidate(mc_holders *h, const char *key, size_t klen, const char *cell,
			   uint64_t version)
{
	int id = cell_id(h, cell);
	if (id < 0)
		return;
	struct entry *e = get_or_add(h, key, klen);
	deliver(h, e, holder_add(e, id), version);
	if (e->nh == 0)
		remove_entry(h, e);
}

void mc_holders_flush(mc_holders *h, const char *cell)
{
	int id = -1;
	for (size_t i = 0; i < h->ncells; i++)
		if (strcmp(h->cells[i], cell) == 0)
			id = (int)i;
	if (id < 0 || h->st.pending == 0)
		return;
	for (struct entry *e = h->lru_head, *next; e; e = next) {
		next = e->next;
		struct holder *x = holder_of(e, id);
		if (!x || !x->pending)
			continue;
		if (h->send(h->arg, cell, e->key, e->klen, x->version) != 1)
			return; /* gone again: the rest waits for the next connection */
		h->st.sent++;
		holder_remove(h, e, x);
		if (e->nh == 0)
			remove_entry(h, e);
	}
}

void mc_holders_stats_get(const mc_holders *h, mc_holders_stats *out)
{
	*out = h->st;
	out->keys = h->count;
}
