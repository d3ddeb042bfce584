/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_relay.c — forwarding through a hub (net/node/push.c, "forwarding"): in a
 * star, the hub's leaves get the origin's batches only through the hub, so after a couple of
 * sales the hub forwards to them at once instead of FORWARD_DELAY_MS after each merge (a hop of
 * the commit-to-visible path); it says so in its debug log, which is what this test checks, and
 * the star still converges to the exact totals. The origin, which already holds what it sent,
 * is never forwarded to at once.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

#define CONVERGE_MS 60000

TestSuite(node_relay, .fini = nu_fini, .timeout = 170);

/* How often needle occurs in hay. */
static int count(const char *hay, const char *needle)
{
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) k++;
    return k;
}

Test(node_relay, a_hub_forwards_to_its_leaves_at_once)
{
    const char *dir = nu_tmpdir();
    nu_node t[3]; /* t0 sells, t1 is the hub, t2 a leaf: t0 - t1 - t2 */
    nu_node *all[3] = {&t[0], &t[1], &t[2]};
    for (int i = 0; i < 3; i++) {
        char db[NU_PATH], name[8];
        snprintf(name, sizeof name, "t%d", i);
        snprintf(db, sizeof db, "%s/%s.db", dir, name);
        nu_make_db(db);
        nu_node_init(&t[i], dir, name, db);
        t[i].verbose = 1;
    }
    nu_insert_catalogue(t[0].db);
    /* The hub dials the leaf (so its log names the leaf by key), the seller dials the hub. */
    nu_node_start(&t[2]);
    nu_node_peer(&t[1], &t[2], 1);
    nu_node_start(&t[1]);
    nu_node_peer(&t[0], &t[1], 1);
    nu_node_start(&t[0]);
    int want_up[3] = {1, 2, 1};
    nu_wait_connected(all, 3, want_up, 30000, "star of three");

    /* Sales one by one, far enough apart that each is merged and forwarded on its own. */
    nu_seller s;
    memset(&s, 0, sizeof s);
    snprintf(s.db, sizeof s.db, "%s", t[0].db);
    snprintf(s.till, sizeof s.till, "%s", t[0].name);
    s.n = 40;
    s.pause_us = 20000;
    pid_t pid = nu_seller_start(&s);
    nu_seller_wait(pid, 120000, "t0's sales");
    int64_t want[NU_NPROD];
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, s.n, k);
    nu_wait_converged(all, 3, s.n, want, CONVERGE_MS, "star of three");

    char *log = nu_tail(t[1].log, 100000);
    /* Once for the leaf: a later delayed probe that finds it still needs us says nothing. */
    cr_assert_eq(count(log, "at once: it gets the batches we merge only through us"), 1,
                 "the hub should forward to its leaf at once (and to nobody else): %s",
                 nu_tail_s(t[1].log, 30));
    char leaf[64];
    snprintf(leaf, sizeof leaf, "forwarding to %.16s", t[2].key); /* the label: its key's start */
    cr_assert(strstr(log, leaf), "the hub forwards at once to someone else than t2: %s",
              nu_tail_s(t[1].log, 30));
    cr_assert_null(strstr(log, "after a delay again"), "the leaf never gets batches elsewhere: %s",
                   nu_tail_s(t[1].log, 30));
    free(log);
    for (int i = 0; i < 3; i++) nu_node_stop(&t[i]);
    char h0[65], h[65];
    nu_cli_hash(t[0].db, h0);
    for (int i = 1; i < 3; i++) {
        nu_cli_hash(t[i].db, h);
        cr_assert_str_eq(h0, h, "t%d differs from t0", i);
    }
}
