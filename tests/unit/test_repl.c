/* Unit tests for src/repl: the frame codec (round trips, the golden bytes of
 * docs/protocol.md, partial and corrupt input) and an in-process end-to-end run of
 * a cell shipper against a region sink on one libuv loop, across a region restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "repl/repl.h"

/* ---- helpers ------------------------------------------------------------------------ */

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

/* The two golden frames, exactly as printed in docs/protocol.md section 5. */
static const char GOLDEN_HELLO[] = "00 00 00 1f 01 00 01 03 6c 61 78 00 00 00 00 00\n"
				   "00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
				   "00 00 07 74 a0 d3 d1";
static const char GOLDEN_ENTRIES[] = "00 00 00 41 02 00 00 00 00 00 00 00 01 00 00 00\n"
				     "02 01 01 8b cf e5 68 00 00 01 00 00 00 00 00 00\n"
				     "00 00 00 02 00 00 00 02 6b 31 76 31 02 01 8b cf\n"
				     "e5 68 01 00 00 00 00 00 00 00 00 00 00 00 02 00\n"
				     "00 00 00 6b 32 e2 c2 59 da";

static void golden_entries(mc_buf *b)
{
	mc_log_entry e1 = {.seq = 1,
			   .version = mc_hlc_make(1700000000000ull, 1),
			   .expires_ms = 0,
			   .op = MC_OP_PUT,
			   .key = "k1",
			   .klen = 2,
			   .value = "v1",
			   .vlen = 2};
	mc_log_entry e2 = {.seq = 2,
			   .version = mc_hlc_make(1700000000001ull, 0),
			   .op = MC_OP_DEL,
			   .key = "k2",
			   .klen = 2};
	mc_repl_entries_writer w;
	mc_repl_entries_begin(&w, b, 1);
	mc_repl_entries_add(&w, &e1);
	mc_repl_entries_add(&w, &e2);
	mc_repl_entries_end(&w);
}

static void golden_hello(mc_buf *b)
{
	mc_repl_hello h = {.proto = MC_REPL_PROTO_VERSION,
			   .epoch = 1,
			   .last_acked_seq = 0,
			   .config_version = 7};
	strcpy(h.cell, "lax");
	mc_repl_encode_hello(b, &h);
}

/* Rewrites the CRC of the frame in buf so a payload edit reaches the parser. */
static void fix_crc(uint8_t *buf, size_t len)
{
	uint32_t flen = mc_get_u32(buf);
	assert_int_equal(4 + flen + 4, len);
	mc_put_u32(buf + 4 + flen, mc_crc32c(0, buf + 4, flen));
}

static int decode_all(const mc_buf *b, mc_repl_frame *f)
{
	return mc_repl_frame_decode((const uint8_t *)b->data, b->len, MC_REPL_MAX_FRAME, f);
}

/* ---- codec ---------------------------------------------------------------------------- */

static void test_golden_bytes(void **state)
{
	(void)state;
	uint8_t want[128];
	mc_buf b;
	mc_buf_init(&b);

	golden_hello(&b);
	size_t n = hex_decode(GOLDEN_HELLO, want, sizeof(want));
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);

	mc_buf_reset(&b);
	golden_entries(&b);
	n = hex_decode(GOLDEN_ENTRIES, want, sizeof(want));
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);

	/* And the golden bytes decode to the same values. */
	mc_repl_frame f;
	assert_int_equal(mc_repl_frame_decode(want, n, MC_REPL_MAX_FRAME, &f), (int)n);
	assert_int_equal(f.type, MC_FRAME_ENTRIES);
	assert_int_equal(f.u.entries.first_seq, 1);
	assert_int_equal(f.u.entries.n, 2);
	mc_buf_fini(&b);
}

static void test_roundtrip_hello(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_hello h = {.proto = 0xbeef,
			   .epoch = UINT64_MAX,
			   .last_acked_seq = 0x0102030405060708ull,
			   .config_version = 42};
	memset(h.cell, 'x', MC_STATE_MAX_HOME);
	h.cell[MC_STATE_MAX_HOME] = '\0';
	mc_repl_encode_hello(&b, &h);
	mc_repl_frame f;
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	assert_int_equal(f.type, MC_FRAME_HELLO);
	assert_int_equal(f.u.hello.proto, 0xbeef);
	assert_string_equal(f.u.hello.cell, h.cell);
	assert_true(f.u.hello.epoch == UINT64_MAX);
	assert_true(f.u.hello.last_acked_seq == 0x0102030405060708ull);
	assert_int_equal(f.u.hello.config_version, 42);
	mc_buf_fini(&b);
}

static void test_roundtrip_small(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_frame f;

	mc_repl_encode_ack(&b, 0x1122334455667788ull);
	assert_int_equal(b.len, MC_REPL_HDR + 8 + MC_REPL_TRAILER);
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	assert_int_equal(f.type, MC_FRAME_ACK);
	assert_true(f.u.ack_seq == 0x1122334455667788ull);

	mc_buf_reset(&b);
	mc_repl_encode_heartbeat(&b, 99);
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	assert_int_equal(f.type, MC_FRAME_HEARTBEAT);
	assert_int_equal(f.u.heartbeat_hlc, 99);

	mc_buf_reset(&b);
	mc_repl_encode_fence(&b, 7);
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	assert_int_equal(f.type, MC_FRAME_FENCE);
	assert_int_equal(f.u.fence_epoch, 7);

	mc_buf_reset(&b);
	mc_repl_encode_invalidate(&b, 1234, "session:abc", 11);
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	assert_int_equal(f.type, MC_FRAME_INVALIDATE);
	assert_int_equal(f.u.invalidate.version, 1234);
	assert_int_equal(f.u.invalidate.klen, 11);
	assert_memory_equal(f.u.invalidate.key, "session:abc", 11);

	/* Several frames back to back decode one at a time. */
	mc_buf_reset(&b);
	mc_repl_encode_ack(&b, 1);
	mc_repl_encode_ack(&b, 2);
	int r = decode_all(&b, &f);
	assert_int_equal(r, (int)b.len / 2);
	assert_int_equal(f.u.ack_seq, 1);
	r = mc_repl_frame_decode((const uint8_t *)b.data + r, b.len - (size_t)r, 64, &f);
	assert_int_equal(r, (int)b.len / 2);
	assert_int_equal(f.u.ack_seq, 2);
	mc_buf_fini(&b);
}

