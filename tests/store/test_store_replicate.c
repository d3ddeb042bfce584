/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_replicate.c — making tables replicated and opening stores
 * (store/replicate.c, store/store.c, store/keys.c): which schemas are refused and with what
 * message, that a refusal leaves nothing behind, that rows already present are captured, the
 * uuid7() SQL function, the key file's permissions, opening a missing database, and a copied
 * database getting a new site id while the original keeps its own.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/helpers.h"

TestSuite(store_replicate, .fini = th_cleanup);

static void push(tsync_store *from, tsync_store *to)
{
    int rc = th_sync(from, to);
    cr_assert_eq(rc, 0, "merge: %s", th_errmsg());
}

/* What a refused replicate must leave as it was. */
typedef struct {
    int64_t schema, tables, pending, log;
} footprint;

static void footprint_take(tsync_store *s, footprint *f)
{
    f->schema = th_int(s, "SELECT count(*) FROM sqlite_schema", -1);
    f->tables = th_int(s, "SELECT count(*) FROM tsync_tables", -1);
    f->pending = th_int(s, "SELECT count(*) FROM tsync_pending", -1);
    f->log = th_int(s, "SELECT count(*) FROM tsync_log", -1);
}

/* Creates the table with ddl, tries to replicate it and expects code with a one-line message
 * containing each of the needles; then checks nothing was installed and the table still takes
 * writes that are not captured. */
static void expect_refusal(const char *ddl, const char *table, const char *const *counters,
                           size_t ncounters, int code, const char *needle1, const char *needle2)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open(th_path(dir, "x.db"));
    th_exec(s, ddl);
    footprint before, after;
    footprint_take(s, &before);
    tsync_error_clear();
    int rc = tsync_store_replicate(s, table, counters, ncounters);
    cr_assert_eq(rc, code, "%s: got %d (%s), expected %d", ddl, rc, th_errmsg(), code);
    const tsync_error *e = tsync_error_last();
    cr_assert_not_null(e);
    cr_assert_eq(e->code, code);
    cr_assert_null(strchr(e->message, '\n'), "message is not one line");
    cr_assert(strstr(e->message, table) != NULL, "message '%s' does not name table %s", e->message,
              table);
    if (needle1)
        cr_assert(strcasestr(e->message, needle1) != NULL, "message '%s' does not say '%s'",
                  e->message, needle1);
    if (needle2)
        cr_assert(strcasestr(e->message, needle2) != NULL, "message '%s' does not say '%s'",
                  e->message, needle2);
    footprint_take(s, &after);
    cr_assert_eq(after.schema, before.schema, "a refused replicate left triggers or tables");
    cr_assert_eq(after.tables, before.tables);
    cr_assert_eq(after.log, before.log);
    cr_assert_eq(after.pending, before.pending);
    /* The store is still usable: a good table can be replicated right after. */
    th_exec(s, "CREATE TABLE good_after(id TEXT PRIMARY KEY, v TEXT)");
    cr_assert_eq(tsync_store_replicate(s, "good_after", NULL, 0), 0, "%s", th_errmsg());
    tsync_store_free(s);
    th_rmdir(dir);
    free(dir);
}

/* ---------------------------------------------------------------- refusals */

Test(store_replicate, integer_primary_key_rowid_table_is_refused)
{
    expect_refusal("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)", "t", NULL, 0,
                   TSYNC_EUNSUPPORTED, "INTEGER PRIMARY KEY", "uuid7");
    /* The same alias written as a table constraint, and with AUTOINCREMENT. */
    expect_refusal("CREATE TABLE t(id INTEGER, name TEXT, PRIMARY KEY(id))", "t", NULL, 0,
                   TSYNC_EUNSUPPORTED, "INTEGER PRIMARY KEY", NULL);
    expect_refusal("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)", "t", NULL, 0,
                   TSYNC_EUNSUPPORTED, "INTEGER PRIMARY KEY", NULL);
}

Test(store_replicate, table_without_primary_key_is_refused)
{
    expect_refusal("CREATE TABLE t(id TEXT, name TEXT)", "t", NULL, 0, TSYNC_EUNSUPPORTED,
                   "no primary key", NULL);
}

