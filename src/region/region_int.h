/* Declarations shared by the files of the region module. */
#ifndef MC_REGION_INT_H
#define MC_REGION_INT_H

#include <uv.h>

#include "config/config.h"
#include "http/http.h"
#include "obs/obs.h"

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

#include "repl/repl.h"

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
 * returns 0 for any other path. */
int mc_region_fleet_handle(region_fleet *f, mc_http_exchange *ex);
/* Refreshes the metrocell_fleet_* families in m. */
void mc_region_fleet_metrics(region_fleet *f, mc_metrics *m);
void mc_region_fleet_free(region_fleet *f); /* accepts NULL */

#endif
