/* The asynchronous backplane: the frame codec (pure: bytes in, struct out),
 * the cell's shipper and the region's sink. docs/protocol.md is the byte-level
 * specification. */
#ifndef MC_REPL_H
#define MC_REPL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "common/common.h"
#include "state/state.h"

#define MC_REPL_PROTO_VERSION 1
/* Largest payload (type byte excluded) a receiver accepts. 16 MiB plus 64 KiB so
 * that one entry carrying a value of MC_STATE_MAX_VALUE bytes (the largest the
 * store accepts) plus its key and headers always fits in one ENTRIES frame. */
#define MC_REPL_MAX_FRAME ((16u << 20) + (64u << 10))
#define MC_REPL_HDR 5                 /* u32 length + u8 type */
#define MC_REPL_TRAILER 4             /* u32 crc32c */

typedef enum {
	MC_FRAME_HELLO = 1,
	MC_FRAME_ENTRIES = 2,
	MC_FRAME_ACK = 3,
	MC_FRAME_HEARTBEAT = 4,
	MC_FRAME_FENCE = 5,
	MC_FRAME_INVALIDATE = 6,
	MC_FRAME_PURGE = 7,
	/* Observability (docs/protocol.md sections 3 and 6; 8..15 are left free). */
	MC_FRAME_TELEMETRY = 16,
	MC_FRAME_EVENTS = 17,
	MC_FRAME_OBS_ACK = 18,
} mc_frame_type;

/* ---- observability frames -------------------------------------------------------------- */

#define MC_REPL_TELEM_VERSION 1
#define MC_REPL_TELEM_OUTCOMES 7 /* outcome ids 0..6: local, cache_hit, cache_stale,
				  * cache_miss, fallback, regional, refused */
#define MC_REPL_TELEM_FIXED 156  /* payload bytes before the outcome records */
#define MC_REPL_TELEM_OUTCOME 25 /* bytes of one outcome record */

enum { MC_REPL_HEALTH_OK = 0, MC_REPL_HEALTH_DEGRADED = 1, MC_REPL_HEALTH_DRAINING = 2 };
/* health_flags bits (others are reserved, carried and ignored). */
#define MC_REPL_HEALTH_POOL_DOWN 1u /* a worker pool has no eligible worker */

/* One outcome's requests: since the cell started (total) and over the interval
 * (count and its latency quantiles in microseconds; 0 when count is 0). */
typedef struct mc_repl_telem_outcome {
	uint8_t id;
	uint64_t total;
	uint32_t count;
	uint32_t p50_us, p95_us, p99_us;
} mc_repl_telem_outcome;

/* TELEMETRY: a cell's summary of one interval (docs/protocol.md section 3). */
typedef struct mc_repl_telemetry {
	uint8_t health; /* MC_REPL_HEALTH_* */
	uint32_t health_flags;
	uint64_t seq;         /* 1, 2, ... per cell process; the region echoes it in OBS_ACK */
	uint64_t wall_ms;     /* the cell's clock at the end of the interval */
	uint32_t interval_ms; /* length of the interval */
	uint64_t uptime_ms;
	uint64_t config_version;           /* applied fleet config (0: none) */
	uint64_t regional, regional_total; /* requests with a regional cause: interval, total */
	uint64_t cache_hit, cache_stale, cache_miss; /* cache route results, interval */
	uint64_t locality_violations_total;
	uint64_t cold_starts_total;
	uint64_t repl_lag_entries;       /* unacknowledged write-log entries now */
	uint64_t repl_oldest_unacked_ms; /* age of the oldest of them (0: none) */
	uint32_t repl_ack_p50_us, repl_ack_p99_us; /* commit-to-ACK over the interval */
	uint64_t events_pending, events_dropped_total;
	uint64_t blind_last_window_ms, blind_total_ms; /* the cell's own record */
	uint8_t n_outcomes;
	mc_repl_telem_outcome outcomes[MC_REPL_TELEM_OUTCOMES]; /* ids strictly increasing */
} mc_repl_telemetry;

