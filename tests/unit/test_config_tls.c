/* Unit tests for the "tls" section of the cell config and the ticket-key set
 * parser: the example file, defaults, both key forms (80-byte hex in nginx's
 * layout and the object form), and the exact one-line errors, which never echo
 * key material. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

#define L1 "{\"cell\": \"lax\",\n"
#define L2 " \"listen\": {\"http\": \"127.0.0.1:8080\", \"admin\": \"127.0.0.1:9090\"},\n"
#define L3 " \"data_dir\": \"/tmp/lax\",\n"
#define L4 " \"region\": {\"repl\": \"127.0.0.1:7100\"},\n"
#define HEAD L1 L2 L3 L4
#define ROUTES " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/v1/kv/\", \"kind\": \"kv\"}]}"
#define TLS_MIN "\"listen\": \"127.0.0.1:8443\", \"cert\": \"c.pem\", \"key\": \"k.pem\""
#define NAME_HEX "000102030405060708090a0b0c0d0e0f"
#define S32A "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
#define S32B "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
#define KEY_OBJ                                                                                    \
	"{\"name\": \"" NAME_HEX "\", \"aes_key\": \"" S32A "\", \"hmac_key\": \"" S32B "\"}"
/* the same key as 80 bytes: name | hmac | aes */
#define KEY_HEX "\"" NAME_HEX S32B S32A "\""

static int parse(const char *doc, mc_cell_conf **out, char *err, size_t cap)
{
	return mc_cell_conf_parse("cell.json", doc, strlen(doc), out, err, cap);
}

static void check_key(const mc_ticket_key_conf *k)
{
	for (int i = 0; i < 16; i++)
		assert_int_equal(k->name[i], i);
	for (int i = 0; i < 32; i++) {
		assert_int_equal(k->aes_key[i], 0xa0 + i);
		assert_int_equal(k->hmac_key[i], 0xc0 + i);
	}
}

static void test_from_hex(void **state)
{
	(void)state;
	mc_ticket_key_conf k;
	const char *hex = NAME_HEX S32B S32A;
	assert_int_equal(mc_config_ticket_key_from_hex(hex, strlen(hex), &k), 0);
	check_key(&k);
	char upper[161];
	for (size_t i = 0; i < 160; i++)
		upper[i] = (hex[i] >= 'a' && hex[i] <= 'f') ? (char)(hex[i] - 32) : hex[i];
	upper[160] = '\0';
	memset(&k, 0, sizeof k);
	assert_int_equal(mc_config_ticket_key_from_hex(upper, 160, &k), 0);
	check_key(&k);
	assert_int_equal(mc_config_ticket_key_from_hex(hex, 158, &k), MC_EINVAL);
	assert_int_equal(mc_config_ticket_key_from_hex(NULL, 0, &k), MC_EINVAL);
	upper[17] = 'g';
	assert_int_equal(mc_config_ticket_key_from_hex(upper, 160, &k), MC_EINVAL);
}

