/* The region process: the replication sink that applies every cell's write log
 * into the regional store, and the HTTP API that reads it back
 * (GET /v1/kv/{key} with version and home cell), plus /metrics and /v1/status;
 * requests that cells fail open go to the fallback path (fallback.c). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "http/http.h"
#include "net/net.h"
#include "obs/obs.h"
#include "region/region.h"
#include "region/region_int.h"
#include "repl/repl.h"
#include "state/state.h"

#define COMP "region"
#define MAX_CELLS 256

typedef struct region {
	uv_loop_t *loop;
	mc_region_conf *conf;
	mc_store *store;
	mc_repl_sink *sink;
	mc_http_server *http;
	mc_metrics *metrics;
	region_shield *shield; /* NULL without shield.origin */
	uint64_t start_ns;
	mc_http_graceful graceful; /* SIGTERM: drain, then stop */
	int stopping;
	mc_region_fallback *fallback; /* src/region/fallback.c */
	region_fleet *fleet;          /* src/region/fleet.c */
	mc_region_kv *kv; /* the KV API (region_kv.c) */
	region_fleetconf *fleetconf; /* the fleet config's control plane (fleetconf.c) */
} region;

static void cell_labels(mc_buf *b, const char *cell)
{
	mc_buf_reset(b);
	mc_buf_append_str(b, "cell=\"");
	mc_metrics_label_escape(b, cell);
	mc_buf_append_str(b, "\"");
}

/* Copies the sink's per-cell stats into the registry; returns them (caller frees). */
static mc_repl_cell_stats *refresh(region *g, size_t *n)
{
	mc_repl_cell_stats *st = mc_calloc(MAX_CELLS, sizeof *st);
	*n = MC_MIN(mc_repl_sink_stats(g->sink, st, MAX_CELLS), (size_t)MAX_CELLS);
	mc_buf l;
	mc_buf_init(&l);
	for (size_t i = 0; i < *n; i++) {
		cell_labels(&l, st[i].cell);
		mc_metrics_series(g->metrics, "metrocell_region_cell_connected",
				  "1 while the cell's replication connection is up.",
				  MC_METRIC_GAUGE, l.data)->value = st[i].connected;
		mc_metrics_series(g->metrics, "metrocell_region_applied_seq",
				  "Last write-log sequence number applied for the cell.",
				  MC_METRIC_GAUGE, l.data)->value = (double)st[i].applied_seq;
		mc_metrics_series(g->metrics, "metrocell_region_applied_entries_total",
				  "Write-log entries of the cell applied since the region started.",
				  MC_METRIC_COUNTER, l.data)->value = (double)st[i].applied_entries;
		*mc_metrics_series(g->metrics, "metrocell_region_replication_lag_seconds",
				   "Time from a write's commit in its cell to its commit in the "
				   "region (HLC wall clocks).",
				   MC_METRIC_HIST, l.data)
			 ->hist = st[i].lag_us;
	}
	mc_store_stats ss;
	mc_store_stats_get(g->store, &ss);
	mc_metrics_series(g->metrics, "metrocell_region_commits_total",
			  "Group commits of the regional store.", MC_METRIC_COUNTER, "")
		->value = (double)ss.commits;
	mc_metrics_series(g->metrics, "metrocell_region_skipped_entries_total",
			  "Replayed entries skipped because they were already applied.",
			  MC_METRIC_COUNTER, "")
		->value = (double)ss.skipped;
	mc_region_shield_metrics(g->shield, g->metrics);
	mc_region_fleet_metrics(g->fleet, g->metrics);
	mc_region_kv_metrics(g->kv);
	mc_region_fleetconf_metrics(g->fleetconf);
	mc_buf_fini(&l);
	return st;
}

