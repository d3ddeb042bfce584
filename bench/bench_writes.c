/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_writes.c — what replication costs a local write: the same upserts through prepared
 * statements into a replicated table (on the store's own connection, so the capture triggers run)
 * and into a plain table in another database file opened with identical PRAGMAs, in the same run.
 *
 *   a) --rows upserts (default 100,000) of new rows in one transaction;
 *   a') the same upserts again over the now existing rows (the update path), one transaction;
 *   b) --txn-rows upserts (default 10,000; --full-txn-rows under FULL) of new rows, one
 *      transaction each: sealed once at the end, and separately sealed every 100 transactions
 *      the way a running node seals continuously.
 *
 * Each is reported as writes alone (replicated vs plain) and as writes plus sealing everything
 * (tsync_store_seal), both as ratios against the plain writes; the target is ratio <= 1.5.
 * Checks: row counts, the replicated and plain tables hold identical rows, every seal produced
 * the batches it should and a last seal finds nothing left.
 */
#include "bench/bench_common.h"
#include "store/internal.h" /* TSYNC__SEAL_BATCH_ROWS */

static const char *UPSERT =
    "INSERT INTO products(id, name, price, stock) VALUES(?1, ?2, ?3, ?4) ON CONFLICT(id) DO "
    "UPDATE SET name=excluded.name, price=excluded.price, stock=excluded.stock";

/* All rows in one transaction. */
static double write_one_txn(sqlite3 *db, sqlite3_stmt *st, const bench_row *rows, long n)
{
    bench_timer t = bench_start();
    bench_exec(db, "BEGIN");
    for (long i = 0; i < n; i++) {
        bench_bind_row(st, &rows[i]);
        bench_step_done(db, st);
    }
    bench_exec(db, "COMMIT");
    return bench_stop(t).wall;
}

/* One transaction per row (autocommit). With s and every > 0, seals after every `every`
 * transactions and at the end; *nbatches counts the batches sealed. */
static double write_each(sqlite3 *db, sqlite3_stmt *st, const bench_row *rows, long n,
                         tsync_store *s, long every, size_t *nbatches)
{
    size_t nb = 0, k;
    bench_timer t = bench_start();
    for (long i = 0; i < n; i++) {
        bench_bind_row(st, &rows[i]);
        bench_step_done(db, st);
        if (s && every && (i + 1) % every == 0) {
            BENCH_TS(tsync_store_seal(s, &k));
            nb += k;
        }
    }
    if (s && every && n % every) {
        BENCH_TS(tsync_store_seal(s, &k));
        nb += k;
    }
    double w = bench_stop(t).wall;
    if (nbatches) *nbatches = nb;
    return w;
}

/* Sealing cuts a batch at TSYNC__SEAL_BATCH_ROWS row changes (docs/DATA_MODEL.md, "Sizes"):
 * rows changed rows make this many batches. */
static size_t batches_for(long rows)
{
    return (size_t)((rows + TSYNC__SEAL_BATCH_ROWS - 1) / TSYNC__SEAL_BATCH_ROWS);
}

static double seal_all(tsync_store *s, size_t expect)
{
    size_t nb = 0;
    bench_timer t = bench_start();
    BENCH_TS(tsync_store_seal(s, &nb));
    double w = bench_stop(t).wall;
    BENCH_CHECK(nb == expect, "sealing produced %zu batches, expected %zu", nb, expect);
    BENCH_TS(tsync_store_seal(s, &nb));
    BENCH_CHECK(nb == 0, "a second seal found %zu more batches", nb);
    return w;
}

static sqlite3 *open_plain_products(const char *path, int sync)
{
    bench_rm_db(path);
    sqlite3 *db = bench_plain_open(path, sync);
    bench_exec(db, BENCH_PRODUCTS_SQL);
    return db;
}

static tsync_store *open_repl_products(const char *path, int sync)
{
    bench_rm_db(path);
    tsync_store *s = bench_store_open(path, sync);
    bench_products_replicated(s);
    return s;
}

