/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_collect.c — collecting deleted rows (store/collect.c; docs/DATA_MODEL.md,
 * "Collecting tombstones and clock entries"): a deleted row's tombstone and clock entry go once
 * every certified till acknowledged its delete, and one test per rule collection needs first,
 * each failing without it: a snapshot deletes what its exporter collected (the frontier), rows
 * with counters stay, a table stays while a till lacks its last column, and a restored till's
 * new incarnation has acknowledged nothing.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/schema.h"
#include "store/snapshot.h"
#include "store/sync.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"
#include "tillsync/backup.h"
#include "tillsync/migrate.h"
#include "tillsync/status.h"

TestSuite(collect, .fini = th_cleanup);

static tsync__shopkey shop;

/* A till of the shop: products (stock a counter) and notes (no counter). */
static tsync_store *till(const char *dir, const char *name)
{
    char file[64];
    snprintf(file, sizeof file, "%s.db", name);
    tsync_store *s = th_open_products(th_path(dir, file));
    th_exec(s, "CREATE TABLE IF NOT EXISTS notes(id TEXT PRIMARY KEY, body TEXT, n INTEGER)");
    int rc = tsync_store_replicate(s, "notes", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "%s", th_errmsg());
    if (!tsync__trust_enrolled(s, NULL)) th_must_enrol(s, &shop, name);
    return s;
}

static void meet(tsync_store *a, tsync_store *b)
{
    th_tell(a, b);
    th_tell(b, a);
}

/* member acknowledges to `to` what it holds (what a node stores from an ACK). */
static void ack(tsync_store *to, tsync_store *member)
{
    tsync__vv v;
    cr_assert_eq(tsync__sync_vv(member, &v), 0);
    cr_assert_eq(tsync__sync_ack_put(to, tsync__sync_public_key(member), &v), 0, "%s", th_errmsg());
    tsync__vv_free(&v);
}

static size_t collect(tsync_store *s)
{
    size_t n = 0;
    cr_assert_eq(tsync_store_collect(s, &n), 0, "%s", th_errmsg());
    return n;
}

/* A mark, every other till acknowledging, a collection: what a node's prune rounds do. */
static size_t settle(tsync_store *s, tsync_store **others, int n)
{
    collect(s);
    for (int i = 0; i < n; i++) ack(s, others[i]);
    size_t got = collect(s);
    return got;
}

static int64_t clocks(tsync_store *s, const char *table)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM tsync_clk_%s", table);
    return th_int(s, sql, -1);
}

static int64_t tombs(tsync_store *s, const char *table)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM tsync_tomb_%s", table);
    return th_int(s, sql, -1);
}

typedef struct {
    uint8_t *chunk[64];
    size_t len[64];
    size_t n;
} chunks;

static int keep_chunk(void *ctx, const uint8_t *c, size_t len)
{
    chunks *k = ctx;
    cr_assert_lt(k->n, 64);
    k->chunk[k->n] = malloc(len);
    memcpy(k->chunk[k->n], c, len);
    k->len[k->n++] = len;
    return 0;
}

/* A snapshot from `from` into `to`, streamed chunk by chunk as the node does. */
static void give_snapshot(tsync_store *from, tsync_store *to)
{
    chunks k = {0};
    tsync__vv vv;
    cr_assert_eq(tsync__snap_export(from, 256, keep_chunk, &k, &vv), 0, "%s", th_errmsg());
    tsync__snap_in *in = NULL;
    cr_assert_eq(tsync__snap_in_open(to, &vv, &in), 0, "%s", th_errmsg());
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    for (size_t i = 0; i < k.n; i++)
        cr_assert_eq(tsync__snap_in_chunk(in, k.chunk[i], k.len[i], &r), 0, "%s", th_errmsg());
    cr_assert_eq(tsync__snap_in_finish(in, &r), 0, "%s", th_errmsg());
    tsync__snap_in_free(in);
    tsync_merge_report_clear(&r);
    tsync__vv_free(&vv);
    for (size_t i = 0; i < k.n; i++) free(k.chunk[i]);
}

/* A migration that adds column tag to notes. */
static void add_tag(tsync_store *s, const char *dir, const char *name)
{
    char mig[64];
    snprintf(mig, sizeof mig, "mig_%s", name);
    TH_AUTO_FREE char *m = strdup(th_path(dir, mig));
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", m);
    cr_assert_eq(system(cmd), 0);
    FILE *f = fopen(th_path(m, "1_tag.sql"), "wb");
    cr_assert(f);
    fputs("ALTER TABLE notes ADD COLUMN tag TEXT;\n", f);
    fclose(f);
    cr_assert_eq(tsync_store_migrate(s, m, NULL), 0, "%s", th_errmsg());
}

static void setup_shop(void)
{
    shop = th_shop_make(7, 9, "collect shop");
}

