/* Unit tests for the observability frames of src/repl (TELEMETRY, EVENTS,
 * OBS_ACK): the golden bytes of docs/protocol.md, round trips, every strict
 * prefix, malformed payloads, the telemetry consistency check, and a shipper
 * and a sink on one loop exchanging them (on_link, send, callbacks, OBS_ACK). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "repl/repl.h"

static size_t hex_decode(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;
	for (const char *p = hex; *p;) {
		if (*p == ' ' || *p == '\n') {
			p++;
			continue;
		}
		unsigned v;
		assert_int_equal(sscanf(p, "%2x", &v), 1);
		assert_true(n < cap);
		out[n++] = (uint8_t)v;
		p += 2;
	}
	return n;
}

/* Exactly as printed in docs/protocol.md section 5. */
static const char GOLDEN_TELEMETRY[] = "00 00 00 b6 10 01 00 01 00 00 00 00 00 00 00 00\n"
				       "00 00 00 00 01 00 00 01 8b cf e5 68 00 00 00 03\n"
				       "e8 00 00 00 00 00 00 13 88 00 00 00 00 00 00 00\n"
				       "00 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00\n"
				       "02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
				       "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
				       "00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00\n"
				       "00 00 00 00 00 00 00 00 00 00 00 03 20 00 00 04\n"
				       "b0 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
				       "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
				       "00 00 00 00 00 00 00 00 00 64 00 00 00 64 00 00\n"
				       "00 fa 00 00 03 84 00 00 05 dc dc ce 9e de";
static const char GOLDEN_EVENTS[] = "00 00 00 55 11 01 23 45 67 89 ab cd ef 00 00 00\n"
				    "00 00 00 00 07 00 01 00 40 7b 22 73 65 71 22 3a\n"
				    "37 2c 22 74 73 5f 6d 73 22 3a 31 37 30 30 30 30\n"
				    "30 30 30 30 30 30 30 2c 22 63 65 6c 6c 22 3a 22\n"
				    "6c 61 78 22 2c 22 74 79 70 65 22 3a 22 63 65 6c\n"
				    "6c 5f 73 74 61 72 74 22 7d d1 01 f0 ae";
static const char GOLDEN_OBS_ACK[] = "00 00 00 12 12 02 01 23 45 67 89 ab cd ef 00 00\n"
				     "00 00 00 00 00 07 3c 3d 5a ad";
static const char EVENT_LINE[] = "{\"seq\":7,\"ts_ms\":1700000000000,\"cell\":\"lax\",\"type\":"
				 "\"cell_start\"}";

static void golden_telemetry(mc_repl_telemetry *t)
{
	memset(t, 0, sizeof *t);
	t->seq = 1;
	t->wall_ms = 1700000000000ull;
	t->interval_ms = 1000;
	t->uptime_ms = 5000;
	t->regional = 2;
	t->regional_total = 2;
	t->cold_starts_total = 1;
	t->repl_ack_p50_us = 800;
	t->repl_ack_p99_us = 1200;
	t->n_outcomes = 1;
	t->outcomes[0] = (mc_repl_telem_outcome){
	    .id = 0, .total = 100, .count = 100, .p50_us = 250, .p95_us = 900, .p99_us = 1500};
}

static void fix_crc(uint8_t *buf, size_t len)
{
	uint32_t flen = mc_get_u32(buf);
	assert_int_equal(4 + flen + 4, len);
	mc_put_u32(buf + 4 + flen, mc_crc32c(0, buf + 4, flen));
}

