/* `metrocell demo`: starts a region, two cells (lax, sfo) with two sample workers
 * each, and emulated links (client->cell, cell->region) on loopback; drives a
 * bounded mixed load; checks that every acknowledged write reached the region;
 * prints the latency table and writes report.json. docs/demo.md explains it. */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench/bench.h"
#include "bench/bench_int.h"

#ifndef MC_VERSION
#define MC_VERSION "dev"
#endif

#define NCELLS 2
#define REGION_NAME "us-west"
#define READY_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 10000
#define DRAIN_TIMEOUT_MS 30000
#define VERIFY_TIMEOUT_MS 60000
#define STOP_GRACE_MS 3000
#define MAX_FAILURES 16
#define OUT_MAX 1024 /* longest output directory path */

/* Emulated distances (one-way delay and jitter of each `metrocell link`). */
#define CLIENT_DELAY_MS 2
#define CLIENT_JITTER_MS 1
#define REGION_DELAY_MS 10
#define REGION_JITTER_MS 2

static const char *const cell_names[NCELLS] = {"lax", "sfo"};

typedef struct demo_opts {
	int quick;
	const char *out;
	uint64_t requests; /* per cell; 0 = default for the mode */
	uint32_t concurrency;
	uint32_t work_ms;
	size_t value_bytes;
} demo_opts;

typedef struct cell_topo {
	const char *name;
	char http[64], admin[64];
	char workers[2][64];
	char repl_link[64], repl_link_admin[64];
	char rhttp_link[64], rhttp_link_admin[64];
	char client_link[64], client_link_admin[64];
	char data_dir[OUT_MAX + 64], conf[OUT_MAX + 64];
	int connected;
	mc_http_pool *admin_pool;
	json_t *status; /* last /v1/status document of its admin listener */
	uint64_t drain_ms;
} cell_topo;

typedef struct demo {
	demo_opts o;
	char out[OUT_MAX];
	char logdir[OUT_MAX + 8];
	char region_http[64], region_repl[64];
	char region_data[OUT_MAX + 64], region_conf[OUT_MAX + 64];
	cell_topo cells[NCELLS];
	uv_loop_t loop;
	int loop_ok;
	mc_http_pool *region_pool;
	json_t *region_status;
	mc_bench_load *load;
	mc_bench_verify verify, verify_cell[NCELLS];
	int verified;
	int tty;
	uint64_t t_start, last_print_ns;
	uint64_t ph_startup, ph_connect, ph_load, ph_drain, ph_verify, ph_shutdown; /* ns */
	char started_at[32];
	char *failures[MAX_FAILURES];
	size_t nfailures;
	char *warnings[MAX_FAILURES];
	size_t nwarnings;
} demo;

static void note(char **list, size_t *n, const char *fmt, va_list ap)
{
	if (*n >= MAX_FAILURES)
		return;
	char buf[512];
	vsnprintf(buf, sizeof buf, fmt, ap);
	list[(*n)++] = mc_strdup(buf);
}

static void fail(demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(demo *d, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	note(d->failures, &d->nfailures, fmt, ap);
	va_end(ap);
}

static void warn(demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(demo *d, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	note(d->warnings, &d->nwarnings, fmt, ap);
	va_end(ap);
}

static double ms_since(uint64_t t0_ns)
{
	return (double)(mc_now_ns() - t0_ns) / 1e6;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: metrocell demo [--quick] [--out DIR] [--requests N] [--concurrency C]\n"
	    "                      [--work-ms N] [--value-bytes N]\n"
	    "  Starts region " REGION_NAME ", cells lax and sfo with two sample workers each and\n"
	    "  emulated links, drives a bounded mixed load (50%% proxy GET, 25%% kv PUT, 25%% kv\n"
	    "  GET), verifies every acknowledged write in the region, prints the table and\n"
	    "  writes DIR/report.json. Every process it starts is stopped before it exits.\n"
	    "  --quick          1500 requests per cell (default 20000), under 30 s\n"
	    "  --out DIR        output directory (created; default a new one under $TMPDIR)\n"
	    "  --requests N     requests per cell (overrides --quick)\n"
	    "  --concurrency C  requests in flight per cell (default 16)\n"
	    "  --work-ms N      sample worker work time per request (default 1)\n"
	    "  --value-bytes N  approximate size of each written value (default 64)\n"
	    "Exit status: 0 when the run worked, 1 when it did not (reason printed), 2 on "
	    "usage.\n");
}

static int parse_num(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!s || mc_parse_u64(s, strlen(s), max, out) != 0 || *out < min) {
		fprintf(stderr,
			"metrocell demo: %s expects a number in [%" PRIu64 ", %" PRIu64
			"], got %s\n",
			opt, min, max, s ? s : "nothing");
		return -1;
	}
	return 0;
}

