/* Child process supervision for the demo: fork+execv of /proc/self/exe, the ready
 * line read from a stdout pipe with a deadline, stderr into a log file per child,
 * and a stop that signals each child by PID (SIGTERM, grace period, SIGKILL) and
 * reaps every one, also from atexit and on SIGINT/SIGTERM. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_int.h"

static struct {
	char logdir[1040];
	mc_bench_proc procs[MC_BENCH_PROC_MAX];
	int log_fds[MC_BENCH_PROC_MAX];
	char pending[MC_BENCH_PROC_MAX][512]; /* partial stdout line after the ready line */
	size_t npending[MC_BENCH_PROC_MAX];
	volatile size_t n;
	int setup;
} P;

static volatile sig_atomic_t signalled;

static void on_signal(int sig)
{
	if (signalled) {
		/* Second signal: the user insists. Only async-signal-safe calls here. */
		for (size_t i = 0; i < P.n; i++)
			if (P.procs[i].pid > 0 && !P.procs[i].reaped)
				kill(P.procs[i].pid, SIGKILL);
		_exit(130);
	}
	signalled = sig;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap)
		n = cap - 1;
	memmove(dst, src, n);
	dst[n] = 0;
}

static void at_exit(void)
{
	mc_bench_proc_stop_all(3000);
}

void mc_bench_proc_setup(const char *logdir)
{
	copy_str(P.logdir, sizeof P.logdir, logdir);
	if (P.setup)
		return;
	P.setup = 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: blocking waits see EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	atexit(at_exit);
}

int mc_bench_proc_signalled(void)
{
	return (int)signalled;
}

static uint64_t now_ms(void)
{
	return mc_now_ns() / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void log_write(size_t i, const char *p, size_t n)
{
	int fd = P.log_fds[i];
	while (fd >= 0 && n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Child side of the fork: only async-signal-safe calls until execv. */
static _Noreturn void child_exec(pid_t parent, int devnull, int out_w, int log_fd, char **argv)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	/* A clean signal state, as a shell would give: ignored signals stay ignored
	 * across exec otherwise (we ignore SIGPIPE). */
	signal(SIGPIPE, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (dup2(devnull, 0) < 0 || dup2(out_w, 1) < 0 || dup2(log_fd, 2) < 0)
		_exit(127);
	execv("/proc/self/exe", argv);
	static const char msg[] = "metrocell demo: execv /proc/self/exe failed\n";
	ssize_t w = write(2, msg, sizeof msg - 1);
	(void)w;
	_exit(127);
}

static int reap(mc_bench_proc *p, int flags)
{
	if (p->pid <= 0 || p->reaped)
		return 1;
	int st;
	pid_t r;
	do
		r = waitpid(p->pid, &st, flags);
	while (r < 0 && errno == EINTR && !(flags & WNOHANG));
	if (r == p->pid) {
		p->reaped = 1;
		p->status = st;
		return 1;
	}
	if (r < 0 && errno == ECHILD) { /* not ours any more: never signal it again */
		p->reaped = 1;
		p->status = 0;
		return 1;
	}
	return 0;
}

void mc_bench_proc_describe(const mc_bench_proc *p, char *buf, size_t cap)
{
	if (!p->reaped)
		snprintf(buf, cap, "running");
	else if (WIFEXITED(p->status))
		snprintf(buf, cap, "exited %d", WEXITSTATUS(p->status));
	else if (WIFSIGNALED(p->status))
		snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(p->status),
			 strsignal(WTERMSIG(p->status)));
	else
		snprintf(buf, cap, "status 0x%x", (unsigned)p->status);
}

/* Reads what is available on child i's stdout. Complete lines are logged; when
 * ready_prefix is given, returns 1 as soon as a line starts with it (copied into
 * the ready_line). Returns -1 at EOF, 0 otherwise. */
static int read_stdout(size_t i, const char *ready_prefix)
{
	mc_bench_proc *p = &P.procs[i];
	char chunk[4096];
	int found = 0;
	while (p->out_fd >= 0) {
		ssize_t r = read(p->out_fd, chunk, sizeof chunk);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return found;
		if (r == 0) {
			log_write(i, P.pending[i], P.npending[i]);
			P.npending[i] = 0;
			close(p->out_fd);
			p->out_fd = -1;
			return found ? found : -1;
		}
		log_write(i, chunk, (size_t)r);
		for (ssize_t k = 0; k < r; k++) {
			char c = chunk[k];
			if (c == '\n') {
				P.pending[i][P.npending[i]] = 0;
				if (!found && ready_prefix && !p->ready_line[0] &&
				    strncmp(P.pending[i], ready_prefix, strlen(ready_prefix)) ==
					0) {
					copy_str(p->ready_line, sizeof p->ready_line, P.pending[i]);
					found = 1;
				}
				P.npending[i] = 0;
			} else if (P.npending[i] + 1 < sizeof P.pending[i]) {
				P.pending[i][P.npending[i]++] = c;
			}
		}
	}
	return found;
}

int mc_bench_proc_spawn(const char *name, const char *role, const char *const *args,
			const char *ready_prefix, uint32_t timeout_ms, char *err, size_t errcap)
{
	if (P.n >= MC_BENCH_PROC_MAX) {
		snprintf(err, errcap, "%s: too many processes", name);
		return MC_EFULL;
	}
	size_t i = P.n;
	mc_bench_proc *p = &P.procs[i];
	memset(p, 0, sizeof *p);
	p->out_fd = -1;
	P.log_fds[i] = -1;
	P.npending[i] = 0;
	snprintf(p->name, sizeof p->name, "%s", name);
	snprintf(p->role, sizeof p->role, "%s", role);
	char logdir[sizeof P.logdir];
	copy_str(logdir, sizeof logdir, P.logdir);
	snprintf(p->log_path, sizeof p->log_path, "%s/%s.log", logdir, name);

	char *argv[48];
	size_t argc = 0;
	argv[argc++] = (char *)"metrocell";
	for (size_t k = 0; args[k] && argc + 1 < MC_ARRAY_LEN(argv); k++)
		argv[argc++] = (char *)args[k];
	argv[argc] = NULL;

	int rc = 0, pipefd[2] = {-1, -1}, devnull = -1;
	int log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		rc = -errno;
		snprintf(err, errcap, "%s: cannot open %s: %s", name, p->log_path, strerror(errno));
		goto out;
	}
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, errcap, "%s: pipe: %s", name, strerror(errno));
		goto out;
	}
	fflush(NULL);
	pid_t parent = getpid();
	uint64_t t0 = now_ms();
	pid_t pid = fork();
	if (pid < 0) {
		rc = -errno;
		snprintf(err, errcap, "%s: fork: %s", name, strerror(errno));
		goto out;
	}
	if (pid == 0)
		child_exec(parent, devnull, pipefd[1], log_fd, argv);
	p->pid = pid;
	p->out_fd = pipefd[0];
	pipefd[0] = -1;
	P.log_fds[i] = log_fd;
	log_fd = -1;
	P.n = i + 1;
	fcntl(p->out_fd, F_SETFL, fcntl(p->out_fd, F_GETFL) | O_NONBLOCK);
	close(pipefd[1]);
	pipefd[1] = -1;

	uint64_t deadline = t0 + timeout_ms;
	for (;;) {
		int r = read_stdout(i, ready_prefix);
		if (r == 1) {
			p->ready_ms = now_ms() - t0;
			break;
		}
		if (r < 0) { /* stdout closed: it exited or is about to */
			for (int k = 0; k < 100 && !reap(p, WNOHANG); k++)
				sleep_ms(10);
			char how[96];
			mc_bench_proc_describe(p, how, sizeof how);
			snprintf(err, errcap,
				 "%s (pid %d) closed stdout before its ready line (%s); see %s",
				 name, (int)pid, how, p->log_path);
			rc = MC_ECLOSED;
			break;
		}
		if (signalled) {
			snprintf(err, errcap, "interrupted by signal %d while starting %s",
				 (int)signalled, name);
			rc = MC_ECANCELED;
			break;
		}
		uint64_t now = now_ms();
		if (now >= deadline) {
			snprintf(
			    err, errcap,
			    "%s (pid %d) printed no line starting with \"%s\" within %u ms; see %s",
			    name, (int)pid, ready_prefix, timeout_ms, p->log_path);
			rc = MC_ETIMEDOUT;
			break;
		}
		struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
		int wait = (int)MC_MIN(deadline - now, 100u);
		poll(&pfd, 1, wait); /* EINTR: loop around and look at the flag */
	}
