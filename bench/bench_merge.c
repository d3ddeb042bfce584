/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_merge.c — merging new rows: --rows (default 100,000) distinct new rows written and
 * sealed at replica A, bundled, and merged into a fresh replica B with tsync_store_merge (bundle
 * decoding, hash chains and signature checks included), against inserting the same rows into a
 * plain table (prepared statement, one transaction) in another file at B. Target: merge time
 * <= 2x the plain insert.
 *
 * Two shapes of A's log: "one batch" (all rows written in one transaction and sealed once) and
 * "batches of N" (--batch-rows, default 1,000: a transaction of N rows sealed after each, the way
 * a running node seals continuously).
 *
 * A, B and the plain insert each run in their own child process, so each peak RSS is that role's.
 * Checks: every batch merged (none held, parked or refused), B holds every row, A and B hash
 * equal, and B's table holds exactly the rows of the plain table.
 */
#include "bench/bench_common.h"
#include "store/internal.h" /* TSYNC__SEAL_BATCH_ROWS */

static const char *INSERT = "INSERT INTO products(id, name, price, stock) VALUES(?1, ?2, ?3, ?4)";

typedef struct {
    /* inputs */
    int sync;
    long nrows, batch_rows; /* batch_rows 0: one transaction, one seal */
    uint64_t seed;
    char apath[4400], bpath[4400], ppath[4400], bundle[4400];
    /* results */
    double a_write, a_seal, a_bundle, b_merge, p_insert;
    size_t nbatches, bundle_len, raw_len;
    long a_rss, b_rss, p_rss;
} job;

static void child_a(void *arg)
{
    job *j = arg;
    bench_row *rows;
    bench_make_rows(j->seed, j->nrows, &rows, NULL);
    bench_rm_db(j->apath);
    tsync_store *s = bench_store_open(j->apath, j->sync);
    bench_products_replicated(s);
    sqlite3 *db = tsync_store_sqlite(s);
    sqlite3_stmt *st = bench_prepare(db, INSERT);
    long per = j->batch_rows ? j->batch_rows : j->nrows;
    size_t sealed = 0, nb;
    j->a_write = j->a_seal = 0;
    for (long i = 0; i < j->nrows; i += per) {
        bench_timer t = bench_start();
        bench_exec(db, "BEGIN");
        for (long k = i; k < i + per && k < j->nrows; k++) {
            bench_bind_row(st, &rows[k]);
            bench_step_done(db, st);
        }
        bench_exec(db, "COMMIT");
        j->a_write += bench_stop(t).wall;
        t = bench_start();
        BENCH_TS(tsync_store_seal(s, &nb));
        j->a_seal += bench_stop(t).wall;
        /* Sealing cuts a batch at TSYNC__SEAL_BATCH_ROWS row changes. */
        long n = per < j->nrows - i ? per : j->nrows - i;
        size_t want = (size_t)((n + TSYNC__SEAL_BATCH_ROWS - 1) / TSYNC__SEAL_BATCH_ROWS);
        BENCH_CHECK(nb == want, "sealing rows %ld.. made %zu batches, expected %zu", i, nb, want);
        sealed += nb;
    }
    sqlite3_finalize(st);
    uint8_t *b = NULL;
    size_t len = 0;
    bench_timer t = bench_start();
    BENCH_TS(tsync_store_bundle(&b, &len, s, NULL, &nb));
    j->a_bundle = bench_stop(t).wall;
    BENCH_CHECK(nb == sealed, "the bundle holds %zu batches, A sealed %zu", nb, sealed);
    j->nbatches = nb;
    j->bundle_len = len;
    j->raw_len = (size_t)bench_bundle_raw_size(b, len);
    bench_write_file(j->bundle, b, len);
    free(b);
    tsync_store_free(s);
    free(rows);
    j->a_rss = bench_maxrss_kb();
}

static void child_b(void *arg)
{
    job *j = arg;
    bench_rm_db(j->bpath);
    tsync_store *s = bench_store_open(j->bpath, j->sync);
    bench_products_replicated(s);
    size_t len;
    uint8_t *b = bench_read_file(j->bundle, &len);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    bench_timer t = bench_start();
    int rc = tsync_store_merge(s, b, len, &r);
    j->b_merge = bench_stop(t).wall;
    for (size_t i = 0; i < r.nmessages; i++) fprintf(stderr, "merge: %s\n", r.messages[i]);
    BENCH_CHECK(rc == 0, "merge failed: %s: %s", tsync_strerror(rc),
                tsync_error_last() ? tsync_error_last()->message : "");
    BENCH_CHECK(r.merged == j->nbatches && r.held == 0 && r.parked == 0 && r.refused == 0 &&
                    r.duplicates == 0 && r.conflicts == 0,
                "merge report: merged %zu of %zu, held %zu, parked %zu, refused %zu, duplicates "
                "%zu, conflicts %zu",
                r.merged, j->nbatches, r.held, r.parked, r.refused, r.duplicates, r.conflicts);
    tsync_merge_report_clear(&r);
    int64_t n = bench_int(tsync_store_sqlite(s), "SELECT count(*) FROM products");
    BENCH_CHECK(n == j->nrows, "B holds %lld rows after the merge, expected %ld", (long long)n,
                j->nrows);
    free(b);
    tsync_store_free(s);
    j->b_rss = bench_maxrss_kb();
}

