/* Declarations shared by the files of the cell module. */
#ifndef MC_CELL_INT_H
#define MC_CELL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
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

typedef struct cell cell;
typedef struct cell_worker cell_worker; /* src/cell/pool.c */

/* A worker pool: health, outlier ejection and the choice of a worker
 * (src/cell/pool.c); docs/operations.md "Worker pools". */
typedef struct cell_pool {
	const mc_pool_conf *conf;
	cell *c;
	cell_worker **workers;
	size_t nworkers;
	struct cell_pool_shared *sh; /* health and counts shared by every thread's copy */
	uint64_t picks;     /* pick sequence: least recently picked wins a tie */
	uint64_t rng;       /* xorshift state for the two random choices */
	/* Config snapshots share a pool whose definition did not change, so its
	 * connections and health verdicts survive a swap (snapshot.c). */
	int refs;
	int closed;       /* mc_cell_pool_fini ran */
	mc_pool_conf own; /* conf points here: a copy owned by the pool */
} cell_pool;

typedef struct cell_edge cell_edge;   /* quotas, flags, locality (src/cell/edge.h) */
typedef struct cell_quota cell_quota; /* token buckets of one quota (quota.c) */

/* A proxy route's upstream metrics (proxy.c). */
typedef struct cell_route_proxy {
	mc_series *ttfb;    /* metrocell_upstream_ttfb_seconds{route} */
	mc_series *retries; /* metrocell_upstream_retries_total{route} */
	mc_series *aborts;  /* metrocell_upstream_stream_aborts_total{route} */
} cell_route_proxy;

struct mc_cache_engine;

typedef struct cell_route {
	const mc_route_conf *conf;
	size_t prefix_len;
	cell_pool *pool; /* proxy routes */
	cell_quota *quota; /* NULL when the route has none */
	/* A request reached it since start (first_request cold start), shared by
	 * every thread: served points at the main thread's snapshot's flag. */
	_Atomic int served_own;
	_Atomic int *served;
	mc_series *count[OUTCOME_COUNT];
	mc_series *latency[OUTCOME_COUNT];
	cell_route_proxy px;            /* proxy routes */
	struct mc_cache_engine *engine; /* cache routes: the cell's engine of that name */
} cell_route;

struct cell_kv;

/* The routing state built from one config version: immutable once installed,
 * reference counted. The cell holds a reference on the current one and every
 * request on the one it started with, so a swap never changes a request's
 * routes, pools or quotas midway; a retired snapshot is freed (its pools drained
 * and closed unless the next one shares them) when its last request ends.
 * src/cell/snapshot.c; docs/operations.md "Fleet config". */
typedef struct cell_snapshot {
	cell *c;
	int refs;
	struct cell_snapshot *next; /* c->snaps: every snapshot not freed yet */
	uint64_t version;           /* fleet version; 0 for the bootstrap routes */
	char sha256[65];            /* of the fleet document ("" for the bootstrap) */
	uint64_t accepted_ms;       /* wall ms the region accepted it (0: unknown) */
	uint64_t applied_ms;        /* wall ms this cell installed it */
	const char *source;         /* "bootstrap", "lkg" or "region" */
	mc_fleet_conf *fleet;       /* NULL for the bootstrap routes */
	const mc_cell_conf *conf;   /* pools, routes, flags: fleet->dyn or the bootstrap */
	cell_pool **pools;          /* by pool index of conf */
	size_t npools;
	cell_route *routes;
	size_t nroutes;
	cell_quota **quotas; /* distinct quotas of the routes */
	size_t nquotas;
	mc_buf flags_all;    /* body of GET {flags prefix}: every flag */
	/* Another thread's snapshot: the main thread's snapshot it was built from
	 * (one reference, released on the main thread), whose conf it uses. */
	struct cell_snapshot *origin;
	uv_timer_t reap;     /* frees the snapshot outside any callback */
	int reaping;
} cell_snapshot;

