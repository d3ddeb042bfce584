/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_capture.c — capture (store/replicate.c triggers + store/seal.c): every way
 * SQL can change a replicated table must end up in a batch, and a peer that merges the batches
 * must show exactly the same rows. Covers UPDATE of the key, INSERT OR REPLACE, UPSERT, WITHOUT
 * ROWID tables, multi-row statements, composite keys, writes from a separate sqlite3 shell
 * process, and a round trip of values of every SQLite type.
 *
 * Every test checks the peer two ways: the content hash (which covers every column of every row)
 * and a few explicit values, so a wrong hash implementation cannot hide a wrong merge.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/lib/helpers.h"

TestSuite(store_capture, .fini = th_cleanup);

extern char **environ;

/* Two fresh replicas in one temporary folder. */
typedef struct {
    char *dir;
    tsync_store *a, *b;
} pair;

static void pair_open_products(pair *p)
{
    p->dir = th_tmpdir_auto();
    p->a = th_open_products(th_path(p->dir, "a.db"));
    p->b = th_open_products(th_path(p->dir, "b.db"));
}

/* Opens two replicas, creates the same table on both with `ddl` and replicates it. */
static void pair_open_table(pair *p, const char *ddl, const char *table)
{
    p->dir = th_tmpdir_auto();
    p->a = th_open(th_path(p->dir, "a.db"));
    p->b = th_open(th_path(p->dir, "b.db"));
    tsync_store *both[2] = {p->a, p->b};
    for (int i = 0; i < 2; i++) {
        th_exec(both[i], ddl);
        int rc = tsync_store_replicate(both[i], table, NULL, 0);
        cr_assert_eq(rc, 0, "replicate %s: %s", table,
                     tsync_error_last() ? tsync_error_last()->message : "?");
    }
}

static void pair_close(pair *p)
{
    tsync_store_free(p->a);
    tsync_store_free(p->b);
    th_rmdir(p->dir);
    free(p->dir);
}

/* Sends what b lacks from a, and checks the merge was clean. */
static void push(tsync_store *from, tsync_store *to)
{
    int rc = th_sync(from, to);
    cr_assert_eq(rc, 0, "merge: %s", tsync_error_last() ? tsync_error_last()->message : "?");
}

static void assert_same(tsync_store *a, tsync_store *b)
{
    cr_assert_str_eq(th_hash(a), th_hash(b), "replicas differ");
}

/* The first column of the first row of sql as text, compared with want (NULL: no row or NULL). */
static void expect_text(tsync_store *s, const char *sql, const char *want)
{
    char *got = th_text(s, sql);
    if (!want)
        cr_assert_null(got, "%s: expected NULL, got '%s'", sql, got);
    else
        cr_assert(got && strcmp(got, want) == 0, "%s: expected '%s', got '%s'", sql, want,
                  got ? got : "(null)");
    free(got);
}

/* ---------------------------------------------------------------- key updates */

Test(store_capture, update_of_primary_key_moves_the_row_on_the_peer)
{
    pair p;
    pair_open_products(&p);
    th_exec(p.a, "INSERT INTO products VALUES('p1', 'apple', 120, 10)");
    push(p.a, p.b);
    expect_text(p.b, "SELECT name FROM products WHERE id='p1'", "apple");

    th_exec(p.a, "UPDATE products SET id='p2' WHERE id='p1'");
    cr_assert_eq(th_seal(p.a), 1);
    push(p.a, p.b);

    /* The old key is gone and the new key carries every field, the counter included. */
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM products WHERE id='p1'", -1), 0);
    expect_text(p.b, "SELECT name || '/' || price || '/' || stock FROM products WHERE id='p2'",
                "apple/120/10");
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM products", -1), 1);
    assert_same(p.a, p.b);

    /* And back again: the old key is resurrected with the current values, the new one deleted. */
    th_exec(p.a, "UPDATE products SET id='p1', price=130 WHERE id='p2'");
    push(p.a, p.b);
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM products WHERE id='p2'", -1), 0);
    expect_text(p.b, "SELECT name || '/' || price || '/' || stock FROM products WHERE id='p1'",
                "apple/130/10");
    assert_same(p.a, p.b);

    /* The peer's copy is a real replica: it can go on editing the moved row. */
    th_exec(p.b, "UPDATE products SET stock = stock - 1 WHERE id='p1'");
    push(p.b, p.a);
    cr_assert_eq(th_int(p.a, "SELECT stock FROM products WHERE id='p1'", -1), 9);
    assert_same(p.a, p.b);
    pair_close(&p);
}

