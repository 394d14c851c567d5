/* `metrocell link`: a TCP relay that emulates a WAN link (one-way delay, jitter,
 * bandwidth, cut/restore) because the test kernels have no netem. Each direction of
 * each relayed connection is a FIFO of timestamped chunks drained by one timer; a
 * tiny HTTP admin port changes the link at runtime. Operator doc: docs/link.md. */

#include "testbed/testbed.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/common.h"
#include "net/net.h"

#define COMP "link"
#define READ_BUF_SIZE 65536
#define HIGH_WATER ((size_t)4 << 20) /* stop reading a source above this */
#define LOW_WATER ((size_t)1 << 20)  /* and resume below this */
#define MAX_DELAY_MS 60000u
#define MAX_BANDWIDTH_KBPS 100000000u /* 100 Gbit/s */
#define MAX_CONNS_LIMIT 65536u
#define DEFAULT_MAX_CONNS 1024u
#define NAME_MAX_LEN 64
#define ADDR_STR 80
#define ADMIN_REQ_MAX 4096
#define ADMIN_READ_TIMEOUT_MS 5000
#define ADMIN_LINGER_MS 1000
#define ADMIN_MAX_CONNS 32
#define NS_PER_MS 1000000ull

struct conn;
struct relay;

/* One unit of relayed data. len == 0 with eof set is the half-close marker. The
 * write request comes first so a uv_write_t* converts back to the chunk. */
typedef struct chunk {
	uv_write_t req;
	struct chunk *next;
	struct dir *d;
	uint64_t release_ns;
	size_t len;
	bool eof;
	char data[];
} chunk;

/* One direction of a relayed connection: bytes read from src wait in the FIFO
 * until their release time, then are written to dst. */
typedef struct dir {
	struct conn *c;
	uv_stream_t *src;
	uv_stream_t *dst;
	uv_timer_t timer;
	uv_shutdown_t shut_req;
	chunk *head;
	chunk *tail;
	size_t pending;           /* queued + being written: the backpressure measure */
	uint64_t last_release_ns; /* release time of the newest chunk (order keeping) */
	uint64_t tx_end_ns;       /* when the emulated wire finishes the newest chunk */
	uint64_t *delivered;      /* relay-wide byte counter for this direction */
	bool dst_ready;
	bool src_eof;
	bool paused;
	bool shut_done;
} dir;

typedef struct conn {
	struct conn *prev;
	struct conn *next;
	struct relay *r;
	uv_tcp_t client;
	uv_tcp_t upstream;
	uv_connect_t connect_req;
	dir up;   /* client -> upstream */
	dir down; /* upstream -> client */
	int open_handles;
	bool closing;
} conn;

typedef struct admin_conn {
	struct admin_conn *prev;
	struct admin_conn *next;
	struct relay *r;
	uv_tcp_t h;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	mc_buf out;
	size_t len;
	int open_handles;
	bool responded;
	bool closing;
	char buf[ADMIN_REQ_MAX];
} admin_conn;

typedef struct relay {
	uv_loop_t loop;
	uv_tcp_t listener;
	uv_tcp_t admin;
	uv_signal_t sigterm;
	uv_signal_t sigint;
	bool listener_open;
	bool admin_open;
	bool signals_open;
	struct sockaddr_storage to_addr;
	char name[NAME_MAX_LEN + 1];
	char listen_str[ADDR_STR];
	char to_str[ADDR_STR];
	char admin_str[ADDR_STR];
	uint64_t delay_ms;
	uint64_t jitter_ms;
	uint64_t bandwidth_kbps; /* 0: unlimited */
	uint64_t bytes_up;       /* delivered to upstream */
	uint64_t bytes_down;     /* delivered to clients */
	uint64_t conns_total;
	uint64_t conns_refused;
	unsigned max_conns;
	unsigned nconns;
	unsigned nadmin;
	bool cut;
	bool stopping;
	conn *conns;
	admin_conn *admins;
	uint64_t rng;
	char rbuf[READ_BUF_SIZE];
} relay;

typedef struct opts {
	const char *listen;
	const char *to;
	const char *admin;
	const char *name;
	uint64_t delay_ms;
	uint64_t jitter_ms;
	uint64_t bandwidth_kbps;
	uint64_t max_conns;
} opts;

/* ---- small helpers ------------------------------------------------------------ */

