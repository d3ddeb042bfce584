/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_resend.c — anti-entropy does not send a catch-up again to a peer that is
 * only busy (net/node/push.c, tsync__node_anti_entropy): a till whose thread is held in a long
 * step (here its on_change callback, as a long merge on a loaded machine would) sends no ACK
 * meanwhile; the sender keeps waiting instead of sending everything in flight again (which
 * doubled the catch-up's bytes and the receiver's work under load). Both nodes run in this
 * process, the sender with a short anti-entropy period and a small window so that a resend, if
 * any, happens within the test; the catch-up still converges and every batch arrives once.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tillsync/node.h"

TestSuite(node_resend, .fini = nu_fini, .timeout = 120);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int resends;    /* "resending to" lines in the sender's log */
static int64_t merged; /* batches the receiver merged */
static int blocked;    /* the receiver's first on_change held its thread */
static int block_ms;   /* for this long */

static void a_log(void *ctx, int level, const char *msg)
{
    (void)ctx, (void)level;
    if (strstr(msg, "resending to")) {
        pthread_mutex_lock(&mu);
        resends++;
        pthread_mutex_unlock(&mu);
    }
}

static void b_change(void *ctx, const tsync_node_change *c)
{
    (void)ctx;
    pthread_mutex_lock(&mu);
    merged += (int64_t)c->batches;
    int first = !blocked;
    blocked = 1;
    pthread_mutex_unlock(&mu);
    if (first) nu_sleep_ms(block_ms); /* busy: no ACK, no PONG, nothing read meanwhile */
}

/* batches_in of the node's only peer (status JSON, "peers"). */
static int64_t peer_batches_in(tsync_node *nd)
{
    char *js = NULL;
    cr_assert_eq(tsync_node_status_json(&js, nd), 0);
    json_t *j = json_loads(js, 0, NULL);
    free(js);
    cr_assert(j);
    json_t *ps = json_object_get(j, "peers");
    cr_assert_eq(json_array_size(ps), 1, "one peer expected");
    json_t *v = json_object_get(json_array_get(ps, 0), "batches_in");
    cr_assert(json_is_integer(v), "no batches_in");
    int64_t r = (int64_t)json_integer_value(v);
    json_decref(j);
    return r;
}

static char *status_listen(tsync_node *nd)
{
    char *js = NULL;
    cr_assert_eq(tsync_node_status_json(&js, nd), 0);
    json_t *j = json_loads(js, 0, NULL);
    free(js);
    cr_assert(j);
    const char *l = json_string_value(json_object_get(j, "listen"));
    char *r = strdup(l ? l : "");
    json_decref(j);
    return r;
}

Test(node_resend, a_busy_peer_is_not_sent_the_catch_up_again)
{
    const char *dir = nu_tmpdir();
    char a_db[NU_PATH], b_db[NU_PATH];
    snprintf(a_db, sizeof a_db, "%s/a.db", dir);
    snprintf(b_db, sizeof b_db, "%s/b.db", dir);
    nu_make_db(a_db);
    nu_make_db(b_db);
    nu_insert_catalogue(a_db);
    int n = nu_scaled(1500, 400);
    nu_sell_sealed(a_db, n);
    int total = n + 1; /* and the catalogue's batch */
    block_ms = 1500;

    tsync_node_options oa;
    nu_node_options(&oa, "tcp://127.0.0.1:*", NULL);
    oa.log_level = TSYNC_LOG_DEBUG;
    oa.log = a_log;
    oa.anti_entropy_ms = 200;   /* a resend, if any, within the receiver's 1.5 s in its callback */
    oa.window_bytes = 32 << 10; /* many windows: one is in flight while the receiver is busy */
    tsync_node *a = NULL;
    cr_assert_eq(tsync_node_new(&a, a_db, &oa), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(tsync_node_start(a), 0);
    char *listen = NULL;
    for (int i = 0; i < 100 && (!listen || !listen[0]); i++) {
        free(listen);
        nu_sleep_ms(50);
        listen = status_listen(a);
    }
    cr_assert(listen && listen[0], "A does not say where it listens");
    char peer[NU_EP + 80];
    nu_peer_addr(peer, listen, a_db);
    free(listen);

    const char *peers[1] = {peer};
    tsync_node_options ob;
    nu_node_options(&ob, "", peers);
    ob.on_change = b_change;
    tsync_node *b = NULL;
    cr_assert_eq(tsync_node_new(&b, b_db, &ob), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(tsync_node_start(b), 0);
    int64_t t0 = nu_now_ms();
    for (;;) {
        pthread_mutex_lock(&mu);
        int64_t m = merged;
        pthread_mutex_unlock(&mu);
        if (m >= total) break;
        cr_assert_lt(nu_now_ms() - t0, 60000, "B merged %lld of %d batches in 60 s", (long long)m,
                     total);
        nu_sleep_ms(20);
    }
    pthread_mutex_lock(&mu);
    int blk = blocked, rs = resends;
    int64_t m = merged;
    pthread_mutex_unlock(&mu);
    cr_assert(blk, "B's callback never held its thread");
    cr_assert_eq(m, total, "B merged %lld batches, expected %d", (long long)m, total);
    cr_assert_eq(rs, 0, "A sent the catch-up again %d times to a peer that was only busy", rs);
    nu_sleep_ms(300); /* the status is rebuilt within 100 ms of a change */
    int64_t in = peer_batches_in(b);
    cr_assert_eq(in, total, "B received %lld batches for %d (duplicates)", (long long)in, total);
    tsync_node_free(b);
    tsync_node_free(a);
    nu_facts fa = nu_read(a_db), fb = nu_read(b_db);
    cr_assert(fa.ok && fb.ok);
    cr_assert_str_eq(fa.hash, fb.hash, "B differs from A after the catch-up");
}
