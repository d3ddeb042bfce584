/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_states.c — the network state a POS app shows: each peer's state (connecting,
 * connected, unreachable; "discovered" needs mDNS and is tested in tests/netlab/discovery.sh)
 * with the time it entered it, reported through tsync_node_options.on_peer_state on every change
 * and in tsync_node_status_json. Two in-process nodes on loopback, each on its own thread.
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

TestSuite(node_states, .fini = nu_fini, .timeout = 120);

#define MAXEV 64

typedef struct {
    pthread_mutex_t mu;
    int n;
    int state[MAXEV], previous[MAXEV], online[MAXEV];
    uint64_t since[MAXEV];
    char key[MAXEV][65];
    int offthread; /* events seen while the test thread was inside a node call */
} events;

static void on_state(void *ctx, const tsync_peer_event *e)
{
    events *ev = ctx;
    pthread_mutex_lock(&ev->mu);
    if (ev->n < MAXEV) {
        ev->state[ev->n] = e->state;
        ev->previous[ev->n] = e->previous;
        ev->online[ev->n] = e->online;
        ev->since[ev->n] = e->since_ms;
        snprintf(ev->key[ev->n], sizeof ev->key[0], "%s", e->key_hex);
        ev->n++;
    }
    pthread_mutex_unlock(&ev->mu);
}

static int ev_count(events *ev)
{
    pthread_mutex_lock(&ev->mu);
    int n = ev->n;
    pthread_mutex_unlock(&ev->mu);
    return n;
}

/* Waits up to ms for the newest event to be `state`; returns the ms it took, -1 on timeout. */
static int wait_state(events *ev, int state, int ms)
{
    int64_t t0 = nu_now_ms();
    while (nu_now_ms() - t0 < ms) {
        pthread_mutex_lock(&ev->mu);
        int last = ev->n ? ev->state[ev->n - 1] : -1;
        pthread_mutex_unlock(&ev->mu);
        if (last == state) return (int)(nu_now_ms() - t0);
        nu_sleep_ms(10);
    }
    return -1;
}

static uint64_t wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to 2 s (the status is republished within 100 ms of a change) for the first peer of a
 * node's status to be in `want`; returns its lost_ms and since_ms (0 when null). */
static void status_peer(tsync_node *n, const char *want, uint64_t *lost, uint64_t *since)
{
    char st[32] = "";
    for (int i = 0; i < 200; i++) {
        char *js;
        cr_assert_eq(tsync_node_status_json(&js, n), 0);
        json_error_t je;
        json_t *o = json_loads(js, 0, &je);
        cr_assert(o, "status is not JSON: %s", js);
        json_t *p = json_array_get(json_object_get(o, "peers"), 0);
        if (p) {
            snprintf(st, sizeof st, "%s", json_string_value(json_object_get(p, "state")));
            *lost = (uint64_t)json_integer_value(json_object_get(p, "lost_ms"));
            *since = (uint64_t)json_integer_value(json_object_get(p, "since_ms"));
        }
        json_decref(o);
        free(js);
        if (!strcmp(st, want)) return;
        nu_sleep_ms(10);
    }
    cr_assert_fail("status shows the peer '%s' after 2 s, want '%s'", st, want);
}

/* A node on db reporting to ev (not started). */
static tsync_node *make(const char *db, const char *listen, const char *peer, events *ev,
                        int version, int liveness_ms)
{
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.version = (unsigned)version;
    o.listen = listen;
    o.status_path = "";
    o.no_mdns = 1;
    o.liveness_ms = liveness_ms;
    o.log_level = getenv("TSYNC_NODE_VERBOSE") ? TSYNC_LOG_DEBUG : TSYNC_LOG_WARN;
    const char *peers[1] = {peer};
    if (peer) {
        o.peers = peers;
        o.npeers = 1;
    }
    o.on_peer_state = on_state;
    o.cb_ctx = ev;
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "node for %s: %s", db, tsync_error_last()->message);
    return n;
}

static tsync_node *start(const char *db, const char *listen, const char *peer, events *ev,
                         int version)
{
    tsync_node *n = make(db, listen, peer, ev, version, 700);
    cr_assert_eq(tsync_node_start(n), 0);
    return n;
}

/* Asserts that ev holds exactly the n events want (previous, state), each naming key, each
 * since t0 and none before the one before it, online exactly when connected. */
