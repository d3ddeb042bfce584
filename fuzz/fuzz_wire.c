/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_wire.c — libFuzzer target for the wire decoder (net/wire.c).
 *
 * Any frame must either be refused with a one-line message and a zeroed message, or decode; a
 * decoded message must pass the encoder's own checks and, because the decoder accepts only the
 * canonical encoding, re-encode to exactly the input bytes. Decoding those bytes again must give
 * the same type, and tsync__wire_size must agree with the encoder.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__msg m;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    int rc = tsync__wire_decode(data, size, &m, &a, err);
    if (rc != 0) {
        if (rc != TSYNC_ECORRUPT && rc != TSYNC_EVERSION && rc != TSYNC_ENOMEM) abort();
        if (err[0] == '\0' || strchr(err, '\n') || m.type != 0) abort();
        tsync__arena_free(&a);
        return 0;
    }
    if (size > tsync__wire_limit((int)m.type)) abort();

    uint8_t *out;
    size_t len;
    if (tsync__wire_encode(&m, &out, &len, err) != 0) abort();
    if (len != size || memcmp(out, data, size) != 0) abort();
    if (tsync__wire_size(&m) != len) abort();

    tsync__msg m2;
    tsync__arena a2 = {0};
    if (tsync__wire_decode(out, len, &m2, &a2, err) != 0) abort();
    if (m2.type != m.type) abort();
    tsync__arena_free(&a2);
    free(out);
    tsync__arena_free(&a);
    return 0;
}