static void test_roundtrip_entries(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	enum { N = 300 };
	char keys[N][16];
	static char big[70000];
	memset(big, 'v', sizeof(big));
	mc_repl_entries_writer w;
	mc_repl_entries_begin(&w, &b, 1000);
	for (int i = 0; i < N; i++) {
		int kl = snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
		mc_log_entry e = {.seq = 1000 + (uint64_t)i,
				  .version = mc_hlc_make(1700000000000ull + (uint64_t)i, (uint16_t)i),
				  .expires_ms = (uint64_t)i * 3,
				  .op = i % 7 == 3 ? MC_OP_DEL : MC_OP_PUT,
				  .key = keys[i],
				  .klen = (size_t)kl,
				  .value = big,
				  .vlen = (size_t)i * 233};
		mc_repl_entries_add(&w, &e);
	}
	mc_repl_entries_end(&w);

	mc_repl_frame f;
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	assert_int_equal(f.type, MC_FRAME_ENTRIES);
	assert_int_equal(f.u.entries.first_seq, 1000);
	assert_int_equal(f.u.entries.n, N);
	size_t pos = 0;
	uint32_t idx = 12345;
	mc_log_entry e;
	int i = 0;
	int r;
	while ((r = mc_repl_entries_next(&f, &pos, &idx, &e)) == 1) {
		assert_int_equal(idx, i);
		assert_int_equal(e.seq, 1000 + (uint64_t)i);
		assert_true(e.version == mc_hlc_make(1700000000000ull + (uint64_t)i, (uint16_t)i));
		assert_int_equal(e.expires_ms, (uint64_t)i * 3);
		int del = i % 7 == 3;
		assert_int_equal(e.op, del ? MC_OP_DEL : MC_OP_PUT);
		assert_int_equal(e.klen, strlen(keys[i]));
		assert_memory_equal(e.key, keys[i], e.klen);
		assert_int_equal(e.vlen, del ? 0 : (size_t)i * 233); /* deletes drop the value */
		if (e.vlen)
			assert_memory_equal(e.value, big, e.vlen);
		i++;
	}
	assert_int_equal(r, 0);
	assert_int_equal(i, N);
	assert_int_equal(mc_repl_entries_next(&f, &pos, &idx, &e), 0); /* stays at the end */

	/* An empty batch is legal. */
	mc_buf_reset(&b);
	mc_repl_entries_begin(&w, &b, 5);
	mc_repl_entries_end(&w);
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	assert_int_equal(f.u.entries.n, 0);
	pos = 0;
	assert_int_equal(mc_repl_entries_next(&f, &pos, &idx, &e), 0);
	mc_buf_fini(&b);
}

static void test_split_every_byte(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	golden_hello(&b);
	golden_entries(&b);
	mc_repl_encode_invalidate(&b, 1, "k", 1);
	mc_repl_encode_ack(&b, 3);
	size_t off = 0;
	int frames = 0;
	while (off < b.len) {
		const uint8_t *p = (const uint8_t *)b.data + off;
		size_t rest = b.len - off;
		mc_repl_frame f;
		size_t cut;
		int r = 0;
		for (cut = 0; cut <= rest; cut++) {
			/* A copy of exactly cut bytes so ASan catches any over-read. */
			uint8_t *c = malloc(cut ? cut : 1);
			memcpy(c, p, cut);
			r = mc_repl_frame_decode(c, cut, MC_REPL_MAX_FRAME, &f);
			free(c);
			if (r != MC_EAGAIN)
				break;
		}
		assert_true(r > 0);
		assert_int_equal((size_t)r, cut);
		off += (size_t)r;
		frames++;
	}
	assert_int_equal(frames, 4);
	mc_buf_fini(&b);
}

static void test_corrupt_every_byte(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	golden_entries(&b);
	uint8_t *p = (uint8_t *)b.data;
	mc_repl_frame f;
	/* Any flipped bit after the length field is caught by the CRC. */
	for (size_t i = 4; i < b.len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			p[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(decode_all(&b, &f), MC_ECRC);
			p[i] ^= (uint8_t)(1u << bit);
		}
	}
	assert_int_equal(decode_all(&b, &f), (int)b.len);
	mc_buf_fini(&b);
}

static void test_oversize(void **state)
{
	(void)state;
	uint8_t hdr[MC_REPL_HDR] = {0};
	mc_repl_frame f;
	/* Declared payload of MC_REPL_MAX_FRAME + 1: rejected from the header alone. */
	mc_put_u32(hdr, MC_REPL_MAX_FRAME + 2);
	hdr[4] = MC_FRAME_ENTRIES;
	assert_int_equal(mc_repl_frame_decode(hdr, 4, MC_REPL_MAX_FRAME, &f), MC_ETOOBIG);
	assert_int_equal(mc_repl_frame_decode(hdr, sizeof(hdr), SIZE_MAX, &f), MC_ETOOBIG);
	/* Exactly the maximum is only waiting for more bytes. */
	mc_put_u32(hdr, MC_REPL_MAX_FRAME + 1);
	assert_int_equal(mc_repl_frame_decode(hdr, sizeof(hdr), MC_REPL_MAX_FRAME, &f), MC_EAGAIN);
	/* A caller's smaller limit applies. */
	mc_buf b;
	mc_buf_init(&b);
	golden_entries(&b);
	assert_int_equal(mc_repl_frame_decode((const uint8_t *)b.data, b.len, 16, &f), MC_ETOOBIG);
	mc_put_u32(hdr, UINT32_MAX);
	assert_int_equal(mc_repl_frame_decode(hdr, sizeof(hdr), MC_REPL_MAX_FRAME, &f), MC_ETOOBIG);
	mc_buf_fini(&b);
}

