/* The LMDB store: one environment holding the records, write-log, metadata and
 * per-cell applied-sequence databases; a writer thread that group-commits every
 * queued write into one transaction; completions delivered on the owner's loop only
 * after the commit returned (so an acknowledged write survives a crash). */
#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state/state.h"
#include "state/state_int.h"

#define COMP "state"
#define DEFAULT_MAP_SIZE ((size_t)4 << 30)
#define DEFAULT_MAX_BATCH 4096
#define DEFAULT_MAX_QUEUE_BYTES ((size_t)256 << 20)
#define MAX_READERS 1022   /* concurrent read transactions (slots in lock.mdb) */
#define RTXN_POOL 64	   /* reset read transactions kept for reuse */
#define TRIM_PER_TXN 50000 /* log deletions per commit, bounds dirty pages */
/* data.mdb is kept zero-filled up to PREALLOC_STEP beyond LMDB's last page, topped
 * up when less than PREALLOC_LOW is left (see preallocate): a top-up of about 256 KiB
 * every few dozen commits, whose zeros the next commit's fdatasync carries. */
#define PREALLOC_STEP ((uint64_t)512 << 10)
#define PREALLOC_LOW ((uint64_t)256 << 10)
/* Group-commit linger (see linger): a lingering writer stops once nothing arrived
 * for LINGER_GAP_NS. A linger succeeds when at least 7/8 of the requests it waited
 * for came; lingering stops while most of the recent ones failed (moving average),
 * except once every LINGER_PROBE_EVERY chances. */
#define LINGER_GAP_NS (100u * 1000u)
#define LINGER_SCORE_ONE 1024u
#define LINGER_SCORE_MIN (LINGER_SCORE_ONE / 2)
#define LINGER_PROBE_EVERY 128u

/* Keys of the "meta" database; values are u64 big-endian. */
#define META_LAST_SEQ "last_seq"
#define META_ACKED_SEQ "acked_seq"
#define META_HLC "hlc" /* highest version assigned: the HLC floor at open */

enum req_kind { REQ_WRITE = 1, REQ_TRIM, REQ_APPLY, REQ_SWEEP };

/* One queued request. Its bytes (key, value, entry data) are owned by it and freed
 * after its callback ran; a write's key and value live in the same allocation, after
 * the struct. */
struct req {
	struct req *next;
	enum req_kind kind;
	size_t qbytes; /* key and value bytes it holds, counted against max_queue_bytes */
	mc_store_write_cb cb;
	mc_store_result_cb rcb; /* REQ_WRITE through mc_store_submit */
	void *arg;
	int err;
	uint64_t version;
	uint64_t seq;
	/* REQ_WRITE */
	mc_write_kind wkind;
	unsigned flags;
	uint64_t expires_ms;
	char *key;
	size_t klen;
	char *value;
	size_t vlen;
	int64_t delta;
	uint64_t if_version;
	uint64_t cversion; /* COPY, INVALIDATE */
	char chome[MC_STATE_MAX_HOME + 1];
	int cdeleted;
	uint64_t csynced_ms;
	mc_write_result res; /* what rcb gets */
	char num[24];	     /* INCR: the new value in decimal */
	/* REQ_TRIM */
	uint64_t upto;
	/* REQ_APPLY */
	char cell[MC_STATE_MAX_HOME + 1];
	mc_log_entry *entries;
	size_t n;
	char *bytes;
	mc_apply_note *notes; /* when the store was opened with apply_notes */
	/* REQ_SWEEP */
	mc_sweep_opts sweep;
	mc_sweep_result sres;
	void (*scb)(void *arg, const mc_sweep_result *res);
};

struct mc_store {
	MDB_env *env;
	MDB_dbi db_rec, db_log, db_meta, db_applied;
	uv_loop_t *loop;
	uv_async_t async;
	char home[MC_STATE_MAX_HOME + 1];
	size_t max_batch;
	int writer_started;
	pthread_t writer;

	/* mu guards the queue, the completion list, hook_seq, stop, closing and the
	 * writer's wait state (w_waiting, want). */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct req *q_head, *q_tail;
	size_t q_bytes, max_queue_bytes;
	size_t q_n;    /* requests queued */
	int w_waiting; /* the writer sleeps on cv: submit signals it (see want) */
	size_t want;   /* lingering: signal only once q_n reaches this (0: any) */
	/* Batches handed to the loop, and those whose callbacks have run. */
	uint64_t posted, delivered;
	/* Writer thread only (see linger): the requests expected soon (0: do not
	 * linger), how well lingering paid lately, chances skipped. */
	uint64_t linger_ns;
	size_t expect;
	unsigned linger_score, linger_skips;
	struct req *done_head, *done_tail;
	uint64_t hook_seq; /* last seq of commits since the last delivery, 0: none */
	int stop;
	int closing;

	/* Writer thread only (and open, before the thread starts). */
	mc_hlc hlc;
	uint64_t w_last_seq;
	uint64_t w_acked_seq;
	uint64_t w_hlc_max;
	int trim_pending; /* entries <= w_acked_seq (or w_trim_want) may remain in the log */
	/* Highest acknowledged seq a trim asked for (capped by what was committed):
	 * a trim that went down with a failed batch is not lost. */
	uint64_t w_trim_want;
	int trim_retry; /* run the next trim alone, before taking the queue */
	int last_rc;	  /* last LMDB error logged, to log each failure kind once */
	int prealloc_fd;  /* data.mdb, -1: not preallocating */
	uint64_t psize, file_end;

	pthread_mutex_t stat_mu; /* guards log */
	mc_log_stats log;

	_Atomic uint64_t commits, writes, applied, skipped, queue_depth;

	pthread_mutex_t pool_mu; /* guards pool */
	MDB_txn *pool[RTXN_POOL];
	size_t pool_n;

	/* Class rules, immutable after open (read by any thread). */
	mc_state_prefix *classes;
	size_t nclasses;
	mc_state_class default_class;
	int apply_notes;

	/* Writer thread only: where the next sweep pass starts (empty: the first key). */
	char sweep_key[MC_STATE_MAX_KEY];
	size_t sweep_klen;
	_Atomic uint64_t swept_expired, swept_tombstones, swept_copies, swept_markers;
	_Atomic uint64_t residency_violations;

	/* Loop thread only. */
	void (*hook)(void *arg, uint64_t last_seq);
	void *hook_arg;
	void (*apply_hook)(void *arg, const char *cell, const mc_apply_note *n, size_t count);
	void *apply_hook_arg;
};

void mc_store_opts_default(mc_store_opts *o)
{
	memset(o, 0, sizeof *o);
	o->map_size = DEFAULT_MAP_SIZE;
	o->durable = 1;
	o->max_batch = DEFAULT_MAX_BATCH;
	o->max_queue_bytes = DEFAULT_MAX_QUEUE_BYTES;
	o->home = "";
	o->default_class = MC_CLASS_REPLICATED;
}

const char *mc_state_class_name(mc_state_class c)
{
	switch (c) {
	case MC_CLASS_LOCAL:
		return "local";
	case MC_CLASS_REGIONAL:
		return "regional";
	case MC_CLASS_REPLICATED:
		break;
	}
	return "replicated";
}

