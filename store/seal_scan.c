/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/seal_scan.c — the statement that reads a table's pending changes for sealing.
 *
 * One statement per table does what sealing used to do row by row in C: it folds the pending
 * changes per row (GROUP BY the key: the latest wall time, whether an insert or a delete was
 * among them, the OR of the columns they wrote) and joins each row's clocks, its values and its
 * tombstone by key. SQLite groups by sorting, so rows come out in key order, each b-tree is walked
 * forward, and the sort spills to temporary files instead of growing in memory. A table whose
 * pending keys already ascend in capture order, none twice, skips the sort: a second statement
 * reads them as captured, with the same joins (tsync__seal_presorted decides, in one pass over
 * the keys that stops at the first that does not ascend).
 */
#include <stdlib.h>
#include <string.h>

#include "seal_int.h"

/* Appends "a.k1=g.k0 AND a.k2=g.k1" for the key columns of t. The key column on the left: its
 * affinity and collation apply, as they do to the bound key of a point lookup. */
static void join_on(sqlite3_str *q, const tsync__table *t, const char *alias)
{
    for (int i = 0; i < t->npk; i++) {
        sqlite3_str_appendf(q, "%s%s.", i ? " AND " : "", alias);
        tsync__sql_ident(q, "", t->cols[t->pk[i]]);
        sqlite3_str_appendf(q, "=g.k%d", i);
    }
}

/* Appends ",a.c0,a.c1,..." preceded by the marker that the join found a row. */
static void values_of(sqlite3_str *q, const tsync__table *t, const char *alias)
{
    sqlite3_str_appendf(q, ",%s.", alias);
    tsync__sql_ident(q, "", t->cols[t->pk[0]]);
    sqlite3_str_appendall(q, " IS NOT NULL");
    for (int c = 0; c < t->ncols; c++) {
        sqlite3_str_appendf(q, ",%s.", alias);
        tsync__sql_ident(q, "", t->cols[c]);
    }
}

/* tsync_fold(op, mask, cols): a row's pending changes folded into one integer: the OR of their
 * masks, kept to the table's non-key columns (cols), or all of bits 0..62 when an insert (op 1)
 * is among them (it writes every column); bit 63 set when a delete (op 3) is among them. A
 * table has at most 63 columns, one of them a key column whose bit cols never has, so a fold
 * without an insert never has all of bits 0..62. One aggregate in C instead of one built-in
 * max() per column and two for the ops: the fold was a third of the scan's own time for a
 * 4-column table, more for a wide one. */
typedef struct {
    uint64_t m;
    int ins, del;
} fold_acc;

#define FOLD_LOW 0x7fffffffffffffffULL /* bits 0..62 */

static void fold_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    fold_acc *a = sqlite3_aggregate_context(ctx, (int)sizeof *a);
    if (!a) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    int64_t op = sqlite3_value_int64(argv[0]);
    if (op == 1) a->ins = 1;
    if (op == 3) a->del = 1;
    a->m |=
        (uint64_t)sqlite3_value_int64(argv[1]) & (uint64_t)sqlite3_value_int64(argv[2]) & FOLD_LOW;
}

static void fold_final(sqlite3_context *ctx)
{
    fold_acc *a = sqlite3_aggregate_context(ctx, 0);
    uint64_t f = !a ? 0 : (a->ins ? FOLD_LOW : a->m) | (a->del ? 1ULL << 63 : 0);
    sqlite3_result_int64(ctx, (int64_t)f);
}

int tsync__seal_fold_register(sqlite3 *db)
{
    return sqlite3_create_function_v2(db, "tsync_fold", 3, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                      NULL, fold_step, fold_final, NULL);
}

/* The scan of t (seal_int.h). Folding (run 0): a row's pending changes grouped by its key, which
 * sorts them. A run (run 1): the pending changes as captured, in capture order, when their keys
 * already ascend there with none twice (tsync__seal_presorted): each change is then its own fold
 * and the order the same, so the sort is skipped. A bulk INSERT, UPDATE or DELETE of a table
 * written in key order captures such a run, and the sort was a third of sealing it (it copies
 * every key twice and spills to temporary files at 1M rows). */
static char *scan_sql(const tsync__table *t, int run)
{
    uint64_t cols = 0;
    for (int c = 0; c < t->ncols; c++)
        if (!t->is_pk[c]) cols |= 1ULL << c;
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendall(q, "SELECT ");
    for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "g.k%d,", i);
    if (run) /* tsync_fold of one change (an insert writes every column, a delete none). */
        sqlite3_str_appendf(q,
                            "g.wall,g.op=1,g.op=3,CASE WHEN g.op=1 THEN 0x7fffffffffffffff "
                            "ELSE g.mask&%lld END,c.tsync_m",
                            (long long)cols);
    else
        /* The insert, the delete and the mask, out of tsync_fold's integer. */
        sqlite3_str_appendall(q, "g.w,g.f&0x7fffffffffffffff=0x7fffffffffffffff,g.f<0,"
                                 "g.f&0x7fffffffffffffff,c.tsync_m");
    values_of(q, t, "r");
    values_of(q, t, "b");
    if (run) {
        sqlite3_str_appendall(q, " FROM tsync_pending AS g");
    } else {
        sqlite3_str_appendall(q, " FROM (SELECT ");
        for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "k%d,", i);
        sqlite3_str_appendf(q,
                            "max(wall) AS w,tsync_fold(op,mask,%lld) AS f FROM tsync_pending "
                            "WHERE tbl=%d GROUP BY ",
                            (long long)cols, t->id);
        for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "%sk%d", i ? "," : "", i);
        sqlite3_str_appendall(q, ") AS g");
    }
    sqlite3_str_appendf(q, " LEFT JOIN %s AS c ON ", t->qclk);
    join_on(q, t, "c");
    sqlite3_str_appendf(q, " LEFT JOIN %s AS r ON ", t->qname);
    join_on(q, t, "r");
    sqlite3_str_appendf(q, " LEFT JOIN %s AS b ON ", t->qtomb);
    join_on(q, t, "b");
    /* tsync_pending is the outer loop (the left of every LEFT JOIN), walked in rowid order. */
    if (run) sqlite3_str_appendf(q, " WHERE g.tbl=%d ORDER BY g.id", t->id);
    return tsync__sql_finish(q);
}

