/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_relay_sync.c — the relay client inside the node (docs/RELAY.md, "The till's
 * side"), with real `tillsync run` nodes and a real `tillsync relay run` on loopback. Tills are
 * enrolled in shops made by the test helpers; the data key and the grant are installed with the
 * trust API. Checked: two tills of a shop that are never online together converge through the
 * relay with exact counters; a third till that joins later gets everything from the relay alone;
 * a till of another shop on the same relay gets nothing; the relay's files hold none of the
 * shop's product names and prices (while the origin id in the clear header is found there, and
 * the same name is in the run once an envelope is opened with the data key); with the relay
 * stopped two tills still sync over the LAN and status shows the relay down with its reason;
 * --no-relay (tsync_node_options.no_relay) leaves the relay alone; a new till's catch-up from the
 * relay is merged in pieces, not in one transaction.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/compact.h"
#include "codec/envelope.h"
#include "codec/relay.h"
#include "codec/wire_ext.h"
#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tests/lib/relay_util.h"

TestSuite(relay_sync, .fini = nu_fini, .timeout = 150);

/* What the relay must never see in clear (a product name and a price). */
static const char NAME[] = "Saffron-Zanzibar-Qx7";
static const char PRICE[] = "price 47.93 EUR";

/* Opens one envelope of origin the relay serves with the shop's data key: the run inside holds
 * needle (so the search of the relay's files below can fail for the right reason). */
static int opened_run_contains(const ru_shop *s, const char *ep, const uint8_t relay_pk[32],
                               const uint8_t origin[16], const char *needle, uint8_t plain[32])
{
    ru_till t;
    uint64_t now = ru_wall_ms();
    ru_till_new(&t, &s->k, "reader", now - TH_DAY, now + TH_DAY);
    const tsync__rmsg *m = ru_hello(&t, ep, relay_pk);
    cr_assert_eq(m->type, TSYNC__R_HAVE);
    int found = 0;
    uint64_t from = 1;
    for (int round = 0; round < 100 && !found; round++) {
        m = ru_get(&t, origin, from, 1 << 20);
        for (uint32_t i = 0; i < m->nenvs && !found; i++) {
            uint8_t *pl;
            size_t plen;
            char err[TSYNC__ERRLEN];
            tsync__env_header h;
            cr_assert_eq(tsync__env_open(m->envs[i].bytes, m->envs[i].len, s->k.shop_id, 1, s->dkey,
                                         &pl, &plen, &h, err),
                         0, "%s", err);
            tsync__wire_cbatches cb;
            tsync__wire_batches b;
            tsync__crun_dec *d = tsync__crun_dec_new();
            /* The payload: the trust frame's length (u32 BE) and frame, then the run. */
            cr_assert_geq(plen, 4 + 64);
            /* Bytes of the payload as it is before sealing (compressed run included): the
             * relay's files must not hold them, whatever the compression did to the name. */
            if (round == 0 && i == 0) memcpy(plain, pl + plen - 48, 32);
            size_t tl = (size_t)pl[0] << 24 | (size_t)pl[1] << 16 | (size_t)pl[2] << 8 | pl[3];
            cr_assert_leq(tl, plen - 4);
            cr_assert_eq(tsync__wire_cbatches_decode(pl + 4 + tl, plen - 4 - tl, &cb, err), 0, "%s",
                         err);
            cr_assert_eq(tsync__wire_cbatches_unpack(&cb, d, &b, err), 0, "%s", err);
            for (uint32_t k = 0; k < b.nbodies && !found; k++)
                found = memmem(b.body[k], b.body_len[k], needle, strlen(needle)) != NULL;
            tsync__crun_dec_free(d);
            free(pl);
            from = m->envs[i].last_seq + 1;
        }
        if (!m->more) break;
    }
    ru_till_free(&t);
    return found;
}