/* Offsets inside the golden ENTRIES frame (docs/protocol.md section 5). */
enum {
	G_N = MC_REPL_HDR + 8,  /* u32 n */
	G_E1 = MC_REPL_HDR + 12, /* first entry */
	G_E1_KLEN = G_E1 + 17,
	G_E1_VLEN = G_E1 + 19,
	G_E2 = G_E1 + 23 + 2 + 2,
	G_E2_VLEN = G_E2 + 19,
};

static int decode_patched(void (*patch)(mc_buf *b))
{
	mc_buf b;
	mc_buf_init(&b);
	golden_entries(&b);
	patch(&b);
	fix_crc((uint8_t *)b.data, b.len);
	mc_repl_frame f;
	int r = decode_all(&b, &f);
	mc_buf_fini(&b);
	return r;
}

static void patch_none(mc_buf *b) { (void)b; }
static void patch_bad_op(mc_buf *b) { b->data[G_E1] = 3; }
static void patch_op_zero(mc_buf *b) { b->data[G_E1] = 0; }
static void patch_klen0(mc_buf *b) { mc_put_u16((uint8_t *)b->data + G_E1_KLEN, 0); }
static void patch_klen_big(mc_buf *b)
{
	mc_put_u16((uint8_t *)b->data + G_E1_KLEN, MC_STATE_MAX_KEY + 1);
}
static void patch_vlen_past_end(mc_buf *b) { mc_put_u32((uint8_t *)b->data + G_E1_VLEN, 1000); }
static void patch_del_with_value(mc_buf *b)
{
	/* Turn "PUT k1 v1" into "DEL k1" carrying 2 value bytes. */
	b->data[G_E1] = MC_OP_DEL;
}
static void patch_n_plus_one(mc_buf *b) { mc_put_u32((uint8_t *)b->data + G_N, 3); }
static void patch_n_huge(mc_buf *b) { mc_put_u32((uint8_t *)b->data + G_N, UINT32_MAX); }
static void patch_n_minus_one(mc_buf *b)
{
	/* n = 1 leaves the second entry as trailing bytes. */
	mc_put_u32((uint8_t *)b->data + G_N, 1);
}
static void patch_trailing(mc_buf *b)
{
	/* One extra byte inside the payload (length grows by one). */
	size_t flen = mc_get_u32((uint8_t *)b->data);
	b->len -= MC_REPL_TRAILER;
	mc_buf_append(b, "\0\0\0\0\0", 5);
	mc_put_u32((uint8_t *)b->data, (uint32_t)flen + 1);
}
static void patch_first_seq0(mc_buf *b) { mc_put_u64((uint8_t *)b->data + MC_REPL_HDR, 0); }
static void patch_seq_overflow(mc_buf *b)
{
	mc_put_u64((uint8_t *)b->data + MC_REPL_HDR, UINT64_MAX);
}
static void patch_type(mc_buf *b) { b->data[4] = 9; }
static void patch_type0(mc_buf *b) { b->data[4] = 0; }

static void test_malformed_entries(void **state)
{
	(void)state;
	assert_true(decode_patched(patch_none) > 0);
	assert_int_equal(decode_patched(patch_bad_op), MC_EPROTO);
	assert_int_equal(decode_patched(patch_op_zero), MC_EPROTO);
	assert_int_equal(decode_patched(patch_klen0), MC_EPROTO);
	assert_int_equal(decode_patched(patch_klen_big), MC_EPROTO);
	assert_int_equal(decode_patched(patch_vlen_past_end), MC_EPROTO);
	assert_int_equal(decode_patched(patch_del_with_value), MC_EPROTO);
	assert_int_equal(decode_patched(patch_n_plus_one), MC_EPROTO);
	assert_int_equal(decode_patched(patch_n_huge), MC_EPROTO);
	assert_int_equal(decode_patched(patch_n_minus_one), MC_EPROTO);
	assert_int_equal(decode_patched(patch_trailing), MC_EPROTO);
	assert_int_equal(decode_patched(patch_first_seq0), MC_EPROTO);
	assert_int_equal(decode_patched(patch_seq_overflow), MC_EPROTO);
	assert_int_equal(decode_patched(patch_type), MC_EPROTO);
	assert_int_equal(decode_patched(patch_type0), MC_EPROTO);
}

static void test_malformed_small(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_frame f;
	uint8_t *p;

	/* Zero length: not even a type byte. */
	uint8_t z[8] = {0};
	assert_int_equal(mc_repl_frame_decode(z, sizeof(z), MC_REPL_MAX_FRAME, &f), MC_EPROTO);

	/* ACK with 9 payload bytes. */
	mc_repl_encode_ack(&b, 1);
	b.len -= MC_REPL_TRAILER;
	mc_buf_append(&b, "\0\0\0\0\0", 5);
	p = (uint8_t *)b.data;
	mc_put_u32(p, 10);
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);

	/* HELLO: empty cell, a cell with a space, a cell_len past the end. */
	mc_buf_reset(&b);
	golden_hello(&b);
	p = (uint8_t *)b.data;
	p[MC_REPL_HDR + 3] = ' ';
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	p[MC_REPL_HDR + 3] = 'l';
	p[MC_REPL_HDR + 2] = 4;
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	p[MC_REPL_HDR + 2] = 0;
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);

	/* INVALIDATE with klen 0 and with klen past the end. */
	mc_buf_reset(&b);
	mc_repl_encode_invalidate(&b, 1, "ab", 2);
	p = (uint8_t *)b.data;
	mc_put_u16(p + MC_REPL_HDR + 8, 0);
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	mc_put_u16(p + MC_REPL_HDR + 8, 3);
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	mc_buf_fini(&b);
}

