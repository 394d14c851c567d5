/* `metrocell ctl push | rollout | rotate-key`: validates fleet documents locally
 * with the validator the region and the cells run, then talks to the region's
 * control-plane API (docs/protocol.md "Control plane") through the project's
 * HTTP client, one blocking call at a time on a private loop. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/common.h"
#include "config/config.h"
#include "ctl/ctl.h"
#include "ctl/status.h"
#include "http/http.h"

#define DEFAULT_REGION "127.0.0.1:7080"
#define WAIT_SLICE_MS 30000

static const char USAGE[] =
    "usage: metrocell ctl status [--region HOST:PORT] [--json] [--timeout-ms N]\n"
    "       metrocell ctl push FILE [--region HOST:PORT] [--wait [--timeout S]]\n"
    "       metrocell ctl rollout FILE --stages lax,sfo+sea [--bake 10s] [--region HOST:PORT]\n"
    "       metrocell ctl rollout status|abort [--region HOST:PORT] [--json]\n"
    "       metrocell ctl rotate-key --kind auth|ticket [--overlap 1h] [--region HOST:PORT]\n"
    "       metrocell ctl rotate-key status [--region HOST:PORT] [--json]\n"
    "The region defaults to $METROCELL_REGION, else " DEFAULT_REGION ".\n"
    "Stages: ',' separates stages, '+' joins the cells of one stage.\n"
    "Durations: 500ms, 10s, 5m, 1h (a bare number is seconds).\n";

/* ---- one HTTP call --------------------------------------------------------------------------- */

typedef struct call {
	int done, err, status;
	mc_buf body;
} call;

static void on_answer(void *arg, int err, const mc_http_response *res)
{
	call *c = arg;
	c->done = 1;
	c->err = err;
	if (err)
		return;
	c->status = res->status;
	mc_buf_append(&c->body, res->body ? res->body : "", res->body_len);
	mc_buf_append(&c->body, "", 1); /* NUL, not counted */
	c->body.len--;
}

/* Sends one request and waits for its answer (timeout_ms from sending).
 * Returns 0 with *c filled, or a negative code (connect error, timeout). */
static int http_call(const char *region, const char *method, const char *target, const char *body,
		     size_t len, uint32_t timeout_ms, call *c)
{
	memset(c, 0, sizeof *c);
	mc_buf_init(&c->body);
	uv_loop_t loop;
	uv_loop_init(&loop);
	mc_http_pool_opts o;
	mc_http_pool_opts_default(&o);
	o.max_conns = 1;
	o.request_timeout_ms = timeout_ms;
	o.connect_timeout_ms = 3000;
	o.max_response_bytes = MC_FLEET_MAX_BYTES + (1u << 20);
	mc_http_pool *p = NULL;
	int rc = mc_http_pool_new(&p, &loop, region, &o);
	if (rc == 0) {
		mc_http_header h[] = {{"Content-Type", 12, "application/json", 16}};
		rc = mc_http_pool_request(p, method, target, h, body ? 1 : 0, body, len, on_answer,
					  c);
		while (rc == 0 && !c->done)
			uv_run(&loop, UV_RUN_ONCE);
		if (rc == 0)
			rc = c->err;
	}
	mc_http_pool_free(p);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return rc;
}

/* The message of a JSON error body, else the body itself. */
static void print_error(const char *what, const call *c)
{
	json_t *j = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
	const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
	const char *code = j ? json_string_value(json_object_get(j, "error")) : NULL;
	if (msg)
		fprintf(stderr, "metrocell ctl %s: %s\n", what, msg);
	else
		fprintf(stderr, "metrocell ctl %s: the region answered %d %s: %.*s\n", what,
			c->status, mc_http_reason(c->status), (int)MC_MIN(c->body.len, (size_t)300),
			c->body.data ? c->body.data : "");
	(void)code;
	json_decref(j);
}

static void unreachable(const char *what, const char *region, int rc)
{
	fprintf(stderr, "metrocell ctl %s: cannot reach the region at %s: %s\n", what, region,
		mc_strerror(rc));
}

