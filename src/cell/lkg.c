/* The cell's last-known-good fleet config: data_dir/config/lkg.json (the
 * document exactly as the region sent it) and lkg.json.sha256 beside it, one
 * line per document it vouches for:
 *   sha256=<64 hex> version=<n> accepted_ms=<n>
 * The checksum file lists the new document and the previous one, and is
 * renamed into place before the document: whichever of the two renames a crash
 * interrupts, the pair on disk checks, so a cell always boots from a document
 * it applied (docs/operations.md "Last-known-good"). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cell/cell_int.h"
#include "net/digest.h"

#define LKG_NAME "lkg.json"
#define SUM_NAME "lkg.json.sha256"
#define SUM_MAX 4096
#define SUM_ENTRIES 2

/* Reads dir/name whole, at most max bytes. */
static int read_small(const char *dir, const char *name, size_t max, char **out, size_t *len)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return mc_file_read(path, max, out, len);
}

/* Parses up to SUM_ENTRIES lines of the checksum file into e; returns how many. */
static size_t sums_parse(const char *text, mc_lkg_meta *e)
{
	size_t n = 0;
	const char *p = text;
	while (p && *p && n < SUM_ENTRIES) {
		char hex[65];
		unsigned long long ver, acc;
		if (sscanf(p, "sha256=%64[0-9a-f] version=%llu accepted_ms=%llu", hex, &ver,
			   &acc) == 3 &&
		    strlen(hex) == 64) {
			memcpy(e[n].sha256, hex, 65);
			e[n].version = ver;
			e[n].accepted_ms = acc;
			n++;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return n;
}

int mc_lkg_write(const char *dir, const char *doc, size_t len, const mc_lkg_meta *meta)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -errno;
	/* the entry of the document in place now stays listed until it is replaced */
	mc_lkg_meta prev[SUM_ENTRIES];
	size_t nprev = 0;
	char *old = NULL, *olddoc = NULL;
	size_t oldlen, olddoclen;
	char oldsha[65] = "";
	if (read_small(dir, SUM_NAME, SUM_MAX, &old, &oldlen) == 0 &&
	    read_small(dir, LKG_NAME, MC_FLEET_MAX_BYTES, &olddoc, &olddoclen) == 0 &&
	    mc_net_sha256_hex(olddoc, olddoclen, oldsha) == 0) {
		mc_lkg_meta e[SUM_ENTRIES];
		size_t n = sums_parse(old, e);
		for (size_t i = 0; i < n; i++)
			if (strcmp(e[i].sha256, oldsha) == 0 && strcmp(oldsha, meta->sha256) != 0)
				prev[nprev++] = e[i];
	}
	free(old);
	free(olddoc);
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_printf(&b, "sha256=%s version=%" PRIu64 " accepted_ms=%" PRIu64 "\n", meta->sha256,
		      meta->version, meta->accepted_ms);
	for (size_t i = 0; i < nprev && i < 1; i++)
		mc_buf_printf(&b, "sha256=%s version=%" PRIu64 " accepted_ms=%" PRIu64 "\n",
			      prev[i].sha256, prev[i].version, prev[i].accepted_ms);
	int rc = mc_file_write_atomic(dir, SUM_NAME, b.data, b.len, 0);
	mc_buf_fini(&b);
	if (rc == 0)
		rc = mc_file_write_atomic(dir, LKG_NAME, doc, len, 1);
	return rc;
}

int mc_lkg_read(const char *dir, char **doc, size_t *len, mc_lkg_meta *meta, char *err,
		size_t errcap)
{
	char *sums = NULL;
	size_t sumlen;
	*doc = NULL;
	*len = 0;
	int rc = read_small(dir, LKG_NAME, MC_FLEET_MAX_BYTES, doc, len);
	if (rc < 0) {
		snprintf(err, errcap, "%s/%s: %s", dir, LKG_NAME,
			 rc == MC_ENOTFOUND ? "no last-known-good config"
			 : rc == MC_ETOOBIG ? "larger than the fleet config limit"
					    : mc_strerror(rc));
		return rc;
	}
	char sha[65];
	if ((rc = mc_net_sha256_hex(*doc, *len, sha)) < 0) {
		snprintf(err, errcap, "%s/%s: cannot hash: %s", dir, LKG_NAME, mc_strerror(rc));
		goto fail;
	}
	rc = read_small(dir, SUM_NAME, SUM_MAX, &sums, &sumlen);
	if (rc < 0) {
		snprintf(err, errcap, "%s/%s: %s (the document is not trusted without it)", dir,
			 SUM_NAME, rc == MC_ENOTFOUND ? "missing" : mc_strerror(rc));
		rc = MC_ECRC;
		goto fail;
	}
	mc_lkg_meta e[SUM_ENTRIES];
	size_t n = sums_parse(sums, e);
	free(sums);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(e[i].sha256, sha) == 0) {
			*meta = e[i];
			return 0;
		}
	}
	snprintf(err, errcap, "%s/%s: checksum mismatch (sha256 %s is not listed in %s)", dir,
		 LKG_NAME, sha, SUM_NAME);
	rc = MC_ECRC;
fail:
	free(*doc);
	*doc = NULL;
	*len = 0;
	return rc;
}
