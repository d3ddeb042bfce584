/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_relay_codec.c — the till <-> relay messages (codec/relay.c): every type
 * round-trips to the same bytes; every prefix of a message, a trailing byte, a non-canonical
 * int, each field out of its rules (seq ranges, unmerged RHAVE ranges, empty RPUT, zero RGET
 * fields, RERR code and line, record counts and sizes) and an unknown type are refused with one
 * line; seeded random byte flips either are refused or decode to a message that re-encodes to the
 * flipped bytes (the decoder is canonical).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "codec/relay.h"
#include "tests/lib/helpers.h"
#include "tests/lib/relay_codec_util.h"

static uint8_t blob_a[] = "envelope one: opaque bytes";
static uint8_t blob_b[300];
static uint8_t rec1[] = {0x93, 1, 2, 3}, rec2[] = {9, 9};

/* One message of each type, each with lists of more than one entry where it has lists. */
static size_t samples(tsync__rmsg *m, tsync__renv *envs, tsync__rblob *recs,
                      tsync__rhave_origin *orig, tsync__rrange *rg)
{
    memset(blob_b, 0xab, sizeof blob_b);
    memset(m, 0, 8 * sizeof *m);
    envs[0] = (tsync__renv){{1}, 1, 5, blob_a, sizeof blob_a};
    envs[1] = (tsync__renv){{2}, 7, 7, blob_b, sizeof blob_b};
    recs[0] = (tsync__rblob){rec1, sizeof rec1};
    recs[1] = (tsync__rblob){rec2, sizeof rec2};
    rg[0] = (tsync__rrange){1, 5};
    rg[1] = (tsync__rrange){7, 300000};
    rg[2] = (tsync__rrange){1, 1};
    memset(orig, 0, 2 * sizeof *orig);
    orig[0].origin[0] = 1;
    orig[0].nranges = 2;
    orig[0].ranges = rg;
    orig[1].origin[0] = 2;
    orig[1].nranges = 1;
    orig[1].ranges = rg + 2;
    m[0] = (tsync__rmsg){.type = TSYNC__R_HELLO, .version = 1, .nrecs = 2, .recs = recs};
    memset(m[0].shop_id, 0x5a, sizeof m[0].shop_id);
    m[1] = (tsync__rmsg){.type = TSYNC__R_HAVE, .norigins = 2, .origins = orig};
    m[2] = (tsync__rmsg){.type = TSYNC__R_PUT, .req = 70000, .nenvs = 2, .envs = envs};
    m[3] = (tsync__rmsg){.type = TSYNC__R_GET, .req = 3, .from_seq = 6, .max_bytes = 1 << 20};
    m[3].origin[0] = 1;
    m[4] = (tsync__rmsg){.type = TSYNC__R_ENV, .req = 3, .nenvs = 2, .envs = envs, .more = true};
    m[5] = (tsync__rmsg){.type = TSYNC__R_ACK, .req = 9, .stored = 2, .dup = 1};
    m[6] = (tsync__rmsg){
        .type = TSYNC__R_ERR, .req = 9, .code = 7, .line = "quota: 5 MB over", .line_len = 16};
    m[7] = (tsync__rmsg){.type = TSYNC__R_TRUST, .req = 4, .nrecs = 1, .recs = recs};
    return 8;
}

