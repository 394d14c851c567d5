/* Digests and randomness from OpenSSL for the rest of Metrocell (only src/net
 * includes OpenSSL): SHA-256 of config documents, random key material. */
#ifndef MC_NET_DIGEST_H
#define MC_NET_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define MC_SHA256_HEX_LEN 64

/* Writes the SHA-256 of data[0..len) as 64 lower-case hex digits and a NUL
 * into hex (at least MC_SHA256_HEX_LEN + 1 bytes). Returns 0 or MC_EPROTO. */
int mc_net_sha256_hex(const void *data, size_t len, char *hex);
/* Fills buf with n bytes from OpenSSL's CSPRNG. Returns 0 or MC_EPROTO. */
int mc_net_random(void *buf, size_t n);

#endif
