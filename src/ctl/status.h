/* `metrocell ctl status`: the fleet table from the region's GET /v1/fleet. */
#ifndef MC_CTL_STATUS_H
#define MC_CTL_STATUS_H

/* argv[0] is "status". Options: --region HOST:PORT (default $METROCELL_REGION, else
 * 127.0.0.1:7080), --json (print the region's document as it came), --timeout-ms N.
 * Prints one row per cell (docs/operations.md "ctl status"). Returns the exit code:
 * 0 when the table was printed, 1 when the region could not be asked or answered
 * something unusable (the reason on stderr), 2 on a usage error. */
int mc_ctl_status(int argc, char **argv);

#endif
