/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_bundle.c — libFuzzer target for the bundle decoder (crdt/bundle.c).
 *
 * Any input must be refused with a message or decode. A decoded bundle's bodies are then fed to
 * the batch decoder, as the store would, so the fuzzer also reaches batches through bundles.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    if (tsync__bundle_decode(data, size, &b, &a, err) != 0) {
        if (err[0] == '\0' || strchr(err, '\n') || b.payload) abort();
        tsync__arena_free(&a);
        return 0;
    }
    for (uint32_t r = 0; r < b.nruns; r++) {
        const tsync__brun *run = &b.runs[r];
        if (run->site >= b.nsites || run->nbodies == 0 || run->first_seq == 0) abort();
        for (uint32_t i = 0; i < run->nbodies; i++) {
            tsync__batch batch;
            tsync__arena ba = {0};
            /* Bodies inside a bundle are opaque to its decoder: any outcome is fine, a crash
             * is not. */
            int rc = tsync__batch_decode(run->body[i], run->body_len[i], &batch, &ba, err);
            (void)rc;
            tsync__arena_free(&ba);
        }
    }
    tsync__bundle_free(&b);
    tsync__arena_free(&a);
    return 0;
}