/* ---- end to end ------------------------------------------------------------------------- */

#include <unistd.h>

#include "state/state.h"

#define E2E_CELL "lax"
#define E2E_N1 2000
#define E2E_N2 100

struct e2e {
	uv_loop_t loop;
	char cell_dir[64];
	char region_dir[64];
	mc_store *cell;
	mc_store *region;
	mc_repl_shipper *sh;
	mc_repl_sink *sink;
	char addr[64];
	uint64_t versions[E2E_N1 + E2E_N2];
	uint64_t seqs[E2E_N1 + E2E_N2];
	int writes_done;
	int write_errors;
	uint64_t last_seq;
	int (*cond)(struct e2e *t);
	int timed_out;
	uint64_t max_applied_seen; /* monotonicity of the sink's applied seq */
	int went_backwards;
};

struct wctx {
	struct e2e *t;
	int i;
};

static void on_written(void *arg, int err, uint64_t version, uint64_t seq)
{
	struct wctx *w = arg;
	struct e2e *t = w->t;
	if (err)
		t->write_errors++;
	t->versions[w->i] = version;
	t->seqs[w->i] = seq;
	if (seq > t->last_seq)
		t->last_seq = seq;
	t->writes_done++;
	free(w);
}

static void key_of(int i, char *buf, size_t cap) { snprintf(buf, cap, "session:%05d", i); }

static void write_range(struct e2e *t, int from, int to)
{
	for (int i = from; i < to; i++) {
		char key[32], val[32];
		key_of(i, key, sizeof(key));
		int vl = snprintf(val, sizeof(val), "value-%d", i);
		struct wctx *w = malloc(sizeof(*w));
		w->t = t;
		w->i = i;
		assert_int_equal(mc_store_write(t->cell, MC_OP_PUT, key, strlen(key), val, (size_t)vl, 0,
						1, on_written, w),
				 0);
	}
}

static void on_check(uv_timer_t *tm)
{
	struct e2e *t = tm->data;
	if (t->sink) {
		mc_repl_cell_stats cs[4];
		size_t n = mc_repl_sink_stats(t->sink, cs, 4);
		if (n >= 1) {
			if (cs[0].applied_seq < t->max_applied_seen)
				t->went_backwards = 1;
			t->max_applied_seen = cs[0].applied_seq;
		}
	}
	if (t->cond(t))
		uv_stop(&t->loop);
}

static void on_deadline(uv_timer_t *tm)
{
	struct e2e *t = tm->data;
	t->timed_out = 1;
	uv_stop(&t->loop);
}

/* Runs the loop until cond holds; fails the test after 10 s. */
static void run_until(struct e2e *t, int (*cond)(struct e2e *t))
{
	uv_timer_t check, deadline;
	t->cond = cond;
	t->timed_out = 0;
	uv_timer_init(&t->loop, &check);
	uv_timer_init(&t->loop, &deadline);
	check.data = deadline.data = t;
	uv_timer_start(&check, on_check, 5, 5);
	uv_timer_start(&deadline, on_deadline, 10000, 0);
	if (!cond(t))
		uv_run(&t->loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&check, NULL);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_run(&t->loop, UV_RUN_NOWAIT);
	assert_false(t->timed_out);
}

static int all_written_1(struct e2e *t) { return t->writes_done == E2E_N1; }
static int all_written_2(struct e2e *t) { return t->writes_done == E2E_N1 + E2E_N2; }

static int caught_up(struct e2e *t)
{
	mc_log_stats ls;
	mc_store_log_stats(t->cell, &ls);
	return t->last_seq > 0 && mc_store_applied_seq(t->region, E2E_CELL) == t->last_seq &&
	       ls.entries == 0 && ls.acked_seq == t->last_seq;
}

static void verify_region(struct e2e *t, int n)
{
	mc_buf val;
	mc_buf_init(&val);
	for (int i = 0; i < n; i++) {
		char key[32], want[32];
		key_of(i, key, sizeof(key));
		snprintf(want, sizeof(want), "value-%d", i);
		mc_record rec;
		assert_int_equal(mc_store_get(t->region, key, strlen(key), &rec, &val), 0);
		assert_true(rec.version == t->versions[i]);
		assert_string_equal(rec.home, E2E_CELL);
		assert_int_equal(rec.value_len, strlen(want));
		assert_memory_equal(rec.value, want, rec.value_len);
	}
	mc_buf_fini(&val);
}

static void open_store(struct e2e *t, mc_store **s, char *dir, const char *home)
{
	strcpy(dir, "/tmp/mc_test_repl_XXXXXX");
	assert_non_null(mkdtemp(dir));
	mc_store_opts o;
	mc_store_opts_default(&o);
	o.dir = dir;
	o.map_size = 64u << 20;
	o.durable = 0;
	o.home = home;
	assert_int_equal(mc_store_open(s, &t->loop, &o), 0);
}

static void start_sink(struct e2e *t, const char *addr)
{
	mc_repl_sink_opts so;
	mc_repl_sink_opts_default(&so);
	so.heartbeat_ms = 100;
	so.dead_after_ms = 1000;
	static const char *const allow[] = {"sfo", E2E_CELL};
	so.allow_cells = allow;
	so.n_allow_cells = 2;
	assert_int_equal(mc_repl_sink_new(&t->sink, &t->loop, t->region, addr, &so), 0);
}