static void expect_events(const events *ev, const int want[][2], int n, const char *key,
                          uint64_t t0, const char *who)
{
    for (int i = 0; i < ev->n; i++)
        cr_log_info("%s: event %d: %s -> %s, key '%.16s'", who, i,
                    tsync_peer_state_name(ev->previous[i]), tsync_peer_state_name(ev->state[i]),
                    ev->key[i]);
    cr_assert_eq(ev->n, n, "%s reported %d events, want %d", who, ev->n, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ev->previous[i], want[i][0], "%s: event %d from %s, want %s", who, i,
                     tsync_peer_state_name(ev->previous[i]), tsync_peer_state_name(want[i][0]));
        cr_assert_eq(ev->state[i], want[i][1], "%s: event %d to %s, want %s", who, i,
                     tsync_peer_state_name(ev->state[i]), tsync_peer_state_name(want[i][1]));
        cr_assert_str_eq(ev->key[i], key, "%s: event %d names key '%s', want '%s'", who, i,
                         ev->key[i], key);
        cr_assert_geq(ev->since[i], t0, "%s: event %d since before the test began", who, i);
        if (i)
            cr_assert_geq(ev->since[i], ev->since[i - 1], "%s: event %d goes back in time", who, i);
        cr_assert_eq(ev->online[i], ev->state[i] == TSYNC_PEER_CONNECTED, "%s: event %d: online %d",
                     who, i, ev->online[i]);
    }
}

/* Databases a.db and b.db in a new folder; kb: b's public key. */
static void two_dbs(char a[NU_PATH], char b[NU_PATH], char kb[65])
{
    const char *dir = nu_tmpdir();
    snprintf(a, NU_PATH, "%s/a.db", dir);
    snprintf(b, NU_PATH, "%s/b.db", dir);
    nu_make_db(a);
    nu_make_db(b);
    nu_pubkey(b, kb);
}

/* A dial to a till that is not there: connecting, then unreachable after liveness_ms; it comes
 * up: connected; it goes away: unreachable, with when it was lost. Exactly these events, in
 * this order, each a change, each with its time. */
Test(node_states, connecting_unreachable_connected_unreachable)
{
    char a[NU_PATH], b[NU_PATH], kb[65], peer[NU_EP + 80];
    two_dbs(a, b, kb);
    events ea = {.mu = PTHREAD_MUTEX_INITIALIZER}, eb = {.mu = PTHREAD_MUTEX_INITIALIZER};

    /* Find a free port: let B bind any, note it, stop B. */
    tsync_node *nb = start(b, "tcp://127.0.0.1:*", NULL, &eb, TSYNC_NODE_OPTIONS_VERSION);
    char ep[NU_EP];
    snprintf(ep, sizeof ep, "%s", tsync_node_endpoint(nb));
    tsync_node_free(nb);
    snprintf(peer, sizeof peer, "%s#%s", ep, kb);

    uint64_t t0 = wall_now();
    tsync_node *na = start(a, "", peer, &ea, TSYNC_NODE_OPTIONS_VERSION);
    cr_assert_geq(wait_state(&ea, TSYNC_PEER_UNREACHABLE, 5000), 0,
                  "a dial to nobody never became unreachable (%d events)", ev_count(&ea));
    uint64_t lost, since;
    status_peer(na, "unreachable", &lost, &since);
    cr_assert_eq(lost, 0, "never connected, yet a lost_ms");
    cr_assert_geq(since, t0 + 600, "unreachable %llu ms after start: before liveness_ms",
                  (unsigned long long)(since - t0));

    /* B comes up on that address. */
    nb = start(b, ep, NULL, &eb, TSYNC_NODE_OPTIONS_VERSION);
    int took = wait_state(&ea, TSYNC_PEER_CONNECTED, 5000);
    cr_assert_geq(took, 0, "a did not connect within 5 s of b starting");
    cr_assert_geq(wait_state(&eb, TSYNC_PEER_CONNECTED, 5000), 0, "b never showed a connected");
    status_peer(na, "connected", &lost, &since);

    /* B goes away. */
    uint64_t t1 = wall_now();
    tsync_node_free(nb);
    took = wait_state(&ea, TSYNC_PEER_UNREACHABLE, 5000);
    cr_assert_geq(took, 0, "a did not mark b unreachable within 5 s of b stopping");
    status_peer(na, "unreachable", &lost, &since);
    cr_assert_geq(lost, t1, "lost_ms %llu is before b stopped (%llu)", (unsigned long long)lost,
                  (unsigned long long)t1);
    nu_sleep_ms(1500); /* a keeps dialling: no further events while b stays away */
    tsync_node_free(na);

    static const int want[][2] = {{TSYNC_PEER_GONE, TSYNC_PEER_CONNECTING},
                                  {TSYNC_PEER_CONNECTING, TSYNC_PEER_UNREACHABLE},
                                  {TSYNC_PEER_UNREACHABLE, TSYNC_PEER_CONNECTED},
                                  {TSYNC_PEER_CONNECTED, TSYNC_PEER_UNREACHABLE}};
    expect_events(&ea, want, 4, kb, t0, "a");
    /* B (inbound) saw a come, then nothing more it could act on: connecting/connected only. */
    cr_assert_geq(eb.n, 1);
    cr_assert_eq(eb.state[eb.n - 1], TSYNC_PEER_CONNECTED);
}

