/* Helpers for relaying messages between a client and an upstream (the cell's
 * proxy routes and the region's fallback path): which header fields are
 * end-to-end and travel on, and which belong to one connection. */
#include <string.h>
#include <strings.h>

#include "http/http_int.h"

/* Fields that describe one connection or the message's framing (RFC 9110
 * section 7.6.1; Content-Length and Host are set again by whoever sends). */
static int hop_by_hop(const char *name, size_t len)
{
	static const struct {
		const char *s;
		size_t n;
	} hop[] = {{"connection", 10}, {"keep-alive", 10},	  {"proxy-connection", 16},
		   {"te", 2},	      {"trailer", 7},		  {"transfer-encoding", 17},
		   {"upgrade", 7},     {"content-length", 14}, {"host", 4}};
	for (size_t i = 0; i < MC_ARRAY_LEN(hop); i++)
		if (hop[i].n == len && strncasecmp(hop[i].s, name, len) == 0)
			return 1;
	return 0;
}

/* 1 when name is one of the tokens of a Connection field in h[0..n). */
static int connection_listed(const mc_http_header *h, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		if (h[i].name_len != 10 || strncasecmp(h[i].name, "connection", 10) != 0)
			continue;
		const char *v = h[i].value, *end = v + h[i].value_len;
		while (v < end) {
			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			const char *tok = v;
			while (v < end && *v != ',')
				v++;
			const char *te = v;
			while (te > tok && (te[-1] == ' ' || te[-1] == '\t'))
				te--;
			if ((size_t)(te - tok) == len && strncasecmp(tok, name, len) == 0)
				return 1;
		}
	}
	return 0;
}

int mc_http_header_end_to_end(const mc_http_header *all, size_t n, const mc_http_header *h)
{
	return !hop_by_hop(h->name, h->name_len) &&
	       !connection_listed(all, n, h->name, h->name_len);
}
