/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util/hex.c — hex text of ids and keys, by libsodium (constant time, no table of our own).
 */
#include <string.h>

#include <sodium.h>

#include "util/util.h"

void tsync__hex(const uint8_t *p, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, p, n);
}

int tsync__unhex(const char *s, uint8_t *out, size_t n)
{
    size_t len = strlen(s), got = 0;
    const char *end = NULL;
    if (len != 2 * n) return -1;
    if (sodium_hex2bin(out, n, s, len, NULL, &got, &end) != 0 || got != n || *end) return -1;
    return 0;
}
