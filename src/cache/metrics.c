/* Exposes a cache engine's and a store's counters in a metrics registry, so the
 * cell and the region publish the same families (docs/operations.md lists them). */
#include <stdio.h>
#include <string.h>

#include "cache/cache.h"

static void set(mc_metrics *m, const char *name, const char *help, mc_metric_type t,
		const char *labels, uint64_t v)
{
	mc_metrics_series(m, name, help, t, labels)->value = (double)v;
}

void mc_cache_engine_metrics(const mc_cache_engine *e, mc_metrics *m, const char *labels)
{
	mc_cache_engine_stats st;
	mc_cache_engine_stats_get(e, &st);
	mc_buf l;
	mc_buf_init(&l);
	const char *sep = labels[0] ? "," : "";
	for (int i = 0; i < MC_CACHE_RESULT_COUNT; i++) {
		mc_buf_reset(&l);
		mc_buf_printf(&l, "%s%sresult=\"%s\"", labels, sep, mc_cache_result_names[i]);
		set(m, "metrocell_cache_requests_total",
		    "Requests of cache routes by result: hit (fresh here), stale (served stale, "
		    "never counted as hit), miss (went upstream), pass (not cacheable).",
		    MC_METRIC_COUNTER, l.data, st.results[i]);
	}
	mc_buf_fini(&l);
	set(m, "metrocell_cache_collapsed_total",
	    "Misses answered from another request's fill instead of their own upstream request.",
	    MC_METRIC_COUNTER, labels, st.collapsed);
	set(m, "metrocell_cache_origin_bytes_avoided_total",
	    "Body bytes answered from this tier's cache that would otherwise have crossed to the "
	    "upstream (region or origin).",
	    MC_METRIC_COUNTER, labels, st.bytes_avoided);
	set(m, "metrocell_cache_refreshes_total",
	    "Background refreshes started for stale-while-revalidate.", MC_METRIC_COUNTER, labels,
	    st.refreshes);
	set(m, "metrocell_cache_revalidated_total",
	    "Stored objects renewed by a 304 from the upstream.", MC_METRIC_COUNTER, labels,
	    st.revalidated);
	set(m, "metrocell_cache_stale_on_error_total",
	    "Stale answers served because the upstream failed (stale-if-error).", MC_METRIC_COUNTER,
	    labels, st.stale_on_error);
	set(m, "metrocell_cache_upstream_errors_total",
	    "Upstream requests that failed (connect error, timeout, 5xx).", MC_METRIC_COUNTER,
	    labels, st.upstream_errors);
	set(m, "metrocell_cache_upstream_requests_total",
	    "Requests sent upstream (fills, refreshes, passes).", MC_METRIC_COUNTER, labels,
	    st.fetches);
}

void mc_cache_store_metrics(mc_cache *c, mc_metrics *m, const char *labels)
{
	mc_cache_stats st;
	mc_cache_stats_get(c, &st);
	set(m, "metrocell_cache_bytes",
	    "Bytes charged for stored objects (key, fields, body, overhead); never above "
	    "max_bytes.",
	    MC_METRIC_GAUGE, labels, st.bytes);
	set(m, "metrocell_cache_max_bytes", "The cache's byte bound (max_bytes).", MC_METRIC_GAUGE,
	    labels, st.max_bytes);
	set(m, "metrocell_cache_objects", "Objects stored (each Vary variant counts).",
	    MC_METRIC_GAUGE, labels, st.objects);
	set(m, "metrocell_cache_evictions_total", "Objects evicted to stay within max_bytes.",
	    MC_METRIC_COUNTER, labels, st.evictions);
	set(m, "metrocell_cache_inserts_total", "Objects stored.", MC_METRIC_COUNTER, labels,
	    st.inserts);
	set(m, "metrocell_cache_purged_total", "Objects removed by purges and invalidations.",
	    MC_METRIC_COUNTER, labels, st.purged);
	set(m, "metrocell_cache_rejected_total",
	    "Responses not stored because they exceed max_object_bytes or a shard's budget.",
	    MC_METRIC_COUNTER, labels, st.rejected);
}
