/*
 * tests/store/test_seal_bulk.c — capture version 4: the triggers fold each change into one
 * tsync_pending row per changed row, and sealing reads those rows in key order. Seeded property
 * test against the reference, the capture of version 3 (one pending row per captured change,
 * folded by GROUP BY when sealing): on the same writes the folded rows are the same, and sealing
 * them writes the same batches (same hashes), the same clock entries and tombstones, and a fresh
 * till merging either bundle shows the same rows. Mixed inserts, updates, deletes, key updates,
 * replaces and counter changes, over several seal rounds.
 *
 * How the reference runs: the version 3 capture is kept beside the real one (copies of the
 * triggers without the fold, writing ref_pending, in the same statements and so at the same wall
 * time). Before sealing, the database is saved; ref_pending is made the tsync_pending of a
 * version 3 database, which the store folds at open (the upgrade path) and seals; then the saved
 * file is written back over it (same file, so the till keeps its identity) and sealed the new way.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/internal.h"
#include "tests/lib/helpers.h"

TestSuite(seal_bulk, .fini = th_cleanup);

/* What capture version 4 appends to each INSERT INTO tsync_pending (store/replicate.c); the
 * reference triggers are the same without it. */
static const char FOLD[] =
    " ON CONFLICT(tbl,k0,k1,k2,k3) DO UPDATE SET op=CASE WHEN op=excluded.op OR excluded.op=2 "
    "THEN op WHEN op=2 THEN excluded.op ELSE 4 END, mask=mask|excluded.mask, "
    "wall=max(wall,excluded.wall)";

