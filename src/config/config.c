/* Bootstrap config of a cell and of the region: reads the JSON document, checks
 * every key against the schema documented in config.h and docs/config.md (types,
 * ranges, names, cross references) and only then returns the owned structs.
 * Errors are one line: FILE:LINE:COL: JSON.PATH: message. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/config_int.h"

#define PATH_MAX_DEPTH 8
#define SHOW_MAX 40 /* bytes of a rendered string value before "..." */
#define NAME_MAX_LEN 31
#define DATA_DIR_MAX 4096
#define PREFIX_MAX 256
#define ROUTES_MAX 256
#define WORKERS_MAX 64

#define CHECK(expr)                                                                                \
	do {                                                                                       \
		if ((rc = (expr)) != 0)                                                            \
			goto out;                                                                  \
	} while (0)

/* Validation state: the document, the JSON path of the value being checked
 * (keys point into the jansson tree) and where the message goes. */
typedef struct vctx {
	const char *label;
	const char *text;
	size_t len;
	mc_jseg path[PATH_MAX_DEPTH + 1]; /* + 1: room for a member key when locating */
	size_t depth;
	char *err;
	size_t errcap;
	size_t max_bytes; /* documents larger than this are refused before parsing */
} vctx;

/* A rendered value for "got ..." in messages. */
typedef struct shown {
	char s[64];
} shown;

static void push_key(vctx *v, const char *key)
{
	MC_ASSERT(v->depth < PATH_MAX_DEPTH);
	v->path[v->depth].key = key;
	v->path[v->depth].index = 0;
	v->depth++;
}

static void push_index(vctx *v, size_t i)
{
	MC_ASSERT(v->depth < PATH_MAX_DEPTH);
	v->path[v->depth].key = NULL;
	v->path[v->depth].index = i;
	v->depth++;
}

static void pop(vctx *v)
{
	MC_ASSERT(v->depth > 0);
	v->depth--;
}

static void render_path(const mc_jseg *path, size_t n, char *buf, size_t cap)
{
	size_t at = 0;
	buf[0] = '\0';
	if (n == 0) {
		snprintf(buf, cap, "(root)");
		return;
	}
	for (size_t i = 0; i < n && at < cap; i++) {
		int m;
		if (path[i].key)
			m = snprintf(buf + at, cap - at, "%s%s", i ? "." : "", path[i].key);
		else
			m = snprintf(buf + at, cap - at, "[%zu]", path[i].index);
		if (m < 0)
			break;
		at += (size_t)m;
	}
}

__attribute__((format(printf, 2, 3))) static void set_err(vctx *v, const char *fmt, ...)
{
	if (!v->err || v->errcap == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->err, v->errcap, fmt, ap);
	va_end(ap);
	/* Keys in the path and jansson's quotes of the input come from the file:
	 * the message stays one line, free of control characters (they become '?'). */
	for (char *p = v->err; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

/* Reports an error at the value of the current path, or, with member set, at
 * that member's key inside the current object. The path shown is the current
 * one. Always returns MC_ECONFIG. */
__attribute__((format(printf, 3, 0))) static int vfail(vctx *v, const char *member, const char *fmt,
						       va_list ap)
{
	char msg[MC_CONFIG_ERR_MAX];
	char where[256];
	vsnprintf(msg, sizeof msg, fmt, ap);
	render_path(v->path, v->depth, where, sizeof where);
	size_t n = v->depth;
	if (member) {
		v->path[n].key = member;
		v->path[n].index = 0;
		n++;
	}
	mc_jpos pos;
	if (mc_config_jpos_locate(v->text, v->len, v->path, n, member != NULL, &pos) == 0)
		set_err(v, "%s:%u:%u: %s: %s", v->label, pos.line, pos.col, where, msg);
	else
		set_err(v, "%s: %s: %s", v->label, where, msg);
	return MC_ECONFIG;
}

__attribute__((format(printf, 2, 3))) static int fail(vctx *v, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = vfail(v, NULL, fmt, ap);
	va_end(ap);
	return rc;
}

__attribute__((format(printf, 3, 4))) static int fail_key(vctx *v, const char *member,
							  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = vfail(v, member, fmt, ap);
	va_end(ap);
	return rc;
}

/* ---- rendering values ----------------------------------------------------------- */

/* Quotes s as JSON would, cut after about SHOW_MAX bytes with "...". */
static shown quote(const char *s, size_t n)
{
	shown r;
	size_t at = 0;
	r.s[at++] = '"';
	for (size_t i = 0; i < n;) {
		if (at - 1 >= SHOW_MAX) {
			memcpy(r.s + at, "...", 3);
			at += 3;
			break;
		}
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			r.s[at++] = '\\';
			r.s[at++] = (char)c;
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			const char *esc = c == '\n'   ? "\\n"
					  : c == '\t' ? "\\t"
					  : c == '\r' ? "\\r"
						      : NULL;
			if (esc) {
				memcpy(r.s + at, esc, 2);
				at += 2;
			} else {
				at += (size_t)snprintf(r.s + at, sizeof r.s - at, "\\u%04x", c);
			}
			i++;
		} else {
			/* copy a whole UTF-8 sequence so the cut never splits one */
			do {
				r.s[at++] = s[i++];
			} while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80 &&
				 at < SHOW_MAX + 8);
		}
	}
	r.s[at++] = '"';
	r.s[at] = '\0';
	return r;
}

static shown show(const json_t *j)
{
	shown r;
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		snprintf(r.s, sizeof r.s, "an object");
		break;
	case JSON_ARRAY:
		snprintf(r.s, sizeof r.s, "an array");
		break;
	case JSON_STRING:
		return quote(json_string_value(j), json_string_length(j));
	case JSON_INTEGER:
		snprintf(r.s, sizeof r.s, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
		break;
	case JSON_REAL:
		snprintf(r.s, sizeof r.s, "%.15g", json_real_value(j));
		if (!strpbrk(r.s, ".eEn")) /* keep it visibly a float: 10.0 */
			strncat(r.s, ".0", sizeof r.s - strlen(r.s) - 1);
		break;
	case JSON_TRUE:
		snprintf(r.s, sizeof r.s, "true");
		break;
	case JSON_FALSE:
		snprintf(r.s, sizeof r.s, "false");
		break;
	default:
		snprintf(r.s, sizeof r.s, "null");
		break;
	}
	return r;
}

static shown show_str(const char *s)
{
	return quote(s, strlen(s));
}

/* ---- generic checks --------------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[65];
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			best = MC_MIN(best, up + 1);
			best = MC_MIN(best, row[j - 1] + 1);
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static int check_object(vctx *v, const json_t *j)
{
	if (!json_is_object(j))
		return fail(v, "expected an object, got %s", show(j).s);
	return 0;
}

/* Every key of obj must be in known (the first unknown one in document order is
 * reported, with the closest known key when it is within two edits), then every
 * key of required (NULL terminated) must be present. */
static int check_keys(vctx *v, json_t *obj, const char *const *known, size_t nknown,
		      const char *const *required)
{
	const char *k;
	json_t *val;
	json_object_foreach(obj, k, val)
	{
		const char *best = NULL;
		size_t bestd = 3, i;
		for (i = 0; i < nknown; i++) {
			if (strcmp(k, known[i]) == 0)
				break;
			size_t d = edit_distance(k, known[i]);
			if (d < bestd && d < strlen(known[i])) {
				bestd = d;
				best = known[i];
			}
		}
		if (i < nknown)
			continue;
		if (best)
			return fail_key(v, k, "unknown key %s (did you mean \"%s\"?)",
					show_str(k).s, best);
		return fail_key(v, k, "unknown key %s", show_str(k).s);
	}
	for (; required && *required; required++)
		if (!json_object_get(obj, *required))
			return fail(v, "missing required key \"%s\"", *required);
	return 0;
}

static int opt_u64(vctx *v, json_t *obj, const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
	json_t *j = json_object_get(obj, key);
	if (!j)
		return 0;
	int rc = 0;
	push_key(v, key);
	json_int_t x = json_is_integer(j) ? json_integer_value(j) : -1;
	if (!json_is_integer(j) || x < 0 || (uint64_t)x < min || (uint64_t)x > max)
		rc = fail(v, "expected an integer in %" PRIu64 "..%" PRIu64 ", got %s", min, max,
			  show(j).s);
	else
		*out = (uint64_t)x;
	pop(v);
	return rc;
}

static int opt_u32(vctx *v, json_t *obj, const char *key, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t x = *out;
	int rc = opt_u64(v, obj, key, min, max, &x);
	*out = (uint32_t)x;
	return rc;
}

/* An optional member that must be one of names; *out is its index. */
static int opt_enum(vctx *v, json_t *obj, const char *key, const char *const *names, size_t n,
		    int *out)
{
	json_t *j = json_object_get(obj, key);
	if (!j)
		return 0;
	if (json_is_string(j)) {
		for (size_t i = 0; i < n; i++) {
			if (strcmp(json_string_value(j), names[i]) == 0) {
				*out = (int)i;
				return 0;
			}
		}
	}
	char list[256];
	size_t at = 0;
	list[0] = '\0';
	for (size_t i = 0; i < n && at < sizeof list; i++) {
		const char *sep = i == 0 ? "" : n == 2 ? " or " : ", ";
		int m = snprintf(list + at, sizeof list - at, "%s\"%s\"", sep, names[i]);
		at += m > 0 ? (size_t)m : 0;
	}
	push_key(v, key);
	int rc = fail(v, "expected %s%s, got %s", n > 2 ? "one of " : "", list, show(j).s);
	pop(v);
	return rc;
}

static bool name_ok(const char *s, size_t n, bool underscore)
{
	if (n < 1 || n > NAME_MAX_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		      (underscore && c == '_')))
			return false;
	}
	return true;
}

static bool jname_ok(const json_t *j, bool underscore)
{
	return json_is_string(j) &&
	       name_ok(json_string_value(j), json_string_length(j), underscore);
}

/* A required name member ([a-z0-9-] or, with underscore, [a-z0-9_-]; 1..31). */
static int req_name(vctx *v, json_t *obj, const char *key, bool underscore, char **out)
{
	json_t *j = json_object_get(obj, key);
	MC_ASSERT(j); /* check_keys made sure */
	int rc = 0;
	push_key(v, key);
	if (!jname_ok(j, underscore))
		rc = fail(v, "expected a name matching [a-z0-9%s-]{1,31}, got %s",
			  underscore ? "_" : "", show(j).s);
	else
		*out = mc_strdup(json_string_value(j));
	pop(v);
	return rc;
}

/* "host:port" as mc_parse_hostport reads it, with the host also required to be
 * a real address (inet_pton) or "localhost"; *port is set when the syntax is
 * right (0 included, the caller decides). */
static bool hostport_parse(const char *s, unsigned *port)
{
	char host[64];
	unsigned char addr[16];
	uint16_t p;
	if (mc_parse_hostport(s, host, sizeof host, &p) != 0)
		return false;
	if (strcmp(host, "localhost") != 0 &&
	    inet_pton(s[0] == '[' ? AF_INET6 : AF_INET, host, addr) != 1)
		return false;
	*port = p;
	return true;
}

/* Checks the value at the current path as "host:port"; port 0 only with allow0. */
static int check_hostport(vctx *v, const json_t *j, bool allow0)
{
	unsigned port;
	if (!json_is_string(j) || !hostport_parse(json_string_value(j), &port))
		return fail(v, "expected \"host:port\", got %s", show(j).s);
	if (port == 0 && !allow0)
		return fail(v, "expected \"host:port\" with a port in 1..65535, got %s", show(j).s);
	return 0;
}

static int opt_hostport(vctx *v, json_t *obj, const char *key, bool allow0, char **out)
{
	json_t *j = json_object_get(obj, key);
	if (!j)
		return 0;
	push_key(v, key);
	int rc = check_hostport(v, j, allow0);
	if (rc == 0)
		*out = mc_strdup(json_string_value(j));
	pop(v);
	return rc;
}

static int req_data_dir(vctx *v, json_t *obj, char **out)
{
	json_t *j = json_object_get(obj, "data_dir");
	MC_ASSERT(j);
	int rc = 0;
	push_key(v, "data_dir");
	if (!json_is_string(j) || json_string_length(j) == 0 ||
	    json_string_length(j) > DATA_DIR_MAX)
		rc = fail(v, "expected a non-empty path of at most %d bytes, got %s", DATA_DIR_MAX,
			  show(j).s);
	else
		*out = mc_strdup(json_string_value(j));
	pop(v);
	return rc;
}

/* ---- sections shared by both files --------------------------------------------------- */

static const char *const LOG_KEYS[] = {"level", "format"};
static const char *const LOG_LEVELS[] = {"debug", "info", "warn", "error"};
static const char *const LOG_FORMATS[] = {"text", "json"};

static int parse_log(vctx *v, json_t *root, mc_log_conf *out)
{
	out->level = MC_LOG_INFO;
	out->json = 0;
	json_t *o = json_object_get(root, "log");
	if (!o)
		return 0;
	int rc, level = (int)MC_LOG_INFO;
	push_key(v, "log");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, LOG_KEYS, MC_ARRAY_LEN(LOG_KEYS), NULL));
	CHECK(opt_enum(v, o, "level", LOG_LEVELS, MC_ARRAY_LEN(LOG_LEVELS), &level));
	CHECK(opt_enum(v, o, "format", LOG_FORMATS, MC_ARRAY_LEN(LOG_FORMATS), &out->json));
	out->level = (mc_log_level)level; /* LOG_LEVELS is in mc_log_level order */
out:
	pop(v);
	return rc;
}

static const char *const STATE_KEYS[] = {"map_size_mb",	 "durability",
					 "max_batch",		 "max_key_bytes",
					 "max_value_bytes",	 "sweep_interval_ms",
					 "tombstone_retention_ms", "max_mget_keys",
					 "commit_linger_us"};
static const char *const DURABILITY[] = {"fsync", "none"};

