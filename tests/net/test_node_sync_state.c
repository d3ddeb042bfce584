/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_sync_state.c — the one-word sync state of a node (tsync_node_sync_state,
 * tsync_node_on_sync_state, "sync" in the status JSON; docs/NODE.md, "Sync state") with real
 * nodes on loopback: alone, synced with a peer, syncing while a peer does not acknowledge,
 * offline when it stops, attention on parked changes, and no flicker while nothing changes.
 * Also on_change's tables (tsync_node_change.tables): exactly the tables a merge changed.
 * Node A runs on its own thread; node B is driven from the test thread with
 * tsync_node_dispatch, so the test can freeze it (a peer that stops answering for a while).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/node/node_int.h"
#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tillsync/node.h"

TestSuite(node_sync_state, .fini = nu_fini, .timeout = 120);

#define MAXCH 64

/* The changes on_sync_state reported. */
typedef struct {
    pthread_mutex_t mu;
    int n;
    int state[MAXCH];
    char reason[MAXCH][TSYNC_SYNC_REASON_LEN];
} changes;

static void on_sync(void *ctx, const tsync_sync_state *s)
{
    changes *c = ctx;
    pthread_mutex_lock(&c->mu);
    if (c->n < MAXCH) {
        c->state[c->n] = s->state;
        snprintf(c->reason[c->n], sizeof c->reason[0], "%s", s->reason);
    }
    c->n++;
    pthread_mutex_unlock(&c->mu);
}

static int ch_count(changes *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static tsync_node *node_new(const char *db, const char *peer, int liveness_ms,
                            tsync_change_fn on_change, void *ctx)
{
    const char *peers[1] = {peer};
    tsync_node_options o;
    nu_node_options(&o, "tcp://127.0.0.1:*", peer ? peers : NULL);
    o.liveness_ms = liveness_ms;
    o.on_change = on_change;
    o.cb_ctx = ctx;
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "node for %s: %s", db, th_errmsg());
    return n;
}

static tsync_sync_state state_of(tsync_node *n)
{
    tsync_sync_state s = TSYNC_SYNC_STATE_INIT;
    cr_assert_eq(tsync_node_sync_state(&s, n), 0, "%s", th_errmsg());
    return s;
}

/* Waits up to ms for watch's state to be want, dispatching pumped (may be NULL) meanwhile;
 * returns the ms it took, or fails with the state it saw. */
static int64_t wait_sync(tsync_node *watch, int want, tsync_node *pumped, int ms, const char *what)
{
    int64_t t0 = nu_now_ms();
    tsync_sync_state s;
    for (;;) {
        if (pumped) cr_assert_eq(tsync_node_dispatch(pumped), 0, "%s", th_errmsg());
        s = state_of(watch);
        if (s.state == want) return nu_now_ms() - t0;
        if (nu_now_ms() - t0 > ms) break;
        nu_sleep_ms(2);
    }
    cr_assert_fail("%s: state %s (%s) after %d ms, want %s", what, tsync_sync_state_name(s.state),
                   s.reason, ms, tsync_sync_state_name(want));
    return -1;
}

static void pump(tsync_node *n, int ms)
{
    int64_t end = nu_now_ms() + ms;
    do {
        cr_assert_eq(tsync_node_dispatch(n), 0, "%s", th_errmsg());
        nu_sleep_ms(2);
    } while (nu_now_ms() < end);
}

/* The status JSON's "sync" object once its state is want (the status is rebuilt about once a
 * second: waits up to 3 s), or fails. */
static json_t *status_sync(tsync_node *n, const char *want)
{
    const char *got = "";
    for (int64_t end = nu_now_ms() + 3000;;) {
        char *js = NULL;
        cr_assert_eq(tsync_node_status_json(&js, n), 0);
        json_error_t je;
        json_t *o = json_loads(js, 0, &je);
        cr_assert(o, "status is not JSON: %s", js);
        free(js);
        json_t *s = json_incref(json_object_get(o, "sync"));
        json_decref(o);
        cr_assert(json_is_object(s), "no sync object in the status");
        got = json_string_value(json_object_get(s, "state"));
        cr_assert(got, "no sync.state in the status");
        if (!strcmp(got, want)) return s;
        json_decref(s);
        cr_assert(nu_now_ms() < end, "the status shows sync %s, want %s", got, want);
        nu_sleep_ms(20);
    }
}

