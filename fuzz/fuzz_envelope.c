/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_envelope.c — libFuzzer target for the envelope decoder (codec/envelope.c): the input
 * is an envelope. It must be refused with a one-line message or decode; what decodes re-encodes
 * to its own header bytes and has sane fields, and is then opened with the key of the corpus
 * (32 bytes of 0x42, the shop id and epoch of its own header): an input that opens is sealed
 * again and opened back to the same payload, anything else is refused with a one-line message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/envelope.h"

static void check_err(int rc, const char *err)
{
    if (rc != 0 && (err[0] == '\0' || strchr(err, '\n'))) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__env_header h;
    char err[TSYNC__ERRLEN];
    int rc = tsync__env_decode(data, size, &h, err);
    check_err(rc, err);
    if (rc) return 0;
    uint8_t hb[TSYNC__ENV_HEADER_BYTES];
    tsync__env_header_encode(&h, hb);
    if (memcmp(hb, data, sizeof hb) != 0) abort();
    if (h.first_seq == 0 || h.last_seq < h.first_seq || h.epoch == 0 ||
        size != TSYNC__ENV_HEADER_BYTES + (size_t)h.payload_len + TSYNC__ENV_TAG_BYTES)
        abort();

    uint8_t key[TSYNC__ENV_KEY_BYTES];
    memset(key, 0x42, sizeof key);
    uint8_t *p;
    size_t n;
    rc = tsync__env_open(data, size, h.shop_id, h.epoch, key, &p, &n, NULL, err);
    check_err(rc, err);
    if (rc) return 0;
    if (n != h.payload_len) abort();
    uint8_t *env, *back;
    size_t len, back_len;
    if (tsync__env_seal(&h, key, p, n, &env, &len, err) != 0 || len != size ||
        tsync__env_open(env, len, h.shop_id, h.epoch, key, &back, &back_len, NULL, err) != 0 ||
        back_len != n || (n && memcmp(back, p, n) != 0))
        abort();
    free(back);
    free(env);
    free(p);
    return 0;
}
