/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_crdt_batch.c — the batch format and its integrity rules (crdt/batch.c).
 *
 * A rich sample batch (every value type, two tables, deletes, counters) must round-trip exactly
 * and re-encode to the same bytes. Then the tests attack the bytes: every truncation must fail,
 * every flipped byte must fail or change the hash (so the signature no longer verifies), and a
 * table of hand-made bodies breaks one rule each (types, lengths, indexes, canonical form).
 *
 * Set TSYNC_FUZZ_CORPUS to a directory to write the encoded samples there as fuzzing seeds.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

/* ---------------------------------------------------------------- sample batch */

static uint8_t ORIGIN[TSYNC__SITE_BYTES], S1[TSYNC__SITE_BYTES], S2[TSYNC__SITE_BYTES];
static uint8_t SITES[3][TSYNC__SITE_BYTES];
static const uint8_t UUID[16] = {0x01, 0x8f, 0x3a, 0x00, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 9};
static const uint8_t ZEROS_BLOB[3] = {0, 0, 1};

#define LO ((tsync__hlc)1700000000000ULL << 16)

static tsync__bdep DEPS[2] = {{1, 7}, {2, 3}};
static const char *P_COLS[] = {"id", "name", "price", "stock", "photo"};
static uint32_t P_LEN[] = {2, 4, 5, 5, 5};
static uint32_t P_CTRS[] = {3};
static const char *L_COLS[] = {"sale_id", "line", "product", "qty", "note"};
static uint32_t L_LEN[] = {7, 4, 7, 3, 4};
static tsync__btable TABLES[2];
static tsync__brmv RMV1[2], RMV3[1];
static tsync__bcol COLS0[3], COLS2[3], COLS3[1];
static tsync__bctr CTRS0[1];
static tsync__brow ROWS[4];

static tsync__val text(const char *s)
{
    return (tsync__val){.type = TSYNC__V_TEXT, .p = s, .n = (uint32_t)strlen(s)};
}
static tsync__val blob(const void *p, uint32_t n)
{
    return (tsync__val){.type = TSYNC__V_BLOB, .p = p, .n = n};
}
static tsync__val integer(int64_t i)
{
    return (tsync__val){.type = TSYNC__V_INT, .i = i};
}
static tsync__val real(double r)
{
    return (tsync__val){.type = TSYNC__V_REAL, .r = r};
}

static void sample(tsync__batch *b)
{
    DEPS[0] = (tsync__bdep){1, 7};
    DEPS[1] = (tsync__bdep){2, 3};
    memset(ORIGIN, 0xa0, sizeof ORIGIN);
    memset(S1, 0x51, sizeof S1);
    memset(S2, 0x52, sizeof S2);
    memcpy(SITES[0], ORIGIN, 16);
    memcpy(SITES[1], S1, 16);
    memcpy(SITES[2], S2, 16);
    TABLES[0] = (tsync__btable){.name = "products",
                                .name_len = 8,
                                .ncols = 5,
                                .cols = P_COLS,
                                .col_len = P_LEN,
                                .npk = 1,
                                .ncounters = 1,
                                .counters = P_CTRS};
    TABLES[1] = (tsync__btable){.name = "sale_lines",
                                .name_len = 10,
                                .ncols = 5,
                                .cols = L_COLS,
                                .col_len = L_LEN,
                                .npk = 2,
                                .ncounters = 0,
                                .counters = NULL};
    COLS0[0] = (tsync__bcol){.col = 1, .val = text("Coffee")};
    COLS0[1] = (tsync__bcol){.col = 2, .val = real(2.5), .old_hlc = LO - 77, .old_site = 1};
    COLS0[2] = (tsync__bcol){.col = 4, .val = blob(ZEROS_BLOB, 3), .old_hlc = 5, .old_site = 0};
    CTRS0[0] = (tsync__bctr){.col = 3, .p = 50, .n = 2};
    ROWS[0] = (tsync__brow){.table = 0,
                            .hlc = LO,
                            .flags = TSYNC__ROW_ADD,
                            .ncols = 3,
                            .cols = COLS0,
                            .nctrs = 1,
                            .ctrs = CTRS0};
    ROWS[0].pk[0] = text("p-1");

    RMV1[0] = (tsync__brmv){0, LO - 1000};
    RMV1[1] = (tsync__brmv){2, UINT64_MAX};
    ROWS[1] =
        (tsync__brow){.table = 0, .hlc = LO + 5, .flags = TSYNC__ROW_DEL, .nrmv = 2, .rmv = RMV1};
    ROWS[1].pk[0] = blob(UUID, 16);

    COLS2[0] = (tsync__bcol){.col = 2, .val = {.type = TSYNC__V_NULL}};
    COLS2[1] = (tsync__bcol){.col = 3, .val = integer(-3), .old_hlc = LO - 1, .old_site = 2};
    COLS2[2] = (tsync__bcol){.col = 4, .val = text("")};
    ROWS[2] = (tsync__brow){
        .table = 1, .hlc = LO + 6, .flags = TSYNC__ROW_ADD, .ncols = 3, .cols = COLS2};
    ROWS[2].pk[0] = integer(INT64_MIN);
    ROWS[2].pk[1] = integer(INT64_MAX);

    COLS3[0] = (tsync__bcol){.col = 4, .val = blob(NULL, 0)};
    RMV3[0] = (tsync__brmv){1, 5};
    ROWS[3] = (tsync__brow){.table = 1,
                            .hlc = LO + 100000,
                            .flags = TSYNC__ROW_ADD | TSYNC__ROW_DEL,
                            .nrmv = 1,
                            .rmv = RMV3,
                            .ncols = 1,
                            .cols = COLS3};
    ROWS[3].pk[0] = real(-1.0 / 3.0);
    ROWS[3].pk[1] = integer(0);

    *b = (tsync__batch){.format = TSYNC__BATCH_FORMAT,
                        .seq = 42,
                        .hlc_lo = LO,
                        .hlc_hi = LO + 100000,
                        .nsites = 3,
                        .sites = (const uint8_t(*)[TSYNC__SITE_BYTES])SITES,
                        .ndeps = 2,
                        .deps = DEPS,
                        .ntables = 2,
                        .tables = TABLES,
                        .nrows = 4,
                        .rows = ROWS};
    memcpy(b->origin, ORIGIN, 16);
}

