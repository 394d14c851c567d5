/* The replication frame codec: pure functions from bytes to frames and back, no
 * I/O and no allocation beyond the caller's mc_buf. docs/protocol.md is the
 * byte-level specification this file implements. */
#include <string.h>

#include "repl/repl.h"

/* op u8 | version u64 | expires_ms u64 | klen u16 | vlen u32 */
#define ENTRY_HDR 23
#define ENTRIES_HDR 12 /* first_seq u64 | n u32 */

_Static_assert(MC_REPL_MAX_FRAME >= ENTRIES_HDR + ENTRY_HDR + MC_STATE_MAX_KEY + MC_STATE_MAX_VALUE,
	       "one maximal entry must fit in one ENTRIES frame");
_Static_assert(MC_REPL_MAX_FRAME + MC_REPL_HDR + MC_REPL_TRAILER < (1u << 31),
	       "frame sizes must fit in an int return value");

static int cell_name_ok(const uint8_t *p, size_t n)
{
	if (n == 0 || n > MC_STATE_MAX_HOME)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x21 || p[i] > 0x7e)
			return 0;
	return 1;
}

/* Parses one entry at data[pos..len). Returns the entry size or MC_EPROTO. */
static int parse_entry(const uint8_t *data, size_t len, size_t pos, mc_log_entry *e)
{
	if (len - pos < ENTRY_HDR)
		return MC_EPROTO;
	const uint8_t *p = data + pos;
	uint8_t op = p[0];
	uint16_t klen = mc_get_u16(p + 17);
	uint32_t vlen = mc_get_u32(p + 19);
	if (op != MC_OP_PUT && op != MC_OP_DEL)
		return MC_EPROTO;
	if (klen == 0 || klen > MC_STATE_MAX_KEY || vlen > MC_STATE_MAX_VALUE)
		return MC_EPROTO;
	if (op == MC_OP_DEL && vlen != 0)
		return MC_EPROTO;
	if ((size_t)klen + vlen > len - pos - ENTRY_HDR)
		return MC_EPROTO;
	e->op = op;
	e->version = mc_get_u64(p + 1);
	e->expires_ms = mc_get_u64(p + 9);
	e->key = (const char *)p + ENTRY_HDR;
	e->klen = klen;
	e->value = (const char *)p + ENTRY_HDR + klen;
	e->vlen = vlen;
	return (int)(ENTRY_HDR + klen + vlen);
}

/* ---- observability frames (docs/protocol.md section 3) ---------------------------------- */

_Static_assert(MC_REPL_TELEM_FIXED == 4 + 4 + 8 + 8 + 4 + 8 + 8 + 16 + 24 + 8 + 8 + 8 + 8 + 8 + 16 + 16,
	       "the fixed TELEMETRY fields");

static int decode_telemetry(const uint8_t *p, size_t n, mc_repl_telemetry *t)
{
	if (n < MC_REPL_TELEM_FIXED || p[0] != MC_REPL_TELEM_VERSION || p[3] != 0)
		return MC_EPROTO;
	uint8_t no = p[2];
	if (p[1] > MC_REPL_HEALTH_DRAINING || no > MC_REPL_TELEM_OUTCOMES ||
	    n != MC_REPL_TELEM_FIXED + (size_t)no * MC_REPL_TELEM_OUTCOME)
		return MC_EPROTO;
	t->health = p[1];
	t->n_outcomes = no;
	t->health_flags = mc_get_u32(p + 4);
	const uint8_t *q = p + 8;
#define U64(f)                                                                                     \
	do {                                                                                       \
		t->f = mc_get_u64(q);                                                              \
		q += 8;                                                                            \
	} while (0)
#define U32(f)                                                                                     \
	do {                                                                                       \
		t->f = mc_get_u32(q);                                                              \
		q += 4;                                                                            \
	} while (0)
	U64(seq);
	U64(wall_ms);
	U32(interval_ms);
	U64(uptime_ms);
	U64(config_version);
	U64(regional);
	U64(regional_total);
	U64(cache_hit);
	U64(cache_stale);
	U64(cache_miss);
	U64(locality_violations_total);
	U64(cold_starts_total);
	U64(repl_lag_entries);
	U64(repl_oldest_unacked_ms);
	U32(repl_ack_p50_us);
	U32(repl_ack_p99_us);
	U64(events_pending);
	U64(events_dropped_total);
	U64(blind_last_window_ms);
	U64(blind_total_ms);
#undef U64
#undef U32
	for (size_t i = 0; i < no; i++, q += MC_REPL_TELEM_OUTCOME) {
		mc_repl_telem_outcome *o = &t->outcomes[i];
		o->id = q[0];
		if (o->id >= MC_REPL_TELEM_OUTCOMES || (i > 0 && o->id <= t->outcomes[i - 1].id))
			return MC_EPROTO;
		o->total = mc_get_u64(q + 1);
		o->count = mc_get_u32(q + 9);
		o->p50_us = mc_get_u32(q + 13);
		o->p95_us = mc_get_u32(q + 17);
		o->p99_us = mc_get_u32(q + 21);
	}
	return 0;
}

