/* `flags` routes: the feature flags of the cell config, read-only.
 * GET {prefix} answers {"flags":{name:value,...}} (config order); GET
 * {prefix}/{name} answers {"name":name,"value":value}, or 404 unknown_flag.
 * Values are the config's JSON values, rendered once at start. */
#include <string.h>

#include "cell/edge.h"

void mc_cell_flags_render(const mc_cell_conf *conf, mc_buf *out)
{
	mc_buf_reset(out);
	mc_buf_append_str(out, "{\"flags\":{");
	for (size_t i = 0; i < conf->nflags; i++) {
		const mc_flag_conf *f = &conf->flags[i];
		if (i)
			mc_buf_append(out, ",", 1);
		mc_buf_append_json(out, f->name, strlen(f->name));
		mc_buf_append(out, ":", 1);
		mc_buf_append(out, f->json, f->json_len);
	}
	mc_buf_append_str(out, "}}\n");
}

static const mc_flag_conf *flag_find(const mc_cell_conf *conf, const char *name, size_t n)
{
	for (size_t i = 0; i < conf->nflags; i++)
		if (strlen(conf->flags[i].name) == n && memcmp(conf->flags[i].name, name, n) == 0)
			return &conf->flags[i];
	return NULL;
}

void mc_cell_flags_handle(cell_req *r)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
		mc_http_header h[] = {{"Allow", 5, "GET, HEAD", 9},
				      {"Content-Type", 12, "application/json", 16}};
		mc_buf body;
		mc_buf_init(&body);
		mc_http_error_body(&body, "method_not_allowed", "flags are read with GET");
		mc_cell_finish(r, 405, OUTCOME_REFUSED, h, 2, body.data, body.len);
		mc_buf_fini(&body);
		return;
	}
	/* the rest of the path after the route prefix, one leading '/' dropped */
	const char *rest = req->path + r->route->prefix_len;
	size_t n = req->path_len - r->route->prefix_len;
	if (n > 0 && rest[0] == '/') {
		rest++;
		n--;
	}
	mc_http_header ct = {"Content-Type", 12, "application/json", 16};
	if (n == 0) {
		mc_cell_finish(r, 200, OUTCOME_LOCAL, &ct, 1, r->snap->flags_all.data,
			       r->snap->flags_all.len);
		return;
	}
	const mc_flag_conf *f = flag_find(r->snap->conf, rest, n);
	if (!f) {
		mc_cell_finish_error(r, 404, OUTCOME_REFUSED, "unknown_flag",
				     "no flag named \"%.*s\" (%zu flags are configured)",
				     (int)MC_MIN(n, (size_t)64), rest, r->snap->conf->nflags);
		return;
	}
	mc_buf body;
	mc_buf_init(&body);
	mc_buf_append_str(&body, "{\"name\":");
	mc_buf_append_json(&body, f->name, strlen(f->name));
	mc_buf_append_str(&body, ",\"value\":");
	mc_buf_append(&body, f->json, f->json_len);
	mc_buf_append_str(&body, "}\n");
	mc_cell_finish(r, 200, OUTCOME_LOCAL, &ct, 1, body.data, body.len);
	mc_buf_fini(&body);
}
