/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/sqlite_vtab.c — the tables tillsync_conflicts and tillsync_status on an app's own
 * connection (tsync_sqlite_register): eponymous virtual tables, read-only, with typed columns.
 * tillsync_conflicts reads the same query as tsync_store_conflicts_json
 * (tsync__conflicts_prepare), one row per recorded conflict; tillsync_status is one row, the
 * fields of tsync_store_status_get. Both read through tillsync's own connection
 * (store/sqlite_fn.c), so they show what is committed. docs/SQLITE_EXTENSION.md lists the columns.
 */
#include <sodium.h>
#include <stdlib.h>

#include "sqlite_int.h"
#include "tillsync/status.h"

typedef struct {
    sqlite3_vtab base;
    tsync__sqlctx *c;
    int status; /* 1: tillsync_status, 0: tillsync_conflicts */
} vtab;

typedef struct {
    sqlite3_vtab_cursor base;
    sqlite3_stmt *st;      /* tillsync_conflicts: the query, on the row shown */
    tsync_store_status ss; /* tillsync_status: the one row */
    int eof;
    sqlite3_int64 row;
} cursor;

/* Columns in the order of tsync__conflicts_prepare's query. */
static const char CONFLICTS_SCHEMA[] =
    "CREATE TABLE x(id INTEGER, at_ms INTEGER, table_name TEXT, row_key TEXT, column_name TEXT, "
    "winner_value ANY, winner_hlc INTEGER, winner_site TEXT, loser_value ANY, loser_hlc INTEGER, "
    "loser_site TEXT, cid TEXT, resolved_how TEXT, resolved_value ANY, resolved_site TEXT, "
    "resolved_at_ms INTEGER, kind INTEGER)";
enum { C_WIN_SITE = 7, C_LOSE_SITE = 10, C_CID = 11, C_RES_SITE = 14 };

static const char STATUS_SCHEMA[] =
    "CREATE TABLE x(site TEXT, public_key TEXT, state TEXT, held INTEGER, parked INTEGER, "
    "conflicts INTEGER, forks INTEGER, unsealed INTEGER, rollbacks INTEGER, "
    "schema_mismatches INTEGER, unsealable TEXT, signed_migration_error TEXT, "
    "last_rollback TEXT, log_batches INTEGER, log_bytes INTEGER, log_max_batches INTEGER, "
    "log_max_bytes INTEGER, log_max_age_ms INTEGER, log_horizons INTEGER, log_behind INTEGER)";

static int vt_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                      char **err, const char *schema, int status)
{
    int rc = sqlite3_declare_vtab(db, schema);
    if (rc != SQLITE_OK) return rc;
    vtab *v = sqlite3_malloc(sizeof *v);
    if (!v) return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->c = aux;
    v->status = status;
    *out = &v->base;
    return SQLITE_OK;
}

static int conflicts_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                             sqlite3_vtab **out, char **err)
{
    return vt_connect(db, aux, argc, argv, out, err, CONFLICTS_SCHEMA, 0);
}

static int status_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                          sqlite3_vtab **out, char **err)
{
    return vt_connect(db, aux, argc, argv, out, err, STATUS_SCHEMA, 1);
}

static int vt_disconnect(sqlite3_vtab *v)
{
    sqlite3_free(v);
    return SQLITE_OK;
}

/* No constraint is used: SQLite filters the rows itself (conflicts are few, status is one). */
static int vt_best_index(sqlite3_vtab *v, sqlite3_index_info *info)
{
    info->estimatedCost = ((vtab *)v)->status ? 1 : 1000;
    info->estimatedRows = ((vtab *)v)->status ? 1 : 1000;
    return SQLITE_OK;
}

static int vt_open_cursor(sqlite3_vtab *v, sqlite3_vtab_cursor **out)
{
    cursor *k = sqlite3_malloc(sizeof *k);
    if (!k) return SQLITE_NOMEM;
    memset(k, 0, sizeof *k);
    k->eof = 1;
    *out = &k->base;
    return SQLITE_OK;
}

static void cursor_reset(cursor *k)
{
    sqlite3_finalize(k->st);
    k->st = NULL;
    tsync_store_status_clear(&k->ss);
    k->eof = 1;
    k->row = 0;
}

static int vt_close_cursor(sqlite3_vtab_cursor *cur)
{
    cursor_reset((cursor *)cur);
    sqlite3_free(cur);
    return SQLITE_OK;
}

/* A store error as the statement's error: tillsync's one line. */
static int vtab_err(sqlite3_vtab *v)
{
    sqlite3_free(v->zErrMsg);
    v->zErrMsg = sqlite3_mprintf("%s", tsync_error_last()->message);
    return SQLITE_ERROR;
}

static int vt_next(sqlite3_vtab_cursor *cur)
{
    cursor *k = (cursor *)cur;
    k->row++;
    if (!k->st) {
        k->eof = 1; /* tillsync_status: one row */
        return SQLITE_OK;
    }
    int rc = sqlite3_step(k->st);
    k->eof = rc != SQLITE_ROW;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return SQLITE_OK;
    tsync__err(TSYNC_EIO, "tillsync_conflicts: cannot read the conflicts: %s",
               sqlite3_errmsg(sqlite3_db_handle(k->st)));
    return vtab_err(cur->pVtab);
}

