/* The hot-state KV API of a cell: GET | PUT | DELETE /v1/kv/{key} on the local
 * LMDB store. Writes are acknowledged only after the group commit that holds them
 * is durable; every write is appended to the write log in the same transaction
 * and shipped to the region (every key is replicated in this version). */
#include <stdio.h>
#include <string.h>

#include "cell/cell_int.h"

static int valid_key(const mc_buf *k)
{
	for (size_t i = 0; i < k->len; i++) {
		unsigned char ch = (unsigned char)k->data[i];
		if (ch <= 0x20 || ch == 0x7f)
			return 0;
	}
	return 1;
}

static void version_headers(mc_http_header *h, size_t *n, char *vbuf, size_t vcap,
			    uint64_t version, const char *home)
{
	snprintf(vbuf, vcap, "%llu", (unsigned long long)version);
	h[(*n)++] = (mc_http_header){"X-Metrocell-Version", 19, vbuf, strlen(vbuf)};
	h[(*n)++] = (mc_http_header){"X-Metrocell-Home", 16, home, strlen(home)};
	h[(*n)++] = (mc_http_header){"X-Metrocell-Class", 17, "replicated", 10};
}

static void kv_get(cell_req *r)
{
	mc_record rec;
	mc_buf val;
	mc_buf_init(&val);
	r->seg_name = "state";
	r->seg_start_ns = mc_now_ns();
	int rc = mc_store_get(r->c->store, r->key.data, r->key.len, &rec, &val);
	if (rc == MC_ENOTFOUND) {
		mc_cell_finish_error(r, 404, OUTCOME_LOCAL, "not_found", "no key \"%s\" in cell %s",
				     r->key.data, r->c->conf->cell);
	} else if (rc < 0) {
		mc_cell_finish_error(r, 500, OUTCOME_LOCAL, "store_error", "reading the store: %s",
				     mc_strerror(rc));
	} else {
		mc_http_header h[4];
		size_t n = 0;
		char vbuf[24];
		version_headers(h, &n, vbuf, sizeof vbuf, rec.version, rec.home);
		h[n++] = (mc_http_header){"Content-Type", 12, "application/octet-stream", 24};
		mc_cell_finish(r, 200, OUTCOME_LOCAL, h, n, rec.value, rec.value_len);
	}
	mc_buf_fini(&val);
}

static void on_written(void *arg, int err, uint64_t version, uint64_t seq)
{
	cell_req *r = arg;
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	int del = req->method[0] == 'D';
	if (err == MC_EFULL) {
		mc_cell_finish_error(r, 507, OUTCOME_LOCAL, "store_full",
				     "the hot-state store is full (state.map_size_mb)");
		return;
	}
	if (err < 0) {
		mc_cell_finish_error(r, 500, OUTCOME_LOCAL, "store_error", "write failed: %s",
				     mc_strerror(err));
		return;
	}
	const char *home = r->c->conf->cell;
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_append_str(&b, "{\"key\":");
	mc_buf_append_json(&b, r->key.data, r->key.len);
	mc_buf_printf(&b, ",\"version\":\"%llu\",\"seq\":%llu,\"home\":",
		      (unsigned long long)version, (unsigned long long)seq);
	mc_buf_append_json(&b, home, strlen(home));
	mc_buf_printf(&b, "%s}\n", del ? ",\"deleted\":true" : "");
	mc_http_header h[4];
	size_t n = 0;
	char vbuf[24];
	version_headers(h, &n, vbuf, sizeof vbuf, version, home);
	h[n++] = (mc_http_header){"Content-Type", 12, "application/json", 16};
	mc_cell_finish(r, 200, OUTCOME_LOCAL, h, n, b.data, b.len);
	mc_buf_fini(&b);
}

