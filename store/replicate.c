/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/replicate.c — making a table replicated, keeping its capture in step when a migration
 * adds columns or counters (store/migrate.c), and the cache of replicated tables.
 *
 * Capture is done with triggers in built-in SQL only, so writes from any connection (the app's,
 * the sqlite3 shell) are recorded. The triggers only append to tsync_pending: the key, which
 * columns changed (a bitmask) and the wall clock. Values are read at sealing, from the table or,
 * for a deleted row, from tsync_tomb_<table>, where the delete trigger keeps the last values so a
 * resurrected row shows the latest value of each field.
 *
 * Per replicated table T the store keeps:
 *   tsync_clk_T(key..., m)   clock metadata blob per row (meta.c)
 *   tsync_tomb_T(all cols)   values of rows that do not currently exist
 *
 * A column may have a merge policy other than LWW (tsync_tables.policies; store/policy.c makes
 * the triggers that keep a max or min column a register locally).
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Kept as a REAL (a CAST costs on every captured write); sealing reads it as integer ms. */
#define WALL_SQL "((julianday('now') - 2440587.5) * 86400000.0)"

static void table_free(tsync__table *t)
{
    sqlite3_finalize(t->get_clk);
    sqlite3_finalize(t->put_clk);
    sqlite3_finalize(t->upd_clk);
    sqlite3_finalize(t->get_row);
    sqlite3_finalize(t->get_tomb);
    sqlite3_finalize(t->del_tomb);
    sqlite3_finalize(t->exists_row);
    sqlite3_finalize(t->seal_scan);
    sqlite3_finalize(t->seal_keys);
    sqlite3_finalize(t->seal_run);
    for (int i = 0; i < t->ncols; i++) free(t->cols[i]);
    free(t->cols);
    free(t->name);
    /* Built on sqlite3_str: SQLite's allocator. */
    sqlite3_free(t->qname);
    sqlite3_free(t->qclk);
    sqlite3_free(t->qtomb);
    sqlite3_free(t->pk_where);
    sqlite3_free(t->all_cols);
    memset(t, 0, sizeof *t);
}

void tsync__tables_free(tsync_store *s)
{
    for (int i = 0; i < s->ntables; i++) table_free(&s->tables[i]);
    free(s->tables);
    s->tables = NULL;
    s->ntables = 0;
}

tsync__table *tsync__table_by_name(tsync_store *s, const char *name, size_t len)
{
    for (int i = 0; i < s->ntables; i++)
        if (tsync__name_eq(s->tables[i].name, strlen(s->tables[i].name), name, len))
            return &s->tables[i];
    return NULL;
}

int tsync__col_by_name(const tsync__table *t, const char *name, size_t len)
{
    for (int i = 0; i < t->ncols; i++)
        if (tsync__name_eq(t->cols[i], strlen(t->cols[i]), name, len)) return i;
    return -1;
}

static int prep(tsync_store *s, sqlite3_stmt **st, const char *sql)
{
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    return rc == SQLITE_OK ? 0 : tsync__err_sqlite(s->db, rc, "prepare");
}

static int table_build(tsync_store *s, tsync__table *t)
{
    sqlite3_str *w = sqlite3_str_new(NULL), *all = sqlite3_str_new(NULL);
    for (int i = 0; i < t->npk; i++) {
        if (i) sqlite3_str_appendall(w, " AND ");
        tsync__sql_ident(w, "", t->cols[t->pk[i]]);
        sqlite3_str_appendf(w, "=?%d", i + 1);
    }
    for (int i = 0; i < t->ncols; i++) {
        if (i) sqlite3_str_appendchar(all, 1, ',');
        tsync__sql_ident(all, "", t->cols[i]);
    }
    t->qname = tsync__sql_quote_ident("", t->name);
    t->qclk = tsync__sql_quote_ident("tsync_clk_", t->name);
    t->qtomb = tsync__sql_quote_ident("tsync_tomb_", t->name);
    t->pk_where = tsync__sql_finish(w);
    t->all_cols = tsync__sql_finish(all);
    if (!t->pk_where || !t->all_cols || !t->qname || !t->qclk || !t->qtomb)
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    int rc = 0;
#define PREP(field, ...)                                                                           \
    do {                                                                                           \
        if (rc == 0) {                                                                             \
            char *sql = sqlite3_mprintf(__VA_ARGS__);                                              \
            rc = sql ? prep(s, &t->field, sql) : tsync__err(TSYNC_ENOMEM, "out of memory");        \
            sqlite3_free(sql);                                                                     \
        }                                                                                          \
    } while (0)
    PREP(get_clk, "SELECT tsync_m FROM %s WHERE %s", t->qclk, t->pk_where);
    {
        sqlite3_str *ins = sqlite3_str_new(NULL);
        for (int i = 0; i < t->npk; i++) {
            tsync__sql_ident(ins, "", t->cols[t->pk[i]]);
            sqlite3_str_appendchar(ins, 1, ',');
        }
        sqlite3_str_appendall(ins, "tsync_m) VALUES(");
        for (int i = 0; i <= t->npk; i++) sqlite3_str_appendf(ins, "%s?%d", i ? "," : "", i + 1);
        char *cols = tsync__sql_finish(ins);
        if (!cols && rc == 0) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        PREP(put_clk, "INSERT OR REPLACE INTO %s(%s)", t->qclk, cols);
        sqlite3_free(cols);
    }
    PREP(upd_clk, "UPDATE %s SET tsync_m=?%d WHERE %s", t->qclk, t->npk + 1, t->pk_where);
    PREP(get_row, "SELECT %s FROM %s WHERE %s", t->all_cols, t->qname, t->pk_where);
    PREP(get_tomb, "SELECT %s FROM %s WHERE %s", t->all_cols, t->qtomb, t->pk_where);
    PREP(del_tomb, "DELETE FROM %s WHERE %s", t->qtomb, t->pk_where);
    PREP(exists_row, "SELECT 1 FROM %s WHERE %s", t->qname, t->pk_where);
#undef PREP
    return rc;
}

