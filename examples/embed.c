/* SPDX-License-Identifier: Apache-2.0 */
/*
 * examples/embed.c — a POS app that embeds the tillsync node (public API only: the tillsync
 * headers).
 *
 *   embed DB [--listen tcp://ADDR:PORT] [--peer tcp://ADDR:PORT#KEY]... [--sales N] [--loop]
 *            [--wait-sales M] [--timeout S]
 *
 * It creates DB if needed (a products table and a sales table, replicated), starts a node —
 * on its own thread, or with --loop driven from this program's own poll() loop — records N sales
 * through its own SQLite connection the way a POS app would, prints what the node reports through
 * its callbacks (and on which thread they run), waits until the database holds at least M sales
 * (its own and its peers'), prints the node's status JSON and stops.
 */
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tillsync/tillsync.h"

static pthread_t main_thread;

static const char *thread_name(void)
{
    return pthread_equal(pthread_self(), main_thread) ? "main thread" : "node thread";
}

/* Runs on the node's thread (or inside tsync_node_dispatch, on ours). Keep it short: an app
 * would post a "refresh" message to its UI thread here. */
static void on_change(void *ctx, const tsync_node_change *c)
{
    (void)ctx;
    printf("change: %zu batches from peers merged (%zu conflicts), on the %s\n", c->batches,
           c->conflicts, thread_name());
    fflush(stdout);
}

/* A till's network state changed: a UI would update its "tills" list here. */
static void on_peer_state(void *ctx, const tsync_peer_event *e)
{
    (void)ctx;
    printf("peer %.16s at %s: %s -> %s; node %s (on the %s)\n",
           e->key_hex[0] ? e->key_hex : "(key unknown)", e->address,
           tsync_peer_state_name(e->previous), tsync_peer_state_name(e->state),
           e->online ? "online" : "offline", thread_name());
    fflush(stdout);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int setup(const char *path)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    tsync_store *s;
    if (tsync_store_open(&s, path, &o) != 0) return -1;
    int rc = 0;
    sqlite3_stmt *st;
    int have = 0;
    if (sqlite3_prepare_v2(tsync_store_sqlite(s),
                           "SELECT count(*) FROM sqlite_master WHERE name='sales'", -1, &st,
                           NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) have = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    if (!have) {
        rc = tsync_store_exec(
            s, "CREATE TABLE sales(id TEXT PRIMARY KEY, item TEXT, cents INTEGER)", NULL, NULL);
        if (rc == 0) rc = tsync_store_replicate(s, "sales", NULL, 0);
    }
    tsync_store_free(s);
    return rc;
}

static int count_sales(sqlite3 *db)
{
    sqlite3_stmt *st;
    int n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sales", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    return n;
}

int main(int argc, char **argv)
{
    main_thread = pthread_self();
    if (argc < 2) {
        fprintf(stderr, "usage: embed DB [--listen EP] [--peer EP#KEY]... [--sales N] [--loop] "
                        "[--wait-sales M] [--timeout S]\n");
        return 2;
    }
    const char *db_path = argv[1];
    const char *peers[16];
    size_t npeers = 0;
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    int sales = 10, loop = 0, wait_sales = 0;
    double timeout = 20;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            o.listen = argv[++i];
        else if (!strcmp(argv[i], "--peer") && i + 1 < argc && npeers < 16)
            peers[npeers++] = argv[++i];
        else if (!strcmp(argv[i], "--sales") && i + 1 < argc)
            sales = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--wait-sales") && i + 1 < argc)
            wait_sales = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout = atof(argv[++i]);
        else if (!strcmp(argv[i], "--loop"))
            loop = 1;
        else {
            fprintf(stderr, "embed: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (setup(db_path) != 0) {
        fprintf(stderr, "embed: %s: %s\n", db_path, tsync_error_last()->message);
        return 1;
    }
    o.peers = peers;
    o.npeers = npeers;
    o.on_change = on_change;
    o.on_peer_state = on_peer_state;
    tsync_node *node;
    if (tsync_node_new(&node, db_path, &o) != 0) {
        fprintf(stderr, "embed: cannot start the node: %s\n", tsync_error_last()->message);
        return 1;
    }
    printf("node started (%s)%s%s\n", loop ? "driven by our poll loop" : "on its own thread",
           tsync_node_endpoint(node)[0] ? ", listening on " : "", tsync_node_endpoint(node));
    if (!loop && tsync_node_start(node) != 0) {
        fprintf(stderr, "embed: cannot start the node thread\n");
        tsync_node_free(node);
        return 1;
    }

    /* The app's own connection: sales are plain SQL; the node seals and pushes them. */
    sqlite3 *db;
    sqlite3_open(db_path, &db);
    sqlite3_busy_timeout(db, 10000);
    char id[64];
    int rc = 0;
    for (int i = 0; i < sales; i++) {
        char sql[256];
        snprintf(id, sizeof id, "%d-%d", (int)getpid(), i);
        snprintf(sql, sizeof sql, "INSERT INTO sales VALUES('%s', 'coffee', %d)", id, 250 + i);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
            fprintf(stderr, "embed: sale: %s\n", sqlite3_errmsg(db));
            rc = 1;
            break;
        }
    }
    printf("recorded %d sales\n", sales);
    fflush(stdout);
    double end = now_s() + timeout;
    int have = count_sales(db);
    while (rc == 0 && now_s() < end && (have < wait_sales || loop)) {
        if (loop) {
            /* The host loop: wait on the node's descriptor, then let it work. */
            struct pollfd pfd = {tsync_node_fd(node), POLLIN, 0};
            poll(&pfd, 1, tsync_node_timeout_ms(node));
            if (tsync_node_dispatch(node) != 0) {
                fprintf(stderr, "embed: node failed: %s\n", tsync_error_last()->message);
                rc = 1;
            }
            have = count_sales(db);
            if (have >= wait_sales && now_s() > end - timeout + 0.5) break;
        } else {
            usleep(20000);
            have = count_sales(db);
        }
    }
    if (rc == 0 && have < wait_sales) {
        fprintf(stderr, "embed: the database holds %d sales, expected %d within %.0f s\n", have,
                wait_sales, timeout);
        rc = 1;
    }
    if (rc == 0) printf("the database holds %d sales\n", have);
    char *status = NULL;
    if (tsync_node_status_json(&status, node) == 0) printf("status: %s\n", status);
    free(status);
    sqlite3_close(db);
    tsync_node_free(node); /* stops the thread first */
    return rc;
}