int mc_state_prefix_match(const mc_state_prefix *t, size_t n, const char *key, size_t klen)
{
	int best = -1;

	for (size_t i = 0; i < n; i++) {
		if (t[i].len > klen || (best >= 0 && t[i].len <= t[best].len))
			continue;
		if (t[i].len == 0 || memcmp(t[i].prefix, key, t[i].len) == 0)
			best = (int)i;
	}
	return best;
}

mc_state_class mc_store_key_class(mc_store *s, const char *key, size_t klen)
{
	int i = mc_state_prefix_match(s->classes, s->nclasses, key, klen);

	return i < 0 ? s->default_class : s->classes[i].cls;
}

static int key_ok(const char *key, size_t klen)
{
	return key && klen >= 1 && klen <= MC_STATE_MAX_KEY;
}

static int err_of(int rc)
{
	return rc == MDB_MAP_FULL ? MC_EFULL : MC_ESTORE;
}

static int home_cmp(const char *a, const char *b)
{
	size_t al = strlen(a), bl = strlen(b);
	int c = memcmp(a, b, MC_MIN(al, bl));

	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static void req_free(struct req *r)
{
	free(r->entries);
	free(r->bytes);
	free(r->notes);
	free(r);
}

/* ---- read transactions ----------------------------------------------------------
 * MDB_NOTLS ties a reader slot to the transaction object, not the thread, so reset
 * transactions can be pooled and renewed from any thread without taking LMDB's
 * reader-table lock again. */

static int rtxn_get(mc_store *s, MDB_txn **out)
{
	MDB_txn *txn = NULL;
	int rc;

	pthread_mutex_lock(&s->pool_mu);
	if (s->pool_n)
		txn = s->pool[--s->pool_n];
	pthread_mutex_unlock(&s->pool_mu);
	if (txn) {
		rc = mdb_txn_renew(txn);
		if (rc == 0) {
			*out = txn;
			return 0;
		}
		mdb_txn_abort(txn);
	}
	rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, out);
	if (rc)
		MC_ERROR(COMP, "read transaction: %s", mdb_strerror(rc));
	return rc;
}

static void rtxn_put(mc_store *s, MDB_txn *txn)
{
	mdb_txn_reset(txn);
	pthread_mutex_lock(&s->pool_mu);
	if (s->pool_n < RTXN_POOL) {
		s->pool[s->pool_n++] = txn;
		txn = NULL;
	}
	pthread_mutex_unlock(&s->pool_mu);
	if (txn)
		mdb_txn_abort(txn);
}

/* ---- writer thread -------------------------------------------------------------- */

static int put_u64(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, uint64_t v)
{
	uint8_t b[8];
	MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
	MDB_val d = {.mv_size = sizeof b, .mv_data = b};

	mc_put_u64(b, v);
	return mdb_put(txn, dbi, &k, &d, 0);
}

/* Reads a u64 value; *v is left alone when the key is absent. */
static int get_u64(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, uint64_t *v)
{
	MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, d;
	int rc = mdb_get(txn, dbi, &k, &d);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (d.mv_size != 8)
		return MDB_CORRUPTED;
	*v = mc_get_u64(d.mv_data);
	return 0;
}

static int put_record(mc_store *s, MDB_txn *txn, MDB_val *k, const mc_record *rec)
{
	MDB_val d = {.mv_size = mc_state_record_size_of(rec)};
	int rc = mdb_put(txn, s->db_rec, k, &d, MDB_RESERVE);

	if (rc == 0)
		mc_state_record_encode(d.mv_data, rec);
	return rc;
}

/* Per-batch effects, made visible only when the commit succeeded. */
struct batch {
	uint64_t last_seq, acked_seq, hlc_max;
	int64_t d_entries, d_bytes;
	uint64_t writes, applied, skipped;
	uint64_t now_ms; /* wall clock at the start of the batch: expiry decisions */
	int logged;
};

static int rec_live(const mc_record *r, uint64_t now_ms)
{
	return !r->deleted && !r->invalid && !(r->expires_ms && r->expires_ms <= now_ms);
}

