/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/wire_ext.c — FEATURES and CBATCHES (codec/wire_ext.h; docs/WIRE.md, "Extension
 * messages"). The same rules as codec/wire.c: canonical msgpack only, exact item counts, the
 * type's size limit before any field is read, one-line messages naming the field.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zstd.h>

#include "codec/wire_ext.h"

#define ZLEVEL 3

static const char *const f_cb[] = {"type",        "site",      "public key",
                                   "incarnation", "first seq", "previous hash",
                                   "count",       "runs",      "signature"};

static int efail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int efail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, TSYNC__ERRLEN, fmt, ap);
    va_end(ap);
    return TSYNC_ECORRUPT;
}

int tsync__wire_ext_type(const uint8_t *buf, size_t len)
{
    tsync__mpr r;
    uint32_t n;
    uint64_t t;
    tsync__mpr_init(&r, buf, len);
    r.canonical = true;
    if (!tsync__mpr_array(&r, &n) || n == 0 || !tsync__mpr_uint(&r, &t) || t > 255) return 0;
    return (int)t;
}

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} packer;

int tsync__wire_features_encode(uint64_t bits, uint8_t **out, size_t *len)
{
    packer p;
    msgpack_sbuffer_init(&p.sb);
    msgpack_packer_init(&p.pk, &p.sb, msgpack_sbuffer_write);
    if (msgpack_pack_array(&p.pk, 2) || msgpack_pack_uint8(&p.pk, TSYNC__WIRE_FEATURES) ||
        msgpack_pack_uint64(&p.pk, bits)) {
        msgpack_sbuffer_destroy(&p.sb);
        return TSYNC_ENOMEM;
    }
    *len = p.sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&p.sb);
    return 0;
}

/* The rules on values, for the encoder and the decoder. */
static int cb_check(const tsync__wire_cbatches *m, char *err)
{
    static const uint8_t zero[TSYNC__HASH_BYTES];
    uint8_t id[TSYNC__SITE_BYTES];
    tsync__site_id(m->pk, m->inc, id);
    if (memcmp(id, m->site, TSYNC__SITE_BYTES) != 0)
        return efail(err, "CBATCHES: field 1 (site) is not BLAKE2b-128(public key || incarnation)");
    if (m->first_seq == 0) return efail(err, "CBATCHES: field 4 (first seq) is 0");
    if (m->first_seq == 1 && memcmp(m->prev, zero, TSYNC__HASH_BYTES) != 0)
        return efail(err, "CBATCHES: field 5 (previous hash) is not zero at seq 1");
    if (m->count == 0 || m->count > TSYNC__WIRE_BODIES_MAX)
        return efail(err, "CBATCHES: field 6 (count) is %" PRIu32 " (1..%u)", m->count,
                     TSYNC__WIRE_BODIES_MAX);
    if (m->first_seq - 1 > UINT64_MAX - m->count)
        return efail(err, "CBATCHES: fields 4 and 6: sequence numbers overflow");
    if (m->runs_len == 0) return efail(err, "CBATCHES: field 7 (runs) is empty");
    return 0;
}

int tsync__wire_cbatches_encode(const tsync__wire_cbatches *m, uint8_t **out, size_t *len,
                                char err[TSYNC__ERRLEN])
{
    *out = NULL;
    int rc = cb_check(m, err);
    if (rc) return TSYNC_EINVAL;
    packer p;
    msgpack_sbuffer_init(&p.sb);
    msgpack_packer_init(&p.pk, &p.sb, msgpack_sbuffer_write);
    if (msgpack_pack_array(&p.pk, 9) || msgpack_pack_uint8(&p.pk, TSYNC__WIRE_CBATCHES) ||
        tsync__mp_pack_bin(&p.pk, m->site, TSYNC__SITE_BYTES) ||
        tsync__mp_pack_bin(&p.pk, m->pk, TSYNC__PK_BYTES) ||
        tsync__mp_pack_bin(&p.pk, m->inc, TSYNC__INC_BYTES) ||
        msgpack_pack_uint64(&p.pk, m->first_seq) ||
        tsync__mp_pack_bin(&p.pk, m->prev, TSYNC__HASH_BYTES) ||
        msgpack_pack_uint32(&p.pk, m->count) || tsync__mp_pack_bin(&p.pk, m->runs, m->runs_len) ||
        tsync__mp_pack_bin(&p.pk, m->sig, TSYNC__SIG_BYTES)) {
        msgpack_sbuffer_destroy(&p.sb);
        return TSYNC_ENOMEM;
    }
    if (p.sb.size > TSYNC__WIRE_MAX_CBATCHES) {
        size_t n = p.sb.size;
        msgpack_sbuffer_destroy(&p.sb);
        snprintf(err, TSYNC__ERRLEN, "CBATCHES is %zu bytes, more than its limit of %u", n,
                 TSYNC__WIRE_MAX_CBATCHES);
        return TSYNC_EINVAL;
    }
    *len = p.sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&p.sb);
    return 0;
}

