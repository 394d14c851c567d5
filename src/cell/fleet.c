/* The cell's side of the fleet config (docs/operations.md "Fleet config"):
 * boots from the last-known-good document (else the bootstrap routes), long-polls
 * the region for the version meant for this cell, validates it again with the
 * same validator as `ctl push`, swaps the snapshot atomically, persists it as
 * last-known-good and reports the applied version, or the rejection, to the
 * region, together with a one-second summary of its answers (requests, 5xx,
 * latency histogram) that staged rollouts judge a stage by. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/cell_int.h"
#include "net/digest.h"

#define COMP "config"
#define WATCH_PATH "/v1/config/watch"
#define REPORT_PATH "/v1/config/report"
#define WATCH_TIMEOUT_MS 40000 /* the region answers a watch within ~25 s */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define REPORT_EVERY_MS 1000
#define ERR_MAX 700

struct cell_fleet {
	cell *c;
	mc_http_pool *pool; /* to region.http; NULL without it */
	uv_timer_t watch_timer;
	uv_timer_t report_timer;
	int timers; /* timers initialised (closed at stop) */
	int stopping;
	int watching; /* a watch is in flight */
	uint32_t backoff_ms;
	uint64_t rng;
	uint64_t seen_version; /* last version received (applied or rejected) */
	uint64_t error_version;
	char error[ERR_MAX];	  /* why error_version was rejected ("" when none) */
	uint64_t last_contact_ms; /* wall ms of the last answer from the region */
	mc_fleet_conf *lkg;	  /* the last-known-good document until the boot uses it */
	mc_lkg_meta lkg_meta;
	int classes_pending; /* the served version's state_classes wait for a restart */
	/* answers since the last report */
	uint64_t win_requests, win_errors, win_start_ms;
	mc_hist *win_hist;
	mc_series *m_version, *m_age, *m_applied, *m_rejected, *m_watch_err, *m_lkg_ok, *m_lkg_err;
};

static void config_dir(const cell *c, char *out, size_t cap)
{
	snprintf(out, cap, "%s/config", c->conf->data_dir);
}

static mc_series *fseries(cell *c, const char *name, const char *help, mc_metric_type t,
			  const char *extra)
{
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, c->conf->cell);
	mc_buf_append_str(&l, "\"");
	if (extra) {
		mc_buf_append_str(&l, ",");
		mc_buf_append_str(&l, extra);
	}
	mc_series *s = mc_metrics_series(c->metrics, name, help, t, l.data);
	mc_buf_fini(&l);
	return s;
}

static void metrics_init(cell *c, cell_fleet *f)
{
	f->m_version = fseries(c, "metrocell_config_version",
			       "Fleet config version the cell serves (0: its bootstrap routes).",
			       MC_METRIC_GAUGE, NULL);
	f->m_age = fseries(c, "metrocell_config_age_seconds",
			   "Seconds since the region accepted the version the cell serves (since "
			   "the cell started, for its bootstrap routes).",
			   MC_METRIC_GAUGE, NULL);
	static const char ah[] = "Fleet config versions received from the region, by result.";
	f->m_applied = fseries(c, "metrocell_config_updates_total", ah, MC_METRIC_COUNTER,
			       "result=\"applied\"");
	f->m_rejected = fseries(c, "metrocell_config_updates_total", ah, MC_METRIC_COUNTER,
				"result=\"rejected\"");
	f->m_watch_err = fseries(c, "metrocell_config_watch_errors_total",
				 "Watch requests to the region that failed (then retried with "
				 "backoff).",
				 MC_METRIC_COUNTER, NULL);
	static const char lh[] = "Writes of the last-known-good config file, by result.";
	f->m_lkg_ok =
	    fseries(c, "metrocell_config_lkg_writes_total", lh, MC_METRIC_COUNTER, "result=\"ok\"");
	f->m_lkg_err = fseries(c, "metrocell_config_lkg_writes_total", lh, MC_METRIC_COUNTER,
			       "result=\"error\"");
}