/* One event: u16 len | len bytes of a one-line JSON object. Returns its size on
 * the wire or MC_EPROTO. */
static int parse_event(const uint8_t *data, size_t len, size_t pos, const char **line,
		       size_t *llen)
{
	if (len - pos < 2)
		return MC_EPROTO;
	size_t l = mc_get_u16(data + pos);
	if (l < 2 || l > MC_REPL_EVENT_MAX || l > len - pos - 2)
		return MC_EPROTO;
	const uint8_t *e = data + pos + 2;
	if (e[0] != '{' || e[l - 1] != '}')
		return MC_EPROTO;
	for (size_t i = 0; i < l; i++)
		if (e[i] < 0x20 || e[i] == 0x7f)
			return MC_EPROTO;
	*line = (const char *)e;
	*llen = l;
	return (int)(2 + l);
}

static int decode_events(const uint8_t *p, size_t n, mc_repl_frame *out)
{
	if (n < 18)
		return MC_EPROTO;
	uint64_t stream = mc_get_u64(p), first = mc_get_u64(p + 8);
	uint32_t cnt = mc_get_u16(p + 16);
	if (cnt == 0 || cnt > MC_REPL_EVENTS_MAX_N || first == 0 || first > UINT64_MAX - cnt)
		return MC_EPROTO;
	const uint8_t *data = p + 18;
	size_t dlen = n - 18, pos = 0;
	for (uint32_t i = 0; i < cnt; i++) {
		const char *line;
		size_t ll;
		int r = parse_event(data, dlen, pos, &line, &ll);
		if (r < 0)
			return r;
		pos += (size_t)r;
	}
	if (pos != dlen)
		return MC_EPROTO;
	out->u.events.stream = stream;
	out->u.events.first_seq = first;
	out->u.events.n = cnt;
	out->u.events.data = data;
	out->u.events.data_len = dlen;
	return 0;
}