Test(relay_codec, round_trip_every_type)
{
    tsync__rmsg m[8], d;
    tsync__renv envs[2];
    tsync__rblob recs[2];
    tsync__rhave_origin orig[2];
    tsync__rrange rg[3];
    size_t n = samples(m, envs, recs, orig, rg);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = rcu_enc(&m[i], &len);
        char err[TSYNC__ERRLEN];
        tsync__arena a = {0};
        cr_assert_eq(rcu_dec(b, len, &d, &a, err), 0, "%s", err);
        cr_assert_eq(d.type, m[i].type);
        cr_assert_eq(d.req, m[i].req);
        if (d.type == TSYNC__R_PUT || d.type == TSYNC__R_ENV) {
            cr_assert_eq(d.nenvs, 2);
            cr_assert_eq(d.envs[1].len, sizeof blob_b);
            cr_assert(memcmp(d.envs[1].bytes, blob_b, sizeof blob_b) == 0);
            cr_assert_eq(d.envs[0].first_seq, 1);
            cr_assert_eq(d.envs[0].last_seq, 5);
            cr_assert_eq(d.more, m[i].more);
        }
        if (d.type == TSYNC__R_HAVE) {
            cr_assert_eq(d.norigins, 2);
            cr_assert_eq(d.origins[0].ranges[1].last, 300000);
        }
        if (d.type == TSYNC__R_HELLO) {
            cr_assert_eq(d.version, 1);
            cr_assert_eq(d.shop_id[15], 0x5a);
            cr_assert_eq(d.nrecs, 2);
            cr_assert(memcmp(d.recs[0].p, rec1, sizeof rec1) == 0);
        }
        if (d.type == TSYNC__R_ERR) {
            cr_assert_eq(d.code, 7);
            cr_assert(d.line_len == 16 && memcmp(d.line, "quota: 5 MB over", 16) == 0);
        }
        if (d.type == TSYNC__R_GET) cr_assert(d.from_seq == 6 && d.max_bytes == (1 << 20));
        if (d.type == TSYNC__R_ACK) cr_assert(d.stored == 2 && d.dup == 1);
        tsync__arena_free(&a);
        rcu_refuses_prefixes_and_trailing(b, len, m[i].type);
        free(b);
    }
}

/* Encoding refuses, with one line, each field out of its rules. */
Test(relay_codec, encoder_refuses_bad_fields)
{
    tsync__rmsg m[8];
    tsync__renv envs[2];
    tsync__rblob recs[2];
    tsync__rhave_origin orig[2];
    tsync__rrange rg[3];
    char err[TSYNC__ERRLEN];
    uint8_t *out;
    size_t len;
#define REFUSED(msg, word)                                                                         \
    do {                                                                                           \
        cr_assert_eq(tsync__relay_encode(&(msg), &out, &len, err), TSYNC_EINVAL);                  \
        cr_assert(strstr(err, word), "%s", err);                                                   \
        samples(m, envs, recs, orig, rg);                                                          \
    } while (0)
    samples(m, envs, recs, orig, rg);
    envs[0].first_seq = 0;
    REFUSED(m[2], "seq range");
    envs[1].last_seq = 6;
    REFUSED(m[4], "seq range");
    envs[0].len = 0;
    REFUSED(m[2], "bytes");
    envs[0].len = TSYNC__RELAY_ENV_MAX + 1;
    REFUSED(m[2], "bytes");
    m[2].nenvs = 0;
    REFUSED(m[2], "no envelope");
    rg[1].first = 6; /* touches 1..5: not merged */
    REFUSED(m[1], "merged");
    rg[0].first = 0;
    REFUSED(m[1], "range 0");
    orig[1].origin[0] = 1;
    REFUSED(m[1], "not after");
    orig[0].nranges = 0;
    REFUSED(m[1], "no range");
    m[3].from_seq = 0;
    REFUSED(m[3], "from seq");
    m[3].max_bytes = 0;
    REFUSED(m[3], "max bytes");
    m[6].code = 0;
    REFUSED(m[6], "code");
    m[6].code = 256;
    REFUSED(m[6], "code");
    m[6].line = "two\nlines";
    m[6].line_len = 9;
    REFUSED(m[6], "line");
    m[6].line_len = 0;
    REFUSED(m[6], "line");
    m[0].nrecs = 0;
    REFUSED(m[0], "records");
    m[0].nrecs = TSYNC__RELAY_CHAIN_MAX + 1;
    REFUSED(m[0], "records");
    recs[1].len = TSYNC__RELAY_REC_MAX + 1;
    REFUSED(m[0], "record 1");
    m[7].nrecs = 0;
    REFUSED(m[7], "records");
    m[0].type = 99;
    REFUSED(m[0], "unknown");
#undef REFUSED
}

