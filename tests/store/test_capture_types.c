/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_capture_types.c — an UPDATE that changes only a value's type (7 to 7.0 in a
 * column without a declared type, 1 to '1'), or only letters' case in a NOCASE column, is a
 * change like any other: it is captured, sealed and reaches the other till, which ends with the
 * same value of the same type (the same content hash). The capture triggers compared with IS NOT,
 * which calls 7 and 7.0 equal and, in a NOCASE column, 'a' and 'A' too: the writing till kept
 * its new value and the others the old one, for good. A database whose triggers an older build
 * made gets the new ones at its next open.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "tests/lib/helpers.h"

TestSuite(capture_types, .fini = th_cleanup);

static tsync_store *open_till(const char *dir, const char *name)
{
    tsync_store *s = th_open(th_path(dir, name));
    th_exec(s, "CREATE TABLE t(id TEXT PRIMARY KEY, v, n TEXT COLLATE NOCASE)");
    cr_assert_eq(tsync_store_replicate(s, "t", NULL, 0), 0, "%s", th_errmsg());
    return s;
}

/* typeof(v)|v|n of row r. */
static char *row(tsync_store *s)
{
    return th_text(s, "SELECT typeof(v) || '|' || v || '|' || n FROM t WHERE id = 'r'");
}

static void step(tsync_store *a, tsync_store *b, const char *sql, const char *want)
{
    th_exec(a, sql);
    cr_assert_gt(th_seal(a), 0, "%s: nothing was sealed", sql);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    TH_AUTO_FREE char *ra = row(a), *rb = row(b);
    cr_assert_str_eq(ra, want, "%s: the writing till has %s", sql, ra);
    cr_assert_str_eq(rb, want, "%s: the other till has %s, the writer %s", sql, rb, ra);
    cr_assert_str_eq(th_hash(a), th_hash(b), "%s", sql);
}

Test(capture_types, a_change_of_type_or_case_alone_reaches_the_other_till)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db"), *b = open_till(dir, "b.db");
    step(a, b, "INSERT INTO t VALUES('r', 7, 'apple')", "integer|7|apple");
    step(a, b, "UPDATE t SET v = 7.0 WHERE id = 'r'", "real|7.0|apple");
    step(a, b, "UPDATE t SET v = '7.0' WHERE id = 'r'", "text|7.0|apple");
    step(a, b, "UPDATE t SET v = CAST('7.0' AS BLOB) WHERE id = 'r'", "blob|7.0|apple");
    step(a, b, "UPDATE t SET n = 'Apple' WHERE id = 'r'", "blob|7.0|Apple");
    tsync_store_free(a), tsync_store_free(b);
}

/* The update trigger as capture version 3 wrote it: IS NOT alone. */
static void make_old_triggers(tsync_store *s)
{
    TH_AUTO_FREE char *sql = th_text(s, "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND "
                                        "sql LIKE '%AFTER UPDATE ON%' AND sql LIKE '%typeof(NEW%'");
    cr_assert_not_null(sql, "no update trigger with the type check");
    TH_AUTO_FREE char *name =
        th_text(s, "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND "
                   "sql LIKE '%AFTER UPDATE ON%' AND sql LIKE '%typeof(NEW%'");
    sqlite3_str *old = sqlite3_str_new(NULL);
    for (const char *p = sql; *p;) {
        const char *c = strstr(p, " COLLATE BINARY OR typeof(NEW.");
        if (!c) {
            sqlite3_str_appendall(old, p);
            break;
        }
        sqlite3_str_append(old, p, (int)(c - p));
        p = strstr(c, " THEN ");
        cr_assert_not_null(p);
    }
    char *old_sql = sqlite3_str_finish(old);
    char *drop = sqlite3_mprintf("DROP TRIGGER \"%w\"", name);
    th_exec(s, drop);
    th_exec(s, old_sql);
    th_exec(s, "UPDATE tsync_meta SET v = 3 WHERE k = 'capture'");
    sqlite3_free(drop);
    sqlite3_free(old_sql);
}

Test(capture_types, a_database_of_an_older_build_gets_the_new_triggers_at_open)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db"), *b = open_till(dir, "b.db");
    step(a, b, "INSERT INTO t VALUES('r', 7, 'apple')", "integer|7|apple");
    make_old_triggers(a);
    th_exec(a, "UPDATE t SET v = 7.0 WHERE id = 'r'");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    TH_AUTO_FREE char *before = row(b);
    cr_assert_str_eq(before, "integer|7|apple", "the old trigger misses it (the defect): %s",
                     before);
    tsync_store_free(a);
    a = th_open(th_path(dir, "a.db"));
    cr_assert_eq(th_int(a, "SELECT v FROM tsync_meta WHERE k = 'capture'", -1), 4);
    step(a, b, "UPDATE t SET v = 8.0 WHERE id = 'r'", "real|8.0|apple");
    step(a, b, "UPDATE t SET v = 8 WHERE id = 'r'", "integer|8|apple");
    tsync_store_free(a), tsync_store_free(b);
}
