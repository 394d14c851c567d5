/* Pieces shared by the HTTP/1.1 server and client: header lookup, reason
 * phrases, the message head accumulator filled from llhttp callbacks, and small
 * formatting helpers. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "http/http_int.h"

static int lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int mc_http_token_eq(const char *a, size_t n, const char *b)
{
	size_t i;
	for (i = 0; i < n; i++) {
		if (b[i] == '\0' || lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	}
	return b[i] == '\0';
}

const char *mc_http_header_find(const mc_http_header *h, size_t n, const char *name, size_t *len)
{
	for (size_t i = 0; i < n; i++) {
		if (mc_http_token_eq(h[i].name, h[i].name_len, name)) {
			if (len)
				*len = h[i].value_len;
			return h[i].value;
		}
	}
	if (len)
		*len = 0;
	return NULL;
}

static const struct {
	int status;
	const char *text;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {422, "Unprocessable Content"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *mc_http_reason(int status)
{
	for (size_t i = 0; i < MC_ARRAY_LEN(reasons); i++) {
		if (reasons[i].status == status)
			return reasons[i].text;
	}
	if (status >= 100 && status < 200)
		return "Informational";
	if (status >= 200 && status < 300)
		return "Success";
	if (status >= 300 && status < 400)
		return "Redirection";
	if (status >= 400 && status < 500)
		return "Client Error";
	return "Server Error";
}

void mc_http_buf_u64(mc_buf *b, uint64_t v)
{
	char tmp[20];
	mc_buf_append(b, tmp, (size_t)(mc_http_put_u64(tmp, v) - tmp));
}

int mc_http_token_valid(const char *s, size_t n)
{
	/* RFC 9110 section 5.6.2: token = 1*tchar */
	static const char extra[] = "!#$%&'*+-.^_`|~";
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
			continue;
		if (ch == 0 || !strchr(extra, ch))
			return 0;
	}
	return 1;
}

/* The system calls themselves: glibc's send() and recv() are thread
 * cancellation points, and in a process with more than one thread (the store's
 * writer) each call switches asynchronous cancellation on and off around the
 * call. Nothing in Metrocell cancels threads. */
ssize_t mc_http_sys_send(int fd, const void *p, size_t n)
{
	return syscall(SYS_sendto, fd, p, n, MSG_NOSIGNAL, NULL, 0);
}

ssize_t mc_http_sys_recv(int fd, void *p, size_t n)
{
	return syscall(SYS_recvfrom, fd, p, n, 0, NULL, NULL);
}

int mc_http_try_send(uv_tcp_t *t, const char *p, size_t n)
{
	if (t->write_queue_size != 0 || uv_is_closing((uv_handle_t *)t))
		return UV_EAGAIN;
	/* uv_fileno() without the call (libuv's Unix stream keeps it here) */
	int fd = t->io_watcher.fd;
	if (fd < 0)
		return UV_EBADF;
	if (n > INT_MAX)
		n = INT_MAX;
	ssize_t w;
	do
		w = mc_http_sys_send(fd, p, n);
	while (w < 0 && errno == EINTR);
	if (w >= 0)
		return (int)w;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
		return UV_EAGAIN;
	return -errno; /* libuv's error codes are negated errno values on Unix */
}

char *mc_http_put_u64(char *p, uint64_t v)
{
	/* a few per response: digits counted first, then written backwards in
	 * place, two at a time (no temporary, no memcpy call) */
	static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
				       "25262728293031323334353637383940414243444546474849"
				       "50515253545556575859606162636465666768697071727374"
				       "75767778798081828384858687888990919293949596979899";
	size_t n = 1;
	for (uint64_t t = v; t >= 10; t /= 10)
		n++;
	char *e = p + n;
	while (v >= 100) {
		unsigned r = (unsigned)(v % 100);
		v /= 100;
		*--e = pairs[2 * r + 1];
		*--e = pairs[2 * r];
	}
	if (v >= 10) {
		*--e = pairs[2 * v + 1];
		*--e = pairs[2 * v];
	} else {
		*--e = (char)('0' + v);
	}
	return p + n;
}

