/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_migrate.c — schema migrations (store/migrate.c, and re-applying parked changes
 * in store/merge.c): files apply once each, in number order, all pending ones in one transaction;
 * a changed applied file, a duplicate number or a new file below the version is refused and
 * changes nothing; a failing statement anywhere rolls every pending migration back; changes
 * replication cannot follow are refused with what to do instead; added columns, counters and
 * tables replicate, also between tills on different schema versions, where what a till cannot
 * apply yet is parked and applied when its own migration catches up, with LWW and counters
 * coming out as if it had arrived after the migration.
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/lib/helpers.h"

TestSuite(migrate, .fini = th_cleanup);

/* A folder removed by th_cleanup, its name valid to the end of the test (each test runs in its
 * own process). */
static const char *tmp(void)
{
    static char ring[32][4096];
    static int k;
    char *d = th_tmpdir_auto();
    char *out = ring[k++ % 32];
    snprintf(out, sizeof ring[0], "%s", d);
    free(d);
    return out;
}

static void put(const char *dir, const char *name, const char *text)
{
    FILE *f = fopen(th_path(dir, name), "wb");
    cr_assert(f, "cannot write %s", name);
    fputs(text, f);
    fclose(f);
}

static int64_t version(tsync_store *s)
{
    int64_t v = -1;
    cr_assert_eq(tsync_store_schema_version(&v, s), 0, "%s", th_errmsg());
    return v;
}

/* Migrates and expects success; returns how many migrations applied. */
static size_t migrate_ok(tsync_store *s, const char *dir, tsync_migrate_report *out)
{
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    int rc = tsync_store_migrate(s, dir, &r);
    cr_assert_eq(rc, 0, "migrate %s: %s", dir, th_errmsg());
    size_t n = r.napplied;
    if (out)
        *out = r;
    else
        tsync_migrate_report_clear(&r);
    return n;
}

/* Migrates and expects refusal with code and a one-line message naming each needle. */
static void migrate_refused(tsync_store *s, const char *dir, int code, const char *n1,
                            const char *n2)
{
    tsync_error_clear();
    int rc = tsync_store_migrate(s, dir, NULL);
    cr_assert_eq(rc, code, "migrate %s: got %d (%s), want %d", dir, rc, th_errmsg(), code);
    const tsync_error *e = tsync_error_last();
    cr_assert_not_null(e);
    cr_assert_null(strchr(e->message, '\n'), "message is not one line");
    if (n1) cr_assert(strstr(e->message, n1), "message '%s' does not say '%s'", e->message, n1);
    if (n2) cr_assert(strstr(e->message, n2), "message '%s' does not say '%s'", e->message, n2);
}

/* Everything about the schema a refused migration must leave as it was. */
static char *footprint(tsync_store *s)
{
    char *a = th_text(s, "SELECT group_concat(type || ':' || name || ':' || coalesce(sql, ''), "
                         "'|') FROM (SELECT * FROM sqlite_schema ORDER BY type, name)");
    char *b = th_text(s, "SELECT group_concat(name || cols || pk || counters, '|') FROM "
                         "(SELECT * FROM tsync_tables ORDER BY id)");
    size_t n = (a ? strlen(a) : 0) + (b ? strlen(b) : 0) + 32;
    char *out = malloc(n);
    cr_assert(out);
    snprintf(out, n, "%s#%s#v%lld", a ? a : "", b ? b : "", (long long)version(s));
    free(a), free(b);
    return out;
}

static void expect_text(tsync_store *s, const char *sql, const char *want)
{
    char *got = th_text(s, sql);
    cr_assert(got && want && strcmp(got, want) == 0, "%s: got '%s', want '%s'", sql,
              got ? got : "(null)", want ? want : "(null)");
    free(got);
}

/* Moves everything `from` has that `to` lacks; the merge must succeed. */
static void push(tsync_store *from, tsync_store *to)
{
    int rc = th_sync(from, to);
    cr_assert_eq(rc, 0, "merge: %s", th_errmsg());
}

static void push_report(tsync_store *from, tsync_store *to, tsync_merge_report *rep)
{
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, to), 0);
    uint8_t *b = NULL;
    size_t len = 0;
    cr_assert_eq(tsync_store_bundle(&b, &len, from, state, NULL), 0, "%s", th_errmsg());
    int rc = tsync_store_merge(to, b, len, rep);
    cr_assert_eq(rc, 0, "merge: %s", th_errmsg());
    free(b);
    free(state);
}

/* Moves this till's clock ahead of the wall clock by ms (its next writes win LWW against
 * writes made elsewhere meanwhile); well inside the bound at which a peer holds a batch. */
