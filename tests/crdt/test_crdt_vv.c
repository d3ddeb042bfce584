/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/crdt/test_crdt_vv.c — version vectors (crdt/vv.c): set, get, sorted order, covers.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "crdt/crdt.h"

static void site(uint8_t out[TSYNC__SITE_BYTES], uint8_t first, uint8_t last)
{
    memset(out, 0x11, TSYNC__SITE_BYTES);
    out[0] = first;
    out[TSYNC__SITE_BYTES - 1] = last;
}

Test(crdt_vv, empty)
{
    tsync__vv v = {0};
    uint8_t s[TSYNC__SITE_BYTES];
    site(s, 1, 1);
    cr_assert_null(tsync__vv_get(&v, s));
    cr_assert_eq(tsync__vv_seq(&v, s), 0);
    tsync__vv_free(&v);
    tsync__vv_free(NULL);
}

Test(crdt_vv, set_get_update)
{
    tsync__vv v = {0};
    uint8_t s[TSYNC__SITE_BYTES], h[TSYNC__HASH_BYTES];
    memset(h, 0xaa, sizeof h);
    site(s, 5, 5);
    cr_assert_eq(tsync__vv_set(&v, s, 3, h), 0);
    const tsync__vv_entry *e = tsync__vv_get(&v, s);
    cr_assert_not_null(e);
    cr_assert_eq(e->seq, 3);
    cr_assert_arr_eq(e->hash, h, TSYNC__HASH_BYTES);
    cr_assert_eq(tsync__vv_set(&v, s, 4, NULL), 0);
    cr_assert_eq(v.n, 1);
    e = tsync__vv_get(&v, s);
    cr_assert_eq(e->seq, 4);
    for (int i = 0; i < TSYNC__HASH_BYTES; i++) cr_assert_eq(e->hash[i], 0);
    tsync__vv_free(&v);
    cr_assert_eq(v.n, 0);
}

Test(crdt_vv, stays_sorted_with_many_sites)
{
    tsync__vv v = {0};
    uint8_t s[TSYNC__SITE_BYTES];
    /* Insert 200 sites in a scrambled order. */
    for (unsigned i = 0; i < 200; i++) {
        unsigned k = (i * 73) % 200;
        site(s, (uint8_t)k, (uint8_t)(k ^ 0x5a));
        cr_assert_eq(tsync__vv_set(&v, s, k + 1, NULL), 0);
    }
    cr_assert_eq(v.n, 200);
    for (size_t i = 1; i < v.n; i++)
        cr_assert_lt(memcmp(v.e[i - 1].site, v.e[i].site, TSYNC__SITE_BYTES), 0);
    for (unsigned k = 0; k < 200; k++) {
        site(s, (uint8_t)k, (uint8_t)(k ^ 0x5a));
        cr_assert_eq(tsync__vv_seq(&v, s), k + 1);
    }
    site(s, 0, 0);
    cr_assert_null(tsync__vv_get(&v, s));
    tsync__vv_free(&v);
}

Test(crdt_vv, covers)
{
    tsync__vv a = {0}, b = {0}, empty = {0};
    uint8_t s1[TSYNC__SITE_BYTES], s2[TSYNC__SITE_BYTES], s3[TSYNC__SITE_BYTES];
    site(s1, 1, 0);
    site(s2, 2, 0);
    site(s3, 3, 0);
    cr_assert(tsync__vv_covers(&empty, &empty));
    cr_assert_eq(tsync__vv_set(&a, s1, 5, NULL), 0);
    cr_assert_eq(tsync__vv_set(&a, s3, 2, NULL), 0);
    cr_assert(tsync__vv_covers(&a, &empty));
    cr_assert_not(tsync__vv_covers(&empty, &a));
    cr_assert(tsync__vv_covers(&a, &a));

    cr_assert_eq(tsync__vv_set(&b, s1, 5, NULL), 0);
    cr_assert(tsync__vv_covers(&a, &b));
    cr_assert_eq(tsync__vv_set(&b, s3, 3, NULL), 0);
    cr_assert_not(tsync__vv_covers(&a, &b)); /* b has seq 3 of s3, a only 2 */
    cr_assert_eq(tsync__vv_set(&b, s3, 1, NULL), 0);
    cr_assert(tsync__vv_covers(&a, &b));
    cr_assert_eq(tsync__vv_set(&b, s2, 1, NULL), 0);
    cr_assert_not(tsync__vv_covers(&a, &b)); /* a lacks s2 */
    cr_assert_eq(tsync__vv_set(&b, s2, 0, NULL), 0);
    cr_assert(tsync__vv_covers(&a, &b)); /* an entry at seq 0 holds nothing */
    cr_assert_not(tsync__vv_covers(&b, &a));
    tsync__vv_free(&a);
    tsync__vv_free(&b);
}
