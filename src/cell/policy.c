/* The cell's one failure-policy table: every way a proxy request can fail to
 * get an answer from the cell's workers maps to one cause, and the route's
 * on_failure decides for all of them alike (docs/operations.md "Failure
 * policy"). The flow that applies it is in proxy.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/cell_int.h"

const char *const mc_cell_cause_names[CAUSE_COUNT] = {"connect_failed",	   "timeout",
						      "no_healthy_worker", "overloaded",
						      "upstream_5xx",	   "upstream_error"};

cell_cause mc_cell_cause_of(int err)
{
	switch (err) {
	case MC_ETIMEDOUT:
	case UV_ETIMEDOUT:
		return CAUSE_TIMEOUT;
	case UV_ECONNREFUSED:
	case UV_EHOSTUNREACH:
	case UV_ENETUNREACH:
	case UV_EADDRNOTAVAIL:
	case UV_EADDRINUSE:
		return CAUSE_CONNECT_FAILED;
	case MC_EFULL:
		return CAUSE_OVERLOADED;
	default:
		return CAUSE_UPSTREAM_ERROR;
	}
}

void mc_cell_policy_count(cell *c, const cell_route *rt, cell_cause cause, int fail_open)
{
	mc_buf l;
	mc_buf_init(&l);
	mc_buf_append_str(&l, "cell=\"");
	mc_metrics_label_escape(&l, c->conf->cell);
	mc_buf_append_str(&l, "\",route=\"");
	mc_metrics_label_escape(&l, rt->conf->name);
	mc_buf_printf(&l, "\",cause=\"%s\",action=\"%s\"", mc_cell_cause_names[cause],
		      fail_open ? "fail_open" : "fail_closed");
	mc_metrics_series(c->metrics, "metrocell_failure_policy_total",
			  "Proxy requests the failure policy decided, by route, cause and action.",
			  MC_METRIC_COUNTER, l.data)
	    ->value += 1;
	mc_buf_fini(&l);
}

static void finish_json(cell_req *r, int status, const char *code, cell_cause cause,
			const char *msg)
{
	mc_buf body;
	mc_buf_init(&body);
	mc_http_error_body(&body, code, msg);
	const char *cn = mc_cell_cause_names[cause];
	mc_http_header h[] = {{"Content-Type", 12, "application/json", 16},
			      {"X-Metrocell-Failure-Cause", 25, cn, strlen(cn)}};
	mc_cell_finish(r, status, OUTCOME_REFUSED, h, MC_ARRAY_LEN(h), body.data, body.len);
	mc_buf_fini(&body);
}

void mc_cell_policy_fail_closed(cell_req *r, cell_cause cause, const char *detail)
{
	char msg[640];
	snprintf(msg, sizeof msg, "%s: %s (route %s fails closed)", mc_cell_cause_names[cause],
		 detail, r->route->conf->name);
	finish_json(r, 503, "upstream_unavailable", cause, msg);
}

void mc_cell_policy_fallback_failed(cell_req *r, cell_cause cause, const char *detail,
				    cell_cause fcause, const char *fdetail, int region_answered)
{
	char msg[900];
	snprintf(msg, sizeof msg, "%s: %s; region fallback: %s: %s", mc_cell_cause_names[cause],
		 detail, mc_cell_cause_names[fcause], fdetail);
	finish_json(r, region_answered ? 502 : 503, "fallback_failed", cause, msg);
}