static void clock_ahead(tsync_store *s, int64_t ms)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE tsync_meta SET v = max(v, (CAST((julianday('now') - 2440587.5) * 86400000 "
             "AS INTEGER) + %lld) << 16) WHERE k = 'hlc'",
             (long long)ms);
    th_exec(s, sql);
}

static int64_t parked(tsync_store *s, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM tsync_parked WHERE %s", where);
    return th_int(s, sql, -1);
}

/* The migrations of the tests, one folder per schema version: dir_N holds 001..N. */
static const char *M[] = {
    NULL,
    "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER,\n"
    "                      stock INTEGER NOT NULL DEFAULT 0);\n"
    "SELECT tillsync_replicate('products', 'stock');\n",
    "-- each product gets a barcode\n"
    "ALTER TABLE products ADD COLUMN barcode TEXT;\n",
    "ALTER TABLE products ADD COLUMN sold INTEGER NOT NULL DEFAULT 0;\n"
    "SELECT tillsync_counter('products', 'sold');\n",
    "CREATE TABLE orders(id TEXT PRIMARY KEY, product TEXT, qty INTEGER NOT NULL DEFAULT 0);\n"
    "SELECT tillsync_replicate('orders', 'qty');\n",
    "ALTER TABLE orders ADD COLUMN note TEXT;\n",
};
static const char *MNAME[] = {NULL,           "001_init.sql",   "002_add_barcode.sql",
                              "003_sold.sql", "004_orders.sql", "005_order_note.sql"};

static const char *folder(int upto)
{
    const char *d = tmp();
    for (int i = 1; i <= upto; i++) put(d, MNAME[i], M[i]);
    return d;
}

/* ---------------------------------------------------------------- applying */

Test(migrate, applies_in_number_order_once_and_records_hashes)
{
    const char *dir = tmp(), *mig = tmp();
    tsync_store *s = th_open(th_path(dir, "a.db"));
    cr_assert_eq(version(s), 0);
    /* 10 sorts before 2 as text: the order must be by number. */
    const char *t1 = "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT);\n"
                     "SELECT tillsync_replicate('t');\n";
    const char *t2 = "ALTER TABLE t ADD COLUMN b TEXT;\n";
    const char *t10 = "INSERT INTO t(id, a, b) VALUES('x', 'one', 'two');\n";
    put(mig, "1_create.sql", t1);
    put(mig, "2_add_b.sql", t2);
    put(mig, "10_fill.sql", t10);
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(migrate_ok(s, mig, &r), 3);
    cr_assert_eq(r.from_version, 0);
    cr_assert_eq(r.to_version, 10);
    const char *names[] = {"1_create.sql", "2_add_b.sql", "10_fill.sql"};
    const char *texts[] = {t1, t2, t10};
    const int64_t nums[] = {1, 2, 10};
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(r.applied[i].name, names[i]);
        cr_assert_eq(r.applied[i].number, nums[i]);
        uint8_t h[32];
        char hex[65];
        crypto_generichash(h, sizeof h, (const uint8_t *)texts[i], strlen(texts[i]), NULL, 0);
        for (int k = 0; k < 32; k++) snprintf(hex + 2 * k, 3, "%02x", h[k]);
        cr_assert_str_eq(r.applied[i].hash, hex, "%s: hash is not BLAKE2b-256 of the file",
                         names[i]);
        char q[128];
        snprintf(q, sizeof q, "SELECT name || ' ' || hash FROM tsync_migrations WHERE number=%lld",
                 (long long)nums[i]);
        char want[200];
        snprintf(want, sizeof want, "%s %s", names[i], hex);
        expect_text(s, q, want);
    }
    tsync_migrate_report_clear(&r);
    cr_assert_eq(version(s), 10);
    expect_text(s, "SELECT a || b FROM t WHERE id='x'", "onetwo");
    /* The row the migration inserted was captured and sealed like any write. */
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_pending", -1), 0);
    cr_assert_gt(th_int(s, "SELECT count(*) FROM tsync_log", -1), 0);

    char *js = NULL;
    cr_assert_eq(tsync_store_migrations_json(&js, s), 0);
    cr_assert(strstr(js, "\"version\": 10") && strstr(js, "10_fill.sql"), "%s", js);
    free(js);

    /* Earlier files may go away (they were applied); a new one applies alone. */
    remove(th_path(mig, "1_create.sql"));
    remove(th_path(mig, "2_add_b.sql"));
    put(mig, "11_more.sql", "INSERT INTO t(id, a) VALUES('y', 'three');\n");
    cr_assert_eq(migrate_ok(s, mig, &r), 1);
    cr_assert_eq(r.from_version, 10);
    cr_assert_eq(r.to_version, 11);
    cr_assert_str_eq(r.applied[0].name, "11_more.sql");
    tsync_migrate_report_clear(&r);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM t", -1), 2);
    tsync_store_free(s);
}

Test(migrate, rerun_is_a_no_op)
{
    const char *dir = tmp(), *mig = folder(3);
    tsync_store *s = th_open(th_path(dir, "a.db"));
    cr_assert_eq(migrate_ok(s, mig, NULL), 3);
    th_exec(s, "INSERT INTO products(id, name) VALUES('p1', 'apple')");
    th_seal(s);
    char *before = footprint(s);
    int64_t log = th_int(s, "SELECT count(*) FROM tsync_log", -1);
    int64_t at = th_int(s, "SELECT sum(applied_ms) FROM tsync_migrations", -1);
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(migrate_ok(s, mig, &r), 0);
        cr_assert_eq(r.from_version, 3);
        cr_assert_eq(r.to_version, 3);
        tsync_migrate_report_clear(&r);
    }
    char *after = footprint(s);
    cr_assert_str_eq(after, before);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_log", -1), log);
    cr_assert_eq(th_int(s, "SELECT sum(applied_ms) FROM tsync_migrations", -1), at);
    free(before), free(after);
    tsync_store_free(s);
}

