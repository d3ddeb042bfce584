/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/sqlite_fn.c — tillsync's SQL functions on a connection the app opened itself
 * (tsync_sqlite_register, tillsync/sqlite.h; the loadable extension ext/tillsync_ext.c calls it):
 * uuid7(), tillsync_replicate(table, counter...), tillsync_seal(), tillsync_hash([table]). The
 * tables tillsync_conflicts and tillsync_status are in store/sqlite_vtab.c.
 *
 * Design notes
 * - Each function is the store API's call (tsync_store_replicate, _seal, _hash) on a store of
 *   tillsync's own: a second connection to the app connection's main database file, opened on
 *   first use and closed with the app's connection. Nothing of tillsync stays on the app's
 *   connection between calls (no prepared statement, which would make a plain sqlite3_close of
 *   it fail with SQLITE_BUSY; no PRAGMA or result-code setting of ours), and sealing and
 *   replicating commit in a transaction of their own, BEGIN IMMEDIATE as everywhere else.
 * - So they cannot run inside a transaction of the app's connection: its uncommitted writes are
 *   invisible to tillsync's connection (sealing takes committed changes only, DESIGN.md) and a
 *   write lock it holds would make ours wait the whole busy timeout. tillsync_replicate and
 *   tillsync_seal refuse at once with a message; reads (hash, the two tables) run and see what
 *   is committed.
 */
#include <sodium.h>
#include <stdlib.h>

#include "sqlite_int.h"
#include "tillsync/sqlite.h"

void tsync__sqlctx_unref(void *p)
{
    tsync__sqlctx *c = p;
    if (--c->refs > 0) return;
    tsync_store_free(c->s);
    free(c);
}

int tsync__sqlctx_store(tsync__sqlctx *c, const char *fn, tsync_store **out)
{
    if (c->s) {
        *out = c->s;
        return 0;
    }
    const char *path = sqlite3_db_filename(c->db, "main");
    if (!path || !*path)
        return tsync__err(TSYNC_EUNSUPPORTED,
                          "%s: the connection's main database is not a file (in memory or "
                          "temporary); tillsync needs a database file with its key file beside it",
                          fn);
    /* Opening may write (tillsync's tables, this device's site): it would wait for the app's
     * own write lock the whole busy timeout. */
    if (sqlite3_txn_state(c->db, "main") == SQLITE_TXN_WRITE)
        return tsync__err(TSYNC_EBUSY,
                          "%s: first use on this connection inside a write transaction; call a "
                          "tillsync function once outside a transaction first",
                          fn);
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.read_only = sqlite3_db_readonly(c->db, "main") == 1;
    int rc = tsync_store_open(&c->s, path, &o);
    if (rc) return rc;
    *out = c->s;
    return 0;
}

/* An error of the store API as the SQL error of the calling statement: tillsync's one line. */
static void result_err(sqlite3_context *ctx, int code)
{
    if (code == TSYNC_ENOMEM) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sqlite3_result_error(ctx, tsync_error_last()->message, -1);
}

/* The store for a function that writes: only outside a transaction of the app's connection. */
static int writer_store(sqlite3_context *ctx, const char *fn, tsync_store **s)
{
    tsync__sqlctx *c = sqlite3_user_data(ctx);
    if (!sqlite3_get_autocommit(c->db) || sqlite3_txn_state(c->db, "main") == SQLITE_TXN_WRITE)
        return tsync__err(TSYNC_EINVAL,
                          "%s: the connection has a transaction open; commit it first (%s commits "
                          "in a transaction of its own)",
                          fn, fn);
    int rc = tsync__sqlctx_store(c, fn, s);
    if (rc == 0 && (*s)->read_only)
        rc = tsync__err(TSYNC_EINVAL, "%s: the connection opened the database read-only", fn);
    return rc;
}

