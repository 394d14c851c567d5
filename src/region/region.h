/* The region: replication sink for the cells' write logs, regional store and
 * its read API, and the fallback path for requests cells fail open
 * (src/region/fallback.c). (Control plane and failover come later.) */
#ifndef MC_REGION_H
#define MC_REGION_H

/* `metrocell region -c region.json`: runs until SIGTERM/SIGINT. Returns the
 * process exit code: 0 after a clean stop, 2 for usage or configuration errors,
 * 1 when a listener or the store cannot be opened. */
int mc_region_main(int argc, char **argv);

#endif
