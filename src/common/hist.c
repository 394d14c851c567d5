/* Log-linear latency histogram (HdrHistogram-style): exact below 2^MC_HIST_SUB,
 * then 2^MC_HIST_SUB linear buckets per power of two. */
#include <math.h>
#include <string.h>

#include "common/common.h"

#define SUBN (1u << MC_HIST_SUB)
#define MAX_TRACKED ((uint64_t)1 << 40)

void mc_hist_init(mc_hist *h)
{
	memset(h, 0, sizeof *h);
}

size_t mc_hist_bucket_of(uint64_t v)
{
	if (v >= MAX_TRACKED)
		v = MAX_TRACKED - 1;
	if (v < SUBN)
		return (size_t)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	unsigned g = e - MC_HIST_SUB + 1;
	size_t sub = (size_t)(v >> (e - MC_HIST_SUB)) - SUBN;
	return ((size_t)g << MC_HIST_SUB) + sub;
}

uint64_t mc_hist_bucket_upper(size_t idx)
{
	if (idx < SUBN)
		return idx;
	unsigned g = (unsigned)(idx >> MC_HIST_SUB);
	uint64_t sub = idx & (SUBN - 1);
	unsigned shift = g - 1; /* e - MC_HIST_SUB */
	uint64_t lower = (SUBN + sub) << shift;
	return lower + ((uint64_t)1 << shift) - 1;
}

void mc_hist_record(mc_hist *h, uint64_t v)
{
	if (h->count == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
	h->buckets[mc_hist_bucket_of(v)]++;
}

void mc_hist_merge(mc_hist *dst, const mc_hist *src)
{
	if (src->count == 0)
		return;
	if (dst->count == 0 || src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
	dst->count += src->count;
	dst->sum += src->sum;
	for (size_t i = 0; i < MC_HIST_BUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
}

uint64_t mc_hist_quantile(const mc_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	if (q <= 0)
		return h->min;
	if (q >= 1)
		return h->max;
	uint64_t rank = (uint64_t)ceil(q * (double)h->count);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (size_t i = 0; i < MC_HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t v = mc_hist_bucket_upper(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}
