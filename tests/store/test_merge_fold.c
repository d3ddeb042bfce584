/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_merge_fold.c — a bundle file merges in slices, and pass 2 leaves out the row
 * changes a later change of the same file supersedes (store/merge_skip.c). Neither may change
 * what a replica shows or keeps.
 *
 * The property test: seeded random schedules on three source tills (each mostly writes its own
 * third of the key pool, so rows see long runs of one site's updates — what the summary skips —
 * and sometimes another's, so writes collide; inserts, field updates, counter changes, deletes
 * and re-inserts; seals at random points with a tiny seal budget; syncs between the sources)
 * record bundles along the way. Two receivers merge the same bundles in the same shuffled order:
 * one through tsync_store_merge_file (slices of random size, flushes of 1-3 rows, the skip
 * summary, sometimes with a budget so small most rows are not tracked), the other decodes the
 * bundle whole and merges it in one transaction with one flush at the end (the reference).
 * After every merge both must agree on the result, the report's counts, tsync_store_hash and the
 * stored state: rows, clocks, tombstones, log, held batches, parked changes and the conflict
 * journal; and at the end, after both merged everything again and the sources' final state.
 *
 * TSYNC_SEED=<n> runs one schedule with seed n; TSYNC_MERGE_FOLD_SCHEDULES=<n> runs n (default 30).
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "store/internal.h"
#include "store/merge_int.h"
#include "store/sync.h"
#include "tests/lib/helpers.h"

TestSuite(merge_fold, .fini = th_cleanup);

#define NSRC  3
#define NKEYS 45

typedef struct {
    uint8_t *b;
    size_t len;
} bun;

/* One write of source i: mostly a key of its own third of the pool. */
static void write_op(tsync_store *s, int i, uint64_t *rng)
{
    char sql[256];
    int k = th_rand(rng) % 5 == 0 ? (int)(th_rand(rng) % NKEYS)
                                  : i * (NKEYS / NSRC) + (int)(th_rand(rng) % (NKEYS / NSRC));
    long long v = (long long)(th_rand(rng) % 1000);
    switch (th_rand(rng) % 10) {
    case 0:
        snprintf(sql, sizeof sql,
                 "INSERT OR IGNORE INTO products(id, name, price, stock) VALUES('k%d', 'n%lld', "
                 "%lld, %lld)",
                 k, v, v % 97, v % 13);
        break;
    case 1:
    case 2:
    case 3:
        snprintf(sql, sizeof sql, "UPDATE products SET price=%lld WHERE id='k%d'", v, k);
        break;
    case 4:
        /* every row of the source's third at once: a round of updates */
        snprintf(sql, sizeof sql, "UPDATE products SET price=price+1 WHERE id >= 'k%d'",
                 i * (NKEYS / NSRC));
        break;
    case 5:
        snprintf(sql, sizeof sql, "UPDATE products SET name='m%lld', price=%lld WHERE id='k%d'", v,
                 v % 50, k);
        break;
    case 6:
        snprintf(sql, sizeof sql, "UPDATE products SET stock=stock%+lld WHERE id='k%d'",
                 (long long)(v % 7) - 3, k);
        break;
    case 7:
        snprintf(sql, sizeof sql, "DELETE FROM products WHERE id='k%d'", k);
        break;
    default:
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO products(id, name, price) VALUES('k%d', 'r%lld', %lld)", k,
                 v, v % 31);
        break;
    }
    th_exec(s, sql);
}

static void add_bundle(bun **list, size_t *n, uint8_t *b, size_t len)
{
    bun *nl = realloc(*list, (*n + 1) * sizeof *nl);
    cr_assert(nl);
    *list = nl;
    (*list)[(*n)++] = (bun){b, len};
}

static uint8_t *bundle_for(tsync_store *from, tsync_store *peer, size_t *len)
{
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, peer), 0);
    uint8_t *b = NULL;
    cr_assert_eq(tsync_store_bundle(&b, len, from, state, NULL), 0);
    free(state);
    return b;
}

