/* `metrocell ctl status`: asks the region for GET /v1/fleet through the
 * project's HTTP client and prints the fleet table (or the JSON document). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "common/common.h"
#include "ctl/status.h"
#include "http/http.h"

#define DEFAULT_REGION "127.0.0.1:7080"

static const char USAGE[] = "usage: metrocell ctl status [--region HOST:PORT] [--json] "
			    "[--timeout-ms N]\n";

typedef struct fetch {
	int done;
	int err;
	int status;
	char *body;
	size_t body_len;
} fetch;

static void on_answer(void *arg, int err, const mc_http_response *res)
{
	fetch *f = arg;
	f->done = 1;
	f->err = err;
	if (err)
		return;
	f->status = res->status;
	f->body = mc_alloc(res->body_len + 1);
	if (res->body_len)
		memcpy(f->body, res->body, res->body_len);
	f->body[res->body_len] = '\0';
	f->body_len = res->body_len;
}

/* GET target from hostport; returns 0 with *out filled, or a negative code. */
static int http_get(const char *hostport, const char *target, uint32_t timeout_ms, fetch *out)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	mc_http_pool *pool = NULL;
	mc_http_pool_opts o;
	mc_http_pool_opts_default(&o);
	o.connect_timeout_ms = MC_MIN(timeout_ms, 5000u);
	o.request_timeout_ms = timeout_ms;
	o.max_response_bytes = 64u << 20;
	memset(out, 0, sizeof *out);
	int rc = mc_http_pool_new(&pool, &loop, hostport, &o);
	if (rc == 0) {
		mc_http_header h = {"Accept", 6, "application/json", 16};
		rc = mc_http_pool_request(pool, "GET", target, &h, 1, NULL, 0, on_answer, out);
		while (rc == 0 && !out->done)
			uv_run(&loop, UV_RUN_ONCE);
		if (rc == 0)
			rc = out->err;
	}
	mc_http_pool_free(pool);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return rc;
}

static double num(json_t *o, const char *k, double dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_number(v) ? json_number_value(v) : dflt;
}

static const char *str(json_t *o, const char *k, const char *dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_string(v) ? json_string_value(v) : dflt;
}

/* Formats member k of o times scale with decimals digits and suffix into buf, or
 * "-" when the member is absent or null. */
static const char *fmt_num(char *buf, size_t cap, json_t *o, const char *k, int decimals,
			   double scale, const char *suffix)
{
	json_t *v = json_object_get(o, k);
	if (!json_is_number(v))
		return "-";
	snprintf(buf, cap, "%.*f%s", decimals, json_number_value(v) * scale, suffix);
	return buf;
}

