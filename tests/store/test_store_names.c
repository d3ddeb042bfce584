/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_names.c — table and column names compare as SQLite compares them: ASCII
 * letters without regard to case. Two tills whose schemas spell a name differently (`Items` on
 * one, `items` on the other: one table to SQLite) must merge each other's batches, bundles and
 * snapshots without parking anything, `replicate` must find the table under either spelling,
 * migrations that add a column spelled differently must take the parked changes, and import must
 * match a header to a column the same way. Their content hashes must agree.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/io.h"
#include "store/snapshot.h"
#include "tests/lib/helpers.h"

TestSuite(store_names, .fini = th_cleanup);

static int64_t parked(tsync_store *s)
{
    return th_int(s, "SELECT count(*) FROM tsync_parked", -1);
}

/* A till with `Items` spelled upper on A and lower on B, Qty a counter on both. */
static tsync_store *open_items(const char *path, int upper)
{
    tsync_store *s = th_open(path);
    th_exec(s, upper ? "CREATE TABLE Items(Id TEXT PRIMARY KEY, Name TEXT, Qty INTEGER NOT NULL "
                       "DEFAULT 0)"
                     : "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER NOT NULL "
                       "DEFAULT 0)");
    const char *ctr[] = {upper ? "Qty" : "qty"};
    cr_assert_eq(tsync_store_replicate(s, upper ? "Items" : "items", ctr, 1), 0, "replicate: %s",
                 th_errmsg());
    return s;
}