static uint64_t rng_next(relay *r)
{
	/* splitmix64: plenty for jitter, no global state */
	uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void format_sockname(const uv_tcp_t *h, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	int n = (int)sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (uv_tcp_getsockname(h, (struct sockaddr *)&ss, &n) != 0) {
		snprintf(out, cap, "?");
		return;
	}
	mc_net_addr_format((const struct sockaddr *)&ss, out, cap);
}

/* ---- relayed connections -------------------------------------------------------- */

static void conn_close(conn *c, bool reset);
static void dir_flush(dir *d);

static void conn_handle_closed(uv_handle_t *h)
{
	/* timers and streams both carry their dir, which leads back to the conn */
	dir *d = h->data;
	conn *c = d->c;
	if (--c->open_handles == 0)
		free(c);
}

static void stream_close(uv_tcp_t *h, bool reset)
{
	if (uv_is_closing((uv_handle_t *)h))
		return;
	/* uv_tcp_close_reset sets SO_LINGER 0 so the peer sees RST at once; it refuses
	 * handles with a shutdown in progress, which then get a plain close. */
	if (reset && uv_tcp_close_reset(h, conn_handle_closed) == 0)
		return;
	uv_close((uv_handle_t *)h, conn_handle_closed);
}

static void dir_drop_queue(dir *d)
{
	chunk *ch = d->head;
	while (ch) {
		chunk *next = ch->next;
		free(ch);
		ch = next;
	}
	d->head = d->tail = NULL;
}

/* Closes both sockets and timers; reset makes the peers see RST instead of FIN.
 * Writes in flight complete with UV_ECANCELED before the close callbacks, so the
 * conn is freed only after the last handle is closed. */
static void conn_close(conn *c, bool reset)
{
	relay *r = c->r;
	if (c->closing)
		return;
	c->closing = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	r->nconns--;
	dir_drop_queue(&c->up);
	dir_drop_queue(&c->down);
	stream_close(&c->client, reset);
	stream_close(&c->upstream, reset);
	uv_close((uv_handle_t *)&c->up.timer, conn_handle_closed);
	uv_close((uv_handle_t *)&c->down.timer, conn_handle_closed);
}

static void relay_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	relay *r = h->loop->data;
	(void)suggested;
	/* One loop, and read_cb copies out synchronously: one shared buffer is enough. */
	buf->base = r->rbuf;
	buf->len = sizeof(r->rbuf);
}

static void relay_timer_cb(uv_timer_t *t)
{
	dir *d = t->data;
	dir_flush(d);
}

static void relay_write_cb(uv_write_t *req, int status);
static void relay_shutdown_cb(uv_shutdown_t *req, int status);
static void relay_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Hands every due chunk to libuv in order and arms the timer for the next one. */
static void dir_flush(dir *d)
{
	conn *c = d->c;
	uint64_t now;
	if (c->closing || !d->dst_ready)
		return;
	now = mc_now_ns();
	while (d->head && d->head->release_ns <= now) {
		chunk *ch = d->head;
		d->head = ch->next;
		if (!d->head)
			d->tail = NULL;
		ch->next = NULL;
		if (ch->eof) {
			free(ch);
			d->shut_req.data = d;
			if (uv_shutdown(&d->shut_req, d->dst, relay_shutdown_cb) != 0) {
				conn_close(c, true);
				return;
			}
			continue;
		}
		uv_buf_t b = uv_buf_init(ch->data, (unsigned)ch->len);
		if (uv_write(&ch->req, d->dst, &b, 1, relay_write_cb) != 0) {
			free(ch);
			conn_close(c, true);
			return;
		}
	}
	if (d->head) {
		uint64_t wait_ns = d->head->release_ns - now;
		uint64_t ms = (wait_ns + NS_PER_MS - 1) / NS_PER_MS;
		/* libuv's loop time may lag real time, so an early wake-up just re-arms. */
		uv_timer_start(&d->timer, relay_timer_cb, ms ? ms : 1, 0);
	} else {
		uv_timer_stop(&d->timer);
	}
}

/* Release time of the next len bytes: wire serialisation (bandwidth), then the
 * one-way delay plus uniform jitter in [0, jitter], never before the previous
 * chunk so the byte order of the direction is kept. */
static uint64_t next_release(relay *r, dir *d, size_t len, uint64_t now)
{
	uint64_t t = now;
	if (r->bandwidth_kbps) {
		uint64_t start = MC_MAX(now, d->tx_end_ns);
		d->tx_end_ns = start + (uint64_t)len * 8000000ull / r->bandwidth_kbps;
		t = d->tx_end_ns;
	}
	t += r->delay_ms * NS_PER_MS;
	if (r->jitter_ms)
		t += rng_next(r) % (r->jitter_ms * NS_PER_MS + 1);
	t = MC_MAX(t, d->last_release_ns);
	d->last_release_ns = t;
	return t;
}

static void dir_push(dir *d, chunk *ch)
{
	bool was_empty = d->head == NULL;
	if (d->tail)
		d->tail->next = ch;
	else
		d->head = ch;
	d->tail = ch;
	if (was_empty)
		dir_flush(d);
}