static void rm_rf(const char *dir)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_e2e_ship_and_restart(void **state)
{
	(void)state;
	struct e2e *t = calloc(1, sizeof(*t));
	assert_int_equal(uv_loop_init(&t->loop), 0);
	open_store(t, &t->cell, t->cell_dir, E2E_CELL);
	open_store(t, &t->region, t->region_dir, "");

	start_sink(t, "127.0.0.1:0");
	uint16_t port = mc_repl_sink_port(t->sink);
	assert_true(port > 0);
	snprintf(t->addr, sizeof(t->addr), "127.0.0.1:%u", port);

	mc_repl_shipper_opts o;
	mc_repl_shipper_opts_default(&o);
	o.batch_max_entries = 97; /* many frames, not a multiple of anything */
	o.window_entries = 300;   /* the window has to slide */
	o.heartbeat_ms = 100;
	o.dead_after_ms = 1000;
	o.reconnect_ms = 20;
	assert_int_equal(mc_repl_shipper_new(&t->sh, &t->loop, t->cell, E2E_CELL, t->addr, &o), 0);

	/* Phase 1: 2000 writes reach the region; the cell log is trimmed. */
	write_range(t, 0, E2E_N1);
	run_until(t, all_written_1);
	assert_int_equal(t->write_errors, 0);
	assert_int_equal(t->last_seq, E2E_N1); /* the cell's first logged seq is 1 */
	run_until(t, caught_up);
	verify_region(t, E2E_N1);

	mc_log_stats ls;
	mc_store_log_stats(t->cell, &ls);
	assert_int_equal(ls.entries, 0);
	mc_repl_shipper_stats ss;
	mc_repl_shipper_stats_get(t->sh, &ss);
	assert_int_equal(ss.connected, 1);
	assert_int_equal(ss.acked_seq, E2E_N1);
	assert_int_equal(ss.lag_entries, 0);
	assert_int_equal(ss.oldest_unacked_ms, 0);
	assert_true(ss.sent_entries >= E2E_N1);
	assert_true(ss.lag_us.count > 0);
	assert_true(ss.lag_us.count <= E2E_N1);

	mc_repl_cell_stats cs[4];
	assert_int_equal(mc_repl_sink_stats(t->sink, cs, 4), 1);
	assert_string_equal(cs[0].cell, E2E_CELL);
	assert_int_equal(cs[0].connected, 1);
	assert_int_equal(cs[0].applied_seq, E2E_N1);
	assert_int_equal(cs[0].applied_entries, E2E_N1);
	assert_int_equal(cs[0].gap_entries, 0);
	assert_true(cs[0].lag_us.count > 0);
	assert_false(t->went_backwards);

	/* Phase 2: the region goes down; 100 more writes wait in the cell's log. */
	mc_repl_sink_free(t->sink);
	t->sink = NULL;
	t->max_applied_seen = 0;
	write_range(t, E2E_N1, E2E_N1 + E2E_N2);
	run_until(t, all_written_2);
	assert_int_equal(t->write_errors, 0);
	assert_int_equal(t->last_seq, E2E_N1 + E2E_N2);
	for (int i = 1; i < E2E_N1 + E2E_N2; i++)
		assert_true(t->seqs[i] > t->seqs[i - 1] && t->versions[i] > t->versions[i - 1]);
	mc_repl_shipper_stats_get(t->sh, &ss);
	assert_int_equal(ss.connected, 0);
	assert_int_equal(ss.lag_entries, E2E_N2);
	mc_store_log_stats(t->cell, &ls);
	assert_int_equal(ls.entries, E2E_N2);
	assert_int_equal(mc_store_applied_seq(t->region, E2E_CELL), E2E_N1);

	/* The region returns on the same port: everything arrives, once, in order. */
	start_sink(t, t->addr);
	run_until(t, caught_up);
	verify_region(t, E2E_N1 + E2E_N2);
	assert_int_equal(mc_repl_sink_stats(t->sink, cs, 4), 1);
	assert_int_equal(cs[0].applied_seq, E2E_N1 + E2E_N2);
	assert_int_equal(cs[0].applied_entries, E2E_N2); /* nothing applied twice */
	assert_int_equal(cs[0].gap_entries, 0);
	assert_false(t->went_backwards);
	mc_store_stats st;
	mc_store_stats_get(t->region, &st);
	assert_int_equal(st.applied, E2E_N1 + E2E_N2);
	mc_repl_shipper_stats_get(t->sh, &ss);
	assert_int_equal(ss.connected, 1);
	assert_true(ss.reconnects > 0);
	assert_int_equal(ss.acked_seq, E2E_N1 + E2E_N2);

	/* The stores keep the loop alive until closed; the repl objects release their
	 * memory in close callbacks (and after in-flight applies) on the last run. */
	mc_repl_shipper_free(t->sh);
	mc_repl_sink_free(t->sink);
	mc_store_close(t->cell);
	mc_store_close(t->region);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	rm_rf(t->cell_dir);
	rm_rf(t->region_dir);
	free(t);
}


/* ---- hooks, targeted INVALIDATE, residency ----------------------------------------------- */

static struct hooks_seen {
	uint64_t acked;
	int acked_calls;
	int ready;
	char ready_cell[32];
	uint64_t inv_version;
	char inv_key[32];
} hs;

static void h_acked(void *arg, uint64_t seq)
{
	(void)arg;
	assert_true(seq >= hs.acked); /* never goes back */
	hs.acked = seq;
	hs.acked_calls++;
}

static void h_ready(void *arg, const char *cell)
{
	(void)arg;
	hs.ready++;
	snprintf(hs.ready_cell, sizeof hs.ready_cell, "%s", cell);
}

static void h_inv(void *arg, const char *key, size_t klen, uint64_t version)
{
	(void)arg;
	hs.inv_version = version;
	snprintf(hs.inv_key, sizeof hs.inv_key, "%.*s", (int)klen, key);
}

static int applied_3(struct e2e *t) { return mc_store_applied_seq(t->region, E2E_CELL) == 3 && hs.acked == 3; }
static int got_invalidate(struct e2e *t) { (void)t; return hs.inv_version == 99; }
static int done_4(struct e2e *t) { return t->writes_done == 4; }