Test(store_capture, update_of_one_column_of_a_composite_key)
{
    pair p;
    pair_open_table(&p,
                    "CREATE TABLE shelf(store TEXT, sku TEXT, qty INTEGER, note TEXT, "
                    "PRIMARY KEY(store, sku))",
                    "shelf");
    th_exec(p.a, "INSERT INTO shelf VALUES('s1', 'a', 1, 'x'), ('s1', 'b', 2, 'y'), "
                 "('s2', 'a', 3, 'z')");
    push(p.a, p.b);
    assert_same(p.a, p.b);

    /* ('s1','a') becomes ('s3','a'): only one key column changes. */
    th_exec(p.a, "UPDATE shelf SET store='s3' WHERE store='s1' AND sku='a'");
    push(p.a, p.b);
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM shelf WHERE store='s1' AND sku='a'", -1), 0);
    expect_text(p.b, "SELECT qty || note FROM shelf WHERE store='s3' AND sku='a'", "1x");
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM shelf", -1), 3);
    assert_same(p.a, p.b);
    pair_close(&p);
}

/* ---------------------------------------------------------------- replace and upsert */

Test(store_capture, insert_or_replace_of_an_existing_row)
{
    pair p;
    pair_open_products(&p);
    th_exec(p.a, "INSERT INTO products VALUES('p1', 'apple', 120, 10)");
    push(p.a, p.b);

    /* REPLACE deletes the old row without firing delete triggers (recursive_triggers is off):
     * the insert alone must carry the new state, including a column that went back to NULL. */
    th_exec(p.a, "INSERT OR REPLACE INTO products(id, name, stock) VALUES('p1', 'green apple', 4)");
    push(p.a, p.b);
    expect_text(p.b, "SELECT name FROM products WHERE id='p1'", "green apple");
    cr_assert_eq(th_int(p.b, "SELECT price IS NULL FROM products WHERE id='p1'", -1), 1);
    cr_assert_eq(th_int(p.b, "SELECT stock FROM products WHERE id='p1'", -1), 4);
    assert_same(p.a, p.b);

    /* REPLACE INTO is the same statement under another name. */
    th_exec(p.a, "REPLACE INTO products VALUES('p1', 'apple', 99, 6), ('p2', 'pear', 50, 1)");
    push(p.a, p.b);
    expect_text(p.b,
                "SELECT group_concat(id || name || price || ':' || stock, ',') FROM "
                "(SELECT * FROM products ORDER BY id)",
                "p1apple99:6,p2pear50:1");
    assert_same(p.a, p.b);
    pair_close(&p);
}

Test(store_capture, upsert_on_conflict_do_update)
{
    pair p;
    pair_open_products(&p);
    th_exec(p.a, "INSERT INTO products VALUES('p1', 'apple', 120, 10)");
    push(p.a, p.b);

    /* A delivery booked as an upsert on A while B sells one: both count. */
    th_exec(p.a, "INSERT INTO products(id, name, price, stock) VALUES('p1', 'apple', 125, 5) "
                 "ON CONFLICT(id) DO UPDATE SET stock = stock + excluded.stock, "
                 "price = excluded.price");
    th_exec(p.b, "UPDATE products SET stock = stock - 1 WHERE id='p1'");
    /* The same upsert for a new key is an insert. */
    th_exec(p.a, "INSERT INTO products(id, name, price, stock) VALUES('p2', 'pear', 80, 3) "
                 "ON CONFLICT(id) DO UPDATE SET stock = stock + excluded.stock");
    push(p.a, p.b);
    push(p.b, p.a);
    cr_assert_eq(th_int(p.a, "SELECT stock FROM products WHERE id='p1'", -1), 14);
    cr_assert_eq(th_int(p.b, "SELECT stock FROM products WHERE id='p1'", -1), 14);
    cr_assert_eq(th_int(p.b, "SELECT price FROM products WHERE id='p1'", -1), 125);
    expect_text(p.b, "SELECT name || stock FROM products WHERE id='p2'", "pear3");
    assert_same(p.a, p.b);

    /* DO NOTHING changes nothing and must not invent a change either. */
    th_exec(p.a, "INSERT INTO products VALUES('p1', 'x', 1, 1) ON CONFLICT DO NOTHING");
    cr_assert_eq(th_seal(p.a), 0);
    pair_close(&p);
}

/* ---------------------------------------------------------------- table shapes */

