/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_schema.c — the table definitions another till sends in SCHEMA and in a bundle
 * (store/schema.c). Hostile bytes must give an error, never a crash; a description that decodes
 * must be canonical: compared with itself it differs nowhere, and compared with no tables it
 * differs once per table (each table is said to be replicated on one side only).
 */
#include <stdlib.h>
#include <string.h>

#include "store/schema.h"

typedef struct {
    size_t n;
} count;

static void one(void *ctx, const char *table, const char *column, const char *what)
{
    count *c = ctx;
    if (!table || !table[0] || !what || !what[0]) abort();
    (void)column;
    c->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__arena a = {0};
    tsync__schema s;
    char err[TSYNC__ERRLEN];
    if (tsync__schema_decode(data, size, &s, &a, err) == 0) {
        tsync__schema none = {0, NULL};
        count self = {0}, empty = {0}, back = {0};
        tsync__schema_diff(&s, &s, one, &self);
        tsync__schema_diff(&s, &none, one, &empty);
        tsync__schema_diff(&none, &s, one, &back);
        if (self.n != 0 || empty.n != s.ntables || back.n != s.ntables) abort();
    } else if (!err[0]) {
        abort(); /* every refusal says why */
    }
    tsync__arena_free(&a);
    return 0;
}
