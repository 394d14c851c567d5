/* The edge cache (DESIGN.md section 3, docs/architecture.md "Edge cache"): the
 * RFC 9111 subset a shared cache needs, as pure functions; a sharded in-memory
 * store bounded in bytes with S3-FIFO or LRU eviction and reference-counted
 * objects; request collapsing; and an engine that drives them against an
 * abstract upstream. The same code runs in a cell (tier "cell", upstream = the
 * region's shield) and in the region (tier "shield", upstream = the origin).
 * Depends on src/common only; the HTTP plumbing stays with the callers. */
#ifndef MC_CACHE_H
#define MC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "obs/obs.h"

/* A header field; the same layout as mc_http_header, which this module cannot
 * see (src/http comes after it in the dependency order). */
typedef struct mc_cache_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
} mc_cache_header;

/* Returns the first value of header name (case-insensitive) or NULL; *len gets its
 * length. */
const char *mc_cache_header_find(const mc_cache_header *h, size_t n, const char *name, size_t *len);

/* ---- Cache-Control, dates, freshness (pure, RFC 9111) ---------------------------------- */

/* delta-seconds beyond this are taken as this (RFC 9111 section 1.2.2). */
#define MC_CACHE_DELTA_MAX 2147483648LL
/* Heuristic freshness (RFC 9111 section 4.2.2): 10 % of the time since
 * Last-Modified, at most this many seconds. */
#define MC_CACHE_HEURISTIC_MAX_S 3600

/* Response directives a shared cache obeys. Durations are seconds, -1 when the
 * directive is absent. A directive with an invalid value counts as 0 (stale), a
 * repeated one keeps its first value. no-cache and private with a field list are
 * taken as the unqualified directive (the stricter reading). */
typedef struct mc_cache_cc {
	int64_t max_age, s_maxage, swr, sie;
	bool no_store, no_cache, is_private, is_public, must_revalidate, proxy_revalidate;
} mc_cache_cc;

void mc_cache_cc_init(mc_cache_cc *cc);
/* Adds the directives of one Cache-Control field value (call once per field line). */
void mc_cache_cc_parse(mc_cache_cc *cc, const char *v, size_t n);

/* Parses an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) into
 * seconds since the epoch. Returns 0 or MC_EINVAL. */
int mc_cache_date_parse(const char *s, size_t n, int64_t *out);
/* Writes t as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes + NUL). */
void mc_cache_date_format(int64_t t, char out[30]);

/* What the response's header fields say about caching. Pointers point into the
 * headers passed to mc_cache_meta_parse. */
typedef struct mc_cache_meta {
	mc_cache_cc cc;
	int64_t date;	 /* Date in seconds; -1 when absent or invalid */
	int64_t expires; /* Expires; an invalid value is a time in the past (0) */
	bool has_expires;
	int64_t age;	       /* Age in seconds; 0 when absent or invalid */
	int64_t last_modified; /* -1 when absent or invalid */
	const char *etag;      /* NULL when absent */
	size_t etag_len;
	bool has_vary, vary_star, set_cookie;
} mc_cache_meta;

void mc_cache_meta_parse(const mc_cache_header *h, size_t n, mc_cache_meta *m);

/* How long a stored response may be used, derived once when it is stored. */
typedef struct mc_cache_freshness {
	int64_t lifetime_ms; /* freshness lifetime (RFC 9111 section 4.2.1, shared cache) */
	int64_t swr_ms;	     /* stale-while-revalidate window after the lifetime, -1 none */
	int64_t sie_ms;	     /* stale-if-error window after the lifetime, -1 none */
	bool no_stale;	     /* must-revalidate, proxy-revalidate, s-maxage or no-cache:
			      * never served stale, whatever the windows say */
	bool revalidate;     /* no-cache: never fresh, validate before each use */
} mc_cache_freshness;

/* Freshness lifetime: s-maxage, else max-age, else Expires - Date (Date missing:
 * the receive time response_ms), else the heuristic for a heuristically cacheable
 * status with Last-Modified, else 0. */
void mc_cache_freshness_get(const mc_cache_meta *m, int status, int64_t response_ms,
			    mc_cache_freshness *out);

/* When a response was obtained, for its age (RFC 9111 section 4.2.3). Times are
 * wall-clock ms; date_s -1 when the response had no Date. */
typedef struct mc_cache_times {
	int64_t request_ms, response_ms;
	int64_t date_s, age_s;
} mc_cache_times;

