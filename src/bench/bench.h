/* The demo and the load generator: `metrocell demo` starts a whole topology
 * (region, cells, sample workers, emulated links) on this machine, drives a
 * bounded mixed load through the project's own HTTP client and reports what it
 * measured. docs/demo.md describes the run and report.json. */
#ifndef MC_BENCH_H
#define MC_BENCH_H

/* `metrocell demo [--quick] [--out DIR] [--requests N] [--concurrency C]
 * [--work-ms N]`; argv[0] is "demo". Starts every process, drives the load,
 * prints the table, writes DIR/report.json and stops every process it started
 * (also on errors and on SIGINT/SIGTERM). Returns the process exit code: 0 when
 * the run worked (every process became ready, every acknowledged write is in the
 * region with the acknowledged version, every traffic class was served), 1 when
 * it did not (the reason is printed on stderr), 2 on a usage error. */
int mc_bench_demo_main(int argc, char **argv);

#endif
