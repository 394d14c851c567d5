/* Declarations shared by the files of the region module: the regional KV API
 * (region_kv.c) and the table of which cells hold a copy of which key
 * (holders.c), from which the region sends INVALIDATE. */
#ifndef MC_REGION_INT_H
#define MC_REGION_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "http/http.h"
#include "obs/obs.h"
#include "repl/repl.h"

/* ---- fallback path (src/region/fallback.c) ----------------------------------------- */

typedef struct mc_region_fallback mc_region_fallback;

/* Creates the fallback path from conf->fallback (may be NULL: then every
 * fallback request is answered 503 no_fallback). Returns 0 and *out, or
 * MC_EINVAL when a fallback address does not parse. */
int mc_region_fallback_new(mc_region_fallback **out, uv_loop_t *loop, const mc_region_conf *conf,
			   mc_metrics *metrics);
/* Serves ex when it is a fallback request (it carries X-Metrocell-Fallback-From)
 * and returns 1; returns 0, touching nothing, for any other request. */
int mc_region_fallback_handle(mc_region_fallback *f, mc_http_exchange *ex);
/* Fails the requests in flight (their clients get 503) and frees the path once
 * the loop has run. Accepts NULL. */
void mc_region_fallback_free(mc_region_fallback *f);


/* The shield cache in front of the origin (src/region/shield.c). */
typedef struct region_shield region_shield;

/* Creates the shield when cf->shield_origin is set (else *out is NULL). Returns 0,
 * or a negative code after printing why. */
int mc_region_shield_new(region_shield **out, uv_loop_t *loop, const mc_region_conf *cf);
/* Completes what is in flight and frees. Accepts NULL. */
void mc_region_shield_free(region_shield *s);
/* Answers ex when it is a cell's shield request (it carries X-Metrocell-Shield;
 * 404 without a shield) and returns 1; returns 0 for any other request. */
int mc_region_shield_handle(region_shield *s, mc_http_exchange *ex);
/* Answers POST /v1/cache/purge (the shield, which may be NULL, then every connected
 * cell through the sink) and returns 1; returns 0 for any other path. */
int mc_region_cache_admin(region_shield *s, mc_repl_sink *sink, mc_http_exchange *ex);
/* Refreshes the metrocell_cache_* families in m. Accepts NULL. */
void mc_region_shield_metrics(region_shield *s, mc_metrics *m);

#include "state/state.h"

/* ---- copy holders (holders.c) ---------------------------------------------------------- */

/* Keys whose holders are tracked at most; beyond, the least recently used key is
 * forgotten (its holders' copies are then bounded only by their staleness bound). */
#define MC_HOLDERS_MAX_KEYS 100000
#define MC_HOLDERS_MAX_CELLS 1024

typedef struct mc_holders mc_holders;

/* Delivers INVALIDATE{version, key} to cell: returns 1 when it was sent, 0 when
 * the cell is not connected (the table keeps it pending until mc_holders_flush). */
typedef int (*mc_holders_send)(void *arg, const char *cell, const char *key, size_t klen,
			       uint64_t version);

typedef struct mc_holders_stats {
	uint64_t keys;	  /* keys tracked now */
	uint64_t pending; /* invalidations waiting for their cell to reconnect */
	uint64_t sent;	  /* INVALIDATE frames sent */
	uint64_t evicted; /* keys forgotten at MC_HOLDERS_MAX_KEYS */
} mc_holders_stats;

/* max_keys 0 means MC_HOLDERS_MAX_KEYS. self is the region's own name: never a
 * target. */
mc_holders *mc_holders_new(size_t max_keys, const char *self, mc_holders_send send, void *arg);
void mc_holders_free(mc_holders *h);
/* cell keeps a copy of key (it read it with X-Metrocell-Copy). */
void mc_holders_add(mc_holders *h, const char *key, size_t klen, const char *cell);
/* key was written at version by writer (a cell, or NULL for the region's own API),
 * replacing a record whose home was prev_home ("" none): every other holder, and
 * the previous home, get INVALIDATE; the writer stops being a holder. */
void mc_holders_written(mc_holders *h, const char *key, size_t klen, const char *writer,
			const char *prev_home, uint64_t version);
/* cell must drop what it holds of key older than version (e.g. its write lost
 * last-writer-wins): sent now, or kept pending. */
void mc_holders_invalidate(mc_holders *h, const char *key, size_t klen, const char *cell,
			   uint64_t version);
/* cell (re)connected: sends its pending invalidations. */
void mc_holders_flush(mc_holders *h, const char *cell);
void mc_holders_stats_get(const mc_holders *h, mc_holders_stats *out);

/* ---- the regional KV API (region_kv.c) -------------------------------------------------- */

typedef struct mc_region_kv mc_region_kv;

/* Created before the store opens (mc_region_kv_store_opts), wired to the sink
 * once both exist. metrics is the region's registry. */
mc_region_kv *mc_region_kv_new(uv_loop_t *loop, const mc_region_conf *cf, mc_metrics *metrics);
void mc_region_kv_store_opts(mc_region_kv *kv, mc_store_opts *so);
void mc_region_kv_sink_opts(mc_region_kv *kv, mc_repl_sink_opts *ko);
/* Starts the sweeper and the invalidations (store and sink running). */
void mc_region_kv_start(mc_region_kv *kv, mc_store *store, mc_repl_sink *sink);
/* 1 when path belongs to the KV API (/v1/kv/..., /v1/kv:mget). */
int mc_region_kv_owns(const char *path, size_t len);
void mc_region_kv_handle(mc_region_kv *kv, mc_http_exchange *ex);
void mc_region_kv_metrics(mc_region_kv *kv);
/* Stop: closes the timer, forgets the store and the sink (before they close). */
void mc_region_kv_fini(mc_region_kv *kv);
/* After the loop ended. Accepts NULL. */
void mc_region_kv_free(mc_region_kv *kv);

