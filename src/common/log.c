/* Process-wide logger: levelled lines on stderr, as text or as JSON objects. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/common.h"

static mc_log_level g_level = MC_LOG_INFO;
static bool g_json;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void mc_log_setup(mc_log_level level, bool json)
{
	g_level = level;
	g_json = json;
}

int mc_log_level_parse(const char *s, mc_log_level *out)
{
	for (size_t i = 0; i < MC_ARRAY_LEN(level_names); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (mc_log_level)i;
			return 0;
		}
	}
	return MC_EINVAL;
}

void mc_log(mc_log_level level, const char *comp, const char *fmt, ...)
{
	if (level < g_level || level >= MC_LOG_OFF)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[80];
	snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

	mc_buf b;
	mc_buf_init(&b);
	if (g_json) {
		mc_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"comp\":", when,
			      level_names[level]);
		mc_buf_append_json(&b, comp, strlen(comp));
		mc_buf_append_str(&b, ",\"msg\":");
		mc_buf_append_json(&b, msg, strlen(msg));
		mc_buf_append_str(&b, "}\n");
	} else {
		char up[8];
		size_t i = 0;
		for (; level_names[level][i] && i < sizeof up - 1; i++)
			up[i] = (char)(level_names[level][i] - 'a' + 'A');
		up[i] = '\0';
		mc_buf_printf(&b, "%s %-5s %s: %s\n", when, up, comp, msg);
	}
	pthread_mutex_lock(&g_lock);
	fwrite(b.data, 1, b.len, stderr);
	fflush(stderr);
	pthread_mutex_unlock(&g_lock);
	mc_buf_fini(&b);
}