/* Parses a decimal int64 (optional '-', 1..19 digits after it, nothing else). */
static int parse_i64(const char *p, size_t n, int64_t *out)
{
	size_t i = 0;
	int neg = 0;
	uint64_t v = 0, lim;

	if (n && p[0] == '-') {
		neg = 1;
		i = 1;
	}
	if (i == n || n - i > 19)
		return MC_EINVAL;
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return MC_EINVAL;
		v = v * 10 + (uint64_t)(p[i] - '0');
		if (v > lim)
			return MC_EINVAL;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

/* Appends the change of r to the write log when its key is replicated. The class
 * is looked up here, at the last step before the log, so no caller can ship a
 * local or regional key. */
static int log_append(mc_store *s, MDB_txn *txn, struct req *r, const mc_record *rec,
		      struct batch *b)
{
	uint8_t kb[8];
	mc_log_entry e = {.version = rec->version,
			  .expires_ms = rec->expires_ms,
			  .op = rec->deleted ? MC_OP_DEL : MC_OP_PUT,
			  .key = r->key,
			  .klen = r->klen,
			  .value = rec->value,
			  .vlen = rec->value_len};
	MDB_val lk = {.mv_size = sizeof kb, .mv_data = kb};
	MDB_val ld = {.mv_size = mc_state_logent_size(e.klen, e.vlen)};
	int rc;

	if (mc_store_key_class(s, r->key, r->klen) != MC_CLASS_REPLICATED)
		return 0;
	if (rec->replica || rec->invalid) {
		/* Not reached: copies and markers are never logged. */
		atomic_fetch_add(&s->residency_violations, 1);
		return 0;
	}
	mc_put_u64(kb, b->last_seq + 1);
	rc = mdb_put(txn, s->db_log, &lk, &ld, MDB_APPEND | MDB_RESERVE);
	if (rc)
		return rc;
	mc_state_logent_encode(ld.mv_data, &e);
	r->seq = ++b->last_seq;
	b->d_entries++;
	b->d_bytes += (int64_t)(e.klen + e.vlen);
	b->logged = 1;
	return 0;
}

/* A condition failed: the request gets err, the transaction goes on. */
static int refuse(struct req *r, int err, uint64_t version)
{
	r->err = err;
	r->version = version;
	return 0;
}

static int do_copy(mc_store *s, MDB_txn *txn, struct req *r, const mc_record *cur, int have,
		   struct batch *b)
{
	MDB_val k = {.mv_size = r->klen, .mv_data = r->key};
	mc_record rec;
	int rc;

	/* An own record or a marker as new as the copy wins; an older copy is
	 * refreshed by one of the same version. */
	if (have && (cur->version > r->cversion ||
		     (cur->version == r->cversion && !cur->replica && !cur->invalid))) {
		r->version = cur->version;
		return 0;
	}
	memset(&rec, 0, sizeof rec);
	rec.version = r->cversion;
	rec.expires_ms = r->cdeleted ? 0 : r->expires_ms;
	rec.deleted = r->cdeleted ? 1 : 0;
	rec.replica = 1;
	rec.synced_ms = r->csynced_ms;
	memcpy(rec.home, r->chome, sizeof rec.home);
	rec.value = r->cdeleted ? NULL : r->value;
	rec.value_len = r->cdeleted ? 0 : r->vlen;
	if ((rc = put_record(s, txn, &k, &rec)) != 0)
		return rc;
	if (r->cversion)
		b->hlc_max = MC_MAX(b->hlc_max, mc_hlc_observe(&s->hlc, r->cversion));
	r->version = r->cversion;
	r->res.applied = 1;
	b->writes++;
	return 0;
}

static int do_invalidate(mc_store *s, MDB_txn *txn, struct req *r, const mc_record *cur,
			 int have, struct batch *b)
{
	MDB_val k = {.mv_size = r->klen, .mv_data = r->key};
	mc_record rec;
	int rc;

	if (have && cur->version >= r->cversion) {
		r->version = cur->version;
		return 0;
	}
	/* The marker keeps the newer version, so a copy fetched before that write
	 * cannot land after it, and later own writes get higher versions. */
	memset(&rec, 0, sizeof rec);
	rec.version = r->cversion;
	rec.invalid = 1;
	if (have)
		memcpy(rec.home, cur->home, sizeof rec.home);
	if ((rc = put_record(s, txn, &k, &rec)) != 0)
		return rc;
	b->hlc_max = MC_MAX(b->hlc_max, mc_hlc_observe(&s->hlc, r->cversion));
	r->version = r->cversion;
	r->res.applied = 1;
	b->writes++;
	return 0;
}

static int do_write(mc_store *s, MDB_txn *txn, struct req *r, struct batch *b)
{
	MDB_val k = {.mv_size = r->klen, .mv_data = r->key}, d;
	mc_record cur, rec;
	int have = 0, live = 0;
	uint64_t v;
	int rc = mdb_get(txn, s->db_rec, &k, &d);

	if (rc == 0) {
		/* An undecodable record is overwritten like an absent one. */
		have = mc_state_record_decode(d.mv_data, d.mv_size, &cur) == 0;
	} else if (rc != MDB_NOTFOUND) {
		return rc;
	}
	if (have) {
		live = rec_live(&cur, b->now_ms);
		memcpy(r->res.prev_home, cur.home, sizeof r->res.prev_home);
		r->res.prev_version = cur.version;
	}
	if (r->wkind == MC_W_COPY)
		return do_copy(s, txn, r, &cur, have, b);
	if (r->wkind == MC_W_INVALIDATE)
		return do_invalidate(s, txn, r, &cur, have, b);

	if (r->if_version && (!live || cur.version != r->if_version))
		return refuse(r, MC_ECONFLICT, live ? cur.version : 0);
	if ((r->flags & MC_W_IF_ABSENT) && live)
		return refuse(r, MC_ECONFLICT, cur.version);
	if ((r->flags & MC_W_IF_PRESENT) && !live)
		return refuse(r, MC_ECONFLICT, 0);
	if (r->wkind == MC_W_DEL && (r->flags & MC_W_MUST_EXIST) && !live)
		return refuse(r, MC_ENOTFOUND, 0);

	memset(&rec, 0, sizeof rec);
	if (r->wkind == MC_W_PUT) {
		rec.expires_ms = r->expires_ms;
		rec.value = r->value;
		rec.value_len = r->vlen;
	} else if (r->wkind == MC_W_INCR) {
		int64_t base = 0;

		if (live && parse_i64(cur.value, cur.value_len, &base) != 0)
			return refuse(r, MC_EINVAL, cur.version);
		if ((r->delta > 0 && base > INT64_MAX - r->delta) ||
		    (r->delta < 0 && base < INT64_MIN - r->delta))
			return refuse(r, MC_ETOOBIG, cur.version);
		r->res.counter = base + r->delta;
		snprintf(r->num, sizeof r->num, "%lld", (long long)r->res.counter);
		rec.value = r->num;
		rec.value_len = strlen(r->num);
		rec.expires_ms = r->expires_ms ? r->expires_ms : (live ? cur.expires_ms : 0);
	} else {
		rec.deleted = 1;
	}
	v = mc_hlc_now(&s->hlc);
	/* Per-key versions strictly increase even when the record came from another
	 * cell whose clock is ahead of ours. */
	if (have && cur.version >= v)
		v = mc_hlc_observe(&s->hlc, cur.version);
	rec.version = v;
	memcpy(rec.home, s->home, sizeof rec.home);
	rc = put_record(s, txn, &k, &rec);
	if (rc)
		return rc;
	r->version = v;
	r->res.expires_ms = rec.expires_ms;
	b->hlc_max = MC_MAX(b->hlc_max, v);
	b->writes++;
	if (r->flags & MC_W_LOG)
		return log_append(s, txn, r, &rec, b);
	return 0;
}

/* One sweep pass: examines up to max_examine records from where the last pass
 * stopped and deletes what no reader may see any more. */
static int do_sweep(mc_store *s, MDB_txn *txn, struct req *r, struct batch *b)
{
	MDB_cursor *cur;
	MDB_val k, d;
	mc_sweep_result *sr = &r->sres;
	size_t max = r->sweep.max_examine ? r->sweep.max_examine : 10000;
	uint64_t now = b->now_ms;
	int rc = mdb_cursor_open(txn, s->db_rec, &cur);

	if (rc)
		return rc;
	if (s->sweep_klen) {
		k.mv_size = s->sweep_klen;
		k.mv_data = s->sweep_key;
		rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
	}
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		mc_record rec;
		int del = 0;

		if (sr->examined == max) {
			/* Resume here next time. */
			s->sweep_klen = MC_MIN(k.mv_size, sizeof s->sweep_key);
			memcpy(s->sweep_key, k.mv_data, s->sweep_klen);
			break;
		}
		sr->examined++;
		if (mc_state_record_decode(d.mv_data, d.mv_size, &rec) != 0)
			continue;
		if (rec.replica) {
			if (rec.synced_ms + r->sweep.copy_max_age_ms <= now ||
			    (rec.expires_ms && rec.expires_ms <= now)) {
				sr->copies++;
				del = 1;
			}
		} else if (rec.invalid || rec.deleted) {
			if (mc_hlc_wall_ms(rec.version) + r->sweep.tombstone_retention_ms <= now) {
				if (rec.invalid)
					sr->markers++;
				else
					sr->tombstones++;
				del = 1;
			}
		} else if (rec.expires_ms && rec.expires_ms <= now) {
			sr->expired++;
			del = 1;
		}
		if (del && (rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND) {
		sr->wrapped = 1;
		s->sweep_klen = 0;
		rc = 0;
	}
	return rc;
}

static int do_apply(mc_store *s, MDB_txn *txn, struct req *r, struct batch *b)
{
	size_t cl = strlen(r->cell);
	uint64_t applied = 0, start;
	int rc = get_u64(txn, s->db_applied, r->cell, cl, &applied);

	if (rc)
		return rc;
	start = applied;
	for (size_t i = 0; i < r->n; i++) {
		const mc_log_entry *e = &r->entries[i];
		MDB_val k = {.mv_size = e->klen, .mv_data = (void *)e->key}, d;
		mc_record rec;

		mc_apply_note *note = r->notes ? &r->notes[i] : NULL;

		if (e->seq <= applied) {
			b->skipped++;
			continue;
		}
		applied = e->seq;
		b->applied++;
		if (note) {
			note->key = e->key;
			note->klen = e->klen;
			note->version = e->version;
		}
		rc = mdb_get(txn, s->db_rec, &k, &d);
		if (rc == 0) {
			/* Last writer wins on (version, home cell name); an undecodable
			 * record loses. */
			int ok = mc_state_record_decode(d.mv_data, d.mv_size, &rec) == 0;

			if (ok && note) {
				memcpy(note->prev_home, rec.home, sizeof note->prev_home);
				note->prev_version = rec.version;
			}
			if (ok && (e->version < rec.version ||
				   (e->version == rec.version && home_cmp(r->cell, rec.home) <= 0)))
				continue;
		} else if (rc != MDB_NOTFOUND) {
			return rc;
		}
		if (note)
			note->won = 1;
		memset(&rec, 0, sizeof rec);
		rec.version = e->version;
		memcpy(rec.home, r->cell, sizeof rec.home);
		if (e->op == MC_OP_PUT) {
			rec.expires_ms = e->expires_ms;
			rec.value = e->value;
			rec.value_len = e->vlen;
		} else {
			rec.deleted = 1;
		}
		rc = put_record(s, txn, &k, &rec);
		if (rc)
			return rc;
		b->hlc_max = MC_MAX(b->hlc_max, mc_hlc_observe(&s->hlc, e->version));
	}
	if (applied != start) {
		rc = put_u64(txn, s->db_applied, r->cell, cl, applied);
		if (rc)
			return rc;
	}
	r->seq = applied;
	return 0;
}

/* Deletes log entries with seq <= b->acked_seq from the front, at most TRIM_PER_TXN;
 * *more is set when some may remain. */
static int do_trim(mc_store *s, MDB_txn *txn, struct batch *b, int *more)
{
	MDB_cursor *cur;
	MDB_val k, d;
	size_t n = 0;
	int rc = mdb_cursor_open(txn, s->db_log, &cur);

	if (rc)
		return rc;
	*more = 0;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST)) == 0) {
		if (k.mv_size != 8 || d.mv_size < MC_STATE_LOGENT_HDR) {
			rc = MDB_CORRUPTED;
			break;
		}
		if (mc_get_u64(k.mv_data) > b->acked_seq)
			break;
		if (n == TRIM_PER_TXN) {
			*more = 1;
			break;
		}
		b->d_entries--;
		b->d_bytes -= (int64_t)(d.mv_size - MC_STATE_LOGENT_HDR);
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
		n++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Runs the requests of list (may be NULL for a trim continuation) in one
 * transaction and fills in each request's result. Returns the last seq when the
 * commit appended to the log, else 0. */
static uint64_t run_batch(mc_store *s, struct req *list)
{
	struct batch b = {.last_seq = s->w_last_seq,
			  .acked_seq = s->w_acked_seq,
			  .hlc_max = s->w_hlc_max,
			  .now_ms = mc_wall_ms()};
	MDB_txn *txn = NULL;
	struct req *r;
	int trim = s->trim_pending, more = 0;
	int rc;

	/* Noted before anything can fail: see trim_retry below. */
	for (r = list; r; r = r->next)
		if (r->kind == REQ_TRIM)
			s->w_trim_want = MC_MAX(s->w_trim_want, MC_MIN(r->upto, s->w_last_seq));
	if (trim)
		b.acked_seq = MC_MAX(b.acked_seq, s->w_trim_want);
	rc = mdb_txn_begin(s->env, NULL, 0, &txn);

	if (rc)
		goto fail;
	for (r = list; r; r = r->next) {
		switch (r->kind) {
		case REQ_WRITE:
			rc = do_write(s, txn, r, &b);
			break;
		case REQ_TRIM:
			/* Never acknowledge beyond what was written. */
			b.acked_seq = MC_MAX(b.acked_seq, MC_MIN(r->upto, b.last_seq));
			r->seq = b.acked_seq;
			trim = 1;
			break;
		case REQ_APPLY:
			rc = do_apply(s, txn, r, &b);
			break;
		case REQ_SWEEP:
			rc = do_sweep(s, txn, r, &b);
			break;
		}
		if (rc)
			goto fail;
	}
	if (trim && (rc = do_trim(s, txn, &b, &more)) != 0)
		goto fail;
	if (b.last_seq != s->w_last_seq &&
	    (rc = put_u64(txn, s->db_meta, META_LAST_SEQ, strlen(META_LAST_SEQ), b.last_seq)))
		goto fail;
	if (b.acked_seq != s->w_acked_seq &&
	    (rc = put_u64(txn, s->db_meta, META_ACKED_SEQ, strlen(META_ACKED_SEQ), b.acked_seq)))
		goto fail;
	if (b.hlc_max != s->w_hlc_max &&
	    (rc = put_u64(txn, s->db_meta, META_HLC, strlen(META_HLC), b.hlc_max)))
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto fail;

	s->w_last_seq = b.last_seq;
	s->w_acked_seq = b.acked_seq;
	s->w_hlc_max = b.hlc_max;
	s->trim_pending = more;
	s->last_rc = 0;
	pthread_mutex_lock(&s->stat_mu);
	s->log.last_seq = b.last_seq;
	s->log.acked_seq = b.acked_seq;
	s->log.entries = (uint64_t)((int64_t)s->log.entries + b.d_entries);
	s->log.bytes = (uint64_t)((int64_t)s->log.bytes + b.d_bytes);
	pthread_mutex_unlock(&s->stat_mu);
	for (r = list; r; r = r->next) {
		if (r->kind != REQ_SWEEP)
			continue;
		atomic_fetch_add(&s->swept_expired, r->sres.expired);
		atomic_fetch_add(&s->swept_tombstones, r->sres.tombstones);
		atomic_fetch_add(&s->swept_copies, r->sres.copies);
		atomic_fetch_add(&s->swept_markers, r->sres.markers);
	}
	atomic_fetch_add(&s->commits, 1);
	atomic_fetch_add(&s->writes, b.writes);
	atomic_fetch_add(&s->applied, b.applied);
	atomic_fetch_add(&s->skipped, b.skipped);
	return b.logged ? b.last_seq : 0;

fail:
	if (txn)
		mdb_txn_abort(txn);
	if (rc != s->last_rc) {
		MC_ERROR(COMP, "write transaction failed, batch rejected: %s", mdb_strerror(rc));
		s->last_rc = rc;
	}
	for (r = list; r; r = r->next) {
		r->err = err_of(rc);
		r->version = 0;
		r->seq = 0;
		r->res.applied = 0;
		memset(&r->sres, 0, sizeof r->sres);
	}
	/* A trim that shared the failed transaction (say with writes failing on a full
	 * map) is retried once on its own: it is what frees the space, and the shipper
	 * does not ask again for a seq it already asked to trim. A failed retry waits for
	 * the next trim request. */
	s->trim_retry = list != NULL && s->w_trim_want > s->w_acked_seq;
	s->trim_pending = s->trim_retry;
	return 0;
}

static void ts_of(struct timespec *ts, uint64_t ns)
{
	ts->tv_sec = (time_t)(ns / 1000000000u);
	ts->tv_nsec = (long)(ns % 1000000000u);
}

/* Group-commit linger, called with mu held and something queued
 * (docs/operations.md, "Group commit"). When the clients of the batch just committed
 * were all waiting for it (next to nothing arrived during the commit), they are
 * about to get their answers and send again: the writer waits for them, up to
 * linger_ns in all, so that one fsync'd commit covers them all instead of a commit
 * of the first few and another of the rest. It waits first until the loop has
 * handed out the answers (deliver), then for as long as requests keep coming, looking
 * every LINGER_GAP_NS. Submitters wake it only once the expected count is queued.
 * When the requests do not come back promptly as a group (paced clients, or
 * independent ones whose arrivals only look like it now and then), lingering does
 * not pay and the score turns it off. */
static void linger(mc_store *s)
{
	size_t start_n = s->q_n, want, got;
	uint64_t now, end;
	struct timespec ts;

	want = MC_MIN(s->expect, s->max_batch);
	if (!s->linger_ns || s->stop || start_n >= want)
		return;
	if (s->linger_score < LINGER_SCORE_MIN && ++s->linger_skips % LINGER_PROBE_EVERY != 0)
		return;
	now = mc_now_ns();
	end = now + s->linger_ns;
	s->want = want;
	s->w_waiting = 1;
	ts_of(&ts, end);
	while (s->delivered != s->posted && s->q_n < want && !s->stop && now < end) {
		if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
			break;
		now = mc_now_ns();
	}
	while (s->q_n < want && !s->stop && now < end) {
		size_t before = s->q_n;

		ts_of(&ts, MC_MIN(end, now + LINGER_GAP_NS));
		while (s->q_n < want && !s->stop)
			if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
				break;
		now = mc_now_ns();
		if (s->q_n == before)
			break;
	}
	s->w_waiting = 0;
	s->want = 0;
	got = MC_MIN(s->q_n - start_n, want - start_n);
	if (got * 8 >= (want - start_n) * 7)
		s->linger_score =
		    MC_MAX((s->linger_score * 3 + LINGER_SCORE_ONE) / 4, LINGER_SCORE_MIN);
	else
		s->linger_score = s->linger_score * 3 / 4;
}

/* A commit's fdatasync that follows writes which grew data.mdb also writes the
 * inode (new size, new blocks): one more synchronous disk write per commit, and
 * LMDB grows the file in most commits of a store that takes new keys. Writing
 * zeros ahead (not fallocate: writing into its unwritten extents changes metadata
 * too) keeps commits to overwrites of allocated blocks; the next commit's sync
 * carries the zeros. Runs in the writer between transactions; beyond LMDB's last
 * page nothing reads the file, and the map size bounds it. A failure (a full disk)
 * turns it off: it only saves work. */
static void preallocate(mc_store *s)
{
	static const char zeros[64 << 10];
	MDB_envinfo info;
	struct stat st;
	uint64_t used, want;

	if (s->prealloc_fd < 0 || mdb_env_info(s->env, &info) != 0)
		return;
	used = ((uint64_t)info.me_last_pgno + 1) * s->psize;
	if (used + PREALLOC_LOW <= s->file_end)
		return;
	if (fstat(s->prealloc_fd, &st) != 0)
		goto fail;
	s->file_end = (uint64_t)st.st_size;
	want = MC_MIN(used + PREALLOC_STEP, (uint64_t)info.me_mapsize);
	while (s->file_end < want) {
		size_t n = (size_t)MC_MIN(want - s->file_end, (uint64_t)sizeof zeros);
		ssize_t w = pwrite(s->prealloc_fd, zeros, n, (off_t)s->file_end);

		if (w <= 0)
			goto fail;
		s->file_end += (uint64_t)w;
	}
	return;
fail:
	MC_WARN(COMP, "data.mdb: cannot write ahead: %s; commits that grow the file sync its size",
		strerror(errno));
	s->prealloc_fd = -1;
}

static void *writer_main(void *arg)
{
	mc_store *s = arg;

	/* Linger waits are tens of microseconds: the default 50 us timer slack would
	 * double them. */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct req *head, *tail = NULL, *r;
		size_t n = 0;
		uint64_t seq;

		s->w_waiting = 1;
		while (!s->q_head && !s->stop && !s->trim_pending)
			pthread_cond_wait(&s->cv, &s->mu);
		s->w_waiting = 0;
		if (!s->q_head && s->stop)
			break;
		if (s->q_head && !s->trim_retry)
			linger(s);
		head = NULL;
		if (!s->trim_retry) {
			head = s->q_head;
			for (r = head; r && n < s->max_batch; r = r->next, n++) {
				tail = r;
				s->q_bytes -= r->qbytes;
			}
			s->q_head = r;
			if (!r)
				s->q_tail = NULL;
			if (tail)
				tail->next = NULL;
			atomic_fetch_sub(&s->queue_depth, n);
			s->q_n -= n;
		}
		s->trim_retry = 0;
		pthread_mutex_unlock(&s->mu);

		seq = run_batch(s, head);

		pthread_mutex_lock(&s->mu);
		if (head) {
			if (s->done_tail)
				s->done_tail->next = head;
			else
				s->done_head = head;
			s->done_tail = tail;
		}
		if (seq)
			s->hook_seq = seq;
		if (head || seq)
			s->posted++;
		/* The clients of this batch get their answers now: when they were all
		 * waiting for it (next to nothing arrived meanwhile), they send again at
		 * once (see linger). Under open-loop traffic about as much arrives during
		 * a commit as it held. */
		s->expect = s->q_n * 4 <= n ? n + s->q_n : 0;
		/* Woken after the unlock: the loop thread shares a core with this one
		 * and would otherwise run only to block on mu. */
		pthread_mutex_unlock(&s->mu);
		if (head || seq)
			uv_async_send(&s->async);
		preallocate(s);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- loop side ------------------------------------------------------------------- */

/* Runs the callbacks of completed requests, then the commit hook. */
static void deliver(mc_store *s)
{
	struct req *r, *next;
	uint64_t seq, posted;
	int wake;

	pthread_mutex_lock(&s->mu);
	r = s->done_head;
	s->done_head = s->done_tail = NULL;
	seq = s->hook_seq;
	s->hook_seq = 0;
	posted = s->posted;
	pthread_mutex_unlock(&s->mu);
	for (; r; r = next) {
		next = r->next;
		if (r->kind == REQ_APPLY && r->err == 0 && r->notes && s->apply_hook)
			s->apply_hook(s->apply_hook_arg, r->cell, r->notes, r->n);
		if (r->rcb) {
			r->res.err = r->err;
			r->res.version = r->version;
			r->res.seq = r->seq;
			r->rcb(r->arg, &r->res);
		} else if (r->scb) {
			r->sres.err = r->err;
			r->scb(r->arg, &r->sres);
		} else if (r->cb) {
			r->cb(r->arg, r->err, r->version, r->seq);
		}
		req_free(r);
	}
	if (seq && s->hook)
		s->hook(s->hook_arg, seq);
	/* A lingering writer waits for this (see linger). */
	pthread_mutex_lock(&s->mu);
	s->delivered = posted;
	wake = s->w_waiting && s->want;
	pthread_mutex_unlock(&s->mu);
	if (wake)
		pthread_cond_signal(&s->cv);
}

static void on_async(uv_async_t *h)
{
	deliver(h->data);
}

static void store_free(mc_store *s)
{
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->stat_mu);
	pthread_mutex_destroy(&s->pool_mu);
	free(s->classes);
	free(s);
}

static void on_closed(uv_handle_t *h)
{
	mc_store *s = h->data;

	deliver(s);
	store_free(s);
}

static int submit(mc_store *s, struct req *r)
{
	int wake;

	pthread_mutex_lock(&s->mu);
	if (s->closing) {
		pthread_mutex_unlock(&s->mu);
		req_free(r);
		return MC_ECLOSED;
	}
	/* Bounded memory: a write that would push the queued bytes over the limit is
	 * refused (the queue always takes one, so a single large write passes). */
	if (r->qbytes && s->q_head && s->q_bytes + r->qbytes > s->max_queue_bytes) {
		pthread_mutex_unlock(&s->mu);
		req_free(r);
		return MC_EFULL;
	}
	s->q_bytes += r->qbytes;
	if (s->q_tail)
		s->q_tail->next = r;
	else
		s->q_head = r;
	s->q_tail = r;
	atomic_fetch_add(&s->queue_depth, 1);
	s->q_n++;
	/* The writer is woken only when it waits for work, or when a linger has
	 * gathered what it waits for; and after the unlock, so that on a shared core it
	 * does not run just to block on mu. */
	wake = s->w_waiting && (!s->want || s->q_n >= s->want);
	pthread_mutex_unlock(&s->mu);
	if (wake)
		pthread_cond_signal(&s->cv);
	return 0;
}

/* ---- open / close ------------------------------------------------------------------ */

static int mkdir_p(const char *dir)
{
	size_t n = strlen(dir);
	char *p = mc_strndup(dir, n);
	int rc = 0;

	for (size_t i = 1; i <= n && rc == 0; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		p[i] = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			rc = -errno;
		if (i < n)
			p[i] = '/';
	}
	free(p);
	return rc;
}

/* Opens the databases and restores sequence numbers, the HLC floor and log stats. */
static int load(mc_store *s)
{
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	MDB_val k, d;
	uint64_t hlc = 0, first = 0;
	int rc = mdb_txn_begin(s->env, NULL, 0, &txn);

	if (rc)
		return rc;
	if ((rc = mdb_dbi_open(txn, "records", MDB_CREATE, &s->db_rec)) ||
	    (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &s->db_log)) ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->db_meta)) ||
	    (rc = mdb_dbi_open(txn, "applied", MDB_CREATE, &s->db_applied)))
		goto out;
	if ((rc = get_u64(txn, s->db_meta, META_LAST_SEQ, strlen(META_LAST_SEQ), &s->w_last_seq)) ||
	    (rc = get_u64(txn, s->db_meta, META_ACKED_SEQ, strlen(META_ACKED_SEQ),
			  &s->w_acked_seq)) ||
	    (rc = get_u64(txn, s->db_meta, META_HLC, strlen(META_HLC), &hlc)))
		goto out;
	if ((rc = mdb_cursor_open(txn, s->db_log, &cur)))
		goto out;
	while ((rc = mdb_cursor_get(cur, &k, &d, first ? MDB_NEXT : MDB_FIRST)) == 0) {
		uint64_t seq;

		if (k.mv_size != 8 || d.mv_size < MC_STATE_LOGENT_HDR) {
			rc = MDB_CORRUPTED;
			goto out;
		}
		seq = mc_get_u64(k.mv_data);
		if (!first)
			first = seq;
		s->w_last_seq = MC_MAX(s->w_last_seq, seq);
		s->log.entries++;
		s->log.bytes += d.mv_size - MC_STATE_LOGENT_HDR;
	}
	if (rc != MDB_NOTFOUND)
		goto out;
	mdb_cursor_close(cur);
	cur = NULL;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		return rc;
	s->w_acked_seq = MC_MIN(s->w_acked_seq, s->w_last_seq);
	s->w_trim_want = s->w_acked_seq;
	s->trim_pending = first && first <= s->w_acked_seq;
	s->w_hlc_max = hlc;
	mc_hlc_init(&s->hlc, hlc);
	s->log.last_seq = s->w_last_seq;
	s->log.acked_seq = s->w_acked_seq;
out:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

int mc_store_open(mc_store **out, uv_loop_t *loop, const mc_store_opts *o)
{
	mc_store_opts def;
	mc_store *s;
	int rc;

	*out = NULL;
	if (!o) {
		mc_store_opts_default(&def);
		o = &def;
	}
	if (!o->dir || !o->dir[0] || !loop || (o->home && strlen(o->home) > MC_STATE_MAX_HOME))
		return MC_EINVAL;
	if ((rc = mkdir_p(o->dir)) != 0) {
		MC_ERROR(COMP, "%s: cannot create directory: %s", o->dir, mc_strerror(rc));
		return rc;
	}
	s = mc_calloc(1, sizeof *s);
	s->loop = loop;
	s->max_batch = o->max_batch ? o->max_batch : DEFAULT_MAX_BATCH;
	s->max_queue_bytes = o->max_queue_bytes ? o->max_queue_bytes : DEFAULT_MAX_QUEUE_BYTES;
	if (o->home)
		memcpy(s->home, o->home, strlen(o->home));
	s->default_class = o->default_class;
	s->apply_notes = o->apply_notes;
	if (o->nclasses) {
		/* One allocation: the table, then the prefixes it points to. */
		size_t bytes = o->nclasses * sizeof *s->classes, off;

		for (size_t i = 0; i < o->nclasses; i++)
			bytes += o->classes[i].len + 1;
		s->classes = mc_calloc(1, bytes);
		off = o->nclasses * sizeof *s->classes;
		for (size_t i = 0; i < o->nclasses; i++) {
			char *p = (char *)s->classes + off;

			memcpy(p, o->classes[i].prefix, o->classes[i].len);
			s->classes[i] = (mc_state_prefix){p, o->classes[i].len, o->classes[i].cls};
			off += o->classes[i].len + 1;
		}
		s->nclasses = o->nclasses;
	}
	pthread_mutex_init(&s->mu, NULL);
	{
		/* Linger deadlines are monotonic (mc_now_ns). */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&s->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	s->linger_ns = (uint64_t)o->linger_us * 1000u;
	s->linger_score = LINGER_SCORE_ONE;
	pthread_mutex_init(&s->stat_mu, NULL);
	pthread_mutex_init(&s->pool_mu, NULL);

	/* MDB_NOTLS: read transactions are not bound to a thread (see rtxn_get).
	 * MDB_NOSYNC (durable == 0): commits are written to the page cache but not
	 * fsynced, so a power loss or kernel crash loses the last commits (a crash of
	 * the process alone loses nothing); the file stays consistent either way. */
	if ((rc = mdb_env_create(&s->env)) ||
	    (rc = mdb_env_set_mapsize(s->env, o->map_size ? o->map_size : DEFAULT_MAP_SIZE)) ||
	    (rc = mdb_env_set_maxdbs(s->env, 8)) ||
	    (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) ||
	    (rc = mdb_env_open(s->env, o->dir, MDB_NOTLS | (o->durable ? 0 : MDB_NOSYNC), 0600)))
		goto fail;
	{
		int dead = 0;

		/* Reader slots left behind by a killed process. */
		mdb_reader_check(s->env, &dead);
		if (dead)
			MC_INFO(COMP, "%s: cleared %d stale reader slots", o->dir, dead);
	}
	if ((rc = load(s)))
		goto fail;
	s->prealloc_fd = -1;
	if (o->durable) {
		MDB_stat st;
		int fd;

		if (mdb_env_stat(s->env, &st) == 0 && mdb_env_get_fd(s->env, &fd) == 0) {
			s->prealloc_fd = fd;
			s->psize = st.ms_psize;
			preallocate(s);
		}
	}

	if ((rc = uv_async_init(loop, &s->async, on_async)) != 0) {
		mdb_env_close(s->env);
		store_free(s);
		return rc;
	}
	s->async.data = s;
	if ((rc = pthread_create(&s->writer, NULL, writer_main, s)) != 0) {
		MC_ERROR(COMP, "writer thread: %s", strerror(rc));
		mdb_env_close(s->env);
		s->env = NULL;
		s->closing = 1;
		uv_close((uv_handle_t *)&s->async, on_closed);
		return -rc;
	}
	s->writer_started = 1;
	MC_INFO(COMP, "opened %s (last_seq %llu, acked_seq %llu, log %llu entries, %s)", o->dir,
		(unsigned long long)s->log.last_seq, (unsigned long long)s->log.acked_seq,
		(unsigned long long)s->log.entries, o->durable ? "durable" : "no sync");
	*out = s;
	return 0;

fail:
	MC_ERROR(COMP, "%s: cannot open store: %s", o->dir, mdb_strerror(rc));
	if (s->env)
		mdb_env_close(s->env);
	store_free(s);
	return MC_ESTORE;
}

/* Every queued write is committed by the writer before it exits, so the callbacks
 * run (from the close callback of the async handle, on the loop) with their real
 * results; no commit hook runs after close. Reads must have stopped on every thread
 * because the environment is closed before this returns. */
void mc_store_close(mc_store *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	if (s->closing) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	s->closing = 1;
	s->stop = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (s->writer_started)
		pthread_join(s->writer, NULL);
	s->hook = NULL;
	while (s->pool_n)
		mdb_txn_abort(s->pool[--s->pool_n]);
	/* Durability "none" skips the fsync of each commit, not the one at a clean
	 * stop: only a power loss or kernel crash loses writes. */
	if (!mc_store_is_durable(s))
		mdb_env_sync(s->env, 1);
	mdb_env_close(s->env);
	s->env = NULL;
	uv_close((uv_handle_t *)&s->async, on_closed);
}

/* ---- public operations ----------------------------------------------------------------- */

int mc_store_get(mc_store *s, const char *key, size_t klen, mc_record *rec, mc_buf *val)
{
	MDB_txn *txn;
	MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, d;
	int rc, ret = 0;

	memset(rec, 0, sizeof *rec);
	if (!key_ok(key, klen))
		return MC_EINVAL;
	if (val)
		mc_buf_reset(val);
	if (!s->env)
		return MC_ECLOSED;
	if (rtxn_get(s, &txn))
		return MC_ESTORE;
	rc = mdb_get(txn, s->db_rec, &k, &d);
	if (rc == MDB_NOTFOUND) {
		ret = MC_ENOTFOUND;
	} else if (rc) {
		MC_ERROR(COMP, "get: %s", mdb_strerror(rc));
		ret = MC_ESTORE;
	} else if (mc_state_record_decode(d.mv_data, d.mv_size, rec) != 0) {
		MC_ERROR(COMP, "get: undecodable record (%zu bytes)", d.mv_size);
		memset(rec, 0, sizeof *rec);
		ret = MC_ESTORE;
	} else if (!rec_live(rec, mc_wall_ms())) {
		rec->found = 1;
		rec->value = NULL;
		rec->value_len = 0;
		ret = MC_ENOTFOUND;
	} else if (val) {
		rec->found = 1;
		mc_buf_append(val, rec->value, rec->value_len);
		rec->value = val->data ? val->data : "";
	} else {
		rec->found = 1;
		rec->value = NULL;
	}
	rtxn_put(s, txn);
	return ret;
}

/* Fills a write request from w (bytes copied). Returns MC_EINVAL/MC_ETOOBIG or 0. */
static int write_req(const mc_write *w, struct req **out)
{
	struct req *r;
	size_t vlen = w->vlen;

	*out = NULL;
	if (!key_ok(w->key, w->klen) || w->kind < MC_W_PUT || w->kind > MC_W_INVALIDATE)
		return MC_EINVAL;
	if (w->kind != MC_W_PUT && w->kind != MC_W_COPY)
		vlen = 0;
	if (w->kind == MC_W_COPY && w->deleted)
		vlen = 0;
	if (vlen > MC_STATE_MAX_VALUE)
		return MC_ETOOBIG;
	if (vlen && !w->value)
		return MC_EINVAL;
	if (w->kind == MC_W_COPY && w->home && strlen(w->home) > MC_STATE_MAX_HOME)
		return MC_EINVAL;
	/* One allocation per write: the struct, then the key and the value. */
	r = mc_alloc(sizeof *r + w->klen + vlen);
	memset(r, 0, sizeof *r);
	r->kind = REQ_WRITE;
	r->wkind = w->kind;
	r->flags = w->flags;
	r->qbytes = w->klen + vlen;
	r->expires_ms = w->expires_ms;
	r->delta = w->delta;
	r->if_version = w->if_version;
	r->cversion = w->version;
	r->cdeleted = w->deleted;
	r->csynced_ms = w->synced_ms;
	if (w->kind == MC_W_COPY && w->home)
		memcpy(r->chome, w->home, strlen(w->home));
	r->key = (char *)(r + 1);
	memcpy(r->key, w->key, w->klen);
	r->klen = w->klen;
	if (vlen) {
		r->value = r->key + w->klen;
		memcpy(r->value, w->value, vlen);
		r->vlen = vlen;
	}
	*out = r;
	return 0;
}

int mc_store_submit(mc_store *s, const mc_write *w, mc_store_result_cb cb, void *arg)
{
	struct req *r;
	int rc = write_req(w, &r);

	if (rc)
		return rc;
	r->rcb = cb;
	r->arg = arg;
	return submit(s, r);
}

int mc_store_write(mc_store *s, mc_op op, const char *key, size_t klen, const void *value,
		   size_t vlen, uint64_t expires_ms, int log, mc_store_write_cb cb, void *arg)
{
	mc_write w = {.kind = op == MC_OP_PUT ? MC_W_PUT : MC_W_DEL,
		      .flags = log ? MC_W_LOG : 0,
		      .key = key,
		      .klen = klen,
		      .value = value,
		      .vlen = vlen,
		      .expires_ms = op == MC_OP_PUT ? expires_ms : 0};
	struct req *r;
	int rc;

	if (op != MC_OP_PUT && op != MC_OP_DEL)
		return MC_EINVAL;
	if ((rc = write_req(&w, &r)) != 0)
		return rc;
	r->cb = cb;
	r->arg = arg;
	return submit(s, r);
}

int mc_store_sweep(mc_store *s, const mc_sweep_opts *o,
		   void (*cb)(void *arg, const mc_sweep_result *res), void *arg)
{
	struct req *r = mc_calloc(1, sizeof *r);

	r->kind = REQ_SWEEP;
	r->sweep = *o;
	r->scb = cb;
	r->arg = arg;
	return submit(s, r);
}

uint64_t mc_store_record_count(mc_store *s)
{
	MDB_txn *txn;
	MDB_stat st;
	uint64_t n = 0;

	if (!s->env || rtxn_get(s, &txn))
		return 0;
	if (mdb_stat(txn, s->db_rec, &st) == 0)
		n = st.ms_entries;
	rtxn_put(s, txn);
	return n;
}

int mc_store_is_durable(mc_store *s)
{
	unsigned flags = 0;

	if (!s->env || mdb_env_get_flags(s->env, &flags) != 0)
		return 0;
	return (flags & MDB_NOSYNC) == 0;
}

void mc_store_set_apply_hook(mc_store *s,
			     void (*fn)(void *arg, const char *cell, const mc_apply_note *n,
					size_t count),
			     void *arg)
{
	s->apply_hook = fn;
	s->apply_hook_arg = arg;
}

int mc_store_log_read(mc_store *s, uint64_t from, size_t max_n, size_t max_bytes,
		      int (*fn)(void *arg, const mc_log_entry *e), void *arg)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	uint8_t kb[8];
	MDB_val k = {.mv_size = sizeof kb, .mv_data = kb}, d;
	size_t n = 0, bytes = 0;
	int rc;

	if (!fn)
		return MC_EINVAL;
	if (!s->env)
		return MC_ECLOSED;
	max_n = MC_MIN(max_n, (size_t)INT_MAX);
	if (max_n == 0)
		return 0;
	if (rtxn_get(s, &txn))
		return MC_ESTORE;
	if ((rc = mdb_cursor_open(txn, s->db_log, &cur)) != 0) {
		rtxn_put(s, txn);
		return MC_ESTORE;
	}
	mc_put_u64(kb, from);
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		mc_log_entry e;

		if (k.mv_size != 8 ||
		    mc_state_logent_decode(mc_get_u64(k.mv_data), d.mv_data, d.mv_size, &e) != 0) {
			rc = MDB_CORRUPTED;
			break;
		}
		if (n && bytes + e.klen + e.vlen > max_bytes)
			break;
		bytes += e.klen + e.vlen;
		n++;
		if (fn(arg, &e) || n == max_n)
			break;
	}
	mdb_cursor_close(cur);
	rtxn_put(s, txn);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		MC_ERROR(COMP, "log read: %s", mdb_strerror(rc));
		return MC_ESTORE;
	}
	return (int)n;
}

