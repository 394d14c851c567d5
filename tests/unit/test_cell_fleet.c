/* Unit tests for the cell's last-known-good file (src/cell/lkg.c): the round
 * trip, a damaged or unlisted document refused by its checksum, and the crash
 * window between the two renames, which must leave a pair that checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cell/cell_int.h"
#include "net/digest.h"

static void tmpdir(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/mc-lkg-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static void rmrf(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void meta_of(const char *doc, uint64_t version, mc_lkg_meta *m)
{
	memset(m, 0, sizeof *m);
	m->version = version;
	m->accepted_ms = 1700000000000ull + version;
	assert_int_equal(mc_net_sha256_hex(doc, strlen(doc), m->sha256), 0);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_sha256(void **state)
{
	(void)state;
	char hex[65];
	assert_int_equal(mc_net_sha256_hex("abc", 3, hex), 0);
	assert_string_equal(hex,
			    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(mc_net_sha256_hex("", 0, hex), 0);
	assert_string_equal(hex,
			    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_round_trip_and_damage(void **state)
{
	(void)state;
	char base[64], dir[128], err[512];
	tmpdir(base, sizeof base);
	snprintf(dir, sizeof dir, "%s/config", base);
	char *doc = NULL;
	size_t len = 0;
	mc_lkg_meta m, got;
	assert_int_equal(mc_lkg_read(dir, &doc, &len, &got, err, sizeof err), MC_ENOTFOUND);
	assert_null(doc);

	const char *v1 = "{\"routes\": [1]}\n";
	meta_of(v1, 1, &m);
	assert_int_equal(mc_lkg_write(dir, v1, strlen(v1), &m), 0);
	assert_int_equal(mc_lkg_read(dir, &doc, &len, &got, err, sizeof err), 0);
	assert_int_equal(len, strlen(v1));
	assert_memory_equal(doc, v1, len);
	assert_int_equal(got.version, 1);
	assert_int_equal(got.accepted_ms, m.accepted_ms);
	assert_string_equal(got.sha256, m.sha256);
	free(doc);

	/* one flipped byte: refused, with the reason */
	write_file(dir, "lkg.json", "{\"routes\": [2]}\n");
	assert_int_equal(mc_lkg_read(dir, &doc, &len, &got, err, sizeof err), MC_ECRC);
	assert_null(doc);
	assert_non_null(strstr(err, "checksum mismatch"));

	/* no checksum file: the document is not trusted */
	char path[600];
	write_file(dir, "lkg.json", v1);
	snprintf(path, sizeof path, "%s/lkg.json.sha256", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mc_lkg_read(dir, &doc, &len, &got, err, sizeof err), MC_ECRC);
	assert_non_null(strstr(err, "lkg.json.sha256: missing"));
	rmrf(base);
}

/* The checksum file names the new and the previous document and is renamed
 * before the document: a crash between the renames leaves the previous
 * document, which still checks. */
static void test_crash_between_renames(void **state)
{
	(void)state;
	char dir[64], err[512];
	tmpdir(dir, sizeof dir);
	const char *v1 = "{\"v\": 1}", *v2 = "{\"v\": 2}", *v3 = "{\"v\": 3}";
	mc_lkg_meta m1, m2, m3, got;
	meta_of(v1, 1, &m1);
	meta_of(v2, 2, &m2);
	meta_of(v3, 3, &m3);
	assert_int_equal(mc_lkg_write(dir, v1, strlen(v1), &m1), 0);
	assert_int_equal(mc_lkg_write(dir, v2, strlen(v2), &m2), 0);
	/* simulate the crash: the checksum file of v3 is in place, the document is v2 */
	char sums[600], *text = NULL;
	size_t n;
	snprintf(sums, sizeof sums, "%s/lkg.json.sha256", dir);
	assert_int_equal(mc_file_read(sums, 4096, &text, &n), 0);
	/* v2 first, then the document it replaced */
	assert_ptr_equal(strstr(text, m2.sha256), text + strlen("sha256="));
	assert_non_null(strstr(text, m1.sha256));
	free(text);
	char line[512];
	snprintf(line, sizeof line,
		 "sha256=%s version=3 accepted_ms=%llu\nsha256=%s version=2 accepted_ms=%llu\n",
		 m3.sha256, (unsigned long long)m3.accepted_ms, m2.sha256,
		 (unsigned long long)m2.accepted_ms);
	write_file(dir, "lkg.json.sha256", line);
	char *doc = NULL;
	size_t len;
	assert_int_equal(mc_lkg_read(dir, &doc, &len, &got, err, sizeof err), 0);
	assert_int_equal(got.version, 2);
	assert_memory_equal(doc, v2, len);
	free(doc);
	/* and the next write still lists the document in place */
	assert_int_equal(mc_lkg_write(dir, v3, strlen(v3), &m3), 0);
	assert_int_equal(mc_lkg_read(dir, &doc, &len, &got, err, sizeof err), 0);
	assert_int_equal(got.version, 3);
	free(doc);
	rmrf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sha256),
	    cmocka_unit_test(test_round_trip_and_damage),
	    cmocka_unit_test(test_crash_between_renames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
