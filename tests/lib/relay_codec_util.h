/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/relay_codec_util.h — the checks every test of the relay messages (codec/relay.c)
 * runs on its samples, written once: encode, decode with the canonical check (what decodes
 * re-encodes to the very bytes), every prefix and a trailing byte refused, seeded random flips,
 * and the fuzz seeds (fuzz/corpus/relay/type_N). Criterion asserts inside: for tests only.
 */
#ifndef TSYNC_TESTS_RELAY_CODEC_UTIL_H
#define TSYNC_TESTS_RELAY_CODEC_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "codec/relay.h"

/* Encodes m (asserts it encodes); the bytes are the caller's. */
uint8_t *rcu_enc(const tsync__rmsg *m, size_t *len);

/* Decodes n bytes into *m, lists in a; on success asserts they re-encode to the same bytes, on a
 * refusal that err is one line. Returns the decoder's code. */
int rcu_dec(const uint8_t *p, size_t n, tsync__rmsg *m, tsync__arena *a, char *err);

/* Asserts that every proper prefix of b (a message of type, len bytes) and b with one trailing
 * byte are refused, the latter naming the trailing bytes. */
void rcu_refuses_prefixes_and_trailing(const uint8_t *b, size_t len, uint32_t type);

/* rounds times: one of the n samples m, encoded, gets 1..3 random bytes flipped (seeded by
 * th_seed(seed_name)), and is decoded; asserts that some decoded (flips in opaque bytes) and
 * some were refused (flips in the structure). */
void rcu_random_flips(const tsync__rmsg *m, size_t n, int rounds, const char *seed_name);

/* When TSYNC_WRITE_CORPUS names a directory, writes each of the n samples m there as
 * type_<type> (the fuzz seeds of fuzz/fuzz_relay.c); otherwise only checks they encode. */
void rcu_write_seeds(const tsync__rmsg *m, size_t n);

#endif