Test(store_replicate, not_null_without_default_is_refused)
{
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT NOT NULL)", "t", NULL, 0,
                   TSYNC_EUNSUPPORTED, "NOT NULL", "name");
}

Test(store_replicate, unique_constraint_is_refused)
{
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, barcode TEXT UNIQUE)", "t", NULL, 0,
                   TSYNC_EUNSUPPORTED, "UNIQUE", NULL);
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, b TEXT, UNIQUE(a, b))", "t", NULL,
                   0, TSYNC_EUNSUPPORTED, "UNIQUE", NULL);
}

Test(store_replicate, foreign_key_is_refused)
{
    expect_refusal("CREATE TABLE parent(id TEXT PRIMARY KEY); "
                   "CREATE TABLE t(id TEXT PRIMARY KEY, parent TEXT REFERENCES parent(id))",
                   "t", NULL, 0, TSYNC_EUNSUPPORTED, "FOREIGN KEY", NULL);
}

Test(store_replicate, check_constraint_is_refused)
{
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, price INTEGER CHECK (price >= 0))", "t",
                   NULL, 0, TSYNC_EUNSUPPORTED, "CHECK", NULL);
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, lo INTEGER, hi INTEGER, "
                   "CONSTRAINT ordered check(lo <= hi))",
                   "t", NULL, 0, TSYNC_EUNSUPPORTED, "CHECK", NULL);
}

Test(store_replicate, generated_column_is_refused)
{
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, price INTEGER, "
                   "gross INTEGER GENERATED ALWAYS AS (price * 2) VIRTUAL)",
                   "t", NULL, 0, TSYNC_EUNSUPPORTED, "generated", "gross");
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, price INTEGER, "
                   "gross INTEGER AS (price * 2) STORED)",
                   "t", NULL, 0, TSYNC_EUNSUPPORTED, "generated", "gross");
}

Test(store_replicate, counter_on_a_text_column_is_refused)
{
    const char *ctr[] = {"label"};
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, label TEXT)", "t", ctr, 1,
                   TSYNC_EUNSUPPORTED, "label", "INTEGER");
    /* A column without a declared type is not an integer column either. */
    const char *ctr2[] = {"any"};
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, \"any\")", "t", ctr2, 1, TSYNC_EUNSUPPORTED,
                   "any", "INTEGER");
}

Test(store_replicate, counter_on_a_key_column_is_refused)
{
    const char *ctr[] = {"n"};
    expect_refusal("CREATE TABLE t(n INTEGER, site TEXT, qty INTEGER, PRIMARY KEY(site, n))", "t",
                   ctr, 1, TSYNC_EUNSUPPORTED, "key", "n");
}

Test(store_replicate, counter_on_an_unknown_column_is_refused)
{
    const char *ctr[] = {"nope"};
    expect_refusal("CREATE TABLE t(id TEXT PRIMARY KEY, qty INTEGER)", "t", ctr, 1, TSYNC_ENOTFOUND,
                   "nope", NULL);
}

Test(store_replicate, too_many_key_or_table_columns_are_refused)
{
    expect_refusal("CREATE TABLE t(a TEXT, b TEXT, c TEXT, d TEXT, e TEXT, "
                   "PRIMARY KEY(a, b, c, d, e))",
                   "t", NULL, 0, TSYNC_EUNSUPPORTED, "key", NULL);
    char ddl[2048];
    int o = snprintf(ddl, sizeof ddl, "CREATE TABLE t(id TEXT PRIMARY KEY");
    for (int i = 1; i < 64; i++) o += snprintf(ddl + o, sizeof ddl - (size_t)o, ", c%d TEXT", i);
    snprintf(ddl + o, sizeof ddl - (size_t)o, ")");
    expect_refusal(ddl, "t", NULL, 0, TSYNC_EUNSUPPORTED, "columns", NULL);
}