static int parse_state(vctx *v, json_t *root, mc_state_conf *out)
{
	out->map_size_mb = 4096;
	out->durable = 1;
	out->max_batch = 4096;
	out->max_key_bytes = 256;
	out->max_value_bytes = 1048576;
	out->sweep_interval_ms = 1000;
	out->tombstone_retention_ms = 3600000;
	out->max_mget_keys = 100;
	out->commit_linger_us = MC_STATE_LINGER_US_DEFAULT;
	json_t *o = json_object_get(root, "state");
	if (!o)
		return 0;
	int rc, dur = 0;
	push_key(v, "state");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, STATE_KEYS, MC_ARRAY_LEN(STATE_KEYS), NULL));
	CHECK(opt_u64(v, o, "map_size_mb", 16, 1048576, &out->map_size_mb));
	CHECK(opt_enum(v, o, "durability", DURABILITY, MC_ARRAY_LEN(DURABILITY), &dur));
	out->durable = dur == 0;
	CHECK(opt_u32(v, o, "max_batch", 1, 100000, &out->max_batch));
	CHECK(opt_u32(v, o, "max_key_bytes", 1, 256, &out->max_key_bytes));
	CHECK(opt_u32(v, o, "max_value_bytes", 1, 16777216, &out->max_value_bytes));
	CHECK(opt_u32(v, o, "sweep_interval_ms", 10, 3600000, &out->sweep_interval_ms));
	CHECK(opt_u32(v, o, "tombstone_retention_ms", 1000, 2592000000u,
		      &out->tombstone_retention_ms));
	CHECK(opt_u32(v, o, "max_mget_keys", 1, 1000, &out->max_mget_keys));
	CHECK(opt_u32(v, o, "commit_linger_us", 0, 10000, &out->commit_linger_us));
out:
	pop(v);
	return rc;
}

static const char *const LIMITS_KEYS[] = {"max_header_bytes",	"max_headers",
					  "max_body_bytes",	"idle_timeout_ms",
					  "request_timeout_ms", "max_connections", "drain_timeout_ms",
					  "header_timeout_ms",	"body_timeout_ms",  "body_min_rate",
					  "max_inflight"};

static int parse_limits(vctx *v, json_t *root, mc_limits_conf *out)
{
	out->max_header_bytes = 16384;
	out->max_headers = 64;
	out->max_body_bytes = 1048576;
	out->idle_timeout_ms = 60000;
	out->request_timeout_ms = 30000;
	out->max_connections = 10000;
	out->drain_timeout_ms = 10000;
	out->header_timeout_ms = 10000;
	out->body_timeout_ms = 10000;
	out->body_min_rate = 0;
	out->max_inflight = 1024;
	json_t *o = json_object_get(root, "limits");
	if (!o)
		return 0;
	int rc;
	push_key(v, "limits");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, LIMITS_KEYS, MC_ARRAY_LEN(LIMITS_KEYS), NULL));
	CHECK(opt_u32(v, o, "max_header_bytes", 1024, 1048576, &out->max_header_bytes));
	CHECK(opt_u32(v, o, "max_headers", 8, 1024, &out->max_headers));
	CHECK(opt_u32(v, o, "max_body_bytes", 0, 67108864, &out->max_body_bytes));
	CHECK(opt_u32(v, o, "idle_timeout_ms", 100, 3600000, &out->idle_timeout_ms));
	CHECK(opt_u32(v, o, "request_timeout_ms", 100, 3600000, &out->request_timeout_ms));
	CHECK(opt_u32(v, o, "max_connections", 1, 1000000, &out->max_connections));
	CHECK(opt_u32(v, o, "drain_timeout_ms", 0, 600000, &out->drain_timeout_ms));
	CHECK(opt_u32(v, o, "header_timeout_ms", 100, 3600000, &out->header_timeout_ms));
	CHECK(opt_u32(v, o, "body_timeout_ms", 100, 3600000, &out->body_timeout_ms));
	CHECK(opt_u32(v, o, "body_min_rate", 0, 1073741824, &out->body_min_rate));
	CHECK(opt_u32(v, o, "max_inflight", 1, 1000000, &out->max_inflight));
out:
	pop(v);
	return rc;
}

static const char *const REPL_KEYS[] = {"batch_max_entries", "heartbeat_ms", "dead_after_ms",
					"backlog_max_bytes", "backlog_max_age_ms"};

static int parse_repl(vctx *v, json_t *root, mc_repl_conf *out)
{
	out->batch_max_entries = 1024;
	out->heartbeat_ms = 1000;
	out->dead_after_ms = 5000;
	out->backlog_max_bytes = (uint64_t)1 << 30;
	out->backlog_max_age_ms = 3600000;
	json_t *o = json_object_get(root, "replication");
	if (!o)
		return 0;
	int rc;
	push_key(v, "replication");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, REPL_KEYS, MC_ARRAY_LEN(REPL_KEYS), NULL));
	CHECK(opt_u32(v, o, "batch_max_entries", 1, 65536, &out->batch_max_entries));
	CHECK(opt_u32(v, o, "heartbeat_ms", 10, 60000, &out->heartbeat_ms));
	CHECK(opt_u32(v, o, "dead_after_ms", 1, 600000, &out->dead_after_ms));
	CHECK(opt_u64(v, o, "backlog_max_bytes", 4096, (uint64_t)1 << 40, &out->backlog_max_bytes));
	CHECK(opt_u32(v, o, "backlog_max_age_ms", 100, 604800000, &out->backlog_max_age_ms));
	if (out->dead_after_ms <= out->heartbeat_ms) {
		if (json_object_get(o, "dead_after_ms")) {
			push_key(v, "dead_after_ms");
			rc = fail(v,
				  "expected an integer in %" PRIu32 "..600000 (more than "
				  "heartbeat_ms), got %" PRIu32,
				  out->heartbeat_ms + 1, out->dead_after_ms);
		} else {
			push_key(v, "heartbeat_ms");
			rc = fail(v,
				  "expected an integer in 10..%" PRIu32 " (less than "
				  "dead_after_ms, default %" PRIu32 "), got %" PRIu32,
				  out->dead_after_ms - 1, out->dead_after_ms, out->heartbeat_ms);
		}
		pop(v);
	}
out:
	pop(v);
	return rc;
}

/* Reads listen.<a> and listen.<b> (both required, port 0 allowed). */
static int parse_listen(vctx *v, json_t *root, const char *a, char **outa, const char *b,
			char **outb)
{
	json_t *o = json_object_get(root, "listen");
	const char *const keys[] = {a, b, NULL};
	int rc;
	push_key(v, "listen");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, keys, 2, keys));
	CHECK(opt_hostport(v, o, a, true, outa));
	CHECK(opt_hostport(v, o, b, true, outb));
out:
	pop(v);
	return rc;
}

/* ---- edge: route quotas and body limits, feature flags, locality -------------------- */

#define QUOTA_RATE_MAX 1000000.0
#define QUOTA_HEADER_MAX 64
#define FLAGS_MAX 1024
#define FLAG_NAME_MAX 64
#define CIDRS_MAX 65536

static const char *const QUOTA_KEYS[] = {"name", "rate", "burst", "key", "max_keys"};
static const char *const QUOTA_REQUIRED[] = {"name", "rate", "burst", "key", NULL};
static const char *const LOCALITY_KEYS[] = {"metro", "cidrs", "trust_client_metro_header"};

static void quota_conf_free(mc_quota_conf *q)
{
	if (!q)
		return;
	free(q->name);
	free(q->header);
	free(q);
}

/* RFC 9110 token characters (a header field name). */
static bool token_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= 'A' && ch <= 'Z') || (ch && strchr("!#$%&'*+-.^_`|~", ch))))
			return false;
	}
	return true;
}

static int parse_quota_key(vctx *v, json_t *o, mc_quota_conf *q)
{
	json_t *j = json_object_get(o, "key");
	int rc = 0;
	push_key(v, "key");
	const char *s = json_is_string(j) ? json_string_value(j) : NULL;
	size_t n = s ? json_string_length(j) : 0;
	if (s && strcmp(s, "ip") == 0 && n == 2) {
		q->key = MC_QUOTA_KEY_IP;
	} else if (s && strncmp(s, "header:", 7) == 0) {
		if (n - 7 > QUOTA_HEADER_MAX || !token_ok(s + 7, n - 7) ||
		    strlen(s) != n) {
			rc = fail(v,
				  "expected \"header:NAME\" with NAME a header field name of 1..%d "
				  "token characters, got %s",
				  QUOTA_HEADER_MAX, show(j).s);
		} else {
			q->key = MC_QUOTA_KEY_HEADER;
			q->header = mc_strdup(s + 7);
		}
	} else if (s && strcmp(s, "subject") == 0) {
		rc = fail(v, "key \"subject\" needs edge auth, not available yet (use \"ip\" or "
			     "\"header:NAME\")");
	} else {
		rc = fail(v, "expected \"ip\" or \"header:NAME\", got %s", show(j).s);
	}
	pop(v);
	return rc;
}

static bool quota_same(const mc_quota_conf *a, const mc_quota_conf *b)
{
	return a->rate == b->rate && a->burst == b->burst && a->key == b->key &&
	       a->max_keys == b->max_keys &&
	       (a->key != MC_QUOTA_KEY_HEADER || strcasecmp(a->header, b->header) == 0);
}

/* routes[idx].quota; a name used by an earlier route must be defined identically. */
static int parse_quota(vctx *v, json_t *o, mc_cell_conf *c, size_t idx)
{
	mc_quota_conf *q = mc_calloc(1, sizeof *q);
	c->routes[idx].quota = q;
	q->max_keys = 100000;
	int rc;
	push_key(v, "quota");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, QUOTA_KEYS, MC_ARRAY_LEN(QUOTA_KEYS), QUOTA_REQUIRED));
	CHECK(req_name(v, o, "name", true, &q->name));
	json_t *rate = json_object_get(o, "rate");
	push_key(v, "rate");
	if (!json_is_number(rate) || json_number_value(rate) <= 0 ||
	    json_number_value(rate) > QUOTA_RATE_MAX)
		rc = fail(v, "expected a number of tokens per second in (0, 1000000], got %s",
			  show(rate).s);
	else
		q->rate = json_number_value(rate);
	pop(v);
	if (rc)
		goto out;
	CHECK(opt_u32(v, o, "burst", 1, 1000000, &q->burst));
	CHECK(parse_quota_key(v, o, q));
	CHECK(opt_u32(v, o, "max_keys", 1, 10000000, &q->max_keys));
	for (size_t k = 0; k < idx; k++) {
		const mc_quota_conf *p = c->routes[k].quota;
		if (p && strcmp(p->name, q->name) == 0 && !quota_same(p, q)) {
			push_key(v, "name");
			rc = fail(v,
				  "quota %s is defined differently in routes[%zu] (routes sharing a "
				  "quota must define it identically)",
				  show_str(q->name).s, k);
			pop(v);
			goto out;
		}
	}
out:
	pop(v);
	return rc;
}

/* The edge options of routes[idx]: max_body_bytes and quota. */
static int parse_route_edge(vctx *v, json_t *ro, mc_cell_conf *c, size_t idx)
{
	mc_route_conf *r = &c->routes[idx];
	r->max_body_bytes = c->limits.max_body_bytes;
	int rc;
	CHECK(opt_u32(v, ro, "max_body_bytes", 0, 67108864, &r->max_body_bytes));
	json_t *q = json_object_get(ro, "quota");
	if (q)
		CHECK(parse_quota(v, q, c, idx));
out:
	return rc;
}

static bool flag_name_ok(const char *s, size_t n)
{
	if (n < 1 || n > FLAG_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

static int parse_flags(vctx *v, json_t *root, mc_cell_conf *c)
{
	json_t *o = json_object_get(root, "flags");
	if (!o)
		return 0;
	int rc;
	push_key(v, "flags");
	CHECK(check_object(v, o));
	size_t n = json_object_size(o);
	if (n > FLAGS_MAX) {
		rc = fail(v, "expected at most %d flags, got %zu", FLAGS_MAX, n);
		goto out;
	}
	if (n == 0)
		goto out;
	c->flags = mc_calloc(n, sizeof *c->flags);
	const char *name;
	json_t *val;
	json_object_foreach(o, name, val)
	{
		if (!flag_name_ok(name, strlen(name)))
			CHECK(fail_key(v, name,
				       "invalid flag name %s (expected [A-Za-z0-9_.-]{1,%d})",
				       show_str(name).s, FLAG_NAME_MAX));
		push_key(v, name);
		char *js = NULL;
		if (json_is_null(val))
			rc = fail(v, "expected a boolean, number, string, array or object, got null");
		else if (!(js = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY |
						    JSON_REAL_PRECISION(15))))
			rc = fail(v, "cannot encode the value");
		else if (strlen(js) > MC_FLAG_VALUE_MAX)
			rc = fail(v, "value is %zu bytes as compact JSON, at most %d allowed",
				  strlen(js), MC_FLAG_VALUE_MAX);
		pop(v);
		if (rc) {
			free(js);
			goto out;
		}
		mc_flag_conf *f = &c->flags[c->nflags++];
		f->name = mc_strdup(name);
		f->json_len = strlen(js);
		f->json = mc_strdup(js);
		free(js);
	}
out:
	pop(v);
	return rc;
}

/* Parses "ADDR/BITS". Returns 0, -1 when malformed, -2 when host bits are set
 * (out then holds the address with them cleared). */
static int cidr_parse(const char *s, mc_cidr_conf *out)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	if (!slash || (size_t)(slash - s) >= sizeof addr || slash == s)
		return -1;
	memcpy(addr, s, (size_t)(slash - s));
	addr[slash - s] = '\0';
	memset(out, 0, sizeof *out);
	unsigned maxbits;
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = 4;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = 6;
		maxbits = 128;
	} else {
		return -1;
	}
	const char *b = slash + 1;
	size_t blen = strlen(b);
	uint64_t bits;
	if (blen == 0 || blen > 3 || (blen > 1 && b[0] == '0') ||
	    mc_parse_u64(b, blen, maxbits, &bits) != 0)
		return -1;
	out->bits = (uint8_t)bits;
	int dirty = 0;
	for (unsigned i = 0; i < maxbits / 8; i++) {
		unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? (unsigned)bits - i * 8 : 0;
		uint8_t mask = keep ? (uint8_t)(0xFFu << (8 - keep)) : 0;
		if (out->addr[i] & ~mask)
			dirty = 1;
		out->addr[i] &= mask;
	}
	return dirty ? -2 : 0;
}

