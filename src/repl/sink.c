/* The region side of the backplane: accepts cell connections, applies their ENTRIES
 * through mc_store_apply one batch at a time per connection and acknowledges after
 * the durable commit (docs/protocol.md, section 6). */
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "repl/repl.h"
#include "repl/repl_int.h"

/* Entries handed to one mc_store_apply call; a bigger frame is applied in chunks. */
#define APPLY_CHUNK 1024
/* A peer that does not read its ACKs and heartbeats gets closed past this. */
#define WRITE_QUEUE_MAX (1u << 20)
#define READ_CAP ((size_t)MC_REPL_HDR + MC_REPL_MAX_FRAME + MC_REPL_TRAILER)
/* Largest HELLO payload (proto u16, cell_len u8, cell, epoch, last_acked, config
 * version): all a peer may send before it has said who it is, so an unidentified
 * connection never makes the sink buffer more than one read. */
#define HELLO_MAX_PAYLOAD (3u + MC_STATE_MAX_HOME + 24u)

struct cellrec {
	mc_repl_cell_stats st;
	struct sconn *conn;     /* live connection (post-HELLO), NULL when disconnected */
	int refs;               /* sconn objects pointing here */
	uint64_t fence_epoch;   /* minimum accepted epoch */
	uint64_t submitted_seq; /* highest seq handed to mc_store_apply */
};

struct sconn {
	uv_tcp_t tcp;
	uv_shutdown_t sreq;
	mc_repl_sink *sk;
	struct sconn *prev, *next;
	mc_repl_rbuf rb;
	struct cellrec *cell;
	uint64_t last_rx_ns;
	uint64_t last_ack;
	uint64_t epoch;
	int closing;  /* detached from the sink; close in progress */
	int closed;   /* close callback ran */
	int reading;
	/* The ENTRIES frame being applied: it stays at rb.pos until fully applied;
	 * its entries data lives at rb.pos + data_off (offsets survive compaction). */
	int applying;  /* an mc_store_apply is in flight */
	int in_frame;  /* a frame is being applied (maybe between chunks) */
	mc_repl_frame frame;
	size_t frame_len, data_off, epos;
	uint32_t eidx;
	mc_log_entry *ents;
	size_t ents_n;
};

struct mc_repl_sink {
	uv_loop_t *loop;
	mc_store *store;
	mc_repl_sink_opts o;
	char **allow;
	uv_tcp_t *listener; /* separately allocated: see mc_repl_sink_new */
	uv_timer_t tick;
	struct sconn *conns;
	size_t n_conns;
	struct cellrec **cells;
	size_t n_cells;
	int refs; /* listener + timer + sconn objects */
	int freeing;
	uint16_t port;
	mc_hlc hlc;
};

static void process(struct sconn *c);
static void apply_next(struct sconn *c);
static void start_read(struct sconn *c);

void mc_repl_sink_opts_default(mc_repl_sink_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->heartbeat_ms = 1000;
	o->dead_after_ms = 5000;
	o->max_cells = 256;
}

static void sink_unref(mc_repl_sink *sk)
{
	MC_ASSERT(sk->refs > 0);
	if (--sk->refs > 0 || !sk->freeing)
		return;
	for (size_t i = 0; i < sk->n_cells; i++)
		free(sk->cells[i]);
	free(sk->cells);
	if (sk->allow) {
		for (size_t i = 0; i < sk->o.n_allow_cells; i++)
			free(sk->allow[i]);
		free(sk->allow);
	}
	free(sk);
}

/* ---- connection lifetime -------------------------------------------------------------------- */

static void maybe_release(struct sconn *c)
{
	if (!c->closed || c->applying)
		return;
	if (c->cell)
		c->cell->refs--;
	mc_repl_rbuf_fini(&c->rb);
	free(c->ents);
	mc_repl_sink *sk = c->sk;
	free(c);
	sink_unref(sk);
}

static void on_conn_closed(uv_handle_t *h)
{
	struct sconn *c = h->data;
	c->closed = 1;
	maybe_release(c);
}

