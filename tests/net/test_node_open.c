/* SPDX-License-Identifier: Apache-2.0 */
/* A node starting while the POS holds the write lock (it sells without a pause) waits for it
 * like any command, instead of failing "database is busy" after 250 ms (found by the soak of
 * tests/soak/kill_restart.sh: a restarted node failed to start). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <sqlite3.h>
#include <tillsync/tillsync.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

typedef struct {
    const char *path;
    int hold_ms;
    pthread_barrier_t locked;
} holder;

/* Another connection, as the POS's: holds the write lock for hold_ms, then commits. */
static void *hold_write_lock(void *arg)
{
    holder *h = arg;
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(h->path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "BEGIN IMMEDIATE; INSERT INTO products(id, name) VALUES('x', 'x')",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    pthread_barrier_wait(&h->locked);
    nu_sleep_ms(h->hold_ms);
    cr_assert_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    return NULL;
}

Test(node_open, waits_for_the_pos_write_lock_at_start)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "a.db");
    tsync_store *s = th_open_products(path);
    th_exec(s, "INSERT INTO products(id, name) VALUES('p1', 'apple')");
    th_seal(s);
    th_exec(s, "INSERT INTO products(id, name) VALUES('p2', 'pear')"); /* left unsealed */
    tsync_store_free(s);

    holder h = {.path = path, .hold_ms = 1500};
    pthread_barrier_init(&h.locked, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, hold_write_lock, &h);
    pthread_barrier_wait(&h.locked);
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "tcp://127.0.0.1:*";
    o.no_mdns = 1;
    tsync_node *n = NULL;
    int rc = tsync_node_new(&n, path, &o);
    cr_assert_eq(rc, 0, "the node did not start while the POS held the write lock: %s",
                 tsync_error_last()->message);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&h.locked);
    tsync_node_free(n);
    free(dir);
}
