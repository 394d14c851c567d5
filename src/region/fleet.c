/* The region's fleet view: the latest telemetry summary of every cell with the
 * time it arrived (a cell not heard for telemetry.stale_after_ms is stale or
 * down), the windows in which the region had no view of a cell, each cell's
 * drained events kept under data_dir/events/<cell> (deduplicated by sequence
 * number), and what is exposed from them: fleet series on /metrics,
 * GET /v1/fleet and GET /v1/events. docs/operations.md "Fleet telemetry". */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "obs/evbuf.h"
#include "region/region_int.h"

#define COMP "fleet"
#define FLEET_MAX_CELLS 256
#define EVENTS_LIMIT_MAX 1000

static const char *const OUTCOMES[MC_REPL_TELEM_OUTCOMES] = {
    "local", "cache_hit", "cache_stale", "cache_miss", "fallback", "regional", "refused"};
static const char *const HEALTH[] = {"ok", "degraded", "draining"};

typedef struct fleet_cell {
	char name[MC_STATE_MAX_HOME + 1];
	int have; /* a summary was accepted */
	mc_repl_telemetry last;
	uint64_t rx_ns, rx_wall_ms;
	uint64_t summaries, rejected;
	char last_reject[96];
	/* the region's blind windows for this cell */
	uint64_t windows, blind_total_ms, last_start_ms, last_end_ms;
	/* events */
	mc_evbuf *events;     /* opened at the first EVENTS frame, or at start when on disk */
	uint64_t handled_seq; /* highest seq stored, skipped as duplicate or refused */
	uint64_t ev_received, ev_duplicates, ev_refused, ev_lost;
	int ev_failed; /* the directory could not be opened: logged once */
} fleet_cell;

struct region_fleet {
	const mc_region_conf *cf;
	mc_repl_sink *sink;
	fleet_cell **cells;
	size_t ncells;
	uint64_t start_ns;
	char events_dir[4200];
};

static fleet_cell *cell_find(region_fleet *f, const char *name)
{
	for (size_t i = 0; i < f->ncells; i++)
		if (strcmp(f->cells[i]->name, name) == 0)
			return f->cells[i];
	return NULL;
}

static fleet_cell *cell_get(region_fleet *f, const char *name)
{
	fleet_cell *c = cell_find(f, name);
	if (c || f->ncells >= FLEET_MAX_CELLS || strlen(name) > MC_STATE_MAX_HOME)
		return c;
	c = mc_calloc(1, sizeof *c);
	snprintf(c->name, sizeof c->name, "%s", name);
	f->cells = mc_realloc(f->cells, (f->ncells + 1) * sizeof *f->cells);
	f->cells[f->ncells++] = c;
	return c;
}

/* ---- events ------------------------------------------------------------------------------ */

static int events_open(region_fleet *f, fleet_cell *c)
{
	if (c->events)
		return 0;
	char dir[4300], err[512];
	snprintf(dir, sizeof dir, "%s/%s", f->events_dir, c->name);
	mc_evbuf_opts o = {.dir = dir, .max_bytes = f->cf->telemetry.events_max_bytes};
	int rc = mc_evbuf_open(&c->events, &o, err, sizeof err);
	if (rc < 0) {
		if (!c->ev_failed)
			MC_ERROR(COMP, "cell %s: cannot open its event log: %s", c->name, err);
		c->ev_failed = 1;
		return rc;
	}
	c->ev_failed = 0;
	mc_evbuf_stats st;
	mc_evbuf_stats_get(c->events, &st);
	c->handled_seq = st.last_seq;
	return 0;
}

/* Removes dir and the files in it (an event log: no subdirectories). */
static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	char p[4800];
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

/* The cell numbers its events in a new stream (its buffer was lost or wiped):
 * the log of the old stream moves to <cell>.prev (replacing an older one) and a
 * new log starts. */
static int events_new_stream(region_fleet *f, fleet_cell *c, uint64_t stream)
{
	mc_evbuf_stats st;
	mc_evbuf_stats_get(c->events, &st);
	MC_WARN(COMP,
		"cell %s: events arrive in a new stream %016" PRIx64 " (was %016" PRIx64
		", up to seq %" PRIu64 "); keeping the old log as %s.prev",
		c->name, stream, st.stream, st.last_seq, c->name);
	mc_evbuf_close(c->events);
	c->events = NULL;
	char dir[4300], prev[4400];
	snprintf(dir, sizeof dir, "%s/%s", f->events_dir, c->name);
	snprintf(prev, sizeof prev, "%s.prev", dir);
	rm_dir(prev);
	if (rename(dir, prev) != 0)
		MC_WARN(COMP, "renaming %s: %s", dir, strerror(errno));
	int rc = events_open(f, c);
	if (rc == 0)
		rc = mc_evbuf_set_stream(c->events, stream);
	return rc;
}

