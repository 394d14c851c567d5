/* The observability buffer: JSON-line events in segment files named by their
 * first sequence number (<20 digits>.jsonl) plus a small meta file (stream id,
 * acknowledged seq). The cap covers every file; when an event does not fit, the
 * oldest segments go first (unacknowledged events in them count as dropped).
 * docs/operations.md "Event buffer" describes the behaviour. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "obs/evbuf.h"

#define COMP "events"
/* Room kept for the meta file inside the cap. */
#define META_RESERVE 256u
#define META_NAME "meta"
#define SEG_SUFFIX ".jsonl"

typedef struct segment {
	uint64_t first_seq, last_seq; /* last_seq 0: empty */
	uint64_t bytes;
} segment;

struct mc_evbuf {
	char *dir;
	char *source;
	uint64_t max_bytes;
	uint64_t seg_max;
	segment *segs; /* oldest first; the last one is the active segment */
	size_t nsegs, capsegs;
	int fd; /* the active segment, -1 when not open */
	uint64_t stream;
	uint64_t acked;
	uint64_t last_seq;
	uint64_t meta_bytes;
	uint64_t emitted, dropped, write_errors;
	int warned_write;
	/* Every public call after open holds it: the cell's data-plane threads emit
	 * events while its main thread drains and acknowledges them. */
	pthread_mutex_t lock;
};

