/* The cell's side of fleet telemetry and its observability buffer: a summary of
 * each interval sent to the region in a TELEMETRY frame, structured events kept
 * in the size-capped buffer under data_dir/events and drained to the region in
 * EVENTS frames (acknowledged, resent after a reconnect), and the blind time: how
 * long the region has had no view of this cell. docs/operations.md "Fleet
 * telemetry" and "Event buffer"; the frames are in docs/protocol.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cell/cell_int.h"
#include "cell/edge.h"
#include "obs/evbuf.h"

#define COMP "telemetry"
/* One EVENTS frame: at most this many events and bytes of lines. */
#define BATCH_EVENTS 256
#define BATCH_BYTES (64u << 10)
/* An EVENTS frame without an answer for this long is sent again. */
#define RESEND_MS 5000
#define ANNOTATION_MAX 1000

struct cell_telemetry {
	cell *c;
	mc_evbuf *events;
	uv_timer_t tick;  /* one summary per interval */
	uv_timer_t drain; /* sends the next EVENTS batch soon after a change */
	int handles;	  /* timers initialised and not closed yet */
	int stopped;
	mc_hist lat[OUTCOME_COUNT]; /* this interval */
	uint64_t total[OUTCOME_COUNT];
	uint64_t interval_start_ns;
	uint64_t seq; /* last summary's seq */
	double prev_regional, prev_hit, prev_stale, prev_miss;
	mc_hist *prev_ack; /* the shipper's lag histogram at the previous summary */
	mc_repl_shipper_stats *rs;
	/* the region's view */
	int link_up;
	uint64_t link_down_wall_ms; /* when the link was lost (0: up, or never up) */
	uint64_t last_view_ns;	    /* last acknowledged summary (or the start) */
	uint64_t last_view_wall_ms;
	int blind; /* the current view is older than stale_after_ms */
	uint64_t blind_windows, blind_total_ms, blind_last_ms;
	/* the batch of events in flight */
	uint64_t inflight_last; /* its last seq, 0 when none */
	uint64_t inflight_ns;
	uint64_t sent_summaries, acked_summaries, unsent_summaries, sent_batches;
	double prev_backlog_refused; /* metrocell_replication_backlog_refused_total */
	int backlog_full;	     /* writes were refused in the last interval */
};

/* ---- events ------------------------------------------------------------------------------ */

static void drain_soon(cell_telemetry *t);

static void drain_task(void *arg)
{
	cell *c = arg;
	if (c->telem)
		drain_soon(c->telem);
}

void mc_cell_event(cell *c, const char *type, ...)
{
	/* other threads write into the main thread's buffer (it locks) and ask
	 * the main thread to ship it */
	cell *m = c && c->main ? c->main : c;
	if (!m || !m->telem || !m->telem->events)
		return;
	va_list ap;
	va_start(ap, type);
	mc_evbuf_emitv(m->telem->events, type, ap);
	va_end(ap);
	if (m == c)
		drain_soon(m->telem);
	else
		(void)mc_mailbox_post(m->mbox, drain_task, m);
}

void mc_cell_config_applied(cell *c, uint64_t version, const char *sha256)
{
	c->config_version = version;
	mc_cell_event(c, "config_applied", "u:version", version, "s:sha256", sha256, NULL);
}

uint64_t mc_cell_config_version(const cell *c)
{
	return c->config_version;
}

struct batch {
	mc_buf *frame;
	mc_repl_events_writer w;
	uint64_t stream, first, next; /* next: the seq the next event must have */
};

/* Adds one event to the batch; the frame starts at the first event read. A line
 * the wire would refuse (edited or damaged on disk) travels as a corrupt_event
 * placeholder, so the sequence stays whole; a gap in the sequence ends the batch
 * (the next one starts after it). */
