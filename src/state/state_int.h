/* Private declarations shared by the files of src/state: the pure codecs for the
 * bytes the store keeps in LMDB. Nothing here includes LMDB. */
#ifndef MC_STATE_INT_H
#define MC_STATE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "state/state.h"

/* Record (value of the "records" database), all integers big-endian:
 *   version u64 | expires_ms u64 | flags u8 | home_len u8 | home | [synced_ms u64] | value
 * flags: bit0 deleted, bit1 replica copy (synced_ms present), bit2 invalidated.
 * The value is the rest of the bytes. Unknown flag bits are ignored on decode. */
#define MC_STATE_REC_HDR 18u
#define MC_STATE_REC_DELETED 0x01u
#define MC_STATE_REC_REPLICA 0x02u
#define MC_STATE_REC_INVALID 0x04u

/* Write-log entry (value of the "log" database, keyed by the 8-byte big-endian seq):
 *   version u64 | expires_ms u64 | op u8 | klen u16 | key | value
 * The value is the rest of the bytes. */
#define MC_STATE_LOGENT_HDR 19u

/* Encoded size of a record with a home name of home_len bytes and vlen value bytes
 * (a replica copy takes 8 more, see mc_state_record_size_of). */
size_t mc_state_record_size(size_t home_len, size_t vlen);
/* Encoded size of r. */
size_t mc_state_record_size_of(const mc_record *r);
/* Encodes r into p, which holds mc_state_record_size_of(r) bytes. The home name
 * must be at most MC_STATE_MAX_HOME bytes. */
void mc_state_record_encode(uint8_t *p, const mc_record *r);
/* Decodes n bytes at p into *r; r->value points into p. Returns 0 or MC_EINVAL when
 * the bytes are truncated or the home name is too long or not printable ASCII. */
int mc_state_record_decode(const uint8_t *p, size_t n, mc_record *r);

/* Encoded size of a log entry with klen key bytes and vlen value bytes. */
size_t mc_state_logent_size(size_t klen, size_t vlen);
/* Encodes e (seq is not part of the bytes) into p, which holds
 * mc_state_logent_size(e->klen, e->vlen) bytes. e->klen must fit in u16. */
void mc_state_logent_encode(uint8_t *p, const mc_log_entry *e);
/* Decodes n bytes at p into *e, setting e->seq to seq; key and value point into p.
 * Returns 0 or MC_EINVAL (truncated, bad op, key length outside 1..MC_STATE_MAX_KEY). */
int mc_state_logent_decode(uint64_t seq, const uint8_t *p, size_t n, mc_log_entry *e);

#endif
