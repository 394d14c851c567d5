/* Config snapshots of the cell: the routes, pools, quotas and flags built from
 * one config version (the bootstrap file or a fleet version), immutable and
 * reference counted. A new version builds a new snapshot next to the current
 * one, sharing the pools and quotas whose definition did not change (their
 * connections, health verdicts and buckets carry over), then swaps it in; the
 * old one lives until its last request ends. docs/operations.md "Fleet config". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/cell_int.h"
#include "cell/edge.h"

#define COMP "config"

/* ---- pools ------------------------------------------------------------------------------ */

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void pool_conf_copy(mc_pool_conf *dst, const mc_pool_conf *src)
{
	*dst = *src;
	dst->name = mc_strdup(src->name);
	dst->workers = mc_calloc(src->nworkers ? src->nworkers : 1, sizeof *dst->workers);
	for (size_t i = 0; i < src->nworkers; i++)
		dst->workers[i] = mc_strdup(src->workers[i]);
	dst->health.path = src->health.path ? mc_strdup(src->health.path) : NULL;
}

static void pool_conf_clear(mc_pool_conf *p)
{
	free(p->name);
	for (size_t i = 0; i < p->nworkers; i++)
		free(p->workers[i]);
	free(p->workers);
	free(p->health.path);
	memset(p, 0, sizeof *p);
}

static void pool_close(cell_pool *p)
{
	if (p->closed)
		return;
	p->closed = 1;
	mc_cell_pool_fini(p);
}

static void pool_unref(cell_pool *p)
{
	if (!p || --p->refs > 0)
		return;
	pool_close(p);
	pool_conf_clear(&p->own);
	free(p);
}

/* The current snapshot's pool with the same definition, or NULL. */
static cell_pool *pool_reusable(cell *c, const mc_pool_conf *pc)
{
	cell_snapshot *cur = c->snap;
	for (size_t i = 0; cur && i < cur->npools; i++)
		if (!cur->pools[i]->closed && mc_cell_pool_conf_same(&cur->pools[i]->own, pc))
			return cur->pools[i];
	return NULL;
}

/* ---- quotas ------------------------------------------------------------------------------- */

static bool quota_same(const mc_quota_conf *a, const mc_quota_conf *b)
{
	return strcmp(a->name, b->name) == 0 && a->rate == b->rate && a->burst == b->burst &&
	       a->key == b->key && a->max_keys == b->max_keys && str_eq(a->header, b->header);
}

/* The quota of route rt: shared with earlier routes of s of the same name,
 * else the current snapshot's identical one, else new. */
