/* The cell side of the backplane: one TCP connection to the region that ships the
 * store's write log in ENTRIES frames, trims it as ACKs arrive and reconnects with
 * backoff, resuming from the region's answer to HELLO (docs/protocol.md, section 6). */
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "repl/repl.h"
#include "repl/repl_int.h"

/* Region-to-cell frames are small (the largest is INVALIDATE). */
#define FROM_REGION_MAX 1024
#define BACKOFF_MAX_MS 2000

enum conn_state { C_CONNECTING, C_HELLO_SENT, C_STREAMING };

struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	mc_repl_shipper *sh;
	mc_repl_rbuf rb;
	enum conn_state state;
	int closing;
};

/* One shipped, unacknowledged entry: enough to measure its lag on ACK. */
struct inflight {
	uint64_t seq;
	uint64_t version;
};

struct mc_repl_shipper {
	uv_loop_t *loop;
	mc_store *store;
	char cell[MC_STATE_MAX_HOME + 1];
	struct sockaddr_storage addr;
	mc_repl_shipper_opts o;
	uv_timer_t retry; /* reconnect delay, and the connect timeout while connecting */
	uv_timer_t tick;  /* heartbeat, liveness, and a periodic pump as a safety net */
	struct conn *conn; /* current connection, NULL while waiting to reconnect */
	int refs;          /* timers + connection objects not yet released */
	int freeing;
	int fenced;
	int outage_logged;
	uint32_t backoff_ms;
	uint64_t attempts;
	uint64_t last_rx_ns;
	uint64_t acked;    /* highest seq the region has acknowledged (or our trim point) */
	uint64_t trimmed;  /* highest seq a trim was queued for */
	uint64_t next_seq; /* next seq to ship on the current connection */
	struct inflight *ring;
	uint32_t ring_head, ring_len;
	mc_hlc hlc;
	mc_repl_shipper_stats st;
};

static void attempt(mc_repl_shipper *sh);
static void pump(mc_repl_shipper *sh);
static void on_retry(uv_timer_t *t);

void mc_repl_shipper_opts_default(mc_repl_shipper_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->batch_max_entries = 1024;
	o->batch_max_bytes = 1u << 20;
	o->window_entries = 16384;
	o->heartbeat_ms = 1000;
	o->dead_after_ms = 5000;
	o->reconnect_ms = 200;
	o->epoch = 1;
}

static void unref(mc_repl_shipper *sh)
{
	MC_ASSERT(sh->refs > 0);
	if (--sh->refs == 0 && sh->freeing) {
		free(sh->ring);
		free(sh);
	}
}

static void ring_clear(mc_repl_shipper *sh)
{
	sh->ring_head = 0;
	sh->ring_len = 0;
}

static void ring_push(mc_repl_shipper *sh, uint64_t seq, uint64_t version)
{
	MC_ASSERT(sh->ring_len < sh->o.window_entries);
	uint32_t i = (sh->ring_head + sh->ring_len) % sh->o.window_entries;
	sh->ring[i].seq = seq;
	sh->ring[i].version = version;
	sh->ring_len++;
}

/* Drops in-flight entries up to seq, recording each one's commit-to-ack lag. */
static void ring_ack(mc_repl_shipper *sh, uint64_t seq)
{
	uint64_t now_ms = mc_wall_ms();
	while (sh->ring_len > 0 && sh->ring[sh->ring_head].seq <= seq) {
		uint64_t w = mc_hlc_wall_ms(sh->ring[sh->ring_head].version);
		mc_hist_record(&sh->st.lag_us, now_ms > w ? (now_ms - w) * 1000 : 0);
		sh->ring_head = (sh->ring_head + 1) % sh->o.window_entries;
		sh->ring_len--;
	}
}

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	mc_repl_shipper *sh = c->sh;
	mc_repl_rbuf_fini(&c->rb);
	free(c);
	unref(sh);
}

static void schedule_retry(mc_repl_shipper *sh, uint64_t delay_ms)
{
	if (sh->freeing || sh->fenced)
		return;
	uv_timer_start(&sh->retry, on_retry, delay_ms, 0);
}

/* Closes c (idempotent). When it is the current connection, the shipper forgets
 * what was in flight (the region's answer to the next HELLO says where to resume)
 * and schedules the next attempt with backoff. */
