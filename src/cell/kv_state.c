/* The cell's hot-state machinery around the KV handler: the class rules handed to
 * the store, writes waiting for the region's acknowledgement (ack: region), the
 * backlog bounds, INVALIDATE from the region, the background sweeper and the KV
 * metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/kv_int.h"

#define COMP "cell"
#define ACK_TICK_MS 10
#define AGE_RECHECK_NS (50u * 1000000u)

_Static_assert((int)MC_SCLASS_REPLICATED == (int)MC_CLASS_REPLICATED &&
		   (int)MC_SCLASS_LOCAL == (int)MC_CLASS_LOCAL &&
		   (int)MC_SCLASS_REGIONAL == (int)MC_CLASS_REGIONAL,
	       "config and state name the classes alike");

void kv_count(mc_series *s)
{
	if (s)
		s->value += 1;
}

mc_state_class kv_class_of(cell_kv *kv, const char *key, size_t klen,
			   const mc_class_rule_conf **rule)
{
	const mc_class_rules_conf *rc = &kv->c->conf->classes;
	int i = mc_state_prefix_match(kv->prefixes, kv->nprefixes, key, klen);
	MC_ASSERT(i >= 0); /* the config always has a rule with prefix "" */
	*rule = &rc->rules[i];
	return kv->prefixes[i].cls;
}

uint64_t kv_link_up_since(cell_kv *kv)
{
	uint64_t up = 0;
	if (kv->c->shipper)
		mc_repl_shipper_progress(kv->c->shipper, NULL, NULL, &up);
	return up;
}

/* ---- series -------------------------------------------------------------------------- */

static mc_series *cell_series(cell *c, const char *name, const char *help, mc_metric_type t,
			      const char *extra)
{
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, c->conf->cell);
	mc_buf_append_str(&l, "\"");
	if (extra)
		mc_buf_append_str(&l, extra);
	mc_series *s = mc_metrics_series(c->metrics, name, help, t, l.data);
	mc_buf_fini(&l);
	return s;
}

static mc_series *regional_series(cell *c, const char *cause)
{
	char l[64];
	snprintf(l, sizeof l, "cause=\"%s\"", cause);
	return mc_metrics_series(c->metrics, "metrocell_regional_requests_total",
				 "Requests whose critical path crossed to the region, by cause",
				 MC_METRIC_COUNTER, l);
}

/* ---- backlog ---------------------------------------------------------------------------- */

int kv_backlog_full(cell_kv *kv, char *why, size_t cap)
{
	cell *c = kv->c;
	const mc_repl_conf *rc = &c->conf->repl;
	mc_log_stats ls;
	uint64_t acked = 0;
	if (!c->shipper)
		return 0;
	mc_store_log_stats(c->store, &ls);
	mc_repl_shipper_progress(c->shipper, &acked, NULL, NULL);
	if (ls.last_seq <= acked)
		return 0;
	/* Acknowledged entries are trimmed by the next commit after the ACK, so the
	 * bytes held are the unacknowledged ones. */
	if (ls.bytes >= rc->backlog_max_bytes) {
		snprintf(why, cap,
			 "%llu bytes of writes wait for the region's acknowledgement "
			 "(replication.backlog_max_bytes %llu)",
			 (unsigned long long)ls.bytes, (unsigned long long)rc->backlog_max_bytes);
		return 1;
	}
	uint64_t now = mc_now_ns();
	if (now - kv->age_checked_ns >= AGE_RECHECK_NS || kv->age_ms >= rc->backlog_max_age_ms) {
		mc_repl_shipper_progress(c->shipper, NULL, &kv->age_ms, NULL);
		kv->age_checked_ns = now;
	}
	if (kv->age_ms >= rc->backlog_max_age_ms) {
		snprintf(why, cap,
			 "the oldest write the region has not acknowledged is %llu ms old "
			 "(replication.backlog_max_age_ms %u)",
			 (unsigned long long)kv->age_ms, (unsigned)rc->backlog_max_age_ms);
		return 1;
	}
	return 0;
}

/* ---- ack: region ------------------------------------------------------------------------ */

