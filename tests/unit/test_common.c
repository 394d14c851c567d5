/* Unit tests for src/common: CRC32C vectors, histogram accuracy and merge, HLC
 * monotonicity, buffers, parsers and error strings. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/common.h"

uint32_t mc_crc32c_sw(uint32_t crc, const void *buf, size_t n);

static void test_crc32c_vectors(void **state)
{
	(void)state;
	assert_int_equal(mc_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(mc_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	uint8_t zeros[32] = {0};
	assert_int_equal(mc_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
	uint8_t ones[32];
	memset(ones, 0xff, sizeof ones);
	assert_int_equal(mc_crc32c(0, ones, 32), 0x62A8AB43u);
	/* incremental == one shot, hardware == software, at odd offsets and lengths */
	uint8_t buf[1000];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i * 31 + 7);
	for (size_t off = 0; off < 9; off++) {
		for (size_t n = 0; n < 200; n += 13) {
			uint32_t one = mc_crc32c(0, buf + off, n);
			assert_int_equal(one, mc_crc32c_sw(0, buf + off, n));
			uint32_t part = mc_crc32c(0, buf + off, n / 2);
			part = mc_crc32c(part, buf + off + n / 2, n - n / 2);
			assert_int_equal(one, part);
		}
	}
}

static void test_hist_accuracy(void **state)
{
	(void)state;
	mc_hist *h = mc_alloc(sizeof *h);
	mc_hist_init(h);
	assert_int_equal(mc_hist_quantile(h, 0.5), 0);
	for (uint64_t v = 1; v <= 100000; v++)
		mc_hist_record(h, v);
	assert_int_equal(h->count, 100000);
	assert_int_equal(h->min, 1);
	assert_int_equal(h->max, 100000);
	const double qs[] = {0.5, 0.95, 0.99, 0.999};
	for (size_t i = 0; i < MC_ARRAY_LEN(qs); i++) {
		double exact = qs[i] * 100000.0;
		double got = (double)mc_hist_quantile(h, qs[i]);
		assert_true(got >= exact);          /* never under-reports */
		assert_true(got <= exact * 1.0157); /* within 2^-6 */
	}
	assert_int_equal(mc_hist_quantile(h, 1.0), 100000);
	/* exact region */
	mc_hist_init(h);
	for (int i = 0; i < 10; i++)
		mc_hist_record(h, 7);
	assert_int_equal(mc_hist_quantile(h, 0.99), 7);
	/* huge values are clamped into the top bucket but max stays exact */
	mc_hist_record(h, (uint64_t)1 << 50);
	assert_int_equal(h->max, (uint64_t)1 << 50);
	assert_int_equal(mc_hist_quantile(h, 1.0), (uint64_t)1 << 50);
	free(h);
}

static void test_hist_buckets_and_merge(void **state)
{
	(void)state;
	/* every value maps into a bucket whose upper edge is >= the value and whose
	 * predecessor's edge is < the value */
	for (uint64_t v = 0; v < 5000000; v = v * 3 / 2 + 1) {
		size_t b = mc_hist_bucket_of(v);
		assert_true(b < MC_HIST_BUCKETS);
		assert_true(mc_hist_bucket_upper(b) >= v);
		if (b > 0)
			assert_true(mc_hist_bucket_upper(b - 1) < v);
	}
	mc_hist *a = mc_alloc(sizeof *a), *b = mc_alloc(sizeof *b);
	mc_hist_init(a);
	mc_hist_init(b);
	for (int i = 0; i < 900; i++)
		mc_hist_record(a, 100);
	for (int i = 0; i < 100; i++)
		mc_hist_record(b, 10000);
	mc_hist_merge(a, b);
	assert_int_equal(a->count, 1000);
	assert_int_equal(a->min, 100);
	assert_int_equal(a->max, 10000);
	assert_int_equal(mc_hist_quantile(a, 0.5), 100);
	uint64_t p95 = mc_hist_quantile(a, 0.95);
	assert_true(p95 >= 10000 && p95 <= 10000);
	free(a);
	free(b);
}

static void test_hlc(void **state)
{
	(void)state;
	mc_hlc c;
	mc_hlc_init(&c, 0);
	uint64_t prev = mc_hlc_now(&c);
	assert_true(mc_hlc_wall_ms(prev) + 1000 >= mc_wall_ms());
	for (int i = 0; i < 100000; i++) {
		uint64_t t = mc_hlc_now(&c);
		assert_true(t > prev);
		prev = t;
	}
	/* a remote timestamp far in the future pulls the clock forward */
	uint64_t future = mc_hlc_make(mc_wall_ms() + 60000, 5);
	uint64_t t = mc_hlc_observe(&c, future);
	assert_true(t > future);
	assert_true(mc_hlc_now(&c) > t);
	/* a floor from a previous run is respected */
	mc_hlc_init(&c, future + 100);
	assert_true(mc_hlc_now(&c) > future + 100);
}

