/* The cell's data-plane threads. The config's "threads" (default: the CPUs the
 * process may run on) sets how many event loops serve the data plane. Each
 * thread has its own cell: loop, SO_REUSEPORT listeners on the main thread's
 * bound ports (the kernel spreads connections over them), config snapshots
 * built from the main thread's, worker pools and health probes, locality and
 * metrics registry. What exists once per process stays on the main thread
 * (idx 0): the hot-state store and its KV API, the cache, the shipper, the
 * fleet watcher, telemetry and the admin listener.
 *
 * The threads talk only through mailboxes (src/net/mailbox.c):
 *   main -> thread: new snapshot, new TLS context, drain, gather metrics, stop;
 *   thread -> main: a KV or cache request (mc_cell_hop), a released snapshot,
 *                   drained, gathered metrics, exited;
 *   main -> thread: the answer of a handed-over request.
 * Shared memory is limited to immutable config, the quota buckets (own lock),
 * the event buffer (own lock), the rollout window and telemetry summaries
 * (obs_lock) and the routes' first-request flags (atomic).
 * docs/architecture.md "Threads" and docs/operations.md "Threads". */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cell/cell_int.h"
#include "cell/edge.h"

#define COMP "cell"

typedef struct cell_thread {
	cell c; /* first: a task's cell is its thread */
	uv_loop_t loop;
	uv_thread_t tid;
	uv_sem_t ready;
	int rc;              /* the thread's start result */
	cell_snapshot *boot; /* the main thread's snapshot to start from (one reference) */
	char http_hp[300], tls_hp[300];
	int stop_sent;       /* main: no more posts into this thread's mailbox */
	int exited;          /* main: its "exited" arrived */
	uint64_t version;    /* main: config version the thread last reported installed */
	mc_http_drain *drain;
} cell_thread;

/* The main thread's i-th other thread, or NULL (not started, or none). */
static cell_thread *thr(const cell *m, unsigned i)
{
	return m->threads ? m->threads[i] : NULL;
}

