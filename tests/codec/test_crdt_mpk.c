/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_crdt_mpk.c — the bounded msgpack reader (crdt/mpk.c): every type it reads, every
 * type it refuses, and that no truncated, oversized or trailing input gets through.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <msgpack.h>
#include <string.h>

#include "crdt/crdt.h"

#define R(name, ...)                                                                               \
    static const uint8_t name[] = {__VA_ARGS__};                                                   \
    tsync__mpr r;                                                                                  \
    tsync__mpr_init(&r, name, sizeof name)

Test(crdt_mpk, uints_of_every_width)
{
    static const struct {
        uint8_t b[9];
        size_t n;
        uint64_t v;
    } cases[] = {
        {{0x00}, 1, 0},
        {{0x7f}, 1, 127},
        {{0xcc, 0xff}, 2, 255},
        {{0xcd, 0x12, 0x34}, 3, 0x1234},
        {{0xce, 0xde, 0xad, 0xbe, 0xef}, 5, 0xdeadbeef},
        {{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tsync__mpr r;
        uint64_t v;
        tsync__mpr_init(&r, cases[i].b, cases[i].n);
        cr_assert(tsync__mpr_uint(&r, &v), "case %zu", i);
        cr_assert_eq(v, cases[i].v);
        cr_assert(tsync__mpr_done(&r));
    }
}

Test(crdt_mpk, uint_refuses_other_types)
{
    static const uint8_t bad[] = {0xff, 0xd0, 0xc0, 0xc3, 0xa1, 0x90, 0xcb, 0xc4};
    for (size_t i = 0; i < sizeof bad; i++) {
        uint8_t buf[16] = {bad[i]};
        tsync__mpr r;
        uint64_t v;
        tsync__mpr_init(&r, buf, sizeof buf);
        cr_assert_not(tsync__mpr_uint(&r, &v), "byte 0x%02x", bad[i]);
        cr_assert_not(r.ok);
        cr_assert_eq(r.p, buf); /* stopped at the failing item */
    }
}

Test(crdt_mpk, ints_of_every_width)
{
    static const struct {
        uint8_t b[9];
        size_t n;
        int64_t v;
    } cases[] = {
        {{0xff}, 1, -1},
        {{0xe0}, 1, -32},
        {{0x05}, 1, 5},
        {{0xd0, 0x80}, 2, -128},
        {{0xd1, 0x80, 0x00}, 3, INT16_MIN},
        {{0xd2, 0x80, 0x00, 0x00, 0x00}, 5, INT32_MIN},
        {{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9, INT64_MIN},
        {{0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, INT64_MAX},
        {{0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, INT64_MAX},
        {{0xd0, 0x7f}, 2, 127},
        {{0xcd, 0xff, 0xff}, 3, 65535},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tsync__mpr r;
        int64_t v;
        tsync__mpr_init(&r, cases[i].b, cases[i].n);
        cr_assert(tsync__mpr_int(&r, &v), "case %zu", i);
        cr_assert_eq(v, cases[i].v, "case %zu", i);
        cr_assert(tsync__mpr_done(&r));
    }
}

Test(crdt_mpk, int_refuses_uint_above_int64_max)
{
    R(b, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0);
    int64_t v;
    cr_assert_not(tsync__mpr_int(&r, &v));
    cr_assert_eq(r.p, b);
    uint64_t u;
    tsync__mpr_init(&r, b, sizeof b);
    cr_assert(tsync__mpr_uint(&r, &u));
    cr_assert_eq(u, (uint64_t)1 << 63);
}

Test(crdt_mpk, bool_and_nil)
{
    R(b, 0xc2, 0xc3, 0xc0, 0x01);
    bool v;
    cr_assert(tsync__mpr_bool(&r, &v));
    cr_assert_not(v);
    cr_assert(tsync__mpr_bool(&r, &v));
    cr_assert(v);
    cr_assert(tsync__mpr_nil(&r));
    cr_assert_not(tsync__mpr_nil(&r)); /* a probe: not nil, nothing consumed, still ok */
    cr_assert(r.ok);
    cr_assert_not(tsync__mpr_bool(&r, &v));
    cr_assert_not(r.ok);
}

Test(crdt_mpk, strings_of_every_header)
{
    static uint8_t buf[70000 + 16];
    const char *s;
    uint32_t n;
    tsync__mpr r;
    /* fixstr */
    memcpy(buf,
           "\xa3"
           "abc",
           4);
    tsync__mpr_init(&r, buf, 4);
    cr_assert(tsync__mpr_str(&r, &s, &n));
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(s, "abc", 3), 0);
    cr_assert(tsync__mpr_done(&r));
    /* empty */
    buf[0] = 0xa0;
    tsync__mpr_init(&r, buf, 1);
    cr_assert(tsync__mpr_str(&r, &s, &n));
    cr_assert_eq(n, 0);
    /* str8, str16, str32 */
    buf[0] = 0xd9;
    buf[1] = 200;
    tsync__mpr_init(&r, buf, 202);
    cr_assert(tsync__mpr_str(&r, &s, &n));
    cr_assert_eq(n, 200);
    cr_assert_eq(s, (const char *)buf + 2);
    buf[0] = 0xda;
    buf[1] = 0x01;
    buf[2] = 0x00;
    tsync__mpr_init(&r, buf, 3 + 256);
    cr_assert(tsync__mpr_str(&r, &s, &n));
    cr_assert_eq(n, 256);
    memcpy(buf, "\xdb\x00\x01\x11\x70", 5);
    tsync__mpr_init(&r, buf, 5 + 70000);
    cr_assert(tsync__mpr_str(&r, &s, &n));
    cr_assert_eq(n, 70000);
    cr_assert(tsync__mpr_done(&r));
    /* a bin is not a str */
    memcpy(buf, "\xc4\x01x", 3);
    tsync__mpr_init(&r, buf, 3);
    cr_assert_not(tsync__mpr_str(&r, &s, &n));
}

Test(crdt_mpk, bins_of_every_header)
{
    static uint8_t buf[70000 + 16];
    const uint8_t *p;
    uint32_t n;
    tsync__mpr r;
    memcpy(buf, "\xc4\x00", 2);
    tsync__mpr_init(&r, buf, 2);
    cr_assert(tsync__mpr_bin(&r, &p, &n));
    cr_assert_eq(n, 0);
    memcpy(buf, "\xc5\x01\x00", 3);
    tsync__mpr_init(&r, buf, 3 + 256);
    cr_assert(tsync__mpr_bin(&r, &p, &n));
    cr_assert_eq(n, 256);
    memcpy(buf, "\xc6\x00\x01\x11\x70", 5);
    tsync__mpr_init(&r, buf, 5 + 70000);
    cr_assert(tsync__mpr_bin(&r, &p, &n));
    cr_assert_eq(n, 70000);
    cr_assert_eq(p, buf + 5);
    /* a str is not a bin */
    memcpy(buf, "\xa1x", 2);
    tsync__mpr_init(&r, buf, 2);
    cr_assert_not(tsync__mpr_bin(&r, &p, &n));
}

Test(crdt_mpk, binfix)
{
    R(b, 0xc4, 0x03, 1, 2, 3, 0xc4, 0x02, 1, 2);
    uint8_t out[3];
    cr_assert(tsync__mpr_binfix(&r, out, 3));
    cr_assert_eq(out[2], 3);
    const uint8_t *at = r.p;
    cr_assert_not(tsync__mpr_binfix(&r, out, 3));
    cr_assert_eq(r.p, at);
}

Test(crdt_mpk, arrays_and_maps)
{
    R(b, 0x92, 0x01, 0x02, 0xdc, 0x00, 0x01, 0xc0, 0xdd, 0x00, 0x00, 0x00, 0x00, 0x81, 0x01, 0x02,
      0xde, 0x00, 0x01, 0x03, 0x04, 0xdf, 0x00, 0x00, 0x00, 0x00);
    uint32_t n;
    uint64_t v;
    cr_assert(tsync__mpr_array(&r, &n));
    cr_assert_eq(n, 2);
    cr_assert(tsync__mpr_uint(&r, &v) && tsync__mpr_uint(&r, &v));
    cr_assert(tsync__mpr_array(&r, &n));
    cr_assert_eq(n, 1);
    cr_assert(tsync__mpr_nil(&r));
    cr_assert(tsync__mpr_array(&r, &n));
    cr_assert_eq(n, 0);
    cr_assert(tsync__mpr_map(&r, &n));
    cr_assert_eq(n, 1);
    cr_assert(tsync__mpr_uint(&r, &v) && tsync__mpr_uint(&r, &v));
    cr_assert(tsync__mpr_map(&r, &n));
    cr_assert_eq(n, 1);
    cr_assert(tsync__mpr_uint(&r, &v) && tsync__mpr_uint(&r, &v));
    cr_assert_eq(v, 4);
    cr_assert(tsync__mpr_map(&r, &n));
    cr_assert_eq(n, 0);
    cr_assert(tsync__mpr_done(&r));
}

Test(crdt_mpk, oversize_declared_counts_fail)
{
    /* map32 declaring 170 million pairs in 5 bytes */
    R(b, 0xdf, 0x0a, 0x2c, 0x1c, 0x0a);
    uint32_t n;
    cr_assert_not(tsync__mpr_map(&r, &n));
    static const uint8_t a32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    tsync__mpr_init(&r, a32, sizeof a32);
    cr_assert_not(tsync__mpr_array(&r, &n));
    /* a count equal to the bytes left passes, one more fails; a map needs two bytes a pair */
    static const uint8_t a3[] = {0x93, 1, 2, 3};
    tsync__mpr_init(&r, a3, sizeof a3);
    cr_assert(tsync__mpr_array(&r, &n));
    tsync__mpr_init(&r, a3, 3);
    cr_assert_not(tsync__mpr_array(&r, &n));
    static const uint8_t m2[] = {0x82, 1, 2, 3};
    tsync__mpr_init(&r, m2, sizeof m2);
    cr_assert_not(tsync__mpr_map(&r, &n));
    /* str32 and bin32 declaring 4 GB */
    static const uint8_t s32[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'x'};
    const char *s;
    tsync__mpr_init(&r, s32, sizeof s32);
    cr_assert_not(tsync__mpr_str(&r, &s, &n));
    static const uint8_t b32[] = {0xc6, 0xff, 0xff, 0xff, 0xff, 'x'};
    const uint8_t *p;
    tsync__mpr_init(&r, b32, sizeof b32);
    cr_assert_not(tsync__mpr_bin(&r, &p, &n));
}

Test(crdt_mpk, values)
{
    R(b, 0xc0, 0x2a, 0xd0, 0x9c, 0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18, 0xa2, 'h',
      'i', 0xc4, 0x01, 0x00);
    tsync__val v;
    cr_assert(tsync__mpr_value(&r, &v));
    cr_assert_eq(v.type, TSYNC__V_NULL);
    cr_assert(tsync__mpr_value(&r, &v));
    cr_assert_eq(v.type, TSYNC__V_INT);
    cr_assert_eq(v.i, 42);
    cr_assert(tsync__mpr_value(&r, &v));
    cr_assert_eq(v.i, -100);
    cr_assert(tsync__mpr_value(&r, &v));
    cr_assert_eq(v.type, TSYNC__V_REAL);
    cr_assert_float_eq(v.r, 3.141592653589793, 1e-15);
    cr_assert(tsync__mpr_value(&r, &v));
    cr_assert_eq(v.type, TSYNC__V_TEXT);
    cr_assert_eq(v.n, 2);
    cr_assert_eq(memcmp(v.p, "hi", 2), 0);
    cr_assert(tsync__mpr_value(&r, &v));
    cr_assert_eq(v.type, TSYNC__V_BLOB);
    cr_assert_eq(v.n, 1);
    cr_assert_eq(((const uint8_t *)v.p)[0], 0);
    cr_assert(tsync__mpr_done(&r));
}

Test(crdt_mpk, value_refuses_non_sqlite_types)
{
    static const uint8_t bad[][6] = {
        {0xca, 0x3f, 0x80, 0x00, 0x00}, /* float32 */
        {0xc2},                         /* bool */
        {0xc3},
        {0x90},             /* array */
        {0x80},             /* map */
        {0xd4, 0x01, 0x00}, /* fixext1 */
        {0xc7, 0x00, 0x01}, /* ext8 */
        {0xc1},             /* never used */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tsync__mpr r;
        tsync__val v;
        tsync__mpr_init(&r, bad[i], sizeof bad[i]);
        cr_assert_not(tsync__mpr_value(&r, &v), "case %zu", i);
        cr_assert_not(r.ok);
    }
}

Test(crdt_mpk, errors_are_sticky)
{
    R(b, 0xc0, 0x01);
    uint64_t v;
    cr_assert_not(tsync__mpr_uint(&r, &v));
    cr_assert_not(tsync__mpr_nil(&r)); /* even the probe fails once broken */
    cr_assert_not(tsync__mpr_uint(&r, &v));
    cr_assert_not(tsync__mpr_done(&r));
}

Test(crdt_mpk, trailing_bytes_are_visible)
{
    R(b, 0x01, 0x02);
    uint64_t v;
    cr_assert(tsync__mpr_uint(&r, &v));
    cr_assert_not(tsync__mpr_done(&r));
}

/* Reads a structure of known shape; returns whether it was read completely. */
static bool read_sample(const uint8_t *p, size_t n)
{
    tsync__mpr r;
    tsync__mpr_init(&r, p, n);
    uint32_t cnt, len;
    uint64_t u;
    int64_t i;
    bool b;
    const char *s;
    const uint8_t *bin;
    tsync__val v;
    tsync__mpr_array(&r, &cnt);
    tsync__mpr_uint(&r, &u);
    tsync__mpr_int(&r, &i);
    tsync__mpr_int(&r, &i);
    tsync__mpr_str(&r, &s, &len);
    tsync__mpr_bin(&r, &bin, &len);
    tsync__mpr_bool(&r, &b);
    tsync__mpr_value(&r, &v);
    tsync__mpr_map(&r, &cnt);
    tsync__mpr_str(&r, &s, &len);
    tsync__mpr_uint(&r, &u);
    tsync__mpr_value(&r, &v);
    return tsync__mpr_done(&r);
}

Test(crdt_mpk, truncation_at_every_offset_fails)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 9);
    msgpack_pack_uint64(&pk, 1234567890123ULL);
    msgpack_pack_int64(&pk, -5);
    msgpack_pack_int64(&pk, INT64_MIN);
    msgpack_pack_str_with_body(&pk, "hello, tills", 12);
    msgpack_pack_bin_with_body(&pk, "\x00\x01\x02", 3);
    msgpack_pack_true(&pk);
    msgpack_pack_double(&pk, 2.5);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "k", 1);
    msgpack_pack_uint64(&pk, 300);
    msgpack_pack_nil(&pk);
    const uint8_t *p = (const uint8_t *)sb.data;
    cr_assert(read_sample(p, sb.size));
    for (size_t n = 0; n < sb.size; n++) {
        /* A copy of exactly n bytes, so the sanitizer catches any read past the end. */
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, p, n);
        cr_assert_not(read_sample(c, n), "prefix of %zu bytes accepted", n);
        free(c);
    }
    msgpack_sbuffer_destroy(&sb);
}
