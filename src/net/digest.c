/* SHA-256 and random bytes through OpenSSL (src/net/digest.h). */
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/common.h"
#include "net/digest.h"

int mc_net_sha256_hex(const void *data, size_t len, char *hex)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		hex[0] = '\0';
		return MC_EPROTO;
	}
	static const char digits[] = "0123456789abcdef";
	for (unsigned i = 0; i < mdlen; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[2 * mdlen] = '\0';
	return 0;
}

int mc_net_random(void *buf, size_t n)
{
	if (n > 0 && RAND_bytes(buf, (int)n) != 1)
		return MC_EPROTO;
	return 0;
}
