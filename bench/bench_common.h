/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_common.h — what the benchmarks share: clocks and peak RSS, a fixed-seed PRNG,
 * command-line knobs, a scratch folder, plain SQLite connections opened exactly like a store's,
 * content checks, child processes (so each role's peak RSS is its own), and the result table
 * printed both as aligned text and as one "RESULT ..." line per figure.
 *
 * Design notes
 * - Every figure is a ratio against a baseline measured in the same run, and every benchmark
 *   checks its own result (row counts, replica hashes, plain vs replicated content); a wrong
 *   result exits 1. A missed speed target is printed as MISS and does not change the exit code.
 * - The baseline connection must differ from the store's only in not being replicated, so it is
 *   opened with the PRAGMAs of store/store.c and bench_same_pragmas() refuses to go on when the
 *   settings that matter for speed differ.
 * - A failing check in a child process exits the child with 1; the parent sees it and fails too.
 *   Only the process that made the scratch folder removes it.
 */
#ifndef TSYNC_BENCH_COMMON_H
#define TSYNC_BENCH_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "tillsync/store.h"

#define BENCH_FN static __attribute__((unused))

/* ---------------------------------------------------------------- failing */

BENCH_FN void bench_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
BENCH_FN void bench_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "FAIL (%s:%d): ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* A condition the result must satisfy. */
#define BENCH_CHECK(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) bench_fail(__FILE__, __LINE__, __VA_ARGS__);                                  \
    } while (0)

/* A tillsync call that must succeed. */
#define BENCH_TS(call)                                                                             \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            bench_fail(__FILE__, __LINE__, "%s: %s: %s", #call, tsync_strerror(rc_),               \
                       tsync_error_last() ? tsync_error_last()->message : "(no message)");         \
    } while (0)

/* ---------------------------------------------------------------- clocks, memory */

/* Monotonic wall clock in seconds. */
BENCH_FN double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time (user + system) of this process in seconds. */
BENCH_FN double bench_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Peak resident set of this process so far, in KiB (Linux ru_maxrss). */
BENCH_FN long bench_maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* A span of time: wall and CPU seconds. */
typedef struct {
    double wall, cpu;
} bench_span;

typedef struct {
    double w0, c0;
} bench_timer;

BENCH_FN bench_timer bench_start(void)
{
    bench_timer t = {bench_now(), bench_cpu()};
    return t;
}

BENCH_FN bench_span bench_stop(bench_timer t)
{
    bench_span s = {bench_now() - t.w0, bench_cpu() - t.c0};
    return s;
}

BENCH_FN int bench_dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of n values (the array is sorted in place). */
BENCH_FN double bench_median(double *v, int n)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, bench_dbl_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---------------------------------------------------------------- PRNG (splitmix64) */

typedef struct {
    uint64_t s;
} bench_rng;

BENCH_FN uint64_t bench_rand(bench_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
BENCH_FN uint64_t bench_below(bench_rng *r, uint64_t n)
{
    return bench_rand(r) % n;
}

/* ---------------------------------------------------------------- command line */

/* The value after "--name" (or "--name=value"), or NULL. */
BENCH_FN const char *bench_arg(int argc, char **argv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], name) == 0) return i + 1 < argc ? argv[i + 1] : "";
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    }
    return NULL;
}

BENCH_FN long long bench_arg_int(int argc, char **argv, const char *name, long long dflt)
{
    const char *v = bench_arg(argc, argv, name);
    if (!v) return dflt;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 0);
    if (errno || end == v || *end || x < 0) {
        fprintf(stderr, "bad value for %s: '%s'\n", name, v);
        exit(2);
    }
    return x;
}

BENCH_FN int bench_has_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

/* Refuses arguments not in known (NULL-terminated; options that take a value end with '='). */
BENCH_FN void bench_args_check(int argc, char **argv, const char *const *known, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        int ok = 0;
        for (const char *const *k = known; *k && !ok; k++) {
            size_t n = strlen(*k);
            int takes = n && (*k)[n - 1] == '=';
            if (takes) n--;
            if (strncmp(argv[i], *k, n) == 0 && (argv[i][n] == 0 || (takes && argv[i][n] == '='))) {
                ok = 1;
                if (takes && argv[i][n] == 0) i++;
            }
        }
        if (!ok || bench_has_flag(argc, argv, "--help")) {
            fprintf(ok ? stdout : stderr, "%s%s", ok ? "" : "unknown argument\n", usage);
            exit(ok ? 0 : 2);
        }
    }
}