static int decode_payload(uint8_t type, const uint8_t *p, size_t n, mc_repl_frame *out)
{
	switch (type) {
	case MC_FRAME_HELLO: {
		if (n < 3)
			return MC_EPROTO;
		size_t cl = p[2];
		if (n != 3 + cl + 24 || !cell_name_ok(p + 3, cl))
			return MC_EPROTO;
		mc_repl_hello *h = &out->u.hello;
		h->proto = mc_get_u16(p);
		memcpy(h->cell, p + 3, cl);
		h->cell[cl] = '\0';
		h->epoch = mc_get_u64(p + 3 + cl);
		h->last_acked_seq = mc_get_u64(p + 3 + cl + 8);
		h->config_version = mc_get_u64(p + 3 + cl + 16);
		return 0;
	}
	case MC_FRAME_ENTRIES: {
		if (n < ENTRIES_HDR)
			return MC_EPROTO;
		uint64_t first = mc_get_u64(p);
		uint32_t cnt = mc_get_u32(p + 8);
		const uint8_t *data = p + ENTRIES_HDR;
		size_t dlen = n - ENTRIES_HDR;
		/* Cheap bound before walking: every entry takes at least ENTRY_HDR + 1. */
		if (cnt > dlen / (ENTRY_HDR + 1))
			return MC_EPROTO;
		if (cnt > 0 && (first == 0 || first > UINT64_MAX - cnt))
			return MC_EPROTO;
		size_t pos = 0;
		for (uint32_t i = 0; i < cnt; i++) {
			mc_log_entry e;
			int r = parse_entry(data, dlen, pos, &e);
			if (r < 0)
				return r;
			pos += (size_t)r;
		}
		if (pos != dlen)
			return MC_EPROTO; /* trailing bytes */
		out->u.entries.first_seq = first;
		out->u.entries.n = cnt;
		out->u.entries.data = data;
		out->u.entries.data_len = dlen;
		return 0;
	}
	case MC_FRAME_ACK:
	case MC_FRAME_HEARTBEAT:
	case MC_FRAME_FENCE: {
		if (n != 8)
			return MC_EPROTO;
		uint64_t v = mc_get_u64(p);
		if (type == MC_FRAME_ACK)
			out->u.ack_seq = v;
		else if (type == MC_FRAME_HEARTBEAT)
			out->u.heartbeat_hlc = v;
		else
			out->u.fence_epoch = v;
		return 0;
	}
	case MC_FRAME_INVALIDATE: {
		if (n < 10)
			return MC_EPROTO;
		uint16_t kl = mc_get_u16(p + 8);
		if (kl == 0 || kl > MC_STATE_MAX_KEY || n != 10u + kl)
			return MC_EPROTO;
		out->u.invalidate.version = mc_get_u64(p);
		out->u.invalidate.key = (const char *)p + 10;
		out->u.invalidate.klen = kl;
		return 0;
	}
	case MC_FRAME_PURGE: {
		/* u8 mode (1 exact, 2 prefix) | u16 host_len | host | u16 pattern_len | pattern */
		if (n < 5 || (p[0] != 1 && p[0] != 2))
			return MC_EPROTO;
		size_t hl = mc_get_u16(p + 1);
		if (n < 5 + hl)
			return MC_EPROTO;
		size_t pl = mc_get_u16(p + 3 + hl);
		if (pl == 0 || hl + pl > MC_REPL_PURGE_MAX || n != 5 + hl + pl)
			return MC_EPROTO;
		out->u.purge.prefix = p[0] == 2;
		out->u.purge.host = (const char *)p + 3;
		out->u.purge.host_len = hl;
		out->u.purge.pattern = (const char *)p + 5 + hl;
		out->u.purge.pattern_len = pl;
		return 0;
	}
	case MC_FRAME_TELEMETRY:
		return decode_telemetry(p, n, &out->u.telemetry);
	case MC_FRAME_EVENTS:
		return decode_events(p, n, out);
	case MC_FRAME_OBS_ACK:
		if (n != 17 || (p[0] != MC_REPL_OBS_ACK_TELEMETRY && p[0] != MC_REPL_OBS_ACK_EVENTS))
			return MC_EPROTO;
		out->u.obs_ack.kind = p[0];
		out->u.obs_ack.stream = mc_get_u64(p + 1);
		out->u.obs_ack.seq = mc_get_u64(p + 9);
		return 0;
	default:
		return MC_EPROTO;
	}
}

int mc_repl_frame_decode(const uint8_t *buf, size_t len, size_t max_payload, mc_repl_frame *out)
{
	if (max_payload > MC_REPL_MAX_FRAME)
		max_payload = MC_REPL_MAX_FRAME;
	if (len < 4)
		return MC_EAGAIN;
	uint32_t flen = mc_get_u32(buf);
	if (flen == 0)
		return MC_EPROTO; /* no room for the type byte */
	if ((size_t)flen - 1 > max_payload)
		return MC_ETOOBIG;
	size_t total = 4 + (size_t)flen + MC_REPL_TRAILER;
	if (len < total)
		return MC_EAGAIN;
	uint32_t want = mc_get_u32(buf + 4 + flen);
	if (mc_crc32c(0, buf + 4, flen) != want)
		return MC_ECRC;
	memset(out, 0, sizeof(*out));
	out->type = buf[4];
	int r = decode_payload(buf[4], buf + MC_REPL_HDR, (size_t)flen - 1, out);
	if (r < 0)
		return r;
	return (int)total;
}