/* Alone, then synced with B, no flicker for 5 s of idleness, syncing while B does not answer
 * (only once that lasted 500 ms), synced again, offline when B stops; the callback reports each
 * change once. */
Test(node_sync_state, alone_synced_syncing_offline)
{
    const char *dir = nu_tmpdir();
    char a[NU_PATH], b[NU_PATH], peer[NU_EP + 80];
    snprintf(a, sizeof a, "%s/a.db", dir);
    snprintf(b, sizeof b, "%s/b.db", dir);
    nu_make_db(a);
    nu_make_db(b);

    /* A's liveness is long: B frozen for 2 s below is a peer that stops acknowledging, not
     * a lost one. */
    tsync_node *na = node_new(a, NULL, 30000, NULL, NULL);
    tsync_sync_state s = state_of(na);
    cr_assert_eq(s.state, TSYNC_SYNC_ALONE, "a new node with no peer is %s (%s)",
                 tsync_sync_state_name(s.state), s.reason);
    cr_assert_eq(s.last_synced_at_ms, 0);
    cr_assert_str_eq(tsync_sync_state_name(s.state), "alone");
    changes ca = {.mu = PTHREAD_MUTEX_INITIALIZER};
    cr_assert_eq(tsync_node_on_sync_state(na, on_sync, &ca), 0);
    cr_assert_eq(tsync_node_start(na), 0);

    nu_peer_addr(peer, tsync_node_endpoint(na), a);
    tsync_node *nb = node_new(b, peer, 3500, NULL, NULL);
    wait_sync(na, TSYNC_SYNC_SYNCED, nb, 10000, "a with b connected");
    wait_sync(nb, TSYNC_SYNC_SYNCED, nb, 5000, "b with a connected");
    s = state_of(na);
    cr_assert_gt(s.last_synced_at_ms, 0, "synced without a last_synced_at");
    json_t *sj = status_sync(na, "synced");
    cr_assert(json_is_integer(json_object_get(sj, "last_synced_at_ms")));
    json_decref(sj);

    /* 5 s of idleness: sampled every 10 ms, always synced, no callback. */
    pump(nb, 1500); /* status republished, anti-entropy round done */
    int before = ch_count(&ca);
    uint64_t since = state_of(na).since_ms;
    for (int64_t end = nu_now_ms() + 5000; nu_now_ms() < end;) {
        cr_assert_eq(tsync_node_dispatch(nb), 0);
        tsync_sync_state x = state_of(na), y = state_of(nb);
        cr_assert_eq(x.state, TSYNC_SYNC_SYNCED, "idle a flickered to %s (%s)",
                     tsync_sync_state_name(x.state), x.reason);
        cr_assert_eq(y.state, TSYNC_SYNC_SYNCED, "idle b flickered to %s (%s)",
                     tsync_sync_state_name(y.state), y.reason);
        cr_assert_eq(x.since_ms, since, "since_ms moved while synced");
        nu_sleep_ms(10);
    }
    cr_assert_eq(ch_count(&ca), before, "%d sync state callbacks while idle",
                 ch_count(&ca) - before);

    /* A sells while B does not answer (not dispatched): syncing, but not before 500 ms. */
    tsync_store *sa = th_open(a);
    th_exec(sa, "INSERT INTO sales VALUES('a-1', 'a', 'p0', 1)");
    int64_t t0 = nu_now_ms();
    int64_t took = wait_sync(na, TSYNC_SYNC_SYNCING, NULL, 3000, "a with b not acknowledging");
    cr_assert_geq(took, 450, "syncing %lld ms after the sale: before the 500 ms hysteresis",
                  (long long)took);
    (void)t0;
    s = state_of(na);
    cr_assert(strstr(s.reason, "in flight"), "syncing for: %s", s.reason);
    wait_sync(na, TSYNC_SYNC_SYNCED, nb, 10000, "a once b answers again");
    cr_assert_eq(nu_query(b, "SELECT count(*) FROM sales WHERE id = 'a-1'"), 1);
    tsync_store_free(sa);

    /* B stops: offline, with a reason. */
    tsync_node_free(nb);
    wait_sync(na, TSYNC_SYNC_OFFLINE, NULL, 5000, "a once b stopped");
    s = state_of(na);
    cr_assert(strstr(s.reason, "reachable"), "offline for: %s", s.reason);
    cr_assert_gt(s.last_synced_at_ms, 0);
    tsync_node_free(na);

    /* Every callback a change, and the path the test took: ... synced, syncing, synced, offline
     * at the end. */
    cr_assert_geq(ca.n, 4);
    cr_assert_leq(ca.n, MAXCH);
    for (int i = 1; i < ca.n; i++)
        cr_assert(ca.state[i] != ca.state[i - 1] || strcmp(ca.reason[i], ca.reason[i - 1]),
                  "callback %d repeats %s (%s)", i, tsync_sync_state_name(ca.state[i]),
                  ca.reason[i]);
    cr_assert_eq(ca.state[ca.n - 1], TSYNC_SYNC_OFFLINE);
    cr_assert_eq(ca.state[ca.n - 2], TSYNC_SYNC_SYNCED);
    cr_assert_eq(ca.state[ca.n - 3], TSYNC_SYNC_SYNCING);
    cr_assert_eq(ca.state[ca.n - 4], TSYNC_SYNC_SYNCED);
}

