/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/seal_scan.c — the statement that reads a table's pending changes for sealing.
 *
 * One statement per table does what sealing used to do row by row in C: it folds the pending
 * changes per row (GROUP BY the key: the latest wall time, whether an insert or a delete was
 * among them, the OR of the columns they wrote) and joins each row's clocks, its values and its
 * tombstone by key. SQLite groups by sorting, so rows come out in key order, each b-tree is walked
 * forward, and the sort spills to temporary files instead of growing in memory.
 */
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

static char *scan_sql(const tsync__table *t)
{
    uint64_t cols = 0;
    for (int c = 0; c < t->ncols; c++)
        if (!t->is_pk[c]) cols |= 1ULL << c;
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendall(q, "SELECT ");
    for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "g.k%d,", i);
    /* The insert, the delete and the mask, out of tsync_fold's integer. */
    sqlite3_str_appendall(q, "g.w,g.f&0x7fffffffffffffff=0x7fffffffffffffff,g.f<0,"
                             "g.f&0x7fffffffffffffff,c.tsync_m");
    values_of(q, t, "r");
    values_of(q, t, "b");
    sqlite3_str_appendall(q, " FROM (SELECT ");
    for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "k%d,", i);
    sqlite3_str_appendf(q,
                        "max(wall) AS w,tsync_fold(op,mask,%lld) AS f FROM tsync_pending WHERE "
                        "tbl=%d GROUP BY ",
                        (long long)cols, t->id);
    for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "%sk%d", i ? "," : "", i);
    sqlite3_str_appendf(q, ") AS g LEFT JOIN %s AS c ON ", t->qclk);
    join_on(q, t, "c");
    sqlite3_str_appendf(q, " LEFT JOIN %s AS r ON ", t->qname);
    join_on(q, t, "r");
    sqlite3_str_appendf(q, " LEFT JOIN %s AS b ON ", t->qtomb);
    join_on(q, t, "b");
    return tsync__sql_finish(q);
}

int tsync__seal_scan(tsync_store *s, tsync__table *t, sqlite3_stmt **out)
{
    if (!t->seal_scan) {
        char *sql = scan_sql(t);
        if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
        int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &t->seal_scan, NULL);
        sqlite3_free(sql);
        if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "prepare the seal of a table");
    }
    sqlite3_reset(t->seal_scan);
    *out = t->seal_scan;
    return 0;
}
