/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/sqlite_int.h — what store/sqlite_fn.c (the SQL functions and tsync_sqlite_register) and
 * store/sqlite_vtab.c (the tables tillsync_conflicts and tillsync_status) share: the state kept
 * per app connection.
 */
#ifndef TSYNC_STORE_SQLITE_INT_H
#define TSYNC_STORE_SQLITE_INT_H

#include "internal.h"

/* One per app connection, shared by every function and module registered on it (each holds a
 * reference, dropped by SQLite's destructor when the connection closes or the registration is
 * replaced). */
typedef struct {
    sqlite3 *db;    /* the app's connection */
    tsync_store *s; /* tillsync's own connection to the same file, opened on first use */
    int refs;
} tsync__sqlctx;

/* The store of the app connection's main database, opened on first use. fn names the SQL
 * function or table for the error message. */
int tsync__sqlctx_store(tsync__sqlctx *c, const char *fn, tsync_store **out);
void tsync__sqlctx_unref(void *c);

/* Registers the tables tillsync_conflicts and tillsync_status on c->db, each holding a reference
 * to c (sqlite_vtab.c). Returns an SQLite result code. */
int tsync__sqlctx_modules(tsync__sqlctx *c);

#endif