static void dir_enqueue(dir *d, const char *p, size_t n)
{
	relay *r = d->c->r;
	uint64_t now = mc_now_ns();
	size_t seg = n;
	if (r->bandwidth_kbps) {
		/* Segments of ~10 ms of wire time keep a slow link smooth. */
		uint64_t s = r->bandwidth_kbps * 1000 / 8 / 100;
		seg = (size_t)MC_MAX(s, (uint64_t)1460);
	}
	while (n > 0) {
		size_t k = MC_MIN(n, seg);
		chunk *ch = mc_alloc(sizeof(*ch) + k);
		memset(ch, 0, sizeof(*ch));
		ch->d = d;
		ch->len = k;
		memcpy(ch->data, p, k);
		ch->release_ns = next_release(r, d, k, now);
		d->pending += k;
		dir_push(d, ch);
		if (d->c->closing)
			return;
		p += k;
		n -= k;
	}
	if (d->pending > HIGH_WATER && !d->paused) {
		d->paused = true;
		uv_read_stop(d->src);
	}
}

static void dir_enqueue_eof(dir *d)
{
	chunk *ch = mc_alloc(sizeof(*ch));
	memset(ch, 0, sizeof(*ch));
	ch->d = d;
	ch->eof = true;
	ch->release_ns = next_release(d->c->r, d, 0, mc_now_ns());
	dir_push(d, ch);
}

static void relay_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	dir *d = s->data;
	conn *c = d->c;
	if (c->closing || nread == 0)
		return;
	if (nread == UV_EOF) {
		d->src_eof = true;
		uv_read_stop(s);
		dir_enqueue_eof(d);
		return;
	}
	if (nread < 0) {
		/* A reset or error on one side is passed on as a reset to the other. */
		MC_DEBUG(COMP, "%s: read error: %s", c->r->name, uv_strerror((int)nread));
		conn_close(c, true);
		return;
	}
	dir_enqueue(d, buf->base, (size_t)nread);
}

static void relay_write_cb(uv_write_t *req, int status)
{
	chunk *ch = (chunk *)req;
	dir *d = ch->d;
	conn *c = d->c;
	size_t len = ch->len;
	free(ch);
	if (c->closing)
		return;
	if (status < 0) {
		MC_DEBUG(COMP, "%s: write error: %s", c->r->name, uv_strerror(status));
		conn_close(c, true);
		return;
	}
	d->pending -= len;
	*d->delivered += len;
	if (d->paused && d->pending < LOW_WATER) {
		d->paused = false;
		if (!d->src_eof && uv_read_start(d->src, relay_alloc_cb, relay_read_cb) != 0)
			conn_close(c, true);
	}
}

static void relay_shutdown_cb(uv_shutdown_t *req, int status)
{
	dir *d = req->data;
	conn *c = d->c;
	if (c->closing)
		return;
	if (status < 0) {
		conn_close(c, true);
		return;
	}
	d->shut_done = true;
	if (c->up.shut_done && c->down.shut_done)
		conn_close(c, false);
}

static void relay_connect_cb(uv_connect_t *req, int status)
{
	conn *c = req->data;
	if (c->closing)
		return;
	if (status < 0) {
		MC_WARN(COMP, "%s: connect to %s failed: %s", c->r->name, c->r->to_str,
			uv_strerror(status));
		conn_close(c, true);
		return;
	}
	uv_tcp_nodelay(&c->upstream, 1);
	c->up.dst_ready = true;
	if (uv_read_start((uv_stream_t *)&c->upstream, relay_alloc_cb, relay_read_cb) != 0) {
		conn_close(c, true);
		return;
	}
	dir_flush(&c->up);
}

static void dir_init(dir *d, conn *c, uv_stream_t *src, uv_stream_t *dst, uint64_t *counter)
{
	d->c = c;
	d->src = src;
	d->dst = dst;
	d->delivered = counter;
	src->data = d;
	uv_timer_init(&c->r->loop, &d->timer);
	d->timer.data = d;
}