Test(store_replicate, unknown_table_is_refused)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open(th_path(dir, "x.db"));
    tsync_error_clear();
    cr_assert_eq(tsync_store_replicate(s, "no_such_table", NULL, 0), TSYNC_ENOTFOUND);
    cr_assert(strstr(th_errmsg(), "no_such_table") != NULL, "message: %s", th_errmsg());
    /* A view is not a table. */
    th_exec(s, "CREATE TABLE base(id TEXT PRIMARY KEY); CREATE VIEW v AS SELECT * FROM base");
    cr_assert_eq(tsync_store_replicate(s, "v", NULL, 0), TSYNC_ENOTFOUND);
    /* The store's own tables are not the app's to replicate. */
    cr_assert_eq(tsync_store_replicate(s, "tsync_log", NULL, 0), TSYNC_EINVAL);
    cr_assert_eq(tsync_store_replicate(s, "", NULL, 0), TSYNC_EINVAL);
    cr_assert_eq(tsync_store_replicate(s, NULL, NULL, 0), TSYNC_EINVAL);
    tsync_store_free(s);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, already_replicated_is_refused)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open_products(th_path(dir, "x.db"));
    footprint before, after;
    footprint_take(s, &before);
    const char *ctr[] = {"stock"};
    tsync_error_clear();
    cr_assert_eq(tsync_store_replicate(s, "products", ctr, 1), TSYNC_EEXISTS);
    cr_assert(strstr(th_errmsg(), "products") && strstr(th_errmsg(), "already"), "message: %s",
              th_errmsg());
    footprint_take(s, &after);
    cr_assert_eq(after.schema, before.schema);
    cr_assert_eq(after.tables, before.tables);
    /* Still captured once, not twice. */
    th_exec(s, "INSERT INTO products VALUES('p1', 'apple', 1, 1)");
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_pending", -1), 1);
    /* And after reopening, the store knows it too. */
    tsync_store_free(s);
    s = th_open(th_path(dir, "x.db"));
    cr_assert_eq(tsync_store_replicate(s, "products", ctr, 1), TSYNC_EEXISTS);
    tsync_store_free(s);
    th_rmdir(dir);
    free(dir);
}

/* ---------------------------------------------------------------- accepted shapes */

