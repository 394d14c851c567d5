/* `metrocell sample-worker` and `metrocell sample-origin`: small but real HTTP
 * applications on src/http that the demo, the bench and the integration tests
 * put behind cells (workers for proxy routes, the origin for cache routes). */
#include "testbed/testbed.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/common.h"
#include "http/http.h"

#define MAX_BODY_BYTES (64u << 20)
#define MAX_WORK_MS 600000u
#define MAX_AGE_MAX 31536000u
#define NAME_MAX_LEN 64

typedef struct work work;

typedef struct app {
	const char *prog; /* "sample-worker" or "sample-origin" */
	int origin;
	const char *listen;
	const char *name;
	uint64_t work_ms, body_bytes, max_age;
	uint64_t fail_status; /* answer every request (not /healthz) with it; 0: off */
	uint64_t n;	      /* requests answered (health checks excluded) */
	uv_loop_t loop;
	mc_http_server *srv;
	uv_signal_t sigterm, sigint;
	work *pending; /* delayed answers (--work-ms) */
	int stopping;
} app;

struct work {
	uv_timer_t timer;
	app *a;
	mc_http_exchange *ex;
	uint64_t n;
	int status;
	uint64_t sse_left, sse_seq, gap_ms; /* a server-sent event stream (?sse=N) */
	int streaming;
	work *prev, *next;
};

static const char WORKER_USAGE[] =
    "usage: metrocell sample-worker --listen HOST:PORT [--name NAME] [--work-ms N]\n"
    "                               [--body-bytes N] [--fail-status CODE]\n"
    "  --listen HOST:PORT  address to serve on (port 0 picks a free one)\n"
    "  --name NAME         worker name in bodies and X-Worker (default \"worker\")\n"
    "  --work-ms N         delay every answer by N ms (a timer, not a sleep)\n"
    "  --body-bytes N      pad the JSON body to N bytes\n"
    "  --fail-status CODE  answer every request but /healthz with status CODE\n"
    "Per request, query parameters: status=CODE (answer with it), delay_ms=N (instead\n"
    "of --work-ms), sse=N&gap_ms=M (stream N server-sent events, M ms apart, chunked).\n";

static const char ORIGIN_USAGE[] =
    "usage: metrocell sample-origin --listen HOST:PORT [--max-age S] [--body-bytes N]\n"
    "  --listen HOST:PORT  address to serve on (port 0 picks a free one)\n"
    "  --max-age S         Cache-Control max-age in seconds (default 60)\n"
    "  --body-bytes N      pad the JSON body to N bytes\n";

/* ---- bodies ---------------------------------------------------------------------------- */

/* b holds a JSON object; grows it to exactly want bytes with a "pad" member when
 * want leaves room for one, else leaves it as it is. */
static void pad_json(mc_buf *b, size_t want)
{
	static const char open[] = ",\"pad\":\"";
	size_t overhead = sizeof open - 1 + 2; /* the member plus the closing "} */
	if (b->len == 0 || want < b->len + overhead)
		return;
	size_t k = want - b->len - overhead + 1; /* +1: the '}' we remove */
	b->len--;
	mc_buf_append(b, open, sizeof open - 1);
	mc_buf_reserve(b, k + 2);
	memset(b->data + b->len, 'x', k);
	b->len += k;
	mc_buf_append(b, "\"}", 2);
}

static void answer_health(app *a, mc_http_exchange *ex)
{
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"status\":\"ok\",\"app\":");
	mc_buf_append_json(&b, a->prog, strlen(a->prog));
	if (!a->origin) {
		mc_buf_append_str(&b, ",\"worker\":");
		mc_buf_append_json(&b, a->name, strlen(a->name));
	}
	mc_buf_append_str(&b, "}");
	mc_http_header h[] = {{"Content-Type", 12, "application/json", 16},
			      {"Cache-Control", 13, "no-store", 8}};
	mc_http_respond(ex, 200, h, MC_ARRAY_LEN(h), b.data, b.len);
	mc_buf_fini(&b);
}

