/* The cell process: loads the bootstrap config, opens the hot-state store,
 * starts the data-plane and admin listeners and the write-log shipper, routes
 * each request to its handler and answers with the standard cell headers. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/cell.h"
#include "cell/cell_int.h"
#include "cell/edge.h"
#include "net/net.h"

#define COMP "cell"

const char *const mc_cell_outcome_names[OUTCOME_COUNT] = {
	"local", "cache_hit", "cache_stale", "cache_miss", "fallback", "regional", "refused"};

static void series_for(cell *c, cell_route *rt, cell_outcome o, mc_series **count,
		       mc_series **lat)
{
	if (rt && rt->count[o]) {
		*count = rt->count[o];
		*lat = rt->latency[o];
		return;
	}
	mc_buf labels;
	mc_buf_init(&labels);
	mc_buf_append_str(&labels, "cell=\"");
	mc_metrics_label_escape(&labels, c->conf->cell);
	mc_buf_append_str(&labels, "\",route=\"");
	mc_metrics_label_escape(&labels, rt ? rt->conf->name : "-");
	mc_buf_printf(&labels, "\",outcome=\"%s\"", mc_cell_outcome_names[o]);
	*count = mc_metrics_series(c->metrics, "metrocell_requests_total",
				   "Requests answered by the cell, by route and path outcome.",
				   MC_METRIC_COUNTER, labels.data);
	*lat = mc_metrics_series(c->metrics, "metrocell_request_duration_seconds",
				 "Time from the first request byte to the response, by route and "
				 "path outcome.",
				 MC_METRIC_HIST, labels.data);
	mc_buf_fini(&labels);
	if (rt) {
		rt->count[o] = *count;
		rt->latency[o] = *lat;
	}
}

static void req_free(cell_req *r)
{
	mc_cell_snapshot_unref(r->snap);
	mc_buf_fini(&r->key);
	mc_buf_fini(&r->xff);
	free(r->fwd);
	free(r);
}

/* Writes a duration in milliseconds with three decimals (what "%.3f" of
 * ns / 1e6 prints, rounded to the microsecond) without the cost of
 * floating-point formatting, once per response. */
static char *put_ms(char *p, uint64_t ns)
{
	uint64_t us = (ns + 500u) / 1000u;
	unsigned f = (unsigned)(us % 1000u);
	p = mc_http_put_u64(p, us / 1000u);
	p[0] = '.';
	p[1] = (char)('0' + f / 100u);
	p[2] = (char)('0' + f / 10u % 10u);
	p[3] = (char)('0' + f % 10u);
	return p + 4;
}

static char *put_str(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

/* Room for the Server-Timing value: three segments of at most 20 + 4 digits,
 * their names (a segment name is a short constant) and separators. */
#define TIMING_CAP 200

/* The standard cell headers (X-Metrocell-Cell, -Outcome, -Route, Server-Timing)
 * into h[0..4), for the HTTP layer's trusted list: names are constants, the
 * cell and route names are config names ([a-z0-9_-], checked at load), the
 * outcome a constant and the timing formatted here. now is mc_now_ns(); timing
 * is the Server-Timing value's buffer (TIMING_CAP bytes). */
static size_t std_headers(cell_req *r, cell_outcome outcome, uint64_t now, char *timing,
			  mc_http_header *h)
{
	cell *c = r->c;
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	uint64_t total = now - req->start_ns;
	uint64_t seg = r->seg_start_ns ? now - r->seg_start_ns : 0;
	if (seg > total)
		seg = total;
	/* a fallback's region segment follows the time spent on the workers */
	uint64_t up = r->upstream_ns <= total - seg ? r->upstream_ns : 0;
	size_t sl = r->seg_name ? strlen(r->seg_name) : 0;
	if (sl > 64)
		sl = 64;

	char *p = put_str(timing, "edge;dur=", 9);
	if (r->seg_name && seg && up) {
		p = put_ms(p, total - seg - up);
		p = put_str(p, ", upstream;dur=", 15);
		p = put_ms(p, up);
	} else {
		p = put_ms(p, r->seg_name && seg ? total - seg : total);
	}
	if (r->seg_name && seg) {
		p = put_str(p, ", ", 2);
		p = put_str(p, r->seg_name, sl);
		p = put_str(p, ";dur=", 5);
		p = put_ms(p, seg);
	}
	MC_ASSERT((size_t)(p - timing) < TIMING_CAP);

	const char *oname = mc_cell_outcome_names[outcome];
	const char *rname = r->route ? r->route->conf->name : "-";
	h[0] = (mc_http_header){"X-Metrocell-Cell", 16, c->conf->cell, strlen(c->conf->cell)};
	h[1] = (mc_http_header){"X-Metrocell-Outcome", 19, oname, strlen(oname)};
	h[2] = (mc_http_header){"X-Metrocell-Route", 17, rname, strlen(rname)};
	h[3] = (mc_http_header){"Server-Timing", 13, timing, (size_t)(p - timing)};
	return 4;
}

/* Counts the request and its duration until now by route and outcome. */
static void record(cell_req *r, cell_outcome outcome, int status, uint64_t now)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	uint64_t total = now - req->start_ns;
	mc_series *count, *lat;
	series_for(r->c, r->route, outcome, &count, &lat);
	count->value += 1;
	mc_hist_record(lat->hist, total / 1000);
	cell *m = r->c->main;
	mc_cell_obs_lock(m);
	mc_cell_fleet_observe(m, status, total / 1000);
	mc_cell_telemetry_record(m, outcome, total / 1000);
	mc_cell_obs_unlock(m);
}