static void child_plain(void *arg)
{
    job *j = arg;
    bench_row *rows;
    bench_make_rows(j->seed, j->nrows, &rows, NULL);
    bench_rm_db(j->ppath);
    sqlite3 *db = bench_plain_open(j->ppath, j->sync);
    bench_exec(db, BENCH_PRODUCTS_SQL);
    sqlite3_stmt *st = bench_prepare(db, INSERT);
    bench_timer t = bench_start();
    bench_exec(db, "BEGIN");
    for (long i = 0; i < j->nrows; i++) {
        bench_bind_row(st, &rows[i]);
        bench_step_done(db, st);
    }
    bench_exec(db, "COMMIT");
    j->p_insert = bench_stop(t).wall;
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(rows);
    j->p_rss = bench_maxrss_kb();
}

/* The store's and a plain connection's settings, compared once. */
static void child_pragmas(void *arg)
{
    job *j = arg;
    char p1[4500], p2[4500];
    snprintf(p1, sizeof p1, "%s.p1", j->apath);
    snprintf(p2, sizeof p2, "%s.p2", j->apath);
    bench_rm_db(p1);
    bench_rm_db(p2);
    tsync_store *s = bench_store_open(p1, j->sync);
    sqlite3 *db = bench_plain_open(p2, j->sync);
    printf("synchronous=%s, both connections: %s\n", bench_sync_name(j->sync),
           bench_same_pragmas(tsync_store_sqlite(s), db));
    sqlite3_close(db);
    tsync_store_free(s);
    bench_rm_db(p1);
    bench_rm_db(p2);
}

