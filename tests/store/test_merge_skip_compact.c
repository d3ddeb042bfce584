/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_merge_skip_compact.c — after pass 1 the skip summary keeps only the rows with
 * a change to leave out (a chain of three or more), and drops itself when there are none (a file
 * of new rows: an insert and at most one update each), so pass 2 of a fresh till's merge looks
 * nothing up (store/merge_skip.c, compact()).
 *
 * The property test: seeded rounds of updates on random subsets of the rows, so rows change
 * once, twice or many times in one file; a fresh till merges the file with the summary (the
 * default budget, and a budget so small it fills), and without it. Every merge must end with the
 * source's tsync_store_hash, and with the default budget it must leave out exactly the inner
 * links of every chain: sum over rows of (changes - 2).
 *
 * TSYNC_SEED=<n> runs one schedule with seed n (default: 6 schedules from a fresh seed).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "store/internal.h"
#include "store/merge_int.h"
#include "tests/lib/helpers.h"

TestSuite(merge_skip_compact, .fini = th_cleanup);

#define NROWS 400

static void write_file(const char *path, const uint8_t *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(b, 1, len, f) == len && fclose(f) == 0, "write %s", path);
}

/* Pass 1 of a file merge, as store/bundle_read.c runs it, on a summary for s; returns the
 * summary after tsync__mskip_end with the bytes it kept before in *before. */
static tsync__mskip *summarise(tsync_store *s, const uint8_t *b, size_t len, size_t *before)
{
    tsync__mskip *k = NULL;
    cr_assert_eq(tsync__mskip_new(&k, s), 0);
    char err[TSYNC__ERRLEN];
    tsync__bstream *r = NULL;
    cr_assert_eq(tsync__bstream_open_mem(&r, b, len, err), 0, "%s", err);
    tsync__bs_item it;
    tsync__arena a = {0};
    for (;;) {
        cr_assert_eq(tsync__bstream_next(r, &it, err), 0, "%s", err);
        if (it.kind == TSYNC__BS_END) break;
        if (it.kind != TSYNC__BS_RUN) continue;
        uint8_t prev[TSYNC__HASH_BYTES];
        memcpy(prev, it.run.prev, sizeof prev);
        for (uint32_t i = 0; i < it.run.nbodies; i++) {
            tsync__batch bt;
            cr_assert_eq(tsync__batch_decode(it.run.body[i], it.run.body_len[i], &bt, &a, err), 0,
                         "%s", err);
            cr_assert_eq(tsync__mskip_batch(k, &bt, prev, it.site->pk), 0);
            tsync__batch_hash(prev, it.run.body[i], it.run.body_len[i], prev);
        }
    }
    tsync__arena_free(&a);
    tsync__bstream_free(r);
    *before = tsync__mskip_kept_bytes(k);
    cr_assert_eq(tsync__mskip_end(k), 0);
    return k;
}

/* A fresh till merging a file whose rows change at most twice keeps no summary; one where some
 * rows change three times keeps those rows only, in less memory. */
Test(merge_skip_compact, drops_what_cannot_skip)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    a->seal_batch_rows = 64;
    th_exec(a, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<1000) "
               "INSERT INTO products(id, name, price) SELECT printf('k%05d', x), 'n'||x, x FROM n");
    th_seal(a);
    th_exec(a, "UPDATE products SET price=price+1");
    th_seal(a);
    size_t len, before;
    uint8_t *f2 = th_bundle(a, &len);
    tsync__mskip *k = summarise(b, f2, len, &before);
    cr_assert_gt(before, 0);
    cr_assert_not(tsync__mskip_active(k), "new rows changed twice: nothing to leave out");
    cr_assert_eq(tsync__mskip_kept_bytes(k), 0);
    tsync__mskip_free(k);
    free(f2);

    /* a third change for one row in ten */
    th_exec(a, "UPDATE products SET price=price+1 WHERE id LIKE '%0'");
    th_seal(a);
    uint8_t *f3 = th_bundle(a, &len);
    k = summarise(b, f3, len, &before);
    cr_assert(tsync__mskip_active(k));
    cr_assert_lt(tsync__mskip_kept_bytes(k), before / 2, "kept %zu of %zu bytes",
                 tsync__mskip_kept_bytes(k), before);
    tsync__mskip_free(k);

    /* and the merge leaves out the middle change of each of those 100 rows */
    const char *path = th_path(dir, "x.bun");
    write_file(path, f3, len);
    size_t s0 = tsync__merge_skipped_total;
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge_file(b, path, &rep), 0, "%s", th_errmsg());
    tsync_merge_report_clear(&rep);
    cr_assert_eq(tsync__merge_skipped_total - s0, 100);
    cr_assert_str_eq(th_hash(b), th_hash(a));
    free(f3);
    tsync_store_free(a);
    tsync_store_free(b);
    th_rmdir(dir);
}