/* ---- requests handed to the main thread (KV, multi-get, cache) -------------------------- */

typedef struct hop {
	mc_http_exchange *ex;
	cell *home;
} hop;

/* An answer the main thread built for another thread's exchange: the headers,
 * raw block and body copied into one allocation. */
typedef struct hop_reply {
	mc_http_exchange *ex;
	cell *home;
	int status;
	size_t ntrusted, nextra;
	mc_http_header *h;
	char *raw;
	size_t raw_len;
	char *body;
	size_t body_len;
} hop_reply;

static void hop_answered(cell *home)
{
	home->hops--;
	mc_cell_thread_maybe_close(home);
}

static void hop_reply_task(void *arg)
{
	hop_reply *hr = arg;
	mc_http_respond_trusted(hr->ex, hr->status, hr->h, hr->ntrusted, hr->h + hr->ntrusted,
				hr->nextra, hr->raw, hr->raw_len, hr->body, hr->body_len);
	hop_answered(hr->home);
	free(hr);
}

static size_t hdr_bytes(const mc_http_header *h, size_t n)
{
	size_t b = 0;
	for (size_t i = 0; i < n; i++)
		b += h[i].name_len + h[i].value_len;
	return b;
}

static char *hdr_copy(mc_http_header *dst, const mc_http_header *src, size_t n, char *p)
{
	for (size_t i = 0; i < n; i++) {
		memcpy(p, src[i].name, src[i].name_len);
		dst[i].name = p;
		dst[i].name_len = src[i].name_len;
		p += src[i].name_len;
		memcpy(p, src[i].value, src[i].value_len);
		dst[i].value = p;
		dst[i].value_len = src[i].value_len;
		p += src[i].value_len;
	}
	return p;
}

/* finish() of a request whose exchange belongs to r->home: the answer goes
 * back to that thread. */
static void hop_respond(cell_req *r, int status, const mc_http_header *trusted, size_t ntrusted,
			const mc_http_header *extra, size_t nextra, const char *raw,
			size_t raw_len, const void *body, size_t body_len)
{
	size_t nh = ntrusted + nextra;
	size_t size = sizeof(hop_reply) + nh * sizeof(mc_http_header) +
		      hdr_bytes(trusted, ntrusted) + hdr_bytes(extra, nextra) + raw_len + body_len;
	hop_reply *hr = mc_alloc(size);
	hr->ex = r->ex;
	hr->home = r->home;
	hr->status = status;
	hr->ntrusted = ntrusted;
	hr->nextra = nextra;
	hr->h = (mc_http_header *)(void *)(hr + 1);
	char *p = (char *)(hr->h + nh);
	p = hdr_copy(hr->h, trusted, ntrusted, p);
	p = hdr_copy(hr->h + ntrusted, extra, nextra, p);
	hr->raw = p;
	hr->raw_len = raw_len;
	if (raw_len)
		memcpy(p, raw, raw_len);
	p += raw_len;
	hr->body = p;
	hr->body_len = body_len;
	if (body_len)
		memcpy(p, body, body_len);
	/* the home thread keeps its mailbox open while it has requests here */
	int rc = mc_mailbox_post(r->home->mbox, hop_reply_task, hr);
	MC_ASSERT(rc == 0);
}

