/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_concurrency.c — several writers on one database file at once, as on a real till:
 * the POS app's own SQLite connection writing sales while the tillsync node seals and merges, two
 * processes sealing the same file, and two stores in two threads merging from different peers.
 *
 * What must hold: nothing committed is lost; no SQLITE_BUSY reaches the app or the store while
 * the other side works (every write that matters waits under the busy timeout); the log stays
 * one chain (seqs 1..N, no gap, no duplicate, every batch verifies) so sealing from two places
 * never forks the site; and a peer that merges a bundle shows the same rows.
 *
 * Seeds are printed (TSYNC_SEED replays the choices; the interleaving is up to the scheduler).
 * TSYNC_CONC_MS sets how long each writer runs (default 2000 ms).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crdt/crdt.h"
#include "tests/lib/helpers.h"

#define NPROD       4
#define START_STOCK 1000000

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

static int run_ms(void)
{
    const char *e = getenv("TSYNC_CONC_MS");
    int ms = e && *e ? atoi(e) : 2000;
    return ms > 0 ? ms : 2000;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* What the .fini hook cleans up, also when an assertion stops a test midway: the folder and the
 * stores the test thread opened. */
static char *g_dir;
static tsync_store *g_stores[4];

static tsync_store *tracked(tsync_store *s)
{
    for (int i = 0; i < 4; i++)
        if (!g_stores[i]) return g_stores[i] = s;
    cr_assert_fail("too many stores");
    return s;
}

static void close_store(tsync_store *s)
{
    for (int i = 0; i < 4; i++)
        if (g_stores[i] == s) g_stores[i] = NULL;
    tsync_store_free(s);
}

static void conc_fini(void)
{
    for (int i = 0; i < 4; i++) close_store(g_stores[i]);
    if (g_dir) th_rmdir(g_dir);
    free(g_dir);
    g_dir = NULL;
}

static tsync_store *open_shop(const char *path)
{
    tsync_store *s = tracked(th_open_products(path));
    th_exec(s, "CREATE TABLE IF NOT EXISTS sales(id TEXT PRIMARY KEY, product TEXT, qty INTEGER)");
    int rc = tsync_store_replicate(s, "sales", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate sales: %s", errmsg());
    return s;
}

static void add_catalogue(tsync_store *s, const char *prefix)
{
    for (int p = 0; p < NPROD; p++) {
        char sql[160];
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('%s%d', 'item %d', %d, %d)", prefix,
                 p, p, 100 + p, START_STOCK);
        th_exec(s, sql);
    }
    th_seal(s);
}

/* Merges everything `from` has into `to`; nothing may be refused, held or parked. */
static void merge_all(tsync_store *from, tsync_store *to, const char *what)
{
    size_t len;
    uint8_t *b = th_bundle(from, &len);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge(to, b, len, &rep);
    cr_assert(rc == 0 && rep.refused == 0 && rep.parked == 0 && rep.held == 0,
              "%s: rc %d (%s), %zu refused, %zu parked, %zu held: %s", what, rc,
              rc ? errmsg() : "ok", rep.refused, rep.parked, rep.held,
              rep.nmessages ? rep.messages[0] : "");
    tsync_merge_report_clear(&rep);
    free(b);
}

/* Whether every line of `need` ("k\n" each) is a line of `have`. */
static const char *first_missing(const char *need, const char *have)
{
    static char miss[64];
    for (const char *p = need; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (const char *q = have; q && *q && !found;) {
            const char *f = strchr(q, '\n');
            size_t m = f ? (size_t)(f - q) : strlen(q);
            found = m == n && memcmp(p, q, n) == 0;
            q = f ? f + 1 : q + m;
        }
        if (!found) {
            snprintf(miss, sizeof miss, "%.*s", (int)(n < 60 ? n : 60), p);
            return miss;
        }
        p = e ? e + 1 : p + n;
    }
    return NULL;
}

/* ---------------------------------------------------------------- the POS app's connection */

typedef struct {
    const char *path;
    uint64_t seed;
    int ms;
    /* results */
    int64_t nsales, dec[NPROD];
    int errors;
    char err[300];
} pos_args;

static int pos_exec(sqlite3 *db, pos_args *a, const char *sql)
{
    char *e = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &e);
    if (rc != SQLITE_OK) {
        if (!a->errors++)
            snprintf(a->err, sizeof a->err, "%s: %s (code %d)", sql, e ? e : "?",
                     sqlite3_extended_errcode(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_free(e);
    return rc;
}

/* A POS app: its own plain connection with the PRAGMAs the README asks for, single-statement
 * sales and two-statement transactions under BEGIN IMMEDIATE. */
static void *pos_thread(void *p)
{
    pos_args *a = p;
    sqlite3 *db = NULL;
    if (sqlite3_open(a->path, &db) != SQLITE_OK) {
        snprintf(a->err, sizeof a->err, "open: %s", db ? sqlite3_errmsg(db) : "?");
        a->errors++;
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    pos_exec(db, a, "PRAGMA journal_mode=WAL");
    pos_exec(db, a, "PRAGMA synchronous=NORMAL");
    uint64_t rng = a->seed;
    double end = now_ms() + a->ms;
    for (int64_t n = 0; now_ms() < end && !a->errors; n++) {
        int prod = (int)(th_rand(&rng) % NPROD), qty = 1 + (int)(th_rand(&rng) % 5);
        char sale[160], dec[160];
        snprintf(sale, sizeof sale, "INSERT INTO sales VALUES('pos-%lld', 'p%d', %d)", (long long)n,
                 prod, qty);
        snprintf(dec, sizeof dec, "UPDATE products SET stock = stock - %d WHERE id = 'p%d'", qty,
                 prod);
        if (n % 3 == 0) {
            /* one transaction: the sale and its stock movement together */
            if (pos_exec(db, a, "BEGIN IMMEDIATE") || pos_exec(db, a, sale) ||
                pos_exec(db, a, dec) || pos_exec(db, a, "COMMIT"))
                break;
        } else if (pos_exec(db, a, sale) || pos_exec(db, a, dec)) {
            break;
        }
        a->nsales++;
        a->dec[prod] += qty;
    }
    sqlite3_close(db);
    return NULL;
}

Test(concurrency, pos_connection_writes_while_store_seals_and_merges, .fini = conc_fini,
     .timeout = 300)
{
    uint64_t seed = th_seed("concurrency/pos_connection_writes_while_store_seals_and_merges");
    uint64_t rng = seed;
    g_dir = th_tmpdir();
    char till_path[4096];
    snprintf(till_path, sizeof till_path, "%s", th_path(g_dir, "till.db"));
    tsync_store *till = open_shop(till_path);
    add_catalogue(till, "p");
    tsync_store *peer = open_shop(th_path(g_dir, "peer.db"));
    add_catalogue(peer, "q");

    pos_args pa = {till_path, th_rand(&rng), run_ms(), 0, {0}, 0, ""};
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, pos_thread, &pa) == 0);
    /* Meanwhile the node works on the same file: seals, merges the peer's sales, bundles for
     * the peer. Every call must succeed: waiting for the app is the busy timeout's job. */
    int64_t peer_sales = 0, qdec[NPROD] = {0};
    int seals = 0, merges = 0, failures = 0;
    char fail[400] = "";
    double end = now_ms() + pa.ms;
    while (now_ms() < end && !failures) {
        size_t n = 0;
        int rc = tsync_store_seal(till, &n);
        if (rc) failures++, snprintf(fail, sizeof fail, "seal: %s", errmsg());
        seals += (int)n;
        int prod = (int)(th_rand(&rng) % NPROD);
        char sql[160];
        snprintf(sql, sizeof sql, "INSERT INTO sales VALUES('peer-%lld', 'q%d', 1)",
                 (long long)peer_sales, prod);
        th_exec(peer, sql);
        snprintf(sql, sizeof sql, "UPDATE products SET stock = stock - 1 WHERE id = 'q%d'", prod);
        th_exec(peer, sql);
        peer_sales++;
        qdec[prod]++;
        if (!failures && th_rand(&rng) % 2) {
            rc = th_sync(peer, till);
            if (rc) failures++, snprintf(fail, sizeof fail, "merge into the till: %s", errmsg());
            merges++;
        }
        if (!failures && th_rand(&rng) % 2) {
            rc = th_sync(till, peer);
            if (rc) failures++, snprintf(fail, sizeof fail, "merge from the till: %s", errmsg());
        }
    }
    pthread_join(th, NULL);
    cr_assert_eq(pa.errors, 0, "the POS connection got an error: %s", pa.err);
    cr_assert_eq(failures, 0, "the store failed while the POS app wrote: %s", fail);
    cr_assert(pa.nsales > 0 && seals > 0 && merges > 0,
              "no real overlap: %lld sales, %d seals, %d merges", (long long)pa.nsales, seals,
              merges);

    /* Nothing lost: every sale and every stock movement, on the till and on the peer. */
    th_seal(till);
    merge_all(till, peer, "till to peer");
    merge_all(peer, till, "peer to till");
    for (int k = 0; k < 2; k++) {
        tsync_store *s = k ? peer : till;
        const char *who = k ? "peer" : "till";
        cr_assert_eq(th_int(s, "SELECT count(*) FROM sales WHERE id LIKE 'pos-%'", -1), pa.nsales,
                     "%s: POS sales", who);
        cr_assert_eq(th_int(s, "SELECT count(*) FROM sales WHERE id LIKE 'peer-%'", -1), peer_sales,
                     "%s: peer sales", who);
        for (int p = 0; p < NPROD; p++) {
            char q[120];
            snprintf(q, sizeof q, "SELECT stock FROM products WHERE id='p%d'", p);
            cr_assert_eq(th_int(s, q, -1), START_STOCK - pa.dec[p], "%s: stock of p%d", who, p);
            snprintf(q, sizeof q, "SELECT stock FROM products WHERE id='q%d'", p);
            cr_assert_eq(th_int(s, q, -1), START_STOCK - qdec[p], "%s: stock of q%d", who, p);
        }
    }
    cr_assert_str_eq(th_hash(till), th_hash(peer));
    th_check_log(till, tsync_store_site_id(till), "till", 1, "sales", NULL);
    th_check_log(peer, tsync_store_site_id(till), "peer's copy of the till's log", 0, "sales",
                 NULL);
    fprintf(stderr,
            "concurrency: POS app committed %lld sales while the node sealed %d batches "
            "and merged %d bundles\n",
            (long long)pa.nsales, seals, merges);
    conc_fini();
}

/* ---------------------------------------------------------------- two processes, one file */

/* One of two processes writing and sealing the same database with their own stores. Writes its
 * totals to fd at the end; errors: a message and exit status 3. Never returns into criterion. */
static void sealer_main(const char *path, char tag, uint64_t seed, int ms, int fd)
{
    tsync_store *s = NULL;
    if (tsync_store_open(&s, path, NULL) != 0) {
        fprintf(stderr, "sealer %c: open: %s\n", tag, errmsg());
        _exit(3);
    }
    uint64_t rng = seed;
    int64_t n = 0, delta = 0;
    double end = now_ms() + ms;
    for (; now_ms() < end; n++) {
        char sql[160];
        int d = (int)(th_rand(&rng) % 7) - 3;
        snprintf(sql, sizeof sql, "INSERT INTO sales VALUES('%c-%lld', 'p0', %d)", tag,
                 (long long)n, d);
        char *err = NULL;
        if (sqlite3_exec(tsync_store_sqlite(s), sql, NULL, NULL, &err) != SQLITE_OK) {
            fprintf(stderr, "sealer %c: %s: %s\n", tag, sql, err ? err : "?");
            _exit(3);
        }
        /* both processes move the same counter */
        snprintf(sql, sizeof sql, "UPDATE products SET stock = stock + %d WHERE id = 'p0'", d);
        if (sqlite3_exec(tsync_store_sqlite(s), sql, NULL, NULL, &err) != SQLITE_OK) {
            fprintf(stderr, "sealer %c: %s: %s\n", tag, sql, err ? err : "?");
            _exit(3);
        }
        delta += d;
        if (th_rand(&rng) % 3 == 0 && tsync_store_seal(s, NULL) != 0) {
            fprintf(stderr, "sealer %c: seal: %s\n", tag, errmsg());
            _exit(3);
        }
        if (th_rand(&rng) % 50 == 0) {
            uint8_t *b = NULL;
            size_t len;
            if (tsync_store_bundle(&b, &len, s, NULL, NULL) != 0) {
                fprintf(stderr, "sealer %c: bundle: %s\n", tag, errmsg());
                _exit(3);
            }
            free(b);
        }
    }
    if (tsync_store_seal(s, NULL) != 0) {
        fprintf(stderr, "sealer %c: last seal: %s\n", tag, errmsg());
        _exit(3);
    }
    tsync_store_free(s);
    int64_t out[2] = {n, delta};
    _exit(write(fd, out, sizeof out) == (ssize_t)sizeof out ? 0 : 4);
}

Test(concurrency, two_processes_sealing_never_fork, .fini = conc_fini, .timeout = 300)
{
    uint64_t seed = th_seed("concurrency/two_processes_sealing_never_fork");
    uint64_t rng = seed;
    g_dir = th_tmpdir();
    char path[4096];
    snprintf(path, sizeof path, "%s", th_path(g_dir, "till.db"));
    tsync_store *s = open_shop(path);
    add_catalogue(s, "p");
    uint8_t site[TSYNC__SITE_BYTES];
    memcpy(site, tsync_store_site_id(s), sizeof site);
    close_store(s); /* no connection crosses fork() */

    int ms = run_ms();
    int pfd[2][2];
    pid_t pid[2];
    fflush(NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert(pipe(pfd[i]) == 0);
        uint64_t cs = th_rand(&rng);
        pid[i] = fork();
        cr_assert(pid[i] >= 0, "fork: %s", strerror(errno));
        if (pid[i] == 0) {
            close(pfd[i][0]);
            sealer_main(path, i ? 'B' : 'A', cs, ms, pfd[i][1]);
        }
        close(pfd[i][1]);
    }
    int64_t res[2][2] = {{0}};
    for (int i = 0; i < 2; i++) {
        int status;
        ssize_t got = read(pfd[i][0], res[i], sizeof res[i]);
        close(pfd[i][0]);
        cr_assert(waitpid(pid[i], &status, 0) == pid[i]);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0 && got == (ssize_t)sizeof res[i],
                  "sealer %c failed (status %d; see its message above)", i ? 'B' : 'A', status);
    }

    s = tracked(th_open_products(path));
    cr_assert(memcmp(site, tsync_store_site_id(s), sizeof site) == 0, "the site id changed");
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_pending", -1), 0, "writes left unsealed");
    char *keys = NULL;
    int64_t nbatches = th_check_log(s, site, "the shared log", 1, "sales", &keys);
    int64_t want_rows = res[0][0] + res[1][0];
    cr_assert_eq(th_int(s, "SELECT count(*) FROM sales", -1), want_rows, "sales rows");
    char q[120];
    snprintf(q, sizeof q, "SELECT stock FROM products WHERE id='p0'");
    cr_assert_eq(th_int(s, q, -1), START_STOCK + res[0][1] + res[1][1], "the shared counter");
    /* Every write is in some batch. */
    char *expect = calloc((size_t)want_rows * 24 + 1, 1);
    cr_assert(expect);
    size_t o = 0;
    for (int i = 0; i < 2; i++)
        for (int64_t n = 0; n < res[i][0]; n++)
            o += (size_t)sprintf(expect + o, "%c-%lld\n", i ? 'B' : 'A', (long long)n);
    const char *miss = first_missing(expect, keys);
    cr_assert(!miss, "sale %s is in no batch", miss);
    free(expect);
    free(keys);

    /* A peer takes the whole log and shows the same rows. */
    tsync_store *peer = open_shop(th_path(g_dir, "peer.db"));
    merge_all(s, peer, "peer");
    cr_assert_str_eq(th_hash(s), th_hash(peer));
    cr_assert_eq(th_int(peer, "SELECT count(*) FROM sales", -1), want_rows);
    fprintf(stderr,
            "concurrency: two processes wrote %lld + %lld sales and sealed %lld batches "
            "into one chain\n",
            (long long)res[0][0], (long long)res[1][0], (long long)nbatches);
    conc_fini();
}

/* ---------------------------------------------------------------- two threads, two stores */

typedef struct {
    const char *till, *peer;
    char tag;
    uint64_t seed;
    int ms;
    tsync_store *peer_store; /* opened and used by the thread only; freed by the test */
    int64_t sales, peer_sales;
    int errors;
    char err[400];
} twin_args;

#define TWIN_FAIL(a, ...)                                                                          \
    do {                                                                                           \
        if (!(a)->errors++) snprintf((a)->err, sizeof(a)->err, __VA_ARGS__);                       \
        goto out;                                                                                  \
    } while (0)

/* One store on the shared file, merging from its own peer (which sells too) and bundling back,
 * while writing local sales and sealing. */
static void *twin_thread(void *p)
{
    twin_args *a = p;
    tsync_store *s = NULL, *peer = a->peer_store;
    uint8_t *b = NULL;
    char *state = NULL;
    if (tsync_store_open(&s, a->till, NULL) != 0) TWIN_FAIL(a, "open: %s", errmsg());
    uint64_t rng = a->seed;
    double end = now_ms() + a->ms;
    while (now_ms() < end) {
        char sql[160];
        snprintf(sql, sizeof sql, "INSERT INTO sales VALUES('%c-%lld', 'p1', 1)", a->tag,
                 (long long)a->sales);
        if (sqlite3_exec(tsync_store_sqlite(s), sql, NULL, NULL, NULL) != SQLITE_OK)
            TWIN_FAIL(a, "%s: %s", sql, sqlite3_errmsg(tsync_store_sqlite(s)));
        a->sales++;
        snprintf(sql, sizeof sql, "INSERT INTO sales VALUES('%c-peer-%lld', 'p1', 1)", a->tag,
                 (long long)a->peer_sales);
        if (sqlite3_exec(tsync_store_sqlite(peer), sql, NULL, NULL, NULL) != SQLITE_OK)
            TWIN_FAIL(a, "peer: %s: %s", sql, sqlite3_errmsg(tsync_store_sqlite(peer)));
        a->peer_sales++;
        int what = (int)(th_rand(&rng) % 3);
        size_t len;
        if (what == 0 && tsync_store_seal(s, NULL) != 0) TWIN_FAIL(a, "seal: %s", errmsg());
        if (what == 1) {
            /* what the shared file lacks from our peer */
            if (tsync_store_state_json(&state, s) ||
                tsync_store_bundle(&b, &len, peer, state, NULL))
                TWIN_FAIL(a, "bundle for the till: %s", errmsg());
            if (tsync_store_merge(s, b, len, NULL) != 0) TWIN_FAIL(a, "merge: %s", errmsg());
        }
        if (what == 2) {
            if (tsync_store_state_json(&state, peer) ||
                tsync_store_bundle(&b, &len, s, state, NULL))
                TWIN_FAIL(a, "bundle for the peer: %s", errmsg());
            if (tsync_store_merge(peer, b, len, NULL) != 0)
                TWIN_FAIL(a, "merge into the peer: %s", errmsg());
        }
        free(b), free(state);
        b = NULL, state = NULL;
    }
out:
    free(b), free(state);
    tsync_store_free(s);
    return NULL;
}

Test(concurrency, two_stores_in_two_threads_merge_into_one_file, .fini = conc_fini, .timeout = 300)
{
    uint64_t seed = th_seed("concurrency/two_stores_in_two_threads_merge_into_one_file");
    uint64_t rng = seed;
    g_dir = th_tmpdir();
    char till[4096], peer[2][4096];
    snprintf(till, sizeof till, "%s", th_path(g_dir, "till.db"));
    tsync_store *s = open_shop(till);
    add_catalogue(s, "p");
    twin_args a[2];
    for (int i = 0; i < 2; i++) {
        snprintf(peer[i], sizeof peer[i], "%s", th_path(g_dir, i ? "peer1.db" : "peer0.db"));
        memset(&a[i], 0, sizeof a[i]);
        a[i].till = till;
        a[i].peer = peer[i];
        a[i].tag = i ? 'B' : 'A';
        a[i].seed = th_rand(&rng);
        a[i].ms = run_ms();
        a[i].peer_store = open_shop(peer[i]);
        merge_all(s, a[i].peer_store, "catalogue to a peer");
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++) cr_assert(pthread_create(&th[i], NULL, twin_thread, &a[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) cr_assert_eq(a[i].errors, 0, "store %c: %s", a[i].tag, a[i].err);

    /* Everything meets in the shared file, then flows back to both peers. */
    for (int i = 0; i < 2; i++) merge_all(a[i].peer_store, s, "peer to till");
    for (int i = 0; i < 2; i++) merge_all(s, a[i].peer_store, "till to peer");
    int64_t want = 0;
    for (int i = 0; i < 2; i++) want += a[i].sales + a[i].peer_sales;
    cr_assert_eq(th_int(s, "SELECT count(*) FROM sales", -1), want, "sales in the shared file");
    th_check_log(s, tsync_store_site_id(s), "the shared log", 1, "sales", NULL);
    for (int i = 0; i < 2; i++) {
        th_check_log(s, tsync_store_site_id(a[i].peer_store), "a peer's log in the shared file", 0,
                     "sales", NULL);
        cr_assert_str_eq(th_hash(a[i].peer_store), th_hash(s), "peer %d differs", i);
    }
    fprintf(stderr,
            "concurrency: two stores in two threads wrote %lld + %lld sales and merged "
            "%lld + %lld from their peers into one file\n",
            (long long)a[0].sales, (long long)a[1].sales, (long long)a[0].peer_sales,
            (long long)a[1].peer_sales);
    conc_fini();
}