unsigned mc_cell_threads_wanted(const mc_cell_conf *conf)
{
	if (conf->threads)
		return conf->threads;
	long n = 0;
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		n = CPU_COUNT(&set);
	if (n <= 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	return (unsigned)MC_MIN(n, (long)MC_CELL_THREADS_MAX);
}

void mc_cell_obs_lock(cell *c)
{
	if (c->main->nthreads > 1)
		pthread_mutex_lock(&c->main->obs_lock);
}

void mc_cell_obs_unlock(cell *c)
{
	if (c->main->nthreads > 1)
		pthread_mutex_unlock(&c->main->obs_lock);
}

void mc_cell_thread_metrics(cell *c)
{
	char idx[16];
	snprintf(idx, sizeof idx, "%u", c->idx);
	c->m_thread_requests = mc_cell_series(
	    c, "metrocell_thread_requests_total",
	    "Requests that arrived on each data-plane thread's listeners (the kernel spreads "
	    "connections over them).",
	    MC_METRIC_COUNTER, "thread", idx, NULL, NULL);
}

/* "host:port" with the port the main thread's listener got (a config may say
 * port 0). */
static void bound(const char *conf_hp, uint16_t port, char *out, size_t cap)
{
	char host[256];
	uint16_t ignored;
	if (mc_parse_hostport(conf_hp, host, sizeof host, &ignored) < 0)
		snprintf(host, sizeof host, "127.0.0.1");
	if (strchr(host, ':'))
		snprintf(out, cap, "[%s]:%u", host, port);
	else
		snprintf(out, cap, "%s:%u", host, port);
}

/* ---- shared-state registries ---------------------------------------------------------- */

struct cell_shared_reg {
	pthread_mutex_t lock;
	cell_shared *head;
};

cell_shared_reg *mc_cell_shared_reg_new(void)
{
	cell_shared_reg *r = mc_calloc(1, sizeof *r);
	pthread_mutex_init(&r->lock, NULL);
	return r;
}

void mc_cell_shared_reg_free(cell_shared_reg *r)
{
	if (!r)
		return;
	MC_ASSERT(!r->head);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

cell_shared *mc_cell_shared_get(cell_shared_reg *r, const void *key,
				bool (*same)(const cell_shared *e, const void *key),
				cell_shared *(*make)(const void *key))
{
	if (!r) {
		cell_shared *e = make(key);
		e->refs = 1;
		return e;
	}
	pthread_mutex_lock(&r->lock);
	cell_shared *e = r->head;
	while (e && !same(e, key))
		e = e->next;
	if (e) {
		e->refs++;
	} else {
		e = make(key);
		e->refs = 1;
		e->next = r->head;
		r->head = e;
	}
	pthread_mutex_unlock(&r->lock);
	return e;
}

bool mc_cell_shared_put(cell_shared_reg *r, cell_shared *e)
{
	if (!r)
		return true;
	pthread_mutex_lock(&r->lock);
	bool last = --e->refs == 0;
	if (last) {
		cell_shared **pp = &r->head;
		while (*pp != e)
			pp = &(*pp)->next;
		*pp = e->next;
	}
	pthread_mutex_unlock(&r->lock);
	return last;
}

/* ---- a thread's life ------------------------------------------------------------------------ */

static void exited_task(void *arg);

void mc_cell_thread_maybe_close(cell *c)
{
	if (c->stopping && c->hops == 0 && c->mbox) {
		mc_mailbox_close(c->mbox);
		c->mbox = NULL;
	}
}

static void thread_stop(cell *c)
{
	if (c->stopping)
		return;
	c->stopping = 1;
	cell_thread *t = (cell_thread *)c;
	mc_http_drain_cancel(t->drain);
	t->drain = NULL;
	mc_http_server_free(c->http);
	c->http = NULL;
	mc_cell_tls_stop(c);
	mc_cell_pools_fini(c);
	mc_cell_thread_maybe_close(c);
}

static void stop_task(void *arg)
{
	thread_stop(arg);
}

static void thread_main(void *arg)
{
	cell_thread *t = arg;
	cell *c = &t->c;
	char err[512] = "";
	int rc = uv_loop_init(&t->loop);
	if (rc < 0) {
		t->rc = rc;
		mc_cell_snapshot_release_origin(c, t->boot);
		t->boot = NULL;
		t->exited = 1;
		uv_sem_post(&t->ready);
		return;
	}
	c->loop = &t->loop;
	mc_cell_thread_metrics(c);
	if ((rc = mc_mailbox_new(&c->mbox, c->loop)) < 0)
		snprintf(err, sizeof err, "mailbox: %s", mc_strerror(rc));
	if (rc == 0 && (rc = mc_cell_pools_init(c)) < 0)
		snprintf(err, sizeof err, "pools: %s", mc_strerror(rc));
	mc_cell_edge_init(c);
	cell_snapshot *boot = t->boot;
	t->boot = NULL;
	if (rc == 0) {
		cell_snapshot *s = NULL;
		if ((rc = mc_cell_snapshot_new_from(c, boot, &s, err, sizeof err)) == 0)
			c->snap = s;
	} else {
		mc_cell_snapshot_release_origin(c, boot);
	}
	if (rc == 0 && (rc = mc_cell_listen(c, t->http_hp)) < 0)
		snprintf(err, sizeof err, "cannot listen on %s: %s", t->http_hp, mc_strerror(rc));
	if (rc == 0 && (rc = mc_cell_tls_start_thread(c, t->tls_hp)) < 0)
		snprintf(err, sizeof err, "TLS listener on %s: %s", t->tls_hp, mc_strerror(rc));
	if (rc < 0)
		fprintf(stderr, "metrocell cell: thread %u: %s\n", c->idx, err);
	t->rc = rc;
	uv_sem_post(&t->ready);
	if (rc < 0)
		thread_stop(c);
	uv_run(c->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(c->loop) != 0)
		MC_WARN(COMP, "cell %s: thread %u's loop still had open handles at exit",
			c->conf->cell, c->idx);
	mc_cell_edge_fini(c);
	if (c->mbox == NULL && mc_mailbox_post(c->main->mbox, exited_task, t) < 0)
		MC_ERROR(COMP, "cell %s: thread %u exited after the main thread", c->conf->cell,
			 c->idx);
}

int mc_cell_threads_start(cell *m)
{
	unsigned n = m->nthreads;
	if (n <= 1)
		return 0;
	m->threads = mc_calloc(n - 1, sizeof *m->threads);
	char http_hp[300], tls_hp[300] = "";
	bound(m->conf->listen_http, mc_http_server_port(m->http), http_hp, sizeof http_hp);
	if (m->conf->tls.enabled)
		bound(m->conf->tls.listen, mc_http_server_tls_port(m->http), tls_hp, sizeof tls_hp);
	for (unsigned i = 1; i < n; i++) {
		cell_thread *t = mc_calloc(1, sizeof *t);
		cell *c = &t->c;
		c->conf = m->conf;
		c->main = m;
		c->idx = i;
		c->start_ns = m->start_ns;
		c->metrics = mc_metrics_new();
		memcpy(c->reject_headers, m->reject_headers, sizeof c->reject_headers);
		snprintf(t->http_hp, sizeof t->http_hp, "%s", http_hp);
		snprintf(t->tls_hp, sizeof t->tls_hp, "%s", tls_hp);
		t->boot = mc_cell_snapshot_ref(m->snap);
		t->version = m->snap->version;
		uv_sem_init(&t->ready, 0);
		m->threads[i - 1] = t;
		int rc = uv_thread_create(&t->tid, thread_main, t);
		if (rc < 0) {
			fprintf(stderr, "metrocell cell: cannot start thread %u: %s\n", i,
				uv_strerror(rc));
			mc_cell_snapshot_unref(t->boot);
			t->boot = NULL;
			uv_sem_destroy(&t->ready);
			mc_metrics_free(c->metrics);
			free(t);
			m->threads[i - 1] = NULL;
			m->nthreads = i; /* the threads started so far */
			return rc;
		}
		uv_sem_wait(&t->ready);
		if (t->rc < 0) {
			t->stop_sent = 1; /* it stops by itself */
			m->nthreads = i + 1;
			return t->rc;
		}
	}
	MC_INFO(COMP, "cell %s: %u data-plane threads share %s", m->conf->cell, n, http_hp);
	return 0;
}

/* ---- main thread: tasks the threads post ------------------------------------------------ */

static void exited_task(void *arg)
{
	cell_thread *t = arg;
	cell *m = t->c.main;
	t->exited = 1;
	for (unsigned i = 0; i + 1 < m->nthreads; i++)
		if (thr(m, i) && !thr(m, i)->exited)
			return;
	/* the last thread is gone: nothing posts to the main thread any more */
	mc_mailbox_close(m->mbox);
	m->mbox = NULL;
}

void mc_cell_threads_stop(cell *m)
{
	free(m->drain_state); /* drains still under way no longer matter */
	m->drain_state = NULL;
	for (unsigned i = 0; i + 1 < m->nthreads; i++) {
		cell_thread *t = thr(m, i);
		if (!t || t->stop_sent)
			continue;
		t->stop_sent = 1;
		if (mc_mailbox_post(t->c.mbox, stop_task, &t->c) < 0)
			MC_ERROR(COMP, "cell %s: thread %u's mailbox is closed", m->conf->cell,
				 t->c.idx);
	}
	int waiting = 0;
	for (unsigned i = 0; i + 1 < m->nthreads; i++)
		waiting += thr(m, i) && !thr(m, i)->exited;
	if (!waiting && m->mbox) {
		mc_mailbox_close(m->mbox);
		m->mbox = NULL;
	}
}

void mc_cell_threads_free(cell *m)
{
	for (unsigned i = 0; i + 1 < m->nthreads; i++) {
		cell_thread *t = thr(m, i);
		if (!t)
			continue;
		uv_thread_join(&t->tid);
		uv_sem_destroy(&t->ready);
		mc_metrics_free(t->c.metrics);
		free(t);
	}
	free(m->threads);
	m->threads = NULL;
	mc_metrics_free(m->shards_view);
	m->shards_view = NULL;
}

/* ---- new snapshots and TLS contexts ---------------------------------------------------- */

/* A message for one thread about a shared object (a snapshot, a TLS context). */
typedef struct obj_msg {
	cell_thread *t;
	void *obj;        /* one reference for the thread */
	uint64_t version; /* installed_task: the version the thread serves now */
} obj_msg;

/* Posts fn(msg) to every running thread with a reference of obj each, taken
 * by ref and dropped by unref when a post fails. */
static void broadcast(cell *m, mc_mailbox_fn fn, void *obj, void *(*ref)(void *),
		      void (*unref)(void *))
{
	if (m->main != m || m->stopping)
		return;
	for (unsigned i = 0; i + 1 < m->nthreads; i++) {
		cell_thread *t = thr(m, i);
		if (!t || t->stop_sent)
			continue;
		obj_msg *msg = mc_alloc(sizeof *msg);
		msg->t = t;
		msg->obj = ref(obj);
		if (mc_mailbox_post(t->c.mbox, fn, msg) < 0) {
			unref(msg->obj);
			free(msg);
		}
	}
}

/* On the main thread: a thread serves a new version now. */
static void installed_task(void *arg)
{
	obj_msg *msg = arg;
	msg->t->version = msg->version;
	free(msg);
}

void mc_cell_threads_versions(cell *m, mc_buf *b)
{
	mc_buf_printf(b, ",\"thread_versions\":[%llu",
		      (unsigned long long)(m->snap ? m->snap->version : 0));
	for (unsigned i = 0; i + 1 < m->nthreads; i++) {
		cell_thread *t = thr(m, i);
		mc_buf_printf(b, ",%llu", (unsigned long long)(t ? t->version : 0));
	}
	mc_buf_append_str(b, "]");
}

static void install_task(void *arg)
{
	obj_msg *msg = arg;
	cell *c = &msg->t->c;
	cell_snapshot *origin = msg->obj;
	free(msg);
	if (c->stopping) {
		mc_cell_snapshot_release_origin(c, origin);
		return;
	}
	char err[512];
	cell_snapshot *s = NULL;
	uint64_t version = origin->version;
	if (mc_cell_snapshot_new_from(c, origin, &s, err, sizeof err) < 0) {
		MC_ERROR(COMP, "cell %s: thread %u keeps config version %llu: version %llu: %s",
			 c->conf->cell, c->idx,
			 (unsigned long long)(c->snap ? c->snap->version : 0),
			 (unsigned long long)version, err);
		mc_cell_event(c, "config_thread_failed", "u:thread", (uint64_t)c->idx,
			      "u:version", version, "s:error", err, NULL);
		return;
	}
	cell_snapshot *old = c->snap;
	s->applied_ms = mc_wall_ms();
	c->snap = s;
	mc_cell_snapshot_unref(old);
	obj_msg *done = mc_alloc(sizeof *done);
	done->t = (cell_thread *)c;
	done->obj = NULL;
	done->version = version;
	if (mc_mailbox_post(c->main->mbox, installed_task, done) < 0)
		free(done);
}

static void *snap_ref(void *s)
{
	return mc_cell_snapshot_ref(s);
}

static void snap_unref(void *s)
{
	mc_cell_snapshot_unref(s);
}

void mc_cell_threads_install(cell *m, cell_snapshot *s)
{
	broadcast(m, install_task, s, snap_ref, snap_unref);
}

static void tls_task(void *arg)
{
	obj_msg *msg = arg;
	cell *c = &msg->t->c;
	if (c->http && !c->stopping)
		mc_http_server_tls_ctx_set(c->http, msg->obj);
	mc_tls_ctx_unref(msg->obj);
	free(msg);
}

static void *ctx_ref(void *ctx)
{
	return mc_tls_ctx_ref(ctx);
}

static void ctx_unref(void *ctx)
{
	mc_tls_ctx_unref(ctx);
}

void mc_cell_threads_tls_ctx(cell *m, mc_tls_ctx *ctx)
{
	broadcast(m, tls_task, ctx, ctx_ref, ctx_unref);
}

/* ---- graceful drain --------------------------------------------------------------------- */

typedef struct drain_state {
	unsigned left; /* listeners (threads) still draining */
	size_t busy;   /* connections still open at their deadlines */
	void (*done)(cell *c);
} drain_state;

static void drained_one(cell *m, size_t left)
{
	drain_state *d = m->drain_state;
	d->busy += left;
	if (--d->left > 0)
		return;
	if (d->busy)
		MC_WARN(COMP, "cell %s: %zu connections still busy after %u ms of draining; "
			"closing them",
			m->conf->cell, d->busy, (unsigned)m->conf->limits.drain_timeout_ms);
	m->drain_state = NULL;
	void (*done)(cell *) = d->done;
	free(d);
	done(m);
}

typedef struct drained_msg {
	cell *m;
	size_t left;
} drained_msg;

static void drained_task(void *arg)
{
	drained_msg *msg = arg;
	cell *m = msg->m;
	size_t left = msg->left;
	free(msg);
	if (m->drain_state)
		drained_one(m, left);
}

static void on_thread_drained(void *arg, size_t left)
{
	cell_thread *t = arg;
	t->drain = NULL;
	drained_msg *msg = mc_alloc(sizeof *msg);
	msg->m = t->c.main;
	msg->left = left;
	if (mc_mailbox_post(t->c.main->mbox, drained_task, msg) < 0)
		free(msg);
}

static void drain_task(void *arg)
{
	cell_thread *t = arg;
	cell *c = &t->c;
	if (c->stopping || !c->http) {
		on_thread_drained(t, 0);
		return;
	}
	t->drain = mc_http_drain_start(c->loop, c->http, c->conf->limits.drain_timeout_ms,
				       on_thread_drained, t);
}

static void on_main_drained(void *arg, size_t left)
{
	cell *m = arg;
	m->drain = NULL;
	if (m->drain_state)
		drained_one(m, left);
}

void mc_cell_threads_drain(cell *m, void (*done)(cell *c))
{
	drain_state *d = mc_calloc(1, sizeof *d);
	d->done = done;
	d->left = 1;
	m->drain_state = d;
	for (unsigned i = 0; i + 1 < m->nthreads; i++) {
		cell_thread *t = thr(m, i);
		if (!t || t->stop_sent)
			continue;
		if (mc_mailbox_post(t->c.mbox, drain_task, t) == 0)
			d->left++;
	}
	m->drain = mc_http_drain_start(m->loop, m->http, m->conf->limits.drain_timeout_ms,
				       on_main_drained, m);
}

/* ---- metrics -------------------------------------------------------------------------------- */

typedef struct gather {
	cell *m;
	mc_metrics *acc;
	unsigned left;
	void (*fn)(void *arg, mc_metrics *merged);
	void *arg;
} gather;

typedef struct gathered_msg {
	gather *g;
	cell_thread *t;
	mc_metrics *copy; /* the thread's metrics, copied on its thread */
} gathered_msg;

static void gather_one(gather *g, mc_metrics *copy)
{
	if (copy) {
		mc_metrics_merge(g->acc, copy);
		mc_metrics_free(copy);
	}
	if (--g->left > 0)
		return;
	g->fn(g->arg, g->acc);
	free(g);
}

static void gathered_task(void *arg)
{
	gathered_msg *msg = arg;
	gather *g = msg->g;
	mc_metrics *copy = msg->copy;
	free(msg);
	gather_one(g, copy);
}

static void gather_task(void *arg)
{
	gathered_msg *msg = arg;
	cell_thread *t = msg->t;
	msg->copy = mc_metrics_new();
	mc_metrics_merge(msg->copy, t->c.metrics);
	if (mc_mailbox_post(t->c.main->mbox, gathered_task, msg) < 0) {
		mc_metrics_free(msg->copy);
		free(msg);
	}
}

void mc_cell_gather(cell *m, int with_main, void (*fn)(void *arg, mc_metrics *merged), void *arg)
{
	gather *g = mc_calloc(1, sizeof *g);
	g->m = m;
	g->acc = mc_metrics_new();
	g->fn = fn;
	g->arg = arg;
	g->left = 1;
	if (with_main)
		mc_metrics_merge(g->acc, m->metrics);
	for (unsigned i = 0; i + 1 < m->nthreads; i++) {
		cell_thread *t = thr(m, i);
		if (!t || t->stop_sent)
			continue;
		gathered_msg *msg = mc_alloc(sizeof *msg);
		msg->g = g;
		msg->t = t;
		msg->copy = NULL;
		if (mc_mailbox_post(t->c.mbox, gather_task, msg) == 0)
			g->left++;
		else
			free(msg);
	}
	gather_one(g, NULL);
}

static void view_done(void *arg, mc_metrics *merged)
{
	cell *m = arg;
	m->gathering = 0;
	mc_metrics_free(m->shards_view);
	m->shards_view = merged;
}

void mc_cell_threads_refresh_view(cell *m)
{
	if (m->nthreads <= 1 || m->gathering || m->stopping)
		return;
	m->gathering = 1;
	mc_cell_gather(m, 0, view_done, m);
}
