/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/status.h — what a database says about itself, for a status screen: how many batches
 * are held and why, how many changes are parked, conflicts, forks, local changes not sealed yet,
 * rollbacks of its log, and what needs a person (another till's table definitions differ, a signed
 * migration that cannot run, rows too large to send). Read from the database alone: no node need
 * run. A running node adds its network view (tsync_node_status_json, node.h). docs/NODE.md,
 * "Status", lists the fields of the JSON.
 *
 * THREAD SAFETY: like the store, one thread at a time per store. A function that takes a
 * callback and returns an error never calls it after the error.
 */
#ifndef TILLSYNC_STATUS_H
#define TILLSYNC_STATUS_H

#include "tillsync/common.h"
#include "tillsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef TSYNC_PUBLIC_KEY_BYTES
#define TSYNC_PUBLIC_KEY_BYTES 32 /* a device's Ed25519 public key */
#endif

/* The database's status. The caller sets version (TSYNC_STORE_STATUS_INIT) and frees what it
 * holds with tsync_store_status_clear. A count that cannot be read (a database an older version
 * made, opened read-only) is -1; the others are still filled. */
typedef struct {
    uint32_t version;                           /* TSYNC_STORE_STATUS_VERSION */
    uint8_t site_id[TSYNC_SITE_ID_BYTES];       /* as tsync_store_site_id */
    uint8_t public_key[TSYNC_PUBLIC_KEY_BYTES]; /* this device's public key */
    int64_t held;      /* batches held: waiting for the batches before them, or for a clock to
                          catch up (tsync_store_held_foreach says why) */
    int64_t parked;    /* row changes parked (tsync_store_parked_foreach, schema.h) */
    int64_t conflicts; /* concurrent field writes LWW resolved (tsync_store_conflicts_json) */
    int64_t forks;     /* origins found signing two different batches with one number */
    int64_t unsealed;  /* local row changes not sealed into a batch yet */
    int64_t rollbacks; /* times this till's log was found gone back and a new incarnation taken */
    size_t schema_mismatches; /* differences from other tills' table definitions
                                 (tsync_store_schema_mismatches, schema.h) */
    char *unsealable; /* NULL, or one line: local rows over TSYNC_MAX_ROW_BYTES that cannot be
                         sent, and what to do */
    char *signed_migration_error; /* NULL, or why signed migrations cannot run here */
    char *last_rollback_json;     /* NULL, or the last rollback as a JSON object: at_ms,
                                     detected_by ("marker" or "peer"), old_site, new_site,
                                     log_seq, seen_seq */
    /* Version 2: the batch log (docs/NODE.md, "Pruning and snapshots"). */
    int64_t log_batches;     /* batch bodies held */
    int64_t log_bytes;       /* their bytes */
    int64_t log_max_batches; /* the policy in force (tsync_log_policy, store.h), defaults */
    int64_t log_max_bytes;   /* resolved for this database now; -1: no bound */
    int64_t log_max_age_ms;
    int64_t log_horizons; /* origins whose older batches were pruned (or came as a snapshot) */
    int64_t log_behind;   /* tills whose last acknowledgement is below the horizon: batches can
                             no longer catch them up (a snapshot, or a restore, must) */
    /* Version 3: column policies (docs/DATA_MODEL.md, "Column policies"). */
    int64_t review_open; /* open conflicts on --review columns (kind 1): a person settles each */
} tsync_store_status;

#define TSYNC_STORE_STATUS_VERSION 3
#define TSYNC_STORE_STATUS_INIT                                                                    \
    {                                                                                              \
        TSYNC_STORE_STATUS_VERSION, {0}, {0}, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, 0, 0, 0, 0,   \
            0, 0, 0, 0                                                                             \
    }

/* Sets *out to TSYNC_STORE_STATUS_INIT as of version (the caller's TSYNC_STORE_STATUS_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_store_status_init(tsync_store_status *out, uint32_t version);

/* Reads the database's status into out (whose version the caller set; 1: without the log; 2:
 * without review_open).
 * Errors: TSYNC_EVERSION (out of an unknown version; nothing is filled), TSYNC_EIO. */
