/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ext/tillsync_ext.c — the loadable SQLite extension tillsync.so: `.load tillsync` in the sqlite3
 * shell, load_extension('tillsync') in SQL, conn.load_extension(path) in Python. Its entry point
 * registers on the loading connection what tsync_sqlite_register registers on an app's own
 * (tillsync/sqlite.h, store/sqlite_fn.c); docs/SQLITE_EXTENSION.md says what that is.
 *
 * The module carries the library's code linked in (the static layers, hidden) and exports
 * sqlite3_tillsync_init only (ext/tillsync_ext.map). That code calls the system's libsqlite3
 * directly, so the host must use that same library (the sqlite3 shell and Python's sqlite3
 * module on Debian do); an app with SQLite linked in statically cannot load it.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "tillsync/sqlite.h"

int sqlite3_tillsync_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);

int sqlite3_tillsync_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    SQLITE_EXTENSION_INIT2(api);
    if (tsync_sqlite_register(db) != 0) {
        *err = sqlite3_mprintf("%s", tsync_error_last()->message);
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}