static int add_event(void *arg, uint64_t seq, const char *line, size_t len)
{
	struct batch *b = arg;
	if (b->next && seq != b->next)
		return 1;
	if (!b->next) {
		b->first = seq;
		mc_repl_events_begin(&b->w, b->frame, b->stream, seq);
	}
	int ok = len >= 2 && len <= MC_REPL_EVENT_MAX && line[0] == '{' && line[len - 1] == '}';
	for (size_t i = 0; ok && i < len; i++)
		ok = (unsigned char)line[i] >= 0x20 && line[i] != 0x7f;
	if (ok) {
		mc_repl_events_add(&b->w, line, len);
	} else {
		char ph[128];
		int n =
		    snprintf(ph, sizeof ph, "{\"seq\":%llu,\"ts_ms\":0,\"type\":\"corrupt_event\"}",
			     (unsigned long long)seq);
		mc_repl_events_add(&b->w, ph, (size_t)n);
	}
	b->next = seq + 1;
	return 0;
}

/* Sends the next batch after the acknowledged seq when the link is up and no
 * batch is in flight (or the one in flight has waited RESEND_MS). */
static void drain(cell_telemetry *t)
{
	cell *c = t->c;
	if (!t->events || !t->link_up || !c->shipper || t->stopped)
		return;
	uint64_t now = mc_now_ns();
	if (t->inflight_last && (now - t->inflight_ns) / 1000000 < RESEND_MS)
		return;
	mc_evbuf_stats st;
	mc_evbuf_stats_get(t->events, &st);
	if (st.pending == 0) {
		t->inflight_last = 0;
		return;
	}
	mc_buf frame;
	mc_buf_init(&frame);
	struct batch b = {.frame = &frame, .stream = st.stream};
	int n = mc_evbuf_read(t->events, st.acked_seq, BATCH_EVENTS, BATCH_BYTES, add_event, &b);
	if (n < 0)
		MC_WARN(COMP, "reading the event buffer: %s", mc_strerror(n));
	if (n <= 0 || !b.next) {
		mc_buf_fini(&frame);
		return;
	}
	mc_repl_events_end(&b.w);
	int rc = mc_repl_shipper_send(c->shipper, &frame);
	mc_buf_fini(&frame);
	if (rc == 0) {
		t->inflight_last = b.next - 1;
		t->inflight_ns = now;
		t->sent_batches++;
	}
}

static void on_drain_timer(uv_timer_t *h)
{
	drain(h->data);
}

static void drain_soon(cell_telemetry *t)
{
	if (t->link_up && !t->inflight_last && !t->stopped &&
	    !uv_is_active((uv_handle_t *)&t->drain))
		uv_timer_start(&t->drain, on_drain_timer, 10, 0);
}

/* ---- the region's view (blind time) -------------------------------------------------------- */

static uint64_t stale_ms(const cell_telemetry *t)
{
	return t->c->conf->telemetry.stale_after_ms;
}

/* A view came back: closes a blind window when there was one. */
static void view_restored(cell_telemetry *t)
{
	uint64_t now = mc_now_ns(), wall = mc_wall_ms();
	uint64_t gap_ms = (now - t->last_view_ns) / 1000000;
	if (gap_ms > stale_ms(t)) {
		t->blind_windows++;
		t->blind_total_ms += gap_ms;
		t->blind_last_ms = gap_ms;
		MC_INFO(COMP, "cell %s: the region has a view again after %.3f s", t->c->conf->cell,
			(double)gap_ms / 1000.0);
		mc_cell_event(t->c, "region_unreachable", "u:start_ms", t->last_view_wall_ms,
			      "u:end_ms", wall, "f:blind_s", (double)gap_ms / 1000.0, NULL);
	}
	t->blind = 0;
	t->last_view_ns = now;
	t->last_view_wall_ms = wall;
}