/* ---- arguments ---------------------------------------------------------------------------------
 */

typedef struct args {
	const char *region;
	const char *file;
	const char *sub; /* "status", "abort" for rollout / rotate-key */
	const char *stages;
	const char *kind;
	uint64_t bake_ms;
	int has_bake;
	uint64_t overlap_ms;
	int has_overlap;
	uint64_t timeout_ms;
	int wait;
	int json;
} args;

/* "500ms", "10s", "5m", "1h", "2d" or a bare number of seconds, into ms. */
static int parse_duration(const char *s, uint64_t *ms)
{
	size_t n = strlen(s), d = 0;
	while (d < n && s[d] >= '0' && s[d] <= '9')
		d++;
	uint64_t v;
	if (d == 0 || d > 12 || mc_parse_u64(s, d, 1000000000000ull, &v) != 0)
		return -1;
	const char *u = s + d;
	uint64_t mul = strcmp(u, "ms") == 0		   ? 1
		       : strcmp(u, "s") == 0 || *u == '\0' ? 1000
		       : strcmp(u, "m") == 0		   ? 60000
		       : strcmp(u, "h") == 0		   ? 3600000
		       : strcmp(u, "d") == 0		   ? 86400000
							   : 0;
	if (!mul)
		return -1;
	*ms = v * mul;
	return 0;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "metrocell ctl: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", USAGE);
	return 2;
}

/* Parses argv[first..] into a; positional words go to file (then sub). */
static int parse_args(int argc, char **argv, int first, args *a)
{
	memset(a, 0, sizeof *a);
	a->region = getenv("METROCELL_REGION");
	if (!a->region || !*a->region)
		a->region = DEFAULT_REGION;
	a->timeout_ms = 60000;
	for (int i = first; i < argc; i++) {
		const char *o = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(o, "--wait") == 0) {
			a->wait = 1;
		} else if (strcmp(o, "--json") == 0) {
			a->json = 1;
		} else if (!strcmp(o, "--region") || !strcmp(o, "--stages") ||
			   !strcmp(o, "--bake") || !strcmp(o, "--kind") ||
			   !strcmp(o, "--overlap") || !strcmp(o, "--timeout")) {
			if (!val)
				return usage_error("%s needs a value", o);
			i++;
			if (!strcmp(o, "--region")) {
				char host[64];
				uint16_t port;
				if (mc_parse_hostport(val, host, sizeof host, &port) != 0 || !port)
					return usage_error(
					    "--region: expected HOST:PORT, got \"%s\"", val);
				a->region = val;
			} else if (!strcmp(o, "--stages")) {
				a->stages = val;
			} else if (!strcmp(o, "--kind")) {
				if (strcmp(val, "auth") != 0 && strcmp(val, "ticket") != 0)
					return usage_error(
					    "--kind: expected auth or ticket, got \"%s\"", val);
				a->kind = val;
			} else {
				uint64_t ms;
				if (parse_duration(val, &ms) != 0)
					return usage_error(
					    "expected a duration like 10s, 500ms, 1h; "
					    "got \"%s\"",
					    val);
				if (!strcmp(o, "--bake")) {
					a->bake_ms = ms;
					a->has_bake = 1;
				} else if (!strcmp(o, "--overlap")) {
					a->overlap_ms = ms;
					a->has_overlap = 1;
				} else {
					a->timeout_ms = ms;
				}
			}
		} else if (o[0] == '-' && o[1] != '\0') {
			return usage_error("unknown option \"%s\"", o);
		} else if (!a->file) {
			a->file = o;
		} else {
			return usage_error("unexpected argument \"%s\"", o);
		}
	}
	return 0;
}

/* Reads and validates FILE like the region will. Returns 0 with the text, or
 * 1 after printing the precise error. */
