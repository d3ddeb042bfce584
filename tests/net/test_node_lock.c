/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_lock.c — one node per database in the library (net/node/lock.c): a second
 * tsync_node on the same database, in the same process, is refused with TSYNC_EBUSY and a message
 * naming the running node's pid and address, before it writes anything; the first one goes on,
 * and once it is freed the database takes a new node. tests/cli/cli_service.sh checks the same
 * through `tillsync run` (another process).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tillsync/node.h"

TestSuite(node_lock, .fini = nu_fini, .timeout = 60);

static int node_new(tsync_node **n, const char *db, const char *status)
{
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "tcp://127.0.0.1:*";
    o.status_path = status;
    o.no_mdns = 1;
    o.log_level = TSYNC_LOG_WARN;
    return tsync_node_new(n, db, &o);
}

Test(node_lock, second_node_on_the_same_database_refused)
{
    const char *dir = nu_tmpdir();
    char a[NU_PATH], st1[NU_PATH], st2[NU_PATH], lock[NU_PATH + 16];
    snprintf(a, sizeof a, "%s/a.db", dir);
    snprintf(st1, sizeof st1, "%s/first.status", dir);
    snprintf(st2, sizeof st2, "%s/second.status", dir);
    snprintf(lock, sizeof lock, "%s.node.lock", a);
    nu_make_db(a);

    tsync_node *n1 = NULL, *n2 = NULL;
    cr_assert_eq(node_new(&n1, a, st1), 0, "first node: %s", th_errmsg());
    struct stat sb;
    cr_assert_eq(stat(lock, &sb), 0, "no lock file %s", lock);
    cr_assert_eq(sb.st_mode & 0777, 0600, "the lock file is %o, not 600", sb.st_mode & 0777);

    int rc = node_new(&n2, a, st2);
    cr_assert_eq(rc, TSYNC_EBUSY, "a second node on the same database: %d (%s)", rc, th_errmsg());
    cr_assert_null(n2);
    char want[NU_PATH + 200];
    snprintf(want, sizeof want, "a node already runs on %s (pid %ld, listening on %s)", a,
             (long)getpid(), tsync_node_endpoint(n1));
    cr_assert(strstr(tsync_error_last()->message, want), "message: %s\nwant: %s",
              tsync_error_last()->message, want);
    cr_assert(strstr(tsync_error_last()->message, "one node per database"), "%s",
              tsync_error_last()->message);
    cr_assert_neq(access(st2, F_OK), 0, "the refused node wrote its status file");
    cr_assert_eq(access(st1, F_OK), 0, "the first node's status file is gone");

    /* The first one goes on; freed, it lets a new node take the database. */
    cr_assert_eq(tsync_node_dispatch(n1), 0);
    tsync_node_free(n1);
    cr_assert_eq(node_new(&n2, a, st2), 0, "a node after the first was freed: %s", th_errmsg());
    tsync_node_free(n2);
}

/* A missing database is still "no database", and leaves no lock file behind. */
Test(node_lock, missing_database_makes_no_lock_file)
{
    const char *dir = nu_tmpdir();
    char a[NU_PATH], lock[NU_PATH + 16];
    snprintf(a, sizeof a, "%s/none.db", dir);
    snprintf(lock, sizeof lock, "%s.node.lock", a);
    tsync_node *n = NULL;
    cr_assert_eq(node_new(&n, a, ""), TSYNC_ENOTFOUND, "%s", th_errmsg());
    cr_assert_neq(access(lock, F_OK), 0, "a lock file for a database that does not exist");
}