/* An event from a cell is stored only when it is a JSON object whose "seq" is
 * its position in the frame, with a "type" string and a "ts_ms" integer, and a
 * "cell" member, when present, naming the cell that sent it. */
static const char *event_invalid(const fleet_cell *c, uint64_t seq, const char *line, size_t len)
{
	json_error_t e;
	json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
	const char *why = NULL;
	json_t *v;
	if (!json_is_object(j))
		why = "not a JSON object";
	else if (!json_is_integer(v = json_object_get(j, "seq")) ||
		 (uint64_t)json_integer_value(v) != seq)
		why = "seq does not match its place in the frame";
	else if (!json_is_string(v = json_object_get(j, "type")) || json_string_length(v) == 0 ||
		 json_string_length(v) > 64)
		why = "type missing or not a string of 1..64 bytes";
	else if (!json_is_integer(v = json_object_get(j, "ts_ms")) || json_integer_value(v) < 0)
		why = "ts_ms missing or not a non-negative integer";
	else if ((v = json_object_get(j, "cell")) &&
		 (!json_is_string(v) || strcmp(json_string_value(v), c->name) != 0))
		why = "cell names another cell";
	json_decref(j);
	return why;
}

void mc_region_fleet_on_events(void *arg, const char *cell, const mc_repl_frame *fr)
{
	region_fleet *f = arg;
	fleet_cell *c = cell_get(f, cell);
	if (!c || events_open(f, c) < 0)
		return; /* not acknowledged: the cell keeps them and sends them again */
	uint64_t stream = fr->u.events.stream;
	mc_evbuf_stats st;
	mc_evbuf_stats_get(c->events, &st);
	if (stream != st.stream) {
		int rc = st.last_seq == 0 ? mc_evbuf_set_stream(c->events, stream)
					  : events_new_stream(f, c, stream);
		if (rc < 0) {
			MC_ERROR(COMP,
				 "cell %s: cannot start the event log of stream %016" PRIx64 ": %s",
				 c->name, stream, mc_strerror(rc));
			return;
		}
		c->handled_seq = 0;
	}
	size_t pos = 0, len;
	const char *line;
	uint64_t seq = fr->u.events.first_seq;
	for (; mc_repl_events_next(fr, &pos, &line, &len) == 1; seq++) {
		if (seq <= c->handled_seq) {
			c->ev_duplicates++;
			continue;
		}
		mc_evbuf_stats_get(c->events, &st);
		const char *why = event_invalid(c, seq, line, len);
		if (why) {
			if (c->ev_refused++ % 100 == 0)
				MC_WARN(COMP, "cell %s: refusing event %" PRIu64 ": %s", c->name,
					seq, why);
			c->handled_seq = seq;
			continue;
		}
		int rc = mc_evbuf_append(c->events, seq, line, len);
		if (rc < 0) {
			MC_ERROR(COMP, "cell %s: storing event %" PRIu64 ": %s", c->name, seq,
				 mc_strerror(rc));
			break; /* acknowledge what is stored; the cell resends the rest */
		}
		if (c->handled_seq && seq > c->handled_seq + 1)
			c->ev_lost += seq - c->handled_seq - 1; /* the cell dropped them */
		c->handled_seq = seq;
		c->ev_received++;
	}
	if (f->sink)
		mc_repl_sink_obs_ack(f->sink, cell, MC_REPL_OBS_ACK_EVENTS, stream, c->handled_seq);
}

/* ---- summaries ------------------------------------------------------------------------------ */