static int load_local(const char *what, const char *path, char **doc, size_t *len)
{
	int rc = mc_file_read(path, MC_FLEET_MAX_BYTES, doc, len);
	if (rc == MC_ETOOBIG) {
		fprintf(stderr,
			"metrocell ctl %s: %s: file is larger than %u bytes (the fleet config "
			"limit)\n",
			what, path, MC_FLEET_MAX_BYTES);
		return 1;
	}
	if (rc < 0) {
		fprintf(stderr, "metrocell ctl %s: %s: cannot read: %s\n", what, path,
			rc == MC_ENOTFOUND ? "no such file" : mc_strerror(rc));
		return 1;
	}
	char err[MC_CONFIG_ERR_MAX];
	mc_fleet_conf *f = NULL;
	if (mc_fleet_conf_parse(path, *doc, *len, NULL, &f, err, sizeof err) < 0) {
		fprintf(stderr, "metrocell ctl %s: %s\n", what, err);
		free(*doc);
		*doc = NULL;
		return 1;
	}
	mc_fleet_conf_free(f);
	return 0;
}

static json_t *json_of(const call *c)
{
	return json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
}

/* ---- push -------------------------------------------------------------------------------------
 */

/* Waits until every cell applied version (or one rejected it, or time ran
 * out); prints the outcome. Returns the exit code. */
static int wait_applied(const args *a, uint64_t version, uint64_t t0_ns)
{
	uint64_t deadline = t0_ns + a->timeout_ms * 1000000ull;
	for (;;) {
		uint64_t now = mc_now_ns();
		uint64_t left_ms = now < deadline ? (deadline - now) / 1000000ull : 0;
		char target[96];
		snprintf(target, sizeof target, "/v1/config/applied?version=%llu&wait_ms=%llu",
			 (unsigned long long)version,
			 (unsigned long long)MC_MIN(left_ms, (uint64_t)WAIT_SLICE_MS));
		call c;
		int rc = http_call(a->region, "GET", target, NULL, 0,
				   (uint32_t)MC_MIN(left_ms, (uint64_t)WAIT_SLICE_MS) + 5000, &c);
		if (rc < 0) {
			unreachable("push --wait", a->region, rc);
			mc_buf_fini(&c.body);
			return 1;
		}
		json_t *j = c.status == 200 ? json_of(&c) : NULL;
		if (!j) {
			print_error("push --wait", &c);
			mc_buf_fini(&c.body);
			return 1;
		}
		double took_ms = (double)(mc_now_ns() - t0_ns) / 1e6;
		json_t *cells = json_object_get(j, "cells");
		int complete = json_is_true(json_object_get(j, "complete"));
		int rejected = json_is_true(json_object_get(j, "rejected"));
		if (complete || rejected || mc_now_ns() >= deadline) {
			size_t i, nok = 0;
			json_t *e;
			mc_buf names, bad;
			mc_buf_init(&names);
			mc_buf_init(&bad);
			json_array_foreach(cells, i, e)
			{
				const char *cn = json_string_value(json_object_get(e, "cell"));
				const char *err = json_string_value(json_object_get(e, "error"));
				if (json_is_true(json_object_get(e, "applied"))) {
					mc_buf_printf(&names, "%s%s", nok++ ? ", " : "", cn);
				} else {
					if (err)
						mc_buf_printf(&bad, "  %s: rejected: %s\n", cn,
							      err);
					else
						mc_buf_printf(
						    &bad, "  %s: not applied (at version %lld)\n",
						    cn,
						    (long long)json_integer_value(
							json_object_get(e, "applied_version")));
				}
			}
			if (complete) {
				printf("applied by %zu cell%s (%s) in %.1f ms\n", nok,
				       nok == 1 ? "" : "s", nok ? names.data : "none", took_ms);
			} else {
				fprintf(
				    stderr,
				    "metrocell ctl push --wait: version %llu %s after %.1f ms:\n%s",
				    (unsigned long long)version,
				    rejected ? "was rejected" : "is not applied everywhere",
				    took_ms, bad.data ? bad.data : "");
			}
			mc_buf_fini(&names);
			mc_buf_fini(&bad);
			json_decref(j);
			mc_buf_fini(&c.body);
			return complete ? 0 : 1;
		}
		json_decref(j);
		mc_buf_fini(&c.body);
	}
}