/* The seed: --seed, else $TSYNC_BENCH_SEED, else dflt. */
BENCH_FN uint64_t bench_seed(int argc, char **argv, uint64_t dflt)
{
    const char *v = bench_arg(argc, argv, "--seed");
    if (!v) v = getenv("TSYNC_BENCH_SEED");
    return v ? strtoull(v, NULL, 0) : dflt;
}

/* --sync normal|full|both: a bitmask of 1 (NORMAL) and 2 (FULL). */
BENCH_FN int bench_sync_modes(int argc, char **argv, const char *dflt)
{
    const char *v = bench_arg(argc, argv, "--sync");
    if (!v) v = dflt;
    if (strcasecmp(v, "normal") == 0) return 1;
    if (strcasecmp(v, "full") == 0) return 2;
    if (strcasecmp(v, "both") == 0) return 3;
    fprintf(stderr, "--sync takes normal, full or both\n");
    exit(2);
}

BENCH_FN const char *bench_sync_name(int sync)
{
    return sync == TSYNC_SYNC_FULL ? "FULL" : "NORMAL";
}

/* ---------------------------------------------------------------- scratch folder */

static char bench_dir_path[3072];
static pid_t bench_dir_owner;

BENCH_FN void bench_rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

BENCH_FN void bench_dir_cleanup(void)
{
    if (bench_dir_path[0] && getpid() == bench_dir_owner && !getenv("TSYNC_BENCH_KEEP"))
        bench_rm_dir(bench_dir_path);
}

/* Makes the scratch folder: mkdtemp under $TSYNC_BENCH_DIR, else the current folder (not /tmp,
 * which may be a tmpfs where fsync costs nothing). Removed at exit unless $TSYNC_BENCH_KEEP. */
BENCH_FN const char *bench_dir_init(const char *name)
{
    const char *base = getenv("TSYNC_BENCH_DIR");
    if (!base || !*base) base = ".";
    mkdir(base, 0700);
    snprintf(bench_dir_path, sizeof bench_dir_path, "%s/%s-XXXXXX", base, name);
    if (!mkdtemp(bench_dir_path)) {
        fprintf(stderr, "FAIL: cannot make a scratch folder under %s: %s\n", base, strerror(errno));
        exit(1);
    }
    bench_dir_owner = getpid();
    atexit(bench_dir_cleanup);
    return bench_dir_path;
}

/* The file system type of the scratch folder, for the header (fsync is free on tmpfs). */
BENCH_FN const char *bench_fs_type(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf) != 0) return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0x01021994UL:
        return "tmpfs (fsync is free here: FULL figures are meaningless)";
    case 0xEF53UL:
        return "ext2/3/4";
    case 0x58465342UL:
        return "xfs";
    case 0x9123683EUL:
        return "btrfs";
    case 0x794c7630UL:
        return "overlayfs";
    default:
        return "other";
    }
}

/* "<scratch>/<name>" in a ring of static buffers (valid for the next 8 calls). */
BENCH_FN const char *bench_path(const char *name)
{
    static char ring[8][4400];
    static int k;
    char *p = ring[k++ % 8];
    snprintf(p, sizeof ring[0], "%s/%s", bench_dir_path, name);
    return p;
}

/* Removes a database and its WAL, shared-memory and key files. */
BENCH_FN void bench_rm_db(const char *path)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal", ".key"};
    char p[4600];
    for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

/* Flushes dirty pages of earlier steps to disk so that their write-back does not land inside the
 * next timed step (it made fsync-bound figures depend on the order steps ran in). */
BENCH_FN void bench_settle(void)
{
    sync();
}

/* ---------------------------------------------------------------- files */

BENCH_FN void bench_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    BENCH_CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* Reads a whole file into a malloc'd buffer (NUL-terminated). */
BENCH_FN uint8_t *bench_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    BENCH_CHECK(f, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz + 1);
    BENCH_CHECK(p && fread(p, 1, (size_t)sz, f) == (size_t)sz, "cannot read %s", path);
    fclose(f);
    p[sz] = 0;
    *n = (size_t)sz;
    return p;
}