static void test_buf(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "hello");
	mc_buf_printf(&b, " %d %s", 42, "x");
	assert_string_equal(b.data, "hello 42 x");
	char big[1000];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	mc_buf_printf(&b, "%s", big);
	assert_int_equal(b.len, 10 + 999);
	mc_buf_consume(&b, 6);
	assert_int_equal(memcmp(b.data, "42 x", 4), 0);
	mc_buf_reset(&b);
	assert_int_equal(b.len, 0);
	mc_buf_fini(&b);
	mc_buf_fini(&b); /* idempotent */
}

static void test_json_append(void **state)
{
	(void)state;
	mc_buf b;
	mc_buf_init(&b);
	const char in[] = "a\"b\\c\nd\x01\x7f\xc3\xa9";
	mc_buf_append_json(&b, in, sizeof in - 1);
	assert_string_equal(b.data, "\"a\\\"b\\\\c\\nd\\u0001\\u007f\xc3\xa9\"");
	mc_buf_reset(&b);
	mc_buf_append_json(&b, "", 0);
	assert_string_equal(b.data, "\"\"");
	mc_buf_fini(&b);
}

static void test_config_arg(void **state)
{
	(void)state;
	const char *path;
	char *ok[] = {"cell", "-c", "x.json"};
	assert_int_equal(mc_parse_config_arg(3, ok, &path), 0);
	assert_string_equal(path, "x.json");
	char *ok2[] = {"cell", "--config=y.json"};
	assert_int_equal(mc_parse_config_arg(2, ok2, &path), 0);
	assert_string_equal(path, "y.json");
	char *missing[] = {"cell"};
	assert_int_equal(mc_parse_config_arg(1, missing, &path), MC_EINVAL);
	char *novalue[] = {"cell", "-c"};
	assert_int_equal(mc_parse_config_arg(2, novalue, &path), MC_EINVAL);
	char *extra[] = {"cell", "-c", "a", "b"};
	assert_int_equal(mc_parse_config_arg(4, extra, &path), MC_EINVAL);
	char *twice[] = {"cell", "-c", "a", "-c", "b"};
	assert_int_equal(mc_parse_config_arg(5, twice, &path), MC_EINVAL);
}

static void test_parsers(void **state)
{
	(void)state;
	char host[64];
	uint16_t port;
	assert_int_equal(mc_parse_hostport("127.0.0.1:8080", host, sizeof host, &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8080);
	assert_int_equal(mc_parse_hostport("localhost:0", host, sizeof host, &port), 0);
	assert_int_equal(mc_parse_hostport("[::1]:443", host, sizeof host, &port), 0);
	assert_string_equal(host, "::1");
	const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "1.2.3:80",
			     "1.2.3.4.5:80", "256.1.1.1:80", "example.com:80", "[::1]80",
			     "127.0.0.1:8o", ":80"};
	for (size_t i = 0; i < MC_ARRAY_LEN(bad); i++)
		assert_int_equal(mc_parse_hostport(bad[i], host, sizeof host, &port), MC_EINVAL);
	uint64_t v;
	assert_int_equal(mc_parse_u64("123", 3, 1000, &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(mc_parse_u64("1001", 4, 1000, &v), MC_EINVAL);
	assert_int_equal(mc_parse_u64("18446744073709551616", 20, UINT64_MAX, &v), MC_EINVAL);
	assert_int_equal(mc_parse_u64("", 0, 10, &v), MC_EINVAL);
	assert_int_equal(mc_parse_u64("-1", 2, 10, &v), MC_EINVAL);
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(mc_strerror(MC_ECRC), "checksum mismatch");
	assert_string_equal(mc_strerror(-ECONNREFUSED), "Connection refused");
	assert_string_equal(mc_strerror(0), "success");
	for (int c = MC_ELAST + 1; c < MC_EBASE; c++)
		assert_string_not_equal(mc_strerror(c), "unknown error");
	mc_log_level l;
	assert_int_equal(mc_log_level_parse("warn", &l), 0);
	assert_int_equal(l, MC_LOG_WARN);
	assert_int_equal(mc_log_level_parse("loud", &l), MC_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_vectors), cmocka_unit_test(test_hist_accuracy),
		cmocka_unit_test(test_hist_buckets_and_merge), cmocka_unit_test(test_hlc),
		cmocka_unit_test(test_buf), cmocka_unit_test(test_parsers),
		cmocka_unit_test(test_strerror), cmocka_unit_test(test_json_append),
		cmocka_unit_test(test_config_arg),
	};
	return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