out:
	if (log_fd >= 0)
		close(log_fd);
	if (devnull >= 0)
		close(devnull);
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	return rc;
}

void mc_bench_proc_drain(void)
{
	for (size_t i = 0; i < P.n; i++)
		if (P.procs[i].out_fd >= 0)
			read_stdout(i, NULL);
}

int mc_bench_proc_check(char *err, size_t errcap)
{
	for (size_t i = 0; i < P.n; i++) {
		mc_bench_proc *p = &P.procs[i];
		if (p->expected || p->pid <= 0)
			continue;
		if (p->reaped || reap(p, WNOHANG)) {
			char how[96];
			mc_bench_proc_describe(p, how, sizeof how);
			snprintf(err, errcap, "%s (pid %d) %s unexpectedly; see %s", p->name,
				 (int)p->pid, how, p->log_path);
			return MC_ECLOSED;
		}
	}
	return 0;
}

void mc_bench_proc_stop_all(uint32_t grace_ms)
{
	size_t n = P.n;
	for (size_t i = 0; i < n; i++) {
		mc_bench_proc *p = &P.procs[i];
		p->expected = 1;
		if (p->pid > 0 && !reap(p, WNOHANG))
			kill(p->pid, SIGTERM);
	}
	uint64_t deadline = now_ms() + grace_ms;
	for (;;) {
		mc_bench_proc_drain();
		size_t running = 0;
		for (size_t i = 0; i < n; i++)
			if (!reap(&P.procs[i], WNOHANG))
				running++;
		if (running == 0 || now_ms() >= deadline)
			break;
		sleep_ms(10);
	}
	for (size_t i = 0; i < n; i++) {
		mc_bench_proc *p = &P.procs[i];
		if (p->pid > 0 && !p->reaped) {
			p->killed = 1;
			kill(p->pid, SIGKILL);
			reap(p, 0);
		}
	}
	mc_bench_proc_drain();
	for (size_t i = 0; i < n; i++) {
		if (P.procs[i].out_fd >= 0) {
			close(P.procs[i].out_fd);
			P.procs[i].out_fd = -1;
		}
		if (P.log_fds[i] >= 0) {
			close(P.log_fds[i]);
			P.log_fds[i] = -1;
		}
	}
}

size_t mc_bench_proc_count(void)
{
	return P.n;
}

const mc_bench_proc *mc_bench_proc_get(size_t i)
{
	MC_ASSERT(i < P.n);
	return &P.procs[i];
}