typedef struct cell_fleet cell_fleet; /* the watcher of the region's fleet config (fleet.c) */

typedef struct cell_cache cell_cache; /* src/cell/cache_route.c */

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

struct cell {
	uv_loop_t *loop;
	mc_cell_conf *conf;
	mc_store *store;
	mc_http_server *http;
	mc_http_server *admin;
	mc_repl_shipper *shipper;
	cell_snapshot *snap;  /* the routes new requests get */
	cell_snapshot *snaps; /* every snapshot not freed yet (snap included) */
	cell_fleet *fleet;    /* NULL without region.http */
	mc_metrics *metrics;
	cell_cache *cache; /* cache routes' store, shield pool and engines; NULL without */
	uint64_t start_ns;
	mc_net_stop_signals signals; /* main: SIGTERM/SIGINT drain, then stop */
	int draining;
	mc_http_header reject_headers[4]; /* on answers the HTTP server gives itself */
	cell_edge *edge;
	int stopping;
	cell_tls tls;
	struct cell_proxy *proxy; /* proxy routes' state: fallback link, metrics (proxy.c) */
	struct cell_telemetry *telem; /* summaries, event buffer, blind time (telemetry.c) */
	uint64_t config_version;      /* applied fleet config version, 0 until one is applied */
	struct cell_kv *kv; /* hot-state KV API (src/cell/kv*.c) */

	/* ---- data-plane threads (src/cell/threads.c) ----
	 * Every thread has a cell of its own: loop, listeners (SO_REUSEPORT), config
	 * snapshots, worker pools, edge state, metrics registry. The main thread's
	 * cell (idx 0) also owns what exists once per process: the store, the
	 * shipper, the fleet watcher, telemetry, the cache, the KV API and the admin
	 * listener; the other threads hand KV and cache requests to it. Pointers to
	 * those are NULL in the other threads' cells. */
	cell *main;                    /* the main thread's cell (itself there) */
	unsigned idx;                  /* 0 on the main thread */
	unsigned nthreads;             /* main: data-plane threads, itself included */
	struct cell_thread **threads;  /* main: the other threads, [0..nthreads-1) */
	mc_mailbox *mbox;              /* cross-thread calls into this cell's loop */
	pthread_mutex_t obs_lock;      /* main: rollout window and telemetry summaries */
	struct cell_shared_reg *quotas;   /* main: token buckets shared by every thread */
	size_t hops;                   /* requests handed to the main thread, unanswered */
	mc_series *m_thread_requests;  /* metrocell_thread_requests_total{thread} */
	mc_http_shared_limits limits;  /* main: max_connections / max_inflight of all threads */
	struct cell_shared_reg *pool_reg; /* main: pool health shared by every thread (pool.c) */
	mc_metrics *shards_view;       /* main: the other threads' metrics, last gathered */
	int gathering;                 /* main: a gather for telemetry is under way */
	struct drain_state *drain_state; /* main: a graceful drain under way */
	mc_http_drain *drain;          /* main: its own listener's drain */
};

/* Per-request state carried through asynchronous handlers. */
typedef struct cell_req {
	cell *c;
	cell_snapshot *snap; /* the request's routes: one reference held until it ends */
	mc_http_exchange *ex;
	cell_route *route;
	cell *home;              /* the thread whose listener owns ex, when not r->c's */
	uint64_t seg_start_ns;   /* start of the state/upstream segment */
	const char *seg_name;    /* "state" or "upstream" */
	mc_buf key;              /* decoded KV key */
	mc_http_header *fwd;     /* proxy: forwarded request headers */
	mc_buf xff;              /* proxy: the X-Forwarded-For value sent */
	size_t nfwd;
	struct proxy_req *px;    /* proxy: the request's upstream state (proxy.c) */
	uint64_t upstream_ns;    /* proxy: time on workers before a fallback (Server-Timing) */
} cell_req;

/* Answers ex with the standard cell headers (X-Metrocell-Cell, -Outcome, -Route,
 * Server-Timing) after extra, records metrics, frees r. */
