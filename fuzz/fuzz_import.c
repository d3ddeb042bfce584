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
#include "tillsync/tillsync.h"

static tsync_store *store;

static void setup(void)
{
    char tmpl[] = "/tmp/tsync-fuzz-import-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) abort();
    char path[256];
    snprintf(path, sizeof path, "%s/f.db", dir);
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    if (tsync_store_open(&store, path, &o) != 0) abort();
    if (tsync_store_exec(store,
                         "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, "
                         "weight REAL, photo BLOB, stock INTEGER NOT NULL DEFAULT 0);",
                         NULL, NULL) != 0)
        abort();
    const char *ctr[] = {"stock"};
    if (tsync_store_replicate(store, "products", ctr, 1) != 0) abort();
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