Test(store_capture, without_rowid_table_with_text_key)
{
    pair p;
    pair_open_table(&p,
                    "CREATE TABLE tags(id TEXT PRIMARY KEY, label TEXT, n INTEGER DEFAULT 0) "
                    "WITHOUT ROWID",
                    "tags");
    th_exec(p.a, "INSERT INTO tags VALUES('t1', 'red', 1), ('t2', 'blue', 2)");
    th_exec(p.a, "UPDATE tags SET label='green' WHERE id='t2'");
    th_exec(p.a, "INSERT INTO tags(id, label) VALUES('t3', 'plain')");
    push(p.a, p.b);
    expect_text(p.b,
                "SELECT group_concat(id || label || n, ',') FROM (SELECT * FROM tags "
                "ORDER BY id)",
                "t1red1,t2green2,t3plain0");
    assert_same(p.a, p.b);
    th_exec(p.b, "DELETE FROM tags WHERE id='t1'");
    push(p.b, p.a);
    cr_assert_eq(th_int(p.a, "SELECT count(*) FROM tags", -1), 2);
    assert_same(p.a, p.b);
    pair_close(&p);
}

Test(store_capture, without_rowid_table_with_integer_key)
{
    /* In a WITHOUT ROWID table an INTEGER PRIMARY KEY is an ordinary key, not a rowid alias. */
    pair p;
    pair_open_table(&p, "CREATE TABLE lanes(n INTEGER PRIMARY KEY, label TEXT) WITHOUT ROWID",
                    "lanes");
    th_exec(p.a, "INSERT INTO lanes VALUES(-5, 'minus'), (0, 'zero'), (9000000000, 'big')");
    th_exec(p.a, "UPDATE lanes SET n = 7 WHERE n = 0");
    push(p.a, p.b);
    expect_text(p.b, "SELECT group_concat(n || label, ',') FROM (SELECT * FROM lanes ORDER BY n)",
                "-5minus,7zero,9000000000big");
    cr_assert_eq(th_int(p.b, "SELECT typeof(n) = 'integer' FROM lanes WHERE n = 7", -1), 1);
    assert_same(p.a, p.b);
    pair_close(&p);
}

Test(store_capture, composite_key_declared_out_of_column_order)
{
    /* The key order (sku, store, day) differs from the column order: batches carry the key in
     * key order, and the peer must map it back to the right columns. */
    pair p;
    pair_open_table(&p,
                    "CREATE TABLE sales(store TEXT, qty INTEGER, day INTEGER, sku BLOB, "
                    "PRIMARY KEY(sku, store, day))",
                    "sales");
    th_exec(p.a, "INSERT INTO sales VALUES('s1', 3, 20240101, x'0001'), "
                 "('s1', 4, 20240102, x'0001'), ('s2', 5, 20240101, x'0001'), "
                 "('s1', 6, 20240101, x'00')");
    push(p.a, p.b);
    cr_assert_eq(th_int(p.b,
                        "SELECT qty FROM sales WHERE sku=x'0001' AND store='s1' AND "
                        "day=20240102",
                        -1),
                 4);
    cr_assert_eq(th_int(p.b,
                        "SELECT qty FROM sales WHERE sku=x'00' AND store='s1' AND "
                        "day=20240101",
                        -1),
                 6);
    th_exec(p.a, "UPDATE sales SET qty = qty * 10 WHERE store='s1'");
    th_exec(p.a, "DELETE FROM sales WHERE store='s2'");
    push(p.a, p.b);
    expect_text(p.b, "SELECT group_concat(qty, ',') FROM (SELECT qty FROM sales ORDER BY qty)",
                "30,40,60");
    assert_same(p.a, p.b);
    pair_close(&p);
}

/* ---------------------------------------------------------------- multi-row statements */

Test(store_capture, multi_row_insert_update_delete_statements)
{
    pair p;
    pair_open_products(&p);
    th_exec(p.a, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) "
                 "INSERT INTO products SELECT printf('p%02d', i), 'item ' || i, i * 10, i FROM n");
    push(p.a, p.b);
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM products", -1), 50);
    assert_same(p.a, p.b);

    /* One statement touching many rows, one deleting many, in one transaction. */
    th_exec(p.a, "BEGIN; UPDATE products SET price = price + 1, stock = stock * 2 WHERE "
                 "id <= 'p25'; DELETE FROM products WHERE id > 'p40'; COMMIT");
    cr_assert_eq(th_seal(p.a), 1, "one transaction must seal into one batch");
    push(p.a, p.b);
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM products", -1), 40);
    cr_assert_eq(th_int(p.b, "SELECT sum(price) FROM products", -1), 8225);
    cr_assert_eq(th_int(p.b, "SELECT sum(stock) FROM products", -1), 1145);
    assert_same(p.a, p.b);

    /* Delete everything and insert again under new keys in one statement each. */
    th_exec(p.a, "DELETE FROM products");
    th_exec(p.a, "INSERT INTO products(id, name) VALUES('q1', 'a'), ('q2', 'b'), ('q3', 'c')");
    push(p.a, p.b);
    expect_text(p.b, "SELECT group_concat(id, ',') FROM (SELECT id FROM products ORDER BY id)",
                "q1,q2,q3");
    assert_same(p.a, p.b);
    pair_close(&p);
}