/* B replicates a table A lacks and writes to it: A parks the change and says so (attention,
 * in words), in the C API and the status JSON; B is synced. */
Test(node_sync_state, attention_when_parked)
{
    const char *dir = nu_tmpdir();
    char a[NU_PATH], b[NU_PATH], peer[NU_EP + 80];
    snprintf(a, sizeof a, "%s/a.db", dir);
    snprintf(b, sizeof b, "%s/b.db", dir);
    nu_make_db(a);
    nu_make_db(b);
    tsync_store *sb = th_open(b);
    th_exec(sb, "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT)");
    cr_assert_eq(tsync_store_replicate(sb, "notes", NULL, 0), 0, "%s", th_errmsg());

    tsync_node *na = node_new(a, NULL, 3500, NULL, NULL);
    cr_assert_eq(tsync_node_start(na), 0);
    nu_peer_addr(peer, tsync_node_endpoint(na), a);
    tsync_node *nb = node_new(b, peer, 3500, NULL, NULL);
    cr_assert_eq(tsync_node_start(nb), 0);
    wait_sync(na, TSYNC_SYNC_SYNCED, NULL, 10000, "a with b connected");

    th_exec(sb, "INSERT INTO notes VALUES('n1', 'a note')");
    wait_sync(na, TSYNC_SYNC_ATTENTION, NULL, 10000, "a with a parked change");
    tsync_sync_state s = state_of(na);
    cr_assert(strstr(s.reason, "parked"), "attention for: %s", s.reason);
    json_t *sj = status_sync(na, "attention");
    cr_assert(strstr(json_string_value(json_object_get(sj, "reason")), "parked"));
    json_decref(sj);
    /* B, whose change A parked, has nothing to look at: synced once A's ACK is in. */
    wait_sync(nb, TSYNC_SYNC_SYNCED, NULL, 5000, "b, whose change a parked");
    tsync_store_free(sb);
    tsync_node_free(nb);
    tsync_node_free(na);
}

/* A peer that stops acknowledging: syncing, then, once its lag has not shrunk for the stuck
 * time (lowered here from 60 s to 1.5 s), attention naming it; synced when it answers again. */
