/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_wire_ext.c — the extension messages FEATURES and CBATCHES (codec/wire_ext.c):
 * a CBATCHES built from bodies unpacks to the same bodies; every field out of its rules is
 * refused with one line naming it (site id, zero previous hash at seq 1, count, types, trailing
 * bytes, limit, a runs field that is not a zstd frame saying its size, a count that does not
 * match the runs); the base decoder (codec/wire.c) still calls both types unknown, which is what
 * a node that predates them does.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec/wire_ext.h"
#include "tests/lib/helpers.h"

static tsync__bsite site_of(uint8_t seed)
{
    tsync__bsite s;
    memset(s.pk, seed, sizeof s.pk);
    memset(s.inc, seed + 1, sizeof s.inc);
    tsync__site_id(s.pk, s.inc, s.site);
    return s;
}

/* n batches of one sale each, of origin s from seq first. */
static void bodies(const tsync__bsite *s, uint64_t first, uint32_t n, uint8_t **body, size_t *len)
{
    static const char *cols[] = {"id", "qty"};
    static uint32_t cl[] = {2, 3};
    tsync__btable t = {"sales", 5, 2, cols, cl, 1, 0, NULL, 0, NULL, NULL};
    for (uint32_t k = 0; k < n; k++) {
        tsync__batch b = {0};
        b.format = TSYNC__BATCH_FORMAT;
        memcpy(b.origin, s->site, 16);
        b.seq = first + k;
        b.hlc_lo = b.hlc_hi = ((uint64_t)1700000000000 + k) << 16;
        b.nsites = 1;
        b.sites = (const uint8_t(*)[16])s->site;
        b.ntables = 1;
        b.tables = &t;
        char key[16];
        snprintf(key, sizeof key, "s%u", k);
        tsync__bcol c = {.col = 1, .val = {.type = TSYNC__V_INT, .i = k % 7}};
        tsync__brow r = {.table = 0, .hlc = b.hlc_lo, .flags = TSYNC__ROW_ADD, .ncols = 1};
        r.pk[0] = (tsync__val){.type = TSYNC__V_TEXT, .p = key, .n = (uint32_t)strlen(key)};
        r.cols = &c;
        b.nrows = 1;
        b.rows = &r;
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__batch_encode(&b, &body[k], &len[k], err), 0, "%s", err);
    }
}

Test(wire_ext, cbatches_round_trip)
{
    tsync__bsite s = site_of(3);
    enum { N = 500 };
    uint8_t *body[N];
    size_t len[N], raw = 0;
    bodies(&s, 1, N, body, len);
    uint8_t prev[32] = {0}, sig[64];
    memset(sig, 0x55, sizeof sig);
    uint8_t *buf;
    size_t blen;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__wire_cbatches_build(&s, 1, prev, N, (const uint8_t *const *)body, len, sig,
                                            &buf, &blen, err),
                 0, "%s", err);
    for (int k = 0; k < N; k++) raw += len[k];
    cr_log_info("%d bodies of %zu bytes in a CBATCHES of %zu", N, raw, blen);
    cr_assert_lt(blen * 4, raw);
    cr_assert_eq(tsync__wire_ext_type(buf, blen), TSYNC__WIRE_CBATCHES);
    tsync__wire_cbatches m;
    cr_assert_eq(tsync__wire_cbatches_decode(buf, blen, &m, err), 0, "%s", err);
    cr_assert_eq(m.count, N);
    cr_assert_eq(m.first_seq, 1);
    cr_assert_eq(memcmp(m.sig, sig, 64), 0);
    tsync__crun_dec *d = tsync__crun_dec_new();
    tsync__wire_batches b;
    cr_assert_eq(tsync__wire_cbatches_unpack(&m, d, &b, err), 0, "%s", err);
    cr_assert_eq(b.nbodies, N);
    for (int k = 0; k < N; k++) {
        cr_assert_eq(b.body_len[k], len[k]);
        cr_assert_eq(memcmp(b.body[k], body[k], len[k]), 0);
    }
    /* A count that does not match the runs. */
    m.count = N - 1;
    cr_assert_eq(tsync__wire_cbatches_unpack(&m, d, &b, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "CBATCHES: field 7"), "%s", err);
    /* The base decoder: an unknown type, as at a node that predates it. */
    tsync__msg bm;
    tsync__arena a = {0};
    cr_assert_eq(tsync__wire_decode(buf, blen, &bm, &a, err), TSYNC_EVERSION);
    tsync__arena_free(&a);
    tsync__crun_dec_free(d);
    free(buf);
    for (int k = 0; k < N; k++) free(body[k]);
}

static size_t last_len; /* of the last pack() */

