/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/snapshot_int.h — what the snapshot exporter (store/snapshot_export.c) and importer
 * (store/snapshot_import.c) share: this database's sites by local index.
 *
 * THREAD SAFETY: like the store, one thread at a time per store.
 */
#ifndef TSYNC_STORE_SNAPSHOT_INT_H
#define TSYNC_STORE_SNAPSHOT_INT_H

#include "internal.h"
#include "store/snapshot.h"

/* A site of tsync_sites, by local index. */
typedef struct {
    int known, has_key;
    uint64_t seq;   /* contiguous batches held */
    int64_t frozen; /* frozen_seq, -1 when not frozen */
    uint8_t id[TSYNC__SITE_BYTES];
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
} lsite;

/* Reads tsync_sites into *out (malloc'd, indexed by local index; *n entries). */
TSYNC_WARN_UNUSED int tsync_snap__load_sites(tsync_store *s, lsite **out, uint32_t *n);

#endif
