/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_errors.c — a failure on the node's own thread reaches the app: a real node
 * on its own thread whose scheduled backup cannot be written (its folder was removed after the
 * node started) logs the failure at TSYNC_LOG_ERROR, and tsync_node_last_error, called from the
 * app's thread, returns the same line with its code, its time and a count, while the node goes on
 * syncing. A database that fails under the node (the app dropped the log table the node seals
 * into) stops it, and the app learns why and that it stopped. The record's version is checked on
 * entry (an old and a future one are refused).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/helpers.h"
#include "tillsync/node.h"

TestSuite(node_errors, .fini = th_cleanup, .timeout = 60);

typedef struct {
    pthread_mutex_t mu;
    int errors;                      /* ERROR lines logged */
    char last[TSYNC_NODE_ERROR_LEN]; /* the last of them */
} logged;

static void on_log(void *ctx, int level, const char *line)
{
    logged *l = ctx;
    if (level != TSYNC_LOG_ERROR) return;
    pthread_mutex_lock(&l->mu);
    l->errors++;
    snprintf(l->last, sizeof l->last, "%s", line);
    pthread_mutex_unlock(&l->mu);
}

static uint64_t wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *make_db(const char *dir)
{
    const char *path = th_path(dir, "a.db");
    tsync_store_free(th_open_products(path));
    return path;
}

Test(node_errors, a_backup_failing_on_the_node_thread_reaches_the_app)
{
    char *dir = th_tmpdir_auto();
    const char *db = make_db(dir);
    char bdir[1024];
    snprintf(bdir, sizeof bdir, "%s/backups", dir);
    cr_assert_eq(mkdir(bdir, 0700), 0);
    logged lg = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    o.log = on_log;
    o.log_ctx = &lg;
    o.backup_every_ms = 200; /* the first one 200 ms after start */
    o.backup_dir = bdir;
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "%s", tsync_error_last()->message);

    tsync_node_error e = TSYNC_NODE_ERROR_INIT;
    cr_assert_eq(tsync_node_last_error(&e, n), 0);
    cr_assert_eq(e.count, 0, "an error before anything failed: %s", e.message);
    cr_assert_eq(e.code, 0);
    cr_assert_str_eq(e.message, "");

    /* The folder goes away after the node checked it: the backup fails on the worker, and the
     * node's thread reports it. */
    cr_assert_eq(rmdir(bdir), 0);
    uint64_t t0 = wall_now();
    cr_assert_eq(tsync_node_start(n), 0);
    for (int i = 0; i < 500 && e.count == 0; i++) {
        sleep_ms(10);
        cr_assert_eq(tsync_node_last_error(&e, n), 0);
    }
    cr_assert_geq(e.count, 1, "the failed backup never reached the app");
    cr_assert_neq(e.code, 0);
    cr_assert_lt(e.code, 0, "code %d is not a tsync_error_code", e.code);
    cr_assert_eq(e.stopped, 0, "a failed backup does not stop the node");
    cr_assert_geq(e.at_ms, t0);
    cr_assert_leq(e.at_ms, wall_now());
    cr_assert(strstr(e.message, "scheduled backup to") && strstr(e.message, bdir),
              "the error does not name the backup: %s", e.message);
    cr_assert_eq(e.version, TSYNC_NODE_ERROR_VERSION);

    /* The same line as the log's, and the node still runs. */
    pthread_mutex_lock(&lg.mu);
    int logged_errors = lg.errors;
    char last[TSYNC_NODE_ERROR_LEN];
    snprintf(last, sizeof last, "%s", lg.last);
    pthread_mutex_unlock(&lg.mu);
    cr_assert_geq(logged_errors, 1);
    tsync_node_error again = TSYNC_NODE_ERROR_INIT;
    cr_assert_eq(tsync_node_last_error(&again, n), 0);
    if (again.count == (uint64_t)logged_errors)
        cr_assert_str_eq(again.message, last, "the app's copy differs from the log line");
    char *js = NULL;
    cr_assert_eq(tsync_node_status_json(&js, n), 0);
    cr_assert(strstr(js, "\"failed\""), "status has no backup failures: %s", js);
    free(js);

    /* Each failure counts: the next backup fails too. */
    for (int i = 0; i < 500 && again.count < e.count + 1; i++) {
        sleep_ms(10);
        cr_assert_eq(tsync_node_last_error(&again, n), 0);
    }
    cr_assert_gt(again.count, e.count, "a second failure was not counted");
    tsync_node_free(n);
    free(dir);
}

Test(node_errors, the_record_version_is_checked)
{
    char *dir = th_tmpdir_auto();
    const char *db = make_db(dir);
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "%s", tsync_error_last()->message);
    tsync_node_error e = TSYNC_NODE_ERROR_INIT;
    e.version = 0; /* older than any */
    cr_assert_eq(tsync_node_last_error(&e, n), TSYNC_EINVAL);
    cr_assert(strstr(tsync_error_last()->message, "version"), "%s", tsync_error_last()->message);
    e.version = TSYNC_NODE_ERROR_VERSION + 1; /* from a newer header */
    cr_assert_eq(tsync_node_last_error(&e, n), TSYNC_EINVAL);
    e.version = TSYNC_NODE_ERROR_VERSION;
    cr_assert_eq(tsync_node_last_error(&e, NULL), TSYNC_EINVAL);
    cr_assert_eq(tsync_node_last_error(NULL, n), TSYNC_EINVAL);
    cr_assert_eq(tsync_node_last_error(&e, n), 0);
    cr_assert_eq(e.count, 0);
    tsync_node_free(n);
    free(dir);
}

Test(node_errors, a_database_failure_stops_the_node_and_the_app_learns_why)
{
    char *dir = th_tmpdir_auto();
    const char *db = make_db(dir);
    logged lg = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    o.log = on_log;
    o.log_ctx = &lg;
    tsync_node *n;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(tsync_node_start(n), 0);

    /* The app breaks the database under the node: the next seal has no log to write into. */
    sqlite3 *app;
    cr_assert_eq(sqlite3_open(db, &app), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(app,
                              "DROP TABLE tsync_log; "
                              "INSERT INTO products(id, name) VALUES('x', 'x')",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(app));
    sqlite3_close(app);

    tsync_node_error e = TSYNC_NODE_ERROR_INIT;
    for (int i = 0; i < 500 && !e.stopped; i++) {
        sleep_ms(10);
        cr_assert_eq(tsync_node_last_error(&e, n), 0);
    }
    cr_assert_eq(e.stopped, 1, "the node did not stop (last error: %s)", e.message);
    cr_assert_lt(e.code, 0);
    cr_assert_geq(e.count, 1);
    cr_assert(strstr(e.message, "the node stopped after an error: "), "%s", e.message);
    cr_assert(strlen(e.message) > strlen("the node stopped after an error: "),
              "it does not say which error: %s", e.message);
    pthread_mutex_lock(&lg.mu);
    int logged_errors = lg.errors;
    pthread_mutex_unlock(&lg.mu);
    cr_assert_geq(logged_errors, 1, "nothing was logged at ERROR");
    tsync_node_free(n);
    free(dir);
}