/* current_age in ms at now_ms (never negative). */
int64_t mc_cache_age_ms(const mc_cache_times *t, int64_t now_ms);
bool mc_cache_is_fresh(const mc_cache_freshness *f, int64_t age_ms);
/* Stale but usable now while one background refresh runs. */
bool mc_cache_stale_while_revalidate_ok(const mc_cache_freshness *f, int64_t age_ms);
/* Stale but usable now because the upstream failed (error, timeout, 5xx). */
bool mc_cache_stale_if_error_ok(const mc_cache_freshness *f, int64_t age_ms);

/* NULL when a shared cache may store this response to a GET, else a short reason
 * ("no-store", "private", "set-cookie", "vary-star", "authorization", "status",
 * "no-freshness"). authorized: the request carried Authorization (stored only with
 * public, s-maxage or must-revalidate, RFC 9111 section 3.5). A response that is
 * never fresh, has no validator and no stale window is not worth storing. */
const char *mc_cache_unstorable(int status, const mc_cache_meta *m, const mc_cache_freshness *f,
				bool authorized);

/* 1 when response field i of h[0..n) is relayed and stored: hop-by-hop fields,
 * fields listed in Connection, Content-Length, Transfer-Encoding, Age (recomputed by
 * each tier) and X-Metrocell-* (per hop) are not. */
bool mc_cache_header_relayable(const mc_cache_header *h, size_t n, size_t i);
/* 1 when request field i is forwarded upstream: not hop-by-hop, not listed in
 * Connection, not Host, Content-Length, Transfer-Encoding or X-Metrocell-*. */
bool mc_cache_header_forwardable(const mc_cache_header *h, size_t n, size_t i);

/* ---- keys (pure) -------------------------------------------------------------------------- */

/* Appends the normalized field names of the response's Vary header fields to out
 * (lower case, sorted, without duplicates, comma separated; empty without Vary).
 * Returns 0, or MC_EINVAL for "Vary: *" (never served from cache). */
int mc_cache_vary_names(const mc_cache_header *resp, size_t n, mc_buf *out);

/* The cache key: "GET host target" (the primary key: host lower-cased, target =
 * path and query as sent), then for each name of vary ("a,b" as built above)
 * "\nname:value" with the request's values of that field (several lines joined by
 * ", ", each trimmed), or "\nname!" when the request has no such field. HEAD uses
 * the GET key: a HEAD is answered from the stored GET. out is reset first;
 * *primary_len receives the length of the primary key. */
void mc_cache_key_build(mc_buf *out, size_t *primary_len, const char *host, size_t host_len,
			const char *target, size_t target_len, const char *vary, size_t vary_len,
			const mc_cache_header *req, size_t nreq);

/* ---- objects --------------------------------------------------------------------------------- */

/* A stored response: immutable once built, reference counted (atomically), so a
 * hit can be sent while another thread evicts it. */
typedef struct mc_cache_obj mc_cache_obj;

typedef struct mc_cache_obj_spec {
	const char *key; /* the whole key (mc_cache_key_build) */
	size_t key_len, primary_len;
	const char *vary; /* normalized Vary names the key was built with */
	size_t vary_len;
	int status;
	const mc_cache_header *headers; /* the response's; non-relayable fields are dropped */
	size_t nheaders;
	const void *body;
	size_t body_len;
	mc_cache_times times; /* date_s and age_s are taken from the headers */
	const char *tier;     /* static string: the tier whose bytes these are */
} mc_cache_obj_spec;

/* Builds an object in one allocation (refcount 1). A Date field is added when the
 * response has none (RFC 9110 section 6.6.1). Returns 0 and *out, or MC_EINVAL
 * (key or sizes inconsistent). */
int mc_cache_obj_new(const mc_cache_obj_spec *s, mc_cache_obj **out);
/* The object a 304 turns old into: old's body and status, old's fields updated by
 * those of the 304 (RFC 9111 section 3.2; Content-Length and the non-relayable ones
 * are never updated), times of the 304. Returns 0 and *out (refcount 1). */
int mc_cache_obj_revalidated(const mc_cache_obj *old, const mc_cache_header *h304, size_t n,
			     const mc_cache_times *t, mc_cache_obj **out);
mc_cache_obj *mc_cache_obj_ref(mc_cache_obj *o);
/* Drops one reference; the last one frees. Accepts NULL. */
void mc_cache_obj_unref(mc_cache_obj *o);

