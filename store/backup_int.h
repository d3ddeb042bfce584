/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/backup_int.h — what the four files of backup and restore share, private to them:
 * backup_format.c (the file format: header, writer, reader, manifest, decoder, and the file
 * helpers), backup_vfs.c (the VFS that writes a plain backup's image in place), backup.c (taking
 * a backup) and restore.c (checking a file and restoring it). store/backup.h is the part the fuzz
 * target and the tests may use.
 */
#ifndef TSYNC_STORE_BACKUP_INT_H
#define TSYNC_STORE_BACKUP_INT_H

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>

#include "internal.h"
#include "store/backup.h"
#include "util/util.h"

#define BLOCK    (4u << 20) /* image bytes per read/hash/write step */
#define ABYTES   crypto_secretstream_xchacha20poly1305_ABYTES
#define IMAGE_AT TSYNC__BAK_IMAGE_AT

/* The name of the VFS of backup_vfs.c. */
#define TSYNC__BAK_VFS "tsync-backup-shift"

static inline void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ---------------------------------------------------------------- file helpers (backup_format.c)
 */

/* path followed by suffix, malloc'd. */
char *tsync__bak_path_with(const char *path, const char *suffix);
/* Writes all n bytes (retrying on EINTR); -1 with errno on failure. */
int tsync__bak_write_all(int fd, const uint8_t *p, size_t n);
/* Makes a rename in path's folder durable. */
int tsync__bak_fsync_dir(const char *path);
/* Removes a temporary database and whatever SQLite may have put beside it. */
void tsync__bak_unlink_db(const char *path);
/* Runs sql; on failure records "what: SQLite's message" and returns its TSYNC_E* code. */
int tsync__bak_exec(sqlite3 *db, const char *sql, const char *what);
/* Calls cb, if any. */
void tsync__bak_progress(tsync_backup_progress_cb cb, void *ctx, tsync_backup_phase phase,
                         uint64_t done, uint64_t total);

/* ---------------------------------------------------------------- the writer (backup_format.c) */

/* Writes the content after the fixed header: as it is, or as one secretstream of
 * TSYNC__BAK_CHUNK-byte chunks. */
typedef struct {
    int fd;
    const char *name; /* the file written, for messages */
    int enc;
    crypto_secretstream_xchacha20poly1305_state ss;
    uint8_t *pt; /* plaintext waiting for a full chunk */
    size_t npt;
    uint8_t *ct;
    const uint8_t *ad; /* the header: additional data of the first chunk */
    size_t adlen;
} tsync__bak_writer;

/* Writes bytes to the file as they are (the header). */
int tsync__bak_w_raw(tsync__bak_writer *w, const uint8_t *p, size_t n);
/* Writes content (encrypted when w->enc). */
int tsync__bak_w_put(tsync__bak_writer *w, const void *data, size_t n);
/* Ends the content (an encrypted file's last chunk, tagged FINAL). */
int tsync__bak_w_finish(tsync__bak_writer *w);

/* ---------------------------------------------------------------- the VFS (backup_vfs.c) */

/* Registers TSYNC__BAK_VFS once; true when it is there to use. */
bool tsync__bak_vfs_ready(void);

/* ---------------------------------------------------------------- images (restore.c) */

/* Opens a staged image the way a checker must: nothing in it runs, nothing is waited for. */
int tsync__bak_open_image(const char *path, const char *name, sqlite3 **out);
/* PRAGMA quick_check; msg receives its first complaint. Returns an SQLite code. */
TSYNC_WARN_UNUSED int tsync__bak_quick_check(sqlite3 *db, char *msg, size_t cap);

#endif