TSYNC_API int tsync_store_status_get(tsync_store_status *out, tsync_store *s);

/* Frees what a status holds (not the status) and zeroes it, keeping its version. Accepts NULL. */
TSYNC_API void tsync_store_status_clear(tsync_store_status *st);

/* True when the status needs a person: another till's definitions differ, signed migrations
 * cannot run here, conflicts on review columns are open (version 3), or a till is behind the log's
 * horizon (log_behind: in an enrolled shop it gets
 * a snapshot at its next session, which clears this; otherwise restore a current backup on it).
 * (Rows too large to send are reported in unsealable.) */
TSYNC_API int tsync_store_status_attention(const tsync_store_status *st);

/* The database's status as one JSON object, in this order: "site", "public_key" (hex),
 * "rollbacks", "unsealable" (only when set), "held", "parked", "conflicts", "conflicts_open"
 * (journal entries no person resolved yet: tillsync/conflicts.h; -1 when unreadable), "forks",
 * "unsealed", "review_open" (open conflicts on review columns; only when there are),
 * "last_rollback" (object or null), "state" ("ok" or "attention", as tsync_store_status_attention),
 * "schema_mismatches" (as tsync_store_schema_mismatches_json), "signed_migration_error" (string or
 * null), "parked_changes" (the first parked_max parked changes, as in tsync_store_parked_json).
 * out: receives the text, the caller's (tsync_free()).
 * Errors: TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_store_status_json(char **out, tsync_store *s, size_t parked_max);

/* The batch log as one JSON object (`tillsync status` shows it as "log"): "batches" and "bytes"
 * (bodies held), "policy" (the bounds in force: "max_batches", "max_bytes", "max_age_ms"; -1 no
 * bound), "horizon" (origins whose log starts at a stub: "origin" hex, "seq" below which nothing
 * is held, "head") and "behind" (tills whose last acknowledgement is below the horizon: "key",
 * "origin", "acked", "horizon", "acked_ms"), each list at most 32 long.
 * out: the caller's (tsync_free()). Errors: TSYNC_ENOMEM. */
TSYNC_API int tsync_store_log_json(char **out, tsync_store *s);

/* Every difference between this database's table definitions and other tills' (as
 * tsync_store_schema_mismatches calls them) as a JSON array of objects: "table", "column" (null
 * for the table itself), "site" (hex), "till" (device name or ""), "what", "seen_ms".
 * out: the caller's (tsync_free()). Errors: TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_store_schema_mismatches_json(char **out, tsync_store *s);

/* The parked changes, oldest first, at most limit (0: all), as {"total": N, "parked": [{"id",
 * "origin", "till", "seq", "row", "table", "column" (null: the whole row), "reason"}...]}; the
 * fields are tsync_parked_change's (schema.h).
 * out: the caller's (tsync_free()). Errors: TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_store_parked_json(char **out, tsync_store *s, size_t limit);

/* One held batch: merged from another till and kept, not applied, until what it waits for
 * arrives. Strings are borrowed for the duration of the callback. */
typedef struct {
    uint32_t version;       /* TSYNC_HELD_BATCH_VERSION */
    const char *origin_hex; /* the batch's author, 32 hex digits */
    uint64_t seq;           /* its sequence number */
    const char *reason;     /* one line: what it waits for */
} tsync_held_batch;

#define TSYNC_HELD_BATCH_VERSION 1

/* Return non-zero to stop: the value is returned by tsync_store_held_foreach. */
typedef int (*tsync_held_fn)(void *ctx, const tsync_held_batch *b);

/* Calls fn for each held batch, by origin then sequence number (at most limit; 0: all). total
 * (may be NULL) receives how many are held in all. Errors: TSYNC_EIO; or fn's non-zero value. */
TSYNC_API int tsync_store_held_foreach(size_t *total, tsync_store *s, size_t limit,
                                       tsync_held_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
