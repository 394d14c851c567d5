/* Private declarations shared by the HTTP/1.1 server and client: an intrusive
 * list, the per-message head accumulator that llhttp callbacks fill, and small
 * formatting helpers. Not part of the public API. */
#ifndef MC_HTTP_INT_H
#define MC_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "http/http.h"

/* ---- intrusive doubly linked list (circular, with a sentinel head) -------------- */
typedef struct mc_http_link {
	struct mc_http_link *prev;
	struct mc_http_link *next;
} mc_http_link;

#define MC_HTTP_CONTAINER(ptr, type, member)                                                       \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void mc_http_list_init(mc_http_link *h)
{
	h->prev = h->next = h;
}
static inline int mc_http_list_empty(const mc_http_link *h)
{
	return h->next == h;
}
static inline void mc_http_list_insert_before(mc_http_link *pos, mc_http_link *l)
{
	l->next = pos;
	l->prev = pos->prev;
	pos->prev->next = l;
	pos->prev = l;
}
/* Appends l at the tail of list h. */
static inline void mc_http_list_push_back(mc_http_link *h, mc_http_link *l)
{
	mc_http_list_insert_before(h, l);
}
/* Inserts l at the head of list h. */
static inline void mc_http_list_push_front(mc_http_link *h, mc_http_link *l)
{
	mc_http_list_insert_before(h->next, l);
}
/* Unlinks l (which must be linked) and leaves it self-linked. */
static inline void mc_http_list_remove(mc_http_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = l;
}

/* ---- message head accumulator ---------------------------------------------------
 * Collects the target and the header fields of one message as llhttp hands them
 * over in pieces, into one arena reused from message to message. Offsets are kept
 * while the arena may still grow; mc_http_head_finish() turns them into the
 * pointer array once the head is complete. */
typedef struct mc_http_hspan {
	uint32_t name_off, name_len, value_off, value_len;
} mc_http_hspan;

enum { MC_HTTP_HEAD_OK = 0, MC_HTTP_HEAD_TOO_BIG = 1, MC_HTTP_HEAD_TOO_MANY = 2 };

typedef struct mc_http_head {
	mc_buf arena; /* target, names and values, each NUL terminated */
	mc_http_hspan *spans;
	size_t nspans, spans_cap;
	mc_http_header *hdrs; /* valid after mc_http_head_finish() */
	size_t hdrs_cap;
	size_t bytes; /* target + names + values seen, trailers included */
	size_t max_bytes, max_headers;
	uint32_t url_off, url_len; /* url_off is always 0 */
	uint32_t path_off, path_len;
	uint8_t field_open, value_open, url_open, done;
	int over; /* MC_HTTP_HEAD_* once a limit was passed */
} mc_http_head;

/* Sets limits; the arena starts empty. */
void mc_http_head_init(mc_http_head *h, size_t max_bytes, size_t max_headers);
/* Releases every buffer. Accepts a zeroed struct. */
void mc_http_head_fini(mc_http_head *h);
/* Forgets the previous message, keeping modest buffers for reuse. */
void mc_http_head_reset(mc_http_head *h);
/* Feed functions: return 0, or -1 once a limit is passed (h->over says which).
 * Pieces arriving after mc_http_head_finish() are trailers: counted, not kept. */
int mc_http_head_url(mc_http_head *h, const char *at, size_t n);
int mc_http_head_field(mc_http_head *h, const char *at, size_t n);
int mc_http_head_field_done(mc_http_head *h);
int mc_http_head_value(mc_http_head *h, const char *at, size_t n);
int mc_http_head_value_done(mc_http_head *h);
/* Terminates the target, adds the path copy when with_path, and builds hdrs.
 * After this the arena no longer moves until the next reset. */
void mc_http_head_finish(mc_http_head *h, int with_path);

/* Case-insensitive comparison of n bytes of a with the NUL-terminated b
 * (equal only when b has exactly n bytes). */
int mc_http_token_eq(const char *a, size_t n, const char *b);
/* Appends the decimal form of v. */
void mc_http_buf_u64(mc_buf *b, uint64_t v);
/* 1 when the n bytes contain no CR, LF or NUL (safe to put in a header line). */
/* 1 when s[0..n) is an RFC 9110 token (a valid field name or method). */
int mc_http_token_valid(const char *s, size_t n);
int mc_http_field_safe(const char *s, size_t n);

/* Buffers larger than this are freed after a message instead of kept. */
#define MC_HTTP_KEEP_BUF (64u * 1024u)
/* Size of the shared read buffer per server or pool. */
#define MC_HTTP_SLAB (64u * 1024u)

#endif
