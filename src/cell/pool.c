/* Worker pools of the cell: which workers may get requests (active health
 * probes and passive outlier ejection) and which one gets the next request
 * (power of two choices on outstanding requests). docs/operations.md "Worker
 * pools" describes the rules; this file is their only implementation. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cell/cell_int.h"

#define COMP_POOL "pool"
#define WIN_BUCKETS 10
#define PROBE_MAX_RESPONSE (64u * 1024u)

uint64_t mc_cell_now_ms(void)
{
	return mc_now_ns() / 1000000u;
}

static uint64_t rng_next(cell_pool *p)
{
	/* xorshift64*: enough to sample two workers without a pattern */
	uint64_t x = p->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	p->rng = x;
	return x * 2685821657736338717ull;
}

/* ---- state shared by the threads ------------------------------------------------------ */

/* One pool definition's worker state, shared by the copy of the pool each
 * data-plane thread has (each copy keeps its own connections): a worker is
 * healthy, ejected or busy for the whole cell, and max_outstanding bounds every
 * thread's requests together. Reads on the request path are atomic loads;
 * outlier bookkeeping takes the lock. */
typedef struct cell_pool_shared cell_pool_shared;

struct cell_pool_shared {
	cell_shared link;  /* in the main thread's pool_reg; refs: pool copies using it */
	mc_pool_conf def;  /* the definition it belongs to (a copy) */
	pthread_mutex_t lock;
	_Atomic size_t outstanding;
	size_t nworkers;
	cell_worker_shared *w;
};

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool mc_cell_pool_conf_same(const mc_pool_conf *a, const mc_pool_conf *b)
{
	if (strcmp(a->name, b->name) != 0 || a->nworkers != b->nworkers ||
	    a->connect_timeout_ms != b->connect_timeout_ms || a->timeout_ms != b->timeout_ms ||
	    a->max_conns != b->max_conns || a->max_queue != b->max_queue ||
	    a->max_outstanding != b->max_outstanding)
		return false;
	for (size_t i = 0; i < a->nworkers; i++)
		if (strcmp(a->workers[i], b->workers[i]) != 0)
			return false;
	const mc_health_conf *ha = &a->health, *hb = &b->health;
	if (ha->enabled != hb->enabled ||
	    (ha->enabled &&
	     (!str_eq(ha->path, hb->path) || ha->interval_ms != hb->interval_ms ||
	      ha->timeout_ms != hb->timeout_ms || ha->rise != hb->rise || ha->fall != hb->fall)))
		return false;
	return memcmp(&a->outlier, &b->outlier, sizeof a->outlier) == 0;
}

static cell_shared *shared_new(const void *key)
{
	const mc_pool_conf *conf = key;
	cell_pool_shared *sh = mc_calloc(1, sizeof *sh);
	sh->def = *conf;
	sh->def.name = mc_strdup(conf->name);
	sh->def.workers = mc_calloc(conf->nworkers ? conf->nworkers : 1, sizeof *sh->def.workers);
	for (size_t i = 0; i < conf->nworkers; i++)
		sh->def.workers[i] = mc_strdup(conf->workers[i]);
	sh->def.health.path = conf->health.path ? mc_strdup(conf->health.path) : NULL;
	pthread_mutex_init(&sh->lock, NULL);
	sh->nworkers = conf->nworkers;
	sh->w = mc_calloc(sh->nworkers ? sh->nworkers : 1, sizeof *sh->w);
	for (size_t i = 0; i < sh->nworkers; i++)
		sh->w[i].healthy = 1; /* until its probes say otherwise: docs/operations.md */
	return &sh->link;
}

static bool shared_same(const cell_shared *e, const void *key)
{
	return mc_cell_pool_conf_same(&((const cell_pool_shared *)(const void *)e)->def, key);
}

static void shared_free(cell_pool_shared *sh)
{
	free(sh->def.name);
	for (size_t i = 0; i < sh->def.nworkers; i++)
		free(sh->def.workers[i]);
	free(sh->def.workers);
	free(sh->def.health.path);
	pthread_mutex_destroy(&sh->lock);
	free(sh->w);
	free(sh);
}

/* The pool copy that probes and exposes the gauges: the main thread's (a
 * cell without threads, such as a unit test's, is its own main thread). */
static int is_main(const cell_pool *p)
{
	return !p->c->main || p->c->main == p->c;
}