/* Hand-made bytes the encoder cannot write are refused by the decoder. */
Test(relay_codec, decoder_refuses_malformed)
{
    static const struct {
        const char *what;
        uint8_t b[32];
        size_t n;
        const char *word;
    } cases[] = {
        {"not an array", {0x01}, 1, "message"},
        {"unknown type", {0x92, 0x63, 0x00}, 3, "unknown type"},
        {"type 0", {0x92, 0x00, 0x00}, 3, "unknown type"},
        {"ACK too short", {0x93, 0x06, 0x01, 0x01}, 4, "items"},
        {"ACK non-canonical", {0x94, 0x06, 0xcc, 0x01, 0x01, 0x01}, 6, "ACK"},
        {"ACK negative", {0x94, 0x06, 0xff, 0x01, 0x01}, 5, "RACK"},
        {"GET zero from",
         {0x95, 0x04, 0x01, 0xc4, 0x10, 1,  2,  3,  4,  5,    6,   7,
          8,    9,    10,   11,   12,   13, 14, 15, 16, 0x00, 0x01},
         23,
         "from seq"},
        {"GET short origin", {0x95, 0x04, 0x01, 0xc4, 0x02, 1, 2, 0x01, 0x01}, 9, "origin"},
        {"ERR str as bin", {0x94, 0x07, 0x00, 0x01, 0xc4, 0x01, 0x41}, 7, "line"},
        {"ERR code 0", {0x94, 0x07, 0x00, 0x00, 0xa1, 0x41}, 6, "code"},
        {"ERR control char", {0x94, 0x07, 0x00, 0x01, 0xa1, 0x07}, 6, "line"},
        {"ENV more not bool", {0x94, 0x05, 0x00, 0x90, 0x01}, 5, "more"},
        {"PUT empty", {0x93, 0x03, 0x00, 0x90}, 4, "no envelope"},
        {"PUT huge count", {0x93, 0x03, 0x00, 0xdd, 0x7f, 0xff, 0xff, 0xff}, 8, "envelopes"},
        {"HELLO no records",
         {0x94, 0x01, 0x01, 0xc4, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x90},
         22,
         "records"},
        {"TRUST record not bin", {0x93, 0x08, 0x00, 0x91, 0x01}, 5, "record"},
        {"HAVE range of 3",
         {0x92, 0x02, 0x91, 0x92, 0xc4, 0x10, 1,  2,  3,    4,    5,    6,    7,   8,
          9,    10,   11,   12,   13,   14,   15, 16, 0x91, 0x93, 0x01, 0x02, 0x03},
         27,
         "array of 2"},
        {"HAVE count past the end",
         {0x92, 0x02, 0x91, 0x92, 0xc4, 0x10, 1,  2,  3,  4,  5,    6,
          7,    8,    9,    10,   11,   12,   13, 14, 15, 16, 0x91, 0x01},
         24,
         "cannot fit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tsync__rmsg m;
        char err[TSYNC__ERRLEN];
        tsync__arena a = {0};
        int rc = rcu_dec(cases[i].b, cases[i].n, &m, &a, err);
        tsync__arena_free(&a);
        cr_assert_eq(rc, TSYNC_ECORRUPT, "%s: rc %d", cases[i].what, rc);
        cr_assert(strstr(err, cases[i].word), "%s: %s", cases[i].what, err);
    }
    char err[TSYNC__ERRLEN];
    tsync__rmsg m;
    tsync__arena a = {0};
    cr_assert_eq(rcu_dec((const uint8_t *)"", 0, &m, &a, err), TSYNC_ECORRUPT);
}

Test(relay_codec, seeded_random_flips)
{
    tsync__rmsg m[8];
    tsync__renv envs[2];
    tsync__rblob recs[2];
    tsync__rhave_origin orig[2];
    tsync__rrange rg[3];
    size_t n = samples(m, envs, recs, orig, rg);
    rcu_random_flips(m, n, 4000, "relay_codec.seeded_random_flips");
}

Test(relay_codec, reason_names)
{
    cr_assert_str_eq(tsync__rerr_name(TSYNC__RERR_QUOTA), "quota");
    cr_assert_str_eq(tsync__rerr_name(TSYNC__RERR_REVOKED), "revoked");
    cr_assert_null(tsync__rerr_name(0));
    cr_assert_null(tsync__rerr_name(TSYNC__RERR_MAXCODE + 1));
    for (uint32_t c = 1; c <= TSYNC__RERR_MAXCODE; c++) cr_assert_not_null(tsync__rerr_name(c));
}

/* The fuzz corpus (fuzz/corpus/relay/) is these samples: written when TSYNC_WRITE_CORPUS names a
 * directory, checked to be present and decodable otherwise. */
Test(relay_codec, fuzz_seeds)
{
    tsync__rmsg m[8];
    tsync__renv envs[2];
    tsync__rblob recs[2];
    tsync__rhave_origin orig[2];
    tsync__rrange rg[3];
    size_t n = samples(m, envs, recs, orig, rg);
    rcu_write_seeds(m, n);
}
