/* Graceful stop of a server: drain it, then tell the owner when no connection
 * is left or the deadline passed; and the signal handling of a server process
 * built on it. */
#include <stdlib.h>
#include <string.h>

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

static void on_graceful_drained(void *arg, size_t left)
{
	mc_http_graceful *g = arg;
	g->drain = NULL;
	if (left)
		MC_WARN("http", "%s: %zu connections still busy after %u ms of draining; closing them",
			g->name, left, (unsigned)g->timeout_ms);
	g->stop(g->arg);
}

static void on_graceful_signal(void *arg)
{
	mc_http_graceful *g = arg;
	if (g->draining) {
		g->stop(g->arg);
		return;
	}
	g->draining = 1;
	MC_INFO("http", "%s: draining %zu connections (at most %u ms)", g->name,
		mc_http_server_connections(g->srv), (unsigned)g->timeout_ms);
	g->drain = mc_http_drain_start(g->loop, g->srv, g->timeout_ms, on_graceful_drained, g);
}

void mc_http_graceful_start(mc_http_graceful *g, uv_loop_t *loop, mc_http_server *srv,
			    uint32_t timeout_ms, const char *name, void (*stop)(void *arg),
			    void *arg)
{
	memset(g, 0, sizeof *g);
	g->loop = loop;
	g->srv = srv;
	g->timeout_ms = timeout_ms;
	g->name = name;
	g->stop = stop;
	g->arg = arg;
	mc_net_stop_signals_start(&g->signals, loop, on_graceful_signal, g);
}

void mc_http_graceful_close(mc_http_graceful *g)
{
	mc_http_drain_cancel(g->drain);
	g->drain = NULL;
	mc_net_stop_signals_close(&g->signals);
}