/* Eight bytes at a time: nonzero when one byte of v is zero (exact as a yes/no
 * answer), so the checks below cost a few instructions per word of a header. */
static inline uint64_t has_zero(uint64_t v)
{
	return (v - 0x0101010101010101ull) & ~v & 0x8080808080808080ull;
}

static inline uint64_t has_byte(uint64_t v, unsigned char b)
{
	return has_zero(v ^ (0x0101010101010101ull * b));
}

static inline int word_unsafe(const char *p, int colon)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return (has_zero(v) | has_byte(v, '\r') | has_byte(v, '\n') |
		(colon ? has_byte(v, ':') : 0)) != 0;
}

/* 1 when s[0..n) has none of CR, LF, NUL and, with colon, ':'. From 8 bytes on,
 * the last word overlaps the one before instead of a byte loop. */
static int bytes_safe(const char *s, size_t n, int colon)
{
	if (n >= 8) {
		for (size_t i = 0; i + 8 <= n; i += 8)
			if (word_unsafe(s + i, colon))
				return 0;
		return !word_unsafe(s + n - 8, colon);
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0' || (colon && s[i] == ':'))
			return 0;
	}
	return 1;
}

int mc_http_field_safe(const char *s, size_t n)
{
	return bytes_safe(s, n, 0);
}

int mc_http_name_safe(const char *s, size_t n)
{
	return bytes_safe(s, n, 1);
}

/* ---- head accumulator ------------------------------------------------------------ */

void mc_http_head_init(mc_http_head *h, size_t max_bytes, size_t max_headers)
{
	memset(h, 0, sizeof *h);
	mc_buf_init(&h->arena);
	h->max_bytes = max_bytes;
	h->max_headers = max_headers;
}

void mc_http_head_fini(mc_http_head *h)
{
	mc_buf_fini(&h->arena);
	free(h->spans);
	free(h->hdrs);
	h->spans = NULL;
	h->hdrs = NULL;
	h->nspans = h->spans_cap = h->hdrs_cap = 0;
}

void mc_http_head_reset(mc_http_head *h)
{
	if (h->arena.cap > MC_HTTP_KEEP_BUF)
		mc_buf_fini(&h->arena);
	mc_buf_reset(&h->arena);
	h->nspans = 0;
	h->bytes = 0;
	h->url_off = h->url_len = 0;
	h->path_off = h->path_len = 0;
	h->field_open = h->value_open = h->url_open = h->done = 0;
	h->over = MC_HTTP_HEAD_OK;
}

/* Counts n more head bytes; -1 past the limit. */
static int head_count(mc_http_head *h, size_t n)
{
	h->bytes += n;
	if (h->bytes > h->max_bytes) {
		h->over = MC_HTTP_HEAD_TOO_BIG;
		return -1;
	}
	return 0;
}

int mc_http_head_url(mc_http_head *h, const char *at, size_t n)
{
	if (head_count(h, n) < 0)
		return -1;
	if (!h->url_open) {
		/* the target is always the first thing in the arena */
		MC_ASSERT(h->arena.len == 0);
		h->url_open = 1;
	}
	mc_buf_append(&h->arena, at, n);
	return 0;
}

/* Closes the target span (NUL terminated) before the first header is stored. */
static void head_close_url(mc_http_head *h)
{
	if (h->url_open == 1) {
		h->url_len = (uint32_t)h->arena.len;
		mc_buf_append(&h->arena, "", 1);
		h->url_open = 2;
	} else if (h->url_open == 0) {
		/* responses have no target: keep an empty string at offset 0 */
		mc_buf_append(&h->arena, "", 1);
		h->url_open = 2;
	}
}

