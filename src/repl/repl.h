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
} mc_frame_type;

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
/* Sends INVALIDATE{version, key} to cell alone. Returns 1 when it was queued on the
 * cell's live connection, 0 when the cell is not connected, MC_EINVAL. */
int mc_repl_sink_invalidate_cell(mc_repl_sink *sk, const char *cell, const char *key, size_t klen,
				 uint64_t version);

#endif
