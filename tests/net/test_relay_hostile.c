/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_relay_hostile.c — a hostile relay (docs/RELAY.md, "A hostile relay"): real
 * `tillsync run` tills of one shop whose grant names tests/net/hostile_relay, the real relay
 * server with a tamper hook on what it serves, in one mode per test:
 *   flip     a byte of each envelope flipped the first time it is served   -> refused "tag"
 *   drop     envelopes left out of the middle of a range the first time    -> refused "gap"
 *   reorder  every answer served in reverse order                          -> refused "gap"
 *   replay   the origin's first envelope added to answers as if new        -> refused "replay"
 *   foreign  an envelope of another shop on the same relay added           -> refused "shop"
 * First through the relay alone: A sells and stops, B (never online with A) gets A's sales from
 * the hostile relay: every refusal is counted by reason, nothing is lost (B ends with exactly A's
 * sales and the relay's known top: what the relay left out was asked for again, not skipped) and
 * nothing foreign lands. Then over the LAN: A and B are static peers, both sell at once, and
 * converge with exact counters while the relay goes on tampering with its pushes.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tests/lib/relay_util.h"

TestSuite(relay_hostile, .fini = nu_fini, .timeout = 180);

/* "hostile: " lines the double wrote in its log (what it tampered with). */
static int tampered(const char *tmp)
{
    char path[NU_PATH], line[512];
    snprintf(path, sizeof path, "%s/relay.log", tmp);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) n += strncmp(line, "hostile: ", 9) == 0;
    if (f) fclose(f);
    return n;
}

/* Waits until t counts at least one envelope refused for reason. */
static void wait_refused(const nu_node *t, const char *reason, int ms)
{
    int64_t end = nu_now_ms() + ms;
    while (ru_env_refused(t, reason) < 1) {
        if (nu_now_ms() > end)
            cr_assert_fail("%s counted no envelope refused as %s\n%s", t->name, reason,
                           nu_node_describe(t));
        nu_sleep_ms(100);
    }
}

/* Waits until t lacks nothing the relay is known to hold (nothing it left out was skipped). */
static void wait_lacks_nothing(const nu_node *t, int ms)
{
    int64_t end = nu_now_ms() + ms;
    for (;;) {
        json_t *st = nu_node_status(t);
        json_t *r = json_object_get(st, "relay");
        int ok = json_is_integer(json_object_get(r, "till_lacks")) && ru_int(r, "till_lacks") == 0;
        json_decref(st);
        if (ok) return;
        if (nu_now_ms() > end)
            cr_assert_fail("%s still lacks what the relay holds\n%s", t->name, nu_node_describe(t));
        nu_sleep_ms(100);
    }
}

static void facts_clean(const nu_node *t)
{
    nu_facts f = nu_read(t->db);
    cr_assert(f.ok && f.held == 0 && f.parked == 0 && f.forks == 0,
              "%s: held %lld parked %lld forks %lld", t->name, (long long)f.held,
              (long long)f.parked, (long long)f.forks);
}