static int json_names(const char *text, char ***out, int *n)
{
    json_error_t je;
    json_t *a = json_loads(text, 0, &je);
    if (!a || !json_is_array(a)) {
        json_decref(a);
        return tsync__err(TSYNC_ECORRUPT, "tsync_tables holds a malformed column list");
    }
    *n = (int)json_array_size(a);
    *out = calloc((size_t)*n + 1, sizeof **out);
    for (int i = 0; *out && i < *n; i++)
        (*out)[i] = strdup(json_string_value(json_array_get(a, (size_t)i)) ?: "");
    json_decref(a);
    return *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

static void free_names(char **v, int n)
{
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

int tsync__tables_refresh(tsync_store *s)
{
    sqlite3_stmt *st;
    int ver = -1;
    if ((st = tsync__prep(s, "PRAGMA schema_version"))) {
        if (sqlite3_step(st) == SQLITE_ROW) ver = sqlite3_column_int(st, 0);
        sqlite3_reset(st);
    }
    if (ver == s->schema_version && s->tables) return 0;
    tsync__tables_free(s);
    int rc = sqlite3_prepare_v2(
        s->db, "SELECT id, name, cols, pk, counters, policies FROM tsync_tables ORDER BY id", -1,
        &st, NULL);
    /* A database of an older build opened read-only has no policies column yet (store.c adds it
     * at the first read-write open): its tables have none. */
    if (rc != SQLITE_OK)
        rc = sqlite3_prepare_v2(
            s->db, "SELECT id, name, cols, pk, counters, NULL FROM tsync_tables ORDER BY id", -1,
            &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read replicated tables");
    int cap = 0;
    rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (s->ntables == cap) {
            cap = cap ? cap * 2 : 8;
            tsync__table *nt = realloc(s->tables, (size_t)cap * sizeof *nt);
            if (!nt) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            s->tables = nt;
        }
        tsync__table *t = &s->tables[s->ntables];
        memset(t, 0, sizeof *t);
        s->ntables++;
        t->id = sqlite3_column_int(st, 0);
        t->name = strdup((const char *)sqlite3_column_text(st, 1));
        char **pk = NULL, **ctr = NULL;
        int npk = 0, nctr = 0;
        rc = json_names((const char *)sqlite3_column_text(st, 2), &t->cols, &t->ncols);
        if (rc == 0) rc = json_names((const char *)sqlite3_column_text(st, 3), &pk, &npk);
        if (rc == 0) rc = json_names((const char *)sqlite3_column_text(st, 4), &ctr, &nctr);
        if (rc == 0 && (npk < 1 || npk > TSYNC__MAX_PK_COLS || t->ncols > TSYNC__MAX_COLS))
            rc = tsync__err(TSYNC_ECORRUPT, "tsync_tables: bad definition of table %s", t->name);
        t->npk = npk;
        for (int i = 0; rc == 0 && i < npk; i++) {
            t->pk[i] = tsync__col_by_name(t, pk[i], strlen(pk[i]));
            if (t->pk[i] < 0)
                rc = tsync__err(TSYNC_ECORRUPT, "tsync_tables: bad key of %s", t->name);
            else
                t->is_pk[t->pk[i]] = 1;
        }
        for (int i = 0; rc == 0 && i < nctr; i++) {
            int c = tsync__col_by_name(t, ctr[i], strlen(ctr[i]));
            if (c < 0)
                rc = tsync__err(TSYNC_ECORRUPT, "tsync_tables: bad counter of %s", t->name);
            else
                t->is_counter[c] = 1;
        }
        free_names(pk, npk);
        free_names(ctr, nctr);
        if (rc == 0) rc = tsync__policies_parse(t, (const char *)sqlite3_column_text(st, 5));
        if (rc == 0) rc = table_build(s, t);
    }
    sqlite3_finalize(st);
    if (rc) {
        tsync__tables_free(s);
        return rc;
    }
    s->schema_version = ver;
    return 0;
}

/* ---------------------------------------------------------------- replicate */

typedef struct {
    char *name, *type;
    int notnull, has_default, pk, hidden;
} colinfo;

static int has_check_constraint(const char *sql)
{
    /* The word CHECK followed by "(" outside quotes is a CHECK constraint. */
    int q = 0;
    for (const char *c = sql; *c; c++) {
        if (q) {
            if (*c == q) q = 0;
            continue;
        }
        if (*c == '\'' || *c == '"' || *c == '`' || *c == '[') {
            q = *c == '[' ? ']' : *c;
            continue;
        }
        if (c[0] == '-' && c[1] == '-') {
            while (c[1] && c[1] != '\n') c++;
            continue;
        }
        if (c[0] == '/' && c[1] == '*') {
            const char *e = strstr(c + 2, "*/");
            if (!e) break;
            c = e + 1;
            continue;
        }
        if ((c == sql || !(isalnum((unsigned char)c[-1]) || c[-1] == '_')) &&
            strncasecmp(c, "check", 5) == 0) {
            const char *d = c + 5;
            while (isspace((unsigned char)*d)) d++;
            if (*d == '(') return 1;
        }
    }
    return 0;
}

int tsync__sql_has_check(const char *sql)
{
    return has_check_constraint(sql);
}

/* ---------------------------------------------------------------- capture triggers */

enum {
    CAP_SHADOW = 1,   /* create tsync_clk_T and tsync_tomb_T */
    CAP_EXISTING = 2, /* record the rows already in T as local inserts */
    CAP_REPLACE = 4,  /* drop the triggers first (the table's columns or counters changed) */
};

/* Appends to sql what captures writes to a table: the shadow tables and existing rows when asked,
 * and the four triggers (and those of tsync__register_sql, store/policy.c). cols: every column in
 * ordinal order (ordinal i is bit i of the changed mask); pkord: the key's ordinals in key order;
 * is_counter, policy: by ordinal (policy may be NULL: all LWW). */
static bool capture_sql(sqlite3_str *sql, int tid, const char *table, char *const *cols, int ncols,
                        const int *pkord, int npk, const uint8_t *is_counter, const uint8_t *policy,
                        int what)
{
    char *qt = tsync__sql_quote_ident("", table),
         *qclk = tsync__sql_quote_ident("tsync_clk_", table),
         *qtomb = tsync__sql_quote_ident("tsync_tomb_", table);
    char *qtr[4] = {
        tsync__sql_quote_ident("tsync_ai_", table), tsync__sql_quote_ident("tsync_au_", table),
        tsync__sql_quote_ident("tsync_ak_", table), tsync__sql_quote_ident("tsync_ad_", table)};
    char *qc[TSYNC__MAX_COLS];
    uint8_t is_pk[TSYNC__MAX_COLS] = {0};
    for (int i = 0; i < ncols; i++) qc[i] = tsync__sql_quote_ident("", cols[i]);
    for (int i = 0; i < npk; i++) is_pk[pkord[i]] = 1;
    bool ok = qt && qclk && qtomb;
    for (int i = 0; i < 4; i++) ok &= qtr[i] != NULL;
    for (int i = 0; i < ncols; i++) ok &= qc[i] != NULL;
    /* The parts of the triggers, each built once and used in several. */
    enum {
        K,
        KCOLS,
        NEWK,
        OLDK,
        ALLC,
        OLDALL,
        SAME,
        MASK,
        NULLK,
        TIDX,
        TIDE,
        TIDEN,
        ROWLEN,
        NPARTS
    };
    sqlite3_str *b[NPARTS];
    const char *v[NPARTS];
    for (int i = 0; i < NPARTS; i++) b[i] = sqlite3_str_new(NULL);
    if (!ok) goto out;
    for (int i = 0; i < npk; i++) {
        const char *sep = i ? "," : "", *q = qc[pkord[i]];
        sqlite3_str_appendf(b[K], "%sk%d", sep, i);
        sqlite3_str_appendf(b[KCOLS], "%s%s", sep, q);
        sqlite3_str_appendf(b[NEWK], "%sNEW.%s", sep, q);
        sqlite3_str_appendf(b[OLDK], "%sOLD.%s", sep, q);
        sqlite3_str_appendf(b[SAME], "%sNEW.%s IS OLD.%s", i ? " AND " : "", q, q);
    }
    /* A NULL key cannot name a row on another till (NULL never equals NULL): refuse the
     * write itself, so it fails where the app can see it instead of at sealing. Folded into the
     * table id of the pending row (TIDEN) like the checks below: a statement of its own cost as
     * much as the rest of the trigger. */
    sqlite3_str_appendall(b[NULLK], "WHEN ");
    for (int i = 0; i < npk; i++)
        sqlite3_str_appendf(b[NULLK], "%sNEW.%s IS NULL", i ? " OR " : "", qc[pkord[i]]);
    sqlite3_str_appendall(b[NULLK], " THEN RAISE(ABORT, 'tillsync: the primary key of a "
                                    "replicated table may not be NULL') ");
    /* A counter holds integers only: a REAL or TEXT could not be counted the same way on
     * every till, so the write is refused where the app sees it. The check is folded into
     * the table id the pending row records: one statement per captured write, not two. */
    int nguard = 0;
    for (int j = 0; j < ncols; j++)
        if (is_counter[j])
            sqlite3_str_appendf(b[TIDX], "%stypeof(NEW.%s) != 'integer'", nguard++ ? " OR " : "",
                                qc[j]);
    /* A row larger than TSYNC_MAX_ROW_BYTES could not be sealed into any batch: refuse the write
     * itself, so nothing of it commits, instead of accepting a row that can never leave this
     * till. CAST AS BLOB makes length() count the bytes of text, not its characters. */
    for (int j = 0; j < ncols; j++)
        sqlite3_str_appendf(b[ROWLEN], "%sifnull(length(CAST(NEW.%s AS BLOB)),0)", j ? "+" : "",
                            qc[j]);
    sqlite3_str_appendall(b[TIDE], "CASE ");
    if (nguard)
        sqlite3_str_appendf(b[TIDE],
                            "WHEN %s THEN RAISE(ABORT, 'tillsync: counter columns take integers "
                            "only') ",
                            sqlite3_str_value(b[TIDX]));
    /* %q doubles the table name's single quotes inside the SQL string literal. */
    sqlite3_str_appendf(b[TIDE],
                        "WHEN %s > %u THEN RAISE(ABORT, 'tillsync: a row of table %q is over the "
                        "per-row limit of %u bytes (the sum of its values'' lengths); keep large "
                        "files outside replicated tables') ELSE %d END",
                        sqlite3_str_value(b[ROWLEN]) ? sqlite3_str_value(b[ROWLEN]) : "0",
                        (unsigned)TSYNC_MAX_ROW_BYTES, table, (unsigned)TSYNC_MAX_ROW_BYTES, tid);
    /* The same with the NULL key check first, for the triggers that write a new key. */
    sqlite3_str_appendf(b[TIDEN], "CASE %s%s", sqlite3_str_value(b[NULLK]),
                        sqlite3_str_value(b[TIDE]) + strlen("CASE "));
    int any = 0;
    for (int i = 0; i < ncols; i++) {
        sqlite3_str_appendf(b[ALLC], "%s%s", i ? "," : "", qc[i]);
        sqlite3_str_appendf(b[OLDALL], "%sOLD.%s", i ? "," : "", qc[i]);
        if (!is_pk[i]) {
            /* Changed: another value byte for byte, or another type. IS NOT alone calls 7 and 7.0
             * equal, and 'a' and 'A' in a NOCASE column: such an update was never captured, and
             * the writing till kept a value no other till had. */
            sqlite3_str_appendf(
                b[MASK],
                "%s(CASE WHEN NEW.%s IS NOT OLD.%s COLLATE BINARY OR typeof(NEW.%s) "
                "!= typeof(OLD.%s) THEN %lld ELSE 0 END)",
                any ? "|" : "", qc[i], qc[i], qc[i], qc[i], 1LL << i);
            any = 1;
        }
    }
    if (!any) sqlite3_str_appendall(b[MASK], "0");
    for (int i = 0; i < NPARTS; i++) {
        ok &= sqlite3_str_errcode(b[i]) == SQLITE_OK;
        v[i] = sqlite3_str_value(b[i]) ? sqlite3_str_value(b[i]) : "";
    }
    if (!ok) goto out;
    if (what & CAP_SHADOW) {
        /* Shadow tables: columns without a declared type keep values exactly as given. */
        sqlite3_str_appendf(sql,
                            "CREATE TABLE %s(%s, tsync_m BLOB, PRIMARY KEY(%s)) WITHOUT ROWID;",
                            qclk, v[KCOLS], v[KCOLS]);
        sqlite3_str_appendf(sql, "CREATE TABLE %s(%s, PRIMARY KEY(%s)) WITHOUT ROWID;", qtomb,
                            v[ALLC], v[KCOLS]);
    }
    if (what & CAP_REPLACE) {
        for (int i = 0; i < 4; i++) sqlite3_str_appendf(sql, "DROP TRIGGER IF EXISTS %s;", qtr[i]);
        tsync__register_drop_sql(sql, table);
    }
    tsync__register_sql(sql, table, qt, qtomb, qc, ncols, is_pk, policy, v[KCOLS], v[NEWK], v[SAME],
                        v[ALLC]);
    sqlite3_str_appendf(sql,
                        "CREATE TRIGGER %s AFTER INSERT ON %s BEGIN "
                        "INSERT INTO tsync_pending(tbl,op,mask,wall,%s) VALUES(%s,1,-1," WALL_SQL
                        ",%s); "
                        "END;",
                        qtr[0], qt, v[K], v[TIDEN], v[NEWK]);
    sqlite3_str_appendf(sql,
                        "CREATE TRIGGER %s AFTER UPDATE ON %s WHEN %s BEGIN "
                        "INSERT INTO tsync_pending(tbl,op,mask,wall,%s) VALUES(%s,2,%s," WALL_SQL
                        ",%s); "
                        "END;",
                        qtr[1], qt, v[SAME], v[K], v[TIDE], v[MASK], v[NEWK]);
    /* An UPDATE of the key is a delete of the old key and an insert of the new one. "OF key"
     * keeps this trigger (and its WHEN) out of every update that does not name the key. */
    sqlite3_str_appendf(
        sql,
        "CREATE TRIGGER %s AFTER UPDATE OF %s ON %s WHEN NOT (%s) "
        "BEGIN "
        "DELETE FROM %s WHERE (%s) IS (%s); "
        "INSERT INTO %s(%s) VALUES(%s); "
        "INSERT INTO tsync_pending(tbl,op,mask,wall,%s) VALUES(%d,3,0," WALL_SQL ",%s); "
        "INSERT INTO tsync_pending(tbl,op,mask,wall,%s) VALUES(%s,1,-1," WALL_SQL ",%s); "
        "END;",
        qtr[2], v[KCOLS], qt, v[SAME], qtomb, v[KCOLS], v[OLDK], qtomb, v[ALLC], v[OLDALL], v[K],
        tid, v[OLDK], v[K], v[TIDEN], v[NEWK]);
    sqlite3_str_appendf(sql,
                        "CREATE TRIGGER %s AFTER DELETE ON %s BEGIN "
                        "INSERT OR REPLACE INTO %s(%s) VALUES(%s); "
                        "INSERT INTO tsync_pending(tbl,op,mask,wall,%s) VALUES(%d,3,0," WALL_SQL
                        ",%s); "
                        "END;",
                        qtr[3], qt, qtomb, v[ALLC], v[OLDALL], v[K], tid, v[OLDK]);
    if (what & CAP_EXISTING)
        sqlite3_str_appendf(
            sql,
            "INSERT INTO tsync_pending(tbl,op,mask,wall,%s) SELECT %d,1,-1," WALL_SQL
            ",%s FROM %s;",
            v[K], tid, v[KCOLS], qt);
out:
    for (int i = 0; i < NPARTS; i++) sqlite3_free(sqlite3_str_finish(b[i]));
    sqlite3_free(qt), sqlite3_free(qclk), sqlite3_free(qtomb);
    for (int i = 0; i < 4; i++) sqlite3_free(qtr[i]);
    for (int i = 0; i < ncols; i++) sqlite3_free(qc[i]);
    return ok;
}

/* Runs SQL built by capture_sql or the like (ok: its parts were built), freeing the builder. */
static int exec_built(tsync_store *s, sqlite3_str *sql, bool ok)
{
    char *text = tsync__sql_finish(sql);
    int rc = ok && text ? tsync__exec(s, text) : tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_free(text);
    return rc;
}

/* Forgets the table cache so the next refresh reads tsync_tables again: a change of a table's
 * recorded columns or counters need not change PRAGMA schema_version by itself. */
static int tables_reload(tsync_store *s)
{
    tsync__tables_free(s);
    s->schema_version = -1;
    return tsync__tables_refresh(s);
}

/* Re-creates the capture triggers of a replicated table from its recorded definition. */
static int capture_rebuild(tsync_store *s, const char *table)
{
    int rc = tables_reload(s);
    if (rc) return rc;
    tsync__table *t = tsync__table_by_name(s, table, strlen(table));
    if (!t) return tsync__err(TSYNC_ENOTFOUND, "table %s is not replicated", table);
    sqlite3_str *sql = sqlite3_str_new(NULL);
    bool ok = capture_sql(sql, t->id, t->name, t->cols, t->ncols, t->pk, t->npk, t->is_counter,
                          t->policy, CAP_REPLACE);
    rc = exec_built(s, sql, ok);
    if (rc == 0) rc = tables_reload(s);
    return rc;
}

/* The version of the capture triggers this build writes, kept in tsync_meta 'capture'. 2: the
 * insert and update triggers refuse a row over TSYNC_MAX_ROW_BYTES. 3: one statement fewer per
 * captured insert (the NULL key check folded into the pending row's table id) and per delete
 * (the tombstone replaced in one statement). 4: an update that changes only a value's type or
 * its letters' case under a NOCASE collation is captured. */
#define CAPTURE_VERSION 4

int tsync__capture_upgrade(tsync_store *s)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT v FROM tsync_meta WHERE k='capture'");
    if (!st) return TSYNC_EIO;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (v >= CAPTURE_VERSION) return 0; /* the usual case: nothing to write */
    int rc = tsync__begin(s);
    if (rc) return rc;
    /* The triggers of tables replicated by an older build are made again from their recorded
     * definitions (the same path a migration that adds a column takes). */
    int n = s->ntables;
    char **names = calloc((size_t)n + 1, sizeof *names);
    if (!names) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++)
        if (!(names[i] = strdup(s->tables[i].name))) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++) rc = capture_rebuild(s, names[i]);
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
    if (rc == 0) {
        st = tsync__prep(s, "INSERT OR REPLACE INTO tsync_meta VALUES('capture', ?1)");
        if (!st) {
            rc = TSYNC_EIO;
        } else {
            sqlite3_bind_int(st, 1, CAPTURE_VERSION);
            int x = sqlite3_step(st);
            sqlite3_reset(st);
            if (x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "write metadata");
        }
    }
    if (rc) {
        tsync__rollback(s);
        tables_reload(s);
        return rc;
    }
    return tsync__commit(s);
}

