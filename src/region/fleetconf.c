/* The region's control plane for the fleet config (DESIGN.md section 6,
 * docs/operations.md "Fleet config", docs/protocol.md "Control plane"): keeps
 * every accepted version durably in data_dir/config (number, SHA-256, the
 * document), validates pushes in full, answers the cells' long polls with the
 * version each cell should run (staged rollouts decide it per cell), tracks the
 * version each cell applied and its one-second answer summaries, drives
 * rollouts (apply, bake, judge, next stage or halt and roll back) and key
 * rotations (publish, activate once every cell has the key, retire after the
 * overlap). Rollout and rotation state are persisted so another process (ctl)
 * sees them and a restarted region resumes them. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "net/digest.h"
#include "region/region_int.h"

#define COMP "fleet"
#define KEEP_VERSIONS 32    /* versions kept on disk and in memory (+ those in use) */
#define WATCH_HOLD_MS 25000 /* a long poll with nothing new answers 204 after this */
#define APPLIED_WAIT_MAX_MS 60000
#define TICK_MS 100
#define RING 64 /* one-second windows kept per cell (the rollout baseline) */
#define FLEET_CELLS_MAX 256
#define REPORT_ERROR_MAX 1000
#define BASELINE_MIN_MS 10000
#define BASELINE_MAX_MS 60000

typedef struct fversion {
	uint64_t version;
	char sha256[65];
	uint64_t accepted_ms;
	char *doc;
	size_t len;
	char **cells; /* the document's "cells" keys */
	size_t ncells;
} fversion;

typedef struct fwindow {
	uint64_t recv_ms, requests, errors;
	uint32_t npairs;
	uint32_t *idx;
	uint64_t *cnt;
} fwindow;

typedef struct fcell {
	char name[32];
	uint64_t applied_version;
	char applied_sha[65];
	char source[16];
	uint64_t applied_at_ms; /* wall ms the region learnt applied_version */
	uint64_t error_version;
	char *error;
	uint64_t last_report_ms;
	uint64_t last_watch_ms;
	fwindow ring[RING];
	size_t ring_at;
	uint64_t cum_requests, cum_errors;
	mc_hist *cum_hist;
	uint64_t snap_requests, snap_errors; /* cum at the start of a bake */
	mc_hist *snap_hist;
	mc_series *m_applied;
} fcell;

typedef struct fwatch {
	struct fwatch *next;
	struct region_fleetconf *f;
	mc_http_exchange *ex;
	char cell[32];
	uint64_t after;
	uint64_t deadline_ms; /* monotonic */
	int applied_wait;     /* GET /v1/config/applied (else a watch) */
	uint64_t version;     /* applied_wait: the version waited for */
} fwatch;

enum { RO_NONE = 0, RO_RUNNING, RO_BAKING, RO_DONE, RO_HALTED, RO_ABORTED };
static const char *const RO_NAMES[] = {"none", "running", "baking", "done", "halted", "aborted"};

typedef struct fstage_result {
	int judged;
	mc_rollout_sample before, after;
	int verdict;
	char why[400];
} fstage_result;

typedef struct frollout {
	int state;
	uint64_t from, to;
	mc_rollout_stage *stages;
	size_t nstages;
	size_t stage;
	mc_rollout_conf t; /* thresholds (its stages unused) */
	uint64_t started_ms, stage_started_ms, applied_ms, bake_until_ms, ended_ms;
	char why[700];
	fstage_result *results;
} frollout;

enum { ROT_NONE = 0, ROT_PUBLISHING, ROT_OVERLAP, ROT_DONE, ROT_FAILED };
static const char *const ROT_NAMES[] = {"none", "publishing", "overlap", "done", "failed"};

typedef struct frotation {
	int phase;
	int kind;
	char id[80], old_id[80];
	uint64_t published_version, activated_version, retired_version;
	uint64_t overlap_ms;
	uint64_t started_ms, activated_ms, retire_at_ms, ended_ms;
	char why[500];
} frotation;

struct region_fleetconf {
	uv_loop_t *loop;
	const mc_region_conf *cf;
	mc_metrics *metrics;
	const int *draining;
	char dir[4200];
	fversion *v; /* ascending */
	size_t nv;
	fcell **cells;
	size_t ncells;
	fwatch *watches;
	frollout ro;
	frotation rot;
	uv_timer_t tick;
	uint64_t pushes_ok, pushes_rejected;
};

static void drive(region_fleetconf *f);

/* ---- small helpers ------------------------------------------------------------------------ */

static bool cell_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 31)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* The decoded value of query parameter name into out (cap bytes). 1 found, 0
 * absent, -1 malformed or too long. */
static int qparam(const char *query, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = query;
	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t seg = amp ? (size_t)(amp - p) : strlen(p);
		if (seg > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			mc_buf b;
			mc_buf_init(&b);
			int rc = mc_http_percent_decode(p + nl + 1, seg - nl - 1, &b);
			if (rc < 0 || b.len >= cap) {
				mc_buf_fini(&b);
				return -1;
			}
			memcpy(out, b.data ? b.data : "", b.len);
			out[b.len] = '\0';
			mc_buf_fini(&b);
			return 1;
		}
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

static int qparam_u64(const char *query, const char *name, uint64_t max, uint64_t *out)
{
	char buf[32];
	int rc = qparam(query, name, buf, sizeof buf);
	if (rc <= 0)
		return rc;
	return mc_parse_u64(buf, strlen(buf), max, out) == 0 ? 1 : -1;
}

static void respond_json(mc_http_exchange *ex, int status, mc_buf *b)
{
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	mc_http_respond(ex, status, &ct, 1, b->data, b->len);
}

static const fversion *latest(const region_fleetconf *f)
{
	return f->nv ? &f->v[f->nv - 1] : NULL;
}

static const fversion *find_version(const region_fleetconf *f, uint64_t v)
{
	for (size_t i = 0; i < f->nv; i++)
		if (f->v[i].version == v)
			return &f->v[i];
	return NULL;
}

static fcell *cell_find(region_fleetconf *f, const char *name)
{
	for (size_t i = 0; i < f->ncells; i++)
		if (strcmp(f->cells[i]->name, name) == 0)
			return f->cells[i];
	return NULL;
}

/* The cell's record, created on first sight (NULL beyond FLEET_CELLS_MAX). */
static fcell *cell_get(region_fleetconf *f, const char *name)
{
	fcell *c = cell_find(f, name);
	if (c || f->ncells >= FLEET_CELLS_MAX)
		return c;
	c = mc_calloc(1, sizeof *c);
	snprintf(c->name, sizeof c->name, "%s", name);
	snprintf(c->source, sizeof c->source, "unknown");
	f->cells = mc_realloc(f->cells, (f->ncells + 1) * sizeof *f->cells);
	f->cells[f->ncells++] = c;
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, name);
	mc_buf_append_str(&l, "\"");
	c->m_applied = mc_metrics_series(f->metrics, "metrocell_fleet_config_applied_version",
					 "Fleet config version each cell last reported as applied.",
					 MC_METRIC_GAUGE, l.data);
	mc_buf_fini(&l);
	return c;
}

static bool allowed_cell(const region_fleetconf *f, const char *name)
{
	if (f->cf->ncells == 0)
		return true;
	for (size_t i = 0; i < f->cf->ncells; i++)
		if (strcmp(f->cf->cells[i], name) == 0)
			return true;
	return false;
}

/* The cells a push must reach: the latest document's "cells", else the
 * region's bootstrap "cells", else every cell that has reported. */
static size_t targets(const region_fleetconf *f, const char **out, size_t cap)
{
	const fversion *l = latest(f);
	size_t n = 0;
	if (l && l->ncells) {
		for (size_t i = 0; i < l->ncells && n < cap; i++)
			out[n++] = l->cells[i];
	} else if (f->cf->ncells) {
		for (size_t i = 0; i < f->cf->ncells && n < cap; i++)
			out[n++] = f->cf->cells[i];
	} else {
		for (size_t i = 0; i < f->ncells && n < cap; i++)
			out[n++] = f->cells[i]->name;
	}
	return n;
}

/* ---- version store ------------------------------------------------------------------------- */

static void version_fini(fversion *v)
{
	free(v->doc);
	for (size_t i = 0; i < v->ncells; i++)
		free(v->cells[i]);
	free(v->cells);
	memset(v, 0, sizeof *v);
}

/* The keys of the document's "cells" (it was validated when accepted). */
static void version_cells(fversion *v)
{
	json_t *root = json_loadb(v->doc, v->len, 0, NULL);
	json_t *cells = root ? json_object_get(root, "cells") : NULL;
	if (json_is_object(cells) && json_object_size(cells) > 0) {
		v->cells = mc_calloc(json_object_size(cells), sizeof *v->cells);
		const char *k;
		json_t *val;
		json_object_foreach(cells, k, val)
		{
			(void)val;
			v->cells[v->ncells++] = mc_strdup(k);
		}
	}
	json_decref(root);
}

static void file_names(uint64_t version, char *doc, char *meta, size_t cap)
{
	snprintf(doc, cap, "v%020" PRIu64 ".json", version);
	snprintf(meta, cap, "v%020" PRIu64 ".meta", version);
}

static bool version_in_use(const region_fleetconf *f, uint64_t v)
{
	const frollout *r = &f->ro;
	if (r->state != RO_NONE && (r->from == v || r->to == v))
		return true;
	return false;
}