static cell_shared_reg *registry(const cell_pool *p)
{
	return p->c->main ? p->c->main->pool_reg : NULL;
}

size_t mc_cell_pool_outstanding(const cell_pool *p)
{
	return atomic_load_explicit(&p->sh->outstanding, memory_order_relaxed);
}

/* ---- metrics ------------------------------------------------------------------------ */

static mc_series *worker_series(cell_worker *w, const char *name, const char *help,
				mc_metric_type t)
{
	cell_pool *p = w->pool;
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, p->c->conf->cell);
	mc_buf_append_str(&l, "\",pool=\"");
	mc_metrics_label_escape(&l, p->conf->name);
	mc_buf_append_str(&l, "\",worker=\"");
	mc_metrics_label_escape(&l, w->addr);
	mc_buf_append_str(&l, "\"");
	mc_series *s = mc_metrics_series(p->c->metrics, name, help, t, l.data);
	mc_buf_fini(&l);
	return s;
}

static void worker_metrics(cell_worker *w)
{
	w->m_ejections = worker_series(w, "metrocell_upstream_ejections_total",
				       "Outlier ejections of the worker.", MC_METRIC_COUNTER);
	if (!is_main(w->pool))
		return; /* one set of gauges per cell, from the shared state */
	w->m_healthy = worker_series(
	    w, "metrocell_upstream_worker_healthy",
	    "1 while the worker's health probes pass (always 1 without probes).", MC_METRIC_GAUGE);
	w->m_ejected =
	    worker_series(w, "metrocell_upstream_worker_ejected",
			  "1 while the worker is ejected by outlier detection.", MC_METRIC_GAUGE);
	w->m_outstanding =
	    worker_series(w, "metrocell_upstream_outstanding",
			  "Requests in flight or queued on the worker (streams until they end).",
			  MC_METRIC_GAUGE);
	w->m_healthy->value = atomic_load(&w->sh->healthy);
}

static int is_ejected(const cell_worker *w, uint64_t now_ms);

void mc_cell_pools_gauges(cell *c)
{
	cell_snapshot *s = c->snap;
	uint64_t now = mc_cell_now_ms();
	for (size_t i = 0; s && i < s->npools; i++) {
		cell_pool *p = s->pools[i];
		for (size_t k = 0; k < p->nworkers; k++) {
			cell_worker *w = p->workers[k];
			if (!w->m_healthy)
				continue;
			w->m_healthy->value = atomic_load(&w->sh->healthy);
			w->m_ejected->value = is_ejected(w, now);
			w->m_outstanding->value = (double)atomic_load(&w->sh->outstanding);
		}
	}
}

/* ---- outlier ejection --------------------------------------------------------------------- */

static uint64_t bucket_ms(const cell_pool *p)
{
	uint64_t b = p->conf->outlier.window_ms / WIN_BUCKETS;
	return b ? b : 1;
}

/* Requests and failures seen in the last window (the current bucket included). */
static void window_sum(const cell_worker *w, uint64_t now_ms, uint32_t *total, uint32_t *failures)
{
	uint64_t cur = now_ms / bucket_ms(w->pool);
	*total = *failures = 0;
	const cell_worker_shared *sh = w->sh;
	for (size_t i = 0; i < WIN_BUCKETS; i++) {
		if (sh->win[i].epoch + WIN_BUCKETS > cur && sh->win[i].epoch <= cur) {
			*total += sh->win[i].total;
			*failures += sh->win[i].failures;
		}
	}
}

static int is_ejected(const cell_worker *w, uint64_t now_ms)
{
	uint64_t until = atomic_load_explicit(&w->sh->ejected_until_ms, memory_order_relaxed);
	return until != 0 && now_ms < until;
}

int mc_cell_worker_eligible(const cell_worker *w, uint64_t now_ms)
{
	return atomic_load_explicit(&w->sh->healthy, memory_order_relaxed) &&
	       !is_ejected(w, now_ms);
}

size_t mc_cell_pool_ejected(const cell_pool *p, uint64_t now_ms)
{
	size_t n = 0;
	for (size_t i = 0; i < p->nworkers; i++)
		n += is_ejected(p->workers[i], now_ms);
	return n;
}

/* How many workers may be ejected at once: max_ejection_percent of the pool,
 * rounded down, but always at least one (a pool of one can be ejected whole,
 * which sends its requests to the failure policy at once). */