static void worker_answer(app *a, mc_http_exchange *ex, uint64_t n, int status)
{
	const mc_http_request *r = mc_http_exchange_request(ex);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"worker\":");
	mc_buf_append_json(&b, a->name, strlen(a->name));
	mc_buf_append_str(&b, ",\"path\":");
	mc_buf_append_json(&b, r->path, r->path_len);
	mc_buf_printf(&b, ",\"n\":%llu", (unsigned long long)n);
	if (status != 200)
		mc_buf_printf(&b, ",\"status\":%d", status);
	mc_buf_append_str(&b, "}");
	pad_json(&b, (size_t)a->body_bytes);
	mc_http_header h[] = {{"Content-Type", 12, "application/json", 16},
			      {"X-Worker", 8, a->name, strlen(a->name)}};
	mc_http_respond(ex, status, h, MC_ARRAY_LEN(h), b.data, b.len);
	mc_buf_fini(&b);
}

/* The value of parameter key in a query string ("a=1&b=2"), parsed as an
 * integer in [0, max]; dflt when absent or malformed. */
static uint64_t query_num(const char *q, const char *key, uint64_t max, uint64_t dflt)
{
	size_t kl = strlen(key);
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		uint64_t v;
		if (len > kl && strncmp(q, key, kl) == 0 && q[kl] == '=' &&
		    mc_parse_u64(q + kl + 1, len - kl - 1, max, &v) == 0)
			return v;
		q = amp ? amp + 1 : NULL;
	}
	return dflt;
}

static void work_closed(uv_handle_t *h)
{
	free(h->data);
}

static void work_unlink(app *a, work *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		a->pending = w->next;
	if (w->next)
		w->next->prev = w->prev;
}

static void work_finish(work *w)
{
	work_unlink(w->a, w);
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, work_closed);
}

/* The client of a stream left: stop it. */
static void on_stream_client(void *arg, int event)
{
	work *w = arg;
	if (event != MC_HTTP_EX_CLOSED)
		return;
	mc_http_exchange_end(w->ex, 1);
	work_finish(w);
}

/* Sends the next event of a server-sent event stream; ends it after the last.
 * Returns 1 when more events follow. */
static int sse_step(work *w)
{
	app *a = w->a;
	if (!w->streaming) {
		mc_http_header h[] = {{"Content-Type", 12, "text/event-stream", 17},
				      {"Cache-Control", 13, "no-store", 8},
				      {"X-Worker", 8, a->name, strlen(a->name)}};
		w->streaming = 1;
		mc_http_exchange_watch(w->ex, on_stream_client, w);
		mc_http_exchange_start_response(w->ex, w->status, h, MC_ARRAY_LEN(h), -1);
	}
	w->sse_seq++;
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_printf(&b, "id: %llu\ndata: {\"worker\":", (unsigned long long)w->sse_seq);
	mc_buf_append_json(&b, a->name, strlen(a->name));
	mc_buf_printf(&b, ",\"event\":%llu}\n\n", (unsigned long long)w->sse_seq);
	mc_http_exchange_write_body(w->ex, b.data, b.len);
	mc_buf_fini(&b);
	if (--w->sse_left == 0) {
		mc_http_exchange_end(w->ex, 0);
		work_finish(w);
		return 0;
	}
	return 1;
}

static void on_work_done(uv_timer_t *t)
{
	work *w = t->data;
	if (w->sse_left) {
		if (sse_step(w))
			uv_timer_start(&w->timer, on_work_done, w->gap_ms, 0);
		return;
	}
	worker_answer(w->a, w->ex, w->n, w->status);
	work_finish(w);
}

static void worker_handler(void *ctx, mc_http_exchange *ex)
{
	app *a = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	if (strcmp(r->path, "/healthz") == 0) {
		answer_health(a, ex);
		return;
	}
	a->n++;
	int status = (int)query_num(r->query, "status", 999, 200);
	if (status < 200)
		status = 200;
	if (a->fail_status)
		status = (int)a->fail_status;
	uint64_t delay = query_num(r->query, "delay_ms", MAX_WORK_MS, a->work_ms);
	uint64_t events = query_num(r->query, "sse", 100000, 0);
	if (delay == 0 && events == 0) {
		worker_answer(a, ex, a->n, status);
		return;
	}
	work *w = mc_calloc(1, sizeof *w);
	w->a = a;
	w->ex = ex;
	w->n = a->n;
	w->status = status;
	w->sse_left = events;
	w->gap_ms = query_num(r->query, "gap_ms", MAX_WORK_MS, 0);
	uv_timer_init(&a->loop, &w->timer);
	w->timer.data = w;
	w->next = a->pending;
	if (a->pending)
		a->pending->prev = w;
	a->pending = w;
	uv_timer_start(&w->timer, on_work_done, delay, 0);
}