static void ack_unlink(cell_kv *kv, kv_req *prev, kv_req *w)
{
	if (prev)
		prev->wnext = w->wnext;
	else
		kv->wait_head = w->wnext;
	if (kv->wait_tail == w)
		kv->wait_tail = prev;
	w->wnext = NULL;
	kv->nwait--;
	if (!kv->wait_head && kv->ack_timer_on) {
		uv_timer_stop(&kv->ack_timer);
		kv->ack_timer_on = 0;
	}
}

static void ack_timeout(kv_req *w, const char *why)
{
	char vbuf[24];
	snprintf(vbuf, sizeof vbuf, "%llu", (unsigned long long)w->wres.version);
	mc_http_header h[1] = {{"X-Metrocell-Version", 19, vbuf, strlen(vbuf)}};
	kv_fail_h(
	    w, 504, OUTCOME_REFUSED, h, 1, "region_ack_timeout",
	    "%s: the write (version %llu, seq %llu) is committed in cell %s and will still be "
	    "shipped to the region, but its acknowledgement (ack: region) did not arrive",
	    why, (unsigned long long)w->wres.version, (unsigned long long)w->wres.seq,
	    w->kv->c->conf->cell);
}

static void on_ack_tick(uv_timer_t *t)
{
	cell_kv *kv = t->data;
	uint64_t now = mc_now_ns();
	kv_req *prev = NULL, *w = kv->wait_head;
	while (w) {
		kv_req *next = w->wnext;
		if (now >= w->deadline_ns) {
			ack_unlink(kv, prev, w);
			kv_count(kv->ack_timeouts);
			char why[64];
			snprintf(why, sizeof why, "no acknowledgement from the region within %u ms",
				 (unsigned)w->rule->ack_timeout_ms);
			ack_timeout(w, why);
		} else {
			prev = w;
		}
		w = next;
	}
}

/* The shipper's callbacks get the cell (its cb_arg is shared with the cache's
 * on_purge). */
static void on_acked(void *arg, uint64_t seq)
{
	cell_kv *kv = ((cell *)arg)->kv;
	kv->acked_seq = MC_MAX(kv->acked_seq, seq);
	while (kv->wait_head && kv->wait_head->wres.seq <= kv->acked_seq) {
		kv_req *w = kv->wait_head;
		ack_unlink(kv, NULL, w);
		kv_answer_written(w, &w->wres, 1);
	}
}

void kv_ack_wait(kv_req *kr, const mc_write_result *res)
{
	cell_kv *kv = kr->kv;
	kr->wres = *res;
	if (res->seq == 0 || res->seq <= kv->acked_seq) {
		kv_answer_written(kr, res, res->seq != 0);
		return;
	}
	if (kv->closing || kv->nwait >= KV_MAX_WAITERS) {
		ack_timeout(kr, kv->closing ? "the cell is stopping"
					    : "too many writes are waiting for the region");
		return;
	}
	kr->deadline_ns = mc_now_ns() + (uint64_t)kr->rule->ack_timeout_ms * 1000000u;
	kr->wnext = NULL;
	if (kv->wait_tail)
		kv->wait_tail->wnext = kr;
	else
		kv->wait_head = kr;
	kv->wait_tail = kr;
	kv->nwait++;
	if (!kv->ack_timer_on) {
		uv_timer_start(&kv->ack_timer, on_ack_tick, ACK_TICK_MS, ACK_TICK_MS);
		kv->ack_timer_on = 1;
	}
}

/* ---- invalidations and the sweeper ---------------------------------------------------------- */

/* Counted once committed: a reader that sees the count sees the marker. */
static void on_invalidated(void *arg, const mc_write_result *res)
{
	cell_kv *kv = arg;
	if (res->err == 0)
		kv_count(kv->invalidations);
	else if (res->err != MC_ECLOSED)
		MC_WARN(COMP, "recording an invalidation from the region: %s",
			mc_strerror(res->err));
}

static void on_invalidate(void *arg, const char *key, size_t klen, uint64_t version)
{
	cell_kv *kv = ((cell *)arg)->kv;
	mc_write w = {.kind = MC_W_INVALIDATE, .key = key, .klen = klen, .version = version};
	int rc = mc_store_submit(kv->c->store, &w, on_invalidated, kv);
	if (rc < 0)
		MC_WARN(COMP, "dropping an invalidation from the region: %s", mc_strerror(rc));
}

