/* Unit tests for src/config/: the example files parse to the documented values,
 * every bad document gives its exact one-line error (file:line:col: path:
 * message), and the position index finds keys and values. */
#include <errno.h>
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
#include "config/config_int.h"

typedef struct bad_case {
	const char *doc;
	const char *want;
} bad_case;

/* A valid cell document is L1..L4 plus routes; cases replace one line. */
#define L1 "{\"cell\": \"lax\",\n"
#define L2 " \"listen\": {\"http\": \"127.0.0.1:8080\", \"admin\": \"127.0.0.1:9090\"},\n"
#define L3 " \"data_dir\": \"/tmp/lax\",\n"
#define L4 " \"region\": {\"repl\": \"127.0.0.1:7100\"},\n"
#define HEAD L1 L2 L3 L4
#define KV_ROUTE "{\"name\": \"kv\", \"prefix\": \"/v1/kv/\", \"kind\": \"kv\"}"
#define ROUTES " \"routes\": [" KV_ROUTE "]}"
#define POOLS " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"]}},\n"

static const bad_case cell_bad[] = {
    /* wrong types */
    {L1 " \"listen\": {\"http\": 42, \"admin\": \"127.0.0.1:9090\"},\n" L3 L4 ROUTES,
     "cell.json:2:21: listen.http: expected \"host:port\", got 42"},
    {HEAD " \"state\": [],\n" ROUTES, "cell.json:5:11: state: expected an object, got an array"},
    {L1 L2 " \"data_dir\": true,\n" L4 ROUTES,
     "cell.json:3:14: data_dir: expected a non-empty path of at most 4096 bytes, got true"},
    {L1 L2 " \"data_dir\": \"\",\n" L4 ROUTES,
     "cell.json:3:14: data_dir: expected a non-empty path of at most 4096 bytes, got \"\""},
    {HEAD " \"log\": {\"level\": null},\n" ROUTES,
     "cell.json:5:19: log.level: expected one of \"debug\", \"info\", \"warn\", \"error\", got "
     "null"},
    /* host:port */
    {L1 " \"listen\": {\"http\": \"127.0.0.1\", \"admin\": \"127.0.0.1:9090\"},\n" L3 L4 ROUTES,
     "cell.json:2:21: listen.http: expected \"host:port\", got \"127.0.0.1\""},
    {L1 L2 L3 " \"region\": {\"repl\": \"example.com:7100\"},\n" ROUTES,
     "cell.json:4:21: region.repl: expected \"host:port\", got \"example.com:7100\""},
    {L1 L2 L3 " \"region\": {\"repl\": \"127.0.0.1:0\"},\n" ROUTES,
     "cell.json:4:21: region.repl: expected \"host:port\" with a port in 1..65535, got "
     "\"127.0.0.1:0\""},
    {L1 " \"listen\": {\"http\": \"127.0.0.1:70000\", \"admin\": \"[::1]:9090\"},\n" L3 L4 ROUTES,
     "cell.json:2:21: listen.http: expected \"host:port\", got \"127.0.0.1:70000\""},
    {L1 L2 L3 " \"region\": {\"repl\": \"[::1]:7100\", \"http\": \"[fe80::zz]:80\"},\n" ROUTES,
     "cell.json:4:43: region.http: expected \"host:port\", got \"[fe80::zz]:80\""},
    {L1 " \"listen\": {\"http\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1\", "
	"\"admin\": \"127.0.0.1:9090\"},\n" L3 L4 ROUTES,
     "cell.json:2:21: listen.http: expected \"host:port\", got "
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\""},
    /* integers */
    {HEAD " \"limits\": {\"max_headers\": 7},\n" ROUTES,
     "cell.json:5:28: limits.max_headers: expected an integer in 8..1024, got 7"},
    {HEAD " \"limits\": {\"max_body_bytes\": -1},\n" ROUTES,
     "cell.json:5:31: limits.max_body_bytes: expected an integer in 0..67108864, got -1"},
    {HEAD " \"state\": {\"max_batch\": 1.5},\n" ROUTES,
     "cell.json:5:25: state.max_batch: expected an integer in 1..100000, got 1.5"},
    {HEAD " \"state\": {\"map_size_mb\": 2000000},\n" ROUTES,
     "cell.json:5:27: state.map_size_mb: expected an integer in 16..1048576, got 2000000"},
    {HEAD " \"replication\": {\"heartbeat_ms\": \"1000\"},\n" ROUTES,
     "cell.json:5:34: replication.heartbeat_ms: expected an integer in 10..60000, got \"1000\""},
    {HEAD " \"replication\": {\"batch_max_entries\": 10.0},\n" ROUTES,
     "cell.json:5:39: replication.batch_max_entries: expected an integer in 1..65536, got 10.0"},
    {HEAD " \"replication\": {\"heartbeat_ms\": 1000, \"dead_after_ms\": 1000},\n" ROUTES,
     "cell.json:5:57: replication.dead_after_ms: expected an integer in 1001..600000 (more than "
     "heartbeat_ms), got 1000"},
    {HEAD " \"replication\": {\"heartbeat_ms\": 6000},\n" ROUTES,
     "cell.json:5:34: replication.heartbeat_ms: expected an integer in 10..4999 (less than "
     "dead_after_ms, default 5000), got 6000"},
    /* unknown keys */
    {HEAD " \"pool\": {},\n" ROUTES,
     "cell.json:5:2: (root): unknown key \"pool\" (did you mean \"pools\"?)"},
    {HEAD " \"zzzzz\": 1,\n" ROUTES, "cell.json:5:2: (root): unknown key \"zzzzz\""},
    {L1 " \"listen\": {\"htp\": \"127.0.0.1:8080\", \"admin\": \"127.0.0.1:9090\"},\n" L3 L4 ROUTES,
     "cell.json:2:13: listen: unknown key \"htp\" (did you mean \"http\"?)"},
    {HEAD " \"routes\": [" KV_ROUTE
	  ",\n  {\"name\": \"b\", \"perfix\": \"/b\", \"kind\": \"kv\"}]}",
     "cell.json:6:17: routes[1]: unknown key \"perfix\" (did you mean \"prefix\"?)"},
    {L1 " \"listen\": {\"\\u0068tp\": \"127.0.0.1:8080\", \"admin\": \"127.0.0.1:9090\"},\n" L3 L4
	 ROUTES,
     "cell.json:2:13: listen: unknown key \"htp\" (did you mean \"http\"?)"},
    /* missing required keys */
    {L1 L2 L3 ROUTES, "cell.json:1:1: (root): missing required key \"region\""},
    {L1 " \"listen\": {\"http\": \"127.0.0.1:8080\"},\n" L3 L4 ROUTES,
     "cell.json:2:12: listen: missing required key \"admin\""},
    {HEAD " \"routes\": [{\"name\": \"kv\", \"kind\": \"kv\"}]}",
     "cell.json:5:13: routes[0]: missing required key \"prefix\""},
    /* duplicate keys */
    {L1 " \"listen\": {\"http\": \"127.0.0.1:8080\", \"http\": \"127.0.0.1:9090\"},\n" L3 L4 ROUTES,
     "cell.json:2:39: listen: duplicate key \"http\""},
    {L1 " \"cell\": \"sfo\",\n" L2 L3 L4 ROUTES, "cell.json:2:2: (root): duplicate key \"cell\""},
    {L1 " \"listen\": {\"http\": \"127.0.0.1:8080\", \"h\\u0074tp\": \"127.0.0.1:9090\"},\n" L3 L4
	 ROUTES,
     "cell.json:2:39: listen: duplicate key \"http\""},
    /* pools and routes */
    {HEAD POOLS " \"routes\": [" KV_ROUTE ",\n  {\"name\": \"api\", \"prefix\": \"/\", \"kind\": "
		"\"proxy\", \"pool\": \"api\"}]}",
     "cell.json:7:59: routes[1].pool: unknown pool \"api\" (pools: app)"},
    {HEAD " \"routes\": [{\"name\": \"api\", \"prefix\": \"/\", \"kind\": \"proxy\", \"pool\": "
	  "\"api\"}]}",
     "cell.json:5:69: routes[0].pool: unknown pool \"api\" (no pools are defined)"},
    {HEAD POOLS " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/v1/kv/\", \"kind\": \"kv\", "
		"\"pool\": \"app\"}]}",
     "cell.json:6:71: routes[0].pool: a \"kv\" route takes no pool, got \"app\""},
    {HEAD POOLS " \"routes\": [{\"name\": \"app\", \"prefix\": \"/\", \"kind\": \"proxy\"}]}",
     "cell.json:6:13: routes[0]: missing required key \"pool\" (a \"proxy\" route needs one)"},
    {HEAD POOLS " \"routes\": [" KV_ROUTE ",\n  {\"name\": \"kv\", \"prefix\": \"/\", \"kind\": "
		"\"proxy\", \"pool\": \"app\"}]}",
     "cell.json:7:12: routes[1].name: duplicate route name \"kv\" (also routes[0])"},
    {HEAD POOLS " \"routes\": [" KV_ROUTE ",\n  {\"name\": \"app\", \"prefix\": \"/v1/kv/\", "
		"\"kind\": \"proxy\", \"pool\": \"app\"}]}",
     "cell.json:7:29: routes[1].prefix: duplicate prefix \"/v1/kv/\" (also routes[0])"},
    {HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/v1/kv/\", \"kind\": \"cdn\"}]}",
     "cell.json:5:57: routes[0].kind: expected one of \"proxy\", \"kv\", \"flags\", \"cache\", got \"cdn\""},
    {HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/v1/kv/\", \"kind\": \"cache\"}]}",
     "cell.json:5:57: routes[0].kind: a \"cache\" route needs region.http (the region's shield), "
     "which is not set"},
    {HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"v1/kv/\", \"kind\": \"kv\"}]}",
     "cell.json:5:38: routes[0].prefix: expected a path prefix starting with \"/\", got "
     "\"v1/kv/\""},
    {HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/v1 kv/\", \"kind\": \"kv\"}]}",
     "cell.json:5:38: routes[0].prefix: expected a path prefix without whitespace or control "
     "characters, got \"/v1 kv/\""},
    {HEAD " \"routes\": [{\"name\": \"K V\", \"prefix\": \"/\", \"kind\": \"kv\"}]}",
     "cell.json:5:22: routes[0].name: expected a name matching [a-z0-9_-]{1,31}, got \"K V\""},
    {HEAD " \"routes\": []}", "cell.json:5:12: routes: expected 1..256 routes, got 0"},
    {HEAD " \"routes\": {}}", "cell.json:5:12: routes: expected an array of routes, got an object"},
    {HEAD " \"pools\": {\"App\": {\"workers\": [\"127.0.0.1:9001\"]}},\n" ROUTES,
     "cell.json:5:12: pools: invalid pool name \"App\" (expected [a-z0-9_-]{1,31})"},
    {HEAD " \"pools\": {\"app\": {\"workers\": []}},\n" ROUTES,
     "cell.json:5:31: pools.app.workers: expected 1..64 workers, got 0"},
    {HEAD " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\", \"127.0.0.1:0\"]}},\n" ROUTES,
     "cell.json:5:50: pools.app.workers[1]: expected \"host:port\" with a port in 1..65535, got "
     "\"127.0.0.1:0\""},
    {HEAD
     " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\", \"127.0.0.1:9001\"]}},\n" ROUTES,
     "cell.json:5:50: pools.app.workers[1]: duplicate worker \"127.0.0.1:9001\" (also workers[0])"},
    {HEAD " \"pools\": {\"app\": {\"workers\": [\"127.0.0.1:9001\"], \"max_conns\": 0}},\n" ROUTES,
     "cell.json:5:64: pools.app.max_conns: expected an integer in 1..10000, got 0"},
    /* enums */
    {HEAD " \"state\": {\"durability\": \"always\"},\n" ROUTES,
     "cell.json:5:26: state.durability: expected \"fsync\" or \"none\", got \"always\""},
    {HEAD " \"log\": {\"level\": \"verbose\"},\n" ROUTES,
     "cell.json:5:19: log.level: expected one of \"debug\", \"info\", \"warn\", \"error\", got "
     "\"verbose\""},
    {HEAD " \"log\": {\"format\": \"xml\"},\n" ROUTES,
     "cell.json:5:20: log.format: expected \"text\" or \"json\", got \"xml\""},
    /* names */
    {"{\"cell\": \"LAX\",\n" L2 L3 L4 ROUTES,
     "cell.json:1:10: cell: expected a name matching [a-z0-9-]{1,31}, got \"LAX\""},
    {"{\"cell\": \"abcdefghijklmnopqrstuvwxyz-012345\",\n" L2 L3 L4 ROUTES,
     "cell.json:1:10: cell: expected a name matching [a-z0-9-]{1,31}, got "
     "\"abcdefghijklmnopqrstuvwxyz-012345\""},
    {"{\"cell\": \"la_x\",\n" L2 L3 L4 ROUTES,
     "cell.json:1:10: cell: expected a name matching [a-z0-9-]{1,31}, got \"la_x\""},
    /* documents */
    {HEAD " \"routes\": [" KV_ROUTE, "cell.json:5:61: invalid JSON: ']' expected near end of file"},
    {L1 L2, "cell.json:3:1: invalid JSON: string or '}' expected near end of file"},
    {"", "cell.json: empty document (expected a JSON object)"},
    {" \n\t", "cell.json: empty document (expected a JSON object)"},
    {"[1, 2]", "cell.json:1:1: (root): expected an object, got an array"},
    {"42", "cell.json:1:1: (root): expected an object, got 42"},
    {"{} x", "cell.json:1:4: invalid JSON: end of file expected near 'x'"},
    /* columns count characters, not bytes */
    {"{\"data_dir\": \"/tmp/\xc3\xa9t\xc3\xa9\", \"cellz\": 7}",
     "cell.json:1:26: (root): unknown key \"cellz\" (did you mean \"cell\"?)"},
};