void mc_region_fleet_on_telemetry(void *arg, const char *cell, const mc_repl_telemetry *t)
{
	region_fleet *f = arg;
	fleet_cell *c = cell_get(f, cell);
	if (!c)
		return;
	const char *why;
	if (mc_repl_telemetry_check(t, &why) < 0) {
		if (c->rejected++ % 100 == 0)
			MC_WARN(COMP, "cell %s: refusing telemetry summary %" PRIu64 ": %s", cell,
				t->seq, why);
		snprintf(c->last_reject, sizeof c->last_reject, "%s", why);
		return; /* not acknowledged: no view from it */
	}
	uint64_t now = mc_now_ns(), wall = mc_wall_ms();
	if (c->have) {
		uint64_t gap_ms = (now - c->rx_ns) / 1000000;
		if (gap_ms > f->cf->telemetry.stale_after_ms) {
			c->windows++;
			c->blind_total_ms += gap_ms;
			c->last_start_ms = c->rx_wall_ms;
			c->last_end_ms = wall;
			MC_INFO(COMP, "cell %s: telemetry again after %.3f s without a view", cell,
				(double)gap_ms / 1000.0);
		}
	}
	c->last = *t;
	c->have = 1;
	c->rx_ns = now;
	c->rx_wall_ms = wall;
	c->summaries++;
	if (f->sink)
		mc_repl_sink_obs_ack(f->sink, cell, MC_REPL_OBS_ACK_TELEMETRY, 0, t->seq);
}

/* ---- derived values ----------------------------------------------------------------------- */

typedef struct view {
	const char *state; /* up, stale, down */
	int connected;
	double age_s; /* since the last summary (since the region started when never) */
	double rps;
	uint64_t requests;	/* over the interval */
	double regional_ratio;	/* -1: no requests */
	double cache_hit_ratio; /* -1: no cache requests */
	double cache_rps;
} view;

static void view_of(region_fleet *f, const fleet_cell *c, const mc_repl_cell_stats *rs, size_t nrs,
		    view *v)
{
	memset(v, 0, sizeof *v);
	for (size_t i = 0; i < nrs; i++)
		if (strcmp(rs[i].cell, c->name) == 0)
			v->connected = rs[i].connected;
	uint64_t now = mc_now_ns();
	v->age_s = (double)(now - (c->have ? c->rx_ns : f->start_ns)) / 1e9;
	int fresh = c->have && v->age_s * 1000.0 <= f->cf->telemetry.stale_after_ms;
	v->state = fresh ? "up" : (c->have && v->connected ? "stale" : "down");
	v->regional_ratio = v->cache_hit_ratio = -1;
	if (!c->have)
		return;
	const mc_repl_telemetry *t = &c->last;
	for (size_t i = 0; i < t->n_outcomes; i++)
		v->requests += t->outcomes[i].count;
	double secs = (double)t->interval_ms / 1000.0;
	v->rps = (double)v->requests / secs;
	if (v->requests)
		v->regional_ratio = MC_MIN(1.0, (double)t->regional / (double)v->requests);
	uint64_t cache = t->cache_hit + t->cache_stale + t->cache_miss;
	v->cache_rps = (double)cache / secs;
	if (cache)
		v->cache_hit_ratio = (double)t->cache_hit / (double)cache;
}

static mc_repl_cell_stats *sink_stats(region_fleet *f, size_t *n)
{
	mc_repl_cell_stats *rs = mc_calloc(FLEET_MAX_CELLS, sizeof *rs);
	*n =
	    f->sink ? MC_MIN(mc_repl_sink_stats(f->sink, rs, FLEET_MAX_CELLS), FLEET_MAX_CELLS) : 0;
	return rs;
}

/* ---- /metrics ------------------------------------------------------------------------------ */

static void lbl(mc_buf *b, const char *cell, const char *k2, const char *v2, const char *k3,
		const char *v3)
{
	mc_buf_reset(b);
	mc_buf_append_str(b, "cell=\"");
	mc_metrics_label_escape(b, cell);
	mc_buf_append_str(b, "\"");
	if (k2)
		mc_buf_printf(b, ",%s=\"%s\"", k2, v2);
	if (k3)
		mc_buf_printf(b, ",%s=\"%s\"", k3, v3);
}

static void put(mc_metrics *m, const char *name, const char *help, mc_metric_type t,
		const mc_buf *l, double v)
{
	mc_metrics_series(m, name, help, t, l->data)->value = v;
}