static void prune(region_fleetconf *f)
{
	while (f->nv > KEEP_VERSIONS) {
		size_t i;
		for (i = 0; i + 1 < f->nv && version_in_use(f, f->v[i].version); i++)
			;
		if (i + 1 >= f->nv || f->nv - 1 < KEEP_VERSIONS)
			return;
		char dn[64], mn[64], p[4300];
		file_names(f->v[i].version, dn, mn, sizeof dn);
		snprintf(p, sizeof p, "%s/%s", f->dir, mn);
		unlink(p);
		snprintf(p, sizeof p, "%s/%s", f->dir, dn);
		unlink(p);
		version_fini(&f->v[i]);
		memmove(&f->v[i], &f->v[i + 1], (f->nv - i - 1) * sizeof *f->v);
		f->nv--;
	}
}

/* Persists doc as the next version: the document, then its meta file (the
 * commit point: a version without its meta file does not exist). */
static int store_version(region_fleetconf *f, const char *doc, size_t len, const char *sha,
			 uint64_t *out)
{
	const fversion *l = latest(f);
	uint64_t version = (l ? l->version : 0) + 1;
	uint64_t now = mc_wall_ms();
	char dn[64], mn[64];
	file_names(version, dn, mn, sizeof dn);
	int rc = mc_file_write_atomic(f->dir, dn, doc, len, 0);
	if (rc == 0) {
		char meta[256];
		int n = snprintf(meta, sizeof meta,
				 "{\"version\":%" PRIu64
				 ",\"sha256\":\"%s\",\"accepted_ms\":%" PRIu64 ",\"bytes\":%zu}\n",
				 version, sha, now, len);
		rc = mc_file_write_atomic(f->dir, mn, meta, (size_t)n, 1);
	}
	if (rc < 0) {
		MC_ERROR(COMP, "cannot store fleet config version %" PRIu64 " in %s: %s", version,
			 f->dir, mc_strerror(rc));
		return rc;
	}
	f->v = mc_realloc(f->v, (f->nv + 1) * sizeof *f->v);
	fversion *v = &f->v[f->nv++];
	memset(v, 0, sizeof *v);
	v->version = version;
	memcpy(v->sha256, sha, 65);
	v->accepted_ms = now;
	v->doc = mc_alloc(len + 1);
	memcpy(v->doc, doc, len);
	v->doc[len] = '\0';
	v->len = len;
	version_cells(v);
	*out = version;
	mc_metrics_series(f->metrics, "metrocell_fleet_config_latest_version",
			  "Latest fleet config version the region accepted.", MC_METRIC_GAUGE, "")
	    ->value = (double)version;
	prune(f);
	return 0;
}

static int version_cmp(const void *a, const void *b)
{
	const fversion *x = a, *y = b;
	return x->version < y->version ? -1 : x->version > y->version;
}

/* Loads every version whose meta file and document agree (sha256); others are
 * skipped with a warning (a crash between the two writes leaves a document
 * without meta: never accepted). */
static int load_versions(region_fleetconf *f)
{
	DIR *d = opendir(f->dir);
	if (!d)
		return -errno;
	struct dirent *e;
	while ((e = readdir(d))) {
		unsigned long long ver;
		char tail[8];
		if (sscanf(e->d_name, "v%20llu.%5s", &ver, tail) != 2 || strcmp(tail, "meta") != 0)
			continue;
		char path[4600], *meta = NULL, *doc = NULL, sha[65];
		size_t ml, dl;
		snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
		if (mc_file_read(path, 4096, &meta, &ml) < 0)
			continue;
		json_t *m = json_loads(meta, 0, NULL);
		free(meta);
		const char *msha = m ? json_string_value(json_object_get(m, "sha256")) : NULL;
		json_int_t acc = m ? json_integer_value(json_object_get(m, "accepted_ms")) : 0;
		char dn[64], mn[64];
		file_names(ver, dn, mn, sizeof dn);
		snprintf(path, sizeof path, "%s/%s", f->dir, dn);
		if (!msha || mc_file_read(path, MC_FLEET_MAX_BYTES, &doc, &dl) < 0 ||
		    mc_net_sha256_hex(doc, dl, sha) < 0 || strcmp(sha, msha) != 0) {
			MC_WARN(COMP,
				"fleet config version %llu in %s is damaged (meta or checksum); "
				"skipped",
				ver, f->dir);
			free(doc);
			json_decref(m);
			continue;
		}
		f->v = mc_realloc(f->v, (f->nv + 1) * sizeof *f->v);
		fversion *v = &f->v[f->nv++];
		memset(v, 0, sizeof *v);
		v->version = ver;
		memcpy(v->sha256, sha, 65);
		v->accepted_ms = (uint64_t)acc;
		v->doc = doc;
		v->len = dl;
		version_cells(v);
		json_decref(m);
	}
	closedir(d);
	if (f->nv > 1)
		qsort(f->v, f->nv, sizeof *f->v, version_cmp);
	return 0;
}

/* ---- rollout state ------------------------------------------------------------------------ */

static bool rollout_active(const region_fleetconf *f)
{
	return f->ro.state == RO_RUNNING || f->ro.state == RO_BAKING;
}

static size_t stage_of(const frollout *r, const char *cell)
{
	for (size_t i = 0; i < r->nstages; i++)
		for (size_t k = 0; k < r->stages[i].ncells; k++)
			if (strcmp(r->stages[i].cells[k], cell) == 0)
				return i;
	return r->nstages; /* unlisted cells follow the last stage */
}

/* The version cell should run (0: none yet). */
static uint64_t desired(const region_fleetconf *f, const char *cell)
{
	const fversion *l = latest(f);
	if (!l)
		return 0;
	const frollout *r = &f->ro;
	if (r->state == RO_NONE || r->state == RO_DONE || r->to != l->version)
		return l->version;
	size_t st = stage_of(r, cell);
	if (r->state == RO_RUNNING || r->state == RO_BAKING)
		return st <= r->stage ? r->to : r->from;
	/* halted: the stages before the one that regressed keep the new version;
	 * aborted: every cell goes back */
	return r->state == RO_HALTED && st < r->stage ? r->to : r->from;
}

static void rollout_clear(frollout *r)
{
	mc_rollout_stages_free(r->stages, r->nstages);
	free(r->results);
	memset(r, 0, sizeof *r);
}

static void sample_json(mc_buf *b, const mc_rollout_sample *s)
{
	mc_buf_printf(
	    b,
	    "{\"requests\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"error_rate\":%.6f,\"p95_ms\":%.3f}",
	    s->requests, s->errors, s->requests ? (double)s->errors / (double)s->requests : 0.0,
	    (double)s->p95_us / 1000.0);
}

static void rollout_json(const region_fleetconf *f, mc_buf *b)
{
	const frollout *r = &f->ro;
	mc_buf_printf(b,
		      "{\"state\":\"%s\",\"from\":%" PRIu64 ",\"to\":%" PRIu64
		      ",\"stage\":%zu,\"nstages\":%zu,\"stages\":[",
		      RO_NAMES[r->state], r->from, r->to, r->stage, r->nstages);
	for (size_t i = 0; i < r->nstages; i++) {
		mc_buf_append_str(b, i ? ",[" : "[");
		for (size_t k = 0; k < r->stages[i].ncells; k++) {
			mc_buf_append_str(b, k ? "," : "");
			mc_buf_append_json(b, r->stages[i].cells[k], strlen(r->stages[i].cells[k]));
		}
		mc_buf_append_str(b, "]");
	}
	mc_buf_printf(b,
		      "],\"bake_ms\":%u,\"apply_timeout_ms\":%u,\"min_requests\":%u,"
		      "\"max_error_rate_increase_pct\":%g,\"max_error_rate_ratio\":%g,"
		      "\"max_p95_ratio\":%g,\"p95_slack_ms\":%u,\"started_ms\":%" PRIu64
		      ",\"stage_started_ms\":%" PRIu64 ",\"applied_ms\":%" PRIu64
		      ",\"bake_until_ms\":%" PRIu64 ",\"ended_ms\":%" PRIu64 ",\"why\":",
		      r->t.bake_ms, r->t.apply_timeout_ms, r->t.min_requests,
		      r->t.max_error_rate_increase_pct, r->t.max_error_rate_ratio,
		      r->t.max_p95_ratio, r->t.p95_slack_ms, r->started_ms, r->stage_started_ms,
		      r->applied_ms, r->bake_until_ms, r->ended_ms);
	mc_buf_append_json(b, r->why, strlen(r->why));
	mc_buf_append_str(b, ",\"results\":[");
	for (size_t i = 0; i < r->nstages; i++) {
		const fstage_result *s = &r->results[i];
		mc_buf_printf(b, "%s{\"judged\":%s,\"verdict\":\"%s\",\"before\":", i ? "," : "",
			      s->judged ? "true" : "false",
			      !s->judged			   ? "pending"
			      : s->verdict == MC_ROLLOUT_PASS	   ? "pass"
			      : s->verdict == MC_ROLLOUT_REGRESSED ? "regressed"
								   : "not_judged");
		sample_json(b, &s->before);
		mc_buf_append_str(b, ",\"after\":");
		sample_json(b, &s->after);
		mc_buf_append_str(b, ",\"why\":");
		mc_buf_append_json(b, s->why, strlen(s->why));
		mc_buf_append_str(b, "}");
	}
	mc_buf_append_str(b, "]}");
}