/* ---- encoders ----------------------------------------------------------------------- */

static size_t frame_begin(mc_buf *out, uint8_t type)
{
	size_t start = out->len;
	uint8_t hdr[MC_REPL_HDR] = {0, 0, 0, 0, type};
	mc_buf_append(out, hdr, sizeof(hdr));
	return start;
}

/* Patches the length of the frame that begins at start and appends its CRC. */
static void frame_end(mc_buf *out, size_t start)
{
	size_t flen = out->len - start - 4;
	MC_ASSERT(flen >= 1 && flen - 1 <= MC_REPL_MAX_FRAME);
	uint8_t *p = (uint8_t *)out->data + start;
	mc_put_u32(p, (uint32_t)flen);
	uint8_t crc[4];
	mc_put_u32(crc, mc_crc32c(0, p + 4, flen));
	mc_buf_append(out, crc, sizeof(crc));
}

static void append_u64(mc_buf *out, uint64_t v)
{
	uint8_t b[8];
	mc_put_u64(b, v);
	mc_buf_append(out, b, sizeof(b));
}

static void encode_u64_frame(mc_buf *out, uint8_t type, uint64_t v)
{
	size_t start = frame_begin(out, type);
	append_u64(out, v);
	frame_end(out, start);
}

void mc_repl_encode_hello(mc_buf *out, const mc_repl_hello *h)
{
	size_t cl = strnlen(h->cell, sizeof(h->cell));
	MC_ASSERT(cl >= 1 && cl <= MC_STATE_MAX_HOME);
	size_t start = frame_begin(out, MC_FRAME_HELLO);
	uint8_t b[3];
	mc_put_u16(b, h->proto);
	b[2] = (uint8_t)cl;
	mc_buf_append(out, b, sizeof(b));
	mc_buf_append(out, h->cell, cl);
	append_u64(out, h->epoch);
	append_u64(out, h->last_acked_seq);
	append_u64(out, h->config_version);
	frame_end(out, start);
}

void mc_repl_encode_ack(mc_buf *out, uint64_t seq) { encode_u64_frame(out, MC_FRAME_ACK, seq); }

void mc_repl_encode_heartbeat(mc_buf *out, uint64_t hlc)
{
	encode_u64_frame(out, MC_FRAME_HEARTBEAT, hlc);
}

void mc_repl_encode_fence(mc_buf *out, uint64_t epoch)
{
	encode_u64_frame(out, MC_FRAME_FENCE, epoch);
}

void mc_repl_encode_invalidate(mc_buf *out, uint64_t version, const char *key, size_t klen)
{
	MC_ASSERT(klen >= 1 && klen <= MC_STATE_MAX_KEY);
	size_t start = frame_begin(out, MC_FRAME_INVALIDATE);
	append_u64(out, version);
	uint8_t b[2];
	mc_put_u16(b, (uint16_t)klen);
	mc_buf_append(out, b, sizeof(b));
	mc_buf_append(out, key, klen);
	frame_end(out, start);
}

void mc_repl_encode_purge(mc_buf *out, bool prefix, const char *host, size_t host_len,
			  const char *pattern, size_t pattern_len)
{
	MC_ASSERT(pattern_len >= 1 && host_len + pattern_len <= MC_REPL_PURGE_MAX);
	size_t start = frame_begin(out, MC_FRAME_PURGE);
	uint8_t b[3] = {prefix ? 2 : 1, 0, 0};
	mc_put_u16(b + 1, (uint16_t)host_len);
	mc_buf_append(out, b, sizeof(b));
	if (host_len)
		mc_buf_append(out, host, host_len);
	mc_put_u16(b, (uint16_t)pattern_len);
	mc_buf_append(out, b, 2);
	mc_buf_append(out, pattern, pattern_len);
	frame_end(out, start);
}

