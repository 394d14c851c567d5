/* Metrics registry and Prometheus text exposition (format 0.0.4). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/obs.h"

typedef struct family {
	char *name;
	char *help;
	mc_metric_type type;
	mc_series **series;
	size_t nseries, cap;
} family;

struct mc_metrics {
	family *fams;
	size_t nfams, cap;
};

/* Upper bounds of the exposed histogram buckets, in microseconds. */
static const uint64_t le_us[] = {50,     100,    250,    500,     1000,    2500,    5000,
				 10000,  25000,  50000,  100000,  250000,  500000,  1000000,
				 2500000, 5000000, 10000000};

mc_metrics *mc_metrics_new(void)
{
	return mc_calloc(1, sizeof(mc_metrics));
}

void mc_metrics_free(mc_metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nfams; i++) {
		family *f = &m->fams[i];
		for (size_t j = 0; j < f->nseries; j++) {
			free(f->series[j]->labels);
			free(f->series[j]->hist);
			free(f->series[j]);
		}
		free(f->series);
		free(f->name);
		free(f->help);
	}
	free(m->fams);
	free(m);
}

static family *family_get(mc_metrics *m, const char *name, const char *help,
			  mc_metric_type type)
{
	family *f = NULL;
	for (size_t i = 0; i < m->nfams; i++) {
		if (strcmp(m->fams[i].name, name) == 0) {
			f = &m->fams[i];
			break;
		}
	}
	if (!f) {
		if (m->nfams == m->cap) {
			m->cap = m->cap ? m->cap * 2 : 16;
			m->fams = mc_realloc(m->fams, m->cap * sizeof *m->fams);
		}
		f = &m->fams[m->nfams++];
		memset(f, 0, sizeof *f);
		f->name = mc_strdup(name);
		f->help = mc_strdup(help);
		f->type = type;
	}
	MC_ASSERT(f->type == type);
	return f;
}

mc_series *mc_metrics_series(mc_metrics *m, const char *name, const char *help,
			     mc_metric_type type, const char *labels)
{
	family *f = family_get(m, name, help, type);
	for (size_t j = 0; j < f->nseries; j++)
		if (strcmp(f->series[j]->labels, labels) == 0)
			return f->series[j];
	if (f->nseries == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 8;
		f->series = mc_realloc(f->series, f->cap * sizeof *f->series);
	}
	mc_series *s = mc_calloc(1, sizeof *s);
	s->labels = mc_strdup(labels);
	if (type == MC_METRIC_HIST) {
		s->hist = mc_alloc(sizeof *s->hist);
		mc_hist_init(s->hist);
	}
	f->series[f->nseries++] = s;
	return s;
}

void mc_metrics_merge(mc_metrics *dst, const mc_metrics *src)
{
	for (size_t i = 0; i < src->nfams; i++) {
		const family *f = &src->fams[i];
		for (size_t j = 0; j < f->nseries; j++) {
			const mc_series *s = f->series[j];
			mc_series *d = mc_metrics_series(dst, f->name, f->help, f->type, s->labels);
			if (f->type == MC_METRIC_HIST)
				mc_hist_merge(d->hist, s->hist);
			else if (f->type == MC_METRIC_COUNTER)
				d->value += s->value;
			else if (s->value > d->value)
				d->value = s->value;
		}
		if (f->nseries == 0) /* the family renders even without series */
			(void)family_get(dst, f->name, f->help, f->type);
	}
}

double mc_metrics_sum(const mc_metrics *m, const char *name, const char *label_sub)
{
	double sum = 0;
	for (size_t i = 0; i < m->nfams; i++) {
		const family *f = &m->fams[i];
		if (strcmp(f->name, name) != 0)
			continue;
		for (size_t j = 0; j < f->nseries; j++) {
			const mc_series *s = f->series[j];
			if (label_sub && !strstr(s->labels, label_sub))
				continue;
			sum += f->type == MC_METRIC_HIST ? (double)s->hist->count : s->value;
		}
		break;
	}
	return sum;
}

void mc_metrics_label_escape(mc_buf *out, const char *value)
{
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			mc_buf_printf(out, "\\%c", *p);
		else if (*p == '\n')
			mc_buf_append_str(out, "\\n");
		else
			mc_buf_append(out, p, 1);
	}
}

static void render_value(mc_buf *out, double v)
{
	if (v == (double)(int64_t)v && v < 9e15 && v > -9e15)
		mc_buf_printf(out, "%lld", (long long)v);
	else
		mc_buf_printf(out, "%.9g", v);
}

static void series_name(mc_buf *out, const char *name, const char *suffix, const char *labels,
			const char *extra)
{
	mc_buf_printf(out, "%s%s", name, suffix);
	int has = labels && *labels;
	if (has || extra) {
		mc_buf_append_str(out, "{");
		if (has)
			mc_buf_append_str(out, labels);
		if (extra) {
			if (has)
				mc_buf_append_str(out, ",");
			mc_buf_append_str(out, extra);
		}
		mc_buf_append_str(out, "}");
	}
	mc_buf_append_str(out, " ");
}

static void render_hist(mc_buf *out, const char *name, const mc_series *s)
{
	const mc_hist *h = s->hist;
	uint64_t cum = 0;
	size_t b = 0;
	char le[64];
	for (size_t i = 0; i < MC_ARRAY_LEN(le_us); i++) {
		while (b < MC_HIST_BUCKETS && mc_hist_bucket_upper(b) <= le_us[i])
			cum += h->buckets[b++];
		snprintf(le, sizeof le, "le=\"%g\"", (double)le_us[i] / 1e6);
		series_name(out, name, "_bucket", s->labels, le);
		mc_buf_printf(out, "%llu\n", (unsigned long long)cum);
	}
	series_name(out, name, "_bucket", s->labels, "le=\"+Inf\"");
	mc_buf_printf(out, "%llu\n", (unsigned long long)h->count);
	series_name(out, name, "_sum", s->labels, NULL);
	mc_buf_printf(out, "%.6f\n", (double)h->sum / 1e6);
	series_name(out, name, "_count", s->labels, NULL);
	mc_buf_printf(out, "%llu\n", (unsigned long long)h->count);
}

void mc_metrics_render(const mc_metrics *m, mc_buf *out)
{
	static const char *const type_names[] = {"", "counter", "gauge", "histogram"};
	for (size_t i = 0; i < m->nfams; i++) {
		const family *f = &m->fams[i];
		mc_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
			      type_names[f->type]);
		for (size_t j = 0; j < f->nseries; j++) {
			const mc_series *s = f->series[j];
			if (f->type == MC_METRIC_HIST) {
				render_hist(out, f->name, s);
				continue;
			}
			series_name(out, f->name, "", s->labels, NULL);
			render_value(out, s->value);
			mc_buf_append_str(out, "\n");
		}
	}
}