/* 1 when an If-None-Match value lists etag (or is "*"). */
static int etag_matches(const char *v, size_t n, const char *etag)
{
	size_t el = strlen(etag);
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t start = i;
		while (i < n && v[i] != ',')
			i++;
		size_t end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		const char *tok = v + start;
		size_t tl = end - start;
		if (tl >= 2 && tok[0] == 'W' && tok[1] == '/') { /* weak comparison */
			tok += 2;
			tl -= 2;
		}
		if ((tl == 1 && tok[0] == '*') || (tl == el && memcmp(tok, etag, el) == 0))
			return 1;
	}
	return 0;
}

static void origin_handler(void *ctx, mc_http_exchange *ex)
{
	app *a = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	if (strcmp(r->path, "/healthz") == 0) {
		answer_health(a, ex);
		return;
	}
	a->n++;
	/* the body depends on the path only, so the ETag is a true validator */
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"origin\":\"sample\",\"path\":");
	mc_buf_append_json(&b, r->path, r->path_len);
	mc_buf_append_str(&b, "}");
	pad_json(&b, (size_t)a->body_bytes);
	char etag[16], cc[32], hits[24];
	snprintf(etag, sizeof etag, "\"%08x\"", (unsigned)mc_crc32c(0, b.data, b.len));
	snprintf(cc, sizeof cc, "max-age=%llu", (unsigned long long)a->max_age);
	snprintf(hits, sizeof hits, "%llu", (unsigned long long)a->n);
	mc_http_header h[] = {{"Content-Type", 12, "application/json", 16},
			      {"Cache-Control", 13, cc, strlen(cc)},
			      {"ETag", 4, etag, strlen(etag)},
			      {"X-Origin-Hits", 13, hits, strlen(hits)}};
	size_t inm_len;
	const char *inm = mc_http_header_find(r->headers, r->nheaders, "if-none-match", &inm_len);
	int is_read = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
	if (inm && is_read && etag_matches(inm, inm_len, etag))
		mc_http_respond(ex, 304, h + 1, MC_ARRAY_LEN(h) - 1, NULL, 0);
	else
		mc_http_respond(ex, 200, h, MC_ARRAY_LEN(h), b.data, b.len);
	mc_buf_fini(&b);
}

/* ---- process ----------------------------------------------------------------------------- */

static void app_stop(app *a)
{
	if (a->stopping)
		return;
	a->stopping = 1;
	mc_http_server_free(a->srv);
	a->srv = NULL;
	uv_close((uv_handle_t *)&a->sigterm, NULL);
	uv_close((uv_handle_t *)&a->sigint, NULL);
	while (a->pending) {
		work *w = a->pending;
		if (w->streaming)
			mc_http_exchange_end(w->ex, 1);
		else
			mc_http_respond(w->ex, 503, NULL, 0, NULL, 0); /* dropped: closed */
		work_finish(w);
	}
}

static void on_signal(uv_signal_t *s, int signum)
{
	(void)signum;
	app_stop(s->data);
}

static int arg_error(const app *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports a command-line error with the usage; returns -1. */
static int arg_error(const app *a, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", a->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", a->origin ? ORIGIN_USAGE : WORKER_USAGE);
	return -1;
}

static int parse_num(const app *a, const char *opt, const char *val, uint64_t max, uint64_t *out)
{
	if (mc_parse_u64(val, strlen(val), max, out) < 0) {
		fprintf(stderr, "%s: %s: expected an integer in [0, %llu], got '%s'\n%s", a->prog,
			opt, (unsigned long long)max, val, a->origin ? ORIGIN_USAGE : WORKER_USAGE);
		return -1;
	}
	return 0;
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > NAME_MAX_LEN)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
			return 0;
	}
	return 1;
}

