/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/store.h — a replicated SQLite database: open it, make tables replicated, seal local
 * changes into signed batches, exchange them as bundles, merge, and inspect state and conflicts.
 *
 * THREAD SAFETY: a tsync_store is used by one thread at a time (it owns one SQLite connection);
 * open one store per thread to work in parallel. Several stores, in one process or many, may open
 * the same database file: every write that matters runs under BEGIN IMMEDIATE.
 */
#ifndef TILLSYNC_STORE_H
#define TILLSYNC_STORE_H

#include "tillsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sqlite3;
typedef struct tsync_store tsync_store;

#define TSYNC_SITE_ID_BYTES 16
#define TSYNC_HASH_BYTES    32

/* The largest row a replicated table takes, in bytes: the sum of its values' lengths (TEXT and
 * BLOB in bytes, numbers as their text). A write that would make a row larger is refused by the
 * capture trigger ("tillsync: a row of TABLE is over the per-row limit of 33554432 bytes") and
 * nothing of the statement commits, so a row that is accepted can always be sealed and sent: a
 * batch holds at most 64 MiB, and sealing cuts batches well below that (docs/DATA_MODEL.md). */
#define TSYNC_MAX_ROW_BYTES (32u << 20)

/* How durable a commit is. NORMAL: a commit survives a crash of the process; in WAL mode the last
 * transactions before a power loss may roll back (never corrupt). FULL: also survives power loss,
 * at about one fsync per commit. */
typedef enum {
    TSYNC_SYNC_NORMAL = 1,
    TSYNC_SYNC_FULL = 2,
} tsync_sync_mode;

typedef struct {
    uint32_t version;         /* TSYNC_STORE_OPTIONS_VERSION */
    int32_t create;           /* create the database and its key file if missing */
    int32_t synchronous;      /* a tsync_sync_mode; 0 means NORMAL */
    const char *key_path;     /* key file; NULL means "<database path>.key" */
    uint32_t busy_timeout_ms; /* how long to wait for another writer; 0 means 10000 */
    /* Version 2: open for reading only. Nothing is written at open or later (no schema set-up,
     * no key renewal, no sealing: bundles and backups then carry what is sealed, plus the unsealed
     * rows in a backup), so reading, exporting and backing up to another disk work while the
     * database's disk is full. Writes fail. Ignored with create. */
    int32_t read_only;
} tsync_store_options;

#define TSYNC_STORE_OPTIONS_VERSION 2
#define TSYNC_STORE_OPTIONS_INIT                                                                   \
    {                                                                                              \
        TSYNC_STORE_OPTIONS_VERSION, 0, 0, NULL, 0, 0                                              \
    }

/* Sets *out to TSYNC_STORE_OPTIONS_INIT as of version (the caller's TSYNC_STORE_OPTIONS_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_store_options_init(tsync_store_options *out, uint32_t version);

/* Opens (or with opts->create, creates) a database and its device key file.
 * out:  receives the store; the caller frees it with tsync_store_free().
 * path: the SQLite database file.
 * opts: NULL for defaults (open an existing database).
 * Errors: TSYNC_ENOTFOUND (no database or key file and create is 0), TSYNC_EIO (cannot open or
 * read; the message names the file), TSYNC_ECORRUPT (the key file is damaged), TSYNC_EINVAL
 * (the key file is readable by other users). */
TSYNC_API int tsync_store_open(tsync_store **out, const char *path,
                               const tsync_store_options *opts);

/* Closes the store. Accepts NULL. Unsealed changes stay in the database and are sealed later. */
TSYNC_API void tsync_store_free(tsync_store *s);

/* The store's SQLite connection, borrowed for as long as the store is open. Writes through it
 * to replicated tables are captured like any other. */
TSYNC_API struct sqlite3 *tsync_store_sqlite(tsync_store *s);

/* Site id (16 bytes) of this database on this device, borrowed for the store's lifetime. */
TSYNC_API const uint8_t *tsync_store_site_id(tsync_store *s);