Test(migrate, changed_applied_file_is_refused_and_nothing_applies)
{
    const char *dir = tmp(), *mig = folder(2);
    tsync_store *s = th_open(th_path(dir, "a.db"));
    cr_assert_eq(migrate_ok(s, mig, NULL), 2);
    put(mig, MNAME[2], "ALTER TABLE products ADD COLUMN barcode TEXT; -- edited\n");
    put(mig, MNAME[3], M[3]);
    char *before = footprint(s);
    migrate_refused(s, mig, TSYNC_EREFUSED, "002_add_barcode.sql", "changed after it was applied");
    char *after = footprint(s);
    cr_assert_str_eq(after, before, "a refused run changed the schema");
    cr_assert_eq(version(s), 2);
    cr_assert_eq(
        th_int(s, "SELECT count(*) FROM pragma_table_info('products') WHERE name='sold'", -1), 0,
        "003 applied although 002 was refused");
    /* Restoring the file lets the run go on. */
    put(mig, MNAME[2], M[2]);
    cr_assert_eq(migrate_ok(s, mig, NULL), 1);
    cr_assert_eq(version(s), 3);
    free(before), free(after);
    tsync_store_free(s);
}

Test(migrate, failing_statement_in_the_last_migration_rolls_all_back)
{
    const char *dir = tmp(), *mig = folder(2);
    tsync_store *s = th_open(th_path(dir, "a.db"));
    put(mig, "003_bad.sql",
        "ALTER TABLE products ADD COLUMN sold INTEGER NOT NULL DEFAULT 0;\n"
        "INSERT INTO products(id, name) VALUES('p9', 'nine');\n"
        "INSERT INTO no_such_table VALUES(1);\n");
    char *before = footprint(s);
    migrate_refused(s, mig, TSYNC_EINVAL, "003_bad.sql, line 3", "no_such_table");
    char *after = footprint(s);
    cr_assert_str_eq(after, before);
    cr_assert_eq(version(s), 0);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM sqlite_schema WHERE name='products'", -1), 0);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_tables", -1), 0);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_log", -1), 0);
    free(before), free(after);

    /* From version 1: 002 and 003 are pending; 003 fails; 002 is not applied either. */
    const char *mig1 = folder(1);
    cr_assert_eq(migrate_ok(s, mig1, NULL), 1);
    th_exec(s, "INSERT INTO products(id, name) VALUES('p1', 'apple')");
    th_seal(s);
    before = footprint(s);
    int64_t log = th_int(s, "SELECT count(*) FROM tsync_log", -1);
    migrate_refused(s, mig, TSYNC_EINVAL, "003_bad.sql, line 3", NULL);
    after = footprint(s);
    cr_assert_str_eq(after, before);
    cr_assert_eq(version(s), 1);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_log", -1), log);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM products", -1), 1);
    /* The store goes on working with the schema it has. */
    th_exec(s, "UPDATE products SET price = 5 WHERE id='p1'");
    cr_assert_eq(th_seal(s), 1);
    free(before), free(after);
    tsync_store_free(s);
}

/* ---------------------------------------------------------------- what is refused */

typedef struct {
    const char *sql, *needle1, *needle2;
    int code;
} refusal;