int tsync__wire_cbatches_build(const tsync__bsite *site, uint64_t first_seq,
                               const uint8_t prev[TSYNC__HASH_BYTES], uint32_t n,
                               const uint8_t *const *body, const size_t *len,
                               const uint8_t sig[TSYNC__SIG_BYTES], uint8_t **out, size_t *out_len,
                               char err[TSYNC__ERRLEN])
{
    uint8_t *blob;
    size_t blen;
    int rc = tsync__crun_encode(site->site, first_seq, n, body, len, &blob, &blen);
    if (rc) return rc;
    size_t cap = ZSTD_compressBound(blen);
    uint8_t *z = malloc(cap);
    if (!z) {
        free(blob);
        return TSYNC_ENOMEM;
    }
    size_t zl = ZSTD_compress(z, cap, blob, blen, ZLEVEL);
    free(blob);
    if (ZSTD_isError(zl)) {
        free(z);
        return TSYNC_ENOMEM;
    }
    tsync__wire_cbatches m = {.first_seq = first_seq, .count = n, .runs = z, .runs_len = zl};
    memcpy(m.site, site->site, TSYNC__SITE_BYTES);
    memcpy(m.pk, site->pk, TSYNC__PK_BYTES);
    memcpy(m.inc, site->inc, TSYNC__INC_BYTES);
    memcpy(m.prev, prev, TSYNC__HASH_BYTES);
    memcpy(m.sig, sig, TSYNC__SIG_BYTES);
    rc = tsync__wire_cbatches_encode(&m, out, out_len, err);
    free(z);
    return rc;
}

/* Reads the array header and type of an extension message, after its size limit. */
static bool head(tsync__mpr *r, const uint8_t *buf, size_t len, const char *name, uint64_t type,
                 uint32_t items, size_t limit, char *err)
{
    uint32_t n;
    uint64_t t;
    if (len > limit) {
        efail(err, "%s is %zu bytes, more than its limit of %zu", name, len, limit);
        return false;
    }
    tsync__mpr_init(r, buf, len);
    r->canonical = true;
    if (!tsync__mpr_array(r, &n) || !tsync__mpr_uint(r, &t) || t != type) {
        efail(err, "%s: not a %s message", name, name);
        return false;
    }
    if (n != items) {
        efail(err, "%s has %" PRIu32 " items, expected %" PRIu32, name, n, items);
        return false;
    }
    return true;
}

int tsync__wire_features_decode(const uint8_t *buf, size_t len, uint64_t *bits,
                                char err[TSYNC__ERRLEN])
{
    tsync__mpr r;
    *bits = 0;
    if (!head(&r, buf, len, "FEATURES", TSYNC__WIRE_FEATURES, 2, TSYNC__WIRE_MAX_FEATURES, err))
        return TSYNC_ECORRUPT;
    if (!tsync__mpr_uint(&r, bits))
        return efail(err, "FEATURES: field 1 (bits) is not a canonical uint");
    if (!tsync__mpr_done(&r)) return efail(err, "FEATURES: trailing bytes");
    return 0;
}