static void rollout_save(region_fleetconf *f)
{
	mc_buf b;
	mc_buf_init(&b);
	rollout_json(f, &b);
	mc_buf_append_str(&b, "\n");
	int rc = mc_file_write_atomic(f->dir, "rollout.json", b.data, b.len, 1);
	if (rc < 0)
		MC_ERROR(COMP, "cannot persist the rollout state in %s: %s", f->dir,
			 mc_strerror(rc));
	mc_buf_fini(&b);
}

static uint64_t jint(json_t *o, const char *k)
{
	json_t *j = json_object_get(o, k);
	return json_is_integer(j) && json_integer_value(j) > 0 ? (uint64_t)json_integer_value(j)
							       : 0;
}

static void sample_load(json_t *o, mc_rollout_sample *s)
{
	s->requests = jint(o, "requests");
	s->errors = jint(o, "errors");
	s->p95_us = (uint64_t)(json_number_value(json_object_get(o, "p95_ms")) * 1000.0);
}

static void rollout_load(region_fleetconf *f)
{
	char path[4300], *text = NULL;
	size_t len;
	snprintf(path, sizeof path, "%s/rollout.json", f->dir);
	if (mc_file_read(path, 1u << 20, &text, &len) < 0)
		return;
	json_t *o = json_loads(text, 0, NULL);
	free(text);
	frollout *r = &f->ro;
	const char *st = o ? json_string_value(json_object_get(o, "state")) : NULL;
	for (int i = 0; st && i < (int)MC_ARRAY_LEN(RO_NAMES); i++)
		if (strcmp(st, RO_NAMES[i]) == 0)
			r->state = i;
	json_t *stages = o ? json_object_get(o, "stages") : NULL;
	if (!st || r->state == RO_NONE || !json_is_array(stages)) {
		json_decref(o);
		r->state = RO_NONE;
		return;
	}
	r->from = jint(o, "from");
	r->to = jint(o, "to");
	r->stage = (size_t)jint(o, "stage");
	r->nstages = json_array_size(stages);
	r->stages = mc_calloc(r->nstages ? r->nstages : 1, sizeof *r->stages);
	r->results = mc_calloc(r->nstages ? r->nstages : 1, sizeof *r->results);
	for (size_t i = 0; i < r->nstages; i++) {
		json_t *a = json_array_get(stages, i);
		r->stages[i].cells = mc_calloc(json_array_size(a) + 1, sizeof(char *));
		for (size_t k = 0; k < json_array_size(a); k++)
			if (json_is_string(json_array_get(a, k)))
				r->stages[i].cells[r->stages[i].ncells++] =
				    mc_strdup(json_string_value(json_array_get(a, k)));
		json_t *res = json_array_get(json_object_get(o, "results"), i);
		if (res) {
			fstage_result *s = &r->results[i];
			const char *v = json_string_value(json_object_get(res, "verdict"));
			s->judged = json_is_true(json_object_get(res, "judged"));
			s->verdict = v && !strcmp(v, "regressed")    ? MC_ROLLOUT_REGRESSED
				     : v && !strcmp(v, "not_judged") ? MC_ROLLOUT_NOT_JUDGED
								     : MC_ROLLOUT_PASS;
			sample_load(json_object_get(res, "before"), &s->before);
			sample_load(json_object_get(res, "after"), &s->after);
			const char *w = json_string_value(json_object_get(res, "why"));
			snprintf(s->why, sizeof s->why, "%s", w ? w : "");
		}
	}
	r->t.bake_ms = (uint32_t)jint(o, "bake_ms");
	r->t.apply_timeout_ms = (uint32_t)jint(o, "apply_timeout_ms");
	r->t.min_requests = (uint32_t)jint(o, "min_requests");
	r->t.max_error_rate_increase_pct =
	    json_number_value(json_object_get(o, "max_error_rate_increase_pct"));
	r->t.max_error_rate_ratio = json_number_value(json_object_get(o, "max_error_rate_ratio"));
	r->t.max_p95_ratio = json_number_value(json_object_get(o, "max_p95_ratio"));
	r->t.p95_slack_ms = (uint32_t)jint(o, "p95_slack_ms");
	r->started_ms = jint(o, "started_ms");
	r->stage_started_ms = jint(o, "stage_started_ms");
	r->ended_ms = jint(o, "ended_ms");
	const char *why = json_string_value(json_object_get(o, "why"));
	snprintf(r->why, sizeof r->why, "%s", why ? why : "");
	json_decref(o);
	if (r->stage > r->nstages)
		r->stage = r->nstages;
	if (r->to && !find_version(f, r->to)) {
		/* written before its version: the push never completed */
		MC_WARN(COMP, "rollout to version %" PRIu64 " was never stored; dropped", r->to);
		rollout_clear(r);
		return;
	}
	if (r->state == RO_BAKING) {
		/* the baseline of the bake was in memory: bake this stage again */
		r->state = RO_RUNNING;
		r->stage_started_ms = mc_wall_ms();
	}
}

/* ---- rotation state ----------------------------------------------------------------------- */

static bool rotation_active(const region_fleetconf *f)
{
	return f->rot.phase == ROT_PUBLISHING || f->rot.phase == ROT_OVERLAP;
}

static void rotation_json(const region_fleetconf *f, mc_buf *b)
{
	const frotation *r = &f->rot;
	mc_buf_printf(b, "{\"phase\":\"%s\",\"kind\":\"%s\",\"id\":", ROT_NAMES[r->phase],
		      r->kind == MC_KEYS_AUTH ? "auth" : "ticket");
	mc_buf_append_json(b, r->id, strlen(r->id));
	mc_buf_append_str(b, ",\"old_id\":");
	mc_buf_append_json(b, r->old_id, strlen(r->old_id));
	mc_buf_printf(b,
		      ",\"published_version\":%" PRIu64 ",\"activated_version\":%" PRIu64
		      ",\"retired_version\":%" PRIu64 ",\"overlap_ms\":%" PRIu64
		      ",\"started_ms\":%" PRIu64 ",\"activated_ms\":%" PRIu64
		      ",\"retire_at_ms\":%" PRIu64 ",\"ended_ms\":%" PRIu64 ",\"why\":",
		      r->published_version, r->activated_version, r->retired_version, r->overlap_ms,
		      r->started_ms, r->activated_ms, r->retire_at_ms, r->ended_ms);
	mc_buf_append_json(b, r->why, strlen(r->why));
	mc_buf_append_str(b, "}");
}

static void rotation_save(region_fleetconf *f)
{
	mc_buf b;
	mc_buf_init(&b);
	rotation_json(f, &b);
	mc_buf_append_str(&b, "\n");
	int rc = mc_file_write_atomic(f->dir, "rotation.json", b.data, b.len, 1);
	if (rc < 0)
		MC_ERROR(COMP, "cannot persist the key rotation state in %s: %s", f->dir,
			 mc_strerror(rc));
	mc_buf_fini(&b);
}

static void rotation_load(region_fleetconf *f)
{
	char path[4300], *text = NULL;
	size_t len;
	snprintf(path, sizeof path, "%s/rotation.json", f->dir);
	if (mc_file_read(path, 65536, &text, &len) < 0)
		return;
	json_t *o = json_loads(text, 0, NULL);
	free(text);
	if (!o)
		return;
	frotation *r = &f->rot;
	const char *ph = json_string_value(json_object_get(o, "phase"));
	for (int i = 0; ph && i < (int)MC_ARRAY_LEN(ROT_NAMES); i++)
		if (strcmp(ph, ROT_NAMES[i]) == 0)
			r->phase = i;
	const char *kind = json_string_value(json_object_get(o, "kind"));
	r->kind = kind && strcmp(kind, "ticket") == 0 ? MC_KEYS_TICKET : MC_KEYS_AUTH;
	const char *id = json_string_value(json_object_get(o, "id"));
	const char *old = json_string_value(json_object_get(o, "old_id"));
	const char *why = json_string_value(json_object_get(o, "why"));
	snprintf(r->id, sizeof r->id, "%s", id ? id : "");
	snprintf(r->old_id, sizeof r->old_id, "%s", old ? old : "");
	snprintf(r->why, sizeof r->why, "%s", why ? why : "");
	r->published_version = jint(o, "published_version");
	r->activated_version = jint(o, "activated_version");
	r->retired_version = jint(o, "retired_version");
	r->overlap_ms = jint(o, "overlap_ms");
	r->started_ms = jint(o, "started_ms");
	r->activated_ms = jint(o, "activated_ms");
	r->retire_at_ms = jint(o, "retire_at_ms");
	r->ended_ms = jint(o, "ended_ms");
	json_decref(o);
}

/* ---- answering watches -------------------------------------------------------------------- */

static void respond_version(mc_http_exchange *ex, const fversion *v)
{
	char ver[24], acc[24];
	snprintf(ver, sizeof ver, "%" PRIu64, v->version);
	snprintf(acc, sizeof acc, "%" PRIu64, v->accepted_ms);
	mc_http_header h[] = {
	    {"Content-Type", 12, "application/json", 16},
	    {"X-Metrocell-Config-Version", 26, ver, strlen(ver)},
	    {"X-Metrocell-Config-Sha256", 25, v->sha256, 64},
	    {"X-Metrocell-Config-Accepted-Ms", 30, acc, strlen(acc)},
	};
	mc_http_respond(ex, 200, h, MC_ARRAY_LEN(h), v->doc, v->len);
}

