/* Unit tests for the fleet config validator (mc_fleet_conf_parse): the example
 * document, per-cell overrides as a cell sees them, the precise error of each
 * kind of bad input (schema, references, keys, rollout, size), and the
 * command-line stage list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"
#include "config/config.h"

static const char *example(const char *name, char *buf, size_t cap)
{
	snprintf(buf, cap, "docs/examples/%s", name);
	if (access(buf, R_OK) == 0)
		return buf;
	const char *slash = strrchr(__FILE__, '/');
	int dir = slash ? (int)(slash - __FILE__) : 0;
	snprintf(buf, cap, "%.*s/../../docs/examples/%s", dir, __FILE__, name);
	return buf;
}

static char *slurp(const char *path, size_t *len)
{
	char *b = NULL;
	assert_int_equal(mc_file_read(path, MC_FLEET_MAX_BYTES, &b, len), 0);
	return b;
}

static const char CELL_BOOT[] =
    "{\"cell\": \"sfo\", \"listen\": {\"http\": \"127.0.0.1:0\", \"admin\": \"127.0.0.1:0\"},"
    " \"data_dir\": \"/tmp/x\", \"region\": {\"repl\": \"127.0.0.1:7100\", \"http\": "
    "\"127.0.0.1:7080\"}, \"limits\": {\"max_body_bytes\": 4096},"
    " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/\", \"kind\": \"kv\"}]}";

static void test_example(void **state)
{
	(void)state;
	char path[512], err[MC_CONFIG_ERR_MAX];
	size_t len;
	char *doc = slurp(example("fleet.json", path, sizeof path), &len);
	mc_fleet_conf *f = NULL;
	int rc = mc_fleet_conf_parse("fleet.json", doc, len, NULL, &f, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(f->version, -1);
	assert_int_equal(f->dyn->npools, 1);
	assert_int_equal(f->dyn->pools[0].nworkers, 2);
	assert_int_equal(f->dyn->nroutes, 3);
	assert_int_equal(f->dyn->routes[2].kind, MC_ROUTE_PROXY);
	assert_non_null(f->dyn->routes[2].quota);
	assert_string_equal(f->dyn->routes[2].quota->name, "per-ip");
	assert_int_equal(f->dyn->routes[2].fail_open, 1);
	assert_int_equal(f->dyn->routes[0].max_body_bytes, 1048576); /* default limits */
	assert_int_equal(f->dyn->nflags, 2);
	assert_int_equal(f->nauth_keys, 1);
	assert_string_equal(f->auth_keys[0].kid, "2026-05");
	assert_string_equal(f->auth_keys[0].alg, "HS256");
	assert_int_equal(f->auth_keys[0].status, MC_KEY_ACTIVE);
	assert_int_equal(f->has_ticket_keys, 1);
	assert_int_equal(f->ticket_keys.n, 1);
	assert_int_equal(f->ticket_keys.keys[0].name[1], 1);
	assert_int_equal(f->ncells, 2);
	assert_string_equal(f->cells[1], "sfo");
	assert_int_equal(f->rollout.nstages, 2);
	assert_string_equal(f->rollout.stages[1].cells[0], "sfo");
	assert_int_equal(f->rollout.bake_ms, 10000);
	assert_true(f->rollout.max_p95_ratio == 1.5);
	mc_fleet_conf_free(f);

	/* as cell sfo validates it: its pool and flag overrides, its limits */
	mc_cell_conf *boot = NULL;
	assert_int_equal(
	    mc_cell_conf_parse("sfo.json", CELL_BOOT, strlen(CELL_BOOT), &boot, err, sizeof err),
	    0);
	rc = mc_fleet_conf_parse("fleet.json", doc, len, boot, &f, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(f->dyn->cell, "sfo");
	assert_int_equal(f->dyn->pools[0].nworkers, 1);
	assert_string_equal(f->dyn->pools[0].workers[0], "127.0.0.1:9101");
	assert_int_equal(f->dyn->routes[0].max_body_bytes, 4096);
	assert_int_equal(f->dyn->nflags, 2);
	assert_string_equal(f->dyn->flags[1].name, "banner");
	assert_string_equal(f->dyn->flags[1].json, "\"hello sfo\"");
	mc_fleet_conf_free(f);
	mc_cell_conf_free(boot);
	free(doc);
}

typedef struct bad {
	const char *doc;
	const char *err;
} bad;

#define R "\"routes\": [{\"name\": \"a\", \"prefix\": \"/\", \"kind\": \"kv\"}]"
#define HS "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\""

