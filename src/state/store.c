/* The LMDB store: one environment holding the records, write-log, metadata and
 * per-cell applied-sequence databases; a writer thread that group-commits every
 * queued write into one transaction; completions delivered on the owner's loop only
 * after the commit returned (so an acknowledged write survives a crash). */
#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "state/state.h"
#include "state/state_int.h"

#define COMP "state"
#define DEFAULT_MAP_SIZE ((size_t)4 << 30)
#define DEFAULT_MAX_BATCH 4096
#define DEFAULT_MAX_QUEUE_BYTES ((size_t)256 << 20)
#define MAX_READERS 1022   /* concurrent read transactions (slots in lock.mdb) */
#define RTXN_POOL 64	   /* reset read transactions kept for reuse */
#define TRIM_PER_TXN 50000 /* log deletions per commit, bounds dirty pages */

/* Keys of the "meta" database; values are u64 big-endian. */
#define META_LAST_SEQ "last_seq"
#define META_ACKED_SEQ "acked_seq"
#define META_HLC "hlc" /* highest version assigned: the HLC floor at open */

enum req_kind { REQ_WRITE = 1, REQ_TRIM, REQ_APPLY };

/* One queued request. Its bytes (key, value, entry data) are owned by it and freed
 * after its callback ran. */
struct req {
	struct req *next;
	enum req_kind kind;
	size_t qbytes; /* key and value bytes it holds, counted against max_queue_bytes */
	mc_store_write_cb cb;
	void *arg;
	int err;
	uint64_t version;
	uint64_t seq;
	/* REQ_WRITE */
	uint8_t op;
	uint8_t log;
	uint64_t expires_ms;
	char *key;
	size_t klen;
	char *value;
	size_t vlen;
	/* REQ_TRIM */
	uint64_t upto;
	/* REQ_APPLY */
	char cell[MC_STATE_MAX_HOME + 1];
	mc_log_entry *entries;
	size_t n;
	char *bytes;
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

	/* mu guards the queue, the completion list, hook_seq, stop and closing. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct req *q_head, *q_tail;
	size_t q_bytes, max_queue_bytes;
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

	pthread_mutex_t stat_mu; /* guards log */
	mc_log_stats log;

	_Atomic uint64_t commits, writes, applied, skipped, queue_depth;

	pthread_mutex_t pool_mu; /* guards pool */
	MDB_txn *pool[RTXN_POOL];
	size_t pool_n;

	/* Loop thread only. */
	void (*hook)(void *arg, uint64_t last_seq);
	void *hook_arg;
};

void mc_store_opts_default(mc_store_opts *o)
{
	memset(o, 0, sizeof *o);
	o->map_size = DEFAULT_MAP_SIZE;
	o->durable = 1;
	o->max_batch = DEFAULT_MAX_BATCH;
	o->max_queue_bytes = DEFAULT_MAX_QUEUE_BYTES;
	o->home = "";
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
	free(r->key);
	free(r->value);
	free(r->entries);
	free(r->bytes);
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
	MDB_val d = {.mv_size = mc_state_record_size(strlen(rec->home), rec->value_len)};
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
	int logged;
};