/* EVENTS bounds: events per frame and bytes of one event (a JSON object on one
 * line, without the newline). */
#define MC_REPL_EVENTS_MAX_N 1024
#define MC_REPL_EVENT_MAX 4096

/* OBS_ACK kinds. */
enum { MC_REPL_OBS_ACK_TELEMETRY = 1, MC_REPL_OBS_ACK_EVENTS = 2 };

/* PURGE: host + pattern bytes at most (the frame stays under the cell's 1 KiB bound
 * for region-to-cell frames). */
#define MC_REPL_PURGE_MAX 1000

typedef struct mc_repl_hello {
	uint16_t proto;
	char cell[MC_STATE_MAX_HOME + 1];
	uint64_t epoch;
	uint64_t last_acked_seq;
	uint64_t config_version;
} mc_repl_hello;

/* A decoded frame. For ENTRIES, entries/entries_len point into the input buffer
 * (already validated); walk them with mc_repl_entries_next(). */
typedef struct mc_repl_frame {
	uint8_t type;
	union {
		mc_repl_hello hello;
		struct {
			uint64_t first_seq;
			uint32_t n;
			const uint8_t *data;
			size_t data_len;
		} entries;
		uint64_t ack_seq;
		uint64_t heartbeat_hlc;
		uint64_t fence_epoch;
		struct {
			uint64_t version;
			const char *key;
			size_t klen;
		} invalidate;
		struct {
			bool prefix; /* the pattern is a target prefix, else an exact target */
			const char *host; /* host_len 0: every host */
			size_t host_len;
			const char *pattern;
			size_t pattern_len;
		} purge;
		mc_repl_telemetry telemetry;
		struct {
			uint64_t stream;    /* the cell's event stream id */
			uint64_t first_seq; /* seq of the first event; event i has first_seq + i */
			uint32_t n;
			const uint8_t *data; /* the n length-prefixed events, in the input */
			size_t data_len;
		} events;
		struct {
			uint8_t kind; /* MC_REPL_OBS_ACK_* */
			uint64_t stream;
			uint64_t seq;
		} obs_ack;
	} u;
} mc_repl_frame;

/* Decodes one frame from buf. Returns bytes consumed (> 0), MC_EAGAIN when more
 * bytes are needed, MC_ETOOBIG when the declared length exceeds max_payload,
 * MC_ECRC on a checksum mismatch, MC_EPROTO on an unknown type or a malformed
 * payload. max_payload is capped at MC_REPL_MAX_FRAME. Pointers in *out
 * (entries data, invalidate key) point into buf. MC_ETOOBIG is reported as soon
 * as the 4 length bytes are in, so a receiver never buffers an oversize frame. */
int mc_repl_frame_decode(const uint8_t *buf, size_t len, size_t max_payload, mc_repl_frame *out);

/* Encoders append one whole frame to out. */
void mc_repl_encode_hello(mc_buf *out, const mc_repl_hello *h);
void mc_repl_encode_ack(mc_buf *out, uint64_t seq);
void mc_repl_encode_heartbeat(mc_buf *out, uint64_t hlc);
void mc_repl_encode_fence(mc_buf *out, uint64_t epoch);
void mc_repl_encode_invalidate(mc_buf *out, uint64_t version, const char *key, size_t klen);
/* PURGE: pattern_len >= 1 and host_len + pattern_len <= MC_REPL_PURGE_MAX. */
void mc_repl_encode_purge(mc_buf *out, bool prefix, const char *host, size_t host_len,
			  const char *pattern, size_t pattern_len);

/* TELEMETRY: t must pass the decoder's rules (n_outcomes <= MC_REPL_TELEM_OUTCOMES,
 * ids strictly increasing and < MC_REPL_TELEM_OUTCOMES, health <= 2). */