/* Returns 0 to run, 1 after --help, -1 on a command-line error (reported). */
static int parse_args(app *a, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		char opt[32];
		const char *arg = argv[i];
		const char *val = NULL;
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			fputs(a->origin ? ORIGIN_USAGE : WORKER_USAGE, stdout);
			return 1;
		}
		const char *eq = strchr(arg, '=');
		size_t olen = eq ? (size_t)(eq - arg) : strlen(arg);
		if (strncmp(arg, "--", 2) != 0 || olen >= sizeof opt)
			return arg_error(a, "unexpected argument '%s'", arg);
		memcpy(opt, arg, olen);
		opt[olen] = '\0';
		int known = !strcmp(opt, "--listen") || !strcmp(opt, "--body-bytes") ||
			    (!a->origin && (!strcmp(opt, "--name") || !strcmp(opt, "--work-ms") ||
					    !strcmp(opt, "--fail-status"))) ||
			    (a->origin && !strcmp(opt, "--max-age"));
		if (!known)
			return arg_error(a, "unknown option '%s'", opt);
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return arg_error(a, "option %s needs a value", opt);
			val = argv[++i];
		}
		if (!strcmp(opt, "--listen")) {
			char host[64];
			uint16_t port;
			if (mc_parse_hostport(val, host, sizeof host, &port) < 0)
				return arg_error(a, "--listen: expected HOST:PORT, got '%s'", val);
			a->listen = val;
		} else if (!strcmp(opt, "--name")) {
			if (!name_ok(val))
				return arg_error(
				    a,
				    "--name: expected 1-64 printable characters without "
				    "spaces or quotes, got '%s'",
				    val);
			a->name = val;
		} else if (!strcmp(opt, "--work-ms")) {
			if (parse_num(a, opt, val, MAX_WORK_MS, &a->work_ms) < 0)
				return -1;
		} else if (!strcmp(opt, "--fail-status")) {
			if (parse_num(a, opt, val, 999, &a->fail_status) < 0)
				return -1;
			if (a->fail_status < 200)
				return arg_error(a,
						 "--fail-status: expected a status in 200..999, "
						 "got '%s'",
						 val);
		} else if (!strcmp(opt, "--body-bytes")) {
			if (parse_num(a, opt, val, MAX_BODY_BYTES, &a->body_bytes) < 0)
				return -1;
		} else if (parse_num(a, opt, val, MAX_AGE_MAX, &a->max_age) < 0) {
			return -1;
		}
	}
	if (!a->listen)
		return arg_error(a, "missing --listen HOST:PORT");
	return 0;
}

static int app_main(app *a, int argc, char **argv)
{
	int rc = parse_args(a, argc, argv);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&a->loop);
	mc_http_server_opts o;
	mc_http_server_opts_default(&o);
	o.max_connections = 65536;
	rc = mc_http_server_new(&a->srv, &a->loop, a->listen, &o,
				a->origin ? origin_handler : worker_handler, a);
	if (rc < 0) {
		fprintf(stderr, "%s: cannot listen on %s: %s\n", a->prog, a->listen,
			mc_strerror(rc));
		uv_run(&a->loop, UV_RUN_DEFAULT);
		uv_loop_close(&a->loop);
		return 1;
	}
	uv_signal_init(&a->loop, &a->sigterm);
	uv_signal_init(&a->loop, &a->sigint);
	a->sigterm.data = a;
	a->sigint.data = a;
	uv_signal_start(&a->sigterm, on_signal, SIGTERM);
	uv_signal_start(&a->sigint, on_signal, SIGINT);

	char host[64];
	uint16_t port;
	mc_parse_hostport(a->listen, host, sizeof host, &port);
	const char *lb = strchr(host, ':') ? "[" : "";
	const char *rb = strchr(host, ':') ? "]" : "";
	if (a->origin)
		printf("sample-origin listening on %s%s%s:%u\n", lb, host, rb,
		       mc_http_server_port(a->srv));
	else
		printf("sample-worker %s listening on %s%s%s:%u\n", a->name, lb, host, rb,
		       mc_http_server_port(a->srv));
	fflush(stdout);

	uv_run(&a->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&a->loop) != 0)
		MC_WARN(a->prog, "event loop closed with handles still open");
	return 0;
}

int mc_testbed_sample_worker_main(int argc, char **argv)
{
	app a;
	memset(&a, 0, sizeof a);
	a.prog = "sample-worker";
	a.name = "worker";
	return app_main(&a, argc, argv);
}

int mc_testbed_sample_origin_main(int argc, char **argv)
{
	app a;
	memset(&a, 0, sizeof a);
	a.prog = "sample-origin";
	a.origin = 1;
	a.max_age = 60;
	return app_main(&a, argc, argv);
}