static void run_case(bench_report *rep, job *j, int reps, const char *key, const char *what)
{
    enum { WR, SEAL, BUN, MERGE, PLAIN, NS };
    double v[NS][64];
    long a_rss = 0, b_rss = 0, p_rss = 0;
    for (int k = 0; k < reps; k++) {
        fflush(stdout);
        fprintf(stderr, "[merge %s] repetition %d/%d\n", key, k + 1, reps);
        long rss = bench_child("replica A", child_a, j);
        a_rss = rss > a_rss ? rss : a_rss;
        /* alternate which goes first: the merge or the plain insert */
        for (int side = 0; side < 2; side++) {
            if ((side ^ (k & 1)) == 0) {
                rss = bench_child("plain insert", child_plain, j);
                p_rss = rss > p_rss ? rss : p_rss;
            } else {
                rss = bench_child("replica B", child_b, j);
                b_rss = rss > b_rss ? rss : b_rss;
            }
        }
        char ha[2 * TSYNC_HASH_BYTES + 1];
        snprintf(ha, sizeof ha, "%s", bench_file_hash(j->apath));
        const char *hb = bench_file_hash(j->bpath);
        BENCH_CHECK(strcmp(ha, hb) == 0, "A and B differ after the merge: %s vs %s", ha, hb);
        int64_t d = bench_files_diff(j->bpath, j->ppath);
        BENCH_CHECK(d == 0, "B and the plain table differ in %lld rows", (long long)d);
        v[WR][k] = j->a_write;
        v[SEAL][k] = j->a_seal;
        v[BUN][k] = j->a_bundle;
        v[MERGE][k] = j->b_merge;
        v[PLAIN][k] = j->p_insert;
    }
    double m[NS];
    for (int i = 0; i < NS; i++) m[i] = bench_median(v[i], reps);
    const char *sn = bench_sync_name(j->sync);
    char name[80], label[88];
    bench_fig *f;
#define FIG(k2, lab, val, unit, base, tk, tg)                                                      \
    (snprintf(name, sizeof name, "%s.%s", key, k2),                                                \
     snprintf(label, sizeof label, "%s: %s", what, lab),                                           \
     f = bench_add(rep, name, label, val, unit, base, tk, tg))
    FIG("merge", "B merges (vs plain insert)", m[MERGE] * 1e3, "ms", m[PLAIN] * 1e3,
        BENCH_T_RATIO_LE, 2.0);
    bench_extra(f, "rows=%ld batches=%zu sync=%s changes_per_s=%.0f plain_rows_per_s=%.0f",
                j->nrows, j->nbatches, sn, j->nrows / m[MERGE], j->nrows / m[PLAIN]);
    bench_spreads(f, v[MERGE], v[PLAIN], reps);
    FIG("merge_rate", "B merge rate", j->nrows / m[MERGE], "chg/s", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld sync=%s", j->nrows, sn);
    FIG("bundle_create", "A creates the bundle", m[BUN] * 1e3, "ms", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "batches=%zu", j->nbatches);
    bench_spreads(f, v[BUN], NULL, reps);
    FIG("bundle_bytes", "bundle size (zstd)", (double)j->bundle_len, "B", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "raw_bytes=%zu bytes_per_row=%.1f", j->raw_len,
                (double)j->bundle_len / (double)j->nrows);
    FIG("a_write", "A writes the rows (vs plain insert)", m[WR] * 1e3, "ms", m[PLAIN] * 1e3,
        BENCH_T_NONE, 0);
    bench_extra(f, "sync=%s", sn);
    bench_spreads(f, v[WR], v[PLAIN], reps);
    FIG("a_seal", "A seals them", m[SEAL] * 1e3, "ms", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "batches=%zu rows_per_s=%.0f", j->nbatches, j->nrows / m[SEAL]);
    bench_spreads(f, v[SEAL], NULL, reps);
    FIG("rss_b", "peak RSS of B's merge process", b_rss / 1024.0, "MB", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "plain_insert_rss_mb=%.1f", p_rss / 1024.0);
    FIG("rss_a", "peak RSS of A's process", a_rss / 1024.0, "MB", NAN, BENCH_T_NONE, 0);
#undef FIG
}

int main(int argc, char **argv)
{
    static const char *const known[] = {
        "--rows=", "--batch-rows=", "--sync=", "--reps=", "--seed=", "--help", NULL};
    bench_args_check(argc, argv, known,
                     "usage: bench_merge [--rows N] [--batch-rows N] [--sync normal|full]\n"
                     "                   [--reps N] [--seed S]\n"
                     "  --rows        distinct new rows (default 100000)\n"
                     "  --batch-rows  rows per sealed batch in the second case (default 1000;\n"
                     "                0 skips it)\n"
                     "  --sync        synchronous mode of every database (default normal)\n"
                     "  --reps        repetitions; figures are medians (default 3)\n"
                     "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    int modes = bench_sync_modes(argc, argv, "normal");
    BENCH_CHECK(modes != 3, "--sync takes normal or full here");
    job *j = bench_shared(sizeof *j);
    j->sync = modes == 2 ? TSYNC_SYNC_FULL : TSYNC_SYNC_NORMAL;
    j->nrows = (long)bench_arg_int(argc, argv, "--rows", 100000);
    long batch_rows = (long)bench_arg_int(argc, argv, "--batch-rows", 1000);
    int reps = (int)bench_arg_int(argc, argv, "--reps", 3);
    j->seed = bench_seed(argc, argv, 20240601);
    BENCH_CHECK(reps >= 1 && reps <= 64 && j->nrows >= 1, "bad sizes (reps 1..64, rows >= 1)");

    bench_dir_init("bench_merge");
    snprintf(j->apath, sizeof j->apath, "%s", bench_path("a.db"));
    snprintf(j->bpath, sizeof j->bpath, "%s", bench_path("b.db"));
    snprintf(j->ppath, sizeof j->ppath, "%s", bench_path("plain.db"));
    snprintf(j->bundle, sizeof j->bundle, "%s", bench_path("a.bundle"));
    bench_header("bench_merge", "merging distinct new rows vs inserting them into a plain table",
                 j->seed, reps);
    printf("%ld distinct new rows (keys p0000000.. in random order, random values); schema: %s; "
           "stock is a PN-counter\n",
           j->nrows, BENCH_PRODUCTS_SQL);
    printf("merge time = tsync_store_merge only (decode, hash chain, signature, apply, commit); "
           "ratio = merge / plain insert of the same rows in one transaction; target <= 2.0\n");
    bench_child("settings check", child_pragmas, j);

    bench_report rep = {.bench = "merge"};
    j->batch_rows = 0;
    run_case(&rep, j, reps, "one_batch", "1 batch");
    if (batch_rows > 0 && batch_rows < j->nrows) {
        char what[48];
        snprintf(what, sizeof what, "batches of %ld", batch_rows);
        j->batch_rows = batch_rows;
        run_case(&rep, j, reps, "many_batches", what);
    }
    bench_print(&rep);
    printf("bench_merge: all correctness checks passed\n");
    return 0;
}
