/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_store_inputs.c — the inputs a store takes from files: a bundle to merge and a peer's
 * state JSON (tillsync bundle --since). The first byte picks which; the rest is the input. A real
 * store with a replicated table is opened once per process in a temporary folder.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_store.h"

static tsync_store *store;

static void setup(void)
{
    store = fuzz_store_open("", "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price "
                                "INTEGER, stock INTEGER NOT NULL DEFAULT 0);"
                                "INSERT INTO products VALUES('p1','apple',1,5);");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store) setup();
    if (size < 1) return 0;
    if (data[0] & 1) {
        tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
        int mrc = tsync_store_merge(store, data + 1, size - 1, &r); /* warn_unused_result */
        (void)mrc;
        tsync_merge_report_clear(&r);
    } else {
        char *js = malloc(size);
        if (!js) return 0;
        memcpy(js, data + 1, size - 1);
        js[size - 1] = 0;
        uint8_t *out = NULL;
        size_t len = 0;
        (void)tsync_store_bundle(&out, &len, store, js, NULL);
        free(out);
        free(js);
    }
    return 0;
}