void mc_repl_entries_begin(mc_repl_entries_writer *w, mc_buf *out, uint64_t first_seq)
{
	w->out = out;
	w->first_seq = first_seq;
	w->n = 0;
	w->start = frame_begin(out, MC_FRAME_ENTRIES);
	append_u64(out, first_seq);
	uint8_t zero[4] = {0};
	mc_buf_append(out, zero, sizeof(zero)); /* n, patched by end */
}

void mc_repl_entries_add(mc_repl_entries_writer *w, const mc_log_entry *e)
{
	MC_ASSERT(e->seq == w->first_seq + w->n);
	MC_ASSERT(e->op == MC_OP_PUT || e->op == MC_OP_DEL);
	MC_ASSERT(e->klen >= 1 && e->klen <= MC_STATE_MAX_KEY);
	/* A delete carries no value on the wire, whatever the log kept. */
	size_t vlen = e->op == MC_OP_DEL ? 0 : e->vlen;
	MC_ASSERT(vlen <= MC_STATE_MAX_VALUE);
	uint8_t h[ENTRY_HDR];
	h[0] = e->op;
	mc_put_u64(h + 1, e->version);
	mc_put_u64(h + 9, e->expires_ms);
	mc_put_u16(h + 17, (uint16_t)e->klen);
	mc_put_u32(h + 19, (uint32_t)vlen);
	mc_buf_append(w->out, h, sizeof(h));
	mc_buf_append(w->out, e->key, e->klen);
	if (vlen)
		mc_buf_append(w->out, e->value, vlen);
	w->n++;
}

void mc_repl_entries_end(mc_repl_entries_writer *w)
{
	mc_put_u32((uint8_t *)w->out->data + w->start + MC_REPL_HDR + 8, w->n);
	frame_end(w->out, w->start);
}

int mc_repl_entries_next(const mc_repl_frame *f, size_t *pos, uint32_t *index, mc_log_entry *e)
{
	if (f->type != MC_FRAME_ENTRIES)
		return MC_EPROTO;
	uint32_t i = *pos == 0 ? 0 : *index + 1;
	size_t dlen = f->u.entries.data_len;
	if (*pos >= dlen || i >= f->u.entries.n)
		return *pos == dlen && i == f->u.entries.n ? 0 : MC_EPROTO;
	int r = parse_entry(f->u.entries.data, dlen, *pos, e);
	if (r < 0)
		return r;
	e->seq = f->u.entries.first_seq + i;
	*index = i;
	*pos += (size_t)r;
	return 1;
}

/* ---- observability encoders -------------------------------------------------------------- */

static void append_u32(mc_buf *out, uint32_t v)
{
	uint8_t b[4];
	mc_put_u32(b, v);
	mc_buf_append(out, b, sizeof(b));
}

void mc_repl_encode_telemetry(mc_buf *out, const mc_repl_telemetry *t)
{
	MC_ASSERT(t->n_outcomes <= MC_REPL_TELEM_OUTCOMES && t->health <= MC_REPL_HEALTH_DRAINING);
	size_t start = frame_begin(out, MC_FRAME_TELEMETRY);
	uint8_t h[4] = {MC_REPL_TELEM_VERSION, t->health, t->n_outcomes, 0};
	mc_buf_append(out, h, sizeof(h));
	append_u32(out, t->health_flags);
	append_u64(out, t->seq);
	append_u64(out, t->wall_ms);
	append_u32(out, t->interval_ms);
	append_u64(out, t->uptime_ms);
	append_u64(out, t->config_version);
	append_u64(out, t->regional);
	append_u64(out, t->regional_total);
	append_u64(out, t->cache_hit);
	append_u64(out, t->cache_stale);
	append_u64(out, t->cache_miss);
	append_u64(out, t->locality_violations_total);
	append_u64(out, t->cold_starts_total);
	append_u64(out, t->repl_lag_entries);
	append_u64(out, t->repl_oldest_unacked_ms);
	append_u32(out, t->repl_ack_p50_us);
	append_u32(out, t->repl_ack_p99_us);
	append_u64(out, t->events_pending);
	append_u64(out, t->events_dropped_total);
	append_u64(out, t->blind_last_window_ms);
	append_u64(out, t->blind_total_ms);
	for (size_t i = 0; i < t->n_outcomes; i++) {
		const mc_repl_telem_outcome *o = &t->outcomes[i];
		MC_ASSERT(o->id < MC_REPL_TELEM_OUTCOMES && (i == 0 || o->id > t->outcomes[i - 1].id));
		mc_buf_append(out, &o->id, 1);
		append_u64(out, o->total);
		append_u32(out, o->count);
		append_u32(out, o->p50_us);
		append_u32(out, o->p95_us);
		append_u32(out, o->p99_us);
	}
	frame_end(out, start);
}