Test(store_names, batches_merge_across_case)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_items(th_path(d, "a.db"), 1);
    tsync_store *b = open_items(th_path(d, "b.db"), 0);
    th_exec(a, "INSERT INTO Items VALUES('i1', 'bread', 10)");
    th_exec(b, "INSERT INTO items VALUES('i2', 'milk', 5)");
    th_seal(a);
    th_seal(b);
    cr_assert_eq(th_sync(a, b), 0, "A to B: %s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "B to A: %s", th_errmsg());
    cr_assert_eq(parked(a), 0, "A parked B's changes for Items");
    cr_assert_eq(parked(b), 0, "B parked A's changes for items");
    /* both sell the same item: the counter adds up on both sides */
    th_exec(a, "UPDATE Items SET Qty = Qty - 1, Name = 'Bread' WHERE Id='i1'");
    th_exec(b, "UPDATE items SET qty = qty - 2 WHERE id='i1'");
    th_seal(a);
    th_seal(b);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(parked(a) + parked(b), 0, "changes parked");
    cr_assert_eq(th_int(a, "SELECT qty FROM items WHERE id='i1'", -1), 7);
    cr_assert_eq(th_int(b, "SELECT qty FROM items WHERE id='i1'", -1), 7);
    TH_AUTO_FREE char *nm = th_text(b, "SELECT name FROM items WHERE id='i1'");
    cr_assert_str_eq(nm ? nm : "(null)", "Bread");
    cr_assert_eq(th_int(a, "SELECT count(*) FROM items", -1), 2);
    cr_assert_str_eq(th_hash(a), th_hash(b), "content hashes differ");
    uint8_t h1[TSYNC_HASH_BYTES], h2[TSYNC_HASH_BYTES];
    cr_assert_eq(tsync_store_hash(h1, a, "items"), 0, "hash of one table, other spelling: %s",
                 th_errmsg());
    cr_assert_eq(tsync_store_hash(h2, b, "ITEMS"), 0, "%s", th_errmsg());
    cr_assert(memcmp(h1, h2, sizeof h1) == 0, "hash of the table differs");
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(store_names, replicate_finds_the_table_under_another_spelling)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_items(th_path(d, "a.db"), 1);
    tsync_store *b = th_open(th_path(d, "b.db"));
    th_exec(b, "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER NOT NULL "
               "DEFAULT 0)");
    th_exec(a, "INSERT INTO Items VALUES('i1', 'bread', 10)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(parked(b), 1, "B does not replicate items yet: the change waits");
    /* the name as the other till spells it, the counter too */
    const char *ctr[] = {"QTY"};
    cr_assert_eq(tsync_store_replicate(b, "Items", ctr, 1), 0, "replicate B Items: %s",
                 th_errmsg());
    cr_assert_eq(parked(b), 0, "the parked change did not apply");
    cr_assert_eq(th_int(b, "SELECT qty FROM items WHERE id='i1'", -1), 10);
    /* recorded as the schema spells it */
    TH_AUTO_FREE char *nm = th_text(b, "SELECT name FROM tsync_tables");
    cr_assert_str_eq(nm ? nm : "(null)", "items");
    TH_AUTO_FREE char *ct = th_text(b, "SELECT counters FROM tsync_tables");
    cr_assert_str_eq(ct ? ct : "(null)", "[\"qty\"]");
    cr_assert_eq(tsync_store_replicate(b, "ITEMS", NULL, 0), TSYNC_EEXISTS,
                 "replicating it again under a third spelling");
    th_exec(b, "UPDATE items SET qty = qty - 1 WHERE id='i1'");
    th_seal(b);
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(parked(a), 0);
    cr_assert_eq(th_int(a, "SELECT Qty FROM Items WHERE Id='i1'", -1), 9);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

Test(store_names, migration_adds_a_column_spelled_otherwise)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_items(th_path(d, "a.db"), 1);
    tsync_store *b = open_items(th_path(d, "b.db"), 0);
    const char *ma = th_path(d, "ma"), *mb = th_path(d, "mb");
    cr_assert_eq(mkdir(ma, 0700), 0);
    cr_assert_eq(mkdir(mb, 0700), 0);
    write_file(th_path(ma, "001_note.sql"), "ALTER TABLE ITEMS ADD COLUMN Note TEXT;\n"
                                            "ALTER TABLE items ADD COLUMN Sold INTEGER NOT NULL "
                                            "DEFAULT 0;\n"
                                            "SELECT tillsync_counter('ITEMS', 'sold');\n");
    tsync_migrate_report rep = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(tsync_store_migrate(a, ma, &rep), 0, "migrate A: %s", th_errmsg());
    tsync_migrate_report_clear(&rep);
    th_exec(a, "INSERT INTO Items(Id, Name, Note, Sold) VALUES('i1', 'bread', 'fresh', 3)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert(parked(b) > 0, "B lacks the columns: their changes wait");
    write_file(th_path(mb, "001_note.sql"), "ALTER TABLE items ADD COLUMN note TEXT;\n"
                                            "ALTER TABLE Items ADD COLUMN SOLD INTEGER NOT NULL "
                                            "DEFAULT 0;\n"
                                            "SELECT tillsync_counter('items', 'Sold');\n");
    cr_assert_eq(tsync_store_migrate(b, mb, &rep), 0, "migrate B: %s", th_errmsg());
    cr_assert_eq(parked(b), 0, "the parked columns did not apply");
    tsync_migrate_report_clear(&rep);
    TH_AUTO_FREE char *note = th_text(b, "SELECT note FROM items WHERE id='i1'");
    cr_assert_str_eq(note ? note : "(null)", "fresh");
    cr_assert_eq(th_int(b, "SELECT sold FROM items WHERE id='i1'", -1), 3);
    th_exec(b, "UPDATE items SET sold = sold + 1, note = 'day old' WHERE id='i1'");
    th_seal(b);
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(parked(a), 0);
    cr_assert_eq(th_int(a, "SELECT Sold FROM Items WHERE Id='i1'", -1), 4);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

typedef struct {
    uint8_t *c[64];
    size_t len[64];
    size_t n;
    tsync__vv vv;
} snap;

static int collect(void *ctx, const uint8_t *chunk, size_t len)
{
    snap *sn = ctx;
    cr_assert(sn->n < 64);
    sn->c[sn->n] = malloc(len);
    memcpy(sn->c[sn->n], chunk, len);
    sn->len[sn->n++] = len;
    return 0;
}

Test(store_names, snapshot_across_case)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_items(th_path(d, "a.db"), 1);
    tsync_store *b = open_items(th_path(d, "b.db"), 0);
    th_exec(a, "INSERT INTO Items VALUES('i1', 'bread', 10)");
    th_exec(a, "INSERT INTO Items VALUES('i2', 'milk', 4)");
    th_seal(a);
    snap sn;
    memset(&sn, 0, sizeof sn);
    cr_assert_eq(tsync__snap_export(a, TSYNC__SNAP_CHUNK_BYTES, collect, &sn, &sn.vv), 0,
                 "export: %s", th_errmsg());
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync__snap_import(b, (const uint8_t *const *)sn.c, sn.len, sn.n, &sn.vv, &rep);
    cr_assert_eq(rc, 0, "snapshot of Items into a till with items: %s", th_errmsg());
    cr_assert_eq(rep.parked + rep.refused, 0);
    tsync_merge_report_clear(&rep);
    for (size_t i = 0; i < sn.n; i++) free(sn.c[i]);
    tsync__vv_free(&sn.vv);
    cr_assert_eq(th_int(b, "SELECT qty FROM items WHERE id='i1'", -1), 10);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(store_names, import_matches_headers_without_case)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *b = open_items(th_path(d, "b.db"), 0);
    const char *csv = th_path(d, "items.csv");
    write_file(csv, "ID,Name,QTY\r\ni1,bread,10\r\n");
    FILE *in = fopen(csv, "r");
    cr_assert(in);
    tsync__import_opts o = {0};
    o.name = csv;
    o.format = TSYNC__IO_CSV;
    int rc = tsync__import(b, "ITEMS", in, &o);
    fclose(in);
    cr_assert_eq(rc, 0, "import with the header spelled otherwise: %s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT qty FROM items WHERE id='i1'", -1), 10);
    tsync_store_free(b);
}
