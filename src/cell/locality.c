/* Locality accounting: which metro each client comes from (the trusted
 * X-Client-Metro header of the steering layer, else the CIDR map of the config,
 * longest prefix first), how many requests each metro sent, and how many were
 * served here although the client's metro is another one (a locality
 * violation) unless the steering layer marked the request as a failover. The
 * exact rule is in docs/operations.md "Locality". */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cell/edge.h"

/* Metros learnt from the header beyond those of the config get their own
 * series up to this many; the rest count under client_metro="other". */
#define EXTRA_METROS_MAX 64
#define METRO_MAX 31

typedef struct lnet {
	uint8_t addr[16];
	uint32_t metro;
} lnet;

/* The networks of one family and prefix length: nets[start, start + n), sorted. */
typedef struct lgroup {
	uint8_t family, bits;
	size_t start, n;
} lgroup;

typedef struct mseries {
	char name[METRO_MAX + 1];
	mc_series *s;
} mseries;

struct cell_locality {
	cell *c;
	const mc_locality_conf *conf;
	lnet *nets;
	lgroup *groups; /* IPv4 first, then IPv6; longest prefix first in each */
	size_t ngroups;
	mseries *metros;
	size_t nmetros, extra;
	mc_series *unknown, *other, *violations, *failover, *hdr_untrusted, *hdr_invalid;
};

typedef struct sortnet {
	const mc_cidr_conf *c;
} sortnet;

static int net_cmp(const void *a, const void *b)
{
	const mc_cidr_conf *x = ((const sortnet *)a)->c, *y = ((const sortnet *)b)->c;
	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	if (x->bits != y->bits)
		return x->bits > y->bits ? -1 : 1; /* longest first */
	return memcmp(x->addr, y->addr, sizeof x->addr);
}

static void build_map(cell_locality *l)
{
	const mc_locality_conf *lc = l->conf;
	size_t n = lc->ncidrs;
	l->nets = mc_calloc(n ? n : 1, sizeof *l->nets);
	l->groups = mc_calloc(n ? n : 1, sizeof *l->groups);
	sortnet *s = mc_calloc(n ? n : 1, sizeof *s);
	for (size_t i = 0; i < n; i++)
		s[i].c = &lc->cidrs[i];
	qsort(s, n, sizeof *s, net_cmp);
	for (size_t i = 0; i < n; i++) {
		memcpy(l->nets[i].addr, s[i].c->addr, sizeof l->nets[i].addr);
		l->nets[i].metro = s[i].c->metro;
		lgroup *g = l->ngroups ? &l->groups[l->ngroups - 1] : NULL;
		if (!g || g->family != s[i].c->family || g->bits != s[i].c->bits) {
			g = &l->groups[l->ngroups++];
			g->family = s[i].c->family;
			g->bits = s[i].c->bits;
			g->start = i;
			g->n = 0;
		}
		g->n++;
	}
	free(s);
}

/* Parses "ip:port" / "[ip6]:port" into family (4 or 6) and addr (zero padded);
 * IPv4-mapped IPv6 addresses become IPv4. Returns 0 or -1. */
static int peer_addr(const char *peer, uint8_t *family, uint8_t addr[16])
{
	char ip[64];
	const char *colon = strrchr(peer, ':');
	size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
	if (n >= 2 && peer[0] == '[' && peer[n - 1] == ']') {
		peer++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof ip)
		return -1;
	memcpy(ip, peer, n);
	ip[n] = '\0';
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, ip, addr) == 1) {
		*family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, ip, addr) != 1)
		return -1;
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (memcmp(addr, mapped, 12) == 0) {
		memmove(addr, addr + 12, 4);
		memset(addr + 4, 0, 12);
		*family = 4;
	} else {
		*family = 6;
	}
	return 0;
}

