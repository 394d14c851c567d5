/* Cross-thread calls into an event loop: a mutex-protected FIFO of (fn, arg)
 * and a uv_async_t to wake the loop. uv_async_send() coalesces wake-ups, so
 * the callback drains everything queued at that point in one pass. Used by the
 * cell's data-plane threads (src/cell/threads.c). */
#include <pthread.h>
#include <stdlib.h>

#include "common/common.h"
#include "net/net.h"

typedef struct task {
	struct task *next;
	mc_mailbox_fn fn;
	void *arg;
} task;

struct mc_mailbox {
	uv_async_t async;
	pthread_mutex_t lock;
	task *head, *tail;
	int closed;
};

static void run(mc_mailbox *mb)
{
	for (;;) {
		pthread_mutex_lock(&mb->lock);
		task *t = mb->head;
		mb->head = mb->tail = NULL;
		pthread_mutex_unlock(&mb->lock);
		if (!t)
			return;
		while (t) {
			task *next = t->next;
			t->fn(t->arg);
			free(t);
			t = next;
		}
	}
}

static void on_async(uv_async_t *a)
{
	run(a->data);
}

int mc_mailbox_new(mc_mailbox **out, uv_loop_t *loop)
{
	mc_mailbox *mb = mc_calloc(1, sizeof *mb);
	pthread_mutex_init(&mb->lock, NULL);
	int rc = uv_async_init(loop, &mb->async, on_async);
	if (rc < 0) {
		pthread_mutex_destroy(&mb->lock);
		free(mb);
		return rc;
	}
	mb->async.data = mb;
	*out = mb;
	return 0;
}

int mc_mailbox_post(mc_mailbox *mb, mc_mailbox_fn fn, void *arg)
{
	task *t = mc_alloc(sizeof *t);
	t->next = NULL;
	t->fn = fn;
	t->arg = arg;
	pthread_mutex_lock(&mb->lock);
	if (mb->closed) {
		pthread_mutex_unlock(&mb->lock);
		free(t);
		return MC_ECLOSED;
	}
	if (mb->tail)
		mb->tail->next = t;
	else
		mb->head = t;
	mb->tail = t;
	/* under the lock: once mc_mailbox_close() has taken it, no poster is still
	 * about to touch the handle */
	uv_async_send(&mb->async);
	pthread_mutex_unlock(&mb->lock);
	return 0;
}

static void on_closed(uv_handle_t *h)
{
	mc_mailbox *mb = h->data;
	pthread_mutex_destroy(&mb->lock);
	free(mb);
}

void mc_mailbox_close(mc_mailbox *mb)
{
	if (!mb)
		return;
	pthread_mutex_lock(&mb->lock);
	mb->closed = 1;
	pthread_mutex_unlock(&mb->lock);
	run(mb);
	uv_close((uv_handle_t *)&mb->async, on_closed);
}
