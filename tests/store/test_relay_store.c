/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_relay_store.c — the relay's SQLite store (store/relay_store.c) through its
 * vtable: an envelope put twice is stored once; ranges are merged per origin (touching and
 * overlapping ranges join, gaps stay); a put past the quota stores nothing, not even its
 * envelopes that would fit; get walks from a seq inside an envelope, in seq order, and stops when
 * the callback says so; revocations and counters are kept; everything survives a reopen.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "store/relay_store.h"
#include "tests/lib/helpers.h"

TestSuite(relay_store, .fini = th_cleanup);

typedef struct {
    uint32_t norigins;
    tsync__rrange r[2][8];
    uint32_t n[2];
} ranges_out;

static int collect(void *ctx, const uint8_t origin[16], const tsync__rrange *g, uint32_t n)
{
    (void)origin;
    ranges_out *o = ctx;
    cr_assert(o->norigins < 2 && n <= 8);
    memcpy(o->r[o->norigins], g, n * sizeof *g);
    o->n[o->norigins++] = n;
    return 0;
}

typedef struct {
    uint64_t first[8];
    uint32_t n, stop_after;
} got_out;

static int got(void *ctx, const tsync__renv *e)
{
    got_out *g = ctx;
    g->first[g->n++] = e->first_seq;
    return g->stop_after && g->n == g->stop_after ? 1 : 0;
}

static tsync__renv env(uint8_t origin, uint64_t f, uint64_t l, const uint8_t *b, size_t n)
{
    tsync__renv e = {{0}, f, l, b, n};
    memset(e.origin, origin, 16);
    return e;
}

Test(relay_store, put_ranges_quota_get_reopen)
{
    char *dir = th_tmpdir_auto();
    tsync__rstore *st;
    cr_assert_eq(tsync__rstore_sqlite_open(&st, dir, 0, 1), TSYNC_ENOTFOUND);
    cr_assert_eq(tsync__rstore_sqlite_open(&st, dir, 1, 0), 0);
    uint8_t pk[32];
    memset(pk, 7, 32);
    cr_assert_eq(st->ops->admit(st, pk, 1000, 0, 1), 0);
    tsync__rshop shop;
    cr_assert_eq(st->ops->shop(st, pk, &shop), 0);
    cr_assert_eq(shop.quota_bytes, 1000);
    uint8_t b[600];
    memset(b, 'x', sizeof b);
    tsync__renv e[4] = {env(1, 1, 2, b, 100), env(1, 3, 4, b, 100), env(1, 8, 9, b, 100),
                        env(2, 5, 5, b, 100)};
    uint64_t stored, dup;
    cr_assert_eq(st->ops->put(st, shop.id, 1000, e, 4, &stored, &dup), 0);
    cr_assert(stored == 4 && dup == 0);
    cr_assert_eq(st->ops->put(st, shop.id, 1000, e, 2, &stored, &dup), 0);
    cr_assert(stored == 0 && dup == 2, "a put twice was stored again");
    tsync__renv over = env(1, 2, 7, b, 100); /* overlaps 1..4, touches 8..9 */
    cr_assert_eq(st->ops->put(st, shop.id, 1000, &over, 1, &stored, &dup), 0);
    ranges_out ro = {0};
    cr_assert_eq(st->ops->ranges(st, shop.id, collect, &ro), 0);
    cr_assert_eq(ro.norigins, 2);
    cr_assert(ro.n[0] == 1 && ro.r[0][0].first == 1 && ro.r[0][0].last == 9, "not merged");
    cr_assert(ro.n[1] == 1 && ro.r[1][0].first == 5 && ro.r[1][0].last == 5);
    /* 500 held; 100 fits but 600 does not: nothing of the put is stored. */
    tsync__renv q[2] = {env(2, 6, 6, b, 100), env(2, 7, 7, b, 600)};
    cr_assert_eq(st->ops->put(st, shop.id, 1000, q, 2, &stored, &dup), TSYNC_EFULL);
    cr_assert_eq(stored, 0);
    cr_assert_eq(st->ops->shop(st, pk, &shop), 0);
    cr_assert(shop.bytes == 500 && shop.envelopes == 5, "bytes %llu envelopes %llu",
              (unsigned long long)shop.bytes, (unsigned long long)shop.envelopes);
    uint8_t o2[16];
    memset(o2, 2, 16);
    got_out g = {0};
    cr_assert_eq(st->ops->get(st, shop.id, o2, 6, got, &g), 0);
    cr_assert_eq(g.n, 0, "an envelope of the refused put was stored");
    uint8_t o1[16];
    memset(o1, 1, 16);
    g = (got_out){0};
    cr_assert_eq(st->ops->get(st, shop.id, o1, 4, got, &g), 0); /* 3..4 holds seq 4 */
    cr_assert(g.n == 3 && g.first[0] == 2 && g.first[1] == 3 && g.first[2] == 8);
    g = (got_out){.stop_after = 1};
    cr_assert_eq(st->ops->get(st, shop.id, o1, 1, got, &g), 0);
    cr_assert_eq(g.n, 1);
    uint8_t dev[32];
    memset(dev, 9, 32);
    cr_assert_eq(st->ops->revoked(st, shop.id, dev), 0);
    cr_assert_eq(st->ops->revoke(st, shop.id, dev, (const uint8_t *)"rec", 3), 0);
    cr_assert_eq(st->ops->revoke(st, shop.id, dev, (const uint8_t *)"rec", 3), 0);
    cr_assert_eq(st->ops->count(st, "refused.quota", 2, 0), 0);
    cr_assert_eq(st->ops->count(st, "refused.quota", 1, 0), 0);
    st->ops->close(st);
    cr_assert_eq(tsync__rstore_sqlite_open(&st, dir, 0, 0), 0);
    cr_assert_eq(st->ops->revoked(st, shop.id, dev), 1);
    cr_assert_eq(st->ops->shop(st, pk, &shop), 0);
    cr_assert_eq(shop.revocations, 1);
    cr_assert_eq(shop.bytes, 500);
    st->ops->close(st);
}
