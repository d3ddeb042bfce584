/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_snapshot.c — libFuzzer target for snapshot chunks (codec/snapshot.c), the bytes a
 * peer sends in SNAPSHOT_CHUNK.
 *
 * Any input must be refused with a one-line message or decode; a decoded chunk, because the
 * decoder accepts only the canonical encoding, re-encodes to exactly the input bytes and decodes
 * again alike. An input that decodes is then merged, as a one-chunk snapshot with an empty vector,
 * into a real replica opened once per process in a temporary folder (table products, as in
 * fuzz_store_inputs.c, with a counter): whatever it names, the merge must apply it or refuse it
 * whole, never crash. The skew bound is lifted there so that hostile clocks reach the merge.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_store.h"
#include "store/internal.h"
#include "store/snapshot.h"

static tsync_store *store;

static void setup(void)
{
    store = fuzz_store_open("-snap",
                            "PRAGMA synchronous=OFF; CREATE TABLE products(id TEXT PRIMARY KEY, "
                            "name TEXT, price INTEGER, stock INTEGER NOT NULL DEFAULT 0);"
                            "INSERT INTO products VALUES('p1','apple',1,5);");
    store->skew_bound_ms = UINT64_MAX / 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__snap_chunk c;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    int rc = tsync__snap_decode(data, size, &c, &a, err);
    if (rc != 0) {
        if (err[0] == '\0' || strchr(err, '\n')) abort();
        if (rc != TSYNC_ECORRUPT && rc != TSYNC_EVERSION && rc != TSYNC_ENOMEM) abort();
        tsync__arena_free(&a);
        return 0;
    }
    uint8_t *out;
    size_t len;
    if (tsync__snap_encode(&c, &out, &len) != 0) abort();
    if (len != size || memcmp(out, data, size) != 0) abort();
    tsync__snap_chunk c2;
    tsync__arena a2 = {0};
    if (tsync__snap_decode(out, len, &c2, &a2, err) != 0) abort();
    if (c2.nrows != c.nrows || c2.nsites != c.nsites || c2.ntables != c.ntables) abort();
    tsync__arena_free(&a2);
    free(out);
    tsync__arena_free(&a);

    if (!store) setup();
    const uint8_t *chunks[1] = {data};
    size_t lens[1] = {size};
    tsync__vv vv = {0};
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    rc = tsync__snap_import(store, chunks, lens, 1, &vv, &r);
    tsync_merge_report_clear(&r);
    if (rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION) abort(); /* it decoded above */
    if (!sqlite3_get_autocommit(tsync_store_sqlite(store))) abort();
    return 0;
}