/* A log written before "pii:" became a local prefix holds pii: entries: the shipper
 * withholds them (counted as residency violations), ships the rest, and the region
 * never sees them. Also: on_acked, on_cell_ready and mc_repl_sink_invalidate_cell. */
static void test_e2e_hooks_and_residency(void **state)
{
	(void)state;
	struct e2e *t = calloc(1, sizeof(*t));
	memset(&hs, 0, sizeof hs);
	assert_int_equal(uv_loop_init(&t->loop), 0);
	open_store(t, &t->cell, t->cell_dir, E2E_CELL);
	const char *keys[] = {"a", "pii:x", "b", "pii:y"};
	for (int i = 0; i < 4; i++) {
		struct wctx *w = malloc(sizeof(*w));
		w->t = t;
		w->i = i;
		assert_int_equal(mc_store_write(t->cell, MC_OP_PUT, keys[i], strlen(keys[i]), "v", 1,
						0, 1, on_written, w),
				 0);
	}
	run_until(t, done_4);
	assert_int_equal(t->last_seq, 4);
	mc_store_close(t->cell);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	static const mc_state_prefix rules[] = {{"pii:", 4, MC_CLASS_LOCAL}};
	mc_store_opts o;
	mc_store_opts_default(&o);
	o.dir = t->cell_dir;
	o.durable = 0;
	o.home = E2E_CELL;
	o.classes = rules;
	o.nclasses = 1;
	assert_int_equal(mc_store_open(&t->cell, &t->loop, &o), 0);

	strcpy(t->region_dir, "/tmp/mc_test_repl_XXXXXX");
	assert_non_null(mkdtemp(t->region_dir));
	mc_store_opts_default(&o);
	o.dir = t->region_dir;
	o.durable = 0;
	assert_int_equal(mc_store_open(&t->region, &t->loop, &o), 0);
	mc_repl_sink_opts so;
	mc_repl_sink_opts_default(&so);
	so.heartbeat_ms = 100;
	so.dead_after_ms = 1000;
	so.on_cell_ready = h_ready;
	assert_int_equal(mc_repl_sink_new(&t->sink, &t->loop, t->region, "127.0.0.1:0", &so), 0);
	snprintf(t->addr, sizeof(t->addr), "127.0.0.1:%u", mc_repl_sink_port(t->sink));
	assert_int_equal(mc_repl_sink_invalidate_cell(t->sink, E2E_CELL, "k", 1, 5), 0);

	mc_repl_shipper_opts ro;
	mc_repl_shipper_opts_default(&ro);
	ro.heartbeat_ms = 100;
	ro.dead_after_ms = 1000;
	ro.reconnect_ms = 20;
	ro.on_acked = h_acked;
	ro.on_invalidate = h_inv;
	assert_int_equal(mc_repl_shipper_new(&t->sh, &t->loop, t->cell, E2E_CELL, t->addr, &ro), 0);
	run_until(t, applied_3);
	assert_int_equal(hs.ready, 1);
	assert_string_equal(hs.ready_cell, E2E_CELL);
	mc_record rec;
	assert_int_equal(mc_store_get(t->region, "a", 1, &rec, NULL), 0);
	assert_int_equal(mc_store_get(t->region, "b", 1, &rec, NULL), 0);
	assert_int_equal(mc_store_get(t->region, "pii:x", 5, &rec, NULL), MC_ENOTFOUND);
	assert_int_equal(mc_store_get(t->region, "pii:y", 5, &rec, NULL), MC_ENOTFOUND);
	assert_false(rec.found);
	mc_repl_shipper_stats ss;
	mc_repl_shipper_stats_get(t->sh, &ss);
	assert_true(ss.residency_violations >= 2);
	assert_true(ss.up_since_ms > 0);
	mc_repl_cell_stats cs[2];
	assert_int_equal(mc_repl_sink_stats(t->sink, cs, 2), 1);
	assert_true(cs[0].gap_entries >= 1); /* the hole at seq 2 shows */

	assert_int_equal(mc_repl_sink_invalidate_cell(t->sink, E2E_CELL, "key:1", 5, 99), 1);
	assert_int_equal(mc_repl_sink_invalidate_cell(t->sink, "sfo", "key:1", 5, 99), 0);
	run_until(t, got_invalidate);
	assert_string_equal(hs.inv_key, "key:1");

	mc_repl_shipper_free(t->sh);
	mc_repl_sink_free(t->sink);
	mc_store_close(t->cell);
	mc_store_close(t->region);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	rm_rf(t->cell_dir);
	rm_rf(t->region_dir);
	free(t);
}

/* ---- sink against raw sockets ------------------------------------------------------------ */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int raw_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
	return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Runs the loop while waiting for the sink's next frame that is not a HEARTBEAT.
 * Returns 1 with *f decoded (its pointers are stale), 0 on EOF/reset, -1 after 3 s. */
static int raw_next(uv_loop_t *loop, int fd, mc_buf *rx, mc_repl_frame *f)
{
	for (int spin = 0; spin < 3000; spin++) {
		for (;;) {
			int r = mc_repl_frame_decode((const uint8_t *)rx->data, rx->len, 1024, f);
			if (r == MC_EAGAIN)
				break;
			assert_true(r > 0);
			if (f->type == MC_FRAME_HEARTBEAT) {
				mc_buf_consume(rx, (size_t)r);
				continue;
			}
			mc_buf_consume(rx, (size_t)r); /* callers use only ACK/FENCE numbers */
			return 1;
		}
		uv_run(loop, UV_RUN_NOWAIT);
		char b[4096];
		ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 0;
		if (n > 0)
			mc_buf_append(rx, b, (size_t)n);
		else
			usleep(1000);
	}
	return -1;
}