static int parse_args(int argc, char **argv, demo_opts *o)
{
	memset(o, 0, sizeof *o);
	o->concurrency = 16;
	o->work_ms = 1;
	o->value_bytes = 64;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t n;
		if (!strcmp(a, "--quick")) {
			o->quick = 1;
		} else if (!strcmp(a, "--out")) {
			if (!v || !v[0]) {
				fprintf(stderr, "metrocell demo: --out expects a directory\n");
				return 2;
			}
			o->out = v;
			i++;
		} else if (!strcmp(a, "--requests")) {
			if (parse_num(a, v, 1, 100000000, &n))
				return 2;
			o->requests = n;
			i++;
		} else if (!strcmp(a, "--concurrency")) {
			if (parse_num(a, v, 1, 1024, &n))
				return 2;
			o->concurrency = (uint32_t)n;
			i++;
		} else if (!strcmp(a, "--work-ms")) {
			if (parse_num(a, v, 0, 10000, &n))
				return 2;
			o->work_ms = (uint32_t)n;
			i++;
		} else if (!strcmp(a, "--value-bytes")) {
			if (parse_num(a, v, 16, 900, &n))
				return 2;
			o->value_bytes = (size_t)n;
			i++;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 1;
		} else {
			fprintf(stderr, "metrocell demo: unknown argument \"%s\"\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (!o->requests)
		o->requests = o->quick ? 1500 : 20000;
	return 0;
}

/* ---- output directory ----------------------------------------------------------------- */

static int mkdir_p(const char *path)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Creates the output directory. A directory that already holds a previous demo run
 * (its report.json) gets that run's data/, logs/ and config/ removed, so reruns
 * with the same --out start from empty stores; nothing else is ever deleted. */
static int setup_out(demo *d)
{
	if (d->o.out) {
		int rc = mkdir_p(d->o.out);
		if (rc) {
			fprintf(stderr, "metrocell demo: cannot create %s: %s\n", d->o.out,
				strerror(-rc));
			return -1;
		}
		char real[PATH_MAX];
		if (!realpath(d->o.out, real))
			snprintf(real, sizeof real, "%s", d->o.out);
		if (strlen(real) >= sizeof d->out) {
			fprintf(stderr, "metrocell demo: --out path too long (at most %zu bytes)\n",
				sizeof d->out - 1);
			return -1;
		}
		memcpy(d->out, real, strlen(real) + 1);
		char prev[PATH_MAX + 16];
		snprintf(prev, sizeof prev, "%s/report.json", d->out);
		if (access(prev, F_OK) == 0) {
			static const char *const sub[] = {"data", "logs", "config"};
			for (size_t i = 0; i < MC_ARRAY_LEN(sub); i++) {
				char p[PATH_MAX + 16];
				snprintf(p, sizeof p, "%s/%s", d->out, sub[i]);
				if (access(p, F_OK) == 0)
					nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
			}
			unlink(prev);
		}
	} else {
		const char *tmp = getenv("TMPDIR");
		if (!tmp || !tmp[0] || strlen(tmp) > sizeof d->out - 32)
			tmp = "/tmp";
		snprintf(d->out, sizeof d->out, "%s/metrocell-demo-XXXXXX", tmp);
		if (!mkdtemp(d->out)) {
			fprintf(stderr, "metrocell demo: cannot create a directory under %s: %s\n",
				tmp, strerror(errno));
			return -1;
		}
	}
	snprintf(d->logdir, sizeof d->logdir, "%s/logs", d->out);
	static const char *const sub[] = {"logs", "data", "config"};
	for (size_t i = 0; i < MC_ARRAY_LEN(sub); i++) {
		char p[PATH_MAX + 16];
		snprintf(p, sizeof p, "%s/%s", d->out, sub[i]);
		int rc = mkdir_p(p);
		if (rc) {
			fprintf(stderr, "metrocell demo: cannot create %s: %s\n", p, strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/* ---- ports and configs ------------------------------------------------------------------ */

/* Binds a fresh socket to 127.0.0.1:port (0 = any) and returns it with the port
 * in *got, or -errno. */
static int bind_port(uint16_t port, uint16_t *got)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof sa;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	*got = ntohs(sa.sin_port);
	return fd;
}

/* Picks n distinct free loopback ports for the children to listen on. They are
 * taken below the kernel's ephemeral range (ip_local_port_range), so the
 * outgoing connections the processes open while the later ones start can never
 * land on a port picked for those; each candidate is tested by binding it, and all
 * stay bound until every port is chosen. Another program can still bind one
 * before our child does: that child then fails to start and says so. Falls back
 * to kernel-chosen ports when there is no room below the range. */
static int pick_ports(char (*out[])[64], size_t n)
{
	int fds[64];
	size_t got = 0;
	MC_ASSERT(n <= MC_ARRAY_LEN(fds));
	unsigned lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%u %u", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	const unsigned base = 10000;
	unsigned span = lo > base + 2000 ? lo - base : 0;
	unsigned start =
	    span ? (unsigned)((uint64_t)getpid() * 7919u + mc_now_ns() / 1000u) % span : 0;
	for (unsigned k = 0; span && k < span && got < n; k++) {
		uint16_t port;
		int fd = bind_port((uint16_t)(base + (start + k) % span), &port);
		if (fd < 0)
			continue;
		fds[got] = fd;
		snprintf(*out[got++], 64, "127.0.0.1:%u", (unsigned)port);
	}
	int rc = 0;
	while (got < n) {
		uint16_t port;
		int fd = bind_port(0, &port);
		if (fd < 0) {
			rc = fd;
			break;
		}
		fds[got] = fd;
		snprintf(*out[got++], 64, "127.0.0.1:%u", (unsigned)port);
	}
	for (size_t i = 0; i < got; i++)
		close(fds[i]);
	return rc;
}

static int write_json(const char *path, json_t *doc)
{
	char tmp[PATH_MAX + 8];
	if (strlen(path) >= PATH_MAX)
		return -1;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int rc = json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -1;
	return rc;
}

static int write_configs(demo *d)
{
	snprintf(d->region_data, sizeof d->region_data, "%s/data/region", d->out);
	snprintf(d->region_conf, sizeof d->region_conf, "%s/config/region.json", d->out);
	json_t *cells = json_array();
	for (size_t i = 0; i < NCELLS; i++)
		json_array_append_new(cells, json_string(cell_names[i]));
	json_t *r = json_pack("{s:s, s:{s:s, s:s}, s:s, s:o}", "region", REGION_NAME, "listen",
			      "http", d->region_http, "repl", d->region_repl, "data_dir",
			      d->region_data, "cells", cells);
	int rc = write_json(d->region_conf, r);
	json_decref(r);
	if (rc)
		return -1;
	for (size_t i = 0; i < NCELLS; i++) {
		cell_topo *c = &d->cells[i];
		snprintf(c->data_dir, sizeof c->data_dir, "%s/data/%s", d->out, c->name);
		snprintf(c->conf, sizeof c->conf, "%s/config/%s.json", d->out, c->name);
		json_t *doc = json_pack("{s:s, s:{s:s, s:s}, s:s, s:{s:s, s:s}, s:{s:{s:[s,s]}},"
					" s:[{s:s, s:s, s:s, s:s}, {s:s, s:s, s:s}]}",
					"cell", c->name, "listen", "http", c->http, "admin",
					c->admin, "data_dir", c->data_dir, "region", "repl",
					c->repl_link, "http", c->rhttp_link, "pools", "app",
					"workers", c->workers[0], c->workers[1], "routes", "name",
					"app", "prefix", "/app/", "kind", "proxy", "pool", "app",
					"name", "kv", "prefix", "/v1/kv/", "kind", "kv");
		if (!doc)
			return -1;
		rc = write_json(c->conf, doc);
		json_decref(doc);
		if (rc)
			return -1;
	}
	return 0;
}

/* ---- starting processes ----------------------------------------------------------------- */

static void print_log_tail(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char lines[8][256];
	size_t n = 0;
	char buf[256];
	while (fgets(buf, sizeof buf, f)) {
		snprintf(lines[n % 8], sizeof lines[0], "%s", buf);
		n++;
	}
	fclose(f);
	if (n == 0)
		return;
	fprintf(stderr, "  last lines of %s:\n", path);
	for (size_t i = n > 8 ? n - 8 : 0; i < n; i++)
		fprintf(stderr, "    %s", lines[i % 8]);
	if (lines[(n - 1) % 8][strlen(lines[(n - 1) % 8]) - 1] != '\n')
		fputc('\n', stderr);
}

static int start(demo *d, const char *name, const char *role, const char *const *args,
		 const char *ready)
{
	char err[768];
	int rc = mc_bench_proc_spawn(name, role, args, ready, READY_TIMEOUT_MS, err, sizeof err);
	size_t n = mc_bench_proc_count();
	if (rc) {
		fail(d, "%s", err);
		fprintf(stderr, "metrocell demo: %s\n", err);
		/* the log is this process's only if it got as far as being recorded */
		if (n > 0 && strcmp(mc_bench_proc_get(n - 1)->name, name) == 0)
			print_log_tail(mc_bench_proc_get(n - 1)->log_path);
		return rc;
	}
	const mc_bench_proc *p = mc_bench_proc_get(n - 1);
	printf("  %-16s pid %-7d ready in %4" PRIu64 " ms  (%s)\n", name, (int)p->pid, p->ready_ms,
	       role);
	fflush(stdout);
	return 0;
}

static int start_link(demo *d, const char *name, const char *listen, const char *to,
		      const char *admin, int delay, int jitter, const char *role)
{
	char sdelay[16], sjitter[16], ready[96];
	snprintf(sdelay, sizeof sdelay, "%d", delay);
	snprintf(sjitter, sizeof sjitter, "%d", jitter);
	snprintf(ready, sizeof ready, "link %s listening", name);
	const char *args[] = {"link",	 "--listen", listen,	 "--to",  to,
			      "--delay", sdelay,     "--jitter", sjitter, "--admin",
			      admin,	 "--name",   name,	 NULL};
	return start(d, name, role, args, ready);
}

static int start_all(demo *d)
{
	char ready[96];
	snprintf(ready, sizeof ready, "region %s ready", REGION_NAME);
	const char *rargs[] = {"region", "-c", d->region_conf, NULL};
	if (start(d, "region", "region " REGION_NAME, rargs, ready))
		return -1;
	char swork[16];
	snprintf(swork, sizeof swork, "%u", d->o.work_ms);
	for (size_t i = 0; i < NCELLS; i++) {
		cell_topo *c = &d->cells[i];
		char name[48];
		snprintf(name, sizeof name, "%s-repl-link", c->name);
		if (start_link(d, name, c->repl_link, d->region_repl, c->repl_link_admin,
			       REGION_DELAY_MS, REGION_JITTER_MS, "link cell->region repl"))
			return -1;
		snprintf(name, sizeof name, "%s-region-link", c->name);
		if (start_link(d, name, c->rhttp_link, d->region_http, c->rhttp_link_admin,
			       REGION_DELAY_MS, REGION_JITTER_MS, "link cell->region http"))
			return -1;
		for (size_t w = 0; w < 2; w++) {
			snprintf(name, sizeof name, "%s-w%zu", c->name, w + 1);
			snprintf(ready, sizeof ready, "sample-worker %s listening", name);
			const char *wargs[] = {"sample-worker", "--listen", c->workers[w],
					       "--name",	name,	    "--work-ms",
					       swork,		NULL};
			if (start(d, name, "sample worker", wargs, ready))
				return -1;
		}
		snprintf(ready, sizeof ready, "cell %s ready", c->name);
		const char *cargs[] = {"cell", "-c", c->conf, NULL};
		snprintf(name, sizeof name, "%s", c->name);
		if (start(d, name, "cell", cargs, ready))
			return -1;
		snprintf(name, sizeof name, "client-%s-link", c->name);
		if (start_link(d, name, c->client_link, c->http, c->client_link_admin,
			       CLIENT_DELAY_MS, CLIENT_JITTER_MS, "link client->cell"))
			return -1;
	}
	return 0;
}

/* ---- status polling ---------------------------------------------------------------------- */

static json_t *get_json(demo *d, mc_http_pool *pool, const char *target, char *why, size_t cap)
{
	mc_bench_reply r;
	mc_bench_http_call(&d->loop, pool, "GET", target, NULL, 0, &r);
	json_t *doc = NULL;
	if (r.err) {
		snprintf(why, cap, "%s: %s", target, mc_strerror(r.err));
	} else if (r.status != 200) {
		snprintf(why, cap, "%s: HTTP %d: %.120s", target, r.status, r.body);
	} else {
		json_error_t je;
		doc = json_loadb(r.body, r.body_len, 0, &je);
		if (!doc)
			snprintf(why, cap, "%s: bad JSON: %s", target, je.text);
	}
	mc_bench_reply_fini(&r);
	return doc;
}

static uint64_t jint(json_t *obj, const char *key)
{
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return (uint64_t)json_integer_value(v);
	if (json_is_real(v) && json_real_value(v) >= 0)
		return (uint64_t)json_real_value(v);
	return 0;
}

static double jnum(json_t *obj, const char *key)
{
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	return json_is_number(v) ? json_number_value(v) : 0;
}

static json_t *repl_of(const cell_topo *c)
{
	return c->status ? json_object_get(c->status, "replication") : NULL;
}

/* Fetches every cell's /v1/status into c->status. Returns how many answered. */
static size_t poll_cells(demo *d, char *why, size_t cap)
{
	size_t ok = 0;
	for (size_t i = 0; i < NCELLS; i++) {
		cell_topo *c = &d->cells[i];
		json_t *doc = get_json(d, c->admin_pool, "/v1/status", why, cap);
		if (!doc)
			continue;
		json_decref(c->status);
		c->status = doc;
		ok++;
	}
	return ok;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}


/* A wait loop stops when the demo was signalled or one of its processes died;
 * returns 1 then (the reason is recorded), else 0. */
static int interrupted(demo *d)
{
	if (mc_bench_proc_signalled()) {
		fail(d, "interrupted by signal %d", mc_bench_proc_signalled());
		return 1;
	}
	char err[768];
	if (mc_bench_proc_check(err, sizeof err)) {
		fail(d, "%s", err);
		return 1;
	}
	return 0;
}
static int wait_connected(demo *d)
{
	uint64_t t0 = mc_now_ns();
	char why[256] = "";
	for (;;) {
		poll_cells(d, why, sizeof why);
		size_t n = 0;
		for (size_t i = 0; i < NCELLS; i++) {
			json_t *rep = repl_of(&d->cells[i]);
			d->cells[i].connected = json_is_true(json_object_get(rep, "connected"));
			n += (size_t)d->cells[i].connected;
		}
		if (n == NCELLS)
			break;
		if (interrupted(d))
			return -1;
		if (ms_since(t0) > CONNECT_TIMEOUT_MS) {
			for (size_t i = 0; i < NCELLS; i++)
				if (!d->cells[i].connected)
					warn(d,
					     "cell %s did not report replication.connected within "
					     "%d ms%s%s",
					     d->cells[i].name, CONNECT_TIMEOUT_MS,
					     why[0] ? "; last error: " : "", why);
			break;
		}
		mc_bench_proc_drain();
		sleep_ms(50);
	}
	d->ph_connect = mc_now_ns() - t0;
	printf("  replication connected: %s in %.0f ms\n",
	       d->cells[0].connected && d->cells[1].connected ? "all cells" : "NOT all cells",
	       (double)d->ph_connect / 1e6);
	return 0;
}

/* Waits until each cell's shipper reports acked_seq == last_seq, and last_seq
 * covers every seq the cell handed us in a PUT answer. */
static int wait_drained(demo *d)
{
	uint64_t t0 = mc_now_ns();
	char why[256] = "";
	int done[NCELLS] = {0};
	for (;;) {
		poll_cells(d, why, sizeof why);
		size_t n = 0;
		for (size_t i = 0; i < NCELLS; i++) {
			cell_topo *c = &d->cells[i];
			json_t *rep = repl_of(c);
			uint64_t last = jint(rep, "last_seq"), acked = jint(rep, "acked_seq");
			uint64_t need = d->load ? d->load->cells[i].last_ack_seq : 0;
			if (!done[i] && rep && json_object_get(rep, "acked_seq") && acked == last &&
			    last >= need) {
				done[i] = 1;
				c->drain_ms = (mc_now_ns() - t0) / 1000000u;
			}
			n += (size_t)done[i];
		}
		if (n == NCELLS)
			break;
		if (interrupted(d))
			return -1;
		if (ms_since(t0) > DRAIN_TIMEOUT_MS) {
			for (size_t i = 0; i < NCELLS; i++) {
				json_t *rep = repl_of(&d->cells[i]);
				if (!done[i])
					fail(d,
					     "cell %s did not drain its write log within %d ms "
					     "(last_seq %" PRIu64 ", acked_seq %" PRIu64 ")%s%s",
					     d->cells[i].name, DRAIN_TIMEOUT_MS,
					     jint(rep, "last_seq"), jint(rep, "acked_seq"),
					     why[0] ? "; last error: " : "", why);
			}
			break;
		}
		mc_bench_proc_drain();
		sleep_ms(20);
	}
	d->ph_drain = mc_now_ns() - t0;
	return 0;
}

/* ---- load --------------------------------------------------------------------------------- */

static void print_progress(demo *d, mc_bench_load *l, int final)
{
	uint64_t done, total, errors;
	mc_bench_load_progress(l, &done, &total, &errors);
	double secs = (double)(mc_now_ns() - l->start_ns) / 1e9;
	char line[256];
	int n = snprintf(line, sizeof line, "  load %5.1fs", secs);
	for (size_t i = 0; i < l->ncells && n > 0 && (size_t)n < sizeof line; i++)
		n += snprintf(line + n, sizeof line - (size_t)n, "  %s %" PRIu64 "/%" PRIu64,
			      l->cells[i].cell, l->cells[i].done, l->opts.requests_per_cell);
	if (n > 0 && (size_t)n < sizeof line)
		snprintf(line + n, sizeof line - (size_t)n, "  %6.0f req/s  errors %" PRIu64,
			 secs > 0 ? (double)done / secs : 0.0, errors);
	if (d->tty)
		printf("\r%s\033[K%s", line, final ? "\n" : "");
	else
		printf("%s\n", line);
	fflush(stdout);
}

static int on_tick(void *arg, mc_bench_load *l)
{
	demo *d = arg;
	uint64_t now = mc_now_ns();
	int final = l->end_ns != 0;
	mc_bench_proc_drain();
	if (!final) {
		/* The signal first: a terminal's ^C also reaches the children. */
		char err[768];
		if (mc_bench_proc_signalled()) {
			fail(d, "interrupted by signal %d", mc_bench_proc_signalled());
			return 1; /* the final tick prints the last progress line */
		}
		if (mc_bench_proc_check(err, sizeof err)) {
			fail(d, "%s", err);
			return 1;
		}
	}
	uint64_t every = d->tty ? 500000000u : 2000000000u;
	if (final || now - d->last_print_ns >= every) {
		d->last_print_ns = now;
		print_progress(d, l, final);
	}
	return 0;
}

static int run_load(demo *d)
{
	mc_bench_load_opts lo = {.requests_per_cell = d->o.requests,
				 .concurrency = d->o.concurrency,
				 .timeout_ms = 10000,
				 .progress_ms = 100,
				 .value_bytes = d->o.value_bytes};
	const char *names[NCELLS], *addrs[NCELLS];
	for (size_t i = 0; i < NCELLS; i++) {
		names[i] = d->cells[i].name;
		addrs[i] = d->cells[i].client_link;
	}
	int rc = mc_bench_load_new(&d->load, &d->loop, &lo, names, addrs, NCELLS);
	if (rc) {
		fail(d, "cannot create the load generator: %s", mc_strerror(rc));
		return -1;
	}
	printf("load: %" PRIu64
	       " requests per cell, %u in flight per cell, through the client links\n",
	       d->o.requests, d->o.concurrency);
	d->last_print_ns = mc_now_ns();
	rc = mc_bench_load_run(d->load, on_tick, d);
	d->ph_load = d->load->end_ns - d->load->start_ns;
	if (rc) {
		if (!d->nfailures)
			fail(d, "load stopped early");
		return -1;
	}
	return 0;
}

/* ---- results -------------------------------------------------------------------------------- */

/* Rounds to three decimals (microseconds for a value in ms): no false digits. */
static double r3(double x)
{
	return floor(x * 1000.0 + 0.5) / 1000.0;
}

/* Writes the cell acknowledged with a 2xx; those without a version cannot be
 * found in the region and so count against writes_in_region. */
static uint64_t cell_acked(const mc_bench_cell_load *c)
{
	return c->nwrites + c->put_no_version;
}

static double q_ms(const mc_hist *h, double q)
{
	return (double)mc_hist_quantile(h, q) / 1000.0;
}

/* Sums the rows of cell with route and method whose status was 2xx. */
static uint64_t ok_count(const mc_bench_load *l, size_t cell, const char *route, const char *method,
			 const char *outcome)
{
	uint64_t n = 0;
	for (size_t i = 0; i < l->nrows; i++) {
		const mc_bench_row *r = &l->rows[i];
		if (r->cell == cell && !strcmp(r->route, route) && !strcmp(r->method, method) &&
		    (!outcome || !strcmp(r->outcome, outcome)))
			n += r->n2xx;
	}
	return n;
}

static int row_cmp(const void *a, const void *b)
{
	const mc_bench_row *x = a, *y = b;
	if (x->cell != y->cell)
		return x->cell < y->cell ? -1 : 1;
	int c = strcmp(x->route, y->route);
	if (c)
		return c;
	c = strcmp(x->method, y->method);
	return c ? c : strcmp(x->outcome, y->outcome);
}

static void judge(demo *d)
{
	mc_bench_load *l = d->load;
	if (!l)
		return;
	for (size_t i = 0; i < l->ncells; i++) {
		const mc_bench_cell_load *c = &l->cells[i];
		if (ok_count(l, i, "app", "GET", "local") == 0)
			fail(d,
			     "cell %s: no proxy request (route app) was served with outcome local",
			     c->cell);
		if (ok_count(l, i, "kv", "PUT", NULL) == 0)
			fail(d, "cell %s: no kv write succeeded", c->cell);
		if (ok_count(l, i, "kv", "GET", NULL) == 0)
			fail(d, "cell %s: no kv read succeeded", c->cell);
		if (c->errors)
			fail(d, "cell %s: %" PRIu64 " requests got no answer (first: %s)", c->cell,
			     c->errors, c->first_error);
		if (c->non2xx)
			fail(d,
			     "cell %s: %" PRIu64
			     " requests were answered with a non-2xx status (first: %s)",
			     c->cell, c->non2xx, c->first_error);
		if (c->reads_stale || c->reads_missing)
			fail(d,
			     "cell %s: read-your-writes violated: %" PRIu64 " reads older than the "
			     "acknowledged version, %" PRIu64 " acknowledged keys not found",
			     c->cell, c->reads_stale, c->reads_missing);
		if (c->put_no_version)
			fail(d, "cell %s: %" PRIu64 " acknowledged writes carried no version",
			     c->cell, c->put_no_version);
	}
	if (d->verified) {
		uint64_t acked = 0;
		for (size_t i = 0; i < l->ncells; i++)
			acked += cell_acked(&l->cells[i]);
		if (acked == 0)
			fail(d, "no write was acknowledged");
		if (d->verify.matched != acked)
			fail(d,
			     "%" PRIu64 " of %" PRIu64
			     " acknowledged writes are in the region with the "
			     "acknowledged version (missing %" PRIu64 ", other version %" PRIu64
			     ", errors %" PRIu64 "; first: %s)",
			     d->verify.matched, acked, d->verify.missing,
			     d->verify.version_mismatch, d->verify.errors, d->verify.first_problem);
		if (d->verify.home_mismatch)
			warn(d, "%" PRIu64 " writes are in the region with another home cell (%s)",
			     d->verify.home_mismatch, d->verify.first_problem);
	}
	for (size_t i = 0; i < mc_bench_proc_count(); i++) {
		const mc_bench_proc *p = mc_bench_proc_get(i);
		char how[96];
		mc_bench_proc_describe(p, how, sizeof how);
		if (p->killed)
			warn(d, "%s (pid %d) ignored SIGTERM for %d ms and was killed", p->name,
			     (int)p->pid, STOP_GRACE_MS);
		else if (p->reaped && strcmp(how, "exited 0") != 0)
			warn(d, "%s (pid %d) %s after SIGTERM; see %s", p->name, (int)p->pid, how,
			     p->log_path);
	}
}

static void repl_lag(const demo *d, const char *key, double *out)
{
	*out = 0;
	for (size_t i = 0; i < NCELLS; i++) {
		double v = jnum(repl_of(&d->cells[i]), key);
		if (v > *out)
			*out = v;
	}
}

static void print_table(demo *d)
{
	mc_bench_load *l = d->load;
	if (!l || l->nrows == 0)
		return;
	qsort(l->rows, l->nrows, sizeof *l->rows, row_cmp);
	printf("\n%-5s %-6s %-6s %-14s %8s %6s %9s %9s %9s\n", "cell", "route", "method", "outcome",
	       "count", "non2xx", "p50 ms", "p95 ms", "p99 ms");
	for (size_t i = 0; i < l->nrows; i++) {
		const mc_bench_row *r = &l->rows[i];
		printf("%-5s %-6s %-6s %-14s %8" PRIu64 " %6" PRIu64 " %9.2f %9.2f %9.2f\n",
		       l->cells[r->cell].cell, r->route, r->method, r->outcome, r->count,
		       r->count - r->n2xx, q_ms(&r->hist, 0.50), q_ms(&r->hist, 0.95),
		       q_ms(&r->hist, 0.99));
	}
	printf("\n%-5s %9s %9s %9s %10s %10s %11s %10s\n", "cell", "lag p50", "lag p95", "lag p99",
	       "last_seq", "acked_seq", "reconnects", "drain ms");
	for (size_t i = 0; i < NCELLS; i++) {
		json_t *rep = repl_of(&d->cells[i]);
		printf("%-5s %9.2f %9.2f %9.2f %10" PRIu64 " %10" PRIu64 " %11" PRIu64 " %10" PRIu64
		       "\n",
		       d->cells[i].name, jnum(rep, "lag_p50_ms"), jnum(rep, "lag_p95_ms"),
		       jnum(rep, "lag_p99_ms"), jint(rep, "last_seq"), jint(rep, "acked_seq"),
		       jint(rep, "reconnects"), d->cells[i].drain_ms);
	}
	uint64_t acked = 0;
	for (size_t i = 0; i < l->ncells; i++)
		acked += cell_acked(&l->cells[i]);
	double p99;
	repl_lag(d, "lag_p99_ms", &p99);
	printf("\nreplication lag p99 (worst cell): %.2f ms\n", p99);
	if (d->verified)
		printf("writes acked: %" PRIu64 "   in region with the acked version: %" PRIu64
		       "   (missing %" PRIu64 ", other version %" PRIu64 ", errors %" PRIu64 ")\n",
		       acked, d->verify.matched, d->verify.missing, d->verify.version_mismatch,
		       d->verify.errors);
	else
		printf("writes acked: %" PRIu64 "   in region: not verified\n", acked);
}

/* ---- report.json ------------------------------------------------------------------------------
 */

static json_t *hist_ms(const mc_hist *h)
{
	return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "p50_ms", q_ms(h, 0.50), "p95_ms",
			 q_ms(h, 0.95), "p99_ms", q_ms(h, 0.99), "min_ms", (double)h->min / 1000.0,
			 "max_ms", (double)h->max / 1000.0, "mean_ms",
			 h->count ? r3((double)h->sum / (double)h->count / 1000.0) : 0.0);
}

static json_t *verify_json(const mc_bench_verify *v)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "checked", (json_int_t)v->checked,
			 "matched", (json_int_t)v->matched, "missing", (json_int_t)v->missing,
			 "version_mismatch", (json_int_t)v->version_mismatch, "home_mismatch",
			 (json_int_t)v->home_mismatch, "errors", (json_int_t)v->errors);
}

static json_t *strings(char *const *list, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(list[i]));
	return a;
}

static double ns_ms(uint64_t ns)
{
	return r3((double)ns / 1e6);
}

static json_t *build_report(demo *d, int ok)
{
	mc_bench_load *l = d->load;
	json_t *rep = json_object();
	json_object_set_new(rep, "version", json_integer(1));
	json_object_set_new(rep, "tool", json_string("metrocell demo"));
	json_object_set_new(rep, "metrocell_version", json_string(MC_VERSION));
	json_object_set_new(rep, "ok", json_boolean(ok));
	json_object_set_new(rep, "failures", strings(d->failures, d->nfailures));
	json_object_set_new(rep, "warnings", strings(d->warnings, d->nwarnings));
	json_object_set_new(rep, "started_at", json_string(d->started_at));
	json_object_set_new(rep, "duration_ms", json_real(r3(ms_since(d->t_start))));
	json_object_set_new(rep, "out_dir", json_string(d->out));

	json_object_set_new(
	    rep, "run",
	    json_pack("{s:b, s:I, s:I, s:I, s:I, s:s, s:{s:{s:i, s:i}, s:{s:i, s:i}}}", "quick",
		      d->o.quick, "requests_per_cell", (json_int_t)d->o.requests, "concurrency",
		      (json_int_t)d->o.concurrency, "worker_work_ms", (json_int_t)d->o.work_ms,
		      "value_bytes", (json_int_t)d->o.value_bytes, "mix",
		      "per 4 requests: proxy GET, kv PUT, proxy GET, kv GET of an acknowledged key",
		      "links", "client_to_cell", "delay_ms", CLIENT_DELAY_MS, "jitter_ms",
		      CLIENT_JITTER_MS, "cell_to_region", "delay_ms", REGION_DELAY_MS, "jitter_ms",
		      REGION_JITTER_MS));
	json_object_set_new(rep, "phases_ms",
			    json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "startup",
				      ns_ms(d->ph_startup), "replication_connect",
				      ns_ms(d->ph_connect), "load", ns_ms(d->ph_load),
				      "replication_drain", ns_ms(d->ph_drain), "verify",
				      ns_ms(d->ph_verify), "shutdown", ns_ms(d->ph_shutdown)));

	json_t *topo_cells = json_array();
	for (size_t i = 0; i < NCELLS; i++) {
		cell_topo *c = &d->cells[i];
		json_array_append_new(
		    topo_cells,
		    json_pack("{s:s, s:s, s:s, s:[s,s], s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "cell",
			      c->name, "http", c->http, "admin", c->admin, "workers", c->workers[0],
			      c->workers[1], "client_link", c->client_link, "client_link_admin",
			      c->client_link_admin, "repl_link", c->repl_link, "repl_link_admin",
			      c->repl_link_admin, "region_http_link", c->rhttp_link,
			      "region_http_link_admin", c->rhttp_link_admin, "config", c->conf));
	}
	json_object_set_new(rep, "topology",
			    json_pack("{s:{s:s, s:s, s:s, s:s}, s:o}", "region", "region",
				      REGION_NAME, "http", d->region_http, "repl", d->region_repl,
				      "config", d->region_conf, "cells", topo_cells));

	json_t *outcomes = json_array();
	uint64_t acked = 0, requests = 0, errors = 0;
	for (size_t i = 0; l && i < l->nrows; i++) {
		const mc_bench_row *r = &l->rows[i];
		json_t *o = json_pack(
		    "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "cell",
		    l->cells[r->cell].cell, "route", r->route, "method", r->method, "outcome",
		    r->outcome, "count", (json_int_t)r->count, "status_2xx", (json_int_t)r->n2xx,
		    "status_3xx", (json_int_t)r->n3xx, "status_4xx", (json_int_t)r->n4xx,
		    "status_5xx", (json_int_t)r->n5xx, "client_errors", (json_int_t)r->nerr,
		    "new_connections", (json_int_t)r->new_conns);
		json_t *q = hist_ms(&r->hist);
		json_object_update(o, q); /* copies the quantiles in; does not steal q */
		json_decref(q);
		json_array_append_new(outcomes, o);
	}
	json_object_set_new(rep, "outcomes", outcomes);

	json_t *cells = json_array();
	for (size_t i = 0; i < NCELLS; i++) {
		cell_topo *c = &d->cells[i];
		json_t *o = json_pack("{s:s}", "cell", c->name);
		if (l) {
			const mc_bench_cell_load *cl = &l->cells[i];
			double secs = cl->last_ns > cl->first_ns
					  ? (double)(cl->last_ns - cl->first_ns) / 1e9
					  : 0.0;
			acked += cell_acked(cl);
			requests += cl->done;
			errors += cl->errors;
			json_object_set_new(o, "requests", json_integer((json_int_t)cl->done));
			json_object_set_new(
			    o, "ops",
			    json_pack("{s:I, s:I, s:I}", "proxy",
				      (json_int_t)cl->ops[MC_BENCH_OP_PROXY], "kv_write",
				      (json_int_t)cl->ops[MC_BENCH_OP_PUT], "kv_read",
				      (json_int_t)cl->ops[MC_BENCH_OP_GET]));
			json_object_set_new(o, "client_errors",
					    json_integer((json_int_t)cl->errors));
			json_object_set_new(o, "non_2xx", json_integer((json_int_t)cl->non2xx));
			json_object_set_new(o, "duration_ms", json_real(r3(secs * 1000.0)));
			json_object_set_new(
			    o, "throughput_rps",
			    json_real(secs > 0 ? r3((double)cl->done / secs) : 0.0));
			json_object_set_new(o, "writes_acked",
					    json_integer((json_int_t)cell_acked(cl)));
			json_object_set_new(o, "reads_own_write_ok",
					    json_integer((json_int_t)cl->reads_ok));
			json_object_set_new(o, "reads_stale",
					    json_integer((json_int_t)cl->reads_stale));
			json_object_set_new(o, "reads_missing",
					    json_integer((json_int_t)cl->reads_missing));
			if (cl->first_error[0])
				json_object_set_new(o, "first_error", json_string(cl->first_error));
			if (d->verified) {
				json_object_set_new(
				    o, "writes_in_region",
				    json_integer((json_int_t)d->verify_cell[i].matched));
				json_object_set_new(o, "region_readback",
						    verify_json(&d->verify_cell[i]));
			}
		}
		json_object_set_new(o, "replication_drain_ms",
				    json_integer((json_int_t)c->drain_ms));
		json_t *rs = repl_of(c);
		json_object_set_new(o, "replication", rs ? json_incref(rs) : json_null());
		json_array_append_new(cells, o);
	}
	json_object_set_new(rep, "cells", cells);

	double p50, p95, p99;
	repl_lag(d, "lag_p50_ms", &p50);
	repl_lag(d, "lag_p95_ms", &p95);
	repl_lag(d, "lag_p99_ms", &p99);
	json_t *m = json_pack("{s:f, s:f, s:f, s:I, s:I, s:I, s:I}", "replication_lag_p50_ms", p50,
			      "replication_lag_p95_ms", p95, "replication_lag_p99_ms", p99,
			      "writes_acked", (json_int_t)acked, "writes_in_region",
			      (json_int_t)(d->verified ? d->verify.matched : 0), "requests",
			      (json_int_t)requests, "client_errors", (json_int_t)errors);
	if (d->verified) {
		json_object_set_new(m, "region_readback", verify_json(&d->verify));
		json_object_set_new(m, "region_readback_ms",
				    json_real(r3((double)d->verify.duration_us / 1000.0)));
	}
	json_object_set_new(rep, "metrics", m);
	json_object_set_new(rep, "region",
			    d->region_status ? json_incref(d->region_status) : json_null());

	json_t *procs = json_array();
	for (size_t i = 0; i < mc_bench_proc_count(); i++) {
		const mc_bench_proc *p = mc_bench_proc_get(i);
		char how[96];
		mc_bench_proc_describe(p, how, sizeof how);
		json_array_append_new(
		    procs, json_pack("{s:s, s:s, s:i, s:I, s:s, s:s, s:s, s:b}", "name", p->name,
				     "role", p->role, "pid", (int)p->pid, "ready_ms",
				     (json_int_t)p->ready_ms, "ready_line", p->ready_line, "log",
				     p->log_path, "exit", how, "killed", p->killed));
	}
	json_object_set_new(rep, "processes", procs);
	return rep;
}