/* ---------------------------------------------------------------- SQLite */

BENCH_FN void bench_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    BENCH_CHECK(rc == SQLITE_OK, "SQL failed: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
}

BENCH_FN sqlite3_stmt *bench_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    BENCH_CHECK(rc == SQLITE_OK, "prepare failed: %s: %s", sql, sqlite3_errmsg(db));
    return st;
}

/* Steps a write statement once and resets it. */
BENCH_FN void bench_step_done(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    BENCH_CHECK(rc == SQLITE_DONE, "step failed: %s: %s", sqlite3_sql(st), sqlite3_errmsg(db));
    sqlite3_reset(st);
}

/* First column of the first row as int64. */
BENCH_FN int64_t bench_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = bench_prepare(db, sql);
    int rc = sqlite3_step(st);
    BENCH_CHECK(rc == SQLITE_ROW, "no row from: %s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* First column of the first row as text, in a static buffer. */
BENCH_FN const char *bench_text(sqlite3 *db, const char *sql)
{
    static char buf[256];
    sqlite3_stmt *st = bench_prepare(db, sql);
    int rc = sqlite3_step(st);
    BENCH_CHECK(rc == SQLITE_ROW, "no row from: %s: %s", sql, sqlite3_errmsg(db));
    snprintf(buf, sizeof buf, "%s",
             sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "NULL");
    sqlite3_finalize(st);
    return buf;
}

/* A plain connection opened with the settings a store opens its connection with (store.c):
 * WAL, the given synchronous mode, foreign keys off, the same busy timeout. */
BENCH_FN sqlite3 *bench_plain_open(const char *path, int sync)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    BENCH_CHECK(rc == SQLITE_OK, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
    sqlite3_busy_timeout(db, 10000);
    sqlite3_extended_result_codes(db, 1);
    char sql[160];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=OFF;",
             bench_sync_name(sync));
    bench_exec(db, sql);
    return db;
}

BENCH_FN tsync_store *bench_store_open(const char *path, int sync)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    o.synchronous = sync;
    tsync_store *s = NULL;
    BENCH_TS(tsync_store_open(&s, path, &o));
    return s;
}

/* The settings that decide write speed, as one line; fails unless a and b agree. Returns a
 * static string for the header. */
BENCH_FN const char *bench_same_pragmas(sqlite3 *a, sqlite3 *b)
{
    static const char *const names[] = {"journal_mode", "synchronous",        "page_size",
                                        "cache_size",   "wal_autocheckpoint", "locking_mode",
                                        "temp_store",   "mmap_size",          "foreign_keys"};
    static char line[512];
    size_t o = 0;
    line[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char q[64], va[300];
        snprintf(q, sizeof q, "PRAGMA %s", names[i]);
        snprintf(va, sizeof va, "%s", bench_text(a, q));
        const char *vb = bench_text(b, q);
        BENCH_CHECK(strcmp(va, vb) == 0, "PRAGMA %s differs: replicated %s, plain %s", names[i], va,
                    vb);
        o += (size_t)snprintf(line + o, sizeof line - o, "%s%s=%s", i ? " " : "", names[i], va);
    }
    return line;
}

/* The schema of the benchmarks' table (PERFORMANCE.md). */
#define BENCH_PRODUCTS_SQL                                                                         \
    "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, stock INTEGER NOT NULL " \
    "DEFAULT 0)"

/* Creates products in a store and makes it replicated with stock a counter. */
BENCH_FN void bench_products_replicated(tsync_store *s)
{
    static const char *const ctr[] = {"stock"};
    bench_exec(tsync_store_sqlite(s), BENCH_PRODUCTS_SQL);
    BENCH_TS(tsync_store_replicate(s, "products", ctr, 1));
}

/* Rows of products in db that are not in the products of the database file other, and the other
 * way round (0 when the two tables hold exactly the same rows). */
