/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/backup.h — online backup of a replicated database into one verified, optionally
 * encrypted file; checking such a file without restoring it; restoring it in place of a till's
 * database. The file format and the guarantees are in docs/BACKUP.md.
 *
 * THREAD SAFETY: tsync_backup uses its store like any other call (one thread at a time per
 * store); it runs the check of the copy on a helper thread of its own and joins it before it
 * returns. tsync_backup_check, tsync_backup_encrypted and tsync_restore touch no open store and may
 * run on any thread. Progress callbacks run on the calling thread, never after the call returned.
 */
#ifndef TILLSYNC_BACKUP_H
#define TILLSYNC_BACKUP_H

#include "tillsync/common.h"
#include "tillsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a progress callback is counting. */
typedef enum {
    TSYNC_BACKUP_COPY = 1,    /* backup: pages of the database copied into the snapshot copy */
    TSYNC_BACKUP_WRITE = 2,   /* backup: bytes of that copy hashed (and encrypted) into the file */
    TSYNC_BACKUP_READ = 3,    /* restore: bytes of the backup file read and verified */
    TSYNC_BACKUP_RESTORE = 4, /* restore: pages copied into the live database */
} tsync_backup_phase;

/* Called now and then with how far a phase is (done of total, in the phase's unit). A long
 * operation calls it at least every few megabytes; it may have been called before a failure. */
typedef void (*tsync_backup_progress_cb)(void *ctx, tsync_backup_phase phase, uint64_t done,
                                         uint64_t total);

typedef struct {
    uint32_t version;       /* TSYNC_BACKUP_OPTIONS_VERSION */
    const char *passphrase; /* not NULL: encrypt with a key derived from it (Argon2id) */
    uint64_t kdf_opslimit;  /* Argon2id passes; 0 means crypto_pwhash_OPSLIMIT_MODERATE */
    size_t kdf_memlimit;    /* Argon2id memory in bytes; 0 means ..._MEMLIMIT_MODERATE */
    uint32_t step_pages;    /* pages per sqlite3_backup_step; 0 means 512 */
    tsync_backup_progress_cb progress; /* may be NULL */
    void *progress_ctx;
} tsync_backup_options;

#define TSYNC_BACKUP_OPTIONS_VERSION 1
#define TSYNC_BACKUP_OPTIONS_INIT                                                                  \
    {                                                                                              \
        TSYNC_BACKUP_OPTIONS_VERSION, NULL, 0, 0, 0, NULL, NULL                                    \
    }

/* Sets *out to TSYNC_BACKUP_OPTIONS_INIT as of version (the caller's TSYNC_BACKUP_OPTIONS_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_backup_options_init(tsync_backup_options *out, uint32_t version);

/* Backs up the store's database into one file at out_path while other connections keep writing.
 * Seals first and copies a snapshot in which nothing is left unsealed (SQLite online backup API,
 * in steps; writers are never blocked by it), checks the copy (PRAGMA quick_check), and writes the
 * file as out_path.tmp, fsync, rename: a failed backup leaves no file named out_path (an existing
 * one stays as it was). The file is created 0600: it holds the shop's data.
 * opts:          NULL for defaults (not encrypted).
 * manifest_json: may be NULL; receives the backup's manifest (what docs/BACKUP.md lists), the
 *                caller's to tsync_free().
 * Errors: TSYNC_EINVAL (out_path is the database or its key file; the store has an open
 * transaction), TSYNC_ECORRUPT (the copy fails quick_check: the database itself is damaged),
 * TSYNC_EBUSY (no sealed snapshot could be taken: writes kept arriving), TSYNC_EIO. */
TSYNC_API int tsync_backup(tsync_store *s, const char *out_path, const tsync_backup_options *opts,
                           char **manifest_json);

/* Tells whether the file at path starts like a backup, and whether it is encrypted (so a caller
 * knows to ask for a passphrase). Reads only the fixed header; says nothing about the rest.
 * Errors: TSYNC_ENOTFOUND, TSYNC_EIO, TSYNC_ECORRUPT (not a backup), TSYNC_EVERSION. */
TSYNC_API int tsync_backup_encrypted(int *encrypted, const char *path);