/* Rewrites one JSON list column (cols or counters) of a tsync_tables row with names appended. */
static int append_names(tsync_store *s, const char *table, const char *field,
                        const char *const *names, int n)
{
    char q[96];
    snprintf(q, sizeof q, "SELECT %s FROM tsync_tables WHERE name=?1 COLLATE NOCASE", field);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, q, -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read replicated tables");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    json_t *a = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        a = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
    sqlite3_finalize(st);
    if (!json_is_array(a)) {
        json_decref(a);
        return tsync__err(TSYNC_ECORRUPT, "tsync_tables holds a malformed %s list for %s", field,
                          table);
    }
    for (int i = 0; i < n; i++) json_array_append_new(a, json_string(names[i]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (!text) return tsync__err(TSYNC_ENOMEM, "out of memory");
    snprintf(q, sizeof q, "UPDATE tsync_tables SET %s=?2 WHERE name=?1 COLLATE NOCASE", field);
    rc = sqlite3_prepare_v2(s->db, q, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        rc = rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "record table");
        sqlite3_finalize(st);
    } else {
        rc = tsync__err_sqlite(s->db, rc, "record table");
    }
    free(text);
    return rc;
}

int tsync__table_add_columns(tsync_store *s, const char *table, const char *const *cols, int n)
{
    int rc = tsync__tables_refresh(s);
    if (rc) return rc;
    tsync__table *t = tsync__table_by_name(s, table, strlen(table));
    if (!t) return tsync__err(TSYNC_ENOTFOUND, "table %s is not replicated", table);
    if (t->ncols + n > TSYNC__MAX_COLS)
        return tsync__err(TSYNC_EUNSUPPORTED, "table %s would have more than %d columns", table,
                          TSYNC__MAX_COLS);
    /* The tombstone keeps every column so that a resurrected row shows its latest values. */
    sqlite3_str *sql = sqlite3_str_new(NULL);
    for (int i = 0; i < n; i++) {
        sqlite3_str_appendf(sql, "ALTER TABLE %s ADD COLUMN ", t->qtomb);
        tsync__sql_ident(sql, "", cols[i]);
        sqlite3_str_appendchar(sql, 1, ';');
    }
    rc = exec_built(s, sql, true);
    if (rc == 0) rc = append_names(s, table, "cols", cols, n);
    if (rc == 0) rc = capture_rebuild(s, table);
    return rc;
}

int tsync__table_add_counter(tsync_store *s, const char *table, const char *col)
{
    int rc = append_names(s, table, "counters", &col, 1);
    if (rc == 0) rc = capture_rebuild(s, table);
    return rc;
}

static int replicate_any(tsync_store *s, const char *table, const char *const *counters,
                         size_t ncounters, const tsync_column_policy *policies, size_t npolicies);

int tsync__replicate_locked(tsync_store *s, const char *table, const char *const *counters,
                            size_t ncounters)
{
    return tsync__replicate_policies_locked(s, table, counters, ncounters, NULL, 0);
}

int tsync__replicate_policies_locked(tsync_store *s, const char *table, const char *const *counters,
                                     size_t ncounters, const tsync_column_policy *policies,
                                     size_t npolicies)
{
    if (!table || !*table) return tsync__err(TSYNC_EINVAL, "no table name given");
    if (strncasecmp(table, "tsync_", 6) == 0 || strncasecmp(table, "sqlite_", 7) == 0)
        return tsync__err(TSYNC_EINVAL, "table %s is internal and cannot be replicated", table);
    return replicate_any(s, table, counters, ncounters, policies, npolicies);
}

/* The library's own replicated tables (store/conflicts.c: tsync_resolved). */
int tsync__replicate_internal_locked(tsync_store *s, const char *table)
{
    return replicate_any(s, table, NULL, 0, NULL, 0);
}

static int replicate_any(tsync_store *s, const char *table, const char *const *counters,
                         size_t ncounters, const tsync_column_policy *policies, size_t npolicies)
{
    int rc = tsync__tables_refresh(s);
    if (rc) return rc;
    colinfo cols[TSYNC__MAX_COLS + 1];
    int ncols = 0, npk = 0, pkord[TSYNC__MAX_PK_COLS] = {0};
    memset(cols, 0, sizeof cols);
    sqlite3_stmt *st = NULL;
    char *table_sql = NULL, *canon = NULL;
    int without_rowid = 0;

    if (tsync__table_by_name(s, table, strlen(table))) {
        rc = tsync__err(TSYNC_EEXISTS, "table %s is already replicated", table);
        goto out;
    }
    /* Found as SQLite finds it (any case); recorded, and sent to other tills, as the schema
     * spells it (docs/DATA_MODEL.md, "Names"). */
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT sql, name FROM sqlite_schema WHERE type='table' AND "
                            "name=?1 COLLATE NOCASE",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, rc, "read schema");
        goto out;
    }
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
        table_sql = strdup((const char *)sqlite3_column_text(st, 0));
        canon = strdup((const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    st = NULL;
    if (!table_sql || !canon) {
        rc = table_sql ? tsync__err(TSYNC_ENOMEM, "out of memory")
                       : tsync__err(TSYNC_ENOTFOUND, "no such table: %s", table);
        goto out;
    }
    table = canon;
    /* table_xinfo shows generated columns too (hidden 2 or 3). */
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk, hidden "
                            "FROM pragma_table_xinfo(?1) ORDER BY cid",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, rc, "read columns");
        goto out;
    }
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (ncols == TSYNC__MAX_COLS) {
            rc = tsync__err(TSYNC_EUNSUPPORTED, "table %s has more than %d columns", table,
                            TSYNC__MAX_COLS);
            goto out;
        }
        colinfo *c = &cols[ncols++];
        c->name = strdup((const char *)sqlite3_column_text(st, 0));
        c->type =
            strdup(sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "");
        c->notnull = sqlite3_column_int(st, 2);
        c->has_default = sqlite3_column_int(st, 3);
        c->pk = sqlite3_column_int(st, 4);
        c->hidden = sqlite3_column_int(st, 5);
        if (c->hidden) {
            rc = tsync__err(TSYNC_EUNSUPPORTED,
                            "table %s: column %s is generated or hidden; replicated tables cannot "
                            "have generated columns",
                            table, c->name);
            goto out;
        }
        if (c->pk) {
            if (c->pk > TSYNC__MAX_PK_COLS) {
                rc = tsync__err(TSYNC_EUNSUPPORTED,
                                "table %s: a primary key of more than %d "
                                "columns is not supported",
                                table, TSYNC__MAX_PK_COLS);
                goto out;
            }
            pkord[c->pk - 1] = ncols - 1;
            if (c->pk > npk) npk = c->pk;
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    {
        /* WITHOUT ROWID tables are fine; "INTEGER PRIMARY KEY" in a rowid table is a device-local
         * rowid alias and cannot identify a row across tills. */
        sqlite3_stmt *w;
        if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM pragma_index_list(?1) WHERE origin='pk'", -1,
                               &w, NULL) == SQLITE_OK) {
            sqlite3_bind_text(w, 1, table, -1, SQLITE_STATIC);
            int has_pk_index = sqlite3_step(w) == SQLITE_ROW;
            sqlite3_finalize(w);
            /* A WITHOUT ROWID table's key is its b-tree key: it has no separate pk index entry
             * when written as INTEGER PRIMARY KEY, so check the table definition itself. */
            const char *e = table_sql + strlen(table_sql);
            while (e > table_sql && isspace((unsigned char)e[-1])) e--;
            without_rowid = e - table_sql > 13 && strncasecmp(e - 13, "WITHOUT ROWID", 13) == 0;
            if (npk == 1 && !has_pk_index && !without_rowid) {
                rc = tsync__err(TSYNC_EUNSUPPORTED,
                                "table %s: INTEGER PRIMARY KEY is a device-local rowid and cannot "
                                "identify a row across tills; use a text key, e.g. id TEXT PRIMARY "
                                "KEY DEFAULT (uuid7())",
                                table);
                goto out;
            }
        }
    }
    if (npk == 0) {
        rc = tsync__err(TSYNC_EUNSUPPORTED,
                        "table %s has no primary key; add one that is unique "
                        "across devices, e.g. id TEXT PRIMARY KEY DEFAULT (uuid7())",
                        table);
        goto out;
    }
    for (int i = 0; i < ncols; i++)
        if (cols[i].notnull && !cols[i].has_default && !cols[i].pk) {
            rc = tsync__err(TSYNC_EUNSUPPORTED,
                            "table %s: column %s is NOT NULL without a DEFAULT; a row may be built "
                            "from partial changes, so give it a DEFAULT",
                            table, cols[i].name);
            goto out;
        }
    {
        sqlite3_stmt *u;
        if (sqlite3_prepare_v2(s->db,
                               "SELECT name FROM pragma_index_list(?1) WHERE \"unique\" AND "
                               "origin != 'pk'",
                               -1, &u, NULL) == SQLITE_OK) {
            sqlite3_bind_text(u, 1, table, -1, SQLITE_STATIC);
            if (sqlite3_step(u) == SQLITE_ROW)
                rc = tsync__err(
                    TSYNC_EUNSUPPORTED,
                    "table %s: UNIQUE constraints and unique indexes besides the primary "
                    "key cannot hold across tills that write offline; drop it (a plain "
                    "index is fine)",
                    table);
            sqlite3_finalize(u);
            if (rc) goto out;
        }
        if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM pragma_foreign_key_list(?1)", -1, &u, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_text(u, 1, table, -1, SQLITE_STATIC);
            if (sqlite3_step(u) == SQLITE_ROW)
                rc = tsync__err(TSYNC_EUNSUPPORTED,
                                "table %s: FOREIGN KEY constraints cannot hold across tills (a "
                                "child may arrive for a parent deleted elsewhere); remove them",
                                table);
            sqlite3_finalize(u);
            if (rc) goto out;
        }
        if (has_check_constraint(table_sql)) {
            rc = tsync__err(TSYNC_EUNSUPPORTED,
                            "table %s: CHECK constraints cannot hold across tills (a merged value "
                            "could violate one); remove them and validate in the app",
                            table);
            goto out;
        }
    }
    {
        /* Rows already in the table become local inserts; one over TSYNC_MAX_ROW_BYTES could not
         * be sealed, so it is refused here as the capture trigger would refuse writing it. */
        sqlite3_str *b = sqlite3_str_new(NULL);
        sqlite3_str_appendall(b, "SELECT ");
        for (int i = 0; i < ncols; i++) {
            sqlite3_str_appendall(b, i ? "+ifnull(length(CAST(" : "ifnull(length(CAST(");
            tsync__sql_ident(b, "", cols[i].name);
            sqlite3_str_appendall(b, " AS BLOB)),0)");
        }
        sqlite3_str_appendall(b, " AS n FROM ");
        tsync__sql_ident(b, "", table);
        sqlite3_str_appendf(b, " WHERE n > %u LIMIT 1", (unsigned)TSYNC_MAX_ROW_BYTES);
        char *q = tsync__sql_finish(b);
        if (!q) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        } else if (sqlite3_prepare_v2(s->db, q, -1, &st, NULL) != SQLITE_OK) {
            rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "read table");
        } else {
            int x = sqlite3_step(st);
            if (x == SQLITE_ROW)
                rc = tsync__err(TSYNC_EUNSUPPORTED,
                                "table %s has a row of %lld bytes, over the per-row limit of %u "
                                "bytes a replicated table takes; make it smaller first",
                                table, (long long)sqlite3_column_int64(st, 0),
                                (unsigned)TSYNC_MAX_ROW_BYTES);
            else if (x != SQLITE_DONE)
                rc = tsync__err_sqlite(s->db, x, "read table");
        }
        sqlite3_finalize(st);
        st = NULL;
        sqlite3_free(q);
        if (rc) goto out;
    }
    json_t *jcols = json_array(), *jpk = json_array(), *jctr = json_array();
    for (int i = 0; i < ncols; i++) json_array_append_new(jcols, json_string(cols[i].name));
    for (int i = 0; i < npk; i++) json_array_append_new(jpk, json_string(cols[pkord[i]].name));
    for (size_t i = 0; rc == 0 && i < ncounters; i++) {
        int c = -1;
        for (int j = 0; j < ncols; j++)
            if (tsync__name_eqz(cols[j].name, counters[i])) c = j;
        if (c < 0)
            rc = tsync__err(TSYNC_ENOTFOUND, "table %s has no column %s", table, counters[i]);
        else if (cols[c].pk)
            rc = tsync__err(TSYNC_EUNSUPPORTED,
                            "column %s is part of the key and cannot be a "
                            "counter",
                            counters[i]);
        else if (!strcasestr(cols[c].type, "INT"))
            rc = tsync__err(TSYNC_EUNSUPPORTED, "counter column %s.%s must be declared INTEGER",
                            table, counters[i]);
        else
            json_array_append_new(jctr, json_string(cols[c].name));
    }
    /* Column policies: by ordinal here, by name (as the table spells it) in tsync_tables. */
    uint8_t policy[TSYNC__MAX_COLS] = {0};
    json_t *jpol = json_object();
    for (size_t i = 0; rc == 0 && i < npolicies; i++) {
        const char *pn = policies[i].column ? policies[i].column : "";
        int c = -1;
        for (int j = 0; j < ncols; j++)
            if (tsync__name_eqz(cols[j].name, pn)) c = j;
        int is_ctr = 0;
        for (size_t j = 0; c >= 0 && j < ncounters; j++)
            is_ctr |= tsync__name_eqz(cols[c].name, counters[j]);
        if (!tsync__policy_name((int)policies[i].policy))
            rc = tsync__err(TSYNC_EINVAL, "column %s: unknown merge policy %d (max, min or review)",
                            pn, (int)policies[i].policy);
        else if (c < 0)
            rc = tsync__err(TSYNC_ENOTFOUND, "table %s has no column %s", table, pn);
        else if (cols[c].pk)
            rc = tsync__err(TSYNC_EUNSUPPORTED,
                            "column %s is part of the key and cannot have a merge policy", pn);
        else if (is_ctr || policy[c])
            rc = tsync__err(TSYNC_EINVAL,
                            "column %s.%s is given two merge rules; a column is a counter, max, "
                            "min or review, or none",
                            table, cols[c].name);
        else {
            policy[c] = (uint8_t)policies[i].policy;
            json_object_set_new(jpol, cols[c].name,
                                json_string(tsync__policy_name((int)policies[i].policy)));
        }
    }
    char *scols = json_dumps(jcols, JSON_COMPACT), *spk = json_dumps(jpk, JSON_COMPACT),
         *sctr = json_dumps(jctr, JSON_COMPACT), *spol = json_dumps(jpol, JSON_COMPACT);
    json_decref(jcols), json_decref(jpk), json_decref(jctr), json_decref(jpol);
    if (rc == 0) {
        rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO tsync_tables(name, cols, npk, pk, counters, "
                                "policies) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                                -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, scols, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 3, npk);
            sqlite3_bind_text(st, 4, spk, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 5, sctr, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 6, spol, -1, SQLITE_STATIC);
            rc = sqlite3_step(st) == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "record table");
        } else {
            rc = tsync__err_sqlite(s->db, rc, "record table");
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    free(scols), free(spk), free(sctr), free(spol);
    if (rc) goto out;
    {
        int tid = (int)sqlite3_last_insert_rowid(s->db);
        char *names[TSYNC__MAX_COLS];
        uint8_t is_counter[TSYNC__MAX_COLS] = {0};
        for (int i = 0; i < ncols; i++) {
            names[i] = cols[i].name;
            for (size_t j = 0; j < ncounters; j++)
                if (tsync__name_eqz(cols[i].name, counters[j])) is_counter[i] = 1;
        }
        sqlite3_str *sql = sqlite3_str_new(NULL);
        bool ok = capture_sql(sql, tid, table, names, ncols, pkord, npk, is_counter, policy,
                              CAP_SHADOW | CAP_EXISTING);
        rc = exec_built(s, sql, ok);
    }
    if (rc == 0) rc = tables_reload(s);
out:
    if (st) sqlite3_finalize(st);
    for (int i = 0; i < ncols; i++) free(cols[i].name), free(cols[i].type);
    free(table_sql);
    free(canon);
    return rc;
}