static tsync_store *open_shop(const char *path)
{
    tsync_store *s = th_open_products(path);
    th_exec(s, "CREATE TABLE IF NOT EXISTS lines(shop TEXT, n INTEGER, item TEXT, qty INTEGER, "
               "note BLOB, PRIMARY KEY(shop, n)) WITHOUT ROWID;"
               "CREATE TABLE IF NOT EXISTS moves(id INT PRIMARY KEY, what TEXT, amount REAL)");
    int rc = tsync_store_replicate(s, "lines", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate lines: %s", tsync_error_last()->message);
    rc = tsync_store_replicate(s, "moves", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate moves: %s", tsync_error_last()->message);
    return s;
}

/* One random statement of the workload. */
static void random_write(uint64_t *rng, char *sql, size_t n)
{
    uint64_t r = th_rand(rng);
    int a = (int)(th_rand(rng) % 200), b = a + 1 + (int)(th_rand(rng) % 80);
    int v = (int)(th_rand(rng) % 1000) - 300;
    switch (r % 11) {
    case 0:
        snprintf(sql, n,
                 "WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x<%d) "
                 "INSERT OR IGNORE INTO products SELECT printf('p%%05d',x), 'product '||x, "
                 "x*%d %% 997, x %% 7 FROM c",
                 a, b, v);
        break;
    case 1: /* the same rows several times: folded */
        snprintf(sql, n,
                 "UPDATE products SET price=price+1 WHERE id BETWEEN 'p%05d' AND 'p%05d'; "
                 "UPDATE products SET name=name||'x' WHERE id BETWEEN 'p%05d' AND 'p%05d'",
                 a, b, a + 5, b + 5);
        break;
    case 2: /* the counter */
        snprintf(sql, n, "UPDATE products SET stock=stock+%d WHERE id BETWEEN 'p%05d' AND 'p%05d'",
                 v, a, b);
        break;
    case 3: /* deleted, and some of it back in the same window */
        snprintf(sql, n,
                 "DELETE FROM products WHERE id BETWEEN 'p%05d' AND 'p%05d'; INSERT OR IGNORE "
                 "INTO products VALUES('p%05d', 'back', %d, 1)",
                 a, a + 30, a + 3, v);
        break;
    case 4:
        snprintf(sql, n,
                 "INSERT OR REPLACE INTO products VALUES('p%05d', NULL, %d, 3), "
                 "('p%05d', 'replaced', NULL, 4)",
                 a, v, b);
        break;
    case 5:
        snprintf(
            sql, n,
            "WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x<%d) "
            "INSERT OR REPLACE INTO lines SELECT 's'||(x %% 3), x, 'item '||x, x %% 5, "
            "CASE WHEN x %% 4 = 0 THEN NULL ELSE CAST(printf('%%x', x * 7919) AS BLOB) END FROM c",
            a, b);
        break;
    case 6:
        snprintf(sql, n, "UPDATE lines SET qty=qty+%d, note=NULL WHERE n BETWEEN %d AND %d", v, a,
                 b);
        break;
    case 7: /* key updates: a delete of the old key and an insert of the new one */
        snprintf(sql, n,
                 "UPDATE OR IGNORE lines SET n=n+1000 WHERE n BETWEEN %d AND %d AND shop='s1'; "
                 "UPDATE OR IGNORE products SET id=id||'k' WHERE id BETWEEN 'p%05d' AND 'p%05d'",
                 a, a + 10, a, a + 4);
        break;
    case 8:
        snprintf(sql, n, "DELETE FROM lines WHERE n BETWEEN %d AND %d", a, b);
        break;
    case 9:
        snprintf(sql, n,
                 "WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x<%d) "
                 "INSERT OR REPLACE INTO moves SELECT x, 'move '||x, x*0.25 FROM c; "
                 "UPDATE moves SET amount=amount*2 WHERE id %% 3 = %d",
                 a, b, a % 3);
        break;
    default:
        snprintf(sql, n,
                 "UPDATE products SET price=%d; DELETE FROM moves WHERE id %% 2 = 0; "
                 "INSERT OR IGNORE INTO moves VALUES(%d, 'back', 1.5)",
                 v, a);
        break;
    }
}

/* The reference capture (version 3) beside the real one: ref_pending and copies of the capture
 * triggers without the fold. */
static void ref_capture_install(tsync_store *s)
{
    th_exec(s, "CREATE TABLE ref_pending(id INTEGER PRIMARY KEY, tbl, op, mask, wall, k0, k1, "
               "k2, k3)");
    sqlite3 *db = tsync_store_sqlite(s);
    sqlite3_stmt *st;
    char *q = sqlite3_mprintf(
        "SELECT replace(replace(replace(sql, '\"tsync_a', '\"ref_a'), 'INSERT INTO "
        "tsync_pending', 'INSERT INTO ref_pending'), %Q, '') FROM sqlite_schema WHERE "
        "type='trigger' AND name LIKE 'tsync\\_a%%' ESCAPE '\\'",
        FOLD);
    cr_assert_eq(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_free(q);
    char *all[32];
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < 32)
        all[n++] = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    cr_assert_eq(n, 12, "the capture triggers of three tables: %d", n);
    for (int i = 0; i < n; i++) {
        cr_assert(!strstr(all[i], "ON CONFLICT"), "the fold is not the one expected: %s", all[i]);
        th_exec(s, all[i]);
        free(all[i]);
    }
}

static void ref_capture_drop(sqlite3 *db)
{
    const char *tabs[] = {"products", "lines", "moves"}, *kinds[] = {"ai", "au", "ak", "ad"};
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < 4; k++) {
            char q[96];
            snprintf(q, sizeof q, "DROP TRIGGER ref_%s_%s", kinds[k], tabs[t]);
            cr_assert_eq(sqlite3_exec(db, q, NULL, NULL, NULL), SQLITE_OK, "%s",
                         sqlite3_errmsg(db));
        }
}

/* The OR of the masks of a group, bit by bit. */
static void or_mask(char *out, size_t n)
{
    size_t o = 0;
    for (int b = 0; b < 64; b++)
        o += (size_t)snprintf(out + o, n - o, "%s(max((mask>>%d)&1)<<%d)", b ? "|" : "", b, b);
}

/* The folded pending rows equal what the reference's GROUP BY makes of its captured changes. */
static void check_fold(tsync_store *s, int round)
{
    char orm[4096], q[8192];
    or_mask(orm, sizeof orm);
    const char *mine = "SELECT tbl, k0, k1, k2, k3, wall, op IN (1,4), op>=3, mask FROM "
                       "tsync_pending";
    snprintf(q, sizeof q,
             "SELECT tbl, k0, ifnull(k1,0), ifnull(k2,0), ifnull(k3,0), max(wall), max(op=1), "
             "max(op=3), %s FROM ref_pending GROUP BY 1,2,3,4,5",
             orm);
    char cmp[20000];
    snprintf(cmp, sizeof cmp, "SELECT count(*) FROM (%s EXCEPT %s)", mine, q);
    cr_assert_eq(th_int(s, cmp, -1), 0, "round %d: a folded pending row the reference lacks",
                 round);
    snprintf(cmp, sizeof cmp, "SELECT count(*) FROM (%s EXCEPT %s)", q, mine);
    cr_assert_eq(th_int(s, cmp, -1), 0, "round %d: a reference row the fold lacks", round);
    snprintf(cmp, sizeof cmp, "SELECT count(*) FROM (%s)", q);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_pending", -1), th_int(s, cmp, -1),
                 "round %d: one pending row per changed row", round);
}