static void on_swept(void *arg, const mc_sweep_result *res)
{
	cell_kv *kv = arg;
	kv->sweeping = 0;
	if (res->err < 0)
		MC_WARN(COMP, "TTL sweep: %s", mc_strerror(res->err));
	/* One step per tick, as in the region: the next tick resumes where this one
	 * stopped. Finishing the pass at once scanned the whole store every interval,
	 * in the writer thread (about 50 ms of CPU per million records here). */
}

static void sweep_next(cell_kv *kv)
{
	const mc_state_conf *sc = &kv->c->conf->state;
	mc_sweep_opts o = {.tombstone_retention_ms = sc->tombstone_retention_ms,
			   .copy_max_age_ms = kv->copy_max_age_ms,
			   .max_examine = KV_SWEEP_STEP};
	if (kv->sweeping || kv->closing || !kv->c->store)
		return;
	if (mc_store_sweep(kv->c->store, &o, on_swept, kv) == 0)
		kv->sweeping = 1;
}

static void on_sweep_tick(uv_timer_t *t)
{
	sweep_next(t->data);
}

/* ---- life cycle -------------------------------------------------------------------------------
 */

void mc_cell_kv_new(cell *c)
{
	cell_kv *kv = mc_calloc(1, sizeof *kv);
	const mc_class_rules_conf *rules = &c->conf->classes;
	kv->c = c;
	c->kv = kv;
	kv->nprefixes = rules->n;
	kv->prefixes = mc_calloc(rules->n ? rules->n : 1, sizeof *kv->prefixes);
	for (size_t i = 0; i < rules->n; i++) {
		const mc_class_rule_conf *r = &rules->rules[i];
		kv->prefixes[i] =
		    (mc_state_prefix){r->prefix, strlen(r->prefix), (mc_state_class)r->cls};
		uint64_t bound = r->cls == MC_SCLASS_REPLICATED ? r->replica_max_staleness_ms
				 : r->cls == MC_SCLASS_REGIONAL ? r->cache_ttl_ms
								: 0;
		kv->copy_max_age_ms = MC_MAX(kv->copy_max_age_ms, bound);
	}
	uv_timer_init(c->loop, &kv->ack_timer);
	uv_timer_init(c->loop, &kv->sweep_timer);
	kv->ack_timer.data = kv;
	kv->sweep_timer.data = kv;
	kv->handles = 2;
	kv->rr_read_through = regional_series(c, "read_through");
	kv->rr_regional_key = regional_series(c, "regional_key");
	kv->invalidations = cell_series(c, "metrocell_state_invalidations_total",
					"INVALIDATE frames from the region applied (a key this "
					"cell holds was written elsewhere).",
					MC_METRIC_COUNTER, NULL);
	kv->backlog_refused = cell_series(c, "metrocell_replication_backlog_refused_total",
					  "Replicated writes refused with 503 backlog_full.",
					  MC_METRIC_COUNTER, NULL);
	kv->ack_timeouts = cell_series(c, "metrocell_ack_region_timeouts_total",
				       "ack:region writes answered 504 (committed locally, still "
				       "shipped).",
				       MC_METRIC_COUNTER, NULL);
	kv->stale_served = cell_series(c, "metrocell_state_stale_served_total",
				       "Reads answered from a replica copy within its staleness "
				       "bound while the region was unreachable.",
				       MC_METRIC_COUNTER, NULL);
	kv->unavailable = cell_series(c, "metrocell_state_unavailable_total",
				      "Reads answered 503 state_unavailable (never synced, or the "
				      "copy is past its bound, and the region is unreachable).",
				      MC_METRIC_COUNTER, NULL);
	kv->neg_copies = NULL;
	kv_region_init(kv);
}

void mc_cell_kv_store_opts(cell *c, mc_store_opts *so)
{
	so->classes = c->kv->prefixes;
	so->nclasses = c->kv->nprefixes;
	so->default_class = MC_CLASS_REPLICATED; /* unused: there is always a "" rule */
}

void mc_cell_kv_shipper_opts(cell *c, mc_repl_shipper_opts *ro)
{
	ro->on_invalidate = on_invalidate;
	ro->on_acked = on_acked;
	ro->cb_arg = c;
}

void mc_cell_kv_start(cell *c)
{
	cell_kv *kv = c->kv;
	uint32_t every = c->conf->state.sweep_interval_ms;
	uv_timer_start(&kv->sweep_timer, on_sweep_tick, every, every);
}

