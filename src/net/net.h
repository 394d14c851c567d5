/* libuv helpers shared by every server and client: listening sockets with
 * SO_REUSEPORT, address parsing and outbound TCP connects with a timeout. */
#ifndef MC_NET_H
#define MC_NET_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

/* Resolves "host:port" (numeric IPv4/IPv6 or "localhost") into *out. Returns 0 or
 * MC_EINVAL. No DNS lookups: the data plane never blocks on a resolver. */
int mc_net_addr_parse(const char *hostport, struct sockaddr_storage *out);

/* Formats an address as "host:port" into buf (at least 64 bytes). */
void mc_net_addr_format(const struct sockaddr *sa, char *buf, size_t cap);

/* reuseport values of mc_net_listen(). FIRST: the first socket of a group
 * (several threads' listeners on one port): SO_REUSEPORT, after a plain bind
 * has shown that no other socket holds the address. JOIN: SO_REUSEPORT, to
 * join the group. */
#define MC_NET_REUSEPORT_JOIN 1
#define MC_NET_REUSEPORT_FIRST 2

/* Creates a TCP socket bound to hostport with SO_REUSEADDR and (when reuseport)
 * SO_REUSEPORT set before bind, hands it to libuv with uv_tcp_open on the
 * caller-owned, uninitialised handle, and starts listening with cb.
 * Returns 0 or a negative code (-errno from bind, MC_EINVAL for a bad address).
 * On success the handle belongs to the loop until the caller uv_close()s it; on a
 * failure after uv_tcp_init the handle is already closing, so its memory must stay
 * valid until the loop has run once more. */
int mc_net_listen(uv_loop_t *loop, uv_tcp_t *handle, const char *hostport, int reuseport,
		  int backlog, uv_connection_cb cb);

/* SIGTERM and SIGINT handlers that call fn(arg) once, for a clean stop of a
 * server process. The struct is caller-owned and must stay valid until the loop
 * has run after mc_net_stop_signals_close(). */
typedef struct mc_net_stop_signals {
	uv_signal_t sig[2];
	void (*fn)(void *arg);
	void *arg;
	int started;
} mc_net_stop_signals;

/* Blocks (on = 1) or unblocks (on = 0) SIGTERM and SIGINT in the calling thread,
 * so a signal that arrives while a server starts waits until its handlers are in
 * place instead of killing it; threads started meanwhile inherit the block. */
void mc_net_stop_signals_defer(int on);
void mc_net_stop_signals_start(mc_net_stop_signals *s, uv_loop_t *loop, void (*fn)(void *arg),
			       void *arg);
/* Closes the handles (safe to call when never started, or twice). */
void mc_net_stop_signals_close(mc_net_stop_signals *s);

/* Returns the local port a listening handle is bound to (0 on error). */
uint16_t mc_net_local_port(const uv_tcp_t *handle);

/* A mailbox: any thread posts fn(arg), the owner loop's thread runs it, in post
 * order, from a uv_async callback (src/net/mailbox.c). */
typedef struct mc_mailbox mc_mailbox;
typedef void (*mc_mailbox_fn)(void *arg);

/* Creates a mailbox on loop (call on loop's thread). Returns 0 or a negative code. */
int mc_mailbox_new(mc_mailbox **out, uv_loop_t *loop);
/* Queues fn(arg) from any thread and wakes the loop. Returns 0, or MC_ECLOSED
 * after mc_mailbox_close() (fn is not called then: arg stays the caller's). */
int mc_mailbox_post(mc_mailbox *mb, mc_mailbox_fn fn, void *arg);
/* On the owner's thread: refuses further posts, runs what is still queued,
 * then closes the handle; the memory goes with the handle's close callback, so
 * no thread may touch mb once the owner's loop has run after this call. */
void mc_mailbox_close(mc_mailbox *mb);

#endif