static int vt_filter(sqlite3_vtab_cursor *cur, int idx, const char *idxstr, int argc,
                     sqlite3_value **argv)
{
    cursor *k = (cursor *)cur;
    vtab *v = (vtab *)cur->pVtab;
    cursor_reset(k);
    tsync_store *s;
    int rc = tsync__sqlctx_store(v->c, v->status ? "tillsync_status" : "tillsync_conflicts", &s);
    if (rc == 0 && v->status) {
        k->ss.version = TSYNC_STORE_STATUS_VERSION;
        rc = tsync_store_status_get(&k->ss, s);
        k->eof = rc != 0;
    } else if (rc == 0) {
        rc = tsync__conflicts_prepare(s, &k->st);
        if (rc == 0) {
            k->row = 0; /* vt_next() counts the first row as 1 */
            return vt_next(cur);
        }
    }
    return rc ? vtab_err(cur->pVtab) : SQLITE_OK;
}

static int vt_eof(sqlite3_vtab_cursor *cur)
{
    return ((cursor *)cur)->eof;
}

static void result_hex(sqlite3_context *ctx, const uint8_t *b, size_t n)
{
    char *h = sqlite3_malloc64(n * 2 + 1);
    if (!h) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sodium_bin2hex(h, n * 2 + 1, b, n);
    sqlite3_result_text(ctx, h, (int)(n * 2), sqlite3_free);
}

static void result_str(sqlite3_context *ctx, const char *s)
{
    if (s)
        sqlite3_result_text(ctx, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_result_null(ctx);
}

static void status_column(sqlite3_context *ctx, const tsync_store_status *st, int i)
{
    const int64_t nums[] = {st->held,
                            st->parked,
                            st->conflicts,
                            st->forks,
                            st->unsealed,
                            st->rollbacks,
                            (int64_t)st->schema_mismatches};
    const int64_t logs[] = {st->log_batches,   st->log_bytes,      st->log_max_batches,
                            st->log_max_bytes, st->log_max_age_ms, st->log_horizons,
                            st->log_behind};
    switch (i) {
    case 0:
        result_hex(ctx, st->site_id, sizeof st->site_id);
        return;
    case 1:
        result_hex(ctx, st->public_key, sizeof st->public_key);
        return;
    case 2: /* as "state" in tsync_store_status_json */
        result_str(ctx, tsync_store_status_attention(st) ? "attention" : "ok");
        return;
    case 10:
        result_str(ctx, st->unsealable);
        return;
    case 11:
        result_str(ctx, st->signed_migration_error);
        return;
    case 12:
        result_str(ctx, st->last_rollback_json);
        return;
    }
    if (i >= 3 && i < 10)
        sqlite3_result_int64(ctx, nums[i - 3]);
    else if (i >= 13 && i < 20)
        sqlite3_result_int64(ctx, logs[i - 13]);
}

static int vt_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i)
{
    cursor *k = (cursor *)cur;
    if (!k->st) {
        status_column(ctx, &k->ss, i);
        return SQLITE_OK;
    }
    if ((i == C_WIN_SITE || i == C_LOSE_SITE || i == C_CID || i == C_RES_SITE) &&
        sqlite3_column_type(k->st, i) == SQLITE_BLOB)
        result_hex(ctx, sqlite3_column_blob(k->st, i), (size_t)sqlite3_column_bytes(k->st, i));
    else
        sqlite3_result_value(ctx, sqlite3_column_value(k->st, i));
    return SQLITE_OK;
}

static int vt_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *out)
{
    cursor *k = (cursor *)cur;
    *out = k->st ? sqlite3_column_int64(k->st, 0) : k->row;
    return SQLITE_OK;
}

/* xCreate NULL: eponymous only (SELECT * FROM tillsync_status), never CREATE VIRTUAL TABLE. */
#define MODULE(conn)                                                                               \
    {                                                                                              \
        .iVersion = 1, .xCreate = NULL, .xConnect = conn, .xBestIndex = vt_best_index,             \
        .xDisconnect = vt_disconnect, .xDestroy = vt_disconnect, .xOpen = vt_open_cursor,          \
        .xClose = vt_close_cursor, .xFilter = vt_filter, .xNext = vt_next, .xEof = vt_eof,         \
        .xColumn = vt_column, .xRowid = vt_rowid,                                                  \
    }
static const sqlite3_module conflicts_module = MODULE(conflicts_connect);
static const sqlite3_module status_module = MODULE(status_connect);

int tsync__sqlctx_modules(tsync__sqlctx *c)
{
    c->refs++; /* SQLite drops it, even when the registration fails */
    int rc = sqlite3_create_module_v2(c->db, "tillsync_conflicts", &conflicts_module, c,
                                      tsync__sqlctx_unref);
    if (rc != SQLITE_OK) return rc;
    c->refs++;
    return sqlite3_create_module_v2(c->db, "tillsync_status", &status_module, c,
                                    tsync__sqlctx_unref);
}