BENCH_FN int64_t bench_products_diff(sqlite3 *db, const char *other)
{
    sqlite3_stmt *st = bench_prepare(db, "ATTACH ?1 AS bench_o");
    sqlite3_bind_text(st, 1, other, -1, SQLITE_TRANSIENT);
    BENCH_CHECK(sqlite3_step(st) == SQLITE_DONE, "attach %s: %s", other, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    int64_t d = bench_int(db, "SELECT (SELECT count(*) FROM (SELECT * FROM main.products EXCEPT "
                              "SELECT * FROM bench_o.products)) + (SELECT count(*) FROM (SELECT * "
                              "FROM bench_o.products EXCEPT SELECT * FROM main.products))");
    bench_exec(db, "DETACH bench_o");
    return d;
}

/* Compares the products tables of two database files through a fresh connection. */
BENCH_FN int64_t bench_files_diff(const char *a, const char *b)
{
    sqlite3 *db = NULL;
    BENCH_CHECK(sqlite3_open_v2(a, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK, "open %s", a);
    sqlite3_busy_timeout(db, 10000);
    int64_t d = bench_products_diff(db, b);
    sqlite3_close(db);
    return d;
}

/* The content hash of a store as hex (static ring of 4). */
BENCH_FN const char *bench_hash_hex(tsync_store *s)
{
    static char ring[4][2 * TSYNC_HASH_BYTES + 1];
    static int k;
    char *out = ring[k++ % 4];
    uint8_t h[TSYNC_HASH_BYTES];
    BENCH_TS(tsync_store_hash(h, s, NULL));
    for (int i = 0; i < TSYNC_HASH_BYTES; i++) sprintf(out + 2 * i, "%02x", h[i]);
    return out;
}

/* Hash of a database file's replicated tables, opened with a fresh store. */
BENCH_FN const char *bench_file_hash(const char *path)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    tsync_store *s = NULL;
    BENCH_TS(tsync_store_open(&s, path, &o));
    const char *h = bench_hash_hex(s);
    tsync_store_free(s);
    return h;
}

/* Size of the uncompressed payload of a bundle (header "TSYNCBDL" format flags, then one zstd
 * frame when flags bit 0 is set): read from the frame header. 0 when unknown. */
BENCH_FN uint64_t bench_bundle_raw_size(const uint8_t *b, size_t n)
{
    if (n < 10 || memcmp(b, "TSYNCBDL", 8) != 0) return 0;
    if (!(b[9] & 1)) return n - 10;
    unsigned long long s = ZSTD_getFrameContentSize(b + 10, n - 10);
    return s == ZSTD_CONTENTSIZE_UNKNOWN || s == ZSTD_CONTENTSIZE_ERROR ? 0 : (uint64_t)s;
}

/* ---------------------------------------------------------------- product rows */

typedef struct {
    char id[16];
    char name[24];
    int64_t price, stock;
} bench_row;

/* n rows with distinct keys "p0000000".."p<n-1>" in a random order and random values; with
 * out2, a second set with the same keys (same order) and new values. Free with free(). */
BENCH_FN void bench_make_rows(uint64_t seed, long n, bench_row **out1, bench_row **out2)
{
    bench_rng r = {seed};
    long *perm = malloc((size_t)n * sizeof *perm);
    bench_row *a = calloc((size_t)n, sizeof *a), *b = out2 ? calloc((size_t)n, sizeof *b) : NULL;
    BENCH_CHECK(perm && a && (b || !out2), "out of memory");
    for (long i = 0; i < n; i++) perm[i] = i;
    for (long i = n - 1; i > 0; i--) {
        long j = (long)bench_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (long i = 0; i < n; i++) {
        snprintf(a[i].id, sizeof a[i].id, "p%07ld", perm[i]);
        snprintf(a[i].name, sizeof a[i].name, "Product %ld", perm[i]);
        a[i].price = 100 + (int64_t)bench_below(&r, 100000);
        a[i].stock = (int64_t)bench_below(&r, 1000);
        if (!b) continue;
        b[i] = a[i];
        snprintf(b[i].name, sizeof b[i].name, "Product %ld v2", perm[i]);
        b[i].price = 100 + (int64_t)bench_below(&r, 100000);
        b[i].stock = (int64_t)bench_below(&r, 1000);
    }
    free(perm);
    *out1 = a;
    if (out2) *out2 = b;
}

/* Binds a row as ?1 id, ?2 name, ?3 price, ?4 stock. The row must outlive the statement's use. */
BENCH_FN void bench_bind_row(sqlite3_stmt *st, const bench_row *x)
{
    sqlite3_bind_text(st, 1, x->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, x->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, x->price);
    sqlite3_bind_int64(st, 4, x->stock);
}

/* ---------------------------------------------------------------- child processes */

/* Shared zeroed memory that a child can write results into. */
BENCH_FN void *bench_shared(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    BENCH_CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
    return p;
}

/* Runs fn(arg) in a child process and waits for it; fails when the child fails. The parent must
 * hold no open SQLite connection. Returns the child's peak RSS in KiB. */
BENCH_FN long bench_child(const char *what, void (*fn)(void *), void *arg)
{
    fflush(NULL);
    bench_settle();
    pid_t pid = fork();
    BENCH_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fn(arg);
        fflush(NULL);
        _exit(0);
    }
    int status;
    struct rusage ru;
    pid_t w;
    while ((w = wait4(pid, &status, 0, &ru)) < 0 && errno == EINTR) {
    }
    BENCH_CHECK(w == pid, "wait: %s", strerror(errno));
    BENCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (%s %d)", what,
                WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return ru.ru_maxrss;
}

/* The 1-minute load average, NAN when /proc/loadavg cannot be read. */
BENCH_FN double bench_load1(void)
{
    double l = NAN;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = NAN;
        fclose(f);
    }
    return l;
}

