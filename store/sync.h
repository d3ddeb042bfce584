/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/sync.h — the narrow interface the sync engine (net/) uses to reach the store: our version
 * vector, the runs of batches a peer lacks in bounded pieces, merging runs that arrived over the
 * wire, and the counts a status screen shows. Bundles (store/bundle_io.c) use the same run reader,
 * so a file and the network carry batches the same way.
 *
 * THREAD SAFETY: like the store, one thread at a time.
 */
#ifndef TSYNC_STORE_SYNC_H
#define TSYNC_STORE_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "crdt/crdt.h"
#include "tillsync/migrate.h"
#include "tillsync/store.h"

/* Pieces of runs are cut at a signed batch once they reach this many bytes of bodies, so one
 * piece fits a wire message (and a bundle run can be forwarded over the wire unchanged). */
#define TSYNC__RUN_PIECE_BYTES (1u << 20)
/* ... or this many bodies. */
#define TSYNC__RUN_PIECE_BODIES 4096u

/* What we hold: every site with seq >= 1, sorted by site id, with the hash of its head batch. */
int tsync__sync_vv(tsync_store *s, tsync__vv *out);

/* tsync__sync_runs' code (positive, so no error code collides with it) when the peer's vector is
 * below this replica's horizon for some origin: it needs batches held here only as a stub (pruned,
 * or received as a snapshot) or no longer held at all (its head lies below the stub). Whatever
 * made it so (a new till, a restored backup, weeks offline), the answer is a snapshot. */
#define TSYNC__SYNC_BEHIND 1000

/* One contiguous piece of one origin's log, ending at a batch whose signature we hold. The
 * pointers are valid only during the call. */
typedef struct {
    const tsync__bsite *site;
    uint64_t first_seq;
    const uint8_t *prev; /* hash before first_seq (all zero when first_seq is 1) */
    uint32_t n;
    const uint8_t *const *body;
    const size_t *len;
    const uint8_t *sig;  /* signature of the last batch */
    const uint8_t *last; /* hash of the last batch */
    size_t bytes;        /* sum of len */
} tsync__run_piece;

/* Returns non-zero to stop (the value is returned by tsync__sync_runs). */
typedef int (*tsync__run_fn)(void *ctx, const tsync__run_piece *piece);

/* Calls emit for the pieces of the batches a peer holding `peer` lacks (all when peer is NULL), in
 * one read transaction, origin by origin. Where the peer's head hash for a seq differs from ours
 * (a fork), our branch is sent from the last batch before the fork we know of (or the start), so
 * the peer sees the fork. Stops once `budget` bytes of bodies were emitted (at least one piece);
 * *more (may be NULL) tells whether anything was left. Errors: TSYNC__SYNC_BEHIND (above),
 * TSYNC_EIO, TSYNC_ECORRUPT (the log has a gap), TSYNC_ENOMEM, or emit's value. */
int tsync__sync_runs(tsync_store *s, const tsync__vv *peer, size_t budget, tsync__run_fn emit,
                     void *ctx, int *more);

/* Verifies and merges decoded runs in one transaction, exactly like tsync_store_merge does for a
 * bundle image (bun.runs point into memory the caller keeps). Defined in store/merge.c. */
TSYNC_WARN_UNUSED int tsync__merge_bundle(tsync_store *s, const tsync__bundle *bun,
                                          tsync_merge_report *report);
/* The replicated tables whose rows the merges committed since the last call changed (a row
 * folded in counts, even when its values lost to newer ones), by name as this database spells
 * them; parked changes do not count. *names (NULL when none) and its strings are the caller's:
 * tsync__sync_merged_tables_free. The set starts empty again. Defined in store/merge_apply.c. */
void tsync__sync_merged_tables_take(tsync_store *s, char ***names, size_t *n);
/* Adds every replicated table to that set (a snapshot taken: any of them may have changed). */
void tsync__sync_merged_tables_all(tsync_store *s);
void tsync__sync_merged_tables_free(char **names, size_t n);

/* Runs the signed migrations held that were not run here (store/migrate.c), after trust records
 * arrived; keeps a failure for status (tsync_store_signed_migration_error). The caller has no
 * transaction open. Errors: as tsync_store_migrate_signed. */
int tsync__migrate_signed_pending(tsync_store *s, tsync_migrate_report *report);

/* Counts for status: batches held (waiting for dependencies), parked row changes, recorded
 * forks, conflicts, rows waiting to be sealed. */
typedef struct {
    int64_t held, parked, forks, conflicts, pending;
} tsync__sync_counts;
int tsync__sync_counts_get(tsync_store *s, tsync__sync_counts *out);

/* A wall clock this far off the shop's median is corrected when sealing, and reported. */
#define TSYNC__CLOCK_OFF_MS 60000

/* The node's view of the shop's clock (docs/DATA_MODEL.md, "Clocks"): records the median offset of
 * the connected peers' clocks (peers minus ours; known 0: no peer to compare with) for every
 * process that seals or merges on this database. 0 or TSYNC_EIO/TSYNC_EBUSY. */
int tsync__sync_shop_clock(tsync_store *s, int known, int64_t offset_ms);

/* This till's clock for status: its HLC's ms, and the resets of it (a clock found more than the
 * skew bound ahead of the shop's: count, from which ms, when). */
typedef struct {
    uint64_t hlc_ms, skew_bound_ms;
    int64_t resets, reset_from_ms, reset_at_ms;
} tsync__sync_clock;
int tsync__sync_clock_get(tsync_store *s, tsync__sync_clock *out);

/* Why batches are held, per origin: up to max entries of (count, reason of its first held batch).
 * Returns the number filled, or a negative error. */
typedef struct {
    int64_t count;
    char reason[160];
} tsync__sync_held;
int tsync__sync_held_get(tsync_store *s, tsync__sync_held *out, int max);