void mc_repl_encode_telemetry(mc_buf *out, const mc_repl_telemetry *t);
/* Checks what the decoder cannot: the numbers agree with each other (interval
 * 1..3600000 ms, count <= total, p50 <= p95 <= p99, no quantile without a count,
 * regional <= regional_total, ack p50 <= p99). Returns 0, or MC_EINVAL with *why a
 * static description. */
int mc_repl_telemetry_check(const mc_repl_telemetry *t, const char **why);
/* OBS_ACK{kind, stream, seq}. */
void mc_repl_encode_obs_ack(mc_buf *out, uint8_t kind, uint64_t stream, uint64_t seq);

/* EVENTS is built like ENTRIES: begin, add each event (2..MC_REPL_EVENT_MAX bytes,
 * a JSON object: '{' ... '}' without control bytes; at most MC_REPL_EVENTS_MAX_N),
 * end. first_seq >= 1. */
typedef struct mc_repl_events_writer {
	mc_buf *out;
	size_t start;
	uint32_t n;
} mc_repl_events_writer;
void mc_repl_events_begin(mc_repl_events_writer *w, mc_buf *out, uint64_t stream,
			  uint64_t first_seq);
void mc_repl_events_add(mc_repl_events_writer *w, const char *line, size_t len);
void mc_repl_events_end(mc_repl_events_writer *w);
/* Iterates the events of a decoded EVENTS frame: *pos starts at 0. Returns 1 with
 * *line, *len (pointing into the frame), 0 at the end, MC_EPROTO if malformed. */
int mc_repl_events_next(const mc_repl_frame *f, size_t *pos, const char **line, size_t *len);

/* ENTRIES is built incrementally: begin, add each entry (seq must be
 * first_seq + index), end (patches count, length and CRC). */
typedef struct mc_repl_entries_writer {
	mc_buf *out;
	size_t start;
	uint64_t first_seq;
	uint32_t n;
} mc_repl_entries_writer;
void mc_repl_entries_begin(mc_repl_entries_writer *w, mc_buf *out, uint64_t first_seq);
void mc_repl_entries_add(mc_repl_entries_writer *w, const mc_log_entry *e);
void mc_repl_entries_end(mc_repl_entries_writer *w);

/* Iterates the entries of a decoded ENTRIES frame. *pos starts at 0; keep the
 * same *index variable across calls (it is set to 0 when *pos is 0 and advanced
 * by one per entry). Returns 1 with *e filled (pointers into the frame, e->seq =
 * first_seq + *index), 0 at the end, MC_EPROTO if malformed. */
int mc_repl_entries_next(const mc_repl_frame *f, size_t *pos, uint32_t *index, mc_log_entry *e);

/* ---- cell side: shipper ---------------------------------------------------------------- */

typedef struct mc_repl_shipper_opts {
	uint32_t batch_max_entries; /* per ENTRIES frame (default 1024) */
	uint32_t batch_max_bytes;   /* per ENTRIES frame (default 1 MiB) */
	uint32_t window_entries;    /* unacknowledged entries in flight (default 16384) */
	uint32_t heartbeat_ms;      /* default 1000 */
	uint32_t dead_after_ms;     /* no frame from the region for this long: reconnect (default 5000) */
	uint32_t reconnect_ms;      /* delay between connection attempts (default 200, backs off to 2000) */
	uint64_t epoch;
	uint64_t config_version;
	/* Optional, run on the loop: the region sent INVALIDATE (a key written
	 * elsewhere; drop replica copies older than version) or FENCE (our epoch is
	 * stale: the shipper stops shipping and stops reconnecting until freed). */
	void (*on_invalidate)(void *arg, const char *key, size_t klen, uint64_t version);
	void (*on_fence)(void *arg, uint64_t epoch);
	/* Optional, run on the loop: the region sent PURGE (drop the cached objects
	 * whose target equals pattern, or starts with it when prefix, on host or on
	 * every host when host_len is 0). */
	void (*on_purge)(void *arg, bool prefix, const char *host, size_t host_len,
			 const char *pattern, size_t pattern_len);
	/* Optional, run on the loop: the region has durably applied every entry up
	 * to seq (an ACK, or the answer to HELLO); seq only grows. */
	void (*on_acked)(void *arg, uint64_t seq);
	void *cb_arg;
	/* Optional, run on the loop with cb_arg (observability, docs/protocol.md
	 * section 6): the link became usable (up 1: the region answered HELLO) or a
	 * usable link was lost (up 0); and the region sent OBS_ACK. */
	void (*on_link)(void *arg, int up);
	void (*on_obs_ack)(void *arg, uint8_t kind, uint64_t stream, uint64_t seq);
} mc_repl_shipper_opts;

