/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_envelope.c — envelopes (codec/envelope.c): seeded random payloads and headers
 * seal and open back to the same bytes and header; the header decodes without a key and
 * re-encodes to its own bytes; every single-bit flip of any byte (header or body) is refused,
 * every truncation and every trailing byte is refused, a wrong key, another epoch's key and
 * another shop are refused with a message naming what was wrong; out-of-range fields are refused
 * by the encoder and the decoder alike.
 *
 * Seeded: TSYNC_SEED replays a failure.
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "codec/envelope.h"
#include "tests/lib/helpers.h"

static void rand_bytes(uint64_t *rng, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)th_rand(rng);
}

static tsync__env_header rand_header(uint64_t *rng)
{
    tsync__env_header h = {0};
    rand_bytes(rng, h.shop_id, sizeof h.shop_id);
    rand_bytes(rng, h.origin, sizeof h.origin);
    h.first_seq = th_rand(rng) % 3 == 0 ? 1 : 1 + th_rand(rng) % 100000;
    h.last_seq = h.first_seq + th_rand(rng) % 500;
    if (h.first_seq > 1) rand_bytes(rng, h.prev_hash, sizeof h.prev_hash);
    rand_bytes(rng, h.last_hash, sizeof h.last_hash);
    h.epoch = 1 + (uint32_t)(th_rand(rng) % 1000);
    return h;
}

static void seal_ok(const tsync__env_header *h, const uint8_t *key, const uint8_t *p, size_t n,
                    uint8_t **env, size_t *len)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__env_seal(h, key, p, n, env, len, err);
    cr_assert_eq(rc, 0, "seal: %s", err);
    cr_assert_eq(*len, TSYNC__ENV_HEADER_BYTES + n + TSYNC__ENV_TAG_BYTES);
}

Test(codec_envelope, round_trip_random)
{
    uint64_t rng = th_seed("codec_envelope.round_trip_random");
    for (int it = 0; it < 300; it++) {
        tsync__env_header h = rand_header(&rng);
        uint8_t key[TSYNC__ENV_KEY_BYTES];
        rand_bytes(&rng, key, sizeof key);
        size_t n = it == 0 ? 0 : (size_t)(th_rand(&rng) % (it % 10 == 0 ? 70000 : 300));
        uint8_t *p = malloc(n + 1);
        rand_bytes(&rng, p, n);
        uint8_t *env;
        size_t len;
        seal_ok(&h, key, p, n, &env, &len);

        /* The header is readable without the key and re-encodes to its own bytes. */
        tsync__env_header d;
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__env_decode(env, len, &d, err), 0, "%s", err);
        cr_assert_eq(d.first_seq, h.first_seq);
        cr_assert_eq(d.last_seq, h.last_seq);
        cr_assert_eq(d.epoch, h.epoch);
        cr_assert_eq(d.payload_len, n);
        cr_assert(memcmp(d.shop_id, h.shop_id, 16) == 0 && memcmp(d.origin, h.origin, 16) == 0);
        cr_assert(memcmp(d.prev_hash, h.prev_hash, 32) == 0);
        cr_assert(memcmp(d.last_hash, h.last_hash, 32) == 0);
        uint8_t hb[TSYNC__ENV_HEADER_BYTES];
        tsync__env_header_encode(&d, hb);
        cr_assert(memcmp(hb, env, sizeof hb) == 0);
        /* The payload is not in clear (a payload of 16+ random bytes cannot survive XChaCha). */
        if (n >= 16) cr_assert(memcmp(env + TSYNC__ENV_HEADER_BYTES, p, n) != 0);

        uint8_t *out;
        size_t out_len;
        tsync__env_header o;
        cr_assert_eq(tsync__env_open(env, len, h.shop_id, h.epoch, key, &out, &out_len, &o, err), 0,
                     "%s", err);
        cr_assert_eq(out_len, n);
        cr_assert(n == 0 || memcmp(out, p, n) == 0);
        cr_assert(memcmp(&o, &d, sizeof o) == 0);
        free(out);
        free(env);
        free(p);
    }
}