/* ---- boot ------------------------------------------------------------------------------- */

/* Same rules, same order (state classes are compared as configured). */
static bool classes_same(const mc_class_rules_conf *a, const mc_class_rules_conf *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		const mc_class_rule_conf *x = &a->rules[i], *y = &b->rules[i];
		if (strcmp(x->prefix, y->prefix) != 0 || x->cls != y->cls ||
		    x->ack_region != y->ack_region || x->ack_timeout_ms != y->ack_timeout_ms ||
		    x->replica_max_staleness_ms != y->replica_max_staleness_ms ||
		    x->cache_ttl_ms != y->cache_ttl_ms ||
		    x->region_timeout_ms != y->region_timeout_ms)
			return false;
	}
	return true;
}

int mc_cell_fleet_load(cell *c)
{
	cell_fleet *f = mc_calloc(1, sizeof *f);
	c->fleet = f;
	f->c = c;
	f->win_hist = mc_alloc(sizeof *f->win_hist);
	mc_hist_init(f->win_hist);
	f->win_start_ms = mc_wall_ms();
	f->rng = (mc_now_ns() ^ (uint64_t)(uintptr_t)f) | 1;
	metrics_init(c, f);

	char dir[4200], err[MC_CONFIG_ERR_MAX + 300];
	config_dir(c, dir, sizeof dir);
	char *doc = NULL;
	size_t len = 0;
	int rc = mc_lkg_read(dir, &doc, &len, &f->lkg_meta, err, sizeof err);
	if (rc == 0 &&
	    mc_fleet_conf_parse("lkg.json", doc, len, c->conf, &f->lkg, err, sizeof err) < 0)
		rc = MC_ECONFIG;
	if (rc < 0 && rc != MC_ENOTFOUND)
		MC_WARN(COMP,
			"cell %s: last-known-good config not usable, using the bootstrap "
			"routes: %s",
			c->conf->cell, err);
	free(doc);
	if (f->lkg && f->lkg->has_classes) {
		/* the store opens with these: state classes change at a start only */
		mc_class_rules_fini(&c->conf->classes);
		c->conf->classes = f->lkg->dyn->classes;
		memset(&f->lkg->dyn->classes, 0, sizeof f->lkg->dyn->classes);
	}
	return 0;
}

int mc_cell_fleet_boot(cell *c)
{
	cell_fleet *f = c->fleet;
	char err[MC_CONFIG_ERR_MAX + 300];
	cell_snapshot *s = NULL;
	if (f->lkg) {
		mc_fleet_conf *fc = f->lkg;
		f->lkg = NULL;
		if (mc_cell_snapshot_new(c, fc, &s, err, sizeof err) == 0) {
			const mc_lkg_meta *meta = &f->lkg_meta;
			s->version = meta->version;
			memcpy(s->sha256, meta->sha256, sizeof s->sha256);
			s->accepted_ms = meta->accepted_ms;
			s->source = "lkg";
			MC_INFO(COMP,
				"cell %s: booting from last-known-good config version %" PRIu64
				" (sha256 %.12s..., accepted %.0f s ago)",
				c->conf->cell, meta->version, meta->sha256,
				(double)(mc_wall_ms() - MC_MIN(meta->accepted_ms, mc_wall_ms())) /
				    1000.0);
		} else {
			MC_WARN(COMP,
				"cell %s: last-known-good config not usable, using the "
				"bootstrap routes: %s",
				c->conf->cell, err);
		}
	}
	if (!s) {
		int rc = mc_cell_snapshot_new(c, NULL, &s, err, sizeof err);
		if (rc < 0) {
			fprintf(stderr, "metrocell cell: %s: %s\n", c->conf->path, err);
			return rc;
		}
	}
	f->seen_version = s->version;
	mc_cell_snapshot_install(c, s);
	return 0;
}

/* ---- reports ---------------------------------------------------------------------------- */

