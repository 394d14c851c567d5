/* Test bed subcommands: the WAN link emulator and the sample worker/origin apps
 * used by demo, bench and the integration tests. */
#ifndef MC_TESTBED_H
#define MC_TESTBED_H

/* `metrocell link ...` (argv[0] is "link"): runs the link emulator until SIGTERM or
 * SIGINT. Returns the process exit code: 0 after a clean stop, 1 when a socket
 * cannot be bound, 2 on a command-line error (reported on stderr). */
int mc_testbed_link_main(int argc, char **argv);

/* `metrocell sample-worker --listen HOST:PORT [--name NAME] [--work-ms N]
 * [--body-bytes N] [--fail-status CODE]`: an HTTP worker answering every path with 200
 * (or CODE) and a JSON body {"worker":NAME,"path":...,"n":...} plus `X-Worker: NAME`;
 * /healthz always answers 200. Per request, the query may ask for `status=CODE`,
 * `delay_ms=N`, or `sse=N&gap_ms=M`: N server-sent events M ms apart, streamed
 * chunked. Prints "sample-worker NAME listening on HOST:PORT" (the bound port) once
 * ready; runs until SIGTERM/SIGINT. Returns 0 after a clean stop, 1 when it cannot
 * listen, 2 on a command-line error. */
int mc_testbed_sample_worker_main(int argc, char **argv);

/* `metrocell sample-origin --listen HOST:PORT [--max-age S] [--body-bytes N]`: an
 * origin whose answers carry `Cache-Control: max-age=S` and a strong ETag, with
 * If-None-Match revalidation (304). Same stdout line ("sample-origin listening on
 * HOST:PORT") and exit codes as sample-worker. */
int mc_testbed_sample_origin_main(int argc, char **argv);

#endif