void mc_repl_shipper_opts_default(mc_repl_shipper_opts *o);

typedef struct mc_repl_shipper_stats {
	int connected;
	uint64_t acked_seq;
	uint64_t last_seq;
	uint64_t sent_entries;
	uint64_t sent_bytes;
	uint64_t reconnects;
	uint64_t lag_entries;     /* last_seq - acked_seq */
	uint64_t oldest_unacked_ms; /* age of the oldest unacknowledged entry (0 when none) */
	uint64_t fenced_epoch;     /* epoch the region fenced us with (0: not fenced) */
	uint64_t up_since_ms;      /* wall ms the current connection was accepted by the
				    * region (answer to HELLO); 0 while down */
	uint64_t residency_violations; /* non-replicated entries found in the log, not shipped */
	mc_hist lag_us;            /* commit-to-ack latency of acknowledged entries */
} mc_repl_shipper_stats;

typedef struct mc_repl_shipper mc_repl_shipper;

/* Connects to region_addr and keeps shipping the store's write log from the last
 * acknowledged sequence; trims the log as ACKs arrive; reconnects forever (until
 * fenced). Installs the store's commit hook (one shipper per store). cell must be
 * 1..MC_STATE_MAX_HOME printable ASCII bytes. Returns 0, MC_EINVAL (bad cell,
 * address or options). mc_repl_shipper_free() accepts NULL, uninstalls the hook
 * and closes the connection; the memory is released once the loop has run the
 * close callbacks, so run the loop again before uv_loop_close(). */
int mc_repl_shipper_new(mc_repl_shipper **out, uv_loop_t *loop, mc_store *store,
			const char *cell, const char *region_addr,
			const mc_repl_shipper_opts *opts);
void mc_repl_shipper_stats_get(mc_repl_shipper *sh, mc_repl_shipper_stats *out);
/* Queues an encoded frame (TELEMETRY, EVENTS) on the live connection, taking its
 * bytes (frame is left empty). Returns 0; MC_EUNAVAIL when no connection has
 * completed the handshake; MC_EFULL when the socket already holds more than
 * twice the shipping bound (the region is not reading: the caller retries
 * later). In both error cases frame is left as it was. */
int mc_repl_shipper_send(mc_repl_shipper *sh, mc_buf *frame);
/* The cheap subset of the stats for per-request checks: the highest acknowledged
 * seq, the age of the oldest unacknowledged entry in ms (0 when none) and
 * up_since_ms. Any pointer may be NULL. */
void mc_repl_shipper_progress(mc_repl_shipper *sh, uint64_t *acked_seq, uint64_t *oldest_unacked_ms,
			      uint64_t *up_since_ms);
void mc_repl_shipper_free(mc_repl_shipper *sh);

/* ---- region side: sink ------------------------------------------------------------------- */