Test(collect, a_stable_delete_loses_its_tombstone_and_clocks, .init = setup_shop)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = till(d, "a"), *b = till(d, "b");
    meet(a, b);
    for (int i = 0; i < 50; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO notes VALUES('n%03d', 'note number %d', %d)", i, i,
                 i);
        th_exec(a, sql);
    }
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    th_exec(a, "DELETE FROM notes WHERE id < 'n020'");
    th_seal(a);
    cr_assert_eq(tombs(a, "notes"), 20);
    /* b has not seen the delete: nothing goes. */
    cr_assert_eq(collect(a), 0, "a marks the deleted rows");
    ack(a, b);
    cr_assert_eq(collect(a), 0);
    cr_assert_eq(clocks(a, "notes"), 50);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(collect(a), 0, "b's stored acknowledgement still lacks the delete");
    ack(a, b);
    cr_assert_eq(collect(a), 20);
    /* An acknowledgement stored before the rows were marked does not count for them. */
    th_exec(a, "DELETE FROM notes WHERE id < 'n040'");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    ack(a, b);
    cr_assert_eq(collect(a), 0, "a marks now: b's acknowledgement is older than the mark");
    cr_assert_eq(collect(a), 0);
    ack(a, b);
    cr_assert_eq(collect(a), 20);
    cr_assert_eq(tombs(a, "notes"), 0);
    cr_assert_eq(clocks(a, "notes"), 10);
    cr_assert_str_eq(th_hash(a), th_hash(b));

    /* The log JSON shows what was collected and the frontier. */
    char *js = NULL;
    cr_assert_eq(tsync_store_log_json(&js, a), 0, "%s", th_errmsg());
    json_t *o = json_loads(js, 0, NULL);
    free(js);
    json_t *c = json_object_get(o, "collect");
    cr_assert_eq(json_integer_value(json_object_get(c, "rows")), 40);
    cr_assert_eq(json_integer_value(json_object_get(c, "pending")), 0);
    cr_assert_eq(json_integer_value(json_object_get(c, "pending")), 0);
    cr_assert_eq(json_array_size(json_object_get(c, "frontier")), 1);
    json_decref(o);

    /* A re-insert after collection shows the same everywhere. */
    th_exec(b, "INSERT INTO notes VALUES('n001', 'back', NULL)");
    th_seal(b);
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_eq(th_int(a, "SELECT n IS NULL FROM notes WHERE id = 'n001'", -1), 1);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* Nothing is collected in a database that is not enrolled: no till certifies what it saw. */
Test(collect, nothing_goes_without_enrolment)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    th_exec(a, "INSERT INTO products VALUES('p1', 'x', 1, 0)");
    th_seal(a);
    th_exec(a, "DELETE FROM products");
    th_seal(a);
    cr_assert_eq(collect(a), 0);
    cr_assert_eq(collect(a), 0);
    cr_assert_eq(tombs(a, "products"), 1);
    tsync_store_free(a);
}

/* Prerequisite 1: the frontier. c was restored from a backup taken before the delete (it shows
 * the row) and is behind a's horizon: a's snapshot lacks the row a collected, and its frontier
 * makes c delete it. Without the frontier c keeps it for ever. */
Test(collect, a_snapshot_deletes_what_its_exporter_collected, .init = setup_shop)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = till(d, "a"), *b = till(d, "b"), *c = till(d, "c");
    meet(a, b);
    th_exec(a, "INSERT INTO notes VALUES('gone', 'old', 1), ('kept', 'k', 2)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg()); /* c: the old copy, never a member here */
    th_exec(a, "DELETE FROM notes WHERE id = 'gone'");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(settle(a, &b, 1), 1);
    cr_assert_eq(clocks(a, "notes"), 1);
    /* c's own row, written where a never saw it, stays: its clock is above the frontier. */
    th_exec(c, "INSERT INTO notes VALUES('mine', 'c', 3)");
    th_seal(c);
    give_snapshot(a, c);
    cr_assert_eq(th_int(c, "SELECT count(*) FROM notes WHERE id = 'gone'", -1), 0);
    cr_assert_eq(th_int(c, "SELECT count(*) FROM notes WHERE id = 'mine'", -1), 1);
    cr_assert_eq(th_sync(c, a), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(c));
    /* c passes the frontier on: a new till joining from c (which collected nothing) while holding
     * the old row is brought to the same. */
    tsync_store *e = till(d, "e");
    th_exec(e, "INSERT INTO notes VALUES('gone', 'old', 1)"); /* as an old copy would hold it */
    th_seal(e);
    give_snapshot(c, e);
    cr_assert_eq(th_int(e, "SELECT count(*) FROM notes WHERE id = 'gone'", -1), 1,
                 "e's own insert is not one a collected (it is above the frontier)");
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
    tsync_store_free(e);
}

/* A snapshot without a frontier is format 1, byte for byte as before; one with a frontier is
 * format 3, and a format-3 chunk re-encodes to its bytes. */
