/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/policy.c — column policies of replicated tables (docs/DATA_MODEL.md, "Column policies"):
 * their names as tsync_tables.policies records them ({"column": "max"|"min"|"review", ...}), and
 * the capture triggers that keep a max or min column a register on the till that writes it.
 *
 * Design notes
 * - The merge (store/rowwrite.c, tsync__rw_pick) orders writes to a register by value, then by
 *   clock. A local write must end where the merge would: the triggers here put back the value
 *   an UPDATE would lower (max) or raise (min), or set to NULL, in the same statement
 *   (tsync_ap_T); keep a live row in the tombstone before an INSERT that may replace it
 *   (tsync_bp_T: INSERT OR REPLACE fires no delete trigger); and after an INSERT or a key change
 *   take the tombstone's value where it is better (tsync_ip_T, tsync_kp_T), so a re-insert joins
 *   the state the row had. The write is still captured (its mask is the UPDATE's), and sealing
 *   stamps the kept value with a clock above the one it overwrote: the state only grows.
 * - The comparison in SQL is SQLite's own (`<` with COLLATE BINARY over values of any type),
 *   the order crdt/reg.c implements in C; NULL is tested for apart, as no value.
 * - With recursive triggers off (SQLite's default) the fix-up UPDATE does not fire its own
 *   trigger again; with them on it does, finds nothing worse, and stops.
 */
#include <jansson.h>
#include <string.h>

#include "internal.h"

const char *tsync__policy_name(int policy)
{
    switch (policy) {
    case TSYNC__POLICY_MAX:
        return "max";
    case TSYNC__POLICY_MIN:
        return "min";
    case TSYNC__POLICY_REVIEW:
        return "review";
    default:
        return NULL;
    }
}

static int policy_by_name(const char *name)
{
    for (int p = TSYNC__POLICY_MAX; p <= TSYNC__POLICY_REVIEW; p++)
        if (strcmp(name, tsync__policy_name(p)) == 0) return p;
    return -1;
}

/* tsync_tables.policies: {"column": "max"|"min"|"review", ...}; NULL or {} for none. */
int tsync__policies_parse(tsync__table *t, const char *text)
{
    if (!text || !*text) return 0;
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    const char *k;
    json_t *v;
    int rc = json_is_object(o) ? 0 : -1;
    json_object_foreach(o, k, v)
    {
        int c = tsync__col_by_name(t, k, strlen(k));
        int p = json_is_string(v) ? policy_by_name(json_string_value(v)) : -1;
        if (c < 0 || p < 0 || t->is_pk[c] || t->is_counter[c])
            rc = -1;
        else
            t->policy[c] = (uint8_t)p;
    }
    json_decref(o);
    return rc ? tsync__err(TSYNC_ECORRUPT, "tsync_tables: bad column policies of %s", t->name) : 0;
}

/* SQL true when value n is worse than value o for a register of policy: below it for max, above
 * it for min, in SQLite's order (crdt/reg.c), NULL being no value. */
static void reg_worse(sqlite3_str *b, int policy, const char *n, const char *o)
{
    if (policy == TSYNC__POLICY_MAX)
        sqlite3_str_appendf(b, "((%s IS NULL AND %s IS NOT NULL) OR %s < %s COLLATE BINARY)", n, o,
                            n, o);
    else
        sqlite3_str_appendf(b, "(%s IS NOT NULL AND (%s IS NULL OR %s > %s COLLATE BINARY))", o, n,
                            n, o);
}

/* Appends the triggers that keep the max/min columns of a table registers locally (see the top
 * of the file): an update puts back what it would make worse; before an insert, a live row of
 * the same key (INSERT OR REPLACE) is kept in the tombstone; after an insert or a key change,
 * the tombstone's value is taken where it is better. Nothing when the table has no such column. */
void tsync__register_sql(sqlite3_str *sql, const char *table, const char *qt, const char *qtomb,
                         char *const *qc, int ncols, const uint8_t *is_pk, const uint8_t *policy,
                         const char *kcols, const char *newk, const char *same, const char *allc)
{
    int regs[TSYNC__MAX_COLS], n = 0;
    for (int i = 0; i < ncols; i++)
        if (policy && (policy[i] == TSYNC__POLICY_MAX || policy[i] == TSYNC__POLICY_MIN))
            regs[n++] = i;
    if (!n) return;
    char *qap = tsync__sql_quote_ident("tsync_ap_", table),
         *qbp = tsync__sql_quote_ident("tsync_bp_", table),
         *qip = tsync__sql_quote_ident("tsync_ip_", table),
         *qkp = tsync__sql_quote_ident("tsync_kp_", table);
    sqlite3_str *of = sqlite3_str_new(NULL), *when = sqlite3_str_new(NULL),
                *set = sqlite3_str_new(NULL), *tset = sqlite3_str_new(NULL),
                *tbk = sqlite3_str_new(NULL);
    int first = 1;
    for (int i = 0; i < ncols; i++)
        if (is_pk[i]) {
            sqlite3_str_appendf(tbk, "%stb.%s", first ? "" : ",", qc[i]);
            first = 0;
        }
    for (int j = 0; j < n; j++) {
        const char *q = qc[regs[j]];
        int p = policy[regs[j]];
        char *nq = sqlite3_mprintf("NEW.%s", q), *oq = sqlite3_mprintf("OLD.%s", q),
             *tq = sqlite3_mprintf("tb.%s", q);
        sqlite3_str_appendf(of, "%s%s", j ? "," : "", q);
        if (j) sqlite3_str_appendall(when, " OR ");
        reg_worse(when, p, nq, oq);
        sqlite3_str_appendf(set, "%s%s=CASE WHEN ", j ? "," : "", q);
        reg_worse(set, p, nq, oq);
        sqlite3_str_appendf(set, " THEN %s ELSE %s END", oq, nq);
        sqlite3_str_appendf(tset, "%s%s=(SELECT CASE WHEN ", j ? "," : "", q);
        reg_worse(tset, p, nq, tq);
        sqlite3_str_appendf(tset, " THEN %s ELSE %s END FROM %s AS tb WHERE (%s) IS (%s))", tq, nq,
                            qtomb, sqlite3_str_value(tbk), newk);
        sqlite3_free(nq), sqlite3_free(oq), sqlite3_free(tq);
    }
    const char *vof = sqlite3_str_value(of), *vwhen = sqlite3_str_value(when),
               *vset = sqlite3_str_value(set), *vtset = sqlite3_str_value(tset);
    sqlite3_str_appendf(sql,
                        "CREATE TRIGGER %s AFTER UPDATE OF %s ON %s WHEN (%s) AND (%s) BEGIN "
                        "UPDATE %s SET %s WHERE (%s) IS (%s); END;",
                        qap, vof, qt, same, vwhen, qt, vset, kcols, newk);
    sqlite3_str_appendf(sql,
                        "CREATE TRIGGER %s BEFORE INSERT ON %s WHEN EXISTS (SELECT 1 FROM %s "
                        "WHERE (%s) IS (%s)) BEGIN INSERT OR REPLACE INTO %s(%s) SELECT %s FROM %s "
                        "WHERE (%s) IS (%s); END;",
                        qbp, qt, qt, kcols, newk, qtomb, allc, allc, qt, kcols, newk);
    const char *tomb_join =
        "BEGIN UPDATE %s SET %s WHERE (%s) IS (%s) AND EXISTS (SELECT 1 FROM %s AS tb WHERE (%s) "
        "IS (%s)); END;";
    sqlite3_str_appendf(sql, "CREATE TRIGGER %s AFTER INSERT ON %s ", qip, qt);
    sqlite3_str_appendf(sql, tomb_join, qt, vtset, kcols, newk, qtomb, sqlite3_str_value(tbk),
                        newk);
    sqlite3_str_appendf(sql, "CREATE TRIGGER %s AFTER UPDATE OF %s ON %s WHEN NOT (%s) ", qkp,
                        kcols, qt, same);
    sqlite3_str_appendf(sql, tomb_join, qt, vtset, kcols, newk, qtomb, sqlite3_str_value(tbk),
                        newk);
    sqlite3_free(sqlite3_str_finish(of)), sqlite3_free(sqlite3_str_finish(when));
    sqlite3_free(sqlite3_str_finish(set)), sqlite3_free(sqlite3_str_finish(tset));
    sqlite3_free(sqlite3_str_finish(tbk));
    sqlite3_free(qap), sqlite3_free(qbp), sqlite3_free(qip), sqlite3_free(qkp);
}

void tsync__register_drop_sql(sqlite3_str *sql, const char *table)
{
    static const char *const pre[] = {"tsync_ap_", "tsync_bp_", "tsync_ip_", "tsync_kp_"};
    for (int i = 0; i < 4; i++) {
        char *q = tsync__sql_quote_ident(pre[i], table);
        if (q) sqlite3_str_appendf(sql, "DROP TRIGGER IF EXISTS %s;", q);
        sqlite3_free(q);
    }
}
