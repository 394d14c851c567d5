/* Reading a plain TCP connection without libuv's stream reader (see
 * mc_http_rd in http_int.h): a second descriptor of the same socket, watched
 * with a uv_poll handle, read with recv() and, once drained, registered
 * edge-triggered. libuv 1.44's reader uses read() (the VFS layer on top of the
 * socket's own recvmsg) and a level-triggered registration, which epoll polls
 * once more after every event that was reported; both cost measurable kernel
 * time per request on a keep-alive connection (docs/benchmarks.md). */
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http_int.h"

/* Reads per readiness event, as libuv's reader: a connection that keeps its
 * receive queue full cannot starve the others. */
#define RD_MAX_READS 32

int mc_http_rd_fd_cap(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > (rlim_t)INT32_MAX)
		return INT32_MAX / 2;
	return (int)(rl.rlim_cur / 2);
}

int mc_http_rd_init(mc_http_rd *rd, uv_loop_t *loop, uv_tcp_t *tcp, int fd_cap)
{
	uv_os_fd_t fd;
	rd->fd = -1;
	rd->active = rd->et = 0;
	if (uv_fileno((uv_handle_t *)tcp, &fd) < 0)
		return -1;
	/* dup() and then FD_CLOEXEC rather than F_DUPFD_CLOEXEC: ThreadSanitizer
	 * sees a dup() create the descriptor (the fcntl form looks to it like a use
	 * of another thread's closed one), and the cell never execs */
	int d = dup(fd);
	if (d < 0)
		return -1;
	(void)fcntl(d, F_SETFD, FD_CLOEXEC);
	/* Descriptors are allocated lowest first, so d is about the number open: the
	 * second descriptor is only taken while at most half of the limit is used,
	 * and a process near its limit keeps one descriptor per connection. */
	if (d >= fd_cap || uv_poll_init(loop, &rd->poll, d) < 0) {
		close(d);
		return -1;
	}
	rd->fd = d;
	rd->tcp = tcp;
	rd->poll.data = tcp->data; /* the owner's close callback gets the handle */
	return 0;
}

/* Registers the descriptor edge-triggered (et 1) or level-triggered (0), the
 * way libuv registered it (its data is the descriptor). */
static void rd_set_et(mc_http_rd *rd, int et)
{
	struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP | (et ? EPOLLET : 0),
				.data.fd = rd->fd};
	if (epoll_ctl(uv_backend_fd(rd->poll.loop), EPOLL_CTL_MOD, rd->fd, &e) == 0)
		rd->et = (uint8_t)et;
}

static void on_rd_poll(uv_poll_t *p, int status, int events)
{
	mc_http_rd *rd = MC_HTTP_CONTAINER(p, mc_http_rd, poll);
	/* On POLLERR libuv has stopped the watcher: no event follows, so what is
	 * queued is read here up to the error (recv returns the data first). After
	 * the peer's FIN (EPOLLRDHUP) a short read is not the end either: the end of
	 * the stream stays readable, and edge-triggered epoll would not report it
	 * again, so reading goes on until recv() returns 0 (or would block). */
	int err = status < 0;
	int hup = (events & UV_DISCONNECT) != 0;
	if (err)
		rd->active = 0;
	int full = 0;
	for (int i = 0; err || i < RD_MAX_READS; i++) {
		uv_buf_t buf;
		rd->alloc_cb((uv_handle_t *)rd->tcp, MC_HTTP_SLAB, &buf);
		ssize_t n;
		do
			n = mc_http_sys_recv(rd->fd, buf.base, buf.len);
		while (n < 0 && errno == EINTR);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (err) /* an error without a code: still the end */
				rd->read_cb((uv_stream_t *)rd->tcp, UV_ECONNRESET, &buf);
			return; /* drained */
		}
		/* libuv's codes are negated errno values on Unix */
		rd->read_cb((uv_stream_t *)rd->tcp, n > 0 ? n : n == 0 ? UV_EOF : -errno, &buf);
		if (n <= 0 || rd->fd < 0 || (!rd->active && !err))
			return; /* the end, an error, closed, or the owner stopped reading */
		full = (size_t)n == buf.len;
		if (!full && !err && !hup)
			break; /* a short read took all there was */
	}
	/* Edge-triggered from here: epoll reports new data only, which is all there
	 * is once a read came back short. After RD_MAX_READS full reads (or reads
	 * after a FIN) something is left: level-triggered until a later event
	 * drains it. */
	int left = full || hup;
	if (rd->et == left)
		rd_set_et(rd, !left);
}

int mc_http_rd_start(mc_http_rd *rd, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
	rd->alloc_cb = alloc_cb;
	rd->read_cb = read_cb;
	if (rd->active)
		return 0;
	/* registered level-triggered at the next poll; what is waiting is reported */
	int rc = uv_poll_start(&rd->poll, UV_READABLE | UV_DISCONNECT, on_rd_poll);
	if (rc == 0) {
		rd->active = 1;
		rd->et = 0;
	}
	return rc;
}

void mc_http_rd_stop(mc_http_rd *rd)
{
	if (!rd->active)
		return;
	rd->active = 0;
	rd->et = 0;
	uv_poll_stop(&rd->poll);
}

void mc_http_rd_close(mc_http_rd *rd, uv_close_cb cb)
{
	if (rd->fd < 0)
		return;
	rd->active = 0;
	/* out of epoll first (uv_close does it at once), then the descriptor, so
	 * that closing the connection's own descriptor next closes the socket */
	uv_close((uv_handle_t *)&rd->poll, cb);
	close(rd->fd);
	rd->fd = -1;
}
