/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_codec_mpr_strict.c — what the shared reader (codec/mpk.c) tells a decoder
 * about a failed read: the fault, the kind wanted, the sizes; and the canonical mode every strict
 * decoder (batch, certificate, wire) relies on.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "codec/codec.h"

static tsync__mpr canon(const uint8_t *p, size_t n)
{
    tsync__mpr r;
    tsync__mpr_init(&r, p, n);
    r.canonical = true;
    return r;
}

Test(codec_mpr, faults_say_why)
{
    static const uint8_t str[] = {0xa1, 'x'};
    tsync__mpr r;
    uint64_t u;
    tsync__mpr_init(&r, str, 0);
    cr_assert_not(tsync__mpr_uint(&r, &u));
    cr_assert_eq(r.fault, TSYNC__MPR_END);
    cr_assert_str_eq(r.expected, "uint");
    cr_assert_null(tsync__mpr_found(&r));

    tsync__mpr_init(&r, str, sizeof str);
    cr_assert_not(tsync__mpr_uint(&r, &u));
    cr_assert_eq(r.fault, TSYNC__MPR_TYPE);
    cr_assert_str_eq(tsync__mpr_found(&r), "str");
    cr_assert_eq(tsync__mpr_pos(&r), 0);

    static const uint8_t cut[] = {0xcd, 0x01};
    tsync__mpr_init(&r, cut, sizeof cut);
    cr_assert_not(tsync__mpr_uint(&r, &u));
    cr_assert_eq(r.fault, TSYNC__MPR_SHORT);

    static const uint8_t big[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0};
    int64_t i;
    tsync__mpr_init(&r, big, sizeof big);
    cr_assert_not(tsync__mpr_int(&r, &i));
    cr_assert_eq(r.fault, TSYNC__MPR_RANGE);
    cr_assert_eq(r.p, big);

    /* The first failure is kept: a later read neither succeeds nor overwrites it. */
    cr_assert_not(tsync__mpr_uint(&r, &u));
    cr_assert_eq(r.fault, TSYNC__MPR_RANGE);
}

Test(codec_mpr, binfix_judges_length_before_form)
{
    static const uint8_t long16[] = {0xc5, 0x00, 0x03, 1, 2, 3};
    uint8_t out[4];
    tsync__mpr r = canon(long16, sizeof long16);
    cr_assert_not(tsync__mpr_binfix(&r, out, 4));
    cr_assert_eq(r.fault, TSYNC__MPR_LENGTH);
    cr_assert_eq(r.got, 3);
    cr_assert_eq(r.want, 4);
    r = canon(long16, sizeof long16);
    cr_assert_not(tsync__mpr_binfix(&r, out, 3));
    cr_assert_eq(r.fault, TSYNC__MPR_NONCANON);
    cr_assert_eq(r.got, 6);
    cr_assert_eq(r.want, 5);
    cr_assert_eq(r.p, long16);
    tsync__mpr_init(&r, long16, sizeof long16); /* not canonical: accepted */
    cr_assert(tsync__mpr_binfix(&r, out, 3));
    cr_assert(tsync__mpr_done(&r));
}