Test(codec_envelope, nonce_is_fresh)
{
    tsync__env_header h = {.first_seq = 1, .last_seq = 1, .epoch = 1};
    uint8_t key[32] = {1};
    uint8_t *a, *b;
    size_t la, lb;
    seal_ok(&h, key, (const uint8_t *)"sale", 4, &a, &la);
    seal_ok(&h, key, (const uint8_t *)"sale", 4, &b, &lb);
    /* Same key, same payload, same header fields: two different nonces and ciphertexts. */
    cr_assert(memcmp(a, b, la) != 0);
    free(a);
    free(b);
}

Test(codec_envelope, every_bit_flip_refused)
{
    uint64_t rng = th_seed("codec_envelope.every_bit_flip_refused");
    tsync__env_header h = rand_header(&rng);
    uint8_t key[32];
    rand_bytes(&rng, key, sizeof key);
    uint8_t payload[200];
    rand_bytes(&rng, payload, sizeof payload);
    uint8_t *env;
    size_t len;
    seal_ok(&h, key, payload, sizeof payload, &env, &len);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            env[i] ^= (uint8_t)(1u << bit);
            uint8_t *out = (uint8_t *)1;
            size_t out_len = 1;
            char err[TSYNC__ERRLEN];
            /* The test opens with the untampered shop and epoch: a flipped shop or epoch byte is
             * refused as "another shop/epoch", any other flip by the decoder or the tag. */
            int rc = tsync__env_open(env, len, h.shop_id, h.epoch, key, &out, &out_len, NULL, err);
            cr_assert_neq(rc, 0, "flip of bit %d of byte %zu accepted", bit, i);
            cr_assert(rc == TSYNC_EBADSIG || rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION ||
                          rc == TSYNC_EINVAL,
                      "byte %zu: rc %d", i, rc);
            cr_assert_null(out);
            cr_assert_eq(out_len, 0);
            cr_assert(err[0] != '\0' && strchr(err, '\n') == NULL);
            if (i >= TSYNC__ENV_HEADER_BYTES || (i >= 121 && i < 145))
                cr_assert_eq(rc, TSYNC_EBADSIG, "body/nonce byte %zu: %s", i, err);
            env[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Untouched after all that: still opens. */
    uint8_t *out;
    size_t out_len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__env_open(env, len, h.shop_id, h.epoch, key, &out, &out_len, NULL, err), 0);
    free(out);
    free(env);
}

Test(codec_envelope, header_tamper_that_decodes_fails_auth)
{
    /* Changing the range, hashes or origin to other valid values: the decoder accepts the
     * header, the tag refuses the envelope. */
    tsync__env_header h = {.first_seq = 5, .last_seq = 9, .epoch = 2};
    memset(h.prev_hash, 7, 32);
    memset(h.last_hash, 8, 32);
    uint8_t key[32] = {3};
    uint8_t *env;
    size_t len;
    seal_ok(&h, key, (const uint8_t *)"runbytes", 8, &env, &len);
    static const size_t offs[] = {21, 37 + 7, 45 + 7, 53, 85};
    for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        env[offs[k]] ^= 1;
        tsync__env_header d;
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__env_decode(env, len, &d, err), 0, "offset %zu: %s", offs[k], err);
        uint8_t *out;
        size_t out_len;
        cr_assert_eq(tsync__env_open(env, len, h.shop_id, 2, key, &out, &out_len, NULL, err),
                     TSYNC_EBADSIG);
        cr_assert(strstr(err, "does not authenticate"), "%s", err);
        env[offs[k]] ^= 1;
    }
    free(env);
}

Test(codec_envelope, truncation_and_trailing_refused)
{
    tsync__env_header h = {.first_seq = 1, .last_seq = 3, .epoch = 1};
    uint8_t key[32] = {9};
    uint8_t *env;
    size_t len;
    seal_ok(&h, key, (const uint8_t *)"0123456789", 10, &env, &len);
    char err[TSYNC__ERRLEN];
    tsync__env_header d;
    for (size_t n = 0; n < len; n++)
        cr_assert_eq(tsync__env_decode(env, n, &d, err), TSYNC_ECORRUPT, "length %zu", n);
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, env, len);
    longer[len] = 0;
    cr_assert_eq(tsync__env_decode(longer, len + 1, &d, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "trailing"), "%s", err);
    free(longer);
    free(env);
}

