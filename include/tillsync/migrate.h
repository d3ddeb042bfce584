/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/migrate.h — schema migrations: numbered SQL files, each applied once, in order, all
 * pending ones in one transaction, with replication kept correct for the tables they change.
 * docs/MIGRATIONS.md says what a migration may do to a replicated table and why.
 *
 * THREAD SAFETY: as for tsync_store (store.h): a store is used by one thread at a time. Other
 * stores and processes on the same database wait for the migration's transaction (BEGIN
 * IMMEDIATE) like for any other writer.
 */
#ifndef TILLSYNC_MIGRATE_H
#define TILLSYNC_MIGRATE_H

#include "tillsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One migration applied. */
typedef struct {
    int64_t number;                      /* its number, the version it brings the database to */
    char *name;                          /* its file name, e.g. "002_add_barcode.sql" */
    char hash[2 * TSYNC_HASH_BYTES + 1]; /* BLAKE2b-256 of the file's bytes, lowercase hex */
} tsync_migration;

/* What tsync_store_migrate did. Filled also when it fails (notes say what was ignored). */
typedef struct {
    uint32_t version;         /* TSYNC_MIGRATE_REPORT_VERSION */
    int64_t from_version;     /* the schema version before */
    int64_t to_version;       /* after; equal to from_version when nothing was applied */
    size_t napplied;          /* migrations applied by this call, in order */
    tsync_migration *applied; /* napplied entries */
    size_t unparked;          /* changes from other tills, parked for want of a table or column,
                                 that the migrations let apply */
    size_t nnotes;            /* one line each: files in the folder that were ignored, and why */
    char **notes;
} tsync_migrate_report;

#define TSYNC_MIGRATE_REPORT_VERSION 1
#define TSYNC_MIGRATE_REPORT_INIT                                                                  \
    {                                                                                              \
        TSYNC_MIGRATE_REPORT_VERSION, 0, 0, 0, NULL, 0, 0, NULL                                    \
    }

/* Sets *out to TSYNC_MIGRATE_REPORT_INIT as of version (the caller's TSYNC_MIGRATE_REPORT_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_migrate_report_init(tsync_migrate_report *out, uint32_t version);

/* Frees what a report holds (not the report) and zeroes it, keeping its version. Accepts NULL. */
TSYNC_API void tsync_migrate_report_clear(tsync_migrate_report *r);

/* Applies the pending migrations of a folder. Files named NUMBER_NAME.sql (e.g.
 * "002_add_barcode.sql"; leading zeros do not count) are migrations; anything else is ignored
 * with a note. Every migration numbered above the schema version runs, in number order, all in
 * one transaction: if any statement fails or is refused, nothing is applied. Each applied one is
 * recorded with its number, name and BLAKE2b-256 hash. A migration may call the SQL functions
 * tillsync_replicate(TABLE [, COUNTER...]) and tillsync_counter(TABLE, COLUMN).
 * s:      the store; local changes are sealed first.
 * dir:    the folder of migration files.
 * report: may be NULL; the caller clears it with tsync_migrate_report_clear().
 * Errors (the message names the file and, for a statement, its line); nothing is applied:
 *   TSYNC_ENOTFOUND     no such folder, or no such table or column for tillsync_counter();
 *   TSYNC_EREFUSED      the folder disagrees with what was applied: an applied file was
 *                       changed, two files share a number, or a new file is numbered below the
 *                       schema version;
 *   TSYNC_EINVAL        a statement failed (SQLite's message), or broke the rules of migrations
 *                       (BEGIN, COMMIT or SAVEPOINT; writing tsync_* tables or triggers);
 *   TSYNC_EUNSUPPORTED  a migration changes a replicated table in a way replication cannot
 *                       follow (dropping or renaming a column or the table, changing a key or a
 *                       type, adding a constraint that cannot hold across tills, making an old
 *                       column a counter); the message says what to do instead;
 *   TSYNC_EIO, TSYNC_EBUSY. */
TSYNC_API int tsync_store_migrate(tsync_store *s, const char *dir, tsync_migrate_report *report);

/* Installs a migration signed by the shop admin (`tillsync shop sign-migration`; the record's
 * bytes, not its text armour) and runs every signed migration this database holds that it has
 * not run, in number order, with the checks and the single transaction of tsync_store_migrate.
 * The record is kept with the shop's certificates and replicates with them (handshake,
 * bundles): every till of the shop runs it when it arrives, so a shop upgrades its schema from
 * one place (docs/MIGRATIONS.md, "Signed migrations"). rec NULL: only run what is held.
 * A migration already run here with the same content is skipped.
 * Errors: as tsync_store_migrate; also TSYNC_ECORRUPT / TSYNC_EBADSIG (not a valid record),
 * TSYNC_EINVAL (another kind of record), TSYNC_EREFUSED (another shop's or another admin key's,
 * or this database is not enrolled). A refusal is also kept for status
 * (tsync_store_signed_migration_error) until a later run succeeds. */
TSYNC_API int tsync_store_migrate_signed(tsync_store *s, const uint8_t *rec, size_t len,
                                         tsync_migrate_report *report);

/* Why the last run of signed migrations (here or on their arrival from another till) failed, or
 * *out NULL when it did not. *out is the caller's (tsync_free()). Errors: TSYNC_EIO. */
TSYNC_API int tsync_store_signed_migration_error(char **out, tsync_store *s);

/* The schema version of the database: the highest migration number applied, 0 when none. Peers
 * exchange it when they connect, so a till can say that another runs an older schema.
 * Errors: TSYNC_EIO. */
TSYNC_API int tsync_store_schema_version(int64_t *out, tsync_store *s);

/* The applied migrations as JSON: {"version": N, "applied": [{"number", "name", "hash",
 * "applied_ms"}...]} in number order. *out is the caller's (tsync_free()). Errors: TSYNC_EIO. */
TSYNC_API int tsync_store_migrations_json(char **out, tsync_store *s);

#ifdef __cplusplus
}
#endif
#endif