/* ---- main ------------------------------------------------------------------------------------ */

/* Closes every client connection of the demo, so the servers see them go before
 * they are asked to stop. */
static void disconnect(demo *d)
{
	if (!d->loop_ok)
		return;
	for (size_t i = 0; i < NCELLS; i++) {
		mc_http_pool_free(d->cells[i].admin_pool);
		d->cells[i].admin_pool = NULL;
	}
	mc_http_pool_free(d->region_pool);
	d->region_pool = NULL;
	mc_bench_load_disconnect(d->load);
}

static void close_loop(demo *d)
{
	if (!d->loop_ok)
		return;
	disconnect(d);
	mc_bench_load_free(d->load);
	d->load = NULL;
	for (int i = 0; i < 1000 && uv_loop_close(&d->loop) == UV_EBUSY; i++)
		uv_run(&d->loop, UV_RUN_NOWAIT);
	d->loop_ok = 0;
}

static int control_pool(demo *d, mc_http_pool **out, const char *hostport)
{
	mc_http_pool_opts po;
	mc_http_pool_opts_default(&po);
	po.max_conns = 4;
	po.max_idle = 2;
	po.request_timeout_ms = 2000;
	int rc = mc_http_pool_new(out, &d->loop, hostport, &po);
	if (rc)
		fail(d, "cannot create an HTTP client for %s: %s", hostport, mc_strerror(rc));
	return rc;
}