int tsync__wire_cbatches_decode(const uint8_t *buf, size_t len, tsync__wire_cbatches *out,
                                char err[TSYNC__ERRLEN])
{
    tsync__mpr r;
    memset(out, 0, sizeof *out);
    if (!head(&r, buf, len, "CBATCHES", TSYNC__WIRE_CBATCHES, 9, TSYNC__WIRE_MAX_CBATCHES, err))
        return TSYNC_ECORRUPT;
    uint64_t count;
    uint32_t rl;
    int f = 1;
    if (!tsync__mpr_binfix(&r, out->site, TSYNC__SITE_BYTES) || !++f ||
        !tsync__mpr_binfix(&r, out->pk, TSYNC__PK_BYTES) || !++f ||
        !tsync__mpr_binfix(&r, out->inc, TSYNC__INC_BYTES) || !++f ||
        !tsync__mpr_uint(&r, &out->first_seq) || !++f ||
        !tsync__mpr_binfix(&r, out->prev, TSYNC__HASH_BYTES) || !++f ||
        !tsync__mpr_uint(&r, &count) || !++f || !tsync__mpr_bin(&r, &out->runs, &rl) || !++f ||
        !tsync__mpr_binfix(&r, out->sig, TSYNC__SIG_BYTES)) {
        const char *found = tsync__mpr_found(&r);
        int rc = efail(err, "CBATCHES: field %d (%s): expected %s, got %s", f, f_cb[f],
                       r.expected ? r.expected : "more", found ? found : "the end");
        memset(out, 0, sizeof *out);
        return rc;
    }
    if (!tsync__mpr_done(&r)) {
        memset(out, 0, sizeof *out);
        return efail(err, "CBATCHES: trailing bytes");
    }
    out->count = count > UINT32_MAX ? 0 : (uint32_t)count;
    out->runs_len = rl;
    int rc = cb_check(out, err);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

int tsync__wire_cbatches_unpack(const tsync__wire_cbatches *m, tsync__crun_dec *d,
                                tsync__wire_batches *b, char err[TSYNC__ERRLEN])
{
    return tsync__wire_cbatches_unpack_raw(m, d, b, NULL, NULL, err);
}

int tsync__wire_cbatches_unpack_raw(const tsync__wire_cbatches *m, tsync__crun_dec *d,
                                    tsync__wire_batches *b, uint8_t **raw_out, size_t *raw_len,
                                    char err[TSYNC__ERRLEN])
{
    if (raw_out) *raw_out = NULL, *raw_len = 0;
    unsigned long long size = ZSTD_getFrameContentSize(m->runs, m->runs_len);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN)
        return efail(err, "CBATCHES: field 7 (runs) is not a zstd frame that says its size");
    if (size == 0 || size > TSYNC__WIRE_CBATCHES_RAW_MAX)
        return efail(err, "CBATCHES: field 7 (runs) decompresses to %llu bytes (1..%u)", size,
                     TSYNC__WIRE_CBATCHES_RAW_MAX);
    uint8_t *raw = malloc((size_t)size);
    if (!raw) return TSYNC_ENOMEM;
    size_t got = ZSTD_decompress(raw, (size_t)size, m->runs, m->runs_len);
    if (ZSTD_isError(got) || got != size) {
        free(raw);
        return efail(err, "CBATCHES: field 7 (runs): %s",
                     ZSTD_isError(got) ? ZSTD_getErrorName(got) : "shorter than it says");
    }
    const uint8_t *const *body;
    const size_t *len;
    char cerr[TSYNC__ERRLEN];
    int rc = tsync__crun_decode(d, m->site, m->first_seq, m->count, raw, (size_t)size, &body, &len,
                                cerr);
    if (rc || !raw_out) free(raw);
    if (rc == TSYNC_ENOMEM) return rc;
    if (rc) return efail(err, "CBATCHES: field 7 (runs): %s", cerr);
    if (raw_out) *raw_out = raw, *raw_len = (size_t)size;
    memset(b, 0, sizeof *b);
    memcpy(b->site, m->site, TSYNC__SITE_BYTES);
    memcpy(b->pk, m->pk, TSYNC__PK_BYTES);
    memcpy(b->inc, m->inc, TSYNC__INC_BYTES);
    b->first_seq = m->first_seq;
    memcpy(b->prev, m->prev, TSYNC__HASH_BYTES);
    b->nbodies = m->count;
    b->body = body;
    b->body_len = len;
    memcpy(b->sig, m->sig, TSYNC__SIG_BYTES);
    return 0;
}
