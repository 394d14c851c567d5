/* Common building blocks used by every module: error codes, allocation, logging,
 * time and the hybrid logical clock, CRC32C, growable buffers and the log-linear
 * latency histogram. Nothing here depends on another Metrocell module. */
#ifndef MC_COMMON_H
#define MC_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- errors --------------------------------------------------------------
 * Functions return 0 on success or a negative code: either -errno passed
 * through, or one of the MC_E* codes below (all below -10000 so they never
 * collide with errno values). */
enum {
	MC_EBASE = -10000,
	MC_EINVAL = -10001,    /* bad argument or malformed input */
	MC_ENOMEM = -10002,    /* allocation failed (only where we do not abort) */
	MC_ETOOBIG = -10003,   /* a size limit was exceeded */
	MC_ECRC = -10004,      /* checksum mismatch */
	MC_EPROTO = -10005,    /* protocol violation by a peer */
	MC_ENOTFOUND = -10006, /* no such key / object */
	MC_ECONFIG = -10007,   /* configuration error */
	MC_ETIMEDOUT = -10008, /* deadline passed */
	MC_ECLOSED = -10009,   /* peer or object closed */
	MC_ECANCELED = -10010, /* operation canceled (shutdown) */
	MC_EAGAIN = -10011,    /* need more input / try again */
	MC_ECONFLICT = -10012, /* compare-and-set mismatch */
	MC_EFULL = -10013,     /* a bounded queue or backlog is full */
	MC_ESTORE = -10014,    /* storage engine error */
	MC_EUNAVAIL = -10015,  /* dependency unavailable */
	MC_ELAST = -10016
};

/* Returns a static, human-readable string for any code (MC_E*, -errno, or 0). */
const char *mc_strerror(int code);

/* ---- allocation -------------------------------------------------------------
 * For small internal allocations: abort the process with a message on failure.
 * Sizes controlled by peers must be bounded and checked by the caller first. */
void *mc_alloc(size_t n);
void *mc_calloc(size_t n, size_t size);
void *mc_realloc(void *p, size_t n);
char *mc_strdup(const char *s);
char *mc_strndup(const char *s, size_t n);

