/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/shopkey.c — the shop admin key file (cert.h, docs/TRUST.md "Shop admin key file"):
 * version 1 holds the admin key, shop id, shop name and creation time; version 2 adds the shop's
 * data keys of every epoch and the devices the admin certified or revoked, so the admin can seal
 * a new epoch to the devices that remain (docs/RELAY_KEYS.md).
 *
 * Design notes
 * - Decoding is as strict as for trust records (canonical msgpack, exact field counts, no
 *   trailing bytes), and both versions decode: a version 1 file stays usable, and is written
 *   back as version 2 by the first command that changes it (store/api_shopkey.c).
 * - The data keys sit in the file in clear, like the admin's secret key beside them: the file is
 *   the shop (0600, offline); whoever holds it could issue itself any data key anyway.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "codec/cert.h"
#include "codec/codec.h"

#define MAGIC "TSYNCSHP"

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

int tsync__shopkey_init(tsync__shopkey *k, const uint8_t seed[32],
                        const uint8_t shop_id[TSYNC__SHOP_ID_BYTES], const char *name,
                        size_t name_len, uint64_t created_ms, char err[TSYNC__ERRLEN])
{
    memset(k, 0, sizeof *k);
    err[0] = '\0';
    if (!tsync__trust_name_ok(name, name_len)) {
        snprintf(err, TSYNC__ERRLEN,
                 "shop name: must be 1..%u bytes of UTF-8 without control characters",
                 TSYNC__TRUST_NAME_MAX);
        return TSYNC_EINVAL;
    }
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
    memcpy(k->shop_id, shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(k->name, name, name_len);
    k->name[name_len] = '\0';
    k->name_len = (uint32_t)name_len;
    k->created_ms = created_ms;
    return 0;
}

void tsync__shopkey_wipe(tsync__shopkey *k)
{
    sodium_memzero(k, sizeof *k);
}

void tsync__shopkey_ext_free(tsync__shopkey_ext *x)
{
    if (!x) return;
    if (x->epochs) sodium_memzero(x->epochs, x->nepochs * sizeof *x->epochs);
    free(x->epochs);
    free(x->devices);
    memset(x, 0, sizeof *x);
}

/* ---------------------------------------------------------------- encoder */

#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) goto nomem;                                                                  \
    } while (0)

static bool ext_ok(const tsync__shopkey_ext *x)
{
    if (x->nepochs > TSYNC__SHOPKEY_MAX_EPOCHS || x->ndevices > TSYNC__SHOPKEY_MAX_DEVICES)
        return false;
    for (uint32_t i = 0; i < x->nepochs; i++)
        if (x->epochs[i].epoch == 0 || (i && x->epochs[i].epoch <= x->epochs[i - 1].epoch))
            return false;
    for (uint32_t i = 1; i < x->ndevices; i++)
        if (memcmp(x->devices[i - 1].pk, x->devices[i].pk, TSYNC__PK_BYTES) >= 0) return false;
    return true;
}