static const bad_case region_bad[] = {
    {"{\"region\": \"US-west\", \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"}, "
     "\"data_dir\": \"/r\"}",
     "region.json:1:12: region: expected a name matching [a-z0-9-]{1,31}, got \"US-west\""},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\"},\n \"data_dir\": \"/r\"}",
     "region.json:2:12: listen: missing required key \"repl\""},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"},\n"
     " \"data_dir\": \"/r\",\n \"cells\": [\"lax\", \"sfo\", \"lax\"]}",
     "region.json:4:26: cells[2]: duplicate cell \"lax\" (also cells[0])"},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"},\n"
     " \"data_dir\": \"/r\",\n \"cells\": [\"lax\", \"SFO\"]}",
     "region.json:4:19: cells[1]: expected a cell name matching [a-z0-9-]{1,31}, got \"SFO\""},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"},\n"
     " \"data_dir\": \"/r\",\n \"cells\": \"lax\"}",
     "region.json:4:11: cells: expected an array of cell names, got \"lax\""},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"},\n"
     " \"data_dir\": \"/r\",\n \"cell\": [\"lax\"]}",
     "region.json:4:2: (root): unknown key \"cell\" (did you mean \"cells\"?)"},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"},\n"
     " \"data_dir\": \"/r\",\n \"routes\": []}",
     "region.json:4:2: (root): unknown key \"routes\""},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"},\n"
     " \"data_dir\": \"/r\",\n \"replication\": {\"heartbeat_ms\": 5, \"dead_after_ms\": 100}}",
     "region.json:4:34: replication.heartbeat_ms: expected an integer in 10..60000, got 5"},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"127.0.0.1:0\"}}",
     "region.json:1:1: (root): missing required key \"data_dir\""},
    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
     "\"localhost\"},\n"
     " \"data_dir\": \"/r\"}",
     "region.json:2:44: listen.repl: expected \"host:port\", got \"localhost\""},
};

