/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/vault.h — cloud backup through a relay of the shop's grant (docs/BACKUP.md, "Cloud
 * backup"; the relay's side: docs/RELAY.md, "The vault"). A backup (tsync_backup's file) is
 * encrypted with a key derived from the shop's data key, so no passphrase is needed unattended
 * and the relay cannot read it, and uploaded in 1 MiB chunks: resumable (the relay says which
 * chunks it holds, only the others are sent) and verified by hash when committed. Any till of
 * the shop lists the shop's backups and restores one; a backup can be deleted, and a till can
 * keep only the newest N of its own.
 *
 * Every call takes the database's path and opens a store connection of its own for its
 * duration, so a running node's database can be backed up from another thread or process.
 *
 * THREAD SAFETY: every function may run on any thread; two calls on the same database at the
 * same time are safe but the second upload waits for nothing: both resume the same pending file
 * (do not). Progress callbacks run on the calling thread, never after the call returned.
 */
#ifndef TILLSYNC_VAULT_H
#define TILLSYNC_VAULT_H

#include <signal.h>

#include "tillsync/backup.h"
#include "tillsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TSYNC_VAULT_ID_HEX 33 /* a backup id as text: 32 hex digits and the NUL */

typedef struct {
    uint32_t version;     /* TSYNC_VAULT_OPTIONS_VERSION */
    const char *key_path; /* the device key file; NULL means "<db_path>.key" */
    int32_t timeout_ms;   /* how long to wait for a relay (per relay, per answer); 0: 10000 */
    uint32_t max_chunks;  /* upload: send at most this many chunks in this call, then stop with
                             the upload pending (a metered link; tests); 0: all */
    tsync_backup_progress_cb progress; /* may be NULL: TSYNC_BACKUP_WRITE counts bytes uploaded,
                                          TSYNC_BACKUP_READ bytes downloaded */
    void *progress_ctx;
    /* Not NULL: looked at between chunks; once non-zero the upload stops as with max_chunks
     * (pending, report->complete 0), so another thread can end a long upload at once. */
    const volatile sig_atomic_t *stop;
} tsync_vault_options;

#define TSYNC_VAULT_OPTIONS_VERSION 1
#define TSYNC_VAULT_OPTIONS_INIT                                                                   \
    {                                                                                              \
        TSYNC_VAULT_OPTIONS_VERSION, NULL, 0, 0, NULL, NULL, NULL                                  \
    }

/* Sets *out to TSYNC_VAULT_OPTIONS_INIT as of version (the caller's TSYNC_VAULT_OPTIONS_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION. */
TSYNC_API int tsync_vault_options_init(tsync_vault_options *out, uint32_t version);

/* One backup in the vault. */
typedef struct {
    char id[TSYNC_VAULT_ID_HEX];         /* 32 lower-case hex digits */
    uint64_t created_ms;                 /* Unix ms, when the till made it */
    uint64_t size;                       /* bytes stored (the encrypted file) */
    uint32_t chunks;                     /* of 1 MiB */
    uint32_t epoch;                      /* the data-key epoch it is encrypted under */
    uint8_t origin[TSYNC_SITE_ID_BYTES]; /* the site id of the till that made it */
    uint8_t hash[32];                    /* BLAKE2b-256 of the encrypted file */
} tsync_vault_entry;

/* What an upload did. */
typedef struct {
    uint32_t version;         /* TSYNC_VAULT_REPORT_VERSION */
    tsync_vault_entry backup; /* the backup uploaded (or still pending) */
    uint32_t chunks_sent;     /* chunks sent in this call */
    uint32_t chunks_held;     /* chunks the relay held already (an earlier, interrupted call) */
    int32_t resumed;          /* 1: this call went on with an upload an earlier call began */
    int32_t complete;         /* 1: committed and verified by the relay; 0: still pending */
    char relay[128];          /* the relay's address */
} tsync_vault_report;

