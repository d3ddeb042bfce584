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

static char *scan_sql(const tsync__table *t)
{
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendall(q, "SELECT ");
    for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "g.k%d,", i);
    sqlite3_str_appendall(q, "g.w,g.i,g.d,g.m,c.tsync_m");
    values_of(q, t, "r");
    values_of(q, t, "b");
    sqlite3_str_appendall(q, " FROM (SELECT ");
    for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "k%d,", i);
    /* The OR of the masks, one column bit at a time (SQLite has no OR aggregate); an insert
     * records -1, every column. */
    sqlite3_str_appendall(q, "max(wall) AS w,max(op=1) AS i,max(op=3) AS d,");
    int any = 0;
    for (int c = 0; c < t->ncols; c++)
        if (!t->is_pk[c])
            sqlite3_str_appendf(q, "%s(max((mask>>%d)&1)<<%d)", any++ ? "|" : "", c, c);
    if (!any) sqlite3_str_appendall(q, "0");
    sqlite3_str_appendf(q, " AS m FROM tsync_pending WHERE tbl=%d GROUP BY ", t->id);
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
