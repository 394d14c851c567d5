/* Small response helpers shared by the cell, the region and the samples: JSON
 * error bodies and percent-decoding of path segments. */
#include <stdio.h>
#include <string.h>

#include "http/http.h"

#define MAX_EXTRA_HEADERS 32

int mc_http_respond_error(mc_http_exchange *ex, int status, const mc_http_header *headers,
			  size_t nheaders, const char *code, const char *fmt, ...)
{
	mc_buf body;
	mc_buf_init(&body);
	va_list ap;
	va_start(ap, fmt);
	mc_http_error_bodyv(&body, code, fmt, ap);
	va_end(ap);

	mc_http_header all[MAX_EXTRA_HEADERS + 1];
	size_t n = MC_MIN(nheaders, (size_t)MAX_EXTRA_HEADERS);
	if (n)
		memcpy(all, headers, n * sizeof *all);
	all[n++] = (mc_http_header){"Content-Type", 12, "application/json", 16};
	int rc = mc_http_respond(ex, status, all, n, body.data, body.len);
	mc_buf_fini(&body);
	return rc;
}

int mc_http_respond_metrics(mc_http_exchange *ex, const mc_metrics *m)
{
	mc_buf b;
	mc_buf_init(&b);
	mc_metrics_render(m, &b);
	mc_http_header ct = {"Content-Type", 12, "text/plain; version=0.0.4", 25};
	int rc = mc_http_respond(ex, 200, &ct, 1, b.data, b.len);
	mc_buf_fini(&b);
	return rc;
}

void mc_http_error_bodyv(mc_buf *out, const char *code, const char *fmt, va_list ap)
{
	char msg[1024];
	vsnprintf(msg, sizeof msg, fmt, ap);
	mc_http_error_body(out, code, msg);
}

void mc_http_error_body(mc_buf *out, const char *code, const char *message)
{
	mc_buf_append_str(out, "{\"error\":");
	mc_buf_append_json(out, code, strlen(code));
	mc_buf_append_str(out, ",\"message\":");
	mc_buf_append_json(out, message, strlen(message));
	mc_buf_append_str(out, "}\n");
}

int mc_http_percent_decode(const char *s, size_t n, mc_buf *out)
{
	mc_buf_reset(out);
	mc_buf_reserve(out, n);
	/* decoded in place into the reserved room: it never grows */
	char *o = out->data;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			int hi = i + 2 < n ? mc_hexval(s[i + 1]) : -1;
			int lo = i + 2 < n ? mc_hexval(s[i + 2]) : -1;
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				*o = '\0';
				return MC_EINVAL;
			}
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		*o++ = c;
		out->len++;
	}
	*o = '\0';
	return 0;
}