static void hello_bytes(mc_buf *b, const char *cell, uint64_t epoch)
{
	mc_repl_hello h = {.proto = MC_REPL_PROTO_VERSION, .epoch = epoch};
	snprintf(h.cell, sizeof(h.cell), "%s", cell);
	mc_repl_encode_hello(b, &h);
}

static void test_sink_raw_peers(void **state)
{
	(void)state;
	struct e2e *t = calloc(1, sizeof(*t));
	assert_int_equal(uv_loop_init(&t->loop), 0);
	open_store(t, &t->region, t->region_dir, "");
	start_sink(t, "127.0.0.1:0");
	uint16_t port = mc_repl_sink_port(t->sink);
	mc_buf tx, rx;
	mc_buf_init(&tx);
	mc_buf_init(&rx);
	mc_repl_frame f;

	/* A HELLO delivered one byte at a time is answered with ACK{0}. */
	int a = raw_connect(port);
	hello_bytes(&tx, E2E_CELL, 1);
	for (size_t i = 0; i < tx.len; i++) {
		raw_send(a, tx.data + i, 1);
		for (int k = 0; k < 3; k++)
			uv_run(&t->loop, UV_RUN_NOWAIT);
	}
	assert_int_equal(raw_next(&t->loop, a, &rx, &f), 1);
	assert_int_equal(f.type, MC_FRAME_ACK);
	assert_int_equal(f.u.ack_seq, 0);

	/* ENTRIES split in two writes are applied and acknowledged. */
	mc_buf_reset(&tx);
	golden_entries(&tx);
	raw_send(a, tx.data, 10);
	for (int k = 0; k < 5; k++)
		uv_run(&t->loop, UV_RUN_NOWAIT);
	raw_send(a, tx.data + 10, tx.len - 10);
	assert_int_equal(raw_next(&t->loop, a, &rx, &f), 1);
	assert_int_equal(f.type, MC_FRAME_ACK);
	assert_int_equal(f.u.ack_seq, 2);
	/* The same frame again is a replay: acknowledged, not applied twice. */
	raw_send(a, tx.data, tx.len);
	assert_int_equal(raw_next(&t->loop, a, &rx, &f), 1);
	assert_int_equal(f.u.ack_seq, 2);
	mc_store_stats st;
	mc_store_stats_get(t->region, &st);
	assert_int_equal(st.applied, 2);

	/* The same cell connecting again wins; the old connection is closed. */
	int b = raw_connect(port);
	mc_buf rxb;
	mc_buf_init(&rxb);
	mc_buf_reset(&tx);
	hello_bytes(&tx, E2E_CELL, 1);
	raw_send(b, tx.data, tx.len);
	assert_int_equal(raw_next(&t->loop, b, &rxb, &f), 1);
	assert_int_equal(f.u.ack_seq, 2);
	assert_int_equal(raw_next(&t->loop, a, &rx, &f), 0);
	close(a);

	/* A cell outside the allow-list gets no ACK, just a close. */
	int c = raw_connect(port);
	mc_buf_reset(&tx);
	mc_buf_reset(&rx);
	hello_bytes(&tx, "nyc", 1);
	raw_send(c, tx.data, tx.len);
	assert_int_equal(raw_next(&t->loop, c, &rx, &f), 0);
	close(c);

	/* An oversize length is refused from the header alone. */
	c = raw_connect(port);
	uint8_t hdr[MC_REPL_HDR];
	mc_put_u32(hdr, MC_REPL_MAX_FRAME + 2);
	hdr[4] = MC_FRAME_ENTRIES;
	raw_send(c, hdr, sizeof(hdr));
	mc_buf_reset(&rx);
	assert_int_equal(raw_next(&t->loop, c, &rx, &f), 0);
	close(c);

	/* ENTRIES before HELLO, and a corrupted frame, are protocol errors. */
	c = raw_connect(port);
	mc_buf_reset(&tx);
	golden_entries(&tx);
	raw_send(c, tx.data, tx.len);
	assert_int_equal(raw_next(&t->loop, c, &rx, &f), 0);
	close(c);
	c = raw_connect(port);
	mc_buf_reset(&tx);
	hello_bytes(&tx, "sfo", 1);
	tx.data[MC_REPL_HDR + 4] ^= 1;
	raw_send(c, tx.data, tx.len);
	assert_int_equal(raw_next(&t->loop, c, &rx, &f), 0);
	close(c);

	/* Fencing: the live connection of lax (epoch 1) gets FENCE{2} and is closed,
	 * and a new HELLO with epoch 1 is fenced too. */
	assert_int_equal(mc_repl_sink_fence(t->sink, E2E_CELL, 2), 0);
	assert_int_equal(raw_next(&t->loop, b, &rxb, &f), 1);
	assert_int_equal(f.type, MC_FRAME_FENCE);
	assert_int_equal(f.u.fence_epoch, 2);
	assert_int_equal(raw_next(&t->loop, b, &rxb, &f), 0);
	close(b);
	c = raw_connect(port);
	mc_buf_reset(&tx);
	mc_buf_reset(&rx);
	hello_bytes(&tx, E2E_CELL, 1);
	raw_send(c, tx.data, tx.len);
	assert_int_equal(raw_next(&t->loop, c, &rx, &f), 1);
	assert_int_equal(f.type, MC_FRAME_FENCE);
	close(c);

	/* Before HELLO only a HELLO (at most 3 + 31 + 24 payload bytes) is valid: a peer
	 * that has not said who it is is refused from the length alone, not left to make
	 * the sink buffer up to a maximal frame until the silence timeout (1 s here). */
	uint32_t pre_hello_len[] = {(1u << 20) + 1, 1 + 3 + MC_STATE_MAX_HOME + 24 + 1};
	for (size_t i = 0; i < MC_ARRAY_LEN(pre_hello_len); i++) {
		c = raw_connect(port);
		mc_put_u32(hdr, pre_hello_len[i]);
		hdr[4] = i == 0 ? MC_FRAME_ENTRIES : MC_FRAME_HELLO;
		raw_send(c, hdr, sizeof(hdr));
		mc_buf_reset(&rx);
		uint64_t t0 = mc_now_ns();
		assert_int_equal(raw_next(&t->loop, c, &rx, &f), 0);
		assert_true(mc_now_ns() - t0 < 500 * 1000000ull);
		close(c);
	}

	mc_repl_cell_stats cs[4];
	size_t n = mc_repl_sink_stats(t->sink, cs, 4);
	assert_true(n >= 1);
	int found = 0;
	for (size_t i = 0; i < n && i < 4; i++) {
		if (strcmp(cs[i].cell, E2E_CELL) == 0) {
			found = 1;
			assert_int_equal(cs[i].applied_seq, 2);
			assert_int_equal(cs[i].applied_entries, 2);
			assert_int_equal(cs[i].connected, 0);
		}
		assert_string_not_equal(cs[i].cell, "nyc");
	}
	assert_true(found);

	mc_buf_fini(&tx);
	mc_buf_fini(&rx);
	mc_buf_fini(&rxb);
	mc_repl_sink_free(t->sink);
	mc_store_close(t->region);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	rm_rf(t->region_dir);
	free(t);
}

