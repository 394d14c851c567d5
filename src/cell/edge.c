/* The cell's edge features wired together: quotas per route, the feature-flag
 * documents, locality accounting, and the regional-dependency and cold-start
 * counter families, which render from the start (at 0) so dashboards and the
 * fleet telemetry always find them. docs/operations.md explains each metric. */
#include <stdlib.h>
#include <string.h>

#include "cell/edge.h"

static const char *const REGIONAL_CAUSES[] = {"fallback", "regional_route", "read_through",
					      "regional_key"};
static const char *const COLD_KINDS[] = {"upstream_connect", "tls_full_handshake",
					 "first_request"};

#define REGIONAL_NAME "metrocell_regional_requests_total"
#define REGIONAL_HELP "Requests whose critical path crossed to the region, by cause"
#define COLD_NAME "metrocell_cold_starts_total"
#define COLD_HELP                                                                                  \
	"Cold starts by kind: new upstream connection, full TLS handshake, first request of a "   \
	"route after start"

mc_series *mc_cell_series(cell *c, const char *name, const char *help, mc_metric_type type,
			  const char *k1, const char *v1, const char *k2, const char *v2)
{
	mc_buf labels;
	mc_buf_init(&labels);
	mc_buf_append_str(&labels, "cell=\"");
	mc_metrics_label_escape(&labels, c->conf->cell);
	mc_buf_append_str(&labels, "\"");
	if (k1) {
		mc_buf_printf(&labels, ",%s=\"", k1);
		mc_metrics_label_escape(&labels, v1);
		mc_buf_append_str(&labels, "\"");
	}
	if (k2) {
		mc_buf_printf(&labels, ",%s=\"", k2);
		mc_metrics_label_escape(&labels, v2);
		mc_buf_append_str(&labels, "\"");
	}
	mc_series *s = mc_metrics_series(c->metrics, name, help, type, labels.data);
	mc_buf_fini(&labels);
	return s;
}

void mc_cell_regional_count(cell *c, const char *cause)
{
	mc_cell_series(c, REGIONAL_NAME, REGIONAL_HELP, MC_METRIC_COUNTER, "cause", cause, NULL,
		       NULL)
		->value += 1;
}

void mc_cell_cold_start(cell *c, const char *kind)
{
	mc_cell_series(c, COLD_NAME, COLD_HELP, MC_METRIC_COUNTER, "kind", kind, NULL, NULL)
		->value += 1;
}

void mc_cell_edge_init(cell *c)
{
	cell_edge *e = mc_calloc(1, sizeof *e);
	c->edge = e;
	for (size_t i = 0; i < MC_ARRAY_LEN(REGIONAL_CAUSES); i++)
		mc_cell_series(c, REGIONAL_NAME, REGIONAL_HELP, MC_METRIC_COUNTER, "cause",
			       REGIONAL_CAUSES[i], NULL, NULL);
	for (size_t i = 0; i < MC_ARRAY_LEN(COLD_KINDS); i++)
		mc_cell_series(c, COLD_NAME, COLD_HELP, MC_METRIC_COUNTER, "kind", COLD_KINDS[i],
			       NULL, NULL);
	e->loc = mc_cell_locality_new(c);
}

void mc_cell_edge_fini(cell *c)
{
	cell_edge *e = c->edge;
	if (!e)
		return;
	mc_cell_locality_free(e->loc);
	free(e);
	c->edge = NULL;
}

void mc_cell_edge_account(cell *c, cell_route *rt, const mc_http_request *req)
{
	if (!c->edge)
		return;
	mc_cell_locality_account(c->edge->loc, req);
	/* once per route and process, whichever thread sees it first */
	if (rt && !atomic_load_explicit(rt->served, memory_order_relaxed) &&
	    !atomic_exchange(rt->served, 1))
		mc_cell_cold_start(c, "first_request");
}
