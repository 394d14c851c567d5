/* Private declarations shared by the files of src/config/: the JSON position
 * index that turns a JSON path into the line:column where it starts in the
 * source text (jansson keeps no positions), used only to locate errors. */
#ifndef MC_CONFIG_INT_H
#define MC_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

/* One step of a JSON path: an object member (key != NULL, a NUL-terminated,
 * decoded key) or an array element (key == NULL, index). */
typedef struct mc_jseg {
	const char *key;
	size_t index;
} mc_jseg;

/* A 1-based position in the text. col counts UTF-8 code points like jansson
 * does, so our positions and jansson's agree. */
typedef struct mc_jpos {
	unsigned line;
	unsigned col;
} mc_jpos;

/* The line:col of byte offset off (clamped to len) in text. */
mc_jpos mc_config_jpos_at(const char *text, size_t len, size_t off);

/* Finds where the value at path (n segments; n == 0 is the root value) starts
 * in text, or, when want_key is set and the last segment is a member, where
 * that member's key string starts. Keys in the text may use escapes. Pure; the
 * text need not be NUL terminated and may be invalid JSON (the search stops).
 * Returns 0 and *out, or MC_ENOTFOUND. */
int mc_config_jpos_locate(const char *text, size_t len, const mc_jseg *path, size_t n,
			  bool want_key, mc_jpos *out);

/* For jansson's duplicate-key error, which stops with the byte offset off just
 * past the repeated key: finds the member key whose string ends at off. Writes
 * its start to *pos, the enclosing object's path ("(root)", "listen",
 * "routes[2]") to path, and the key to key (keys decoded from their JSON
 * escapes; both NUL terminated, truncated to their caps).
 * Returns 0, or MC_ENOTFOUND (also when nested deeper than 64 levels). */
int mc_config_jpos_key_ending_at(const char *text, size_t len, size_t off, mc_jpos *pos, char *path,
				 size_t pathcap, char *key, size_t keycap);

#endif