Test(store_replicate, words_that_only_look_like_constraints_are_accepted)
{
    /* Column names and defaults containing the words are not constraints. */
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open(th_path(dir, "x.db"));
    th_exec(s, "CREATE TABLE t(id TEXT PRIMARY KEY, checked INTEGER DEFAULT 0, "
               "\"check\" TEXT DEFAULT 'check (me)', unique_code TEXT, "
               "note TEXT NOT NULL DEFAULT 'not null')");
    cr_assert_eq(tsync_store_replicate(s, "t", NULL, 0), 0, "%s", th_errmsg());
    /* An INTEGER PRIMARY KEY in a WITHOUT ROWID table is a real key, and DESC makes it one in a
     * rowid table too (a quirk of SQLite). */
    th_exec(s, "CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID");
    cr_assert_eq(tsync_store_replicate(s, "w", NULL, 0), 0, "%s", th_errmsg());
    th_exec(s, "CREATE TABLE d(id INTEGER PRIMARY KEY DESC, v TEXT)");
    cr_assert_eq(tsync_store_replicate(s, "d", NULL, 0), 0, "%s", th_errmsg());
    /* An ordinary (non-unique) index is fine. */
    th_exec(s, "CREATE TABLE i(id TEXT PRIMARY KEY, v TEXT); CREATE INDEX i_v ON i(v)");
    cr_assert_eq(tsync_store_replicate(s, "i", NULL, 0), 0, "%s", th_errmsg());
    tsync_store_free(s);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, check_word_in_a_comment_is_not_a_check_constraint)
{
    /* SQLite keeps comments in the stored CREATE TABLE text; a comment is not a constraint. */
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open(th_path(dir, "x.db"));
    th_exec(s, "CREATE TABLE t(id TEXT PRIMARY KEY, -- check (with the supplier)\n"
               "price INTEGER)");
    int rc = tsync_store_replicate(s, "t", NULL, 0);
    cr_assert_eq(rc, 0, "refused: %s", th_errmsg());
    tsync_store_free(s);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, unique_index_cannot_break_a_merge)
{
    /* A UNIQUE index created separately is the same problem as a UNIQUE constraint: two tills
     * can each insert a row with the same barcode. Either replicate refuses it, or a merge that
     * meets it must still succeed (a validly signed batch is never refused for local reasons). */
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(dir, "a.db"));
    tsync_store *b = th_open(th_path(dir, "b.db"));
    tsync_store *both[2] = {a, b};
    int refused = 0;
    for (int i = 0; i < 2; i++) {
        th_exec(both[i], "CREATE TABLE items(id TEXT PRIMARY KEY, barcode TEXT); "
                         "CREATE UNIQUE INDEX items_barcode ON items(barcode)");
        int rc = tsync_store_replicate(both[i], "items", NULL, 0);
        if (rc == TSYNC_EUNSUPPORTED) {
            cr_assert(strstr(th_errmsg(), "UNIQUE") != NULL, "message: %s", th_errmsg());
            refused = 1;
        } else {
            cr_assert_eq(rc, 0, "%s", th_errmsg());
        }
    }
    if (!refused) {
        th_exec(a, "INSERT INTO items VALUES('i-a', '4006381333931')");
        th_exec(b, "INSERT INTO items VALUES('i-b', '4006381333931')");
        th_seal(a);
        th_seal(b);
        int rc = th_sync(a, b);
        cr_assert_eq(rc, 0, "a merge failed on a local UNIQUE index: %s", th_errmsg());
    }
    tsync_store_free(a);
    tsync_store_free(b);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, existing_rows_are_captured_and_sync)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(dir, "a.db"));
    tsync_store *b = th_open(th_path(dir, "b.db"));
    const char *ddl = "CREATE TABLE stock(sku TEXT PRIMARY KEY, name TEXT, qty INTEGER NOT NULL "
                      "DEFAULT 0)";
    th_exec(a, ddl);
    th_exec(b, ddl);
    th_exec(a, "INSERT INTO stock VALUES('s1', 'one', 10), ('s2', 'two', 20), ('s3', NULL, 0)");
    const char *ctr[] = {"qty"};
    cr_assert_eq(tsync_store_replicate(a, "stock", ctr, 1), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_replicate(b, "stock", ctr, 1), 0, "%s", th_errmsg());
    /* replicate seals what it recorded. */
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_log", -1), 1);
    cr_assert_eq(th_seal(a), 0);
    push(a, b);
    char *got = th_text(b, "SELECT group_concat(sku || ':' || ifnull(name, '-') || ':' || qty, "
                           "',') FROM (SELECT * FROM stock ORDER BY sku)");
    cr_assert(got && strcmp(got, "s1:one:10,s2:two:20,s3:-:0") == 0, "peer: %s",
              got ? got : "(none)");
    free(got);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    /* The recorded counters are the starting values: sales on both sides count from them. */
    th_exec(a, "UPDATE stock SET qty = qty - 1 WHERE sku='s1'");
    th_exec(b, "UPDATE stock SET qty = qty - 2 WHERE sku='s1'");
    push(a, b);
    push(b, a);
    cr_assert_eq(th_int(a, "SELECT qty FROM stock WHERE sku='s1'", -1), 7);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, quoted_table_and_column_names_work)
{
    /* Names with spaces and both kinds of quotes must survive trigger and statement building. */
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(dir, "a.db"));
    tsync_store *b = th_open(th_path(dir, "b.db"));
    const char *ddl = "CREATE TABLE \"odd \"\"table\"\" 'x'\"(\"key col\" TEXT PRIMARY KEY, "
                      "\"we\"\"ird\" TEXT, \"it's\" INTEGER NOT NULL DEFAULT 0)";
    const char *name = "odd \"table\" 'x'";
    const char *ctr[] = {"it's"};
    th_exec(a, ddl);
    th_exec(b, ddl);
    cr_assert_eq(tsync_store_replicate(a, name, ctr, 1), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_replicate(b, name, ctr, 1), 0, "%s", th_errmsg());
    th_exec(a, "INSERT INTO \"odd \"\"table\"\" 'x'\" VALUES('k1', 'v1', 5), ('k2', 'v2', 6)");
    th_exec(a, "UPDATE \"odd \"\"table\"\" 'x'\" SET \"we\"\"ird\" = 'v1b', \"it's\" = 4 "
               "WHERE \"key col\" = 'k1'");
    th_exec(a, "UPDATE \"odd \"\"table\"\" 'x'\" SET \"key col\" = 'k3' WHERE \"key col\" = 'k2'");
    push(a, b);
    char *got = th_text(b, "SELECT group_concat(\"key col\" || ':' || \"we\"\"ird\" || ':' || "
                           "\"it's\", ',') FROM (SELECT * FROM \"odd \"\"table\"\" 'x'\" ORDER "
                           "BY 1)");
    cr_assert(got && strcmp(got, "k1:v1b:4,k3:v2:6") == 0, "peer: %s", got ? got : "(none)");
    free(got);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, table_with_the_maximum_number_of_columns_syncs)
{
    /* 63 columns, key included: every column bit of the change masks is used. */
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(dir, "a.db"));
    tsync_store *b = th_open(th_path(dir, "b.db"));
    char ddl[2048], ins[4096];
    int o = snprintf(ddl, sizeof ddl, "CREATE TABLE wide(id TEXT PRIMARY KEY");
    for (int i = 1; i < 63; i++) o += snprintf(ddl + o, sizeof ddl - (size_t)o, ", c%d INTEGER", i);
    snprintf(ddl + o, sizeof ddl - (size_t)o, ")");
    th_exec(a, ddl);
    th_exec(b, ddl);
    cr_assert_eq(tsync_store_replicate(a, "wide", NULL, 0), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_replicate(b, "wide", NULL, 0), 0, "%s", th_errmsg());
    o = snprintf(ins, sizeof ins, "INSERT INTO wide VALUES('w'");
    for (int i = 1; i < 63; i++) o += snprintf(ins + o, sizeof ins - (size_t)o, ", %d", i);
    snprintf(ins + o, sizeof ins - (size_t)o, ")");
    th_exec(a, ins);
    push(a, b);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    /* Changing only the last column travels. */
    th_exec(a, "UPDATE wide SET c62 = 6200");
    push(a, b);
    cr_assert_eq(th_int(b, "SELECT c62 FROM wide", -1), 6200);
    cr_assert_eq(th_int(b, "SELECT c61 FROM wide", -1), 61);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
    th_rmdir(dir);
    free(dir);
}

