/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_collect_scale.c — what a deleted row costs before and after collection, at
 * scale. TSYNC_COLLECT_ROWS sets N (2000 when unset; 100000 or 1000000 to measure): two enrolled
 * tills, N rows inserted on a and sent to b, all deleted and sent, then a collects. Prints the
 * bytes of the tombstone and clock tables per deleted row (dbstat), the pages in use and the file
 * size at each point, and the time collection took.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/internal.h"
#include "store/schema.h"
#include "store/sync.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"

TestSuite(collect_scale, .fini = th_cleanup);

static tsync__shopkey shop;

static tsync_store *till(const char *path, const char *name)
{
    tsync_store *s = th_open(path);
    th_exec(s, "CREATE TABLE p(id TEXT PRIMARY KEY, name TEXT, price INTEGER, stock INTEGER)");
    cr_assert_eq(tsync_store_replicate(s, "p", NULL, 0), 0, "%s", th_errmsg());
    th_must_enrol(s, &shop, name);
    return s;
}

static void ack(tsync_store *to, tsync_store *member)
{
    tsync__vv v;
    cr_assert_eq(tsync__sync_vv(member, &v), 0);
    cr_assert_eq(tsync__sync_ack_put(to, tsync__sync_public_key(member), &v), 0, "%s", th_errmsg());
    tsync__vv_free(&v);
}

static void show(tsync_store *s, const char *path, const char *when, int64_t n)
{
    int64_t meta = th_int(s,
                          "SELECT total(pgsize) FROM dbstat WHERE name LIKE 'tsync_tomb_p%' OR "
                          "name LIKE 'tsync_clk_p%'",
                          -1);
    int64_t used = th_int(s,
                          "SELECT (SELECT page_count FROM pragma_page_count) - (SELECT "
                          "freelist_count FROM pragma_freelist_count)",
                          -1) *
                   th_int(s, "PRAGMA page_size", -1);
    struct stat st;
    th_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)");
    cr_assert_eq(stat(path, &st), 0);
    fprintf(stderr,
            "collect_scale %lld rows, %s: tombstones+clocks %lld B (%.1f B/row), pages in use "
            "%lld B, file %lld B\n",
            (long long)n, when, (long long)meta, n ? (double)meta / (double)n : 0.0,
            (long long)used, (long long)st.st_size);
}

static double now_s(void)
{
    return (double)tsync__mono_ms() / 1000.0;
}

Test(collect_scale, a_deleted_row_costs_nothing_once_collected, .timeout = 3600)
{
    /* A small run by default (the suite counts a skipped test as a failure). */
    const char *e = getenv("TSYNC_COLLECT_ROWS");
    int64_t n = e ? atoll(e) : 2000;
    shop = th_shop_make(3, 4, "scale shop");
    char *d = th_tmpdir_auto();
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s", th_path(d, "a.db"));
    snprintf(pb, sizeof pb, "%s", th_path(d, "b.db"));
    tsync_store *a = till(pa, "a"), *b = till(pb, "b");
    th_tell(a, b);
    th_tell(b, a);
    char sql[300];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<%lld) INSERT "
             "INTO p SELECT printf('p%%08d',x), 'product '||x, x%%1000, 10 FROM c",
             (long long)n);
    th_exec(a, sql);
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    show(a, pa, "after insert", n);
    th_exec(a, "DELETE FROM p");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    show(a, pa, "after delete-all", n);
    /* Rounds as a node's prune rounds run them, b acknowledging in between: each round scans or
     * collects a bounded slice. */
    size_t total = 0;
    int rounds = 0;
    double t0 = now_s(), longest = 0;
    while ((int64_t)total < n && rounds < 10000) {
        size_t got = 0;
        double r0 = now_s();
        cr_assert_eq(tsync_store_collect(a, &got), 0, "%s", th_errmsg());
        double r1 = now_s();
        if (r1 - r0 > longest) longest = r1 - r0;
        total += got;
        rounds++;
        ack(a, b);
    }
    cr_assert_eq((int64_t)total, n);
    fprintf(stderr, "collect_scale %lld rows: %d rounds, %.2f s in all, longest round %.3f s\n",
            (long long)n, rounds, now_s() - t0, longest);
    show(a, pa, "after collection", n);
    th_exec(a, "VACUUM");
    show(a, pa, "after collection and VACUUM", n);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
    free(d);
}