#define MC_ASSERT(cond)                                                           \
	do {                                                                      \
		if (!(cond))                                                      \
			mc_assert_fail(#cond, __FILE__, __LINE__);                \
	} while (0)
_Noreturn void mc_assert_fail(const char *expr, const char *file, int line);

#define MC_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MC_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- logging ------------------------------------------------------------------
 * One process-wide logger writing to stderr, either as text
 * "2026-12-03T15:51:29.123Z INFO  cell: message" or as one JSON object per line
 * {"ts":"...","level":"info","comp":"cell","msg":"..."}. Thread-safe. */
typedef enum { MC_LOG_DEBUG = 0, MC_LOG_INFO, MC_LOG_WARN, MC_LOG_ERROR, MC_LOG_OFF } mc_log_level;

void mc_log_setup(mc_log_level level, bool json);
/* Parses "debug|info|warn|error|off"; returns 0 or MC_EINVAL. */
int mc_log_level_parse(const char *s, mc_log_level *out);
void mc_log(mc_log_level level, const char *comp, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define MC_DEBUG(comp, ...) mc_log(MC_LOG_DEBUG, comp, __VA_ARGS__)
#define MC_INFO(comp, ...) mc_log(MC_LOG_INFO, comp, __VA_ARGS__)
#define MC_WARN(comp, ...) mc_log(MC_LOG_WARN, comp, __VA_ARGS__)
#define MC_ERROR(comp, ...) mc_log(MC_LOG_ERROR, comp, __VA_ARGS__)

/* ---- time ---------------------------------------------------------------------- */
/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
uint64_t mc_now_ns(void);
/* Wall clock in milliseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t mc_wall_ms(void);

/* Hybrid logical clock: a 64-bit timestamp whose upper 48 bits are wall-clock
 * milliseconds and lower 16 bits a logical counter. Timestamps from one clock
 * are strictly increasing; mc_hlc_observe() merges a remote timestamp so causally
 * later events get larger timestamps. Thread-safe. */
typedef struct mc_hlc {
	_Atomic uint64_t last;
} mc_hlc;

void mc_hlc_init(mc_hlc *c, uint64_t floor);
uint64_t mc_hlc_now(mc_hlc *c);
/* Merges a timestamp seen from elsewhere; returns the new local timestamp. */
uint64_t mc_hlc_observe(mc_hlc *c, uint64_t remote);
static inline uint64_t mc_hlc_wall_ms(uint64_t ts) { return ts >> 16; }
static inline uint64_t mc_hlc_make(uint64_t wall_ms, uint16_t logical)
{
	return (wall_ms << 16) | logical;
}

/* ---- CRC32C (Castagnoli) -------------------------------------------------------
 * mc_crc32c(0, buf, n) computes a fresh checksum; pass a previous result as crc to
 * continue over several buffers. Uses SSE4.2 when the CPU has it. */
uint32_t mc_crc32c(uint32_t crc, const void *buf, size_t n);

/* ---- growable byte buffer ------------------------------------------------------ */
typedef struct mc_buf {
	char *data;
	size_t len;
	size_t cap;
} mc_buf;

void mc_buf_init(mc_buf *b);
void mc_buf_fini(mc_buf *b); /* frees data; accepts a zeroed buffer */
/* mc_buf_reserve's slow path: grows the buffer for extra more bytes. */
void mc_buf_grow(mc_buf *b, size_t extra);
/* Reserve, append and reset are inline: they run many times per HTTP message
 * (every header piece), and the call cost more than the work when there is
 * room. */
static inline void mc_buf_reserve(mc_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1; /* room for a NUL terminator */
	if (need > b->cap || need <= b->len)
		mc_buf_grow(b, extra); /* asserts on overflow */
}
static inline void mc_buf_append(mc_buf *b, const void *p, size_t n)
{
	mc_buf_reserve(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}
void mc_buf_append_str(mc_buf *b, const char *s);
void mc_buf_printf(mc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void mc_buf_reset(mc_buf *b) /* len = 0, keeps capacity */
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}
/* Removes the first n bytes. */
void mc_buf_consume(mc_buf *b, size_t n);
/* Appends s[0..n) as a quoted JSON string ("..." with escapes; bytes >= 0x80 are
 * copied as they are, control characters become \u00XX). */
void mc_buf_append_json(mc_buf *b, const char *s, size_t n);

/* Big-endian helpers for codecs. */
static inline void mc_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void mc_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void mc_put_u64(uint8_t *p, uint64_t v)
{
	mc_put_u32(p, (uint32_t)(v >> 32));
	mc_put_u32(p + 4, (uint32_t)v);
}
static inline uint16_t mc_get_u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t mc_get_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t mc_get_u64(const uint8_t *p)
{
	return ((uint64_t)mc_get_u32(p) << 32) | mc_get_u32(p + 4);
}

/* ---- latency histogram -----------------------------------------------------------
 * Log-linear (HdrHistogram-style) histogram of non-negative integer values (we
 * record microseconds). Values below 2^MC_HIST_SUB are exact; above, each power of
 * two is split into 2^MC_HIST_SUB linear buckets, so the relative error of a
 * reported quantile is at most 2^-MC_HIST_SUB (about 1.6 %). Values up to 2^40 are
 * tracked; larger ones are clamped into the top bucket (max stays exact).
 * Not thread-safe: keep one per thread and merge. */
#define MC_HIST_SUB 6
#define MC_HIST_BUCKETS ((40 - MC_HIST_SUB + 1) << MC_HIST_SUB)
typedef struct mc_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint64_t buckets[MC_HIST_BUCKETS];
} mc_hist;

void mc_hist_init(mc_hist *h);
void mc_hist_record(mc_hist *h, uint64_t v);
/* Adds every sample of src into dst. */
void mc_hist_merge(mc_hist *dst, const mc_hist *src);
/* Value at quantile q in [0,1] (0 when empty). Returns the upper edge of the
 * bucket holding that rank, clamped to max, so it never under-reports. */
uint64_t mc_hist_quantile(const mc_hist *h, double q);
/* Bucket index for a value and the inclusive upper edge of a bucket
 * (for Prometheus exposition). */
size_t mc_hist_bucket_of(uint64_t v);
uint64_t mc_hist_bucket_upper(size_t idx);

/* ---- small parsing helpers ------------------------------------------------------- */
/* Parses "host:port" (IPv4 dotted quad, "localhost", or [IPv6]) into host (NUL
 * terminated, at most hostcap-1 bytes) and port. Returns 0 or MC_EINVAL. */
int mc_parse_hostport(const char *s, char *host, size_t hostcap, uint16_t *port);
/* Value of a hexadecimal digit, or -1. */
int mc_hexval(char c);
/* Parses a decimal unsigned integer in [0, max]; whole string must be digits. */
int mc_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out);
/* Parses the arguments of a server subcommand, which take exactly "-c FILE" (or
 * "--config FILE"). argv[0] is the subcommand name, used in messages printed to
 * stderr. Returns 0 with *path set, or MC_EINVAL after printing why. */
int mc_parse_config_arg(int argc, char **argv, const char **path);

/* ---- base64 and UTF-8 (src/common/b64.c) -------------------------------------------
 * For binary values in JSON answers (the KV multi-get). Standard alphabet, padded. */
void mc_base64_encode(mc_buf *out, const void *p, size_t n);
/* Decodes s[0..n) (padding required, no whitespace) into out (appended). Returns
 * 0 or MC_EINVAL. */
int mc_base64_decode(mc_buf *out, const char *s, size_t n);
/* 1 when p[0..n) is well-formed UTF-8 (no overlongs, surrogates or NUL bytes). */
int mc_utf8_valid(const void *p, size_t n);
/* Appends a value as a JSON member after others: `,"value":"..."` when it is valid
 * UTF-8, else `,"value_base64":"..."` (the KV API's multi-get answers). */
void mc_buf_append_json_value(mc_buf *b, const char *v, size_t n);

/* ---- small files (src/common/file.c) ---------------------------------------------- */
/* Replaces dir/name with p[0..n) crash-safely: writes dir/name.tmp, fsyncs it,
 * renames it over dir/name and, with sync_dir, fsyncs dir. Returns 0 or -errno. */
int mc_file_write_atomic(const char *dir, const char *name, const void *p, size_t n, int sync_dir);
/* fsync of a directory (after renames in it). Returns 0 or -errno. */
int mc_file_sync_dir(const char *dir);
/* Reads the whole file at path, at most max bytes, into *out (NUL terminated,
 * caller frees). Returns 0, MC_ENOTFOUND, MC_ETOOBIG or -errno. */
int mc_file_read(const char *path, size_t max, char **out, size_t *len);

#endif
