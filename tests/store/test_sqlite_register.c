/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_sqlite_register.c — tsync_sqlite_register (tillsync/sqlite.h) on a connection
 * the app opened with plain sqlite3_open: uuid7() in a DEFAULT, tillsync_replicate, writes,
 * tillsync_seal, tillsync_hash equal to tsync_store_hash of the same database opened with
 * tsync_store_open, the tables tillsync_conflicts and tillsync_status, errors as SQL errors
 * carrying tillsync's message, what runs inside an app's transaction, and a plain sqlite3_close
 * of the app's connection afterwards (nothing of tillsync left on it). And the loadable module
 * tillsync.so (TSYNC_SQLITE_EXT, from the build): loaded by sqlite3_load_extension, and refusing
 * a host with another SQLite than the one it calls.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <sodium.h>
/* For the type sqlite3_api_routines only: SQLITE_CORE keeps sqlite3ext.h from turning this file's
 * sqlite3_* calls into calls through a table of routines. */
#define SQLITE_CORE 1
#include <sqlite3ext.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tillsync/tillsync.h"

static char *g_dir;

static void setup(void)
{
    g_dir = th_tmpdir_auto();
}

TestSuite(sqlite_register, .init = setup, .fini = th_cleanup);

/* A tillsync database (and its key file) made as `tillsync init` makes one, then closed. */
static const char *new_db(const char *name)
{
    const char *path = th_path(g_dir, name);
    tsync_store_free(th_open(path));
    return path;
}

/* The app's own connection, with tillsync's functions registered. */
static sqlite3 *app_open(const char *path, int flags)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK, "open %s", path);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(tsync_sqlite_register(db), 0, "register: %s", tsync_error_last()->message);
    return db;
}

static void app_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, err ? err : "?");
}

/* The first column of the first row, as text (NULL for NULL or no row); the caller frees. On an
 * SQL error, *err (when given) receives SQLite's message, else the test fails. */
