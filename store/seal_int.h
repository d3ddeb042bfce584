/* SPDX-License-Identifier: Apache-2.0 */
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

/* The clock entries a seal writes, new ones and rewritten ones alike, NEWCLK_ROWS at a time by
 * one INSERT OR REPLACE (seal_clk.c): a bulk insert, UPDATE or DELETE seals as many rows, and one
 * statement per row cost more than the rows (an UPDATE of 100k rows: a fifth of the seal's time
 * in the per-row UPDATE of tsync_clk_T). They can wait: the scan reads each row's clocks once, in
 * key order, before its entry is made, and nothing else in the seal reads them. Fewer than
 * NEWCLK_ROWS (a live seal) are written one by one, so a small seal prepares nothing. */
#define TSYNC__NEWCLK_ROWS 32
typedef struct {
    tsync__table *t;
    sqlite3_stmt *st; /* the TSYNC__NEWCLK_ROWS-row INSERT for t */
    uint8_t *data;    /* each entry: its key, then its clock blob */
    size_t len, cap;
    size_t off[TSYNC__NEWCLK_ROWS];
    uint32_t klen[TSYNC__NEWCLK_ROWS], blen[TSYNC__NEWCLK_ROWS];
    int n;
} tsync__newclk;
/* Buffers the clock entry of a new row of t (its key, and m encoded into *buf), writing the
 * buffer when it is full. */
int tsync__newclk_add(tsync_store *s, tsync__newclk *c, tsync__table *t, const uint8_t *key,
                      uint32_t klen, const tsync__rowmeta *m, uint8_t **buf, size_t *cap);
/* Writes the buffered entries. */
int tsync__newclk_flush(tsync_store *s, tsync__newclk *c);
void tsync__newclk_free(tsync__newclk *c);
/* How many entries one statement writes (TSYNC__NEWCLK_ROWS). A test sets it to 1 for the
 * reference: every new entry written by a statement of its own, every existing one updated in
 * place (tsync__put_meta), as sealing did before the entries were batched. */
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

/* The scan statement of t, prepared on first use, reset: the folding one, or with run the one for
 * pending changes whose keys ascend in capture order (tsync__seal_presorted). */
int tsync__seal_scan(tsync_store *s, tsync__table *t, int run, sqlite3_stmt **out);
/* *out: 1 when t's pending changes, in capture order, have keys that strictly ascend (no key
 * twice), so sealing may take them as captured instead of folding them. A test sets
 * tsync__seal_presorted_ok to 0 for the reference, which always folds. */
int tsync__seal_presorted(tsync_store *s, tsync__table *t, int *out);
extern int tsync__seal_presorted_ok;

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
