/* Private interfaces of the bench module: child process supervision (proc.c),
 * the load generator and the synchronous HTTP helpers the orchestration uses
 * (loadgen.c). Used by demo.c only. */
#ifndef MC_BENCH_INT_H
#define MC_BENCH_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "common/common.h"
#include "http/http.h"

/* ---- child processes (proc.c) ------------------------------------------------------
 * One process-wide table of children. Each child is /proc/self/exe (the same
 * binary) started with fork+execv, stdin from /dev/null, stdout on a pipe to us
 * (scanned for the ready line, then copied into the log) and stderr appended to
 * logdir/<name>.log. Children get PR_SET_PDEATHSIG(SIGKILL) so they never outlive
 * a demo killed with SIGKILL. They are stopped only by PID. */

#define MC_BENCH_PROC_MAX 64

typedef struct mc_bench_proc {
	char name[48];
	char role[24];
	char log_path[1100];
	pid_t pid;
	int out_fd;	   /* read end of the stdout pipe, -1 once closed */
	int reaped;	   /* waitpid() collected it; pid must not be signalled again */
	int status;	   /* wait status when reaped */
	int expected;	   /* 1 once we asked it to stop */
	int killed;	   /* 1 when SIGKILL was needed */
	uint64_t ready_ms; /* spawn to ready line */
	char ready_line[256];
} mc_bench_proc;

/* Installs the SIGINT/SIGTERM handlers (first signal sets the pending flag; a
 * second one SIGKILLs every child and exits 130), ignores SIGPIPE and registers
 * an atexit hook that stops every child. logdir must exist; the string is copied. */
void mc_bench_proc_setup(const char *logdir);
/* Nonzero once SIGINT or SIGTERM arrived (the signal number). */
int mc_bench_proc_signalled(void);

/* Starts `metrocell <args...>` (args is NULL-terminated, without the program
 * name) as child name with role (free text for the report), and waits up to
 * timeout_ms for a stdout line starting with ready_prefix. Returns 0 when it became
 * ready, MC_ETIMEDOUT, MC_ECLOSED when it exited first, MC_ECANCELED when a signal
 * arrived, MC_EFULL when the table is full or -errno from pipe/fork/open. On error
 * err holds a one-line reason naming the log file; the child stays in the table
 * (it is stopped with the others). */
int mc_bench_proc_spawn(const char *name, const char *role, const char *const *args,
			const char *ready_prefix, uint32_t timeout_ms, char *err, size_t errcap);

/* Copies whatever the children wrote on stdout since into their logs (never
 * blocks). Call it now and then so a chatty child never fills its pipe. */
void mc_bench_proc_drain(void);

/* Reaps children that exited without being asked. Returns 0 when all are
 * running, MC_ECLOSED when one exited (err names it, its status and its log). */
int mc_bench_proc_check(char *err, size_t errcap);

/* Sends SIGTERM to every running child by PID, waits up to grace_ms for all of
 * them, SIGKILLs the rest and reaps every one. Idempotent. */
void mc_bench_proc_stop_all(uint32_t grace_ms);

size_t mc_bench_proc_count(void);
/* The i-th child (i < mc_bench_proc_count()); valid until the process exits. */
const mc_bench_proc *mc_bench_proc_get(size_t i);
/* "exited 0", "killed by signal 15", "running" into buf (at least 48 bytes). */
void mc_bench_proc_describe(const mc_bench_proc *p, char *buf, size_t cap);

/* ---- synchronous HTTP helper (loadgen.c) -------------------------------------------
 * Orchestration calls (status polls, health checks) are sequential: they issue one
 * request on a pool and run loop until its callback. */

typedef struct mc_bench_reply {
	int err; /* 0, or the client's negative code (then status is 0) */
	int status;
	char *body; /* NUL terminated copy (owned; free with mc_bench_reply_fini) */
	size_t body_len;
	char version[24]; /* X-Metrocell-Version, "" when absent */
	char home[32];	  /* X-Metrocell-Home, "" when absent */
	char outcome[32]; /* X-Metrocell-Outcome, "" when absent */
} mc_bench_reply;

/* Sends method target (body may be NULL) on pool and runs loop until the answer.
 * Returns 0 with *out filled (out->err says whether an answer arrived). */
int mc_bench_http_call(uv_loop_t *loop, mc_http_pool *pool, const char *method, const char *target,
		       const char *body, size_t body_len, mc_bench_reply *out);
void mc_bench_reply_fini(mc_bench_reply *r);

/* ---- load generator (loadgen.c) ----------------------------------------------------- */

typedef enum { MC_BENCH_OP_PROXY = 0, MC_BENCH_OP_PUT, MC_BENCH_OP_GET, MC_BENCH_OP_N } mc_bench_op;

/* One row of the result table: requests of one cell with the same route (from
 * X-Metrocell-Route), method and outcome (from X-Metrocell-Outcome). Requests
 * that got no answer are rows with outcome "client_error" under the route they
 * were meant for. */