static void on_report_answer(void *arg, int err, const mc_http_response *res)
{
	cell_fleet *f = arg;
	(void)res;
	if (err == MC_ECANCELED)
		return;
	if (err == 0)
		f->last_contact_ms = mc_wall_ms();
}

/* Sends the applied version, the last rejection and the answers counted since
 * the previous report (the window restarts whether or not it arrives). */
static void report_send(cell_fleet *f)
{
	cell *c = f->c;
	if (!f->pool || f->stopping || !c->snap)
		return;
	cell_snapshot *s = c->snap;
	mc_buf b;
	mc_buf_init(&b);
	uint64_t now = mc_wall_ms();
	mc_buf_append_str(&b, "{\"cell\":");
	mc_buf_append_json(&b, c->conf->cell, strlen(c->conf->cell));
	mc_buf_printf(&b, ",\"version\":%" PRIu64 ",\"sha256\":\"%s\",\"source\":\"%s\"",
		      s->version, s->sha256, s->source);
	if (f->error[0]) {
		mc_buf_printf(&b, ",\"error_version\":%" PRIu64 ",\"error\":", f->error_version);
		mc_buf_append_json(&b, f->error, strlen(f->error));
	}
	mc_cell_obs_lock(c);
	mc_buf_printf(&b,
		      ",\"window\":{\"ms\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"errors\":%" PRIu64
		      ",\"hist\":[",
		      now > f->win_start_ms ? now - f->win_start_ms : 0, f->win_requests,
		      f->win_errors);
	size_t n = 0;
	for (size_t i = 0; i < MC_HIST_BUCKETS && f->win_hist->count; i++) {
		if (!f->win_hist->buckets[i])
			continue;
		mc_buf_printf(&b, "%s[%zu,%" PRIu64 "]", n++ ? "," : "", i,
			      f->win_hist->buckets[i]);
	}
	mc_buf_append_str(&b, "]}}");
	f->win_requests = f->win_errors = 0;
	mc_hist_init(f->win_hist);
	mc_cell_obs_unlock(c);
	f->win_start_ms = now;
	static const mc_http_header h[] = {{"Content-Type", 12, "application/json", 16}};
	mc_http_pool_request(f->pool, "POST", REPORT_PATH, h, 1, b.data, b.len, on_report_answer,
			     f);
	mc_buf_fini(&b);
}

static void on_report_timer(uv_timer_t *t)
{
	cell_fleet *f = t->data;
	/* while the watch fails the region is unreachable: no connection attempt
	 * every second (the window keeps counting until a report goes out) */
	if (f->backoff_ms == 0)
		report_send(f);
}

void mc_cell_fleet_observe(cell *c, int status, uint64_t latency_us)
{
	cell_fleet *f = c->fleet;
	if (!f)
		return;
	/* the caller holds mc_cell_obs_lock() */
	f->win_requests++;
	if (status >= 500 && status <= 599)
		f->win_errors++;
	mc_hist_record(f->win_hist, latency_us);
}

/* ---- applying a version ------------------------------------------------------------------- */

static void reject(cell_fleet *f, uint64_t version, const char *why)
{
	cell *c = f->c;
	snprintf(f->error, sizeof f->error, "%s", why);
	f->error_version = version;
	f->m_rejected->value += 1;
	mc_cell_event(c, "config_rejected", "u:version", version, "s:error", why, NULL);
	MC_ERROR(COMP,
		 "cell %s: config version %" PRIu64 " rejected, keeping version %" PRIu64 ": %s",
		 c->conf->cell, version, c->snap ? c->snap->version : 0, why);
	report_send(f);
}