/* The two events of a till new to the list that connects: connecting, then connected. */
static const int CONNECTS[][2] = {{TSYNC_PEER_GONE, TSYNC_PEER_CONNECTING},
                                  {TSYNC_PEER_CONNECTING, TSYNC_PEER_CONNECTED}};

/* A's static peer is dialled by tsync_node_new, and its loop starts a second later (a thread
 * started late, as under load): by then the transport has finished the handshake and B's HELLO
 * waits, so A's first round finds the session up and verified at once. Its row was connecting
 * all the same, and every change is reported: A reports connecting, then connected (it once
 * went straight from gone to connected: cli_node under ASan). B, whose loop ran all along, sees
 * A connecting until A's HELLO comes. */
Test(node_states, verified_in_the_first_round_still_reports_connecting)
{
    char a[NU_PATH], b[NU_PATH], kb[65], peer[NU_EP + 80];
    two_dbs(a, b, kb);
    events ea = {.mu = PTHREAD_MUTEX_INITIALIZER}, eb = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t t0 = wall_now();
    /* Liveness well above the second A's loop waits: B must not cut the silent session. */
    tsync_node *nb = make(b, "tcp://127.0.0.1:*", NULL, &eb, TSYNC_NODE_OPTIONS_VERSION, 10000);
    cr_assert_eq(tsync_node_start(nb), 0);
    snprintf(peer, sizeof peer, "%s#%s", tsync_node_endpoint(nb), kb);
    tsync_node *na = make(a, "", peer, &ea, TSYNC_NODE_OPTIONS_VERSION, 10000);
    nu_sleep_ms(1000);
    cr_assert_eq(ev_count(&ea), 0, "a node that is not running reported events");
    cr_assert_eq(tsync_node_start(na), 0);
    cr_assert_geq(wait_state(&ea, TSYNC_PEER_CONNECTED, 10000), 0, "a never connected to b");
    cr_assert_geq(wait_state(&eb, TSYNC_PEER_CONNECTED, 10000), 0, "b never showed a connected");
    /* What each reported up to now (stopping one makes the other report it unreachable). */
    events sa, sb;
    pthread_mutex_lock(&ea.mu);
    sa = ea;
    pthread_mutex_unlock(&ea.mu);
    pthread_mutex_lock(&eb.mu);
    sb = eb;
    pthread_mutex_unlock(&eb.mu);
    tsync_node_free(na);
    tsync_node_free(nb);
    expect_events(&sa, CONNECTS, 2, kb, t0, "a (dialled before its loop ran)");
    /* Neither is enrolled and B was given no key for A: B's row of A names no key. */
    expect_events(&sb, CONNECTS, 2, "", t0, "b (inbound)");
}

static void never(void *ctx, const tsync_peer_event *e)
{
    (void)ctx;
    (void)e;
    cr_assert_fail("a version 1 options struct has no on_peer_state: it must not be called");
}

/* Options of version 1 (before on_peer_state) still work, and what lies after them is not read. */
Test(node_states, options_version_1_accepted)
{
    char a[NU_PATH], b[NU_PATH], kb[65], peer[200];
    two_dbs(a, b, kb);
    snprintf(peer, sizeof peer, "tcp://127.0.0.1:9#%s", kb); /* nobody there */
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.version = 1;
    o.listen = "";
    o.status_path = "";
    o.no_mdns = 1;
    const char *peers[1] = {peer};
    o.peers = peers;
    o.npeers = 1;
    o.on_peer_state = never;
    o.liveness_ms = 300;
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, a, &o), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(tsync_node_start(n), 0);
    nu_sleep_ms(800); /* connecting -> unreachable happened, unreported */
    tsync_node_free(n);
    o.version = TSYNC_NODE_OPTIONS_VERSION + 1; /* the first version this library does not know */
    cr_assert_eq(tsync_node_new(&n, a, &o), TSYNC_EINVAL);
}
