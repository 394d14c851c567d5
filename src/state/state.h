/* Hot state on LMDB: records, the append-only write log and metadata in one
 * environment. Reads run on any thread and never block; writes go through one
 * writer thread that batches everything queued into one transaction (group
 * commit) and completes them on the owner's libuv loop after the commit is
 * durable. The only module that includes LMDB. */
#ifndef MC_STATE_H
#define MC_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/common.h"

#define MC_STATE_MAX_KEY 256        /* bytes; LMDB's own limit is 511 */
#define MC_STATE_MAX_HOME 31        /* cell name length */
#define MC_STATE_MAX_VALUE (16u << 20)

typedef enum { MC_OP_PUT = 1, MC_OP_DEL = 2 } mc_op;

typedef struct mc_store mc_store;

/* ---- state classes (DESIGN.md section 4) ---------------------------------------------
 * Where a key may live: `replicated` keys are written in the cell and shipped to the
 * region through the write log; `local` keys never leave the cell (the store never
 * appends them to the write log, whatever the caller asks); `regional` keys live in
 * the region only (a cell forwards them and keeps at most a bounded read cache). */
typedef enum { MC_CLASS_REPLICATED = 0, MC_CLASS_LOCAL = 1, MC_CLASS_REGIONAL = 2 } mc_state_class;

/* "replicated", "local" or "regional". */
const char *mc_state_class_name(mc_state_class c);

/* One prefix rule: keys starting with prefix (len bytes; "" matches every key)
 * have class cls. */
typedef struct mc_state_prefix {
	const char *prefix;
	size_t len;
	mc_state_class cls;
} mc_state_prefix;

/* Index of the rule in t[0..n) with the longest prefix that key starts with (the
 * first of equal ones), or -1 when none matches. Pure. */
int mc_state_prefix_match(const mc_state_prefix *t, size_t n, const char *key, size_t klen);

typedef struct mc_store_opts {
	const char *dir;         /* created if missing (mode 0700) */
	size_t map_size;         /* LMDB map size, default 4 GiB */
	int durable;             /* 1: fsync each group commit (default); 0: no sync */
	size_t max_batch;        /* max writes per transaction (default 4096) */
	/* Group-commit linger: when fewer writes are queued than the writer expects
	 * soon (the clients of the batch just committed), it waits up to this long for
	 * them before committing (0: never waits; default 0). */
	uint32_t linger_us;
	size_t max_queue_bytes;  /* key+value bytes waiting for the writer; beyond it writes
				  * and applies get MC_EFULL (default 256 MiB) */
	const char *home;        /* this process's cell name ("" for the region) */
	/* Class rules (copied by open); keys no rule matches get default_class. Only
	 * replicated keys are ever appended to the write log. */
	const mc_state_prefix *classes;
	size_t nclasses;
	mc_state_class default_class; /* default MC_CLASS_REPLICATED */
	int apply_notes;              /* region: fill mc_apply_note for the apply hook */
} mc_store_opts;

void mc_store_opts_default(mc_store_opts *o);

/* Opens (creating) the environment and starts the writer thread. Completions of
 * writes are delivered on loop, which must be run by the caller's thread.
 * Returns 0, MC_ESTORE (message logged) or -errno. */
int mc_store_open(mc_store **out, uv_loop_t *loop, const mc_store_opts *o);
/* Lets the writer commit everything queued, joins it, closes the environment,
 * then uv_close()s the async handle: the queued callbacks run with their real
 * results from that close callback, where the memory is also released, so the
 * caller must run the loop afterwards. No reader may be active. Once close has
 * started, writes return MC_ECLOSED and no commit hook runs. Accepts NULL. */
void mc_store_close(mc_store *s);

/* A stored record. value points into the caller's buffer given to the call. */
typedef struct mc_record {
	uint64_t version;    /* HLC timestamp of the write */
	uint64_t expires_ms; /* wall ms, 0 = never */
	uint8_t deleted;     /* tombstone (kept for last-writer-wins) */
	char home[MC_STATE_MAX_HOME + 1]; /* cell that wrote it */
	const char *value;
	size_t value_len;
	uint8_t found;       /* set by mc_store_get when any record exists for the key */
	uint8_t replica;     /* a copy of the region's record (read-through or cache), not
			      * written here; deleted means the region said "no such key" */
	uint8_t invalid;     /* the key was written elsewhere at version: no value here */
	uint64_t synced_ms;  /* replica: wall ms when the region last confirmed it */
} mc_record;

/* Reads key into *rec (value copied into *val, which is reset first; val may be
 * NULL). rec is zeroed first. Returns 0, MC_ENOTFOUND when absent, deleted,
 * invalidated or expired (rec is still filled, with found set, when a record
 * exists), MC_ECLOSED or MC_ESTORE. Any thread. */
int mc_store_get(mc_store *s, const char *key, size_t klen, mc_record *rec, mc_buf *val);

/* Completion of a write: err 0 with the version and write-log sequence number
 * (seq 0 when the write was not logged), or a negative code. Runs on the loop. */
