/* The body of a purge request ({"key": ...} or {"prefix": ...}, optional "host"),
 * shared by the cell's admin API and the region's, validated here so both
 * answer the same errors. */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cache/cache.h"

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] == 0x7f)
			return false;
	return true;
}

int mc_cache_purge_parse(const char *body, size_t len, mc_cache_purge_spec *out, char *err,
			 size_t errcap)
{
	memset(out, 0, sizeof *out);
	json_error_t je;
	json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
	int rc = MC_EINVAL;
	if (!root) {
		snprintf(err, errcap, "invalid JSON: %s", je.text);
		return rc;
	}
	const char *k;
	json_t *v, *key = NULL, *prefix = NULL, *host = NULL;
	if (!json_is_object(root)) {
		snprintf(err, errcap, "expected a JSON object");
		goto out;
	}
	json_object_foreach(root, k, v)
	{
		if (strcmp(k, "key") == 0)
			key = v;
		else if (strcmp(k, "prefix") == 0)
			prefix = v;
		else if (strcmp(k, "host") == 0)
			host = v;
		else {
			snprintf(err, errcap,
				 "unknown member \"%.40s\" (expected key, prefix, host)", k);
			goto out;
		}
	}
	if (!key == !prefix) {
		snprintf(err, errcap, "expected exactly one of \"key\" and \"prefix\"");
		goto out;
	}
	json_t *pat = key ? key : prefix;
	const char *what = key ? "key" : "prefix";
	if (!json_is_string(pat) || json_string_length(pat) == 0 ||
	    json_string_value(pat)[0] != '/' ||
	    !printable(json_string_value(pat), json_string_length(pat))) {
		snprintf(err, errcap,
			 "\"%s\" must be a path (and query) starting with \"/\", without spaces or "
			 "control characters",
			 what);
		goto out;
	}
	if (host && (!json_is_string(host) || json_string_length(host) == 0 ||
		     !printable(json_string_value(host), json_string_length(host)))) {
		snprintf(err, errcap, "\"host\" must be a non-empty host name without spaces");
		goto out;
	}
	size_t hl = host ? json_string_length(host) : 0;
	size_t pl = json_string_length(pat);
	if (hl + pl > MC_CACHE_PURGE_MAX) {
		snprintf(err, errcap, "host and %s are longer than %d bytes together", what,
			 MC_CACHE_PURGE_MAX);
		goto out;
	}
	out->prefix = prefix != NULL;
	for (size_t i = 0; i < hl; i++) {
		char c = json_string_value(host)[i];
		out->host[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
	}
	out->host_len = hl;
	memcpy(out->pattern, json_string_value(pat), pl);
	out->pattern_len = pl;
	rc = 0;
out:
	json_decref(root);
	return rc;
}