/* The reference: the bundle decoded whole, merged in one transaction, one flush at the end. */
static int merge_ref(tsync_store *s, const bun *b, tsync_merge_report *rep)
{
    tsync__bundle d;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    memset(&d, 0, sizeof d);
    cr_assert_eq(tsync__bundle_decode(b->b, b->len, &d, &a, err), 0, "decode: %s", err);
    int rc = tsync__merge_bundle(s, &d, rep);
    tsync__bundle_free(&d);
    tsync__arena_free(&a);
    return rc;
}

static int merge_path(tsync_store *s, const char *path, const bun *b, tsync_merge_report *rep)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(b->b, 1, b->len, f) == b->len && fclose(f) == 0);
    return tsync_store_merge_file(s, path, rep);
}

static size_t seen_conflicts, seen_held;

/* The rows (tsync_store_hash), and with all, everything stored. */
static void compare(tsync_store *a, tsync_store *b, uint64_t seed, size_t k, int all)
{
    cr_assert_str_eq(th_hash(a), th_hash(b), "seed %llu, merge %zu: rows differ",
                     (unsigned long long)seed, k);
    if (!all) return;
    char *x = th_products_state(a), *y = th_products_state(b);
    if (strcmp(x, y) != 0) {
        size_t d = 0;
        while (x[d] == y[d]) d++;
        size_t from = d > 200 ? d - 200 : 0;
        fprintf(stderr, "file:      ...%.400s\nreference: ...%.400s\n", x + from, y + from);
    }
    cr_assert_str_eq(x, y, "seed %llu, merge %zu: stored state differs", (unsigned long long)seed,
                     k);
    free(x);
    free(y);
}

