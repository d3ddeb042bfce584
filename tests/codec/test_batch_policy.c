/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_batch_policy.c — column policies in the batch body (codec/batch.c, dec.c;
 * docs/DATA_MODEL.md "Formats"): a batch whose table carries policies is format 3 with a fifth
 * field in that table's definition and decodes back to the same policies; a batch without them
 * is format 1 byte for byte as before (what older tills read); a body is canonical only in that
 * pairing (format 1 with a fifth field, or format 3 without a policy, is refused), and bad
 * policies are refused by the encoder and the decoder.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "crdt/crdt.h"

static const char *COLS[] = {"id", "best", "fastest", "owner", "plays"};
static uint32_t LENS[] = {2, 4, 7, 5, 5};
static uint32_t CTRS[] = {4};

/* A batch of one row of table scores; npol of its policies (best max, fastest min, owner review).
 */
static void make(tsync__batch *b, tsync__btable *t, tsync__brow *r, tsync__bcol *c, uint8_t *site,
                 uint32_t *pcols, uint8_t *pols, uint32_t npol)
{
    static const uint32_t pc[] = {1, 2, 3};
    static const uint8_t pp[] = {TSYNC__POLICY_MAX, TSYNC__POLICY_MIN, TSYNC__POLICY_REVIEW};
    memcpy(pcols, pc, sizeof pc);
    memcpy(pols, pp, sizeof pp);
    *t = (tsync__btable){.name = "scores",
                         .name_len = 6,
                         .ncols = 5,
                         .cols = COLS,
                         .col_len = LENS,
                         .npk = 1,
                         .ncounters = 1,
                         .counters = CTRS,
                         .npolicies = npol,
                         .policy_cols = pcols,
                         .policies = pols};
    *c = (tsync__bcol){.col = 1, .val = {.type = TSYNC__V_INT, .i = 70}};
    *r = (tsync__brow){.table = 0, .hlc = 1000, .flags = TSYNC__ROW_ADD, .ncols = 1, .cols = c};
    r->pk[0] = (tsync__val){.type = TSYNC__V_TEXT, .p = "g1", .n = 2};
    memset(site, 0x5a, TSYNC__SITE_BYTES);
    *b = (tsync__batch){.seq = 1,
                        .hlc_lo = 1000,
                        .hlc_hi = 1000,
                        .nsites = 1,
                        .sites = (const uint8_t(*)[TSYNC__SITE_BYTES])site,
                        .ntables = 1,
                        .tables = t,
                        .nrows = 1,
                        .rows = r};
    memcpy(b->origin, site, TSYNC__SITE_BYTES);
}

static uint8_t *encode(uint32_t npol, size_t *len)
{
    tsync__batch b;
    tsync__btable t;
    tsync__brow r;
    tsync__bcol c;
    uint8_t site[TSYNC__SITE_BYTES], pols[3];
    uint32_t pcols[3];
    make(&b, &t, &r, &c, site, pcols, pols, npol);
    uint8_t *out = NULL;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__batch_encode(&b, &out, len, err), 0, "%s", err);
    return out;
}

Test(batch_policy, policies_make_format_2_and_round_trip)
{
    size_t len;
    uint8_t *body = encode(3, &len);
    cr_assert_eq(body[1], TSYNC__BATCH_FORMAT_POLICIES, "the format follows the array header");
    tsync__arena a = {0};
    tsync__batch d;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__batch_decode(body, len, &d, &a, err), 0, "%s", err);
    cr_assert_eq(d.format, TSYNC__BATCH_FORMAT_POLICIES);
    cr_assert_eq(d.tables[0].npolicies, 3);
    for (uint32_t k = 0; k < 3; k++) cr_assert_eq(tsync__btable_policy(&d.tables[0], k + 1), k + 1);
    cr_assert_eq(tsync__btable_policy(&d.tables[0], 4), 0, "the counter has none");
    /* canonical: re-encoding gives the same bytes */
    uint8_t *re = NULL;
    size_t rlen = 0;
    cr_assert_eq(tsync__batch_encode(&d, &re, &rlen, err), 0, "%s", err);
    cr_assert(rlen == len && memcmp(re, body, len) == 0);
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t seq;
    cr_assert_eq(tsync__batch_peek(body, len, origin, &seq), 0);
    cr_assert_eq(seq, 1);
    /* a format-1 reader's view: the same body called format 1 is refused, not read as LWW */
    body[1] = TSYNC__BATCH_FORMAT;
    cr_assert_eq(tsync__batch_decode(body, len, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "expected an array of 4"), "%s", err);
    free(re), free(body);
    tsync__arena_free(&a);
}

Test(batch_policy, no_policies_stay_format_1)
{
    size_t len;
    uint8_t *body = encode(0, &len);
    cr_assert_eq(body[1], TSYNC__BATCH_FORMAT);
    tsync__arena a = {0};
    tsync__batch d;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__batch_decode(body, len, &d, &a, err), 0, "%s", err);
    /* format 3 without a policy is not canonical */
    body[1] = TSYNC__BATCH_FORMAT_POLICIES;
    cr_assert_eq(tsync__batch_decode(body, len, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "format 3 without a column policy"), "%s", err);
    /* format 2 stays unused (tests use it for "a format this build does not read") */
    body[1] = 2;
    cr_assert_eq(tsync__batch_decode(body, len, &d, &a, err), TSYNC_EVERSION);
    cr_assert(strstr(err, "format 2 is not supported"), "%s", err);
    free(body);
    tsync__arena_free(&a);
}

Test(batch_policy, bad_policies_are_refused)
{
    tsync__batch b;
    tsync__btable t;
    tsync__brow r;
    tsync__bcol c;
    uint8_t site[TSYNC__SITE_BYTES], pols[3];
    uint32_t pcols[3];
    uint8_t *out = NULL;
    size_t len;
    char err[TSYNC__ERRLEN];
    struct {
        uint32_t col;
        uint8_t pol;
    } bad[] = {{0, TSYNC__POLICY_MAX}, {4, TSYNC__POLICY_MIN}, {1, 0}, {1, 4}, {9, 1}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        make(&b, &t, &r, &c, site, pcols, pols, 1);
        pcols[0] = bad[i].col;
        pols[0] = bad[i].pol;
        cr_assert_eq(tsync__batch_encode(&b, &out, &len, err), TSYNC_EINVAL, "case %zu", i);
        cr_assert(strstr(err, "bad policy"), "%s", err);
    }
    make(&b, &t, &r, &c, site, pcols, pols, 3);
    pcols[1] = 1; /* out of order / repeated */
    cr_assert_eq(tsync__batch_encode(&b, &out, &len, err), TSYNC_EINVAL);
    /* the decoder refuses what the encoder would not write: policy 4 patched into a body */
    size_t blen;
    uint8_t *body = encode(1, &blen);
    /* the policy list [[1, 1]] ends the table definition: 0x91 0x92 0x01 0x01 */
    uint8_t *p = NULL;
    for (size_t i = 0; i + 3 < blen && !p; i++)
        if (body[i] == 0x91 && body[i + 1] == 0x92 && body[i + 2] == 1 && body[i + 3] == 1)
            p = body + i;
    cr_assert_not_null(p, "policy list not found");
    p[3] = 4;
    tsync__arena a = {0};
    tsync__batch d;
    cr_assert_eq(tsync__batch_decode(body, blen, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "policy 4 unknown"), "%s", err);
    free(body);
    tsync__arena_free(&a);
}