void mc_cell_telemetry_on_link(void *arg, int up)
{
	cell *c = arg;
	cell_telemetry *t = c->telem;
	if (!t || t->stopped)
		return;
	t->link_up = up;
	t->inflight_last = 0; /* after a reconnect, resend from the acknowledged seq */
	if (up) {
		uint64_t wall = mc_wall_ms();
		if (t->link_down_wall_ms)
			mc_cell_event(c, "replication_connected", "u:down_since_ms",
				      t->link_down_wall_ms, "f:down_s",
				      (double)(wall - t->link_down_wall_ms) / 1000.0, NULL);
		else
			mc_cell_event(c, "replication_connected", NULL);
		t->link_down_wall_ms = 0;
		drain_soon(t);
	} else {
		t->link_down_wall_ms = mc_wall_ms();
		mc_cell_event(c, "replication_disconnected", NULL);
	}
}

void mc_cell_telemetry_on_obs_ack(void *arg, uint8_t kind, uint64_t stream, uint64_t seq)
{
	cell *c = arg;
	cell_telemetry *t = c->telem;
	if (!t || t->stopped)
		return;
	if (kind == MC_REPL_OBS_ACK_TELEMETRY) {
		if (seq == 0 || seq > t->seq)
			return; /* not one of ours */
		t->acked_summaries++;
		view_restored(t);
		return;
	}
	if (!t->events)
		return;
	mc_evbuf_stats st;
	mc_evbuf_stats_get(t->events, &st);
	if (stream != st.stream)
		return;
	int rc = mc_evbuf_ack(t->events, seq);
	if (rc < 0)
		MC_WARN(COMP, "recording acknowledged events: %s", mc_strerror(rc));
	if (t->inflight_last && seq >= t->inflight_last) {
		t->inflight_last = 0;
		drain(t);
	}
}

/* ---- summaries ---------------------------------------------------------------------------- */

void mc_cell_telemetry_record(cell *c, int outcome, uint64_t us)
{
	cell_telemetry *t = c->telem;
	if (!t || outcome < 0 || outcome >= OUTCOME_COUNT)
		return;
	/* the caller holds mc_cell_obs_lock() */
	mc_hist_record(&t->lat[outcome], us);
	t->total[outcome]++;
}

