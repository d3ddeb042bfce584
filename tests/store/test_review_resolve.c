/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_review_resolve.c — a review column's conflict (store/policy.c, kind 1) stays
 * open and in the status's attention until a person resolves it (store/conflicts.c), and once
 * resolved on one till, the other till's status no longer counts it after the resolution
 * arrives: review_open counts kind 1 entries without a resolution, not every kind 1 entry.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tillsync/conflicts.h"

TestSuite(review_resolve, .fini = th_cleanup);

static tsync_store *open_till(const char *dir, const char *name)
{
    tsync_store *s = th_open(th_path(dir, name));
    th_exec(s, "CREATE TABLE t(id TEXT PRIMARY KEY, note TEXT)");
    static const tsync_column_policy pol[] = {{"note", TSYNC_POLICY_REVIEW}};
    tsync_replicate_options o = TSYNC_REPLICATE_OPTIONS_INIT;
    o.policies = pol;
    o.npolicies = 1;
    cr_assert_eq(tsync_store_replicate_ext(s, "t", &o), 0, "replicate: %s", th_errmsg());
    return s;
}

static int64_t review_open(tsync_store *s, int *attention)
{
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    cr_assert_eq(tsync_store_status_get(&st, s), 0, "%s", th_errmsg());
    int64_t n = st.review_open;
    *attention = tsync_store_status_attention(&st);
    tsync_store_status_clear(&st);
    return n;
}

Test(review_resolve, a_resolved_review_conflict_leaves_the_status_on_both_tills)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db"), *b = open_till(dir, "b.db");
    th_exec(a, "INSERT INTO t VALUES('r', 'base')");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    th_exec(a, "UPDATE t SET note='from a' WHERE id='r'");
    th_seal(a);
    th_exec(b, "UPDATE t SET note='from b' WHERE id='r'");
    th_seal(b);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    int att;
    cr_assert_eq(review_open(a, &att), 1);
    cr_assert(att, "an open review conflict asks for a person");
    cr_assert_eq(review_open(b, &att), 1);

    int64_t id = th_int(a, "SELECT id FROM tsync_conflicts WHERE kind = 1", -1);
    cr_assert_gt(id, 0);
    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_TAKE_OTHER, NULL), 0, "%s",
                 th_errmsg());
    cr_assert_eq(review_open(a, &att), 0, "resolved here");
    cr_assert_not(att, "nothing else asks for a person on a");
    cr_assert_eq(review_open(b, &att), 1, "b has not heard of the resolution yet");

    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(review_open(b, &att), 0, "the resolution reached b");
    cr_assert_not(att);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a), tsync_store_free(b);
}
