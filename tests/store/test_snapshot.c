/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_snapshot.c — snapshots (store/snapshot.c): a replica's state exported as chunks
 * and merged into another replica.
 *
 * The central property: merging a snapshot is indistinguishable from merging the batches it
 * summarises. Random schedules write concurrently on three replicas (inserts, LWW updates of the
 * same rows, deletes against concurrent updates, counter sales and recounts, re-inserts) and
 * exchange some bundles; then two copies of one replica take the other's state, one as a snapshot
 * and one as its full bundle, and must end with the same rows, the same counters and the same
 * clock metadata (compared by site id, not by local index); afterwards everyone exchanges
 * bundles with everyone and all must converge. The other tests pin the rules one at a time:
 * idempotence, older snapshots, the vector and log stubs, strict refusal of malformed chunks with
 * the database left byte for byte as it was, schema mismatches, conflicts, clock skew, bounded
 * chunks on a 200k-row table.
 *
 * TSYNC_SEED=<n> replays one schedule of the equivalence test; TSYNC_PROP_SCALE=<x> scales the
 * number of schedules (default 100).
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/internal.h"
#include "store/snapshot.h"
#include "store/sync.h"
#include "tests/lib/helpers.h"

/* The folder of the running test, removed (and its name freed) after it, failed or not. */
static char *g_dir;

static const char *tmpdir(void)
{
    free(g_dir);
    g_dir = th_tmpdir_auto();
    return g_dir;
}

static void suite_fini(void)
{
    free(g_dir);
    g_dir = NULL;
    th_cleanup();
}

TestSuite(snapshot, .fini = suite_fini);

/* ---------------------------------------------------------------- helpers */

static void export_snap(tsync_store *s, size_t chunk_bytes, th_chunks *sn)
{
    memset(sn, 0, sizeof *sn);
    int rc = tsync__snap_export(s, chunk_bytes, th_chunks_collect, sn, &sn->vv);
    cr_assert_eq(rc, 0, "export: %s", th_errmsg());
    cr_assert(sn->n >= 1, "export emitted no chunk");
    cr_assert(sqlite3_get_autocommit(tsync_store_sqlite(s)), "export left a transaction open");
}

static int import_snap(tsync_store *s, const th_chunks *sn, tsync_merge_report *rep)
{
    return tsync__snap_import(s, (const uint8_t *const *)sn->c, sn->len, sn->n, &sn->vv, rep);
}

static void import_ok(tsync_store *s, const th_chunks *sn, tsync_merge_report *rep)
{
    int rc = import_snap(s, sn, rep);
    cr_assert_eq(rc, 0, "import: %s", th_errmsg());
}

/* A copy of the database of s (its own key, so a new site id, as a restored till would have). */
static tsync_store *copy_of(tsync_store *s, const char *path)
{
    char sql[4200];
    snprintf(sql, sizeof sql, "VACUUM INTO '%s'", path);
    th_exec(s, sql);
    return th_open(path);
}

/* BLAKE2b of every row of every table of the database (schema included), as hex: equal exactly
 * when the database's content is unchanged. */
static const char *db_print(tsync_store *s)
{
    static char ring[4][65];
    static int k;
    sqlite3 *db = tsync_store_sqlite(s);
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    sqlite3_stmt *names;
    cr_assert(sqlite3_prepare_v2(db,
                                 "SELECT name, sql FROM sqlite_master WHERE type='table' ORDER "
                                 "BY name",
                                 -1, &names, NULL) == SQLITE_OK);
    while (sqlite3_step(names) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(names, 0);
        const char *ddl = (const char *)sqlite3_column_text(names, 1);
        crypto_generichash_update(&h, (const uint8_t *)name, strlen(name) + 1);
        if (ddl) crypto_generichash_update(&h, (const uint8_t *)ddl, strlen(ddl) + 1);
        char q[600];
        snprintf(q, sizeof q, "SELECT * FROM \"%s\"", name);
        sqlite3_stmt *st;
        cr_assert(sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK, "%s", q);
        while (sqlite3_step(st) == SQLITE_ROW)
            for (int c = 0; c < sqlite3_column_count(st); c++) {
                uint8_t t = (uint8_t)sqlite3_column_type(st, c);
                crypto_generichash_update(&h, &t, 1);
                const void *p = sqlite3_column_blob(st, c);
                int n = sqlite3_column_bytes(st, c);
                uint8_t nb[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                                 (uint8_t)n};
                crypto_generichash_update(&h, nb, 4);
                if (p && n) crypto_generichash_update(&h, p, (size_t)n);
            }
        sqlite3_finalize(st);
    }
    sqlite3_finalize(names);
    uint8_t out[32];
    crypto_generichash_final(&h, out, 32);
    char *r = ring[k++ & 3];
    for (int i = 0; i < 32; i++) snprintf(r + 2 * i, 3, "%02x", out[i]);
    return r;
}