static void cidr_format(const mc_cidr_conf *c, char *buf, size_t cap)
{
	char a[INET6_ADDRSTRLEN];
	inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, a, sizeof a);
	snprintf(buf, cap, "%s/%u", a, c->bits);
}

typedef struct cidr_at {
	const mc_cidr_conf *cidr;
	const char *metro; /* key in cidrs */
	size_t index;      /* in that metro's array */
	size_t order;      /* in the whole document */
} cidr_at;

static int cidr_at_cmp(const void *a, const void *b)
{
	const cidr_at *x = a, *y = b;
	int d = (int)x->cidr->family - (int)y->cidr->family;
	if (!d)
		d = (int)x->cidr->bits - (int)y->cidr->bits;
	if (!d)
		d = memcmp(x->cidr->addr, y->cidr->addr, sizeof x->cidr->addr);
	if (d)
		return d;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* The same network listed twice (under one metro or two) is an error at the
 * later occurrence. v's path is at locality.cidrs. */
static int cidrs_check_dups(vctx *v, mc_locality_conf *l, cidr_at *at)
{
	size_t n = l->ncidrs;
	qsort(at, n, sizeof *at, cidr_at_cmp);
	size_t dup = SIZE_MAX, first = 0;
	for (size_t i = 1, run = 0; i < n; i++) {
		if (cidr_at_cmp(&(cidr_at){at[i].cidr, NULL, 0, 0},
				&(cidr_at){at[i - 1].cidr, NULL, 0, 0}) != 0) {
			run = i;
			continue;
		}
		if (dup == SIZE_MAX || at[i].order < at[dup].order) {
			dup = i;
			first = run;
		}
	}
	if (dup == SIZE_MAX)
		return 0;
	char text[64];
	cidr_format(at[dup].cidr, text, sizeof text);
	push_key(v, at[dup].metro);
	push_index(v, at[dup].index);
	int rc = fail(v, "duplicate network \"%s\" (also locality.cidrs.%s[%zu])", text, at[first].metro,
		      at[first].index);
	pop(v);
	pop(v);
	return rc;
}

static int parse_cidrs(vctx *v, json_t *o, mc_locality_conf *l)
{
	int rc = 0;
	cidr_at *at = NULL;
	push_key(v, "cidrs");
	CHECK(check_object(v, o));
	size_t total = 0;
	const char *metro;
	json_t *a;
	json_object_foreach(o, metro, a)
	{
		if (!name_ok(metro, strlen(metro), false))
			CHECK(fail_key(v, metro, "invalid metro name %s (expected [a-z0-9-]{1,31})",
				       show_str(metro).s));
		if (!json_is_array(a)) {
			push_key(v, metro);
			rc = fail(v, "expected an array of networks like \"10.1.0.0/16\", got %s",
				  show(a).s);
			pop(v);
			goto out;
		}
		total += json_array_size(a);
	}
	if (total > CIDRS_MAX) {
		rc = fail(v, "expected at most %d networks in all, got %zu", CIDRS_MAX, total);
		goto out;
	}
	l->nmetros = json_object_size(o);
	l->metros = mc_calloc(l->nmetros ? l->nmetros : 1, sizeof *l->metros);
	l->cidrs = mc_calloc(total ? total : 1, sizeof *l->cidrs);
	at = mc_calloc(total ? total : 1, sizeof *at);
	size_t m = 0;
	json_object_foreach(o, metro, a)
	{
		l->metros[m] = mc_strdup(metro);
		push_key(v, metro);
		for (size_t i = 0; i < json_array_size(a) && rc == 0; i++) {
			json_t *e = json_array_get(a, i);
			mc_cidr_conf *cd = &l->cidrs[l->ncidrs];
			push_index(v, i);
			int pr = json_is_string(e) && strlen(json_string_value(e)) ==
							 json_string_length(e)
					 ? cidr_parse(json_string_value(e), cd)
					 : -1;
			if (pr == -1) {
				rc = fail(v,
					  "expected a network like \"10.1.0.0/16\" or "
					  "\"2001:db8::/32\", got %s",
					  show(e).s);
			} else if (pr == -2) {
				char fixed[64];
				cidr_format(cd, fixed, sizeof fixed);
				rc = fail(v, "%s has host bits set (did you mean \"%s\"?)",
					  show(e).s, fixed);
			} else {
				cd->metro = (uint32_t)m;
				at[l->ncidrs] = (cidr_at){cd, l->metros[m], i, l->ncidrs};
				l->ncidrs++;
			}
			pop(v);
		}
		pop(v);
		if (rc)
			goto out;
		m++;
	}
	CHECK(cidrs_check_dups(v, l, at));
out:
	free(at);
	pop(v);
	return rc;
}

static int parse_locality(vctx *v, json_t *root, mc_cell_conf *c)
{
	mc_locality_conf *l = &c->locality;
	json_t *o = json_object_get(root, "locality");
	int rc = 0;
	if (!o) {
		l->metro = mc_strdup(c->cell);
		return 0;
	}
	push_key(v, "locality");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, LOCALITY_KEYS, MC_ARRAY_LEN(LOCALITY_KEYS), NULL));
	if (json_object_get(o, "metro"))
		CHECK(req_name(v, o, "metro", false, &l->metro));
	else
		l->metro = mc_strdup(c->cell);
	json_t *t = json_object_get(o, "trust_client_metro_header");
	if (t) {
		push_key(v, "trust_client_metro_header");
		if (!json_is_boolean(t))
			rc = fail(v, "expected true or false, got %s", show(t).s);
		l->trust_header = json_is_true(t);
		pop(v);
		if (rc)
			goto out;
	}
	json_t *cidrs = json_object_get(o, "cidrs");
	if (cidrs)
		CHECK(parse_cidrs(v, cidrs, l));
out:
	pop(v);
	return rc;
}

static void edge_conf_free(mc_cell_conf *c)
{
	for (size_t i = 0; i < c->nflags; i++) {
		free(c->flags[i].name);
		free(c->flags[i].json);
	}
	free(c->flags);
	mc_locality_conf *l = &c->locality;
	free(l->metro);
	for (size_t i = 0; i < l->nmetros; i++)
		free(l->metros[i]);
	free(l->metros);
	free(l->cidrs);
}

/* ---- document loading --------------------------------------------------------------- */

static bool blank(const char *t, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (t[i] != ' ' && t[i] != '\t' && t[i] != '\n' && t[i] != '\r')
			return false;
	return true;
}