static int cmd_push(const args *a)
{
	if (!a->file)
		return usage_error("push needs a FILE");
	char *doc;
	size_t len;
	if (load_local("push", a->file, &doc, &len))
		return 1;
	uint64_t t0 = mc_now_ns();
	call c;
	int rc = http_call(a->region, "POST", "/v1/config", doc, len, 30000, &c);
	free(doc);
	if (rc < 0) {
		unreachable("push", a->region, rc);
		mc_buf_fini(&c.body);
		return 1;
	}
	json_t *j = c.status == 200 ? json_of(&c) : NULL;
	if (!j) {
		print_error("push", &c);
		mc_buf_fini(&c.body);
		return 1;
	}
	uint64_t version = (uint64_t)json_integer_value(json_object_get(j, "version"));
	printf("version %llu sha256 %s%s\n", (unsigned long long)version,
	       json_string_value(json_object_get(j, "sha256")),
	       json_is_true(json_object_get(j, "unchanged")) ? " (unchanged)" : "");
	fflush(stdout);
	json_decref(j);
	mc_buf_fini(&c.body);
	return a->wait ? wait_applied(a, version, t0) : 0;
}

/* ---- rollout ------------------------------------------------------------------------------------
 */

static void print_sample(const char *label, json_t *s)
{
	printf("      %-7s %6lld requests, error rate %6.2f %%, p95 %8.3f ms\n", label,
	       (long long)json_integer_value(json_object_get(s, "requests")),
	       json_number_value(json_object_get(s, "error_rate")) * 100.0,
	       json_number_value(json_object_get(s, "p95_ms")));
}

static void print_rollout(json_t *r)
{
	const char *state = json_string_value(json_object_get(r, "state"));
	json_t *stages = json_object_get(r, "stages");
	size_t stage = (size_t)json_integer_value(json_object_get(r, "stage"));
	printf("rollout to version %lld (from %lld): %s, stage %zu of %zu\n",
	       (long long)json_integer_value(json_object_get(r, "to")),
	       (long long)json_integer_value(json_object_get(r, "from")), state ? state : "?",
	       stage + 1, json_array_size(stages));
	const char *why = json_string_value(json_object_get(r, "why"));
	if (why && *why)
		printf("  why: %s\n", why);
	size_t i;
	json_t *st;
	json_array_foreach(stages, i, st)
	{
		mc_buf names;
		mc_buf_init(&names);
		size_t k;
		json_t *cn;
		json_array_foreach(st, k, cn)
		    mc_buf_printf(&names, "%s%s", k ? "+" : "", json_string_value(cn));
		json_t *res = json_array_get(json_object_get(r, "results"), i);
		printf("  stage %zu %-20s %s\n", i + 1, names.data ? names.data : "",
		       json_string_value(json_object_get(res, "verdict")));
		if (json_is_true(json_object_get(res, "judged")) || i == stage) {
			print_sample("before", json_object_get(res, "before"));
			if (json_is_true(json_object_get(res, "judged")))
				print_sample("after", json_object_get(res, "after"));
		}
		mc_buf_fini(&names);
	}
}

static int show_json_or(const args *a, const char *what, const char *method, const char *target,
			void (*print)(json_t *))
{
	call c;
	int rc = http_call(a->region, method, target, NULL, 0, 30000, &c);
	if (rc < 0) {
		unreachable(what, a->region, rc);
		mc_buf_fini(&c.body);
		return 1;
	}
	json_t *j = c.status == 200 ? json_of(&c) : NULL;
	if (!j) {
		print_error(what, &c);
		mc_buf_fini(&c.body);
		return 1;
	}
	if (a->json)
		printf("%s", c.body.data);
	else
		print(j);
	json_decref(j);
	mc_buf_fini(&c.body);
	return 0;
}