static uint32_t u32(uint64_t v)
{
	return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static uint64_t delta(double cur, double *prev)
{
	double d = cur - *prev;
	*prev = cur;
	return d > 0 ? (uint64_t)d : 0;
}

/* Quantiles of the samples in cur that were not in prev. */
static void hist_delta_quantiles(const mc_hist *cur, const mc_hist *prev, uint32_t *p50,
				 uint32_t *p99)
{
	mc_hist *d = mc_alloc(sizeof *d);
	mc_hist_init(d);
	for (size_t i = 0; i < MC_HIST_BUCKETS; i++) {
		uint64_t n =
		    cur->buckets[i] >= prev->buckets[i] ? cur->buckets[i] - prev->buckets[i] : 0;
		d->buckets[i] = n;
		d->count += n;
	}
	d->min = 0;
	d->max = cur->max;
	*p50 = u32(mc_hist_quantile(d, 0.5));
	*p99 = u32(mc_hist_quantile(d, 0.99));
	free(d);
}

static void health(cell *c, mc_repl_telemetry *s)
{
	s->health = MC_REPL_HEALTH_OK;
	if (c->stopping) {
		s->health = MC_REPL_HEALTH_DRAINING;
		return;
	}
	uint64_t now = mc_cell_now_ms();
	const cell_snapshot *snap = c->snap; /* the pools new requests get */
	for (size_t i = 0; snap && i < snap->npools; i++) {
		const cell_pool *p = snap->pools[i];
		size_t ok = 0;
		for (size_t k = 0; k < p->nworkers; k++)
			ok += mc_cell_worker_eligible(p->workers[k], now);
		if (p->nworkers && !ok)
			s->health_flags |= MC_REPL_HEALTH_POOL_DOWN;
	}
	if (s->health_flags)
		s->health = MC_REPL_HEALTH_DEGRADED;
}

static void summarize(cell_telemetry *t, mc_repl_telemetry *s)
{
	cell *c = t->c;
	uint64_t now = mc_now_ns();
	memset(s, 0, sizeof *s);
	s->seq = ++t->seq;
	s->wall_ms = mc_wall_ms();
	s->interval_ms = u32(MC_MAX((now - t->interval_start_ns) / 1000000, 1));
	s->uptime_ms = (now - c->start_ns) / 1000000;
	s->config_version = mc_cell_config_version(c);
	health(c, s);
	mc_cell_obs_lock(c);
	for (int o = 0; o < OUTCOME_COUNT; o++) {
		if (!t->total[o])
			continue;
		const mc_hist *h = &t->lat[o];
		mc_repl_telem_outcome *x = &s->outcomes[s->n_outcomes++];
		x->id = (uint8_t)o;
		x->total = t->total[o];
		x->count = u32(h->count);
		x->p50_us = u32(mc_hist_quantile(h, 0.5));
		x->p95_us = u32(mc_hist_quantile(h, 0.95));
		x->p99_us = u32(mc_hist_quantile(h, 0.99));
		mc_hist_init(&t->lat[o]);
	}
	mc_cell_obs_unlock(c);
	t->interval_start_ns = now;
	mc_cell_cache_metrics(c);
	/* the other threads' counters as gathered at the previous tick */
	mc_metrics *m = c->metrics;
	if (c->shards_view) {
		m = mc_metrics_new();
		mc_metrics_merge(m, c->metrics);
		mc_metrics_merge(m, c->shards_view);
	}
	double regional = mc_metrics_sum(m, "metrocell_regional_requests_total", NULL);
	s->regional_total = (uint64_t)regional;
	s->regional = delta(regional, &t->prev_regional);
	if (s->regional > s->regional_total)
		s->regional = s->regional_total;
	s->cache_hit = delta(mc_metrics_sum(m, "metrocell_cache_requests_total", "result=\"hit\""),
			     &t->prev_hit);
	s->cache_stale =
	    delta(mc_metrics_sum(m, "metrocell_cache_requests_total", "result=\"stale\""),
		  &t->prev_stale);
	s->cache_miss = delta(
	    mc_metrics_sum(m, "metrocell_cache_requests_total", "result=\"miss\""), &t->prev_miss);
	s->locality_violations_total =
	    (uint64_t)mc_metrics_sum(m, "metrocell_locality_violations_total", NULL);
	s->cold_starts_total = (uint64_t)mc_metrics_sum(m, "metrocell_cold_starts_total", NULL);
	if (m != c->metrics)
		mc_metrics_free(m);
	if (c->shipper) {
		mc_repl_shipper_stats_get(c->shipper, t->rs);
		s->repl_lag_entries = t->rs->lag_entries;
		s->repl_oldest_unacked_ms = t->rs->oldest_unacked_ms;
		hist_delta_quantiles(&t->rs->lag_us, t->prev_ack, &s->repl_ack_p50_us,
				     &s->repl_ack_p99_us);
		*t->prev_ack = t->rs->lag_us;
	}
	if (t->events) {
		mc_evbuf_stats st;
		mc_evbuf_stats_get(t->events, &st);
		s->events_pending = st.pending;
		s->events_dropped_total = st.dropped;
	}
	s->blind_last_window_ms = t->blind_last_ms;
	s->blind_total_ms = t->blind_total_ms;
}

/* backlog_full when replicated writes start being refused (the write log holds
 * more than its bounds), backlog_cleared when an interval passes without. */
static void backlog_events(cell_telemetry *t)
{
	double refused =
	    mc_metrics_sum(t->c->metrics, "metrocell_replication_backlog_refused_total", NULL);
	uint64_t n = delta(refused, &t->prev_backlog_refused);
	if (n && !t->backlog_full) {
		t->backlog_full = 1;
		mc_cell_event(t->c, "backlog_full", "u:refused", n, NULL);
	} else if (!n && t->backlog_full) {
		t->backlog_full = 0;
		mc_cell_event(t->c, "backlog_cleared", "u:refused_total", (uint64_t)refused, NULL);
	}
}

static void on_tick(uv_timer_t *h)
{
	cell_telemetry *t = h->data;
	cell *c = t->c;
	if (t->stopped)
		return;
	mc_repl_telemetry s;
	mc_cell_threads_refresh_view(c);
	summarize(t, &s);
	const char *why;
	if (mc_repl_telemetry_check(&s, &why) < 0)
		MC_ERROR(COMP, "cell %s: summary %llu is inconsistent (%s); sending it anyway",
			 c->conf->cell, (unsigned long long)s.seq, why);
	int rc = MC_EUNAVAIL;
	if (c->shipper && t->link_up) {
		mc_buf frame;
		mc_buf_init(&frame);
		mc_repl_encode_telemetry(&frame, &s);
		rc = mc_repl_shipper_send(c->shipper, &frame);
		mc_buf_fini(&frame);
	}
	if (rc == 0)
		t->sent_summaries++;
	else
		t->unsent_summaries++;
	uint64_t gap_ms = (mc_now_ns() - t->last_view_ns) / 1000000;
	backlog_events(t);
	if (!t->blind && gap_ms > stale_ms(t)) {
		t->blind = 1;
		MC_WARN(COMP, "cell %s: the region has had no view of this cell for %.1f s",
			c->conf->cell, (double)gap_ms / 1000.0);
	}
	drain(t);
}

/* ---- metrics and admin ---------------------------------------------------------------------- */

static void set(cell *c, const char *name, const char *help, mc_metric_type type, double v)
{
	mc_cell_series(c, name, help, type, NULL, NULL, NULL, NULL)->value = v;
}

void mc_cell_telemetry_metrics(cell *c)
{
	cell_telemetry *t = c->telem;
	if (!t)
		return;
	set(c, "metrocell_blind_seconds",
	    "How long the region has had no view of this cell: time since it last acknowledged a "
	    "telemetry summary (since the start before the first).",
	    MC_METRIC_GAUGE, (double)(mc_now_ns() - t->last_view_ns) / 1e9);
	set(c, "metrocell_blind_windows_total",
	    "Blind windows that ended: periods without an acknowledged summary longer than "
	    "telemetry.stale_after_ms.",
	    MC_METRIC_COUNTER, (double)t->blind_windows);
	set(c, "metrocell_blind_window_seconds_total",
	    "Total length of the blind windows that ended.", MC_METRIC_COUNTER,
	    (double)t->blind_total_ms / 1000.0);
	set(c, "metrocell_blind_last_window_seconds", "Length of the last blind window that ended.",
	    MC_METRIC_GAUGE, (double)t->blind_last_ms / 1000.0);
	set(c, "metrocell_telemetry_sent_total", "Telemetry summaries sent to the region.",
	    MC_METRIC_COUNTER, (double)t->sent_summaries);
	set(c, "metrocell_telemetry_acked_total", "Telemetry summaries the region acknowledged.",
	    MC_METRIC_COUNTER, (double)t->acked_summaries);
	set(c, "metrocell_telemetry_unsent_total",
	    "Telemetry summaries not sent (region link down or not reading); not retried.",
	    MC_METRIC_COUNTER, (double)t->unsent_summaries);
	if (!t->events)
		return;
	mc_evbuf_stats st;
	mc_evbuf_stats_get(t->events, &st);
	set(c, "metrocell_events_emitted_total", "Events written to the event buffer.",
	    MC_METRIC_COUNTER, (double)st.emitted);
	set(c, "metrocell_events_dropped_total",
	    "Events lost before the region acknowledged them: the oldest, deleted to keep the "
	    "buffer under telemetry.events_max_bytes, or not written (disk error).",
	    MC_METRIC_COUNTER, (double)st.dropped);
	set(c, "metrocell_events_pending", "Events held that the region has not acknowledged.",
	    MC_METRIC_GAUGE, (double)st.pending);
	set(c, "metrocell_events_bytes", "Bytes of the event buffer's files.", MC_METRIC_GAUGE,
	    (double)st.bytes);
	set(c, "metrocell_events_acked_seq", "Last event sequence number the region acknowledged.",
	    MC_METRIC_GAUGE, (double)st.acked_seq);
	set(c, "metrocell_events_batches_sent_total", "EVENTS frames sent (resends included).",
	    MC_METRIC_COUNTER, (double)t->sent_batches);
}

struct listing {
	mc_buf *b;
	int n;
};

static int list_event(void *arg, uint64_t seq, const char *line, size_t len)
{
	(void)seq;
	struct listing *l = arg;
	if (l->n++)
		mc_buf_append_str(l->b, ",");
	mc_buf_append(l->b, line, len);
	return 0;
}

/* Value of query parameter name in target (first occurrence), or NULL. */
static const char *query_param(const char *target, const char *name, size_t *len)
{
	const char *q = strchr(target, '?');
	size_t nl = strlen(name);
	while (q) {
		q++;
		if (strncmp(q, name, nl) == 0 && q[nl] == '=') {
			const char *v = q + nl + 1;
			*len = strcspn(v, "&#");
			return v;
		}
		q = strchr(q, '&');
	}
	return NULL;
}

static int query_u64(const char *target, const char *name, uint64_t max, uint64_t *out)
{
	size_t len;
	const char *v = query_param(target, name, &len);
	if (!v)
		return 0;
	return mc_parse_u64(v, len, max, out) == 0 ? 0 : MC_EINVAL;
}

static void admin_list(cell *c, mc_http_exchange *ex, const mc_http_request *req)
{
	cell_telemetry *t = c->telem;
	uint64_t after = 0, limit = 100;
	if (query_u64(req->target, "after", UINT64_MAX, &after) < 0 ||
	    query_u64(req->target, "limit", 1000, &limit) < 0 || limit == 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_query",
				      "after must be an integer, limit an integer in 1..1000");
		return;
	}
	mc_evbuf_stats st;
	mc_evbuf_stats_get(t->events, &st);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"cell\":");
	mc_buf_append_json(&b, c->conf->cell, strlen(c->conf->cell));
	mc_buf_printf(&b,
		      ",\"stream\":\"%016llx\",\"first_seq\":%llu,\"last_seq\":%llu,"
		      "\"acked_seq\":%llu,\"pending\":%llu,\"dropped\":%llu,\"events\":[",
		      (unsigned long long)st.stream, (unsigned long long)st.first_seq,
		      (unsigned long long)st.last_seq, (unsigned long long)st.acked_seq,
		      (unsigned long long)st.pending, (unsigned long long)st.dropped);
	struct listing l = {&b, 0};
	int n = mc_evbuf_read(t->events, after, (size_t)limit, 1u << 20, list_event, &l);
	if (n < 0) {
		mc_buf_fini(&b);
		mc_http_respond_error(ex, 500, NULL, 0, "events_unreadable",
				      "reading the event buffer: %s", mc_strerror(n));
		return;
	}
	mc_buf_append_str(&b, "]}\n");
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
}

