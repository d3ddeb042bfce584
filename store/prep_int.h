/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/prep_int.h — preparing a cached statement with the caller's name for the failure, the
 * one form of "prepare or say what could not be read/written" (store/error.c).
 */
#ifndef TSYNC_STORE_PREP_INT_H
#define TSYNC_STORE_PREP_INT_H

#include "internal.h"

/* Prepares sql (tsync__prep, cached) into *st. 0, or the error as tsync__err_sqlite(db,
 * SQLITE_ERROR, what) ("what: <SQLite's message>") with *st NULL. */
int tsync__prep_or_fail(tsync_store *s, sqlite3_stmt **st, const char *sql, const char *what);

#endif