static const bad BAD[] = {
    {"[]", "fleet.json:1:1: (root): expected an object, got an array"},
    {"{\"routes\": [], \"rolout\": {}}",
     "fleet.json:1:16: (root): unknown key \"rolout\" (did you mean \"rollout\"?)"},
    {"{\"pools\": {}}", "fleet.json:1:1: (root): missing required key \"routes\""},
    {"{\"routes\": [{\"name\": \"a\", \"prefix\": \"/\", \"kind\": \"proxy\", \"pool\": \"p\"}]}",
     "fleet.json:1:67: routes[0].pool: unknown pool \"p\" (no pools are defined)"},
    {"{\"version\": -1, " R "}",
     "fleet.json:1:13: version: expected a non-negative integer (the region numbers "
     "versions; this one is informational), got -1"},
    {"{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"key\": \"abcd\", "
     "\"status\": \"active\"}]}",
     "fleet.json:1:108: auth_keys[0].key: expected a HS256 secret of 32..1024 bytes as hex "
     "digits (64..2048 digits), got 4 hex digits"},
    {"{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"key\": \"secret-zz\", "
     "\"status\": \"active\"}]}",
     "fleet.json:1:108: auth_keys[0].key: expected a HS256 secret of 32..1024 bytes as hex "
     "digits (64..2048 digits), got a non-hex character at offset 0"},
    {"{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"none\", \"key\": " HS
     ", \"status\": \"active\"}]}",
     "fleet.json:1:92: auth_keys[0].alg: expected one of \"HS256\", \"HS384\", \"HS512\", "
     "\"ES256\", \"ES384\", \"ES512\", \"RS256\", \"RS384\", \"RS512\", \"PS256\", "
     "\"PS384\", \"PS512\", \"EdDSA\", got \"none\""},
    {"{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"ES256\", \"key\": \"abc\", "
     "\"status\": \"active\"}]}",
     "fleet.json:1:108: auth_keys[0].key: expected a PEM public key (\"-----BEGIN PUBLIC "
     "KEY-----\\n...\\n-----END PUBLIC KEY-----\") for ES256, got \"abc\""},
    {"{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"key\": " HS
     ", \"status\": \"active\"}, {\"kid\": \"k\", \"alg\": \"HS256\", \"key\": " HS
     ", \"status\": \"pending\"}]}",
     "fleet.json:1:205: auth_keys[1].kid: duplicate kid \"k\" (also auth_keys[0])"},
    {"{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"key\": " HS
     ", \"status\": \"active\"}, {\"kid\": \"j\", \"alg\": \"HS256\", \"key\": " HS
     ", \"status\": \"active\"}]}",
     "fleet.json:1:71: auth_keys: expected at most one key with status \"active\" (the "
     "signing key), got 2"},
    {"{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"key\": " HS
     ", \"status\": \"old\"}]}",
     "fleet.json:1:186: auth_keys[0].status: expected one of \"pending\", \"active\", "
     "\"retiring\", got \"old\""},
    {"{" R ", \"tls_ticket_keys\": [\"00\"]}",
     "fleet.json:1:78: tls_ticket_keys[0]: expected 160 hex digits (an 80-byte key: name, "
     "HMAC key, AES key), got 2 hex digits"},
    {"{" R ", \"cells\": {\"lax\": {\"pools\": {\"app\": {\"workers\": [\"127.0.0.1:1\"]}}}}}",
     "fleet.json:1:86: cells.lax.pools: unknown pool \"app\" (a cell overrides pools of "
     "the document; no pools are defined)"},
    {"{" R ", \"cells\": {\"LAX\": {}}}",
     "fleet.json:1:68: cells: invalid cell name \"LAX\" (expected [a-z0-9-]{1,31})"},
    {"{" R ", \"cells\": {\"lax\": {\"routes\": []}}}",
     "fleet.json:1:76: cells.lax: unknown key \"routes\""},
    {"{" R ", \"cells\": {\"lax\": {}}, \"rollout\": {\"stages\": [\"lax\", \"sfo\"]}}",
     "fleet.json:1:110: rollout.stages[1]: unknown cell \"sfo\" (not a key of cells)"},
    {"{" R ", \"rollout\": {\"stages\": [\"lax\", \"sfo+lax\"]}}",
     "fleet.json:1:88: rollout.stages[1]: cell \"lax\" is already in stages[0]"},
    {"{" R ", \"rollout\": {\"stages\": [\"lax+\"]}}",
     "fleet.json:1:81: rollout.stages[0]: expected cell names matching [a-z0-9-]{1,31} "
     "joined by '+', got \"lax+\""},
    {"{" R ", \"rollout\": {\"max_p95_ratio\": 0.5}}",
     "fleet.json:1:87: rollout.max_p95_ratio: expected a number in 1..1000, got 0.5"},
};

static void test_bad_documents(void **state)
{
	(void)state;
	char err[MC_CONFIG_ERR_MAX];
	for (size_t i = 0; i < MC_ARRAY_LEN(BAD); i++) {
		mc_fleet_conf *f = (mc_fleet_conf *)1;
		int rc = mc_fleet_conf_parse("fleet.json", BAD[i].doc, strlen(BAD[i].doc), NULL, &f,
					     err, sizeof err);
		if (rc != MC_ECONFIG || strcmp(err, BAD[i].err) != 0)
			print_message("case %zu: %s\n  got:  %s\n  want: %s\n", i, BAD[i].doc, err,
				      BAD[i].err);
		assert_int_equal(rc, MC_ECONFIG);
		assert_null(f);
		assert_string_equal(err, BAD[i].err);
	}
}

