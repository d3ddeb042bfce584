/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_import.c — the CSV, JSON and NDJSON import parsers (store/io.c), which read files a
 * shop's IT person hands to `tillsync import`. The first byte picks the format; the rest is the
 * file. Imports run all-or-nothing into a real store with a replicated table, so a bad file must
 * end in an error with nothing changed, never in a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/io.h"
#include "fuzz_store.h"

static tsync_store *store;

static void setup(void)
{
    store = fuzz_store_open("-import",
                            "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, "
                            "weight REAL, photo BLOB, stock INTEGER NOT NULL DEFAULT 0);");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store) setup();
    if (size < 1) return 0;
    static const int formats[] = {TSYNC__IO_CSV, TSYNC__IO_JSON, TSYNC__IO_NDJSON};
    FILE *in = fmemopen((void *)(data + 1), size - 1 ? size - 1 : 1, "r");
    if (!in) return 0;
    if (size == 1) fgetc(in); /* an empty file */
    tsync__import_opts o;
    memset(&o, 0, sizeof o);
    o.name = "fuzz";
    o.format = formats[data[0] % 3];
    (void)tsync__import(store, "products", in, &o);
    fclose(in);
    return 0;
}
