/* Parsing of the KV API's parameters (TTL, counter delta, If-Match versions),
 * shared by the cell's and the region's HTTP handlers so both read them alike.
 * Pure: strings in, numbers out. */
#include <stdio.h>
#include <string.h>

#include "state/state.h"

static int blank(char c)
{
	return c == ' ' || c == '\t';
}

int mc_kv_i64_parse(const char *s, size_t n, int64_t *out)
{
	size_t i = 0, digits = 0;
	int neg = 0;
	uint64_t v = 0, lim;

	while (n && blank(s[n - 1]))
		n--;
	while (i < n && blank(s[i]))
		i++;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < n; i++, digits++) {
		if (s[i] < '0' || s[i] > '9' || digits == 19)
			return MC_EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (digits == 0 || v > lim)
		return MC_EINVAL;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

int mc_kv_version_parse(const char *v, size_t n, uint64_t *version, int *star)
{
	uint64_t x;

	*star = 0;
	while (n && blank(v[n - 1]))
		n--;
	while (n && blank(v[0])) {
		v++;
		n--;
	}
	if (n == 1 && v[0] == '*') {
		*star = 1;
		return 0;
	}
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v++;
		n -= 2;
	}
	if (n == 0 || mc_parse_u64(v, n, UINT64_MAX, &x) != 0 || x == 0)
		return MC_EINVAL;
	*version = x;
	return 0;
}

int mc_kv_query_parse(const char *q, mc_kv_params *out, char *err, size_t errcap)
{
	memset(out, 0, sizeof *out);
	if (errcap)
		err[0] = '\0';
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		const char *eq = memchr(q, '=', len);
		size_t nl = eq ? (size_t)(eq - q) : len;
		const char *val = eq ? eq + 1 : q + len;
		size_t vl = eq ? len - nl - 1 : 0;
		uint64_t x;

		if (len == 0) {
			/* "a=1&&b=2": an empty parameter is harmless */
		} else if ((nl == 3 && memcmp(q, "ttl", 3) == 0) ||
			   (nl == 6 && memcmp(q, "ttl_ms", 6) == 0)) {
			uint64_t mul = nl == 3 ? 1000 : 1;

			if (out->has_ttl) {
				snprintf(err, errcap,
					 "give one of ttl= (seconds) and ttl_ms=, once");
				return MC_EINVAL;
			}
			if (mc_parse_u64(val, vl, MC_KV_MAX_TTL_MS / mul, &x) != 0 || x == 0) {
				snprintf(err, errcap,
					 "%s must be an integer number of %s from 1 to %llu",
					 nl == 3 ? "ttl" : "ttl_ms",
					 nl == 3 ? "seconds" : "milliseconds",
					 (unsigned long long)(MC_KV_MAX_TTL_MS / mul));
				return MC_EINVAL;
			}
			out->has_ttl = 1;
			out->ttl_ms = x * mul;
		} else if (nl == 2 && memcmp(q, "by", 2) == 0) {
			if (out->has_by || mc_kv_i64_parse(val, vl, &out->by) != 0) {
				snprintf(err, errcap, "by must be one signed 64-bit integer");
				return MC_EINVAL;
			}
			out->has_by = 1;
		} else {
			char name[41];
			size_t m = MC_MIN(nl, sizeof name - 1);

			/* The name comes from the client: printable in the message. */
			for (size_t i = 0; i < m; i++)
				name[i] = (unsigned char)q[i] < 0x20 || q[i] == 0x7f || q[i] == '"'
					      ? '?'
					      : q[i];
			name[m] = '\0';
			snprintf(err, errcap,
				 "unknown query parameter \"%s\" (known: ttl, ttl_ms, by)", name);
			return MC_EINVAL;
		}
		q = amp ? amp + 1 : NULL;
	}
	return 0;
}