/* Parses the text into a JSON object (duplicate keys rejected). */
static int load_doc(vctx *v, json_t **root)
{
	*root = NULL;
	if (v->len > v->max_bytes) {
		set_err(v, "%s: document is larger than %zu bytes", v->label, v->max_bytes);
		return MC_ECONFIG;
	}
	if (!v->text || blank(v->text, v->len)) {
		set_err(v, "%s: empty document (expected a JSON object)", v->label);
		return MC_ECONFIG;
	}
	json_error_t e;
	json_t *j = json_loadb(v->text, v->len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
	if (!j) {
		char path[256], key[64];
		mc_jpos pos;
		if (json_error_code(&e) == json_error_duplicate_key && e.position > 0 &&
		    mc_config_jpos_key_ending_at(v->text, v->len, (size_t)e.position, &pos, path,
						 sizeof path, key, sizeof key) == 0)
			set_err(v, "%s:%u:%u: %s: duplicate key %s", v->label, pos.line, pos.col,
				path, show_str(key).s);
		else if (e.line > 0 && e.column > 0)
			set_err(v, "%s:%d:%d: invalid JSON: %s", v->label, e.line, e.column,
				e.text);
		else if (e.position >= 0) { /* at the start of a line (column 0): use the offset */
			pos = mc_config_jpos_at(v->text, v->len, (size_t)e.position);
			set_err(v, "%s:%u:%u: invalid JSON: %s", v->label, pos.line, pos.col,
				e.text);
		} else {
			set_err(v, "%s: invalid JSON: %s", v->label, e.text);
		}
		return MC_ECONFIG;
	}
	int rc = check_object(v, j);
	if (rc) {
		json_decref(j);
		return rc;
	}
	*root = j;
	return 0;
}

static void vctx_init(vctx *v, const char *label, const char *text, size_t len, char *err,
		      size_t errcap)
{
	memset(v, 0, sizeof *v);
	v->label = label ? label : "(config)";
	v->text = text;
	v->len = text ? len : 0;
	v->err = err;
	v->errcap = errcap;
	v->max_bytes = MC_CONFIG_MAX_BYTES;
	if (err && errcap)
		err[0] = '\0';
}

/* Reads a whole file of at most MC_CONFIG_MAX_BYTES into *buf (caller frees). */
static int read_file(vctx *v, const char *path, char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		set_err(v, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	int rc = 0;
	char *b = NULL;
	size_t n = 0, cap;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		set_err(v, "%s: cannot read: %s", path, strerror(-rc));
		goto out;
	}
	if (st.st_size > (off_t)MC_CONFIG_MAX_BYTES)
		goto too_big;
	cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
	b = mc_alloc(cap);
	for (;;) {
		if (n == cap) {
			if (cap > MC_CONFIG_MAX_BYTES)
				goto too_big;
			cap = MC_MIN(cap * 2, (size_t)MC_CONFIG_MAX_BYTES + 1);
			b = mc_realloc(b, cap);
		}
		ssize_t r = read(fd, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			set_err(v, "%s: cannot read: %s", path, strerror(-rc));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > MC_CONFIG_MAX_BYTES)
		goto too_big;
	*buf = b;
	*len = n;
	b = NULL;
	goto out;
too_big:
	set_err(v, "%s: file is larger than %u bytes", path, MC_CONFIG_MAX_BYTES);
	rc = MC_ECONFIG;
out:
	free(b);
	close(fd);
	return rc;
}

/* ---- state-class rules ------------------------------------------------------------------ */

#define CLASS_RULES_MAX 256

static const char *const CLASS_RULE_KEYS[] = {"prefix",	"class",
					      "ack",		"ack_timeout_ms",
					      "replica_max_staleness_ms", "cache_ttl_ms",
					      "region_timeout_ms"};
static const char *const CLASS_RULE_REQUIRED[] = {"prefix", "class", NULL};
static const char *const CLASS_NAMES[] = {"replicated", "local", "regional"};
static const char *const ACK_NAMES[] = {"local", "region"};

const char *mc_sclass_name(mc_sclass c)
{
	return (unsigned)c < MC_ARRAY_LEN(CLASS_NAMES) ? CLASS_NAMES[c] : "replicated";
}

static void class_rule_default(mc_class_rule_conf *r)
{
	memset(r, 0, sizeof *r);
	r->cls = MC_SCLASS_REPLICATED;
	r->ack_timeout_ms = 5000;
	r->replica_max_staleness_ms = 5000;
	r->cache_ttl_ms = 0;
	r->region_timeout_ms = 2000;
}

/* A member that only some classes take: present with another class is an error. */
static int only_for(vctx *v, json_t *ro, const char *key, bool ok, const char *what)
{
	json_t *j = json_object_get(ro, key);
	if (!j || ok)
		return 0;
	push_key(v, key);
	int rc = fail(v, "only %s take %s, got %s", what, key, show(j).s);
	pop(v);
	return rc;
}

static int parse_class_rule(vctx *v, json_t *ro, mc_class_rules_conf *out, size_t idx)
{
	mc_class_rule_conf *r = &out->rules[idx];
	int rc, cls = 0, ack = 0;
	class_rule_default(r);
	CHECK(check_object(v, ro));
	CHECK(check_keys(v, ro, CLASS_RULE_KEYS, MC_ARRAY_LEN(CLASS_RULE_KEYS),
			 CLASS_RULE_REQUIRED));
	json_t *pj = json_object_get(ro, "prefix");
	push_key(v, "prefix");
	if (!json_is_string(pj) || json_string_length(pj) > 256) {
		rc = fail(v, "expected a key prefix of at most 256 bytes (\"\" for the default), got %s",
			  show(pj).s);
	} else {
		const unsigned char *p = (const unsigned char *)json_string_value(pj);
		rc = 0;
		for (size_t i = 0; rc == 0 && i < json_string_length(pj); i++)
			if (p[i] <= 0x20 || p[i] == 0x7f)
				rc = fail(v,
					  "expected a key prefix without spaces or control "
					  "characters (keys have none), got %s",
					  show(pj).s);
		for (size_t k = 0; rc == 0 && k < idx; k++)
			if (strcmp(out->rules[k].prefix, json_string_value(pj)) == 0)
				rc = fail(v, "duplicate prefix %s (also state_classes[%zu])",
					  show(pj).s, k);
	}
	pop(v);
	if (rc)
		goto out;
	r->prefix = mc_strdup(json_string_value(pj));
	CHECK(opt_enum(v, ro, "class", CLASS_NAMES, MC_ARRAY_LEN(CLASS_NAMES), &cls));
	r->cls = (mc_sclass)cls;
	CHECK(opt_enum(v, ro, "ack", ACK_NAMES, MC_ARRAY_LEN(ACK_NAMES), &ack));
	r->ack_region = ack;
	if (ack && r->cls != MC_SCLASS_REPLICATED) {
		push_key(v, "ack");
		rc = fail(v, "\"region\" needs class \"replicated\" (%s keys are never shipped), got "
			     "class \"%s\"",
			  mc_sclass_name(r->cls), mc_sclass_name(r->cls));
		pop(v);
		goto out;
	}
	CHECK(only_for(v, ro, "ack_timeout_ms", ack == 1, "rules with \"ack\": \"region\""));
	CHECK(opt_u32(v, ro, "ack_timeout_ms", 1, 600000, &r->ack_timeout_ms));
	CHECK(only_for(v, ro, "replica_max_staleness_ms", r->cls == MC_SCLASS_REPLICATED,
		       "\"replicated\" rules"));
	CHECK(opt_u32(v, ro, "replica_max_staleness_ms", 0, 86400000,
		      &r->replica_max_staleness_ms));
	CHECK(only_for(v, ro, "cache_ttl_ms", r->cls == MC_SCLASS_REGIONAL, "\"regional\" rules"));
	CHECK(opt_u32(v, ro, "cache_ttl_ms", 0, 86400000, &r->cache_ttl_ms));
	CHECK(only_for(v, ro, "region_timeout_ms", r->cls != MC_SCLASS_LOCAL,
		       "\"replicated\" and \"regional\" rules"));
	CHECK(opt_u32(v, ro, "region_timeout_ms", 1, 60000, &r->region_timeout_ms));
out:
	return rc;
}

/* The validator of a rule table: a array value at the current path. */
static int parse_class_rules(vctx *v, json_t *a, mc_class_rules_conf *out)
{
	int rc = 0;
	size_t n = 0, have_default = 0;
	memset(out, 0, sizeof *out);
	if (a && !json_is_array(a))
		return fail(v, "expected an array of rules {\"prefix\", \"class\", ...}, got %s",
			    show(a).s);
	n = a ? json_array_size(a) : 0;
	if (n > CLASS_RULES_MAX)
		return fail(v, "expected at most %d rules, got %zu", CLASS_RULES_MAX, n);
	out->rules = mc_calloc(n + 1, sizeof *out->rules);
	for (size_t i = 0; i < n; i++) {
		push_index(v, i);
		rc = parse_class_rule(v, json_array_get(a, i), out, i);
		pop(v);
		out->n = i + 1; /* what is allocated gets freed */
		if (rc)
			return rc;
		if (out->rules[i].prefix[0] == '\0')
			have_default = 1;
	}
	if (!have_default) {
		class_rule_default(&out->rules[n]);
		out->rules[n].prefix = mc_strdup("");
		out->n = n + 1;
	}
	return 0;
}

const mc_class_rule_conf *mc_class_rules_match(const mc_class_rules_conf *r, const char *key,
					       size_t klen)
{
	const mc_class_rule_conf *best = NULL;
	size_t bl = 0;
	for (size_t i = 0; i < r->n; i++) {
		size_t pl = strlen(r->rules[i].prefix);
		if (pl > klen || (best && pl <= bl) || memcmp(r->rules[i].prefix, key, pl) != 0)
			continue;
		best = &r->rules[i];
		bl = pl;
	}
	MC_ASSERT(best); /* there is always a rule with prefix "" */
	return best;
}

void mc_class_rules_fini(mc_class_rules_conf *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		free(r->rules[i].prefix);
	free(r->rules);
	r->rules = NULL;
	r->n = 0;
}

int mc_class_rules_parse(const char *label, const char *text, size_t len, mc_class_rules_conf *out,
			 char *err, size_t errcap)
{
	vctx v;
	json_error_t e;
	memset(out, 0, sizeof *out);
	vctx_init(&v, label, text, len, err, errcap);
	json_t *j = text ? json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e) : NULL;
	if (!j) {
		set_err(&v, "%s: invalid JSON: %s", v.label, text ? e.text : "no text");
		return MC_ECONFIG;
	}
	int rc = parse_class_rules(&v, j, out);
	json_decref(j);
	if (rc)
		mc_class_rules_fini(out);
	return rc;
}

static int parse_cell_classes(vctx *v, json_t *root, mc_cell_conf *c)
{
	int rc;
	push_key(v, "state_classes");
	rc = parse_class_rules(v, json_object_get(root, "state_classes"), &c->classes);
	/* Regional keys and the read-through of replicated ones need the region's
	 * HTTP API; only regional ones cannot work without it. */
	for (size_t i = 0; rc == 0 && !c->region_http && i < c->classes.n; i++) {
		if (c->classes.rules[i].cls != MC_SCLASS_REGIONAL)
			continue;
		push_index(v, i);
		push_key(v, "class");
		rc = fail(v, "\"regional\" keys live in the region: set region.http");
		pop(v);
		pop(v);
	}
	pop(v);
	return rc;
}

/* Keys of a cell's file that the region's would only ignore. */
static int reject_cell_only(vctx *v, json_t *root)
{
	static const char *const keys[] = {"backlog_max_bytes", "backlog_max_age_ms"};
	json_t *o = json_object_get(root, "replication");
	for (size_t i = 0; o && i < MC_ARRAY_LEN(keys); i++) {
		if (!json_object_get(o, keys[i]))
			continue;
		push_key(v, "replication");
		int rc = fail_key(v, keys[i], "%s bounds a cell's write log; the region has none",
				  keys[i]);
		pop(v);
		return rc;
	}
	return 0;
}

/* ---- cell ---------------------------------------------------------------------------- */

static const char *const CELL_KEYS[] = {"cell",	 "listen", "data_dir",	  "region", "log",
					"state", "limits", "replication", "pools",  "routes",
					"flags", "locality", "tls",
					"cache", "state_classes", "telemetry", "threads"};
static const char *const CELL_REQUIRED[] = {"cell", "listen", "data_dir", "region", "routes", NULL};
static const char *const REGION_LINK_KEYS[] = {"repl", "http"};
static const char *const REGION_LINK_REQUIRED[] = {"repl", NULL};
static const char *const POOL_KEYS[] = {
    "workers",	 "connect_timeout_ms", "timeout_ms", "max_conns",
    "max_queue", "max_outstanding",    "health",     "outlier"};
static const char *const FALLBACK_KEYS[] = {"workers", "connect_timeout_ms", "timeout_ms",
					    "max_conns", "max_queue"};
static const char *const POOL_REQUIRED[] = {"workers", NULL};
static const char *const HEALTH_KEYS[] = {"path", "interval_ms", "timeout_ms", "rise", "fall"};
static const char *const OUTLIER_KEYS[] = {
    "consecutive_failures", "failure_percent",	    "window_ms", "min_requests", "base_ejection_ms",
    "max_ejection_ms",	    "max_ejection_percent", "count_5xx"};
/* Keys only a proxy route takes come after ROUTE_PROXY_FROM. */
#define ROUTE_PROXY_FROM 6
static const char *const ROUTE_KEYS[] = {"name",
					 "prefix",
					 "kind",
					 "pool",
					 "quota",
					 "max_body_bytes",
					 "on_failure",
					 "fail_on_5xx",
					 "retry",
					 "connect_timeout_ms",
					 "first_byte_timeout_ms",
					 "idle_timeout_ms",
					 "budget_ms",
					 "fallback_timeout_ms"};
static const char *const ON_FAILURE[] = {"fail_closed", "fail_open"};
static const char *const ROUTE_REQUIRED[] = {"name", "prefix", "kind", NULL};
static const char *const ROUTE_KINDS[] = {"proxy", "kv", "flags", "cache"};
static const mc_route_kind ROUTE_KIND_VALUES[] = {MC_ROUTE_PROXY, MC_ROUTE_KV, MC_ROUTE_FLAGS,
						   MC_ROUTE_CACHE};

static int parse_region_link(vctx *v, json_t *root, mc_cell_conf *c)
{
	json_t *o = json_object_get(root, "region");
	int rc;
	push_key(v, "region");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, REGION_LINK_KEYS, MC_ARRAY_LEN(REGION_LINK_KEYS),
			 REGION_LINK_REQUIRED));
	CHECK(opt_hostport(v, o, "repl", false, &c->region_repl));
	CHECK(opt_hostport(v, o, "http", false, &c->region_http));
out:
	pop(v);
	return rc;
}

static int parse_workers(vctx *v, json_t *pool, mc_pool_conf *p)
{
	json_t *a = json_object_get(pool, "workers");
	int rc = 0;
	push_key(v, "workers");
	if (!json_is_array(a)) {
		rc = fail(v, "expected an array of \"host:port\" strings, got %s", show(a).s);
		goto out;
	}
	size_t n = json_array_size(a);
	if (n < 1 || n > WORKERS_MAX) {
		rc = fail(v, "expected 1..%d workers, got %zu", WORKERS_MAX, n);
		goto out;
	}
	p->workers = mc_calloc(n, sizeof *p->workers);
	p->nworkers = n;
	for (size_t i = 0; i < n; i++) {
		json_t *w = json_array_get(a, i);
		push_index(v, i);
		rc = check_hostport(v, w, false);
		for (size_t k = 0; rc == 0 && k < i; k++)
			if (strcmp(p->workers[k], json_string_value(w)) == 0)
				rc = fail(v, "duplicate worker %s (also workers[%zu])", show(w).s,
					  k);
		pop(v);
		if (rc)
			goto out;
		p->workers[i] = mc_strdup(json_string_value(w));
	}
out:
	pop(v);
	return rc;
}

static int opt_bool(vctx *v, json_t *obj, const char *key, int *out)
{
	json_t *j = json_object_get(obj, key);
	if (!j)
		return 0;
	if (json_is_boolean(j)) {
		*out = json_is_true(j);
		return 0;
	}
	push_key(v, key);
	int rc = fail(v, "expected true or false, got %s", show(j).s);
	pop(v);
	return rc;
}

/* An HTTP path: starts with '/', at most PREFIX_MAX bytes, no whitespace or
 * control characters. what names it in messages ("path prefix", "path"). */
static int check_path(vctx *v, const json_t *j, const char *what)
{
	if (!json_is_string(j) || json_string_value(j)[0] != '/')
		return fail(v, "expected a %s starting with \"/\", got %s", what, show(j).s);
	size_t n = json_string_length(j);
	if (n > PREFIX_MAX)
		return fail(v, "expected a %s of at most %d bytes, got %s (%zu bytes)", what,
			    PREFIX_MAX, show(j).s, n);
	const unsigned char *s = (const unsigned char *)json_string_value(j);
	for (size_t i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] == 0x7f)
			return fail(
			    v, "expected a %s without whitespace or control characters, got %s",
			    what, show(j).s);
	return 0;
}

static int parse_health(vctx *v, json_t *po, mc_health_conf *h)
{
	h->path = NULL;
	h->interval_ms = 2000;
	h->timeout_ms = 1000;
	h->rise = 2;
	h->fall = 3;
	json_t *o = json_object_get(po, "health");
	if (!o)
		return 0;
	int rc;
	push_key(v, "health");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, HEALTH_KEYS, MC_ARRAY_LEN(HEALTH_KEYS), NULL));
	json_t *pj = json_object_get(o, "path");
	if (pj) {
		push_key(v, "path");
		rc = check_path(v, pj, "path");
		pop(v);
		if (rc)
			goto out;
	}
	CHECK(opt_u32(v, o, "interval_ms", 10, 3600000, &h->interval_ms));
	CHECK(opt_u32(v, o, "timeout_ms", 1, 60000, &h->timeout_ms));
	CHECK(opt_u32(v, o, "rise", 1, 100, &h->rise));
	CHECK(opt_u32(v, o, "fall", 1, 100, &h->fall));
	h->path = mc_strdup(pj ? json_string_value(pj) : "/healthz");
	h->enabled = 1;
out:
	pop(v);
	return rc;
}

static int parse_outlier(vctx *v, json_t *po, mc_outlier_conf *o)
{
	o->consecutive_failures = 5;
	o->failure_percent = 50;
	o->window_ms = 10000;
	o->min_requests = 20;
	o->base_ejection_ms = 30000;
	o->max_ejection_ms = 300000;
	o->max_ejection_percent = 50;
	o->count_5xx = 0;
	json_t *j = json_object_get(po, "outlier");
	if (!j)
		return 0;
	int rc;
	push_key(v, "outlier");
	CHECK(check_object(v, j));
	CHECK(check_keys(v, j, OUTLIER_KEYS, MC_ARRAY_LEN(OUTLIER_KEYS), NULL));
	CHECK(opt_u32(v, j, "consecutive_failures", 0, 100000, &o->consecutive_failures));
	CHECK(opt_u32(v, j, "failure_percent", 0, 100, &o->failure_percent));
	CHECK(opt_u32(v, j, "window_ms", 100, 3600000, &o->window_ms));
	CHECK(opt_u32(v, j, "min_requests", 1, 1000000, &o->min_requests));
	CHECK(opt_u32(v, j, "base_ejection_ms", 1, 3600000, &o->base_ejection_ms));
	if (!json_object_get(j, "max_ejection_ms") && o->max_ejection_ms < o->base_ejection_ms)
		o->max_ejection_ms = o->base_ejection_ms;
	CHECK(opt_u32(v, j, "max_ejection_ms", o->base_ejection_ms, 86400000, &o->max_ejection_ms));
	CHECK(opt_u32(v, j, "max_ejection_percent", 0, 100, &o->max_ejection_percent));
	CHECK(opt_bool(v, j, "count_5xx", &o->count_5xx));
out:
	pop(v);
	return rc;
}

/* One pool object (a cell's pools.NAME or the region's fallback), with the
 * keys allowed there; health and outlier only when keys lists them. */
static int parse_pool(vctx *v, json_t *po, mc_pool_conf *p, const char *const *keys, size_t nkeys)
{
	int rc;
	p->connect_timeout_ms = 1000;
	p->timeout_ms = 10000;
	p->max_conns = 64;
	p->max_queue = 256;
	p->max_outstanding = 0;
	CHECK(check_object(v, po));
	CHECK(check_keys(v, po, keys, nkeys, POOL_REQUIRED));
	CHECK(parse_workers(v, po, p));
	CHECK(opt_u32(v, po, "connect_timeout_ms", 1, 60000, &p->connect_timeout_ms));
	CHECK(opt_u32(v, po, "timeout_ms", 1, 600000, &p->timeout_ms));
	CHECK(opt_u32(v, po, "max_conns", 1, 10000, &p->max_conns));
	CHECK(opt_u32(v, po, "max_queue", 1, 100000, &p->max_queue));
	CHECK(opt_u32(v, po, "max_outstanding", 0, 10000000, &p->max_outstanding));
	CHECK(parse_health(v, po, &p->health));
	CHECK(parse_outlier(v, po, &p->outlier));
out:
	return rc;
}