static char *counters(tsync_store *s)
{
    return th_text(s, "SELECT group_concat(id || '=' || stock, ',') FROM (SELECT id, stock FROM "
                      "products ORDER BY id)");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends to a growable string. */
typedef struct {
    char *p;
    size_t n, cap;
} str;

static void sadd(str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sadd(str *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (s->n + (size_t)k + 1 > s->cap) {
        s->cap = (s->n + (size_t)k + 1) * 2;
        s->p = realloc(s->p, s->cap);
        cr_assert(s->p);
    }
    va_start(ap, fmt);
    vsnprintf(s->p + s->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    s->n += (size_t)k;
}

/* The replicated state of products as text, with sites named by id (local indexes differ between
 * replicas): per row its key, existence set, column clocks with the value each names (from the row
 * or its tombstone) and counter state, every set sorted. Two replicas print the same exactly when
 * every later merge will treat them alike. */
static char *canon_state(tsync_store *s)
{
    sqlite3 *db = tsync_store_sqlite(s);
    char ids[512][33];
    int nids = 0;
    memset(ids, 0, sizeof ids);
    sqlite3_stmt *st;
    cr_assert(sqlite3_prepare_v2(db, "SELECT idx, hex(site) FROM tsync_sites", -1, &st, NULL) ==
              SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int idx = sqlite3_column_int(st, 0);
        cr_assert(idx >= 0 && idx < 512);
        snprintf(ids[idx], 33, "%s", (const char *)sqlite3_column_text(st, 1));
        if (idx >= nids) nids = idx + 1;
    }
    sqlite3_finalize(st);
    str out = {0};
    sadd(&out, "%s", "");
    cr_assert(sqlite3_prepare_v2(db, "SELECT id, tsync_m FROM tsync_clk_products ORDER BY id", -1,
                                 &st, NULL) == SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        tsync__rowmeta m;
        cr_assert(tsync__rowmeta_init(&m, 4) == 0);
        cr_assert(tsync__rowmeta_decode(&m, sqlite3_column_blob(st, 1),
                                        (size_t)sqlite3_column_bytes(st, 1)) == 0);
        sadd(&out, "%s exist{", id);
        char *items[64];
        size_t ni = 0;
        for (size_t i = 0; i < m.nexist; i++) {
            cr_assert(m.exist[i].site < (uint32_t)nids && ni < 64);
            items[ni] = malloc(80);
            snprintf(items[ni++], 80, "%s:%llu:%llu", ids[m.exist[i].site],
                     (unsigned long long)m.exist[i].add, (unsigned long long)m.exist[i].rmv);
        }
        qsort(items, ni, sizeof *items, cmp_str);
        for (size_t i = 0; i < ni; i++) sadd(&out, "%s ", items[i]), free(items[i]);
        sadd(&out, "}");
        char q[200];
        int exists = 0;
        snprintf(q, sizeof q, "SELECT count(*) FROM products WHERE id='%s'", id);
        exists = (int)th_int(s, q, 0);
        for (int c = 1; c < 3; c++) {
            if (!m.col[c].hlc) continue;
            snprintf(q, sizeof q, "SELECT quote(%s) FROM %s WHERE id='%s'",
                     c == 1 ? "name" : "price", exists ? "products" : "tsync_tomb_products", id);
            char *v = th_text(s, q);
            sadd(&out, " c%d:%llu:%s=%s", c, (unsigned long long)m.col[c].hlc, ids[m.col[c].site],
                 v ? v : "(none)");
            free(v);
        }
        const tsync__ctrset *cs = tsync__rowmeta_ctr(&m, 3);
        ni = 0;
        for (size_t j = 0; cs && j < cs->n; j++) {
            cr_assert(ni < 64);
            items[ni] = malloc(80);
            snprintf(items[ni++], 80, "%s:%llu:%llu", ids[cs->v[j].site],
                     (unsigned long long)cs->v[j].p, (unsigned long long)cs->v[j].n);
        }
        qsort(items, ni, sizeof *items, cmp_str);
        sadd(&out, " stock{");
        for (size_t i = 0; i < ni; i++) sadd(&out, "%s ", items[i]), free(items[i]);
        sadd(&out, "} %s\n", exists ? "row" : "gone");
        tsync__rowmeta_clear(&m);
    }
    sqlite3_finalize(st);
    return out.p;
}

static int64_t rows_in(tsync_store *s, const char *sql)
{
    return th_int(s, sql, -1);
}

/* ---------------------------------------------------------------- equivalence (property) */

/* A, B, C; then B2 (B + snapshot of A), B3 (B + bundle of A) and D (a new till + snapshot of A) */
#define NREP 6

typedef struct {
    uint64_t seed, rng;
    char *dir;
    tsync_store *r[NREP];
    int nkeys, val;
    th_chunks sn;
    char *tmp[4];
} sched;

static sched *g_cur;

static void sched_free(sched *S)
{
    for (int i = 0; i < NREP; i++) tsync_store_free(S->r[i]);
    th_chunks_free(&S->sn);
    for (int i = 0; i < 4; i++) free(S->tmp[i]);
    if (S->dir) th_rmdir(S->dir);
    free(S->dir);
    memset(S, 0, sizeof *S);
}

static void prop_fini(void)
{
    if (g_cur) {
        fprintf(stderr,
                "snapshot/equivalence: schedule with seed %llu did not finish; replay with "
                "TSYNC_SEED=%llu test_snapshot --filter 'snapshot/equivalence'\n",
                (unsigned long long)g_cur->seed, (unsigned long long)g_cur->seed);
        sched_free(g_cur);
        g_cur = NULL;
    }
    suite_fini();
}

#define SCHECK(S, cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "schedule with seed %llu failed: ", (unsigned long long)(S)->seed);    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            cr_assert_fail("snapshot equivalence violated (seed %llu), see above",                 \
                           (unsigned long long)(S)->seed);                                         \
        }                                                                                          \
    } while (0)

static uint64_t rnd(sched *S, uint64_t n)
{
    return th_rand(&S->rng) % n;
}

