/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_rowmeta.c — the per-row clock blob read back from a database file (store/meta.c).
 * A damaged or hostile database file must give an error, never a crash; a blob that decodes must
 * re-encode and decode again to the same state.
 */
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__rowmeta m, m2;
    if (tsync__rowmeta_init(&m, TSYNC__MAX_COLS) != 0) return 0;
    if (tsync__rowmeta_decode(&m, data, size) == 0) {
        uint8_t *buf = NULL;
        size_t cap = 0, len = 0;
        if (tsync__rowmeta_encode(&m, &buf, &cap, &len) == 0) {
            if (tsync__rowmeta_init(&m2, TSYNC__MAX_COLS) != 0) abort();
            if (tsync__rowmeta_decode(&m2, buf, len) != 0) abort();
            if (m2.nexist != m.nexist) abort();
            tsync__rowmeta_clear(&m2);
        }
        free(buf);
    }
    tsync__rowmeta_clear(&m);
    return 0;
}