static void kv_write(cell_req *r, mc_op op, const void *value, size_t vlen)
{
	r->seg_name = "state";
	r->seg_start_ns = mc_now_ns();
	int rc = mc_store_write(r->c->store, op, r->key.data, r->key.len, value, vlen, 0, 1,
				on_written, r);
	if (rc == MC_ETOOBIG)
		mc_cell_finish_error(r, 413, OUTCOME_LOCAL, "value_too_large",
				     "value of %zu bytes is over the store's limit", vlen);
	else if (rc == MC_EFULL)
		mc_cell_finish_error(r, 503, OUTCOME_LOCAL, "overloaded",
				     "too many writes are waiting for the disk; retry later");
	else if (rc == MC_ECLOSED)
		mc_cell_finish_error(r, 503, OUTCOME_LOCAL, "shutting_down",
				     "the cell is stopping; retry on another node");
	else if (rc < 0)
		mc_cell_finish_error(r, 400, OUTCOME_LOCAL, "bad_key", "key rejected by the store: %s",
				     mc_strerror(rc));
}

static void kv_delete(cell_req *r)
{
	mc_record rec;
	mc_buf val;
	mc_buf_init(&val);
	int rc = mc_store_get(r->c->store, r->key.data, r->key.len, &rec, &val);
	mc_buf_fini(&val);
	if (rc == MC_ENOTFOUND) {
		mc_cell_finish_error(r, 404, OUTCOME_LOCAL, "not_found", "no key \"%s\" in cell %s",
				     r->key.data, r->c->conf->cell);
		return;
	}
	kv_write(r, MC_OP_DEL, NULL, 0);
}

void mc_cell_kv_handle(cell_req *r)
{
	const mc_http_request *req = mc_http_exchange_request(r->ex);
	const mc_state_conf *sc = &r->c->conf->state;
	const char *raw = req->path + r->route->prefix_len;
	size_t rawlen = req->path_len - r->route->prefix_len;
	if (rawlen == 0) {
		mc_cell_finish_error(r, 400, OUTCOME_LOCAL, "bad_key",
				     "missing key: use %s{key}", r->route->conf->prefix);
		return;
	}
	if (mc_http_percent_decode(raw, rawlen, &r->key) < 0) {
		mc_cell_finish_error(r, 400, OUTCOME_LOCAL, "bad_key",
				     "malformed percent-encoding in the key");
		return;
	}
	if (r->key.len > sc->max_key_bytes) {
		mc_cell_finish_error(r, 400, OUTCOME_LOCAL, "bad_key",
				     "key of %zu bytes is over the limit of %u bytes", r->key.len,
				     (unsigned)sc->max_key_bytes);
		return;
	}
	if (!valid_key(&r->key)) {
		mc_cell_finish_error(r, 400, OUTCOME_LOCAL, "bad_key",
				     "keys may not contain spaces or control characters");
		return;
	}
	if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) {
		kv_get(r); /* the HTTP layer sends no body for HEAD */
	} else if (strcmp(req->method, "PUT") == 0) {
		if (req->body_len > sc->max_value_bytes) {
			mc_cell_finish_error(r, 413, OUTCOME_LOCAL, "value_too_large",
					     "value of %zu bytes is over the limit of %u bytes",
					     req->body_len, (unsigned)sc->max_value_bytes);
			return;
		}
		kv_write(r, MC_OP_PUT, req->body, req->body_len);
	} else if (strcmp(req->method, "DELETE") == 0) {
		kv_delete(r);
	} else {
		mc_http_header allow = {"Allow", 5, "GET, HEAD, PUT, DELETE", 22};
		r->seg_name = NULL;
		mc_buf body;
		mc_buf_init(&body);
		char msg[64];
		snprintf(msg, sizeof msg, "%.16s is not allowed on the KV API", req->method);
		mc_http_error_body(&body, "method_not_allowed", msg);
		mc_http_header h[2] = {allow, {"Content-Type", 12, "application/json", 16}};
		mc_cell_finish(r, 405, OUTCOME_LOCAL, h, 2, body.data, body.len);
		mc_buf_fini(&body);
	}
}
