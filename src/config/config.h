/* Bootstrap configuration of a cell and of the region: parsed from JSON with
 * jansson, validated in full (unknown keys and out-of-range values are errors),
 * and returned as immutable structs. Errors name file:line:column, the JSON path
 * and what was expected, e.g.
 *   cell.json:7:15: listen.http: expected "host:port", got 42
 * docs/config.md documents every key. */
#ifndef MC_CONFIG_H
#define MC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define MC_CONFIG_MAX_BYTES (1u << 20) /* a bootstrap file larger than this is refused */
#define MC_CONFIG_ERR_MAX 512

typedef struct mc_log_conf {
	mc_log_level level; /* "debug|info|warn|error", default info */
	int json;           /* "format": "text" (default) | "json" */
} mc_log_conf;

typedef struct mc_state_conf {
	uint64_t map_size_mb;     /* default 4096, 16..1048576 */
	int durable;              /* "durability": "fsync" (default) | "none" */
	uint32_t max_batch;       /* default 4096, 1..100000 */
	uint32_t max_key_bytes;   /* default 256, 1..MC_STATE_MAX_KEY(256) */
	uint32_t max_value_bytes; /* default 1048576, 1..16777216 */
	uint32_t sweep_interval_ms;      /* TTL sweeper period, default 1000, 10..3600000 */
	uint32_t tombstone_retention_ms; /* default 3600000, 1000..2592000000 */
	uint32_t max_mget_keys;          /* keys in one multi-get, default 100, 1..1000 */
} mc_state_conf;

typedef struct mc_limits_conf {
	uint32_t max_header_bytes;   /* default 16384, 1024..1048576 */
	uint32_t max_headers;        /* default 64, 8..1024 */
	uint32_t max_body_bytes;     /* default 1048576, 0..67108864 */
	uint32_t idle_timeout_ms;    /* default 60000, 100..3600000 */
	uint32_t request_timeout_ms; /* default 30000, 100..3600000 */
	uint32_t max_connections;    /* default 10000, 1..1000000 */
	uint32_t drain_timeout_ms;   /* SIGTERM: in-flight requests may finish this long
				      * (default 10000, 0..600000) */
} mc_limits_conf;

typedef struct mc_repl_conf {
	uint32_t batch_max_entries; /* default 1024, 1..65536 */
	uint32_t heartbeat_ms;      /* default 1000, 10..60000 */
	uint32_t dead_after_ms;     /* default 5000, must be > heartbeat_ms, <= 600000 */
	/* Cell only: bounds of the unacknowledged write log; beyond either one,
	 * replicated writes are refused with 503 backlog_full. */
	uint64_t backlog_max_bytes;  /* default 1073741824, 4096..1099511627776 */
	uint32_t backlog_max_age_ms; /* default 3600000, 100..604800000 */
} mc_repl_conf;

typedef struct mc_pool_conf {
	char *name;
	char **workers; /* "host:port" each; 1..64 */
	size_t nworkers;
	uint32_t connect_timeout_ms; /* default 1000, 1..60000 */
	uint32_t timeout_ms;         /* default 10000, 1..600000 */
	uint32_t max_conns;          /* per worker, default 64, 1..10000 */
} mc_pool_conf;

/* State-class rules (DESIGN.md section 4): which keys are local, replicated or
 * regional, and how they are acknowledged and cached. Its own table with its own
 * validator (mc_class_rules_parse) so the fleet config can carry it later. */
typedef enum { MC_SCLASS_REPLICATED = 0, MC_SCLASS_LOCAL = 1, MC_SCLASS_REGIONAL = 2 } mc_sclass;

typedef struct mc_class_rule_conf {
	char *prefix;                      /* "" is the default rule */
	mc_sclass cls;                     /* "class" */
	int ack_region;                    /* "ack": "local" (0, default) | "region" (1) */
	uint32_t ack_timeout_ms;           /* ack region: 504 after, default 5000, 1..600000 */
	uint32_t replica_max_staleness_ms; /* replicated: copy bound, default 5000, 0..86400000 */
	uint32_t cache_ttl_ms;             /* regional: read cache, default 0 (none), 0..86400000 */
	uint32_t region_timeout_ms;        /* a call to the region, default 2000, 1..60000 */
} mc_class_rule_conf;

typedef struct mc_class_rules_conf {
	/* In document order, then the built-in default rule (prefix "", replicated,
	 * ack local) unless the document has a rule with prefix "". Longest prefix wins. */
	mc_class_rule_conf *rules;
	size_t n;
} mc_class_rules_conf;

/* Parses a JSON array of rules (the value of "state_classes") from text; label
 * names it in messages. Returns 0 (free with mc_class_rules_fini) or MC_ECONFIG
 * with the message in err. */
int mc_class_rules_parse(const char *label, const char *text, size_t len, mc_class_rules_conf *out,
			 char *err, size_t errcap);
/* The rule a key falls under (never NULL: there is always a default rule). */
const mc_class_rule_conf *mc_class_rules_match(const mc_class_rules_conf *r, const char *key,
					       size_t klen);
void mc_class_rules_fini(mc_class_rules_conf *r);
/* "replicated", "local" or "regional". */
const char *mc_sclass_name(mc_sclass c);

typedef enum { MC_ROUTE_PROXY = 1, MC_ROUTE_KV = 2 } mc_route_kind;

typedef struct mc_route_conf {
	char *name;   /* unique; used as the metrics label */
	char *prefix; /* path prefix, starts with '/'; longest prefix wins */
	mc_route_kind kind;
	size_t pool; /* index into pools (proxy routes only) */
} mc_route_conf;

typedef struct mc_cell_conf {
	char *path;         /* the file it came from */
	char *cell;         /* [a-z0-9-]{1,31} */
	char *listen_http;  /* "host:port" */
	char *listen_admin; /* "host:port" (metrics) */
	char *data_dir;
	char *region_repl;  /* "host:port" of the region's replication listener */
	char *region_http;  /* "host:port" of the region's HTTP API (optional, may be NULL) */
	mc_log_conf log;
	mc_state_conf state;
	mc_limits_conf limits;
	mc_repl_conf repl;
	mc_pool_conf *pools;
	size_t npools;
	mc_route_conf *routes;
	size_t nroutes;
	mc_class_rules_conf classes; /* "state_classes" */
} mc_cell_conf;

typedef struct mc_region_conf {
	char *path;
	char *region;       /* [a-z0-9-]{1,31} */
	char *listen_http;  /* KV read API and /metrics */
	char *listen_repl;  /* replication listener for cells */
	char *data_dir;
	char **cells;       /* cells allowed to connect; empty = any */
	size_t ncells;
	mc_log_conf log;
	mc_state_conf state;
	mc_limits_conf limits;
	mc_repl_conf repl;
} mc_region_conf;

/* Reads and validates a cell config file. Returns 0 and *out (free with
 * mc_cell_conf_free), or MC_ECONFIG with the message in err (NUL terminated,
 * truncated to errcap), or -errno when the file cannot be read (message in err). */
int mc_cell_conf_load(const char *path, mc_cell_conf **out, char *err, size_t errcap);
/* The same on a buffer; label is the name used in messages. */
int mc_cell_conf_parse(const char *label, const char *text, size_t len, mc_cell_conf **out,
		       char *err, size_t errcap);
void mc_cell_conf_free(mc_cell_conf *c);

int mc_region_conf_load(const char *path, mc_region_conf **out, char *err, size_t errcap);
int mc_region_conf_parse(const char *label, const char *text, size_t len, mc_region_conf **out,
			 char *err, size_t errcap);
void mc_region_conf_free(mc_region_conf *c);

#endif