static void relay_accept_cb(uv_stream_t *server, int status)
{
	relay *r = server->loop->data;
	conn *c;
	int rc;
	if (status < 0) {
		MC_WARN(COMP, "%s: accept: %s", r->name, uv_strerror(status));
		return;
	}
	c = mc_calloc(1, sizeof(*c));
	c->r = r;
	uv_tcp_init(&r->loop, &c->client);
	uv_tcp_init(&r->loop, &c->upstream);
	dir_init(&c->up, c, (uv_stream_t *)&c->client, (uv_stream_t *)&c->upstream, &r->bytes_up);
	dir_init(&c->down, c, (uv_stream_t *)&c->upstream, (uv_stream_t *)&c->client,
		 &r->bytes_down);
	c->down.dst_ready = true;
	c->open_handles = 4;
	c->next = r->conns;
	if (r->conns)
		r->conns->prev = c;
	r->conns = c;
	r->nconns++;

	rc = uv_accept(server, (uv_stream_t *)&c->client);
	if (rc != 0) {
		conn_close(c, true);
		return;
	}
	if (r->cut || r->nconns > r->max_conns) {
		/* A cut link accepts and drops at once: the peer sees a reset, like a
		 * partition that answers nothing useful, without hanging its connect. */
		r->conns_refused++;
		conn_close(c, true);
		return;
	}
	r->conns_total++;
	uv_tcp_nodelay(&c->client, 1);
	c->connect_req.data = c;
	rc = uv_tcp_connect(&c->connect_req, &c->upstream, (const struct sockaddr *)&r->to_addr,
			    relay_connect_cb);
	if (rc != 0) {
		MC_WARN(COMP, "%s: connect to %s: %s", r->name, r->to_str, uv_strerror(rc));
		conn_close(c, true);
		return;
	}
	/* Read the client at once: early bytes wait in the queue until the upstream
	 * connection is up (the handshake itself is not delayed). */
	rc = uv_read_start((uv_stream_t *)&c->client, relay_alloc_cb, relay_read_cb);
	if (rc != 0)
		conn_close(c, true);
}

static unsigned relay_cut(relay *r)
{
	unsigned n = 0;
	while (r->conns) {
		conn_close(r->conns, true);
		n++;
	}
	return n;
}

/* ---- admin API ------------------------------------------------------------------ */

static void admin_handle_closed(uv_handle_t *h)
{
	admin_conn *a = h->data;
	if (--a->open_handles == 0) {
		mc_buf_fini(&a->out);
		free(a);
	}
}

static void admin_close(admin_conn *a)
{
	relay *r = a->r;
	if (a->closing)
		return;
	a->closing = true;
	if (a->prev)
		a->prev->next = a->next;
	else
		r->admins = a->next;
	if (a->next)
		a->next->prev = a->prev;
	r->nadmin--;
	uv_close((uv_handle_t *)&a->h, admin_handle_closed);
	uv_close((uv_handle_t *)&a->timer, admin_handle_closed);
}

static void admin_error(admin_conn *a, int code, const char *err, const char *msg,
			const char *allow);

/* Before the response: the read timeout (answer 408); after it: the linger limit. */
static void admin_timer_cb(uv_timer_t *t)
{
	admin_conn *a = t->data;
	if (a->responded)
		admin_close(a);
	else
		admin_error(a, 408, "timeout", "request head not received in time", NULL);
}

static void admin_shutdown_cb(uv_shutdown_t *req, int status)
{
	admin_conn *a = req->data;
	if (a->closing)
		return;
	if (status < 0)
		admin_close(a);
	/* else: keep reading (and discarding) until the client closes or the linger
	 * timer fires, so unread request bytes never turn our close into a RST that
	 * could destroy the response before the client reads it. */
}

static void admin_write_cb(uv_write_t *req, int status)
{
	admin_conn *a = req->data;
	if (a->closing)
		return;
	if (status < 0 || uv_shutdown(&a->sreq, (uv_stream_t *)&a->h, admin_shutdown_cb) != 0)
		admin_close(a);
}

static const char *status_text(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 431: return "Request Header Fields Too Large";
	default: return "Error";
	}
}

static void admin_respond(admin_conn *a, int code, const char *allow, const mc_buf *body)
{
	uv_buf_t b;
	a->responded = true;
	a->len = 0;
	mc_buf_printf(&a->out,
		      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n%s%s%s\r\n",
		      code, status_text(code), body->len + 1, allow ? "Allow: " : "",
		      allow ? allow : "", allow ? "\r\n" : "");
	mc_buf_append(&a->out, body->data, body->len);
	mc_buf_append(&a->out, "\n", 1);
	a->wreq.data = a;
	a->sreq.data = a;
	b = uv_buf_init(a->out.data, (unsigned)a->out.len);
	uv_timer_start(&a->timer, admin_timer_cb, ADMIN_LINGER_MS, 0);
	if (uv_write(&a->wreq, (uv_stream_t *)&a->h, &b, 1, admin_write_cb) != 0)
		admin_close(a);
}

static void admin_error(admin_conn *a, int code, const char *err, const char *msg,
			const char *allow)
{
	mc_buf body;
	mc_buf_init(&body);
	/* err and msg are fixed strings of ours: nothing to escape */
	mc_buf_printf(&body, "{\"error\":\"%s\",\"message\":\"%s\"}", err, msg);
	admin_respond(a, code, allow, &body);
	mc_buf_fini(&body);
}