/* A second table with a composite key of text and integer, no counter. */
static tsync_store *open_replica(const char *path)
{
    tsync_store *s = th_open_products(path);
    th_exec(s, "CREATE TABLE IF NOT EXISTS tags(shop TEXT, n INTEGER, v, PRIMARY KEY(shop, n))");
    int rc = tsync_store_replicate(s, "tags", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate tags: %s", th_errmsg());
    return s;
}

static void random_tag_write(sched *S, tsync_store *s)
{
    char sql[300];
    int n = (int)rnd(S, 3), v = ++S->val;
    const char *shop = rnd(S, 2) ? "north" : "south";
    switch (rnd(S, 4)) {
    case 0:
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO tags VALUES('%s', %d, %d)", shop, n, v);
        break;
    case 1:
        snprintf(sql, sizeof sql, "UPDATE tags SET v = X'%04x' WHERE shop = '%s' AND n = %d", v,
                 shop, n);
        break;
    case 2:
        snprintf(sql, sizeof sql, "UPDATE tags SET v = %d.5 WHERE shop = '%s' AND n = %d", v, shop,
                 n);
        break;
    default:
        snprintf(sql, sizeof sql, "DELETE FROM tags WHERE shop = '%s' AND n = %d", shop, n);
        break;
    }
    th_exec(s, sql);
}

/* One random write on replica r: decisions depend on the seed and on whether the row exists. */
static void random_write(sched *S, int r)
{
    tsync_store *s = S->r[r];
    if (rnd(S, 100) < 20) {
        random_tag_write(S, s);
        if (rnd(S, 100) < 40) th_seal(s);
        return;
    }
    int k = (int)rnd(S, (uint64_t)S->nkeys);
    char q[300], sql[400];
    snprintf(q, sizeof q, "SELECT count(*) FROM products WHERE id='k%d'", k);
    int exists = th_int(s, q, 0) > 0;
    int v = ++S->val;
    int x = (int)rnd(S, 100);
    if (!exists) {
        if (x < 70)
            snprintf(sql, sizeof sql,
                     "INSERT INTO products(id, name, price, stock) VALUES('k%d', 'n%d', %d, %d)", k,
                     v, v % 50, (int)rnd(S, 4) * 5);
        else if (x < 85)
            snprintf(sql, sizeof sql, "INSERT INTO products(id, name) VALUES('k%d', NULL)", k);
        else
            snprintf(sql, sizeof sql,
                     "INSERT OR REPLACE INTO products(id, name, price, stock) VALUES('k%d', "
                     "X'B10B%02x', 1.25, 3)",
                     k, v & 0xff);
    } else if (x < 25) {
        snprintf(sql, sizeof sql, "UPDATE products SET name='u%d' WHERE id='k%d'", v, k);
    } else if (x < 40) {
        snprintf(sql, sizeof sql, "UPDATE products SET price=%d, name='p%d' WHERE id='k%d'", v, v,
                 k);
    } else if (x < 60) {
        snprintf(sql, sizeof sql, "UPDATE products SET stock=stock-1 WHERE id='k%d'", k);
    } else if (x < 68) {
        snprintf(sql, sizeof sql, "UPDATE products SET stock=%d WHERE id='k%d'", (int)rnd(S, 30),
                 k);
    } else if (x < 88) {
        snprintf(sql, sizeof sql, "DELETE FROM products WHERE id='k%d'", k);
    } else {
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO products(id, name, price, stock) VALUES('k%d', 'r%d', "
                 "NULL, %d)",
                 k, v, (int)rnd(S, 9));
    }
    th_exec(s, sql);
    if (rnd(S, 100) < 40) th_seal(s);
}

static void sync_ok(sched *S, int from, int to)
{
    int rc = th_sync(S->r[from], S->r[to]);
    SCHECK(S, rc == 0, "sync %d -> %d: %s", from, to, th_errmsg());
}

static void run_equivalence(sched *S, uint64_t seed)
{
    static const size_t sizes[] = {64, 100, 200, 500, 2000, 1u << 20};
    memset(S, 0, sizeof *S);
    g_cur = S;
    S->seed = S->rng = seed;
    S->dir = th_tmpdir();
    S->nkeys = 2 + (int)rnd(S, 5);
    const char *names[NREP] = {"a.db", "b.db", "c.db", "b2.db", "b3.db", "d.db"};
    for (int i = 0; i < 3; i++) S->r[i] = open_replica(th_path(S->dir, names[i]));
    int steps = 8 + (int)rnd(S, 40);
    for (int i = 0; i < steps; i++) {
        int x = (int)rnd(S, 100);
        if (x < 72) {
            random_write(S, (int)rnd(S, 3));
        } else {
            int a = (int)rnd(S, 3), b = (int)rnd(S, 2);
            sync_ok(S, a, b >= a ? b + 1 : b);
        }
    }
    for (int i = 0; i < 3; i++) th_seal(S->r[i]);
    SCHECK(S, rows_in(S->r[1], "SELECT count(*) FROM tsync_held") == 0, "B holds batches");

    /* B2 takes A's state as a snapshot, B3 as A's full bundle. */
    S->r[3] = copy_of(S->r[1], th_path(S->dir, names[3]));
    S->r[4] = copy_of(S->r[1], th_path(S->dir, names[4]));
    size_t cb = sizes[rnd(S, sizeof sizes / sizeof sizes[0])];
    export_snap(S->r[0], cb, &S->sn);
    for (size_t i = 0; i < S->sn.n; i++) {
        tsync__arena a = {0};
        tsync__snap_chunk c;
        char err[TSYNC__ERRLEN];
        int rc = tsync__snap_decode(S->sn.c[i], S->sn.len[i], &c, &a, err);
        tsync__arena_free(&a);
        SCHECK(S, rc == 0, "chunk %zu of A's snapshot does not decode: %s", i, err);
        SCHECK(S, S->sn.len[i] <= cb || c.nrows == 1,
               "chunk %zu holds %u rows in %zu bytes, more than the %zu asked for", i, c.nrows,
               S->sn.len[i], cb);
    }
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = import_snap(S->r[3], &S->sn, &rep);
    SCHECK(S, rc == 0, "snapshot import into B2: %s", th_errmsg());
    SCHECK(S, rep.refused == 0 && rep.parked == 0, "import: %zu refused, %zu parked", rep.refused,
           rep.parked);
    tsync_merge_report_clear(&rep);
    sync_ok(S, 0, 4);
    /* D: a new till that starts from A's snapshot */
    S->r[5] = open_replica(th_path(S->dir, names[5]));
    rc = import_snap(S->r[5], &S->sn, NULL);
    SCHECK(S, rc == 0, "snapshot import into D: %s", th_errmsg());
    const char *hd = th_hash(S->r[5]), *ha = th_hash(S->r[0]);
    SCHECK(S, strcmp(hd, ha) == 0, "D (new, snapshot of A) shows %s, A %s", hd, ha);

    const char *h2 = th_hash(S->r[3]), *h3 = th_hash(S->r[4]);
    SCHECK(S, strcmp(h2, h3) == 0, "B2 (snapshot) shows %s, B3 (bundle) shows %s", h2, h3);
    S->tmp[0] = counters(S->r[3]);
    S->tmp[1] = counters(S->r[4]);
    SCHECK(
        S, (!S->tmp[0] && !S->tmp[1]) || (S->tmp[0] && S->tmp[1] && !strcmp(S->tmp[0], S->tmp[1])),
        "counters differ: B2 %s, B3 %s", S->tmp[0] ? S->tmp[0] : "-", S->tmp[1] ? S->tmp[1] : "-");
    S->tmp[2] = canon_state(S->r[3]);
    S->tmp[3] = canon_state(S->r[4]);
    SCHECK(S, strcmp(S->tmp[2], S->tmp[3]) == 0,
           "clock metadata differs:\nB2 (snapshot):\n%s\nB3 (bundle):\n%s", S->tmp[2], S->tmp[3]);
    for (int i = 0; i < 4; i++) free(S->tmp[i]), S->tmp[i] = NULL;
    tsync__vv have;
    SCHECK(S, tsync__sync_vv(S->r[3], &have) == 0, "vector: %s", th_errmsg());
    int covers = tsync__vv_covers(&have, &S->sn.vv);
    tsync__vv_free(&have);
    SCHECK(S, covers, "B2's vector does not cover the snapshot's");

    /* Sometimes C's state too: B2 as a snapshot on top of A's, B3 as C's bundle. */
    if (rnd(S, 2)) {
        th_chunks sc;
        export_snap(S->r[2], sizes[rnd(S, sizeof sizes / sizeof sizes[0])], &sc);
        rc = import_snap(S->r[3], &sc, NULL);
        th_chunks_free(&sc);
        SCHECK(S, rc == 0, "C's snapshot into B2: %s", th_errmsg());
        sync_ok(S, 2, 4);
        h2 = th_hash(S->r[3]);
        h3 = th_hash(S->r[4]);
        SCHECK(S, strcmp(h2, h3) == 0, "with C's state: B2 shows %s, B3 %s", h2, h3);
        S->tmp[2] = canon_state(S->r[3]);
        S->tmp[3] = canon_state(S->r[4]);
        SCHECK(S, strcmp(S->tmp[2], S->tmp[3]) == 0,
               "with C's state, clock metadata differs:\nB2 (snapshots):\n%s\nB3 (bundles):\n%s",
               S->tmp[2], S->tmp[3]);
        free(S->tmp[2]), free(S->tmp[3]);
        S->tmp[2] = S->tmp[3] = NULL;
    }

    /* Everyone goes on writing, then syncs until all agree. A and C, whose snapshots were
     * taken, send to everyone first, so no one is asked for a batch it holds only as state. */
    for (int i = 0; i < 4; i++) random_write(S, (int)rnd(S, NREP));
    for (int b = 0; b < NREP; b++)
        if (b != 0) sync_ok(S, 0, b);
    for (int b = 0; b < NREP; b++)
        if (b != 2) sync_ok(S, 2, b);
    for (int round = 0; round < 3; round++)
        for (int a = 0; a < NREP; a++)
            for (int b = 0; b < NREP; b++)
                if (a != b) sync_ok(S, a, b);
    const char *h0 = th_hash(S->r[0]);
    char h0b[65];
    memcpy(h0b, h0, 65);
    S->tmp[0] = canon_state(S->r[0]);
    for (int i = 1; i < NREP; i++) {
        const char *h = th_hash(S->r[i]);
        SCHECK(S, strcmp(h, h0b) == 0, "after exchanging, replica %d shows %s, A %s", i, h, h0b);
        S->tmp[1] = canon_state(S->r[i]);
        SCHECK(S, strcmp(S->tmp[0], S->tmp[1]) == 0, "after exchanging, replica %d:\n%s\nA:\n%s", i,
               S->tmp[1], S->tmp[0]);
        free(S->tmp[1]);
        S->tmp[1] = NULL;
        SCHECK(S, rows_in(S->r[i], "SELECT count(*) FROM tsync_held") == 0,
               "replica %d holds batches after exchanging", i);
    }
}

static double scale(void)
{
    const char *e = getenv("TSYNC_PROP_SCALE");
    double x = e && *e ? strtod(e, NULL) : 1.0;
    return x > 0 ? x : 1.0;
}

Test(snapshot, equivalence, .fini = prop_fini, .timeout = 600)
{
    const char *e = getenv("TSYNC_SEED");
    int n = e && *e ? 1 : (int)(100 * scale());
    if (n < 1) n = 1;
    uint64_t base = th_seed("snapshot/equivalence");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    static sched S;
    size_t chunks = 0;
    for (int i = 0; i < n; i++) {
        run_equivalence(&S, base + (uint64_t)i);
        chunks += S.sn.n;
        sched_free(&S);
        g_cur = NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "snapshot/equivalence: %d schedules (seeds %llu..%llu), %zu chunks, %.1f s\n",
            n, (unsigned long long)base, (unsigned long long)(base + (uint64_t)n - 1), chunks,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

/* ---------------------------------------------------------------- the rules, one by one */

/* A few rows: inserted, updated, one deleted, counters moved, in three batches. */
static tsync_store *small_source(const char *dir, const char *name)
{
    tsync_store *a = th_open_products(th_path(dir, name));
    th_exec(a, "INSERT INTO products VALUES('p1', 'apple', 10, 5), ('p2', 'pear', 20, 7), "
               "('p3', 'plum', 30, 0)");
    th_seal(a);
    th_exec(a, "UPDATE products SET stock = stock - 2 WHERE id = 'p1'; UPDATE products SET "
               "name = 'green pear' WHERE id = 'p2'");
    th_seal(a);
    th_exec(a, "DELETE FROM products WHERE id = 'p3'");
    th_seal(a);
    return a;
}

Test(snapshot, same_snapshot_twice_is_idempotent)
{
    const char *dir = tmpdir();
    tsync_store *a = small_source(dir, "a.db");
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    th_exec(b, "INSERT INTO products VALUES('b1', 'bread', 3, 40)");
    th_seal(b);
    th_chunks sn;
    export_snap(a, TSYNC__SNAP_CHUNK_BYTES, &sn);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    import_ok(b, &sn, &rep);
    cr_assert_eq(rep.merged, 3, "rows merged: %zu", rep.merged);
    tsync_merge_report_clear(&rep);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM products", -1), 3);
    cr_assert_eq(th_int(b, "SELECT stock FROM products WHERE id='p1'", -1), 3);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_tomb_products WHERE id='p3'", -1), 1);
    const char *before = db_print(b);
    char keep[65];
    memcpy(keep, before, 65);
    import_ok(b, &sn, &rep);
    cr_assert_eq(rep.merged, 0, "second import merged %zu rows", rep.merged);
    cr_assert_eq(rep.duplicates, 3, "second import: %zu rows already here", rep.duplicates);
    tsync_merge_report_clear(&rep);
    cr_assert_str_eq(db_print(b), keep, "importing the same snapshot again changed the database");
    /* and it converges with the source */
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(b));
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(snapshot, older_snapshot_after_newer_batches_changes_nothing)
{
    const char *dir = tmpdir();
    tsync_store *a = small_source(dir, "a.db");
    th_chunks old;
    export_snap(a, 200, &old);
    th_exec(a, "UPDATE products SET name = 'red apple', stock = stock + 10 WHERE id = 'p1'; "
               "DELETE FROM products WHERE id = 'p2'; INSERT INTO products VALUES('p3', 'plum "
               "again', 31, 1)");
    th_seal(a);
    /* b has the newer batches, c the newer snapshot: the old snapshot is behind both */
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    th_chunks cur;
    export_snap(a, 200, &cur);
    import_ok(c, &cur, NULL);
    cr_assert_str_eq(th_hash(c), th_hash(a));
    tsync_store *rs[2] = {b, c};
    for (int i = 0; i < 2; i++) {
        char keep[65];
        memcpy(keep, db_print(rs[i]), 65);
        tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
        import_ok(rs[i], &old, &rep);
        cr_assert_eq(rep.merged, 0, "replica %d: the old snapshot merged %zu rows", i, rep.merged);
        cr_assert_eq(rep.conflicts, 0);
        tsync_merge_report_clear(&rep);
        cr_assert_str_eq(db_print(rs[i]), keep, "replica %d: an older snapshot changed it", i);
        cr_assert_str_eq(th_hash(rs[i]), th_hash(a));
    }
    th_chunks_free(&old);
    th_chunks_free(&cur);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
}

Test(snapshot, vector_stubs_and_the_batches_that_follow)
{
    const char *dir = tmpdir();
    tsync_store *a = small_source(dir, "a.db");
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    th_chunks sn;
    export_snap(a, TSYNC__SNAP_CHUNK_BYTES, &sn);
    const tsync__vv_entry *ea = tsync__vv_get(&sn.vv, tsync_store_site_id(a));
    cr_assert(ea && ea->seq == 3, "the vector names A at batch 3");
    import_ok(b, &sn, NULL);
    cr_assert_str_eq(th_hash(a), th_hash(b));

    tsync__vv have;
    cr_assert_eq(tsync__sync_vv(b, &have), 0);
    cr_assert(tsync__vv_covers(&have, &sn.vv), "the vector does not cover the snapshot's");
    tsync__vv_free(&have);
    /* the stub: batch 3 of A, no body, A's head hash, no signature; nothing below it */
    sqlite3_stmt *st;
    sqlite3 *db = tsync_store_sqlite(b);
    cr_assert(sqlite3_prepare_v2(db,
                                 "SELECT l.seq, length(l.body), l.hash, l.sig IS NULL, s.pk "
                                 "FROM tsync_log l JOIN tsync_sites s ON s.idx = l.site WHERE "
                                 "s.site = ?1",
                                 -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_blob(st, 1, tsync_store_site_id(a), TSYNC_SITE_ID_BYTES, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "no stub in the log");
    cr_assert_eq(sqlite3_column_int64(st, 0), 3);
    cr_assert_eq(sqlite3_column_int64(st, 1), 0, "a stub's body is empty");
    cr_assert(sqlite3_column_bytes(st, 2) == TSYNC__HASH_BYTES &&
              memcmp(sqlite3_column_blob(st, 2), ea->hash, TSYNC__HASH_BYTES) == 0);
    cr_assert_eq(sqlite3_column_int(st, 3), 1, "a stub has no signature");
    cr_assert(sqlite3_column_bytes(st, 4) == TSYNC__PK_BYTES, "A registered without its key");
    cr_assert_eq(sqlite3_step(st), SQLITE_DONE, "more than the stub in the log");
    sqlite3_finalize(st);

    /* batch 4 chains to the stub's hash and merges normally */
    th_exec(a, "UPDATE products SET price = 11 WHERE id = 'p1'");
    th_seal(a);
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, b), 0);
    uint8_t *bun;
    size_t len;
    cr_assert_eq(tsync_store_bundle(&bun, &len, a, state, NULL), 0, "%s", th_errmsg());
    free(state);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(b, bun, len, &rep), 0, "%s", th_errmsg());
    free(bun);
    cr_assert(rep.merged == 1 && rep.held == 0 && rep.refused == 0,
              "batch 4: %zu merged, %zu held, %zu refused", rep.merged, rep.held, rep.refused);
    tsync_merge_report_clear(&rep);
    cr_assert_eq(th_int(b, "SELECT price FROM products WHERE id='p1'", -1), 11);
    cr_assert_str_eq(th_hash(a), th_hash(b));

    /* batches 1-4 again: at or below the head, duplicates */
    bun = th_bundle(a, &len);
    cr_assert_eq(tsync_store_merge(b, bun, len, &rep), 0, "%s", th_errmsg());
    free(bun);
    cr_assert(rep.duplicates == 4 && rep.merged == 0 && rep.refused == 0,
              "the full bundle: %zu duplicates, %zu merged, %zu refused", rep.duplicates,
              rep.merged, rep.refused);
    tsync_merge_report_clear(&rep);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_forks", -1), 0);

    /* b's own next batch depends on what it took from the snapshot, and a merges it */
    th_exec(b, "INSERT INTO products VALUES('b1', 'bread', 3, 1)");
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(b));
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* The case snapshots exist for: the source pruned its log, a new till cannot get the batches,
 * takes a snapshot, then goes on with batches in both directions. */
Test(snapshot, a_till_behind_the_pruned_horizon_catches_up)
{
    const char *dir = tmpdir();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    for (int i = 0; i < 40; i++) {
        char sql[200];
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO products VALUES('p%d', 'item %d', %d, %d)", i % 7, i, i,
                 i % 5);
        th_exec(a, sql);
        th_seal(a);
    }
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    tsync__vv bv;
    cr_assert_eq(tsync__sync_vv(b, &bv), 0);
    uint8_t member[TSYNC__PK_BYTES];
    memcpy(member, tsync__sync_public_key(b), sizeof member);
    cr_assert_eq(tsync__sync_ack_put(a, member, &bv), 0, "%s", th_errmsg());
    tsync__vv_free(&bv);
    size_t pruned = 0;
    cr_assert_eq(tsync__sync_prune(a, member, 1, 5, &pruned), 0, "%s", th_errmsg());
    cr_assert_gt(pruned, 0);

    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    char *state;
    uint8_t *bun = NULL;
    size_t len;
    cr_assert_eq(tsync_store_state_json(&state, c), 0);
    cr_assert_neq(tsync_store_bundle(&bun, &len, a, state, NULL), 0, "a pruned log gave a bundle");
    free(state);
    th_chunks sn;
    export_snap(a, 300, &sn);
    import_ok(c, &sn, NULL);
    cr_assert_str_eq(th_hash(c), th_hash(a));
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg()); /* nothing missing any more */
    th_exec(a, "UPDATE products SET stock = stock - 1 WHERE id = 'p3'");
    th_exec(c, "UPDATE products SET name = 'renamed' WHERE id = 'p4'");
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(c, a), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(c, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(c));
    cr_assert_str_eq(th_hash(a), th_hash(b));
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
}