/* Answers r: the standard headers and own[0..nown) trusted, extra checked, then
 * the pre-rendered block raw (may be empty); records the metrics, frees r. */
static void finish(cell_req *r, int status, cell_outcome outcome, const mc_http_header *own,
		   size_t nown, const mc_http_header *extra, size_t nextra, const char *raw,
		   size_t raw_len, const void *body, size_t body_len)
{
	char timing[TIMING_CAP];
	mc_http_header stack[20], *h = nown + 4 <= 20 ? stack : mc_alloc((nown + 4) * sizeof *h);
	uint64_t now = mc_now_ns();
	size_t n = std_headers(r, outcome, now, timing, h);
	if (nown)
		memcpy(h + n, own, nown * sizeof *h);
	record(r, outcome, status, now);
	if (r->home)
		hop_respond(r, status, h, n + nown, extra, nextra, raw, raw_len, body, body_len);
	else
		mc_http_respond_trusted(r->ex, status, h, n + nown, extra, nextra, raw, raw_len,
					body, body_len);
	if (h != stack)
		free(h);
	req_free(r);
}

void mc_cell_finish_own(cell_req *r, int status, cell_outcome outcome, const mc_http_header *own,
			size_t nown, const mc_http_header *extra, size_t nextra, const void *body,
			size_t body_len)
{
	finish(r, status, outcome, own, nown, extra, nextra, NULL, 0, body, body_len);
}

void mc_cell_finish(cell_req *r, int status, cell_outcome outcome, const mc_http_header *extra,
		    size_t nextra, const void *body, size_t body_len)
{
	finish(r, status, outcome, NULL, 0, extra, nextra, NULL, 0, body, body_len);
}

void mc_cell_finish_raw(cell_req *r, int status, cell_outcome outcome, const mc_http_header *extra,
			size_t nextra, const char *raw, size_t raw_len, const void *body,
			size_t body_len)
{
	finish(r, status, outcome, NULL, 0, extra, nextra, raw, raw_len, body, body_len);
}

int mc_cell_stream_start_at(cell_req *r, int status, cell_outcome outcome,
			    const mc_http_header *extra, size_t nextra, int64_t content_length,
			    uint64_t now)
{
	char timing[TIMING_CAP];
	mc_http_header h[4];
	MC_ASSERT(!r->home); /* streams stay on the exchange's thread */
	size_t n = std_headers(r, outcome, now, timing, h);
	record(r, outcome, status, now);
	return mc_http_exchange_start_trusted(r->ex, status, h, n, extra, nextra, content_length);
}

int mc_cell_stream_start(cell_req *r, int status, cell_outcome outcome, const mc_http_header *extra,
			 size_t nextra, int64_t content_length)
{
	return mc_cell_stream_start_at(r, status, outcome, extra, nextra, content_length,
				       mc_now_ns());
}

void mc_cell_stream_end(cell_req *r, int abort)
{
	mc_http_exchange_end(r->ex, abort);
	req_free(r);
}

void mc_cell_finish_error(cell_req *r, int status, cell_outcome outcome, const char *code,
			  const char *fmt, ...)
{
	mc_buf body;
	mc_buf_init(&body);
	va_list ap;
	va_start(ap, fmt);
	mc_http_error_bodyv(&body, code, fmt, ap);
	va_end(ap);
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_cell_finish(r, status, outcome, &ct, 1, body.data, body.len);
	mc_buf_fini(&body);
}

static cell_req *req_new(cell *c, mc_http_exchange *ex)
{
	/* malloc + memset, not calloc: calloc bypasses glibc's thread cache, and the
	 * frees that follow then consolidate the heap on every request */
	cell_req *r = mc_alloc(sizeof *r);
	memset(r, 0, sizeof *r);
	r->c = c;
	/* no snapshot once the main thread has stopped (a late hand-over) */
	r->snap = c->snap ? mc_cell_snapshot_ref(c->snap) : NULL;
	r->ex = ex;
	mc_buf_init(&r->key);
	mc_buf_init(&r->xff);
	return r;
}

