/*
 * store/seal_int.h — what sealing (seal.c) shares with the setting aside of oversize changes
 * (unsealable.c), private to the two.
 */
#ifndef TSYNC_STORE_SEAL_INT_H
#define TSYNC_STORE_SEAL_INT_H

#include "internal.h"

/* One changed row, its pending changes folded: the columns they wrote, the latest wall time they
 * were captured at, and whether an insert or a delete was among them. */
typedef struct {
    tsync__table *t;
    uint8_t *key;
    uint32_t klen;
    uint64_t mask;
    int64_t wall;
    uint8_t seen_insert, seen_delete;
} prow;

/* Sets aside a row change that cannot be sealed (over TSYNC_MAX_ROW_BYTES) in tsync_unsealable,
 * in the form of its pending rows, so it is folded back in when the row changes again. */
int tsync__set_aside(tsync_store *s, const prow *r, size_t bytes);
/* Folds the set-aside changes of rows that changed again (they are in map, whose values are
 * 1 + their index in rows) back in, and drops them from tsync_unsealable: sealed now, or set aside
 * again if the row is still too large. */
int tsync__fold_set_aside(tsync_store *s, tsync__rmap *map, tsync__arena *a, prow *rows);

#endif
