/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/logrun_int.h — received runs kept in the log as one compact row per run
 * (store/log_run.c).
 *
 * A merge that applies a stretch of one origin's consecutive batches writes their bodies once, in
 * the compact run form of codec/compact.h, to tsync_log_runs(site, first_seq, n, data), and gives
 * each batch's tsync_log row the one-byte body TSYNC__LOG_IN_RUN instead of its body (its seq,
 * hash and signature stay in the row, so every query on seqs, hashes, stubs and counts reads what
 * it read before). Whoever needs a body reads tsync_log_body(site, seq, body) instead of body: the
 * row's own body, or the one rebuilt byte for byte from the run (the batch encoding is canonical,
 * so hashes and signatures verify over the very bytes the author signed).
 *
 * THREAD SAFETY: like the store, one thread at a time per connection.
 */
#ifndef TSYNC_STORE_LOGRUN_INT_H
#define TSYNC_STORE_LOGRUN_INT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* The body of a tsync_log row whose batch is in tsync_log_runs: 0xc1 is never a msgpack byte,
 * so no batch body (a msgpack array) is this one byte. */
#define TSYNC__LOG_IN_RUN 0xc1

/* Stretches shorter than this keep their bodies in their rows. */
#define TSYNC__LOGRUN_MIN 8u

/* tsync_meta 'log_format': 2 once the log may hold runs. A database of a higher one was written by
 * a newer build: refused at open. */
#define TSYNC__LOG_FORMAT 2

/* SQL: the bytes a tsync_log row's body takes (its share of its run for a batch in a run). */
#define TSYNC__LOG_BODY_BYTES                                                                      \
    "(CASE WHEN length(body) = 1 THEN coalesce((SELECT length(r.data) / r.n FROM tsync_log_runs "  \
    "r "                                                                                           \
    "WHERE r.site = tsync_log.site AND r.first_seq <= tsync_log.seq ORDER BY r.first_seq DESC "    \
    "LIMIT 1), 1) ELSE length(body) END)"

typedef struct tsync__logrun tsync__logrun;

/* Registers tsync_log_body(site, seq, body) on db. Returns the handle, NULL when out of memory;
 * tsync__logrun_detach finalizes its statements and removes the function (before closing db). */
tsync__logrun *tsync__logrun_attach(sqlite3 *db);
void tsync__logrun_detach(tsync__logrun *lr);

/* Writes n bodies of origin site_idx, seq first_seq.., given as their compact run (codec/compact.h:
 * checked by whoever decoded it), as one run row. 0 or an error code with the error recorded. */
int tsync__logrun_store(tsync_store *s, int64_t site_idx, uint64_t first_seq, uint32_t n,
                        const uint8_t *data, size_t dlen);

/* Deletes the run rows of origin site_idx no tsync_log row at or above seq `from` refers to: those
 * that end below it. */
int tsync__logrun_prune(tsync_store *s, int64_t site_idx, uint64_t from);

#endif