/* VmRSS and RssAnon (KiB) of process pid (0: this one); 0 for what cannot be read. */
BENCH_FN void bench_proc_mem(pid_t pid, long *rss, long *anon)
{
    char path[64], line[256];
    *rss = *anon = 0;
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6)) *rss = atol(line + 6);
        if (!strncmp(line, "RssAnon:", 8)) *anon = atol(line + 8);
    }
    if (f) fclose(f);
}

/* The nearest-rank p-th percentile (0..1) of v[0..n), sorted ascending; NAN when n is 0. */
BENCH_FN double bench_pct_sorted(const double *v, size_t n, double p)
{
    if (!n) return NAN;
    double x = p * (double)n;
    size_t k = (size_t)x;
    if ((double)k < x) k++; /* ceil without libm: the benches do not link it */
    if (k > n) k = n;
    return v[k ? k - 1 : 0];
}

/* The load average line ("0.52 0.61 0.70\n"), for headers: figures on a shared machine mean
 * little without it. */
BENCH_FN const char *bench_read_load(void)
{
    static char line[64];
    FILE *f = fopen("/proc/loadavg", "r");
    double a[3];
    int n = f ? fscanf(f, "%lf %lf %lf", &a[0], &a[1], &a[2]) : 0;
    if (f) fclose(f);
    if (n != 3) return "unknown\n";
    snprintf(line, sizeof line, "%.2f %.2f %.2f\n", a[0], a[1], a[2]);
    return line;
}

/* ---------------------------------------------------------------- a till's sale */

/* The tables of a till's sales (bench_node, bench_relay): a sale row and its lines. */
#define BENCH_SALES_SQL                                                                            \
    "CREATE TABLE sales(id TEXT PRIMARY KEY, till INTEGER, seq INTEGER, t_ns INTEGER, total "      \
    "INTEGER); CREATE INDEX sales_till_seq ON sales(till, seq); CREATE TABLE sale_lines(id TEXT "  \
    "PRIMARY KEY, sale TEXT, product TEXT, qty INTEGER, price INTEGER)"

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *begin, *commit, *sale, *line, *stock;
    int till;
    bench_rng r;
} bench_seller;

/* Statements for till's sales on db (BENCH_SALES_SQL and BENCH_PRODUCTS_SQL's products);
 * products are picked with an rng seeded with seed. */
BENCH_FN void bench_seller_open(bench_seller *w, sqlite3 *db, int till, uint64_t seed)
{
    memset(w, 0, sizeof *w);
    w->db = db;
    w->till = till;
    w->r.s = seed;
    w->begin = bench_prepare(db, "BEGIN IMMEDIATE");
    w->commit = bench_prepare(db, "COMMIT");
    w->sale = bench_prepare(db, "INSERT INTO sales(id, till, seq, t_ns, total) VALUES(?1, ?2, ?3, "
                                "?4, ?5)");
    w->line = bench_prepare(db, "INSERT INTO sale_lines(id, sale, product, qty, price) VALUES(?1, "
                                "?2, ?3, ?4, ?5)");
    w->stock = bench_prepare(db, "UPDATE products SET stock = stock - ?2 WHERE id = ?1");
}