Test(store_capture, delete_and_insert_of_one_key_before_sealing)
{
    pair p;
    pair_open_products(&p);
    th_exec(p.a, "INSERT INTO products VALUES('p1', 'apple', 120, 10)");
    push(p.a, p.b);

    /* Deleted and inserted again in one transaction: one row change that both removes what was
     * seen and adds the new row. */
    th_exec(p.a, "BEGIN; DELETE FROM products WHERE id='p1'; "
                 "INSERT INTO products VALUES('p1', 'new apple', 130, 3); COMMIT");
    /* A row that lives and dies between two seals leaves nothing visible. */
    th_exec(p.a, "INSERT INTO products VALUES('tmp', 'scratch', 1, 1)");
    th_exec(p.a, "DELETE FROM products WHERE id='tmp'");
    cr_assert_eq(th_seal(p.a), 1);
    push(p.a, p.b);
    expect_text(p.b, "SELECT name || price || ':' || stock FROM products WHERE id='p1'",
                "new apple130:3");
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM products", -1), 1);
    assert_same(p.a, p.b);
    pair_close(&p);
}

Test(store_capture, rolled_back_transaction_is_not_captured)
{
    pair p;
    pair_open_products(&p);
    th_exec(p.a, "INSERT INTO products VALUES('p1', 'apple', 120, 10)");
    push(p.a, p.b);
    th_exec(p.a, "BEGIN; UPDATE products SET price = 1; INSERT INTO products VALUES('p2', 'x', 1, "
                 "1); DELETE FROM products WHERE id='p1'; ROLLBACK");
    cr_assert_eq(th_seal(p.a), 0, "a rolled back transaction left pending changes");
    push(p.a, p.b);
    expect_text(p.b, "SELECT group_concat(id || price, ',') FROM products", "p1120");
    assert_same(p.a, p.b);
    pair_close(&p);
}

/* Runs sql and expects SQLite to refuse it with a message containing needle. */
static void expect_sql_refused(tsync_store *s, const char *sql, const char *needle)
{
    char *err = NULL;
    int rc = sqlite3_exec(tsync_store_sqlite(s), sql, NULL, NULL, &err);
    cr_assert_neq(rc, SQLITE_OK, "%s: accepted", sql);
    cr_assert(err && strstr(err, needle), "%s: message '%s' does not say '%s'", sql,
              err ? err : "(none)", needle);
    sqlite3_free(err);
}

Test(store_capture, null_key_is_refused_at_write_time)
{
    /* SQLite lets a rowid table hold NULL in a non-INTEGER key; NULL cannot name a row on
     * another till, so the write itself fails, where the app sees it. */
    pair p;
    pair_open_table(&p, "CREATE TABLE pairs(a TEXT, b TEXT, v TEXT, PRIMARY KEY(a, b))", "pairs");
    th_exec(p.a, "INSERT INTO pairs VALUES('x', 'y', 'ok')");
    expect_sql_refused(p.a, "INSERT INTO pairs VALUES(NULL, 'y', 'bad')", "NULL");
    expect_sql_refused(p.a, "INSERT INTO pairs VALUES('x', NULL, 'bad')", "NULL");
    expect_sql_refused(p.a, "UPDATE pairs SET b = NULL WHERE a = 'x'", "NULL");
    expect_sql_refused(p.a, "INSERT OR REPLACE INTO pairs VALUES(NULL, NULL, 'bad')", "NULL");
    /* Nothing of the refused statements was captured or kept. */
    cr_assert_eq(th_int(p.a, "SELECT count(*) FROM pairs", -1), 1);
    push(p.a, p.b);
    expect_text(p.b, "SELECT a || b || v FROM pairs", "xyok");
    assert_same(p.a, p.b);
    pair_close(&p);
}

