/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/error.c — SQLite's result codes mapped to tillsync's, with the connection's message.
 */
#include "internal.h"
#include "prep_int.h"

int tsync__err_sqlite(sqlite3 *db, int rc, const char *what)
{
    int code = TSYNC_EIO;
    int prim = rc & 0xff;
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        code = TSYNC_EBUSY;
    else if (prim == SQLITE_NOMEM)
        code = TSYNC_ENOMEM;
    else if (prim == SQLITE_ERROR || prim == SQLITE_CONSTRAINT || prim == SQLITE_MISMATCH)
        code = TSYNC_EINVAL;
    else if (prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB)
        code = TSYNC_ECORRUPT;
    /* Callers that pass a generic rc still name a full disk: the connection knows it. */
    if (prim == SQLITE_FULL || (db && (sqlite3_errcode(db) & 0xff) == SQLITE_FULL))
        code = TSYNC_EFULL;
    return tsync__err(code, "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

int tsync__prep_or_fail(tsync_store *s, sqlite3_stmt **st, const char *sql, const char *what)
{
    *st = tsync__prep(s, sql);
    return *st ? 0 : tsync__err_sqlite(s->db, SQLITE_ERROR, what);
}