Test(migrate, changes_replication_cannot_follow_are_refused)
{
    static const refusal cases[] = {
        {"ALTER TABLE products DROP COLUMN price;", "drops column price", "stop using it",
         TSYNC_EUNSUPPORTED},
        {"ALTER TABLE main.products DROP price;", "drops column price", NULL, TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products RENAME COLUMN price TO cost;", "renames column price",
         "add a new column", TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products RENAME TO goods;", "renames replicated table products to goods",
         NULL, TSYNC_EUNSUPPORTED},
        {"DROP TABLE products;", "drops replicated table products", "stop using the table",
         TSYNC_EUNSUPPORTED},
        /* SQLite's way to change a type or a key is to rebuild the table: refused where it
         * removes the replicated table, with what to do instead. */
        {"CREATE TABLE products_new(id TEXT PRIMARY KEY, name TEXT, price REAL,\n"
         "  stock INTEGER NOT NULL DEFAULT 0);\n"
         "INSERT INTO products_new SELECT * FROM products;\n"
         "DROP TABLE products;\n"
         "ALTER TABLE products_new RENAME TO products;",
         "line 4: drops replicated table products", "a type", TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products RENAME TO products_old;\n"
         "CREATE TABLE products(name TEXT PRIMARY KEY, id TEXT, price INTEGER,\n"
         "  stock INTEGER NOT NULL DEFAULT 0);",
         "line 1: renames replicated table products", "key", TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products ADD COLUMN twice INTEGER GENERATED ALWAYS AS (price * 2);",
         "generated column twice", NULL, TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products ADD COLUMN weight INTEGER CHECK (weight > 0);", "CHECK", NULL,
         TSYNC_EUNSUPPORTED},
        {"CREATE TABLE cats(id TEXT PRIMARY KEY);\n"
         "ALTER TABLE products ADD COLUMN cat TEXT REFERENCES cats(id);",
         "line 2: adds a FOREIGN KEY", NULL, TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products ADD COLUMN barcode TEXT;\n"
         "CREATE UNIQUE INDEX products_barcode ON products(barcode);",
         "unique index products_barcode", "plain index", TSYNC_EUNSUPPORTED},
        {"DELETE FROM tsync_log;", "tsync_log", "belong to tillsync", TSYNC_EINVAL},
        {"DROP TRIGGER tsync_au_products;", "tsync_au_products", NULL, TSYNC_EINVAL},
        {"CREATE TABLE tsync_mine(x);", "tsync_mine", NULL, TSYNC_EINVAL},
        {"BEGIN; UPDATE products SET price = 1; COMMIT;", "leave out BEGIN", NULL, TSYNC_EINVAL},
        {"PRAGMA writable_schema = 1;", "writable_schema", NULL, TSYNC_EINVAL},
        {"SELECT tillsync_counter('products', 'price');", "already replicates as a plain value",
         "new counter column", TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products ADD COLUMN n INTEGER NOT NULL DEFAULT 5;\n"
         "SELECT tillsync_counter('products', 'n');",
         "other than 0", "DEFAULT 0", TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products ADD COLUMN n INTEGER;\n"
         "SELECT tillsync_counter('products', 'n');",
         "other than 0", NULL, TSYNC_EUNSUPPORTED},
        {"ALTER TABLE products ADD COLUMN tag TEXT NOT NULL DEFAULT '';\n"
         "SELECT tillsync_counter('products', 'tag');",
         "must be declared INTEGER", NULL, TSYNC_EUNSUPPORTED},
        {"CREATE TABLE local_only(id TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0);\n"
         "SELECT tillsync_counter('local_only', 'n');",
         "not a replicated table", NULL, TSYNC_ENOTFOUND},
        {"SELECT tillsync_replicate('products', 'price');", "already replicated", NULL,
         TSYNC_EUNSUPPORTED},
        {"CREATE TABLE r(id INTEGER PRIMARY KEY, v TEXT);\nSELECT tillsync_replicate('r');",
         "line 2: table r: INTEGER PRIMARY KEY", NULL, TSYNC_EUNSUPPORTED},
        {"SELECT tillsync_replicate(42);", "takes names as text", NULL, TSYNC_EINVAL},
        /* A table replicated by hand earlier, and made replicated here: its columns are not
         * new to replication, so none becomes a counter. */
        {"SELECT tillsync_counter('local_rep', 'n');", "already replicates as a plain value", NULL,
         TSYNC_EUNSUPPORTED},
    };
    const char *dir = tmp();
    tsync_store *s = th_open(th_path(dir, "a.db"));
    cr_assert_eq(migrate_ok(s, folder(1), NULL), 1);
    th_exec(s, "INSERT INTO products(id, name, price, stock) VALUES('p1', 'apple', 100, 10)");
    th_exec(s, "CREATE TABLE local_rep(id TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0)");
    cr_assert_eq(tsync_store_replicate(s, "local_rep", NULL, 0), 0, "%s", th_errmsg());
    th_seal(s);
    const char *mig = folder(1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put(mig, "002_change.sql", cases[i].sql);
        char *before = footprint(s);
        int64_t log = th_int(s, "SELECT count(*) FROM tsync_log", -1);
        migrate_refused(s, mig, cases[i].code, cases[i].needle1, cases[i].needle2);
        const char *msg = th_errmsg();
        cr_assert(strstr(msg, "002_change.sql"), "case %zu: message does not name the file: %s", i,
                  msg);
        char *after = footprint(s);
        cr_assert_str_eq(after, before, "case %zu (%s) changed the schema", i, cases[i].sql);
        cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_log", -1), log, "case %zu", i);
        free(before), free(after);
    }
    /* Writes are still captured afterwards, and the functions are gone outside a run. */
    th_exec(s, "UPDATE products SET price = 101 WHERE id='p1'");
    cr_assert_eq(th_seal(s), 1);
    cr_assert_neq(sqlite3_exec(tsync_store_sqlite(s), "SELECT tillsync_replicate('products')", NULL,
                               NULL, NULL),
                  0, "tillsync_replicate() exists outside a migration");
    tsync_store_free(s);
}