static void apply(cell_fleet *f, const mc_http_response *res, uint64_t version, const char *sha,
		  uint64_t accepted_ms)
{
	cell *c = f->c;
	char err[MC_CONFIG_ERR_MAX + 200], got[65];
	f->seen_version = version;
	if (mc_net_sha256_hex(res->body ? res->body : "", res->body_len, got) < 0 ||
	    strcmp(got, sha) != 0) {
		snprintf(err, sizeof err,
			 "checksum mismatch: the region announced sha256 %s, the "
			 "document received has %s",
			 sha, got);
		reject(f, version, err);
		return;
	}
	mc_fleet_conf *fc = NULL;
	cell_snapshot *s = NULL;
	if (mc_fleet_conf_parse("fleet.json", res->body, res->body_len, c->conf, &fc, err,
				sizeof err) < 0 ||
	    mc_cell_snapshot_new(c, fc, &s, err, sizeof err) < 0) {
		reject(f, version, err);
		return;
	}
	if (s->fleet->has_ticket_keys &&
	    mc_cell_tls_set_ticket_keys(c, &s->fleet->ticket_keys, err, sizeof err) < 0) {
		mc_cell_snapshot_unref(s);
		char why[sizeof err + 40];
		snprintf(why, sizeof why, "tls_ticket_keys: %s", err);
		reject(f, version, why);
		return;
	}
	s->version = version;
	memcpy(s->sha256, sha, 65);
	s->accepted_ms = accepted_ms;
	s->source = "region";
	mc_cell_snapshot_install(c, s);
	f->classes_pending =
	    s->fleet->has_classes && !classes_same(&s->fleet->dyn->classes, &c->conf->classes);
	if (f->classes_pending)
		MC_WARN(COMP,
			"cell %s: config version %" PRIu64 " changes state_classes: they take "
			"effect at the cell's next start",
			c->conf->cell, version);
	f->error[0] = '\0';
	f->m_applied->value += 1;
	/* persisted after the swap: a failing disk must not keep the fleet's config
	 * from serving, it only loses static stability (counted, logged) */
	char dir[4200];
	config_dir(c, dir, sizeof dir);
	mc_lkg_meta meta = {.version = version, .accepted_ms = accepted_ms};
	memcpy(meta.sha256, sha, 65);
	int rc = mc_lkg_write(dir, res->body ? res->body : "", res->body_len, &meta);
	if (rc < 0) {
		f->m_lkg_err->value += 1;
		MC_ERROR(COMP, "cell %s: cannot write the last-known-good config in %s: %s",
			 c->conf->cell, dir, mc_strerror(rc));
	} else {
		f->m_lkg_ok->value += 1;
	}
	report_send(f);
}

/* ---- watching ----------------------------------------------------------------------------- */

static void watch_send(cell_fleet *f);

static void on_watch_timer(uv_timer_t *t)
{
	watch_send(t->data);
}

static void watch_later(cell_fleet *f)
{
	f->backoff_ms =
	    f->backoff_ms ? MC_MIN(f->backoff_ms * 2, (uint32_t)BACKOFF_MAX_MS) : BACKOFF_MIN_MS;
	/* +-25 % so cells cut off together do not come back in step */
	f->rng ^= f->rng << 13;
	f->rng ^= f->rng >> 7;
	f->rng ^= f->rng << 17;
	uint32_t spread = f->backoff_ms / 2;
	uint32_t delay = f->backoff_ms - spread / 2 + (uint32_t)(f->rng % (spread + 1));
	uv_timer_start(&f->watch_timer, on_watch_timer, delay, 0);
}

static uint64_t header_u64(const mc_http_response *res, const char *name, int *ok)
{
	size_t n;
	const char *v = mc_http_header_find(res->headers, res->nheaders, name, &n);
	uint64_t x = 0;
	if (!v || mc_parse_u64(v, n, UINT64_MAX, &x) != 0)
		*ok = 0;
	return x;
}