int mc_cache_obj_status(const mc_cache_obj *o);
const mc_cache_header *mc_cache_obj_headers(const mc_cache_obj *o, size_t *n);
/* The object's fields pre-rendered once for an HTTP/1.1 head: "Name: value\r\n"
 * lines (NUL terminated; *len excludes the NUL) of the fields whose name is a
 * token other than Content-Length, Connection, Transfer-Encoding and Keep-Alive
 * and whose value holds no CR, LF or NUL (the others are in the headers only).
 * Lives as long as the object. */
const char *mc_cache_obj_head(const mc_cache_obj *o, size_t *len);
const char *mc_cache_obj_body(const mc_cache_obj *o, size_t *len);
const char *mc_cache_obj_key(const mc_cache_obj *o, size_t *len, size_t *primary_len);
const char *mc_cache_obj_tier(const mc_cache_obj *o);
const mc_cache_freshness *mc_cache_obj_freshness(const mc_cache_obj *o);
int64_t mc_cache_obj_age_ms(const mc_cache_obj *o, int64_t now_ms);
/* Bytes the object is charged in the store: the allocation (struct, key, fields,
 * body) plus allocator and hash-table overhead. */
size_t mc_cache_obj_charge(const mc_cache_obj *o);
/* Validators for a conditional request: If-None-Match (from ETag) and/or
 * If-Modified-Since (from Last-Modified) into out[0..2). Returns how many. */
size_t mc_cache_obj_validators(const mc_cache_obj *o, mc_cache_header out[2]);
/* 1 when the client's conditional GET (If-None-Match with weak comparison, else
 * If-Modified-Since) is satisfied by o, i.e. the answer is 304. */
bool mc_cache_obj_not_modified(const mc_cache_obj *o, const mc_cache_header *req, size_t n);

/* ---- store ---------------------------------------------------------------------------------- */

typedef enum { MC_CACHE_S3FIFO = 0, MC_CACHE_LRU = 1 } mc_cache_policy;

typedef struct mc_cache_opts {
	size_t max_bytes;	 /* bound on the charge of stored objects (default 64 MiB) */
	size_t max_object_bytes; /* larger objects pass through uncached (default 1 MiB) */
	unsigned shards;	 /* power of two, 1..256 (default 16); lowered until each
				  * shard holds 4 objects of max_object_bytes */
	mc_cache_policy policy;	 /* default S3-FIFO */
	size_t max_waiters;	 /* collapsed requests waiting on one fill (default 1024) */
	size_t max_variants;	 /* Vary variants kept per primary key (default 32) */
} mc_cache_opts;

void mc_cache_opts_default(mc_cache_opts *o);

typedef struct mc_cache mc_cache;

/* Creates a store. Each shard has its own lock and a byte budget of
 * max_bytes / shards, so the total never exceeds max_bytes. Returns 0, or
 * MC_EINVAL when max_object_bytes > max_bytes or a field is out of range. */
int mc_cache_new(mc_cache **out, const mc_cache_opts *o);
/* Frees the store and drops its references (objects still referenced elsewhere
 * live on). No fill may be in flight. Accepts NULL. */
void mc_cache_free(mc_cache *c);
/* The effective options (shards after lowering). */
const mc_cache_opts *mc_cache_options(const mc_cache *c);

/* Finds the variant of primary key pk whose Vary values match the request's
 * headers. Returns 0 with *out (a new reference), or MC_ENOTFOUND. Thread-safe;
 * locks one shard. */
int mc_cache_lookup(mc_cache *c, const char *pk, size_t pk_len, const mc_cache_header *req,
		    size_t nreq, mc_cache_obj **out);
/* Stores o (takes a new reference of its own): replaces the variant with the same
 * key and the variants stored with other Vary names, evicts until the shard's
 * budget holds it. Returns 0, or MC_ETOOBIG (charge above max_object_bytes or the
 * shard budget; nothing changed). Thread-safe. */
int mc_cache_insert(mc_cache *c, mc_cache_obj *o);
/* Removes every variant of primary key pk (unsafe methods invalidate, RFC 9111
 * section 4.4). Returns how many. */
size_t mc_cache_remove(mc_cache *c, const char *pk, size_t pk_len);
/* Purges the objects whose target (path and query) equals pattern, or starts with
 * it when prefix is set, on host (any host when host_len is 0). Returns how many. */
size_t mc_cache_purge(mc_cache *c, const char *host, size_t host_len, const char *pattern,
		      size_t pattern_len, bool prefix);

/* Counts mc_cache_purge calls. A fill that began before a purge does not store
 * what it got (it still answers): it may be the content the purge removed. */
uint64_t mc_cache_purge_generation(const mc_cache *c);