static void status_json(const relay *r, mc_buf *b)
{
	uint64_t queued = 0;
	for (const conn *c = r->conns; c; c = c->next)
		queued += c->up.pending + c->down.pending;
	/* name is validated to [A-Za-z0-9._-] and addresses are formatted by us. */
	mc_buf_printf(b,
		      "{\"name\":\"%s\",\"listen\":\"%s\",\"to\":\"%s\",\"admin\":\"%s\","
		      "\"delay_ms\":%llu,\"jitter_ms\":%llu,\"bandwidth_kbps\":%llu,"
		      "\"cut\":%s,\"connections\":%u,\"connections_total\":%llu,"
		      "\"refused\":%llu,\"queued_bytes\":%llu,\"bytes_up\":%llu,"
		      "\"bytes_down\":%llu}",
		      r->name, r->listen_str, r->to_str, r->admin_str,
		      (unsigned long long)r->delay_ms, (unsigned long long)r->jitter_ms,
		      (unsigned long long)r->bandwidth_kbps, r->cut ? "true" : "false", r->nconns,
		      (unsigned long long)r->conns_total, (unsigned long long)r->conns_refused,
		      (unsigned long long)queued, (unsigned long long)r->bytes_up, (unsigned long long)r->bytes_down);
}

/* Parses "ms=N&jitter=N" (either or both, any order). Returns 0, or MC_EINVAL with
 * *why set to a fixed message. */
static int parse_delay_query(const char *q, size_t n, uint64_t *ms, bool *have_ms,
			     uint64_t *jitter, bool *have_jitter, const char **why)
{
	size_t i = 0;
	*have_ms = *have_jitter = false;
	while (i < n) {
		size_t end = i, eq;
		while (end < n && q[end] != '&')
			end++;
		eq = i;
		while (eq < end && q[eq] != '=')
			eq++;
		if (eq == end) {
			*why = "query parameters must be key=value";
			return MC_EINVAL;
		}
		uint64_t v;
		if (mc_parse_u64(q + eq + 1, end - eq - 1, MAX_DELAY_MS, &v) != 0) {
			*why = "ms and jitter must be integers in 0..60000";
			return MC_EINVAL;
		}
		if (eq - i == 2 && memcmp(q + i, "ms", 2) == 0) {
			*ms = v;
			*have_ms = true;
		} else if (eq - i == 6 && memcmp(q + i, "jitter", 6) == 0) {
			*jitter = v;
			*have_jitter = true;
		} else {
			*why = "unknown query parameter (expected ms and/or jitter)";
			return MC_EINVAL;
		}
		i = end + 1;
	}
	if (!*have_ms && !*have_jitter) {
		*why = "expected ?ms=N and/or &jitter=N";
		return MC_EINVAL;
	}
	return 0;
}

