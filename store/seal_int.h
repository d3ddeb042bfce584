/*
 * store/seal_int.h — what sealing (seal.c) shares with the statement that reads a table's pending
 * changes (seal_scan.c) and the setting aside of oversize changes (unsealable.c), private to them.
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

/* A bump allocator for the batch being built, zeroing what it hands out; reset keeps its chunks
 * for the next batch (seal_pool.c). */
typedef struct tsync__pool_chunk tsync__pool_chunk;
typedef struct {
    tsync__pool_chunk *head, *cur, *big;
} tsync__pool;
void *tsync__pool_alloc(tsync__pool *p, size_t n);
void tsync__pool_reset(tsync__pool *p);
void tsync__pool_free(tsync__pool *p);

/* How many clock entries of new rows sealing writes with one statement (seal.c; 32). A test sets
 * it to 1 for the reference, every entry written by a statement of its own. */
extern int tsync__seal_newclk_rows;

/* The statement that seals table t (cached in t->seal_scan): one row per changed row, in key
 * order, with its pending changes folded, its clocks, and its values in the table and in the
 * tombstone table. Its columns: the key (npk), then these. */
#define TSYNC__SCAN_WALL(t) ((t)->npk)     /* latest capture wall time */
#define TSYNC__SCAN_INS(t)  ((t)->npk + 1) /* an insert among the changes */
#define TSYNC__SCAN_DEL(t)  ((t)->npk + 2) /* a delete among them */
#define TSYNC__SCAN_MASK(t) ((t)->npk + 3) /* the columns they wrote */
#define TSYNC__SCAN_CLK(t)  ((t)->npk + 4) /* the row's clock blob, NULL when none */
/* 1 when the row is in its table; its ncols values (in ordinal order) follow. */
#define TSYNC__SCAN_ROW(t) ((t)->npk + 5)
/* 1 when the row has a tombstone; its ncols values follow. */
#define TSYNC__SCAN_TOMB(t) ((t)->npk + 6 + (t)->ncols)

/* The scan statement of t, prepared on first use, reset. */
int tsync__seal_scan(tsync_store *s, tsync__table *t, sqlite3_stmt **out);

/* The set-aside changes (tsync_unsealable), loaded once per seal when there are any: their number
 * is bounded by the rows an older build captured over the limit, not by the seal's size. */
typedef struct tsync__aside_ent tsync__aside_ent;
typedef struct {
    tsync__arena a;
    tsync__rmap map; /* (table, key) -> its tsync__aside_ent list */
    int64_t *drop;   /* ids folded into this seal, dropped at its end */
    size_t ndrop, dropcap;
} tsync__aside;

/* Sets aside a row change that cannot be sealed (over TSYNC_MAX_ROW_BYTES) in tsync_unsealable,
 * in the form of its pending rows, so it is folded back in when the row changes again. */
int tsync__set_aside(tsync_store *s, const prow *r, size_t bytes);
/* Loads tsync_unsealable (nothing when it is empty). */
int tsync__aside_load(tsync_store *s, tsync__aside *x);
/* Folds the set-aside changes of r's row into r: they are sealed now, or set aside again if the
 * row is still too large. */
int tsync__aside_fold(tsync__aside *x, prow *r);
/* Drops the set-aside changes that were folded in from tsync_unsealable. */
int tsync__aside_drop(tsync_store *s, tsync__aside *x);
void tsync__aside_free(tsync__aside *x);

#endif