void mc_region_fleet_metrics(region_fleet *f, mc_metrics *m)
{
	if (!f)
		return;
	size_t nrs;
	mc_repl_cell_stats *rs = sink_stats(f, &nrs);
	mc_buf l;
	mc_buf_init(&l);
	for (size_t i = 0; i < f->ncells; i++) {
		fleet_cell *c = f->cells[i];
		view v;
		view_of(f, c, rs, nrs, &v);
		const mc_repl_telemetry *t = &c->last;
		lbl(&l, c->name, NULL, NULL, NULL, NULL);
		put(m, "metrocell_fleet_cell_up",
		    "1 while the cell's last telemetry summary is fresher than "
		    "telemetry.stale_after_ms.",
		    MC_METRIC_GAUGE, &l, strcmp(v.state, "up") == 0);
		put(m, "metrocell_fleet_blind_seconds",
		    "Time since the region's last telemetry summary from the cell (since the "
		    "region "
		    "started when never heard).",
		    MC_METRIC_GAUGE, &l, v.age_s);
		put(m, "metrocell_fleet_blind_windows_total",
		    "Times a summary arrived after more than telemetry.stale_after_ms without one.",
		    MC_METRIC_COUNTER, &l, (double)c->windows);
		put(m, "metrocell_fleet_blind_window_seconds_total",
		    "Total length of those windows without a view.", MC_METRIC_COUNTER, &l,
		    (double)c->blind_total_ms / 1000.0);
		put(m, "metrocell_fleet_telemetry_summaries_total",
		    "Telemetry summaries accepted from the cell.", MC_METRIC_COUNTER, &l,
		    (double)c->summaries);
		put(m, "metrocell_fleet_telemetry_refused_total",
		    "Telemetry summaries refused as inconsistent (not acknowledged).",
		    MC_METRIC_COUNTER, &l, (double)c->rejected);
		put(m, "metrocell_fleet_events_received_total",
		    "Events of the cell stored in the region's event log.", MC_METRIC_COUNTER, &l,
		    (double)c->ev_received);
		put(m, "metrocell_fleet_events_duplicates_total",
		    "Events received again (resent after a reconnect) and skipped.",
		    MC_METRIC_COUNTER, &l, (double)c->ev_duplicates);
		put(m, "metrocell_fleet_events_lost_total",
		    "Sequence numbers missing between stored events (dropped in the cell before "
		    "they could be sent).",
		    MC_METRIC_COUNTER, &l, (double)c->ev_lost);
		if (!c->have)
			continue;
		put(m, "metrocell_fleet_health", "The cell's health: 0 ok, 1 degraded, 2 draining.",
		    MC_METRIC_GAUGE, &l, t->health);
		put(m, "metrocell_fleet_config_version",
		    "Fleet config version the cell has applied.", MC_METRIC_GAUGE, &l,
		    (double)t->config_version);
		put(m, "metrocell_fleet_requests_per_second",
		    "Requests the cell answered per second over its last interval.",
		    MC_METRIC_GAUGE, &l, v.rps);
		put(m, "metrocell_fleet_regional_dependency_ratio",
		    "Share of the cell's requests over its last interval whose critical path "
		    "crossed "
		    "to the region (0 without requests).",
		    MC_METRIC_GAUGE, &l, v.regional_ratio < 0 ? 0 : v.regional_ratio);
		put(m, "metrocell_fleet_replication_lag_seconds",
		    "Age of the cell's oldest write the region has not acknowledged (0: caught "
		    "up).",
		    MC_METRIC_GAUGE, &l, (double)t->repl_oldest_unacked_ms / 1000.0);
		put(m, "metrocell_fleet_replication_lag_entries",
		    "Writes of the cell the region has not acknowledged.", MC_METRIC_GAUGE, &l,
		    (double)t->repl_lag_entries);
		put(m, "metrocell_fleet_replication_ack_p99_seconds",
		    "p99 commit-to-acknowledgement time of the cell's writes over its last "
		    "interval.",
		    MC_METRIC_GAUGE, &l, (double)t->repl_ack_p99_us / 1e6);
		put(m, "metrocell_fleet_locality_violations_total",
		    "Locality violations the cell counted since it started.", MC_METRIC_COUNTER, &l,
		    (double)t->locality_violations_total);
		put(m, "metrocell_fleet_cold_starts_total",
		    "Cold starts the cell counted since it started.", MC_METRIC_COUNTER, &l,
		    (double)t->cold_starts_total);
		put(m, "metrocell_fleet_cache_hit_ratio",
		    "Cache hits / (hits + stale + misses) of the cell's cache routes over its last "
		    "interval (0 without cache requests).",
		    MC_METRIC_GAUGE, &l, v.cache_hit_ratio < 0 ? 0 : v.cache_hit_ratio);
		put(m, "metrocell_fleet_cache_requests_per_second",
		    "Cache route requests (hit, stale, miss) per second over the last interval.",
		    MC_METRIC_GAUGE, &l, v.cache_rps);
		put(m, "metrocell_fleet_events_pending",
		    "Events the cell holds that the region has not acknowledged.", MC_METRIC_GAUGE,
		    &l, (double)t->events_pending);
		put(m, "metrocell_fleet_events_dropped_total",
		    "Events the cell dropped to respect its buffer's cap.", MC_METRIC_COUNTER, &l,
		    (double)t->events_dropped_total);
		for (size_t k = 0; k < t->n_outcomes; k++) {
			const mc_repl_telem_outcome *o = &t->outcomes[k];
			const char *on = OUTCOMES[o->id];
			lbl(&l, c->name, "outcome", on, NULL, NULL);
			put(m, "metrocell_fleet_requests_total",
			    "Requests the cell answered since it started, by path outcome.",
			    MC_METRIC_COUNTER, &l, (double)o->total);
			static const char *const qs[] = {"0.5", "0.95", "0.99"};
			uint32_t qv[] = {o->p50_us, o->p95_us, o->p99_us};
			for (size_t q = 0; q < 3; q++) {
				lbl(&l, c->name, "outcome", on, "quantile", qs[q]);
				put(m, "metrocell_fleet_latency_seconds",
				    "Latency quantiles of the cell's requests over its last "
				    "interval, by "
				    "path outcome (0 without requests).",
				    MC_METRIC_GAUGE, &l, (double)qv[q] / 1e6);
			}
		}
	}
	mc_buf_fini(&l);
	free(rs);
}