static void watch_unlink(region_fleetconf *f, fwatch *w)
{
	for (fwatch **pp = &f->watches; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			return;
		}
	}
}

static void applied_json(region_fleetconf *f, uint64_t version, mc_buf *b, int *complete,
			 int *rejected);

/* Answers a waiting request now: a watch with the cell's version (or 204), an
 * applied-wait with where the cells are. Frees w. */
static void watch_finish(region_fleetconf *f, fwatch *w)
{
	watch_unlink(f, w);
	mc_http_exchange_watch(w->ex, NULL, NULL);
	if (w->applied_wait) {
		mc_buf b;
		mc_buf_init(&b);
		int complete, rejected;
		applied_json(f, w->version, &b, &complete, &rejected);
		respond_json(w->ex, 200, &b);
		mc_buf_fini(&b);
	} else {
		const fversion *v = find_version(f, desired(f, w->cell));
		if (v && v->version != w->after)
			respond_version(w->ex, v);
		else
			mc_http_respond(w->ex, 204, NULL, 0, NULL, 0);
	}
	free(w);
}

static void on_watch_event(void *arg, int event)
{
	fwatch *w = arg;
	if (event == MC_HTTP_EX_CLOSED)
		watch_finish(w->f, w); /* the answer is dropped; the exchange is freed */
}

/* Answers every watch whose cell has a version other than the one it has, and
 * every applied-wait that is complete or has a rejection. */
static void wake(region_fleetconf *f)
{
	fwatch *w = f->watches;
	while (w) {
		fwatch *next = w->next;
		int done = 0;
		if (w->applied_wait) {
			mc_buf b;
			mc_buf_init(&b);
			int complete, rejected;
			applied_json(f, w->version, &b, &complete, &rejected);
			mc_buf_fini(&b);
			done = complete || rejected;
		} else {
			uint64_t d = desired(f, w->cell);
			done = d && d != w->after;
		}
		if (done)
			watch_finish(f, w);
		w = next;
	}
}

static void watch_hold(region_fleetconf *f, mc_http_exchange *ex, const char *cell, uint64_t after,
		       int applied_wait, uint64_t version, uint64_t hold_ms)
{
	fwatch *w = mc_calloc(1, sizeof *w);
	w->f = f;
	w->ex = ex;
	snprintf(w->cell, sizeof w->cell, "%s", cell);
	w->after = after;
	w->applied_wait = applied_wait;
	w->version = version;
	w->deadline_ms = mc_now_ns() / 1000000u + hold_ms;
	w->next = f->watches;
	f->watches = w;
	mc_http_exchange_watch(ex, on_watch_event, w);
}

/* ---- endpoints ------------------------------------------------------------------------------ */

static void handle_watch(region_fleetconf *f, mc_http_exchange *ex, const mc_http_request *req)
{
	char cell[64];
	uint64_t after = 0;
	if (qparam(req->query, "cell", cell, sizeof cell) != 1 || !cell_name_ok(cell) ||
	    qparam_u64(req->query, "after", UINT64_MAX, &after) < 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "expected ?cell=NAME&after=VERSION (cell matching "
				      "[a-z0-9-]{1,31})");
		return;
	}
	if (!allowed_cell(f, cell)) {
		mc_http_respond_error(ex, 403, NULL, 0, "unknown_cell",
				      "cell \"%s\" is not in the region's cells", cell);
		return;
	}
	fcell *c = cell_get(f, cell);
	if (c)
		c->last_watch_ms = mc_wall_ms();
	uint64_t d = desired(f, cell);
	const fversion *v = find_version(f, d);
	if (v && d != after) {
		respond_version(ex, v);
		return;
	}
	if (*f->draining) {
		mc_http_respond(ex, 204, NULL, 0, NULL, 0);
		return;
	}
	watch_hold(f, ex, cell, after, 0, 0, WATCH_HOLD_MS);
}

static void window_add(fcell *c, uint64_t now, uint64_t requests, uint64_t errors, json_t *hist)
{
	fwindow *w = &c->ring[c->ring_at];
	c->ring_at = (c->ring_at + 1) % RING;
	free(w->idx);
	free(w->cnt);
	memset(w, 0, sizeof *w);
	w->recv_ms = now;
	w->requests = requests;
	w->errors = errors;
	c->cum_requests += requests;
	c->cum_errors += errors;
	size_t n = json_array_size(hist);
	if (n == 0)
		return;
	w->idx = mc_calloc(n, sizeof *w->idx);
	w->cnt = mc_calloc(n, sizeof *w->cnt);
	if (!c->cum_hist) {
		c->cum_hist = mc_alloc(sizeof *c->cum_hist);
		mc_hist_init(c->cum_hist);
	}
	size_t i;
	json_t *p;
	json_array_foreach(hist, i, p)
	{
		json_int_t b = json_integer_value(json_array_get(p, 0));
		json_int_t k = json_integer_value(json_array_get(p, 1));
		if (!json_is_array(p) || b < 0 || b >= MC_HIST_BUCKETS || k <= 0)
			continue;
		w->idx[w->npairs] = (uint32_t)b;
		w->cnt[w->npairs++] = (uint64_t)k;
		c->cum_hist->buckets[b] += (uint64_t)k;
		c->cum_hist->count += (uint64_t)k;
	}
}

static void handle_report(region_fleetconf *f, mc_http_exchange *ex, const mc_http_request *req)
{
	json_error_t e;
	json_t *o = json_loadb(req->body ? req->body : "", req->body_len, 0, &e);
	const char *cell = o ? json_string_value(json_object_get(o, "cell")) : NULL;
	const char *sha = o ? json_string_value(json_object_get(o, "sha256")) : NULL;
	const char *source = o ? json_string_value(json_object_get(o, "source")) : NULL;
	json_t *ver = o ? json_object_get(o, "version") : NULL;
	json_t *win = o ? json_object_get(o, "window") : NULL;
	json_t *hist = win ? json_object_get(win, "hist") : NULL;
	if (!cell || !cell_name_ok(cell) || !json_is_integer(ver) || json_integer_value(ver) < 0 ||
	    !sha || strlen(sha) > 64 ||
	    (hist && (!json_is_array(hist) || json_array_size(hist) > MC_HIST_BUCKETS))) {
		json_decref(o);
		mc_http_respond_error(ex, 400, NULL, 0, "bad_report",
				      "expected {\"cell\", \"version\", \"sha256\", \"window\"} "
				      "(docs/protocol.md)");
		return;
	}
	if (!allowed_cell(f, cell)) {
		json_decref(o);
		mc_http_respond_error(ex, 403, NULL, 0, "unknown_cell",
				      "cell \"%s\" is not in the region's cells", cell);
		return;
	}
	fcell *c = cell_get(f, cell);
	if (!c) {
		json_decref(o);
		mc_http_respond_error(ex, 503, NULL, 0, "too_many_cells",
				      "the region tracks at most %d cells", FLEET_CELLS_MAX);
		return;
	}
	uint64_t now = mc_wall_ms();
	uint64_t v = (uint64_t)json_integer_value(ver);
	if (v != c->applied_version || strcmp(sha, c->applied_sha) != 0 || !c->last_report_ms) {
		if (v != c->applied_version)
			MC_INFO(COMP,
				"cell %s applied fleet config version %" PRIu64 " (was %" PRIu64
				")",
				cell, v, c->applied_version);
		c->applied_version = v;
		snprintf(c->applied_sha, sizeof c->applied_sha, "%s", sha);
		c->applied_at_ms = now;
	}
	snprintf(c->source, sizeof c->source, "%s", source ? source : "unknown");
	c->m_applied->value = (double)v;
	json_t *ev = json_object_get(o, "error_version");
	const char *err = json_string_value(json_object_get(o, "error"));
	free(c->error);
	c->error = NULL;
	c->error_version = 0;
	if (err && json_is_integer(ev)) {
		c->error_version = (uint64_t)json_integer_value(ev);
		c->error = mc_strndup(err, MC_MIN(strlen(err), (size_t)REPORT_ERROR_MAX));
	}
	c->last_report_ms = now;
	if (win) {
		json_t *rq = json_object_get(win, "requests"), *er = json_object_get(win, "errors");
		uint64_t requests = json_is_integer(rq) && json_integer_value(rq) > 0
					? (uint64_t)json_integer_value(rq)
					: 0;
		uint64_t errors = json_is_integer(er) && json_integer_value(er) > 0
				      ? (uint64_t)json_integer_value(er)
				      : 0;
		window_add(c, now, requests, MC_MIN(errors, requests), hist);
	}
	json_decref(o);
	mc_http_respond(ex, 204, NULL, 0, NULL, 0);
	drive(f);
	wake(f);
}