/* What sealing wrote: the batches (their hashes chain over their bodies), the clock entries and
 * the tombstones. */
static char *sealed_state(tsync_store *s)
{
    return th_text(
        s, "SELECT (SELECT ifnull(group_concat(site||':'||seq||':'||hex(hash), ','), '') FROM "
           "(SELECT * FROM "
           "tsync_log ORDER BY site, seq)) || '|' || (SELECT ifnull(group_concat(quote(id)||'='||"
           "hex(tsync_m), ','), '') FROM (SELECT * FROM tsync_clk_products ORDER BY id)) || '|' "
           "|| (SELECT ifnull(group_concat(quote(shop)||quote(n)||'='||hex(tsync_m), ','), '') "
           "FROM (SELECT * FROM tsync_clk_lines ORDER BY shop, n)) || '|' || (SELECT "
           "ifnull(group_concat(quote(id)||'='||hex(tsync_m), ','), '') FROM (SELECT * FROM "
           "tsync_clk_moves ORDER BY id)) || '|' || (SELECT ifnull(group_concat(quote(id)||"
           "quote(name)||quote(price)||quote(stock), ','), '') FROM (SELECT * FROM "
           "tsync_tomb_products ORDER BY id)) || '|' || (SELECT ifnull(group_concat(quote(shop)"
           "||quote(n)||quote(item), ','), '') FROM (SELECT * FROM tsync_tomb_lines ORDER BY "
           "shop, n))");
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    cr_assert(in, "open %s", from);
    /* "wb" truncates in place: the file keeps its inode, so the till keeps its identity. */
    FILE *out = fopen(to, "wb");
    cr_assert(out, "open %s", to);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    cr_assert_eq(fclose(out), 0);
}

/* A fresh till merging everything s sealed; returns its hash. */
static void fresh_hash(tsync_store *s, const char *dir, const char *name, char out[65])
{
    tsync_store *f = open_shop(th_path(dir, name));
    cr_assert_eq(th_sync(s, f), 0, "merge into a fresh till: %s", tsync_error_last()->message);
    snprintf(out, 65, "%s", th_hash(f));
    tsync_store_free(f);
}

