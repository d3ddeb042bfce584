/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_backup.c — backup (issue 5): tsync_backup of a database of --rows products (default
 * 1,000,000; replicated, stock a PN-counter, written in one transaction and sealed) against the
 * sqlite3 shell's `.backup` of the same file, measured in the same run.
 *
 * - ours: tsync_store_open + tsync_backup(plain) + tsync_store_free, the whole call timed: it seals
 *   (nothing is pending), copies a sealed snapshot with the online backup API into the file,
 *   checks the copy with PRAGMA quick_check while hashing it with BLAKE2b-256, writes manifest and
 *   trailer, fsyncs and renames. Target: ratio <= 1.3.
 * - baseline: `sqlite3 SRC ".backup OUT"`, the whole shell process timed (fork/exec/wait); it
 *   copies with the same API and fsyncs, and checks nothing.
 * Also reported, without a target: an encrypted backup (default Argon2id, moderate), the check of
 *   the plain file (tsync_backup_check: hash, decode, quick_check of a copy in $TMPDIR) and a
 *   restore of it into a fresh path (no key file: a new key is made).
 *
 * Both sides start from the same warm page cache and each output file is removed (untimed) before
 * it is written again; the side that goes first alternates between repetitions.
 *
 * Checks: the backup checks out and its manifest counts --rows products; the shell's copy holds
 * --rows products; the restored database's products hash equals the source's. A wrong result
 * exits 1; a missed target prints MISS.
 */
#include "bench/bench_common.h"
#include "tillsync/backup.h"

#define SHELL "/usr/bin/sqlite3"

static const char *INSERT = "INSERT INTO products(id, name, price, stock) VALUES(?1, ?2, ?3, ?4)";

typedef struct {
    long nrows;
    char src[4400], ours[4400], enc[4400], shell[4400], restored[4400];
    char src_hash[2 * TSYNC_HASH_BYTES + 1];
    size_t ours_bytes, src_bytes;
} job;

/* Runs argv (argv[0] a path); returns its wall time. Fails unless it exits 0. */
static double run_shell(char *const argv[])
{
    fflush(NULL);
    double t0 = bench_now();
    pid_t pid = fork();
    BENCH_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    double t = bench_now() - t0;
    BENCH_CHECK(w == pid, "wait: %s", strerror(errno));
    BENCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (%s %d)", argv[0],
                WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return t;
}

static size_t file_size(const char *path)
{
    struct stat sb;
    BENCH_CHECK(stat(path, &sb) == 0, "%s is missing", path);
    return (size_t)sb.st_size;
}

static void make_source(job *j, uint64_t seed)
{
    bench_row *rows;
    bench_make_rows(seed, j->nrows, &rows, NULL);
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
    j->src_bytes = file_size(j->src);
}

/* tsync_backup of the source into path, the open and close of the store included. */
static double backup_ours(job *j, const char *path, const char *passphrase)
{
    unlink(path);
    bench_settle();
    bench_timer t = bench_start();
    tsync_store *s = bench_store_open(j->src, TSYNC_SYNC_NORMAL);
    tsync_backup_options o = TSYNC_BACKUP_OPTIONS_INIT;
    o.passphrase = passphrase;
    BENCH_TS(tsync_backup(s, path, &o, NULL));
    tsync_store_free(s);
    return bench_stop(t).wall;
}

