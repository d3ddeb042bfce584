/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/rowwrite_int.h — the one writer of merged rows into the app's tables (store/rowwrite.c),
 * shared by the batch merge (store/merge*.c, store/unpark.c) and the snapshot merge
 * (store/snapshot_import.c), so both leave the same rows, tombstones, conflicts and parked rows.
 * Also the merge report's message list both fill.
 *
 * THREAD SAFETY: like the store, one thread at a time per store.
 */
#ifndef TSYNC_STORE_ROWWRITE_INT_H
#define TSYNC_STORE_ROWWRITE_INT_H

#include <stdarg.h>

#include "internal.h"

/* The merged state of one row, as the writer takes it. */
typedef struct {
    tsync__table *t;
    const uint8_t *key; /* the row's key, encoded (tsync__key_encode) */
    uint32_t klen;
    const tsync__val *pk; /* the key's values when the caller has them, else NULL (from key) */
    tsync__rowmeta meta;
    int had_meta, existed; /* had clocks here before; was in the table (not its tombstone) */
    uint64_t mask;         /* columns whose value changed */
    tsync__val *vals;      /* t->ncols entries: the value of each column of mask */
} tsync__wrow;

typedef struct tsync__wstmt tsync__wstmt;

/* A writer: the statements it prepared, cached per table, kind and column set. Zero-initialise
 * with s and rep (may be NULL) set; tsync__rw_free finalizes its statements. */
typedef struct {
    tsync_store *s;
    tsync_merge_report *rep;
    tsync__wstmt *stmts;
    size_t nstmts;
    uint8_t *mbuf; /* encoded clocks */
    size_t mcap;
} tsync__rowwriter;

void tsync__rw_free(tsync__rowwriter *w);

/* Loads r's clocks (r->t, key, klen set) into r->meta (had_meta) and whether the row is in the
 * table (existed). Every row in the table or its tombstones has clocks (sealing comes first), so a
 * row without clocks is new here and needs no further look-up. */
TSYNC_WARN_UNUSED int tsync__rw_load(tsync_store *s, tsync__wrow *r);

/* The value this replica shows for column col now: this merge's when it changed it, else the
 * row's or its tombstone's. *owner is the statement the value points into (sqlite3_reset it after
 * use), or NULL. */
TSYNC_WARN_UNUSED int tsync__rw_current(tsync__rowwriter *w, tsync__wrow *r, int col,
                                        tsync__val *out, sqlite3_stmt **owner);

/* Records a conflict on column col in tsync_conflicts: the remote write (value, clock, site id)
 * against the local one (r->meta's clock, whose site id is local_site; NULL when unknown), the
 * winner first, with kind 1 for a review column (an open conflict a person settles). Counts it in
 * the report. */
TSYNC_WARN_UNUSED int tsync__rw_conflict(tsync__rowwriter *w, tsync__wrow *r, int col,
                                         const tsync__val *remote, tsync__hlc rhlc,
                                         const uint8_t *rsite, const uint8_t *local_site,
                                         int remote_wins, uint64_t now_ms);

/* Whether a write (v, h, site) to column col of r wins over what the row holds (r->meta's clock,
 * whose site id is cur_site): by the column's policy, LWW by (clock, site id), a max/min register
 * by value, then by clock (crdt/reg.c); a column never written (clock 0) takes any write. Equal
 * clocks and sites (two branches of a fork) are ordered by value so that every replica picks the
 * same. *cmp > 0: the write wins. */
TSYNC_WARN_UNUSED int tsync__rw_pick(tsync__rowwriter *w, tsync__wrow *r, int col,
                                     const tsync__val *v, tsync__hlc h, const uint8_t *site,
                                     const uint8_t *cur_site, int *cmp);

/* Parks a change in tsync_parked: row `row` of batch (site, seq), table tbl, column col (NULL: the
 * whole row) for reason; seq 0: a row a local constraint kept out (its clocks are kept). Counts
 * it and says so in the report. */
TSYNC_WARN_UNUSED int tsync__rw_park(tsync__rowwriter *w, uint32_t site, uint64_t seq, uint32_t row,
                                     const char *tbl, size_t tlen, const char *col, size_t clen,
                                     const char *reason);

/* Writes the merged row to the table or its tombstone (update, insert, resurrect from the
 * tombstone, move to the tombstone), then its clocks. A local constraint (a unique index added
 * after replicate, a STRICT type) does not fail the merge: the row is parked with the reason and
 * its clocks are kept. Capture must be off on this connection (tsync__capture_off). */
TSYNC_WARN_UNUSED int tsync__rw_write(tsync__rowwriter *w, tsync__wrow *r);

/* Appends a line to the report's messages (at most 64; the last says more were left out). */
void tsync__report_add(tsync_merge_report *r, const char *msg);
void tsync__report_msg(tsync_merge_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The size a report line is formatted into: a prefix and a refusal of TSYNC__ERRLEN. */
#define TSYNC__REPORT_LINE (TSYNC__ERRLEN + 64)
/* Formats a line into buf (TSYNC__REPORT_LINE bytes, cut at a whole UTF-8 character) and
 * appends it to r (tsync__report_add); buf keeps the line for the caller. */
void tsync__report_vmsg(tsync_merge_report *r, char *buf, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