/* ---------------------------------------------------------------- deep comparison */

static bool val_eq(const tsync__val *a, const tsync__val *b)
{
    if (a->type != b->type) return false;
    switch (a->type) {
    case TSYNC__V_INT:
        return a->i == b->i;
    case TSYNC__V_REAL:
        return memcmp(&a->r, &b->r, sizeof a->r) == 0;
    case TSYNC__V_TEXT:
    case TSYNC__V_BLOB:
        return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
    default:
        return true;
    }
}

static bool batch_eq(const tsync__batch *a, const tsync__batch *b)
{
    if (memcmp(a->origin, b->origin, 16) || a->seq != b->seq || a->hlc_lo != b->hlc_lo ||
        a->hlc_hi != b->hlc_hi || a->nsites != b->nsites || a->ndeps != b->ndeps ||
        a->ntables != b->ntables || a->nrows != b->nrows)
        return false;
    for (uint32_t i = 0; i < a->nsites; i++)
        if (memcmp(a->sites[i], b->sites[i], 16)) return false;
    for (uint32_t i = 0; i < a->ndeps; i++)
        if (a->deps[i].site != b->deps[i].site || a->deps[i].seq != b->deps[i].seq) return false;
    for (uint32_t i = 0; i < a->ntables; i++) {
        const tsync__btable *x = &a->tables[i], *y = &b->tables[i];
        if (x->name_len != y->name_len || memcmp(x->name, y->name, x->name_len) ||
            x->ncols != y->ncols || x->npk != y->npk || x->ncounters != y->ncounters)
            return false;
        for (uint32_t c = 0; c < x->ncols; c++)
            if (x->col_len[c] != y->col_len[c] || memcmp(x->cols[c], y->cols[c], x->col_len[c]))
                return false;
        for (uint32_t c = 0; c < x->ncounters; c++)
            if (x->counters[c] != y->counters[c]) return false;
    }
    for (uint32_t i = 0; i < a->nrows; i++) {
        const tsync__brow *x = &a->rows[i], *y = &b->rows[i];
        if (x->table != y->table || x->hlc != y->hlc || x->flags != y->flags ||
            x->nrmv != y->nrmv || x->ncols != y->ncols || x->nctrs != y->nctrs)
            return false;
        for (uint32_t k = 0; k < a->tables[x->table].npk; k++)
            if (!val_eq(&x->pk[k], &y->pk[k])) return false;
        for (uint32_t k = 0; k < x->nrmv; k++)
            if (x->rmv[k].site != y->rmv[k].site || x->rmv[k].hlc != y->rmv[k].hlc) return false;
        for (uint32_t k = 0; k < x->ncols; k++)
            if (x->cols[k].col != y->cols[k].col || !val_eq(&x->cols[k].val, &y->cols[k].val) ||
                x->cols[k].old_hlc != y->cols[k].old_hlc ||
                x->cols[k].old_site != y->cols[k].old_site)
                return false;
        for (uint32_t k = 0; k < x->nctrs; k++)
            if (x->ctrs[k].col != y->ctrs[k].col || x->ctrs[k].p != y->ctrs[k].p ||
                x->ctrs[k].n != y->ctrs[k].n)
                return false;
    }
    return true;
}

static void encode_ok(const tsync__batch *b, uint8_t **out, size_t *len)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__batch_encode(b, out, len, err);
    cr_assert_eq(rc, 0, "encode: %d %s", rc, err);
}

/* Writes a seed for the fuzzer when TSYNC_FUZZ_CORPUS names a directory. */
static void seed_file(const char *name, const uint8_t *p, size_t n)
{
    const char *dir = getenv("TSYNC_FUZZ_CORPUS");
    if (!dir) return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    fwrite(p, 1, n, f);
    fclose(f);
}

/* ---------------------------------------------------------------- round trips */