Test(node_sync_state, stuck_peer_is_attention)
{
    tsync__node_stuck_ms = 1500;
    const char *dir = nu_tmpdir();
    char a[NU_PATH], b[NU_PATH], peer[NU_EP + 80];
    snprintf(a, sizeof a, "%s/a.db", dir);
    snprintf(b, sizeof b, "%s/b.db", dir);
    nu_make_db(a);
    nu_make_db(b);
    tsync_node *na = node_new(a, NULL, 30000, NULL, NULL);
    cr_assert_eq(tsync_node_start(na), 0);
    nu_peer_addr(peer, tsync_node_endpoint(na), a);
    tsync_node *nb = node_new(b, peer, 3500, NULL, NULL);
    wait_sync(na, TSYNC_SYNC_SYNCED, nb, 10000, "a with b connected");

    tsync_store *sa = th_open(a);
    th_exec(sa, "INSERT INTO sales VALUES('a-1', 'a', 'p0', 1)");
    wait_sync(na, TSYNC_SYNC_SYNCING, NULL, 3000, "a with b not acknowledging");
    int64_t took = wait_sync(na, TSYNC_SYNC_ATTENTION, NULL, 3000, "a with b stuck");
    cr_assert_geq(took, 700, "stuck %lld ms after syncing began: before the stuck time",
                  (long long)took);
    tsync_sync_state s = state_of(na);
    cr_assert(strstr(s.reason, "is stuck: it lacks 1 batch(es), we lack 0"), "attention for: %s",
              s.reason);
    wait_sync(na, TSYNC_SYNC_SYNCED, nb, 10000, "a once b answers again");
    tsync_store_free(sa);
    tsync_node_free(nb);
    tsync_node_free(na);
}

/* Refused input is attention while it is recent (the window lowered here from 10 minutes to
 * 2 s), and no longer once the window passed without another refusal: an enrolled till dials
 * one that is not (a refused HELLO, "shop"). */
Test(node_sync_state, refused_input_counts_for_a_window)
{
    tsync__node_refused_window_ms = 2000;
    const char *dir = nu_tmpdir();
    char a[NU_PATH], b[NU_PATH], shop[NU_PATH], peer[NU_EP + 80];
    snprintf(a, sizeof a, "%s/a.db", dir);
    snprintf(b, sizeof b, "%s/b.db", dir);
    snprintf(shop, sizeof shop, "%s/shop.key", dir);
    nu_make_db(a);
    nu_make_db(b);
    nu_shop_create(shop, "corner shop");
    nu_enrol(b, shop, "b");
    tsync_node *na = node_new(a, NULL, 3500, NULL, NULL);
    cr_assert_eq(tsync_node_start(na), 0);
    nu_peer_addr(peer, tsync_node_endpoint(na), a);
    tsync_node *nb = node_new(b, peer, 3500, NULL, NULL);
    cr_assert_eq(tsync_node_start(nb), 0);
    wait_sync(na, TSYNC_SYNC_ATTENTION, NULL, 10000, "a refusing b");
    tsync_sync_state s = state_of(na);
    cr_assert(strstr(s.reason, "input refused in the last 2 s (shop)"), "attention for: %s",
              s.reason);
    tsync_node_free(nb);
    /* The counter stays where it is; only the window ends the attention. */
    wait_sync(na, TSYNC_SYNC_OFFLINE, NULL, 8000, "a after the window");
    tsync_node_free(na);
}

/* The record's version is checked; the names. */
Test(node_sync_state, api_contract)
{
    const char *dir = nu_tmpdir();
    char a[NU_PATH];
    snprintf(a, sizeof a, "%s/a.db", dir);
    nu_make_db(a);
    tsync_node *na = node_new(a, NULL, 3500, NULL, NULL);
    tsync_sync_state s = TSYNC_SYNC_STATE_INIT;
    s.version = 99;
    cr_assert_eq(tsync_node_sync_state(&s, na), TSYNC_EINVAL);
    cr_assert_eq(tsync_node_sync_state(NULL, na), TSYNC_EINVAL);
    tsync_sync_state i;
    memset(&i, 0xff, sizeof i);
    cr_assert_eq(tsync_sync_state_init(&i, TSYNC_SYNC_STATE_VERSION), 0);
    cr_assert_eq(i.version, TSYNC_SYNC_STATE_VERSION);
    cr_assert_eq(i.state, 0);
    cr_assert_eq(tsync_node_on_sync_state(NULL, on_sync, NULL), TSYNC_EINVAL);
    static const char *const names[] = {"alone", "offline", "syncing", "synced", "attention"};
    for (int k = 0; k < 5; k++) cr_assert_str_eq(tsync_sync_state_name(k), names[k]);
    cr_assert_str_eq(tsync_sync_state_name(42), "unknown");
    tsync_node_free(na);
}