/* Items 1 to 4 of the brief: never online together, a late third till, another shop, blind. */
Test(relay_sync, converge_through_relay_blind)
{
    const char *tmp = nu_tmpdir();
    ru_relay rl;
    ru_relay_up(&rl, tmp, NULL, NULL);
    ru_shop s1, s2;
    nu_node a, b, c, x;
    nu_node *shop1[3] = {&a, &b, &c}, *shop2[1] = {&x};
    ru_shop_tills(&s1, &rl, tmp, 0x31, 0x41, "shop1", 100, shop1, (const char *[]){"a", "b", "c"},
                  3);
    ru_shop_tills(&s2, &rl, tmp, 0x32, 0x42, "shop2", 100, shop2, (const char *[]){"x"}, 1);
    /* The catalogue and a product whose name and price the relay must never see, on A only. */
    nu_insert_catalogue(a.db);
    tsync_store *st = th_open(a.db);
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO products VALUES('zx', '%s %s', 5)", NAME, PRICE);
    th_exec(st, sql);
    tsync_store_free(st);

    /* The other shop's till is online throughout: it must get nothing of shop 1. */
    nu_node_start(&x);
    /* 1. A sells and stops; B (never online with A) gets it from the relay, sells, stops; A
     * starts again and gets B's sales. */
    nu_node_start(&a);
    ru_sell(&a, "a", 0, 20);
    ru_wait_relay_has_all(&a, ru_wall_ms() + 200, 20000);
    nu_node_stop(&a);

    nu_node_start(&b);
    int64_t want[NU_NPROD];
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, 20, k);
    nu_node *only_b[1] = {&b};
    nu_wait_converged(only_b, 1, 20, want, 20000, "B gets A's sales through the relay");
    ru_sell(&b, "b", 0, 15);
    ru_wait_relay_has_all(&b, ru_wall_ms() + 200, 20000);
    nu_node_stop(&b);

    nu_node_start(&a);
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, 20, k) - nu_sold(0, 15, k);
    nu_node *ab[2] = {&a, &b};
    nu_wait_converged(ab, 2, 35, want, 20000, "A gets B's sales through the relay");
    cr_assert_eq(nu_query(a.db, "SELECT count(*) FROM products WHERE id='zx'"), 1);
    nu_node_stop(&a);

    /* 2. A third till joins later and gets everything from the relay alone. */
    nu_node_start(&c);
    nu_node *abc[3] = {&a, &b, &c};
    nu_wait_converged(abc, 3, 35, want, 20000, "C gets everything from the relay");
    cr_assert_eq(nu_query(c.db, "SELECT count(*) FROM products WHERE id='zx'"), 1);
    json_t *cr = ru_wait_relay_state(&c, "up", ru_wall_ms(), 5000);
    cr_assert_geq(ru_int(cr, "batches_received"), 3, "C's batches did not come from the relay");
    cr_assert_eq(nu_node_connected(&c), 0, "C had a LAN peer");
    json_t *ref = json_object_get(cr, "envelopes_refused");
    const char *rk;
    json_t *rv;
    json_object_foreach(ref, rk, rv) cr_assert_eq(json_integer_value(rv), 0, "C refused %s", rk);
    json_decref(cr);
    nu_node_stop(&c);

    /* 3. The other shop's till got nothing, and was served all along. */
    json_t *xr = ru_wait_relay_state(&x, "up", ru_wall_ms(), 5000);
    cr_assert_eq(ru_int(xr, "envelopes_received"), 0);
    cr_assert_eq(ru_int(xr, "till_lacks"), 0);
    json_decref(xr);
    nu_facts fx = nu_read(x.db);
    cr_assert(fx.ok && fx.sales == 0 && fx.products == 0, "shop 2's till got %lld sales",
              (long long)fx.sales);
    nu_node_stop(&x);

    /* 4. Blind: the relay's files (relay.db and its WAL, every byte) hold neither the name nor
     * the price, though the run inside an opened envelope does, and the origin id (clear header)
     * is found there, so the search can find what is there. */
    char site_hex[33];
    uint8_t site[16];
    nu_site(a.db, site_hex);
    cr_assert_eq(sodium_hex2bin(site, 16, site_hex, 32, NULL, NULL, NULL), 0);
    uint8_t plain[32];
    cr_assert(opened_run_contains(&s1, rl.ep, rl.pk, site, NAME, plain),
              "the name is not in A's runs");
    nu_kill(rl.pid, SIGTERM, 10000);
    cr_assert(ru_files_contain(rl.dir, site, sizeof site), "the origin id is not in the files");
    cr_assert(!ru_files_contain(rl.dir, NAME, strlen(NAME)), "the relay stored the name in clear");
    cr_assert(!ru_files_contain(rl.dir, PRICE, strlen(PRICE)),
              "the relay stored the price in clear");
    cr_assert(!ru_files_contain(rl.dir, "47.93", 5), "the relay stored the price in clear");
    cr_assert(!ru_files_contain(rl.dir, plain, sizeof plain),
              "the relay stored a payload in clear");
}

/* A new till's catch-up from the relay is merged in pieces the size of the merge queue, as a LAN
 * catch-up is: one RENV holds thousands of one-sale batches, and taking them all at once made one
 * merge of everything (100,000 batches in one transaction, the node away from its sessions for
 * its whole length). Seen in bench_cloud's catch-up: B's log said "merged 100001 batches" once. */