typedef struct mc_cache_stats {
	uint64_t bytes, max_bytes, objects;
	uint64_t inserts, evictions, purged, rejected; /* rejected: too big to store */
	uint64_t fills_inflight;
} mc_cache_stats;

void mc_cache_stats_get(mc_cache *c, mc_cache_stats *out);
/* Checks the store's invariants (per-shard bytes within budget and equal to the sum
 * of charges, queues consistent with the table); for tests. Returns 0 or MC_EPROTO. */
int mc_cache_check(mc_cache *c);

/* ---- request collapsing ---------------------------------------------------------------------- */

typedef struct mc_cache_fill mc_cache_fill;

/* A waiter's outcome: err 0 and o set (borrowed for the call) when the fill stored
 * or produced a shareable response; err MC_EAGAIN (o NULL) when the response may
 * not be shared (private, no-store, Set-Cookie, other Vary names): fetch alone; any
 * other err: the fill failed (the caller applies its failure policy). */
typedef void (*mc_cache_fill_cb)(void *arg, int err, mc_cache_obj *o);

enum { MC_CACHE_FILL_LEADER = 1, MC_CACHE_FILL_JOINED = 2, MC_CACHE_FILL_BUSY = 3 };

/* Joins the fill in flight for primary key pk or starts one. Returns
 * MC_CACHE_FILL_LEADER with *fill set (the caller fetches and must call
 * mc_cache_fill_end exactly once), MC_CACHE_FILL_JOINED (cb(arg, ...) will be
 * called by mc_cache_fill_end, on the thread that calls it), MC_CACHE_FILL_BUSY
 * when cb is NULL and a fill is in flight (nothing registered), or MC_EFULL when
 * max_waiters wait already (nothing registered). */
int mc_cache_fill_begin(mc_cache *c, const char *pk, size_t pk_len, mc_cache_fill_cb cb, void *arg,
			mc_cache_fill **fill);
/* Ends a fill: removes it, then calls every waiter with (err, o) in arrival order
 * (o may be NULL; see mc_cache_fill_cb). Returns the number of waiters called. */
size_t mc_cache_fill_end(mc_cache *c, mc_cache_fill *f, int err, mc_cache_obj *o);

/* ---- engine ---------------------------------------------------------------------------------- */

typedef struct mc_cache_response {
	int status;
	const mc_cache_header *headers;
	size_t nheaders;
	const char *body;
	size_t body_len;
} mc_cache_response;

/* err is 0 with res set, or a negative code (res NULL); res is valid during the call. */
typedef void (*mc_cache_fetch_done)(void *arg, int err, const mc_cache_response *res);
/* The upstream: sends one request (copied before returning) and calls done exactly
 * once, later, on the engine's loop. Returns 0, or a negative code without calling
 * done (e.g. MC_EFULL). */
typedef int (*mc_cache_fetch_fn)(void *ctx, const char *method, const char *target,
				 const mc_cache_header *h, size_t n, const void *body,
				 size_t body_len, mc_cache_fetch_done done, void *arg);

typedef enum {
	MC_CACHE_HIT = 0, /* fresh from this tier */
	MC_CACHE_STALE,	  /* stale: stale-while-revalidate, stale-if-error, or the
			   * upstream tier said its answer was stale */
	MC_CACHE_MISS,	  /* went upstream for a cacheable request (revalidations,
			   * collapsed waiters and upstream errors included) */
	MC_CACHE_PASS,	  /* not cacheable: method, Range, or a response that may not be
			   * stored (no-store, private, too big, ...) */
	MC_CACHE_RESULT_COUNT
} mc_cache_result;

extern const char *const mc_cache_result_names[MC_CACHE_RESULT_COUNT];

typedef struct mc_cache_request {
	const char *method, *target; /* NUL terminated */
	const char *host;	     /* the Host field ("" when absent) */
	size_t host_len;
	const mc_cache_header
	    *headers; /* the client's (Vary, Authorization, Range, conditionals) */
	size_t nheaders;
	const mc_cache_header *fwd; /* what to send upstream (the caller's filtering and
				     * additions); the engine replaces the conditionals */
	size_t nfwd;
	/* Called (may be NULL) with fwd_arg before each upstream request this request
	 * makes, so the caller builds fwd and nfwd only when they are needed (a hit
	 * never needs them); later calls must find them built. */
	void (*fwd_prepare)(void *fwd_arg);
	void *fwd_arg;
	const void *body;
	size_t body_len;
} mc_cache_request;