/* 1 when another connection committed to the database since the last call (PRAGMA
 * data_version; the first call returns 1), 0 when not, or a negative error. Cheap: no I/O beyond
 * the WAL index. */
int tsync__sync_changed(tsync_store *s);

/* The Ed25519 public keys of the devices that hold a certificate of our shop and are not revoked,
 * except our own: whom a static peer address without a key may be. *keys is malloc'd (n * 32
 * bytes; NULL when n is 0). 0, TSYNC_ENOMEM or TSYNC_EIO. */
int tsync__sync_device_keys(tsync_store *s, uint8_t **keys, size_t *n);

/* The device's secret key (64 bytes, libsodium layout) and public key, borrowed for the store's
 * lifetime: the transport derives its CURVE pair from them. */
const uint8_t *tsync__sync_secret_key(tsync_store *s);
const uint8_t *tsync__sync_public_key(tsync_store *s);

/* The schema version sent in HELLO: the highest applied migration, 0 when none. */
uint64_t tsync__sync_schema(tsync_store *s);

/* Remembers the vector a member (device key pk) acknowledged to us directly: pruning waits for it.
 * 0, TSYNC_EIO, TSYNC_ENOMEM. */
int tsync__sync_ack_put(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES], const tsync__vv *vv);

/* Prunes the log: for each origin, batch bodies below min(every member's acknowledged seq, head -
 * keep) are deleted, and the batch at that seq becomes a stub (hash kept, body empty), in one
 * transaction. Batches that parked row changes still need are kept. A member that never
 * acknowledged anything stops all pruning. members: nmembers keys of 32 bytes (our own excluded).
 * *pruned (may be NULL) receives the rows deleted or emptied. 0, TSYNC_EIO, TSYNC_EBUSY. */
int tsync__sync_prune(tsync_store *s, const uint8_t *members, size_t nmembers, uint64_t keep,
                      size_t *pruned);

/* The log policy (docs/NODE.md, "Pruning and snapshots"), in store/prune.c. Defaults: at most
 * this many batch bodies, this old, and as many bytes as the rest of the database (at least
 * TSYNC__LOG_MIN_BYTES). */
#define TSYNC__LOG_DEFAULT_BATCHES     1000000
#define TSYNC__LOG_DEFAULT_AGE_MS      (30LL * 24 * 3600 * 1000)
#define TSYNC__LOG_DEFAULT_DATA_FACTOR 1
#define TSYNC__LOG_MIN_BYTES           (64LL << 20)

/* The log's size: rows (stubs included), batch bodies and their bytes, and the bytes of
 * everything else in the database (its used pages less the log's estimate). */
typedef struct {
    int64_t rows, batches, bytes, data_bytes;
} tsync__log_stats;
int tsync__log_stats_get(tsync_store *s, tsync__log_stats *out);

/* The policy in force: the database's (tsync_store_log_policy_set), each non-zero field of over
 * (may be NULL; tests and callers that want other bounds for one run) in its place, defaults filled
 * in for the log's size st; a bound < 0 is none. 0 or TSYNC_EIO. */
int tsync__log_policy_resolve(tsync_store *s, const tsync_log_policy *over,
                              const tsync__log_stats *st, tsync_log_policy *out);

/* Prunes the log to the policy, whoever acknowledged what, in one transaction; never the newest
 * batch of an origin, our own batches not handed to a peer or a bundle yet (the marker), batches
 * parked changes need, or an origin frozen after a fork. *pruned (may be NULL): rows deleted or
 * emptied. 0, TSYNC_EBUSY, TSYNC_EIO, TSYNC_EFULL, TSYNC_EINVAL (read-only). */
int tsync__sync_prune_policy(tsync_store *s, const tsync_log_policy *over, size_t *pruned);

/* An origin whose log starts at a stub: nothing below seq is held as a body. */
typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t seq, head;
    uint64_t acked; /* tsync__behind: what the till acknowledged of this origin */
} tsync__horizon;
int tsync__log_horizon(tsync_store *s, int (*each)(void *ctx, const tsync__horizon *h), void *ctx);

/* A till (by the key it acknowledged under, tsync_acks) whose last acknowledged vector is below
 * our horizon for some origin (the first such is in horizon): batches cannot catch it up any more;
 * it needs a snapshot (an enrolled shop) or a restore. */
typedef struct {
    uint8_t pk[TSYNC__PK_BYTES];
    tsync__horizon horizon;
    int64_t acked_ms;
} tsync__behind;
int tsync__log_behind(tsync_store *s, int (*each)(void *ctx, const tsync__behind *b), void *ctx);

/* Calls each for every recorded fork proof (a bundle image holding both signed branches) with an
 * id above after_id, in id order; a non-zero return stops (and is returned). */
int tsync__sync_fork_proofs(tsync_store *s, int64_t after_id,
                            int (*each)(void *ctx, int64_t id, const uint8_t *proof, size_t len),
                            void *ctx);

/* Runs WAL checkpoints (PASSIVE) every period_ms on a thread with its own connection and turns
 * the store connection's automatic checkpoint off, so no commit of this connection pays for one.
 * 0, TSYNC_EIO, TSYNC_ENOMEM, TSYNC_ERROR. Stop (and restore the automatic checkpoint) with
 * tsync__sync_ckpt_stop before freeing the store. */
typedef struct tsync__ckpt tsync__ckpt;
int tsync__sync_ckpt_start(tsync_store *s, int period_ms, tsync__ckpt **out);

/* How long this handle waits for another connection's write lock from now on. */
void tsync__sync_busy_timeout(tsync_store *s, int ms);
void tsync__sync_ckpt_stop(tsync_store *s, tsync__ckpt *c);

#endif