static void test_example(void **state)
{
	(void)state;
	char path[512], err[MC_CONFIG_ERR_MAX];
	snprintf(path, sizeof path, "docs/examples/cell-tls.json");
	if (access(path, R_OK) != 0) {
		const char *slash = strrchr(__FILE__, '/');
		int dir = slash ? (int)(slash - __FILE__) : 0;
		snprintf(path, sizeof path, "%.*s/../../docs/examples/cell-tls.json", dir,
			 __FILE__);
	}
	mc_cell_conf *c = NULL;
	int rc = mc_cell_conf_load(path, &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	const mc_tls_conf *t = &c->tls;
	assert_true(t->enabled);
	assert_string_equal(t->listen, "127.0.0.1:8443");
	assert_string_equal(t->cert, "/etc/metrocell/tls/lax.crt");
	assert_string_equal(t->key, "/etc/metrocell/tls/lax.key");
	assert_int_equal(t->ticket_keys.n, 2);
	assert_memory_equal(t->ticket_keys.keys[0].name, "lax-2026-04-01\0\0", 16);
	assert_int_equal(t->ticket_keys.keys[0].aes_key[1], 0x11);
	assert_int_equal(t->ticket_keys.keys[0].hmac_key[0], 0xff);
	assert_memory_equal(t->ticket_keys.keys[1].name, "lax-2026-03-01\0\0", 16);
	assert_int_equal(t->ticket_keys.keys[1].aes_key[31], 0x01);
	assert_int_equal(t->nalpn, 2);
	assert_string_equal(t->alpn[0], "h2");
	assert_string_equal(t->alpn[1], "http/1.1");
	assert_int_equal(t->min_version, 12);
	assert_int_equal(t->session_timeout_s, 3600);
	assert_int_equal(t->handshake_timeout_ms, 10000);
	assert_int_equal(t->h2.max_concurrent_streams, 100);
	assert_int_equal(t->h2.initial_window_size, 65535);
	assert_int_equal(t->h2.connection_window_size, 1048576);
	mc_cell_conf_free(c);
}

static void test_defaults_and_forms(void **state)
{
	(void)state;
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	assert_int_equal(parse(HEAD ROUTES, &c, err, sizeof err), 0);
	assert_false(c->tls.enabled);
	assert_null(c->tls.listen);
	mc_cell_conf_free(c);

	assert_int_equal(parse(HEAD " \"tls\": {" TLS_MIN "},\n" ROUTES, &c, err, sizeof err), 0);
	assert_true(c->tls.enabled);
	assert_int_equal(c->tls.ticket_keys.n, 0);
	assert_int_equal(c->tls.nalpn, 2);
	assert_int_equal(c->tls.min_version, 12);
	assert_int_equal(c->tls.h2.max_concurrent_streams, 100);
	assert_int_equal(c->tls.h2.initial_window_size, 65535);
	assert_int_equal(c->tls.h2.connection_window_size, 1048576);
	mc_cell_conf_free(c);

	/* one key as a bare string, the object form, and both in one set */
	assert_int_equal(parse(HEAD " \"tls\": {" TLS_MIN ", \"ticket_keys\": " KEY_HEX
				    "},\n" ROUTES,
			       &c, err, sizeof err),
			 0);
	assert_int_equal(c->tls.ticket_keys.n, 1);
	check_key(&c->tls.ticket_keys.keys[0]);
	mc_cell_conf_free(c);
	assert_int_equal(parse(HEAD " \"tls\": {" TLS_MIN ", \"ticket_keys\": [" KEY_OBJ
				    "], \"alpn\": "
				    "[\"http/1.1\"], \"min_version\": \"1.3\", \"h2\": "
				    "{\"max_concurrent_streams\": 7}},\n" ROUTES,
			       &c, err, sizeof err),
			 0);
	assert_int_equal(c->tls.ticket_keys.n, 1);
	check_key(&c->tls.ticket_keys.keys[0]);
	assert_int_equal(c->tls.nalpn, 1);
	assert_string_equal(c->tls.alpn[0], "http/1.1");
	assert_int_equal(c->tls.min_version, 13);
	assert_int_equal(c->tls.h2.max_concurrent_streams, 7);
	mc_cell_conf_free(c);
	/* port 0 may repeat (tests pick free ports) */
	assert_int_equal(parse(L1
			       " \"listen\": {\"http\": \"127.0.0.1:0\", \"admin\": "
			       "\"127.0.0.1:0\"},\n" L3 L4
			       " \"tls\": {\"listen\": \"127.0.0.1:0\", \"cert\": \"c\", \"key\": "
			       "\"k\"},\n" ROUTES,
			       &c, err, sizeof err),
			 0);
	mc_cell_conf_free(c);
}

typedef struct bad_case {
	const char *tls;
	const char *want;
} bad_case;

static const bad_case bad[] = {
    {"[]", "cell.json:5:9: tls: expected an object, got an array"},
    {"{\"listen\": \"127.0.0.1:8443\", \"cert\": \"c\"}",
     "cell.json:5:9: tls: missing required key \"key\""},
    {"{" TLS_MIN ", \"tickets\": []}", "cell.json:5:71: tls: unknown key \"tickets\""},
    {"{" TLS_MIN ", \"ticket_key\": []}",
     "cell.json:5:71: tls: unknown key \"ticket_key\" (did you mean \"ticket_keys\"?)"},
    {"{\"listen\": \"127.0.0.1:8080\", \"cert\": \"c\", \"key\": \"k\"}",
     "cell.json:5:20: tls.listen: the same address as listen.http (\"127.0.0.1:8080\")"},
    {"{\"listen\": \"127.0.0.1:8443\", \"cert\": \"\", \"key\": \"k\"}",
     "cell.json:5:46: tls.cert: expected a non-empty file path of at most 4096 bytes, got \"\""},
    {"{" TLS_MIN ", \"ticket_keys\": []}",
     "cell.json:5:86: tls.ticket_keys: expected 1..16 ticket keys, got 0"},
    {"{" TLS_MIN ", \"ticket_keys\": 5}",
     "cell.json:5:86: tls.ticket_keys: expected an array of ticket keys (or one key as 160 "
     "hex digits), got 5"},
    /* secrets are described, never echoed */
    {"{" TLS_MIN ", \"ticket_keys\": [\"00112233\"]}",
     "cell.json:5:87: tls.ticket_keys[0]: expected 160 hex digits (an 80-byte key: name, HMAC "
     "key, AES key), got 8 hex digits"},
    {"{" TLS_MIN ", \"ticket_keys\": [\"0011223x\"]}",
     "cell.json:5:87: tls.ticket_keys[0]: expected 160 hex digits (an 80-byte key: name, HMAC "
     "key, AES key), got a non-hex character at offset 7"},
    {"{" TLS_MIN ", \"ticket_keys\": [{\"name\": \"" NAME_HEX "\", \"aes_key\": \"" S32A "\"}]}",
     "cell.json:5:87: tls.ticket_keys[0]: missing required key \"hmac_key\""},
    {"{" TLS_MIN ", \"ticket_keys\": [{\"name\": \"" NAME_HEX "\", \"aes_key\": \"abcd\", "
     "\"hmac_key\": \"" S32B "\"}]}",
     "cell.json:5:143: tls.ticket_keys[0].aes_key: expected 64 hex digits (32 bytes), got 4 "
     "hex digits"},
    {"{" TLS_MIN ", \"ticket_keys\": [" KEY_OBJ ", " KEY_HEX "]}",
     "cell.json:5:292: tls.ticket_keys[1]: duplicate ticket key name (also ticket_keys[0])"},
    {"{" TLS_MIN ", \"ticket_keys\": [" KEY_HEX ", " KEY_OBJ "]}",
     "cell.json:5:260: tls.ticket_keys[1].name: duplicate ticket key name (also "
     "ticket_keys[0])"},
    {"{" TLS_MIN ", \"alpn\": [\"h2\", \"h3\"]}",
     "cell.json:5:86: tls.alpn[1]: expected \"h2\" or \"http/1.1\", got \"h3\""},
    {"{" TLS_MIN ", \"alpn\": [\"h2\", \"h2\"]}",
     "cell.json:5:86: tls.alpn[1]: duplicate protocol \"h2\" (also alpn[0])"},
    {"{" TLS_MIN ", \"alpn\": []}",
     "cell.json:5:79: tls.alpn: expected an array of 1..2 protocols from \"h2\", "
     "\"http/1.1\", got an array"},
    {"{" TLS_MIN ", \"min_version\": \"1.1\"}",
     "cell.json:5:86: tls.min_version: expected \"1.2\" or \"1.3\", got \"1.1\""},
    {"{" TLS_MIN ", \"h2\": {\"max_concurrent_streams\": 0}}",
     "cell.json:5:104: tls.h2.max_concurrent_streams: expected an integer in 1..1000, got 0"},
    {"{" TLS_MIN ", \"h2\": {\"initial_window_size\": 2147483648}}",
     "cell.json:5:101: tls.h2.initial_window_size: expected an integer in 1024..2147483647, "
     "got 2147483648"},
    {"{" TLS_MIN ", \"handshake_timeout_ms\": 10}",
     "cell.json:5:95: tls.handshake_timeout_ms: expected an integer in 100..600000, got 10"},
};

static void test_bad(void **state)
{
	(void)state;
	int failed = 0;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char doc[2048], err[MC_CONFIG_ERR_MAX];
		snprintf(doc, sizeof doc, HEAD " \"tls\": %s,\n" ROUTES, bad[i].tls);
		mc_cell_conf *c = NULL;
		int rc = parse(doc, &c, err, sizeof err);
		if (rc != MC_ECONFIG || strcmp(err, bad[i].want) != 0) {
			print_message("case %zu: rc %d\n  got:  %s\n  want: %s\n", i, rc, err,
				      bad[i].want);
			failed++;
		}
		/* no key material in any message */
		assert_null(strstr(err, S32A));
		assert_null(strstr(err, "0011223"));
		mc_cell_conf_free(c);
	}
	assert_int_equal(failed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_from_hex),
	    cmocka_unit_test(test_example),
	    cmocka_unit_test(test_defaults_and_forms),
	    cmocka_unit_test(test_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