/* The answer to one request, valid during the callback only. err < 0: the upstream
 * failed and nothing may be served (status etc. unset; MC_ETIMEDOUT, MC_EFULL when
 * the fill's waiters or the upstream queue were full, ...). Otherwise headers are
 * relayable fields without Age and X-Metrocell-Cache; the caller adds
 * "Age: age_s" (when age_s >= 0) and "X-Metrocell-Cache: cache_status". */
typedef struct mc_cache_answer {
	mc_cache_result result;
	int err;
	int status;
	const mc_cache_header *headers;
	size_t nheaders;
	const char *body;
	size_t body_len;
	int64_t age_s;
	const char *tier;      /* "cell", "shield" or "origin": whose bytes these are */
	bool collapsed;	       /* served from another request's fill */
	bool upstream;	       /* this request waited on the upstream */
	char cache_status[48]; /* e.g. "hit; tier=cell" */
	/* Answers from a stored object: headers pre-rendered as HTTP/1.1 field lines
	 * (mc_cache_obj_head; fields it leaves out are not sent over HTTP/1.1
	 * either), valid during the callback. NULL otherwise. */
	const char *head;
	size_t head_len;
} mc_cache_answer;

typedef void (*mc_cache_answer_cb)(void *arg, const mc_cache_answer *a);

typedef struct mc_cache_engine_opts {
	const char *tier; /* this tier's name: "cell" or "shield" (static string) */
	mc_cache_fetch_fn fetch;
	void *fetch_ctx;
	/* Wall clock in ms (NULL: mc_wall_ms); tests inject their own. */
	int64_t (*clock_ms)(void *arg);
	void *clock_arg;
} mc_cache_engine_opts;

typedef struct mc_cache_engine_stats {
	uint64_t results[MC_CACHE_RESULT_COUNT];
	uint64_t collapsed;	 /* answered from another request's fill */
	uint64_t bytes_avoided;	 /* body bytes answered without crossing upstream */
	uint64_t refreshes;	 /* background refreshes started (stale-while-revalidate) */
	uint64_t revalidated;	 /* 304 answers that renewed a stored object */
	uint64_t stale_on_error; /* stale answers because the upstream failed */
	uint64_t upstream_errors;
	uint64_t fetches; /* requests sent upstream */
} mc_cache_engine_stats;

typedef struct mc_cache_engine mc_cache_engine;

/* An engine on one loop thread over a shared store. Returns 0 or MC_EINVAL. */
int mc_cache_engine_new(mc_cache_engine **out, mc_cache *store, const mc_cache_engine_opts *o);
/* Frees the engine; every fetch must have completed (free the upstream first, which
 * completes them with MC_ECANCELED). Accepts NULL. */
void mc_cache_engine_free(mc_cache_engine *e);
/* Answers req through cb exactly once, now (hit) or later from the loop. req and
 * what it points to must stay valid until cb has run. */
void mc_cache_engine_handle(mc_cache_engine *e, const mc_cache_request *req, mc_cache_answer_cb cb,
			    void *arg);
void mc_cache_engine_stats_get(const mc_cache_engine *e, mc_cache_engine_stats *out);

/* ---- metrics --------------------------------------------------------------------------------- */

/* Sets the engine's families (metrocell_cache_requests_total{...,result}, _collapsed_total,
 * _origin_bytes_avoided_total, ...) in m with the given pre-rendered labels (e.g.
 * cell="lax",route="static"). Call from the engine's thread. */
void mc_cache_engine_metrics(const mc_cache_engine *e, mc_metrics *m, const char *labels);
/* Sets the store's gauges and counters (metrocell_cache_bytes, _objects, _evictions_total,
 * ...) in m with the given labels ("" for none). */
void mc_cache_store_metrics(mc_cache *c, mc_metrics *m, const char *labels);

/* ---- purge requests -------------------------------------------------------------------------- */

#define MC_CACHE_PURGE_MAX 1000 /* host + pattern bytes of one purge */

typedef struct mc_cache_purge_spec {
	bool prefix;
	char host[MC_CACHE_PURGE_MAX + 1]; /* "" = every host */
	size_t host_len;
	char pattern[MC_CACHE_PURGE_MAX + 1];
	size_t pattern_len;
} mc_cache_purge_spec;

/* Parses a purge request body: {"key": "/a?b"} (exact target) or {"prefix": "/img/"},
 * optionally with "host". Returns 0, or MC_EINVAL with a message in err. */
int mc_cache_purge_parse(const char *body, size_t len, mc_cache_purge_spec *out, char *err,
			 size_t errcap);

#endif
