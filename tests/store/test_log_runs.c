/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_log_runs.c — received runs kept in the log as one compact row per run
 * (store/log_run.c, store/logrun_int.h): the tsync_log rows of their batches hold the body X'c1'
 * and tsync_log_body() rebuilds every body byte for byte, so the hash chain checks over the log,
 * a till served from that log shows what the author shows, fork proofs, prune and unparking read
 * the same bodies. A database of the format before runs opens, gets the table, and merges; one of
 * a newer log format is refused.
 *
 * The property test: seeded schedules of one-sale batches merged at once (runs stored) and one
 * merge per batch (rows with whole bodies) show the same rows, clocks and log hashes, and a third
 * till served by the first equals the author. TSYNC_SEED=<n> runs one schedule with seed n.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/sync.h"
#include "tests/lib/helpers.h"

TestSuite(log_runs, .fini = th_cleanup);

static void merge_all(tsync_store *from, tsync_store *to)
{
    TH_AUTO_FREE char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, to), 0, "%s", th_errmsg());
    uint8_t *b = NULL;
    size_t len = 0, nb = 0;
    cr_assert_eq(tsync_store_bundle(&b, &len, from, state, &nb), 0, "%s", th_errmsg());
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(to, b, len, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.held + r.refused, 0);
    tsync_merge_report_clear(&r);
    free(b);
}

Test(log_runs, stored_as_runs_and_served_byte_for_byte, .timeout = 120)
{
    const char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    th_sell(a, 0, 300);
    merge_all(a, b);
    cr_assert_gt(th_int(b, "SELECT count(*) FROM tsync_log_runs", -1), 0, "no run stored");
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_log WHERE body = X'c1'", -1), 300,
                 "the batches of the run keep their bodies in their rows");
    /* every body rebuilt: the hash chain checks over tsync_log_body() */
    cr_assert_eq(th_check_log(b, a->site, "b", 0, NULL, NULL), 300);
    cr_assert_eq(th_int(b,
                        "SELECT count(*) FROM tsync_log WHERE tsync_log_body(site, seq, body) = "
                        "body OR length(tsync_log_body(site, seq, body)) < 2",
                        -1),
                 0, "a body was not rebuilt");
    /* c served by b: by a bundle and by the runs a node sends */
    merge_all(b, c);
    cr_assert_str_eq(th_hash(c), th_hash(a), "c is not a's replica");
    cr_assert_eq(th_check_log(c, a->site, "c", 0, NULL, NULL), 300);
    tsync_store *d = th_open_products(th_path(dir, "d.db"));
    cr_assert_eq(th_sync(b, d), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(d), th_hash(a), "d is not a's replica");
    cr_assert_eq(th_check_log(d, a->site, "d", 0, NULL, NULL), 300);
    /* a run rolled back with its merge is not served from the cache */
    th_sell(a, 300, 20);
    merge_all(a, b);
    cr_assert_eq(th_check_log(b, a->site, "b", 0, NULL, NULL), 320);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
    tsync_store_free(d);
}

Test(log_runs, prune_keeps_the_runs_the_log_still_refers_to, .timeout = 120)
{
    const char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    th_sell(a, 0, 40);
    merge_all(a, b);
    th_sell(a, 40, 40);
    merge_all(a, b);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_log_runs", -1), 2);
    tsync_log_policy p = TSYNC_LOG_POLICY_INIT;
    p.max_batches = 30;
    size_t pruned = 0;
    cr_assert_eq(tsync_store_log_policy_set(b, &p), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_prune(b, &pruned), 0, "%s", th_errmsg());
    cr_assert_gt(pruned, 0);
    int64_t horizon = th_int(b, "SELECT min(seq) FROM tsync_log", -1);
    cr_assert_gt(horizon, 40, "the first run is wholly pruned");
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_log_runs", -1), 1,
                 "the first run's row is gone, the second's kept");
    /* what is left is served byte for byte */
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg()); /* c holds everything */
    th_sell(a, 80, 5);
    merge_all(a, b);
    tsync_store *d = th_open_products(th_path(dir, "d.db"));
    merge_all(c, d);
    cr_assert_eq(th_sync(b, d), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(d), th_hash(a), "d is not a's replica");
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
    tsync_store_free(d);
}

