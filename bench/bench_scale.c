/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_scale.c — tillsync at N = 10k, 100k (default) and 1M rows (--full) against plain
 * SQLite doing the same statements in the same run and in the same key order: a products-like
 * table (id TEXT key, name, price INTEGER, stock INTEGER; no counter column, so every column is
 * last-writer-wins like the CLI's `tillsync replicate`).
 *
 * Per N, in key order and in random key order (the order-sensitive steps):
 *   insert N rows in one transaction, seal them, bundle them, merge the bundle into a fresh till
 *   (compared with the plain insert in the same order);
 * then, in key order only (the statements are the same whatever the insert order was):
 *   UPDATE of all rows, DELETE of N/10 rows, DELETE of the rest, each with and without sealing;
 *   9 more full UPDATE rounds; delete-all and re-insert; a fresh till joining after the 10 rounds
 *   by merging the bundle of everything, and one made from a backup (tsync_backup, tsync_restore).
 * Sizes (file after a checkpoint, and metadata bytes per live row split into clock, tomb, log and
 * other tsync_* tables, from the dbstat virtual table; without dbstat only the file sizes) after
 * the inserts, after the first and the tenth update round, after delete-all and after re-insert.
 *
 * Every operation runs in its own forked child: its peak RSS is the child's ru_maxrss from wait4,
 * so one operation's peak cannot hide the next one's. The parent holds no rows and no connection.
 * Targets (PERFORMANCE.md, issue 15) are printed PASS/MISS and never fail the run; wrong results
 * (row counts, a merge that is not complete, replicas that differ) exit 1.
 */
#include "bench/bench_common.h"
#include "tillsync/backup.h"

enum { O_KEY, O_RANDOM };
static const char *const ORDER_NAME[] = {"key", "random"};

typedef struct {
    /* inputs */
    long n;
    int order, sync, dbstat, printed;
    char apath[4400], bpath[4400], cpath[4400], ppath[4400], bundle[4400], backup[4400], sql[512];
    /* outputs of the last child */
    double t;
    size_t nbatches, bytes;
    long changes;
    /* sizes: file, then bytes in clock, tomb, log, other tsync_*, the table itself */
    int64_t file, clk, tomb, log, other, user, live;
} job;

/* ---------------------------------------------------------------- rows */

static uint64_t SEED; /* --seed: 0 by default, the figures in docs/BENCHMARKS.md */

static uint64_t mix(uint64_t x)
{
    bench_rng r = {x ^ SEED};
    return bench_rand(&r);
}

/* A random permutation of [0, n) without a table: a 4-round Feistel network on the smallest
 * power of 4 >= n, walking the cycle until the value falls inside (the parent and the children
 * then agree on the order without holding it). */
static long permute(long i, long n)
{
    int bits = 2;
    while ((1L << bits) < n) bits += 2;
    uint64_t half = (uint64_t)bits / 2, mask = (1ULL << half) - 1, x = (uint64_t)i;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (uint64_t k = 0; k < 4; k++) {
            uint64_t t = l ^ (mix(r * 4 + k + 0x5ca1eULL) & mask);
            l = r;
            r = t;
        }
        x = (l << half) | r;
    } while (x >= (uint64_t)n);
    return (long)x;
}

static void bind_row(sqlite3_stmt *st, long k, int round)
{
    char id[16], name[40];
    snprintf(id, sizeof id, "p%07ld", k);
    snprintf(name, sizeof name, "Product %ld%s", k, round ? " again" : "");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, 100 + (int64_t)(mix((uint64_t)k) % 100000));
    sqlite3_bind_int64(st, 4, (int64_t)(mix((uint64_t)k ^ 0xfeedULL) % 1000));
}

#define PRODUCTS_SQL                                                                               \
    "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, stock INTEGER)"

/* Empties the WAL before a timed step, untimed: otherwise an automatic checkpoint of an earlier
 * step's pages lands inside whichever step happens to cross the threshold. */
static void checkpoint(sqlite3 *db)
{
    bench_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
}

