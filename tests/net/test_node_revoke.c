/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_revoke.c — a revocation while the device sells and a till has merged past the
 * cutoff, with real nodes (docs/TRUST.md, "Kept batches of a revoked device").
 *
 * D (the device) sells; X syncs with D, then goes offline; H syncs with D while D keeps selling,
 * and sells on top of D's sales. D goes offline and sells on. The admin revokes D with the cutoffs
 * taken from X's database (less than H merged) and installs the revocation on X. X comes back and
 * syncs with H. Then: nothing is held, X and H end with the same content, and D's sales after the
 * revocation (made offline, then offered by D when it comes back) reach neither.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/node_util.h"

TestSuite(node_revoke, .fini = nu_fini, .timeout = 240);

#define WAIT_MS 60000

static int64_t d_sales(const char *db)
{
    return nu_query(db, "SELECT count(*) FROM sales WHERE till = 'd'");
}

static void wait_sales(const char *db, int64_t want, const char *what)
{
    int64_t end = nu_now_ms() + WAIT_MS;
    while (d_sales(db) < want && nu_now_ms() < end) nu_sleep_ms(50);
    cr_assert_geq(d_sales(db), want, "%s: %lld of D's sales, want %lld", what,
                  (long long)d_sales(db), (long long)want);
}

Test(node_revoke, revoked_while_selling_with_a_till_past_the_cutoff)
{
    const char *dir = nu_tmpdir();
    char shop[NU_PATH], dd[NU_PATH], hd[NU_PATH], xd[NU_PATH], revf[NU_PATH];
    snprintf(shop, sizeof shop, "%s/shop.key", dir);
    snprintf(dd, sizeof dd, "%s/d.db", dir);
    snprintf(hd, sizeof hd, "%s/h.db", dir);
    snprintf(xd, sizeof xd, "%s/x.db", dir);
    snprintf(revf, sizeof revf, "%s/d.rev", dir);
    nu_shop_create(shop, "Corner Shop");
    const char *dbs[3] = {dd, hd, xd}, *names[3] = {"till-d", "till-h", "till-x"};
    for (int i = 0; i < 3; i++) {
        nu_make_db(dbs[i]);
        nu_enrol(dbs[i], shop, names[i]);
    }
    nu_insert_catalogue(dd); /* D's first batch: the products every till sells */
    nu_node d, h, x;
    nu_node_init(&d, dir, "d", dd);
    nu_node_init(&h, dir, "h", hd);
    nu_node_init(&x, dir, "x", xd);

    /* X takes D's first sales, then goes offline. */
    nu_node_start(&d);
    nu_node_peer(&x, &d, 1);
    nu_node_start(&x);
    nu_seller s1 = {.till = "d", .first = 0, .n = 30, .pause_us = 2000};
    snprintf(s1.db, sizeof s1.db, "%s", dd);
    nu_seller_wait(nu_seller_start(&s1), 60000, "D's first sales");
    wait_sales(xd, 30, "X");
    nu_node_stop(&x);

    /* H syncs with D while D sells on, and sells on top of D's sales. */
    nu_node_peer(&h, &d, 1);
    nu_node_start(&h);
    nu_seller s2 = {.till = "d", .first = 30, .n = 40, .pause_us = 5000};
    snprintf(s2.db, sizeof s2.db, "%s", dd);
    nu_seller_wait(nu_seller_start(&s2), 60000, "D's second sales");
    wait_sales(hd, 70, "H");
    nu_seller hs = {.till = "h", .first = 0, .n = 20, .pause_us = 2000};
    snprintf(hs.db, sizeof hs.db, "%s", hd);
    nu_seller_wait(nu_seller_start(&hs), 60000, "H's sales");
    /* D sells on and H merges those too, but sells nothing after them: H's own batches do not
     * name them, so H must say it holds them once it learns of the revocation. */
    nu_seller s3 = {.till = "d", .first = 70, .n = 10, .pause_us = 1000};
    snprintf(s3.db, sizeof s3.db, "%s", dd);
    nu_seller_wait(nu_seller_start(&s3), 60000, "D's last sales that H merges");
    wait_sales(hd, 80, "H");
    /* D goes offline and sells on: nobody has these sales when the revocation is made. */
    nu_node_stop(&d);
    nu_seller s4 = {.till = "d", .first = 80, .n = 10, .pause_us = 1000};
    snprintf(s4.db, sizeof s4.db, "%s", dd);
    nu_seller_wait(nu_seller_start(&s4), 60000, "D's offline sales");

    /* The revocation, with the cutoffs of X (which has D's first 30 sales only). */
    char pk[65];
    nu_pubkey(dd, pk);
    char *rev = nu_cli_ok("shop", "revoke", shop, pk, "--cutoffs-from", xd, NULL);
    FILE *fp = fopen(revf, "w");
    cr_assert(fp);
    fputs(rev, fp);
    fclose(fp);
    free(rev);
    free(nu_cli_ok("revoke", xd, revf, NULL));

    /* X comes back and syncs with H; D comes back and offers its offline sales to both. */
    x.npeers = 0;
    nu_node_peer(&x, &h, 1);
    nu_node_start(&x);
    int64_t end = nu_now_ms() + WAIT_MS;
    nu_facts fh, fx;
    for (;;) {
        fh = nu_read(hd);
        fx = nu_read(xd);
        if (fh.ok && fx.ok && fh.held == 0 && fx.held == 0 && strcmp(fh.hash, fx.hash) == 0 &&
            d_sales(xd) == 80)
            break;
        cr_assert(
            nu_now_ms() < end,
            "X and H did not converge within %d ms (D's sales on X: %lld, on H: %lld):\n%s\n%s",
            WAIT_MS, (long long)d_sales(xd), (long long)d_sales(hd), nu_node_describe(&x),
            nu_node_describe(&h));
        nu_sleep_ms(100);
    }
    d.npeers = 0;
    nu_node_peer(&d, &h, 1);
    nu_node_peer(&d, &x, 1);
    nu_node_start(&d);
    nu_sleep_ms(3000);
    fh = nu_read(hd);
    fx = nu_read(xd);
    cr_assert(fh.ok && fx.ok);
    cr_assert_eq(fh.held, 0, "%s", nu_node_describe(&h));
    cr_assert_eq(fx.held, 0, "%s", nu_node_describe(&x));
    cr_assert_str_eq(fh.hash, fx.hash, "X and H differ:\n%s\n%s", nu_node_describe(&x),
                     nu_node_describe(&h));
    cr_assert_eq(d_sales(hd), 80, "H took D's sales made after the revocation");
    cr_assert_eq(d_sales(xd), 80, "X took D's sales made after the revocation");
    cr_assert_eq(nu_query(xd, "SELECT count(*) FROM sales WHERE till = 'h'"), 20);
    nu_node_stop(&d);
    nu_node_stop(&x);
    nu_node_stop(&h);
}
