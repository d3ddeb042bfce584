/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_threads.c — the threading contract of include/tillsync/node.h, enforced:
 * inside one of the node's callbacks, tsync_node_free, tsync_node_run, tsync_node_dispatch and
 * tsync_node_start are refused with TSYNC_EINVAL (instead of freeing or re-entering the loop that
 * runs the callback), the calls allowed there work, and tsync_node_stop there only asks the loop
 * to end (no thread waits for itself). For each way to drive a node: its own thread,
 * tsync_node_run and tsync_node_dispatch on the app's thread.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tillsync/node.h"

TestSuite(node_threads, .fini = th_cleanup, .timeout = 60);

/* What the callback did; the test thread asserts on it (criterion asserts belong there). */
typedef struct {
    tsync_node *n;
    pthread_mutex_t mu;
    int calls;
    int free_code; /* tsync_error_last()->code after tsync_node_free inside */
    char free_msg[256];
    int run_rc, dispatch_rc, start_rc, status_rc, last_rc;
    tsync_node_error last; /* tsync_node_last_error inside the callback */
    int stopped;           /* tsync_node_stop returned inside */
} probe;

static void on_state(void *ctx, const tsync_peer_event *e)
{
    (void)e;
    probe *p = ctx;
    pthread_mutex_lock(&p->mu);
    int first = p->calls++ == 0;
    pthread_mutex_unlock(&p->mu);
    if (!first) return;
    tsync_error_clear();
    tsync_node_free(p->n); /* refused: the node runs this callback */
    const tsync_error *er = tsync_error_last();
    p->free_code = er ? er->code : 0;
    snprintf(p->free_msg, sizeof p->free_msg, "%s", er && er->message ? er->message : "");
    p->run_rc = tsync_node_run(p->n, NULL);
    p->dispatch_rc = tsync_node_dispatch(p->n);
    p->start_rc = tsync_node_start(p->n);
    char *js = NULL;
    p->status_rc = tsync_node_status_json(&js, p->n);
    free(js);
    p->last.version = TSYNC_NODE_ERROR_VERSION;
    p->last_rc = tsync_node_last_error(&p->last, p->n);
    tsync_node_stop(p->n); /* only asks: returns at once */
    pthread_mutex_lock(&p->mu);
    p->stopped = 1;
    pthread_mutex_unlock(&p->mu);
}

/* A node with one static peer nobody answers: its row becomes "connecting" at once, an event on
 * the node's thread. */
static tsync_node *node_for(probe *p, char *dir)
{
    const char *db = th_path(dir, "a.db");
    tsync_store_free(th_open_products(db));
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    cr_assert_eq(sodium_init() >= 0, 1);
    crypto_sign_keypair(pk, sk);
    char peer[200] = "tcp://127.0.0.1:9#";
    sodium_bin2hex(peer + strlen(peer), 65, pk, sizeof pk);
    const char *peers[1] = {peer};
    tsync_node_options o;
    nu_node_options(&o, "", peers);
    o.on_peer_state = on_state;
    o.cb_ctx = p;
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "%s", tsync_error_last()->message);
    p->n = n;
    return n;
}

static void check(const probe *p)
{
    cr_assert_geq(p->calls, 1, "no callback ran");
    cr_assert_eq(p->stopped, 1, "tsync_node_stop inside a callback did not return");
    cr_assert_eq(p->free_code, TSYNC_EINVAL, "tsync_node_free inside a callback: code %d",
                 p->free_code);
    cr_assert(strstr(p->free_msg, "tsync_node_free called inside a callback"), "message: %s",
              p->free_msg);
    cr_assert_eq(p->run_rc, TSYNC_EINVAL, "tsync_node_run inside a callback: %d", p->run_rc);
    cr_assert_eq(p->dispatch_rc, TSYNC_EINVAL, "tsync_node_dispatch inside a callback: %d",
                 p->dispatch_rc);
    cr_assert_eq(p->start_rc, TSYNC_EINVAL, "tsync_node_start inside a callback: %d", p->start_rc);
    cr_assert_eq(p->status_rc, 0, "tsync_node_status_json inside a callback: %d", p->status_rc);
    cr_assert_eq(p->last_rc, 0);
    cr_assert_eq(p->last.code, TSYNC_EINVAL, "the refused free is the node's last error");
    cr_assert(strstr(p->last.message, "tsync_node_free"), "%s", p->last.message);
}

static int wait_stopped(probe *p, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        pthread_mutex_lock(&p->mu);
        int s = p->stopped;
        pthread_mutex_unlock(&p->mu);
        if (s) return 1;
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

Test(node_threads, own_thread)
{
    char *dir = th_tmpdir_auto();
    probe p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tsync_node *n = node_for(&p, dir);
    cr_assert_eq(tsync_node_start(n), 0);
    cr_assert(wait_stopped(&p, 5000), "the callback never ran (or hung)");
    tsync_node_free(n); /* from the app's thread: joins the node's, which the stop ended */
    check(&p);
    free(dir);
}

Test(node_threads, run_on_the_app_thread)
{
    char *dir = th_tmpdir_auto();
    probe p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tsync_node *n = node_for(&p, dir);
    /* Returns once the callback's tsync_node_stop ended the loop. */
    cr_assert_eq(tsync_node_run(n, NULL), 0);
    check(&p);
    tsync_node_free(n);
    free(dir);
}

Test(node_threads, dispatch_on_the_app_thread)
{
    char *dir = th_tmpdir_auto();
    probe p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tsync_node *n = node_for(&p, dir);
    for (int i = 0; i < 500 && !p.stopped; i++) {
        cr_assert_eq(tsync_node_dispatch(n), 0);
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    check(&p);
    tsync_node_free(n);
    free(dir);
}

/* A signal handler's flag, as node.h says: tsync_node_run watches a volatile sig_atomic_t. */
static volatile sig_atomic_t g_flag;

static void *raise_flag(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 200000000L};
    nanosleep(&ts, NULL);
    g_flag = 1;
    return NULL;
}

Test(node_threads, run_stops_on_a_sig_atomic_flag)
{
    char *dir = th_tmpdir_auto();
    const char *db = th_path(dir, "a.db");
    tsync_store_free(th_open_products(db));
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    o.log_level = TSYNC_LOG_WARN;
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "%s", tsync_error_last()->message);
    pthread_t t;
    pthread_create(&t, NULL, raise_flag, NULL);
    cr_assert_eq(tsync_node_run(n, &g_flag), 0);
    pthread_join(t, NULL);
    tsync_node_free(n);
    free(dir);
}
