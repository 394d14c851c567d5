/* metrocell: one binary, one subcommand per process role. This file only
 * dispatches; every subcommand lives in its module. */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "cell/cell.h"
#include "common/common.h"
#include "ctl/ctl.h"
#include "region/region.h"
#include "testbed/testbed.h"

typedef struct subcommand {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
	const char *usage;
} subcommand;

static const subcommand subcommands[] = {
	{"region", mc_region_main, "run the region: replication sink, regional store, KV read API",
	 "usage: metrocell region -c region.json\n"
	 "  -c, --config FILE   bootstrap config (docs/config.md)\n"
	 "Prints \"region NAME ready ...\" on stdout once listening; SIGTERM/SIGINT stop it.\n"},
	{"cell", mc_cell_main, "run one cell: ingress, routes, hot state, write-log shipper",
	 "usage: metrocell cell -c cell.json\n"
	 "  -c, --config FILE   bootstrap config (docs/config.md)\n"
	 "Prints \"cell NAME ready ...\" on stdout once listening; SIGTERM/SIGINT stop it.\n"},
	{"ctl", mc_ctl_main, "operator CLI against the region: status, push, rollout, rotate-key",
	 "usage: metrocell ctl status [--region HOST:PORT] [--json]\n"
	 "       metrocell ctl push FILE [--region HOST:PORT] [--wait [--timeout S]]\n"
	 "       metrocell ctl rollout FILE --stages lax,sfo+sea [--bake 10s]\n"
	 "       metrocell ctl rollout status|abort\n"
	 "       metrocell ctl rotate-key --kind auth|ticket [--overlap 1h]\n"
	 "       metrocell ctl rotate-key status\n"
	 "The region defaults to $METROCELL_REGION, else 127.0.0.1:7080 (docs/operations.md).\n"},
	{"link", mc_testbed_link_main, "TCP relay emulating a WAN link (delay, jitter, cut/restore)",
	 "usage: metrocell link --listen HOST:PORT --to HOST:PORT --delay MS [--jitter MS]\n"
	 "                      [--admin HOST:PORT] [--bandwidth-kbps N] [--name NAME]\n"
	 "Admin API: GET /status, POST /cut, POST /restore, POST /delay?ms=N&jitter=N\n"
	 "(docs/link.md).\n"},
	{"sample-worker", mc_testbed_sample_worker_main, "sample application worker (HTTP)",
	 "usage: metrocell sample-worker --listen HOST:PORT [--name NAME] [--work-ms N]\n"
	 "                               [--body-bytes N]\n"},
	{"sample-origin", mc_testbed_sample_origin_main, "sample origin with Cache-Control (HTTP)",
	 "usage: metrocell sample-origin --listen HOST:PORT [--max-age S] [--body-bytes N]\n"},
	{"demo", mc_bench_demo_main, "region + cells lax and sfo + workers + links + load + report",
	 "usage: metrocell demo [--quick] [--out DIR] [--requests N] [--concurrency N]\n"
	 "                      [--work-ms N] [--value-bytes N]\n"
	 "  --quick           a short run (under 30 s): 1,500 requests per cell\n"
	 "  --out DIR         where report.json and logs go (default: a new temporary directory)\n"
	 "  --requests N      requests per cell (default 20,000)\n"
	 "  --concurrency N   requests in flight per cell (default 16)\n"
	 "  --work-ms N       sample workers' work time per request (default 1)\n"
	 "  --value-bytes N   size of the values written (16..900, default 64)\n"},
};

static void usage(FILE *f)
{
	fprintf(f, "metrocell %s: a micro-region runtime\n\n"
		   "usage: metrocell SUBCOMMAND [ARGS]\n"
		   "       metrocell help SUBCOMMAND | --help | --version\n\nsubcommands:\n",
		MC_VERSION);
	for (size_t i = 0; i < MC_ARRAY_LEN(subcommands); i++)
		fprintf(f, "  %-14s %s\n", subcommands[i].name, subcommands[i].summary);
}

static const subcommand *find(const char *name)
{
	for (size_t i = 0; i < MC_ARRAY_LEN(subcommands); i++)
		if (strcmp(subcommands[i].name, name) == 0)
			return &subcommands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
		printf("metrocell %s\n", MC_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0) {
		if (argc < 3) {
			usage(stdout);
			return 0;
		}
		const subcommand *sc = find(argv[2]);
		if (!sc) {
			fprintf(stderr, "metrocell: unknown subcommand \"%s\"\n", argv[2]);
			return 2;
		}
		printf("metrocell %s: %s\n%s", sc->name, sc->summary, sc->usage);
		return 0;
	}
	const subcommand *sc = find(cmd);
	if (!sc) {
		fprintf(stderr, "metrocell: unknown subcommand \"%s\" (try metrocell --help)\n", cmd);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("metrocell %s: %s\n%s", sc->name, sc->summary, sc->usage);
			return 0;
		}
	}
	return sc->main(argc - 1, argv + 1);
}