void mc_cell_finish(cell_req *r, int status, cell_outcome outcome, const mc_http_header *extra,
		    size_t nextra, const void *body, size_t body_len);
/* mc_cell_finish with the handler's own headers own[0..nown) sent unchecked
 * after the standard ones and before extra (checked): only fields built from
 * constants and values the handler formatted itself (mc_http_respond_trusted). */
void mc_cell_finish_own(cell_req *r, int status, cell_outcome outcome, const mc_http_header *own,
			size_t nown, const mc_http_header *extra, size_t nextra, const void *body,
			size_t body_len);
/* mc_cell_finish() for a stored response whose fields are pre-rendered: raw is
 * sent after the standard headers and extra (see mc_http_respond_raw); raw and
 * body are borrowed for the call. */
void mc_cell_finish_raw(cell_req *r, int status, cell_outcome outcome, const mc_http_header *extra,
			size_t nextra, const char *raw, size_t raw_len, const void *body,
			size_t body_len);
/* The same with a JSON error body. */
void mc_cell_finish_error(cell_req *r, int status, cell_outcome outcome, const char *code,
			  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Streams an answer: sends the status and the standard cell headers after
 * extra (content_length as for mc_http_exchange_start_response) and records the
 * request's metrics (its duration is the time to the response head). The body
 * follows with mc_http_exchange_write_body(r->ex, ...); mc_cell_stream_end()
 * ends it (abort != 0 cuts it short) and frees r. Returns as
 * mc_http_exchange_start_response. */
int mc_cell_stream_start(cell_req *r, int status, cell_outcome outcome, const mc_http_header *extra,
			 size_t nextra, int64_t content_length);
/* The same at now_ns (mc_now_ns() the caller just read): one clock read less. */
int mc_cell_stream_start_at(cell_req *r, int status, cell_outcome outcome,
			    const mc_http_header *extra, size_t nextra, int64_t content_length,
			    uint64_t now_ns);
void mc_cell_stream_end(cell_req *r, int abort);

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
cell_route *mc_cell_kv_mget_route(struct cell_snapshot *s, const char *path, size_t len);
void mc_cell_kv_mget(cell_req *r);

/* The proxy routes' cell-wide state (the region's fallback pool, metrics);
 * fini also closes the pools of every snapshot (requests in flight fail with
 * MC_ECANCELED) at stop. */
int mc_cell_pools_init(cell *c);
void mc_cell_pools_fini(cell *c);
/* Creates the upstream metrics of proxy route rt. */
void mc_cell_proxy_route_init(cell *c, cell_route *rt);

/* ---- config snapshots (src/cell/snapshot.c) ---------------------------------------------- */

/* Builds a snapshot from fleet (taken over, freed on failure too; NULL: the
 * bootstrap routes of c->conf), sharing the pools and quotas of the current
 * snapshot that did not change. Returns 0 and *out (one reference, not yet
 * installed), or a negative code with a message in err. */
int mc_cell_snapshot_new(cell *c, mc_fleet_conf *fleet, cell_snapshot **out, char *err,
			 size_t errcap);
/* Makes s the current snapshot (taking over the caller's reference); the
 * previous one is released and drains. */
void mc_cell_snapshot_install(cell *c, cell_snapshot *s);
cell_snapshot *mc_cell_snapshot_ref(cell_snapshot *s);
/* Drops a reference; the last one frees the snapshot from the loop (never from
 * inside the caller's stack). Accepts NULL. */
void mc_cell_snapshot_unref(cell_snapshot *s);
/* At stop: releases the current snapshot and closes the pools of every
 * snapshot, so requests in flight end. */
void mc_cell_snapshots_close(cell *c);
/* Longest-prefix route of s for path, or NULL. */
cell_route *mc_cell_route_match(cell_snapshot *s, const char *path, size_t len);

/* Another thread's snapshot built from origin, a snapshot of the main thread
 * (the reference the caller holds passes to it, also on failure); shares the
 * pools of c's current snapshot that did not change. Runs on c's thread. */
int mc_cell_snapshot_new_from(cell *c, cell_snapshot *origin, cell_snapshot **out, char *err,
			      size_t errcap);
/* On another thread c: drops a reference on the main thread's snapshot origin
 * (posted to the main thread, which owns its reference count). */
void mc_cell_snapshot_release_origin(cell *c, cell_snapshot *origin);

/* ---- data-plane threads (src/cell/threads.c) ------------------------------------------ */

/* State the threads share, found by its definition in a registry of the main
 * thread (quota buckets, pool health): embedded first in the shared struct. */
typedef struct cell_shared {
	struct cell_shared *next;
	int refs; /* under the registry's lock */
} cell_shared;
typedef struct cell_shared_reg cell_shared_reg;
cell_shared_reg *mc_cell_shared_reg_new(void);
void mc_cell_shared_reg_free(cell_shared_reg *r); /* accepts NULL; every entry put back */
/* The entry for which same(entry, key) holds, with one more reference, else
 * make(key) (refs 1) added. With r NULL: make(key), shared with nobody. */
cell_shared *mc_cell_shared_get(cell_shared_reg *r, const void *key,
				bool (*same)(const cell_shared *e, const void *key),
				cell_shared *(*make)(const void *key));
/* Drops a reference; true when it was the last (then e is out of the registry
 * and the caller frees it). */
bool mc_cell_shared_put(cell_shared_reg *r, cell_shared *e);

/* The number of threads the config asks for ("threads", 0: online CPUs). */
unsigned mc_cell_threads_wanted(const mc_cell_conf *conf);
/* Starts the other data-plane threads once the main thread listens (their
 * listeners share its ports). Returns 0, or a negative code after printing why. */
int mc_cell_threads_start(cell *c);
/* The first stop signal: every thread drains its listeners (at most
 * limits.drain_timeout_ms), then done(c) runs on the main thread. */
void mc_cell_threads_drain(cell *c, void (*done)(cell *c));
/* Tells every other thread to stop (close listeners and pools, end its loop);
 * the main thread's mailbox closes once the last one has exited. */
void mc_cell_threads_stop(cell *c);
/* After the main loop ended: joins and frees the threads. */
void mc_cell_threads_free(cell *c);
/* On another thread: closes its mailbox once it is stopping and no handed-over
 * request waits for its answer, which lets its loop end. */
void mc_cell_thread_maybe_close(cell *c);
/* Creates c's per-thread series (call on c's thread). */
void mc_cell_thread_metrics(cell *c);
/* Sends a newly installed snapshot of the main thread to every other thread. */
void mc_cell_threads_install(cell *c, cell_snapshot *s);
/* Appends ,"thread_versions":[...] to a /v1/status body: the config version each
 * thread serves (the main thread's first), as the threads last reported it. */
void mc_cell_threads_versions(cell *c, mc_buf *b);
/* Gives a new TLS context to every other thread's listener. */
void mc_cell_threads_tls_ctx(cell *c, mc_tls_ctx *ctx);
/* Creates c->http, the data-plane listener on hostport, with the limits of
 * c->conf (src/cell/cell.c). Returns 0 or a negative code. */
int mc_cell_listen(cell *c, const char *hostport);
/* Hands request r (a KV, multi-get or cache route) of another thread to the
 * main thread, which answers it through mc_cell_finish*(); frees r. */
void mc_cell_hop(cell_req *r);
/* Main thread: fn(arg, merged) with a registry (the caller's to free) holding
 * the other threads' metrics (with_main: the main thread's too); fn may run
 * from inside the call (one thread). */
void mc_cell_gather(cell *c, int with_main, void (*fn)(void *arg, mc_metrics *merged), void *arg);
/* Main thread: starts gathering the other threads' metrics into
 * c->shards_view (telemetry reads the last one); nothing with one thread. */
void mc_cell_threads_refresh_view(cell *c);
/* Takes and releases the main thread's obs_lock when other threads run. */
void mc_cell_obs_lock(cell *c);
void mc_cell_obs_unlock(cell *c);

/* ---- fleet config watcher (src/cell/fleet.c) ----------------------------------------------- */

/* First thing at start (before the store opens): reads data_dir/config/lkg.json
 * when its checksum and validation pass, and takes its state_classes (the
 * store's classes change at a start only). Returns 0. */
int mc_cell_fleet_load(cell *c);
/* Before the listeners start: installs the first snapshot (the last-known-good
 * document, else the bootstrap routes). Returns 0 or a negative code after
 * printing why. */
int mc_cell_fleet_boot(cell *c);
/* Starts watching the region (needs region.http; nothing without). */
void mc_cell_fleet_start(cell *c);
void mc_cell_fleet_stop(cell *c);
/* Counts one answered request for the rollout summary sent to the region. */
void mc_cell_fleet_observe(cell *c, int status, uint64_t latency_us);
/* Adds "config":{...} (version, sha256, source, age, keys) to a /v1/status body
 * and sets metrocell_config_version / _age_seconds. */
void mc_cell_fleet_status(cell *c, mc_buf *b);
void mc_cell_fleet_metrics(cell *c);

/* ---- last-known-good file (src/cell/lkg.c) ------------------------------------------------- */

typedef struct mc_lkg_meta {
	uint64_t version;
	char sha256[65];
	uint64_t accepted_ms;
} mc_lkg_meta;

/* Writes doc as dir/lkg.json (temporary file, fsync, rename, fsync of dir) and
 * its checksum file dir/lkg.json.sha256 listing the new and the previous
 * document, so a crash between the two renames leaves a pair that checks.
 * Creates dir. Returns 0 or -errno. */
int mc_lkg_write(const char *dir, const char *doc, size_t len, const mc_lkg_meta *meta);
/* Reads dir/lkg.json (at most MC_FLEET_MAX_BYTES) and returns it in *doc
 * (caller frees) with its meta when its SHA-256 matches an entry of the
 * checksum file. Returns 0, MC_ENOTFOUND (no file), MC_ECRC (no entry matches),
 * MC_ETOOBIG, or -errno; why in err. */
int mc_lkg_read(const char *dir, char **doc, size_t *len, mc_lkg_meta *meta, char *err,
		size_t errcap);

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
/* Another thread's TLS listener on hostport (the main thread's bound TLS port)
 * with the main thread's context, and its connection metrics. */
int mc_cell_tls_start_thread(cell *c, const char *hostport);
/* Replaces the ticket keys of the context new TLS connections get (open
 * connections keep theirs); keys->n == 0 keeps the current keys. Returns 0, or
 * a negative code with why in err (the old context stays). No-op without TLS. */
int mc_cell_tls_set_ticket_keys(cell *c, const mc_ticket_keys_conf *keys, char *err, size_t cap);
/* mc_http_server_opts.on_conn of the data-plane server: connection metrics. */
void mc_cell_tls_on_conn(void *ctx, const mc_http_conn_info *info);
/* ---- worker pools (src/cell/pool.c) ---------------------------------------------------- */

/* What every thread's copy of a worker shares: its health, its outlier state
 * and its outstanding requests (src/cell/pool.c). */
typedef struct cell_worker_shared {
	_Atomic int healthy;                /* the probes' verdict (the main thread probes) */
	_Atomic uint64_t ejected_until_ms;  /* 0 when not ejected */
	_Atomic size_t outstanding;         /* every thread's requests on the worker */
	/* under the pool's lock */
	uint64_t last_uneject_ms;
	uint32_t times_ejected; /* drives the ejection time; decays */
	uint32_t consecutive_failures;
	struct {
		uint64_t epoch; /* now_ms / bucket length when last used */
		uint32_t total, failures;
	} win[10]; /* the failure-percentage window in 10 buckets */
} cell_worker_shared;

struct cell_worker {
	cell_pool *pool;
	size_t idx;
	const char *addr;
	cell_worker_shared *sh;
	mc_http_pool *http;  /* keep-alive connections for requests (this thread's) */
	mc_http_pool *probe; /* health probes (NULL without probes, or off the main thread) */
	uv_timer_t probe_timer, eject_timer;
	int open_handles;    /* timers not closed yet; the worker is freed at 0 */
	int closing;
	int probing;         /* a probe is in flight */
	uint32_t probe_ok, probe_fail; /* consecutive probe results */
	uint64_t last_pick;
	/* gauges: the main thread's pools only, refreshed from sh (mc_cell_pools_gauges) */
	mc_series *m_healthy, *m_ejected, *m_outstanding;
	mc_series *m_ejections;
};

/* Sets the pool up (workers' connection pools, probes, metrics). Returns 0 or a
 * negative code (an address that does not parse). */
int mc_cell_pool_init(cell *c, cell_pool *p, const mc_pool_conf *conf);
/* Stops probes and timers and frees the connection pools (pending requests fail
 * with MC_ECANCELED from here); worker memory goes once its timers closed. */
void mc_cell_pool_fini(cell_pool *p);
/* 1 when w may get requests at now_ms: healthy by its probes and not ejected. */
int mc_cell_worker_eligible(const cell_worker *w, uint64_t now_ms);
/* Requests in flight or queued on any worker of the pool, every thread's. */
size_t mc_cell_pool_outstanding(const cell_pool *p);
/* Two pool definitions that behave the same (name included). */
bool mc_cell_pool_conf_same(const mc_pool_conf *a, const mc_pool_conf *b);
/* Main thread, before /metrics: the worker gauges of the current pools. */
void mc_cell_pools_gauges(cell *c);
/* Power of two choices on outstanding requests among eligible workers other than
 * avoid (may be NULL); a tie goes to the least recently picked. NULL when none. */
cell_worker *mc_cell_pool_pick(cell_pool *p, const cell_worker *avoid, uint64_t now_ms);
/* Counts a request on w from its start to its end (streams included). */
void mc_cell_worker_begin(cell_worker *w);
void mc_cell_worker_end(cell_worker *w);
/* Records one outcome of a request on w (failed: connect error, timeout, 5xx
 * when the pool counts them, ...) for outlier detection. Returns 1 when it
 * ejected w now. */
int mc_cell_worker_observe(cell_worker *w, int failed, uint64_t now_ms);
/* Workers ejected at now_ms. */
size_t mc_cell_pool_ejected(const cell_pool *p, uint64_t now_ms);
/* Monotonic milliseconds (the clock of the functions above). */
uint64_t mc_cell_now_ms(void);

/* ---- failure policy (src/cell/policy.c) ------------------------------------------------ */

/* Why a proxy request could not be served by the cell's workers. */
typedef enum {
	CAUSE_CONNECT_FAILED = 0, /* the connection to a worker could not be made */
	CAUSE_TIMEOUT,            /* connect, first byte or the route's budget ran out */
	CAUSE_NO_HEALTHY_WORKER,  /* every worker unhealthy or ejected */
	CAUSE_OVERLOADED,         /* pool at max_outstanding or a worker's queue full */
	CAUSE_UPSTREAM_5XX,       /* a worker answered 5xx and the route fails on it */
	CAUSE_UPSTREAM_ERROR,     /* reset or malformed answer before the first byte */
	CAUSE_COUNT
} cell_cause;

extern const char *const mc_cell_cause_names[CAUSE_COUNT];

/* The cause an upstream call's error stands for (MC_ETIMEDOUT: timeout; refused,
 * unreachable: connect_failed; anything else: upstream_error). */
cell_cause mc_cell_cause_of(int err);
/* Counts one application of the route's policy in
 * metrocell_failure_policy_total{cell,route,cause,action}. */
void mc_cell_policy_count(cell *c, const cell_route *rt, cell_cause cause, int fail_open);
/* fail_closed: answers 503 {"error":"upstream_unavailable"} naming the cause and
 * what happened (detail), with X-Metrocell-Failure-Cause; frees r. */
void mc_cell_policy_fail_closed(cell_req *r, cell_cause cause, const char *detail);
/* fail_open whose fallback failed too: 502 when the region answered with an
 * error, else 503, {"error":"fallback_failed"} naming both causes; frees r. */
void mc_cell_policy_fallback_failed(cell_req *r, cell_cause cause, const char *detail,
				    cell_cause fcause, const char *fdetail, int region_answered);

/* Cache routes (src/cell/cache_route.c). init creates the store, the pool to the
 * region's shield and one engine per cache route (nothing without cache routes);
 * fini frees them after completing what is in flight. */
void mc_cell_cache_handle(cell_req *r);
int mc_cell_cache_init(cell *c);
void mc_cell_cache_fini(cell *c);
/* Sets rt->engine to the cell's engine for that route name (an engine outlives
 * snapshots: background refreshes may be in flight), creating the cache store
 * and the shield pool on first use. Returns 0 or a negative code (err). */
int mc_cell_cache_route_init(cell *c, cell_route *rt, char *err, size_t errcap);
/* Refreshes the metrocell_cache_* families in c->metrics. */
void mc_cell_cache_metrics(cell *c);
/* Answers POST /v1/cache/purge on the admin listener; returns 1 when the request
 * was that one (answered), 0 otherwise. */
int mc_cell_cache_admin(cell *c, mc_http_exchange *ex);
/* The shipper's on_purge callback (arg is the cell). */
void mc_cell_cache_on_purge(void *arg, bool prefix, const char *host, size_t host_len,
			    const char *pattern, size_t pattern_len);

/* ---- fleet telemetry and the event buffer (src/cell/telemetry.c) ------------------------ */

typedef struct cell_telemetry cell_telemetry;

/* Opens the event buffer under data_dir/events, emits cell_start and starts the
 * summary timer. Returns 0 or a negative code after printing why. */
int mc_cell_telemetry_start(cell *c);
/* Emits cell_stop and closes the timers (the buffer stays open). Idempotent. */
void mc_cell_telemetry_stop(cell *c);
/* After the loop has run the close callbacks: closes the buffer and frees. */
void mc_cell_telemetry_fini(cell *c);
/* Counts one answered request and its duration for the current interval. */
void mc_cell_telemetry_record(cell *c, int outcome, uint64_t us);
/* The shipper's on_link and on_obs_ack callbacks (arg is the cell). */
void mc_cell_telemetry_on_link(void *arg, int up);
void mc_cell_telemetry_on_obs_ack(void *arg, uint8_t kind, uint64_t stream, uint64_t seq);
/* Refreshes the metrocell_blind_*, metrocell_events_* and metrocell_telemetry_*
 * families. */
void mc_cell_telemetry_metrics(cell *c);
/* Answers GET /v1/events (the buffer) and POST /v1/events (an annotation) on the
 * admin listener; returns 1 when the request was that path, 0 otherwise. */
int mc_cell_telemetry_admin(cell *c, mc_http_exchange *ex);
/* Writes an event into the cell's buffer: members as (spec, value) pairs ended by
 * NULL, see mc_evbuf_emit ("s:name" const char *, "u:name" uint64_t, "i:name"
 * int64_t, "f:name" double, "b:name" int). Accepts NULL or a cell without a buffer. */
void mc_cell_event(cell *c, const char *type, ...);
/* The applied fleet config version reported in telemetry (0: none yet). */
uint64_t mc_cell_config_version(const cell *c);
/* Hook for the fleet config: records version as applied and emits config_applied
 * (sha256 may be NULL). */
void mc_cell_config_applied(cell *c, uint64_t version, const char *sha256);

#endif