static void conn_fail(struct conn *c, int err, const char *why)
{
	if (c->closing)
		return;
	c->closing = 1;
	mc_repl_shipper *sh = c->sh;
	if (sh->conn == c) {
		/* One line per outage, not one per attempt. */
		if (!sh->freeing && (c->state == C_STREAMING || !sh->outage_logged)) {
			MC_WARN(MC_REPL_COMP, "cell %s: connection to region %s: %s (%s); retrying",
				sh->cell, c->state == C_STREAMING ? "lost" : "failed", why,
				mc_strerror(err));
			sh->outage_logged = 1;
		}
		int was_up = c->state == C_STREAMING;
		sh->conn = NULL;
		sh->st.connected = 0;
		sh->st.up_since_ms = 0;
		ring_clear(sh);
		if (was_up && !sh->freeing && sh->o.on_link)
			sh->o.on_link(sh->o.cb_arg, 0);
		uv_timer_stop(&sh->retry);
		if (!sh->freeing && !sh->fenced) {
			uint32_t delay = sh->backoff_ms;
			uint32_t cap = MC_MAX(BACKOFF_MAX_MS, sh->o.reconnect_ms);
			sh->backoff_ms = MC_MIN(cap, sh->backoff_ms * 2);
			schedule_retry(sh, delay);
		}
	}
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void send_frame(struct conn *c, mc_buf *frame, void (*done)(void *arg, int status))
{
	int rc = mc_repl_io_send((uv_stream_t *)&c->tcp, frame, done, c->sh);
	if (rc < 0)
		conn_fail(c, rc, "write");
}

static void on_sent(void *arg, int status)
{
	mc_repl_shipper *sh = arg;
	if (status == 0)
		pump(sh);
}

/* ---- shipping ----------------------------------------------------------------------------- */

struct batch {
	mc_repl_shipper *sh;
	mc_repl_entries_writer w;
	mc_buf frame;
	uint32_t n;
	uint64_t skip_to; /* past the last entry withheld for residency */
};

static int batch_add(void *arg, const mc_log_entry *e)
{
	struct batch *b = arg;
	mc_repl_shipper *sh = b->sh;
	/* Defence in depth: the store logs replicated keys only, so this never finds
	 * anything; if it did (a bug, or rules changed under an old log), the entry
	 * stays in the cell, counted and reported, and the seq gap shows at the region. */
	if (mc_store_key_class(sh->store, e->key, e->klen) != MC_CLASS_REPLICATED) {
		if (sh->st.residency_violations++ == 0)
			MC_ERROR(MC_REPL_COMP,
				 "cell %s: write-log entry %llu has a key of class %s: not shipped "
				 "(metrocell_residency_violations_total)",
				 sh->cell, (unsigned long long)e->seq,
				 mc_state_class_name(mc_store_key_class(sh->store, e->key, e->klen)));
		b->skip_to = e->seq + 1;
		return b->n > 0; /* a frame holds contiguous seqs only */
	}
	if (b->n == 0) {
		if (e->seq != MC_MAX(sh->next_seq, b->skip_to))
			MC_WARN(MC_REPL_COMP, "cell %s: write log jumps from seq %llu to %llu", sh->cell,
				(unsigned long long)sh->next_seq, (unsigned long long)e->seq);
		mc_repl_entries_begin(&b->w, &b->frame, e->seq);
	} else {
		if (e->seq != b->w.first_seq + b->n)
			return 1; /* a hole: the next frame starts at e->seq */
		size_t payload = b->frame.len - b->w.start - MC_REPL_HDR;
		size_t add = 23 + e->klen + (e->op == MC_OP_DEL ? 0 : e->vlen);
		if (payload + add > MC_REPL_MAX_FRAME)
			return 1;
	}
	mc_repl_entries_add(&b->w, e);
	ring_push(sh, e->seq, e->version);
	b->n++;
	return 0;
}

/* Ships as much of the log as the window and the socket's queue allow. */
static void pump(mc_repl_shipper *sh)
{
	struct conn *c = sh->conn;
	if (!c || c->closing || c->state != C_STREAMING || sh->freeing)
		return;
	size_t queue_cap = 4 * (size_t)sh->o.batch_max_bytes;
	for (;;) {
		if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > queue_cap)
			break;
		if (sh->ring_len >= sh->o.window_entries)
			break;
		mc_log_stats ls;
		mc_store_log_stats(sh->store, &ls);
		if (sh->next_seq > ls.last_seq)
			break;
		size_t max_n = MC_MIN(sh->o.batch_max_entries, sh->o.window_entries - sh->ring_len);
		struct batch b = {.sh = sh};
		mc_buf_init(&b.frame);
		int rc = mc_store_log_read(sh->store, sh->next_seq, max_n, sh->o.batch_max_bytes,
					   batch_add, &b);
		if (rc > 0 && b.n == 0 && b.skip_to > sh->next_seq) {
			sh->next_seq = b.skip_to; /* only withheld entries in this read */
			mc_buf_fini(&b.frame);
			continue;
		}
		if (rc < 0 || b.n == 0) {
			/* Retried on the next commit or tick. */
			if (rc < 0)
				MC_WARN(MC_REPL_COMP, "cell %s: reading the write log: %s", sh->cell,
					mc_strerror(rc));
			mc_buf_fini(&b.frame);
			break;
		}
		mc_repl_entries_end(&b.w);
		sh->next_seq = b.w.first_seq + b.n;
		sh->st.sent_entries += b.n;
		sh->st.sent_bytes += b.frame.len;
		send_frame(c, &b.frame, on_sent);
		mc_buf_fini(&b.frame);
		if (c->closing)
			break;
	}
}