static void on_watch_answer(void *arg, int err, const mc_http_response *res)
{
	cell_fleet *f = arg;
	f->watching = 0;
	if (err == MC_ECANCELED || f->stopping)
		return;
	cell *c = f->c;
	if (err < 0 || (res->status != 200 && res->status != 204)) {
		f->m_watch_err->value += 1;
		if (f->backoff_ms == 0 || f->backoff_ms >= BACKOFF_MAX_MS)
			MC_INFO(COMP, "cell %s: watching the region's config at %s: %s",
				c->conf->cell, c->conf->region_http,
				err < 0 ? mc_strerror(err) : mc_http_reason(res->status));
		watch_later(f);
		return;
	}
	f->last_contact_ms = mc_wall_ms();
	f->backoff_ms = 0;
	if (res->status == 200) {
		int ok = 1;
		uint64_t version = header_u64(res, "x-metrocell-config-version", &ok);
		uint64_t accepted = header_u64(res, "x-metrocell-config-accepted-ms", &ok);
		size_t sl = 0;
		const char *sha = mc_http_header_find(res->headers, res->nheaders,
						      "x-metrocell-config-sha256", &sl);
		if (!ok || !sha || sl != 64) {
			f->m_watch_err->value += 1;
			MC_WARN(COMP, "cell %s: region answered a watch without version headers",
				c->conf->cell);
			watch_later(f);
			return;
		}
		char shabuf[65];
		memcpy(shabuf, sha, 64);
		shabuf[64] = '\0';
		apply(f, res, version, shabuf, accepted);
	}
	watch_send(f);
}

static void watch_send(cell_fleet *f)
{
	if (f->stopping || f->watching || !f->pool)
		return;
	char target[128];
	snprintf(target, sizeof target, WATCH_PATH "?cell=%s&after=%" PRIu64, f->c->conf->cell,
		 f->seen_version);
	int rc = mc_http_pool_request(f->pool, "GET", target, NULL, 0, NULL, 0, on_watch_answer, f);
	if (rc < 0) {
		f->m_watch_err->value += 1;
		watch_later(f);
		return;
	}
	f->watching = 1;
}

void mc_cell_fleet_start(cell *c)
{
	cell_fleet *f = c->fleet;
	if (!f)
		return;
	if (c->snap && c->snap->fleet && c->snap->fleet->has_ticket_keys) {
		char err[512];
		if (mc_cell_tls_set_ticket_keys(c, &c->snap->fleet->ticket_keys, err, sizeof err) <
		    0)
			MC_ERROR(COMP, "cell %s: ticket keys of config version %" PRIu64 ": %s",
				 c->conf->cell, c->snap->version, err);
	}
	if (!c->conf->region_http) {
		MC_INFO(COMP,
			"cell %s: no region.http: serving config version %" PRIu64
			" without watching the fleet config",
			c->conf->cell, c->snap ? c->snap->version : 0);
		return;
	}
	mc_http_pool_opts o;
	mc_http_pool_opts_default(&o);
	o.max_conns = 4;
	o.max_idle = 4;
	o.request_timeout_ms = WATCH_TIMEOUT_MS;
	o.max_response_bytes = MC_FLEET_MAX_BYTES + (64u << 10);
	o.max_queue = 16;
	if (mc_http_pool_new(&f->pool, c->loop, c->conf->region_http, &o) < 0)
		return; /* the config validated the address */
	uv_timer_init(c->loop, &f->watch_timer);
	uv_timer_init(c->loop, &f->report_timer);
	f->watch_timer.data = f;
	f->report_timer.data = f;
	f->timers = 1;
	uv_timer_start(&f->report_timer, on_report_timer, REPORT_EVERY_MS, REPORT_EVERY_MS);
	report_send(f);
	watch_send(f);
}

static void on_fleet_closed(uv_handle_t *h)
{
	cell_fleet *f = h->data;
	if (--f->timers == 0) {
		free(f->win_hist);
		free(f);
	}
}

void mc_cell_fleet_stop(cell *c)
{
	cell_fleet *f = c->fleet;
	if (!f)
		return;
	/* other threads read c->fleet under the lock (mc_cell_fleet_observe) */
	mc_cell_obs_lock(c);
	c->fleet = NULL;
	mc_cell_obs_unlock(c);
	f->stopping = 1;
	mc_fleet_conf_free(f->lkg);
	f->lkg = NULL;
	mc_http_pool_free(f->pool); /* cancels the watch and the reports */
	f->pool = NULL;
	if (f->timers) {
		f->timers = 2;
		uv_close((uv_handle_t *)&f->watch_timer, on_fleet_closed);
		uv_close((uv_handle_t *)&f->report_timer, on_fleet_closed);
	} else {
		free(f->win_hist);
		free(f);
	}
}