/* ---- fleet telemetry and events (src/region/fleet.c) ------------------------------------ */

typedef struct region_fleet region_fleet;

/* Creates the fleet view: the cells of cf->cells, and those with an event log
 * under data_dir/events. Returns 0. */
int mc_region_fleet_new(region_fleet **out, const mc_region_conf *cf);
/* The sink acknowledgements go through (NULL once the sink is freed). */
void mc_region_fleet_attach(region_fleet *f, mc_repl_sink *sink);
/* The sink's on_telemetry and on_events callbacks (arg is the fleet). */
void mc_region_fleet_on_telemetry(void *arg, const char *cell, const mc_repl_telemetry *t);
void mc_region_fleet_on_events(void *arg, const char *cell, const mc_repl_frame *f);
/* Answers GET /v1/fleet and GET /v1/events?cell=&after=&limit= and returns 1;
 * returns 0 for any other path (and when f is NULL). */
int mc_region_fleet_handle(region_fleet *f, mc_http_exchange *ex);
/* Refreshes the metrocell_fleet_* families in m. Accepts NULL. */
void mc_region_fleet_metrics(region_fleet *f, mc_metrics *m);
void mc_region_fleet_free(region_fleet *f); /* accepts NULL */

/* ---- fleet config: versions, watch, rollout, key rotation (src/region/fleetconf.c) ---------- */

typedef struct region_fleetconf region_fleetconf;

/* Loads the accepted versions and the rollout and rotation state from
 * cf->data_dir/config and starts the control-plane timer. *draining is read to
 * answer long polls at once when the region starts draining. Returns 0 or a
 * negative code after printing why. */
int mc_region_fleetconf_new(region_fleetconf **out, uv_loop_t *loop, const mc_region_conf *cf,
			mc_metrics *metrics, const int *draining);
/* Answers the long polls waiting and frees once the loop has run. Accepts NULL. */
void mc_region_fleetconf_free(region_fleetconf *f);
/* Serves ex when its path is one of the control-plane endpoints (/v1/config...,
 * /v1/rollout..., /v1/keys/...) and returns 1; returns 0 otherwise. */
int mc_region_fleetconf_handle(region_fleetconf *f, mc_http_exchange *ex);
/* The body limit of a control-plane request (MC_FLEET_MAX_BYTES for documents),
 * or 0 when the path is not one. */
size_t mc_region_fleetconf_body_limit(const char *method, const char *path, size_t len);
/* Appends ,"fleet_config":{...} (versions, per-cell applied version, rollout)
 * to a /v1/status body and refreshes the fleet metrics. */
void mc_region_fleetconf_status(region_fleetconf *f, mc_buf *b);
void mc_region_fleetconf_metrics(region_fleetconf *f);

/* ---- pure decisions (src/region/rollout.c) ------------------------------------------------ */

/* What a stage's cells answered in a window: requests, 5xx, p95 latency. */
typedef struct mc_rollout_sample {
	uint64_t requests;
	uint64_t errors;
	uint64_t p95_us;
} mc_rollout_sample;

typedef enum {
	MC_ROLLOUT_PASS = 0,
	MC_ROLLOUT_REGRESSED = 1,
	MC_ROLLOUT_NOT_JUDGED = 2 /* too few requests after the bake: the stage passes */
} mc_rollout_verdict;

/* Compares a stage after its bake with before, with t's thresholds: the error
 * rate regressed when it rose by more than max_error_rate_increase_pct points
 * and by more than max_error_rate_ratio times; p95 regressed when it exceeds
 * before * max_p95_ratio + p95_slack_ms (judged only when before has
 * min_requests). Writes one line on the verdict into why. */
mc_rollout_verdict mc_rollout_judge(const mc_rollout_conf *t, const mc_rollout_sample *before,
				    const mc_rollout_sample *after, char *why, size_t cap);

enum { MC_KEYS_AUTH = 0, MC_KEYS_TICKET = 1 };

/* Key rotation as edits of a fleet document (re-serialized, indented):
 * publish adds a key (auth: {kid: id, alg: HS256, key: material, status:
 * pending}; ticket: material, 160 hex digits, appended so cells decrypt with
 * it before anyone encrypts with it) and names the key in use in old_id;
 * activate makes id the signing key (auth: active, the previous active one
 * retiring; ticket: moved first); remove drops old_id. Each returns 0 and *out
 * (caller frees), or a negative code with why in err. */
int mc_fleet_doc_key_publish(const char *doc, size_t len, int kind, const char *id,
			     const char *material, char **out, size_t *outlen, char *old_id,
			     size_t old_cap, char *err, size_t cap);
int mc_fleet_doc_key_activate(const char *doc, size_t len, int kind, const char *id,
			      const char *old_id, char **out, size_t *outlen, char *err, size_t cap);
int mc_fleet_doc_key_remove(const char *doc, size_t len, int kind, const char *old_id, char **out,
			    size_t *outlen, char *err, size_t cap);

#endif