static void check_same(const char *repl, const char *plain, long n)
{
    sqlite3 *db = bench_plain_open(repl, TSYNC_SYNC_NORMAL);
    int64_t cnt = bench_int(db, "SELECT count(*) FROM products");
    BENCH_CHECK(cnt == n, "%s holds %lld rows, expected %ld", repl, (long long)cnt, n);
    int64_t d = bench_products_diff(db, plain);
    BENCH_CHECK(d == 0, "replicated and plain tables differ in %lld rows", (long long)d);
    sqlite3_close(db);
}

/* Per-repetition samples of one sync mode. */
enum {
    A_PLAIN,
    A_REPL,
    A_SEAL,
    A2_PLAIN,
    A2_REPL,
    A2_SEAL,
    B_PLAIN,
    B_REPL,
    B_SEAL,
    B_SEAL100,
    NSERIES
};

static void run_mode(bench_report *rep, int sync, long nrows, long ntxn, int reps, uint64_t seed,
                     char *pragmas)
{
    bench_row *rows, *rows2;
    bench_make_rows(seed, nrows > ntxn ? nrows : ntxn, &rows, &rows2);
    double v[NSERIES][64];
    char rpath[4400], r2path[4400], ppath[4400];
    snprintf(rpath, sizeof rpath, "%s", bench_path("repl.db"));
    snprintf(r2path, sizeof r2path, "%s", bench_path("repl2.db"));
    snprintf(ppath, sizeof ppath, "%s", bench_path("plain.db"));
    const char *sn = bench_sync_name(sync);

    for (int k = 0; k < reps; k++) {
        fflush(stdout);
        fprintf(stderr, "[writes %s] repetition %d/%d\n", sn, k + 1, reps);
        /* a, a': one transaction; alternate which side goes first. */
        for (int side = 0; side < 2; side++) {
            bench_settle();
            if ((side ^ (k & 1)) == 0) {
                sqlite3 *db = open_plain_products(ppath, sync);
                sqlite3_stmt *st = bench_prepare(db, UPSERT);
                v[A_PLAIN][k] = write_one_txn(db, st, rows, nrows);
                v[A2_PLAIN][k] = write_one_txn(db, st, rows2, nrows);
                sqlite3_finalize(st);
                sqlite3_close(db);
            } else {
                tsync_store *s = open_repl_products(rpath, sync);
                sqlite3 *db = tsync_store_sqlite(s);
                sqlite3_stmt *st = bench_prepare(db, UPSERT);
                v[A_REPL][k] = write_one_txn(db, st, rows, nrows);
                v[A_SEAL][k] = seal_all(s, batches_for(nrows));
                v[A2_REPL][k] = write_one_txn(db, st, rows2, nrows);
                v[A2_SEAL][k] = seal_all(s, batches_for(nrows));
                sqlite3_finalize(st);
                if (k == 0) {
                    sqlite3 *pdb = bench_plain_open(bench_path("pragmas.db"), sync);
                    snprintf(pragmas, 512, "%s", bench_same_pragmas(db, pdb));
                    sqlite3_close(pdb);
                    bench_rm_db(bench_path("pragmas.db"));
                }
                tsync_store_free(s);
            }
        }
        check_same(rpath, ppath, nrows);

        /* b: one transaction per row: plain, replicated, replicated sealing every 100; the
         * order rotates between repetitions (fsync latency drifts on a shared disk). */
        for (int q = 0; q < 3; q++) {
            int which = (q + k) % 3;
            bench_settle();
            if (which == 0) {
                sqlite3 *db = open_plain_products(ppath, sync);
                sqlite3_stmt *st = bench_prepare(db, UPSERT);
                v[B_PLAIN][k] = write_each(db, st, rows, ntxn, NULL, 0, NULL);
                sqlite3_finalize(st);
                sqlite3_close(db);
            } else if (which == 1) {
                tsync_store *s = open_repl_products(rpath, sync);
                sqlite3 *db = tsync_store_sqlite(s);
                sqlite3_stmt *st = bench_prepare(db, UPSERT);
                v[B_REPL][k] = write_each(db, st, rows, ntxn, NULL, 0, NULL);
                v[B_SEAL][k] = seal_all(s, batches_for(ntxn));
                sqlite3_finalize(st);
                tsync_store_free(s);
            } else {
                tsync_store *s = open_repl_products(r2path, sync);
                sqlite3 *db = tsync_store_sqlite(s);
                sqlite3_stmt *st = bench_prepare(db, UPSERT);
                size_t nb = 0;
                v[B_SEAL100][k] = write_each(db, st, rows, ntxn, s, 100, &nb);
                size_t expect = (size_t)((ntxn + 99) / 100);
                BENCH_CHECK(nb == expect,
                            "sealing every 100 transactions made %zu batches, expected %zu", nb,
                            expect);
                BENCH_TS(tsync_store_seal(s, &nb));
                BENCH_CHECK(nb == 0, "%zu batches left unsealed", nb);
                sqlite3_finalize(st);
                tsync_store_free(s);
            }
        }
        check_same(rpath, ppath, ntxn);
        check_same(r2path, ppath, ntxn);
        bench_rm_db(r2path);
    }

    double m[NSERIES], sum_a[64], sum_a2[64], sum_b[64];
    for (int k = 0; k < reps; k++) {
        sum_a[k] = v[A_REPL][k] + v[A_SEAL][k];
        sum_a2[k] = v[A2_REPL][k] + v[A2_SEAL][k];
        sum_b[k] = v[B_REPL][k] + v[B_SEAL][k];
    }
    for (int i = 0; i < NSERIES; i++) m[i] = bench_median(v[i], reps);
    double ma = bench_median(sum_a, reps), ma2 = bench_median(sum_a2, reps),
           mb = bench_median(sum_b, reps);

    char name[80], label[88], lb[80];
    bench_fig *f;
#define FIG(key, lab, val, base, tk)                                                               \
    (snprintf(name, sizeof name, "%s.%s", sn, key),                                                \
     snprintf(label, sizeof label, "%-6s %s", sn, lab),                                            \
     f = bench_add(rep, name, label, (val)*1e3, "ms", (base)*1e3, tk, 1.5))
    FIG("upsert_new_1txn.writes", "a) new rows, 1 txn: writes", m[A_REPL], m[A_PLAIN],
        BENCH_T_RATIO_LE);
    bench_extra(f, "rows=%ld sync=%s repl_rows_per_s=%.0f plain_rows_per_s=%.0f", nrows, sn,
                nrows / m[A_REPL], nrows / m[A_PLAIN]);
    bench_spreads(f, v[A_REPL], v[A_PLAIN], reps);
    FIG("upsert_new_1txn.writes_seal", "a) new rows, 1 txn: writes + seal", ma, m[A_PLAIN],
        BENCH_T_RATIO_LE);
    bench_extra(f, "rows=%ld sync=%s", nrows, sn);
    bench_spreads(f, sum_a, v[A_PLAIN], reps);
    FIG("upsert_new_1txn.seal", "a) new rows: seal alone", m[A_SEAL], NAN, BENCH_T_NONE);
    bench_extra(f, "rows=%ld sync=%s rows_per_s=%.0f", nrows, sn, nrows / m[A_SEAL]);
    bench_spreads(f, v[A_SEAL], NULL, reps);
    FIG("upsert_existing_1txn.writes", "a') existing rows, 1 txn: writes", m[A2_REPL], m[A2_PLAIN],
        BENCH_T_RATIO_LE);
    bench_extra(f, "rows=%ld sync=%s", nrows, sn);
    bench_spreads(f, v[A2_REPL], v[A2_PLAIN], reps);
    FIG("upsert_existing_1txn.writes_seal", "a') existing rows, 1 txn: writes + seal", ma2,
        m[A2_PLAIN], BENCH_T_RATIO_LE);
    bench_extra(f, "rows=%ld sync=%s", nrows, sn);
    bench_spreads(f, sum_a2, v[A2_PLAIN], reps);
    FIG("upsert_existing_1txn.seal", "a') existing rows: seal alone", m[A2_SEAL], NAN,
        BENCH_T_NONE);
    bench_extra(f, "rows=%ld sync=%s rows_per_s=%.0f", nrows, sn, nrows / m[A2_SEAL]);
    bench_spreads(f, v[A2_SEAL], NULL, reps);
    snprintf(lb, sizeof lb, "b) %ld txns of 1 row: writes", ntxn);
    FIG("txn_each.writes", lb, m[B_REPL], m[B_PLAIN], BENCH_T_RATIO_LE);
    bench_extra(f, "txns=%ld sync=%s repl_txn_per_s=%.0f plain_txn_per_s=%.0f", ntxn, sn,
                ntxn / m[B_REPL], ntxn / m[B_PLAIN]);
    bench_spreads(f, v[B_REPL], v[B_PLAIN], reps);
    snprintf(lb, sizeof lb, "b) %ld txns: writes + 1 seal at end", ntxn);
    FIG("txn_each.writes_seal", lb, mb, m[B_PLAIN], BENCH_T_RATIO_LE);
    bench_extra(f, "txns=%ld sync=%s seal_ms=%.2f", ntxn, sn, m[B_SEAL] * 1e3);
    bench_spreads(f, sum_b, v[B_PLAIN], reps);
    snprintf(lb, sizeof lb, "b) %ld txns: writes, seal every 100", ntxn);
    FIG("txn_each.writes_seal_every_100", lb, m[B_SEAL100], m[B_PLAIN], BENCH_T_RATIO_LE);
    bench_extra(f, "txns=%ld sync=%s batches=%ld", ntxn, sn, (ntxn + 99) / 100);
    bench_spreads(f, v[B_SEAL100], v[B_PLAIN], reps);
#undef FIG
    free(rows);
    free(rows2);
}

