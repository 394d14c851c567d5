/* `metrocell ctl`: the operator's CLI against the region's control plane
 * (docs/operations.md "Fleet config"). */
#ifndef MC_CTL_H
#define MC_CTL_H

/* `metrocell ctl SUBCOMMAND ...` with argv[0] = "ctl": push, rollout,
 * rotate-key (and status, src/ctl/status.c). Returns the process exit code: 0
 * when done, 1 when the region refused or the operation failed (the reason on
 * stderr), 2 on a usage error. */
int mc_ctl_main(int argc, char **argv);

/* `metrocell ctl status` (the fleet table; src/ctl/status.c, also declared in
 * src/ctl/status.h): argv[0] is "status". Same exit codes. */
int mc_ctl_status(int argc, char **argv);

#endif