typedef void (*mc_store_write_cb)(void *arg, int err, uint64_t version, uint64_t seq);

/* Queues a put or delete of key (key and value are copied). When log is set the
 * change is appended to the write log in the same transaction. cb runs once
 * the transaction is durable (or failed). Returns 0, MC_EINVAL (bad key),
 * MC_ETOOBIG (value over MC_STATE_MAX_VALUE), MC_EFULL (the writer's queue holds
 * max_queue_bytes already) or MC_ECLOSED; cb is not called then. */
int mc_store_write(mc_store *s, mc_op op, const char *key, size_t klen, const void *value,
		   size_t vlen, uint64_t expires_ms, int log, mc_store_write_cb cb, void *arg);

/* ---- writes with conditions, counters, replica copies ---------------------------------- */

typedef enum {
	MC_W_PUT = 1,    /* own write of value */
	MC_W_DEL,        /* own delete (a tombstone is kept) */
	MC_W_INCR,       /* own atomic add of delta to a decimal int64 value (absent: 0) */
	MC_W_COPY,       /* replica copy of the region's record; never logged */
	MC_W_INVALIDATE, /* the key was written elsewhere at version; never logged */
} mc_write_kind;

#define MC_W_LOG 0x01u	      /* append to the write log (only replicated keys are) */
#define MC_W_IF_ABSENT 0x02u  /* MC_ECONFLICT unless the key is absent (If-None-Match: *) */
#define MC_W_IF_PRESENT 0x04u /* MC_ECONFLICT unless the key is live (If-Match: *) */
#define MC_W_MUST_EXIST 0x08u /* DEL: MC_ENOTFOUND unless the key is live */

/* A write request; every pointer is copied by mc_store_submit. "Live" below means a
 * record exists that is not deleted, not invalidated and not expired (replica copies
 * included). */
typedef struct mc_write {
	mc_write_kind kind;
	unsigned flags;
	const char *key;
	size_t klen;
	const void *value; /* PUT, COPY */
	size_t vlen;
	uint64_t expires_ms; /* PUT, COPY: wall ms (0 never); INCR: 0 keeps the record's */
	int64_t delta;       /* INCR */
	uint64_t if_version; /* non-zero: MC_ECONFLICT unless the live record has this version */
	uint64_t version;    /* COPY, INVALIDATE */
	const char *home;    /* COPY: the record's home */
	int deleted;         /* COPY: the region has no such key (a negative copy) */
	uint64_t synced_ms;  /* COPY: when the region answered */
} mc_write;

typedef struct mc_write_result {
	/* 0; MC_ECONFLICT (a condition failed; version is the live record's, 0 none);
	 * MC_ENOTFOUND (MUST_EXIST); INCR: MC_EINVAL (value is not a decimal int64) or
	 * MC_ETOOBIG (int64 overflow); or a store error (MC_EFULL map full, MC_ESTORE). */
	int err;
	uint64_t version; /* of the record written (or kept, for COPY/INVALIDATE) */
	uint64_t seq;     /* write-log sequence number, 0 when not logged */
	int64_t counter;  /* INCR: the new value */
	uint64_t expires_ms;
	int applied;      /* COPY/INVALIDATE: 0 when the stored record was newer and kept */
	char prev_home[MC_STATE_MAX_HOME + 1]; /* home of the record that was there ("" none) */
	uint64_t prev_version;
} mc_write_result;

typedef void (*mc_store_result_cb)(void *arg, const mc_write_result *res);

/* Queues w; the checks and the change run in the writer thread inside one
 * transaction, so conditions and counters are atomic against concurrent writes.
 * cb runs on the loop after the commit (or its failure). Returns 0, MC_EINVAL (bad
 * key or kind), MC_ETOOBIG (value over MC_STATE_MAX_VALUE), MC_EFULL (queue bytes)
 * or MC_ECLOSED; cb is not called then. */
int mc_store_submit(mc_store *s, const mc_write *w, mc_store_result_cb cb, void *arg);

/* The class of key under the store's rules. Any thread. */
mc_state_class mc_store_key_class(mc_store *s, const char *key, size_t klen);

/* ---- background sweep ------------------------------------------------------------------ */

typedef struct mc_sweep_opts {
	uint64_t tombstone_retention_ms; /* tombstones and invalidation markers older than this */
	uint64_t copy_max_age_ms;        /* replica copies not confirmed for this long */
	size_t max_examine;              /* records looked at in this pass (default 10000) */
} mc_sweep_opts;

typedef struct mc_sweep_result {
	int err;
	uint64_t examined, expired, tombstones, copies, markers;
	int wrapped; /* the pass reached the end of the records (the next starts over) */
} mc_sweep_result;

/* Queues one sweep pass that resumes where the previous one stopped and deletes
 * expired records, old tombstones and markers and stale replica copies (never
 * logged: the region sweeps its own copy). cb runs on the loop after the commit. */
int mc_store_sweep(mc_store *s, const mc_sweep_opts *o,
		   void (*cb)(void *arg, const mc_sweep_result *res), void *arg);

/* Records in the store now (tombstones and copies included). Any thread. */
uint64_t mc_store_record_count(mc_store *s);