int tsync_store_replicate(tsync_store *s, const char *table, const char *const *counters,
                          size_t ncounters)
{
    tsync_replicate_options o = TSYNC_REPLICATE_OPTIONS_INIT;
    o.counters = counters;
    o.ncounters = ncounters;
    return tsync_store_replicate_ext(s, table, &o);
}

int tsync_store_replicate_ext(tsync_store *s, const char *table,
                              const tsync_replicate_options *opts)
{
    static const tsync_replicate_options none = TSYNC_REPLICATE_OPTIONS_INIT;
    if (!opts) opts = &none;
    if (opts->version < 1 || opts->version > TSYNC_REPLICATE_OPTIONS_VERSION)
        return tsync__err(TSYNC_EVERSION,
                          "tsync_replicate_options version %u: this library knows 1",
                          opts->version);
    if (!table || !*table) return tsync__err(TSYNC_EINVAL, "no table name given");
    int rc = tsync__begin(s);
    if (rc) return rc;
    rc = tsync__replicate_policies_locked(s, table, opts->counters, opts->ncounters, opts->policies,
                                          opts->npolicies);
    /* The rows already there are local inserts: sealed first, they get their clocks before
     * parked changes from other tills are applied against them. */
    if (rc == 0) rc = tsync__seal_locked(s, NULL);
    if (rc == 0) rc = tsync__unpark(s, table);
    if (rc) {
        tsync__rollback(s);
        /* The failed transaction may have left a half-built cache. */
        tsync__tables_free(s);
        s->schema_version = -1;
        tsync__tables_refresh(s);
        return rc;
    }
    rc = tsync__commit(s);
    if (rc == 0) rc = tsync_store_seal(s, NULL);
    return rc;
}