static void hostile(const char *mode, const char *reason)
{
    const char *tmp = nu_tmpdir();
    ru_relay rl;
    ru_relay_up(&rl, tmp, TSYNC_HOSTILE_RELAY, mode);
    ru_shop s;
    nu_node a, b;
    nu_node *ab[2] = {&a, &b}, *only_b[1] = {&b};
    ru_shop_tills(&s, &rl, tmp, 0x51, 0x61, "shop", 100, ab, (const char *[]){"a", "b"}, 2);
    nu_insert_catalogue(a.db);

    /* Foreign: another shop's till puts its sales on the same relay first, and stays on. */
    int foreign = !strcmp(mode, "foreign");
    ru_shop s2;
    nu_node x;
    if (foreign) {
        nu_node *xs[1] = {&x};
        ru_shop_tills(&s2, &rl, tmp, 0x52, 0x62, "other", 100, xs, (const char *[]){"x"}, 1);
        nu_insert_catalogue(x.db);
        nu_node_start(&x);
        ru_sell(&x, "x", 0, 10);
        ru_wait_relay_has_all(&x, ru_wall_ms() + 200, 20000);
    }

    /* 1. Through the relay alone. */
    nu_node_start(&a);
    ru_sell(&a, "a", 0, 20);
    ru_wait_relay_has_all(&a, ru_wall_ms() + 200, 20000);
    nu_node_stop(&a);
    nu_node_peer(&b, &a, 1);
    nu_node_start(&b);
    int64_t want[NU_NPROD];
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, 20, k);
    int64_t took =
        nu_wait_converged(only_b, 1, 20, want, 40000, "B gets A's sales from the hostile relay");
    /* What the relay left out of an answer is asked for again at once, not at the next probe of
     * every origin (10 s after the session began): B holds it all well before. */
    if (!strcmp(mode, "drop") || !strcmp(mode, "reorder"))
        cr_assert_lt(took, 8000, "B took %lld ms: the gap waited for the 10 s probe\n%s",
                     (long long)took, nu_node_describe(&b));
    wait_refused(&b, reason, 30000);
    wait_lacks_nothing(&b, 20000);
    cr_assert_eq(nu_node_connected(&b), 0, "B had a LAN peer: the sales may not be the relay's");
    json_t *br = ru_wait_relay_state(&b, "up", 0, 5000);
    cr_assert_geq(ru_int(br, "batches_received"), 1, "B's batches did not come from the relay");
    json_decref(br);
    facts_clean(&b);

    /* 2. Over the LAN, the relay still tampering with what it pushes. */
    nu_node_start(&a);
    nu_seller sa = {.first = 20, .n = 15, .pause_us = 2000};
    nu_seller sb = {.first = 0, .n = 15, .pause_us = 2000};
    snprintf(sa.db, sizeof sa.db, "%s", a.db);
    snprintf(sa.till, sizeof sa.till, "a");
    snprintf(sb.db, sizeof sb.db, "%s", b.db);
    snprintf(sb.till, sizeof sb.till, "b");
    pid_t pa = nu_seller_start(&sa), pb = nu_seller_start(&sb);
    nu_seller_wait(pa, 60000, "a");
    nu_seller_wait(pb, 60000, "b");
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, 35, k) - nu_sold(0, 15, k);
    nu_wait_converged(ab, 2, 50, want, 30000, "A and B converge over the LAN");
    int one[2] = {1, 1};
    nu_wait_connected(ab, 2, one, 10000, "A and B are LAN peers");
    facts_clean(&a);
    facts_clean(&b);
    cr_assert_geq(ru_env_refused(&b, reason), 1);
    cr_assert_eq(ru_env_refused(&a, "signature"), 0);
    cr_assert_eq(ru_env_refused(&b, "signature"), 0);
    cr_assert_geq(tampered(tmp), 1, "the hostile relay tampered with nothing");
    char *txt = nu_cli_ok("status", b.db, NULL);
    cr_assert(strstr(txt, "relay: envelopes refused:") && strstr(txt, reason), "%s", txt);
    free(txt);
    if (foreign) {
        /* Nothing of either shop in the other's database. */
        cr_assert_eq(nu_query(a.db, "SELECT count(*) FROM sales WHERE till = 'x'"), 0);
        cr_assert_eq(nu_query(b.db, "SELECT count(*) FROM sales WHERE till = 'x'"), 0);
        wait_refused(&x, "shop", 20000);
        nu_facts fx = nu_read(x.db);
        cr_assert(fx.ok && fx.sales == 10, "shop 2's till has %lld sales", (long long)fx.sales);
        cr_assert_eq(nu_query(x.db, "SELECT count(*) FROM sales WHERE till <> 'x'"), 0);
        nu_node_stop(&x);
    }
    nu_node_stop(&a);
    nu_node_stop(&b);
}

Test(relay_hostile, flip)
{
    hostile("flip", "tag");
}

Test(relay_hostile, drop)
{
    hostile("drop", "gap");
}

Test(relay_hostile, reorder)
{
    hostile("reorder", "gap");
}

Test(relay_hostile, replay)
{
    hostile("replay", "replay");
}

Test(relay_hostile, foreign)
{
    hostile("foreign", "shop");
}
