/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_relay_refused.c — what a till shows when its relay refuses it (docs/RELAY.md,
 * "The till's side"): real `tillsync run` tills and a real `tillsync relay run`. A till whose key
 * the shop revoked at the relay, a till of a shop the relay never admitted, a till of a shop
 * whose admission expired, and a till whose shop's grant expired each show `relay: refused` with
 * the reason in `tillsync status` (text and --json) and the attention item relay_refused; a till
 * over its shop's quota shows its uploads refused with the reason and the attention item
 * relay_uploads. The revoked till and the one over quota are LAN peers: their sync goes on.
 * The relay's side of each refusal is tested in tests/net/test_relay.c.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tests/lib/relay_util.h"

TestSuite(relay_refused, .fini = nu_fini, .timeout = 150);

/* Waits until t's relay object satisfies field f containing needle (state "refused" when f is
 * "reason"); returns the status (the caller's). */
static json_t *wait_relay_says(const nu_node *t, const char *f, const char *needle, int ms)
{
    int64_t end = nu_now_ms() + ms;
    for (;;) {
        json_t *st = nu_node_status(t);
        json_t *r = json_object_get(st, "relay");
        const char *v = json_string_value(json_object_get(r, f));
        const char *state = json_string_value(json_object_get(r, "state"));
        if (v && strstr(v, needle) && (strcmp(f, "reason") || !strcmp(state, "refused"))) return st;
        json_decref(st);
        if (nu_now_ms() > end)
            cr_assert_fail("%s: relay.%s never said %s\n%s", t->name, f, needle,
                           nu_node_describe(t));
        nu_sleep_ms(100);
    }
}

/* `tillsync status` of t, text and JSON: the text holds each of lines, the JSON's attention
 * holds item and its relay's field f holds needle. */
static void status_shows(const nu_node *t, const char *line1, const char *line2, const char *item,
                         const char *f, const char *needle)
{
    char *txt = nu_cli_ok("status", t->db, NULL);
    cr_assert(strstr(txt, line1) && strstr(txt, line2), "%s: status text lacks '%s' '%s':\n%s",
              t->name, line1, line2, txt);
    free(txt);
    char *js = nu_cli_ok("status", t->db, "--json", NULL);
    json_t *j = json_loads(js, 0, NULL);
    cr_assert_not_null(j, "%s", js);
    const char *v = json_string_value(json_object_get(json_object_get(j, "relay"), f));
    cr_assert(v && strstr(v, needle), "%s: relay.%s: %s", t->name, f, js);
    int found = 0;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(j, "attention"), i, a) found |=
        !strcmp(json_string_value(a), item);
    cr_assert(found, "%s: no attention item %s: %s", t->name, item, js);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "attention");
    json_decref(j);
    free(js);
}