/* ---- GET /v1/fleet ------------------------------------------------------------------------- */

static void json_num_or_null(mc_buf *b, const char *key, double v)
{
	if (v < 0)
		mc_buf_printf(b, ",\"%s\":null", key);
	else
		mc_buf_printf(b, ",\"%s\":%.6g", key, v);
}

static void cell_json(region_fleet *f, mc_buf *b, const fleet_cell *c, const view *v)
{
	const mc_repl_telemetry *t = &c->last;
	mc_buf_append_str(b, "{\"cell\":");
	mc_buf_append_json(b, c->name, strlen(c->name));
	mc_buf_printf(b, ",\"state\":\"%s\",\"up\":%s,\"connected\":%s,\"heard\":%s", v->state,
		      strcmp(v->state, "up") == 0 ? "true" : "false",
		      v->connected ? "true" : "false", c->have ? "true" : "false");
	mc_buf_printf(b, ",\"blind_s\":%.3f,\"last_summary_wall_ms\":%" PRIu64, v->age_s,
		      c->have ? c->rx_wall_ms : 0);
	mc_buf_printf(b, ",\"blind\":{\"windows\":%" PRIu64 ",\"total_s\":%.3f,\"last_window\":",
		      c->windows, (double)c->blind_total_ms / 1000.0);
	if (c->windows)
		mc_buf_printf(b,
			      "{\"start_ms\":%" PRIu64 ",\"end_ms\":%" PRIu64 ",\"seconds\":%.3f}",
			      c->last_start_ms, c->last_end_ms,
			      (double)(c->last_end_ms - c->last_start_ms) / 1000.0);
	else
		mc_buf_append_str(b, "null");
	mc_buf_printf(b, ",\"cell_last_window_s\":%.3f,\"cell_total_s\":%.3f}",
		      (double)t->blind_last_window_ms / 1000.0, (double)t->blind_total_ms / 1000.0);
	mc_buf_printf(b,
		      ",\"telemetry\":{\"summaries\":%" PRIu64 ",\"refused\":%" PRIu64
		      ",\"last_refusal\":",
		      c->summaries, c->rejected);
	if (c->last_reject[0])
		mc_buf_append_json(b, c->last_reject, strlen(c->last_reject));
	else
		mc_buf_append_str(b, "null");
	mc_buf_append_str(b, "}");
	mc_buf_printf(b,
		      ",\"events\":{\"received\":%" PRIu64 ",\"duplicates\":%" PRIu64
		      ",\"refused\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"stored_seq\":%" PRIu64,
		      c->ev_received, c->ev_duplicates, c->ev_refused, c->ev_lost, c->handled_seq);
	if (c->have)
		mc_buf_printf(b, ",\"pending_in_cell\":%" PRIu64 ",\"dropped_in_cell\":%" PRIu64,
			      t->events_pending, t->events_dropped_total);
	mc_buf_append_str(b, "}");
	if (!c->have) {
		mc_buf_append_str(b, "}");
		return;
	}
	mc_buf_printf(b,
		      ",\"health\":\"%s\",\"health_flags\":%" PRIu32 ",\"config_version\":%" PRIu64
		      ",\"uptime_s\":%.3f,\"seq\":%" PRIu64 ",\"interval_ms\":%" PRIu32
		      ",\"cell_wall_ms\":%" PRIu64,
		      HEALTH[t->health], t->health_flags, t->config_version,
		      (double)t->uptime_ms / 1000.0, t->seq, t->interval_ms, t->wall_ms);
	mc_buf_printf(b, ",\"rps\":%.3f,\"requests\":%" PRIu64, v->rps, v->requests);
	uint64_t total = 0;
	mc_buf_append_str(b, ",\"outcomes\":{");
	for (size_t k = 0; k < t->n_outcomes; k++) {
		const mc_repl_telem_outcome *o = &t->outcomes[k];
		total += o->total;
		mc_buf_printf(b,
			      "%s\"%s\":{\"total\":%" PRIu64 ",\"count\":%" PRIu32
			      ",\"p50_ms\":%.3f,\"p95_ms\":%.3f,\"p99_ms\":%.3f}",
			      k ? "," : "", OUTCOMES[o->id], o->total, o->count,
			      (double)o->p50_us / 1000.0, (double)o->p95_us / 1000.0,
			      (double)o->p99_us / 1000.0);
	}
	mc_buf_printf(b, "},\"requests_total\":%" PRIu64, total);
	json_num_or_null(b, "regional_dependency_ratio", v->regional_ratio);
	mc_buf_printf(b, ",\"regional\":%" PRIu64 ",\"regional_total\":%" PRIu64, t->regional,
		      t->regional_total);
	mc_buf_printf(b,
		      ",\"replication\":{\"lag_entries\":%" PRIu64 ",\"oldest_unacked_ms\":%" PRIu64
		      ",\"ack_p50_ms\":%.3f,\"ack_p99_ms\":%.3f}",
		      t->repl_lag_entries, t->repl_oldest_unacked_ms,
		      (double)t->repl_ack_p50_us / 1000.0, (double)t->repl_ack_p99_us / 1000.0);
	mc_buf_printf(b,
		      ",\"locality_violations_total\":%" PRIu64 ",\"cold_starts_total\":%" PRIu64,
		      t->locality_violations_total, t->cold_starts_total);
	json_num_or_null(b, "cache_hit_ratio", v->cache_hit_ratio);
	mc_buf_printf(
	    b, ",\"cache\":{\"hit\":%" PRIu64 ",\"stale\":%" PRIu64 ",\"miss\":%" PRIu64 "}}",
	    t->cache_hit, t->cache_stale, t->cache_miss);
	(void)f;
}

