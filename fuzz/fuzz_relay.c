/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_relay.c — libFuzzer target for the till <-> relay messages (codec/relay.c): each
 * input is refused with one line (TSYNC_ECORRUPT) or decodes, and a decoded message, the decoder
 * being canonical, re-encodes to exactly the input bytes.
 *
 * Seeds (fuzz/corpus/relay/): one message of each type, as tests/codec/test_relay_codec.c builds
 * them (written by tests/codec/test_relay_codec.c's seeds test when TSYNC_WRITE_CORPUS is set).
 * The vault's messages (type_9 .. type_17) come from tests/codec/test_relay_vault_codec.c the same
 * way.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/relay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    tsync__rmsg m;
    int rc = tsync__relay_decode(data, size, &m, &a, err);
    if (rc == 0) {
        uint8_t *out;
        size_t len;
        if (tsync__relay_encode(&m, &out, &len, err) != 0) abort();
        if (len != size || memcmp(out, data, size) != 0) abort();
        free(out);
    } else {
        if (rc != TSYNC_ECORRUPT && rc != TSYNC_ENOMEM) abort();
        if (err[0] == '\0' || strchr(err, '\n')) abort();
    }
    tsync__arena_free(&a);
    return 0;
}