static int encode(const tsync__shopkey *k, const tsync__shopkey_ext *x, uint8_t **out, size_t *len)
{
    *out = NULL, *len = 0;
    if (!tsync__trust_name_ok(k->name, k->name_len) || (x && !ext_ok(x))) return TSYNC_EINVAL;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    PK(msgpack_pack_array(&pk, x ? 6 : 4));
    PK(tsync__mp_pack_bin(&pk, k->sk, TSYNC__SK_BYTES));
    PK(tsync__mp_pack_bin(&pk, k->shop_id, TSYNC__SHOP_ID_BYTES));
    PK(tsync__mp_pack_str(&pk, k->name, k->name_len));
    PK(msgpack_pack_uint64(&pk, k->created_ms));
    if (x) {
        PK(msgpack_pack_array(&pk, x->nepochs));
        for (uint32_t i = 0; i < x->nepochs; i++) {
            PK(msgpack_pack_array(&pk, 3));
            PK(msgpack_pack_uint32(&pk, x->epochs[i].epoch));
            PK(tsync__mp_pack_bin(&pk, x->epochs[i].key, TSYNC__DATA_KEY_BYTES));
            PK(msgpack_pack_uint64(&pk, x->epochs[i].created_ms));
        }
        PK(msgpack_pack_array(&pk, x->ndevices));
        for (uint32_t i = 0; i < x->ndevices; i++) {
            PK(msgpack_pack_array(&pk, 2));
            PK(tsync__mp_pack_bin(&pk, x->devices[i].pk, TSYNC__PK_BYTES));
            PK(x->devices[i].revoked ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
        }
    }
    size_t n = 9 + sb.size + 32;
    if (n > TSYNC__SHOPKEY_MAX_BYTES) {
        sodium_memzero(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return TSYNC_EINVAL;
    }
    uint8_t *buf = malloc(n);
    if (!buf) goto nomem;
    memcpy(buf, MAGIC, 8);
    buf[8] = x ? 2 : 1;
    memcpy(buf + 9, sb.data, sb.size);
    crypto_generichash(buf + n - 32, 32, buf, n - 32, NULL, 0);
    sodium_memzero(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    *out = buf;
    *len = n;
    return 0;
nomem:
    if (sb.data) sodium_memzero(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return TSYNC_ENOMEM;
}

int tsync__shopkey_encode(const tsync__shopkey *k, uint8_t **out, size_t *len)
{
    return encode(k, NULL, out, len);
}

int tsync__shopkey_encode_ext(const tsync__shopkey *k, const tsync__shopkey_ext *x, uint8_t **out,
                              size_t *len)
{
    return encode(k, x, out, len);
}

/* ---------------------------------------------------------------- decoder */

typedef struct {
    tsync__mpr r;
    char *err;
    int rc;
} dec;

static bool fail(dec *d, const char *fmt, ...) PRINTF_LIKE(2, 3);
static bool fail(dec *d, const char *fmt, ...)
{
    if (d->rc) return false; /* keep the first message */
    int k = snprintf(d->err, TSYNC__ERRLEN, "admin key file: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err + k, TSYNC__ERRLEN - (size_t)k, fmt, ap);
    va_end(ap);
    d->r.ok = false;
    d->rc = TSYNC_ECORRUPT;
    return false;
}

/* A field the reader refused: where, and what was expected. */
static bool bad(dec *d, const char *field)
{
    return fail(d, "%s: expected %s at offset %zu (damaged or truncated)", field,
                d->r.expected ? d->r.expected : "more bytes", tsync__mpr_pos(&d->r));
}

#define RD(call, field) (d->r.ok && ((call) || bad(d, field)))

static bool rd_epochs(dec *d, tsync__shopkey_ext *x)
{
    uint32_t n, m;
    if (!RD(tsync__mpr_array(&d->r, &n), "data keys")) return false;
    if (n > TSYNC__SHOPKEY_MAX_EPOCHS)
        return fail(d, "%" PRIu32 " data keys, more than %u", n, TSYNC__SHOPKEY_MAX_EPOCHS);
    tsync__shopkey_epoch tmp, *e = x ? calloc(n ? n : 1, sizeof *e) : NULL;
    if (x && !e) return fail(d, "out of memory");
    if (x) x->epochs = e;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        tsync__shopkey_epoch *p = x ? &e[i] : &tmp;
        uint64_t epoch;
        if (!RD(tsync__mpr_array(&d->r, &m), "data key")) return false;
        if (m != 3) return fail(d, "data key %" PRIu32 ": expected 3 fields, got %" PRIu32, i, m);
        if (!RD(tsync__mpr_uint(&d->r, &epoch), "data key epoch") ||
            !RD(tsync__mpr_binfix(&d->r, p->key, TSYNC__DATA_KEY_BYTES), "data key") ||
            !RD(tsync__mpr_uint(&d->r, &p->created_ms), "data key created"))
            return false;
        if (epoch == 0 || epoch > UINT32_MAX)
            return fail(d, "data key epoch %" PRIu64 " is not 1..%" PRIu32, epoch, UINT32_MAX);
        p->epoch = (uint32_t)epoch;
        if (x) x->nepochs = i + 1;
        if (p->epoch <= prev)
            return fail(d, "data key epochs not ascending at epoch %" PRIu32, p->epoch);
        prev = p->epoch;
    }
    sodium_memzero(&tmp, sizeof tmp);
    return true;
}

static bool rd_devices(dec *d, tsync__shopkey_ext *x)
{
    uint32_t n, m;
    if (!RD(tsync__mpr_array(&d->r, &n), "devices")) return false;
    if (n > TSYNC__SHOPKEY_MAX_DEVICES)
        return fail(d, "%" PRIu32 " devices, more than %u", n, TSYNC__SHOPKEY_MAX_DEVICES);
    tsync__shopkey_device tmp, *v = x ? calloc(n ? n : 1, sizeof *v) : NULL;
    if (x && !v) return fail(d, "out of memory");
    if (x) x->devices = v;
    uint8_t prev[TSYNC__PK_BYTES];
    for (uint32_t i = 0; i < n; i++) {
        tsync__shopkey_device *p = x ? &v[i] : &tmp;
        if (!RD(tsync__mpr_array(&d->r, &m), "device")) return false;
        if (m != 2) return fail(d, "device %" PRIu32 ": expected 2 fields, got %" PRIu32, i, m);
        if (!RD(tsync__mpr_binfix(&d->r, p->pk, TSYNC__PK_BYTES), "device key") ||
            !RD(tsync__mpr_bool(&d->r, &p->revoked), "device revoked"))
            return false;
        if (i && memcmp(prev, p->pk, TSYNC__PK_BYTES) >= 0)
            return fail(d, "devices not in ascending key order at device %" PRIu32, i);
        memcpy(prev, p->pk, TSYNC__PK_BYTES);
        if (x) x->ndevices = i + 1;
    }
    return true;
}

int tsync__shopkey_decode_ext(const uint8_t *buf, size_t len, tsync__shopkey *out,
                              tsync__shopkey_ext *x, char err[TSYNC__ERRLEN])
{
    memset(out, 0, sizeof *out);
    if (x) memset(x, 0, sizeof *x);
    err[0] = '\0';
    dec dd = {.err = err}, *d = &dd;
    if (!buf || len < 9 + 32 || memcmp(buf, MAGIC, 8) != 0) {
        fail(d, "not a tillsync shop admin key file (bad magic or too short)");
        return d->rc;
    }
    uint8_t version = buf[8];
    if (version != 1 && version != 2) {
        snprintf(err, TSYNC__ERRLEN,
                 "admin key file: version %u is not supported (this build reads 1 and 2)", version);
        return TSYNC_EVERSION;
    }
    if (len > TSYNC__SHOPKEY_MAX_BYTES) {
        fail(d, "%zu bytes, more than the limit of %u", len, TSYNC__SHOPKEY_MAX_BYTES);
        return d->rc;
    }
    uint8_t sum[32];
    crypto_generichash(sum, 32, buf, len - 32, NULL, 0);
    if (sodium_memcmp(sum, buf + len - 32, 32) != 0) {
        fail(d, "checksum does not match (the file is damaged)");
        return d->rc;
    }
    /* Offsets in messages count from the start of the msgpack payload. */
    tsync__mpr_init(&d->r, buf + 9, len - 9 - 32);
    d->r.canonical = true;
    uint32_t n, want = version == 1 ? 4 : 6;
    const char *name = NULL;
    uint32_t name_len = 0;
    if (RD(tsync__mpr_array(&d->r, &n), "payload") && n != want)
        fail(d, "expected %" PRIu32 " fields, got %" PRIu32, want, n);
    if (RD(tsync__mpr_binfix(&d->r, out->sk, TSYNC__SK_BYTES), "secret key") &&
        RD(tsync__mpr_binfix(&d->r, out->shop_id, TSYNC__SHOP_ID_BYTES), "shop id") &&
        RD(tsync__mpr_str(&d->r, &name, &name_len), "shop name") &&
        !tsync__trust_name_ok(name, name_len))
        fail(d, "shop name: not 1..%u bytes of UTF-8 without control characters",
             TSYNC__TRUST_NAME_MAX);
    if (RD(tsync__mpr_uint(&d->r, &out->created_ms), "created") && version == 2 && rd_epochs(d, x))
        (void)rd_devices(d, x);
    if (d->r.ok && !tsync__mpr_done(&d->r))
        fail(d, "%zu trailing bytes", (size_t)(d->r.end - d->r.p));
    if (d->rc == 0) {
        uint8_t pk[TSYNC__PK_BYTES], sk[TSYNC__SK_BYTES];
        crypto_sign_seed_keypair(pk, sk, out->sk); /* the first 32 bytes are the seed */
        int same = sodium_memcmp(sk, out->sk, TSYNC__SK_BYTES) == 0;
        sodium_memzero(sk, sizeof sk);
        if (!same) {
            fail(d, "the secret key's public half does not match its seed");
        } else {
            memcpy(out->pk, pk, TSYNC__PK_BYTES);
            memcpy(out->name, name, name_len);
            out->name[name_len] = '\0';
            out->name_len = name_len;
        }
    }
    if (d->rc) {
        int rc = d->rc;
        tsync__shopkey_wipe(out);
        tsync__shopkey_ext_free(x);
        return rc;
    }
    if (x) x->version = version;
    return 0;
}

int tsync__shopkey_decode(const uint8_t *buf, size_t len, tsync__shopkey *out,
                          char err[TSYNC__ERRLEN])
{
    return tsync__shopkey_decode_ext(buf, len, out, NULL, err);
}
