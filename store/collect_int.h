/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/collect_int.h — collecting the tombstones and clock entries of deleted rows once their
 * delete is causally stable (store/collect.c; docs/DATA_MODEL.md, "Collecting tombstones and
 * clock entries"), and the collection frontier snapshots carry (store/snapshot_*.c).
 *
 * THREAD SAFETY: like the store, one thread at a time per store.
 */
#ifndef TSYNC_STORE_COLLECT_INT_H
#define TSYNC_STORE_COLLECT_INT_H

#include "internal.h"
#include "rowwrite_int.h"

/* One site's entry of the collection frontier: the highest add clock of that site in any row
 * collected here or by a replica whose snapshot was taken. */
typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    tsync__hlc hlc;
} tsync__front;

/* The stored frontier (*out malloc'd, the caller frees; *n 0 and *out NULL when empty). */
TSYNC_WARN_UNUSED int tsync__front_load(tsync_store *s, tsync__front **out, size_t *n);

/* Raises the stored frontier to the pointwise maximum with f. Inside the caller's transaction. */
TSYNC_WARN_UNUSED int tsync__front_raise(tsync_store *s, const tsync__front *f, size_t n);

/* The frontier by local site index (*out: nls entries, 0 where none; NULL when empty). */
TSYNC_WARN_UNUSED int tsync__front_local(tsync_store *s, uint32_t nls, tsync__hlc **out);

/* Snapshot import with a frontier: the keys the snapshot carried are noted (seen_open, seen_add)
 * and, once every chunk is in, every local row the snapshot did not carry whose existence
 * entries are all at or below the frontier is deleted as a remove observing every add (sweep),
 * inside the caller's write transaction, capture off. seen_drop forgets the keys. */
TSYNC_WARN_UNUSED int tsync__front_seen_open(tsync_store *s);
TSYNC_WARN_UNUSED int tsync__front_seen_add(tsync_store *s, int tbl, const uint8_t *key,
                                            uint32_t klen);
TSYNC_WARN_UNUSED int tsync__front_sweep(tsync__rowwriter *w, const tsync__front *f, size_t n,
                                         size_t *deleted);
void tsync__front_seen_drop(tsync_store *s);

/* Gives ack generations: tsync__sync_ack_put records one per stored acknowledgement, so that
 * collection can tell an acknowledgement made after it marked rows from one made before. */
TSYNC_WARN_UNUSED int tsync__collect_ack_gen(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES]);

/* One collection round (own transaction): collects the candidates whose epoch every certified
 * till has acknowledged, then marks the deleted rows that may be collected as new candidates of a
 * new epoch (our vector now). *collected (may be NULL): rows collected. Not enrolled: nothing. */
TSYNC_WARN_UNUSED int tsync__collect(tsync_store *s, size_t *collected);

/* Totals for the log JSON: rows collected ever, candidates waiting. */
void tsync__collect_counts(tsync_store *s, int64_t *collected, int64_t *pending);

#endif