typedef struct mc_repl_sink_opts {
	uint32_t heartbeat_ms;  /* default 1000 */
	uint32_t dead_after_ms; /* default 5000 */
	size_t max_cells;       /* simultaneous connections and known cells (default 256) */
	/* Optional allow-list of cell names (NULL: any cell). A HELLO from another
	 * cell is answered by closing the connection. Copied by mc_repl_sink_new(). */
	const char *const *allow_cells;
	size_t n_allow_cells;
	/* Optional, run on the loop with obs_arg: a cell's TELEMETRY (decoded, not
	 * yet checked with mc_repl_telemetry_check) and EVENTS frames. The frame's
	 * pointers are valid during the call only. Answer with mc_repl_sink_obs_ack. */
	void (*on_telemetry)(void *arg, const char *cell, const mc_repl_telemetry *t);
	void (*on_events)(void *arg, const char *cell, const mc_repl_frame *f);
	void *obs_arg;
	/* Optional, on the loop: cell's HELLO was accepted (ACK sent), so frames to it
	 * (mc_repl_sink_invalidate_cell) now reach it. */
	void (*on_cell_ready)(void *arg, const char *cell);
	void *cb_arg;
} mc_repl_sink_opts;

void mc_repl_sink_opts_default(mc_repl_sink_opts *o);

typedef struct mc_repl_cell_stats {
	char cell[MC_STATE_MAX_HOME + 1];
	int connected;
	uint64_t applied_seq;
	uint64_t applied_entries; /* since region start */
	uint64_t last_frame_wall_ms;
	uint64_t epoch;            /* from the cell's last HELLO */
	uint64_t gap_entries;      /* sequence numbers the cell skipped over (never expected) */
	mc_hist lag_us; /* HLC wall part of the entry to the region's commit */
} mc_repl_cell_stats;

typedef struct mc_repl_sink mc_repl_sink;

/* Listens on listen_addr ("host:port"; port 0 picks one) and applies what cells
 * ship into store. Returns 0, MC_EINVAL or -errno from bind. mc_repl_sink_free()
 * accepts NULL and closes the listener at once (the port is free on return) and
 * every connection; memory is released once the loop has run the close callbacks
 * and any in-flight apply has completed. */
int mc_repl_sink_new(mc_repl_sink **out, uv_loop_t *loop, mc_store *store, const char *listen_addr,
		     const mc_repl_sink_opts *opts);
uint16_t mc_repl_sink_port(const mc_repl_sink *sk);
/* Copies up to cap per-cell stats into out; returns how many cells are known. */
size_t mc_repl_sink_stats(mc_repl_sink *sk, mc_repl_cell_stats *out, size_t cap);
void mc_repl_sink_free(mc_repl_sink *sk);

/* Sets the minimum epoch accepted from cell (failover fencing, DESIGN.md 8): a
 * HELLO with an older epoch, and the cell's live connection if its epoch is older,
 * get FENCE{epoch} and are closed. Returns 0 or MC_EINVAL. */
int mc_repl_sink_fence(mc_repl_sink *sk, const char *cell, uint64_t epoch);
/* Sends INVALIDATE{version, key} to every connected cell except except_cell
 * (NULL: all). Returns the number of cells it was sent to, or MC_EINVAL. */
int mc_repl_sink_invalidate(mc_repl_sink *sk, const char *key, size_t klen, uint64_t version,
			    const char *except_cell);
/* Sends PURGE{prefix, host, pattern} to every connected cell (cells not connected
 * now do not get it). Returns the number of cells it was sent to, or MC_EINVAL
 * (lengths outside the PURGE bounds). */
int mc_repl_sink_purge(mc_repl_sink *sk, bool prefix, const char *host, size_t host_len,
		       const char *pattern, size_t pattern_len);
/* Sends OBS_ACK{kind, stream, seq} to cell's live connection. Returns 1 when queued,
 * 0 when the cell is not connected, MC_EINVAL. */
int mc_repl_sink_obs_ack(mc_repl_sink *sk, const char *cell, uint8_t kind, uint64_t stream,
			 uint64_t seq);
/* Sends INVALIDATE{version, key} to cell alone. Returns 1 when it was queued on the
 * cell's live connection, 0 when the cell is not connected, MC_EINVAL. */
int mc_repl_sink_invalidate_cell(mc_repl_sink *sk, const char *cell, const char *key, size_t klen,
				 uint64_t version);

#endif
