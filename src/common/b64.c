/* Base64 (RFC 4648, standard alphabet, padded) and a UTF-8 validity check, for
 * carrying arbitrary KV values in JSON documents. */
#include <string.h>

#include "common/common.h"

static const char ALPHA[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void mc_base64_encode(mc_buf *out, const void *p, size_t n)
{
	const uint8_t *s = p;
	char q[4];
	mc_buf_reserve(out, (n + 2) / 3 * 4);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)s[i + 1] << 8;
		if (i + 2 < n)
			v |= s[i + 2];
		q[0] = ALPHA[(v >> 18) & 63];
		q[1] = ALPHA[(v >> 12) & 63];
		q[2] = i + 1 < n ? ALPHA[(v >> 6) & 63] : '=';
		q[3] = i + 2 < n ? ALPHA[v & 63] : '=';
		mc_buf_append(out, q, 4);
	}
}

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int mc_base64_decode(mc_buf *out, const char *s, size_t n)
{
	if (n % 4)
		return MC_EINVAL;
	mc_buf_reserve(out, n / 4 * 3);
	for (size_t i = 0; i < n; i += 4) {
		int pad = 0, v[4];
		for (int k = 0; k < 4; k++) {
			if (s[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad || (v[k] = b64val(s[i + k])) < 0)
				return MC_EINVAL;
		}
		uint32_t x = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) |
			     ((uint32_t)v[2] << 6) | (uint32_t)v[3];
		uint8_t b[3] = {(uint8_t)(x >> 16), (uint8_t)(x >> 8), (uint8_t)x};
		mc_buf_append(out, b, (size_t)(3 - pad));
	}
	return 0;
}

int mc_utf8_valid(const void *p, size_t n)
{
	const uint8_t *s = p;
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		size_t len;
		uint32_t cp;
		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			len = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (n - i < len)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

void mc_buf_append_json_value(mc_buf *b, const char *v, size_t n)
{
	if (mc_utf8_valid(v, n)) {
		mc_buf_append_str(b, ",\"value\":");
		mc_buf_append_json(b, v, n);
	} else {
		mc_buf_append_str(b, ",\"value_base64\":\"");
		mc_base64_encode(b, v, n);
		mc_buf_append_str(b, "\"");
	}
}