static void test_golden(void **state)
{
	(void)state;
	uint8_t want[256];
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_telemetry t;
	golden_telemetry(&t);
	mc_repl_encode_telemetry(&b, &t);
	size_t n = hex_decode(GOLDEN_TELEMETRY, want, sizeof want);
	assert_int_equal(n, 5 + MC_REPL_TELEM_FIXED + MC_REPL_TELEM_OUTCOME + 4);
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);
	mc_repl_frame f;
	assert_int_equal(mc_repl_frame_decode(want, n, MC_REPL_MAX_FRAME, &f), (int)n);
	assert_int_equal(f.type, MC_FRAME_TELEMETRY);
	assert_memory_equal(&f.u.telemetry, &t, sizeof t);

	mc_buf_reset(&b);
	mc_repl_events_writer w;
	mc_repl_events_begin(&w, &b, 0x0123456789abcdefull, 7);
	mc_repl_events_add(&w, EVENT_LINE, strlen(EVENT_LINE));
	mc_repl_events_end(&w);
	n = hex_decode(GOLDEN_EVENTS, want, sizeof want);
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);
	assert_int_equal(mc_repl_frame_decode(want, n, MC_REPL_MAX_FRAME, &f), (int)n);
	assert_int_equal(f.type, MC_FRAME_EVENTS);
	assert_true(f.u.events.stream == 0x0123456789abcdefull);
	assert_int_equal(f.u.events.first_seq, 7);
	assert_int_equal(f.u.events.n, 1);
	size_t pos = 0, len;
	const char *line;
	assert_int_equal(mc_repl_events_next(&f, &pos, &line, &len), 1);
	assert_int_equal(len, strlen(EVENT_LINE));
	assert_memory_equal(line, EVENT_LINE, len);
	assert_int_equal(mc_repl_events_next(&f, &pos, &line, &len), 0);

	mc_buf_reset(&b);
	mc_repl_encode_obs_ack(&b, MC_REPL_OBS_ACK_EVENTS, 0x0123456789abcdefull, 7);
	n = hex_decode(GOLDEN_OBS_ACK, want, sizeof want);
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);
	assert_int_equal(mc_repl_frame_decode(want, n, MC_REPL_MAX_FRAME, &f), (int)n);
	assert_int_equal(f.type, MC_FRAME_OBS_ACK);
	assert_int_equal(f.u.obs_ack.kind, MC_REPL_OBS_ACK_EVENTS);
	assert_true(f.u.obs_ack.stream == 0x0123456789abcdefull);
	assert_int_equal(f.u.obs_ack.seq, 7);
	mc_buf_fini(&b);
}

static void full_telemetry(mc_repl_telemetry *t)
{
	memset(t, 0, sizeof *t);
	t->health = MC_REPL_HEALTH_DEGRADED;
	t->health_flags = MC_REPL_HEALTH_POOL_DOWN | 0x80000000u;
	t->seq = UINT64_MAX;
	t->wall_ms = 1;
	t->interval_ms = UINT32_MAX;
	t->uptime_ms = 3;
	t->config_version = 42;
	t->regional = 4;
	t->regional_total = 5;
	t->cache_hit = 6;
	t->cache_stale = 7;
	t->cache_miss = 8;
	t->locality_violations_total = 9;
	t->cold_starts_total = 10;
	t->repl_lag_entries = 11;
	t->repl_oldest_unacked_ms = 12;
	t->repl_ack_p50_us = 13;
	t->repl_ack_p99_us = 14;
	t->events_pending = 15;
	t->events_dropped_total = 16;
	t->blind_last_window_ms = 17;
	t->blind_total_ms = 18;
	t->n_outcomes = MC_REPL_TELEM_OUTCOMES;
	for (uint8_t i = 0; i < MC_REPL_TELEM_OUTCOMES; i++)
		t->outcomes[i] = (mc_repl_telem_outcome){.id = i,
							 .total = 1000u + i,
							 .count = 100u + i,
							 .p50_us = 10u * i,
							 .p95_us = 20u * i,
							 .p99_us = 30u * i};
}

/* Round trip of a full frame; every strict prefix wants more bytes; every single
 * byte flip is caught (CRC) and, with the CRC fixed, never crashes the decoder. */
