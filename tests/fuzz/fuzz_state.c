/* libFuzzer driver for the record and write-log entry codecs of src/state: decode
 * any bytes; whatever decodes must re-encode to exactly the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state/state_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mc_record r;
	if (mc_state_record_decode(data, size, &r) == 0) {
		size_t n = mc_state_record_size_of(&r);
		uint8_t *p = malloc(n ? n : 1);
		if (!p)
			abort();
		mc_state_record_encode(p, &r);
		/* unknown flag bits are dropped on decode, so compare all but the flags */
		if (n != size || memcmp(p, data, 16) != 0 || memcmp(p + 17, data + 17, n - 17) != 0)
			abort();
		free(p);
	}
	mc_log_entry e;
	if (mc_state_logent_decode(7, data, size, &e) == 0) {
		if (e.seq != 7 || e.klen < 1 || e.klen > MC_STATE_MAX_KEY)
			abort();
		size_t n = mc_state_logent_size(e.klen, e.vlen);
		uint8_t *p = malloc(n ? n : 1);
		if (!p)
			abort();
		mc_state_logent_encode(p, &e);
		if (n != size || memcmp(p, data, n) != 0)
			abort();
		free(p);
	}
	return 0;
}
