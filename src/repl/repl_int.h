/* Private declarations shared by the shipper and the sink: a read buffer that
 * frames are decoded from in place, and an owned-buffer write helper. */
#ifndef MC_REPL_INT_H
#define MC_REPL_INT_H

#include <uv.h>

#include "common/common.h"

#define MC_REPL_COMP "repl"

/* Bytes a connection buffers at most beyond what it has decoded: one whole frame
 * of the largest size plus one read's worth (MC_REPL_READ_CHUNK). */
#define MC_REPL_READ_CHUNK (64u << 10)

typedef struct mc_repl_rbuf {
	mc_buf b;
	size_t pos; /* bytes of b already decoded */
} mc_repl_rbuf;

/* Fills *out with room for one read at the end of r (compacting consumed bytes
 * when that moves no more than it frees). */
void mc_repl_rbuf_alloc(mc_repl_rbuf *r, uv_buf_t *out);
static inline size_t mc_repl_rbuf_unread(const mc_repl_rbuf *r) { return r->b.len - r->pos; }
static inline const uint8_t *mc_repl_rbuf_head(const mc_repl_rbuf *r)
{
	return (const uint8_t *)r->b.data + r->pos;
}
void mc_repl_rbuf_fini(mc_repl_rbuf *r);

/* Writes frame->data to s, taking ownership of the bytes (frame is left empty and
 * may be reused). done (may be NULL) runs with the libuv status once the write
 * completes or is canceled by uv_close. Returns 0 or a libuv error, in which case
 * the bytes are freed and done is not called. */
int mc_repl_io_send(uv_stream_t *s, mc_buf *frame, void (*done)(void *arg, int status), void *arg);

#endif
