/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_catchup.c — catch-up over CBATCHES (codec/wire_ext.h): a till that missed
 * thousands of sales, each sealed as its own batch (the live shape), gets them from a node that
 * sends them as compact compressed runs, and ends with the same rows as the author; both nodes
 * say (in their debug log) that the other reads CBATCHES, so the test fails if the nodes fell
 * back to BATCHES. The receiver keeps each run it applied whole in the compact form it came in
 * (tsync_log_runs, store/log_run.c) and serves those batches to a third till byte for byte; a run
 * that only partly applies (another sender gave some of its batches first) is kept as whole
 * bodies.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

#define CONVERGE_MS 60000

TestSuite(node_catchup, .fini = nu_fini, .timeout = 170);

static void make_nodes(nu_node *t, int k, const char *dir)
{
    for (int i = 0; i < k; i++) {
        char db[NU_PATH], name[16];
        snprintf(name, sizeof name, "t%d", i);
        snprintf(db, sizeof db, "%s/%s.db", dir, name);
        nu_make_db(db);
        nu_node_init(&t[i], dir, name, db);
        t[i].verbose = 1;
    }
}

Test(node_catchup, a_till_catches_up_live_batches_over_cbatches)
{
    const char *dir = nu_tmpdir();
    nu_node t[2];
    nu_node *all[2] = {&t[0], &t[1]};
    make_nodes(t, 2, dir);
    nu_insert_catalogue(t[0].db);
    int n = nu_scaled(3000, 500);
    nu_sell_sealed(t[0].db, n);
    nu_node_start(&t[0]);
    nu_node_peer(&t[1], &t[0], 1);
    int64_t t0 = nu_now_ms();
    nu_node_start(&t[1]);
    int64_t want[NU_NPROD];
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, n, k);
    int64_t ms = nu_wait_converged(all, 2, n, want, CONVERGE_MS, "catch-up over CBATCHES");
    fprintf(stderr, "catch-up: %d batches in %lld ms (%lld ms including the node's start)\n", n,
            (long long)ms, (long long)(nu_now_ms() - t0));
    for (int i = 0; i < 2; i++) {
        char *log = nu_tail(t[i].log, 100000);
        cr_assert(strstr(log, "reads CBATCHES"), "%s never heard FEATURES: %s", t[i].name,
                  nu_tail_s(t[i].log, 20));
        cr_assert_null(strstr(log, "batches from"), "%s refused batches: %s", t[i].name,
                       nu_tail_s(t[i].log, 20));
        free(log);
    }
    cr_assert_eq(nu_node_refused(&t[1], "malformed"), 0);
    for (int i = 0; i < 2; i++) nu_node_stop(&t[i]);
    char h0[65], h1[65];
    nu_cli_hash(t[0].db, h0);
    nu_cli_hash(t[1].db, h1);
    cr_assert_str_eq(h0, h1);
}

/* Every batch of db's log as "origin:seq:body:hash" in (origin, seq) order, the bodies as readers
 * get them (tsync_log_body: rebuilt from a run row where the batch is in one). */
static char *log_text(const char *db)
{
    tsync_store *s = th_open(db);
    char *t = th_text(s, "SELECT group_concat(x, ',') FROM (SELECT hex(o.site) || ':' || l.seq || "
                         "':' || hex(tsync_log_body(l.site, l.seq, l.body)) || ':' || hex(l.hash) "
                         "AS x FROM tsync_log l JOIN tsync_sites o ON o.idx = l.site WHERE "
                         "length(l.body) > 0 ORDER BY o.site, l.seq)");
    tsync_store_free(s);
    cr_assert_not_null(t, "%s: no log", db);
    return t;
}

/* Every tsync_log row of db whose body is in a run lies in exactly one run row, and every run row
 * covers only such rows: the shape store/log_run.c reads. */
static void check_runs_cover(const char *db)
{
    cr_assert_eq(nu_query(db, "SELECT count(*) FROM tsync_log l WHERE length(l.body) = 1 AND "
                              "(SELECT count(*) FROM tsync_log_runs r WHERE r.site = l.site AND "
                              "r.first_seq <= l.seq AND l.seq < r.first_seq + r.n) != 1"),
                 0, "%s: a batch marked in a run is in no run or in several", db);
    cr_assert_eq(nu_query(db, "SELECT count(*) FROM tsync_log_runs r JOIN tsync_log l ON l.site = "
                              "r.site AND l.seq >= r.first_seq AND l.seq < r.first_seq + r.n "
                              "WHERE length(l.body) != 1"),
                 0, "%s: a run row covers a batch kept whole", db);
}

static void check_no_refusal(nu_node *t)
{
    char *log = nu_tail(t->log, 100000);
    cr_assert_null(strstr(log, "batches from"), "%s refused batches: %s", t->name,
                   nu_tail_s(t->log, 20));
    cr_assert_null(strstr(log, "some batches refused"), "%s refused batches: %s", t->name,
                   nu_tail_s(t->log, 20));
    free(log);
    cr_assert_eq(nu_node_refused(t, "malformed"), 0);
    cr_assert_eq(nu_node_refused(t, "signature"), 0);
}

