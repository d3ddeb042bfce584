/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_wire_ext.c — libFuzzer target for the extension messages FEATURES and CBATCHES
 * (codec/wire_ext.c), which fuzz_wire does not reach: codec/wire.c's table calls them unknown.
 *
 * Each decoder either refuses with a one-line message or decodes; a decoded message, because the
 * decoders accept only the canonical encoding, re-encodes to exactly the input bytes. A decoded
 * CBATCHES is then unpacked (zstd, then the compact run rebuilt into batch bodies): that refuses
 * with one line too, or gives exactly count bodies each within a batch's limit; those bodies
 * built into a CBATCHES again unpack to the same bodies.
 *
 * Seeds (fuzz/corpus/wire_ext/): a FEATURES with every bit this version knows, and CBATCHES of 1
 * sale (from seq 1) and of 40 sales (from seq 7), built by tsync__wire_cbatches_build from the
 * batches tests/codec/test_wire_ext.c makes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/wire_ext.h"

static void refused(int rc, const char *err)
{
    if (rc != TSYNC_ECORRUPT && rc != TSYNC_ENOMEM) abort();
    if (err[0] == '\0' || strchr(err, '\n')) abort();
}

static void same_bodies(const tsync__wire_batches *a, const tsync__wire_batches *b)
{
    if (a->nbodies != b->nbodies) abort();
    for (uint32_t k = 0; k < a->nbodies; k++)
        if (a->body_len[k] != b->body_len[k] || memcmp(a->body[k], b->body[k], a->body_len[k]))
            abort();
}

static void cbatches(const uint8_t *data, size_t size)
{
    char err[TSYNC__ERRLEN];
    tsync__wire_cbatches m;
    int rc = tsync__wire_cbatches_decode(data, size, &m, err);
    if (rc != 0) {
        refused(rc, err);
        return;
    }
    uint8_t *out;
    size_t len;
    if (tsync__wire_cbatches_encode(&m, &out, &len, err) != 0) abort();
    if (len != size || memcmp(out, data, size) != 0) abort();
    free(out);

    tsync__crun_dec *d = tsync__crun_dec_new(), *d2 = tsync__crun_dec_new();
    if (!d || !d2) abort();
    tsync__wire_batches b;
    rc = tsync__wire_cbatches_unpack(&m, d, &b, err);
    if (rc != 0) {
        refused(rc, err);
    } else {
        if (b.nbodies != m.count) abort();
        for (uint32_t k = 0; k < b.nbodies; k++)
            if (b.body_len[k] == 0 || b.body_len[k] > TSYNC__BATCH_MAX_BYTES) abort();
        /* Built again from what it unpacked to, it must give the same bodies. */
        tsync__bsite s;
        memcpy(s.site, m.site, sizeof s.site);
        memcpy(s.pk, m.pk, sizeof s.pk);
        memcpy(s.inc, m.inc, sizeof s.inc);
        if (tsync__wire_cbatches_build(&s, m.first_seq, m.prev, b.nbodies, b.body, b.body_len,
                                       m.sig, &out, &len, err) == 0) {
            tsync__wire_cbatches m2;
            tsync__wire_batches b2;
            if (tsync__wire_cbatches_decode(out, len, &m2, err) != 0) abort();
            if (tsync__wire_cbatches_unpack(&m2, d2, &b2, err) != 0) abort();
            same_bodies(&b, &b2);
            free(out);
        }
    }
    tsync__crun_dec_free(d2);
    tsync__crun_dec_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[TSYNC__ERRLEN];
    uint64_t bits;
    int rc = tsync__wire_features_decode(data, size, &bits, err);
    if (rc == 0) {
        uint8_t *out;
        size_t len;
        if (tsync__wire_features_encode(bits, &out, &len) != 0) abort();
        if (len != size || memcmp(out, data, size) != 0) abort();
        free(out);
    } else {
        refused(rc, err);
    }
    cbatches(data, size);
    return 0;
}