/* ---- status and metrics ----------------------------------------------------------------- */

static double age_s(const cell *c, const cell_snapshot *s)
{
	uint64_t now = mc_wall_ms();
	if (s->accepted_ms)
		return now > s->accepted_ms ? (double)(now - s->accepted_ms) / 1000.0 : 0.0;
	return (double)(mc_now_ns() - c->start_ns) / 1e9;
}

void mc_cell_fleet_metrics(cell *c)
{
	cell_fleet *f = c->fleet;
	if (!f || !c->snap)
		return;
	f->m_version->value = (double)c->snap->version;
	f->m_age->value = age_s(c, c->snap);
}

void mc_cell_fleet_status(cell *c, mc_buf *b)
{
	cell_snapshot *s = c->snap;
	cell_fleet *f = c->fleet;
	if (!s)
		return;
	mc_buf_printf(b,
		      ",\"config\":{\"version\":%" PRIu64 ",\"sha256\":\"%s\",\"source\":\"%s\","
		      "\"accepted_ms\":%" PRIu64 ",\"applied_ms\":%" PRIu64
		      ",\"age_s\":%.3f,\"routes\":[",
		      s->version, s->sha256, s->source, s->accepted_ms, s->applied_ms, age_s(c, s));
	for (size_t i = 0; i < s->nroutes; i++) {
		mc_buf_append_str(b, i ? "," : "");
		mc_buf_append_json(b, s->routes[i].conf->name, strlen(s->routes[i].conf->name));
	}
	mc_buf_append_str(b, "],\"auth_keys\":[");
	for (size_t i = 0; s->fleet && i < s->fleet->nauth_keys; i++) {
		const mc_auth_key_conf *k = &s->fleet->auth_keys[i];
		mc_buf_append_str(b, i ? ",{\"kid\":" : "{\"kid\":");
		mc_buf_append_json(b, k->kid, strlen(k->kid));
		mc_buf_printf(b, ",\"alg\":\"%s\",\"status\":\"%s\"}", k->alg,
			      mc_key_status_names[k->status]);
	}
	mc_buf_printf(b, "],\"ticket_keys\":%zu",
		      s->fleet && s->fleet->has_ticket_keys ? s->fleet->ticket_keys.n : 0);
	mc_buf_printf(b, ",\"ticket_key_names\":[");
	for (size_t i = 0; s->fleet && s->fleet->has_ticket_keys && i < s->fleet->ticket_keys.n;
	     i++) {
		char hex[2 * MC_TICKET_NAME_LEN + 1];
		for (size_t k = 0; k < MC_TICKET_NAME_LEN; k++)
			snprintf(hex + 2 * k, 3, "%02x", s->fleet->ticket_keys.keys[i].name[k]);
		mc_buf_printf(b, "%s\"%s\"", i ? "," : "", hex);
	}
	mc_buf_append_str(b, "]");
	mc_cell_threads_versions(c, b);
	if (f)
		mc_buf_printf(b, ",\"state_classes_pending_restart\":%s",
			      f->classes_pending ? "true" : "false");
	if (f) {
		mc_buf_printf(b, ",\"watching\":%s,\"last_contact_ms\":%" PRIu64,
			      f->pool ? "true" : "false", f->last_contact_ms);
		if (f->error[0]) {
			mc_buf_printf(b, ",\"last_error\":{\"version\":%" PRIu64 ",\"message\":",
				      f->error_version);
			mc_buf_append_json(b, f->error, strlen(f->error));
			mc_buf_append_str(b, "}");
		} else {
			mc_buf_append_str(b, ",\"last_error\":null");
		}
	}
	mc_buf_append_str(b, "}");
}
