/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_bundle_stream.c — libFuzzer target for the streaming bundle reader
 * (codec/bundle_stream.c), over every format. The first input byte picks how the rest reaches the
 * reader: from memory, or from a source handing out 1 to 256 bytes a call, so record and zstd
 * boundaries fall anywhere. Format 5's compact runs (codec/compact.c) are rebuilt by the reader,
 * so their decoder is fuzzed here too (corpus: format5_*).
 *
 * Any input must be read to its end or refused with a one-line message; a refusal is final (the
 * next call says the same); items keep their invariants (runs name a site already met, have
 * bodies, start at seq 1 or later). The runs' bodies are fed to the batch decoder, as the store
 * would.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

typedef struct {
    const uint8_t *p;
    size_t len, pos, step;
} src;

static size_t src_read(void *ctx, uint8_t *out, size_t n)
{
    src *s = ctx;
    size_t k = s->step < n ? s->step : n;
    if (k > s->len - s->pos) k = s->len - s->pos;
    memcpy(out, s->p + s->pos, k);
    s->pos += k;
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    char err[TSYNC__ERRLEN];
    tsync__bstream *r;
    src s = {data + 1, size - 1, 0, (size_t)data[0] + 1};
    int rc = data[0] == 0 ? tsync__bstream_open_mem(&r, data + 1, size - 1, err)
                          : tsync__bstream_open(&r, src_read, &s, err);
    if (rc) {
        if (err[0] == '\0' || strchr(err, '\n') || r) abort();
        return 0;
    }
    tsync__bs_item it;
    uint32_t nsites = 0;
    while ((rc = tsync__bstream_next(r, &it, err)) == 0 && it.kind != TSYNC__BS_END) {
        if (it.kind == TSYNC__BS_SITE) nsites++;
        if (it.kind != TSYNC__BS_RUN) continue;
        const tsync__brun *run = &it.run;
        if (tsync__bstream_format(r) >= TSYNC__BUNDLE_FORMAT_STREAM4 && run->site >= nsites)
            abort();
        if (run->nbodies == 0 || run->first_seq == 0 || !it.site) abort();
        for (uint32_t i = 0; i < run->nbodies; i++) {
            tsync__batch batch;
            tsync__arena ba = {0};
            char berr[TSYNC__ERRLEN];
            /* Bodies are opaque to the bundle reader: any outcome is fine, a crash is not. */
            int brc = tsync__batch_decode(run->body[i], run->body_len[i], &batch, &ba, berr);
            (void)brc;
            tsync__arena_free(&ba);
        }
    }
    if (rc) {
        if (err[0] == '\0' || strchr(err, '\n')) abort();
        char again[TSYNC__ERRLEN];
        if (tsync__bstream_next(r, &it, again) != rc || strcmp(again, err) != 0) abort();
    }
    tsync__bstream_free(r);
    return 0;
}