static size_t max_ejectable(const cell_pool *p)
{
	size_t n = p->nworkers * p->conf->outlier.max_ejection_percent / 100;
	return n ? n : 1;
}

/* Under the pool's lock. */
static void uneject(cell_worker *w, uint64_t now_ms)
{
	atomic_store(&w->sh->ejected_until_ms, 0);
	w->sh->last_uneject_ms = now_ms;
	MC_INFO(COMP_POOL, "pool %s: worker %s back from ejection", w->pool->conf->name, w->addr);
	mc_cell_event(w->pool->c, "worker_returned", "s:pool", w->pool->conf->name, "s:worker",
		      w->addr, NULL);
}

static void on_eject_timer(uv_timer_t *t)
{
	cell_worker *w = t->data;
	if (w->closing)
		return;
	cell_pool_shared *ps = w->pool->sh;
	uint64_t now = mc_cell_now_ms();
	pthread_mutex_lock(&ps->lock);
	/* another thread may have ejected it again meanwhile (with its own timer) */
	uint64_t until = atomic_load(&w->sh->ejected_until_ms);
	if (until && now >= until)
		uneject(w, now);
	pthread_mutex_unlock(&ps->lock);
}

/* Under the pool's lock. */
static void eject(cell_worker *w, uint64_t now_ms, const char *why)
{
	const mc_outlier_conf *o = &w->pool->conf->outlier;
	cell_worker_shared *sh = w->sh;
	/* the multiplier decays: a worker that stayed in for the longest ejection
	 * time starts over at the base time */
	if (sh->times_ejected && now_ms - sh->last_uneject_ms > o->max_ejection_ms)
		sh->times_ejected = 0;
	sh->times_ejected++;
	uint64_t ms = (uint64_t)o->base_ejection_ms * sh->times_ejected;
	if (ms > o->max_ejection_ms)
		ms = o->max_ejection_ms;
	atomic_store(&sh->ejected_until_ms, now_ms + ms);
	sh->consecutive_failures = 0;
	memset(sh->win, 0, sizeof sh->win);
	if (w->m_ejected)
		w->m_ejected->value = 1;
	w->m_ejections->value += 1;
	if (w->pool->c && w->pool->c->loop)
		uv_timer_start(&w->eject_timer, on_eject_timer, ms, 0);
	MC_WARN(COMP_POOL, "pool %s: worker %s ejected for %llu ms (%s; ejection %u)",
		w->pool->conf->name, w->addr, (unsigned long long)ms, why, sh->times_ejected);
	mc_cell_event(w->pool->c, "worker_ejected", "s:pool", w->pool->conf->name, "s:worker",
		      w->addr, "u:ejection_ms", ms, "s:reason", why, "u:ejections",
		      (uint64_t)sh->times_ejected, NULL);
}

static int observe(cell_worker *w, int failed, uint64_t now_ms)
{
	cell_pool *p = w->pool;
	cell_worker_shared *sh = w->sh;
	const mc_outlier_conf *o = &p->conf->outlier;
	if (is_ejected(w, now_ms))
		return 0; /* answers of requests sent before the ejection */
	if (atomic_load(&sh->ejected_until_ms))
		uneject(w, now_ms); /* its timer has not run yet */
	uint64_t cur = now_ms / bucket_ms(p);
	size_t b = (size_t)(cur % WIN_BUCKETS);
	if (sh->win[b].epoch != cur) {
		sh->win[b].epoch = cur;
		sh->win[b].total = sh->win[b].failures = 0;
	}
	sh->win[b].total++;
	if (!failed) {
		sh->consecutive_failures = 0;
		return 0;
	}
	sh->win[b].failures++;
	sh->consecutive_failures++;
	char why[96];
	int should = 0;
	if (o->consecutive_failures && sh->consecutive_failures >= o->consecutive_failures) {
		snprintf(why, sizeof why, "%u consecutive failures", sh->consecutive_failures);
		should = 1;
	} else if (o->failure_percent) {
		uint32_t total, failures;
		window_sum(w, now_ms, &total, &failures);
		if (total >= o->min_requests &&
		    (uint64_t)failures * 100 >= (uint64_t)o->failure_percent * total) {
			snprintf(why, sizeof why, "%u of %u requests failed within %u ms", failures,
				 total, o->window_ms);
			should = 1;
		}
	}
	if (!should)
		return 0;
	if (mc_cell_pool_ejected(p, now_ms) >= max_ejectable(p)) {
		MC_DEBUG(COMP_POOL,
			 "pool %s: worker %s not ejected (%s): max_ejection_percent reached",
			 p->conf->name, w->addr, why);
		return 0;
	}
	eject(w, now_ms, why);
	return 1;
}