static double backup_shell(job *j)
{
    char cmd[4500];
    snprintf(cmd, sizeof cmd, ".backup '%s'", j->shell);
    char *argv[] = {SHELL, j->src, cmd, NULL};
    unlink(j->shell);
    bench_settle();
    double w = run_shell(argv);
    sqlite3 *db = NULL;
    BENCH_CHECK(sqlite3_open_v2(j->shell, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open %s",
                j->shell);
    int64_t n = bench_int(db, "SELECT count(*) FROM products");
    sqlite3_close(db);
    BENCH_CHECK(n == j->nrows, "the shell's backup holds %lld rows, expected %ld", (long long)n,
                j->nrows);
    return w;
}

static double check_ours(job *j)
{
    bench_settle();
    bench_timer t = bench_start();
    char *manifest = NULL;
    BENCH_TS(tsync_backup_check(j->ours, NULL, &manifest));
    double w = bench_stop(t).wall;
    char want[64];
    snprintf(want, sizeof want, "\"rows\": %ld", j->nrows);
    BENCH_CHECK(manifest && strstr(manifest, "\"name\": \"products\"") && strstr(manifest, want),
                "the manifest does not count %ld products: %s", j->nrows,
                manifest ? manifest : "(none)");
    free(manifest);
    return w;
}

static double restore_ours(job *j)
{
    bench_rm_db(j->restored);
    bench_settle();
    bench_timer t = bench_start();
    tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
    BENCH_TS(tsync_restore(j->restored, j->ours, NULL, &r));
    double w = bench_stop(t).wall;
    BENCH_CHECK(r.new_key, "a restore without a key file must make one");
    tsync_restore_report_clear(&r);
    tsync_store *s = bench_store_open(j->restored, TSYNC_SYNC_NORMAL);
    uint8_t h[TSYNC_HASH_BYTES];
    char hex[2 * TSYNC_HASH_BYTES + 1];
    BENCH_TS(tsync_store_hash(h, s, "products"));
    for (int i = 0; i < TSYNC_HASH_BYTES; i++) sprintf(hex + 2 * i, "%02x", h[i]);
    tsync_store_free(s);
    BENCH_CHECK(strcmp(hex, j->src_hash) == 0, "the restored products hash %s, the source %s", hex,
                j->src_hash);
    return w;
}

int main(int argc, char **argv)
{
    static const char *const known[] = {"--rows=", "--reps=", "--seed=", "--help", NULL};
    bench_args_check(argc, argv, known,
                     "usage: bench_backup [--rows N] [--reps N] [--seed S]\n"
                     "  --rows  rows of products (default 1000000)\n"
                     "  --reps  repetitions; figures are medians (default 3)\n"
                     "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    job j;
    memset(&j, 0, sizeof j);
    j.nrows = (long)bench_arg_int(argc, argv, "--rows", 1000000);
    int reps = (int)bench_arg_int(argc, argv, "--reps", 3);
    uint64_t seed = bench_seed(argc, argv, 20240601);
    BENCH_CHECK(reps >= 1 && reps <= 64 && j.nrows >= 1, "bad sizes (reps 1..64, rows >= 1)");
    BENCH_CHECK(access(SHELL, X_OK) == 0, "%s is needed as the baseline", SHELL);

    bench_dir_init("bench_backup");
    snprintf(j.src, sizeof j.src, "%s", bench_path("src.db"));
    snprintf(j.ours, sizeof j.ours, "%s", bench_path("ours.tsb"));
    snprintf(j.enc, sizeof j.enc, "%s", bench_path("ours_encrypted.tsb"));
    snprintf(j.shell, sizeof j.shell, "%s", bench_path("shell.db"));
    snprintf(j.restored, sizeof j.restored, "%s", bench_path("restored.db"));
    bench_header("bench_backup", "online backup vs the sqlite3 shell's .backup", seed, reps);
    char *ver[] = {SHELL, "-version", NULL};
    printf("baseline: %s .backup (version below), whole process timed\n", SHELL);
    run_shell(ver);
    printf("%ld rows of %s, replicated, stock a PN-counter; one transaction, sealed, WAL "
           "checkpointed\n",
           j.nrows, BENCH_PRODUCTS_SQL);
    printf("ours: open + tsync_backup (seal, snapshot copy, quick_check, BLAKE2b-256, fsync, "
           "rename) + close; target ratio <= 1.3\n");
    fflush(stdout);

    fprintf(stderr, "[backup] writing %ld source rows\n", j.nrows);
    make_source(&j, seed);

    enum { OURS, SH, ENC, CHK, RST, NS };
    double v[NS][64];
    for (int k = 0; k < reps; k++) {
        fprintf(stderr, "[backup] repetition %d/%d\n", k + 1, reps);
        for (int side = 0; side < 2; side++) {
            if ((side ^ (k & 1)) == 0)
                v[OURS][k] = backup_ours(&j, j.ours, NULL);
            else
                v[SH][k] = backup_shell(&j);
        }
        v[ENC][k] = backup_ours(&j, j.enc, "bench passphrase");
        v[CHK][k] = check_ours(&j);
        v[RST][k] = restore_ours(&j);
    }
    j.ours_bytes = file_size(j.ours);
    BENCH_TS(tsync_backup_check(j.enc, "bench passphrase", NULL));
    double m[NS];
    bench_report rep = {.bench = "backup"};
    bench_fig *f;
    double vs[NS][64];
    memcpy(vs, v, sizeof v);
    for (int i = 0; i < NS; i++) m[i] = bench_median(v[i], reps);
    double mb = (double)j.src_bytes / 1e6;
    f = bench_add(&rep, "backup", "backup, plain (vs sqlite3 .backup)", m[OURS] * 1e3, "ms",
                  m[SH] * 1e3, BENCH_T_RATIO_LE, 1.3);
    bench_extra(f, "rows=%ld db_bytes=%zu file_bytes=%zu mb_per_s=%.0f base_mb_per_s=%.0f", j.nrows,
                j.src_bytes, j.ours_bytes, mb / m[OURS], mb / m[SH]);
    bench_spreads(f, vs[OURS], vs[SH], reps);
    f = bench_add(&rep, "backup_encrypted", "backup, encrypted (vs sqlite3 .backup)", m[ENC] * 1e3,
                  "ms", m[SH] * 1e3, BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld kdf=argon2id_moderate", j.nrows);
    bench_spreads(f, vs[ENC], NULL, reps);
    f = bench_add(&rep, "check", "backup-check of the plain file", m[CHK] * 1e3, "ms", NAN,
                  BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld", j.nrows);
    bench_spreads(f, vs[CHK], NULL, reps);
    f = bench_add(&rep, "restore", "restore of the plain file (fresh path)", m[RST] * 1e3, "ms",
                  NAN, BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld", j.nrows);
    bench_spreads(f, vs[RST], NULL, reps);
    bench_print(&rep);
    printf("restored products hash = source hash = %s\n", j.src_hash);
    printf("bench_backup: all correctness checks passed\n");
    return 0;
}