static void applied_json(region_fleetconf *f, uint64_t version, mc_buf *b, int *complete,
			 int *rejected)
{
	const char *t[FLEET_CELLS_MAX];
	size_t n = targets(f, t, FLEET_CELLS_MAX);
	size_t done = 0, bad = 0;
	mc_buf_printf(b, "{\"version\":%" PRIu64 ",\"cells\":[", version);
	for (size_t i = 0; i < n; i++) {
		fcell *c = cell_find(f, t[i]);
		uint64_t av = c ? c->applied_version : 0;
		int ok = c && c->last_report_ms && av >= version;
		int rej = c && c->error && c->error_version == version && !ok;
		done += ok;
		bad += rej;
		mc_buf_append_str(b, i ? ",{\"cell\":" : "{\"cell\":");
		mc_buf_append_json(b, t[i], strlen(t[i]));
		mc_buf_printf(b, ",\"applied_version\":%" PRIu64 ",\"applied\":%s,\"error\":", av,
			      ok ? "true" : "false");
		if (rej)
			mc_buf_append_json(b, c->error, strlen(c->error));
		else
			mc_buf_append_str(b, "null");
		mc_buf_append_str(b, "}");
	}
	*complete = done == n;
	*rejected = bad > 0;
	mc_buf_printf(b, "],\"complete\":%s,\"rejected\":%s}\n", *complete ? "true" : "false",
		      *rejected ? "true" : "false");
}

static void handle_applied(region_fleetconf *f, mc_http_exchange *ex, const mc_http_request *req)
{
	uint64_t version = latest(f) ? latest(f)->version : 0, wait_ms = 0;
	if (qparam_u64(req->query, "version", UINT64_MAX, &version) < 0 ||
	    qparam_u64(req->query, "wait_ms", APPLIED_WAIT_MAX_MS, &wait_ms) < 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "expected ?version=N&wait_ms=0..%d", APPLIED_WAIT_MAX_MS);
		return;
	}
	mc_buf b;
	mc_buf_init(&b);
	int complete, rejected;
	applied_json(f, version, &b, &complete, &rejected);
	if (complete || rejected || wait_ms == 0 || *f->draining)
		respond_json(ex, 200, &b);
	else
		watch_hold(f, ex, "", 0, 1, version, wait_ms);
	mc_buf_fini(&b);
}

/* Validates doc like `ctl push`; 0 and *out, or answers 400 and returns -1. */
static int validate(mc_http_exchange *ex, const char *doc, size_t len, mc_fleet_conf **out)
{
	char err[MC_CONFIG_ERR_MAX];
	if (mc_fleet_conf_parse("fleet.json", doc, len, NULL, out, err, sizeof err) < 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "invalid_config", "%s", err);
		return -1;
	}
	return 0;
}

static void handle_push(region_fleetconf *f, mc_http_exchange *ex, const mc_http_request *req)
{
	if (rollout_active(f)) {
		f->pushes_rejected++;
		mc_http_respond_error(ex, 409, NULL, 0, "rollout_in_progress",
				      "a rollout to version %" PRIu64
				      " is %s (stage %zu of %zu): wait for it or abort it "
				      "(metrocell ctl rollout abort)",
				      f->ro.to, RO_NAMES[f->ro.state], f->ro.stage + 1,
				      f->ro.nstages);
		return;
	}
	mc_fleet_conf *fc = NULL;
	if (validate(ex, req->body, req->body_len, &fc) < 0) {
		f->pushes_rejected++;
		return;
	}
	mc_fleet_conf_free(fc);
	char sha[65];
	mc_net_sha256_hex(req->body ? req->body : "", req->body_len, sha);
	const fversion *l = latest(f);
	mc_buf b;
	mc_buf_init(&b);
	if (l && strcmp(l->sha256, sha) == 0 &&
	    !(f->ro.state != RO_NONE && f->ro.state != RO_DONE && f->ro.to == l->version)) {
		mc_buf_printf(&b,
			      "{\"version\":%" PRIu64 ",\"sha256\":\"%s\",\"bytes\":%zu,"
			      "\"unchanged\":true}\n",
			      l->version, sha, req->body_len);
		respond_json(ex, 200, &b);
		mc_buf_fini(&b);
		return;
	}
	uint64_t v;
	int rc = store_version(f, req->body ? req->body : "", req->body_len, sha, &v);
	if (rc < 0) {
		mc_http_respond_error(ex, 500, NULL, 0, "store_error",
				      "cannot store the version in %s: %s", f->dir,
				      mc_strerror(rc));
		mc_buf_fini(&b);
		return;
	}
	f->pushes_ok++;
	MC_INFO(COMP, "fleet config version %" PRIu64 " accepted (sha256 %.12s..., %zu bytes)", v,
		sha, req->body_len);
	mc_buf_printf(&b,
		      "{\"version\":%" PRIu64 ",\"sha256\":\"%s\",\"bytes\":%zu,"
		      "\"unchanged\":false}\n",
		      v, sha, req->body_len);
	respond_json(ex, 200, &b);
	mc_buf_fini(&b);
	wake(f);
}

static void handle_get(region_fleetconf *f, mc_http_exchange *ex, const mc_http_request *req)
{
	uint64_t want = 0;
	char cell[64];
	int hasv = qparam_u64(req->query, "version", UINT64_MAX, &want);
	int hasc = qparam(req->query, "cell", cell, sizeof cell);
	if (hasv < 0 || hasc < 0 || (hasc == 1 && !cell_name_ok(cell))) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "expected ?version=N or ?cell=NAME");
		return;
	}
	if (hasc == 1)
		want = desired(f, cell);
	else if (hasv != 1)
		want = latest(f) ? latest(f)->version : 0;
	const fversion *v = find_version(f, want);
	if (!v) {
		mc_http_respond_error(ex, 404, NULL, 0, "no_config",
				      want ? "no fleet config version %" PRIu64 " in this region"
					   : "no fleet config has been pushed yet%.0" PRIu64,
				      want);
		return;
	}
	respond_version(ex, v);
}

static void handle_versions(region_fleetconf *f, mc_http_exchange *ex)
{
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"versions\":[");
	for (size_t i = 0; i < f->nv; i++)
		mc_buf_printf(&b,
			      "%s{\"version\":%" PRIu64
			      ",\"sha256\":\"%s\",\"accepted_ms\":%" PRIu64 ",\"bytes\":%zu}",
			      i ? "," : "", f->v[i].version, f->v[i].sha256, f->v[i].accepted_ms,
			      f->v[i].len);
	mc_buf_append_str(&b, "]}\n");
	respond_json(ex, 200, &b);
	mc_buf_fini(&b);
}

/* ---- rollout ------------------------------------------------------------------------------------
 */

/* The stage's answers over the baseline window before now. */
static void stage_before(region_fleetconf *f, const mc_rollout_stage *st, uint32_t bake_ms,
			 mc_rollout_sample *out)
{
	uint64_t span =
	    MC_MIN(MC_MAX((uint64_t)bake_ms, (uint64_t)BASELINE_MIN_MS), (uint64_t)BASELINE_MAX_MS);
	uint64_t now = mc_wall_ms();
	mc_hist *h = mc_alloc(sizeof *h);
	mc_hist_init(h);
	memset(out, 0, sizeof *out);
	for (size_t k = 0; k < st->ncells; k++) {
		fcell *c = cell_find(f, st->cells[k]);
		for (size_t i = 0; c && i < RING; i++) {
			fwindow *w = &c->ring[i];
			if (!w->recv_ms || w->recv_ms + span < now)
				continue;
			out->requests += w->requests;
			out->errors += w->errors;
			for (uint32_t p = 0; p < w->npairs; p++) {
				h->buckets[w->idx[p]] += w->cnt[p];
				h->count += w->cnt[p];
			}
		}
	}
	h->max = UINT64_MAX;
	out->p95_us = mc_hist_quantile(h, 0.95);
	free(h);
}

/* The stage's answers since its bake started. */
static void stage_after(region_fleetconf *f, const mc_rollout_stage *st, mc_rollout_sample *out)
{
	mc_hist *h = mc_alloc(sizeof *h);
	mc_hist_init(h);
	memset(out, 0, sizeof *out);
	for (size_t k = 0; k < st->ncells; k++) {
		fcell *c = cell_find(f, st->cells[k]);
		if (!c)
			continue;
		out->requests += c->cum_requests - c->snap_requests;
		out->errors += c->cum_errors - c->snap_errors;
		for (size_t i = 0; c->cum_hist && i < MC_HIST_BUCKETS; i++) {
			uint64_t before = c->snap_hist ? c->snap_hist->buckets[i] : 0;
			uint64_t d =
			    c->cum_hist->buckets[i] - MC_MIN(before, c->cum_hist->buckets[i]);
			h->buckets[i] += d;
			h->count += d;
		}
	}
	h->max = UINT64_MAX;
	out->p95_us = mc_hist_quantile(h, 0.95);
	free(h);
}

static void stage_list(const mc_rollout_stage *st, char *out, size_t cap)
{
	size_t at = 0;
	out[0] = '\0';
	for (size_t k = 0; k < st->ncells && at < cap; k++) {
		int m = snprintf(out + at, cap - at, "%s%s", k ? "+" : "", st->cells[k]);
		if (m < 0)
			break;
		at += (size_t)m;
	}
}

static void rollout_halt(region_fleetconf *f, const char *why)
{
	frollout *r = &f->ro;
	char sl[200];
	stage_list(&r->stages[r->stage], sl, sizeof sl);
	snprintf(r->why, sizeof r->why, "stage %zu (%s): %s", r->stage + 1, sl, why);
	r->state = RO_HALTED;
	r->ended_ms = mc_wall_ms();
	MC_WARN(COMP,
		"rollout to version %" PRIu64 " halted, stage %s rolls back to version %" PRIu64
		": %s",
		r->to, sl, r->from, r->why);
	rollout_save(f);
	wake(f);
}