typedef struct mc_bench_row {
	size_t cell; /* index into the load's cells */
	char route[32];
	char method[8];
	char outcome[32];
	uint64_t count;
	uint64_t n2xx, n3xx, n4xx, n5xx, nerr;
	uint64_t new_conns; /* answered on a freshly opened connection */
	mc_hist hist;	    /* client-side latency, microseconds */
} mc_bench_row;

/* A write the cell acknowledged (2xx): key demo:<cell>:<idx>, its version. */
typedef struct mc_bench_write {
	uint64_t idx;
	uint64_t version;
	uint64_t seq;
} mc_bench_write;

typedef struct mc_bench_cell_load {
	char cell[32];
	char hostport[64]; /* where the client sends (the client->cell link) */
	mc_http_pool *pool;
	uint64_t next; /* next request index */
	uint64_t done; /* answered or failed */
	uint64_t inflight;
	uint64_t ops[MC_BENCH_OP_N]; /* requests sent per operation */
	uint64_t errors;	     /* no answer at all */
	uint64_t non2xx;
	uint64_t reads_ok;	 /* kv GET 200 with a version >= the one we wrote */
	uint64_t reads_stale;	 /* kv GET 200 with an older version */
	uint64_t reads_missing;	 /* kv GET 404 for a key the cell acknowledged */
	uint64_t put_no_version; /* 2xx PUT without a parseable version */
	mc_bench_write *writes;	 /* acknowledged writes, in ack order */
	size_t nwrites, capwrites;
	uint64_t last_ack_seq;	    /* highest seq seen in a PUT answer */
	uint64_t first_ns, last_ns; /* first send, last answer */
	char first_error[160];
} mc_bench_cell_load;

typedef struct mc_bench_load_opts {
	uint64_t requests_per_cell;
	uint32_t concurrency; /* in flight per cell */
	uint32_t timeout_ms;  /* per request */
	uint32_t progress_ms; /* tick period */
	size_t value_bytes;   /* approximate size of each PUT value */
} mc_bench_load_opts;

typedef struct mc_bench_load mc_bench_load;

/* Called every progress_ms while the load runs; returning nonzero stops it
 * (requests in flight are canceled). */
typedef int (*mc_bench_tick_cb)(void *arg, mc_bench_load *l);

struct mc_bench_load {
	uv_loop_t *loop;
	mc_bench_load_opts opts;
	mc_bench_cell_load *cells;
	size_t ncells;
	mc_bench_row *rows;
	size_t nrows, caprows;
	uint64_t start_ns, end_ns;
	int stopped; /* 1 when a tick asked to stop before the end */
	mc_bench_tick_cb tick;
	void *tick_arg;
};

/* Prepares a load against ncells targets (cells[i] names, hostports[i] the
 * address the client uses). Returns 0 and *out, or MC_EINVAL. */
int mc_bench_load_new(mc_bench_load **out, uv_loop_t *loop, const mc_bench_load_opts *opts,
		      const char *const *cells, const char *const *hostports, size_t ncells);
/* Runs the load to completion (or until tick returns nonzero). Returns 0, or
 * MC_ECANCELED when stopped early. */
int mc_bench_load_run(mc_bench_load *l, mc_bench_tick_cb tick, void *arg);
/* Total answered-or-failed requests and total planned, over all cells. */
void mc_bench_load_progress(const mc_bench_load *l, uint64_t *done, uint64_t *total,
			    uint64_t *errors);
/* Closes the load's connections (frees its pools, runs loop until their handles
 * closed); results stay readable. Accepts NULL. */
void mc_bench_load_disconnect(mc_bench_load *l);
/* Frees the load and its pools (runs loop until their handles closed). Accepts NULL. */
void mc_bench_load_free(mc_bench_load *l);

/* Result of reading every acknowledged write back from the region. */
typedef struct mc_bench_verify {
	uint64_t checked;
	uint64_t matched;	   /* 200 with the acknowledged version */
	uint64_t missing;	   /* 404 */
	uint64_t version_mismatch; /* 200 with another version */
	uint64_t home_mismatch;	   /* matched, but X-Metrocell-Home is not the writing cell */
	uint64_t errors;	   /* no answer or another status */
	uint64_t duration_us;
	char first_problem[256];
} mc_bench_verify;

/* Reads every acknowledged write of every cell of l from the region's HTTP API at
 * region_hostport (directly, no link), concurrency requests at a time. After
 * deadline_ms, or once SIGINT/SIGTERM arrived, no further reads are sent and the
 * remaining writes count as errors. Returns 0 (results in *out, per cell in
 * per_cell[ncells] when not NULL) or MC_EINVAL. */
int mc_bench_load_verify(mc_bench_load *l, const char *region_hostport, uint32_t concurrency,
			 uint32_t deadline_ms, mc_bench_verify *out, mc_bench_verify *per_cell);

/* Operation names for reports: "proxy", "kv_write", "kv_read". */
const char *mc_bench_op_name(mc_bench_op op);

#endif