Test(codec_envelope, wrong_key_epoch_shop_refused)
{
    tsync__env_header h = {.first_seq = 1, .last_seq = 1, .epoch = 4};
    memset(h.shop_id, 0xaa, 16);
    uint8_t key[32], other[32];
    randombytes_buf(key, 32);
    randombytes_buf(other, 32);
    uint8_t *env;
    size_t len;
    seal_ok(&h, key, (const uint8_t *)"x", 1, &env, &len);
    uint8_t *out;
    size_t out_len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__env_open(env, len, h.shop_id, 4, other, &out, &out_len, NULL, err),
                 TSYNC_EBADSIG);
    cr_assert(strstr(err, "wrong key"), "%s", err);
    cr_assert_eq(tsync__env_open(env, len, h.shop_id, 3, key, &out, &out_len, NULL, err),
                 TSYNC_EINVAL);
    cr_assert(strstr(err, "epoch 4") && strstr(err, "epoch 3"), "%s", err);
    uint8_t shop2[16];
    memset(shop2, 0xbb, 16);
    cr_assert_eq(tsync__env_open(env, len, shop2, 4, key, &out, &out_len, NULL, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "aaaaaaaa") && strstr(err, "not this shop"), "%s", err);
    free(env);
}

Test(codec_envelope, bad_fields_refused_both_ways)
{
    uint8_t key[32] = {0};
    char err[TSYNC__ERRLEN];
    uint8_t *env;
    size_t len;
    tsync__env_header good = {.first_seq = 2, .last_seq = 2, .epoch = 1};
    tsync__env_header bad[4] = {good, good, good, good};
    bad[0].first_seq = 0;
    bad[1].last_seq = 1;
    bad[2].epoch = 0;
    bad[3].first_seq = bad[3].last_seq = 1;
    bad[3].prev_hash[31] = 1;
    seal_ok(&good, key, (const uint8_t *)"p", 1, &env, &len);
    for (int i = 0; i < 4; i++) {
        uint8_t *e2 = NULL;
        size_t l2;
        cr_assert_eq(tsync__env_seal(&bad[i], key, (const uint8_t *)"p", 1, &e2, &l2, err),
                     TSYNC_EINVAL, "case %d", i);
        cr_assert_null(e2);
        /* The same field written into a real envelope's header: refused by the decoder. */
        uint8_t *copy = malloc(len);
        memcpy(copy, env, len);
        tsync__env_header hh;
        cr_assert_eq(tsync__env_decode(copy, len, &hh, err), 0);
        hh.first_seq = bad[i].first_seq;
        hh.last_seq = bad[i].last_seq;
        hh.epoch = bad[i].epoch;
        memcpy(hh.prev_hash, bad[i].prev_hash, 32);
        tsync__env_header_encode(&hh, copy);
        cr_assert_eq(tsync__env_decode(copy, len, &hh, err), TSYNC_ECORRUPT, "case %d", i);
        free(copy);
    }
    /* Magic, format, payload length beyond the limit. */
    uint8_t *copy = malloc(len);
    memcpy(copy, env, len);
    tsync__env_header hh;
    copy[4] = 2;
    cr_assert_eq(tsync__env_decode(copy, len, &hh, err), TSYNC_EVERSION);
    cr_assert(strstr(err, "format 2"), "%s", err);
    copy[4] = 1;
    copy[0] = 'X';
    cr_assert_eq(tsync__env_decode(copy, len, &hh, err), TSYNC_ECORRUPT);
    copy[0] = 'T';
    copy[145] = 0xff;
    cr_assert_eq(tsync__env_decode(copy, len, &hh, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "limit"), "%s", err);
    free(copy);
    free(env);
}
