/* The observability buffer: structured events as JSON lines in a size-capped
 * directory of segment files, numbered by a sequence that survives restarts, so
 * a cell keeps its events while the region is unreachable and drains them in
 * order when it returns (docs/operations.md "Event buffer"). The region keeps
 * each cell's drained events with the same code. Every call after open takes the
 * buffer's lock: a cell's data-plane threads emit while its main thread drains. */
#ifndef MC_OBS_EVBUF_H
#define MC_OBS_EVBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* Bounds: the smallest cap, the largest segment, and the largest event line
 * (without its newline; the same as MC_REPL_EVENT_MAX on the wire). */
#define MC_EVBUF_MIN_BYTES (64u << 10)
#define MC_EVBUF_SEGMENT_MAX (1u << 20)
#define MC_EVBUF_LINE_MAX 4096

typedef struct mc_evbuf mc_evbuf;

typedef struct mc_evbuf_opts {
	const char *dir;    /* created (with parents) when missing */
	uint64_t max_bytes; /* cap on the bytes of every file in dir, >= MC_EVBUF_MIN_BYTES */
	const char *source; /* value of the "cell" member of emitted events (NULL: none) */
} mc_evbuf_opts;

typedef struct mc_evbuf_stats {
	uint64_t stream;    /* random id of this directory's sequence (kept across restarts) */
	uint64_t first_seq; /* oldest event held (0: none) */
	uint64_t last_seq;  /* newest event written (0: none ever) */
	uint64_t acked_seq; /* events up to here are acknowledged */
	uint64_t pending;   /* held events after acked_seq */
	uint64_t bytes;	    /* bytes of the files in dir (segments and meta) */
	uint64_t segments;
	uint64_t emitted;      /* events written since open */
	uint64_t dropped;      /* since open: unacknowledged events deleted for the cap, or
				* lost to a write error */
	uint64_t write_errors; /* since open */
} mc_evbuf_stats;

/* Opens (or creates) the buffer in o->dir: finds the segments, drops a partial
 * last line left by a crash, and resumes the sequence after the newest event.
 * Returns 0 and *out, MC_EINVAL (bad options) or -errno, with a message in err. */
int mc_evbuf_open(mc_evbuf **out, const mc_evbuf_opts *o, char *err, size_t errcap);
/* Closes the files and frees. Accepts NULL. */
void mc_evbuf_close(mc_evbuf *eb);

/* Writes one event {"seq":N,"ts_ms":T,"cell":SOURCE,"type":TYPE, members...} and
 * returns N, or 0 when it could not be written (counted in dropped). The members
 * come as (spec, value) pairs ended by NULL; spec is a type letter, ':' and the
 * member name: "s:" const char * (NULL: null), "u:" uint64_t, "i:" int64_t,
 * "f:" double, "b:" int (false/true). Strings are JSON-escaped; a line longer than
 * MC_EVBUF_LINE_MAX keeps its first members and gets "truncated":true. Never blocks
 * on anything but the write(2) of one line. */
uint64_t mc_evbuf_emit(mc_evbuf *eb, const char *type, ...);
uint64_t mc_evbuf_emitv(mc_evbuf *eb, const char *type, va_list ap);

/* Appends a line received from elsewhere (the region storing a cell's events):
 * line must be a one-line JSON object starting with {"seq":seq, and seq must be
 * above every seq held. Returns 0, MC_EINVAL (refused) or -errno. */
int mc_evbuf_append(mc_evbuf *eb, uint64_t seq, const char *line, size_t len);

/* Calls cb for each held event with seq > after, in order, until max_n events or
 * max_bytes of lines were delivered (at least one when any) or cb returns nonzero.
 * Returns the number of events delivered or -errno. line is valid during the call. */
int mc_evbuf_read(mc_evbuf *eb, uint64_t after, size_t max_n, size_t max_bytes,
		  int (*cb)(void *arg, uint64_t seq, const char *line, size_t len), void *arg);

/* Records that events up to seq (clamped to the newest) were acknowledged; kept
 * in the directory's meta file. Acknowledged events stay until the cap needs
 * their room. Returns 0 or -errno (meta file not written). */
int mc_evbuf_ack(mc_evbuf *eb, uint64_t seq);

/* Replaces the stream id (the region adopting a cell's stream) when the buffer
 * is empty; a non-empty buffer keeps its id and MC_EINVAL is returned. */
int mc_evbuf_set_stream(mc_evbuf *eb, uint64_t stream);

void mc_evbuf_stats_get(const mc_evbuf *eb, mc_evbuf_stats *out);

/* Parses the seq of a stored line ({"seq":N,...). Returns 0 or MC_EINVAL. */
int mc_evbuf_line_seq(const char *line, size_t len, uint64_t *seq);

#endif
