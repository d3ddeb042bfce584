/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/envelope.c — encoding, strict decoding and opening of envelopes (codec/envelope.h): the
 * encrypted run pieces a blind relay stores. The header is fixed-layout and goes in clear as the
 * AEAD's associated data, so the relay can index it and nobody can change it unnoticed.
 */
#include "codec/envelope.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t MAGIC[4] = {'T', 'S', 'E', 'V'};

/* Offsets of the fields (codec/envelope.h). */
enum {
    O_MAGIC = 0,
    O_FORMAT = 4,
    O_SHOP = 5,
    O_ORIGIN = 21,
    O_FIRST = 37,
    O_LAST = 45,
    O_PREV = 53,
    O_LHASH = 85,
    O_EPOCH = 117,
    O_NONCE = 121,
    O_PLEN = 145,
};

_Static_assert(O_PLEN + 4 == TSYNC__ENV_HEADER_BYTES, "envelope header layout");
_Static_assert(TSYNC__ENV_NONCE_BYTES == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
               "XChaCha20 nonce");
_Static_assert(TSYNC__ENV_TAG_BYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES, "Poly1305 tag");
_Static_assert(TSYNC__ENV_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
               "XChaCha20 key");

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static int fail(int code, char *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(int code, char *err, const char *fmt, ...)
{
    int k = snprintf(err, TSYNC__ERRLEN, "envelope: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, TSYNC__ERRLEN - (size_t)k, fmt, ap);
    va_end(ap);
    return code;
}

/* The range rules shared by the encoder (TSYNC_EINVAL) and the decoder (TSYNC_ECORRUPT). */
static int check_fields(const tsync__env_header *h, uint64_t plen, int code, char *err)
{
    if (h->first_seq == 0) return fail(code, err, "first_seq is 0 (sequence numbers start at 1)");
    if (h->last_seq < h->first_seq)
        return fail(code, err, "last_seq %" PRIu64 " is below first_seq %" PRIu64, h->last_seq,
                    h->first_seq);
    if (h->epoch == 0) return fail(code, err, "data-key epoch is 0 (epochs start at 1)");
    if (h->first_seq == 1 && !sodium_is_zero(h->prev_hash, sizeof h->prev_hash))
        return fail(code, err, "first_seq is 1 but the previous hash is not zero");
    if (plen > TSYNC__ENV_PAYLOAD_MAX)
        return fail(code, err, "payload of %" PRIu64 " bytes, more than the limit of %u", plen,
                    (unsigned)TSYNC__ENV_PAYLOAD_MAX);
    return 0;
}

void tsync__env_header_encode(const tsync__env_header *h, uint8_t out[TSYNC__ENV_HEADER_BYTES])
{
    memcpy(out + O_MAGIC, MAGIC, sizeof MAGIC);
    out[O_FORMAT] = TSYNC__ENV_FORMAT;
    memcpy(out + O_SHOP, h->shop_id, TSYNC__ENV_SHOP_BYTES);
    memcpy(out + O_ORIGIN, h->origin, TSYNC__SITE_BYTES);
    put_be(out + O_FIRST, h->first_seq, 8);
    put_be(out + O_LAST, h->last_seq, 8);
    memcpy(out + O_PREV, h->prev_hash, TSYNC__HASH_BYTES);
    memcpy(out + O_LHASH, h->last_hash, TSYNC__HASH_BYTES);
    put_be(out + O_EPOCH, h->epoch, 4);
    memcpy(out + O_NONCE, h->nonce, TSYNC__ENV_NONCE_BYTES);
    put_be(out + O_PLEN, h->payload_len, 4);
}

int tsync__env_seal(const tsync__env_header *h, const uint8_t key[TSYNC__ENV_KEY_BYTES],
                    const uint8_t *payload, size_t len, uint8_t **out, size_t *out_len,
                    char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    *out = NULL;
    *out_len = 0;
    int rc = check_fields(h, len, TSYNC_EINVAL, err);
    if (rc) return rc;
    tsync__env_header hh = *h;
    hh.payload_len = (uint32_t)len;
    randombytes_buf(hh.nonce, sizeof hh.nonce);
    size_t total = TSYNC__ENV_HEADER_BYTES + len + TSYNC__ENV_TAG_BYTES;
    uint8_t *buf = malloc(total);
    if (!buf) return fail(TSYNC_ENOMEM, err, "out of memory for %zu bytes", total);
    tsync__env_header_encode(&hh, buf);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(buf + TSYNC__ENV_HEADER_BYTES, &clen, payload, len,
                                               buf, TSYNC__ENV_HEADER_BYTES, NULL, hh.nonce, key);
    *out = buf;
    *out_len = total;
    return 0;
}

int tsync__env_decode(const uint8_t *buf, size_t len, tsync__env_header *h, char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    memset(h, 0, sizeof *h);
    if (len < TSYNC__ENV_HEADER_BYTES + TSYNC__ENV_TAG_BYTES)
        return fail(TSYNC_ECORRUPT, err, "%zu bytes, shorter than a header and a tag (%u)", len,
                    TSYNC__ENV_HEADER_BYTES + TSYNC__ENV_TAG_BYTES);
    if (memcmp(buf + O_MAGIC, MAGIC, sizeof MAGIC) != 0)
        return fail(TSYNC_ECORRUPT, err, "not an envelope (bad magic)");
    if (buf[O_FORMAT] != TSYNC__ENV_FORMAT)
        return fail(TSYNC_EVERSION, err, "format %u is not supported (expected %u)", buf[O_FORMAT],
                    TSYNC__ENV_FORMAT);
    memcpy(h->shop_id, buf + O_SHOP, TSYNC__ENV_SHOP_BYTES);
    memcpy(h->origin, buf + O_ORIGIN, TSYNC__SITE_BYTES);
    h->first_seq = get_be(buf + O_FIRST, 8);
    h->last_seq = get_be(buf + O_LAST, 8);
    memcpy(h->prev_hash, buf + O_PREV, TSYNC__HASH_BYTES);
    memcpy(h->last_hash, buf + O_LHASH, TSYNC__HASH_BYTES);
    h->epoch = (uint32_t)get_be(buf + O_EPOCH, 4);
    memcpy(h->nonce, buf + O_NONCE, TSYNC__ENV_NONCE_BYTES);
    h->payload_len = (uint32_t)get_be(buf + O_PLEN, 4);
    int rc = check_fields(h, h->payload_len, TSYNC_ECORRUPT, err);
    if (rc) return rc;
    size_t want = (size_t)TSYNC__ENV_HEADER_BYTES + h->payload_len + TSYNC__ENV_TAG_BYTES;
    if (len < want)
        return fail(TSYNC_ECORRUPT, err, "truncated: %zu bytes, the header says %zu", len, want);
    if (len > want)
        return fail(TSYNC_ECORRUPT, err, "%zu trailing bytes after the ciphertext", len - want);
    return 0;
}

int tsync__env_open(const uint8_t *buf, size_t len, const uint8_t shop_id[TSYNC__ENV_SHOP_BYTES],
                    uint32_t epoch, const uint8_t key[TSYNC__ENV_KEY_BYTES], uint8_t **payload,
                    size_t *payload_len, tsync__env_header *h, char err[TSYNC__ERRLEN])
{
    *payload = NULL;
    *payload_len = 0;
    tsync__env_header hh;
    int rc = tsync__env_decode(buf, len, &hh, err);
    if (rc) return rc;
    char site[2 * TSYNC__SITE_BYTES + 1];
    tsync__hex(hh.origin, sizeof hh.origin, site);
    if (sodium_memcmp(hh.shop_id, shop_id, TSYNC__ENV_SHOP_BYTES) != 0) {
        char shop[2 * TSYNC__ENV_SHOP_BYTES + 1];
        tsync__hex(hh.shop_id, sizeof hh.shop_id, shop);
        return fail(TSYNC_EINVAL, err,
                    "origin %s seq %" PRIu64 "-%" PRIu64 " is of shop %s, not this shop", site,
                    hh.first_seq, hh.last_seq, shop);
    }
    if (hh.epoch != epoch)
        return fail(TSYNC_EINVAL, err,
                    "origin %s seq %" PRIu64 "-%" PRIu64 " is of data-key epoch %" PRIu32
                    ", the key given is of epoch %" PRIu32,
                    site, hh.first_seq, hh.last_seq, hh.epoch, epoch);
    /* + 1: malloc(0) may return NULL for an empty payload. */
    uint8_t *p = malloc((size_t)hh.payload_len + 1);
    if (!p) return fail(TSYNC_ENOMEM, err, "out of memory for %" PRIu32 " bytes", hh.payload_len);
    unsigned long long plen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            p, &plen, NULL, buf + TSYNC__ENV_HEADER_BYTES,
            (unsigned long long)hh.payload_len + TSYNC__ENV_TAG_BYTES, buf, TSYNC__ENV_HEADER_BYTES,
            hh.nonce, key) != 0) {
        free(p);
        return fail(TSYNC_EBADSIG, err,
                    "origin %s seq %" PRIu64 "-%" PRIu64
                    " does not authenticate under the data key of epoch %" PRIu32
                    " (tampered header or body, or a wrong key)",
                    site, hh.first_seq, hh.last_seq, epoch);
    }
    *payload = p;
    *payload_len = (size_t)plen;
    if (h) *h = hh;
    return 0;
}
