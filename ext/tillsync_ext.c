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
 * module on Debian do). A host with its own SQLite compiled in (Node's better-sqlite3, for one)
 * would hand that code connections of another library: the entry point refuses to load there,
 * with a message, rather than corrupt memory.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "tillsync/sqlite.h"

int sqlite3_tillsync_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);

/* True when the host's SQLite is the library this module calls: the host's table of routines
 * points at the very functions the module links. */
static int same_sqlite(const sqlite3_api_routines *api)
{
#undef sqlite3_libversion_number /* sqlite3ext.h's macro: the host's; below, the linked one */
    return api->libversion_number == sqlite3_libversion_number;
}

int sqlite3_tillsync_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    SQLITE_EXTENSION_INIT2(api);
    if (!same_sqlite(api)) {
        /* The host's allocator: the host frees the message. */
        *err = sqlite3_mprintf("tillsync.so: this program has its own SQLite, not the system's "
                               "libsqlite3 that tillsync.so calls; link libtillsync against "
                               "the program's SQLite and call tsync_sqlite_register instead");
        return SQLITE_ERROR;
    }
    if (tsync_sqlite_register(db) != 0) {
        *err = sqlite3_mprintf("%s", tsync_error_last()->message);
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}