/* Runs r's route handler (r->route set). */
static void dispatch(cell_req *r)
{
	switch (r->route->conf->kind) {
	case MC_ROUTE_KV:
		mc_cell_kv_handle(r);
		return;
	case MC_ROUTE_PROXY:
		mc_cell_proxy_handle(r);
		return;
	case MC_ROUTE_FLAGS:
		mc_cell_flags_handle(r);
		return;
	case MC_ROUTE_CACHE:
		mc_cell_cache_handle(r);
		return;
	}
	mc_cell_finish_error(r, 500, OUTCOME_REFUSED, "internal", "route kind not handled");
}

static void on_request(void *ctx, mc_http_exchange *ex)
{
	cell *c = ctx;
	const mc_http_request *req = mc_http_exchange_request(ex);
	cell_req *r = req_new(c, ex);
	int other = c != c->main; /* KV and cache requests go to the main thread */
	c->m_thread_requests->value += 1;
	if ((r->route = mc_cell_kv_mget_route(r->snap, req->path, req->path_len)) != NULL) {
		if (other)
			mc_cell_hop(r);
		else
			mc_cell_kv_mget(r);
		return;
	}
	r->route = mc_cell_route_match(r->snap, req->path, req->path_len);
	mc_cell_edge_account(c, r->route, req);
	if (!r->route) {
		mc_cell_finish_error(r, 404, OUTCOME_REFUSED, "no_route",
				     "no route of cell %s matches %s", c->conf->cell, req->path);
		return;
	}
	if (r->route->quota && mc_cell_quota_admit(r))
		return;
	if (other && (r->route->conf->kind == MC_ROUTE_KV || r->route->conf->kind == MC_ROUTE_CACHE)) {
		mc_cell_hop(r);
		return;
	}
	dispatch(r);
}

/* On the main thread: a request another thread handed over. Its locality,
 * first-request and quota accounting were done there. */
static void hop_arrive(void *arg)
{
	hop *h = arg;
	cell *c = h->home->main;
	cell_req *r = req_new(c, h->ex);
	r->home = h->home;
	free(h);
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	if (c->stopping) {
		mc_cell_finish_error(r, 503, OUTCOME_REFUSED, "stopping", "cell %s is stopping",
				     c->conf->cell);
		return;
	}
	if ((r->route = mc_cell_kv_mget_route(r->snap, req->path, req->path_len)) != NULL) {
		mc_cell_kv_mget(r);
		return;
	}
	r->route = mc_cell_route_match(r->snap, req->path, req->path_len);
	if (!r->route || r->route->conf->kind == MC_ROUTE_PROXY) {
		/* the config changed between the threads (a proxy route streams from
		 * the thread that owns the connection): the client may retry */
		r->route = NULL;
		mc_cell_finish_error(r, 503, OUTCOME_REFUSED, "route_changed",
				     "the routes of cell %s changed while %s was in flight; retry",
				     c->conf->cell, req->path);
		return;
	}
	dispatch(r);
}

void mc_cell_hop(cell_req *r)
{
	cell *c = r->c;
	mc_http_exchange *ex = r->ex;
	req_free(r);
	hop *h = mc_alloc(sizeof *h);
	h->ex = ex;
	h->home = c;
	c->hops++;
	if (mc_mailbox_post(c->main->mbox, hop_arrive, h) == 0)
		return;
	free(h);
	c->hops--;
	r = req_new(c, ex);
	mc_cell_finish_error(r, 503, OUTCOME_REFUSED, "stopping", "cell %s is stopping",
			     c->conf->cell);
}

/* ---- admin listener ------------------------------------------------------------------ */

static double ms(uint64_t us)
{
	return (double)us / 1000.0;
}

static void set_gauge(cell *c, const char *name, const char *help, mc_metric_type t, double v)
{
	mc_buf labels;
	mc_buf_init(&labels);
	mc_buf_append_str(&labels, "cell=\"");
	mc_metrics_label_escape(&labels, c->conf->cell);
	mc_buf_append_str(&labels, "\"");
	mc_metrics_series(c->metrics, name, help, t, labels.data)->value = v;
	mc_buf_fini(&labels);
}

