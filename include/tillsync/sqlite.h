/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/sqlite.h — tillsync's SQL functions on a connection the app opened itself: uuid7(),
 * tillsync_replicate(), tillsync_seal(), tillsync_hash() and the tables tillsync_conflicts and
 * tillsync_status. The loadable extension tillsync.so (`.load tillsync` in the sqlite3 shell,
 * load_extension() elsewhere) registers the same on the connection that loads it.
 * docs/SQLITE_EXTENSION.md describes the functions, their columns and their transactions.
 *
 * THREAD SAFETY: the functions follow the connection's own rules: they run on the thread that
 * steps the statement calling them, under the connection's mutex if it has one. What they keep
 * per connection (a tillsync connection to the same file, opened on first use) is freed when the
 * app's connection closes.
 */
#ifndef TILLSYNC_SQLITE_H
#define TILLSYNC_SQLITE_H

#include "tillsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sqlite3;

/* Registers tillsync's SQL functions and table-valued functions on db, an open connection of
 * the SQLite library libtillsync links (the system's libsqlite3). They act on db's main
 * database, which must be a file that tsync_store_open can open without create (its key file at
 * "<database>.key"); on their first use they open a tillsync connection to that file, and its
 * errors come back then, as SQL errors carrying tillsync's one-line message. tillsync_replicate
 * and tillsync_seal refuse to run while db has a transaction open: each commits in a transaction
 * of its own. Registering again replaces the earlier registration.
 * Errors: TSYNC_EINVAL (db is NULL), TSYNC_EBUSY (a statement of db is running, and SQLite
 * replaces no function then; the message is SQLite's), TSYNC_ENOMEM. */
TSYNC_API int tsync_sqlite_register(struct sqlite3 *db);

#ifdef __cplusplus
}
#endif
#endif