int mc_store_log_trim(mc_store *s, uint64_t upto, mc_store_write_cb cb, void *arg)
{
	struct req *r = mc_calloc(1, sizeof *r);

	r->kind = REQ_TRIM;
	r->upto = upto;
	r->cb = cb;
	r->arg = arg;
	return submit(s, r);
}

void mc_store_log_stats(mc_store *s, mc_log_stats *out)
{
	pthread_mutex_lock(&s->stat_mu);
	*out = s->log;
	pthread_mutex_unlock(&s->stat_mu);
}

void mc_store_set_commit_hook(mc_store *s, void (*fn)(void *arg, uint64_t last_seq), void *arg)
{
	s->hook = fn;
	s->hook_arg = arg;
}

int mc_store_apply(mc_store *s, const char *cell, const mc_log_entry *entries, size_t n,
		   mc_store_write_cb cb, void *arg)
{
	size_t cl, total = 0, off = 0;
	struct req *r;

	if (!cell || (cl = strlen(cell)) == 0 || cl > MC_STATE_MAX_HOME || (n && !entries))
		return MC_EINVAL;
	for (size_t i = 0; i < n; i++) {
		const mc_log_entry *e = &entries[i];

		if (!key_ok(e->key, e->klen) || (e->op != MC_OP_PUT && e->op != MC_OP_DEL) ||
		    (e->vlen && !e->value))
			return MC_EINVAL;
		if (e->vlen > MC_STATE_MAX_VALUE)
			return MC_ETOOBIG;
		total += e->klen + e->vlen;
	}
	r = mc_calloc(1, sizeof *r);
	r->kind = REQ_APPLY;
	r->qbytes = total;
	r->cb = cb;
	r->arg = arg;
	memcpy(r->cell, cell, cl);
	r->n = n;
	r->entries = mc_calloc(n, sizeof *r->entries);
	if (s->apply_notes)
		r->notes = mc_calloc(n ? n : 1, sizeof *r->notes);
	r->bytes = mc_alloc(total);
	for (size_t i = 0; i < n; i++) {
		mc_log_entry *e = &r->entries[i];

		*e = entries[i];
		memcpy(r->bytes + off, e->key, e->klen);
		e->key = r->bytes + off;
		off += e->klen;
		if (e->op == MC_OP_DEL)
			e->vlen = 0;
		if (e->vlen)
			memcpy(r->bytes + off, e->value, e->vlen);
		e->value = r->bytes + off;
		off += e->vlen;
	}
	return submit(s, r);
}

uint64_t mc_store_applied_seq(mc_store *s, const char *cell)
{
	MDB_txn *txn;
	uint64_t v = 0;
	size_t cl;

	if (!cell || (cl = strlen(cell)) == 0 || cl > MC_STATE_MAX_HOME || !s->env)
		return 0;
	if (rtxn_get(s, &txn))
		return 0;
	if (get_u64(txn, s->db_applied, cell, cl, &v))
		v = 0;
	rtxn_put(s, txn);
	return v;
}

void mc_store_stats_get(mc_store *s, mc_store_stats *out)
{
	out->commits = atomic_load(&s->commits);
	out->writes = atomic_load(&s->writes);
	out->applied = atomic_load(&s->applied);
	out->skipped = atomic_load(&s->skipped);
	out->queue_depth = atomic_load(&s->queue_depth);
	out->swept_expired = atomic_load(&s->swept_expired);
	out->swept_tombstones = atomic_load(&s->swept_tombstones);
	out->swept_copies = atomic_load(&s->swept_copies);
	out->swept_markers = atomic_load(&s->swept_markers);
	out->residency_violations = atomic_load(&s->residency_violations);
}