static void on_timer_closed(uv_handle_t *h)
{
	cell_kv *kv = h->data;
	kv->handles--;
}

void mc_cell_kv_fini(cell *c)
{
	cell_kv *kv = c->kv;
	if (!kv || kv->closing)
		return;
	kv->closing = 1;
	while (kv->wait_head) {
		kv_req *w = kv->wait_head;
		ack_unlink(kv, NULL, w);
		ack_timeout(w, "the cell is stopping");
	}
	kv_region_fini(kv);
	uv_timer_stop(&kv->ack_timer);
	uv_timer_stop(&kv->sweep_timer);
	uv_close((uv_handle_t *)&kv->ack_timer, on_timer_closed);
	uv_close((uv_handle_t *)&kv->sweep_timer, on_timer_closed);
}

void mc_cell_kv_free(cell *c)
{
	cell_kv *kv = c->kv;
	if (!kv)
		return;
	MC_ASSERT(kv->handles == 0);
	free(kv->prefixes);
	free(kv);
	c->kv = NULL;
}

void mc_cell_kv_metrics(cell *c)
{
	cell_kv *kv = c->kv;
	if (!kv || !c->store)
		return;
	mc_store_stats ss;
	mc_store_stats_get(c->store, &ss);
	mc_repl_shipper_stats *rs = NULL;
	uint64_t ship_violations = 0, age_ms = 0;
	if (c->shipper) {
		rs = mc_alloc(sizeof *rs);
		mc_repl_shipper_stats_get(c->shipper, rs);
		ship_violations = rs->residency_violations;
		age_ms = rs->oldest_unacked_ms;
		free(rs);
	}
	cell_series(c, "metrocell_residency_violations_total",
		    "Local- or regional-class records found on their way to the region (the store "
		    "or the shipper withheld them). Stays 0.",
		    MC_METRIC_COUNTER, NULL)
	    ->value = (double)(ss.residency_violations + ship_violations);
	static const char *const kinds[] = {"expired", "tombstone", "replica_copy", "marker"};
	uint64_t swept[] = {ss.swept_expired, ss.swept_tombstones, ss.swept_copies,
			    ss.swept_markers};
	for (size_t i = 0; i < MC_ARRAY_LEN(kinds); i++) {
		char l[48];
		snprintf(l, sizeof l, ",kind=\"%s\"", kinds[i]);
		cell_series(c, "metrocell_state_swept_total",
			    "Records deleted by the background sweeper, by kind.",
			    MC_METRIC_COUNTER, l)
		    ->value = (double)swept[i];
	}
	cell_series(c, "metrocell_state_records",
		    "Records in the hot-state store (tombstones and replica copies included).",
		    MC_METRIC_GAUGE, NULL)
	    ->value = (double)mc_store_record_count(c->store);
	cell_series(c, "metrocell_state_durable",
		    "1 when each group commit is fsynced (state.durability fsync).",
		    MC_METRIC_GAUGE, NULL)
	    ->value = mc_store_is_durable(c->store);
	char why[200];
	cell_series(c, "metrocell_replication_backlog_full",
		    "1 while replicated writes are refused (a backlog bound is reached).",
		    MC_METRIC_GAUGE, NULL)
	    ->value = kv_backlog_full(kv, why, sizeof why);
	cell_series(c, "metrocell_replication_backlog_age_seconds",
		    "Age of the oldest write the region has not acknowledged.", MC_METRIC_GAUGE,
		    NULL)
	    ->value = (double)age_ms / 1000.0;
	cell_series(c, "metrocell_replication_backlog_max_bytes",
		    "replication.backlog_max_bytes: backlog bytes at which replicated writes are "
		    "refused.",
		    MC_METRIC_GAUGE, NULL)
	    ->value = (double)c->conf->repl.backlog_max_bytes;
	cell_series(c, "metrocell_replication_backlog_max_age_seconds",
		    "replication.backlog_max_age_ms in seconds.", MC_METRIC_GAUGE, NULL)
	    ->value = (double)c->conf->repl.backlog_max_age_ms / 1000.0;
	cell_series(c, "metrocell_ack_region_waiting",
		    "ack:region writes committed locally and waiting for the region.",
		    MC_METRIC_GAUGE, NULL)
	    ->value = (double)kv->nwait;
}