static void run_schedule(uint64_t seed)
{
    uint64_t rng = seed;
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "x.bun");
    tsync_store *src[NSRC];
    for (int i = 0; i < NSRC; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d.db", i);
        src[i] = th_open_products(th_path(dir, name));
        src[i]->seal_batch_rows = 1 + th_rand(&rng) % 4;
    }
    tsync_store *file = th_open_products(th_path(dir, "file.db"));
    tsync_store *plain = th_open_products(th_path(dir, "plain.db"));
    tsync_store *ref = th_open_products(th_path(dir, "ref.db"));
    file->merge_flush_rows = 1 + th_rand(&rng) % 3;
    plain->merge_flush_rows = SIZE_MAX;
    ref->merge_flush_rows = SIZE_MAX;
    static const size_t slices[] = {1, 300, 4096, (size_t)1 << 20};
    tsync__merge_slice_bytes = slices[th_rand(&rng) % 4];
    /* now and then a summary too small for most rows: those merge unskipped */
    size_t budget = th_rand(&rng) % 4 == 0 ? 1 : TSYNC__MERGE_SKIP_BYTES;
    if (getenv("TSYNC_MERGE_FOLD_NOSKIP")) budget = 0;
    int whole = tsync__merge_slice_bytes >= ((size_t)1 << 20);
    if (getenv("TSYNC_MERGE_FOLD_SLICE"))
        tsync__merge_slice_bytes = (size_t)atoll(getenv("TSYNC_MERGE_FOLD_SLICE"));

    bun *list = NULL;
    size_t nb = 0;
    int steps = 25 + (int)(th_rand(&rng) % 30);
    for (int step = 0; step < steps; step++) {
        int i = (int)(th_rand(&rng) % NSRC);
        int nops = 1 + (int)(th_rand(&rng) % 10);
        for (int o = 0; o < nops; o++) {
            write_op(src[i], i, &rng);
            if (th_rand(&rng) % 2 == 0) th_seal(src[i]);
        }
        uint64_t r = th_rand(&rng) % 10;
        if (r < 2) {
            int j = (int)(th_rand(&rng) % NSRC);
            if (j != i) (void)th_sync(src[i], src[j]);
        } else if (r < 6) {
            size_t len;
            uint8_t *b = th_bundle(src[i], &len);
            add_bundle(&list, &nb, b, len);
        } else if (r < 9) {
            int j = (int)(th_rand(&rng) % NSRC);
            size_t len;
            uint8_t *b = bundle_for(src[i], src[j], &len);
            add_bundle(&list, &nb, b, len);
        }
    }
    for (int i = 0; i < NSRC; i++) {
        size_t len;
        uint8_t *b = th_bundle(src[i], &len);
        add_bundle(&list, &nb, b, len);
    }
    size_t norder = nb * 2;
    size_t *order = malloc(norder * sizeof *order);
    cr_assert(order);
    for (size_t i = 0; i < nb; i++) order[i] = i;
    for (size_t i = nb; i > 1; i--) {
        size_t j = th_rand(&rng) % i, t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < nb; i++) order[nb + i] = i;

    for (size_t k = 0; k < norder; k++) {
        const bun *b = &list[order[k]];
        tsync_merge_report r1 = TSYNC_MERGE_REPORT_INIT, r2 = TSYNC_MERGE_REPORT_INIT;
        tsync_merge_report r3 = TSYNC_MERGE_REPORT_INIT;
        tsync__merge_skip_bytes = budget;
        int x1 = merge_path(file, path, b, &r1);
        tsync__merge_skip_bytes = 0;
        int x3 = merge_path(plain, path, b, &r3);
        int x2 = merge_ref(ref, b, &r2);
        cr_assert(x1 == x2 && x1 == x3,
                  "seed %llu, merge %zu: result %d file, %d unskipped, %d reference",
                  (unsigned long long)seed, k, x1, x3, x2);
        /* Skipping changes nothing: the same slices unskipped, one flush, keep the same. */
        cr_assert(
            r1.merged == r3.merged && r1.duplicates == r3.duplicates && r1.held == r3.held &&
                r1.parked == r3.parked && r1.refused == r3.refused && r1.conflicts == r3.conflicts,
            "seed %llu, merge %zu: reports differ from the unskipped: merged %zu/%zu held %zu/%zu "
            "conflicts %zu/%zu",
            (unsigned long long)seed, k, r1.merged, r3.merged, r1.held, r3.held, r1.conflicts,
            r3.conflicts);
        tsync_merge_report_clear(&r3);
        compare(file, plain, seed, k, 1);
        /* Slices count a batch waiting for a later slice as held, then merged, and apply the
         * batches of concurrent sites in another order, which the conflict journal shows
         * (bundle_read.c; as on main): against the one-shot reference the rows always agree,
         * the rest once the slices are the whole file. */
        if (whole)
            cr_assert(r1.merged == r2.merged && r1.duplicates == r2.duplicates &&
                          r1.held == r2.held && r1.parked == r2.parked &&
                          r1.refused == r2.refused && r1.conflicts == r2.conflicts,
                      "seed %llu, merge %zu: reports differ: merged %zu/%zu held %zu/%zu "
                      "conflicts %zu/%zu",
                      (unsigned long long)seed, k, r1.merged, r2.merged, r1.held, r2.held,
                      r1.conflicts, r2.conflicts);
        seen_conflicts += r2.conflicts;
        seen_held += r2.held;
        tsync_merge_report_clear(&r1);
        tsync_merge_report_clear(&r2);
        compare(file, ref, seed, k, whole);
    }
    /* further merges after it: the sources' final state reaches both the same way */
    for (int i = 0; i < NSRC; i++)
        for (int j = 0; j < NSRC; j++)
            if (i != j) (void)th_sync(src[i], src[j]);
    for (int i = 0; i < NSRC; i++) {
        size_t len;
        bun b;
        b.b = th_bundle(src[i], &len);
        b.len = len;
        tsync__merge_skip_bytes = budget;
        int x1 = merge_path(file, path, &b, NULL);
        tsync__merge_skip_bytes = 0;
        cr_assert_eq(x1, merge_path(plain, path, &b, NULL));
        cr_assert_eq(x1, merge_ref(ref, &b, NULL));
        free(b.b);
        compare(file, plain, seed, norder + (size_t)i, 1);
        compare(file, ref, seed, norder + (size_t)i, whole);
    }
    cr_assert_str_eq(th_hash(file), th_hash(src[0]), "seed %llu: not converged",
                     (unsigned long long)seed);

    free(order);
    for (size_t i = 0; i < nb; i++) free(list[i].b);
    free(list);
    for (int i = 0; i < NSRC; i++) tsync_store_free(src[i]);
    tsync_store_free(file);
    tsync_store_free(plain);
    tsync_store_free(ref);
    th_rmdir(dir);
    tsync__merge_slice_bytes = TSYNC__RUN_PIECE_BYTES;
    tsync__merge_skip_bytes = TSYNC__MERGE_SKIP_BYTES;
}

