/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/crdt/test_crdt_hlc.c — hybrid logical clocks, the LWW order and the arena (crdt/hlc.c).
 *
 * The clock rules are what make sealing safe after a crash or a clock jump: a site's clocks never
 * go back, however the wall clock moves. The property test drives the clock with a random wall
 * clock that jumps back and forth; set TSYNC_SEED to replay a failure.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

static uint64_t seed_from_env(void)
{
    const char *s = getenv("TSYNC_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : 0x5eed1234abcdULL;
    fprintf(stderr, "crdt_hlc: seed %llu (set TSYNC_SEED to replay)\n", (unsigned long long)seed);
    return seed;
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64*: small, deterministic, good enough for test inputs. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

Test(crdt_hlc, make_and_parts)
{
    tsync__hlc h = tsync__hlc_make(1700000000000ULL, 7);
    cr_assert_eq(tsync__hlc_ms(h), 1700000000000ULL);
    cr_assert_eq(h & 0xffff, 7);
}

Test(crdt_hlc, next_takes_wall_when_ahead)
{
    tsync__hlc last = tsync__hlc_make(1000, 5);
    cr_assert_eq(tsync__hlc_next(last, 2000), tsync__hlc_make(2000, 0));
    cr_assert_eq(tsync__hlc_next(0, 1), tsync__hlc_make(1, 0));
}

Test(crdt_hlc, next_counts_when_wall_behind_or_equal)
{
    tsync__hlc last = tsync__hlc_make(1000, 5);
    cr_assert_eq(tsync__hlc_next(last, 1000), tsync__hlc_make(1000, 6));
    cr_assert_eq(tsync__hlc_next(last, 10), tsync__hlc_make(1000, 6));
    cr_assert_eq(tsync__hlc_next(last, 0), tsync__hlc_make(1000, 6));
}

Test(crdt_hlc, logical_overflow_carries_into_ms)
{
    tsync__hlc last = tsync__hlc_make(1000, 0xffff);
    tsync__hlc n = tsync__hlc_next(last, 999);
    cr_assert_eq(n, tsync__hlc_make(1001, 0));
    cr_assert_gt(n, last);
    cr_assert_eq(tsync__hlc_ms(n), 1001);
}

Test(crdt_hlc, next_saturates_at_end_of_time)
{
    cr_assert_eq(tsync__hlc_next(UINT64_MAX, 5), UINT64_MAX);
    cr_assert_geq(tsync__hlc_next(0, UINT64_MAX), tsync__hlc_make((UINT64_MAX >> 16), 0));
}

Test(crdt_hlc, never_goes_back)
{
    uint64_t s = seed_from_env();
    tsync__hlc last = 0;
    uint64_t wall = 1700000000000ULL;
    for (int i = 0; i < 100000; i++) {
        switch (rnd(&s) % 4) {
        case 0:
            wall -= rnd(&s) % 100000;
            break; /* clock set back */
        case 1:
            wall += rnd(&s) % 100000;
            break; /* clock jumps ahead */
        default:
            break; /* many writes in one ms */
        }
        tsync__hlc n = tsync__hlc_next(last, wall);
        cr_assert_gt(n, last, "step %d: %llu after %llu", i, (unsigned long long)n,
                     (unsigned long long)last);
        cr_assert_geq(tsync__hlc_ms(n), wall);
        last = n;
    }
}

Test(crdt_hlc, observe_takes_max)
{
    cr_assert_eq(tsync__hlc_observe(10, 20), 20);
    cr_assert_eq(tsync__hlc_observe(20, 10), 20);
    cr_assert_eq(tsync__hlc_observe(0, 0), 0);
    /* After observing, the next local clock is above the remote one. */
    tsync__hlc remote = tsync__hlc_make(5000, 3);
    tsync__hlc last = tsync__hlc_observe(tsync__hlc_make(1000, 0), remote);
    cr_assert_gt(tsync__hlc_next(last, 1000), remote);
}

Test(crdt_hlc, too_far_boundaries)
{
    uint64_t ref = 1700000000000ULL, bound = TSYNC__HLC_DEFAULT_SKEW_MS;
    cr_assert_not(tsync__hlc_too_far(tsync__hlc_make(ref, 0), ref, bound));
    cr_assert_not(tsync__hlc_too_far(tsync__hlc_make(ref + bound, 0xffff), ref, bound));
    cr_assert(tsync__hlc_too_far(tsync__hlc_make(ref + bound + 1, 0), ref, bound));
    cr_assert_not(tsync__hlc_too_far(tsync__hlc_make(ref - 100000, 0), ref, bound));
    cr_assert_not(tsync__hlc_too_far(UINT64_MAX, ref, UINT64_MAX)); /* no overflow */
    cr_assert(tsync__hlc_too_far(tsync__hlc_make(1, 0), 0, 0));
    cr_assert_not(tsync__hlc_too_far(0, 0, 0));
}

static const uint8_t SITE_A[TSYNC__SITE_BYTES] = {1, 2, 3};
static const uint8_t SITE_B[TSYNC__SITE_BYTES] = {1, 2, 4};

Test(crdt_lww, higher_clock_wins)
{
    cr_assert_gt(tsync__lww_cmp(20, SITE_A, 10, SITE_B), 0);
    cr_assert_lt(tsync__lww_cmp(10, SITE_B, 20, SITE_A), 0);
}

Test(crdt_lww, tie_broken_by_site_bytes)
{
    cr_assert_lt(tsync__lww_cmp(10, SITE_A, 10, SITE_B), 0);
    cr_assert_gt(tsync__lww_cmp(10, SITE_B, 10, SITE_A), 0);
    cr_assert_eq(tsync__lww_cmp(10, SITE_A, 10, SITE_A), 0);
    /* Bytewise means unsigned: 0xff sorts above 0x01. */
    uint8_t hi[TSYNC__SITE_BYTES] = {0xff}, lo[TSYNC__SITE_BYTES] = {0x01};
    cr_assert_gt(tsync__lww_cmp(7, hi, 7, lo), 0);
    /* The last byte decides when the rest is equal. */
    uint8_t x[TSYNC__SITE_BYTES] = {0}, y[TSYNC__SITE_BYTES] = {0};
    y[TSYNC__SITE_BYTES - 1] = 1;
    cr_assert_lt(tsync__lww_cmp(7, x, 7, y), 0);
}

Test(crdt_lww, result_is_normalised)
{
    cr_assert_eq(tsync__lww_cmp(10, SITE_A, 10, SITE_B), -1);
    cr_assert_eq(tsync__lww_cmp(UINT64_MAX, SITE_A, 0, SITE_B), 1);
}

Test(crdt_arena, aligned_zeroed_and_distinct)
{
    tsync__arena a = {0};
    uint8_t *prev = NULL;
    for (size_t n = 0; n < 3000; n++) {
        uint8_t *p = tsync__arena_alloc(&a, n % 97);
        cr_assert_not_null(p);
        cr_assert_eq((uintptr_t)p % 16, 0);
        for (size_t i = 0; i < n % 97; i++) cr_assert_eq(p[i], 0);
        memset(p, 0xab, n % 97);
        cr_assert_neq(p, prev);
        prev = p;
    }
    tsync__arena_free(&a);
    cr_assert_null(a.head);
}

Test(crdt_arena, large_blocks)
{
    tsync__arena a = {0};
    uint8_t *small = tsync__arena_alloc(&a, 10);
    uint8_t *big = tsync__arena_alloc(&a, 1 << 20);
    uint8_t *small2 = tsync__arena_alloc(&a, 10);
    cr_assert(small && big && small2);
    memset(big, 1, 1 << 20);
    cr_assert_eq(small2, small + 16); /* the big block did not waste the current chunk */
    cr_assert_null(tsync__arena_alloc(&a, SIZE_MAX));
    tsync__arena_free(&a);
    tsync__arena_free(&a); /* freeing twice is harmless */
}