Test(crdt_batch, round_trip_every_value_type)
{
    tsync__batch b, d;
    uint8_t *buf, *again;
    size_t len, len2;
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    sample(&b);
    encode_ok(&b, &buf, &len);
    seed_file("sample", buf, len);
    int rc = tsync__batch_decode(buf, len, &d, &a, err);
    cr_assert_eq(rc, 0, "decode: %s", err);
    cr_assert_eq(d.format, TSYNC__BATCH_FORMAT);
    cr_assert(batch_eq(&b, &d));
    /* spot checks on the trickiest values */
    cr_assert_eq(d.rows[2].pk[0].i, INT64_MIN);
    cr_assert_eq(d.rows[2].pk[1].i, INT64_MAX);
    cr_assert_eq(d.rows[0].cols[2].val.n, 3);
    cr_assert_eq(memcmp(d.rows[0].cols[2].val.p, ZEROS_BLOB, 3), 0);
    cr_assert_eq(d.rows[2].cols[2].val.type, TSYNC__V_TEXT);
    cr_assert_eq(d.rows[2].cols[2].val.n, 0);
    cr_assert_eq(d.rows[3].cols[0].val.type, TSYNC__V_BLOB);
    cr_assert_eq(d.rows[3].hlc, LO + 100000);
    cr_assert_eq(d.rows[1].rmv[1].hlc, UINT64_MAX);
    cr_assert_eq(d.tables[0].counters[0], 3);
    /* canonical: what decodes re-encodes to the very same bytes */
    encode_ok(&d, &again, &len2);
    cr_assert_eq(len2, len);
    cr_assert_eq(memcmp(again, buf, len), 0);
    free(again);
    free(buf);
    tsync__arena_free(&a);
}

Test(crdt_batch, round_trip_special_reals)
{
    double vals[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1e-310, DBL_MAX};
    tsync__batch b;
    sample(&b);
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        COLS0[1].val = real(vals[i]);
        uint8_t *buf;
        size_t len;
        char err[TSYNC__ERRLEN];
        tsync__arena a = {0};
        tsync__batch d;
        encode_ok(&b, &buf, &len);
        cr_assert_eq(tsync__batch_decode(buf, len, &d, &a, err), 0, "%s", err);
        cr_assert(batch_eq(&b, &d), "value %zu", i);
        free(buf);
        tsync__arena_free(&a);
    }
}

Test(crdt_batch, round_trip_minimal)
{
    tsync__batch b = {
        .format = 0, .seq = 1, .nsites = 1, .sites = (const uint8_t(*)[TSYNC__SITE_BYTES])ORIGIN};
    memset(ORIGIN, 7, 16);
    memcpy(b.origin, ORIGIN, 16);
    uint8_t *buf;
    size_t len;
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    tsync__batch d;
    encode_ok(&b, &buf, &len); /* format 0 means "the current format" */
    seed_file("minimal", buf, len);
    cr_assert_eq(tsync__batch_decode(buf, len, &d, &a, err), 0, "%s", err);
    cr_assert_eq(d.format, 1);
    cr_assert(batch_eq(&b, &d));
    free(buf);
    tsync__arena_free(&a);
}

Test(crdt_batch, round_trip_large_counts_and_strings)
{
    /* Enough rows for array32, a TEXT for str32, a BLOB for bin16, a table name for str8. */
    enum { N = 70000 };
    static tsync__brow rows[N];
    static char longtext[70001];
    static uint8_t mid[300];
    static tsync__bcol col;
    memset(longtext, 'x', sizeof longtext - 1);
    memset(mid, 0xee, sizeof mid);
    char name[40];
    memset(name, 't', sizeof name);
    const char *cols[] = {"k", "v"};
    uint32_t clen[] = {1, 1};
    tsync__btable t = {
        .name = name, .name_len = 40, .ncols = 2, .cols = cols, .col_len = clen, .npk = 1};
    col = (tsync__bcol){.col = 1, .val = text(longtext)};
    for (int i = 0; i < N; i++) {
        rows[i] = (tsync__brow){.table = 0, .hlc = 100 + (tsync__hlc)i, .flags = TSYNC__ROW_ADD};
        rows[i].pk[0] = i == 1 ? blob(mid, sizeof mid) : integer(i);
    }
    rows[0].ncols = 1;
    rows[0].cols = &col;
    uint8_t site[16] = {3};
    tsync__batch b = {.format = 1,
                      .seq = 9,
                      .hlc_lo = 100,
                      .hlc_hi = 100 + N,
                      .nsites = 1,
                      .sites = (const uint8_t(*)[16])site,
                      .ntables = 1,
                      .tables = &t,
                      .nrows = N,
                      .rows = rows};
    memcpy(b.origin, site, 16);
    uint8_t *buf, *again;
    size_t len, len2;
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    tsync__batch d;
    encode_ok(&b, &buf, &len);
    cr_assert_eq(tsync__batch_decode(buf, len, &d, &a, err), 0, "%s", err);
    cr_assert(batch_eq(&b, &d));
    encode_ok(&d, &again, &len2);
    cr_assert(len2 == len && memcmp(again, buf, len) == 0);
    free(again);
    free(buf);
    tsync__arena_free(&a);
}

/* ---------------------------------------------------------------- tampering */

