/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_relay_tick.c — what the relay client (net/node/relay.c) costs the loop of a
 * node whose shop has no relay grant, which is most of them: its tick runs on every round of the
 * loop (every 2 ms while idle, more often under traffic) and must not read the database there.
 * The grant and the data keys are trust records, read again when the node's trust records change
 * (tsync__node_trust_check), not on a timer. Checked with an SQLite statement trace on the node's
 * own connection, for longer than the timer the reads used to run on (2 s); then a grant and a
 * data key arrive (imported by another connection, as `tillsync enrol` does) and the next tick
 * after the trust check reads them and dials the relay (the control: the trace counts reads).
 * The cost of a tick is printed (mean and max, in microseconds).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/node/node_int.h"
#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

TestSuite(node_relay_tick, .fini = nu_fini, .timeout = 60);

static int on_stmt(unsigned type, void *ctx, void *p, void *x)
{
    (void)type, (void)p, (void)x;
    (*(int *)ctx)++;
    return 0;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Ticks the relay client every 2 ms (an idle loop's pace) for ms; returns the statements its
 * connection ran meanwhile, and prints what a tick cost. */
static int tick_for(tsync_node *n, int ms, const int *count, const char *what)
{
    int before = *count;
    int64_t t0 = now_us(), total = 0, worst = 0, ticks = 0;
    while (now_us() - t0 < (int64_t)ms * 1000) {
        int64_t a = now_us();
        tsync__node_relay_tick(n);
        int64_t d = now_us() - a;
        total += d;
        if (d > worst) worst = d;
        ticks++;
        nu_sleep_ms(2);
    }
    fprintf(stderr, "relay tick, %s: %lld ticks, mean %.1f us, max %lld us, %d statements\n", what,
            (long long)ticks, (double)total / (double)ticks, (long long)worst, *count - before);
    return *count - before;
}

static char *relay_state(tsync_node *n)
{
    json_t *o = tsync__node_relay_json(n);
    char *s = NULL;
    cr_assert(asprintf(&s, "%s (%s)", json_string_value(json_object_get(o, "state")),
                       json_string_value(json_object_get(o, "reason"))) > 0);
    json_decref(o);
    return s;
}

Test(node_relay_tick, no_grant_no_reads_on_the_loop)
{
    const char *dir = nu_tmpdir();
    char db[NU_PATH], keyfile[NU_PATH];
    snprintf(db, sizeof db, "%s/t.db", dir);
    snprintf(keyfile, sizeof keyfile, "%s/shop.key", dir);
    nu_make_db(db);
    nu_shop_create(keyfile, "Tick Shop");
    nu_enrol(db, keyfile, "t");
    tsync_node_options o;
    nu_node_options(&o, "", NULL);
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "%s", tsync_error_last()->message);

    /* The first tick reads the grant: there is none. */
    tsync__node_relay_tick(n);
    char *st = relay_state(n);
    cr_assert(strstr(st, "none") && strstr(st, "no relay grant"), "relay: %s", st);
    free(st);

    int count = 0;
    sqlite3_trace_v2(tsync_store_sqlite(n->s), SQLITE_TRACE_STMT, on_stmt, &count);
    int reads = tick_for(n, 2600, &count, "no grant");
    cr_assert_eq(reads, 0, "the relay tick of a node without a grant ran %d statements in 2.6 s",
                 reads);
    /* Trust records unchanged: the anti-entropy period's check changes nothing either. */
    tsync__node_trust_check(n);
    reads = count;
    tsync__node_relay_tick(n);
    cr_assert_eq(count, reads, "a tick after a trust check that found nothing new read again");

    /* The admin signs a data key for this till and a grant; another connection imports them. */
    tsync_shop_key *k;
    cr_assert_eq(tsync_shop_key_load(&k, keyfile), 0, "%s", th_errmsg());
    char khex[65];
    nu_pubkey(db, khex);
    uint8_t dev[1][TSYNC_PUBLIC_KEY_BYTES], dkey[TSYNC_DATA_KEY_BYTES], relay_pk[1][32];
    cr_assert_eq(sodium_hex2bin(dev[0], 32, khex, 64, NULL, NULL, NULL), 0);
    randombytes_buf(dkey, sizeof dkey);
    uint8_t relay_sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(relay_pk[0], relay_sk);
    uint8_t *dk, *gr;
    size_t dkl, grl;
    cr_assert_eq(tsync_shop_key_sign_data_key(&dk, &dkl, k, 1, dkey, (const uint8_t(*)[32])dev, 1),
                 0, "%s", th_errmsg());
    const char *addrs[1] = {"tcp://127.0.0.1:9"};
    uint64_t exp = (uint64_t)time(NULL) * 1000u + 30 * TH_DAY;
    cr_assert_eq(
        tsync_shop_key_sign_grant(&gr, &grl, k, addrs, (const uint8_t(*)[32])relay_pk, 1, 100, exp),
        0, "%s", th_errmsg());
    tsync_store *other = th_open(db);
    const uint8_t *recs[2] = {dk, gr};
    size_t lens[2] = {dkl, grl};
    cr_assert_eq(tsync_trust_enrol(NULL, other, recs, lens, 2), 0, "%s", th_errmsg());
    tsync_store_free(other);
    tsync_free(dk);
    tsync_free(gr);
    tsync_shop_key_free(k);

    /* The loop's next trust check sees them; the tick after it reads them and dials. */
    tsync__node_trust_check(n);
    reads = count;
    tsync__node_relay_tick(n);
    cr_assert_gt(count, reads, "the tick after new trust records read nothing");
    st = relay_state(n);
    cr_assert(strstr(st, "connecting") && strstr(st, "tcp://127.0.0.1:9"),
              "with a grant and a data key the relay is not dialled: %s", st);
    free(st);
    /* With a grant too, a tick reads nothing while the trust records stay as they are. */
    reads = tick_for(n, 300, &count, "with a grant");
    cr_assert_eq(reads, 0, "the relay tick of a node with a grant ran %d statements", reads);
    sqlite3_trace_v2(tsync_store_sqlite(n->s), 0, NULL, NULL);
    tsync_node_free(n);
}
