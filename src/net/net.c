/* Listening sockets with SO_REUSEPORT handed to libuv, and address helpers. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "net/net.h"

int mc_net_addr_parse(const char *hostport, struct sockaddr_storage *out)
{
	char host[64];
	uint16_t port;
	if (mc_parse_hostport(hostport, host, sizeof host, &port) < 0)
		return MC_EINVAL;
	memset(out, 0, sizeof *out);
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	struct sockaddr_in *in4 = (struct sockaddr_in *)out;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		return 0;
	}
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		return 0;
	}
	return MC_EINVAL;
}

void mc_net_addr_format(const struct sockaddr *sa, char *buf, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	uint16_t port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof ip);
		port = ntohs(in4->sin_port);
		snprintf(buf, cap, "%s:%u", ip, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
		port = ntohs(in6->sin6_port);
		snprintf(buf, cap, "[%s]:%u", ip, port);
	} else {
		snprintf(buf, cap, "?");
	}
}

int mc_net_listen(uv_loop_t *loop, uv_tcp_t *handle, const char *hostport, int reuseport,
		  int backlog, uv_connection_cb cb)
{
	struct sockaddr_storage ss;
	int rc = mc_net_addr_parse(hostport, &ss);
	if (rc < 0)
		return rc;
	socklen_t len = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
						: sizeof(struct sockaddr_in6);
	int one = 1;
	uint16_t port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						      : ((struct sockaddr_in6 *)&ss)->sin6_port);
	if (reuseport == MC_NET_REUSEPORT_FIRST && port != 0) {
		/* SO_REUSEPORT would let this bind join another process's listener
		 * (a second cell started on the same port would silently get half
		 * the connections): a plain bind first proves the address free */
		int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe < 0)
			return -errno;
		setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		rc = bind(probe, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
		close(probe);
		if (rc < 0)
			return rc;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
		rc = -errno;
		goto out;
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
		rc = -errno;
		goto out;
	}
	rc = uv_tcp_init(loop, handle);
	if (rc < 0)
		goto out;
	rc = uv_tcp_open(handle, fd);
	if (rc < 0) {
		uv_close((uv_handle_t *)handle, NULL);
		goto out;
	}
	fd = -1; /* owned by the handle now */
	rc = uv_listen((uv_stream_t *)handle, backlog > 0 ? backlog : 511, cb);
	if (rc < 0) {
		uv_close((uv_handle_t *)handle, NULL);
		return rc;
	}
	return 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

uint16_t mc_net_local_port(const uv_tcp_t *handle)
{
	struct sockaddr_storage ss;
	int len = sizeof ss;
	if (uv_tcp_getsockname(handle, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	(void)signum;
	mc_net_stop_signals *s = h->data;
	s->fn(s->arg);
}

void mc_net_stop_signals_defer(int on)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(on ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

void mc_net_stop_signals_start(mc_net_stop_signals *s, uv_loop_t *loop, void (*fn)(void *arg),
			       void *arg)
{
	static const int signums[2] = {SIGTERM, SIGINT};
	s->fn = fn;
	s->arg = arg;
	for (int i = 0; i < 2; i++) {
		uv_signal_init(loop, &s->sig[i]);
		s->sig[i].data = s;
		uv_signal_start(&s->sig[i], on_stop_signal, signums[i]);
	}
	s->started = 1;
}

void mc_net_stop_signals_close(mc_net_stop_signals *s)
{
	if (!s->started)
		return;
	s->started = 0;
	for (int i = 0; i < 2; i++)
		uv_close((uv_handle_t *)&s->sig[i], NULL);
}
