/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_trust_revoke_cutoff.c — a revocation whose cutoff is below what some honest till
 * already merged (docs/TRUST.md, "Kept batches of a revoked device").
 *
 * Three enrolled replicas: D (the device that gets revoked) sells; X merges D's batches up to 5;
 * H merges them up to 10, sells on top of them (one sale updates a product D created), then merges
 * D's batches 11 and 12 and sells nothing more. D sells on to 15. The admin revokes D with the
 * cutoffs taken from X (seq 5). The revocation then reaches X and H in different orders relative
 * to the batches. Whatever the order, at the end: nothing is held on X or H, both have the same
 * content and the same vector, D's batches up to 12 (what an honest till merged) are kept
 * everywhere and D's batches that no honest till merged before it learnt of the revocation are
 * applied nowhere. A fourth order lets X apply all 15 before the revocation reaches it: then 15
 * are kept everywhere.
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"

static void init_sodium(void)
{
    cr_assert(sodium_init() >= 0);
}

TestSuite(revoke_cutoff, .init = init_sodium, .fini = th_cleanup);

typedef struct {
    char *dir;
    tsync_store *d, *h, *x;
    tsync__shopkey shop;
    uint8_t *rev;
    size_t rev_len;
} fleet;

static void sell(tsync_store *s, const char *sql)
{
    th_exec(s, sql);
    cr_assert_eq(th_seal(s), 1);
}

static void sell_d(fleet *f, int from, int to)
{
    char sql[160];
    for (int i = from; i <= to; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO products(id, name, price, stock) VALUES('d%d', 'by D', %d, 1)", i,
                 100 + i);
        sell(f->d, sql);
    }
}