int main(int argc, char **argv)
{
    static const char *const known[] = {"--rows=", "--txn-rows=", "--full-txn-rows=", "--sync=",
                                        "--reps=", "--seed=",     "--help",           NULL};
    bench_args_check(argc, argv, known,
                     "usage: bench_writes [--rows N] [--txn-rows N] [--full-txn-rows N]\n"
                     "                    [--sync normal|full|both] [--reps N] [--seed S]\n"
                     "  --rows           upserts in one transaction (default 100000)\n"
                     "  --txn-rows       one-row transactions under NORMAL (default 10000)\n"
                     "  --full-txn-rows  one-row transactions under FULL (default 10000)\n"
                     "  --sync           synchronous modes to run (default both)\n"
                     "  --reps           repetitions; figures are medians (default 3)\n"
                     "environment: TSYNC_BENCH_DIR (scratch folder parent, default .),\n"
                     "             TSYNC_BENCH_KEEP (keep the scratch folder)\n");
    long nrows = (long)bench_arg_int(argc, argv, "--rows", 100000);
    long ntxn = (long)bench_arg_int(argc, argv, "--txn-rows", 10000);
    long nfull = (long)bench_arg_int(argc, argv, "--full-txn-rows", 10000);
    int reps = (int)bench_arg_int(argc, argv, "--reps", 3);
    int modes = bench_sync_modes(argc, argv, "both");
    uint64_t seed = bench_seed(argc, argv, 20240601);
    BENCH_CHECK(reps >= 1 && reps <= 64 && nrows >= 1 && ntxn >= 1 && nfull >= 1,
                "bad sizes (reps 1..64, rows >= 1)");

    bench_dir_init("bench_writes");
    bench_header("bench_writes", "local writes to a replicated table vs a plain table", seed, reps);
    printf("schema: %s; stock is a PN-counter; writes: prepared upsert on the store's connection "
           "vs a plain connection to another file\n",
           BENCH_PRODUCTS_SQL);
    printf("ratio = replicated time / plain time (same writes, same run); target ratio <= 1.5\n");
    if (modes & 2 && nfull < ntxn)
        printf("note: under synchronous=FULL case b) runs %ld one-row transactions instead of %ld "
               "(one fsync per commit dominates both sides; --full-txn-rows to change)\n",
               nfull, ntxn);
    fflush(stdout);

    bench_report rep = {.bench = "writes"};
    static char prag[2][512];
    if (modes & 1) run_mode(&rep, TSYNC_SYNC_NORMAL, nrows, ntxn, reps, seed, prag[0]);
    if (modes & 2) run_mode(&rep, TSYNC_SYNC_FULL, nrows, nfull, reps, seed, prag[1]);
    if (prag[0][0]) printf("synchronous=NORMAL, both connections: %s\n", prag[0]);
    if (prag[1][0]) printf("synchronous=FULL, both connections: %s\n", prag[1]);
    bench_print(&rep);
    printf("bench_writes: all correctness checks passed\n");
    return 0;
}
