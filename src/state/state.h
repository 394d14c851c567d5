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

typedef struct mc_store_opts {
	const char *dir;         /* created if missing (mode 0700) */
	size_t map_size;         /* LMDB map size, default 4 GiB */
	int durable;             /* 1: fsync each group commit (default); 0: no sync */
	size_t max_batch;        /* max writes per transaction (default 4096) */
	size_t max_queue_bytes;  /* key+value bytes waiting for the writer; beyond it writes
				  * and applies get MC_EFULL (default 256 MiB) */
	const char *home;        /* this process's cell name ("" for the region) */
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
} mc_record;

/* Reads key into *rec (value copied into *val, which is reset first; val may be
 * NULL). Returns 0, MC_ENOTFOUND when absent, deleted or expired (rec is still
 * filled for a tombstone or an expired record), MC_ECLOSED or MC_ESTORE. Any
 * thread. */
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

/* Last applied sequence for cell (0 when never seen). Any thread. */
uint64_t mc_store_applied_seq(mc_store *s, const char *cell);

/* Counters since open. */
typedef struct mc_store_stats {
	uint64_t commits;
	uint64_t writes;
	uint64_t applied;       /* entries applied (region) */
	uint64_t skipped;       /* replayed entries skipped (region) */
	uint64_t queue_depth;   /* writes waiting for the writer now */
} mc_store_stats;

void mc_store_stats_get(mc_store *s, mc_store_stats *out);

#endif
