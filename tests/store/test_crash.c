/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_crash.c — crash safety: a till process killed with SIGKILL at random moments,
 * while it sells, seals, bundles and merges, must lose no committed sale, must leave a log that is
 * contiguous and verifies, and must still converge with a peer.
 *
 * The child opens the database (synchronous=NORMAL: a process crash, not a power loss, so every
 * COMMIT that returned must survive) and runs single-row transactions: sales inserted into
 * `sales` and stock decrements of `products` (a counter). Before each one it writes an intent
 * record to a pipe, and after COMMIT returns a committed record, so the parent knows exactly
 * which transactions committed and which single one, the last, is in doubt. It seals every few
 * writes, makes a bundle now and then, and once per run merges a bundle of the peer, so kills
 * land in every step. The parent kills it after a random delay, reopens the database and checks
 * everything; then the peer and the till exchange full bundles and must show the same rows.
 *
 * The seed is printed; TSYNC_SEED=<n> replays the same delays and choices (where a kill lands
 * still depends on timing). TSYNC_CRASH_ITERATIONS sets the number of kills (default 40).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

#define NPROD       5
#define START_STOCK 100000

/* One record on the pipe from child to parent (12 bytes: writes this small are atomic). */
typedef struct {
    uint32_t n;    /* transaction number in this run */
    uint8_t phase; /* 'I' about to commit, 'C' committed; 'B', 'E': begin and end of a step */
    uint8_t kind;  /* 's' sale row inserted, 'd' stock decremented; steps: 'S' seal, 'M' merge,
                      'U' bundle, 'O' open */
    uint8_t prod;
    uint8_t pad;
    int32_t qty;
} rec;

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

static void put_rec(int fd, uint32_t n, char phase, char kind, int prod, int qty)
{
    rec r = {n, (uint8_t)phase, (uint8_t)kind, (uint8_t)prod, 0, qty};
    /* A failed write means the parent is gone: nothing left to report to. */
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(4);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)(n > 0 ? n : 0);
    return b;
}

/* The till. Runs until killed; never returns into criterion (errors: message and _exit). */
static void child_main(const char *db, const char *peer_bundle, int iter, uint64_t seed, int fd)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.synchronous = TSYNC_SYNC_NORMAL;
    tsync_store *s = NULL;
    put_rec(fd, 0, 'B', 'O', 0, 0);
    if (tsync_store_open(&s, db, &o) != 0) {
        fprintf(stderr, "child: open: %s\n", errmsg());
        _exit(3);
    }
    put_rec(fd, 0, 'E', 'O', 0, 0);
    sqlite3 *h = tsync_store_sqlite(s);
    uint64_t rng = seed;
    int seal_every = 1 + (int)(th_rand(&rng) % 5);
    uint32_t merge_at = (uint32_t)(th_rand(&rng) % 40);
    for (uint32_t n = 0;; n++) {
        int prod = (int)(th_rand(&rng) % NPROD);
        int qty = 1 + (int)(th_rand(&rng) % 9);
        char kind = th_rand(&rng) % 2 ? 's' : 'd';
        char sql[200];
        if (kind == 's')
            snprintf(sql, sizeof sql,
                     "INSERT INTO sales(id, product, qty) VALUES('c%d-%u', "
                     "'p%d', %d)",
                     iter, n, prod, qty);
        else
            snprintf(sql, sizeof sql, "UPDATE products SET stock = stock - %d WHERE id = 'p%d'",
                     qty, prod);
        put_rec(fd, n, 'I', kind, prod, qty);
        char *err = NULL;
        if (sqlite3_exec(h, sql, NULL, NULL, &err) != SQLITE_OK) {
            fprintf(stderr, "child: %s: %s\n", sql, err ? err : "?");
            _exit(3);
        }
        put_rec(fd, n, 'C', kind, prod, qty);
        if ((n + 1) % (uint32_t)seal_every == 0) {
            put_rec(fd, n, 'B', 'S', 0, 0);
            if (tsync_store_seal(s, NULL) != 0) {
                fprintf(stderr, "child: seal: %s\n", errmsg());
                _exit(3);
            }
            put_rec(fd, n, 'E', 'S', 0, 0);
        }
        if (n == merge_at) {
            size_t len;
            uint8_t *b = read_file(peer_bundle, &len);
            put_rec(fd, n, 'B', 'M', 0, 0);
            if (b && tsync_store_merge(s, b, len, NULL) != 0) {
                fprintf(stderr, "child: merge of the peer's bundle: %s\n", errmsg());
                _exit(3);
            }
            put_rec(fd, n, 'E', 'M', 0, 0);
            free(b);
        }
        if (th_rand(&rng) % 16 == 0) {
            uint8_t *b = NULL;
            size_t len;
            put_rec(fd, n, 'B', 'U', 0, 0);
            if (tsync_store_bundle(&b, &len, s, NULL, NULL) != 0) {
                fprintf(stderr, "child: bundle: %s\n", errmsg());
                _exit(3);
            }
            put_rec(fd, n, 'E', 'U', 0, 0);
            free(b);
        }
    }
}