/* Makes an existing table replicated: installs capture triggers and records every existing row as
 * a local insert. counters: names of INTEGER columns that are PN-counters (may be NULL when
 * ncounters is 0).
 * Errors: TSYNC_ENOTFOUND (no such table or column), TSYNC_EUNSUPPORTED (the table cannot be
 * replicated: the message says why and what to change), TSYNC_EEXISTS (already replicated). */
TSYNC_API int tsync_store_replicate(tsync_store *s, const char *table, const char *const *counters,
                                    size_t ncounters);

/* How a column merges (docs/DATA_MODEL.md, "Column policies"). */
typedef enum {
    TSYNC_POLICY_LWW = 0,   /* last writer wins (the default) */
    TSYNC_POLICY_MAX = 1,   /* a max register: the largest value ever written, in SQLite's order */
    TSYNC_POLICY_MIN = 2,   /* a min register: the smallest value ever written; NULL is no value */
    TSYNC_POLICY_REVIEW = 3 /* LWW, and every concurrent write is an open conflict (kind 1) */
} tsync_policy;

/* One column's policy. column is borrowed for the duration of the call. */
typedef struct {
    const char *column;
    int32_t policy; /* tsync_policy */
} tsync_column_policy;

/* Options of tsync_store_replicate_ext. Initialise with TSYNC_REPLICATE_OPTIONS_INIT or
 * tsync_replicate_options_init(); fields are only ever added at the end. */
typedef struct {
    uint32_t version;            /* TSYNC_REPLICATE_OPTIONS_VERSION */
    const char *const *counters; /* PN-counter columns, as tsync_store_replicate */
    size_t ncounters;
    const tsync_column_policy *policies; /* per-column policies; columns not named are LWW */
    size_t npolicies;
} tsync_replicate_options;

#define TSYNC_REPLICATE_OPTIONS_VERSION 1
#define TSYNC_REPLICATE_OPTIONS_INIT                                                               \
    {                                                                                              \
        TSYNC_REPLICATE_OPTIONS_VERSION, NULL, 0, NULL, 0                                          \
    }

/* Fills *out with the defaults of the given struct version (for bindings without the macro).
 * Errors: TSYNC_EINVAL (out NULL), TSYNC_EVERSION (unknown version). */
TSYNC_API int tsync_replicate_options_init(tsync_replicate_options *out, uint32_t version);

/* tsync_store_replicate with column policies: the policies are recorded with the table's
 * definition (tsync_tables, the schema description tills exchange, every batch and snapshot that
 * carries the table), and this till's capture keeps a max/min column a register: a local write
 * that would lower a max column (raise a min column) leaves it unchanged. opts may be NULL (no
 * counters, no policies).
 * Errors: as tsync_store_replicate; TSYNC_EINVAL (a policy other than max, min or review, or a
 * column given two roles), TSYNC_EUNSUPPORTED (a policy on a key column), TSYNC_EVERSION
 * (opts->version unknown). */
TSYNC_API int tsync_store_replicate_ext(tsync_store *s, const char *table,
                                        const tsync_replicate_options *opts);

/* Runs SQL (one or more statements) on the store's connection, then seals. For each row of each
 * statement that returns rows, calls row(ctx, ncols, names, values) with values as text (NULL for
 * SQL NULL; blobs as hex). row may be NULL. A callback returning non-zero stops with TSYNC_ERROR.
 * Errors: TSYNC_EINVAL (SQL error; the message is SQLite's). */
typedef int (*tsync_row_cb)(void *ctx, int ncols, const char *const *names,
                            const char *const *values);
TSYNC_API int tsync_store_exec(tsync_store *s, const char *sql, tsync_row_cb row, void *ctx);

/* Seals committed local changes into a signed batch. nbatches (may be NULL) receives how many
 * batches were sealed (0 when nothing was pending). Errors: TSYNC_EBUSY, TSYNC_EIO. */
TSYNC_API int tsync_store_seal(tsync_store *s, size_t *nbatches);

/* This database's state as JSON: site id, incarnation, public key, clock and version vector with
 * head hashes, "unsealable" (a one-line text) when local changes over TSYNC_MAX_ROW_BYTES
 * written by an older build cannot be sealed, and `rollbacks` / `last_rollback` (times its log was
 * found gone back, when an old copy was written over it, and a new incarnation taken). *out is the
 * caller's, freed with tsync_free(). */