static void fleet_json(region_fleet *f, mc_http_exchange *ex)
{
	size_t nrs;
	mc_repl_cell_stats *rs = sink_stats(f, &nrs);
	/* cells connected but not yet heard appear too */
	for (size_t i = 0; i < nrs; i++)
		cell_get(f, rs[i].cell);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"region\":");
	mc_buf_append_json(&b, f->cf->region, strlen(f->cf->region));
	mc_buf_printf(&b, ",\"wall_ms\":%" PRIu64 ",\"stale_after_ms\":%" PRIu32 ",\"cells\":[",
		      mc_wall_ms(), f->cf->telemetry.stale_after_ms);
	for (size_t i = 0; i < f->ncells; i++) {
		view v;
		view_of(f, f->cells[i], rs, nrs, &v);
		if (i)
			mc_buf_append_str(&b, ",");
		cell_json(f, &b, f->cells[i], &v);
	}
	mc_buf_append_str(&b, "]}\n");
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
	free(rs);
}

/* ---- GET /v1/events?cell=&after=&limit= ---------------------------------------------------- */

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

struct listing {
	mc_buf *b;
	int n;
	uint64_t last;
};

static int list_event(void *arg, uint64_t seq, const char *line, size_t len)
{
	struct listing *l = arg;
	if (l->n++)
		mc_buf_append_str(l->b, ",");
	mc_buf_append(l->b, line, len);
	l->last = seq;
	return 0;
}