static void on_commit(void *arg, uint64_t last_seq)
{
	(void)last_seq;
	pump(arg);
}

static void trim(mc_repl_shipper *sh, uint64_t upto)
{
	if (upto <= sh->trimmed)
		return;
	int rc = mc_store_log_trim(sh->store, upto, NULL, NULL);
	if (rc < 0) {
		MC_WARN(MC_REPL_COMP, "cell %s: trimming the write log to %llu: %s", sh->cell,
			(unsigned long long)upto, mc_strerror(rc));
		return;
	}
	sh->trimmed = upto;
}

/* ---- frames from the region -------------------------------------------------------------- */

/* The region's answer to HELLO: the last seq it has applied from us. */
static int on_hello_ack(struct conn *c, uint64_t seq)
{
	mc_repl_shipper *sh = c->sh;
	mc_log_stats ls;
	mc_store_log_stats(sh->store, &ls);
	if (seq > ls.last_seq) {
		MC_ERROR(MC_REPL_COMP,
			 "cell %s: region has applied up to seq %llu but our write log ends at %llu "
			 "(cell data lost, or the cell name reused?); not shipping until resolved",
			 sh->cell, (unsigned long long)seq, (unsigned long long)ls.last_seq);
		return MC_EPROTO;
	}
	uint64_t from = seq;
	if (seq < ls.acked_seq) {
		MC_ERROR(MC_REPL_COMP,
			 "cell %s: region has applied only up to seq %llu but it acknowledged up to "
			 "%llu before; seqs %llu..%llu are no longer in our log",
			 sh->cell, (unsigned long long)seq, (unsigned long long)ls.acked_seq,
			 (unsigned long long)seq + 1, (unsigned long long)ls.acked_seq);
		from = ls.acked_seq;
	}
	sh->acked = MC_MAX(sh->acked, from);
	sh->next_seq = from + 1;
	ring_clear(sh);
	trim(sh, seq);
	c->state = C_STREAMING;
	sh->st.connected = 1;
	sh->st.up_since_ms = mc_wall_ms();
	if (sh->o.on_acked)
		sh->o.on_acked(sh->o.cb_arg, sh->acked);
	sh->backoff_ms = sh->o.reconnect_ms;
	sh->outage_logged = 0;
	MC_INFO(MC_REPL_COMP, "cell %s: connected to region, resuming after seq %llu (log ends at %llu)",
		sh->cell, (unsigned long long)from, (unsigned long long)ls.last_seq);
	pump(sh);
	if (sh->o.on_link && sh->conn == c && !c->closing)
		sh->o.on_link(sh->o.cb_arg, 1);
	return 0;
}

static int on_ack(struct conn *c, uint64_t seq)
{
	mc_repl_shipper *sh = c->sh;
	if (seq <= sh->acked)
		return 0;
	if (seq >= sh->next_seq) {
		/* The region got these through an earlier connection of ours whose apply
		 * completed late; legal, but only within our log. */
		mc_log_stats ls;
		mc_store_log_stats(sh->store, &ls);
		if (seq > ls.last_seq) {
			MC_ERROR(MC_REPL_COMP, "cell %s: region acknowledged seq %llu beyond our log (%llu)",
				 sh->cell, (unsigned long long)seq, (unsigned long long)ls.last_seq);
			return MC_EPROTO;
		}
		sh->next_seq = seq + 1;
	}
	ring_ack(sh, seq);
	sh->acked = seq;
	trim(sh, seq);
	if (sh->o.on_acked)
		sh->o.on_acked(sh->o.cb_arg, seq);
	pump(sh);
	return 0;
}

