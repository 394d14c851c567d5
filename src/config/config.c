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
					 "tombstone_retention_ms", "max_mget_keys"};
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
out:
	pop(v);
	return rc;
}

static const char *const LIMITS_KEYS[] = {"max_header_bytes",	"max_headers",
					  "max_body_bytes",	"idle_timeout_ms",
					  "request_timeout_ms", "max_connections", "drain_timeout_ms"};

static int parse_limits(vctx *v, json_t *root, mc_limits_conf *out)
{
	out->max_header_bytes = 16384;
	out->max_headers = 64;
	out->max_body_bytes = 1048576;
	out->idle_timeout_ms = 60000;
	out->request_timeout_ms = 30000;
	out->max_connections = 10000;
	out->drain_timeout_ms = 10000;
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
	if (v->len > MC_CONFIG_MAX_BYTES) {
		set_err(v, "%s: document is larger than %u bytes", v->label, MC_CONFIG_MAX_BYTES);
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
					"state_classes"};
static const char *const CELL_REQUIRED[] = {"cell", "listen", "data_dir", "region", "routes", NULL};
static const char *const REGION_LINK_KEYS[] = {"repl", "http"};
static const char *const REGION_LINK_REQUIRED[] = {"repl", NULL};
static const char *const POOL_KEYS[] = {"workers", "connect_timeout_ms", "timeout_ms", "max_conns"};
static const char *const POOL_REQUIRED[] = {"workers", NULL};
static const char *const ROUTE_KEYS[] = {"name", "prefix", "kind", "pool"};
static const char *const ROUTE_REQUIRED[] = {"name", "prefix", "kind", NULL};
static const char *const ROUTE_KINDS[] = {"proxy", "kv"};

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
		p->connect_timeout_ms = 1000;
		p->timeout_ms = 10000;
		p->max_conns = 64;
		if (!name_ok(name, strlen(name), true))
			CHECK(fail_key(v, name, "invalid pool name %s (expected [a-z0-9_-]{1,31})",
				       show_str(name).s));
		push_key(v, name);
		rc = check_object(v, po);
		if (!rc)
			rc = check_keys(v, po, POOL_KEYS, MC_ARRAY_LEN(POOL_KEYS), POOL_REQUIRED);
		if (!rc)
			rc = parse_workers(v, po, p);
		if (!rc)
			rc = opt_u32(v, po, "connect_timeout_ms", 1, 60000, &p->connect_timeout_ms);
		if (!rc)
			rc = opt_u32(v, po, "timeout_ms", 1, 600000, &p->timeout_ms);
		if (!rc)
			rc = opt_u32(v, po, "max_conns", 1, 10000, &p->max_conns);
		pop(v);
		if (rc)
			goto out;
		p->name = mc_strdup(name);
	}
out:
	pop(v);
	return rc;
}

static int check_prefix(vctx *v, const json_t *j)
{
	if (!json_is_string(j) || json_string_value(j)[0] != '/')
		return fail(v, "expected a path prefix starting with \"/\", got %s", show(j).s);
	size_t n = json_string_length(j);
	if (n > PREFIX_MAX)
		return fail(v, "expected a path prefix of at most %d bytes, got %s (%zu bytes)",
			    PREFIX_MAX, show(j).s, n);
	const unsigned char *s = (const unsigned char *)json_string_value(j);
	for (size_t i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] == 0x7f)
			return fail(v,
				    "expected a path prefix without whitespace or control "
				    "characters, got %s",
				    show(j).s);
	return 0;
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
	r->kind = kind == 0 ? MC_ROUTE_PROXY : MC_ROUTE_KV;
	json_t *pool = json_object_get(ro, "pool");
	if (r->kind == MC_ROUTE_KV) {
		if (pool) {
			push_key(v, "pool");
			rc = fail(v, "a \"kv\" route takes no pool, got %s", show(pool).s);
			pop(v);
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

static int cell_build(vctx *v, json_t *root, mc_cell_conf *c)
{
	int rc;
	CHECK(check_keys(v, root, CELL_KEYS, MC_ARRAY_LEN(CELL_KEYS), CELL_REQUIRED));
	CHECK(req_name(v, root, "cell", false, &c->cell));
	CHECK(parse_listen(v, root, "http", &c->listen_http, "admin", &c->listen_admin));
	CHECK(req_data_dir(v, root, &c->data_dir));
	CHECK(parse_region_link(v, root, c));
	CHECK(parse_log(v, root, &c->log));
	CHECK(parse_state(v, root, &c->state));
	CHECK(parse_limits(v, root, &c->limits));
	CHECK(parse_repl(v, root, &c->repl));
	CHECK(parse_pools(v, root, c));
	CHECK(parse_routes(v, root, c));
	CHECK(parse_cell_classes(v, root, c));
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
	}
	free(c->pools);
	for (size_t i = 0; i < c->nroutes; i++) {
		free(c->routes[i].name);
		free(c->routes[i].prefix);
	}
	free(c->routes);
	mc_class_rules_fini(&c->classes);
	free(c);
}

/* ---- region -------------------------------------------------------------------------- */

static const char *const REGION_KEYS[] = {"region", "listen", "data_dir", "cells",
					  "log",    "state",  "limits",	  "replication"};
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
	CHECK(reject_cell_only(v, root));
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
	free(c);
}
