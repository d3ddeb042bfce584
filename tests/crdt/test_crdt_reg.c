/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/crdt/test_crdt_reg.c — max and min registers (crdt/reg.c): SQLite's order of values, NULL
 * as no value, ties decided by the clock, and a merge that is commutative, associative and
 * idempotent over random writes.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

static tsync__val vi(int64_t i)
{
    return (tsync__val){.type = TSYNC__V_INT, .i = i};
}
static tsync__val vr(double r)
{
    return (tsync__val){.type = TSYNC__V_REAL, .r = r};
}
static tsync__val vt(const char *s)
{
    return (tsync__val){.type = TSYNC__V_TEXT, .p = s, .n = (uint32_t)strlen(s)};
}
static tsync__val vb(const char *s)
{
    return (tsync__val){.type = TSYNC__V_BLOB, .p = s, .n = (uint32_t)strlen(s)};
}
static const tsync__val vnull = {.type = TSYNC__V_NULL};

Test(crdt_reg, sqlite_order_by_type_then_value)
{
    tsync__val order[] = {vnull,  vi(-5),  vr(-4.5), vi(2),    vr(2.5), vi(3),
                          vt(""), vt("A"), vt("a"),  vt("ab"), vb(""),  vb("a")};
    size_t n = sizeof order / sizeof *order;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            int c = tsync__reg_cmp(&order[i], &order[j]);
            cr_assert_eq(c, i < j ? -1 : i > j, "%zu vs %zu: %d", i, j, c);
        }
    /* equal numbers of different types tie */
    tsync__val a = vi(2), b = vr(2.0);
    cr_assert_eq(tsync__reg_cmp(&a, &b), 0);
    /* large integers against doubles are compared exactly */
    tsync__val big = vi(INT64_MAX), bigr = vr(9223372036854775807.0);
    cr_assert_lt(tsync__reg_cmp(&big, &bigr), 0);
    tsync__val odd = vi((1LL << 53) + 1), oddr = vr((double)(1LL << 53));
    cr_assert_gt(tsync__reg_cmp(&odd, &oddr), 0);
    cr_assert_lt(tsync__reg_cmp(&oddr, &odd), 0);
}

Test(crdt_reg, null_is_no_value_for_max_and_min)
{
    tsync__val x = vi(-100), t = vt("z");
    cr_assert_gt(tsync__reg_better(TSYNC__POLICY_MAX, &x, &vnull), 0);
    cr_assert_lt(tsync__reg_better(TSYNC__POLICY_MAX, &vnull, &x), 0);
    cr_assert_gt(tsync__reg_better(TSYNC__POLICY_MIN, &t, &vnull), 0);
    cr_assert_lt(tsync__reg_better(TSYNC__POLICY_MIN, &vnull, &x), 0);
    cr_assert_eq(tsync__reg_better(TSYNC__POLICY_MIN, &vnull, &vnull), 0);
    cr_assert_gt(tsync__reg_better(TSYNC__POLICY_MIN, &x, &t), 0);
    cr_assert_gt(tsync__reg_better(TSYNC__POLICY_MAX, &t, &x), 0);
}

Test(crdt_reg, ties_go_to_the_later_clock_then_the_higher_site)
{
    uint8_t s1[TSYNC__SITE_BYTES] = {1}, s2[TSYNC__SITE_BYTES] = {2};
    tsync__val a = vi(7), b = vr(7.0), lo = vi(1);
    cr_assert_gt(tsync__reg_pick(TSYNC__POLICY_MAX, &a, 10, s1, &b, 9, s2), 0);
    cr_assert_lt(tsync__reg_pick(TSYNC__POLICY_MAX, &a, 9, s1, &b, 9, s2), 0);
    /* the value decides before the clock */
    cr_assert_lt(tsync__reg_pick(TSYNC__POLICY_MAX, &lo, 100, s2, &a, 1, s1), 0);
    cr_assert_gt(tsync__reg_pick(TSYNC__POLICY_MIN, &lo, 1, s1, &a, 100, s2), 0);
}

/* A register state: value, clock, site. */
typedef struct {
    tsync__val v;
    tsync__hlc h;
    uint8_t s[TSYNC__SITE_BYTES];
} reg;

static reg join(int policy, reg a, reg b)
{
    return tsync__reg_pick(policy, &a.v, a.h, a.s, &b.v, b.h, b.s) >= 0 ? a : b;
}

static int same(reg a, reg b)
{
    return a.h == b.h && memcmp(a.s, b.s, TSYNC__SITE_BYTES) == 0 && a.v.type == b.v.type &&
           tsync__reg_cmp(&a.v, &b.v) == 0;
}

static const char *texts[] = {"a", "b", "ab", "zz"};

static reg random_reg(unsigned *seed, tsync__hlc h)
{
    reg r;
    memset(&r, 0, sizeof r);
    switch (rand_r(seed) % 5) {
    case 0:
        r.v = vnull;
        break;
    case 1:
        r.v = vi(rand_r(seed) % 5);
        break;
    case 2:
        r.v = vr((rand_r(seed) % 10) / 2.0);
        break;
    case 3:
        r.v = vt(texts[rand_r(seed) % 4]);
        break;
    default:
        r.v = vb(texts[rand_r(seed) % 4]);
    }
    r.h = h;
    r.s[0] = (uint8_t)(rand_r(seed) % 3);
    return r;
}

Test(crdt_reg, merge_is_commutative_associative_idempotent)
{
    unsigned seed = 12345;
    for (int policy = TSYNC__POLICY_MAX; policy <= TSYNC__POLICY_MIN; policy++)
        for (int i = 0; i < 20000; i++) {
            /* clocks drawn from a small range, so that ties of clock and value both occur; a
             * (clock, site) pair names one write, so equal pairs carry the same value */
            reg a = random_reg(&seed, 1 + (tsync__hlc)(rand_r(&seed) % 4));
            reg b = random_reg(&seed, 5 + (tsync__hlc)(rand_r(&seed) % 4));
            reg c = random_reg(&seed, 9 + (tsync__hlc)(rand_r(&seed) % 4));
            cr_assert(same(join(policy, a, b), join(policy, b, a)));
            cr_assert(
                same(join(policy, join(policy, a, b), c), join(policy, a, join(policy, b, c))));
            cr_assert(same(join(policy, a, a), a));
            /* the join is an upper bound: joining it again with either changes nothing */
            reg ab = join(policy, a, b);
            cr_assert(same(join(policy, ab, a), ab));
            /* and never a value the policy ranks below a non-NULL input */
            if (a.v.type != TSYNC__V_NULL) cr_assert_geq(tsync__reg_better(policy, &ab.v, &a.v), 0);
        }
}