static int parse_pools(vctx *v, json_t *root, mc_cell_conf *c)
{
	json_t *o = json_object_get(root, "pools");
	if (!o)
		return 0;
	int rc;
	push_key(v, "pools");
	CHECK(check_object(v, o));
	size_t n = json_object_size(o);
	if (n == 0)
		goto out;
	c->pools = mc_calloc(n, sizeof *c->pools);
	c->npools = n;
	const char *name;
	json_t *po;
	size_t i = 0;
	json_object_foreach(o, name, po)
	{
		mc_pool_conf *p = &c->pools[i++];
		if (!name_ok(name, strlen(name), true))
			CHECK(fail_key(v, name, "invalid pool name %s (expected [a-z0-9_-]{1,31})",
				       show_str(name).s));
		push_key(v, name);
		rc = parse_pool(v, po, p, POOL_KEYS, MC_ARRAY_LEN(POOL_KEYS));
		pop(v);
		if (rc)
			goto out;
		p->name = mc_strdup(name);
	}
out:
	pop(v);
	return rc;
}

/* The proxy-only members of route r (the pool is known). */
static int parse_route_proxy(vctx *v, json_t *ro, const mc_cell_conf *c, mc_route_conf *r)
{
	int rc;
	const mc_pool_conf *p = &c->pools[r->pool];
	r->fail_open = 0;
	r->fail_on_5xx = 0;
	r->retry = 1;
	r->connect_timeout_ms = p->connect_timeout_ms;
	r->first_byte_timeout_ms = p->timeout_ms;
	r->idle_timeout_ms = p->timeout_ms;
	r->fallback_timeout_ms = 5000;
	CHECK(opt_enum(v, ro, "on_failure", ON_FAILURE, MC_ARRAY_LEN(ON_FAILURE), &r->fail_open));
	if (r->fail_open && !c->region_http) {
		push_key(v, "on_failure");
		rc = fail(v, "\"fail_open\" forwards to the region's fallback path and needs "
			     "region.http");
		pop(v);
		goto out;
	}
	CHECK(opt_bool(v, ro, "fail_on_5xx", &r->fail_on_5xx));
	CHECK(opt_bool(v, ro, "retry", &r->retry));
	CHECK(opt_u32(v, ro, "connect_timeout_ms", 1, 60000, &r->connect_timeout_ms));
	CHECK(opt_u32(v, ro, "first_byte_timeout_ms", 1, 600000, &r->first_byte_timeout_ms));
	CHECK(opt_u32(v, ro, "idle_timeout_ms", 1, 3600000, &r->idle_timeout_ms));
	uint64_t budget = (uint64_t)r->connect_timeout_ms + r->first_byte_timeout_ms;
	r->budget_ms = (uint32_t)MC_MIN(budget, (uint64_t)3600000);
	CHECK(opt_u32(v, ro, "budget_ms", 1, 3600000, &r->budget_ms));
	CHECK(opt_u32(v, ro, "fallback_timeout_ms", 1, 600000, &r->fallback_timeout_ms));
out:
	return rc;
}

static int check_prefix(vctx *v, const json_t *j)
{
	return check_path(v, j, "path prefix");
}

static void pool_list(const mc_cell_conf *c, char *buf, size_t cap)
{
	size_t at = 0;
	buf[0] = '\0';
	if (c->npools == 0) {
		snprintf(buf, cap, "no pools are defined");
		return;
	}
	at += (size_t)snprintf(buf, cap, "pools: ");
	for (size_t i = 0; i < c->npools && at < cap; i++) {
		int m = i < 8
			    ? snprintf(buf + at, cap - at, "%s%s", i ? ", " : "", c->pools[i].name)
			    : snprintf(buf + at, cap - at, ", ...");
		if (m < 0 || i >= 8)
			break;
		at += (size_t)m;
	}
}

static int parse_route(vctx *v, json_t *ro, mc_cell_conf *c, size_t idx)
{
	mc_route_conf *r = &c->routes[idx];
	int rc, kind = 0;
	CHECK(check_object(v, ro));
	CHECK(check_keys(v, ro, ROUTE_KEYS, MC_ARRAY_LEN(ROUTE_KEYS), ROUTE_REQUIRED));
	CHECK(req_name(v, ro, "name", true, &r->name));
	for (size_t k = 0; k < idx; k++) {
		if (strcmp(c->routes[k].name, r->name) == 0) {
			push_key(v, "name");
			rc = fail(v, "duplicate route name %s (also routes[%zu])",
				  show_str(r->name).s, k);
			pop(v);
			goto out;
		}
	}
	json_t *pj = json_object_get(ro, "prefix");
	push_key(v, "prefix");
	rc = check_prefix(v, pj);
	for (size_t k = 0; rc == 0 && k < idx; k++)
		if (strcmp(c->routes[k].prefix, json_string_value(pj)) == 0)
			rc = fail(v, "duplicate prefix %s (also routes[%zu])", show(pj).s, k);
	pop(v);
	if (rc)
		goto out;
	r->prefix = mc_strdup(json_string_value(pj));
	CHECK(opt_enum(v, ro, "kind", ROUTE_KINDS, MC_ARRAY_LEN(ROUTE_KINDS), &kind));
	r->kind = ROUTE_KIND_VALUES[kind];
	CHECK(parse_route_edge(v, ro, c, idx));
	json_t *pool = json_object_get(ro, "pool");
	if (r->kind != MC_ROUTE_PROXY) {
		if (pool) {
			push_key(v, "pool");
			rc = fail(v, "a \"%s\" route takes no pool, got %s", ROUTE_KINDS[kind],
				  show(pool).s);
			pop(v);
			goto out;
		}
		for (size_t k = ROUTE_PROXY_FROM; k < MC_ARRAY_LEN(ROUTE_KEYS); k++) {
			if (json_object_get(ro, ROUTE_KEYS[k])) {
				rc = fail_key(v, ROUTE_KEYS[k], "a \"%s\" route takes no \"%s\"",
					      ROUTE_KINDS[kind], ROUTE_KEYS[k]);
				goto out;
			}
		}
		goto out;
	}
	if (!pool) {
		rc = fail(v, "missing required key \"pool\" (a \"proxy\" route needs one)");
		goto out;
	}
	push_key(v, "pool");
	if (!json_is_string(pool)) {
		rc = fail(v, "expected a pool name, got %s", show(pool).s);
	} else {
		size_t k;
		for (k = 0; k < c->npools; k++)
			if (strcmp(c->pools[k].name, json_string_value(pool)) == 0)
				break;
		if (k < c->npools) {
			r->pool = k;
			pop(v);
			rc = parse_route_proxy(v, ro, c, r);
			goto out;
		} else {
			char list[200];
			pool_list(c, list, sizeof list);
			rc = fail(v, "unknown pool %s (%s)", show(pool).s, list);
		}
	}
	pop(v);
out:
	return rc;
}

static int parse_routes(vctx *v, json_t *root, mc_cell_conf *c)
{
	json_t *a = json_object_get(root, "routes");
	int rc = 0;
	push_key(v, "routes");
	if (!json_is_array(a)) {
		rc = fail(v, "expected an array of routes, got %s", show(a).s);
		goto out;
	}
	size_t n = json_array_size(a);
	if (n < 1 || n > ROUTES_MAX) {
		rc = fail(v, "expected 1..%d routes, got %zu", ROUTES_MAX, n);
		goto out;
	}
	c->routes = mc_calloc(n, sizeof *c->routes);
	c->nroutes = n;
	for (size_t i = 0; i < n; i++) {
		push_index(v, i);
		rc = parse_route(v, json_array_get(a, i), c, i);
		pop(v);
		if (rc)
			goto out;
	}
out:
	pop(v);
	return rc;
}

/* ---- tls ----------------------------------------------------------------------------- */

static const char *const TLS_KEYS[] = {"listen",      "cert",	       "key",
				       "ticket_keys", "alpn",	       "min_version",
				       "session_timeout_s", "handshake_timeout_ms", "h2"};
static const char *const TLS_REQUIRED[] = {"listen", "cert", "key", NULL};
static const char *const TLS_VERSIONS[] = {"1.2", "1.3"};
static const char *const ALPN_NAMES[] = {"h2", "http/1.1"};
static const char *const H2_KEYS[] = {"max_concurrent_streams", "initial_window_size",
				      "connection_window_size"};
static const char *const TICKET_KEY_KEYS[] = {"name", "aes_key", "hmac_key"};
static const char *const TICKET_KEY_REQUIRED[] = {"name", "aes_key", "hmac_key", NULL};
#define TICKET_HEX_LEN (2 * (MC_TICKET_NAME_LEN + 2 * MC_TICKET_SECRET_LEN))

/* Decodes exactly 2 * n hex digits into out; 0 or -1. */
static int hex_decode(const char *s, size_t len, uint8_t *out, size_t n)
{
	if (len != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int hi = mc_hexval(s[2 * i]), lo = mc_hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int mc_config_ticket_key_from_hex(const char *hex, size_t len, mc_ticket_key_conf *out)
{
	uint8_t raw[TICKET_HEX_LEN / 2];
	if (!hex || hex_decode(hex, len, raw, sizeof raw) < 0)
		return MC_EINVAL;
	memcpy(out->name, raw, MC_TICKET_NAME_LEN);
	memcpy(out->hmac_key, raw + MC_TICKET_NAME_LEN, MC_TICKET_SECRET_LEN);
	memcpy(out->aes_key, raw + MC_TICKET_NAME_LEN + MC_TICKET_SECRET_LEN,
	       MC_TICKET_SECRET_LEN);
	explicit_bzero(raw, sizeof raw);
	return 0;
}

/* What a string that should hold hex digits looks like, without echoing it
 * (ticket keys are secrets and must not reach logs). */
static shown hex_shape(const json_t *j)
{
	shown r;
	if (!json_is_string(j))
		return show(j);
	const char *s = json_string_value(j);
	size_t n = json_string_length(j), bad = n;
	for (size_t i = 0; i < n && bad == n; i++)
		if (mc_hexval(s[i]) < 0)
			bad = i;
	if (bad < n)
		snprintf(r.s, sizeof r.s, "a non-hex character at offset %zu", bad);
	else
		snprintf(r.s, sizeof r.s, "%zu hex digits", n);
	return r;
}

/* A required hex member of a ticket key object, exactly n bytes. */
static int ticket_member(vctx *v, json_t *o, const char *key, uint8_t *out, size_t n)
{
	json_t *j = json_object_get(o, key);
	int rc = 0;
	push_key(v, key);
	if (!json_is_string(j) || hex_decode(json_string_value(j), json_string_length(j), out, n))
		rc = fail(v, "expected %zu hex digits (%zu bytes), got %s", 2 * n, n,
			  hex_shape(j).s);
	pop(v);
	return rc;
}

/* One key at the current path: 160 hex digits or {name, aes_key, hmac_key}. */
static int ticket_key(vctx *v, json_t *j, mc_ticket_key_conf *k)
{
	int rc;
	if (json_is_string(j)) {
		if (mc_config_ticket_key_from_hex(json_string_value(j), json_string_length(j), k))
			return fail(v,
				    "expected %d hex digits (an 80-byte key: name, HMAC key, AES "
				    "key), got %s",
				    TICKET_HEX_LEN, hex_shape(j).s);
		return 0;
	}
	if (!json_is_object(j))
		return fail(v,
			    "expected a ticket key: %d hex digits or an object with name, aes_key "
			    "and hmac_key, got %s",
			    TICKET_HEX_LEN, show(j).s);
	CHECK(check_keys(v, j, TICKET_KEY_KEYS, MC_ARRAY_LEN(TICKET_KEY_KEYS), TICKET_KEY_REQUIRED));
	CHECK(ticket_member(v, j, "name", k->name, MC_TICKET_NAME_LEN));
	CHECK(ticket_member(v, j, "aes_key", k->aes_key, MC_TICKET_SECRET_LEN));
	CHECK(ticket_member(v, j, "hmac_key", k->hmac_key, MC_TICKET_SECRET_LEN));
out:
	return rc;
}

/* A ticket-key set at the current path: one key, or an array of 1..16 keys
 * with distinct names (a name picks the key that decrypts a ticket). */
static int parse_ticket_keys(vctx *v, json_t *j, mc_ticket_keys_conf *out)
{
	int rc = 0;
	memset(out, 0, sizeof *out);
	if (!json_is_array(j)) {
		if (!json_is_string(j))
			return fail(v, "expected an array of ticket keys (or one key as %d hex "
				       "digits), got %s",
				    TICKET_HEX_LEN, show(j).s);
		rc = ticket_key(v, j, &out->keys[0]);
		out->n = rc ? 0 : 1;
		return rc;
	}
	size_t n = json_array_size(j);
	if (n < 1 || n > MC_TICKET_KEYS_MAX)
		return fail(v, "expected 1..%d ticket keys, got %zu", MC_TICKET_KEYS_MAX, n);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(j, i);
		push_index(v, i);
		rc = ticket_key(v, e, &out->keys[i]);
		for (size_t k = 0; rc == 0 && k < i; k++) {
			if (memcmp(out->keys[k].name, out->keys[i].name, MC_TICKET_NAME_LEN) != 0)
				continue;
			if (json_is_object(e))
				push_key(v, "name");
			rc = fail(v, "duplicate ticket key name (also ticket_keys[%zu])", k);
			if (json_is_object(e))
				pop(v);
		}
		pop(v);
		if (rc) {
			explicit_bzero(out, sizeof *out);
			return rc;
		}
		out->n = i + 1;
	}
	return 0;
}

/* A required non-empty file path member. */
static int req_file(vctx *v, json_t *obj, const char *key, char **out)
{
	json_t *j = json_object_get(obj, key);
	int rc = 0;
	push_key(v, key);
	if (!json_is_string(j) || json_string_length(j) == 0 ||
	    json_string_length(j) > DATA_DIR_MAX || strlen(json_string_value(j)) != json_string_length(j))
		rc = fail(v, "expected a non-empty file path of at most %d bytes, got %s",
			  DATA_DIR_MAX, show(j).s);
	else
		*out = mc_strdup(json_string_value(j));
	pop(v);
	return rc;
}

static int parse_alpn(vctx *v, json_t *o, mc_tls_conf *t)
{
	json_t *a = json_object_get(o, "alpn");
	if (!a)
		return 0;
	int rc = 0;
	push_key(v, "alpn");
	size_t n = json_is_array(a) ? json_array_size(a) : 0;
	if (!json_is_array(a) || n < 1 || n > MC_ARRAY_LEN(ALPN_NAMES)) {
		rc = fail(v, "expected an array of 1..2 protocols from \"h2\", \"http/1.1\", got %s",
			  show(a).s);
		goto out;
	}
	for (size_t i = 0; i < t->nalpn; i++)
		free(t->alpn[i]);
	t->nalpn = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(a, i);
		int idx = -1;
		for (size_t k = 0; json_is_string(e) && k < MC_ARRAY_LEN(ALPN_NAMES); k++)
			if (strcmp(json_string_value(e), ALPN_NAMES[k]) == 0)
				idx = (int)k;
		push_index(v, i);
		if (idx < 0)
			rc = fail(v, "expected \"h2\" or \"http/1.1\", got %s", show(e).s);
		for (size_t k = 0; rc == 0 && k < t->nalpn; k++)
			if (strcmp(t->alpn[k], ALPN_NAMES[idx]) == 0)
				rc = fail(v, "duplicate protocol %s (also alpn[%zu])", show(e).s, k);
		pop(v);
		if (rc)
			goto out;
		t->alpn[t->nalpn++] = mc_strdup(ALPN_NAMES[idx]);
	}
out:
	pop(v);
	return rc;
}