static void run_table(const bad_case *t, size_t n, bool region, const char *label)
{
	size_t failures = 0;
	for (size_t i = 0; i < n; i++) {
		char err[MC_CONFIG_ERR_MAX];
		int rc;
		memset(err, 'x', sizeof err);
		if (region) {
			mc_region_conf *c = (mc_region_conf *)&err; /* must be reset to NULL */
			rc = mc_region_conf_parse(label, t[i].doc, strlen(t[i].doc), &c, err,
						  sizeof err);
			assert_null(c);
		} else {
			mc_cell_conf *c = (mc_cell_conf *)&err;
			rc = mc_cell_conf_parse(label, t[i].doc, strlen(t[i].doc), &c, err,
						sizeof err);
			assert_null(c);
		}
		assert_int_equal(rc, MC_ECONFIG);
		if (strcmp(err, t[i].want) != 0) {
			print_message("case %zu:\n  got  %s\n  want %s\n", i, err, t[i].want);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void test_cell_bad_documents(void **state)
{
	(void)state;
	run_table(cell_bad, MC_ARRAY_LEN(cell_bad), false, "cell.json");
}

static void test_region_bad_documents(void **state)
{
	(void)state;
	run_table(region_bad, MC_ARRAY_LEN(region_bad), true, "region.json");
}

/* docs/examples/<name>, from the repository root (make unit) or next to this file. */
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

static void test_cell_example(void **state)
{
	(void)state;
	char path[512], err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	example("cell-lax.json", path, sizeof path);
	int rc = mc_cell_conf_load(path, &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(c);
	assert_string_equal(c->path, path);
	assert_string_equal(c->cell, "lax");
	assert_string_equal(c->listen_http, "127.0.0.1:8080");
	assert_string_equal(c->listen_admin, "127.0.0.1:9090");
	assert_string_equal(c->data_dir, "/var/lib/metrocell/lax");
	assert_string_equal(c->region_repl, "127.0.0.1:7100");
	assert_string_equal(c->region_http, "127.0.0.1:7080");
	assert_int_equal(c->log.level, MC_LOG_INFO);
	assert_int_equal(c->log.json, 0);
	assert_int_equal(c->state.map_size_mb, 4096);
	assert_int_equal(c->state.durable, 1);
	assert_int_equal(c->state.max_batch, 4096);
	assert_int_equal(c->state.max_key_bytes, 256);
	assert_int_equal(c->state.max_value_bytes, 1048576);
	assert_int_equal(c->limits.max_header_bytes, 16384);
	assert_int_equal(c->limits.max_headers, 64);
	assert_int_equal(c->limits.max_body_bytes, 1048576);
	assert_int_equal(c->limits.idle_timeout_ms, 60000);
	assert_int_equal(c->limits.request_timeout_ms, 30000);
	assert_int_equal(c->limits.max_connections, 10000);
	assert_int_equal(c->repl.batch_max_entries, 1024);
	assert_int_equal(c->repl.heartbeat_ms, 1000);
	assert_int_equal(c->repl.dead_after_ms, 5000);
	assert_int_equal(c->npools, 1);
	assert_string_equal(c->pools[0].name, "app");
	assert_int_equal(c->pools[0].nworkers, 2);
	assert_string_equal(c->pools[0].workers[0], "127.0.0.1:9001");
	assert_string_equal(c->pools[0].workers[1], "127.0.0.1:9002");
	assert_int_equal(c->pools[0].connect_timeout_ms, 1000);
	assert_int_equal(c->pools[0].timeout_ms, 10000);
	assert_int_equal(c->pools[0].max_conns, 64);
	assert_int_equal(c->nroutes, 2);
	assert_string_equal(c->routes[0].name, "kv");
	assert_string_equal(c->routes[0].prefix, "/v1/kv/");
	assert_int_equal(c->routes[0].kind, MC_ROUTE_KV);
	assert_string_equal(c->routes[1].name, "app");
	assert_string_equal(c->routes[1].prefix, "/");
	assert_int_equal(c->routes[1].kind, MC_ROUTE_PROXY);
	assert_int_equal(c->routes[1].pool, 0);
	assert_int_equal(c->classes.n, 5); /* the four rules and the default */
	assert_int_equal(mc_class_rules_match(&c->classes, "pii:1", 5)->cls, MC_SCLASS_LOCAL);
	assert_int_equal(mc_class_rules_match(&c->classes, "pay:1", 5)->ack_timeout_ms, 2000);
	assert_true(c->repl.backlog_max_bytes == 1073741824);
	assert_int_equal(c->state.max_mget_keys, 100);
	mc_cell_conf_free(c);
}

static void test_region_example(void **state)
{
	(void)state;
	char path[512], err[MC_CONFIG_ERR_MAX];
	mc_region_conf *c = NULL;
	example("region.json", path, sizeof path);
	int rc = mc_region_conf_load(path, &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(c->path, path);
	assert_string_equal(c->region, "us-west");
	assert_string_equal(c->listen_http, "127.0.0.1:7080");
	assert_string_equal(c->listen_repl, "127.0.0.1:7100");
	assert_string_equal(c->data_dir, "/var/lib/metrocell/region");
	assert_int_equal(c->ncells, 2);
	assert_string_equal(c->cells[0], "lax");
	assert_string_equal(c->cells[1], "sfo");
	assert_int_equal(c->log.level, MC_LOG_INFO);
	assert_int_equal(c->log.json, 1);
	assert_int_equal(c->state.map_size_mb, 8192);
	assert_int_equal(c->state.durable, 1);
	assert_int_equal(c->state.max_batch, 4096); /* default */
	assert_int_equal(c->limits.max_connections, 20000);
	assert_int_equal(c->limits.max_headers, 64); /* default */
	assert_int_equal(c->repl.dead_after_ms, 5000);
	mc_region_conf_free(c);
}

/* Optional sections absent: every default from config.h; listen port 0 allowed. */
static void test_cell_defaults(void **state)
{
	(void)state;
	const char *doc = "{\"cell\": \"a-1\", \"listen\": {\"http\": \"127.0.0.1:0\", \"admin\": "
			  "\"localhost:0\"}, \"data_dir\": \"d\", \"region\": {\"repl\": "
			  "\"[::1]:7100\"}, \"routes\": [{\"name\": \"k_v\", \"prefix\": \"/\", "
			  "\"kind\": \"kv\"}]}";
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	assert_int_equal(mc_cell_conf_parse("mem", doc, strlen(doc), &c, err, sizeof err), 0);
	assert_string_equal(c->path, "mem");
	assert_string_equal(c->listen_http, "127.0.0.1:0");
	assert_string_equal(c->listen_admin, "localhost:0");
	assert_string_equal(c->region_repl, "[::1]:7100");
	assert_null(c->region_http);
	assert_int_equal(c->log.level, MC_LOG_INFO);
	assert_int_equal(c->log.json, 0);
	assert_int_equal(c->state.map_size_mb, 4096);
	assert_int_equal(c->state.durable, 1);
	assert_int_equal(c->state.max_batch, 4096);
	assert_int_equal(c->state.max_key_bytes, 256);
	assert_int_equal(c->state.max_value_bytes, 1048576);
	assert_int_equal(c->limits.max_header_bytes, 16384);
	assert_int_equal(c->limits.max_headers, 64);
	assert_int_equal(c->limits.max_body_bytes, 1048576);
	assert_int_equal(c->limits.idle_timeout_ms, 60000);
	assert_int_equal(c->limits.request_timeout_ms, 30000);
	assert_int_equal(c->limits.max_connections, 10000);
	assert_int_equal(c->repl.batch_max_entries, 1024);
	assert_int_equal(c->repl.heartbeat_ms, 1000);
	assert_int_equal(c->repl.dead_after_ms, 5000);
	assert_int_equal(c->npools, 0);
	assert_null(c->pools);
	assert_int_equal(c->nroutes, 1);
	mc_cell_conf_free(c);
}

/* Range edges are accepted; pool indexes follow document order. */
static void test_cell_edges(void **state)
{
	(void)state;
	const char *doc =
	    "{\"cell\": \"abcdefghijklmnopqrstuvwxyz-0123\", \"listen\": {\"admin\": "
	    "\"127.0.0.1:65535\", \"http\": \"[::]:1\"}, \"data_dir\": \"/d\", \"region\": "
	    "{\"http\": \"10.0.0.1:1\", \"repl\": \"10.0.0.2:65535\"}, \"log\": {\"level\": "
	    "\"debug\", \"format\": \"json\"}, \"state\": {\"map_size_mb\": 16, \"durability\": "
	    "\"none\", \"max_batch\": 100000, \"max_key_bytes\": 1, \"max_value_bytes\": "
	    "16777216}, \"limits\": {\"max_header_bytes\": 1024, \"max_headers\": 1024, "
	    "\"max_body_bytes\": 0, \"idle_timeout_ms\": 3600000, \"request_timeout_ms\": 100, "
	    "\"max_connections\": 1000000}, \"replication\": {\"batch_max_entries\": 65536, "
	    "\"heartbeat_ms\": 60000, \"dead_after_ms\": 60001}, \"pools\": {\"z\": {\"workers\": "
	    "[\"127.0.0.1:1\"], \"connect_timeout_ms\": 60000, \"timeout_ms\": 600000, "
	    "\"max_conns\": 10000}, \"a_b\": {\"workers\": [\"127.0.0.1:2\"]}}, \"routes\": "
	    "[{\"kind\": \"proxy\", \"pool\": \"a_b\", \"prefix\": \"/a\", \"name\": \"r1\"}, "
	    "{\"name\": \"r2\", \"prefix\": \"/b\", \"kind\": \"proxy\", \"pool\": \"z\"}]}";
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	int rc = mc_cell_conf_parse("edge.json", doc, strlen(doc), &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(c->log.level, MC_LOG_DEBUG);
	assert_int_equal(c->log.json, 1);
	assert_int_equal(c->state.durable, 0);
	assert_int_equal(c->state.map_size_mb, 16);
	assert_int_equal(c->limits.max_body_bytes, 0);
	assert_int_equal(c->repl.dead_after_ms, 60001);
	assert_int_equal(c->npools, 2);
	assert_string_equal(c->pools[0].name, "z");
	assert_int_equal(c->pools[0].max_conns, 10000);
	assert_string_equal(c->pools[1].name, "a_b");
	assert_int_equal(c->pools[1].max_conns, 64);
	assert_int_equal(c->routes[0].pool, 1);
	assert_int_equal(c->routes[1].pool, 0);
	mc_cell_conf_free(c);
}

static void test_prefix_length(void **state)
{
	(void)state;
	char prefix[300], doc[1024], want[MC_CONFIG_ERR_MAX], err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	prefix[0] = '/';
	memset(prefix + 1, 'p', 255);
	prefix[256] = '\0'; /* 256 bytes: the maximum */
	snprintf(doc, sizeof doc,
		 HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"%s\", "
		      "\"kind\": \"kv\"}]}",
		 prefix);
	assert_int_equal(mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, err, sizeof err), 0);
	assert_int_equal(strlen(c->routes[0].prefix), 256);
	mc_cell_conf_free(c);

	strcat(prefix, "p"); /* 257 bytes */
	snprintf(doc, sizeof doc,
		 HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"%s\", "
		      "\"kind\": \"kv\"}]}",
		 prefix);
	snprintf(want, sizeof want,
		 "cell.json:5:38: routes[0].prefix: expected a path prefix of at most 256 bytes, "
		 "got \"/%.39s...\" (257 bytes)",
		 prefix + 1);
	assert_int_equal(mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, err, sizeof err),
			 MC_ECONFIG);
	assert_null(c);
	assert_string_equal(err, want);
}

static void test_routes_max(void **state)
{
	(void)state;
	static char doc[64 * 1024];
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	for (int n = 256; n <= 257; n++) {
		size_t at = (size_t)snprintf(doc, sizeof doc, HEAD " \"routes\": [");
		for (int i = 0; i < n; i++)
			at +=
			    (size_t)snprintf(doc + at, sizeof doc - at,
					     "%s{\"name\": \"r%d\", \"prefix\": \"/%d\", \"kind\": "
					     "\"kv\"}",
					     i ? "," : "", i, i);
		snprintf(doc + at, sizeof doc - at, "]}");
		int rc = mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, err, sizeof err);
		if (n == 256) {
			assert_int_equal(rc, 0);
			assert_int_equal(c->nroutes, 256);
			assert_string_equal(c->routes[255].prefix, "/255");
			mc_cell_conf_free(c);
		} else {
			assert_int_equal(rc, MC_ECONFIG);
			assert_string_equal(
			    err, "cell.json:5:12: routes: expected 1..256 routes, got 257");
		}
	}
}

/* Found by the config fuzzer: jansson quotes raw input, newlines included; the
 * message must stay one line. */
static void test_error_is_one_line(void **state)
{
	(void)state;
	const char doc[] = "{\"cell\": \"a\\\n\"}";
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	assert_int_equal(mc_cell_conf_parse("cell.json", doc, sizeof doc - 1, &c, err, sizeof err),
			 MC_ECONFIG);
	assert_null(c);
	assert_null(strchr(err, '\n'));
	assert_string_equal(err, "cell.json:2:1: invalid JSON: invalid escape near '\"a\\?'");
}

static void test_load_errors(void **state)
{
	(void)state;
	char err[MC_CONFIG_ERR_MAX], want[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = (mc_cell_conf *)err;
	mc_region_conf *r = (mc_region_conf *)err;
	const char *missing = "/nonexistent/metrocell/cell.json";

	assert_int_equal(mc_cell_conf_load(missing, &c, err, sizeof err), -ENOENT);
	assert_null(c);
	snprintf(want, sizeof want, "%s: cannot open: %s", missing, strerror(ENOENT));
	assert_string_equal(err, want);
	assert_int_equal(mc_region_conf_load(missing, &r, err, sizeof err), -ENOENT);
	assert_null(r);
	assert_string_equal(err, want);

	/* a directory opens but cannot be read */
	assert_int_equal(mc_cell_conf_load("/", &c, err, sizeof err), -EISDIR);
	snprintf(want, sizeof want, "/: cannot read: %s", strerror(EISDIR));
	assert_string_equal(err, want);

	/* an empty file and a file over the limit */
	char tmpl[] = "/tmp/mc_test_config_XXXXXX";
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	assert_int_equal(mc_cell_conf_load(tmpl, &c, err, sizeof err), MC_ECONFIG);
	snprintf(want, sizeof want, "%s: empty document (expected a JSON object)", tmpl);
	assert_string_equal(err, want);
	assert_int_equal(ftruncate(fd, (off_t)MC_CONFIG_MAX_BYTES + 1), 0);
	assert_int_equal(mc_cell_conf_load(tmpl, &c, err, sizeof err), MC_ECONFIG);
	snprintf(want, sizeof want, "%s: file is larger than %u bytes", tmpl, MC_CONFIG_MAX_BYTES);
	assert_string_equal(err, want);
	close(fd);
	unlink(tmpl);

	/* the same limit on a buffer */
	char *big = calloc(1, (size_t)MC_CONFIG_MAX_BYTES + 1);
	assert_non_null(big);
	assert_int_equal(mc_cell_conf_parse("big.json", big, (size_t)MC_CONFIG_MAX_BYTES + 1, &c,
					    err, sizeof err),
			 MC_ECONFIG);
	assert_string_equal(err, "big.json: document is larger than 1048576 bytes");
	free(big);
}

/* The message is truncated to errcap; err may be NULL; free accepts NULL. */
static void test_err_buffer(void **state)
{
	(void)state;
	const char *doc = "{\"cell\": 1}";
	char err[16];
	mc_cell_conf *c = NULL;
	assert_int_equal(mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, err, sizeof err),
			 MC_ECONFIG);
	assert_string_equal(err, "cell.json:1:1: ");
	assert_int_equal(mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, NULL, 0),
			 MC_ECONFIG);
	mc_region_conf *r = NULL;
	assert_int_equal(mc_region_conf_parse(NULL, doc, strlen(doc), &r, NULL, sizeof err),
			 MC_ECONFIG);
	assert_null(r);
	mc_cell_conf_free(NULL);
	mc_region_conf_free(NULL);
}

static void test_jpos(void **state)
{
	(void)state;
	const char *t =
	    "{\n  \"a\\u00e9\": [1, {\"b\": \"x\"}, [2, 3]],\n  \"c\\\"d\": {\"\xc3\xa9\": 42}\n}";
	size_t n = strlen(t);
	mc_jpos p;
	mc_jseg path[3];

	assert_int_equal(mc_config_jpos_locate(t, n, NULL, 0, false, &p), 0);
	assert_int_equal(p.line, 1);
	assert_int_equal(p.col, 1);

	path[0] = (mc_jseg){"a\xc3\xa9", 0};
	assert_int_equal(mc_config_jpos_locate(t, n, path, 1, true, &p), 0);
	assert_int_equal(p.line, 2);
	assert_int_equal(p.col, 3);
	assert_int_equal(mc_config_jpos_locate(t, n, path, 1, false, &p), 0);
	assert_int_equal(p.col, 14);

	path[1] = (mc_jseg){NULL, 1};
	path[2] = (mc_jseg){"b", 0};
	assert_int_equal(mc_config_jpos_locate(t, n, path, 3, false, &p), 0);
	assert_int_equal(p.col, 24);
	path[1] = (mc_jseg){NULL, 2};
	path[2] = (mc_jseg){NULL, 1};
	assert_int_equal(mc_config_jpos_locate(t, n, path, 3, false, &p), 0);
	assert_int_equal(p.col, 34);
	path[2] = (mc_jseg){NULL, 2};
	assert_int_equal(mc_config_jpos_locate(t, n, path, 3, false, &p), MC_ENOTFOUND);

	path[0] = (mc_jseg){"c\"d", 0};
	path[1] = (mc_jseg){"\xc3\xa9", 0};
	assert_int_equal(mc_config_jpos_locate(t, n, path, 2, false, &p), 0);
	assert_int_equal(p.line, 3);
	assert_int_equal(p.col, 17); /* the two-byte key counts as one column */
	path[1] = (mc_jseg){"e", 0};
	assert_int_equal(mc_config_jpos_locate(t, n, path, 2, false, &p), MC_ENOTFOUND);

	/* truncated text: the search stops without reading past len */
	assert_int_equal(mc_config_jpos_locate(t, 10, path, 2, false, &p), MC_ENOTFOUND);

	/* the key that ends at a byte offset, as jansson reports duplicates */
	const char *d = "[{\"x\": {\"k\": 1, \"k\": 2}}]";
	char where[64], key[16];
	size_t off = (size_t)(strstr(d, ", \"k\"") - d) + 5;
	assert_int_equal(mc_config_jpos_key_ending_at(d, strlen(d), off, &p, where, sizeof where,
						      key, sizeof key),
			 0);
	assert_string_equal(where, "[0].x");
	assert_string_equal(key, "k");
	assert_int_equal(p.col, 17);
	assert_int_equal(mc_config_jpos_key_ending_at(d, strlen(d), off + 1, &p, where,
						      sizeof where, key, sizeof key),
			 MC_ENOTFOUND);
}

/* ---- edge keys: quotas, body limits, flags, locality, hardening limits ---------- */

#define QROUTE(q)                                                                                  \
	HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/\", \"kind\": \"kv\", \"quota\": " q  \
	     "}]}"
#define QUOTA_OK "{\"name\": \"q\", \"rate\": 1, \"burst\": 1, \"key\": \"ip\"}"

static const bad_case cell_edge_bad[] = {
    {QROUTE("{\"name\": \"q\", \"rate\": 1, \"burst\": 1, \"key\": \"subject\"}"),
     "cell.json:5:110: routes[0].quota.key: key \"subject\" needs edge auth, not available yet "
     "(use \"ip\" or \"header:NAME\")"},
    {QROUTE("{\"name\": \"q\", \"rate\": 1, \"burst\": 1, \"key\": \"cookie\"}"),
     "cell.json:5:110: routes[0].quota.key: expected \"ip\" or \"header:NAME\", got \"cookie\""},
    {QROUTE("{\"name\": \"q\", \"rate\": 1, \"burst\": 1, \"key\": \"header:X Y\"}"),
     "cell.json:5:110: routes[0].quota.key: expected \"header:NAME\" with NAME a header field "
     "name of 1..64 token characters, got \"header:X Y\""},
    {QROUTE("{\"name\": \"q\", \"rate\": 0, \"burst\": 1, \"key\": \"ip\"}"),
     "cell.json:5:88: routes[0].quota.rate: expected a number of tokens per second in (0, "
     "1000000], got 0"},
    {QROUTE("{\"name\": \"q\", \"rate\": \"5\", \"burst\": 1, \"key\": \"ip\"}"),
     "cell.json:5:88: routes[0].quota.rate: expected a number of tokens per second in (0, "
     "1000000], got \"5\""},
    {QROUTE("{\"name\": \"q\", \"rate\": 1, \"burst\": 1.5, \"key\": \"ip\"}"),
     "cell.json:5:100: routes[0].quota.burst: expected an integer in 1..1000000, got 1.5"},
    {QROUTE("{\"name\": \"q\", \"rate\": 1, \"burst\": 1}"),
     "cell.json:5:66: routes[0].quota: missing required key \"key\""},
    {QROUTE("{\"name\": \"q\", \"ratee\": 1, \"burst\": 1, \"key\": \"ip\"}"),
     "cell.json:5:80: routes[0].quota: unknown key \"ratee\" (did you mean \"rate\"?)"},
    {QROUTE("{\"name\": \"Q\", \"rate\": 1, \"burst\": 1, \"key\": \"ip\"}"),
     "cell.json:5:75: routes[0].quota.name: expected a name matching [a-z0-9_-]{1,31}, got "
     "\"Q\""},
    {QROUTE("{\"name\": \"q\", \"rate\": 1, \"burst\": 1, \"key\": \"ip\", \"max_keys\": 0}"),
     "cell.json:5:128: routes[0].quota.max_keys: expected an integer in 1..10000000, got 0"},
    {QROUTE("[]"), "cell.json:5:66: routes[0].quota: expected an object, got an array"},
    {HEAD " \"routes\": [{\"name\": \"a\", \"prefix\": \"/a\", \"kind\": \"kv\", \"quota\": " QUOTA_OK
	  "},\n  {\"name\": \"b\", \"prefix\": \"/b\", \"kind\": \"kv\", \"quota\": {\"name\": "
	  "\"q\", \"rate\": 1, \"burst\": 2, \"key\": \"ip\"}}]}",
     "cell.json:6:65: routes[1].quota.name: quota \"q\" is defined differently in routes[0] "
     "(routes sharing a quota must define it identically)"},
    {HEAD " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/\", \"kind\": \"kv\", "
	  "\"max_body_bytes\": -1}]}",
     "cell.json:5:75: routes[0].max_body_bytes: expected an integer in 0..67108864, got -1"},
    {HEAD " \"routes\": [{\"name\": \"f\", \"prefix\": \"/f\", \"kind\": \"flags\", \"pool\": "
	  "\"app\"}]}",
     "cell.json:5:68: routes[0].pool: a \"flags\" route takes no pool, got \"app\""},
    {HEAD " \"flags\": [],\n" ROUTES, "cell.json:5:11: flags: expected an object, got an array"},
    {HEAD " \"flags\": {\"ok\": true, \"bad name\": 1},\n" ROUTES,
     "cell.json:5:24: flags: invalid flag name \"bad name\" (expected [A-Za-z0-9_.-]{1,64})"},
    {HEAD " \"flags\": {\"ok\": true, \"nothing\": null},\n" ROUTES,
     "cell.json:5:35: flags.nothing: expected a boolean, number, string, array or object, got "
     "null"},
    {HEAD " \"locality\": {\"cidrs\": {\"sfo\": [\"10.0.0.0/33\"]}},\n" ROUTES,
     "cell.json:5:33: locality.cidrs.sfo[0]: expected a network like \"10.1.0.0/16\" or "
     "\"2001:db8::/32\", got \"10.0.0.0/33\""},
    {HEAD " \"locality\": {\"cidrs\": {\"sfo\": [\"10.0.0.0\"]}},\n" ROUTES,
     "cell.json:5:33: locality.cidrs.sfo[0]: expected a network like \"10.1.0.0/16\" or "
     "\"2001:db8::/32\", got \"10.0.0.0\""},
    {HEAD " \"locality\": {\"cidrs\": {\"sfo\": [\"10.1.2.3/16\"]}},\n" ROUTES,
     "cell.json:5:33: locality.cidrs.sfo[0]: \"10.1.2.3/16\" has host bits set (did you mean "
     "\"10.1.0.0/16\"?)"},
    {HEAD " \"locality\": {\"cidrs\": {\"sfo\": [\"2001:db8::1/32\"]}},\n" ROUTES,
     "cell.json:5:33: locality.cidrs.sfo[0]: \"2001:db8::1/32\" has host bits set (did you mean "
     "\"2001:db8::/32\"?)"},
    {HEAD " \"locality\": {\"cidrs\": {\"sfo\": [\"10.0.0.0/8\"], \"lax\": [\"10.0.0.0/8\"]}},\n"
	 ROUTES,
     "cell.json:5:56: locality.cidrs.lax[0]: duplicate network \"10.0.0.0/8\" (also "
     "locality.cidrs.sfo[0])"},
    {HEAD " \"locality\": {\"cidrs\": {\"SFO\": [\"10.0.0.0/8\"]}},\n" ROUTES,
     "cell.json:5:25: locality.cidrs: invalid metro name \"SFO\" (expected [a-z0-9-]{1,31})"},
    {HEAD " \"locality\": {\"cidrs\": {\"sfo\": \"10.0.0.0/8\"}},\n" ROUTES,
     "cell.json:5:32: locality.cidrs.sfo: expected an array of networks like \"10.1.0.0/16\", "
     "got \"10.0.0.0/8\""},
    {HEAD " \"locality\": {\"trust_client_metro_header\": 1},\n" ROUTES,
     "cell.json:5:44: locality.trust_client_metro_header: expected true or false, got 1"},
    {HEAD " \"locality\": {\"metro\": \"Lax\"},\n" ROUTES,
     "cell.json:5:24: locality.metro: expected a name matching [a-z0-9-]{1,31}, got \"Lax\""},
    {HEAD " \"locality\": {\"metros\": {}},\n" ROUTES,
     "cell.json:5:15: locality: unknown key \"metros\" (did you mean \"metro\"?)"},
    {HEAD " \"limits\": {\"header_timeout_ms\": 50},\n" ROUTES,
     "cell.json:5:34: limits.header_timeout_ms: expected an integer in 100..3600000, got 50"},
    {HEAD " \"limits\": {\"max_inflight\": 0},\n" ROUTES,
     "cell.json:5:29: limits.max_inflight: expected an integer in 1..1000000, got 0"},
};

static void test_cell_edge_bad_documents(void **state)
{
	(void)state;
	run_table(cell_edge_bad, MC_ARRAY_LEN(cell_edge_bad), false, "cell.json");
}

static void test_cell_edge_example(void **state)
{
	(void)state;
	char path[512], err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	example("cell-edge.json", path, sizeof path);
	int rc = mc_cell_conf_load(path, &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(c->limits.header_timeout_ms, 10000);
	assert_int_equal(c->limits.body_timeout_ms, 10000);
	assert_int_equal(c->limits.body_min_rate, 1024);
	assert_int_equal(c->limits.max_inflight, 1024);
	assert_int_equal(c->nroutes, 4);
	const mc_route_conf *kv = &c->routes[0], *fl = &c->routes[1], *up = &c->routes[2],
			    *app = &c->routes[3];
	assert_int_equal(kv->max_body_bytes, 65536);
	assert_non_null(kv->quota);
	assert_string_equal(kv->quota->name, "kv-writers");
	assert_true(kv->quota->rate == 50.0);
	assert_int_equal(kv->quota->burst, 100);
	assert_int_equal(kv->quota->key, MC_QUOTA_KEY_IP);
	assert_null(kv->quota->header);
	assert_int_equal(kv->quota->max_keys, 100000);
	assert_int_equal(fl->kind, MC_ROUTE_FLAGS);
	assert_null(fl->quota);
	assert_int_equal(fl->max_body_bytes, 1048576); /* limits.max_body_bytes */
	assert_int_equal(up->max_body_bytes, 16777216);
	assert_true(app->quota->rate == 0.5);
	assert_int_equal(app->quota->key, MC_QUOTA_KEY_HEADER);
	assert_string_equal(app->quota->header, "X-User-Id");
	assert_int_equal(app->quota->max_keys, 200000);
	assert_int_equal(c->nflags, 4);
	assert_string_equal(c->flags[0].name, "new-checkout");
	assert_string_equal(c->flags[0].json, "true");
	assert_string_equal(c->flags[1].json, "50");
	assert_string_equal(c->flags[2].json, "\"Welcome to LA\"");
	assert_string_equal(c->flags[3].name, "rollout");
	assert_string_equal(c->flags[3].json, "{\"percent\":10,\"cohorts\":[\"beta\",\"staff\"]}");
	assert_int_equal(c->flags[3].json_len, strlen(c->flags[3].json));
	const mc_locality_conf *l = &c->locality;
	assert_string_equal(l->metro, "lax");
	assert_int_equal(l->trust_header, 0);
	assert_int_equal(l->nmetros, 3);
	assert_string_equal(l->metros[1], "sfo");
	assert_int_equal(l->ncidrs, 5);
	assert_int_equal(l->cidrs[1].family, 6);
	assert_int_equal(l->cidrs[1].bits, 48);
	assert_int_equal(l->cidrs[1].metro, 0);
	static const uint8_t sfo4[16] = {10, 2};
	assert_int_equal(l->cidrs[2].family, 4);
	assert_int_equal(l->cidrs[2].bits, 16);
	assert_memory_equal(l->cidrs[2].addr, sfo4, 16);
	assert_int_equal(l->cidrs[4].metro, 2);
	mc_cell_conf_free(c);

	/* without the keys: no flags, the metro is the cell, no map; a 0.1 rate and a
	 * real flag value keep their short form */
	const char *doc = HEAD " \"flags\": {\"r\": 0.1},\n"
			       " \"routes\": [{\"name\": \"kv\", \"prefix\": \"/\", \"kind\": \"kv\", "
			       "\"quota\": {\"name\": \"q\", \"rate\": 0.1, \"burst\": 1, \"key\": "
			       "\"header:x-a\"}}]}";
	assert_int_equal(mc_cell_conf_parse("cell.json", doc, strlen(doc), &c, err, sizeof err), 0);
	assert_string_equal(c->flags[0].json, "0.1");
	assert_true(c->routes[0].quota->rate == 0.1);
	assert_string_equal(c->locality.metro, "lax");
	assert_int_equal(c->locality.ncidrs, 0);
	assert_int_equal(c->limits.header_timeout_ms, 10000);
	assert_int_equal(c->limits.body_min_rate, 0);
	assert_int_equal(c->limits.max_inflight, 1024);
	mc_cell_conf_free(c);
}

/* The edge cache's examples: a cell with a "cache" section and route, a region
 * with a shield; defaults when the sections are absent. */
static void test_cache_examples(void **state)
{
	(void)state;
	char path[512], err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	example("cell-cache.json", path, sizeof path);
	int rc = mc_cell_conf_load(path, &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(c->nroutes, 2);
	assert_int_equal(c->routes[1].kind, MC_ROUTE_CACHE);
	assert_int_equal(c->cache.max_bytes, 268435456);
	assert_int_equal(c->cache.max_object_bytes, 1048576);
	assert_int_equal(c->cache.shards, 16);
	assert_int_equal(c->cache.policy, 0);
	assert_int_equal(c->cache.max_waiters, 1024);
	mc_cell_conf_free(c);

	mc_region_conf *g = NULL;
	example("region-shield.json", path, sizeof path);
	rc = mc_region_conf_load(path, &g, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(g->shield_origin, "127.0.0.1:9000");
	assert_int_equal(g->shield.max_bytes, 1073741824);
	assert_int_equal(g->shield.max_object_bytes, 8388608);
	assert_int_equal(g->shield.shards, 16);
	assert_int_equal(g->shield.timeout_ms, 10000);
	mc_region_conf_free(g);

	example("region.json", path, sizeof path);
	assert_int_equal(mc_region_conf_load(path, &g, err, sizeof err), 0);
	assert_null(g->shield_origin);
	mc_region_conf_free(g);
	example("cell-lax.json", path, sizeof path);
	assert_int_equal(mc_cell_conf_load(path, &c, err, sizeof err), 0);
	assert_int_equal(c->cache.max_bytes, 64u << 20);
	assert_int_equal(c->cache.policy, 0);
	mc_cell_conf_free(c);
}

/* ---- state-class rules, backlog bounds, sweep keys -------------------------------------- */

#define L4H " \"region\": {\"repl\": \"127.0.0.1:7100\", \"http\": \"127.0.0.1:7080\"},\n"
#define HEADH L1 L2 L3 L4H

static const bad_case classes_bad[] = {
    {HEADH " \"state_classes\": {},\n" ROUTES,
     "cell.json:5:19: state_classes: expected an array of rules {\"prefix\", \"class\", ...}, "
     "got an object"},
    {HEADH " \"state_classes\": [{\"prefix\": \"a:\"}],\n" ROUTES,
     "cell.json:5:20: state_classes[0]: missing required key \"class\""},
    {HEADH " \"state_classes\": [{\"prefix\": \"a:\", \"class\": \"global\"}],\n" ROUTES,
     "cell.json:5:46: state_classes[0].class: expected one of \"replicated\", \"local\", "
     "\"regional\", got \"global\""},
    {HEADH " \"state_classes\": [{\"prefix\": \"a:\", \"class\": \"local\", \"acks\": \"local\"}],\n"
	   ROUTES,
     "cell.json:5:55: state_classes[0]: unknown key \"acks\" (did you mean \"ack\"?)"},
    {HEADH " \"state_classes\": [{\"prefix\": \"a b\", \"class\": \"local\"}],\n" ROUTES,
     "cell.json:5:31: state_classes[0].prefix: expected a key prefix without spaces or control "
     "characters (keys have none), got \"a b\""},
    {HEADH " \"state_classes\": [{\"prefix\": \"a:\", \"class\": \"local\"},\n"
	   "   {\"prefix\": \"a:\", \"class\": \"regional\"}],\n" ROUTES,
     "cell.json:6:15: state_classes[1].prefix: duplicate prefix \"a:\" (also state_classes[0])"},
    {HEADH " \"state_classes\": [{\"prefix\": \"pii:\", \"class\": \"local\", \"ack\": \"region\"}],\n"
	   ROUTES,
     "cell.json:5:64: state_classes[0].ack: \"region\" needs class \"replicated\" (local keys are "
     "never shipped), got class \"local\""},
    {HEADH " \"state_classes\": [{\"prefix\": \"s:\", \"class\": \"replicated\", \"ack_timeout_ms\": "
	   "10}],\n" ROUTES,
     "cell.json:5:78: state_classes[0].ack_timeout_ms: only rules with \"ack\": \"region\" take "
     "ack_timeout_ms, got 10"},
    {HEADH " \"state_classes\": [{\"prefix\": \"l:\", \"class\": \"regional\", "
	   "\"replica_max_staleness_ms\": 10}],\n" ROUTES,
     "cell.json:5:86: state_classes[0].replica_max_staleness_ms: only \"replicated\" rules take "
     "replica_max_staleness_ms, got 10"},
    {HEADH " \"state_classes\": [{\"prefix\": \"l:\", \"class\": \"replicated\", \"cache_ttl_ms\": "
	   "10}],\n" ROUTES,
     "cell.json:5:76: state_classes[0].cache_ttl_ms: only \"regional\" rules take cache_ttl_ms, "
     "got 10"},
    {HEADH " \"state_classes\": [{\"prefix\": \"l:\", \"class\": \"local\", \"region_timeout_ms\": "
	   "10}],\n" ROUTES,
     "cell.json:5:76: state_classes[0].region_timeout_ms: only \"replicated\" and \"regional\" "
     "rules take region_timeout_ms, got 10"},
    {HEADH " \"state_classes\": [{\"prefix\": \"s:\", \"class\": \"replicated\", "
	   "\"replica_max_staleness_ms\": 86400001}],\n" ROUTES,
     "cell.json:5:88: state_classes[0].replica_max_staleness_ms: expected an integer in "
     "0..86400000, got 86400001"},
    {HEAD " \"state_classes\": [{\"prefix\": \"s:\", \"class\": \"replicated\"},\n"
	  "   {\"prefix\": \"l:\", \"class\": \"regional\"}],\n" ROUTES,
     "cell.json:6:30: state_classes[1].class: \"regional\" keys live in the region: set "
     "region.http"},
    {HEAD " \"replication\": {\"backlog_max_bytes\": 100},\n" ROUTES,
     "cell.json:5:39: replication.backlog_max_bytes: expected an integer in 4096..1099511627776, "
     "got 100"},
    {HEAD " \"replication\": {\"backlog_max_age_ms\": 99},\n" ROUTES,
     "cell.json:5:40: replication.backlog_max_age_ms: expected an integer in 100..604800000, got "
     "99"},
    {HEAD " \"state\": {\"sweep_interval_ms\": 5},\n" ROUTES,
     "cell.json:5:33: state.sweep_interval_ms: expected an integer in 10..3600000, got 5"},
    {HEAD " \"state\": {\"max_mget_keys\": 1001},\n" ROUTES,
     "cell.json:5:29: state.max_mget_keys: expected an integer in 1..1000, got 1001"},
    {HEAD " \"state\": {\"commit_linger_us\": 20000},\n" ROUTES,
     "cell.json:5:32: state.commit_linger_us: expected an integer in 0..10000, got 20000"},
};

static void test_classes_bad_documents(void **state)
{
	(void)state;
	run_table(classes_bad, MC_ARRAY_LEN(classes_bad), false, "cell.json");
	static const bad_case region[] = {
	    {"{\"region\": \"us-west\",\n \"listen\": {\"http\": \"127.0.0.1:0\", \"repl\": "
	     "\"127.0.0.1:0\"},\n \"data_dir\": \"/r\",\n \"replication\": {\"backlog_max_bytes\": "
	     "8192}}",
	     "region.json:4:18: replication: backlog_max_bytes bounds a cell's write log; the region "
	     "has none"},
	};
	run_table(region, MC_ARRAY_LEN(region), true, "region.json");
}

static void test_classes_rules(void **state)
{
	(void)state;
	const char *doc = HEADH " \"state_classes\": [\n"
				"  {\"prefix\": \"pii:\", \"class\": \"local\"},\n"
				"  {\"prefix\": \"pii:shared:\", \"class\": \"replicated\", \"ack\": "
				"\"region\", \"ack_timeout_ms\": 250},\n"
				"  {\"prefix\": \"ledger:\", \"class\": \"regional\", \"cache_ttl_ms\": "
				"1000, \"region_timeout_ms\": 300}],\n" ROUTES;
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	int rc = mc_cell_conf_parse("mem", doc, strlen(doc), &c, err, sizeof err);
	if (rc)
		print_message("%s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(c->classes.n, 4); /* + the built-in default */
	const mc_class_rule_conf *r = mc_class_rules_match(&c->classes, "pii:x", 5);
	assert_int_equal(r->cls, MC_SCLASS_LOCAL);
	r = mc_class_rules_match(&c->classes, "pii:shared:x", 12);
	assert_int_equal(r->cls, MC_SCLASS_REPLICATED);
	assert_int_equal(r->ack_region, 1);
	assert_int_equal(r->ack_timeout_ms, 250);
	r = mc_class_rules_match(&c->classes, "ledger:1", 8);
	assert_int_equal(r->cls, MC_SCLASS_REGIONAL);
	assert_int_equal(r->cache_ttl_ms, 1000);
	assert_int_equal(r->region_timeout_ms, 300);
	r = mc_class_rules_match(&c->classes, "other", 5);
	assert_string_equal(r->prefix, "");
	assert_int_equal(r->cls, MC_SCLASS_REPLICATED);
	assert_int_equal(r->ack_region, 0);
	assert_int_equal(r->replica_max_staleness_ms, 5000);
	assert_int_equal(r->region_timeout_ms, 2000);
	assert_string_equal(mc_sclass_name(r->cls), "replicated");
	assert_true(c->repl.backlog_max_bytes == (uint64_t)1 << 30);
	assert_int_equal(c->repl.backlog_max_age_ms, 3600000);
	assert_int_equal(c->state.sweep_interval_ms, 1000);
	assert_int_equal(c->state.tombstone_retention_ms, 3600000);
	assert_int_equal(c->state.max_mget_keys, 100);
	assert_int_equal(c->state.commit_linger_us, MC_STATE_LINGER_US_DEFAULT);
	mc_cell_conf_free(c);

	/* a "" rule replaces the default; the standalone validator reads an array */
	mc_class_rules_conf rules;
	const char *arr = "[{\"prefix\": \"\", \"class\": \"local\"}, {\"prefix\": \"s:\", \"class\": "
			  "\"replicated\", \"replica_max_staleness_ms\": 0}]";
	assert_int_equal(mc_class_rules_parse("fleet", arr, strlen(arr), &rules, err, sizeof err), 0);
	assert_int_equal(rules.n, 2);
	assert_int_equal(mc_class_rules_match(&rules, "x", 1)->cls, MC_SCLASS_LOCAL);
	assert_int_equal(mc_class_rules_match(&rules, "s:1", 3)->replica_max_staleness_ms, 0);
	mc_class_rules_fini(&rules);
	arr = "[{\"prefix\": \"\", \"class\": \"local\", \"ack\": \"region\"}]";
	assert_int_equal(mc_class_rules_parse("fleet", arr, strlen(arr), &rules, err, sizeof err),
			 MC_ECONFIG);
	assert_string_equal(err, "fleet:1:42: [0].ack: \"region\" needs class \"replicated\" (local "
				 "keys are never shipped), got class \"local\"");
	assert_null(rules.rules);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cell_example),
	    cmocka_unit_test(test_region_example),
	    cmocka_unit_test(test_cell_defaults),
	    cmocka_unit_test(test_cell_edges),
	    cmocka_unit_test(test_prefix_length),
	    cmocka_unit_test(test_routes_max),
	    cmocka_unit_test(test_load_errors),
	    cmocka_unit_test(test_error_is_one_line),
	    cmocka_unit_test(test_err_buffer),
	    cmocka_unit_test(test_jpos),
	    cmocka_unit_test(test_cell_bad_documents),
	    cmocka_unit_test(test_region_bad_documents),
	    cmocka_unit_test(test_cell_edge_bad_documents),
	    cmocka_unit_test(test_cell_edge_example),
	    cmocka_unit_test(test_cache_examples),
	    cmocka_unit_test(test_classes_bad_documents),
	    cmocka_unit_test(test_classes_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