static tsync_store *open_shop(const char *path)
{
    tsync_store *s = th_open_products(path);
    th_exec(s, "CREATE TABLE IF NOT EXISTS sales(id TEXT PRIMARY KEY, product TEXT, qty INTEGER)");
    int rc = tsync_store_replicate(s, "sales", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate sales: %s", errmsg());
    return s;
}

/* Two-way exchange of full bundles (everything, so all old batches come again as duplicates):
 * a fork after a crash (a seq reused with other content) would be refused here. */
static void exchange(tsync_store *a, tsync_store *b, const char *what)
{
    for (int k = 0; k < 2; k++) {
        tsync_store *from = k ? b : a, *to = k ? a : b;
        size_t len;
        uint8_t *bun = th_bundle(from, &len);
        tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
        int rc = tsync_store_merge(to, bun, len, &rep);
        cr_assert(rc == 0 && rep.refused == 0 && rep.parked == 0 && rep.held == 0,
                  "%s: merge: rc %d (%s), %zu refused, %zu parked, %zu held: %s", what, rc,
                  rc ? errmsg() : "ok", rep.refused, rep.parked, rep.held,
                  rep.nmessages ? rep.messages[0] : "");
        tsync_merge_report_clear(&rep);
        free(bun);
    }
}

#define NWHERE 6
static const char *const WHERE[NWHERE] = {"open",    "a transaction", "a seal",
                                          "a merge", "a bundle",      "between steps"};

/* What the .fini hook cleans up when an assertion stops the test midway. */
static char *g_dir;
static tsync_store *g_till, *g_peer;
static rec *g_recs;

static void crash_fini(void)
{
    tsync_store_free(g_till);
    tsync_store_free(g_peer);
    free(g_recs);
    g_till = g_peer = NULL;
    g_recs = NULL;
    if (g_dir) th_rmdir(g_dir);
    free(g_dir);
    g_dir = NULL;
}

Test(crash, sigkill_at_random_points_loses_no_committed_sale, .fini = crash_fini, .timeout = 600)
{
    uint64_t seed = th_seed("crash/sigkill_at_random_points_loses_no_committed_sale");
    uint64_t rng = seed;
    const char *ei = getenv("TSYNC_CRASH_ITERATIONS");
    int iterations = ei && *ei ? atoi(ei) : 40;
    g_dir = th_tmpdir();
    char till_path[4096], peer_path[4096], bundle_path[4096], tmp_path[4096];
    snprintf(till_path, sizeof till_path, "%s", th_path(g_dir, "till.db"));
    snprintf(peer_path, sizeof peer_path, "%s", th_path(g_dir, "peer.db"));
    snprintf(bundle_path, sizeof bundle_path, "%s", th_path(g_dir, "peer.bundle"));
    snprintf(tmp_path, sizeof tmp_path, "%s", th_path(g_dir, "peer.bundle.tmp"));

    /* The catalogue: the till sells p0..p4, the peer sells q0. */
    tsync_store *till = g_till = open_shop(till_path);
    for (int p = 0; p < NPROD; p++) {
        char sql[120];
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('p%d', 'item %d', %d, %d)", p, p,
                 100 + p, START_STOCK);
        th_exec(till, sql);
    }
    th_seal(till);
    tsync_store *peer = g_peer = open_shop(peer_path);
    th_exec(peer, "INSERT INTO products VALUES('q0', 'peer item', 7, 1000)");
    th_seal(peer);
    exchange(till, peer, "initial exchange");
    tsync_store_free(till);
    g_till = NULL;

    int64_t committed_dec[NPROD] = {0};
    int64_t committed_sales = 0, peer_sales = 0, total_txns = 0, in_doubt_committed = 0;
    int landed[NWHERE] = {0};
    uint8_t till_site[TSYNC__SITE_BYTES];
    int have_site = 0;
    for (int iter = 0; iter < iterations; iter++) {
        /* The peer sells too; its latest bundle waits for the till in a file. */
        for (int j = 0, nj = 1 + (int)(th_rand(&rng) % 3); j < nj; j++) {
            char sql[160];
            snprintf(sql, sizeof sql, "INSERT INTO sales VALUES('q%d-%d', 'q0', 1)", iter, j);
            th_exec(peer, sql);
            th_exec(peer, "UPDATE products SET stock = stock - 1 WHERE id = 'q0'");
            peer_sales++;
        }
        th_seal(peer);
        size_t blen;
        uint8_t *b = th_bundle(peer, &blen);
        FILE *f = fopen(tmp_path, "wb");
        cr_assert(f && fwrite(b, 1, blen, f) == blen && fclose(f) == 0, "write peer bundle");
        cr_assert(rename(tmp_path, bundle_path) == 0);
        free(b);

        int pfd[2];
        cr_assert(pipe(pfd) == 0);
        uint64_t child_seed = th_rand(&rng);
        int delay = (int)(th_rand(&rng) % 120);
        fflush(NULL);
        pid_t pid = fork();
        cr_assert(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            close(pfd[0]);
            child_main(till_path, bundle_path, iter, child_seed, pfd[1]);
            _exit(5);
        }
        close(pfd[1]);
        /* Read records while waiting, so the pipe never fills and blocks the child. */
        rec *recs = NULL;
        size_t nrecs = 0, cap = 0, partial = 0;
        uint8_t buf[4096], carry[sizeof(rec)];
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int killed = 0, eof = 0;
        while (!eof) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long el = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
            if (!killed && el >= delay) {
                kill(pid, SIGKILL);
                killed = 1;
            }
            struct pollfd pf = {pfd[0], POLLIN, 0};
            int pr = poll(&pf, 1, killed ? 1000 : (int)(delay - el));
            if (pr <= 0) continue;
            ssize_t got = read(pfd[0], buf, sizeof buf);
            if (got <= 0) {
                eof = got == 0;
                if (got < 0 && errno != EINTR) eof = 1;
                continue;
            }
            for (ssize_t i = 0; i < got; i++) {
                carry[partial++] = buf[i];
                if (partial < sizeof(rec)) continue;
                if (nrecs == cap) {
                    cap = cap ? cap * 2 : 256;
                    recs = g_recs = realloc(recs, cap * sizeof *recs);
                    cr_assert(recs);
                }
                memcpy(&recs[nrecs++], carry, sizeof(rec));
                partial = 0;
            }
        }
        close(pfd[0]);
        int status;
        cr_assert(waitpid(pid, &status, 0) == pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "iteration %d: the till stopped by itself (status %d; see its message above)",
                  iter, status);
        cr_assert_eq(partial, 0, "iteration %d: a torn record on the pipe", iter);

        /* What the child reported: committed transactions, and at most one in doubt. */
        const rec *doubt = NULL, *step = NULL;
        int64_t run_sales = 0;
        for (size_t i = 0; i < nrecs; i++) {
            const rec *r = &recs[i];
            if (r->phase == 'B' || r->phase == 'E') {
                step = r->phase == 'B' ? r : NULL;
                continue;
            }
            if (r->phase == 'I') {
                cr_assert(!doubt, "iteration %d: two transactions in flight", iter);
                doubt = r;
            } else {
                cr_assert(doubt && doubt->n == r->n, "iteration %d: commit without intent", iter);
                doubt = NULL;
                if (r->kind == 's')
                    run_sales++;
                else
                    committed_dec[r->prod] += r->qty;
                total_txns++;
            }
        }
        /* Where the kill landed, for the summary. */
        const char *where = doubt                       ? "a transaction"
                            : step && step->kind == 'O' ? "open"
                            : step && step->kind == 'S' ? "a seal"
                            : step && step->kind == 'M' ? "a merge"
                            : step && step->kind == 'U' ? "a bundle"
                                                        : "between steps";
        for (int w = 0; w < NWHERE; w++)
            if (strcmp(where, WHERE[w]) == 0) landed[w]++;

        /* Reopen: everything committed is there. */
        tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
        o.synchronous = TSYNC_SYNC_NORMAL;
        till = NULL;
        int rc = tsync_store_open(&till, till_path, &o);
        g_till = till;
        cr_assert(rc == 0, "iteration %d: reopen after the kill: %s", iter, errmsg());
        if (!have_site) memcpy(till_site, tsync_store_site_id(till), sizeof till_site);
        have_site = 1;
        cr_assert(memcmp(till_site, tsync_store_site_id(till), sizeof till_site) == 0,
                  "iteration %d: the till's site id changed after a crash", iter);
        for (size_t i = 0; i < nrecs; i++) {
            const rec *r = &recs[i];
            if (r->phase != 'C' || r->kind != 's') continue;
            char q[200];
            snprintf(q, sizeof q, "SELECT qty FROM sales WHERE id='c%d-%u' AND product='p%d'", iter,
                     r->n, r->prod);
            cr_assert_eq(th_int(till, q, -1), r->qty,
                         "iteration %d: committed sale c%d-%u is missing after the kill", iter,
                         iter, r->n);
        }
        if (doubt) {
            /* The transaction in flight: all or nothing. */
            if (doubt->kind == 's') {
                char q[200];
                snprintf(q, sizeof q, "SELECT count(*) FROM sales WHERE id='c%d-%u'", iter,
                         doubt->n);
                if (th_int(till, q, 0)) run_sales++, in_doubt_committed++, total_txns++;
            } else {
                char q[120];
                snprintf(q, sizeof q, "SELECT stock FROM products WHERE id='p%d'", doubt->prod);
                int64_t got = th_int(till, q, -1);
                int64_t without = START_STOCK - committed_dec[doubt->prod];
                cr_assert(got == without || got == without - doubt->qty,
                          "iteration %d: stock of p%d is %lld: neither %lld (the sale in flight "
                          "lost) nor %lld (kept)",
                          iter, doubt->prod, (long long)got, (long long)without,
                          (long long)(without - doubt->qty));
                if (got != without)
                    committed_dec[doubt->prod] += doubt->qty, in_doubt_committed++, total_txns++;
            }
        }
        committed_sales += run_sales;
        int64_t shown = th_int(till, "SELECT count(*) FROM sales WHERE id LIKE 'c%'", -1);
        cr_assert_eq(shown, committed_sales,
                     "iteration %d: the till shows %lld of its sales, %lld "
                     "committed",
                     iter, (long long)shown, (long long)committed_sales);
        for (int p = 0; p < NPROD; p++) {
            char q[120];
            snprintf(q, sizeof q, "SELECT stock FROM products WHERE id='p%d'", p);
            cr_assert_eq(th_int(till, q, -1), START_STOCK - committed_dec[p],
                         "iteration %d: stock of p%d", iter, p);
        }

        /* Sealing completes and takes every committed change; the log is sound. */
        size_t n = 0;
        rc = tsync_store_seal(till, &n);
        cr_assert(rc == 0, "iteration %d: seal after the kill: %s", iter, errmsg());
        cr_assert_eq(th_int(till, "SELECT count(*) FROM tsync_pending", -1), 0);
        th_check_log(till, till_site, "till", 1, NULL, NULL);
        th_check_log(till, tsync_store_site_id(peer), "till's copy of the peer's log", 0, NULL,
                     NULL);

        /* Converge with the peer; now and then a brand-new peer takes everything too. */
        exchange(till, peer, "exchange after the kill");
        char h_till[65], h_peer[65];
        snprintf(h_till, sizeof h_till, "%s", th_hash(till));
        snprintf(h_peer, sizeof h_peer, "%s", th_hash(peer));
        cr_assert_str_eq(h_till, h_peer, "iteration %d: till and peer differ after exchange", iter);
        cr_assert_eq(th_int(peer, "SELECT count(*) FROM sales", -1), committed_sales + peer_sales,
                     "iteration %d: the peer lacks sales", iter);
        th_check_log(peer, till_site, "peer's copy of the till's log", 0, NULL, NULL);
        if (iter % 10 == 9 || iter == iterations - 1) {
            char name[32];
            snprintf(name, sizeof name, "fresh%d.db", iter);
            tsync_store *fresh = open_shop(th_path(g_dir, name));
            size_t len;
            uint8_t *all = th_bundle(till, &len);
            cr_assert_eq(tsync_store_merge(fresh, all, len, NULL), 0, "fresh peer: %s", errmsg());
            free(all);
            cr_assert_str_eq(th_hash(fresh), h_till, "iteration %d: a fresh peer differs", iter);
            tsync_store_free(fresh);
        }
        tsync_store_free(till);
        g_till = NULL;
        free(recs);
        g_recs = NULL;
    }
    fprintf(stderr,
            "crash: %d kills; %lld transactions committed (%lld of them in flight at a "
            "kill), %lld sales; kills landed in:",
            iterations, (long long)total_txns, (long long)in_doubt_committed,
            (long long)committed_sales);
    for (int w = 0; w < NWHERE; w++) fprintf(stderr, " %s %d;", WHERE[w], landed[w]);
    fprintf(stderr, "\n");
    crash_fini();
}
