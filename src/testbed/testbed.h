/* Test bed subcommands: the WAN link emulator and the sample worker/origin apps
 * used by demo, bench and the integration tests. */
#ifndef MC_TESTBED_H
#define MC_TESTBED_H

/* `metrocell link ...` (argv[0] is "link"): runs the link emulator until SIGTERM or
 * SIGINT. Returns the process exit code: 0 after a clean stop, 1 when a socket
 * cannot be bound, 2 on a command-line error (reported on stderr). */
int mc_testbed_link_main(int argc, char **argv);

#endif