/* One seeded schedule: a file with rows changed 1..7 times, merged three ways into fresh tills. */
static void one_schedule(uint64_t seed, const char *dir)
{
    uint64_t rng = seed;
    char name[64], sql[256];
    snprintf(name, sizeof name, "a%llu.db", (unsigned long long)seed);
    tsync_store *a = th_open_products(th_path(dir, name));
    a->seal_batch_rows = 16 + th_rand(&rng) % 200;
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x+1 FROM n WHERE x<%d) "
             "INSERT INTO products(id, name, price) SELECT printf('k%%05d', x), 'n'||x, x FROM n",
             NROWS - 1);
    th_exec(a, sql);
    th_seal(a);
    /* changes[i]: the batches that change row i (a seal writes a row once, whatever number of
     * rounds changed it since the last seal) */
    int changes[NROWS], pending[NROWS] = {0};
    for (int i = 0; i < NROWS; i++) changes[i] = 1;
    int rounds = 1 + (int)(th_rand(&rng) % 6);
    for (int r = 0; r < rounds; r++) {
        /* rows x with x % m == q: a random subset, different each round */
        int m = 1 + (int)(th_rand(&rng) % 5), q = (int)(th_rand(&rng) % (uint64_t)m);
        snprintf(sql, sizeof sql,
                 "UPDATE products SET price=price+%d WHERE CAST(substr(id, 2) AS INTEGER) %% %d = "
                 "%d",
                 r + 1, m, q);
        th_exec(a, sql);
        for (int i = 0; i < NROWS; i++)
            if (i % m == q) pending[i] = 1;
        if (r + 1 < rounds && th_rand(&rng) % 3 == 0) continue; /* sealed with the next round */
        th_seal(a);
        for (int i = 0; i < NROWS; i++) changes[i] += pending[i], pending[i] = 0;
    }
    /* a chain of n changes of one site leaves out its n - 2 inner links */
    size_t expect = 0;
    for (int i = 0; i < NROWS; i++)
        if (changes[i] > 2) expect += (size_t)changes[i] - 2;
    size_t len;
    uint8_t *f = th_bundle(a, &len);
    snprintf(name, sizeof name, "x%llu.bun", (unsigned long long)seed);
    const char *path = th_path(dir, name);
    write_file(path, f, len);
    const char *want = th_hash(a);
    char hash_a[2 * TSYNC_HASH_BYTES + 1];
    snprintf(hash_a, sizeof hash_a, "%s", want);
    size_t budgets[3] = {TSYNC__MERGE_SKIP_BYTES, 2048, 0};
    for (int v = 0; v < 3; v++) {
        snprintf(name, sizeof name, "b%llu_%d.db", (unsigned long long)seed, v);
        tsync_store *b = th_open_products(th_path(dir, name));
        tsync__merge_skip_bytes = budgets[v];
        size_t s0 = tsync__merge_skipped_total;
        tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
        cr_assert_eq(tsync_store_merge_file(b, path, &rep), 0, "seed %llu: %s",
                     (unsigned long long)seed, th_errmsg());
        cr_assert_eq(rep.conflicts, 0);
        tsync_merge_report_clear(&rep);
        size_t skipped = tsync__merge_skipped_total - s0;
        cr_assert_str_eq(th_hash(b), hash_a, "seed %llu, budget %zu: the merge differs",
                         (unsigned long long)seed, budgets[v]);
        if (v == 0)
            cr_assert_eq(skipped, expect, "seed %llu: left out %zu changes, expected %zu",
                         (unsigned long long)seed, skipped, expect);
        else if (v == 1)
            cr_assert_lt(skipped, expect + 1); /* rows beyond the budget merge unskipped */
        else
            cr_assert_eq(skipped, 0);
        tsync_store_free(b);
    }
    tsync__merge_skip_bytes = TSYNC__MERGE_SKIP_BYTES;
    free(f);
    tsync_store_free(a);
}

Test(merge_skip_compact, same_hash_as_unskipped, .timeout = 300)
{
    char *dir = th_tmpdir_auto();
    uint64_t seed = th_seed("merge_skip_compact");
    int n = getenv("TSYNC_SEED") ? 1 : 6;
    for (int i = 0; i < n; i++) one_schedule(seed + (uint64_t)i, dir);
    th_rmdir(dir);
}