Test(log_runs, old_format_database_is_migrated, .timeout = 120)
{
    const char *dir = th_tmpdir_auto();
    const char *bp = th_path(dir, "b.db");
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(bp);
    /* what a build before runs left: whole bodies in tsync_log (one batch per merge is never a
     * run), no tsync_log_runs, no log_format */
    for (int i = 0; i < 20; i++) {
        th_sell(a, i, 1);
        cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    }
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_log WHERE body = X'c1'", -1), 0);
    th_exec(b, "DROP TABLE tsync_log_runs");
    th_exec(b, "DELETE FROM tsync_meta WHERE k = 'log_format'");
    TH_AUTO_FREE char *before = th_products_state(b);
    tsync_store_free(b);
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    cr_assert_eq(tsync_store_open(&b, bp, &o), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT v FROM tsync_meta WHERE k = 'log_format'", -1), 2);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_log_runs", -1), 0);
    TH_AUTO_FREE char *after = th_products_state(b);
    cr_assert_str_eq(after, before, "migrating changed what the replica shows");
    th_sell(a, 20, 30);
    merge_all(a, b);
    cr_assert_gt(th_int(b, "SELECT count(*) FROM tsync_log_runs", -1), 0);
    cr_assert_eq(th_check_log(b, a->site, "b", 0, NULL, NULL), 50);
    cr_assert_str_eq(th_hash(b), th_hash(a));
    /* a log of a newer format is refused, not misread */
    th_exec(b, "UPDATE tsync_meta SET v = 3 WHERE k = 'log_format'");
    tsync_store_free(b);
    b = NULL;
    cr_assert_eq(tsync_store_open(&b, bp, &o), TSYNC_EVERSION);
    o.read_only = 1;
    cr_assert_eq(tsync_store_open(&b, bp, &o), TSYNC_EVERSION);
    tsync_store_free(a);
}

static void schedule(uint64_t seed)
{
    uint64_t rng = seed;
    const char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *one = th_open_products(th_path(dir, "one.db"));
    tsync_store *all = th_open_products(th_path(dir, "all.db"));
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    int n = 0, rounds = 1 + (int)(th_rand(&rng) % 4);
    for (int k = 0; k < rounds; k++) {
        int sales = 1 + (int)(th_rand(&rng) % 90);
        for (int i = 0; i < sales; i++) {
            char sql[160];
            int p = (int)(th_rand(&rng) % 30);
            if (th_rand(&rng) % 3)
                snprintf(sql, sizeof sql,
                         "INSERT INTO products VALUES('p%06d', 'n', %d, 1) ON CONFLICT(id) DO "
                         "UPDATE SET price = excluded.price",
                         p, (int)(th_rand(&rng) % 1000));
            else
                snprintf(sql, sizeof sql,
                         "UPDATE products SET stock = stock + %d WHERE id = 'p%06d'",
                         (int)(th_rand(&rng) % 7) - 3, p);
            th_exec(a, sql);
            n += (int)th_seal(a);
            cr_assert_eq(th_sync(a, one), 0, "%s", th_errmsg());
        }
        merge_all(a, all);
    }
    fprintf(stderr, "log_runs: seed %llu: %d batches in %d merges\n", (unsigned long long)seed, n,
            rounds);
    merge_all(all, c);
    TH_AUTO_FREE char *ref = th_products_state(one);
    TH_AUTO_FREE char *got = th_products_state(all);
    cr_assert_str_eq(got, ref, "runs change what the replica shows (seed %llu)",
                     (unsigned long long)seed);
    cr_assert_eq(th_check_log(all, a->site, "all", 0, NULL, NULL), n);
    cr_assert_str_eq(th_hash(c), th_hash(a), "served from runs: not a's replica (seed %llu)",
                     (unsigned long long)seed);
    cr_assert_eq(th_check_log(c, a->site, "c", 0, NULL, NULL), n);
    tsync_store_free(a);
    tsync_store_free(one);
    tsync_store_free(all);
    tsync_store_free(c);
}

Test(log_runs, property_runs_show_what_rows_show, .timeout = 240)
{
    uint64_t seed = th_seed("log_runs");
    if (getenv("TSYNC_SEED")) {
        schedule(seed);
        return;
    }
    for (int i = 0; i < 4; i++) schedule(seed + (uint64_t)i);
}

/* The log's size leaves out each row's own cost (tsync__log_stats_get): a till that holds a run
 * of one-sale batches as a run row, one that holds them whole and their author hold the same
 * data, and the estimate of what is not log says so; the default byte bound of the log follows
 * it. */
Test(log_runs, data_estimate_is_the_same_with_runs, .timeout = 120)
{
    const char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    th_sell(a, 0, 4000);
    merge_all(a, b);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_log WHERE body = X'c1'", -1), 4000);
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg());
    fprintf(stderr, "c: %lld batches whole\n",
            (long long)th_int(c, "SELECT count(*) FROM tsync_log WHERE length(body) > 1", -1));
    tsync_store *all[3] = {a, b, c};
    tsync__log_stats st[3];
    for (int i = 0; i < 3; i++) {
        th_exec(all[i], "VACUUM");
        cr_assert_eq(tsync__log_stats_get(all[i], &st[i]), 0);
        fprintf(stderr, "%c: rows %lld, log bytes %lld, data bytes %lld\n", 'a' + i,
                (long long)st[i].rows, (long long)st[i].bytes, (long long)st[i].data_bytes);
    }
    for (int i = 1; i < 3; i++) {
        int64_t d = st[i].data_bytes - st[0].data_bytes;
        cr_assert_lt(d < 0 ? -d : d, st[0].data_bytes / 8,
                     "%c: %lld bytes of data, the author %lld", 'a' + i,
                     (long long)st[i].data_bytes, (long long)st[0].data_bytes);
    }
    for (int i = 0; i < 3; i++) tsync_store_free(all[i]);
}