/* 1 when commits are fsynced (durability "fsync"), read back from LMDB's flags. */
int mc_store_is_durable(mc_store *s);

/* ---- KV API parameters (src/state/kvparams.c; shared by the cell and the region) -------- */

#define MC_KV_MAX_TTL_MS (315360000000ull) /* ten years */

typedef struct mc_kv_params {
	int has_ttl;
	uint64_t ttl_ms; /* from ttl= (seconds) or ttl_ms= */
	int has_by;
	int64_t by; /* incr delta from by= */
} mc_kv_params;

/* Parses a query string (without '?'): ttl=SECONDS, ttl_ms=MILLISECONDS (1 up to
 * MC_KV_MAX_TTL_MS, not both) and by=INT64. Returns 0, or MC_EINVAL with a
 * message in err (NUL terminated). Pure. */
int mc_kv_query_parse(const char *q, mc_kv_params *out, char *err, size_t errcap);
/* Parses an If-Match style value: "*" (sets *star) or one version, bare decimal
 * or quoted like the ETag we send ("123"). Returns 0 or MC_EINVAL. Pure. */
int mc_kv_version_parse(const char *v, size_t n, uint64_t *version, int *star);
/* Parses a decimal int64 with optional sign and surrounding blanks. Returns 0 or
 * MC_EINVAL (malformed or out of range). Pure. */
int mc_kv_i64_parse(const char *s, size_t n, int64_t *out);

/* ---- write log -------------------------------------------------------------------- */

typedef struct mc_log_entry {
	uint64_t seq;
	uint64_t version;
	uint64_t expires_ms;
	uint8_t op; /* mc_op */
	const char *key;
	size_t klen;
	const char *value;
	size_t vlen;
} mc_log_entry;

/* Calls fn for log entries with seq >= from in order, at most max_n of them and
 * stopping before max_bytes of key+value would be exceeded (at least one entry
 * is always delivered). Pointers are valid only during fn. Returns the number of
 * entries delivered, or a negative code; fn returning non-zero stops early. */
int mc_store_log_read(mc_store *s, uint64_t from, size_t max_n, size_t max_bytes,
		      int (*fn)(void *arg, const mc_log_entry *e), void *arg);

/* Queues removal of every log entry with seq <= upto and records upto as the
 * acknowledged sequence. cb (may be NULL) runs after the commit. */
int mc_store_log_trim(mc_store *s, uint64_t upto, mc_store_write_cb cb, void *arg);

typedef struct mc_log_stats {
	uint64_t last_seq;  /* last committed sequence number (0: none yet) */
	uint64_t acked_seq; /* last trimmed/acknowledged sequence number */
	uint64_t entries;   /* entries currently in the log */
	uint64_t bytes;     /* key+value bytes currently in the log */
} mc_log_stats;

void mc_store_log_stats(mc_store *s, mc_log_stats *out);

/* Called on the loop after every commit that appended to the log. */
void mc_store_set_commit_hook(mc_store *s, void (*fn)(void *arg, uint64_t last_seq), void *arg);

/* ---- region side: applying shipped entries ------------------------------------------- */

/* Queues entries shipped by cell (copied). Entries with seq <= the cell's last
 * applied sequence are skipped (idempotent replay); each applied one is written
 * with last-writer-wins on (version, home cell name). The cell's last applied
 * sequence is stored in the same transaction. cb gets err and, in seq, the
 * cell's last applied sequence after the commit. */
int mc_store_apply(mc_store *s, const char *cell, const mc_log_entry *entries, size_t n,
		   mc_store_write_cb cb, void *arg);

/* What one applied entry did, for the region's invalidations: delivered to the
 * apply hook (opts.apply_notes) on the loop before the apply's callback. key points
 * into the store's copy, valid during the hook. */
typedef struct mc_apply_note {
	const char *key;
	size_t klen;
	uint64_t version;                      /* the entry's */
	int won;                               /* 1: now the stored record; 0: lost LWW */
	char prev_home[MC_STATE_MAX_HOME + 1]; /* home of the record before ("" none) */
	uint64_t prev_version;                 /* its version (the winner's when !won) */
} mc_apply_note;

void mc_store_set_apply_hook(mc_store *s,
			     void (*fn)(void *arg, const char *cell, const mc_apply_note *n,
					size_t count),
			     void *arg);

/* Last applied sequence for cell (0 when never seen). Any thread. */
uint64_t mc_store_applied_seq(mc_store *s, const char *cell);

/* Counters since open. */
typedef struct mc_store_stats {
	uint64_t commits;
	uint64_t writes;
	uint64_t applied;       /* entries applied (region) */
	uint64_t skipped;       /* replayed entries skipped (region) */
	uint64_t queue_depth;   /* writes waiting for the writer now */
	uint64_t swept_expired, swept_tombstones, swept_copies, swept_markers;
	uint64_t residency_violations; /* non-replicated entries about to be logged (stays 0) */
} mc_store_stats;

void mc_store_stats_get(mc_store *s, mc_store_stats *out);

#endif