static bool span_eq(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

/* Handles one complete request head in a->buf. Only the request line matters:
 * METHOD SP TARGET SP HTTP/1.x, each part bounded by the 4 KiB head limit. */
static void admin_handle(admin_conn *a)
{
	relay *r = a->r;
	const char *p = a->buf;
	const char *eol = memchr(p, '\n', a->len);
	size_t ll, i = 0, m_len, t_start, t_len, path_len, q_len;
	const char *q = NULL;
	mc_buf body;

	MC_ASSERT(eol != NULL);
	ll = (size_t)(eol - p);
	if (ll > 0 && p[ll - 1] == '\r')
		ll--;
	while (i < ll && i < 16 && p[i] >= 'A' && p[i] <= 'Z')
		i++;
	m_len = i;
	if (m_len == 0 || i >= ll || p[i] != ' ')
		goto bad;
	t_start = ++i;
	while (i < ll && p[i] != ' ' && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
		i++;
	t_len = i - t_start;
	if (t_len == 0 || p[t_start] != '/' || i >= ll || p[i] != ' ')
		goto bad;
	i++;
	if (!span_eq(p + i, ll - i, "HTTP/1.1") && !span_eq(p + i, ll - i, "HTTP/1.0"))
		goto bad;

	path_len = t_len;
	q_len = 0;
	{
		const char *qm = memchr(p + t_start, '?', t_len);
		if (qm) {
			path_len = (size_t)(qm - (p + t_start));
			q = qm + 1;
			q_len = t_len - path_len - 1;
		}
	}
	const char *path = p + t_start;
	bool get = span_eq(p, m_len, "GET"), post = span_eq(p, m_len, "POST");

	mc_buf_init(&body);
	if (span_eq(path, path_len, "/status")) {
		if (!get) {
			admin_error(a, 405, "method_not_allowed", "use GET /status", "GET");
			goto out;
		}
		status_json(r, &body);
		admin_respond(a, 200, NULL, &body);
	} else if (span_eq(path, path_len, "/cut")) {
		if (!post) {
			admin_error(a, 405, "method_not_allowed", "use POST /cut", "POST");
			goto out;
		}
		bool was_cut = r->cut;
		r->cut = true;
		unsigned n = relay_cut(r);
		MC_INFO(COMP, "%s: cut (closed %u connections)", r->name, n);
		mc_buf_printf(&body, "{\"cut\":true,\"was_cut\":%s,\"closed\":%u}",
			      was_cut ? "true" : "false", n);
		admin_respond(a, 200, NULL, &body);
	} else if (span_eq(path, path_len, "/restore")) {
		if (!post) {
			admin_error(a, 405, "method_not_allowed", "use POST /restore", "POST");
			goto out;
		}
		bool was_cut = r->cut;
		r->cut = false;
		MC_INFO(COMP, "%s: restored", r->name);
		mc_buf_printf(&body, "{\"cut\":false,\"was_cut\":%s}", was_cut ? "true" : "false");
		admin_respond(a, 200, NULL, &body);
	} else if (span_eq(path, path_len, "/delay")) {
		uint64_t ms = r->delay_ms, jit = r->jitter_ms;
		bool have_ms, have_jit;
		const char *why = NULL;
		if (!post) {
			admin_error(a, 405, "method_not_allowed", "use POST /delay?ms=N&jitter=N",
				    "POST");
			goto out;
		}
		if (parse_delay_query(q ? q : "", q_len, &ms, &have_ms, &jit, &have_jit, &why) != 0) {
			admin_error(a, 400, "bad_request", why, NULL);
			goto out;
		}
		r->delay_ms = ms;
		r->jitter_ms = jit;
		MC_INFO(COMP, "%s: delay %llu ms jitter %llu ms", r->name, (unsigned long long)ms,
			(unsigned long long)jit);
		status_json(r, &body);
		admin_respond(a, 200, NULL, &body);
	} else {
		admin_error(a, 404, "not_found",
			    "unknown path; try GET /status, POST /cut, POST /restore, "
			    "POST /delay?ms=N&jitter=N",
			    NULL);
	}
out:
	mc_buf_fini(&body);
	return;
bad:
	admin_error(a, 400, "bad_request", "malformed request line", NULL);
}

static void admin_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	admin_conn *a = h->data;
	(void)suggested;
	/* After the response, the same space takes (and discards) whatever follows. */
	buf->base = a->buf + a->len;
	buf->len = sizeof(a->buf) - a->len;
}

static bool head_complete(const char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n' || (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n'))
			return true;
	}
	return false;
}

static void admin_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	admin_conn *a = s->data;
	(void)buf;
	if (a->closing || nread == 0)
		return;
	if (nread < 0) {
		admin_close(a);
		return;
	}
	if (a->responded)
		return;
	a->len += (size_t)nread;
	if (head_complete(a->buf, a->len))
		admin_handle(a);
	else if (a->len >= sizeof(a->buf))
		admin_error(a, 431, "too_large", "request head exceeds 4096 bytes", NULL);
}

static void admin_accept_cb(uv_stream_t *server, int status)
{
	relay *r = server->loop->data;
	admin_conn *a;
	if (status < 0)
		return;
	a = mc_calloc(1, sizeof(*a));
	a->r = r;
	mc_buf_init(&a->out);
	uv_tcp_init(&r->loop, &a->h);
	uv_timer_init(&r->loop, &a->timer);
	a->h.data = a;
	a->timer.data = a;
	a->open_handles = 2;
	a->next = r->admins;
	if (r->admins)
		r->admins->prev = a;
	r->admins = a;
	r->nadmin++;
	if (uv_accept(server, (uv_stream_t *)&a->h) != 0 || r->nadmin > ADMIN_MAX_CONNS) {
		admin_close(a);
		return;
	}
	uv_timer_start(&a->timer, admin_timer_cb, ADMIN_READ_TIMEOUT_MS, 0);
	if (uv_read_start((uv_stream_t *)&a->h, admin_alloc_cb, admin_read_cb) != 0)
		admin_close(a);
}

/* ---- lifecycle ------------------------------------------------------------------- */

static void noop_close_cb(uv_handle_t *h)
{
	(void)h;
}