static int run(demo *d)
{
	/* 2 region ports; per cell http, admin, 2 workers and 3 links x (listen, admin). */
	char(*ports[2 + NCELLS * 10])[64];
	size_t np = 0;
	ports[np++] = &d->region_http;
	ports[np++] = &d->region_repl;
	for (size_t i = 0; i < NCELLS; i++) {
		cell_topo *c = &d->cells[i];
		ports[np++] = &c->http;
		ports[np++] = &c->admin;
		ports[np++] = &c->workers[0];
		ports[np++] = &c->workers[1];
		ports[np++] = &c->repl_link;
		ports[np++] = &c->repl_link_admin;
		ports[np++] = &c->rhttp_link;
		ports[np++] = &c->rhttp_link_admin;
		ports[np++] = &c->client_link;
		ports[np++] = &c->client_link_admin;
	}
	int rc = pick_ports(ports, np);
	if (rc) {
		fail(d, "cannot pick free loopback ports: %s", strerror(-rc));
		return -1;
	}
	if (write_configs(d)) {
		fail(d, "cannot write the configs into %s/config", d->out);
		return -1;
	}

	printf("starting processes (logs in %s):\n", d->logdir);
	uint64_t t0 = mc_now_ns();
	rc = start_all(d);
	d->ph_startup = mc_now_ns() - t0;
	if (rc)
		return -1;

	if (uv_loop_init(&d->loop) != 0) {
		fail(d, "uv_loop_init failed");
		return -1;
	}
	d->loop_ok = 1;
	if (control_pool(d, &d->region_pool, d->region_http))
		return -1;
	for (size_t i = 0; i < NCELLS; i++)
		if (control_pool(d, &d->cells[i].admin_pool, d->cells[i].admin))
			return -1;

	if (wait_connected(d))
		return -1;
	if (run_load(d))
		return -1;

	printf("waiting for replication to drain (at most %d s)\n", DRAIN_TIMEOUT_MS / 1000);
	fflush(stdout);
	if (wait_drained(d))
		return -1;

	char why[256];
	d->region_status = get_json(d, d->region_pool, "/v1/status", why, sizeof why);
	if (!d->region_status)
		warn(d, "region status: %s", why);

	uint64_t acked = 0;
	for (size_t i = 0; i < NCELLS; i++)
		acked += d->load->cells[i].nwrites; /* the ones with a version to check */
	printf("reading %" PRIu64 " acknowledged writes back from the region at %s\n", acked,
	       d->region_http);
	fflush(stdout);
	t0 = mc_now_ns();
	rc = mc_bench_load_verify(d->load, d->region_http, 32, VERIFY_TIMEOUT_MS, &d->verify,
				  d->verify_cell);
	d->ph_verify = mc_now_ns() - t0;
	if (rc) {
		fail(d, "cannot read back from the region: %s", mc_strerror(rc));
		return -1;
	}
	d->verified = 1;
	return 0;
}