static void test_roundtrip_and_prefixes(void **state)
{
	(void)state;
	mc_repl_telemetry t;
	full_telemetry(&t);
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_encode_telemetry(&b, &t);
	assert_int_equal(b.len, 5 + MC_REPL_TELEM_FIXED + 7 * MC_REPL_TELEM_OUTCOME + 4);
	mc_repl_frame f;
	assert_int_equal(mc_repl_frame_decode((uint8_t *)b.data, b.len, MC_REPL_MAX_FRAME, &f),
			 (int)b.len);
	assert_memory_equal(&f.u.telemetry, &t, sizeof t);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(mc_repl_frame_decode((uint8_t *)b.data, i, MC_REPL_MAX_FRAME, &f),
				 MC_EAGAIN);
	uint8_t *copy = malloc(b.len);
	for (size_t i = 4; i < b.len - 4; i++) {
		memcpy(copy, b.data, b.len);
		copy[i] ^= 0x5a;
		assert_int_equal(mc_repl_frame_decode(copy, b.len, MC_REPL_MAX_FRAME, &f), MC_ECRC);
		fix_crc(copy, b.len);
		int r = mc_repl_frame_decode(copy, b.len, MC_REPL_MAX_FRAME, &f);
		assert_true(r == (int)b.len || r == MC_EPROTO);
	}
	free(copy);

	/* EVENTS with many events of different sizes */
	mc_buf_reset(&b);
	mc_repl_events_writer w;
	mc_repl_events_begin(&w, &b, 99, 1000);
	char line[MC_REPL_EVENT_MAX];
	for (int i = 0; i < 50; i++) {
		int n = snprintf(line, sizeof line, "{\"seq\":%d,\"pad\":\"%0*d\"}", 1000 + i,
				 i * 40 + 1, 0);
		mc_repl_events_add(&w, line, (size_t)n);
	}
	memset(line, 'x', sizeof line);
	line[0] = '{';
	line[sizeof line - 1] = '}';
	mc_repl_events_add(&w, line, sizeof line); /* the largest event */
	mc_repl_events_end(&w);
	assert_int_equal(mc_repl_frame_decode((uint8_t *)b.data, b.len, MC_REPL_MAX_FRAME, &f),
			 (int)b.len);
	assert_int_equal(f.u.events.n, 51);
	size_t pos = 0, len, count = 0;
	const char *lp;
	int r;
	while ((r = mc_repl_events_next(&f, &pos, &lp, &len)) == 1)
		count++;
	assert_int_equal(r, 0);
	assert_int_equal(count, 51);
	assert_int_equal(len, MC_REPL_EVENT_MAX);
	for (size_t i = 0; i < b.len; i += 7)
		assert_int_equal(mc_repl_frame_decode((uint8_t *)b.data, i, MC_REPL_MAX_FRAME, &f),
				 MC_EAGAIN);
	mc_buf_fini(&b);
}

/* Builds a frame of type with payload p (n bytes) and decodes it. */
static int decode_payload(uint8_t type, const uint8_t *p, size_t n)
{
	uint8_t buf[512];
	assert_true(n + 9 <= sizeof buf);
	mc_put_u32(buf, (uint32_t)(n + 1));
	buf[4] = type;
	memcpy(buf + 5, p, n);
	mc_put_u32(buf + 5 + n, mc_crc32c(0, buf + 4, n + 1));
	mc_repl_frame f;
	return mc_repl_frame_decode(buf, n + 9, MC_REPL_MAX_FRAME, &f);
}

static void test_malformed(void **state)
{
	(void)state;
	mc_repl_telemetry t;
	full_telemetry(&t);
	t.n_outcomes = 2;
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_encode_telemetry(&b, &t);
	uint8_t p[512];
	size_t n = b.len - 9;
	memcpy(p, b.data + 5, n);
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, p, n), (int)n + 9);

	uint8_t q[512];