/* Packs a CBATCHES field by field, so that each can be made wrong. */
static uint8_t *pack(size_t *len, const uint8_t *site, const tsync__bsite *s, uint64_t first,
                     uint8_t prevbyte, uint64_t count, const uint8_t *runs, size_t rl, int extra)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint8_t prev[32], sig[64] = {0};
    memset(prev, prevbyte, sizeof prev);
    msgpack_pack_array(&pk, 9 + (extra ? 1 : 0));
    msgpack_pack_uint8(&pk, TSYNC__WIRE_CBATCHES);
    tsync__mp_pack_bin(&pk, site, 16);
    tsync__mp_pack_bin(&pk, s->pk, 32);
    tsync__mp_pack_bin(&pk, s->inc, 16);
    msgpack_pack_uint64(&pk, first);
    tsync__mp_pack_bin(&pk, prev, 32);
    msgpack_pack_uint64(&pk, count);
    tsync__mp_pack_bin(&pk, runs, rl);
    tsync__mp_pack_bin(&pk, sig, 64);
    if (extra) msgpack_pack_uint8(&pk, 0);
    *len = last_len = sb.size;
    return (uint8_t *)msgpack_sbuffer_release(&sb);
}

static void refused_n(uint8_t *buf, size_t len, const char *want)
{
    tsync__wire_cbatches m;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__wire_cbatches_decode(buf, len, &m, err), TSYNC_ECORRUPT, "want %s", want);
    cr_assert(strstr(err, want), "got '%s', want '%s'", err, want);
    cr_assert_null(strchr(err, '\n'));
    free(buf);
}

static void refused(uint8_t *buf, const char *want)
{
    refused_n(buf, last_len, want);
}

Test(wire_ext, cbatches_fields_out_of_their_rules_are_refused)
{
    tsync__bsite s = site_of(9), o = site_of(11);
    uint8_t runs[4] = {1, 2, 3, 4};
    size_t len;
    refused(pack(&len, o.site, &s, 2, 1, 1, runs, 4, 0), "field 1 (site)");
    refused(pack(&len, s.site, &s, 0, 0, 1, runs, 4, 0), "field 4 (first seq) is 0");
    refused(pack(&len, s.site, &s, 1, 1, 1, runs, 4, 0), "field 5 (previous hash)");
    refused(pack(&len, s.site, &s, 2, 1, 0, runs, 4, 0), "field 6 (count)");
    refused(pack(&len, s.site, &s, 2, 1, 70000, runs, 4, 0), "field 6 (count)");
    refused(pack(&len, s.site, &s, UINT64_MAX, 1, 2, runs, 4, 0), "overflow");
    refused(pack(&len, s.site, &s, 2, 1, 1, runs, 0, 0), "field 7 (runs) is empty");
    refused(pack(&len, s.site, &s, 2, 1, 1, runs, 4, 1), "10 items");
    uint8_t *b = pack(&len, s.site, &s, 2, 1, 1, runs, 4, 0);
    b = realloc(b, len + 1);
    b[len] = 0xc0;
    refused_n(b, len + 1, "trailing");
    /* A wrong type in the signature's place. */
    b = pack(&len, s.site, &s, 2, 1, 1, runs, 4, 0);
    b[len - 66] = 0xc5; /* bin8 header of 64 becomes a bin16 header that runs past the end */
    refused_n(b, len, "field 8 (signature)");
    /* Not a zstd frame. */
    b = pack(&len, s.site, &s, 2, 1, 1, runs, 4, 0);
    tsync__wire_cbatches m;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__wire_cbatches_decode(b, len, &m, err), 0, "%s", err);
    tsync__crun_dec *d = tsync__crun_dec_new();
    tsync__wire_batches wb;
    cr_assert_eq(tsync__wire_cbatches_unpack(&m, d, &wb, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "zstd"), "%s", err);
    tsync__crun_dec_free(d);
    free(b);
}

Test(wire_ext, features)
{
    uint8_t *buf;
    size_t len;
    uint64_t bits;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__wire_features_encode(TSYNC__FEAT_ALL | 0x80, &buf, &len), 0);
    cr_assert_eq(tsync__wire_ext_type(buf, len), TSYNC__WIRE_FEATURES);
    cr_assert_eq(tsync__wire_features_decode(buf, len, &bits, err), 0, "%s", err);
    cr_assert_eq(bits, TSYNC__FEAT_ALL | 0x80); /* a later version's bits are kept */
    /* its last byte cut: a uint8 header with its byte missing */
    cr_assert_eq(tsync__wire_features_decode(buf, len - 1, &bits, err), TSYNC_ECORRUPT);
    free(buf);
    uint8_t big[80] = {0x92, 0x0d, 0xc4, 75};
    cr_assert_eq(tsync__wire_features_decode(big, sizeof big, &bits, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "limit"), "%s", err);
}