/* Verifies a backup file without restoring it: header and format, decryption (passphrase needed
 * when the file is encrypted, ignored otherwise), the content hash, truncation, the manifest, and
 * the database image (PRAGMA quick_check on a copy in $TMPDIR, and that it is a tillsync database).
 * manifest_json: may be NULL; receives the manifest (caller frees with tsync_free()).
 * Errors: TSYNC_ECORRUPT (damaged, truncated, altered, or not a backup; the message says which),
 * TSYNC_EBADSIG (an encrypted file does not decrypt: wrong passphrase, or altered), TSYNC_EVERSION
 * (a format this version does not read), TSYNC_EINVAL (encrypted and no passphrase given). */
TSYNC_API TSYNC_WARN_UNUSED int tsync_backup_check(const char *path, const char *passphrase,
                                                   char **manifest_json);

typedef struct {
    uint32_t version;       /* TSYNC_RESTORE_OPTIONS_VERSION */
    const char *passphrase; /* for an encrypted file; ignored otherwise */
    const char *key_path;   /* the device key file; NULL means "<db_path>.key" */
    /* Refuse files whose key derivation asks for more than this (protects a checker from a file
     * crafted to use all memory); 0 means crypto_pwhash_OPSLIMIT/MEMLIMIT_SENSITIVE. */
    uint64_t max_kdf_opslimit;
    size_t max_kdf_memlimit;
    tsync_backup_progress_cb progress; /* may be NULL */
    void *progress_ctx;
} tsync_restore_options;

#define TSYNC_RESTORE_OPTIONS_VERSION 1
#define TSYNC_RESTORE_OPTIONS_INIT                                                                 \
    {                                                                                              \
        TSYNC_RESTORE_OPTIONS_VERSION, NULL, NULL, 0, 0, NULL, NULL                                \
    }

/* Sets *out to TSYNC_RESTORE_OPTIONS_INIT as of version (the caller's
 * TSYNC_RESTORE_OPTIONS_VERSION), for bindings without macros. Errors: TSYNC_EINVAL (out is NULL),
 * TSYNC_EVERSION (version 0 or newer than this library's). */
TSYNC_API int tsync_restore_options_init(tsync_restore_options *out, uint32_t version);

/* What a restore did. */
typedef struct {
    uint32_t version;                            /* TSYNC_RESTORE_REPORT_VERSION */
    uint8_t site_id[TSYNC_SITE_ID_BYTES];        /* the database's site id now (always new) */
    uint8_t backup_site_id[TSYNC_SITE_ID_BYTES]; /* the site the backup was taken from */
    int32_t new_key;     /* there was no key file: a new device key was made; the till must enrol */
    char *manifest_json; /* the backup's manifest; freed by tsync_restore_report_clear() */
} tsync_restore_report;

#define TSYNC_RESTORE_REPORT_VERSION 1
#define TSYNC_RESTORE_REPORT_INIT                                                                  \
    {                                                                                              \
        TSYNC_RESTORE_REPORT_VERSION, {0}, {0}, 0, NULL                                            \
    }

/* Sets *out to TSYNC_RESTORE_REPORT_INIT as of version (the caller's TSYNC_RESTORE_REPORT_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_restore_report_init(tsync_restore_report *out, uint32_t version);

/* Frees what a report holds (not the report). Accepts NULL. */
TSYNC_API void tsync_restore_report_clear(tsync_restore_report *r);

/* Replaces the content of the database at db_path with the backup in backup_path. Verifies the
 * whole file first, exactly as tsync_backup_check; a damaged, truncated, altered or
 * wrong-passphrase file is refused and the live database, its -wal and its key file stay
 * byte-for-byte as they were. Refuses while any other connection has the database open (a
 * running node, the till app, a sqlite3 shell): it takes SQLite's exclusive lock without waiting.
 * On success the device key is kept and its incarnation renewed, so the database has a new site
 * id and never reuses a sequence number its old site id used; without a key file (new hardware) a
 * new key is made and report->new_key set: the till must enrol again. Changes made after the
 * backup come back from the peers (bundles, sync). db_path need not exist.
 * opts:   NULL for defaults (the file must not be encrypted).
 * report: may be NULL.
 * Errors: as tsync_backup_check, and TSYNC_EBUSY (the database is in use), TSYNC_ECORRUPT (the
 * live key file is damaged, or the live file is not an SQLite database: nothing was changed),
 * TSYNC_EIO. */
TSYNC_API int tsync_restore(const char *db_path, const char *backup_path,
                            const tsync_restore_options *opts, tsync_restore_report *report);

#ifdef __cplusplus
}
#endif
#endif