/* tillsync_replicate(table, counter...): makes the table replicated; returns 1. */
static void fn_replicate(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    tsync_store *s;
    int rc = writer_store(ctx, "tillsync_replicate()", &s);
    const char **counters = NULL;
    if (rc == 0 && (argc < 1 || sqlite3_value_type(argv[0]) != SQLITE_TEXT))
        rc = tsync__err(TSYNC_EINVAL, "tillsync_replicate(): the first argument must be the name "
                                      "of a table (text)");
    if (rc == 0 && argc > 1 && !(counters = calloc((size_t)argc - 1, sizeof *counters)))
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    for (int i = 1; rc == 0 && i < argc; i++) {
        if (sqlite3_value_type(argv[i]) != SQLITE_TEXT)
            rc = tsync__err(TSYNC_EINVAL,
                            "tillsync_replicate(): argument %d must be the name of a counter "
                            "column (text)",
                            i + 1);
        else
            counters[i - 1] = (const char *)sqlite3_value_text(argv[i]);
    }
    if (rc == 0)
        rc = tsync_store_replicate(s, (const char *)sqlite3_value_text(argv[0]), counters,
                                   (size_t)(argc > 1 ? argc - 1 : 0));
    free(counters);
    if (rc)
        result_err(ctx, rc);
    else
        sqlite3_result_int(ctx, 1);
}

/* tillsync_seal(): seals the committed local changes; returns how many batches it sealed. */
static void fn_seal(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    tsync_store *s;
    size_t n = 0;
    int rc = writer_store(ctx, "tillsync_seal()", &s);
    if (rc == 0) rc = tsync_store_seal(s, &n);
    if (rc)
        result_err(ctx, rc);
    else
        sqlite3_result_int64(ctx, (sqlite3_int64)n);
}

/* tillsync_hash([table]): tsync_store_hash as 64 lowercase hex digits. */
static void fn_hash(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    tsync_store *s;
    int rc = tsync__sqlctx_store(sqlite3_user_data(ctx), "tillsync_hash()", &s);
    if (rc == 0 && argc == 1 && sqlite3_value_type(argv[0]) != SQLITE_TEXT)
        rc = tsync__err(TSYNC_EINVAL, "tillsync_hash(): the argument must be the name of a "
                                      "replicated table (text)");
    uint8_t h[TSYNC_HASH_BYTES];
    if (rc == 0)
        rc = tsync_store_hash(h, s, argc == 1 ? (const char *)sqlite3_value_text(argv[0]) : NULL);
    if (rc) {
        result_err(ctx, rc);
        return;
    }
    char hex[2 * TSYNC_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    sqlite3_result_text(ctx, hex, 2 * TSYNC_HASH_BYTES, SQLITE_TRANSIENT);
}

int tsync_sqlite_register(struct sqlite3 *db)
{
    if (!db) return tsync__err(TSYNC_EINVAL, "tsync_sqlite_register: no connection given");
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    /* Not SQLITE_DIRECTONLY: uuid7() is meant for DEFAULT clauses and triggers. */
    int rc = sqlite3_create_function_v2(db, "uuid7", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, NULL,
                                        tsync__sql_uuid7, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(db, rc, "register uuid7()");
    tsync__sqlctx *c = calloc(1, sizeof *c);
    if (!c) return tsync__err(TSYNC_ENOMEM, "out of memory");
    c->db = db;
    c->refs = 1; /* ours, dropped below; each registration takes one */
    /* Writers are SQLITE_DIRECTONLY: never from a trigger, view or schema default, where the
     * statement writing would hold the lock they wait for. */
    static const struct {
        const char *name;
        int nargs, flags;
        void (*fn)(sqlite3_context *, int, sqlite3_value **);
    } fns[] = {
        {"tillsync_replicate", -1, SQLITE_DIRECTONLY, fn_replicate},
        {"tillsync_seal", 0, SQLITE_DIRECTONLY, fn_seal},
        {"tillsync_hash", 0, 0, fn_hash},
        {"tillsync_hash", 1, 0, fn_hash},
    };
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof fns / sizeof fns[0]; i++) {
        c->refs++; /* SQLite drops it, even when the registration fails */
        rc = sqlite3_create_function_v2(db, fns[i].name, fns[i].nargs, SQLITE_UTF8 | fns[i].flags,
                                        c, fns[i].fn, NULL, NULL, tsync__sqlctx_unref);
    }
    if (rc == SQLITE_OK) rc = tsync__sqlctx_modules(c);
    tsync__sqlctx_unref(c);
    return rc == SQLITE_OK ? 0 : tsync__err_sqlite(db, rc, "register the tillsync SQL functions");
}