/* ---------------------------------------------------------------- uuid7() */

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

Test(store_replicate, uuid7_returns_increasing_version_7_uuids)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open(th_path(dir, "x.db"));
    char *prev = NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t t0 = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 0; i < 20; i++) {
        char *u = th_text(s, "SELECT uuid7()");
        cr_assert_not_null(u);
        cr_assert_eq(strlen(u), 36, "%s", u);
        for (int k = 0; k < 36; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                cr_assert_eq(u[k], '-', "%s", u);
            else
                cr_assert(is_hex(u[k]), "%s: not lower-case hex at %d", u, k);
        }
        cr_assert_eq(u[14], '7', "%s: not version 7", u);
        cr_assert(strchr("89ab", u[19]) != NULL, "%s: not the RFC 9562 variant", u);
        /* The first 48 bits are the Unix time in ms. */
        char ms_hex[13];
        memcpy(ms_hex, u, 8);
        memcpy(ms_hex + 8, u + 9, 4);
        ms_hex[12] = 0;
        uint64_t ms = strtoull(ms_hex, NULL, 16);
        cr_assert(ms + 1000 >= t0 && ms <= t0 + 60000, "%s: time %llu far from %llu", u,
                  (unsigned long long)ms, (unsigned long long)t0);
        if (prev) cr_assert_gt(strcmp(u, prev), 0, "%s does not sort after %s", u, prev);
        free(prev);
        prev = u;
        struct timespec d = {0, 2 * 1000000L};
        nanosleep(&d, NULL);
    }
    free(prev);
    /* Distinct within one statement, and usable as a key default. */
    cr_assert_eq(th_int(s,
                        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE "
                        "i < 1000) SELECT count(DISTINCT uuid7()) FROM n",
                        -1),
                 1000);
    th_exec(s, "CREATE TABLE t(id TEXT PRIMARY KEY DEFAULT (uuid7()), v TEXT)");
    cr_assert_eq(tsync_store_replicate(s, "t", NULL, 0), 0, "%s", th_errmsg());
    th_exec(s, "INSERT INTO t(v) VALUES('a'), ('b')");
    cr_assert_eq(th_int(s, "SELECT count(DISTINCT id) FROM t WHERE length(id) = 36", -1), 2);
    tsync_store_free(s);
    th_rmdir(dir);
    free(dir);
}