TSYNC_API int tsync_store_state_json(char **out, tsync_store *s);

/* Writes a bundle of the batches a peer with the given state lacks (all when since_json is NULL).
 * Seals first. out, len: receive the bundle, the caller's (tsync_free()). nbatches may be NULL.
 * Errors: TSYNC_EINVAL (since_json is not a state this library wrote). */
TSYNC_API int tsync_store_bundle(uint8_t **out, size_t *len, tsync_store *s, const char *since_json,
                                 size_t *nbatches);

/* Writes the same bundle as tsync_store_bundle into the file at path, as the log is read: memory
 * stays bounded (about one run piece of 1 MiB plus zstd's buffers) whatever the bundle's size. The
 * file is written under a temporary name beside path and renamed when whole, so a failure leaves
 * no partial bundle and an existing file at path unchanged. nbatches may be NULL.
 * Errors: TSYNC_EINVAL (since_json is not a state this library wrote), TSYNC_ENOTFOUND (that state
 * is behind this database's pruned horizon), TSYNC_EIO (cannot create or write the file). */
TSYNC_API int tsync_store_bundle_file(tsync_store *s, const char *path, const char *since_json,
                                      size_t *nbatches);

/* What a merge did. Messages say, one line each, why something was held, parked or refused. */
typedef struct {
    uint32_t version;  /* TSYNC_MERGE_REPORT_VERSION */
    size_t merged;     /* batches applied */
    size_t duplicates; /* batches already held */
    size_t held;       /* batches waiting for dependencies or for a clock to catch up */
    size_t parked;     /* row changes for a table or column this database lacks */
    size_t refused;    /* batches or runs refused (bad signature, fork, frozen origin) */
    size_t conflicts;  /* concurrent field writes that LWW resolved */
    size_t nmessages;
    char **messages;
} tsync_merge_report;

#define TSYNC_MERGE_REPORT_VERSION 1
#define TSYNC_MERGE_REPORT_INIT                                                                    \
    {                                                                                              \
        TSYNC_MERGE_REPORT_VERSION, 0, 0, 0, 0, 0, 0, 0, NULL                                      \
    }

/* Sets *out to TSYNC_MERGE_REPORT_INIT as of version (the caller's TSYNC_MERGE_REPORT_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_merge_report_init(tsync_merge_report *out, uint32_t version);

/* Frees what a report holds (not the report). Accepts NULL. */
TSYNC_API void tsync_merge_report_clear(tsync_merge_report *r);

/* Verifies and merges a bundle. A bundle of format 4 or later (what tsync_store_bundle writes) of
 * 2 MiB or more merges as tsync_store_merge_file merges a file, with memory that does not grow with
 * the bundle: checked whole first, then merged in slices of about 1 MiB of batches, one transaction
 * each (a bundle that fits one slice, in one). Smaller bundles and older formats merge in one
 * transaction. report may be NULL.
 * Returns 0 when nothing was refused. A malformed bundle (TSYNC_ECORRUPT, TSYNC_EVERSION), a run
 * whose signature does not verify (TSYNC_EBADSIG) or whose chain is broken (TSYNC_ECHAIN) is
 * refused whole and leaves the database unchanged. A fork (TSYNC_EFORK) is recorded with its proof
 * and the origin frozen; the bundle's other runs are merged. */
TSYNC_API TSYNC_WARN_UNUSED int tsync_store_merge(tsync_store *s, const uint8_t *bundle, size_t len,
                                                  tsync_merge_report *report);

/* Like tsync_store_merge, for a bundle in the file at path (any format), with memory that does
 * not grow with the bundle. The file is read twice: first every batch, hash chain and signature is
 * checked, touching nothing (a refused bundle changes nothing, as with tsync_store_merge); then it
 * merges in slices of about 1 MiB of batches, one transaction each. A bundle that fits one slice
 * merges exactly as tsync_store_merge would. In a larger one, a batch whose dependencies come in a
 * later slice is counted held, then merged; if the disk fails half way (TSYNC_EIO, TSYNC_EBUSY),
 * the slices before stay merged, and merging the file again completes it. report may be NULL.
 * Errors: as tsync_store_merge, and TSYNC_EIO when the file cannot be opened or read (nothing
 * merged) or changed between the two readings. */
