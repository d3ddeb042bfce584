/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/schema.h — what a till knows about the definitions of the replicated tables, its own
 * and the other tills', and the changes it could not apply: the definition of each replicated
 * table with a digest of it, the other tills whose definitions differ (and how), and the parked
 * changes with their reasons. docs/MIGRATIONS.md ("Tills whose definitions differ") explains
 * what to do about each.
 *
 * Tills tell each other their definitions in the sync handshake (the SCHEMA message, docs/WIRE.md)
 * and in every bundle (docs/PROTOCOL.md); this database keeps the latest definition of each other
 * till it heard from, so what differs can be read without a running node.
 *
 * THREAD SAFETY: like the store, one thread at a time. A function that takes a callback and
 * returns an error never calls it after the error.
 */
#ifndef TILLSYNC_SCHEMA_H
#define TILLSYNC_SCHEMA_H

#include "tillsync/common.h"
#include "tillsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The definitions of this database's replicated tables as JSON and their digest.
 * out:    receives {"digest": HEX, "tables": [{"name", "columns": [{"name", "type", "key",
 *         "counter"}...]}...]}; names and declared types in lower case, tables and columns sorted
 *         by name (the canonical form the digest is over; docs/PROTOCOL.md). The caller's;
 * tsync_free(). digest: may be NULL; receives the BLAKE2b-256 of the canonical form. Two tills
 * whose digests are equal replicate the same tables with the same columns, types, keys and
 * counters. Errors: TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_store_schema_json(char **out, tsync_store *s, uint8_t digest[TSYNC_HASH_BYTES]);

/* One difference between this till's definition of a replicated table and another till's. All
 * strings are borrowed for the duration of the callback. */
typedef struct {
    uint32_t version;     /* TSYNC_SCHEMA_MISMATCH_VERSION */
    const char *table;    /* lower case */
    const char *column;   /* the column concerned (lower case), or NULL for the table itself */
    const char *what;     /* one line, e.g. "column stock: a counter here, a plain column there" */
    const char *site_hex; /* the other till's site id, 32 hex digits */
    const char *till;     /* its device name when its certificate is known, else "" */
    uint64_t seen_ms;     /* when this definition of it (or ours) was first received, Unix ms */
} tsync_schema_mismatch;

#define TSYNC_SCHEMA_MISMATCH_VERSION 1

/* Return non-zero to stop: the value is returned by the iterating function. */
typedef int (*tsync_schema_mismatch_fn)(void *ctx, const tsync_schema_mismatch *m);

/* Calls fn for every difference between this database's replicated tables and the latest
 * definitions received from other tills (in the handshake or in a bundle), ordered by till and
 * table. Nothing is called when all agree. A till whose definition later matches (after a
 * migration on either side) is no longer reported.
 * Errors: TSYNC_EIO; or fn's non-zero value. */
TSYNC_API int tsync_store_schema_mismatches(tsync_store *s, tsync_schema_mismatch_fn fn, void *ctx);

/* One parked change: a row, or a column of a row, of a batch this database merged but could not
 * apply (see docs/MIGRATIONS.md). Strings are borrowed for the duration of the callback. */
typedef struct {
    uint32_t version;       /* TSYNC_PARKED_CHANGE_VERSION */
    int64_t id;             /* stable while the change stays parked */
    const char *origin_hex; /* the batch's author, 32 hex digits; "" for a row of this database
                               that a local constraint refused */
    uint64_t seq;           /* the batch's sequence number (0 for a local row) */
    uint32_t row;           /* index of the row change in the batch */
    const char *table;      /* as the batch names it */
    const char *column;     /* NULL: the whole row is parked */
    const char *reason;     /* one line */
    const char *till;       /* the author's device name when its certificate is known, else "" */
} tsync_parked_change;

#define TSYNC_PARKED_CHANGE_VERSION 1

/* Return non-zero to stop: the value is returned by tsync_store_parked_foreach. */
typedef int (*tsync_parked_fn)(void *ctx, const tsync_parked_change *c);

/* Calls fn for each parked change, oldest first (at most limit; 0: all). total (may be NULL)
 * receives how many are parked in all. Errors: TSYNC_EIO; or fn's non-zero value. */
TSYNC_API int tsync_store_parked_foreach(tsync_store *s, size_t limit, size_t *total,
                                         tsync_parked_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