static int on_frame(struct conn *c, const mc_repl_frame *f)
{
	mc_repl_shipper *sh = c->sh;
	switch (f->type) {
	case MC_FRAME_ACK:
		if (c->state == C_HELLO_SENT)
			return on_hello_ack(c, f->u.ack_seq);
		return on_ack(c, f->u.ack_seq);
	case MC_FRAME_HEARTBEAT:
		mc_hlc_observe(&sh->hlc, f->u.heartbeat_hlc);
		return 0;
	case MC_FRAME_FENCE:
		MC_ERROR(MC_REPL_COMP,
			 "cell %s: fenced by the region at epoch %llu (ours %llu): shipping stopped",
			 sh->cell, (unsigned long long)f->u.fence_epoch, (unsigned long long)sh->o.epoch);
		sh->fenced = 1;
		sh->st.fenced_epoch = f->u.fence_epoch;
		if (sh->o.on_fence)
			sh->o.on_fence(sh->o.cb_arg, f->u.fence_epoch);
		return MC_ECLOSED;
	case MC_FRAME_INVALIDATE:
		if (sh->o.on_invalidate)
			sh->o.on_invalidate(sh->o.cb_arg, f->u.invalidate.key, f->u.invalidate.klen,
					    f->u.invalidate.version);
		return 0;
	case MC_FRAME_PURGE:
		if (sh->o.on_purge)
			sh->o.on_purge(sh->o.cb_arg, f->u.purge.prefix, f->u.purge.host,
				       f->u.purge.host_len, f->u.purge.pattern,
				       f->u.purge.pattern_len);
		return 0;
	case MC_FRAME_OBS_ACK:
		if (c->state != C_STREAMING)
			return MC_EPROTO;
		if (sh->o.on_obs_ack)
			sh->o.on_obs_ack(sh->o.cb_arg, f->u.obs_ack.kind, f->u.obs_ack.stream,
					 f->u.obs_ack.seq);
		return 0;
	default:
		return MC_EPROTO;
	}
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)hint;
	struct conn *c = h->data;
	mc_repl_rbuf_alloc(&c->rb, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct conn *c = s->data;
	if (c->closing)
		return;
	if (nread < 0) {
		conn_fail(c, nread == UV_EOF ? MC_ECLOSED : (int)nread, "read");
		return;
	}
	c->rb.b.len += (size_t)nread;
	c->sh->last_rx_ns = mc_now_ns();
	while (!c->closing) {
		mc_repl_frame f;
		int r = mc_repl_frame_decode(mc_repl_rbuf_head(&c->rb), mc_repl_rbuf_unread(&c->rb),
					     FROM_REGION_MAX, &f);
		if (r == MC_EAGAIN)
			break;
		if (r < 0) {
			conn_fail(c, r, "bad frame from region");
			return;
		}
		int rc = on_frame(c, &f);
		c->rb.pos += (size_t)r;
		if (rc < 0) {
			conn_fail(c, rc, "protocol");
			return;
		}
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	mc_repl_shipper *sh = c->sh;
	if (c->closing)
		return;
	if (status < 0) {
		conn_fail(c, status, "connect");
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (rc < 0) {
		conn_fail(c, rc, "read start");
		return;
	}
	uv_timer_stop(&sh->retry); /* connected: the handshake is bounded by dead_after_ms */
	sh->last_rx_ns = mc_now_ns();
	mc_log_stats ls;
	mc_store_log_stats(sh->store, &ls);
	mc_repl_hello h = {.proto = MC_REPL_PROTO_VERSION,
			   .epoch = sh->o.epoch,
			   .last_acked_seq = MC_MAX(ls.acked_seq, sh->acked),
			   .config_version = sh->o.config_version};
	memcpy(h.cell, sh->cell, sizeof(h.cell));
	mc_buf frame;
	mc_buf_init(&frame);
	mc_repl_encode_hello(&frame, &h);
	c->state = C_HELLO_SENT;
	send_frame(c, &frame, NULL);
	mc_buf_fini(&frame);
}

/* ---- timers ------------------------------------------------------------------------------- */

static void on_retry(uv_timer_t *t)
{
	mc_repl_shipper *sh = t->data;
	if (sh->conn) {
		if (sh->conn->state == C_CONNECTING)
			conn_fail(sh->conn, MC_ETIMEDOUT, "connect timeout");
		return;
	}
	attempt(sh);
}

static void attempt(mc_repl_shipper *sh)
{
	if (sh->freeing || sh->fenced || sh->conn)
		return;
	if (sh->attempts++ > 0)
		sh->st.reconnects++;
	struct conn *c = mc_calloc(1, sizeof(*c));
	c->sh = sh;
	c->state = C_CONNECTING;
	c->tcp.data = c;
	c->creq.data = c;
	int rc = uv_tcp_init(sh->loop, &c->tcp);
	if (rc < 0) {
		free(c);
		MC_WARN(MC_REPL_COMP, "cell %s: socket: %s", sh->cell, uv_strerror(rc));
		schedule_retry(sh, sh->backoff_ms);
		return;
	}
	sh->refs++;
	sh->conn = c;
	rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sh->addr, on_connect);
	if (rc < 0) {
		conn_fail(c, rc, "connect");
		return;
	}
	/* The connect timeout: the current backoff, but at least a second (bounded
	 * by dead_after_ms) so a slow WAN handshake is not cut short. */
	uint64_t timeout = MC_MAX(sh->backoff_ms, MC_MIN(1000u, sh->o.dead_after_ms));
	uv_timer_start(&sh->retry, on_retry, timeout, 0);
}

static void on_tick(uv_timer_t *t)
{
	mc_repl_shipper *sh = t->data;
	struct conn *c = sh->conn;
	if (!c || c->closing || c->state == C_CONNECTING)
		return;
	uint64_t silent_ms = (mc_now_ns() - sh->last_rx_ns) / 1000000;
	if (silent_ms >= sh->o.dead_after_ms) {
		conn_fail(c, MC_ETIMEDOUT, "region silent");
		return;
	}
	mc_buf frame;
	mc_buf_init(&frame);
	mc_repl_encode_heartbeat(&frame, mc_hlc_now(&sh->hlc));
	send_frame(c, &frame, NULL);
	mc_buf_fini(&frame);
	pump(sh);
}

static void on_timer_closed(uv_handle_t *h) { unref(h->data); }

/* ---- public ------------------------------------------------------------------------------- */

static int cell_ok(const char *cell)
{
	size_t n = cell ? strlen(cell) : 0;
	if (n == 0 || n > MC_STATE_MAX_HOME)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)cell[i] < 0x21 || (unsigned char)cell[i] > 0x7e)
			return 0;
	return 1;
}

