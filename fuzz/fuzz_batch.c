/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_batch.c — libFuzzer target for the batch decoder (crdt/batch.c).
 *
 * Any input must either be refused with a message or decode; a decoded batch must pass the
 * encoder's own checks and, because the decoder accepts only the canonical encoding, re-encode to
 * exactly the input bytes. peek must agree with the full decoder.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__batch b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    int rc = tsync__batch_decode(data, size, &b, &a, err);
    if (rc != 0) {
        if (err[0] == '\0' || strchr(err, '\n')) abort();
        tsync__arena_free(&a);
        return 0;
    }
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t seq;
    if (tsync__batch_peek(data, size, origin, &seq) != 0 || seq != b.seq ||
        memcmp(origin, b.origin, TSYNC__SITE_BYTES) != 0)
        abort();

    uint8_t *out;
    size_t len;
    if (tsync__batch_encode(&b, &out, &len, err) != 0) abort();
    if (len != size || memcmp(out, data, size) != 0) abort();

    tsync__batch b2;
    tsync__arena a2 = {0};
    if (tsync__batch_decode(out, len, &b2, &a2, err) != 0) abort();
    if (b2.nrows != b.nrows || b2.seq != b.seq) abort();
    tsync__arena_free(&a2);
    free(out);
    tsync__arena_free(&a);
    return 0;
}
