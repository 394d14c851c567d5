/* libFuzzer driver for the bootstrap config parser: any bytes, parsed as a cell
 * and as a region config, must give either a config or one positioned error
 * line, never a crash or a leak; an accepted config must be internally
 * consistent (routes reference existing pools). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[MC_CONFIG_ERR_MAX];
	mc_cell_conf *c = NULL;
	int rc = mc_cell_conf_parse("fuzz.json", (const char *)data, size, &c, err, sizeof err);
	if (rc == 0) {
		if (!c || c->nroutes == 0)
			abort();
		for (size_t i = 0; i < c->nroutes; i++)
			if (c->routes[i].kind == MC_ROUTE_PROXY && c->routes[i].pool >= c->npools)
				abort();
		mc_cell_conf_free(c);
	} else if (c || strncmp(err, "fuzz.json", 9) != 0 || strchr(err, '\n')) {
		abort();
	}
	mc_region_conf *g = NULL;
	rc = mc_region_conf_parse("fuzz.json", (const char *)data, size, &g, err, sizeof err);
	if (rc == 0)
		mc_region_conf_free(g);
	else if (g || strncmp(err, "fuzz.json", 9) != 0 || strchr(err, '\n'))
		abort();
	return 0;
}
