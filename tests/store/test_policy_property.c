/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_policy_property.c — convergence of column policies under random schedules
 * (docs/DATA_MODEL.md, "Column policies"): three tills replicate t with a --max, a --min, a
 * --review and a plain LWW column, and write on a few keys values of every type and NULL
 * (inserts, INSERT OR IGNORE / OR REPLACE, updates that raise or lower, deletes and re-inserts),
 * sealing at random points and syncing random pairs by bundle. At the end everyone syncs with
 * everyone: every till must show the same rows (tsync_store_hash), and on every row that exists,
 * the max column must hold the largest value ever written to that key anywhere and the min column
 * the smallest (SQLite's order, NULL as no value), a model kept here independently of the
 * library. A fourth till that takes the first one's snapshot must show the same rows too.
 *
 * TSYNC_SEED=<n> runs exactly one schedule with seed n; TSYNC_PROP_SCHEDULES=<n> runs n schedules
 * (default 60); TSYNC_PROP_SCALE=<x> scales the default. The seed is printed on failure.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"
#include "store/snapshot.h"
#include "tests/lib/helpers.h"

TestSuite(policy_property, .fini = th_cleanup);

#define NREP 3
#define NKEY 3

/* The values written, as SQL literals and as the model compares them. No two numbers of another
 * type compare equal (7 and 7.0): the model takes the max by value and does not decide such ties
 * by clock and site as the registers do (tests/crdt/test_crdt_reg.c covers the ties, and
 * test_capture_types that an update from 7 to 7.0 is captured). */
static const char *LIT[] = {"NULL", "-3",  "0",    "7",     "2.5",    "7.5",
                            "'a'",  "'b'", "'ab'", "X'00'", "X'0101'"};
#define NLIT (sizeof LIT / sizeof *LIT)
static tsync__val lit_val(size_t i)
{
    switch (i) {
    case 0:
        return (tsync__val){.type = TSYNC__V_NULL};
    case 1:
        return (tsync__val){.type = TSYNC__V_INT, .i = -3};
    case 2:
        return (tsync__val){.type = TSYNC__V_INT, .i = 0};
    case 3:
        return (tsync__val){.type = TSYNC__V_INT, .i = 7};
    case 4:
        return (tsync__val){.type = TSYNC__V_REAL, .r = 2.5};
    case 5:
        return (tsync__val){.type = TSYNC__V_REAL, .r = 7.5};
    case 6:
        return (tsync__val){.type = TSYNC__V_TEXT, .p = "a", .n = 1};
    case 7:
        return (tsync__val){.type = TSYNC__V_TEXT, .p = "b", .n = 1};
    case 8:
        return (tsync__val){.type = TSYNC__V_TEXT, .p = "ab", .n = 2};
    case 9:
        return (tsync__val){.type = TSYNC__V_BLOB, .p = "\0", .n = 1};
    default:
        return (tsync__val){.type = TSYNC__V_BLOB, .p = "\1\1", .n = 2};
    }
}

typedef struct {
    uint64_t seed, rng;
    char *dir;
    tsync_store *r[NREP + 1];
    tsync__val hi[NKEY], lo[NKEY]; /* the model: max / min of every value written, per key */
    char log[8192];                /* the steps, for a failure */
    size_t loglen;
} sched;

static uint64_t rnd(sched *S, uint64_t n)
{
    return th_rand(&S->rng) % n;
}

static void note(sched *S, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(sched *S, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (S->loglen < sizeof S->log - 1) {
        int k = vsnprintf(S->log + S->loglen, sizeof S->log - S->loglen, fmt, ap);
        if (k > 0) S->loglen += (size_t)k;
        if (S->loglen > sizeof S->log - 1) S->loglen = sizeof S->log - 1;
    }
    va_end(ap);
}

#define CHECK(S, cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr,                                                                        \
                    "%s\npolicy_property: seed %llu failed (tills in %s); replay with "            \
                    "TSYNC_SEED=%llu\n",                                                           \
                    (S)->log, (unsigned long long)(S)->seed, (S)->dir,                             \
                    (unsigned long long)(S)->seed);                                                \
            cr_assert_fail(__VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

static tsync_store *open_till(sched *S, const char *name)
{
    tsync_store *s = th_open(th_path(S->dir, name));
    th_exec(s, "CREATE TABLE t(id TEXT PRIMARY KEY, hi, lo, note TEXT, v TEXT)");
    static const tsync_column_policy pol[] = {
        {"hi", TSYNC_POLICY_MAX}, {"lo", TSYNC_POLICY_MIN}, {"note", TSYNC_POLICY_REVIEW}};
    tsync_replicate_options o = TSYNC_REPLICATE_OPTIONS_INIT;
    o.policies = pol;
    o.npolicies = 3;
    cr_assert_eq(tsync_store_replicate_ext(s, "t", &o), 0, "%s", th_errmsg());
    return s;
}

/* Folds a written value into the model (max and min ignore NULL). */
static void model_write(sched *S, int key, size_t hi, size_t lo)
{
    tsync__val h = lit_val(hi), l = lit_val(lo);
    if (tsync__reg_better(TSYNC__POLICY_MAX, &h, &S->hi[key]) > 0) S->hi[key] = h;
    if (tsync__reg_better(TSYNC__POLICY_MIN, &l, &S->lo[key]) > 0) S->lo[key] = l;
}

static void run_sql(sched *S, int who, int key, const char *sql, size_t hi, size_t lo)
{
    tsync_store *s = S->r[who];
    th_exec(s, sql);
    int changed = sqlite3_changes(tsync_store_sqlite(s)) > 0;
    note(S, "  %c k%d: %s%s\n", 'A' + who, key, sql, changed ? "" : " (no row)");
    if (changed) model_write(S, key, hi, lo);
}

static void random_write(sched *S, int who)
{
    int key = (int)rnd(S, NKEY);
    size_t hi = rnd(S, NLIT), lo = rnd(S, NLIT);
    const char *txt = (const char *[]){"'x'", "'y'", "'z'"}[rnd(S, 3)];
    char sql[256];
    switch (rnd(S, 6)) {
    case 0:
        snprintf(sql, sizeof sql, "INSERT OR IGNORE INTO t VALUES('k%d', %s, %s, %s, %s)", key,
                 LIT[hi], LIT[lo], txt, txt);
        break;
    case 1:
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO t VALUES('k%d', %s, %s, %s, %s)", key,
                 LIT[hi], LIT[lo], txt, txt);
        break;
    case 2:
        snprintf(sql, sizeof sql, "UPDATE t SET hi=%s, note=%s WHERE id='k%d'", LIT[hi], txt, key);
        lo = 0; /* not written: NULL leaves the model as it is */
        break;
    case 3:
        snprintf(sql, sizeof sql, "UPDATE t SET lo=%s, v=%s WHERE id='k%d'", LIT[lo], txt, key);
        hi = 0;
        break;
    case 4:
        snprintf(sql, sizeof sql, "UPDATE t SET hi=%s, lo=%s WHERE id='k%d'", LIT[hi], LIT[lo],
                 key);
        break;
    default:
        snprintf(sql, sizeof sql, "DELETE FROM t WHERE id='k%d'", key);
        hi = lo = 0;
    }
    run_sql(S, who, key, sql, hi, lo);
}

static void sync_pair(sched *S, int from, int to)
{
    th_seal(S->r[from]);
    int rc = th_sync(S->r[from], S->r[to]);
    note(S, "  sync %c -> %c\n", 'A' + from, 'A' + to);
    CHECK(S, rc == 0, "sync %d -> %d: %s", from, to, th_errmsg());
}

/* The value a till shows in column col of key's row; exists: the row is there. */
static tsync__val shown(tsync_store *s, int key, const char *col, int *exists, char *buf,
                        size_t cap)
{
    char q[96];
    snprintf(q, sizeof q, "SELECT %s FROM t WHERE id='k%d'", col, key);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(tsync_store_sqlite(s), q, -1, &st, NULL), SQLITE_OK);
    tsync__val v = {.type = TSYNC__V_NULL};
    *exists = sqlite3_step(st) == SQLITE_ROW;
    if (*exists) {
        int n = sqlite3_column_bytes(st, 0);
        switch (sqlite3_column_type(st, 0)) {
        case SQLITE_INTEGER:
            v = (tsync__val){.type = TSYNC__V_INT, .i = sqlite3_column_int64(st, 0)};
            break;
        case SQLITE_FLOAT:
            v = (tsync__val){.type = TSYNC__V_REAL, .r = sqlite3_column_double(st, 0)};
            break;
        case SQLITE_TEXT:
        case SQLITE_BLOB:
            v.type = sqlite3_column_type(st, 0) == SQLITE_TEXT ? TSYNC__V_TEXT : TSYNC__V_BLOB;
            v.n = (uint32_t)((size_t)n < cap ? (size_t)n : cap);
            if (v.n) memcpy(buf, sqlite3_column_blob(st, 0), v.n);
            v.p = buf;
            break;
        default:
            break;
        }
    }
    sqlite3_finalize(st);
    return v;
}

