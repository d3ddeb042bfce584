/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/snapshot.h — snapshots: a replica's state (every replicated row with its clock metadata,
 * deleted rows' clocks included) as self-contained chunks another replica can merge. A till behind
 * the pruned horizon of the logs (new, restored) gets one from an enrolled peer instead of the
 * batches it can no longer get. The byte format is codec/snapshot.h's; the format, the merge rule
 * and the limits are in docs/SNAPSHOT.md. Exporting is store/snapshot_export.c, merging
 * store/snapshot_import.c.
 *
 * The sync node (net/) moves the chunks: SNAPSHOT_BEGIN{id, vv}, SNAPSHOT_CHUNK{id, seq, rows} per
 * chunk, SNAPSHOT_END{id, nchunks, hash}, with hash = tsync__snap_hash of the chunks. It checks the
 * hash and that the sender is an enrolled peer before it calls tsync__snap_import: snapshots are
 * trusted hop by hop, they carry no signatures of their own.
 *
 * THREAD SAFETY: like the store, one thread at a time per store.
 */
#ifndef TSYNC_STORE_SNAPSHOT_H
#define TSYNC_STORE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "codec/snapshot.h"
#include "crdt/crdt.h"
#include "tillsync/store.h"

/* Encodes this replica's state — every replicated table's rows with their clock metadata,
 * including the clocks of deleted rows (existence set entries) — as self-contained chunks of about
 * chunk_bytes (each chunk decodes on its own: it carries the site table entries it references), in
 * ONE read transaction; *vv receives the version vector (site, seq, head hash for every site with
 * seq >= 1) the state is consistent with (the caller frees it with tsync__vv_free, also after an
 * error). emit returns non-zero to stop (that value is returned).
 *
 * Local changes not yet sealed are sealed first, so every row has its clocks. A chunk holds whole
 * rows: it is at most chunk_bytes, or one row and its dictionaries when that row alone is larger.
 * The first chunk also carries the site entries (key, incarnation) of every site of *vv. At least
 * one chunk is emitted, even for an empty replica. The read transaction stays open while emit
 * runs: emit should queue the chunk, not wait on the peer. Chunk memory is the caller's only
 * during the call.
 * Errors: TSYNC_EIO, TSYNC_ENOMEM, TSYNC_EBUSY (sealing), TSYNC_EINVAL (inside an open transaction,
 * chunk_bytes < 64), TSYNC_EUNSUPPORTED (a row larger than TSYNC__SNAP_CHUNK_MAX_BYTES). */
int tsync__snap_export(tsync_store *s, size_t chunk_bytes,
                       int (*emit)(void *ctx, const uint8_t *chunk, size_t len), void *ctx,
                       tsync__vv *vv);

/* Merges a complete snapshot (its chunks in order) into this replica in ONE transaction, as a
 * state-based CRDT merge of every row with the local row: existence OR-sets united, each LWW column
 * taken from the side with the greater (hlc, site id), PN-counters merged per site (max of P and of
 * N per site), rows written or deleted accordingly with capture off on this connection, conflicts
 * recorded in tsync_conflicts when the losing write was not yet known to the winning side, the
 * local HLC raised to the highest clock seen. Then for each entry of vv (the vector the exporter
 * returned) with seq above ours: the site is registered (key and incarnation from the chunks),
 * tsync_sites.seq/hash are raised to the snapshot's, and a stub is written to tsync_log at that seq
 * (body a zero-length blob, hash the head hash, sig NULL): this replica holds those batches only as
 * state. Our own site's entry, entries where we are ahead or equal, and origins frozen after a fork
 * are left as they are (a message in the report says so for the last two kinds when they differ).
 *
 * Nothing changes unless everything applies:
 * - TSYNC_ECORRUPT: a malformed chunk (one line naming the chunk index and the field), or a vector
 *   entry whose site no chunk describes; TSYNC_EVERSION: a chunk of an unknown format;
 * - TSYNC_EREFUSED: a row of a table this database does not replicate, or writing a column it
 *   lacks, or a table whose key or counters differ here ("migrate first": snapshots cannot be
 *   parked, so they are refused whole and can be asked for again after the migration);
 * - TSYNC_ECLOCKSKEW: a clock more than the skew bound ahead of our wall clock;
 * - TSYNC_EINVAL (inside an open transaction, n == 0), TSYNC_EIO, TSYNC_ENOMEM, TSYNC_EBUSY.
 * report (may be NULL) counts rows: merged (rows this replica did not have as they are),
 * duplicates (rows it already had), conflicts, parked (rows a local constraint refused, their
 * clocks kept, as merge does). */
TSYNC_WARN_UNUSED int tsync__snap_import(tsync_store *s, const uint8_t *const *chunks,
                                         const size_t *lens, size_t n, const tsync__vv *vv,
                                         tsync_merge_report *report);

/* ---------------------------------------------------------------- streaming import
 *
 * The same merge, a chunk at a time as chunks arrive, each in a short transaction of its own, so
 * a node takes a snapshot of any size without holding it in memory or the write lock for long.
 * open takes the vector from SNAPSHOT_BEGIN (copied) and renews our incarnation when the vector
 * holds more of our own site than we do (as tsync__snap_import does); chunk checks one chunk
 * (format, clock skew) and merges its rows in one transaction, all or nothing for that chunk;
 * finish, once every chunk is in and SNAPSHOT_END's count and hash matched, takes the vector
 * (the log stubs) in a last transaction. A snapshot abandoned half-way (session lost, a chunk
 * refused) leaves the rows merged so far: each is a join of ours with a state of the shop, so
 * nothing is wrong, only the vector is not taken — the next snapshot merges them as duplicates.
 * Errors as tsync__snap_import's, for the chunk at hand; finish: TSYNC_ECORRUPT when a vector
 * entry's site was described by no chunk, TSYNC_EINVAL when no chunk was merged. */
typedef struct tsync__snap_in tsync__snap_in;
TSYNC_WARN_UNUSED int tsync__snap_in_open(tsync_store *s, const tsync__vv *vv,
                                          tsync__snap_in **out);
TSYNC_WARN_UNUSED int tsync__snap_in_chunk(tsync__snap_in *in, const uint8_t *chunk, size_t len,
                                           tsync_merge_report *report);
TSYNC_WARN_UNUSED int tsync__snap_in_finish(tsync__snap_in *in, tsync_merge_report *report);
/* Chunks merged so far. */
size_t tsync__snap_in_merged(const tsync__snap_in *in);
void tsync__snap_in_free(tsync__snap_in *in);

#endif