static void relay_stop(relay *r)
{
	if (r->stopping)
		return;
	r->stopping = true;
	if (r->listener_open)
		uv_close((uv_handle_t *)&r->listener, noop_close_cb);
	if (r->admin_open)
		uv_close((uv_handle_t *)&r->admin, noop_close_cb);
	if (r->signals_open) {
		uv_close((uv_handle_t *)&r->sigterm, noop_close_cb);
		uv_close((uv_handle_t *)&r->sigint, noop_close_cb);
	}
	while (r->conns)
		conn_close(r->conns, false);
	while (r->admins)
		admin_close(r->admins);
}

static void signal_cb(uv_signal_t *s, int signum)
{
	relay *r = s->loop->data;
	MC_INFO(COMP, "%s: signal %d, closing", r->name, signum);
	relay_stop(r);
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, noop_close_cb);
}

/* ---- command line -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: metrocell link --listen HOST:PORT --to HOST:PORT --delay MS\n"
		   "                      [--jitter MS] [--bandwidth-kbps N] [--admin HOST:PORT]\n"
		   "                      [--name NAME] [--max-conns N]\n"
		   "  HOST is a numeric IPv4/IPv6 address ([::1]) or localhost; PORT 0 picks a\n"
		   "  free port for --listen and --admin (default admin 127.0.0.1:0).\n"
		   "  --delay/--jitter: one-way milliseconds per direction, 0..%u.\n"
		   "  --bandwidth-kbps: per-direction rate in kbit/s, 0 = unlimited.\n"
		   "  Admin: GET /status, POST /cut, POST /restore, POST /delay?ms=N&jitter=N\n",
		MAX_DELAY_MS);
}

static int arg_error(const char *opt, const char *value, const char *expected)
{
	if (value)
		fprintf(stderr, "metrocell link: %s: invalid value '%s': expected %s\n", opt, value,
			expected);
	else
		fprintf(stderr, "metrocell link: %s: %s\n", opt, expected);
	fprintf(stderr, "run 'metrocell link --help' for usage\n");
	return 2;
}

static int parse_num(const char *opt, const char *v, uint64_t min, uint64_t max, const char *what,
		     uint64_t *out)
{
	char expected[128];
	snprintf(expected, sizeof(expected), "%s, an integer in %llu..%llu", what,
		 (unsigned long long)min, (unsigned long long)max);
	if (mc_parse_u64(v, strlen(v), max, out) != 0 || *out < min)
		return arg_error(opt, v, expected);
	return 0;
}

static int check_hostport(const char *opt, const char *v, bool port_zero_ok)
{
	struct sockaddr_storage ss;
	char host[64];
	uint16_t port = 0;
	if (mc_parse_hostport(v, host, sizeof(host), &port) != 0 || mc_net_addr_parse(v, &ss) != 0)
		return arg_error(opt, v,
				 "HOST:PORT with a numeric IPv4 address, [IPv6] or localhost");
	if (!port_zero_ok && port == 0)
		return arg_error(opt, v, "a non-zero port");
	return 0;
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > NAME_MAX_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
		if (!ok)
			return false;
	}
	return true;
}

static const char *const OPTION_NAMES[] = {"--listen",         "--to",     "--delay",
					   "--jitter",         "--admin",  "--name",
					   "--bandwidth-kbps", "--max-conns"};

/* Returns 0 when o is filled, 1 for --help (already printed), 2 on a usage error
 * (already reported on stderr). */
static int parse_args(int argc, char **argv, opts *o)
{
	const char *vals[MC_ARRAY_LEN(OPTION_NAMES)] = {0};
	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *eq;
		size_t nlen, k;
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage(stdout);
			return 1;
		}
		if (strncmp(arg, "--", 2) != 0)
			return arg_error(arg, NULL, "unexpected argument (options start with --)");
		eq = strchr(arg, '=');
		nlen = eq ? (size_t)(eq - arg) : strlen(arg);
		for (k = 0; k < MC_ARRAY_LEN(OPTION_NAMES); k++)
			if (span_eq(arg, nlen, OPTION_NAMES[k]))
				break;
		if (k == MC_ARRAY_LEN(OPTION_NAMES)) {
			fprintf(stderr, "metrocell link: unknown argument '%s'\n", arg);
			usage(stderr);
			return 2;
		}
		if (vals[k])
			return arg_error(OPTION_NAMES[k], NULL, "given more than once");
		if (eq) {
			vals[k] = eq + 1;
		} else {
			if (i + 1 >= argc)
				return arg_error(OPTION_NAMES[k], NULL, "missing value");
			vals[k] = argv[++i];
		}
	}
	o->listen = vals[0];
	o->to = vals[1];
	o->admin = vals[4] ? vals[4] : "127.0.0.1:0";
	o->name = vals[5] ? vals[5] : "link";
	o->max_conns = DEFAULT_MAX_CONNS;
	if (!o->listen)
		return arg_error("--listen", NULL,
				 "missing required option (HOST:PORT to accept clients on)");
	if (!o->to)
		return arg_error("--to", NULL, "missing required option (HOST:PORT to relay to)");
	if (!vals[2])
		return arg_error("--delay", NULL,
				 "missing required option (one-way delay in milliseconds)");
	if (check_hostport("--listen", o->listen, true) || check_hostport("--to", o->to, false) ||
	    check_hostport("--admin", o->admin, true))
		return 2;
	if (parse_num("--delay", vals[2], 0, MAX_DELAY_MS, "milliseconds", &o->delay_ms))
		return 2;
	if (vals[3] &&
	    parse_num("--jitter", vals[3], 0, MAX_DELAY_MS, "milliseconds", &o->jitter_ms))
		return 2;
	if (vals[6] && parse_num("--bandwidth-kbps", vals[6], 0, MAX_BANDWIDTH_KBPS,
				 "kbit/s (0 = unlimited)", &o->bandwidth_kbps))
		return 2;
	if (vals[7] && parse_num("--max-conns", vals[7], 1, MAX_CONNS_LIMIT, "connections",
				 &o->max_conns))
		return 2;
	if (!valid_name(o->name))
		return arg_error("--name", o->name, "1..64 characters from A-Z a-z 0-9 . _ -");
	return 0;
}

