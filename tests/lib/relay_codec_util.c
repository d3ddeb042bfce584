/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/relay_codec_util.c — the shared checks of the relay message tests
 * (relay_codec_util.h).
 */
#include "tests/lib/relay_codec_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"

uint8_t *rcu_enc(const tsync__rmsg *m, size_t *len)
{
    char err[TSYNC__ERRLEN];
    uint8_t *out;
    int rc = tsync__relay_encode(m, &out, len, err);
    cr_assert_eq(rc, 0, "encode type %u: %s", m->type, err);
    return out;
}

int rcu_dec(const uint8_t *p, size_t n, tsync__rmsg *m, tsync__arena *a, char *err)
{
    int rc = tsync__relay_decode(p, n, m, a, err);
    if (rc == 0) {
        /* canonical: what decodes re-encodes to the very bytes */
        uint8_t *again;
        size_t len;
        char e2[TSYNC__ERRLEN];
        cr_assert_eq(tsync__relay_encode(m, &again, &len, e2), 0, "%s", e2);
        cr_assert(len == n && memcmp(again, p, n) == 0, "type %u does not re-encode", m->type);
        free(again);
    } else {
        cr_assert(err[0] && !strchr(err, '\n'), "refusal without one line");
    }
    return rc;
}

void rcu_refuses_prefixes_and_trailing(const uint8_t *b, size_t len, uint32_t type)
{
    char err[TSYNC__ERRLEN];
    tsync__rmsg d;
    for (size_t k = 0; k < len; k++) {
        tsync__arena a = {0};
        cr_assert_neq(rcu_dec(b, k, &d, &a, err), 0, "type %u: prefix %zu decoded", type, k);
        tsync__arena_free(&a);
    }
    uint8_t *t = malloc(len + 1);
    cr_assert_not_null(t);
    memcpy(t, b, len);
    t[len] = 0xc0;
    tsync__arena a = {0};
    cr_assert_eq(rcu_dec(t, len + 1, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "trailing"), "%s", err);
    tsync__arena_free(&a);
    free(t);
}

void rcu_random_flips(const tsync__rmsg *m, size_t n, int rounds, const char *seed_name)
{
    uint64_t st = th_seed(seed_name);
    size_t decoded = 0, refused = 0;
    for (int round = 0; round < rounds; round++) {
        size_t len;
        uint8_t *b = rcu_enc(&m[th_rand(&st) % n], &len);
        int flips = 1 + (int)(th_rand(&st) % 3);
        for (int f = 0; f < flips; f++) b[th_rand(&st) % len] ^= (uint8_t)(1 + th_rand(&st) % 255);
        char err[TSYNC__ERRLEN];
        tsync__rmsg d;
        tsync__arena a = {0};
        if (rcu_dec(b, len, &d, &a, err) == 0)
            decoded++;
        else
            refused++;
        tsync__arena_free(&a);
        free(b);
    }
    /* flips inside opaque bytes decode; flips in the structure are refused: both happen */
    cr_assert(decoded > 0 && refused > 0, "decoded %zu refused %zu", decoded, refused);
}

void rcu_write_seeds(const tsync__rmsg *m, size_t n)
{
    const char *dir = getenv("TSYNC_WRITE_CORPUS");
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = rcu_enc(&m[i], &len);
        if (dir) {
            char path[512];
            snprintf(path, sizeof path, "%s/type_%u", dir, m[i].type);
            FILE *f = fopen(path, "wb");
            cr_assert_not_null(f, "%s", path);
            cr_assert_eq(fwrite(b, 1, len, f), len);
            fclose(f);
        }
        free(b);
    }
}