/* ---------------------------------------------------------------- another process */

/* Runs /usr/bin/sqlite3 -bail DB SQL as a separate process and returns its exit status. */
static int run_shell(const char *db, const char *sql)
{
    char *argv[] = {"sqlite3", "-bail", (char *)db, (char *)sql, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/usr/bin/sqlite3", NULL, NULL, argv, environ);
    cr_assert_eq(rc, 0, "cannot start /usr/bin/sqlite3: %s", strerror(rc));
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

Test(store_capture, writes_from_a_sqlite3_shell_process_are_captured)
{
    pair p;
    pair_open_products(&p);
    const char *db = th_path(p.dir, "a.db");
    cr_assert_eq(run_shell(db, "INSERT INTO products VALUES('s1', 'from shell', 300, 7);"
                               "INSERT INTO products VALUES('s2', 'second', 10, 1);"),
                 0);
    /* The app's store notices nothing by itself; sealing finds the shell's pending changes. */
    cr_assert_eq(th_seal(p.a), 1);
    push(p.a, p.b);
    expect_text(p.b, "SELECT name || price || ':' || stock FROM products WHERE id='s1'",
                "from shell300:7");
    assert_same(p.a, p.b);

    cr_assert_eq(run_shell(db, "UPDATE products SET stock = stock - 2 WHERE id='s1';"
                               "DELETE FROM products WHERE id='s2';"
                               "UPDATE products SET id='s3' WHERE id='s1';"),
                 0);
    push(p.a, p.b);
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM products", -1), 1);
    cr_assert_eq(th_int(p.b, "SELECT stock FROM products WHERE id='s3'", -1), 5);
    assert_same(p.a, p.b);

    /* A merge on the store must not be confused by the shell's later writes either. */
    th_exec(p.b, "UPDATE products SET price = 301 WHERE id='s3'");
    push(p.b, p.a);
    cr_assert_eq(run_shell(db, "UPDATE products SET name='renamed' WHERE id='s3';"), 0);
    push(p.a, p.b);
    expect_text(p.b, "SELECT name || price FROM products WHERE id='s3'", "renamed301");
    assert_same(p.a, p.b);
    pair_close(&p);
}

/* ---------------------------------------------------------------- values */

static double real_of(tsync_store *s, const char *id)
{
    sqlite3_stmt *st;
    cr_assert_eq(
        sqlite3_prepare_v2(tsync_store_sqlite(s), "SELECT v FROM vals WHERE id=?1", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "no row %s", id);
    cr_assert_eq(sqlite3_column_type(st, 0), SQLITE_FLOAT, "row %s is not REAL", id);
    double d = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return d;
}

Test(store_capture, values_of_every_type_round_trip)
{
    /* v has no declared type, so SQLite keeps every value exactly as given (no affinity). */
    pair p;
    pair_open_table(&p, "CREATE TABLE vals(id TEXT PRIMARY KEY, v, note TEXT)", "vals");
    th_exec(p.a, "INSERT INTO vals VALUES"
                 "('imax', 9223372036854775807, NULL),"
                 "('imin', -9223372036854775807 - 1, NULL),"
                 "('zero', 0, ''),"
                 "('neg', -1, NULL),"
                 "('pi', 3.141592653589793, NULL),"
                 "('tiny', 4.9406564584124654e-324, NULL),"
                 "('huge', -1.7976931348623157e308, NULL),"
                 "('inf', 9e999, NULL),"
                 "('half', 0.5, NULL),"
                 "('utf8', 'Grüße, € and 🙂 — ünïcödé', 'note'),"
                 "('quotes', 'it''s \"quoted\" `x` [y]', NULL),"
                 "('empty', '', NULL),"
                 "('nul_text', CAST(x'610062' AS TEXT), NULL),"
                 "('blob', x'00ff0001fe00', NULL),"
                 "('zeros', zeroblob(300), NULL),"
                 "('empty_blob', x'', NULL),"
                 "('null', NULL, NULL)");
    push(p.a, p.b);
    assert_same(p.a, p.b);

    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM vals", -1), 17);
    /* Types survive exactly. */
    expect_text(p.b,
                "SELECT group_concat(id || ':' || typeof(v), ',') FROM (SELECT * FROM vals ORDER "
                "BY id)",
                "blob:blob,empty:text,empty_blob:blob,half:real,huge:real,imax:integer,"
                "imin:integer,inf:real,neg:integer,nul_text:text,null:null,pi:real,quotes:text,"
                "tiny:real,utf8:text,zero:integer,zeros:blob");
    cr_assert_eq(th_int(p.b, "SELECT v FROM vals WHERE id='imax'", 0), INT64_MAX);
    cr_assert_eq(th_int(p.b, "SELECT v FROM vals WHERE id='imin'", 0), INT64_MIN);
    cr_assert_eq(th_int(p.b, "SELECT v FROM vals WHERE id='neg'", 0), -1);
    /* Reals bit for bit. */
    cr_assert(real_of(p.b, "pi") == 3.141592653589793);
    cr_assert(real_of(p.b, "tiny") == 4.9406564584124654e-324);
    cr_assert(real_of(p.b, "huge") == -DBL_MAX);
    cr_assert(isinf(real_of(p.b, "inf")) && real_of(p.b, "inf") > 0);
    cr_assert(real_of(p.b, "half") == 0.5);
    expect_text(p.b, "SELECT v FROM vals WHERE id='utf8'", "Grüße, € and 🙂 — ünïcödé");
    expect_text(p.b, "SELECT v FROM vals WHERE id='quotes'", "it's \"quoted\" `x` [y]");
    expect_text(p.b, "SELECT v FROM vals WHERE id='empty'", "");
    expect_text(p.b, "SELECT note FROM vals WHERE id='zero'", "");
    /* Bytes after an embedded NUL and in blobs are kept. */
    expect_text(p.b,
                "SELECT hex(v) || '/' || length(CAST(v AS BLOB)) FROM vals WHERE "
                "id='nul_text'",
                "610062/3");
    expect_text(p.b, "SELECT hex(v) FROM vals WHERE id='blob'", "00FF0001FE00");
    expect_text(p.b, "SELECT length(v) || '/' || (v = zeroblob(300)) FROM vals WHERE id='zeros'",
                "300/1");
    expect_text(p.b, "SELECT length(v) FROM vals WHERE id='empty_blob'", "0");
    cr_assert_eq(th_int(p.b, "SELECT v IS NULL FROM vals WHERE id='null'", -1), 1);

    /* Every value replaced by a value of another type also travels (the column changes type). */
    th_exec(p.a, "UPDATE vals SET v = CASE typeof(v) WHEN 'integer' THEN 'now text' "
                 "WHEN 'text' THEN x'01' WHEN 'blob' THEN NULL WHEN 'null' THEN 2.5 ELSE 42 END");
    push(p.a, p.b);
    assert_same(p.a, p.b);
    expect_text(p.b, "SELECT group_concat(typeof(v), ',') FROM (SELECT v FROM vals ORDER BY id)",
                "null,blob,null,integer,integer,text,text,integer,text,blob,real,integer,blob,"
                "integer,blob,text,null");
    pair_close(&p);
}

Test(store_capture, keys_of_every_type_round_trip)
{
    /* A key column without a declared type can hold keys of different types side by side. */
    pair p;
    pair_open_table(&p, "CREATE TABLE odd(k PRIMARY KEY, v TEXT)", "odd");
    th_exec(p.a, "INSERT INTO odd VALUES(1, 'int'), (-9223372036854775807 - 1, 'min'), "
                 "(1.5, 'real'), ('1', 'text'), (x'31', 'blob'), (x'', 'empty blob'), "
                 "('', 'empty text'), ('Ünï ''q''', 'utf8')");
    push(p.a, p.b);
    assert_same(p.a, p.b);
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM odd", -1), 8);
    expect_text(p.b, "SELECT v FROM odd WHERE k = 1", "int");
    expect_text(p.b, "SELECT v FROM odd WHERE k = '1'", "text");
    expect_text(p.b, "SELECT v FROM odd WHERE k = x'31'", "blob");
    expect_text(p.b, "SELECT v FROM odd WHERE k = x''", "empty blob");
    expect_text(p.b, "SELECT v FROM odd WHERE k = ''", "empty text");
    /* Each key is its own row on the peer too: update and delete one of each kind. */
    th_exec(p.a, "UPDATE odd SET v = 'changed' WHERE k = 1.5 OR k = x'31'");
    th_exec(p.a, "DELETE FROM odd WHERE k = '1' OR k = x''");
    push(p.a, p.b);
    assert_same(p.a, p.b);
    expect_text(p.b, "SELECT v FROM odd WHERE k = 1", "int");
    expect_text(p.b, "SELECT v FROM odd WHERE k = 1.5", "changed");
    cr_assert_eq(th_int(p.b, "SELECT count(*) FROM odd", -1), 6);
    pair_close(&p);
}
