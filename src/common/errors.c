/* Error strings, the aborting allocation wrappers and the assertion handler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

const char *mc_strerror(int code)
{
	switch (code) {
	case 0: return "success";
	case MC_EINVAL: return "invalid argument or malformed input";
	case MC_ENOMEM: return "out of memory";
	case MC_ETOOBIG: return "size limit exceeded";
	case MC_ECRC: return "checksum mismatch";
	case MC_EPROTO: return "protocol violation";
	case MC_ENOTFOUND: return "not found";
	case MC_ECONFIG: return "configuration error";
	case MC_ETIMEDOUT: return "timed out";
	case MC_ECLOSED: return "connection closed";
	case MC_ECANCELED: return "canceled";
	case MC_EAGAIN: return "need more data";
	case MC_ECONFLICT: return "version conflict";
	case MC_EFULL: return "queue or backlog full";
	case MC_ESTORE: return "storage error";
	case MC_EUNAVAIL: return "dependency unavailable";
	default: break;
	}
	if (code < 0 && code > MC_EBASE)
		return strerror(-code);
	return "unknown error";
}

static _Noreturn void oom(size_t n)
{
	fprintf(stderr, "metrocell: out of memory allocating %zu bytes\n", n);
	abort();
}

void *mc_alloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *mc_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom(n * size);
	return p;
}

void *mc_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *mc_strdup(const char *s)
{
	return mc_strndup(s, strlen(s));
}

char *mc_strndup(const char *s, size_t n)
{
	char *p = mc_alloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

_Noreturn void mc_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "metrocell: assertion failed: %s (%s:%d)\n", expr, file, line);
	abort();
}
