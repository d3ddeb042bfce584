/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/crdt/test_crdt_orset.c — the add-wins OR-set of row existence (crdt/hlc.c).
 *
 * The scenarios are the ones a shop meets: a till updates a product while another deletes it;
 * a delete that saw every add; a row re-inserted after a delete. The property test checks that
 * merging is commutative, associative and idempotent over random histories (TSYNC_SEED replays).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

#define MAXE 8

typedef struct {
    tsync__exist e[MAXE + 1];
    size_t n;
} set;

static void merge(set *s, uint32_t site, tsync__hlc add, tsync__hlc rmv)
{
    s->n = tsync__orset_merge(s->e, s->n, site, add, rmv);
}

static void merge_all(set *into, const set *from)
{
    for (size_t i = 0; i < from->n; i++)
        merge(into, from->e[i].site, from->e[i].add, from->e[i].rmv);
}

/* Sets are equal when every site has the same (add, rmv), in any order. */
static bool same(const set *a, const set *b)
{
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n; j++)
            if (a->e[i].site == b->e[j].site && a->e[i].add == b->e[j].add &&
                a->e[i].rmv == b->e[j].rmv)
                found = true;
        if (!found) return false;
    }
    return true;
}

Test(crdt_orset, empty_does_not_exist)
{
    set s = {0};
    cr_assert_not(tsync__orset_exists(s.e, s.n));
}

Test(crdt_orset, add_exists)
{
    set s = {0};
    merge(&s, 0, 100, 0);
    cr_assert_eq(s.n, 1);
    cr_assert(tsync__orset_exists(s.e, s.n));
}

Test(crdt_orset, remove_after_observe_removes)
{
    /* Site 0 inserts at 100, site 1 updates at 150; site 2 saw both and deletes. */
    set s = {0};
    merge(&s, 0, 100, 0);
    merge(&s, 1, 150, 0);
    merge(&s, 0, 0, 100);
    merge(&s, 1, 0, 150);
    cr_assert_not(tsync__orset_exists(s.e, s.n));
}

Test(crdt_orset, add_wins_over_concurrent_remove)
{
    /* Till A inserted at 100. Till B deletes having seen that add; concurrently till C updates
     * (an add at 120 that B never saw). Both orders of arrival keep the row. */
    set x = {0}, y = {0};
    merge(&x, 0, 100, 0);
    merge(&x, 0, 0, 100); /* B's delete */
    merge(&x, 2, 120, 0); /* C's update */
    merge(&y, 0, 100, 0);
    merge(&y, 2, 120, 0);
    merge(&y, 0, 0, 100);
    cr_assert(tsync__orset_exists(x.e, x.n));
    cr_assert(tsync__orset_exists(y.e, y.n));
    cr_assert(same(&x, &y));
    /* A later delete that saw C's update removes it too. */
    merge(&x, 2, 0, 120);
    cr_assert_not(tsync__orset_exists(x.e, x.n));
}

Test(crdt_orset, same_site_add_after_delete_resurrects)
{
    set s = {0};
    merge(&s, 0, 100, 0);
    merge(&s, 0, 0, 100);
    cr_assert_not(tsync__orset_exists(s.e, s.n));
    merge(&s, 0, 200, 0); /* re-inserted */
    cr_assert(tsync__orset_exists(s.e, s.n));
    cr_assert_eq(s.n, 1);
    cr_assert_eq(s.e[0].add, 200);
    cr_assert_eq(s.e[0].rmv, 100);
}

Test(crdt_orset, merge_is_pointwise_max)
{
    set s = {0};
    merge(&s, 3, 50, 40);
    merge(&s, 3, 30, 60); /* older add, newer rmv */
    cr_assert_eq(s.n, 1);
    cr_assert_eq(s.e[0].add, 50);
    cr_assert_eq(s.e[0].rmv, 60);
    cr_assert_not(tsync__orset_exists(s.e, s.n));
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void random_set(set *s, uint64_t *r)
{
    memset(s, 0, sizeof *s);
    size_t k = rnd(r) % 5;
    for (size_t i = 0; i < k; i++) merge(s, (uint32_t)(rnd(r) % 4), rnd(r) % 50, rnd(r) % 50);
}

Test(crdt_orset, merge_commutative_associative_idempotent)
{
    const char *env = getenv("TSYNC_SEED");
    uint64_t r = env ? strtoull(env, NULL, 0) : 0x0123456789ULL;
    fprintf(stderr, "crdt_orset: seed %llu (set TSYNC_SEED to replay)\n", (unsigned long long)r);
    for (int it = 0; it < 20000; it++) {
        set a, b, c;
        random_set(&a, &r);
        random_set(&b, &r);
        random_set(&c, &r);
        set ab = a, ba = b, abc, bca, aa = a;
        merge_all(&ab, &b);
        merge_all(&ba, &a);
        cr_assert(same(&ab, &ba), "iteration %d: a+b != b+a", it);
        cr_assert_eq(tsync__orset_exists(ab.e, ab.n), tsync__orset_exists(ba.e, ba.n));
        abc = ab;
        merge_all(&abc, &c);
        bca = b;
        merge_all(&bca, &c);
        merge_all(&bca, &a);
        cr_assert(same(&abc, &bca), "iteration %d: not associative", it);
        merge_all(&aa, &a);
        cr_assert(same(&aa, &a), "iteration %d: not idempotent", it);
        set abb = ab;
        merge_all(&abb, &b);
        cr_assert(same(&abb, &ab), "iteration %d: re-merge changed the set", it);
    }
}