#define MUTATE(expr)                                                                               \
	do {                                                                                       \
		memcpy(q, p, n);                                                                   \
		expr;                                                                              \
	} while (0)
	MUTATE(q[0] = 2); /* version */
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, q, n), MC_EPROTO);
	MUTATE(q[1] = 3); /* health */
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, q, n), MC_EPROTO);
	MUTATE(q[2] = 3); /* n_outcomes says 3, two present */
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, q, n), MC_EPROTO);
	MUTATE(q[2] = 8);
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, q, n), MC_EPROTO);
	MUTATE(q[3] = 1); /* reserved */
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, q, n), MC_EPROTO);
	MUTATE(q[MC_REPL_TELEM_FIXED] = 7); /* outcome id out of range */
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, q, n), MC_EPROTO);
	MUTATE(q[MC_REPL_TELEM_FIXED + MC_REPL_TELEM_OUTCOME] = 0); /* duplicate id */
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, q, n), MC_EPROTO);
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, p, n - 1), MC_EPROTO); /* short */
	assert_int_equal(decode_payload(MC_FRAME_TELEMETRY, p, MC_REPL_TELEM_FIXED - 1), MC_EPROTO);

	/* EVENTS: stream, first_seq, n, events */
	uint8_t e[64] = {0};
	mc_put_u64(e, 1);
	mc_put_u64(e + 8, 5);
	mc_put_u16(e + 16, 1);
	mc_put_u16(e + 18, 4);
	memcpy(e + 20, "{\"a\"", 4);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 24), MC_EPROTO); /* no closing brace */
	memcpy(e + 20, "{ab}", 4);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 24), 24 + 9);
	e[21] = '\n';
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 24), MC_EPROTO); /* control byte */
	e[21] = 'a';
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 25), MC_EPROTO); /* trailing byte */
	mc_put_u16(e + 16, 2);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 24), MC_EPROTO); /* n too big */
	mc_put_u16(e + 16, 0);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 18), MC_EPROTO); /* empty */
	mc_put_u16(e + 16, 1);
	mc_put_u64(e + 8, 0);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 24), MC_EPROTO); /* first_seq 0 */
	mc_put_u64(e + 8, UINT64_MAX);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 24), MC_EPROTO); /* overflow */
	mc_put_u64(e + 8, 5);
	mc_put_u16(e + 18, 1);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 21), MC_EPROTO); /* 1-byte event */
	mc_put_u16(e + 16, MC_REPL_EVENTS_MAX_N + 1);
	assert_int_equal(decode_payload(MC_FRAME_EVENTS, e, 24), MC_EPROTO);

	/* OBS_ACK */
	uint8_t a[17] = {MC_REPL_OBS_ACK_TELEMETRY};
	assert_int_equal(decode_payload(MC_FRAME_OBS_ACK, a, 17), 17 + 9);
	a[0] = 3;
	assert_int_equal(decode_payload(MC_FRAME_OBS_ACK, a, 17), MC_EPROTO);
	a[0] = 0;
	assert_int_equal(decode_payload(MC_FRAME_OBS_ACK, a, 17), MC_EPROTO);
	a[0] = MC_REPL_OBS_ACK_EVENTS;
	assert_int_equal(decode_payload(MC_FRAME_OBS_ACK, a, 16), MC_EPROTO);
	/* unused types 8..15 stay unknown */
	for (uint8_t ty = 8; ty < 16; ty++)
		assert_int_equal(decode_payload(ty, a, 17), MC_EPROTO);
	mc_buf_fini(&b);
}