/* Inserts the N rows in the job's order in one transaction; returns the seconds it took. */
static double insert_rows(sqlite3 *db, const job *j, int round)
{
    sqlite3_stmt *st =
        bench_prepare(db, "INSERT INTO products(id, name, price, stock) VALUES(?1, ?2, ?3, ?4)");
    checkpoint(db);
    double t0 = bench_now();
    bench_exec(db, "BEGIN");
    for (long i = 0; i < j->n; i++) {
        bind_row(st, j->order == O_RANDOM ? permute(i, j->n) : i, round);
        bench_step_done(db, st);
    }
    bench_exec(db, "COMMIT");
    double t = bench_now() - t0;
    sqlite3_finalize(st);
    return t;
}

/* ---------------------------------------------------------------- the children */

static tsync_store *open_a(const job *j, const char *path)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.synchronous = j->sync;
    tsync_store *s = NULL;
    BENCH_TS(tsync_store_open(&s, path, &o));
    return s;
}

static void c_plain_create(void *arg)
{
    job *j = arg;
    bench_rm_db(j->ppath);
    sqlite3 *db = bench_plain_open(j->ppath, j->sync);
    bench_exec(db, PRODUCTS_SQL);
    sqlite3_close(db);
}

static void c_ts_create(void *arg)
{
    job *j = arg;
    const char *path = j->sql[0] == 'B' ? j->bpath : j->apath;
    bench_rm_db(path);
    tsync_store *s = bench_store_open(path, j->sync);
    bench_exec(tsync_store_sqlite(s), PRODUCTS_SQL);
    BENCH_TS(tsync_store_replicate(s, "products", NULL, 0));
    if (j->sql[0] != 'B' && !j->printed) {
        j->printed = 1;
        sqlite3 *db = bench_plain_open(j->ppath, j->sync);
        printf("settings of both connections: %s\n", bench_same_pragmas(tsync_store_sqlite(s), db));
        sqlite3_close(db);
    }
    tsync_store_free(s);
}

/* j->changes: 0 the first values, 1 the re-insert's (other names) */
static void c_plain_insert(void *arg)
{
    job *j = arg;
    sqlite3 *db = bench_plain_open(j->ppath, j->sync);
    j->t = insert_rows(db, j, j->changes);
    sqlite3_close(db);
}

static void c_ts_insert(void *arg)
{
    job *j = arg;
    tsync_store *s = open_a(j, j->apath);
    j->t = insert_rows(tsync_store_sqlite(s), j, j->changes);
    tsync_store_free(s);
}

static void c_ts_seal(void *arg)
{
    job *j = arg;
    tsync_store *s = open_a(j, j->apath);
    checkpoint(tsync_store_sqlite(s));
    double t0 = bench_now();
    BENCH_TS(tsync_store_seal(s, &j->nbatches));
    j->t = bench_now() - t0;
    size_t nb;
    BENCH_TS(tsync_store_seal(s, &nb));
    BENCH_CHECK(nb == 0, "a second seal found %zu more batches", nb);
    tsync_store_free(s);
}

/* One statement (j->sql) on the plain table (j->changes < 0 asks for it) or the replicated one. */
static void c_sql(void *arg)
{
    job *j = arg;
    int plain = j->changes < 0;
    tsync_store *s = plain ? NULL : open_a(j, j->apath);
    sqlite3 *db = plain ? bench_plain_open(j->ppath, j->sync) : tsync_store_sqlite(s);
    checkpoint(db);
    double t0 = bench_now();
    bench_exec(db, j->sql);
    j->t = bench_now() - t0;
    j->changes = sqlite3_changes(db);
    if (plain) sqlite3_close(db);
    tsync_store_free(s);
}

static void c_bundle(void *arg)
{
    job *j = arg;
    tsync_store *s = open_a(j, j->apath);
    uint8_t *bun = NULL;
    size_t len = 0;
    double t0 = bench_now();
    BENCH_TS(tsync_store_bundle(&bun, &len, s, NULL, &j->nbatches));
    j->t = bench_now() - t0;
    j->bytes = len;
    bench_write_file(j->bundle, bun, len);
    free(bun);
    tsync_store_free(s);
}