static void refresh_gauges(cell *c, mc_repl_shipper_stats *rs)
{
	mc_log_stats ls;
	mc_store_log_stats(c->store, &ls);
	mc_repl_shipper_stats_get(c->shipper, rs);
	set_gauge(c, "metrocell_replication_connected", "1 while the region link is up.",
		  MC_METRIC_GAUGE, rs->connected);
	set_gauge(c, "metrocell_writelog_last_seq", "Last committed write-log sequence number.",
		  MC_METRIC_GAUGE, (double)ls.last_seq);
	set_gauge(c, "metrocell_replication_acked_seq",
		  "Last sequence number the region acknowledged.", MC_METRIC_GAUGE,
		  (double)rs->acked_seq);
	set_gauge(c, "metrocell_replication_lag_entries",
		  "Committed writes the region has not acknowledged yet.", MC_METRIC_GAUGE,
		  (double)(ls.last_seq > rs->acked_seq ? ls.last_seq - rs->acked_seq : 0));
	set_gauge(c, "metrocell_replication_backlog_entries",
		  "Entries held in the write log (unacknowledged, or acknowledged and not yet "
		  "trimmed).",
		  MC_METRIC_GAUGE, (double)ls.entries);
	set_gauge(c, "metrocell_replication_backlog_bytes",
		  "Key and value bytes held in the write log.", MC_METRIC_GAUGE, (double)ls.bytes);
	set_gauge(c, "metrocell_replication_oldest_unacked_seconds",
		  "Age of the oldest unacknowledged write (the current loss window).",
		  MC_METRIC_GAUGE, (double)rs->oldest_unacked_ms / 1000.0);
	set_gauge(c, "metrocell_replication_reconnects_total",
		  "Connections to the region opened after the first.", MC_METRIC_COUNTER,
		  (double)rs->reconnects);
	set_gauge(c, "metrocell_replication_sent_entries_total",
		  "Write-log entries sent to the region (resends included).", MC_METRIC_COUNTER,
		  (double)rs->sent_entries);
	mc_buf labels;
	mc_buf_init(&labels);
	mc_buf_append_str(&labels, "cell=\"");
	mc_metrics_label_escape(&labels, c->conf->cell);
	mc_buf_append_str(&labels, "\"");
	mc_series *lag = mc_metrics_series(
		c->metrics, "metrocell_replication_lag_seconds",
		"Time from the local commit of a write to the region's acknowledgement.",
		MC_METRIC_HIST, labels.data);
	*lag->hist = rs->lag_us;
	mc_buf_fini(&labels);
	mc_store_stats ss;
	mc_store_stats_get(c->store, &ss);
	set_gauge(c, "metrocell_state_commits_total", "Group commits of the hot-state store.",
		  MC_METRIC_COUNTER, (double)ss.commits);
	set_gauge(c, "metrocell_state_writes_total", "Writes committed to the hot-state store.",
		  MC_METRIC_COUNTER, (double)ss.writes);
	set_gauge(c, "metrocell_uptime_seconds", "Seconds since the cell started.",
		  MC_METRIC_GAUGE, (double)(mc_now_ns() - c->start_ns) / 1e9);
	mc_cell_pools_gauges(c);
	mc_cell_quotas_gauges(c);
	mc_cell_cache_metrics(c);
	mc_cell_fleet_metrics(c);
	mc_cell_telemetry_metrics(c);
	mc_cell_kv_metrics(c);
}

static void admin_status(cell *c, mc_http_exchange *ex)
{
	mc_repl_shipper_stats *rs = mc_alloc(sizeof *rs);
	refresh_gauges(c, rs);
	mc_log_stats ls;
	mc_store_log_stats(c->store, &ls);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"cell\":");
	mc_buf_append_json(&b, c->conf->cell, strlen(c->conf->cell));
	mc_buf_printf(&b,
		      ",\"uptime_s\":%.3f,\"threads\":%u,\"replication\":{\"connected\":%s,\"last_seq\":%llu,"
		      "\"acked_seq\":%llu,\"lag_entries\":%llu,\"backlog_entries\":%llu,"
		      "\"backlog_bytes\":%llu,"
		      "\"oldest_unacked_ms\":%llu,\"lag_p50_ms\":%.3f,\"lag_p95_ms\":%.3f,"
		      "\"lag_p99_ms\":%.3f,\"lag_max_ms\":%.3f,\"lag_count\":%llu,"
		      "\"reconnects\":%llu,\"sent_entries\":%llu}",
		      (double)(mc_now_ns() - c->start_ns) / 1e9, c->nthreads,
		      rs->connected ? "true" : "false",
		      (unsigned long long)ls.last_seq, (unsigned long long)rs->acked_seq,
		      (unsigned long long)(ls.last_seq > rs->acked_seq ? ls.last_seq - rs->acked_seq : 0),
		      (unsigned long long)ls.entries, (unsigned long long)ls.bytes,
		      (unsigned long long)rs->oldest_unacked_ms,
		      ms(mc_hist_quantile(&rs->lag_us, 0.5)), ms(mc_hist_quantile(&rs->lag_us, 0.95)),
		      ms(mc_hist_quantile(&rs->lag_us, 0.99)), ms(rs->lag_us.max),
		      (unsigned long long)rs->lag_us.count, (unsigned long long)rs->reconnects,
		      (unsigned long long)rs->sent_entries);
	mc_cell_fleet_status(c, &b);
	mc_buf_append_str(&b, "}\n");
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
	free(rs);
}