static void rollout_stage_begin(region_fleetconf *f)
{
	frollout *r = &f->ro;
	r->stage_started_ms = mc_wall_ms();
	r->applied_ms = r->bake_until_ms = 0;
	r->state = RO_RUNNING;
	stage_before(f, &r->stages[r->stage], r->t.bake_ms, &r->results[r->stage].before);
	char sl[200];
	stage_list(&r->stages[r->stage], sl, sizeof sl);
	MC_INFO(COMP, "rollout to version %" PRIu64 ": stage %zu of %zu (%s) begins", r->to,
		r->stage + 1, r->nstages, sl);
	rollout_save(f);
	wake(f);
}

static void drive_rollout(region_fleetconf *f)
{
	frollout *r = &f->ro;
	uint64_t now = mc_wall_ms();
	if (r->state == RO_RUNNING) {
		const mc_rollout_stage *st = &r->stages[r->stage];
		size_t missing = 0;
		char miss[300] = "";
		for (size_t k = 0; k < st->ncells; k++) {
			fcell *c = cell_find(f, st->cells[k]);
			if (c && c->error && c->error_version == r->to &&
			    c->applied_version != r->to) {
				char why[REPORT_ERROR_MAX + 100];
				snprintf(why, sizeof why,
					 "cell %s rejected version %" PRIu64 ": %s", c->name, r->to,
					 c->error);
				rollout_halt(f, why);
				return;
			}
			if (!c || c->applied_version != r->to ||
			    c->applied_at_ms < r->stage_started_ms) {
				size_t at = strlen(miss);
				snprintf(miss + at, sizeof miss - at, "%s%s", missing ? ", " : "",
					 st->cells[k]);
				missing++;
			}
		}
		if (missing == 0) {
			for (size_t k = 0; k < st->ncells; k++) {
				fcell *c = cell_find(f, st->cells[k]);
				c->snap_requests = c->cum_requests;
				c->snap_errors = c->cum_errors;
				if (!c->snap_hist)
					c->snap_hist = mc_alloc(sizeof *c->snap_hist);
				if (c->cum_hist)
					*c->snap_hist = *c->cum_hist;
				else
					mc_hist_init(c->snap_hist);
			}
			r->applied_ms = now;
			r->bake_until_ms = now + r->t.bake_ms;
			r->state = RO_BAKING;
			rollout_save(f);
		} else if (now > r->stage_started_ms + r->t.apply_timeout_ms) {
			char why[500];
			snprintf(why, sizeof why, "not applied within %u ms by: %s",
				 r->t.apply_timeout_ms, miss);
			rollout_halt(f, why);
			return;
		}
	}
	if (r->state == RO_BAKING && now >= r->bake_until_ms) {
		fstage_result *res = &r->results[r->stage];
		stage_after(f, &r->stages[r->stage], &res->after);
		res->verdict = (int)mc_rollout_judge(&r->t, &res->before, &res->after, res->why,
						     sizeof res->why);
		res->judged = 1;
		if (res->verdict == MC_ROLLOUT_REGRESSED) {
			rollout_halt(f, res->why);
			return;
		}
		MC_INFO(COMP, "rollout to version %" PRIu64 ": stage %zu %s", r->to, r->stage + 1,
			res->why);
		if (r->stage + 1 >= r->nstages) {
			r->stage = r->nstages - 1;
			r->state = RO_DONE;
			r->ended_ms = now;
			snprintf(r->why, sizeof r->why, "every stage passed");
			MC_INFO(COMP, "rollout to version %" PRIu64 " done", r->to);
			rollout_save(f);
			wake(f);
			return;
		}
		r->stage++;
		rollout_stage_begin(f);
	}
}

static void handle_rollout_start(region_fleetconf *f, mc_http_exchange *ex,
				 const mc_http_request *req)
{
	if (rollout_active(f)) {
		mc_http_respond_error(ex, 409, NULL, 0, "rollout_in_progress",
				      "a rollout to version %" PRIu64 " is %s", f->ro.to,
				      RO_NAMES[f->ro.state]);
		return;
	}
	if (rotation_active(f)) {
		mc_http_respond_error(ex, 409, NULL, 0, "rotation_in_progress",
				      "a %s key rotation is in phase %s: let it finish first",
				      f->rot.kind == MC_KEYS_AUTH ? "auth" : "ticket",
				      ROT_NAMES[f->rot.phase]);
		return;
	}
	mc_fleet_conf *fc = NULL;
	if (validate(ex, req->body, req->body_len, &fc) < 0)
		return;
	char spec[2048], err[512];
	uint64_t bake = fc->rollout.bake_ms;
	int hs = qparam(req->query, "stages", spec, sizeof spec);
	if (hs < 0 || qparam_u64(req->query, "bake_ms", 86400000, &bake) < 0) {
		mc_fleet_conf_free(fc);
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "expected ?stages=lax,sfo%%2Bsea&bake_ms=N");
		return;
	}
	frollout r;
	memset(&r, 0, sizeof r);
	if (hs == 1) {
		if (mc_rollout_stages_parse(spec, &r.stages, &r.nstages, err, sizeof err) < 0) {
			mc_fleet_conf_free(fc);
			mc_http_respond_error(ex, 400, NULL, 0, "bad_stages", "stages: %s", err);
			return;
		}
	} else {
		/* the document's default stages */
		r.nstages = fc->rollout.nstages;
		r.stages = fc->rollout.stages;
		fc->rollout.stages = NULL;
		fc->rollout.nstages = 0;
	}
	if (r.nstages == 0) {
		mc_fleet_conf_free(fc);
		mc_http_respond_error(ex, 400, NULL, 0, "bad_stages",
				      "no stages: give ?stages= or rollout.stages in the document");
		return;
	}
	/* every staged cell must be one the document (or the region) knows */
	for (size_t i = 0; i < r.nstages; i++) {
		for (size_t k = 0; k < r.stages[i].ncells; k++) {
			const char *cn = r.stages[i].cells[k];
			bool known = fc->ncells == 0 && allowed_cell(f, cn);
			for (size_t j = 0; j < fc->ncells && !known; j++)
				known = strcmp(fc->cells[j], cn) == 0;
			if (!known) {
				mc_http_respond_error(ex, 400, NULL, 0, "bad_stages",
						      "stage %zu: unknown cell \"%s\" (not in the "
						      "document's cells)",
						      i + 1, cn);
				mc_rollout_stages_free(r.stages, r.nstages);
				mc_fleet_conf_free(fc);
				return;
			}
		}
	}
	r.t = fc->rollout;
	r.t.stages = NULL;
	r.t.nstages = 0;
	r.t.bake_ms = (uint32_t)bake;
	mc_fleet_conf_free(fc);
	char sha[65];
	mc_net_sha256_hex(req->body ? req->body : "", req->body_len, sha);
	const fversion *l = latest(f);
	if (l && strcmp(l->sha256, sha) == 0) {
		mc_rollout_stages_free(r.stages, r.nstages);
		mc_http_respond_error(ex, 409, NULL, 0, "unchanged",
				      "the document is version %" PRIu64 " already", l->version);
		return;
	}
	int r0_state = f->ro.state;
	uint64_t r0_to = f->ro.to, r0_from = f->ro.from;
	rollout_clear(&f->ro);
	f->ro = r;
	f->ro.results = mc_calloc(r.nstages, sizeof *f->ro.results);
	/* after a halted or aborted rollout the cells run its "from", not the
	 * latest version (the one that regressed) */
	f->ro.from = !l ? 0
		     : (r0_state == RO_HALTED || r0_state == RO_ABORTED) && r0_to == l->version
			 ? r0_from
			 : l->version;
	f->ro.to = (l ? l->version : 0) + 1;
	f->ro.started_ms = mc_wall_ms();
	f->ro.state = RO_RUNNING;
	f->ro.stage = 0;
	/* the rollout is persisted before its version: a version on disk never
	 * reaches every cell because the region crashed in between */
	rollout_save(f);
	uint64_t v;
	int rc = store_version(f, req->body ? req->body : "", req->body_len, sha, &v);
	if (rc < 0) {
		rollout_clear(&f->ro);
		char p[4300];
		snprintf(p, sizeof p, "%s/rollout.json", f->dir);
		unlink(p);
		mc_http_respond_error(ex, 500, NULL, 0, "store_error",
				      "cannot store the version: %s", mc_strerror(rc));
		return;
	}
	f->pushes_ok++;
	rollout_stage_begin(f);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_printf(&b, "{\"version\":%" PRIu64 ",\"sha256\":\"%s\",\"rollout\":", v, sha);
	rollout_json(f, &b);
	mc_buf_append_str(&b, "}\n");
	respond_json(ex, 200, &b);
	mc_buf_fini(&b);
}

static void handle_rollout_get(region_fleetconf *f, mc_http_exchange *ex)
{
	if (f->ro.state == RO_NONE) {
		mc_http_respond_error(ex, 404, NULL, 0, "no_rollout",
				      "no rollout has been started");
		return;
	}
	mc_buf b;
	mc_buf_init(&b);
	rollout_json(f, &b);
	mc_buf_append_str(&b, "\n");
	respond_json(ex, 200, &b);
	mc_buf_fini(&b);
}

