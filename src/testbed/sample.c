/* `metrocell sample-worker` and `metrocell sample-origin`: small but real HTTP
 * applications on src/http that the demo, the bench and the integration tests
 * put behind cells (workers for proxy routes, the origin for cache routes). */
#include "testbed/testbed.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/common.h"
#include "http/http.h"

#define MAX_BODY_BYTES (64u << 20)
#define MAX_WORK_MS 600000u
#define MAX_AGE_MAX 31536000u
#define NAME_MAX_LEN 64
#define TARGETS_MAX 10000 /* distinct targets the origin counts one by one */
#define CC_MAX 256

typedef struct work work;

typedef struct target_count {
	char *target;
	uint64_t n;
} target_count;

typedef struct app {
	const char *prog; /* "sample-worker" or "sample-origin" */
	int origin;
	const char *listen;
	const char *name;
	uint64_t work_ms, body_bytes, max_age;
	uint64_t fail_status; /* worker: answer every request (not /healthz) with it; 0: off */
	uint64_t n; /* requests answered (health checks excluded) */
	const char *cache_control; /* origin: --cache-control (else max-age=--max-age) */
	const char *vary;          /* origin: --vary */
	target_count *targets;     /* origin: requests per target, for /_origin/stats */
	size_t ntargets;
	uint64_t other;   /* requests to targets past TARGETS_MAX */
	uint64_t n304;    /* 304 answers */
	int fail;         /* origin: answer 503 to everything (POST /_origin/fail?on=1) */
	uint64_t start_s; /* the Last-Modified of lm=1 answers */
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
	void (*answer)(app *a, mc_http_exchange *ex, uint64_t n); /* origin; NULL: worker */
	int status;                         /* worker answers */
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
    "                               [--cache-control CC] [--vary NAME] [--work-ms N]\n"
    "  --listen HOST:PORT  address to serve on (port 0 picks a free one)\n"
    "  --max-age S         Cache-Control max-age in seconds (default 60)\n"
    "  --body-bytes N      pad the JSON body to N bytes\n"
    "  --cache-control CC  the whole Cache-Control value (instead of max-age=S)\n"
    "  --vary NAME         answer with Vary: NAME and the request's NAME in the body\n"
    "  --work-ms N         delay every answer by N ms\n"
    "Per request, query parameters override: cc=, vary=, status=, delay=, bytes=,\n"
    "lm=1 (Last-Modified), etag=0 (no ETag), cookie=1 (Set-Cookie).\n"
    "GET /_origin/stats: request counts; POST /_origin/fail?on=1|0: answer 503 or not.\n";

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

static uint64_t query_u64(const mc_http_request *r, const char *name, uint64_t max,
			  uint64_t dflt);

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
	if (w->answer)
		w->answer(w->a, w->ex, w->n);
	else
		worker_answer(w->a, w->ex, w->n, w->status);
	work_finish(w);
}

/* Answers ex after delay_ms, from a timer: with answer() when it is set, else as
 * a worker (status, events: the caller fills them in the work returned). */