static void status(region *g, mc_http_exchange *ex)
{
	size_t n;
	mc_repl_cell_stats *st = refresh(g, &n);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"region\":");
	mc_buf_append_json(&b, g->conf->region, strlen(g->conf->region));
	mc_buf_printf(&b, ",\"uptime_s\":%.3f,\"cells\":[",
		      (double)(mc_now_ns() - g->start_ns) / 1e9);
	for (size_t i = 0; i < n; i++) {
		mc_buf_append_str(&b, i ? ",{\"cell\":" : "{\"cell\":");
		mc_buf_append_json(&b, st[i].cell, strlen(st[i].cell));
		mc_buf_printf(&b,
			      ",\"connected\":%s,\"applied_seq\":%llu,\"applied_entries\":%llu,"
			      "\"last_frame_wall_ms\":%llu,\"lag_p50_ms\":%.3f,\"lag_p99_ms\":%.3f}",
			      st[i].connected ? "true" : "false",
			      (unsigned long long)st[i].applied_seq,
			      (unsigned long long)st[i].applied_entries,
			      (unsigned long long)st[i].last_frame_wall_ms,
			      (double)mc_hist_quantile(&st[i].lag_us, 0.5) / 1000.0,
			      (double)mc_hist_quantile(&st[i].lag_us, 0.99) / 1000.0);
	}
	mc_buf_append_str(&b, "]");
	mc_region_fleetconf_status(g->fleetconf, &b);
	mc_buf_append_str(&b, "}\n");
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, 200, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
	free(st);
}

static void on_request(void *ctx, mc_http_exchange *ex)
{
	region *g = ctx;
	const mc_http_request *req = mc_http_exchange_request(ex);
	if (mc_region_fleetconf_handle(g->fleetconf, ex))
		return;
	if (mc_region_fallback_handle(g->fallback, ex) || mc_region_shield_handle(g->shield, ex) ||
	    mc_region_cache_admin(g->shield, g->sink, ex) || mc_region_fleet_handle(g->fleet, ex))
		return;
	if (mc_region_kv_owns(req->path, req->path_len)) {
		mc_region_kv_handle(g->kv, ex);
		return;
	}
	if (strcmp(req->method, "GET") != 0) {
		mc_http_header allow = {"Allow", 5, "GET", 3};
		mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed", "GET only");
	} else if (strcmp(req->path, "/healthz") == 0) {
		mc_http_respond(ex, 200, NULL, 0, "ok\n", 3);
	} else if (strcmp(req->path, "/metrics") == 0) {
		size_t n;
		free(refresh(g, &n));
		mc_http_respond_metrics(ex, g->metrics);
	} else if (strcmp(req->path, "/v1/status") == 0) {
		status(g, ex);
	} else {
		mc_http_respond_error(ex, 404, NULL, 0, "not_found",
				      "endpoints: /v1/kv/{key}, /v1/kv:mget, /v1/status, /v1/fleet, "
				      "/v1/events, /metrics, /healthz");
	}
}

static void stop(region *g)
{
	if (g->stopping)
		return;
	g->stopping = 1;
	MC_INFO(COMP, "region %s stopping", g->conf->region);
	mc_region_fleetconf_free(g->fleetconf); /* answers the long polls first */
	g->fleetconf = NULL;
	mc_http_server_free(g->http);
	g->http = NULL;
	mc_region_fallback_free(g->fallback);
	g->fallback = NULL;
	mc_region_kv_fini(g->kv);
	mc_repl_sink_free(g->sink);
	g->sink = NULL;
	if (g->fleet)
		mc_region_fleet_attach(g->fleet, NULL);
	mc_region_shield_free(g->shield);
	g->shield = NULL;
	mc_store_close(g->store);
	g->store = NULL;
	mc_http_graceful_close(&g->graceful);
}

static void on_stop(void *arg)
{
	stop(arg);
}

/* Control-plane documents may be larger than limits.max_body_bytes. */
static size_t body_limit(void *ctx, const char *method, const char *path, size_t len)
{
	region *g = ctx;
	size_t n = mc_region_fleetconf_body_limit(method, path, len);
	return n ? n : g->conf->limits.max_body_bytes;
}

