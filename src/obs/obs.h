/* Metrics registry and Prometheus text exposition. A registry holds metric
 * families (counter, gauge, histogram), each with series identified by a
 * pre-rendered label string. Series pointers are stable for the registry's
 * life, so hot paths look a series up once and then only increment it.
 * A registry is used from one thread; a multi-threaded owner keeps one per
 * thread. */
#ifndef MC_OBS_H
#define MC_OBS_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef enum { MC_METRIC_COUNTER = 1, MC_METRIC_GAUGE, MC_METRIC_HIST } mc_metric_type;

typedef struct mc_metrics mc_metrics;

/* A series. value is used by counters and gauges; hist (microseconds) by
 * histograms. */
typedef struct mc_series {
	char *labels; /* e.g. route="kv",outcome="local" (may be "") */
	double value;
	mc_hist *hist;
} mc_series;

mc_metrics *mc_metrics_new(void);
void mc_metrics_free(mc_metrics *m); /* accepts NULL */

/* Returns the series of family name with the given labels, creating the family
 * (with help text and type) and the series on first use. Label values must be
 * escaped already (use mc_metrics_label_escape). The pointer stays valid until
 * mc_metrics_free. Asking for an existing family with another type aborts. */
mc_series *mc_metrics_series(mc_metrics *m, const char *name, const char *help,
			     mc_metric_type type, const char *labels);

/* Adds every series of src into dst (creating families and series as needed):
 * counters and histograms add up, a gauge keeps the largest value (the
 * registries of several threads seeing one thing: a worker healthy, buckets
 * held). Used to render one /metrics from per-thread registries. */
void mc_metrics_merge(mc_metrics *dst, const mc_metrics *src);

/* Sum of the values of family name's series whose label string contains
 * label_sub (NULL: every series); 0 when the family does not exist. For
 * histograms, the sum of their counts. */
double mc_metrics_sum(const mc_metrics *m, const char *name, const char *label_sub);

/* Appends a Prometheus-escaped copy of a label value to out. */
void mc_metrics_label_escape(mc_buf *out, const char *value);

/* Renders every family in text exposition format 0.0.4. Histograms are exposed
 * in seconds with fixed buckets from 50 us to 10 s, plus _sum and _count. */
void mc_metrics_render(const mc_metrics *m, mc_buf *out);

#endif