static int parse_h2(vctx *v, json_t *o, mc_h2_conf *h)
{
	json_t *j = json_object_get(o, "h2");
	if (!j)
		return 0;
	int rc;
	push_key(v, "h2");
	CHECK(check_object(v, j));
	CHECK(check_keys(v, j, H2_KEYS, MC_ARRAY_LEN(H2_KEYS), NULL));
	CHECK(opt_u32(v, j, "max_concurrent_streams", 1, 1000, &h->max_concurrent_streams));
	CHECK(opt_u32(v, j, "initial_window_size", 1024, 2147483647u, &h->initial_window_size));
	CHECK(opt_u32(v, j, "connection_window_size", 65535, 2147483647u,
		      &h->connection_window_size));
out:
	pop(v);
	return rc;
}

/* Refuses a TLS listener on the same fixed address as another listener. */
static int check_listen_distinct(vctx *v, const mc_cell_conf *c, const char *listen)
{
	unsigned port = 0;
	if (!hostport_parse(listen, &port) || port == 0)
		return 0;
	const char *other = strcmp(listen, c->listen_http) == 0    ? "listen.http"
			    : strcmp(listen, c->listen_admin) == 0 ? "listen.admin"
								   : NULL;
	if (!other)
		return 0;
	push_key(v, "listen");
	int rc = fail(v, "the same address as %s (%s)", other, show_str(listen).s);
	pop(v);
	return rc;
}

static int parse_tls(vctx *v, json_t *root, mc_cell_conf *c)
{
	mc_tls_conf *t = &c->tls;
	t->min_version = 12;
	t->session_timeout_s = 3600;
	t->handshake_timeout_ms = 10000;
	t->h2.max_concurrent_streams = 100;
	t->h2.initial_window_size = 65535;
	t->h2.connection_window_size = 1048576;
	json_t *o = json_object_get(root, "tls");
	if (!o)
		return 0;
	int rc, ver = 0;
	push_key(v, "tls");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, TLS_KEYS, MC_ARRAY_LEN(TLS_KEYS), TLS_REQUIRED));
	CHECK(opt_hostport(v, o, "listen", true, &t->listen));
	CHECK(check_listen_distinct(v, c, t->listen));
	CHECK(req_file(v, o, "cert", &t->cert));
	CHECK(req_file(v, o, "key", &t->key));
	json_t *tk = json_object_get(o, "ticket_keys");
	if (tk) {
		push_key(v, "ticket_keys");
		rc = parse_ticket_keys(v, tk, &t->ticket_keys);
		pop(v);
		if (rc)
			goto out;
	}
	t->alpn[0] = mc_strdup("h2");
	t->alpn[1] = mc_strdup("http/1.1");
	t->nalpn = 2;
	CHECK(parse_alpn(v, o, t));
	CHECK(opt_enum(v, o, "min_version", TLS_VERSIONS, MC_ARRAY_LEN(TLS_VERSIONS), &ver));
	t->min_version = ver == 0 ? 12 : 13;
	CHECK(opt_u32(v, o, "session_timeout_s", 1, 604800, &t->session_timeout_s));
	CHECK(opt_u32(v, o, "handshake_timeout_ms", 100, 600000, &t->handshake_timeout_ms));
	CHECK(parse_h2(v, o, &t->h2));
	t->enabled = 1;
out:
	pop(v);
	return rc;
}

/* ---- edge cache (cell "cache", region "shield") ----------------------------------------- */

static const char *const CACHE_KEYS[] = {"max_bytes",   "max_object_bytes",   "shards",
					 "policy",      "max_waiters",        "connect_timeout_ms",
					 "timeout_ms",  "max_conns",          "origin"};
static const char *const CACHE_POLICIES[] = {"s3fifo", "lru"};

static void cache_conf_default(mc_cache_conf *c)
{
	c->max_bytes = 64u << 20;
	c->max_object_bytes = 1u << 20;
	c->shards = 16;
	c->policy = 0;
	c->max_waiters = 1024;
	c->connect_timeout_ms = 1000;
	c->timeout_ms = 10000;
	c->max_conns = 64;
}

/* The members shared by a cell's "cache" and the region's "shield" (the object
 * at the current path); "origin" is accepted only with_origin. */
static int parse_cache_members(vctx *v, json_t *o, mc_cache_conf *c, bool with_origin)
{
	int rc;
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, CACHE_KEYS, MC_ARRAY_LEN(CACHE_KEYS) - (with_origin ? 0 : 1),
			 NULL));
	CHECK(opt_u64(v, o, "max_bytes", 65536, 1ull << 40, &c->max_bytes));
	CHECK(opt_u64(v, o, "max_object_bytes", 256, c->max_bytes, &c->max_object_bytes));
	CHECK(opt_u32(v, o, "shards", 1, 256, &c->shards));
	if (c->shards & (c->shards - 1)) {
		push_key(v, "shards");
		rc = fail(v, "expected a power of two in 1..256, got %" PRIu32, c->shards);
		pop(v);
		goto out;
	}
	CHECK(opt_enum(v, o, "policy", CACHE_POLICIES, MC_ARRAY_LEN(CACHE_POLICIES), &c->policy));
	CHECK(opt_u32(v, o, "max_waiters", 1, 100000, &c->max_waiters));
	CHECK(opt_u32(v, o, "connect_timeout_ms", 1, 60000, &c->connect_timeout_ms));
	CHECK(opt_u32(v, o, "timeout_ms", 1, 600000, &c->timeout_ms));
	CHECK(opt_u32(v, o, "max_conns", 1, 10000, &c->max_conns));
out:
	return rc;
}

static int parse_cell_cache(vctx *v, json_t *root, mc_cell_conf *c)
{
	cache_conf_default(&c->cache);
	json_t *o = json_object_get(root, "cache");
	int rc = 0;
	if (o) {
		push_key(v, "cache");
		rc = parse_cache_members(v, o, &c->cache, false);
		pop(v);
		if (rc)
			return rc;
	}
	/* a cache route's upstream is the region's shield, on region.http */
	for (size_t i = 0; i < c->nroutes && !c->region_http; i++) {
		if (c->routes[i].kind != MC_ROUTE_CACHE)
			continue;
		push_key(v, "routes");
		push_index(v, i);
		push_key(v, "kind");
		rc = fail(v, "a \"cache\" route needs region.http (the region's shield), which "
			     "is not set");
		pop(v);
		pop(v);
		pop(v);
		return rc;
	}
	return 0;
}

static int parse_shield(vctx *v, json_t *root, mc_region_conf *c)
{
	cache_conf_default(&c->shield);
	json_t *o = json_object_get(root, "shield");
	if (!o)
		return 0;
	int rc;
	push_key(v, "shield");
	CHECK(parse_cache_members(v, o, &c->shield, true));
	if (!json_object_get(o, "origin")) {
		rc = fail(v, "missing required key \"origin\"");
		goto out;
	}
	CHECK(opt_hostport(v, o, "origin", false, &c->shield_origin));
out:
	pop(v);
	return rc;
}

static const char *const TELEMETRY_CELL_KEYS[] = {"interval_ms", "stale_after_ms",
						   "events_max_bytes"};

/* "telemetry" of a cell (with interval_ms) or of the region (without). */
static int parse_telemetry(vctx *v, json_t *root, mc_telemetry_conf *t, bool cell)
{
	t->interval_ms = 1000;
	t->stale_after_ms = 3000;
	t->events_max_bytes = cell ? 4194304 : 16777216;
	json_t *o = json_object_get(root, "telemetry");
	if (!o)
		return 0;
	int rc;
	push_key(v, "telemetry");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, TELEMETRY_CELL_KEYS + (cell ? 0 : 1),
			 MC_ARRAY_LEN(TELEMETRY_CELL_KEYS) - (cell ? 0 : 1), NULL));
	if (cell)
		CHECK(opt_u32(v, o, "interval_ms", 100, 60000, &t->interval_ms));
	CHECK(opt_u32(v, o, "stale_after_ms", 200, 600000, &t->stale_after_ms));
	CHECK(opt_u64(v, o, "events_max_bytes", 65536, 1099511627776ull, &t->events_max_bytes));
	if (cell && t->stale_after_ms <= t->interval_ms) {
		push_key(v, json_object_get(o, "stale_after_ms") ? "stale_after_ms" : "interval_ms");
		rc = fail(v,
			  "stale_after_ms (%" PRIu32 ") must be more than interval_ms (%" PRIu32 ")",
			  t->stale_after_ms, t->interval_ms);
		pop(v);
	}
out:
	pop(v);
	return rc;
}

static int cell_build(vctx *v, json_t *root, mc_cell_conf *c)
{
	int rc;
	CHECK(check_keys(v, root, CELL_KEYS, MC_ARRAY_LEN(CELL_KEYS), CELL_REQUIRED));
	CHECK(req_name(v, root, "cell", false, &c->cell));
	CHECK(parse_listen(v, root, "http", &c->listen_http, "admin", &c->listen_admin));
	CHECK(opt_u32(v, root, "threads", 0, MC_CELL_THREADS_MAX, &c->threads));
	CHECK(req_data_dir(v, root, &c->data_dir));
	CHECK(parse_region_link(v, root, c));
	CHECK(parse_log(v, root, &c->log));
	CHECK(parse_state(v, root, &c->state));
	CHECK(parse_limits(v, root, &c->limits));
	CHECK(parse_repl(v, root, &c->repl));
	CHECK(parse_pools(v, root, c));
	CHECK(parse_routes(v, root, c));
	CHECK(parse_flags(v, root, c));
	CHECK(parse_locality(v, root, c));
	CHECK(parse_tls(v, root, c));
	CHECK(parse_cell_cache(v, root, c));
	CHECK(parse_cell_classes(v, root, c));
	CHECK(parse_telemetry(v, root, &c->telemetry, true));
out:
	return rc;
}

int mc_cell_conf_parse(const char *label, const char *text, size_t len, mc_cell_conf **out,
		       char *err, size_t errcap)
{
	vctx v;
	json_t *root = NULL;
	mc_cell_conf *c = NULL;
	vctx_init(&v, label, text, len, err, errcap);
	*out = NULL;
	int rc = load_doc(&v, &root);
	if (rc)
		goto out;
	c = mc_calloc(1, sizeof *c);
	c->path = mc_strdup(v.label);
	rc = cell_build(&v, root, c);
out:
	json_decref(root);
	if (rc)
		mc_cell_conf_free(c);
	else
		*out = c;
	return rc;
}

int mc_cell_conf_load(const char *path, mc_cell_conf **out, char *err, size_t errcap)
{
	vctx v;
	char *buf;
	size_t len;
	vctx_init(&v, path, NULL, 0, err, errcap);
	*out = NULL;
	int rc = read_file(&v, v.label, &buf, &len);
	if (rc == 0)
		rc = mc_cell_conf_parse(v.label, buf, len, out, err, errcap);
	free(buf);
	return rc;
}

void mc_cell_conf_free(mc_cell_conf *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->cell);
	free(c->listen_http);
	free(c->listen_admin);
	free(c->data_dir);
	free(c->region_repl);
	free(c->region_http);
	for (size_t i = 0; i < c->npools; i++) {
		mc_pool_conf *p = &c->pools[i];
		free(p->name);
		for (size_t k = 0; k < p->nworkers; k++)
			free(p->workers[k]);
		free(p->workers);
		free(p->health.path);
	}
	free(c->pools);
	for (size_t i = 0; i < c->nroutes; i++) {
		free(c->routes[i].name);
		free(c->routes[i].prefix);
		quota_conf_free(c->routes[i].quota);
	}
	free(c->routes);
	edge_conf_free(c);
	free(c->tls.listen);
	free(c->tls.cert);
	free(c->tls.key);
	for (size_t i = 0; i < c->tls.nalpn; i++)
		free(c->tls.alpn[i]);
	explicit_bzero(&c->tls.ticket_keys, sizeof c->tls.ticket_keys);
	mc_class_rules_fini(&c->classes);
	free(c);
}

/* ---- region -------------------------------------------------------------------------- */