static int start(region *g)
{
	const mc_region_conf *cf = g->conf;
	char dir[4200];
	snprintf(dir, sizeof dir, "%s/state", cf->data_dir);
	mc_store_opts so;
	mc_store_opts_default(&so);
	so.dir = dir;
	so.map_size = (size_t)cf->state.map_size_mb << 20;
	so.durable = cf->state.durable;
	so.max_batch = cf->state.max_batch;
	so.linger_us = cf->state.commit_linger_us;
	so.home = cf->region; /* the home of what the region's own API writes */
	g->kv = mc_region_kv_new(g->loop, cf, g->metrics);
	mc_region_kv_store_opts(g->kv, &so);
	int rc = mc_store_open(&g->store, g->loop, &so);
	if (rc < 0) {
		fprintf(stderr, "metrocell region: cannot open the store in %s: %s\n", dir,
			mc_strerror(rc));
		return rc;
	}
	mc_repl_sink_opts ko;
	mc_repl_sink_opts_default(&ko);
	ko.heartbeat_ms = cf->repl.heartbeat_ms;
	ko.dead_after_ms = cf->repl.dead_after_ms;
	ko.allow_cells = (const char *const *)cf->cells;
	ko.n_allow_cells = cf->ncells;
	mc_region_kv_sink_opts(g->kv, &ko);
	mc_region_fleet_new(&g->fleet, cf);
	ko.on_telemetry = mc_region_fleet_on_telemetry;
	ko.on_events = mc_region_fleet_on_events;
	ko.obs_arg = g->fleet;
	rc = mc_repl_sink_new(&g->sink, g->loop, g->store, cf->listen_repl, &ko);
	if (rc < 0) {
		fprintf(stderr, "metrocell region: cannot listen on %s (listen.repl): %s\n",
			cf->listen_repl, mc_strerror(rc));
		return rc;
	}
	mc_region_fleet_attach(g->fleet, g->sink);
	if ((rc = mc_region_fallback_new(&g->fallback, g->loop, cf, g->metrics)) < 0)
		return rc;
	if ((rc = mc_region_shield_new(&g->shield, g->loop, cf)) < 0)
		return rc;
	mc_region_kv_start(g->kv, g->store, g->sink);
	rc = mc_region_fleetconf_new(&g->fleetconf, g->loop, cf, g->metrics, &g->graceful.draining);
	if (rc < 0)
		return rc;
	mc_http_server_opts ho;
	mc_http_server_opts_default(&ho);
	ho.max_header_bytes = cf->limits.max_header_bytes;
	ho.max_headers = cf->limits.max_headers;
	ho.max_body_bytes = cf->limits.max_body_bytes;
	ho.idle_timeout_ms = cf->limits.idle_timeout_ms;
	ho.request_timeout_ms = cf->limits.request_timeout_ms;
	ho.max_connections = cf->limits.max_connections;
	ho.header_timeout_ms = cf->limits.header_timeout_ms;
	ho.body_timeout_ms = cf->limits.body_timeout_ms;
	ho.body_min_rate = cf->limits.body_min_rate;
	ho.max_inflight = cf->limits.max_inflight;
	ho.body_limit = body_limit;
	rc = mc_http_server_new(&g->http, g->loop, cf->listen_http, &ho, on_request, g);
	if (rc < 0) {
		fprintf(stderr, "metrocell region: cannot listen on %s (listen.http): %s\n",
			cf->listen_http, mc_strerror(rc));
		return rc;
	}
	mc_http_graceful_start(&g->graceful, g->loop, g->http, cf->limits.drain_timeout_ms,
			       "region", on_stop, g);
	char hh[64], rh[64];
	uint16_t port;
	mc_parse_hostport(cf->listen_http, hh, sizeof hh, &port);
	mc_parse_hostport(cf->listen_repl, rh, sizeof rh, &port);
	printf("region %s ready http=%s:%u repl=%s:%u\n", cf->region, hh,
	       mc_http_server_port(g->http), rh, mc_repl_sink_port(g->sink));
	fflush(stdout);
	MC_INFO(COMP, "region %s serving http on %s, replication on %s", cf->region,
		cf->listen_http, cf->listen_repl);
	return 0;
}

int mc_region_main(int argc, char **argv)
{
	const char *path;
	if (mc_parse_config_arg(argc, argv, &path) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	region g;
	memset(&g, 0, sizeof g);
	char err[MC_CONFIG_ERR_MAX];
	if (mc_region_conf_load(path, &g.conf, err, sizeof err) < 0) {
		fprintf(stderr, "metrocell region: %s\n", err);
		return 2;
	}
	mc_log_setup(g.conf->log.level, g.conf->log.json);
	g.start_ns = mc_now_ns();
	g.metrics = mc_metrics_new();
	uv_loop_t loop;
	uv_loop_init(&loop);
	g.loop = &loop;
	int code = 0;
	mc_net_stop_signals_defer(1);
	if (start(&g) < 0) {
		code = 1;
		stop(&g);
	}
	mc_net_stop_signals_defer(0);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		MC_WARN(COMP, "event loop still had open handles at exit");
	mc_region_fleet_free(g.fleet);
	mc_region_kv_free(g.kv);
	mc_metrics_free(g.metrics);
	MC_INFO(COMP, "region %s stopped", g.conf->region);
	mc_region_conf_free(g.conf);
	return code;
}