/* /metrics with several threads: one exposition of every thread's registry. */
static void metrics_gathered(void *arg, mc_metrics *merged)
{
	mc_http_respond_metrics(arg, merged);
	mc_metrics_free(merged);
}

static void on_admin(void *ctx, mc_http_exchange *ex)
{
	cell *c = ctx;
	const mc_http_request *req = mc_http_exchange_request(ex);
	if (mc_cell_cache_admin(c, ex) || mc_cell_telemetry_admin(c, ex))
		return;
	if (strcmp(req->method, "GET") != 0) {
		mc_http_header allow = {"Allow", 5, "GET", 3};
		mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed",
				      "the admin API answers GET only");
		return;
	}
	if (strcmp(req->path, "/healthz") == 0) {
		mc_http_respond(ex, 200, NULL, 0, "ok\n", 3);
	} else if (strcmp(req->path, "/metrics") == 0) {
		mc_repl_shipper_stats *rs = mc_alloc(sizeof *rs);
		refresh_gauges(c, rs);
		free(rs);
		if (c->nthreads > 1)
			mc_cell_gather(c, 1, metrics_gathered, ex);
		else
			mc_http_respond_metrics(ex, c->metrics);
	} else if (strcmp(req->path, "/v1/status") == 0) {
		admin_status(c, ex);
	} else {
		mc_http_respond_error(ex, 404, NULL, 0, "not_found",
				      "admin endpoints: /healthz, /metrics, /v1/status");
	}
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void stop(cell *c)
{
	if (c->stopping)
		return;
	c->stopping = 1;
	MC_INFO(COMP, "cell %s stopping", c->conf->cell);
	mc_cell_fleet_stop(c);
	mc_cell_telemetry_stop(c);
	mc_http_drain_cancel(c->drain);
	c->drain = NULL;
	mc_http_server_free(c->http);
	c->http = NULL;
	mc_http_server_free(c->admin);
	c->admin = NULL;
	mc_cell_tls_stop(c);
	mc_repl_shipper_free(c->shipper);
	c->shipper = NULL;
	mc_cell_pools_fini(c);
	mc_cell_cache_fini(c);
	mc_cell_kv_fini(c);
	/* Commits what is queued; the write callbacks run from the loop, then the
	 * store's last handle closes and uv_run() returns. */
	mc_store_close(c->store);
	c->store = NULL;
	mc_net_stop_signals_close(&c->signals);
	/* the other threads end their loops; the main thread's mailbox closes
	 * once the last one has exited */
	mc_cell_threads_stop(c);
}

static void on_drained(cell *c)
{
	stop(c);
}

/* SIGTERM / SIGINT: the first drains every thread's listeners (at most
 * limits.drain_timeout_ms), the second stops at once. */
static void on_stop_signal(void *arg)
{
	cell *c = arg;
	if (c->draining || c->stopping) {
		stop(c);
		return;
	}
	c->draining = 1;
	MC_INFO(COMP, "cell %s: draining (at most %u ms)", c->conf->cell,
		(unsigned)c->conf->limits.drain_timeout_ms);
	mc_cell_threads_drain(c, on_drained);
}

/* Requests the HTTP server refuses itself (malformed, too large, too slow) never
 * reach a route: they are counted here and carry the cell's headers. */