static void handle_rollout_abort(region_fleetconf *f, mc_http_exchange *ex)
{
	if (!rollout_active(f)) {
		mc_http_respond_error(ex, 409, NULL, 0, "no_rollout", "no rollout is running");
		return;
	}
	frollout *r = &f->ro;
	r->state = RO_ABORTED;
	r->ended_ms = mc_wall_ms();
	snprintf(r->why, sizeof r->why,
		 "aborted by the operator at stage %zu: every cell goes "
		 "back to version %" PRIu64,
		 r->stage + 1, r->from);
	rollout_save(f);
	wake(f);
	handle_rollout_get(f, ex);
}

/* ---- key rotation -----------------------------------------------------------------------------
 */

/* Pushes doc as the next version (no rollout: every cell). */
static int push_derived(region_fleetconf *f, char *doc, size_t len, uint64_t *v, char *err,
			size_t cap)
{
	mc_fleet_conf *fc = NULL;
	int rc = mc_fleet_conf_parse("fleet.json", doc, len, NULL, &fc, err, cap);
	mc_fleet_conf_free(fc);
	if (rc < 0)
		return rc;
	char sha[65];
	mc_net_sha256_hex(doc, len, sha);
	rc = store_version(f, doc, len, sha, v);
	if (rc < 0)
		snprintf(err, cap, "cannot store the version: %s", mc_strerror(rc));
	else
		wake(f);
	return rc;
}

static void rotation_fail(region_fleetconf *f, const char *why)
{
	frotation *r = &f->rot;
	snprintf(r->why, sizeof r->why, "%s", why);
	r->phase = ROT_FAILED;
	r->ended_ms = mc_wall_ms();
	MC_ERROR(COMP, "key rotation (%s %s) failed: %s",
		 r->kind == MC_KEYS_AUTH ? "auth" : "ticket", r->id, why);
	rotation_save(f);
}

static void drive_rotation(region_fleetconf *f)
{
	frotation *r = &f->rot;
	if (!rotation_active(f) || rollout_active(f))
		return;
	const fversion *l = latest(f);
	char err[MC_CONFIG_ERR_MAX], *doc = NULL;
	size_t len;
	uint64_t v, now = mc_wall_ms();
	if (r->phase == ROT_PUBLISHING) {
		const char *t[FLEET_CELLS_MAX];
		size_t n = targets(f, t, FLEET_CELLS_MAX);
		for (size_t i = 0; i < n; i++) {
			fcell *c = cell_find(f, t[i]);
			if (!c || !c->last_report_ms || c->applied_version < r->published_version)
				return; /* the key stays pending until every cell has it */
		}
		if (!l ||
		    mc_fleet_doc_key_activate(l->doc, l->len, r->kind, r->id, r->old_id, &doc, &len,
					      err, sizeof err) < 0 ||
		    push_derived(f, doc, len, &v, err, sizeof err) < 0) {
			free(doc);
			rotation_fail(f, err);
			return;
		}
		free(doc);
		r->activated_version = v;
		r->activated_ms = now;
		r->retire_at_ms = now + r->overlap_ms;
		r->phase = ROT_OVERLAP;
		snprintf(r->why, sizeof r->why,
			 "every cell has version %" PRIu64 ": %s is active from version %" PRIu64,
			 r->published_version, r->id, v);
		MC_INFO(COMP, "key rotation: %s", r->why);
		rotation_save(f);
		return;
	}
	if (r->phase == ROT_OVERLAP && now >= r->retire_at_ms) {
		if (!r->old_id[0]) {
			r->phase = ROT_DONE;
			r->ended_ms = now;
			snprintf(r->why, sizeof r->why, "no previous key to retire");
			rotation_save(f);
			return;
		}
		if (!l ||
		    mc_fleet_doc_key_remove(l->doc, l->len, r->kind, r->old_id, &doc, &len, err,
					    sizeof err) < 0 ||
		    push_derived(f, doc, len, &v, err, sizeof err) < 0) {
			free(doc);
			rotation_fail(f, err);
			return;
		}
		free(doc);
		r->retired_version = v;
		r->phase = ROT_DONE;
		r->ended_ms = now;
		snprintf(r->why, sizeof r->why, "old key %s removed in version %" PRIu64, r->old_id,
			 v);
		MC_INFO(COMP, "key rotation: %s", r->why);
		rotation_save(f);
	}
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4];
		out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static void handle_rotate(region_fleetconf *f, mc_http_exchange *ex, const mc_http_request *req)
{
	char kind[16];
	uint64_t overlap_ms = 3600000;
	if (qparam(req->query, "kind", kind, sizeof kind) != 1 ||
	    (strcmp(kind, "auth") != 0 && strcmp(kind, "ticket") != 0) ||
	    qparam_u64(req->query, "overlap_ms", 30ull * 86400000, &overlap_ms) < 0) {
		mc_http_respond_error(ex, 400, NULL, 0, "bad_request",
				      "expected ?kind=auth|ticket[&overlap_ms=N]");
		return;
	}
	if (rotation_active(f)) {
		mc_http_respond_error(ex, 409, NULL, 0, "rotation_in_progress",
				      "a %s key rotation is in phase %s (key %s)",
				      f->rot.kind == MC_KEYS_AUTH ? "auth" : "ticket",
				      ROT_NAMES[f->rot.phase], f->rot.id);
		return;
	}
	const fversion *l = latest(f);
	if (rollout_active(f) ||
	    (l && f->ro.state != RO_NONE && f->ro.state != RO_DONE && f->ro.to == l->version)) {
		mc_http_respond_error(ex, 409, NULL, 0, "rollout_in_progress",
				      "the latest version %" PRIu64
				      " belongs to a rollout that is %s: push a config first",
				      f->ro.to, RO_NAMES[f->ro.state]);
		return;
	}
	if (!l) {
		mc_http_respond_error(ex, 409, NULL, 0, "no_config",
				      "no fleet config has been pushed yet: keys travel in it");
		return;
	}
	int k = strcmp(kind, "auth") == 0 ? MC_KEYS_AUTH : MC_KEYS_TICKET;
	uint8_t raw[80];
	char id[80], material[200], old[80], err[512], *doc = NULL;
	size_t len;
	if (mc_net_random(raw, sizeof raw) < 0) {
		mc_http_respond_error(ex, 500, NULL, 0, "no_randomness", "no random bytes");
		return;
	}
	if (k == MC_KEYS_AUTH) {
		char tag[9];
		hex_of(raw + 32, 4, tag);
		snprintf(id, sizeof id, "k%" PRIu64 "-%s", mc_wall_ms() / 1000, tag);
		hex_of(raw, 32, material); /* a 256-bit HS256 secret */
	} else {
		hex_of(raw, 80, material); /* name 16 | HMAC key 32 | AES key 32 */
		hex_of(raw, 16, id);
	}
	explicit_bzero(raw, sizeof raw);
	uint64_t v;
	int rc = mc_fleet_doc_key_publish(l->doc, l->len, k, id, material, &doc, &len, old,
					  sizeof old, err, sizeof err);
	explicit_bzero(material, sizeof material);
	if (rc == 0)
		rc = push_derived(f, doc, len, &v, err, sizeof err);
	if (doc)
		explicit_bzero(doc, len);
	free(doc);
	if (rc < 0) {
		mc_http_respond_error(ex, 409, NULL, 0, "cannot_rotate", "%s", err);
		return;
	}
	frotation *r = &f->rot;
	memset(r, 0, sizeof *r);
	r->kind = k;
	r->phase = ROT_PUBLISHING;
	snprintf(r->id, sizeof r->id, "%s", id);
	snprintf(r->old_id, sizeof r->old_id, "%s", old);
	r->published_version = v;
	r->overlap_ms = overlap_ms;
	r->started_ms = mc_wall_ms();
	snprintf(r->why, sizeof r->why,
		 "published in version %" PRIu64 ", pending until every cell has it", v);
	rotation_save(f);
	MC_INFO(COMP, "key rotation: new %s key %s published in version %" PRIu64, kind, id, v);
	mc_buf b;
	mc_buf_init(&b);
	rotation_json(f, &b);
	mc_buf_append_str(&b, "\n");
	respond_json(ex, 200, &b);
	mc_buf_fini(&b);
}

static void handle_rotation_get(region_fleetconf *f, mc_http_exchange *ex)
{
	if (f->rot.phase == ROT_NONE) {
		mc_http_respond_error(ex, 404, NULL, 0, "no_rotation", "no key rotation has run");
		return;
	}
	mc_buf b;
	mc_buf_init(&b);
	rotation_json(f, &b);
	mc_buf_append_str(&b, "\n");
	respond_json(ex, 200, &b);
	mc_buf_fini(&b);
}

/* ---- status, metrics, timer ------------------------------------------------------------------ */