static void assert_refused(tsync_store *r, const th_chunks *sn, const char *keep, const char *what,
                           int want_rc, const char *want_msg)
{
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = import_snap(r, sn, &rep);
    cr_assert(rc != 0, "%s: accepted", what);
    if (want_rc) cr_assert_eq(rc, want_rc, "%s: rc %d (%s)", what, rc, th_errmsg());
    cr_assert_eq(rep.refused, 1, "%s: not counted as refused", what);
    tsync_merge_report_clear(&rep);
    const char *m = th_errmsg();
    cr_assert(strchr(m, '\n') == NULL && strstr(m, "snapshot"), "%s: message '%s'", what, m);
    if (want_msg) cr_assert(strstr(m, want_msg), "%s: message '%s' lacks '%s'", what, m, want_msg);
    cr_assert_str_eq(db_print(r), keep, "%s: the database changed", what);
    cr_assert(sqlite3_get_autocommit(tsync_store_sqlite(r)), "%s: transaction left open", what);
}

Test(snapshot, malformed_chunks_are_refused_and_change_nothing)
{
    const char *dir = tmpdir();
    tsync_store *a = small_source(dir, "a.db");
    tsync_store *r = th_open_products(th_path(dir, "r.db"));
    th_exec(r, "INSERT INTO products VALUES('r1', 'rice', 2, 9)");
    th_seal(r);
    th_chunks sn;
    export_snap(a, TSYNC__SNAP_CHUNK_BYTES, &sn);
    cr_assert_eq(sn.n, 1);
    size_t len = sn.len[0];
    uint8_t *orig = sn.c[0], *buf = malloc(len + 1);
    cr_assert(buf);
    sn.c[0] = buf;
    char keep[65];

    /* every proper prefix */
    memcpy(keep, db_print(r), 65);
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(buf, orig, len);
        sn.len[0] = cut;
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", cut);
        assert_refused(r, &sn, keep, what, TSYNC_ECORRUPT, "chunk 0");
    }
    sn.len[0] = len;

    /* a trailing byte, a wrong format */
    memcpy(buf, orig, len);
    buf[len] = 0xc0;
    sn.len[0] = len + 1;
    assert_refused(r, &sn, keep, "a trailing byte", TSYNC_ECORRUPT, "trailing");
    sn.len[0] = len;
    memcpy(buf, orig, len);
    cr_assert_eq(buf[0], 0x94);
    cr_assert_eq(buf[1], TSYNC__SNAP_FORMAT);
    buf[1] = TSYNC__SNAP_FORMAT + 1;
    assert_refused(r, &sn, keep, "format 2", TSYNC_EVERSION, "format 2");

    /* every byte flipped: refused unchanged, or (a byte inside a value) a different but well-formed
     * snapshot, which the END hash tells apart */
    uint8_t h0[TSYNC__HASH_BYTES], h1[TSYNC__HASH_BYTES];
    tsync__snap_hash((const uint8_t *const *)&orig, &len, 1, h0);
    size_t refused = 0, accepted = 0;
    for (size_t i = 0; i < len; i++) {
        memcpy(buf, orig, len);
        buf[i] ^= 0xff;
        tsync__snap_hash((const uint8_t *const *)sn.c, sn.len, 1, h1);
        cr_assert(memcmp(h0, h1, sizeof h0) != 0, "the hash misses a flip at %zu", i);
        memcpy(keep, db_print(r), 65);
        int rc = import_snap(r, &sn, NULL);
        if (rc) {
            refused++;
            cr_assert_str_eq(db_print(r), keep, "flip at %zu: refused (%s) but changed", i,
                             th_errmsg());
            cr_assert(strchr(th_errmsg(), '\n') == NULL);
        } else {
            accepted++;
        }
    }
    fprintf(stderr, "snapshot/malformed: %zu-byte chunk, flips: %zu refused, %zu well-formed\n",
            len, refused, accepted);
    cr_assert(refused > len / 2, "only %zu of %zu flips were refused", refused, len);

    /* checks beyond the syntax: a site id that is not its key's, a column named twice */
    {
        tsync__arena ar = {0};
        tsync__snap_chunk c;
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__snap_decode(orig, len, &c, &ar, err), 0, "%s", err);
        cr_assert(c.nsites >= 1 && c.sites[0].has_key && c.ntables == 1);
        memcpy(keep, db_print(r), 65);
        uint8_t *bad;
        size_t blen;
        c.sites[0].inc[0] ^= 1;
        cr_assert_eq(tsync__snap_encode(&c, &bad, &blen), 0);
        sn.c[0] = bad;
        sn.len[0] = blen;
        assert_refused(r, &sn, keep, "a forged site id", TSYNC_ECORRUPT, "BLAKE2b");
        free(bad);
        c.sites[0].inc[0] ^= 1;
        c.tables[0].cols[2] = c.tables[0].cols[1];
        c.tables[0].col_len[2] = c.tables[0].col_len[1];
        cr_assert_eq(tsync__snap_encode(&c, &bad, &blen), 0);
        sn.c[0] = bad;
        sn.len[0] = blen;
        assert_refused(r, &sn, keep, "a column named twice", TSYNC_ECORRUPT, "twice");
        free(bad);
        tsync__arena_free(&ar);
    }

    /* a bad chunk among good ones: nothing of the good ones is kept */
    sn.c[0] = orig;
    sn.len[0] = len;
    free(buf);
    th_chunks many;
    export_snap(a, 64, &many);
    cr_assert(many.n >= 3, "%zu chunks", many.n);
    memcpy(keep, db_print(r), 65);
    many.len[many.n - 1]--;
    char want[64];
    snprintf(want, sizeof want, "chunk %zu of %zu", many.n - 1, many.n);
    assert_refused(r, &many, keep, "a truncated last chunk", TSYNC_ECORRUPT, want);
    many.len[many.n - 1]++;

    /* a vector naming a site no chunk describes */
    uint8_t stranger[TSYNC__SITE_BYTES];
    memset(stranger, 0x5a, sizeof stranger);
    cr_assert_eq(tsync__vv_set(&many.vv, stranger, 9, NULL), 0);
    assert_refused(r, &many, keep, "an unknown site in the vector", TSYNC_ECORRUPT,
                   "key and incarnation");
    th_chunks_free(&many);

    /* and the original still merges */
    import_ok(r, &sn, NULL);
    cr_assert_eq(th_int(r, "SELECT count(*) FROM products WHERE id IN ('r1', 'p1', 'p2')", -1), 3);
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(r);
}