static uint64_t seq_of(tsync_store *s, const uint8_t site[TSYNC__SITE_BYTES])
{
    sqlite3_stmt *st;
    cr_assert_eq(
        sqlite3_prepare_v2(s->db, "SELECT seq FROM tsync_sites WHERE site=?1", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    uint64_t v = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return v;
}

/* Up to the revocation: D sells 1..5 (X merges them), 6..10 (H merges them), H sells on top,
 * D sells 11..12 (H merges them), then 13..15 (nobody). The revocation is made from X's
 * database, so its cutoff for D's site is 5. */
static void fleet_open(fleet *f)
{
    f->dir = th_tmpdir_auto();
    f->d = th_open_products(th_path(f->dir, "d.db"));
    f->h = th_open_products(th_path(f->dir, "h.db"));
    f->x = th_open_products(th_path(f->dir, "x.db"));
    f->shop = th_shop_make(1, 1, "Corner Shop");
    th_must_enrol(f->d, &f->shop, "till-d");
    th_must_enrol(f->h, &f->shop, "till-h");
    th_must_enrol(f->x, &f->shop, "till-x");
    /* every till learns every certificate (bundles carry the trust records) */
    tsync_store *all[3] = {f->d, f->h, f->x};
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                if (i != j)
                    cr_assert_eq(th_sync(all[i], all[j]), 0, "%s", tsync_error_last()->message);

    sell_d(f, 1, 5);
    cr_assert_eq(th_sync(f->d, f->x), 0);
    sell_d(f, 6, 10);
    cr_assert_eq(th_sync(f->d, f->h), 0);
    sell(f->h, "INSERT INTO products(id, name, price, stock) VALUES('h1', 'by H', 7, 3)");
    sell(f->h, "UPDATE products SET price = 999 WHERE id = 'd7'");
    sell(f->h, "UPDATE products SET stock = stock - 1 WHERE id = 'd8'");
    sell_d(f, 11, 12);
    cr_assert_eq(th_sync(f->d, f->h), 0);
    sell_d(f, 13, 15);
    cr_assert_eq(seq_of(f->x, f->d->site), 5);
    cr_assert_eq(seq_of(f->h, f->d->site), 12);

    tsync__cutoff *cuts = NULL;
    uint32_t n = 0;
    cr_assert_eq(tsync__trust_cutoffs_from_db(th_path(f->dir, "x.db"), f->d->pk, &cuts, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(cuts[0].seq, 5);
    f->rev = th_rev_make(&f->shop, f->d->pk, cuts, n, tsync__now_ms(f->x), &f->rev_len);
    free(cuts);
}

static void fleet_close(fleet *f)
{
    free(f->rev);
    free(f->dir);
    tsync_store_free(f->d);
    tsync_store_free(f->h);
    tsync_store_free(f->x);
}

static void revoke_on(fleet *f, tsync_store *s)
{
    cr_assert_eq(tsync__trust_revoke(s, f->rev, f->rev_len), 0, "%s", tsync_error_last()->message);
}

/* Syncs every way a few times (D keeps offering its batches; the honest tills refuse the cut
 * ones), then checks the end state: nothing held, same content, D kept exactly up to `kept`. */
static void settle_and_check(fleet *f, uint64_t kept)
{
    for (int r = 0; r < 3; r++) {
        th_sync(f->d, f->x);
        th_sync(f->d, f->h);
        th_sync(f->h, f->x);
        th_sync(f->x, f->h);
    }
    tsync_store *honest[2] = {f->h, f->x};
    const char *names[2] = {"H", "X"};
    for (int i = 0; i < 2; i++) {
        tsync_store *s = honest[i];
        cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_held", -1), 0, "%s holds batches: %s",
                     names[i], th_text(s, "SELECT group_concat(reason, ' | ') FROM tsync_held"));
        cr_assert_eq(seq_of(s, f->d->site), kept, "%s keeps D up to %llu, expected %llu", names[i],
                     (unsigned long long)seq_of(s, f->d->site), (unsigned long long)kept);
        /* the revoked content rule: D's rows up to the kept batch, none after */
        cr_assert_eq(th_int(s, "SELECT count(*) FROM products WHERE id LIKE 'd%'", -1),
                     (int64_t)kept, "%s", names[i]);
        /* H's sales on top of D's rows are there */
        cr_assert_eq(th_int(s, "SELECT price FROM products WHERE id='d7'", -1), 999, "%s",
                     names[i]);
        cr_assert_eq(th_int(s, "SELECT stock FROM products WHERE id='d8'", -1), 0, "%s", names[i]);
        cr_assert_eq(th_int(s, "SELECT stock FROM products WHERE id='h1'", -1), 3, "%s", names[i]);
        /* the revocation is in force: D's next batch is refused */
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__trust_admit(s, f->d->pk, f->d->site, kept + 1, tsync__now_ms(s), err),
                     TSYNC_EREFUSED, "%s", names[i]);
    }
    cr_assert_str_eq(th_hash(f->h), th_hash(f->x), "H and X differ");
}

/* X learns of the revocation first, then gets H's batches (which depend on D's 6..10); H learns
 * of it afterwards (it had merged D up to 12 and sold nothing after 11 and 12). */
Test(revoke_cutoff, revocation_reaches_x_before_h_batches)
{
    fleet f;
    fleet_open(&f);
    revoke_on(&f, f.x);
    th_sync(f.h, f.x);
    th_sync(f.d, f.x);
    th_sync(f.x, f.h); /* carries the revocation to H */
    th_sync(f.d, f.h);
    settle_and_check(&f, 12);
    fleet_close(&f);
}

/* H learns of the revocation first (it holds D up to 12), then X gets everything from H. */
Test(revoke_cutoff, revocation_reaches_h_first)
{
    fleet f;
    fleet_open(&f);
    uint64_t own = seq_of(f.h, f.h->site);
    revoke_on(&f, f.h);
    /* H merged D's 11 and 12 after its last sale: it seals a batch (without rows) naming them */
    cr_assert_eq(seq_of(f.h, f.h->site), own + 1);
    cr_assert_eq(th_int(f.h, "SELECT count(*) FROM tsync_sites WHERE seq != sealed_seq", -1), 0);
    revoke_on(&f, f.h);
    cr_assert_eq(seq_of(f.h, f.h->site), own + 1, "the same revocation again seals nothing");
    th_sync(f.d, f.h);
    th_sync(f.h, f.x); /* the revocation and H's batches together */
    th_sync(f.d, f.x);
    settle_and_check(&f, 12);
    fleet_close(&f);
}

/* X gets H's batches (and D up to 12) before any revocation, then the revocation reaches both. */
Test(revoke_cutoff, revocation_after_all_merged)
{
    fleet f;
    fleet_open(&f);
    th_sync(f.h, f.x);
    cr_assert_eq(seq_of(f.x, f.d->site), 12);
    revoke_on(&f, f.x);
    th_sync(f.d, f.x);
    revoke_on(&f, f.h);
    th_sync(f.d, f.h);
    settle_and_check(&f, 12);
    fleet_close(&f);
}

/* X merged all of D's 15 batches before the revocation reached it: it cannot take them back, so
 * they are kept everywhere, H included (which learnt of the revocation first). */
Test(revoke_cutoff, till_that_applied_beyond_the_cutoff)
{
    fleet f;
    fleet_open(&f);
    revoke_on(&f, f.h);
    th_sync(f.d, f.h);
    cr_assert_eq(seq_of(f.h, f.d->site), 12, "H refuses what it had not merged");
    th_sync(f.d, f.x);
    cr_assert_eq(seq_of(f.x, f.d->site), 15);
    th_sync(f.h, f.x); /* the revocation reaches X, which holds D up to 15 */
    settle_and_check(&f, 15);
    fleet_close(&f);
}