static void test_telemetry_check(void **state)
{
	(void)state;
	mc_repl_telemetry t;
	const char *why;
	golden_telemetry(&t);
	assert_int_equal(mc_repl_telemetry_check(&t, &why), 0);
	assert_null(why);
	full_telemetry(&t);
	t.interval_ms = 1000;
	assert_int_equal(mc_repl_telemetry_check(&t, &why), 0);

#define BAD(field_expr, text)                                                                      \
	do {                                                                                       \
		golden_telemetry(&t);                                                              \
		field_expr;                                                                        \
		assert_int_equal(mc_repl_telemetry_check(&t, &why), MC_EINVAL);                    \
		assert_non_null(strstr(why, text));                                                \
	} while (0)
	BAD(t.interval_ms = 0, "interval_ms");
	BAD(t.interval_ms = 3600001, "interval_ms");
	BAD(t.seq = 0, "seq");
	BAD(t.regional = 3, "regional");
	BAD(t.repl_ack_p50_us = 5000, "p50 above p99");
	BAD(t.outcomes[0].count = 101, "count above");
	BAD(t.outcomes[0].p50_us = 1000, "out of order");
	BAD(t.outcomes[0].p99_us = 800, "out of order");
	BAD((t.outcomes[0].count = 0, t.outcomes[0].p50_us = t.outcomes[0].p95_us = 0), "without");
}

/* ---- shipper and sink on one loop ---------------------------------------------------------- */

struct link {
	uv_loop_t loop;
	char cell_dir[64], region_dir[64];
	mc_store *cell, *region;
	mc_repl_sink *sink;
	mc_repl_shipper *sh;
	int ups, downs;
	int telemetry_seen, events_seen;
	uint64_t telem_seq_seen;
	char first_line[256];
	uint64_t stream_seen, first_seq_seen;
	int acks_telemetry, acks_events;
	uint64_t ack_events_seq, ack_events_stream;
};

static void on_link(void *arg, int up)
{
	struct link *l = arg;
	if (up)
		l->ups++;
	else
		l->downs++;
}

static void on_obs_ack(void *arg, uint8_t kind, uint64_t stream, uint64_t seq)
{
	struct link *l = arg;
	if (kind == MC_REPL_OBS_ACK_TELEMETRY) {
		l->acks_telemetry++;
		assert_int_equal(seq, 77);
		assert_int_equal(stream, 0);
	} else {
		l->acks_events++;
		l->ack_events_seq = seq;
		l->ack_events_stream = stream;
	}
}

static void on_telemetry(void *arg, const char *cell, const mc_repl_telemetry *t)
{
	struct link *l = arg;
	assert_string_equal(cell, "lax");
	l->telemetry_seen++;
	l->telem_seq_seen = t->seq;
	assert_int_equal(mc_repl_sink_obs_ack(l->sink, cell, MC_REPL_OBS_ACK_TELEMETRY, 0, t->seq),
			 1);
}

static void on_events(void *arg, const char *cell, const mc_repl_frame *f)
{
	struct link *l = arg;
	l->events_seen++;
	l->stream_seen = f->u.events.stream;
	l->first_seq_seen = f->u.events.first_seq;
	size_t pos = 0, len;
	const char *line;
	assert_int_equal(mc_repl_events_next(f, &pos, &line, &len), 1);
	snprintf(l->first_line, sizeof l->first_line, "%.*s", (int)len, line);
	mc_repl_sink_obs_ack(l->sink, cell, MC_REPL_OBS_ACK_EVENTS, f->u.events.stream,
			     f->u.events.first_seq + f->u.events.n - 1);
}

static void open_store(struct link *l, mc_store **s, char *dir, const char *home)
{
	strcpy(dir, "/tmp/mc_test_replobs_XXXXXX");
	assert_non_null(mkdtemp(dir));
	mc_store_opts o;
	mc_store_opts_default(&o);
	o.dir = dir;
	o.map_size = 16u << 20;
	o.durable = 0;
	o.home = home;
	assert_int_equal(mc_store_open(s, &l->loop, &o), 0);
}