int mc_repl_shipper_new(mc_repl_shipper **out, uv_loop_t *loop, mc_store *store, const char *cell,
			const char *region_addr, const mc_repl_shipper_opts *opts)
{
	int rc = 0;
	mc_repl_shipper *sh = NULL;
	*out = NULL;
	if (!loop || !store || !cell_ok(cell) || !region_addr) {
		rc = MC_EINVAL;
		goto out;
	}
	sh = mc_calloc(1, sizeof(*sh));
	if (opts)
		sh->o = *opts;
	else
		mc_repl_shipper_opts_default(&sh->o);
	mc_repl_shipper_opts d;
	mc_repl_shipper_opts_default(&d);
	if (!sh->o.batch_max_entries)
		sh->o.batch_max_entries = d.batch_max_entries;
	if (!sh->o.batch_max_bytes)
		sh->o.batch_max_bytes = d.batch_max_bytes;
	sh->o.batch_max_bytes = MC_MIN(sh->o.batch_max_bytes, MC_REPL_MAX_FRAME / 2);
	if (!sh->o.window_entries)
		sh->o.window_entries = d.window_entries;
	if (!sh->o.heartbeat_ms)
		sh->o.heartbeat_ms = d.heartbeat_ms;
	if (!sh->o.dead_after_ms)
		sh->o.dead_after_ms = d.dead_after_ms;
	if (!sh->o.reconnect_ms)
		sh->o.reconnect_ms = d.reconnect_ms;
	if (sh->o.dead_after_ms <= sh->o.heartbeat_ms) {
		rc = MC_EINVAL;
		goto out;
	}
	rc = mc_net_addr_parse(region_addr, &sh->addr);
	if (rc < 0)
		goto out;
	strcpy(sh->cell, cell);
	sh->loop = loop;
	sh->store = store;
	sh->backoff_ms = sh->o.reconnect_ms;
	sh->ring = mc_calloc(sh->o.window_entries, sizeof(*sh->ring));
	mc_hist_init(&sh->st.lag_us);
	mc_hlc_init(&sh->hlc, 0);
	mc_log_stats ls;
	mc_store_log_stats(store, &ls);
	sh->acked = ls.acked_seq;
	sh->trimmed = ls.acked_seq;
	sh->next_seq = ls.acked_seq + 1;

	uv_timer_init(loop, &sh->retry);
	uv_timer_init(loop, &sh->tick);
	sh->retry.data = sh;
	sh->tick.data = sh;
	sh->refs = 2;
	uv_timer_start(&sh->tick, on_tick, sh->o.heartbeat_ms, sh->o.heartbeat_ms);
	mc_store_set_commit_hook(store, on_commit, sh);
	attempt(sh);
	*out = sh;
	sh = NULL;
out:
	if (sh) {
		free(sh->ring);
		free(sh);
	}
	return rc;
}