TSYNC_API TSYNC_WARN_UNUSED int tsync_store_merge_file(tsync_store *s, const char *path,
                                                       tsync_merge_report *report);

/* BLAKE2b-256 of the canonical form of the visible content of the replicated tables (one table
 * when table is not NULL); see docs/DATA_MODEL.md. Equal on two replicas exactly when they show the
 * same rows. Errors: TSYNC_ENOTFOUND (table not replicated). */
TSYNC_API int tsync_store_hash(uint8_t out[TSYNC_HASH_BYTES], tsync_store *s, const char *table);

/* The recorded conflicts as a JSON array, every entry: tsync_store_conflicts_list_json(out, s, 0,
 * 0, 0) (tillsync/conflicts.h says what an entry holds); *out is the caller's (tsync_free()). */
TSYNC_API int tsync_store_conflicts_json(char **out, tsync_store *s);

/* How much of the batch log a database keeps (docs/NODE.md, "Pruning and snapshots"). Batch bodies
 * beyond any bound are deleted oldest first, whoever acknowledged them; a till that still lacked
 * them gets a snapshot from an enrolled till (a bundle for it fails with a message saying so). The
 * newest batch of each origin, this till's own batches not yet handed to a peer or written into a
 * bundle, batches parked changes need and an origin frozen after a fork are always kept. In each
 * field 0 means the default, a negative value no bound. */
typedef struct {
    uint32_t version;    /* TSYNC_LOG_POLICY_VERSION */
    int64_t max_batches; /* batch bodies kept; default 1,000,000 */
    int64_t max_bytes;   /* their bytes; default: as large as the rest of the database, and
                            never less than 64 MiB */
    int64_t max_age_ms;  /* by the batch's clock; default 30 days */
} tsync_log_policy;

#define TSYNC_LOG_POLICY_VERSION 1
#define TSYNC_LOG_POLICY_INIT                                                                      \
    {                                                                                              \
        TSYNC_LOG_POLICY_VERSION, 0, 0, 0                                                          \
    }

/* Sets *out to TSYNC_LOG_POLICY_INIT as of version (the caller's TSYNC_LOG_POLICY_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_log_policy_init(tsync_log_policy *out, uint32_t version);

/* Records the database's log policy (kept in the database: every process that prunes it, the
 * node included, uses it; `tillsync run --log-max-...` records it too). Errors: TSYNC_EVERSION,
 * TSYNC_EBUSY, TSYNC_EIO (read-only). */
TSYNC_API int tsync_store_log_policy_set(tsync_store *s, const tsync_log_policy *p);

/* The policy recorded (0 fields: defaults), into *out whose version the caller set.
 * Errors: TSYNC_EVERSION. */
TSYNC_API int tsync_store_log_policy_get(tsync_log_policy *out, tsync_store *s);

/* Prunes the log to the recorded policy now (a running node does it every prune period; a
 * database synced only by bundles calls this, or `tillsync prune`). pruned (may be NULL) receives
 * how many log rows were deleted or emptied. Errors: TSYNC_EBUSY, TSYNC_EIO, TSYNC_EINVAL (the
 * store is read-only). */
TSYNC_API int tsync_store_prune(tsync_store *s, size_t *pruned);

/* One round of collecting deleted rows (their tombstones and clock entries) whose delete every
 * certified till has acknowledged (docs/DATA_MODEL.md, "Collecting tombstones and clock
 * entries"); tsync_store_prune runs one too. A round collects what an earlier round marked and
 * marks what a later round may collect. Nothing in an unenrolled database. collected (may be
 * NULL): rows collected. `tsync_store_log_json` shows the totals ("collect"). Errors: TSYNC_EBUSY,
 * TSYNC_EIO, TSYNC_EINVAL (read-only). */
TSYNC_API int tsync_store_collect(tsync_store *s, size_t *collected);

#ifdef __cplusplus
}
#endif
#endif