Test(merge_fold, file_equals_reference, .timeout = 900)
{
    const char *e = getenv("TSYNC_SEED");
    uint64_t seed = th_seed("merge_fold");
    size_t skipped0 = tsync__merge_skipped_total;
    if (e && *e) {
        run_schedule(seed);
        return;
    }
    const char *ns = getenv("TSYNC_MERGE_FOLD_SCHEDULES");
    int n = ns && *ns ? atoi(ns) : 30;
    for (int i = 0; i < n; i++) {
        uint64_t st = seed + (uint64_t)i * 7919;
        run_schedule(th_rand(&st));
    }
    size_t skipped = tsync__merge_skipped_total - skipped0;
    fprintf(stderr, "merge_fold: %zu changes skipped, %zu conflicts, %zu held\n", skipped,
            seen_conflicts, seen_held);
    cr_assert(skipped > 0 && seen_conflicts > 0,
              "the schedules skipped nothing or met no conflict: skipped %zu, conflicts %zu",
              skipped, seen_conflicts);
}

/* The shape of issue 15's regression: an insert round and update rounds of one till, in one
 * file, into a fresh till and into one that wrote the same rows concurrently. Each update round
 * after the first is superseded; the result is the reference's. */
Test(merge_fold, update_rounds_skip, .timeout = 300)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "x.bun");
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    a->seal_batch_rows = 50;
    th_exec(a, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<300) "
               "INSERT INTO products(id, name, price, stock) SELECT printf('k%04d', x), 'n'||x, "
               "x, 1 FROM n");
    th_seal(a);
    /* c writes some of the same rows before it sees a's: concurrent values, conflicts */
    th_exec(c, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<40) "
               "INSERT INTO products(id, name, price) SELECT printf('k%04d', x*7), 'c', -x FROM n");
    th_seal(c);
    for (int r = 0; r < 6; r++) {
        th_exec(a, "UPDATE products SET price=price+1");
        th_seal(a);
    }
    th_exec(c, "UPDATE products SET price=price-100 WHERE id < 'k0100'");
    th_seal(c);
    size_t len;
    bun cb = {th_bundle(c, &len), 0};
    cb.len = len;
    bun ab = {th_bundle(a, &len), 0};
    ab.len = len;
    for (int target = 0; target < 2; target++) {
        char n1[16], n2[16];
        snprintf(n1, sizeof n1, "f%d.db", target);
        snprintf(n2, sizeof n2, "r%d.db", target);
        tsync_store *file = th_open_products(th_path(dir, n1));
        tsync_store *ref = th_open_products(th_path(dir, n2));
        ref->merge_flush_rows = SIZE_MAX;
        if (target) {
            cr_assert_eq(merge_ref(file, &cb, NULL), 0);
            cr_assert_eq(merge_ref(ref, &cb, NULL), 0);
        }
        size_t before = tsync__merge_skipped_total;
        tsync_merge_report r1 = TSYNC_MERGE_REPORT_INIT, r2 = TSYNC_MERGE_REPORT_INIT;
        cr_assert_eq(merge_path(file, path, &ab, &r1), 0);
        cr_assert_eq(merge_ref(ref, &ab, &r2), 0);
        cr_assert_eq(r1.conflicts, r2.conflicts);
        if (target) cr_assert(r2.conflicts > 0);
        tsync_merge_report_clear(&r1);
        tsync_merge_report_clear(&r2);
        /* rounds 1-5 of the 300 rows are superseded by round 6 (the insert, which also counts,
         * starts the chain); a row c wrote first does not win its insert, so its rounds are
         * merged (they record the conflicts) */
        size_t skipped = tsync__merge_skipped_total - before;
        cr_assert(skipped >= (target ? 250u : 300u) * 5, "skipped %zu", skipped);
        compare(file, ref, 0, (size_t)target, 1);
        /* and after it, c's later writes arrive the same way */
        cr_assert_eq(merge_path(file, path, &cb, NULL), merge_ref(ref, &cb, NULL));
        compare(file, ref, 1, (size_t)target, 1);
        tsync_store_free(file);
        tsync_store_free(ref);
    }
    free(ab.b);
    free(cb.b);
    tsync_store_free(a);
    tsync_store_free(c);
    th_rmdir(dir);
}

