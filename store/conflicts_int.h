/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/conflicts_int.h — the conflict journal's private side (store/conflicts.c): the identity
 * of a collision, the upgrade of tsync_conflicts, the internal replicated table of resolutions
 * (tsync_resolved) and the trimming of old resolved entries.
 *
 * THREAD SAFETY: like the store, one thread at a time per store.
 */
#ifndef TSYNC_STORE_CONFLICTS_INT_H
#define TSYNC_STORE_CONFLICTS_INT_H

#include "internal.h"

#define TSYNC__CID_BYTES 16
/* The internal replicated table of resolutions, keyed by conflict identity. */
#define TSYNC__RESOLVED "tsync_resolved"

/* The identity of a collision: BLAKE2b-128 of "tsync-conflict", the table and column names folded
 * to lowercase (each with its NUL), the encoded key, then the two writes (clock 8 bytes
 * big-endian, site id; an unknown site as zeros) in ascending order. Both tills that see the
 * collision compute the same bytes, whichever side won there. */
void tsync__conflict_id(uint8_t out[TSYNC__CID_BYTES], const char *tbl, const uint8_t *key,
                        size_t klen, const char *col, tsync__hlc h1, const uint8_t *site1,
                        tsync__hlc h2, const uint8_t *site2);

/* Brings tsync_conflicts of a database an older build made up to date (cid and key columns, the
 * cid index); writes nothing when it is. In its own transaction; not for read-only handles. */
int tsync__conflicts_upgrade(tsync_store *s);

/* Whether name is an internal replicated table (kept out of the content hash and of the table
 * definitions tills compare). */
int tsync__table_internal(const char *name);

/* Inside a write transaction: makes tsync_resolved (created and replicated) when it is missing. */
int tsync__resolved_ensure(tsync_store *s);

/* Inside a merge's write transaction, capture off: when changes of tsync_resolved were parked
 * because this database did not have the table yet, creates it and applies them. */
int tsync__resolved_adopt(tsync_store *s);

/* Drops resolved journal entries whose resolution is older than TSYNC_CONFLICTS_KEEP_DAYS (its
 * own transaction; 0 with nothing to do). */
int tsync__conflicts_trim(tsync_store *s, size_t *dropped);

#endif