BENCH_FN void bench_seller_close(bench_seller *w)
{
    sqlite3_finalize(w->begin);
    sqlite3_finalize(w->commit);
    sqlite3_finalize(w->sale);
    sqlite3_finalize(w->line);
    sqlite3_finalize(w->stock);
}

/* Sale seq, one transaction: `lines` lines of products p00000..p<products-1>, their stock
 * decrements, the sale row. */
BENCH_FN void bench_sell(bench_seller *w, int64_t seq, int lines, int products)
{
    char sid[40], lid[64], pid[16];
    snprintf(sid, sizeof sid, "t%d-%lld", w->till, (long long)seq);
    bench_step_done(w->db, w->begin);
    int64_t total = 0;
    for (int l = 0; l < lines; l++) {
        int p = (int)bench_below(&w->r, (uint64_t)products);
        int64_t qty = 1 + (int64_t)bench_below(&w->r, 3), price = 100 + p % 900;
        snprintf(lid, sizeof lid, "%s-%d", sid, l);
        snprintf(pid, sizeof pid, "p%05d", p);
        sqlite3_bind_text(w->line, 1, lid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(w->line, 2, sid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(w->line, 3, pid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(w->line, 4, qty);
        sqlite3_bind_int64(w->line, 5, price);
        bench_step_done(w->db, w->line);
        sqlite3_bind_text(w->stock, 1, pid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(w->stock, 2, qty);
        bench_step_done(w->db, w->stock);
        total += qty * price;
    }
    sqlite3_bind_text(w->sale, 1, sid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(w->sale, 2, w->till);
    sqlite3_bind_int64(w->sale, 3, seq);
    sqlite3_bind_int64(w->sale, 4, (int64_t)(bench_now() * 1e9));
    sqlite3_bind_int64(w->sale, 5, total);
    bench_step_done(w->db, w->sale);
    bench_step_done(w->db, w->commit);
}

/* ---------------------------------------------------------------- results */

enum {
    BENCH_T_NONE,     /* reported, no target */
    BENCH_T_RATIO_LE, /* ratio <= target */
    BENCH_T_VALUE_LE, /* value <= target */
    BENCH_T_VALUE_LT, /* value < target */
};

typedef struct {
    char name[80];  /* machine name: bench.case.figure */
    char label[88]; /* for people */
    double value;   /* measured, in unit */
    const char *unit;
    double base;  /* baseline in the same unit (NAN: none) */
    double ratio; /* value / base (NAN: none) */
    int tkind;
    double target;
    char extra[160]; /* more key=value pairs for the RESULT line */
} bench_fig;

typedef struct {
    const char *bench;
    bench_fig f[128];
    int n;
} bench_report;

BENCH_FN const char *bench_status(const bench_fig *f)
{
    switch (f->tkind) {
    case BENCH_T_RATIO_LE:
        return f->ratio <= f->target ? "PASS" : "MISS";
    case BENCH_T_VALUE_LE:
        return f->value <= f->target ? "PASS" : "MISS";
    case BENCH_T_VALUE_LT:
        return f->value < f->target ? "PASS" : "MISS";
    default:
        return "-";
    }
}

/* Adds a figure. base may be NAN (no baseline); then ratio is NAN too. */
BENCH_FN bench_fig *bench_add(bench_report *r, const char *name, const char *label, double value,
                              const char *unit, double base, int tkind, double target)
{
    BENCH_CHECK(r->n < (int)(sizeof r->f / sizeof *r->f), "too many figures");
    bench_fig *f = &r->f[r->n++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->label, sizeof f->label, "%s", label);
    f->value = value;
    f->unit = unit;
    f->base = base;
    f->ratio = isnan(base) || base == 0 ? NAN : value / base;
    f->tkind = tkind;
    f->target = target;
    return f;
}

BENCH_FN void bench_extra(bench_fig *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
BENCH_FN void bench_extra(bench_fig *f, const char *fmt, ...)
{
    size_t o = strlen(f->extra);
    if (o && o + 1 < sizeof f->extra && fmt[0] != ' ') f->extra[o++] = ' ', f->extra[o] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->extra + o, sizeof f->extra - o, fmt, ap);
    va_end(ap);
}

/* How much the repetitions disagree: (max - min) / median, as a fraction. */
BENCH_FN double bench_spread(const double *v, int n)
{
    double lo = v[0], hi = v[0], *c = malloc((size_t)n * sizeof *c);
    BENCH_CHECK(c, "out of memory");
    for (int i = 0; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        c[i] = v[i];
    }
    double m = bench_median(c, n);
    free(c);
    return m > 0 ? (hi - lo) / m : 0;
}

/* Adds spread= (and base_spread= when vb is not NULL) to a figure's RESULT line. */
BENCH_FN void bench_spreads(bench_fig *f, const double *v, const double *vb, int n)
{
    if (n < 2) return;
    bench_extra(f, "spread=%.3f", bench_spread(v, n));
    if (vb) bench_extra(f, "base_spread=%.3f", bench_spread(vb, n));
}

BENCH_FN const char *bench_num(double v, char *buf, size_t n)
{
    if (isnan(v))
        snprintf(buf, n, "-");
    else if (fabs(v) >= 1e5 || (v != 0 && fabs(v) < 0.01))
        snprintf(buf, n, "%.4g", v);
    else if (fabs(v) >= 100)
        snprintf(buf, n, "%.0f", v);
    else
        snprintf(buf, n, "%.2f", v);
    return buf;
}

/* Prints the figures as an aligned table, then one RESULT line each. */
BENCH_FN void bench_print(const bench_report *r)
{
    char a[32], b[32], c[32], t[48];
    printf("\n%-52s %12s %12s %-6s %7s  %-10s %s\n", "figure", "value", "baseline", "unit", "ratio",
           "target", "status");
    for (int i = 0; i < r->n; i++) {
        const bench_fig *f = &r->f[i];
        switch (f->tkind) {
        case BENCH_T_RATIO_LE:
            snprintf(t, sizeof t, "ratio<=%g", f->target);
            break;
        case BENCH_T_VALUE_LE:
            snprintf(t, sizeof t, "<=%g", f->target);
            break;
        case BENCH_T_VALUE_LT:
            snprintf(t, sizeof t, "<%g", f->target);
            break;
        default:
            snprintf(t, sizeof t, "-");
        }
        printf("%-52s %12s %12s %-6s %7s  %-10s %s\n", f->label, bench_num(f->value, a, sizeof a),
               bench_num(f->base, b, sizeof b), f->unit, bench_num(f->ratio, c, sizeof c), t,
               bench_status(f));
    }
    printf("\n");
    for (int i = 0; i < r->n; i++) {
        const bench_fig *f = &r->f[i];
        printf("RESULT bench=%s name=%s value=%.6g unit=%s", r->bench, f->name, f->value, f->unit);
        if (!isnan(f->base)) printf(" baseline=%.6g", f->base);
        if (!isnan(f->ratio)) printf(" ratio=%.4f", f->ratio);
        if (f->tkind != BENCH_T_NONE)
            printf(" target=%s%g status=%s",
                   f->tkind == BENCH_T_RATIO_LE   ? "ratio<="
                   : f->tkind == BENCH_T_VALUE_LE ? "<="
                                                  : "<",
                   f->target, bench_status(f));
        if (f->extra[0]) printf(" %s", f->extra);
        printf("\n");
    }
    fflush(stdout);
}

/* The header every benchmark prints first. */
BENCH_FN void bench_header(const char *bench, const char *what, uint64_t seed, int reps)
{
    printf("== %s: %s\n", bench, what);
    printf("tillsync %s, SQLite %s (library %s), seed %" PRIu64 " (replay with --seed %" PRIu64
           "), %d repetition%s, figures are medians%s\n",
           tsync_version(), sqlite3_libversion(), SQLITE_VERSION, seed, seed, reps,
           reps == 1 ? "" : "s", reps == 1 ? " of 1 run" : "");
    printf("scratch: %s (%s)\n", bench_dir_path, bench_fs_type(bench_dir_path));
    fflush(stdout);
}

#endif