/* A secret never reaches a message, whatever is wrong with it. */
static void test_secret_not_echoed(void **state)
{
	(void)state;
	const char *doc = "{" R ", \"auth_keys\": [{\"kid\": \"k\", \"alg\": \"HS512\", \"key\": "
			  "\"0011223344556677TOPSECRET\", \"status\": \"active\"}]}";
	char err[MC_CONFIG_ERR_MAX];
	mc_fleet_conf *f = NULL;
	assert_int_equal(mc_fleet_conf_parse("f.json", doc, strlen(doc), NULL, &f, err, sizeof err),
			 MC_ECONFIG);
	assert_null(strstr(err, "TOPSECRET"));
	assert_null(strstr(err, "0011"));
}

/* Documents over MC_FLEET_MAX_BYTES are refused before parsing; a fail_open
 * route is fine for the region but not for a cell without region.http. */
static void test_size_and_cell_context(void **state)
{
	(void)state;
	char err[MC_CONFIG_ERR_MAX];
	mc_fleet_conf *f = NULL;
	size_t n = (size_t)10 << 20;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	assert_int_equal(mc_fleet_conf_parse("fleet.json", big, n, NULL, &f, err, sizeof err),
			 MC_ECONFIG);
	assert_string_equal(err, "fleet.json: document is larger than 4194304 bytes");
	free(big);

	const char *doc =
	    "{\"pools\": {\"p\": {\"workers\": [\"127.0.0.1:9\"]}}, \"routes\": "
	    "[{\"name\": \"a\", \"prefix\": \"/\", \"kind\": \"proxy\", \"pool\": \"p\", "
	    "\"on_failure\": \"fail_open\"}]}";
	assert_int_equal(
	    mc_fleet_conf_parse("fleet.json", doc, strlen(doc), NULL, &f, err, sizeof err), 0);
	mc_fleet_conf_free(f);
	const char *boot =
	    "{\"cell\": \"lax\", \"listen\": {\"http\": \"127.0.0.1:0\", \"admin\": "
	    "\"127.0.0.1:0\"}, \"data_dir\": \"/tmp/x\", \"region\": {\"repl\": "
	    "\"127.0.0.1:7100\"}, \"routes\": [{\"name\": \"kv\", \"prefix\": \"/\", "
	    "\"kind\": \"kv\"}]}";
	mc_cell_conf *b = NULL;
	assert_int_equal(mc_cell_conf_parse("lax.json", boot, strlen(boot), &b, err, sizeof err),
			 0);
	assert_int_equal(
	    mc_fleet_conf_parse("fleet.json", doc, strlen(doc), b, &f, err, sizeof err),
	    MC_ECONFIG);
	assert_string_equal(err,
			    "fleet.json:1:132: routes[0].on_failure: \"fail_open\" forwards to "
			    "the region's fallback path and needs region.http");
	mc_cell_conf_free(b);
}

static void test_stage_list(void **state)
{
	(void)state;
	char err[256];
	mc_rollout_stage *s = NULL;
	size_t n = 0;
	assert_int_equal(mc_rollout_stages_parse("lax,sfo+sea", &s, &n, err, sizeof err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(s[0].ncells, 1);
	assert_string_equal(s[0].cells[0], "lax");
	assert_int_equal(s[1].ncells, 2);
	assert_string_equal(s[1].cells[1], "sea");
	mc_rollout_stages_free(s, n);
	static const struct {
		const char *spec, *err;
	} wrong[] = {
	    {"", "expected 1..256 stages like \"lax,sfo+sea\", got \"\""},
	    {"lax,,sfo", "stage 2 \"\": empty stage"},
	    {"lax,sfo+lax", "stage 2 \"sfo+lax\": cell in two stages (\"lax\")"},
	    {"lax+lax", "stage 1 \"lax+lax\": cell named twice (\"lax\")"},
	    {"LAX", "stage 1 \"LAX\": expected cell names matching [a-z0-9-]{1,31} joined by '+' "
		    "(\"LAX\")"},
	};
	for (size_t i = 0; i < MC_ARRAY_LEN(wrong); i++) {
		assert_int_equal(mc_rollout_stages_parse(wrong[i].spec, &s, &n, err, sizeof err),
				 MC_EINVAL);
		assert_string_equal(err, wrong[i].err);
		assert_null(s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_example),	      cmocka_unit_test(test_bad_documents),
	    cmocka_unit_test(test_secret_not_echoed), cmocka_unit_test(test_size_and_cell_context),
	    cmocka_unit_test(test_stage_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