int mc_cell_worker_observe(cell_worker *w, int failed, uint64_t now_ms)
{
	/* the outcome of every thread's requests counts for the one verdict */
	cell_pool_shared *ps = w->pool->sh;
	pthread_mutex_lock(&ps->lock);
	int rc = observe(w, failed, now_ms);
	pthread_mutex_unlock(&ps->lock);
	return rc;
}

/* ---- choosing a worker -------------------------------------------------------------------- */

cell_worker *mc_cell_pool_pick(cell_pool *p, const cell_worker *avoid, uint64_t now_ms)
{
	cell_worker *cand[64];
	size_t m = 0;
	for (size_t i = 0; i < p->nworkers && m < MC_ARRAY_LEN(cand); i++) {
		cell_worker *w = p->workers[i];
		if (w != avoid && mc_cell_worker_eligible(w, now_ms))
			cand[m++] = w;
	}
	if (m == 0)
		return NULL;
	cell_worker *best = cand[0];
	if (m > 1) {
		size_t a = (size_t)(rng_next(p) % m);
		size_t b = (size_t)(rng_next(p) % (m - 1));
		if (b >= a)
			b++;
		cell_worker *x = cand[a], *y = cand[b];
		size_t xo = atomic_load_explicit(&x->sh->outstanding, memory_order_relaxed);
		size_t yo = atomic_load_explicit(&y->sh->outstanding, memory_order_relaxed);
		if (xo != yo)
			best = xo < yo ? x : y;
		else
			best = x->last_pick <= y->last_pick ? x : y;
	}
	best->last_pick = ++p->picks;
	return best;
}

void mc_cell_worker_begin(cell_worker *w)
{
	atomic_fetch_add_explicit(&w->sh->outstanding, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->pool->sh->outstanding, 1, memory_order_relaxed);
}

void mc_cell_worker_end(cell_worker *w)
{
	size_t was = atomic_fetch_sub_explicit(&w->sh->outstanding, 1, memory_order_relaxed);
	size_t pwas = atomic_fetch_sub_explicit(&w->pool->sh->outstanding, 1, memory_order_relaxed);
	MC_ASSERT(was > 0 && pwas > 0);
}

/* ---- health probes ------------------------------------------------------------------------ */

static void on_probe_answer(void *arg, int err, const mc_http_response *res)
{
	cell_worker *w = arg;
	w->probing = 0;
	if (w->closing)
		return;
	const mc_health_conf *h = &w->pool->conf->health;
	int ok = err == 0 && res->status >= 200 && res->status < 400;
	if (ok) {
		w->probe_fail = 0;
		w->probe_ok++;
		if (!atomic_load(&w->sh->healthy) && w->probe_ok >= h->rise) {
			atomic_store(&w->sh->healthy, 1);
			MC_INFO(COMP_POOL, "pool %s: worker %s healthy (%u probes passed)",
				w->pool->conf->name, w->addr, w->probe_ok);
			mc_cell_event(w->pool->c, "worker_healthy", "s:pool", w->pool->conf->name,
				      "s:worker", w->addr, NULL);
		}
	} else {
		w->probe_ok = 0;
		w->probe_fail++;
		if (atomic_load(&w->sh->healthy) && w->probe_fail >= h->fall) {
			atomic_store(&w->sh->healthy, 0);
			if (err)
				MC_WARN(COMP_POOL,
					"pool %s: worker %s unhealthy (%u probes failed: %s)",
					w->pool->conf->name, w->addr, w->probe_fail,
					mc_strerror(err));
			else
				MC_WARN(
				    COMP_POOL,
				    "pool %s: worker %s unhealthy (%u probes failed: status %d)",
				    w->pool->conf->name, w->addr, w->probe_fail, res->status);
			mc_cell_event(w->pool->c, "worker_unhealthy", "s:pool", w->pool->conf->name,
				      "s:worker", w->addr, "s:error", err ? mc_strerror(err) : NULL,
				      "i:status", (int64_t)(err ? 0 : res->status), NULL);
		}
	}
	if (w->m_healthy)
		w->m_healthy->value = atomic_load(&w->sh->healthy);
}