static void detach(struct sconn *c, int err, const char *why)
{
	mc_repl_sink *sk = c->sk;
	c->closing = 1;
	if (c->prev)
		c->prev->next = c->next;
	else
		sk->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	sk->n_conns--;
	if (c->cell && c->cell->conn == c) {
		c->cell->conn = NULL;
		c->cell->st.connected = 0;
	}
	if (err && !sk->freeing)
		MC_INFO(MC_REPL_COMP, "sink: closing connection of cell %s: %s (%s)",
			c->cell ? c->cell->st.cell : "(before HELLO)", why, mc_strerror(err));
}

/* Closes c at once (pending writes are canceled). Idempotent. */
static void conn_close(struct sconn *c, int err, const char *why)
{
	if (c->closing)
		return;
	detach(c, err, why);
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	struct sconn *c = req->data;
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Closes c after what is queued (a FENCE) has been written. */
static void conn_close_flush(struct sconn *c, int err, const char *why)
{
	if (c->closing)
		return;
	detach(c, err, why);
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
		uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void send_frame(struct sconn *c, mc_buf *frame)
{
	if (c->closing) {
		mc_buf_reset(frame);
		return;
	}
	int rc = mc_repl_io_send((uv_stream_t *)&c->tcp, frame, NULL, NULL);
	if (rc < 0)
		conn_close(c, rc, "write");
}

static void send_u64(struct sconn *c, void (*enc)(mc_buf *, uint64_t), uint64_t v)
{
	mc_buf f;
	mc_buf_init(&f);
	enc(&f, v);
	send_frame(c, &f);
	mc_buf_fini(&f);
}

static void send_ack(struct sconn *c, uint64_t seq)
{
	/* ACKs on one connection never go backwards. */
	if (seq < c->last_ack)
		seq = c->last_ack;
	c->last_ack = seq;
	send_u64(c, mc_repl_encode_ack, seq);
}

/* ---- cells ------------------------------------------------------------------------------------ */

static int allowed(const mc_repl_sink *sk, const char *cell)
{
	if (!sk->allow)
		return 1;
	for (size_t i = 0; i < sk->o.n_allow_cells; i++)
		if (strcmp(sk->allow[i], cell) == 0)
			return 1;
	return 0;
}

static struct cellrec *cell_find(mc_repl_sink *sk, const char *cell)
{
	for (size_t i = 0; i < sk->n_cells; i++)
		if (strcmp(sk->cells[i]->st.cell, cell) == 0)
			return sk->cells[i];
	return NULL;
}

/* Finds or adds the record of cell; at max_cells a record that nothing uses is
 * reused. Returns NULL when the table is full. */
static struct cellrec *cell_get(mc_repl_sink *sk, const char *cell)
{
	struct cellrec *r = cell_find(sk, cell);
	if (r)
		return r;
	if (sk->n_cells >= sk->o.max_cells) {
		for (size_t i = 0; i < sk->n_cells; i++) {
			struct cellrec *old = sk->cells[i];
			if (old->refs == 0 && !old->conn && old->fence_epoch == 0) {
				free(old);
				sk->cells[i] = sk->cells[--sk->n_cells];
				break;
			}
		}
		if (sk->n_cells >= sk->o.max_cells)
			return NULL;
	}
	r = mc_calloc(1, sizeof(*r));
	snprintf(r->st.cell, sizeof(r->st.cell), "%s", cell);
	mc_hist_init(&r->st.lag_us);
	r->st.applied_seq = mc_store_applied_seq(sk->store, cell);
	sk->cells = mc_realloc(sk->cells, (sk->n_cells + 1) * sizeof(*sk->cells));
	sk->cells[sk->n_cells++] = r;
	return r;
}

/* ---- frames ------------------------------------------------------------------------------------- */

static int on_hello(struct sconn *c, const mc_repl_hello *h)
{
	mc_repl_sink *sk = c->sk;
	if (c->cell)
		return MC_EPROTO; /* one HELLO per connection */
	if (h->proto != MC_REPL_PROTO_VERSION) {
		MC_WARN(MC_REPL_COMP, "sink: cell %s speaks protocol %u, we speak %u", h->cell,
			h->proto, MC_REPL_PROTO_VERSION);
		return MC_EPROTO;
	}
	if (!allowed(sk, h->cell)) {
		MC_WARN(MC_REPL_COMP, "sink: rejecting cell %s: not in the allowed list", h->cell);
		return MC_EPROTO;
	}
	struct cellrec *r = cell_get(sk, h->cell);
	if (!r) {
		MC_WARN(MC_REPL_COMP, "sink: rejecting cell %s: already tracking %zu cells (max_cells)",
			h->cell, sk->n_cells);
		return MC_EFULL;
	}
	c->cell = r;
	r->refs++;
	c->epoch = h->epoch;
	r->st.epoch = h->epoch;
	if (h->epoch < r->fence_epoch) {
		MC_WARN(MC_REPL_COMP, "sink: cell %s returned with epoch %llu < %llu: fencing", h->cell,
			(unsigned long long)h->epoch, (unsigned long long)r->fence_epoch);
		send_u64(c, mc_repl_encode_fence, r->fence_epoch);
		conn_close_flush(c, 0, "fenced");
		return 0;
	}
	if (r->conn && r->conn != c) {
		MC_INFO(MC_REPL_COMP, "sink: cell %s reconnected; closing its previous connection",
			h->cell);
		conn_close(r->conn, MC_ECLOSED, "superseded by a new connection");
	}
	r->conn = c;
	r->st.connected = 1;
	uint64_t applied = mc_store_applied_seq(sk->store, h->cell);
	r->st.applied_seq = MC_MAX(r->st.applied_seq, applied);
	if (h->last_acked_seq > applied)
		MC_ERROR(MC_REPL_COMP,
			 "sink: cell %s says seqs up to %llu were acknowledged, but the region has "
			 "applied only up to %llu (regional data lost?)",
			 h->cell, (unsigned long long)h->last_acked_seq, (unsigned long long)applied);
	MC_INFO(MC_REPL_COMP, "sink: cell %s connected (epoch %llu), applied up to seq %llu", h->cell,
		(unsigned long long)h->epoch, (unsigned long long)applied);
	send_ack(c, applied);
	if (sk->o.on_cell_ready && !c->closing)
		sk->o.on_cell_ready(sk->o.cb_arg, h->cell);
	return 0;
}

static void on_applied(void *arg, int err, uint64_t version, uint64_t seq)
{
	(void)version;
	struct sconn *c = arg;
	c->applying = 0;
	struct cellrec *r = c->cell;
	if (err == 0 && seq > r->st.applied_seq) {
		uint64_t now_ms = mc_wall_ms();
		for (size_t i = 0; i < c->ents_n; i++) {
			const mc_log_entry *e = &c->ents[i];
			if (e->seq <= r->st.applied_seq || e->seq > seq)
				continue;
			uint64_t w = mc_hlc_wall_ms(e->version);
			mc_hist_record(&r->st.lag_us, now_ms > w ? (now_ms - w) * 1000 : 0);
		}
		r->st.applied_entries += seq - r->st.applied_seq;
		r->st.applied_seq = seq;
	}
	c->ents_n = 0;
	if (c->closed) {
		maybe_release(c);
		return;
	}
	if (c->closing)
		return;
	if (err) {
		MC_ERROR(MC_REPL_COMP, "sink: applying entries of cell %s: %s", r->st.cell,
			 mc_strerror(err));
		conn_close(c, err, "apply failed");
		return;
	}
	send_ack(c, r->st.applied_seq);
	if (c->in_frame)
		apply_next(c);
	if (!c->in_frame && !c->applying && !c->closing)
		process(c);
}

/* Makes the next buffered frame the current one when it is a complete ENTRIES
 * frame, so consecutive frames share one apply (one commit). Anything else is
 * left for process(). */
static int take_entries_frame(struct sconn *c)
{
	mc_repl_frame f;
	int r = mc_repl_frame_decode(mc_repl_rbuf_head(&c->rb), mc_repl_rbuf_unread(&c->rb),
				     MC_REPL_MAX_FRAME, &f);
	if (r <= 0 || f.type != MC_FRAME_ENTRIES)
		return 0;
	c->cell->st.last_frame_wall_ms = mc_wall_ms();
	c->frame = f;
	c->frame_len = (size_t)r;
	c->data_off = (size_t)(f.u.entries.data - mc_repl_rbuf_head(&c->rb));
	c->epos = 0;
	c->eidx = 0;
	c->in_frame = 1;
	return 1;
}

/* Gathers up to APPLY_CHUNK new entries from the current ENTRIES frame and the
 * complete ENTRIES frames buffered behind it, and hands them to the store in one
 * mc_store_apply (which copies them, so consumed frames can leave the buffer at
 * once). When there is nothing new, acknowledges what is applied. */
static void apply_next(struct sconn *c)
{
	mc_repl_sink *sk = c->sk;
	struct cellrec *r = c->cell;
	int rc = 0;
	c->ents_n = 0;
	for (;;) {
		mc_repl_frame f = c->frame;
		f.u.entries.data = mc_repl_rbuf_head(&c->rb) + c->data_off;
		mc_log_entry e;
		while (c->ents_n < APPLY_CHUNK &&
		       (rc = mc_repl_entries_next(&f, &c->epos, &c->eidx, &e)) == 1) {
			if (e.seq <= r->st.applied_seq)
				continue; /* replay of what is committed already */
			uint64_t expect = MC_MAX(r->st.applied_seq, r->submitted_seq) + 1;
			if (e.seq > expect) {
				MC_WARN(MC_REPL_COMP, "sink: cell %s skipped seqs %llu..%llu", r->st.cell,
					(unsigned long long)expect, (unsigned long long)e.seq - 1);
				r->st.gap_entries += e.seq - expect;
			}
			r->submitted_seq = MC_MAX(r->submitted_seq, e.seq);
			c->ents[c->ents_n++] = e;
		}
		if (rc < 0) {
			conn_close(c, rc, "bad entries"); /* not reached: decode validated them */
			return;
		}
		if (rc != 0)
			break; /* chunk full, frame not finished */
		c->in_frame = 0;
		c->rb.pos += c->frame_len;
		if (c->ents_n >= APPLY_CHUNK || !take_entries_frame(c))
			break;
	}
	if (c->ents_n > 0) {
		rc = mc_store_apply(sk->store, r->st.cell, c->ents, c->ents_n, on_applied, c);
		if (rc < 0) {
			c->ents_n = 0;
			conn_close(c, rc, "apply");
			return;
		}
		c->applying = 1;
		return;
	}
	send_ack(c, r->st.applied_seq);
}

static int on_entries(struct sconn *c, const mc_repl_frame *f, size_t frame_len)
{
	if (!c->cell)
		return MC_EPROTO;
	c->cell->st.last_frame_wall_ms = mc_wall_ms();
	c->frame = *f;
	c->frame_len = frame_len;
	c->data_off = (size_t)(f->u.entries.data - mc_repl_rbuf_head(&c->rb));
	c->epos = 0;
	c->eidx = 0;
	c->in_frame = 1;
	if (!c->ents)
		c->ents = mc_calloc(APPLY_CHUNK, sizeof(*c->ents));
	apply_next(c);
	return 0;
}

/* TELEMETRY and EVENTS go to the region's callbacks (after HELLO only). */
static int on_obs(struct sconn *c, const mc_repl_frame *f)
{
	mc_repl_sink *sk = c->sk;
	if (!c->cell)
		return MC_EPROTO;
	c->cell->st.last_frame_wall_ms = mc_wall_ms();
	if (f->type == MC_FRAME_TELEMETRY && sk->o.on_telemetry)
		sk->o.on_telemetry(sk->o.obs_arg, c->cell->st.cell, &f->u.telemetry);
	else if (f->type == MC_FRAME_EVENTS && sk->o.on_events)
		sk->o.on_events(sk->o.obs_arg, c->cell->st.cell, f);
	return 0;
}

/* Decodes and handles buffered frames until one needs the store (or none is left). */
static void process(struct sconn *c)
{
	while (!c->closing && !c->in_frame && !c->applying) {
		mc_repl_frame f;
		int r = mc_repl_frame_decode(mc_repl_rbuf_head(&c->rb), mc_repl_rbuf_unread(&c->rb),
					     c->cell ? MC_REPL_MAX_FRAME : HELLO_MAX_PAYLOAD, &f);
		if (r == MC_EAGAIN)
			break;
		if (r < 0) {
			conn_close(c, r, "bad frame");
			return;
		}
		int rc = 0;
		switch (f.type) {
		case MC_FRAME_HELLO:
			rc = on_hello(c, &f.u.hello);
			c->rb.pos += (size_t)r;
			break;
		case MC_FRAME_ENTRIES:
			rc = on_entries(c, &f, (size_t)r); /* consumes the frame when applied */
			break;
		case MC_FRAME_HEARTBEAT:
			if (!c->cell)
				rc = MC_EPROTO;
			else
				c->cell->st.last_frame_wall_ms = mc_wall_ms();
			mc_hlc_observe(&c->sk->hlc, f.u.heartbeat_hlc);
			c->rb.pos += (size_t)r;
			break;
		case MC_FRAME_TELEMETRY:
		case MC_FRAME_EVENTS:
			rc = on_obs(c, &f);
			c->rb.pos += (size_t)r;
			break;
		default: /* ACK, FENCE, INVALIDATE flow region -> cell only */
			rc = MC_EPROTO;
			break;
		}
		if (rc < 0) {
			conn_close(c, rc, "protocol");
			return;
		}
	}
	if (c->closing)
		return;
	/* Bounded buffering: stop reading while a whole maximal frame is waiting. */
	size_t unread = mc_repl_rbuf_unread(&c->rb);
	if (c->reading && unread >= READ_CAP) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
	if (!c->reading && unread < READ_CAP)
		start_read(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)hint;
	struct sconn *c = h->data;
	mc_repl_rbuf_alloc(&c->rb, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct sconn *c = s->data;
	if (c->closing)
		return;
	if (nread < 0) {
		conn_close(c, nread == UV_EOF ? 0 : (int)nread, "read");
		return;
	}
	c->rb.b.len += (size_t)nread;
	c->last_rx_ns = mc_now_ns();
	if (c->in_frame || c->applying) {
		/* Keep reading (pipelining) up to the bound while the store works. */
		if (mc_repl_rbuf_unread(&c->rb) >= READ_CAP && c->reading) {
			uv_read_stop(s);
			c->reading = 0;
		}
		return;
	}
	process(c);
}

/* Starts (or resumes after backpressure) reading. The silence clock restarts
 * too: while the region was not reading, the cell was not silent. */
static void start_read(struct sconn *c)
{
	int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (rc < 0) {
		conn_close(c, rc, "read start");
		return;
	}
	c->reading = 1;
	c->last_rx_ns = mc_now_ns();
}

/* ---- listener and timer ------------------------------------------------------------------------ */

static void on_accept(uv_stream_t *server, int status)
{
	mc_repl_sink *sk = server->data;
	if (status < 0) {
		MC_WARN(MC_REPL_COMP, "sink: accept: %s", uv_strerror(status));
		return;
	}
	struct sconn *c = mc_calloc(1, sizeof(*c));
	c->sk = sk;
	c->tcp.data = c;
	if (uv_tcp_init(sk->loop, &c->tcp) < 0) {
		free(c);
		return;
	}
	sk->refs++;
	c->next = sk->conns;
	if (sk->conns)
		sk->conns->prev = c;
	sk->conns = c;
	sk->n_conns++;
	int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (rc < 0) {
		conn_close(c, rc, "accept");
		return;
	}
	if (sk->n_conns > sk->o.max_cells) {
		MC_WARN(MC_REPL_COMP, "sink: refusing a connection: %zu already open (max_cells)",
			sk->n_conns - 1);
		conn_close(c, 0, "max_cells");
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	c->last_rx_ns = mc_now_ns();
	start_read(c);
}

static void on_tick(uv_timer_t *t)
{
	mc_repl_sink *sk = t->data;
	uint64_t now = mc_now_ns();
	uint64_t hb = mc_hlc_now(&sk->hlc);
	struct sconn *next;
	for (struct sconn *c = sk->conns; c; c = next) {
		next = c->next;
		uint64_t silent_ms = (now - c->last_rx_ns) / 1000000;
		/* A connection waiting on the store may have stopped reading on purpose. */
		if (silent_ms >= sk->o.dead_after_ms && !c->applying && c->reading) {
			conn_close(c, MC_ETIMEDOUT, "cell silent");
			continue;
		}
		if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_QUEUE_MAX) {
			conn_close(c, MC_EFULL, "cell is not reading");
			continue;
		}
		if (c->cell)
			send_u64(c, mc_repl_encode_heartbeat, hb);
	}
}

static void on_listener_closed(uv_handle_t *h)
{
	mc_repl_sink *sk = h->data;
	free(h);
	sink_unref(sk);
}

static void on_timer_closed(uv_handle_t *h) { sink_unref(h->data); }

/* ---- public ------------------------------------------------------------------------------------- */

int mc_repl_sink_new(mc_repl_sink **out, uv_loop_t *loop, mc_store *store, const char *listen_addr,
		     const mc_repl_sink_opts *opts)
{
	int rc = 0;
	*out = NULL;
	if (!loop || !store || !listen_addr)
		return MC_EINVAL;
	mc_repl_sink *sk = mc_calloc(1, sizeof(*sk));
	mc_repl_sink_opts d;
	mc_repl_sink_opts_default(&d);
	sk->o = opts ? *opts : d;
	if (!sk->o.heartbeat_ms)
		sk->o.heartbeat_ms = d.heartbeat_ms;
	if (!sk->o.dead_after_ms)
		sk->o.dead_after_ms = d.dead_after_ms;
	if (!sk->o.max_cells)
		sk->o.max_cells = d.max_cells;
	if (sk->o.dead_after_ms <= sk->o.heartbeat_ms || (sk->o.n_allow_cells && !sk->o.allow_cells)) {
		rc = MC_EINVAL;
		goto out;
	}
	if (sk->o.allow_cells) {
		sk->allow = mc_calloc(sk->o.n_allow_cells ? sk->o.n_allow_cells : 1, sizeof(char *));
		for (size_t i = 0; i < sk->o.n_allow_cells; i++)
			sk->allow[i] = mc_strdup(sk->o.allow_cells[i]);
	}
	sk->o.allow_cells = NULL; /* the copy in sk->allow is what counts */
	sk->loop = loop;
	sk->store = store;
	mc_hlc_init(&sk->hlc, 0);
	/* Allocated apart from sk: when mc_net_listen fails after uv_tcp_init it closes
	 * the handle with no callback, so that memory must outlive this call. */
	sk->listener = mc_calloc(1, sizeof(*sk->listener));
	rc = mc_net_listen(loop, sk->listener, listen_addr, 0, 128, on_accept);
	if (rc < 0) {
		if (!uv_is_closing((uv_handle_t *)sk->listener))
			free(sk->listener); /* else deliberately leaked (rare: open/listen failed) */
		sk->listener = NULL;
		MC_ERROR(MC_REPL_COMP, "sink: listen on %s: %s", listen_addr, mc_strerror(rc));
		goto out;
	}
	sk->listener->data = sk;
	sk->port = mc_net_local_port(sk->listener);
	uv_timer_init(loop, &sk->tick);
	sk->tick.data = sk;
	sk->refs = 2;
	uv_timer_start(&sk->tick, on_tick, sk->o.heartbeat_ms, sk->o.heartbeat_ms);
	*out = sk;
	sk = NULL;
out:
	if (sk) {
		sk->freeing = 1;
		sk->refs = 1;
		sink_unref(sk);
	}
	return rc;
}

uint16_t mc_repl_sink_port(const mc_repl_sink *sk) { return sk->port; }

size_t mc_repl_sink_stats(mc_repl_sink *sk, mc_repl_cell_stats *out, size_t cap)
{
	for (size_t i = 0; i < sk->n_cells && i < cap; i++)
		out[i] = sk->cells[i]->st;
	return sk->n_cells;
}

void mc_repl_sink_free(mc_repl_sink *sk)
{
	if (!sk)
		return;
	sk->freeing = 1;
	while (sk->conns)
		conn_close(sk->conns, 0, "shutdown");
	uv_close((uv_handle_t *)sk->listener, on_listener_closed); /* closes the fd now */
	uv_timer_stop(&sk->tick);
	uv_close((uv_handle_t *)&sk->tick, on_timer_closed);
}

int mc_repl_sink_fence(mc_repl_sink *sk, const char *cell, uint64_t epoch)
{
	size_t n = cell ? strlen(cell) : 0;
	if (n == 0 || n > MC_STATE_MAX_HOME)
		return MC_EINVAL;
	struct cellrec *r = cell_get(sk, cell);
	if (!r)
		return MC_EFULL;
	r->fence_epoch = MC_MAX(r->fence_epoch, epoch);
	struct sconn *c = r->conn;
	if (c && c->epoch < r->fence_epoch) {
		MC_WARN(MC_REPL_COMP, "sink: fencing cell %s at epoch %llu (connected with %llu)", cell,
			(unsigned long long)r->fence_epoch, (unsigned long long)c->epoch);
		send_u64(c, mc_repl_encode_fence, r->fence_epoch);
		conn_close_flush(c, 0, "fenced");
	}
	return 0;
}

int mc_repl_sink_invalidate(mc_repl_sink *sk, const char *key, size_t klen, uint64_t version,
			    const char *except_cell)
{
	if (!key || klen == 0 || klen > MC_STATE_MAX_KEY)
		return MC_EINVAL;
	int sent = 0;
	mc_buf f;
	mc_buf_init(&f);
	for (struct sconn *c = sk->conns, *next; c; c = next) {
		next = c->next;
		if (!c->cell || c->cell->conn != c)
			continue;
		if (except_cell && strcmp(except_cell, c->cell->st.cell) == 0)
			continue;
		mc_repl_encode_invalidate(&f, version, key, klen);
		send_frame(c, &f);
		sent++;
	}
	mc_buf_fini(&f);
	return sent;
}

int mc_repl_sink_purge(mc_repl_sink *sk, bool prefix, const char *host, size_t host_len,
		       const char *pattern, size_t pattern_len)
{
	if (!pattern || pattern_len == 0 || host_len + pattern_len > MC_REPL_PURGE_MAX ||
	    (host_len && !host))
		return MC_EINVAL;
	int sent = 0;
	mc_buf f;
	mc_buf_init(&f);
	for (struct sconn *c = sk->conns, *next; c; c = next) {
		next = c->next;
		if (!c->cell || c->cell->conn != c)
			continue;
		mc_repl_encode_purge(&f, prefix, host, host_len, pattern, pattern_len);
		send_frame(c, &f);
		sent++;
	}
	mc_buf_fini(&f);
	return sent;
}

int mc_repl_sink_obs_ack(mc_repl_sink *sk, const char *cell, uint8_t kind, uint64_t stream,
			 uint64_t seq)
{
	if (!cell || (kind != MC_REPL_OBS_ACK_TELEMETRY && kind != MC_REPL_OBS_ACK_EVENTS))
		return MC_EINVAL;
	struct cellrec *r = cell_find(sk, cell);
	if (!r || !r->conn || r->conn->closing)
		return 0;
	mc_buf f;
	mc_buf_init(&f);
	mc_repl_encode_obs_ack(&f, kind, stream, seq);
	send_frame(r->conn, &f);
	mc_buf_fini(&f);
	return 1;
}

int mc_repl_sink_invalidate_cell(mc_repl_sink *sk, const char *cell, const char *key, size_t klen,
				 uint64_t version)
{
	if (!cell || !key || klen == 0 || klen > MC_STATE_MAX_KEY)
		return MC_EINVAL;
	struct cellrec *r = cell_find(sk, cell);
	struct sconn *c = r ? r->conn : NULL;
	if (!c || c->closing)
		return 0;
	mc_buf f;
	mc_buf_init(&f);
	mc_repl_encode_invalidate(&f, version, key, klen);
	send_frame(c, &f);
	mc_buf_fini(&f);
	return c->closing ? 0 : 1;
}