static const char *const REGION_KEYS[] = {"region", "listen", "data_dir",    "cells",	"log",
					  "state",  "limits", "replication", "fallback",
					  "shield", "telemetry"};
static const char *const REGION_REQUIRED[] = {"region", "listen", "data_dir", NULL};

typedef struct name_at {
	const char *name;
	size_t index;
} name_at;

static int name_at_cmp(const void *a, const void *b)
{
	const name_at *x = a, *y = b;
	int d = strcmp(x->name, y->name);
	if (d)
		return d;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int parse_cells(vctx *v, json_t *root, mc_region_conf *c)
{
	json_t *a = json_object_get(root, "cells");
	if (!a)
		return 0;
	int rc = 0;
	name_at *sorted = NULL;
	push_key(v, "cells");
	if (!json_is_array(a)) {
		rc = fail(v, "expected an array of cell names, got %s", show(a).s);
		goto out;
	}
	size_t n = json_array_size(a);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(a, i);
		if (!jname_ok(e, false)) {
			push_index(v, i);
			rc = fail(v, "expected a cell name matching [a-z0-9-]{1,31}, got %s",
				  show(e).s);
			pop(v);
			goto out;
		}
	}
	if (n == 0)
		goto out;
	/* duplicates: sort (name, index) and report the earliest later occurrence */
	sorted = mc_calloc(n, sizeof *sorted);
	for (size_t i = 0; i < n; i++) {
		sorted[i].name = json_string_value(json_array_get(a, i));
		sorted[i].index = i;
	}
	qsort(sorted, n, sizeof *sorted, name_at_cmp);
	size_t dup = SIZE_MAX, first = 0;
	for (size_t i = 1, run = 0; i < n; i++) {
		if (strcmp(sorted[i].name, sorted[i - 1].name) != 0) {
			run = i;
			continue;
		}
		if (sorted[i].index < dup) {
			dup = sorted[i].index;
			first = sorted[run].index;
		}
	}
	if (dup != SIZE_MAX) {
		push_index(v, dup);
		rc = fail(v, "duplicate cell %s (also cells[%zu])", show(json_array_get(a, dup)).s,
			  first);
		pop(v);
		goto out;
	}
	c->cells = mc_calloc(n, sizeof *c->cells);
	c->ncells = n;
	for (size_t i = 0; i < n; i++)
		c->cells[i] = mc_strdup(json_string_value(json_array_get(a, i)));
out:
	free(sorted);
	pop(v);
	return rc;
}

/* The fallback path's upstream: a list of workers or origin addresses. */
static int parse_region_fallback(vctx *v, json_t *root, mc_region_conf *c)
{
	json_t *o = json_object_get(root, "fallback");
	if (!o)
		return 0;
	c->fallback = mc_calloc(1, sizeof *c->fallback);
	push_key(v, "fallback");
	int rc = parse_pool(v, o, c->fallback, FALLBACK_KEYS, MC_ARRAY_LEN(FALLBACK_KEYS));
	pop(v);
	if (rc == 0)
		c->fallback->name = mc_strdup("fallback");
	return rc;
}

static void pool_conf_free(mc_pool_conf *p)
{
	if (!p)
		return;
	free(p->name);
	for (size_t k = 0; k < p->nworkers; k++)
		free(p->workers[k]);
	free(p->workers);
	free(p->health.path);
	free(p);
}

static int region_build(vctx *v, json_t *root, mc_region_conf *c)
{
	int rc;
	CHECK(check_keys(v, root, REGION_KEYS, MC_ARRAY_LEN(REGION_KEYS), REGION_REQUIRED));
	CHECK(req_name(v, root, "region", false, &c->region));
	CHECK(parse_listen(v, root, "http", &c->listen_http, "repl", &c->listen_repl));
	CHECK(req_data_dir(v, root, &c->data_dir));
	CHECK(parse_cells(v, root, c));
	CHECK(parse_log(v, root, &c->log));
	CHECK(parse_state(v, root, &c->state));
	CHECK(parse_limits(v, root, &c->limits));
	CHECK(parse_repl(v, root, &c->repl));
	CHECK(parse_region_fallback(v, root, c));
	CHECK(parse_shield(v, root, c));
	CHECK(reject_cell_only(v, root));
	CHECK(parse_telemetry(v, root, &c->telemetry, false));
out:
	return rc;
}

int mc_region_conf_parse(const char *label, const char *text, size_t len, mc_region_conf **out,
			 char *err, size_t errcap)
{
	vctx v;
	json_t *root = NULL;
	mc_region_conf *c = NULL;
	vctx_init(&v, label, text, len, err, errcap);
	*out = NULL;
	int rc = load_doc(&v, &root);
	if (rc)
		goto out;
	c = mc_calloc(1, sizeof *c);
	c->path = mc_strdup(v.label);
	rc = region_build(&v, root, c);
out:
	json_decref(root);
	if (rc)
		mc_region_conf_free(c);
	else
		*out = c;
	return rc;
}

int mc_region_conf_load(const char *path, mc_region_conf **out, char *err, size_t errcap)
{
	vctx v;
	char *buf;
	size_t len;
	vctx_init(&v, path, NULL, 0, err, errcap);
	*out = NULL;
	int rc = read_file(&v, v.label, &buf, &len);
	if (rc == 0)
		rc = mc_region_conf_parse(v.label, buf, len, out, err, errcap);
	free(buf);
	return rc;
}

void mc_region_conf_free(mc_region_conf *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->region);
	free(c->listen_http);
	free(c->listen_repl);
	free(c->data_dir);
	for (size_t i = 0; i < c->ncells; i++)
		free(c->cells[i]);
	free(c->cells);
	pool_conf_free(c->fallback);
	free(c->shield_origin);
	free(c);
}

/* ---- fleet config ------------------------------------------------------------------------ */

const char *const mc_key_status_names[3] = {"pending", "active", "retiring"};

static const char *const FLEET_KEYS[] = {"version", "pools",	 "routes",
					 "flags",   "auth_keys", "tls_ticket_keys",
					 "cells",   "rollout",	 "state_classes"};
static const char *const FLEET_REQUIRED[] = {"routes", NULL};
static const char *const FLEET_CELL_KEYS[] = {"pools", "flags"};
static const char *const AUTH_KEY_KEYS[] = {"kid", "alg", "key", "status"};
static const char *const AUTH_KEY_REQUIRED[] = {"kid", "alg", "key", "status", NULL};
static const char *const ROLLOUT_KEYS[] = {"stages",
					   "bake_ms",
					   "apply_timeout_ms",
					   "min_requests",
					   "max_error_rate_increase_pct",
					   "max_error_rate_ratio",
					   "max_p95_ratio",
					   "p95_slack_ms"};
static const char *const HMAC_ALGS[] = {"HS256", "HS384", "HS512"};
static const size_t HMAC_MIN_BYTES[] = {32, 48, 64};
static const char *const PEM_ALGS[] = {"ES256", "ES384", "ES512", "RS256", "RS384",
				       "RS512", "PS256", "PS384", "PS512", "EdDSA"};
#define HMAC_MAX_BYTES 1024
#define PEM_MAX_BYTES 16384
#define PEM_BEGIN "-----BEGIN PUBLIC KEY-----"
#define PEM_END "-----END PUBLIC KEY-----"

static int opt_number(vctx *v, json_t *obj, const char *key, double min, double max, double *out)
{
	json_t *j = json_object_get(obj, key);
	if (!j)
		return 0;
	int rc = 0;
	push_key(v, key);
	if (!json_is_number(j) || json_number_value(j) < min || json_number_value(j) > max)
		rc = fail(v, "expected a number in %g..%g, got %s", min, max, show(j).s);
	else
		*out = json_number_value(j);
	pop(v);
	return rc;
}

/* A PEM "PUBLIC KEY" block: the armour lines around base64 text. */
static bool pem_public_ok(const char *s, size_t n)
{
	size_t bl = strlen(PEM_BEGIN), el = strlen(PEM_END);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	if (n < bl + el + 4 || n > PEM_MAX_BYTES || strncmp(s, PEM_BEGIN, bl) != 0 ||
	    strncmp(s + n - el, PEM_END, el) != 0)
		return false;
	size_t b64 = 0;
	for (size_t i = bl; i < n - el; i++) {
		char c = s[i];
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '+' || c == '/' || c == '=')
			b64++;
		else if (c != '\n' && c != '\r')
			return false;
	}
	return b64 >= 16 && b64 % 4 == 0;
}

static int find_name(const char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], s) == 0)
			return (int)i;
	return -1;
}

static int parse_auth_key(vctx *v, json_t *o, mc_auth_key_conf *keys, size_t idx)
{
	mc_auth_key_conf *k = &keys[idx];
	int rc, st = 0;
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, AUTH_KEY_KEYS, MC_ARRAY_LEN(AUTH_KEY_KEYS), AUTH_KEY_REQUIRED));
	json_t *kid = json_object_get(o, "kid");
	push_key(v, "kid");
	if (!json_is_string(kid) ||
	    !flag_name_ok(json_string_value(kid), json_string_length(kid)) ||
	    strlen(json_string_value(kid)) != json_string_length(kid))
		rc =
		    fail(v, "expected a key id matching [A-Za-z0-9_.-]{1,64}, got %s", show(kid).s);
	for (size_t i = 0; rc == 0 && i < idx; i++)
		if (strcmp(keys[i].kid, json_string_value(kid)) == 0)
			rc = fail(v, "duplicate kid %s (also auth_keys[%zu])", show(kid).s, i);
	pop(v);
	if (rc)
		goto out;
	k->kid = mc_strdup(json_string_value(kid));
	json_t *alg = json_object_get(o, "alg");
	const char *as = json_is_string(alg) ? json_string_value(alg) : "";
	int hmac = find_name(HMAC_ALGS, MC_ARRAY_LEN(HMAC_ALGS), as);
	int pem = find_name(PEM_ALGS, MC_ARRAY_LEN(PEM_ALGS), as);
	if (hmac < 0 && pem < 0) {
		push_key(v, "alg");
		rc = fail(v,
			  "expected one of \"HS256\", \"HS384\", \"HS512\", \"ES256\", \"ES384\", "
			  "\"ES512\", \"RS256\", \"RS384\", \"RS512\", \"PS256\", \"PS384\", "
			  "\"PS512\", \"EdDSA\", got %s",
			  show(alg).s);
		pop(v);
		goto out;
	}
	k->alg = mc_strdup(as);
	json_t *key = json_object_get(o, "key");
	push_key(v, "key");
	if (hmac >= 0) {
		/* a secret: its value never reaches a message */
		size_t n = json_is_string(key) ? json_string_length(key) : 0;
		bool hex = json_is_string(key) && n % 2 == 0;
		for (size_t i = 0; hex && i < n; i++)
			hex = mc_hexval(json_string_value(key)[i]) >= 0;
		size_t min = HMAC_MIN_BYTES[hmac];
		if (!hex || n / 2 < min || n / 2 > HMAC_MAX_BYTES)
			rc = fail(v,
				  "expected a %s secret of %zu..%d bytes as hex digits (%zu..%d "
				  "digits), got %s",
				  as, min, HMAC_MAX_BYTES, 2 * min, 2 * HMAC_MAX_BYTES,
				  hex_shape(key).s);
	} else if (!json_is_string(key) ||
		   !pem_public_ok(json_string_value(key), json_string_length(key))) {
		rc = fail(v,
			  "expected a PEM public key (\"" PEM_BEGIN "\\n...\\n" PEM_END
			  "\") for %s, got %s",
			  as, show(key).s);
	}
	pop(v);
	if (rc)
		goto out;
	k->key = mc_strdup(json_string_value(key));
	CHECK(
	    opt_enum(v, o, "status", mc_key_status_names, MC_ARRAY_LEN(mc_key_status_names), &st));
	k->status = (mc_key_status)st;
out:
	return rc;
}

static int parse_auth_keys(vctx *v, json_t *root, mc_fleet_conf *f)
{
	json_t *a = json_object_get(root, "auth_keys");
	if (!a)
		return 0;
	int rc = 0;
	push_key(v, "auth_keys");
	size_t n = json_is_array(a) ? json_array_size(a) : 0;
	if (!json_is_array(a)) {
		rc =
		    fail(v, "expected an array of keys {kid, alg, key, status}, got %s", show(a).s);
		goto out;
	}
	if (n > MC_AUTH_KEYS_MAX) {
		rc = fail(v, "expected at most %d keys, got %zu", MC_AUTH_KEYS_MAX, n);
		goto out;
	}
	f->auth_keys = mc_calloc(n ? n : 1, sizeof *f->auth_keys);
	size_t active = 0;
	for (size_t i = 0; i < n; i++) {
		push_index(v, i);
		rc = parse_auth_key(v, json_array_get(a, i), f->auth_keys, i);
		pop(v);
		f->nauth_keys = i + 1; /* what was set is freed either way */
		if (rc)
			goto out;
		active += f->auth_keys[i].status == MC_KEY_ACTIVE;
	}
	if (active > 1)
		rc = fail(v,
			  "expected at most one key with status \"active\" (the signing key), "
			  "got %zu",
			  active);
out:
	pop(v);
	return rc;
}

static void stages_free(mc_rollout_stage *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++) {
		for (size_t k = 0; k < s[i].ncells; k++)
			free(s[i].cells[k]);
		free(s[i].cells);
	}
	free(s);
}

void mc_rollout_stages_free(mc_rollout_stage *s, size_t n)
{
	stages_free(s, n);
}

/* Splits one stage "a+b" into st. Returns NULL, or what is wrong (static text
 * naming the bad part goes to bad). */