Test(relay_sync, catchup_merges_in_pieces)
{
    const char *tmp = nu_tmpdir();
    ru_relay rl;
    ru_relay_up(&rl, tmp, NULL, NULL);
    ru_shop s;
    nu_node a, b;
    nu_node *ab[2] = {&a, &b};
    ru_shop_tills(&s, &rl, tmp, 0x34, 0x44, "shop4", 100, ab, (const char *[]){"a", "b"}, 2);
    nu_insert_catalogue(a.db);
    /* 20,000 sales, each sealed as its own batch (the live shape): megabytes of bodies */
    enum { N = 20000 };
    nu_sell_sealed(a.db, N);
    nu_node_start(&a);
    ru_wait_relay_has_all(&a, ru_wall_ms() + 200, 60000);
    nu_node_stop(&a);

    b.verbose = 1;
    nu_node_start(&b);
    int64_t end = nu_now_ms() + 60000;
    while (nu_query(b.db, "SELECT count(*) FROM sales") != N) {
        cr_assert(nu_now_ms() < end, "B did not get A's %d sales from the relay\n%s", N,
                  nu_node_describe(&b));
        nu_sleep_ms(100);
    }
    nu_node_stop(&b);
    /* every merge B logged: none took the whole catch-up */
    FILE *f = fopen(b.log, "r");
    cr_assert_not_null(f);
    char line[1024];
    long merges = 0, most = 0, total = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "merged ");
        long k;
        if (!p || sscanf(p, "merged %ld batches", &k) != 1) continue;
        merges++, total += k;
        if (k > most) most = k;
    }
    fclose(f);
    cr_assert_geq(total, N, "B's log counts %ld batches merged", total);
    cr_assert(merges >= 2 && most < N,
              "B merged the catch-up in %ld merges, the largest of %ld batches (of %d)", merges,
              most, N);
    nu_kill(rl.pid, SIGTERM, 10000);
}

/* Item 5: the relay stops; two tills go on syncing over the LAN; status shows the relay down with
 * its reason (text and JSON); a node with no_relay leaves it alone. */
Test(relay_sync, lan_goes_on_without_relay)
{
    const char *tmp = nu_tmpdir();
    ru_relay rl;
    ru_relay_up(&rl, tmp, NULL, NULL);
    ru_shop s;
    nu_node d, e;
    nu_node *both[2] = {&d, &e};
    ru_shop_tills(&s, &rl, tmp, 0x33, 0x43, "shop3", 100, both, (const char *[]){"d", "e"}, 2);
    nu_insert_catalogue(d.db);
    nu_node_start(&d);
    nu_node_peer(&e, &d, 1);
    nu_node_start(&e);
    json_decref(ru_wait_relay_state(&d, "up", 0, 10000));
    json_decref(ru_wait_relay_state(&e, "up", 0, 10000));

    nu_kill(rl.pid, SIGTERM, 10000);
    uint64_t stopped = ru_wall_ms();
    ru_sell(&d, "d", 0, 10);
    int64_t want[NU_NPROD];
    for (int k = 0; k < NU_NPROD; k++) want[k] = NU_STOCK - nu_sold(0, 10, k);
    nu_wait_converged(both, 2, 10, want, 20000, "LAN sync with the relay stopped");

    json_t *r = ru_wait_relay_state(&d, "down", stopped, 15000);
    const char *why = json_string_value(json_object_get(r, "reason"));
    cr_assert(why && strstr(why, rl.ep), "the reason does not name the relay: %s", why ? why : "");
    cr_assert_str_eq(json_string_value(json_object_get(r, "address")), rl.ep);
    cr_assert(json_is_integer(json_object_get(r, "last_exchange_ms")));
    json_decref(r);
    char *txt = nu_cli_ok("status", d.db, NULL);
    cr_assert(strstr(txt, "relay: down"), "status text: %s", txt);
    free(txt);
    char *js = nu_cli_ok("status", d.db, "--json", NULL);
    json_t *j = json_loads(js, 0, NULL);
    cr_assert_not_null(j, "%s", js);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "relay"), "state")),
                     "down");
    json_decref(j);
    free(js);
    nu_node_stop(&e);
    nu_node_stop(&d);

    /* no_relay: the relay is not used, and status says why. */
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.no_relay = 1;
    o.status_path = "";
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, d.db, &o), 0, "%s", th_errmsg());
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(tsync_node_dispatch(n), 0);
        nu_sleep_ms(10);
    }
    char *sj;
    cr_assert_eq(tsync_node_status_json(&sj, n), 0);
    json_t *sn = json_loads(sj, 0, NULL);
    json_t *nr = json_object_get(sn, "relay");
    cr_assert_str_eq(json_string_value(json_object_get(nr, "state")), "none");
    cr_assert(strstr(json_string_value(json_object_get(nr, "reason")), "disabled"), "%s", sj);
    json_decref(sn);
    tsync_free(sj);
    tsync_node_free(n);
}