static void on_probe_timer(uv_timer_t *t)
{
	cell_worker *w = t->data;
	if (w->closing || w->probing)
		return; /* a probe slower than the interval counts once */
	static const mc_http_header hdr[] = {{"User-Agent", 10, "metrocell-probe", 15}};
	int rc = mc_http_pool_request(w->probe, "GET", w->pool->conf->health.path, hdr,
				      MC_ARRAY_LEN(hdr), NULL, 0, on_probe_answer, w);
	if (rc == 0)
		w->probing = 1;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void on_cold_start(void *ctx)
{
	cell *c = ctx;
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, c->conf->cell);
	mc_buf_append_str(&l, "\",kind=\"upstream_connect\"");
	mc_metrics_series(c->metrics, "metrocell_cold_starts_total", "Cold starts by kind",
			  MC_METRIC_COUNTER, l.data)
	    ->value += 1;
	mc_buf_fini(&l);
}

static void on_worker_timer_close(uv_handle_t *h)
{
	cell_worker *w = h->data;
	if (--w->open_handles == 0)
		free(w);
}

int mc_cell_pool_init(cell *c, cell_pool *p, const mc_pool_conf *conf)
{
	p->conf = conf;
	p->c = c;
	p->nworkers = conf->nworkers;
	p->workers = mc_calloc(p->nworkers ? p->nworkers : 1, sizeof *p->workers);
	p->rng = (mc_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)p) | 1;
	p->sh = (cell_pool_shared *)(void *)mc_cell_shared_get(registry(p), conf, shared_same,
							       shared_new);
	/* the main thread probes for every thread */
	int probes = conf->health.enabled && is_main(p);
	mc_http_pool_opts o;
	mc_http_pool_opts_default(&o);
	o.connect_timeout_ms = conf->connect_timeout_ms;
	o.request_timeout_ms = conf->timeout_ms;
	o.max_conns = conf->max_conns;
	o.max_idle = conf->max_conns;
	o.max_queue = conf->max_queue;
	o.on_connect = on_cold_start;
	o.on_connect_ctx = c;
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_conns = 1;
	po.max_idle = 0; /* every probe opens a connection: it tests accepting too */
	po.max_queue = 1;
	po.connect_timeout_ms = conf->health.timeout_ms;
	po.request_timeout_ms = conf->health.timeout_ms;
	po.max_response_bytes = PROBE_MAX_RESPONSE;
	for (size_t i = 0; i < p->nworkers; i++) {
		cell_worker *w = mc_calloc(1, sizeof *w);
		p->workers[i] = w;
		w->pool = p;
		w->idx = i;
		w->addr = conf->workers[i];
		w->sh = &p->sh->w[i];
		uv_timer_init(c->loop, &w->probe_timer);
		uv_timer_init(c->loop, &w->eject_timer);
		w->probe_timer.data = w;
		w->eject_timer.data = w;
		w->open_handles = 2;
		worker_metrics(w);
		int rc = mc_http_pool_new(&w->http, c->loop, w->addr, &o);
		if (rc == 0 && probes)
			rc = mc_http_pool_new(&w->probe, c->loop, w->addr, &po);
		if (rc < 0) {
			fprintf(stderr, "metrocell cell: pool %s: worker %s: %s\n", conf->name,
				w->addr, mc_strerror(rc));
			return rc;
		}
		if (probes) {
			/* spread the first probes over one interval */
			uint64_t first = rng_next(p) % conf->health.interval_ms;
			uv_timer_start(&w->probe_timer, on_probe_timer, first,
				       conf->health.interval_ms);
		}
	}
	return 0;
}

void mc_cell_pool_fini(cell_pool *p)
{
	for (size_t i = 0; i < p->nworkers; i++) {
		cell_worker *w = p->workers[i];
		if (!w)
			continue;
		w->closing = 1;
		mc_http_pool_free(w->http);
		mc_http_pool_free(w->probe);
		w->http = w->probe = NULL;
		uv_close((uv_handle_t *)&w->probe_timer, on_worker_timer_close);
		uv_close((uv_handle_t *)&w->eject_timer, on_worker_timer_close);
	}
	free(p->workers);
	p->workers = NULL;
	p->nworkers = 0;
	if (p->sh && mc_cell_shared_put(registry(p), &p->sh->link))
		shared_free(p->sh);
	p->sh = NULL;
}