/* POST /v1/events {"message": "...", "source": "..."}: an operator's annotation
 * (a deploy, a drill) recorded among the cell's events. */
static void admin_annotate(cell *c, mc_http_exchange *ex, const mc_http_request *req)
{
	json_error_t jerr;
	json_t *doc = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
	json_t *msg = doc ? json_object_get(doc, "message") : NULL;
	json_t *src = doc ? json_object_get(doc, "source") : NULL;
	const char *bad = NULL;
	if (!json_is_object(doc))
		bad = "the body must be a JSON object {\"message\": \"...\"}";
	else if (!json_is_string(msg) || json_string_length(msg) == 0 ||
		 json_string_length(msg) > ANNOTATION_MAX)
		bad = "message must be a string of 1..1000 bytes";
	else if (src && (!json_is_string(src) || json_string_length(src) > 64))
		bad = "source must be a string of at most 64 bytes";
	else if (json_object_size(doc) > (src ? 2u : 1u))
		bad = "only message and source are allowed";
	if (bad) {
		json_decref(doc);
		mc_http_respond_error(ex, 400, NULL, 0, "bad_event", "%s", bad);
		return;
	}
	uint64_t seq =
	    mc_evbuf_emit(c->telem->events, "annotation", "s:message", json_string_value(msg),
			  "s:source", src ? json_string_value(src) : NULL, NULL);
	json_decref(doc);
	drain_soon(c->telem);
	if (!seq) {
		mc_http_respond_error(ex, 503, NULL, 0, "events_unwritable",
				      "the event buffer could not write the event");
		return;
	}
	char body[64];
	int n = snprintf(body, sizeof body, "{\"seq\":%llu}\n", (unsigned long long)seq);
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 201, &ct, 1, body, (size_t)n);
}