/* Seals payload as an envelope of origin o, seqs first..last, with key/epoch/shop as given. */
static tsync__renv forged(const uint8_t shop_id[16], const uint8_t key[32], uint32_t epoch,
                          uint8_t o, uint64_t first, uint64_t last, const void *payload,
                          size_t plen)
{
    tsync__env_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.shop_id, shop_id, 16);
    memset(h.origin, o, 16);
    h.first_seq = first;
    h.last_seq = last;
    if (first > 1) memset(h.prev_hash, 0x5a, 32);
    memset(h.last_hash, 0xa5, 32);
    h.epoch = epoch;
    uint8_t *out;
    size_t len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__env_seal(&h, key, payload, plen, &out, &len, err), 0, "%s", err);
    tsync__renv e = {{0}, first, last, out, len};
    memset(e.origin, o, 16);
    return e;
}

/* What a relay (or a till of the shop writing through it) serves that does not verify is refused
 * and counted by reason: not an envelope, a wrong key, another shop, an epoch this till does not
 * hold, a gap, a payload that is not a run. Nothing reaches the database. */
Test(relay_sync, refuses_what_does_not_verify)
{
    const char *tmp = nu_tmpdir();
    ru_relay rl;
    ru_relay_up(&rl, tmp, NULL, NULL);
    ru_shop s, s2;
    nu_node d;
    nu_node *one[1] = {&d};
    ru_shop_tills(&s, &rl, tmp, 0x34, 0x44, "shop4", 100, one, (const char *[]){"d"}, 1);
    ru_shop_new(&s2, tmp, 0x35, 0x45, "shop5");
    nu_node_start(&d);
    json_decref(ru_wait_relay_state(&d, "up", 0, 10000));

    ru_till t;
    uint64_t now = ru_wall_ms();
    ru_till_new(&t, &s.k, "writer", now - TH_DAY, now + TH_DAY);
    cr_assert_eq(ru_hello(&t, rl.ep, rl.pk)->type, TSYNC__R_HAVE);
    uint8_t junk[200], wrong[32];
    randombytes_buf(junk, sizeof junk);
    randombytes_buf(wrong, sizeof wrong);
    static const uint8_t not_a_run[8] = {0, 0, 0, 0, 0x93, 1, 2, 3};
    tsync__renv envs[6];
    envs[0] = (tsync__renv){{0}, 1, 1, junk, sizeof junk}; /* not an envelope */
    memset(envs[0].origin, 0x01, 16);
    envs[1] = forged(s.k.shop_id, wrong, 1, 0x02, 1, 1, "x", 1);   /* wrong key: tag */
    envs[2] = forged(s2.k.shop_id, s.dkey, 1, 0x03, 1, 1, "x", 1); /* another shop */
    envs[3] = forged(s.k.shop_id, s.dkey, 2, 0x04, 1, 1, "x", 1);  /* epoch not held */
    envs[4] = forged(s.k.shop_id, s.dkey, 1, 0x05, 5, 5, "x", 1);  /* a gap */
    envs[5] = forged(s.k.shop_id, s.dkey, 1, 0x06, 1, 1, not_a_run, sizeof not_a_run);
    for (int i = 0; i < 6; i++) ru_put(&t, &envs[i], 10 + (uint64_t)i);
    static const char *const reasons[] = {"malformed", "tag", "shop", "no_key", "gap"};
    static const long long want[] = {2, 1, 1, 1, 1};
    int64_t end = nu_now_ms() + 15000;
    for (;;) {
        json_t *st = nu_node_status(&d);
        json_t *ref = json_object_get(json_object_get(st, "relay"), "envelopes_refused");
        int ok = ref != NULL;
        for (int i = 0; ok && i < 5; i++)
            ok = json_integer_value(json_object_get(ref, reasons[i])) >= want[i];
        char *dump = ref ? json_dumps(ref, JSON_COMPACT) : NULL;
        json_decref(st);
        if (ok) {
            free(dump);
            break;
        }
        if (nu_now_ms() > end)
            cr_assert_fail("refusals not counted: %s\n%s", dump ? dump : "(none)",
                           nu_node_describe(&d));
        free(dump);
        nu_sleep_ms(100);
    }
    nu_facts f = nu_read(d.db);
    cr_assert(f.ok && f.sales == 0 && f.products == 0 && f.held == 0);
    json_decref(ru_wait_relay_state(&d, "up", ru_wall_ms(), 5000));
    char *txt = nu_cli_ok("status", d.db, NULL);
    cr_assert(strstr(txt, "relay: envelopes refused:") && strstr(txt, "tag 1"), "%s", txt);
    free(txt);
    for (int i = 1; i < 6; i++) free((void *)envs[i].bytes);
    ru_till_free(&t);
    nu_node_stop(&d);
}