/* The tables of each on_change call, sorted and joined with ','. */
typedef struct {
    pthread_mutex_t mu;
    int n;
    size_t batches;
    char tables[MAXCH][128];
} merges;

static int by_name(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static void on_change(void *ctx, const tsync_node_change *c)
{
    merges *m = ctx;
    const char *v[16];
    size_t k = c->ntables < 16 ? c->ntables : 16;
    memcpy(v, c->tables, k * sizeof *v);
    qsort(v, k, sizeof *v, by_name);
    pthread_mutex_lock(&m->mu);
    if (m->n < MAXCH) {
        char *out = m->tables[m->n];
        out[0] = 0;
        for (size_t i = 0; i < k; i++)
            snprintf(out + strlen(out), 128 - strlen(out), "%s%s", i ? "," : "", v[i]);
    }
    m->n++;
    m->batches += c->batches;
    pthread_mutex_unlock(&m->mu);
}

/* Waits until on_change reported want batches in all; every call from call `from` on names
 * exactly `tables`. Returns the number of calls. */
static int changes_are(merges *m, int from, size_t want, const char *tables, const char *what)
{
    int64_t end = nu_now_ms() + 10000;
    for (;;) {
        pthread_mutex_lock(&m->mu);
        size_t got = m->batches;
        int n = m->n;
        pthread_mutex_unlock(&m->mu);
        if (got >= want) {
            cr_assert_eq(got, want, "%s: %zu batches merged, want %zu", what, got, want);
            cr_assert_leq(n, MAXCH);
            cr_assert_gt(n, from, "%s: no on_change", what);
            for (int i = from; i < n; i++)
                cr_assert_str_eq(m->tables[i], tables, "%s: on_change %d names {%s}, want {%s}",
                                 what, i, m->tables[i], tables);
            return n;
        }
        cr_assert(nu_now_ms() < end, "%s: %zu batches merged after 10 s, want %zu", what, got,
                  want);
        nu_sleep_ms(10);
    }
}

/* A merge that touches only sales reports {sales}; only products, {products}; both, both. */
Test(node_sync_state, on_change_names_the_tables)
{
    const char *dir = nu_tmpdir();
    char a[NU_PATH], b[NU_PATH], peer[NU_EP + 80];
    snprintf(a, sizeof a, "%s/a.db", dir);
    snprintf(b, sizeof b, "%s/b.db", dir);
    nu_make_db(a);
    nu_make_db(b);
    merges m = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tsync_node *na = node_new(a, NULL, 3500, on_change, &m);
    cr_assert_eq(tsync_node_start(na), 0);
    nu_peer_addr(peer, tsync_node_endpoint(na), a);
    tsync_node *nb = node_new(b, peer, 3500, NULL, NULL);
    cr_assert_eq(tsync_node_start(nb), 0);
    wait_sync(na, TSYNC_SYNC_SYNCED, NULL, 10000, "a with b connected");
    pthread_mutex_lock(&m.mu);
    size_t base = m.batches;
    int from = m.n;
    pthread_mutex_unlock(&m.mu);

    tsync_store *sb = th_open(b);
    th_exec(sb, "INSERT INTO sales VALUES('b-1', 'b', 'p0', 1)");
    from = changes_are(&m, from, base + 1, "sales", "a sale");
    th_exec(sb, "INSERT INTO products VALUES('p9', 'tea', 5)");
    from = changes_are(&m, from, base + 2, "products", "a product");
    th_exec(sb, "BEGIN; INSERT INTO sales VALUES('b-2', 'b', 'p9', 1); "
                "UPDATE products SET stock = stock - 1 WHERE id = 'p9'; COMMIT");
    changes_are(&m, from, base + 3, "products,sales", "a sale and its stock");
    tsync_store_free(sb);
    tsync_node_free(nb);
    tsync_node_free(na);
}