static void fleet_json(region_fleetconf *f, mc_buf *b)
{
	const fversion *l = latest(f);
	mc_buf_printf(b,
		      "{\"latest_version\":%" PRIu64 ",\"latest_sha256\":\"%s\",\"versions\":%zu,",
		      l ? l->version : 0, l ? l->sha256 : "", f->nv);
	mc_buf_append_str(b, "\"targets\":[");
	const char *t[FLEET_CELLS_MAX];
	size_t n = targets(f, t, FLEET_CELLS_MAX);
	for (size_t i = 0; i < n; i++) {
		mc_buf_append_str(b, i ? "," : "");
		mc_buf_append_json(b, t[i], strlen(t[i]));
	}
	mc_buf_append_str(b, "],\"cells\":[");
	uint64_t now = mc_wall_ms();
	for (size_t i = 0; i < f->ncells; i++) {
		fcell *c = f->cells[i];
		mc_buf_append_str(b, i ? ",{\"cell\":" : "{\"cell\":");
		mc_buf_append_json(b, c->name, strlen(c->name));
		mc_buf_printf(b,
			      ",\"desired_version\":%" PRIu64 ",\"applied_version\":%" PRIu64
			      ",\"applied_sha256\":\"%s\",\"source\":\"%s\",\"last_report_s\":%.3f,"
			      "\"error\":",
			      desired(f, c->name), c->applied_version, c->applied_sha, c->source,
			      c->last_report_ms
				  ? (double)(now - MC_MIN(now, c->last_report_ms)) / 1000.0
				  : -1.0);
		if (c->error) {
			mc_buf_printf(b, "{\"version\":%" PRIu64 ",\"message\":", c->error_version);
			mc_buf_append_json(b, c->error, strlen(c->error));
			mc_buf_append_str(b, "}");
		} else {
			mc_buf_append_str(b, "null");
		}
		mc_buf_append_str(b, "}");
	}
	mc_buf_append_str(b, "],\"rollout\":");
	if (f->ro.state == RO_NONE)
		mc_buf_append_str(b, "null");
	else
		rollout_json(f, b);
	mc_buf_append_str(b, ",\"rotation\":");
	if (f->rot.phase == ROT_NONE)
		mc_buf_append_str(b, "null");
	else
		rotation_json(f, b);
	mc_buf_append_str(b, "}");
}

void mc_region_fleetconf_status(region_fleetconf *f, mc_buf *b)
{
	if (!f)
		return;
	mc_buf_append_str(b, ",\"fleet_config\":");
	fleet_json(f, b);
}

void mc_region_fleetconf_metrics(region_fleetconf *f)
{
	if (!f)
		return;
	const fversion *l = latest(f);
	mc_metrics_series(f->metrics, "metrocell_fleet_config_latest_version",
			  "Latest fleet config version the region accepted.", MC_METRIC_GAUGE, "")
	    ->value = l ? (double)l->version : 0;
	static const char ph[] = "Fleet config pushes, by result (rejected: invalid or refused).";
	mc_metrics_series(f->metrics, "metrocell_fleet_config_pushes_total", ph, MC_METRIC_COUNTER,
			  "result=\"accepted\"")
	    ->value = (double)f->pushes_ok;
	mc_metrics_series(f->metrics, "metrocell_fleet_config_pushes_total", ph, MC_METRIC_COUNTER,
			  "result=\"rejected\"")
	    ->value = (double)f->pushes_rejected;
	for (int s = RO_RUNNING; s < (int)MC_ARRAY_LEN(RO_NAMES); s++) {
		char l2[48];
		snprintf(l2, sizeof l2, "state=\"%s\"", RO_NAMES[s]);
		mc_metrics_series(f->metrics, "metrocell_fleet_rollout_state",
				  "1 for the state of the last rollout.", MC_METRIC_GAUGE, l2)
		    ->value = f->ro.state == s;
	}
}

static void drive(region_fleetconf *f)
{
	drive_rollout(f);
	drive_rotation(f);
}

static void on_tick(uv_timer_t *t)
{
	region_fleetconf *f = t->data;
	uint64_t now = mc_now_ns() / 1000000u;
	fwatch *w = f->watches;
	while (w) {
		fwatch *next = w->next;
		if (*f->draining || now >= w->deadline_ms)
			watch_finish(f, w);
		w = next;
	}
	if (!*f->draining)
		drive(f);
}

/* ---- entry points -----------------------------------------------------------------------------
 */

size_t mc_region_fleetconf_body_limit(const char *method, const char *path, size_t len)
{
	(void)len;
	if (strcmp(method, "POST") == 0 &&
	    (strcmp(path, "/v1/config") == 0 || strcmp(path, "/v1/rollout") == 0))
		return MC_FLEET_MAX_BYTES;
	return 0;
}

int mc_region_fleetconf_handle(region_fleetconf *f, mc_http_exchange *ex)
{
	const mc_http_request *req = mc_http_exchange_request(ex);
	const char *p = req->path, *m = req->method;
	bool get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0;
	struct {
		const char *path;
		int post; /* 1: POST, 0: GET */
	} known[] = {{"/v1/config", -1},	 {"/v1/config/watch", 0},
		     {"/v1/config/report", 1},	 {"/v1/config/applied", 0},
		     {"/v1/config/versions", 0}, {"/v1/config/status", 0},
		     {"/v1/rollout", -1},	 {"/v1/rollout/abort", 1},
		     {"/v1/keys/rotate", 1},	 {"/v1/keys/rotation", 0}};
	size_t i;
	for (i = 0; i < MC_ARRAY_LEN(known); i++)
		if (strcmp(p, known[i].path) == 0)
			break;
	if (i == MC_ARRAY_LEN(known))
		return 0;
	if ((known[i].post == 1 && !post) || (known[i].post == 0 && !get) ||
	    (known[i].post == -1 && !get && !post)) {
		const char *allow = known[i].post == 1	 ? "POST"
				    : known[i].post == 0 ? "GET"
							 : "GET, POST";
		mc_http_header h = {"Allow", 5, allow, strlen(allow)};
		mc_http_respond_error(ex, 405, &h, 1, "method_not_allowed", "%s answers %s", p,
				      allow);
		return 1;
	}
	if (strcmp(p, "/v1/config") == 0)
		post ? handle_push(f, ex, req) : handle_get(f, ex, req);
	else if (strcmp(p, "/v1/config/watch") == 0)
		handle_watch(f, ex, req);
	else if (strcmp(p, "/v1/config/report") == 0)
		handle_report(f, ex, req);
	else if (strcmp(p, "/v1/config/applied") == 0)
		handle_applied(f, ex, req);
	else if (strcmp(p, "/v1/config/versions") == 0)
		handle_versions(f, ex);
	else if (strcmp(p, "/v1/config/status") == 0) {
		mc_buf b;
		mc_buf_init(&b);
		fleet_json(f, &b);
		mc_buf_append_str(&b, "\n");
		respond_json(ex, 200, &b);
		mc_buf_fini(&b);
	} else if (strcmp(p, "/v1/rollout") == 0)
		post ? handle_rollout_start(f, ex, req) : handle_rollout_get(f, ex);
	else if (strcmp(p, "/v1/rollout/abort") == 0)
		handle_rollout_abort(f, ex);
	else if (strcmp(p, "/v1/keys/rotate") == 0)
		handle_rotate(f, ex, req);
	else
		handle_rotation_get(f, ex);
	return 1;
}

int mc_region_fleetconf_new(region_fleetconf **out, uv_loop_t *loop, const mc_region_conf *cf,
			    mc_metrics *metrics, const int *draining)
{
	region_fleetconf *f = mc_calloc(1, sizeof *f);
	f->loop = loop;
	f->cf = cf;
	f->metrics = metrics;
	f->draining = draining;
	snprintf(f->dir, sizeof f->dir, "%s/config", cf->data_dir);
	if (mkdir(cf->data_dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "metrocell region: cannot create %s: %s\n", cf->data_dir,
			strerror(errno));
		free(f);
		return -errno;
	}
	if (mkdir(f->dir, 0700) != 0 && errno != EEXIST) {
		int e = errno;
		fprintf(stderr, "metrocell region: cannot create %s: %s\n", f->dir, strerror(e));
		free(f);
		return -e;
	}
	int rc = load_versions(f);
	if (rc < 0) {
		fprintf(stderr, "metrocell region: cannot read %s: %s\n", f->dir, mc_strerror(rc));
		free(f);
		return rc;
	}
	rollout_load(f);
	rotation_load(f);
	if (f->nv)
		MC_INFO(COMP, "fleet config: %zu version(s) on disk, latest %" PRIu64, f->nv,
			latest(f)->version);
	mc_region_fleetconf_metrics(f);
	uv_timer_init(loop, &f->tick);
	f->tick.data = f;
	uv_timer_start(&f->tick, on_tick, TICK_MS, TICK_MS);
	*out = f;
	return 0;
}

static void on_tick_closed(uv_handle_t *h)
{
	region_fleetconf *f = h->data;
	for (size_t i = 0; i < f->nv; i++)
		version_fini(&f->v[i]);
	free(f->v);
	for (size_t i = 0; i < f->ncells; i++) {
		fcell *c = f->cells[i];
		for (size_t k = 0; k < RING; k++) {
			free(c->ring[k].idx);
			free(c->ring[k].cnt);
		}
		free(c->cum_hist);
		free(c->snap_hist);
		free(c->error);
		free(c);
	}
	free(f->cells);
	rollout_clear(&f->ro);
	free(f);
}

void mc_region_fleetconf_free(region_fleetconf *f)
{
	if (!f)
		return;
	while (f->watches)
		watch_finish(f, f->watches);
	uv_close((uv_handle_t *)&f->tick, on_tick_closed);
}
