/* Unit tests for src/net: address parsing and formatting, and listeners with
 * SO_REUSEPORT (two sockets share a port only when both ask for it). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/common.h"
#include "net/net.h"

static void test_addr_parse_format(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	char buf[64];
	assert_int_equal(mc_net_addr_parse("127.0.0.1:8080", &ss), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	mc_net_addr_format((struct sockaddr *)&ss, buf, sizeof buf);
	assert_string_equal(buf, "127.0.0.1:8080");
	assert_int_equal(mc_net_addr_parse("localhost:1", &ss), 0);
	mc_net_addr_format((struct sockaddr *)&ss, buf, sizeof buf);
	assert_string_equal(buf, "127.0.0.1:1");
	assert_int_equal(mc_net_addr_parse("[::1]:443", &ss), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	mc_net_addr_format((struct sockaddr *)&ss, buf, sizeof buf);
	assert_string_equal(buf, "[::1]:443");
	assert_int_equal(mc_net_addr_parse("example.com:80", &ss), MC_EINVAL);
	assert_int_equal(mc_net_addr_parse("127.0.0.1", &ss), MC_EINVAL);
}

static void on_conn(uv_stream_t *s, int status)
{
	(void)s;
	(void)status;
}

static void test_listen_reuseport(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	uv_tcp_t a, b, c;
	assert_int_equal(mc_net_listen(&loop, &a, "127.0.0.1:0", 1, 16, on_conn), 0);
	uint16_t port = mc_net_local_port(&a);
	assert_true(port > 0);
	char addr[32];
	snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
	/* a second SO_REUSEPORT listener on the same port is allowed ... */
	assert_int_equal(mc_net_listen(&loop, &b, addr, 1, 16, on_conn), 0);
	assert_int_equal(mc_net_local_port(&b), port);
	/* ... one without it is refused */
	assert_int_equal(mc_net_listen(&loop, &c, addr, 0, 16, on_conn), -EADDRINUSE);
	assert_int_equal(mc_net_listen(&loop, &c, "nonsense", 1, 16, on_conn), MC_EINVAL);
	uv_close((uv_handle_t *)&a, NULL);
	uv_close((uv_handle_t *)&b, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* The first listener of a group refuses an address another socket holds, even
 * one with SO_REUSEPORT (another process's group); joining works after it. */
static void test_listen_reuseport_first(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	uv_tcp_t a, b, c;
	assert_int_equal(mc_net_listen(&loop, &a, "127.0.0.1:0", MC_NET_REUSEPORT_JOIN, 16, on_conn),
			 0);
	char addr[32];
	snprintf(addr, sizeof addr, "127.0.0.1:%u", mc_net_local_port(&a));
	assert_int_equal(mc_net_listen(&loop, &b, addr, MC_NET_REUSEPORT_FIRST, 16, on_conn),
			 -EADDRINUSE);
	uv_close((uv_handle_t *)&a, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	/* free now: the first one binds, a second thread joins */
	assert_int_equal(mc_net_listen(&loop, &b, addr, MC_NET_REUSEPORT_FIRST, 16, on_conn), 0);
	assert_int_equal(mc_net_listen(&loop, &c, addr, MC_NET_REUSEPORT_JOIN, 16, on_conn), 0);
	uv_close((uv_handle_t *)&b, NULL);
	uv_close((uv_handle_t *)&c, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- mailbox ---- */

typedef struct mbox_test {
	mc_mailbox *mb;
	uv_mutex_t lock;
	int seen[4][1000];
	int n[4];
	int order_ok;
	int total;
} mbox_test;

typedef struct mbox_item {
	mbox_test *t;
	int thread, seq;
} mbox_item;

static void mbox_run(void *arg)
{
	mbox_item *it = arg;
	mbox_test *t = it->t;
	/* each poster's items run in its post order */
	if (t->n[it->thread] != it->seq)
		t->order_ok = 0;
	t->n[it->thread]++;
	if (++t->total == 4000)
		mc_mailbox_close(t->mb);
	free(it);
}

static void mbox_poster(void *arg)
{
	mbox_item *base = arg;
	for (int i = 0; i < 1000; i++) {
		mbox_item *it = mc_alloc(sizeof *it);
		*it = (mbox_item){base->t, base->thread, i};
		assert_int_equal(mc_mailbox_post(base->t->mb, mbox_run, it), 0);
	}
}

static void test_mailbox_order_and_close(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	mbox_test *t = mc_calloc(1, sizeof *t);
	t->order_ok = 1;
	assert_int_equal(mc_mailbox_new(&t->mb, &loop), 0);
	uv_thread_t tid[4];
	mbox_item base[4];
	for (int i = 0; i < 4; i++) {
		base[i] = (mbox_item){t, i, 0};
		assert_int_equal(uv_thread_create(&tid[i], mbox_poster, &base[i]), 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT); /* ends once the 4000th item closed the mailbox */
	for (int i = 0; i < 4; i++)
		uv_thread_join(&tid[i]);
	assert_int_equal(t->total, 4000);
	assert_true(t->order_ok);
	assert_int_equal(uv_loop_close(&loop), 0);
	free(t);
}

static void count_run(void *arg)
{
	(*(int *)arg)++;
}

static void test_mailbox_refuses_after_close(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	mc_mailbox *mb;
	assert_int_equal(mc_mailbox_new(&mb, &loop), 0);
	int ran = 0;
	assert_int_equal(mc_mailbox_post(mb, count_run, &ran), 0);
	mc_mailbox_close(mb); /* runs what was queued, then refuses */
	assert_int_equal(ran, 1);
	assert_int_equal(mc_mailbox_post(mb, count_run, &ran), MC_ECLOSED);
	uv_run(&loop, UV_RUN_DEFAULT); /* the handle closes, the memory goes */
	assert_int_equal(ran, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_parse_format),
		cmocka_unit_test(test_listen_reuseport),
		cmocka_unit_test(test_listen_reuseport_first),
		cmocka_unit_test(test_mailbox_order_and_close),
		cmocka_unit_test(test_mailbox_refuses_after_close),
	};
	return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
