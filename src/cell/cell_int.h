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

typedef struct cell_route {
	const mc_route_conf *conf;
	size_t prefix_len;
	cell_pool *pool; /* proxy routes */
	mc_series *count[OUTCOME_COUNT];
	mc_series *latency[OUTCOME_COUNT];
} cell_route;

struct cell_kv;

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
	int stopping;
	struct cell_kv *kv; /* hot-state KV API (src/cell/kv*.c) */
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

/* The hot-state KV API's life cycle (src/cell/kv_state.c), in call order:
 * new (before the store opens), store_opts, shipper_opts, start (store and
 * shipper running), metrics (any time), fini (stop: before the store closes),
 * free (after the loop ended). */
void mc_cell_kv_new(cell *c);
void mc_cell_kv_store_opts(cell *c, mc_store_opts *so);
void mc_cell_kv_shipper_opts(cell *c, mc_repl_shipper_opts *ro);
void mc_cell_kv_start(cell *c);
void mc_cell_kv_metrics(cell *c);
void mc_cell_kv_fini(cell *c);
void mc_cell_kv_free(cell *c);
/* The KV route whose multi-get endpoint path is ("/v1/kv/" serves
 * "POST /v1/kv:mget"), or NULL. */
cell_route *mc_cell_kv_mget_route(cell *c, const char *path, size_t len);
void mc_cell_kv_mget(cell_req *r);

int mc_cell_pools_init(cell *c);
void mc_cell_pools_fini(cell *c);

#endif
