/* Declarations shared by the files of the cell's hot-state KV API: kv.c (the HTTP
 * handler), kv_state.c (class rules, acknowledgement waits, backlog bounds,
 * invalidations, the sweeper, metrics) and kv_region.c (calls to the region's KV
 * API for read-through and regional keys). docs/operations.md describes the
 * behaviour. */
#ifndef MC_CELL_KV_INT_H
#define MC_CELL_KV_INT_H

#include "cell/cell_int.h"

#define KV_MAX_WAITERS 65536   /* ack:region writes waiting for the region at once */
#define KV_REGION_RETRY_MS 500 /* after a failed call, the region counts as down this long */
#define KV_SWEEP_STEP 10000    /* records the sweeper examines per state.sweep_interval_ms */

typedef enum {
	KV_GET = 1,
	KV_HEAD,
	KV_PUT,
	KV_DEL,
	KV_INCR,
	KV_MGET,
} kv_action;

typedef struct kv_req kv_req;

typedef struct cell_kv {
	cell *c;
	/* The class rules for the store, in the order of c->conf->classes.rules. */
	mc_state_prefix *prefixes;
	size_t nprefixes;
	uint64_t copy_max_age_ms; /* largest copy bound of any rule (the sweeper's) */
	int closing;

	/* Region client (NULL without region.http). */
	mc_http_pool *region;
	uint64_t region_down_until_ns;
	char region_err[160];
	int calls; /* region calls not yet completed */

	/* ack:region writes waiting for the region, in seq order. */
	kv_req *wait_head, *wait_tail;
	size_t nwait;
	uint64_t acked_seq;
	uv_timer_t ack_timer;
	int ack_timer_on;

	/* Backlog: the age is re-read at most every 50 ms. */
	uint64_t age_checked_ns;
	uint64_t age_ms;

	uv_timer_t sweep_timer;
	int sweeping;
	int handles; /* timers not yet closed */

	mc_series *rr_read_through, *rr_regional_key;
	mc_series *invalidations, *backlog_refused, *ack_timeouts, *stale_served, *unavailable;
	mc_series *neg_copies;
} cell_kv;

/* One KV request in flight. Freed by kv_finish (which answers it). */
struct kv_req {
	cell_req *r;
	cell_kv *kv;
	kv_action action;
	const mc_class_rule_conf *rule;
	mc_state_class cls;
	const char *raw; /* the key as the client encoded it (no suffix) */
	size_t rawlen;
	mc_kv_params qp;
	uint64_t if_version;
	unsigned cond; /* MC_W_IF_ABSENT / MC_W_IF_PRESENT */
	int64_t delta;
	int prefetched; /* a write that needed the region's record has fetched it */

	/* A replica copy kept to fall back on while the region is asked. */
	int have_copy;
	mc_record copy;
	mc_buf copy_val;

	/* ack:region */
	mc_write_result wres;
	uint64_t deadline_ns;
	kv_req *wnext;

	/* multi-get */
	struct mget *mg;

	/* A regional write's answer, relayed once the cached copy is dropped. */
	int relay_status;
	char relay_hdr[5][80];
	size_t relay_len[5]; /* 0: header absent */
};

/* kv.c */
void kv_finish(kv_req *kr, int status, cell_outcome outcome, const mc_http_header *h, size_t n,
	       const void *body, size_t len);
void kv_fail(kv_req *kr, int status, cell_outcome outcome, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The same after the headers h[0..n). */
void kv_fail_h(kv_req *kr, int status, cell_outcome outcome, const mc_http_header *h, size_t n,
	       const char *code, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
void kv_answer_written(kv_req *kr, const mc_write_result *res, int acked);
void kv_mget_handle(kv_req *kr);

/* kv_state.c */
mc_state_class kv_class_of(cell_kv *kv, const char *key, size_t klen,
			   const mc_class_rule_conf **rule);
/* 1 (with why filled) when replicated writes must be refused now. */
int kv_backlog_full(cell_kv *kv, char *why, size_t cap);
/* Parks an ack:region write until the region acknowledges res->seq. */
void kv_ack_wait(kv_req *kr, const mc_write_result *res);
/* wall ms since which the invalidation channel has been up (0: down). */
uint64_t kv_link_up_since(cell_kv *kv);
void kv_count(mc_series *s);

/* kv_region.c */
typedef void (*kv_region_cb)(void *arg, int err, const mc_http_response *res);
int kv_region_init(cell_kv *kv);
void kv_region_fini(cell_kv *kv);
/* 1 while a recent call failed (no call is made then; kv->region_err says why). */
int kv_region_down(cell_kv *kv);
/* Calls the region's KV API with X-Metrocell-Cell set and a per-call timeout; cb
 * runs exactly once on the loop (err MC_ETIMEDOUT, a pool error, or 0 with res).
 * Returns 0, MC_EUNAVAIL (region down or not configured; cb not called) or a pool
 * error (cb not called). */
int kv_region_call(cell_kv *kv, const char *method, const mc_buf *target, const mc_http_header *h,
		   size_t nh, const void *body, size_t len, uint32_t timeout_ms, kv_region_cb cb,
		   void *arg);
/* Appends "/v1/kv/" + the percent-encoded key (+ suffix) to out. */
void kv_region_target(mc_buf *out, const char *key, size_t klen, const char *suffix);
/* Parses the version headers of a region answer. */
uint64_t kv_hdr_u64(const mc_http_response *res, const char *name);

#endif