Test(collect, the_frontier_is_a_format_3_first_chunk, .init = setup_shop)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = till(d, "a"), *b = till(d, "b");
    meet(a, b);
    th_exec(a, "INSERT INTO notes VALUES('x', 'x', 1)");
    th_seal(a);
    chunks k = {0};
    tsync__vv vv;
    cr_assert_eq(tsync__snap_export(a, TSYNC__SNAP_CHUNK_BYTES, keep_chunk, &k, &vv), 0);
    cr_assert_eq(k.chunk[0][1], 1, "format 1");
    tsync__vv_free(&vv);
    free(k.chunk[0]);
    th_exec(a, "DELETE FROM notes");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(settle(a, &b, 1), 1);
    memset(&k, 0, sizeof k);
    cr_assert_eq(tsync__snap_export(a, TSYNC__SNAP_CHUNK_BYTES, keep_chunk, &k, &vv), 0);
    cr_assert_eq(k.chunk[0][0], 0x95, "five fields");
    cr_assert_eq(k.chunk[0][1], 3, "format 3");
    tsync__arena ar = {0};
    tsync__snap_chunk c;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__snap_decode(k.chunk[0], k.len[0], &c, &ar, err), 0, "%s", err);
    cr_assert_eq(c.nfront, 1);
    uint8_t *re = NULL;
    size_t relen = 0;
    cr_assert_eq(tsync__snap_encode(&c, &re, &relen), 0);
    cr_assert_eq(relen, k.len[0]);
    cr_assert_eq(memcmp(re, k.chunk[0], relen), 0);
    free(re);
    tsync__arena_free(&ar);
    tsync__vv_free(&vv);
    for (size_t i = 0; i < k.n; i++) free(k.chunk[i]);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* Prerequisite 2: counters. A deleted row whose counter counted is kept: a re-insert adds to the
 * count where the row was not collected, so a replica that collected it would show less. */
Test(collect, a_row_whose_counter_counted_is_kept, .init = setup_shop)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = till(d, "a"), *b = till(d, "b");
    meet(a, b);
    th_exec(a, "INSERT INTO products VALUES('p1', 'tea', 3, 5), ('p2', 'jam', 4, 0)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    th_exec(a, "DELETE FROM products");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    size_t got = settle(a, &b, 1);
    th_exec(b, "INSERT INTO products VALUES('p1', 'tea', 3, 2), ('p2', 'jam', 4, 1)");
    th_seal(b);
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT stock FROM products WHERE id = 'p1'", -1),
                 th_int(b, "SELECT stock FROM products WHERE id = 'p1'", -2),
                 "a re-insert counts from the same place on both");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_eq(got, 1, "p2 (counter never moved) goes, p1 stays");
    tsync_store_free(a);
    tsync_store_free(b);
}

/* Prerequisite 3: schema. While b describes notes without the column a migration added, no row
 * of notes goes (b's re-insert would leave that column to the tombstone where it is kept). */
Test(collect, a_table_stays_while_a_till_lacks_its_last_column, .init = setup_shop)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = till(d, "a"), *b = till(d, "b");
    meet(a, b); /* b's definitions as they are now */
    add_tag(a, d, "a");
    th_exec(a, "INSERT INTO notes VALUES('x', 'x', 1, 'red')");
    th_exec(a, "INSERT INTO products VALUES('p9', 'x', 1, 0)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    th_exec(a, "DELETE FROM notes");
    th_exec(a, "DELETE FROM products");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(settle(a, &b, 1), 1, "products goes, notes stays");
    cr_assert_eq(tombs(a, "notes"), 1);
    /* b migrates and says so: notes goes too. */
    add_tag(b, d, "b");
    th_tell(b, a);
    th_exec(b, "INSERT INTO products VALUES('p8', 'y', 1, 0)"); /* something new to mark on */
    th_seal(b);
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(settle(a, &b, 1), 1);
    cr_assert_eq(tombs(a, "notes"), 0);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* Prerequisite 4: acknowledgements per incarnation. b acknowledged the delete, then was restored
 * from a backup taken before it: once its new incarnation's batches reach a, b's old
 * acknowledgement no longer counts, until b acknowledges again. */
Test(collect, a_restored_till_has_acknowledged_nothing, .init = setup_shop)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = till(d, "a"), *b = till(d, "b");
    meet(a, b);
    th_exec(a, "INSERT INTO notes VALUES('x', 'x', 1), ('y', 'y', 2)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_backup(b, th_path(d, "b.bak"), NULL, NULL), 0, "%s", th_errmsg());
    th_exec(a, "DELETE FROM notes WHERE id = 'x'");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    collect(a);
    ack(a, b); /* b holds the delete: a's mark is covered */
    tsync_store_free(b);
    cr_assert_eq(tsync_restore(th_path(d, "b.db"), th_path(d, "b.bak"), NULL, NULL), 0, "%s",
                 th_errmsg());
    b = till(d, "b");
    th_exec(b, "INSERT INTO notes VALUES('z', 'z', 3)");
    th_seal(b);
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(collect(a), 0, "b's acknowledgement was of its old incarnation");
    cr_assert_eq(tombs(a, "notes"), 1);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(settle(a, &b, 1), 1);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}