Test(migrate, folder_rules)
{
    const char *dir = tmp();
    tsync_store *s = th_open(th_path(dir, "a.db"));
    migrate_refused(s, th_path(dir, "no-such-folder"), TSYNC_ENOTFOUND, "no-such-folder", NULL);

    const char *mig = folder(2);
    put(mig, "2_other.sql", "SELECT 1;");
    migrate_refused(s, mig, TSYNC_EREFUSED, "002_add_barcode.sql and 2_other.sql", NULL);
    cr_assert_eq(version(s), 0);
    remove(th_path(mig, "2_other.sql"));

    put(mig, "README.md", "how to write migrations");
    put(mig, "0_zero.sql", "SELECT 1;");
    put(mig, "003_.sql", "SELECT 1;");
    put(mig, "004_upper.SQL", "SELECT 1;");
    put(mig, "005_x.sql~", "SELECT 1;");
    cr_assert_eq(mkdir(th_path(mig, "006_dir.sql"), 0700), 0);
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(migrate_ok(s, mig, &r), 2);
    cr_assert_eq(r.nnotes, 6, "%zu notes", r.nnotes);
    const char *ignored[] = {"README.md",     "0_zero.sql", "003_.sql",
                             "004_upper.SQL", "005_x.sql~", "006_dir.sql"};
    for (size_t i = 0; i < 6; i++) {
        int found = 0;
        for (size_t k = 0; k < r.nnotes; k++)
            found |= strstr(r.notes[k], ignored[i]) != NULL && strstr(r.notes[k], "ignored");
        cr_assert(found, "no note says %s was ignored", ignored[i]);
    }
    tsync_migrate_report_clear(&r);

    /* A new file numbered below the version would run out of order here. */
    const char *late = folder(4);
    put(late, "010_ten.sql", "SELECT 10;");
    cr_assert_eq(migrate_ok(s, late, NULL), 3);
    cr_assert_eq(version(s), 10);
    put(late, "007_late.sql", "SELECT 7;");
    migrate_refused(s, late, TSYNC_EREFUSED, "007_late.sql", "below the schema version 10");
    cr_assert_eq(version(s), 10);
    tsync_store_free(s);
}

/* ---------------------------------------------------------------- replication */

