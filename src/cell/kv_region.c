/* Calls from the cell to the region's KV API (region.http): read-through of
 * replicated keys the cell does not hold and every operation on regional keys.
 * Each call has its own deadline (the rule's region_timeout_ms); after a failed
 * call the region counts as down for KV_REGION_RETRY_MS so a partition does not
 * cost every request a timeout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cell/kv_int.h"

struct rcall {
	cell_kv *kv;
	uv_timer_t timer;
	kv_region_cb cb;
	void *arg;
	int answered;
	int refs; /* the pool's callback and the timer's close */
};

int kv_region_init(cell_kv *kv)
{
	cell *c = kv->c;
	if (!c->conf->region_http)
		return 0;
	uint32_t longest = 0;
	for (size_t i = 0; i < c->conf->classes.n; i++)
		longest = MC_MAX(longest, c->conf->classes.rules[i].region_timeout_ms);
	mc_http_pool_opts o;
	mc_http_pool_opts_default(&o);
	o.connect_timeout_ms = MC_MIN(1000u, longest);
	o.request_timeout_ms = longest + 1000; /* the per-call timer fires first */
	o.max_conns = 64;
	o.max_idle = 64;
	o.max_response_bytes = (size_t)32 << 20;
	int rc = mc_http_pool_new(&kv->region, c->loop, c->conf->region_http, &o);
	if (rc < 0) {
		MC_ERROR("cell", "region.http %s: %s", c->conf->region_http, mc_strerror(rc));
		kv->region = NULL;
	}
	return rc;
}

void kv_region_fini(cell_kv *kv)
{
	mc_http_pool_free(kv->region); /* pending calls complete with MC_ECANCELED */
	kv->region = NULL;
}

int kv_region_down(cell_kv *kv)
{
	if (!kv->region) {
		snprintf(kv->region_err, sizeof kv->region_err, "no region.http is configured");
		return 1;
	}
	return mc_now_ns() < kv->region_down_until_ns;
}

static void rcall_unref(struct rcall *rc)
{
	if (--rc->refs == 0) {
		rc->kv->calls--;
		free(rc);
	}
}

static void on_timer_closed(uv_handle_t *h)
{
	rcall_unref(h->data);
}

static void note_result(cell_kv *kv, int err, int status)
{
	if (err == MC_ECANCELED)
		return;
	if (err < 0 || status == 502 || status == 503 || status == 504) {
		kv->region_down_until_ns = mc_now_ns() + (uint64_t)KV_REGION_RETRY_MS * 1000000u;
		if (err < 0)
			snprintf(kv->region_err, sizeof kv->region_err, "region %s: %s",
				 kv->c->conf->region_http, mc_strerror(err));
		else
			snprintf(kv->region_err, sizeof kv->region_err, "region %s answered %d",
				 kv->c->conf->region_http, status);
	} else {
		kv->region_down_until_ns = 0;
	}
}

static void answer(struct rcall *rc, int err, const mc_http_response *res)
{
	if (rc->answered)
		return;
	rc->answered = 1;
	uv_timer_stop(&rc->timer);
	uv_close((uv_handle_t *)&rc->timer, on_timer_closed);
	note_result(rc->kv, err, res ? res->status : 0);
	rc->cb(rc->arg, err, res);
}

static void on_response(void *arg, int err, const mc_http_response *res)
{
	struct rcall *rc = arg;
	answer(rc, err, err < 0 ? NULL : res);
	rcall_unref(rc);
}

static void on_deadline(uv_timer_t *t)
{
	struct rcall *rc = t->data;
	answer(rc, MC_ETIMEDOUT, NULL);
}

int kv_region_call(cell_kv *kv, const char *method, const mc_buf *target, const mc_http_header *h,
		   size_t nh, const void *body, size_t len, uint32_t timeout_ms, kv_region_cb cb,
		   void *arg)
{
	if (kv_region_down(kv))
		return MC_EUNAVAIL;
	mc_http_header hh[16];
	size_t n = 0;
	const char *cellname = kv->c->conf->cell;
	hh[n++] = (mc_http_header){"X-Metrocell-Cell", 16, cellname, strlen(cellname)};
	for (size_t i = 0; i < nh && n < MC_ARRAY_LEN(hh); i++)
		hh[n++] = h[i];
	struct rcall *rc = mc_calloc(1, sizeof *rc);
	rc->kv = kv;
	rc->cb = cb;
	rc->arg = arg;
	int err = mc_http_pool_request(kv->region, method, target->data, hh, n, body, len,
				       on_response, rc);
	if (err < 0) {
		free(rc);
		return err;
	}
	kv->calls++;
	rc->refs = 2;
	uv_timer_init(kv->c->loop, &rc->timer);
	rc->timer.data = rc;
	uv_timer_start(&rc->timer, on_deadline, timeout_ms, 0);
	return 0;
}

void kv_region_target(mc_buf *out, const char *key, size_t klen, const char *suffix)
{
	static const char hex[] = "0123456789ABCDEF";
	mc_buf_append_str(out, "/v1/kv/");
	for (size_t i = 0; i < klen; i++) {
		unsigned char ch = (unsigned char)key[i];
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
		    ch == ':' || ch == '@') {
			mc_buf_append(out, (const char *)&ch, 1);
		} else {
			char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
			mc_buf_append(out, e, 3);
		}
	}
	if (suffix)
		mc_buf_append_str(out, suffix);
}

uint64_t kv_hdr_u64(const mc_http_response *res, const char *name)
{
	size_t len;
	uint64_t v = 0;
	const char *p = mc_http_header_find(res->headers, res->nheaders, name, &len);
	if (p && mc_parse_u64(p, len, UINT64_MAX, &v) != 0)
		v = 0;
	return v;
}
