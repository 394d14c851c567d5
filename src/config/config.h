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

#define MC_STATE_LINGER_US_DEFAULT 1000

typedef struct mc_state_conf {
	uint64_t map_size_mb;     /* default 4096, 16..1048576 */
	int durable;              /* "durability": "fsync" (default) | "none" */
	uint32_t max_batch;       /* default 4096, 1..100000 */
	uint32_t max_key_bytes;   /* default 256, 1..MC_STATE_MAX_KEY(256) */
	uint32_t max_value_bytes; /* default 1048576, 1..16777216 */
	uint32_t sweep_interval_ms;      /* TTL sweeper period, default 1000, 10..3600000 */
	uint32_t tombstone_retention_ms; /* default 3600000, 1000..2592000000 */
	uint32_t max_mget_keys;          /* keys in one multi-get, default 100, 1..1000 */
	uint32_t commit_linger_us;	 /* group-commit linger, 0..10000, default below */
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
	uint32_t header_timeout_ms;  /* a request head must arrive within (default 10000,
				      * 100..3600000) */
	uint32_t body_timeout_ms;    /* window in which a body must progress (default 10000,
				      * 100..3600000) */
	uint32_t body_min_rate;      /* bytes/s a body must average per window (default 0:
				      * at least one byte per window), 0..1073741824 */
	uint32_t max_inflight;       /* requests in flight; 503 beyond (default 1024,
				      * 1..1000000) */
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

/* Active health probes of a pool's workers (pools.NAME.health). */
typedef struct mc_health_conf {
	int enabled;          /* the object is present */
	char *path;           /* GET target, default "/healthz" */
	uint32_t interval_ms; /* default 2000, 10..3600000 */
	uint32_t timeout_ms;  /* default 1000, 1..60000 */
	uint32_t rise;        /* successes that make a worker healthy, default 2, 1..100 */
	uint32_t fall;        /* failures that make it unhealthy, default 3, 1..100 */
} mc_health_conf;

/* Passive outlier ejection (pools.NAME.outlier); docs/operations.md. */
typedef struct mc_outlier_conf {
	uint32_t consecutive_failures; /* default 5, 0 (off)..100000 */
	uint32_t failure_percent;      /* default 50, 0 (off)..100 */
	uint32_t window_ms;            /* default 10000, 100..3600000 */
	uint32_t min_requests;         /* default 20, 1..1000000 */
	uint32_t base_ejection_ms;     /* default 30000, 1..3600000 */
	uint32_t max_ejection_ms;      /* default 300000, base_ejection_ms..86400000 */
	uint32_t max_ejection_percent; /* default 50, 0..100 (at least one worker) */
	int count_5xx;                 /* a 5xx answer is a failure (default false) */
} mc_outlier_conf;

typedef struct mc_pool_conf {
	char *name;
	char **workers; /* "host:port" each; 1..64 */
	size_t nworkers;
	uint32_t connect_timeout_ms; /* default 1000, 1..60000 */
	uint32_t timeout_ms;         /* default 10000, 1..600000 */
	uint32_t max_conns;          /* per worker, default 64, 1..10000 */
	uint32_t max_queue;          /* per worker, waiting for a connection; default 256,
				      * 1..100000 */
	uint32_t max_outstanding;    /* whole pool, in flight + queued; 0 (default): no
				      * limit beyond max_conns and max_queue */
	mc_health_conf health;
	mc_outlier_conf outlier;
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

typedef enum { MC_ROUTE_PROXY = 1, MC_ROUTE_KV = 2, MC_ROUTE_FLAGS = 3, MC_ROUTE_CACHE = 4 } mc_route_kind;

/* What a quota's token buckets are keyed by. */
typedef enum { MC_QUOTA_KEY_IP = 1, MC_QUOTA_KEY_HEADER = 2 } mc_quota_key;

/* A route's quota (docs/config.md "quota"): token buckets of burst tokens refilled
 * at rate per second, one per key value. Routes naming the same quota define it
 * identically and share its buckets. */
typedef struct mc_quota_conf {
	char *name;        /* [a-z0-9_-]{1,31} */
	double rate;       /* tokens per second, (0, 1000000] */
	uint32_t burst;    /* bucket capacity, 1..1000000 */
	mc_quota_key key;
	char *header;      /* header name (MC_QUOTA_KEY_HEADER), else NULL */
	uint32_t max_keys; /* buckets kept at most (default 100000, 1..10000000) */
} mc_quota_conf;

/* An edge cache: the cell's "cache" object (its upstream is region.http, the
 * region's shield) or the region's "shield" (its upstream is origin). */
typedef struct mc_cache_conf {
	uint64_t max_bytes;          /* default 67108864, 65536..1099511627776 */
	uint64_t max_object_bytes;   /* default 1048576, 256..max_bytes */
	uint32_t shards;             /* default 16, a power of two in 1..256 */
	int policy;                  /* "policy": "s3fifo" (0, default) | "lru" (1) */
	uint32_t max_waiters;        /* collapsed misses per key, default 1024, 1..100000 */
	uint32_t connect_timeout_ms; /* to the upstream, default 1000, 1..60000 */
	uint32_t timeout_ms;         /* upstream response, default 10000, 1..600000 */
	uint32_t max_conns;          /* to the upstream, default 64, 1..10000 */
} mc_cache_conf;

typedef struct mc_route_conf {
	char *name;   /* unique; used as the metrics label */
	char *prefix; /* path prefix, starts with '/'; longest prefix wins */
	mc_route_kind kind;
	size_t pool; /* index into pools (proxy routes only) */
	mc_quota_conf *quota;    /* NULL when the route has none */
	uint32_t max_body_bytes; /* the route's own, else limits.max_body_bytes */
	/* proxy routes only (docs/config.md, docs/operations.md "Failure policy") */
	int fail_open;                  /* on_failure: "fail_closed" (default) | "fail_open" */
	int fail_on_5xx;                /* a worker's 5xx triggers the policy (default false) */
	int retry;                      /* one retry on another worker (default true) */
	uint32_t connect_timeout_ms;    /* default: the pool's connect_timeout_ms */
	uint32_t first_byte_timeout_ms; /* default: the pool's timeout_ms */
	uint32_t idle_timeout_ms;       /* between body pieces; default: the pool's timeout_ms */
	uint32_t budget_ms;             /* until the response starts; default connect + first byte */
	uint32_t fallback_timeout_ms;   /* the region's fallback, until it starts; default 5000 */
} mc_route_conf;

/* A feature flag: its name and its value rendered as compact JSON. */
typedef struct mc_flag_conf {
	char *name;  /* [A-Za-z0-9_.-]{1,64}, unique */
	char *json;  /* any JSON value but null, at most MC_FLAG_VALUE_MAX bytes */
	size_t json_len;
} mc_flag_conf;

#define MC_FLAG_VALUE_MAX 4096

/* One network of the locality map, host bits zero. */
typedef struct mc_cidr_conf {
	uint8_t family;   /* 4 or 6 */
	uint8_t bits;     /* prefix length, 0..32 or 0..128 */
	uint8_t addr[16]; /* network address (IPv4 uses the first 4 bytes) */
	uint32_t metro;   /* index into mc_locality_conf.metros */
} mc_cidr_conf;

/* Where clients come from (docs/config.md "locality"). */
typedef struct mc_locality_conf {
	char *metro;        /* this cell's metro (default: the cell name) */
	char **metros;      /* the keys of cidrs, in document order */
	size_t nmetros;
	mc_cidr_conf *cidrs;
	size_t ncidrs;
	int trust_header;   /* trust_client_metro_header: X-Client-Metro decides */
} mc_locality_conf;
/* ---- TLS (cell ingress) ---------------------------------------------------------------- */

#define MC_TICKET_KEYS_MAX 16
#define MC_TICKET_NAME_LEN 16
#define MC_TICKET_SECRET_LEN 32

/* One session-ticket key: the name is sent in clear inside each ticket, the
 * ticket is sealed with AES-256-CBC under aes_key and HMAC-SHA256 under
 * hmac_key. */
typedef struct mc_ticket_key_conf {
	uint8_t name[MC_TICKET_NAME_LEN];
	uint8_t aes_key[MC_TICKET_SECRET_LEN];
	uint8_t hmac_key[MC_TICKET_SECRET_LEN];
} mc_ticket_key_conf;

/* A ticket-key set: keys[0] encrypts new tickets, every key decrypts. Kept as
 * its own struct and validator so the fleet config can carry the same set. */
typedef struct mc_ticket_keys_conf {
	mc_ticket_key_conf keys[MC_TICKET_KEYS_MAX];
	size_t n; /* 0: none configured (the process makes a random key) */
} mc_ticket_keys_conf;

/* Decodes one key from the 160 hex digits of an 80-byte key in nginx's
 * ssl_session_ticket_key layout (name 16 | HMAC key 32 | AES key 32), upper or
 * lower case. Pure. Returns 0, or MC_EINVAL (wrong length or a non-hex digit). */
int mc_config_ticket_key_from_hex(const char *hex, size_t len, mc_ticket_key_conf *out);

typedef struct mc_h2_conf {
	uint32_t max_concurrent_streams; /* default 100, 1..1000 */
	uint32_t initial_window_size;    /* per stream, default 65535, 1024..2147483647 */
	uint32_t connection_window_size; /* default 1048576, 65535..2147483647 */
} mc_h2_conf;

typedef struct mc_tls_conf {
	int enabled;   /* the "tls" section is present */
	char *listen;  /* "host:port" of the TLS listener */
	char *cert;    /* PEM certificate chain file */
	char *key;     /* PEM private key file */
	mc_ticket_keys_conf ticket_keys;
	char *alpn[2]; /* "h2" and/or "http/1.1" in preference order */
	size_t nalpn;  /* default 2: h2, http/1.1 */
	int min_version;		/* 12 (default, "1.2") or 13 ("1.3") */
	uint32_t session_timeout_s;	/* default 3600, 1..604800 */
	uint32_t handshake_timeout_ms;	/* default 10000, 100..600000 */
	mc_h2_conf h2;
} mc_tls_conf;

/* Fleet telemetry and the event buffer (docs/config.md "telemetry"). */
typedef struct mc_telemetry_conf {
	uint32_t interval_ms;      /* cell: summary period, default 1000, 100..60000 */
	uint32_t stale_after_ms;   /* no view for longer is blind (cell) / stale (region);
				    * default 3000, 200..600000, > interval_ms on a cell */
	uint64_t events_max_bytes; /* cap of the event files: the cell's buffer (default
				    * 4194304), the region's copy per cell (default 16777216);
				    * 65536..1099511627776 */
} mc_telemetry_conf;

#define MC_CELL_THREADS_MAX 64

typedef struct mc_cell_conf {
	char *path;         /* the file it came from */
	char *cell;         /* [a-z0-9-]{1,31} */
	char *listen_http;  /* "host:port" */
	char *listen_admin; /* "host:port" (metrics) */
	/* Data-plane event-loop threads, each with its own SO_REUSEPORT listeners
	 * (docs/config.md "threads"); 0: one per online CPU. */
	uint32_t threads;
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
	mc_flag_conf *flags; /* document order */
	size_t nflags;
	mc_locality_conf locality;
	mc_tls_conf tls;
	mc_cache_conf cache; /* for "cache" routes (defaults when the key is absent) */
	mc_telemetry_conf telemetry;
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
	mc_pool_conf *fallback; /* the fallback path's upstream, NULL when not configured
				 * (name "fallback"; health and outlier unused) */
	char *shield_origin;  /* "shield.origin" host:port; NULL: no shield cache */
	mc_cache_conf shield; /* the shield's cache (when shield_origin is set) */
	mc_telemetry_conf telemetry; /* interval_ms unused */
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


/* ---- fleet config (docs/config.md "Fleet config") ------------------------------------------
 * The region's versioned document: routes, pools, flags, state-class rules, the
 * auth key set, TLS ticket keys, cells and rollout defaults. One validator (mc_fleet_conf_parse)
 * serves `ctl push`, the region and the cells; it runs the same section parsers
 * as the bootstrap file, so a route or pool means the same thing in both. */

#define MC_FLEET_MAX_BYTES (4u << 20) /* a larger fleet document is refused before parsing */
#define MC_AUTH_KEYS_MAX 32
#define MC_FLEET_CELLS_MAX 256

/* pending: published (verifiers accept it), not yet used to sign; active: the
 * one key new tokens are signed with; retiring: still accepted, no longer used. */
typedef enum { MC_KEY_PENDING = 0, MC_KEY_ACTIVE = 1, MC_KEY_RETIRING = 2 } mc_key_status;

extern const char *const mc_key_status_names[3];

/* One key of the JWT key set (auth_keys[i]). Nothing verifies tokens yet: the
 * set is validated and distributed so edge auth finds it in place. */
typedef struct mc_auth_key_conf {
	char *kid;  /* [A-Za-z0-9_.-]{1,64}, unique */
	char *alg;  /* HS256 HS384 HS512 (key: hex secret) or ES256 ES384 ES512 RS256
		     * RS384 RS512 PS256 PS384 PS512 EdDSA (key: PEM public key) */
	char *key;  /* as given; a secret for HS* (never logged) */
	mc_key_status status;
} mc_auth_key_conf;

/* One rollout stage: the cells that take a new version together. */
typedef struct mc_rollout_stage {
	char **cells;
	size_t ncells;
} mc_rollout_stage;

/* Rollout defaults ("rollout"): stages and the regression thresholds. */
typedef struct mc_rollout_conf {
	mc_rollout_stage *stages; /* may be empty */
	size_t nstages;
	uint32_t bake_ms;          /* default 10000, 0..86400000 */
	uint32_t apply_timeout_ms; /* a stage's cells must apply within (default 60000,
				    * 1000..3600000) or the rollout halts */
	uint32_t min_requests;     /* fewer requests after a stage: not judged (default 20) */
	double max_error_rate_increase_pct; /* default 1.0 percentage point, 0..100 */
	double max_error_rate_ratio;        /* default 2.0, >= 1 */
	double max_p95_ratio;               /* default 1.5, >= 1 */
	uint32_t p95_slack_ms;              /* default 5, 0..600000 */
} mc_rollout_conf;

typedef struct mc_fleet_conf {
	/* The dynamic parts in the shape of a cell config: pools, routes (quotas
	 * inside), flags; the rest of it is zero. For a cell (boot given) its
	 * per-cell overrides are applied. Free with the fleet conf. */
	mc_cell_conf *dyn;
	mc_auth_key_conf *auth_keys;
	size_t nauth_keys;
	int has_classes;     /* state_classes present (in dyn->classes); a cell applies
			      * them at its next start (the store opens with them) */
	int has_ticket_keys; /* tls_ticket_keys present */
	mc_ticket_keys_conf ticket_keys;
	char **cells; /* the keys of "cells", document order */
	size_t ncells;
	mc_rollout_conf rollout;
	int64_t version; /* the document's own "version" (informational), -1 when absent */
} mc_fleet_conf;

/* Validates a fleet document in full (at most MC_FLEET_MAX_BYTES; a larger one
 * is refused before parsing). boot is the cell's bootstrap config when a cell
 * validates (its limits and region.http apply, and cells.<boot->cell> overrides
 * are merged into dyn), or NULL (ctl, region: region.http is taken as set).
 * Pure: no I/O. Returns 0 and *out (free with mc_fleet_conf_free), or
 * MC_ECONFIG with "label:line:col: json.path: message" in err. */
int mc_fleet_conf_parse(const char *label, const char *text, size_t len, const mc_cell_conf *boot,
			mc_fleet_conf **out, char *err, size_t errcap);
void mc_fleet_conf_free(mc_fleet_conf *f);

/* Parses a command-line stage list "lax,sfo+sea" (',' separates stages, '+'
 * joins the cells of one stage). Returns 0 and out (free with
 * mc_rollout_stages_free), or MC_EINVAL with a message in err. */
int mc_rollout_stages_parse(const char *spec, mc_rollout_stage **out, size_t *n, char *err,
			    size_t errcap);
void mc_rollout_stages_free(mc_rollout_stage *s, size_t n);

#endif