Test(crdt_batch, truncation_at_every_length_fails)
{
    tsync__batch b, d;
    uint8_t *buf;
    size_t len;
    char err[TSYNC__ERRLEN];
    sample(&b);
    encode_ok(&b, &buf, &len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *c = malloc(n ? n : 1); /* exact size: the sanitizer sees any over-read */
        memcpy(c, buf, n);
        tsync__arena a = {0};
        int rc = tsync__batch_decode(c, n, &d, &a, err);
        cr_assert_eq(rc, TSYNC_ECORRUPT, "prefix of %zu bytes: rc %d", n, rc);
        cr_assert_neq(err[0], '\0');
        cr_assert_null(strchr(err, '\n'));
        tsync__arena_free(&a);
        free(c);
    }
    free(buf);
}

Test(crdt_batch, trailing_bytes_fail)
{
    tsync__batch b, d;
    uint8_t *buf;
    size_t len;
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    sample(&b);
    encode_ok(&b, &buf, &len);
    uint8_t *c = malloc(len + 1);
    memcpy(c, buf, len);
    c[len] = 0xc0;
    cr_assert_eq(tsync__batch_decode(c, len + 1, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "trailing"), "%s", err);
    free(c);
    free(buf);
    tsync__arena_free(&a);
}

Test(crdt_batch, every_flipped_byte_fails_or_changes_the_hash)
{
    static const uint8_t masks[] = {0x01, 0x10, 0x80, 0xff};
    uint8_t pk[TSYNC__PK_BYTES], sk[TSYNC__SK_BYTES], prev[32] = {0}, h0[32], h[32], sig[64];
    cr_assert_geq(sodium_init(), 0);
    crypto_sign_keypair(pk, sk);
    tsync__batch b, d;
    uint8_t *buf;
    size_t len;
    char err[TSYNC__ERRLEN];
    sample(&b);
    encode_ok(&b, &buf, &len);
    tsync__batch_hash(prev, buf, len, h0);
    tsync__batch_sign(sk, b.origin, b.seq, h0, sig);
    cr_assert_eq(tsync__batch_verify(pk, b.origin, b.seq, h0, sig), 0);
    int decoded = 0, refused = 0;
    for (size_t i = 0; i < len; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            uint8_t *c = malloc(len);
            memcpy(c, buf, len);
            c[i] ^= masks[m];
            tsync__arena a = {0};
            int rc = tsync__batch_decode(c, len, &d, &a, err);
            if (rc == 0) {
                decoded++;
                /* It decoded into some other batch: its bytes, hence its hash, differ, and the
                 * original signature does not cover it. */
                cr_assert_not(batch_eq(&b, &d), "byte %zu ^ 0x%02x decodes to the same batch", i,
                              masks[m]);
                uint8_t *again;
                size_t len2;
                encode_ok(&d, &again, &len2);
                if (!(len2 == len && memcmp(again, c, len) == 0)) {
                    for (size_t q = 0; q < len2; q++) fprintf(stderr, "%02x", again[q]);
                    fprintf(stderr, "\n");
                    for (size_t q = 0; q < len; q++) fprintf(stderr, "%02x", c[q]);
                    fprintf(stderr, "\n");
                }
                cr_assert(len2 == len && memcmp(again, c, len) == 0, "byte %zu: not canonical", i);
                free(again);
                tsync__batch_hash(prev, c, len, h);
                cr_assert_neq(memcmp(h, h0, 32), 0);
                cr_assert_neq(tsync__batch_verify(pk, d.origin, d.seq, h, sig), 0);
            } else {
                refused++;
                cr_assert(rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION);
                cr_assert_neq(err[0], '\0');
            }
            tsync__arena_free(&a);
            free(c);
        }
    }
    cr_assert_gt(refused, 0);
    cr_log_info("flips: %d refused, %d decoded to another batch", refused, decoded);
    free(buf);
}

/* ---------------------------------------------------------------- hand-made bodies */

/* Each value breaks one rule of the format in an otherwise valid body. */
enum brk {
    B_NONE,
    B_FORMAT2,
    B_TOP8,
    B_TOP_NOT_ARRAY,
    B_ORIGIN_STR,
    B_ORIGIN_15,
    B_SEQ0,
    B_SEQ_NEG,
    B_SEQ_NONCANON,
    B_HI_LT_LO,
    B_SITES_EMPTY,
    B_SITE0_NOT_ORIGIN,
    B_SITE_17,
    B_DEP_SITE_OOR,
    B_DEP_SEQ0,
    B_DEP_LEN3,
    B_TABLE_NAME_BIN,
    B_TABLE_LEN5,
    B_COLNAME_INT,
    B_NPK0,
    B_NPK5,
    B_NPK_GT_NCOLS,
    B_NCOLS64,
    B_COUNTER_OOR,
    B_COUNTER_KEY,
    B_COUNTER_DUP,
    B_ROW_LEN6,
    B_ROW_MAP,
    B_TABLE_OOR,
    B_PK_LEN,
    B_PK_NULL,
    B_PK_ARRAY,
    B_HLC_OFF_OOR,
    B_FLAGS4,
    B_RMV_NO_DEL,
    B_RMV_SITE_OOR,
    B_RMV_HLC_STR,
    B_COL_OOR,
    B_COL_KEY,
    B_COL_DUP,
    B_VAL_FLOAT32,
    B_VAL_BOOL,
    B_VAL_EXT,
    B_VAL_UINT_BIG,
    B_VAL_INT_NONCANON,
    B_OLD_SITE_OOR,
    B_OLD_SITE_NO_HLC,
    B_CTR_NOT_COUNTER,
    B_CTR_DUP,
    B_CTR_P_NEG,
    B_STR_NONCANON,
    B_ARRAY_NONCANON,
    B_TRAILING,
    B_COUNT
};