Test(relay_refused, shown_at_the_till)
{
    const char *tmp = nu_tmpdir();
    ru_relay rl;
    ru_relay_up(&rl, tmp, NULL, NULL);
    /* Shop S (1 MiB quota, filled below): q over quota and r, revoked later; LAN peers. U is not
     * admitted, E's admission expired, G's grant expires 1.5 s from now (a grant is signed to
     * expire after now). */
    ru_shop s, u, e, g;
    nu_node r, q, tu, te, tg;
    nu_node *rq[2] = {&r, &q}, *one[1] = {&tu};
    ru_shop_tills(&s, &rl, tmp, 0x71, 0x81, "s", 1, rq, (const char *[]){"r", "q"}, 2);
    ru_shop_tills(&u, &rl, tmp, 0x72, 0x82, "u", -1, one, (const char *[]){"tu"}, 1);
    one[0] = &te;
    ru_shop_tills(&e, &rl, tmp, 0x73, 0x83, "e", -1, one, (const char *[]){"te"}, 1);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 100 --expires 2021-01-01", nu_cli(),
             rl.dir, e.admin_hex);
    ru_run_out(cmd);
    uint64_t now = ru_wall_ms();
    ru_shop_new(&g, tmp, 0x74, 0x84, "g");
    ru_admit(rl.dir, &g, 100);
    ru_till_node(&tg, tmp, "tg", &g);
    one[0] = &tg;
    /* The expiry is taken now, not before the setup above: its CLI runs (admit, enrol) took
     * more than 1.5 s under ASan on a loaded machine, and the grant, signed at the time of
     * signing, expired before it was issued. */
    uint64_t grant_exp = ru_wall_ms() + 1500;
    ru_install(&g, one, 1, rl.ep, rl.pk, grant_exp);

    /* A writer of S fills the quota: one envelope of 1,048,000 of its 1,048,576 bytes. */
    ru_till w;
    ru_till_new(&w, &s.k, "writer", now - TH_DAY, now + TH_DAY);
    cr_assert_eq(ru_hello(&w, rl.ep, rl.pk)->type, TSYNC__R_HAVE);
    static uint8_t junk[1048000];
    randombytes_buf(junk, sizeof junk);
    tsync__renv big = {{0}, 1, 1, junk, sizeof junk};
    memset(big.origin, 0xee, 16);
    ru_put(&w, &big, 7);

    nu_insert_catalogue(r.db);
    nu_node_start(&r);
    nu_node_peer(&q, &r, 1);
    nu_node_start(&q);
    nu_node_start(&tu);
    nu_node_start(&te);
    while (ru_wall_ms() < grant_exp + 100) nu_sleep_ms(50);
    nu_node_start(&tg);

    /* Quota: q's uploads are refused, with the reason; the session stays up (reading goes on). */
    json_decref(wait_relay_says(&q, "uploads", "quota", 20000));
    status_shows(&q, "relay: up", "relay: uploads refused: quota", "relay_uploads", "uploads",
                 "quota");
    /* Unknown shop, admission expired, grant expired. */
    json_decref(wait_relay_says(&tu, "reason", "unknown_shop", 20000));
    status_shows(&tu, "relay: refused", "unknown_shop", "relay_refused", "reason", "unknown_shop");
    json_decref(wait_relay_says(&te, "reason", "admission", 20000));
    status_shows(&te, "relay: refused", "admission", "relay_refused", "reason", "admission");
    json_decref(wait_relay_says(&tg, "reason", "grant_expired", 20000));
    status_shows(&tg, "relay: refused", "grant expired", "relay_refused", "reason",
                 "grant_expired");

    /* Revoked: the shop's revocation of r reaches the relay (RTRUST); r's session is cut. */
    json_decref(ru_wait_relay_state(&r, "up", 0, 20000));
    uint8_t rk[32];
    cr_assert_eq(sodium_hex2bin(rk, 32, r.key, 64, NULL, NULL, NULL), 0);
    size_t rlen;
    uint8_t *rev = th_rev_make(&s.k, rk, NULL, 0, ru_wall_ms(), &rlen);
    tsync__rblob rb = {rev, rlen};
    tsync__rmsg tr = {.type = TSYNC__R_TRUST, .req = 8, .nrecs = 1, .recs = &rb};
    ru_send(&w, &tr);
    const tsync__rmsg *m = ru_recv(&w);
    cr_assert_eq(m->type, TSYNC__R_ACK, "RTRUST answered by type %u", m->type);
    free(rev);
    json_decref(wait_relay_says(&r, "reason", "revoked", 20000));
    status_shows(&r, "relay: refused", "revoked", "relay_refused", "reason", "revoked");

    /* LAN sync goes on between the revoked till and the one over quota. */
    ru_sell(&q, "q", 0, 10);
    ru_sell(&r, "r", 0, 10);
    int64_t want[NU_NPROD];
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - 2 * nu_sold(0, 10, k);
    nu_wait_converged(rq, 2, 20, want, 20000, "LAN sync with the relay refusing");
    json_decref(wait_relay_says(&r, "reason", "revoked", 5000));
    ru_till_free(&w);
    nu_node_stop(&tg);
    nu_node_stop(&te);
    nu_node_stop(&tu);
    nu_node_stop(&q);
    nu_node_stop(&r);
}
