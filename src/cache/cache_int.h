/* Declarations shared by the files of src/cache/: the object layout (the store
 * links it into its queues and table) and small helpers. */
#ifndef MC_CACHE_INT_H
#define MC_CACHE_INT_H

#include <stdatomic.h>

#include "cache/cache.h"

enum { Q_NONE = 0, Q_SMALL = 1, Q_MAIN = 2 };

struct mc_cache_obj {
	atomic_uint refs;
	/* Store links, guarded by the owning shard's lock. */
	mc_cache_obj *hnext;	     /* hash chain */
	mc_cache_obj *qprev, *qnext; /* S3-FIFO small/main queue or the LRU list */
	uint8_t queue;		     /* Q_* */
	atomic_uchar freq;	     /* S3-FIFO access counter, 0..3 */
	/* Immutable after mc_cache_obj_new. */
	uint64_t hash;	/* of the primary key: table and shard */
	uint64_t khash; /* of the whole key: the S3-FIFO ghost */
	const char *key;
	size_t key_len, primary_len;
	const char *host, *target; /* inside key */
	size_t host_len, target_len;
	const char *vary;
	size_t vary_len;
	int status;
	mc_cache_header *headers;
	size_t nheaders;
	const char *head; /* the fields that may be sent as "Name: value\r\n" lines, NUL
			   * terminated (mc_cache_obj_head) */
	size_t head_len;
	const char *body;
	size_t body_len;
	mc_cache_times times;
	mc_cache_freshness fresh;
	const char *etag, *last_modified; /* values inside headers, NULL when absent */
	size_t etag_len, lm_len;
	bool auth_ok;	     /* may answer a request that carries Authorization */
	bool upstream_stale; /* the upstream tier said these bytes were stale */
	const char *tier;
	size_t charge;
};

/* Bytes charged on top of the allocation: allocator header and the share of the
 * hash table's bucket array (load factor >= 0.5). */
#define MC_CACHE_OBJ_OVERHEAD 32

uint64_t mc_cache_hash(const char *s, size_t n);
/* Writes the primary key "GET host target" (host lower-cased) to out, which has
 * room for 5 + host_len + target_len bytes; returns its length (no NUL). */
size_t mc_cache_key_primary_write(char *out, const char *host, size_t host_len, const char *target,
				  size_t target_len);
/* 1 when the request's values of o's Vary fields are the ones o was stored for. */
bool mc_cache_obj_vary_match(const mc_cache_obj *o, const mc_cache_header *req, size_t nreq);
/* Appends the "\nname:value" part of a key for vary names (see mc_cache_key_build). */
void mc_cache_key_vary_append(mc_buf *out, const char *vary, size_t vary_len,
			      const mc_cache_header *req, size_t nreq);
bool mc_cache_token_eq(const char *a, size_t n, const char *b);
/* Marks o as filled with a stale answer from its upstream (set before sharing). */
void mc_cache_obj_set_upstream_stale(mc_cache_obj *o, bool v);

#endif