int mc_bench_demo_main(int argc, char **argv)
{
	demo *d = mc_calloc(1, sizeof *d);
	int rc = parse_args(argc, argv, &d->o);
	if (rc) {
		free(d);
		return rc == 1 ? 0 : rc;
	}
	d->t_start = mc_now_ns();
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(d->started_at, sizeof d->started_at, "%Y-%m-%dT%H:%M:%SZ", &tm);
	d->tty = isatty(STDOUT_FILENO);
	for (size_t i = 0; i < NCELLS; i++)
		d->cells[i].name = cell_names[i];
	if (setup_out(d)) {
		free(d);
		return 1;
	}
	printf("metrocell demo: region %s, cells lax and sfo, %s run\n", REGION_NAME,
	       d->o.quick ? "quick" : "full");
	printf("output directory: %s\n", d->out);
	fflush(stdout);
	mc_bench_proc_setup(d->logdir);

	run(d);
	disconnect(d);

	uint64_t t0 = mc_now_ns();
	mc_bench_proc_stop_all(STOP_GRACE_MS);
	d->ph_shutdown = mc_now_ns() - t0;
	printf("stopped %zu processes in %.0f ms\n", mc_bench_proc_count(), ns_ms(d->ph_shutdown));

	judge(d);
	int ok = d->nfailures == 0;
	print_table(d);

	char path[PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/report.json", d->out);
	json_t *rep = build_report(d, ok);
	if (write_json(path, rep) != 0) {
		fprintf(stderr, "metrocell demo: cannot write %s\n", path);
		ok = 0;
	}
	json_decref(rep);

	fflush(stdout);
	for (size_t i = 0; i < d->nwarnings; i++)
		fprintf(stderr, "metrocell demo: warning: %s\n", d->warnings[i]);
	for (size_t i = 0; i < d->nfailures; i++)
		fprintf(stderr, "metrocell demo: FAILED: %s\n", d->failures[i]);
	printf("\n%s in %.1f s; report: %s\n", ok ? "demo OK" : "demo FAILED",
	       ms_since(d->t_start) / 1000.0, path);
	fflush(stdout);

	close_loop(d);
	for (size_t i = 0; i < NCELLS; i++)
		json_decref(d->cells[i].status);
	json_decref(d->region_status);
	for (size_t i = 0; i < d->nfailures; i++)
		free(d->failures[i]);
	for (size_t i = 0; i < d->nwarnings; i++)
		free(d->warnings[i]);
	free(d);
	return ok ? 0 : 1;
}