static void raw(msgpack_sbuffer *sb, const char *bytes, size_t n)
{
    msgpack_sbuffer_write(sb, bytes, n);
}

static void pstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void make_body(enum brk k, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    uint8_t origin[16], other[16];
    memset(origin, 0xa0, 16);
    memset(other, 0x51, 16);
    const uint64_t lo = 1000ULL << 16;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);

    if (k == B_TOP_NOT_ARRAY) {
        msgpack_pack_map(&pk, 0);
        return;
    }
    msgpack_pack_array(&pk, k == B_TOP8 ? 8 : 9);
    msgpack_pack_uint32(&pk, k == B_FORMAT2 ? 2 : 1);
    if (k == B_ORIGIN_STR)
        msgpack_pack_str_with_body(&pk, origin, 16);
    else
        msgpack_pack_bin_with_body(&pk, origin, k == B_ORIGIN_15 ? 15 : 16);
    if (k == B_SEQ_NEG)
        msgpack_pack_int64(&pk, -5);
    else if (k == B_SEQ_NONCANON)
        raw(sb, "\xcd\x00\x05", 3);
    else
        msgpack_pack_uint64(&pk, k == B_SEQ0 ? 0 : 5);
    msgpack_pack_uint64(&pk, lo);
    msgpack_pack_uint64(&pk, k == B_HI_LT_LO ? lo - 1 : lo + 100);
    if (k == B_TOP8) return;

    /* sites */
    if (k == B_SITES_EMPTY) {
        msgpack_pack_array(&pk, 0);
    } else {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_bin_with_body(&pk, k == B_SITE0_NOT_ORIGIN ? other : origin, 16);
        if (k == B_SITE_17) {
            uint8_t s17[17] = {0};
            msgpack_pack_bin_with_body(&pk, s17, 17);
        } else {
            msgpack_pack_bin_with_body(&pk, other, 16);
        }
    }
    /* deps */
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, k == B_DEP_LEN3 ? 3 : 2);
    msgpack_pack_uint32(&pk, k == B_DEP_SITE_OOR ? 2 : 1);
    msgpack_pack_uint64(&pk, k == B_DEP_SEQ0 ? 0 : 2);
    if (k == B_DEP_LEN3) msgpack_pack_uint64(&pk, 2);
    /* tables: products(id, name, stock), key 1, counters [stock] */
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, k == B_TABLE_LEN5 ? 5 : 4);
    if (k == B_TABLE_NAME_BIN)
        msgpack_pack_bin_with_body(&pk, "products", 8);
    else if (k == B_STR_NONCANON)
        raw(sb, "\xd9\x08products", 10);
    else
        pstr(&pk, "products");
    if (k == B_NCOLS64) {
        msgpack_pack_array(&pk, 64);
        for (int i = 0; i < 64; i++) pstr(&pk, "c");
    } else {
        msgpack_pack_array(&pk, 3);
        pstr(&pk, "id");
        if (k == B_COLNAME_INT)
            msgpack_pack_uint32(&pk, 1);
        else
            pstr(&pk, "name");
        pstr(&pk, "stock");
    }
    msgpack_pack_uint32(&pk, k == B_NPK0 ? 0 : k == B_NPK5 ? 5 : k == B_NPK_GT_NCOLS ? 4 : 1);
    if (k == B_COUNTER_DUP) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, 2);
        msgpack_pack_uint32(&pk, 2);
    } else {
        msgpack_pack_array(&pk, 1);
        msgpack_pack_uint32(&pk, k == B_COUNTER_OOR ? 3 : k == B_COUNTER_KEY ? 0 : 2);
    }
    if (k == B_TABLE_LEN5) msgpack_pack_nil(&pk);

    /* rows */
    if (k == B_ARRAY_NONCANON)
        raw(sb, "\xdc\x00\x02", 3);
    else
        msgpack_pack_array(&pk, 2);
    /* row 0: an add with a column and a counter */
    if (k == B_ROW_MAP) {
        msgpack_pack_map(&pk, 0);
    } else {
        msgpack_pack_array(&pk, k == B_ROW_LEN6 ? 6 : 7);
        msgpack_pack_uint32(&pk, k == B_TABLE_OOR ? 1 : 0);
        if (k == B_PK_ARRAY) {
            msgpack_pack_array(&pk, 1);
            msgpack_pack_array(&pk, 0);
        } else {
            msgpack_pack_array(&pk, k == B_PK_LEN ? 2 : 1);
            if (k == B_PK_NULL)
                msgpack_pack_nil(&pk);
            else
                pstr(&pk, "p1");
            if (k == B_PK_LEN) pstr(&pk, "p1b");
        }
        msgpack_pack_uint64(&pk, k == B_HLC_OFF_OOR ? 101 : 10);
        msgpack_pack_uint32(&pk, k == B_FLAGS4 ? 5 : 1);
        if (k == B_RMV_NO_DEL) {
            msgpack_pack_array(&pk, 1);
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint32(&pk, 1);
            msgpack_pack_uint64(&pk, 3);
        } else {
            msgpack_pack_array(&pk, 0);
        }
        if (k != B_ROW_LEN6) {
            msgpack_pack_array(&pk, k == B_COL_DUP ? 2 : 1);
            for (int rep = 0; rep < (k == B_COL_DUP ? 2 : 1); rep++) {
                msgpack_pack_array(&pk, 4);
                msgpack_pack_uint32(&pk, k == B_COL_OOR ? 9 : k == B_COL_KEY ? 0 : 1);
                switch (k) {
                case B_VAL_FLOAT32:
                    msgpack_pack_float(&pk, 1.5f);
                    break;
                case B_VAL_BOOL:
                    msgpack_pack_true(&pk);
                    break;
                case B_VAL_EXT:
                    msgpack_pack_ext(&pk, 1, 1);
                    msgpack_pack_ext_body(&pk, "x", 1);
                    break;
                case B_VAL_UINT_BIG:
                    msgpack_pack_uint64(&pk, (uint64_t)1 << 63);
                    break;
                case B_VAL_INT_NONCANON:
                    raw(sb, "\xd0\x05", 2);
                    break;
                default:
                    pstr(&pk, "Tea");
                    break;
                }
                msgpack_pack_uint64(&pk, k == B_OLD_SITE_NO_HLC ? 0 : 77);
                msgpack_pack_uint32(&pk, k == B_OLD_SITE_OOR ? 2 : 1);
            }
        }
        if (k == B_CTR_DUP) {
            msgpack_pack_array(&pk, 2);
        } else {
            msgpack_pack_array(&pk, 1);
        }
        for (int rep = 0; rep < (k == B_CTR_DUP ? 2 : 1); rep++) {
            msgpack_pack_array(&pk, 3);
            msgpack_pack_uint32(&pk, k == B_CTR_NOT_COUNTER ? 1 : 2);
            if (k == B_CTR_P_NEG)
                msgpack_pack_int64(&pk, -9);
            else
                msgpack_pack_uint64(&pk, 9);
            msgpack_pack_uint64(&pk, 1);
        }
    }
    /* row 1: a delete */
    msgpack_pack_array(&pk, 7);
    msgpack_pack_uint32(&pk, 0);
    msgpack_pack_array(&pk, 1);
    pstr(&pk, "p2");
    msgpack_pack_uint64(&pk, 20);
    msgpack_pack_uint32(&pk, TSYNC__ROW_DEL);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint32(&pk, k == B_RMV_SITE_OOR ? 7 : 1);
    if (k == B_RMV_HLC_STR)
        pstr(&pk, "77");
    else
        msgpack_pack_uint64(&pk, 77);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_array(&pk, 0);
    if (k == B_TRAILING) msgpack_pack_nil(&pk);
}