static void run_until(struct link *l, int (*done)(struct link *))
{
	for (int i = 0; i < 5000 && !done(l); i++) {
		uv_run(&l->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_true(done(l));
}

static int is_up(struct link *l)
{
	return l->ups == 1;
}
static int got_acks(struct link *l)
{
	return l->acks_telemetry == 1 && l->acks_events == 1;
}
static int is_down(struct link *l)
{
	return l->downs == 1;
}

static void test_link_exchange(void **state)
{
	(void)state;
	struct link *l = calloc(1, sizeof *l);
	assert_int_equal(uv_loop_init(&l->loop), 0);
	open_store(l, &l->cell, l->cell_dir, "lax");
	open_store(l, &l->region, l->region_dir, "");
	mc_repl_sink_opts so;
	mc_repl_sink_opts_default(&so);
	so.heartbeat_ms = 100;
	so.dead_after_ms = 1000;
	so.on_telemetry = on_telemetry;
	so.on_events = on_events;
	so.obs_arg = l;
	assert_int_equal(mc_repl_sink_new(&l->sink, &l->loop, l->region, "127.0.0.1:0", &so), 0);
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%u", mc_repl_sink_port(l->sink));

	mc_repl_shipper_opts o;
	mc_repl_shipper_opts_default(&o);
	o.heartbeat_ms = 100;
	o.dead_after_ms = 1000;
	o.reconnect_ms = 20;
	o.on_link = on_link;
	o.on_obs_ack = on_obs_ack;
	o.cb_arg = l;
	assert_int_equal(mc_repl_shipper_new(&l->sh, &l->loop, l->cell, "lax", addr, &o), 0);
	mc_buf f;
	mc_buf_init(&f);
	mc_repl_telemetry t;
	golden_telemetry(&t);
	t.seq = 77;
	mc_repl_encode_telemetry(&f, &t);
	/* not connected yet: refused, the frame is kept */
	assert_int_equal(mc_repl_shipper_send(l->sh, &f), MC_EUNAVAIL);
	assert_true(f.len > 0);
	run_until(l, is_up);
	assert_int_equal(mc_repl_shipper_send(l->sh, &f), 0);
	assert_int_equal(f.len, 0);
	mc_repl_events_writer w;
	mc_repl_events_begin(&w, &f, 0xabcdef, 7);
	mc_repl_events_add(&w, EVENT_LINE, strlen(EVENT_LINE));
	mc_repl_events_end(&w);
	assert_int_equal(mc_repl_shipper_send(l->sh, &f), 0);
	run_until(l, got_acks);
	assert_int_equal(l->telemetry_seen, 1);
	assert_int_equal(l->telem_seq_seen, 77);
	assert_int_equal(l->events_seen, 1);
	assert_true(l->stream_seen == 0xabcdef);
	assert_int_equal(l->first_seq_seen, 7);
	assert_string_equal(l->first_line, EVENT_LINE);
	assert_int_equal(l->ack_events_seq, 7);
	assert_true(l->ack_events_stream == 0xabcdef);
	assert_int_equal(l->downs, 0);
	/* an unknown cell gets no ack */
	assert_int_equal(mc_repl_sink_obs_ack(l->sink, "sfo", MC_REPL_OBS_ACK_TELEMETRY, 0, 1), 0);
	assert_int_equal(mc_repl_sink_obs_ack(l->sink, "lax", 9, 0, 1), MC_EINVAL);

	/* the region goes away: on_link(0) once */
	mc_repl_sink_free(l->sink);
	l->sink = NULL;
	run_until(l, is_down);
	mc_repl_encode_telemetry(&f, &t);
	assert_int_equal(mc_repl_shipper_send(l->sh, &f), MC_EUNAVAIL);
	mc_buf_fini(&f);

	mc_repl_shipper_free(l->sh);
	mc_store_close(l->cell);
	mc_store_close(l->region);
	uv_run(&l->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&l->loop), 0);
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", l->cell_dir, l->region_dir);
	assert_int_equal(system(cmd), 0);
	free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_golden),	  cmocka_unit_test(test_roundtrip_and_prefixes),
	    cmocka_unit_test(test_malformed),	  cmocka_unit_test(test_telemetry_check),
	    cmocka_unit_test(test_link_exchange),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