static void on_reject(void *ctx, int status)
{
	cell *c = ctx;
	mc_buf labels;
	mc_buf_init(&labels);
	mc_buf_append_str(&labels, "cell=\"");
	mc_metrics_label_escape(&labels, c->conf->cell);
	mc_buf_printf(&labels, "\",status=\"%d\"", status);
	mc_metrics_series(c->metrics, "metrocell_http_rejected_total",
			  "Requests refused by the HTTP layer before routing (400, 408, 413, 431).",
			  MC_METRIC_COUNTER, labels.data)
		->value += 1;
	mc_buf_fini(&labels);
}

static void server_opts(const mc_limits_conf *l, mc_http_server_opts *o);
static size_t route_body_limit(void *ctx, const char *method, const char *path, size_t len);

int mc_cell_listen(cell *c, const char *hostport)
{
	mc_http_server_opts ho;
	server_opts(&c->conf->limits, &ho);
	ho.body_limit = route_body_limit;
	ho.error_headers = c->reject_headers;
	ho.nerror_headers = MC_ARRAY_LEN(c->reject_headers);
	ho.on_reject = on_reject;
	ho.on_conn = mc_cell_tls_on_conn;
	/* the threads' listeners share the ports: the main thread's binds first */
	if (c->main->nthreads > 1) {
		ho.reuseport = c == c->main ? MC_NET_REUSEPORT_FIRST : MC_NET_REUSEPORT_JOIN;
		ho.shared = &c->main->limits;
	}
	return mc_http_server_new(&c->http, c->loop, hostport, &ho, on_request, c);
}

static void server_opts(const mc_limits_conf *l, mc_http_server_opts *o)
{
	mc_http_server_opts_default(o);
	o->max_header_bytes = l->max_header_bytes;
	o->max_headers = l->max_headers;
	o->max_body_bytes = l->max_body_bytes;
	o->idle_timeout_ms = l->idle_timeout_ms;
	o->request_timeout_ms = l->request_timeout_ms;
	o->max_connections = l->max_connections;
	o->header_timeout_ms = l->header_timeout_ms;
	o->body_timeout_ms = l->body_timeout_ms;
	o->body_min_rate = l->body_min_rate;
	o->max_inflight = l->max_inflight;
}

/* The body limit of a request: its route's max_body_bytes (which defaults to
 * limits.max_body_bytes). */
static size_t route_body_limit(void *ctx, const char *method, const char *path, size_t len)
{
	cell *c = ctx;
	(void)method;
	cell_route *rt = mc_cell_route_match(c->snap, path, len);
	return rt ? rt->conf->max_body_bytes : c->conf->limits.max_body_bytes;
}

static void state_dir(const char *data_dir, char *out, size_t cap)
{
	snprintf(out, cap, "%s/state", data_dir);
}