/* tsync_store_merge on a format-4 buffer takes the file's way (read record by record, the skip
 * summary: memory bounded whatever the bundle's size) and leaves what the file merge and the
 * one-shot reference leave. */
Test(merge_fold, buffer_streams_like_file, .timeout = 300)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "x.bun");
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    a->seal_batch_rows = 100;
    th_exec(a, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<2000) "
               "INSERT INTO products(id, name, price) SELECT printf('k%05d', x), 'n'||x, x FROM n");
    th_seal(a);
    for (int r = 0; r < 5; r++) {
        th_exec(a, "UPDATE products SET price=price+1, name=name||'.'");
        th_seal(a);
    }
    size_t len;
    bun ab = {th_bundle(a, &len), 0};
    ab.len = len;
    tsync_store *buf = th_open_products(th_path(dir, "buf.db"));
    tsync_store *file = th_open_products(th_path(dir, "file.db"));
    tsync_store *ref = th_open_products(th_path(dir, "ref.db"));
    ref->merge_flush_rows = SIZE_MAX;
    size_t before = tsync__merge_skipped_total;
    /* slices small enough that this bundle streams (a bundle under two slices is decoded whole)
     * and spans several */
    tsync__merge_slice_bytes = 4096;
    cr_assert_geq(ab.len, tsync__merge_slice_bytes * 2);
    tsync_merge_report r1 = TSYNC_MERGE_REPORT_INIT, r2 = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(buf, ab.b, ab.len, &r1), 0);
    cr_assert_eq(merge_ref(ref, &ab, &r2), 0);
    cr_assert(r1.merged == r2.merged && r1.conflicts == r2.conflicts);
    tsync_merge_report_clear(&r1);
    tsync_merge_report_clear(&r2);
    /* rounds 1-4 of 2000 rows superseded by round 5 */
    cr_assert_eq(tsync__merge_skipped_total - before, 4 * 2000);
    cr_assert_eq(merge_path(file, path, &ab, NULL), 0);
    compare(buf, ref, 0, 0, 1);
    compare(buf, file, 0, 1, 1);
    /* a damaged buffer is refused as before, whole */
    ab.b[ab.len / 2] ^= 0x40;
    tsync_merge_report r3 = TSYNC_MERGE_REPORT_INIT;
    tsync_store *d = th_open_products(th_path(dir, "d.db"));
    cr_assert_neq(tsync_store_merge(d, ab.b, ab.len, &r3), 0);
    cr_assert_eq(r3.refused, 1);
    cr_assert_eq(th_int(d, "SELECT count(*) FROM products", -1), 0);
    tsync_merge_report_clear(&r3);
    free(ab.b);
    tsync_store_free(a);
    tsync_store_free(buf);
    tsync_store_free(file);
    tsync_store_free(ref);
    tsync_store_free(d);
    th_rmdir(dir);
    tsync__merge_slice_bytes = TSYNC__RUN_PIECE_BYTES;
}