Test(snapshot, schema_mismatch_is_refused_whole)
{
    const char *dir = tmpdir();
    tsync_store *a = small_source(dir, "a.db");
    th_chunks sn;
    export_snap(a, 100, &sn);
    char keep[65];

    tsync_store *none = th_open(th_path(dir, "none.db"));
    memcpy(keep, db_print(none), 65);
    assert_refused(none, &sn, keep, "no such table", TSYNC_EREFUSED, "migrate first");

    tsync_store *noprice = th_open(th_path(dir, "noprice.db"));
    th_exec(noprice, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT "
                     "NULL DEFAULT 0)");
    const char *ctr[] = {"stock"};
    cr_assert_eq(tsync_store_replicate(noprice, "products", ctr, 1), 0, "%s", th_errmsg());
    memcpy(keep, db_print(noprice), 65);
    assert_refused(noprice, &sn, keep, "a missing column", TSYNC_EREFUSED, "products.price");

    tsync_store *plain = th_open(th_path(dir, "plain.db"));
    th_exec(plain, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, stock "
                   "INTEGER NOT NULL DEFAULT 0)");
    cr_assert_eq(tsync_store_replicate(plain, "products", NULL, 0), 0, "%s", th_errmsg());
    memcpy(keep, db_print(plain), 65);
    assert_refused(plain, &sn, keep, "a counter that is a plain column here", TSYNC_EREFUSED,
                   "products.stock");

    /* an extra column here is fine: it keeps its default */
    tsync_store *wider = th_open(th_path(dir, "wider.db"));
    th_exec(wider, "CREATE TABLE products(id TEXT PRIMARY KEY, note TEXT DEFAULT 'n/a', name TEXT, "
                   "price INTEGER, stock INTEGER NOT NULL DEFAULT 0)");
    cr_assert_eq(tsync_store_replicate(wider, "products", ctr, 1), 0, "%s", th_errmsg());
    import_ok(wider, &sn, NULL);
    cr_assert_eq(th_int(wider, "SELECT count(*) FROM products WHERE note = 'n/a'", -1), 2);
    char *v = th_text(wider, "SELECT name || ':' || price || ':' || stock FROM products WHERE "
                             "id = 'p2'");
    cr_assert_str_eq(v, "green pear:20:7");
    free(v);
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(none);
    tsync_store_free(noprice);
    tsync_store_free(plain);
    tsync_store_free(wider);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

Test(snapshot, concurrent_writes_are_recorded_as_conflicts)
{
    const char *dir = tmpdir();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    th_exec(a, "INSERT INTO products VALUES('k1', 'one', 1, 0), ('k2', 'two', 2, 0), ('k3', "
               "'three', 3, 0)");
    cr_assert_eq(th_sync(a, b), 0);
    /* k3: b writes, a sees it and writes after it: sequential, no conflict */
    th_exec(b, "UPDATE products SET price = 30 WHERE id = 'k3'");
    cr_assert_eq(th_sync(b, a), 0);
    th_exec(a, "UPDATE products SET price = 31 WHERE id = 'k3'");
    th_seal(a);
    /* k1: b then a (a wins); k2: a then b (b wins); neither saw the other */
    th_exec(b, "UPDATE products SET name = 'b1' WHERE id = 'k1'");
    th_seal(b);
    sleep_ms(3);
    th_exec(a, "UPDATE products SET name = 'a1' WHERE id = 'k1'; UPDATE products SET name = 'a2' "
               "WHERE id = 'k2'");
    th_seal(a);
    sleep_ms(3);
    th_exec(b, "UPDATE products SET name = 'b2' WHERE id = 'k2'");
    th_seal(b);
    /* b has not merged a's k1/k2 writes */
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_conflicts", -1), 0);
    th_chunks sn;
    export_snap(a, TSYNC__SNAP_CHUNK_BYTES, &sn);
    tsync_store *b3 = copy_of(b, th_path(dir, "b3.db"));
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    import_ok(b, &sn, &rep);
    cr_assert_eq(rep.conflicts, 2, "conflicts: %zu", rep.conflicts);
    tsync_merge_report_clear(&rep);
    char *v = th_text(b, "SELECT group_concat(pk || ' ' || col || ' ' || win_val || '>' || "
                         "lose_val, ';') FROM (SELECT * FROM tsync_conflicts ORDER BY pk)");
    cr_assert_str_eq(v, "[\"k1\"] name a1>b1;[\"k2\"] name b2>a2");
    free(v);
    cr_assert_eq(th_int(b, "SELECT price FROM products WHERE id='k3'", -1), 31);
    /* merging the batches finds the same two */
    cr_assert_eq(th_sync(a, b3), 0);
    cr_assert_eq(th_int(b3, "SELECT count(*) FROM tsync_conflicts", -1), 2);
    cr_assert_str_eq(th_hash(b), th_hash(b3));
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(b3);
}

Test(snapshot, clocks_too_far_ahead_are_refused)
{
    const char *dir = tmpdir();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    /* A till whose clock is 20 minutes ahead: sealing takes the wall time the capture triggers
     * got from SQLite, so the captured times move as that machine's clock would have set them. */
    a->clock_offset_ms = 20 * 60 * 1000;
    th_exec(a, "INSERT INTO products VALUES('k1', 'late', 1, 0)");
    th_exec(a, "UPDATE tsync_pending SET wall = wall + 20 * 60 * 1000");
    th_seal(a);
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    th_chunks sn;
    export_snap(a, TSYNC__SNAP_CHUNK_BYTES, &sn);
    char keep[65];
    memcpy(keep, db_print(b), 65);
    assert_refused(b, &sn, keep, "a clock 20 minutes ahead", TSYNC_ECLOCKSKEW, "ahead");
    b->clock_offset_ms = 20 * 60 * 1000; /* once the clocks agree it merges */
    import_ok(b, &sn, NULL);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(snapshot, emit_stops_the_export)
{
    const char *dir = tmpdir();
    tsync_store *a = small_source(dir, "a.db");
    th_chunks sn;
    memset(&sn, 0, sizeof sn);
    sn.stop_at = 2;
    int rc = tsync__snap_export(a, 64, th_chunks_collect, &sn, &sn.vv);
    cr_assert_eq(rc, 42, "export returned %d, not emit's 42", rc);
    cr_assert_eq(sn.n, 1);
    cr_assert_eq(sn.vv.n, 0, "the vector is kept after a failed export");
    cr_assert(sqlite3_get_autocommit(tsync_store_sqlite(a)), "a transaction was left open");
    th_chunks_free(&sn);
    /* pending writes are sealed by the export, and an empty replica still gives one chunk */
    th_exec(a, "UPDATE products SET price = 99 WHERE id = 'p1'");
    tsync_store *e = th_open_products(th_path(dir, "e.db"));
    th_chunks empty;
    export_snap(e, TSYNC__SNAP_CHUNK_BYTES, &empty);
    cr_assert_eq(empty.n, 1);
    import_ok(a, &empty, NULL);
    export_snap(a, TSYNC__SNAP_CHUNK_BYTES, &sn);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
    import_ok(e, &sn, NULL);
    cr_assert_eq(th_int(e, "SELECT price FROM products WHERE id='p1'", -1), 99);
    th_chunks_free(&sn);
    th_chunks_free(&empty);
    tsync_store_free(a);
    tsync_store_free(e);
}

/* Chunks stay within the size asked for whatever the table size, and a many-chunk snapshot
 * rebuilds the same table. */
typedef struct {
    size_t budget, nchunks, rows, max_len, max_row;
} bounds;

static int check_chunk(void *ctx, const uint8_t *chunk, size_t len)
{
    bounds *b = ctx;
    tsync__arena a = {0};
    tsync__snap_chunk c;
    char err[TSYNC__ERRLEN];
    int rc = tsync__snap_decode(chunk, len, &c, &a, err);
    tsync__arena_free(&a);
    if (rc) return 1;
    b->nchunks++;
    b->rows += c.nrows;
    if (len > b->max_len) b->max_len = len;
    return 0;
}

Test(snapshot, chunks_are_bounded_on_a_200k_row_table, .timeout = 600)
{
    const char *dir = tmpdir();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    th_exec(a, "BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < "
               "200000) INSERT INTO products(id, name, price, stock) SELECT printf('p%06d', i), "
               "'product ' || i, i, i % 7 FROM c; COMMIT");
    th_exec(a, "DELETE FROM products WHERE id BETWEEN 'p000100' AND 'p000199'");
    th_seal(a);
    bounds b = {.budget = 256u << 10};
    tsync__vv vv;
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = tsync__snap_export(a, b.budget, check_chunk, &b, &vv);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_eq(rc, 0, "export: %s", rc == 1 ? "a chunk does not decode" : th_errmsg());
    cr_assert_eq(b.rows, 200000, "%zu rows exported", b.rows);
    /* a row here is under 100 bytes: every chunk is within the budget */
    cr_assert(b.max_len <= b.budget, "a chunk of %zu bytes, budget %zu", b.max_len, b.budget);
    cr_assert(b.nchunks >= 20, "%zu chunks", b.nchunks);
    tsync__vv_free(&vv);

    /* the chunks rebuild the table on an empty replica */
    th_chunks sn;
    export_snap(a, b.budget, &sn);
    tsync_store *r = th_open_products(th_path(dir, "r.db"));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    import_ok(r, &sn, &rep);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    cr_assert_eq(rep.merged, 200000);
    tsync_merge_report_clear(&rep);
    cr_assert_str_eq(th_hash(a), th_hash(r));
    cr_assert_eq(th_int(r, "SELECT count(*) FROM products", -1), 199900);
    cr_assert_eq(th_int(r, "SELECT count(*) FROM tsync_tomb_products", -1), 100);
    fprintf(stderr,
            "snapshot/bounded: 200000 rows in %zu chunks of at most %zu bytes; export %.2f s, "
            "import %.2f s\n",
            b.nchunks, b.max_len,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            (double)(t2.tv_sec - t1.tv_sec) + (double)(t2.tv_nsec - t1.tv_nsec) / 1e9);
    th_chunks_free(&sn);
    tsync_store_free(a);
    tsync_store_free(r);
}
