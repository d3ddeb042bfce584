/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/backup.h — the decoder of the backup file format (store/backup_format.c), for the fuzz
 * target and the tests: everything tsync_backup_check does except the check of the database
 * image. Internal API; the format is described in docs/BACKUP.md.
 *
 * THREAD SAFETY: no shared state; any thread.
 */
#ifndef TSYNC_STORE_BACKUP_H
#define TSYNC_STORE_BACKUP_H

#include <stdint.h>
#include <stdio.h>

#include "tillsync/backup.h"

#define TSYNC__BAK_MAGIC        "TSYNCBAK"
#define TSYNC__BAK_FORMAT       1u
#define TSYNC__BAK_ENCRYPTED    1u         /* flags bit 0 */
#define TSYNC__BAK_PLAIN_HEADER 10u        /* magic, format, flags */
#define TSYNC__BAK_ENC_HEADER   63u        /* + alg, opslimit, memlimit, salt, stream header */
#define TSYNC__BAK_IMAGE_AT     4096u      /* where a plain file's image starts */
#define TSYNC__BAK_CHUNK        (1u << 20) /* plaintext bytes per secretstream chunk */
#define TSYNC__BAK_MANIFEST_MAX (1u << 20)
#define TSYNC__BAK_MIN_IMAGE    512u
#define TSYNC__BAK_MAX_IMAGE    (1ull << 44)

typedef struct {
    const char *name;                /* the file's name in messages */
    const char *passphrase;          /* NULL: an encrypted file is refused with TSYNC_EINVAL */
    unsigned long long max_opslimit; /* refuse a key derivation above these; 0: SENSITIVE */
    size_t max_memlimit;
    int image_fd; /* where the database image goes (written from offset 0); -1 drops it */
    tsync_backup_progress_cb progress;
    void *progress_ctx;
    uint64_t file_size; /* for progress only; 0 if unknown */
} tsync__bak_read_opts;

typedef struct {
    int encrypted;
    unsigned long long opslimit;
    size_t memlimit;
    uint64_t image_len;
    uint8_t image_hash[32]; /* BLAKE2b-256 of the image */
    uint8_t file_hash[32];  /* the trailer: BLAKE2b-256 of everything else (docs/BACKUP.md) */
    char *manifest;         /* NUL-terminated JSON, malloc'd */
} tsync__bak_info;

/* Reads and verifies a whole backup file from in: header, decryption, image hash, manifest,
 * trailer, end of file. On success fills info (free with tsync__bak_info_clear). Errors as
 * tsync_backup_check's, each naming o->name. */
TSYNC_WARN_UNUSED int tsync__bak_read(FILE *in, const tsync__bak_read_opts *o,
                                      tsync__bak_info *info);
void tsync__bak_info_clear(tsync__bak_info *info);

/* Checks a manifest: a JSON object of format 1 whose image size and hash are these. */
TSYNC_WARN_UNUSED int tsync__bak_manifest_check(const char *json, size_t len, uint64_t image_len,
                                                const uint8_t image_hash[32], const char *name);

#endif