int mc_cell_telemetry_admin(cell *c, mc_http_exchange *ex)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	if (strcmp(req->path, "/v1/events") != 0)
		return 0;
	if (!c->telem || !c->telem->events) {
		mc_http_respond_error(ex, 503, NULL, 0, "no_event_buffer",
				      "the event buffer is not open");
	} else if (strcmp(req->method, "GET") == 0) {
		admin_list(c, ex, req);
	} else if (strcmp(req->method, "POST") == 0) {
		admin_annotate(c, ex, req);
	} else {
		mc_http_header allow = {"Allow", 5, "GET, POST", 9};
		mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed",
				      "/v1/events answers GET and POST");
	}
	return 1;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

int mc_cell_telemetry_start(cell *c)
{
	const mc_cell_conf *cf = c->conf;
	cell_telemetry *t = mc_calloc(1, sizeof *t);
	c->telem = t;
	t->c = c;
	for (int o = 0; o < OUTCOME_COUNT; o++)
		mc_hist_init(&t->lat[o]);
	t->prev_ack = mc_alloc(sizeof *t->prev_ack);
	mc_hist_init(t->prev_ack);
	t->rs = mc_alloc(sizeof *t->rs);
	t->interval_start_ns = t->last_view_ns = mc_now_ns();
	t->last_view_wall_ms = mc_wall_ms();
	char dir[4200], err[512];
	snprintf(dir, sizeof dir, "%s/events", cf->data_dir);
	mc_evbuf_opts eo = {
	    .dir = dir, .max_bytes = cf->telemetry.events_max_bytes, .source = cf->cell};
	int rc = mc_evbuf_open(&t->events, &eo, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: cannot open the event buffer: %s\n", err);
		return rc;
	}
	uv_timer_init(c->loop, &t->tick);
	uv_timer_init(c->loop, &t->drain);
	t->tick.data = t->drain.data = t;
	t->handles = 2;
	uv_timer_start(&t->tick, on_tick, cf->telemetry.interval_ms, cf->telemetry.interval_ms);
	mc_evbuf_stats st;
	mc_evbuf_stats_get(t->events, &st);
	mc_cell_event(c, "cell_start", "s:version", MC_VERSION, "i:pid", (int64_t)getpid(),
		      "u:events_pending", st.pending, NULL);
	return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
	cell_telemetry *t = h->data;
	t->handles--;
}

void mc_cell_telemetry_stop(cell *c)
{
	cell_telemetry *t = c->telem;
	if (!t || t->stopped)
		return;
	mc_cell_event(c, "cell_stop", "f:uptime_s", (double)(mc_now_ns() - c->start_ns) / 1e9,
		      NULL);
	t->stopped = 1;
	t->link_up = 0;
	if (t->handles) {
		uv_close((uv_handle_t *)&t->tick, on_timer_closed);
		uv_close((uv_handle_t *)&t->drain, on_timer_closed);
	}
}

void mc_cell_telemetry_fini(cell *c)
{
	cell_telemetry *t = c->telem;
	if (!t)
		return;
	MC_ASSERT(t->handles == 0);
	mc_evbuf_close(t->events);
	free(t->prev_ack);
	free(t->rs);
	free(t);
	c->telem = NULL;
}