/* ---------------------------------------------------------------- key file and opening */

Test(store_replicate, key_file_is_created_0600_and_a_readable_one_is_refused)
{
    char *dir = th_tmpdir_auto();
    const char *db = th_path(dir, "x.db");
    char key[4096];
    snprintf(key, sizeof key, "%s.key", db);
    mode_t old = umask(0); /* the file must be 0600 whatever the umask */
    tsync_store *s = th_open(db);
    umask(old);
    struct stat sb;
    cr_assert_eq(stat(key, &sb), 0, "no key file %s", key);
    cr_assert_eq(sb.st_mode & 0777, 0600, "key file mode %o", sb.st_mode & 0777);
    tsync_store_free(s);

    static const mode_t bad[] = {0644, 0640, 0604, 0660};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(chmod(key, bad[i]), 0);
        tsync_store *t = NULL;
        tsync_error_clear();
        int rc = tsync_store_open(&t, db, NULL);
        cr_assert_eq(rc, TSYNC_EINVAL, "mode %o: rc %d", bad[i], rc);
        cr_assert_null(t);
        cr_assert(strstr(th_errmsg(), key) != NULL, "message does not name the key file: %s",
                  th_errmsg());
        cr_assert(strstr(th_errmsg(), "readable") != NULL, "message: %s", th_errmsg());
    }
    /* Fixing the mode fixes the store. */
    cr_assert_eq(chmod(key, 0600), 0);
    tsync_store *t = NULL;
    cr_assert_eq(tsync_store_open(&t, db, NULL), 0, "%s", th_errmsg());
    tsync_store_free(t);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, damaged_or_missing_key_file_is_reported)
{
    char *dir = th_tmpdir_auto();
    const char *db = th_path(dir, "x.db");
    char key[4096];
    snprintf(key, sizeof key, "%s.key", db);
    tsync_store_free(th_open(db));

    /* Truncated. */
    cr_assert_eq(truncate(key, 100), 0);
    tsync_store *t = NULL;
    int rc = tsync_store_open(&t, db, NULL);
    cr_assert_eq(rc, TSYNC_ECORRUPT, "rc %d: %s", rc, th_errmsg());
    cr_assert(strstr(th_errmsg(), key) != NULL, "message: %s", th_errmsg());
    /* Missing, and not asked to create. */
    cr_assert_eq(unlink(key), 0);
    rc = tsync_store_open(&t, db, NULL);
    cr_assert_eq(rc, TSYNC_ENOTFOUND, "rc %d: %s", rc, th_errmsg());
    cr_assert(strstr(th_errmsg(), key) != NULL, "message: %s", th_errmsg());
    cr_assert_null(t);
    th_rmdir(dir);
    free(dir);
}

