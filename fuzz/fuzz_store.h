/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_store.h — the real store the store-level fuzz targets write into: created once per
 * process in a temporary folder, with the replicated table products (a counter, stock) made by
 * the SQL given. Any failure aborts: a target without its store would test nothing.
 */
#ifndef TSYNC_FUZZ_STORE_H
#define TSYNC_FUZZ_STORE_H

#include <stdio.h>
#include <stdlib.h>

#include "tillsync/tillsync.h"

/* tag names the temporary folder; sql creates products (and may fill it). */
static inline tsync_store *fuzz_store_open(const char *tag, const char *sql)
{
    char tmpl[64];
    snprintf(tmpl, sizeof tmpl, "/tmp/tsync-fuzz%s-XXXXXX", tag);
    char *dir = mkdtemp(tmpl);
    if (!dir) abort();
    char path[256];
    snprintf(path, sizeof path, "%s/f.db", dir);
    tsync_store *store;
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    if (tsync_store_open(&store, path, &o) != 0) abort();
    if (tsync_store_exec(store, sql, NULL, NULL) != 0) abort();
    const char *ctr[] = {"stock"};
    if (tsync_store_replicate(store, "products", ctr, 1) != 0) abort();
    return store;
}

#endif
