/* Declarations shared by the files of the cell module. */
#ifndef MC_CELL_INT_H
#define MC_CELL_INT_H

#include <uv.h>

#include "common/common.h"
#include "config/config.h"
#include "http/http.h"
#include "net/net.h"
#include "obs/obs.h"
#include "repl/repl.h"
#include "state/state.h"

/* How a request was served (DESIGN.md section 1, "path outcome"). */
typedef enum {
	OUTCOME_LOCAL = 0,
	OUTCOME_CACHE_HIT,
	OUTCOME_CACHE_STALE,
	OUTCOME_CACHE_MISS,
	OUTCOME_FALLBACK,
	OUTCOME_REGIONAL,
	OUTCOME_REFUSED,
	OUTCOME_COUNT
} cell_outcome;

extern const char *const mc_cell_outcome_names[OUTCOME_COUNT];

typedef struct cell_pool {
	const mc_pool_conf *conf;
	mc_http_pool **workers; /* one keep-alive pool per worker address */
	size_t nworkers;
	uint64_t picks; /* drives the power-of-two choice */
} cell_pool;

typedef struct cell_edge cell_edge;   /* quotas, flags, locality (src/cell/edge.h) */
typedef struct cell_quota cell_quota; /* token buckets of one quota (quota.c) */

typedef struct cell_route {
	const mc_route_conf *conf;
	size_t prefix_len;
	cell_pool *pool; /* proxy routes */
	cell_quota *quota; /* NULL when the route has none */
	int served;        /* a request reached it since start (first_request cold start) */
	mc_series *count[OUTCOME_COUNT];
	mc_series *latency[OUTCOME_COUNT];
} cell_route;

/* The TLS listener's state (src/cell/tls.c). */
typedef struct cell_tls {
	mc_tls_ctx *ctx; /* the context new connections get; reloaded on SIGHUP */
	mc_tls_ticket_key keys[MC_TLS_TICKET_KEYS_MAX];
	size_t nkeys;
	uv_signal_t hup;
	int hup_started;
	mc_series *conns[3]; /* h1 plain, h1 over TLS, h2 */
	mc_series *handshakes[2]; /* full, resumed */
	mc_series *cold_full;
	mc_series *failures;
	mc_series *reloads[2]; /* ok, error */
} cell_tls;

typedef struct cell {
	uv_loop_t *loop;
	mc_cell_conf *conf;
	mc_store *store;
	mc_http_server *http;
	mc_http_server *admin;
	mc_repl_shipper *shipper;
	cell_pool *pools;
	size_t npools;
	cell_route *routes;
	size_t nroutes;
	mc_metrics *metrics;
	uint64_t start_ns;
	mc_http_graceful graceful; /* SIGTERM: drain, then stop */
	mc_http_header reject_headers[4]; /* on answers the HTTP server gives itself */
	cell_edge *edge;
	int stopping;
	cell_tls tls;
} cell;

/* Per-request state carried through asynchronous handlers. */
typedef struct cell_req {
	cell *c;
	mc_http_exchange *ex;
	cell_route *route;
	uint64_t seg_start_ns;   /* start of the state/upstream segment */
	const char *seg_name;    /* "state" or "upstream" */
	mc_buf key;              /* decoded KV key */
	int attempt;             /* proxy: 0 first try, 1 retry */
	size_t worker;           /* proxy: index of the worker used */
	mc_http_header *fwd;     /* proxy: forwarded request headers */
	mc_buf xff;              /* proxy: the X-Forwarded-For value sent */
	size_t nfwd;
} cell_req;

/* Answers ex with the standard cell headers (X-Metrocell-Cell, -Outcome, -Route,
 * Server-Timing) after extra, records metrics, frees r. */
void mc_cell_finish(cell_req *r, int status, cell_outcome outcome, const mc_http_header *extra,
		    size_t nextra, const void *body, size_t body_len);
/* The same with a JSON error body. */
void mc_cell_finish_error(cell_req *r, int status, cell_outcome outcome, const char *code,
			  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Route handlers. */
void mc_cell_kv_handle(cell_req *r);
void mc_cell_proxy_handle(cell_req *r);

int mc_cell_pools_init(cell *c);
void mc_cell_pools_fini(cell *c);

/* ---- edge features (edge.c, quota.c, flags.c, locality.c) ---- */

/* Builds quotas, the flags documents and the locality map, and registers their
 * metrics (every family renders from the start). Call after the routes exist. */
void mc_cell_edge_init(cell *c);
/* Releases what mc_cell_edge_init built. Accepts a cell without it. */
void mc_cell_edge_fini(cell *c);
/* Per routed request, before its quota and handler: locality accounting and
 * the route's first_request cold start. rt may be NULL (no route matched). */
void mc_cell_edge_account(cell *c, cell_route *rt, const mc_http_request *req);
/* Takes one token of r's route quota. Returns 0 when the request may go on, or
 * 1 when it was answered 429 (r is freed then). */
int mc_cell_quota_admit(cell_req *r);
/* `flags` routes: GET {prefix} (all flags) and GET {prefix}/{name}. */
void mc_cell_flags_handle(cell_req *r);
/* Counts a request whose critical path crossed to the region, by cause
 * ("fallback", "regional_route", "read_through", "regional_key", ...). */
void mc_cell_regional_count(cell *c, const char *cause);
/* Counts a cold start of kind ("upstream_connect", "tls_full_handshake",
 * "first_request", ...). */
void mc_cell_cold_start(cell *c, const char *kind);
/* TLS ingress (src/cell/tls.c): adds the TLS listener to c->http when the config
 * has a "tls" section, and installs the SIGHUP handler that reloads the
 * certificate (always installed, so a stray SIGHUP never kills a cell).
 * Returns 0 or a negative code after printing why to stderr. */
int mc_cell_tls_start(cell *c);
void mc_cell_tls_stop(cell *c);
/* mc_http_server_opts.on_conn of the data-plane server: connection metrics. */
void mc_cell_tls_on_conn(void *ctx, const mc_http_conn_info *info);

#endif
