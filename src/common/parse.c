/* Small parsers shared by the CLI, the config module and the HTTP handlers. */
#include <stdio.h>
#include <string.h>

#include "common/common.h"

int mc_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int mc_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	if (n == 0 || n > 20)
		return MC_EINVAL;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return MC_EINVAL;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return MC_EINVAL;
		v = v * 10 + d;
	}
	if (v > max)
		return MC_EINVAL;
	*out = v;
	return 0;
}

static int valid_ipv4(const char *h, size_t n)
{
	int parts = 0;
	size_t i = 0;
	while (i < n) {
		size_t start = i;
		unsigned v = 0;
		while (i < n && h[i] >= '0' && h[i] <= '9' && i - start < 3)
			v = v * 10 + (unsigned)(h[i++] - '0');
		if (i == start || v > 255)
			return 0;
		parts++;
		if (i < n) {
			if (h[i] != '.' || parts == 4)
				return 0;
			i++;
			if (i == n)
				return 0;
		}
	}
	return parts == 4;
}

int mc_parse_hostport(const char *s, char *host, size_t hostcap, uint16_t *port)
{
	const char *colon;
	const char *h = s;
	size_t hlen;
	if (!s || !*s)
		return MC_EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return MC_EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
		if (hlen == 0)
			return MC_EINVAL;
		for (size_t i = 0; i < hlen; i++) {
			char c = h[i];
			if (!(c == ':' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			      (c >= 'A' && c <= 'F')))
				return MC_EINVAL;
		}
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return MC_EINVAL;
		hlen = (size_t)(colon - s);
		if (!(hlen == 9 && memcmp(s, "localhost", 9) == 0) && !valid_ipv4(s, hlen))
			return MC_EINVAL;
	}
	uint64_t p;
	if (mc_parse_u64(colon + 1, strlen(colon + 1), 65535, &p) < 0)
		return MC_EINVAL;
	if (hlen + 1 > hostcap)
		return MC_EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)p;
	return 0;
}

int mc_parse_config_arg(int argc, char **argv, const char **path)
{
	const char *cmd = argv[0];
	*path = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "metrocell %s: option %s needs a FILE\n", cmd, a);
				return MC_EINVAL;
			}
			if (*path) {
				fprintf(stderr, "metrocell %s: -c given twice\n", cmd);
				return MC_EINVAL;
			}
			*path = argv[++i];
		} else if (strncmp(a, "--config=", 9) == 0 && !*path) {
			*path = a + 9;
		} else {
			fprintf(stderr, "metrocell %s: unexpected argument \"%s\" (usage: metrocell %s -c %s.json)\n",
				cmd, a, cmd, cmd);
			return MC_EINVAL;
		}
	}
	if (!*path || !**path) {
		fprintf(stderr, "metrocell %s: missing -c FILE (usage: metrocell %s -c %s.json)\n",
			cmd, cmd, cmd);
		return MC_EINVAL;
	}
	return 0;
}