Test(codec_mpr, canonical_refuses_every_longer_form)
{
    static const struct {
        uint8_t b[9];
        size_t n;
        int what; /* 0 uint, 1 int, 2 value, 3 array, 4 str, 5 map */
    } longer[] = {
        {{0xcc, 0x05}, 2, 0},
        {{0xcd, 0x00, 0xff}, 3, 0},
        {{0xd0, 0x05}, 2, 1},       /* a non-negative int in a signed form */
        {{0xd0, 0xff}, 2, 1},       /* -1 fits a negative fixint */
        {{0xd1, 0xff, 0x80}, 3, 2}, /* -128 fits int8 */
        {{0xd3, 0, 0, 0, 1, 0, 0, 0, 0}, 9, 2},
        {{0xdc, 0x00, 0x00}, 3, 3},
        {{0xd9, 0x01, 'a'}, 3, 4},
        {{0xde, 0x00, 0x00}, 3, 5},
    };
    for (size_t k = 0; k < sizeof longer / sizeof longer[0]; k++) {
        tsync__mpr r = canon(longer[k].b, longer[k].n);
        uint64_t u;
        int64_t i;
        tsync__val v;
        uint32_t n;
        const char *s;
        bool ok = longer[k].what == 0   ? tsync__mpr_uint(&r, &u)
                  : longer[k].what == 1 ? tsync__mpr_int(&r, &i)
                  : longer[k].what == 2 ? tsync__mpr_value(&r, &v)
                  : longer[k].what == 3 ? tsync__mpr_array(&r, &n)
                  : longer[k].what == 4 ? tsync__mpr_str(&r, &s, &n)
                                        : tsync__mpr_map(&r, &n);
        cr_assert_not(ok, "case %zu", k);
        cr_assert_eq(r.fault, TSYNC__MPR_NONCANON, "case %zu: fault %d", k, r.fault);
        cr_assert_eq(r.got, longer[k].n, "case %zu", k);
        cr_assert_eq(r.p, longer[k].b, "case %zu: stays at the item", k);
        /* The same bytes are fine for a reader that is not canonical. */
        tsync__mpr_init(&r, longer[k].b, longer[k].n);
        ok = longer[k].what == 0   ? tsync__mpr_uint(&r, &u)
             : longer[k].what == 1 ? tsync__mpr_int(&r, &i)
             : longer[k].what == 2 ? tsync__mpr_value(&r, &v)
             : longer[k].what == 3 ? tsync__mpr_array(&r, &n)
             : longer[k].what == 4 ? tsync__mpr_str(&r, &s, &n)
                                   : tsync__mpr_map(&r, &n);
        cr_assert(ok, "case %zu", k);
    }
    static const uint8_t smallest[] = {0x05, 0xcc, 0x80, 0xff, 0xd0, 0x80, 0xcb, 0,   0,
                                       0,    0,    0,    0,    0,    0,    0x91, 0xc0};
    tsync__mpr r = canon(smallest, sizeof smallest);
    uint64_t u;
    int64_t i;
    tsync__val v;
    uint32_t n;
    cr_assert(tsync__mpr_uint(&r, &u) && tsync__mpr_uint(&r, &u) && tsync__mpr_int(&r, &i) &&
              tsync__mpr_int(&r, &i) && tsync__mpr_value(&r, &v) && tsync__mpr_array(&r, &n) &&
              tsync__mpr_value(&r, &v));
    cr_assert(tsync__mpr_done(&r));
}

Test(codec_mpr, lists_are_bounded_by_their_room)
{
    static const uint8_t list[] = {0x93, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0};
    uint32_t n;
    tsync__mpr r;
    tsync__mpr_init(&r, list, sizeof list);
    cr_assert(tsync__mpr_list(&r, &n, 1));
    cr_assert_eq(n, 3);
    tsync__mpr_init(&r, list, sizeof list);
    cr_assert_not(tsync__mpr_list(&r, &n, 2));
    cr_assert_eq(r.fault, TSYNC__MPR_ROOM);
    cr_assert_eq(r.got, 3);
    cr_assert_eq(r.want, 5);
}

Test(codec_mpr, fixarray_is_a_probe)
{
    static const uint8_t msg[] = {0x9f, 0x01};
    uint32_t n;
    tsync__mpr r;
    tsync__mpr_init(&r, msg, sizeof msg);
    cr_assert(tsync__mpr_fixarray(&r, &n)); /* 15 items declared, 1 byte left: not its concern */
    cr_assert_eq(n, 15);
    cr_assert_not(tsync__mpr_fixarray(&r, &n));
    cr_assert(r.ok);
    tsync__mpr_init(&r, msg, sizeof msg);
    cr_assert_not(tsync__mpr_array(&r, &n)); /* the bounded read refuses the same header */
    cr_assert_eq(r.fault, TSYNC__MPR_SHORT);
}