Test(migrate, added_column_replicates_between_migrated_tills)
{
    const char *dir = tmp();
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
    cr_assert_eq(migrate_ok(a, folder(1), NULL), 1);
    cr_assert_eq(migrate_ok(b, folder(1), NULL), 1);
    /* Rows with clocks from before the column existed. */
    th_exec(a, "INSERT INTO products(id, name, price, stock) VALUES('p1', 'apple', 100, 10), "
               "('p2', 'pear', 80, 5)");
    th_exec(a, "DELETE FROM products WHERE id='p2'");
    push(a, b);
    const char *mig = folder(2);
    cr_assert_eq(migrate_ok(a, mig, NULL), 1);
    cr_assert_eq(migrate_ok(b, mig, NULL), 1);
    expect_text(a,
                "SELECT group_concat(value, ',') FROM tsync_tables, json_each(cols) WHERE "
                "name='products'",
                "id,name,price,stock,barcode");
    cr_assert_eq(th_int(a,
                        "SELECT count(*) FROM pragma_table_info('tsync_tomb_products') WHERE "
                        "name='barcode'",
                        -1),
                 1, "the tombstone table lacks the new column");
    /* Writes to the new column, on an old row and a new one, are captured, sealed, merged. */
    th_exec(a, "UPDATE products SET barcode = '4006381333931' WHERE id='p1'");
    th_exec(a, "INSERT INTO products(id, name, barcode) VALUES('p3', 'plum', '123')");
    th_exec(a, "UPDATE products SET stock = stock - 1 WHERE id='p1'");
    push(a, b);
    expect_text(b, "SELECT barcode || ':' || stock FROM products WHERE id='p1'", "4006381333931:9");
    expect_text(b, "SELECT barcode FROM products WHERE id='p3'", "123");
    th_exec(b, "UPDATE products SET barcode = '999' WHERE id='p3'");
    th_exec(b, "INSERT INTO products(id, name, price, stock) VALUES('p2', 'pear', 80, 5)");
    push(b, a);
    expect_text(a, "SELECT barcode FROM products WHERE id='p3'", "999");
    /* A row deleted before the migration comes back with the new column's default. */
    cr_assert_eq(th_int(a, "SELECT barcode IS NULL FROM products WHERE id='p2'", -1), 1);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_eq(parked(b, "1"), 0);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(migrate, mixed_versions_park_the_new_column_and_apply_it_after_migrating)
{
    const char *dir = tmp(), *mig1 = folder(1), *mig2 = folder(2);
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
    cr_assert_eq(migrate_ok(a, mig1, NULL), 1);
    cr_assert_eq(migrate_ok(b, mig1, NULL), 1);
    th_exec(a, "INSERT INTO products(id, name, price, stock) VALUES('p1', 'apple', 100, 10)");
    push(a, b);

    /* A is on version 2, B still on 1. */
    cr_assert_eq(migrate_ok(a, mig2, NULL), 1);
    th_exec(a, "UPDATE products SET barcode = 'A-1', price = 150 WHERE id='p1'");
    th_exec(a, "INSERT INTO products(id, name, barcode) VALUES('p2', 'pear', 'A-2')");
    th_exec(b, "UPDATE products SET name = 'green apple' WHERE id='p1'");
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    push_report(a, b, &rep);
    cr_assert_gt(rep.parked, 0);
    tsync_merge_report_clear(&rep);
    /* B parks what it has no column for, and applies the rest of those rows. */
    expect_text(b, "SELECT name || ':' || price FROM products WHERE id='p1'", "green apple:150");
    expect_text(b, "SELECT name FROM products WHERE id='p2'", "pear");
    cr_assert_eq(parked(b, "tbl='products' AND col='barcode'"), 2);
    push(b, a); /* A gets B's write made on version 1 */

    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(migrate_ok(b, mig2, &r), 1);
    cr_assert_eq(r.unparked, 2);
    tsync_migrate_report_clear(&r);
    cr_assert_eq(parked(b, "1"), 0);
    expect_text(b, "SELECT barcode FROM products WHERE id='p1'", "A-1");
    expect_text(b, "SELECT barcode FROM products WHERE id='p2'", "A-2");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    /* And on from there, both ways. */
    th_exec(b, "UPDATE products SET barcode = 'B-2' WHERE id='p2'");
    push(b, a);
    push(a, b);
    expect_text(a, "SELECT barcode FROM products WHERE id='p2'", "B-2");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(migrate, parked_column_changes_are_applied_by_lww_not_by_arrival)
{
    const char *dir = tmp(), *mig1 = folder(1), *mig2 = folder(2);
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db")),
                *c = th_open(th_path(dir, "c.db"));
    tsync_store *all[] = {a, b, c};
    for (int i = 0; i < 3; i++) cr_assert_eq(migrate_ok(all[i], mig1, NULL), 1);
    th_exec(a, "INSERT INTO products(id, name, price) VALUES('p1', 'apple', 100)");
    push(a, b);
    push(a, c);
    cr_assert_eq(migrate_ok(a, mig2, NULL), 1);
    cr_assert_eq(migrate_ok(c, mig2, NULL), 1);
    /* C's clock runs a minute ahead: its write is the later one by LWW although A writes after
     * it. B, still on version 1, receives C's write first and A's second, and parks both. */
    clock_ahead(c, 60000);
    th_exec(c, "UPDATE products SET barcode = 'from C' WHERE id='p1'");
    th_seal(c);
    th_exec(a, "UPDATE products SET barcode = 'from A' WHERE id='p1'");
    th_seal(a);
    push(c, b);
    push(a, b);
    cr_assert_eq(parked(b, "col='barcode'"), 2);
    cr_assert_eq(migrate_ok(b, mig2, NULL), 1);
    expect_text(b, "SELECT barcode FROM products WHERE id='p1'", "from C");
    /* Both writes were made without seeing the other: B reports the conflict as A and C do. */
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_conflicts WHERE col='barcode'", -1), 1);
    push(a, c);
    push(c, a);
    expect_text(a, "SELECT barcode FROM products WHERE id='p1'", "from C");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_str_eq(th_hash(c), th_hash(b));

    /* Now B writes the column concurrently with A, whose clock is further ahead: LWW picks A's
     * write on both, whichever order the bundles go. */
    clock_ahead(a, 120000);
    th_exec(b, "UPDATE products SET barcode = 'from B' WHERE id='p1'");
    th_exec(a, "UPDATE products SET barcode = 'from A again' WHERE id='p1'");
    th_seal(a);
    th_seal(b);
    push(b, a);
    push(a, b);
    expect_text(a, "SELECT barcode FROM products WHERE id='p1'", "from A again");
    expect_text(b, "SELECT barcode FROM products WHERE id='p1'", "from A again");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    for (int i = 0; i < 3; i++) tsync_store_free(all[i]);
}

Test(migrate, a_parked_value_is_applied_before_the_migrations_next_statement)
{
    /* "UPDATE ... WHERE barcode IS NULL" in the migration that adds the column must see what
     * other tills already wrote to it: their parked values apply as soon as the column exists. */
    const char *dir = tmp(), *mig1 = folder(1), *mig2 = folder(1);
    put(mig2, "002_barcode_backfill.sql",
        "ALTER TABLE products ADD COLUMN barcode TEXT;\n"
        "UPDATE products SET barcode = 'none' WHERE barcode IS NULL;\n");
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
    cr_assert_eq(migrate_ok(a, mig1, NULL), 1);
    cr_assert_eq(migrate_ok(b, mig1, NULL), 1);
    th_exec(a, "INSERT INTO products(id, name) VALUES('p1', 'apple')");
    push(a, b);
    th_exec(b, "INSERT INTO products(id, name) VALUES('p2', 'pear')"); /* A has not seen it */
    cr_assert_eq(migrate_ok(a, mig2, NULL), 1);
    th_exec(a, "UPDATE products SET barcode = 'A-1' WHERE id='p1'");
    push(a, b);
    cr_assert_gt(parked(b, "col='barcode'"), 0);
    cr_assert_eq(migrate_ok(b, mig2, NULL), 1);
    expect_text(b, "SELECT barcode FROM products WHERE id='p1'", "A-1");
    expect_text(b, "SELECT barcode FROM products WHERE id='p2'", "none");
    push(b, a);
    expect_text(a,
                "SELECT group_concat(id || '=' || barcode, ',') FROM (SELECT * FROM products "
                "ORDER BY id)",
                "p1=A-1,p2=none");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(migrate, counter_added_by_a_migration_counts_exactly_across_versions)
{
    const char *dir = tmp(), *mig2 = folder(2), *mig3 = folder(3);
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
    cr_assert_eq(migrate_ok(a, mig2, NULL), 2);
    cr_assert_eq(migrate_ok(b, mig2, NULL), 2);
    th_exec(a, "INSERT INTO products(id, name, price, stock) VALUES('p1', 'apple', 100, 50)");
    push(a, b);
    cr_assert_eq(migrate_ok(a, mig3, NULL), 1);
    /* A sells three, in three batches; B (version 2) parks each counter change. */
    for (int i = 0; i < 3; i++) {
        th_exec(a, "UPDATE products SET sold = sold + 1, stock = stock - 1 WHERE id='p1'");
        th_seal(a);
    }
    push(a, b);
    th_exec(b, "UPDATE products SET stock = stock - 1 WHERE id='p1'"); /* B sells one too */
    for (int i = 0; i < 2; i++) {
        th_exec(a, "UPDATE products SET sold = sold + 1, stock = stock - 1 WHERE id='p1'");
        th_seal(a);
    }
    push(a, b);
    cr_assert_eq(parked(b, "col='sold'"), 5);
    cr_assert_eq(th_int(b, "SELECT stock FROM products WHERE id='p1'", -1), 44);
    cr_assert_eq(migrate_ok(b, mig3, NULL), 1);
    cr_assert_eq(th_int(b, "SELECT sold FROM products WHERE id='p1'", -1), 5);
    cr_assert_eq(parked(b, "1"), 0);
    /* From here both count, and a row inserted after the migration counts from its value. */
    th_exec(b, "UPDATE products SET sold = sold + 4 WHERE id='p1'");
    th_exec(a, "UPDATE products SET sold = sold + 1 WHERE id='p1'");
    th_exec(a, "INSERT INTO products(id, name, sold) VALUES('p2', 'pear', 2)");
    push(b, a);
    push(a, b);
    cr_assert_eq(th_int(a, "SELECT sold FROM products WHERE id='p1'", -1), 10);
    cr_assert_eq(th_int(b, "SELECT sold FROM products WHERE id='p1'", -1), 10);
    cr_assert_eq(th_int(b, "SELECT sold FROM products WHERE id='p2'", -1), 2);
    cr_assert_eq(th_int(b, "SELECT stock FROM products WHERE id='p1'", -1), 44);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    /* A counter takes integers only, as one made by replicate does. */
    cr_assert_neq(
        sqlite3_exec(tsync_store_sqlite(a), "UPDATE products SET sold = 'x'", NULL, NULL, NULL), 0);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(migrate, table_replicated_by_a_migration_reaches_a_till_that_migrates_later)
{
    const char *dir = tmp(), *mig1 = folder(1), *mig4 = folder(4), *mig5 = folder(5);
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
    cr_assert_eq(migrate_ok(a, mig1, NULL), 1);
    cr_assert_eq(migrate_ok(b, mig1, NULL), 1);
    /* A goes to version 5: orders (with a counter and, from 005, a note). */
    cr_assert_eq(migrate_ok(a, mig5, NULL), 4);
    th_exec(a, "INSERT INTO orders(id, product, qty, note) VALUES('o1', 'p1', 2, 'first'), "
               "('o2', 'p1', 3, 'second')");
    th_seal(a);
    th_exec(a, "UPDATE orders SET qty = qty + 1 WHERE id='o1'");
    th_exec(a, "DELETE FROM orders WHERE id='o2'");
    th_seal(a);
    push(a, b);
    cr_assert_gt(parked(b, "tbl='orders' AND col IS NULL"), 0);

    /* B goes to version 4 only: the rows apply, the note waits for 005, as a column. */
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(migrate_ok(b, mig4, &r), 3);
    cr_assert_gt(r.unparked, 0);
    tsync_migrate_report_clear(&r);
    expect_text(b, "SELECT group_concat(id || ':' || qty, ',') FROM orders", "o1:3");
    cr_assert_eq(parked(b, "tbl='orders' AND col IS NULL"), 0);
    cr_assert_gt(parked(b, "tbl='orders' AND col='note'"), 0);
    cr_assert_eq(migrate_ok(b, mig5, NULL), 1);
    expect_text(b, "SELECT note FROM orders WHERE id='o1'", "first");
    cr_assert_eq(parked(b, "1"), 0);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    /* Both ways from now on. */
    th_exec(b, "INSERT INTO orders(id, product, qty) VALUES('o3', 'p2', 1)");
    th_exec(b, "UPDATE orders SET qty = qty + 5 WHERE id='o1'");
    push(b, a);
    expect_text(a,
                "SELECT group_concat(id || ':' || qty, ',') FROM (SELECT * FROM orders ORDER BY "
                "id)",
                "o1:8,o3:1");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(migrate, schema_version_reads_without_writing)
{
    const char *dir = tmp();
    tsync_store *s = th_open(th_path(dir, "a.db"));
    int64_t n = th_int(s, "SELECT count(*) FROM sqlite_schema", -1);
    cr_assert_eq(version(s), 0);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM sqlite_schema", -1), n,
                 "reading the version created something");
    char *js = NULL;
    cr_assert_eq(tsync_store_migrations_json(&js, s), 0);
    cr_assert(strstr(js, "\"version\": 0"), "%s", js);
    free(js);
    /* An empty folder is nothing to do, and creates nothing either. */
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(migrate_ok(s, tmp(), &r), 0);
    cr_assert_eq(r.to_version, 0);
    tsync_migrate_report_clear(&r);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM sqlite_schema", -1), n);
    cr_assert_eq(migrate_ok(s, folder(3), NULL), 3);
    cr_assert_eq(version(s), 3);
    tsync_store_free(s);
}

Test(migrate, column_added_outside_a_migration_is_taken_into_replication)
{
    const char *dir = tmp();
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
    cr_assert_eq(migrate_ok(a, folder(1), NULL), 1);
    cr_assert_eq(migrate_ok(b, folder(1), NULL), 1);
    /* Someone altered the table by hand: its writes were not captured for the new column. */
    th_exec(a, "ALTER TABLE products ADD COLUMN colour TEXT");
    th_exec(b, "ALTER TABLE products ADD COLUMN colour TEXT");
    const char *mig = folder(1);
    put(mig, "002_noop.sql", "SELECT 1;\n");
    cr_assert_eq(migrate_ok(a, mig, NULL), 1);
    cr_assert_eq(migrate_ok(b, mig, NULL), 1);
    th_exec(a, "INSERT INTO products(id, name, colour) VALUES('p1', 'mug', 'blue')");
    push(a, b);
    expect_text(b, "SELECT colour FROM products WHERE id='p1'", "blue");
    /* A rename made by hand is refused, naming it, and changes nothing. */
    th_exec(a, "ALTER TABLE products RENAME COLUMN colour TO color");
    put(mig, "003_noop.sql", "SELECT 2;\n");
    migrate_refused(a, mig, TSYNC_EUNSUPPORTED, "outside a migration", "renames column colour");
    cr_assert_eq(version(a), 2);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(migrate, a_table_replicated_by_a_migration_can_get_counters_in_it)
{
    const char *dir = tmp(), *mig = folder(1);
    put(mig, "002_bins.sql",
        "CREATE TABLE bins(id TEXT PRIMARY KEY, qty INTEGER NOT NULL DEFAULT 0, label TEXT);\n"
        "INSERT INTO bins(id, label) VALUES('b1', 'front');\n"
        "SELECT tillsync_replicate('bins');\n"
        "SELECT tillsync_counter('bins', 'qty');\n"
        "UPDATE bins SET label = 'front shelf' WHERE id = 'b1';\n");
    tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
    cr_assert_eq(migrate_ok(a, mig, NULL), 2);
    cr_assert_eq(migrate_ok(b, mig, NULL), 2);
    expect_text(a, "SELECT counters FROM tsync_tables WHERE name='bins'", "[\"qty\"]");
    th_exec(a, "UPDATE bins SET qty = qty + 2");
    th_exec(b, "UPDATE bins SET qty = qty + 3");
    push(a, b);
    push(b, a);
    /* The row each till's migration inserted is one row; both tills' counts add up. */
    cr_assert_eq(th_int(a, "SELECT qty FROM bins WHERE id='b1'", -1), 5);
    cr_assert_eq(th_int(b, "SELECT qty FROM bins WHERE id='b1'", -1), 5);
    expect_text(b, "SELECT label FROM bins WHERE id='b1'", "front shelf");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(migrate, rows_a_till_had_before_replicating_meet_parked_rows_by_lww)
{
    /* notes exists on every till (002) but replicates only from 003. B writes n1 before it
     * replicates, with the later clock; A's n1, parked at B, must lose to it, and not be taken
     * for B's own write when B's rows are recorded as local inserts. Done both by a migration and
     * by tsync_store_replicate. */
    for (int by_hand = 0; by_hand < 2; by_hand++) {
        const char *dir = tmp(), *mig2 = folder(1), *mig3 = folder(1);
        const char *m2 = "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT);\n";
        put(mig2, "002_notes.sql", m2);
        put(mig3, "002_notes.sql", m2);
        put(mig3, "003_replicate_notes.sql", "SELECT tillsync_replicate('notes');\n");
        tsync_store *a = th_open(th_path(dir, "a.db")), *b = th_open(th_path(dir, "b.db"));
        cr_assert_eq(migrate_ok(a, mig3, NULL), 3);
        cr_assert_eq(migrate_ok(b, mig2, NULL), 2);
        th_exec(a, "INSERT INTO notes VALUES('n1', 'from A'), ('n2', 'only A')");
        th_seal(a);
        clock_ahead(b, 60000);
        th_exec(b, "INSERT INTO notes VALUES('n1', 'from B')");
        push(a, b);
        cr_assert_eq(parked(b, "tbl='notes'"), 2);
        if (by_hand)
            cr_assert_eq(tsync_store_replicate(b, "notes", NULL, 0), 0, "%s", th_errmsg());
        else
            cr_assert_eq(migrate_ok(b, mig3, NULL), 1);
        expect_text(b,
                    "SELECT group_concat(id || '=' || body, ',') FROM (SELECT * FROM notes "
                    "ORDER BY id)",
                    "n1=from B,n2=only A");
        cr_assert_eq(parked(b, "1"), 0, "something stayed parked");
        push(b, a);
        expect_text(a, "SELECT body FROM notes WHERE id='n1'", "from B");
        cr_assert_str_eq(th_hash(a), th_hash(b));
        tsync_store_free(a);
        tsync_store_free(b);
    }
}