static work *answer_later(app *a, mc_http_exchange *ex, uint64_t n, uint64_t delay_ms,
			  void (*answer)(app *, mc_http_exchange *, uint64_t))
{
	work *w = mc_calloc(1, sizeof *w);
	w->a = a;
	w->ex = ex;
	w->n = n;
	w->answer = answer;
	uv_timer_init(&a->loop, &w->timer);
	w->timer.data = w;
	w->next = a->pending;
	if (a->pending)
		a->pending->prev = w;
	a->pending = w;
	uv_timer_start(&w->timer, on_work_done, delay_ms, 0);
	return w;
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
	int status = (int)query_u64(r, "status", 999, 200);
	if (status < 200)
		status = 200;
	if (a->fail_status)
		status = (int)a->fail_status;
	uint64_t delay = query_u64(r, "delay_ms", MAX_WORK_MS, a->work_ms);
	uint64_t events = query_u64(r, "sse", 100000, 0);
	if (delay == 0 && events == 0) {
		worker_answer(a, ex, a->n, status);
		return;
	}
	work *w = answer_later(a, ex, a->n, delay, NULL);
	w->status = status;
	w->sse_left = events;
	w->gap_ms = query_u64(r, "gap_ms", MAX_WORK_MS, 0);
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

/* The value of query parameter name (percent-decoded into out), or NULL. */
static const char *query_param(const mc_http_request *r, const char *name, mc_buf *out)
{
	const char *q = r->query;
	size_t nl = strlen(name);
	while (*q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		if (len > nl && q[nl] == '=' && strncmp(q, name, nl) == 0) {
			if (mc_http_percent_decode(q + nl + 1, len - nl - 1, out) < 0)
				return NULL;
			mc_buf_append(out, "", 1); /* NUL terminated */
			out->len--;
			return out->data ? out->data : "";
		}
		q += len + (amp ? 1 : 0);
	}
	return NULL;
}

static uint64_t query_u64(const mc_http_request *r, const char *name, uint64_t max,
			  uint64_t dflt)
{
	mc_buf b;
	mc_buf_init(&b);
	uint64_t v = dflt;
	const char *s = query_param(r, name, &b);
	if (s && mc_parse_u64(s, b.len, max, &v) < 0)
		v = dflt;
	mc_buf_fini(&b);
	return v;
}

static void count_target(app *a, const char *target)
{
	for (size_t i = 0; i < a->ntargets; i++) {
		if (strcmp(a->targets[i].target, target) == 0) {
			a->targets[i].n++;
			return;
		}
	}
	if (a->ntargets == TARGETS_MAX) {
		a->other++;
		return;
	}
	a->targets = mc_realloc(a->targets, (a->ntargets + 1) * sizeof *a->targets);
	a->targets[a->ntargets++] = (target_count){mc_strdup(target), 1};
}

static void origin_stats(app *a, mc_http_exchange *ex)
{
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_printf(&b, "{\"requests\":%llu,\"not_modified\":%llu,\"other\":%llu,\"fail\":%s,"
			  "\"targets\":{",
		      (unsigned long long)a->n, (unsigned long long)a->n304,
		      (unsigned long long)a->other, a->fail ? "true" : "false");
	for (size_t i = 0; i < a->ntargets; i++) {
		if (i)
			mc_buf_append_str(&b, ",");
		mc_buf_append_json(&b, a->targets[i].target, strlen(a->targets[i].target));
		mc_buf_printf(&b, ":%llu", (unsigned long long)a->targets[i].n);
	}
	mc_buf_append_str(&b, "}}\n");
	mc_http_header h[] = {{"Content-Type", 12, "application/json", 16},
			      {"Cache-Control", 13, "no-store", 8}};
	mc_http_respond(ex, 200, h, MC_ARRAY_LEN(h), b.data, b.len);
	mc_buf_fini(&b);
}

static void origin_answer(app *a, mc_http_exchange *ex, uint64_t n)
{
	(void)n;
	const mc_http_request *r = mc_http_exchange_request(ex);
	if (a->fail) {
		const char fail[] = "{\"error\":\"origin_failing\",\"message\":\"fail mode is on\"}\n";
		mc_http_header h[] = {{"Content-Type", 12, "application/json", 16},
				      {"Cache-Control", 13, "no-store", 8}};
		mc_http_respond(ex, 503, h, MC_ARRAY_LEN(h), fail, sizeof fail - 1);
		return;
	}
	mc_buf ccb, varyb;
	mc_buf_init(&ccb);
	mc_buf_init(&varyb);
	char cc[CC_MAX];
	const char *qcc = query_param(r, "cc", &ccb);
	if (qcc)
		snprintf(cc, sizeof cc, "%s", qcc);
	else if (a->cache_control)
		snprintf(cc, sizeof cc, "%s", a->cache_control);
	else
		snprintf(cc, sizeof cc, "max-age=%llu", (unsigned long long)a->max_age);
	const char *vary = query_param(r, "vary", &varyb);
	if (!vary)
		vary = a->vary;
	int status = (int)query_u64(r, "status", 599, 200);
	if (status < 200)
		status = 200;
	/* the body depends on the target and the varied field only, so the ETag is a
	 * true validator */
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"origin\":\"sample\",\"path\":");
	mc_buf_append_json(&b, r->path, r->path_len);
	if (vary && *vary) {
		size_t vl = 0;
		const char *v = mc_http_header_find(r->headers, r->nheaders, vary, &vl);
		mc_buf_append_str(&b, ",\"vary\":");
		if (v)
			mc_buf_append_json(&b, v, vl);
		else
			mc_buf_append_str(&b, "null");
	}
	mc_buf_append_str(&b, "}");
	pad_json(&b, (size_t)query_u64(r, "bytes", MAX_BODY_BYTES, a->body_bytes));
	char etag[16], hits[24], lm[40];
	snprintf(etag, sizeof etag, "\"%08x\"", (unsigned)mc_crc32c(0, b.data, b.len));
	snprintf(hits, sizeof hits, "%llu", (unsigned long long)a->n);
	mc_http_header h[8];
	size_t nh = 0;
	h[nh++] = (mc_http_header){"Content-Type", 12, "application/json", 16};
	h[nh++] = (mc_http_header){"Cache-Control", 13, cc, strlen(cc)};
	h[nh++] = (mc_http_header){"X-Origin-Hits", 13, hits, strlen(hits)};
	int with_etag = query_u64(r, "etag", 1, 1) == 1;
	if (with_etag)
		h[nh++] = (mc_http_header){"ETag", 4, etag, strlen(etag)};
	if (vary && *vary)
		h[nh++] = (mc_http_header){"Vary", 4, vary, strlen(vary)};
	if (query_u64(r, "lm", 1, 0) == 1) {
		time_t t = (time_t)a->start_s;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(lm, sizeof lm, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		h[nh++] = (mc_http_header){"Last-Modified", 13, lm, strlen(lm)};
	}
	if (query_u64(r, "cookie", 1, 0) == 1)
		h[nh++] = (mc_http_header){"Set-Cookie", 10, "sid=sample", 10};
	size_t inm_len;
	const char *inm = mc_http_header_find(r->headers, r->nheaders, "if-none-match", &inm_len);
	int is_read = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
	if (inm && is_read && status == 200 && with_etag && etag_matches(inm, inm_len, etag)) {
		a->n304++;
		mc_http_respond(ex, 304, h + 1, nh - 1, NULL, 0);
	} else {
		mc_http_respond(ex, status, h, nh, b.data, b.len);
	}
	mc_buf_fini(&b);
	mc_buf_fini(&ccb);
	mc_buf_fini(&varyb);
}

static void origin_handler(void *ctx, mc_http_exchange *ex)
{
	app *a = ctx;
	const mc_http_request *r = mc_http_exchange_request(ex);
	if (strcmp(r->path, "/healthz") == 0) {
		answer_health(a, ex);
		return;
	}
	if (strcmp(r->path, "/_origin/stats") == 0) {
		origin_stats(a, ex);
		return;
	}
	if (strcmp(r->path, "/_origin/fail") == 0) {
		if (strcmp(r->method, "POST") != 0) {
			mc_http_header allow = {"Allow", 5, "POST", 4};
			mc_http_respond_error(ex, 405, &allow, 1, "method_not_allowed", "POST only");
			return;
		}
		a->fail = query_u64(r, "on", 1, 1) == 1;
		origin_stats(a, ex);
		return;
	}
	a->n++;
	count_target(a, r->target);
	uint64_t delay = query_u64(r, "delay", MAX_WORK_MS, a->work_ms);
	if (delay == 0)
		origin_answer(a, ex, a->n);
	else
		answer_later(a, ex, a->n, delay, origin_answer);
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
	for (size_t i = 0; i < a->ntargets; i++)
		free(a->targets[i].target);
	free(a->targets);
	a->targets = NULL;
	a->ntargets = 0;
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

/* Printable ASCII, spaces allowed (a header value). */
static int name_ok_spaces(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
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
			    !strcmp(opt, "--work-ms") ||
			    (!a->origin && (!strcmp(opt, "--name") || !strcmp(opt, "--fail-status"))) ||
			    (a->origin && (!strcmp(opt, "--max-age") ||
					   !strcmp(opt, "--cache-control") || !strcmp(opt, "--vary")));
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
		} else if (!strcmp(opt, "--cache-control")) {
			if (strlen(val) >= CC_MAX || !name_ok_spaces(val))
				return arg_error(a, "--cache-control: expected at most %d printable "
						    "characters, got '%s'",
						 CC_MAX - 1, val);
			a->cache_control = val;
		} else if (!strcmp(opt, "--vary")) {
			if (!name_ok(val))
				return arg_error(a, "--vary: expected a header name, got '%s'", val);
			a->vary = val;
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
	a.start_s = mc_wall_ms() / 1000 - 3600;
	return app_main(&a, argc, argv);
}