/* to (peered with from) catches up the n sales from holds; both stopped after. */
static void catch_up(nu_node *from, nu_node *to, int n, const char *what)
{
    int64_t want[NU_NPROD];
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, n, k);
    nu_node_start(from);
    nu_node_peer(to, from, 1);
    nu_node_start(to);
    nu_node *both[2] = {from, to};
    nu_wait_converged(both, 2, n, want, CONVERGE_MS, what);
    check_no_refusal(to);
    nu_node_stop(from);
    nu_node_stop(to);
}

typedef struct {
    int64_t runs, in_run, whole; /* run rows; log rows in a run, with their body */
} log_shape;

static log_shape shape_of(const nu_node *t)
{
    log_shape l = {nu_query(t->db, "SELECT count(*) FROM tsync_log_runs"),
                   nu_query(t->db, "SELECT count(*) FROM tsync_log WHERE length(body) = 1"),
                   nu_query(t->db, "SELECT count(*) FROM tsync_log WHERE length(body) > 1")};
    fprintf(stderr, "%s: %lld run rows, %lld batches in runs, %lld whole\n", t->name,
            (long long)l.runs, (long long)l.in_run, (long long)l.whole);
    return l;
}

Test(node_catchup, runs_received_are_kept_compact_and_served_byte_for_byte)
{
    const char *dir = nu_tmpdir();
    nu_node t[3];
    make_nodes(t, 3, dir);
    nu_insert_catalogue(t[0].db);
    int n = nu_scaled(3000, 500);
    nu_sell_sealed(t[0].db, n);

    /* t1 catches up from t0: the runs it applies whole go to tsync_log_runs. */
    catch_up(&t[0], &t[1], n, "t1 catches up from t0");
    log_shape l = shape_of(&t[1]);
    cr_assert_gt(l.runs, 0, "the node kept no received run compact");
    /* Nearly all: only stretches shorter than a run (TSYNC__LOGRUN_MIN) may stay whole. */
    cr_assert_gt(l.in_run, n * 9 / 10, "only %lld of %d batches kept in runs", (long long)l.in_run,
                 n);
    check_runs_cover(t[1].db);

    /* t2 catches up from t1 alone: t1 serves the batches of its runs, rebuilt; t2's merge checks
     * every chain and signature over them, and its log reads as the author's. */
    catch_up(&t[1], &t[2], n, "t2 catches up from t1");
    cr_assert_gt(shape_of(&t[2]).runs, 0);
    check_runs_cover(t[2].db);
    char *l0 = log_text(t[0].db), *l1 = log_text(t[1].db), *l2 = log_text(t[2].db);
    cr_assert(strcmp(l0, l1) == 0, "t1's log differs from the author's");
    cr_assert(strcmp(l0, l2) == 0, "t2's log differs from the author's");
    free(l0);
    free(l1);
    free(l2);
    char h0[65], h2[65];
    nu_cli_hash(t[0].db, h0);
    nu_cli_hash(t[2].db, h2);
    cr_assert_str_eq(h0, h2);
}

Test(node_catchup, a_run_partly_held_already_is_kept_whole)
{
    const char *dir = nu_tmpdir();
    nu_node t[2];
    make_nodes(t, 2, dir);
    nu_insert_catalogue(t[0].db);
    int n = nu_scaled(3000, 500), m = n / 2 + 5;
    nu_sell_sealed(t[0].db, m);
    TH_AUTO_FREE char *state = NULL;
    tsync_store *s0 = th_open(t[0].db);
    cr_assert_eq(tsync_store_state_json(&state, s0), 0, "%s", th_errmsg());
    tsync_store_free(s0);
    nu_sell_sealed_from(t[0].db, m, n);

    /* t1 holds the last n - m sales already (tsync_held: it lacks the ones before) ... */
    s0 = th_open(t[0].db);
    uint8_t *b = NULL;
    size_t len = 0, nb = 0;
    cr_assert_eq(tsync_store_bundle(&b, &len, s0, state, &nb), 0, "%s", th_errmsg());
    tsync_store_free(s0);
    tsync_store *s1 = th_open(t[1].db);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(s1, b, len, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.held, (size_t)(n - m), "held %zu", r.held);
    tsync_merge_report_clear(&r);
    free(b);
    tsync_store_free(s1);

    /* ... and t0 sends it all as one run: only its first part applies from the run. */
    catch_up(&t[0], &t[1], n, "t1 catches up from t0");
    int64_t whole = shape_of(&t[1]).whole;
    cr_assert_eq(nu_query(t[1].db, "SELECT count(*) FROM tsync_held"), 0);
    cr_assert_geq(whole, n - m, "the batches that were held are kept whole");
    char q[160];
    snprintf(q, sizeof q, "SELECT count(*) FROM tsync_log WHERE length(body) = 1 AND seq > %d",
             m + 1); /* seq 1 is the catalogue */
    cr_assert_eq(nu_query(t[1].db, q), 0, "a batch held before is in a run");
    check_runs_cover(t[1].db);
    char *l0 = log_text(t[0].db), *l1 = log_text(t[1].db);
    cr_assert(strcmp(l0, l1) == 0, "t1's log differs from the author's");
    free(l0);
    free(l1);
    char h0[65], h1[65];
    nu_cli_hash(t[0].db, h0);
    nu_cli_hash(t[1].db, h1);
    cr_assert_str_eq(h0, h1);
}