static int cmd_rollout(const args *a)
{
	if (a->file && (!strcmp(a->file, "status") || !strcmp(a->file, "abort")) && !a->stages) {
		int abort = !strcmp(a->file, "abort");
		return show_json_or(a, abort ? "rollout abort" : "rollout status",
				    abort ? "POST" : "GET",
				    abort ? "/v1/rollout/abort" : "/v1/rollout", print_rollout);
	}
	if (!a->file)
		return usage_error("rollout needs a FILE (or status | abort)");
	char err[512];
	mc_rollout_stage *st = NULL;
	size_t nst = 0;
	if (a->stages && mc_rollout_stages_parse(a->stages, &st, &nst, err, sizeof err) < 0) {
		fprintf(stderr, "metrocell ctl rollout: --stages: %s\n", err);
		return 2;
	}
	mc_rollout_stages_free(st, nst);
	char *doc;
	size_t len;
	if (load_local("rollout", a->file, &doc, &len))
		return 1;
	mc_buf target;
	mc_buf_init(&target);
	mc_buf_append_str(&target, "/v1/rollout?");
	if (a->stages) {
		mc_buf_append_str(&target, "stages=");
		for (const char *p = a->stages; *p; p++)
			mc_buf_printf(&target, *p == '+' ? "%%2B" : "%c", *p);
		mc_buf_append_str(&target, "&");
	}
	if (a->has_bake)
		mc_buf_printf(&target, "bake_ms=%llu", (unsigned long long)a->bake_ms);
	call c;
	int rc = http_call(a->region, "POST", target.data, doc, len, 30000, &c);
	free(doc);
	mc_buf_fini(&target);
	if (rc < 0) {
		unreachable("rollout", a->region, rc);
		mc_buf_fini(&c.body);
		return 1;
	}
	json_t *j = c.status == 200 ? json_of(&c) : NULL;
	if (!j) {
		print_error("rollout", &c);
		mc_buf_fini(&c.body);
		return 1;
	}
	printf("version %lld sha256 %s\n",
	       (long long)json_integer_value(json_object_get(j, "version")),
	       json_string_value(json_object_get(j, "sha256")));
	print_rollout(json_object_get(j, "rollout"));
	json_decref(j);
	mc_buf_fini(&c.body);
	return 0;
}

/* ---- keys
 * ------------------------------------------------------------------------------------------ */

static void print_rotation(json_t *r)
{
	printf("%s key rotation: %s\n  new key %s, old key %s\n  published in version %lld, "
	       "activated in version %lld, old key removed in version %lld\n  %s\n",
	       json_string_value(json_object_get(r, "kind")),
	       json_string_value(json_object_get(r, "phase")),
	       json_string_value(json_object_get(r, "id")),
	       *json_string_value(json_object_get(r, "old_id"))
		   ? json_string_value(json_object_get(r, "old_id"))
		   : "(none)",
	       (long long)json_integer_value(json_object_get(r, "published_version")),
	       (long long)json_integer_value(json_object_get(r, "activated_version")),
	       (long long)json_integer_value(json_object_get(r, "retired_version")),
	       json_string_value(json_object_get(r, "why")));
}

static int cmd_rotate(const args *a)
{
	if (a->file && !strcmp(a->file, "status"))
		return show_json_or(a, "rotate-key status", "GET", "/v1/keys/rotation",
				    print_rotation);
	if (a->file)
		return usage_error("unexpected argument \"%s\"", a->file);
	if (!a->kind)
		return usage_error("rotate-key needs --kind auth|ticket");
	char target[128];
	snprintf(target, sizeof target, "/v1/keys/rotate?kind=%s&overlap_ms=%llu", a->kind,
		 (unsigned long long)(a->has_overlap ? a->overlap_ms : 3600000ull));
	return show_json_or(a, "rotate-key", "POST", target, print_rotation);
}

int mc_ctl_main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "%s", USAGE);
		return 2;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
		printf("%s", USAGE);
		return 0;
	}
	if (!strcmp(sub, "status")) /* the fleet table (src/ctl/status.c) */
		return mc_ctl_status(argc - 1, argv + 1);
	args a;
	int rc = parse_args(argc, argv, 2, &a);
	if (rc)
		return rc;
	if (!strcmp(sub, "push"))
		return cmd_push(&a);
	if (!strcmp(sub, "rollout"))
		return cmd_rollout(&a);
	if (!strcmp(sub, "rotate-key"))
		return cmd_rotate(&a);
	return usage_error("unknown ctl subcommand \"%s\"", sub);
}
