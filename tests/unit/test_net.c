/* Unit tests for src/net: address parsing and formatting, and listeners with
 * SO_REUSEPORT (two sockets share a port only when both ask for it). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_parse_format),
		cmocka_unit_test(test_listen_reuseport),
	};
	return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