/* ---- entry point ------------------------------------------------------------------- */

int mc_testbed_link_main(int argc, char **argv)
{
	opts o;
	relay *r;
	int rc = parse_args(argc, argv, &o);
	int exit_code = 0;
	if (rc == 1)
		return 0;
	if (rc != 0)
		return 2;

	r = mc_calloc(1, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", o.name);
	r->delay_ms = o.delay_ms;
	r->jitter_ms = o.jitter_ms;
	r->bandwidth_kbps = o.bandwidth_kbps;
	r->max_conns = (unsigned)o.max_conns;
	r->rng = mc_now_ns() ^ ((uint64_t)getpid() << 32);
	if (mc_net_addr_parse(o.to, &r->to_addr) != 0) {
		free(r);
		return arg_error("--to", o.to, "HOST:PORT");
	}
	mc_net_addr_format((const struct sockaddr *)&r->to_addr, r->to_str, sizeof(r->to_str));

	/* A peer that vanishes mid-write must give EPIPE, not kill the relay. */
	signal(SIGPIPE, SIG_IGN);
	if (uv_loop_init(&r->loop) != 0) {
		fprintf(stderr, "metrocell link: cannot create the event loop\n");
		free(r);
		return 1;
	}
	r->loop.data = r;

	rc = mc_net_listen(&r->loop, &r->listener, o.listen, 0, 511, relay_accept_cb);
	if (rc != 0) {
		fprintf(stderr, "metrocell link: --listen %s: %s\n", o.listen, mc_strerror(rc));
		exit_code = 1;
		goto out;
	}
	r->listener_open = true;
	rc = mc_net_listen(&r->loop, &r->admin, o.admin, 0, 64, admin_accept_cb);
	if (rc != 0) {
		fprintf(stderr, "metrocell link: --admin %s: %s\n", o.admin, mc_strerror(rc));
		exit_code = 1;
		goto out;
	}
	r->admin_open = true;
	uv_signal_init(&r->loop, &r->sigterm);
	uv_signal_init(&r->loop, &r->sigint);
	r->signals_open = true;
	uv_signal_start(&r->sigterm, signal_cb, SIGTERM);
	uv_signal_start(&r->sigint, signal_cb, SIGINT);

	format_sockname(&r->listener, r->listen_str, sizeof(r->listen_str));
	format_sockname(&r->admin, r->admin_str, sizeof(r->admin_str));
	printf("link %s listening on %s -> %s admin %s\n", r->name, r->listen_str, r->to_str,
	       r->admin_str);
	fflush(stdout);
	MC_INFO(COMP, "%s: %s -> %s delay %llu ms jitter %llu ms bandwidth %llu kbit/s", r->name,
		r->listen_str, r->to_str, (unsigned long long)r->delay_ms,
		(unsigned long long)r->jitter_ms, (unsigned long long)r->bandwidth_kbps);

	uv_run(&r->loop, UV_RUN_DEFAULT);
out:
	relay_stop(r);
	uv_run(&r->loop, UV_RUN_DEFAULT);
	/* Anything left (a handle a failed listen initialised) is closed here. */
	uv_walk(&r->loop, walk_close, NULL);
	uv_run(&r->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&r->loop) != 0)
		MC_WARN(COMP, "%s: event loop still busy at exit", r->name);
	free(r);
	return exit_code;
}