static int start(cell *c)
{
	const mc_cell_conf *cf = c->conf;
	char dir[4200];
	state_dir(cf->data_dir, dir, sizeof dir);
	mc_store_opts so;
	mc_store_opts_default(&so);
	so.dir = dir;
	so.map_size = (size_t)cf->state.map_size_mb << 20;
	so.durable = cf->state.durable;
	so.max_batch = cf->state.max_batch;
	so.linger_us = cf->state.commit_linger_us;
	so.home = cf->cell;
	mc_cell_thread_metrics(c);
	mc_cell_fleet_load(c);
	mc_cell_kv_new(c);
	mc_cell_kv_store_opts(c, &so);
	int rc = mc_store_open(&c->store, c->loop, &so);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: cannot open the store in %s: %s\n", dir,
			mc_strerror(rc));
		return rc;
	}
	if ((rc = mc_cell_pools_init(c)) < 0)
		return rc;
	if ((rc = mc_cell_cache_init(c)) < 0)
		return rc;
	mc_cell_edge_init(c);
	if ((rc = mc_cell_fleet_boot(c)) < 0)
		return rc;

	c->reject_headers[0] = (mc_http_header){"X-Metrocell-Cell", 16, cf->cell, strlen(cf->cell)};
	c->reject_headers[1] = (mc_http_header){"X-Metrocell-Outcome", 19, "refused", 7};
	c->reject_headers[2] = (mc_http_header){"X-Metrocell-Route", 17, "-", 1};
	c->reject_headers[3] = (mc_http_header){"Server-Timing", 13, "edge;dur=0", 10};
	rc = mc_cell_listen(c, cf->listen_http);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: cannot listen on %s (listen.http): %s\n",
			cf->listen_http, mc_strerror(rc));
		return rc;
	}
	if ((rc = mc_cell_tls_start(c)) < 0)
		return rc;
	mc_http_server_opts ao;
	mc_http_server_opts_default(&ao);
	rc = mc_http_server_new(&c->admin, c->loop, cf->listen_admin, &ao, on_admin, c);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: cannot listen on %s (listen.admin): %s\n",
			cf->listen_admin, mc_strerror(rc));
		return rc;
	}

	mc_repl_shipper_opts ro;
	mc_repl_shipper_opts_default(&ro);
	ro.batch_max_entries = cf->repl.batch_max_entries;
	ro.heartbeat_ms = cf->repl.heartbeat_ms;
	ro.dead_after_ms = cf->repl.dead_after_ms;
	mc_cell_kv_shipper_opts(c, &ro);
	ro.on_purge = mc_cell_cache_on_purge;
	ro.on_link = mc_cell_telemetry_on_link;
	ro.on_obs_ack = mc_cell_telemetry_on_obs_ack;
	ro.cb_arg = c;
	if ((rc = mc_cell_telemetry_start(c)) < 0)
		return rc;
	rc = mc_repl_shipper_new(&c->shipper, c->loop, c->store, cf->cell, cf->region_repl, &ro);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: cannot start replication to %s: %s\n",
			cf->region_repl, mc_strerror(rc));
		return rc;
	}
	mc_cell_kv_start(c);
	mc_net_stop_signals_start(&c->signals, c->loop, on_stop_signal, c);
	mc_cell_fleet_start(c);
	/* last: the other threads serve at once and reach the main thread's
	 * telemetry, rollout window and mailbox, which all exist now */
	if ((rc = mc_cell_threads_start(c)) < 0)
		return rc;
	char hh[64], ah[64];
	uint16_t port;
	mc_parse_hostport(cf->listen_http, hh, sizeof hh, &port);
	mc_parse_hostport(cf->listen_admin, ah, sizeof ah, &port);
	printf("cell %s ready http=%s:%u admin=%s:%u threads=%u\n", cf->cell, hh,
	       mc_http_server_port(c->http), ah, mc_http_server_port(c->admin), c->nthreads);
	fflush(stdout);
	MC_INFO(COMP, "cell %s serving http on %s, admin on %s, shipping to %s", cf->cell,
		cf->listen_http, cf->listen_admin, cf->region_repl);
	return 0;
}

int mc_cell_main(int argc, char **argv)
{
	const char *path;
	if (mc_parse_config_arg(argc, argv, &path) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	cell c;
	memset(&c, 0, sizeof c);
	char err[MC_CONFIG_ERR_MAX];
	int rc = mc_cell_conf_load(path, &c.conf, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "metrocell cell: %s\n", err);
		return 2;
	}
	mc_log_setup(c.conf->log.level, c.conf->log.json);
	c.start_ns = mc_now_ns();
	c.metrics = mc_metrics_new();
	uv_loop_t loop;
	uv_loop_init(&loop);
	c.loop = &loop;
	c.main = &c;
	c.nthreads = mc_cell_threads_wanted(c.conf);
	pthread_mutex_init(&c.obs_lock, NULL);
	c.quotas = mc_cell_shared_reg_new();
	c.pool_reg = mc_cell_shared_reg_new();
	if (mc_mailbox_new(&c.mbox, &loop) < 0) {
		fprintf(stderr, "metrocell cell: cannot create the main thread's mailbox\n");
		return 1;
	}

	int code = 0;
	mc_net_stop_signals_defer(1);
	if (start(&c) < 0) {
		code = 1;
		stop(&c);
	}
	mc_net_stop_signals_defer(0);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		MC_WARN(COMP, "event loop still had open handles at exit");
	mc_cell_threads_free(&c);
	mc_cell_telemetry_fini(&c);
	mc_cell_edge_fini(&c);
	mc_cell_kv_free(&c);
	mc_cell_shared_reg_free(c.quotas);
	mc_cell_shared_reg_free(c.pool_reg);
	pthread_mutex_destroy(&c.obs_lock);
	mc_metrics_free(c.metrics);
	MC_INFO(COMP, "cell %s stopped", c.conf->cell);
	mc_cell_conf_free(c.conf);
	return code;
}
