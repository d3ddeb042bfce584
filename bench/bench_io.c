/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_io.c — CSV export and import (issue 5): rows/s of tsync__export and tsync__import
 * against the sqlite3 shell doing the same job on the same rows, measured in the same run.
 *
 * The table is products (bench_common.h's schema, stock a PN-counter) with --rows rows (default
 * 200,000; some names hold commas and quotes) in a replicated store, written once and sealed.
 * - export: tsync__export(products, CSV) to a file (the store reopened first, so its page cache is
 *   cold like the shell's) vs `sqlite3 -csv -header DB "SELECT * FROM products" > file`, the whole
 *   shell process timed (fork/exec/wait). Target: ratio <= 1.5.
 * - import: tsync__import of our exported file into a fresh replicated products table (upserts,
 *   capture, commit, and the seal tsync__import ends with) vs `sqlite3 DB ".import --csv --skip 1
 *   FILE products"` into a fresh plain table of the same schema (WAL, synchronous=NORMAL, as the
 *   store's connection), the whole shell process timed. Target: ratio <= 3. The seal is also
 *   reported on its own (it starts when the import's COMMIT statement ends, seen via
 *   sqlite3_trace_v2), and so is tsync__import into a plain, not replicated, table.
 *
 * Checks: both exports hold --rows data lines; every imported table holds exactly the source's
 * rows (EXCEPT both ways, through a fresh connection); the replicated import hashes equal to the
 * source (tsync_store_hash of products). A wrong result exits 1; a missed target prints MISS.
 */
#include "bench/bench_common.h"
#include "store/io.h"

#define SHELL "/usr/bin/sqlite3"

static const char *INSERT = "INSERT INTO products(id, name, price, stock) VALUES(?1, ?2, ?3, ?4)";

typedef struct {
    long nrows;
    char src[4400], ours_csv[4400], shell_csv[4400], imp_r[4400], imp_p[4400], imp_s[4400];
    char src_hash[2 * TSYNC_HASH_BYTES + 1];
    size_t ours_bytes, shell_bytes;
} job;

/* ---------------------------------------------------------------- helpers */

/* Runs argv (argv[0] a path) with stdout to out_path (NULL: inherited); returns its wall time.
 * Fails unless it exits 0. */
static double run_shell(char *const argv[], const char *out_path)
{
    fflush(NULL);
    double t0 = bench_now();
    pid_t pid = fork();
    BENCH_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (out_path) {
            FILE *f = freopen(out_path, "wb", stdout);
            if (!f) _exit(126);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    double t = bench_now() - t0;
    BENCH_CHECK(w == pid, "wait: %s", strerror(errno));
    int last = 0;
    while (argv[last + 1]) last++;
    BENCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s ... %s failed (%s %d)", argv[0],
                argv[last], WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return t;
}

/* Number of '\n' in a file, and its size. */
static long count_lines(const char *path, size_t *bytes)
{
    FILE *f = fopen(path, "rb");
    BENCH_CHECK(f, "cannot read %s", path);
    char buf[1 << 16];
    size_t n, total = 0;
    long lines = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        total += n;
        for (char *p = buf; (p = memchr(p, '\n', (size_t)(buf + n - p))); p++) lines++;
    }
    fclose(f);
    *bytes = total;
    return lines;
}

static void rows_of(const char *path, long want, const char *what)
{
    sqlite3 *db = NULL;
    BENCH_CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open %s",
                path);
    int64_t n = bench_int(db, "SELECT count(*) FROM products");
    sqlite3_close(db);
    BENCH_CHECK(n == want, "%s holds %lld rows, expected %ld", what, (long long)n, want);
}

/* ---------------------------------------------------------------- source */

static void make_source(job *j, uint64_t seed)
{
    bench_row *rows;
    bench_make_rows(seed, j->nrows, &rows, NULL);
    for (long i = 0; i < j->nrows; i++) {
        long k = atol(rows[i].id + 1);
        if (i % 10 == 3)
            snprintf(rows[i].name, sizeof rows[i].name, "Nut, \"M%ld\"", k);
        else if (i % 10 == 7)
            snprintf(rows[i].name, sizeof rows[i].name, "Bolt \"x\" %ld", k);
        else if (i % 10 == 5)
            snprintf(rows[i].name, sizeof rows[i].name, "a,b,c %ld", k);
    }
    bench_rm_db(j->src);
    tsync_store *s = bench_store_open(j->src, TSYNC_SYNC_NORMAL);
    bench_products_replicated(s);
    sqlite3 *db = tsync_store_sqlite(s);
    sqlite3_stmt *st = bench_prepare(db, INSERT);
    bench_exec(db, "BEGIN");
    for (long i = 0; i < j->nrows; i++) {
        bench_bind_row(st, &rows[i]);
        bench_step_done(db, st);
    }
    bench_exec(db, "COMMIT");
    sqlite3_finalize(st);
    BENCH_TS(tsync_store_seal(s, NULL));
    uint8_t h[TSYNC_HASH_BYTES];
    BENCH_TS(tsync_store_hash(h, s, "products"));
    for (int i = 0; i < TSYNC_HASH_BYTES; i++) sprintf(j->src_hash + 2 * i, "%02x", h[i]);
    bench_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    tsync_store_free(s);
    free(rows);
}

/* ---------------------------------------------------------------- export */

static double export_ours(job *j)
{
    tsync_store *s = bench_store_open(j->src, TSYNC_SYNC_NORMAL);
    bench_settle();
    bench_timer t = bench_start();
    FILE *f = fopen(j->ours_csv, "wb");
    BENCH_CHECK(f, "cannot write %s", j->ours_csv);
    size_t n = 0;
    BENCH_TS(tsync__export(s, "products", NULL, TSYNC__IO_CSV, f, &n));
    BENCH_CHECK(fclose(f) == 0, "cannot write %s", j->ours_csv);
    double w = bench_stop(t).wall;
    tsync_store_free(s);
    BENCH_CHECK(n == (size_t)j->nrows, "tsync__export wrote %zu rows, expected %ld", n, j->nrows);
    long lines = count_lines(j->ours_csv, &j->ours_bytes);
    BENCH_CHECK(lines == j->nrows + 1, "our export has %ld lines, expected %ld", lines,
                j->nrows + 1);
    return w;
}

static double export_shell(job *j)
{
    char *argv[] = {SHELL, "-csv", "-header", j->src, "SELECT * FROM products", NULL};
    bench_settle();
    double w = run_shell(argv, j->shell_csv);
    long lines = count_lines(j->shell_csv, &j->shell_bytes);
    BENCH_CHECK(lines == j->nrows + 1, "the shell's export has %ld lines, expected %ld", lines,
                j->nrows + 1);
    return w;
}

/* ---------------------------------------------------------------- import */

typedef struct {
    double t_commit; /* when the import's COMMIT statement ended (0: not yet) */
} trace_ctx;

static int trace_cb(unsigned type, void *ctx, void *p, void *x)
{
    (void)x;
    trace_ctx *c = ctx;
    if (type == SQLITE_TRACE_PROFILE && c->t_commit == 0) {
        const char *sql = sqlite3_sql((sqlite3_stmt *)p);
        if (sql && strcmp(sql, "COMMIT") == 0) c->t_commit = bench_now();
    }
    return 0;
}

/* tsync__import of our export into a fresh store's products (replicated or not). Returns the
 * total time; *seal (may be NULL) receives the part after the import's COMMIT. */
static double import_ours(job *j, const char *path, int replicated, double *seal)
{
    bench_rm_db(path);
    tsync_store *s = bench_store_open(path, TSYNC_SYNC_NORMAL);
    if (replicated)
        bench_products_replicated(s);
    else
        bench_exec(tsync_store_sqlite(s), BENCH_PRODUCTS_SQL);
    trace_ctx tc = {0};
    if (seal) sqlite3_trace_v2(tsync_store_sqlite(s), SQLITE_TRACE_PROFILE, trace_cb, &tc);
    tsync__import_opts o;
    memset(&o, 0, sizeof o);
    o.name = j->ours_csv;
    o.format = TSYNC__IO_CSV;
    bench_settle();
    bench_timer t = bench_start();
    FILE *f = fopen(j->ours_csv, "rb");
    BENCH_CHECK(f, "cannot read %s", j->ours_csv);
    BENCH_TS(tsync__import(s, "products", f, &o));
    fclose(f);
    double end = bench_now(), w = end - t.w0;
    if (seal) {
        sqlite3_trace_v2(tsync_store_sqlite(s), 0, NULL, NULL);
        BENCH_CHECK(tc.t_commit > 0, "the import's COMMIT was not seen");
        *seal = end - tc.t_commit;
    }
    BENCH_CHECK(o.rows == (size_t)j->nrows && o.imported == (size_t)j->nrows && o.rejected == 0,
                "tsync__import read %zu rows, imported %zu, rejected %zu; expected %ld", o.rows,
                o.imported, o.rejected, j->nrows);
    if (replicated) {
        size_t nb = 1;
        BENCH_TS(tsync_store_seal(s, &nb));
        BENCH_CHECK(nb == 0, "a seal after tsync__import found %zu more batches", nb);
        uint8_t h[TSYNC_HASH_BYTES];
        char hex[2 * TSYNC_HASH_BYTES + 1];
        BENCH_TS(tsync_store_hash(h, s, "products"));
        for (int i = 0; i < TSYNC_HASH_BYTES; i++) sprintf(hex + 2 * i, "%02x", h[i]);
        BENCH_CHECK(strcmp(hex, j->src_hash) == 0,
                    "the imported replicated table hashes %s, the source %s", hex, j->src_hash);
    }
    tsync_store_free(s);
    rows_of(path, j->nrows, replicated ? "the replicated import" : "the plain tsync__import");
    int64_t d = bench_files_diff(path, j->src);
    BENCH_CHECK(d == 0, "%s differs from the source in %lld rows", path, (long long)d);
    return w;
}

static double import_shell(job *j)
{
    bench_rm_db(j->imp_s);
    sqlite3 *db = bench_plain_open(j->imp_s, TSYNC_SYNC_NORMAL);
    bench_exec(db, BENCH_PRODUCTS_SQL);
    sqlite3_close(db);
    char cmd[4600];
    snprintf(cmd, sizeof cmd, ".import --csv --skip 1 '%s' products", j->ours_csv);
    char *argv[] = {SHELL, "-bail", "-cmd", "PRAGMA synchronous=NORMAL", j->imp_s, cmd, NULL};
    bench_settle();
    double w = run_shell(argv, NULL);
    rows_of(j->imp_s, j->nrows, "the shell's import");
    int64_t d = bench_files_diff(j->imp_s, j->src);
    BENCH_CHECK(d == 0, "the shell's import differs from the source in %lld rows", (long long)d);
    return w;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    static const char *const known[] = {"--rows=", "--reps=", "--seed=", "--help", NULL};
    bench_args_check(argc, argv, known,
                     "usage: bench_io [--rows N] [--reps N] [--seed S]\n"
                     "  --rows  rows of products (default 200000)\n"
                     "  --reps  repetitions; figures are medians (default 3)\n"
                     "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    job j;
    memset(&j, 0, sizeof j);
    j.nrows = (long)bench_arg_int(argc, argv, "--rows", 200000);
    int reps = (int)bench_arg_int(argc, argv, "--reps", 3);
    uint64_t seed = bench_seed(argc, argv, 20240601);
    BENCH_CHECK(reps >= 1 && reps <= 64 && j.nrows >= 1, "bad sizes (reps 1..64, rows >= 1)");
    BENCH_CHECK(access(SHELL, X_OK) == 0, "%s is needed as the baseline", SHELL);

    bench_dir_init("bench_io");
    snprintf(j.src, sizeof j.src, "%s", bench_path("src.db"));
    snprintf(j.ours_csv, sizeof j.ours_csv, "%s", bench_path("ours.csv"));
    snprintf(j.shell_csv, sizeof j.shell_csv, "%s", bench_path("shell.csv"));
    snprintf(j.imp_r, sizeof j.imp_r, "%s", bench_path("import_replicated.db"));
    snprintf(j.imp_p, sizeof j.imp_p, "%s", bench_path("import_plain.db"));
    snprintf(j.imp_s, sizeof j.imp_s, "%s", bench_path("import_shell.db"));
    bench_header("bench_io", "CSV export and import vs the sqlite3 shell", seed, reps);
    char *ver[] = {SHELL, "-version", NULL};
    printf("baseline: %s (version below), whole process timed\n", SHELL);
    run_shell(ver, NULL);
    printf("%ld rows (keys p0000000.. in random order, random values, 3 in 10 names with commas "
           "or quotes); schema: %s; stock is a PN-counter; synchronous=NORMAL everywhere\n",
           j.nrows, BENCH_PRODUCTS_SQL);
    printf("export: tsync__export(products, CSV) vs sqlite3 -csv -header; target ratio <= 1.5\n"
           "import: tsync__import of that CSV into a fresh replicated table (capture + commit + "
           "seal) vs sqlite3 .import --csv --skip 1 into a fresh plain table; target ratio <= 3\n");
    fflush(stdout);

    fprintf(stderr, "[io] writing %ld source rows\n", j.nrows);
    make_source(&j, seed);

    enum { EX, EXS, IM, SEAL, IMP, IMS, NS };
    double v[NS][64];
    for (int k = 0; k < reps; k++) {
        fprintf(stderr, "[io] repetition %d/%d\n", k + 1, reps);
        /* alternate which side goes first */
        for (int side = 0; side < 2; side++) {
            if ((side ^ (k & 1)) == 0)
                v[EX][k] = export_ours(&j);
            else
                v[EXS][k] = export_shell(&j);
        }
        for (int side = 0; side < 2; side++) {
            if ((side ^ (k & 1)) == 0) {
                v[IM][k] = import_ours(&j, j.imp_r, 1, &v[SEAL][k]);
                v[IMP][k] = import_ours(&j, j.imp_p, 0, NULL);
            } else {
                v[IMS][k] = import_shell(&j);
            }
        }
    }
    /* the import without its seal, per repetition (before bench_median sorts the arrays) */
    double vi[64], m[NS];
    for (int k = 0; k < reps; k++) vi[k] = v[IM][k] - v[SEAL][k];
    double mi = bench_median(vi, reps);
    for (int i = 0; i < NS; i++) m[i] = bench_median(v[i], reps);

    bench_report rep = {.bench = "io"};
    double n = (double)j.nrows;
    bench_fig *f;
    f = bench_add(&rep, "export_csv", "export CSV (vs sqlite3 -csv)", m[EX] * 1e3, "ms",
                  m[EXS] * 1e3, BENCH_T_RATIO_LE, 1.5);
    bench_extra(f, "rows=%ld rows_per_s=%.0f base_rows_per_s=%.0f bytes=%zu base_bytes=%zu",
                j.nrows, n / m[EX], n / m[EXS], j.ours_bytes, j.shell_bytes);
    bench_spreads(f, v[EX], v[EXS], reps);
    f = bench_add(&rep, "export_rate", "export rate (vs sqlite3 -csv)", n / m[EX], "rows/s",
                  n / m[EXS], BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld", j.nrows);
    f = bench_add(&rep, "import_csv", "import CSV, replicated, with seal (vs .import)", m[IM] * 1e3,
                  "ms", m[IMS] * 1e3, BENCH_T_RATIO_LE, 3.0);
    bench_extra(f, "rows=%ld rows_per_s=%.0f base_rows_per_s=%.0f seal_ms=%.1f", j.nrows, n / m[IM],
                n / m[IMS], m[SEAL] * 1e3);
    bench_spreads(f, v[IM], v[IMS], reps);
    f = bench_add(&rep, "import_rate", "import rate, replicated (vs .import)", n / m[IM], "rows/s",
                  n / m[IMS], BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld", j.nrows);
    f = bench_add(&rep, "import_no_seal", "  of which import until COMMIT (vs .import)", mi * 1e3,
                  "ms", m[IMS] * 1e3, BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld rows_per_s=%.0f", j.nrows, n / mi);
    bench_spreads(f, vi, v[IMS], reps);
    f = bench_add(&rep, "import_seal", "  of which the seal", m[SEAL] * 1e3, "ms", NAN,
                  BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld rows_per_s=%.0f", j.nrows, n / m[SEAL]);
    bench_spreads(f, v[SEAL], NULL, reps);
    f = bench_add(&rep, "import_plain_csv", "import CSV, plain table (vs .import)", m[IMP] * 1e3,
                  "ms", m[IMS] * 1e3, BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld rows_per_s=%.0f base_rows_per_s=%.0f", j.nrows, n / m[IMP],
                n / m[IMS]);
    bench_spreads(f, v[IMP], v[IMS], reps);
    bench_print(&rep);
    printf("replicated import hash = source hash = %s\n", j.src_hash);
    printf("bench_io: all correctness checks passed\n");
    return 0;
}
