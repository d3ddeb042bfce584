/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/crdt/test_crdt_pn.c — PN-counters (crdt/hlc.c): two tills selling the same item both count,
 * a recount is a delta, merging is a pointwise max and the value wraps like int64.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

#define MAXC 8

typedef struct {
    tsync__pn c[MAXC + 1];
    size_t n;
} ctr;

static void add(ctr *c, uint32_t site, int64_t d)
{
    c->n = tsync__pn_add(c->c, c->n, site, d);
}

static void merge_all(ctr *into, const ctr *from)
{
    for (size_t i = 0; i < from->n; i++)
        into->n = tsync__pn_merge(into->c, into->n, from->c[i].site, from->c[i].p, from->c[i].n);
}

static int64_t value(const ctr *c)
{
    return tsync__pn_value(c->c, c->n);
}

Test(crdt_pn, empty_is_zero)
{
    ctr c = {0};
    cr_assert_eq(value(&c), 0);
}

Test(crdt_pn, add_positive_and_negative)
{
    ctr c = {0};
    add(&c, 0, 50);
    add(&c, 0, -3);
    add(&c, 0, -2);
    cr_assert_eq(c.n, 1);
    cr_assert_eq(c.c[0].p, 50);
    cr_assert_eq(c.c[0].n, 5);
    cr_assert_eq(value(&c), 45);
    add(&c, 1, -7);
    cr_assert_eq(c.n, 2);
    cr_assert_eq(value(&c), 38);
}

Test(crdt_pn, add_int64_min)
{
    ctr c = {0};
    add(&c, 0, INT64_MIN);
    cr_assert_eq(c.c[0].n, (uint64_t)1 << 63);
    cr_assert_eq(value(&c), INT64_MIN);
}

Test(crdt_pn, two_tills_selling_both_count)
{
    /* Stock 50 inserted at till 0; till 0 sells 2, till 1 sells 3; then they merge. */
    ctr t0 = {0}, t1 = {0};
    add(&t0, 0, 50);
    t1 = t0;
    add(&t0, 0, -2);
    add(&t1, 1, -3);
    ctr m0 = t0, m1 = t1;
    merge_all(&m0, &t1);
    merge_all(&m1, &t0);
    cr_assert_eq(value(&m0), 45);
    cr_assert_eq(value(&m1), 45);
}

Test(crdt_pn, merge_is_pointwise_max_and_idempotent)
{
    ctr c = {0};
    c.n = tsync__pn_merge(c.c, c.n, 4, 10, 3);
    c.n = tsync__pn_merge(c.c, c.n, 4, 8, 5);
    cr_assert_eq(c.n, 1);
    cr_assert_eq(c.c[0].p, 10);
    cr_assert_eq(c.c[0].n, 5);
    c.n = tsync__pn_merge(c.c, c.n, 4, 10, 5);
    cr_assert_eq(c.n, 1);
    cr_assert_eq(value(&c), 5);
}

Test(crdt_pn, value_wraps_like_int64)
{
    ctr c = {0};
    c.n = tsync__pn_merge(c.c, c.n, 0, (uint64_t)INT64_MAX, 0);
    c.n = tsync__pn_merge(c.c, c.n, 1, 1, 0);
    cr_assert_eq(value(&c), INT64_MIN);
    c.n = tsync__pn_merge(c.c, c.n, 2, 0, 1);
    cr_assert_eq(value(&c), INT64_MAX);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

Test(crdt_pn, merge_commutative_and_value_sums_deltas)
{
    const char *env = getenv("TSYNC_SEED");
    uint64_t r = env ? strtoull(env, NULL, 0) : 0xfeedfaceULL;
    fprintf(stderr, "crdt_pn: seed %llu (set TSYNC_SEED to replay)\n", (unsigned long long)r);
    for (int it = 0; it < 5000; it++) {
        /* Each of 4 sites applies random deltas to its own replica; the merge of all replicas
         * in any order equals the sum of every delta. */
        ctr rep[4];
        memset(rep, 0, sizeof rep);
        int64_t sum = 0;
        for (int k = 0; k < 20; k++) {
            uint32_t s = (uint32_t)(rnd(&r) % 4);
            int64_t d = (int64_t)(rnd(&r) % 2001) - 1000;
            add(&rep[s], s, d);
            sum += d;
        }
        ctr x = {0}, y = {0};
        for (int i = 0; i < 4; i++) merge_all(&x, &rep[i]);
        for (int i = 3; i >= 0; i--) merge_all(&y, &rep[i]);
        merge_all(&y, &rep[1]); /* duplicate delivery */
        cr_assert_eq(value(&x), sum, "iteration %d", it);
        cr_assert_eq(value(&y), sum, "iteration %d", it);
    }
}