static void c_merge(void *arg)
{
    job *j = arg;
    tsync_store *s = open_a(j, j->bpath);
    size_t len;
    uint8_t *bun = bench_read_file(j->bundle, &len);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    checkpoint(tsync_store_sqlite(s));
    double t0 = bench_now();
    int rc = tsync_store_merge(s, bun, len, &r);
    j->t = bench_now() - t0;
    for (size_t i = 0; i < r.nmessages; i++) fprintf(stderr, "merge: %s\n", r.messages[i]);
    BENCH_CHECK(rc == 0, "merge failed: %s: %s", tsync_strerror(rc),
                tsync_error_last() ? tsync_error_last()->message : "");
    BENCH_CHECK(r.merged == j->nbatches && r.held == 0 && r.parked == 0 && r.refused == 0,
                "merge report: merged %zu of %zu, held %zu, parked %zu, refused %zu", r.merged,
                j->nbatches, r.held, r.parked, r.refused);
    tsync_merge_report_clear(&r);
    free(bun);
    tsync_store_free(s);
}

/* A's backup file (tsync_backup: seals, copies, checks, writes). */
static void c_backup(void *arg)
{
    job *j = arg;
    tsync_store *s = open_a(j, j->apath);
    unlink(j->backup);
    double t0 = bench_now();
    BENCH_TS(tsync_backup(s, j->backup, NULL, NULL));
    j->t = bench_now() - t0;
    struct stat st;
    BENCH_CHECK(stat(j->backup, &st) == 0, "no backup file %s", j->backup);
    j->bytes = (size_t)st.st_size;
    tsync_store_free(s);
}

/* A new till (C, no database and no key file) made from A's backup, then checked against A. */
static void c_restore(void *arg)
{
    job *j = arg;
    bench_rm_db(j->cpath);
    tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
    double t0 = bench_now();
    BENCH_TS(tsync_restore(j->cpath, j->backup, NULL, &r));
    j->t = bench_now() - t0;
    BENCH_CHECK(r.new_key, "restoring into a new till made no new key");
    tsync_restore_report_clear(&r);
}

static void c_same_restored(void *arg)
{
    job *j = arg;
    char ha[2 * TSYNC_HASH_BYTES + 1];
    snprintf(ha, sizeof ha, "%s", bench_file_hash(j->apath));
    BENCH_CHECK(strcmp(ha, bench_file_hash(j->cpath)) == 0, "A and its restored copy differ");
    bench_rm_db(j->cpath);
    unlink(j->backup);
}

/* A and B show the same rows (checked after the timing, in its own child), and A the plain
 * table's; with j->sql[0] 'P' only the latter. */
static void c_same(void *arg)
{
    job *j = arg;
    char ha[2 * TSYNC_HASH_BYTES + 1];
    snprintf(ha, sizeof ha, "%s", bench_file_hash(j->apath));
    if (j->sql[0] != 'P')
        BENCH_CHECK(strcmp(ha, bench_file_hash(j->bpath)) == 0, "A and B differ after the merge");
    BENCH_CHECK(bench_files_diff(j->apath, j->ppath) == 0, "A and the plain table differ");
}

