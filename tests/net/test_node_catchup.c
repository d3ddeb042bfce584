/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_catchup.c — catch-up over CBATCHES (codec/wire_ext.h): a till that missed
 * thousands of sales, each sealed as its own batch (the live shape), gets them from a node that
 * sends them as compact compressed runs, and ends with the same rows as the author; both nodes
 * say (in their debug log) that the other reads CBATCHES, so the test fails if the nodes fell
 * back to BATCHES.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

#define CONVERGE_MS 60000

TestSuite(node_catchup, .fini = nu_fini, .timeout = 170);

Test(node_catchup, a_till_catches_up_live_batches_over_cbatches)
{
    const char *dir = nu_tmpdir();
    nu_node t[2];
    nu_node *all[2] = {&t[0], &t[1]};
    for (int i = 0; i < 2; i++) {
        char db[NU_PATH], name[8];
        snprintf(name, sizeof name, "t%d", i);
        snprintf(db, sizeof db, "%s/%s.db", dir, name);
        nu_make_db(db);
        nu_node_init(&t[i], dir, name, db);
        t[i].verbose = 1;
    }
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