int mc_repl_telemetry_check(const mc_repl_telemetry *t, const char **why)
{
	*why = NULL;
	if (t->interval_ms == 0 || t->interval_ms > 3600000)
		*why = "interval_ms outside 1..3600000";
	else if (t->seq == 0)
		*why = "seq 0";
	else if (t->regional > t->regional_total)
		*why = "regional above regional_total";
	else if (t->repl_ack_p50_us > t->repl_ack_p99_us)
		*why = "replication ack p50 above p99";
	for (size_t i = 0; !*why && i < t->n_outcomes; i++) {
		const mc_repl_telem_outcome *o = &t->outcomes[i];
		if (o->count > o->total)
			*why = "an outcome's interval count above its total";
		else if (o->p50_us > o->p95_us || o->p95_us > o->p99_us)
			*why = "an outcome's quantiles out of order";
		else if (o->count == 0 && o->p99_us != 0)
			*why = "an outcome's quantiles without requests";
	}
	return *why ? MC_EINVAL : 0;
}

void mc_repl_encode_obs_ack(mc_buf *out, uint8_t kind, uint64_t stream, uint64_t seq)
{
	MC_ASSERT(kind == MC_REPL_OBS_ACK_TELEMETRY || kind == MC_REPL_OBS_ACK_EVENTS);
	size_t start = frame_begin(out, MC_FRAME_OBS_ACK);
	mc_buf_append(out, &kind, 1);
	append_u64(out, stream);
	append_u64(out, seq);
	frame_end(out, start);
}

void mc_repl_events_begin(mc_repl_events_writer *w, mc_buf *out, uint64_t stream,
			  uint64_t first_seq)
{
	MC_ASSERT(first_seq >= 1);
	w->out = out;
	w->n = 0;
	w->start = frame_begin(out, MC_FRAME_EVENTS);
	append_u64(out, stream);
	append_u64(out, first_seq);
	uint8_t zero[2] = {0, 0};
	mc_buf_append(out, zero, sizeof(zero)); /* n, patched by end */
}

void mc_repl_events_add(mc_repl_events_writer *w, const char *line, size_t len)
{
	MC_ASSERT(len >= 2 && len <= MC_REPL_EVENT_MAX && w->n < MC_REPL_EVENTS_MAX_N);
	MC_ASSERT(line[0] == '{' && line[len - 1] == '}');
	uint8_t b[2];
	mc_put_u16(b, (uint16_t)len);
	mc_buf_append(w->out, b, sizeof(b));
	mc_buf_append(w->out, line, len);
	w->n++;
}

void mc_repl_events_end(mc_repl_events_writer *w)
{
	MC_ASSERT(w->n >= 1);
	mc_put_u16((uint8_t *)w->out->data + w->start + MC_REPL_HDR + 16, (uint16_t)w->n);
	frame_end(w->out, w->start);
}

int mc_repl_events_next(const mc_repl_frame *f, size_t *pos, const char **line, size_t *len)
{
	if (f->type != MC_FRAME_EVENTS)
		return MC_EPROTO;
	if (*pos == f->u.events.data_len)
		return 0;
	int r = parse_event(f->u.events.data, f->u.events.data_len, *pos, line, len);
	if (r < 0)
		return r;
	*pos += (size_t)r;
	return 1;
}
