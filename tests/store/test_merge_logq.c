/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_merge_logq.c — a merge appends the batches it applies to tsync_log 32 per
 * statement (store/merge.c, log_flush), flushing the queue before anything reads the log and for
 * a batch that was held. The log, the rows and the clocks must be what one statement per batch
 * gave: the reference here is a till that merged the same batches one merge each (a queue of
 * one), against a till that merged them all at once (full queues and a remainder), and one that
 * held the later ones first and then merged the earlier ones (queued batches, then held batches
 * that go one by one with their held row).
 *
 * The property test: seeded schedules of one-sale batches (inserts, price updates, stock
 * counter moves, deletes) of random length, so the queue flushes full and part full.
 * TSYNC_SEED=<n> runs one schedule with seed n (default: 4 schedules from a fresh seed).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "tests/lib/helpers.h"

TestSuite(merge_logq, .fini = th_cleanup);

/* One sale at a: a random change of one of the first nprod products, sealed as one batch.
 * Returns the batches sealed (0 when the change changed nothing: a deleted row's update). */
static int sale(tsync_store *a, uint64_t *rng, int nprod)
{
    int p = (int)(th_rand(rng) % (uint64_t)nprod);
    char sql[200];
    switch (th_rand(rng) % 5) {
    case 0:
        snprintf(sql, sizeof sql,
                 "INSERT INTO products VALUES('p%06d', 'item %d', %d, 1) ON CONFLICT(id) DO "
                 "UPDATE SET name = excluded.name",
                 p, (int)(th_rand(rng) % 1000), p);
        break;
    case 1:
    case 2:
        snprintf(sql, sizeof sql, "UPDATE products SET price = %d WHERE id = 'p%06d'",
                 (int)(th_rand(rng) % 10000), p);
        break;
    case 3:
        snprintf(sql, sizeof sql, "UPDATE products SET stock = stock + %d WHERE id = 'p%06d'",
                 (int)(th_rand(rng) % 7) - 3, p);
        break;
    default:
        snprintf(sql, sizeof sql, "DELETE FROM products WHERE id = 'p%06d'", p);
        break;
    }
    th_exec(a, sql);
    return (int)th_seal(a);
}

/* The bundle of what `from` has beyond the state of `since`. */
static uint8_t *bundle_since(tsync_store *from, tsync_store *since, size_t *len)
{
    TH_AUTO_FREE char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, since), 0, "%s", th_errmsg());
    uint8_t *b = NULL;
    size_t nb = 0;
    cr_assert_eq(tsync_store_bundle(&b, len, from, state, &nb), 0, "%s", th_errmsg());
    return b;
}

/* The log's ids follow each origin's seqs (they are what one statement per batch gave). */
static void ids_in_order(tsync_store *s, const char *who)
{
    cr_assert_eq(th_int(s,
                        "SELECT count(*) FROM tsync_log x JOIN tsync_log y ON x.site = y.site "
                        "AND x.seq < y.seq AND x.id > y.id",
                        -1),
                 0, "%s: log ids out of seq order", who);
}

