/* libuv plumbing shared by the shipper and the sink: the in-place read buffer and
 * writes that own their frame bytes until libuv is done with them. */
#include <stdlib.h>
#include <string.h>

#include "repl/repl_int.h"

void mc_repl_rbuf_alloc(mc_repl_rbuf *r, uv_buf_t *out)
{
	size_t unread = mc_repl_rbuf_unread(r);
	if (unread == 0) {
		r->b.len = 0;
		r->pos = 0;
	} else if (r->pos > 0 && r->pos >= unread) {
		memmove(r->b.data, r->b.data + r->pos, unread);
		r->b.len = unread;
		r->pos = 0;
	}
	mc_buf_reserve(&r->b, MC_REPL_READ_CHUNK);
	out->base = r->b.data + r->b.len;
	out->len = r->b.cap - r->b.len - 1; /* mc_buf keeps one byte for a NUL */
}

void mc_repl_rbuf_fini(mc_repl_rbuf *r)
{
	mc_buf_fini(&r->b);
	r->pos = 0;
}

struct wreq {
	uv_write_t req;
	mc_buf buf;
	void (*done)(void *arg, int status);
	void *arg;
};

static void on_written(uv_write_t *req, int status)
{
	struct wreq *w = req->data;
	if (w->done)
		w->done(w->arg, status);
	mc_buf_fini(&w->buf);
	free(w);
}

int mc_repl_io_send(uv_stream_t *s, mc_buf *frame, void (*done)(void *arg, int status), void *arg)
{
	struct wreq *w = mc_calloc(1, sizeof(*w));
	w->buf = *frame;
	mc_buf_init(frame);
	w->done = done;
	w->arg = arg;
	w->req.data = w;
	uv_buf_t b = uv_buf_init(w->buf.data, (unsigned)w->buf.len);
	int rc = uv_write(&w->req, s, &b, 1, on_written);
	if (rc < 0) {
		mc_buf_fini(&w->buf);
		free(w);
	}
	return rc;
}
