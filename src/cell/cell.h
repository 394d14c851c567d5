/* The cell: the data plane of one metro (ingress, routes, hot state, write-log
 * shipping). */
#ifndef MC_CELL_H
#define MC_CELL_H

/* `metrocell cell -c cell.json`: runs until SIGTERM/SIGINT. Returns the process
 * exit code: 0 after a clean stop, 2 for usage or configuration errors, 1 when
 * a listener or the store cannot be opened. */
int mc_cell_main(int argc, char **argv);

#endif