int mc_http_head_field(mc_http_head *h, const char *at, size_t n)
{
	if (head_count(h, n) < 0)
		return -1;
	if (h->done)
		return 0;
	if (!h->field_open) {
		if (h->nspans >= h->max_headers) {
			h->over = MC_HTTP_HEAD_TOO_MANY;
			return -1;
		}
		head_close_url(h);
		if (h->nspans == h->spans_cap) {
			size_t cap = h->spans_cap ? h->spans_cap * 2 : 16;
			h->spans = mc_realloc(h->spans, cap * sizeof *h->spans);
			h->spans_cap = cap;
		}
		mc_http_hspan *s = &h->spans[h->nspans++];
		memset(s, 0, sizeof *s);
		s->name_off = (uint32_t)h->arena.len;
		h->field_open = 1;
	}
	mc_buf_append(&h->arena, at, n);
	return 0;
}

int mc_http_head_field_done(mc_http_head *h)
{
	if (h->done || !h->field_open)
		return 0;
	mc_http_hspan *s = &h->spans[h->nspans - 1];
	s->name_len = (uint32_t)(h->arena.len - s->name_off);
	mc_buf_append(&h->arena, "", 1);
	h->field_open = 0;
	return 0;
}

int mc_http_head_value(mc_http_head *h, const char *at, size_t n)
{
	if (head_count(h, n) < 0)
		return -1;
	if (h->done || h->nspans == 0)
		return 0;
	mc_http_hspan *s = &h->spans[h->nspans - 1];
	if (!h->value_open) {
		s->value_off = (uint32_t)h->arena.len;
		h->value_open = 1;
	}
	mc_buf_append(&h->arena, at, n);
	return 0;
}

int mc_http_head_value_done(mc_http_head *h)
{
	if (h->done || h->nspans == 0)
		return 0;
	mc_http_hspan *s = &h->spans[h->nspans - 1];
	if (!h->value_open) /* empty value: no data callback happened */
		s->value_off = (uint32_t)h->arena.len;
	size_t len = h->arena.len - s->value_off;
	const char *v = h->arena.data + s->value_off;
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	h->arena.len = s->value_off + len;
	s->value_len = (uint32_t)len;
	mc_buf_append(&h->arena, "", 1);
	h->value_open = 0;
	return 0;
}

/* Path part of a target: origin-form up to '?', or the path of an absolute-form
 * target ("http://host/p?q" gives "/p"). Sets *off and *len within target. */
static void target_path(const char *t, size_t n, size_t *off, size_t *len)
{
	size_t start = 0;
	if (n > 0 && t[0] != '/' && t[0] != '*') {
		const char *sep = memchr(t, ':', n);
		if (sep && (size_t)(sep - t) + 3 <= n && sep[1] == '/' && sep[2] == '/') {
			size_t i = (size_t)(sep - t) + 3;
			while (i < n && t[i] != '/' && t[i] != '?')
				i++;
			start = i;
		}
	}
	size_t end = start;
	while (end < n && t[end] != '?')
		end++;
	*off = start;
	*len = end - start;
}

void mc_http_head_finish(mc_http_head *h, int with_path)
{
	head_close_url(h);
	if (h->field_open)
		mc_http_head_field_done(h);
	if (h->value_open)
		mc_http_head_value_done(h);
	if (with_path) {
		size_t off, len;
		target_path(h->arena.data, h->url_len, &off, &len);
		h->path_off = (uint32_t)h->arena.len;
		if (len == 0) {
			mc_buf_append(&h->arena, "/", 1);
			h->path_len = 1;
		} else {
			/* reserve first: the copy comes from the arena itself */
			mc_buf_reserve(&h->arena, len + 1);
			mc_buf_append(&h->arena, h->arena.data + off, len);
			h->path_len = (uint32_t)len;
		}
		mc_buf_append(&h->arena, "", 1);
	}
	if (h->nspans > h->hdrs_cap) {
		free(h->hdrs);
		h->hdrs_cap = h->spans_cap;
		h->hdrs = mc_alloc(h->hdrs_cap * sizeof *h->hdrs);
	}
	for (size_t i = 0; i < h->nspans; i++) {
		const mc_http_hspan *s = &h->spans[i];
		h->hdrs[i].name = h->arena.data + s->name_off;
		h->hdrs[i].name_len = s->name_len;
		h->hdrs[i].value = h->arena.data + s->value_off;
		h->hdrs[i].value_len = s->value_len;
	}
	h->done = 1;
}