static void one_seed(uint64_t seed, const char *d)
{
    uint64_t rng = seed;
    char a_path[4200], save[4300], mark[4300], mark_save[4300];
    snprintf(a_path, sizeof a_path, "%s", th_path(d, "a.db"));
    snprintf(save, sizeof save, "%s.save", a_path);
    snprintf(mark, sizeof mark, "%s.key.mark", a_path);
    snprintf(mark_save, sizeof mark_save, "%s.key.mark.save", a_path);
    tsync_store *a = open_shop(a_path);
    cr_assert_eq(th_int(a, "SELECT v FROM tsync_meta WHERE k='capture'", -1), 4);
    for (int round = 0; round < 4; round++) {
        ref_capture_install(a);
        int nw = 4 + (int)(th_rand(&rng) % 12);
        for (int i = 0; i < nw; i++) {
            char sql[1200];
            random_write(&rng, sql, sizeof sql);
            th_exec(a, sql);
        }
        check_fold(a, round);
        tsync_store_free(a);
        char wal[4300];
        snprintf(wal, sizeof wal, "%s-wal", a_path);
        cr_assert(access(wal, F_OK) != 0, "the WAL outlived the last connection");
        copy_file(a_path, save);
        int has_mark = access(mark, F_OK) == 0;
        if (has_mark) copy_file(mark, mark_save);

        /* The reference: a version 3 database holding the captured changes unfolded. */
        sqlite3 *db;
        cr_assert_eq(sqlite3_open(a_path, &db), SQLITE_OK);
        ref_capture_drop(db);
        cr_assert_eq(sqlite3_exec(db,
                                  "DROP TABLE tsync_pending; CREATE TABLE tsync_pending(id INTEGER "
                                  "PRIMARY KEY, tbl, op, mask, wall, k0, k1, k2, k3); INSERT INTO "
                                  "tsync_pending SELECT * FROM ref_pending; DROP TABLE "
                                  "ref_pending; UPDATE tsync_meta SET v=3 WHERE k='capture'",
                                  NULL, NULL, NULL),
                     SQLITE_OK, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        a = open_shop(a_path);
        cr_assert_eq(th_int(a, "SELECT v FROM tsync_meta WHERE k='capture'", -1), 4);
        cr_assert_eq(th_int(a,
                            "SELECT count(*) FROM pragma_table_info('tsync_pending') WHERE "
                            "name='id'",
                            -1),
                     0, "the version 3 pending table was not folded at open");
        th_seal(a);
        char *want = sealed_state(a);
        char want_hash[65], want_fresh[65];
        snprintf(want_hash, sizeof want_hash, "%s", th_hash(a));
        char fname[32];
        snprintf(fname, sizeof fname, "ref%d.db", round);
        fresh_hash(a, d, fname, want_fresh);
        tsync_store_free(a);

        /* The new way, from the same database as it was before sealing. */
        copy_file(save, a_path);
        if (has_mark)
            copy_file(mark_save, mark);
        else
            unlink(mark);
        a = open_shop(a_path);
        th_exec(a, "DROP TABLE ref_pending");
        ref_capture_drop(tsync_store_sqlite(a));
        th_seal(a);
        cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
        char *got = sealed_state(a);
        cr_assert(got && want);
        cr_assert_str_eq(got, want, "seed %llu round %d: sealing differs from the reference",
                         (unsigned long long)seed, round);
        cr_assert_str_eq(th_hash(a), want_hash);
        char got_fresh[65];
        snprintf(fname, sizeof fname, "new%d.db", round);
        fresh_hash(a, d, fname, got_fresh);
        cr_assert_str_eq(got_fresh, want_fresh, "seed %llu round %d: a fresh till differs",
                         (unsigned long long)seed, round);
        cr_assert_str_eq(got_fresh, want_hash, "seed %llu round %d: the fresh till is not a copy",
                         (unsigned long long)seed, round);
        free(want);
        free(got);
    }
    tsync_store_free(a);
}

Test(seal_bulk, fold_and_seal_match_the_reference_capture, .timeout = 600)
{
    uint64_t seed = th_seed("seal_bulk");
    for (int i = 0; i < 3; i++) {
        char *d = th_tmpdir();
        one_seed(seed + (uint64_t)i, d);
        th_rmdir(d);
        free(d);
    }
}

/* Writing the same rows again and again before a seal leaves one pending row per changed row:
 * what sealing reads grows with the rows changed, not with the writes. */
Test(seal_bulk, repeated_writes_keep_one_pending_row_per_row, .timeout = 60)
{
    char *d = th_tmpdir();
    tsync_store *a = open_shop(th_path(d, "a.db"));
    th_exec(a, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<100) "
               "INSERT INTO products SELECT printf('p%05d',x), 'n', x, 0 FROM c");
    for (int i = 0; i < 5; i++) th_exec(a, "UPDATE products SET price=price+1, stock=stock+2");
    /* price is x + 5: the odd x go, and p00001 comes back */
    th_exec(a, "DELETE FROM products WHERE price % 2 = 0; INSERT INTO products VALUES('p00001', "
               "'back', 1, 0)");
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 100);
    cr_assert_eq(th_int(a, "SELECT op FROM tsync_pending WHERE k0='p00001'", -1), 4);
    cr_assert_eq(th_int(a, "SELECT op FROM tsync_pending WHERE k0='p00003'", -1), 4);
    cr_assert_eq(th_int(a, "SELECT op FROM tsync_pending WHERE k0='p00002'", -1), 1);
    th_seal(a);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 51);
    th_exec(a, "UPDATE products SET name='m' WHERE id='p00002'; UPDATE products SET price=8 "
               "WHERE id='p00002'; DELETE FROM products WHERE id='p00004'");
    cr_assert_eq(th_int(a, "SELECT op FROM tsync_pending WHERE k0='p00002'", -1), 2);
    cr_assert_eq(th_int(a, "SELECT mask FROM tsync_pending WHERE k0='p00002'", -1), 2 | 4);
    cr_assert_eq(th_int(a, "SELECT op FROM tsync_pending WHERE k0='p00004'", -1), 3);
    tsync_store_free(a);
    th_rmdir(d);
    free(d);
}