static int do_write(mc_store *s, MDB_txn *txn, struct req *r, struct batch *b)
{
	MDB_val k = {.mv_size = r->klen, .mv_data = r->key}, d;
	mc_record rec;
	uint64_t v = mc_hlc_now(&s->hlc);
	int rc = mdb_get(txn, s->db_rec, &k, &d);

	if (rc == 0) {
		/* Per-key versions strictly increase even when the record came from
		 * another cell whose clock is ahead of ours. */
		if (mc_state_record_decode(d.mv_data, d.mv_size, &rec) == 0 && rec.version >= v)
			v = mc_hlc_observe(&s->hlc, rec.version);
	} else if (rc != MDB_NOTFOUND) {
		return rc;
	}
	memset(&rec, 0, sizeof rec);
	rec.version = v;
	memcpy(rec.home, s->home, sizeof rec.home);
	if (r->op == MC_OP_PUT) {
		rec.expires_ms = r->expires_ms;
		rec.value = r->value;
		rec.value_len = r->vlen;
	} else {
		rec.deleted = 1;
	}
	rc = put_record(s, txn, &k, &rec);
	if (rc)
		return rc;
	r->version = v;
	b->hlc_max = MC_MAX(b->hlc_max, v);
	b->writes++;
	if (r->log) {
		uint8_t kb[8];
		mc_log_entry e = {.version = v,
				  .expires_ms = rec.expires_ms,
				  .op = r->op,
				  .key = r->key,
				  .klen = r->klen,
				  .value = rec.value,
				  .vlen = rec.value_len};
		MDB_val lk = {.mv_size = sizeof kb, .mv_data = kb};
		MDB_val ld = {.mv_size = mc_state_logent_size(e.klen, e.vlen)};

		mc_put_u64(kb, b->last_seq + 1);
		rc = mdb_put(txn, s->db_log, &lk, &ld, MDB_APPEND | MDB_RESERVE);
		if (rc)
			return rc;
		mc_state_logent_encode(ld.mv_data, &e);
		r->seq = ++b->last_seq;
		b->d_entries++;
		b->d_bytes += (int64_t)(e.klen + e.vlen);
		b->logged = 1;
	}
	return 0;
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

		if (e->seq <= applied) {
			b->skipped++;
			continue;
		}
		applied = e->seq;
		b->applied++;
		rc = mdb_get(txn, s->db_rec, &k, &d);
		if (rc == 0) {
			/* Last writer wins on (version, home cell name); an undecodable
			 * record loses. */
			if (mc_state_record_decode(d.mv_data, d.mv_size, &rec) == 0 &&
			    (e->version < rec.version ||
			     (e->version == rec.version && home_cmp(r->cell, rec.home) <= 0)))
				continue;
		} else if (rc != MDB_NOTFOUND) {
			return rc;
		}
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
	struct batch b = {
	    .last_seq = s->w_last_seq, .acked_seq = s->w_acked_seq, .hlc_max = s->w_hlc_max};
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
	}
	/* A trim that shared the failed transaction (say with writes failing on a full
	 * map) is retried once on its own: it is what frees the space, and the shipper
	 * does not ask again for a seq it already asked to trim. A failed retry waits for
	 * the next trim request. */
	s->trim_retry = list != NULL && s->w_trim_want > s->w_acked_seq;
	s->trim_pending = s->trim_retry;
	return 0;
}

static void *writer_main(void *arg)
{
	mc_store *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct req *head, *tail = NULL, *r;
		size_t n = 0;
		uint64_t seq;

		while (!s->q_head && !s->stop && !s->trim_pending)
			pthread_cond_wait(&s->cv, &s->mu);
		if (!s->q_head && s->stop)
			break;
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
			uv_async_send(&s->async);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- loop side ------------------------------------------------------------------- */

/* Runs the callbacks of completed requests, then the commit hook. */
static void deliver(mc_store *s)
{
	struct req *r, *next;
	uint64_t seq;

	pthread_mutex_lock(&s->mu);
	r = s->done_head;
	s->done_head = s->done_tail = NULL;
	seq = s->hook_seq;
	s->hook_seq = 0;
	pthread_mutex_unlock(&s->mu);
	for (; r; r = next) {
		next = r->next;
		if (r->cb)
			r->cb(r->arg, r->err, r->version, r->seq);
		req_free(r);
	}
	if (seq && s->hook)
		s->hook(s->hook_arg, seq);
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
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
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
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
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
		ret = MC_ESTORE;
	} else if (rec->deleted || (rec->expires_ms && rec->expires_ms <= mc_wall_ms())) {
		rec->value = NULL;
		rec->value_len = 0;
		ret = MC_ENOTFOUND;
	} else if (val) {
		mc_buf_append(val, rec->value, rec->value_len);
		rec->value = val->data ? val->data : "";
	} else {
		rec->value = NULL;
	}
	rtxn_put(s, txn);
	return ret;
}

int mc_store_write(mc_store *s, mc_op op, const char *key, size_t klen, const void *value,
		   size_t vlen, uint64_t expires_ms, int log, mc_store_write_cb cb, void *arg)
{
	struct req *r;

	if (!key_ok(key, klen) || (op != MC_OP_PUT && op != MC_OP_DEL))
		return MC_EINVAL;
	if (op == MC_OP_DEL)
		vlen = 0;
	if (vlen > MC_STATE_MAX_VALUE)
		return MC_ETOOBIG;
	if (vlen && !value)
		return MC_EINVAL;
	r = mc_calloc(1, sizeof *r);
	r->kind = REQ_WRITE;
	r->qbytes = klen + vlen;
	r->cb = cb;
	r->arg = arg;
	r->op = (uint8_t)op;
	r->log = log ? 1 : 0;
	r->expires_ms = op == MC_OP_PUT ? expires_ms : 0;
	r->key = mc_alloc(klen);
	memcpy(r->key, key, klen);
	r->klen = klen;
	if (vlen) {
		r->value = mc_alloc(vlen);
		memcpy(r->value, value, vlen);
		r->vlen = vlen;
	}
	return submit(s, r);
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
}