/* PURGE: the golden frames of docs/protocol.md section 5, a round trip and the
 * malformed variants. */
static const char GOLDEN_PURGE_PREFIX[] = "00 00 00 0b 07 02 00 00 00 05 2f 69 6d 67 2f 0e\n"
					  "be 28 1c";
static const char GOLDEN_PURGE_EXACT[] = "00 00 00 1b 07 01 00 0b 65 78 61 6d 70 6c 65 2e\n"
					 "63 6f 6d 00 0a 2f 61 2e 70 6e 67 3f 76 3d 31 83\n"
					 "1f 5d f6";

static void test_purge_frame(void **state)
{
	(void)state;
	uint8_t want[64];
	mc_buf b;
	mc_buf_init(&b);
	mc_repl_frame f;
	mc_repl_encode_purge(&b, true, "", 0, "/img/", 5);
	size_t n = hex_decode(GOLDEN_PURGE_PREFIX, want, sizeof want);
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);
	assert_int_equal(mc_repl_frame_decode((uint8_t *)b.data, b.len, MC_REPL_MAX_FRAME, &f),
			 (int)n);
	assert_int_equal(f.type, MC_FRAME_PURGE);
	assert_true(f.u.purge.prefix);
	assert_int_equal(f.u.purge.host_len, 0);
	assert_int_equal(f.u.purge.pattern_len, 5);
	assert_memory_equal(f.u.purge.pattern, "/img/", 5);

	mc_buf_reset(&b);
	mc_repl_encode_purge(&b, false, "example.com", 11, "/a.png?v=1", 10);
	n = hex_decode(GOLDEN_PURGE_EXACT, want, sizeof want);
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);
	assert_int_equal(mc_repl_frame_decode((uint8_t *)b.data, b.len, MC_REPL_MAX_FRAME, &f),
			 (int)n);
	assert_false(f.u.purge.prefix);
	assert_memory_equal(f.u.purge.host, "example.com", 11);
	assert_memory_equal(f.u.purge.pattern, "/a.png?v=1", 10);

	/* the largest PURGE fits the cell's bound on region-to-cell frames */
	char big[MC_REPL_PURGE_MAX];
	memset(big, 'a', sizeof big);
	big[0] = '/';
	mc_buf_reset(&b);
	mc_repl_encode_purge(&b, true, big + 1, 400, big, MC_REPL_PURGE_MAX - 400);
	assert_true(b.len - MC_REPL_HDR - MC_REPL_TRAILER <= 1024);
	assert_int_equal(decode_all(&b, &f), (int)b.len);

	/* malformed: bad mode, empty pattern, host past the end, trailing byte, too long */
	uint8_t *p;
	mc_buf_reset(&b);
	mc_repl_encode_purge(&b, false, "h", 1, "/x", 2);
	p = (uint8_t *)b.data;
	p[MC_REPL_HDR] = 3;
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	p[MC_REPL_HDR] = 1;
	mc_put_u16(p + MC_REPL_HDR + 1, 9);
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	mc_put_u16(p + MC_REPL_HDR + 1, 1);
	mc_put_u16(p + MC_REPL_HDR + 4, 0);
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	mc_put_u16(p + MC_REPL_HDR + 4, 1);
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO); /* one pattern byte left over */
	mc_buf_reset(&b); /* host + pattern one byte over the bound */
	mc_repl_encode_purge(&b, true, big + 1, 400, big, MC_REPL_PURGE_MAX - 400);
	b.len -= MC_REPL_TRAILER;
	mc_buf_append(&b, "a\0\0\0\0", 5);
	p = (uint8_t *)b.data;
	mc_put_u32(p, mc_get_u32(p) + 1);
	mc_put_u16(p + MC_REPL_HDR + 3 + 400, MC_REPL_PURGE_MAX - 400 + 1);
	fix_crc(p, b.len);
	assert_int_equal(decode_all(&b, &f), MC_EPROTO);
	mc_buf_fini(&b);
}

#define E2E_TESTS cmocka_unit_test(test_e2e_ship_and_restart), cmocka_unit_test(test_sink_raw_peers), \
	cmocka_unit_test(test_e2e_hooks_and_residency),

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_bytes),
		cmocka_unit_test(test_roundtrip_hello),
		cmocka_unit_test(test_roundtrip_small),
		cmocka_unit_test(test_roundtrip_entries),
		cmocka_unit_test(test_split_every_byte),
		cmocka_unit_test(test_corrupt_every_byte),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_malformed_entries),
		cmocka_unit_test(test_malformed_small),
		cmocka_unit_test(test_purge_frame),
		E2E_TESTS
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
