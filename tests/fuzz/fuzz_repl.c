/* libFuzzer driver for the replication frame codec: decodes a stream of frames,
 * walks every ENTRIES frame, and checks that re-encoding each decoded frame gives
 * back exactly the input bytes (the wire format is canonical); a second pass
 * fixes up the CRCs first. Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Isrc \
 *     tests/fuzz/fuzz_repl.c src/repl/codec.c src/common/[a-z]*.c -o build/fuzz_repl -lpthread -lm
 *   ./build/fuzz_repl tests/fuzz/corpus/repl */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repl/repl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                          \
	do {                                                                              \
		if (!(c))                                                                 \
			abort();                                                          \
	} while (0)

static void check_entries(const mc_repl_frame *f, mc_buf *re)
{
	mc_repl_entries_writer w;
	mc_repl_entries_begin(&w, re, f->u.entries.first_seq);
	size_t pos = 0;
	uint32_t idx = 0, count = 0;
	mc_log_entry e;
	int r;
	while ((r = mc_repl_entries_next(f, &pos, &idx, &e)) == 1) {
		CHECK(idx == count);
		CHECK(e.seq == f->u.entries.first_seq + idx);
		CHECK(e.op == MC_OP_PUT || e.op == MC_OP_DEL);
		CHECK(e.klen >= 1 && e.klen <= MC_STATE_MAX_KEY);
		CHECK(e.key >= (const char *)f->u.entries.data &&
		      e.value + e.vlen <= (const char *)f->u.entries.data + f->u.entries.data_len);
		mc_repl_entries_add(&w, &e);
		count++;
	}
	CHECK(r == 0); /* decode validated the frame, so iteration cannot fail */
	CHECK(count == f->u.entries.n);
	CHECK(pos == f->u.entries.data_len);
	mc_repl_entries_end(&w);
}

static void check_events(const mc_repl_frame *f, mc_buf *re)
{
	mc_repl_events_writer w;
	mc_repl_events_begin(&w, re, f->u.events.stream, f->u.events.first_seq);
	size_t pos = 0, len;
	const char *line;
	uint32_t count = 0;
	int r;
	while ((r = mc_repl_events_next(f, &pos, &line, &len)) == 1) {
		CHECK(len >= 2 && len <= MC_REPL_EVENT_MAX && line[0] == '{' && line[len - 1] == '}');
		mc_repl_events_add(&w, line, len);
		count++;
	}
	CHECK(r == 0);
	CHECK(count == f->u.events.n);
	mc_repl_events_end(&w);
}

static void run_stream(const uint8_t *data, size_t size)
{
	mc_buf re;
	mc_buf_init(&re);
	size_t off = 0;
	while (off < size) {
		mc_repl_frame f;
		int r = mc_repl_frame_decode(data + off, size - off, MC_REPL_MAX_FRAME, &f);
		if (r == MC_EAGAIN) {
			/* Any shorter prefix must also want more bytes. */
			mc_repl_frame g;
			CHECK(mc_repl_frame_decode(data + off, (size - off) / 2, MC_REPL_MAX_FRAME, &g) ==
			      MC_EAGAIN);
			break;
		}
		if (r < 0) {
			CHECK(r == MC_ETOOBIG || r == MC_ECRC || r == MC_EPROTO);
			break;
		}
		CHECK((size_t)r <= size - off && r >= MC_REPL_HDR + MC_REPL_TRAILER);
		mc_buf_reset(&re);
		switch (f.type) {
		case MC_FRAME_HELLO:
			mc_repl_encode_hello(&re, &f.u.hello);
			break;
		case MC_FRAME_ENTRIES:
			check_entries(&f, &re);
			break;
		case MC_FRAME_ACK:
			mc_repl_encode_ack(&re, f.u.ack_seq);
			break;
		case MC_FRAME_HEARTBEAT:
			mc_repl_encode_heartbeat(&re, f.u.heartbeat_hlc);
			break;
		case MC_FRAME_FENCE:
			mc_repl_encode_fence(&re, f.u.fence_epoch);
			break;
		case MC_FRAME_INVALIDATE:
			mc_repl_encode_invalidate(&re, f.u.invalidate.version, f.u.invalidate.key,
						  f.u.invalidate.klen);
			break;
		case MC_FRAME_PURGE:
			mc_repl_encode_purge(&re, f.u.purge.prefix, f.u.purge.host,
					     f.u.purge.host_len, f.u.purge.pattern,
					     f.u.purge.pattern_len);
			break;
		case MC_FRAME_TELEMETRY:
			mc_repl_encode_telemetry(&re, &f.u.telemetry);
			break;
		case MC_FRAME_EVENTS:
			check_events(&f, &re);
			break;
		case MC_FRAME_OBS_ACK:
			mc_repl_encode_obs_ack(&re, f.u.obs_ack.kind, f.u.obs_ack.stream,
					       f.u.obs_ack.seq);
			break;
		default:
			abort(); /* decode accepted an unknown type */
		}
		CHECK(re.len == (size_t)r && memcmp(re.data, data + off, re.len) == 0);
		off += (size_t)r;
	}
	mc_buf_fini(&re);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run_stream(data, size);
	/* Again with every frame's CRC made right, so mutations reach the payload
	 * parsers instead of dying at the checksum. */
	if (size == 0)
		return 0;
	uint8_t *copy = malloc(size);
	memcpy(copy, data, size);
	size_t off = 0;
	while (size - off >= 4) {
		uint32_t flen = mc_get_u32(copy + off);
		if (flen == 0 || flen - 1 > MC_REPL_MAX_FRAME || size - off - 4 < (size_t)flen + 4)
			break;
		mc_put_u32(copy + off + 4 + flen, mc_crc32c(0, copy + off + 4, flen));
		off += 4 + (size_t)flen + 4;
	}
	run_stream(copy, size);
	free(copy);
	return 0;
}