static void schedule(uint64_t seed)
{
    uint64_t rng = seed;
    const char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *one = th_open_products(th_path(dir, "one.db"));   /* one merge per batch */
    tsync_store *all = th_open_products(th_path(dir, "all.db"));   /* everything at once */
    tsync_store *held = th_open_products(th_path(dir, "held.db")); /* later part held first */
    tsync_store *mid = th_open_products(th_path(dir, "mid.db"));   /* has the first part */
    int nprod = 5 + (int)(th_rand(&rng) % 40);
    int s1 = 1 + (int)(th_rand(&rng) % 100), s2 = 1 + (int)(th_rand(&rng) % 130);
    int n1 = 0, n2 = 0; /* batches */
    /* Each part holds a batch at least (a sale may change nothing: seed 1883941508392319 made
     * an empty first part, so nothing could be held). */
    for (int i = 0; i < s1 || n1 == 0; i++) {
        n1 += sale(a, &rng, nprod);
        cr_assert_eq(th_sync(a, one), 0, "%s", th_errmsg());
    }
    cr_assert_eq(th_sync(a, mid), 0, "%s", th_errmsg());
    for (int i = 0; i < s2 || n2 == 0; i++) {
        n2 += sale(a, &rng, nprod);
        cr_assert_eq(th_sync(a, one), 0, "%s", th_errmsg());
    }
    fprintf(stderr, "merge_logq: seed %llu: %d products, %d + %d batches\n",
            (unsigned long long)seed, nprod, n1, n2);
    cr_assert_eq(th_sync(a, all), 0, "%s", th_errmsg());

    /* held: the second part first (held: its first batch waits for the first part), then the
     * first part from mid, after which the held batches apply. */
    size_t len;
    uint8_t *later = bundle_since(a, mid, &len);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(held, later, len, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.held, (size_t)n2, "held %zu of %d", r.held, n2);
    tsync_merge_report_clear(&r);
    free(later);
    uint8_t *first = bundle_since(mid, held, &len);
    cr_assert_eq(tsync_store_merge(held, first, len, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.merged, (size_t)(n1 + n2), "merged %zu of %d", r.merged, n1 + n2);
    cr_assert_eq(r.held, 0);
    tsync_merge_report_clear(&r);
    free(first);
    cr_assert_eq(th_int(held, "SELECT count(*) FROM tsync_held", -1), 0);

    TH_AUTO_FREE char *ref = th_products_state(one);
    struct {
        tsync_store *s;
        const char *who;
    } tills[] = {{one, "one merge per batch"}, {all, "all at once"}, {held, "held first"}};
    for (size_t i = 0; i < sizeof tills / sizeof *tills; i++) {
        tsync_store *s = tills[i].s;
        cr_assert_str_eq(th_hash(s), th_hash(a), "%s: not a's replica (seed %llu)", tills[i].who,
                         (unsigned long long)seed);
        cr_assert_eq(th_check_log(s, a->site, tills[i].who, 0, NULL, NULL), n1 + n2,
                     "%s: log of a (seed %llu)", tills[i].who, (unsigned long long)seed);
        ids_in_order(s, tills[i].who);
        TH_AUTO_FREE char *st = th_products_state(s);
        cr_assert_str_eq(st, ref, "%s: state differs from one merge per batch (seed %llu)",
                         tills[i].who, (unsigned long long)seed);
        /* byte for byte what a stored: bodies and the last signature of every run */
        cr_assert_eq(th_int(s,
                            "SELECT count(*) FROM tsync_log WHERE length(body) = 0 OR "
                            "length(hash) != 32 OR (sig IS NOT NULL AND length(sig) != 64)",
                            -1),
                     0, "%s: a malformed log row", tills[i].who);
    }
    tsync_store_free(a);
    tsync_store_free(one);
    tsync_store_free(all);
    tsync_store_free(held);
    tsync_store_free(mid);
}

Test(merge_logq, queued_appends_equal_one_per_batch, .timeout = 120)
{
    uint64_t seed = th_seed("merge_logq");
    if (getenv("TSYNC_SEED")) {
        schedule(seed);
        return;
    }
    for (int i = 0; i < 4; i++) schedule(seed + (uint64_t)i);
}

/* Exactly 32 and 64 batches (the queue flushes full and nothing remains) and 33 (one left). */
Test(merge_logq, queue_boundaries, .timeout = 120)
{
    static const int sizes[] = {31, 32, 33, 64};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const char *dir = th_tmpdir_auto();
        tsync_store *a = th_open_products(th_path(dir, "a.db"));
        tsync_store *b = th_open_products(th_path(dir, "b.db"));
        th_sell(a, 0, sizes[k]);
        tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
        size_t len;
        uint8_t *bun = bundle_since(a, b, &len);
        cr_assert_eq(tsync_store_merge(b, bun, len, &r), 0, "%s", th_errmsg());
        cr_assert_eq(r.merged, (size_t)sizes[k]);
        tsync_merge_report_clear(&r);
        free(bun);
        cr_assert_eq(th_check_log(b, a->site, "b", 0, NULL, NULL), sizes[k]);
        ids_in_order(b, "b");
        cr_assert_str_eq(th_hash(b), th_hash(a));
        /* merging it again finds every batch here (duplicates read the log) */
        tsync_store *empty = th_open_products(th_path(dir, "empty.db"));
        bun = bundle_since(a, empty, &len);
        tsync_store_free(empty);
        cr_assert_eq(tsync_store_merge(b, bun, len, &r), 0, "%s", th_errmsg());
        cr_assert_eq(r.duplicates, (size_t)sizes[k]);
        tsync_merge_report_clear(&r);
        free(bun);
        tsync_store_free(a);
        tsync_store_free(b);
    }
}