Test(crdt_batch, hand_made_valid_body_decodes)
{
    msgpack_sbuffer sb;
    tsync__batch d;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    make_body(B_NONE, &sb);
    seed_file("handmade", (const uint8_t *)sb.data, sb.size);
    cr_assert_eq(tsync__batch_decode((const uint8_t *)sb.data, sb.size, &d, &a, err), 0, "%s", err);
    cr_assert_eq(d.nrows, 2);
    cr_assert_eq(d.rows[0].hlc, (1000ULL << 16) + 10);
    cr_assert_eq(d.rows[1].nrmv, 1);
    cr_assert_eq(d.deps[0].seq, 2);
    msgpack_sbuffer_destroy(&sb);
    tsync__arena_free(&a);
}

Test(crdt_batch, each_broken_rule_is_refused)
{
    for (int k = B_NONE + 1; k < B_COUNT; k++) {
        msgpack_sbuffer sb;
        tsync__batch d;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        make_body((enum brk)k, &sb);
        int rc = tsync__batch_decode((const uint8_t *)sb.data, sb.size, &d, &a, err);
        int want = k == B_FORMAT2 ? TSYNC_EVERSION : TSYNC_ECORRUPT;
        cr_assert_eq(rc, want, "case %d: rc %d (%s)", k, rc, err);
        cr_assert_eq(strncmp(err, "batch body: ", 12), 0, "case %d: %s", k, err);
        cr_assert_null(strchr(err, '\n'));
        cr_assert_eq(d.nrows, 0); /* nothing half-decoded is left behind */
        cr_log_info("case %d: %s", k, err);
        msgpack_sbuffer_destroy(&sb);
        tsync__arena_free(&a);
    }
}

static void expect_msg(enum brk k, const char *want)
{
    msgpack_sbuffer sb;
    tsync__batch d;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    make_body(k, &sb);
    cr_assert_neq(tsync__batch_decode((const uint8_t *)sb.data, sb.size, &d, &a, err), 0);
    cr_assert(strstr(err, want), "case %d: '%s' lacks '%s'", k, err, want);
    msgpack_sbuffer_destroy(&sb);
    tsync__arena_free(&a);
}