static void errf(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t cap, const char *fmt, ...)
{
	if (!err || !cap)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

static int mkdir_p(const char *dir)
{
	char p[4096];
	if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
		return -ENAMETOOLONG;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void seg_path(const mc_evbuf *eb, uint64_t first, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%020" PRIu64 SEG_SUFFIX, eb->dir, first);
}

int mc_evbuf_line_seq(const char *line, size_t len, uint64_t *seq)
{
	static const char pre[] = "{\"seq\":";
	size_t pl = sizeof pre - 1, i = pl;
	if (len < pl + 2 || memcmp(line, pre, pl) != 0)
		return MC_EINVAL;
	while (i < len && line[i] >= '0' && line[i] <= '9' && i - pl < 20)
		i++;
	if (i == pl || i >= len || (line[i] != ',' && line[i] != '}'))
		return MC_EINVAL;
	return mc_parse_u64(line + pl, i - pl, UINT64_MAX, seq) == 0 && *seq > 0 ? 0 : MC_EINVAL;
}

/* ---- meta ----------------------------------------------------------------------------- */

static int meta_write(mc_evbuf *eb)
{
	char path[4200], tmp[4220], text[128];
	snprintf(path, sizeof path, "%s/" META_NAME, eb->dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int n = snprintf(text, sizeof text, "stream %016" PRIx64 "\nacked %" PRIu64 "\n",
			 eb->stream, eb->acked);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int rc = 0;
	if (write(fd, text, (size_t)n) != n)
		rc = errno ? -errno : -EIO;
	close(fd);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		return rc;
	}
	eb->meta_bytes = (uint64_t)n;
	return 0;
}

/* Reads the meta file; a missing or unreadable one leaves *found 0. */
static void meta_read(mc_evbuf *eb, int *found)
{
	char path[4200], text[128];
	*found = 0;
	snprintf(path, sizeof path, "%s/" META_NAME, eb->dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	uint64_t stream, acked;
	if (sscanf(text, "stream %" SCNx64 "\nacked %" SCNu64, &stream, &acked) == 2) {
		eb->stream = stream;
		eb->acked = acked;
		eb->meta_bytes = n;
		*found = 1;
	}
}

static uint64_t random_u64(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
		v = mc_wall_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() ^ mc_now_ns();
	return v ? v : 1;
}

/* ---- segments ------------------------------------------------------------------------------ */

static int seg_cmp(const void *a, const void *b)
{
	const segment *x = a, *y = b;
	return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

static void seg_push(mc_evbuf *eb, uint64_t first)
{
	if (eb->nsegs == eb->capsegs) {
		eb->capsegs = eb->capsegs ? eb->capsegs * 2 : 8;
		eb->segs = mc_realloc(eb->segs, eb->capsegs * sizeof *eb->segs);
	}
	eb->segs[eb->nsegs++] = (segment){.first_seq = first};
}

/* Bytes counted against the cap: the segments plus the room kept for the meta
 * file (and its temporary copy while it is rewritten). */
static uint64_t total_bytes(const mc_evbuf *eb)
{
	uint64_t t = META_RESERVE;
	for (size_t i = 0; i < eb->nsegs; i++)
		t += eb->segs[i].bytes;
	return t;
}

/* Finds the seq of the last complete line of a segment from its tail; for the
 * active segment (truncate != 0) also cuts a partial last line (a crash in the
 * middle of a write). */
static int seg_scan_tail(mc_evbuf *eb, segment *s, int truncate)
{
	char path[4200];
	seg_path(eb, s->first_seq, path, sizeof path);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	uint64_t size = (uint64_t)st.st_size;
	size_t want = (size_t)MC_MIN(size, (uint64_t)(2 * MC_EVBUF_LINE_MAX + 2));
	char *buf = mc_alloc(want + 1);
	ssize_t got = pread(fd, buf, want, (off_t)(size - want));
	if (got != (ssize_t)want) {
		free(buf);
		rc = got < 0 ? -errno : -EIO;
		goto out;
	}
	/* end of the last complete line */
	size_t end = want;
	while (end > 0 && buf[end - 1] != '\n')
		end--;
	if (end < want && truncate) {
		MC_WARN(COMP, "%s: dropping a partial last line (%zu bytes)", path, want - end);
		if (ftruncate(fd, (off_t)(size - (want - end))) != 0) {
			rc = -errno;
			free(buf);
			goto out;
		}
		size -= want - end;
	}
	s->bytes = size;
	s->last_seq = 0;
	if (end > 0) {
		size_t start = end - 1;
		while (start > 0 && buf[start - 1] != '\n')
			start--;
		uint64_t seq;
		if (mc_evbuf_line_seq(buf + start, end - 1 - start, &seq) == 0)
			s->last_seq = seq;
		else
			MC_WARN(COMP, "%s: the last line has no seq; ignoring it for numbering",
				path);
	}
	free(buf);
out:
	close(fd);
	return rc;
}

static int load_segments(mc_evbuf *eb, char *err, size_t errcap)
{
	DIR *d = opendir(eb->dir);
	if (!d) {
		int e = -errno;
		errf(err, errcap, "%s: %s", eb->dir, mc_strerror(e));
		return e;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		uint64_t first;
		if (n != 20 + strlen(SEG_SUFFIX) || strcmp(de->d_name + 20, SEG_SUFFIX) != 0 ||
		    mc_parse_u64(de->d_name, 20, UINT64_MAX, &first) != 0 || first == 0)
			continue;
		seg_push(eb, first);
	}
	closedir(d);
	if (eb->nsegs)
		qsort(eb->segs, eb->nsegs, sizeof *eb->segs, seg_cmp);
	for (size_t i = 0; i < eb->nsegs; i++) {
		int rc = seg_scan_tail(eb, &eb->segs[i], i + 1 == eb->nsegs);
		if (rc < 0) {
			errf(err, errcap, "%s: reading segment %020" PRIu64 ": %s", eb->dir,
			     eb->segs[i].first_seq, mc_strerror(rc));
			return rc;
		}
		if (eb->segs[i].last_seq > eb->last_seq)
			eb->last_seq = eb->segs[i].last_seq;
	}
	return 0;
}

/* Events held in s that were not acknowledged. Sequence numbers inside a segment
 * are consecutive where this buffer numbered them; a receiver's copy may have
 * gaps, so this is an upper bound there. */
static uint64_t seg_unacked(const mc_evbuf *eb, const segment *s)
{
	if (!s->last_seq || s->last_seq <= eb->acked)
		return 0;
	uint64_t from = MC_MAX(s->first_seq, eb->acked + 1);
	return s->last_seq - from + 1;
}

static void drop_oldest(mc_evbuf *eb)
{
	MC_ASSERT(eb->nsegs > 1);
	segment *s = &eb->segs[0];
	char path[4200];
	seg_path(eb, s->first_seq, path, sizeof path);
	uint64_t lost = seg_unacked(eb, s);
	if (unlink(path) != 0 && errno != ENOENT)
		MC_WARN(COMP, "%s: %s", path, strerror(errno));
	if (lost) {
		eb->dropped += lost;
		MC_WARN(COMP,
			"%s: cap of %" PRIu64 " bytes reached: dropped %" PRIu64
			" unacknowledged event(s) %" PRIu64 "..%" PRIu64,
			eb->dir, eb->max_bytes, lost, MC_MAX(s->first_seq, eb->acked + 1),
			s->last_seq);
	}
	memmove(eb->segs, eb->segs + 1, (eb->nsegs - 1) * sizeof *eb->segs);
	eb->nsegs--;
}

/* ---- open / close ------------------------------------------------------------------------ */

int mc_evbuf_open(mc_evbuf **out, const mc_evbuf_opts *o, char *err, size_t errcap)
{
	*out = NULL;
	if (!o || !o->dir || !*o->dir || o->max_bytes < MC_EVBUF_MIN_BYTES) {
		errf(err, errcap, "event buffer: a directory and max_bytes >= %u are required",
		     MC_EVBUF_MIN_BYTES);
		return MC_EINVAL;
	}
	int rc = mkdir_p(o->dir);
	if (rc < 0) {
		errf(err, errcap, "cannot create %s: %s", o->dir, mc_strerror(rc));
		return rc;
	}
	mc_evbuf *eb = mc_calloc(1, sizeof *eb);
	eb->dir = mc_strdup(o->dir);
	eb->source = o->source ? mc_strdup(o->source) : NULL;
	eb->max_bytes = o->max_bytes;
	eb->fd = -1;
	pthread_mutex_init(&eb->lock, NULL);
	/* at least four segments under the cap, and room for one maximal line each */
	eb->seg_max = MC_MIN((uint64_t)MC_EVBUF_SEGMENT_MAX, (o->max_bytes - META_RESERVE) / 4);
	MC_ASSERT(eb->seg_max >= MC_EVBUF_LINE_MAX + 1);
	int found;
	meta_read(eb, &found);
	if ((rc = load_segments(eb, err, errcap)) < 0)
		goto out;
	if (!found) {
		eb->stream = random_u64();
		eb->acked = 0;
	}
	if (eb->acked > eb->last_seq) {
		/* the newest events went with a lost segment: keep numbering after acked */
		eb->last_seq = eb->acked;
	}
	if ((rc = meta_write(eb)) < 0) {
		errf(err, errcap, "cannot write %s/" META_NAME ": %s", eb->dir, mc_strerror(rc));
		goto out;
	}
	/* Segments past the cap (the cap was lowered): oldest go first. */
	while (eb->nsegs > 1 && total_bytes(eb) > eb->max_bytes)
		drop_oldest(eb);
	*out = eb;
	eb = NULL;
out:
	mc_evbuf_close(eb);
	return rc;
}

void mc_evbuf_close(mc_evbuf *eb)
{
	if (!eb)
		return;
	if (eb->fd >= 0)
		close(eb->fd);
	free(eb->segs);
	free(eb->dir);
	free(eb->source);
	pthread_mutex_destroy(&eb->lock);
	free(eb);
}

/* ---- writing -------------------------------------------------------------------------------- */

/* Makes room for need bytes with seq as the next event: rotates the active
 * segment when it is full and deletes the oldest segments past the cap. */
static void make_room(mc_evbuf *eb, uint64_t seq, uint64_t need)
{
	segment *act = eb->nsegs ? &eb->segs[eb->nsegs - 1] : NULL;
	if (!act || (act->bytes > 0 && act->bytes + need > eb->seg_max)) {
		if (eb->fd >= 0) {
			close(eb->fd);
			eb->fd = -1;
		}
		seg_push(eb, seq);
	}
	while (eb->nsegs > 1 && total_bytes(eb) + need > eb->max_bytes)
		drop_oldest(eb);
}

static int write_line(mc_evbuf *eb, uint64_t seq, const char *line, size_t len)
{
	uint64_t need = (uint64_t)len + 1;
	make_room(eb, seq, need);
	segment *act = &eb->segs[eb->nsegs - 1];
	int rc = 0;
	if (eb->fd < 0) {
		char path[4200];
		seg_path(eb, act->first_seq, path, sizeof path);
		eb->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (eb->fd < 0) {
			rc = -errno;
			goto fail;
		}
	}
	char stackbuf[MC_EVBUF_LINE_MAX + 1];
	memcpy(stackbuf, line, len);
	stackbuf[len] = '\n';
	ssize_t w = write(eb->fd, stackbuf, len + 1);
	if (w != (ssize_t)(len + 1)) {
		rc = w < 0 ? -errno : -ENOSPC;
		if (w > 0 && ftruncate(eb->fd, (off_t)act->bytes) != 0)
			MC_WARN(COMP, "%s: cannot cut a partial line: %s", eb->dir,
				strerror(errno));
		goto fail;
	}
	act->bytes += need;
	act->last_seq = seq;
	eb->last_seq = seq;
	eb->warned_write = 0;
	return 0;
fail:
	eb->write_errors++;
	if (!eb->warned_write)
		MC_WARN(COMP, "%s: cannot write an event: %s (events are dropped until it works)",
			eb->dir, mc_strerror(rc));
	eb->warned_write = 1;
	if (act->bytes == 0 && eb->nsegs > 0 && act == &eb->segs[eb->nsegs - 1]) {
		/* do not keep an empty segment named after a seq that was not written */
		if (eb->fd >= 0) {
			close(eb->fd);
			eb->fd = -1;
		}
		char path[4200];
		seg_path(eb, act->first_seq, path, sizeof path);
		unlink(path);
		eb->nsegs--;
	}
	return rc;
}

static int mc_evbuf_append_unlocked(mc_evbuf *eb, uint64_t seq, const char *line, size_t len)
{
	uint64_t got;
	if (seq <= eb->last_seq || len > MC_EVBUF_LINE_MAX || len < 2 || line[len - 1] != '}' ||
	    mc_evbuf_line_seq(line, len, &got) != 0 || got != seq || memchr(line, '\n', len))
		return MC_EINVAL;
	int rc = write_line(eb, seq, line, len);
	if (rc == 0)
		eb->emitted++;
	return rc;
}

/* Appends member "name":value for one (spec, value) pair; returns 0 or -1 for a
 * bad spec (a programming error, logged). */
static int member(mc_buf *b, const char *spec, va_list *ap)
{
	if (!spec[0] || spec[1] != ':' || !spec[2])
		return -1;
	const char *name = spec + 2;
	mc_buf_append_str(b, ",");
	mc_buf_append_json(b, name, strlen(name));
	mc_buf_append_str(b, ":");
	switch (spec[0]) {
	case 's': {
		const char *s = va_arg(*ap, const char *);
		if (s)
			mc_buf_append_json(b, s, strnlen(s, MC_EVBUF_LINE_MAX));
		else
			mc_buf_append_str(b, "null");
		return 0;
	}
	case 'u':
		mc_buf_printf(b, "%" PRIu64, va_arg(*ap, uint64_t));
		return 0;
	case 'i':
		mc_buf_printf(b, "%" PRId64, va_arg(*ap, int64_t));
		return 0;
	case 'f': {
		double d = va_arg(*ap, double);
		if (d != d || d > 1e300 || d < -1e300)
			mc_buf_append_str(b, "null");
		else
			mc_buf_printf(b, "%.6g", d);
		return 0;
	}
	case 'b':
		mc_buf_append_str(b, va_arg(*ap, int) ? "true" : "false");
		return 0;
	default:
		return -1;
	}
}

static uint64_t mc_evbuf_emitv_unlocked(mc_evbuf *eb, const char *type, va_list ap)
{
	if (!eb)
		return 0;
	uint64_t seq = eb->last_seq + 1;
	mc_buf b;
	mc_buf_init(&b);
	mc_buf_printf(&b, "{\"seq\":%" PRIu64 ",\"ts_ms\":%" PRIu64, seq, mc_wall_ms());
	if (eb->source) {
		mc_buf_append_str(&b, ",\"cell\":");
		mc_buf_append_json(&b, eb->source, strlen(eb->source));
	}
	mc_buf_append_str(&b, ",\"type\":");
	mc_buf_append_json(&b, type, strnlen(type, 64));
	va_list aq;
	va_copy(aq, ap);
	const char *spec;
	int truncated = 0;
	/* room for ,"truncated":true} */
	const size_t limit = MC_EVBUF_LINE_MAX - 20;
	while ((spec = va_arg(aq, const char *))) {
		size_t before = b.len;
		if (member(&b, spec, &aq) < 0) {
			MC_ERROR(COMP, "event %s: bad member spec \"%s\"", type, spec);
			b.len = before;
			break;
		}
		if (b.len > limit) {
			b.len = before;
			truncated = 1;
		}
	}
	va_end(aq);
	mc_buf_append_str(&b, truncated ? ",\"truncated\":true}" : "}");
	int rc = write_line(eb, seq, b.data, b.len);
	mc_buf_fini(&b);
	if (rc < 0) {
		eb->dropped++;
		return 0;
	}
	eb->emitted++;
	return seq;
}

uint64_t mc_evbuf_emit(mc_evbuf *eb, const char *type, ...)
{
	va_list ap;
	va_start(ap, type);
	uint64_t seq = mc_evbuf_emitv(eb, type, ap);
	va_end(ap);
	return seq;
}

/* ---- reading and acknowledging ---------------------------------------------------------- */

static int mc_evbuf_read_unlocked(mc_evbuf *eb, uint64_t after, size_t max_n, size_t max_bytes,
		  int (*cb)(void *arg, uint64_t seq, const char *line, size_t len), void *arg)
{
	int delivered = 0;
	size_t bytes = 0;
	char *buf = NULL;
	int rc = 0;
	for (size_t i = 0; i < eb->nsegs && (size_t)delivered < max_n; i++) {
		segment *s = &eb->segs[i];
		if (s->bytes == 0 || s->last_seq <= after)
			continue;
		char path[4200];
		seg_path(eb, s->first_seq, path, sizeof path);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		buf = mc_realloc(buf, s->bytes + 1);
		ssize_t got = pread(fd, buf, s->bytes, 0);
		close(fd);
		if (got < 0) {
			rc = -errno;
			break;
		}
		size_t len = (size_t)got, pos = 0;
		while (pos < len && (size_t)delivered < max_n) {
			char *nl = memchr(buf + pos, '\n', len - pos);
			if (!nl)
				break; /* a line being written (cannot happen: one thread) */
			size_t ll = (size_t)(nl - (buf + pos));
			uint64_t seq;
			if (mc_evbuf_line_seq(buf + pos, ll, &seq) == 0 && seq > after) {
				if (delivered > 0 && bytes + ll > max_bytes)
					goto done;
				bytes += ll;
				delivered++;
				if (cb(arg, seq, buf + pos, ll))
					goto done;
			}
			pos += ll + 1;
		}
	}
done:
	free(buf);
	return rc < 0 ? rc : delivered;
}

static int mc_evbuf_ack_unlocked(mc_evbuf *eb, uint64_t seq)
{
	if (seq > eb->last_seq)
		seq = eb->last_seq;
	if (seq <= eb->acked)
		return 0;
	eb->acked = seq;
	return meta_write(eb);
}

static int mc_evbuf_set_stream_unlocked(mc_evbuf *eb, uint64_t stream)
{
	if (stream == eb->stream)
		return 0;
	if (eb->last_seq != 0)
		return MC_EINVAL;
	eb->stream = stream;
	return meta_write(eb);
}

static void mc_evbuf_stats_get_unlocked(const mc_evbuf *eb, mc_evbuf_stats *out)
{
	memset(out, 0, sizeof *out);
	out->stream = eb->stream;
	out->last_seq = eb->last_seq;
	out->acked_seq = eb->acked;
	out->segments = eb->nsegs;
	out->bytes = total_bytes(eb) - META_RESERVE + eb->meta_bytes;
	for (size_t i = 0; i < eb->nsegs; i++) {
		const segment *s = &eb->segs[i];
		if (s->bytes && !out->first_seq)
			out->first_seq = s->first_seq;
		out->pending += seg_unacked(eb, s);
	}
	out->emitted = eb->emitted;
	out->dropped = eb->dropped;
	out->write_errors = eb->write_errors;
}

/* ---- the locked public entry points ---------------------------------------------------- */

int mc_evbuf_append(mc_evbuf *eb, uint64_t seq, const char *line, size_t len)
{
	pthread_mutex_lock((pthread_mutex_t *)&eb->lock);
	int rc = mc_evbuf_append_unlocked(eb, seq, line, len);
	pthread_mutex_unlock((pthread_mutex_t *)&eb->lock);
	return rc;
}

uint64_t mc_evbuf_emitv(mc_evbuf *eb, const char *type, va_list ap)
{
	if (!eb)
		return 0;
	pthread_mutex_lock((pthread_mutex_t *)&eb->lock);
	uint64_t rc = mc_evbuf_emitv_unlocked(eb, type, ap);
	pthread_mutex_unlock((pthread_mutex_t *)&eb->lock);
	return rc;
}

int mc_evbuf_read(mc_evbuf *eb, uint64_t after, size_t max_n, size_t max_bytes,
		  int (*cb)(void *arg, uint64_t seq, const char *line, size_t len), void *arg)
{
	pthread_mutex_lock((pthread_mutex_t *)&eb->lock);
	int rc = mc_evbuf_read_unlocked(eb, after, max_n, max_bytes, cb, arg);
	pthread_mutex_unlock((pthread_mutex_t *)&eb->lock);
	return rc;
}

int mc_evbuf_ack(mc_evbuf *eb, uint64_t seq)
{
	pthread_mutex_lock((pthread_mutex_t *)&eb->lock);
	int rc = mc_evbuf_ack_unlocked(eb, seq);
	pthread_mutex_unlock((pthread_mutex_t *)&eb->lock);
	return rc;
}

int mc_evbuf_set_stream(mc_evbuf *eb, uint64_t stream)
{
	pthread_mutex_lock((pthread_mutex_t *)&eb->lock);
	int rc = mc_evbuf_set_stream_unlocked(eb, stream);
	pthread_mutex_unlock((pthread_mutex_t *)&eb->lock);
	return rc;
}

void mc_evbuf_stats_get(const mc_evbuf *eb, mc_evbuf_stats *out)
{
	pthread_mutex_lock((pthread_mutex_t *)&eb->lock);
	mc_evbuf_stats_get_unlocked(eb, out);
	pthread_mutex_unlock((pthread_mutex_t *)&eb->lock);
}
