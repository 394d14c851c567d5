/* Clocks: monotonic nanoseconds, wall milliseconds and the hybrid logical clock. */
#include <stdatomic.h>
#include <time.h>

#include "common/common.h"

uint64_t mc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t mc_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The clock state lives in c->last, updated with compare-and-swap so several
 * threads may stamp events. Wall time is shifted into the upper 48 bits; when the
 * wall clock stands still or steps back, the logical part grows instead. */
void mc_hlc_init(mc_hlc *c, uint64_t floor)
{
	atomic_store(&c->last, floor);
}

static uint64_t advance(mc_hlc *c, uint64_t seen)
{
	uint64_t cur = atomic_load(&c->last);
	for (;;) {
		uint64_t phys = mc_hlc_make(mc_wall_ms(), 0);
		uint64_t next = MC_MAX(phys, MC_MAX(cur, seen) + 1);
		if (atomic_compare_exchange_weak(&c->last, &cur, next))
			return next;
	}
}

uint64_t mc_hlc_now(mc_hlc *c)
{
	return advance(c, 0);
}

uint64_t mc_hlc_observe(mc_hlc *c, uint64_t remote)
{
	return advance(c, remote);
}