static int prepare(tsync_store *s, sqlite3_stmt **st, char *sql)
{
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "prepare the seal of a table");
    return 0;
}

int tsync__seal_scan(tsync_store *s, tsync__table *t, int run, sqlite3_stmt **out)
{
    sqlite3_stmt **st = run ? &t->seal_run : &t->seal_scan;
    if (!*st) {
        int rc = prepare(s, st, scan_sql(t, run));
        if (rc) return rc;
    }
    sqlite3_reset(*st);
    *out = *st;
    return 0;
}

int tsync__seal_presorted_ok = 1;

/* The order SQLite's BINARY comparison gives two values (the GROUP BY of the folding scan sorts
 * tsync_pending's untyped key columns with it): NULL, numbers, text, blobs; text and blobs
 * bytewise, then by length. *sure is cleared for an integer against a real, left to the sort. */
static int val_cmp(const tsync__val *a, const tsync__val *b, int *sure)
{
    static const int cls[] = {[TSYNC__V_NULL] = 0,
                              [TSYNC__V_INT] = 1,
                              [TSYNC__V_REAL] = 1,
                              [TSYNC__V_TEXT] = 2,
                              [TSYNC__V_BLOB] = 3};
    if (cls[a->type] != cls[b->type]) return cls[a->type] < cls[b->type] ? -1 : 1;
    switch (a->type) {
    case TSYNC__V_NULL:
        return 0;
    case TSYNC__V_INT:
    case TSYNC__V_REAL:
        if (a->type != b->type) return *sure = 0;
        if (a->type == TSYNC__V_INT) return a->i < b->i ? -1 : a->i > b->i;
        return a->r < b->r ? -1 : a->r > b->r;
    default: {
        size_t n = a->n < b->n ? a->n : b->n;
        int c = n ? memcmp(a->p, b->p, n) : 0;
        return c ? c : a->n < b->n ? -1 : a->n > b->n;
    }
    }
}

int tsync__seal_presorted(tsync_store *s, tsync__table *t, int *out)
{
    *out = 0;
    if (!tsync__seal_presorted_ok) return 0;
    if (!t->seal_keys) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendall(q, "SELECT ");
        for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "%sk%d", i ? "," : "", i);
        sqlite3_str_appendf(q, " FROM tsync_pending WHERE tbl=%d ORDER BY id", t->id);
        int rc = prepare(s, &t->seal_keys, tsync__sql_finish(q));
        if (rc) return rc;
    }
    sqlite3_stmt *st = t->seal_keys;
    sqlite3_reset(st);
    /* The previous row's key, its text and blob bytes copied (stepping frees them). */
    tsync__val prev[TSYNC__MAX_PK_COLS];
    uint8_t *buf = NULL;
    size_t cap = 0;
    int step, first = 1, sorted = 1, rc = 0;
    while (sorted && (step = sqlite3_step(st)) == SQLITE_ROW) {
        tsync__val kv[TSYNC__MAX_PK_COLS];
        for (int i = 0; i < t->npk; i++) tsync__col_val(st, i, &kv[i]);
        int c = 0, sure = 1;
        for (int i = 0; !first && c == 0 && i < t->npk; i++) c = val_cmp(&prev[i], &kv[i], &sure);
        if (!first && (c >= 0 || !sure)) {
            sorted = 0;
            break;
        }
        first = 0;
        size_t need = 0;
        for (int i = 0; i < t->npk; i++)
            if (kv[i].type == TSYNC__V_TEXT || kv[i].type == TSYNC__V_BLOB) need += kv[i].n;
        if (need > cap) {
            size_t nc = need > 2 * cap ? need : 2 * cap;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t off = 0;
        for (int i = 0; i < t->npk; i++) {
            prev[i] = kv[i];
            if ((kv[i].type == TSYNC__V_TEXT || kv[i].type == TSYNC__V_BLOB) && kv[i].n) {
                memcpy(buf + off, kv[i].p, kv[i].n);
                prev[i].p = buf + off;
                off += kv[i].n;
            }
        }
    }
    if (rc == 0 && sorted && step != SQLITE_DONE)
        rc = tsync__err_sqlite(s->db, step, "read pending changes");
    sqlite3_reset(st);
    free(buf);
    *out = rc == 0 && sorted;
    return rc;
}
