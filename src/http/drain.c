/* Graceful stop of a server: drain it, then tell the owner when no connection
 * is left or the deadline passed. */
#include <stdlib.h>

#include "http/http.h"

#define DRAIN_POLL_MS 20

struct mc_http_drain {
	uv_timer_t timer;
	mc_http_server *srv;
	uint64_t deadline_ns;
	void (*done)(void *arg, size_t left);
	void *arg;
};
typedef struct mc_http_drain drain;

static void on_drain_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_drain_tick(uv_timer_t *t)
{
	drain *d = t->data;
	size_t left = mc_http_server_connections(d->srv);
	if (left > 0 && mc_now_ns() < d->deadline_ns)
		return;
	uv_timer_stop(t);
	uv_close((uv_handle_t *)t, on_drain_closed);
	d->done(d->arg, left);
}

mc_http_drain *mc_http_drain_start(uv_loop_t *loop, mc_http_server *s, uint32_t timeout_ms,
				   void (*done)(void *arg, size_t left), void *arg)
{
	drain *d = mc_calloc(1, sizeof *d);
	d->srv = s;
	d->deadline_ns = mc_now_ns() + (uint64_t)timeout_ms * 1000000u;
	d->done = done;
	d->arg = arg;
	mc_http_server_drain(s);
	uv_timer_init(loop, &d->timer);
	d->timer.data = d;
	uv_timer_start(&d->timer, on_drain_tick, 0, DRAIN_POLL_MS);
	return d;
}

void mc_http_drain_cancel(mc_http_drain *d)
{
	if (!d)
		return;
	uv_timer_stop(&d->timer);
	uv_close((uv_handle_t *)&d->timer, on_drain_closed);
}