/* Sizes of a database file (j->sql[0] 'P': the plain one) after a checkpoint. */
static void c_size(void *arg)
{
    job *j = arg;
    const char *path = j->sql[0] == 'P' ? j->ppath : j->apath;
    sqlite3 *db = bench_plain_open(path, j->sync);
    bench_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    j->file = bench_int(db, "PRAGMA page_count") * bench_int(db, "PRAGMA page_size");
    j->live = bench_int(db, "SELECT count(*) FROM products");
    j->clk = j->tomb = j->log = j->other = j->user = -1;
    sqlite3_stmt *st = NULL;
    j->dbstat = sqlite3_prepare_v2(db,
                                   "SELECT "
                                   "sum(CASE WHEN name LIKE '%tsync_clk%' THEN pgsize END), "
                                   "sum(CASE WHEN name LIKE '%tsync_tomb%' THEN pgsize END), "
                                   "sum(CASE WHEN name LIKE '%tsync_log%' THEN pgsize END), "
                                   "sum(CASE WHEN name LIKE '%tsync%' AND name NOT LIKE "
                                   "'%tsync_clk%' AND name NOT LIKE '%tsync_tomb%' AND name NOT "
                                   "LIKE '%tsync_log%' THEN pgsize END), "
                                   "sum(CASE WHEN name NOT LIKE '%tsync%' THEN pgsize END) "
                                   "FROM dbstat",
                                   -1, &st, NULL) == SQLITE_OK;
    if (j->dbstat) {
        BENCH_CHECK(sqlite3_step(st) == SQLITE_ROW, "dbstat: %s", sqlite3_errmsg(db));
        int64_t *out[] = {&j->clk, &j->tomb, &j->log, &j->other, &j->user};
        for (int i = 0; i < 5; i++) *out[i] = sqlite3_column_int64(st, i);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---------------------------------------------------------------- driving */

static job *J;
static bench_report *R;
static char NK[24]; /* "n100000" */

static long run(const char *what, void (*fn)(void *))
{
    return bench_child(what, fn, J);
}

static double plain_sql(const char *sql, long *rss)
{
    snprintf(J->sql, sizeof J->sql, "%s", sql);
    J->changes = -1;
    *rss = run(sql, c_sql);
    return J->t;
}

static double ts_sql(const char *sql, long *rss, long *changes)
{
    snprintf(J->sql, sizeof J->sql, "%s", sql);
    J->changes = 0;
    *rss = run(sql, c_sql);
    *changes = J->changes;
    return J->t;
}

static double ts_seal(long *rss, size_t *nb)
{
    *rss = run("seal", c_ts_seal);
    *nb = J->nbatches;
    return J->t;
}

/* One time figure against a baseline, and the operation's peak RSS against the baseline's. */
static void fig(const char *key, const char *label, double t, double base, double target, long rss,
                long base_rss)
{
    char name[80], lb[88];
    snprintf(name, sizeof name, "%s.%s", NK, key);
    snprintf(lb, sizeof lb, "%s", label);
    bench_fig *f = bench_add(R, name, lb, t * 1e3, "ms", base > 0 ? base * 1e3 : NAN,
                             target > 0 ? BENCH_T_RATIO_LE : BENCH_T_NONE, target);
    bench_extra(f, "rows=%ld", J->n);
    if (rss > 0) bench_extra(f, "rss_mb=%.1f", rss / 1024.0);
    if (base_rss > 0) bench_extra(f, "base_rss_mb=%.1f", base_rss / 1024.0);
    if (rss <= 0) return;
    snprintf(name, sizeof name, "%s.%s.rss", NK, key);
    snprintf(lb, sizeof lb, "  peak RSS of it%s", base_rss > 0 ? " (vs plain)" : "");
    bench_add(R, name, lb, rss / 1024.0, "MB", base_rss > 0 ? base_rss / 1024.0 : NAN,
              BENCH_T_VALUE_LT, 64);
}

typedef struct {
    int64_t file, pfile, meta, clk, tomb, log, other, live;
} sizes;

static sizes measure_sizes(const char *stage)
{
    sizes z;
    J->sql[0] = 'P';
    run("size of the plain file", c_size);
    z.pfile = J->file;
    J->sql[0] = 'A';
    run("size of the replicated file", c_size);
    z.file = J->file;
    z.live = J->live;
    z.clk = J->clk, z.tomb = J->tomb, z.log = J->log, z.other = J->other;
    z.meta = J->dbstat ? z.clk + z.tomb + z.log + z.other : z.file - z.pfile;
    char name[80], lb[88];
    snprintf(name, sizeof name, "%s.size.%s", NK, stage);
    snprintf(lb, sizeof lb, "file %s (vs plain)", stage);
    bench_fig *f =
        bench_add(R, name, lb, (double)z.file / 1e6, "MB", (double)z.pfile / 1e6, BENCH_T_NONE, 0);
    bench_extra(f, "live_rows=%lld", (long long)z.live);
    snprintf(name, sizeof name, "%s.meta.%s", NK, stage);
    double per = z.live ? (double)z.meta / (double)z.live : NAN;
    snprintf(lb, sizeof lb, "  metadata B per live row (%s)", z.live ? "all tsync_*" : "no rows");
    f = bench_add(R, name, lb, z.live ? per : (double)z.meta, z.live ? "B/row" : "B", NAN,
                  z.live ? BENCH_T_VALUE_LE : BENCH_T_NONE, 40);
    if (J->dbstat)
        bench_extra(f, "clock_b=%lld tomb_b=%lld log_b=%lld other_b=%lld per_row_of_n=%.1f",
                    (long long)z.clk, (long long)z.tomb, (long long)z.log, (long long)z.other,
                    (double)z.meta / (double)J->n);
    else
        bench_extra(f, "dbstat=absent");
    return z;
}

/* Insert, seal, bundle, merge in one key order; with full, then the statements, rounds, joins and
 * sizes. The side that inserts first alternates between the orders. */
static void order_steps(int order, int full, int rounds, int join)
{
    long rp, ri, rs, rb, rm, r;
    size_t nb;
    J->order = order;
    const char *o = ORDER_NAME[order];
    char key[64], lb[88];
    run("create plain", c_plain_create);
    J->sql[0] = 'A';
    run("create A", c_ts_create);
    J->changes = 0; /* round 0 of the values */
    int first = order == O_KEY ? 1 : 0;
    double tp, ti;
    if (first)
        rp = run("plain insert", c_plain_insert), tp = J->t, ri = run("insert", c_ts_insert),
        ti = J->t;
    else
        ri = run("insert", c_ts_insert), ti = J->t, rp = run("plain insert", c_plain_insert),
        tp = J->t;
    double tsl = ts_seal(&rs, &nb);
    size_t ins_batches = nb;
#define K(s) (snprintf(key, sizeof key, "%s.%s", o, s), key)
#define L(s) (snprintf(lb, sizeof lb, "%-6s %s", o, s), lb)
    fig(K("insert"), L("insert N rows (1 txn) vs plain"), ti, tp, 0, ri, rp);
    fig(K("seal"), L("  seal them (vs plain insert)"), tsl, tp, 0, rs, 0);
    bench_extra(&R->f[R->n - 2], "batches=%zu", nb);
    fig(K("insert_seal"), L("insert + seal vs plain insert"), ti + tsl, tp, 1.5, 0, 0);
    rb = run("bundle", c_bundle);
    fig(K("bundle"), L("bundle all"), J->t, 0, 0, rb, 0);
    bench_extra(&R->f[R->n - 2], "bytes=%zu batches=%zu", J->bytes, J->nbatches);
    BENCH_CHECK(J->nbatches == ins_batches, "the bundle holds %zu batches, %zu sealed", J->nbatches,
                ins_batches);
    J->sql[0] = 'B';
    run("create B", c_ts_create);
    rm = run("merge", c_merge);
    fig(K("merge"), L("merge into a fresh till vs plain insert"), J->t, tp, 1.5, rm, rp);
    run("compare", c_same);
    if (!full) return;

    /* key order only from here: bulk statements, rounds, sizes */
    sizes s0 = measure_sizes("after_insert");
    long pr, tr, sr, ch;
    double pu = plain_sql("UPDATE products SET price=price+1", &pr);
    double tu = ts_sql("UPDATE products SET price=price+1", &tr, &ch);
    BENCH_CHECK(ch == J->n, "UPDATE changed %ld rows", ch);
    double su = ts_seal(&sr, &nb);
    fig(K("update"), L("UPDATE all rows vs plain"), tu, pu, 0, tr, pr);
    fig(K("update_seal"), L("UPDATE all + seal vs plain"), tu + su, pu, 3, 0, 0);
    fig(K("update_sealonly"), L("  seal of the UPDATE"), su, 0, 0, sr, 0);
    bench_extra(&R->f[R->n - 2], "batches=%zu", nb);
    sizes s1 = measure_sizes("after_round1");
    double tround = 0;
    for (int k = 2; k <= rounds; k++) {
        fprintf(stderr, "[scale %ld] update round %d/%d\n", J->n, k, rounds);
        plain_sql("UPDATE products SET price=price+1", &r);
        tround += ts_sql("UPDATE products SET price=price+1", &r, &ch);
        tround += ts_seal(&r, &nb);
    }
    char st[32];
    snprintf(st, sizeof st, "after_round%d", rounds);
    sizes s10 = measure_sizes(st);
    snprintf(key, sizeof key, "%s.size_growth", NK);
    snprintf(lb, sizeof lb, "file after %d rounds vs after round 1", rounds);
    bench_fig *f = bench_add(R, key, lb, (double)s10.file / 1e6, "MB", (double)s1.file / 1e6,
                             BENCH_T_RATIO_LE, 2);
    bench_extra(f, "rounds=%d rounds_ms=%.0f plain_after_ratio=%.2f", rounds, tround * 1e3,
                (double)s10.file / (double)s10.pfile);
    (void)s0;
    if (join) {
        rb = run("bundle after the rounds", c_bundle);
        fig(K("bundle_rounds"), L("bundle all after the rounds"), J->t, 0, 0, rb, 0);
        bench_extra(&R->f[R->n - 2], "bytes=%zu batches=%zu", J->bytes, J->nbatches);
        J->sql[0] = 'B';
        run("create B", c_ts_create);
        rm = run("merge after the rounds", c_merge);
        fig(K("merge_rounds"), L("fresh till merges it vs plain insert"), J->t, tp, 0, rm, rp);
        run("compare", c_same);
        rb = run("backup", c_backup);
        fig(K("backup_rounds"), L("backup after the rounds"), J->t, 0, 0, rb, 0);
        bench_extra(&R->f[R->n - 2], "bytes=%zu", J->bytes);
        rm = run("restore", c_restore);
        fig(K("restore_rounds"), L("a new till restores it"), J->t, 0, 0, rm, 0);
        run("compare the restored till", c_same_restored);
    }

    char sql[160];
    snprintf(sql, sizeof sql, "DELETE FROM products WHERE id < 'p%07ld'", J->n / 10);
    double pd = plain_sql(sql, &pr);
    double td = ts_sql(sql, &tr, &ch);
    BENCH_CHECK(ch == J->n / 10, "DELETE changed %ld rows", ch);
    double sd = ts_seal(&sr, &nb);
    fig(K("delete10"), L("DELETE N/10 rows vs plain"), td, pd, 0, tr, pr);
    fig(K("delete10_seal"), L("DELETE N/10 + seal vs plain"), td + sd, pd, 3, sr, 0);
    pd = plain_sql("DELETE FROM products", &pr);
    td = ts_sql("DELETE FROM products", &tr, &ch);
    BENCH_CHECK(ch == J->n - J->n / 10, "DELETE of the rest changed %ld rows", ch);
    sd = ts_seal(&sr, &nb);
    fig(K("delete_rest"), L("DELETE the other 9N/10 vs plain"), td, pd, 0, tr, pr);
    fig(K("delete_rest_seal"), L("DELETE the other 9N/10 + seal"), td + sd, pd, 3, sr, 0);
    measure_sizes("after_delete_all");
    J->changes = 1; /* new names: the re-inserted rows differ from the first ones */
    rp = run("plain re-insert", c_plain_insert), tp = J->t;
    ri = run("re-insert", c_ts_insert), ti = J->t;
    tsl = ts_seal(&rs, &nb);
    fig(K("reinsert_seal"), L("re-insert N deleted rows + seal"), ti + tsl, tp, 1.5, ri, rp);
    bench_extra(&R->f[R->n - 2], "seal_ms=%.1f seal_rss_mb=%.1f", tsl * 1e3, rs / 1024.0);
    measure_sizes("after_reinsert");
    J->sql[0] = 'P';
    run("compare", c_same);
#undef K
#undef L
}

int main(int argc, char **argv)
{
    static const char *const known[] = {
        "--sizes=", "--full",    "--rounds=", "--orders=", "--sync=",
        "--seed=",  "--no-join", "--help",    NULL};
    bench_args_check(argc, argv, known,
                     "usage: bench_scale [--sizes N,N,...] [--full] [--rounds R] [--orders "
                     "key,random] [--no-join] [--sync normal|full] [--seed S]\n"
                     "  --sizes   row counts (default 10000,100000)\n"
                     "  --full    adds 1000000 (each 1M case costs minutes)\n"
                     "  --rounds  full UPDATE rounds for the disk figures (default 10)\n"
                     "  --orders  insert orders measured (default key,random)\n"
                     "  --no-join skip the fresh till merging everything after the rounds\n"
                     "  --seed    changes the rows' values and the random order (default 0)\n"
                     "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    int sm = bench_sync_modes(argc, argv, "normal");
    BENCH_CHECK(sm != 3, "--sync takes normal or full here");
    int rounds = (int)bench_arg_int(argc, argv, "--rounds", 10);
    BENCH_CHECK(rounds >= 1 && rounds <= 100, "--rounds: 1..100");
    const char *orders = bench_arg(argc, argv, "--orders");
    int do_random = !orders || strstr(orders, "random");
    int join = !bench_has_flag(argc, argv, "--no-join");
    long sizes_v[16];
    int nsizes = 0;
    const char *sz = bench_arg(argc, argv, "--sizes");
    if (!sz) sz = "10000,100000";
    for (const char *p = sz; *p && nsizes < 15;) {
        char *end;
        long v = strtol(p, &end, 10);
        BENCH_CHECK(end != p && v >= 10 && v <= 9999999, "--sizes: numbers 10..9999999");
        sizes_v[nsizes++] = v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') BENCH_CHECK(0, "--sizes: numbers separated by commas");
    }
    if (bench_has_flag(argc, argv, "--full")) sizes_v[nsizes++] = 1000000;

    SEED = bench_seed(argc, argv, 0);
    J = bench_shared(sizeof *J);
    J->sync = sm == 2 ? TSYNC_SYNC_FULL : TSYNC_SYNC_NORMAL;
    bench_dir_init("bench_scale");
    snprintf(J->apath, sizeof J->apath, "%s", bench_path("a.db"));
    snprintf(J->bpath, sizeof J->bpath, "%s", bench_path("b.db"));
    snprintf(J->ppath, sizeof J->ppath, "%s", bench_path("plain.db"));
    snprintf(J->bundle, sizeof J->bundle, "%s", bench_path("all.bundle"));
    snprintf(J->cpath, sizeof J->cpath, "%s", bench_path("c.db"));
    snprintf(J->backup, sizeof J->backup, "%s", bench_path("a.backup"));
    bench_header("bench_scale", "tillsync at 10k / 100k / 1M rows vs plain SQLite", SEED, 1);
    printf("products(id TEXT PRIMARY KEY, name, price INTEGER, stock INTEGER), no counters; "
           "synchronous=%s; each operation in its own child process (peak RSS = its ru_maxrss); "
           "ratio = tillsync / plain SQLite, same statement, same key order, same run\n",
           bench_sync_name(J->sync));
    printf("load average at start: %s", bench_read_load());
    bench_report *rep = calloc(1, sizeof *rep);
    BENCH_CHECK(rep, "out of memory");
    R = rep;
    for (int i = 0; i < nsizes; i++) {
        memset(rep, 0, sizeof *rep);
        rep->bench = "scale";
        J->n = sizes_v[i];
        snprintf(NK, sizeof NK, "n%ld", J->n);
        fprintf(stderr, "[scale %ld] key order\n", J->n);
        printf("\n== N = %ld rows\n", J->n);
        order_steps(O_KEY, 1, rounds, join);
        if (do_random) {
            fprintf(stderr, "[scale %ld] random order\n", J->n);
            order_steps(O_RANDOM, 0, rounds, join);
        }
        bench_print(rep);
        printf("load average after N = %ld: %s", J->n, bench_read_load());
        fflush(stdout);
    }
    free(rep);
    printf("bench_scale: all correctness checks passed\n");
    return 0;
}
