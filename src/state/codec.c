/* Pure codecs for the store's on-disk values: records and write-log entries (formats
 * in state_int.h). Bytes in, struct out; no I/O, no allocation. */
#include <string.h>

#include "state/state_int.h"

size_t mc_state_record_size(size_t home_len, size_t vlen)
{
	return MC_STATE_REC_HDR + home_len + vlen;
}

size_t mc_state_record_size_of(const mc_record *r)
{
	return mc_state_record_size(strnlen(r->home, MC_STATE_MAX_HOME), r->value_len) +
	       (r->replica ? 8u : 0u);
}

void mc_state_record_encode(uint8_t *p, const mc_record *r)
{
	size_t hl = strnlen(r->home, MC_STATE_MAX_HOME);
	size_t at;

	mc_put_u64(p, r->version);
	mc_put_u64(p + 8, r->expires_ms);
	p[16] = (uint8_t)((r->deleted ? MC_STATE_REC_DELETED : 0) |
			  (r->replica ? MC_STATE_REC_REPLICA : 0) |
			  (r->invalid ? MC_STATE_REC_INVALID : 0));
	p[17] = (uint8_t)hl;
	memcpy(p + MC_STATE_REC_HDR, r->home, hl);
	at = MC_STATE_REC_HDR + hl;
	if (r->replica) {
		mc_put_u64(p + at, r->synced_ms);
		at += 8;
	}
	if (r->value_len)
		memcpy(p + at, r->value, r->value_len);
}

int mc_state_record_decode(const uint8_t *p, size_t n, mc_record *r)
{
	size_t hl;

	if (n < MC_STATE_REC_HDR)
		return MC_EINVAL;
	hl = p[17];
	if (hl > MC_STATE_MAX_HOME || n - MC_STATE_REC_HDR < hl)
		return MC_EINVAL;
	for (size_t i = 0; i < hl; i++) /* cell names are printable, never NUL */
		if (p[MC_STATE_REC_HDR + i] <= 0x20 || p[MC_STATE_REC_HDR + i] >= 0x7f)
			return MC_EINVAL;
	size_t at = MC_STATE_REC_HDR + hl;
	r->replica = (p[16] & MC_STATE_REC_REPLICA) ? 1 : 0;
	r->synced_ms = 0;
	if (r->replica) {
		if (n - at < 8)
			return MC_EINVAL;
		r->synced_ms = mc_get_u64(p + at);
		at += 8;
	}
	r->version = mc_get_u64(p);
	r->expires_ms = mc_get_u64(p + 8);
	r->deleted = (p[16] & MC_STATE_REC_DELETED) ? 1 : 0;
	r->invalid = (p[16] & MC_STATE_REC_INVALID) ? 1 : 0;
	memcpy(r->home, p + MC_STATE_REC_HDR, hl);
	r->home[hl] = '\0';
	r->value = (const char *)p + at;
	r->value_len = n - at;
	return 0;
}

size_t mc_state_logent_size(size_t klen, size_t vlen)
{
	return MC_STATE_LOGENT_HDR + klen + vlen;
}

void mc_state_logent_encode(uint8_t *p, const mc_log_entry *e)
{
	mc_put_u64(p, e->version);
	mc_put_u64(p + 8, e->expires_ms);
	p[16] = e->op;
	mc_put_u16(p + 17, (uint16_t)e->klen);
	memcpy(p + MC_STATE_LOGENT_HDR, e->key, e->klen);
	if (e->vlen)
		memcpy(p + MC_STATE_LOGENT_HDR + e->klen, e->value, e->vlen);
}

int mc_state_logent_decode(uint64_t seq, const uint8_t *p, size_t n, mc_log_entry *e)
{
	size_t klen;

	if (n < MC_STATE_LOGENT_HDR)
		return MC_EINVAL;
	if (p[16] != MC_OP_PUT && p[16] != MC_OP_DEL)
		return MC_EINVAL;
	klen = mc_get_u16(p + 17);
	if (klen == 0 || klen > MC_STATE_MAX_KEY || n - MC_STATE_LOGENT_HDR < klen)
		return MC_EINVAL;
	e->seq = seq;
	e->version = mc_get_u64(p);
	e->expires_ms = mc_get_u64(p + 8);
	e->op = p[16];
	e->key = (const char *)p + MC_STATE_LOGENT_HDR;
	e->klen = klen;
	e->value = e->key + klen;
	e->vlen = n - MC_STATE_LOGENT_HDR - klen;
	return 0;
}
