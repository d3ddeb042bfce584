/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_standard.c — the standard workload of PERFORMANCE.md, the one the peers were
 * measured on: 10,000 products (--products); 100,000 field updates (--updates) at replica A on
 * random products, alternating price and stock (a PN-counter), random values; run as one
 * transaction per update ("each"), as one transaction for all ("batch", the one-batch shape:
 * everything sealed once at the end), as "each" with A sealing every 100 transactions
 * ("each_seal100", ~1,000 batches), and as "each" with A sealing after every transaction the way
 * a running node seals each sale ("live", the live shape of PERFORMANCE.md: 100,000 batches).
 *
 * B already has the catalogue (synced before the updates). A's delta is the bundle of what B
 * lacks (tsync_store_bundle since B's state). Reported: A's write rate and its ratio against the
 * same writes to a plain table in the same run, sealing, encode time, delta bytes, B's merge time,
 * the peak RSS of A's and of B's process, and that A and B end identical. The peers are measured
 * on the same workload by bench/peers (scripts/bench.sh --only peers), never copied here.
 *
 * A, B and the plain writer each run in their own child process, so each peak RSS is that role's.
 * Checks: the merge applies every batch (nothing held, parked, refused or in conflict), A and B
 * hash equal, A's table holds exactly the plain table's rows, and B holds every product.
 */
#include "bench/bench_common.h"

enum { M_EACH, M_SEAL100, M_LIVE, M_BATCH, NMODES };
static const char *const MODE_KEY[NMODES] = {"each", "each_seal100", "live", "batch"};
static const char *const MODE_LABEL[NMODES] = {"each", "each+seal/100", "live (seal/1)", "batch"};
/* Transactions per seal inside the writes (0: sealed once after them). */
static const long MODE_EVERY[NMODES] = {0, 100, 1, 0};

typedef struct {
    /* inputs */
    int sync, mode, uuid_keys, with_plain;
    long nprod, nupd;
    uint64_t seed;
    char apath[4400], bpath[4400], ppath[4400], bundle[4400], bstate[4400];
    /* results */
    double a_write, a_seal_inline, a_seal, a_encode, b_merge, p_write;
    size_t nbatches, bundle_len, raw_len, merged;
    long a_rss, b_rss, p_rss;
} job;

/* ---------------------------------------------------------------- the workload */

typedef struct {
    char (*ids)[40];
    int32_t *prod; /* product of update i */
    int64_t *val;  /* its new value: price when i is even, stock when odd */
} workload;

static void workload_make(const job *j, workload *w)
{
    bench_rng r = {j->seed};
    w->ids = calloc((size_t)j->nprod, sizeof *w->ids);
    w->prod = malloc((size_t)j->nupd * sizeof *w->prod);
    w->val = malloc((size_t)j->nupd * sizeof *w->val);
    BENCH_CHECK(w->ids && w->prod && w->val, "out of memory");
    for (long i = 0; i < j->nprod; i++) {
        if (j->uuid_keys) {
            uint64_t a = bench_rand(&r), b = bench_rand(&r);
            snprintf(w->ids[i], sizeof w->ids[i], "%08x-%04x-%04x-%04x-%012llx",
                     (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
                     0x7000 | ((unsigned)a & 0x0fff), 0x8000 | ((unsigned)(b >> 48) & 0x3fff),
                     (unsigned long long)(b & 0xffffffffffffULL));
        } else {
            snprintf(w->ids[i], sizeof w->ids[i], "p%05ld", i);
        }
    }
    for (long i = 0; i < j->nupd; i++) {
        w->prod[i] = (int32_t)bench_below(&r, (uint64_t)j->nprod);
        w->val[i] =
            i % 2 == 0 ? 100 + (int64_t)bench_below(&r, 100000) : (int64_t)bench_below(&r, 1000);
    }
}

static void workload_free(workload *w)
{
    free(w->ids);
    free(w->prod);
    free(w->val);
}

/* The catalogue: every product with a name, a random price and a random stock (its own seed). */
static void insert_catalogue(sqlite3 *db, const job *j, const workload *w)
{
    bench_rng r = {j->seed ^ 0xca7a109eULL};
    sqlite3_stmt *st = bench_prepare(db, "INSERT INTO products(id, name, price, stock) "
                                         "VALUES(?1, ?2, ?3, ?4)");
    bench_exec(db, "BEGIN");
    for (long i = 0; i < j->nprod; i++) {
        char name[32];
        snprintf(name, sizeof name, "Product %ld", i);
        sqlite3_bind_text(st, 1, w->ids[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, 100 + (int64_t)bench_below(&r, 100000));
        sqlite3_bind_int64(st, 4, (int64_t)bench_below(&r, 1000));
        bench_step_done(db, st);
    }
    bench_exec(db, "COMMIT");
    sqlite3_finalize(st);
}

/* The updates, timed. mode M_BATCH: one transaction; otherwise one each, and with s given
 * (M_SEAL100, M_LIVE) a seal after every MODE_EVERY transactions and at the end (their time in
 * *seal_s, the batches in *nbatches). */
static double run_updates(sqlite3 *db, const job *j, const workload *w, tsync_store *s,
                          double *seal_s, size_t *nbatches)
{
    sqlite3_stmt *up[2] = {bench_prepare(db, "UPDATE products SET price=?1 WHERE id=?2"),
                           bench_prepare(db, "UPDATE products SET stock=?1 WHERE id=?2")};
    double sealt = 0;
    size_t nb = 0, k;
    long every = MODE_EVERY[j->mode] ? MODE_EVERY[j->mode] : 1;
    bench_timer t = bench_start();
    if (j->mode == M_BATCH) bench_exec(db, "BEGIN");
    for (long i = 0; i < j->nupd; i++) {
        sqlite3_stmt *st = up[i & 1];
        sqlite3_bind_int64(st, 1, w->val[i]);
        sqlite3_bind_text(st, 2, w->ids[w->prod[i]], -1, SQLITE_STATIC);
        bench_step_done(db, st);
        BENCH_CHECK(sqlite3_changes(db) == 1, "update %ld changed %d rows", i, sqlite3_changes(db));
        if (s && (i + 1) % every == 0) {
            double t0 = bench_now();
            BENCH_TS(tsync_store_seal(s, &k));
            sealt += bench_now() - t0;
            nb += k;
        }
    }
    if (s && j->nupd % every) {
        double t0 = bench_now();
        BENCH_TS(tsync_store_seal(s, &k));
        sealt += bench_now() - t0;
        nb += k;
    }
    if (j->mode == M_BATCH) bench_exec(db, "COMMIT");
    double wall = bench_stop(t).wall;
    sqlite3_finalize(up[0]);
    sqlite3_finalize(up[1]);
    if (seal_s) *seal_s = sealt;
    if (nbatches) *nbatches = nb;
    return wall;
}

/* ---------------------------------------------------------------- the roles */

/* A and B with the catalogue, synced; B's state saved; the plain table with the catalogue. */
static void child_setup(void *arg)
{
    job *j = arg;
    workload w;
    workload_make(j, &w);
    bench_rm_db(j->apath);
    bench_rm_db(j->bpath);
    tsync_store *a = bench_store_open(j->apath, j->sync);
    tsync_store *b = bench_store_open(j->bpath, j->sync);
    bench_products_replicated(a);
    bench_products_replicated(b);
    insert_catalogue(tsync_store_sqlite(a), j, &w);
    size_t nb;
    BENCH_TS(tsync_store_seal(a, &nb));
    BENCH_CHECK(nb == 1, "sealing the catalogue made %zu batches", nb);
    char *state = NULL;
    BENCH_TS(tsync_store_state_json(&state, b));
    uint8_t *bun = NULL;
    size_t len = 0;
    BENCH_TS(tsync_store_bundle(&bun, &len, a, state, &nb));
    free(state);
    BENCH_CHECK(nb == 1, "the catalogue bundle holds %zu batches", nb);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    BENCH_TS(tsync_store_merge(b, bun, len, &r));
    BENCH_CHECK(r.merged == 1, "B merged %zu catalogue batches", r.merged);
    tsync_merge_report_clear(&r);
    free(bun);
    int64_t n = bench_int(tsync_store_sqlite(b), "SELECT count(*) FROM products");
    BENCH_CHECK(n == j->nprod, "B holds %lld products after the catalogue sync", (long long)n);
    char ha[2 * TSYNC_HASH_BYTES + 1];
    snprintf(ha, sizeof ha, "%s", bench_hash_hex(a));
    BENCH_CHECK(strcmp(ha, bench_hash_hex(b)) == 0, "A and B differ after the catalogue sync");
    BENCH_TS(tsync_store_state_json(&state, b));
    bench_write_file(j->bstate, state, strlen(state));
    free(state);
    tsync_store_free(a);
    tsync_store_free(b);
    if (j->with_plain) {
        bench_rm_db(j->ppath);
        sqlite3 *db = bench_plain_open(j->ppath, j->sync);
        bench_exec(db, BENCH_PRODUCTS_SQL);
        insert_catalogue(db, j, &w);
        sqlite3_close(db);
    }
    workload_free(&w);
}

static void child_a(void *arg)
{
    job *j = arg;
    workload w;
    workload_make(j, &w);
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.synchronous = j->sync;
    tsync_store *s = NULL;
    BENCH_TS(tsync_store_open(&s, j->apath, &o));
    size_t inline_batches = 0, nb;
    long every = MODE_EVERY[j->mode];
    j->a_write = run_updates(tsync_store_sqlite(s), j, &w, every ? s : NULL, &j->a_seal_inline,
                             &inline_batches);
    double t0 = bench_now();
    BENCH_TS(tsync_store_seal(s, &nb));
    j->a_seal = bench_now() - t0;
    if (every) {
        BENCH_CHECK(nb == 0, "%zu batches left after sealing every %ld transactions", nb, every);
        BENCH_CHECK(inline_batches == (size_t)((j->nupd + every - 1) / every),
                    "sealing every %ld transactions made %zu batches", every, inline_batches);
    } else {
        BENCH_CHECK(nb == 1, "sealing the updates made %zu batches, expected 1", nb);
    }
    size_t slen;
    char *since = (char *)bench_read_file(j->bstate, &slen);
    uint8_t *bun = NULL;
    size_t len = 0;
    t0 = bench_now();
    BENCH_TS(tsync_store_bundle(&bun, &len, s, since, &nb));
    j->a_encode = bench_now() - t0;
    BENCH_CHECK(nb == (every ? inline_batches : 1), "the delta holds %zu batches", nb);
    j->nbatches = nb;
    j->bundle_len = len;
    j->raw_len = (size_t)bench_bundle_raw_size(bun, len);
    bench_write_file(j->bundle, bun, len);
    free(bun);
    free(since);
    tsync_store_free(s);
    workload_free(&w);
    j->a_rss = bench_maxrss_kb();
}

static void child_b(void *arg)
{
    job *j = arg;
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.synchronous = j->sync;
    tsync_store *s = NULL;
    BENCH_TS(tsync_store_open(&s, j->bpath, &o));
    size_t len;
    uint8_t *bun = bench_read_file(j->bundle, &len);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    double t0 = bench_now();
    int rc = tsync_store_merge(s, bun, len, &r);
    j->b_merge = bench_now() - t0;
    for (size_t i = 0; i < r.nmessages; i++) fprintf(stderr, "merge: %s\n", r.messages[i]);
    BENCH_CHECK(rc == 0, "merge failed: %s: %s", tsync_strerror(rc),
                tsync_error_last() ? tsync_error_last()->message : "");
    BENCH_CHECK(r.merged == j->nbatches && r.held == 0 && r.parked == 0 && r.refused == 0 &&
                    r.duplicates == 0 && r.conflicts == 0,
                "merge report: merged %zu of %zu, held %zu, parked %zu, refused %zu, duplicates "
                "%zu, conflicts %zu",
                r.merged, j->nbatches, r.held, r.parked, r.refused, r.duplicates, r.conflicts);
    j->merged = r.merged;
    tsync_merge_report_clear(&r);
    int64_t n = bench_int(tsync_store_sqlite(s), "SELECT count(*) FROM products");
    BENCH_CHECK(n == j->nprod, "B holds %lld products, expected %ld", (long long)n, j->nprod);
    free(bun);
    tsync_store_free(s);
    j->b_rss = bench_maxrss_kb();
}

static void child_plain(void *arg)
{
    job *j = arg;
    workload w;
    workload_make(j, &w);
    sqlite3 *db = bench_plain_open(j->ppath, j->sync);
    j->p_write = run_updates(db, j, &w, NULL, NULL, NULL);
    sqlite3_close(db);
    workload_free(&w);
    j->p_rss = bench_maxrss_kb();
}

static void child_pragmas(void *arg)
{
    job *j = arg;
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.synchronous = j->sync;
    tsync_store *s = NULL;
    BENCH_TS(tsync_store_open(&s, j->apath, &o));
    sqlite3 *db = bench_plain_open(j->ppath, j->sync);
    printf("synchronous=%s, both connections: %s\n", bench_sync_name(j->sync),
           bench_same_pragmas(tsync_store_sqlite(s), db));
    sqlite3_close(db);
    tsync_store_free(s);
}

/* ---------------------------------------------------------------- driving */

enum { S_WRITE, S_SEAL_INLINE, S_SEAL, S_ENCODE, S_MERGE, S_PLAIN, S_WS, NS };

typedef struct {
    double v[NS][64];
    long a_rss, b_rss;
    size_t nbatches, bundle_len, raw_len;
} modestats;

static void add_mode_figures(bench_report *rep, const job *j, int mode, modestats *ms, int reps)
{
    double m[NS];
    for (int i = 0; i < NS; i++) m[i] = bench_median(ms->v[i], reps);
    const char *k = MODE_KEY[mode], *sn = bench_sync_name(j->sync);
    char name[80], label[88];
    bench_fig *f;
#define FIG(k2, lab, val, unit, base, tk, tg)                                                      \
    (snprintf(name, sizeof name, "%s.%s", k, k2),                                                  \
     snprintf(label, sizeof label, "%-13s %s", MODE_LABEL[mode], lab),                             \
     f = bench_add(rep, name, label, val, unit, base, tk, tg))
    FIG("write_rate", "A write rate", j->nupd / m[S_WRITE], "w/s", j->nupd / m[S_PLAIN],
        BENCH_T_NONE, 0);
    bench_extra(f, "sync=%s updates=%ld%s", sn, j->nupd,
                MODE_EVERY[mode] ? " includes_sealing=1" : "");
    FIG("writes", MODE_EVERY[mode] ? "A writes incl. sealing vs plain" : "A writes vs plain",
        m[S_WRITE] * 1e3, "ms", m[S_PLAIN] * 1e3, BENCH_T_RATIO_LE, 1.5);
    bench_extra(f, "sync=%s", sn);
    if (MODE_EVERY[mode]) bench_extra(f, "seal_ms=%.1f", m[S_SEAL_INLINE] * 1e3);
    bench_spreads(f, ms->v[S_WRITE], ms->v[S_PLAIN], reps);
    if (!MODE_EVERY[mode]) {
        FIG("writes_seal", "A writes + seal vs plain", m[S_WS] * 1e3, "ms", m[S_PLAIN] * 1e3,
            BENCH_T_RATIO_LE, 1.5);
        bench_extra(f, "sync=%s seal_ms=%.1f", sn, m[S_SEAL] * 1e3);
        bench_spreads(f, ms->v[S_WS], ms->v[S_PLAIN], reps);
        FIG("seal", "A seals the updates (1 batch)", m[S_SEAL] * 1e3, "ms", NAN, BENCH_T_NONE, 0);
        bench_extra(f, "updates=%ld", j->nupd);
        bench_spreads(f, ms->v[S_SEAL], NULL, reps);
    } else {
        char lb[64];
        snprintf(lb, sizeof lb, "A's %zu seals (inside the writes)", ms->nbatches);
        FIG("seal", lb, m[S_SEAL_INLINE] * 1e3, "ms", NAN, BENCH_T_NONE, 0);
        bench_extra(f, "batches=%zu ms_per_seal=%.3f", ms->nbatches,
                    m[S_SEAL_INLINE] * 1e3 / (double)(ms->nbatches ? ms->nbatches : 1));
        bench_spreads(f, ms->v[S_SEAL_INLINE], NULL, reps);
    }
    FIG("encode", "A encodes the delta", m[S_ENCODE] * 1e3, "ms", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "batches=%zu", ms->nbatches);
    bench_spreads(f, ms->v[S_ENCODE], NULL, reps);
    /* targets (PERFORMANCE.md): one batch merges in <= 150 ms; the live shape in <= 400 ms with a
     * delta <= 1.0 MB. The one-batch delta keeps its old bound (under every peer's delta). */
    int live = mode == M_LIVE;
    FIG("delta_bytes", "delta bytes (zstd)", (double)ms->bundle_len, "B", NAN,
        live ? BENCH_T_VALUE_LE : BENCH_T_VALUE_LT, live ? 1000000 : 440000);
    bench_extra(f, "raw_bytes=%zu batches=%zu", ms->raw_len, ms->nbatches);
    FIG("merge", "B merges the delta", m[S_MERGE] * 1e3, "ms", NAN, BENCH_T_VALUE_LE,
        live ? 400 : 150);
    bench_extra(f, "sync=%s batches=%zu updates_per_s=%.0f", sn, ms->nbatches,
                j->nupd / m[S_MERGE]);
    bench_spreads(f, ms->v[S_MERGE], NULL, reps);
    FIG("rss_b", "peak RSS, B's process", ms->b_rss / 1024.0, "MB", NAN, BENCH_T_VALUE_LT, 64);
    FIG("rss_a", "peak RSS, A's process", ms->a_rss / 1024.0, "MB", NAN, BENCH_T_VALUE_LT, 64);
#undef FIG
}

int main(int argc, char **argv)
{
    static const char *const known[] = {
        "--products=", "--updates=", "--sync=", "--reps=", "--seed=",
        "--keys=",     "--modes=",   "--help",  NULL};
    bench_args_check(
        argc, argv, known,
        "usage: bench_standard [--products N] [--updates N] [--sync normal|full]\n"
        "                      [--keys short|uuid] [--modes each,each_seal100,live,batch]\n"
        "                      [--reps N] [--seed S]\n"
        "  --products  catalogue size (default 10000)\n"
        "  --updates   field updates at A (default 100000)\n"
        "  --keys      product ids: short 'p00042' (default) or 36-char UUIDs\n"
        "  --modes     which runs (default all four; live = one seal per transaction)\n"
        "  --reps      repetitions; figures are medians (default 3)\n"
        "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    int sm = bench_sync_modes(argc, argv, "normal");
    BENCH_CHECK(sm != 3, "--sync takes normal or full here");
    job *j = bench_shared(sizeof *j);
    j->sync = sm == 2 ? TSYNC_SYNC_FULL : TSYNC_SYNC_NORMAL;
    j->nprod = (long)bench_arg_int(argc, argv, "--products", 10000);
    j->nupd = (long)bench_arg_int(argc, argv, "--updates", 100000);
    j->seed = bench_seed(argc, argv, 20240601);
    int reps = (int)bench_arg_int(argc, argv, "--reps", 3);
    const char *keys = bench_arg(argc, argv, "--keys");
    j->uuid_keys = keys && strcmp(keys, "uuid") == 0;
    BENCH_CHECK(!keys || j->uuid_keys || strcmp(keys, "short") == 0, "--keys: short or uuid");
    const char *modes_arg = bench_arg(argc, argv, "--modes");
    int run[NMODES];
    for (int m = 0; m < NMODES; m++) run[m] = !modes_arg || strstr(modes_arg, MODE_KEY[m]) != NULL;
    /* "each" is a prefix of "each_seal100": match it as a whole word */
    if (modes_arg) {
        run[M_EACH] = 0;
        for (const char *p = modes_arg; (p = strstr(p, "each"));) {
            if ((p == modes_arg || p[-1] == ',') && (p[4] == 0 || p[4] == ',')) run[M_EACH] = 1;
            p += 4;
        }
    }
    BENCH_CHECK(run[M_EACH] || run[M_SEAL100] || run[M_LIVE] || run[M_BATCH],
                "--modes names no mode");
    BENCH_CHECK(reps >= 1 && reps <= 64 && j->nprod >= 1 && j->nupd >= 1,
                "bad sizes (reps 1..64, products and updates >= 1)");

    bench_dir_init("bench_standard");
    snprintf(j->apath, sizeof j->apath, "%s", bench_path("a.db"));
    snprintf(j->bpath, sizeof j->bpath, "%s", bench_path("b.db"));
    snprintf(j->ppath, sizeof j->ppath, "%s", bench_path("plain.db"));
    snprintf(j->bundle, sizeof j->bundle, "%s", bench_path("delta.bundle"));
    snprintf(j->bstate, sizeof j->bstate, "%s", bench_path("b.state.json"));
    bench_header("bench_standard", "the standard workload of PERFORMANCE.md", j->seed, reps);
    printf("%ld products (%s keys), %ld updates at A on random products alternating price and "
           "stock (PN-counter), random values; B has the catalogue before the updates\n",
           j->nprod, j->uuid_keys ? "36-char UUID" : "6-char 'p00042'", j->nupd);
    printf("synchronous=%s; ratio = replicated time / plain time of the same writes in the same "
           "run\n",
           bench_sync_name(j->sync));
    fflush(stdout);

    modestats *st = calloc(NMODES, sizeof *st);
    BENCH_CHECK(st, "out of memory");
    int printed_pragmas = 0;
    for (int k = 0; k < reps; k++) {
        for (int mode = 0; mode < NMODES; mode++) {
            if (!run[mode]) continue;
            fflush(stdout);
            fprintf(stderr, "[standard %s] repetition %d/%d\n", MODE_KEY[mode], k + 1, reps);
            j->mode = mode;
            /* each_seal100 and live do the same writes as each: they share each's plain run
             * when there is one */
            int share = MODE_EVERY[mode] && run[M_EACH];
            j->with_plain = !share;
            bench_child("setup", child_setup, j);
            if (!printed_pragmas) {
                bench_child("settings check", child_pragmas, j);
                printed_pragmas = 1;
            }
            long rss_a = 0;
            for (int side = 0; side < 2; side++) {
                if ((side ^ (k & 1)) == 0) {
                    if (!share) bench_child("plain writer", child_plain, j);
                } else {
                    rss_a = bench_child("replica A", child_a, j);
                }
            }
            long rss_b = bench_child("replica B", child_b, j);
            char ha[2 * TSYNC_HASH_BYTES + 1];
            snprintf(ha, sizeof ha, "%s", bench_file_hash(j->apath));
            const char *hb = bench_file_hash(j->bpath);
            BENCH_CHECK(strcmp(ha, hb) == 0, "%s: A and B differ after the merge: %s vs %s",
                        MODE_KEY[mode], ha, hb);
            int64_t d = bench_files_diff(j->apath, j->ppath);
            BENCH_CHECK(d == 0, "%s: A and the plain table differ in %lld rows", MODE_KEY[mode],
                        (long long)d);
            if (k == 0)
                printf("%-13s A and B identical after the merge (hash %.16s...), A equals the "
                       "plain table\n",
                       MODE_LABEL[mode], ha);
            modestats *ms = &st[mode];
            ms->v[S_WRITE][k] = j->a_write;
            ms->v[S_SEAL_INLINE][k] = j->a_seal_inline;
            ms->v[S_SEAL][k] = j->a_seal;
            ms->v[S_WS][k] = j->a_write + j->a_seal;
            ms->v[S_ENCODE][k] = j->a_encode;
            ms->v[S_MERGE][k] = j->b_merge;
            ms->v[S_PLAIN][k] = share ? st[M_EACH].v[S_PLAIN][k] : j->p_write;
            ms->a_rss = rss_a > ms->a_rss ? rss_a : ms->a_rss;
            ms->b_rss = rss_b > ms->b_rss ? rss_b : ms->b_rss;
            ms->nbatches = j->nbatches;
            ms->bundle_len = j->bundle_len;
            ms->raw_len = j->raw_len;
        }
    }
    bench_report rep = {.bench = "standard"};
    for (int mode = 0; mode < NMODES; mode++)
        if (run[mode]) add_mode_figures(&rep, j, mode, &st[mode], reps);
    bench_print(&rep);
    printf("peers on the same workload: measured by bench/peers in the same run "
           "(scripts/bench.sh --only peers, or bench/peers/run.sh)\n");
    printf("bench_standard: all correctness checks passed\n");
    free(st);
    return 0;
}