static void events_json(region_fleet *f, mc_http_exchange *ex, const mc_http_request *req)
{
	size_t cl = 0, al = 0, ll = 0;
	const char *cv = query_param(req->target, "cell", &cl);
	const char *av = query_param(req->target, "after", &al);
	const char *lv = query_param(req->target, "limit", &ll);
	uint64_t after = 0, limit = 100;
	char name[MC_STATE_MAX_HOME + 1];
	if (!cv || cl == 0 || cl > MC_STATE_MAX_HOME) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_query",
				      "cell=NAME is required (1..%d bytes)", MC_STATE_MAX_HOME);
		return;
	}
	if ((av && mc_parse_u64(av, al, UINT64_MAX, &after) < 0) ||
	    (lv && (mc_parse_u64(lv, ll, EVENTS_LIMIT_MAX, &limit) < 0 || limit == 0))) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_query",
				      "after must be an integer, limit an integer in 1..%d",
				      EVENTS_LIMIT_MAX);
		return;
	}
	memcpy(name, cv, cl);
	name[cl] = '\0';
	fleet_cell *c = cell_find(f, name);
	if (!c) {
		mc_http_respond_error(ex, 404, NULL, 0, "unknown_cell",
				      "no telemetry or events from a cell named \"%s\"", name);
		return;
	}
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"cell\":");
	mc_buf_append_json(&b, c->name, strlen(c->name));
	mc_evbuf_stats st = {0};
	if (c->events)
		mc_evbuf_stats_get(c->events, &st);
	mc_buf_printf(&b,
		      ",\"stream\":\"%016" PRIx64 "\",\"first_seq\":%" PRIu64
		      ",\"last_seq\":%" PRIu64 ",\"events\":[",
		      st.stream, st.first_seq, st.last_seq);
	struct listing l = {&b, 0, after};
	int n = c->events ? mc_evbuf_read(c->events, after, (size_t)limit, 4u << 20, list_event, &l)
			  : 0;
	if (n < 0) {
		mc_buf_fini(&b);
		mc_http_respond_error(ex, 500, NULL, 0, "events_unreadable",
				      "reading the event log of %s: %s", name, mc_strerror(n));
		return;
	}
	mc_buf_printf(&b, "],\"next_after\":%" PRIu64 "}\n", l.last);
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
}

int mc_region_fleet_handle(region_fleet *f, mc_http_exchange *ex)
{
	if (!f)
		return 0;
	const mc_http_request *req = mc_http_exchange_request(ex);
	int fleet = strcmp(req->path, "/v1/fleet") == 0;
	if (!fleet && strcmp(req->path, "/v1/events") != 0)
		return 0;
	if (strcmp(req->method, "GET") != 0) {
		mc_http_header allow = {"Allow", 5, "GET", 3};
		mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed",
				      "%s answers GET only", req->path);
	} else if (fleet) {
		fleet_json(f, ex);
	} else {
		events_json(f, ex, req);
	}
	return 1;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

int mc_region_fleet_new(region_fleet **out, const mc_region_conf *cf)
{
	region_fleet *f = mc_calloc(1, sizeof *f);
	f->cf = cf;
	f->start_ns = mc_now_ns();
	snprintf(f->events_dir, sizeof f->events_dir, "%s/events", cf->data_dir);
	for (size_t i = 0; i < cf->ncells; i++)
		cell_get(f, cf->cells[i]);
	/* Cells with an event log on disk are known (their events stay readable). */
	DIR *d = opendir(f->events_dir);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d))) {
			size_t n = strlen(de->d_name);
			if (de->d_name[0] == '.' || n > MC_STATE_MAX_HOME ||
			    strchr(de->d_name, '.'))
				continue;
			fleet_cell *c = cell_get(f, de->d_name);
			if (c)
				events_open(f, c);
		}
		closedir(d);
	}
	*out = f;
	return 0;
}

void mc_region_fleet_attach(region_fleet *f, mc_repl_sink *sink)
{
	f->sink = sink;
}

void mc_region_fleet_free(region_fleet *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->ncells; i++) {
		mc_evbuf_close(f->cells[i]->events);
		free(f->cells[i]);
	}
	free(f->cells);
	free(f);
}