static char *app_text_err(sqlite3 *db, const char *sql, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    char *out = NULL;
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        out = strdup((const char *)sqlite3_column_text(st, 0));
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        cr_assert(err, "%s: %s", sql, sqlite3_errmsg(db));
        *err = strdup(sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return out;
}

static char *app_text(sqlite3 *db, const char *sql)
{
    return app_text_err(db, sql, NULL);
}

static int64_t app_int(sqlite3 *db, const char *sql)
{
    char *t = app_text(db, sql);
    cr_assert(t, "%s: no value", sql);
    int64_t v = strtoll(t, NULL, 10);
    free(t);
    return v;
}

/* The SQL error a statement fails with; the test fails if it succeeds. Caller frees. */
static char *app_error(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    free(app_text_err(db, sql, &err));
    cr_assert(err, "%s: succeeded, an error was expected", sql);
    return err;
}

static const char *store_hash(const char *path, const char *table)
{
    tsync_store *s = th_open(path);
    static char hex[2 * TSYNC_HASH_BYTES + 1];
    uint8_t h[TSYNC_HASH_BYTES];
    cr_assert_eq(tsync_store_hash(h, s, table), 0, "hash: %s", tsync_error_last()->message);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    tsync_store_free(s);
    return hex;
}

#define RW (SQLITE_OPEN_READWRITE)

Test(sqlite_register, uuid7_default_needs_registering)
{
    const char *path = new_db("u.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    app_exec(db, "CREATE TABLE t(id TEXT PRIMARY KEY DEFAULT (uuid7()), v TEXT)");
    /* The README's DEFAULT (uuid7()) on a connection tillsync did not open: */
    char *err = app_error(db, "INSERT INTO t(v) VALUES ('x')");
    cr_assert(strstr(err, "uuid7"), "%s", err);
    free(err);
    cr_assert_eq(tsync_sqlite_register(db), 0);
    app_exec(db, "INSERT INTO t(v) VALUES ('x'), ('y')");
    cr_assert_eq(app_int(db, "SELECT count(*) FROM t WHERE id GLOB "
                             "'[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-"
                             "[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-7[0-9a-f][0-9a-f][0-9a-f]-*' "
                             "AND length(id) = 36"),
                 2);
    cr_assert_eq(app_int(db, "SELECT count(DISTINCT id) FROM t"), 2);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

Test(sqlite_register, replicate_write_seal_hash)
{
    const char *path = new_db("a.db");
    sqlite3 *db = app_open(path, RW);
    app_exec(db, "CREATE TABLE products(id TEXT PRIMARY KEY DEFAULT (uuid7()), name TEXT, "
                 "stock INTEGER NOT NULL DEFAULT 0)");
    cr_assert_eq(app_int(db, "SELECT tillsync_replicate('products', 'stock')"), 1);
    app_exec(db, "INSERT INTO products(name, stock) VALUES ('tea', 5), ('coffee', 2)");
    app_exec(db, "UPDATE products SET stock = stock - 1 WHERE name = 'tea'");
    cr_assert_eq(app_int(db, "SELECT unsealed FROM tillsync_status"), 3);
    cr_assert_eq(app_int(db, "SELECT tillsync_seal()"), 1);
    cr_assert_eq(app_int(db, "SELECT tillsync_seal()"), 0, "nothing left to seal");
    cr_assert_eq(app_int(db, "SELECT unsealed FROM tillsync_status"), 0);

    char *all = app_text(db, "SELECT tillsync_hash()");
    char *one = app_text(db, "SELECT tillsync_hash('products')");
    cr_assert_str_eq(all, store_hash(path, NULL));
    cr_assert_str_eq(one, store_hash(path, "products"));
    free(all);
    free(one);

    /* The batch is in the log: a store opened on the file sees the rows and its own sealed log. */
    tsync_store *s = th_open(path);
    cr_assert_geq(th_check_log(s, tsync_store_site_id(s), "a", 1, NULL, NULL), 1);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM products", 0), 2);
    tsync_store_free(s);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK, "nothing of tillsync stays on the connection");
}

Test(sqlite_register, writes_reach_another_replica)
{
    const char *pa = new_db("a.db"), *pb = th_path(g_dir, "b.db");
    sqlite3 *db = app_open(pa, RW);
    app_exec(db, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, "
                 "stock INTEGER NOT NULL DEFAULT 0)");
    cr_assert_eq(app_int(db, "SELECT tillsync_replicate('products', 'stock')"), 1);
    app_exec(db, "INSERT INTO products VALUES ('p1', 'tea', 3, 10)");
    cr_assert_eq(app_int(db, "SELECT tillsync_seal()"), 1);
    tsync_store *a = th_open(pa), *b = th_open_products(pb);
    cr_assert_eq(th_sync(a, b), 0);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    char *h = app_text(db, "SELECT tillsync_hash()");
    cr_assert_str_eq(h, th_hash(b));
    free(h);
    tsync_store_free(a);
    tsync_store_free(b);
    sqlite3_close(db);
}

Test(sqlite_register, errors_are_sql_errors)
{
    const char *path = new_db("e.db");
    sqlite3 *db = app_open(path, RW);
    app_exec(db, "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT)");
    char *err = app_error(db, "SELECT tillsync_replicate('nope')");
    cr_assert(strstr(err, "nope"), "names the table: %s", err);
    free(err);
    /* The message is tillsync's own, as tsync_error_last() has it. */
    cr_assert_eq(app_int(db, "SELECT tillsync_replicate('t')"), 1);
    err = app_error(db, "SELECT tillsync_replicate('t')");
    cr_assert_str_eq(err, tsync_error_last()->message);
    cr_assert_eq(tsync_error_last()->code, TSYNC_EEXISTS);
    free(err);
    err = app_error(db, "SELECT tillsync_replicate(42)");
    cr_assert(strstr(err, "name of a table"), "%s", err);
    free(err);
    err = app_error(db, "SELECT tillsync_replicate('t', 7)");
    cr_assert(strstr(err, "counter"), "%s", err);
    free(err);
    err = app_error(db, "SELECT tillsync_hash('not_replicated')");
    cr_assert(strstr(err, "not_replicated") && strstr(err, "not replicated"), "%s", err);
    free(err);
    /* Writers never from a trigger or a view (SQLITE_DIRECTONLY). */
    app_exec(db, "CREATE VIEW sealer AS SELECT tillsync_seal() AS n");
    err = app_error(db, "SELECT n FROM sealer");
    cr_assert(strstr(err, "tillsync_seal"), "%s", err);
    free(err);
    sqlite3_close(db);

    /* A database without a key file: the error of tsync_store_open, on first use. */
    const char *bare = th_path(g_dir, "bare.db");
    db = app_open(bare, RW | SQLITE_OPEN_CREATE);
    app_exec(db, "CREATE TABLE t(id TEXT PRIMARY KEY)");
    err = app_error(db, "SELECT tillsync_seal()");
    cr_assert(strstr(err, "bare.db.key"), "names the key file: %s", err);
    free(err);
    sqlite3_close(db);

    /* In memory: no file to find a key beside. */
    db = app_open(":memory:", RW);
    err = app_error(db, "SELECT tillsync_hash()");
    cr_assert(strstr(err, "not a file"), "%s", err);
    free(err);
    err = app_error(db, "SELECT * FROM tillsync_status");
    cr_assert(strstr(err, "tillsync_status") && strstr(err, "not a file"), "%s", err);
    free(err);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
    cr_assert_eq(tsync_sqlite_register(NULL), TSYNC_EINVAL);
}

Test(sqlite_register, inside_an_app_transaction)
{
    const char *path = new_db("x.db");
    sqlite3 *db = app_open(path, RW);
    app_exec(db, "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT)");
    cr_assert_eq(app_int(db, "SELECT tillsync_replicate('t')"), 1);
    app_exec(db, "INSERT INTO t VALUES ('k0', 'committed')");
    cr_assert_eq(app_int(db, "SELECT tillsync_seal()"), 1);
    char *before = app_text(db, "SELECT tillsync_hash()");

    app_exec(db, "BEGIN");
    app_exec(db, "INSERT INTO t VALUES ('k1', 'open')");
    /* Writers refuse at once (no busy wait), and the app's transaction stays as it was. */
    char *err = app_error(db, "SELECT tillsync_seal()");
    cr_assert(strstr(err, "transaction open"), "%s", err);
    free(err);
    err = app_error(db, "SELECT tillsync_replicate('t')");
    cr_assert(strstr(err, "transaction open"), "%s", err);
    free(err);
    cr_assert_eq(sqlite3_get_autocommit(db), 0, "still in the app's transaction");
    cr_assert_eq(app_int(db, "SELECT count(*) FROM t"), 2);
    /* Reads run, and see what is committed: not the app's open write. */
    char *inside = app_text(db, "SELECT tillsync_hash()");
    cr_assert_str_eq(inside, before);
    free(inside);
    cr_assert_eq(app_int(db, "SELECT unsealed FROM tillsync_status"), 0);
    cr_assert_eq(app_int(db, "SELECT count(*) FROM tillsync_conflicts"), 0);
    app_exec(db, "COMMIT");
    cr_assert_eq(app_int(db, "SELECT unsealed FROM tillsync_status"), 1);
    cr_assert_eq(app_int(db, "SELECT tillsync_seal()"), 1);
    char *after = app_text(db, "SELECT tillsync_hash()");
    cr_assert_str_neq(after, before);
    cr_assert_str_eq(after, store_hash(path, NULL));
    free(after);
    free(before);

    /* A rollback after sealing leaves the batch: it committed on its own. */
    app_exec(db, "INSERT INTO t VALUES ('k2', 'x')");
    cr_assert_eq(app_int(db, "SELECT tillsync_seal()"), 1);
    app_exec(db, "BEGIN; DELETE FROM t; ROLLBACK");
    cr_assert_eq(app_int(db, "SELECT count(*) FROM t"), 3);
    cr_assert_eq(app_int(db, "SELECT unsealed FROM tillsync_status"), 0);
    sqlite3_close(db);

    /* First use inside a write transaction: refused with a message, not a busy wait. */
    db = app_open(path, RW);
    app_exec(db, "BEGIN IMMEDIATE");
    err = app_error(db, "SELECT tillsync_hash()");
    cr_assert(strstr(err, "first use"), "%s", err);
    free(err);
    app_exec(db, "ROLLBACK");
    sqlite3_close(db);
}

Test(sqlite_register, conflicts_and_status_tables)
{
    const char *pa = th_path(g_dir, "a.db"), *pb = th_path(g_dir, "b.db");
    tsync_store *a = th_open_products(pa), *b = th_open_products(pb);
    th_exec(a, "INSERT INTO products VALUES ('p1', 'tea', 1, 0)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0);
    th_exec(a, "UPDATE products SET name = 'green tea' WHERE id = 'p1'");
    th_exec(b, "UPDATE products SET name = 'black tea' WHERE id = 'p1'");
    th_seal(a);
    th_seal(b);
    cr_assert_eq(th_sync(a, b), 0);
    char sa[2 * TSYNC_SITE_ID_BYTES + 1], sb[2 * TSYNC_SITE_ID_BYTES + 1];
    sodium_bin2hex(sa, sizeof sa, tsync_store_site_id(a), TSYNC_SITE_ID_BYTES);
    sodium_bin2hex(sb, sizeof sb, tsync_store_site_id(b), TSYNC_SITE_ID_BYTES);
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    cr_assert_eq(tsync_store_status_get(&st, b), 0);
    tsync_store_free(a);
    tsync_store_free(b);

    sqlite3 *db = app_open(pb, RW);
    cr_assert_eq(app_int(db, "SELECT count(*) FROM tillsync_conflicts"), 1);
    char *row = app_text(db, "SELECT typeof(id) || ' ' || typeof(at_ms) || ' ' || table_name || "
                             "' ' || column_name || ' ' || typeof(winner_hlc) || ' ' || "
                             "typeof(loser_hlc) "
                             "FROM tillsync_conflicts");
    cr_assert_str_eq(row, "integer integer products name integer integer");
    free(row);
    /* The values and sites of both writes, the sites as hex like the JSON. */
    row = app_text(db, "SELECT group_concat(v, ',') FROM (SELECT winner_value AS v FROM "
                       "tillsync_conflicts UNION SELECT loser_value FROM tillsync_conflicts "
                       "ORDER BY 1)");
    cr_assert_str_eq(row, "black tea,green tea");
    free(row);
    row = app_text(db, "SELECT winner_site || ' ' || loser_site FROM tillsync_conflicts");
    char want1[80], want2[80];
    snprintf(want1, sizeof want1, "%s %s", sa, sb);
    snprintf(want2, sizeof want2, "%s %s", sb, sa);
    cr_assert(!strcmp(row, want1) || !strcmp(row, want2), "%s", row);
    free(row);
    cr_assert_eq(app_int(db, "SELECT count(*) FROM tillsync_conflicts WHERE row_key LIKE '%p1%'"),
                 1);

    /* tillsync_status: one row, tsync_store_status_get's fields. */
    cr_assert_eq(app_int(db, "SELECT count(*) FROM tillsync_status"), 1);
    row = app_text(db, "SELECT site || ' ' || state || ' ' || conflicts || ' ' || held || ' ' "
                       "|| parked || ' ' || forks || ' ' || unsealed || ' ' || typeof(unsealable)"
                       " || ' ' || typeof(log_batches) || ' ' || length(public_key) "
                       "FROM tillsync_status");
    char want[200];
    snprintf(want, sizeof want, "%s ok 1 0 0 0 0 null integer 64", sb);
    cr_assert_str_eq(row, want);
    free(row);
    cr_assert_eq(app_int(db, "SELECT log_batches FROM tillsync_status"), st.log_batches);
    cr_assert_eq(app_int(db, "SELECT log_max_batches FROM tillsync_status"), st.log_max_batches);
    tsync_store_status_clear(&st);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

Test(sqlite_register, read_only_connection)
{
    const char *path = new_db("r.db");
    sqlite3 *db = app_open(path, RW);
    app_exec(db, "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT)");
    cr_assert_eq(app_int(db, "SELECT tillsync_replicate('t')"), 1);
    app_exec(db, "INSERT INTO t VALUES ('k', 'v')");
    cr_assert_eq(app_int(db, "SELECT tillsync_seal()"), 1);
    app_exec(db, "INSERT INTO t VALUES ('k2', 'v')");
    sqlite3_close(db);

    db = app_open(path, SQLITE_OPEN_READONLY);
    char *h = app_text(db, "SELECT tillsync_hash()");
    cr_assert_str_eq(h, store_hash(path, NULL));
    free(h);
    cr_assert_eq(app_int(db, "SELECT unsealed FROM tillsync_status"), 1);
    char *err = app_error(db, "SELECT tillsync_seal()");
    cr_assert(strstr(err, "tillsync_seal") && strstr(err, "read-only"), "%s", err);
    free(err);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

Test(sqlite_register, registering_again)
{
    const char *path = new_db("g.db");
    sqlite3 *db = app_open(path, RW);
    char *h1 = app_text(db, "SELECT tillsync_hash()");
    /* Again: the first registration's state (its open tillsync connection) is freed, the new
     * one opens its own (ASan and the leak check watch both). */
    cr_assert_eq(tsync_sqlite_register(db), 0);
    char *h2 = app_text(db, "SELECT tillsync_hash()");
    cr_assert_str_eq(h1, h2);
    free(h1);
    free(h2);
    /* Not while a statement runs: SQLite replaces no function then. */
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT 1 UNION ALL SELECT 2", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(tsync_sqlite_register(db), TSYNC_EBUSY);
    cr_assert(strstr(tsync_error_last()->message, "active statements"), "%s",
              tsync_error_last()->message);
    sqlite3_finalize(st);
    cr_assert_eq(app_int(db, "SELECT count(*) FROM tillsync_status"), 1, "still registered");
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

static int other_libversion_number(void)
{
    return 1;
}

Test(sqlite_register, loadable_module)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    cr_assert_eq(sqlite3_enable_load_extension(db, 1), SQLITE_OK);
    char *err = NULL;
    cr_assert_eq(sqlite3_load_extension(db, TSYNC_SQLITE_EXT, NULL, &err), SQLITE_OK, "%s",
                 err ? err : "?");
    cr_assert_eq(app_int(db, "SELECT length(uuid7())"), 36);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);

    /* A host with SQLite of its own hands the entry point its own table of routines: refused,
     * the message allocated by the host's allocator, nothing registered. */
    void *mod = dlopen(TSYNC_SQLITE_EXT, RTLD_NOW | RTLD_LOCAL);
    cr_assert(mod, "%s", dlerror());
    int (*init)(sqlite3 *, char **, const sqlite3_api_routines *) =
        (int (*)(sqlite3 *, char **, const sqlite3_api_routines *))dlsym(mod,
                                                                         "sqlite3_tillsync_init");
    cr_assert(init);
    static sqlite3_api_routines other;
    other.libversion_number = other_libversion_number;
    other.mprintf = sqlite3_mprintf;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    err = NULL;
    cr_assert_eq(init(db, &err, &other), SQLITE_ERROR);
    cr_assert(err && strstr(err, "its own SQLite"), "%s", err ? err : "(no message)");
    sqlite3_free(err);
    err = app_error(db, "SELECT uuid7()");
    cr_assert(strstr(err, "no such function"), "%s", err);
    free(err);
    cr_assert_eq(sqlite3_close(db), SQLITE_OK);
    dlclose(mod);
}