typedef struct {
    uint8_t *c[256];
    size_t len[256], n;
    tsync__vv vv;
} chunks;

static int collect(void *ctx, const uint8_t *chunk, size_t len)
{
    chunks *sn = ctx;
    cr_assert_lt(sn->n, 256);
    sn->c[sn->n] = malloc(len);
    cr_assert_not_null(sn->c[sn->n]);
    memcpy(sn->c[sn->n], chunk, len);
    sn->len[sn->n++] = len;
    return 0;
}

static void run_schedule(sched *S, uint64_t seed)
{
    memset(S, 0, sizeof *S);
    S->seed = S->rng = seed;
    S->dir = th_tmpdir();
    for (int i = 0; i < NKEY; i++) S->hi[i] = S->lo[i] = lit_val(0);
    for (int i = 0; i < NREP; i++) S->r[i] = open_till(S, (const char *[]){"a", "b", "c"}[i]);
    int steps = 10 + (int)rnd(S, 40);
    for (int i = 0; i < steps; i++) {
        uint64_t x = rnd(S, 100);
        if (x < 65) {
            random_write(S, (int)rnd(S, NREP));
        } else if (x < 75) {
            th_seal(S->r[rnd(S, NREP)]);
        } else {
            int a = (int)rnd(S, NREP), b = (int)rnd(S, NREP - 1);
            sync_pair(S, a, b >= a ? b + 1 : b);
        }
    }
    for (int round = 0; round < 2; round++)
        for (int a = 0; a < NREP; a++)
            for (int b = 0; b < NREP; b++)
                if (a != b) sync_pair(S, a, b);
    const char *h0 = th_hash(S->r[0]);
    for (int i = 1; i < NREP; i++)
        CHECK(S, strcmp(th_hash(S->r[i]), h0) == 0, "till %c differs from A (seed %llu)", 'A' + i,
              (unsigned long long)seed);
    for (int k = 0; k < NKEY; k++) {
        char b1[16], b2[16];
        int e1, e2;
        tsync__val hi = shown(S->r[0], k, "hi", &e1, b1, sizeof b1);
        tsync__val lo = shown(S->r[0], k, "lo", &e2, b2, sizeof b2);
        if (!e1) continue;
        CHECK(S, tsync__reg_cmp(&hi, &S->hi[k]) == 0 && (hi.type == 0) == (S->hi[k].type == 0),
              "k%d: max column shows type %d, the largest written is type %d (seed %llu)", k,
              hi.type, S->hi[k].type, (unsigned long long)seed);
        CHECK(S, tsync__reg_cmp(&lo, &S->lo[k]) == 0 && (lo.type == 0) == (S->lo[k].type == 0),
              "k%d: min column shows type %d, the smallest written is type %d (seed %llu)", k,
              lo.type, S->lo[k].type, (unsigned long long)seed);
    }
    /* a new till from A's snapshot */
    if (rnd(S, 3) == 0) {
        S->r[NREP] = open_till(S, "d");
        chunks sn;
        memset(&sn, 0, sizeof sn);
        int rc = tsync__snap_export(S->r[0], 1u << 12, collect, &sn, &sn.vv);
        CHECK(S, rc == 0, "snapshot of A: %s", th_errmsg());
        rc = tsync__snap_import(S->r[NREP], (const uint8_t *const *)sn.c, sn.len, sn.n, &sn.vv,
                                NULL);
        CHECK(S, rc == 0, "snapshot into D: %s", th_errmsg());
        for (size_t i = 0; i < sn.n; i++) free(sn.c[i]);
        tsync__vv_free(&sn.vv);
        CHECK(S, strcmp(th_hash(S->r[NREP]), th_hash(S->r[0])) == 0,
              "D (A's snapshot) differs from A (seed %llu)", (unsigned long long)seed);
    }
    for (int i = 0; i <= NREP; i++) tsync_store_free(S->r[i]);
    th_rmdir(S->dir);
    free(S->dir);
}

static int schedules(void)
{
    const char *e = getenv("TSYNC_PROP_SCHEDULES"), *sc = getenv("TSYNC_PROP_SCALE");
    double x = sc && *sc ? strtod(sc, NULL) : 1.0;
    double n = e && *e ? atof(e) : 60 * (x > 0 ? x : 1.0);
    return n >= 1 ? (int)n : 1;
}

Test(policy_property, random_schedules_converge, .timeout = 900)
{
    const char *e = getenv("TSYNC_SEED");
    int n = e && *e ? 1 : schedules();
    uint64_t base = e && *e ? strtoull(e, NULL, 0) : th_seed("policy_property");
    static sched S;
    for (int i = 0; i < n; i++) run_schedule(&S, base + (uint64_t)i);
    fprintf(stderr, "policy_property: %d schedules (seeds %llu..%llu)\n", n,
            (unsigned long long)base, (unsigned long long)(base + (uint64_t)n - 1));
}