static int first_version(void *arg, const mc_log_entry *e)
{
	*(uint64_t *)arg = e->version;
	return 1;
}

void mc_repl_shipper_stats_get(mc_repl_shipper *sh, mc_repl_shipper_stats *out)
{
	*out = sh->st;
	mc_log_stats ls;
	mc_store_log_stats(sh->store, &ls);
	out->acked_seq = MC_MAX(sh->acked, ls.acked_seq);
	out->last_seq = ls.last_seq;
	out->lag_entries = ls.last_seq > out->acked_seq ? ls.last_seq - out->acked_seq : 0;
	out->oldest_unacked_ms = 0;
	if (out->lag_entries == 0)
		return;
	uint64_t version = 0;
	if (sh->ring_len > 0) {
		version = sh->ring[sh->ring_head].version;
	} else {
		if (mc_store_log_read(sh->store, out->acked_seq + 1, 1, SIZE_MAX, first_version,
				      &version) < 0)
			version = 0;
	}
	uint64_t w = mc_hlc_wall_ms(version), now = mc_wall_ms();
	if (version && now > w)
		out->oldest_unacked_ms = now - w;
}

int mc_repl_shipper_send(mc_repl_shipper *sh, mc_buf *frame)
{
	struct conn *c = sh->conn;
	if (!c || c->closing || c->state != C_STREAMING || sh->freeing)
		return MC_EUNAVAIL;
	if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 8 * (size_t)sh->o.batch_max_bytes)
		return MC_EFULL;
	send_frame(c, frame, NULL);
	return 0;
}

void mc_repl_shipper_free(mc_repl_shipper *sh)
{
	if (!sh)
		return;
	sh->freeing = 1;
	mc_store_set_commit_hook(sh->store, NULL, NULL);
	if (sh->conn)
		conn_fail(sh->conn, MC_ECANCELED, "shutdown");
	uv_timer_stop(&sh->retry);
	uv_timer_stop(&sh->tick);
	uv_close((uv_handle_t *)&sh->retry, on_timer_closed);
	uv_close((uv_handle_t *)&sh->tick, on_timer_closed);
}

void mc_repl_shipper_progress(mc_repl_shipper *sh, uint64_t *acked_seq, uint64_t *oldest_unacked_ms,
			      uint64_t *up_since_ms)
{
	mc_log_stats ls;
	mc_store_log_stats(sh->store, &ls);
	uint64_t acked = MC_MAX(sh->acked, ls.acked_seq);
	if (acked_seq)
		*acked_seq = acked;
	if (up_since_ms)
		*up_since_ms = sh->st.up_since_ms;
	if (!oldest_unacked_ms)
		return;
	*oldest_unacked_ms = 0;
	if (ls.last_seq <= acked)
		return;
	uint64_t version = 0;
	if (sh->ring_len > 0)
		version = sh->ring[sh->ring_head].version;
	else if (mc_store_log_read(sh->store, acked + 1, 1, SIZE_MAX, first_version, &version) < 0)
		version = 0;
	uint64_t w = mc_hlc_wall_ms(version), now = mc_wall_ms();
	if (version && now > w)
		*oldest_unacked_ms = now - w;
}