static const char *stage_split(const char *s, size_t n, mc_rollout_stage *st, char *bad,
			       size_t badcap)
{
	st->cells = NULL;
	st->ncells = 0;
	if (n == 0)
		return "empty stage";
	size_t parts = 1;
	for (size_t i = 0; i < n; i++)
		parts += s[i] == '+';
	st->cells = mc_calloc(parts, sizeof *st->cells);
	for (size_t at = 0; at <= n;) {
		size_t e = at;
		while (e < n && s[e] != '+')
			e++;
		if (!name_ok(s + at, e - at, false)) {
			snprintf(bad, badcap, "%.*s", (int)MC_MIN(e - at, (size_t)40), s + at);
			return "expected cell names matching [a-z0-9-]{1,31} joined by '+'";
		}
		for (size_t k = 0; k < st->ncells; k++) {
			if (strlen(st->cells[k]) == e - at &&
			    memcmp(st->cells[k], s + at, e - at) == 0) {
				snprintf(bad, badcap, "%.*s", (int)(e - at), s + at);
				return "cell named twice";
			}
		}
		st->cells[st->ncells++] = mc_strndup(s + at, e - at);
		at = e + 1;
	}
	return NULL;
}

/* The cell of stages[0..n) equal to name: 1 when found. */
static bool stages_have(const mc_rollout_stage *s, size_t n, const char *name, size_t *where)
{
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < s[i].ncells; k++)
			if (strcmp(s[i].cells[k], name) == 0) {
				*where = i;
				return true;
			}
	return false;
}

int mc_rollout_stages_parse(const char *spec, mc_rollout_stage **out, size_t *n, char *err,
			    size_t errcap)
{
	*out = NULL;
	*n = 0;
	size_t len = spec ? strlen(spec) : 0, cap = 1;
	for (size_t i = 0; i < len; i++)
		cap += spec[i] == ',';
	if (len == 0 || cap > MC_FLEET_CELLS_MAX) {
		snprintf(err, errcap, "expected 1..%d stages like \"lax,sfo+sea\", got \"%s\"",
			 MC_FLEET_CELLS_MAX, spec ? spec : "");
		return MC_EINVAL;
	}
	mc_rollout_stage *st = mc_calloc(cap, sizeof *st);
	size_t ns = 0;
	for (size_t at = 0; at <= len;) {
		size_t e = at;
		while (e < len && spec[e] != ',')
			e++;
		char bad[64] = "";
		const char *why = stage_split(spec + at, e - at, &st[ns], bad, sizeof bad);
		ns++;
		for (size_t k = 0; !why && k < st[ns - 1].ncells; k++) {
			size_t w;
			if (stages_have(st, ns - 1, st[ns - 1].cells[k], &w)) {
				snprintf(bad, sizeof bad, "%s", st[ns - 1].cells[k]);
				why = "cell in two stages";
			}
		}
		if (why) {
			snprintf(err, errcap, "stage %zu \"%.*s\": %s%s%s%s", ns,
				 (int)MC_MIN(e - at, (size_t)100), spec + at, why,
				 bad[0] ? " (\"" : "", bad, bad[0] ? "\")" : "");
			stages_free(st, ns);
			return MC_EINVAL;
		}
		at = e + 1;
	}
	*out = st;
	*n = ns;
	return 0;
}

static int parse_rollout(vctx *v, json_t *root, mc_fleet_conf *f)
{
	mc_rollout_conf *r = &f->rollout;
	r->bake_ms = 10000;
	r->apply_timeout_ms = 60000;
	r->min_requests = 20;
	r->max_error_rate_increase_pct = 1.0;
	r->max_error_rate_ratio = 2.0;
	r->max_p95_ratio = 1.5;
	r->p95_slack_ms = 5;
	json_t *o = json_object_get(root, "rollout");
	if (!o)
		return 0;
	int rc;
	push_key(v, "rollout");
	CHECK(check_object(v, o));
	CHECK(check_keys(v, o, ROLLOUT_KEYS, MC_ARRAY_LEN(ROLLOUT_KEYS), NULL));
	CHECK(opt_u32(v, o, "bake_ms", 0, 86400000, &r->bake_ms));
	CHECK(opt_u32(v, o, "apply_timeout_ms", 1000, 3600000, &r->apply_timeout_ms));
	CHECK(opt_u32(v, o, "min_requests", 0, 100000000, &r->min_requests));
	CHECK(opt_number(v, o, "max_error_rate_increase_pct", 0, 100,
			 &r->max_error_rate_increase_pct));
	CHECK(opt_number(v, o, "max_error_rate_ratio", 1, 1000, &r->max_error_rate_ratio));
	CHECK(opt_number(v, o, "max_p95_ratio", 1, 1000, &r->max_p95_ratio));
	CHECK(opt_u32(v, o, "p95_slack_ms", 0, 600000, &r->p95_slack_ms));
	json_t *a = json_object_get(o, "stages");
	if (!a)
		goto out;
	push_key(v, "stages");
	size_t n = json_is_array(a) ? json_array_size(a) : 0;
	if (!json_is_array(a) || n > MC_FLEET_CELLS_MAX) {
		rc = fail(v,
			  "expected an array of at most %d stages like \"lax\" or \"sfo+sea\", "
			  "got %s",
			  MC_FLEET_CELLS_MAX, show(a).s);
		pop(v);
		goto out;
	}
	r->stages = mc_calloc(n ? n : 1, sizeof *r->stages);
	for (size_t i = 0; i < n && rc == 0; i++) {
		json_t *e = json_array_get(a, i);
		char bad[64] = "";
		push_index(v, i);
		const char *why =
		    json_is_string(e) && strlen(json_string_value(e)) == json_string_length(e)
			? stage_split(json_string_value(e), json_string_length(e), &r->stages[i],
				      bad, sizeof bad)
			: "expected a string";
		r->nstages = i + 1;
		size_t w;
		for (size_t k = 0; !why && k < r->stages[i].ncells; k++) {
			const char *cn = r->stages[i].cells[k];
			if (stages_have(r->stages, i, cn, &w)) {
				rc = fail(v, "cell \"%s\" is already in stages[%zu]", cn, w);
				break;
			}
			if (f->ncells > 0 &&
			    find_name((const char *const *)f->cells, f->ncells, cn) < 0) {
				rc = fail(v, "unknown cell \"%s\" (not a key of cells)", cn);
				break;
			}
		}
		if (why && rc == 0)
			rc = fail(v, "%s%s%s%s, got %s", why, bad[0] ? " (\"" : "", bad,
				  bad[0] ? "\")" : "", show(e).s);
		pop(v);
	}
	pop(v);
out:
	pop(v);
	return rc;
}

/* Frees the members of one pool config (not the struct). */
static void pool_conf_clear(mc_pool_conf *p)
{
	free(p->name);
	for (size_t k = 0; k < p->nworkers; k++)
		free(p->workers[k]);
	free(p->workers);
	free(p->health.path);
	memset(p, 0, sizeof *p);
}

/* "cells": names and per-cell overrides. Pool overrides must name pools of the
 * document; those of the validating cell (boot) replace the pools in dyn now,
 * its flag overrides are kept in *own_flags for after the document's flags. */
static int parse_fleet_cells(vctx *v, json_t *root, mc_fleet_conf *f, const mc_cell_conf *boot,
			     mc_cell_conf *own_flags)
{
	json_t *o = json_object_get(root, "cells");
	if (!o)
		return 0;
	int rc;
	mc_cell_conf *tmp = NULL;
	push_key(v, "cells");
	CHECK(check_object(v, o));
	size_t n = json_object_size(o);
	if (n > MC_FLEET_CELLS_MAX) {
		rc = fail(v, "expected at most %d cells, got %zu", MC_FLEET_CELLS_MAX, n);
		goto out;
	}
	f->cells = mc_calloc(n ? n : 1, sizeof *f->cells);
	const char *name;
	json_t *co;
	json_object_foreach(o, name, co)
	{
		if (!name_ok(name, strlen(name), false))
			CHECK(fail_key(v, name, "invalid cell name %s (expected [a-z0-9-]{1,31})",
				       show_str(name).s));
		f->cells[f->ncells++] = mc_strdup(name);
		push_key(v, name);
		rc = check_object(v, co);
		if (rc == 0)
			rc =
			    check_keys(v, co, FLEET_CELL_KEYS, MC_ARRAY_LEN(FLEET_CELL_KEYS), NULL);
		tmp = mc_calloc(1, sizeof *tmp);
		if (rc == 0)
			rc = parse_pools(v, co, tmp);
		for (size_t i = 0; rc == 0 && i < tmp->npools; i++) {
			size_t k;
			for (k = 0; k < f->dyn->npools; k++)
				if (strcmp(f->dyn->pools[k].name, tmp->pools[i].name) == 0)
					break;
			if (k == f->dyn->npools) {
				char list[200];
				pool_list(f->dyn, list, sizeof list);
				push_key(v, "pools");
				rc = fail_key(v, tmp->pools[i].name,
					      "unknown pool %s (a cell overrides pools of the "
					      "document; %s)",
					      show_str(tmp->pools[i].name).s, list);
				pop(v);
			} else if (boot && strcmp(boot->cell, name) == 0) {
				pool_conf_clear(&f->dyn->pools[k]);
				f->dyn->pools[k] = tmp->pools[i];
				memset(&tmp->pools[i], 0, sizeof tmp->pools[i]);
			}
		}
		if (rc == 0)
			rc = parse_flags(v, co, tmp);
		if (rc == 0 && boot && strcmp(boot->cell, name) == 0) {
			own_flags->flags = tmp->flags;
			own_flags->nflags = tmp->nflags;
			tmp->flags = NULL;
			tmp->nflags = 0;
		}
		pop(v);
		mc_cell_conf_free(tmp);
		tmp = NULL;
		if (rc)
			goto out;
	}
out:
	pop(v);
	return rc;
}

/* The validating cell's flag overrides replace or extend the document's. */
static void merge_flags(mc_cell_conf *dyn, mc_cell_conf *own)
{
	if (own->nflags == 0)
		return;
	dyn->flags = mc_realloc(dyn->flags, (dyn->nflags + own->nflags) * sizeof *dyn->flags);
	for (size_t i = 0; i < own->nflags; i++) {
		mc_flag_conf *of = &own->flags[i];
		size_t k;
		for (k = 0; k < dyn->nflags; k++)
			if (strcmp(dyn->flags[k].name, of->name) == 0)
				break;
		if (k < dyn->nflags) {
			free(dyn->flags[k].name);
			free(dyn->flags[k].json);
		} else {
			dyn->nflags++;
		}
		dyn->flags[k] = *of;
		memset(of, 0, sizeof *of);
	}
	own->nflags = 0;
}

static int fleet_build(vctx *v, json_t *root, const mc_cell_conf *boot, mc_fleet_conf *f)
{
	int rc;
	mc_cell_conf *own = mc_calloc(1, sizeof *own);
	mc_cell_conf *d = f->dyn;
	json_t *empty = json_object();
	CHECK(check_keys(v, root, FLEET_KEYS, MC_ARRAY_LEN(FLEET_KEYS), FLEET_REQUIRED));
	json_t *ver = json_object_get(root, "version");
	if (ver) {
		push_key(v, "version");
		if (!json_is_integer(ver) || json_integer_value(ver) < 0)
			rc = fail(v,
				  "expected a non-negative integer (the region numbers "
				  "versions; this one is informational), got %s",
				  show(ver).s);
		else
			f->version = json_integer_value(ver);
		pop(v);
		if (rc)
			goto out;
	}
	d->cell = mc_strdup(boot ? boot->cell : "fleet");
	if (boot)
		d->limits = boot->limits;
	else
		CHECK(parse_limits(v, empty, &d->limits));
	d->region_http = boot ? (boot->region_http ? mc_strdup(boot->region_http) : NULL)
			      : mc_strdup("(region)");
	CHECK(parse_pools(v, root, d));
	CHECK(parse_fleet_cells(v, root, f, boot, own));
	CHECK(parse_routes(v, root, d));
	CHECK(parse_flags(v, root, d));
	merge_flags(d, own);
	CHECK(parse_cell_cache(v, empty, d));
	if (json_object_get(root, "state_classes")) {
		CHECK(parse_cell_classes(v, root, d));
		f->has_classes = 1;
	}
	CHECK(parse_auth_keys(v, root, f));
	json_t *tk = json_object_get(root, "tls_ticket_keys");
	if (tk) {
		push_key(v, "tls_ticket_keys");
		rc = parse_ticket_keys(v, tk, &f->ticket_keys);
		pop(v);
		if (rc)
			goto out;
		f->has_ticket_keys = 1;
	}
	CHECK(parse_rollout(v, root, f));
out:
	json_decref(empty);
	mc_cell_conf_free(own);
	return rc;
}

int mc_fleet_conf_parse(const char *label, const char *text, size_t len, const mc_cell_conf *boot,
			mc_fleet_conf **out, char *err, size_t errcap)
{
	vctx v;
	json_t *root = NULL;
	mc_fleet_conf *f = NULL;
	vctx_init(&v, label ? label : "fleet.json", text, len, err, errcap);
	v.max_bytes = MC_FLEET_MAX_BYTES;
	*out = NULL;
	int rc = load_doc(&v, &root);
	if (rc)
		goto out;
	f = mc_calloc(1, sizeof *f);
	f->version = -1;
	f->dyn = mc_calloc(1, sizeof *f->dyn);
	f->dyn->path = mc_strdup(v.label);
	rc = fleet_build(&v, root, boot, f);
out:
	json_decref(root);
	if (rc)
		mc_fleet_conf_free(f);
	else
		*out = f;
	return rc;
}

void mc_fleet_conf_free(mc_fleet_conf *f)
{
	if (!f)
		return;
	mc_cell_conf_free(f->dyn);
	for (size_t i = 0; i < f->nauth_keys; i++) {
		free(f->auth_keys[i].kid);
		free(f->auth_keys[i].alg);
		if (f->auth_keys[i].key)
			explicit_bzero(f->auth_keys[i].key, strlen(f->auth_keys[i].key));
		free(f->auth_keys[i].key);
	}
	free(f->auth_keys);
	explicit_bzero(&f->ticket_keys, sizeof f->ticket_keys);
	for (size_t i = 0; i < f->ncells; i++)
		free(f->cells[i]);
	free(f->cells);
	stages_free(f->rollout.stages, f->rollout.nstages);
	free(f);
}