static void print_table(json_t *doc)
{
	json_t *cells = json_object_get(doc, "cells");
	printf("region %s: %zu cell%s, stale after %.0f ms\n", str(doc, "region", "?"),
	       json_array_size(cells), json_array_size(cells) == 1 ? "" : "s",
	       num(doc, "stale_after_ms", 0));
	printf("%-10s %-6s %-9s %7s %9s %8s %8s %8s %9s %9s %9s %9s %8s %7s\n", "CELL", "STATE",
	       "HEALTH", "CONFIG", "RPS", "P50_MS", "P95_MS", "P99_MS", "REGIONAL", "REPL_LAG",
	       "LOCALITY", "CACHE_HIT", "BLIND_S", "EVENTS");
	size_t i;
	json_t *c;
	json_array_foreach(cells, i, c)
	{
		char rps[32], p50[32], p95[32], p99[32], reg[32], lag[32], loc[32], hit[32],
		    blind[32], cfg[32], ev[32];
		json_t *local = json_object_get(json_object_get(c, "outcomes"), "local");
		if (num(local, "count", 0) <= 0)
			local = NULL; /* no local request in the last interval: no quantiles */
		json_t *repl = json_object_get(c, "replication");
		json_t *events = json_object_get(c, "events");
		printf("%-10s %-6s %-9s %7s %9s %8s %8s %8s %9s %9s %9s %9s %8s %7s\n",
		       str(c, "cell", "?"), str(c, "state", "?"), str(c, "health", "-"),
		       fmt_num(cfg, sizeof cfg, c, "config_version", 0, 1, ""),
		       fmt_num(rps, sizeof rps, c, "rps", 1, 1, ""),
		       local ? fmt_num(p50, sizeof p50, local, "p50_ms", 2, 1, "") : "-",
		       local ? fmt_num(p95, sizeof p95, local, "p95_ms", 2, 1, "") : "-",
		       local ? fmt_num(p99, sizeof p99, local, "p99_ms", 2, 1, "") : "-",
		       fmt_num(reg, sizeof reg, c, "regional_dependency_ratio", 1, 100, "%"),
		       repl ? fmt_num(lag, sizeof lag, repl, "oldest_unacked_ms", 0, 1, "ms") : "-",
		       fmt_num(loc, sizeof loc, c, "locality_violations_total", 0, 1, ""),
		       fmt_num(hit, sizeof hit, c, "cache_hit_ratio", 1, 100, "%"),
		       fmt_num(blind, sizeof blind, c, "blind_s", 1, 1, ""),
		       events ? fmt_num(ev, sizeof ev, events, "pending_in_cell", 0, 1, "") : "-");
	}
}

int mc_ctl_status(int argc, char **argv)
{
	const char *region = getenv("METROCELL_REGION");
	if (!region || !*region)
		region = DEFAULT_REGION;
	int as_json = 0;
	uint64_t timeout_ms = 5000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0) {
			as_json = 1;
		} else if (strcmp(a, "--region") == 0 && i + 1 < argc) {
			region = argv[++i];
		} else if (strncmp(a, "--region=", 9) == 0) {
			region = a + 9;
		} else if (strcmp(a, "--timeout-ms") == 0 && i + 1 < argc) {
			const char *v = argv[++i];
			if (mc_parse_u64(v, strlen(v), 600000, &timeout_ms) < 0 ||
			    timeout_ms == 0) {
				fprintf(stderr,
					"metrocell ctl status: --timeout-ms: expected 1..600000, "
					"got \"%s\"\n%s",
					v, USAGE);
				return 2;
			}
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			printf("%s", USAGE);
			return 0;
		} else {
			fprintf(stderr,
				"metrocell ctl status: unknown or incomplete option \"%s\"\n%s", a,
				USAGE);
			return 2;
		}
	}
	char host[256];
	uint16_t port;
	if (mc_parse_hostport(region, host, sizeof host, &port) < 0 || port == 0) {
		fprintf(stderr, "metrocell ctl status: --region: expected HOST:PORT, got \"%s\"\n",
			region);
		return 2;
	}
	fetch f;
	int rc = http_get(region, "/v1/fleet", (uint32_t)timeout_ms, &f);
	int code = 1;
	json_t *doc = NULL;
	if (rc < 0) {
		fprintf(stderr, "metrocell ctl status: GET http://%s/v1/fleet: %s\n", region,
			mc_strerror(rc));
		goto out;
	}
	if (f.status != 200) {
		fprintf(stderr, "metrocell ctl status: GET http://%s/v1/fleet: HTTP %d: %.200s\n",
			region, f.status, f.body);
		goto out;
	}
	json_error_t je;
	doc = json_loadb(f.body, f.body_len, 0, &je);
	if (!json_is_object(doc) || !json_is_array(json_object_get(doc, "cells"))) {
		fprintf(
		    stderr,
		    "metrocell ctl status: the region's /v1/fleet is not a fleet document (%s)\n",
		    doc ? "no \"cells\" array" : je.text);
		goto out;
	}
	if (as_json)
		fwrite(f.body, 1, f.body_len, stdout);
	else
		print_table(doc);
	fflush(stdout);
	code = 0;
out:
	json_decref(doc);
	free(f.body);
	return code;
}