static cell_quota *quota_for(cell *c, cell_snapshot *s, const mc_quota_conf *qc)
{
	for (size_t k = 0; k < s->nquotas; k++)
		if (strcmp(mc_cell_quota_conf(s->quotas[k])->name, qc->name) == 0)
			return s->quotas[k];
	cell_quota *q = NULL;
	cell_snapshot *cur = c->snap;
	for (size_t k = 0; cur && !q && k < cur->nquotas; k++)
		if (quota_same(mc_cell_quota_conf(cur->quotas[k]), qc))
			q = mc_cell_quota_ref(cur->quotas[k]);
	if (!q)
		q = mc_cell_quota_new(c, qc);
	s->quotas[s->nquotas++] = q;
	return q;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

/* On the main thread: another thread's snapshot built from this one is gone. */
static void origin_unref(void *arg)
{
	mc_cell_snapshot_unref(arg);
}

void mc_cell_snapshot_release_origin(cell *c, cell_snapshot *origin)
{
	if (mc_mailbox_post(c->main->mbox, origin_unref, origin) < 0)
		MC_WARN(COMP, "cell %s: thread %u could not release a snapshot (main thread gone)",
			c->conf->cell, c->idx);
}

static void snapshot_free(cell_snapshot *s)
{
	cell *c = s->c;
	for (cell_snapshot **pp = &c->snaps; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	for (size_t i = 0; i < s->npools; i++)
		pool_unref(s->pools[i]);
	free(s->pools);
	for (size_t i = 0; i < s->nquotas; i++)
		mc_cell_quota_free(s->quotas[i]);
	free(s->quotas);
	free(s->routes);
	mc_buf_fini(&s->flags_all);
	mc_fleet_conf_free(s->fleet);
	if (s->origin)
		mc_cell_snapshot_release_origin(c, s->origin);
	free(s);
}

static void on_reap_closed(uv_handle_t *h)
{
	snapshot_free(h->data);
}

static void on_reap(uv_timer_t *t)
{
	uv_close((uv_handle_t *)t, on_reap_closed);
}

cell_snapshot *mc_cell_snapshot_ref(cell_snapshot *s)
{
	MC_ASSERT(s && s->refs > 0);
	s->refs++;
	return s;
}

void mc_cell_snapshot_unref(cell_snapshot *s)
{
	if (!s)
		return;
	MC_ASSERT(s->refs > 0);
	if (--s->refs > 0)
		return;
	/* The last request may end inside a callback of one of the snapshot's
	 * pools: the pools are closed from the loop instead. */
	s->reaping = 1;
	uv_timer_init(s->c->loop, &s->reap);
	s->reap.data = s;
	uv_timer_start(&s->reap, on_reap, 0, 0);
}

/* Builds a snapshot of c from fleet (main thread) or from origin (another
 * thread: a copy of the main thread's snapshot with this thread's pools). */
static int build(cell *c, mc_fleet_conf *fleet, cell_snapshot *origin, cell_snapshot **out,
		 char *err, size_t errcap)
{
	cell_snapshot *s = mc_calloc(1, sizeof *s);
	int rc = 0;
	s->c = c;
	s->refs = 1;
	s->fleet = fleet;
	s->origin = origin;
	if (origin) {
		s->conf = origin->conf;
		s->source = origin->source;
		s->version = origin->version;
		memcpy(s->sha256, origin->sha256, sizeof s->sha256);
		s->accepted_ms = origin->accepted_ms;
	} else {
		s->conf = fleet ? fleet->dyn : c->conf;
		s->source = fleet ? "region" : "bootstrap";
	}
	mc_buf_init(&s->flags_all);
	s->next = c->snaps;
	c->snaps = s;
	const mc_cell_conf *cf = s->conf;
	s->pools = mc_calloc(cf->npools ? cf->npools : 1, sizeof *s->pools);
	for (size_t i = 0; i < cf->npools; i++) {
		cell_pool *p = pool_reusable(c, &cf->pools[i]);
		if (p) {
			p->refs++;
		} else {
			p = mc_calloc(1, sizeof *p);
			p->refs = 1;
			pool_conf_copy(&p->own, &cf->pools[i]);
			if ((rc = mc_cell_pool_init(c, p, &p->own)) < 0) {
				snprintf(err, errcap, "pool %s: %s", cf->pools[i].name,
					 mc_strerror(rc));
				s->pools[s->npools++] = p;
				goto out;
			}
		}
		s->pools[s->npools++] = p;
	}
	s->quotas = mc_calloc(cf->nroutes ? cf->nroutes : 1, sizeof *s->quotas);
	s->routes = mc_calloc(cf->nroutes ? cf->nroutes : 1, sizeof *s->routes);
	s->nroutes = cf->nroutes;
	for (size_t i = 0; i < cf->nroutes; i++) {
		cell_route *rt = &s->routes[i];
		rt->conf = &cf->routes[i];
		rt->prefix_len = strlen(rt->conf->prefix);
		if (rt->conf->kind == MC_ROUTE_PROXY) {
			rt->pool = s->pools[rt->conf->pool];
			mc_cell_proxy_route_init(c, rt);
		}
		if (rt->conf->quota)
			rt->quota = quota_for(c, s, rt->conf->quota);
		/* cache requests of other threads are served by the main thread's
		 * engines (mc_cell_hop) */
		if (rt->conf->kind == MC_ROUTE_CACHE && !origin &&
		    (rc = mc_cell_cache_route_init(c, rt, err, errcap)) < 0)
			goto out;
		if (origin) {
			rt->served = origin->routes[i].served;
			continue;
		}
		rt->served = &rt->served_own;
		/* a route served under the previous version is no cold start now */
		for (size_t k = 0; c->snap && k < c->snap->nroutes; k++)
			if (strcmp(c->snap->routes[k].conf->name, rt->conf->name) == 0)
				atomic_store(&rt->served_own, atomic_load(c->snap->routes[k].served));
	}
	mc_cell_flags_render(cf, &s->flags_all);
out:
	if (rc < 0) {
		s->fleet = NULL; /* the caller's on failure: freed below with the rest */
		snapshot_free(s);
		mc_fleet_conf_free(fleet);
		return rc;
	}
	*out = s;
	return 0;
}

int mc_cell_snapshot_new(cell *c, mc_fleet_conf *fleet, cell_snapshot **out, char *err,
			 size_t errcap)
{
	return build(c, fleet, NULL, out, err, errcap);
}

int mc_cell_snapshot_new_from(cell *c, cell_snapshot *origin, cell_snapshot **out, char *err,
			      size_t errcap)
{
	return build(c, NULL, origin, out, err, errcap);
}

void mc_cell_snapshot_install(cell *c, cell_snapshot *s)
{
	cell_snapshot *old = c->snap;
	s->applied_ms = mc_wall_ms();
	c->snap = s;
	mc_cell_config_applied(c, s->version, s->sha256[0] ? s->sha256 : NULL);
	if (old)
		MC_INFO(COMP,
			"cell %s: config version %llu (%s) replaces version %llu; %d request(s) "
			"finish on the previous one",
			c->conf->cell, (unsigned long long)s->version, s->source,
			(unsigned long long)old->version, old->refs - 1);
	mc_cell_snapshot_unref(old);
	mc_cell_threads_install(c, s);
}

void mc_cell_snapshots_close(cell *c)
{
	cell_snapshot *cur = c->snap;
	c->snap = NULL;
	for (cell_snapshot *s = c->snaps; s; s = s->next)
		for (size_t i = 0; i < s->npools; i++)
			pool_close(s->pools[i]);
	mc_cell_snapshot_unref(cur);
}

cell_route *mc_cell_route_match(cell_snapshot *s, const char *path, size_t len)
{
	cell_route *best = NULL;
	for (size_t i = 0; s && i < s->nroutes; i++) {
		cell_route *rt = &s->routes[i];
		if (rt->prefix_len <= len && memcmp(path, rt->conf->prefix, rt->prefix_len) == 0 &&
		    (!best || rt->prefix_len > best->prefix_len))
			best = rt;
	}
	return best;
}
