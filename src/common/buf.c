/* Growable byte buffer used for frames, responses and messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

void mc_buf_init(mc_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void mc_buf_fini(mc_buf *b)
{
	free(b->data);
	mc_buf_init(b);
}

void mc_buf_grow(mc_buf *b, size_t extra)
{
	MC_ASSERT(b->len + extra >= b->len);
	size_t need = b->len + extra + 1; /* room for a NUL terminator */
	if (need <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	b->data = mc_realloc(b->data, cap);
	b->cap = cap;
}

void mc_buf_append_str(mc_buf *b, const char *s)
{
	mc_buf_append(b, s, strlen(s));
}

void mc_buf_printf(mc_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char small[256];
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	MC_ASSERT(n >= 0);
	if ((size_t)n < sizeof small) {
		mc_buf_append(b, small, (size_t)n);
		return;
	}
	mc_buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void mc_buf_consume(mc_buf *b, size_t n)
{
	MC_ASSERT(n <= b->len);
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	if (b->data)
		b->data[b->len] = '\0';
}

void mc_buf_append_json(mc_buf *b, const char *s, size_t n)
{
	mc_buf_reserve(b, n + 2);
	mc_buf_append(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
			continue;
		mc_buf_append(b, s + run, i - run);
		if (c == '"' || c == '\\')
			mc_buf_printf(b, "\\%c", c);
		else if (c == '\n')
			mc_buf_append_str(b, "\\n");
		else
			mc_buf_printf(b, "\\u%04x", c);
		run = i + 1;
	}
	mc_buf_append(b, s + run, n - run);
	mc_buf_append(b, "\"", 1);
}