Test(crdt_batch, messages_name_what_is_wrong)
{
    expect_msg(B_COL_OOR, "batch body: row 0: col entry 0: column index 9 out of range for "
                          "table 'products'");
    expect_msg(B_FORMAT2, "format 2");
    expect_msg(B_ORIGIN_STR, "origin: expected bin, got str");
    expect_msg(B_SEQ_NONCANON, "non-canonical");
    expect_msg(B_SITE0_NOT_ORIGIN, "sites[0] is not the origin");
    expect_msg(B_RMV_SITE_OOR, "row 1: rmv entry 0: site index 7 out of range");
    expect_msg(B_VAL_FLOAT32, "expected value, got float32");
    expect_msg(B_VAL_UINT_BIG, "INT64_MAX");
    expect_msg(B_PK_LEN, "table 'products' has 1 key columns");
    expect_msg(B_CTR_NOT_COUNTER, "not a counter of table 'products'");
    expect_msg(B_TRAILING, "1 trailing bytes");
    expect_msg(B_HLC_OFF_OOR, "above hlc_hi");
}

Test(crdt_batch, oversize_and_empty_inputs)
{
    tsync__batch d;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    static const uint8_t tiny[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(tsync__batch_decode(tiny, sizeof tiny, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert_eq(tsync__batch_decode(NULL, 0, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert_eq(tsync__batch_decode(tiny, (size_t)TSYNC__BATCH_MAX_BYTES + 1, &d, &a, err),
                 TSYNC_ECORRUPT); /* refused on length alone, before reading */
    cr_assert_null(a.head);

    /* A row list declaring 150 rows with 200 bytes left (one byte each would fit, nine do not):
     * refused before any row is allocated. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint8_t origin[16] = {1};
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 9);
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_bin_with_body(&pk, origin, 16);
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_uint32(&pk, 0);
    msgpack_pack_uint32(&pk, 0);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_bin_with_body(&pk, origin, 16);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_array(&pk, 150);
    for (int i = 0; i < 200; i++) msgpack_pack_nil(&pk);
    cr_assert_eq(tsync__batch_decode((const uint8_t *)sb.data, sb.size, &d, &a, err),
                 TSYNC_ECORRUPT);
    cr_assert(strstr(err, "rows: 150 entries cannot fit"), "%s", err);
    msgpack_sbuffer_destroy(&sb);
    tsync__arena_free(&a);
}

/* ---------------------------------------------------------------- encoder checks */

Test(crdt_batch, encoder_refuses_broken_invariants)
{
    uint8_t *buf = (uint8_t *)1;
    size_t len = 1;
    char err[TSYNC__ERRLEN];
    tsync__batch b;
    uint32_t bad_ctr[] = {0};
    uint32_t dup_ctr[] = {3, 3};
#define EXPECT_EINVAL(setup)                                                                       \
    do {                                                                                           \
        sample(&b);                                                                                \
        setup;                                                                                     \
        int rc_ = tsync__batch_encode(&b, &buf, &len, err);                                        \
        cr_assert_eq(rc_, TSYNC_EINVAL, "%s: rc %d", #setup, rc_);                                 \
        cr_assert_null(buf);                                                                       \
        cr_assert_eq(strncmp(err, "batch: ", 7), 0, "%s", err);                                    \
    } while (0)
    EXPECT_EINVAL(b.format = 2);
    EXPECT_EINVAL(b.seq = 0);
    EXPECT_EINVAL(b.hlc_hi = b.hlc_lo - 1);
    EXPECT_EINVAL(b.origin[3] ^= 1);
    EXPECT_EINVAL(b.nsites = 0);
    EXPECT_EINVAL(DEPS[1].site = 3);
    EXPECT_EINVAL(DEPS[0].seq = 0);
    EXPECT_EINVAL(TABLES[0].npk = 0);
    EXPECT_EINVAL(TABLES[1].npk = 5);
    EXPECT_EINVAL(TABLES[1].ncols = 64);
    EXPECT_EINVAL(TABLES[0].counters = bad_ctr);
    EXPECT_EINVAL((TABLES[0].counters = dup_ctr, TABLES[0].ncounters = 2));
    EXPECT_EINVAL(ROWS[0].table = 2);
    EXPECT_EINVAL(ROWS[0].hlc = LO - 1);
    EXPECT_EINVAL(ROWS[3].hlc = LO + 100001);
    EXPECT_EINVAL(ROWS[0].flags = 4);
    EXPECT_EINVAL(ROWS[1].flags = TSYNC__ROW_ADD);
    EXPECT_EINVAL(RMV1[1].site = 3);
    EXPECT_EINVAL(COLS0[0].col = 5);
    EXPECT_EINVAL(COLS0[0].col = 0);
    EXPECT_EINVAL(COLS0[1].col = 1);
    EXPECT_EINVAL(COLS0[1].old_site = 3);
    EXPECT_EINVAL(COLS0[0].old_site = 1);
    EXPECT_EINVAL(COLS0[0].val.type = 9);
    EXPECT_EINVAL(COLS0[0].val.p = NULL);
    EXPECT_EINVAL(CTRS0[0].col = 2);
    EXPECT_EINVAL(ROWS[0].pk[0].type = TSYNC__V_NULL);
    EXPECT_EINVAL(ROWS[2].ctrs = CTRS0; ROWS[2].nctrs = 1);
#undef EXPECT_EINVAL
    cr_assert(strstr(err, "not a counter of 'sale_lines'"), "%s", err);
}

/* ---------------------------------------------------------------- peek, hash, sign, site id */

Test(crdt_batch, peek_reads_origin_and_seq)
{
    tsync__batch b;
    uint8_t *buf, origin[16];
    size_t len;
    uint64_t seq = 0;
    sample(&b);
    encode_ok(&b, &buf, &len);
    cr_assert_eq(tsync__batch_peek(buf, len, origin, &seq), 0);
    cr_assert_eq(seq, 42);
    cr_assert_arr_eq(origin, b.origin, 16);
    cr_assert_eq(tsync__batch_peek(buf, 10, origin, &seq), TSYNC_ECORRUPT);
    cr_assert_eq(tsync__batch_peek(NULL, 0, origin, &seq), TSYNC_ECORRUPT);
    free(buf);
    msgpack_sbuffer sb;
    make_body(B_FORMAT2, &sb);
    cr_assert_eq(tsync__batch_peek((const uint8_t *)sb.data, sb.size, origin, &seq),
                 TSYNC_EVERSION);
    msgpack_sbuffer_destroy(&sb);
    make_body(B_SEQ0, &sb);
    cr_assert_eq(tsync__batch_peek((const uint8_t *)sb.data, sb.size, origin, &seq),
                 TSYNC_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);
}

Test(crdt_batch, hash_is_blake2b_of_prev_and_body)
{
    uint8_t prev[32], body[100], h[32], ref[32], cat[132];
    for (int i = 0; i < 32; i++) prev[i] = (uint8_t)i;
    for (int i = 0; i < 100; i++) body[i] = (uint8_t)(i * 7);
    tsync__batch_hash(prev, body, sizeof body, h);
    memcpy(cat, prev, 32);
    memcpy(cat + 32, body, 100);
    crypto_generichash(ref, 32, cat, sizeof cat, NULL, 0);
    cr_assert_arr_eq(h, ref, 32);
    prev[0] ^= 1; /* the chain: a different predecessor gives a different hash */
    tsync__batch_hash(prev, body, sizeof body, ref);
    cr_assert_neq(memcmp(h, ref, 32), 0);
}

Test(crdt_batch, sign_verify_round_trip_and_tamper)
{
    uint8_t pk[32], sk[64], pk2[32], sk2[64], origin[16], hash[32], sig[64];
    cr_assert_geq(sodium_init(), 0);
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    memset(origin, 0x3c, 16);
    memset(hash, 0x99, 32);
    tsync__batch_sign(sk, origin, 17, hash, sig);
    cr_assert_eq(tsync__batch_verify(pk, origin, 17, hash, sig), 0);
    cr_assert_eq(tsync__batch_verify(pk2, origin, 17, hash, sig), TSYNC_EBADSIG);
    cr_assert_eq(tsync__batch_verify(pk, origin, 18, hash, sig), TSYNC_EBADSIG);
    cr_assert_eq(tsync__batch_verify(pk, origin, 17 + (1ULL << 56), hash, sig), TSYNC_EBADSIG);
    hash[31] ^= 1;
    cr_assert_eq(tsync__batch_verify(pk, origin, 17, hash, sig), TSYNC_EBADSIG);
    hash[31] ^= 1;
    origin[0] ^= 1;
    cr_assert_eq(tsync__batch_verify(pk, origin, 17, hash, sig), TSYNC_EBADSIG);
    origin[0] ^= 1;
    sig[5] ^= 1;
    cr_assert_eq(tsync__batch_verify(pk, origin, 17, hash, sig), TSYNC_EBADSIG);
    sig[5] ^= 1;
    cr_assert_eq(tsync__batch_verify(pk, origin, 17, hash, sig), 0);

    /* The signed message is exactly "tsync-batch-v1" || origin || seq (big-endian) || hash. */
    uint8_t m[14 + 16 + 8 + 32];
    memcpy(m, "tsync-batch-v1", 14);
    memcpy(m + 14, origin, 16);
    memcpy(m + 30, "\0\0\0\0\0\0\0\x11", 8);
    memcpy(m + 38, hash, 32);
    cr_assert_eq(crypto_sign_verify_detached(sig, m, sizeof m, pk), 0);
}

Test(crdt_batch, site_id_is_deterministic_blake2b_128)
{
    uint8_t pk[32], inc[16], a[16], b[16], ref[16], cat[48];
    memset(pk, 0x42, 32);
    memset(inc, 0x17, 16);
    tsync__site_id(pk, inc, a);
    tsync__site_id(pk, inc, b);
    cr_assert_arr_eq(a, b, 16);
    memcpy(cat, pk, 32);
    memcpy(cat + 32, inc, 16);
    crypto_generichash(ref, 16, cat, 48, NULL, 0);
    cr_assert_arr_eq(a, ref, 16);
    inc[15] ^= 1; /* a new incarnation is a new site */
    tsync__site_id(pk, inc, b);
    cr_assert_neq(memcmp(a, b, 16), 0);
}