int mc_cell_locality_lookup(const cell_locality *l, const char *peer)
{
	uint8_t family, addr[16];
	if (l->ngroups == 0 || peer_addr(peer, &family, addr) < 0)
		return -1;
	for (size_t g = 0; g < l->ngroups; g++) {
		const lgroup *gr = &l->groups[g];
		if (gr->family != family)
			continue;
		uint8_t key[16] = {0};
		unsigned full = gr->bits / 8, rem = gr->bits % 8;
		memcpy(key, addr, full);
		if (rem)
			key[full] = (uint8_t)(addr[full] & (0xFFu << (8 - rem)));
		size_t lo = gr->start, hi = gr->start + gr->n;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			int d = memcmp(l->nets[mid].addr, key, 16);
			if (d == 0)
				return (int)l->nets[mid].metro;
			if (d < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
	}
	return -1;
}

static mc_series *metro_new_series(cell_locality *l, const char *name)
{
	return mc_cell_series(l->c, "metrocell_requests_by_client_metro_total",
			      "Requests by the client's metro (CIDR map or trusted X-Client-Metro; "
			      "unknown when neither says).",
			      MC_METRIC_COUNTER, "client_metro", name, NULL, NULL);
}

static mseries *metro_add(cell_locality *l, const char *name, size_t n)
{
	mseries *m = &l->metros[l->nmetros++];
	memcpy(m->name, name, n);
	m->name[n] = '\0';
	m->s = metro_new_series(l, m->name);
	return m;
}

static mc_series *metro_series(cell_locality *l, const char *name, size_t n, int learnt)
{
	for (size_t i = 0; i < l->nmetros; i++)
		if (strlen(l->metros[i].name) == n && memcmp(l->metros[i].name, name, n) == 0)
			return l->metros[i].s;
	if (!learnt || l->extra >= EXTRA_METROS_MAX)
		return l->other;
	l->extra++;
	return metro_add(l, name, n)->s;
}

cell_locality *mc_cell_locality_new(cell *c)
{
	cell_locality *l = mc_calloc(1, sizeof *l);
	l->c = c;
	l->conf = &c->conf->locality;
	build_map(l);
	l->metros = mc_calloc(l->conf->nmetros + 1 + EXTRA_METROS_MAX, sizeof *l->metros);
	metro_add(l, l->conf->metro, strlen(l->conf->metro));
	for (size_t i = 0; i < l->conf->nmetros; i++) {
		const char *m = l->conf->metros[i];
		if (strcmp(m, l->conf->metro) != 0)
			metro_add(l, m, strlen(m));
	}
	l->unknown = metro_new_series(l, "unknown");
	l->other = metro_new_series(l, "other");
	l->violations = mc_cell_series(
	    c, "metrocell_locality_violations_total",
	    "Requests from a known client metro other than this cell's that the steering layer "
	    "did not mark as a failover.",
	    MC_METRIC_COUNTER, NULL, NULL, NULL, NULL);
	l->failover = mc_cell_series(
	    c, "metrocell_locality_failover_requests_total",
	    "Requests from another metro that the steering layer marked as a failover "
	    "(X-Metrocell-Failover: 1, trusted).",
	    MC_METRIC_COUNTER, NULL, NULL, NULL, NULL);
	l->hdr_untrusted = mc_cell_series(
	    c, "metrocell_client_metro_header_ignored_total",
	    "X-Client-Metro headers ignored: untrusted (the config does not trust it) or invalid.",
	    MC_METRIC_COUNTER, "reason", "untrusted", NULL, NULL);
	l->hdr_invalid = mc_cell_series(
	    c, "metrocell_client_metro_header_ignored_total",
	    "X-Client-Metro headers ignored: untrusted (the config does not trust it) or invalid.",
	    MC_METRIC_COUNTER, "reason", "invalid", NULL, NULL);
	return l;
}

void mc_cell_locality_free(cell_locality *l)
{
	if (!l)
		return;
	free(l->nets);
	free(l->groups);
	free(l->metros);
	free(l);
}

static int metro_valid(const char *s, size_t n)
{
	if (n < 1 || n > METRO_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

void mc_cell_locality_account(cell_locality *l, const mc_http_request *req)
{
	const char *metro = NULL, *hv = NULL;
	size_t mlen = 0, hlen = 0, nhdr = 0;
	int learnt = 0;
	for (size_t i = 0; i < req->nheaders; i++) {
		const mc_http_header *h = &req->headers[i];
		if (h->name_len == 14 && strncasecmp(h->name, "x-client-metro", 14) == 0) {
			nhdr++;
			hv = h->value;
			hlen = h->value_len;
		}
	}
	if (nhdr > 0) {
		if (!l->conf->trust_header) {
			l->hdr_untrusted->value += 1;
		} else if (nhdr == 1 && metro_valid(hv, hlen)) {
			metro = hv;
			mlen = hlen;
			learnt = 1;
		} else {
			l->hdr_invalid->value += 1;
		}
	}
	if (!metro) {
		int i = mc_cell_locality_lookup(l, req->peer);
		if (i >= 0) {
			metro = l->conf->metros[i];
			mlen = strlen(metro);
		}
	}
	if (!metro) {
		l->unknown->value += 1;
		return;
	}
	metro_series(l, metro, mlen, learnt)->value += 1;
	if (strlen(l->conf->metro) == mlen && memcmp(l->conf->metro, metro, mlen) == 0)
		return;
	size_t fl;
	const char *f = l->conf->trust_header
			    ? mc_http_header_find(req->headers, req->nheaders,
						  "x-metrocell-failover", &fl)
			    : NULL;
	if (f && fl == 1 && f[0] == '1')
		l->failover->value += 1;
	else
		l->violations->value += 1;
}