Test(store_replicate, missing_database_without_create_is_not_found)
{
    char *dir = th_tmpdir_auto();
    const char *db = th_path(dir, "nowhere.db");
    tsync_store *s = NULL;
    tsync_error_clear();
    int rc = tsync_store_open(&s, db, NULL);
    cr_assert_eq(rc, TSYNC_ENOTFOUND);
    cr_assert_null(s);
    cr_assert(strstr(th_errmsg(), db) != NULL, "message does not name the file: %s", th_errmsg());
    cr_assert_null(strchr(th_errmsg(), '\n'));
    /* And nothing was created on the way. */
    struct stat sb;
    cr_assert_neq(stat(db, &sb), 0, "the database was created");
    char key[4096];
    snprintf(key, sizeof key, "%s.key", db);
    cr_assert_neq(stat(key, &sb), 0, "a key file was created");
    /* The same with explicit options. */
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    cr_assert_eq(tsync_store_open(&s, db, &o), TSYNC_ENOTFOUND);
    th_rmdir(dir);
    free(dir);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    cr_assert_not_null(in, "open %s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    cr_assert_not_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

static char *state_field(tsync_store *s, const char *field)
{
    char *js = NULL;
    cr_assert_eq(tsync_store_state_json(&js, s), 0);
    json_error_t je;
    json_t *o = json_loads(js, 0, &je);
    free(js);
    char *v = strdup(json_string_value(json_object_get(o, field)));
    json_decref(o);
    return v;
}

Test(store_replicate, copied_database_gets_a_new_site_id)
{
    char *dir = th_tmpdir_auto();
    const char *orig = th_path(dir, "a.db");
    tsync_store *a = th_open_products(orig);
    th_exec(a, "INSERT INTO products VALUES('p1', 'apple', 100, 10)");
    th_seal(a);
    uint8_t site[TSYNC_SITE_ID_BYTES];
    memcpy(site, tsync_store_site_id(a), sizeof site);
    char *pk = state_field(a, "public_key"), *inc = state_field(a, "incarnation");
    th_exec(a, "PRAGMA wal_checkpoint(TRUNCATE)");
    tsync_store_free(a);

    /* A cloned till image: the database and its key file, copied to another folder. */
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/copy", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    char copy[4200], key_from[4200], key_to[4300];
    snprintf(copy, sizeof copy, "%s/a.db", sub);
    snprintf(key_from, sizeof key_from, "%s.key", orig);
    snprintf(key_to, sizeof key_to, "%s.key", copy);
    copy_file(orig, copy);
    copy_file(key_from, key_to);
    cr_assert_eq(chmod(key_to, 0600), 0);

    tsync_store *c = th_open(copy);
    cr_assert(memcmp(tsync_store_site_id(c), site, sizeof site) != 0,
              "the copy kept the original's site id");
    char *cpk = state_field(c, "public_key"), *cinc = state_field(c, "incarnation");
    cr_assert_str_eq(cpk, pk, "the copy has the same device key");
    cr_assert_str_neq(cinc, inc, "the copy's incarnation was not renewed");
    /* The renewal is persisted: reopening the copy keeps its new id. */
    uint8_t csite[TSYNC_SITE_ID_BYTES];
    memcpy(csite, tsync_store_site_id(c), sizeof csite);
    tsync_store_free(c);
    c = th_open(copy);
    cr_assert_eq(memcmp(tsync_store_site_id(c), csite, sizeof csite), 0);
    struct stat sb;
    cr_assert_eq(stat(key_to, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);

    /* The original keeps its identity. */
    a = th_open(orig);
    cr_assert_eq(memcmp(tsync_store_site_id(a), site, sizeof site), 0,
                 "the original's site id changed");

    /* Both go on writing; their batches never collide: no fork, both converge. */
    th_exec(a, "UPDATE products SET stock = stock - 1 WHERE id='p1'");
    th_exec(c, "UPDATE products SET stock = stock - 2 WHERE id='p1'");
    th_exec(c, "INSERT INTO products VALUES('c1', 'from the copy', 1, 1)");
    push(a, c);
    push(c, a);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_forks", -1), 0);
    cr_assert_eq(th_int(c, "SELECT count(*) FROM tsync_forks", -1), 0);
    cr_assert_eq(th_int(a, "SELECT stock FROM products WHERE id='p1'", -1), 7);
    cr_assert_str_eq(th_hash(a), th_hash(c));
    free(pk), free(inc), free(cpk), free(cinc);
    tsync_store_free(a);
    tsync_store_free(c);
    th_rmdir(dir);
    free(dir);
}