#define TSYNC_VAULT_REPORT_VERSION 1
#define TSYNC_VAULT_REPORT_INIT                                                                    \
    {                                                                                              \
        TSYNC_VAULT_REPORT_VERSION, {{0}, 0, 0, 0, 0, {0}, {0}}, 0, 0, 0, 0,                       \
        {                                                                                          \
            0                                                                                      \
        }                                                                                          \
    }

/* Sets *out to TSYNC_VAULT_REPORT_INIT as of version, for bindings without macros.
 * Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION. */
TSYNC_API int tsync_vault_report_init(tsync_vault_report *out, uint32_t version);

/* Makes a backup of the database at db_path (as tsync_backup: sealed, consistent, checked),
 * encrypts it under the shop's latest data key this till holds, and uploads it to the first
 * relay of the shop's grant that serves the till, then commits it (the relay checks the chunks
 * against the file's hash). The encrypted file waits beside the database as
 * "<db_path>.vault-pending" until committed: if a call is interrupted (a lost link, a crash,
 * opts->max_chunks), the next call finishes that upload first, sending only the chunks the relay
 * lacks, and reports resumed (it then makes no new backup: call again for one).
 * report: may be NULL.
 * Errors: TSYNC_ENOTFOUND (not enrolled, no grant, or no data key sealed to this till),
 * TSYNC_EFULL (the shop's quota at the relay: nothing more is stored), TSYNC_EREFUSED (the
 * relays refused the till: the message has the reason), TSYNC_EIO (no relay reachable, or the
 * session was lost: the upload stays pending), and tsync_backup's errors. */
TSYNC_API int tsync_vault_backup(const char *db_path, const tsync_vault_options *opts,
                                 tsync_vault_report *report);

/* The shop's committed backups at its relay, oldest first. *out is the caller's (tsync_free()),
 * NULL when *n is 0. Errors: as tsync_vault_backup's for reaching the relay. */
TSYNC_API int tsync_vault_list(const char *db_path, const tsync_vault_options *opts,
                               tsync_vault_entry **out, size_t *n);

/* Downloads backup `which` (an id, a unique prefix of one of at least 8 hex digits, or "latest":
 * the newest of the shop's), checks every chunk's hash and the whole file's, decrypts it (which
 * authenticates it: a relay cannot alter a byte unnoticed), and restores it in place of the
 * database exactly as tsync_restore does: a new site id; the live database, its -wal and its
 * key file stay as they were on any failure. The till's own trust records (its certificate, the
 * shop's data keys and grant) are kept across the restore, so a freshly enrolled till can
 * restore a backup made before it was enrolled. The download is staged beside the database.
 * report: may be NULL.
 * Errors: TSYNC_ENOTFOUND (no such backup; "latest" with none), TSYNC_EINVAL (a prefix that
 * names several), TSYNC_ECORRUPT (a chunk or the file does not match its hash, or does not
 * decrypt: damaged at the relay), TSYNC_EBUSY (the database is in use), the errors of reaching
 * the relay, and tsync_restore's. */
TSYNC_API int tsync_vault_restore(const char *db_path, const char *which,
                                  const tsync_vault_options *opts, tsync_restore_report *report);

/* Deletes backup `which` (an id or a unique prefix) from the relay: its bytes leave the shop's
 * quota. Errors: TSYNC_ENOTFOUND, TSYNC_EINVAL (ambiguous prefix), and those of reaching it. */
TSYNC_API int tsync_vault_delete(const char *db_path, const char *which,
                                 const tsync_vault_options *opts);

/* Keeps the newest `keep` backups this till made (its current site id) and deletes its older
 * ones; other tills' backups are left alone. *deleted (may be NULL) receives how many went.
 * Errors: TSYNC_EINVAL (keep is 0), and those of reaching the relay. */
TSYNC_API int tsync_vault_keep(const char *db_path, uint32_t keep, const tsync_vault_options *opts,
                               uint32_t *deleted);

#ifdef __cplusplus
}
#endif
#endif
