/* Private to the cell's edge files (edge.c, quota.c, flags.c, locality.c): the
 * state behind quotas, feature flags and locality accounting. */
#ifndef MC_CELL_EDGE_H
#define MC_CELL_EDGE_H

#include "cell/cell_int.h"

typedef struct cell_locality cell_locality;

/* Quotas and the flags document belong to the config snapshot (snapshot.c). */
struct cell_edge {
	cell_locality *loc;
};

/* The series name{cell="<cell>"[,k1="v1"[,k2="v2"]]} (values escaped here);
 * k1/k2 may be NULL. */
mc_series *mc_cell_series(cell *c, const char *name, const char *help, mc_metric_type type,
			  const char *k1, const char *v1, const char *k2, const char *v2);

/* ---- quota.c ---- */

/* What one token request found. */
typedef struct quota_verdict {
	int allowed;
	double tokens;      /* left after the request */
	uint64_t retry_s;   /* limited: seconds until one token (>= 1) */
	uint64_t reset_s;   /* seconds until the bucket is full again */
} quota_verdict;

/* Token buckets for one quota, at most conf->max_keys of them; counters under
 * metrics (allowed, limited, evictions, buckets) when c is not NULL. */
cell_quota *mc_cell_quota_new(cell *c, const mc_quota_conf *conf);
/* Quotas are shared by snapshots whose routes define them identically (their
 * buckets survive a config swap): ref takes one more reference, free drops one
 * and frees at the last. The quota keeps its own copy of conf. */
cell_quota *mc_cell_quota_ref(cell_quota *q);
void mc_cell_quota_free(cell_quota *q); /* accepts NULL */
const mc_quota_conf *mc_cell_quota_conf(const cell_quota *q);
/* Takes one token from key's bucket at time now_ns (monotonic). */
void mc_cell_quota_take(cell_quota *q, const char *key, size_t klen, uint64_t now_ns,
			quota_verdict *out);
/* Main thread, before /metrics: metrocell_quota_buckets of the current quotas
 * from the buckets every thread shares. */
void mc_cell_quotas_gauges(cell *c);
/* Buckets held now. */
size_t mc_cell_quota_buckets(const cell_quota *q);

/* ---- flags.c ---- */

/* Renders the body of GET {prefix}: {"flags":{name:value,...}}. */
void mc_cell_flags_render(const mc_cell_conf *conf, mc_buf *out);

/* ---- locality.c ---- */

cell_locality *mc_cell_locality_new(cell *c);
void mc_cell_locality_free(cell_locality *l); /* accepts NULL */
/* Counts req's client metro, the violation or the marked failover. */
void mc_cell_locality_account(cell_locality *l, const mc_http_request *req);
/* The metro of a client address ("ip:port" or "[ip6]:port" as in
 * mc_http_request.peer) from the CIDR map, longest prefix first: an index into
 * conf->locality.metros, or -1. */
int mc_cell_locality_lookup(const cell_locality *l, const char *peer);

#endif
